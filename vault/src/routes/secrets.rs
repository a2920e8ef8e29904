//! Secrets: read, write, delete, list. Authorized by the node's token (with proof of
//! possession), sealed under the group's data key, audited before the answer leaves.

use axum::{
    Json,
    extract::{Path, Query, State},
};
use keymesh_core::{
    ApiError, ErrorCode,
    audit::{AuditEvent, Outcome},
    capability::{Op, SecretPath, rights::RELAY_NAMESPACE},
    crypto,
    error::ErrorBody,
    openapi::NodeErrors,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{auth::NodeCall, ident::Ident, state::VaultState};

fn aad(group: &str, path: &str, version: i64, part: &str) -> Vec<u8> {
    format!("keymesh-secret-v1\n{group}\n{path}\n{version}\n{part}").into_bytes()
}

/// Authorize `op` on `resource` in `group` for this call, auditing a refusal.
async fn allow(
    state: &VaultState,
    call: &NodeCall,
    group: &str,
    op: Op,
    resource: &str,
) -> Result<(), ApiError> {
    let target = format!("vault:{group}/{resource}");
    let decision = if call.token.claims.group != group {
        Err(ApiError::with_message(
            ErrorCode::Forbidden,
            "the token belongs to another group",
        ))
    } else {
        state.authorize(&call.token, op, resource)
    };
    if let Err(err) = &decision {
        state
            .audit_quiet(
                AuditEvent::new(
                    call.actor(),
                    format!("secret.{op}"),
                    target,
                    Outcome::Denied,
                )
                .with_details(json!({ "code": err.code().as_str() })),
            )
            .await;
    }
    decision
}

fn parse_path(raw: &str) -> Result<SecretPath, ApiError> {
    let path = SecretPath::parse(raw)?;
    if path.as_str().split('/').next() == Some(RELAY_NAMESPACE) {
        return Err(ApiError::with_message(
            ErrorCode::InvalidRequest,
            "the top-level name `relay` is reserved for relay send rights",
        ));
    }
    Ok(path)
}

/// Read a secret (needs `read` on its path).
///
/// The read is audited before the value leaves; `503 audit_unavailable` when it cannot be.
#[utoipa::path(
    get,
    path = "/v1/vaults/{group}/secrets/{*path}",
    operation_id = "read_secret",
    tag = "secrets",
    params(
        ("group" = inline(Ident), Path, description = "The group."),
        ("path" = String, Path, description = "The secret path: 1 to 8 segments joined by `/` (the slashes are not escaped), at most 256 bytes; a segment is 1 to 64 characters of `A-Z a-z 0-9 . _ -`, not `.` or `..`. The top-level name `relay` is reserved."),
    ),
    responses(
        (status = 200, body = SecretValue),
        (status = 403, body = ErrorBody, description = "`forbidden`: no right on this path, or a token of another group."),
        (status = 404, body = ErrorBody, description = "`not_found`: no secret at this path."),
        (status = 423, body = ErrorBody, description = "`vault_locked`."),
        NodeErrors,
    ),
    security(("node_token" = [], "node_proof" = [])),
)]
pub async fn read(
    State(state): State<VaultState>,
    Path((group, raw)): Path<(Ident, String)>,
    call: NodeCall,
) -> Result<Json<SecretValue>, ApiError> {
    let path = parse_path(&raw)?;
    allow(&state, &call, &group, Op::Read, path.as_str()).await?;
    let row = state
        .store
        .secret(&group, path.as_str())
        .await
        .map_err(ApiError::internal)?;
    let opened = state.sessions.with_key(&group, |key| {
        row.as_ref().map(|row| {
            let value = crypto::open(
                key,
                &row.sealed_value,
                &aad(&group, path.as_str(), row.version, "value"),
            )?;
            let metadata = crypto::open(
                key,
                &row.sealed_metadata,
                &aad(&group, path.as_str(), row.version, "metadata"),
            )?;
            Ok::<_, crypto::CryptoError>((value, metadata))
        })
    });
    let target = format!("vault:{group}/{path}");
    let (value, metadata): (crypto::Plaintext, crypto::Plaintext) = match opened {
        None => return Err(ApiError::new(ErrorCode::VaultLocked)),
        Some(None) => {
            return Err(ApiError::with_message(
                ErrorCode::NotFound,
                "no secret at this path",
            ));
        }
        Some(Some(Err(e))) => {
            tracing::error!(
                group = &*group,
                path = path.as_str(),
                "a stored secret does not open under the vault key"
            );
            return Err(ApiError::internal(e));
        }
        Some(Some(Ok(pair))) => pair,
    };
    let row = row.ok_or_else(|| ApiError::new(ErrorCode::Internal))?;
    // Fail closed: no audit record, no secret.
    state
        .audit(
            AuditEvent::new(call.actor(), "secret.read", target, Outcome::Success)
                .with_details(json!({ "version": row.version })),
        )
        .await?;
    let value = String::from_utf8(value.to_vec()).map_err(ApiError::internal)?;
    let metadata: Value = serde_json::from_slice(&metadata).map_err(ApiError::internal)?;
    Ok(Json(SecretValue {
        path: path.as_str().to_owned(),
        version: row.version,
        value,
        metadata,
        updated_at_ms: row.updated_at_ms,
        updated_by: row.updated_by,
    }))
}

/// A secret as read.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SecretValue {
    /// Its path.
    pub path: String,
    /// Its version, from 1.
    pub version: i64,
    /// The value.
    pub value: String,
    /// Its metadata (a JSON object, `{}` when none was written).
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// Last change (unix ms).
    pub updated_at_ms: i64,
    /// Who changed it last (`node:ID`).
    pub updated_by: String,
}

/// A secret written.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SecretWritten {
    /// Its path.
    pub path: String,
    /// The version written.
    pub version: i64,
}

/// A secret deleted.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SecretDeleted {
    /// Its path.
    pub path: String,
    /// Always `true`.
    pub deleted: bool,
}

/// The secrets under a prefix.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SecretList {
    /// The prefix asked for (`""`: the whole group).
    pub prefix: String,
    /// By path, at most 1000.
    pub secrets: Vec<crate::store::SecretListing>,
}

/// Write request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct WriteBody {
    /// The value, at most `VAULT_SECRET_MAX_BYTES`.
    value: String,
    /// A JSON object, at most `VAULT_METADATA_MAX_BYTES` serialized.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Map<String, Value>>,
}

/// Create or replace a secret (needs `write` on its path); each write is a new version.
#[utoipa::path(
    put,
    path = "/v1/vaults/{group}/secrets/{*path}",
    operation_id = "write_secret",
    tag = "secrets",
    params(
        ("group" = inline(Ident), Path, description = "The group."),
        ("path" = String, Path, description = "The secret path: 1 to 8 segments joined by `/` (the slashes are not escaped), at most 256 bytes; a segment is 1 to 64 characters of `A-Z a-z 0-9 . _ -`, not `.` or `..`. The top-level name `relay` is reserved."),
    ),
    request_body = WriteBody,
    responses(
        (status = 200, body = SecretWritten),
        (status = 403, body = ErrorBody, description = "`forbidden`: no right on this path, or a token of another group."),
        (status = 409, body = ErrorBody, description = "`conflict`: the secret changed meanwhile; retry."),
        (status = 413, body = ErrorBody, description = "`payload_too_large`: the value or metadata is over its limit."),
        (status = 423, body = ErrorBody, description = "`vault_locked`."),
        NodeErrors,
    ),
    security(("node_token" = [], "node_proof" = [])),
)]
pub async fn write(
    State(state): State<VaultState>,
    Path((group, raw)): Path<(Ident, String)>,
    call: NodeCall,
) -> Result<Json<SecretWritten>, ApiError> {
    let path = parse_path(&raw)?;
    allow(&state, &call, &group, Op::Write, path.as_str()).await?;
    let body: WriteBody = call.json()?;
    let metadata =
        serde_json::to_vec(&body.metadata.unwrap_or_default()).map_err(ApiError::internal)?;
    if body.value.len() > state.config.secret_max_bytes
        || metadata.len() > state.config.metadata_max_bytes
    {
        return Err(ApiError::with_message(
            ErrorCode::PayloadTooLarge,
            format!(
                "a secret value is at most {} bytes and its metadata at most {} bytes",
                state.config.secret_max_bytes, state.config.metadata_max_bytes
            ),
        ));
    }
    let version = state
        .store
        .next_version(&group, path.as_str())
        .await
        .map_err(ApiError::internal)?;
    let sealed = state.sessions.with_key(&group, |key| {
        let value = crypto::seal(
            key,
            body.value.as_bytes(),
            &aad(&group, path.as_str(), version, "value"),
        )?;
        let metadata = crypto::seal(
            key,
            &metadata,
            &aad(&group, path.as_str(), version, "metadata"),
        )?;
        Ok::<_, crypto::CryptoError>((value, metadata))
    });
    let (value, metadata) = sealed
        .ok_or_else(|| ApiError::new(ErrorCode::VaultLocked))?
        .map_err(ApiError::internal)?;
    state
        .audit(
            AuditEvent::new(
                call.actor(),
                "secret.write",
                format!("vault:{group}/{path}"),
                Outcome::Success,
            )
            .with_details(json!({ "version": version })),
        )
        .await?;
    if !state
        .store
        .put_secret(
            &group,
            path.as_str(),
            version,
            &value,
            &metadata,
            &call.actor(),
        )
        .await
        .map_err(ApiError::internal)?
    {
        return Err(ApiError::with_message(
            ErrorCode::Conflict,
            "the secret changed meanwhile; retry",
        ));
    }
    Ok(Json(SecretWritten {
        path: path.as_str().to_owned(),
        version,
    }))
}

/// Delete a secret (needs `delete` on its path).
#[utoipa::path(
    delete,
    path = "/v1/vaults/{group}/secrets/{*path}",
    operation_id = "delete_secret",
    tag = "secrets",
    params(
        ("group" = inline(Ident), Path, description = "The group."),
        ("path" = String, Path, description = "The secret path: 1 to 8 segments joined by `/` (the slashes are not escaped), at most 256 bytes; a segment is 1 to 64 characters of `A-Z a-z 0-9 . _ -`, not `.` or `..`. The top-level name `relay` is reserved."),
    ),
    responses(
        (status = 200, body = SecretDeleted),
        (status = 403, body = ErrorBody, description = "`forbidden`: no right on this path, or a token of another group."),
        (status = 404, body = ErrorBody, description = "`not_found`: no secret at this path."),
        (status = 423, body = ErrorBody, description = "`vault_locked`."),
        NodeErrors,
    ),
    security(("node_token" = [], "node_proof" = [])),
)]
pub async fn delete(
    State(state): State<VaultState>,
    Path((group, raw)): Path<(Ident, String)>,
    call: NodeCall,
) -> Result<Json<SecretDeleted>, ApiError> {
    let path = parse_path(&raw)?;
    allow(&state, &call, &group, Op::Delete, path.as_str()).await?;
    if state.sessions.status(&group).is_none() {
        return Err(ApiError::new(ErrorCode::VaultLocked));
    }
    state
        .audit(AuditEvent::new(
            call.actor(),
            "secret.delete",
            format!("vault:{group}/{path}"),
            Outcome::Success,
        ))
        .await?;
    if !state
        .store
        .delete_secret(&group, path.as_str())
        .await
        .map_err(ApiError::internal)?
    {
        return Err(ApiError::with_message(
            ErrorCode::NotFound,
            "no secret at this path",
        ));
    }
    Ok(Json(SecretDeleted {
        path: path.as_str().to_owned(),
        deleted: true,
    }))
}

/// List query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only paths under this prefix (ending with `/`); everything when empty.
    #[serde(default)]
    prefix: String,
}

/// List secret paths, versions and times under a prefix; never values.
///
/// Needs `list` on a pattern covering the prefix. At most 1000 entries.
#[utoipa::path(
    get,
    path = "/v1/vaults/{group}/secrets",
    operation_id = "list_secrets",
    tag = "secrets",
    params(("group" = inline(Ident), Path, description = "The group."), ListQuery),
    responses(
        (status = 200, body = SecretList),
        (status = 403, body = ErrorBody, description = "`forbidden`: no `list` right covering the prefix, or a token of another group."),
        (status = 423, body = ErrorBody, description = "`vault_locked`."),
        NodeErrors,
    ),
    security(("node_token" = [], "node_proof" = [])),
)]
pub async fn list(
    State(state): State<VaultState>,
    Path(group): Path<Ident>,
    Query(q): Query<ListQuery>,
    call: NodeCall,
) -> Result<Json<SecretList>, ApiError> {
    if !q.prefix.is_empty() {
        let body = q.prefix.strip_suffix('/').ok_or_else(|| {
            ApiError::with_message(ErrorCode::InvalidRequest, "a prefix ends with /")
        })?;
        parse_path(body)?;
    }
    allow(&state, &call, &group, Op::List, &q.prefix).await?;
    if state.sessions.status(&group).is_none() {
        return Err(ApiError::new(ErrorCode::VaultLocked));
    }
    let entries = state
        .store
        .list_secrets(&group, &q.prefix, 1000)
        .await
        .map_err(ApiError::internal)?;
    state
        .audit(
            AuditEvent::new(
                call.actor(),
                "secret.list",
                format!("vault:{group}/{}", q.prefix),
                Outcome::Success,
            )
            .with_details(json!({ "count": entries.len() })),
        )
        .await?;
    Ok(Json(SecretList {
        prefix: q.prefix,
        secrets: entries,
    }))
}

//! `POST /v1/enroll`: a node presents a one-time enrollment code with its identity key and a
//! signature by that key; management records the node, the vault registers it and mints its
//! first token. (The relay learns the node's encryption key when the node publishes it, signed
//! by its identity key, with that token: `keymeshctl enroll` does both.)

use axum::{Json, extract::State};
use http::StatusCode;
use keymesh_core::error::ErrorBody;
use keymesh_core::openapi::Errors;
use keymesh_core::{
    ApiError, ErrorCode,
    audit::{AuditEvent, Outcome},
    capability::pop::{identity_key, verify_enrollment},
    http::{client_ip::ClientIp, extract::Json as JsonBody},
    ident::Ident,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{
    directory::{Claim, CodeRow, NodeRow},
    rbac::{Action, Role},
    secrets::{Kind, token_hash, well_formed_token},
    state::ManagementState,
    vault::{IssuedToken, Registration},
};

/// `POST /v1/enroll` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollBody {
    code: String,
    node_id: Ident,
    /// Ed25519 identity key, hex.
    public_key: String,
    /// Ed25519 signature, hex, over the enrollment message (docs/management.md).
    signature: String,
}

/// The answer to `POST /v1/enroll`: the node as recorded and its first token.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Enrolled {
    /// The node: its id, group, owner, identity key and ceiling.
    pub node: NodeRow,
    /// The first token, URL-safe base64 (secret: shown once).
    pub token: String,
    /// The token's own id.
    pub token_id: String,
    /// The token's grant: what the node names to revoke this token (and everything delegated
    /// from it) at the vault, `POST /v1/tokens/revoke` `{grant}`.
    pub grant: String,
    /// When the token expires (unix seconds); refresh it at the vault before then.
    pub expires_at: u64,
    /// The relay management suggests (`MANAGEMENT_RELAY_URL`), if one is configured.
    pub relay_url: Option<String>,
}

impl std::fmt::Debug for Enrolled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrolled")
            .field("node", &self.node.id)
            .field("grant", &self.grant)
            .finish_non_exhaustive()
    }
}

fn code_invalid() -> ApiError {
    ApiError::new(ErrorCode::EnrollmentCodeInvalid)
}

/// `POST /v1/enroll` (the code is the credential).
#[utoipa::path(
    post,
    path = "/v1/enroll",
    operation_id = "enroll_enroll",
    tag = "enrollment",
    request_body = EnrollBody,
    responses(
        (status = 201, body = Enrolled, description = "Enrolled: the node and its first token. `grant` names the token at the vault (to revoke it)."),
        (status = 401, body = ErrorBody, description = "`enrollment_code_invalid`: an unknown, used or expired code. `proof_invalid`: the signature does not verify."),
        (status = 409, body = ErrorBody, description = "`node_exists`: the node id is enrolled with another key."),
        Errors,
    ),
)]
pub async fn enroll(
    State(state): State<ManagementState>,
    ClientIp(ip): ClientIp,
    JsonBody(body): JsonBody<EnrollBody>,
) -> Result<(StatusCode, Json<Enrolled>), ApiError> {
    state.login_by_ip.check(&state.ctx.limits.client_key(ip))?;
    if !well_formed_token(Kind::Enroll, &body.code) {
        return Err(code_invalid());
    }
    let key = identity_key(&body.public_key)
        .map_err(|reason| ApiError::with_message(ErrorCode::InvalidRequest, reason))?;
    let signature: [u8; 64] = hex::decode(&body.signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            ApiError::with_message(
                ErrorCode::InvalidRequest,
                "signature must be 64 bytes of hex",
            )
        })?;
    verify_enrollment(&key, &body.code, &body.node_id, &signature).map_err(|_| {
        ApiError::with_message(
            ErrorCode::ProofInvalid,
            "the signature does not verify with public_key for this code and node id",
        )
    })?;
    // Nothing is used up while the vault is missing: the code stays good for a retry.
    if !state.vault.configured() {
        return Err(ApiError::with_message(
            ErrorCode::Unavailable,
            "management is not connected to a vault",
        ));
    }
    let hash = token_hash(&body.code);
    let code = live_code_of_enabled_user(&state, &hash).await?;
    let node_id = body.node_id.to_string();
    let event = |outcome| {
        AuditEvent::new(
            format!("node:{node_id}"),
            "node.enroll",
            format!("group:{}", code.group_id),
            outcome,
        )
        .with_details(json!({
            "code_id": code.id, "user": code.user_id, "ceiling": code.ceiling, "ip": ip.to_string(),
        }))
    };
    state.audit(event(Outcome::Success)).await?;
    let node = match state
        .store
        .claim_code(&hash, &node_id, key.as_bytes())
        .await
        .map_err(ApiError::internal)?
    {
        Claim::Enrolled(node) => node,
        Claim::NoCode => {
            state.audit_quiet(event(Outcome::Failure)).await;
            return Err(code_invalid());
        }
        Claim::NodeExists => {
            state.audit_quiet(event(Outcome::Failure)).await;
            return Err(ApiError::new(ErrorCode::NodeExists));
        }
    };
    match register(&state, &code, &node_id, &body.public_key).await {
        Ok(token) => Ok((
            StatusCode::CREATED,
            Json(Enrolled {
                node,
                token: token.token,
                token_id: token.token_id,
                grant: token.grant,
                expires_at: token.expires_at,
                relay_url: state.config.relay_url.clone(),
            }),
        )),
        Err(e) => {
            // Undo, so the code works again for a retry; the vault keeps an idempotent
            // registration of the same key, which the retry repeats.
            if let Err(undo) = state.store.unclaim_code(&hash, &node_id).await {
                tracing::error!(error = %keymesh_core::error::error_chain(&undo), node = %node_id, "undoing a failed enrollment failed");
            }
            state.audit_quiet(event(Outcome::Failure)).await;
            Err(e)
        }
    }
}

/// The live code with this hash, if its owner may still enroll nodes.
async fn live_code_of_enabled_user(
    state: &ManagementState,
    hash: &[u8],
) -> Result<CodeRow, ApiError> {
    let code = state
        .store
        .live_code(hash)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(code_invalid)?;
    let owner = state
        .store
        .user(&code.user_id)
        .await
        .map_err(ApiError::internal)?;
    // The owner must still be allowed to enroll into the group: enabled, holding
    // nodes:enroll, and a member unless their role manages groups. (Removing a member also
    // deletes their unused codes; this covers role changes.)
    let Some(owner) = owner.filter(|u| u.disabled_at_ms.is_none()) else {
        return Err(code_invalid());
    };
    let role: Role = owner.role.parse().map_err(|_| code_invalid())?;
    let rbac = &state.config.rbac;
    let allowed = rbac.allows(role, Action::NodesEnroll)
        && (rbac.allows(role, Action::GroupsManage)
            || state
                .store
                .is_member(&code.group_id, &owner.id)
                .await
                .map_err(ApiError::internal)?);
    if !allowed {
        return Err(code_invalid());
    }
    Ok(code)
}

/// Register the node at the vault and mint its first token.
async fn register(
    state: &ManagementState,
    code: &CodeRow,
    node_id: &str,
    public_key: &str,
) -> Result<IssuedToken, ApiError> {
    let rights: Value = serde_json::from_str(&code.rights).map_err(ApiError::internal)?;
    let registered = state
        .vault
        .put_node(&Registration {
            node_id,
            group: &code.group_id,
            user: &code.user_id,
            public_key_hex: public_key,
            ceiling: &code.ceiling,
            disabled: false,
        })
        .await;
    match registered {
        // The vault knows this id with another key: never re-key it.
        Err(e) if e.code() == Some("conflict") => return Err(ApiError::new(ErrorCode::NodeExists)),
        other => other?,
    };
    Ok(state.vault.mint(node_id, &rights, None, None).await?)
}

//! Incident response: revoke every token of a user, node or group in one call, disable a node,
//! lock a group's vault. Each reaches the vault (the source of truth), which publishes the
//! revocation on its feed; relays and management follow the feed.

use keymesh_core::error::ErrorBody;
use keymesh_core::openapi::SessionErrors;
use std::time::{Duration, Instant};

use axum::{
    Json,
    extract::{Path, State},
};
use keymesh_core::{
    ApiError, ErrorCode,
    audit::{AuditEvent, Outcome},
    http::extract::Json as JsonBody,
    ident::Ident,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{
    auth::Caller,
    rbac::Action,
    state::ManagementState,
    vault::{Locked, Registration},
};

/// How long a revocation waits to see its own feed entry applied before answering.
const PROPAGATION_WAIT: Duration = Duration::from_secs(5);

/// Body of every responder action.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    reason: String,
}

fn check_reason(reason: &str) -> Result<&str, ApiError> {
    crate::approvals::check_reason(reason).map(|()| reason.trim())
}

impl ReasonBody {
    /// The reason, checked (1 to 500 characters of text) and trimmed.
    pub fn reason(&self) -> Result<&str, ApiError> {
        check_reason(&self.reason)
    }
}

/// Every token of a user, node or group revoked.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Revoked {
    /// `user`, `node` or `group`.
    pub scope: String,
    /// Its id.
    pub subject: String,
    /// The revocation's position in the vault's feed.
    pub feed_seq: i64,
    /// The new epoch: tokens of an older one are dead.
    pub epoch: Option<i64>,
    /// How long management's own copy of the feed took to apply it (relays follow the same
    /// feed); `null` when it had not within 5 s.
    pub propagated_ms: Option<u64>,
}

/// `POST /v1/nodes/{id}/disable`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NodeDisabled {
    /// The revocation of the node's tokens.
    #[serde(flatten)]
    pub revoked: Revoked,
    /// Always `true`.
    pub disabled: bool,
    /// It was disabled before this call (the revocation is repeated).
    pub already_disabled: bool,
}

/// `POST /v1/vaults/{group}/lock`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VaultLocked {
    /// The group.
    pub group: String,
    /// The vault's answer.
    pub vault: Locked,
}

/// Bump the epoch of `scope:subject` at the vault, then wait (bounded) until management's own
/// copy of the feed has applied the entry: the elapsed time is what a follower of the feed
/// took to learn of it (relays follow the same feed the same way).
async fn revoke(
    state: &ManagementState,
    caller: &Caller,
    scope: &str,
    subject: &str,
    reason: &str,
) -> Result<Revoked, ApiError> {
    let started = Instant::now();
    let entry = state.vault.revoke_epoch(scope, subject, reason).await?;
    let seq = entry.seq;
    let deadline = started + PROPAGATION_WAIT;
    let mut propagated_ms = None;
    while Instant::now() < deadline {
        if state.followed.head() >= seq {
            propagated_ms = Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    state
        .audit_quiet(
            AuditEvent::new(
                caller.actor(),
                "tokens.revoked",
                format!("{scope}:{subject}"),
                Outcome::Success,
            )
            .with_details(json!({ "feed_seq": entry.seq, "epoch": entry.epoch, "propagated_ms": propagated_ms })),
        )
        .await;
    Ok(Revoked {
        scope: scope.to_owned(),
        subject: subject.to_owned(),
        feed_seq: entry.seq,
        epoch: entry.epoch,
        propagated_ms,
    })
}

/// Audit the intent first (fail closed), then act.
async fn intent(
    state: &ManagementState,
    caller: &Caller,
    action: &str,
    target: String,
    reason: &str,
) -> Result<(), ApiError> {
    state
        .audit(
            AuditEvent::new(caller.actor(), action, target, Outcome::Success)
                .with_details(json!({ "reason": reason })),
        )
        .await
}

/// Whose tokens a revocation ends.
#[derive(Clone, Copy, Debug)]
enum Subject {
    User,
    Node,
    Group,
}

impl Subject {
    fn scope(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Node => "node",
            Self::Group => "group",
        }
    }
}

/// Revoke every token of an existing user, node or group (tokens:revoke): audited first.
async fn revoke_tokens(
    state: &ManagementState,
    caller: &Caller,
    subject: Subject,
    id: &str,
    body: &ReasonBody,
) -> Result<Json<Revoked>, ApiError> {
    caller.require(state, Action::TokensRevoke)?;
    let reason = check_reason(&body.reason)?;
    let exists = match subject {
        Subject::User => state.store.user(id).await.map(|u| u.is_some()),
        Subject::Group => state.store.group(id).await.map(|g| g.is_some()),
        Subject::Node => state.store.node(id).await.map(|n| n.is_some()),
    }
    .map_err(ApiError::internal)?;
    if !exists {
        return Err(ApiError::with_message(
            ErrorCode::NotFound,
            format!("no such {}", subject.scope()),
        ));
    }
    let scope = subject.scope();
    intent(
        state,
        caller,
        "tokens.revoke",
        format!("{scope}:{id}"),
        reason,
    )
    .await?;
    Ok(Json(revoke(state, caller, scope, id, reason).await?))
}

/// `POST /v1/users/{id}/revoke-tokens`: every token of every node of the user.
#[utoipa::path(
    post,
    path = "/v1/users/{id}/revoke-tokens",
    operation_id = "responders_revoke_user",
    tag = "incident response",
    params(("id" = inline(Ident), Path, description = "The user's id.")),
    request_body = ReasonBody,
    responses(
        (status = 200, body = Revoked),
        (status = 404, body = ErrorBody, description = "`not_found`."),
        SessionErrors,
    ),
    security(("session" = []), ("session_cookie" = [], "csrf" = [])),
)]
pub async fn revoke_user(
    State(state): State<ManagementState>,
    caller: Caller,
    Path(id): Path<Ident>,
    JsonBody(body): JsonBody<ReasonBody>,
) -> Result<Json<Revoked>, ApiError> {
    revoke_tokens(&state, &caller, Subject::User, &id, &body).await
}

/// `POST /v1/nodes/{id}/revoke-tokens`.
#[utoipa::path(
    post,
    path = "/v1/nodes/{id}/revoke-tokens",
    operation_id = "responders_revoke_node",
    tag = "incident response",
    params(("id" = inline(Ident), Path, description = "The node's id.")),
    request_body = ReasonBody,
    responses(
        (status = 200, body = Revoked),
        (status = 404, body = ErrorBody, description = "`not_found`."),
        SessionErrors,
    ),
    security(("session" = []), ("session_cookie" = [], "csrf" = [])),
)]
pub async fn revoke_node(
    State(state): State<ManagementState>,
    caller: Caller,
    Path(id): Path<Ident>,
    JsonBody(body): JsonBody<ReasonBody>,
) -> Result<Json<Revoked>, ApiError> {
    revoke_tokens(&state, &caller, Subject::Node, &id, &body).await
}

/// `POST /v1/groups/{id}/revoke-tokens`.
#[utoipa::path(
    post,
    path = "/v1/groups/{id}/revoke-tokens",
    operation_id = "responders_revoke_group",
    tag = "incident response",
    params(("id" = inline(Ident), Path, description = "The group's id.")),
    request_body = ReasonBody,
    responses(
        (status = 200, body = Revoked),
        (status = 404, body = ErrorBody, description = "`not_found`."),
        SessionErrors,
    ),
    security(("session" = []), ("session_cookie" = [], "csrf" = [])),
)]
pub async fn revoke_group(
    State(state): State<ManagementState>,
    caller: Caller,
    Path(id): Path<Ident>,
    JsonBody(body): JsonBody<ReasonBody>,
) -> Result<Json<Revoked>, ApiError> {
    revoke_tokens(&state, &caller, Subject::Group, &id, &body).await
}

/// `POST /v1/nodes/{id}/disable` (nodes:disable): management refuses the node from now on, the
/// vault mints, refreshes and delegates nothing for it, and every token it holds is revoked. Disabling twice is harmless (the revocation is
/// repeated).
#[utoipa::path(
    post,
    path = "/v1/nodes/{id}/disable",
    operation_id = "responders_disable_node",
    tag = "incident response",
    params(("id" = inline(Ident), Path, description = "The node's id.")),
    request_body = ReasonBody,
    responses(
        (status = 200, body = NodeDisabled),
        (status = 404, body = ErrorBody, description = "`not_found`."),
        SessionErrors,
    ),
    security(("session" = []), ("session_cookie" = [], "csrf" = [])),
)]
pub async fn disable_node(
    State(state): State<ManagementState>,
    caller: Caller,
    Path(id): Path<Ident>,
    JsonBody(body): JsonBody<ReasonBody>,
) -> Result<Json<NodeDisabled>, ApiError> {
    caller.require(&state, Action::NodesDisable)?;
    let reason = check_reason(&body.reason)?;
    let node = state.known_node(&id).await?;
    intent(
        &state,
        &caller,
        "node.disable",
        format!("node:{id}"),
        reason,
    )
    .await?;
    let newly = state
        .store
        .disable_node(&id)
        .await
        .map_err(ApiError::internal)?;
    // The vault too: it mints, refreshes and delegates nothing for a disabled node.
    let key = hex::encode(&node.public_key);
    let mut registration = Registration::of(&node, &key, &node.ceiling);
    registration.disabled = true;
    state.vault.put_node(&registration).await?;
    let revoked = revoke(&state, &caller, "node", &id, reason).await?;
    Ok(Json(NodeDisabled {
        revoked,
        disabled: true,
        already_disabled: !newly,
    }))
}

/// `POST /v1/vaults/{group}/lock` (vault:lock): the vault wipes the group's data key now.
#[utoipa::path(
    post,
    path = "/v1/vaults/{group}/lock",
    operation_id = "responders_lock_vault",
    tag = "incident response",
    params(("group" = inline(Ident), Path, description = "The group.")),
    request_body = ReasonBody,
    responses(
        (status = 200, body = VaultLocked),
        (status = 404, body = ErrorBody, description = "`not_found`."),
        SessionErrors,
    ),
    security(("session" = []), ("session_cookie" = [], "csrf" = [])),
)]
pub async fn lock_vault(
    State(state): State<ManagementState>,
    caller: Caller,
    Path(group): Path<Ident>,
    JsonBody(body): JsonBody<ReasonBody>,
) -> Result<Json<VaultLocked>, ApiError> {
    caller.require(&state, Action::VaultLock)?;
    let reason = check_reason(&body.reason)?;
    intent(
        &state,
        &caller,
        "vault.lock",
        format!("vault:{group}"),
        reason,
    )
    .await?;
    let vault = state.vault.lock(&group).await?;
    Ok(Json(VaultLocked {
        group: group.to_string(),
        vault,
    }))
}

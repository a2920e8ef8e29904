//! The operations that need a human approval, one [`Approved`] implementation each: what a
//! request for it must carry and who may make one, which action executing it needs, what must
//! still hold when it is executed, and what it does; and the two routes that run them, a
//! user's request (`POST /v1/approvals`) and its execution (`POST /v1/approvals/{id}/execute`).
//! `approvals.rs` is the workflow around them (create, decide, claim once, events) and knows no
//! operation: it depends on nothing here.

use axum::{
    Json,
    extract::{Path, State},
};
use futures_util::future::BoxFuture;
use keymesh_core::{
    ApiError, ErrorCode,
    audit::{AuditEvent, Outcome},
    capability::rights::Right,
    error::ErrorBody,
    http::extract::Json as JsonBody,
    ident::Ident,
    openapi::SessionErrors,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{
    approvals::{
        Approval, MintedToken, PendingRequest, RequestAnswer, TokenRequest, announce, check_reason,
        claim, create, no_such_request, not_executable, pending, token_or_request, view,
    },
    auth::Caller,
    policy::Operation,
    rbac::Action,
    state::ManagementState,
    store::{UserRow, now_ms},
};

/// What a user's request for an operation became.
pub(crate) enum Requested {
    /// The parameters of a new approval request, to wait for reviewers.
    Params(Value),
    /// Answered at once (a `token.mint` within the node's ceiling, or waived).
    Answered(Box<RequestAnswer>),
}

/// One operation that needs an approval.
pub(crate) trait Approved: Sync {
    /// A user's request (`POST /v1/approvals`): the caller may ask for it and it is well
    /// formed; its parameters.
    fn request<'a>(
        &'a self,
        state: &'a ManagementState,
        caller: &'a Caller,
        body: &'a UserRequest,
    ) -> BoxFuture<'a, Result<Requested, ApiError>>;

    /// The action executing it at `POST /v1/approvals/{id}/execute` needs; `None` when it is
    /// executed elsewhere (a token redeemed by its node, an export streamed).
    fn executed_with(&self) -> Option<Action>;

    /// What must still hold now, before the claim uses the approval up.
    fn still_valid<'a>(
        &'a self,
        _state: &'a ManagementState,
        _caller: &'a Caller,
        _params: &'a Value,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async { Ok(()) })
    }

    /// Do it, once (the claim is already made): what it did.
    fn execute<'a>(
        &'a self,
        state: &'a ManagementState,
        caller: &'a Caller,
        id: &'a str,
        params: &'a Value,
    ) -> BoxFuture<'a, Result<Execution, ApiError>>;
}

/// The implementation of `operation`.
pub(crate) fn of(operation: Operation) -> &'static dyn Approved {
    match operation {
        Operation::TokenMint => &TokenMint,
        Operation::AuditExport => &AuditExport,
        Operation::UserDelete => &UserDelete,
        Operation::VaultUnlock => &VaultUnlock,
        Operation::EmergencyAccess => &EmergencyAccess,
        Operation::GroupApprovalsDisable => &GroupApprovalsDisable,
    }
}

fn missing(what: &str) -> ApiError {
    ApiError::with_message(ErrorCode::InvalidRequest, format!("{what} is required"))
}

/// The refusal to execute, here, an operation executed elsewhere.
fn elsewhere(operation: Operation) -> BoxFuture<'static, Result<Execution, ApiError>> {
    Box::pin(async move {
        Err(ApiError::with_message(
            ErrorCode::InvalidRequest,
            format!("{operation} requests are executed elsewhere"),
        ))
    })
}

/// `token.mint` for one of the caller's own nodes: within its ceiling (or waived) minted at
/// once, above it a request; redeemed by the node.
struct TokenMint;

impl Approved for TokenMint {
    fn request<'a>(
        &'a self,
        state: &'a ManagementState,
        caller: &'a Caller,
        body: &'a UserRequest,
    ) -> BoxFuture<'a, Result<Requested, ApiError>> {
        Box::pin(async move {
            let node_id = body.node_id.as_ref().ok_or_else(|| missing("node_id"))?;
            let node = state
                .store
                .node(node_id)
                .await
                .map_err(ApiError::internal)?
                .filter(|n| n.user_id == caller.user.id && n.disabled_at_ms.is_none())
                .ok_or_else(|| {
                    ApiError::with_message(ErrorCode::NotFound, "no such node of yours")
                })?;
            let request = TokenRequest {
                rights: body.rights.clone().ok_or_else(|| missing("rights"))?,
                ttl_secs: body.ttl_secs,
                reason: body.reason.clone(),
                approval_ttl_secs: body.approval_ttl_secs,
            };
            token_or_request(state, &node, caller.actor(), request)
                .await
                .map(|answer| Requested::Answered(Box::new(answer)))
        })
    }

    fn executed_with(&self) -> Option<Action> {
        None
    }

    fn execute<'a>(
        &'a self,
        _: &'a ManagementState,
        _: &'a Caller,
        _: &'a str,
        _: &'a Value,
    ) -> BoxFuture<'a, Result<Execution, ApiError>> {
        elsewhere(Operation::TokenMint)
    }
}

/// `audit.export` (audit:export): streamed from the export endpoint once approved.
struct AuditExport;

impl Approved for AuditExport {
    fn request<'a>(
        &'a self,
        state: &'a ManagementState,
        caller: &'a Caller,
        body: &'a UserRequest,
    ) -> BoxFuture<'a, Result<Requested, ApiError>> {
        Box::pin(async move {
            caller.require(state, Action::AuditExport)?;
            check_reason(&body.reason)?;
            crate::audit::export_params(body.filters.clone()).map(Requested::Params)
        })
    }

    fn executed_with(&self) -> Option<Action> {
        None
    }

    fn execute<'a>(
        &'a self,
        _: &'a ManagementState,
        _: &'a Caller,
        _: &'a str,
        _: &'a Value,
    ) -> BoxFuture<'a, Result<Execution, ApiError>> {
        elsewhere(Operation::AuditExport)
    }
}

/// `user.delete` (users:manage).
struct UserDelete;

impl Approved for UserDelete {
    fn request<'a>(
        &'a self,
        state: &'a ManagementState,
        caller: &'a Caller,
        body: &'a UserRequest,
    ) -> BoxFuture<'a, Result<Requested, ApiError>> {
        Box::pin(async move {
            caller.require(state, Action::UsersManage)?;
            check_reason(&body.reason)?;
            let user_id = body.user_id.as_ref().ok_or_else(|| missing("user_id"))?;
            deletable(state, user_id).await?;
            Ok(Requested::Params(json!({ "user_id": user_id })))
        })
    }

    fn executed_with(&self) -> Option<Action> {
        Some(Action::UsersManage)
    }

    fn still_valid<'a>(
        &'a self,
        state: &'a ManagementState,
        _: &'a Caller,
        params: &'a Value,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            deletable(state, params["user_id"].as_str().unwrap_or_default())
                .await
                .map(drop)
        })
    }

    fn execute<'a>(
        &'a self,
        state: &'a ManagementState,
        caller: &'a Caller,
        id: &'a str,
        params: &'a Value,
    ) -> BoxFuture<'a, Result<Execution, ApiError>> {
        Box::pin(async move {
            delete_user(state, caller, id, params)
                .await
                .map(Execution::UserDeleted)
        })
    }
}

/// A user that may be deleted: exists, not deleted yet, and not the last enabled admin (nobody
/// could manage users afterwards).
async fn deletable(state: &ManagementState, id: &str) -> Result<UserRow, ApiError> {
    let user = crate::users::existing(state, id).await?;
    crate::users::not_last_admin(state, &user).await?;
    Ok(user)
}

/// Delete a user (an approved `user.delete`): the vault first (the user's tokens die, their
/// nodes are disabled there), then management in one transaction (address tombstoned,
/// account disabled, sessions ended, memberships and unused codes removed, nodes disabled).
async fn delete_user(
    state: &ManagementState,
    caller: &Caller,
    id: &str,
    params: &Value,
) -> Result<UserDeleted, ApiError> {
    let user_id = params["user_id"].as_str().unwrap_or_default().to_owned();
    let nodes = state
        .store
        .nodes(None, Some(&user_id))
        .await
        .map_err(ApiError::internal)?;
    if state.vault.configured() {
        state
            .vault
            .revoke_epoch("user", &user_id, "user deleted")
            .await?;
        for node in &nodes {
            let key = hex::encode(&node.public_key);
            let mut registration = crate::vault::Registration::of(node, &key, &node.ceiling);
            registration.disabled = true;
            state.vault.put_node(&registration).await?;
        }
    }
    let deleted = state
        .store
        .delete_user(&user_id)
        .await
        .map_err(ApiError::internal)?;
    state
        .audit_quiet(
            AuditEvent::new(
                caller.actor(),
                "user.delete",
                format!("user:{user_id}"),
                Outcome::Success,
            )
            .with_details(
                json!({ "approval": id, "nodes_disabled": nodes.len(), "deleted": deleted }),
            ),
        )
        .await;
    Ok(UserDeleted {
        user_id,
        deleted,
        nodes_disabled: nodes.into_iter().map(|n| n.id).collect(),
    })
}

/// `vault.unlock` (vault:unlock, in the group): executing it opens the unlock ceremony.
struct VaultUnlock;

impl Approved for VaultUnlock {
    fn request<'a>(
        &'a self,
        state: &'a ManagementState,
        caller: &'a Caller,
        body: &'a UserRequest,
    ) -> BoxFuture<'a, Result<Requested, ApiError>> {
        Box::pin(async move {
            check_reason(&body.reason)?;
            let group = body.group.as_ref().ok_or_else(|| missing("group"))?;
            crate::ceremonies::unlock_params(state, caller, group)
                .await
                .map(Requested::Params)
        })
    }

    fn executed_with(&self) -> Option<Action> {
        Some(Action::VaultUnlock)
    }

    fn still_valid<'a>(
        &'a self,
        state: &'a ManagementState,
        caller: &'a Caller,
        params: &'a Value,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            crate::ceremonies::party(state, caller, params["group"].as_str().unwrap_or_default())
                .await
                .map(drop)
        })
    }

    fn execute<'a>(
        &'a self,
        state: &'a ManagementState,
        caller: &'a Caller,
        id: &'a str,
        params: &'a Value,
    ) -> BoxFuture<'a, Result<Execution, ApiError>> {
        Box::pin(async move {
            crate::ceremonies::execute_unlock(state, caller, id, params)
                .await
                .map(Execution::UnlockOpened)
        })
    }
}

/// `emergency.access` (emergency:access): executing it starts the grant.
struct EmergencyAccess;

impl Approved for EmergencyAccess {
    fn request<'a>(
        &'a self,
        state: &'a ManagementState,
        caller: &'a Caller,
        body: &'a UserRequest,
    ) -> BoxFuture<'a, Result<Requested, ApiError>> {
        Box::pin(async move {
            check_reason(&body.reason)?;
            let user = body
                .user_id
                .as_ref()
                .map_or_else(|| caller.user.id.clone(), ToString::to_string);
            let role = body.role.as_deref().ok_or_else(|| missing("role"))?;
            crate::emergency::params(state, caller, &user, role, body.duration_secs)
                .await
                .map(Requested::Params)
        })
    }

    fn executed_with(&self) -> Option<Action> {
        Some(Action::EmergencyAccess)
    }

    fn still_valid<'a>(
        &'a self,
        state: &'a ManagementState,
        _: &'a Caller,
        params: &'a Value,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(crate::emergency::check_still(state, params))
    }

    fn execute<'a>(
        &'a self,
        state: &'a ManagementState,
        caller: &'a Caller,
        id: &'a str,
        params: &'a Value,
    ) -> BoxFuture<'a, Result<Execution, ApiError>> {
        Box::pin(async move {
            crate::emergency::execute(state, caller, id, params)
                .await
                .map(Execution::EmergencyStarted)
        })
    }
}

/// `group.approvals.disable` (groups:manage): executing it starts the waiver.
struct GroupApprovalsDisable;

impl Approved for GroupApprovalsDisable {
    fn request<'a>(
        &'a self,
        state: &'a ManagementState,
        caller: &'a Caller,
        body: &'a UserRequest,
    ) -> BoxFuture<'a, Result<Requested, ApiError>> {
        Box::pin(async move {
            check_reason(&body.reason)?;
            let group = body.group.as_ref().ok_or_else(|| missing("group"))?;
            crate::waivers::params(state, caller, group, body.duration_secs)
                .await
                .map(Requested::Params)
        })
    }

    fn executed_with(&self) -> Option<Action> {
        Some(Action::GroupsManage)
    }

    fn execute<'a>(
        &'a self,
        state: &'a ManagementState,
        caller: &'a Caller,
        id: &'a str,
        params: &'a Value,
    ) -> BoxFuture<'a, Result<Execution, ApiError>> {
        Box::pin(async move {
            crate::waivers::execute(state, caller, id, params)
                .await
                .map(Execution::ApprovalsWaived)
        })
    }
}

/// What executing an approved request did, by operation.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Execution {
    /// `user.delete`.
    UserDeleted(UserDeleted),
    /// `vault.unlock`: the unlock ceremony it opened.
    UnlockOpened(keymesh_proto::api::vaults::CeremonyView),
    /// `emergency.access`: the grant, started now.
    EmergencyStarted(crate::emergency::GrantAnswer),
    /// `group.approvals.disable`: the waiver, started now.
    ApprovalsWaived(crate::waivers::Waiver),
}

/// A deleted user.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserDeleted {
    /// The user.
    pub user_id: String,
    /// `false`: they were deleted already.
    pub deleted: bool,
    /// Their nodes, disabled now.
    pub nodes_disabled: Vec<String>,
}

/// `POST /v1/approvals/{id}/execute`: the request (now `executed`) and what it did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Executed {
    /// The request.
    pub approval: Approval,
    /// What the operation did.
    #[serde(flatten)]
    pub result: Execution,
}

/// `POST /v1/approvals` body (user).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserRequest {
    pub(crate) operation: String,
    pub(crate) reason: String,
    #[serde(default)]
    pub(crate) approval_ttl_secs: Option<u64>,
    /// `token.mint`: the caller's node and the rights it should get.
    #[serde(default)]
    pub(crate) node_id: Option<Ident>,
    #[serde(default)]
    pub(crate) rights: Option<Vec<Right>>,
    #[serde(default)]
    pub(crate) ttl_secs: Option<u64>,
    /// `audit.export`: which records.
    #[serde(default)]
    pub(crate) filters: Option<keymesh_core::audit::AuditQuery>,
    /// `user.delete`: whom; `emergency.access`: for whom (default: the caller).
    #[serde(default)]
    pub(crate) user_id: Option<Ident>,
    /// `vault.unlock`, `group.approvals.disable`: which group.
    #[serde(default)]
    pub(crate) group: Option<Ident>,
    /// `emergency.access`: the role granted.
    #[serde(default)]
    pub(crate) role: Option<String>,
    /// `emergency.access`, `group.approvals.disable`: for how long, from execution.
    #[serde(default)]
    pub(crate) duration_secs: Option<u64>,
}

/// `POST /v1/approvals` (approvals:request): `token.mint` for one of the caller's own nodes,
/// `audit.export` (audit:export), `user.delete` (users:manage), `vault.unlock` (vault:unlock, in
/// the group), `emergency.access` (emergency:access) or `group.approvals.disable`
/// (groups:manage).
#[utoipa::path(
    post,
    path = "/v1/approvals",
    operation_id = "approvals_user_request",
    tag = "approvals",
    request_body = UserRequest,
    responses(
        (status = 202, body = PendingRequest, description = "The request, pending."),
        (status = 200, body = MintedToken, description = "A `token.mint` within the ceiling (or waived), minted at once."),
        (status = 404, body = ErrorBody, description = "`not_found`: no such node, user or group of the caller."),
        (status = 409, body = ErrorBody, description = "`conflict`: e.g. the last enabled admin."),
        SessionErrors,
    ),
    security(("session" = []), ("session_cookie" = [], "csrf" = [])),
)]
pub async fn user_request(
    State(state): State<ManagementState>,
    caller: Caller,
    JsonBody(body): JsonBody<UserRequest>,
) -> Result<RequestAnswer, ApiError> {
    caller.require(&state, Action::ApprovalsRequest)?;
    let operation: Operation = body
        .operation
        .parse()
        .map_err(|e: String| ApiError::with_message(ErrorCode::InvalidRequest, e))?;
    let params = match crate::operations::of(operation)
        .request(&state, &caller, &body)
        .await?
    {
        Requested::Params(params) => params,
        Requested::Answered(answer) => return Ok(*answer),
    };
    let row = create(
        &state,
        operation,
        params,
        &body.reason,
        body.approval_ttl_secs,
        caller.actor(),
        &caller.user.id,
    )
    .await?;
    Ok(pending(&row))
}

/// `POST /v1/approvals/{id}/execute` (the requester of an approved request): run it once.
/// `token.mint` is redeemed by its node and `audit.export` streamed from its own endpoint;
/// every other operation runs here: `user.delete`, `vault.unlock` (opens the unlock
/// ceremony), `emergency.access` (starts the grant), `group.approvals.disable` (starts the
/// waiver). A failure that leaves the operation undone gives the claim back.
#[utoipa::path(
    post,
    path = "/v1/approvals/{id}/execute",
    operation_id = "approvals_execute",
    tag = "approvals",
    params(("id" = String, Path, description = "The approval request's id.")),
    responses(
        (status = 200, body = Executed, description = "The request (`executed`) and the operation's result."),
        (status = 404, body = ErrorBody, description = "`not_found`: not the caller's request."),
        (status = 409, body = ErrorBody, description = "`approval_pending` or `approval_decided`; `conflict`."),
        (status = 410, body = ErrorBody, description = "`approval_expired`."),
        SessionErrors,
    ),
    security(("session" = []), ("session_cookie" = [], "csrf" = [])),
)]
pub async fn execute(
    State(state): State<ManagementState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Executed>, ApiError> {
    let row = state
        .store
        .approval(&id)
        .await
        .map_err(ApiError::internal)?
        .filter(|r| r.requester == caller.actor())
        .ok_or_else(no_such_request)?;
    let operation: Operation = row
        .operation
        .parse()
        .map_err(|e: String| ApiError::internal(std::io::Error::other(e)))?;
    let approved = crate::operations::of(operation);
    let Some(action) = approved.executed_with() else {
        return Err(ApiError::with_message(
            ErrorCode::InvalidRequest,
            format!("{} requests are executed elsewhere", row.operation),
        ));
    };
    caller.require(&state, action)?;
    if row.effective_status(now_ms()) != "approved" {
        return Err(not_executable(&row));
    }
    let params: Value = serde_json::from_str(&row.params).map_err(ApiError::internal)?;
    // Checks that must still hold now, before the claim uses the approval up.
    approved.still_valid(&state, &caller, &params).await?;
    let (claimed, params) = claim(&state, caller.actor(), &row).await?;
    let result = approved.execute(&state, &caller, &id, &params).await;
    match result {
        Ok(result) => {
            announce(&state, "approval.executed", &claimed);
            Ok(Json(Executed {
                approval: view(&claimed),
                result,
            }))
        }
        Err(e) => {
            if let Err(undo) = state.store.release_execution(&id).await {
                tracing::error!(error = %keymesh_core::error::error_chain(&undo), approval = %id, "releasing a failed execution failed");
            }
            state
                .audit_quiet(
                    AuditEvent::new(
                        caller.actor(),
                        "approval.execute",
                        format!("approval:{id}"),
                        Outcome::Failure,
                    )
                    .with_details(
                        json!({ "operation": row.operation, "error": e.code().as_str() }),
                    ),
                )
                .await;
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire contract's list (what Keymesh Admin offers to execute) and the implementations
    /// agree.
    #[test]
    fn the_requester_executes_exactly_what_the_contract_says() {
        for operation in Operation::ALL {
            assert_eq!(
                of(operation).executed_with().is_some(),
                operation.executed_by_requester(),
                "{operation}"
            );
        }
    }
}

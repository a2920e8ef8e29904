//! The operations that need a human approval, one [`Approved`] implementation each: what a
//! request for it must carry and who may make one, which action executing it needs, what must
//! still hold when it is executed, and what it does. `approvals.rs` is the workflow around them
//! (request, decide, claim once, execute, events); it never matches on the operation.

use futures_util::future::BoxFuture;
use keymesh_core::{
    ApiError, ErrorCode,
    audit::{AuditEvent, Outcome},
};
use serde_json::{Value, json};

use crate::{
    approvals::{
        Execution, RequestAnswer, TokenRequest, UserDeleted, UserRequest, check_reason,
        token_or_request,
    },
    auth::Caller,
    policy::Operation,
    rbac::Action,
    state::ManagementState,
    store::UserRow,
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

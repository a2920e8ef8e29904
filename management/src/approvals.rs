//! Human approvals: requests, reviewers' decisions, exactly-once execution, live events and
//! mail, for every operation of `policy::Operation` (`token.mint` requested by a node or its
//! owner; the others by users); see docs/management.md.

use keymesh_core::error::ErrorBody;
use keymesh_core::openapi::{NodeErrors, SessionErrors};
use std::{convert::Infallible, time::Duration};

use axum::{
    Json,
    extract::{Path, Query, State},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures_util::stream::{self, Stream};
use http::StatusCode;
use keymesh_core::{
    ApiError, ErrorCode,
    audit::{AuditEvent, Outcome},
    capability::{Ceiling, Op, Right, rights::above_ceiling, token::MAX_RIGHTS},
    http::extract::Json as JsonBody,
};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

pub use keymesh_proto::api::approvals::{Approval, ApprovalList, ApprovalShown, Decision};

use crate::{
    approval_store::{ApprovalRow, DecisionRow, NewApproval, Vote},
    auth::{Caller, NodeCaller},
    directory::NodeRow,
    mail::Mail,
    policy::Operation,
    rbac::{Action, Role},
    state::{ApprovalEvent, ManagementState, page_limit},
    store::now_ms,
    vault::IssuedToken,
};

/// Longest reason accepted, in characters.
const MAX_REASON: usize = 500;
/// Default lifetime of a request.
const DEFAULT_TTL_SECS: u64 = 3600;

/// A reason given by a person: 1 to 500 characters of text.
pub(crate) fn check_reason(reason: &str) -> Result<(), ApiError> {
    let n = reason.trim().chars().count();
    if n == 0 || n > MAX_REASON || reason.chars().any(char::is_control) {
        return Err(ApiError::with_message(
            ErrorCode::InvalidRequest,
            format!("reason must be 1 to {MAX_REASON} characters of text"),
        ));
    }
    Ok(())
}

fn check_rights(rights: &[Right]) -> Result<(), ApiError> {
    if rights.is_empty() || rights.len() > MAX_RIGHTS {
        return Err(ApiError::with_message(
            ErrorCode::InvalidRequest,
            format!("a token carries 1 to {MAX_RIGHTS} rights"),
        ));
    }
    Ok(())
}

/// What a request looks like to its reader: its effective status (`expired` past its
/// deadline).
pub(crate) fn view(row: &ApprovalRow) -> Approval {
    Approval {
        id: row.id.clone(),
        operation: row.operation.clone(),
        params: serde_json::from_str(&row.params).unwrap_or(Value::Null),
        reason: row.reason.clone(),
        requester: row.requester.clone(),
        requester_user: row.requester_user.clone(),
        status: row.effective_status(now_ms()).to_owned(),
        approvals_needed: row.approvals_needed,
        denials_needed: row.denials_needed,
        reviewer_roles: serde_json::from_str(&row.reviewer_roles).unwrap_or_default(),
        created_at_ms: row.created_at_ms,
        expires_at_ms: row.expires_at_ms,
        decided_at_ms: row.decided_at_ms,
        executed_at_ms: row.executed_at_ms,
    }
}

/// A decision as callers see it.
fn decision(row: DecisionRow) -> Decision {
    Decision {
        reviewer: row.reviewer,
        decision: row.decision,
        reason: row.reason,
        decided_at_ms: row.decided_at_ms,
    }
}

/// A token minted for a node (within its ceiling, under a waiver, or redeemed), as the vault
/// issued it; with the approval request it executed, if any.
#[derive(Serialize, utoipa::ToSchema)]
pub struct MintedToken {
    /// The token, URL-safe base64 (secret: shown once).
    pub token: String,
    /// The token's own id.
    pub token_id: String,
    /// The grant it belongs to: what `POST /v1/tokens/revoke` at the vault names.
    pub grant: String,
    /// Unix seconds.
    pub expires_at: u64,
    /// The approval request it executed (redeemed, or approved by a waiver).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
}

impl std::fmt::Debug for MintedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintedToken")
            .field("token_id", &self.token_id)
            .field("grant", &self.grant)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl MintedToken {
    fn new(token: IssuedToken, approval: Option<Approval>) -> Self {
        Self {
            token: token.token,
            token_id: token.token_id,
            grant: token.grant,
            expires_at: token.expires_at,
            approval,
        }
    }
}

/// An approval request that now waits for reviewers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PendingRequest {
    /// The request (`pending`).
    pub approval: Approval,
}

/// The answer to a token request, or to any approval request: a token at once (`200`), or the
/// request to follow (`202`).
#[derive(Debug)]
pub enum RequestAnswer {
    /// `200`: minted now.
    Token(MintedToken),
    /// `202`: waiting for reviewers.
    Pending(PendingRequest),
}

impl IntoResponse for RequestAnswer {
    fn into_response(self) -> Response {
        match self {
            Self::Token(t) => (StatusCode::OK, Json(t)).into_response(),
            Self::Pending(p) => (StatusCode::ACCEPTED, Json(p)).into_response(),
        }
    }
}

/// A request and its reviewers' decisions.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApprovalDecisions {
    /// The request.
    pub approval: Approval,
    /// Its decisions so far, oldest first.
    pub decisions: Vec<Decision>,
}

fn node_ceiling(node: &NodeRow) -> Result<Ceiling, ApiError> {
    node.ceiling
        .parse::<Op>()
        .map(Ceiling)
        .map_err(|e| ApiError::internal(std::io::Error::other(e)))
}

/// A token for `node` within its ceiling, minted now; or an approval request for the rights
/// above it. Never silently truncated.
pub(crate) async fn token_or_request(
    state: &ManagementState,
    node: &NodeRow,
    requester: String,
    body: TokenRequest,
) -> Result<RequestAnswer, ApiError> {
    check_rights(&body.rights)?;
    check_reason(&body.reason)?;
    let excess = above_ceiling(&body.rights, node_ceiling(node)?);
    if excess.is_empty() {
        state
            .audit(
                AuditEvent::new(
                    requester.clone(),
                    "token.request",
                    format!("node:{}", node.id),
                    Outcome::Success,
                )
                .with_details(json!({ "rights": body.rights, "reason": body.reason })),
            )
            .await?;
        let token = state
            .vault
            .mint(&node.id, &json!(body.rights), body.ttl_secs, None)
            .await?;
        return Ok(RequestAnswer::Token(MintedToken::new(token, None)));
    }
    let params = json!({
        "node_id": node.id, "group": node.group_id, "rights": body.rights,
        "ttl_secs": body.ttl_secs, "excess": excess,
    });
    let group = state
        .store
        .group(&node.group_id)
        .await
        .map_err(ApiError::internal)?;
    if let Some(waiver) = group.as_ref().and_then(crate::waivers::active) {
        return waived_mint(state, node, requester, &body, &params, waiver).await;
    }
    let row = create(
        state,
        Operation::TokenMint,
        params,
        &body.reason,
        body.approval_ttl_secs,
        requester,
        &node.user_id,
    )
    .await?;
    Ok(pending(&row))
}

/// A token above the ceiling while the group's token approvals are waived: recorded as a
/// request the waiver approved (audited, visible in the approvals list) and minted at once
/// under its id. If the vault refuses, the request stays used (the node asks again).
async fn waived_mint(
    state: &ManagementState,
    node: &NodeRow,
    requester: String,
    body: &TokenRequest,
    params: &Value,
    waiver: &str,
) -> Result<RequestAnswer, ApiError> {
    state
        .audit(
            AuditEvent::new(
                requester.clone(),
                "approval.request",
                format!("operation:{}", Operation::TokenMint),
                Outcome::Success,
            )
            .with_details(json!({ "params": params, "reason": body.reason, "waived_by": waiver })),
        )
        .await?;
    let expires = now_ms().saturating_add(i64::try_from(DEFAULT_TTL_SECS * 1000).unwrap_or(0));
    let id = state
        .store
        .insert_waived(
            &NewApproval {
                operation: Operation::TokenMint.as_str(),
                params: &params.to_string(),
                reason: body.reason.trim(),
                requester: &requester,
                requester_user: &node.user_id,
                approvals_needed: 1,
                denials_needed: 1,
                reviewer_roles: "[]",
                expires_at_ms: expires,
            },
            waiver,
        )
        .await
        .map_err(ApiError::internal)?;
    let minted = state
        .vault
        .mint(&node.id, &json!(body.rights), body.ttl_secs, Some(&id))
        .await;
    // A failed mint leaves the request used: it was approved by nobody but the waiver, so it
    // must not wait around to be redeemed after the waiver ends. The node simply asks again.
    let token = minted.map_err(|e| {
        let e = ApiError::from(e);
        ApiError::with_message(
            e.code(),
            format!(
                "the vault did not mint under the waiver ({}); ask again",
                e.code().as_str()
            ),
        )
    })?;
    let row = state
        .store
        .approval(&id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(no_such_request)?;
    announce(state, "approval.executed", &row);
    Ok(RequestAnswer::Token(MintedToken::new(
        token,
        Some(view(&row)),
    )))
}

/// Record a request under its operation's policy, then tell reviewers.
pub(crate) async fn create(
    state: &ManagementState,
    operation: Operation,
    params: Value,
    reason: &str,
    ttl_secs: Option<u64>,
    requester: String,
    requester_user: &str,
) -> Result<ApprovalRow, ApiError> {
    let policy = state.config.policies.of(operation);
    let ttl = ttl_secs.unwrap_or(DEFAULT_TTL_SECS.min(policy.max_ttl_secs));
    if ttl == 0 || ttl > policy.max_ttl_secs {
        return Err(ApiError::with_message(
            ErrorCode::InvalidRequest,
            format!(
                "approval_ttl_secs must be between 1 and {}",
                policy.max_ttl_secs
            ),
        ));
    }
    let roles: Vec<&str> = policy.reviewers.iter().map(|r| r.as_str()).collect();
    state
        .audit(
            AuditEvent::new(
                requester.clone(),
                "approval.request",
                format!("operation:{operation}"),
                Outcome::Success,
            )
            .with_details(json!({ "params": params, "reason": reason, "ttl_secs": ttl })),
        )
        .await?;
    let row = state
        .store
        .insert_approval(&NewApproval {
            operation: operation.as_str(),
            params: &params.to_string(),
            reason: reason.trim(),
            requester: &requester,
            requester_user,
            approvals_needed: i64::from(policy.approvals),
            denials_needed: i64::from(policy.denials),
            reviewer_roles: &json!(roles).to_string(),
            expires_at_ms: now_ms() + i64::try_from(ttl * 1000).unwrap_or(i64::MAX),
        })
        .await
        .map_err(ApiError::internal)?;
    announce(state, "approval.created", &row);
    notify_reviewers(state, &row).await;
    Ok(row)
}

pub(crate) fn announce(state: &ManagementState, kind: &str, row: &ApprovalRow) {
    let entered = match kind {
        "approval.created" => Some("requested"),
        "approval.executed" => Some("executed"),
        "approval.decided" if row.status == "approved" => Some("approved"),
        "approval.decided" if row.status == "denied" => Some("denied"),
        _ => None,
    };
    if let Some(entered) = entered {
        state.metrics.approval(&row.operation, entered);
    }
    state.publish(ApprovalEvent {
        requester_user: row.requester_user.clone(),
        body: json!({ "type": kind, "approval": view(row) }),
    });
}

fn reviewer_roles(row: &ApprovalRow) -> Vec<Role> {
    serde_json::from_str::<Vec<String>>(&row.reviewer_roles)
        .unwrap_or_default()
        .iter()
        .filter_map(|r| r.parse().ok())
        .collect()
}

/// Mail every possible reviewer (not the requester). Mail failures are logged by the mailer.
async fn notify_reviewers(state: &ManagementState, row: &ApprovalRow) {
    let roles = reviewer_roles(row);
    let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
    let reviewers = match state.store.users_in_roles(&names).await {
        Ok(users) => users,
        Err(e) => {
            tracing::warn!(error = %keymesh_core::error::error_chain(&e), "listing reviewers to notify failed");
            return;
        }
    };
    let params: Value = serde_json::from_str(&row.params).unwrap_or(Value::Null);
    let beneficiary = (row.operation == Operation::EmergencyAccess.as_str())
        .then(|| params["user_id"].as_str())
        .flatten();
    for user in reviewers.into_iter().filter(|u| {
        u.id != row.requester_user
            && Some(u.id.as_str()) != beneficiary
            && u.role
                .parse()
                .is_ok_and(|r| state.config.rbac.allows(r, Action::ApprovalsDecide))
    }) {
        state.mailer.send_later(Mail {
            to: user.email,
            subject: format!("Keymesh: approval needed for {}", row.operation),
            body: SecretString::from(format!(
                "{requester} asks for {operation}.\n\nReason: {reason}\n\nReview request {id} in Keymesh Admin before it expires (unix ms {expires}).\n",
                requester = row.requester,
                operation = row.operation,
                reason = row.reason,
                id = row.id,
                expires = row.expires_at_ms,
            )),
        });
    }
}

/// Mail the requester the final decision.
async fn notify_requester(state: &ManagementState, row: &ApprovalRow) {
    if let Ok(Some(user)) = state.store.user(&row.requester_user).await {
        state.mailer.send_later(Mail {
            to: user.email,
            subject: format!("Keymesh: your {} request was {}", row.operation, row.status),
            body: SecretString::from(format!(
                "Request {id} ({operation}, by {requester}) was {status}.\n",
                id = row.id,
                operation = row.operation,
                requester = row.requester,
                status = row.status,
            )),
        });
    }
}

/// `POST /v1/token-requests` body (node) and `params` of a user's `token.mint` request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub(crate) rights: Vec<Right>,
    #[serde(default)]
    pub(crate) ttl_secs: Option<u64>,
    pub(crate) reason: String,
    /// How long the approval request may wait (default one hour, at most the policy's).
    #[serde(default)]
    pub(crate) approval_ttl_secs: Option<u64>,
}

/// `POST /v1/token-requests` (node): a token within the node's ceiling at once (200), or an
/// approval request for rights above it (202).
#[utoipa::path(
    post,
    path = "/v1/token-requests",
    operation_id = "approvals_node_token_request",
    tag = "approvals",
    request_body = TokenRequest,
    responses(
        (status = 200, body = MintedToken, description = "Within the ceiling: the token, minted now (under a waiver, with the request the waiver approved)."),
        (status = 202, body = PendingRequest, description = "Above the ceiling: the approval request, pending."),
        (status = 403, body = ErrorBody, description = "`forbidden`: the node is disabled."),
        NodeErrors,
    ),
    security(("node_token" = [], "node_proof" = [])),
)]
pub async fn node_token_request(
    State(state): State<ManagementState>,
    caller: NodeCaller,
) -> Result<RequestAnswer, ApiError> {
    let body: TokenRequest = caller.json()?;
    token_or_request(&state, &caller.node, caller.actor(), body).await
}

/// The answer to a request that now waits for reviewers.
pub(crate) fn pending(row: &ApprovalRow) -> RequestAnswer {
    RequestAnswer::Pending(PendingRequest {
        approval: view(row),
    })
}

/// Claim an approved request for execution, once: audited first (fail closed); the claimed
/// row and its parameters. `actor` is who executes it.
pub(crate) async fn claim(
    state: &ManagementState,
    actor: String,
    row: &ApprovalRow,
) -> Result<(ApprovalRow, Value), ApiError> {
    if row.effective_status(now_ms()) != "approved" {
        return Err(not_executable(row));
    }
    let params: Value = serde_json::from_str(&row.params).map_err(ApiError::internal)?;
    let event = |outcome| {
        AuditEvent::new(
            actor.clone(),
            "approval.execute",
            format!("approval:{}", row.id),
            outcome,
        )
        .with_details(json!({ "operation": row.operation, "params": params }))
    };
    state.audit(event(Outcome::Success)).await?;
    match state
        .store
        .claim_execution(&row.id)
        .await
        .map_err(ApiError::internal)?
    {
        Some(claimed) => Ok((claimed, params)),
        None => {
            state.audit_quiet(event(Outcome::Failure)).await;
            let now = state
                .store
                .approval(&row.id)
                .await
                .map_err(ApiError::internal)?
                .ok_or_else(no_such_request)?;
            Err(not_executable(&now))
        }
    }
}

/// Execute the caller's own approved request of `operation`, once: its parameters. For
/// operations whose result goes to the requesting user (an export).
pub async fn execute_own(
    state: &ManagementState,
    caller: &Caller,
    id: &str,
    operation: Operation,
) -> Result<Value, ApiError> {
    let row = state
        .store
        .approval(id)
        .await
        .map_err(ApiError::internal)?
        .filter(|r| r.requester == caller.actor() && r.operation == operation.as_str())
        .ok_or_else(no_such_request)?;
    let (claimed, params) = claim(state, caller.actor(), &row).await?;
    announce(state, "approval.executed", &claimed);
    Ok(params)
}

/// `GET /v1/approvals` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// `pending`, `approved`, `denied` or `executed`.
    #[serde(default)]
    status: String,
    /// 1..=500, default 100.
    limit: Option<i64>,
}

/// `GET /v1/approvals`: every request for reviewers (`approvals:decide`), else the caller's own.
#[utoipa::path(
    get,
    path = "/v1/approvals",
    operation_id = "approvals_list",
    tag = "approvals",
    params(ListQuery),
    responses(
        (status = 200, body = ApprovalList, description = "All for reviewers, else the caller's own."),
        SessionErrors,
    ),
    security(("session" = []), ("session_cookie" = [], "csrf" = [])),
)]
pub async fn list(
    State(state): State<ManagementState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<ApprovalList>, ApiError> {
    let limit = page_limit(q.limit, 500)?;
    if !matches!(
        q.status.as_str(),
        "" | "pending" | "approved" | "denied" | "executed"
    ) {
        return Err(ApiError::with_message(
            ErrorCode::InvalidRequest,
            "status is pending, approved, denied or executed",
        ));
    }
    let own = if caller.holds(&state, Action::ApprovalsDecide) {
        ""
    } else {
        caller.user.id.as_str()
    };
    let rows = state
        .store
        .approvals(own, &q.status, limit)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(ApprovalList {
        approvals: rows.iter().map(view).collect(),
    }))
}

async fn with_decisions(
    state: &ManagementState,
    row: &ApprovalRow,
) -> Result<ApprovalDecisions, ApiError> {
    let decisions = state
        .store
        .decisions(&row.id)
        .await
        .map_err(ApiError::internal)?;
    Ok(ApprovalDecisions {
        approval: view(row),
        decisions: decisions.into_iter().map(decision).collect(),
    })
}

pub(crate) fn no_such_request() -> ApiError {
    ApiError::with_message(ErrorCode::NotFound, "no such approval request")
}

/// `GET /v1/approvals/{id}`: for reviewers and the requester.
#[utoipa::path(
    get,
    path = "/v1/approvals/{id}",
    operation_id = "approvals_show",
    tag = "approvals",
    params(("id" = String, Path, description = "The approval request's id.")),
    responses(
        (status = 200, body = ApprovalShown, description = "`ceremony` is the handle of the open unlock ceremony an executed `vault.unlock` request opened, for callers with `vault:unlock` (`null` otherwise), so share holders find it."),
        (status = 404, body = ErrorBody, description = "`not_found`: no such request for the caller."),
        SessionErrors,
    ),
    security(("session" = []), ("session_cookie" = [], "csrf" = [])),
)]
pub async fn show(
    State(state): State<ManagementState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ApprovalShown>, ApiError> {
    let row = state
        .store
        .approval(&id)
        .await
        .map_err(ApiError::internal)?
        .filter(|r| {
            r.requester_user == caller.user.id || caller.holds(&state, Action::ApprovalsDecide)
        })
        .ok_or_else(no_such_request)?;
    let answer = with_decisions(&state, &row).await?;
    let ceremony = if row.operation == Operation::VaultUnlock.as_str()
        && caller.holds(&state, Action::VaultUnlock)
    {
        state
            .store
            .open_ceremony_of_approval(&row.id)
            .await
            .map_err(ApiError::internal)?
    } else {
        None
    };
    Ok(Json(ApprovalShown {
        approval: answer.approval,
        decisions: answer.decisions,
        ceremony,
    }))
}

/// `POST /v1/approvals/{id}/decisions` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    decision: String,
    reason: String,
}

/// `POST /v1/approvals/{id}/decisions` (approvals:decide, a reviewer role of the request's
/// policy, never the requester): approve or deny, with a reason. Final once a threshold is
/// reached.
#[utoipa::path(
    post,
    path = "/v1/approvals/{id}/decisions",
    operation_id = "approvals_decide",
    tag = "approvals",
    params(("id" = String, Path, description = "The approval request's id.")),
    request_body = DecisionBody,
    responses(
        (status = 200, body = ApprovalDecisions),
        (status = 404, body = ErrorBody, description = "`not_found`: no such request."),
        (status = 409, body = ErrorBody, description = "`approval_decided`: already decided or already voted."),
        (status = 410, body = ErrorBody, description = "`approval_expired`."),
        SessionErrors,
    ),
    security(("session" = []), ("session_cookie" = [], "csrf" = [])),
)]
pub async fn decide(
    State(state): State<ManagementState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<DecisionBody>,
) -> Result<Json<ApprovalDecisions>, ApiError> {
    caller.require(&state, Action::ApprovalsDecide)?;
    let approve = match body.decision.as_str() {
        "approve" => true,
        "deny" => false,
        _ => {
            return Err(ApiError::with_message(
                ErrorCode::InvalidRequest,
                "decision is approve or deny",
            ));
        }
    };
    check_reason(&body.reason)?;
    let row = state
        .store
        .approval(&id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(no_such_request)?;
    let event = |outcome, why: &str| {
        AuditEvent::new(
            caller.actor(),
            "approval.decide",
            format!("approval:{id}"),
            outcome,
        )
        .with_details(json!({
            "operation": row.operation, "decision": body.decision, "reason": body.reason, "refused": why,
        }))
    };
    // Nobody decides a request made by them or for their own benefit (emergency access).
    let beneficiary = row.operation == Operation::EmergencyAccess.as_str()
        && serde_json::from_str::<Value>(&row.params)
            .is_ok_and(|p| p["user_id"] == caller.user.id.as_str());
    if row.requester_user == caller.user.id || beneficiary {
        state
            .audit_quiet(event(Outcome::Denied, "self_approval"))
            .await;
        return Err(ApiError::new(ErrorCode::SelfApproval));
    }
    // The caller's own role: an emergency grant never makes a reviewer.
    if !reviewer_roles(&row).contains(&caller.role) {
        state
            .audit_quiet(event(Outcome::Denied, "not_a_reviewer"))
            .await;
        return Err(ApiError::with_message(
            ErrorCode::Forbidden,
            format!(
                "the {} role does not review {} requests",
                caller.role.as_str(),
                row.operation
            ),
        ));
    }
    state.audit(event(Outcome::Success, "")).await?;
    let (code, why) = match state
        .store
        .vote(&id, &caller.actor(), approve, body.reason.trim())
        .await
        .map_err(ApiError::internal)?
    {
        Vote::Counted(now) => {
            if now.status == "pending" {
                announce(&state, "approval.vote", &now);
            } else {
                announce(&state, "approval.decided", &now);
                notify_requester(&state, &now).await;
            }
            return Ok(Json(with_decisions(&state, &now).await?));
        }
        Vote::Missing => return Err(no_such_request()),
        Vote::Decided(_) => (ErrorCode::ApprovalDecided, "decided"),
        Vote::AlreadyVoted => (ErrorCode::ApprovalDecided, "already_voted"),
        Vote::Expired => (ErrorCode::ApprovalExpired, "expired"),
    };
    state.audit_quiet(event(Outcome::Failure, why)).await;
    Err(ApiError::new(code))
}

/// Why an approval cannot be executed now.
pub(crate) fn not_executable(row: &ApprovalRow) -> ApiError {
    match row.effective_status(now_ms()) {
        "expired" => ApiError::new(ErrorCode::ApprovalExpired),
        "executed" => ApiError::with_message(
            ErrorCode::ApprovalDecided,
            "this approval was already used (an approved operation runs once)",
        ),
        status => {
            ApiError::new(ErrorCode::ApprovalPending).with_details(json!({ "status": status }))
        }
    }
}

/// A request for this node: made by the node itself, or by its owner for it.
async fn own_request(
    state: &ManagementState,
    caller: &NodeCaller,
    id: &str,
) -> Result<ApprovalRow, ApiError> {
    state
        .store
        .approval(id)
        .await
        .map_err(ApiError::internal)?
        .filter(|r| {
            r.requester == caller.actor()
                || (r.requester == format!("user:{}", caller.node.user_id)
                    && serde_json::from_str::<Value>(&r.params)
                        .is_ok_and(|p| p["node_id"] == caller.node.id.as_str()))
        })
        .ok_or_else(no_such_request)
}

/// `GET /v1/token-requests/{id}` (node): its own request.
#[utoipa::path(
    get,
    path = "/v1/token-requests/{id}",
    operation_id = "approvals_node_show",
    tag = "approvals",
    params(("id" = String, Path, description = "The approval request's id.")),
    responses(
        (status = 200, body = ApprovalDecisions),
        (status = 404, body = ErrorBody, description = "`not_found`."),
        NodeErrors,
    ),
    security(("node_token" = [], "node_proof" = [])),
)]
pub async fn node_show(
    State(state): State<ManagementState>,
    Path(id): Path<String>,
    caller: NodeCaller,
) -> Result<Json<ApprovalDecisions>, ApiError> {
    let row = own_request(&state, &caller, &id).await?;
    Ok(Json(with_decisions(&state, &row).await?))
}

/// `POST /v1/token-requests/{id}/redeem` (node): execute the approved `token.mint` once and
/// return the token. A second redeem, however close, is refused.
#[utoipa::path(
    post,
    path = "/v1/token-requests/{id}/redeem",
    operation_id = "approvals_node_redeem",
    tag = "approvals",
    params(("id" = String, Path, description = "The approval request's id.")),
    responses(
        (status = 200, body = MintedToken, description = "The token, with the request (now `executed`)."),
        (status = 404, body = ErrorBody, description = "`not_found`: no such request of this node."),
        (status = 409, body = ErrorBody, description = "`approval_pending` or `approval_decided`."),
        (status = 410, body = ErrorBody, description = "`approval_expired`."),
        NodeErrors,
    ),
    security(("node_token" = [], "node_proof" = [])),
)]
pub async fn node_redeem(
    State(state): State<ManagementState>,
    Path(id): Path<String>,
    caller: NodeCaller,
) -> Result<Json<MintedToken>, ApiError> {
    let row = own_request(&state, &caller, &id).await?;
    let (claimed, params) = claim(&state, caller.actor(), &row).await?;
    let failed = || {
        AuditEvent::new(
            caller.actor(),
            "approval.execute",
            format!("approval:{id}"),
            Outcome::Failure,
        )
        .with_details(json!({ "operation": row.operation, "params": params }))
    };
    let ttl = params["ttl_secs"].as_u64();
    match state
        .vault
        .mint(&caller.node.id, &params["rights"], ttl, Some(&id))
        .await
    {
        Ok(token) => {
            announce(&state, "approval.executed", &claimed);
            Ok(Json(MintedToken::new(token, Some(view(&claimed)))))
        }
        // The vault has seen this approval mint already (an earlier attempt whose answer was
        // lost): it stays used; the vault never mints twice for one approval.
        Err(e) if e.code() == Some("conflict") => {
            state.audit_quiet(failed()).await;
            Err(ApiError::with_message(
                ErrorCode::ApprovalDecided,
                "this approval was already used (an earlier attempt minted; ask again if its token was lost)",
            ))
        }
        Err(e) => {
            // Give the claim back: if the vault did mint (an answer lost in transit), a retry
            // is refused there as `conflict`, so the operation still runs at most once.
            if let Err(undo) = state.store.release_execution(&id).await {
                tracing::error!(error = %keymesh_core::error::error_chain(&undo), approval = %id, "releasing a failed execution failed");
            }
            state.audit_quiet(failed()).await;
            Err(e.into())
        }
    }
}

/// How often an open event stream re-checks its session and role.
const STREAM_RECHECK: Duration = Duration::from_secs(10);

/// What a stream's subscriber may see now: `None` when its session ended (revoked, expired,
/// signed out, user disabled); `Some(true)` for reviewers (every request), `Some(false)` for
/// others (their own).
async fn stream_scope(state: &ManagementState, session_id: &str) -> Option<bool> {
    let idle = i64::try_from(state.config.session_idle.as_millis()).unwrap_or(i64::MAX);
    let (_, user, _) = state
        .store
        .live_session_by_id(session_id, idle)
        .await
        .ok()??;
    let role: Role = user.role.parse().ok()?;
    // approvals:decide is never conferred by an emergency grant.
    Some(state.config.rbac.allows(role, Action::ApprovalsDecide))
}

/// `GET /v1/approvals/events`: a live stream (server-sent events) of approval events:
/// reviewers see every request's, others their own. The session and role are checked again
/// before every event and every 10 s: the stream ends when the session does, and narrows when
/// the role loses `approvals:decide`. A subscriber that falls behind is told (`event: lagged`)
/// and should re-read `GET /v1/approvals`.
#[utoipa::path(
    get,
    path = "/v1/approvals/events",
    operation_id = "approvals_events",
    tag = "approvals",
    responses(
        (status = 200, body = String, content_type = "text/event-stream", description = "Server-sent events: `approval.created`, `approval.vote`, `approval.decided`, `approval.executed` (each `{type, approval}`), `lagged`."),
        SessionErrors,
    ),
    security(("session" = []), ("session_cookie" = [], "csrf" = [])),
)]
pub async fn events(
    State(state): State<ManagementState>,
    caller: Caller,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let me = caller.user.id.clone();
    let session = caller.session.id.clone();
    let rx = state.events.subscribe();
    let stream = stream::unfold((rx, state), move |(mut rx, state)| {
        let (me, session) = (me.clone(), session.clone());
        async move {
            let mut recheck = tokio::time::interval(STREAM_RECHECK);
            loop {
                let next = tokio::select! {
                    r = rx.recv() => r,
                    _ = recheck.tick() => {
                        stream_scope(&state, &session).await?;
                        continue;
                    }
                    () = state.ctx.shutdown.cancelled() => return None,
                };
                let all = stream_scope(&state, &session).await?;
                match next {
                    Ok(ev) if all || ev.requester_user == me => {
                        let kind = ev.body["type"].as_str().unwrap_or("approval").to_owned();
                        let event = Event::default().event(kind).data(ev.body.to_string());
                        return Some((Ok(event), (rx, state)));
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(n)) => {
                        let event = Event::default().event("lagged").data(n.to_string());
                        return Some((Ok(event), (rx, state)));
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

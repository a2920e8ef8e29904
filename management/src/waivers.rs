//! Disabling token approvals for a group (`group.approvals.disable`): itself behind an
//! approval, bounded in time (at most `MANAGEMENT_APPROVAL_WAIVER_MAX_SECS`), and covering only
//! tokens above a node's ceiling. While a waiver holds, such a token request is recorded as a
//! request approved by the waiver (so the vault still sees a named approval, once) and minted
//! at once. Vault unlock, audit export, user deletion and emergency access always need
//! reviewers. Re-enabling approvals needs no approval. See docs/management.md.

use axum::{
    Json,
    extract::{Path, State},
};
use keymesh_core::error::ErrorBody;
use keymesh_core::openapi::SessionErrors;
use keymesh_core::{
    ApiError, ErrorCode,
    audit::{AuditEvent, Outcome},
    ident::Ident,
    storage::StorageError,
    with_pool,
};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    approval_store::NewApproval,
    auth::Caller,
    directory::GroupRow,
    groups::existing_group,
    rbac::Action,
    state::ManagementState,
    store::{Store, new_id, now_ms},
};

/// Default waiver length when the request names none.
const DEFAULT_SECS: u64 = 86_400;

impl Store {
    /// Waive (until `until_ms`, by approval `by`) or restore (`None`) a group's token approvals.
    pub async fn set_waiver(
        &self,
        group: &str,
        waiver: Option<(i64, &str)>,
    ) -> Result<bool, StorageError> {
        const SQL: &str = "UPDATE node_groups SET approvals_waived_until_ms = $1, approvals_waived_by = $2 WHERE id = $3";
        let (until, by) = waiver.map_or((None, None), |(t, b)| (Some(t), Some(b)));
        Ok(
            with_pool!(self.db(), pool => sqlx::query(SQL).bind(until).bind(by).bind(group).execute(pool).await.map(|r| r.rows_affected()))?
                == 1,
        )
    }

    /// Record a request that a waiver approved: executed at once, with the waiver named as its
    /// one decision. Returns its id.
    pub async fn insert_waived(
        &self,
        a: &NewApproval<'_>,
        waiver: &str,
    ) -> Result<String, StorageError> {
        const INSERT: &str = "INSERT INTO approval_requests (id, operation, params, reason, requester, requester_user, status, \
             approvals_needed, denials_needed, reviewer_roles, created_at_ms, expires_at_ms, decided_at_ms, executed_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, 'executed', $7, $8, $9, $10, $11, $10, $10)";
        const DECISION: &str = "INSERT INTO approval_decisions (request_id, reviewer, decision, reason, decided_at_ms) \
             VALUES ($1, $2, 'approve', $3, $4)";
        let id = new_id();
        let now = now_ms();
        let reviewer = format!("waiver:{waiver}");
        let why = format!("token approvals for this group are disabled by approval {waiver}");
        with_pool!(self.db(), pool => {
            let mut tx = pool.begin_with(self.db().begin_write()).await?;
            sqlx::query(INSERT).bind(&id).bind(a.operation).bind(a.params).bind(a.reason)
                .bind(a.requester).bind(a.requester_user).bind(a.approvals_needed)
                .bind(a.denials_needed).bind(a.reviewer_roles).bind(now).bind(a.expires_at_ms)
                .execute(&mut *tx).await?;
            sqlx::query(DECISION).bind(&id).bind(&reviewer).bind(&why).bind(now)
                .execute(&mut *tx).await?;
            tx.commit().await
        })?;
        Ok(id)
    }
}

/// The approval whose waiver holds for `group` now, if any.
pub(crate) fn active(group: &GroupRow) -> Option<&str> {
    match (&group.approvals_waived_until_ms, &group.approvals_waived_by) {
        (Some(until), Some(by)) if *until > now_ms() => Some(by),
        _ => None,
    }
}

/// Check a `group.approvals.disable` request (groups:manage): an existing group, a duration
/// within `MANAGEMENT_APPROVAL_WAIVER_MAX_SECS`.
pub(crate) async fn params(
    state: &ManagementState,
    caller: &Caller,
    group: &Ident,
    duration_secs: Option<u64>,
) -> Result<Value, ApiError> {
    caller.require(state, Action::GroupsManage)?;
    existing_group(state, group).await?;
    let max = state.config.waiver_max.as_secs();
    let secs = duration_secs.unwrap_or(DEFAULT_SECS.min(max));
    if secs == 0 || secs > max {
        return Err(ApiError::with_message(
            ErrorCode::InvalidRequest,
            format!("duration_secs must be between 1 and {max}"),
        ));
    }
    Ok(json!({ "group": group, "duration_secs": secs, "covers": ["token.mint"] }))
}

/// A group's token-approval waiver.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Waiver {
    /// The group.
    pub group: String,
    /// Token approvals are waived until then (unix ms); `null`: they are required.
    pub approvals_waived_until_ms: Option<i64>,
}

/// Execute an approved `group.approvals.disable` request: the waiver starts now.
pub(crate) async fn execute(
    state: &ManagementState,
    caller: &Caller,
    approval: &str,
    params: &Value,
) -> Result<Waiver, ApiError> {
    let group = params["group"].as_str().unwrap_or_default();
    let until = now_ms().saturating_add(
        params["duration_secs"]
            .as_i64()
            .unwrap_or(0)
            .saturating_mul(1000),
    );
    if !state
        .store
        .set_waiver(group, Some((until, approval)))
        .await
        .map_err(ApiError::internal)?
    {
        return Err(ApiError::with_message(ErrorCode::NotFound, "no such group"));
    }
    state
        .audit_quiet(
            AuditEvent::new(
                caller.actor(),
                "group.approvals.disable",
                format!("group:{group}"),
                Outcome::Success,
            )
            .with_details(
                json!({ "approval": approval, "until_ms": until, "covers": ["token.mint"] }),
            ),
        )
        .await;
    Ok(Waiver {
        group: group.to_owned(),
        approvals_waived_until_ms: Some(until),
    })
}

/// `POST /v1/groups/{id}/approvals/enable` (groups:manage): end a waiver now. Making things
/// stricter needs no approval.
#[utoipa::path(
    post,
    path = "/v1/groups/{id}/approvals/enable",
    operation_id = "waivers_enable",
    tag = "approvals",
    params(("id" = inline(Ident), Path, description = "The group's id.")),
    responses(
        (status = 200, body = Waiver, description = "`approvals_waived_until_ms: null`."),
        (status = 404, body = ErrorBody, description = "`not_found`: no such group."),
        SessionErrors,
    ),
    security(("session" = []), ("session_cookie" = [], "csrf" = [])),
)]
pub async fn enable(
    State(state): State<ManagementState>,
    caller: Caller,
    Path(group): Path<Ident>,
) -> Result<Json<Waiver>, ApiError> {
    caller.require(&state, Action::GroupsManage)?;
    existing_group(&state, &group).await?;
    state
        .audit(AuditEvent::new(
            caller.actor(),
            "group.approvals.enable",
            format!("group:{group}"),
            Outcome::Success,
        ))
        .await?;
    state
        .store
        .set_waiver(&group, None)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(Waiver {
        group: group.to_string(),
        approvals_waived_until_ms: None,
    }))
}

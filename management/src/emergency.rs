//! Emergency access: a user holds a second role for a bounded time (at most
//! `MANAGEMENT_EMERGENCY_MAX_SECS`), created only through an approved `emergency.access`
//! request that neither the requester nor the beneficiary may decide. The grant starts when
//! the requester executes the approval, ends by itself, and anyone with tokens:revoke or
//! emergency:access (or the beneficiary) can end it early. See docs/management.md.

use axum::{
    Json,
    extract::{Path, State},
};
use keymesh_core::error::ErrorBody;
use keymesh_core::openapi::SessionErrors;
use keymesh_core::{
    ApiError, ErrorCode,
    audit::{AuditEvent, Outcome},
    storage::{Db, StorageError},
    with_pool,
};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    auth::Caller,
    rbac::{Action, Role},
    state::ManagementState,
    store::{Store, new_id, now_ms},
};

/// Default grant length when the request names none.
const DEFAULT_SECS: u64 = 3600;

/// A grant as stored.
#[derive(Clone, Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct GrantRow {
    /// Id.
    pub id: String,
    /// Who holds the extra role.
    pub user_id: String,
    /// The role granted.
    pub role: String,
    /// The approval that allowed it.
    pub approval_id: String,
    /// `user:ID` of the requester who executed it.
    pub granted_by: String,
    /// Started.
    pub starts_at_ms: i64,
    /// Ends by itself.
    pub expires_at_ms: i64,
    /// Ended early.
    pub ended_at_ms: Option<i64>,
    /// `user:ID` of who ended it early.
    pub ended_by: Option<String>,
}

macro_rules! grant_columns {
    () => {
        "id, user_id, role, approval_id, granted_by, starts_at_ms, expires_at_ms, ended_at_ms, ended_by"
    };
}

impl Store {
    /// Start a grant unless the user already holds an active one: the grant, or `None`.
    pub async fn insert_grant(
        &self,
        user: &str,
        role: &str,
        approval: &str,
        granted_by: &str,
        duration_ms: i64,
    ) -> Result<Option<GrantRow>, StorageError> {
        const SQL: &str = concat!(
            "INSERT INTO emergency_grants (id, user_id, role, approval_id, granted_by, starts_at_ms, expires_at_ms) \
             SELECT $1, $2, $3, $4, $5, $6, $7 WHERE NOT EXISTS (SELECT 1 FROM emergency_grants \
             WHERE user_id = $2 AND ended_at_ms IS NULL AND expires_at_ms > $6) RETURNING ",
            grant_columns!()
        );
        // Serialised per user, so two simultaneous executions cannot both see "no active
        // grant" (PostgreSQL locks the user's row; SQLite takes its write lock first).
        const LOCK_PG: &str = "SELECT id FROM users WHERE id = $1 FOR UPDATE";
        const LOCK_SQLITE: &str = "UPDATE users SET id = id WHERE id = $1";
        let now = now_ms();
        let lock = if matches!(self.db(), Db::Postgres(_)) {
            LOCK_PG
        } else {
            LOCK_SQLITE
        };
        Ok(with_pool!(self.db(), pool => {
            let mut tx = pool.begin_with(self.db().begin_write()).await?;
            sqlx::query(lock).bind(user).execute(&mut *tx).await?;
            let grant: Option<GrantRow> = sqlx::query_as(SQL).bind(new_id()).bind(user).bind(role)
                .bind(approval).bind(granted_by).bind(now).bind(now.saturating_add(duration_ms))
                .fetch_optional(&mut *tx).await?;
            tx.commit().await?;
            grant
        }))
    }

    /// Grants, newest first: all, or one user's.
    pub async fn grants(
        &self,
        user: Option<&str>,
        limit: i64,
    ) -> Result<Vec<GrantRow>, StorageError> {
        const SQL: &str = concat!(
            "SELECT ",
            grant_columns!(),
            " FROM emergency_grants WHERE ($1 = '' OR user_id = $1) ORDER BY starts_at_ms DESC LIMIT $2"
        );
        Ok(
            with_pool!(self.db(), pool => sqlx::query_as(SQL).bind(user.unwrap_or_default()).bind(limit).fetch_all(pool).await)?,
        )
    }

    /// End an active grant early: the ended grant, or `None` when it was not active.
    pub async fn end_grant(&self, id: &str, by: &str) -> Result<Option<GrantRow>, StorageError> {
        const SQL: &str = concat!(
            "UPDATE emergency_grants SET ended_at_ms = $1, ended_by = $2 \
             WHERE id = $3 AND ended_at_ms IS NULL AND expires_at_ms > $1 RETURNING ",
            grant_columns!()
        );
        Ok(
            with_pool!(self.db(), pool => sqlx::query_as(SQL).bind(now_ms()).bind(by).bind(id).fetch_optional(pool).await)?,
        )
    }
}

/// An enabled, not deleted user.
async fn beneficiary(state: &ManagementState, id: &str) -> Result<(), ApiError> {
    if crate::users::existing(state, id)
        .await?
        .disabled_at_ms
        .is_some()
    {
        return Err(ApiError::with_message(
            ErrorCode::NotFound,
            "no such enabled user",
        ));
    }
    Ok(())
}

/// Check an `emergency.access` request (emergency:access): an enabled user, a known role, a
/// duration within `MANAGEMENT_EMERGENCY_MAX_SECS`.
pub(crate) async fn params(
    state: &ManagementState,
    caller: &Caller,
    user: &str,
    role: &str,
    duration_secs: Option<u64>,
) -> Result<Value, ApiError> {
    caller.require(state, Action::EmergencyAccess)?;
    let role: Role = role.parse().map_err(|e: crate::rbac::RbacError| {
        ApiError::with_message(ErrorCode::InvalidRequest, e.to_string())
    })?;
    let max = state.config.emergency_max.as_secs();
    let secs = duration_secs.unwrap_or(DEFAULT_SECS.min(max));
    if secs == 0 || secs > max {
        return Err(ApiError::with_message(
            ErrorCode::InvalidRequest,
            format!("duration_secs must be between 1 and {max}"),
        ));
    }
    beneficiary(state, user).await?;
    Ok(json!({ "user_id": user, "role": role.as_str(), "duration_secs": secs }))
}

/// Before executing: the beneficiary is still an enabled user.
pub(crate) async fn check_still(state: &ManagementState, params: &Value) -> Result<(), ApiError> {
    beneficiary(state, params["user_id"].as_str().unwrap_or_default()).await
}

/// One grant.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GrantAnswer {
    /// The grant.
    pub grant: GrantRow,
}

/// A grant as listed: whether it is in force now.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GrantView {
    /// The grant.
    #[serde(flatten)]
    pub grant: GrantRow,
    /// Started, not ended and not expired.
    pub active: bool,
}

/// `GET /v1/emergency-grants`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GrantList {
    /// Newest first.
    pub grants: Vec<GrantView>,
}

/// Execute an approved `emergency.access` request: the grant starts now.
pub(crate) async fn execute(
    state: &ManagementState,
    caller: &Caller,
    approval: &str,
    params: &Value,
) -> Result<GrantAnswer, ApiError> {
    let user = params["user_id"].as_str().unwrap_or_default();
    let role = params["role"].as_str().unwrap_or_default();
    let ms = params["duration_secs"]
        .as_i64()
        .unwrap_or(0)
        .saturating_mul(1000);
    let grant = state
        .store
        .insert_grant(user, role, approval, &caller.actor(), ms)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::with_message(
                ErrorCode::Conflict,
                "the user already holds an active emergency grant; end it first",
            )
        })?;
    state
        .audit_quiet(
            AuditEvent::new(
                caller.actor(),
                "emergency.grant.start",
                format!("user:{user}"),
                Outcome::Success,
            )
            .with_details(json!({
                "grant": grant.id, "role": role, "approval": approval, "expires_at_ms": grant.expires_at_ms,
            })),
        )
        .await;
    Ok(GrantAnswer { grant })
}

/// `GET /v1/emergency-grants`: every grant for holders of users:read or emergency:access,
/// else the caller's own.
#[utoipa::path(
    get,
    path = "/v1/emergency-grants",
    operation_id = "emergency_list",
    tag = "emergency access",
    responses(
        (status = 200, body = GrantList),
        SessionErrors,
    ),
    security(("session" = []), ("session_cookie" = [], "csrf" = [])),
)]
pub async fn list(
    State(state): State<ManagementState>,
    caller: Caller,
) -> Result<Json<GrantList>, ApiError> {
    let all =
        caller.holds(&state, Action::UsersRead) || caller.holds(&state, Action::EmergencyAccess);
    let grants = state
        .store
        .grants((!all).then_some(caller.user.id.as_str()), 500)
        .await
        .map_err(ApiError::internal)?;
    let now = now_ms();
    let grants = grants
        .into_iter()
        .map(|grant| GrantView {
            active: grant.ended_at_ms.is_none() && grant.expires_at_ms > now,
            grant,
        })
        .collect();
    Ok(Json(GrantList { grants }))
}

/// `POST /v1/emergency-grants/{id}/end` (tokens:revoke, emergency:access, or the
/// beneficiary): end an active grant now.
#[utoipa::path(
    post,
    path = "/v1/emergency-grants/{id}/end",
    operation_id = "emergency_end",
    tag = "emergency access",
    params(("id" = String, Path, description = "The grant's id.")),
    responses(
        (status = 200, body = GrantAnswer),
        (status = 404, body = ErrorBody, description = "`not_found`: no such active grant."),
        SessionErrors,
    ),
    security(("session" = []), ("session_cookie" = [], "csrf" = [])),
)]
pub async fn end(
    State(state): State<ManagementState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<GrantAnswer>, ApiError> {
    let own = caller.emergency.as_ref().is_some_and(|(g, _)| *g == id);
    if !own {
        if caller.holds(&state, Action::TokensRevoke) {
            caller.require(&state, Action::TokensRevoke)?;
        } else {
            caller.require(&state, Action::EmergencyAccess)?;
        }
    }
    state
        .audit(AuditEvent::new(
            caller.actor(),
            "emergency.grant.end",
            format!("grant:{id}"),
            Outcome::Success,
        ))
        .await?;
    let Some(grant) = state
        .store
        .end_grant(&id, &caller.actor())
        .await
        .map_err(ApiError::internal)?
    else {
        state
            .audit_quiet(AuditEvent::new(
                caller.actor(),
                "emergency.grant.end",
                format!("grant:{id}"),
                Outcome::Failure,
            ))
            .await;
        return Err(ApiError::with_message(
            ErrorCode::NotFound,
            "no such active grant",
        ));
    };
    Ok(Json(GrantAnswer { grant }))
}

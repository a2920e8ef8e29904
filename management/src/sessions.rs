//! A signed-in user's own sessions: who am I, list, revoke, sign out.

use axum::{
    Json,
    extract::{Path, State},
    response::{IntoResponse, Response},
};
use http::{StatusCode, header};
use keymesh_core::error::ErrorBody;
use keymesh_core::openapi::SessionErrors;
use keymesh_core::{
    ApiError, ErrorCode,
    audit::{AuditEvent, Outcome},
};
use serde::Serialize;

use crate::{
    auth::{Caller, clear_session_cookie},
    login::UserSummary,
    state::ManagementState,
    store::SessionRow,
};

/// A session as its owner sees it (never its token).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionView {
    /// Id (to revoke it).
    pub id: String,
    /// `cookie` or `bearer`.
    pub kind: String,
    /// Signed in at (the re-authentication clock).
    pub created_at_ms: i64,
    /// Last use (to within a minute).
    pub last_seen_ms: i64,
    /// Absolute expiry.
    pub expires_at_ms: i64,
    /// Client address at sign-in.
    pub ip: String,
    /// Client software at sign-in (truncated).
    pub user_agent: String,
    /// The session of this request.
    pub current: bool,
}

fn session_view(s: &SessionRow, current: &str) -> SessionView {
    SessionView {
        id: s.id.clone(),
        kind: s.kind.clone(),
        created_at_ms: s.created_at_ms,
        last_seen_ms: s.last_seen_ms,
        expires_at_ms: s.expires_at_ms,
        ip: s.ip.clone(),
        user_agent: s.user_agent.clone(),
        current: s.id == current,
    }
}

/// An emergency grant the caller holds now.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EmergencyRole {
    /// The grant's id.
    pub grant: String,
    /// The role it grants.
    pub role: String,
}

/// `GET /v1/session`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CurrentSession {
    /// The caller.
    pub user: UserSummary,
    /// Every action the caller may take now (their role's, plus an emergency grant's).
    pub actions: Vec<String>,
    /// The emergency grant in force, if any.
    pub emergency: Option<EmergencyRole>,
    /// This session.
    pub session: SessionView,
    /// Admin actions need a sign-in younger than this (unix ms).
    pub reauth_until_ms: i64,
    /// Cookie sessions only: the `X-CSRF-Token` every change must carry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csrf_token: Option<String>,
}

impl std::fmt::Debug for CurrentSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CurrentSession")
            .field("user", &self.user)
            .field("session", &self.session.id)
            .finish_non_exhaustive()
    }
}

/// `GET /v1/sessions`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionList {
    /// The caller's live sessions, newest first.
    pub sessions: Vec<SessionView>,
}

/// `GET /v1/session`: the caller, their role's actions, and (cookie sessions) the CSRF token.
#[utoipa::path(
    get,
    path = "/v1/session",
    operation_id = "sessions_current",
    tag = "sessions",
    responses(
        (status = 200, body = CurrentSession),
        SessionErrors,
    ),
    security(("session" = []), ("session_cookie" = [], "csrf" = [])),
)]
pub async fn current(State(state): State<ManagementState>, caller: Caller) -> Json<CurrentSession> {
    let actions = crate::rbac::Action::ALL
        .into_iter()
        .filter(|a| caller.holds(&state, *a))
        .map(|a| a.as_str().to_owned())
        .collect();
    Json(CurrentSession {
        user: UserSummary::from(&caller.user),
        actions,
        emergency: caller.emergency.as_ref().map(|(id, role)| EmergencyRole {
            grant: id.clone(),
            role: role.as_str().to_owned(),
        }),
        session: session_view(&caller.session, &caller.session.id),
        reauth_until_ms: caller.reauth_until_ms(&state),
        csrf_token: caller
            .via_cookie
            .then(|| state.keyed.csrf_token(&caller.session.id)),
    })
}

/// `GET /v1/sessions`: the caller's live sessions, newest first.
#[utoipa::path(
    get,
    path = "/v1/sessions",
    operation_id = "sessions_list",
    tag = "sessions",
    responses(
        (status = 200, body = SessionList),
        SessionErrors,
    ),
    security(("session" = []), ("session_cookie" = [], "csrf" = [])),
)]
pub async fn list(
    State(state): State<ManagementState>,
    caller: Caller,
) -> Result<Json<SessionList>, ApiError> {
    let idle = i64::try_from(state.config.session_idle.as_millis()).unwrap_or(i64::MAX);
    let sessions = state
        .store
        .sessions_of(&caller.user.id, idle)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(SessionList {
        sessions: sessions
            .iter()
            .map(|s| session_view(s, &caller.session.id))
            .collect(),
    }))
}

async fn end(state: &ManagementState, caller: &Caller, id: &str) -> Result<(), ApiError> {
    if id.len() > 64 {
        return Err(ApiError::new(ErrorCode::NotFound));
    }
    if !state
        .store
        .revoke_session(&caller.user.id, id)
        .await
        .map_err(ApiError::internal)?
    {
        return Err(ApiError::with_message(
            ErrorCode::NotFound,
            "no live session of yours has this id",
        ));
    }
    state
        .audit_quiet(AuditEvent::new(
            caller.actor(),
            "session.revoke",
            format!("session:{id}"),
            Outcome::Success,
        ))
        .await;
    Ok(())
}

/// `DELETE /v1/sessions/{id}`: end one of the caller's sessions.
#[utoipa::path(
    delete,
    path = "/v1/sessions/{id}",
    operation_id = "sessions_revoke",
    tag = "sessions",
    params(("id" = String, Path, description = "The session's id.")),
    responses(
        (status = 204, description = "Ended."),
        (status = 404, body = ErrorBody, description = "`not_found`: no such session of the caller."),
        SessionErrors,
    ),
    security(("session" = []), ("session_cookie" = [], "csrf" = [])),
)]
pub async fn revoke(
    State(state): State<ManagementState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    end(&state, &caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/logout`: end the current session (and clear the cookie).
#[utoipa::path(
    post,
    path = "/v1/logout",
    operation_id = "sessions_logout",
    tag = "sessions",
    responses(
        (status = 204, description = "Ended; the cookie is cleared."),
        SessionErrors,
    ),
    security(("session" = []), ("session_cookie" = [], "csrf" = [])),
)]
pub async fn logout(
    State(state): State<ManagementState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    end(&state, &caller, &caller.session.id).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    if caller.via_cookie {
        response
            .headers_mut()
            .insert(header::SET_COOKIE, clear_session_cookie());
    }
    Ok(response)
}

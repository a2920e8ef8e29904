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
use serde_json::{Value, json};

use crate::{
    auth::{Caller, clear_session_cookie},
    login::UserSummary,
    state::ManagementState,
    store::SessionRow,
};

fn session_json(s: &SessionRow, current: &str) -> Value {
    json!({
        "id": s.id,
        "kind": s.kind,
        "created_at_ms": s.created_at_ms,
        "last_seen_ms": s.last_seen_ms,
        "expires_at_ms": s.expires_at_ms,
        "ip": s.ip,
        "user_agent": s.user_agent,
        "current": s.id == current,
    })
}

/// `GET /v1/session`: the caller, their role's actions, and (cookie sessions) the CSRF token.
#[utoipa::path(
    get,
    path = "/v1/session",
    operation_id = "sessions_current",
    tag = "sessions",
    responses(
        (status = 200, body = Object, description = "`{user, actions, emergency, session, reauth_until_ms, csrf_token?}`."),
        SessionErrors,
    ),
    security(("session" = []), ("session_cookie" = [], "csrf" = [])),
)]
pub async fn current(State(state): State<ManagementState>, caller: Caller) -> Json<Value> {
    let actions: Vec<&str> = crate::rbac::Action::ALL
        .into_iter()
        .filter(|a| caller.holds(&state, *a))
        .map(|a| a.as_str())
        .collect();
    let mut body = json!({
        "user": UserSummary::from(&caller.user),
        "actions": actions,
        "emergency": caller.emergency.as_ref().map(|(id, role)| json!({ "grant": id, "role": role.as_str() })),
        "session": session_json(&caller.session, &caller.session.id),
        "reauth_until_ms": caller.reauth_until_ms(&state),
    });
    if caller.via_cookie {
        body["csrf_token"] = Value::from(state.keyed.csrf_token(&caller.session.id));
    }
    Json(body)
}

/// `GET /v1/sessions`: the caller's live sessions, newest first.
#[utoipa::path(
    get,
    path = "/v1/sessions",
    operation_id = "sessions_list",
    tag = "sessions",
    responses(
        (status = 200, body = Object, description = "`{sessions: [...]}`, newest first."),
        SessionErrors,
    ),
    security(("session" = []), ("session_cookie" = [], "csrf" = [])),
)]
pub async fn list(
    State(state): State<ManagementState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let idle = i64::try_from(state.config.session_idle.as_millis()).unwrap_or(i64::MAX);
    let sessions = state
        .store
        .sessions_of(&caller.user.id, idle)
        .await
        .map_err(ApiError::internal)?;
    let items: Vec<Value> = sessions
        .iter()
        .map(|s| session_json(s, &caller.session.id))
        .collect();
    Ok(Json(json!({ "sessions": items })))
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

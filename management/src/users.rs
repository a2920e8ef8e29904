//! Users: invite (admins), list, disable and enable.

use axum::{
    Json,
    extract::{Path, Query, State},
};
use http::StatusCode;
use keymesh_core::error::ErrorBody;
use keymesh_core::openapi::SessionErrors;
use keymesh_core::{
    ApiError, ErrorCode,
    audit::{AuditEvent, Outcome},
    http::{client_ip::ClientIp, extract::Json as JsonBody},
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{
    auth::Caller,
    login::{invite_mail, issue, normalize_email},
    rbac::{Action, Role},
    state::{ManagementState, page_limit},
    store::{Client, Purpose, UserRow},
};

/// `POST /v1/users`: the new user.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Invited {
    /// The user, enabled; the invitation mail is on its way.
    pub user: UserRow,
}

/// `GET /v1/users`: a page of users.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserList {
    /// By address; ask for the next page with `after` = the last address.
    pub users: Vec<UserRow>,
}

/// `POST /v1/users/{id}/disable` and `/enable`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserEnabled {
    /// The user.
    pub user_id: String,
    /// Whether they are disabled now.
    pub disabled: bool,
    /// Disabling only: how many of their sessions ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sessions_ended: Option<u64>,
}

/// `POST /v1/users` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteBody {
    email: String,
    role: String,
}

/// `POST /v1/users`: create a user and mail them an invitation.
#[utoipa::path(
    post,
    path = "/v1/users",
    operation_id = "users_invite",
    tag = "users",
    request_body = InviteBody,
    responses(
        (status = 201, body = Invited, description = "The new user; an invitation mail is sent."),
        (status = 409, body = ErrorBody, description = "`conflict`: the address has an account."),
        SessionErrors,
    ),
    security(("session" = []), ("session_cookie" = [], "csrf" = [])),
)]
pub async fn invite(
    State(state): State<ManagementState>,
    ClientIp(ip): ClientIp,
    caller: Caller,
    JsonBody(body): JsonBody<InviteBody>,
) -> Result<(StatusCode, Json<Invited>), ApiError> {
    caller.require(&state, Action::UsersManage)?;
    let email = normalize_email(&body.email)?;
    let role: Role = body.role.parse().map_err(|_| {
        ApiError::with_message(
            ErrorCode::InvalidRequest,
            "role must be admin, responder, auditor or member",
        )
    })?;
    state
        .audit(
            AuditEvent::new(
                caller.actor(),
                "user.create",
                state.keyed.email_ref(&email),
                Outcome::Success,
            )
            .with_details(json!({ "role": role.as_str() })),
        )
        .await?;
    let Some(user) = state
        .store
        .insert_user(&email, role.as_str())
        .await
        .map_err(ApiError::internal)?
    else {
        state
            .audit_quiet(
                AuditEvent::new(
                    caller.actor(),
                    "user.create",
                    state.keyed.email_ref(&email),
                    Outcome::Failure,
                )
                .with_details(json!({ "reason": "conflict" })),
            )
            .await;
        return Err(ApiError::with_message(
            ErrorCode::Conflict,
            "a user with this address exists (they can ask for a sign-in link)",
        ));
    };
    let issued = issue(&state, Some(&user), Purpose::Invite, Client::Browser, ip).await?;
    state.mailer.send_later(invite_mail(&state, &user, &issued));
    Ok((StatusCode::CREATED, Json(Invited { user })))
}

/// `GET /v1/users` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page after this address.
    #[serde(default)]
    after: String,
    /// Page size (1..=500, default 100).
    limit: Option<i64>,
}

/// `GET /v1/users`: users by address.
#[utoipa::path(
    get,
    path = "/v1/users",
    operation_id = "users_list",
    tag = "users",
    params(ListQuery),
    responses(
        (status = 200, body = UserList),
        SessionErrors,
    ),
    security(("session" = []), ("session_cookie" = [], "csrf" = [])),
)]
pub async fn list(
    State(state): State<ManagementState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<UserList>, ApiError> {
    caller.require(&state, Action::UsersRead)?;
    let limit = page_limit(q.limit, 500)?;
    let users = state
        .store
        .users(&q.after, limit)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(UserList { users }))
}

/// `POST /v1/users/{id}/disable` (users:manage, a recent sign-in): the user can no longer sign
/// in, every session of theirs ends now, and an emergency grant of theirs ends. Their nodes
/// keep their tokens: disable or revoke those too (`POST /v1/nodes/{id}/disable`,
/// `POST /v1/users/{id}/revoke-tokens`). The last enabled admin cannot be disabled.
#[utoipa::path(
    post,
    path = "/v1/users/{id}/disable",
    operation_id = "users_disable",
    tag = "users",
    params(("id" = String, Path, description = "The user's id.")),
    request_body = crate::responders::ReasonBody,
    responses(
        (status = 200, body = UserEnabled, description = "`disabled: true`, with `sessions_ended`."),
        (status = 404, body = ErrorBody, description = "`not_found`: no such enabled user."),
        (status = 409, body = ErrorBody, description = "`conflict`: the last enabled admin."),
        SessionErrors,
    ),
    security(("session" = []), ("session_cookie" = [], "csrf" = [])),
)]
pub async fn disable(
    State(state): State<ManagementState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<crate::responders::ReasonBody>,
) -> Result<Json<UserEnabled>, ApiError> {
    set_enabled(&state, &caller, &id, &body, false).await
}

/// `POST /v1/users/{id}/enable` (users:manage, a recent sign-in): a disabled (not deleted)
/// user may sign in again.
#[utoipa::path(
    post,
    path = "/v1/users/{id}/enable",
    operation_id = "users_enable",
    tag = "users",
    params(("id" = String, Path, description = "The user's id.")),
    request_body = crate::responders::ReasonBody,
    responses(
        (status = 200, body = UserEnabled, description = "`disabled: false`."),
        (status = 404, body = ErrorBody, description = "`not_found`: no such disabled user."),
        SessionErrors,
    ),
    security(("session" = []), ("session_cookie" = [], "csrf" = [])),
)]
pub async fn enable(
    State(state): State<ManagementState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<crate::responders::ReasonBody>,
) -> Result<Json<UserEnabled>, ApiError> {
    set_enabled(&state, &caller, &id, &body, true).await
}

async fn set_enabled(
    state: &ManagementState,
    caller: &Caller,
    id: &str,
    body: &crate::responders::ReasonBody,
    enable: bool,
) -> Result<Json<UserEnabled>, ApiError> {
    caller.require(state, Action::UsersManage)?;
    let reason = body.reason()?;
    let user = existing(state, id).await?;
    if !enable {
        not_last_admin(state, &user).await?;
    }
    let action = if enable {
        "user.enable"
    } else {
        "user.disable"
    };
    let event = |outcome| {
        AuditEvent::new(caller.actor(), action, format!("user:{id}"), outcome)
            .with_details(json!({ "reason": reason }))
    };
    state.audit(event(Outcome::Success)).await?;
    let Some(sessions_ended) = state
        .store
        .set_user_disabled(id, !enable)
        .await
        .map_err(ApiError::internal)?
    else {
        state.audit_quiet(event(Outcome::Failure)).await;
        let state_now = if enable { "disabled" } else { "enabled" };
        return Err(ApiError::with_message(
            ErrorCode::NotFound,
            format!("no such {state_now} user"),
        ));
    };
    Ok(Json(UserEnabled {
        user_id: id.to_owned(),
        disabled: !enable,
        sessions_ended: (!enable).then_some(sessions_ended),
    }))
}

/// A user who exists and is not deleted (disabled or not); `not_found` otherwise.
pub(crate) async fn existing(state: &ManagementState, id: &str) -> Result<UserRow, ApiError> {
    state
        .store
        .user(id)
        .await
        .map_err(ApiError::internal)?
        .filter(|u| !u.is_deleted())
        .ok_or_else(|| ApiError::with_message(ErrorCode::NotFound, "no such user"))
}

/// Refuse (`409 conflict`) taking away the last enabled admin: nobody could manage users.
pub(crate) async fn not_last_admin(
    state: &ManagementState,
    user: &UserRow,
) -> Result<(), ApiError> {
    let last = user.role == Role::Admin.as_str()
        && user.disabled_at_ms.is_none()
        && state
            .store
            .other_enabled_admins(&user.id)
            .await
            .map_err(ApiError::internal)?
            == 0;
    if last {
        return Err(ApiError::with_message(
            ErrorCode::Conflict,
            "this is the last enabled admin; make another admin first",
        ));
    }
    Ok(())
}

//! Users: invite (admins) and list.

use axum::{
    Json,
    extract::{Query, State},
};
use http::StatusCode;
use keymesh_core::error::ErrorBody;
use keymesh_core::openapi::SessionErrors;
use keymesh_core::{
    ApiError, ErrorCode,
    audit::{AuditEvent, Outcome},
    http::{client_ip::ClientIp, extract::Json as JsonBody},
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    auth::Caller,
    login::{invite_mail, issue, normalize_email},
    rbac::{Action, Role},
    state::{ManagementState, page_limit},
    store::{Client, Purpose},
};

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
        (status = 201, body = Object, description = "`{user}`; an invitation mail is sent."),
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
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
    Ok((StatusCode::CREATED, Json(json!({ "user": user }))))
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
        (status = 200, body = Object, description = "`{users: [...]}`."),
        SessionErrors,
    ),
    security(("session" = []), ("session_cookie" = [], "csrf" = [])),
)]
pub async fn list(
    State(state): State<ManagementState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require(&state, Action::UsersRead)?;
    let limit = page_limit(q.limit, 500)?;
    let users = state
        .store
        .users(&q.after, limit)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(json!({ "users": users })))
}

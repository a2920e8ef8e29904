//! Magic-link sign-in.
//!
//! `POST /v1/login` answers the same whatever the address (a request row is written either
//! way; the mail goes out in the background only for an account). The mail holds a link and a
//! short code. The link opens a confirm page; only the page's POST uses the link up (one atomic
//! update). A browser that confirms gets a cookie session; a request started by the desktop app
//! is finished by the app, either by polling with the secret only it holds or by submitting the
//! code (a bounded number of tries per request).

use keymesh_core::error::ErrorBody;
use keymesh_core::openapi::Errors;
use std::{net::IpAddr, time::Duration};

use axum::{
    Json,
    body::Bytes,
    extract::{Query, State},
    response::{IntoResponse, Response},
};
use http::{HeaderMap, StatusCode, header};
use keymesh_core::{
    ApiError, ErrorCode,
    audit::{AuditEvent, Outcome},
    http::{client_ip::ClientIp, extract::Json as JsonBody},
    secret::secret_eq,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{
    auth::{check_same_origin, session_set_cookie},
    mail::Mail,
    metrics::SignIn,
    pages,
    secrets::{Kind, NewToken, new_code, token_hash, well_formed_token},
    state::ManagementState,
    store::{Client, NewLoginRequest, NewSession, Purpose, UserRow, new_id, now_ms},
};

/// Longest e-mail address accepted (RFC 5321 path limit).
const MAX_EMAIL: usize = 254;
/// Longest user agent kept with a session.
const MAX_USER_AGENT: usize = 200;

/// A syntactically valid address, lower-cased. The same checks for every address, so the
/// answer says nothing about accounts.
pub fn normalize_email(raw: &str) -> Result<String, ApiError> {
    let email = raw.trim().to_lowercase();
    let invalid = || ApiError::with_message(ErrorCode::InvalidRequest, "email is not an address");
    if email.is_empty() || email.len() > MAX_EMAIL {
        return Err(invalid());
    }
    email
        .parse::<lettre::Address>()
        .map_err(|_| invalid())
        .map(|_| email)
}

/// What a new sign-in request gives its requester (and, for an account, its mail).
#[derive(Debug)]
pub struct Issued {
    /// Request id.
    pub request_id: String,
    /// Link token (mailed).
    pub link_token: SecretString,
    /// Code (mailed).
    pub code: SecretString,
    /// Poll secret (returned to the requester only).
    pub poll_secret: SecretString,
    /// Lifetime.
    pub ttl: Duration,
    /// Shown by the app and on the confirm page of an app request.
    pub match_code: String,
}

/// Four digits, not secret: they let a person see that the app sign-in they are approving is
/// the one on their own screen.
fn new_match_code() -> String {
    let bytes = keymesh_core::capability::token::random_key();
    format!("{:04}", u16::from_le_bytes([bytes[0], bytes[1]]) % 10_000)
}

impl Issued {
    /// The confirm link.
    pub fn link(&self, state: &ManagementState) -> String {
        format!(
            "{}/login/confirm?token={}",
            state
                .config
                .service
                .public_url
                .to_string()
                .trim_end_matches('/'),
            self.link_token.expose_secret()
        )
    }
}

/// Record a sign-in request (for `user`, or a decoy row when there is none).
pub async fn issue(
    state: &ManagementState,
    user: Option<&UserRow>,
    purpose: Purpose,
    client: Client,
    ip: IpAddr,
) -> Result<Issued, ApiError> {
    let ttl = match purpose {
        Purpose::Login => state.config.login_ttl,
        Purpose::Invite => state.config.invite_ttl,
    };
    let request_id = new_id();
    let link = NewToken::generate(Kind::Link);
    let poll = NewToken::generate(Kind::Poll);
    let code = new_code();
    let match_code = new_match_code();
    let code_hash = state.keyed.code_hash(&request_id, code.expose_secret());
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    state
        .store
        .insert_login_request(&NewLoginRequest {
            id: &request_id,
            user_id: user.map(|u| u.id.as_str()),
            purpose,
            client,
            token_hash: &link.hash,
            code_hash: &code_hash,
            poll_hash: &poll.hash,
            expires_at_ms: now_ms().saturating_add(ttl_ms),
            requested_ip: &ip.to_string(),
            match_code: &match_code,
        })
        .await
        .map_err(ApiError::internal)?;
    Ok(Issued {
        request_id,
        link_token: link.token,
        code,
        poll_secret: poll.token,
        ttl,
        match_code,
    })
}

fn login_mail(state: &ManagementState, to: &str, issued: &Issued, ip: IpAddr) -> Mail {
    let minutes = issued.ttl.as_secs().div_ceil(60);
    let body = format!(
        "Someone asked to sign in to Keymesh as {to} (from {ip}).\n\n\
         To sign in with a browser, open this link within {minutes} minutes (it works once):\n\n  {link}\n\n\
         To sign in to Keymesh Admin, enter this code there:\n\n  {code}\n\n\
         If this was not you, ignore this mail: nothing happens without the link or the code.\n",
        link = issued.link(state),
        code = issued.code.expose_secret(),
    );
    Mail {
        to: to.to_owned(),
        subject: "Your Keymesh sign-in link".into(),
        body: SecretString::from(body),
    }
}

/// The invitation a new user receives.
pub fn invite_mail(state: &ManagementState, user: &UserRow, issued: &Issued) -> Mail {
    let minutes = issued.ttl.as_secs().div_ceil(60);
    let body = format!(
        "You have been invited to Keymesh as {email} with the role {role}.\n\n\
         Open this link within {minutes} minutes to sign in for the first time (it works once):\n\n  {link}\n\n\
         Afterwards, sign in at any time by asking for a new link.\n",
        email = user.email,
        role = user.role,
        link = issued.link(state),
    );
    Mail {
        to: user.email.clone(),
        subject: "You are invited to Keymesh".into(),
        body: SecretString::from(body),
    }
}

/// A session handed to a client (the token is shown once).
#[derive(Serialize, utoipa::ToSchema)]
pub struct SessionGrant {
    /// Bearer token (absent for cookie sessions: it travels in `Set-Cookie`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Session id.
    pub session_id: String,
    /// Absolute expiry.
    pub expires_at_ms: i64,
    /// The user.
    pub user: UserSummary,
}

/// A user as clients see them.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserSummary {
    /// Id.
    pub id: String,
    /// Address.
    pub email: String,
    /// Role.
    pub role: String,
}

impl std::fmt::Debug for SessionGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionGrant")
            .field("session_id", &self.session_id)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish_non_exhaustive()
    }
}

impl From<&UserRow> for UserSummary {
    fn from(u: &UserRow) -> Self {
        Self {
            id: u.id.clone(),
            email: u.email.clone(),
            role: u.role.clone(),
        }
    }
}

/// Start a session for `user_id` (audited first, fail closed). Returns the token and grant.
pub async fn start_session(
    state: &ManagementState,
    user_id: &str,
    kind: &'static str,
    ip: IpAddr,
    headers: &HeaderMap,
) -> Result<(SecretString, SessionGrant), ApiError> {
    let user = state
        .store
        .user(user_id)
        .await
        .map_err(ApiError::internal)?
        .filter(|u| u.disabled_at_ms.is_none())
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized))?;
    let id = new_id();
    let token = NewToken::generate(Kind::Session);
    let max_ms = i64::try_from(state.config.session_max.as_millis()).unwrap_or(i64::MAX);
    let expires_at_ms = now_ms().saturating_add(max_ms);
    let user_agent: String = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .chars()
        .take(MAX_USER_AGENT)
        .collect();
    state
        .audit(
            AuditEvent::new(
                format!("user:{}", user.id),
                "session.create",
                format!("session:{id}"),
                Outcome::Success,
            )
            .with_details(json!({ "kind": kind, "ip": ip.to_string() })),
        )
        .await?;
    let evicted = state
        .store
        .insert_session(
            &NewSession {
                id: &id,
                user_id: &user.id,
                token_hash: &token.hash,
                kind,
                expires_at_ms,
                ip: &ip.to_string(),
                user_agent: &user_agent,
            },
            state.config.sessions_per_user,
            i64::try_from(state.config.session_idle.as_millis()).unwrap_or(i64::MAX),
        )
        .await
        .map_err(ApiError::internal)?;
    if evicted > 0 {
        state
            .audit_quiet(
                AuditEvent::new(
                    format!("user:{}", user.id),
                    "session.evict",
                    format!("user:{}", user.id),
                    Outcome::Success,
                )
                .with_details(
                    json!({ "sessions": evicted, "reason": "MANAGEMENT_SESSIONS_PER_USER" }),
                ),
            )
            .await;
    }
    let grant = SessionGrant {
        token: (kind == "bearer").then(|| token.token.expose_secret().to_owned()),
        session_id: id,
        expires_at_ms,
        user: UserSummary::from(&user),
    };
    state.metrics.sign_in(SignIn::Success);
    Ok((token.token, grant))
}

/// `POST /v1/login` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    email: String,
    /// `browser` (default) or `app`.
    #[serde(default = "browser")]
    client: Client,
}

fn browser() -> Client {
    Client::Browser
}

/// The one answer to `POST /v1/login`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct LoginAccepted {
    /// Always the same text.
    pub message: &'static str,
    /// Poll or submit the code against this request.
    pub request_id: String,
    /// Only this requester has it; needed to poll and to submit the code.
    pub poll_secret: String,
    /// Seconds until the link and code expire.
    pub expires_in_secs: u64,
    /// The app shows it; the confirm page of an app request shows it too.
    pub match_code: String,
}

impl std::fmt::Debug for LoginAccepted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginAccepted")
            .field("request_id", &self.request_id)
            .finish_non_exhaustive()
    }
}

const LOGIN_MESSAGE: &str =
    "If this address has a Keymesh account, a sign-in link and code are on their way.";

/// `POST /v1/login`: ask for a sign-in link.
#[utoipa::path(
    post,
    path = "/v1/login",
    operation_id = "login_request_login",
    tag = "sign-in",
    request_body = LoginBody,
    responses(
        (status = 202, body = LoginAccepted, description = "The same answer whether or not the address has an account."),
        Errors,
    ),
)]
pub async fn request_login(
    State(state): State<ManagementState>,
    ClientIp(ip): ClientIp,
    JsonBody(body): JsonBody<LoginBody>,
) -> Result<(StatusCode, Json<LoginAccepted>), ApiError> {
    state.sign_in_limit(state.login_by_ip.check(&state.ctx.limits.client_key(ip)))?;
    let email = normalize_email(&body.email)?;
    let email_ref = state.keyed.email_ref(&email);
    state.sign_in_limit(state.login_by_email.check(&email_ref))?;
    let user = state
        .store
        .user_by_email(&email)
        .await
        .map_err(ApiError::internal)?
        .filter(|u| u.disabled_at_ms.is_none());
    let issued = issue(&state, user.as_ref(), Purpose::Login, body.client, ip).await?;
    // Recorded before any code is mailed: no sign-in path opens without its record (fail
    // closed, `503 audit_unavailable`, the same answer whether or not the address has an
    // account).
    state
        .audit(
            AuditEvent::new(
                format!("ip:{ip}"),
                "login.request",
                email_ref,
                Outcome::Success,
            )
            .with_details(json!({
                "request": issued.request_id,
                "client": body.client.as_str(),
                "account": user.as_ref().map(|u| u.id.as_str()),
            })),
        )
        .await?;
    if user.is_some() {
        state
            .mailer
            .send_later(login_mail(&state, &email, &issued, ip));
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(LoginAccepted {
            message: LOGIN_MESSAGE,
            request_id: issued.request_id,
            poll_secret: issued.poll_secret.expose_secret().to_owned(),
            expires_in_secs: issued.ttl.as_secs(),
            match_code: issued.match_code,
        }),
    ))
}

/// `?token=` of the confirm page.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TokenQuery {
    #[serde(default)]
    token: String,
}

impl std::fmt::Debug for TokenQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenQuery(REDACTED)")
    }
}

/// `GET /login/confirm?token=`: show the confirm page (reads, uses nothing up). For a sign-in
/// the desktop app started, the page says so, with where and when it was asked for and the
/// app's match code: approving a link must not hand someone else's app a session unnoticed.
#[utoipa::path(
    get,
    path = "/login/confirm",
    operation_id = "login_confirm_page",
    tag = "sign-in",
    params(TokenQuery),
    responses(ConfirmPageResponses)
)]
pub async fn confirm_page(
    State(state): State<ManagementState>,
    Query(q): Query<TokenQuery>,
) -> Response {
    if !well_formed_token(Kind::Link, &q.token) {
        return link_invalid();
    }
    match state.store.live_link(&token_hash(&q.token)).await {
        Ok(Some(view)) if view.client == Client::App.as_str() => {
            let minutes = (now_ms() - view.created_at_ms).max(0) / 60_000;
            pages::confirm_app(&q.token, &view.requested_ip, minutes, &view.match_code)
        }
        Ok(Some(_)) => pages::confirm(&q.token),
        Ok(None) => link_invalid(),
        Err(e) => ApiError::internal(e).into_response(),
    }
}

fn link_invalid() -> Response {
    pages::refused(ErrorCode::LoginLinkInvalid)
}

/// An error as a page, keeping `Retry-After` and the `RateLimit-*` headers.
fn page_error(err: ApiError) -> Response {
    let code = err.code();
    let coded = err.into_response();
    let mut page = pages::refused(code);
    for (name, value) in coded.headers() {
        if name == header::RETRY_AFTER || name.as_str().starts_with("ratelimit-") {
            page.headers_mut().insert(name.clone(), value.clone());
        }
    }
    page
}

/// What the confirm page answers besides `200`: a page saying why (HTML, the stable code in
/// `Keymesh-Error-Code`), or the coded JSON body for what the HTTP stack refuses before the
/// page is reached (rate limits, deadlines) and for internal errors.
fn page_refusal(description: &str, json_too: bool) -> utoipa::openapi::Response {
    use utoipa::{
        PartialSchema,
        openapi::{ContentBuilder, ResponseBuilder, header::Header, schema::Ref},
    };
    let mut code = Header::new(String::schema());
    code.description = Some(
        "The stable error code (docs/errors.md) of a refusal shown as a page: what the `code` \
         of the JSON error body says elsewhere."
            .to_owned(),
    );
    let mut response = ResponseBuilder::new()
        .description(description)
        .content(
            "text/html",
            ContentBuilder::new().schema(Some(String::schema())).build(),
        )
        .header(pages::ERROR_CODE_HEADER_NAME, code);
    if json_too {
        response = response.content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        );
    }
    response.build()
}

fn html_page(description: &str) -> utoipa::openapi::Response {
    use utoipa::{
        PartialSchema,
        openapi::{ContentBuilder, ResponseBuilder},
    };
    ResponseBuilder::new()
        .description(description)
        .content(
            "text/html",
            ContentBuilder::new().schema(Some(String::schema())).build(),
        )
        .build()
}

/// The responses of `GET /login/confirm`.
#[derive(Debug)]
pub struct ConfirmPageResponses;

impl utoipa::IntoResponses for ConfirmPageResponses {
    fn responses()
    -> std::collections::BTreeMap<String, utoipa::openapi::RefOr<utoipa::openapi::Response>> {
        let mut out = <keymesh_core::openapi::Errors as utoipa::IntoResponses>::responses();
        out.insert(
            "200".into(),
            html_page("The confirm page (HTML) with its button; uses nothing up.").into(),
        );
        out.insert(
            "400".into(),
            page_refusal(
                "HTML, `Keymesh-Error-Code: login_link_invalid`: the link is unknown, expired or \
                 used; the page says to ask for a new one.",
                false,
            )
            .into(),
        );
        out
    }
}

/// The responses of `POST /login/confirm`.
#[derive(Debug)]
pub struct ConfirmResponses;

impl utoipa::IntoResponses for ConfirmResponses {
    fn responses()
    -> std::collections::BTreeMap<String, utoipa::openapi::RefOr<utoipa::openapi::Response>> {
        let mut out = <keymesh_core::openapi::Errors as utoipa::IntoResponses>::responses();
        out.insert(
            "200".into(),
            html_page(
                "HTML: signed in (a browser session cookie is set), or the page saying the app \
                 may continue.",
            )
            .into(),
        );
        for (status, description, json_too) in [
            (
                "400",
                "HTML, `Keymesh-Error-Code: login_link_invalid`: the link is unknown, expired or \
                 used; the page says to ask for a new one.",
                false,
            ),
            (
                "403",
                "HTML, `Keymesh-Error-Code: csrf_failed`: the form came from another site.",
                false,
            ),
            (
                "429",
                "`rate_limited`: too many sign-in attempts from this client IP. HTML (with \
                 `Keymesh-Error-Code`) when the sign-in limit refuses, the coded JSON body when \
                 the service-wide limit does; both with `Retry-After`.",
                true,
            ),
            (
                "503",
                "`audit_unavailable`, `unavailable` or `timeout`: HTML (with \
                 `Keymesh-Error-Code`) from the page, the coded JSON body from the HTTP stack.",
                true,
            ),
        ] {
            let mut response = page_refusal(description, json_too);
            if status == "429" {
                let mut retry = utoipa::openapi::header::Header::new(
                    utoipa::openapi::schema::Object::with_type(
                        utoipa::openapi::schema::Type::Integer,
                    ),
                );
                retry.description = Some("Seconds to wait before retrying.".to_owned());
                response.headers.insert("Retry-After".into(), retry);
            }
            out.insert(status.into(), response.into());
        }
        out
    }
}

/// The confirm form's token (`application/x-www-form-urlencoded`). A prefixed base64url token
/// never needs percent-decoding; anything else is not a token.
fn form_token(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    text.split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .filter(|t| well_formed_token(Kind::Link, t))
        .map(str::to_owned)
}

/// `POST /login/confirm`: use the link up and sign in.
#[utoipa::path(
    post,
    path = "/login/confirm",
    operation_id = "login_confirm",
    tag = "sign-in",
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "`token=<the link token>`."),
    responses(ConfirmResponses),
)]
pub async fn confirm(
    State(state): State<ManagementState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match confirm_inner(&state, ip, &headers, &body).await {
        Ok(response) => response,
        // A 500 keeps its JSON form, whose rendering logs the cause.
        Err(err) if err.code() == ErrorCode::Internal => err.into_response(),
        Err(err) => page_error(err),
    }
}

async fn confirm_inner(
    state: &ManagementState,
    ip: IpAddr,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    state.sign_in_limit(state.login_by_ip.check(&state.ctx.limits.client_key(ip)))?;
    // Login CSRF: another site must not sign a visitor in to an account of its choosing.
    check_same_origin(headers, state)?;
    let Some(token) = form_token(body) else {
        return Ok(link_invalid());
    };
    let Some(confirmed) = state
        .store
        .confirm_link(&token_hash(&token))
        .await
        .map_err(ApiError::internal)?
    else {
        state.metrics.sign_in(SignIn::Failure);
        state
            .audit_quiet(AuditEvent::new(
                format!("ip:{ip}"),
                "login.confirm",
                "login:link",
                Outcome::Denied,
            ))
            .await;
        return Ok(link_invalid());
    };
    let user_id = confirmed.user_id.unwrap_or_default();
    state
        .audit(
            AuditEvent::new(
                format!("user:{user_id}"),
                "login.confirm",
                format!("login:{}", confirmed.id),
                Outcome::Success,
            )
            .with_details(json!({ "client": confirmed.client, "purpose": confirmed.purpose, "ip": ip.to_string() })),
        )
        .await?;
    if confirmed.client == Client::App.as_str() {
        return Ok(pages::page(
            StatusCode::OK,
            "Sign-in confirmed",
            "<p>Return to Keymesh Admin: it finishes signing in by itself.</p>\
             <p class=\"muted\">You can close this page.</p>",
        ));
    }
    let (token, grant) = start_session(state, &user_id, "cookie", ip, headers).await?;
    let max_age = i64::try_from(state.config.session_max.as_secs()).unwrap_or(i64::MAX);
    let mut response = pages::page(
        StatusCode::OK,
        "Signed in",
        &format!(
            "<p>You are signed in to Keymesh as <strong>{}</strong>.</p>\
             <p class=\"muted\">You can close this page.</p>",
            pages::escape(&grant.user.email)
        ),
    );
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_set_cookie(token.expose_secret(), max_age),
    );
    Ok(response)
}

/// The answer to `POST /v1/login/poll`, by `status`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum PollAnswer {
    /// The link is not confirmed yet: poll again.
    Pending {
        /// Seconds until the request expires.
        expires_in_secs: i64,
    },
    /// Confirmed: the bearer session, handed out once.
    Complete {
        /// The new session and its token.
        session: SessionGrant,
    },
}

/// `complete`: the only status of a sign-in finished with the mailed code.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Completed {
    /// The session is issued.
    Complete,
}

/// The answer to `POST /v1/login/code`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SignedIn {
    /// Always `complete`.
    pub status: Completed,
    /// The new bearer session and its token.
    pub session: SessionGrant,
}

/// `POST /v1/login/poll` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PollBody {
    request_id: String,
    poll_secret: String,
}

/// `POST /v1/login/code` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeBody {
    request_id: String,
    poll_secret: String,
    code: String,
}

impl std::fmt::Debug for PollBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PollBody")
            .field("request_id", &self.request_id)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for CodeBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeBody")
            .field("request_id", &self.request_id)
            .finish_non_exhaustive()
    }
}

/// The request, if the poll secret is its own (compared in constant time).
async fn owned_request(
    state: &ManagementState,
    request_id: &str,
    poll_secret: &str,
) -> Result<crate::store::LoginRequestRow, ApiError> {
    if request_id.len() > 64 || !well_formed_token(Kind::Poll, poll_secret) {
        return Err(ApiError::new(ErrorCode::Unauthorized));
    }
    let row = state
        .store
        .login_request(request_id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized))?;
    if !secret_eq(&token_hash(poll_secret), &row.poll_hash) {
        return Err(ApiError::new(ErrorCode::Unauthorized));
    }
    if row.consumed_at_ms.is_some() || row.expires_at_ms <= now_ms() {
        return Err(ApiError::new(ErrorCode::LoginRequestExpired));
    }
    Ok(row)
}

/// `POST /v1/login/poll`: has the link been confirmed? Then take the session (once).
#[utoipa::path(
    post,
    path = "/v1/login/poll",
    operation_id = "login_poll",
    tag = "sign-in",
    request_body = PollBody,
    responses(
        (status = 200, body = PollAnswer, description = "`pending` (poll again) or, once, `complete` with the session."),
        (status = 401, body = ErrorBody, description = "`unauthorized`: an unknown request or a wrong poll secret."),
        (status = 410, body = ErrorBody, description = "`login_request_expired`: the request expired or its session was already taken."),
        Errors,
    ),
)]
pub async fn poll(
    State(state): State<ManagementState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    JsonBody(body): JsonBody<PollBody>,
) -> Result<Json<PollAnswer>, ApiError> {
    let row = owned_request(&state, &body.request_id, &body.poll_secret).await?;
    if row.confirmed_at_ms.is_none() {
        let left = (row.expires_at_ms - now_ms()).max(0) / 1000;
        return Ok(Json(PollAnswer::Pending {
            expires_in_secs: left,
        }));
    }
    let user_id = state
        .store
        .consume_request(&row.id, true)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::new(ErrorCode::LoginRequestExpired))?;
    let (_, grant) = start_session(&state, &user_id, "bearer", ip, &headers).await?;
    Ok(Json(PollAnswer::Complete { session: grant }))
}

/// `POST /v1/login/code`: finish the request with the mailed code.
#[utoipa::path(
    post,
    path = "/v1/login/code",
    operation_id = "login_code",
    tag = "sign-in",
    request_body = CodeBody,
    responses(
        (status = 200, body = SignedIn, description = "A bearer session for the app."),
        (status = 401, body = ErrorBody, description = "`login_code_invalid` (with `details.attempts_left`): a wrong code; `unauthorized`: an unknown request or a wrong poll secret."),
        (status = 403, body = ErrorBody, description = "`login_attempts_exhausted`: too many wrong codes for this request."),
        (status = 410, body = ErrorBody, description = "`login_request_expired`: the request expired or was already completed."),
        Errors,
    ),
)]
pub async fn code(
    State(state): State<ManagementState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CodeBody>,
) -> Result<Json<SignedIn>, ApiError> {
    state.sign_in_limit(state.login_by_ip.check(&state.ctx.limits.client_key(ip)))?;
    let row = owned_request(&state, &body.request_id, &body.poll_secret).await?;
    let max = state.config.code_attempts;
    let Some(attempts) = state
        .store
        .count_code_attempt(&row.id, max)
        .await
        .map_err(ApiError::internal)?
    else {
        return Err(ApiError::new(ErrorCode::LoginAttemptsExhausted));
    };
    let typed: String = body.code.chars().take(64).collect();
    let matches = state.keyed.code_matches(&row.id, &typed, &row.code_hash);
    if !matches || row.user_id.is_none() {
        state.metrics.sign_in(SignIn::Failure);
        state
            .audit_quiet(
                AuditEvent::new(
                    format!("ip:{ip}"),
                    "login.code",
                    format!("login:{}", row.id),
                    Outcome::Denied,
                )
                .with_details(json!({ "attempt": attempts })),
            )
            .await;
        let left = i64::from(max) - attempts;
        let err = if left <= 0 {
            ApiError::new(ErrorCode::LoginAttemptsExhausted)
        } else {
            ApiError::new(ErrorCode::LoginCodeInvalid)
        };
        return Err(err.with_details(json!({ "attempts_left": left.max(0) })));
    }
    let user_id = state
        .store
        .consume_request(&row.id, false)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::new(ErrorCode::LoginRequestExpired))?;
    let (_, grant) = start_session(&state, &user_id, "bearer", ip, &headers).await?;
    Ok(Json(SignedIn {
        status: Completed::Complete,
        session: grant,
    }))
}

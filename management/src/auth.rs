//! Who is calling: a signed-in user, by bearer token (the desktop app, scripts) or by session
//! cookie (browsers). Cookie-authenticated state changes must also prove they come from our own
//! pages: same origin, and the session's CSRF token in `X-CSRF-Token`.

use axum::extract::FromRequestParts;
use http::{HeaderMap, HeaderValue, Method, header, request::Parts};
use keymesh_core::{
    ApiError, ErrorCode,
    http::{bearer_token, node::SignedRequest},
};

use crate::{
    rbac::{Action, Role},
    secrets::{Kind, token_hash, well_formed_token},
    state::ManagementState,
    store::{SessionRow, UserRow, now_ms},
};

/// The browser session cookie. `__Host-` makes browsers insist on `Secure`, `Path=/` and no
/// `Domain`, so no sibling host can plant or read it.
pub const SESSION_COOKIE: &str = "__Host-keymesh_session";
/// The header carrying the CSRF token of a cookie session.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// A session's last use is written at most this often.
const TOUCH_EVERY_MS: i64 = 60_000;

/// A signed-in user.
#[derive(Debug)]
pub struct Caller {
    /// The session used.
    pub session: SessionRow,
    /// Its user.
    pub user: UserRow,
    /// The user's role.
    pub role: Role,
    /// A role held for now through an emergency access grant (its id and role).
    pub emergency: Option<(String, Role)>,
    /// Authenticated by the session cookie (not a bearer token).
    pub via_cookie: bool,
}

/// Actions an emergency grant never confers, whatever role it grants: deciding approvals,
/// creating emergency access and managing users. Otherwise a grant could outlive itself (an
/// admin account invited, a successor grant approved) or decide the requests it exists to
/// bypass.
pub const NOT_BY_EMERGENCY_GRANT: [Action; 3] = [
    Action::ApprovalsDecide,
    Action::EmergencyAccess,
    Action::UsersManage,
];

impl Caller {
    /// `user:ID`, for audit records.
    pub fn actor(&self) -> String {
        format!("user:{}", self.user.id)
    }

    /// Whether the caller's role holds `action` (re-authentication aside): for choosing what
    /// to show, never as the check before acting.
    pub fn holds(&self, state: &ManagementState, action: Action) -> bool {
        state.config.rbac.allows(self.role, action)
            || (!NOT_BY_EMERGENCY_GRANT.contains(&action)
                && self
                    .emergency
                    .as_ref()
                    .is_some_and(|(_, role)| state.config.rbac.allows(*role, action)))
    }

    /// May this caller perform `action`? Admin actions also need a recent sign-in.
    pub fn require(&self, state: &ManagementState, action: Action) -> Result<(), ApiError> {
        if !self.holds(state, action) {
            return Err(ApiError::with_message(
                ErrorCode::Forbidden,
                format!(
                    "the {} role does not allow {}",
                    self.role.as_str(),
                    action.as_str()
                ),
            ));
        }
        if action.needs_recent_login() && !self.recently_signed_in(state) {
            return Err(ApiError::new(ErrorCode::ReauthenticationRequired));
        }
        Ok(())
    }

    /// Whether the session's sign-in is younger than the re-authentication window.
    pub fn recently_signed_in(&self, state: &ManagementState) -> bool {
        let window = i64::try_from(state.config.reauth.as_millis()).unwrap_or(i64::MAX);
        now_ms().saturating_sub(self.session.created_at_ms) <= window
    }

    /// Until when admin actions are allowed without signing in again.
    pub fn reauth_until_ms(&self, state: &ManagementState) -> i64 {
        let window = i64::try_from(state.config.reauth.as_millis()).unwrap_or(i64::MAX);
        self.session.created_at_ms.saturating_add(window)
    }
}

/// The session token from the `Cookie` header, if any.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == SESSION_COOKIE)
        .map(|c| c.value().to_owned())
}

/// `scheme://host[:port]` of our public URL as browsers serialise an origin: lower case, the
/// scheme's default port left out. The only origin our pages have.
pub fn own_origin(state: &ManagementState) -> String {
    let url = &state.config.service.public_url;
    let scheme = url.scheme_str().unwrap_or("https").to_ascii_lowercase();
    let host = url.host().unwrap_or_default().to_ascii_lowercase();
    match url.port_u16() {
        Some(443) if scheme == "https" => format!("{scheme}://{host}"),
        Some(80) if scheme == "http" => format!("{scheme}://{host}"),
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    }
}

/// Refuse requests a browser marks as coming from another site. Requests without these
/// headers (non-browser clients) pass: they carry no ambient credential to abuse.
pub fn check_same_origin(headers: &HeaderMap, state: &ManagementState) -> Result<(), ApiError> {
    let refused = || {
        ApiError::with_message(
            ErrorCode::CsrfFailed,
            "cross-origin request refused (Origin or Sec-Fetch-Site)",
        )
    };
    let other_site = headers
        .get("sec-fetch-site")
        .is_some_and(|site| !matches!(site.to_str(), Ok("same-origin" | "none")));
    let other_origin = headers
        .get(header::ORIGIN)
        .is_some_and(|origin| origin.as_bytes() != own_origin(state).as_bytes());
    if other_site || other_origin {
        return Err(refused());
    }
    Ok(())
}

fn safe_method(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn csrf_header(headers: &HeaderMap) -> Option<&str> {
    headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok())
}

impl FromRequestParts<ManagementState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ManagementState,
    ) -> Result<Self, ApiError> {
        let (token, via_cookie) = match bearer_token(&parts.headers) {
            Some(token) => (token.to_owned(), false),
            None => (
                session_cookie(&parts.headers)
                    .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized))?,
                true,
            ),
        };
        if !well_formed_token(Kind::Session, &token) {
            return Err(ApiError::new(ErrorCode::Unauthorized));
        }
        let idle = i64::try_from(state.config.session_idle.as_millis()).unwrap_or(i64::MAX);
        let (session, user, grant) = state
            .store
            .live_session(&token_hash(&token), idle)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized))?;
        // A bearer token must not be replayed as a cookie or the reverse: each kind travels
        // only the way it was issued.
        if (session.kind == "cookie") != via_cookie {
            return Err(ApiError::new(ErrorCode::Unauthorized));
        }
        if via_cookie && !safe_method(&parts.method) {
            check_same_origin(&parts.headers, state)?;
            let presented = csrf_header(&parts.headers).unwrap_or_default();
            if !state.keyed.csrf_matches(&session.id, presented) {
                return Err(ApiError::with_message(
                    ErrorCode::CsrfFailed,
                    "missing or wrong X-CSRF-Token header (GET /v1/session gives it)",
                ));
            }
        }
        state
            .ctx
            .limits
            .check_principal(&format!("user:{}", user.id))?;
        // Often enough that a session in use never idles out, even with a short idle timeout.
        if now_ms() - session.last_seen_ms > TOUCH_EVERY_MS.min(idle / 2) {
            state
                .store
                .touch_session(&session.id)
                .await
                .map_err(ApiError::internal)?;
        }
        let role = user.role.parse().map_err(|_| {
            ApiError::with_message(ErrorCode::Internal, "the user's stored role is unknown")
        })?;
        // The session query brings the user's active emergency grant along.
        let emergency = grant.and_then(|(id, role)| Some((id, role.parse().ok()?)));
        Ok(Caller {
            session,
            user,
            role,
            emergency,
            via_cookie,
        })
    }
}

/// `Set-Cookie` for a new browser session.
pub fn session_set_cookie(token: &str, max_age_secs: i64) -> HeaderValue {
    let cookie = cookie::Cookie::build((SESSION_COOKIE, token))
        .path("/")
        .http_only(true)
        .secure(true)
        .same_site(cookie::SameSite::Strict)
        .max_age(cookie::time::Duration::seconds(max_age_secs))
        .build();
    HeaderValue::from_str(&cookie.to_string()).expect("a base64url token is a valid header value")
}

/// `Set-Cookie` that removes the session cookie.
pub fn clear_session_cookie() -> HeaderValue {
    session_set_cookie("", 0)
}

/// A node's request: a [`SignedRequest`] (its capability token verified against the vault's
/// root keys and management's copy of the revocation feed, fail closed; a proof of possession
/// over the whole request) from a node management knows (enrolled, not disabled, this key).
#[derive(Debug)]
pub struct NodeCaller {
    /// The verified token.
    pub token: std::sync::Arc<keymesh_core::capability::token::VerifiedToken>,
    /// The node.
    pub node: crate::directory::NodeRow,
    /// The request body, exactly as signed.
    pub body: axum::body::Bytes,
}

impl NodeCaller {
    /// `node:ID`, for audit records.
    pub fn actor(&self) -> String {
        format!("node:{}", self.node.id)
    }

    /// Parse the body as JSON with a coded error.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ApiError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| ApiError::with_message(ErrorCode::MalformedRequest, e.to_string()))
    }
}

impl axum::extract::FromRequest<ManagementState> for NodeCaller {
    type Rejection = ApiError;

    async fn from_request(
        req: axum::extract::Request,
        state: &ManagementState,
    ) -> Result<Self, ApiError> {
        let SignedRequest { token, body } = SignedRequest::from_request(req, state).await?;
        let id = &token.claims.node;
        let node = state
            .store
            .node(id)
            .await
            .map_err(ApiError::internal)?
            .filter(|n| n.disabled_at_ms.is_none() && n.public_key == token.claims.node_key)
            .ok_or_else(|| ApiError::new(ErrorCode::Revoked))?;
        Ok(Self { token, node, body })
    }
}

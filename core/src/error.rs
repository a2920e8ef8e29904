//! The one error body every Keymesh service answers with, and its stable codes.
//!
//! `{"error":{"code":"...","message":"..."}}`. Codes are part of the API contract: they are
//! listed in `docs/errors.md` (generated from [`ErrorCode::ALL`] and checked by a test), never
//! renamed, and never carry internal detail. Internal causes are logged with their chain.

use std::{borrow::Cow, error::Error as StdError, fmt, time::Duration};

use axum::{
    Json,
    response::{IntoResponse, Response},
};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Serialize;

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $variant:ident => ($code:literal, $status:ident, $description:literal), )+) => {
        /// A stable, documented error code.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant, )+
        }

        impl ErrorCode {
            /// Every code, in documentation order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),+];

            /// The wire form, e.g. `rate_limited`.
            pub const fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code,)+ }
            }

            /// The HTTP status this code is answered with.
            pub const fn status(self) -> StatusCode {
                match self { $(ErrorCode::$variant => StatusCode::$status,)+ }
            }

            /// What the code means, for `docs/errors.md` and as the default message.
            pub const fn description(self) -> &'static str {
                match self { $(ErrorCode::$variant => $description,)+ }
            }
        }
    };
}

error_codes! {
    MalformedRequest => ("malformed_request", BAD_REQUEST,
        "The request could not be parsed (bad JSON, bad header, bad query string)."),
    InvalidRequest => ("invalid_request", UNPROCESSABLE_ENTITY,
        "The request parsed but a value is not acceptable; the message names it."),
    Unauthorized => ("unauthorized", UNAUTHORIZED,
        "No valid credential was presented."),
    Forbidden => ("forbidden", FORBIDDEN,
        "The credential is valid but does not allow this operation."),
    NotFound => ("not_found", NOT_FOUND,
        "No such route or resource."),
    MethodNotAllowed => ("method_not_allowed", METHOD_NOT_ALLOWED,
        "The route exists but not for this HTTP method."),
    PayloadTooLarge => ("payload_too_large", PAYLOAD_TOO_LARGE,
        "The request body is larger than the configured limit (`HTTP_BODY_LIMIT_BYTES`)."),
    UnsupportedMediaType => ("unsupported_media_type", UNSUPPORTED_MEDIA_TYPE,
        "The request body has the wrong `Content-Type` (JSON routes need `application/json`)."),
    InvalidToken => ("invalid_token", UNAUTHORIZED,
        "The capability token is malformed, signed by an unknown root key, or missing."),
    TokenExpired => ("token_expired", UNAUTHORIZED,
        "The capability token (or one of its attenuations) has expired; refresh it."),
    Revoked => ("revoked", UNAUTHORIZED,
        "The capability token was revoked: directly, through a token it derives from, or by revoking its node, user or group."),
    ProofRequired => ("proof_required", UNAUTHORIZED,
        "The request carries a token but no proof of possession (`Keymesh-Proof` header)."),
    ProofInvalid => ("proof_invalid", UNAUTHORIZED,
        "The proof of possession does not verify for this method, path, body and token, or its timestamp is outside ±60 s."),
    ProofReplayed => ("proof_replayed", UNAUTHORIZED,
        "This proof of possession was already used; sign every request afresh."),
    ApprovalRequired => ("approval_required", FORBIDDEN,
        "The request asks for more than may be granted without a human approval; `details` lists exactly what is in excess."),
    InvalidPassphrase => ("invalid_passphrase", UNAUTHORIZED,
        "The passphrase does not unlock this vault. Attempts are rate limited per group and per client."),
    InvalidShare => ("invalid_share", FORBIDDEN,
        "The unlock share does not come from a member of this vault's share set or does not decrypt."),
    VaultLocked => ("vault_locked", LOCKED,
        "The group vault is locked; an admin must unlock it first."),
    Conflict => ("conflict", CONFLICT,
        "The resource already exists or changed meanwhile."),
    AuditUnavailable => ("audit_unavailable", SERVICE_UNAVAILABLE,
        "The operation was not performed because its audit record could not be written in time."),
    LoginLinkInvalid => ("login_link_invalid", BAD_REQUEST,
        "The sign-in link is unknown, expired or already used (each link works once, for `MANAGEMENT_LOGIN_TTL_SECS`); request a new one."),
    LoginCodeInvalid => ("login_code_invalid", UNAUTHORIZED,
        "The sign-in code is wrong; `details.attempts_left` says how many tries this request has left."),
    LoginAttemptsExhausted => ("login_attempts_exhausted", FORBIDDEN,
        "Too many wrong codes for this sign-in request (`MANAGEMENT_LOGIN_CODE_ATTEMPTS`): it accepts no more codes. Request a new sign-in."),
    LoginRequestExpired => ("login_request_expired", GONE,
        "The sign-in request expired or was already completed; start a new sign-in."),
    ReauthenticationRequired => ("reauthentication_required", UNAUTHORIZED,
        "This action needs a sign-in younger than `MANAGEMENT_REAUTH_SECS`; sign in again and retry."),
    CsrfFailed => ("csrf_failed", FORBIDDEN,
        "A state change authenticated by the session cookie came without the session's `X-CSRF-Token` header, or from another origin. Bearer-token requests are not affected."),
    EnrollmentCodeInvalid => ("enrollment_code_invalid", UNAUTHORIZED,
        "The enrollment code is unknown, expired or already used (each code enrolls one node, within `MANAGEMENT_ENROLL_TTL_SECS`); ask for a new one."),
    NodeExists => ("node_exists", CONFLICT,
        "A node with this id is already enrolled; enrolling again never replaces its keys. Pick another id, or have an admin remove the old node first."),
    SelfApproval => ("self_approval", FORBIDDEN,
        "The requester of an approval can never decide it; another reviewer must."),
    ApprovalDecided => ("approval_decided", CONFLICT,
        "The approval request was already decided (decisions are final) or its reviewer already voted."),
    ApprovalExpired => ("approval_expired", GONE,
        "The approval request expired before it was decided or used; ask again."),
    ApprovalPending => ("approval_pending", CONFLICT,
        "The approval request is not approved (yet); `details.status` says where it stands."),
    RateLimited => ("rate_limited", TOO_MANY_REQUESTS,
        "Too many requests from this client IP or principal; retry after `Retry-After` seconds."),
    Timeout => ("timeout", SERVICE_UNAVAILABLE,
        "The server did not finish the request within `HTTP_REQUEST_TIMEOUT_SECS`; it is safe to retry idempotent requests."),
    NotReady => ("not_ready", SERVICE_UNAVAILABLE,
        "A dependency the service needs (e.g. its database) is not reachable; see `checks` in the body."),
    Unavailable => ("unavailable", SERVICE_UNAVAILABLE,
        "The service cannot handle the request right now (e.g. shutting down)."),
    TooLarge => ("too_large", PAYLOAD_TOO_LARGE,
        "A relay message or frame is larger than the relay's limit (`RELAY_MAX_MESSAGE_BYTES`; `ready` states the limits in force)."),
    MailboxFull => ("mailbox_full", INSUFFICIENT_STORAGE,
        "The recipient's mailbox holds as many messages or bytes as allowed (`RELAY_MAILBOX_MAX_*`); nothing was stored. Retry after the recipient catches up."),
    UnknownRecipient => ("unknown_recipient", NOT_FOUND,
        "No node of the sender's group has registered keys under this id at the relay."),
    MalformedFrame => ("malformed_frame", BAD_REQUEST,
        "A relay frame could not be decoded (bad version, unknown type, truncated, trailing bytes, a field over its bound); the message names the field. The connection is closed."),
    ProtocolError => ("protocol_error", BAD_REQUEST,
        "A well-formed frame that is not allowed in the connection's state (e.g. `send` before `ready`, an ack past what was delivered, a text message). The connection is closed."),
    TooManyConnections => ("too_many_connections", SERVICE_UNAVAILABLE,
        "The node already holds `RELAY_CONNECTIONS_PER_NODE` connections, or the relay holds `RELAY_MAX_CONNECTIONS`; close one or retry later."),
    IdleTimeout => ("idle_timeout", REQUEST_TIMEOUT,
        "Nothing arrived on the connection (not even a pong) within `RELAY_IDLE_TIMEOUT_SECS`, or the handshake was not completed in time. The connection is closed."),
    Internal => ("internal", INTERNAL_SERVER_ERROR,
        "An unexpected server error; the cause is logged under the request id, never sent to the client."),
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The schema of [`ErrorCode`] in OpenAPI documents: its wire forms, as a string enum.
impl utoipa::PartialSchema for ErrorCode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .description(Some(
                "Stable error code; docs/errors.md says what each means and its HTTP status.",
            ))
            .enum_values(Some(ErrorCode::ALL.iter().map(|c| c.as_str())))
            .into()
    }
}

impl utoipa::ToSchema for ErrorCode {}

/// The wire body: `{"error":{"code","message"}}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody<'a> {
    /// The error object.
    pub error: ErrorObject<'a>,
}

/// The error itself: its code, a message and, for some codes, details.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorObject<'a> {
    /// Stable code.
    #[schema(value_type = ErrorCode)]
    pub code: &'a str,
    /// Human-readable message, safe to show to the client.
    pub message: &'a str,
    /// Structured detail for some codes (e.g. what `approval_required` would need).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub details: Option<&'a serde_json::Value>,
}

/// An error on its way to a client: a code, a client-safe message, and optionally the internal
/// cause, which is logged (with its chain) and never serialized.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    message: Cow<'static, str>,
    /// Rarely used (rate limits), so boxed to keep `Result<_, ApiError>` small.
    headers: Option<Box<HeaderMap>>,
    details: Option<Box<serde_json::Value>>,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl ApiError {
    /// An error with the code's default message.
    pub fn new(code: ErrorCode) -> Self {
        Self {
            code,
            message: Cow::Borrowed(code.description()),
            headers: None,
            details: None,
            source: None,
        }
    }

    /// An error with a specific client-safe message.
    pub fn with_message(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            message: message.into(),
            ..Self::new(code)
        }
    }

    /// A 500 whose cause is logged and hidden from the client.
    pub fn internal(source: impl StdError + Send + Sync + 'static) -> Self {
        Self {
            source: Some(Box::new(source)),
            ..Self::new(ErrorCode::Internal)
        }
    }

    /// Attach an internal cause (logged, never sent).
    #[must_use]
    pub fn caused_by(mut self, source: impl StdError + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Tell the client when to retry (`Retry-After`, whole seconds, at least 1).
    #[must_use]
    pub fn retry_after(mut self, wait: Duration) -> Self {
        self.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(retry_after_secs(wait)),
        );
        self
    }

    /// Attach structured, client-safe detail.
    #[must_use]
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(Box::new(details));
        self
    }

    /// Extra response headers (e.g. `RateLimit-*`).
    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        self.headers.get_or_insert_with(Box::default)
    }

    /// The code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The client-safe message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl StdError for ApiError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

/// Render an error and its whole `source()` chain on one line, for logs.
pub fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut out = err.to_string();
    let mut next = err.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

/// Whole seconds for `Retry-After`, rounded up and never 0.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.code.status();
        if let Some(source) = &self.source {
            let chain = error_chain(source.as_ref());
            if status.is_server_error() {
                tracing::error!(code = self.code.as_str(), error = %chain, "request failed");
            } else {
                tracing::info!(code = self.code.as_str(), error = %chain, "request refused");
            }
        }
        let body = ErrorBody {
            error: ErrorObject {
                code: self.code.as_str(),
                message: &self.message,
                details: self.details.as_deref(),
            },
        };
        let headers = self.headers.map(|h| *h).unwrap_or_default();
        let mut response = (status, headers, Json(body)).into_response();
        // For the request log line (`error_code`): which refusal, not only the status.
        response.extensions_mut().insert(self.code);
        response
    }
}

/// Render `docs/errors.md` from [`ErrorCode::ALL`] plus service-specific codes.
pub fn render_error_docs() -> String {
    let mut out = String::from(
        "# Error codes\n\n\
         <!-- Generated from `keymesh_core::error::ErrorCode`; `cargo test` fails when this file \
         drifts. Regenerate with `KEYMESH_UPDATE_DOCS=1 cargo test -p keymesh-core`. -->\n\n\
         Every Keymesh HTTP API answers errors with one JSON shape:\n\n\
         ```json\n{\"error\": {\"code\": \"rate_limited\", \"message\": \"...\"}}\n```\n\n\
         `code` is stable: clients and runbooks may match on it. `message` is for people and may \
         change. No error body ever contains an internal cause (SQL, file paths, stack traces); \
         those are logged under the request's `x-request-id`, which every response echoes.\n\n\
         | code | HTTP status | meaning |\n|---|---|---|\n",
    );
    for code in ErrorCode::ALL {
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            code.as_str(),
            code.status().as_u16(),
            code.description()
        ));
    }
    out.push_str(
        "\n`429 rate_limited` carries `Retry-After` (seconds) and `RateLimit-Limit`, \
         `RateLimit-Remaining`, `RateLimit-Reset`. Error responses produced by the HTTP stack \
         itself (unknown route, wrong method, body too large, timeout, panic) are mapped to the \
         same shape.\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn body_has_code_and_message_and_hides_cause() {
        let err = ApiError::internal(std::io::Error::other("password=hunter2 at /etc/x"));
        let resp = err.into_response();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["error"]["code"], "internal");
        assert!(!String::from_utf8_lossy(&body).contains("hunter2"));
    }

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }

    #[test]
    fn codes_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "duplicate {code}");
            assert!(
                code.as_str()
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_')
            );
        }
    }

    #[test]
    fn error_docs_are_in_sync() {
        crate::docs::assert_doc_in_sync("docs/errors.md", &render_error_docs());
    }
}

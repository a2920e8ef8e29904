//! Keymesh's stable error codes, and the error body every service answers with.
//!
//! `{"error":{"code":"...","message":"...","details":{...}}}`. Codes are part of the API
//! contract: they are listed in `docs/errors.md` (generated from [`ErrorCode::ALL`] and checked by
//! a test), never renamed, and never carry internal detail. Every client reads a refusal with
//! [`WireError::parse`].

use std::{fmt, str::FromStr};

use http::StatusCode;
use serde::{Deserialize, Serialize};

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
        "Too many requests from this client IP (an IPv6 client's /64, `RATE_LIMIT_IPV6_PREFIX`) or principal, or too many signed requests from one node within the proof window; retry after `Retry-After` seconds."),
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

/// A code this build does not know (a newer server's): keep the string, see [`WireError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown error code")]
pub struct UnknownCode;

impl FromStr for ErrorCode {
    type Err = UnknownCode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ErrorCode::ALL
            .iter()
            .copied()
            .find(|c| c.as_str() == s)
            .ok_or(UnknownCode)
    }
}

/// The schema of [`ErrorCode`] in OpenAPI documents: its wire forms, as a string enum.
#[cfg(feature = "openapi")]
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

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for ErrorCode {}

/// A refusal as a client receives it: the inner object of `{"error":{...}}`.
///
/// `code` stays a string so that a code added by a newer server still reaches the caller;
/// [`WireError::known`] maps it to an [`ErrorCode`] when this build knows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WireError {
    /// The stable code, e.g. `rate_limited`.
    pub code: String,
    /// A message for people; safe to show, may change.
    #[serde(default)]
    pub message: String,
    /// Structured detail some codes carry (e.g. `approval_required`'s excess).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Envelope {
    error: WireError,
}

impl WireError {
    /// The error in a response body, or `None` when the body is not Keymesh's error shape (a
    /// proxy's page, an empty body): callers then fall back to the HTTP status and never show
    /// the body itself.
    pub fn parse(body: &[u8]) -> Option<Self> {
        serde_json::from_slice::<Envelope>(body)
            .ok()
            .map(|e| e.error)
            .filter(|e| !e.code.is_empty())
    }

    /// The code, when this build knows it.
    pub fn known(&self) -> Option<ErrorCode> {
        self.code.parse().ok()
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case_and_parse_back() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "duplicate {code}");
            assert!(
                code.as_str()
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_')
            );
            assert_eq!(code.as_str().parse::<ErrorCode>(), Ok(*code));
        }
        assert_eq!("no_such_code".parse::<ErrorCode>(), Err(UnknownCode));
    }

    #[test]
    fn wire_errors_parse_with_and_without_details() {
        let e = WireError::parse(
            br#"{"error":{"code":"approval_required","message":"ask","details":{"excess":[]}}}"#,
        )
        .expect("a coded body");
        assert_eq!(e.known(), Some(ErrorCode::ApprovalRequired));
        assert_eq!(e.message, "ask");
        assert!(e.details.is_some());

        let e = WireError::parse(br#"{"error":{"code":"from_a_newer_server"}}"#).expect("coded");
        assert_eq!(e.known(), None);
        assert_eq!(e.message, "");
    }

    #[test]
    fn other_bodies_are_not_wire_errors() {
        for body in [
            &b""[..],
            b"<html>502 Bad Gateway</html>",
            b"{}",
            br#"{"error":"flat string"}"#,
            br#"{"error":{"code":""}}"#,
            br#"{"error":{"message":"no code"}}"#,
        ] {
            assert_eq!(
                WireError::parse(body),
                None,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}

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
use http::{HeaderMap, HeaderValue, header};
use serde::Serialize;

pub use keymesh_proto::error::{ErrorCode, UnknownCode, WireError};

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
    use http::StatusCode;
    use http_body_util::BodyExt;

    /// What a service sends is what every client reads (`WireError`), details included.
    #[tokio::test]
    async fn clients_read_the_body_services_send() {
        let err = ApiError::with_message(ErrorCode::ApprovalRequired, "ask a reviewer")
            .with_details(serde_json::json!({"above_ceiling": []}));
        let body = err
            .into_response()
            .into_body()
            .collect()
            .await
            .expect("body");
        let wire = WireError::parse(&body.to_bytes()).expect("a coded body");
        assert_eq!(wire.known(), Some(ErrorCode::ApprovalRequired));
        assert_eq!(wire.message, "ask a reviewer");
        assert_eq!(wire.details, Some(serde_json::json!({"above_ceiling": []})));
    }

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
    fn error_docs_are_in_sync() {
        crate::docs::assert_doc_in_sync("docs/errors.md", &render_error_docs());
    }
}

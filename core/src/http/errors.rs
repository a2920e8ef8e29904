//! Make every error response coded: the HTTP stack's own refusals (unknown route, wrong method,
//! body too large, extractor rejections) arrive as plain text or empty bodies; this maps them to
//! the one JSON shape. Also the request deadline and the panic handler.

use std::{any::Any, time::Duration};

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http::{StatusCode, header};

use crate::error::{ApiError, ErrorCode};

/// The code for a bare error status produced by the stack rather than a handler.
fn code_for(status: StatusCode) -> ErrorCode {
    match status {
        StatusCode::BAD_REQUEST => ErrorCode::MalformedRequest,
        StatusCode::UNAUTHORIZED => ErrorCode::Unauthorized,
        StatusCode::FORBIDDEN => ErrorCode::Forbidden,
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
        StatusCode::UNPROCESSABLE_ENTITY => ErrorCode::InvalidRequest,
        StatusCode::TOO_MANY_REQUESTS => ErrorCode::RateLimited,
        StatusCode::SERVICE_UNAVAILABLE => ErrorCode::Unavailable,
        s if s.is_client_error() => ErrorCode::MalformedRequest,
        _ => ErrorCode::Internal,
    }
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// Set by a handler whose error response is already coded in another form (an HTML page for
/// a person, with the code shown in it): the header carries the code, the body is kept.
pub const ERROR_CODE_HEADER: http::HeaderName = http::HeaderName::from_static("keymesh-error-code");

/// Middleware: replace any non-JSON error body with the coded body for its status, keeping
/// headers such as `Allow` and `Retry-After`.
pub async fn coded_errors(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || is_json(&response)
        || response.headers().contains_key(ERROR_CODE_HEADER)
    {
        return response;
    }
    let (mut parts, _body) = response.into_parts();
    let coded = ApiError::new(code_for(status)).into_response();
    let (coded_parts, body) = coded.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.extend(coded_parts.headers);
    parts.extensions.extend(coded_parts.extensions);
    Response::from_parts(parts, body)
}

/// Middleware: answer `503 timeout` when the handler has not produced a response in time.
pub async fn deadline(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(limit_secs = limit.as_secs(), "request timed out");
            ApiError::new(ErrorCode::Timeout).into_response()
        }
    }
}

/// Panic handler for `CatchPanicLayer`: log, answer a coded 500, reveal nothing.
pub fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("non-string panic payload");
    tracing::error!(panic = %detail, "handler panicked");
    ApiError::new(ErrorCode::Internal).into_response()
}

/// Fallback handler: `404 not_found`.
pub async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound)
}

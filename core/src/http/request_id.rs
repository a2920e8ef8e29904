//! Request ids and the access log: every request gets an id (the client's `x-request-id` when it
//! is well-formed, a fresh UUID otherwise), every log line inside it carries the id, and every
//! response echoes it.

use std::{sync::Arc, time::Instant};

use axum::{
    extract::{MatchedPath, Request},
    middleware::Next,
    response::Response,
};
use http::{HeaderName, HeaderValue};
use tracing::Instrument;

/// The header carrying the request id.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The id of the request being handled, available as a request extension.
#[derive(Clone, Debug)]
pub struct RequestId(pub Arc<str>);

/// Accept a client id only if it is short and made of safe characters, so it cannot inject
/// anything into logs or downstream headers.
fn acceptable(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Middleware: assign the id, open the request span, log the outcome, echo the id.
pub async fn observe(mut req: Request, next: Next) -> Response {
    let id: Arc<str> = req
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable(v))
        .map_or_else(|| uuid::Uuid::new_v4().to_string().into(), Arc::from);
    let header = HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    req.headers_mut()
        .insert(X_REQUEST_ID.clone(), header.clone());
    req.extensions_mut().insert(RequestId(id.clone()));

    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    // The path only: query strings may carry one-time tokens.
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.uri().path(),
    );
    let started = Instant::now();
    let mut response = next.run(req).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    // The refusal's code (`invalid_token`, `proof_invalid`, `revoked`...): a 401 storm's cause
    // shows in the logs, not only its status.
    let error_code = response
        .extensions()
        .get::<crate::ErrorCode>()
        .map(|code| code.as_str());
    span.in_scope(|| {
        let route = route.as_deref().unwrap_or(crate::metrics::UNMATCHED_ROUTE);
        if status >= 500 {
            tracing::warn!(status, error_code, latency_ms, route, "request finished");
        } else {
            tracing::info!(status, error_code, latency_ms, route, "request finished");
        }
    });
    response.headers_mut().insert(X_REQUEST_ID.clone(), header);
    response
}

#[cfg(test)]
mod tests {
    use super::acceptable;

    #[test]
    fn only_short_safe_ids_are_accepted() {
        assert!(acceptable("3f2a-b_c.d:e"));
        for bad in ["", "a b", "x\ny", "<script>", &"a".repeat(65)] {
            assert!(!acceptable(bad), "{bad:?}");
        }
    }
}

//! The HTTP stack every service runs behind: request ids and access log, security headers,
//! metrics, coded errors, CORS, client IP, rate limits, panic safety, deadline and body limit.

pub mod client_ip;
pub mod errors;
pub mod extract;
pub mod node;
pub mod rate_limit;
pub mod request_id;

use std::sync::Arc;

use axum::{
    Router,
    extract::{DefaultBodyLimit, Request, State},
    middleware::{Next, from_fn, from_fn_with_state},
    response::Response,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use ipnet::IpNet;
use tower::util::option_layer;
use tower_http::{
    catch_panic::CatchPanicLayer,
    cors::{AllowOrigin, CorsLayer},
    limit::RequestBodyLimitLayer,
};

use crate::{context::ServiceContext, metrics};

/// The `Authorization: Bearer` credential, if present and well-formed.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Wrap a service's API routes in the full stack and add `/health/*` and `/metrics`.
pub fn stack(ctx: &ServiceContext, api: Router) -> Router {
    let http = &ctx.config.common.http;
    let ops: Router = crate::openapi::ops().with_state(ctx.clone()).into();
    let trusted: Arc<[IpNet]> = http.trusted_proxies.clone().into();
    let headers = security_headers(ctx.config.serves_tls());
    Router::new()
        .merge(ops)
        .merge(api)
        .fallback(errors::not_found)
        .layer(DefaultBodyLimit::max(http.body_limit))
        .layer(RequestBodyLimitLayer::new(http.body_limit))
        .layer(from_fn_with_state(http.request_timeout, errors::deadline))
        .layer(CatchPanicLayer::custom(errors::panic_response))
        .layer(from_fn_with_state(
            ctx.limits.clone(),
            rate_limit::limit_by_ip,
        ))
        .layer(from_fn_with_state(trusted, client_ip::client_ip))
        .layer(option_layer(cors(&http.allowed_origins)))
        .layer(from_fn(errors::coded_errors))
        .layer(from_fn_with_state(ctx.metrics.clone(), metrics::record))
        .layer(from_fn_with_state(headers, apply_security_headers))
        .layer(from_fn(request_id::observe))
}

/// CORS for the listed origins only; `None` (no layer at all) when none are configured.
fn cors(origins: &[HeaderValue]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins.iter().cloned()))
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                request_id::X_REQUEST_ID.clone(),
            ])
            .expose_headers([
                request_id::X_REQUEST_ID.clone(),
                header::RETRY_AFTER,
                HeaderName::from_static("ratelimit-limit"),
                HeaderName::from_static("ratelimit-remaining"),
                HeaderName::from_static("ratelimit-reset"),
            ])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

type HeaderList = Arc<[(HeaderName, HeaderValue)]>;

/// Headers set on every response unless the handler set its own (e.g. a page with its own CSP).
fn security_headers(tls: bool) -> HeaderList {
    let mut list = vec![
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
            ),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            HeaderName::from_static("cross-origin-resource-policy"),
            HeaderValue::from_static("same-origin"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    ];
    if tls {
        list.push((
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=63072000; includeSubDomains"),
        ));
    }
    list.into()
}

async fn apply_security_headers(
    State(list): State<HeaderList>,
    req: Request,
    next: Next,
) -> Response {
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    for (name, value) in list.iter() {
        if !headers.contains_key(name) {
            headers.insert(name.clone(), value.clone());
        }
    }
    response
}

#[cfg(test)]
mod tests;

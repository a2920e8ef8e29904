//! `/health/live`, `/health/ready` and `/metrics`.

use std::time::Duration;

use axum::{
    Json,
    extract::State,
    response::{IntoResponse, Response},
};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use secrecy::ExposeSecret;
use serde_json::json;

use crate::{
    context::ServiceContext,
    error::{ApiError, ErrorCode},
    http::bearer_token,
    secret::secret_eq,
};

/// How long readiness waits for the database.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Liveness: the process answers. Never checks dependencies (a restart would not fix them).
pub async fn live() -> Json<serde_json::Value> {
    Json(json!({ "status": "live" }))
}

/// Readiness: the database answers and the service is not shutting down.
pub async fn ready(State(ctx): State<ServiceContext>) -> Response {
    if ctx.shutdown.is_cancelled() {
        return not_ready("shutting down", json!({ "shutdown": "draining" }));
    }
    let database = match tokio::time::timeout(READY_TIMEOUT, ctx.db.ping()).await {
        Ok(Ok(())) => "ok",
        Ok(Err(err)) => {
            tracing::warn!(error = %crate::error::error_chain(&err), "readiness: database check failed");
            "unreachable"
        }
        Err(_) => "timeout",
    };
    let checks = json!({ "database": database });
    if database != "ok" {
        return not_ready(&format!("database: {database}"), checks);
    }
    Json(json!({ "status": "ready", "service": ctx.config.name.as_str(), "checks": checks }))
        .into_response()
}

fn not_ready(message: &str, checks: serde_json::Value) -> Response {
    let code = ErrorCode::NotReady;
    (
        code.status(),
        Json(json!({ "error": { "code": code.as_str(), "message": message }, "checks": checks })),
    )
        .into_response()
}

/// Prometheus exposition; behind `METRICS_TOKEN` when one is configured.
pub async fn metrics(State(ctx): State<ServiceContext>, headers: HeaderMap) -> Response {
    if let Some(expected) = &ctx.config.common.http.metrics_token {
        let presented = bearer_token(&headers).unwrap_or_default();
        if !secret_eq(presented.as_bytes(), expected.expose_secret().as_bytes()) {
            let mut response = ApiError::new(ErrorCode::Unauthorized).into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        ctx.metrics.render(),
    )
        .into_response()
}

//! `/health/live`, `/health/ready`, `/version` and `/metrics`.

use std::{
    collections::BTreeMap,
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use axum::{
    Json,
    extract::State,
    response::{IntoResponse, Response},
};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use secrecy::ExposeSecret;

use crate::{
    context::ServiceContext,
    error::{ApiError, ErrorCode, ErrorObject},
    http::bearer_token,
    secret::secret_eq,
};

/// How long readiness waits for the database.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Conditions of a service's own that readiness reports beside the database (the relay's
/// revocation feed, say). Cheap to clone; every clone shares the list.
#[derive(Clone, Default)]
pub struct ReadyChecks(Arc<RwLock<Vec<ReadyCheck>>>);

/// `Ok(state)` when ready, `Err(state)` when not; the state is reported either way.
type ReadyCheck = (
    &'static str,
    Box<dyn Fn() -> Result<&'static str, &'static str> + Send + Sync>,
);

impl ReadyChecks {
    /// Report `name` in `checks`; the service is not ready while `check` returns `Err`.
    pub fn add(
        &self,
        name: &'static str,
        check: impl Fn() -> Result<&'static str, &'static str> + Send + Sync + 'static,
    ) {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push((name, Box::new(check)));
    }

    /// Every check's state, and the first that fails.
    fn run(&self, checks: &mut Checks) -> Option<String> {
        let mut failed = None;
        for (name, check) in self.0.read().unwrap_or_else(PoisonError::into_inner).iter() {
            let state = check().unwrap_or_else(|state| {
                failed.get_or_insert_with(|| format!("{name}: {state}"));
                state
            });
            checks.insert(name, state);
        }
        failed
    }
}

impl std::fmt::Debug for ReadyChecks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(name, _)| *name)
            .collect();
        f.debug_tuple("ReadyChecks").field(&names).finish()
    }
}

/// Liveness: the process answers.
///
/// Never checks dependencies (a restart would not fix them). Not rate limited.
#[utoipa::path(
    get,
    path = "/health/live",
    operation_id = "health_live",
    tag = "operations",
    responses((status = 200, description = "The process answers.", body = LiveBody)),
)]
pub async fn live() -> Json<LiveBody> {
    Json(LiveBody { status: "live" })
}

/// `GET /health/live`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct LiveBody {
    /// Always `live`.
    pub status: &'static str,
}

/// The running build: which service, its version and the commit it was built from.
///
/// The same as `keymesh_build_info`; for upgrade checks and support. Not rate limited.
#[utoipa::path(
    get,
    path = "/version",
    operation_id = "version",
    tag = "operations",
    responses((status = 200, description = "The running build.", body = VersionBody)),
)]
pub async fn version(State(ctx): State<ServiceContext>) -> Json<VersionBody> {
    Json(VersionBody {
        service: ctx.config.name.as_str(),
        version: crate::build::VERSION,
        commit: crate::build::commit(),
    })
}

/// `GET /version`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct VersionBody {
    /// `management`, `vault` or `relay`.
    pub service: &'static str,
    /// The Keymesh version, e.g. `0.1.0`.
    pub version: &'static str,
    /// The git commit the binary was built from, or `unknown`.
    pub commit: &'static str,
}

/// Readiness: the database answers, the service's own checks pass and it is not shutting down.
///
/// Besides the database, the service's own checks (the relay's `revocation_feed`, say). Not
/// rate limited.
#[utoipa::path(
    get,
    path = "/health/ready",
    operation_id = "health_ready",
    tag = "operations",
    responses(
        (status = 200, body = ReadyBody),
        (status = 503, body = NotReadyBody, description = "`not_ready`."),
    ),
)]
pub async fn ready(State(ctx): State<ServiceContext>) -> Response {
    let mut checks = Checks::new();
    if ctx.shutdown.is_cancelled() {
        checks.insert("shutdown", "draining");
        return not_ready("shutting down", checks);
    }
    let database = match tokio::time::timeout(READY_TIMEOUT, ctx.db.ping()).await {
        Ok(Ok(())) => "ok",
        Ok(Err(err)) => {
            tracing::warn!(error = %crate::error::error_chain(&err), "readiness: database check failed");
            "unreachable"
        }
        Err(_) => "timeout",
    };
    checks.insert("database", database);
    if database != "ok" {
        return not_ready(&format!("database: {database}"), checks);
    }
    if let Some(failed) = ctx.ready_checks.run(&mut checks) {
        return not_ready(&failed, checks);
    }
    Json(ReadyBody {
        status: "ready",
        service: ctx.config.name.as_str(),
        checks,
    })
    .into_response()
}

/// Each readiness check's state, by name.
type Checks = BTreeMap<&'static str, &'static str>;

/// `GET /health/ready`: ready.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ReadyBody {
    /// Always `ready`.
    pub status: &'static str,
    /// `management`, `vault` or `relay`.
    pub service: &'static str,
    /// Each check's state: `database` is `ok`; the service's own checks (the relay's
    /// `revocation_feed`, say) are theirs.
    #[schema(value_type = BTreeMap<String, String>)]
    pub checks: Checks,
}

/// `GET /health/ready`: not ready. The coded error body plus each check's state.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct NotReadyBody<'a> {
    /// `not_ready`, and which check failed.
    pub error: ErrorObject<'a>,
    /// Each check's state (`database`: `ok`, `unreachable` or `timeout`; `shutdown`:
    /// `draining`; the service's own checks).
    #[schema(value_type = BTreeMap<String, String>)]
    pub checks: Checks,
}

fn not_ready(message: &str, checks: Checks) -> Response {
    let code = ErrorCode::NotReady;
    let body = NotReadyBody {
        error: ErrorObject {
            code: code.as_str(),
            message,
            details: None,
        },
        checks,
    };
    (code.status(), Json(body)).into_response()
}

/// Prometheus metrics (OpenMetrics text).
///
/// Behind `METRICS_TOKEN` when one is configured. Not rate limited.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "operations",
    security((), ("metrics_token" = [])),
    responses(
        (status = 200, description = "The metrics.", body = String, content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8"),
        (status = 401, description = "`unauthorized`: `METRICS_TOKEN` is configured and was not presented.", body = crate::error::ErrorBody),
    ),
)]
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

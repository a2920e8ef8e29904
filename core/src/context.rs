//! What every running service holds: its configuration, database, metrics, rate limits and the
//! shutdown signal; and the server loop with graceful shutdown.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    config::ServiceConfig,
    http::rate_limit::RateLimits,
    metrics::Metrics,
    storage::{Db, StorageError},
};

/// Shared state of one running service. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ServiceContext {
    /// Loaded configuration.
    pub config: Arc<ServiceConfig>,
    /// The service's own database.
    pub db: Db,
    /// The service's metrics registry.
    pub metrics: Arc<Metrics>,
    /// IP and principal rate limits.
    pub limits: Arc<RateLimits>,
    /// Cancelled when the process starts shutting down.
    pub shutdown: CancellationToken,
}

impl ServiceContext {
    /// Open the database (checking ownership and migrating) and build the shared state.
    pub async fn open(
        config: ServiceConfig,
        shutdown: CancellationToken,
    ) -> Result<Self, StorageError> {
        let db = Db::open_for(config.name, &config.database_url).await?;
        Ok(Self::with_db(config, db, shutdown))
    }

    /// Build the shared state around an already opened database.
    pub fn with_db(config: ServiceConfig, db: Db, shutdown: CancellationToken) -> Self {
        let http = &config.common.http;
        let limits = RateLimits::new(http.ip_rate, http.principal_rate);
        limits.spawn_janitor(shutdown.clone());
        Self {
            metrics: Metrics::new(config.name),
            limits,
            db,
            shutdown,
            config: Arc::new(config),
        }
    }

    /// The service's routes inside the common HTTP stack.
    pub fn router(&self, api: Router) -> Router {
        crate::http::stack(self, api)
    }
}

/// Serve until `shutdown` is cancelled; then stop accepting, let in-flight requests finish for
/// at most `grace`, and return.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    grace: Duration,
) -> std::io::Result<()> {
    let server = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let grace_expired = async {
        shutdown.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        result = server => result,
        () = grace_expired => {
            tracing::warn!(grace_secs = grace.as_secs(), "in-flight requests did not finish within the grace period");
            Ok(())
        }
    }
}

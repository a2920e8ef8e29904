//! What every running service holds: its configuration, database, metrics, rate limits and the
//! shutdown signal; and the server loop with graceful shutdown.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    serve::{Listener, ListenerExt},
};
#[cfg(doc)]
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    config::ServiceConfig,
    health::ReadyChecks,
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
    /// The service's own readiness conditions, beside the database.
    pub ready_checks: ReadyChecks,
}

impl ServiceContext {
    /// A proof-of-possession replay cache whose per-node quota is what the principal rate limit
    /// lets one node send within the proof window.
    pub fn replay_cache(&self) -> crate::capability::pop::ReplayCache {
        let rate = self.config.common.http.principal_rate;
        crate::capability::pop::ReplayCache::for_rate(rate.per_second.get(), rate.burst.get())
    }

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
        let limits = RateLimits::new(http.ip_rate, http.principal_rate, http.ipv6_prefix);
        limits.spawn_janitor(shutdown.clone());
        Self {
            metrics: Metrics::new(config.name),
            limits,
            db,
            shutdown,
            ready_checks: ReadyChecks::default(),
            config: Arc::new(config),
        }
    }

    /// The service's routes inside the common HTTP stack.
    pub fn router(&self, api: Router) -> Router {
        crate::http::stack(self, api)
    }
}

/// Serve until `shutdown` is cancelled; then stop accepting, let in-flight requests finish for
/// at most `grace`, and return. `listener` is a [`TcpListener`] or a
/// [`TlsListener`](crate::tls::TlsListener); handlers see the peer as `ConnectInfo<SocketAddr>`
/// either way.
pub async fn serve<L>(
    listener: L,
    router: Router,
    shutdown: CancellationToken,
    grace: Duration,
) -> std::io::Result<()>
where
    L: Listener<Addr = SocketAddr>,
{
    // `tap_io` gives every listener the same `ConnectInfo<SocketAddr>`.
    let server = axum::serve(
        listener.tap_io(|_| ()),
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::{Router, routing::get};
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::{TcpListener, TcpStream},
    };
    use tokio_util::sync::CancellationToken;

    use super::serve;

    #[tokio::test]
    async fn shutdown_lets_in_flight_requests_finish_then_stops_accepting() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = Router::new().route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                "finished"
            }),
        );
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            router,
            shutdown.clone(),
            Duration::from_secs(5),
        ));

        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .expect("write");
        tokio::time::sleep(Duration::from_millis(50)).await;
        shutdown.cancel();

        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.ends_with("finished"), "{response}");
        server.await.expect("join").expect("serve returns Ok");
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "no longer accepting"
        );
    }
}

//! Starting services: open the database, bind, serve until shutdown, close the pool.

use std::net::SocketAddr;

use axum::Router;
use keymesh_core::{
    ServiceContext,
    config::{ServiceConfig, ServiceName},
    serve,
};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

/// A service that is listening.
pub struct Running {
    /// Which service.
    pub name: ServiceName,
    /// The bound address (the real port when configured with port 0).
    pub addr: SocketAddr,
    /// Resolves when the server has stopped and its pool is closed.
    pub task: JoinHandle<std::io::Result<()>>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What runs behind the common stack.
pub enum Service {
    /// The group vault.
    Vault(Box<keymesh_vault::VaultConfig>),
    /// The zero-knowledge relay.
    Relay(Box<keymesh_relay::RelayConfig>),
    /// A service whose issue has not landed yet: the common stack still serves `/health/*`
    /// and `/metrics` for it.
    Placeholder(Box<ServiceConfig>),
}

impl Service {
    /// The shared service settings.
    pub fn config(&self) -> &ServiceConfig {
        match self {
            Service::Vault(v) => &v.service,
            Service::Relay(r) => &r.service,
            Service::Placeholder(c) => c,
        }
    }
}

/// Open, bind and start serving one service.
pub async fn start(service: Service, shutdown: CancellationToken) -> Result<Running, BoxError> {
    let config = service.config().clone();
    let name = config.name;
    let listen = config.listen;
    let grace = config.common.http.shutdown_grace;
    let ctx = ServiceContext::open(config, shutdown.clone()).await?;
    let router = match service {
        Service::Vault(vault) => keymesh_vault::router(ctx.clone(), *vault).await?.0,
        Service::Relay(relay) => keymesh_relay::router(ctx.clone(), *relay).await?.0,
        Service::Placeholder(_) => ctx.router(Router::new()),
    };
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen} for the {name} service: {e}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(service = name.as_str(), %addr, database = %ctx.config.database_url, "listening");
    let task = tokio::spawn(async move {
        let result = serve(listener, router, shutdown, grace).await;
        ctx.db.close().await;
        tracing::info!(service = name.as_str(), "stopped");
        result
    });
    Ok(Running { name, addr, task })
}

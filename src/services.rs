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

/// The service's own routes. Each service's issue replaces its empty router; until then the
/// common stack still serves `/health/*` and `/metrics` for it.
fn api_routes(_ctx: &ServiceContext) -> Router {
    Router::new()
}

/// Open, bind and start serving one service.
pub async fn start(
    config: ServiceConfig,
    shutdown: CancellationToken,
) -> Result<Running, Box<dyn std::error::Error + Send + Sync>> {
    let name = config.name;
    let listen = config.listen;
    let grace = config.common.http.shutdown_grace;
    let ctx = ServiceContext::open(config, shutdown.clone()).await?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen} for the {name} service: {e}"))?;
    let addr = listener.local_addr()?;
    let router = ctx.router(api_routes(&ctx));
    tracing::info!(service = name.as_str(), %addr, database = %ctx.config.database_url, "listening");
    let task = tokio::spawn(async move {
        let result = serve(listener, router, shutdown, grace).await;
        ctx.db.close().await;
        tracing::info!(service = name.as_str(), "stopped");
        result
    });
    Ok(Running { name, addr, task })
}

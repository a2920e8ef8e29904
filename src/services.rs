//! Starting services: open the database, bind, serve until shutdown, close the pool.

use keymesh_core::{
    ServiceContext,
    config::{ServiceConfig, ServiceName},
    serve,
    tls::ServerTls,
};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

/// A service that is listening.
pub struct Running {
    /// Which service.
    pub name: ServiceName,
    /// `http://ADDR` or, when it serves TLS itself, `https://ADDR` (the bound address: the
    /// real port when configured with port 0).
    pub url: String,
    /// Resolves when the server has stopped and its pool is closed.
    pub task: JoinHandle<std::io::Result<()>>,
    /// Management's state (for `keymesh dev` to bootstrap its admin).
    pub management: Option<keymesh_management::ManagementState>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What runs behind the common stack.
pub enum Service {
    /// The group vault.
    Vault(Box<keymesh_vault::VaultConfig>),
    /// The zero-knowledge relay.
    Relay(Box<keymesh_relay::RelayConfig>),
    /// Users, sessions, approvals, audit.
    Management(Box<keymesh_management::ManagementConfig>),
}

impl Service {
    /// The shared service settings.
    pub fn config(&self) -> &ServiceConfig {
        match self {
            Service::Vault(v) => &v.service,
            Service::Relay(r) => &r.service,
            Service::Management(m) => &m.service,
        }
    }

    fn config_mut(&mut self) -> &mut ServiceConfig {
        match self {
            Service::Vault(v) => &mut v.service,
            Service::Relay(r) => &mut r.service,
            Service::Management(m) => &mut m.service,
        }
    }
}

/// Bind, open and start serving one service.
pub async fn start(mut service: Service, shutdown: CancellationToken) -> Result<Running, BoxError> {
    let (name, listen) = (service.config().name, service.config().listen);
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen} for the {name} service: {e}"))?;
    let addr = listener.local_addr()?;
    // A public URL derived from a port-0 listen address names the port actually bound (links
    // in mail and the banner must work).
    let scheme = if service.config().tls.is_some() {
        "https"
    } else {
        "http"
    };
    let public = &mut service.config_mut().public_url;
    if public.port_u16() == Some(0) && public.host() == Some(&addr.ip().to_string()) {
        *public = format!("{scheme}://{addr}").parse()?;
    }
    let config = service.config().clone();
    let grace = config.common.http.shutdown_grace;
    let ctx = ServiceContext::open(config, shutdown.clone()).await?;
    // Read the certificate before anything is served: a bad file stops the start, named.
    let tls = match &ctx.config.tls {
        Some(files) => {
            let tls = ServerTls::load(files.clone(), &ctx.metrics)?;
            tls.watch(name.as_str(), shutdown.clone());
            Some(tls)
        }
        None => None,
    };
    let mut management = None;
    let router = match service {
        Service::Vault(vault) => keymesh_vault::router(ctx.clone(), *vault).await?.0,
        Service::Relay(relay) => keymesh_relay::router(ctx.clone(), *relay).await?.0,
        Service::Management(config) => {
            let (router, state) = keymesh_management::router(ctx.clone(), *config)?;
            management = Some(state);
            router
        }
    };
    tracing::info!(service = name.as_str(), %addr, scheme, database = %ctx.config.database_url, "listening");
    let task = tokio::spawn(async move {
        let result = match tls {
            Some(tls) => {
                let listener = tls.listen(listener, shutdown.clone());
                serve(listener, router, shutdown, grace).await
            }
            None => serve(listener, router, shutdown, grace).await,
        };
        ctx.db.close().await;
        tracing::info!(service = name.as_str(), "stopped");
        result
    });
    Ok(Running {
        name,
        url: format!("{scheme}://{addr}"),
        task,
        management,
    })
}

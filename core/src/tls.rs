//! TLS served by Keymesh itself (rustls), and the trust used for calls between services.
//!
//! A service with `*_TLS_CERT_FILE` and `*_TLS_KEY_FILE` set answers HTTPS only (TLS 1.2 and
//! 1.3, rustls' safe defaults, HTTP/1.1 over ALPN so WebSockets keep working). The files are read
//! at start (a bad file stops the start, naming the setting) and again on `SIGHUP` or when the
//! files change: a renewed certificate is picked up without a restart, and a bad renewal is
//! logged and leaves the old one serving. `keymesh_tls_certificate_expiry_timestamp_seconds` says when the served certificate
//! ends.
//!
//! Every handshake runs in its own task with a deadline, at most [`MAX_HANDSHAKES`] at a time,
//! so a slow or silent client holds neither the accept loop nor unbounded memory.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use prometheus_client::metrics::gauge::Gauge;
use rustls::{
    ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Semaphore, mpsc},
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Handshakes in progress at once; more connections wait in the kernel's backlog.
pub const MAX_HANDSHAKES: usize = 512;
/// A client that has not finished its handshake by then is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the certificate files are checked for a renewal.
pub const FILE_CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// Where a service's certificate chain and private key are (PEM files).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// The leaf's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The settings that named them, for error messages.
    pub settings: (&'static str, &'static str),
}

/// Why a certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or held no PEM object of the kind needed.
    #[error("{setting} ({path}): {reason}")]
    File {
        /// The setting naming the file.
        setting: &'static str,
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The key does not fit the certificate, or rustls refused them.
    #[error("{cert_setting} and {key_setting} cannot be served together: {reason}")]
    Pair {
        /// The certificate setting.
        cert_setting: &'static str,
        /// The key setting.
        key_setting: &'static str,
        /// What rustls said.
        reason: String,
    },
}

/// The one crypto provider Keymesh's TLS uses (the one reqwest's rustls uses too).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A loaded certificate with its expiry.
#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    not_after: i64,
}

fn file_error(setting: &'static str, path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        setting,
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

impl TlsFiles {
    fn load(&self, provider: &CryptoProvider) -> Result<Loaded, TlsError> {
        let (cert_setting, key_setting) = self.settings;
        let chain = CertificateDer::pem_file_iter(&self.cert)
            .map_err(|e| file_error(cert_setting, &self.cert, e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| file_error(cert_setting, &self.cert, e))?;
        let leaf = chain
            .first()
            .ok_or_else(|| file_error(cert_setting, &self.cert, "no CERTIFICATE in the file"))?;
        let not_after = x509_parser::parse_x509_certificate(leaf)
            .map_err(|e| file_error(cert_setting, &self.cert, e))?
            .1
            .validity()
            .not_after
            .timestamp();
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| file_error(key_setting, &self.key, e))?;
        let key = CertifiedKey::from_der(chain, key, provider).map_err(|e| TlsError::Pair {
            cert_setting,
            key_setting,
            reason: e.to_string(),
        })?;
        Ok(Loaded {
            key: Arc::new(key),
            not_after,
        })
    }
}

/// The certificate being served; replaced on reload.
#[derive(Debug)]
struct Resolver(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self
                .0
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        ))
    }
}

/// A service's TLS: the acceptor, and what a reload needs.
#[derive(Clone)]
pub struct ServerTls {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    resolver: Arc<Resolver>,
    expiry: Gauge,
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.files)
            .field("expiry", &self.expiry.get())
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Read the files and build the acceptor; register the expiry gauge.
    pub fn load(files: TlsFiles, metrics: &Metrics) -> Result<Self, TlsError> {
        let provider = provider();
        let loaded = files.load(&provider)?;
        let resolver = Arc::new(Resolver(RwLock::new(loaded.key)));
        let (cert_setting, key_setting) = files.settings;
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Pair {
                cert_setting,
                key_setting,
                reason: e.to_string(),
            })?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        // HTTP/1.1 only: WebSocket upgrades need it (no RFC 8441 on the relay).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let expiry = Gauge::default();
        expiry.set(loaded.not_after);
        metrics.register(
            "keymesh_tls_certificate_expiry_timestamp_seconds",
            "When the certificate this service serves expires (Unix time)",
            expiry.clone(),
        );
        Ok(Self {
            files,
            provider,
            resolver,
            expiry,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Read the files again; on success serve the new certificate to new connections.
    pub fn reload(&self) -> Result<(), TlsError> {
        let loaded = self.files.load(&self.provider)?;
        *self
            .resolver
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = loaded.key;
        self.expiry.set(loaded.not_after);
        Ok(())
    }

    /// When the files were last modified (a renewal replaces them).
    fn stamp(&self) -> Option<(std::time::SystemTime, std::time::SystemTime)> {
        let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
        Some((modified(&self.files.cert)?, modified(&self.files.key)?))
    }

    /// Reload on every `SIGHUP`, and when the files change (checked every
    /// [`FILE_CHECK_INTERVAL`]: Kubernetes updates a mounted Secret without a signal), until
    /// `shutdown`.
    pub fn watch(&self, service: &'static str, shutdown: CancellationToken) {
        let tls = self.clone();
        tokio::spawn(async move {
            let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .inspect_err(|e| {
                    tracing::warn!(service, error = %e, "SIGHUP cannot be watched; certificates are re-read when their files change");
                })
                .ok();
            let mut check = tokio::time::interval(FILE_CHECK_INTERVAL);
            check.tick().await;
            let mut stamp = tls.stamp();
            loop {
                let hangup = async {
                    match hup.as_mut() {
                        Some(hup) => hup.recv().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = hangup => {}
                    _ = check.tick() => {
                        let now = tls.stamp();
                        if now == stamp {
                            continue;
                        }
                        stamp = now;
                    }
                }
                match tls.reload() {
                    Ok(()) => tracing::info!(
                        service,
                        expires = tls.expiry.get(),
                        "TLS certificate reloaded"
                    ),
                    Err(e) => tracing::error!(
                        service,
                        error = %e,
                        "TLS certificate reload failed; still serving the previous one"
                    ),
                }
            }
        });
    }

    /// Accept TCP connections and hand over the ones whose handshake completes.
    pub fn listen(&self, tcp: TcpListener, shutdown: CancellationToken) -> TlsListener {
        let local = tcp.local_addr().ok();
        let (tx, rx) = mpsc::channel(64);
        let acceptor = self.acceptor.clone();
        tokio::spawn(accept_loop(tcp, acceptor, tx, shutdown));
        TlsListener { rx, local }
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = tcp.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (acceptor, tx) = (acceptor.clone(), tx.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

/// Connections past their TLS handshake, for `axum::serve`.
#[derive(Debug)]
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: Option<SocketAddr>,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(pair) => pair,
            // The accept loop stopped (shutdown): accept nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.local
            .ok_or_else(|| std::io::Error::other("the listener has no local address"))
    }
}

/// The certificate authorities trusted for calls to other Keymesh services (`TLS_CA_FILE`).
#[derive(Clone, Debug)]
pub struct TrustedCas(Vec<reqwest::Certificate>);

impl TrustedCas {
    /// Read a PEM bundle; it must hold at least one certificate. The error names the file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let at = |reason: &dyn std::fmt::Display| format!("{}: {reason}", path.display());
        let pem = std::fs::read(path).map_err(|e| at(&e))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| at(&e))?;
        if certs.is_empty() {
            return Err(at(&"no CERTIFICATE in the file"));
        }
        Ok(Self(certs))
    }
}

/// A client builder for calls to another Keymesh service: trusts only `cas` when given, else
/// the platform's roots. Never a way to turn verification off.
pub fn client_builder(cas: Option<&TrustedCas>) -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder();
    match cas {
        Some(TrustedCas(certs)) => builder.tls_certs_only(certs.iter().cloned()),
        None => builder,
    }
}

#[cfg(test)]
mod tests;

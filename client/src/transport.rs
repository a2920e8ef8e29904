//! How a node reaches the services: TLS it verifies, and plain HTTP only where nothing can
//! listen in.
//!
//! - **Trust.** By default the platform's verifier (the system store; on Linux it honours
//!   `SSL_CERT_FILE`). [`Transport::with_ca_file`] trusts exactly the CAs in a PEM bundle
//!   instead: a private CA, without touching the system store. There is no way to turn
//!   verification off.
//! - **Plain HTTP.** `http://` and `ws://` reach loopback only (`localhost`, `127.0.0.0/8`,
//!   `::1`). Anywhere else the token, every proof of possession and the key statements would
//!   cross the network in the clear (readable and alterable by anyone on the path), so a
//!   non-loopback `http://` URL is refused unless [`Transport::allow_plain_http`] says
//!   otherwise, and then a warning naming the risk is logged to standard error once per host.
//!
//! One rustls configuration (aws-lc-rs) serves the HTTP calls (reqwest) and the relay's
//! WebSocket (tokio-tungstenite).

use std::{
    collections::HashSet,
    error::Error as StdError,
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, OnceLock, PoisonError},
};

use reqwest::Url;
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, pem::PemObject},
};

/// Why a transport cannot be set up, or a URL may not be used with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The CA bundle cannot be read or holds no usable certificate.
    #[error("CA file {path}: {reason}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The TLS configuration cannot be built (no usable platform verifier).
    #[error("TLS cannot be set up: {0}")]
    Setup(String),
    /// A plain-HTTP URL to a host that is not loopback, without the explicit permission.
    #[error(
        "{0} is plain HTTP to a host that is not loopback: tokens and proofs would cross the \
         network unencrypted; use https:// (or allow plain HTTP explicitly)"
    )]
    PlainHttp(String),
}

impl TransportError {
    /// Stable code for logs and `--json` output.
    pub fn code(&self) -> &'static str {
        match self {
            Self::CaFile { .. } => "ca_file",
            Self::Setup(_) => "tls_setup",
            Self::PlainHttp(_) => "plain_http_refused",
        }
    }
}

/// Whose certificates a client accepts.
#[derive(Clone, Default)]
enum Trust {
    /// The platform's verifier and store.
    #[default]
    Platform,
    /// Exactly the roots of a CA file, built into a configuration once.
    Roots {
        path: PathBuf,
        config: Arc<ClientConfig>,
    },
}

/// TLS trust and the plain-HTTP rule for a node's connections. The default trusts the platform
/// and allows plain HTTP to loopback only.
#[derive(Clone, Default)]
pub struct Transport {
    trust: Trust,
    plain_http_anywhere: bool,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let trust = match &self.trust {
            Trust::Platform => "platform".to_owned(),
            Trust::Roots { path, .. } => format!("CA file {}", path.display()),
        };
        f.debug_struct("Transport")
            .field("trust", &trust)
            .field("plain_http_anywhere", &self.plain_http_anywhere)
            .finish()
    }
}

impl Transport {
    /// Trust exactly the CA certificates in the PEM file at `path` (not the platform's).
    pub fn with_ca_file(path: &Path) -> Result<Self, TransportError> {
        let ca_error = |reason: String| TransportError::CaFile {
            path: path.to_owned(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| ca_error(e.to_string()))?;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| ca_error(format!("not PEM certificates ({e})")))?;
            roots
                .add(cert)
                .map_err(|e| ca_error(format!("a certificate is unusable as a CA: {e}")))?;
        }
        if roots.is_empty() {
            return Err(ca_error("it holds no certificate".to_owned()));
        }
        let config = builder()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            trust: Trust::Roots {
                path: path.to_owned(),
                config: Arc::new(config),
            },
            plain_http_anywhere: false,
        })
    }

    /// Allow `http://` and `ws://` to any host. Each such host is named in a warning on
    /// standard error the first time it is used.
    #[must_use]
    pub fn allow_plain_http(mut self) -> Self {
        self.plain_http_anywhere = true;
        self
    }

    /// Check a base URL against the plain-HTTP rule (warning when it is allowed only by
    /// [`Transport::allow_plain_http`]).
    pub fn check_url(&self, url: &Url) -> Result<(), TransportError> {
        if url.scheme() != "http" || url.host().is_none_or(is_loopback) {
            return Ok(());
        }
        if !self.plain_http_anywhere {
            return Err(TransportError::PlainHttp(url.as_str().to_owned()));
        }
        warn_plain_http(url);
        Ok(())
    }

    /// The rustls client configuration (aws-lc-rs): the platform's built once per process, a CA
    /// file's when it was read.
    pub fn tls_config(&self) -> Result<Arc<ClientConfig>, TransportError> {
        match &self.trust {
            Trust::Platform => {
                static PLATFORM: OnceLock<Result<Arc<ClientConfig>, TransportError>> =
                    OnceLock::new();
                PLATFORM
                    .get_or_init(|| {
                        use rustls_platform_verifier::BuilderVerifierExt;
                        builder()?
                            .with_platform_verifier()
                            .map(|b| Arc::new(b.with_no_client_auth()))
                            .map_err(|e| TransportError::Setup(e.to_string()))
                    })
                    .clone()
            }
            Trust::Roots { config, .. } => Ok(Arc::clone(config)),
        }
    }

    /// A reqwest client builder using this transport's TLS, following no redirects (a
    /// redirect would carry a signed request somewhere it was not signed for).
    pub(crate) fn http_client(&self) -> Result<reqwest::ClientBuilder, TransportError> {
        Ok(reqwest::Client::builder()
            .use_preconfigured_tls((*self.tls_config()?).clone())
            .redirect(reqwest::redirect::Policy::none()))
    }
}

fn builder() -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>, TransportError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TransportError::Setup(e.to_string()))
}

fn is_loopback(host: url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(name) => name.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(ip) => IpAddr::V4(ip).is_loopback(),
        url::Host::Ipv6(ip) => IpAddr::V6(ip).is_loopback(),
    }
}

fn warn_plain_http(url: &Url) {
    static WARNED: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let host = url.host_str().unwrap_or_default().to_owned();
    let first = WARNED
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(host.clone());
    if first {
        eprintln!(
            "warning: plain HTTP to {host} (allowed explicitly): the node's token, its proofs of \
             possession and its key statements cross the network unencrypted, where anyone on \
             the path can read them and alter the answers; use https://"
        );
    }
}

/// When a connection failed because the server's certificate did not verify: why, in words
/// that say what to do. `None` for any other failure.
pub fn certificate_failure(err: &(dyn StdError + 'static)) -> Option<String> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(rustls::Error::InvalidCertificate(why)) = rustls_error(e) {
            return Some(format!(
                "the server's TLS certificate does not verify ({why:?}); if it is signed by a \
                 private CA, trust that CA (keymeshctl --ca-file, or KEYMESH_CA_FILE)"
            ));
        }
        next = e.source();
    }
    None
}

/// The rustls error `e` is, or carries inside (nested) `io::Error`s: their `source()` skips
/// the error they wrap, so the chain alone never reaches it.
fn rustls_error<'a>(mut e: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    loop {
        if let Some(found) = e.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        let inner = e.downcast_ref::<std::io::Error>()?.get_ref()?;
        e = inner;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_reaches_loopback_only_unless_allowed() {
        let strict = Transport::default();
        for ok in [
            "http://127.0.0.1:7801",
            "http://127.9.9.9",
            "http://localhost:7802/prefix",
            "http://LOCALHOST",
            "http://[::1]:7803",
            "https://relay.example",
            "https://10.0.0.5:7802",
        ] {
            let url = Url::parse(ok).expect("url");
            assert_eq!(strict.check_url(&url), Ok(()), "{ok}");
        }
        for refused in [
            "http://relay.example",
            "http://10.0.0.5:7802",
            "http://localhost.example",
            "http://[::2]",
            "http://0.0.0.0:7802",
        ] {
            let url = Url::parse(refused).expect("url");
            let err = strict.check_url(&url).expect_err(refused);
            assert_eq!(err.code(), "plain_http_refused");
            assert!(err.to_string().contains("unencrypted"), "{err}");
        }
        let lax = Transport::default().allow_plain_http();
        let url = Url::parse("http://relay.example").expect("url");
        assert_eq!(lax.check_url(&url), Ok(()));
    }

    #[test]
    fn ca_files_must_hold_certificates() {
        let dir = tempfile::tempdir().expect("dir");
        let missing = dir.path().join("missing.pem");
        let err = Transport::with_ca_file(&missing).expect_err("missing");
        assert_eq!(err.code(), "ca_file");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificates here\n").expect("write");
        let err = Transport::with_ca_file(&empty).expect_err("empty");
        assert!(err.to_string().contains("no certificate"), "{err}");
    }

    #[test]
    fn the_debug_form_names_the_trust_only() {
        let t = Transport::default().allow_plain_http();
        assert_eq!(
            format!("{t:?}"),
            "Transport { trust: \"platform\", plain_http_anywhere: true }"
        );
    }
}

//! Per-service settings and the loaded configuration of one service.

use std::{fmt, net::SocketAddr};

use http::Uri;

use super::{
    common::{COMMON_SETTINGS, CommonConfig, Environment},
    registry::{ConfigError, Setting, Source, production_guard},
};
use crate::{storage::DatabaseUrl, tls::TlsFiles};

/// The three Keymesh services. Each has its own settings, port, database and metrics label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceName {
    /// Users, sessions, approvals, audit.
    Management,
    /// Group vault and capability tokens.
    Vault,
    /// Zero-knowledge relay.
    Relay,
}

macro_rules! service_settings {
    ($module:ident, $prefix:literal, $name:literal, $listen:literal) => {
        #[doc = concat!("Settings of the ", $name, " service.")]
        pub mod $module {
            use super::Setting;
            #[doc = concat!("`", $prefix, "_LISTEN`.")]
            pub const LISTEN: Setting = Setting::value(
                concat!($prefix, "_LISTEN"),
                concat!("Address the ", $name, " HTTP server binds (HTTP and WebSocket share it)."),
            )
            .default($listen);
            #[doc = concat!("`", $prefix, "_DATABASE_URL`.")]
            pub const DATABASE_URL: Setting = Setting::value(
                concat!($prefix, "_DATABASE_URL"),
                concat!(
                    "`sqlite://PATH` or `postgres://...` for the ", $name,
                    " service's own database (never shared with another service)."
                ),
            )
            .default(concat!("sqlite://.keymesh/", $name, ".db"))
            .from_file()
            .required_in_production();
            #[doc = concat!("`", $prefix, "_PUBLIC_URL`.")]
            pub const PUBLIC_URL: Setting = Setting::value(
                concat!($prefix, "_PUBLIC_URL"),
                concat!(
                    "URL clients use to reach the ", $name,
                    " service; `https://` in production (enables HSTS). Default: `http://` + the listen address."
                ),
            )
            .required_in_production();
            #[doc = concat!("`", $prefix, "_TLS_CERT_FILE`.")]
            pub const TLS_CERT_FILE: Setting = Setting::value(
                concat!($prefix, "_TLS_CERT_FILE"),
                concat!(
                    "PEM certificate chain (leaf first) the ", $name,
                    " service serves HTTPS with; set together with `", $prefix,
                    "_TLS_KEY_FILE`. Unset: plain HTTP (TLS terminated in front). Re-read on SIGHUP."
                ),
            );
            #[doc = concat!("`", $prefix, "_TLS_KEY_FILE`.")]
            pub const TLS_KEY_FILE: Setting = Setting::value(
                concat!($prefix, "_TLS_KEY_FILE"),
                concat!(
                    "PEM private key of `", $prefix,
                    "_TLS_CERT_FILE`'s leaf certificate (keep it readable by the service only). Re-read on SIGHUP."
                ),
            );
            /// All settings of this service, in documentation order.
            pub const ALL: &[&Setting] = &[
                &LISTEN,
                &DATABASE_URL,
                &PUBLIC_URL,
                &TLS_CERT_FILE,
                &TLS_KEY_FILE,
            ];
        }
    };
}

service_settings!(management, "MANAGEMENT", "management", "127.0.0.1:7800");
service_settings!(vault, "VAULT", "vault", "127.0.0.1:7801");
service_settings!(relay, "RELAY", "relay", "127.0.0.1:7802");

impl ServiceName {
    /// All services, in start order.
    pub const ALL: [ServiceName; 3] = [Self::Management, Self::Vault, Self::Relay];

    /// Lower-case name used in metrics labels, file names and migrations directories.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Management => "management",
            Self::Vault => "vault",
            Self::Relay => "relay",
        }
    }

    /// This service's own settings (without the common ones).
    pub const fn settings(self) -> &'static [&'static Setting] {
        match self {
            Self::Management => management::ALL,
            Self::Vault => vault::ALL,
            Self::Relay => relay::ALL,
        }
    }

    fn listen_setting(self) -> &'static Setting {
        self.settings()[0]
    }

    /// The service's `*_DATABASE_URL` setting.
    pub fn database_setting(self) -> &'static Setting {
        self.settings()[1]
    }

    fn public_url_setting(self) -> &'static Setting {
        self.settings()[2]
    }

    fn tls_settings(self) -> (&'static Setting, &'static Setting) {
        (self.settings()[3], self.settings()[4])
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ServiceName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|name| name.as_str() == s)
            .ok_or_else(|| format!("unknown service {s:?}; expected management, vault or relay"))
    }
}

/// The loaded configuration of one service.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// Which service.
    pub name: ServiceName,
    /// Bind address.
    pub listen: SocketAddr,
    /// Its own database.
    pub database_url: DatabaseUrl,
    /// URL clients use.
    pub public_url: Uri,
    /// The certificate and key it serves HTTPS with, when it terminates TLS itself.
    pub tls: Option<TlsFiles>,
    /// Shared settings.
    pub common: CommonConfig,
}

impl ServiceConfig {
    /// Every setting that applies to this service: the common ones, then its own.
    pub fn all_settings(name: ServiceName) -> Vec<&'static Setting> {
        COMMON_SETTINGS
            .iter()
            .chain(name.settings())
            .copied()
            .collect()
    }

    /// Load one service's configuration; in production, run the guard over every setting first.
    pub fn load(
        name: ServiceName,
        source: &Source,
        default_env: Environment,
    ) -> Result<Self, ConfigError> {
        let common = CommonConfig::load(source, default_env)?;
        if common.environment.is_production() {
            production_guard(&Self::all_settings(name), source)?;
        }
        let listen_setting = name.listen_setting();
        let listen: SocketAddr = source.require(listen_setting)?;
        let database_url = Self::load_database_url(name, source, common.environment)?;
        let public_setting = name.public_url_setting();
        let raw_public = source
            .get(public_setting)?
            .unwrap_or_else(|| format!("http://{listen}"));
        let public_url = parse_public_url(&raw_public, &common, public_setting)?;
        let tls = load_tls_files(name, source)?;
        Ok(Self {
            name,
            listen,
            database_url,
            public_url,
            tls,
            common,
        })
    }

    /// Only the database URL, for `keymesh migrate` (which needs nothing else). In production it
    /// must be set explicitly.
    pub fn load_database_url(
        name: ServiceName,
        source: &Source,
        default_env: Environment,
    ) -> Result<DatabaseUrl, ConfigError> {
        let setting = name.database_setting();
        let environment = Environment::from_source(source, default_env)?;
        if environment.is_production() {
            production_guard(&[setting], source)?;
        }
        DatabaseUrl::parse(&source.require::<String>(setting)?).map_err(|reason| {
            ConfigError::Invalid {
                setting: setting.name,
                reason,
            }
        })
    }

    /// `true` when clients reach this service over TLS (HSTS and `Secure` cookies follow).
    pub fn serves_tls(&self) -> bool {
        self.public_url.scheme_str() == Some("https")
    }
}

fn load_tls_files(name: ServiceName, source: &Source) -> Result<Option<TlsFiles>, ConfigError> {
    let (cert_setting, key_setting) = name.tls_settings();
    match (source.get(cert_setting)?, source.get(key_setting)?) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(TlsFiles {
            cert: cert.into(),
            key: key.into(),
            settings: (cert_setting.name, key_setting.name),
        })),
        (Some(_), None) => Err(ConfigError::Invalid {
            setting: key_setting.name,
            reason: format!("must be set with {}", cert_setting.name),
        }),
        (None, Some(_)) => Err(ConfigError::Invalid {
            setting: cert_setting.name,
            reason: format!("must be set with {}", key_setting.name),
        }),
    }
}

fn parse_public_url(
    raw: &str,
    common: &CommonConfig,
    setting: &'static Setting,
) -> Result<Uri, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        setting: setting.name,
        reason,
    };
    let uri: Uri = raw
        .trim_end_matches('/')
        .parse()
        .map_err(|e| invalid(format!("{raw:?} is not a URL: {e}")))?;
    let host = uri
        .host()
        .ok_or_else(|| invalid(format!("{raw:?} has no host")))?;
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if common.environment.is_production() => Err(ConfigError::Production {
            setting: setting.name,
            reason: "must be an https:// URL (TLS may terminate at a proxy in front)".into(),
        }),
        Some("http") if common.allow_insecure_http || is_loopback_host(host) => Ok(uri),
        Some("http") => Err(invalid(format!(
            "{raw:?} is plain http on a non-loopback host; use https:// or set ALLOW_INSECURE_HTTP=true outside production"
        ))),
        _ => Err(invalid(format!(
            "{raw:?} must start with https:// or http://"
        ))),
    }
}

/// Check the URL of another service this one calls (`setting` names it): in production it is
/// `https://`, a loopback `http://`, or `http://` with `MESH_MTLS` set. Those calls carry
/// service credentials, capability tokens and the revocation feed.
pub fn check_service_url(
    url: &str,
    common: &CommonConfig,
    setting: &'static Setting,
) -> Result<(), ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        setting: setting.name,
        reason,
    };
    let uri: Uri = url
        .parse()
        .map_err(|e| invalid(format!("{url:?} is not a URL: {e}")))?;
    let host = uri
        .host()
        .ok_or_else(|| invalid(format!("{url:?} has no host")))?;
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http")
            if !common.environment.is_production()
                || common.mesh_mtls
                || is_loopback_host(host) =>
        {
            Ok(())
        }
        Some("http") => Err(ConfigError::Production {
            setting: setting.name,
            reason: "must be an https:// URL (or loopback): it carries service credentials and tokens. Set MESH_MTLS=true only if a service mesh's sidecars carry these calls over mutual TLS".into(),
        }),
        _ => Err(invalid(format!(
            "{url:?} must start with https:// or http://"
        ))),
    }
}

fn is_loopback_host(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Settings of `keymesh dev` itself: every service's settings, shared ones once.
#[derive(Debug)]
pub struct DevConfig;

impl DevConfig {
    /// All settings `keymesh dev` accepts.
    pub fn all_settings() -> Vec<&'static Setting> {
        COMMON_SETTINGS
            .iter()
            .chain(ServiceName::ALL.iter().flat_map(|s| s.settings()))
            .copied()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn production_env() -> Vec<(&'static str, String)> {
        vec![
            ("KEYMESH_ENV", "production".into()),
            ("VAULT_DATABASE_URL", "postgres://vault@db/vault".into()),
            ("VAULT_PUBLIC_URL", "https://vault.example.com".into()),
        ]
    }

    fn load(env: Vec<(&'static str, String)>) -> Result<ServiceConfig, ConfigError> {
        ServiceConfig::load(
            ServiceName::Vault,
            &Source::from_env(env),
            Environment::Production,
        )
    }

    #[test]
    fn production_accepts_a_complete_configuration() {
        let cfg = load(production_env()).expect("valid production config");
        assert!(cfg.serves_tls());
        assert_eq!(cfg.listen.to_string(), "127.0.0.1:7801");
    }

    #[test]
    fn production_refuses_missing_database_url_by_name() {
        let mut env = production_env();
        env.retain(|(k, _)| *k != "VAULT_DATABASE_URL");
        let err = load(env).expect_err("missing");
        assert!(err.to_string().contains("VAULT_DATABASE_URL"), "{err}");
    }

    #[test]
    fn production_refuses_http_public_url() {
        let mut env = production_env();
        env.push(("VAULT_PUBLIC_URL", "http://vault.example.com".into()));
        env.retain(|(k, v)| *k != "VAULT_PUBLIC_URL" || v.starts_with("http:"));
        let err = load(env).expect_err("http");
        assert!(err.to_string().contains("VAULT_PUBLIC_URL"), "{err}");
    }

    #[test]
    fn production_refuses_insecure_http_switch() {
        let mut env = production_env();
        env.push(("ALLOW_INSECURE_HTTP", "true".into()));
        let err = load(env).expect_err("dev-only");
        assert!(err.to_string().contains("ALLOW_INSECURE_HTTP"), "{err}");
    }

    #[test]
    fn production_refuses_short_metrics_token() {
        let mut env = production_env();
        env.push(("METRICS_TOKEN", "too-short".into()));
        let err = load(env).expect_err("short secret");
        assert!(err.to_string().contains("METRICS_TOKEN"), "{err}");
        assert!(
            !err.to_string().contains("too-short"),
            "secret leaked: {err}"
        );
    }

    #[test]
    fn development_defaults_work_without_any_setting() {
        let cfg = ServiceConfig::load(
            ServiceName::Relay,
            &Source::default(),
            Environment::Development,
        )
        .expect("dev defaults");
        assert_eq!(cfg.public_url.to_string(), "http://127.0.0.1:7802/");
        assert!(!cfg.serves_tls());
    }

    #[test]
    fn non_loopback_http_needs_the_explicit_switch() {
        let env = vec![("RELAY_PUBLIC_URL", "http://relay.internal")];
        let err = ServiceConfig::load(
            ServiceName::Relay,
            &Source::from_env(env.clone()),
            Environment::Development,
        )
        .expect_err("plain http");
        assert!(err.to_string().contains("ALLOW_INSECURE_HTTP"));
        let mut env = env;
        env.push(("ALLOW_INSECURE_HTTP", "true"));
        ServiceConfig::load(
            ServiceName::Relay,
            &Source::from_env(env),
            Environment::Development,
        )
        .expect("allowed with switch");
    }
}

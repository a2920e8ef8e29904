//! Settings every service shares: environment, logging, HTTP limits, CORS, proxies, rate limits.

use std::{num::NonZeroU32, time::Duration};

use http::HeaderValue;
use ipnet::IpNet;
use secrecy::SecretString;

use super::registry::{ConfigError, Setting, Source};
use crate::tls::TrustedCas;

/// Which rules apply: production refuses development shortcuts and weak secrets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Environment {
    /// Local development: defaults apply, shortcuts allowed.
    Development,
    /// Production: the guard is enforced.
    Production,
}

impl Environment {
    /// Read `KEYMESH_ENV`, with the command's own default when unset.
    pub fn from_source(source: &Source, default: Environment) -> Result<Self, ConfigError> {
        match source.explicit(&KEYMESH_ENV)?.as_deref().map(str::trim) {
            None => Ok(default),
            Some("production") => Ok(Self::Production),
            Some("development") => Ok(Self::Development),
            Some(other) => Err(ConfigError::Invalid {
                setting: KEYMESH_ENV.name,
                reason: format!("expected production or development, got {other:?}"),
            }),
        }
    }

    /// `true` in production.
    pub fn is_production(self) -> bool {
        self == Self::Production
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (default; what log pipelines want).
    Json,
    /// Human-readable, for a terminal.
    Pretty,
}

/// `KEYMESH_ENV`.
pub const KEYMESH_ENV: Setting = Setting::value(
    "KEYMESH_ENV",
    "`production` or `development`. Service commands default to production; `keymesh dev` is always development.",
);
/// `LOG_LEVEL`.
pub const LOG_LEVEL: Setting = Setting::value(
    "LOG_LEVEL",
    "Log filter in `tracing` EnvFilter syntax, e.g. `info` or `info,keymesh_vault=debug`.",
)
.default("info");
/// `LOG_FORMAT`.
pub const LOG_FORMAT: Setting =
    Setting::value("LOG_FORMAT", "`json` (one object per line) or `pretty`.").default("json");
/// `ALLOWED_ORIGINS`.
pub const ALLOWED_ORIGINS: Setting = Setting::value(
    "ALLOWED_ORIGINS",
    "Comma-separated browser origins allowed cross-origin access (e.g. `https://admin.example.com`). Unset: no cross-origin access at all.",
);
/// `TRUSTED_PROXIES`.
pub const TRUSTED_PROXIES: Setting = Setting::value(
    "TRUSTED_PROXIES",
    "Comma-separated IPs or CIDRs of reverse proxies whose `X-Forwarded-For` is believed. Unset: the socket peer is the client.",
);
/// `HTTP_REQUEST_TIMEOUT_SECS`.
pub const HTTP_REQUEST_TIMEOUT_SECS: Setting = Setting::value(
    "HTTP_REQUEST_TIMEOUT_SECS",
    "Longest time a request may take to produce its response (streams and WebSockets excepted).",
)
.default("30");
/// `HTTP_BODY_LIMIT_BYTES`.
pub const HTTP_BODY_LIMIT_BYTES: Setting = Setting::value(
    "HTTP_BODY_LIMIT_BYTES",
    "Largest request body accepted; larger bodies get `413 payload_too_large`.",
)
.default("1048576");
/// `SHUTDOWN_GRACE_SECS`.
pub const SHUTDOWN_GRACE_SECS: Setting = Setting::value(
    "SHUTDOWN_GRACE_SECS",
    "On SIGTERM/Ctrl-C, how long in-flight requests may take to finish before the process exits anyway.",
)
.default("30");
/// `RATE_LIMIT_IP_PER_SECOND`.
pub const RATE_LIMIT_IP_PER_SECOND: Setting = Setting::value(
    "RATE_LIMIT_IP_PER_SECOND",
    "Sustained requests per second allowed from one client IP (health and metrics exempt).",
)
.default("20");
/// `RATE_LIMIT_IP_BURST`.
pub const RATE_LIMIT_IP_BURST: Setting =
    Setting::value("RATE_LIMIT_IP_BURST", "Burst allowed from one client IP.").default("60");
/// `RATE_LIMIT_IPV6_PREFIX`.
pub const RATE_LIMIT_IPV6_PREFIX: Setting = Setting::value(
    "RATE_LIMIT_IPV6_PREFIX",
    "IPv6 clients are limited per network of this prefix length, 1 to 128: one host usually holds a whole /64 and could otherwise rotate addresses to escape every per-IP limit. IPv4 clients are limited per address.",
)
.default("64");
/// `RATE_LIMIT_PRINCIPAL_PER_SECOND`.
pub const RATE_LIMIT_PRINCIPAL_PER_SECOND: Setting = Setting::value(
    "RATE_LIMIT_PRINCIPAL_PER_SECOND",
    "Sustained requests per second allowed for one authenticated principal (user, node or service).",
)
.default("50");
/// `RATE_LIMIT_PRINCIPAL_BURST`.
pub const RATE_LIMIT_PRINCIPAL_BURST: Setting = Setting::value(
    "RATE_LIMIT_PRINCIPAL_BURST",
    "Burst allowed for one authenticated principal.",
)
.default("100");
/// `METRICS_TOKEN`.
pub const METRICS_TOKEN: Setting = Setting::secret(
    "METRICS_TOKEN",
    "When set, `/metrics` requires `Authorization: Bearer <token>` (metrics reveal traffic metadata). Unset: `/metrics` is open; keep it off the public network.",
);
/// `ALLOW_INSECURE_HTTP`.
pub const ALLOW_INSECURE_HTTP: Setting = Setting::switch(
    "ALLOW_INSECURE_HTTP",
    "Allow a non-loopback `*_PUBLIC_URL` with `http://` (no TLS). Loopback http is allowed outside production without it.",
)
.dev_only();

/// `MESH_MTLS`.
pub const MESH_MTLS: Setting = Setting::switch(
    "MESH_MTLS",
    "The services call each other through a service mesh whose sidecars encrypt and authenticate every connection (mutual TLS): production then accepts http:// for the URLs of other services (MANAGEMENT_VAULT_URL, MANAGEMENT_RELAY_URL, RELAY_VAULT_URL). Those calls carry service credentials, tokens and the revocation feed: never set it without such a mesh.",
);
/// `TLS_CA_FILE`.
pub const TLS_CA_FILE: Setting = Setting::value(
    "TLS_CA_FILE",
    "PEM bundle of the certificate authorities that signed the other Keymesh services' certificates (a private CA). Set: calls to another service trust only these. Unset: the platform's trusted roots.",
);

/// Every shared setting, in documentation order.
pub const COMMON_SETTINGS: &[&Setting] = &[
    &KEYMESH_ENV,
    &LOG_LEVEL,
    &LOG_FORMAT,
    &ALLOWED_ORIGINS,
    &TRUSTED_PROXIES,
    &HTTP_REQUEST_TIMEOUT_SECS,
    &HTTP_BODY_LIMIT_BYTES,
    &SHUTDOWN_GRACE_SECS,
    &RATE_LIMIT_IP_PER_SECOND,
    &RATE_LIMIT_IP_BURST,
    &RATE_LIMIT_IPV6_PREFIX,
    &RATE_LIMIT_PRINCIPAL_PER_SECOND,
    &RATE_LIMIT_PRINCIPAL_BURST,
    &METRICS_TOKEN,
    &ALLOW_INSECURE_HTTP,
    &MESH_MTLS,
    &TLS_CA_FILE,
];

/// A rate: sustained requests per second plus a burst.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Sustained rate.
    pub per_second: NonZeroU32,
    /// Burst size.
    pub burst: NonZeroU32,
}

/// HTTP stack settings, shared by every service.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Response deadline.
    pub request_timeout: Duration,
    /// Body size limit in bytes.
    pub body_limit: usize,
    /// Allowed CORS origins; empty means no cross-origin access.
    pub allowed_origins: Vec<HeaderValue>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Per-client-IP rate.
    pub ip_rate: RateLimitConfig,
    /// IPv6 clients share the per-IP limits of their network of this prefix length.
    pub ipv6_prefix: u8,
    /// Per-principal rate.
    pub principal_rate: RateLimitConfig,
    /// Bearer token protecting `/metrics`.
    pub metrics_token: Option<SecretString>,
    /// Graceful shutdown bound.
    pub shutdown_grace: Duration,
}

/// Everything shared, loaded once.
#[derive(Clone, Debug)]
pub struct CommonConfig {
    /// Environment.
    pub environment: Environment,
    /// Log filter directives.
    pub log_level: String,
    /// Log format.
    pub log_format: LogFormat,
    /// Whether http public URLs are allowed beyond loopback.
    pub allow_insecure_http: bool,
    /// Whether a service mesh encrypts the calls between services (`MESH_MTLS`).
    pub mesh_mtls: bool,
    /// HTTP stack.
    pub http: HttpConfig,
    /// Whom to trust for calls to other services (`TLS_CA_FILE`).
    pub tls_ca: Option<TrustedCas>,
}

impl CommonConfig {
    /// Load from a source. The production guard is applied by the caller over every setting.
    pub fn load(source: &Source, default_env: Environment) -> Result<Self, ConfigError> {
        let environment = Environment::from_source(source, default_env)?;
        let log_format = match source.require::<String>(&LOG_FORMAT)?.as_str() {
            "json" => LogFormat::Json,
            "pretty" => LogFormat::Pretty,
            other => {
                return Err(ConfigError::Invalid {
                    setting: LOG_FORMAT.name,
                    reason: format!("expected json or pretty, got {other:?}"),
                });
            }
        };
        let body_limit: usize = source.require(&HTTP_BODY_LIMIT_BYTES)?;
        if body_limit == 0 {
            return Err(ConfigError::Invalid {
                setting: HTTP_BODY_LIMIT_BYTES.name,
                reason: "must be positive".into(),
            });
        }
        let log_level: String = source.require(&LOG_LEVEL)?;
        tracing_subscriber::EnvFilter::try_new(&log_level).map_err(|e| ConfigError::Invalid {
            setting: LOG_LEVEL.name,
            reason: e.to_string(),
        })?;
        Ok(Self {
            environment,
            log_level,
            log_format,
            allow_insecure_http: source.switch(&ALLOW_INSECURE_HTTP)?,
            mesh_mtls: source.switch(&MESH_MTLS)?,
            http: HttpConfig {
                request_timeout: positive_secs(source, &HTTP_REQUEST_TIMEOUT_SECS)?,
                body_limit,
                allowed_origins: parse_origins(source.get(&ALLOWED_ORIGINS)?.as_deref())?,
                trusted_proxies: parse_proxies(source.get(&TRUSTED_PROXIES)?.as_deref())?,
                ip_rate: RateLimitConfig {
                    per_second: source.require(&RATE_LIMIT_IP_PER_SECOND)?,
                    burst: source.require(&RATE_LIMIT_IP_BURST)?,
                },
                ipv6_prefix: ipv6_prefix(source)?,
                principal_rate: RateLimitConfig {
                    per_second: source.require(&RATE_LIMIT_PRINCIPAL_PER_SECOND)?,
                    burst: source.require(&RATE_LIMIT_PRINCIPAL_BURST)?,
                },
                metrics_token: source.secret(&METRICS_TOKEN)?,
                shutdown_grace: positive_secs(source, &SHUTDOWN_GRACE_SECS)?,
            },
            tls_ca: source
                .get(&TLS_CA_FILE)?
                .map(|path| {
                    TrustedCas::load(path.as_ref()).map_err(|reason| ConfigError::Invalid {
                        setting: TLS_CA_FILE.name,
                        reason,
                    })
                })
                .transpose()?,
        })
    }
}

fn ipv6_prefix(source: &Source) -> Result<u8, ConfigError> {
    let prefix: u8 = source.require(&RATE_LIMIT_IPV6_PREFIX)?;
    if !(1..=128).contains(&prefix) {
        return Err(ConfigError::Invalid {
            setting: RATE_LIMIT_IPV6_PREFIX.name,
            reason: "a prefix length is 1 to 128".into(),
        });
    }
    Ok(prefix)
}

fn positive_secs(source: &Source, setting: &'static Setting) -> Result<Duration, ConfigError> {
    let secs: u64 = source.require(setting)?;
    if secs == 0 {
        return Err(ConfigError::Invalid {
            setting: setting.name,
            reason: "must be at least 1 second".into(),
        });
    }
    Ok(Duration::from_secs(secs))
}

fn split_list(raw: Option<&str>) -> impl Iterator<Item = &str> {
    raw.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn parse_origins(raw: Option<&str>) -> Result<Vec<HeaderValue>, ConfigError> {
    split_list(raw)
        .map(|origin| {
            let invalid = |reason: &str| ConfigError::Invalid {
                setting: ALLOWED_ORIGINS.name,
                reason: format!("{origin:?}: {reason}"),
            };
            if origin == "*" {
                return Err(invalid(
                    "wildcard origins are not allowed; list each origin",
                ));
            }
            let uri: http::Uri = origin.parse().map_err(|_| invalid("not a URL"))?;
            let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
            let bare = uri.path_and_query().is_none_or(|p| p.as_str() == "/");
            if !scheme_ok || uri.host().is_none() || !bare || origin.ends_with('/') {
                return Err(invalid(
                    "an origin is scheme://host[:port] with nothing after it",
                ));
            }
            HeaderValue::from_str(origin).map_err(|_| invalid("not a valid header value"))
        })
        .collect()
}

fn parse_proxies(raw: Option<&str>) -> Result<Vec<IpNet>, ConfigError> {
    split_list(raw)
        .map(|entry| {
            entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| ConfigError::Invalid {
                    setting: TRUSTED_PROXIES.name,
                    reason: format!("{entry:?} is not an IP address or CIDR"),
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_must_be_bare_and_not_wildcard() {
        assert_eq!(
            parse_origins(Some("https://a.example, http://127.0.0.1:5173"))
                .expect("valid")
                .len(),
            2
        );
        for bad in [
            "*",
            "https://a.example/",
            "https://a.example/path",
            "a.example",
            "ftp://x",
        ] {
            assert!(parse_origins(Some(bad)).is_err(), "{bad} accepted");
        }
        assert!(parse_origins(None).expect("unset").is_empty());
    }

    #[test]
    fn proxies_accept_ips_and_cidrs() {
        let nets = parse_proxies(Some("10.0.0.0/8, 127.0.0.1, ::1")).expect("valid");
        assert_eq!(nets.len(), 3);
        assert!(parse_proxies(Some("10.0.0.0/33")).is_err());
    }

    #[test]
    fn invalid_log_filter_is_a_config_error_naming_the_setting() {
        let src = Source::from_env([("LOG_LEVEL", "info,[[[")]);
        let err = CommonConfig::load(&src, Environment::Development).expect_err("bad filter");
        assert!(err.to_string().contains("LOG_LEVEL"), "{err}");
    }

    #[test]
    fn environment_defaults_per_command_and_rejects_typos() {
        let empty = Source::default();
        assert_eq!(
            Environment::from_source(&empty, Environment::Production).expect("env"),
            Environment::Production
        );
        let typo = Source::from_env([("KEYMESH_ENV", "prod")]);
        assert!(Environment::from_source(&typo, Environment::Development).is_err());
    }
}

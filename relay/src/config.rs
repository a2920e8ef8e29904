//! Relay settings, on top of the shared service settings. Every limit has a safe default.

use std::time::Duration;

use keymesh_core::config::{
    ConfigError, Environment, ServiceConfig, ServiceName, Setting, Source, check_service_url,
    production_guard,
};
use secrecy::SecretString;

/// `RELAY_VAULT_URL`.
pub const VAULT_URL: Setting = Setting::value(
    "RELAY_VAULT_URL",
    "Base URL of the vault: the relay fetches the token root public keys and follows the revocation feed there.",
)
.required_in_production();
/// `RELAY_FEED_API_KEY`.
pub const FEED_API_KEY: Setting = Setting::secret(
    "RELAY_FEED_API_KEY",
    "Service credential the relay presents to the vault's revocation feed (the vault's VAULT_FEED_API_KEY).",
)
.required_in_production();
/// `RELAY_MANAGEMENT_API_KEY`.
pub const MANAGEMENT_API_KEY: Setting = Setting::secret(
    "RELAY_MANAGEMENT_API_KEY",
    "Credential management presents to read the relay's audit log (its MANAGEMENT_RELAY_API_KEY); unset, the audit endpoints refuse every caller.",
);
/// `RELAY_FEED_MAX_AGE_SECS`.
pub const FEED_MAX_AGE_SECS: Setting = Setting::value(
    "RELAY_FEED_MAX_AGE_SECS",
    "When the relay's copy of the revocation feed is older than this, every token is refused (fail closed). More than 5 s: a quiet feed is long-polled for 5 s, and the copy is as old as the poll's start when it returns.",
)
.default("15");
/// `RELAY_MAX_MESSAGE_BYTES`.
pub const MAX_MESSAGE_BYTES: Setting = Setting::value(
    "RELAY_MAX_MESSAGE_BYTES",
    "Largest message ciphertext accepted.",
)
.default("262144");
/// `RELAY_MAILBOX_MAX_MESSAGES`.
pub const MAILBOX_MAX_MESSAGES: Setting = Setting::value(
    "RELAY_MAILBOX_MAX_MESSAGES",
    "Messages held for one recipient before sends to it are refused with mailbox_full.",
)
.default("10000");
/// `RELAY_MAILBOX_MAX_BYTES`.
pub const MAILBOX_MAX_BYTES: Setting = Setting::value(
    "RELAY_MAILBOX_MAX_BYTES",
    "Ciphertext bytes held for one recipient before sends to it are refused with mailbox_full.",
)
.default("268435456");
/// `RELAY_MESSAGE_TTL_SECS`.
pub const MESSAGE_TTL_SECS: Setting = Setting::value(
    "RELAY_MESSAGE_TTL_SECS",
    "How long an unacknowledged message is kept, and the longest a sender may ask for.",
)
.default("604800");
/// `RELAY_SENDS_PER_SECOND`.
pub const SENDS_PER_SECOND: Setting = Setting::value(
    "RELAY_SENDS_PER_SECOND",
    "Messages one node may send per second (burst: one second's worth).",
)
.default("2000");
/// `RELAY_CONNECTIONS_PER_NODE`.
pub const CONNECTIONS_PER_NODE: Setting = Setting::value(
    "RELAY_CONNECTIONS_PER_NODE",
    "Open WebSocket connections one node may hold.",
)
.default("4");
/// `RELAY_MAX_CONNECTIONS`.
pub const MAX_CONNECTIONS: Setting = Setting::value(
    "RELAY_MAX_CONNECTIONS",
    "Open WebSocket connections in total.",
)
.default("50000");
/// `RELAY_WINDOW`.
pub const WINDOW: Setting = Setting::value(
    "RELAY_WINDOW",
    "Unacknowledged deliveries in flight per connection; delivery pauses (never drops) at the window.",
)
.default("256");
/// `RELAY_PING_SECS`.
pub const PING_SECS: Setting =
    Setting::value("RELAY_PING_SECS", "Interval of WebSocket pings.").default("20");
/// `RELAY_IDLE_TIMEOUT_SECS`.
pub const IDLE_TIMEOUT_SECS: Setting = Setting::value(
    "RELAY_IDLE_TIMEOUT_SECS",
    "A connection that sends nothing (not even a pong) for this long is closed.",
)
.default("60");
/// `RELAY_KEY_GRACE_SECS`.
pub const KEY_GRACE_SECS: Setting = Setting::value(
    "RELAY_KEY_GRACE_SECS",
    "How long a node's previous encryption key stays listed after a rotation.",
)
.default("86400");

/// The relay's own settings, in documentation order.
pub const SETTINGS: &[&Setting] = &[
    &VAULT_URL,
    &FEED_API_KEY,
    &MANAGEMENT_API_KEY,
    &FEED_MAX_AGE_SECS,
    &MAX_MESSAGE_BYTES,
    &MAILBOX_MAX_MESSAGES,
    &MAILBOX_MAX_BYTES,
    &MESSAGE_TTL_SECS,
    &SENDS_PER_SECOND,
    &CONNECTIONS_PER_NODE,
    &MAX_CONNECTIONS,
    &WINDOW,
    &PING_SECS,
    &IDLE_TIMEOUT_SECS,
    &KEY_GRACE_SECS,
];

/// Overhead of a `send` frame beyond its ciphertext: header, id, recipient, ttl, the
/// encapsulated key and two lengths, rounded up.
pub const SEND_OVERHEAD: usize = 1024;

/// Loaded relay configuration.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// Shared service settings.
    pub service: ServiceConfig,
    /// The vault (root keys, revocation feed); `None` only in tests that supply both.
    pub vault_url: Option<String>,
    /// The feed credential.
    pub feed_api_key: Option<SecretString>,
    /// Management's credential for the audit endpoints.
    pub management_api_key: Option<SecretString>,
    /// Fail-closed bound on the revocation view's age.
    pub feed_max_age: Duration,
    /// Largest ciphertext.
    pub max_message: usize,
    /// Mailbox bound, messages.
    pub mailbox_max_messages: u64,
    /// Mailbox bound, bytes.
    pub mailbox_max_bytes: u64,
    /// Default and longest time to live.
    pub message_ttl: Duration,
    /// Sends per node per second.
    pub sends_per_second: u32,
    /// Connections per node.
    pub connections_per_node: usize,
    /// Connections in total.
    pub max_connections: usize,
    /// Unacknowledged deliveries per connection.
    pub window: u32,
    /// Ping interval.
    pub ping: Duration,
    /// Idle timeout.
    pub idle_timeout: Duration,
    /// Previous encryption key grace.
    pub key_grace: Duration,
}

impl RelayConfig {
    /// Every setting the relay reads.
    pub fn all_settings() -> Vec<&'static Setting> {
        let mut all = ServiceConfig::all_settings(ServiceName::Relay);
        all.extend_from_slice(SETTINGS);
        all
    }

    /// Load; in production the guard covers the relay's settings too.
    pub fn load(source: &Source, default_env: Environment) -> Result<Self, ConfigError> {
        let service = ServiceConfig::load(ServiceName::Relay, source, default_env)?;
        if service.common.environment.is_production() {
            production_guard(SETTINGS, source)?;
        }
        if let Some(url) = source.get(&VAULT_URL)? {
            check_service_url(&url, &service.common, &VAULT_URL)?;
        }
        let config = Self {
            vault_url: source.get(&VAULT_URL)?,
            feed_api_key: source.secret(&FEED_API_KEY)?,
            management_api_key: source.secret(&MANAGEMENT_API_KEY)?,
            feed_max_age: source.require_secs(&FEED_MAX_AGE_SECS)?,
            max_message: source.require_positive(&MAX_MESSAGE_BYTES)?,
            mailbox_max_messages: source.require_positive(&MAILBOX_MAX_MESSAGES)?,
            mailbox_max_bytes: source.require_positive(&MAILBOX_MAX_BYTES)?,
            message_ttl: source.require_secs(&MESSAGE_TTL_SECS)?,
            sends_per_second: source.require_positive(&SENDS_PER_SECOND)?,
            connections_per_node: source.require_positive(&CONNECTIONS_PER_NODE)?,
            max_connections: source.require_positive(&MAX_CONNECTIONS)?,
            window: source.require_positive(&WINDOW)?,
            ping: source.require_secs(&PING_SECS)?,
            idle_timeout: source.require_secs(&IDLE_TIMEOUT_SECS)?,
            key_grace: source.require_secs(&KEY_GRACE_SECS)?,
            service,
        };
        if config.max_message > 16 * 1024 * 1024 {
            return Err(ConfigError::Invalid {
                setting: MAX_MESSAGE_BYTES.name,
                reason: "must be at most 16 MiB".into(),
            });
        }
        keymesh_core::capability::follower::check_max_age(
            FEED_MAX_AGE_SECS.name,
            config.feed_max_age,
        )?;
        if config.idle_timeout <= config.ping {
            return Err(ConfigError::Invalid {
                setting: IDLE_TIMEOUT_SECS.name,
                reason: "must be longer than RELAY_PING_SECS".into(),
            });
        }
        Ok(config)
    }

    /// Largest frame accepted: a full message plus its envelope.
    pub fn max_frame(&self) -> usize {
        self.max_message + SEND_OVERHEAD
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vault URL carries the feed credential and brings the root keys and revocations: in
    /// production https, loopback, or a mesh's mutual TLS (`MESH_MTLS`).
    #[test]
    fn production_refuses_plain_http_to_the_vault() {
        let load = |vault: &str, extra: &[(&'static str, &str)]| {
            let mut env = vec![
                ("KEYMESH_ENV", "production".to_owned()),
                ("RELAY_DATABASE_URL", "postgres://r@db/r".to_owned()),
                ("RELAY_PUBLIC_URL", "https://relay.example.com".to_owned()),
                ("RELAY_FEED_API_KEY", "f".repeat(40)),
                ("RELAY_VAULT_URL", vault.to_owned()),
            ];
            env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
            RelayConfig::load(&Source::from_env(env), Environment::Production)
        };
        let err = load("http://vault.internal:7801", &[]).expect_err("plain http");
        assert!(err.to_string().contains("RELAY_VAULT_URL"), "{err}");
        load("https://vault.internal:7801", &[]).expect("https");
        load("http://[::1]:7801", &[]).expect("loopback");
        load("http://vault.internal:7801", &[("MESH_MTLS", "true")]).expect("a mesh");
    }
}

//! Vault settings, on top of the shared service settings.

use std::time::Duration;

use keymesh_core::config::{
    ConfigError, Environment, ServiceConfig, ServiceName, Setting, Source, production_guard,
};
use secrecy::SecretString;

/// `VAULT_MASTER_KEY`.
pub const MASTER_KEY: Setting = Setting::secret(
    "VAULT_MASTER_KEY",
    "Seals the token root signing keys at rest in the vault database. Losing it invalidates every token; keep it in a secret manager.",
)
.required_in_production();
/// `MANAGEMENT_API_KEY`.
pub const MANAGEMENT_API_KEY: Setting = Setting::secret(
    "MANAGEMENT_API_KEY",
    "Service credential the management server presents for management-only vault endpoints.",
)
.required_in_production();
/// `VAULT_FEED_API_KEY`.
pub const FEED_API_KEY: Setting = Setting::secret(
    "VAULT_FEED_API_KEY",
    "Service credential relays and vault replicas present to follow the revocation feed.",
)
.required_in_production();
/// `VAULT_TOKEN_TTL_SECS`.
pub const TOKEN_TTL_SECS: Setting = Setting::value(
    "VAULT_TOKEN_TTL_SECS",
    "Lifetime of a minted token unless the request asks for less.",
)
.default("3600");
/// `VAULT_TOKEN_MAX_TTL_SECS`.
pub const TOKEN_MAX_TTL_SECS: Setting = Setting::value(
    "VAULT_TOKEN_MAX_TTL_SECS",
    "Longest lifetime any token may have; also how long a retired root key keeps verifying.",
)
.default("86400");
/// `VAULT_ROOT_KEY_ANNOUNCE_SECS`.
pub const ROOT_KEY_ANNOUNCE_SECS: Setting = Setting::value(
    "VAULT_ROOT_KEY_ANNOUNCE_SECS",
    "How long a rotated root key is announced (verified everywhere) before it signs, 1 to 3600. \
     Followers read it from the revocation feed at once, and every 10 s regardless.",
)
.default("30");
/// `VAULT_SESSION_SECS`.
pub const SESSION_SECS: Setting = Setting::value(
    "VAULT_SESSION_SECS",
    "How long an unlocked vault stays unlocked.",
)
.default("1800");
/// `VAULT_SESSION_MAX_SECS`.
pub const SESSION_MAX_SECS: Setting = Setting::value(
    "VAULT_SESSION_MAX_SECS",
    "Cap on an unlock session including extensions, counted from the unlock.",
)
.default("14400");
/// `VAULT_UNLOCK_ATTEMPTS_PER_MINUTE`.
pub const UNLOCK_ATTEMPTS_PER_MINUTE: Setting = Setting::value(
    "VAULT_UNLOCK_ATTEMPTS_PER_MINUTE",
    "Passphrase or share submissions allowed per group and per client IP per minute.",
)
.default("5");
/// `VAULT_SECRET_MAX_BYTES`.
pub const SECRET_MAX_BYTES: Setting =
    Setting::value("VAULT_SECRET_MAX_BYTES", "Largest secret value.").default("65536");
/// `VAULT_METADATA_MAX_BYTES`.
pub const METADATA_MAX_BYTES: Setting = Setting::value(
    "VAULT_METADATA_MAX_BYTES",
    "Largest secret metadata (a JSON object).",
)
.default("4096");
/// `VAULT_ARGON2_MEMORY_KIB`.
pub const ARGON2_MEMORY_KIB: Setting = Setting::value(
    "VAULT_ARGON2_MEMORY_KIB",
    "Argon2id memory for new passphrase-wrapped vaults; at least 65536 in production.",
)
.default("65536");
/// `VAULT_ARGON2_ITERATIONS`.
pub const ARGON2_ITERATIONS: Setting = Setting::value(
    "VAULT_ARGON2_ITERATIONS",
    "Argon2id passes for new passphrase-wrapped vaults; at least 3 in production.",
)
.default("3");

/// The vault's own settings, in documentation order.
pub const SETTINGS: &[&Setting] = &[
    &MASTER_KEY,
    &MANAGEMENT_API_KEY,
    &FEED_API_KEY,
    &TOKEN_TTL_SECS,
    &TOKEN_MAX_TTL_SECS,
    &ROOT_KEY_ANNOUNCE_SECS,
    &SESSION_SECS,
    &SESSION_MAX_SECS,
    &UNLOCK_ATTEMPTS_PER_MINUTE,
    &SECRET_MAX_BYTES,
    &METADATA_MAX_BYTES,
    &ARGON2_MEMORY_KIB,
    &ARGON2_ITERATIONS,
];

/// Loaded vault configuration.
#[derive(Clone, Debug)]
pub struct VaultConfig {
    /// Shared service settings.
    pub service: ServiceConfig,
    /// Seals root signing keys.
    pub master_key: SecretString,
    /// Management's credential.
    pub management_api_key: SecretString,
    /// Followers' credential.
    pub feed_api_key: SecretString,
    /// Default token lifetime.
    pub token_ttl: Duration,
    /// Maximum token lifetime.
    pub token_max_ttl: Duration,
    /// How long a rotated root key is announced before it signs.
    pub root_key_announce: Duration,
    /// Unlock session length.
    pub session: Duration,
    /// Unlock session cap.
    pub session_max: Duration,
    /// Unlock attempts per minute per group and per IP.
    pub unlock_attempts_per_minute: u32,
    /// Secret size bound.
    pub secret_max_bytes: usize,
    /// Metadata size bound.
    pub metadata_max_bytes: usize,
    /// Argon2id memory (KiB).
    pub argon2_memory_kib: u32,
    /// Argon2id passes.
    pub argon2_iterations: u32,
}

impl VaultConfig {
    /// Every setting the vault reads.
    pub fn all_settings() -> Vec<&'static Setting> {
        let mut all = ServiceConfig::all_settings(ServiceName::Vault);
        all.extend_from_slice(SETTINGS);
        all
    }

    /// Load; in production the guard covers the vault's settings too, and weak Argon2
    /// parameters are refused.
    pub fn load(source: &Source, default_env: Environment) -> Result<Self, ConfigError> {
        let service = ServiceConfig::load(ServiceName::Vault, source, default_env)?;
        let production = service.common.environment.is_production();
        if production {
            production_guard(SETTINGS, source)?;
        }
        let config = Self {
            master_key: source.require_secret(&MASTER_KEY)?,
            management_api_key: source.require_secret(&MANAGEMENT_API_KEY)?,
            feed_api_key: source.require_secret(&FEED_API_KEY)?,
            token_ttl: source.require_secs(&TOKEN_TTL_SECS)?,
            token_max_ttl: source.require_secs(&TOKEN_MAX_TTL_SECS)?,
            root_key_announce: source.require_secs(&ROOT_KEY_ANNOUNCE_SECS)?,
            session: source.require_secs(&SESSION_SECS)?,
            session_max: source.require_secs(&SESSION_MAX_SECS)?,
            unlock_attempts_per_minute: source.require(&UNLOCK_ATTEMPTS_PER_MINUTE)?,
            secret_max_bytes: source.require(&SECRET_MAX_BYTES)?,
            metadata_max_bytes: source.require(&METADATA_MAX_BYTES)?,
            argon2_memory_kib: source.require(&ARGON2_MEMORY_KIB)?,
            argon2_iterations: source.require(&ARGON2_ITERATIONS)?,
            service,
        };
        if production && (config.argon2_memory_kib < 65536 || config.argon2_iterations < 3) {
            return Err(ConfigError::Production {
                setting: ARGON2_MEMORY_KIB.name,
                reason: "and VAULT_ARGON2_ITERATIONS must be at least 65536 KiB and 3 passes"
                    .into(),
            });
        }
        if config.token_ttl > config.token_max_ttl || config.session > config.session_max {
            return Err(ConfigError::Invalid {
                setting: TOKEN_TTL_SECS.name,
                reason: "default lifetimes must not exceed their maximums (VAULT_TOKEN_MAX_TTL_SECS, VAULT_SESSION_MAX_SECS)".into(),
            });
        }
        if !(1..=3600).contains(&config.root_key_announce.as_secs()) {
            return Err(ConfigError::Invalid {
                setting: ROOT_KEY_ANNOUNCE_SECS.name,
                reason: "must be 1 to 3600 seconds".into(),
            });
        }
        if config.unlock_attempts_per_minute == 0 {
            return Err(ConfigError::Invalid {
                setting: UNLOCK_ATTEMPTS_PER_MINUTE.name,
                reason: "must be positive".into(),
            });
        }
        Ok(config)
    }
}

//! Management settings, on top of the shared service settings.

use std::{num::NonZeroU32, path::PathBuf, time::Duration};

use keymesh_core::config::{
    ConfigError, Environment, ServiceConfig, ServiceName, Setting, Source, check_service_url,
    production_guard,
};
use secrecy::{ExposeSecret, SecretString};

use crate::{policy::Policies, rbac::Rbac};

/// `MANAGEMENT_SECRET_KEY`.
pub const SECRET_KEY: Setting = Setting::secret(
    "MANAGEMENT_SECRET_KEY",
    "Keys the HMACs of sign-in codes, of e-mail addresses in the audit log and of CSRF tokens. Changing it ends every pending sign-in and every browser session's CSRF token.",
)
.required_in_production();
/// `MANAGEMENT_RBAC_FILE`.
pub const RBAC_FILE: Setting = Setting::value(
    "MANAGEMENT_RBAC_FILE",
    "TOML file mapping every role to its actions (docs/management.md); the built-in mapping when unset.",
);
/// `MANAGEMENT_LOGIN_TTL_SECS`.
pub const LOGIN_TTL_SECS: Setting = Setting::value(
    "MANAGEMENT_LOGIN_TTL_SECS",
    "How long a sign-in link and its code stay valid.",
)
.default("900");
/// `MANAGEMENT_INVITE_TTL_SECS`.
pub const INVITE_TTL_SECS: Setting = Setting::value(
    "MANAGEMENT_INVITE_TTL_SECS",
    "How long the link in an invitation stays valid.",
)
.default("900");
/// `MANAGEMENT_LOGIN_CODE_ATTEMPTS`.
pub const LOGIN_CODE_ATTEMPTS: Setting = Setting::value(
    "MANAGEMENT_LOGIN_CODE_ATTEMPTS",
    "Wrong codes accepted per sign-in request before its code stops working.",
)
.default("5");
/// `MANAGEMENT_LOGIN_PER_EMAIL_PER_HOUR`.
pub const LOGIN_PER_EMAIL_PER_HOUR: Setting = Setting::value(
    "MANAGEMENT_LOGIN_PER_EMAIL_PER_HOUR",
    "Sign-in requests per e-mail address per hour (whether or not it has an account).",
)
.default("5");
/// `MANAGEMENT_LOGIN_PER_IP_PER_MINUTE`.
pub const LOGIN_PER_IP_PER_MINUTE: Setting = Setting::value(
    "MANAGEMENT_LOGIN_PER_IP_PER_MINUTE",
    "Sign-in requests, link confirmations and code attempts per client IP per minute.",
)
.default("10");
/// `MANAGEMENT_SESSION_IDLE_SECS`.
pub const SESSION_IDLE_SECS: Setting = Setting::value(
    "MANAGEMENT_SESSION_IDLE_SECS",
    "A session unused this long ends.",
)
.default("1800");
/// `MANAGEMENT_SESSION_MAX_SECS`.
pub const SESSION_MAX_SECS: Setting = Setting::value(
    "MANAGEMENT_SESSION_MAX_SECS",
    "A session ends this long after its sign-in, however active.",
)
.default("43200");
/// `MANAGEMENT_SESSIONS_PER_USER`.
pub const SESSIONS_PER_USER: Setting = Setting::value(
    "MANAGEMENT_SESSIONS_PER_USER",
    "Live sessions a user may hold; signing in beyond it ends the least recently used.",
)
.default("10");
/// `MANAGEMENT_REAUTH_SECS`.
pub const REAUTH_SECS: Setting = Setting::value(
    "MANAGEMENT_REAUTH_SECS",
    "Admin actions (users:manage, groups:manage, approvals:decide, audit:export, emergency:access) need a sign-in at most this old.",
)
.default("900");
/// `MANAGEMENT_SMTP_URL`.
pub const SMTP_URL: Setting = Setting::secret(
    "MANAGEMENT_SMTP_URL",
    "SMTP server for sign-in mail: `smtps://user:pass@host:465` (implicit TLS) or `smtp://user:pass@host:587?tls=required` (STARTTLS). Unset outside production: mail is printed to the console. Plain `smtp://` is refused in production.",
)
.issued_elsewhere()
.required_in_production();
/// `MANAGEMENT_MAIL_FROM`.
pub const MAIL_FROM: Setting = Setting::value(
    "MANAGEMENT_MAIL_FROM",
    "Sender of sign-in mail, e.g. `Keymesh <keymesh@example.com>`.",
)
.default("Keymesh <keymesh@localhost>")
.required_in_production();

/// `MANAGEMENT_ENROLL_TTL_SECS`.
pub const ENROLL_TTL_SECS: Setting = Setting::value(
    "MANAGEMENT_ENROLL_TTL_SECS",
    "How long a node enrollment code stays valid (it enrolls one node, once).",
)
.default("900");
/// `MANAGEMENT_VAULT_URL`.
pub const VAULT_URL: Setting = Setting::value(
    "MANAGEMENT_VAULT_URL",
    "Base URL of the vault management calls to register nodes, mint tokens, revoke and lock (e.g. `https://vault.internal:7801`). Unset outside production: enrollment and revocation answer `unavailable`.",
)
.required_in_production();
/// `MANAGEMENT_VAULT_API_KEY`.
pub const VAULT_API_KEY: Setting = Setting::secret(
    "MANAGEMENT_VAULT_API_KEY",
    "The credential management presents to the vault (the vault's MANAGEMENT_API_KEY).",
)
.required_in_production();
/// `MANAGEMENT_RELAY_API_KEY`.
pub const RELAY_API_KEY: Setting = Setting::secret(
    "MANAGEMENT_RELAY_API_KEY",
    "The credential management presents to read the relay's audit log (the relay's RELAY_MANAGEMENT_API_KEY); with MANAGEMENT_RELAY_URL, the relay's events are copied into the central log.",
);
/// `MANAGEMENT_RELAY_URL`.
pub const RELAY_URL: Setting = Setting::value(
    "MANAGEMENT_RELAY_URL",
    "Relay base URL handed to nodes when they enroll (so `keymeshctl enroll` can publish their keys); nodes may be told another one.",
);

/// `MANAGEMENT_APPROVAL_POLICY_FILE`.
pub const APPROVAL_POLICY_FILE: Setting = Setting::value(
    "MANAGEMENT_APPROVAL_POLICY_FILE",
    "TOML file of approval policies (approvals and denials that decide, reviewer roles, longest request lifetime per operation; docs/management.md); one admin decides when unset.",
);
/// `MANAGEMENT_FEED_MAX_AGE_SECS`.
pub const FEED_MAX_AGE_SECS: Setting = Setting::value(
    "MANAGEMENT_FEED_MAX_AGE_SECS",
    "Node tokens are refused when management's copy of the vault's revocation feed is older than this (fail closed). More than 5 s: a quiet feed is long-polled for 5 s, and the copy is as old as the poll's start when it returns.",
)
.default("15");

/// `MANAGEMENT_SMTP_CA_FILE`.
pub const SMTP_CA_FILE: Setting = Setting::value(
    "MANAGEMENT_SMTP_CA_FILE",
    "PEM file of the certificate authorities to trust for the SMTP server's TLS certificate (a private CA), instead of the built-in web roots. Needs smtps:// or tls=required.",
);

/// `MANAGEMENT_EMERGENCY_MAX_SECS`.
pub const EMERGENCY_MAX_SECS: Setting = Setting::value(
    "MANAGEMENT_EMERGENCY_MAX_SECS",
    "Longest emergency access grant (a temporary role, behind an approval), counted from its execution.",
)
.default("14400");

/// `MANAGEMENT_APPROVAL_WAIVER_MAX_SECS`.
pub const APPROVAL_WAIVER_MAX_SECS: Setting = Setting::value(
    "MANAGEMENT_APPROVAL_WAIVER_MAX_SECS",
    "Longest time token approvals may be disabled for a group (group.approvals.disable, behind an approval).",
)
.default("604800");

/// `MANAGEMENT_AUDIT_CHECKPOINT_SECS`.
pub const AUDIT_CHECKPOINT_SECS: Setting = Setting::value(
    "MANAGEMENT_AUDIT_CHECKPOINT_SECS",
    "How often the audit chain's head is signed (when it grew); each checkpoint is also logged.",
)
.default("300");

/// The management server's own settings, in documentation order.
pub const SETTINGS: &[&Setting] = &[
    &SECRET_KEY,
    &RBAC_FILE,
    &LOGIN_TTL_SECS,
    &INVITE_TTL_SECS,
    &LOGIN_CODE_ATTEMPTS,
    &LOGIN_PER_EMAIL_PER_HOUR,
    &LOGIN_PER_IP_PER_MINUTE,
    &SESSION_IDLE_SECS,
    &SESSION_MAX_SECS,
    &SESSIONS_PER_USER,
    &REAUTH_SECS,
    &SMTP_URL,
    &SMTP_CA_FILE,
    &MAIL_FROM,
    &ENROLL_TTL_SECS,
    &VAULT_URL,
    &VAULT_API_KEY,
    &RELAY_URL,
    &RELAY_API_KEY,
    &APPROVAL_POLICY_FILE,
    &FEED_MAX_AGE_SECS,
    &AUDIT_CHECKPOINT_SECS,
    &EMERGENCY_MAX_SECS,
    &APPROVAL_WAIVER_MAX_SECS,
];

/// Where sign-in mail goes.
#[derive(Clone, Debug)]
pub enum MailConfig {
    /// An SMTP server (URL as lettre reads it; may hold a password), and the PEM of the CAs
    /// to trust for it when not the built-in web roots.
    Smtp(SecretString, Option<Vec<u8>>),
    /// Printed to standard error (development only).
    Console,
}

/// Loaded management configuration.
#[derive(Clone, Debug)]
pub struct ManagementConfig {
    /// Shared service settings.
    pub service: ServiceConfig,
    /// HMAC key for codes, audit identifiers and CSRF tokens.
    pub secret_key: SecretString,
    /// Who may do what.
    pub rbac: Rbac,
    /// Sign-in link lifetime.
    pub login_ttl: Duration,
    /// Invitation link lifetime.
    pub invite_ttl: Duration,
    /// Wrong codes per request.
    pub code_attempts: u32,
    /// Sign-in requests per address per hour.
    pub login_per_email_per_hour: NonZeroU32,
    /// Sign-in requests per IP per minute.
    pub login_per_ip_per_minute: NonZeroU32,
    /// Idle timeout.
    pub session_idle: Duration,
    /// Absolute timeout.
    pub session_max: Duration,
    /// Live sessions per user.
    pub sessions_per_user: u32,
    /// Re-authentication window for admin actions.
    pub reauth: Duration,
    /// Mail transport.
    pub mail: MailConfig,
    /// Sender address.
    pub mail_from: String,
    /// Enrollment code lifetime.
    pub enroll_ttl: Duration,
    /// The vault and management's credential for it, when configured.
    pub vault: Option<VaultLink>,
    /// Relay URL for enrolling nodes.
    pub relay_url: Option<String>,
    /// The relay's audit log, when management may read it (URL and credential).
    pub relay_audit: Option<VaultLink>,
    /// Approval policies.
    pub policies: Policies,
    /// Fail-closed bound on the revocation view's age.
    pub feed_max_age: Duration,
    /// Audit checkpoint interval.
    pub checkpoint_every: Duration,
    /// Longest emergency grant.
    pub emergency_max: Duration,
    /// Longest approval waiver for a group.
    pub waiver_max: Duration,
}

/// Where another service (the vault; the relay's audit log) is and how management
/// authenticates to it.
#[derive(Clone, Debug)]
pub struct VaultLink {
    /// Base URL, without a trailing slash.
    pub url: String,
    /// The vault's `MANAGEMENT_API_KEY`.
    pub api_key: SecretString,
}

fn load_policies(source: &Source) -> Result<Policies, ConfigError> {
    let Some(path) = source.get(&APPROVAL_POLICY_FILE)? else {
        return Ok(Policies::builtin());
    };
    let path = PathBuf::from(path);
    let invalid = |reason: String| ConfigError::Invalid {
        setting: APPROVAL_POLICY_FILE.name,
        reason: format!("{}: {reason}", path.display()),
    };
    let text = std::fs::read_to_string(&path).map_err(|e| invalid(e.to_string()))?;
    Policies::parse(&text).map_err(invalid)
}

fn load_rbac(source: &Source) -> Result<Rbac, ConfigError> {
    let Some(path) = source.get(&RBAC_FILE)? else {
        return Ok(Rbac::builtin());
    };
    let path = PathBuf::from(path);
    let invalid = |reason: String| ConfigError::Invalid {
        setting: RBAC_FILE.name,
        reason,
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
    Rbac::parse(&text).map_err(|e| invalid(format!("{}: {e}", path.display())))
}

/// The PEM of `MANAGEMENT_SMTP_CA_FILE`, when set: readable, holding a certificate, and only
/// with an encrypted SMTP URL.
fn load_smtp_ca(source: &Source, url: &SecretString) -> Result<Option<Vec<u8>>, ConfigError> {
    let Some(path) = source.get(&SMTP_CA_FILE)? else {
        return Ok(None);
    };
    let invalid = |reason: String| ConfigError::Invalid {
        setting: SMTP_CA_FILE.name,
        reason,
    };
    let url = url.expose_secret();
    if !(url.starts_with("smtps://") || url.contains("tls=required")) {
        return Err(invalid(
            "needs MANAGEMENT_SMTP_URL with smtps:// or tls=required".into(),
        ));
    }
    let pem = std::fs::read(&path).map_err(|e| invalid(format!("cannot read {path}: {e}")))?;
    if !pem
        .windows(b"-----BEGIN CERTIFICATE-----".len())
        .any(|w| w == b"-----BEGIN CERTIFICATE-----")
    {
        return Err(invalid(format!("{path} holds no PEM certificate")));
    }
    Ok(Some(pem))
}

/// Production mail must be encrypted: implicit TLS, or STARTTLS that is required.
fn check_smtp_url(url: &SecretString, production: bool) -> Result<(), ConfigError> {
    let url = url.expose_secret();
    let encrypted =
        url.starts_with("smtps://") || (url.starts_with("smtp://") && url.contains("tls=required"));
    if !url.starts_with("smtps://") && !url.starts_with("smtp://") {
        return Err(ConfigError::Invalid {
            setting: SMTP_URL.name,
            reason: "must start with smtps:// or smtp://".into(),
        });
    }
    if production && !encrypted {
        return Err(ConfigError::Production {
            setting: SMTP_URL.name,
            reason: "must use smtps:// or smtp://...?tls=required (sign-in links must not cross the network in clear)".into(),
        });
    }
    Ok(())
}

impl ManagementConfig {
    /// Every setting the management server reads.
    pub fn all_settings() -> Vec<&'static Setting> {
        let mut all = ServiceConfig::all_settings(ServiceName::Management);
        all.extend_from_slice(SETTINGS);
        all
    }

    /// Load; in production the guard covers management's settings too.
    pub fn load(source: &Source, default_env: Environment) -> Result<Self, ConfigError> {
        let service = ServiceConfig::load(ServiceName::Management, source, default_env)?;
        let production = service.common.environment.is_production();
        if production {
            production_guard(SETTINGS, source)?;
        }
        for setting in [&VAULT_URL, &RELAY_URL] {
            if let Some(url) = source.get(setting)? {
                check_service_url(&url, &service.common, setting)?;
            }
        }
        let mail = match source.secret(&SMTP_URL)? {
            Some(url) => {
                check_smtp_url(&url, production)?;
                MailConfig::Smtp(url.clone(), load_smtp_ca(source, &url)?)
            }
            None => MailConfig::Console,
        };
        let config = Self {
            secret_key: source.require_secret(&SECRET_KEY)?,
            rbac: load_rbac(source)?,
            login_ttl: source.require_secs(&LOGIN_TTL_SECS)?,
            invite_ttl: source.require_secs(&INVITE_TTL_SECS)?,
            code_attempts: source.require_positive(&LOGIN_CODE_ATTEMPTS)?,
            login_per_email_per_hour: source.require(&LOGIN_PER_EMAIL_PER_HOUR)?,
            login_per_ip_per_minute: source.require(&LOGIN_PER_IP_PER_MINUTE)?,
            session_idle: source.require_secs(&SESSION_IDLE_SECS)?,
            session_max: source.require_secs(&SESSION_MAX_SECS)?,
            sessions_per_user: source.require_positive(&SESSIONS_PER_USER)?,
            reauth: source.require_secs(&REAUTH_SECS)?,
            mail,
            mail_from: source.require(&MAIL_FROM)?,
            enroll_ttl: source.require_secs(&ENROLL_TTL_SECS)?,
            vault: match (source.get(&VAULT_URL)?, source.secret(&VAULT_API_KEY)?) {
                (Some(url), Some(api_key)) => Some(VaultLink {
                    url: url.trim_end_matches('/').to_owned(),
                    api_key,
                }),
                (None, None) => None,
                (Some(_), None) => {
                    return Err(ConfigError::Invalid {
                        setting: VAULT_API_KEY.name,
                        reason: "is needed with MANAGEMENT_VAULT_URL".into(),
                    });
                }
                (None, Some(_)) => {
                    return Err(ConfigError::Invalid {
                        setting: VAULT_URL.name,
                        reason: "is needed with MANAGEMENT_VAULT_API_KEY".into(),
                    });
                }
            },
            relay_url: source
                .get(&RELAY_URL)?
                .map(|u: String| u.trim_end_matches('/').to_owned()),
            relay_audit: match (source.get(&RELAY_URL)?, source.secret(&RELAY_API_KEY)?) {
                (Some(url), Some(api_key)) => Some(VaultLink {
                    url: url.trim_end_matches('/').to_owned(),
                    api_key,
                }),
                (None, Some(_)) => {
                    return Err(ConfigError::Invalid {
                        setting: RELAY_URL.name,
                        reason: "is needed with MANAGEMENT_RELAY_API_KEY".into(),
                    });
                }
                _ => None,
            },
            policies: load_policies(source)?,
            feed_max_age: source.require_secs(&FEED_MAX_AGE_SECS)?,
            checkpoint_every: source.require_secs(&AUDIT_CHECKPOINT_SECS)?,
            emergency_max: source.require_secs(&EMERGENCY_MAX_SECS)?,
            waiver_max: source.require_secs(&APPROVAL_WAIVER_MAX_SECS)?,
            service,
        };
        keymesh_core::capability::follower::check_max_age(
            FEED_MAX_AGE_SECS.name,
            config.feed_max_age,
        )?;
        if config.session_idle > config.session_max {
            return Err(ConfigError::Invalid {
                setting: SESSION_IDLE_SECS.name,
                reason: "must not exceed MANAGEMENT_SESSION_MAX_SECS".into(),
            });
        }
        if config
            .mail_from
            .parse::<lettre::message::Mailbox>()
            .is_err()
        {
            return Err(ConfigError::Invalid {
                setting: MAIL_FROM.name,
                reason: "is not a mailbox (`Name <address>` or `address`)".into(),
            });
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(extra: &[(&'static str, &str)]) -> Result<ManagementConfig, ConfigError> {
        let mut env = vec![("MANAGEMENT_SECRET_KEY", "k".repeat(32))];
        env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        ManagementConfig::load(&Source::from_env(env), Environment::Development)
    }

    /// The settings every production configuration here shares.
    fn production() -> Vec<(&'static str, String)> {
        vec![
            ("KEYMESH_ENV", "production".to_owned()),
            ("MANAGEMENT_DATABASE_URL", "postgres://m@db/m".to_owned()),
            (
                "MANAGEMENT_PUBLIC_URL",
                "https://keymesh.example.com".to_owned(),
            ),
            ("MANAGEMENT_SECRET_KEY", "s".repeat(40)),
            ("MANAGEMENT_MAIL_FROM", "Keymesh <k@example.com>".to_owned()),
        ]
    }

    #[test]
    fn development_defaults_print_mail_and_use_the_builtin_roles() {
        let config = dev(&[]).expect("defaults");
        assert!(matches!(config.mail, MailConfig::Console));
        assert_eq!(config.login_ttl, Duration::from_secs(900));
        assert_eq!(config.code_attempts, 5);
    }

    #[test]
    fn production_refuses_plain_smtp_without_naming_the_password() {
        let mut env = production();
        env.extend([
            (
                "MANAGEMENT_VAULT_URL",
                "https://vault.internal:7801".to_owned(),
            ),
            ("MANAGEMENT_VAULT_API_KEY", "v".repeat(40)),
            (
                "MANAGEMENT_SMTP_URL",
                "smtp://u:hunter2-hunter2-hunter2-hunter2@mail.example.com:587".to_owned(),
            ),
        ]);
        let err = ManagementConfig::load(&Source::from_env(env.clone()), Environment::Production)
            .expect_err("plain smtp");
        assert!(err.to_string().contains("MANAGEMENT_SMTP_URL"), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        env.last_mut().expect("smtp").1 =
            "smtp://u:hunter2-hunter2-hunter2-hunter2@mail.example.com:587?tls=required".into();
        ManagementConfig::load(&Source::from_env(env.clone()), Environment::Production)
            .expect("STARTTLS required is accepted");
        // The provider chose it: a short URL without credentials is not a weak secret.
        env.last_mut().expect("smtp").1 = "smtps://mail.example.com".into();
        ManagementConfig::load(&Source::from_env(env), Environment::Production)
            .expect("implicit TLS without credentials is accepted");
    }

    /// The vault and relay URLs carry management's vault credential, every minted token and
    /// the relay's audit key: in production they are https, or loopback, or the operator says
    /// a mesh encrypts them (`MESH_MTLS`).
    #[test]
    fn production_refuses_plain_http_to_the_vault_and_the_relay() {
        let mut base = production();
        base.extend([
            ("MANAGEMENT_VAULT_API_KEY", "v".repeat(40)),
            ("MANAGEMENT_SMTP_URL", "smtps://mail.example.com".to_owned()),
        ]);
        let load = |extra: &[(&'static str, &str)]| {
            let mut env = base.clone();
            env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
            ManagementConfig::load(&Source::from_env(env), Environment::Production)
        };
        let err = load(&[("MANAGEMENT_VAULT_URL", "http://vault.internal:7801")])
            .expect_err("plain http to the vault");
        assert!(err.to_string().contains("MANAGEMENT_VAULT_URL"), "{err}");
        assert!(err.to_string().contains("MESH_MTLS"), "{err}");
        let err = load(&[
            ("MANAGEMENT_VAULT_URL", "https://vault.internal:7801"),
            ("MANAGEMENT_RELAY_URL", "http://relay.internal:7802"),
        ])
        .expect_err("plain http to the relay");
        assert!(err.to_string().contains("MANAGEMENT_RELAY_URL"), "{err}");
        load(&[("MANAGEMENT_VAULT_URL", "http://127.0.0.1:7801")]).expect("loopback");
        load(&[
            ("MANAGEMENT_VAULT_URL", "http://vault.internal:7801"),
            ("MANAGEMENT_RELAY_URL", "http://relay.internal:7802"),
            ("MESH_MTLS", "true"),
        ])
        .expect("a mesh's sidecars carry them over mTLS");
    }

    #[test]
    fn a_bad_rbac_file_is_refused_at_start_with_its_path() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("rbac.toml");
        std::fs::write(&path, "[roles]\nadmin = [\"*\"]\n").expect("write");
        let err = dev(&[("MANAGEMENT_RBAC_FILE", path.to_str().expect("utf-8"))])
            .expect_err("roles missing");
        assert!(err.to_string().contains("rbac.toml"), "{err}");
    }
}

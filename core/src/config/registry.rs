//! The setting registry, value sources, the production guard and the documentation renderer.

use std::{collections::BTreeMap, fmt::Write as _, path::PathBuf, str::FromStr};

use secrecy::SecretString;

/// What kind of value a setting holds; decides how it is shown and checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SettingKind {
    /// An ordinary value, settable by flag or environment.
    Value,
    /// A boolean switch (`true`/`false`/`1`/`0`/`yes`/`no`).
    Switch,
    /// A secret: environment or `NAME_FILE` only, never a flag, never logged; at least 32 bytes
    /// in production.
    Secret,
}

/// One configuration setting. Declared once; everything else is derived from it.
#[derive(Debug)]
pub struct Setting {
    /// Environment variable name, e.g. `VAULT_LISTEN`. The flag is derived: `--vault-listen`.
    pub name: &'static str,
    /// Kind of value.
    pub kind: SettingKind,
    /// One-line description for `--help` and the docs.
    pub help: &'static str,
    /// Default used when nothing is set. For `required_in_production` settings it applies only
    /// outside production.
    pub default: Option<&'static str>,
    /// A development shortcut: refused when switched on in production.
    pub dev_only: bool,
    /// Must be set explicitly when `KEYMESH_ENV=production`.
    pub required_in_production: bool,
    /// A secret whose value someone else chose (e.g. a mail server URL with the provider's
    /// password): kept secret, but not held to [`MIN_SECRET_BYTES`].
    pub issued_elsewhere: bool,
    /// A value that may also come from the file named by `NAME_FILE` (a database URL holding
    /// a password, mounted like a secret).
    pub from_file: bool,
}

impl Setting {
    /// An ordinary setting with no default.
    pub const fn value(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            kind: SettingKind::Value,
            help,
            default: None,
            dev_only: false,
            required_in_production: false,
            issued_elsewhere: false,
            from_file: false,
        }
    }

    /// A secret setting (environment or `_FILE` only).
    pub const fn secret(name: &'static str, help: &'static str) -> Self {
        Self {
            kind: SettingKind::Secret,
            ..Self::value(name, help)
        }
    }

    /// A boolean switch, off by default.
    pub const fn switch(name: &'static str, help: &'static str) -> Self {
        Self {
            kind: SettingKind::Switch,
            default: Some("false"),
            ..Self::value(name, help)
        }
    }

    /// With a default value.
    pub const fn default(mut self, value: &'static str) -> Self {
        self.default = Some(value);
        self
    }

    /// Marked as a development shortcut.
    pub const fn dev_only(mut self) -> Self {
        self.dev_only = true;
        self
    }

    /// Marked as required in production.
    pub const fn required_in_production(mut self) -> Self {
        self.required_in_production = true;
        self
    }

    /// Also readable from the file named by `NAME_FILE`.
    pub const fn from_file(mut self) -> Self {
        self.from_file = true;
        self
    }

    /// A secret chosen elsewhere: exempt from the production length check.
    pub const fn issued_elsewhere(mut self) -> Self {
        self.issued_elsewhere = true;
        self
    }

    /// The long flag, derived from the name: `VAULT_LISTEN` → `vault-listen`.
    pub fn flag(&self) -> String {
        self.name.to_ascii_lowercase().replace('_', "-")
    }

    /// The name of the variable that points at a file holding this secret.
    pub fn file_var(&self) -> String {
        format!("{}_FILE", self.name)
    }
}

/// A configuration problem. Every variant names the setting, so the operator knows what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required setting is missing.
    #[error("{setting} is required in production: set it (see docs/configuration.md)")]
    Missing {
        /// Setting name.
        setting: &'static str,
    },
    /// A value does not parse or is not acceptable.
    #[error("{setting} is invalid: {reason}")]
    Invalid {
        /// Setting name.
        setting: &'static str,
        /// Why.
        reason: String,
    },
    /// The production guard refused a setting.
    #[error("refusing to start with KEYMESH_ENV=production: {setting} {reason}")]
    Production {
        /// Setting name.
        setting: &'static str,
        /// Why.
        reason: String,
    },
    /// A secret file could not be read.
    #[error("{setting}_FILE could not be read ({path}): {source}")]
    SecretFile {
        /// Setting name.
        setting: &'static str,
        /// File path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// Where values come from: parsed flags and the process environment (or, in tests, a map).
#[derive(Clone, Default)]
pub struct Source {
    flags: BTreeMap<String, String>,
    env: BTreeMap<String, String>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Values may be secrets: show only which names are present.
        f.debug_struct("Source")
            .field("flags", &self.flags.keys().collect::<Vec<_>>())
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Source {
    /// Values from the process environment and the parsed command line.
    pub fn from_process(matches: &clap::ArgMatches, settings: &[&Setting]) -> Self {
        let mut flags = BTreeMap::new();
        for setting in settings {
            if setting.kind == SettingKind::Secret {
                continue;
            }
            if let Ok(Some(v)) = matches.try_get_one::<String>(setting.name) {
                flags.insert(setting.name.to_owned(), v.clone());
            }
        }
        // `vars()` would panic on a variable that is not UTF-8; such variables are not ours.
        let env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        Self { flags, env }
    }

    /// Values from explicit environment pairs (tests, embedding).
    pub fn from_env<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self {
            flags: BTreeMap::new(),
            env: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// Set a value as if given on the command line (highest precedence).
    pub fn set_flag(&mut self, name: &str, value: impl Into<String>) {
        self.flags.insert(name.to_owned(), value.into());
    }

    /// Supply a value for `name` unless the flags or environment already set it (or its
    /// `_FILE` form). Used by `keymesh dev` for development-only secrets.
    pub fn set_env_default(&mut self, name: &str, value: impl Into<String>) {
        let file = format!("{name}_FILE");
        if !self.flags.contains_key(name)
            && !self.env.contains_key(name)
            && !self.env.contains_key(&file)
        {
            self.env.insert(name.to_owned(), value.into());
        }
    }

    /// The explicitly set value (flag, environment or secret file), without defaults.
    pub fn explicit(&self, setting: &Setting) -> Result<Option<String>, ConfigError> {
        if let Some(v) = self.flags.get(setting.name) {
            return Ok(Some(v.clone()));
        }
        let direct = self.env.get(setting.name).filter(|v| !v.is_empty());
        if setting.kind != SettingKind::Secret && !setting.from_file {
            return Ok(direct.cloned());
        }
        let file = self.env.get(&setting.file_var()).filter(|v| !v.is_empty());
        match (direct, file) {
            (Some(_), Some(_)) => Err(ConfigError::Invalid {
                setting: setting.name,
                reason: format!(
                    "set either {} or {}, not both",
                    setting.name,
                    setting.file_var()
                ),
            }),
            (Some(v), None) => Ok(Some(v.clone())),
            (None, Some(path)) => {
                let path = PathBuf::from(path);
                let raw =
                    std::fs::read_to_string(&path).map_err(|source| ConfigError::SecretFile {
                        setting: setting.name,
                        path: path.clone(),
                        source,
                    })?;
                // Files written by `echo` or editors end with a newline that is not the secret.
                Ok(Some(raw.trim_end_matches(['\r', '\n']).to_owned()))
            }
            (None, None) => Ok(None),
        }
    }

    /// The value, falling back to the setting's default.
    pub fn get(&self, setting: &Setting) -> Result<Option<String>, ConfigError> {
        Ok(self
            .explicit(setting)?
            .or_else(|| setting.default.map(str::to_owned)))
    }

    /// The value parsed as `T`, falling back to the default.
    pub fn parse<T>(&self, setting: &Setting) -> Result<Option<T>, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        self.get(setting)?
            .map(|raw| {
                raw.trim().parse::<T>().map_err(|e| ConfigError::Invalid {
                    setting: setting.name,
                    reason: e.to_string(),
                })
            })
            .transpose()
    }

    /// A value that must be present (it has a default or was set).
    pub fn require<T>(&self, setting: &Setting) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        self.parse(setting)?.ok_or(ConfigError::Missing {
            setting: setting.name,
        })
    }

    /// A required number that must be above zero (its type's default).
    pub fn require_positive<T>(&self, setting: &Setting) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + Default,
        T::Err: std::fmt::Display,
    {
        let value: T = self.require(setting)?;
        if value <= T::default() {
            return Err(ConfigError::Invalid {
                setting: setting.name,
                reason: "must be positive".into(),
            });
        }
        Ok(value)
    }

    /// A required, positive number of seconds.
    pub fn require_secs(&self, setting: &Setting) -> Result<std::time::Duration, ConfigError> {
        self.require_positive(setting)
            .map(std::time::Duration::from_secs)
    }

    /// A secret that must be set.
    pub fn require_secret(&self, setting: &Setting) -> Result<SecretString, ConfigError> {
        self.secret(setting)?.ok_or(ConfigError::Missing {
            setting: setting.name,
        })
    }

    /// A boolean switch.
    pub fn switch(&self, setting: &Setting) -> Result<bool, ConfigError> {
        match self.get(setting)? {
            None => Ok(false),
            Some(raw) => parse_bool(&raw).ok_or_else(|| ConfigError::Invalid {
                setting: setting.name,
                reason: format!("expected true or false, got {raw:?}"),
            }),
        }
    }

    /// A secret, wrapped so it cannot be printed by accident.
    pub fn secret(&self, setting: &Setting) -> Result<Option<SecretString>, ConfigError> {
        Ok(self.get(setting)?.map(SecretString::from))
    }
}

fn parse_bool(raw: &str) -> Option<bool> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Minimum length of any secret in production.
pub const MIN_SECRET_BYTES: usize = 32;

/// The production guard, shared by every service: refuses a development shortcut switched on,
/// a secret shorter than [`MIN_SECRET_BYTES`], or a required setting left unset. It checks
/// every setting and reports the first problem in registry order.
pub fn production_guard(settings: &[&Setting], source: &Source) -> Result<(), ConfigError> {
    for setting in settings {
        let explicit = source.explicit(setting)?;
        if setting.required_in_production && explicit.is_none() {
            return Err(ConfigError::Missing {
                setting: setting.name,
            });
        }
        if setting.dev_only && source.switch(setting)? {
            return Err(ConfigError::Production {
                setting: setting.name,
                reason: "is a development-only option and must be off".into(),
            });
        }
        if setting.kind == SettingKind::Secret
            && !setting.issued_elsewhere
            && let Some(value) = &explicit
            && value.len() < MIN_SECRET_BYTES
        {
            return Err(ConfigError::Production {
                setting: setting.name,
                reason: format!(
                    "is {} bytes; secrets must be at least {MIN_SECRET_BYTES} random bytes",
                    value.len()
                ),
            });
        }
    }
    Ok(())
}

/// The clap arguments for settings that have flags (every kind but secrets).
pub fn clap_args(settings: &[&Setting]) -> Vec<clap::Arg> {
    settings
        .iter()
        .filter(|s| s.kind != SettingKind::Secret)
        .map(|s| {
            let mut help = format!("{} [env: {}]", s.help, s.name);
            if let Some(d) = s.default {
                let qualifier = if s.required_in_production {
                    " (not in production)"
                } else {
                    ""
                };
                let _ = write!(help, " [default{qualifier}: {d}]");
            }
            if s.dev_only {
                help.push_str(" [development only]");
            }
            let arg = clap::Arg::new(s.name)
                .long(s.flag())
                .help(help)
                .action(clap::ArgAction::Set);
            if s.kind == SettingKind::Switch {
                arg.value_name("BOOL")
                    .num_args(0..=1)
                    .default_missing_value("true")
            } else {
                arg.value_name("VALUE")
            }
        })
        .collect()
}

/// Text listing the secrets (which have no flags) for the end of `--help`.
pub fn secrets_help(settings: &[&Setting]) -> Option<String> {
    let secrets: Vec<_> = settings
        .iter()
        .filter(|s| s.kind == SettingKind::Secret)
        .collect();
    if secrets.is_empty() {
        return None;
    }
    let mut out = String::from("Secrets (environment only; NAME or NAME_FILE):\n");
    for s in secrets {
        let _ = writeln!(out, "  {} / {}\n      {}", s.name, s.file_var(), s.help);
    }
    Some(out)
}

/// Render one Markdown section per group of settings, for `docs/configuration.md`.
pub fn render_markdown(sections: &[(&str, &str, &[&Setting])]) -> String {
    let mut out = String::new();
    for (title, intro, settings) in sections {
        let _ = writeln!(out, "## {title}\n\n{intro}\n");
        out.push_str(
            "| variable | flag | default | notes | description |\n|---|---|---|---|---|\n",
        );
        for s in *settings {
            let flag = match s.kind {
                SettingKind::Secret => "—".to_owned(),
                _ => format!("`--{}`", s.flag()),
            };
            let default = s.default.map_or("—".to_owned(), |d| format!("`{d}`"));
            let mut notes = Vec::new();
            if s.kind == SettingKind::Secret && s.issued_elsewhere {
                notes.push(format!("secret; or `{}`", s.file_var()));
            } else if s.kind == SettingKind::Secret {
                notes.push(format!(
                    "secret; or `{}`; ≥ 32 bytes in production",
                    s.file_var()
                ));
            } else if s.from_file {
                notes.push(format!("or `{}`", s.file_var()));
            }
            if s.required_in_production {
                notes.push("required in production".to_owned());
            }
            if s.dev_only {
                notes.push("development only: refused in production".to_owned());
            }
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} |",
                s.name,
                flag,
                default,
                notes.join("; "),
                s.help
            );
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: Setting = Setting::value("T_PLAIN", "a value").default("d");
    const NEEDED: Setting = Setting::value("T_NEEDED", "needed").required_in_production();
    const SECRET: Setting = Setting::secret("T_SECRET", "a secret");
    const SHORTCUT: Setting = Setting::switch("T_SHORTCUT", "dev shortcut").dev_only();
    const ALL: &[&Setting] = &[&PLAIN, &NEEDED, &SECRET, &SHORTCUT];

    fn good() -> Vec<(&'static str, String)> {
        vec![("T_NEEDED", "x".into()), ("T_SECRET", "s".repeat(32))]
    }

    #[test]
    fn precedence_is_flag_then_env_then_default() {
        let mut src = Source::from_env([("T_PLAIN", "env")]);
        assert_eq!(src.get(&PLAIN).expect("get").as_deref(), Some("env"));
        src.set_flag("T_PLAIN", "flag");
        assert_eq!(src.get(&PLAIN).expect("get").as_deref(), Some("flag"));
        let empty = Source::default();
        assert_eq!(empty.get(&PLAIN).expect("get").as_deref(), Some("d"));
    }

    #[test]
    fn secret_from_file_strips_newline_and_refuses_both() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s");
        std::fs::write(&path, "from-file\n").expect("write");
        let path = path.display().to_string();
        let src = Source::from_env([("T_SECRET_FILE", path.clone())]);
        assert_eq!(src.get(&SECRET).expect("get").as_deref(), Some("from-file"));
        let both = Source::from_env([("T_SECRET_FILE", path), ("T_SECRET", "x".into())]);
        assert!(matches!(
            both.get(&SECRET),
            Err(ConfigError::Invalid { .. })
        ));
        let missing = Source::from_env([("T_SECRET_FILE", "/nonexistent/keymesh")]);
        let err = missing.get(&SECRET).expect_err("missing file");
        assert!(err.to_string().contains("T_SECRET_FILE"), "{err}");
    }

    #[test]
    fn a_value_marked_from_file_reads_name_file_and_others_do_not() {
        const URL: Setting = Setting::value("T_URL", "a database URL").from_file();
        const PLAIN: Setting = Setting::value("T_PLAIN", "a plain value");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("url");
        std::fs::write(&path, "postgres://u:p@db/x\n").expect("write");
        let path = path.display().to_string();
        let src = Source::from_env([("T_URL_FILE", path.clone()), ("T_PLAIN_FILE", path)]);
        assert_eq!(
            src.get(&URL).expect("get").as_deref(),
            Some("postgres://u:p@db/x")
        );
        assert_eq!(src.get(&PLAIN).expect("get"), None);
    }

    #[test]
    fn guard_accepts_a_good_configuration() {
        production_guard(ALL, &Source::from_env(good())).expect("good config passes");
    }

    #[test]
    fn guard_refuses_missing_required_setting_by_name() {
        let mut env = good();
        env.retain(|(k, _)| *k != "T_NEEDED");
        let err = production_guard(ALL, &Source::from_env(env)).expect_err("missing");
        assert!(matches!(
            err,
            ConfigError::Missing {
                setting: "T_NEEDED"
            }
        ));
        assert!(err.to_string().contains("T_NEEDED"));
    }

    #[test]
    fn guard_refuses_short_secret_from_env_or_file() {
        let mut env = good();
        env.retain(|(k, _)| *k != "T_SECRET");
        env.push(("T_SECRET", "s".repeat(31)));
        let err = production_guard(ALL, &Source::from_env(env)).expect_err("short");
        assert!(err.to_string().contains("T_SECRET"), "{err}");

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s");
        std::fs::write(&path, "short\n").expect("write");
        let mut env = good();
        env.retain(|(k, _)| *k != "T_SECRET");
        env.push(("T_SECRET_FILE", path.display().to_string()));
        let err = production_guard(ALL, &Source::from_env(env)).expect_err("short file");
        assert!(matches!(
            err,
            ConfigError::Production {
                setting: "T_SECRET",
                ..
            }
        ));
    }

    #[test]
    fn guard_refuses_dev_shortcut_switched_on() {
        for on in ["true", "1", "yes"] {
            let mut env = good();
            env.push(("T_SHORTCUT", on.into()));
            let err = production_guard(ALL, &Source::from_env(env)).expect_err("dev only");
            assert!(matches!(
                err,
                ConfigError::Production {
                    setting: "T_SHORTCUT",
                    ..
                }
            ));
        }
        let mut env = good();
        env.push(("T_SHORTCUT", "false".into()));
        production_guard(ALL, &Source::from_env(env)).expect("off is fine");
    }

    #[test]
    fn secrets_have_no_flag_and_are_listed_separately() {
        let args = clap_args(ALL);
        assert!(args.iter().all(|a| a.get_id() != "T_SECRET"));
        assert!(
            secrets_help(ALL)
                .expect("secrets")
                .contains("T_SECRET_FILE")
        );
    }

    #[test]
    fn positive_numbers_seconds_and_required_secrets() {
        let source = Source::from_env([("T_PLAIN", "0"), ("T_NEEDED", "90")]);
        let zero = source.require_secs(&PLAIN).expect_err("zero seconds");
        assert!(zero.to_string().contains("T_PLAIN"), "{zero}");
        assert_eq!(
            source.require_secs(&NEEDED).expect("positive"),
            std::time::Duration::from_secs(90)
        );
        assert_eq!(
            source.require_positive::<u32>(&NEEDED).expect("positive"),
            90
        );
        let missing = source.require_secret(&SECRET).expect_err("unset");
        assert!(missing.to_string().contains("T_SECRET"), "{missing}");
    }

    #[test]
    fn debug_of_source_hides_values() {
        let src = Source::from_env([("T_SECRET", "super-secret-value")]);
        assert!(!format!("{src:?}").contains("super-secret-value"));
    }
}

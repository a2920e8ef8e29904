//! Configuration: one declarative registry of [`Setting`]s is the single source of truth for
//! the command-line flags, `--help`, `docs/configuration.md` and the production guard.
//!
//! Values come from, in order: a command-line flag, the environment variable, for secrets the
//! file named by `NAME_FILE`, then the setting's development default. Secrets have no flag
//! (a flag shows up in `ps`), only the variable and its `_FILE` form.

mod common;
mod registry;
mod services;

pub use common::{
    COMMON_SETTINGS, CommonConfig, Environment, HttpConfig, LogFormat, RateLimitConfig,
};
pub use registry::{
    ConfigError, Setting, SettingKind, Source, clap_args, production_guard, render_markdown,
    secrets_help,
};
pub use services::{
    DevConfig, ServiceConfig, ServiceName, check_service_url, management, relay, vault,
};

//! The command line, built from the setting registry so `--help`, the docs and the loader agree.

use clap::{Arg, ArgAction, Command, builder::PossibleValuesParser};
#[cfg(test)]
use keymesh_core::config::render_markdown;
use keymesh_core::config::{
    COMMON_SETTINGS, DevConfig, ServiceName, Setting, clap_args, secrets_help,
};

/// A subcommand whose flags are the given settings.
fn with_settings(name: &'static str, about: &'static str, settings: &[&Setting]) -> Command {
    let mut cmd = Command::new(name).about(about).args(clap_args(settings));
    if let Some(secrets) = secrets_help(settings) {
        cmd = cmd.after_help(secrets);
    }
    cmd
}

fn service_about(name: ServiceName) -> &'static str {
    match name {
        ServiceName::Management => {
            "Run the management server (users, sessions, approvals, audit) as its own process"
        }
        ServiceName::Vault => "Run the group vault (secrets, capability tokens) as its own process",
        ServiceName::Relay => "Run the zero-knowledge relay as its own process",
    }
}

/// Every setting a single-service command reads.
pub fn service_settings(name: ServiceName) -> Vec<&'static Setting> {
    match name {
        ServiceName::Vault => keymesh_vault::VaultConfig::all_settings(),
        ServiceName::Relay => keymesh_relay::RelayConfig::all_settings(),
        ServiceName::Management => keymesh_management::ManagementConfig::all_settings(),
    }
}

/// `KEYMESH_DEV_ADMIN_EMAIL`: the admin `keymesh dev` bootstraps.
pub const DEV_ADMIN_EMAIL: Setting = Setting::value(
    "KEYMESH_DEV_ADMIN_EMAIL",
    "Address of the admin `keymesh dev` creates at start; its sign-in link is printed in the banner.",
)
.default("admin@localhost");

/// `KEYMESH_DEV_DEMO`: whether `keymesh dev` prepares the quickstart's demo.
pub const DEV_DEMO: Setting = Setting::value(
    "KEYMESH_DEV_DEMO",
    "Whether `keymesh dev` prepares the quickstart's demo (docs/quickstart.md): a second admin and a responder signed in, a group `demo` with its vault created and unlocked through a real `vault.unlock` approval, and `.keymesh/env` holding the URLs and their sessions.",
)
.default("true");

#[cfg(test)]
const DEV_SETTINGS: &[&Setting] = &[&DEV_ADMIN_EMAIL, &DEV_DEMO];

/// Limits `keymesh dev` relaxes so a scripted trial is not stopped by them, with why; a value
/// set in the environment or by a flag still wins, and production defaults are unchanged.
/// docs/quickstart.md lists them (a test keeps the list and the page in step).
pub const TRIAL_DEFAULTS: &[(&Setting, &str, &str)] = &[
    (
        &keymesh_management::config::REAUTH_SECS,
        "43200",
        "admin actions stay allowed for 12 h after sign-in, not 15 min",
    ),
    (
        &keymesh_management::config::ENROLL_TTL_SECS,
        "3600",
        "an enrollment code lives an hour, not 15 min",
    ),
    (
        &keymesh_management::config::LOGIN_PER_EMAIL_PER_HOUR,
        "60",
        "sign-ins per address per hour",
    ),
    (
        &keymesh_management::config::LOGIN_PER_IP_PER_MINUTE,
        "60",
        "sign-ins per IP per minute: every trial user is 127.0.0.1",
    ),
    (
        &keymesh_management::config::AUDIT_CHECKPOINT_SECS,
        "10",
        "the audit chain's head is signed every 10 s, not 5 min, so a short trial sees checkpoints",
    ),
    (
        &keymesh_vault::config::UNLOCK_ATTEMPTS_PER_MINUTE,
        "60",
        "vault unlock attempts per minute: management's calls for every group come from one address",
    ),
];

/// Every setting `keymesh dev` reads.
pub fn dev_settings() -> Vec<&'static Setting> {
    let mut all = DevConfig::all_settings();
    all.extend_from_slice(keymesh_management::config::SETTINGS);
    all.push(&DEV_ADMIN_EMAIL);
    all.push(&DEV_DEMO);
    all.extend_from_slice(keymesh_vault::config::SETTINGS);
    all.extend_from_slice(keymesh_relay::config::SETTINGS);
    all
}

/// Builds a service's OpenAPI document.
pub type BuildDocument = fn() -> utoipa::openapi::OpenApi;

/// The services with an OpenAPI document, each with the function that builds it: `keymesh
/// openapi <name>` prints it, `docs/openapi/<name>.json` holds it and a test fails when that
/// file drifts. A service gets its document by adding its line here (docs/openapi/README.md).
pub const OPENAPI: &[(&str, BuildDocument)] = &[
    ("management", keymesh_management::openapi),
    ("vault", keymesh_vault::openapi),
    ("relay", keymesh_relay::openapi),
];

/// `service`'s OpenAPI document as committed under `docs/openapi/`: pretty JSON, one newline.
pub fn openapi_json(service: &str) -> Result<String, String> {
    let (_, build) = OPENAPI
        .iter()
        .find(|(name, _)| *name == service)
        .ok_or_else(|| format!("no OpenAPI document for {service}"))?;
    build()
        .to_pretty_json()
        .map(|json| json + "\n")
        .map_err(|e| format!("cannot render the {service} OpenAPI document: {e}"))
}

/// The whole CLI.
pub fn command() -> Command {
    let mut cmd = Command::new("keymesh")
        .version(concat!(
            env!("CARGO_PKG_VERSION"),
            " (",
            env!("KEYMESH_COMMIT"),
            ")"
        ))
        .about("Keymesh: zero-knowledge relay, group vault and management server")
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(with_settings(
            "dev",
            "Run every service in one process on SQLite files under ./.keymesh/ (development only)",
            &dev_settings(),
        ));
    for name in ServiceName::ALL {
        let mut service =
            with_settings(name.as_str(), service_about(name), &service_settings(name));
        if name == ServiceName::Management {
            service = service.subcommand(
                Command::new("bootstrap-admin")
                    .about("Make an address an admin (creating the account) and print a one-time sign-in link for it")
                    .arg(
                        Arg::new("email")
                            .long("email")
                            .value_name("EMAIL")
                            .required(true)
                            .help("The admin's e-mail address"),
                    ),
            );
        }
        cmd = cmd.subcommand(service);
    }
    let migrate_settings: Vec<&Setting> = std::iter::once(COMMON_SETTINGS[0])
        .chain(ServiceName::ALL.iter().map(|s| s.settings()[1]))
        .collect();
    let verify_settings: Vec<&Setting> = migrate_settings
        .iter()
        .copied()
        .chain(std::iter::once(&keymesh_management::config::SECRET_KEY))
        .collect();
    let audit = Command::new("audit")
        .about("Check an audit log")
        .subcommand_required(true)
        .subcommand(
            with_settings(
                "verify",
                "Walk a service's hash-chained audit log and name the first broken link; with MANAGEMENT_SECRET_KEY also check management's signed checkpoints (exit 0 intact, 3 broken)",
                &verify_settings,
            )
            .arg(
                Arg::new("service")
                    .long("service")
                    .value_name("SERVICE")
                    .default_value("management")
                    .value_parser(["management", "vault", "relay"])
                    .help("Whose audit log: management (the central log), vault or relay"),
            )
            .arg(
                Arg::new("json")
                    .long("json")
                    .action(ArgAction::SetTrue)
                    .help("Print the report as JSON"),
            ),
        );
    let openapi = Command::new("openapi")
        .about(
            "Print a service's OpenAPI document as JSON (the same as docs/openapi/<service>.json)",
        )
        .arg(
            Arg::new("service")
                .value_name("SERVICE")
                .required(true)
                .value_parser(PossibleValuesParser::new(
                    OPENAPI.iter().map(|(name, _)| *name),
                ))
                .help("Whose API"),
        );
    let health = Command::new("health")
        .about(
            "Check a running service's health and exit 0 if it answers 2xx, else 1: a container \
             health check for an image without a shell",
        )
        .arg(
            Arg::new("url")
                .value_name("URL")
                .required(true)
                .help("e.g. https://127.0.0.1:7801/health/ready"),
        )
        .arg(
            Arg::new("cacert")
                .long("cacert")
                .value_name("FILE")
                .help("PEM bundle of the CA to trust (default: TLS_CA_FILE if set, else the platform's roots)"),
        );
    cmd.subcommand(audit)
        .subcommand(openapi)
        .subcommand(health)
        .subcommand(
            with_settings(
                "migrate",
                "Apply database migrations and exit (services also migrate at start)",
                &migrate_settings,
            )
            .arg(
                Arg::new("service")
                    .value_name("SERVICE")
                    .help("management, vault or relay; all three when omitted")
                    .action(ArgAction::Append)
                    .value_parser(["management", "vault", "relay"]),
            ),
        )
}

/// `docs/configuration.md`, rendered from the registry.
#[cfg(test)]
fn configuration_docs() -> String {
    let mut sections: Vec<(&str, &str, &[&Setting])> = vec![(
        "Shared by every service",
        "Read by `keymesh dev`, `keymesh management`, `keymesh vault` and `keymesh relay`.",
        COMMON_SETTINGS,
    )];
    let titles = [
        (
            "Management service",
            "Read by `keymesh management` and `keymesh dev`.",
        ),
        (
            "Vault service",
            "Read by `keymesh vault` and `keymesh dev`.",
        ),
        (
            "Relay service",
            "Read by `keymesh relay` and `keymesh dev`.",
        ),
    ];
    for (name, (title, intro)) in ServiceName::ALL.into_iter().zip(titles) {
        sections.push((title, intro, name.settings()));
        if name == ServiceName::Management {
            sections.push((
                "Management: sign-in, sessions and mail",
                "Read by `keymesh management` and `keymesh dev` (which keeps a development secret key in `.keymesh/management-secret.key` and prints mail to the console unless `MANAGEMENT_SMTP_URL` is set).",
                keymesh_management::config::SETTINGS,
            ));
            sections.push((
                "Development only",
                "Read by `keymesh dev` alone. `keymesh dev` also relaxes a few limits for a trial (the re-authentication window, enrollment code lifetime, sign-in rate limits, vault unlock attempts); docs/quickstart.md lists them, and production defaults are unchanged.",
                DEV_SETTINGS,
            ));
        }
        if name == ServiceName::Vault {
            sections.push((
                "Vault: keys, tokens and limits",
                "Read by `keymesh vault` and `keymesh dev` (which supplies development secrets: a master key kept in `.keymesh/vault-master.key` and service credentials random per run, shown in its banner).",
                keymesh_vault::config::SETTINGS,
            ));
        }
        if name == ServiceName::Relay {
            sections.push((
                "Relay: vault feed and limits",
                "Read by `keymesh relay` and `keymesh dev` (which points the relay at its own vault with the vault's feed credential).",
                keymesh_relay::config::SETTINGS,
            ));
        }
    }
    let mut out = String::from(
        "# Configuration\n\n\
         <!-- Generated from the setting registry in keymesh-core (`keymesh_core::config`); \
         `cargo test` fails when this file drifts. Regenerate with \
         `KEYMESH_UPDATE_DOCS=1 cargo test -p keymesh`. -->\n\n\
         Every setting is an environment variable; every non-secret one is also a flag of the \
         command that reads it (`VAULT_LISTEN` → `--vault-listen`), and `keymesh <command> --help` \
         lists them. A flag wins over the variable, which wins over the default.\n\n\
         **Secrets** have no flag (flags show up in `ps`): set `NAME`, or `NAME_FILE` with the \
         path of a file holding it (a trailing newline is ignored; setting both is an error).\n\n\
         **Environments.** `keymesh management|vault|relay` run in production unless \
         `KEYMESH_ENV=development`; `keymesh dev` always runs in development and refuses \
         `KEYMESH_ENV=production`. In production the process refuses to start, naming the \
         setting, when a development-only option is switched on, a secret is shorter than 32 \
         bytes, or a setting marked *required in production* is unset (its default applies only \
         outside production).\n\n",
    );
    out.push_str(&render_markdown(&sections));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        command().debug_assert();
    }

    #[test]
    fn configuration_docs_are_in_sync() {
        keymesh_core::docs::assert_doc_in_sync("docs/configuration.md", &configuration_docs());
    }

    /// docs/quickstart.md's table of the limits `keymesh dev` relaxes is this list.
    #[test]
    fn the_quickstart_lists_every_trial_default() {
        let page = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/quickstart.md"),
        )
        .expect("docs/quickstart.md");
        let rows: Vec<&str> = page
            .lines()
            .skip_while(|l| !l.starts_with("<!-- trial-defaults"))
            .skip(3)
            .take_while(|l| l.starts_with('|'))
            .collect();
        let want: Vec<String> = TRIAL_DEFAULTS
            .iter()
            .map(|(setting, value, why)| format!("| `{}` | `{value}` | {why} |", setting.name))
            .collect();
        assert_eq!(
            rows, want,
            "docs/quickstart.md's trial defaults table drifted"
        );
    }

    #[test]
    fn openapi_docs_are_complete_and_in_sync() {
        for (name, build) in OPENAPI {
            let problems = keymesh_core::openapi::problems(&build());
            assert!(problems.is_empty(), "{name}: {problems:#?}");
            let json = openapi_json(name).expect("render");
            keymesh_core::docs::assert_doc_in_sync(&format!("docs/openapi/{name}.json"), &json);
        }
    }

    #[test]
    fn help_lists_every_setting_of_a_service() {
        let mut cmd = command();
        let vault = cmd.find_subcommand_mut("vault").expect("vault");
        let help = vault.render_long_help().to_string();
        for setting in service_settings(ServiceName::Vault) {
            assert!(
                help.contains(setting.name),
                "--help misses {}",
                setting.name
            );
        }
    }
}

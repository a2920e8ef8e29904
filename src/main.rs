//! `keymesh`: the server binary. `dev` runs everything in one process; `management`, `vault` and
//! `relay` run one service each; `migrate` applies database migrations; `openapi` prints an
//! API document.

mod cli;
mod demo;
#[cfg(test)]
mod metrics_docs;
mod services;
mod signals;
#[cfg(test)]
mod test_vectors;

use std::{path::Path, process::ExitCode};

use keymesh_core::{
    config::{CommonConfig, ConfigError, Environment, ServiceConfig, ServiceName, Setting, Source},
    storage::Db,
    telemetry,
};
use keymesh_management::ManagementConfig;
use keymesh_relay::RelayConfig;
use keymesh_vault::VaultConfig;
use services::Service;
use tokio_util::sync::CancellationToken;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Exit code for a configuration the process refuses.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    keymesh_core::build::set_commit(env!("KEYMESH_COMMIT"));
    let matches = cli::command().get_matches();
    let (name, sub) = matches.subcommand().expect("a subcommand is required");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}"), 1),
    };
    let result = runtime.block_on(async {
        match name {
            "dev" => dev(sub).await,
            "migrate" => migrate(sub).await,
            "openapi" => openapi(sub),
            "health" => health(sub).await,
            "audit" => match sub.subcommand() {
                Some(("verify", verify)) => audit_verify(verify).await,
                _ => Err("unknown audit command".into()),
            },
            service => run_one(service.parse().map_err(BoxError::from)?, sub).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let code = if err.is::<ConfigError>() {
                EXIT_CONFIG
            } else if err.is::<AuditBroken>() {
                EXIT_AUDIT_BROKEN
            } else {
                1
            };
            fail(&keymesh_core::error::error_chain(err.as_ref()), code)
        }
    }
}

fn fail(message: &str, code: u8) -> ExitCode {
    eprintln!("keymesh: error: {message}");
    ExitCode::from(code)
}

fn init_logs(common: &CommonConfig) -> Result<(), BoxError> {
    telemetry::init(&common.log_level, common.log_format).map_err(BoxError::from)
}

/// The service behind `name`, loaded from `source`.
fn load_service(
    name: ServiceName,
    source: &Source,
    default_env: Environment,
) -> Result<Service, ConfigError> {
    Ok(match name {
        ServiceName::Vault => Service::Vault(Box::new(VaultConfig::load(source, default_env)?)),
        ServiceName::Relay => Service::Relay(Box::new(RelayConfig::load(source, default_env)?)),
        ServiceName::Management => {
            Service::Management(Box::new(ManagementConfig::load(source, default_env)?))
        }
    })
}

/// `keymesh health URL [--cacert FILE]`: GET the URL within 5 s; success only on a 2xx answer.
async fn health(matches: &clap::ArgMatches) -> Result<(), BoxError> {
    let url = matches
        .get_one::<String>("url")
        .ok_or("a URL is required")?;
    let ca = matches
        .get_one::<String>("cacert")
        .cloned()
        .or_else(|| std::env::var("TLS_CA_FILE").ok().filter(|v| !v.is_empty()));
    let cas = ca
        .map(|path| keymesh_core::tls::TrustedCas::load(Path::new(&path)))
        .transpose()?;
    let client = keymesh_core::tls::client_builder(cas.as_ref())
        .timeout(std::time::Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let status = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("{url}: {}", keymesh_core::error::error_chain(&e)))?
        .status();
    if status.is_success() {
        println!("{url}: {status}");
        Ok(())
    } else {
        Err(format!("{url}: {status}").into())
    }
}

/// `keymesh openapi SERVICE`: print the service's OpenAPI document.
fn openapi(matches: &clap::ArgMatches) -> Result<(), BoxError> {
    let service = matches
        .get_one::<String>("service")
        .ok_or("a service is required")?;
    print!("{}", cli::openapi_json(service)?);
    Ok(())
}

/// `keymesh management|vault|relay`: one service, production unless told otherwise.
async fn run_one(name: ServiceName, matches: &clap::ArgMatches) -> Result<(), BoxError> {
    let source = Source::from_process(matches, &cli::service_settings(name));
    if let Some(("bootstrap-admin", sub)) = matches.subcommand() {
        let email = sub
            .get_one::<String>("email")
            .ok_or("--email is required")?;
        return bootstrap_admin(&source, email).await;
    }
    let service = load_service(name, &source, Environment::Production)?;
    init_logs(&service_common(&service))?;
    let shutdown = CancellationToken::new();
    signals::cancel_on_signal(shutdown.clone());
    let running = services::start(service, shutdown).await?;
    running.task.await??;
    Ok(())
}

/// `keymesh management bootstrap-admin --email E`: against management's database, no server.
async fn bootstrap_admin(source: &Source, email: &str) -> Result<(), BoxError> {
    let config = ManagementConfig::load(source, Environment::Production)?;
    let db = Db::open_for(ServiceName::Management, &config.service.database_url).await?;
    let ctx = keymesh_core::ServiceContext::with_db(
        config.service.clone(),
        db.clone(),
        CancellationToken::new(),
    );
    let state = keymesh_management::ManagementState::open(ctx.clone(), config)?;
    let done = keymesh_management::bootstrap::bootstrap_admin(&state, email)
        .await
        .map_err(|e| format!("bootstrap failed: {}", keymesh_core::error::error_chain(&e)))?;
    println!(
        "Admin {} ({}): {}
Sign in within {} minutes (the link works once):
  {}",
        done.user.email,
        done.user.id,
        done.change,
        done.login.ttl.as_secs().div_ceil(60),
        done.login.link(&state)
    );
    ctx.shutdown.cancel();
    db.close().await;
    Ok(())
}

fn service_common(service: &Service) -> CommonConfig {
    service.config().common.clone()
}

/// Where `keymesh dev` keeps its databases, keys and the demo's files.
const DEV_DIR: &str = ".keymesh";

/// Development secrets for `keymesh dev`: the vault master key persists under `.keymesh/`
/// (so tokens survive a restart); service credentials are random per run.
fn dev_secrets(source: &mut Source) -> Result<Vec<(&'static str, String)>, BoxError> {
    let dir = Path::new(DEV_DIR);
    std::fs::create_dir_all(dir)?;
    let master = dir.join("vault-master.key");
    write_new_key(&master)?;
    source.set_env_default("VAULT_MASTER_KEY_FILE", master.display().to_string());
    let management_key = dir.join("management-secret.key");
    write_new_key(&management_key)?;
    source.set_env_default(
        "MANAGEMENT_SECRET_KEY_FILE",
        management_key.display().to_string(),
    );
    let mut shown = Vec::new();
    for name in [
        keymesh_vault::config::MANAGEMENT_API_KEY.name,
        keymesh_vault::config::FEED_API_KEY.name,
        keymesh_relay::config::MANAGEMENT_API_KEY.name,
    ] {
        let value = random_hex();
        source.set_env_default(name, value.clone());
        shown.push((name, value));
    }
    // The relay follows this process's own vault (its address is set once the vault listens)
    // with the vault's feed credential.
    if let Some(feed) = source.secret(&keymesh_vault::config::FEED_API_KEY)? {
        source.set_env_default(
            keymesh_relay::config::FEED_API_KEY.name,
            secrecy::ExposeSecret::expose_secret(&feed),
        );
    }
    Ok(shown)
}

/// A random key in a new file readable by its owner only; an existing file is kept.
fn write_new_key(path: &std::path::Path) -> std::io::Result<()> {
    if path.exists() {
        return Ok(());
    }
    let mut file = std::fs::OpenOptions::new();
    file.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
    std::io::Write::write_all(&mut file.open(path)?, random_hex().as_bytes())
}

fn random_hex() -> String {
    keymesh_core::capability::token::random_key()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `keymesh dev`: every service in one process on SQLite, always development.
async fn dev(matches: &clap::ArgMatches) -> Result<(), BoxError> {
    let settings: Vec<&Setting> = cli::dev_settings();
    let mut source = Source::from_process(matches, &settings);
    if Environment::from_source(&source, Environment::Development)?.is_production() {
        return Err(ConfigError::Production {
            setting: "KEYMESH_ENV",
            reason: "is production, but `keymesh dev` is a development shortcut: run `keymesh management`, `keymesh vault` and `keymesh relay` instead".into(),
        }
        .into());
    }
    let credentials = dev_secrets(&mut source)?;
    for (setting, value, _) in cli::TRIAL_DEFAULTS {
        source.set_env_default(setting.name, *value);
    }
    let mut configs = ServiceName::ALL
        .into_iter()
        .map(|name| load_service(name, &source, Environment::Development))
        .collect::<Result<Vec<_>, _>>()?;
    // Management calls the vault and tells enrolling nodes where the relay is: it starts last,
    // pointed at both (unless they were set explicitly).
    configs.sort_by_key(|c| matches!(c, Service::Management(_)));
    let vault_key = source.require_secret(&keymesh_vault::config::MANAGEMENT_API_KEY)?;
    // Management reads the relay's audit log with the relay's own credential.
    let relay_key = source.require_secret(&keymesh_relay::config::MANAGEMENT_API_KEY)?;
    init_logs(&service_common(&configs[0]))?;
    let shutdown = CancellationToken::new();
    signals::cancel_on_signal(shutdown.clone());

    let relay_vault_explicit = source
        .explicit(&keymesh_relay::config::VAULT_URL)?
        .is_some();
    let mut running: Vec<services::Running> = Vec::new();
    for mut config in configs {
        let addr_of = |name| service_url(&running, name);
        if let Service::Relay(relay) = &mut config
            && !relay_vault_explicit
            && let Some(url) = addr_of(ServiceName::Vault)
        {
            relay.vault_url = Some(url);
        }
        if let Service::Management(management) = &mut config {
            if management.vault.is_none()
                && let Some(url) = addr_of(ServiceName::Vault)
            {
                management.vault = Some(keymesh_management::config::VaultLink {
                    url,
                    api_key: vault_key.clone(),
                });
            }
            if management.relay_url.is_none() {
                management.relay_url = addr_of(ServiceName::Relay);
            }
            if management.relay_audit.is_none()
                && let Some(url) = addr_of(ServiceName::Relay)
            {
                management.relay_audit = Some(keymesh_management::config::VaultLink {
                    url,
                    api_key: relay_key.clone(),
                });
            }
        }
        match services::start(config, shutdown.clone()).await {
            Ok(service) => running.push(service),
            Err(err) => {
                shutdown.cancel();
                for service in running {
                    let _ = service.task.await;
                }
                return Err(err);
            }
        }
    }
    let admin = match running.iter().find_map(|r| r.management.as_ref()) {
        Some(state) => {
            let email: String = source.require(&cli::DEV_ADMIN_EMAIL)?;
            let databases = ServiceName::ALL
                .into_iter()
                .map(|name| Ok((name.as_str(), source.require(name.database_setting())?)))
                .collect::<Result<Vec<_>, ConfigError>>()?;
            let demo = source.switch(&cli::DEV_DEMO)?.then_some(databases);
            let prepared = prepare_dev(state, &email, &running, demo).await;
            match prepared {
                Ok(done) => Some(done),
                Err(e) => {
                    shutdown.cancel();
                    for service in running {
                        let _ = service.task.await;
                    }
                    return Err(e);
                }
            }
        }
        None => None,
    };
    print_banner(&running, &credentials, admin.as_ref());
    let mut first_error = None;
    for service in running {
        if let Err(err) = service
            .task
            .await
            .map_err(BoxError::from)
            .and_then(|r| r.map_err(BoxError::from))
        {
            shutdown.cancel();
            first_error.get_or_insert(err);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// The base URL of a service `keymesh dev` already started.
fn service_url(running: &[services::Running], name: ServiceName) -> Option<String> {
    running
        .iter()
        .find(|r| r.name == name)
        .map(|r| r.url.clone())
}

/// What `keymesh dev` prepared for its banner: the admin's sign-in link, and the demo.
struct DevAdmin {
    email: String,
    link: String,
    minutes: u64,
    demo: Option<demo::Prepared>,
}

/// Bootstrap the dev admin and, given the services' database URLs, the quickstart's demo.
async fn prepare_dev(
    state: &keymesh_management::ManagementState,
    email: &str,
    running: &[services::Running],
    demo: Option<Vec<(&'static str, String)>>,
) -> Result<DevAdmin, BoxError> {
    let done = keymesh_management::bootstrap::bootstrap_admin(state, email)
        .await
        .map_err(|e| {
            format!(
                "bootstrapping the dev admin failed: {}",
                keymesh_core::error::error_chain(&e)
            )
        })?;
    let url = |name| service_url(running, name).unwrap_or_default();
    let demo = if let Some(databases) = demo {
        let urls = demo::Urls {
            management: url(ServiceName::Management),
            vault: url(ServiceName::Vault),
            relay: url(ServiceName::Relay),
            databases,
        };
        let prepared = demo::prepare(state, &done.user.email, &urls, Path::new(DEV_DIR))
            .await
            .map_err(|e| {
                format!(
                    "preparing the quickstart demo failed: {e} (KEYMESH_DEV_DEMO=false skips it; \
                     removing ./.keymesh/ starts from nothing)"
                )
            })?;
        Some(prepared)
    } else {
        None
    };
    Ok(DevAdmin {
        email: done.user.email.clone(),
        link: done.login.link(state),
        minutes: done.login.ttl.as_secs().div_ceil(60),
        demo,
    })
}

fn print_banner(
    running: &[services::Running],
    credentials: &[(&str, String)],
    admin: Option<&DevAdmin>,
) {
    let mut banner = String::from(
        "\nKeymesh dev: every service in one process, SQLite files under ./.keymesh/\n\n",
    );
    for service in running {
        banner.push_str(&format!(
            "  {:<11} {}   /health/ready  /metrics\n",
            service.name.as_str(),
            service.url
        ));
    }
    if let Some(DevAdmin {
        email,
        link,
        minutes,
        ..
    }) = admin
    {
        banner.push_str(&format!(
            "\nAdmin {email}: sign in within {minutes} minutes (the link works once; new links: POST /v1/login):\n  {link}\n"
        ));
    }
    banner.push_str(
        "\nDevelopment credentials (random for this run; never use dev mode in production):\n",
    );
    for (name, value) in credentials {
        let what = match *name {
            "MANAGEMENT_API_KEY" => "management -> vault",
            "VAULT_FEED_API_KEY" => "relay -> vault's revocation feed",
            "RELAY_MANAGEMENT_API_KEY" => "management -> relay's audit log",
            _ => "",
        };
        banner.push_str(&format!("  {name}={value}   ({what})\n"));
    }
    match admin.and_then(|a| a.demo.as_ref()) {
        Some(demo) => banner.push_str(&format!(
            "\nDemo ready: group `{group}` with its vault unlocked; {admin_email} and {reviewer} \
             (admins) and {responder} are signed in.\n\
             Next, in another terminal in this directory (docs/quickstart.md walks through it):\n\
             \x20 cargo build{release} --bin keymeshctl   # once: the node tool, beside this binary\n\
             \x20 source {env}             # URLs, the three sessions, both tools on PATH\n",
            release = if built_for_release() { " --release" } else { "" },
            group = demo::GROUP,
            admin_email = admin.map_or("", |a| a.email.as_str()),
            reviewer = demo::REVIEWER,
            responder = demo::RESPONDER,
            env = demo.env_file,
        )),
        None => banner.push_str(
            "\nNext: docs/quickstart.md (it needs the demo: KEYMESH_DEV_DEMO=true); \
             `keymesh <service> --help` lists every setting (docs/configuration.md).\n",
        ),
    }
    banner.push_str(
        "Logs follow as JSON lines (LOG_FORMAT=pretty for a terminal). Ctrl-C stops everything.\n",
    );
    eprintln!("{banner}");
}

/// Whether this binary is cargo's release build (`target/release/`), so the banner's
/// `cargo build` puts keymeshctl beside it.
fn built_for_release() -> bool {
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.parent()
                .and_then(Path::file_name)
                .map(|d| d == "release")
        })
        .unwrap_or(false)
}

/// `keymesh migrate [SERVICE...]`: apply migrations and exit.
async fn migrate(matches: &clap::ArgMatches) -> Result<(), BoxError> {
    let names: Vec<ServiceName> = match matches.get_many::<String>("service") {
        Some(values) => values.map(|v| v.parse()).collect::<Result<_, String>>()?,
        None => ServiceName::ALL.to_vec(),
    };
    let settings: Vec<&Setting> = cli::dev_settings();
    let source = Source::from_process(matches, &settings);
    for name in names {
        let url = ServiceConfig::load_database_url(name, &source, Environment::Production)?;
        let db = Db::open_for(name, &url).await?;
        db.close().await;
        eprintln!("keymesh: migrated the {name} database ({url})");
    }
    Ok(())
}

/// Exit status of `keymesh audit verify` when the chain is broken.
const EXIT_AUDIT_BROKEN: u8 = 3;

/// `keymesh audit verify [--service S]`: walk the chain read-only (no migration) and report.
async fn audit_verify(matches: &clap::ArgMatches) -> Result<(), BoxError> {
    let name: ServiceName = matches
        .get_one::<String>("service")
        .map_or("management", String::as_str)
        .parse()?;
    let mut settings: Vec<&Setting> = cli::dev_settings();
    settings.push(&keymesh_management::config::SECRET_KEY);
    let source = Source::from_process(matches, &settings);
    let url = ServiceConfig::load_database_url(name, &source, Environment::Production)?;
    let db = Db::connect(&url).await?;
    let key = match name {
        ServiceName::Management => {
            source
                .secret(&keymesh_management::config::SECRET_KEY)?
                .map(|k| {
                    keymesh_management::checkpoints::CheckpointSigner::new(
                        &keymesh_management::secrets::Keyed::new(k),
                    )
                    .public()
                })
        }
        _ => None,
    };
    let report = keymesh_core::audit::verify(&db).await;
    let checkpoints = match &key {
        Some(key) => Some(keymesh_management::checkpoints::verify(&db, key).await),
        None => None,
    };
    db.close().await;
    let report = report?;
    let checkpoints = checkpoints.transpose()?;
    let bad_checkpoint = checkpoints.as_ref().and_then(|c| c.first_bad);
    if matches.get_flag("json") {
        println!(
            "{}",
            serde_json::json!({ "service": name.as_str(), "checked": report.checked,
                "first_broken": report.first_broken, "reason": report.reason,
                "checkpoints": checkpoints })
        );
    } else {
        match &checkpoints {
            None if name == ServiceName::Management => println!(
                "signed checkpoints not checked (give MANAGEMENT_SECRET_KEY to check them)"
            ),
            None => {}
            Some(c) => match c.first_bad {
                None => println!("{} signed checkpoints hold", c.checked),
                Some(seq) => println!(
                    "the signed checkpoint at record {seq} does not hold: {}",
                    c.reason.as_deref().unwrap_or("unknown")
                ),
            },
        }
        match report.first_broken {
            None => println!(
                "the {name} audit chain is intact: {} records checked",
                report.checked
            ),
            Some(seq) => println!(
                "the {name} audit chain is BROKEN at record {seq}: {} ({} records before it are intact)",
                report.reason.as_deref().unwrap_or("unknown"),
                report.checked
            ),
        }
    }
    if report.first_broken.is_some() || bad_checkpoint.is_some() {
        return Err(AuditBroken.into());
    }
    Ok(())
}

/// `keymesh audit verify` found a broken link (exit status [`EXIT_AUDIT_BROKEN`]).
#[derive(Debug)]
struct AuditBroken;

impl std::fmt::Display for AuditBroken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the audit chain is broken (the report above names the first broken record)")
    }
}

impl std::error::Error for AuditBroken {}

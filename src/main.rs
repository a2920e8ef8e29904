//! `keymesh`: the server binary. `dev` runs everything in one process; `management`, `vault` and
//! `relay` run one service each; `migrate` applies database migrations.

mod cli;
mod services;
mod signals;

use std::process::ExitCode;

use keymesh_core::{
    config::{
        CommonConfig, ConfigError, DevConfig, Environment, ServiceConfig, ServiceName, Setting,
        Source,
    },
    storage::Db,
    telemetry,
};
use tokio_util::sync::CancellationToken;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Exit code for a configuration the process refuses.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
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
            service => run_one(service.parse().map_err(BoxError::from)?, sub).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let code = if err.is::<ConfigError>() {
                EXIT_CONFIG
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

/// `keymesh management|vault|relay`: one service, production unless told otherwise.
async fn run_one(name: ServiceName, matches: &clap::ArgMatches) -> Result<(), BoxError> {
    let source = Source::from_process(matches, &ServiceConfig::all_settings(name));
    let config = ServiceConfig::load(name, &source, Environment::Production)?;
    init_logs(&config.common)?;
    let shutdown = CancellationToken::new();
    signals::cancel_on_signal(shutdown.clone());
    let running = services::start(config, shutdown).await?;
    running.task.await??;
    Ok(())
}

/// `keymesh dev`: every service in one process on SQLite, always development.
async fn dev(matches: &clap::ArgMatches) -> Result<(), BoxError> {
    let settings: Vec<&Setting> = DevConfig::all_settings();
    let source = Source::from_process(matches, &settings);
    if Environment::from_source(&source, Environment::Development)?.is_production() {
        return Err(ConfigError::Production {
            setting: "KEYMESH_ENV",
            reason: "is production, but `keymesh dev` is a development shortcut: run `keymesh management`, `keymesh vault` and `keymesh relay` instead".into(),
        }
        .into());
    }
    let configs = ServiceName::ALL
        .into_iter()
        .map(|name| ServiceConfig::load(name, &source, Environment::Development))
        .collect::<Result<Vec<_>, _>>()?;
    init_logs(&configs[0].common)?;
    let shutdown = CancellationToken::new();
    signals::cancel_on_signal(shutdown.clone());

    let mut running = Vec::new();
    for config in configs {
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
    print_banner(&running);
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

fn print_banner(running: &[services::Running]) {
    let mut banner = String::from(
        "\nKeymesh dev: every service in one process, SQLite files under ./.keymesh/\n\n",
    );
    for service in running {
        banner.push_str(&format!(
            "  {:<11} http://{}   /health/ready  /metrics\n",
            service.name.as_str(),
            service.addr
        ));
    }
    banner.push_str(
        "\nNext: curl the URLs above; `keymesh <service> --help` lists every setting \
         (docs/configuration.md).\nLogs follow as JSON lines (LOG_FORMAT=pretty for a terminal). \
         Ctrl-C stops everything.\n",
    );
    eprintln!("{banner}");
}

/// `keymesh migrate [SERVICE...]`: apply migrations and exit.
async fn migrate(matches: &clap::ArgMatches) -> Result<(), BoxError> {
    let names: Vec<ServiceName> = match matches.get_many::<String>("service") {
        Some(values) => values.map(|v| v.parse()).collect::<Result<_, String>>()?,
        None => ServiceName::ALL.to_vec(),
    };
    let settings: Vec<&Setting> = DevConfig::all_settings();
    let source = Source::from_process(matches, &settings);
    for name in names {
        let url = ServiceConfig::load_database_url(name, &source, Environment::Production)?;
        let db = Db::open_for(name, &url).await?;
        db.close().await;
        eprintln!("keymesh: migrated the {name} database ({url})");
    }
    Ok(())
}

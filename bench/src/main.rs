//! `keymesh-bench`: rerunnable performance measurements, kept out of the production binary.
//! Each prints Markdown rows for `docs/benchmarks.md`, with a baseline measured in the same run.
//! The relay and vault servers it measures are the real `keymesh` binary, found beside this
//! one (`cargo build --release --bin keymesh --bin keymesh-bench`).

mod relay;
mod vault;

use std::{
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use clap::{Arg, Command};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn cli() -> Command {
    Command::new("keymesh-bench")
    .about("Run a Keymesh benchmark and print a Markdown report (see docs/benchmarks.md)")
    .version(env!("CARGO_PKG_VERSION"))
    .subcommand_required(true)
    .subcommand(
        Command::new("vault")
            .about("Token checks vs biscuit-auth, mints/s, unlock time, authorized reads/s over HTTP")
            .arg(Arg::new("seconds").long("seconds").value_name("N").help("Seconds per HTTP load phase [default: 5]"))
            .arg(Arg::new("concurrency").long("concurrency").value_name("N").help("Concurrent HTTP clients [default: 64]"))
            .arg(Arg::new("database-url").long("database-url").value_name("URL").help("Vault database for the HTTP run [default: a temporary SQLite file]")),
    )
    .subcommand(
        Command::new("relay")
            .about("Relay msgs/s, latency, server CPU and RSS, RSS per idle connection, against a bare in-memory relay")
            .arg(Arg::new("pairs").long("pairs").value_name("N").help("Sender/receiver pairs [default: 50]"))
            .arg(Arg::new("seconds").long("seconds").value_name("N").help("Measured seconds per row [default: 10]"))
            .arg(Arg::new("rate").long("rate").value_name("N").help("Offered msgs/s for the latency row [default: 5000]"))
            .arg(Arg::new("idle").long("idle").value_name("N").help("Idle connections to hold [default: 10000]"))
            .arg(Arg::new("payload").long("payload").value_name("BYTES").help("Payload size [default: 1024]"))
            .arg(Arg::new("database-url").long("database-url").value_name("URL").help("Relay database [default: a temporary SQLite file]"))
            .arg(Arg::new("relay-url").long("relay-url").value_name("URL").requires_all(["vault-url", "management-key"]).conflicts_with("database-url").help("Measure a relay already running there instead of starting one"))
            .arg(Arg::new("vault-url").long("vault-url").value_name("URL").requires("relay-url").help("With --relay-url: the vault it follows (nodes are registered there)"))
            .arg(Arg::new("management-key").long("management-key").value_name("KEY").requires("relay-url").help("With --relay-url: management's credential at that vault"))
            .arg(Arg::new("server-pid").long("server-pid").value_name("PID").requires("relay-url").help("With --relay-url: the relay's process id here, to report its CPU and memory")),
    )
    .subcommand(
        Command::new("relay-storage")
            .about("The relay's group-commit writer alone: stored and acknowledged msgs/s without sockets")
            .arg(Arg::new("mailboxes").long("mailboxes").value_name("N").help("Mailboxes, one producer each [default: 50]"))
            .arg(Arg::new("seconds").long("seconds").value_name("N").help("Measured seconds [default: 10]"))
            .arg(Arg::new("payload").long("payload").value_name("BYTES").help("Payload size [default: 1024]"))
            .arg(Arg::new("outstanding").long("outstanding").value_name("N").help("Sends outstanding per producer [default: 512]"))
            .arg(Arg::new("database-url").long("database-url").value_name("URL").help("Relay database [default: a temporary SQLite file]")),
    )
    .subcommand(
        Command::new("relay-baseline")
            .about("The bare in-memory relay `bench relay` measures against (started by it)")
            .hide(true)
            .arg(Arg::new("listen").long("listen").value_name("ADDR").required(true)),
    )
}

fn main() -> ExitCode {
    let matches = cli().get_matches();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("keymesh-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench(&matches)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keymesh-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The `keymesh` server binary the benchmarks start: beside this one.
pub fn keymesh_binary() -> Result<PathBuf, BoxError> {
    let path = std::env::current_exe()?.with_file_name("keymesh");
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing: build it beside keymesh-bench (cargo build --release --bin keymesh --bin keymesh-bench)",
            path.display()
        )
        .into())
    }
}

/// Run the chosen benchmark.
async fn bench(matches: &clap::ArgMatches) -> Result<(), BoxError> {
    match matches.subcommand() {
        Some(("vault", sub)) => {
            let options = vault::Options {
                seconds: sub
                    .get_one::<String>("seconds")
                    .map_or(Ok(5), |s| s.parse())?,
                concurrency: sub
                    .get_one::<String>("concurrency")
                    .map_or(Ok(64), |s| s.parse())?,
                database_url: sub.get_one::<String>("database-url").cloned(),
            };
            vault::run(options).await
        }
        Some(("relay", sub)) => {
            let number = |name: &str, default: u64| -> Result<u64, BoxError> {
                Ok(sub
                    .get_one::<String>(name)
                    .map_or(Ok(default), |s| s.parse())?)
            };
            let options = relay::Options {
                pairs: usize::try_from(number("pairs", 50)?)?.max(1),
                seconds: number("seconds", 10)?.max(1),
                rate: number("rate", 5000)?.max(1),
                idle: usize::try_from(number("idle", 10_000)?)?.max(1),
                payload: usize::try_from(number("payload", 1024)?)?,
                database_url: sub.get_one::<String>("database-url").cloned(),
                external: sub.get_one::<String>("relay-url").map(|relay_url| {
                    let value =
                        |name: &str| sub.get_one::<String>(name).cloned().unwrap_or_default();
                    relay::External {
                        relay_url: relay_url.clone(),
                        vault_url: value("vault-url"),
                        management_key: value("management-key"),
                        pid: sub.get_one::<String>("server-pid").cloned(),
                    }
                }),
            };
            relay::run(options).await
        }
        Some(("relay-storage", sub)) => {
            let number = |name: &str, default: u64| -> Result<u64, BoxError> {
                Ok(sub
                    .get_one::<String>(name)
                    .map_or(Ok(default), |s| s.parse())?)
            };
            relay::storage::run(relay::storage::Options {
                mailboxes: usize::try_from(number("mailboxes", 50)?)?.max(1),
                seconds: number("seconds", 10)?.max(1),
                payload: usize::try_from(number("payload", 1024)?)?,
                outstanding: usize::try_from(number("outstanding", 512)?)?.max(1),
                database_url: sub.get_one::<String>("database-url").cloned(),
            })
            .await
        }
        Some(("relay-baseline", sub)) => {
            let listen = sub
                .get_one::<String>("listen")
                .ok_or("--listen is required")?
                .parse()?;
            relay::serve_baseline(listen).await
        }
        _ => Err("usage: keymesh-bench vault|relay|relay-storage [OPTIONS] (see --help)".into()),
    }
}

/// Median of three runs of `f`, each timing `iterations` calls; returns microseconds per call.
pub fn micros_per_op(iterations: u32, mut f: impl FnMut()) -> f64 {
    let mut runs: Vec<f64> = (0..3)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..iterations {
                f();
            }
            started.elapsed().as_secs_f64() * 1e6 / f64::from(iterations)
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[1]
}

/// A candidate against its baseline, interleaved so both see the same machine: `rounds` rounds,
/// each timing `iterations` calls of one then the other (alternating which goes first).
/// Returns the median µs per call of each and the median of the per-round ratios.
pub fn paired(
    rounds: usize,
    iterations: u32,
    mut baseline: impl FnMut(),
    mut candidate: impl FnMut(),
) -> (f64, f64, f64) {
    let time = |f: &mut dyn FnMut()| {
        let started = Instant::now();
        for _ in 0..iterations {
            f();
        }
        started.elapsed().as_secs_f64() * 1e6 / f64::from(iterations)
    };
    let (mut b, mut c, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let (x, y) = if round % 2 == 0 {
            let x = time(&mut baseline);
            (x, time(&mut candidate))
        } else {
            let y = time(&mut candidate);
            (time(&mut baseline), y)
        };
        b.push(x);
        c.push(y);
        ratios.push(y / x);
    }
    (median(b), median(c), median(ratios))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// CPU time this process has used so far, all threads, user + system (from /proc; `None`
/// where there is no /proc).
pub fn process_cpu() -> Option<Duration> {
    sample("self").map(|s| s.cpu)
}

/// CPU time (user + system) and memory of a process, from /proc.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcSample {
    /// User + system CPU so far.
    pub cpu: Duration,
    /// Resident set size now, bytes.
    pub rss: u64,
    /// Peak resident set size, bytes.
    pub peak_rss: u64,
}

/// Sample process `pid` (a number, or `self`); `None` where /proc cannot tell.
pub fn sample(pid: &str) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some(ProcSample {
        // The kernel reports in USER_HZ, 100 on Linux.
        cpu: Duration::from_millis(ticks * 10),
        rss: kib("VmRSS:")? * 1024,
        peak_rss: kib("VmHWM:")? * 1024,
    })
}

/// Percentile `p` (0 to 1) of sorted samples; the type's default (zero) when there are none.
pub fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// A description of this machine for the report.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!(
        "{cpus} CPUs ({model}), {} build",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    )
}

#[cfg(test)]
mod tests {
    use super::cli;

    #[test]
    fn the_command_line_is_well_formed() {
        cli().debug_assert();
    }

    /// Every `./target/release/keymesh-bench ...` line of docs/benchmarks.md parses as written
    /// (options in `[...]` are optional and left out; comments are not part of the command).
    #[test]
    fn the_documented_commands_parse() {
        let doc = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/benchmarks.md"
        ))
        .expect("docs/benchmarks.md");
        let mut seen = 0;
        for line in doc.lines() {
            let Some(command) = line.strip_prefix("./target/release/keymesh-bench ") else {
                continue;
            };
            let command = command.split(" #").next().unwrap_or_default();
            let command = command.split(" [").next().unwrap_or_default();
            let args = std::iter::once("keymesh-bench").chain(command.split_whitespace());
            if let Err(e) = cli().try_get_matches_from(args) {
                panic!("docs/benchmarks.md: `{line}` does not parse:\n{e}");
            }
            seen += 1;
        }
        assert!(
            seen >= 5,
            "only {seen} commands found in docs/benchmarks.md"
        );
    }
}

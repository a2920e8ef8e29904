//! `keymesh-bench relay`: delivered and acknowledged messages per second through the relay,
//! end-to-end latency, server CPU and memory, and memory per idle connection, each next to a
//! bare in-memory relay measured in the same run.
//!
//! The vault, the relay and the baseline run as child processes of this binary, so their CPU
//! and memory are read apart from the load generator's (which shares the same cores).

mod baseline;
mod encrypted;
mod load;
mod stack;
pub mod storage;

use std::{
    fmt::Write as _,
    time::{Duration, Instant},
};

use load::{Outcome, Pace, Run};
use stack::{Server, Stack};

use super::{ProcSample, machine, sample};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub use baseline::serve as serve_baseline;

/// Options.
#[derive(Debug)]
pub struct Options {
    /// Sender/receiver pairs.
    pub pairs: usize,
    /// Measured seconds per load row.
    pub seconds: u64,
    /// Offered messages per second for the latency row.
    pub rate: u64,
    /// Idle connections to hold.
    pub idle: usize,
    /// Payload bytes.
    pub payload: usize,
    /// Relay database (default: a temporary SQLite file).
    pub database_url: Option<String>,
    /// A relay already running, instead of starting one.
    pub external: Option<External>,
}

/// A relay (and the vault it follows) started elsewhere.
#[derive(Debug)]
pub struct External {
    /// `http(s)://host:port` of the relay.
    pub relay_url: String,
    /// `http(s)://host:port` of its vault, to register the bench's nodes and mint their tokens.
    pub vault_url: String,
    /// Management's credential at that vault.
    pub management_key: String,
    /// The relay's process id on this machine, for its CPU and memory (else not reported).
    pub pid: Option<String>,
}

/// The server a row measures: its base URL, and its process id when this machine can see it.
struct Target {
    url: String,
    pid: Option<String>,
}

impl Target {
    fn of(server: &Server) -> Self {
        Self {
            url: server.url(),
            pid: Some(server.pid()),
        }
    }

    fn ws(&self) -> String {
        format!("{}/v1/relay/ws", self.url.replacen("http", "ws", 1))
    }

    fn sample(&self) -> Option<ProcSample> {
        sample(self.pid.as_deref()?)
    }
}

/// One row: a run's outcome and the server's resources over it.
struct Row {
    label: String,
    outcome: Outcome,
    measured: Duration,
    server: Option<(ProcSample, ProcSample)>,
    server_acked: Option<f64>,
    /// The load generator's (this process's) CPU over the window.
    generator: Option<Duration>,
}

fn ms(us: u32) -> String {
    format!("{:.2} ms", f64::from(us) / 1000.0)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

impl Row {
    fn markdown(&self) -> String {
        let secs = self.measured.as_secs_f64();
        let o = &self.outcome;
        let p = |q: f64| ms(super::percentile(&o.latencies_us, q));
        let (cpu, rss) = match self.server {
            Some((before, after)) => {
                let cpu = (after.cpu - before.cpu).as_secs_f64();
                (
                    format!(
                        "{:.2} cores, {:.1} µs/msg",
                        cpu / secs,
                        cpu * 1e6 / (o.delivered.max(1) as f64)
                    ),
                    format!("{} (peak {})", mib(after.rss), mib(after.peak_rss)),
                )
            }
            None => ("n/a".into(), "n/a".into()),
        };
        let acked = match self.server_acked {
            Some(n) => format!(
                "{:.0} ({:.0} counted by the relay)",
                o.acked as f64 / secs,
                n / secs
            ),
            None => format!("{:.0}", o.acked as f64 / secs),
        };
        format!(
            "| {} | **{:.0}** | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            self.label,
            o.delivered as f64 / secs,
            acked,
            p(0.5),
            p(0.99),
            p(0.999),
            cpu,
            rss,
            self.generator.map_or("n/a".into(), |g| format!(
                "{:.2} cores",
                g.as_secs_f64() / secs
            )),
            match &o.refusal {
                Some(code) => format!("{} (first: `{code}`)", o.refused),
                None => o.refused.to_string(),
            } + &if o.stale > 0 {
                format!("; {} left from the previous row delivered first", o.stale)
            } else {
                String::new()
            }
        )
    }
}

const HEADER: &str = "| server | delivered msgs/s | acked msgs/s | p50 | p99 | p99.9 | server CPU | server RSS | load generator CPU | refused |\n|---|---|---|---|---|---|---|---|---|---|\n";

/// Measure one load run against `target`.
async fn measure(
    label: &str,
    target: &Target,
    pairs: &[(stack::Node, stack::Node)],
    run: &Run,
    count_acks: bool,
) -> Result<Row, BoxError> {
    let pid = target.pid.clone();
    let sample_server = move || sample(pid.as_deref()?);
    // Sample at the window's edges while the load runs.
    let (warmup, measured) = (run.warmup, run.measure);
    let url = target.url.clone();
    let sampler = tokio::spawn(async move {
        tokio::time::sleep(warmup).await;
        let acked_before = if count_acks {
            stack::counter(&url, "relay_messages_acked").await
        } else {
            None
        };
        let (before, generator) = (sample_server(), sample("self"));
        tokio::time::sleep(measured).await;
        let (after, generator_after) = (sample_server(), sample("self"));
        let acked_after = if count_acks {
            stack::counter(&url, "relay_messages_acked").await
        } else {
            None
        };
        (
            before.zip(after),
            acked_before.zip(acked_after).map(|(b, a)| a - b),
            generator.zip(generator_after).map(|(b, a)| a.cpu - b.cpu),
        )
    });
    let outcome = load::run(&target.ws(), pairs, run).await?;
    let (server, server_acked, generator) = sampler.await.map_err(|e| e.to_string())?;
    Ok(Row {
        label: label.to_owned(),
        outcome,
        measured,
        server,
        server_acked,
        generator,
    })
}

/// Hold `nodes.len()` idle connections; the server's RSS before and after, per connection.
async fn idle_row(label: &str, target: &Target, nodes: &[stack::Node]) -> Result<String, BoxError> {
    let ws_url = target.ws();
    // One connection first, so code paths and pools are warm before the baseline sample.
    let warm = load::hold_idle(&ws_url, &nodes[..1]).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = target.sample();
    let started = Instant::now();
    let held = load::hold_idle(&ws_url, &nodes[1..]).await?;
    let opened = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = target.sample();
    let n = held.len();
    drop((held, warm));
    let (before, after, per) = match before.zip(after) {
        Some((b, a)) => (
            mib(b.rss),
            mib(a.rss),
            format!(
                "**{:.2} KiB**",
                a.rss.saturating_sub(b.rss) as f64 / n as f64 / 1024.0
            ),
        ),
        None => ("n/a".into(), "n/a".into(), "n/a (no --server-pid)".into()),
    };
    Ok(format!(
        "| {label} | {n} | {:.1}s ({:.0}/s) | {before} | {after} | {per} |\n",
        opened.as_secs_f64(),
        n as f64 / opened.as_secs_f64(),
    ))
}

/// Run the benchmark and print its report. The servers' logs are deleted after a clean run and
/// kept (their directory is printed) when the run fails.
pub async fn run(options: Options) -> Result<(), BoxError> {
    let dir = tempfile::tempdir()?;
    eprintln!(
        "starting the vault and the relay (child processes, logs in {})",
        dir.path().display()
    );
    let result = run_in(&options, dir.path()).await;
    if result.is_err() {
        eprintln!("the servers' logs are kept in {}", dir.keep().display());
    }
    result
}

async fn run_in(options: &Options, dir: &std::path::Path) -> Result<(), BoxError> {
    // The relay under test: started here, or given.
    let (_stack, relay, vault, management_key) = match &options.external {
        None => {
            let stack = Stack::start(dir, options.database_url.as_deref()).await?;
            let relay = Target::of(&stack.relay);
            let (vault, key) = (stack.vault.url(), stack.management_key.clone());
            (Some(stack), relay, vault, key)
        }
        Some(e) => (
            None,
            Target {
                url: e.relay_url.trim_end_matches('/').to_owned(),
                pid: e.pid.clone(),
            },
            e.vault_url.trim_end_matches('/').to_owned(),
            e.management_key.clone(),
        ),
    };
    let this = std::env::current_exe()?;
    let mut bare = Server::spawn(dir, "baseline", &this, &["relay-baseline"], "", &[])?;
    bare.wait_ready("/health/ready").await?;
    let bare = (Target::of(&bare), bare);

    eprintln!(
        "registering {} idle nodes and {} pairs at the vault",
        options.idle, options.pairs
    );
    let idle_nodes = stack::provision(&vault, &management_key, "idle", options.idle + 1).await?;
    let nodes = stack::provision(&vault, &management_key, "pair", options.pairs * 2).await?;
    for node in &nodes {
        stack::publish_key(&relay.url, node).await?;
    }
    let pairs: Vec<(stack::Node, stack::Node)> = nodes
        .chunks(2)
        .map(|p| (p[0].clone(), p[1].clone()))
        .collect();

    let mut out = String::new();
    writeln!(
        out,
        "**Machine:** {}; {} pairs, {} B payloads, {} s measured per row after a warm-up; relay database: {}.\n",
        machine(),
        options.pairs,
        options.payload,
        options.seconds,
        match (&options.external, options.database_url.as_deref()) {
            (Some(_), _) => "the external relay's own",
            (None, None) => "SQLite (temporary file, WAL, log flushed before any answer)",
            (None, Some(u)) if u.starts_with("postgres") => "PostgreSQL",
            (None, Some(_)) => "as given",
        }
    )?;

    // Idle connections first, on fresh processes, so the load rows' allocations do not hide
    // the growth.
    eprintln!("holding {} idle connections on each server", options.idle);
    let mut idle = String::from(
        "| server | idle connections | time to open | server RSS before | after | per connection |\n|---|---|---|---|---|---|\n",
    );
    idle.push_str(&idle_row("in-memory baseline (bare relay)", &bare.0, &idle_nodes).await?);
    idle.push_str(&idle_row("Keymesh relay", &relay, &idle_nodes).await?);

    let warmup = Duration::from_secs(2);
    let measure_for = Duration::from_secs(options.seconds);
    let max = Run {
        warmup,
        measure: measure_for,
        payload: options.payload,
        pace: Pace::Max { outstanding: 512 },
    };
    let paced = Run {
        pace: Pace::Rate {
            per_second: options.rate,
        },
        ..max
    };
    let mut throughput = String::from(HEADER);
    let mut latency = String::from(HEADER);
    // Each server's rows use their own pairs' mailboxes; the baseline runs first.
    for (label, target, acks) in [
        (
            "in-memory baseline (bare relay: no auth, no storage)",
            &bare.0,
            false,
        ),
        ("**Keymesh relay** (durable, acks deleting)", &relay, true),
    ] {
        eprintln!("{label}: as fast as it goes, {} s", options.seconds);
        throughput.push_str(&measure(label, target, &pairs, &max, acks).await?.markdown());
        eprintln!(
            "{label}: {} msgs/s offered, {} s",
            options.rate, options.seconds
        );
        latency.push_str(
            &measure(label, target, &pairs, &paced, acks)
                .await?
                .markdown(),
        );
    }

    eprintln!(
        "full client path (keymesh-client, HPKE), {} s",
        options.seconds
    );
    let (encrypted, server, generator) = encrypted::run(
        &relay.url,
        relay.pid.as_deref(),
        &vault,
        &management_key,
        options.pairs,
        8,
        options.payload,
        (warmup, measure_for),
    )
    .await?;
    let encrypted_row = Row {
        label: "Keymesh relay, `keymesh-client` on both ends (HPKE seal + open, auto-ack)".into(),
        outcome: encrypted,
        measured: measure_for,
        server,
        server_acked: None,
        generator,
    }
    .markdown();

    writeln!(
        out,
        "### Throughput: {} pairs, as fast as the relay takes them\n\n{throughput}",
        options.pairs
    )?;
    writeln!(
        out,
        "### Latency at {} msgs/s offered\n\n{latency}",
        options.rate
    )?;
    writeln!(
        out,
        "### Full encrypting client path\n\n{HEADER}{encrypted_row}"
    )?;
    writeln!(out, "### Idle connections\n\n{idle}")?;
    println!("{out}");
    Ok(())
}

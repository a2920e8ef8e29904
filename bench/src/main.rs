//! `keymesh bench ...`: rerunnable performance measurements. Each prints Markdown rows for
//! `docs/benchmarks.md`, with a baseline measured in the same run.

pub mod relay;
pub mod vault;

use std::time::{Duration, Instant};

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

//! `keymesh-bench relay-storage`: the relay's group-commit writer alone, without sockets, tokens
//! or a load generator on the wire: the ceiling the storage layer puts on `bench relay`.
//!
//! Producers submit sends to their own mailbox with a bounded number outstanding; an acker
//! acknowledges every committed message at once (one cumulative ack per mailbox per commit), as
//! prompt receivers would. Reported: messages stored and acknowledged per second, commits, and
//! this process's CPU.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use keymesh_core::{
    config::ServiceName,
    storage::{DatabaseUrl, Db},
};
use keymesh_relay::store::{Bounds, Committed, NewMessage, Store, Write, Writer, now_ms};
use tokio::sync::{mpsc, oneshot};

use super::BoxError;
use crate::{machine, sample};

/// Options.
#[derive(Debug)]
pub struct Options {
    /// Mailboxes (one producer each).
    pub mailboxes: usize,
    /// Measured seconds.
    pub seconds: u64,
    /// Payload bytes.
    pub payload: usize,
    /// Sends outstanding per producer.
    pub outstanding: usize,
    /// Database (default: a temporary SQLite file).
    pub database_url: Option<String>,
}

#[derive(Default)]
struct Counts {
    stored: AtomicU64,
    acked: AtomicU64,
    commits: AtomicU64,
}

/// Run it and print one Markdown row.
pub async fn run(options: Options) -> Result<(), BoxError> {
    let dir = tempfile::tempdir()?;
    let url = match &options.database_url {
        Some(u) => u.clone(),
        None => format!("sqlite://{}", dir.path().join("relay.db").display()),
    };
    let db = Db::open_for(ServiceName::Relay, &DatabaseUrl::parse(&url)?).await?;
    let store = Store::new(db);
    let counts = Arc::new(Counts::default());
    let (to_acker, mut committed) = mpsc::unbounded_channel::<Vec<(String, i64)>>();
    let on_commit_counts = Arc::clone(&counts);
    let writer = Writer::spawn(
        store,
        Bounds {
            max_messages: i64::MAX,
            max_bytes: i64::MAX,
        },
        Box::new(move |batch: Vec<Committed>| {
            on_commit_counts.commits.fetch_add(1, Ordering::Relaxed);
            let _ = to_acker.send(
                batch
                    .into_iter()
                    .map(|c| (c.recipient, c.message.seq))
                    .collect(),
            );
        }),
    )
    .await?;

    let run_tag = keymesh_core::capability::token::random_key();
    let deadline = Instant::now() + Duration::from_secs(2 + options.seconds);
    let mut producers = Vec::new();
    for p in 0..options.mailboxes {
        let (writer, counts) = (writer.clone(), Arc::clone(&counts));
        let (recipient, sender) = (format!("bench-rx-{p}"), format!("bench-tx-{p}"));
        let (payload, outstanding) = (vec![0x5a; options.payload], options.outstanding);
        let tag: [u8; 8] = run_tag[..8].try_into().map_err(|_| "random bytes")?;
        producers.push(tokio::spawn(async move {
            let mut waiting: VecDeque<oneshot::Receiver<_>> = VecDeque::new();
            let mut counter = 0u64;
            while Instant::now() < deadline {
                while waiting.len() < outstanding {
                    counter += 1;
                    let mut client_id = [0u8; 16];
                    client_id[..8].copy_from_slice(&tag);
                    client_id[8..].copy_from_slice(&counter.to_be_bytes());
                    let now = now_ms();
                    let (done, answer) = oneshot::channel();
                    let message = NewMessage {
                        recipient: recipient.clone(),
                        sender: sender.clone(),
                        client_id,
                        enc: vec![0; 32],
                        payload: payload.clone(),
                        created_ms: now,
                        expires_ms: now + 86_400_000,
                    };
                    if !writer.submit(Write::Send { message, done }).await {
                        return;
                    }
                    waiting.push_back(answer);
                }
                if let Some(answer) = waiting.pop_front()
                    && let Ok(Ok(_)) = answer.await
                {
                    counts.stored.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let acker_writer = writer.clone();
    let acker_counts = Arc::clone(&counts);
    let acker = tokio::spawn(async move {
        while let Some(batch) = committed.recv().await {
            let mut highest: HashMap<String, i64> = HashMap::new();
            for (recipient, seq) in batch {
                let h = highest.entry(recipient).or_default();
                *h = (*h).max(seq);
            }
            for (recipient, through) in highest {
                let (done, answer) = oneshot::channel();
                if !acker_writer
                    .submit(Write::Ack {
                        recipient,
                        through,
                        done,
                    })
                    .await
                {
                    return;
                }
                let counts = Arc::clone(&acker_counts);
                tokio::spawn(async move {
                    if let Ok(Ok(n)) = answer.await {
                        counts
                            .acked
                            .fetch_add(u64::try_from(n).unwrap_or(0), Ordering::Relaxed);
                    }
                });
            }
        }
    });

    let me = std::process::id().to_string();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (stored0, acked0, commits0) = (
        counts.stored.load(Ordering::Relaxed),
        counts.acked.load(Ordering::Relaxed),
        counts.commits.load(Ordering::Relaxed),
    );
    let (cpu0, written0, started) = (sample(&me), written(), Instant::now());
    tokio::time::sleep(Duration::from_secs(options.seconds)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let (cpu1, written1) = (sample(&me), written());
    let stored = counts.stored.load(Ordering::Relaxed) - stored0;
    let acked = counts.acked.load(Ordering::Relaxed) - acked0;
    let commits = counts.commits.load(Ordering::Relaxed) - commits0;
    for p in producers {
        let _ = p.await;
    }
    drop(writer);
    acker.abort();
    let cores = match (cpu0, cpu1) {
        (Some(a), Some(b)) => format!(
            "{:.2} cores",
            b.cpu.saturating_sub(a.cpu).as_secs_f64() / elapsed
        ),
        _ => "n/a".into(),
    };
    println!(
        "**Machine:** {}; {} mailboxes, {} B payloads, {} outstanding per producer, {} s; database: {}.\n",
        machine(),
        options.mailboxes,
        options.payload,
        options.outstanding,
        options.seconds,
        if options.database_url.is_some() {
            "as given"
        } else {
            "SQLite (temporary file, WAL, log flushed before any answer)"
        }
    );
    println!(
        "| stored msgs/s | acked msgs/s | commits/s | messages per commit | bytes written per message | process CPU |\n|---|---|---|---|---|---|"
    );
    println!(
        "| **{:.0}** | {:.0} | {:.0} | {:.0} | {:.0} | {cores} |",
        stored as f64 / elapsed,
        acked as f64 / elapsed,
        commits as f64 / elapsed,
        stored as f64 / (commits.max(1)) as f64,
        written1.saturating_sub(written0) as f64 / stored.max(1) as f64,
    );
    Ok(())
}

/// Bytes this process has written through `write(2)` and friends so far (0 where /proc cannot
/// tell): the WAL frames and the checkpoints' copies.
fn written() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("wchar:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

//! The group-commit writer.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};

use super::{
    AuditEvent,
    chain::{AuditRecord, GENESIS, record_hash},
};
use prometheus_client::metrics::counter::Counter;

use crate::{
    error::{ApiError, ErrorCode},
    metrics::Metrics,
    storage::Db,
    with_pool,
};

/// Records one transaction carries at most.
const MAX_BATCH: usize = 512;
/// Events waiting for the writer at most; beyond this `record` fails at once.
const QUEUE: usize = 8192;

/// Why an event could not be recorded. Callers must fail the operation.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Not durable within the bound (database slow or down), or the writer stopped.
    #[error("the audit log could not record the event in time")]
    Unavailable,
}

struct Pending {
    event: AuditEvent,
    done: oneshot::Sender<Result<i64, ()>>,
}

/// Handle to the audit writer of one service. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AuditLog {
    tx: mpsc::Sender<Pending>,
    bound: Duration,
    failures: Counter,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("action", &self.event.action)
            .finish()
    }
}

impl AuditLog {
    /// Start the writer on `db`. It stops when every handle is dropped.
    pub fn spawn(db: Db, bound: Duration) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(db, rx));
        Self {
            tx,
            bound,
            failures: Counter::default(),
        }
    }

    /// Export `keymesh_audit_write_failures_total`: events that could not be made durable
    /// (their operation was refused, or — for an operation already done — the record was lost
    /// and logged).
    pub fn register_metrics(&self, metrics: &Metrics) {
        metrics.register(
            "keymesh_audit_write_failures",
            "Audit events that could not be written in time (the operation was refused: fail closed)",
            self.failures.clone(),
        );
    }

    /// Append an event and wait until it is durable; returns its sequence number.
    pub async fn record(&self, event: AuditEvent) -> Result<i64, AuditError> {
        let (done, wait) = oneshot::channel();
        let queued = self.tx.try_send(Pending { event, done }).is_ok();
        match tokio::time::timeout(self.bound, wait).await {
            Ok(Ok(Ok(seq))) if queued => Ok(seq),
            _ => {
                self.failures.inc();
                Err(AuditError::Unavailable)
            }
        }
    }
}

impl AuditLog {
    /// Record an event before the operation it describes takes effect: when the record cannot
    /// be made durable in time the caller refuses with `503 audit_unavailable` (fail closed).
    pub async fn record_or_refuse(&self, event: AuditEvent) -> Result<(), ApiError> {
        self.record(event)
            .await
            .map(drop)
            .map_err(|e| ApiError::new(ErrorCode::AuditUnavailable).caused_by(e))
    }

    /// Record an event whose operation already happened (e.g. a denial); log if it is lost.
    pub async fn record_quiet(&self, event: AuditEvent) {
        if let Err(err) = self.record(event).await {
            tracing::error!(error = %err, "audit record for a completed operation was lost");
        }
    }
}

/// PostgreSQL refuses NUL in text, which would fail the whole batch: neutralise it (the
/// hash covers the stored form).
fn clean(field: &str) -> String {
    field.replace('\0', "\\u0000")
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

async fn run(db: Db, mut rx: mpsc::Receiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // Commit at once when idle; batch only what queued during the previous commit.
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        match append(&db, &batch).await {
            Ok(first_seq) => {
                for (i, pending) in batch.drain(..).enumerate() {
                    let _ = pending.done.send(Ok(first_seq + i as i64));
                }
            }
            Err(err) => {
                tracing::error!(error = %crate::error::error_chain(&err), records = batch.len(), "audit append failed");
                for pending in batch.drain(..) {
                    let _ = pending.done.send(Err(()));
                }
            }
        }
    }
}

/// Append a batch in one transaction; returns the first sequence number used.
async fn append(db: &Db, batch: &[Pending]) -> Result<i64, sqlx::Error> {
    const HEAD: &str = "SELECT seq, hash FROM audit_head WHERE id = 1";
    const UPSERT_HEAD: &str = "INSERT INTO audit_head (id, seq, hash) VALUES (1, $1, $2) \
         ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash";
    // Postgres: lock the head row so replicas append one at a time. SQLite: take the write
    // lock up front; a deferred transaction that reads then writes fails with BUSY_SNAPSHOT
    // (not retried) whenever another write committed in between.
    let (begin, head_sql) = match db {
        Db::Sqlite(_) => ("BEGIN IMMEDIATE", HEAD.to_owned()),
        Db::Postgres(_) => ("BEGIN", format!("{HEAD} FOR UPDATE")),
    };
    with_pool!(db, pool => {
        let mut tx = pool.begin_with(begin).await?;
        let head: Option<(i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(head_sql.clone()))
            .fetch_optional(&mut *tx)
            .await?;
        let (mut seq, mut prev) = head.unwrap_or((0, GENESIS.to_owned()));
        let first = seq + 1;
        let at_ms = now_ms();
        let records: Vec<AuditRecord> = batch
            .iter()
            .map(|pending| {
                seq += 1;
                let e = &pending.event;
                let mut record = AuditRecord {
                    seq,
                    at_ms,
                    actor: clean(&e.actor),
                    action: clean(&e.action),
                    target: clean(&e.target),
                    outcome: e.outcome.as_str().to_owned(),
                    details: e.details.to_string(),
                    prev_hash: std::mem::take(&mut prev),
                    hash: String::new(),
                };
                record.hash = record_hash(&record);
                prev.clone_from(&record.hash);
                record
            })
            .collect();
        // One statement for the whole batch: a round trip per record would dominate (on SQLite
        // each is a hop to the connection's worker thread). 9 × MAX_BATCH binds stay well under
        // both backends' parameter limits.
        let mut insert = sqlx::QueryBuilder::new(
            "INSERT INTO audit_log (seq, at_ms, actor, action, target, outcome, details, prev_hash, hash) ",
        );
        insert.push_values(&records, |mut row, r| {
            row.push_bind(r.seq)
                .push_bind(r.at_ms)
                .push_bind(&r.actor)
                .push_bind(&r.action)
                .push_bind(&r.target)
                .push_bind(&r.outcome)
                .push_bind(&r.details)
                .push_bind(&r.prev_hash)
                .push_bind(&r.hash);
        });
        insert.build().execute(&mut *tx).await?;
        sqlx::query(UPSERT_HEAD).bind(seq).bind(&prev).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(first)
    })
}

//! The relay's SQLite writer: its own connection, used only on the writer's thread, with
//! prepared statements run once per row.
//!
//! Why not sqlx here (measured with `keymesh-bench relay-storage`, docs/benchmarks.md): through
//! sqlx every statement is a round trip to the connection's worker thread, so a batch has to be
//! a few multi-row statements, each parsed afresh (their shape changes with the batch), each
//! with a statement journal (a multi-row insert may fail half way), and each bind copied into
//! an argument buffer first. Here a row costs one step of a statement prepared once.
//!
//! Durability is pipelined. The connection runs in WAL mode with `synchronous=NORMAL`: a
//! commit appends its frames to the log (`write(2)`) and returns without waiting for the disk.
//! The [`Syncer`] thread then `fdatasync`s the log file and only after that hands the batch's
//! outcomes out (messages to their recipients, `accepted` to senders, acknowledgements
//! confirmed). So nothing is announced before it is on disk, exactly as with
//! `synchronous=FULL`, but the writer builds and commits the next batch while the disk flushes
//! the previous one, and one flush covers every batch committed meanwhile. SQLite's own
//! guarantees under `NORMAL` cover the rest: the log is synced before a checkpoint copies it
//! and the database file after, so a checkpoint never loses a committed frame, and a crash
//! before a flush can only lose batches nobody was told about (docs/decisions/0008).

use std::{
    collections::HashMap,
    fs::File,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU8, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use rusqlite::{Connection, OpenFlags, TransactionBehavior, params};

use keymesh_core::storage::StorageError;

use super::{
    Completion, Durable, Expiry, Keys, NewMessage, OnCommit, Overlay, SendOutcome, expired_ranges,
};

/// Pages SQLite may keep cached for the writer (KiB, as `cache_size` takes it when negative):
/// enough for the hot B-tree pages of every mailbox and the key index, so lookups do not read
/// them back from the OS on every commit.
const CACHE_KIB: i64 = 32 * 1024;
/// How long a commit waits for a lock held by another connection (a migration or a reader
/// that upgraded) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the checkpointer copies the log into the database file. Rarely: each copy ends
/// with a flush of the database file, which the disk serves beside the log flushes every
/// message waits for, and under a queue's load the same pages are rewritten over and over, so
/// a copy every 2 s writes each of them once where copies every 50 ms wrote it up to forty
/// times. Of the cadences measured (50 ms, 250 ms, 1 s, 2 s) 2 s gave the best end-to-end p99
/// at 5,000 msgs/s (docs/benchmarks.md).
const CHECKPOINT_EVERY: Duration = Duration::from_secs(2);
/// How soon the next copy follows one that left a long log with a long tail: each copies
/// what was written during the one before, so they converge on the end of the log.
const CONVERGE_EVERY: Duration = Duration::from_millis(20);
/// How often the checkpointer looks at the log file's size between copies.
const LOOK_EVERY: Duration = Duration::from_millis(50);
/// Growth of the log file (bytes) since the last copy that starts the next one at once: the
/// file only grows when the log is longer than it has ever been, which a fast writer reaches
/// well within [`CHECKPOINT_EVERY`].
const GROWTH_TRIGGER: u64 = 16 << 20;
/// Log length (pages, 64 MiB) from which the writer finishes a checkpoint whenever it has
/// nothing queued, so the log restarts from its beginning. Each time costs the writer two
/// flushes (a few ms); at 5,000 msgs/s (~25 MB of log a second) this is every ~2.5 s.
const RESTART_WHEN_IDLE: i64 = 16384;
/// Log length (pages, 256 MiB) from which the writer finishes a checkpoint even with writes
/// waiting: under a load that never leaves it idle, this bounds the log.
const RESTART_ANYWAY: i64 = 65536;
/// Most pages left to copy for the writer to be asked to finish a checkpoint.
const TAIL_FRAMES: i64 = 2048;
/// [`Native::catch_up`] values.
const NOT_DUE: u8 = 0;
const WHEN_IDLE: u8 = 1;
const NOW: u8 = 2;
const CHECKPOINT: &str = "PRAGMA wal_checkpoint(PASSIVE)";

const CLAIM: &str = "INSERT INTO relay_accepted (sender, client_id, expires_ms) VALUES (?1, ?2, ?3) ON CONFLICT (sender, client_id) DO NOTHING";
const RELEASE: &str = "DELETE FROM relay_accepted WHERE sender = ?1 AND client_id = ?2";
const INSERT: &str = "INSERT INTO relay_messages (recipient, seq, sender, client_id, enc, payload, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
const DELETE_ACKED: &str = "DELETE FROM relay_messages WHERE recipient = ?1 AND seq > ?2 AND seq <= ?3 RETURNING LENGTH(payload) + LENGTH(enc)";
const FORGET_EXPIRED: &str =
    "DELETE FROM relay_expiries WHERE recipient = ?1 AND through_seq <= ?2";
const RECORD_ACK: &str = "INSERT INTO relay_mailboxes (node, epoch, acked) VALUES (?1, ?2, ?3) ON CONFLICT (node) DO UPDATE SET acked = MAX(relay_mailboxes.acked, excluded.acked)";
const EXPIRE: &str = "DELETE FROM relay_messages WHERE (recipient, seq) IN (SELECT recipient, seq FROM relay_messages WHERE expires_ms <= ?1 ORDER BY expires_ms LIMIT ?2) RETURNING recipient, seq, LENGTH(payload) + LENGTH(enc)";
const RECORD_EXPIRY: &str = "INSERT INTO relay_expiries (recipient, after_seq, through_seq, count, at_ms) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (recipient, through_seq) DO UPDATE SET count = relay_expiries.count + excluded.count, after_seq = MIN(relay_expiries.after_seq, excluded.after_seq)";
const FORGET_KEYS: &str = "DELETE FROM relay_accepted WHERE expires_ms <= ?1";

/// The writer's connection.
pub(super) struct Native {
    conn: Connection,
    /// The log file, to flush.
    wal: PathBuf,
    /// Set by the checkpointer when the log is long and only a short tail of it is left to
    /// copy: [`WHEN_IDLE`] or [`NOW`].
    catch_up: Arc<AtomicU8>,
    /// Dropped with the writer, which stops the checkpointer.
    _checkpointer: mpsc::Sender<()>,
}

/// Flushes the log and then hands committed batches out, in commit order, on its own thread.
pub(super) struct Syncer {
    tx: mpsc::Sender<Completion>,
    broken: Arc<Mutex<Option<String>>>,
}

impl Syncer {
    /// Queue a committed batch.
    pub(super) fn submit(&self, completion: Completion) {
        if let Err(mpsc::SendError(completion)) = self.tx.send(completion) {
            completion.fail("the relay's storage flusher stopped");
        }
    }

    /// Why writes can no longer be made durable, once a flush failed.
    pub(super) fn broken(&self) -> Option<String> {
        self.broken
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Flush the log once for every batch queued meanwhile, then hand them out. After a failed
/// flush nothing is known to be on disk, and after one the kernel may have dropped the pages it
/// could not write: every batch still queued, and every later one, is refused (the writer checks
/// [`Syncer::broken`]); the relay needs a restart, which recovers from the log.
fn flush_loop(
    wal: File,
    rx: mpsc::Receiver<Completion>,
    on_commit: OnCommit,
    durable: Arc<Durable>,
    broken: Arc<Mutex<Option<String>>>,
) {
    while let Ok(first) = rx.recv() {
        let batches: Vec<Completion> = std::iter::once(first).chain(rx.try_iter()).collect();
        let failed = broken
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let failed = failed.or_else(|| {
            wal.sync_data().err().map(|e| {
                let why = format!("flushing the relay's SQLite log to disk failed ({e}); restart the relay");
                tracing::error!(error = %e, "flushing the relay's SQLite log failed; refusing every write until restarted");
                *broken.lock().unwrap_or_else(PoisonError::into_inner) = Some(why.clone());
                why
            })
        });
        for batch in batches {
            match &failed {
                None => {
                    durable.advance(&batch.committed);
                    batch.complete(&on_commit);
                }
                Some(why) => batch.fail(why),
            }
        }
    }
}

/// `PRAGMA wal_checkpoint(PASSIVE)`: whether another checkpoint was running, the log's length
/// and how much of it is now in the database file (pages).
fn checkpoint(conn: &Connection) -> Result<(bool, i64, i64), rusqlite::Error> {
    conn.query_row(CHECKPOINT, [], |r| {
        Ok((r.get::<_, i64>(0)? != 0, r.get(1)?, r.get(2)?))
    })
}

/// Copy the log into the database file every [`CHECKPOINT_EVERY`] (sooner when the log file
/// grows fast, or while converging on the end of a long log), beside the writer (a passive
/// checkpoint never blocks it). Under a steady stream of commits such a checkpoint never
/// catches up with the end of the log, and SQLite only restarts the log once one has, so alone
/// the log would grow for as long as the load lasts (seen: 2 GB in 12 s). Once the log is long
/// and the part left to copy is short, the writer is asked to finish the checkpoint between two
/// commits ([`Native::checkpoint_if_due`]). Ends when the writer does.
fn checkpoint_loop(conn: &Connection, wal: &Path, stop: &mpsc::Receiver<()>, catch_up: &AtomicU8) {
    let size = || std::fs::metadata(wal).map_or(0, |m| m.len());
    let (mut wait, mut last, mut size_then) = (CHECKPOINT_EVERY, Instant::now(), size());
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(LOOK_EVERY.min(wait)) {
        if last.elapsed() < wait && size() < size_then.saturating_add(GROWTH_TRIGGER) {
            continue;
        }
        wait = CHECKPOINT_EVERY;
        let result = checkpoint(conn);
        (last, size_then) = (Instant::now(), size());
        match result {
            Ok((false, log, done)) if log >= RESTART_WHEN_IDLE && log - done <= TAIL_FRAMES => {
                let due = if log >= RESTART_ANYWAY {
                    NOW
                } else {
                    WHEN_IDLE
                };
                catch_up.store(due, Ordering::Release);
            }
            Ok((false, log, _)) if log >= RESTART_WHEN_IDLE => wait = CONVERGE_EVERY,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "relay log checkpoint failed; retrying");
            }
        }
    }
}

impl std::fmt::Debug for Native {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Native").finish_non_exhaustive()
    }
}

/// Keys recorded by inserting them: the primary key refuses one accepted before (or earlier in
/// this transaction), and the insert reports that it changed nothing.
struct NativeKeys<'t> {
    claim: rusqlite::CachedStatement<'t>,
    release: rusqlite::CachedStatement<'t>,
}

impl<'m> Keys<'m> for NativeKeys<'_> {
    type Error = rusqlite::Error;
    fn claim(&mut self, m: &'m NewMessage) -> Result<bool, rusqlite::Error> {
        let inserted =
            self.claim
                .execute(params![m.sender, m.client_id.as_slice(), m.expires_ms])?;
        Ok(inserted == 1)
    }
    fn release(&mut self, m: &'m NewMessage) -> Result<(), rusqlite::Error> {
        self.release
            .execute(params![m.sender, m.client_id.as_slice()])?;
        Ok(())
    }
}

impl Native {
    /// Open the relay's (already migrated) database file, and flush its log.
    pub(super) fn open(path: &Path) -> Result<Self, StorageError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(driver)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(driver)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(driver(std::io::Error::other(format!(
                "the relay's SQLite database must be a file in WAL mode; {} is in {mode} mode",
                path.display()
            ))));
        }
        conn.busy_timeout(BUSY_TIMEOUT).map_err(driver)?;
        // Commits do not wait for the disk; the syncer flushes before anything is announced.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .and_then(|()| conn.pragma_update(None, "foreign_keys", "ON"))
            // The pool's background task checkpoints (see keymesh_core::storage).
            .and_then(|()| conn.pragma_update(None, "wal_autocheckpoint", 0))
            .and_then(|()| conn.pragma_update(None, "cache_size", -CACHE_KIB))
            .and_then(|()| conn.pragma_update(None, "temp_store", "MEMORY"))
            .map_err(driver)?;
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let wal = PathBuf::from(wal);
        // Whatever an earlier process committed and did not flush is flushed now, before any of
        // it is read as being on disk.
        File::open(&wal)
            .and_then(|f| f.sync_data())
            .map_err(driver)?;
        let checkpointer = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .and_then(|c| c.busy_timeout(BUSY_TIMEOUT).map(|()| c))
        .map_err(driver)?;
        let catch_up = Arc::new(AtomicU8::new(NOT_DUE));
        let log = wal.clone();
        let flag = Arc::clone(&catch_up);
        let (stop, stopped) = mpsc::channel();
        std::thread::Builder::new()
            .name("relay-checkpoint".into())
            .spawn(move || checkpoint_loop(&checkpointer, &log, &stopped, &flag))
            .map_err(driver)?;
        Ok(Self {
            conn,
            wal,
            catch_up,
            _checkpointer: stop,
        })
    }

    /// Finish the checkpoint the checkpointer asked for, between two commits: with no commit
    /// running it copies the whole log, and the next commit starts the log from its beginning
    /// again. Called after every commit, with whether writes are waiting; does nothing unless
    /// asked, and while writes wait only once the log is past [`RESTART_ANYWAY`].
    pub(super) fn checkpoint_if_due(&mut self, writes_waiting: bool) {
        let due = self.catch_up.load(Ordering::Acquire);
        if due == NOT_DUE || (due == WHEN_IDLE && writes_waiting) {
            return;
        }
        self.catch_up.store(NOT_DUE, Ordering::Release);
        if let Err(e) = checkpoint(&self.conn) {
            tracing::warn!(error = %e, "finishing a relay log checkpoint failed; retrying later");
        }
    }

    /// Start the thread that flushes the log and hands committed batches to `on_commit` and
    /// their writers.
    pub(super) fn syncer(
        &self,
        on_commit: OnCommit,
        durable: Arc<Durable>,
    ) -> Result<Syncer, StorageError> {
        // The log exists from the first WAL-mode open on, and is never deleted while this
        // connection is open (only truncated), so the file handle stays valid.
        let wal = File::open(&self.wal).map_err(driver)?;
        let (tx, rx) = mpsc::channel();
        let broken = Arc::new(Mutex::new(None));
        let flag = Arc::clone(&broken);
        std::thread::Builder::new()
            .name("relay-flush".into())
            .spawn(move || flush_loop(wal, rx, on_commit, durable, flag))
            .map_err(driver)?;
        Ok(Syncer { tx, broken })
    }

    /// One transaction: the batch's sends (planned by [`Overlay::plan`]) and acknowledgements.
    pub(super) fn write(
        &mut self,
        overlay: &mut Overlay<'_>,
        sends: &[&NewMessage],
        acks: &[(&str, i64)],
        now_ms: i64,
    ) -> Result<(Vec<SendOutcome>, Vec<i64>), rusqlite::Error> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (outcomes, fresh) = {
            let mut keys = NativeKeys {
                claim: tx.prepare_cached(CLAIM)?,
                release: tx.prepare_cached(RELEASE)?,
            };
            overlay.plan(sends, &mut keys)?
        };
        {
            let mut insert = tx.prepare_cached(INSERT)?;
            for p in &fresh {
                let m = p.message;
                insert.execute(params![
                    m.recipient,
                    p.seq,
                    m.sender,
                    m.client_id.as_slice(),
                    m.enc,
                    m.payload,
                    m.created_ms,
                    m.expires_ms
                ])?;
            }
        }
        let mut removed: HashMap<&str, (i64, i64)> = HashMap::new();
        {
            let mut delete = tx.prepare_cached(DELETE_ACKED)?;
            let mut forget = tx.prepare_cached(FORGET_EXPIRED)?;
            let mut record = tx.prepare_cached(RECORD_ACK)?;
            for t in overlay.ack_targets(acks) {
                let (recipient, through) = (t.recipient, t.through);
                let mut rows = delete.query(params![recipient, t.after, through])?;
                let (mut n, mut bytes) = (0i64, 0i64);
                while let Some(row) = rows.next()? {
                    n += 1;
                    bytes += row.get::<_, i64>(0)?;
                }
                if n > 0 {
                    removed.insert(recipient, (n, bytes));
                }
                if t.forget {
                    forget.execute(params![recipient, through])?;
                }
                // An acknowledgement is remembered even for a mailbox first seen here, so a
                // restart never numbers below it.
                record.execute(params![recipient, now_ms, through])?;
            }
        }
        let deleted = overlay.settle(acks, removed);
        tx.commit()?;
        Ok((outcomes, deleted))
    }

    /// Delete up to `limit` messages expired at `now_ms`, recording per recipient the range they
    /// covered, and forget idempotency keys past their expiry; per recipient: the range and the
    /// bytes removed.
    pub(super) fn expire(
        &mut self,
        now_ms: i64,
        limit: i64,
    ) -> Result<Vec<(String, Expiry, i64)>, rusqlite::Error> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let ranges = {
            let mut delete = tx.prepare_cached(EXPIRE)?;
            let rows = delete.query_map(params![now_ms, limit], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })?;
            expired_ranges(rows.collect::<Result<Vec<_>, _>>()?)
        };
        {
            let mut record = tx.prepare_cached(RECORD_EXPIRY)?;
            for (recipient, e, _) in &ranges {
                record.execute(params![
                    recipient,
                    e.after_seq,
                    e.through_seq,
                    e.count,
                    now_ms
                ])?;
            }
        }
        tx.prepare_cached(FORGET_KEYS)?.execute(params![now_ms])?;
        tx.commit()?;
        Ok(ranges)
    }
}

fn driver(e: impl std::error::Error + Send + Sync + 'static) -> StorageError {
    StorageError::Driver(Box::new(e))
}

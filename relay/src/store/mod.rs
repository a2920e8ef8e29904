//! Mailbox storage on SQLite or PostgreSQL. Writes go through one [`Writer`] task that commits
//! everything that piled up while the previous commit ran (group commit): one transaction,
//! whatever the number of messages and acknowledgements, commits at once when idle.
//!
//! On SQLite the writer runs on its own thread with its own connection and prepared statements
//! ([`native`]); on PostgreSQL it sends a few multi-row statements per commit through the pool.

mod native;

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
};

use keymesh_core::{
    storage::{Db, StorageError},
    with_pool,
};
use sqlx::{PgPool, Postgres, QueryBuilder};
use tokio::sync::{mpsc, oneshot};

use native::Native;

use crate::frame::MessageId;

/// A message to store.
#[derive(Clone)]
pub struct NewMessage {
    /// Recipient node.
    pub recipient: String,
    /// Sender node.
    pub sender: String,
    /// The sender's id for it.
    pub client_id: MessageId,
    /// HPKE encapsulated key.
    pub enc: Vec<u8>,
    /// HPKE ciphertext.
    pub payload: Vec<u8>,
    /// Accepted at, unix ms.
    pub created_ms: i64,
    /// Dropped at, unix ms.
    pub expires_ms: i64,
}

impl std::fmt::Debug for NewMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewMessage")
            .field("recipient", &self.recipient)
            .field("sender", &self.sender)
            .field("payload_bytes", &self.payload.len())
            .finish_non_exhaustive()
    }
}

/// A stored message.
#[derive(Clone, sqlx::FromRow)]
pub struct StoredMessage {
    /// Position in the recipient's mailbox.
    pub seq: i64,
    /// Sender node.
    pub sender: String,
    /// The sender's id for it.
    pub client_id: Vec<u8>,
    /// HPKE encapsulated key.
    pub enc: Vec<u8>,
    /// HPKE ciphertext.
    pub payload: Vec<u8>,
    /// Accepted at, unix ms.
    pub created_ms: i64,
    /// Dropped at, unix ms.
    pub expires_ms: i64,
}

impl std::fmt::Debug for StoredMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredMessage")
            .field("seq", &self.seq)
            .field("sender", &self.sender)
            .field("payload_bytes", &self.payload.len())
            .finish_non_exhaustive()
    }
}

/// A range of a mailbox that expired unacknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Expiry {
    /// Exclusive lower bound.
    pub after_seq: i64,
    /// Inclusive upper bound.
    pub through_seq: i64,
    /// Messages that expired in it.
    pub count: i64,
}

/// A mailbox's durable position and what it holds, read at start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MailboxState {
    /// Mailbox epoch.
    pub epoch: i64,
    /// Cumulative acknowledgement.
    pub acked: i64,
    /// Highest sequence number ever assigned (stored, acknowledged or expired).
    pub last_seq: i64,
    /// Messages held.
    pub count: i64,
    /// Ciphertext bytes held.
    pub bytes: i64,
    /// Highest sequence number recorded as expired and not yet acknowledged past (0: none).
    pub expired_through: i64,
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Per mailbox, the highest sequence number known to be on disk. Kept while a SQLite writer
/// flushes after commit ([`native`]): a message committed but not yet flushed is visible to
/// other connections, and reads must not hand it out before its sender is told `accepted`.
#[derive(Debug, Default)]
pub(crate) struct Durable(std::sync::RwLock<Option<HashMap<String, i64>>>);

impl Durable {
    fn start(&self, marks: HashMap<String, i64>) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(marks);
    }

    /// Record that `recipient`'s messages through `seq` are on disk.
    pub(crate) fn advance(&self, committed: &[Committed]) {
        let mut guard = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(marks) = guard.as_mut() {
            for c in committed {
                match marks.get_mut(&c.recipient) {
                    Some(mark) => *mark = (*mark).max(c.message.seq),
                    None => {
                        marks.insert(c.recipient.clone(), c.message.seq);
                    }
                }
            }
        }
    }

    /// Drop the messages not yet on disk (none without a flushing writer).
    fn clamp(&self, recipient: &str, rows: &mut Vec<StoredMessage>) {
        let guard = self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(marks) = guard.as_ref() {
            let mark = marks.get(recipient).copied().unwrap_or(0);
            rows.retain(|m| m.seq <= mark);
        }
    }
}

/// The relay's tables.
#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
    durable: Arc<Durable>,
}

impl Store {
    /// Over an open, migrated pool.
    pub fn new(db: Db) -> Self {
        Self {
            db,
            durable: Arc::default(),
        }
    }

    /// The pool.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Every mailbox's state, to resume sequence numbering and limits after a restart.
    pub async fn mailboxes(&self) -> Result<HashMap<String, MailboxState>, StorageError> {
        const BOXES: &str = "SELECT node, epoch, acked FROM relay_mailboxes";
        const HELD: &str = "SELECT recipient, MAX(seq), COUNT(*), SUM(LENGTH(payload) + LENGTH(enc)) FROM relay_messages GROUP BY recipient";
        const EXPIRED: &str =
            "SELECT recipient, MAX(through_seq) FROM relay_expiries GROUP BY recipient";
        let boxes: Vec<(String, i64, i64)> =
            with_pool!(&self.db, pool => sqlx::query_as(BOXES).fetch_all(pool).await)?;
        let held: Vec<(String, i64, i64, i64)> = with_pool!(&self.db, pool => {
            sqlx::query_as::<_, (String, i64, i64, Option<i64>)>(HELD)
                .fetch_all(pool)
                .await
                .map(|rows| rows.into_iter().map(|(r, m, c, b)| (r, m, c, b.unwrap_or(0))).collect())
        })?;
        let expired: Vec<(String, i64)> =
            with_pool!(&self.db, pool => sqlx::query_as(EXPIRED).fetch_all(pool).await)?;
        let mut out: HashMap<String, MailboxState> = HashMap::new();
        for (node, epoch, acked) in boxes {
            out.insert(
                node,
                MailboxState {
                    epoch,
                    acked,
                    last_seq: acked,
                    ..MailboxState::default()
                },
            );
        }
        for (node, max, count, bytes) in held {
            let state = out.entry(node).or_default();
            state.last_seq = state.last_seq.max(max);
            state.count = count;
            state.bytes = bytes;
        }
        for (node, through) in expired {
            let state = out.entry(node).or_default();
            state.last_seq = state.last_seq.max(through);
            if through > state.acked {
                state.expired_through = through;
            }
        }
        Ok(out)
    }

    /// Create a mailbox if it does not exist; returns its epoch.
    pub async fn ensure_mailbox(&self, node: &str, epoch: i64) -> Result<i64, StorageError> {
        const INSERT: &str = "INSERT INTO relay_mailboxes (node, epoch) VALUES ($1, $2) ON CONFLICT (node) DO NOTHING";
        const READ: &str = "SELECT epoch FROM relay_mailboxes WHERE node = $1";
        let (epoch,): (i64,) = with_pool!(&self.db, pool => {
            sqlx::query(INSERT).bind(node).bind(epoch).execute(pool).await?;
            sqlx::query_as(READ).bind(node).fetch_one(pool).await
        })?;
        Ok(epoch)
    }

    /// A mailbox's durable acknowledgement and the highest sequence number it holds or
    /// recorded as expired (both 0 for a mailbox never used).
    pub async fn position(&self, node: &str) -> Result<(i64, i64), StorageError> {
        const SQL: &str = "SELECT COALESCE((SELECT acked FROM relay_mailboxes WHERE node = $1), 0), COALESCE((SELECT MAX(seq) FROM relay_messages WHERE recipient = $1), 0), COALESCE((SELECT MAX(through_seq) FROM relay_expiries WHERE recipient = $1), 0)";
        let (acked, held, expired): (i64, i64, i64) =
            with_pool!(&self.db, pool => sqlx::query_as(SQL).bind(node).fetch_one(pool).await)?;
        Ok((acked, acked.max(held).max(expired)))
    }

    /// Up to `limit` messages of `recipient` after `after`, in order.
    pub async fn fetch(
        &self,
        recipient: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<StoredMessage>, StorageError> {
        const SQL: &str = "SELECT seq, sender, client_id, enc, payload, created_ms, expires_ms FROM relay_messages WHERE recipient = $1 AND seq > $2 ORDER BY seq LIMIT $3";
        let mut rows: Vec<StoredMessage> = with_pool!(&self.db, pool => sqlx::query_as(SQL).bind(recipient).bind(after).bind(limit).fetch_all(pool).await)?;
        self.durable.clamp(recipient, &mut rows);
        Ok(rows)
    }

    /// Expired ranges of `recipient` past `after`.
    pub async fn expiries(&self, recipient: &str, after: i64) -> Result<Vec<Expiry>, StorageError> {
        const SQL: &str = "SELECT after_seq, through_seq, count FROM relay_expiries WHERE recipient = $1 AND through_seq > $2 ORDER BY through_seq";
        Ok(
            with_pool!(&self.db, pool => sqlx::query_as(SQL).bind(recipient).bind(after).fetch_all(pool).await)?,
        )
    }
}

/// Per recipient, the range and the bytes of expired `(recipient, seq, bytes)` rows.
fn expired_ranges(
    rows: impl IntoIterator<Item = (String, i64, i64)>,
) -> Vec<(String, Expiry, i64)> {
    let mut ranges: HashMap<String, (Expiry, i64)> = HashMap::new();
    for (recipient, seq, bytes) in rows {
        let entry = ranges.entry(recipient).or_insert((
            Expiry {
                after_seq: seq - 1,
                through_seq: seq,
                count: 0,
            },
            0,
        ));
        entry.0.after_seq = entry.0.after_seq.min(seq - 1);
        entry.0.through_seq = entry.0.through_seq.max(seq);
        entry.0.count += 1;
        entry.1 += bytes;
    }
    ranges.into_iter().map(|(r, (e, b))| (r, e, b)).collect()
}

/// Delete up to `limit` messages expired at `now_ms` on PostgreSQL, recording per recipient the
/// range they covered; also forget idempotency keys past their expiry. Returns per recipient
/// the range and the bytes removed.
async fn pool_expire(
    pool: &PgPool,
    now_ms: i64,
    limit: i64,
) -> Result<Vec<(String, Expiry, i64)>, StorageError> {
    // One statement deletes the batch and returns what it deleted.
    const DELETE: &str = "DELETE FROM relay_messages WHERE (recipient, seq) IN (SELECT recipient, seq FROM relay_messages WHERE expires_ms <= $1 ORDER BY expires_ms LIMIT $2) RETURNING recipient, seq, CAST(LENGTH(payload) + LENGTH(enc) AS BIGINT)";
    const RECORD: &str = "INSERT INTO relay_expiries (recipient, after_seq, through_seq, count, at_ms) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (recipient, through_seq) DO UPDATE SET count = relay_expiries.count + excluded.count, after_seq = LEAST(relay_expiries.after_seq, excluded.after_seq)";
    const FORGET: &str = "DELETE FROM relay_accepted WHERE expires_ms <= $1";
    let mut tx = pool.begin().await?;
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(DELETE)
        .bind(now_ms)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
    let ranges = expired_ranges(rows);
    for (recipient, e, _) in &ranges {
        sqlx::query(RECORD)
            .bind(recipient)
            .bind(e.after_seq)
            .bind(e.through_seq)
            .bind(e.count)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(FORGET).bind(now_ms).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(ranges)
}

/// What became of a send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// Durable at this sequence number of the recipient's mailbox.
    Stored(i64),
    /// The same (sender, id) was accepted before; nothing new was stored.
    Duplicate,
    /// The recipient's mailbox is at its count or byte bound; nothing was stored.
    MailboxFull,
}

/// One write the [`Writer`] commits.
#[derive(Debug)]
pub enum Write {
    /// Store a message; the writer assigns its sequence number, so numbering follows commit
    /// order (a cumulative ack can never pass a message that is not yet durable).
    Send {
        /// The message.
        message: NewMessage,
        /// Told once the batch is durable.
        done: oneshot::Sender<Result<SendOutcome, StorageError>>,
    },
    /// Delete a mailbox's messages up to `through` and record the acknowledgement.
    Ack {
        /// The mailbox.
        recipient: String,
        /// Cumulative acknowledgement.
        through: i64,
        /// Told once durable: how many messages were deleted.
        done: oneshot::Sender<Result<i64, StorageError>>,
    },
    /// Delete up to `limit` messages expired at `now_ms`, recording the ranges for the
    /// recipients and forgetting expired idempotency keys; through the
    /// writer so its mailbox occupancy stays exact.
    Expire {
        /// Unix milliseconds.
        now_ms: i64,
        /// Most messages deleted in one go.
        limit: i64,
        /// Told once durable: per recipient, the range that expired.
        done: oneshot::Sender<Result<Vec<(String, Expiry)>, StorageError>>,
    },
}

/// Mailbox bounds the writer enforces.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Messages held per recipient.
    pub max_messages: i64,
    /// Ciphertext bytes held per recipient.
    pub max_bytes: i64,
}

/// A message that just became durable, for the recipient's open connection.
#[derive(Debug)]
pub struct Committed {
    /// The mailbox.
    pub recipient: String,
    /// The message as stored.
    pub message: StoredMessage,
}

/// Called after each commit, before any sender is told, with every message it stored, in
/// sequence order per mailbox.
pub type OnCommit = Box<dyn Fn(Vec<Committed>) + Send + Sync>;

/// Handle to the group-commit task: the only writer of messages and acknowledgements, and the
/// only holder of each mailbox's sequence counter and occupancy.
#[derive(Clone, Debug)]
pub struct Writer {
    tx: mpsc::Sender<Write>,
    held: Arc<AtomicI64>,
}

/// Most writes in one transaction (binds stay well under both engines' limits).
const MAX_BATCH: usize = 1024;
/// Most mailboxes in one acknowledgement statement on PostgreSQL (one `OR` term each).
const ACK_CHUNK: usize = 256;

/// Sequence counter and occupancy of one mailbox.
#[derive(Clone, Copy, Debug, Default)]
struct Occupancy {
    last_seq: i64,
    /// Cumulative acknowledgement: nothing at or below it is held, so deletions start above
    /// it (on PostgreSQL an index scan from the mailbox's first key would step over every
    /// entry of rows deleted since the last vacuum).
    acked: i64,
    count: i64,
    bytes: i64,
    /// Highest expired range end still recorded (0: none), so acknowledgements only touch the
    /// expiry table when there is something in it.
    expired_through: i64,
}

/// How the writer reaches the database.
enum Engine {
    /// SQLite: the writer's own connection, used only from the writer's own thread.
    Native(Native),
    /// PostgreSQL: multi-row statements through the pool.
    Postgres(PgPool),
}

impl Writer {
    /// Read every mailbox's position and start the task. It ends when every handle is dropped.
    pub async fn spawn(
        store: Store,
        bounds: Bounds,
        on_commit: OnCommit,
    ) -> Result<Self, StorageError> {
        let boxes: HashMap<String, Occupancy> = store
            .mailboxes()
            .await?
            .into_iter()
            .map(|(node, m)| {
                let o = Occupancy {
                    last_seq: m.last_seq,
                    acked: m.acked,
                    count: m.count,
                    bytes: m.bytes,
                    expired_through: m.expired_through,
                };
                (node, o)
            })
            .collect();
        let engine = match store.db() {
            Db::Sqlite(pool) => {
                let path = pool.connect_options().get_filename().to_owned();
                let native = tokio::task::spawn_blocking(move || Native::open(&path))
                    .await
                    .map_err(|e| StorageError::Driver(Box::new(e)))??;
                Engine::Native(native)
            }
            Db::Postgres(pool) => Engine::Postgres(pool.clone()),
        };
        let finish = match &engine {
            Engine::Native(native) => {
                // Everything in the database at start is on disk (`Native::open` flushed it).
                store.durable.start(
                    boxes
                        .iter()
                        .map(|(node, o)| (node.clone(), o.last_seq))
                        .collect(),
                );
                Finish::AfterSync(native.syncer(on_commit, Arc::clone(&store.durable))?)
            }
            Engine::Postgres(_) => Finish::Now(on_commit),
        };
        let native = matches!(engine, Engine::Native(_));
        let (tx, mut rx) = mpsc::channel::<Write>(8 * MAX_BATCH);
        let held = Arc::new(AtomicI64::new(0));
        let mut task = Task {
            engine,
            bounds,
            boxes,
            held: Arc::clone(&held),
            finish,
        };
        task.count_held();
        let run = async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            // Commit at once when idle; while a commit runs, the next batch piles up.
            while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
                let (size, started) = (batch.len(), std::time::Instant::now());
                task.commit(std::mem::take(&mut batch)).await;
                if let Engine::Native(native) = &mut task.engine {
                    native.checkpoint_if_due(!rx.is_empty());
                }
                tracing::trace!(
                    size,
                    micros = started.elapsed().as_micros() as u64,
                    "group commit"
                );
            }
        };
        if native {
            // SQLite calls block: the writer gets a thread (and a runtime) of its own, so the
            // connections' tasks never wait behind a commit.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| StorageError::Driver(Box::new(e)))?;
            std::thread::Builder::new()
                .name("relay-writer".into())
                .spawn(move || runtime.block_on(run))
                .map_err(|e| StorageError::Driver(Box::new(e)))?;
        } else {
            tokio::spawn(run);
        }
        Ok(Self { tx, held })
    }

    /// Messages held in every mailbox, as of the last commit.
    pub fn held(&self) -> i64 {
        self.held.load(Ordering::Relaxed)
    }

    /// Queue a write; `false` when the writer has stopped.
    pub async fn submit(&self, write: Write) -> bool {
        self.tx.send(write).await.is_ok()
    }
}

struct Task {
    engine: Engine,
    bounds: Bounds,
    boxes: HashMap<String, Occupancy>,
    held: Arc<AtomicI64>,
    /// Where a committed batch's outcomes go: told at once (PostgreSQL, durable at commit), or
    /// once the log is on disk (SQLite, see [`native::Syncer`]).
    finish: Finish,
}

/// What to do with a committed batch's [`Completion`].
enum Finish {
    /// Hand it out now.
    Now(OnCommit),
    /// Hand it out after the syncer's next `fdatasync` of the log.
    AfterSync(native::Syncer),
}

impl Finish {
    fn send(&self, completion: Completion) {
        match self {
            Self::Now(on_commit) => completion.complete(on_commit),
            Self::AfterSync(syncer) => syncer.submit(completion),
        }
    }

    /// Whether a write failed to become durable: then nothing more is accepted.
    fn broken(&self) -> Option<String> {
        match self {
            Self::Now(_) => None,
            Self::AfterSync(syncer) => syncer.broken(),
        }
    }
}

type ExpireReply = (
    oneshot::Sender<Result<Vec<(String, Expiry)>, StorageError>>,
    Vec<(String, Expiry)>,
);

/// A committed batch's outcomes, handed out only once the batch is durable: the messages for
/// their recipients' connections (first), then every writer's answer.
#[derive(Default)]
struct Completion {
    committed: Vec<Committed>,
    sends: Vec<(
        oneshot::Sender<Result<SendOutcome, StorageError>>,
        SendOutcome,
    )>,
    acks: Vec<(oneshot::Sender<Result<i64, StorageError>>, i64)>,
    expiries: Vec<ExpireReply>,
}

impl Completion {
    fn complete(self, on_commit: &OnCommit) {
        if !self.committed.is_empty() {
            on_commit(self.committed);
        }
        for (done, o) in self.sends {
            let _ = done.send(Ok(o));
        }
        for (done, n) in self.acks {
            let _ = done.send(Ok(n));
        }
        for (done, ranges) in self.expiries {
            let _ = done.send(Ok(ranges));
        }
    }

    /// The batch is not known to be durable: every writer is told it failed, nothing is
    /// delivered.
    fn fail(self, why: &str) {
        let err = || StorageError::Failed(why.to_owned().into());
        for (done, _) in self.sends {
            let _ = done.send(Err(err()));
        }
        for (done, _) in self.acks {
            let _ = done.send(Err(err()));
        }
        for (done, _) in self.expiries {
            let _ = done.send(Err(err()));
        }
    }
}

/// A send the batch will store.
struct Planned<'a> {
    message: &'a NewMessage,
    seq: i64,
}

/// A mailbox's counters in the batch's overlay, starting from the committed ones.
fn slot<'a>(
    touched: &'a mut HashMap<String, Occupancy>,
    base: &HashMap<String, Occupancy>,
    recipient: &str,
) -> &'a mut Occupancy {
    touched
        .entry(recipient.to_owned())
        .or_insert_with(|| base.get(recipient).copied().unwrap_or_default())
}

fn size(m: &NewMessage) -> i64 {
    i64::try_from(m.payload.len() + m.enc.len()).unwrap_or(i64::MAX)
}

/// Where a batch records idempotency keys.
trait Keys<'m> {
    type Error;
    /// Record `m`'s key; `false` when it was accepted before or earlier in this batch.
    fn claim(&mut self, m: &'m NewMessage) -> Result<bool, Self::Error>;
    /// Forget a key just claimed, for a send refused after all.
    fn release(&mut self, m: &'m NewMessage) -> Result<(), Self::Error>;
}

/// One mailbox's acknowledgement in a batch: delete its messages in `(after, through]`.
struct AckTarget<'a> {
    recipient: &'a str,
    /// The acknowledgement before this batch.
    after: i64,
    through: i64,
    /// Whether expiry records must be forgotten.
    forget: bool,
}

/// What one transaction does, planned on an overlay of the mailboxes the batch touches (the
/// counters change only once it has committed).
struct Overlay<'b> {
    base: &'b HashMap<String, Occupancy>,
    touched: &'b mut HashMap<String, Occupancy>,
    bounds: Bounds,
}

impl Overlay<'_> {
    /// Each send's fate, in batch order: a duplicate (accepted earlier, or repeated within the
    /// batch: the first is stored), refused over a mailbox bound, or stored at the next
    /// sequence number of its mailbox. Returns the outcomes and the sends to store.
    fn plan<'m, K: Keys<'m>>(
        &mut self,
        sends: &[&'m NewMessage],
        keys: &mut K,
    ) -> Result<(Vec<SendOutcome>, Vec<Planned<'m>>), K::Error> {
        let mut outcomes = vec![SendOutcome::Duplicate; sends.len()];
        let mut fresh = Vec::with_capacity(sends.len());
        for (i, m) in sends.iter().enumerate() {
            if !keys.claim(m)? {
                continue;
            }
            let b = slot(self.touched, self.base, &m.recipient);
            if b.count >= self.bounds.max_messages
                || b.bytes.saturating_add(size(m)) > self.bounds.max_bytes
            {
                outcomes[i] = SendOutcome::MailboxFull;
                keys.release(m)?;
                continue;
            }
            b.last_seq += 1;
            b.count += 1;
            b.bytes += size(m);
            outcomes[i] = SendOutcome::Stored(b.last_seq);
            fresh.push(Planned {
                message: m,
                seq: b.last_seq,
            });
        }
        Ok((outcomes, fresh))
    }

    /// Acknowledgements are cumulative: one per mailbox (the highest) is applied. Never past
    /// the highest number assigned: an ack beyond it would hide later messages below the resume
    /// position.
    fn ack_targets<'a>(&mut self, acks: &[(&'a str, i64)]) -> Vec<AckTarget<'a>> {
        let mut highest: HashMap<&str, i64> = HashMap::new();
        for (recipient, through) in acks {
            let capped = (*through).min(slot(self.touched, self.base, recipient).last_seq);
            let t = highest.entry(recipient).or_insert(capped);
            *t = (*t).max(capped);
        }
        highest
            .into_iter()
            .map(|(recipient, through)| {
                let b = slot(self.touched, self.base, recipient);
                let forget = b.expired_through > 0;
                if through >= b.expired_through {
                    b.expired_through = 0;
                }
                let after = b.acked;
                b.acked = b.acked.max(through);
                AckTarget {
                    recipient,
                    after,
                    through,
                    forget,
                }
            })
            .collect()
    }

    /// Take what the acknowledgements deleted (per mailbox: messages, bytes) off the counters;
    /// each mailbox's deletions are reported on its last acknowledgement in the batch.
    fn settle(&mut self, acks: &[(&str, i64)], mut removed: HashMap<&str, (i64, i64)>) -> Vec<i64> {
        let mut deleted = vec![0; acks.len()];
        for (i, (recipient, _)) in acks.iter().enumerate().rev() {
            if let Some((n, bytes)) = removed.remove(*recipient) {
                let b = slot(self.touched, self.base, recipient);
                b.count -= n;
                b.bytes -= bytes;
                deleted[i] = n;
            }
        }
        deleted
    }
}

impl Task {
    fn count_held(&self) {
        self.held.store(
            self.boxes.values().map(|b| b.count).sum(),
            Ordering::Relaxed,
        );
    }

    async fn commit(&mut self, batch: Vec<Write>) {
        let mut sends = Vec::new();
        let mut acks = Vec::new();
        let mut expiries = Vec::new();
        for w in batch {
            match w {
                Write::Expire {
                    now_ms,
                    limit,
                    done,
                } => expiries.push((now_ms, limit, done)),
                Write::Send { message, done } => sends.push((message, done)),
                Write::Ack {
                    recipient,
                    through,
                    done,
                } => acks.push((recipient, through, done)),
            }
        }
        let messages: Vec<&NewMessage> = sends.iter().map(|(m, _)| m).collect();
        let ack_list: Vec<(&str, i64)> = acks.iter().map(|(r, t, _)| (r.as_str(), *t)).collect();
        let mut touched = HashMap::new();
        let mut overlay = Overlay {
            base: &self.boxes,
            touched: &mut touched,
            bounds: self.bounds,
        };
        let result = match (&mut self.engine, self.finish.broken()) {
            (_, Some(why)) => Err(StorageError::Failed(why.into())),
            (Engine::Native(native), None) => native
                .write(&mut overlay, &messages, &ack_list, now_ms())
                .map_err(|e| StorageError::Driver(Box::new(e))),
            (Engine::Postgres(pool), None) => {
                pool_write(pool, &mut overlay, &messages, &ack_list).await
            }
        };
        drop((messages, ack_list));
        let mut completion = Completion::default();
        match result {
            Ok((outcomes, deleted)) => {
                let delta: i64 = touched
                    .iter()
                    .map(|(r, b)| b.count - self.boxes.get(r).map_or(0, |o| o.count))
                    .sum();
                self.held.fetch_add(delta, Ordering::Relaxed);
                self.boxes.extend(touched);
                for ((message, done), o) in sends.into_iter().zip(outcomes) {
                    if let SendOutcome::Stored(seq) = o {
                        completion.committed.push(Committed {
                            message: StoredMessage {
                                seq,
                                sender: message.sender,
                                client_id: message.client_id.to_vec(),
                                enc: message.enc,
                                payload: message.payload,
                                created_ms: message.created_ms,
                                expires_ms: message.expires_ms,
                            },
                            recipient: message.recipient,
                        });
                    }
                    completion.sends.push((done, o));
                }
                completion.acks = acks
                    .into_iter()
                    .zip(deleted)
                    .map(|((_, _, done), d)| (done, d))
                    .collect();
            }
            Err(e) => {
                tracing::error!(error = %keymesh_core::error::error_chain(&e), "relay group commit failed; every write in it is refused");
                Completion {
                    sends: sends
                        .into_iter()
                        .map(|(_, done)| (done, SendOutcome::Duplicate))
                        .collect(),
                    acks: acks.into_iter().map(|(_, _, done)| (done, 0)).collect(),
                    ..Completion::default()
                }
                .fail(&e.to_string());
            }
        }
        for (now_ms, limit, done) in expiries {
            match self.expire(now_ms, limit).await {
                Ok(ranges) => completion.expiries.push((done, ranges)),
                Err(e) => {
                    let _ = done.send(Err(e));
                }
            }
        }
        self.finish.send(completion);
    }

    async fn expire(
        &mut self,
        now_ms: i64,
        limit: i64,
    ) -> Result<Vec<(String, Expiry)>, StorageError> {
        if let Some(why) = self.finish.broken() {
            return Err(StorageError::Failed(why.into()));
        }
        let expired = match &mut self.engine {
            Engine::Native(native) => native
                .expire(now_ms, limit)
                .map_err(|e| StorageError::Driver(Box::new(e)))?,
            Engine::Postgres(pool) => pool_expire(pool, now_ms, limit).await?,
        };
        Ok(expired
            .into_iter()
            .map(|(recipient, range, bytes)| {
                self.held.fetch_sub(range.count, Ordering::Relaxed);
                let b = self.boxes.entry(recipient.clone()).or_default();
                b.count -= range.count;
                b.bytes -= bytes;
                b.expired_through = b.expired_through.max(range.through_seq);
                (recipient, range)
            })
            .collect())
    }
}

type Dup = (String, Vec<u8>);

/// Keys on PostgreSQL: looked up for the whole batch first, inserted with the messages.
struct PoolKeys<'m> {
    earlier: HashSet<Dup>,
    seen: HashSet<(&'m str, &'m [u8])>,
}

impl<'m> Keys<'m> for PoolKeys<'m> {
    type Error = StorageError;
    fn claim(&mut self, m: &'m NewMessage) -> Result<bool, StorageError> {
        let key = (m.sender.as_str(), m.client_id.as_slice());
        let before =
            !self.earlier.is_empty() && self.earlier.contains(&(m.sender.clone(), key.1.to_vec()));
        Ok(!before && self.seen.insert(key))
    }
    fn release(&mut self, m: &'m NewMessage) -> Result<(), StorageError> {
        self.seen
            .remove(&(m.sender.as_str(), m.client_id.as_slice()));
        Ok(())
    }
}

/// Push `(recipient = $ AND column > $ AND column <= $) OR ...`, one term per
/// `(recipient, after, through)` (no lower bound without `after`); false when there were none.
fn or_ranges<'a>(
    q: &mut QueryBuilder<Postgres>,
    column: &str,
    ranges: impl Iterator<Item = (&'a str, Option<i64>, i64)>,
) -> bool {
    let mut or = q.separated(" OR ");
    let mut any = false;
    for (recipient, after, through) in ranges {
        or.push("(recipient = ");
        or.push_bind_unseparated(recipient);
        if let Some(after) = after {
            or.push_unseparated(format!(" AND {column} > "));
            or.push_bind_unseparated(after);
        }
        or.push_unseparated(format!(" AND {column} <= "));
        or.push_bind_unseparated(through);
        or.push_unseparated(")");
        any = true;
    }
    any
}

/// One transaction on PostgreSQL: a lookup of the batch's keys, one insert each for messages
/// and keys, and per 256 mailboxes one statement each for the acknowledgements.
async fn pool_write(
    pool: &sqlx::PgPool,
    overlay: &mut Overlay<'_>,
    sends: &[&NewMessage],
    acks: &[(&str, i64)],
) -> Result<(Vec<SendOutcome>, Vec<i64>), StorageError> {
    let now_ms = now_ms();
    let mut tx = pool.begin().await?;
    let mut outcomes = Vec::new();
    if !sends.is_empty() {
        // Statements built per batch are not cached (`persistent(false)`): their shape changes
        // with the batch, and each cached shape would hold a large program.
        let mut find = QueryBuilder::<Postgres>::new("SELECT a.sender, a.client_id FROM (");
        find.push_values(sends, |mut row, m| {
            row.push_bind(&m.sender).push_bind(m.client_id.as_slice());
        });
        find.push(") AS v (sender, client_id) JOIN relay_accepted a ON a.sender = v.sender AND a.client_id = v.client_id");
        let earlier: HashSet<Dup> = find
            .build_query_as::<Dup>()
            .persistent(false)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
        let mut keys = PoolKeys {
            earlier,
            seen: HashSet::new(),
        };
        let (o, fresh) = overlay.plan(sends, &mut keys)?;
        outcomes = o;
        if !fresh.is_empty() {
            let mut insert = QueryBuilder::<Postgres>::new(
                "INSERT INTO relay_messages (recipient, seq, sender, client_id, enc, payload, created_ms, expires_ms) ",
            );
            insert.push_values(&fresh, |mut row, p| {
                let m = p.message;
                row.push_bind(&m.recipient)
                    .push_bind(p.seq)
                    .push_bind(&m.sender)
                    .push_bind(m.client_id.as_slice())
                    .push_bind(&m.enc)
                    .push_bind(&m.payload)
                    .push_bind(m.created_ms)
                    .push_bind(m.expires_ms);
            });
            insert.build().persistent(false).execute(&mut *tx).await?;
            let mut insert_keys = QueryBuilder::<Postgres>::new(
                "INSERT INTO relay_accepted (sender, client_id, expires_ms) ",
            );
            insert_keys.push_values(&fresh, |mut row, p| {
                row.push_bind(&p.message.sender)
                    .push_bind(p.message.client_id.as_slice())
                    .push_bind(p.message.expires_ms);
            });
            insert_keys
                .build()
                .persistent(false)
                .execute(&mut *tx)
                .await?;
        }
    }
    let targets = overlay.ack_targets(acks);
    let mut removed: HashMap<&str, (i64, i64)> = HashMap::new();
    for chunk in targets.chunks(ACK_CHUNK) {
        let mut delete = QueryBuilder::<Postgres>::new("DELETE FROM relay_messages WHERE ");
        let ranges = chunk
            .iter()
            .filter(|t| t.through > t.after)
            .map(|t| (t.recipient, Some(t.after), t.through));
        if or_ranges(&mut delete, "seq", ranges) {
            delete.push(" RETURNING recipient, CAST(LENGTH(payload) + LENGTH(enc) AS BIGINT)");
            let sizes: Vec<(String, i64)> = delete
                .build_query_as()
                .persistent(false)
                .fetch_all(&mut *tx)
                .await?;
            for (recipient, bytes) in sizes {
                if let Some(t) = chunk.iter().find(|t| t.recipient == recipient) {
                    let e = removed.entry(t.recipient).or_default();
                    e.0 += 1;
                    e.1 += bytes;
                }
            }
        }
        let mut forget = QueryBuilder::<Postgres>::new("DELETE FROM relay_expiries WHERE ");
        let ranges = chunk
            .iter()
            .filter(|t| t.forget)
            .map(|t| (t.recipient, None, t.through));
        if or_ranges(&mut forget, "through_seq", ranges) {
            forget.build().persistent(false).execute(&mut *tx).await?;
        }
        // Upsert: an acknowledgement is remembered even for a mailbox first seen here, so a
        // restart never numbers below it.
        let mut acked =
            QueryBuilder::<Postgres>::new("INSERT INTO relay_mailboxes (node, epoch, acked) ");
        acked.push_values(chunk, |mut row, t| {
            row.push_bind(t.recipient)
                .push_bind(now_ms)
                .push_bind(t.through);
        });
        acked.push(" ON CONFLICT (node) DO UPDATE SET acked = GREATEST(relay_mailboxes.acked, excluded.acked)");
        acked.build().persistent(false).execute(&mut *tx).await?;
    }
    let deleted = overlay.settle(acks, removed);
    tx.commit().await?;
    Ok((outcomes, deleted))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(seqs: &[i64]) -> Vec<StoredMessage> {
        seqs.iter()
            .map(|&seq| StoredMessage {
                seq,
                sender: "a".into(),
                client_id: vec![0; 16],
                enc: Vec::new(),
                payload: Vec::new(),
                created_ms: 0,
                expires_ms: 0,
            })
            .collect()
    }

    fn clamped(durable: &Durable, recipient: &str, seqs: &[i64]) -> Vec<i64> {
        let mut read = rows(seqs);
        durable.clamp(recipient, &mut read);
        read.iter().map(|m| m.seq).collect()
    }

    #[test]
    fn reads_never_hand_out_a_message_before_the_flush_that_makes_it_durable() {
        let durable = Durable::default();
        // No flushing writer (PostgreSQL, or no writer yet): nothing is held back.
        assert_eq!(clamped(&durable, "b", &[1, 2]), [1, 2]);

        // b had 3 messages on disk at start; 4 and 5 are committed, not yet flushed.
        durable.start(HashMap::from([("b".to_owned(), 3)]));
        assert_eq!(clamped(&durable, "b", &[3, 4, 5]), [3]);
        // A mailbox first written after start has nothing on disk until its first flush.
        assert!(clamped(&durable, "c", &[1]).is_empty());

        let flushed: Vec<Committed> = rows(&[4, 5])
            .into_iter()
            .map(|message| Committed {
                recipient: "b".into(),
                message,
            })
            .collect();
        durable.advance(&flushed);
        assert_eq!(clamped(&durable, "b", &[4, 5, 6]), [4, 5]);
    }
}

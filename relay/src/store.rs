//! Mailbox storage on SQLite or PostgreSQL. Writes go through one [`Writer`] task that commits
//! everything that piled up while the previous commit ran (group commit): one transaction,
//! whatever the number of messages and acknowledgements, commits at once when idle.

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
use tokio::sync::{mpsc, oneshot};

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
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The relay's tables.
#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
}

impl Store {
    /// Over an open, migrated pool.
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// The statement that opens a write transaction: on SQLite it takes the write lock at once
    /// (`IMMEDIATE`), so a writer waits out a checkpoint through the busy timeout instead of
    /// failing when it upgrades a read snapshot.
    fn begin_write(&self) -> &'static str {
        match self.db {
            Db::Sqlite(_) => "BEGIN IMMEDIATE",
            Db::Postgres(_) => "BEGIN",
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
        Ok(
            with_pool!(&self.db, pool => sqlx::query_as(SQL).bind(recipient).bind(after).bind(limit).fetch_all(pool).await)?,
        )
    }

    /// Expired ranges of `recipient` past `after`.
    pub async fn expiries(&self, recipient: &str, after: i64) -> Result<Vec<Expiry>, StorageError> {
        const SQL: &str = "SELECT after_seq, through_seq, count FROM relay_expiries WHERE recipient = $1 AND through_seq > $2 ORDER BY through_seq";
        Ok(
            with_pool!(&self.db, pool => sqlx::query_as(SQL).bind(recipient).bind(after).fetch_all(pool).await)?,
        )
    }

    /// Delete up to `limit` messages expired at `now_ms`, recording per recipient the range
    /// they covered; also forget idempotency keys past their expiry. Returns per recipient the
    /// number of messages and bytes removed.
    pub async fn expire(
        &self,
        now_ms: i64,
        limit: i64,
    ) -> Result<Vec<(String, Expiry, i64)>, StorageError> {
        // One statement deletes the batch and returns what it deleted.
        const DELETE: &str = "DELETE FROM relay_messages WHERE (recipient, seq) IN (SELECT recipient, seq FROM relay_messages WHERE expires_ms <= $1 ORDER BY expires_ms LIMIT $2) RETURNING recipient, seq, CAST(LENGTH(payload) + LENGTH(enc) AS BIGINT)";
        const RECORD_SQLITE: &str = "INSERT INTO relay_expiries (recipient, after_seq, through_seq, count, at_ms) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (recipient, through_seq) DO UPDATE SET count = relay_expiries.count + excluded.count, after_seq = MIN(relay_expiries.after_seq, excluded.after_seq)";
        const RECORD_POSTGRES: &str = "INSERT INTO relay_expiries (recipient, after_seq, through_seq, count, at_ms) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (recipient, through_seq) DO UPDATE SET count = relay_expiries.count + excluded.count, after_seq = LEAST(relay_expiries.after_seq, excluded.after_seq)";
        const FORGET: &str = "DELETE FROM relay_accepted WHERE expires_ms <= $1";
        let record = match self.db {
            Db::Sqlite(_) => RECORD_SQLITE,
            Db::Postgres(_) => RECORD_POSTGRES,
        };
        let out = with_pool!(&self.db, pool => {
            let mut tx = pool.begin_with(self.begin_write()).await?;
            let rows: Vec<(String, i64, i64)> = sqlx::query_as(DELETE).bind(now_ms).bind(limit).fetch_all(&mut *tx).await?;
            let mut ranges: HashMap<String, (Expiry, i64)> = HashMap::new();
            for (recipient, seq, bytes) in rows {
                let entry = ranges.entry(recipient).or_insert((Expiry { after_seq: seq - 1, through_seq: seq, count: 0 }, 0));
                entry.0.after_seq = entry.0.after_seq.min(seq - 1);
                entry.0.through_seq = entry.0.through_seq.max(seq);
                entry.0.count += 1;
                entry.1 += bytes;
            }
            for (recipient, (e, _)) in &ranges {
                sqlx::query(record).bind(recipient).bind(e.after_seq).bind(e.through_seq).bind(e.count).bind(now_ms).execute(&mut *tx).await?;
            }
            sqlx::query(FORGET).bind(now_ms).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(ranges.into_iter().map(|(r, (e, b))| (r, e, b)).collect())
        })?;
        Ok(out)
    }
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
    /// Delete up to `limit` messages expired at `now_ms` (see [`Store::expire`]); through the
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
/// Most mailboxes in one acknowledgement statement: its `OR` chain is an expression tree as deep
/// as it is long, and SQLite refuses trees deeper than 1,000.
const ACK_CHUNK: usize = 256;

/// Sequence counter and occupancy of one mailbox.
#[derive(Clone, Copy, Debug, Default)]
struct Occupancy {
    last_seq: i64,
    count: i64,
    bytes: i64,
}

impl Writer {
    /// Read every mailbox's position and start the task. It ends when every handle is dropped.
    pub async fn spawn(
        store: Store,
        bounds: Bounds,
        on_commit: OnCommit,
    ) -> Result<Self, StorageError> {
        let boxes = store
            .mailboxes()
            .await?
            .into_iter()
            .map(|(node, m)| {
                let o = Occupancy {
                    last_seq: m.last_seq,
                    count: m.count,
                    bytes: m.bytes,
                };
                (node, o)
            })
            .collect();
        let (tx, mut rx) = mpsc::channel::<Write>(8 * MAX_BATCH);
        let held = Arc::new(AtomicI64::new(0));
        let mut task = Task {
            store,
            bounds,
            boxes,
            on_commit,
            held: Arc::clone(&held),
        };
        task.count_held();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            // Commit at once when idle; while a commit runs, the next batch piles up.
            while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
                let (size, started) = (batch.len(), std::time::Instant::now());
                task.commit(std::mem::take(&mut batch)).await;
                tracing::trace!(
                    size,
                    micros = started.elapsed().as_micros() as u64,
                    "group commit"
                );
            }
        });
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
    store: Store,
    bounds: Bounds,
    boxes: HashMap<String, Occupancy>,
    on_commit: OnCommit,
    held: Arc<AtomicI64>,
}

type Dup = (String, Vec<u8>);
type SendItem = (
    NewMessage,
    oneshot::Sender<Result<SendOutcome, StorageError>>,
);
type AckItem = (String, i64, oneshot::Sender<Result<i64, StorageError>>);

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
        // Plan on an overlay of the mailboxes the batch touches: the counters change only once
        // the transaction has committed.
        let mut touched = HashMap::new();
        let result = self.write(&messages, &ack_list, &mut touched).await;
        drop((messages, ack_list));
        match result {
            Ok((outcomes, deleted)) => {
                let delta: i64 = touched
                    .iter()
                    .map(|(r, b)| b.count - self.boxes.get(r).map_or(0, |o| o.count))
                    .sum();
                self.held.fetch_add(delta, Ordering::Relaxed);
                self.boxes.extend(touched);
                let mut committed = Vec::new();
                let mut replies = Vec::with_capacity(sends.len());
                for ((message, done), o) in sends.into_iter().zip(outcomes) {
                    if let SendOutcome::Stored(seq) = o {
                        committed.push(Committed {
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
                    replies.push((done, o));
                }
                if !committed.is_empty() {
                    (self.on_commit)(committed);
                }
                for (done, o) in replies {
                    let _ = done.send(Ok(o));
                }
                for ((_, _, done), d) in acks.into_iter().zip(deleted) {
                    let _ = done.send(Ok(d));
                }
            }
            Err(e) => {
                tracing::error!(error = %keymesh_core::error::error_chain(&e), "relay group commit failed; every write in it is refused");
                self.fail(sends, acks, &e);
            }
        }
        for (now_ms, limit, done) in expiries {
            let _ = done.send(self.expire(now_ms, limit).await);
        }
    }

    async fn expire(
        &mut self,
        now_ms: i64,
        limit: i64,
    ) -> Result<Vec<(String, Expiry)>, StorageError> {
        let expired = self.store.expire(now_ms, limit).await?;
        Ok(expired
            .into_iter()
            .map(|(recipient, range, bytes)| {
                self.held.fetch_sub(range.count, Ordering::Relaxed);
                if let Some(b) = self.boxes.get_mut(&recipient) {
                    b.count -= range.count;
                    b.bytes -= bytes;
                }
                (recipient, range)
            })
            .collect())
    }

    fn fail(&self, sends: Vec<SendItem>, acks: Vec<AckItem>, e: &StorageError) {
        let text = e.to_string();
        let err = || StorageError::Query(sqlx::Error::Protocol(text.clone()));
        for (_, done) in sends {
            let _ = done.send(Err(err()));
        }
        for (_, _, done) in acks {
            let _ = done.send(Err(err()));
        }
    }

    /// One transaction: find which sends are duplicates (accepted earlier, or repeated within
    /// the batch: the first is stored), refuse those over a mailbox bound, store the rest with
    /// their idempotency keys and fresh sequence numbers, apply acknowledgements.
    async fn write(
        &self,
        sends: &[&NewMessage],
        acks: &[(&str, i64)],
        touched: &mut HashMap<String, Occupancy>,
    ) -> Result<(Vec<SendOutcome>, Vec<i64>), StorageError> {
        let base = &self.boxes;
        let bounds = self.bounds;
        let now_ms = now_ms();
        let out = with_pool!(self.store.db(), pool => {
            let mut tx = pool.begin_with(self.store.begin_write()).await?;
            let mut outcomes = vec![SendOutcome::Duplicate; sends.len()];
            if !sends.is_empty() {
                // Statements built per batch are not cached (`persistent(false)`): their shape
                // changes with the batch, and each cached shape would hold a large program.
                // A join from the batch's ids, so each is one index lookup: a row-value `IN`
                // list makes SQLite scan the whole table.
                let mut find = sqlx::QueryBuilder::new("SELECT a.sender, a.client_id FROM (");
                find.push_values(sends, |mut row, m| {
                    row.push_bind(&m.sender).push_bind(m.client_id.as_slice());
                });
                find.push(") AS v JOIN relay_accepted a ON a.sender = v.column1 AND a.client_id = v.column2");
                let earlier: HashSet<Dup> = find.build_query_as::<Dup>().persistent(false).fetch_all(&mut *tx).await?.into_iter().collect();
                let mut seen: HashSet<(&str, &[u8])> = HashSet::new();
                let mut fresh: Vec<Planned<'_>> = Vec::with_capacity(sends.len());
                for (i, m) in sends.iter().enumerate() {
                    let key = (m.sender.as_str(), m.client_id.as_slice());
                    let accepted_before = !earlier.is_empty() && earlier.contains(&(m.sender.clone(), m.client_id.to_vec()));
                    if accepted_before || !seen.insert(key) {
                        continue;
                    }
                    let b = slot(touched, base, &m.recipient);
                    if b.count >= bounds.max_messages || b.bytes.saturating_add(size(m)) > bounds.max_bytes {
                        outcomes[i] = SendOutcome::MailboxFull;
                        seen.remove(&key);
                        continue;
                    }
                    b.last_seq += 1;
                    b.count += 1;
                    b.bytes += size(m);
                    outcomes[i] = SendOutcome::Stored(b.last_seq);
                    fresh.push(Planned { message: m, seq: b.last_seq });
                }
                if !fresh.is_empty() {
                    let mut insert = sqlx::QueryBuilder::new("INSERT INTO relay_messages (recipient, seq, sender, client_id, enc, payload, created_ms, expires_ms) ");
                    insert.push_values(&fresh, |mut row, p| {
                        let m = p.message;
                        row.push_bind(&m.recipient).push_bind(p.seq).push_bind(&m.sender).push_bind(m.client_id.as_slice()).push_bind(&m.enc).push_bind(&m.payload).push_bind(m.created_ms).push_bind(m.expires_ms);
                    });
                    insert.build().persistent(false).execute(&mut *tx).await?;
                    let mut keys = sqlx::QueryBuilder::new("INSERT INTO relay_accepted (sender, client_id, expires_ms) ");
                    keys.push_values(&fresh, |mut row, p| {
                        row.push_bind(&p.message.sender).push_bind(p.message.client_id.as_slice()).push_bind(p.message.expires_ms);
                    });
                    keys.build().persistent(false).execute(&mut *tx).await?;
                }
            }
            // Acknowledgements are cumulative: one per mailbox (the highest) is applied, with
            // one statement each for all mailboxes of the batch. Never past the highest number
            // assigned: an ack beyond it would hide later messages below the resume position.
            let mut highest: HashMap<&str, i64> = HashMap::new();
            for (recipient, through) in acks {
                let capped = (*through).min(slot(touched, base, recipient).last_seq);
                let t = highest.entry(recipient).or_insert(capped);
                *t = (*t).max(capped);
            }
            let mut removed: HashMap<String, (i64, i64)> = HashMap::new();
            if !highest.is_empty() {
                let ranges: Vec<(&str, i64)> = highest.iter().map(|(r, t)| (*r, *t)).collect();
                for ranges in ranges.chunks(ACK_CHUNK) {
                    let either = |q: &mut sqlx::QueryBuilder<_>, seq: &str| {
                        let mut or = q.separated(" OR ");
                        for (recipient, through) in ranges {
                            or.push("(recipient = ");
                            or.push_bind_unseparated(*recipient);
                            or.push_unseparated(format!(" AND {seq} <= "));
                            or.push_bind_unseparated(*through);
                            or.push_unseparated(")");
                        }
                    };
                    let mut delete = sqlx::QueryBuilder::new("DELETE FROM relay_messages WHERE ");
                    either(&mut delete, "seq");
                    delete.push(" RETURNING recipient, CAST(LENGTH(payload) + LENGTH(enc) AS BIGINT)");
                    let sizes: Vec<(String, i64)> = delete.build_query_as().persistent(false).fetch_all(&mut *tx).await?;
                    for (recipient, bytes) in sizes {
                        let r = removed.entry(recipient).or_default();
                        r.0 += 1;
                        r.1 += bytes;
                    }
                    let mut forget = sqlx::QueryBuilder::new("DELETE FROM relay_expiries WHERE ");
                    either(&mut forget, "through_seq");
                    forget.build().persistent(false).execute(&mut *tx).await?;
                    // Upsert: an acknowledgement is remembered even for a mailbox first seen here,
                    // so a restart never numbers below it.
                    let mut acked = sqlx::QueryBuilder::new("INSERT INTO relay_mailboxes (node, epoch, acked) ");
                    acked.push_values(ranges, |mut row, (recipient, through)| {
                        row.push_bind(*recipient).push_bind(now_ms).push_bind(*through);
                    });
                    acked.push(" ON CONFLICT (node) DO UPDATE SET acked = CASE WHEN relay_mailboxes.acked < excluded.acked THEN excluded.acked ELSE relay_mailboxes.acked END");
                    acked.build().persistent(false).execute(&mut *tx).await?;
                }
            }
            // Each mailbox's deletions are reported on its last acknowledgement in the batch.
            let mut deleted = vec![0; acks.len()];
            for (i, (recipient, _)) in acks.iter().enumerate().rev() {
                if let Some((n, bytes)) = removed.remove(*recipient) {
                    let b = slot(touched, base, recipient);
                    b.count -= n;
                    b.bytes -= bytes;
                    deleted[i] = n;
                }
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>((outcomes, deleted))
        })?;
        Ok(out)
    }
}

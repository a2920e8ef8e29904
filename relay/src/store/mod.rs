//! Mailbox storage on SQLite or PostgreSQL. Writes go through one [`Writer`] task that commits
//! everything that piled up while the previous commit ran (group commit): one transaction,
//! whatever the number of messages and acknowledgements, commits at once when idle.
//!
//! On SQLite the writer runs on its own thread with its own connection and prepared statements
//! ([`native`]); on PostgreSQL it sends a few multi-row statements per commit through the pool.

mod native;
mod overlay;
mod postgres;
mod reads;
mod writer;

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
use overlay::{Keys, Overlay};
use postgres::{pool_expire, pool_write};
pub use reads::Store;
pub use writer::Writer;
use writer::{Completion, Occupancy};

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

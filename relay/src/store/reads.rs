//! Reads: mailboxes, keys and expiry, clamped to what the writer knows is durable.

use super::*;

/// The relay's tables.
#[derive(Clone, Debug)]
pub struct Store {
    pub(super) db: Db,
    pub(super) durable: Arc<Durable>,
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

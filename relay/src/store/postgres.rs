//! The writer's PostgreSQL engine, the twin of [`super::native`]: a few multi-row statements
//! per commit through the pool.

use super::*;

/// Most mailboxes in one acknowledgement statement (one `OR` term each).
const ACK_CHUNK: usize = 256;

/// Delete up to `limit` messages expired at `now_ms` on PostgreSQL, recording per recipient the
/// range they covered; also forget idempotency keys past their expiry. Returns per recipient
/// the range and the bytes removed.
pub(super) async fn pool_expire(
    pool: &PgPool,
    now_ms: i64,
    limit: i64,
) -> Result<Vec<(String, Expiry, i64)>, StorageError> {
    // One statement deletes the batch and returns what it deleted.
    const DELETE: &str = "DELETE FROM relay_messages WHERE (recipient, seq) IN (SELECT recipient, seq FROM relay_messages WHERE expires_ms <= $1 ORDER BY expires_ms LIMIT $2) RETURNING recipient, seq, CAST(LENGTH(payload) + LENGTH(enc) AS BIGINT)";
    const RECORD: &str = "INSERT INTO relay_expiries (recipient, after_seq, through_seq, count, at_ms) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (recipient, through_seq) DO UPDATE SET count = relay_expiries.count + excluded.count, after_seq = LEAST(relay_expiries.after_seq, excluded.after_seq)";
    const FORGET: &str = "DELETE FROM relay_accepted WHERE expires_ms <= $1";
    #[expect(
        clippy::disallowed_methods,
        reason = "PostgreSQL: BEGIN is a write transaction"
    )]
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

pub(super) type Dup = (String, Vec<u8>);

/// Keys on PostgreSQL: looked up for the whole batch first, inserted with the messages.
pub(super) struct PoolKeys<'m> {
    pub(super) earlier: HashSet<Dup>,
    pub(super) seen: HashSet<(&'m str, &'m [u8])>,
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
pub(super) fn or_ranges<'a>(
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
pub(super) async fn pool_write(
    pool: &sqlx::PgPool,
    overlay: &mut Overlay<'_>,
    sends: &[&NewMessage],
    acks: &[(&str, i64)],
) -> Result<(Vec<SendOutcome>, Vec<i64>), StorageError> {
    let now_ms = now_ms();
    #[expect(
        clippy::disallowed_methods,
        reason = "PostgreSQL: BEGIN is a write transaction"
    )]
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

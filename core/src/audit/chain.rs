//! Hashing and verifying the chain.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{
    storage::{Db, StorageError},
    with_pool,
};

/// The `prev_hash` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A stored record.
#[derive(
    Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize, sqlx::FromRow, utoipa::ToSchema,
)]
pub struct AuditRecord {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// Unix time in milliseconds.
    pub at_ms: i64,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// On what.
    pub target: String,
    /// How it ended.
    pub outcome: String,
    /// JSON object text.
    pub details: String,
    /// Hash of the previous record (hex), 64 zeros for the first.
    pub prev_hash: String,
    /// This record's hash (hex).
    pub hash: String,
}

/// The hash of a record: SHA-256 over a domain tag and every field, each length-prefixed so no
/// two different records encode alike.
pub fn record_hash(r: &AuditRecord) -> String {
    let mut h = Sha256::new();
    h.update(b"keymesh-audit-v1");
    let seq = r.seq.to_be_bytes();
    let at = r.at_ms.to_be_bytes();
    for field in [
        &seq[..],
        &at[..],
        r.actor.as_bytes(),
        r.action.as_bytes(),
        r.target.as_bytes(),
        r.outcome.as_bytes(),
        r.details.as_bytes(),
        r.prev_hash.as_bytes(),
    ] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field);
    }
    hex::encode(h.finalize())
}

/// The result of walking the chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct VerifyReport {
    /// Records checked.
    pub checked: u64,
    /// The first record whose link is broken, if any.
    pub first_broken: Option<i64>,
    /// Why it is broken.
    pub reason: Option<String>,
}

const PAGE: i64 = 1000;

/// Walk the whole chain in order and report the first broken link: a record whose hash does
/// not match its content, whose `prev_hash` is not the previous record's hash, or a gap in the
/// sequence. Also checks the stored head matches the last record.
pub async fn verify(db: &Db) -> Result<VerifyReport, StorageError> {
    let mut report = VerifyReport {
        checked: 0,
        first_broken: None,
        reason: None,
    };
    let mut expected_prev = GENESIS.to_owned();
    let mut expected_seq = 1_i64;
    loop {
        const SQL: &str = "SELECT seq, at_ms, actor, action, target, outcome, details, prev_hash, hash \
             FROM audit_log WHERE seq >= $1 ORDER BY seq LIMIT $2";
        let page: Vec<AuditRecord> = with_pool!(db, pool => {
            sqlx::query_as(SQL).bind(expected_seq).bind(PAGE).fetch_all(pool).await
        })?;
        let done = (page.len() as i64) < PAGE;
        for record in page {
            let broken = |reason: String| VerifyReport {
                checked: report.checked,
                first_broken: Some(record.seq),
                reason: Some(reason),
            };
            if record.seq != expected_seq {
                return Ok(VerifyReport {
                    first_broken: Some(expected_seq),
                    ..broken(format!("record {expected_seq} is missing"))
                });
            }
            if record.prev_hash != expected_prev {
                return Ok(broken(
                    "prev_hash does not match the previous record".into(),
                ));
            }
            if record_hash(&record) != record.hash {
                return Ok(broken("content does not match its hash".into()));
            }
            expected_prev = record.hash;
            expected_seq += 1;
            report.checked += 1;
        }
        if done {
            break;
        }
    }
    let head: Option<(i64, String)> = with_pool!(db, pool => {
        sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1").fetch_optional(pool).await
    })?;
    let last = expected_seq - 1;
    match head {
        Some((seq, hash)) if seq == last && (hash == expected_prev || last == 0) => {}
        None if last == 0 => {}
        Some((seq, _)) if seq > last => {
            report.first_broken = Some(last + 1);
            report.reason = Some(format!("records {} to {seq} were removed", last + 1));
        }
        _ => {
            report.first_broken = Some(last.max(1));
            report.reason = Some("the chain head does not match the last record".into());
        }
    }
    Ok(report)
}

/// Which records `query` returns; empty strings and `None` match everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Exact actor, e.g. `user:ID`.
    #[serde(default)]
    pub actor: String,
    /// Exact action, e.g. `approval.decide`.
    #[serde(default)]
    pub action: String,
    /// Exact target, e.g. `node:ID`.
    #[serde(default)]
    pub target: String,
    /// `success`, `denied` or `failure`.
    #[serde(default)]
    pub outcome: String,
    /// At or after this Unix time in milliseconds.
    #[serde(default)]
    pub since_ms: Option<i64>,
    /// Before this Unix time in milliseconds.
    #[serde(default)]
    pub until_ms: Option<i64>,
}

/// Records matching `q` with a sequence number above `after_seq`, oldest first, at most
/// `limit`.
pub async fn query(
    db: &Db,
    q: &AuditQuery,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<AuditRecord>, StorageError> {
    const SQL: &str = "SELECT seq, at_ms, actor, action, target, outcome, details, prev_hash, hash \
         FROM audit_log WHERE seq > $1 AND ($2 = '' OR actor = $2) AND ($3 = '' OR action = $3) \
         AND ($4 = '' OR target = $4) AND ($5 = '' OR outcome = $5) AND at_ms >= $6 AND at_ms < $7 \
         ORDER BY seq LIMIT $8";
    Ok(with_pool!(db, pool => {
        sqlx::query_as(SQL)
            .bind(after_seq)
            .bind(&q.actor)
            .bind(&q.action)
            .bind(&q.target)
            .bind(&q.outcome)
            .bind(q.since_ms.unwrap_or(i64::MIN))
            .bind(q.until_ms.unwrap_or(i64::MAX))
            .bind(limit)
            .fetch_all(pool)
            .await
    })?)
}

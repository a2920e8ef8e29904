//! Signed checkpoints of the central audit chain.
//!
//! Every `MANAGEMENT_AUDIT_CHECKPOINT_SECS`, when the chain grew, management signs its head
//! `"keymesh-audit-checkpoint-v1\n" || seq || "\n" || hash` with an Ed25519 key derived from
//! `MANAGEMENT_SECRET_KEY`, stores the signature and logs it (so a copy lives outside the
//! database, wherever the logs are shipped). Verifying checks each checkpoint's signature with
//! that key and that the record at its `seq` still has its `hash`: a writer of the database
//! without the key can recompute the hash chain after rewriting history, but cannot re-sign.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use keymesh_core::{
    storage::{Db, StorageError},
    with_pool,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{secrets::Keyed, store::now_ms};

/// A stored checkpoint.
#[derive(Clone, Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Checkpoint {
    /// The chain's head sequence number when signed.
    pub seq: i64,
    /// Its record hash.
    pub hash: String,
    /// When.
    pub at_ms: i64,
    /// Which key signed (hex of the first 8 bytes of SHA-256 of the public key).
    pub key_id: String,
    /// Ed25519 signature, hex.
    pub signature: String,
}

/// What checking the checkpoints found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CheckpointReport {
    /// Checkpoints checked.
    pub checked: u64,
    /// The first checkpoint that does not hold.
    pub first_bad: Option<i64>,
    /// Why.
    pub reason: Option<String>,
}

/// The checkpoint signer.
pub struct CheckpointSigner {
    key: SigningKey,
}

impl std::fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointSigner")
            .field("key_id", &self.key_id())
            .finish_non_exhaustive()
    }
}

fn message(seq: i64, hash: &str) -> Vec<u8> {
    format!("keymesh-audit-checkpoint-v1\n{seq}\n{hash}").into_bytes()
}

/// The id of a checkpoint key.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

impl CheckpointSigner {
    /// The key derived from `MANAGEMENT_SECRET_KEY`.
    pub fn new(keyed: &Keyed) -> Self {
        Self {
            key: SigningKey::from_bytes(&keyed.checkpoint_seed()),
        }
    }

    /// The public key.
    pub fn public(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// Its id.
    pub fn key_id(&self) -> String {
        key_id(&self.public())
    }

    /// Sign the head if it moved past the last checkpoint; the new checkpoint, if any.
    pub async fn checkpoint(&self, db: &Db) -> Result<Option<Checkpoint>, StorageError> {
        const HEAD: &str = "SELECT seq, hash FROM audit_head WHERE id = 1";
        const LAST: &str = "SELECT COALESCE(MAX(seq), 0) FROM audit_checkpoints";
        const INSERT: &str = "INSERT INTO audit_checkpoints (seq, hash, at_ms, key_id, signature) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (seq) DO NOTHING";
        let (seq, hash): (i64, String) =
            with_pool!(db, pool => sqlx::query_as(HEAD).fetch_one(pool).await)?;
        let last: i64 = with_pool!(db, pool => sqlx::query_scalar(LAST).fetch_one(pool).await)?;
        if seq <= last {
            return Ok(None);
        }
        let cp = Checkpoint {
            seq,
            signature: hex::encode(self.key.sign(&message(seq, &hash)).to_bytes()),
            hash,
            at_ms: now_ms(),
            key_id: self.key_id(),
        };
        with_pool!(db, pool => sqlx::query(INSERT).bind(cp.seq).bind(&cp.hash).bind(cp.at_ms)
            .bind(&cp.key_id).bind(&cp.signature).execute(pool).await.map(drop))?;
        Ok(Some(cp))
    }
}

/// The newest checkpoints first, at most `limit`.
pub async fn list(db: &Db, limit: i64) -> Result<Vec<Checkpoint>, StorageError> {
    const SQL: &str = "SELECT seq, hash, at_ms, key_id, signature FROM audit_checkpoints \
         ORDER BY seq DESC LIMIT $1";
    Ok(with_pool!(db, pool => sqlx::query_as(SQL).bind(limit).fetch_all(pool).await)?)
}

/// Check every checkpoint against `key` and the chain as stored.
pub async fn verify(db: &Db, key: &VerifyingKey) -> Result<CheckpointReport, StorageError> {
    const ALL: &str = "SELECT c.seq, c.hash, c.at_ms, c.key_id, c.signature, a.hash AS record_hash \
         FROM audit_checkpoints c LEFT JOIN audit_log a ON a.seq = c.seq ORDER BY c.seq";
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        cp: Checkpoint,
        record_hash: Option<String>,
    }
    let rows: Vec<Row> = with_pool!(db, pool => sqlx::query_as(ALL).fetch_all(pool).await)?;
    let mut report = CheckpointReport::default();
    for row in rows {
        let cp = &row.cp;
        let signed = hex::decode(&cp.signature)
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
            .is_some_and(|sig| {
                key.verify_strict(&message(cp.seq, &cp.hash), &Signature::from_bytes(&sig))
                    .is_ok()
            });
        let reason = if !signed {
            Some("its signature does not verify with the checkpoint key")
        } else if row.record_hash.as_deref() != Some(cp.hash.as_str()) {
            Some("the record at its seq no longer has the signed hash")
        } else {
            None
        };
        if let Some(reason) = reason {
            report.first_bad = Some(cp.seq);
            report.reason = Some(reason.to_owned());
            return Ok(report);
        }
        report.checked += 1;
    }
    Ok(report)
}

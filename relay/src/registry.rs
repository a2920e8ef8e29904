//! The registry of node encryption keys: each node publishes an X25519 key signed by its
//! Ed25519 identity key (the `node_key` its token names), with a version. Rotation keeps the
//! previous versions usable for `RELAY_KEY_GRACE_SECS`.

/// What the identity key signs to publish an encryption key:
/// `keymesh-enc-key-v1 \n NODE \n VERSION \n hex(X25519 public key)`.
pub fn key_statement(node: &str, version: u32, enc_key: &[u8; 32]) -> Vec<u8> {
    format!(
        "keymesh-enc-key-v1\n{node}\n{version}\n{}",
        hex::encode(enc_key)
    )
    .into_bytes()
}

use std::{
    collections::HashMap,
    sync::{PoisonError, RwLock},
};

use ed25519_dalek::{Signature, VerifyingKey};
use keymesh_core::{
    storage::{Db, StorageError},
    with_pool,
};
use serde::Serialize;

/// Why a key registration is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The identity key's signature over the statement does not verify.
    #[error("the signature does not verify with the token's node key over keymesh-enc-key-v1")]
    Signature,
    /// Not a usable X25519 public key.
    #[error("enc_key must be 32 bytes of hex and not all zero")]
    EncKey,
    /// A version at or below the current one, with different contents.
    #[error("version must be higher than the current one (or repeat it exactly)")]
    Version,
}

/// One published key version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct KeyRow {
    /// The node.
    pub node: String,
    /// Version, from 1.
    pub version: i64,
    /// The node's group when it registered.
    pub group_id: String,
    /// Ed25519 identity key that signed it, hex.
    #[serde(with = "hex::serde")]
    #[schema(value_type = String)]
    pub identity_key: Vec<u8>,
    /// X25519 public key, hex.
    #[serde(with = "hex::serde")]
    #[schema(value_type = String)]
    pub enc_key: Vec<u8>,
    /// The identity key's signature over the key statement (docs/protocol/relay.md), hex.
    #[serde(with = "hex::serde")]
    #[schema(value_type = String)]
    pub signature: Vec<u8>,
    /// Registered at, unix ms.
    pub created_ms: i64,
    /// Replaced by a newer version at, unix ms.
    pub retired_ms: Option<i64>,
}

/// Check a registration: the statement signed by the identity key, a usable X25519 key.
pub fn verify_registration(
    identity: &VerifyingKey,
    node: &str,
    version: u32,
    enc_key: &[u8; 32],
    signature: &[u8; 64],
) -> Result<(), KeyError> {
    if enc_key.iter().all(|&b| b == 0) {
        return Err(KeyError::EncKey);
    }
    identity
        .verify_strict(
            &key_statement(node, version, enc_key),
            &Signature::from_bytes(signature),
        )
        .map_err(|_| KeyError::Signature)
}

/// Registered nodes (node → group) in memory, for the per-send recipient check; the keys
/// themselves stay in the database.
#[derive(Debug)]
pub struct Registry {
    db: Db,
    groups: RwLock<HashMap<String, String>>,
}

impl Registry {
    /// Load every registered node.
    pub async fn load(db: Db) -> Result<Self, StorageError> {
        const SQL: &str = "SELECT node, group_id FROM relay_keys WHERE retired_ms IS NULL";
        let rows: Vec<(String, String)> =
            with_pool!(&db, pool => sqlx::query_as(SQL).fetch_all(pool).await)?;
        Ok(Self {
            db,
            groups: RwLock::new(rows.into_iter().collect()),
        })
    }

    /// The group of a registered node.
    pub fn group_of(&self, node: &str) -> Option<String> {
        self.groups
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(node)
            .cloned()
    }

    /// How many nodes are registered.
    pub fn len(&self) -> usize {
        self.groups
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Publish a (verified) key version; the previous current version is retired now. Repeating
    /// the current version with the same key is a no-op; anything else at or below it is refused.
    pub async fn register(
        &self,
        row: &KeyRow,
        now_ms: i64,
    ) -> Result<Result<(), KeyError>, StorageError> {
        const SELECT: &str = "SELECT node, version, group_id, identity_key, enc_key, signature, created_ms, retired_ms FROM relay_keys WHERE node = $1 AND retired_ms IS NULL";
        const RETIRE: &str =
            "UPDATE relay_keys SET retired_ms = $2 WHERE node = $1 AND retired_ms IS NULL";
        const INSERT: &str = "INSERT INTO relay_keys (node, version, group_id, identity_key, enc_key, signature, created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)";
        let outcome = with_pool!(&self.db, pool => async {
            let mut tx = pool.begin().await?;
            let current: Option<KeyRow> = sqlx::query_as(SELECT).bind(&row.node).fetch_optional(&mut *tx).await?;
            if let Some(c) = &current {
                if c.version > row.version || (c.version == row.version && (c.enc_key != row.enc_key || c.identity_key != row.identity_key || c.group_id != row.group_id)) {
                    return Ok::<_, sqlx::Error>(Err(KeyError::Version));
                }
                if c.version == row.version {
                    return Ok(Ok(()));
                }
            }
            sqlx::query(RETIRE).bind(&row.node).bind(now_ms).execute(&mut *tx).await?;
            sqlx::query(INSERT).bind(&row.node).bind(row.version).bind(&row.group_id).bind(&row.identity_key).bind(&row.enc_key).bind(&row.signature).bind(now_ms).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(Ok(()))
        }.await)?;
        if outcome.is_ok() {
            self.groups
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(row.node.clone(), row.group_id.clone());
        }
        Ok(outcome)
    }

    /// A node's current key and the versions retired within `grace_ms`, newest first.
    pub async fn keys(
        &self,
        node: &str,
        now_ms: i64,
        grace_ms: i64,
    ) -> Result<Vec<KeyRow>, StorageError> {
        const SQL: &str = "SELECT node, version, group_id, identity_key, enc_key, signature, created_ms, retired_ms FROM relay_keys WHERE node = $1 AND (retired_ms IS NULL OR retired_ms > $2) ORDER BY version DESC";
        Ok(
            with_pool!(&self.db, pool => sqlx::query_as(SQL).bind(node).bind(now_ms.saturating_sub(grace_ms)).fetch_all(pool).await)?,
        )
    }
}

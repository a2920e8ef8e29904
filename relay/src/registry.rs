//! The registry of node encryption keys: each node publishes an X25519 key signed by its
//! Ed25519 identity key (the `node_key` its token names), with a version. Rotation keeps the
//! previous versions usable for `RELAY_KEY_GRACE_SECS`.

use std::{
    collections::HashMap,
    sync::{PoisonError, RwLock},
};

use keymesh_core::{
    storage::{Db, StorageError},
    with_pool,
};
use serde::Serialize;

pub use keymesh_proto::keys::{KeyError, key_statement, verify_registration};

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
            let mut tx = pool.begin_with(self.db.begin_write()).await?;
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

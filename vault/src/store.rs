//! The vault's tables, on SQLite or PostgreSQL. Every value, wrapped key and share is stored
//! sealed; this module never sees plaintext.

use std::{
    collections::HashMap,
    time::{SystemTime, UNIX_EPOCH},
};

use keymesh_core::{
    capability::token::Scope,
    storage::{Db, StorageError},
    with_pool,
};

use crate::revocation::{FeedEntry, ROOT_KEY_ADDED, ROOT_KEY_REVOKED};

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A root signing key row.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct TokenKeyRow {
    /// Key id.
    pub kid: i64,
    /// Ed25519 public key.
    pub public_key: Vec<u8>,
    /// Private key sealed under the master key.
    pub sealed_private: Vec<u8>,
    /// Created.
    pub created_at_ms: i64,
    /// Set by rotations before announce-then-activate (decision 0014): no longer signs. Newer
    /// rows leave it empty; a key stops signing when the next key activates.
    pub retired_at_ms: Option<i64>,
    /// Signs from then (unix ms); empty: from `created_at_ms`. Verifies from creation.
    pub activates_at_ms: Option<i64>,
    /// Revoked (emergency): verifies nothing from then on.
    pub revoked_at_ms: Option<i64>,
}

impl TokenKeyRow {
    /// When it signs from (unix ms).
    pub fn from_ms(&self) -> i64 {
        self.activates_at_ms.unwrap_or(self.created_at_ms)
    }

    /// Whether it took over signing (or will): unrevoked, or revoked after its activation. A
    /// key revoked while only announced never signed and retires nothing.
    fn takes_over(&self) -> bool {
        self.revoked_at_ms
            .is_none_or(|revoked| self.from_ms() <= revoked)
    }

    fn order(&self) -> (i64, i64) {
        (self.from_ms(), self.created_at_ms)
    }
}

/// When `row` stops (or stopped) signing: when the next key that took over after it activates,
/// or its stored retirement if earlier. Revoking a later key never brings an earlier one back.
pub fn retirement(rows: &[TokenKeyRow], row: &TokenKeyRow) -> Option<i64> {
    let next = rows
        .iter()
        .filter(|o| o.takes_over() && o.order() > row.order())
        .map(TokenKeyRow::from_ms)
        .min();
    match (next, row.retired_at_ms) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The key that signs at `now`: unrevoked, active, and not yet retired. `None` only when every
/// such key is gone (a revocation then adds a replacement: see [`Store::change_token_keys`]).
pub fn signer(rows: &[TokenKeyRow], now: i64) -> Option<&TokenKeyRow> {
    rows.iter()
        .filter(|r| {
            r.revoked_at_ms.is_none()
                && r.from_ms() <= now
                && retirement(rows, r).is_none_or(|t| t > now)
        })
        .max_by_key(|r| r.order())
}

/// Every root key row, newest first.
const KEYS: &str = "SELECT kid, public_key, sealed_private, created_at_ms, retired_at_ms, activates_at_ms, revoked_at_ms \
     FROM token_keys ORDER BY created_at_ms DESC, kid";

/// A change to the root keys, made in the same transaction as its revocation feed entry.
#[derive(Debug)]
pub enum KeyChange<'a> {
    /// Add a key (announced: it signs from its `activates_at_ms`).
    Add(&'a TokenKeyRow),
    /// Revoke key `kid`, adding `replacement` (signing at once) when no key would sign after
    /// it: decided inside the transaction, from the rows as they are then.
    Revoke {
        /// The key.
        kid: i64,
        /// The key that signs at once if needed.
        replacement: &'a TokenKeyRow,
    },
}

/// A registered node.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct NodeRow {
    /// Node id.
    pub node_id: String,
    /// Group.
    pub group_id: String,
    /// Owning user.
    pub user_id: String,
    /// Ed25519 public key.
    pub public_key: Vec<u8>,
    /// Highest operation (`read`...`share`).
    pub ceiling: String,
    /// Disabled by management: nothing is minted, refreshed or delegated for it.
    pub disabled_at_ms: Option<i64>,
}

/// An issued grant.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct GrantRow {
    /// Grant id.
    pub grant_id: String,
    /// The grant it was delegated from.
    pub parent_grant: Option<String>,
    /// Holder.
    pub node_id: String,
    /// JSON array of ancestor grant ids, ending with this one.
    pub lineage: String,
    /// JSON array of rights.
    pub rights: String,
}

/// A group vault's key material (all sealed).
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct VaultRow {
    /// Group.
    pub group_id: String,
    /// `passphrase` or `shamir`.
    pub mode: String,
    /// Argon2id parameters (JSON) for passphrase mode.
    pub kdf_params: Option<String>,
    /// Data key wrapped by the passphrase key.
    pub wrapped_key: Option<Vec<u8>>,
    /// Proves a reconstructed data key.
    pub key_check: Vec<u8>,
    /// Shares needed, for shamir mode.
    pub threshold: Option<i64>,
    /// Bumped on re-key.
    pub generation: i64,
}

/// One admin's share, sealed to the admin's X25519 key.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ShareRow {
    /// Admin.
    pub admin_id: String,
    /// Admin's X25519 public key.
    pub admin_public_key: Vec<u8>,
    /// HPKE-sealed share.
    pub sealed_share: Vec<u8>,
}

/// A sealed secret.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct SecretRow {
    /// Version, from 1.
    pub version: i64,
    /// Sealed value.
    pub sealed_value: Vec<u8>,
    /// Sealed metadata JSON.
    pub sealed_metadata: Vec<u8>,
    /// Last change.
    pub updated_at_ms: i64,
    /// Who changed it.
    pub updated_by: String,
}

/// A listing entry.
#[derive(Clone, Debug, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct SecretListing {
    /// Path.
    pub path: String,
    /// Version.
    pub version: i64,
    /// Last change.
    pub updated_at_ms: i64,
}

/// Sealed secret rows recently read, for the single-process SQLite mode. Values stay sealed;
/// every write and delete goes through this process and invalidates its entry. A read fills the
/// cache only if no write happened since the read began (the generation), so a slow reader can
/// never put back a row a writer replaced.
#[derive(Debug, Default)]
struct SecretCache {
    inner: std::sync::Mutex<CacheState>,
}

#[derive(Debug, Default)]
struct CacheState {
    /// Bumped by every write and delete.
    generation: u64,
    rows: HashMap<(String, String), SecretRow>,
}

/// Most cached rows; beyond this the cache starts over.
const SECRET_CACHE_ROWS: usize = 10_000;

impl SecretCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, group: &str, path: &str) -> Result<SecretRow, u64> {
        let guard = self.lock();
        guard
            .rows
            .get(&(group.to_owned(), path.to_owned()))
            .cloned()
            .ok_or(guard.generation)
    }

    fn fill(&self, generation: u64, group: &str, path: &str, row: &SecretRow) {
        let mut guard = self.lock();
        if guard.generation != generation {
            return;
        }
        if guard.rows.len() >= SECRET_CACHE_ROWS {
            guard.rows.clear();
        }
        guard
            .rows
            .insert((group.to_owned(), path.to_owned()), row.clone());
    }

    fn invalidate(&self, group: &str, path: &str) {
        let mut guard = self.lock();
        guard.generation += 1;
        guard.rows.remove(&(group.to_owned(), path.to_owned()));
    }
}

/// Invalidates a cached row when dropped: also when the request that writes it is cancelled
/// between the commit and the end of the handler.
struct Invalidate<'a> {
    cache: &'a SecretCache,
    group: &'a str,
    path: &'a str,
}

impl Drop for Invalidate<'_> {
    fn drop(&mut self) {
        self.cache.invalidate(self.group, self.path);
    }
}

impl Store {
    /// Invalidate now (so no read started before the write can fill the cache) and again when
    /// the returned guard drops (after the write, however the handler ends).
    fn invalidating<'a>(&'a self, group: &'a str, path: &'a str) -> Option<Invalidate<'a>> {
        self.secrets.as_deref().map(|cache| {
            cache.invalidate(group, path);
            Invalidate { cache, group, path }
        })
    }
}

/// Typed access to the vault tables.
#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
    secrets: Option<std::sync::Arc<SecretCache>>,
}

impl Store {
    /// Wrap a migrated vault database. Sealed rows are cached only on SQLite, where this process
    /// is the only writer; PostgreSQL may have several vault replicas and always reads through.
    pub fn new(db: Db) -> Self {
        let secrets = matches!(db, Db::Sqlite(_)).then(std::sync::Arc::default);
        Self { db, secrets }
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Every root key, newest first.
    pub async fn token_keys(&self) -> Result<Vec<TokenKeyRow>, StorageError> {
        Ok(with_pool!(&self.db, pool => sqlx::query_as(KEYS).fetch_all(pool).await)?)
    }

    /// The first root key of a new vault (no feed entry: nothing follows a vault without keys).
    pub async fn first_token_key(&self, row: &TokenKeyRow) -> Result<(), StorageError> {
        const INSERT: &str = "INSERT INTO token_keys (kid, public_key, sealed_private, created_at_ms) \
             SELECT $1, $2, $3, $4 WHERE NOT EXISTS (SELECT 1 FROM token_keys)";
        with_pool!(&self.db, pool => sqlx::query(INSERT).bind(row.kid).bind(&row.public_key).bind(&row.sealed_private).bind(row.created_at_ms).execute(pool).await.map(drop))?;
        Ok(())
    }

    /// Register a node, or update its ceiling and disabled state. A node's key, group and user
    /// never change: `false` when the node exists with others (checked in the statement itself,
    /// so two registrations racing cannot both win).
    pub async fn upsert_node(&self, n: &NodeRow) -> Result<bool, StorageError> {
        const SQL: &str = "INSERT INTO nodes (node_id, group_id, user_id, public_key, ceiling, created_at_ms, updated_at_ms, disabled_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $6, $7) ON CONFLICT (node_id) DO UPDATE SET \
             ceiling = excluded.ceiling, updated_at_ms = excluded.updated_at_ms, disabled_at_ms = excluded.disabled_at_ms \
             WHERE nodes.group_id = excluded.group_id AND nodes.user_id = excluded.user_id \
             AND nodes.public_key = excluded.public_key";
        let n = with_pool!(&self.db, pool => sqlx::query(SQL).bind(&n.node_id).bind(&n.group_id).bind(&n.user_id).bind(&n.public_key).bind(&n.ceiling).bind(now_ms()).bind(n.disabled_at_ms).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// Record that `approval` was used for a mint; `false` when it already was.
    pub async fn use_approval(&self, approval: &str, grant: &str) -> Result<bool, StorageError> {
        const SQL: &str = "INSERT INTO approval_mints (approval, grant_id, minted_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (approval) DO NOTHING";
        let n = with_pool!(&self.db, pool => sqlx::query(SQL).bind(approval).bind(grant).bind(now_ms()).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// A node.
    pub async fn node(&self, node_id: &str) -> Result<Option<NodeRow>, StorageError> {
        const SQL: &str = "SELECT node_id, group_id, user_id, public_key, ceiling, disabled_at_ms FROM nodes WHERE node_id = $1";
        Ok(
            with_pool!(&self.db, pool => sqlx::query_as(SQL).bind(node_id).fetch_optional(pool).await)?,
        )
    }

    /// Record an issued grant.
    pub async fn insert_grant(&self, g: &GrantRow) -> Result<(), StorageError> {
        const SQL: &str = "INSERT INTO grants (grant_id, parent_grant, node_id, lineage, rights, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6)";
        with_pool!(&self.db, pool => sqlx::query(SQL).bind(&g.grant_id).bind(&g.parent_grant).bind(&g.node_id).bind(&g.lineage).bind(&g.rights).bind(now_ms()).execute(pool).await.map(drop))?;
        Ok(())
    }

    /// A grant.
    pub async fn grant(&self, grant_id: &str) -> Result<Option<GrantRow>, StorageError> {
        const SQL: &str = "SELECT grant_id, parent_grant, node_id, lineage, rights FROM grants WHERE grant_id = $1";
        Ok(
            with_pool!(&self.db, pool => sqlx::query_as(SQL).bind(grant_id).fetch_optional(pool).await)?,
        )
    }

    /// Append a revocation to the feed; for `epoch` entries the new epoch is the current one
    /// plus one (one write, whatever the number of tokens). Sequence numbers are assigned under
    /// the head row's lock, so commit order equals feed order.
    pub async fn append_revocation(
        &self,
        kind: &str,
        scope: Option<Scope>,
        subject: &str,
        reason: &str,
    ) -> Result<FeedEntry, StorageError> {
        self.append_feed(kind, scope, subject, reason, None)
            .await?
            .map(|(entry, _)| entry)
            .ok_or(StorageError::Failed("a revocation was not appended".into()))
    }

    /// Change the root keys and append the feed entry that tells every follower, atomically
    /// (`root_key_added` for an addition, `root_key` for a revocation; the subject is the kid).
    /// `Ok(None)`: a revocation found no such unrevoked key; else the entry, and whether a
    /// revocation's replacement was added.
    pub async fn change_token_keys(
        &self,
        change: KeyChange<'_>,
        reason: &str,
    ) -> Result<Option<(FeedEntry, bool)>, StorageError> {
        let (kind, kid) = match change {
            KeyChange::Add(row) => (ROOT_KEY_ADDED, row.kid),
            KeyChange::Revoke { kid, .. } => (ROOT_KEY_REVOKED, kid),
        };
        self.append_feed(kind, None, &kid.to_string(), reason, Some(change))
            .await
    }

    async fn append_feed(
        &self,
        kind: &str,
        scope: Option<Scope>,
        subject: &str,
        reason: &str,
        change: Option<KeyChange<'_>>,
    ) -> Result<Option<(FeedEntry, bool)>, StorageError> {
        let (begin, head_sql) = match self.db {
            Db::Sqlite(_) => (
                "BEGIN IMMEDIATE",
                "SELECT seq FROM revocation_head WHERE id = 1",
            ),
            Db::Postgres(_) => (
                "BEGIN",
                "SELECT seq FROM revocation_head WHERE id = 1 FOR UPDATE",
            ),
        };
        const BUMP: &str = "INSERT INTO epochs (scope, subject, epoch) VALUES ($1, $2, 1) \
             ON CONFLICT (scope, subject) DO UPDATE SET epoch = epochs.epoch + 1 RETURNING epoch";
        const INSERT: &str = "INSERT INTO revocations (seq, kind, scope, subject, epoch, reason, at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)";
        const HEAD: &str = "INSERT INTO revocation_head (id, seq) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET seq = excluded.seq";
        const ADD_KEY: &str = "INSERT INTO token_keys (kid, public_key, sealed_private, created_at_ms, activates_at_ms) VALUES ($1, $2, $3, $4, $5)";
        const REVOKE_KEY: &str =
            "UPDATE token_keys SET revoked_at_ms = $1 WHERE kid = $2 AND revoked_at_ms IS NULL";
        let at_ms = now_ms();
        let scope_name = scope.map(Scope::as_str);
        let entry = with_pool!(&self.db, pool => async {
            // The head row's lock also orders key changes: two rotations cannot interleave.
            let mut tx = pool.begin_with(begin).await?;
            let head: Option<(i64,)> = sqlx::query_as(head_sql).fetch_optional(&mut *tx).await?;
            let seq = head.map_or(0, |(s,)| s) + 1;
            let epoch = match scope_name {
                Some(scope) => Some(sqlx::query_as::<_, (i64,)>(BUMP).bind(scope).bind(subject).fetch_one(&mut *tx).await?.0),
                None => None,
            };
            let mut adds = Vec::new();
            let mut replaced = false;
            match change {
                Some(KeyChange::Add(row)) => adds.push(row),
                Some(KeyChange::Revoke { kid, replacement }) => {
                    let done = sqlx::query(REVOKE_KEY).bind(at_ms).bind(kid).execute(&mut *tx).await?;
                    if done.rows_affected() == 0 {
                        return Ok(None);
                    }
                    // Under the head row's lock: no other key change interleaves.
                    let rows: Vec<TokenKeyRow> = sqlx::query_as(KEYS).fetch_all(&mut *tx).await?;
                    if signer(&rows, at_ms).is_none() {
                        adds.push(replacement);
                        replaced = true;
                    }
                }
                None => {}
            }
            for row in adds {
                sqlx::query(ADD_KEY).bind(row.kid).bind(&row.public_key).bind(&row.sealed_private).bind(row.created_at_ms).bind(row.activates_at_ms).execute(&mut *tx).await?;
            }
            sqlx::query(INSERT).bind(seq).bind(kind).bind(scope_name).bind(subject).bind(epoch).bind(reason).bind(at_ms).execute(&mut *tx).await?;
            sqlx::query(HEAD).bind(seq).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(Some((FeedEntry { seq, kind: kind.to_owned(), scope: scope_name.map(str::to_owned), subject: subject.to_owned(), epoch, reason: reason.to_owned(), at_ms }, replaced)))
        }.await)?;
        Ok(entry)
    }

    /// Feed entries after `after`, oldest first.
    pub async fn feed_after(&self, after: i64, limit: i64) -> Result<Vec<FeedEntry>, StorageError> {
        const SQL: &str = "SELECT seq, kind, scope, subject, epoch, reason, at_ms FROM revocations WHERE seq > $1 ORDER BY seq LIMIT $2";
        Ok(
            with_pool!(&self.db, pool => sqlx::query_as(SQL).bind(after).bind(limit).fetch_all(pool).await)?,
        )
    }

    /// A group vault.
    pub async fn vault(&self, group: &str) -> Result<Option<VaultRow>, StorageError> {
        const SQL: &str = "SELECT group_id, mode, kdf_params, wrapped_key, key_check, threshold, generation FROM vaults WHERE group_id = $1";
        Ok(
            with_pool!(&self.db, pool => sqlx::query_as(SQL).bind(group).fetch_optional(pool).await)?,
        )
    }

    /// Create a vault with its shares; `false` if it already exists.
    pub async fn create_vault(
        &self,
        v: &VaultRow,
        shares: &[ShareRow],
    ) -> Result<bool, StorageError> {
        const INSERT: &str = "INSERT INTO vaults (group_id, mode, kdf_params, wrapped_key, key_check, threshold, generation, created_at_ms, updated_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) ON CONFLICT (group_id) DO NOTHING";
        const SHARE: &str = "INSERT INTO vault_shares (group_id, admin_id, admin_public_key, sealed_share) VALUES ($1, $2, $3, $4)";
        let created = with_pool!(&self.db, pool => {
            let mut tx = pool.begin_with(self.db.begin_write()).await?;
            let inserted = sqlx::query(INSERT).bind(&v.group_id).bind(&v.mode).bind(&v.kdf_params).bind(&v.wrapped_key).bind(&v.key_check).bind(v.threshold).bind(v.generation).bind(now_ms()).execute(&mut *tx).await?.rows_affected();
            if inserted == 0 {
                return Ok(false);
            }
            for s in shares {
                sqlx::query(SHARE).bind(&v.group_id).bind(&s.admin_id).bind(&s.admin_public_key).bind(&s.sealed_share).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(true)
        })?;
        Ok(created)
    }

    /// Replace a vault's key wrapping (change passphrase or re-share), keeping the data key and
    /// so every secret. Fails (returns `false`) if the generation moved meanwhile.
    pub async fn rewrap_vault(
        &self,
        v: &VaultRow,
        shares: &[ShareRow],
    ) -> Result<bool, StorageError> {
        const UPDATE: &str = "UPDATE vaults SET mode = $2, kdf_params = $3, wrapped_key = $4, threshold = $5, generation = generation + 1, updated_at_ms = $6 \
             WHERE group_id = $1 AND generation = $7";
        const CLEAR: &str = "DELETE FROM vault_shares WHERE group_id = $1";
        const SHARE: &str = "INSERT INTO vault_shares (group_id, admin_id, admin_public_key, sealed_share) VALUES ($1, $2, $3, $4)";
        let done = with_pool!(&self.db, pool => {
            let mut tx = pool.begin_with(self.db.begin_write()).await?;
            let updated = sqlx::query(UPDATE).bind(&v.group_id).bind(&v.mode).bind(&v.kdf_params).bind(&v.wrapped_key).bind(v.threshold).bind(now_ms()).bind(v.generation).execute(&mut *tx).await?.rows_affected();
            if updated == 0 {
                return Ok(false);
            }
            sqlx::query(CLEAR).bind(&v.group_id).execute(&mut *tx).await?;
            for s in shares {
                sqlx::query(SHARE).bind(&v.group_id).bind(&s.admin_id).bind(&s.admin_public_key).bind(&s.sealed_share).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(true)
        })?;
        Ok(done)
    }

    /// The share set of a vault.
    pub async fn shares(&self, group: &str) -> Result<Vec<ShareRow>, StorageError> {
        const SQL: &str = "SELECT admin_id, admin_public_key, sealed_share FROM vault_shares WHERE group_id = $1 ORDER BY admin_id";
        Ok(with_pool!(&self.db, pool => sqlx::query_as(SQL).bind(group).fetch_all(pool).await)?)
    }

    /// A secret.
    pub async fn secret(&self, group: &str, path: &str) -> Result<Option<SecretRow>, StorageError> {
        const SQL: &str = "SELECT version, sealed_value, sealed_metadata, updated_at_ms, updated_by FROM secrets WHERE group_id = $1 AND path = $2";
        let generation = match self.secrets.as_ref().map(|c| c.get(group, path)) {
            Some(Ok(row)) => return Ok(Some(row)),
            Some(Err(generation)) => Some(generation),
            None => None,
        };
        let row: Option<SecretRow> = with_pool!(&self.db, pool => sqlx::query_as(SQL).bind(group).bind(path).fetch_optional(pool).await)?;
        if let (Some(cache), Some(generation), Some(row)) = (&self.secrets, generation, &row) {
            cache.fill(generation, group, path, row);
        }
        Ok(row)
    }

    /// The version a write would create.
    pub async fn next_version(&self, group: &str, path: &str) -> Result<i64, StorageError> {
        Ok(self.secret(group, path).await?.map_or(1, |s| s.version + 1))
    }

    /// Store a sealed secret at `version` (sealed with that version in its AAD). `false` if
    /// another write took that version first.
    pub async fn put_secret(
        &self,
        group: &str,
        path: &str,
        version: i64,
        value: &[u8],
        metadata: &[u8],
        by: &str,
    ) -> Result<bool, StorageError> {
        let _invalidate = self.invalidating(group, path);
        const SQL: &str = "INSERT INTO secrets (group_id, path, version, sealed_value, sealed_metadata, updated_at_ms, updated_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (group_id, path) DO UPDATE SET \
             version = excluded.version, sealed_value = excluded.sealed_value, sealed_metadata = excluded.sealed_metadata, \
             updated_at_ms = excluded.updated_at_ms, updated_by = excluded.updated_by WHERE secrets.version = excluded.version - 1";
        let n = with_pool!(&self.db, pool => sqlx::query(SQL).bind(group).bind(path).bind(version).bind(value).bind(metadata).bind(now_ms()).bind(by).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// Delete a secret; whether it existed.
    pub async fn delete_secret(&self, group: &str, path: &str) -> Result<bool, StorageError> {
        let _invalidate = self.invalidating(group, path);
        const SQL: &str = "DELETE FROM secrets WHERE group_id = $1 AND path = $2";
        let n = with_pool!(&self.db, pool => sqlx::query(SQL).bind(group).bind(path).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// Paths under a prefix (portable prefix match: no LIKE wildcards, no collation surprises).
    pub async fn list_secrets(
        &self,
        group: &str,
        prefix: &str,
        limit: i64,
    ) -> Result<Vec<SecretListing>, StorageError> {
        const SQL: &str = "SELECT path, version, updated_at_ms FROM secrets WHERE group_id = $1 AND substr(path, 1, length($2)) = $2 ORDER BY path LIMIT $3";
        Ok(
            with_pool!(&self.db, pool => sqlx::query_as(SQL).bind(group).bind(prefix).bind(limit).fetch_all(pool).await)?,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(version: i64) -> SecretRow {
        SecretRow {
            version,
            sealed_value: vec![1],
            sealed_metadata: vec![2],
            updated_at_ms: 0,
            updated_by: "t".into(),
        }
    }

    #[test]
    fn a_read_that_raced_a_write_never_refills_the_old_row() {
        let cache = SecretCache::default();
        let Err(generation) = cache.get("g", "p") else {
            panic!("empty cache hit")
        };
        // A writer commits version 2 and invalidates while the reader holds version 1.
        cache.invalidate("g", "p");
        cache.fill(generation, "g", "p", &row(1));
        assert!(
            cache.get("g", "p").is_err(),
            "the stale row must not be cached"
        );
        // A read that started after the write may fill.
        let Err(generation) = cache.get("g", "p") else {
            panic!("miss expected")
        };
        cache.fill(generation, "g", "p", &row(2));
        assert_eq!(cache.get("g", "p").map(|r| r.version), Ok(2));
    }
}

#[cfg(test)]
mod key_schedule {
    use super::{TokenKeyRow, retirement, signer};

    fn key(kid: i64, from: i64, revoked: Option<i64>) -> TokenKeyRow {
        TokenKeyRow {
            kid,
            public_key: Vec::new(),
            sealed_private: Vec::new(),
            created_at_ms: from,
            retired_at_ms: None,
            activates_at_ms: Some(from),
            revoked_at_ms: revoked,
        }
    }

    #[test]
    fn revoking_a_key_never_brings_an_earlier_one_back() {
        // 1 signed from 0, 2 took over at 100 and was revoked at 500, 3 replaced it at 500.
        let rows = [key(1, 0, None), key(2, 100, Some(500)), key(3, 500, None)];
        assert_eq!(retirement(&rows, &rows[0]), Some(100));
        assert_eq!(signer(&rows, 600).map(|r| r.kid), Some(3));
        // Without the replacement nothing signs (the revocation then adds one), never key 1.
        assert_eq!(signer(&rows[..2], 600).map(|r| r.kid), None);
    }

    #[test]
    fn a_key_revoked_while_announced_retires_nothing() {
        // 2 was announced for 1000 and revoked at 500: 1 keeps signing, with no end.
        let rows = [key(1, 0, None), key(2, 1000, Some(500))];
        assert_eq!(retirement(&rows, &rows[0]), None);
        assert_eq!(signer(&rows, 2000).map(|r| r.kid), Some(1));
        // Announced and not revoked: 1 signs until 2 activates.
        let rows = [key(1, 0, None), key(2, 1000, None)];
        assert_eq!(signer(&rows, 999).map(|r| r.kid), Some(1));
        assert_eq!(signer(&rows, 1000).map(|r| r.kid), Some(2));
        assert_eq!(retirement(&rows, &rows[0]), Some(1000));
    }

    #[test]
    fn rows_from_before_announcements_keep_their_rotation_time() {
        let mut old = key(1, 0, None);
        old.activates_at_ms = None;
        old.retired_at_ms = Some(50);
        let rows = [old, key(2, 50, None)];
        assert_eq!(retirement(&rows, &rows[0]), Some(50));
        assert_eq!(signer(&rows, 60).map(|r| r.kid), Some(2));
    }
}

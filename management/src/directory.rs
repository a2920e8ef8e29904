//! Groups, members, nodes and enrollment codes in management's database. Enrollment codes
//! arrive here already hashed.

use keymesh_core::{storage::StorageError, with_pool};
use serde::Serialize;

use crate::store::{Store, new_id, now_ms};

/// A group.
#[derive(Clone, Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct GroupRow {
    /// Id (also the vault's group id).
    pub id: String,
    /// Highest secret operation a node of this group gets without an approval.
    pub node_ceiling: String,
    /// Created.
    pub created_at_ms: i64,
    /// `user:ID` of its creator.
    pub created_by: String,
    /// Token approvals are waived for the group's nodes until then (group.approvals.disable).
    pub approvals_waived_until_ms: Option<i64>,
    /// The approval that waived them.
    pub approvals_waived_by: Option<String>,
}

/// A node.
#[derive(Clone, Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct NodeRow {
    /// Id (chosen by the node; also its id at the vault and the relay).
    pub id: String,
    /// Its group.
    pub group_id: String,
    /// The user it belongs to (who created its enrollment code).
    pub user_id: String,
    /// Ed25519 identity key, hex.
    #[serde(serialize_with = "hex_bytes")]
    #[schema(value_type = String)]
    pub public_key: Vec<u8>,
    /// Highest secret operation without an approval.
    pub ceiling: String,
    /// Enrolled.
    pub enrolled_at_ms: i64,
    /// Disabled (every token refused).
    pub disabled_at_ms: Option<i64>,
}

fn hex_bytes<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(bytes))
}

/// A live enrollment code, as its holder's enrollment reads it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct CodeRow {
    /// Id (public; in the audit log).
    pub id: String,
    /// The group the node joins.
    pub group_id: String,
    /// The user the node will belong to.
    pub user_id: String,
    /// The node's ceiling.
    pub ceiling: String,
    /// Rights of the node's first token, JSON.
    pub rights: String,
}

/// A new enrollment code, hashed.
#[derive(Debug)]
pub struct NewCode<'a> {
    /// SHA-256 of the code.
    pub code_hash: &'a [u8],
    /// Group.
    pub group_id: &'a str,
    /// Owner of the node.
    pub user_id: &'a str,
    /// The node's ceiling.
    pub ceiling: &'a str,
    /// First token's rights, JSON.
    pub rights: &'a str,
    /// Expiry.
    pub expires_at_ms: i64,
}

/// How an enrollment's claim of its code ended.
#[derive(Debug)]
pub enum Claim {
    /// The code was live and is now used; the node is recorded.
    Enrolled(NodeRow),
    /// No live code with this hash (unknown, expired or used).
    NoCode,
    /// The node id is taken; the code stays unused.
    NodeExists,
}

macro_rules! node_columns {
    () => {
        "id, group_id, user_id, public_key, ceiling, enrolled_at_ms, disabled_at_ms"
    };
}

impl Store {
    /// Create a group; `Ok(None)` when the id is taken.
    pub async fn insert_group(
        &self,
        id: &str,
        node_ceiling: &str,
        created_by: &str,
    ) -> Result<Option<GroupRow>, StorageError> {
        const SQL: &str = "INSERT INTO node_groups (id, node_ceiling, created_at_ms, created_by) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING \
             RETURNING id, node_ceiling, created_at_ms, created_by, approvals_waived_until_ms, approvals_waived_by";
        Ok(
            with_pool!(self.db(), pool => sqlx::query_as(SQL).bind(id).bind(node_ceiling).bind(now_ms()).bind(created_by).fetch_optional(pool).await)?,
        )
    }

    /// A group by id.
    pub async fn group(&self, id: &str) -> Result<Option<GroupRow>, StorageError> {
        const SQL: &str = "SELECT id, node_ceiling, created_at_ms, created_by, approvals_waived_until_ms, approvals_waived_by FROM node_groups WHERE id = $1";
        Ok(with_pool!(self.db(), pool => sqlx::query_as(SQL).bind(id).fetch_optional(pool).await)?)
    }

    /// Groups by id: all of them, or (`member`) those the user belongs to.
    pub async fn groups(&self, member: Option<&str>) -> Result<Vec<GroupRow>, StorageError> {
        const SQL: &str = "SELECT id, node_ceiling, created_at_ms, created_by, approvals_waived_until_ms, approvals_waived_by FROM node_groups \
             WHERE $1 = '' OR id IN (SELECT group_id FROM group_members WHERE user_id = $1) \
             ORDER BY id LIMIT 1000";
        Ok(
            with_pool!(self.db(), pool => sqlx::query_as(SQL).bind(member.unwrap_or("")).fetch_all(pool).await)?,
        )
    }

    /// Add a member; `false` when they already were one.
    pub async fn add_member(&self, group: &str, user: &str) -> Result<bool, StorageError> {
        const SQL: &str = "INSERT INTO group_members (group_id, user_id, added_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (group_id, user_id) DO NOTHING";
        let n = with_pool!(self.db(), pool => sqlx::query(SQL).bind(group).bind(user).bind(now_ms()).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// Remove a member and, in the same transaction, their unused enrollment codes for the
    /// group; `false` when they were not a member.
    pub async fn remove_member(&self, group: &str, user: &str) -> Result<bool, StorageError> {
        const SQL: &str = "DELETE FROM group_members WHERE group_id = $1 AND user_id = $2";
        const CODES: &str = "DELETE FROM enrollment_codes WHERE group_id = $1 AND user_id = $2 AND used_at_ms IS NULL";
        let n = with_pool!(self.db(), pool => {
            let mut tx = pool.begin_with(self.db().begin_write()).await?;
            let n = sqlx::query(SQL).bind(group).bind(user).execute(&mut *tx).await?.rows_affected();
            sqlx::query(CODES).bind(group).bind(user).execute(&mut *tx).await?;
            tx.commit().await?;
            n
        });
        Ok(n == 1)
    }

    /// Whether a user belongs to a group.
    pub async fn is_member(&self, group: &str, user: &str) -> Result<bool, StorageError> {
        const SQL: &str = "SELECT 1 FROM group_members WHERE group_id = $1 AND user_id = $2";
        let row: Option<(i32,)> = with_pool!(self.db(), pool => sqlx::query_as(SQL).bind(group).bind(user).fetch_optional(pool).await)?;
        Ok(row.is_some())
    }

    /// A group's member ids.
    pub async fn members(&self, group: &str) -> Result<Vec<String>, StorageError> {
        const SQL: &str =
            "SELECT user_id FROM group_members WHERE group_id = $1 ORDER BY added_at_ms, user_id";
        let rows: Vec<(String,)> =
            with_pool!(self.db(), pool => sqlx::query_as(SQL).bind(group).fetch_all(pool).await)?;
        Ok(rows.into_iter().map(|(u,)| u).collect())
    }

    /// Record an enrollment code; returns its id.
    pub async fn insert_code(&self, c: &NewCode<'_>) -> Result<String, StorageError> {
        const SQL: &str = "INSERT INTO enrollment_codes (id, code_hash, group_id, user_id, ceiling, rights, created_at_ms, expires_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
        let id = new_id();
        with_pool!(self.db(), pool => sqlx::query(SQL).bind(&id).bind(c.code_hash).bind(c.group_id).bind(c.user_id)
            .bind(c.ceiling).bind(c.rights).bind(now_ms()).bind(c.expires_at_ms).execute(pool).await.map(drop))?;
        Ok(id)
    }

    /// A live (unused, unexpired) code, read without using it.
    pub async fn live_code(&self, code_hash: &[u8]) -> Result<Option<CodeRow>, StorageError> {
        const SQL: &str = "SELECT id, group_id, user_id, ceiling, rights FROM enrollment_codes \
             WHERE code_hash = $1 AND used_at_ms IS NULL AND expires_at_ms > $2";
        Ok(
            with_pool!(self.db(), pool => sqlx::query_as(SQL).bind(code_hash).bind(now_ms()).fetch_optional(pool).await)?,
        )
    }

    /// Use a code and record its node, in one transaction: the code's single use is one
    /// conditional update, and a taken node id leaves the code unused.
    pub async fn claim_code(
        &self,
        code_hash: &[u8],
        node_id: &str,
        public_key: &[u8],
    ) -> Result<Claim, StorageError> {
        const USE: &str = "UPDATE enrollment_codes SET used_at_ms = $1, node_id = $2 \
             WHERE code_hash = $3 AND used_at_ms IS NULL AND expires_at_ms > $1 \
             RETURNING id, group_id, user_id, ceiling, rights";
        const INSERT: &str = concat!(
            "INSERT INTO nodes (id, group_id, user_id, public_key, ceiling, enrolled_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING RETURNING ",
            node_columns!()
        );
        let now = now_ms();
        Ok(with_pool!(self.db(), pool => {
            let mut tx = pool.begin_with(self.db().begin_write()).await?;
            let code: Option<CodeRow> = sqlx::query_as(USE).bind(now).bind(node_id).bind(code_hash)
                .fetch_optional(&mut *tx).await?;
            match code {
                None => Claim::NoCode,
                Some(code) => {
                    let node: Option<NodeRow> = sqlx::query_as(INSERT).bind(node_id).bind(&code.group_id)
                        .bind(&code.user_id).bind(public_key).bind(&code.ceiling).bind(now)
                        .fetch_optional(&mut *tx).await?;
                    match node {
                        Some(node) => {
                            tx.commit().await?;
                            Claim::Enrolled(node)
                        }
                        None => Claim::NodeExists,
                    }
                }
            }
        }))
    }

    /// Undo a claim whose vault registration failed: the node row goes, the code is usable
    /// again (until its own expiry).
    pub async fn unclaim_code(&self, code_hash: &[u8], node_id: &str) -> Result<(), StorageError> {
        const DELETE: &str = "DELETE FROM nodes WHERE id = $1";
        const RELEASE: &str = "UPDATE enrollment_codes SET used_at_ms = NULL, node_id = NULL \
             WHERE code_hash = $1 AND node_id = $2";
        with_pool!(self.db(), pool => {
            let mut tx = pool.begin_with(self.db().begin_write()).await?;
            sqlx::query(DELETE).bind(node_id).execute(&mut *tx).await?;
            sqlx::query(RELEASE).bind(code_hash).bind(node_id).execute(&mut *tx).await?;
            tx.commit().await
        })?;
        Ok(())
    }

    /// A node by id.
    pub async fn node(&self, id: &str) -> Result<Option<NodeRow>, StorageError> {
        const SQL: &str = concat!("SELECT ", node_columns!(), " FROM nodes WHERE id = $1");
        Ok(with_pool!(self.db(), pool => sqlx::query_as(SQL).bind(id).fetch_optional(pool).await)?)
    }

    /// Nodes of a group, or of a user, by id.
    pub async fn nodes(
        &self,
        group: Option<&str>,
        user: Option<&str>,
    ) -> Result<Vec<NodeRow>, StorageError> {
        const SQL: &str = concat!(
            "SELECT ",
            node_columns!(),
            " FROM nodes WHERE ($1 = '' OR group_id = $1) AND ($2 = '' OR user_id = $2) \
             ORDER BY id LIMIT 1000"
        );
        Ok(
            with_pool!(self.db(), pool => sqlx::query_as(SQL).bind(group.unwrap_or("")).bind(user.unwrap_or("")).fetch_all(pool).await)?,
        )
    }

    /// Set a node's ceiling.
    pub async fn set_node_ceiling(&self, id: &str, ceiling: &str) -> Result<bool, StorageError> {
        const SQL: &str = "UPDATE nodes SET ceiling = $1 WHERE id = $2";
        let n = with_pool!(self.db(), pool => sqlx::query(SQL).bind(ceiling).bind(id).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// Mark a node disabled; `false` when it already was (or does not exist).
    pub async fn disable_node(&self, id: &str) -> Result<bool, StorageError> {
        const SQL: &str =
            "UPDATE nodes SET disabled_at_ms = $1 WHERE id = $2 AND disabled_at_ms IS NULL";
        let n = with_pool!(self.db(), pool => sqlx::query(SQL).bind(now_ms()).bind(id).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }
}

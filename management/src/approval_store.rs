//! Approval requests and decisions in management's database. Deciding is one transaction per
//! vote, serialised per request; executing is one conditional update, so an approved request
//! runs at most once however many callers race.

use keymesh_core::{
    storage::{Db, StorageError},
    with_pool,
};

use crate::store::{Store, new_id, now_ms};

/// A request as stored; callers see it as `keymesh_proto::api::approvals::Approval`.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ApprovalRow {
    /// Id.
    pub id: String,
    /// Operation name.
    pub operation: String,
    /// The operation's parameters (`token.mint`: `node_id`, `group`, `rights`, `ttl_secs`,
    /// `excess`; other operations: docs/management.md).
    pub params: String,
    /// Why the requester asks.
    pub reason: String,
    /// `user:ID` or `node:ID`.
    pub requester: String,
    /// The user behind the request (a node's owner for node requests): never a reviewer of it.
    pub requester_user: String,
    /// `pending`, `approved`, `denied` or `executed`; a pending or approved request past its
    /// deadline is reported as `expired`.
    pub status: String,
    /// Approvals that approve.
    pub approvals_needed: i64,
    /// Denials that deny.
    pub denials_needed: i64,
    /// The roles that may decide it.
    pub reviewer_roles: String,
    /// Made.
    pub created_at_ms: i64,
    /// Deadline to decide and to execute.
    pub expires_at_ms: i64,
    /// When the final decision fell.
    pub decided_at_ms: Option<i64>,
    /// When it was executed.
    pub executed_at_ms: Option<i64>,
}

impl ApprovalRow {
    /// The status as callers see it: a pending or approved request past its deadline is
    /// `expired`.
    pub fn effective_status(&self, now: i64) -> &str {
        match self.status.as_str() {
            "pending" | "approved" if now >= self.expires_at_ms => "expired",
            other => other,
        }
    }
}

/// One reviewer's decision as stored; callers see it as `keymesh_proto::api::approvals::Decision`.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct DecisionRow {
    /// `user:ID`.
    pub reviewer: String,
    /// `approve` or `deny`.
    pub decision: String,
    /// Why.
    pub reason: String,
    /// When.
    pub decided_at_ms: i64,
}

/// A new request.
#[derive(Debug)]
pub struct NewApproval<'a> {
    /// Operation name.
    pub operation: &'a str,
    /// Parameters, JSON.
    pub params: &'a str,
    /// Why.
    pub reason: &'a str,
    /// `user:ID` or `node:ID`.
    pub requester: &'a str,
    /// The user behind it.
    pub requester_user: &'a str,
    /// Thresholds.
    pub approvals_needed: i64,
    /// Thresholds.
    pub denials_needed: i64,
    /// Reviewer roles, JSON list.
    pub reviewer_roles: &'a str,
    /// Deadline.
    pub expires_at_ms: i64,
}

/// How a vote ended.
#[derive(Debug)]
pub enum Vote {
    /// Counted; the request as it now stands (possibly just decided).
    Counted(ApprovalRow),
    /// No such request.
    Missing,
    /// Already decided (or executed).
    Decided(ApprovalRow),
    /// Past its deadline.
    Expired,
    /// This reviewer already voted.
    AlreadyVoted,
}

macro_rules! approval_columns {
    () => {
        "id, operation, params, reason, requester, requester_user, status, approvals_needed, \
         denials_needed, reviewer_roles, created_at_ms, expires_at_ms, decided_at_ms, executed_at_ms"
    };
}

impl Store {
    /// Record a pending request.
    pub async fn insert_approval(&self, a: &NewApproval<'_>) -> Result<ApprovalRow, StorageError> {
        const SQL: &str = concat!(
            "INSERT INTO approval_requests (id, operation, params, reason, requester, requester_user, status, \
             approvals_needed, denials_needed, reviewer_roles, created_at_ms, expires_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8, $9, $10, $11) RETURNING ",
            approval_columns!()
        );
        let id = new_id();
        Ok(
            with_pool!(self.db(), pool => sqlx::query_as(SQL).bind(&id).bind(a.operation).bind(a.params)
            .bind(a.reason).bind(a.requester).bind(a.requester_user).bind(a.approvals_needed)
            .bind(a.denials_needed).bind(a.reviewer_roles).bind(now_ms()).bind(a.expires_at_ms)
            .fetch_one(pool).await)?,
        )
    }

    /// A request by id.
    pub async fn approval(&self, id: &str) -> Result<Option<ApprovalRow>, StorageError> {
        const SQL: &str = concat!(
            "SELECT ",
            approval_columns!(),
            " FROM approval_requests WHERE id = $1"
        );
        Ok(with_pool!(self.db(), pool => sqlx::query_as(SQL).bind(id).fetch_optional(pool).await)?)
    }

    /// Requests, newest first: all (`requester_user` empty) or one user's; `status` empty for
    /// any status.
    pub async fn approvals(
        &self,
        requester_user: &str,
        status: &str,
        limit: i64,
    ) -> Result<Vec<ApprovalRow>, StorageError> {
        const SQL: &str = concat!(
            "SELECT ",
            approval_columns!(),
            " FROM approval_requests WHERE ($1 = '' OR requester_user = $1) AND ($2 = '' OR status = $2) \
             ORDER BY created_at_ms DESC, id DESC LIMIT $3"
        );
        Ok(
            with_pool!(self.db(), pool => sqlx::query_as(SQL).bind(requester_user).bind(status).bind(limit).fetch_all(pool).await)?,
        )
    }

    /// Requests waiting for a decision and not expired, counted by operation.
    pub async fn pending_approvals_by_operation(&self) -> Result<Vec<(String, i64)>, StorageError> {
        const SQL: &str = "SELECT operation, COUNT(*) FROM approval_requests \
             WHERE status = 'pending' AND expires_at_ms > $1 GROUP BY operation";
        Ok(with_pool!(self.db(), pool => sqlx::query_as(SQL).bind(now_ms()).fetch_all(pool).await)?)
    }

    /// A request's decisions, oldest first.
    pub async fn decisions(&self, id: &str) -> Result<Vec<DecisionRow>, StorageError> {
        const SQL: &str = "SELECT reviewer, decision, reason, decided_at_ms FROM approval_decisions \
             WHERE request_id = $1 ORDER BY decided_at_ms, reviewer";
        Ok(with_pool!(self.db(), pool => sqlx::query_as(SQL).bind(id).fetch_all(pool).await)?)
    }

    /// Count one reviewer's vote, in one transaction serialised per request (PostgreSQL locks
    /// the row; SQLite takes the write lock first): checks the request is pending and alive,
    /// records the vote once per reviewer, and decides when a threshold is reached.
    pub async fn vote(
        &self,
        id: &str,
        reviewer: &str,
        approve: bool,
        reason: &str,
    ) -> Result<Vote, StorageError> {
        const LOCK_PG: &str = concat!(
            "SELECT ",
            approval_columns!(),
            " FROM approval_requests WHERE id = $1 FOR UPDATE"
        );
        // A no-op write makes SQLite take its write lock before the read (a deferred
        // transaction's read could otherwise go stale under a concurrent vote).
        const LOCK_SQLITE: &str = "UPDATE approval_requests SET status = status WHERE id = $1";
        const READ: &str = concat!(
            "SELECT ",
            approval_columns!(),
            " FROM approval_requests WHERE id = $1"
        );
        const INSERT: &str = "INSERT INTO approval_decisions (request_id, reviewer, decision, reason, decided_at_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (request_id, reviewer) DO NOTHING";
        const COUNT: &str = "SELECT \
             COALESCE(SUM(CASE WHEN decision = 'approve' THEN 1 ELSE 0 END), 0), \
             COALESCE(SUM(CASE WHEN decision = 'deny' THEN 1 ELSE 0 END), 0) \
             FROM approval_decisions WHERE request_id = $1";
        const DECIDE: &str = concat!(
            "UPDATE approval_requests SET status = $1, decided_at_ms = $2 WHERE id = $3 AND status = 'pending' RETURNING ",
            approval_columns!()
        );
        let now = now_ms();
        let decision = if approve { "approve" } else { "deny" };
        let postgres = matches!(self.db(), Db::Postgres(_));
        Ok(with_pool!(self.db(), pool => {
            let mut tx = pool.begin_with(self.db().begin_write()).await?;
            let row: Option<ApprovalRow> = if postgres {
                sqlx::query_as(LOCK_PG).bind(id).fetch_optional(&mut *tx).await?
            } else {
                sqlx::query(LOCK_SQLITE).bind(id).execute(&mut *tx).await?;
                sqlx::query_as(READ).bind(id).fetch_optional(&mut *tx).await?
            };
            match row {
                None => Vote::Missing,
                Some(row) if row.status != "pending" => Vote::Decided(row),
                Some(row) if now >= row.expires_at_ms => Vote::Expired,
                Some(row) => {
                    let inserted = sqlx::query(INSERT).bind(id).bind(reviewer).bind(decision).bind(reason).bind(now)
                        .execute(&mut *tx).await?.rows_affected();
                    if inserted == 0 {
                        Vote::AlreadyVoted
                    } else {
                        let (approvals, denials): (i64, i64) = sqlx::query_as(COUNT).bind(id).fetch_one(&mut *tx).await?;
                        let outcome = if approvals >= row.approvals_needed {
                            Some("approved")
                        } else if denials >= row.denials_needed {
                            Some("denied")
                        } else {
                            None
                        };
                        let row = match outcome {
                            Some(status) => sqlx::query_as(DECIDE).bind(status).bind(now).bind(id)
                                .fetch_one(&mut *tx).await?,
                            None => row,
                        };
                        tx.commit().await?;
                        Vote::Counted(row)
                    }
                }
            }
        }))
    }

    /// Claim an approved, unexpired request for execution: succeeds once.
    pub async fn claim_execution(&self, id: &str) -> Result<Option<ApprovalRow>, StorageError> {
        const SQL: &str = concat!(
            "UPDATE approval_requests SET status = 'executed', executed_at_ms = $1 \
             WHERE id = $2 AND status = 'approved' AND expires_at_ms > $1 RETURNING ",
            approval_columns!()
        );
        Ok(
            with_pool!(self.db(), pool => sqlx::query_as(SQL).bind(now_ms()).bind(id).fetch_optional(pool).await)?,
        )
    }

    /// Give back a claim whose execution failed (the operation did not happen): approved again.
    pub async fn release_execution(&self, id: &str) -> Result<(), StorageError> {
        const SQL: &str = "UPDATE approval_requests SET status = 'approved', executed_at_ms = NULL \
             WHERE id = $1 AND status = 'executed'";
        with_pool!(self.db(), pool => sqlx::query(SQL).bind(id).execute(pool).await.map(drop))?;
        Ok(())
    }

    /// Enabled users holding one of `roles`, for notifications.
    pub async fn users_in_roles(
        &self,
        roles: &[&str],
    ) -> Result<Vec<crate::store::UserRow>, StorageError> {
        const SQL: &str = "SELECT id, email, role, created_at_ms, disabled_at_ms FROM users \
             WHERE disabled_at_ms IS NULL ORDER BY email LIMIT 1000";
        let users: Vec<crate::store::UserRow> =
            with_pool!(self.db(), pool => sqlx::query_as(SQL).fetch_all(pool).await)?;
        Ok(users
            .into_iter()
            .filter(|u| roles.contains(&u.role.as_str()))
            .collect())
    }
}

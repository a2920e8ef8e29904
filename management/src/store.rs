//! Management's tables (users, sign-in requests, sessions) on SQLite or PostgreSQL. Tokens,
//! codes and poll secrets arrive here already hashed.

use std::time::{SystemTime, UNIX_EPOCH};

use keymesh_core::{
    storage::{Db, StorageError},
    with_pool,
};
use serde::Serialize;

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A new random id (UUID v4, hyphenated).
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The domain of a deleted user's tombstone address (`deleted-ID@deleted.invalid`).
pub const DELETED_DOMAIN: &str = "@deleted.invalid";

/// A user.
#[derive(Clone, Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct UserRow {
    /// Id.
    pub id: String,
    /// Lower-cased address.
    pub email: String,
    /// Role name.
    pub role: String,
    /// Created.
    pub created_at_ms: i64,
    /// Disabled (cannot sign in; sessions refused).
    pub disabled_at_ms: Option<i64>,
}

impl UserRow {
    /// Deleted: the row stays for the audit trail, under a tombstone address.
    pub fn is_deleted(&self) -> bool {
        self.email.ends_with(DELETED_DOMAIN)
    }
}

/// What a sign-in request is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// A user asked to sign in.
    Login,
    /// An admin invited a new user.
    Invite,
}

impl Purpose {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Login => "login",
            Self::Invite => "invite",
        }
    }
}

/// Who completes a sign-in request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Client {
    /// A browser: the confirm page sets a session cookie.
    Browser,
    /// The desktop app: it polls with its secret, or submits the code.
    App,
}

impl Client {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Browser => "browser",
            Self::App => "app",
        }
    }
}

/// A new sign-in request, hashed.
#[derive(Debug)]
pub struct NewLoginRequest<'a> {
    /// Id (also binds the code's HMAC).
    pub id: &'a str,
    /// The account, if the address has one.
    pub user_id: Option<&'a str>,
    /// Why.
    pub purpose: Purpose,
    /// Who completes it.
    pub client: Client,
    /// SHA-256 of the link token.
    pub token_hash: &'a [u8],
    /// HMAC of the code.
    pub code_hash: &'a [u8],
    /// SHA-256 of the poll secret.
    pub poll_hash: &'a [u8],
    /// Expiry.
    pub expires_at_ms: i64,
    /// The requester's address.
    pub requested_ip: &'a str,
    /// For app requests: what the app shows, for the confirm page to show too.
    pub match_code: &'a str,
}

/// What the confirm page shows about a live link before it is used.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct LinkView {
    /// `browser` or `app`.
    pub client: String,
    /// The requester's address.
    pub requested_ip: String,
    /// The app's match code (empty for browser requests).
    pub match_code: String,
    /// When it was requested.
    pub created_at_ms: i64,
}

/// A sign-in request as the code and poll paths read it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct LoginRequestRow {
    /// Id.
    pub id: String,
    /// Account, if any.
    pub user_id: Option<String>,
    /// `browser` or `app`.
    pub client: String,
    /// HMAC of the code.
    pub code_hash: Vec<u8>,
    /// SHA-256 of the poll secret.
    pub poll_hash: Vec<u8>,
    /// Expiry.
    pub expires_at_ms: i64,
    /// Link confirmed.
    pub confirmed_at_ms: Option<i64>,
    /// Used up.
    pub consumed_at_ms: Option<i64>,
}

/// A request whose link was just confirmed.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Confirmed {
    /// Id.
    pub id: String,
    /// Account (`None`: the address had none; the link then never confirms).
    pub user_id: Option<String>,
    /// `browser` or `app`.
    pub client: String,
    /// `login` or `invite`.
    pub purpose: String,
}

/// A session row.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct SessionRow {
    /// Id (public; used to list and revoke).
    pub id: String,
    /// Owner.
    pub user_id: String,
    /// `cookie` or `bearer`.
    pub kind: String,
    /// Signed in at (the re-authentication clock).
    pub created_at_ms: i64,
    /// Last use (to within a minute).
    pub last_seen_ms: i64,
    /// Absolute expiry.
    pub expires_at_ms: i64,
    /// Client address at sign-in.
    pub ip: String,
    /// Client software at sign-in (truncated).
    pub user_agent: String,
}

/// A new session, hashed.
#[derive(Debug)]
pub struct NewSession<'a> {
    /// Id.
    pub id: &'a str,
    /// Owner.
    pub user_id: &'a str,
    /// SHA-256 of the token.
    pub token_hash: &'a [u8],
    /// `cookie` or `bearer`.
    pub kind: &'a str,
    /// Absolute expiry.
    pub expires_at_ms: i64,
    /// Client address.
    pub ip: &'a str,
    /// Client software.
    pub user_agent: &'a str,
}

macro_rules! user_columns {
    () => {
        "id, email, role, created_at_ms, disabled_at_ms"
    };
}
/// Live sessions (not revoked, within both timeouts, of an enabled user) with their user, by
/// one key column (`$1`); `$2` is now, `$3` the idle cutoff.
macro_rules! live_session_sql {
    ($key:literal) => {
        concat!(
            "SELECT s.id, s.user_id, s.kind, s.created_at_ms, s.last_seen_ms, s.expires_at_ms, s.ip, s.user_agent, \
                 u.email, u.role, u.created_at_ms AS user_created_at_ms, g.id AS grant_id, g.role AS grant_role \
             FROM sessions s JOIN users u ON u.id = s.user_id \
             LEFT JOIN emergency_grants g ON g.user_id = u.id AND g.ended_at_ms IS NULL AND g.expires_at_ms > $2 \
             WHERE ",
            $key,
            " = $1 AND s.revoked_at_ms IS NULL AND s.expires_at_ms > $2 \
                 AND s.last_seen_ms > $3 AND u.disabled_at_ms IS NULL"
        )
    };
}

/// A live session joined with its user.
#[derive(sqlx::FromRow)]
struct LiveSession {
    #[sqlx(flatten)]
    session: SessionRow,
    email: String,
    role: String,
    user_created_at_ms: i64,
    grant_id: Option<String>,
    grant_role: Option<String>,
}

/// A live session, its user, and the user's active emergency grant (id, role), if any.
pub type Live = (SessionRow, UserRow, Option<(String, String)>);

impl LiveSession {
    fn split(self) -> Live {
        let user = UserRow {
            id: self.session.user_id.clone(),
            email: self.email,
            role: self.role,
            created_at_ms: self.user_created_at_ms,
            disabled_at_ms: None,
        };
        let grant = self.grant_id.zip(self.grant_role);
        (self.session, user, grant)
    }
}

macro_rules! session_columns {
    () => {
        "id, user_id, kind, created_at_ms, last_seen_ms, expires_at_ms, ip, user_agent"
    };
}

/// Management's storage.
#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
}

impl Store {
    /// Over the management database.
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// The pool.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Create a user; `Ok(None)` when the address is taken.
    pub async fn insert_user(
        &self,
        email: &str,
        role: &str,
    ) -> Result<Option<UserRow>, StorageError> {
        const SQL: &str = "INSERT INTO users (id, email, role, created_at_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (email) DO NOTHING RETURNING id, email, role, created_at_ms, disabled_at_ms";
        let id = new_id();
        Ok(
            with_pool!(&self.db, pool => sqlx::query_as(SQL).bind(&id).bind(email).bind(role).bind(now_ms()).fetch_optional(pool).await)?,
        )
    }

    /// A user by address.
    pub async fn user_by_email(&self, email: &str) -> Result<Option<UserRow>, StorageError> {
        const SQL: &str = concat!("SELECT ", user_columns!(), " FROM users WHERE email = $1");
        Ok(
            with_pool!(&self.db, pool => sqlx::query_as(SQL).bind(email).fetch_optional(pool).await)?,
        )
    }

    /// A user by id.
    pub async fn user(&self, id: &str) -> Result<Option<UserRow>, StorageError> {
        const SQL: &str = concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1");
        Ok(with_pool!(&self.db, pool => sqlx::query_as(SQL).bind(id).fetch_optional(pool).await)?)
    }

    /// Users, by address, at most `limit` after `after` (an address).
    pub async fn users(&self, after: &str, limit: i64) -> Result<Vec<UserRow>, StorageError> {
        const SQL: &str = concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE email > $1 ORDER BY email LIMIT $2"
        );
        Ok(
            with_pool!(&self.db, pool => sqlx::query_as(SQL).bind(after).bind(limit).fetch_all(pool).await)?,
        )
    }

    /// Change a user's role and enable the account; `false` when there is no such user.
    pub async fn set_admin_enabled(&self, id: &str, role: &str) -> Result<bool, StorageError> {
        const SQL: &str = "UPDATE users SET role = $1, disabled_at_ms = NULL WHERE id = $2";
        let done = with_pool!(&self.db, pool => sqlx::query(SQL).bind(role).bind(id).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(done == 1)
    }

    /// Enabled admins other than `id`.
    pub async fn other_enabled_admins(&self, id: &str) -> Result<i64, StorageError> {
        const SQL: &str = "SELECT COUNT(*) FROM users WHERE role = 'admin' AND disabled_at_ms IS NULL AND id <> $1";
        Ok(with_pool!(&self.db, pool => sqlx::query_scalar(SQL).bind(id).fetch_one(pool).await)?)
    }

    /// Delete a user, keeping the row for the audit trail's references: the address becomes a
    /// tombstone (the address may be invited again), the account is disabled, its sessions end,
    /// its memberships and unused enrollment codes go, its nodes are disabled. One transaction;
    /// `false` when there is no such user or it was deleted already.
    pub async fn delete_user(&self, id: &str) -> Result<bool, StorageError> {
        const USER: &str =
            "UPDATE users SET email = $1, disabled_at_ms = $2 WHERE id = $3 AND email <> $1";
        const SESSIONS: &str =
            "UPDATE sessions SET revoked_at_ms = $1 WHERE user_id = $2 AND revoked_at_ms IS NULL";
        const MEMBERS: &str = "DELETE FROM group_members WHERE user_id = $1";
        const GRANTS: &str = "UPDATE emergency_grants SET ended_at_ms = $1, ended_by = 'user.delete' \
             WHERE user_id = $2 AND ended_at_ms IS NULL";
        const CODES: &str =
            "DELETE FROM enrollment_codes WHERE user_id = $1 AND used_at_ms IS NULL";
        const NODES: &str =
            "UPDATE nodes SET disabled_at_ms = $1 WHERE user_id = $2 AND disabled_at_ms IS NULL";
        let tombstone = format!("deleted-{id}{DELETED_DOMAIN}");
        let now = now_ms();
        let done = with_pool!(&self.db, pool => {
            let mut tx = pool.begin_with(self.db.begin_write()).await?;
            let n = sqlx::query(USER).bind(&tombstone).bind(now).bind(id).execute(&mut *tx).await?.rows_affected();
            if n == 1 {
                sqlx::query(SESSIONS).bind(now).bind(id).execute(&mut *tx).await?;
                sqlx::query(MEMBERS).bind(id).execute(&mut *tx).await?;
                sqlx::query(GRANTS).bind(now).bind(id).execute(&mut *tx).await?;
                sqlx::query(CODES).bind(id).execute(&mut *tx).await?;
                sqlx::query(NODES).bind(now).bind(id).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            n
        });
        Ok(done == 1)
    }

    /// Disable (ending every session and emergency grant of theirs) or enable a user who is
    /// not deleted: the number of sessions ended, or `None` when the user was not in the other
    /// state. One transaction.
    pub async fn set_user_disabled(
        &self,
        id: &str,
        disable: bool,
    ) -> Result<Option<u64>, StorageError> {
        const DISABLE: &str = "UPDATE users SET disabled_at_ms = $1 WHERE id = $2 \
             AND disabled_at_ms IS NULL AND email NOT LIKE '%@deleted.invalid'";
        const ENABLE: &str = "UPDATE users SET disabled_at_ms = NULL WHERE id = $2 \
             AND disabled_at_ms <= $1 AND email NOT LIKE '%@deleted.invalid'";
        const SESSIONS: &str =
            "UPDATE sessions SET revoked_at_ms = $1 WHERE user_id = $2 AND revoked_at_ms IS NULL";
        const GRANTS: &str = "UPDATE emergency_grants SET ended_at_ms = $1, ended_by = 'user.disable' \
             WHERE user_id = $2 AND ended_at_ms IS NULL";
        let now = now_ms();
        let user_sql = if disable { DISABLE } else { ENABLE };
        Ok(with_pool!(&self.db, pool => {
            let mut tx = pool.begin_with(self.db.begin_write()).await?;
            let n = sqlx::query(user_sql).bind(now).bind(id).execute(&mut *tx).await?.rows_affected();
            let ended = if n == 1 && disable {
                let ended = sqlx::query(SESSIONS).bind(now).bind(id).execute(&mut *tx).await?.rows_affected();
                sqlx::query(GRANTS).bind(now).bind(id).execute(&mut *tx).await?;
                ended
            } else {
                0
            };
            tx.commit().await?;
            (n == 1).then_some(ended)
        }))
    }

    /// Record a sign-in request.
    pub async fn insert_login_request(&self, r: &NewLoginRequest<'_>) -> Result<(), StorageError> {
        const SQL: &str = "INSERT INTO login_requests (id, user_id, purpose, client, token_hash, code_hash, poll_hash, created_at_ms, expires_at_ms, requested_ip, match_code) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
        with_pool!(&self.db, pool => sqlx::query(SQL)
            .bind(r.id).bind(r.user_id).bind(r.purpose.as_str()).bind(r.client.as_str())
            .bind(r.token_hash).bind(r.code_hash).bind(r.poll_hash).bind(now_ms()).bind(r.expires_at_ms)
            .bind(r.requested_ip).bind(r.match_code)
            .execute(pool).await.map(drop))?;
        Ok(())
    }

    /// A link that could still be confirmed, read without changing it (the confirm page).
    pub async fn live_link(&self, token_hash: &[u8]) -> Result<Option<LinkView>, StorageError> {
        const SQL: &str = "SELECT client, requested_ip, match_code, created_at_ms FROM login_requests \
             WHERE token_hash = $1 AND user_id IS NOT NULL AND confirmed_at_ms IS NULL \
                 AND consumed_at_ms IS NULL AND expires_at_ms > $2";
        Ok(
            with_pool!(&self.db, pool => sqlx::query_as(SQL).bind(token_hash).bind(now_ms()).fetch_optional(pool).await)?,
        )
    }

    /// Confirm a link: one atomic update that succeeds once, only for a live, unconfirmed,
    /// unconsumed request of an existing account. Browser requests are consumed at once; app
    /// requests wait for their poll.
    pub async fn confirm_link(&self, token_hash: &[u8]) -> Result<Option<Confirmed>, StorageError> {
        const SQL: &str = "UPDATE login_requests SET confirmed_at_ms = $1, \
                 consumed_at_ms = CASE WHEN client = 'browser' THEN $1 ELSE NULL END \
             WHERE token_hash = $2 AND user_id IS NOT NULL AND confirmed_at_ms IS NULL \
                 AND consumed_at_ms IS NULL AND expires_at_ms > $1 \
             RETURNING id, user_id, client, purpose";
        Ok(
            with_pool!(&self.db, pool => sqlx::query_as(SQL).bind(now_ms()).bind(token_hash).fetch_optional(pool).await)?,
        )
    }

    /// A sign-in request by id.
    pub async fn login_request(&self, id: &str) -> Result<Option<LoginRequestRow>, StorageError> {
        const SQL: &str = "SELECT id, user_id, client, code_hash, poll_hash, expires_at_ms, confirmed_at_ms, consumed_at_ms \
             FROM login_requests WHERE id = $1";
        Ok(with_pool!(&self.db, pool => sqlx::query_as(SQL).bind(id).fetch_optional(pool).await)?)
    }

    /// Count one code attempt, atomically, only while attempts remain on a live, unconsumed
    /// request; returns the attempts made including this one, or `None` when no attempt may
    /// be made.
    pub async fn count_code_attempt(
        &self,
        id: &str,
        max: u32,
    ) -> Result<Option<i64>, StorageError> {
        const SQL: &str = "UPDATE login_requests SET code_attempts = code_attempts + 1 \
             WHERE id = $1 AND code_attempts < $2 AND consumed_at_ms IS NULL AND expires_at_ms > $3 \
             RETURNING code_attempts";
        let row: Option<(i64,)> = with_pool!(&self.db, pool => sqlx::query_as(SQL).bind(id).bind(i64::from(max)).bind(now_ms()).fetch_optional(pool).await)?;
        Ok(row.map(|(n,)| n))
    }

    /// Consume a request (code accepted, or a confirmed app request polled): succeeds once.
    /// `require_confirmed` demands the link was confirmed first (the poll path).
    pub async fn consume_request(
        &self,
        id: &str,
        require_confirmed: bool,
    ) -> Result<Option<String>, StorageError> {
        const SQL: &str = "UPDATE login_requests SET consumed_at_ms = $1, \
                 confirmed_at_ms = COALESCE(confirmed_at_ms, $1) \
             WHERE id = $2 AND user_id IS NOT NULL AND consumed_at_ms IS NULL AND expires_at_ms > $1 \
                 AND ($3 = 0 OR confirmed_at_ms IS NOT NULL) \
             RETURNING user_id";
        let row: Option<(String,)> = with_pool!(&self.db, pool => sqlx::query_as(SQL).bind(now_ms()).bind(id).bind(i64::from(require_confirmed)).fetch_optional(pool).await)?;
        Ok(row.map(|(u,)| u))
    }

    /// Delete requests that expired more than a day ago.
    pub async fn purge_login_requests(&self) -> Result<u64, StorageError> {
        const SQL: &str = "DELETE FROM login_requests WHERE expires_at_ms < $1";
        let before = now_ms() - 86_400_000;
        Ok(
            with_pool!(&self.db, pool => sqlx::query(SQL).bind(before).execute(pool).await.map(|r| r.rows_affected()))?,
        )
    }

    /// Create a session, then end the user's least recent live sessions beyond `cap` (the new
    /// one always stays), in one transaction serialised per user. Returns how many were ended.
    pub async fn insert_session(
        &self,
        s: &NewSession<'_>,
        cap: u32,
        idle_ms: i64,
    ) -> Result<u64, StorageError> {
        // PostgreSQL: two sign-ins of one user must not each miss the other's new session.
        // SQLite serialises writers already.
        const LOCK_USER: &str = "SELECT id FROM users WHERE id = $1 FOR UPDATE";
        const INSERT: &str = "INSERT INTO sessions (id, user_id, token_hash, kind, created_at_ms, last_seen_ms, expires_at_ms, ip, user_agent) \
             VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8)";
        // Live = not revoked, within both timeouts. Dead sessions are refused anyway and are
        // neither kept nor counted as evicted.
        const EVICT: &str = "UPDATE sessions SET revoked_at_ms = $1 \
             WHERE user_id = $2 AND revoked_at_ms IS NULL AND expires_at_ms > $1 AND last_seen_ms > $3 \
                 AND id <> $4 AND id NOT IN ( \
                 SELECT id FROM sessions WHERE user_id = $2 AND revoked_at_ms IS NULL AND expires_at_ms > $1 \
                     AND last_seen_ms > $3 AND id <> $4 \
                 ORDER BY last_seen_ms DESC, created_at_ms DESC, id DESC LIMIT $5)";
        let now = now_ms();
        let lock = matches!(self.db, Db::Postgres(_));
        Ok(with_pool!(&self.db, pool => {
            let mut tx = pool.begin_with(self.db.begin_write()).await?;
            if lock {
                sqlx::query(LOCK_USER).bind(s.user_id).execute(&mut *tx).await?;
            }
            sqlx::query(INSERT).bind(s.id).bind(s.user_id).bind(s.token_hash).bind(s.kind)
                .bind(now).bind(s.expires_at_ms).bind(s.ip).bind(s.user_agent)
                .execute(&mut *tx).await?;
            let evicted = sqlx::query(EVICT).bind(now).bind(s.user_id).bind(now - idle_ms).bind(s.id)
                .bind(i64::from(cap.saturating_sub(1))).execute(&mut *tx).await?.rows_affected();
            tx.commit().await?;
            evicted
        }))
    }

    /// A live session by token hash: not revoked, within its absolute expiry and idle window,
    /// of a user who is not disabled.
    pub async fn live_session(
        &self,
        token_hash: &[u8],
        idle_ms: i64,
    ) -> Result<Option<Live>, StorageError> {
        const SQL: &str = live_session_sql!("s.token_hash");
        let now = now_ms();
        let row: Option<LiveSession> = with_pool!(&self.db, pool => sqlx::query_as(SQL).bind(token_hash).bind(now).bind(now - idle_ms).fetch_optional(pool).await)?;
        Ok(row.map(LiveSession::split))
    }

    /// A live session by id (the event stream re-checks its own this way).
    pub async fn live_session_by_id(
        &self,
        id: &str,
        idle_ms: i64,
    ) -> Result<Option<Live>, StorageError> {
        const SQL: &str = live_session_sql!("s.id");
        let now = now_ms();
        let row: Option<LiveSession> = with_pool!(&self.db, pool => sqlx::query_as(SQL).bind(id).bind(now).bind(now - idle_ms).fetch_optional(pool).await)?;
        Ok(row.map(LiveSession::split))
    }

    /// Record use of a session (callers throttle this to once a minute).
    pub async fn touch_session(&self, id: &str) -> Result<(), StorageError> {
        const SQL: &str = "UPDATE sessions SET last_seen_ms = $1 WHERE id = $2";
        with_pool!(&self.db, pool => sqlx::query(SQL).bind(now_ms()).bind(id).execute(pool).await.map(drop))?;
        Ok(())
    }

    /// A user's live sessions, newest first.
    pub async fn sessions_of(
        &self,
        user_id: &str,
        idle_ms: i64,
    ) -> Result<Vec<SessionRow>, StorageError> {
        const SQL: &str = concat!(
            "SELECT ",
            session_columns!(),
            " FROM sessions WHERE user_id = $1 AND revoked_at_ms IS NULL \
             AND expires_at_ms > $2 AND last_seen_ms > $3 ORDER BY created_at_ms DESC, id DESC"
        );
        let now = now_ms();
        Ok(
            with_pool!(&self.db, pool => sqlx::query_as(SQL).bind(user_id).bind(now).bind(now - idle_ms).fetch_all(pool).await)?,
        )
    }

    /// End one of a user's sessions; `false` when it is not theirs or already ended.
    pub async fn revoke_session(&self, user_id: &str, id: &str) -> Result<bool, StorageError> {
        const SQL: &str = "UPDATE sessions SET revoked_at_ms = $1 WHERE id = $2 AND user_id = $3 AND revoked_at_ms IS NULL";
        let done = with_pool!(&self.db, pool => sqlx::query(SQL).bind(now_ms()).bind(id).bind(user_id).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(done == 1)
    }
}

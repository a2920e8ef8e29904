//! Database pools (SQLite or PostgreSQL, chosen by URL scheme), per-service migrations, and the
//! guard that stops a service from opening another service's database.

mod migrations;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

use std::{fmt, str::FromStr, time::Duration};

use secrecy::{ExposeSecret, SecretString};
use sqlx::{
    Connection as _, PgPool, SqlitePool,
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

use crate::config::ServiceName;

/// Which database engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Embedded, one file per service.
    Sqlite,
    /// Production, one database per service.
    Postgres,
}

/// A database URL. It may hold a password, so it prints redacted.
#[derive(Clone)]
pub struct DatabaseUrl {
    backend: Backend,
    url: SecretString,
}

impl DatabaseUrl {
    /// Parse and classify by scheme.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let backend = if raw.starts_with("sqlite:") {
            Backend::Sqlite
        } else if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err("expected a sqlite:// or postgres:// URL".into());
        };
        Ok(Self {
            backend,
            url: SecretString::from(raw.to_owned()),
        })
    }

    /// The engine.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The URL with any password replaced, safe for logs and banners.
    pub fn redacted(&self) -> String {
        let url = self.url.expose_secret();
        let Some((scheme, rest)) = url.split_once("://") else {
            return url.to_owned();
        };
        match rest.split_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split(':').next().unwrap_or_default();
                let masked = if userinfo.contains(':') { ":***" } else { "" };
                format!("{scheme}://{user}{masked}@{host}")
            }
            None => url.to_owned(),
        }
    }

    pub(crate) fn expose(&self) -> &str {
        self.url.expose_secret()
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// A storage failure. Messages name the operation; URLs are always redacted.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Could not open the database.
    #[error("cannot connect to {url}")]
    Connect {
        /// Redacted URL.
        url: String,
        /// Cause.
        #[source]
        source: sqlx::Error,
    },
    /// A migration failed.
    #[error("migrating the {service} database failed")]
    Migrate {
        /// Service.
        service: ServiceName,
        /// Cause.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// The database belongs to another service.
    #[error(
        "this database belongs to the {found} service, not {expected}: each service needs its own database"
    )]
    WrongService {
        /// The service that tried to open it.
        expected: ServiceName,
        /// The owner recorded in it.
        found: String,
    },
    /// Any other query failure.
    #[error("database query failed")]
    Query(#[from] sqlx::Error),
    /// A query through a driver other than sqlx failed (the relay's SQLite writer).
    #[error("database query failed")]
    Driver(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The store's own failure rather than the database's: a writer that stopped or cannot
    /// vouch for its last commit, stored data that does not unseal or decode. The message names
    /// what (never a value); it is logged, and a client sees only `internal`.
    #[error("storage failed: {0}")]
    Failed(std::borrow::Cow<'static, str>),
    /// Could not create a SQLite file or its directory.
    #[error("cannot create {path} or its directory")]
    Directory {
        /// Path.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Run the same sqlx code on whichever pool a [`Db`] holds: `with_pool!(db, pool => query.execute(pool).await)`.
/// The body is compiled once per engine, so it must type-check for both.
#[macro_export]
macro_rules! with_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::storage::Db::Sqlite($pool) => $body,
            $crate::storage::Db::Postgres($pool) => $body,
        }
    };
}

/// A pool on one of the two engines. Services match on it in their storage implementations.
#[derive(Clone, Debug)]
pub enum Db {
    /// SQLite pool.
    Sqlite(SqlitePool),
    /// PostgreSQL pool.
    Postgres(PgPool),
}

/// How long a SQLite connection waits for a lock before failing.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait for a pooled connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the WAL is checkpointed.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// Checkpoint the WAL into the database file until the pool closes. Passive: it never blocks a
/// writer or a reader, and the log restarts from its beginning once a checkpoint has caught up.
/// (SQLite's own auto-checkpoint, turned off in [`Db::connect`], runs inside whichever commit
/// crosses its threshold and made that commit copy the log and fsync twice.)
async fn checkpoint_sqlite(pool: SqlitePool) {
    while !pool.is_closed() {
        tokio::time::sleep(CHECKPOINT_EVERY).await;
        let done = sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&pool)
            .await;
        if let Err(e) = done
            && !pool.is_closed()
        {
            tracing::warn!(error = %e, "SQLite WAL checkpoint failed; retrying");
        }
    }
}

impl Db {
    /// The statement that opens a write transaction: `BEGIN IMMEDIATE` on SQLite, `BEGIN` on
    /// PostgreSQL. Every transaction that writes starts with it (`pool.begin_with(db.begin_write())`;
    /// `Pool::begin` is refused by clippy.toml). On SQLite a deferred `BEGIN` takes its write
    /// lock only at the first write, and if another connection committed since the
    /// transaction's first read, SQLite cannot upgrade it: "database is locked" at once, without
    /// waiting out the busy timeout. `BEGIN IMMEDIATE` waits for the lock up front instead.
    pub const fn begin_write(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "BEGIN IMMEDIATE",
            Self::Postgres(_) => "BEGIN",
        }
    }

    /// Open a pool. SQLite files (and their directory, mode 0700) are created if missing, in WAL
    /// mode with `synchronous=FULL` (an accepted write survives power loss), foreign keys on, a
    /// busy timeout, and the WAL checkpointed by a background task (see [`checkpoint_sqlite`]).
    pub async fn connect(url: &DatabaseUrl) -> Result<Self, StorageError> {
        Self::connect_with(url, true).await
    }

    /// [`connect`](Self::connect), with or without the background checkpoint on SQLite.
    async fn connect_with(
        url: &DatabaseUrl,
        background_checkpoints: bool,
    ) -> Result<Self, StorageError> {
        let connect_err = |source| StorageError::Connect {
            url: url.redacted(),
            source,
        };
        match url.backend() {
            Backend::Sqlite => {
                let options = SqliteConnectOptions::from_str(url.expose())
                    .map_err(connect_err)?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .foreign_keys(true)
                    .busy_timeout(SQLITE_BUSY_TIMEOUT)
                    // Checkpoints run beside the writers (`checkpoint_sqlite`).
                    .pragma("wal_autocheckpoint", "0");
                prepare_sqlite_file(options.get_filename())?;
                // A connection still counting a transaction is closed, never handed out: after
                // SQLITE_FULL or an I/O error SQLite rolls the transaction back itself, sqlx's
                // own ROLLBACK then fails, and its count would refuse every later BEGIN.
                let pool = SqlitePoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .before_acquire(|conn, _| {
                        Box::pin(async move { Ok(!conn.is_in_transaction()) })
                    })
                    .connect_with(options)
                    .await
                    .map_err(connect_err)?;
                if background_checkpoints {
                    tokio::spawn(checkpoint_sqlite(pool.clone()));
                }
                Ok(Self::Sqlite(pool))
            }
            Backend::Postgres => {
                let options = PgConnectOptions::from_str(url.expose()).map_err(connect_err)?;
                let pool = PgPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .before_acquire(|conn, _| {
                        Box::pin(async move { Ok(!conn.is_in_transaction()) })
                    })
                    .connect_with(options)
                    .await
                    .map_err(connect_err)?;
                Ok(Self::Postgres(pool))
            }
        }
    }

    /// Open, check ownership and migrate: what every service does at start.
    /// The relay's SQLite log is checkpointed by the relay's writer and its own checkpointer
    /// (`keymesh_relay::store`), in step with its commits; a second checkpointer on the pool
    /// would flush the database file in the middle of the writer's log flushes.
    pub async fn open_for(service: ServiceName, url: &DatabaseUrl) -> Result<Self, StorageError> {
        let db = Self::connect_with(url, service != ServiceName::Relay).await?;
        db.migrate(service).await?;
        Ok(db)
    }

    /// The engine.
    pub fn backend(&self) -> Backend {
        match self {
            Self::Sqlite(_) => Backend::Sqlite,
            Self::Postgres(_) => Backend::Postgres,
        }
    }

    /// Apply the service's migrations, refusing a database that belongs to another service.
    /// Ownership is checked first, so a wrong URL never runs one service's migrations on
    /// another's tables.
    pub async fn migrate(&self, service: ServiceName) -> Result<(), StorageError> {
        if let Some(owner) = self.owner().await?
            && owner != service.as_str()
        {
            return Err(StorageError::WrongService {
                expected: service,
                found: owner,
            });
        }
        let migrate_err = |source| StorageError::Migrate { service, source };
        match self {
            Self::Sqlite(pool) => migrations::sqlite(service).run(pool).await,
            Self::Postgres(pool) => migrations::postgres(service).run(pool).await,
        }
        .map_err(migrate_err)?;
        self.claim(service).await
    }

    /// The service recorded as owner, if the ownership table exists.
    async fn owner(&self) -> Result<Option<String>, StorageError> {
        let table_exists = match self {
            Self::Sqlite(pool) => sqlx::query_as::<_, (String,)>(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'keymesh_service'",
            )
            .fetch_optional(pool)
            .await?
            .is_some(),
            Self::Postgres(pool) => sqlx::query_as::<_, (Option<String>,)>(
                "SELECT to_regclass('keymesh_service')::text",
            )
            .fetch_one(pool)
            .await?
            .0
            .is_some(),
        };
        if !table_exists {
            return Ok(None);
        }
        const OWNER: &str = "SELECT service FROM keymesh_service WHERE id = 1";
        let owner: Option<(String,)> =
            with_pool!(self, pool => sqlx::query_as(OWNER).fetch_optional(pool).await)?;
        Ok(owner.map(|(s,)| s))
    }

    async fn claim(&self, service: ServiceName) -> Result<(), StorageError> {
        const CLAIM: &str =
            "INSERT INTO keymesh_service (id, service) VALUES (1, $1) ON CONFLICT (id) DO NOTHING";
        with_pool!(self, pool => sqlx::query(CLAIM).bind(service.as_str()).execute(pool).await.map(drop))?;
        Ok(())
    }

    /// A cheap round trip, for readiness.
    pub async fn ping(&self) -> Result<(), StorageError> {
        with_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(drop))?;
        Ok(())
    }

    /// Close the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        with_pool!(self, pool => pool.close().await);
    }
}

/// Create the SQLite file's directory (0700) and the file itself (0600) before SQLite does, so
/// neither is readable by other users; SQLite gives its `-wal` and `-shm` files the database
/// file's mode.
fn prepare_sqlite_file(path: &std::path::Path) -> Result<(), StorageError> {
    let io_err = |source| StorageError::Directory {
        path: path.display().to_string(),
        source,
    };
    if path.as_os_str().is_empty() || path.as_os_str() == ":memory:" || path.exists() {
        return Ok(());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).map_err(io_err)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io_err)?;
        }
    }
    let mut file = std::fs::OpenOptions::new();
    file.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        file.mode(0o600);
    }
    match file.open(path) {
        Ok(_) => Ok(()),
        // Another process created it between the check and here: theirs stands.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::{testing::TestDb, *};

    #[test]
    fn urls_are_classified_and_redacted() {
        let pg = DatabaseUrl::parse("postgres://vault:s3cret@db:5432/vault").expect("pg");
        assert_eq!(pg.backend(), Backend::Postgres);
        assert_eq!(pg.redacted(), "postgres://vault:***@db:5432/vault");
        assert!(!format!("{pg:?}").contains("s3cret"));
        assert_eq!(
            DatabaseUrl::parse("sqlite://x.db")
                .expect("sqlite")
                .backend(),
            Backend::Sqlite
        );
        assert!(DatabaseUrl::parse("mysql://x").is_err());
    }

    #[tokio::test]
    async fn migrations_apply_and_are_idempotent_for_every_service() {
        for service in ServiceName::ALL {
            let test_db = TestDb::new().await;
            let db = Db::open_for(service, test_db.url()).await.expect("migrate");
            db.migrate(service).await.expect("second run is a no-op");
            db.ping().await.expect("ping");
            db.close().await;
        }
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn sqlite_files_are_private_to_the_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested/vault.db");
        let url = DatabaseUrl::parse(&format!("sqlite://{}", path.display())).expect("url");
        let db = Db::open_for(ServiceName::Vault, &url).await.expect("open");
        let mode =
            |p: &std::path::Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().expect("dir")), 0o700);
        let wal = path.with_file_name("vault.db-wal");
        if wal.exists() {
            assert_eq!(mode(&wal), 0o600);
        }
        db.close().await;
    }

    /// SQLite rolls a transaction back by itself on SQLITE_FULL; sqlx's own ROLLBACK then fails
    /// and its connection kept counting a transaction forever ("begin_with at non-zero
    /// transaction depth" on every later write, seen in the disk-full drill). Such a connection
    /// is now closed instead of handed out again.
    #[tokio::test]
    async fn a_disk_full_transaction_leaves_no_poisoned_connection_in_the_pool() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = DatabaseUrl::parse(&format!(
            "sqlite://{}",
            dir.path().join("full.db").display()
        ))
        .expect("url");
        let db = Db::connect(&url).await.expect("connect");
        let Db::Sqlite(pool) = &db else {
            unreachable!("a sqlite URL")
        };
        sqlx::query("CREATE TABLE t (b BLOB)")
            .execute(pool)
            .await
            .expect("table");
        {
            let mut conn = pool.acquire().await.expect("conn");
            // This connection's database cannot grow: the insert fails with SQLITE_FULL.
            sqlx::query("PRAGMA max_page_count = 8")
                .execute(&mut *conn)
                .await
                .expect("pragma");
            let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE")
                .await
                .expect("begin");
            let full = sqlx::query("INSERT INTO t VALUES (zeroblob(1000000))")
                .execute(&mut *tx)
                .await
                .expect_err("the database is full");
            assert!(full.to_string().contains("full"), "{full}");
        }
        // Every connection the pool hands out can start a transaction.
        let mut held = Vec::new();
        for _ in 0..8 {
            let mut conn = pool.acquire().await.expect("acquire");
            sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE")
                .await
                .expect("a clean connection")
                .rollback()
                .await
                .expect("rollback");
            held.push(conn);
        }
        drop(held);
        db.close().await;
    }

    #[tokio::test]
    async fn a_service_refuses_another_services_database() {
        let test_db = TestDb::new().await;
        let db = Db::open_for(ServiceName::Vault, test_db.url())
            .await
            .expect("vault");
        db.close().await;
        let relay = Db::connect(test_db.url()).await.expect("connect");
        let err = relay
            .migrate(ServiceName::Relay)
            .await
            .expect_err("relay must refuse the vault database");
        assert!(matches!(err, StorageError::WrongService { .. }), "{err}");
        relay.close().await;
    }

    #[tokio::test]
    async fn concurrent_tests_get_isolated_databases() {
        async fn write_and_count(marker: &'static str) -> (String, i64) {
            let test_db = TestDb::new().await;
            let db = Db::open_for(ServiceName::Relay, test_db.url())
                .await
                .expect("open");
            let count = crate::with_pool!(&db, pool => {
                sqlx::query("CREATE TABLE probe (v TEXT)").execute(pool).await.expect("create");
                sqlx::query("INSERT INTO probe VALUES ($1)").bind(marker).execute(pool).await.expect("insert");
                tokio::task::yield_now().await;
                sqlx::query_as::<_, (i64,)>("SELECT COUNT(*) FROM probe").fetch_one(pool).await.expect("count").0
            });
            db.close().await;
            (test_db.url().redacted(), count)
        }
        let (a, b) = tokio::join!(write_and_count("a"), write_and_count("b"));
        assert_ne!(a.0, b.0, "two tests must not share a database");
        assert_eq!((a.1, b.1), (1, 1), "each test sees only its own rows");
    }
}

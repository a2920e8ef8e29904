//! A fresh database per test, on the backend the test run selects.
//!
//! `KEYMESH_TEST_BACKEND=sqlite` (default) gives each test a new SQLite file in its own
//! temporary directory; `KEYMESH_TEST_BACKEND=postgres` creates a new database on the server at
//! `KEYMESH_TEST_POSTGRES_URL` (default `postgres://root@127.0.0.1:5432/test`) and drops it when
//! the test ends. A backend that cannot be reached fails the test with a message saying what is
//! missing: it never skips.

use std::str::FromStr;

use sqlx::{ConnectOptions, Connection, postgres::PgConnectOptions};

use super::{Backend, DatabaseUrl};

/// Environment variable selecting the backend for the whole test run.
pub const BACKEND_VAR: &str = "KEYMESH_TEST_BACKEND";
/// Environment variable with an administrative PostgreSQL URL (may create databases).
pub const POSTGRES_URL_VAR: &str = "KEYMESH_TEST_POSTGRES_URL";
const DEFAULT_POSTGRES_URL: &str = "postgres://root@127.0.0.1:5432/test";

/// The backend this test run uses.
pub fn selected_backend() -> Backend {
    match std::env::var(BACKEND_VAR).as_deref() {
        Err(_) | Ok("") | Ok("sqlite") => Backend::Sqlite,
        Ok("postgres") => Backend::Postgres,
        Ok(other) => panic!("{BACKEND_VAR}={other:?}: expected sqlite or postgres"),
    }
}

fn admin_url() -> String {
    std::env::var(POSTGRES_URL_VAR).unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned())
}

/// A database that exists for one test.
#[derive(Debug)]
pub struct TestDb {
    url: DatabaseUrl,
    cleanup: Cleanup,
}

#[derive(Debug)]
enum Cleanup {
    /// The directory is removed when dropped.
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    /// The database is dropped on the admin connection.
    Postgres { admin_url: String, name: String },
}

impl TestDb {
    /// A fresh, empty database on the selected backend.
    pub async fn new() -> Self {
        match selected_backend() {
            Backend::Sqlite => Self::sqlite(),
            Backend::Postgres => Self::postgres().await,
        }
    }

    /// A fresh SQLite file, whatever the selected backend.
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("create a temporary directory for a test database");
        let url = format!("sqlite://{}", dir.path().join("test.db").display());
        Self {
            url: DatabaseUrl::parse(&url).expect("sqlite url"),
            cleanup: Cleanup::Sqlite(dir),
        }
    }

    /// A fresh PostgreSQL database, whatever the selected backend.
    pub async fn postgres() -> Self {
        let admin_url = admin_url();
        let name = format!("keymesh_test_{}", uuid::Uuid::new_v4().simple());
        let options = PgConnectOptions::from_str(&admin_url)
            .unwrap_or_else(|e| panic!("{POSTGRES_URL_VAR}={admin_url:?} is not a valid URL: {e}"));
        let mut admin = options.connect().await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is not reachable at {admin_url} ({e}). Start it (./scripts/test does) \
                 or point {POSTGRES_URL_VAR} at a server where this user may CREATE DATABASE."
            )
        });
        // The name is generated above from hex digits only; identifiers cannot be bound.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name} failed on {admin_url}: {e}"));
        let _ = admin.close().await;
        let url = options.database(&name).to_url_lossy().to_string();
        Self {
            url: DatabaseUrl::parse(&url).expect("postgres url"),
            cleanup: Cleanup::Postgres { admin_url, name },
        }
    }

    /// The URL to connect to.
    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    /// The URL in clear, to hand to a child process under test.
    pub fn url_for_process(&self) -> String {
        self.url.expose().to_owned()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Cleanup::Postgres { admin_url, name } = &self.cleanup else {
            return;
        };
        let (admin_url, owned_name) = (admin_url.clone(), name.clone());
        // Drop runs inside the test's runtime, which cannot be blocked on: use a thread with
        // its own small runtime and wait for it, so no database outlives its test.
        let handle = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime for test database cleanup");
            runtime.block_on(async move {
                let options = PgConnectOptions::from_str(&admin_url).ok()?;
                let mut admin = options.connect().await.ok()?;
                let sql = format!("DROP DATABASE IF EXISTS {owned_name} WITH (FORCE)");
                let dropped = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&mut admin)
                    .await;
                let _ = admin.close().await;
                dropped.ok()
            })
        });
        if handle.join().ok().flatten().is_none() {
            eprintln!("warning: could not drop test database {name}");
        }
    }
}

//! Migrations embedded at compile time from `migrations/<service>/<sqlite|postgres>/`.

use sqlx::migrate::Migrator;

use crate::config::ServiceName;

static MANAGEMENT_SQLITE: Migrator = sqlx::migrate!("../migrations/management/sqlite");
static MANAGEMENT_POSTGRES: Migrator = sqlx::migrate!("../migrations/management/postgres");
static VAULT_SQLITE: Migrator = sqlx::migrate!("../migrations/vault/sqlite");
static VAULT_POSTGRES: Migrator = sqlx::migrate!("../migrations/vault/postgres");
static RELAY_SQLITE: Migrator = sqlx::migrate!("../migrations/relay/sqlite");
static RELAY_POSTGRES: Migrator = sqlx::migrate!("../migrations/relay/postgres");

/// The SQLite migrations of a service.
pub(super) fn sqlite(service: ServiceName) -> &'static Migrator {
    match service {
        ServiceName::Management => &MANAGEMENT_SQLITE,
        ServiceName::Vault => &VAULT_SQLITE,
        ServiceName::Relay => &RELAY_SQLITE,
    }
}

/// The PostgreSQL migrations of a service.
pub(super) fn postgres(service: ServiceName) -> &'static Migrator {
    match service {
        ServiceName::Management => &MANAGEMENT_POSTGRES,
        ServiceName::Vault => &VAULT_POSTGRES,
        ServiceName::Relay => &RELAY_POSTGRES,
    }
}

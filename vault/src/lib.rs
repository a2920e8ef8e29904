//! keymesh-vault: group vaults with encrypted secrets, passphrase or threshold unlock,
//! capability tokens with a ceiling, delegation and revocation.

pub mod auth;
pub mod ceremony;
pub mod config;
pub mod issuance;
pub mod metrics;
pub mod routes;
pub mod sessions;
pub mod state;
pub mod store;

pub use config::VaultConfig;
pub use keymesh_core::{capability::revocation, ident};
pub use state::VaultState;

use axum::Router;
use keymesh_core::{ServiceContext, storage::StorageError};

/// Open the vault over a service context and return its full router.
pub async fn router(
    ctx: ServiceContext,
    config: VaultConfig,
) -> Result<(Router, VaultState), StorageError> {
    let state = VaultState::open(ctx.clone(), config).await?;
    Ok((ctx.router(routes::routes(state.clone())), state))
}

/// The vault's OpenAPI document (`docs/openapi/vault.json`, `keymesh openapi vault`): every
/// route of [`routes::api`] plus the health and metrics routes of the common stack.
pub fn openapi() -> utoipa::openapi::OpenApi {
    keymesh_core::openapi::document(
        "Keymesh vault",
        env!("CARGO_PKG_VERSION"),
        "The group vault: secrets sealed at rest, explicit unlock by passphrase or threshold \
         shares, capability tokens and their revocation feed. Every error uses the coded body \
         of docs/errors.md; docs/vault.md describes the service.",
        &[
            ("nodes", "Nodes as management registers them."),
            (
                "tokens",
                "Capability tokens: mint, refresh, delegate, revoke, root keys.",
            ),
            (
                "revocations",
                "The ordered revocation feed that relays and replicas follow.",
            ),
            ("vaults", "A group vault's state and session."),
            (
                "ceremonies",
                "Key ceremonies: init, unlock and rekey, by passphrase or shares.",
            ),
            ("secrets", "Secrets, for nodes holding the rights."),
            ("audit", "The vault's hash-chained audit log."),
        ],
        routes::api().into_openapi(),
    )
}

//! keymesh-vault: group vaults with encrypted secrets, passphrase or threshold unlock,
//! capability tokens with a ceiling, delegation and revocation.

pub mod auth;
pub mod ceremony;
pub mod config;
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

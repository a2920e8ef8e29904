//! The vault's HTTP API.

pub mod secrets;
pub mod tokens;
pub mod vaults;

use axum::{
    Json, Router,
    extract::State,
    routing::{get, post, put},
};
use keymesh_core::{ApiError, audit};

use crate::{auth::Management, state::VaultState};

/// `GET /v1/audit/verify` (management): walk the vault's audit chain.
async fn verify_audit(
    State(state): State<VaultState>,
    _: Management,
) -> Result<Json<audit::VerifyReport>, ApiError> {
    audit::verify(state.store.db())
        .await
        .map(Json)
        .map_err(ApiError::internal)
}

/// `GET /v1/audit` query.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditPage {
    #[serde(default)]
    after_seq: i64,
    limit: Option<i64>,
}

/// `GET /v1/audit?after_seq=&limit=` (management): the vault's audit records after a sequence
/// number, oldest first, at most 1000 (management copies them into the central log).
async fn audit_records(
    State(state): State<VaultState>,
    _: Management,
    axum::extract::Query(q): axum::extract::Query<AuditPage>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let limit = q.limit.unwrap_or(500);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::with_message(
            keymesh_core::ErrorCode::InvalidRequest,
            "limit must be between 1 and 1000",
        ));
    }
    let records = audit::query(
        state.store.db(),
        &audit::AuditQuery::default(),
        q.after_seq,
        limit,
    )
    .await
    .map_err(ApiError::internal)?;
    Ok(Json(serde_json::json!({ "records": records })))
}

/// Every vault route (the common stack adds health, metrics and the layers).
pub fn routes(state: VaultState) -> Router {
    Router::new()
        .route("/v1/nodes/{node_id}", put(tokens::put_node))
        .route("/v1/tokens", post(tokens::mint))
        .route("/v1/tokens/refresh", post(tokens::refresh))
        .route("/v1/tokens/delegate", post(tokens::delegate))
        .route("/v1/tokens/revoke", post(tokens::revoke_own))
        .route("/v1/tokens/keys", get(tokens::keys))
        .route("/v1/tokens/keys/rotate", post(tokens::rotate))
        .route("/v1/revocations", get(tokens::feed).post(tokens::revoke))
        .route("/v1/revocations/snapshot", get(tokens::snapshot))
        .route("/v1/vaults/{group}", get(vaults::status))
        .route("/v1/vaults/{group}/lock", post(vaults::lock))
        .route("/v1/vaults/{group}/extend", post(vaults::extend))
        .route("/v1/vaults/{group}/ceremonies", post(vaults::open_ceremony))
        .route("/v1/ceremonies/{id}/init", post(vaults::init))
        .route("/v1/ceremonies/{id}/rekey", post(vaults::rekey))
        .route(
            "/v1/ceremonies/{id}/passphrase",
            post(vaults::unlock_passphrase),
        )
        .route("/v1/ceremonies/{id}/shares", post(vaults::unlock_share))
        .route("/v1/vaults/{group}/secrets", get(secrets::list))
        .route(
            "/v1/vaults/{group}/secrets/{*path}",
            get(secrets::read)
                .put(secrets::write)
                .delete(secrets::delete),
        )
        .route("/v1/audit", get(audit_records))
        .route("/v1/audit/verify", get(verify_audit))
        .with_state(state)
}

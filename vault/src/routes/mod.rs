//! The vault's HTTP API.

pub mod secrets;
pub mod tokens;
pub mod vaults;

use axum::{Json, Router, extract::State};
use keymesh_core::{ApiError, audit, openapi::ServiceErrors};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{auth::Management, state::VaultState};

/// Walk the vault's audit chain and name the first broken link.
#[utoipa::path(
    get,
    path = "/v1/audit/verify",
    tag = "audit",
    responses((status = 200, body = audit::VerifyReport), ServiceErrors),
    security(("management_key" = [])),
)]
async fn verify_audit(
    State(state): State<VaultState>,
    _: Management,
) -> Result<Json<audit::VerifyReport>, ApiError> {
    audit::verify(state.store.db())
        .await
        .map(Json)
        .map_err(ApiError::internal)
}

/// The vault's audit records after a sequence number, oldest first.
///
/// At most 1000 a page; management copies them into the central log.
#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "audit",
    params(audit::AuditPage),
    responses(
        (status = 200, body = audit::AuditRecords),
        ServiceErrors,
    ),
    security(("management_key" = [])),
)]
async fn audit_records(
    State(state): State<VaultState>,
    _: Management,
    axum::extract::Query(q): axum::extract::Query<audit::AuditPage>,
) -> Result<Json<audit::AuditRecords>, ApiError> {
    audit::page(state.store.db(), &q).await.map(Json)
}

/// Every vault route with its documentation: `routes!` takes handlers annotated with
/// `#[utoipa::path]`, so the router and the OpenAPI document are built from this one list.
pub fn api() -> OpenApiRouter<VaultState> {
    OpenApiRouter::default()
        .routes(routes!(tokens::put_node))
        .routes(routes!(tokens::identity))
        .routes(routes!(tokens::mint))
        .routes(routes!(tokens::refresh))
        .routes(routes!(tokens::delegate))
        .routes(routes!(tokens::revoke_own))
        .routes(routes!(tokens::keys))
        .routes(routes!(tokens::rotate))
        .routes(routes!(tokens::revoke_key))
        .routes(routes!(tokens::feed, tokens::revoke))
        .routes(routes!(tokens::snapshot))
        .routes(routes!(vaults::status))
        .routes(routes!(vaults::lock))
        .routes(routes!(vaults::extend))
        .routes(routes!(vaults::open_ceremony))
        .routes(routes!(vaults::init))
        .routes(routes!(vaults::rekey))
        .routes(routes!(vaults::unlock_passphrase))
        .routes(routes!(vaults::unlock_share))
        .routes(routes!(secrets::list))
        .routes(routes!(secrets::read, secrets::write, secrets::delete))
        .routes(routes!(audit_records))
        .routes(routes!(verify_audit))
}

/// Every vault route (the common stack adds health, metrics and the layers).
pub fn routes(state: VaultState) -> Router {
    Router::from(api()).with_state(state)
}

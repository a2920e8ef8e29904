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

/// `GET /v1/audit` query.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct AuditPage {
    /// Records after this sequence number.
    #[serde(default)]
    after_seq: i64,
    /// At most this many records, 1 to 1000 (default 500).
    limit: Option<i64>,
}

/// `GET /v1/audit`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
struct AuditRecords {
    /// Oldest first, at most `limit`: `{seq, at_ms, actor, action, target, outcome, details
    /// (JSON text), prev_hash, hash}` each.
    #[schema(value_type = Vec<Object>)]
    records: Vec<audit::AuditRecord>,
}

/// The vault's audit records after a sequence number, oldest first.
///
/// At most 1000 a page; management copies them into the central log.
#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "audit",
    params(AuditPage),
    responses(
        (status = 200, body = AuditRecords),
        ServiceErrors,
    ),
    security(("management_key" = [])),
)]
async fn audit_records(
    State(state): State<VaultState>,
    _: Management,
    axum::extract::Query(q): axum::extract::Query<AuditPage>,
) -> Result<Json<AuditRecords>, ApiError> {
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
    Ok(Json(AuditRecords { records }))
}

/// Every vault route with its documentation: `routes!` takes handlers annotated with
/// `#[utoipa::path]`, so the router and the OpenAPI document are built from this one list.
pub fn api() -> OpenApiRouter<VaultState> {
    OpenApiRouter::default()
        .routes(routes!(tokens::put_node))
        .routes(routes!(tokens::mint))
        .routes(routes!(tokens::refresh))
        .routes(routes!(tokens::delegate))
        .routes(routes!(tokens::revoke_own))
        .routes(routes!(tokens::keys))
        .routes(routes!(tokens::rotate))
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

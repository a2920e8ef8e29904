//! The central audit log over HTTP: search it, verify its chain, and export it as JSON lines
//! once an approval allows (`audit.export`).

use axum::{
    Json,
    body::Body,
    extract::{Path, Query, State},
    response::{IntoResponse, Response},
};
use futures_util::stream;
use http::header;
use keymesh_core::error::ErrorBody;
use keymesh_core::openapi::SessionErrors;
use keymesh_core::{
    ApiError, ErrorCode,
    audit::{self, AuditEvent, AuditQuery, AuditRecord, Outcome},
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{
    auth::Caller,
    policy::Operation,
    rbac::Action,
    state::{ManagementState, page_limit},
};

/// Records per page of an export.
const EXPORT_PAGE: i64 = 1000;

/// A record as the API shows it: `details` as JSON, not text.
pub fn record_json(r: &AuditRecord) -> Value {
    json!(RecordView::from(r))
}

/// An audit record as readers get it: `details` as JSON rather than the text the hash covers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecordView {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// Unix time in milliseconds.
    pub at_ms: i64,
    /// Who (`user:ID`, `node:ID`, `ip:…`, `service:…`).
    pub actor: String,
    /// What (e.g. `node.enroll`).
    pub action: String,
    /// On what.
    pub target: String,
    /// `success`, `denied` or `failure`.
    pub outcome: String,
    /// The details object (text when it is not JSON).
    #[schema(value_type = Object)]
    pub details: Value,
    /// The previous record's hash (hex).
    pub prev_hash: String,
    /// This record's hash (hex).
    pub hash: String,
}

impl From<&AuditRecord> for RecordView {
    fn from(r: &AuditRecord) -> Self {
        Self {
            seq: r.seq,
            at_ms: r.at_ms,
            actor: r.actor.clone(),
            action: r.action.clone(),
            target: r.target.clone(),
            outcome: r.outcome.clone(),
            details: serde_json::from_str(&r.details)
                .unwrap_or_else(|_| Value::String(r.details.clone())),
            prev_hash: r.prev_hash.clone(),
            hash: r.hash.clone(),
        }
    }
}

/// `GET /v1/audit`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecordPage {
    /// Oldest first.
    pub records: Vec<RecordView>,
    /// Ask for the next page with `after_seq` = this; `null`: this was the last page.
    pub next_after_seq: Option<i64>,
}

/// `GET /v1/audit/verify`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Verified {
    /// Records checked.
    pub checked: u64,
    /// The first record whose link is broken, if any.
    pub first_broken: Option<i64>,
    /// Why it is broken.
    pub reason: Option<String>,
    /// The signed checkpoints against the chain.
    pub checkpoints: crate::checkpoints::CheckpointReport,
}

/// `GET /v1/audit/checkpoints`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CheckpointList {
    /// The checkpoint signing key (Ed25519, hex).
    pub public_key: String,
    /// Its id.
    pub key_id: String,
    /// Newest first.
    pub checkpoints: Vec<crate::checkpoints::Checkpoint>,
}

/// `GET /v1/audit` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    outcome: String,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
    /// Records after this sequence number (paging).
    #[serde(default)]
    after_seq: i64,
    /// 1..=1000, default 100.
    limit: Option<i64>,
}

fn check_filters(q: &AuditQuery) -> Result<(), ApiError> {
    let long = [&q.actor, &q.action, &q.target, &q.outcome]
        .iter()
        .any(|f| f.len() > 256);
    if long || !matches!(q.outcome.as_str(), "" | "success" | "denied" | "failure") {
        return Err(ApiError::with_message(
            ErrorCode::InvalidRequest,
            "filters are at most 256 characters; outcome is success, denied or failure",
        ));
    }
    Ok(())
}

/// `GET /v1/audit` (audit:read): records oldest first, filtered by exact actor, action, target
/// and outcome and a time range; page with `after_seq` (the answer's `next_after_seq`).
#[utoipa::path(
    get,
    path = "/v1/audit",
    operation_id = "audit_search",
    tag = "audit",
    params(SearchQuery),
    responses(
        (status = 200, body = RecordPage),
        SessionErrors,
    ),
    security(("session" = []), ("session_cookie" = [], "csrf" = [])),
)]
pub async fn search(
    State(state): State<ManagementState>,
    caller: Caller,
    Query(q): Query<SearchQuery>,
) -> Result<Json<RecordPage>, ApiError> {
    caller.require(&state, Action::AuditRead)?;
    let limit = page_limit(q.limit, 1000)?;
    let filters = AuditQuery {
        actor: q.actor,
        action: q.action,
        target: q.target,
        outcome: q.outcome,
        since_ms: q.since_ms,
        until_ms: q.until_ms,
    };
    check_filters(&filters)?;
    let records = audit::query(state.store.db(), &filters, q.after_seq, limit)
        .await
        .map_err(ApiError::internal)?;
    let next = (i64::try_from(records.len()).unwrap_or(i64::MAX) == limit)
        .then(|| records.last().map(|r| r.seq))
        .flatten();
    Ok(Json(RecordPage {
        records: records.iter().map(RecordView::from).collect(),
        next_after_seq: next,
    }))
}

/// `GET /v1/audit/verify` (audit:read): walk the chain; the first broken link, if any; and
/// the first checkpoint that does not hold.
#[utoipa::path(
    get,
    path = "/v1/audit/verify",
    operation_id = "audit_verify",
    tag = "audit",
    responses(
        (status = 200, body = Verified),
        SessionErrors,
    ),
    security(("session" = []), ("session_cookie" = [], "csrf" = [])),
)]
pub async fn verify(
    State(state): State<ManagementState>,
    caller: Caller,
) -> Result<Json<Verified>, ApiError> {
    caller.require(&state, Action::AuditRead)?;
    let report = audit::verify(state.store.db())
        .await
        .map_err(ApiError::internal)?;
    let checkpoints = crate::checkpoints::verify(state.store.db(), &state.checkpoints.public())
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(Verified {
        checked: report.checked,
        first_broken: report.first_broken,
        reason: report.reason,
        checkpoints,
    }))
}

/// `GET /v1/audit/checkpoints?limit=` (audit:read): the checkpoint key and the newest
/// checkpoints, to keep a copy elsewhere.
#[utoipa::path(
    get,
    path = "/v1/audit/checkpoints",
    operation_id = "audit_checkpoints",
    tag = "audit",
    params(CheckpointQuery),
    responses(
        (status = 200, body = CheckpointList),
        SessionErrors,
    ),
    security(("session" = []), ("session_cookie" = [], "csrf" = [])),
)]
pub async fn checkpoints(
    State(state): State<ManagementState>,
    caller: Caller,
    Query(q): Query<CheckpointQuery>,
) -> Result<Json<CheckpointList>, ApiError> {
    caller.require(&state, Action::AuditRead)?;
    let limit = page_limit(q.limit, 1000)?;
    let list = crate::checkpoints::list(state.store.db(), limit)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(CheckpointList {
        public_key: hex::encode(state.checkpoints.public().as_bytes()),
        key_id: state.checkpoints.key_id(),
        checkpoints: list,
    }))
}

/// `GET /v1/audit/checkpoints` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CheckpointQuery {
    /// 1..=1000, default 100.
    limit: Option<i64>,
}

/// Check an export request's filters (its `params`).
pub fn export_params(filters: Option<AuditQuery>) -> Result<Value, ApiError> {
    let filters = filters.unwrap_or_default();
    check_filters(&filters)?;
    Ok(json!({ "filters": filters }))
}

/// `POST /v1/approvals/{id}/export` (audit:export, the requester of an approved
/// `audit.export`): the matching records as JSON lines, once.
#[utoipa::path(
    post,
    path = "/v1/approvals/{id}/export",
    operation_id = "audit_export",
    tag = "audit",
    params(("id" = String, Path, description = "The approval request's id.")),
    responses(
        (status = 200, body = String, content_type = "application/x-ndjson", description = "One audit record (as `GET /v1/audit` gives them) per line."),
        (status = 409, body = ErrorBody, description = "`approval_pending` or `approval_decided`."),
        (status = 410, body = ErrorBody, description = "`approval_expired`."),
        SessionErrors,
    ),
    security(("session" = []), ("session_cookie" = [], "csrf" = [])),
)]
pub async fn export(
    State(state): State<ManagementState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(&state, Action::AuditExport)?;
    let params =
        crate::approvals::execute_own(&state, &caller, &id, Operation::AuditExport).await?;
    let filters: AuditQuery =
        serde_json::from_value(params["filters"].clone()).map_err(ApiError::internal)?;
    state
        .audit_quiet(
            AuditEvent::new(
                caller.actor(),
                "audit.export",
                format!("approval:{id}"),
                Outcome::Success,
            )
            .with_details(json!({ "filters": filters })),
        )
        .await;
    let db = state.store.db().clone();
    let lines = stream::unfold(Some(0_i64), move |after| {
        let (db, filters) = (db.clone(), filters.clone());
        async move {
            let after = after?;
            match audit::query(&db, &filters, after, EXPORT_PAGE).await {
                Ok(page) if page.is_empty() => None,
                Ok(page) => {
                    let next = page.last().map(|r| r.seq);
                    let mut text = String::new();
                    for r in &page {
                        text.push_str(&record_json(r).to_string());
                        text.push('\n');
                    }
                    let more = i64::try_from(page.len()).unwrap_or(0) == EXPORT_PAGE;
                    Some((Ok::<_, std::io::Error>(text), next.filter(|_| more)))
                }
                Err(e) => {
                    tracing::error!(error = %keymesh_core::error::error_chain(&e), "audit export stopped");
                    Some((Err(std::io::Error::other("audit export stopped")), None))
                }
            }
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}

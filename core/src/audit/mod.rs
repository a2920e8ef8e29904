//! The tamper-evident audit log: an append-only hash chain.
//!
//! Each record's hash covers its own fields and the previous record's hash, so altering,
//! removing or reordering any record breaks every link after it, and [`verify`] names the first
//! broken one. Records are appended by one writer task per process with group commit: callers
//! wait until their record is durable (or fail after a bounded time, so a sensitive operation
//! whose audit record cannot be written fails closed) while one transaction carries every record
//! that queued meanwhile. The chain head lives in a one-row table updated in the same
//! transaction, which serialises appends across replicas as well.

mod chain;
mod writer;

pub use chain::{AuditQuery, AuditRecord, GENESIS, VerifyReport, query, record_hash, verify};
pub use writer::{AuditError, AuditLog};

use crate::{ApiError, ErrorCode, storage::Db};

/// `GET /v1/audit` query (the vault's and the relay's, which management copies from).
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditPage {
    /// Records after this sequence number.
    #[serde(default)]
    pub after_seq: i64,
    /// At most this many records, 1 to 1000 (default 500).
    pub limit: Option<i64>,
}

/// `GET /v1/audit`: a page of the chain.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct AuditRecords {
    /// Oldest first, at most `limit`.
    pub records: Vec<AuditRecord>,
}

/// The page of the chain `GET /v1/audit` answers: `invalid_request` for a limit out of range.
pub async fn page(db: &Db, page: &AuditPage) -> Result<AuditRecords, ApiError> {
    let limit = page.limit.unwrap_or(500);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::with_message(
            ErrorCode::InvalidRequest,
            "limit must be between 1 and 1000",
        ));
    }
    let records = query(db, &AuditQuery::default(), page.after_seq, limit)
        .await
        .map_err(ApiError::internal)?;
    Ok(AuditRecords { records })
}

use serde::{Deserialize, Serialize};

/// How an audited operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Done.
    Success,
    /// Refused by policy (bad credential, forbidden, rate limited...).
    Denied,
    /// Failed for another reason.
    Failure,
}

impl Outcome {
    /// Wire and storage form.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Denied => "denied",
            Outcome::Failure => "failure",
        }
    }
}

/// One event to record. Never put a token, code, passphrase, share or secret value in any field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    /// Who: `node:ID`, `user:ID`, `service:management`, `ip:ADDR`.
    pub actor: String,
    /// What: `secret.read`, `vault.unlock`, `token.mint`...
    pub action: String,
    /// On what: `vault:GROUP/PATH`, `token:ID`...
    pub target: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Extra context as a JSON object.
    pub details: serde_json::Value,
}

impl AuditEvent {
    /// An event with empty details.
    pub fn new(
        actor: impl Into<String>,
        action: impl Into<String>,
        target: impl Into<String>,
        outcome: Outcome,
    ) -> Self {
        Self {
            actor: actor.into(),
            action: action.into(),
            target: target.into(),
            outcome,
            details: serde_json::Value::Object(serde_json::Map::new()),
        }
    }

    /// With details.
    #[must_use]
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

#[cfg(test)]
mod tests;

//! Other services' audit events in the central chain: management copies the vault's and the
//! relay's audit logs in order, each record appended with its origin (`details.service`, the
//! service's own `seq`, time and record hash, so the chains can be cross-checked).

use keymesh_core::{
    audit::{AuditEvent, Outcome},
    with_pool,
};
use serde_json::{Value, json};

use crate::{state::ManagementState, vault::VaultClient};

/// Records fetched per round.
const BATCH: i64 = 500;

fn outcome(text: &str) -> Outcome {
    match text {
        "success" => Outcome::Success,
        "denied" => Outcome::Denied,
        _ => Outcome::Failure,
    }
}

/// Copy `service`'s records (read through `client`) after the last copied one; how many were
/// copied. Stops at the first record that cannot be appended (the next round resumes there).
/// One copy runs at a time; with several management replicas each would copy (run the copy on
/// one, or accept duplicates that carry the same `seq` and `hash`).
pub async fn import(
    state: &ManagementState,
    service: &str,
    client: &VaultClient,
) -> Result<u64, String> {
    const LAST: &str = "SELECT last_seq FROM audit_imports WHERE service = $1";
    const SAVE: &str = "INSERT INTO audit_imports (service, last_seq) VALUES ($1, $2) \
         ON CONFLICT (service) DO UPDATE SET last_seq = excluded.last_seq";
    let _one_at_a_time = state.import_lock.lock().await;
    let db = state.store.db();
    let last: Option<i64> =
        with_pool!(db, pool => sqlx::query_scalar(LAST).bind(service).fetch_optional(pool).await)
            .map_err(|e| e.to_string())?;
    let mut last = last.unwrap_or(0);
    let page = client
        .audit_after(last, BATCH)
        .await
        .map_err(|e| e.to_string())?;
    let mut copied = 0;
    for r in page.records {
        if r.seq != last + 1 {
            // The service's log has a hole: say so in the central log, then go on.
            state
                .audit
                .record(
                    AuditEvent::new(
                        "service:management",
                        "audit.import.gap",
                        format!("service:{service}"),
                        Outcome::Failure,
                    )
                    .with_details(json!({ "expected_seq": last + 1, "got_seq": r.seq })),
                )
                .await
                .map_err(|e| e.to_string())?;
        }
        let details: Value =
            serde_json::from_str(&r.details).unwrap_or(Value::String(r.details.clone()));
        state
            .audit
            .record(
                AuditEvent::new(r.actor, r.action, r.target, outcome(&r.outcome)).with_details(json!({
                    "service": service, "seq": r.seq, "at_ms": r.at_ms, "hash": r.hash, "details": details,
                })),
            )
            .await
            .map_err(|e| e.to_string())?;
        last = r.seq;
        with_pool!(db, pool => sqlx::query(SAVE).bind(service).bind(last).execute(pool).await.map(drop))
            .map_err(|e| e.to_string())?;
        copied += 1;
    }
    Ok(copied)
}

//! The vault's own metrics, counted from the events it audits: an operation is counted once
//! its audit record is durable (the same moment it takes effect), so the metrics and the audit
//! log never disagree.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
};

use keymesh_core::{
    audit::{AuditEvent, Outcome},
    metrics::Metrics,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UnlockResult {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

/// Counters of vault operations.
#[derive(Clone, Debug, Default)]
pub struct VaultMetrics {
    unlocks: Family<UnlockResult, Counter>,
    locks: Family<Reason, Counter>,
    minted: Counter,
    refreshed: Counter,
    revoked: Counter,
}

impl VaultMetrics {
    /// Create and register with the service's registry.
    pub fn register(registry: &Metrics) -> Self {
        let m = Self::default();
        for result in ["success", "failure"] {
            let _ = m.unlocks.get_or_create(&UnlockResult { result });
        }
        for reason in ["requested", "expired"] {
            let _ = m.locks.get_or_create(&Reason { reason });
        }
        registry.register(
            "vault_unlocks",
            "Unlock attempts, by result (success: the vault opened; failure: a wrong passphrase, or shares that do not reconstruct the key)",
            m.unlocks.clone(),
        );
        registry.register(
            "vault_locks",
            "Vaults locked, by reason (requested: by management; expired: the session ran out)",
            m.locks.clone(),
        );
        registry.register(
            "vault_tokens_minted",
            "Capability tokens minted",
            m.minted.clone(),
        );
        registry.register(
            "vault_tokens_refreshed",
            "Capability tokens refreshed",
            m.refreshed.clone(),
        );
        registry.register(
            "vault_tokens_revoked",
            "Revocations appended to the feed (a token, a node, a group or a grant)",
            m.revoked.clone(),
        );
        m
    }

    /// The counter an audited event's operation counts in, if any.
    pub fn counter_for(&self, event: &AuditEvent) -> Option<Counter> {
        let success = event.outcome == Outcome::Success;
        match event.action.as_str() {
            "vault.unlock" => {
                let result = if success { "success" } else { "failure" };
                Some(self.unlocks.get_or_create(&UnlockResult { result }).clone())
            }
            // A wrong passphrase (unlock, rekey or passphrase change).
            "vault.passphrase" if !success => Some(
                self.unlocks
                    .get_or_create(&UnlockResult { result: "failure" })
                    .clone(),
            ),
            "vault.lock" if success => {
                let reason = if event.details["reason"] == "expired" {
                    "expired"
                } else {
                    "requested"
                };
                Some(self.locks.get_or_create(&Reason { reason }).clone())
            }
            "token.mint" if success => Some(self.minted.clone()),
            "token.refresh" if success => Some(self.refreshed.clone()),
            "token.revoke" if success => Some(self.revoked.clone()),
            _ => None,
        }
    }
}

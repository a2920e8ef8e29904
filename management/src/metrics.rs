//! Management's own metrics: sign-ins, approvals, live event streams, audit imports.
//! (Mail counters live with the mailer, audit write failures and jobs in keymesh-core.)

use std::sync::Arc;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
};

use keymesh_core::metrics::Metrics;

use crate::policy::Operation;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SignInResult {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Transition {
    operation: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Source {
    source: &'static str,
}

/// Management's counters and gauges.
#[derive(Clone, Debug, Default)]
pub struct ManagementMetrics {
    sign_ins: Family<SignInResult, Counter>,
    approvals: Family<Transition, Counter>,
    pending: Family<OperationLabel, Gauge>,
    import_lag: Family<Source, Gauge>,
}

/// How a sign-in attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignIn {
    /// A session was created.
    Success,
    /// A wrong code or an unusable link.
    Failure,
    /// Refused by the per-address or per-IP sign-in limits.
    RateLimited,
}

impl ManagementMetrics {
    /// Create and register with the service's registry; `sse_clients` counts the open
    /// approval event streams at each scrape.
    pub fn register(
        registry: &Metrics,
        sse_clients: impl Fn() -> usize + Send + Sync + 'static,
    ) -> Arc<Self> {
        let m = Self::default();
        registry.register(
            "management_sign_ins",
            "Sign-in attempts, by result (success: a session was created; failure: a wrong code or unusable link; rate_limited)",
            m.sign_ins.clone(),
        );
        registry.register(
            "management_approvals",
            "Approval requests entering a state, by operation (requested, approved, denied, executed)",
            m.approvals.clone(),
        );
        registry.register(
            "management_approvals_pending",
            "Approval requests waiting for a decision and not expired, by operation (refreshed every few seconds)",
            m.pending.clone(),
        );
        registry.register(
            "management_audit_import_lag_seconds",
            "Seconds since management last copied a service's audit log successfully, by source (vault, relay)",
            m.import_lag.clone(),
        );
        registry.register_fn(
            "management_sse_clients",
            "Open approval event streams (Server-Sent Events)",
            move || sse_clients() as f64,
        );
        for result in ["success", "failure", "rate_limited"] {
            let _ = m.sign_ins.get_or_create(&SignInResult { result });
        }
        for operation in Operation::ALL {
            let _ = m.pending.get_or_create(&OperationLabel {
                operation: operation.as_str(),
            });
            for state in ["requested", "approved", "denied", "executed"] {
                let _ = m.approvals.get_or_create(&Transition {
                    operation: operation.as_str().to_owned(),
                    state,
                });
            }
        }
        for source in ["vault", "relay"] {
            let _ = m.import_lag.get_or_create(&Source { source });
        }
        Arc::new(m)
    }

    /// Count a sign-in attempt.
    pub fn sign_in(&self, result: SignIn) {
        let result = match result {
            SignIn::Success => "success",
            SignIn::Failure => "failure",
            SignIn::RateLimited => "rate_limited",
        };
        self.sign_ins.get_or_create(&SignInResult { result }).inc();
    }

    /// Count an approval request entering `state`.
    pub fn approval(&self, operation: &str, state: &'static str) {
        self.approvals
            .get_or_create(&Transition {
                operation: operation.to_owned(),
                state,
            })
            .inc();
    }

    /// Replace the pending counts (operations not listed have none).
    pub fn set_pending(&self, counts: &[(String, i64)]) {
        for operation in Operation::ALL {
            let n = counts
                .iter()
                .find(|(op, _)| op == operation.as_str())
                .map_or(0, |(_, n)| *n);
            self.pending
                .get_or_create(&OperationLabel {
                    operation: operation.as_str(),
                })
                .set(n);
        }
    }

    /// The import clock of `source`: seconds since its last successful copy.
    pub fn import_lag(&self, source: &'static str, seconds: i64) {
        self.import_lag
            .get_or_create(&Source { source })
            .set(seconds);
    }
}

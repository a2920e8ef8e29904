//! Relay metrics: connections, messages accepted / delivered / acknowledged / expired /
//! refused by reason, mailbox depth, delivery latency.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
};

use keymesh_core::{ErrorCode, metrics::Metrics};

/// Label of `relay_messages_refused`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    /// The error code.
    pub reason: &'static str,
}

/// Every relay series.
#[derive(Clone, Debug)]
pub struct RelayMetrics {
    /// Open WebSocket connections (past the handshake).
    pub connections: Gauge,
    /// Messages made durable.
    pub accepted: Counter,
    /// Retries answered `accepted` with `duplicate`.
    pub duplicates: Counter,
    /// Deliveries sent (WebSocket frames and HTTP fetches).
    pub delivered: Counter,
    /// Messages deleted by an acknowledgement.
    pub acked: Counter,
    /// Messages deleted unacknowledged at their expiry.
    pub expired: Counter,
    /// Refusals by code.
    pub refused: Family<Reason, Counter>,
    /// Messages held in every mailbox.
    pub mailbox_depth: Gauge,
    /// From acceptance to the deliver frame being written, seconds.
    pub delivery_latency: Histogram,
}

impl RelayMetrics {
    /// Create and register with the service's registry.
    pub fn register(registry: &Metrics) -> Self {
        let m = Self {
            connections: Gauge::default(),
            accepted: Counter::default(),
            duplicates: Counter::default(),
            delivered: Counter::default(),
            acked: Counter::default(),
            expired: Counter::default(),
            refused: Family::default(),
            mailbox_depth: Gauge::default(),
            // 100 µs .. ~26 s, doubling.
            delivery_latency: Histogram::new(exponential_buckets(0.0001, 2.0, 19)),
        };
        // The refusals alerts watch exist from the start, at zero.
        for code in [
            ErrorCode::MailboxFull,
            ErrorCode::RateLimited,
            ErrorCode::TooLarge,
            ErrorCode::Unavailable,
            ErrorCode::InvalidToken,
            ErrorCode::TokenExpired,
            ErrorCode::Revoked,
        ] {
            let _ = m.refused.get_or_create(&Reason {
                reason: code.as_str(),
            });
        }
        registry.register(
            "relay_connections",
            "Open relay WebSocket connections",
            m.connections.clone(),
        );
        registry.register(
            "relay_messages_accepted",
            "Messages made durable",
            m.accepted.clone(),
        );
        registry.register(
            "relay_messages_duplicate",
            "Sends answered as duplicates of an accepted message",
            m.duplicates.clone(),
        );
        registry.register(
            "relay_messages_delivered",
            "Messages delivered (including redeliveries)",
            m.delivered.clone(),
        );
        registry.register(
            "relay_messages_acked",
            "Messages deleted by an acknowledgement",
            m.acked.clone(),
        );
        registry.register(
            "relay_messages_expired",
            "Messages deleted unacknowledged at expiry",
            m.expired.clone(),
        );
        registry.register(
            "relay_messages_refused",
            "Sends refused, by reason",
            m.refused.clone(),
        );
        registry.register(
            "relay_mailbox_depth",
            "Messages held in all mailboxes",
            m.mailbox_depth.clone(),
        );
        registry.register(
            "relay_delivery_latency_seconds",
            "Time from acceptance to delivery",
            m.delivery_latency.clone(),
        );
        m
    }

    /// Count a refusal.
    pub fn refuse(&self, code: ErrorCode) {
        self.refused
            .get_or_create(&Reason {
                reason: code.as_str(),
            })
            .inc();
    }
}

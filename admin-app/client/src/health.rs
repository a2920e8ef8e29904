//! The health screen's numbers: each service's readiness, and the relay's statistics read
//! from its Prometheus metrics (rates from two successive samples).

use std::time::Instant;

use serde::Serialize;
use serde_json::Value;

/// One service's readiness as the app saw it.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceHealth {
    /// `management`, `vault` or `relay`.
    pub name: &'static str,
    /// Where it was asked (`None`: no URL configured).
    pub url: Option<String>,
    /// `None` when not configured.
    pub ready: Option<bool>,
    /// The HTTP status of `/health/ready`.
    pub status: Option<u16>,
    /// How long the answer took.
    pub latency_ms: Option<u64>,
    /// The service's own checks (`database`, `revocation_feed`, ...).
    pub checks: Value,
    /// Why it could not be asked, or what it said when not ready.
    pub error: Option<String>,
}

/// The relay's counters and gauges, and rates since the previous sample.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RelayStats {
    /// Open WebSocket connections.
    pub connections: f64,
    /// Messages held in every mailbox.
    pub mailbox_depth: f64,
    /// Messages made durable, since start.
    pub accepted_total: f64,
    /// Deliveries, since start.
    pub delivered_total: f64,
    /// Refused sends (every reason), since start.
    pub refused_total: f64,
    /// Age of the relay's copy of the revocation feed.
    pub revocation_view_age_seconds: Option<f64>,
    /// Per second since the previous sample (`None` on the first, or after a restart).
    pub accepted_per_sec: Option<f64>,
    /// Per second since the previous sample.
    pub delivered_per_sec: Option<f64>,
    /// Per second since the previous sample.
    pub refused_per_sec: Option<f64>,
}

/// The sum of every series of `name` (any labels) in a Prometheus / OpenMetrics text.
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        // The name must end here: `relay_connections` is not `relay_connections_total`.
        let value = if let Some(labels) = rest.strip_prefix('{') {
            labels.split_once('}').map(|(_, v)| v)
        } else if rest.starts_with(' ') {
            Some(rest)
        } else {
            None
        };
        let Some(v) = value.and_then(|v| v.split_whitespace().next()) else {
            continue;
        };
        if let Ok(v) = v.parse::<f64>()
            && v.is_finite()
        {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// A sample of the relay's counters kept to compute the next rates.
#[derive(Debug, Clone)]
pub struct Sample {
    at: Instant,
    stats: RelayStats,
}

/// Read the relay's statistics out of its metrics; rates against `previous`.
pub fn relay_stats(text: &str, previous: Option<&Sample>, now: Instant) -> Option<Sample> {
    let counter = |name: &str| metric_sum(text, name);
    let mut stats = RelayStats {
        connections: counter("relay_connections")?,
        mailbox_depth: counter("relay_mailbox_depth").unwrap_or(0.0),
        accepted_total: counter("relay_messages_accepted_total").unwrap_or(0.0),
        delivered_total: counter("relay_messages_delivered_total").unwrap_or(0.0),
        refused_total: counter("relay_messages_refused_total").unwrap_or(0.0),
        revocation_view_age_seconds: counter("keymesh_revocation_feed_age_seconds")
            .filter(|age| *age >= 0.0),
        accepted_per_sec: None,
        delivered_per_sec: None,
        refused_per_sec: None,
    };
    if let Some(prev) = previous {
        let secs = now.duration_since(prev.at).as_secs_f64();
        let rate = |now: f64, before: f64| {
            // A counter that went down means the relay restarted: no rate this time.
            (secs > 0.0 && now >= before).then(|| (now - before) / secs)
        };
        stats.accepted_per_sec = rate(stats.accepted_total, prev.stats.accepted_total);
        stats.delivered_per_sec = rate(stats.delivered_total, prev.stats.delivered_total);
        stats.refused_per_sec = rate(stats.refused_total, prev.stats.refused_total);
    }
    Some(Sample { at: now, stats })
}

impl Sample {
    /// The statistics of this sample.
    pub fn stats(&self) -> &RelayStats {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const METRICS: &str = "\
# HELP relay_connections Open relay WebSocket connections.
# TYPE relay_connections gauge
relay_connections 3
relay_connections_total_bogus 99
relay_mailbox_depth 12
relay_messages_accepted_total 100
relay_messages_delivered_total 90
relay_messages_refused_total{reason=\"rate_limited\"} 2
relay_messages_refused_total{reason=\"mailbox_full\"} 1
keymesh_revocation_feed_age_seconds 0.4
# EOF
";

    #[test]
    fn sums_series_and_respects_name_boundaries() {
        assert_eq!(metric_sum(METRICS, "relay_connections"), Some(3.0));
        assert_eq!(
            metric_sum(METRICS, "relay_messages_refused_total"),
            Some(3.0)
        );
        assert_eq!(metric_sum(METRICS, "absent"), None);
        assert_eq!(metric_sum("x NaN\nx +Inf\nx 1", "x"), Some(1.0));
    }

    #[test]
    fn rates_come_from_two_samples_and_survive_a_restart() {
        let t0 = Instant::now();
        let first = relay_stats(METRICS, None, t0).unwrap();
        assert_eq!(first.stats().accepted_per_sec, None);
        let later = METRICS.replace("accepted_total 100", "accepted_total 150");
        let second = relay_stats(&later, Some(&first), t0 + Duration::from_secs(5)).unwrap();
        assert_eq!(second.stats().accepted_per_sec, Some(10.0));
        assert_eq!(second.stats().refused_per_sec, Some(0.0));
        let restarted = METRICS.replace("accepted_total 100", "accepted_total 1");
        let third = relay_stats(&restarted, Some(&second), t0 + Duration::from_secs(10)).unwrap();
        assert_eq!(third.stats().accepted_per_sec, None);
        assert_eq!(third.stats().revocation_view_age_seconds, Some(0.4));
        assert!(relay_stats("not metrics", None, t0).is_none());
    }
}

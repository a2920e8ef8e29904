//! Prometheus metrics: one registry per service, every series labelled `service`.
//!
//! The HTTP stack records `http_requests_total{service,route,status}` and
//! `http_request_duration_seconds{service,route}`; `route` is the matched route template (never
//! the raw path, which would carry ids and explode cardinality). Services register their own
//! counters and gauges with [`Metrics::register`].

use std::{
    borrow::Cow,
    sync::{Arc, RwLock},
    time::Instant,
};

use axum::{
    extract::{MatchedPath, Request, State},
    middleware::Next,
    response::Response,
};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        histogram::{Histogram, exponential_buckets},
    },
    registry::{Metric, Registry},
};

use crate::config::ServiceName;

/// Route label for requests that matched no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatus {
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

type DurationFamily = Family<RouteLabel, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 100 µs .. ~13 s, doubling.
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

/// A service's metrics registry plus the HTTP request metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: RwLock<Registry>,
    requests: Family<RouteStatus, Counter>,
    durations: DurationFamily,
}

impl Metrics {
    /// A registry whose every series carries `service="<name>"`.
    pub fn new(service: ServiceName) -> Arc<Self> {
        let mut registry = Registry::with_labels(
            [(Cow::Borrowed("service"), Cow::Borrowed(service.as_str()))].into_iter(),
        );
        let requests = Family::<RouteStatus, Counter>::default();
        let durations: DurationFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "http_requests",
            "HTTP requests answered, by route template and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to produce the response head, by route template",
            durations.clone(),
        );
        Arc::new(Self {
            registry: RwLock::new(registry),
            requests,
            durations,
        })
    }

    /// Register a service-specific metric.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .register(name, help, metric);
    }

    /// Record one answered request.
    pub fn observe(&self, route: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RouteStatus {
                route: route.to_owned(),
                status,
            })
            .inc();
        self.durations
            .get_or_create(&RouteLabel {
                route: route.to_owned(),
            })
            .observe(seconds);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self
            .registry
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }
}

/// Middleware recording request count and latency per matched route.
pub async fn record(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED_ROUTE, MatchedPath::as_str)
        .to_owned();
    let started = Instant::now();
    let response = next.run(req).await;
    metrics.observe(
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

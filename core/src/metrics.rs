//! Prometheus metrics: one registry per service, every series labelled `service`.
//!
//! The HTTP stack records `http_requests_total{service,route,status}` and
//! `http_request_duration_seconds{service,route}`; `route` is the matched route template (never
//! the raw path, which would carry ids and explode cardinality). Services register their own
//! counters and gauges with [`Metrics::register`], gauges computed at scrape time with
//! [`Metrics::register_fn`], and their background tasks' heartbeats with [`Metrics::task`].
//!
//! Every service also exports `keymesh_build_info{version,commit}` (always 1) and, per background task,
//! `keymesh_task_last_success_timestamp_seconds{task}` and `keymesh_task_interval_seconds{task}`:
//! a task is late when its last success is older than twice its interval. `docs/metrics.md` is
//! generated from the registries (`cargo test` fails when it drifts).

use std::{
    borrow::Cow,
    sync::{Arc, RwLock, atomic::AtomicU64},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    extract::{MatchedPath, Request, State},
    middleware::Next,
    response::Response,
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::{ConstGauge, Gauge},
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    commit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabel {
    task: &'static str,
}

type SecondsGauge = Gauge<f64, AtomicU64>;
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
    task_last_success: Family<TaskLabel, SecondsGauge>,
    task_interval: Family<TaskLabel, SecondsGauge>,
}

/// A background task's heartbeat: call [`TaskClock::succeeded`] after each successful run.
#[derive(Clone, Debug)]
pub struct TaskClock(SecondsGauge);

impl TaskClock {
    /// The task just finished a run without error.
    pub fn succeeded(&self) {
        self.0.set(unix_now());
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A gauge whose value is computed when `/metrics` is scraped.
struct ComputedGauge {
    name: &'static str,
    help: &'static str,
    value: Box<dyn Fn() -> f64 + Send + Sync>,
}

impl std::fmt::Debug for ComputedGauge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComputedGauge")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Collector for ComputedGauge {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let gauge = ConstGauge::new((self.value)());
        let metric = encoder.encode_descriptor(self.name, self.help, None, gauge.metric_type())?;
        gauge.encode(metric)
    }
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
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: crate::build::VERSION,
                commit: crate::build::commit(),
            })
            .set(1);
        registry.register(
            "keymesh_build_info",
            "Always 1; the labels say which build this process runs",
            build,
        );
        let task_last_success = Family::<TaskLabel, SecondsGauge>::default();
        let task_interval = Family::<TaskLabel, SecondsGauge>::default();
        registry.register(
            "keymesh_task_last_success_timestamp_seconds",
            "When a background task last finished without error (Unix time; the process start before its first run)",
            task_last_success.clone(),
        );
        registry.register(
            "keymesh_task_interval_seconds",
            "How often a background task runs; it is late past twice this since its last success",
            task_interval.clone(),
        );
        Arc::new(Self {
            registry: RwLock::new(registry),
            requests,
            durations,
            task_last_success,
            task_interval,
        })
    }

    /// Register a gauge whose value `value` computes at every scrape (an age, a count held
    /// elsewhere).
    pub fn register_fn(
        &self,
        name: &'static str,
        help: &'static str,
        value: impl Fn() -> f64 + Send + Sync + 'static,
    ) {
        self.registry
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .register_collector(Box::new(ComputedGauge {
                name,
                help,
                value: Box::new(value),
            }));
    }

    /// The heartbeat of the background task `task`, which runs every `every`. Until its first
    /// success the task counts from now, so one that never succeeds becomes late too. (The
    /// label is `task`, not `job`: Prometheus gives `job` to the scrape target.)
    pub fn task(&self, task: &'static str, every: Duration) -> TaskClock {
        let label = TaskLabel { task };
        self.task_interval
            .get_or_create(&label)
            .set(every.as_secs_f64());
        let clock = TaskClock(self.task_last_success.get_or_create(&label).clone());
        clock.succeeded();
        clock
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

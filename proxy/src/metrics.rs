//! Prometheus metrics of the proxy: requests by app and status, latency by
//! app, backend errors, the table's size and the age of its last sync.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub(crate) app: String,
    pub(crate) status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct AppLabels {
    pub(crate) app: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The proxy's metrics.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) requests: Family<RequestLabels, Counter>,
    pub(crate) latency: Family<AppLabels, Histogram, fn() -> Histogram>,
    pub(crate) backend_errors: Counter,
    pub(crate) table_size: Gauge,
    last_sync_age: Gauge,
    /// Unix milliseconds of the last table swap.
    last_sync: AtomicU64,
    /// Tells this proxy's counters apart in the per-thread cache.
    id: u64,
}

thread_local! {
    /// Per thread: (metrics id, status) -> app -> its counter, so that
    /// counting a request neither allocates nor takes the family's lock.
    static COUNTERS: RefCell<HashMap<(u64, u16), HashMap<String, Counter>>> =
        RefCell::default();
    /// Per thread: metrics id -> app -> its latency histogram.
    static LATENCIES: RefCell<HashMap<u64, HashMap<String, Histogram>>> = RefCell::default();
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::with_prefix("paz_proxy");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: Family<AppLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        let backend_errors = Counter::default();
        let table_size = Gauge::default();
        let last_sync_age = Gauge::default();
        registry.register(
            "requests",
            "Requests answered, by app and status",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request to response headers, by app",
            latency.clone(),
        );
        registry.register(
            "backend_errors",
            "Backend connects and requests that failed",
            backend_errors.clone(),
        );
        registry.register(
            "table_backends",
            "Instances in the routing table",
            table_size.clone(),
        );
        registry.register(
            "last_sync_age_seconds",
            "Seconds since the routing table last changed",
            last_sync_age.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            backend_errors,
            table_size,
            last_sync_age,
            last_sync: AtomicU64::new(now_millis()),
            id: {
                static NEXT: AtomicU64 = AtomicU64::new(0);
                NEXT.fetch_add(1, Ordering::Relaxed)
            },
        }
    }

    /// Counts one request answered for `app` with `status` after `seconds`.
    pub(crate) fn record(&self, app: &str, status: u16, seconds: f64) {
        self.count(app, status);
        LATENCIES.with(|cache| {
            let mut cache = cache.borrow_mut();
            let apps = cache.entry(self.id).or_default();
            if let Some(histogram) = apps.get(app) {
                histogram.observe(seconds);
                return;
            }
            let labels = AppLabels {
                app: app.to_string(),
            };
            let histogram = self.latency.get_or_create(&labels).clone();
            histogram.observe(seconds);
            apps.insert(app.to_string(), histogram);
        });
    }

    /// Counts one request answered for `app` with `status`.
    fn count(&self, app: &str, status: u16) {
        COUNTERS.with(|cache| {
            let mut cache = cache.borrow_mut();
            let apps = cache.entry((self.id, status)).or_default();
            if let Some(counter) = apps.get(app) {
                counter.inc();
                return;
            }
            let labels = RequestLabels {
                app: app.to_string(),
                status,
            };
            let counter = self.requests.get_or_create(&labels).clone();
            counter.inc();
            apps.insert(app.to_string(), counter);
        });
    }

    pub(crate) fn synced(&self, backends: usize) {
        self.table_size.set(backends as i64);
        self.last_sync.store(now_millis(), Ordering::Relaxed);
    }

    /// The metrics in Prometheus' text format.
    pub(crate) fn render(&self) -> String {
        let age = now_millis().saturating_sub(self.last_sync.load(Ordering::Relaxed)) / 1000;
        self.last_sync_age.set(age as i64);
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        telemetry::to_text_format(&text)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn requests_are_counted_by_app_and_status_across_threads() {
        let metrics = Arc::new(Metrics::new());
        metrics.record("demo", 200, 0.001);
        metrics.record("demo", 200, 0.001);
        metrics.record("demo", 502, 0.3);
        let other = Arc::clone(&metrics);
        std::thread::spawn(move || other.record("demo", 200, 0.001))
            .join()
            .unwrap();
        metrics.synced(4);
        let text = metrics.render();
        let line = |needle: &str| {
            text.lines()
                .find(|line| line.starts_with(needle))
                .unwrap_or_else(|| panic!("no {needle} in:\n{text}"))
                .to_string()
        };
        let requests = |status: &str| {
            line(&format!(
                r#"paz_proxy_requests_total{{app="demo",status="{status}"}}"#
            ))
        };
        assert!(requests("200").ends_with(" 3"), "{text}");
        assert!(requests("502").ends_with(" 1"), "{text}");
        assert!(line("paz_proxy_table_backends ").ends_with(" 4"), "{text}");
        assert!(
            line(r#"paz_proxy_request_duration_seconds_count{app="demo"}"#).ends_with(" 4"),
            "{text}"
        );
    }
}

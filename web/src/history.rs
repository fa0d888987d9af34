//! The last hour of the cluster's numbers, for the pages' charts: every
//! [`EVERY`] the server reads each proxy's metrics (request counts and
//! latency by app) and each agent's stats (the host's CPU and memory, each
//! container's memory), both found in etcd as Prometheus finds them, and
//! keeps them in memory. Nothing here is state: a restart starts an empty
//! hour.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use store::Store;
use telemetry::AgentClient;

/// How often the cluster is read.
pub(crate) const EVERY: Duration = Duration::from_secs(5);
/// How much is kept: an hour.
pub(crate) const SPAN: f64 = 3600.0;
const KEEP: usize = (SPAN as usize) / 5 + 1;
/// How long one read may take.
const WAIT: Duration = Duration::from_secs(2);

/// Points of one line of a chart: (seconds since the epoch, value).
pub(crate) type Points = Vec<(f64, f64)>;

/// The counters of one app, summed over every proxy, at one read.
#[derive(Debug, Clone, Default)]
struct AppTotals {
    requests: f64,
    errors: f64,
    /// Latency buckets: upper bound (seconds), cumulative count.
    buckets: Vec<(f64, f64)>,
}

#[derive(Debug, Default)]
struct Kept {
    apps: HashMap<String, VecDeque<(f64, AppTotals)>>,
    /// By unit: memory in bytes.
    instances: HashMap<String, VecDeque<(f64, f64)>>,
    /// By machine: CPU percent, memory used and total.
    machines: HashMap<String, VecDeque<(f64, f64, f64, f64)>>,
}

fn push<T>(series: &mut VecDeque<T>, point: T) {
    series.push_back(point);
    while series.len() > KEEP {
        series.pop_front();
    }
}

/// What an app's page draws.
#[derive(Debug, Default)]
pub(crate) struct AppCharts {
    pub(crate) requests: Points,
    pub(crate) errors: Points,
    pub(crate) p50: Points,
    pub(crate) p99: Points,
    /// By instance (`v3 web.1`): memory in MiB.
    pub(crate) memory: Vec<(String, Points)>,
}

/// What a machine's page draws.
#[derive(Debug, Default)]
pub(crate) struct MachineCharts {
    pub(crate) cpu: Points,
    /// Used, in MiB; and the total.
    pub(crate) memory: Points,
    pub(crate) memory_total: f64,
}

/// The kept hour, and the client that reads the proxies; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct History(Arc<Mutex<Kept>>, reqwest::Client);

impl History {
    /// Starts reading the cluster every [`EVERY`] (on the Tokio runtime).
    pub(crate) fn start(store: Store) -> History {
        let http = reqwest::Client::builder()
            .timeout(WAIT)
            .build()
            .unwrap_or_default();
        let history = History(Arc::default(), http);
        let kept = history.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                kept.read_cluster(&store).await;
            }
        });
        history
    }

    async fn read_cluster(&self, store: &Store) {
        let now = support::now() as f64;
        let keys = store.keys();
        let proxies = store
            .list(&keys.proxies())
            .await
            .map(|l| l.entries)
            .unwrap_or_default();
        let http = &self.1;
        let scrapes = proxies.iter().map(|proxy| {
            let http = http.clone();
            let url = format!("http://{}/metrics", proxy.value.metrics);
            async move { http.get(url).send().await.ok()?.text().await.ok() }
        });
        let scrapes = futures::future::join_all(scrapes).await;
        // Totals are summed over the proxies: a read that missed one would
        // look like a drop, then a burst. Such a read counts no requests;
        // the next whole one spans both intervals.
        let whole = scrapes.iter().all(Option::is_some);
        let mut apps: HashMap<String, AppTotals> = HashMap::new();
        for text in scrapes.into_iter().flatten().filter(|_| whole) {
            add_proxy(&mut apps, &text);
        }
        let machines = store
            .list(&keys.machines())
            .await
            .map(|l| l.entries)
            .unwrap_or_default();
        let secret = store.get(&keys.agent_secret()).await.ok().flatten();
        let stats = match secret {
            Some(secret) => {
                let client = AgentClient::new(&secret.value);
                let asked = machines.iter().map(|entry| {
                    let client = client.clone();
                    let id = keys.machines().child_name(&entry.key).to_string();
                    let endpoint = entry.value.endpoint.clone();
                    async move { Some((id, client.stats(&endpoint?, WAIT).await.ok()?)) }
                });
                futures::future::join_all(asked)
                    .await
                    .into_iter()
                    .flatten()
                    .collect()
            }
            None => Vec::new(),
        };
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for (app, totals) in apps {
            push(kept.apps.entry(app).or_default(), (now, totals));
        }
        for (machine, stats) in stats {
            let host = &stats.host;
            push(
                kept.machines.entry(machine).or_default(),
                (
                    now,
                    host.cpu_percent,
                    host.memory_used_bytes as f64,
                    host.memory_total_bytes as f64,
                ),
            );
            for container in &stats.containers {
                push(
                    kept.instances.entry(container.unit.clone()).or_default(),
                    (now, container.memory_bytes as f64),
                );
            }
        }
        // What stopped answering an hour ago is forgotten.
        let old = |t: f64| now - t > SPAN;
        kept.apps
            .retain(|_, s| s.back().is_some_and(|(t, _)| !old(*t)));
        kept.instances
            .retain(|_, s| s.back().is_some_and(|(t, _)| !old(*t)));
        kept.machines
            .retain(|_, s| s.back().is_some_and(|(t, ..)| !old(*t)));
    }

    /// The charts of `app`.
    pub(crate) fn app(&self, app: &str) -> AppCharts {
        let kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut charts = AppCharts::default();
        if let Some(series) = kept.apps.get(app) {
            for ((t0, before), (t1, after)) in series.iter().zip(series.iter().skip(1)) {
                let elapsed = t1 - t0;
                if elapsed <= 0.0 {
                    continue;
                }
                let rate = |a: f64, b: f64| ((b - a) / elapsed).max(0.0);
                charts
                    .requests
                    .push((*t1, rate(before.requests, after.requests)));
                charts.errors.push((*t1, rate(before.errors, after.errors)));
                let window = difference(&before.buckets, &after.buckets);
                if let Some(p50) = quantile(0.5, &window) {
                    charts.p50.push((*t1, p50 * 1000.0));
                }
                if let Some(p99) = quantile(0.99, &window) {
                    charts.p99.push((*t1, p99 * 1000.0));
                }
            }
        }
        let mut instances: Vec<(String, Points)> = kept
            .instances
            .iter()
            .filter_map(|(unit, series)| {
                let name =
                    units::parse_instance_name(unit).filter(|n| n.app == app && !n.sidekick)?;
                let label = format!("v{} {}.{}", name.release, name.process, name.index);
                let points = series
                    .iter()
                    .map(|(t, bytes)| (*t, bytes / f64::from(1 << 20)))
                    .collect();
                Some((label, points))
            })
            .collect();
        instances.sort_by(|a, b| a.0.cmp(&b.0));
        charts.memory = instances;
        charts
    }

    /// The charts of machine `id`.
    pub(crate) fn machine(&self, id: &str) -> MachineCharts {
        let kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut charts = MachineCharts::default();
        for (t, cpu, used, total) in kept.machines.get(id).into_iter().flatten() {
            charts.cpu.push((*t, *cpu));
            charts.memory.push((*t, used / f64::from(1 << 20)));
            charts.memory_total = total / f64::from(1 << 20);
        }
        charts
    }
}

/// Adds one proxy's counters (its metrics text) to the apps' totals.
fn add_proxy(apps: &mut HashMap<String, AppTotals>, text: &str) {
    let lines = text.lines().map(|line| Ok(line.to_string()));
    let Ok(scrape) = prometheus_parse::Scrape::parse(lines) else {
        return;
    };
    for sample in scrape.samples {
        let Some(app) = sample.labels.get("app") else {
            continue;
        };
        let totals = apps.entry(app.to_string()).or_default();
        match (sample.metric.as_str(), &sample.value) {
            ("paz_proxy_requests_total", prometheus_parse::Value::Counter(count)) => {
                totals.requests += count;
                let status: u16 = sample
                    .labels
                    .get("status")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                if status >= 500 {
                    totals.errors += count;
                }
            }
            ("paz_proxy_request_duration_seconds", prometheus_parse::Value::Histogram(buckets)) => {
                for bucket in buckets {
                    match totals
                        .buckets
                        .iter_mut()
                        .find(|(le, _)| *le == bucket.less_than)
                    {
                        Some((_, count)) => *count += bucket.count,
                        None => totals.buckets.push((bucket.less_than, bucket.count)),
                    }
                }
                totals.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            }
            _ => {}
        }
    }
}

/// The buckets' counts between two reads.
fn difference(before: &[(f64, f64)], after: &[(f64, f64)]) -> Vec<(f64, f64)> {
    after
        .iter()
        .map(|(le, count)| {
            let was = before
                .iter()
                .find(|(b, _)| b == le)
                .map_or(0.0, |(_, c)| *c);
            (*le, (count - was).max(0.0))
        })
        .collect()
}

/// The `q` quantile of cumulative `buckets`, interpolated within its bucket
/// as Prometheus' `histogram_quantile` does; `None` without observations.
fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let within = count - lower.1;
            let share = if within > 0.0 {
                (rank - lower.1) / within
            } else {
                0.0
            };
            return Some(lower.0 + (le - lower.0) * share);
        }
        lower = (le, count);
    }
    Some(lower.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_a_bucket() {
        let buckets = [
            (0.001, 50.0),
            (0.002, 90.0),
            (0.004, 100.0),
            (f64::INFINITY, 100.0),
        ];
        assert_eq!(quantile(0.5, &buckets), Some(0.001));
        let p99 = quantile(0.99, &buckets).unwrap();
        assert!((p99 - 0.0038).abs() < 1e-9, "{p99}");
        assert_eq!(quantile(0.5, &[(0.001, 0.0), (f64::INFINITY, 0.0)]), None);
    }

    #[test]
    fn a_proxys_counters_add_up_by_app() {
        let text = "# TYPE paz_proxy_requests_total counter\npaz_proxy_requests_total{app=\"a\",status=\"200\"} 7\npaz_proxy_requests_total{app=\"a\",status=\"502\"} 2\n# TYPE paz_proxy_request_duration_seconds histogram\npaz_proxy_request_duration_seconds_bucket{app=\"a\",le=\"0.001\"} 5\npaz_proxy_request_duration_seconds_bucket{app=\"a\",le=\"+Inf\"} 9\npaz_proxy_request_duration_seconds_sum{app=\"a\"} 0.1\npaz_proxy_request_duration_seconds_count{app=\"a\"} 9\n";
        let mut apps = HashMap::new();
        add_proxy(&mut apps, text);
        add_proxy(&mut apps, text);
        let a = &apps["a"];
        assert_eq!((a.requests, a.errors), (18.0, 4.0));
        assert_eq!(a.buckets, vec![(0.001, 10.0), (f64::INFINITY, 18.0)]);
    }
}

//! What the agent measures, every few seconds: the host's CPU, memory and
//! the disk of its data dir (from `/proc` and `statvfs`), and each of this
//! machine's containers' CPU and memory (Docker's stats, one shot each)
//! with the restarts the agent counted. The last sample is what the
//! endpoint sends (`/v1/stats`) and exports (`/metrics`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bollard::query_parameters::{ListContainersOptionsBuilder, StatsOptionsBuilder};
use engine::Docker;
use futures::StreamExt;
use telemetry::{ContainerStats, HostStats, Stats};

use crate::docker::{MACHINE_LABEL, UNIT_LABEL};

/// How often a sample is taken.
pub(crate) const EVERY: Duration = Duration::from_secs(5);

/// The last sample and the restarts it reports; cheap to clone.
#[derive(Clone, Debug, Default)]
pub(crate) struct Sampled {
    latest: Arc<RwLock<Stats>>,
    /// Restarts after crashes, by unit, as the agent counts them.
    pub(crate) restarts: Arc<Mutex<HashMap<String, u32>>>,
}

impl Sampled {
    pub(crate) fn latest(&self) -> Stats {
        self.latest
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn set_restarts(&self, unit: &str, restarts: u32) {
        let mut all = self.restarts.lock().unwrap_or_else(|e| e.into_inner());
        if restarts == 0 {
            all.remove(unit);
        } else {
            all.insert(unit.to_string(), restarts);
        }
    }
}

/// CPU time read from `/proc/stat`: (busy, total) in clock ticks.
fn host_cpu_ticks() -> Option<(u64, u64, u32)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let mut lines = text.lines();
    let first = lines.next()?;
    let fields: Vec<u64> = first
        .split_whitespace()
        .skip(1)
        .filter_map(|field| field.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is in user).
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    let cpus = lines
        .filter(|line| {
            line.starts_with("cpu") && line.as_bytes().get(3).is_some_and(u8::is_ascii_digit)
        })
        .count() as u32;
    Some((total - idle, total, cpus))
}

/// (used, total) bytes of memory, from `/proc/meminfo`.
fn host_memory() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kib| kib * 1024)
    };
    let total = field("MemTotal:")?;
    let available = field("MemAvailable:")?;
    Some((total.saturating_sub(available), total))
}

/// (used, total) bytes of the file system holding `path`.
fn disk(path: &std::path::Path) -> Option<(u64, u64)> {
    let fs = nix::sys::statvfs::statvfs(path).ok()?;
    let block = fs.fragment_size() as u64;
    let total = fs.blocks() as u64 * block;
    let free = fs.blocks_free() as u64 * block;
    Some((total.saturating_sub(free), total))
}

/// Takes a sample every [`EVERY`] until the task is dropped.
pub(crate) async fn sample(docker: Docker, machine: String, data_dir: PathBuf, sampled: Sampled) {
    let mut host_before: Option<(u64, u64)> = None;
    let mut containers_before: HashMap<String, (f64, Instant)> = HashMap::new();
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tick.tick().await;
        let mut host = HostStats::default();
        if let Some((busy, total, cpus)) = host_cpu_ticks() {
            if let Some((busy_before, total_before)) = host_before {
                let elapsed = total.saturating_sub(total_before);
                if elapsed > 0 {
                    host.cpu_percent =
                        100.0 * busy.saturating_sub(busy_before) as f64 / elapsed as f64;
                }
            }
            host_before = Some((busy, total));
            host.cpus = cpus;
        }
        if let Some((used, total)) = host_memory() {
            (host.memory_used_bytes, host.memory_total_bytes) = (used, total);
        }
        if let Some((used, total)) = disk(&data_dir) {
            (host.disk_used_bytes, host.disk_total_bytes) = (used, total);
        }
        let restarts = sampled
            .restarts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut containers = Vec::new();
        for (id, unit) in running(&docker, &machine).await {
            let Some(mut stats) = container(&docker, &id, host.memory_total_bytes).await else {
                continue;
            };
            let now = Instant::now();
            if let Some((seconds, at)) = containers_before.get(&id) {
                let elapsed = now.duration_since(*at).as_secs_f64();
                if elapsed > 0.0 {
                    stats.cpu_percent = (100.0 * (stats.cpu_seconds - seconds) / elapsed).max(0.0);
                }
            }
            containers_before.insert(id.clone(), (stats.cpu_seconds, now));
            stats.restarts = restarts.get(&unit).copied().unwrap_or(0);
            stats.unit = unit;
            containers.push(stats);
        }
        containers_before.retain(|id, _| containers.iter().any(|c| &c.container == id));
        *sampled.latest.write().unwrap_or_else(|e| e.into_inner()) = Stats {
            at: support::now(),
            host,
            containers,
        };
    }
}

/// This machine's running containers: (id, unit).
async fn running(docker: &Docker, machine: &str) -> Vec<(String, String)> {
    let filter = format!("{MACHINE_LABEL}={machine}");
    let filters = HashMap::from([("label", vec![filter.as_str()])]);
    let options = ListContainersOptionsBuilder::new()
        .filters(&filters)
        .build();
    let Ok(summaries) = docker.list_containers(Some(options)).await else {
        return Vec::new();
    };
    summaries
        .into_iter()
        .filter_map(|summary| {
            let unit = summary.labels?.get(UNIT_LABEL)?.clone();
            Some((summary.id?, unit))
        })
        .collect()
}

/// One container's CPU and memory, in one call to the engine.
async fn container(docker: &Docker, id: &str, host_memory: u64) -> Option<ContainerStats> {
    let options = StatsOptionsBuilder::new()
        .stream(false)
        .one_shot(true)
        .build();
    let stats = docker.stats(id, Some(options)).next().await?.ok()?;
    let cpu = stats
        .cpu_stats
        .and_then(|cpu| cpu.cpu_usage)
        .and_then(|usage| usage.total_usage)
        .unwrap_or(0);
    let memory = stats.memory_stats.unwrap_or_default();
    // As `docker stats` shows it: without the cache the kernel can take back.
    let cache = memory
        .stats
        .as_ref()
        .and_then(|stats| {
            stats
                .get("inactive_file")
                .or_else(|| stats.get("total_inactive_file"))
        })
        .copied()
        .unwrap_or(0);
    let limit = memory
        .limit
        .filter(|&limit| limit > 0 && (host_memory == 0 || limit < host_memory));
    Some(ContainerStats {
        unit: String::new(),
        container: id.to_string(),
        cpu_percent: 0.0,
        cpu_seconds: cpu as f64 / 1e9,
        memory_bytes: memory.usage.unwrap_or(0).saturating_sub(cache),
        memory_limit_bytes: limit,
        restarts: 0,
    })
}

//! What an agent measures of its host and its containers, as its endpoint
//! sends it (`GET /v1/stats`) and `ps` shows it.

use serde::{Deserialize, Serialize};

/// The host and every container of this machine, as last sampled.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Stats {
    /// When it was sampled, in seconds since the Unix epoch.
    pub at: u64,
    pub host: HostStats,
    pub containers: Vec<ContainerStats>,
}

/// The host.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostStats {
    /// Busy share of all CPUs since the sample before, 0 to 100.
    pub cpu_percent: f64,
    pub cpus: u32,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    /// The file system of the agent's data dir.
    pub disk_used_bytes: u64,
    pub disk_total_bytes: u64,
}

/// One container of this machine.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ContainerStats {
    /// Its unit, `demo-v7-web-1.service`.
    pub unit: String,
    pub container: String,
    /// CPU used since the sample before, in percent of one CPU.
    pub cpu_percent: f64,
    /// CPU used since it started.
    pub cpu_seconds: f64,
    /// Memory in use, without the page cache it can give back.
    pub memory_bytes: u64,
    /// Its memory limit, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_bytes: Option<u64>,
    /// Restarts after crashes since the unit was placed on this machine.
    pub restarts: u32,
}

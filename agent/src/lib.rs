//! Paz's agent: runs the units the scheduler placed on this machine.
//!
//! It registers `/paz/machines/<id>` on a lease, watches `/paz/schedule/` and
//! `/paz/units/`, and reconciles the local Docker Engine with them: "read
//! desired, read actual, make one step, repeat". Containers carry the labels
//! `paz.unit` and `paz.machine`, so a restarted agent adopts its own and
//! several agents can share one engine. Sidekick units become tasks that
//! health-check an instance and announce it.

#![forbid(unsafe_code)]

mod docker;
mod error;
mod sidekick;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::auth::DockerCredentials;
use bollard::Docker;
use store::records::{ActiveState, Machine, UnitState};
use store::{Key, Lease, Store, WatchEvent};
use support::now;
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;
use tracing::{info, warn};
use units::{Exec, Unit};

pub use crate::error::AgentError;
use crate::error::Result;

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The machine id lives in `<data_dir>/machine-id`.
    pub data_dir: PathBuf,
    /// The address other hosts reach this machine's published ports on.
    pub advertise_addr: String,
    pub metadata: BTreeMap<String, String>,
    /// Paz's registry (`host:port`) and the token to pull from it.
    pub registry: Option<(String, String, String)>,
    /// Between withdrawing an instance and stopping its container.
    pub drain: Duration,
    /// The lease TTL of the machine and state keys.
    pub lease_ttl: Duration,
}

impl AgentConfig {
    pub fn new(data_dir: PathBuf, advertise_addr: String) -> AgentConfig {
        AgentConfig {
            data_dir,
            advertise_addr,
            metadata: BTreeMap::new(),
            registry: None,
            drain: Duration::from_secs(5),
            lease_ttl: Duration::from_secs(10),
        }
    }
}

/// The machine id of this data dir, made once (written whole, then kept).
pub fn machine_id(data_dir: &Path) -> std::io::Result<String> {
    let path = data_dir.join("machine-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim().to_string();
        if !id.is_empty() {
            return Ok(id);
        }
    }
    std::fs::create_dir_all(data_dir)?;
    let id = hex::encode(rand::random::<[u8; 16]>());
    support::write_file(&path, format!("{id}\n").as_bytes())?;
    Ok(id)
}

/// A running sidekick task.
struct SidekickTask {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    /// The unit whose instance it announces.
    watches: String,
}

/// A unit's crashes since it was placed here: how many, and the last exit code.
#[derive(Debug, Default, Clone, Copy)]
struct Crashes {
    count: u32,
    last_exit: i64,
}

/// Back-off after a crash or a failed start.
struct Retry {
    attempts: u32,
    next: Instant,
}

/// The agent of one machine.
pub struct Agent {
    config: AgentConfig,
    store: Store,
    docker: Docker,
    id: String,
    placed: HashSet<String>,
    texts: HashMap<String, String>,
    sidekicks: HashMap<String, SidekickTask>,
    retries: HashMap<String, Retry>,
    restarts: HashMap<String, Crashes>,
    /// Units whose container is being stopped (drain, then stop).
    stopping: Arc<Mutex<HashSet<String>>>,
    /// What was last written to `/paz/state/<unit>`.
    reported: HashMap<String, UnitState>,
    lease: Option<Lease>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent").field("id", &self.id).finish()
    }
}

impl Agent {
    /// Connects to the Docker Engine and reads (or makes) the machine id.
    pub async fn new(config: AgentConfig, store: Store) -> Result<Agent> {
        let id = machine_id(&config.data_dir).map_err(|source| AgentError::MachineId {
            dir: config.data_dir.clone(),
            source,
        })?;
        let unreachable =
            |error: bollard::errors::Error| AgentError::DockerUnreachable(error.to_string());
        let docker = Docker::connect_with_local_defaults()
            .map_err(unreachable)?
            .negotiate_version()
            .await
            .map_err(unreachable)?;
        Ok(Agent {
            config,
            store,
            docker,
            id,
            placed: HashSet::new(),
            texts: HashMap::new(),
            sidekicks: HashMap::new(),
            retries: HashMap::new(),
            restarts: HashMap::new(),
            stopping: Arc::new(Mutex::new(HashSet::new())),
            reported: HashMap::new(),
            lease: None,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Runs until `shutdown` resolves. Containers keep running when the agent
    /// stops (static stability); sidekicks withdraw.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let keys = self.store.keys().clone();
        let machine = Machine {
            addr: self.config.advertise_addr.clone(),
            metadata: self.config.metadata.clone(),
            started_at: now(),
        };
        let machine_key = keys.machine(&self.id)?;
        let _registration = self
            .store
            .register(&machine_key, &machine, self.config.lease_ttl)
            .await
            .map_err(AgentError::Register)?;
        info!(machine = %self.id, addr = %machine.addr, "agent registered");
        let schedules = keys.schedules();
        let units = keys.units();
        let mut schedule_watch = self.store.watch(&schedules);
        let mut unit_watch = self.store.watch(&units);
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        // Nothing is decided before both watches have said what is there: an
        // agent that just restarted must not stop what it does not know yet.
        let (mut schedules_known, mut units_known) = (false, false);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(event) = schedule_watch.next_event() => {
                    schedules_known |= matches!(event, WatchEvent::Snapshot { .. });
                    self.on_schedule(&schedules, event);
                }
                Some(event) = unit_watch.next_event() => {
                    units_known |= matches!(event, WatchEvent::Snapshot { .. });
                    self.on_unit(&units, event);
                }
                _ = tick.tick() => {}
            }
            if schedules_known && units_known {
                self.reconcile().await;
            }
        }
        for (_, sidekick) in self.sidekicks.drain() {
            let _ = sidekick.stop.send(true);
            let _ = sidekick.task.await;
        }
        Ok(())
    }

    fn on_schedule(&mut self, prefix: &store::Prefix<String>, event: WatchEvent<String>) {
        match event {
            WatchEvent::Snapshot { entries, .. } => {
                self.placed = entries
                    .into_iter()
                    .filter(|entry| entry.value == self.id)
                    .map(|entry| prefix.child_name(&entry.key).to_string())
                    .collect();
            }
            WatchEvent::Put { key, value, .. } => {
                let unit = prefix.child_name(&key).to_string();
                if value == self.id {
                    self.placed.insert(unit);
                } else {
                    self.placed.remove(&unit);
                }
            }
            WatchEvent::Delete { key, .. } | WatchEvent::Invalid { key, .. } => {
                self.placed.remove(prefix.child_name(&key));
            }
        }
    }

    fn on_unit(&mut self, prefix: &store::Prefix<String>, event: WatchEvent<String>) {
        match event {
            WatchEvent::Snapshot { entries, .. } => {
                self.texts = entries
                    .into_iter()
                    .map(|entry| (prefix.child_name(&entry.key).to_string(), entry.value))
                    .collect();
            }
            WatchEvent::Put { key, value, .. } => {
                self.texts
                    .insert(prefix.child_name(&key).to_string(), value);
            }
            WatchEvent::Delete { key, .. } | WatchEvent::Invalid { key, .. } => {
                self.texts.remove(prefix.child_name(&key));
            }
        }
    }

    /// One pass: start what should run and does not, stop what runs and
    /// should not, restart what crashed, and report.
    async fn reconcile(&mut self) {
        let mut desired: BTreeMap<String, Result<Unit, String>> = BTreeMap::new();
        for name in &self.placed {
            let parsed = match self.texts.get(name) {
                Some(text) => units::parse_unit(name, text)
                    .map_err(|error| format!("the unit file is invalid: {error}")),
                None => continue,
            };
            desired.insert(name.clone(), parsed);
        }
        // Global units run on every machine their metadata allows, unscheduled.
        for (name, text) in &self.texts {
            if !text.contains("Global") || desired.contains_key(name) {
                continue;
            }
            if let Ok(unit) = units::parse_unit(name, text) {
                if unit.placement.global && unit.placement.metadata_allows(&self.config.metadata) {
                    desired.insert(name.clone(), Ok(unit));
                }
            }
        }
        let actual = match docker::list(&self.docker, &self.id).await {
            Ok(actual) => actual,
            Err(error) => {
                warn!(%error, "cannot list containers; will try again");
                return;
            }
        };

        // Sidekicks first: what stops withdraws before its container goes.
        let wanted_sidekicks: HashMap<&String, &Unit> = desired
            .iter()
            .filter_map(|(name, unit)| match unit {
                Ok(unit) if matches!(unit.exec, Exec::Sidekick(_)) => Some((name, unit)),
                _ => None,
            })
            .collect();
        let gone: Vec<String> = self
            .sidekicks
            .keys()
            .filter(|name| !wanted_sidekicks.contains_key(name))
            .cloned()
            .collect();
        for name in gone {
            if let Some(sidekick) = self.sidekicks.remove(&name) {
                let _ = sidekick.stop.send(true);
                let _ = sidekick.task.await;
                let _ = self.forget_state(&name).await;
            }
        }

        // Containers that should no longer run here: withdraw, drain, stop.
        for (unit, container) in &actual {
            if desired.contains_key(unit) {
                continue;
            }
            let mut stopping = self.stopping.lock().await;
            if !stopping.insert(unit.clone()) {
                continue;
            }
            drop(stopping);
            // A sidekick still announcing this unit (placed elsewhere now) goes first.
            let bound: Vec<String> = self
                .sidekicks
                .iter()
                .filter(|(_, s)| &s.watches == unit)
                .map(|(n, _)| n.clone())
                .collect();
            for name in bound {
                if let Some(sidekick) = self.sidekicks.remove(&name) {
                    let _ = sidekick.stop.send(true);
                    let _ = sidekick.task.await;
                }
            }
            let (docker, store, stopping, drain) = (
                self.docker.clone(),
                self.store.clone(),
                self.stopping.clone(),
                self.config.drain,
            );
            let (stopped, id, timeout) =
                (unit.clone(), container.id.clone(), container.stop_timeout);
            info!(%unit, "no longer placed here: draining, then stopping");
            tokio::spawn(async move {
                tokio::time::sleep(drain).await;
                docker::stop(&docker, &id, timeout).await;
                if let Ok(key) = store.keys().unit_state(&stopped) {
                    let _ = store.delete(&key).await;
                }
                stopping.lock().await.remove(&stopped);
            });
            self.reported.remove(unit);
            self.restarts.remove(unit);
            self.retries.remove(unit);
        }

        for (name, unit) in &desired {
            match unit {
                Err(reason) => {
                    self.report(name, ActiveState::Failed, None, Some(reason.clone()))
                        .await
                }
                Ok(unit) => match &unit.exec {
                    Exec::Container(spec) => {
                        self.keep_running(name, unit, spec, actual.get(name)).await
                    }
                    Exec::Sidekick(spec) => self.keep_sidekick(name, spec, &desired).await,
                },
            }
        }
    }

    async fn keep_running(
        &mut self,
        name: &str,
        unit: &Unit,
        spec: &units::ContainerSpec,
        actual: Option<&docker::Actual>,
    ) {
        if let Some(container) = actual {
            if container.running && container.image == spec.image {
                self.retries.remove(name);
                let reason = self.restart_reason(name);
                self.report(
                    name,
                    ActiveState::Active,
                    Some(container.id.clone()),
                    reason,
                )
                .await;
                return;
            }
        }
        if self
            .retries
            .get(name)
            .is_some_and(|retry| retry.next > Instant::now())
        {
            return;
        }
        let crashed = actual.filter(|c| !c.running).map(|c| c.exit_code);
        if let Some(code) = crashed {
            let crashes = self.restarts.entry(name.to_string()).or_default();
            crashes.count += 1;
            crashes.last_exit = code;
            info!(unit = %name, code, restarts = crashes.count, "container exited: restarting");
        }
        self.report(
            name,
            ActiveState::Activating,
            None,
            crashed.map(|code| format!("restarting after exit code {code}")),
        )
        .await;
        let credentials = self.credentials_for(&spec.image);
        let started = async {
            if credentials.is_some() || self.docker.inspect_image(&spec.image).await.is_err() {
                docker::pull(&self.docker, &spec.image, credentials).await?;
            }
            docker::start(
                &self.docker,
                &self.id,
                name,
                spec,
                unit.stop_timeout,
                self.publish_ip(),
            )
            .await
        }
        .await;
        match started {
            Ok(id) => {
                info!(unit = %name, container = %id, "started");
                let reason = self.restart_reason(name);
                self.report(name, ActiveState::Active, Some(id), reason)
                    .await;
            }
            Err(reason) => {
                warn!(unit = %name, %reason, "cannot start");
                self.report(name, ActiveState::Failed, None, Some(reason))
                    .await;
            }
        }
        // Back off: 1, 2, 4 ... 30 seconds between tries of one unit.
        let retry = self.retries.entry(name.to_string()).or_insert(Retry {
            attempts: 0,
            next: Instant::now(),
        });
        retry.attempts += 1;
        retry.next = Instant::now() + Duration::from_secs((1u64 << retry.attempts.min(5)).min(30));
    }

    /// What the unit's state says about its crashes, if it had any.
    fn restart_reason(&self, name: &str) -> Option<String> {
        self.restarts.get(name).map(|crashes| {
            format!(
                "restarted {} times after crashes, the last with exit code {}",
                crashes.count, crashes.last_exit
            )
        })
    }

    async fn keep_sidekick(
        &mut self,
        name: &str,
        spec: &units::SidekickSpec,
        desired: &BTreeMap<String, Result<Unit, String>>,
    ) {
        if self.sidekicks.contains_key(name) {
            self.report(name, ActiveState::Active, None, None).await;
            return;
        }
        let watched = match desired.get(&spec.unit) {
            Some(Ok(Unit {
                exec: Exec::Container(container),
                ..
            })) => container.clone(),
            _ => {
                let reason = format!(
                    "it announces {}, which is not placed on this machine",
                    spec.unit
                );
                self.report(name, ActiveState::Failed, None, Some(reason))
                    .await;
                return;
            }
        };
        let Some(container_port) = watched.ports.first().map(|p| p.container) else {
            self.report(
                name,
                ActiveState::Failed,
                None,
                Some(format!("{} publishes no port to check", spec.unit)),
            )
            .await;
            return;
        };
        let key = match service_key(&self.store, &spec.key) {
            Ok(key) => key,
            Err(error) => {
                self.report(name, ActiveState::Failed, None, Some(error.to_string()))
                    .await;
                return;
            }
        };
        let (stop, stopped) = watch::channel(false);
        let sidekick = sidekick::Sidekick {
            spec: spec.clone(),
            key,
            machine: self.id.clone(),
            check_ip: self
                .publish_ip()
                .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
            container_port,
            advertise: self.config.advertise_addr.clone(),
        };
        let task = tokio::spawn(sidekick::run(
            sidekick,
            self.store.clone(),
            self.docker.clone(),
            stopped,
        ));
        self.sidekicks.insert(
            name.to_string(),
            SidekickTask {
                stop,
                task,
                watches: spec.unit.clone(),
            },
        );
        self.report(name, ActiveState::Active, None, None).await;
    }

    /// Where app containers publish their ports: the advertised address
    /// only (the proxy reaches them there), not every address of the host,
    /// which would let clients bypass the proxy. A host name, not an IP,
    /// publishes on every address as Docker does by default.
    fn publish_ip(&self) -> Option<std::net::IpAddr> {
        self.config.advertise_addr.parse().ok()
    }

    fn credentials_for(&self, image: &str) -> Option<DockerCredentials> {
        let (registry, name, secret) = self.config.registry.as_ref()?;
        image
            .starts_with(&format!("{registry}/"))
            .then(|| DockerCredentials {
                username: Some(name.clone()),
                password: Some(secret.clone()),
                serveraddress: Some(registry.clone()),
                ..Default::default()
            })
    }

    /// Writes `/paz/state/<unit>` on the agent's lease when it changed.
    async fn report(
        &mut self,
        unit: &str,
        active: ActiveState,
        container: Option<String>,
        reason: Option<String>,
    ) {
        let restarts = self.restarts.get(unit).map_or(0, |crashes| crashes.count);
        let previous = self.reported.get(unit);
        if previous.is_some_and(|p| {
            p.active == active
                && p.container == container
                && p.reason == reason
                && p.restarts == restarts
        }) {
            return;
        }
        let since = match previous {
            Some(p) if p.active == active => p.since,
            _ => now(),
        };
        let state = UnitState {
            machine: self.id.clone(),
            active,
            container,
            since,
            reason,
            restarts,
        };
        if self.lease.is_none() {
            match self.store.grant_lease(self.config.lease_ttl).await {
                Ok(lease) => self.lease = Some(lease),
                Err(error) => {
                    warn!(%error, "cannot grant the state lease");
                    return;
                }
            }
        }
        let (Ok(key), Some(lease)) = (self.store.keys().unit_state(unit), self.lease.as_ref())
        else {
            return;
        };
        match self.store.put_on_lease(&key, &state, lease).await {
            Ok(_) => {
                self.reported.insert(unit.to_string(), state);
            }
            Err(error) => {
                warn!(%error, "cannot report state; the lease may be gone");
                // A lost lease took every state key: grant a new one and report all again.
                self.lease = None;
                self.reported.clear();
            }
        }
    }

    async fn forget_state(&mut self, unit: &str) -> Result<()> {
        self.reported.remove(unit);
        let key = self.store.keys().unit_state(unit)?;
        self.store.delete(&key).await?;
        Ok(())
    }
}

/// The typed key of a sidekick's `--key` (`<prefix>/services/<app>/<release>/<i>`).
fn service_key(store: &Store, raw: &str) -> Result<Key<String>> {
    let refuse = || {
        AgentError::InvalidKey(format!(
            "--key {raw} is not {}/services/APP/RELEASE/INSTANCE",
            store.keys().root()
        ))
    };
    let service = store.keys().parse_service(raw).ok_or_else(refuse)?;
    Ok(store
        .keys()
        .service(&service.app, service.release, &service.instance)?)
}

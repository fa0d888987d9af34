//! Paz's agent: runs the units the scheduler placed on this machine.
//!
//! It registers `/paz/machines/<id>` on a lease, watches `/paz/schedule/` and
//! `/paz/units/`, and reconciles the local Docker Engine with them: "read
//! desired, read actual, make one step, repeat". Containers carry the labels
//! `paz.unit` and `paz.machine`, so a restarted agent adopts its own and
//! several agents can share one engine. Sidekick units become tasks that
//! health-check an instance and announce it. Every container's output is
//! copied into its app's log files on this host ([`logs`]), and the
//! agent's endpoint serves them, with the host's and the containers' stats
//! and metrics ([`endpoint`]).

#![forbid(unsafe_code)]

mod attach;
mod docker;
mod endpoint;
mod error;
mod logs;
mod sidekick;
mod stats;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use engine::Docker;
use store::records::{ActiveState, Machine, UnitState};
use store::{Key, Lease, Store, WatchEvent};
use support::now;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
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
    pub registry: Option<engine::RegistryLogin>,
    /// Between withdrawing an instance and stopping its container.
    pub drain: Duration,
    /// The lease TTL of the machine and state keys.
    pub lease_ttl: Duration,
    /// Where the agent's endpoint listens; `None`: a free port on the
    /// advertised address.
    pub endpoint_listen: Option<std::net::SocketAddr>,
    /// Bytes of log each app may keep on this host.
    pub log_cap: u64,
}

/// What each app may keep of its log on a host unless told (`--log-cap`).
pub const DEFAULT_LOG_CAP: u64 = 100 << 20;

/// A log cap as `--log-cap` takes it: a size as Docker writes one (`100m`,
/// `1g`), at least 64 KiB.
pub fn parse_log_cap(text: &str) -> std::result::Result<u64, String> {
    let bytes = units::memory_bytes(
        text.trim()
            .trim_end_matches(['i', 'I'])
            .trim_end_matches(['b', 'B']),
    )
    .map_err(|_| format!("--log-cap `{text}` is not a size such as 100m"))?;
    if bytes < 64 << 10 {
        return Err(format!(
            "--log-cap `{text}` is too small: give at least 64k"
        ));
    }
    Ok(bytes)
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
            endpoint_listen: None,
            log_cap: DEFAULT_LOG_CAP,
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

impl SidekickTask {
    /// Stops it: it withdraws its announcement, then ends.
    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// A unit's crashes since it was placed here: how many, and the last exit code.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Crashes {
    count: u32,
    last_exit: i64,
    /// Whether the kernel killed the last one for its memory.
    last_oom: bool,
}

/// Back-off after a crash or a failed start.
#[derive(Debug, Clone, Copy)]
struct Retry {
    attempts: u32,
    next: Instant,
}

/// A unit file as it arrived, parsed once: the unit, or why it is invalid.
type Parsed = std::result::Result<Unit, String>;

/// What the agent keeps of one unit it runs here (or reported on); dropped
/// whole when the unit leaves this machine.
#[derive(Default)]
struct Local {
    retry: Option<Retry>,
    crashes: Option<Crashes>,
    /// What was last written to `/paz/state/<unit>`.
    reported: Option<UnitState>,
    /// A sidekick unit's task.
    sidekick: Option<SidekickTask>,
    /// A one-off's container was made: it is never made again.
    one_off_made: bool,
}

/// The agent of one machine.
pub struct Agent {
    config: AgentConfig,
    store: Store,
    docker: Docker,
    id: String,
    /// The units the scheduler placed on this machine.
    placed: HashSet<String>,
    /// Every submitted unit (global units run unscheduled), parsed on arrival.
    units: HashMap<String, Parsed>,
    /// The units this agent runs or reported on.
    local: HashMap<String, Local>,
    /// Units whose container is being drained and stopped, each by a task of `stops`.
    stopping: HashSet<String>,
    stops: JoinSet<String>,
    lease: Option<Lease>,
    logs: logs::Logs,
    sampled: stats::Sampled,
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
        let docker = engine::connect().await?;
        let logs = logs::Logs::new(config.data_dir.join("logs"), config.log_cap, docker.clone());
        Ok(Agent {
            logs,
            sampled: stats::Sampled::default(),
            config,
            store,
            docker,
            id,
            placed: HashSet::new(),
            units: HashMap::new(),
            local: HashMap::new(),
            stopping: HashSet::new(),
            stops: JoinSet::new(),
            lease: None,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Runs until `shutdown` resolves. Containers keep running when the agent
    /// stops (static stability); sidekicks withdraw. A stop cut short by the
    /// shutdown is finished by the next start, which finds the container no
    /// longer placed here.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let keys = self.store.keys().clone();
        let secret = agent_secret(&self.store).await?;
        let listener = self.bind_endpoint().await?;
        let endpoint_url =
            self.endpoint_url(listener.local_addr().map_err(|source| AgentError::Listen {
                address: self.config.endpoint_listen,
                source,
            })?);
        let served = endpoint::router(endpoint::Endpoint {
            secret: std::sync::Arc::new(secret),
            logs: self.logs.clone(),
            sampled: self.sampled.clone(),
            runs: attach::Runs {
                docker: self.docker.clone(),
                store: self.store.clone(),
                machine: self.id.clone(),
                attached: Default::default(),
            },
        });
        let _endpoint = AbortOnDrop(tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, served).await {
                warn!(%error, "the agent endpoint stopped");
            }
        }));
        let _sampler = AbortOnDrop(tokio::spawn(stats::sample(
            self.docker.clone(),
            self.id.clone(),
            self.config.data_dir.clone(),
            self.sampled.clone(),
        )));
        let machine = Machine {
            addr: self.config.advertise_addr.clone(),
            metadata: self.config.metadata.clone(),
            started_at: now(),
            endpoint: Some(endpoint_url.clone()),
        };
        let machine_key = keys.machine(&self.id)?;
        let _registration = self
            .store
            .register(&machine_key, &machine, self.config.lease_ttl)
            .await
            .map_err(AgentError::Register)?;
        info!(machine = %self.id, addr = %machine.addr, endpoint = %endpoint_url, "agent registered");
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
                Some(stopped) = self.stops.join_next() => match stopped {
                    Ok(unit) => {
                        self.stopping.remove(&unit);
                    }
                    Err(error) => warn!(%error, "a container's stop task failed"),
                },
                _ = tick.tick() => {}
            }
            if schedules_known && units_known {
                self.reconcile().await;
            }
        }
        for local in self.local.into_values() {
            if let Some(sidekick) = local.sidekick {
                sidekick.stop().await;
            }
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
        let parse = |name: &str, text: &str| {
            units::parse_unit(name, text)
                .map_err(|error| format!("the unit file is invalid: {error}"))
        };
        match event {
            WatchEvent::Snapshot { entries, .. } => {
                self.units = entries
                    .into_iter()
                    .map(|entry| {
                        let name = prefix.child_name(&entry.key).to_string();
                        let parsed = parse(&name, &entry.value);
                        (name, parsed)
                    })
                    .collect();
            }
            WatchEvent::Put { key, value, .. } => {
                let name = prefix.child_name(&key).to_string();
                let parsed = parse(&name, &value);
                self.units.insert(name, parsed);
            }
            WatchEvent::Delete { key, .. } | WatchEvent::Invalid { key, .. } => {
                self.units.remove(prefix.child_name(&key));
            }
        }
    }

    /// One pass: start what should run and does not, stop what runs and
    /// should not, restart what crashed, and report.
    async fn reconcile(&mut self) {
        let desired = self.desired();
        let actual = match docker::list(&self.docker, &self.id).await {
            Ok(actual) => actual,
            Err(error) => {
                warn!(%error, "cannot list containers; will try again");
                return;
            }
        };
        for (unit, container) in &actual {
            // An attached one-off's output is its caller's, not the log's.
            if !container.attached {
                self.logs.copy(&container.id, unit);
            }
        }
        self.logs
            .retain(|id| actual.values().any(|container| container.id == id));
        // Sidekicks first: what stops withdraws before its container goes.
        self.stop_unwanted_sidekicks(&desired).await;
        self.stop_unplaced(&actual, &desired).await;
        self.forget_gone(&actual, &desired).await;
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

    /// What should run here: the units placed here whose file is known, and
    /// the global units whose metadata allows this machine.
    fn desired(&self) -> BTreeMap<String, Parsed> {
        self.units
            .iter()
            .filter(|(name, parsed)| {
                self.placed.contains(*name)
                    || parsed.as_ref().is_ok_and(|unit| {
                        unit.placement.global
                            && unit.placement.metadata_allows(&self.config.metadata)
                    })
            })
            .map(|(name, parsed)| (name.clone(), parsed.clone()))
            .collect()
    }

    /// Stops the sidekick tasks of units no longer wanted here, and
    /// forgets them.
    async fn stop_unwanted_sidekicks(&mut self, desired: &BTreeMap<String, Parsed>) {
        let wanted = |name: &str| matches!(desired.get(name), Some(Ok(unit)) if matches!(unit.exec, Exec::Sidekick(_)));
        let gone: Vec<String> = self
            .local
            .iter()
            .filter(|(name, local)| local.sidekick.is_some() && !wanted(name))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            if let Some(sidekick) = self.local.remove(&name).and_then(|l| l.sidekick) {
                sidekick.stop().await;
            }
            self.delete_state(&name).await;
        }
    }

    /// Containers that should no longer run here: their sidekicks withdraw,
    /// then each is drained and stopped by a task of its own.
    async fn stop_unplaced(
        &mut self,
        actual: &HashMap<String, docker::Actual>,
        desired: &BTreeMap<String, Parsed>,
    ) {
        for (unit, container) in actual {
            if desired.contains_key(unit) || !self.stopping.insert(unit.clone()) {
                continue;
            }
            // A sidekick still announcing this unit (placed elsewhere now) goes first.
            for local in self.local.values_mut() {
                if local.sidekick.as_ref().is_some_and(|s| &s.watches == unit) {
                    if let Some(sidekick) = local.sidekick.take() {
                        sidekick.stop().await;
                    }
                }
            }
            let (docker, store, machine, drain, logs) = (
                self.docker.clone(),
                self.store.clone(),
                self.id.clone(),
                self.config.drain,
                self.logs.clone(),
            );
            let (stopped, id, timeout) =
                (unit.clone(), container.id.clone(), container.stop_timeout);
            // An attached one-off's output was its caller's, never the log's.
            let attached = container.attached;
            info!(%unit, "no longer placed here: draining, then stopping");
            if container.running {
                logs.note(unit, "is no longer placed on this machine: stopping");
            }
            self.stops.spawn(async move {
                tokio::time::sleep(drain).await;
                let code = docker::stop(&docker, &id, timeout).await;
                if !attached {
                    logs.drained(&id, &stopped).await;
                }
                if let Some(code) = code {
                    logs.note(&stopped, format!("stopped (exit code {code})"));
                }
                docker::remove(&docker, &id).await;
                delete_own_state(&store, &machine, &stopped).await;
                stopped
            });
            self.local.remove(unit);
        }
    }

    /// Forgets units that are neither wanted nor have a container here (an
    /// invalid unit deleted, a start that never made a container): their
    /// state goes, so nothing waits on it.
    async fn forget_gone(
        &mut self,
        actual: &HashMap<String, docker::Actual>,
        desired: &BTreeMap<String, Parsed>,
    ) {
        let gone: Vec<String> = self
            .local
            .keys()
            .filter(|unit| {
                !desired.contains_key(*unit)
                    && !actual.contains_key(*unit)
                    && !self.stopping.contains(*unit)
            })
            .cloned()
            .collect();
        for unit in gone {
            if let Some(local) = self.local.remove(&unit) {
                if let Some(sidekick) = local.sidekick {
                    sidekick.stop().await;
                }
                if local.reported.is_some() {
                    self.delete_state(&unit).await;
                }
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
        if units::parse_run_name(name).is_some() {
            return self.keep_one_off(name, unit, spec, actual).await;
        }
        let local = self.local.entry(name.to_string()).or_default();
        if let Some(container) = actual.filter(|c| c.running && c.image == spec.image) {
            local.retry = None;
            let reason = restart_reason(local.crashes);
            let id = Some(container.id.clone());
            self.report(name, ActiveState::Active, id, reason).await;
            return;
        }
        if local.retry.is_some_and(|retry| retry.next > Instant::now()) {
            // Waiting to start it again: a container that died meanwhile is
            // not reported as running (a deploy would count it healthy).
            if let Some(container) = actual.filter(|c| !c.running) {
                let reason = format!(
                    "exited with code {}{}: starting it again in a moment",
                    container.exit_code,
                    if container.oom_killed {
                        " (killed for using more memory than its limit, OOM)"
                    } else {
                        ""
                    }
                );
                self.report(name, ActiveState::Activating, None, Some(reason))
                    .await;
            }
            return;
        }
        let crashed = actual.filter(|c| !c.running);
        if let Some(&docker::Actual {
            exit_code: code,
            oom_killed,
            ..
        }) = crashed
        {
            let crashes = local.crashes.get_or_insert_default();
            crashes.count += 1;
            crashes.last_exit = code;
            crashes.last_oom = oom_killed;
            info!(unit = %name, code, restarts = crashes.count, "container exited: restarting");
            self.sampled.set_restarts(name, crashes.count);
            if let Some(container) = actual {
                self.logs.drained(&container.id, name).await;
                let said = if container.oom_killed {
                    format!("was killed for using more memory than its limit (OOM), exit code {code}: restarting")
                } else {
                    format!("crashed with exit code {code}: restarting")
                };
                self.logs.note(name, said);
            }
        }
        let reason = crashed.map(|container| {
            if container.oom_killed {
                format!(
                    "restarting after it was killed for using more memory than its limit (OOM), exit code {}",
                    container.exit_code
                )
            } else {
                format!("restarting after exit code {}", container.exit_code)
            }
        });
        self.report(name, ActiveState::Activating, None, reason)
            .await;
        match self.start(name, unit, spec).await {
            Ok(id) => {
                info!(unit = %name, container = %id, "started");
                self.logs.note(
                    name,
                    format!("started in container {}", &id[..id.len().min(12)]),
                );
                self.logs.copy(&id, name);
                let reason = restart_reason(self.local.get(name).and_then(|l| l.crashes));
                self.report(name, ActiveState::Active, Some(id), reason)
                    .await;
            }
            Err(reason) => {
                warn!(unit = %name, %reason, "cannot start");
                self.logs.note(name, format!("cannot start: {reason}"));
                self.report(name, ActiveState::Failed, None, Some(reason))
                    .await;
            }
        }
        let local = self.local.entry(name.to_string()).or_default();
        let attempts = local.retry.map_or(0, |retry| retry.attempts) + 1;
        local.retry = Some(Retry {
            attempts,
            next: Instant::now() + retry_delay(attempts),
        });
    }

    /// A one-off (a `-run-` unit): made once, never started again. An
    /// attached one (`-i`) is created and waits: the attach of its caller
    /// (the endpoint's) starts it. Once it exits its state says how, until
    /// its unit goes and the container with it.
    async fn keep_one_off(
        &mut self,
        name: &str,
        unit: &Unit,
        spec: &units::ContainerSpec,
        actual: Option<&docker::Actual>,
    ) {
        match actual {
            Some(container) if container.running => {
                let id = Some(container.id.clone());
                self.report(name, ActiveState::Active, id, None).await;
            }
            Some(container) if container.created_only => {
                let id = Some(container.id.clone());
                let reason = Some("waiting for its caller to attach".to_string());
                self.report(name, ActiveState::Activating, id, reason).await;
            }
            Some(container) => {
                let code = container.exit_code;
                let reason = if container.oom_killed {
                    format!("killed for using more memory than its limit (OOM), exit code {code}")
                } else {
                    format!("exited with code {code}")
                };
                let first = self
                    .local
                    .get(name)
                    .and_then(|local| local.reported.as_ref())
                    .is_none_or(|state| state.active != ActiveState::Inactive);
                if first && !container.attached {
                    self.logs.drained(&container.id, name).await;
                    self.logs.note(name, reason.clone());
                }
                let id = Some(container.id.clone());
                let mut state = self.state_of(name, ActiveState::Inactive, id, Some(reason));
                state.exit_code = Some(code);
                self.write_state(name, state).await;
            }
            None if self.local.get(name).is_some_and(|local| local.one_off_made) => {
                // A start that failed keeps saying why.
                let failed = self
                    .local
                    .get(name)
                    .and_then(|local| local.reported.as_ref())
                    .is_some_and(|state| state.active == ActiveState::Failed);
                if !failed {
                    let reason = Some("its container is gone".to_string());
                    self.report(name, ActiveState::Inactive, None, reason).await;
                }
            }
            None => {
                self.local.entry(name.to_string()).or_default().one_off_made = true;
                // An attached one is only created: its caller's attach starts it.
                let made = match self.pull_if_needed(name, spec).await {
                    Ok(()) if spec.interactive => {
                        docker::create(&self.docker, self.placement(name, unit), spec).await
                    }
                    Ok(()) => docker::start(&self.docker, self.placement(name, unit), spec).await,
                    Err(reason) => Err(reason),
                };
                match made {
                    Ok(id) => {
                        info!(unit = %name, container = %id, "one-off made");
                        if !spec.interactive {
                            self.logs.note(
                                name,
                                format!("started in container {}", &id[..id.len().min(12)]),
                            );
                            self.logs.copy(&id, name);
                        }
                        let (active, reason) = if spec.interactive {
                            (
                                ActiveState::Activating,
                                Some("waiting for its caller to attach".to_string()),
                            )
                        } else {
                            (ActiveState::Active, None)
                        };
                        self.report(name, active, Some(id), reason).await;
                    }
                    Err(reason) => {
                        warn!(unit = %name, %reason, "cannot start a one-off");
                        self.logs.note(name, format!("cannot start: {reason}"));
                        self.report(name, ActiveState::Failed, None, Some(reason))
                            .await;
                    }
                }
            }
        }
    }

    /// Pulls the unit's image if it must, then starts its container.
    async fn start(
        &mut self,
        name: &str,
        unit: &Unit,
        spec: &units::ContainerSpec,
    ) -> std::result::Result<String, String> {
        self.pull_if_needed(name, spec).await?;
        docker::start(&self.docker, self.placement(name, unit), spec).await
    }

    /// Pulls `spec`'s image when it is missing, or Paz's by tag (the tag
    /// may have moved; a digest cannot, so a registry that is down does not
    /// stop a pinned image from starting again), saying so in the unit's
    /// state.
    async fn pull_if_needed(
        &mut self,
        name: &str,
        spec: &units::ContainerSpec,
    ) -> std::result::Result<(), String> {
        let login = self.config.registry.as_ref();
        let ours = login.is_some_and(|login| login.for_image(&spec.image).is_some());
        let by_tag = !spec.image.contains("@sha256:");
        if (ours && by_tag) || self.docker.inspect_image(&spec.image).await.is_err() {
            let mut state = self.state_of(name, ActiveState::Activating, None, None);
            state.pulling = true;
            self.write_state(name, state).await;
            let login = self.config.registry.as_ref();
            engine::pull(&self.docker, &spec.image, login)
                .await
                .map_err(|error| error.to_string())?;
        }
        Ok(())
    }

    /// Where the container of unit `name` goes, and how it stops.
    fn placement<'a>(&'a self, name: &'a str, unit: &Unit) -> docker::Placement<'a> {
        docker::Placement {
            machine: &self.id,
            unit: name,
            stop_timeout: unit.stop_timeout,
            publish_ip: self.publish_ip(),
        }
    }

    async fn keep_sidekick(
        &mut self,
        name: &str,
        spec: &units::SidekickSpec,
        desired: &BTreeMap<String, Parsed>,
    ) {
        if self.local.get(name).is_some_and(|l| l.sidekick.is_some()) {
            self.report(name, ActiveState::Active, None, None).await;
            return;
        }
        let task = match self.sidekick_for(spec, desired) {
            Ok(sidekick) => {
                let (stop, stopped) = watch::channel(false);
                let (store, docker) = (self.store.clone(), self.docker.clone());
                SidekickTask {
                    stop,
                    task: tokio::spawn(sidekick::run(sidekick, store, docker, stopped)),
                    watches: spec.unit.clone(),
                }
            }
            Err(reason) => {
                self.report(name, ActiveState::Failed, None, Some(reason))
                    .await;
                return;
            }
        };
        self.local.entry(name.to_string()).or_default().sidekick = Some(task);
        self.report(name, ActiveState::Active, None, None).await;
    }

    /// The sidekick of `spec`, or why it cannot run here.
    fn sidekick_for(
        &self,
        spec: &units::SidekickSpec,
        desired: &BTreeMap<String, Parsed>,
    ) -> std::result::Result<sidekick::Sidekick, String> {
        let Some(Ok(Unit {
            exec: Exec::Container(watched),
            ..
        })) = desired.get(&spec.unit)
        else {
            return Err(format!(
                "it announces {}, which is not placed on this machine",
                spec.unit
            ));
        };
        let Some(container_port) = watched.ports.first().map(|p| p.container) else {
            return Err(format!("{} publishes no port to check", spec.unit));
        };
        let key = service_key(&self.store, &spec.key).map_err(|error| error.to_string())?;
        Ok(sidekick::Sidekick {
            logs: self.logs.clone(),
            spec: spec.clone(),
            key,
            machine: self.id.clone(),
            check_ip: self
                .publish_ip()
                .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
            container_port,
            advertise: self.config.advertise_addr.clone(),
        })
    }

    /// Where app containers publish their ports: the advertised address
    /// only (the proxy reaches them there), not every address of the host,
    /// which would let clients bypass the proxy. A host name, not an IP,
    /// publishes on every address as Docker does by default.
    fn publish_ip(&self) -> Option<std::net::IpAddr> {
        self.config.advertise_addr.parse().ok()
    }

    /// Writes `/paz/state/<unit>` on the agent's lease when it changed.
    async fn report(
        &mut self,
        unit: &str,
        active: ActiveState,
        container: Option<String>,
        reason: Option<String>,
    ) {
        let state = self.state_of(unit, active, container, reason);
        self.write_state(unit, state).await;
    }

    /// The state of `unit` to report, with its crashes counted.
    fn state_of(
        &self,
        unit: &str,
        active: ActiveState,
        container: Option<String>,
        reason: Option<String>,
    ) -> UnitState {
        let crashes = self.local.get(unit).and_then(|local| local.crashes);
        UnitState {
            machine: self.id.clone(),
            active,
            container,
            since: now(),
            reason,
            restarts: crashes.map_or(0, |crashes| crashes.count),
            pulling: false,
            exit_code: None,
        }
    }

    /// Writes `state` to `/paz/state/<unit>` on the agent's lease, unless it
    /// says what was written last.
    async fn write_state(&mut self, unit: &str, state: UnitState) {
        let local = self.local.entry(unit.to_string()).or_default();
        let Some(state) = changed(local.reported.as_ref(), state) else {
            return;
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
            Ok(_) => self.local.entry(unit.to_string()).or_default().reported = Some(state),
            Err(error) => {
                warn!(%error, "cannot report state; the lease may be gone");
                // A lost lease took every state key: grant a new one and report all again.
                self.lease = None;
                for local in self.local.values_mut() {
                    local.reported = None;
                }
            }
        }
    }

    async fn delete_state(&self, unit: &str) {
        delete_own_state(&self.store, &self.id, unit).await;
    }
}

/// Aborts its task when dropped: what the agent runs beside its loop ends with it.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The cluster's agent secret, made by the first agent that finds none
/// (a create-if-absent transaction: two agents starting at once agree).
async fn agent_secret(store: &Store) -> Result<String> {
    let key = store.keys().agent_secret();
    if let Some(secret) = store.get(&key).await? {
        return Ok(secret.value);
    }
    let made = hex::encode(rand::random::<[u8; 32]>());
    match store.create(&key, &made).await {
        Ok(_) => Ok(made),
        Err(error) if error.conflict().is_some() => match store.get(&key).await? {
            Some(secret) => Ok(secret.value),
            None => Err(error.into()),
        },
        Err(error) => Err(error.into()),
    }
}

impl Agent {
    /// Binds the endpoint's listener: `--agent-listen`, else a free port
    /// on the advertised address (any address when that is a name).
    async fn bind_endpoint(&self) -> Result<tokio::net::TcpListener> {
        let address = self.config.endpoint_listen.unwrap_or_else(|| {
            let ip = self
                .publish_ip()
                .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
            std::net::SocketAddr::new(ip, 0)
        });
        tokio::net::TcpListener::bind(address)
            .await
            .map_err(|source| AgentError::Listen {
                address: Some(address),
                source,
            })
    }

    /// The URL other hosts reach the endpoint at: its own address, or the
    /// advertised one where it listens on every address.
    fn endpoint_url(&self, bound: std::net::SocketAddr) -> String {
        let host = if bound.ip().is_unspecified() {
            self.config.advertise_addr.clone()
        } else {
            bound.ip().to_string()
        };
        match host.parse::<std::net::Ipv6Addr>() {
            Ok(_) => format!("http://[{host}]:{}", bound.port()),
            Err(_) => format!("http://{host}:{}", bound.port()),
        }
    }
}

/// Deletes `/paz/state/<unit>` if this machine wrote it: the unit may run
/// on another machine now, whose agent reports under the same key.
async fn delete_own_state(store: &Store, machine: &str, unit: &str) {
    let Ok(key) = store.keys().unit_state(unit) else {
        return;
    };
    let deleted = match store.get(&key).await {
        Ok(Some(state)) if state.value.machine == machine => {
            store.delete_if_unchanged(&key, state.mod_revision).await
        }
        Ok(_) => return,
        Err(error) => Err(error),
    };
    if let Err(error) = deleted {
        if error.conflict().is_none() {
            warn!(%unit, %error, "cannot delete a unit's state");
        }
    }
}

/// `state` to write when it differs from what was `reported` (keeping
/// the time it entered its state when only the reason or container
/// changed), or `None` when it says the same.
fn changed(reported: Option<&UnitState>, mut state: UnitState) -> Option<UnitState> {
    if let Some(previous) = reported {
        let same = previous.active == state.active
            && previous.container == state.container
            && previous.reason == state.reason
            && previous.restarts == state.restarts
            && previous.pulling == state.pulling;
        if same {
            return None;
        }
        if previous.active == state.active {
            state.since = previous.since;
        }
    }
    Some(state)
}

/// What a unit's state says about its crashes, if it had any.
fn restart_reason(crashes: Option<Crashes>) -> Option<String> {
    crashes.map(|crashes| {
        let last = if crashes.last_oom {
            format!(
                "killed for using more memory than its limit (OOM), exit code {}",
                crashes.last_exit
            )
        } else {
            format!("with exit code {}", crashes.last_exit)
        };
        format!(
            "restarted {} times after crashes, the last {last}",
            crashes.count
        )
    })
}

/// How long to wait before trying a unit again after `attempts` tries:
/// 2, 4, 8, 16, then 30 seconds.
fn retry_delay(attempts: u32) -> Duration {
    Duration::from_secs((1u64 << attempts.min(5)).min(30))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn state(active: ActiveState, since: u64, reason: Option<&str>) -> UnitState {
        UnitState {
            machine: "8c1f".into(),
            active,
            container: Some("c0ffee".into()),
            since,
            reason: reason.map(str::to_string),
            restarts: 0,
            pulling: false,
            exit_code: None,
        }
    }

    #[test]
    fn a_state_is_written_when_it_changes_and_keeps_when_it_began() {
        let first = state(ActiveState::Active, 100, None);
        assert_eq!(changed(None, first.clone()), Some(first.clone()));
        // The same again: nothing to write.
        assert_eq!(
            changed(Some(&first), state(ActiveState::Active, 160, None)),
            None
        );
        // Another reason in the same state: written, still active since 100.
        let noted = changed(
            Some(&first),
            state(ActiveState::Active, 160, Some("restarted 1 times")),
        )
        .unwrap();
        assert_eq!(noted.since, 100);
        // Another state: since now.
        let failed = changed(Some(&first), state(ActiveState::Failed, 170, None)).unwrap();
        assert_eq!(failed.since, 170);
    }

    #[test]
    fn retries_back_off_to_half_a_minute() {
        let delays: Vec<u64> = (1..=7).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(delays, [2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn crashes_are_told_with_their_last_exit_code() {
        assert_eq!(restart_reason(None), None);
        let mut crashes = Crashes {
            count: 3,
            last_exit: 137,
            last_oom: false,
        };
        assert_eq!(
            restart_reason(Some(crashes)).as_deref(),
            Some("restarted 3 times after crashes, the last with exit code 137")
        );
        crashes.last_oom = true;
        assert_eq!(
            restart_reason(Some(crashes)).as_deref(),
            Some("restarted 3 times after crashes, the last killed for using more memory than its limit (OOM), exit code 137")
        );
    }
}

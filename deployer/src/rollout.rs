//! The rolling deploy of one release: its instances' units are submitted one
//! at a time (or a batch at a time); each must be announced by its sidekick
//! (health check passed) before one old instance is removed; when all run,
//! `/paz/apps/<app>/current` names the release. If a new instance is not
//! healthy in time, the new units go, the removed old ones come back, and
//! the release is marked failed with the reason.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use store::records::{ActiveState, App, Release, ReleaseStatus};
use store::{AppName, Store};
use tokio::sync::{mpsc, Mutex};
use tracing::{info, warn};
use units::{render_instance, Instance};

#[derive(Debug, Clone)]
pub struct DeployConfig {
    /// How long a new instance may take to pass its health check.
    pub health_timeout: Duration,
    /// Instances started before an old one is removed.
    pub batch: usize,
}

impl Default for DeployConfig {
    fn default() -> Self {
        DeployConfig {
            health_timeout: Duration::from_secs(60),
            batch: 1,
        }
    }
}

/// Runs a Procfile's `release:` command once before a rollout (`paz` gives
/// the builder, which owns Docker on the server).
pub trait ReleasePhase: Send + Sync + std::fmt::Debug {
    fn run(
        &self,
        app: AppName,
        image: String,
        command: String,
        env: Vec<(String, String)>,
        report: mpsc::Sender<String>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;
}

/// Crashes of a new instance that fail its deploy at once, rather than at the
/// deploy timeout: the agent restarts a crashed container after 2 s, then 4 s.
const CRASHES_TO_FAIL: u32 = 2;

/// Why a new instance will not come up, if its agent's report says so: it
/// failed to start, or it keeps crashing.
fn broken(unit: &str, state: &store::records::UnitState) -> Option<String> {
    let name = unit.trim_end_matches(".service");
    let reason = state.reason.as_deref().unwrap_or("no reason given");
    if state.active == ActiveState::Failed {
        return Some(format!("{name} failed: {reason}"));
    }
    (state.restarts >= CRASHES_TO_FAIL).then(|| {
        format!(
            "{name} keeps crashing: it exited {} times ({reason})",
            state.restarts
        )
    })
}

/// Rolls releases out; one deploy per app at a time (the next waits).
#[derive(Debug, Clone)]
pub struct Deployer {
    store: Store,
    config: DeployConfig,
    locks: Arc<Mutex<HashMap<AppName, Arc<Mutex<()>>>>>,
    release_phase: Option<Arc<dyn ReleasePhase>>,
    /// Pins image references to digests and reads their ports for releases.
    images: Option<Arc<dyn store::ImageResolver>>,
}

/// A unit as submitted: its name and text.
type UnitText = (String, String);

/// The release number in a unit name such as `demo-v7-web-1.service`.
fn release_of(unit: &str) -> Option<u64> {
    units::parse_instance_name(unit).map(|name| name.release)
}

impl Deployer {
    pub fn new(store: Store, config: DeployConfig) -> Deployer {
        Deployer {
            store,
            config,
            locks: Arc::default(),
            release_phase: None,
            images: None,
        }
    }

    /// Resolves image references with `images` when releases are made.
    pub fn with_images(mut self, images: Arc<dyn store::ImageResolver>) -> Deployer {
        self.images = Some(images);
        self
    }

    /// The app whose repository in Paz's registry `reference` names, if any.
    pub fn image_owner(&self, reference: &str) -> Option<AppName> {
        self.images.as_ref()?.owner(reference)
    }

    /// `reference` pinned to its digest, with the ports it exposes; as it is
    /// when no resolver was given.
    pub async fn resolve_image(&self, reference: &str) -> Result<store::ResolvedImage, String> {
        match &self.images {
            Some(images) => images.resolve(reference).await,
            None => Ok(store::ResolvedImage {
                image: reference.to_string(),
                source: None,
                exposed_ports: Vec::new(),
            }),
        }
    }

    /// Runs Procfile `release:` commands with `phase`; without one, a
    /// release that has such a command is refused.
    pub fn with_release_phase(mut self, phase: Arc<dyn ReleasePhase>) -> Deployer {
        self.release_phase = Some(phase);
        self
    }

    /// Rolls release `n` of `app` out, reporting each step on `report`.
    pub async fn roll_out(
        &self,
        app: &AppName,
        n: u64,
        report: &mpsc::Sender<String>,
    ) -> Result<(), String> {
        let _held = self.hold(app, report).await?;
        let serving = self
            .store
            .get(&self.store.keys().current(app))
            .await
            .map_err(|e| e.to_string())?
            .map(|v| v.value);
        let result = self.roll_out_locked(app, n, report).await;
        let status = match &result {
            Ok(()) => ReleaseStatus::Active,
            // A failed scale of the serving release leaves it serving.
            Err(_) if serving == Some(n) => ReleaseStatus::Active,
            Err(_) => ReleaseStatus::Failed,
        };
        if let Err(error) = self.set_status(app, n, status).await {
            warn!(%app, n, %error, "cannot record the release's status");
        }
        result
    }

    /// Restarts the current release's instances one at a time: each is
    /// withdrawn, drained and stopped, then started again and waited for.
    pub async fn restart(
        &self,
        app: &AppName,
        report: &mpsc::Sender<String>,
    ) -> Result<(), String> {
        let _held = self.hold(app, report).await?;
        let keys = self.store.keys();
        let n = self
            .store
            .get(&keys.current(app))
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{app} runs no release yet: deploy it first"))?
            .value;
        let listing = self
            .store
            .list(&keys.units())
            .await
            .map_err(|e| e.to_string())?;
        let mut instances: Vec<(String, String)> = listing
            .entries
            .into_iter()
            .map(|entry| (keys.units().child_name(&entry.key).to_string(), entry.value))
            .filter(|(name, _)| {
                units::parse_instance_name(name)
                    .is_some_and(|i| i.app == app.as_str() && i.release == n && !i.sidekick)
            })
            .collect();
        instances.sort();
        for (name, text) in instances {
            let sidekick = sidekick_of(&name);
            let sidekick_text = self.unit_text(&sidekick).await?;
            let short = name.trim_end_matches(".service").to_string();
            let _ = report.send(format!("-----> Restarting {short}")).await;
            self.withdraw(&[(name.clone(), text.clone())]).await;
            self.until_withdrawn(app, &name).await;
            // Started again only once its container is gone.
            self.until_gone(&name).await?;
            let mut again = vec![(name.clone(), text)];
            if let Some(text) = sidekick_text {
                again.push((sidekick, text));
            }
            self.submit(&again).await?;

            let instance = units::parse_instance_name(&name)
                .ok_or_else(|| format!("{name} is not an instance"))?;
            let waited = Instant::now();
            if instance.process == "web" {
                self.until_announced(app, n, instance.index, &name, report)
                    .await?;
            } else {
                self.until_running(&name, report).await?;
            }
            let _ = report
                .send(format!(
                    "       {short} healthy after {:.1} s",
                    waited.elapsed().as_secs_f64()
                ))
                .await;
        }
        let _ = report.send(format!("-----> Restarted {app} v{n}")).await;
        Ok(())
    }

    /// Waits for the app's turn: first in this process, then across servers.
    async fn hold(
        &self,
        app: &AppName,
        report: &mpsc::Sender<String>,
    ) -> Result<(tokio::sync::OwnedMutexGuard<()>, store::Lease), String> {
        let lock = self
            .locks
            .lock()
            .await
            .entry(app.clone())
            .or_default()
            .clone();
        let in_process = lock.lock_owned().await;
        Ok((in_process, self.lock_app(app, report).await?))
    }

    /// Holds `/paz/leader/deploy-<app>` (on a lease, so a dead server's hold
    /// ends with it) while this server deploys `app`: one deploy per app at a
    /// time across servers; the next waits. Dropping the lease releases it.
    pub async fn lock_app(
        &self,
        app: &AppName,
        report: &mpsc::Sender<String>,
    ) -> Result<store::Lease, String> {
        let key = self
            .store
            .keys()
            .leader(&format!("deploy-{app}"))
            .map_err(|e| e.to_string())?;
        let lease = self
            .store
            .grant_lease(Duration::from_secs(15))
            .await
            .map_err(|e| e.to_string())?;
        let mut told = false;
        loop {
            let taken = self
                .store
                .transaction()
                .require_absent(&key)
                .put_on_lease(&key, &std::process::id().to_string(), &lease)
                .commit()
                .await;
            match taken {
                Ok(_) => return Ok(lease),
                Err(store::StoreError::Conflict { .. }) => {
                    if !told {
                        let _ = report
                            .send(format!(
                                "-----> Waiting for the deploy of {app} in progress"
                            ))
                            .await;
                        told = true;
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Err(error) => return Err(error.to_string()),
            }
        }
    }

    async fn roll_out_locked(
        &self,
        app: &AppName,
        n: u64,
        report: &mpsc::Sender<String>,
    ) -> Result<(), String> {
        let say = |line: String| async move {
            let _ = report.send(line).await;
        };
        let keys = self.store.keys();
        let record: App = self
            .store
            .get(&keys.app(app))
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("app {app} does not exist"))?
            .value;
        let release: Release = self
            .store
            .get(&keys.release(app, n))
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{app} has no release v{n}"))?
            .value;
        self.set_status(app, n, ReleaseStatus::Deploying).await?;
        let serving = self
            .store
            .get(&keys.current(app))
            .await
            .map_err(|e| e.to_string())?
            .map(|v| v.value);
        // The release phase, once per release (not again for ps:scale).
        if let (Some(command), false) = (&release.release_command, serving == Some(n)) {
            let phase = self.release_phase.as_ref().ok_or_else(|| {
                format!("v{n} has a release command but no server here can run it")
            })?;
            say(format!("-----> Running release command: {command}")).await;
            phase
                .run(
                    app.clone(),
                    release.image.clone(),
                    command.clone(),
                    release.env.clone().into_iter().collect(),
                    report.clone(),
                )
                .await
                .map_err(|reason| format!("v{n} was not deployed: {reason}"))?;
        }

        // What runs: web (at least one) and, when scaled, the Procfile's worker.
        let mut plan: Vec<(&str, u32)> = vec![("web", record.scale.web.max(1))];
        if record.scale.worker > 0 {
            if release.processes.contains_key("worker") {
                plan.push(("worker", record.scale.worker));
            } else {
                say(format!(
                    "-----> v{n} has no worker process (Procfile `worker:`): none runs"
                ))
                .await;
            }
        }
        // The app's units of other releases per process type (the newest old
        // instance is replaced first);
        // and this release's instances beyond the counts (scaled down).
        let listing = self
            .store
            .list(&keys.units())
            .await
            .map_err(|e| e.to_string())?;
        let mut old: BTreeMap<String, BTreeMap<(u64, String), UnitText>> = BTreeMap::new();
        let mut surplus: Vec<UnitText> = Vec::new();
        for entry in listing.entries {
            let name = keys.units().child_name(&entry.key).to_string();
            let Some(instance) = units::parse_instance_name(&name) else {
                continue;
            };
            if instance.app != app.as_str() || instance.sidekick {
                continue;
            }
            let wanted = plan
                .iter()
                .find(|(process, _)| *process == instance.process)
                .map_or(0, |(_, count)| *count);
            if instance.release != n {
                old.entry(instance.process.to_string())
                    .or_default()
                    .insert((instance.release, name.clone()), (name, entry.value));
            } else if instance.index > wanted {
                surplus.push((name, entry.value));
            }
        }
        // Units this deploy wrote, and old ones it removed: on any error
        // after the first write, the first go and the second come back.
        let mut started: Vec<UnitText> = Vec::new();
        let mut removed: Vec<UnitText> = Vec::new();
        let rolled = async {
            for (process, wanted) in &plan {
                let mut old: Vec<UnitText> = old
                    .remove(*process)
                    .map(|units| units.into_values().collect())
                    .unwrap_or_default();
                let mut index = 1;
                while index <= *wanted {
                    let batch_end = (index + self.config.batch.max(1) as u32 - 1).min(*wanted);
                    let mut batch = Vec::new();
                    for i in index..=batch_end {
                        let (unit, sidekick) = self.render(&record, &release, n, process, i)?;
                        // A unit of this name removed a moment ago (a failed
                        // scale, retried) may still be stopping: its state is
                        // not the new instance's.
                        let key = self.store.keys().unit(&unit.0).map_err(|e| e.to_string())?;
                        if matches!(self.store.get(&key).await, Ok(None)) {
                            self.until_gone(&unit.0).await?;
                        }
                        let mut submitted = vec![unit.clone()];
                        submitted.extend(sidekick);
                        // Only what was written is this deploy's to take back (a
                        // running instance of this release is left alone).
                        started.extend(self.submit(&submitted).await?);
                        batch.push((i, unit.0));
                    }
                    for (i, unit) in &batch {
                        let waited = Instant::now();
                        let ready = match *process {
                            "web" => self.until_announced(app, n, *i, unit, report).await,
                            _ => self.until_running(unit, report).await,
                        };
                        match ready {
                            Ok(()) => {
                                let how = if *process == "web" {
                                    "healthy"
                                } else {
                                    "running"
                                };
                                say(format!(
                                    "       {} {how} after {:.1} s",
                                    unit.trim_end_matches(".service"),
                                    waited.elapsed().as_secs_f64()
                                ))
                                .await;
                            }
                            Err(reason) => return Err(reason),
                        }
                    }
                    for _ in &batch {
                        if let Some((name, text)) = old.pop() {
                            say(format!(
                                "-----> Stopping {}",
                                name.trim_end_matches(".service")
                            ))
                            .await;
                            let sidekick = sidekick_of(&name);
                            let sidekick_text = self.unit_text(&sidekick).await?;
                            self.withdraw(&[(name.clone(), text.clone())]).await;
                            self.until_withdrawn(app, &name).await;
                            removed.push((name, text));
                            if let Some(text) = sidekick_text {
                                removed.push((sidekick, text));
                            }
                        }
                    }
                    index = batch_end + 1;
                }
                surplus.extend(old);
            }
            Ok::<(), String>(())
        }
        .await;
        if let Err(reason) = rolled {
            say(format!("-----> {reason}; rolling back")).await;
            self.withdraw(&started).await;
            self.submit_all(&removed).await;
            return Err(format!("v{n} failed: {reason}"));
        }
        // Fewer instances than before, and process types no longer run: they go too.
        surplus.extend(old.into_values().flat_map(BTreeMap::into_values));
        for (name, text) in surplus {
            say(format!(
                "-----> Stopping {}",
                name.trim_end_matches(".service")
            ))
            .await;
            self.withdraw(&[(name.clone(), text)]).await;
            self.until_withdrawn(app, &name).await;
        }
        let previous = self
            .store
            .get(&keys.current(app))
            .await
            .map_err(|e| e.to_string())?
            .map(|v| v.value);
        self.store
            .put(&keys.current(app), &n)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(previous) = previous.filter(|p| *p != n) {
            if let Err(error) = self
                .set_status(app, previous, ReleaseStatus::Superseded)
                .await
            {
                warn!(%app, previous, %error, "cannot mark the previous release superseded");
            }
        }
        let domain = self
            .store
            .get(&keys.domain())
            .await
            .ok()
            .flatten()
            .map(|v| v.value)
            .unwrap_or_else(|| "paz.localhost".to_string());
        say(format!("-----> Released v{n}: http://{app}.{domain}")).await;
        info!(%app, n, "released");
        Ok(())
    }

    /// The unit of one instance, and for `web` its sidekick (a worker has no
    /// port to check: it is ready when it runs).
    fn render(
        &self,
        app: &App,
        release: &Release,
        n: u64,
        process: &str,
        index: u32,
    ) -> Result<(UnitText, Option<UnitText>), String> {
        let keys = self.store.keys();
        let service_key = keys
            .service(&app.name, n, &index.to_string())
            .map_err(|e| e.to_string())?;
        // A Procfile line is shell, as on Heroku: `sh -c LINE`.
        let command = release
            .processes
            .get(process)
            .map(|line| vec!["sh".to_string(), "-c".to_string(), line.clone()])
            .unwrap_or_default();
        let instance = Instance {
            app: app.name.to_string(),
            release: n,
            process: process.to_string(),
            index,
            image: release.image.clone(),
            port: store::images::instance_port(app.port, &release.exposed_ports),
            env: release.env.clone().into_iter().collect(),
            command,
            service_key: service_key.as_str().to_string(),
            health_path: app.health.path.clone(),
            health_timeout: app.health.timeout,
            health_attempts: app.health.attempts,
            stop_timeout: 10,
        };
        let (unit, sidekick) = render_instance(&instance)?;
        let sidekick = (process == "web").then_some((sidekick.name, sidekick.text));
        Ok(((unit.name, unit.text), sidekick))
    }

    /// Writes the units that are not already there as they are (an
    /// unchanged unit is left alone, so its container keeps running).
    /// A unit's text, if it is submitted.
    async fn unit_text(&self, name: &str) -> Result<Option<String>, String> {
        let key = self.store.keys().unit(name).map_err(|e| e.to_string())?;
        Ok(self
            .store
            .get(&key)
            .await
            .map_err(|e| e.to_string())?
            .map(|v| v.value))
    }

    /// Returns the units it wrote.
    async fn submit(&self, units: &[UnitText]) -> Result<Vec<UnitText>, String> {
        let keys = self.store.keys();
        let mut txn = self.store.transaction();
        let mut written = Vec::new();
        for (name, text) in units {
            let key = keys.unit(name).map_err(|e| e.to_string())?;
            let existing = self.store.get(&key).await.map_err(|e| e.to_string())?;
            if existing.is_some_and(|v| &v.value == text) {
                continue;
            }
            txn = txn.put(&key, text);
            written.push((name.clone(), text.clone()));
        }
        txn.commit().await.map_err(|e| e.to_string())?;
        Ok(written)
    }

    async fn submit_all(&self, units: &[UnitText]) {
        if let Err(error) = self.submit(units).await {
            warn!(%error, "cannot restore the old instances");
        }
    }

    /// Waits (a bounded time) until the agent has stopped what ran as `unit`
    /// and deleted its state, so that a new instance of that name starts clean.
    async fn until_gone(&self, unit: &str) -> Result<(), String> {
        let state = self
            .store
            .keys()
            .unit_state(unit)
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if matches!(self.store.get(&state).await, Ok(None)) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    /// Removes units (and their sidekicks); the agents withdraw, drain and stop.
    async fn withdraw(&self, units: &[UnitText]) {
        let keys = self.store.keys();
        let mut txn = self.store.transaction();
        for (name, _) in units {
            for name in [name.clone(), sidekick_of(name)] {
                if let Ok(key) = keys.unit(&name) {
                    txn = txn.delete(&key);
                }
            }
        }
        if let Err(error) = txn.commit().await {
            warn!(%error, "cannot remove units");
        }
    }

    /// Waits (a bounded time) until a removed instance is no longer announced,
    /// so the proxy sends it nothing new by the time the deploy goes on.
    async fn until_withdrawn(&self, app: &AppName, unit: &str) {
        let (Some(release), Some(index)) = (release_of(unit), index_of(unit)) else {
            return;
        };
        let Ok(key) = self.store.keys().service(app, release, &index.to_string()) else {
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            match self.store.get(&key).await {
                Ok(None) => return,
                Ok(Some(_)) | Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        warn!(%app, unit, "the removed instance is still announced; going on");
    }

    /// Waits for the instance's sidekick to announce it; fails early if its
    /// container fails.
    async fn until_announced(
        &self,
        app: &AppName,
        n: u64,
        index: u32,
        unit: &str,
        report: &mpsc::Sender<String>,
    ) -> Result<(), String> {
        let keys = self.store.keys();
        let service = keys
            .service(app, n, &index.to_string())
            .map_err(|e| e.to_string())?;
        let schedule = keys.schedule(unit).map_err(|e| e.to_string())?;
        let state = keys.unit_state(unit).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + self.config.health_timeout;
        let mut told_machine = false;
        let mut last_reason = None;
        while Instant::now() < deadline {
            if !told_machine {
                told_machine = self.tell_machine(&schedule, unit, report).await;
            }
            if let Ok(Some(_)) = self.store.get(&service).await {
                return Ok(());
            }
            if let Ok(Some(state)) = self.store.get(&state).await {
                if let Some(error) = broken(unit, &state.value) {
                    return Err(error);
                }
                last_reason = state.value.reason.clone();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let placed = if told_machine {
            ""
        } else {
            " (it was never placed on a machine)"
        };
        Err(format!(
            "{} did not pass its health check within {} s{placed}{}{}",
            unit.trim_end_matches(".service"),
            self.config.health_timeout.as_secs(),
            last_reason.map(|r| format!(": {r}")).unwrap_or_default(),
            self.health_advice(app, n).await
        ))
    }

    /// What a failed health check checked, and how to fix it.
    async fn health_advice(&self, app: &AppName, n: u64) -> String {
        let keys = self.store.keys();
        let (Ok(Some(record)), Ok(Some(release))) = (
            self.store.get(&keys.app(app)).await,
            self.store.get(&keys.release(app, n)).await,
        ) else {
            return String::new();
        };
        let (record, release) = (record.value, release.value);
        let port = store::images::instance_port(record.port, &release.exposed_ports);
        let why = match (record.port, release.exposed_ports.first()) {
            (Some(_), _) => "the app's port setting",
            (None, Some(_)) => "the image's first EXPOSE",
            (None, None) => "the default",
        };
        let exposed = match release.exposed_ports.as_slice() {
            [] => "no port".to_string(),
            ports => ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        };
        format!(
            "; it checked GET {} on port {port} ({why}), and the image exposes {exposed}: make the app listen on $PORT, EXPOSE the port it listens on in its Dockerfile, or set it with `ports:set {app} PORT`",
            record.health.path
        )
    }

    /// Says on which machine `unit` starts, once it is placed; whether it said.
    async fn tell_machine(
        &self,
        schedule: &store::Key<String>,
        unit: &str,
        report: &mpsc::Sender<String>,
    ) -> bool {
        let Ok(Some(machine)) = self.store.get(schedule).await else {
            return false;
        };
        let short: String = machine.value.chars().take(8).collect();
        let _ = report
            .send(format!(
                "-----> Starting {} on machine {short}",
                unit.trim_end_matches(".service")
            ))
            .await;
        true
    }

    /// Waits until a worker's container runs (its agent says active).
    async fn until_running(&self, unit: &str, report: &mpsc::Sender<String>) -> Result<(), String> {
        let keys = self.store.keys();
        let state = keys.unit_state(unit).map_err(|e| e.to_string())?;
        let schedule = keys.schedule(unit).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + self.config.health_timeout;
        let mut told_machine = false;
        while Instant::now() < deadline {
            if !told_machine {
                told_machine = self.tell_machine(&schedule, unit, report).await;
            }
            if let Ok(Some(state)) = self.store.get(&state).await {
                if let Some(error) = broken(unit, &state.value) {
                    return Err(error);
                }
                if state.value.active == ActiveState::Active {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(format!(
            "{} did not start within {} s",
            unit.trim_end_matches(".service"),
            self.config.health_timeout.as_secs()
        ))
    }

    async fn set_status(&self, app: &AppName, n: u64, status: ReleaseStatus) -> Result<(), String> {
        let key = self.store.keys().release(app, n);
        for _ in 0..5 {
            let Some(current) = self.store.get(&key).await.map_err(|e| e.to_string())? else {
                return Err(format!("{app} has no release v{n}"));
            };
            let mut release = current.value;
            release.status = status;
            match self
                .store
                .update(&key, current.mod_revision, &release)
                .await
            {
                Ok(_) => return Ok(()),
                Err(store::StoreError::Conflict { .. }) => continue,
                Err(error) => return Err(error.to_string()),
            }
        }
        Err(format!("release v{n} of {app} kept changing"))
    }
}

/// The instance number in a unit name such as `demo-v7-web-3.service`.
fn index_of(unit: &str) -> Option<u32> {
    units::parse_instance_name(unit)
        .filter(|name| !name.sidekick)
        .map(|name| name.index)
}

fn sidekick_of(unit: &str) -> String {
    format!("{}-announce.service", unit.trim_end_matches(".service"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_numbers_come_from_unit_names() {
        assert_eq!(release_of("demo-v7-web-1.service"), Some(7));
        assert_eq!(release_of("my-v2-app-v12-web-3.service"), Some(12));
        assert_eq!(release_of("plain.service"), None);
        assert_eq!(index_of("demo-v7-web-3.service"), Some(3));
        assert_eq!(index_of("demo-v7-web-3-announce.service"), None);
        assert_eq!(
            sidekick_of("demo-v7-web-1.service"),
            "demo-v7-web-1-announce.service"
        );
    }
}

//! The rolling deploy of one release: its instances' units are submitted one
//! at a time (or a batch at a time); each must be announced by its sidekick
//! (health check passed) before one old instance is removed; when all run,
//! `/paz/apps/<app>/current` names the release. If a new instance is not
//! healthy in time, the new units go, the removed old ones come back, and
//! the release is marked failed with the reason.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use store::records::{ActiveState, App, Release, ReleaseStatus};
use store::{AppName, Store};
use tokio::sync::mpsc;
use tracing::{info, warn};
use units::{render_instance, Instance};

use crate::error::{DeployError, Result};
use store::Step;

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
        report: mpsc::Sender<Step>,
    ) -> futures::future::BoxFuture<'static, Result<()>>;
}

/// How long an old instance may take to stop before its name is used again.
const STOP_WAIT: Duration = Duration::from_secs(60);

/// How long a removed instance may stay announced before the deploy goes on.
const WITHDRAW_WAIT: Duration = Duration::from_secs(15);
/// How long an instance of a process type without a port (any but web)
/// must keep running to count as healthy: one that exits at once is seen
/// failing first (the agent reports every two seconds).
const RUNNING_SETTLE: Duration = Duration::from_secs(3);

/// Crashes of a new instance that fail its deploy at once, rather than at the
/// deploy timeout: the agent restarts a crashed container after 2 s, then 4 s.
const CRASHES_TO_FAIL: u32 = 2;

/// Why a new instance will not come up, if its agent's report says so: it
/// failed to start, or it keeps crashing.
fn broken(unit: &str, state: &store::records::UnitState) -> Option<DeployError> {
    let unit = unit.trim_end_matches(".service").to_string();
    let reason = state.reason.as_deref().unwrap_or("no reason given");
    if state.active == ActiveState::Failed {
        let reason = format!("failed: {reason}");
        return Some(DeployError::Broken { unit, reason });
    }
    (state.restarts >= CRASHES_TO_FAIL).then(|| DeployError::Broken {
        unit,
        reason: format!(
            "keeps crashing: it exited {} times ({reason})",
            state.restarts
        ),
    })
}

/// Rolls releases out; one deploy per app at a time (the next waits).
#[derive(Debug, Clone)]
pub struct Deployer {
    store: Store,
    config: DeployConfig,
    locks: Arc<support::KeyedLocks<AppName>>,
    release_phase: Option<Arc<dyn ReleasePhase>>,
    /// Pins image references to digests and reads their ports for releases.
    images: Option<Arc<dyn store::ImageResolver>>,
}

/// A unit as submitted: its name and text.
pub type UnitText = (String, String);

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
    pub async fn resolve_image(&self, reference: &str) -> Result<store::ResolvedImage> {
        match &self.images {
            Some(images) => images.resolve(reference).await.map_err(DeployError::Image),
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

    /// Rolls release `n` of `app` out as [`Deployer::roll_out`] does, with
    /// a record of its own (`kind`: what started it, `by`: who) that its
    /// steps are written to.
    pub async fn roll_out_recorded(
        &self,
        app: &AppName,
        n: u64,
        (kind, by): (&str, &str),
        report: mpsc::Sender<Step>,
    ) -> Result<()> {
        let (record, _) =
            crate::RolloutRecord::begin(&self.store, support::Clock::System, app, kind, by).await?;
        let deployer = self.clone();
        let app = app.clone();
        record
            .run(Some(n), report, move |steps| async move {
                deployer.roll_out(&app, n, &steps).await
            })
            .await
    }

    /// Rolls release `n` of `app` out, reporting each step on `report`.
    pub async fn roll_out(&self, app: &AppName, n: u64, report: &mpsc::Sender<Step>) -> Result<()> {
        let _held = self.hold(app, report).await?;
        let serving = self
            .store
            .get(&self.store.keys().current(app))
            .await?
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
    pub async fn restart(&self, app: &AppName, report: &mpsc::Sender<Step>) -> Result<()> {
        let _held = self.hold(app, report).await?;
        let keys = self.store.keys();
        let n = self
            .store
            .get(&keys.current(app))
            .await?
            .ok_or_else(|| {
                DeployError::NotFound(format!("{app} runs no release yet: deploy it first"))
            })?
            .value;
        let listing = self.store.list(&keys.units()).await?;
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
            let instance = Step::instance(&name);
            say(report, Step::Restarting { instance }).await;
            self.withdraw(&[(name.clone(), text.clone())]).await;
            self.until_withdrawn(app, &name, report).await;
            // Started again only once its container is gone.
            self.until_gone(&name).await?;
            let instance = Step::instance(&name);
            say(report, Step::Stopped { instance }).await;
            let mut again = vec![(name.clone(), text)];
            if let Some(text) = sidekick_text {
                again.push((sidekick, text));
            }
            self.submit(&again).await?;
            let instance = units::parse_instance_name(&name)
                .ok_or_else(|| DeployError::Invalid(format!("{name} is not an instance")))?;
            self.wait_ready(app, n, instance.process, instance.index, &name, report)
                .await?;
        }
        say(
            report,
            Step::Restarted {
                app: app.to_string(),
                release: n,
            },
        )
        .await;
        Ok(())
    }

    /// Waits for the app's turn: first in this process, then across servers.
    async fn hold(
        &self,
        app: &AppName,
        report: &mpsc::Sender<Step>,
    ) -> Result<(support::locks::Turn, store::Lease)> {
        let in_process = self.locks.lock(app).await;
        Ok((in_process, self.lock_app(app, report).await?))
    }

    /// Holds `/paz/leader/deploy-<app>` (on a lease, so a dead server's hold
    /// ends with it) while this server deploys `app`: one deploy per app at a
    /// time across servers; the next waits. Dropping the lease releases it.
    pub async fn lock_app(
        &self,
        app: &AppName,
        report: &mpsc::Sender<Step>,
    ) -> Result<store::Lease> {
        let key = self.store.keys().leader(&format!("deploy-{app}"))?;
        let lease = self.store.grant_lease(Duration::from_secs(15)).await?;
        let holder = std::process::id().to_string();
        self.store
            .acquire(&key, &holder, &lease, || async {
                say(
                    report,
                    Step::Waiting {
                        app: app.to_string(),
                    },
                )
                .await;
            })
            .await?;
        Ok(lease)
    }

    async fn roll_out_locked(
        &self,
        app: &AppName,
        n: u64,
        report: &mpsc::Sender<Step>,
    ) -> Result<()> {
        let keys = self.store.keys();
        let record: App = self
            .store
            .get(&keys.app(app))
            .await?
            .ok_or_else(|| DeployError::NotFound(format!("app {app} does not exist")))?
            .value;
        let release: Release = self
            .store
            .get(&keys.release(app, n))
            .await?
            .ok_or_else(|| DeployError::NotFound(format!("{app} has no release v{n}")))?
            .value;
        self.set_status(app, n, ReleaseStatus::Deploying).await?;
        let serving = self.store.get(&keys.current(app)).await?.map(|v| v.value);
        // The release phase, once per release (not again for ps:scale).
        if serving != Some(n) {
            self.release_phase(app, n, &release, report).await?;
        }
        let submitted: Vec<UnitText> = self
            .store
            .list(&keys.units())
            .await?
            .entries
            .into_iter()
            .map(|entry| (keys.units().child_name(&entry.key).to_string(), entry.value))
            .collect();
        let plan = plan_rollout(app, &record.scale, &release, n, &submitted);
        for note in &plan.notes {
            say(report, Step::Note { text: note.clone() }).await;
        }
        // Units this deploy wrote, and old ones it removed: on any error
        // after the first write, the first go and the second come back.
        let mut changed = Changed::default();
        let mut surplus = plan.surplus;
        for process in plan.processes {
            match self
                .replace_process(&record, &release, n, process, &mut changed, report)
                .await
            {
                Ok(left) => surplus.extend(left),
                Err(reason) => {
                    say(
                        report,
                        Step::Failed {
                            reason: reason.to_string(),
                        },
                    )
                    .await;
                    self.withdraw(&changed.started).await;
                    self.submit_all(&changed.removed).await;
                    return Err(DeployError::RolledBack {
                        n,
                        reason: Box::new(reason),
                    });
                }
            }
        }
        // Fewer instances than before, and process types no longer run: they go too.
        for (name, text) in surplus {
            say_stopping(report, &name).await;
            self.withdraw(&[(name.clone(), text)]).await;
            self.until_withdrawn(app, &name, report).await;
        }
        self.finish(app, n, report).await
    }

    /// Runs the release's `release:` command, if it has one.
    async fn release_phase(
        &self,
        app: &AppName,
        n: u64,
        release: &Release,
        report: &mpsc::Sender<Step>,
    ) -> Result<()> {
        let Some(command) = &release.release_command else {
            return Ok(());
        };
        let phase = self.release_phase.as_ref().ok_or_else(|| {
            DeployError::ReleasePhase(format!(
                "v{n} has a release command but no server here can run it"
            ))
        })?;
        say(
            report,
            Step::ReleaseCommand {
                command: command.clone(),
            },
        )
        .await;
        phase
            .run(
                app.clone(),
                release.image.clone(),
                command.clone(),
                release.env.clone().into_iter().collect(),
                report.clone(),
            )
            .await
            .map_err(|reason| DeployError::ReleasePhase(format!("v{n} was not deployed: {reason}")))
    }

    /// Starts the wanted instances of one process type a batch at a time,
    /// each batch ready before as many old instances are retired; returns
    /// the old instances left over (scaled down).
    async fn replace_process(
        &self,
        record: &App,
        release: &Release,
        n: u64,
        process: ProcessPlan,
        changed: &mut Changed,
        report: &mpsc::Sender<Step>,
    ) -> Result<Vec<UnitText>> {
        let mut old = process.old;
        for batch in batches(process.wanted, self.config.batch) {
            let mut started = Vec::new();
            for index in batch {
                let (unit, sidekick) = self.render(record, release, n, &process.process, index)?;
                changed
                    .started
                    .extend(self.start_instance(&unit, sidekick).await?);
                started.push((index, unit.0));
            }
            for (index, unit) in &started {
                self.wait_ready(&record.name, n, &process.process, *index, unit, report)
                    .await?;
            }
            for _ in &started {
                if let Some(unit) = old.pop() {
                    self.retire(&record.name, unit, &mut changed.removed, report)
                        .await?;
                }
            }
        }
        Ok(old)
    }

    /// Submits an instance's unit (and sidekick), once a stopping unit of
    /// the same name (a failed scale, retried) is gone; returns what it wrote.
    async fn start_instance(
        &self,
        unit: &UnitText,
        sidekick: Option<UnitText>,
    ) -> Result<Vec<UnitText>> {
        let key = self.store.keys().unit(&unit.0)?;
        if self.store.get(&key).await?.is_none() {
            self.until_gone(&unit.0).await?;
        }
        let mut submitted = vec![unit.clone()];
        submitted.extend(sidekick);
        // Only what was written is this deploy's to take back (a running
        // instance of this release is left alone).
        self.submit(&submitted).await
    }

    /// Waits until a new instance is healthy (web) or runs (other types),
    /// and says how long it took.
    async fn wait_ready(
        &self,
        app: &AppName,
        n: u64,
        process: &str,
        index: u32,
        unit: &str,
        report: &mpsc::Sender<Step>,
    ) -> Result<()> {
        let waited = Instant::now();
        let routed = process == "web";
        if routed {
            self.until_announced(app, n, index, unit, report).await?;
        } else {
            self.until_running(unit, report).await?;
        }
        let seconds = waited.elapsed().as_secs_f64();
        let instance = Step::instance(unit);
        say(
            report,
            Step::Ready {
                instance,
                routed,
                seconds,
            },
        )
        .await;
        Ok(())
    }

    /// Stops one old instance: withdrawn (the proxy sends it nothing new),
    /// then its unit and sidekick go; they are noted in `removed` to come
    /// back if the rollout fails.
    async fn retire(
        &self,
        app: &AppName,
        (name, text): UnitText,
        removed: &mut Vec<UnitText>,
        report: &mpsc::Sender<Step>,
    ) -> Result<()> {
        say_stopping(report, &name).await;
        let sidekick = sidekick_of(&name);
        let sidekick_text = self.unit_text(&sidekick).await?;
        self.withdraw(&[(name.clone(), text.clone())]).await;
        self.until_withdrawn(app, &name, report).await;
        removed.push((name, text));
        if let Some(text) = sidekick_text {
            removed.push((sidekick, text));
        }
        Ok(())
    }

    /// The release serves: `current` names it, the one before is superseded.
    async fn finish(&self, app: &AppName, n: u64, report: &mpsc::Sender<Step>) -> Result<()> {
        let keys = self.store.keys();
        let previous = self.store.get(&keys.current(app)).await?.map(|v| v.value);
        self.store.put(&keys.current(app), &n).await?;
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
        let url = format!("http://{app}.{domain}");
        say(report, Step::Released { release: n, url }).await;
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
    ) -> Result<(UnitText, Option<UnitText>)> {
        let keys = self.store.keys();
        let service_key = keys.service(&app.name, n, &index.to_string())?;
        // A Procfile line is shell, as on Heroku: `sh -c LINE`.
        let command = release
            .processes
            .get(process)
            .map(|line| vec!["sh".to_string(), "-c".to_string(), line.clone()])
            .unwrap_or_default();
        let limits = release.resources.of(process);
        let instance = Instance {
            app: app.name.to_string(),
            memory: limits.memory,
            nano_cpus: limits.nano_cpus,
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
        let (unit, sidekick) = render_instance(&instance).map_err(DeployError::Invalid)?;
        let sidekick = (process == "web").then_some((sidekick.name, sidekick.text));
        Ok(((unit.name, unit.text), sidekick))
    }

    /// Writes the units that are not already there as they are (an
    /// unchanged unit is left alone, so its container keeps running).
    /// A unit's text, if it is submitted.
    async fn unit_text(&self, name: &str) -> Result<Option<String>> {
        let key = self.store.keys().unit(name)?;
        Ok(self.store.get(&key).await?.map(|v| v.value))
    }

    /// Returns the units it wrote.
    async fn submit(&self, units: &[UnitText]) -> Result<Vec<UnitText>> {
        let keys = self.store.keys();
        let mut txn = self.store.transaction();
        let mut written = Vec::new();
        for (name, text) in units {
            let key = keys.unit(name)?;
            let existing = self.store.get(&key).await?;
            if existing.is_some_and(|v| &v.value == text) {
                continue;
            }
            txn = txn.put(&key, text);
            written.push((name.clone(), text.clone()));
        }
        txn.commit().await?;
        Ok(written)
    }

    async fn submit_all(&self, units: &[UnitText]) {
        if let Err(error) = self.submit(units).await {
            warn!(%error, "cannot restore the old instances");
        }
    }

    /// Waits until the agent has stopped what ran as `unit` and deleted its
    /// state, so that a new instance of that name starts clean; an error
    /// after [`STOP_WAIT`].
    async fn until_gone(&self, unit: &str) -> Result<()> {
        let state = self.store.keys().unit_state(unit)?;
        tokio::time::timeout(STOP_WAIT, self.store.wait_until(&state, |s| s.is_none()))
            .await
            .map(|_| ())
            .map_err(|_| DeployError::TimedOut {
                what: format!("{} stopping", unit.trim_end_matches(".service")),
                after: STOP_WAIT,
            })
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

    /// Waits (at most [`WITHDRAW_WAIT`]) until a removed instance is no
    /// longer announced, so the proxy sends it nothing new by the time the
    /// deploy goes on; a dead machine's sidekick cannot withdraw (its key
    /// goes with its lease), so running out of time is said, not fatal.
    async fn until_withdrawn(&self, app: &AppName, unit: &str, report: &mpsc::Sender<Step>) {
        // Only web instances are announced.
        if units::parse_instance_name(unit).is_none_or(|name| name.process != "web") {
            return;
        }
        let (Some(release), Some(index)) = (release_of(unit), index_of(unit)) else {
            return;
        };
        let Ok(key) = self.store.keys().service(app, release, &index.to_string()) else {
            return;
        };
        let withdrawn = self.store.wait_until(&key, |addr| addr.is_none());
        let instance = Step::instance(unit);
        match tokio::time::timeout(WITHDRAW_WAIT, withdrawn).await {
            Ok(_) => say(report, Step::Withdrawn { instance }).await,
            Err(_) => {
                warn!(%app, unit, "the removed instance is still announced; going on");
                let seconds = WITHDRAW_WAIT.as_secs();
                say(report, Step::StillAnnounced { instance, seconds }).await;
            }
        }
    }

    /// Waits for the instance's sidekick to announce it (its health check
    /// passed); fails early if its container fails or keeps crashing, and
    /// after the health timeout. Says on which machine it starts.
    async fn until_announced(
        &self,
        app: &AppName,
        n: u64,
        index: u32,
        unit: &str,
        report: &mpsc::Sender<Step>,
    ) -> Result<()> {
        let service = self.store.keys().service(app, n, &index.to_string())?;
        let Some(waited) = self.until_ready(unit, Some(service), report).await? else {
            return Ok(());
        };
        Err(DeployError::Unhealthy {
            unit: unit.trim_end_matches(".service").to_string(),
            after: self.config.health_timeout,
            placed: waited.placed,
            last_reason: waited.last_reason,
            advice: self.health_advice(app, n).await,
        })
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

    /// Waits until a worker's container runs (its agent says active); fails
    /// early if it fails or keeps crashing, and after the health timeout.
    async fn until_running(&self, unit: &str, report: &mpsc::Sender<Step>) -> Result<()> {
        match self.until_ready(unit, None, report).await? {
            None => Ok(()),
            Some(_) => Err(DeployError::TimedOut {
                what: format!("{} starting", unit.trim_end_matches(".service")),
                after: self.config.health_timeout,
            }),
        }
    }

    /// Follows a new instance on watches until it is ready: announced at
    /// `announced` (a web instance), else running. Says on which machine it
    /// starts; an error if it fails or keeps crashing; what was seen, if the
    /// health timeout passed first.
    async fn until_ready(
        &self,
        unit: &str,
        announced: Option<store::Key<String>>,
        report: &mpsc::Sender<Step>,
    ) -> Result<Option<Waited>> {
        let keys = self.store.keys();
        let mut state = self.store.watch_key(&keys.unit_state(unit)?);
        let mut placed = self.store.watch_key(&keys.schedule(unit)?);
        let mut service = announced.as_ref().map(|key| self.store.watch_key(key));
        let deadline = tokio::time::sleep(self.config.health_timeout);
        tokio::pin!(deadline);
        let mut waited = Waited::default();
        // An instance without a port (not web) counts as healthy once it
        // has kept running for RUNNING_SETTLE.
        let mut settling: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        loop {
            tokio::select! {
                () = &mut deadline => return Ok(Some(waited)),
                () = async { settling.as_mut().expect("armed").await }, if settling.is_some() => {
                    return Ok(None);
                }
                Some(event) = async { service.as_mut()?.next_event().await }, if service.is_some() => {
                    if event.into_latest().is_some() {
                        return Ok(None);
                    }
                }
                Some(event) = state.next_event() => {
                    if let Some(state) = event.into_latest() {
                        if let Some(error) = broken(unit, &state) {
                            return Err(error);
                        }
                        // The placement's own watch may tell it later: the
                        // agent's report says where, and placing comes first.
                        if !waited.placed {
                            waited.placed = true;
                            let (instance, machine) = (Step::instance(unit), state.machine.clone());
                            say(report, Step::Placed { instance, machine }).await;
                        }
                        if state.pulling && !waited.pulling {
                            waited.pulling = true;
                            let instance = Step::instance(unit);
                            say(report, Step::Pulling { instance }).await;
                        }
                        if state.active != ActiveState::Active {
                            settling = None;
                        } else {
                            if announced.is_none() {
                                if settling.is_none() {
                                    settling = Some(Box::pin(tokio::time::sleep(RUNNING_SETTLE)));
                                }
                                waited.last_reason = state.reason;
                                continue;
                            }
                            if !waited.started {
                                waited.started = true;
                                let instance = Step::instance(unit);
                                say(report, Step::Started { instance }).await;
                            }
                        }
                        waited.last_reason = state.reason;
                    }
                }
                Some(event) = placed.next_event(), if !waited.placed => {
                    if let Some(machine) = event.into_latest() {
                        waited.placed = true;
                        let instance = Step::instance(unit);
                        say(report, Step::Placed { instance, machine }).await;
                    }
                }
            }
        }
    }

    async fn set_status(&self, app: &AppName, n: u64, status: ReleaseStatus) -> Result<()> {
        let key = self.store.keys().release(app, n);
        let set = |release: &mut Release| {
            release.status = status;
            Ok::<(), DeployError>(())
        };
        match self.store.update_with(&key, set).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(DeployError::NotFound(format!("{app} has no release v{n}"))),
            Err(DeployError::Store(error)) if error.conflict().is_some() => {
                Err(DeployError::Contended(format!("release v{n} of {app}")))
            }
            Err(error) => Err(error),
        }
    }
}

/// What a wait for a new instance saw before its time ran out.
#[derive(Debug, Default)]
struct Waited {
    /// Whether it was placed on a machine.
    placed: bool,
    /// Whether its container was seen running (a web instance, not yet healthy).
    started: bool,
    /// Whether its agent was seen pulling its image.
    pulling: bool,
    /// The last reason its agent gave.
    last_reason: Option<String>,
}

/// What a rollout changed so far, to take back if it fails.
#[derive(Debug, Default)]
struct Changed {
    /// Units it wrote.
    started: Vec<UnitText>,
    /// Old units (and sidekicks) it removed.
    removed: Vec<UnitText>,
}

/// What the rollout of one release does, decided from the units submitted
/// when it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutPlan {
    /// The process types to run, `web` first.
    pub processes: Vec<ProcessPlan>,
    /// What goes at the end: this release's instances beyond the counts,
    /// and instances of process types that no longer run.
    pub surplus: Vec<UnitText>,
    /// What to say before it starts.
    pub notes: Vec<String>,
}

/// One process type of a [`RolloutPlan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessPlan {
    pub process: String,
    /// Instances 1 to `wanted` of the new release.
    pub wanted: u32,
    /// Its instances of other releases, oldest first: each new instance
    /// retires the last, so the newest old one goes first.
    pub old: Vec<UnitText>,
}

/// The plan for release `n` of `app` at `scale`, given every submitted unit
/// (name, text). Pure: what runs is `web` (at least one) and each other
/// process type scaled above 0 that the release's Procfile has.
pub fn plan_rollout(
    app: &AppName,
    scale: &store::records::Scale,
    release: &Release,
    n: u64,
    submitted: &[UnitText],
) -> RolloutPlan {
    let mut wanted: Vec<(&str, u32)> = vec![("web", scale.web.max(1))];
    let mut notes = Vec::new();
    for (process, count) in scale.all() {
        if process == "web" || count == 0 {
            continue;
        }
        if release.processes.contains_key(process) {
            wanted.push((process, count));
        } else {
            notes.push(format!(
                "v{n} has no {process} process (Procfile `{process}:`): none runs"
            ));
        }
    }
    let mut old: BTreeMap<&str, BTreeMap<(u64, &str), UnitText>> = BTreeMap::new();
    let mut surplus = Vec::new();
    for (name, text) in submitted {
        let Some(instance) = units::parse_instance_name(name) else {
            continue;
        };
        if instance.app != app.as_str() || instance.sidekick {
            continue;
        }
        let count = wanted
            .iter()
            .find(|(process, _)| *process == instance.process)
            .map_or(0, |(_, count)| *count);
        if instance.release != n {
            old.entry(instance.process)
                .or_default()
                .insert((instance.release, name), (name.clone(), text.clone()));
        } else if instance.index > count {
            surplus.push((name.clone(), text.clone()));
        }
    }
    let processes = wanted
        .iter()
        .map(|(process, count)| ProcessPlan {
            process: process.to_string(),
            wanted: *count,
            old: old
                .remove(process)
                .map(|units| units.into_values().collect())
                .unwrap_or_default(),
        })
        .collect();
    surplus.extend(old.into_values().flat_map(BTreeMap::into_values));
    RolloutPlan {
        processes,
        surplus,
        notes,
    }
}

/// Instances 1 to `wanted` in batches of `size` (at least 1).
fn batches(wanted: u32, size: usize) -> Vec<Vec<u32>> {
    let all: Vec<u32> = (1..=wanted).collect();
    all.chunks(size.max(1)).map(<[u32]>::to_vec).collect()
}

/// Sends a step (one that never arrives, because nobody listens any more, is dropped).
async fn say(report: &mpsc::Sender<Step>, step: Step) {
    let _ = report.send(step).await;
}

async fn say_stopping(report: &mpsc::Sender<Step>, unit: &str) {
    let instance = Step::instance(unit);
    say(report, Step::Stopping { instance }).await;
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

    fn release(processes: &[&str]) -> Release {
        Release {
            n: 3,
            image: "web@sha256:1".into(),
            git_sha: None,
            env: Default::default(),
            created_at: 1,
            by: "test".into(),
            cause: store::records::ReleaseCause::Push,
            status: ReleaseStatus::Pending,
            processes: processes
                .iter()
                .map(|p| (p.to_string(), "run".to_string()))
                .collect(),
            release_command: None,
            source: None,
            exposed_ports: Vec::new(),
            resources: Default::default(),
            cron: Vec::new(),
        }
    }

    fn units(names: &[&str]) -> Vec<UnitText> {
        names
            .iter()
            .map(|name| (format!("{name}.service"), format!("[Service] {name}")))
            .collect()
    }

    fn names(units: &[UnitText]) -> Vec<&str> {
        units
            .iter()
            .map(|(name, _)| name.trim_end_matches(".service"))
            .collect()
    }

    #[test]
    fn a_rollout_replaces_the_newest_old_instance_first_and_stops_the_rest_at_the_end() {
        let app = AppName::new("demo").unwrap();
        let submitted = units(&[
            "demo-v1-web-1",
            "demo-v2-web-1",
            "demo-v2-web-2",
            "demo-v2-web-2-announce",
            "demo-v2-worker-1",
            "other-v9-web-1",
            "demo-v3-web-1",
            "demo-v3-web-4",
        ]);
        let scale = store::records::Scale {
            web: 2,
            ..Default::default()
        };
        let plan = plan_rollout(&app, &scale, &release(&["web", "worker"]), 3, &submitted);
        assert_eq!(plan.processes.len(), 1);
        let web = &plan.processes[0];
        assert_eq!((web.process.as_str(), web.wanted), ("web", 2));
        // Popped from the end: v2's web-2, then web-1; v1 is left to the end.
        assert_eq!(
            names(&web.old),
            ["demo-v1-web-1", "demo-v2-web-1", "demo-v2-web-2"]
        );
        // v3's web-4 is beyond the count; the worker no longer runs.
        assert_eq!(names(&plan.surplus), ["demo-v3-web-4", "demo-v2-worker-1"]);
        assert!(plan.notes.is_empty());
    }

    #[test]
    fn a_scaled_worker_runs_only_if_the_release_has_one() {
        let app = AppName::new("demo").unwrap();
        let mut scale = store::records::Scale {
            web: 0,
            worker: 2,
            ..Default::default()
        };
        scale.set("clock", 1);
        let with = plan_rollout(&app, &scale, &release(&["web", "worker", "clock"]), 3, &[]);
        let wanted: Vec<_> = with
            .processes
            .iter()
            .map(|p| (p.process.as_str(), p.wanted))
            .collect();
        // At least one web always runs.
        assert_eq!(wanted, [("web", 1), ("worker", 2), ("clock", 1)]);
        scale.set("clock", 0);
        let without = plan_rollout(&app, &scale, &release(&["web"]), 3, &[]);
        assert_eq!(without.processes.len(), 1);
        assert_eq!(
            without.notes,
            ["v3 has no worker process (Procfile `worker:`): none runs"]
        );
    }

    #[test]
    fn instances_start_in_batches() {
        assert_eq!(batches(5, 2), [vec![1, 2], vec![3, 4], vec![5]]);
        assert_eq!(batches(2, 0), [vec![1], vec![2]]);
        assert!(batches(0, 1).is_empty());
    }

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

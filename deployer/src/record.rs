//! A rollout's record in etcd (`/paz/apps/<app>/rollouts/<id>`), written as
//! it happens: every rollout (a push, a deploy or rollback, a config change,
//! a scale, a restart, a followed image) has one, with its steps, who
//! started it and how it ended, kept after it ends, for the API and the UI.

use std::future::Future;

use store::{AppName, Key, Rollout, RolloutStatus, Step, Store, StoreError};
use support::Clock;
use tokio::sync::mpsc;
use tracing::warn;

use crate::DeployError;

/// One rollout's record.
#[derive(Debug, Clone)]
pub struct RolloutRecord {
    store: Store,
    key: Key<Rollout>,
    clock: Clock,
}

/// A new rollout's id: `<unix ms>-<random>`, so that they sort by time.
fn new_id() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis());
    let random: [u8; 3] = rand::random();
    format!("{millis}-{}", hex::encode(random))
}

impl RolloutRecord {
    /// Writes the record of a rollout of `app` that `by` starts (`kind`:
    /// what started it), running, with no steps yet.
    pub async fn begin(
        store: &Store,
        clock: Clock,
        app: &AppName,
        kind: &str,
        by: &str,
    ) -> Result<(RolloutRecord, Rollout), StoreError> {
        let id = new_id();
        let key = store.keys().rollout(app, &id)?;
        let record = Rollout {
            id,
            app: app.clone(),
            kind: kind.to_string(),
            by: by.to_string(),
            started_at: clock.now(),
            finished_at: None,
            release: None,
            status: RolloutStatus::Running,
            steps: Vec::new(),
            error: None,
        };
        store.create(&key, &record).await?;
        let written = RolloutRecord {
            store: store.clone(),
            key,
            clock,
        };
        Ok((written, record))
    }

    /// The record at `key`, made already (by [`RolloutRecord::begin`]).
    pub fn at(store: &Store, clock: Clock, key: Key<Rollout>) -> RolloutRecord {
        RolloutRecord {
            store: store.clone(),
            key,
            clock,
        }
    }

    pub fn key(&self) -> &Key<Rollout> {
        &self.key
    }

    /// Appends `step` (and the release, once known). A record that cannot
    /// be written is logged: the rollout itself goes on.
    pub async fn append(&self, step: &Step, release: Option<u64>) {
        let add = |record: &mut Rollout| {
            record.steps.push(step.clone());
            record.release = record.release.or(release);
            Ok::<(), StoreError>(())
        };
        if let Err(error) = self.store.update_with(&self.key, add).await {
            warn!(key = %self.key, %error, "cannot record a rollout's step");
        }
    }

    /// Records how the rollout ended, if it is still running (a second
    /// call changes nothing).
    pub async fn finish(&self, release: Option<u64>, error: Option<String>) {
        let now = self.clock.now();
        let ended = |record: &mut Rollout| {
            if record.status == RolloutStatus::Running {
                record.finished_at = Some(now);
                record.release = record.release.or(release);
                record.status = match error {
                    None => RolloutStatus::Succeeded,
                    Some(_) => RolloutStatus::Failed,
                };
                record.error = error.clone();
            }
            Ok::<(), StoreError>(())
        };
        if let Err(error) = self.store.update_with(&self.key, ended).await {
            warn!(key = %self.key, %error, "cannot record how a rollout ended");
        }
    }

    /// Runs `job` (a rollout of release `release`, or a restart), writing
    /// each step it sends to the record before passing it on to `report`,
    /// then how it ended.
    pub async fn run<F>(
        &self,
        release: Option<u64>,
        report: mpsc::Sender<Step>,
        job: impl FnOnce(mpsc::Sender<Step>) -> F,
    ) -> Result<(), DeployError>
    where
        F: Future<Output = Result<(), DeployError>>,
    {
        let (steps, mut received) = mpsc::channel::<Step>(64);
        let record = self.clone();
        let written = tokio::spawn(async move {
            while let Some(step) = received.recv().await {
                record.append(&step, release).await;
                let _ = report.send(step).await;
            }
        });
        let result = job(steps).await;
        // Every step is written before the end is.
        let _ = written.await;
        self.finish(release, result.as_ref().err().map(ToString::to_string))
            .await;
        result
    }
}

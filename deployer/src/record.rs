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
    /// Keeps the record's `alive` key while the rollout runs (the one that
    /// `begin` made it; dropped with the last clone).
    _alive: Option<std::sync::Arc<store::Lease>>,
}

/// How long a rollout's `alive` key outlives a server that stopped.
const ALIVE_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// What an abandoned rollout's record says.
const ABANDONED: &str = "the server that ran it stopped before it ended: its steps so far are kept; see releases and ps for how the app is now";

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
        let alive = store.keys().rollout_alive(app, &id)?;
        let lease = store.grant_lease(ALIVE_TTL).await?;
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
        // Together: a reader never sees it running without its `alive` key.
        store
            .transaction()
            .create(&key, &record)
            .put_on_lease(&alive, &"running".to_string(), &lease)
            .commit()
            .await?;
        let written = RolloutRecord {
            store: store.clone(),
            key,
            clock,
            _alive: Some(std::sync::Arc::new(lease)),
        };
        Ok((written, record))
    }

    /// The record at `key`, made already (by [`RolloutRecord::begin`]).
    pub fn at(store: &Store, clock: Clock, key: Key<Rollout>) -> RolloutRecord {
        RolloutRecord {
            store: store.clone(),
            key,
            clock,
            _alive: None,
        }
    }

    /// `record` (read at `revision` from `key`) as it really is: one left
    /// running by a server that stopped (its `alive` key gone) is ended
    /// as failed, in etcd too (a transaction: unless it changed, or came
    /// alive, meanwhile).
    pub async fn settled(
        store: &Store,
        clock: Clock,
        key: &Key<Rollout>,
        revision: i64,
        record: Rollout,
    ) -> Result<Rollout, StoreError> {
        if record.status != RolloutStatus::Running {
            return Ok(record);
        }
        let alive = store.keys().rollout_alive(&record.app, &record.id)?;
        let read = store::Versioned {
            value: record,
            mod_revision: revision,
            create_revision: 0,
        };
        store
            .end_if_abandoned(key, &alive, read, |mut record| {
                record.status = RolloutStatus::Failed;
                record.finished_at = Some(clock.now());
                record.error = Some(ABANDONED.to_string());
                record
            })
            .await
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
    /// call changes nothing), or was taken for abandoned.
    pub async fn finish(&self, release: Option<u64>, error: Option<String>) {
        let now = self.clock.now();
        let ended = |record: &mut Rollout| {
            // Also over one a reader took for abandoned (its alive key's
            // lease was lost while etcd was out of reach): this is how it ended.
            let abandoned = record.error.as_deref() == Some(ABANDONED);
            if record.status == RolloutStatus::Running || abandoned {
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

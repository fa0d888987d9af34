//! Cron, run by the scheduler's leader: every few seconds, each job of each
//! app's serving release whose tick has come is started as a one-off unit
//! (`<app>-v<n>-run-<job><tick>.service`) in one transaction with its
//! record (`/paz/apps/<app>/cron/<job>`) that requires the leader key, the
//! record and the unit to be as read, so a tick runs at most once however
//! the leader changes. A tick whose run before still runs is skipped (no
//! overlap) and said so; a finished run's exit code goes to the record and
//! its unit is removed. Times are UTC; a tick missed by more than a minute
//! (no leader then) is not run late.

use std::time::Duration;

use store::records::{ActiveState, CronJob, CronState, Release};
use store::{AppName, Key, Store, Versioned};
use tracing::{info, warn};

use crate::error::{DeployError, Result};

/// How often the leader looks.
const PASS: Duration = Duration::from_secs(5);
/// How late a tick may still run.
const LATE: u64 = 60;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn base36(mut n: u64) -> String {
    let mut digits = Vec::new();
    loop {
        digits.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    digits.reverse();
    String::from_utf8_lossy(&digits).into_owned()
}

/// A one-off's id for `job` at `tick`: the job's id, `t`, the tick's
/// minute in base 36 (unique per job and tick, so a second start of the
/// same tick finds its unit there).
pub fn tick_id(job: &str, tick: u64) -> String {
    format!("{job}t{}", base36(tick / 60))
}

/// A one-off's id for a run of `job` asked for at `now` (`cron:run`).
pub fn manual_id(job: &str, now: u64) -> String {
    format!("{job}m{}", base36(now))
}

/// The unit of a one-off of `release` running `job` with `id`.
pub fn job_unit(
    app: &AppName,
    release: &Release,
    job: &CronJob,
    id: &str,
) -> Result<units::RenderedUnit> {
    let limits = release.resources.of("run");
    units::render_one_off(&units::OneOff {
        app: app.to_string(),
        release: release.n,
        id: id.to_string(),
        image: release.image.clone(),
        env: release.env.clone().into_iter().collect(),
        // A job's command is shell, as a Procfile line is.
        command: vec!["sh".into(), "-c".into(), job.command.clone()],
        memory: limits.memory,
        nano_cpus: limits.nano_cpus,
        attached: false,
        tty: false,
    })
    .map_err(DeployError::Invalid)
}

/// Runs the leader's cron passes until it is deposed.
pub(crate) async fn lead(store: &Store, leader: &Key<String>, leader_revision: i64) {
    loop {
        match pass(store, leader, leader_revision).await {
            Err(DeployError::Deposed) => return,
            Err(error) => warn!(%error, "cron: a pass failed; the next one tries again"),
            Ok(()) => {}
        }
        tokio::time::sleep(PASS).await;
    }
}

async fn pass(store: &Store, leader: &Key<String>, leader_revision: i64) -> Result<()> {
    let keys = store.keys();
    let leading = Leading {
        store,
        leader,
        revision: leader_revision,
    };
    // Units first: a one-off listed here whose app is not listed after is
    // of an app that is gone.
    let units = store.list_names(&keys.units()).await?;
    let apps = store.list_names(&keys.apps()).await?;
    for name in &apps {
        let Ok(app) = AppName::new(name) else {
            continue;
        };
        let current = store.get(&keys.current(&app)).await?;
        let release = match &current {
            Some(n) => store
                .get(&keys.release(&app, n.value))
                .await?
                .map(|v| v.value),
            None => None,
        };
        let serving = Serving {
            app: &app,
            // Every start requires the serving release as read: a deploy in
            // between (which may drop the job) makes it wait for the next pass.
            current_revision: current.as_ref().map_or(0, |v| v.mod_revision),
            release: release.as_ref(),
        };
        let jobs = release
            .as_ref()
            .map(|r| r.cron.as_slice())
            .unwrap_or_default();
        for job in jobs {
            judge(
                &app,
                &job.id,
                tick(&leading, &serving, Some(job), &job.id).await,
            )?;
        }
        // A job the serving release no longer has: its run is ended as any,
        // then its record goes.
        for id in store.list_names(&keys.cron_states(&app)).await? {
            if !jobs.iter().any(|job| job.id == id) {
                judge(&app, &id, tick(&leading, &serving, None, &id).await)?;
            }
        }
    }
    for unit in units {
        let Some(run) = units::parse_run_name(&unit) else {
            continue;
        };
        if !apps.iter().any(|app| app == run.app) {
            info!(%unit, "cron: removing a one-off of an app that is gone");
            let txn = store
                .transaction()
                .require_unchanged(leader, leader_revision)
                .delete(&keys.unit(&unit)?);
            leading.commit(txn).await?;
        }
    }
    Ok(())
}

/// What a job's outcome means for the pass: a deposed leader stops it; a
/// conflict (someone wrote first: `cron:run`, a deploy) waits for the next
/// pass; other errors are said.
fn judge(app: &AppName, job: &str, done: Result<()>) -> Result<()> {
    match done {
        Err(DeployError::Deposed) => Err(DeployError::Deposed),
        Err(DeployError::Store(error)) if error.conflict().is_some() => Ok(()),
        Err(error) => {
            warn!(%app, %job, %error, "cron: cannot run a job");
            Ok(())
        }
        Ok(()) => Ok(()),
    }
}

/// The leader this pass writes as.
struct Leading<'a> {
    store: &'a Store,
    leader: &'a Key<String>,
    revision: i64,
}

/// An app's serving release as this pass read it.
struct Serving<'a> {
    app: &'a AppName,
    current_revision: i64,
    release: Option<&'a Release>,
}

/// One job (`job`, or `None` for a record whose job the release no longer
/// has): ends its finished run, then starts (or skips) its due tick, or
/// removes the record of a job that is gone once nothing runs.
async fn tick(
    leading: &Leading<'_>,
    serving: &Serving<'_>,
    job: Option<&CronJob>,
    id: &str,
) -> Result<()> {
    let (store, app) = (leading.store, serving.app);
    let keys = store.keys();
    let state_key = keys.cron_state(app, id)?;
    let mut read = store.get(&state_key).await?;
    if let Some(finished) = finished_run(store, read.as_ref()).await? {
        let revision = read.as_ref().map_or(0, |r| r.mod_revision);
        let unit = read.as_ref().and_then(|r| r.value.running.clone());
        let mut txn = store
            .transaction()
            .require_unchanged(leading.leader, leading.revision)
            .require_unchanged(&state_key, revision)
            .put(&state_key, &finished);
        if let Some(unit) = &unit {
            txn = txn.delete(&keys.unit(unit)?);
        }
        leading.commit(txn).await?;
        info!(%app, job = %id, exit = ?finished.last_exit, "cron: a run ended");
        read = store.get(&state_key).await?;
    }
    let (Some(job), Some(release)) = (job, serving.release) else {
        // Gone from the release: the record goes once nothing runs.
        if let Some(read) = read.filter(|r| r.value.running.is_none()) {
            let txn = store
                .transaction()
                .require_unchanged(leading.leader, leading.revision)
                .require_unchanged(&state_key, read.mod_revision)
                .delete(&state_key);
            leading.commit(txn).await?;
        }
        return Ok(());
    };
    let now = now();
    let state = read.as_ref().map(|r| r.value.clone()).unwrap_or_default();
    // The first tick after the last one, or, if that is long past (or
    // none ran yet), the first of the last minute.
    let floor = now.saturating_sub(LATE);
    let after = match state.last_tick {
        Some(last) if last >= floor => last,
        _ => floor.saturating_sub(1),
    };
    let Some(due) = store::cron::next_after(&job.schedule, after) else {
        return Ok(());
    };
    if due > now {
        return Ok(());
    }
    let revision = read.as_ref().map_or(0, |r| r.mod_revision);
    let mut next = state.clone();
    next.last_tick = Some(due);
    let mut txn = store
        .transaction()
        .require_unchanged(leading.leader, leading.revision)
        .require_unchanged(&keys.current(app), serving.current_revision)
        .require_unchanged(&state_key, revision);
    if state.running.is_some() {
        next.note = Some(format!(
            "skipped the tick of {}: the run before still ran",
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(due))
        ));
        info!(%app, job = %job.id, "cron: skipped a tick, the run before still runs");
    } else {
        let unit = job_unit(app, release, job, &tick_id(&job.id, due))?;
        let unit_key = keys.unit(&unit.name)?;
        next.running = Some(unit.name.clone());
        next.last_started_at = Some(now);
        next.note = None;
        txn = txn.require_absent(&unit_key).put(&unit_key, &unit.text);
        info!(%app, job = %job.id, unit = %unit.name, "cron: starting a tick");
    }
    leading.commit(txn.put(&state_key, &next)).await
}

/// The record after its running one-off ended, if it did: its exit code
/// (from its agent's state) or why it has none.
async fn finished_run(
    store: &Store,
    read: Option<&Versioned<CronState>>,
) -> Result<Option<CronState>> {
    let Some(state) = read.map(|r| &r.value) else {
        return Ok(None);
    };
    let Some(unit) = &state.running else {
        return Ok(None);
    };
    let keys = store.keys();
    let unit_state = store.get(&keys.unit_state(unit)?).await?.map(|v| v.value);
    let exists = store.get(&keys.unit(unit)?).await?.is_some();
    let lost = store
        .get(&keys.unplaced(unit)?)
        .await?
        .is_some_and(|v| v.value == crate::placement::ONE_OFF_LOST);
    let ended = match &unit_state {
        Some(s) if matches!(s.active, ActiveState::Inactive | ActiveState::Failed) => {
            Some((s.exit_code, s.reason.clone()))
        }
        // Stopped by hand (run:stop), or its lease ran out.
        None if !exists => Some((None, Some("its one-off was stopped".to_string()))),
        None if lost => Some((None, Some("its machine was lost while it ran".to_string()))),
        _ => None,
    };
    Ok(ended.map(|(exit, reason)| CronState {
        running: None,
        last_finished_at: Some(now()),
        last_exit: exit,
        // An OOM kill is worth saying beside its exit code.
        note: match (exit, reason) {
            (None, reason) => reason,
            (Some(_), Some(reason)) if reason.contains("OOM") => Some(reason),
            (Some(_), _) => None,
        },
        ..state.clone()
    }))
}

impl Leading<'_> {
    /// Commits `txn`; a conflict is [`DeployError::Deposed`] when the
    /// leader key is no longer this leader's, else the conflict (someone
    /// else wrote the record, the unit or the release first).
    async fn commit(&self, txn: store::Transaction<'_>) -> Result<()> {
        match txn.commit().await {
            Ok(_) => Ok(()),
            Err(error) if error.conflict().is_some() => {
                let still = self.store.get(self.leader).await?.map(|v| v.mod_revision);
                if still == Some(self.revision) {
                    Err(error.into())
                } else {
                    Err(DeployError::Deposed)
                }
            }
            Err(error) => Err(error.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_off_ids_are_per_job_and_tick_and_valid_unit_ids() {
        let tick = 1_796_094_000;
        assert_eq!(tick_id("c1a2b3c4", tick), tick_id("c1a2b3c4", tick + 59));
        assert_ne!(tick_id("c1a2b3c4", tick), tick_id("c1a2b3c4", tick + 60));
        assert_ne!(tick_id("c1a2b3c4", tick), manual_id("c1a2b3c4", tick));
        for id in [
            tick_id("c1a2b3c4", tick),
            manual_id("c1a2b3c4", u64::from(u32::MAX) * 8),
        ] {
            assert!(units::check_run_id(&id).is_ok(), "{id}");
        }
    }
}

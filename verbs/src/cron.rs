//! `cron:list APP` and `cron:run APP ID`: the scheduled jobs of the serving
//! release (`app.json`'s `cron`), when each runs next and how its last run
//! ended, and a run of one now. The scheduler's leader starts the ticks
//! (`deployer::cron`); times are UTC.

use serde::Serialize;
use store::records::{CronJob, CronState};
use store::AppName;

use crate::apps::load;
use crate::args::Args;
use crate::releases::serving_release;
use crate::{Caller, Context, VerbError};

/// One job (`cron:list`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CronRow {
    #[serde(flatten)]
    pub job: CronJob,
    /// The next tick, seconds since the Unix epoch.
    pub next: Option<u64>,
    #[serde(flatten)]
    pub state: CronState,
}

/// The jobs of an app's serving release (`cron:list`).
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct CronList {
    #[serde(skip)]
    pub app: AppName,
    pub jobs: Vec<CronRow>,
}

fn utc(at: Option<u64>) -> String {
    at.map(|at| {
        humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(at),
        )
        .to_string()
    })
    .unwrap_or_else(|| "-".into())
}

impl std::fmt::Display for CronList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lines = self.jobs.iter().map(|row| {
            let exit = match (&row.state.running, row.state.last_exit) {
                (Some(_), _) => "running".to_string(),
                (None, Some(code)) => format!("exit {code}"),
                (None, None) if row.state.last_started_at.is_some() => "no exit code".into(),
                (None, None) => "never ran".into(),
            };
            let note = row
                .state
                .note
                .as_ref()
                .map(|note| format!(" ({note})"))
                .unwrap_or_default();
            format!(
                "{}  {}  next {}  last {} {exit}{note}  {}",
                row.job.id,
                row.job.schedule,
                utc(row.next),
                utc(row.state.last_started_at),
                row.job.command
            )
        });
        crate::lines_or(
            f,
            lines,
            format!(
                "{} has no cron jobs: list them in app.json's cron, as {{\"cron\": [{{\"command\": \"...\", \"schedule\": \"0 3 * * *\"}}]}}",
                self.app
            ),
        )
    }
}

pub(crate) async fn list(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<CronList, VerbError> {
    let name = args.one()?;
    let (app, _) = load(context, caller, &name).await?;
    let mut rows = Vec::new();
    let now = context.now();
    for job in serving_release(context, &app)
        .await?
        .map(|r| r.cron)
        .unwrap_or_default()
    {
        let key = context.store.keys().cron_state(&app, &job.id)?;
        let state = context
            .store
            .get(&key)
            .await?
            .map(|v| v.value)
            .unwrap_or_default();
        rows.push(CronRow {
            next: store::cron::next_after(&job.schedule, now),
            job,
            state,
        });
    }
    Ok(CronList { app, jobs: rows })
}

/// A job run now (`cron:run`).
#[derive(Debug, Serialize)]
pub struct CronRun {
    #[serde(skip)]
    pub said: String,
    pub app: AppName,
    pub job: String,
    /// The one-off's id.
    pub id: String,
}

crate::shown_as_said!(CronRun);

pub(crate) async fn run(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<CronRun, VerbError> {
    let (name, job_id) = args.two()?;
    let (app, _) = load(context, caller, &name).await?;
    let unknown = || {
        VerbError::NotFound(format!(
            "{app} has no cron job `{}`: see cron:list {app}",
            job_id.escape_debug()
        ))
    };
    let release = serving_release(context, &app).await?.ok_or_else(unknown)?;
    let job = release
        .cron
        .iter()
        .find(|job| job.id == job_id)
        .ok_or_else(unknown)?;
    let store = &context.store;
    let keys = store.keys();
    let state_key = keys.cron_state(&app, &job.id)?;
    let read = store.get(&state_key).await?;
    let mut state = read.as_ref().map(|r| r.value.clone()).unwrap_or_default();
    if let Some(unit) = &state.running {
        return Err(VerbError::Conflict(format!(
            "{app}'s job {} still runs ({unit}): wait for it, or stop it with run:stop",
            job.id
        )));
    }
    let id = deployer::cron::manual_id(&job.id, context.now());
    let unit = deployer::cron::job_unit(&app, &release, job, &id)
        .map_err(|error| VerbError::Invalid(error.to_string()))?;
    let unit_key = keys.unit(&unit.name)?;
    state.running = Some(unit.name.clone());
    state.last_started_at = Some(context.now());
    state.note = None;
    // Written with the record as read: the leader (or another cron:run)
    // writing in between makes this refuse, not run twice.
    let committed = store
        .transaction()
        .require_unchanged(&state_key, read.as_ref().map_or(0, |r| r.mod_revision))
        .require_absent(&unit_key)
        .put(&state_key, &state)
        .put(&unit_key, &unit.text)
        .commit()
        .await;
    match committed {
        Ok(_) => {}
        Err(error) if error.conflict().is_some() => {
            return Err(VerbError::Conflict(format!(
                "{app}'s job {} changed while this ran: see cron:list {app} and try again",
                job.id
            )))
        }
        Err(error) => return Err(error.into()),
    }
    Ok(CronRun {
        said: format!(
            "started job {} of {app} as run.{id}: its output goes to `logs {app} --instance run.{id}`",
            job.id
        ),
        app,
        job: job.id.clone(),
        id,
    })
}

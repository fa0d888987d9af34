//! `ps`, `ps:scale` and `ps:restart`: an app's instances, how many run, and
//! restarting them.

use serde::Serialize;
use store::records::ActiveState;
use store::AppName;

use crate::apps::{load, update};
use crate::args::Args;
use crate::cluster::{unit_rows, UnitRow};
use crate::releases::{collect_steps, current, roll_out, Job, RolloutReport};
use crate::{Caller, Context, VerbError};

/// An app's instances (`ps`).
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct Instances {
    #[serde(skip)]
    pub app: AppName,
    pub instances: Vec<UnitRow>,
    /// When this was read, for the instances' ages.
    #[serde(skip)]
    pub now: u64,
}

/// A unit's state as `ps` and `run:list` say it.
pub(crate) fn state_word(state: Option<&store::records::UnitState>) -> &'static str {
    match state.map(|s| s.active) {
        Some(ActiveState::Active) => "up",
        Some(ActiveState::Activating) => "starting",
        Some(ActiveState::Deactivating) => "stopping",
        Some(ActiveState::Inactive) => "stopped",
        Some(ActiveState::Failed) => "crashed",
        None => "waiting",
    }
}

/// How long a unit has been in its state (`12s`), and its machine's short
/// id, as `ps` and `run:list` show them.
pub(crate) fn age_and_machine(row: &UnitRow, now: u64) -> (String, String) {
    let age = row
        .state
        .as_ref()
        .map(|s| format!("{}s", now.saturating_sub(s.since)))
        .unwrap_or_else(|| "-".into());
    let short = row
        .machine
        .as_deref()
        .unwrap_or("-")
        .chars()
        .take(12)
        .collect();
    (age, short)
}

/// One instance's `ps` line: name, machine, state and age.
fn line(row: &UnitRow, now: u64) -> String {
    let active = state_word(row.state.as_ref());
    let (age, short) = age_and_machine(row, now);
    let usage = row
        .usage
        .map(|usage| format!("  {usage}"))
        .unwrap_or_default();
    // Why it failed or restarted: an OOM kill says so.
    let reason = row
        .state
        .as_ref()
        .and_then(|s| s.reason.as_deref())
        .map(|reason| format!("  ({reason})"))
        .unwrap_or_default();
    format!(
        "{}  {short:12}  {active:8}  {age}{usage}{reason}",
        row.unit.trim_end_matches(".service")
    )
}

/// The process type of an instance's row (`web` for a name Paz did not make).
fn process_of(row: &UnitRow) -> &str {
    units::parse_instance_name(&row.unit).map_or("web", |instance| instance.process)
}

impl std::fmt::Display for Instances {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // As Heroku's `ps`: each process type under its name and count,
        // web first, then worker, then the others by name.
        let mut types: Vec<&str> = self.instances.iter().map(process_of).collect();
        types.sort_by_key(|p| (*p != "web", *p != "worker", *p));
        types.dedup();
        let lines = types.into_iter().flat_map(|process| {
            let rows: Vec<&UnitRow> = self
                .instances
                .iter()
                .filter(|row| process_of(row) == process)
                .collect();
            std::iter::once(format!("=== {process} ({})", rows.len()))
                .chain(rows.into_iter().map(|row| line(row, self.now)))
        });
        crate::lines_or(f, lines, format!("{} runs no instances", self.app))
    }
}

pub(crate) async fn ps(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<Instances, VerbError> {
    let name = args.one()?;
    let (app, _) = load(context, caller, &name).await?;
    let instances = unit_rows(&context.store, |unit| {
        units::parse_instance_name(unit)
            .is_some_and(|instance| instance.app == app.as_str() && !instance.sidekick)
    })
    .await?;
    let instances = with_usage(context, instances).await;
    Ok(Instances {
        app,
        instances,
        now: context.now(),
    })
}

/// How long `ps` waits for a machine's stats.
const STATS_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// `rows` with each instance's CPU and memory, from the stats of the agents
/// of their machines (asked at once; one that does not answer in time
/// leaves its instances without).
async fn with_usage(context: &Context, mut rows: Vec<UnitRow>) -> Vec<UnitRow> {
    let keys = context.store.keys();
    let Ok(Some(secret)) = context.store.get(&keys.agent_secret()).await else {
        return rows;
    };
    let client = telemetry::AgentClient::new(&secret.value);
    let mut machines: Vec<String> = rows.iter().filter_map(|row| row.machine.clone()).collect();
    machines.sort();
    machines.dedup();
    let asked = machines.iter().map(|machine| {
        let (client, store) = (client.clone(), context.store.clone());
        async move {
            let key = store.keys().machine(machine).ok()?;
            let endpoint = store.get(&key).await.ok()??.value.endpoint?;
            client.stats(&endpoint, STATS_WAIT).await.ok()
        }
    });
    let stats: Vec<telemetry::Stats> = futures::future::join_all(asked)
        .await
        .into_iter()
        .flatten()
        .collect();
    for row in &mut rows {
        let container = row
            .state
            .as_ref()
            .and_then(|state| state.container.as_deref());
        row.usage = stats
            .iter()
            .flat_map(|stats| &stats.containers)
            .find(|c| c.unit == row.unit && container.is_none_or(|id| id == c.container))
            .map(|c| crate::cluster::Usage {
                cpu_percent: c.cpu_percent,
                memory_bytes: c.memory_bytes,
                memory_limit_bytes: c.memory_limit_bytes,
            });
    }
    rows
}

/// What `ps:scale` did: rolled the serving release out at the new scale,
/// or saved the scale for the first release.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Scaled {
    Rolled(RolloutReport),
    Saved {
        app: AppName,
        /// The process types named, at their new counts.
        scale: std::collections::BTreeMap<String, u32>,
    },
}

impl std::fmt::Display for Scaled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scaled::Rolled(report) => write!(f, "{report}"),
            Scaled::Saved { app, .. } => {
                write!(f, "{app} will run at this scale once it is deployed")
            }
        }
    }
}

pub(crate) async fn scale(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<Scaled, VerbError> {
    let words = args.at_least(2)?;
    let mut asked = std::collections::BTreeMap::new();
    for word in &words[1..] {
        let (process, count) = word.split_once('=').ok_or_else(|| args.usage())?;
        store::names::check_process_type(process)
            .map_err(|error| VerbError::Invalid(format!("`{word}`: {error}")))?;
        if process == "release" {
            return Err(VerbError::Invalid(format!(
                "`{word}`: `release` is the release command, run once before each deploy: it cannot be scaled"
            )));
        }
        let count: u32 = count.parse().ok().filter(|n| *n <= 100).ok_or_else(|| {
            VerbError::Invalid(format!(
                "`{word}`: the count must be a number from 0 to 100"
            ))
        })?;
        asked.insert(process.to_string(), count);
    }
    if asked.get("web") == Some(&0) {
        return Err(VerbError::Invalid(
            "web=0 would stop the app: destroy it instead, or scale to 1".into(),
        ));
    }
    let rollouts = context.rollouts()?;
    let (app, _) = load(context, caller, &words[0]).await?;
    // Scaling to 0 is always allowed (a type gone from the Procfile).
    let serving = in_procfile(
        context,
        &app,
        asked
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(p, _)| p.as_str()),
    )
    .await?;
    update(context, caller, app.as_str(), |record| {
        for (process, count) in &asked {
            record.scale.set(process, *count);
        }
        Ok(())
    })
    .await?;
    match serving {
        // The current release again: instances are added or removed, nothing restarts.
        Some(n) => {
            let job = Job {
                context,
                caller,
                kind: "scale",
                app: &app,
                n,
            };
            Ok(Scaled::Rolled(roll_out(rollouts, job, None).await?))
        }
        None => Ok(Scaled::Saved { app, scale: asked }),
    }
}

/// The serving release, once each of `types` is checked to be in its
/// Procfile (web always is); before the first release, any type may be
/// set ahead.
pub(crate) async fn in_procfile<'a>(
    context: &Context,
    app: &AppName,
    mut types: impl Iterator<Item = &'a str>,
) -> Result<Option<u64>, VerbError> {
    let serving = current(context, app).await?;
    let Some(n) = serving else {
        return Ok(None);
    };
    let keys = context.store.keys();
    let Some(release) = context.store.get(&keys.release(app, n)).await? else {
        return Ok(serving);
    };
    let processes = &release.value.processes;
    if let Some(unknown) = types.find(|p| *p != "web" && !processes.contains_key(*p)) {
        let has: Vec<&str> = std::iter::once("web")
            .chain(
                processes
                    .keys()
                    .map(String::as_str)
                    .filter(|p| *p != "web" && *p != "release"),
            )
            .collect();
        return Err(VerbError::Invalid(format!(
            "process type `{unknown}` is not in v{n}'s Procfile (it has {}): nothing changed",
            has.join(", ")
        )));
    }
    Ok(serving)
}

pub(crate) async fn restart(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<RolloutReport, VerbError> {
    let name = args.one()?;
    let rollouts = context.rollouts()?.clone();
    let (app, _) = load(context, caller, &name).await?;
    let n = current(context, &app).await?.unwrap_or_default();
    let job = Job {
        context,
        caller,
        kind: "restart",
        app: &app,
        n,
    };
    let app2 = app.clone();
    collect_steps(job, None, move |steps| rollouts.restart(app2, steps)).await
}

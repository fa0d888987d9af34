//! One-off containers of an app's serving release (Heroku's `run`): its
//! image, env and limits, as a unit `<app>-v<n>-run-<id>.service` that the
//! scheduler places as any other. An attached run ([`start_attached`]) is
//! on its caller's lease: when the caller goes (or its server dies) the
//! unit goes and its agent removes the container; its front door (SSH,
//! the API) carries the caller's input and output through the agent's
//! attach ([`Attached`]). `run:detached` starts one whose output goes to
//! the app's logs, on a lease of 24 hours (Heroku's limit for one-offs);
//! `run:list` and `run:stop` see and stop both kinds.

use std::time::Duration;

use serde::Serialize;
use store::records::{ActiveState, Release};
use store::{AppName, Lease};

use crate::apps::load;
use crate::args::Args;
use crate::cluster::unit_rows;
use crate::{Caller, Context, VerbError};

/// How long a detached one-off may run.
const DETACHED_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// The lease of an attached one-off: how long it outlives a server that died.
const ATTACHED_TTL: Duration = Duration::from_secs(10);
/// How long an attached run waits to be placed on a machine.
const PLACE_WAIT: Duration = Duration::from_secs(30);

/// A new one-off's id: 8 lowercase letters and digits, the first a letter.
fn new_id() -> String {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
    const ALL: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let bytes: [u8; 8] = rand::random();
    bytes
        .iter()
        .enumerate()
        .map(|(i, byte)| {
            let set = if i == 0 { LETTERS } else { ALL };
            set[*byte as usize % set.len()] as char
        })
        .collect()
}

/// The command words, checked: at least one, and none with a control
/// character a unit file could not carry.
fn check_command(command: &[String]) -> Result<(), VerbError> {
    if command.is_empty() {
        return Err(VerbError::Invalid(
            "name the command to run: run APP COMMAND... (e.g. run APP sh)".into(),
        ));
    }
    if let Some(word) = command.iter().find(|word| {
        word.chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
    }) {
        return Err(VerbError::Invalid(format!(
            "the command word {} holds a control character: leave it out",
            word.escape_debug()
        )));
    }
    Ok(())
}

/// The serving release of `app`, which a one-off runs.
async fn serving(context: &Context, app: &AppName) -> Result<Release, VerbError> {
    let none = || {
        VerbError::Invalid(format!(
            "{app} has no release to run: push or deploy it first"
        ))
    };
    crate::releases::serving_release(context, app)
        .await?
        .ok_or_else(none)
}

/// A one-off's unit, made but not submitted.
struct Made {
    app: AppName,
    id: String,
    unit: units::RenderedUnit,
}

async fn make(
    context: &Context,
    caller: &Caller,
    name: &str,
    command: &[String],
    attached: bool,
    tty: bool,
) -> Result<Made, VerbError> {
    let (app, _) = load(context, caller, name).await?;
    check_command(command)?;
    let release = serving(context, &app).await?;
    let limits = release.resources.of("run");
    let id = new_id();
    let unit = units::render_one_off(&units::OneOff {
        app: app.to_string(),
        release: release.n,
        id: id.clone(),
        image: release.image.clone(),
        env: release.env.clone().into_iter().collect(),
        command: command.to_vec(),
        memory: limits.memory,
        nano_cpus: limits.nano_cpus,
        attached,
        tty,
    })
    .map_err(VerbError::Invalid)?;
    Ok(Made { app, id, unit })
}

/// An attached one-off, submitted: its unit lives while this does.
#[derive(Debug)]
pub struct Started {
    pub app: AppName,
    pub id: String,
    pub unit: String,
    _lease: Lease,
}

/// Submits an attached one-off of `name`'s serving release running
/// `command` (exec form), with a TTY when `tty`; [`Started::attach`]
/// connects to it.
pub async fn start_attached(
    context: &Context,
    caller: &Caller,
    name: &str,
    command: &[String],
    tty: bool,
) -> Result<Started, VerbError> {
    let made = make(context, caller, name, command, true, tty).await?;
    let store = &context.store;
    let key = store.keys().unit(&made.unit.name)?;
    let lease = store.grant_lease(ATTACHED_TTL).await?;
    store
        .transaction()
        .require_absent(&key)
        .put_on_lease(&key, &made.unit.text, &lease)
        .commit()
        .await?;
    Ok(Started {
        app: made.app,
        id: made.id,
        unit: made.unit.name,
        _lease: lease,
    })
}

/// The frames of an attached one-off, through its agent.
pub type Attached = tokio_util::codec::Framed<reqwest::Upgraded, telemetry::attach::FrameCodec>;

impl Started {
    /// Waits for the one-off to be placed, then attaches to it through its
    /// machine's agent, which starts it (its TTY `size` columns × rows).
    pub async fn attach(
        &self,
        context: &Context,
        size: Option<(u16, u16)>,
    ) -> Result<Attached, VerbError> {
        let store = &context.store;
        let keys = store.keys();
        let schedule = keys.schedule(&self.unit)?;
        let placed = tokio::time::timeout(PLACE_WAIT, store.wait_until(&schedule, |m| m.is_some()))
            .await
            .ok()
            .flatten();
        let Some(machine) = placed else {
            let why = store
                .get(&keys.unplaced(&self.unit)?)
                .await?
                .map(|v| v.value)
                .unwrap_or_else(|| "no machine took it in time".into());
            return Err(VerbError::Invalid(format!(
                "run.{} could not be placed: {why}",
                self.id
            )));
        };
        let record = store.get(&keys.machine(&machine)?).await?;
        let endpoint = record.and_then(|m| m.value.endpoint).ok_or_else(|| {
            VerbError::Invalid(format!(
                "machine {machine} has no agent endpoint to attach through: is its agent running?"
            ))
        })?;
        let secret = store.get(&keys.agent_secret()).await?.ok_or_else(|| {
            VerbError::Invalid("the cluster has no agent secret yet: start an agent".into())
        })?;
        telemetry::AgentClient::new(&secret.value)
            .attach(&endpoint, &self.unit, size)
            .await
            .map_err(|error| {
                VerbError::Invalid(format!("cannot attach to run.{}: {error}", self.id))
            })
    }
}

/// A detached one-off started (`run:detached`).
#[derive(Debug, Serialize)]
pub struct DetachedRun {
    pub app: AppName,
    pub id: String,
    pub unit: String,
}

impl std::fmt::Display for DetachedRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "started run.{id} of {app}: its output goes to `logs {app} --instance run.{id}`; run:stop {app} {id} stops it",
            id = self.id,
            app = self.app
        )
    }
}

pub(crate) async fn detached(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<DetachedRun, VerbError> {
    let words = args.raw();
    let Some((name, command)) = words.split_first() else {
        return Err(args.usage());
    };
    let made = make(context, caller, name, command, false, false).await?;
    let key = context.store.keys().unit(&made.unit.name)?;
    if !context
        .store
        .create_expiring(&key, &made.unit.text, DETACHED_TTL)
        .await?
    {
        return Err(VerbError::Conflict(
            "a one-off of that id exists: try again".into(),
        ));
    }
    tokio::spawn(remove_when_done(
        context.store.clone(),
        made.unit.name.clone(),
    ));
    Ok(DetachedRun {
        app: made.app,
        id: made.id,
        unit: made.unit.name,
    })
}

/// Removes a detached one-off's unit once it exited (its output and exit
/// code are in the app's log): its agent then removes the container. A
/// server that stops first leaves it to its 24-hour lease.
async fn remove_when_done(store: store::Store, unit: String) {
    let (Ok(state), Ok(key)) = (store.keys().unit_state(&unit), store.keys().unit(&unit)) else {
        return;
    };
    let done = store.wait_until(&state, |state| {
        state.is_some_and(|state| {
            matches!(state.active, ActiveState::Inactive | ActiveState::Failed)
        })
    });
    let gone = store.wait_until(&key, |text| text.is_none());
    let finished = tokio::time::timeout(DETACHED_TTL, async {
        tokio::select! {
            _ = done => true,
            _ = gone => false,
        }
    })
    .await;
    if finished == Ok(true) {
        if let Err(error) = store.delete(&key).await {
            tracing::warn!(%unit, %error, "cannot remove a finished one-off; its lease will");
        }
    }
}

/// One one-off (`run:list`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunRow {
    pub id: String,
    pub release: u64,
    /// Exec form.
    pub command: Vec<String>,
    /// Its caller's terminal is attached (`run`), else its output goes to
    /// the logs (`run:detached`).
    pub attached: bool,
    /// Where it runs and its state.
    #[serde(flatten)]
    pub row: crate::cluster::UnitRow,
}

/// An app's one-offs (`run:list`).
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct RunList {
    #[serde(skip)]
    pub app: AppName,
    pub runs: Vec<RunRow>,
    #[serde(skip)]
    pub now: u64,
}

impl std::fmt::Display for RunList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lines = self.runs.iter().map(|run| {
            let (age, machine) = crate::instances::age_and_machine(&run.row, self.now);
            // An ended one-off says how it ended (its exit code, an OOM kill).
            let state = match run.row.state.as_ref() {
                Some(state)
                    if matches!(state.active, ActiveState::Inactive | ActiveState::Failed) =>
                {
                    state.reason.as_deref().unwrap_or("stopped")
                }
                None if run.row.unplaced.is_some() => {
                    run.row.unplaced.as_deref().unwrap_or_default()
                }
                state => crate::instances::state_word(state),
            };
            let kind = if run.attached { "attached" } else { "detached" };
            format!(
                "run.{}  v{}  {kind}  {machine:12}  {age:>5}  {state}  {}",
                run.id,
                run.release,
                units::exec::join(&run.command)
            )
        });
        crate::lines_or(f, lines, format!("{} runs no one-offs", self.app))
    }
}

pub(crate) async fn list(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<RunList, VerbError> {
    let name = args.one()?;
    let (app, _) = load(context, caller, &name).await?;
    let rows = unit_rows(&context.store, |unit| {
        units::parse_run_name(unit).is_some_and(|run| run.app == app.as_str())
    })
    .await?;
    let mut runs = Vec::new();
    for row in rows {
        let Some(run) = units::parse_run_name(&row.unit) else {
            continue;
        };
        let key = context.store.keys().unit(&row.unit)?;
        let Some(text) = context.store.get(&key).await? else {
            continue;
        };
        let spec = match units::parse_unit(&row.unit, &text.value).map(|unit| unit.exec) {
            Ok(units::Exec::Container(spec)) => spec,
            _ => continue,
        };
        runs.push(RunRow {
            id: run.id.to_string(),
            release: run.release,
            command: spec.command,
            attached: spec.interactive,
            row,
        });
    }
    Ok(RunList {
        app,
        runs,
        now: context.now(),
    })
}

/// A one-off stopped (`run:stop`).
#[derive(Debug, Serialize)]
pub struct RunStopped {
    #[serde(skip)]
    pub said: String,
    pub app: AppName,
    pub id: String,
}

crate::shown_as_said!(RunStopped);

pub(crate) async fn stop(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<RunStopped, VerbError> {
    let (name, id) = args.two()?;
    let (app, _) = load(context, caller, &name).await?;
    let id = id.strip_prefix("run.").unwrap_or(&id).to_string();
    units::check_run_id(&id).map_err(VerbError::Invalid)?;
    let store = &context.store;
    let unit = store
        .list_names(&store.keys().units())
        .await?
        .into_iter()
        .find(|unit| {
            units::parse_run_name(unit).is_some_and(|run| run.app == app.as_str() && run.id == id)
        })
        .ok_or_else(|| {
            VerbError::NotFound(format!("{app} has no one-off run.{id}: see run:list {app}"))
        })?;
    store.delete(&store.keys().unit(&unit)?).await?;
    Ok(RunStopped {
        said: format!("stopped run.{id} of {app}: its container is removed"),
        app,
        id,
    })
}

//! What pages read, through the verbs (as the API does, so that a page
//! shows what the caller may see and no more), as typed values.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use store::records::{App, Build, Machine, Release, SshKey, UnitState};
use store::AppName;
use verbs::Caller;

use crate::error::Failure;
use crate::WebState;

/// Runs verb `name` with `args` as `caller` and reads its JSON as `T`.
pub(crate) async fn read<T: DeserializeOwned>(
    state: &WebState,
    caller: &Caller,
    name: &str,
    args: &[&str],
) -> Result<T, Failure> {
    let args = args.iter().map(|arg| arg.to_string()).collect();
    let json = api::verb(&state.api, caller, name, args, b"").await?;
    serde_json::from_value(json).map_err(|error| {
        Failure::Api(api::ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!(
                "the answer of {name} is not what the web UI reads ({error}): see the server's log"
            ),
        ))
    })
}

#[derive(Debug, Deserialize)]
pub(crate) struct AppInfo {
    pub(crate) app: App,
    pub(crate) url: Option<String>,
    pub(crate) current_release: Option<u64>,
}

pub(crate) async fn app_info(
    state: &WebState,
    caller: &Caller,
    app: &AppName,
) -> Result<AppInfo, Failure> {
    read(state, caller, "apps:info", &[app.as_str()]).await
}

pub(crate) async fn apps(state: &WebState, caller: &Caller) -> Result<Vec<AppName>, Failure> {
    read(state, caller, "apps:list", &[]).await
}

/// A unit, where it runs and how.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct UnitRow {
    pub(crate) unit: String,
    pub(crate) machine: Option<String>,
    pub(crate) state: Option<UnitState>,
    pub(crate) unplaced: Option<String>,
}

impl UnitRow {
    /// Its state in one word (as `units:list` says it).
    pub(crate) fn active(&self) -> &'static str {
        use store::records::ActiveState;
        if self.machine.is_none() && self.unplaced.is_some() {
            return "unplaced";
        }
        match self.state.as_ref().map(|s| (s.active, s.pulling)) {
            Some((ActiveState::Activating, true)) => "pulling",
            Some((ActiveState::Active, _)) => "active",
            Some((ActiveState::Activating, _)) => "activating",
            Some((ActiveState::Deactivating, _)) => "deactivating",
            Some((ActiveState::Inactive, _)) => "inactive",
            Some((ActiveState::Failed, _)) => "failed",
            None if self.machine.is_some() => "placed",
            None => "waiting",
        }
    }

    /// `app v7 web.2` (with `announce` for a sidekick), or the unit's name.
    pub(crate) fn label(&self) -> String {
        match units::parse_instance_name(&self.unit) {
            Some(name) => {
                let sidekick = if name.sidekick { " announce" } else { "" };
                format!(
                    "{} v{} {}.{}{sidekick}",
                    name.app, name.release, name.process, name.index
                )
            }
            None => self.unit.clone(),
        }
    }

    pub(crate) fn is_sidekick(&self) -> bool {
        units::parse_instance_name(&self.unit).is_some_and(|name| name.sidekick)
    }

    pub(crate) fn app(&self) -> Option<&str> {
        units::parse_instance_name(&self.unit).map(|name| name.app)
    }
}

/// The units `caller` may see (all for an admin, its apps' for a deployer),
/// from the fleet's mirror, and the revision they are as of.
pub(crate) async fn visible_units(
    state: &WebState,
    caller: &Caller,
) -> Result<(Vec<UnitRow>, i64), Failure> {
    let fleet = fleet(state).await?;
    let rows = fleet
        .units
        .iter()
        .filter(|unit| {
            caller.is_admin()
                || units::parse_instance_name(unit)
                    .and_then(|name| AppName::new(name.app).ok())
                    .is_some_and(|app| caller.may_use(&app))
        })
        .map(|unit| row_of(&fleet, unit))
        .collect();
    Ok((rows, fleet.revision))
}

/// The fleet's mirror now.
pub(crate) async fn fleet(
    state: &WebState,
) -> Result<std::sync::Arc<crate::mirror::Fleet>, Failure> {
    state.mirror.now().await.ok_or_else(|| {
        Failure::Api(api::ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the store has not answered yet: try again in a moment",
        ))
    })
}

/// Unit `unit` as the mirror has it. A report from another machine than
/// the one it is placed on is that machine's last word, not how it is now.
pub(crate) fn row_of(fleet: &crate::mirror::Fleet, unit: &str) -> UnitRow {
    let machine = fleet.schedule.get(unit).cloned();
    let state = fleet
        .states
        .get(unit)
        .filter(|state| machine.as_ref().is_none_or(|m| *m == state.machine))
        .cloned();
    UnitRow {
        unit: unit.to_string(),
        machine,
        state,
        unplaced: fleet.unplaced.get(unit).cloned(),
    }
}

#[derive(Debug)]
pub(crate) struct MachineRow {
    pub(crate) id: String,
    pub(crate) machine: Machine,
}

/// How long a reading of the machines' heartbeats is used again.
pub(crate) const HEARTBEATS_FRESH: std::time::Duration = std::time::Duration::from_secs(2);

/// The machines' heartbeat ages, by machine id, and when they were read.
pub(crate) type Heartbeats = (std::time::Instant, BTreeMap<String, std::time::Duration>);

/// How long ago each machine's agent renewed its lease, read again once
/// the last reading is older than `HEARTBEATS_FRESH`.
async fn heartbeats(state: &WebState) -> Result<BTreeMap<String, std::time::Duration>, Failure> {
    let mut cached = state.heartbeats.lock().await;
    if let Some((read, ages)) = cached.as_ref() {
        if read.elapsed() < HEARTBEATS_FRESH {
            return Ok(ages.clone());
        }
    }
    let store = &state.api.context.store;
    let ages = store.lease_ages(&store.keys().machines()).await?;
    *cached = Some((std::time::Instant::now(), ages.clone()));
    Ok(ages)
}

/// The machines (admins only), with how long ago each renewed its lease.
pub(crate) async fn machines(
    state: &WebState,
    caller: &Caller,
) -> Result<Vec<(MachineRow, Option<u64>)>, Failure> {
    caller
        .require_admin("see the machines")
        .map_err(api::ApiError::from)?;
    let fleet = fleet(state).await?;
    let ages = heartbeats(state).await?;
    let rows: Vec<MachineRow> = fleet
        .machines
        .iter()
        .map(|(id, machine)| MachineRow {
            id: id.clone(),
            machine: machine.clone(),
        })
        .collect();
    Ok(rows
        .into_iter()
        .map(|row| {
            let age = ages.get(&row.id).map(|age| age.as_secs());
            (row, age)
        })
        .collect())
}

pub(crate) async fn releases(
    state: &WebState,
    caller: &Caller,
    app: &AppName,
) -> Result<Vec<Release>, Failure> {
    read(state, caller, "releases", &[app.as_str()]).await
}

#[derive(Debug, Deserialize)]
pub(crate) struct BuildRow {
    pub(crate) id: String,
    pub(crate) build: Build,
}

pub(crate) async fn builds(
    state: &WebState,
    caller: &Caller,
    app: &AppName,
) -> Result<Vec<BuildRow>, Failure> {
    read(state, caller, "builds", &[app.as_str()]).await
}

/// The app's instances (`ps`).
pub(crate) async fn instances(
    state: &WebState,
    caller: &Caller,
    app: &AppName,
) -> Result<Vec<UnitRow>, Failure> {
    read(state, caller, "ps", &[app.as_str()]).await
}

/// The app's env (`config:show`).
pub(crate) async fn config(
    state: &WebState,
    caller: &Caller,
    app: &AppName,
) -> Result<BTreeMap<String, String>, Failure> {
    read(state, caller, "config:show", &[app.as_str()]).await
}

#[derive(Debug, Deserialize)]
pub(crate) struct UnitFile {
    pub(crate) text: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct TokenRow {
    pub(crate) name: String,
    pub(crate) role: store::records::Role,
    pub(crate) apps: Vec<AppName>,
}

pub(crate) async fn keys(state: &WebState, caller: &Caller) -> Result<Vec<SshKey>, Failure> {
    read(state, caller, "ssh-keys:list", &[]).await
}

/// The first line of the message of commit `sha` of `app`, if its repo has it.
pub(crate) async fn commit_subject(state: &WebState, app: &AppName, sha: &str) -> Option<String> {
    let repo = state.api.context.repo_path(app);
    let sha = sha.to_string();
    tokio::task::spawn_blocking(move || builder::source::commit_subject(&repo, &sha))
        .await
        .ok()
        .flatten()
}

//! `machines:list`, `units:list` and `units:cat`: what runs where.

use serde::Serialize;
use store::records::{ActiveState, Machine, UnitState};

use crate::args::Args;
use crate::{Caller, Context, VerbError};

/// The machines alive now and how many units each runs (`machines:list`).
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct Machines {
    pub machines: Vec<MachineRow>,
    /// When this was read, for the machines' ages.
    #[serde(skip)]
    pub now: u64,
}

/// One machine of [`Machines`].
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MachineRow {
    pub id: String,
    pub machine: Machine,
    pub units: usize,
}

impl std::fmt::Display for Machines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lines = self.machines.iter().map(|row| {
            let metadata: Vec<String> = row
                .machine
                .metadata
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let metadata = if metadata.is_empty() {
                "-".to_string()
            } else {
                metadata.join(",")
            };
            format!(
                "{}  {}  {metadata}  {} units  up since {} ({})",
                row.id,
                row.machine.addr,
                row.units,
                crate::utc(row.machine.started_at),
                crate::age(row.machine.started_at, self.now)
            )
        });
        crate::lines_or(
            f,
            lines,
            "no machines: start paz agent (or paz up) on a host",
        )
    }
}

pub(crate) async fn machines(context: &Context, caller: &Caller) -> Result<Machines, VerbError> {
    caller.require_admin("list machines")?;
    let store = &context.store;
    let (machines, schedule) = (store.keys().machines(), store.keys().schedules());
    let (machines, schedule) = futures::try_join!(store.list(&machines), store.list(&schedule))?;
    // A machine key lives on its agent's lease: being listed means being alive now.
    let machines = machines
        .entries
        .into_iter()
        .map(|entry| {
            let id = store.keys().machines().child_name(&entry.key).to_string();
            let units = schedule.entries.iter().filter(|s| s.value == id).count();
            MachineRow {
                id,
                machine: entry.value,
                units,
            }
        })
        .collect();
    Ok(Machines {
        machines,
        now: context.now(),
    })
}

/// Whether `unit` is an instance (or sidekick) or a one-off of `app`.
pub(crate) fn unit_of(unit: &str, app: &str) -> bool {
    units::parse_instance_name(unit).is_some_and(|name| name.app == app)
        || units::parse_run_name(unit).is_some_and(|run| run.app == app)
}

/// Units, where they run and their state (`units:list`).
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct Units(pub Vec<UnitRow>);

/// One unit of [`Units`].
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UnitRow {
    pub unit: String,
    /// The machine it is placed on.
    pub machine: Option<String>,
    /// What its agent last reported.
    pub state: Option<UnitState>,
    /// Why the scheduler cannot place it.
    pub unplaced: Option<String>,
    /// Its container's CPU and memory, as its agent last sampled them
    /// (`ps` asks; absent where the agent was not asked or did not answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// An instance's CPU and memory.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Usage {
    /// Of one CPU, over the agent's last sample (5 s).
    pub cpu_percent: f64,
    pub memory_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_bytes: Option<u64>,
}

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |bytes: u64| format!("{:.1}MiB", bytes as f64 / f64::from(1 << 20));
        write!(
            f,
            "cpu {:.1}%  mem {}",
            self.cpu_percent,
            mib(self.memory_bytes)
        )?;
        if let Some(limit) = self.memory_limit_bytes {
            write!(f, " of {}", mib(limit))?;
        }
        Ok(())
    }
}

impl UnitRow {
    /// Its state in one word.
    fn active(&self) -> &'static str {
        if self.machine.is_none() && self.unplaced.is_some() {
            return "unplaced";
        }
        match self.state.as_ref().map(|s| s.active) {
            Some(ActiveState::Active) => "active",
            Some(ActiveState::Activating) => "activating",
            Some(ActiveState::Deactivating) => "deactivating",
            Some(ActiveState::Inactive) => "inactive",
            Some(ActiveState::Failed) => "failed",
            None if self.machine.is_some() => "placed",
            None => "waiting",
        }
    }
}

impl std::fmt::Display for UnitRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let reason = self
            .state
            .as_ref()
            .and_then(|s| s.reason.as_ref())
            .or(self.unplaced.as_ref())
            .map(|r| format!("  ({r})"))
            .unwrap_or_default();
        write!(
            f,
            "{}  {}  {}{reason}",
            self.unit,
            self.machine.as_deref().unwrap_or("-"),
            self.active()
        )
    }
}

impl std::fmt::Display for Units {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        crate::lines_or(f, &self.0, "no units")
    }
}

pub(crate) async fn units(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<Units, VerbError> {
    let words = args.at_least(0)?;
    if words.len() > 1 {
        return Err(args.usage());
    }
    let app = match words.first() {
        Some(name) => {
            let app = store::AppName::new(name)?;
            caller.require_app(&app)?;
            Some(app)
        }
        None => {
            caller.require_admin("list every app's units (name an app)")?;
            None
        }
    };
    let rows = unit_rows(&context.store, |unit| {
        app.as_ref().is_none_or(|app| unit_of(unit, app.as_str()))
    })
    .await?;
    Ok(Units(rows))
}

/// The submitted units that `keep` names, with where each is placed, the
/// report of the agent it is placed on and why it cannot be placed, in the
/// units' order (read at once, not one after another).
pub(crate) async fn unit_rows(
    store: &store::Store,
    keep: impl Fn(&str) -> bool,
) -> Result<Vec<UnitRow>, VerbError> {
    let keys = store.keys();
    let (units, schedule, states, unplaced) = (
        keys.units(),
        keys.schedules(),
        keys.unit_states(),
        keys.unplaced_all(),
    );
    let (units, mut schedule, mut states, mut unplaced) = futures::try_join!(
        store.list_names(&units),
        store.list_named(&schedule),
        store.list_named(&states),
        store.list_named(&unplaced),
    )?;
    Ok(units
        .iter()
        .map(String::as_str)
        .filter(|unit| keep(unit))
        .map(|unit| {
            let machine = schedule.remove(unit);
            // A report from another machine than the one the unit is placed
            // on is that machine's last word (its lease not yet over), not
            // how the unit is now.
            let state = states
                .remove(unit)
                .filter(|state| machine.as_ref().is_none_or(|m| *m == state.machine));
            UnitRow {
                machine,
                state,
                unplaced: unplaced.remove(unit),
                unit: unit.to_string(),
                usage: None,
            }
        })
        .collect())
}

/// One unit file (`units:cat`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UnitFile {
    pub unit: String,
    pub text: String,
}

impl std::fmt::Display for UnitFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.text.trim_end())
    }
}

pub(crate) async fn cat(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<UnitFile, VerbError> {
    let name = args.one()?;
    let key = context.store.keys().unit(&name)?;
    let owner = units::parse_instance_name(&name)
        .map(|instance| instance.app)
        .or_else(|| units::parse_run_name(&name).map(|run| run.app))
        .unwrap_or_default();
    match store::AppName::new(owner) {
        Ok(app) if unit_of(&name, app.as_str()) => caller.require_app(&app)?,
        _ => caller.require_admin("read units that belong to no app")?,
    }
    let text = context
        .store
        .get(&key)
        .await?
        .ok_or_else(|| VerbError::NotFound(format!("no unit {name}: see units:list")))?
        .value;
    Ok(UnitFile { unit: name, text })
}

/// The units of `app`, for `paz units export`.
pub async fn app_units(
    store: &store::Store,
    app: &store::AppName,
) -> Result<Vec<(String, String)>, VerbError> {
    let units = store.list(&store.keys().units()).await?;
    Ok(units
        .entries
        .into_iter()
        .map(|entry| {
            (
                store.keys().units().child_name(&entry.key).to_string(),
                entry.value,
            )
        })
        .filter(|(name, _)| unit_of(name, app.as_str()))
        .collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn units_belong_to_the_app_their_name_starts_with() {
        assert!(super::unit_of("web-v7-web-1.service", "web"));
        assert!(super::unit_of("web-v7-web-1-announce.service", "web"));
        assert!(!super::unit_of("web-api-v1-web-1.service", "web"));
        assert!(!super::unit_of("webv1.service", "web"));
        assert!(super::unit_of("web-v7-run-a1b2c3d4.service", "web"));
        assert!(!super::unit_of("web-api-v7-run-a1b2c3d4.service", "web"));
    }
}

//! `machines:list`, `units:list` and `units:cat`: what runs where.

use serde_json::json;
use store::records::ActiveState;

use crate::args::Args;
use crate::{Caller, Context, Outcome, VerbError};

pub(crate) async fn machines(context: &Context, caller: &Caller) -> Result<Outcome, VerbError> {
    caller.require_admin("list machines")?;
    let store = &context.store;
    let machines = store.list(&store.keys().machines()).await?;
    let schedule = store.list(&store.keys().schedules()).await?;
    let mut lines = Vec::new();
    let mut rows = Vec::new();
    for entry in &machines.entries {
        let id = store.keys().machines().child_name(&entry.key).to_string();
        let units = schedule.entries.iter().filter(|s| s.value == id).count();
        let metadata: Vec<String> = entry
            .value
            .metadata
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let metadata = if metadata.is_empty() {
            "-".to_string()
        } else {
            metadata.join(",")
        };
        // A machine key lives on its agent's lease: being listed means being alive now.
        lines.push(format!(
            "{id}  {}  {metadata}  {units} units  up since {} ({})",
            entry.value.addr,
            crate::utc(entry.value.started_at),
            crate::age(entry.value.started_at)
        ));
        rows.push(json!({"id": id, "machine": entry.value, "units": units}));
    }
    Ok(Outcome::listing(
        &lines,
        "no machines: start paz agent (or paz up) on a host".to_string(),
        json!(rows),
    ))
}

/// Whether `unit` belongs to `app` (`<app>-v<n>-...`).
/// Whether `unit` is an instance (or sidekick) of `app`.
pub(crate) fn unit_of(unit: &str, app: &str) -> bool {
    units::parse_instance_name(unit).is_some_and(|name| name.app == app)
}

pub(crate) async fn units(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<Outcome, VerbError> {
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
    let store = &context.store;
    let units = store.list(&store.keys().units()).await?;
    let schedule = store.list(&store.keys().schedules()).await?;
    let states = store.list(&store.keys().unit_states()).await?;
    let unplaced = store.list(&store.keys().unplaced_all()).await?;
    let mut lines = Vec::new();
    let mut rows = Vec::new();
    for entry in &units.entries {
        let name = store.keys().units().child_name(&entry.key).to_string();
        if app
            .as_ref()
            .is_some_and(|app| !unit_of(&name, app.as_str()))
        {
            continue;
        }
        let machine = schedule
            .entries
            .iter()
            .find(|s| store.keys().schedules().child_name(&s.key) == name)
            .map(|s| s.value.clone());
        let state = states
            .entries
            .iter()
            .find(|s| store.keys().unit_states().child_name(&s.key) == name)
            .map(|s| &s.value);
        let active = match state.map(|s| s.active) {
            Some(ActiveState::Active) => "active",
            Some(ActiveState::Activating) => "activating",
            Some(ActiveState::Deactivating) => "deactivating",
            Some(ActiveState::Inactive) => "inactive",
            Some(ActiveState::Failed) => "failed",
            None if machine.is_some() => "placed",
            None => "waiting",
        };
        let cannot_place = unplaced
            .entries
            .iter()
            .find(|u| store.keys().unplaced_all().child_name(&u.key) == name)
            .map(|u| u.value.clone());
        let active = if machine.is_none() && cannot_place.is_some() {
            "unplaced"
        } else {
            active
        };
        let reason = state
            .and_then(|s| s.reason.clone())
            .or(cannot_place.clone())
            .map(|r| format!("  ({r})"))
            .unwrap_or_default();
        lines.push(format!(
            "{name}  {}  {active}{reason}",
            machine.as_deref().unwrap_or("-")
        ));
        rows.push(
            json!({"unit": name, "machine": machine, "state": state, "unplaced": cannot_place}),
        );
    }
    Ok(Outcome::listing(
        &lines,
        "no units".to_string(),
        json!(rows),
    ))
}

pub(crate) async fn cat(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<Outcome, VerbError> {
    let name = args.one()?;
    let key = context.store.keys().unit(&name)?;
    let owner = units::parse_instance_name(&name)
        .map(|instance| instance.app)
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
    Ok(Outcome::new(
        text.trim_end().to_string(),
        json!({"unit": name, "text": text}),
    ))
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
    }
}

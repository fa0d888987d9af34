//! The fleet (home) page: a card per machine with the units it runs and
//! their states, and the units that wait to be placed with the reason; and
//! one machine's page.

use std::collections::BTreeMap;

use maud::{html, Markup};

use crate::data::{self, MachineRow, UnitRow};
use crate::error::Failure;
use crate::layout::{age, badge, Page};
use crate::session::Session;
use crate::WebState;

/// A unit on a card: `app v7 web.2` and its state (`oob`: to be swapped
/// in place of the one the page shows).
fn unit(row: &UnitRow, oob: bool) -> Markup {
    let state = row.active();
    let reason = row.state.as_ref().and_then(|s| s.reason.as_deref());
    html! {
        li.unit id={ "unit-" (row.unit) } title=[reason] hx-swap-oob=[oob.then_some("true")] {
            @if let Some(app) = row.app() {
                a href={ "/apps/" (app) } { (row.label()) }
            } @else {
                (row.label())
            }
            " " (badge(state))
        }
    }
}

/// The card of a machine: what it is and what it runs.
fn card(id: &str, machine: Option<(&MachineRow, Option<u64>)>, units: &[&UnitRow]) -> Markup {
    html! {
        article.card.machine data-machine=(id) {
            header {
                @if machine.is_some() {
                    a.mono href={ "/machines/" (id) } { (short(id)) }
                } @else {
                    span.mono { (short(id)) }
                }
                @if let Some((row, heartbeat)) = machine {
                    span.muted { (row.machine.addr) }
                    span.heartbeat title="since its agent last renewed its lease" {
                        @match heartbeat {
                            Some(seconds) => { "♥ " (seconds) " s ago" }
                            None => { "♥ -" }
                        }
                    }
                }
            }
            @if let Some((row, _)) = machine {
                @if !row.machine.metadata.is_empty() {
                    p.chips {
                        @for (key, value) in &row.machine.metadata {
                            span.chip { (key) "=" (value) }
                        }
                    }
                }
            }
            @if units.is_empty() {
                p.muted { "no units" }
            } @else {
                ul.units { @for row in units { (unit(row, false)) } }
            }
        }
    }
}

/// A machine id's first 12 characters.
fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

pub(crate) async fn fleet(state: &WebState, session: &Session) -> Result<Page, Failure> {
    let caller = &session.caller;
    // A deployer sees the machines its units run on, by id only.
    let machines = async {
        match caller.is_admin() {
            true => data::machines(state, caller).await,
            false => Ok(Vec::new()),
        }
    };
    let ((units, revision), machines) =
        futures::try_join!(data::visible_units(state, caller), machines)?;
    let mut placed: BTreeMap<&str, Vec<&UnitRow>> = BTreeMap::new();
    for (row, _) in &machines {
        placed.entry(row.id.as_str()).or_default();
    }
    let mut waiting = Vec::new();
    for row in units.iter().filter(|row| !row.is_sidekick()) {
        match &row.machine {
            Some(machine) => placed.entry(machine.as_str()).or_default().push(row),
            None => waiting.push(row),
        }
    }
    let live = html! {
        @if placed.is_empty() && waiting.is_empty() {
            p.empty {
                @if caller.is_admin() {
                    "No machines yet: start " code { "paz agent" } " (or " code { "paz up" } ") on a host."
                } @else {
                    "None of your apps runs anywhere yet."
                }
            }
        }
        @if !waiting.is_empty() {
            section.card.warn {
                h2 { "Not placed" }
                ul.units {
                    @for row in &waiting {
                        li.unit data-unit=(row.unit) {
                            (row.label()) " " (badge(row.active()))
                            @if let Some(reason) = &row.unplaced {
                                span.reason { (reason) }
                            }
                        }
                    }
                }
            }
        }
        div.grid {
            @for (id, units) in &placed {
                @let machine = machines.iter().find(|(row, _)| row.id == *id).map(|(row, age)| (row, *age));
                (card(id, machine, units))
            }
        }
    };
    let mut page = Page::new("Fleet", live);
    page.revision = Some(revision);
    Ok(page)
}

/// What a batch of changes alters on the fleet page, as the items of the
/// units whose state changed, each to be swapped in place; `None` when it
/// alters more (a unit added, placed or moved, a machine come or gone),
/// or the mirror has not reached revision `newest` (the batch's last):
/// then the page is rendered again whole. A state report is what changes
/// most, so most changes send a few hundred bytes, not the whole fleet.
pub(crate) async fn patch(
    state: &WebState,
    changes: &[&api::Change],
    newest: i64,
) -> Result<Option<Markup>, Failure> {
    if changes.iter().any(|change| change.kind != api::Kind::State) {
        return Ok(None);
    }
    let fleet = state.mirror.at_least(newest).await;
    let Some(fleet) = fleet.filter(|fleet| fleet.revision >= newest) else {
        return Ok(None);
    };
    let mut items = Vec::new();
    for change in changes {
        let name = &change.name;
        if units::parse_instance_name(name).is_none_or(|n| n.sidekick) {
            continue;
        }
        items.push(unit(&data::row_of(&fleet, name), true));
    }
    Ok(Some(html! { @for item in &items { (item) } }))
}

pub(crate) async fn machine(
    state: &WebState,
    session: &Session,
    id: &str,
) -> Result<Page, Failure> {
    let caller = &session.caller;
    let machines = data::machines(state, caller).await?;
    let (row, heartbeat) = machines
        .iter()
        .find(|(row, _)| row.id == id)
        .ok_or_else(|| Failure::not_found(format!("no machine {id} is alive: see the fleet")))?;
    let (units, _) = data::visible_units(state, caller).await?;
    let now = state.api.context.clock.now();
    let live = html! {
        dl.facts {
            dt { "Id" } dd.mono { (row.id) }
            dt { "Address" } dd { (row.machine.addr) }
            dt { "Up since" } dd { (crate::layout::when(row.machine.started_at, now)) }
            dt { "Heartbeat" } dd {
                @match heartbeat { Some(s) => { (s) " s ago" } None => { "-" } }
            }
            dt { "Metadata" } dd {
                @if row.machine.metadata.is_empty() { span.muted { "none" } }
                @for (key, value) in &row.machine.metadata { span.chip { (key) "=" (value) } }
            }
        }
        @let charts = state.history.machine(id);
        section.charts {
            h2 { "The last hour" }
            div.chart-grid {
                (crate::charts::chart("CPU", "%", &[("cpu".to_string(), charts.cpu.clone())], now as f64))
                (crate::charts::chart(&format!("Memory of {:.0} MiB", charts.memory_total), "MiB", &[("used".to_string(), charts.memory.clone())], now as f64))
            }
        }
        h2 { "Units" }
        table {
            thead { tr { th { "Unit" } th { "State" } th { "Since" } th { "Restarts" } th { "Reason" } } }
            tbody {
                @for unit in units.iter().filter(|u| u.machine.as_deref() == Some(id)) {
                    tr data-unit=(unit.unit) {
                        td { (unit.label()) }
                        td { (badge(unit.active())) }
                        td { @if let Some(s) = &unit.state { (age(s.since, now)) } }
                        td { @if let Some(s) = &unit.state { (s.restarts) } }
                        td { @if let Some(reason) = unit.state.as_ref().and_then(|s| s.reason.as_deref()) { (reason) } }
                    }
                }
            }
        }
    };
    Ok(Page::new(format!("Machine {}", short(id)), live))
}

//! Where units go: fleet's rules (MachineID, MachineOf, MachineMetadata,
//! Conflicts, Global) and Paz's preference (spread an app's instances, then
//! the machine with the fewest units). Pure: the scheduler feeds it what etcd
//! holds and writes back what it decides.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use units::fleet::Placement;

/// A unit as the scheduler sees it.
#[derive(Debug, Clone)]
pub struct UnitInfo {
    pub name: String,
    pub placement: Placement,
}

/// What the scheduler should write.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// New placements: unit -> machine.
    pub place: BTreeMap<String, String>,
    /// Placements to remove: their unit is gone or global, or their machine is gone.
    pub unplace: BTreeSet<String>,
    /// Units that cannot run anywhere now, and why.
    pub unplaced: BTreeMap<String, String>,
}

/// The app a unit belongs to: `demo` in `demo-v7-web-1.service` (and in its
/// `-announce` sidekick); for other names, the name without `.service`.
pub fn app_of(unit: &str) -> &str {
    match units::parse_instance_name(unit) {
        Some(name) => name.app,
        None => unit.strip_suffix(".service").unwrap_or(unit),
    }
}

/// Machines and what is on them while a plan is made.
struct Load<'a> {
    units: BTreeMap<&'a str, Vec<&'a str>>,
    /// (machine, app) -> instances.
    apps: HashMap<(&'a str, &'a str), usize>,
    /// Units with Conflicts rules per machine (only those need checking).
    with_conflicts: HashMap<&'a str, Vec<&'a UnitInfo>>,
}

impl<'a> Load<'a> {
    fn add(&mut self, machine: &'a str, unit: &'a UnitInfo) {
        self.units.entry(machine).or_default().push(&unit.name);
        *self.apps.entry((machine, app_of(&unit.name))).or_default() += 1;
        if !unit.placement.conflicts.is_empty() {
            self.with_conflicts.entry(machine).or_default().push(unit);
        }
    }
}

/// Why a one-off is not placed again: it never starts twice.
pub const ONE_OFF_LOST: &str =
    "its machine was lost while it was placed there, and a one-off never starts twice: see run:list, and stop it with run:stop";

/// Decides placements. `machines`: the live machines and their metadata;
/// `schedule`: the current placements; `unplaced`: the reasons the last
/// plan gave. A unit whose machine is alive never moves; global units are
/// not scheduled (each agent runs them itself); a one-off (`run`) whose
/// machine is lost is not placed again ([`ONE_OFF_LOST`]).
pub fn plan(
    units: &[UnitInfo],
    machines: &BTreeMap<String, BTreeMap<String, String>>,
    schedule: &BTreeMap<String, String>,
    unplaced: &BTreeMap<String, String>,
) -> Plan {
    let mut plan = Plan::default();
    let by_name: HashMap<&str, &UnitInfo> = units.iter().map(|u| (u.name.as_str(), u)).collect();
    let mut placed: HashMap<&str, &str> = HashMap::new();
    let mut load = Load {
        units: BTreeMap::new(),
        apps: HashMap::new(),
        with_conflicts: HashMap::new(),
    };
    for (unit, machine) in schedule {
        let live = machines.get_key_value(machine.as_str());
        match (by_name.get(unit.as_str()), live) {
            (Some(info), Some((machine, _))) if !info.placement.global => {
                placed.insert(&info.name, machine);
                load.add(machine, info);
            }
            (Some(info), None) if units::parse_run_name(&info.name).is_some() => {
                plan.unplace.insert(unit.clone());
                plan.unplaced.insert(unit.clone(), ONE_OFF_LOST.to_string());
            }
            _ => {
                plan.unplace.insert(unit.clone());
            }
        }
    }
    for (unit, reason) in unplaced {
        if reason == ONE_OFF_LOST && by_name.contains_key(unit.as_str()) {
            plan.unplaced.insert(unit.clone(), reason.clone());
        }
    }
    // Units that follow another (MachineOf) come after the ones they follow.
    let mut pending: Vec<&UnitInfo> = units
        .iter()
        .filter(|u| {
            !u.placement.global
                && !placed.contains_key(u.name.as_str())
                && !plan.unplaced.contains_key(&u.name)
        })
        .collect();
    pending.sort_by(|a, b| {
        (a.placement.machine_of.is_some(), &a.name)
            .cmp(&(b.placement.machine_of.is_some(), &b.name))
    });
    for unit in pending {
        match choose(unit, machines, &placed, &load) {
            Ok(machine) => {
                plan.place.insert(unit.name.clone(), machine.to_string());
                placed.insert(&unit.name, machine);
                load.add(machine, unit);
            }
            Err(reason) => {
                plan.unplaced.insert(unit.name.clone(), reason);
            }
        }
    }
    plan
}

fn choose<'m>(
    unit: &UnitInfo,
    machines: &'m BTreeMap<String, BTreeMap<String, String>>,
    placed: &HashMap<&str, &'m str>,
    load: &Load<'_>,
) -> Result<&'m str, String> {
    let rules = &unit.placement;
    if machines.is_empty() {
        return Err("no machine is registered".to_string());
    }
    if let Some(other) = &rules.machine_of {
        return placed
            .get(other.as_str())
            .copied()
            .ok_or_else(|| format!("MachineOf={other}, which is not placed"));
    }
    let app = app_of(&unit.name);
    let mut best: Option<(usize, usize, &str)> = None;
    let mut reasons = BTreeSet::new();
    for (id, metadata) in machines {
        if let Some(wanted) = &rules.machine_id {
            if id != wanted {
                reasons.insert(format!("MachineID={wanted} is not a live machine"));
                continue;
            }
        }
        if !rules.metadata_allows(metadata) {
            reasons.insert("no live machine has the MachineMetadata it asks for".to_string());
            continue;
        }
        let here = load
            .units
            .get(id.as_str())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        // Conflicts work both ways: this unit's rules and those of the units there.
        let conflict = (!rules.conflicts.is_empty()
            && here.iter().any(|other| rules.conflicts_with(other)))
            || load.with_conflicts.get(id.as_str()).is_some_and(|others| {
                others
                    .iter()
                    .any(|o| o.placement.conflicts_with(&unit.name))
            });
        if conflict {
            reasons.insert("its Conflicts rule out every machine that fits".to_string());
            continue;
        }
        let score = (
            load.apps.get(&(id.as_str(), app)).copied().unwrap_or(0),
            here.len(),
            id.as_str(),
        );
        if best.is_none_or(|b| score < b) {
            best = Some(score);
        }
    }
    best.map(|(_, _, id)| id)
        .ok_or_else(|| reasons.into_iter().collect::<Vec<_>>().join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(name: &str, xfleet: &str) -> UnitInfo {
        let text = format!(
            "[Service]\nExecStart=/usr/bin/docker run --rm --name x paz/busybox\n\n[X-Fleet]\n{xfleet}\n"
        );
        let parsed = units::parse_unit(name, &text).expect("a valid unit");
        UnitInfo {
            name: name.to_string(),
            placement: parsed.placement,
        }
    }

    fn machines(list: &[(&str, &[(&str, &str)])]) -> BTreeMap<String, BTreeMap<String, String>> {
        list.iter()
            .map(|(id, meta)| {
                (
                    id.to_string(),
                    meta.iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                )
            })
            .collect()
    }

    #[test]
    fn app_names_come_from_unit_names() {
        assert_eq!(app_of("demo-v7-web-1.service"), "demo");
        assert_eq!(
            app_of("my-v2-app-v12-worker-3-announce.service"),
            "my-v2-app"
        );
        assert_eq!(app_of("plain.service"), "plain");
    }

    #[test]
    fn instances_of_one_app_spread_then_the_emptiest_machine_wins() {
        let ms = machines(&[("a", &[]), ("b", &[]), ("c", &[])]);
        let mut schedule = BTreeMap::new();
        schedule.insert("other-v1-web-1.service".to_string(), "a".to_string());
        schedule.insert("other-v1-web-2.service".to_string(), "a".to_string());
        let units = vec![
            unit("other-v1-web-1.service", ""),
            unit("other-v1-web-2.service", ""),
            unit("demo-v1-web-1.service", ""),
            unit("demo-v1-web-2.service", ""),
            unit("demo-v1-web-3.service", ""),
        ];
        let plan = plan(&units, &ms, &schedule, &BTreeMap::new());
        let machines: BTreeSet<&String> = plan.place.values().collect();
        assert_eq!(machines.len(), 3, "spread over all three: {plan:?}");
        assert_eq!(
            plan.place["demo-v1-web-1.service"], "b",
            "emptiest first: {plan:?}"
        );
        assert!(plan.unplace.is_empty() && plan.unplaced.is_empty());
    }

    #[test]
    fn a_unit_on_a_live_machine_stays_and_a_lost_machines_units_move() {
        let ms = machines(&[("a", &[]), ("b", &[])]);
        let units = vec![
            unit("x-v1-web-1.service", ""),
            unit("y-v1-web-1.service", ""),
        ];
        let schedule: BTreeMap<String, String> = [
            ("x-v1-web-1.service".to_string(), "b".to_string()),
            ("y-v1-web-1.service".to_string(), "gone".to_string()),
            ("removed.service".to_string(), "a".to_string()),
        ]
        .into();
        let plan = plan(&units, &ms, &schedule, &BTreeMap::new());
        assert_eq!(plan.place.len(), 1, "{plan:?}");
        assert_eq!(plan.place["y-v1-web-1.service"], "a");
        assert_eq!(
            plan.unplace,
            [
                "removed.service".to_string(),
                "y-v1-web-1.service".to_string()
            ]
            .into()
        );
    }

    #[test]
    fn a_one_off_whose_machine_is_lost_is_never_placed_again() {
        let ms = machines(&[("a", &[])]);
        let run = "x-v1-run-a1234567.service";
        let units = vec![unit(run, ""), unit("x-v1-run-b7654321.service", "")];
        let schedule: BTreeMap<String, String> = [(run.to_string(), "gone".to_string())].into();
        let first = plan(&units, &ms, &schedule, &BTreeMap::new());
        assert!(first.unplace.contains(run));
        assert_eq!(first.unplaced[run], ONE_OFF_LOST);
        assert!(!first.place.contains_key(run), "{first:?}");
        assert_eq!(
            first.place["x-v1-run-b7654321.service"], "a",
            "a new one is placed"
        );
        // The next plans (by this leader or the next) keep it unplaced.
        let next = plan(&units, &ms, &BTreeMap::new(), &first.unplaced);
        assert!(!next.place.contains_key(run));
        assert_eq!(next.unplaced[run], ONE_OFF_LOST);
    }

    #[test]
    fn conflicts_metadata_machine_id_and_machine_of_are_honoured() {
        let ms = machines(&[
            ("a", &[("disk", "ssd")]),
            ("b", &[("disk", "hdd")]),
            ("c", &[]),
        ]);
        let units = vec![
            unit("db-1.service", "Conflicts=db-*.service"),
            unit("db-2.service", "Conflicts=db-*.service"),
            unit("db-3.service", "Conflicts=db-*.service"),
            unit("db-4.service", "Conflicts=db-*.service"),
            unit("fast.service", "MachineMetadata=disk=ssd"),
            unit("pinned.service", "MachineID=b"),
            unit("pinned-announce.service", "MachineOf=pinned.service"),
            unit("nowhere.service", "MachineMetadata=disk=nvme"),
            unit("lost.service", "MachineID=zzz"),
            unit("everywhere.service", "Global=true"),
        ];
        let plan = plan(&units, &ms, &BTreeMap::new(), &BTreeMap::new());
        let dbs: BTreeSet<&String> = ["db-1.service", "db-2.service", "db-3.service"]
            .iter()
            .map(|u| &plan.place[*u])
            .collect();
        assert_eq!(dbs.len(), 3, "one db per machine: {plan:?}");
        assert!(
            plan.unplaced["db-4.service"].contains("Conflicts"),
            "{plan:?}"
        );
        assert_eq!(plan.place["fast.service"], "a");
        assert_eq!(plan.place["pinned.service"], "b");
        assert_eq!(plan.place["pinned-announce.service"], "b");
        assert!(plan.unplaced["nowhere.service"].contains("MachineMetadata"));
        assert!(plan.unplaced["lost.service"].contains("MachineID=zzz"));
        assert!(!plan.place.contains_key("everywhere.service"));
        assert!(!plan.unplaced.contains_key("everywhere.service"));
    }

    #[test]
    fn with_no_machine_every_unit_is_reported() {
        let plan = plan(
            &[unit("a.service", "")],
            &BTreeMap::new(),
            &BTreeMap::new(),
            &BTreeMap::new(),
        );
        assert_eq!(plan.unplaced["a.service"], "no machine is registered");
    }
}

//! The scheduler: one leader at a time (elected through `/paz/leader/scheduler`
//! on a lease) places each unit of `/paz/units/` on a live machine by writing
//! `/paz/schedule/<unit>`, and places a lost machine's units again.
//!
//! The leader keeps etcd's units, machines and placements in memory from
//! three watches; after any change it makes a [`placement::plan`] and writes
//! it in transactions that each require its leader key to be unchanged, so a
//! deposed leader can write nothing.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::Duration;

use store::records::Machine;
use store::{Store, WatchEvent};
use tracing::{info, warn};

use crate::error::{DeployError, Result};
use crate::placement::{self, UnitInfo};

/// Operations per etcd transaction (etcd allows 128 by default).
const BATCH: usize = 100;

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Who this candidate is, written into the leader key (e.g. `host:pid`).
    pub candidate: String,
    /// The leader key's lease: how long a dead leader blocks the next one.
    pub lease_ttl: Duration,
}

/// A scheduler candidate.
#[derive(Debug)]
pub struct Scheduler {
    store: Store,
    config: SchedulerConfig,
}

/// What the leader knows.
#[derive(Default)]
struct View {
    units: HashMap<String, Result<UnitInfo, String>>,
    machines: BTreeMap<String, BTreeMap<String, String>>,
    schedule: BTreeMap<String, String>,
    unplaced: BTreeMap<String, String>,
}

impl Scheduler {
    pub fn new(store: Store, config: SchedulerConfig) -> Scheduler {
        Scheduler { store, config }
    }

    /// Campaigns, leads while it holds the key, campaigns again if it loses
    /// it; until `shutdown` (then it steps down at once).
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                () = self.campaign_and_lead() => {}
            }
            tokio::select! {
                _ = &mut shutdown => return,
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    async fn campaign_and_lead(&self) {
        let key = match self.store.keys().leader("scheduler") {
            Ok(key) => key,
            Err(error) => {
                warn!(%error, "scheduler: bad leader key");
                return;
            }
        };
        let lease = match self.store.grant_lease(self.config.lease_ttl).await {
            Ok(lease) => lease,
            Err(error) => {
                warn!(%error, "scheduler: cannot get a lease; will retry");
                return;
            }
        };
        // Wait until the key is free, then take it; whoever wins leads.
        let taken = self
            .store
            .acquire(&key, &self.config.candidate, &lease, || async {})
            .await;
        let revision = match taken {
            Ok(revision) => revision,
            Err(error) => {
                warn!(%error, "scheduler: cannot campaign; will retry");
                return;
            }
        };
        info!(candidate = %self.config.candidate, "scheduler: leading");
        tokio::select! {
            () = lease.expired() => warn!("scheduler: lost the leader lease; campaigning again"),
            () = self.lead(&key, revision) => {}
        }
    }

    /// Places units until the watches end (they do not, while etcd lives).
    async fn lead(&self, leader: &store::Key<String>, leader_revision: i64) {
        let keys = self.store.keys().clone();
        let (units, machines, schedules, unplaced) = (
            keys.units(),
            keys.machines(),
            keys.schedules(),
            keys.unplaced_all(),
        );
        let mut unit_watch = self.store.watch(&units);
        let mut machine_watch = self.store.watch(&machines);
        let mut schedule_watch = self.store.watch(&schedules);
        let mut unplaced_watch = self.store.watch(&unplaced);
        let mut view = View::default();
        let mut known = [false; 4];
        loop {
            // Take every event that is already there, then plan once.
            let mut changed = false;
            loop {
                let event_taken = tokio::select! {
                    biased;
                    Some(event) = unit_watch.next_event() => {
                        known[0] |= matches!(event, WatchEvent::Snapshot { .. });
                        on_unit(&mut view, &units, event);
                        true
                    }
                    Some(event) = machine_watch.next_event() => {
                        known[1] |= matches!(event, WatchEvent::Snapshot { .. });
                        apply(&mut view.machines, &machines, event, |m: Machine| m.metadata);
                        true
                    }
                    Some(event) = schedule_watch.next_event() => {
                        known[2] |= matches!(event, WatchEvent::Snapshot { .. });
                        apply(&mut view.schedule, &schedules, event, |m| m);
                        true
                    }
                    Some(event) = unplaced_watch.next_event() => {
                        known[3] |= matches!(event, WatchEvent::Snapshot { .. });
                        apply(&mut view.unplaced, &unplaced, event, |m| m);
                        true
                    }
                    () = tokio::time::sleep(Duration::from_millis(if changed { 5 } else { 3_600_000 })) => false,
                };
                if !event_taken {
                    break;
                }
                changed = true;
            }
            if !known.iter().all(|k| *k) {
                continue;
            }
            if let Err(error) = self.write_plan(&mut view, leader, leader_revision).await {
                if matches!(error, DeployError::Deposed) {
                    warn!("scheduler: the leader key changed under this leader; campaigning again");
                    return;
                }
                warn!(%error, "scheduler: cannot write placements; will retry");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }

    async fn write_plan(
        &self,
        view: &mut View,
        leader: &store::Key<String>,
        leader_revision: i64,
    ) -> Result<()> {
        let units: Vec<UnitInfo> = view
            .units
            .values()
            .filter_map(|unit| unit.as_ref().ok().cloned())
            .collect();
        let mut plan = placement::plan(&units, &view.machines, &view.schedule);
        for (name, unit) in &view.units {
            if let Err(reason) = unit {
                plan.unplaced.insert(name.clone(), reason.clone());
            }
        }
        let keys = self.store.keys();
        let mut ops: Vec<Op> = Vec::new();
        for (unit, machine) in &plan.place {
            ops.push(Op::Put(keys.schedule(unit)?, machine.clone()));
        }
        // A unit placed again is simply overwritten (etcd refuses two
        // operations on one key in a transaction).
        for unit in plan.unplace.iter().filter(|u| !plan.place.contains_key(*u)) {
            ops.push(Op::Delete(keys.schedule(unit)?));
        }
        // `/paz/unplaced/` says exactly what this plan could not place.
        for (unit, reason) in &plan.unplaced {
            if view.unplaced.get(unit) != Some(reason) {
                ops.push(Op::Put(keys.unplaced(unit)?, reason.clone()));
            }
        }
        for unit in view.unplaced.keys() {
            if !plan.unplaced.contains_key(unit) {
                ops.push(Op::Delete(keys.unplaced(unit)?));
            }
        }
        if ops.is_empty() {
            return Ok(());
        }
        if !plan.place.is_empty() || !plan.unplace.is_empty() {
            info!(
                placed = plan.place.len(),
                removed = plan.unplace.len(),
                unplaceable = plan.unplaced.len(),
                "scheduler: writing placements"
            );
        }
        for chunk in ops.chunks(BATCH) {
            let mut txn = self
                .store
                .transaction()
                .require_unchanged(leader, leader_revision);
            for op in chunk {
                txn = match op {
                    Op::Put(key, value) => txn.put(key, value),
                    Op::Delete(key) => txn.delete(key),
                };
            }
            txn.commit().await.map_err(|error| match error.conflict() {
                // The only condition is the leader key's.
                Some(_) => DeployError::Deposed,
                None => error.into(),
            })?;
        }
        // What was written is known now: the next plan must not place these
        // units again before the watch echoes the writes back.
        for unit in plan.unplace {
            view.schedule.remove(&unit);
        }
        view.schedule.extend(plan.place);
        view.unplaced = plan.unplaced;
        Ok(())
    }
}

enum Op {
    Put(store::Key<String>, String),
    Delete(store::Key<String>),
}

fn on_unit(view: &mut View, prefix: &store::Prefix<String>, event: WatchEvent<String>) {
    let info = |name: &str, text: &str| {
        units::parse_unit(name, text)
            .map(|unit| UnitInfo {
                name: name.to_string(),
                placement: unit.placement,
            })
            .map_err(|error| format!("the unit file is invalid: {error}"))
    };
    match event {
        WatchEvent::Snapshot { entries, .. } => {
            view.units = entries
                .iter()
                .map(|entry| {
                    let name = prefix.child_name(&entry.key).to_string();
                    let parsed = info(&name, &entry.value);
                    (name, parsed)
                })
                .collect();
        }
        WatchEvent::Put { key, value, .. } => {
            let name = prefix.child_name(&key).to_string();
            let parsed = info(&name, &value);
            view.units.insert(name, parsed);
        }
        WatchEvent::Delete { key, .. } | WatchEvent::Invalid { key, .. } => {
            view.units.remove(prefix.child_name(&key));
        }
    }
}

fn apply<T, V>(
    map: &mut BTreeMap<String, V>,
    prefix: &store::Prefix<T>,
    event: WatchEvent<T>,
    value: impl Fn(T) -> V,
) {
    match event {
        WatchEvent::Snapshot { entries, .. } => {
            *map = entries
                .into_iter()
                .map(|entry| {
                    (
                        prefix.child_name(&entry.key).to_string(),
                        value(entry.value),
                    )
                })
                .collect();
        }
        WatchEvent::Put { key, value: v, .. } => {
            map.insert(prefix.child_name(&key).to_string(), value(v));
        }
        WatchEvent::Delete { key, .. } | WatchEvent::Invalid { key, .. } => {
            map.remove(prefix.child_name(&key));
        }
    }
}

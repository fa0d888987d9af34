//! The scheduler: one leader at a time (elected through `/paz/leader/scheduler`
//! on a lease) places each unit of `/paz/units/` on a live machine by writing
//! `/paz/schedule/<unit>`, and places a lost machine's units again.
//!
//! The leader keeps etcd's units, machines, placements and unplaced units
//! in memory from four watches; after any change it makes a
//! [`placement::plan`] and writes it in transactions that each require its
//! leader key to be unchanged, so a deposed leader can write nothing. The
//! leader also runs cron (`cron.rs`).

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
    /// it (after a growing pause when campaigning fails); until `shutdown`
    /// (then it steps down at once).
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut pauses = retry_pauses();
        loop {
            let led = tokio::select! {
                _ = &mut shutdown => return,
                led = self.campaign_and_lead() => led,
            };
            if led {
                pauses = retry_pauses();
            }
            let pause = pauses.next().unwrap_or(MAX_PAUSE);
            if tokio::time::timeout(pause, &mut shutdown).await.is_ok() {
                return;
            }
        }
    }

    /// Campaigns and leads; whether it got to lead.
    async fn campaign_and_lead(&self) -> bool {
        let key = match self.store.keys().leader("scheduler") {
            Ok(key) => key,
            Err(error) => {
                warn!(%error, "scheduler: bad leader key");
                return false;
            }
        };
        let lease = match self.store.grant_lease(self.config.lease_ttl).await {
            Ok(lease) => lease,
            Err(error) => {
                warn!(%error, "scheduler: cannot get a lease; will retry");
                return false;
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
                return false;
            }
        };
        info!(candidate = %self.config.candidate, "scheduler: leading");
        tokio::select! {
            () = lease.expired() => warn!("scheduler: lost the leader lease; campaigning again"),
            () = self.lead(&key, revision) => {}
            // The leader runs cron too: a tick is started by one leader.
            () = crate::cron::lead(&self.store, &key, revision) => {
                warn!("scheduler: deposed while running cron; campaigning again");
            }
        }
        true
    }

    /// Places units until the watches end (they do not, while etcd lives).
    async fn lead(&self, leader: &store::Key<String>, leader_revision: i64) {
        let mut watches = Watches::new(&self.store);
        let mut view = View::default();
        loop {
            // Wait for a change, take those right behind it, then plan once.
            if !watches.apply_next(&mut view).await {
                return;
            }
            while let Ok(true) = tokio::time::timeout(COALESCE, watches.apply_next(&mut view)).await
            {
            }
            if !watches.complete() {
                continue;
            }
            // A plan that cannot be written is tried again after a pause
            // (taking changes meanwhile), not only at the next change.
            let mut pauses = retry_pauses();
            loop {
                match self.write_plan(&mut view, leader, leader_revision).await {
                    Ok(()) => break,
                    Err(DeployError::Deposed) => {
                        warn!("scheduler: the leader key changed under this leader; campaigning again");
                        return;
                    }
                    Err(error) => warn!(%error, "scheduler: cannot write placements; will retry"),
                }
                let pause = pauses.next().unwrap_or(MAX_PAUSE);
                let _ = tokio::time::timeout(pause, watches.apply_all(&mut view)).await;
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
        let mut plan = placement::plan(&units, &view.machines, &view.schedule, &view.unplaced);
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

/// The leader's watches of the units, machines, placements and unplaced
/// units, and which of them have sent their snapshot.
struct Watches {
    keys: store::Keys,
    units: store::Watch<String>,
    machines: store::Watch<Machine>,
    schedules: store::Watch<String>,
    unplaced: store::Watch<String>,
    known: [bool; 4],
}

impl Watches {
    fn new(store: &Store) -> Watches {
        let keys = store.keys().clone();
        Watches {
            units: store.watch(&keys.units()),
            machines: store.watch(&keys.machines()),
            schedules: store.watch(&keys.schedules()),
            unplaced: store.watch(&keys.unplaced_all()),
            keys,
            known: [false; 4],
        }
    }

    /// Whether every watch has sent its snapshot: only then is the view whole.
    fn complete(&self) -> bool {
        self.known.iter().all(|known| *known)
    }

    /// Applies the next event of any watch to `view`; `false` once they all ended.
    async fn apply_next(&mut self, view: &mut View) -> bool {
        let keys = &self.keys;
        tokio::select! {
            biased;
            Some(event) = self.units.next_event() => {
                self.known[0] |= is_snapshot(&event);
                on_unit(view, &keys.units(), event);
            }
            Some(event) = self.machines.next_event() => {
                self.known[1] |= is_snapshot(&event);
                apply(&mut view.machines, &keys.machines(), event, |m: Machine| m.metadata);
            }
            Some(event) = self.schedules.next_event() => {
                self.known[2] |= is_snapshot(&event);
                apply(&mut view.schedule, &keys.schedules(), event, |m| m);
            }
            Some(event) = self.unplaced.next_event() => {
                self.known[3] |= is_snapshot(&event);
                apply(&mut view.unplaced, &keys.unplaced_all(), event, |m| m);
            }
            else => return false,
        }
        true
    }

    /// Applies events to `view` as they come, until the watches end.
    async fn apply_all(&mut self, view: &mut View) {
        while self.apply_next(view).await {}
    }
}

fn is_snapshot<T>(event: &WatchEvent<T>) -> bool {
    matches!(event, WatchEvent::Snapshot { .. })
}

/// How long after a change the leader waits for more before it plans.
const COALESCE: Duration = Duration::from_millis(5);

/// The longest pause before campaigning or writing placements again.
const MAX_PAUSE: Duration = Duration::from_secs(8);

/// The pauses between retries after an error: 250 ms, doubling to 8 s.
fn retry_pauses() -> impl Iterator<Item = Duration> {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(MAX_PAUSE)
        .without_max_times()
        .build()
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

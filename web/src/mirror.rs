//! What the fleet page shows (the submitted units, where each is placed,
//! its agent's report, why it cannot be placed, the machines), mirrored in
//! memory by one watch of the store, as the proxy keeps its routing table:
//! a page of thousands of units is read from here, not from five etcd
//! ranges at each render. The mirror says the revision it reflects, so a
//! page follows the changes after it and none is missed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use store::records::{Machine, UnitState};
use store::{Keys, Store, WatchEvent};
use tokio::sync::watch;

/// How long a page waits for the mirror to reach the revision it needs.
const CATCH_UP: Duration = Duration::from_secs(2);

/// The fleet as of one store revision.
#[derive(Debug, Clone, Default)]
pub(crate) struct Fleet {
    /// The store revision this reflects.
    pub(crate) revision: i64,
    pub(crate) units: BTreeSet<String>,
    pub(crate) schedule: BTreeMap<String, String>,
    pub(crate) states: BTreeMap<String, UnitState>,
    pub(crate) unplaced: BTreeMap<String, String>,
    pub(crate) machines: BTreeMap<String, Machine>,
}

impl Fleet {
    /// Applies one change of the key `key` (`None`: deleted).
    fn apply(&mut self, keys: &Keys, key: &str, value: Option<&[u8]>) {
        let text = || value.map(|v| String::from_utf8_lossy(v).into_owned());
        let (units, schedule, states, unplaced, machines) = (
            keys.units(),
            keys.schedules(),
            keys.unit_states(),
            keys.unplaced_all(),
            keys.machines(),
        );
        if units.contains(key) {
            let name = units.child_name(key).to_string();
            match value {
                Some(_) => self.units.insert(name),
                None => self.units.remove(&name),
            };
        } else if schedule.contains(key) {
            set(&mut self.schedule, schedule.child_name(key), text());
        } else if unplaced.contains(key) {
            set(&mut self.unplaced, unplaced.child_name(key), text());
        } else if states.contains(key) {
            let state = value.and_then(|v| serde_json::from_slice(v).ok());
            set(&mut self.states, states.child_name(key), state);
        } else if machines.contains(key) {
            let machine = value.and_then(|v| serde_json::from_slice(v).ok());
            set(&mut self.machines, machines.child_name(key), machine);
        }
    }
}

fn set<T>(map: &mut BTreeMap<String, T>, name: &str, value: Option<T>) {
    match value {
        Some(value) => map.insert(name.to_string(), value),
        None => map.remove(name),
    };
}

/// The mirror, kept by a task of its own.
#[derive(Debug)]
pub(crate) struct Mirror {
    latest: watch::Receiver<Option<Arc<Fleet>>>,
}

impl Mirror {
    /// Starts following `store`: a snapshot of everything under its prefix,
    /// then each change (a compacted history is a new snapshot).
    pub(crate) fn start(store: Store) -> Mirror {
        let (publish, latest) = watch::channel(None);
        tokio::spawn(async move {
            let keys = store.keys().clone();
            let mut changes = store.watch(&keys.everything());
            let mut fleet = Fleet::default();
            while let Some(batch) = changes.next_batch().await {
                for event in batch {
                    fleet.revision = fleet.revision.max(event.revision());
                    match event {
                        WatchEvent::Snapshot { entries, .. } => {
                            fleet = Fleet {
                                revision: fleet.revision,
                                ..Fleet::default()
                            };
                            for entry in entries {
                                fleet.apply(&keys, &entry.key, Some(&entry.value));
                            }
                        }
                        WatchEvent::Put { key, value, .. } => {
                            fleet.apply(&keys, &key, Some(&value))
                        }
                        WatchEvent::Delete { key, .. } | WatchEvent::Invalid { key, .. } => {
                            fleet.apply(&keys, &key, None)
                        }
                    }
                }
                if publish.send(Some(Arc::new(fleet.clone()))).is_err() {
                    return;
                }
            }
        });
        Mirror { latest }
    }

    /// The fleet as of revision `revision` or later, once the mirror has
    /// it (the latest it has after `CATCH_UP`: a page is never held long).
    pub(crate) async fn at_least(&self, revision: i64) -> Option<Arc<Fleet>> {
        let mut latest = self.latest.clone();
        let reached = tokio::time::timeout(CATCH_UP, async {
            latest
                .wait_for(|fleet| fleet.as_ref().is_some_and(|f| f.revision >= revision))
                .await
                .ok()
                .and_then(|fleet| fleet.clone())
        })
        .await;
        match reached {
            Ok(Some(fleet)) => Some(fleet),
            _ => self.latest.borrow().clone(),
        }
    }

    /// The fleet now (once the first snapshot is in).
    pub(crate) async fn now(&self) -> Option<Arc<Fleet>> {
        self.at_least(0).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_land_in_their_maps() {
        let keys = Keys::new("/paz");
        let mut fleet = Fleet::default();
        fleet.apply(&keys, "/paz/units/a-v1-web-1.service", Some(b"[Service]"));
        fleet.apply(&keys, "/paz/schedule/a-v1-web-1.service", Some(b"m1"));
        let state = br#"{"machine":"m1","active":"active","since":1}"#;
        fleet.apply(&keys, "/paz/state/a-v1-web-1.service", Some(state));
        fleet.apply(&keys, "/paz/apps/a", Some(b"{}"));
        assert!(fleet.units.contains("a-v1-web-1.service"));
        assert_eq!(fleet.schedule["a-v1-web-1.service"], "m1");
        assert_eq!(fleet.states["a-v1-web-1.service"].machine, "m1");
        fleet.apply(&keys, "/paz/units/a-v1-web-1.service", None);
        fleet.apply(&keys, "/paz/state/a-v1-web-1.service", None);
        assert!(fleet.units.is_empty() && fleet.states.is_empty());
    }
}

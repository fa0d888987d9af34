//! Keeps the routing table current: watches of `/paz/services/`, `/paz/apps/`,
//! `/paz/config/` and `/paz/endpoints/`, each change rebuilding the table
//! aside and swapping it in; and the certificates, from `/paz/tls/certs/`,
//! the same way. A watch reconnects by itself; until then the last serves.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use store::records::App;
use store::{Store, WatchEvent};
use tracing::info;

use crate::certs::Certs;
use crate::table::Table;

fn apply<T>(map: &mut BTreeMap<String, T>, event: WatchEvent<T>) {
    match event {
        WatchEvent::Snapshot { entries, .. } => {
            *map = entries
                .into_iter()
                .map(|entry| (entry.key, entry.value))
                .collect();
        }
        WatchEvent::Put { key, value, .. } => {
            map.insert(key, value);
        }
        WatchEvent::Delete { key, .. } | WatchEvent::Invalid { key, .. } => {
            map.remove(&key);
        }
    }
}

pub(crate) async fn keep_current(
    store: Store,
    table: Arc<ArcSwap<Table>>,
    certs: Arc<ArcSwap<Certs>>,
    challenges: Arc<ArcSwap<crate::Challenges>>,
    metrics: Arc<crate::metrics::Metrics>,
) {
    let keys = store.keys().clone();
    let services_prefix = keys.services();
    let mut services_watch = store.watch(&services_prefix);
    let mut apps_watch = store.watch(&keys.apps());
    let mut config_watch = store.watch(&keys.config());
    let mut endpoints_watch = store.watch(&keys.endpoints());
    let mut certs_watch = store.watch(&keys.certificates());
    let challenges_prefix = keys.acme_challenges();
    let mut challenges_watch = store.watch(&challenges_prefix);
    let mut pending = BTreeMap::new();
    let mut services = BTreeMap::new();
    let mut apps: BTreeMap<String, App> = BTreeMap::new();
    let mut config = BTreeMap::new();
    let mut endpoints = BTreeMap::new();
    let mut stored = BTreeMap::new();
    let domain_key = keys.domain().to_string();
    loop {
        tokio::select! {
            Some(event) = services_watch.next_event() => apply(&mut services, event),
            Some(event) = apps_watch.next_event() => apply(&mut apps, event),
            Some(event) = config_watch.next_event() => apply(&mut config, event),
            Some(event) = endpoints_watch.next_event() => apply(&mut endpoints, event),
            Some(event) = certs_watch.next_event() => {
                apply(&mut stored, event);
                let next = Certs::build(stored.values());
                if next.len() != certs.load().len() {
                    info!(certificates = next.len(), "certificates updated");
                }
                certs.store(Arc::new(next));
                continue;
            }
            Some(event) = challenges_watch.next_event() => {
                apply(&mut pending, event);
                let by_token = pending
                    .iter()
                    .map(|(key, answer)| (challenges_prefix.child_name(key).to_string(), answer.clone()))
                    .collect();
                challenges.store(Arc::new(by_token));
                continue;
            }
            else => return,
        }
        let endpoints: Vec<(String, String)> = endpoints
            .iter()
            .map(|(key, addr)| (key.clone(), addr.clone()))
            .collect();
        let apps: Vec<App> = apps.values().cloned().collect();
        let services: Vec<(String, String)> = services
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let domain = config.get(&domain_key).map(String::as_str);
        let next = Table::build(domain, &apps, &services, &endpoints, &keys, &table.load());
        if next.size() != table.load().size() {
            info!(
                backends = next.size(),
                hosts = next.hosts.len(),
                "routing table updated"
            );
        }
        metrics.synced(next.size());
        table.store(Arc::new(next));
    }
}

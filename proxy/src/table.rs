//! The routing table: `host -> app -> healthy instances`, built aside from
//! what etcd says and swapped in whole, so readers never wait.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use store::records::{App, HttpsSettings};
use store::AppName;

/// One announced instance of an app.
#[derive(Debug)]
pub struct Backend {
    /// The etcd key that announced it.
    pub key: String,
    /// `ip:port`.
    pub addr: String,
    /// Requests sent to it and not answered yet.
    pub outstanding: AtomicUsize,
}

/// Who serves which host.
#[derive(Debug, Default)]
pub struct Table {
    pub hosts: HashMap<String, AppName>,
    pub instances: HashMap<AppName, Vec<Arc<Backend>>>,
    /// Paz's own endpoints by host (`paz.<domain>`: the API and web UI,
    /// `registry.<domain>`: the registry), from `/paz/endpoints/<label>`.
    pub endpoints: HashMap<String, Vec<Arc<Backend>>>,
    /// Each app's HTTPS settings.
    pub https: HashMap<AppName, HttpsSettings>,
}

impl Table {
    /// Builds a table; backends already in `previous` keep their counters.
    pub fn build(
        domain: Option<&str>,
        apps: &[App],
        services: &[(String, String)],
        endpoints: &[(String, String)],
        keys: &store::Keys,
        previous: &Table,
    ) -> Table {
        let mut table = Table::default();
        // Paz's own names win over an app of the same name: they are only
        // there when the server was started to publish them.
        if let Some(domain) = domain {
            for (key, addr) in endpoints {
                let host = format!("{}.{domain}", keys.endpoint_label(key));
                let backend = previous
                    .endpoints
                    .get(&host)
                    .and_then(|known| known.iter().find(|b| &b.key == key && &b.addr == addr))
                    .cloned()
                    .unwrap_or_else(|| {
                        Arc::new(Backend {
                            key: key.clone(),
                            addr: addr.clone(),
                            outstanding: AtomicUsize::new(0),
                        })
                    });
                table.endpoints.entry(host).or_default().push(backend);
            }
        }
        for app in apps {
            if app.https != HttpsSettings::default() {
                table.https.insert(app.name.clone(), app.https.clone());
            }
            for extra in &app.domains {
                table
                    .hosts
                    .insert(extra.to_ascii_lowercase(), app.name.clone());
            }
        }
        // `<app>.<domain>` always belongs to its app: it wins over any added
        // domain of the same name (another app's `domains:add` cannot take it).
        if let Some(domain) = domain {
            for app in apps {
                table
                    .hosts
                    .insert(format!("{}.{domain}", app.name), app.name.clone());
            }
        }
        let known: HashMap<(&str, &str), &Arc<Backend>> = previous
            .instances
            .values()
            .flatten()
            .map(|backend| ((backend.key.as_str(), backend.addr.as_str()), backend))
            .collect();
        for (key, addr) in services {
            let Some(app) = keys.parse_service(key).map(|service| service.app) else {
                continue;
            };
            let backend = known
                .get(&(key.as_str(), addr.as_str()))
                .map(|existing| Arc::clone(existing))
                .unwrap_or_else(|| {
                    Arc::new(Backend {
                        key: key.clone(),
                        addr: addr.clone(),
                        outstanding: AtomicUsize::new(0),
                    })
                });
            table.instances.entry(app).or_default().push(backend);
        }
        table
    }

    /// The app serving `host` (lowercased, port removed).
    pub fn app_for(&self, host: &str) -> Option<&AppName> {
        self.hosts.get(host)
    }

    /// Picks an instance: the less busy of two chosen at random ("power of two choices").
    pub fn pick(&self, app: &AppName, skip: &[String]) -> Option<Arc<Backend>> {
        let all = self.instances.get(app)?;
        // Without a `Vec`: this runs on every request.
        let usable = |backend: &&Arc<Backend>| !skip.contains(&backend.addr);
        let nth = |i: usize| all.iter().filter(usable).nth(i).expect("counted");
        match all.iter().filter(usable).count() {
            0 => None,
            1 => Some(Arc::clone(nth(0))),
            n => {
                let first = rand::random_range(0..n);
                let mut second = rand::random_range(0..n - 1);
                if second >= first {
                    second += 1;
                }
                let (a, b) = (nth(first), nth(second));
                let chosen = if a.outstanding.load(Ordering::Relaxed)
                    <= b.outstanding.load(Ordering::Relaxed)
                {
                    a
                } else {
                    b
                };
                Some(Arc::clone(chosen))
            }
        }
    }

    /// How many backends the table holds.
    pub fn size(&self) -> usize {
        self.instances.values().map(Vec::len).sum()
    }

    /// `app`'s HTTPS settings.
    pub fn https_of(&self, app: &AppName) -> HttpsSettings {
        self.https.get(app).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_apps_own_name_wins_over_another_apps_added_domain() {
        let app = |name: &str, domains: &[&str]| {
            let mut app = App::new(AppName::new(name).unwrap(), 0);
            app.domains = domains.iter().map(|d| d.to_string()).collect();
            app
        };
        // In either order of the apps.
        for apps in [
            vec![
                app("aaa", &[]),
                app("one", &["aaa.paz.localhost", "www.one.test"]),
            ],
            vec![
                app("one", &["aaa.paz.localhost", "www.one.test"]),
                app("aaa", &[]),
            ],
        ] {
            let table = Table::build(
                Some("paz.localhost"),
                &apps,
                &[],
                &[],
                &store::Keys::new("/paz"),
                &Table::default(),
            );
            assert_eq!(table.app_for("aaa.paz.localhost").unwrap().as_str(), "aaa");
            assert_eq!(table.app_for("www.one.test").unwrap().as_str(), "one");
        }
    }

    fn services(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(key, addr)| (key.to_string(), addr.to_string()))
            .collect()
    }

    #[test]
    fn instances_route_to_their_app_and_keep_their_counters_across_rebuilds() {
        let keys = store::Keys::new("/paz");
        let apps = [App::new(AppName::new("demo").unwrap(), 0)];
        let announced = services(&[
            ("/paz/services/demo/7/1", "10.0.0.7:32768"),
            ("/paz/services/demo/7/2", "10.0.0.8:32768"),
            ("/paz/not-a-service", "10.0.0.9:1"),
        ]);
        let first = Table::build(
            Some("paz.test"),
            &apps,
            &announced,
            &[],
            &keys,
            &Table::default(),
        );
        let demo = AppName::new("demo").unwrap();
        assert_eq!(first.size(), 2, "a key that is no service is left out");
        assert_eq!(first.app_for("demo.paz.test"), Some(&demo));
        first.instances[&demo][0]
            .outstanding
            .store(3, Ordering::Relaxed);
        // One instance withdrawn, one added: the one that stays keeps its count.
        let next = services(&[
            ("/paz/services/demo/7/1", "10.0.0.7:32768"),
            ("/paz/services/demo/8/1", "10.0.0.9:32768"),
        ]);
        let second = Table::build(Some("paz.test"), &apps, &next, &[], &keys, &first);
        let kept = second.instances[&demo]
            .iter()
            .find(|backend| backend.addr == "10.0.0.7:32768")
            .unwrap();
        assert_eq!(kept.outstanding.load(Ordering::Relaxed), 3);
        assert_eq!(second.size(), 2);
    }

    #[test]
    fn a_pick_skips_instances_tried_and_prefers_the_less_busy() {
        let keys = store::Keys::new("/paz");
        let apps = [App::new(AppName::new("demo").unwrap(), 0)];
        let announced = services(&[
            ("/paz/services/demo/7/1", "10.0.0.7:1"),
            ("/paz/services/demo/7/2", "10.0.0.8:1"),
        ]);
        let table = Table::build(None, &apps, &announced, &[], &keys, &Table::default());
        let demo = AppName::new("demo").unwrap();
        assert_eq!(
            table.app_for("demo.paz.test"),
            None,
            "no domain, no own name"
        );
        table.instances[&demo][0]
            .outstanding
            .store(5, Ordering::Relaxed);
        for _ in 0..50 {
            let picked = table.pick(&demo, &[]).unwrap();
            assert_eq!(picked.addr, "10.0.0.8:1", "of two, the less busy");
        }
        let tried = ["10.0.0.8:1".to_string()];
        assert_eq!(table.pick(&demo, &tried).unwrap().addr, "10.0.0.7:1");
        let both = ["10.0.0.7:1".to_string(), "10.0.0.8:1".to_string()];
        assert!(table.pick(&demo, &both).is_none());
        assert!(table.pick(&AppName::new("other").unwrap(), &[]).is_none());
    }
}

//! The etcd key layout of DESIGN.md as typed functions: each returns a [`Key`] or
//! [`Prefix`] that knows the record type stored there.

use std::fmt;
use std::marker::PhantomData;

use crate::names::{check_segment, AppName, NameError};
use crate::records::{
    App, Build, Certificate, ImageEvent, Machine, ProxyRecord, Release, SshKey, Token, UnitState,
};

/// One key and the type of record it holds.
pub struct Key<T> {
    path: String,
    record: PhantomData<fn() -> T>,
}

impl<T> Key<T> {
    fn new(path: String) -> Key<T> {
        Key {
            path,
            record: PhantomData,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.path
    }
}

impl<T> Clone for Key<T> {
    fn clone(&self) -> Self {
        Key::new(self.path.clone())
    }
}

impl<T> fmt::Debug for Key<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)
    }
}

impl<T> fmt::Display for Key<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)
    }
}

/// A directory of keys that all hold the same record type.
///
/// With `direct_children_only`, deeper keys are skipped: `/paz/apps/` holds both
/// apps (`/paz/apps/web`) and their releases (`/paz/apps/web/releases/3`).
pub struct Prefix<T> {
    path: String,
    direct_children_only: bool,
    /// Only the key `path` itself (a watch of one key).
    exact: bool,
    record: PhantomData<fn() -> T>,
}

impl<T> Prefix<T> {
    fn new(path: String, direct_children_only: bool) -> Prefix<T> {
        Prefix {
            path,
            direct_children_only,
            exact: false,
            record: PhantomData,
        }
    }

    /// The one key `key`, as a directory to list or watch.
    pub(crate) fn only(key: &Key<T>) -> Prefix<T> {
        Prefix {
            path: key.as_str().to_string(),
            direct_children_only: false,
            exact: true,
            record: PhantomData,
        }
    }

    /// The prefix itself, ending in `/`.
    pub fn as_str(&self) -> &str {
        &self.path
    }

    /// Whether `key` (a full key under this prefix) belongs to this directory.
    pub fn contains(&self, key: &str) -> bool {
        if self.exact {
            return key == self.path;
        }
        match key.strip_prefix(&self.path) {
            Some(rest) => !(rest.is_empty() || self.direct_children_only && rest.contains('/')),
            None => false,
        }
    }

    /// The part of `key` after the prefix (e.g. the app name under `/paz/apps/`).
    pub fn child_name<'a>(&self, key: &'a str) -> &'a str {
        key.strip_prefix(&self.path).unwrap_or(key)
    }
}

impl<T> Clone for Prefix<T> {
    fn clone(&self) -> Self {
        Prefix {
            path: self.path.clone(),
            direct_children_only: self.direct_children_only,
            exact: self.exact,
            record: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Prefix<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)
    }
}

/// Turns an SSH fingerprint (`SHA256:<base64>`) into a key segment: base64 may hold
/// `/` and `+`, so the segment uses the URL-safe alphabet. The record keeps the
/// fingerprint exactly as `ssh-keygen -lf` prints it.
pub fn fingerprint_segment(fingerprint: &str) -> String {
    fingerprint.replace('/', "_").replace('+', "-")
}

/// A TLS domain as a key segment: a domain, or `*.` and a domain.
fn tls_segment(domain: &str) -> Result<String, NameError> {
    let base = domain.strip_prefix("*.").unwrap_or(domain);
    crate::names::check_domain(base)?;
    let segment = match domain.strip_prefix("*.") {
        Some(base) => format!("_.{base}"),
        None => domain.to_string(),
    };
    check_segment("domain", &segment)?;
    Ok(segment)
}

/// The key layout under one prefix (default `/paz`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    root: String,
}

/// What a services key names: one instance of a release of an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceKey {
    pub app: AppName,
    pub release: u64,
    pub instance: String,
}

impl Keys {
    /// `root` is the cluster prefix, e.g. `/paz`; a trailing `/` is ignored.
    pub fn new(root: &str) -> Keys {
        Keys {
            root: root.trim_end_matches('/').to_string(),
        }
    }

    pub fn root(&self) -> &str {
        &self.root
    }

    /// Everything Paz stores.
    pub fn everything(&self) -> Prefix<Vec<u8>> {
        Prefix::new(format!("{}/", self.root), false)
    }

    /// The cluster settings (`/paz/config/...`).
    pub fn config(&self) -> Prefix<String> {
        Prefix::new(format!("{}/config/", self.root), true)
    }

    pub fn domain(&self) -> Key<String> {
        Key::new(format!("{}/config/domain", self.root))
    }

    /// `fingerprint` as `ssh-keygen -lf` prints it.
    pub fn ssh_key(&self, fingerprint: &str) -> Result<Key<SshKey>, NameError> {
        let segment = fingerprint_segment(fingerprint);
        check_segment("key fingerprint", &segment)?;
        Ok(Key::new(format!("{}/keys/{segment}", self.root)))
    }

    pub fn ssh_keys(&self) -> Prefix<SshKey> {
        Prefix::new(format!("{}/keys/", self.root), true)
    }

    pub fn token(&self, id: &str) -> Result<Key<Token>, NameError> {
        check_segment("token id", id)?;
        Ok(Key::new(format!("{}/tokens/{id}", self.root)))
    }

    pub fn tokens(&self) -> Prefix<Token> {
        Prefix::new(format!("{}/tokens/", self.root), true)
    }

    /// `/paz/hooks/seen/<hex>`: a signed webhook already taken (on a lease
    /// that outlives the signature's time window), so a replay is refused.
    pub fn hook_seen(&self, digest: &str) -> Result<Key<String>, NameError> {
        check_segment("webhook digest", digest)?;
        Ok(Key::new(format!("{}/hooks/seen/{digest}", self.root)))
    }

    pub fn app(&self, app: &AppName) -> Key<App> {
        Key::new(format!("{}/apps/{app}", self.root))
    }

    pub fn apps(&self) -> Prefix<App> {
        Prefix::new(format!("{}/apps/", self.root), true)
    }

    /// Everything stored below an app's own key (releases, `current`).
    pub fn app_children(&self, app: &AppName) -> Prefix<Vec<u8>> {
        Prefix::new(format!("{}/apps/{app}/", self.root), false)
    }

    pub fn release(&self, app: &AppName, n: u64) -> Key<Release> {
        Key::new(format!("{}/apps/{app}/releases/{n}", self.root))
    }

    pub fn releases(&self, app: &AppName) -> Prefix<Release> {
        Prefix::new(format!("{}/apps/{app}/releases/", self.root), true)
    }

    /// A rollout started over the API (`<unix ms>-<random>`, so they sort by time).
    pub fn rollout(&self, app: &AppName, id: &str) -> Result<Key<crate::Rollout>, NameError> {
        check_segment("rollout id", id)?;
        Ok(Key::new(format!("{}/apps/{app}/rollouts/{id}", self.root)))
    }

    /// Present (on a lease its server keeps alive) while the rollout `id`
    /// runs: a running record without it was left by a server that stopped.
    pub fn rollout_alive(&self, app: &AppName, id: &str) -> Result<Key<String>, NameError> {
        check_segment("rollout id", id)?;
        Ok(Key::new(format!(
            "{}/apps/{app}/rollouts/{id}/alive",
            self.root
        )))
    }

    pub fn rollouts(&self, app: &AppName) -> Prefix<crate::Rollout> {
        Prefix::new(format!("{}/apps/{app}/rollouts/", self.root), true)
    }

    /// What was done with the cron job `id` of `app`.
    pub fn cron_state(
        &self,
        app: &AppName,
        id: &str,
    ) -> Result<Key<crate::records::CronState>, NameError> {
        check_segment("cron job id", id)?;
        Ok(Key::new(format!("{}/apps/{app}/cron/{id}", self.root)))
    }

    /// The records of `app`'s cron jobs.
    pub fn cron_states(&self, app: &AppName) -> Prefix<crate::records::CronState> {
        Prefix::new(format!("{}/apps/{app}/cron/", self.root), true)
    }

    /// The number of the release that serves.
    pub fn current(&self, app: &AppName) -> Key<u64> {
        Key::new(format!("{}/apps/{app}/current", self.root))
    }

    pub fn build(&self, app: &AppName, id: &str) -> Result<Key<Build>, NameError> {
        check_segment("build id", id)?;
        Ok(Key::new(format!("{}/builds/{app}/{id}", self.root)))
    }

    /// Present (on a lease its builder keeps alive) while the build `id`
    /// runs: a running build without it was left by a server that stopped.
    pub fn build_alive(&self, app: &AppName, id: &str) -> Result<Key<String>, NameError> {
        check_segment("build id", id)?;
        Ok(Key::new(format!("{}/builds/{app}/{id}/alive", self.root)))
    }

    /// Every build record of an app, whatever it holds.
    pub fn builds_all(&self, app: &AppName) -> Prefix<Vec<u8>> {
        Prefix::new(format!("{}/builds/{app}/", self.root), false)
    }

    pub fn builds(&self, app: &AppName) -> Prefix<Build> {
        Prefix::new(format!("{}/builds/{app}/", self.root), true)
    }

    pub fn machine(&self, machine_id: &str) -> Result<Key<Machine>, NameError> {
        check_segment("machine id", machine_id)?;
        Ok(Key::new(format!("{}/machines/{machine_id}", self.root)))
    }

    pub fn machines(&self) -> Prefix<Machine> {
        Prefix::new(format!("{}/machines/", self.root), true)
    }

    /// The secret every agent endpoint asks of its callers (made once, by
    /// the first agent, with a create-if-absent transaction).
    pub fn agent_secret(&self) -> Key<String> {
        Key::new(format!("{}/config/agent-secret", self.root))
    }

    /// A live proxy that serves metrics.
    pub fn proxy(&self, id: &str) -> Result<Key<ProxyRecord>, NameError> {
        check_segment("proxy id", id)?;
        Ok(Key::new(format!("{}/proxies/{id}", self.root)))
    }

    pub fn proxies(&self) -> Prefix<ProxyRecord> {
        Prefix::new(format!("{}/proxies/", self.root), true)
    }

    /// `/paz/endpoints/<label>/<server>`: `ip:port` of one server's own
    /// endpoint (`paz`: the API and web UI, `registry`), which the proxies
    /// route `<label>.<domain>` to, on the lease of the server that serves it.
    pub fn endpoint(&self, label: &str, server: &str) -> Result<Key<String>, NameError> {
        check_segment("endpoint label", label)?;
        check_segment("server id", server)?;
        Ok(Key::new(format!(
            "{}/endpoints/{label}/{server}",
            self.root
        )))
    }

    /// Every published endpoint; [`Keys::endpoint_label`] reads a key's label.
    pub fn endpoints(&self) -> Prefix<String> {
        Prefix::new(format!("{}/endpoints/", self.root), false)
    }

    /// The label of an endpoint's key (or of its name below [`Keys::endpoints`]).
    pub fn endpoint_label<'a>(&self, key: &'a str) -> &'a str {
        let name = key.strip_prefix(self.endpoints().as_str()).unwrap_or(key);
        name.split('/').next().unwrap_or(name)
    }

    /// `/paz/tls/certs/<domain>`: a certificate and its key (`*.` of a
    /// wildcard is written `_.`, a label no domain has).
    pub fn certificate(&self, domain: &str) -> Result<Key<Certificate>, NameError> {
        let segment = tls_segment(domain)?;
        Ok(Key::new(format!("{}/tls/certs/{segment}", self.root)))
    }

    pub fn certificates(&self) -> Prefix<Certificate> {
        Prefix::new(format!("{}/tls/certs/", self.root), true)
    }

    /// `/paz/tls/locks/<domain>`: held (on its lease) by the edge host that
    /// orders or renews the domain's certificate.
    pub fn certificate_lock(&self, domain: &str) -> Result<Key<String>, NameError> {
        let segment = tls_segment(domain)?;
        Ok(Key::new(format!("{}/tls/locks/{segment}", self.root)))
    }

    /// `/paz/tls/acme/account/<hash>`: the ACME account's credentials (JSON,
    /// with its private key) for the directory whose URL's SHA-256 begins
    /// with `hash`.
    pub fn acme_account(&self, directory: &str) -> Key<String> {
        use sha2::Digest;
        let digest = hex::encode(sha2::Sha256::digest(directory.as_bytes()));
        Key::new(format!("{}/tls/acme/account/{}", self.root, &digest[..16]))
    }

    /// `/paz/tls/acme/http01/<token>`: the key authorization of a pending
    /// HTTP-01 challenge (on the orderer's lease), answered by every edge host.
    pub fn acme_challenge(&self, token: &str) -> Result<Key<String>, NameError> {
        // RFC 8555 §8.3: base64url characters only.
        if token.is_empty()
            || token.len() > 128
            || !token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(NameError::Segment {
                what: "ACME challenge token",
                name: token.chars().take(64).collect(),
                reason: "it is not base64url text of at most 128 characters",
            });
        }
        Ok(Key::new(format!("{}/tls/acme/http01/{token}", self.root)))
    }

    pub fn acme_challenges(&self) -> Prefix<String> {
        Prefix::new(format!("{}/tls/acme/http01/", self.root), true)
    }

    /// The unit file text: this unit should run.
    pub fn unit(&self, unit_name: &str) -> Result<Key<String>, NameError> {
        check_segment("unit name", unit_name)?;
        Ok(Key::new(format!("{}/units/{unit_name}", self.root)))
    }

    pub fn units(&self) -> Prefix<String> {
        Prefix::new(format!("{}/units/", self.root), true)
    }

    /// The machine id the scheduler placed a unit on.
    pub fn schedule(&self, unit_name: &str) -> Result<Key<String>, NameError> {
        check_segment("unit name", unit_name)?;
        Ok(Key::new(format!("{}/schedule/{unit_name}", self.root)))
    }

    pub fn schedules(&self) -> Prefix<String> {
        Prefix::new(format!("{}/schedule/", self.root), true)
    }

    /// Why the scheduler cannot place a unit (written by the leader, removed once placed).
    pub fn unplaced(&self, unit_name: &str) -> Result<Key<String>, NameError> {
        check_segment("unit name", unit_name)?;
        Ok(Key::new(format!("{}/unplaced/{unit_name}", self.root)))
    }

    pub fn unplaced_all(&self) -> Prefix<String> {
        Prefix::new(format!("{}/unplaced/", self.root), true)
    }

    pub fn unit_state(&self, unit_name: &str) -> Result<Key<UnitState>, NameError> {
        check_segment("unit name", unit_name)?;
        Ok(Key::new(format!("{}/state/{unit_name}", self.root)))
    }

    pub fn unit_states(&self) -> Prefix<UnitState> {
        Prefix::new(format!("{}/state/", self.root), true)
    }

    /// `ip:port` of one healthy instance, announced by its sidekick (2015 Paz format).
    pub fn service(
        &self,
        app: &AppName,
        release: u64,
        instance: &str,
    ) -> Result<Key<String>, NameError> {
        check_segment("instance", instance)?;
        Ok(Key::new(format!(
            "{}/services/{app}/{release}/{instance}",
            self.root
        )))
    }

    /// Every announced instance of an app, all releases.
    pub fn services_of(&self, app: &AppName) -> Prefix<String> {
        Prefix::new(format!("{}/services/{app}/", self.root), false)
    }

    /// Every announced instance of every app (what the proxy watches).
    pub fn services(&self) -> Prefix<String> {
        Prefix::new(format!("{}/services/", self.root), false)
    }

    /// What a services key (`<root>/services/<app>/<release>/<instance>`)
    /// names; `None` if `key` is not one.
    pub fn parse_service(&self, key: &str) -> Option<ServiceKey> {
        let rest = self.services().child_name(key);
        if rest.len() == key.len() {
            return None;
        }
        let mut parts = rest.split('/');
        let (app, release, instance) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || check_segment("instance", instance).is_err() {
            return None;
        }
        Some(ServiceKey {
            app: AppName::new(app).ok()?,
            release: release.parse().ok()?,
            instance: instance.to_string(),
        })
    }

    /// One image event; `id` sorts by time (zero-padded nanoseconds, then a suffix).
    pub fn image_event(&self, id: &str) -> Result<Key<ImageEvent>, NameError> {
        check_segment("event id", id)?;
        Ok(Key::new(format!("{}/images/events/{id}", self.root)))
    }

    pub fn image_events(&self) -> Prefix<ImageEvent> {
        Prefix::new(format!("{}/images/events/", self.root), true)
    }

    /// Taken (create-if-absent) by the server that deploys an image event, so
    /// that exactly one does.
    pub fn image_claim(&self, id: &str) -> Result<Key<String>, NameError> {
        check_segment("event id", id)?;
        Ok(Key::new(format!("{}/images/claims/{id}", self.root)))
    }

    /// Every claim on an image event.
    pub fn image_claims(&self) -> Prefix<String> {
        Prefix::new(format!("{}/images/claims/", self.root), false)
    }

    /// Every election key.
    pub fn leaders(&self) -> Prefix<String> {
        Prefix::new(format!("{}/leader/", self.root), true)
    }

    /// The election key of a leader-elected role (e.g. `scheduler`).
    pub fn leader(&self, role: &str) -> Result<Key<String>, NameError> {
        check_segment("role", role)?;
        Ok(Key::new(format!("{}/leader/{role}", self.root)))
    }
}

impl Default for Keys {
    fn default() -> Self {
        Keys::new("/paz")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    #[test]
    fn layout_matches_design() {
        let keys = Keys::default();
        let app = AppName::new("myapp").unwrap();
        let layout = [
            keys.domain().to_string(),
            keys.ssh_key("SHA256:ab/c+d").unwrap().to_string(),
            keys.token("t1").unwrap().to_string(),
            keys.app(&app).to_string(),
            keys.release(&app, 7).to_string(),
            keys.current(&app).to_string(),
            keys.build(&app, "b1").unwrap().to_string(),
            keys.machine("m1").unwrap().to_string(),
            keys.agent_secret().to_string(),
            keys.proxy("p1").unwrap().to_string(),
            keys.unit("myapp-v7-web-1.service").unwrap().to_string(),
            keys.schedule("myapp-v7-web-1.service").unwrap().to_string(),
            keys.unit_state("myapp-v7-web-1.service")
                .unwrap()
                .to_string(),
            keys.service(&app, 7, "1").unwrap().to_string(),
            keys.leader("scheduler").unwrap().to_string(),
        ];
        expect![[r#"
            /paz/config/domain
            /paz/keys/SHA256:ab_c-d
            /paz/tokens/t1
            /paz/apps/myapp
            /paz/apps/myapp/releases/7
            /paz/apps/myapp/current
            /paz/builds/myapp/b1
            /paz/machines/m1
            /paz/config/agent-secret
            /paz/proxies/p1
            /paz/units/myapp-v7-web-1.service
            /paz/schedule/myapp-v7-web-1.service
            /paz/state/myapp-v7-web-1.service
            /paz/services/myapp/7/1
            /paz/leader/scheduler"#]]
        .assert_eq(&layout.join("\n"));
    }

    #[test]
    fn apps_prefix_skips_releases() {
        let keys = Keys::new("/paz/");
        let apps = keys.apps();
        assert!(apps.contains("/paz/apps/web"));
        assert!(!apps.contains("/paz/apps/web/releases/1"));
        assert!(!apps.contains("/paz/apps/"));
        assert!(!apps.contains("/paz/other/web"));
        assert_eq!(apps.child_name("/paz/apps/web"), "web");
        assert!(keys.services().contains("/paz/services/web/3/1"));
    }

    #[test]
    fn segments_with_key_syntax_are_refused() {
        let keys = Keys::default();
        assert!(keys.machine("../apps").is_err());
        assert!(keys.unit("a/b.service").is_err());
        assert!(keys.token("").is_err());
        assert!(keys.service(&AppName::new("a").unwrap(), 1, "x/y").is_err());
    }

    #[test]
    fn a_services_key_parses_back_into_what_it_names() {
        let keys = Keys::new("/paz");
        let app = AppName::new("demo").unwrap();
        let key = keys.service(&app, 7, "2").unwrap();
        assert_eq!(
            keys.parse_service(key.as_str()),
            Some(ServiceKey {
                app,
                release: 7,
                instance: "2".into()
            })
        );
        for other in [
            "/paz/services/demo/7",
            "/paz/services/demo/x/2",
            "/paz/services/Demo/7/2",
            "/paz/services/demo/7/2/extra",
            "/other/services/demo/7/2",
        ] {
            assert_eq!(keys.parse_service(other), None, "{other}");
        }
    }
}

//! Image events become deploys: a new tag of a repository an app follows
//! (`deploy:follow APP REPO [TAG-GLOB]`), or a `/hooks/deploy` event naming
//! an app, makes a release of that image with the app's env and rolls it out.
//! Each event is claimed in etcd (create-if-absent) so that one server, and
//! only one, deploys it. While it deploys, the claim lives on a lease: if
//! that server dies (or stops, or loses etcd), the claim goes, and the next
//! look for unclaimed events (at start and every few seconds, on every
//! server, newest first) deploys the event, rolling out the release an
//! earlier attempt made if there is one. An event never takes an app back:
//! one created in etcd before the app's newest release (or before the app)
//! is passed by.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use globset::Glob;
use store::records::{
    App, ImageEvent, ImageSource, NewRelease, Release, ReleaseCause, ReleaseStatus,
};
use store::{AppName, Store, WatchEvent};
use tracing::{info, warn};

use crate::Deployer;

/// How often each server looks for events nobody claimed: those whose
/// server died before deploying them, or that came while no server ran.
const RESCAN: Duration = Duration::from_secs(5);
/// How long a claim outlives a server that died while deploying its event.
const CLAIM_TTL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct FollowConfig {
    /// Written into claims: who deployed an event.
    pub candidate: String,
    /// How agents reach Paz's registry (`host:port`), to name its images.
    pub registry_host: Option<String>,
    /// Tokens whose pushes are not followed, by the start of their name:
    /// the builders' (`paz-builder-`, of every server), whose images the
    /// push that built them deploys.
    pub ignore_by: Vec<String>,
}

#[derive(Debug)]
pub struct ImageFollower {
    store: Store,
    deployer: Deployer,
    config: FollowConfig,
    /// Events being handled on this server.
    in_flight: Arc<Mutex<HashSet<String>>>,
    /// One lock per app: an event is planned and rolled out for an app
    /// under it, so two events for one app are planned one after the other
    /// and the older finds the newer's release.
    app_locks: Arc<support::KeyedLocks<AppName>>,
}

/// Whether `app` follows the event's repository and tag.
pub fn follows(app: &App, event: &ImageEvent) -> bool {
    if event.app.is_some() {
        return event.app.as_ref() == Some(&app.name);
    }
    if app.deploy.image_repo.as_deref() != Some(event.repository.as_str()) {
        return false;
    }
    match (&app.deploy.tag_pattern, &event.tag) {
        (None, _) => true,
        (Some(pattern), Some(tag)) => Glob::new(pattern)
            .map(|glob| glob.compile_matcher().is_match(tag))
            .unwrap_or(false),
        (Some(_), None) => false,
    }
}

/// Whether `token` may deploy `app`, with an image of app `owner`'s
/// repository in Paz's registry (if it is one).
pub fn may_deploy(
    token: Option<&store::records::Token>,
    app: &AppName,
    owner: Option<&AppName>,
) -> bool {
    use store::records::Role;
    match token {
        Some(token) if token.role == Role::Admin => true,
        Some(token) if token.role == Role::Deployer => {
            token.apps.contains(app) && owner.is_none_or(|owner| token.apps.contains(owner))
        }
        _ => false,
    }
}

/// The reference agents pull: by digest when known.
pub fn image_of(event: &ImageEvent, registry_host: Option<&str>) -> Option<String> {
    let repository = match (event.source, registry_host) {
        (ImageSource::Push, Some(host)) => format!("{host}/{}", event.repository),
        _ => event.repository.clone(),
    };
    match (&event.digest, &event.tag) {
        (Some(digest), _) => Some(format!("{repository}@{digest}")),
        (None, Some(tag)) => Some(format!("{repository}:{tag}")),
        (None, None) => None,
    }
}

/// What to do with an event for one app that follows it.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Make a release of the image and roll it out.
    Deploy,
    /// Roll out release `n`, which an earlier attempt made for this event
    /// before its server died.
    Resume(u64),
    /// Nothing: an earlier attempt dealt with it, or the app has a newer
    /// release (or is newer itself) than the event, which must not take it back.
    Skip,
}

/// The plan for an event (created at store revision `revision`, naming
/// `image`) and an app created at `app_revision`, given the app's releases.
pub fn plan(
    event: &ImageEvent,
    revision: i64,
    image: &str,
    app_revision: i64,
    releases: &[store::Entry<Release>],
) -> Plan {
    if app_revision > revision {
        return Plan::Skip;
    }
    let own = releases.iter().find(|entry| {
        entry.create_revision > revision
            && entry.value.cause == ReleaseCause::Image
            && (entry.value.image == image || entry.value.source.as_deref() == Some(image))
            && entry.value.created_at == event.at
            && entry.value.by == event.by
    });
    let newer = releases.iter().any(|entry| {
        entry.create_revision > revision && own.is_none_or(|own| own.key != entry.key)
    });
    match own {
        _ if newer => Plan::Skip,
        Some(own)
            if matches!(
                own.value.status,
                ReleaseStatus::Pending | ReleaseStatus::Deploying
            ) =>
        {
            Plan::Resume(own.value.n)
        }
        Some(_) => Plan::Skip,
        None => Plan::Deploy,
    }
}

impl ImageFollower {
    pub fn new(store: Store, deployer: Deployer, config: FollowConfig) -> ImageFollower {
        ImageFollower {
            store,
            deployer,
            config,
            in_flight: Arc::default(),
            app_locks: Arc::default(),
        }
    }

    /// Follows new events until `shutdown`; looks for unclaimed ones at
    /// start and every [`RESCAN`].
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let prefix = self.store.keys().image_events();
        let mut watch = self.store.watch(&prefix);
        let mut rescan = tokio::time::interval(RESCAN);
        rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut rescanning: Option<tokio::task::JoinHandle<()>> = None;
        tokio::pin!(shutdown);
        loop {
            let event = tokio::select! {
                _ = &mut shutdown => return,
                _ = rescan.tick() => {
                    if rescanning.as_ref().is_none_or(|task| task.is_finished()) {
                        let follower = self.clone_parts();
                        rescanning = Some(tokio::spawn(async move { follower.rescan().await }));
                    }
                    continue;
                }
                event = watch.next_event() => event,
            };
            match event {
                // Events already there are the rescan's.
                Some(WatchEvent::Snapshot { .. }) => {}
                Some(WatchEvent::Put {
                    key,
                    value,
                    revision,
                }) => {
                    let id = prefix.child_name(&key).to_string();
                    if let Some(guard) = self.start(&id) {
                        let follower = self.clone_parts();
                        tokio::spawn(async move {
                            follower.handle(&id, value, revision).await;
                            drop(guard);
                        });
                    }
                }
                Some(_) => {}
                None => return,
            }
        }
    }

    fn clone_parts(&self) -> ImageFollower {
        ImageFollower {
            store: self.store.clone(),
            deployer: self.deployer.clone(),
            config: self.config.clone(),
            in_flight: self.in_flight.clone(),
            app_locks: self.app_locks.clone(),
        }
    }

    /// Marks event `id` as being handled here; `None` if it already is.
    fn start(&self, id: &str) -> Option<InFlight> {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        in_flight.insert(id.to_string()).then(|| InFlight {
            set: self.in_flight.clone(),
            id: id.to_string(),
        })
    }

    /// Handles the events that have no claim, newest first and one at a
    /// time, so that an older one finds the newer one's release and is
    /// passed by.
    async fn rescan(&self) {
        let keys = self.store.keys();
        let (event_prefix, claim_prefix) = (keys.image_events(), keys.image_claims());
        let (events, claims) = match tokio::try_join!(
            self.store.list(&event_prefix),
            self.store.list(&claim_prefix)
        ) {
            Ok(listed) => listed,
            Err(error) => {
                warn!(%error, "cannot look for unclaimed image events; trying again later");
                return;
            }
        };
        let claimed: HashSet<&str> = claims
            .entries
            .iter()
            .map(|entry| claim_prefix.child_name(&entry.key))
            .collect();
        let mut unclaimed: Vec<_> = events
            .entries
            .into_iter()
            .filter(|entry| !claimed.contains(event_prefix.child_name(&entry.key)))
            .collect();
        unclaimed.sort_by_key(|entry| std::cmp::Reverse(entry.create_revision));
        for entry in unclaimed {
            let id = event_prefix.child_name(&entry.key).to_string();
            if let Some(_guard) = self.start(&id) {
                self.handle(&id, entry.value, entry.create_revision).await;
            }
        }
    }

    /// The plan for `event` and `app` (created at `app_revision`), from the
    /// app's releases now.
    async fn plan_for(
        &self,
        app: &App,
        app_revision: i64,
        event: &ImageEvent,
        revision: i64,
        image: &str,
    ) -> Result<Plan, store::StoreError> {
        let releases = self
            .store
            .list(&self.store.keys().releases(&app.name))
            .await?;
        Ok(plan(
            event,
            revision,
            image,
            app_revision,
            &releases.entries,
        ))
    }

    /// Claims an event that deploys nothing, so that rescans pass it by.
    async fn settle(&self, claim: &store::Key<String>, why: &str) {
        let _ = self
            .store
            .transaction()
            .create(claim, &format!("{}: {why}", self.config.candidate))
            .commit()
            .await;
    }

    /// Deploys event `id` (created at store revision `revision`) to the
    /// apps that follow it, unless another server has claimed it.
    async fn handle(&self, id: &str, event: ImageEvent, revision: i64) {
        let Ok(claim) = self.store.keys().image_claim(id) else {
            return;
        };
        match self.store.get(&claim).await {
            Ok(None) => {}
            Ok(Some(_)) => return,
            Err(error) => {
                warn!(%error, "cannot read an image event's claim; trying again later");
                return;
            }
        }
        let image = match self.image_to_deploy(&event) {
            Ok(image) => image,
            Err(why) => return self.settle(&claim, why).await,
        };
        let targets = match self.targets(&event, revision, &image).await {
            Targets::Deploy(targets) => targets,
            Targets::Settle(why) => return self.settle(&claim, why).await,
            Targets::Later => return,
        };
        // One server deploys it. The claim lives on a lease until the deploy
        // has ended, so that it goes if this server dies before then.
        let lease = match self.store.grant_lease(CLAIM_TTL).await {
            Ok(lease) => lease,
            Err(error) => {
                warn!(%error, "cannot claim an image event; trying again later");
                return;
            }
        };
        let Ok(claimed_at) = self
            .store
            .transaction()
            .require_absent(&claim)
            .put_on_lease(&claim, &self.config.candidate, &lease)
            .commit()
            .await
        else {
            return;
        };
        for (app, app_revision) in targets {
            self.deploy_to(&app, app_revision, &event, revision, &image)
                .await;
        }
        // Deployed or failed, the event has been dealt with: the claim stays
        // (unless the event was trimmed meanwhile). Were this lost, the next
        // look would find the event's release and pass it by.
        if let Err(error) = self
            .store
            .transaction()
            .update(&claim, claimed_at, &self.config.candidate)
            .commit()
            .await
        {
            warn!(%error, "cannot keep the claim of a deployed image event");
        }
        let _ = lease.revoke().await;
    }

    /// The image an event names, or why it deploys nothing.
    fn image_to_deploy(&self, event: &ImageEvent) -> Result<String, &'static str> {
        if self
            .config
            .ignore_by
            .iter()
            .any(|prefix| event.by.starts_with(prefix.as_str()))
        {
            return Err("a build's push, deployed by that push");
        }
        let Some(image) = image_of(event, self.config.registry_host.as_deref()) else {
            warn!(repository = %event.repository, "an image event without tag or digest; not deployed");
            return Err("no tag or digest");
        };
        // Whatever its source let through, it must not reach a unit file.
        if let Err(error) = units::check_image(&image) {
            warn!(%error, "an image event naming no valid image; not deployed");
            return Err("not an image reference");
        }
        Ok(image)
    }

    /// The apps (and their create revisions) that follow the event and that
    /// its token may deploy, not yet past it.
    async fn targets(&self, event: &ImageEvent, revision: i64, image: &str) -> Targets {
        let apps = match self.store.list(&self.store.keys().apps()).await {
            Ok(apps) => apps,
            Err(error) => {
                warn!(%error, "cannot read the apps for an image event");
                return Targets::Later;
            }
        };
        // The event's token must be allowed to deploy each app, and to use
        // the image when it is another app's in Paz's registry.
        let token = match self.store.keys().token(&event.by) {
            Ok(key) => match self.store.get(&key).await {
                Ok(token) => token.map(|token| token.value),
                Err(error) => {
                    warn!(%error, "cannot read the token of an image event; trying again later");
                    return Targets::Later;
                }
            },
            Err(_) => None,
        };
        let owner = self.deployer.image_owner(image);
        let (mut targets, mut passed_by, mut refused) = (Vec::new(), false, false);
        for entry in apps.entries {
            let app = entry.value;
            if !follows(&app, event) {
                continue;
            }
            if !may_deploy(token.as_ref(), &app.name, owner.as_ref()) {
                warn!(app = %app.name, by = %event.by, image = %image, "an image event whose token may not deploy this app, or use this image; not deployed");
                refused = true;
                continue;
            }
            match self
                .plan_for(&app, entry.create_revision, event, revision, image)
                .await
            {
                Ok(Plan::Skip) => {
                    info!(app = %app.name, %image, "an image event older than the app's newest release, or already deployed; not deployed");
                    passed_by = true;
                }
                Ok(_) => targets.push((app, entry.create_revision)),
                Err(error) => {
                    warn!(app = %app.name, %error, "cannot read the releases for an image event");
                    return Targets::Later;
                }
            }
        }
        match (targets.is_empty(), refused, passed_by) {
            (false, _, _) => Targets::Deploy(targets),
            (true, true, _) => Targets::Settle("its token may not deploy the apps that follow it"),
            (true, false, true) => {
                Targets::Settle("older than the newest release of each app that follows it")
            }
            (true, false, false) => Targets::Settle("no app follows it"),
        }
    }

    /// Deploys the event's image to one app, planned again under the app's
    /// lock: another event's rollout may have made a newer release meanwhile.
    async fn deploy_to(
        &self,
        app: &App,
        app_revision: i64,
        event: &ImageEvent,
        revision: i64,
        image: &str,
    ) {
        let _planning = self.app_locks.lock(&app.name).await;
        let n = match self
            .plan_for(app, app_revision, event, revision, image)
            .await
        {
            Ok(Plan::Skip) => return,
            Ok(Plan::Resume(n)) => n,
            Ok(Plan::Deploy) => match self.record_release(app, event, image).await {
                Some(n) => n,
                None => return,
            },
            Err(error) => {
                warn!(app = %app.name, %error, "cannot read the releases for an image event");
                return;
            }
        };
        let (steps, mut said) = tokio::sync::mpsc::channel::<store::Step>(64);
        let name = app.name.clone();
        let log = tokio::spawn(async move {
            while let Some(step) = said.recv().await {
                info!(app = %name, "{}", step.to_string().trim());
            }
        });
        info!(app = %app.name, %image, n, "deploying a followed image");
        let recorded = self
            .deployer
            .roll_out_recorded(&app.name, n, ("follow", &event.by), steps)
            .await;
        if let Err(reason) = recorded {
            warn!(app = %app.name, %reason, "the followed image's deploy failed");
        }
        let _ = log.await;
    }

    /// Records the release of a followed image, pinned now: a tag moved
    /// later must not change it. `None` (logged) when that fails.
    async fn record_release(&self, app: &App, event: &ImageEvent, image: &str) -> Option<u64> {
        let resolved = match self.deployer.resolve_image(image).await {
            Ok(resolved) => resolved,
            Err(error) => {
                warn!(app = %app.name, %image, %error, "cannot resolve a followed image; not deployed");
                return None;
            }
        };
        let release = NewRelease {
            image: resolved,
            git_sha: None,
            env: app.env.clone(),
            created_at: event.at,
            by: event.by.clone(),
            cause: ReleaseCause::Image,
            processes: Default::default(),
            release_command: None,
            resources: app.resources.clone(),
            cron: Vec::new(),
        };
        match self.store.create_release(&app.name, release).await {
            Ok(n) => Some(n),
            Err(error) => {
                warn!(app = %app.name, %error, "cannot record a release for an image event");
                None
            }
        }
    }
}

/// Where an image event goes.
enum Targets {
    /// To these apps (with their create revisions).
    Deploy(Vec<(App, i64)>),
    /// Nowhere, for this reason: claimed so that rescans pass it by.
    Settle(&'static str),
    /// Not known now (the store did not answer): looked at again later.
    Later,
}

/// An event being handled on this server; unmarked when dropped.
struct InFlight {
    set: Arc<Mutex<HashSet<String>>>,
    id: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut set = self.set.lock().unwrap_or_else(|p| p.into_inner());
        set.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(repository: &str, tag: Option<&str>) -> ImageEvent {
        ImageEvent {
            repository: repository.into(),
            tag: tag.map(str::to_string),
            digest: Some("sha256:abc".into()),
            media_type: None,
            app: None,
            by: "ci".into(),
            source: ImageSource::Push,
            at: 1,
        }
    }

    fn release(
        n: u64,
        created: i64,
        status: ReleaseStatus,
        cause: ReleaseCause,
    ) -> store::Entry<Release> {
        store::Entry {
            key: format!("/paz/releases/web/{n}"),
            value: Release {
                n,
                image: "127.0.0.1:5000/web@sha256:abc".into(),
                git_sha: None,
                env: Default::default(),
                created_at: 1,
                by: "ci".into(),
                cause,
                status,
                processes: Default::default(),
                release_command: None,
                source: None,
                exposed_ports: Vec::new(),
                resources: Default::default(),
                cron: Vec::new(),
            },
            mod_revision: created,
            create_revision: created,
        }
    }

    #[test]
    fn an_event_never_takes_an_app_back_and_resumes_its_own_release() {
        let event = event("web", Some("v1"));
        let image = "127.0.0.1:5000/web@sha256:abc";
        let older = release(1, 5, ReleaseStatus::Active, ReleaseCause::Push);
        assert_eq!(
            plan(&event, 10, image, 2, std::slice::from_ref(&older)),
            Plan::Deploy
        );
        assert_eq!(plan(&event, 10, image, 2, &[]), Plan::Deploy);
        // The app was created after the event.
        assert_eq!(plan(&event, 10, image, 11, &[]), Plan::Skip);
        // A release made after the event, by a push.
        let newer = release(2, 12, ReleaseStatus::Active, ReleaseCause::Push);
        assert_eq!(
            plan(&event, 10, image, 2, &[older.clone(), newer.clone()]),
            Plan::Skip
        );
        // The release an earlier attempt made for this event.
        for (status, expected) in [
            (ReleaseStatus::Pending, Plan::Resume(2)),
            (ReleaseStatus::Deploying, Plan::Resume(2)),
            (ReleaseStatus::Active, Plan::Skip),
            (ReleaseStatus::Failed, Plan::Skip),
        ] {
            let own = release(2, 12, status, ReleaseCause::Image);
            assert_eq!(
                plan(&event, 10, image, 2, &[older.clone(), own.clone()]),
                expected
            );
            // ... but not when something newer came after it.
            let later = release(3, 13, ReleaseStatus::Active, ReleaseCause::Push);
            assert_eq!(plan(&event, 10, image, 2, &[own, later]), Plan::Skip);
        }
        // Another image's release is not this event's.
        let mut other = release(2, 12, ReleaseStatus::Pending, ReleaseCause::Image);
        other.value.image = "127.0.0.1:5000/web@sha256:def".into();
        assert_eq!(plan(&event, 10, image, 2, &[other]), Plan::Skip);
    }

    #[test]
    fn apps_follow_their_repository_and_tag_glob() {
        let mut app = App::new(store::AppName::new("web").unwrap(), 1);
        assert!(!follows(&app, &event("web", Some("v1"))), "not following");
        app.deploy.image_repo = Some("web".into());
        assert!(follows(&app, &event("web", Some("anything"))));
        assert!(!follows(&app, &event("other", Some("v1"))));
        app.deploy.tag_pattern = Some("v*".into());
        assert!(follows(&app, &event("web", Some("v2"))));
        assert!(!follows(&app, &event("web", Some("latest"))));
        let mut named = event("x", None);
        named.app = Some(store::AppName::new("web").unwrap());
        assert!(follows(&app, &named), "a deploy hook names its app");
        assert_eq!(
            image_of(&event("web", Some("v2")), Some("127.0.0.1:5000")).unwrap(),
            "127.0.0.1:5000/web@sha256:abc"
        );
    }
}

//! Image events become deploys: a new tag of a repository an app follows
//! (`deploy:follow APP REPO [TAG-GLOB]`), or a `/hooks/deploy` event naming
//! an app, makes a release of that image with the app's env and rolls it out.
//! Each event is claimed in etcd (create-if-absent) so that one server, and
//! only one, deploys it. While it deploys, the claim lives on a lease: if
//! that server dies, the claim goes, and the next look for unclaimed events
//! (at start and every few seconds, on every server) deploys the event. An
//! event is never deployed over a newer release of its app.

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use globset::Glob;
use store::records::{App, ImageEvent, ImageSource, Release, ReleaseCause, ReleaseStatus};
use store::{Store, WatchEvent};
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
    /// Tokens whose pushes are not followed: the builder's, whose images the
    /// push that built them deploys.
    pub ignore_by: Vec<String>,
}

#[derive(Debug)]
pub struct ImageFollower {
    store: Store,
    deployer: Deployer,
    config: FollowConfig,
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

impl ImageFollower {
    pub fn new(store: Store, deployer: Deployer, config: FollowConfig) -> ImageFollower {
        ImageFollower {
            store,
            deployer,
            config,
        }
    }

    /// Follows new events until `shutdown`; looks for unclaimed ones at
    /// start and every [`RESCAN`].
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let prefix = self.store.keys().image_events();
        let mut watch = self.store.watch(&prefix);
        let mut rescan = tokio::time::interval(RESCAN);
        rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            let event = tokio::select! {
                _ = &mut shutdown => return,
                _ = rescan.tick() => {
                    self.rescan().await;
                    continue;
                }
                event = watch.next_event() => event,
            };
            match event {
                // Events already there are the rescan's.
                Some(WatchEvent::Snapshot { .. }) => {}
                Some(WatchEvent::Put { key, value, .. }) => {
                    self.spawn_handle(prefix.child_name(&key).to_string(), value);
                }
                Some(_) => {}
                None => return,
            }
        }
    }

    fn spawn_handle(&self, id: String, event: ImageEvent) {
        let follower = self.clone_parts();
        tokio::spawn(async move { follower.handle(&id, event).await });
    }

    /// Handles every event that has no claim.
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
        for entry in events.entries {
            let id = event_prefix.child_name(&entry.key);
            if !claimed.contains(id) {
                self.spawn_handle(id.to_string(), entry.value);
            }
        }
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

    /// Whether `app` has a release made after `at` (Unix seconds).
    async fn newer_release(&self, app: &App, at: u64) -> Result<bool, store::StoreError> {
        let releases = self
            .store
            .list(&self.store.keys().releases(&app.name))
            .await?;
        Ok(releases
            .entries
            .iter()
            .any(|entry| entry.value.created_at > at))
    }

    fn clone_parts(&self) -> ImageFollower {
        ImageFollower {
            store: self.store.clone(),
            deployer: self.deployer.clone(),
            config: self.config.clone(),
        }
    }

    async fn handle(&self, id: &str, event: ImageEvent) {
        let Ok(claim) = self.store.keys().image_claim(id) else {
            return;
        };
        if self.config.ignore_by.contains(&event.by) {
            self.settle(&claim, "a build's push, deployed by that push")
                .await;
            return;
        }
        let apps = match self.store.list(&self.store.keys().apps()).await {
            Ok(apps) => apps,
            Err(error) => {
                warn!(%error, "cannot read the apps for an image event");
                return;
            }
        };
        let mut targets = Vec::new();
        for app in apps.entries.into_iter().map(|entry| entry.value) {
            if !follows(&app, &event) {
                continue;
            }
            // An event found late never takes an app back to an older image.
            match self.newer_release(&app, event.at).await {
                Ok(false) => targets.push(app),
                Ok(true) => {
                    info!(app = %app.name, repository = %event.repository, "an image event older than the app's newest release; not deployed");
                }
                Err(error) => {
                    warn!(app = %app.name, %error, "cannot read the releases for an image event");
                    return;
                }
            }
        }
        if targets.is_empty() {
            self.settle(&claim, "no app to deploy it to").await;
            return;
        }
        let Some(image) = image_of(&event, self.config.registry_host.as_deref()) else {
            warn!(repository = %event.repository, "an image event without tag or digest; not deployed");
            self.settle(&claim, "no tag or digest").await;
            return;
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
        if self
            .store
            .transaction()
            .require_absent(&claim)
            .put_on_lease(&claim, &self.config.candidate, &lease)
            .commit()
            .await
            .is_err()
        {
            return;
        }
        for app in targets {
            let release = Release {
                n: 0,
                image: image.clone(),
                git_sha: None,
                env: app.env.clone(),
                created_at: event.at,
                by: event.by.clone(),
                cause: ReleaseCause::Image,
                status: ReleaseStatus::Pending,
                processes: Default::default(),
                release_command: None,
            };
            let n = match self.store.create_release(&app.name, release).await {
                Ok(n) => n,
                Err(error) => {
                    warn!(app = %app.name, %error, "cannot record a release for an image event");
                    continue;
                }
            };
            let (lines, mut said) = tokio::sync::mpsc::channel::<String>(64);
            let name = app.name.clone();
            let log = tokio::spawn(async move {
                while let Some(line) = said.recv().await {
                    info!(app = %name, "{}", line.trim());
                }
            });
            info!(app = %app.name, %image, n, "deploying a followed image");
            if let Err(reason) = self.deployer.roll_out(&app.name, n, &lines).await {
                warn!(app = %app.name, %reason, "the followed image's deploy failed");
            }
            drop(lines);
            let _ = log.await;
        }
        // Deployed or failed, the event has been dealt with: the claim stays.
        if let Err(error) = self.store.put(&claim, &self.config.candidate).await {
            warn!(%error, "cannot keep the claim of a deployed image event; it may deploy again");
        }
        let _ = lease.revoke().await;
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

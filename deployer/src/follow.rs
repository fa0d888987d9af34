//! Image events become deploys: a new tag of a repository an app follows
//! (`deploy:follow APP REPO [TAG-GLOB]`), or a `/hooks/deploy` event naming
//! an app, makes a release of that image with the app's env and rolls it out.
//! Each event is claimed in etcd (create-if-absent) so that one server, and
//! only one, deploys it.

use std::future::Future;

use globset::Glob;
use store::records::{App, ImageEvent, ImageSource, Release, ReleaseCause, ReleaseStatus};
use store::{Store, WatchEvent};
use tracing::{info, warn};

use crate::Deployer;

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

    /// Follows new events until `shutdown`.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let prefix = self.store.keys().image_events();
        let mut watch = self.store.watch(&prefix);
        tokio::pin!(shutdown);
        loop {
            let event = tokio::select! {
                _ = &mut shutdown => return,
                event = watch.next_event() => event,
            };
            match event {
                // What happened before this server started was someone else's.
                Some(WatchEvent::Snapshot { .. }) => {}
                Some(WatchEvent::Put { key, value, .. }) => {
                    let id = prefix.child_name(&key).to_string();
                    let follower = self.clone_parts();
                    tokio::spawn(async move { follower.handle(&id, value).await });
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
        }
    }

    async fn handle(&self, id: &str, event: ImageEvent) {
        if self.config.ignore_by.contains(&event.by) {
            return;
        }
        let apps = match self.store.list(&self.store.keys().apps()).await {
            Ok(apps) => apps,
            Err(error) => {
                warn!(%error, "cannot read the apps for an image event");
                return;
            }
        };
        let targets: Vec<App> = apps
            .entries
            .into_iter()
            .map(|entry| entry.value)
            .filter(|app| follows(app, &event))
            .collect();
        if targets.is_empty() {
            return;
        }
        let Some(image) = image_of(&event, self.config.registry_host.as_deref()) else {
            warn!(repository = %event.repository, "an image event without tag or digest; not deployed");
            return;
        };
        // One server deploys it.
        let Ok(claim) = self.store.keys().image_claim(id) else {
            return;
        };
        if self
            .store
            .transaction()
            .create(&claim, &self.config.candidate)
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

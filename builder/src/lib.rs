//! Paz's builder: turns a pushed commit into an image in Paz's registry.
//!
//! The commit's tree is read with git2 from the repo and git's quarantine
//! (`source`), a Dockerfile is chosen or generated from a buildpack
//! (`buildpacks`), the image is built and pushed with bollard (`docker`), and
//! the build and the release are recorded in etcd. Every line goes to the
//! pusher as it happens and to `<data-dir>/builds/<app>/<id>.log`.

#![forbid(unsafe_code)]

pub mod buildpacks;
mod docker;
mod error;
mod log;
mod release;
pub mod source;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use store::records::{Build, BuildStatus, NewRelease, ReleaseCause};
use store::{AppName, Store};
use support::now;
use tokio::sync::{mpsc, Semaphore};

pub use crate::error::BuildError;
use crate::error::Result;

/// How long a build's `alive` key outlives a server that stopped.
const ALIVE_TTL: Duration = Duration::from_secs(10);
use crate::log::BuildLog;

/// How the builder runs.
#[derive(Debug, Clone)]
pub struct BuilderConfig {
    /// Build logs go to `<data_dir>/builds/<app>/<id>.log`.
    pub data_dir: PathBuf,
    /// The registry Docker pushes to (`host:port`, e.g. `127.0.0.1:5000`)
    /// and the token the builder pushes with.
    pub login: engine::RegistryLogin,
    /// Base images by buildpack name, replacing the buildpacks' defaults.
    pub base_images: HashMap<String, String>,
    /// The largest build context accepted, in bytes.
    pub context_limit: u64,
    /// The longest a build may take.
    pub timeout: Duration,
    /// How many builds run at once on this host.
    pub concurrency: usize,
    /// Reads the ports a pushed image exposes, for its release.
    pub images: Option<Arc<dyn store::ImageResolver>>,
}

impl BuilderConfig {
    pub fn new(data_dir: PathBuf, login: engine::RegistryLogin) -> BuilderConfig {
        BuilderConfig {
            data_dir,
            login,
            base_images: HashMap::new(),
            context_limit: 1 << 30,
            timeout: Duration::from_secs(30 * 60),
            concurrency: 1,
            images: None,
        }
    }
}

/// A commit to build.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub app: AppName,
    pub git_sha: String,
    /// The app's bare repo.
    pub repo: PathBuf,
    /// git's quarantine environment of the push.
    pub git_env: Vec<(String, String)>,
    /// Who pushed (recorded on the build and the release).
    pub by: String,
    /// The apps the pusher may use (`None`: every app): a Dockerfile may
    /// build on Paz's registry's images of these only.
    pub may_use: Option<Vec<AppName>>,
}

/// What a successful build made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    pub build_id: String,
    /// `registry/app@sha256:...`.
    pub image: String,
    /// The release recorded for it.
    pub release: u64,
    /// Whether an earlier build's image was reused (nothing changed).
    pub reused: bool,
}

/// The builder; cheap to clone.
#[derive(Debug, Clone)]
pub struct Builder {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: BuilderConfig,
    store: Store,
    docker: tokio::sync::OnceCell<bollard::Docker>,
    slots: Semaphore,
    /// Builds of one app run one after the other, also across pushes whose
    /// pusher went away.
    app_locks: support::KeyedLocks<AppName>,
}

/// Refuses a Dockerfile that builds on (`FROM`, `COPY --from`) an image of
/// an app in Paz's registry (`registry`) that the pusher may not use: the
/// engine's cache would hand it over without asking the registry.
fn check_base_images(dockerfile: &str, registry: &str, request: &BuildRequest) -> Result<()> {
    let Some(allowed) = &request.may_use else {
        return Ok(());
    };
    for image in buildpacks::base_images(dockerfile) {
        let owner = store::images::registry_owner(registry, &image);
        if let Some(owner) = owner.filter(|owner| !allowed.contains(owner)) {
            return Err(BuildError::Denied(format!(
                "the Dockerfile builds on {image}, an image of app `{owner}`, which `{}` may not use: build on your own apps' images or a public one",
                request.by
            )));
        }
    }
    Ok(())
}

impl Builder {
    pub fn new(config: BuilderConfig, store: Store) -> Builder {
        let slots = Semaphore::new(config.concurrency.max(1));
        Builder {
            inner: Arc::new(Inner {
                config,
                store,
                docker: tokio::sync::OnceCell::new(),
                slots,
                app_locks: support::KeyedLocks::default(),
            }),
        }
    }

    /// Builds `request`, sending each line to `output` as it happens. The build
    /// runs in a task of its own: if the caller goes away it still finishes and
    /// is recorded.
    pub async fn build(
        &self,
        request: BuildRequest,
        output: mpsc::Sender<String>,
    ) -> Result<Built> {
        let builder = self.clone();
        tokio::spawn(async move { builder.run(request, output).await })
            .await
            .map_err(|error| BuildError::Task(error.to_string()))?
    }

    async fn run(&self, request: BuildRequest, output: mpsc::Sender<String>) -> Result<Built> {
        let started = Instant::now();
        let id = format!("{:010}-{}", now(), hex::encode(rand::random::<[u8; 3]>()));
        let log_path = format!("builds/{}/{id}.log", request.app);
        let mut log = BuildLog::create(&self.inner.config.data_dir.join(&log_path), output)
            .await
            .map_err(BuildError::Log)?;

        let _app_turn = self
            .inner
            .app_locks
            .lock_or_say(&request.app, || {
                log.line(format!(
                    "-----> Waiting for the previous build of {} to finish",
                    request.app
                ))
            })
            .await;
        let _slot = match self.inner.slots.try_acquire() {
            Ok(slot) => slot,
            Err(_) => {
                log.line(
                    "-----> Waiting for a free build slot (other apps are building on this host)",
                )
                .await;
                self.inner
                    .slots
                    .acquire()
                    .await
                    .map_err(|error| BuildError::Task(error.to_string()))?
            }
        };

        let store = &self.inner.store;
        let key = store.keys().build(&request.app, &id)?;
        let mut record = Build {
            git_sha: request.git_sha.clone(),
            status: BuildStatus::Running,
            started_at: now(),
            finished_at: None,
            log_path,
            buildpack: None,
            image: None,
            cache_key: None,
            error: None,
            by: request.by.clone(),
        };
        // With its `alive` key, on a lease this server keeps while it
        // builds: a reader takes a running build without it for abandoned.
        let lease = store.grant_lease(ALIVE_TTL).await?;
        store
            .transaction()
            .put(&key, &record)
            .put_on_lease(
                &store.keys().build_alive(&request.app, &id)?,
                &"building".to_string(),
                &lease,
            )
            .commit()
            .await?;

        let result = match tokio::time::timeout(
            self.inner.config.timeout,
            self.steps(&request, &id, &mut log, &mut record),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(BuildError::TimedOut {
                what: "the build".to_string(),
                after: self.inner.config.timeout,
            }),
        };
        record.finished_at = Some(now());
        let outcome = match result {
            Ok(built) => {
                record.status = BuildStatus::Succeeded;
                log.line(format!(
                    "-----> Done in {:.1} s",
                    started.elapsed().as_secs_f64()
                ))
                .await;
                Ok(built)
            }
            Err(error) => {
                record.status = BuildStatus::Failed;
                record.error = Some(error.to_string());
                log.line(format!(" !     Build failed: {error}")).await;
                Err(BuildError::Failed {
                    error: Box::new(error),
                    build: id.clone(),
                    tail: log.tail(10),
                })
            }
        };
        if let Err(error) = store.put(&key, &record).await {
            tracing::error!(%error, build = %id, "cannot record the build's end");
        }
        log.finish().await;
        drop(lease);
        outcome
    }

    async fn steps(
        &self,
        request: &BuildRequest,
        id: &str,
        log: &mut BuildLog,
        record: &mut Build,
    ) -> Result<Built> {
        let config = &self.inner.config;
        let (repo, env, sha, limit) = (
            request.repo.clone(),
            request.git_env.clone(),
            request.git_sha.clone(),
            config.context_limit,
        );
        let source = tokio::task::spawn_blocking(move || source::read(&repo, &env, &sha, limit))
            .await
            .map_err(|error| BuildError::Task(error.to_string()))??;
        let plan = buildpacks::plan(&source.root, &config.base_images)?;
        let dockerfile = plan
            .dockerfile
            .as_deref()
            .or(source.root.files.get("Dockerfile").map(String::as_str))
            .unwrap_or_default();
        check_base_images(dockerfile, &config.login.registry, request)?;
        record.buildpack = Some(plan.buildpack.clone());
        let cache_key = hex::encode(Sha256::digest(format!(
            "{}\n{}\n{}",
            source.tree,
            plan.buildpack,
            plan.dockerfile.as_deref().unwrap_or("")
        )));
        record.cache_key = Some(cache_key.clone());
        let short = &request.git_sha[..request.git_sha.len().min(7)];

        let store = &self.inner.store;
        let builds = store.list(&store.keys().builds(&request.app)).await?;
        let previous = builds.entries.iter().rev().find(|entry| {
            entry.value.status == BuildStatus::Succeeded
                && entry.value.cache_key.as_deref() == Some(&cache_key)
        });
        let (image, reused) = match previous
            .and_then(|entry| entry.value.image.clone().map(|image| (entry, image)))
        {
            Some((entry, image)) => {
                let earlier = store
                    .keys()
                    .builds(&request.app)
                    .child_name(&entry.key)
                    .to_string();
                log.line(format!(
                    "-----> No change since build {earlier} ({}): reusing {image}",
                    &entry.value.git_sha[..7.min(entry.value.git_sha.len())]
                ))
                .await;
                (image, true)
            }
            None => {
                let with = match &plan.dockerfile {
                    None => "Dockerfile".to_string(),
                    Some(_) => format!("the {} buildpack", plan.buildpack),
                };
                log.line(format!(
                    "-----> Building {} ({short}) with {with}",
                    request.app
                ))
                .await;
                let docker = self.docker().await?;
                let tag = format!(
                    "{}/{}:{}",
                    config.login.registry, request.app, request.git_sha
                );
                let labels = HashMap::from([
                    ("paz.app", request.app.to_string()),
                    ("paz.git-sha", request.git_sha.clone()),
                ]);
                docker::build(&docker, source, plan.dockerfile.clone(), &tag, &labels, log).await?;
                log.line(format!(
                    "-----> Pushing image {}/{}:{short}",
                    config.login.registry, request.app
                ))
                .await;
                let digest = docker::push(
                    &docker,
                    &config.login,
                    request.app.as_str(),
                    &request.git_sha,
                )
                .await?;
                (
                    format!("{}/{}@{digest}", config.login.registry, request.app),
                    false,
                )
            }
        };
        record.image = Some(image.clone());
        let exposed_ports = match &config.images {
            Some(images) => {
                images
                    .resolve(&image)
                    .await
                    .map_err(|error| {
                        BuildError::Docker(format!("cannot read the pushed image back: {error}"))
                    })?
                    .exposed_ports
            }
            None => Vec::new(),
        };

        let app = store
            .get(&store.keys().app(&request.app))
            .await?
            .ok_or_else(|| BuildError::AppGone(request.app.clone()))?
            .value;
        let release = NewRelease {
            image: store::ResolvedImage {
                image: image.clone(),
                source: None,
                exposed_ports,
            },
            git_sha: Some(request.git_sha.clone()),
            env: app.env,
            resources: app.resources,
            created_at: now(),
            by: request.by.clone(),
            cause: ReleaseCause::Push,
            processes: plan.processes,
            release_command: plan.release_command,
            cron: plan.cron,
        };
        let n = store.create_release(&request.app, release).await?;
        log.line(format!("-----> Recorded release v{n}: {image}"))
            .await;
        Ok(Built {
            build_id: id.to_string(),
            image,
            release: n,
            reused,
        })
    }

    /// Pins an image of another registry to its digest and reads its exposed
    /// ports, by pulling it through this host's Docker Engine (the registry's
    /// credentials are Docker's own, as `docker login` left them).
    pub async fn inspect_remote(&self, reference: &str) -> Result<store::ResolvedImage> {
        let docker = self.docker().await?;
        docker::inspect_remote(&docker, reference).await
    }

    async fn docker(&self) -> Result<bollard::Docker> {
        self.inner
            .docker
            .get_or_try_init(|| async { Ok::<_, BuildError>(engine::connect().await?) })
            .await
            .cloned()
    }
}

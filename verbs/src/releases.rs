//! `releases`, `deploy` and `rollback`: an app's releases. Verbs that
//! change what runs record a release and hand its rollout to the deployer
//! ([`crate::Rollouts`]), whose steps become the verb's [`RolloutReport`].

use std::collections::BTreeMap;

use deployer::Step;
use serde::Serialize;
use store::records::{NewRelease, Release, ReleaseCause, ReleaseStatus};
use store::{AppName, ResolvedImage};

use crate::apps::load;
use crate::args::Args;
use crate::{Caller, Context, VerbError};

/// The app's releases, oldest first.
async fn all(context: &Context, app: &AppName) -> Result<Vec<Release>, VerbError> {
    let listing = context
        .store
        .list(&context.store.keys().releases(app))
        .await?;
    let mut releases: Vec<Release> = listing.entries.into_iter().map(|e| e.value).collect();
    releases.sort_by_key(|r| r.n);
    Ok(releases)
}

/// The release that serves `app`, if any.
pub(crate) async fn current(context: &Context, app: &AppName) -> Result<Option<u64>, VerbError> {
    Ok(context
        .store
        .get(&context.store.keys().current(app))
        .await?
        .map(|v| v.value))
}

/// The release that serves `app`, if any (a one-off's, a job's, the limits
/// each process type gets).
pub(crate) async fn serving_release(
    context: &Context,
    app: &AppName,
) -> Result<Option<Release>, VerbError> {
    let Some(n) = current(context, app).await? else {
        return Ok(None);
    };
    let key = context.store.keys().release(app, n);
    Ok(context.store.get(&key).await?.map(|v| v.value))
}

/// An app's releases (`releases`): newest first as text, oldest first as JSON.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct ReleaseList {
    #[serde(skip)]
    pub app: AppName,
    /// The release that serves.
    #[serde(skip)]
    pub serving: Option<u64>,
    pub releases: Vec<Release>,
}

impl ReleaseList {
    /// One release's line.
    fn line(&self, release: &Release) -> String {
        let cause = match release.cause {
            ReleaseCause::Push => "push",
            ReleaseCause::Image => "image",
            ReleaseCause::Rollback => "rollback",
            ReleaseCause::Config => "config",
            ReleaseCause::Scale => "scale",
        };
        let status = if Some(release.n) == self.serving {
            "current"
        } else {
            match release.status {
                ReleaseStatus::Pending => "pending",
                ReleaseStatus::Deploying => "deploying",
                ReleaseStatus::Active => "active",
                ReleaseStatus::Failed => "failed",
                ReleaseStatus::Superseded => "superseded",
            }
        };
        let when = crate::utc(release.created_at);
        let from = release
            .source
            .as_ref()
            .map(|source| format!(" (from {source})"))
            .unwrap_or_default();
        format!(
            "v{:<4} {status:10} {cause:8} {:12} {when}  {}{from}",
            release.n, release.by, release.image
        )
    }
}

impl std::fmt::Display for ReleaseList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lines = self.releases.iter().rev().map(|release| self.line(release));
        let empty = format!(
            "{} has no releases yet: git push or deploy an image",
            self.app
        );
        crate::lines_or(f, lines, empty)
    }
}

pub(crate) async fn list(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<ReleaseList, VerbError> {
    let name = args.one()?;
    let (app, _) = load(context, caller, &name).await?;
    Ok(ReleaseList {
        releases: all(context, &app).await?,
        serving: current(context, &app).await?,
        app,
    })
}

/// Refuses unless `caller` may use the images of app `owner`.
pub(crate) fn require_images_of(caller: &Caller, owner: &AppName) -> Result<(), VerbError> {
    if caller.may_use(owner) {
        return Ok(());
    }
    Err(VerbError::Denied(format!(
        "`{}` may not use the images of app `{owner}`: deploy and follow your own apps' images or ask an admin",
        caller.name
    )))
}

/// The image of an earlier release, as it was resolved then.
fn image_of(release: &Release) -> ResolvedImage {
    ResolvedImage {
        image: release.image.clone(),
        source: release.source.clone(),
        exposed_ports: release.exposed_ports.clone(),
    }
}

/// What a rollout (or restart) of release `release` did, step by step.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RolloutReport {
    pub app: AppName,
    pub release: u64,
    /// Its steps, the first being what the verb said before the rollout
    /// began (the digest an image's tag named), if anything.
    pub steps: Vec<Step>,
}

impl std::fmt::Display for RolloutReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        crate::lines_or(f, self.steps.iter().map(Step::to_string), "")
    }
}

/// Records a release of `image` with `env` and rolls it out; `first` is
/// said before the rollout's steps.
#[allow(clippy::too_many_arguments)]
async fn release_and_roll_out(
    context: &Context,
    caller: &Caller,
    app: &AppName,
    image: ResolvedImage,
    env: BTreeMap<String, String>,
    resources: store::records::Resources,
    from: Option<&Release>,
    cause: ReleaseCause,
    first: Option<Step>,
) -> Result<RolloutReport, VerbError> {
    let rollouts = context.rollouts()?;
    let release = NewRelease {
        image,
        git_sha: from.and_then(|r| r.git_sha.clone()),
        env,
        resources,
        created_at: context.now(),
        by: caller.name.clone(),
        cause,
        processes: from.map(|r| r.processes.clone()).unwrap_or_default(),
        release_command: from.and_then(|r| r.release_command.clone()),
        cron: from.map(|r| r.cron.clone()).unwrap_or_default(),
    };
    let n = context.store.create_release(app, release).await?;
    let kind = match cause {
        ReleaseCause::Push => "push",
        ReleaseCause::Image => "deploy",
        ReleaseCause::Rollback => "rollback",
        ReleaseCause::Config => "config",
        ReleaseCause::Scale => "scale",
    };
    let job = Job {
        context,
        caller,
        kind,
        app,
        n,
    };
    roll_out(rollouts, job, first).await
}

/// A rollout a verb starts: what for, by whom, of which release.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Job<'a> {
    pub(crate) context: &'a Context,
    pub(crate) caller: &'a Caller,
    /// What started it (`deploy`, `rollback`, `config`, `scale`, `restart`).
    pub(crate) kind: &'static str,
    pub(crate) app: &'a AppName,
    pub(crate) n: u64,
}

/// Rolls release `n` out, collecting its steps.
pub(crate) async fn roll_out(
    rollouts: &std::sync::Arc<dyn crate::Rollouts>,
    job: Job<'_>,
    first: Option<Step>,
) -> Result<RolloutReport, VerbError> {
    let (rollouts, app, n) = (rollouts.clone(), job.app.clone(), job.n);
    collect_steps(job, first, move |steps| rollouts.roll_out(app, n, steps)).await
}

/// Runs a deployer job, its steps (after `first`) written to its rollout's
/// record as they come and collected as the verb's report. The record is
/// the one the context names (the API makes it before its 202), else new.
pub(crate) async fn collect_steps<F>(
    job: Job<'_>,
    first: Option<Step>,
    run: impl FnOnce(tokio::sync::mpsc::Sender<Step>) -> F,
) -> Result<RolloutReport, VerbError>
where
    F: std::future::Future<Output = Result<(), deployer::DeployError>>,
{
    let Job {
        context,
        caller,
        kind,
        app,
        n,
    } = job;
    let store = &context.store;
    let record = match &context.rollout_record {
        Some(key) => deployer::RolloutRecord::at(store, context.clock, key.clone()),
        None => {
            deployer::RolloutRecord::begin(store, context.clock, app, kind, &caller.name)
                .await?
                .0
        }
    };
    let (steps, mut received) = tokio::sync::mpsc::channel(64);
    let collect = tokio::spawn(async move {
        let mut all = Vec::new();
        while let Some(step) = received.recv().await {
            all.push(step);
        }
        all
    });
    if let Some(first) = first {
        record.append(&first, Some(n)).await;
        let _ = steps.send(first).await;
    }
    let result = record.run(Some(n), steps, run).await;
    let steps = collect.await.unwrap_or_default();
    match result {
        Ok(()) => Ok(RolloutReport {
            app: app.clone(),
            release: n,
            steps,
        }),
        Err(error) => Err(VerbError::Rollout { steps, error }),
    }
}

/// The env changed (`config:set`, `config:unset`, `ports:set`): what was
/// done and the release it made, as text; the app's env as JSON.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct ConfigChange {
    #[serde(skip)]
    pub said: String,
    pub env: BTreeMap<String, String>,
    /// The new release's rollout; `None` where it waits for the next release.
    #[serde(skip)]
    pub rollout: Option<RolloutReport>,
}

impl std::fmt::Display for ConfigChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.rollout {
            Some(rollout) => write!(f, "{}\n{rollout}", self.said),
            None => write!(f, "{}; it takes effect with the next release", self.said),
        }
    }
}

/// After `config:set`/`config:unset` (and `ports:set`, `resource:limit`):
/// a new release of the serving image with the new env and limits, rolled out (Heroku's way); without a serving release or
/// a deployer, the env waits for the next release.
pub(crate) async fn after_config_change(
    context: &Context,
    caller: &Caller,
    app: &store::records::App,
    said: String,
) -> Result<ConfigChange, VerbError> {
    let serving = match (&context.rollouts, current(context, &app.name).await?) {
        (Some(_), Some(n)) => context
            .store
            .get(&context.store.keys().release(&app.name, n))
            .await?
            .map(|v| v.value),
        _ => None,
    };
    let rollout = match serving {
        Some(serving) => Some(
            release_and_roll_out(
                context,
                caller,
                &app.name,
                image_of(&serving),
                app.env.clone(),
                app.resources.clone(),
                Some(&serving),
                ReleaseCause::Config,
                None,
            )
            .await?,
        ),
        None => None,
    };
    Ok(ConfigChange {
        said,
        env: app.env.clone(),
        rollout,
    })
}

pub(crate) async fn deploy(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<RolloutReport, VerbError> {
    let (name, image) = args.two()?;
    let (app, record) = load(context, caller, &name).await?;
    units::check_image(&image).map_err(VerbError::Invalid)?;
    // Another app's image in Paz's registry is that app's to deploy.
    if let Some(owner) = context.rollouts()?.image_owner(&image) {
        require_images_of(caller, &owner)?;
    }
    // Pinned to the digest the tag names now, so that the release never
    // changes (a rollback to it runs these bits, wherever the tag moves).
    let resolved = context
        .rollouts()?
        .resolve_image(image.clone())
        .await
        .map_err(|error| match error {
            deployer::DeployError::Store(error) => VerbError::Store(error),
            error => VerbError::Invalid(format!("cannot deploy {image}: {error}")),
        })?;
    let pinned = pinned_note(&image, &resolved);
    // Another image: nothing of the last release's Procfile applies to it.
    release_and_roll_out(
        context,
        caller,
        &app,
        resolved,
        record.value.env.clone(),
        record.value.resources.clone(),
        None,
        ReleaseCause::Image,
        pinned,
    )
    .await
}

/// What a deploy says first when the image it was given is pinned to
/// another reference (a tag to its digest).
pub fn pinned_note(image: &str, resolved: &ResolvedImage) -> Option<Step> {
    (resolved.image != image).then(|| Step::Note {
        text: format!("{image} is {}", resolved.image),
    })
}

pub(crate) async fn rollback(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<RolloutReport, VerbError> {
    let words = args.at_least(1)?;
    if words.len() > 2 {
        return Err(args.usage());
    }
    let (app, record) = load(context, caller, &words[0]).await?;
    let releases = all(context, &app).await?;
    let serving = current(context, &app).await?;
    let target = match words.get(1) {
        Some(text) => {
            let n: u64 = text.trim_start_matches('v').parse().map_err(|_| {
                VerbError::Invalid(format!("`{text}` is not a release number such as 3 or v3"))
            })?;
            releases.iter().find(|r| r.n == n).ok_or_else(|| {
                VerbError::NotFound(format!("{app} has no release v{n}: see `releases {app}`"))
            })?
        }
        None => releases
            .iter()
            .rev()
            .filter(|r| Some(r.n) < serving)
            .find(|r| matches!(r.status, ReleaseStatus::Active | ReleaseStatus::Superseded))
            .ok_or_else(|| {
                VerbError::NotFound(format!(
                    "{app} has no earlier release that ran: see `releases {app}`"
                ))
            })?,
    };
    if target.status == ReleaseStatus::Failed {
        return Err(VerbError::Invalid(format!(
            "v{} failed when it was deployed: pick a release that ran",
            target.n
        )));
    }
    let target = target.clone();
    release_and_roll_out(
        context,
        caller,
        &app,
        image_of(&target),
        target.env.clone(),
        // Limits are the app's settings, as its scale is: not rolled back.
        record.value.resources.clone(),
        Some(&target),
        ReleaseCause::Rollback,
        None,
    )
    .await
}

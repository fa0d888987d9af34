//! `releases`, `deploy`, `rollback`, `ps` and `ps:scale`: an app's releases
//! and instances. Verbs that change what runs record a release (or a scale)
//! and hand the rollout to the deployer ([`crate::Rollouts`]), whose step
//! lines become the verb's output.

use serde_json::json;
use store::records::{ActiveState, NewRelease, Release, ReleaseCause, ReleaseStatus};
use store::{AppName, ResolvedImage};

use crate::apps::{load, update};
use crate::args::Args;
use crate::{now, Caller, Context, Outcome, VerbError};

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

async fn current(context: &Context, app: &AppName) -> Result<Option<u64>, VerbError> {
    Ok(context
        .store
        .get(&context.store.keys().current(app))
        .await?
        .map(|v| v.value))
}

fn status_name(status: ReleaseStatus) -> &'static str {
    match status {
        ReleaseStatus::Pending => "pending",
        ReleaseStatus::Deploying => "deploying",
        ReleaseStatus::Active => "active",
        ReleaseStatus::Failed => "failed",
        ReleaseStatus::Superseded => "superseded",
    }
}

pub(crate) async fn list(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<Outcome, VerbError> {
    let name = args.one()?;
    let (app, _) = load(context, caller, &name).await?;
    let releases = all(context, &app).await?;
    let serving = current(context, &app).await?;
    let mut lines = Vec::new();
    for release in releases.iter().rev() {
        let cause = match release.cause {
            ReleaseCause::Push => "push",
            ReleaseCause::Image => "image",
            ReleaseCause::Rollback => "rollback",
            ReleaseCause::Config => "config",
            ReleaseCause::Scale => "scale",
        };
        let status = if Some(release.n) == serving {
            "current"
        } else {
            status_name(release.status)
        };
        // When, as an RFC 3339 UTC time (`2026-11-28T05:50:19Z`).
        let when = crate::utc(release.created_at);
        let from = release
            .source
            .as_ref()
            .map(|source| format!(" (from {source})"))
            .unwrap_or_default();
        lines.push(format!(
            "v{:<4} {status:10} {cause:8} {:12} {when}  {}{from}",
            release.n, release.by, release.image
        ));
    }
    Ok(Outcome::listing(
        &lines,
        format!("{app} has no releases yet: git push or deploy an image"),
        json!(releases),
    ))
}

/// Refuses unless `caller` may use the images of app `owner`.
fn require_images_of(caller: &Caller, owner: &AppName) -> Result<(), VerbError> {
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

/// Records a release of `image` with `env` and rolls it out.
async fn release_and_roll_out(
    context: &Context,
    caller: &Caller,
    app: &AppName,
    image: ResolvedImage,
    env: std::collections::BTreeMap<String, String>,
    from: Option<&Release>,
    cause: ReleaseCause,
) -> Result<Outcome, VerbError> {
    let rollouts = context.rollouts()?;
    let release = NewRelease {
        image,
        git_sha: from.and_then(|r| r.git_sha.clone()),
        env,
        created_at: now(),
        by: caller.name.clone(),
        cause,
        processes: from.map(|r| r.processes.clone()).unwrap_or_default(),
        release_command: from.and_then(|r| r.release_command.clone()),
    };
    let n = context.store.create_release(app, release).await?;
    roll_out(rollouts, app, n).await
}

/// Runs the rollout, collecting its step lines as the verb's output.
async fn roll_out(
    rollouts: &std::sync::Arc<dyn crate::Rollouts>,
    app: &AppName,
    n: u64,
) -> Result<Outcome, VerbError> {
    let (rollouts, app2) = (rollouts.clone(), app.clone());
    collect_lines(app, n, move |lines| rollouts.roll_out(app2, n, lines)).await
}

/// Runs a deployer job, collecting its step lines as the verb's output.
async fn collect_lines<F>(
    app: &AppName,
    n: u64,
    job: impl FnOnce(tokio::sync::mpsc::Sender<String>) -> F,
) -> Result<Outcome, VerbError>
where
    F: std::future::Future<Output = Result<(), deployer::DeployError>>,
{
    let (lines, mut received) = tokio::sync::mpsc::channel(64);
    let collect = tokio::spawn(async move {
        let mut all = Vec::new();
        while let Some(line) = received.recv().await {
            all.push(line);
        }
        all
    });
    let result = job(lines).await;
    let said = collect.await.unwrap_or_default().join("\n");
    match result {
        Ok(()) => Ok(Outcome::new(said, json!({"app": app, "release": n}))),
        Err(error) => Err(VerbError::Rollout { said, error }),
    }
}

/// After `config:set`/`config:unset`: a new release of the serving image
/// with the new env, rolled out (Heroku's way); without a serving release or
/// a deployer, the env waits for the next release.
pub(crate) async fn after_config_change(
    context: &Context,
    caller: &Caller,
    app: &store::records::App,
    said: String,
) -> Result<Outcome, VerbError> {
    let serving = match (&context.rollouts, current(context, &app.name).await?) {
        (Some(_), Some(n)) => context
            .store
            .get(&context.store.keys().release(&app.name, n))
            .await?
            .map(|v| v.value),
        _ => None,
    };
    let Some(serving) = serving else {
        return Ok(Outcome::new(
            format!("{said}; it takes effect with the next release"),
            json!(app.env),
        ));
    };
    let rolled = release_and_roll_out(
        context,
        caller,
        &app.name,
        image_of(&serving),
        app.env.clone(),
        Some(&serving),
        ReleaseCause::Config,
    )
    .await?;
    Ok(Outcome::new(
        format!("{said}\n{}", rolled.text),
        json!(app.env),
    ))
}

pub(crate) async fn deploy(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<Outcome, VerbError> {
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
    let pinned = if resolved.image == image {
        String::new()
    } else {
        format!("-----> {image} is {}\n", resolved.image)
    };
    // Another image: nothing of the last release's Procfile applies to it.
    let rolled = release_and_roll_out(
        context,
        caller,
        &app,
        resolved,
        record.value.env.clone(),
        None,
        ReleaseCause::Image,
    )
    .await?;
    Ok(Outcome::new(
        format!("{pinned}{}", rolled.text),
        rolled.json,
    ))
}

pub(crate) async fn rollback(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<Outcome, VerbError> {
    let words = args.at_least(1)?;
    if words.len() > 2 {
        return Err(args.usage());
    }
    let (app, _) = load(context, caller, &words[0]).await?;
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
        Some(&target),
        ReleaseCause::Rollback,
    )
    .await
}

pub(crate) async fn scale(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<Outcome, VerbError> {
    let words = args.at_least(2)?;
    let (mut web, mut worker) = (None, None);
    for word in &words[1..] {
        let (process, count) = word.split_once('=').ok_or_else(|| args.usage())?;
        let count: u32 = count.parse().ok().filter(|n| *n <= 100).ok_or_else(|| {
            VerbError::Invalid(format!(
                "`{word}`: the count must be a number from 0 to 100"
            ))
        })?;
        match process {
            "web" => web = Some(count),
            "worker" => worker = Some(count),
            other => {
                return Err(VerbError::Invalid(format!(
                    "process type `{other}` cannot be scaled: Paz runs web and worker"
                )))
            }
        }
    }
    if web.is_none() && worker.is_none() {
        return Err(args.usage());
    }
    if web == Some(0) {
        return Err(VerbError::Invalid(
            "web=0 would stop the app: destroy it instead, or scale to 1".into(),
        ));
    }
    let rollouts = context.rollouts()?;
    let (app, _) = load(context, caller, &words[0]).await?;
    update(context, caller, app.as_str(), |record| {
        if let Some(web) = web {
            record.scale.web = web;
        }
        if let Some(worker) = worker {
            record.scale.worker = worker;
        }
        Ok(())
    })
    .await?;
    match current(context, &app).await? {
        // The current release again: instances are added or removed, nothing restarts.
        Some(n) => roll_out(rollouts, &app, n).await,
        None => Ok(Outcome::new(
            format!("{app} will run at this scale once it is deployed"),
            json!({"app": app, "web": web, "worker": worker}),
        )),
    }
}

pub(crate) async fn ps(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<Outcome, VerbError> {
    let name = args.one()?;
    let (app, _) = load(context, caller, &name).await?;
    let keys = context.store.keys();
    let units = context.store.list(&keys.units()).await?;
    let schedule = context.store.list(&keys.schedules()).await?;
    let states = context.store.list(&keys.unit_states()).await?;
    let mut lines = Vec::new();
    let mut rows = Vec::new();
    for entry in &units.entries {
        let unit = keys.units().child_name(&entry.key);
        let ours = units::parse_instance_name(unit)
            .is_some_and(|instance| instance.app == app.as_str() && !instance.sidekick);
        if !ours {
            continue;
        }
        let machine = schedule
            .entries
            .iter()
            .find(|s| keys.schedules().child_name(&s.key) == unit)
            .map(|s| s.value.clone());
        let state = states
            .entries
            .iter()
            .find(|s| keys.unit_states().child_name(&s.key) == unit)
            .map(|s| s.value.clone());
        let active = match state.as_ref().map(|s| s.active) {
            Some(ActiveState::Active) => "up",
            Some(ActiveState::Activating) => "starting",
            Some(ActiveState::Deactivating) => "stopping",
            Some(ActiveState::Inactive) => "stopped",
            Some(ActiveState::Failed) => "crashed",
            None => "waiting",
        };
        let age = state
            .as_ref()
            .map(|s| format!("{}s", now().saturating_sub(s.since)))
            .unwrap_or_else(|| "-".into());
        let short: String = machine
            .clone()
            .unwrap_or_else(|| "-".into())
            .chars()
            .take(12)
            .collect();
        lines.push(format!(
            "{}  {short:12}  {active:8}  {age}",
            unit.trim_end_matches(".service")
        ));
        rows.push(json!({"unit": unit, "machine": machine, "state": state}));
    }
    Ok(Outcome::listing(
        &lines,
        format!("{app} runs no instances"),
        json!(rows),
    ))
}

pub(crate) async fn follow(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<Outcome, VerbError> {
    let words = args.at_least(2)?;
    if words.len() > 3 {
        return Err(args.usage());
    }
    let repository = words[1].clone();
    let valid = !repository.is_empty()
        && repository.len() <= 255
        && repository.split('/').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-:".contains(c))
        });
    if !valid {
        return Err(VerbError::Invalid(format!(
            "`{repository}` is not a repository name such as web or team/web"
        )));
    }
    // A repository of Paz's registry (`HOST/two`, or `two` when app `two`
    // exists; Docker Hub names such as `acme/web` have no host either) is
    // its app's.
    let owner = match repository.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => context
            .rollouts
            .as_ref()
            .and_then(|rollouts| rollouts.image_owner(&repository)),
        _ => match store::images::repository_app(&repository) {
            Some(app)
                if context
                    .store
                    .get(&context.store.keys().app(&app))
                    .await?
                    .is_some() =>
            {
                Some(app)
            }
            _ => None,
        },
    };
    if let Some(owner) = &owner {
        require_images_of(caller, owner)?;
    }
    let pattern = words.get(2).cloned();
    if let Some(pattern) = &pattern {
        globset::Glob::new(pattern).map_err(|error| {
            VerbError::Invalid(format!(
                "`{pattern}` is not a tag glob such as v* : {error}"
            ))
        })?;
    }
    let (app, ()) = update(context, caller, &words[0], |app| {
        app.deploy.image_repo = Some(repository.clone());
        app.deploy.tag_pattern = pattern.clone();
        Ok(())
    })
    .await?;
    Ok(Outcome::new(
        format!(
            "{} now deploys each new tag of {repository}{}",
            app.name,
            pattern
                .map(|p| format!(" matching {p}"))
                .unwrap_or_default()
        ),
        json!(app.deploy),
    ))
}

pub(crate) async fn restart(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<Outcome, VerbError> {
    let name = args.one()?;
    let rollouts = context.rollouts()?.clone();
    let (app, _) = load(context, caller, &name).await?;
    let n = current(context, &app).await?.unwrap_or_default();
    let app2 = app.clone();
    collect_lines(&app, n, move |lines| rollouts.restart(app2, lines)).await
}

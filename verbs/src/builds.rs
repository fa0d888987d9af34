//! `builds` and `builds:log`: an app's builds and their logs.

use serde_json::json;
use store::records::BuildStatus;

use crate::apps::load;
use crate::args::Args;
use crate::{Caller, Context, Outcome, VerbError};

pub(crate) async fn list(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<Outcome, VerbError> {
    let name = args.one()?;
    let (app, _) = load(context, caller, &name).await?;
    let prefix = context.store.keys().builds(&app);
    let listing = context.store.list(&prefix).await?;
    let mut lines = Vec::new();
    let mut builds = Vec::new();
    for entry in listing.entries.iter().rev().take(20) {
        let id = prefix.child_name(&entry.key);
        let build = &entry.value;
        let status = match build.status {
            BuildStatus::Running => "running",
            BuildStatus::Succeeded => "succeeded",
            BuildStatus::Failed => "failed",
        };
        let took = build
            .finished_at
            .map(|end| format!("{}s", end.saturating_sub(build.started_at)))
            .unwrap_or_else(|| "-".into());
        lines.push(format!(
            "{id}  {status:9}  {}  {:10}  {took:>5}  {}",
            &build.git_sha[..build.git_sha.len().min(7)],
            build.buildpack.as_deref().unwrap_or("-"),
            build.by
        ));
        builds.push(json!({"id": id, "build": build}));
    }
    Ok(Outcome::listing(
        &lines,
        format!("{app} has no builds yet: git push to build it"),
        json!(builds),
    ))
}

pub(crate) async fn log(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<Outcome, VerbError> {
    let words = args.at_least(1)?;
    if words.len() > 2 {
        return Err(args.usage());
    }
    let (app, _) = load(context, caller, &words[0]).await?;
    let prefix = context.store.keys().builds(&app);
    let listing = context.store.list(&prefix).await?;
    let entry = match words.get(1) {
        Some(id) => listing
            .entries
            .iter()
            .find(|entry| prefix.child_name(&entry.key) == id),
        None => listing.entries.last(),
    }
    .ok_or_else(|| match words.get(1) {
        Some(id) => VerbError::NotFound(format!("{app} has no build {id}: see builds {app}")),
        None => VerbError::NotFound(format!("{app} has no builds yet")),
    })?;
    let path = context.data_dir.join(&entry.value.log_path);
    // A running build's log is still `.partial`.
    let text = match tokio::fs::read_to_string(&path).await {
        Ok(text) => text,
        Err(_) => tokio::fs::read_to_string(path.with_extension("log.partial"))
            .await
            .map_err(|_| {
                VerbError::NotFound(format!(
                    "the log of this build is not on this host ({})",
                    path.display()
                ))
            })?,
    };
    Ok(Outcome::new(
        text.trim_end().to_string(),
        json!({"id": prefix.child_name(&entry.key), "log": text}),
    ))
}

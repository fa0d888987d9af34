//! `builds` and `builds:log`: an app's builds and their logs.

use serde::Serialize;
use store::records::{Build, BuildStatus};
use store::AppName;

use crate::apps::load;
use crate::args::Args;
use crate::{Caller, Context, VerbError};

/// An app's builds, newest first (`builds`; the last 20).
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct BuildList {
    #[serde(skip)]
    pub app: AppName,
    pub builds: Vec<BuildRow>,
}

/// One build and its id.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BuildRow {
    pub id: String,
    pub build: Build,
}

impl std::fmt::Display for BuildRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let build = &self.build;
        let status = match build.status {
            BuildStatus::Running => "running",
            BuildStatus::Succeeded => "succeeded",
            BuildStatus::Failed => "failed",
        };
        let took = build
            .finished_at
            .map(|end| format!("{}s", end.saturating_sub(build.started_at)))
            .unwrap_or_else(|| "-".into());
        write!(
            f,
            "{}  {status:9}  {}  {:10}  {took:>5}  {}",
            self.id,
            &build.git_sha[..build.git_sha.len().min(7)],
            build.buildpack.as_deref().unwrap_or("-"),
            build.by
        )
    }
}

impl std::fmt::Display for BuildList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let empty = format!("{} has no builds yet: git push to build it", self.app);
        crate::lines_or(f, &self.builds, empty)
    }
}

pub(crate) async fn list(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<BuildList, VerbError> {
    let name = args.one()?;
    let (app, _) = load(context, caller, &name).await?;
    let prefix = context.store.keys().builds(&app);
    let listing = context.store.list(&prefix).await?;
    let mut builds = Vec::new();
    for entry in listing.entries.into_iter().rev().take(20) {
        let id = prefix.child_name(&entry.key).to_string();
        let read = store::Versioned {
            value: entry.value,
            mod_revision: entry.mod_revision,
            create_revision: entry.create_revision,
        };
        // One left running by a server that stopped has ended.
        let build = context
            .store
            .settled_build(&app, &id, read, context.now())
            .await?;
        builds.push(BuildRow { id, build });
    }
    Ok(BuildList { app, builds })
}

/// One build's log (`builds:log`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BuildLog {
    pub id: String,
    pub log: String,
}

impl std::fmt::Display for BuildLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.log.trim_end())
    }
}

pub(crate) async fn log(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<BuildLog, VerbError> {
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
    Ok(BuildLog {
        id: prefix.child_name(&entry.key).to_string(),
        log: text,
    })
}

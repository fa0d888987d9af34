//! The deploy handler: what runs when a push reaches an app's deploy branch.
//! gitd calls it from the repo's `pre-receive` hook; the builder and deployer
//! implement it. Its output lines reach the pusher live as `remote:` lines; its
//! failure rejects the push.

use std::path::PathBuf;

use futures::future::BoxFuture;
use store::AppName;
use tokio::sync::mpsc;

/// Who pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pusher {
    /// The key's name, recorded as `by` on what the push makes.
    pub name: String,
    pub fingerprint: String,
    /// The apps it may use; `None`: every app (an admin). What it builds on
    /// from Paz's registry is held to these.
    pub apps: Option<Vec<AppName>>,
}

/// A push to an app's deploy branch, waiting for the handler's verdict.
#[derive(Debug, Clone)]
pub struct Push {
    pub app: AppName,
    /// The branch pushed (e.g. `main`).
    pub branch: String,
    /// The commit the branch pointed at before; all zeros for a new branch.
    pub old_sha: String,
    /// The commit pushed.
    pub new_sha: String,
    pub pusher: Pusher,
    /// The app's bare repository.
    pub repo: PathBuf,
    /// git's quarantine environment (`GIT_OBJECT_DIRECTORY`, ...): run git in
    /// `repo` with these to read the pushed objects before they are accepted.
    pub git_env: Vec<(String, String)>,
}

/// Where the handler writes its output, one line at a time, as it happens.
#[derive(Debug, Clone)]
pub struct Output {
    lines: mpsc::Sender<String>,
}

impl Output {
    pub(crate) fn new(lines: mpsc::Sender<String>) -> Output {
        Output { lines }
    }

    /// Sends one line to the pusher (a line that never arrives, because the
    /// pusher went away, is dropped).
    pub async fn line(&self, text: impl Into<String>) {
        let _ = self.lines.send(text.into()).await;
    }
}

/// Decides a push to a deploy branch. `Ok` accepts it (git then updates the
/// branch); `Err(reason)` rejects it and git leaves the branch as it was.
pub trait DeployHandler: Send + Sync + 'static {
    fn deploy(&self, push: Push, output: Output) -> BoxFuture<'static, Result<(), String>>;
}

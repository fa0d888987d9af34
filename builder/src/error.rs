//! Why a build or a release command did not succeed: what callers act on is
//! a variant (Docker unreachable, timed out, refused, the store failing);
//! every message says what to do.

use std::time::Duration;

use store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Paz's store failed or did not answer.
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Name(#[from] store::NameError),
    /// This host's Docker Engine does not answer, or cannot pull.
    #[error(transparent)]
    Engine(#[from] engine::EngineError),
    /// A Docker Engine call failed (build, push, pull, a container).
    #[error("{0}")]
    Docker(String),
    /// The pushed commit cannot be read or is too large.
    #[error("{0}")]
    Source(String),
    /// No way to build it: no Dockerfile and no buildpack, a bad Procfile.
    #[error("{0}")]
    Plan(String),
    /// The pusher may not build on an image it names.
    #[error("{0}")]
    Denied(String),
    /// The build or the release command ran out of time.
    #[error("{what} took longer than {} s and was stopped", after.as_secs())]
    TimedOut { what: String, after: Duration },
    /// The release command ran and failed.
    #[error("{0}")]
    ReleaseCommand(String),
    /// The app went away while it was built.
    #[error("app {0} was deleted during the build")]
    AppGone(store::AppName),
    /// The build log cannot be written.
    #[error("cannot write the build log: {0}")]
    Log(#[source] std::io::Error),
    /// A build task panicked or was cancelled.
    #[error("the build task failed: {0}")]
    Task(String),
    /// The build failed; with the last lines of its log.
    #[error("{error}\n\nthe last lines of build {build}:\n{tail}")]
    Failed {
        #[source]
        error: Box<BuildError>,
        build: String,
        tail: String,
    },
}

pub(crate) type Result<T, E = BuildError> = std::result::Result<T, E>;

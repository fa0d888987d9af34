//! Why a rollout, a restart or a placement did not happen: what callers act
//! on is a variant (the store unreachable, an instance unhealthy, a wait
//! timed out, a deposed leader); every message says what to do.

use std::time::Duration;

use store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// Paz's store failed or did not answer.
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Name(#[from] store::NameError),
    /// What the deploy names is not there.
    #[error("{0}")]
    NotFound(String),
    /// The release cannot run as it is (its image reference, its unit).
    #[error("{0}")]
    Invalid(String),
    /// A new instance failed to start or keeps crashing.
    #[error("{unit} {reason}")]
    Broken { unit: String, reason: String },
    /// A new instance did not pass its health check in time.
    #[error("{unit} did not pass its health check within {} s{placed}{last}{advice}", after.as_secs(), placed = if *placed { "" } else { " (it was never placed on a machine)" }, last = last_reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Unhealthy {
        unit: String,
        after: Duration,
        placed: bool,
        last_reason: Option<String>,
        /// What the check checked and how to fix it.
        advice: String,
    },
    /// A wait ran out of time.
    #[error("{what} did not happen within {} s: check the agents (`machines:list`) and their logs", after.as_secs())]
    TimedOut { what: String, after: Duration },
    /// The release's `release:` command failed or cannot run here.
    #[error("{0}")]
    ReleasePhase(String),
    /// The image could not be pinned or read.
    #[error("{0}")]
    Image(String),
    /// A record kept changing under a read-modify-write.
    #[error("{0} kept changing while Paz updated it: try again")]
    Contended(String),
    /// This scheduler is no longer the leader; another one writes now.
    #[error("the scheduler's leader key changed: another scheduler leads")]
    Deposed,
    /// The rollout of release `n` failed, and was rolled back.
    #[error("v{n} failed: {reason}")]
    RolledBack {
        n: u64,
        #[source]
        reason: Box<DeployError>,
    },
}

impl DeployError {
    /// The store error behind this one, if that is what it is: the caller
    /// says "Paz's store is unreachable", not "your request is wrong".
    pub fn store_error(&self) -> Option<&StoreError> {
        match self {
            DeployError::Store(error) => Some(error),
            DeployError::RolledBack { reason, .. } => reason.store_error(),
            _ => None,
        }
    }
}

pub(crate) type Result<T, E = DeployError> = std::result::Result<T, E>;

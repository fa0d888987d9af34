//! Why a verb refused or failed; each message is one line that says what to do.

use store::{NameError, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum VerbError {
    #[error("unknown verb `{0}`: run `help` to list the verbs")]
    UnknownVerb(String),
    #[error("usage: {0}")]
    Usage(&'static str),
    /// The caller lacks a right; the message names it.
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Name(#[from] NameError),
    /// The change collides with existing state.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Disk(String),
    /// A rollout or restart failed; `steps` are what it did until then.
    #[error("{}", join(steps, error))]
    Rollout {
        steps: Vec<deployer::Step>,
        #[source]
        error: deployer::DeployError,
    },
}

/// The steps, a line each, then the error.
fn join(steps: &[deployer::Step], error: &deployer::DeployError) -> String {
    let mut lines: Vec<String> = steps.iter().map(ToString::to_string).collect();
    lines.push(error.to_string());
    lines.join("\n").trim().to_string()
}

impl VerbError {
    /// The store failure behind this error, if that is what it is: Paz's
    /// store is unreachable, not the caller's request wrong.
    pub fn store_error(&self) -> Option<&StoreError> {
        match self {
            VerbError::Store(error) => Some(error),
            VerbError::Rollout { error, .. } => error.store_error(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_store_timeout_during_a_rollout_is_the_store_not_the_caller() {
        // What `ps:scale` met when etcd stopped answering mid-rollout.
        let timeout = StoreError::Timeout {
            endpoints: "https://127.0.0.1:2379".into(),
            operation: "get /paz/apps/demo/current".into(),
            timeout: Duration::from_secs(5),
        };
        let error = VerbError::Rollout {
            steps: vec![deployer::Step::Placed {
                instance: "demo-v3-web-2".into(),
                machine: "8c1f2a9e".into(),
            }],
            error: deployer::DeployError::Store(timeout),
        };
        assert!(error.store_error().is_some(), "{error}");
        let said = error.to_string();
        assert!(
            said.starts_with("-----> Starting demo-v3-web-2 on machine 8c1f2a9e\n"),
            "{said}"
        );
        assert!(
            said.contains(
                "did not answer get /paz/apps/demo/current within 5s: check that etcd is running"
            ),
            "{said}"
        );
        // A failed health check is the app's, not the store's.
        let unhealthy = VerbError::Rollout {
            steps: Vec::new(),
            error: deployer::DeployError::Broken {
                unit: "demo-v3-web-2".into(),
                reason: "failed: exit code 1".into(),
            },
        };
        assert!(unhealthy.store_error().is_none());
        assert_eq!(unhealthy.to_string(), "demo-v3-web-2 failed: exit code 1");
    }
}

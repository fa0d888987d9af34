//! The store's error type: every failure says which key or call, and what to do.

use std::time::Duration;

use crate::names::NameError;

/// Why a compare-and-swap did not apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictKind {
    /// create-if-absent found the key already there.
    AlreadyExists,
    /// update-if-unchanged found the key changed since it was read.
    Changed,
    /// update-if-unchanged found the key deleted since it was read.
    Gone,
}

/// Everything that can go wrong talking to the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot reach etcd at {endpoints} within {}s: start etcd or point --etcd at a running one ({detail})", timeout.as_secs())]
    Unreachable {
        endpoints: String,
        timeout: Duration,
        detail: String,
    },
    #[error("etcd at {endpoints} did not answer {operation} within {}s: check that etcd is running and reachable", timeout.as_secs())]
    Timeout {
        endpoints: String,
        operation: String,
        timeout: Duration,
    },
    #[error("etcd refused {operation}: {source}")]
    Etcd {
        operation: String,
        #[source]
        source: etcd_client::Error,
    },
    #[error("{}", conflict_message(*kind, key))]
    Conflict { key: String, kind: ConflictKind },
    #[error(
        "the value at {key} is not what Paz expects ({reason}): fix or delete it with etcdctl"
    )]
    Decode { key: String, reason: String },
    #[error(transparent)]
    InvalidName(#[from] NameError),
    #[error("invalid etcd endpoint `{endpoint}`: use a URL such as http://127.0.0.1:2379")]
    InvalidEndpoint { endpoint: String },
}

fn conflict_message(kind: ConflictKind, key: &str) -> String {
    match kind {
        ConflictKind::AlreadyExists => format!("{key} already exists"),
        ConflictKind::Changed => {
            format!("{key} was changed by someone else since it was read: read it again and retry")
        }
        ConflictKind::Gone => {
            format!("{key} was deleted by someone else since it was read")
        }
    }
}

impl StoreError {
    /// The conflict kind, if this is a compare-and-swap conflict.
    pub fn conflict(&self) -> Option<ConflictKind> {
        match self {
            StoreError::Conflict { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

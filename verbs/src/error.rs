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
}

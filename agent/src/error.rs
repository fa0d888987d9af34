//! Why the agent cannot start or go on: what callers act on is a variant
//! (Docker unreachable, the store failing, the machine id unwritable).

use std::path::PathBuf;

use store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Paz's store failed or did not answer.
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Name(#[from] store::NameError),
    /// This host's Docker Engine does not answer.
    #[error(transparent)]
    Engine(#[from] engine::EngineError),
    /// The machine id cannot be read or written under the data dir.
    #[error("cannot keep the machine id in {}: {source}: choose another --data-dir", dir.display())]
    MachineId {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// This machine's record cannot be registered.
    #[error("cannot register this machine: {0}")]
    Register(#[source] StoreError),
    /// The agent's endpoint cannot listen.
    #[error("cannot listen on --agent-listen {}: {source}: choose another address", address.map_or_else(|| "(the advertised address, a free port)".to_string(), |a| a.to_string()))]
    Listen {
        address: Option<std::net::SocketAddr>,
        #[source]
        source: std::io::Error,
    },
    /// A sidekick's `--key` is not a services key.
    #[error("{0}")]
    InvalidKey(String),
}

pub(crate) type Result<T, E = AgentError> = std::result::Result<T, E>;

//! File descriptors shared by the roles of one process: the limit raised at
//! start, and each public listener's connection cap taken from it, with a
//! reserve kept so that a flood of one role never stops the others.

/// Raises the open-file limit to the hard limit: every client connection
/// holds a descriptor.
pub(crate) fn raise_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(error) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(%error, soft, hard, "cannot raise the open-file limit");
            }
        }
    }
}

/// The current open-file limit (after [`raise_limit`]).
pub(crate) fn limit() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(soft, _)| soft)
}

/// Connection caps for a process's public listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Caps {
    /// Client connections to the proxy (each holds up to two descriptors:
    /// the client's and a backend's).
    pub(crate) proxy: usize,
    /// Connections to the registry.
    pub(crate) registry: usize,
}

/// What `paz proxy` keeps for itself (etcd, logs, the listeners).
const PROXY_ALONE_RESERVE: u64 = 32;

/// Caps for `paz proxy`, alone in its process: half of what is left after
/// a small reserve, as each connection may hold two descriptors.
pub(crate) fn proxy_alone(limit: u64) -> usize {
    to_usize((limit.saturating_sub(PROXY_ALONE_RESERVE) / 2).max(1))
}

/// Caps for `paz up` and `paz server`, where SSH (and the git processes it
/// runs), the builder, the agent, etcd and Docker share the limit: the proxy
/// may use half the descriptors, the registry an eighth, and the rest (at
/// least three eighths) is kept for everything else.
pub(crate) fn shared(limit: u64) -> Caps {
    Caps {
        proxy: to_usize((limit / 4).max(1)),
        registry: to_usize((limit / 8).max(1)),
    }
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_process_keeps_three_eighths_for_ssh_and_the_rest() {
        let caps = shared(1024);
        assert_eq!(
            caps,
            Caps {
                proxy: 256,
                registry: 128
            }
        );
        let held = 2 * caps.proxy as u64 + caps.registry as u64;
        assert_eq!(1024 - held, 384);
    }

    #[test]
    fn the_proxy_alone_keeps_a_small_reserve() {
        assert_eq!(proxy_alone(1024), 496);
        assert_eq!(proxy_alone(48), 8);
        assert_eq!(proxy_alone(10), 1);
    }
}

//! The shared harness of Paz's integration tests: a real etcd per test process,
//! the real Docker Engine, the real `git` and `ssh` clients, and guards that
//! clean up what a test made, also when it panics.
//!
//! Nothing here is a fake: a test that needs a service it cannot reach fails
//! with a message saying how to start it (`scripts/test` does).

#![forbid(unsafe_code)]

pub mod docker;
pub mod etcd;
pub mod git;
pub mod link;
pub mod pebble;
pub mod process;
pub mod temp;
pub mod verbs;

pub use docker::{busybox_image, docker, DockerCleanup, BUSYBOX_IMAGE};
pub use etcd::{own_etcd, shared_etcd, test_store, OwnEtcd};
pub use git::{git, SshIdentity};
pub use link::Link;
pub use process::ChildGuard;
pub use temp::temp_dir;
pub use verbs::admin_verbs;

/// Sends `tracing` output of the code under test to the test's captured output.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Checks `check` every 200 ms until it gives a value, and returns it; fails
/// the test, naming `what`, when `within` passes first. For conditions that
/// Paz makes true by itself (an instance running, a key gone), in place of a
/// fixed sleep.
pub async fn eventually<T>(
    what: &str,
    within: std::time::Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not happen within {} s",
            within.as_secs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// [`eventually`] for blocking code (a `std::thread` test or helper): checks
/// `check` every 200 ms until it gives a value, and returns it; fails the
/// test, naming `what`, when `within` passes first.
pub fn eventually_blocking<T>(
    what: &str,
    within: std::time::Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not happen within {} s",
            within.as_secs()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

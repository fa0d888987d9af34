//! A real etcd for tests: one shared per test process, with a unique key prefix
//! per test, or a private one for tests that stop and restart it.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use store::{LocalEtcd, Store, StoreConfig};
use tokio::sync::OnceCell;

use crate::temp::temp_dir;

/// The etcd shared by the tests of this process. It is never dropped: it dies
/// with the process (the kernel kills it when the process exits).
#[derive(Debug)]
pub struct SharedEtcd {
    _dir: tempfile::TempDir,
    etcd: LocalEtcd,
}

impl SharedEtcd {
    pub fn url(&self) -> String {
        self.etcd.client_url()
    }
}

/// Starts the shared etcd on first use.
pub async fn shared_etcd() -> &'static SharedEtcd {
    static SHARED: OnceCell<SharedEtcd> = OnceCell::const_new();
    SHARED
        .get_or_init(|| async {
            let dir = temp_dir();
            let etcd = LocalEtcd::start(&dir.path().join("etcd"))
                .await
                .unwrap_or_else(|error| panic!("cannot start etcd for tests: {error}"));
            SharedEtcd { _dir: dir, etcd }
        })
        .await
}

/// A key prefix no other test uses, e.g. `/paz-test/watch-123-1`.
pub fn unique_prefix(test_name: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    format!(
        "/paz-test/{test_name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A store on the shared etcd under a prefix of this test's own.
pub async fn test_store(test_name: &str) -> Store {
    let url = shared_etcd().await.url();
    connect(&url, &unique_prefix(test_name)).await
}

/// Connects to `url` under `prefix` with a short timeout.
pub async fn connect(url: &str, prefix: &str) -> Store {
    connect_with_tls(url, prefix, None).await
}

/// As [`connect`], presenting the client certificate in `tls_dir` (the
/// `etcd-tls` of a `paz up` data dir).
pub async fn connect_with_tls(url: &str, prefix: &str, tls_dir: Option<&std::path::Path>) -> Store {
    let mut config = StoreConfig::new(vec![url.to_string()]);
    config.prefix = prefix.to_string();
    config.tls = tls_dir.map(store::TlsFiles::in_dir);
    config.timeout = Duration::from_secs(3);
    Store::connect(config)
        .await
        .unwrap_or_else(|error| panic!("cannot connect to the test etcd: {error}"))
}

/// An etcd of the test's own, which it may stop, kill and restart.
#[derive(Debug)]
pub struct OwnEtcd {
    pub etcd: LocalEtcd,
    _dir: tempfile::TempDir,
}

/// Starts an etcd only this test uses.
pub async fn own_etcd() -> OwnEtcd {
    let dir = temp_dir();
    let etcd = LocalEtcd::start(&dir.path().join("etcd"))
        .await
        .unwrap_or_else(|error| panic!("cannot start etcd for the test: {error}"));
    OwnEtcd { etcd, _dir: dir }
}

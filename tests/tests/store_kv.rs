//! The store against a real etcd: typed records, listings, and compare-and-swap
//! conflicts as typed errors.

use store::records::{App, Release, ReleaseCause, ReleaseStatus};
use store::{AppName, ConflictKind, StoreError};

fn app(name: &str) -> App {
    App::new(AppName::new(name).unwrap(), 1_700_000_000)
}

#[tokio::test]
async fn typed_records_round_trip_and_list_skips_releases() {
    let store = tests::test_store("kv-round-trip").await;
    let keys = store.keys().clone();
    let web = AppName::new("web").unwrap();
    store.put(&keys.app(&web), &app("web")).await.unwrap();
    store
        .put(&keys.app(&AppName::new("api").unwrap()), &app("api"))
        .await
        .unwrap();
    let release = Release {
        n: 1,
        image: "127.0.0.1:5000/web@sha256:abc".to_string(),
        git_sha: Some("0123abcd".to_string()),
        env: Default::default(),
        created_at: 1,
        by: "admin".to_string(),
        cause: ReleaseCause::Push,
        status: ReleaseStatus::Active,
        processes: Default::default(),
        release_command: None,
        source: None,
        exposed_ports: Vec::new(),
        resources: Default::default(),
        cron: Vec::new(),
    };
    store.put(&keys.release(&web, 1), &release).await.unwrap();
    store.put(&keys.current(&web), &1).await.unwrap();

    let read = store.get(&keys.app(&web)).await.unwrap().unwrap();
    assert_eq!(read.value, app("web"));
    assert_eq!(
        store
            .get(&keys.release(&web, 1))
            .await
            .unwrap()
            .unwrap()
            .value,
        release
    );
    assert_eq!(
        store.get(&keys.current(&web)).await.unwrap().unwrap().value,
        1
    );

    let apps = store.list(&keys.apps()).await.unwrap();
    let names: Vec<&str> = apps.entries.iter().map(|e| e.value.name.as_str()).collect();
    assert_eq!(names, ["api", "web"], "releases and current are not apps");
    assert!(apps.invalid.is_empty());
    assert!(store
        .get(&keys.app(&AppName::new("nope").unwrap()))
        .await
        .unwrap()
        .is_none());
}

/// Writes `value` at `key` with the real `etcdctl`, as an operator might.
fn etcdctl_put(url: &str, key: &str, value: &str) {
    let output = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", url, "put", key, value])
        .output()
        .expect("cannot run etcdctl: run scripts/test, which installs etcd-client");
    assert!(output.status.success(), "etcdctl put failed: {output:?}");
}

#[tokio::test]
async fn a_value_that_is_not_a_record_is_reported_with_its_key() {
    let store = tests::test_store("kv-decode").await;
    let keys = store.keys().clone();
    store
        .put(&keys.app(&AppName::new("good").unwrap()), &app("good"))
        .await
        .unwrap();
    let broken = format!("{}/apps/broken", keys.root());
    etcdctl_put(&tests::shared_etcd().await.url(), &broken, "not json");

    let listing = store.list(&keys.apps()).await.unwrap();
    assert_eq!(listing.entries.len(), 1, "the good app is still listed");
    assert_eq!(listing.invalid.len(), 1);
    assert_eq!(listing.invalid[0].0, broken);

    let error = store
        .get(&keys.app(&AppName::new("broken").unwrap()))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Decode { .. }));
    assert!(
        error
            .to_string()
            .starts_with(&format!("the value at {broken} is not what Paz expects")),
        "{error}"
    );
}

#[tokio::test]
async fn create_if_absent_conflicts_when_the_key_exists() {
    let store = tests::test_store("kv-create").await;
    let key = store.keys().app(&AppName::new("web").unwrap());
    store.create(&key, &app("web")).await.unwrap();
    let error = store.create(&key, &app("web")).await.unwrap_err();
    assert_eq!(
        error.conflict(),
        Some(ConflictKind::AlreadyExists),
        "{error}"
    );
    assert!(
        error.to_string().ends_with("/apps/web already exists"),
        "{error}"
    );
}

#[tokio::test]
async fn update_if_unchanged_conflicts_when_someone_else_wrote_first() {
    let store = tests::test_store("kv-update").await;
    let key = store.keys().app(&AppName::new("web").unwrap());
    store.create(&key, &app("web")).await.unwrap();
    let read = store.get(&key).await.unwrap().unwrap();

    // Two writers read the same version; the first wins, the second gets a conflict.
    let mut first = read.value.clone();
    first.port = Some(8080);
    store.update(&key, read.mod_revision, &first).await.unwrap();
    let mut second = read.value.clone();
    second.port = Some(9090);
    let error = store
        .update(&key, read.mod_revision, &second)
        .await
        .unwrap_err();
    assert_eq!(error.conflict(), Some(ConflictKind::Changed), "{error}");
    assert_eq!(
        store.get(&key).await.unwrap().unwrap().value.port,
        Some(8080)
    );

    let latest = store.get(&key).await.unwrap().unwrap();
    store.delete(&key).await.unwrap();
    let error = store
        .update(&key, latest.mod_revision, &second)
        .await
        .unwrap_err();
    assert_eq!(error.conflict(), Some(ConflictKind::Gone), "{error}");
    assert!(
        store.get(&key).await.unwrap().is_none(),
        "a failed update writes nothing"
    );
}

#[tokio::test]
async fn a_transaction_is_all_or_nothing() {
    let store = tests::test_store("kv-txn").await;
    let keys = store.keys().clone();
    let web = AppName::new("web").unwrap();
    store.put(&keys.current(&web), &1).await.unwrap();
    let current = store.get(&keys.current(&web)).await.unwrap().unwrap();
    store.put(&keys.current(&web), &2).await.unwrap();

    // The release write must not happen when the `current` condition fails.
    let error = store
        .transaction()
        .require_unchanged(&keys.current(&web), current.mod_revision)
        .put(&keys.app(&web), &app("web"))
        .put(&keys.current(&web), &3)
        .commit()
        .await
        .unwrap_err();
    assert!(matches!(
        error,
        StoreError::Conflict {
            kind: ConflictKind::Changed,
            ..
        }
    ));
    assert!(store.get(&keys.app(&web)).await.unwrap().is_none());
    assert_eq!(
        store.get(&keys.current(&web)).await.unwrap().unwrap().value,
        2
    );
}

#[tokio::test]
async fn an_unreachable_etcd_fails_fast_with_a_clear_message() {
    // A port nothing listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = store::StoreConfig::new(vec![format!("127.0.0.1:{port}")]);
    config.timeout = std::time::Duration::from_secs(2);
    let started = std::time::Instant::now();
    let error = store::Store::connect(config).await.unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, StoreError::Unreachable { .. }), "{message}");
    assert!(
        message.starts_with(&format!("cannot reach etcd at http://127.0.0.1:{port} within 2s: start etcd or point --etcd at a running one")),
        "{message}"
    );
    // Not a speed assertion: a hang would never return at all; this bounds it loosely.
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

#[tokio::test]
async fn calls_on_a_store_whose_etcd_died_fail_with_a_timeout_or_refusal() {
    let mut own = tests::own_etcd().await;
    let store = tests::etcd::connect(&own.etcd.client_url(), "/paz").await;
    let key = store.keys().app(&AppName::new("web").unwrap());
    store.put(&key, &app("web")).await.unwrap();
    own.etcd.kill();
    let error = store.get(&key).await.unwrap_err();
    assert!(
        matches!(error, StoreError::Timeout { .. } | StoreError::Etcd { .. }),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains("/paz/apps/web"),
        "the error names the call: {message}"
    );
}

#[tokio::test]
async fn invalid_endpoints_are_refused_before_connecting() {
    let error = store::Store::connect(store::StoreConfig::new(vec!["ftp://x:1".into()]))
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("invalid etcd endpoint `ftp://x:1`"),
        "{error}"
    );
}

#[tokio::test]
async fn an_etcd_that_accepts_but_never_answers_gives_a_timeout_not_a_hang() {
    let own = tests::own_etcd().await;
    let pid = nix::unistd::Pid::from_raw(own.etcd.pid().unwrap() as i32);
    // A stopped process: the kernel still accepts connections, nobody answers.
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let mut config = store::StoreConfig::new(vec![own.etcd.client_url()]);
    config.timeout = std::time::Duration::from_secs(2);
    let error = store::Store::connect(config).await.unwrap_err();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    assert!(matches!(error, StoreError::Unreachable { .. }), "{error}");
    assert!(error.to_string().contains("within 2s"), "{error}");
}

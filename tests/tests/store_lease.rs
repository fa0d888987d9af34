//! Leases against a real etcd: a key registered by a process lives exactly as
//! long as that process.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use store::{AppName, Store, WatchEvent};

async fn wait_until_gone<T: store::Record>(store: &Store, key: &store::Key<T>, within: Duration) {
    tests::eventually(&format!("{key} going"), within, async || {
        store.get(key).await.unwrap().is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_key_registered_by_a_process_vanishes_after_the_process_is_killed() {
    let url = tests::shared_etcd().await.url();
    let prefix = tests::etcd::unique_prefix("lease-owner-dies");
    let store = tests::etcd::connect(&url, &prefix).await;
    let key = store
        .keys()
        .service(&AppName::new("web").unwrap(), 1, "1")
        .unwrap();

    let mut holder = tests::ChildGuard::spawn(
        Command::new(env!("CARGO_BIN_EXE_lease-holder"))
            .args([url.as_str(), prefix.as_str(), "web", "2"])
            .stdout(Stdio::piped()),
    );
    let mut line = String::new();
    BufReader::new(holder.child().stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "registered");
    assert_eq!(
        store.get(&key).await.unwrap().unwrap().value,
        "127.0.0.1:5000"
    );

    // Still there well past its TTL while the owner lives: the lease is kept alive.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        store.get(&key).await.unwrap().is_some(),
        "kept alive past the 2s TTL"
    );

    let mut watch = store.watch(&store.keys().services());
    assert!(matches!(
        watch.next_event().await,
        Some(WatchEvent::Snapshot { .. })
    ));
    holder.signal(nix::sys::signal::Signal::SIGKILL);
    let event = tokio::time::timeout(Duration::from_secs(20), watch.next_event())
        .await
        .expect("the key was not deleted within 20s of its owner's death");
    assert!(
        matches!(&event, Some(WatchEvent::Delete { key: deleted, .. }) if deleted == key.as_str()),
        "{event:?}"
    );
    assert!(store.get(&key).await.unwrap().is_none());
}

#[tokio::test]
async fn dropping_a_registration_deletes_its_key_without_waiting_for_the_ttl() {
    let store = tests::test_store("lease-drop").await;
    let key = store.keys().machine("m1").unwrap();
    let machine = store::records::Machine {
        addr: "10.0.0.1".to_string(),
        metadata: Default::default(),
        started_at: 1,
        endpoint: None,
    };
    let registration = store
        .register(&key, &machine, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(store.get(&key).await.unwrap().unwrap().value, machine);
    drop(registration);
    // Well under the 60s TTL: the lease was revoked, not left to expire.
    wait_until_gone(&store, &key, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_registration_writes_its_key_again_after_its_lease_is_lost() {
    let own = tests::own_etcd().await;
    let url = own.etcd.client_url();
    let store = tests::etcd::connect(&url, "/paz").await;
    let key = store
        .keys()
        .service(&AppName::new("web").unwrap(), 3, "1")
        .unwrap();
    let _registration = store
        .register(&key, &"10.0.0.2:8080".to_string(), Duration::from_secs(2))
        .await
        .unwrap();

    // The lease ends under the owner's feet (as when etcd could not be reached for a TTL).
    let leases = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &url, "lease", "list"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&leases.stdout).to_string();
    // `etcdctl lease list` prints "found N leases" and then one hex id a line.
    let lease_id = listed
        .lines()
        .find(|line| !line.is_empty() && line.chars().all(|c| c.is_ascii_hexdigit()))
        .unwrap_or_else(|| panic!("no lease in `etcdctl lease list`: {listed}"));
    let revoked = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &url, "lease", "revoke", lease_id.trim()])
        .output()
        .unwrap();
    assert!(revoked.status.success(), "{revoked:?}");
    wait_until_gone(&store, &key, Duration::from_secs(5)).await;

    let value = tests::eventually(
        "the registration to come back",
        Duration::from_secs(20),
        async || store.get(&key).await.unwrap(),
    )
    .await;
    assert_eq!(value.value, "10.0.0.2:8080");
}

#[tokio::test]
async fn a_lock_waits_on_a_watch_for_its_holder_to_let_go() {
    let store = tests::test_store("lease-lock").await;
    let key = store.keys().leader("deploy-demo").unwrap();
    let first = store.grant_lease(Duration::from_secs(30)).await.unwrap();
    store
        .acquire(&key, "first", &first, || async {
            panic!("a free lock is taken at once")
        })
        .await
        .unwrap();
    let (told, mut waited) = tokio::sync::oneshot::channel();
    let second = {
        let (store, key) = (store.clone(), key.clone());
        tokio::spawn(async move {
            let lease = store.grant_lease(Duration::from_secs(30)).await.unwrap();
            store
                .acquire(&key, "second", &lease, || async move {
                    let _ = told.send(());
                })
                .await
                .unwrap();
            lease
        })
    };
    // The second says that it waits, and waits while the first holds it.
    tokio::time::timeout(Duration::from_secs(10), &mut waited)
        .await
        .expect("the second waiter says it waits")
        .unwrap();
    assert_eq!(store.get(&key).await.unwrap().unwrap().value, "first");
    assert!(!second.is_finished());
    // The first lets go (its lease goes): the second holds it at once.
    drop(first);
    let _lease = tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("the lock passes on when its holder lets go")
        .unwrap();
    assert_eq!(store.get(&key).await.unwrap().unwrap().value, "second");
}

#[tokio::test]
async fn wait_until_follows_one_key_and_not_its_neighbours() {
    let store = tests::test_store("wait-until").await;
    let app = AppName::new("demo").unwrap();
    let one = store.keys().service(&app, 1, "1").unwrap();
    let ten = store.keys().service(&app, 1, "10").unwrap();
    let waiting = {
        let (store, one) = (store.clone(), one.clone());
        tokio::spawn(async move { store.wait_until(&one, |addr| addr.is_some()).await })
    };
    // A key that starts with it is another key.
    store
        .put(&ten, &"10.0.0.10:5000".to_string())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "it woke for another key");
    store.put(&one, &"10.0.0.1:5000".to_string()).await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("it sees its key written")
        .unwrap();
    assert_eq!(seen.as_deref(), Some("10.0.0.1:5000"));
    // Already true: it returns at once, from the key's snapshot.
    let now = store.wait_until(&ten, |addr| addr.is_some()).await;
    assert_eq!(now.as_deref(), Some("10.0.0.10:5000"));
}

//! Watches against a real etcd: typed events, exactly once and in order, across
//! an etcd restart and across compaction of the history the watch missed.

use std::time::Duration;

use store::{SnapshotReason, Store, Watch, WatchEvent};

/// The next event, or a panic naming what the test waited for.
async fn next<T: std::fmt::Debug>(watch: &mut Watch<T>, waiting_for: &str) -> WatchEvent<T> {
    tokio::time::timeout(Duration::from_secs(30), watch.next_event())
        .await
        .unwrap_or_else(|_| panic!("no watch event within 30s while waiting for {waiting_for}"))
        .expect("the watch ended")
}

fn describe(event: &WatchEvent<String>) -> String {
    match event {
        WatchEvent::Put { key, value, .. } => format!("put {} {value}", short(key)),
        WatchEvent::Delete { key, .. } => format!("delete {}", short(key)),
        WatchEvent::Invalid { key, .. } => format!("invalid {}", short(key)),
        WatchEvent::Snapshot {
            entries, reason, ..
        } => {
            let keys: Vec<&str> = entries.iter().map(|e| short(&e.key)).collect();
            format!("snapshot {reason:?} [{}]", keys.join(" "))
        }
    }
}

fn short(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

async fn put_unit(store: &Store, name: &str, text: &str) {
    store
        .put(&store.keys().unit(name).unwrap(), &text.to_string())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_watch_delivers_each_event_once_and_in_order_across_an_etcd_restart() {
    tests::init_tracing();
    let mut own = tests::own_etcd().await;
    let url = own.etcd.client_url();
    // The watcher reaches etcd through a link the test can cut, so that changes
    // can be made while the watcher is certainly away.
    let link = tests::Link::start(own.etcd.client_addr()).await;
    let watcher_store = tests::etcd::connect(&link.url(), "/paz").await;
    let mut watch = watcher_store.watch(&watcher_store.keys().units());
    assert_eq!(
        describe(&next(&mut watch, "the snapshot").await),
        "snapshot Initial []"
    );

    let writer = tests::etcd::connect(&url, "/paz").await;
    put_unit(&writer, "a.service", "1").await;
    put_unit(&writer, "b.service", "1").await;
    assert_eq!(describe(&next(&mut watch, "a").await), "put a.service 1");
    assert_eq!(describe(&next(&mut watch, "b").await), "put b.service 1");

    // The watcher loses etcd; etcd is stopped and started again on the same data
    // dir; changes are written; only then can the watcher reconnect.
    link.cut();
    own.etcd.stop().await;
    own.etcd.restart().await.unwrap();
    let writer = tests::etcd::connect(&url, "/paz").await;
    put_unit(&writer, "c.service", "1").await;
    put_unit(&writer, "a.service", "2").await;
    writer
        .delete(&writer.keys().unit("b.service").unwrap())
        .await
        .unwrap();
    put_unit(&writer, "d.service", "1").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    link.restore();

    let mut seen = Vec::new();
    let mut last_revision = 0;
    while seen.last().map(String::as_str) != Some("put d.service 1") {
        let event = next(&mut watch, "the changes made while the watcher was away").await;
        assert!(
            event.revision() > last_revision,
            "events arrive in revision order"
        );
        last_revision = event.revision();
        seen.push(describe(&event));
    }
    assert_eq!(
        seen,
        [
            "put c.service 1",
            "put a.service 2",
            "delete b.service",
            "put d.service 1"
        ]
    );
    // Nothing is repeated after the last event either.
    put_unit(&writer, "e.service", "1").await;
    assert_eq!(describe(&next(&mut watch, "e").await), "put e.service 1");
}

#[tokio::test]
async fn a_watch_whose_history_was_compacted_reads_the_prefix_again_and_says_so() {
    let own = tests::own_etcd().await;
    let store = tests::etcd::connect(&own.etcd.client_url(), "/paz").await;
    put_unit(&store, "a.service", "1").await;
    let listing = store.list(&store.keys().units()).await.unwrap();
    put_unit(&store, "b.service", "1").await;
    store
        .delete(&store.keys().unit("a.service").unwrap())
        .await
        .unwrap();
    put_unit(&store, "c.service", "1").await;
    store
        .compact(store.revision().await.unwrap())
        .await
        .unwrap();

    // Resuming after the listing is impossible now: its history is gone.
    let mut watch = store.watch_from(&store.keys().units(), listing.revision + 1);
    let event = next(&mut watch, "the snapshot after compaction").await;
    assert_eq!(describe(&event), "snapshot Compacted [b.service c.service]");
    assert!(matches!(
        event,
        WatchEvent::Snapshot {
            reason: SnapshotReason::Compacted,
            ..
        }
    ));
    put_unit(&store, "d.service", "1").await;
    assert_eq!(describe(&next(&mut watch, "d").await), "put d.service 1");
}

#[tokio::test]
async fn a_watch_on_apps_sees_apps_only_and_flags_invalid_values() {
    let store = tests::test_store("watch-apps").await;
    let keys = store.keys().clone();
    let web = store::AppName::new("web").unwrap();
    let mut watch = store.watch(&keys.apps());
    assert!(matches!(
        next(&mut watch, "snapshot").await,
        WatchEvent::Snapshot { .. }
    ));

    store.put(&keys.release(&web, 1), &release()).await.unwrap();
    store.put(&keys.current(&web), &1).await.unwrap();
    store
        .put(&keys.app(&web), &store::records::App::new(web.clone(), 1))
        .await
        .unwrap();
    match next(&mut watch, "the app").await {
        WatchEvent::Put { key, value, .. } => {
            assert_eq!(key, keys.app(&web).as_str());
            assert_eq!(value.name, web);
        }
        other => panic!("expected the app, got {other:?}"),
    }

    let output = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &tests::shared_etcd().await.url(), "put"])
        .arg(keys.app(&web).as_str())
        .arg("{broken")
        .output()
        .unwrap();
    assert!(output.status.success());
    match next(&mut watch, "the invalid value").await {
        WatchEvent::Invalid { key, reason, .. } => {
            assert_eq!(key, keys.app(&web).as_str());
            assert!(!reason.is_empty());
        }
        other => panic!("expected an invalid event, got {other:?}"),
    }
}

fn release() -> store::records::Release {
    store::records::Release {
        n: 1,
        image: "r@sha256:0".to_string(),
        git_sha: None,
        env: Default::default(),
        created_at: 1,
        by: "test".to_string(),
        cause: store::records::ReleaseCause::Push,
        status: store::records::ReleaseStatus::Active,
        processes: Default::default(),
        release_command: None,
        source: None,
        exposed_ports: Vec::new(),
        resources: Default::default(),
        cron: Vec::new(),
    }
}

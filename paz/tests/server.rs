//! `paz server` against a shared etcd: it refuses to run without one, two of
//! them elect one scheduler, and when the leader is killed the other places
//! units from then on.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::paz;
use store::records::Machine;
use tests::ChildGuard;

fn server(etcd: &str, data: &std::path::Path) -> ChildGuard {
    ChildGuard::spawn(
        paz()
            .args([
                "server",
                "--etcd",
                etcd,
                "--data-dir",
                data.to_str().unwrap(),
            ])
            .args([
                "--ssh-listen",
                "127.0.0.1:0",
                "--registry-listen",
                "127.0.0.1:0",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit()),
    )
}

async fn leader(store: &store::Store) -> Option<String> {
    store
        .get(&store.keys().leader("scheduler").unwrap())
        .await
        .unwrap()
        .map(|v| v.value)
}

async fn placed(store: &store::Store, unit: &str, seconds: u64) -> String {
    tests::eventually(
        &format!("{unit} to be placed"),
        Duration::from_secs(seconds),
        async || {
            store
                .get(&store.keys().schedule(unit).unwrap())
                .await
                .unwrap()
                .map(|machine| machine.value)
        },
    )
    .await
}

async fn submit(store: &store::Store, name: &str) {
    let text = "[Service]\nExecStart=/usr/bin/docker run --rm --name x paz/busybox\n".to_string();
    store
        .put(&store.keys().unit(name).unwrap(), &text)
        .await
        .unwrap();
}

#[test]
fn paz_server_needs_a_shared_etcd() {
    let data = tests::temp_dir();
    let output = paz()
        .args(["server", "--data-dir", data.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("paz server needs --etcd URL"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_leading_server_is_killed_the_other_places_units() {
    let own = tests::own_etcd().await;
    let url = own.etcd.client_url();
    let store = tests::etcd::connect(&url, "/paz").await;
    let (data_a, data_b) = (tests::temp_dir(), tests::temp_dir());
    let mut a = server(&url, data_a.path());
    let first = tests::eventually("a scheduler to lead", Duration::from_secs(10), async || {
        leader(&store).await
    })
    .await;
    assert!(first.ends_with(&format!(":{}", a.id())), "{first}");
    let _b = server(&url, data_b.path());
    let _machine = store
        .register(
            &store.keys().machine("m1").unwrap(),
            &Machine {
                addr: "127.0.0.1".into(),
                metadata: Default::default(),
                started_at: 1,
                endpoint: None,
            },
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    submit(&store, "one-v1-web-1.service").await;
    assert_eq!(placed(&store, "one-v1-web-1.service", 10).await, "m1");

    // Killed: no goodbye; its leader key lives until its lease (10 s) ends.
    a.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = a.wait_timeout(Duration::from_secs(5));
    submit(&store, "two-v1-web-1.service").await;
    assert_eq!(
        placed(&store, "two-v1-web-1.service", 30).await,
        "m1",
        "the second server took over placement"
    );
    let now = leader(&store).await.expect("a scheduler leads");
    assert_ne!(now, first);
}

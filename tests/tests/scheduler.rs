//! The scheduler against a real etcd: placement rules, spreading, a lost
//! machine's units placed again, and a second scheduler taking over.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use deployer::{Scheduler, SchedulerConfig};
use store::records::Machine;
use store::Store;

async fn machine(store: &Store, id: &str, metadata: &[(&str, &str)]) -> store::Registration {
    let record = Machine {
        addr: "127.0.0.1".to_string(),
        metadata: metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        started_at: 1,
        endpoint: None,
    };
    store
        .register(
            &store.keys().machine(id).unwrap(),
            &record,
            Duration::from_secs(5),
        )
        .await
        .unwrap()
}

async fn submit(store: &Store, name: &str, xfleet: &str) {
    let text = format!(
        "[Service]\nExecStart=/usr/bin/docker run --rm --name {} paz/busybox httpd -f\n\n[X-Fleet]\n{xfleet}\n",
        name.trim_end_matches(".service")
    );
    store
        .put(&store.keys().unit(name).unwrap(), &text)
        .await
        .unwrap();
}

fn start(store: &Store, candidate: &str) -> tokio::task::JoinHandle<()> {
    let scheduler = Scheduler::new(
        store.clone(),
        SchedulerConfig {
            candidate: candidate.to_string(),
            lease_ttl: Duration::from_secs(2),
        },
    );
    tokio::spawn(scheduler.run(std::future::pending()))
}

/// Who holds the scheduler's leader key.
async fn leader(store: &Store) -> Option<String> {
    store
        .get(&store.keys().leader("scheduler").unwrap())
        .await
        .unwrap()
        .map(|v| v.value)
}

async fn schedule(store: &Store) -> BTreeMap<String, String> {
    let prefix = store.keys().schedules();
    store
        .list(&prefix)
        .await
        .unwrap()
        .entries
        .into_iter()
        .map(|e| (prefix.child_name(&e.key).to_string(), e.value))
        .collect()
}

async fn unplaced(store: &Store) -> BTreeMap<String, String> {
    let prefix = store.keys().unplaced_all();
    store
        .list(&prefix)
        .await
        .unwrap()
        .entries
        .into_iter()
        .map(|e| (prefix.child_name(&e.key).to_string(), e.value))
        .collect()
}

/// Waits up to 10 s for the placements to satisfy `check`.
async fn until(
    store: &Store,
    what: &str,
    check: impl Fn(&BTreeMap<String, String>) -> bool,
) -> BTreeMap<String, String> {
    tests::eventually(what, Duration::from_secs(10), async || {
        let now = schedule(store).await;
        check(&now).then_some(now)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn units_are_placed_by_the_rules_and_a_lost_machines_units_move() {
    let store = tests::test_store("scheduler-rules").await;
    let a = machine(&store, "aaaa", &[("disk", "ssd")]).await;
    let _b = machine(&store, "bbbb", &[]).await;
    let _c = machine(&store, "cccc", &[]).await;
    for i in 1..=3 {
        let name = format!("demo-v1-web-{i}.service");
        submit(&store, &name, "Conflicts=demo-v1-web-*.service").await;
        submit(
            &store,
            &format!("demo-v1-web-{i}-announce.service"),
            &format!("MachineOf={name}"),
        )
        .await;
    }
    submit(&store, "fast-v1-web-1.service", "MachineMetadata=disk=ssd").await;
    submit(&store, "nvme-v1-web-1.service", "MachineMetadata=disk=nvme").await;
    submit(&store, "four-v1-web-1.service", "").await;
    for i in 1..=3 {
        submit(&store, &format!("move-v1-web-{i}.service"), "").await;
    }
    let _leader = start(&store, "one");

    let placed = until(&store, "every placeable unit to be placed", |s| {
        s.len() == 11
    })
    .await;
    let moves: BTreeSet<&String> = (1..=3)
        .map(|i| &placed[&format!("move-v1-web-{i}.service")])
        .collect();
    assert_eq!(
        moves.len(),
        3,
        "one app's instances spread without rules: {placed:?}"
    );
    let webs: BTreeSet<&String> = (1..=3)
        .map(|i| &placed[&format!("demo-v1-web-{i}.service")])
        .collect();
    assert_eq!(webs.len(), 3, "Conflicts spread the instances: {placed:?}");
    for i in 1..=3 {
        assert_eq!(
            placed[&format!("demo-v1-web-{i}-announce.service")],
            placed[&format!("demo-v1-web-{i}.service")],
            "a sidekick goes where its unit is"
        );
    }
    assert_eq!(placed["fast-v1-web-1.service"], "aaaa");
    assert!(!placed.contains_key("nvme-v1-web-1.service"));
    let reasons = unplaced(&store).await;
    assert!(
        reasons["nvme-v1-web-1.service"].contains("MachineMetadata"),
        "{reasons:?}"
    );
    // units:list says why.
    let (context, admin, _data) = tests::admin_verbs(&store);
    let listed = verbs::run(&context, &admin, "units:list", &["nvme".to_string()], b"")
        .await
        .unwrap()
        .text;
    assert!(
        listed.contains("nvme-v1-web-1.service  -  unplaced  (no live machine has the MachineMetadata it asks for)"),
        "{listed}"
    );

    // An invalid unit file is reported, not placed.
    store
        .put(
            &store.keys().unit("bad.service").unwrap(),
            &"[Service]\nExecStart=/bin/sh -c true\n".to_string(),
        )
        .await
        .unwrap();
    tests::eventually("bad.service unplaced", Duration::from_secs(5), async || {
        unplaced(&store)
            .await
            .contains_key("bad.service")
            .then_some(())
    })
    .await;
    assert!(
        unplaced(&store).await["bad.service"].contains("invalid"),
        "{:?}",
        unplaced(&store).await
    );

    // Machine aaaa goes: what ran there runs elsewhere, except what cannot.
    let on_a: Vec<String> = placed
        .iter()
        .filter(|(_, m)| m.as_str() == "aaaa")
        .map(|(u, _)| u.clone())
        .collect();
    assert!(!on_a.is_empty());
    let untouched: Vec<(String, String)> = placed
        .iter()
        .filter(|(_, m)| m.as_str() != "aaaa")
        .map(|(u, m)| (u.clone(), m.clone()))
        .collect();
    drop(a);
    let after = until(&store, "nothing to be left on the lost machine", |s| {
        !s.values().any(|m| m == "aaaa")
    })
    .await;
    for (unit, machine) in &untouched {
        assert_eq!(
            after.get(unit),
            Some(machine),
            "{unit} on a live machine must not move"
        );
    }
    let reasons = tests::eventually(
        "fast-v1-web-1 unplaced",
        Duration::from_secs(5),
        async || {
            let reasons = unplaced(&store).await;
            reasons
                .contains_key("fast-v1-web-1.service")
                .then_some(reasons)
        },
    )
    .await;
    assert!(
        reasons["fast-v1-web-1.service"].contains("MachineMetadata"),
        "{reasons:?}"
    );
    let moved_web = on_a
        .iter()
        .find(|u| u.starts_with("demo-v1-web-") && !u.contains("announce"));
    if let Some(web) = moved_web {
        // Two machines left for three conflicting instances: one waits, with the reason.
        assert!(reasons[web].contains("Conflicts"), "{reasons:?}");
    }
    assert!(after.contains_key("four-v1-web-1.service"));
    // The instance that was on aaaa runs on another machine now.
    let after = until(
        &store,
        "the lost machine's free unit to be placed again",
        |s| (1..=3).all(|i| s.contains_key(&format!("move-v1-web-{i}.service"))),
    )
    .await;
    for i in 1..=3 {
        assert_ne!(after[&format!("move-v1-web-{i}.service")], "aaaa");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_scheduler_takes_over_when_the_leader_goes() {
    let store = tests::test_store("scheduler-leader").await;
    let _m = machine(&store, "mmmm", &[]).await;
    let first = start(&store, "first");
    tests::eventually(
        "the first scheduler to lead",
        Duration::from_secs(10),
        async || (leader(&store).await.as_deref() == Some("first")).then_some(()),
    )
    .await;
    let second = start(&store, "second");
    submit(&store, "one-v1-web-1.service", "").await;
    until(&store, "the unit to be placed by the first", |s| {
        s.contains_key("one-v1-web-1.service")
    })
    .await;
    assert_eq!(leader(&store).await.as_deref(), Some("first"));

    // The leader dies (its lease goes with it); the second one places from now on.
    first.abort();
    let _ = first.await;
    submit(&store, "two-v1-web-1.service", "").await;
    until(&store, "the unit to be placed by the second", |s| {
        s.contains_key("two-v1-web-1.service")
    })
    .await;
    assert_eq!(leader(&store).await.as_deref(), Some("second"));
    second.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_deploy_per_app_at_a_time_across_servers() {
    let store = tests::test_store("deploy-lock").await;
    // Two servers' deployers (two of them here, one etcd).
    let first = deployer::Deployer::new(store.clone(), deployer::DeployConfig::default());
    let second = deployer::Deployer::new(store.clone(), deployer::DeployConfig::default());
    let app = store::AppName::new("web").unwrap();
    let (lines, mut said) = tokio::sync::mpsc::channel(8);
    let held = first.lock_app(&app, &lines).await.unwrap();
    let waiting = {
        let (app, lines) = (app.clone(), lines.clone());
        tokio::spawn(async move { second.lock_app(&app, &lines).await.unwrap() })
    };
    assert_eq!(
        said.recv().await.unwrap().to_string(),
        "-----> Waiting for the deploy of web in progress"
    );
    // Give a wrongly taken lock the time it would take to show.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "the second deploy waits");
    // Another app is not held up.
    let other = store::AppName::new("api").unwrap();
    drop(first.lock_app(&other, &lines).await.unwrap());
    held.revoke().await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the second deploy goes on once the first is done")
        .unwrap();
    drop(next);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_whose_leader_key_is_deleted_campaigns_again_and_places() {
    let store = tests::test_store("scheduler-deposed").await;
    let _m = machine(&store, "mmmm", &[]).await;
    let only = start(&store, "only");
    submit(&store, "one-v1-web-1.service", "").await;
    until(&store, "the unit to be placed", |s| {
        s.contains_key("one-v1-web-1.service")
    })
    .await;

    // Its leader key goes (an operator, or a compaction of a lost lease): it
    // may no longer write, so it must win the election again to place.
    store
        .delete(&store.keys().leader("scheduler").unwrap())
        .await
        .unwrap();
    submit(&store, "two-v1-web-1.service", "").await;
    until(
        &store,
        "the unit to be placed after the leader key went",
        |s| s.contains_key("two-v1-web-1.service"),
    )
    .await;
    assert_eq!(
        leader(&store).await.as_deref(),
        Some("only"),
        "it leads again"
    );
    only.abort();
}

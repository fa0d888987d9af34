//! Benchmark of the scheduler with simulated machines (no Docker): 1,000 apps
//! x 3 instances on 50 machines in a fresh etcd; prints the time until every
//! unit is placed, and the time from one machine's lease ending until its
//! units run elsewhere. Run by `bench/scheduler`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use deployer::{Scheduler, SchedulerConfig};
use store::records::Machine;
use store::{LocalEtcd, Store, StoreConfig, WatchEvent};

const APPS: usize = 1000;
const INSTANCES: usize = 3;
const MACHINES: usize = 50;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PAZ_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let dir = std::env::temp_dir().join(format!("paz-scheduler-bench-{}", std::process::id()));
    let etcd = LocalEtcd::start(&dir.join("etcd"))
        .await
        .expect("etcd starts");
    let mut config = StoreConfig::new(vec![format!("http://{}", etcd.client_addr())]);
    config.prefix = "/paz".to_string();
    let store = Store::connect(config).await.expect("etcd answers");

    let mut leases = Vec::new();
    for m in 0..MACHINES {
        let lease = store.grant_lease(Duration::from_secs(30)).await.unwrap();
        let record = Machine {
            addr: format!("10.0.0.{m}"),
            metadata: BTreeMap::new(),
            started_at: 1,
            endpoint: None,
        };
        store
            .put_on_lease(
                &store.keys().machine(&format!("machine{m:02}")).unwrap(),
                &record,
                &lease,
            )
            .await
            .unwrap();
        leases.push(Some(lease));
    }
    let scheduler = Scheduler::new(
        store.clone(),
        SchedulerConfig {
            candidate: "bench".into(),
            lease_ttl: Duration::from_secs(10),
        },
    );
    let scheduling = tokio::spawn(scheduler.run(std::future::pending()));
    // The scheduler leads before the clock starts.
    while store
        .get(&store.keys().leader("scheduler").unwrap())
        .await
        .unwrap()
        .is_none()
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let prefix = store.keys().schedules();
    let mut watch = store.watch(&prefix);
    let mut placed: BTreeMap<String, String> = BTreeMap::new();
    let _ = watch.next_event().await; // the (empty) snapshot

    let started = Instant::now();
    let mut units = Vec::with_capacity(APPS * INSTANCES);
    for a in 0..APPS {
        for i in 1..=INSTANCES {
            let name = format!("app{a:04}-v1-web-{i}.service");
            let text = format!(
                "[Service]\nExecStart=/usr/bin/docker run --rm --name app{a:04}-v1-web-{i} -p 5000 registry.local/app{a:04}@sha256:{:064x}\n",
                a
            );
            units.push((name, text));
        }
    }
    for chunk in units.chunks(100) {
        let mut txn = store.transaction();
        for (name, text) in chunk {
            txn = txn.put(&store.keys().unit(name).unwrap(), text);
        }
        txn.commit().await.unwrap();
    }
    let submitted = started.elapsed();
    while placed.len() < units.len() {
        apply(
            &mut placed,
            &prefix,
            watch.next_event().await.expect("watching"),
        );
    }
    let all_placed = started.elapsed();
    let spread = placed
        .values()
        .fold(BTreeMap::<&String, usize>::new(), |mut m, id| {
            *m.entry(id).or_default() += 1;
            m
        });
    let (fewest, most) = (
        *spread.values().min().unwrap(),
        *spread.values().max().unwrap(),
    );

    // One machine's lease ends.
    let lost = "machine07".to_string();
    let on_lost = placed.values().filter(|m| **m == lost).count();
    let lease = leases[7].take().unwrap();
    let ended = Instant::now();
    lease.revoke().await.unwrap();
    while placed.values().any(|m| *m == lost) || placed.len() < units.len() {
        apply(
            &mut placed,
            &prefix,
            watch.next_event().await.expect("watching"),
        );
    }
    let replaced = ended.elapsed();

    println!(
        "{APPS} apps x {INSTANCES} instances = {} units on {MACHINES} machines",
        units.len()
    );
    println!(
        "  units submitted to etcd in   {:>8.3} s",
        submitted.as_secs_f64()
    );
    println!(
        "  every unit placed after      {:>8.3} s   (target < 3 s)",
        all_placed.as_secs_f64()
    );
    println!("  units per machine            {fewest} to {most}");
    println!("  lost machine's {on_lost} units placed again {:>8.3} s after its lease ended   (target < 1 s)", replaced.as_secs_f64());
    scheduling.abort();
    let _ = scheduling.await;
    drop(etcd);
    let _ = std::fs::remove_dir_all(&dir);
}

fn apply(
    placed: &mut BTreeMap<String, String>,
    prefix: &store::Prefix<String>,
    event: WatchEvent<String>,
) {
    match event {
        WatchEvent::Snapshot { entries, .. } => {
            *placed = entries
                .into_iter()
                .map(|e| (prefix.child_name(&e.key).to_string(), e.value))
                .collect();
        }
        WatchEvent::Put { key, value, .. } => {
            placed.insert(prefix.child_name(&key).to_string(), value);
        }
        WatchEvent::Delete { key, .. } | WatchEvent::Invalid { key, .. } => {
            placed.remove(prefix.child_name(&key));
        }
    }
}

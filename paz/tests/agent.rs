//! The agent with real etcd and the real Docker Engine: three agents share one
//! engine, each with its own machine id; units are placed on them by hand.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use agent::{Agent, AgentConfig};
use store::records::ActiveState;
use store::{Store, WatchEvent};
use tests::DockerCleanup;
use tokio::sync::watch;

struct Host {
    id: String,
    _data: tempfile::TempDir,
    _stop: watch::Sender<bool>,
}

async fn start_agent(store: &Store, tune: impl FnOnce(&mut AgentConfig)) -> Host {
    let data = tests::temp_dir();
    let mut config = AgentConfig::new(data.path().to_path_buf(), "127.0.0.1".into());
    config.drain = Duration::from_secs(2);
    tune(&mut config);
    let agent = Agent::new(config, store.clone()).await.unwrap();
    let id = agent.id().to_string();
    let (stop, mut stopped) = watch::channel(false);
    tokio::spawn(agent.run(async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));
    Host {
        id,
        _data: data,
        _stop: stop,
    }
}

/// A web unit on busybox httpd answering `hello from NAME`, and its sidekick.
fn web_units(
    name: &str,
    cleanup: &DockerCleanup,
    prefix: &str,
    release: u64,
) -> [(String, String); 2] {
    let unit = format!("{name}.service");
    let serve = format!("mkdir -p /www && echo hello from {name} > /www/index.html && exec httpd -f -p 8080 -h /www");
    let app = format!(
        "[Service]\nExecStart=/usr/bin/docker run --rm --name {name} -p 8080 -e PORT=8080 -l {} {} sh -c \"{serve}\"\nTimeoutStopSec=2\n",
        cleanup.label_arg(),
        tests::BUSYBOX_IMAGE
    );
    let sidekick = format!(
        "[Unit]\nBindsTo={unit}\n\n[Service]\nExecStart=/usr/bin/paz sidekick --unit {unit} --key {prefix}/services/demo/{release}/1 --check / --timeout 1 --attempts 2\n\n[X-Fleet]\nMachineOf={unit}\n"
    );
    [(unit, app), (format!("{name}-announce.service"), sidekick)]
}

async fn place(store: &Store, units: &[(String, String)], machine: &str) {
    for (name, text) in units {
        store
            .put(&store.keys().unit(name).unwrap(), text)
            .await
            .unwrap();
        store
            .put(&store.keys().schedule(name).unwrap(), &machine.to_string())
            .await
            .unwrap();
    }
}

/// `tests::eventually`, with the time in seconds.
async fn eventually<T>(seconds: u64, what: &str, check: impl AsyncFnMut() -> Option<T>) -> T {
    tests::eventually(what, Duration::from_secs(seconds), check).await
}

async fn state(store: &Store, unit: &str) -> Option<store::records::UnitState> {
    store
        .get(&store.keys().unit_state(unit).unwrap())
        .await
        .unwrap()
        .map(|v| v.value)
}

async fn service(store: &Store, release: u64) -> Option<String> {
    let app = store::AppName::new("demo").unwrap();
    store
        .get(&store.keys().service(&app, release, "1").unwrap())
        .await
        .unwrap()
        .map(|v| v.value)
}

fn inspect(container: &str) -> serde_json::Value {
    let output = Command::new("docker")
        .args(["inspect", container])
        .output()
        .unwrap();
    serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap_or_default()[0].clone()
}

fn curl(address: &str) -> String {
    let output = Command::new("curl")
        .args(["-s", "-m", "5", &format!("http://{address}/")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn placed_units_run_and_announce_and_unplacing_withdraws_before_stopping() {
    let docker = tests::docker().await;
    tests::busybox_image(&docker).await;
    let cleanup = DockerCleanup::new("agent-place");
    let store = tests::test_store("agent-place").await;
    let prefix = store.keys().root().to_string();
    let hosts = [
        start_agent(&store, |_| {}).await,
        start_agent(&store, |_| {}).await,
        start_agent(&store, |_| {}).await,
    ];
    let name = format!("demo-v1-web-1-{}", std::process::id());
    let units = web_units(&name, &cleanup, &prefix, 1);
    place(&store, &units, &hosts[1].id).await;

    let running = eventually(60, "the unit to become active", async || {
        state(&store, &units[0].0)
            .await
            .filter(|s| s.active == ActiveState::Active && s.container.is_some())
    })
    .await;
    assert_eq!(
        running.machine, hosts[1].id,
        "the agent it was placed on runs it"
    );
    let container = running.container.unwrap();
    let labels = &inspect(&container)["Config"]["Labels"];
    assert_eq!(labels["paz.machine"], hosts[1].id.as_str());
    assert_eq!(labels["paz.unit"], units[0].0.as_str());
    let address = eventually(30, "the sidekick to announce", async || {
        service(&store, 1).await
    })
    .await;
    let port = inspect(&container)["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        address,
        format!("127.0.0.1:{port}"),
        "the advertise address and the published port"
    );
    assert_eq!(curl(&address).trim(), format!("hello from {name}"));
    for other in [&hosts[0], &hosts[2]] {
        let machines = store
            .get(&store.keys().machine(&other.id).unwrap())
            .await
            .unwrap();
        assert!(machines.is_some(), "every agent registers its machine");
    }

    // Unplace: the announcement goes first; the container runs through the drain.
    let mut watch = store.watch(&store.keys().services());
    assert!(matches!(
        watch.next_event().await,
        Some(WatchEvent::Snapshot { .. })
    ));
    for (unit, _) in &units {
        store
            .delete(&store.keys().schedule(unit).unwrap())
            .await
            .unwrap();
    }
    let event = tokio::time::timeout(Duration::from_secs(20), watch.next_event())
        .await
        .unwrap();
    assert!(
        matches!(event, Some(WatchEvent::Delete { .. })),
        "{event:?}"
    );
    assert_eq!(
        inspect(&container)["State"]["Running"],
        true,
        "still running when the key is withdrawn"
    );
    eventually(30, "the container to be removed", async || {
        inspect(&container).is_null().then_some(())
    })
    .await;
    eventually(10, "the state key to go", async || {
        state(&store, &units[0].0).await.is_none().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_health_checks_withdraw_and_crashes_are_restarted() {
    let docker = tests::docker().await;
    tests::busybox_image(&docker).await;
    let cleanup = DockerCleanup::new("agent-health");
    let store = tests::test_store("agent-health").await;
    let prefix = store.keys().root().to_string();
    let host = start_agent(&store, |_| {}).await;
    let name = format!("demo-v2-web-1-{}", std::process::id());
    let units = web_units(&name, &cleanup, &prefix, 2);
    place(&store, &units, &host.id).await;
    eventually(60, "the first announcement", async || {
        service(&store, 2).await
    })
    .await;
    let container = state(&store, &units[0].0).await.unwrap().container.unwrap();

    // A frozen app fails its checks: withdrawn; thawed: announced again.
    assert!(Command::new("docker")
        .args(["pause", &container])
        .status()
        .unwrap()
        .success());
    eventually(30, "the withdrawal", async || {
        service(&store, 2).await.is_none().then_some(())
    })
    .await;
    assert!(Command::new("docker")
        .args(["unpause", &container])
        .status()
        .unwrap()
        .success());
    eventually(30, "the announcement to come back", async || {
        service(&store, 2).await
    })
    .await;

    // A crash: the agent starts the unit again and says so.
    assert!(Command::new("docker")
        .args(["kill", &container])
        .status()
        .unwrap()
        .success());
    let restarted = eventually(60, "the restart", async || {
        state(&store, &units[0].0).await.filter(|s| {
            s.active == ActiveState::Active && s.container.as_deref() != Some(&container)
        })
    })
    .await;
    assert_eq!(restarted.restarts, 1);
    assert_eq!(
        restarted.reason.as_deref(),
        Some("restarted 1 times after crashes, the last with exit code 137")
    );
    for (unit, _) in &units {
        store
            .delete(&store.keys().schedule(unit).unwrap())
            .await
            .unwrap();
    }
    eventually(30, "the cleanup", async || {
        state(&store, &units[0].0).await.is_none().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_units_fail_with_a_reason_and_the_good_ones_keep_running() {
    let docker = tests::docker().await;
    tests::busybox_image(&docker).await;
    let cleanup = DockerCleanup::new("agent-bad");
    let store = tests::test_store("agent-bad").await;
    let prefix = store.keys().root().to_string();
    // A registry the agent's token may not pull from: a deployer of another app.
    let data = tests::temp_dir();
    let registry = registry::Registry::new(data.path().join("registry"), store.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let registry_addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(registry.serve(listener, std::future::pending()));
    let (token, secret) = store::records::Token::create(
        "outsider",
        store::records::Role::Deployer,
        vec![store::AppName::new("other").unwrap()],
    );
    store
        .put(&store.keys().token("outsider").unwrap(), &token)
        .await
        .unwrap();
    let host = start_agent(&store, |config| {
        config.registry = Some(engine::RegistryLogin {
            registry: registry_addr.clone(),
            name: "outsider".into(),
            secret,
        })
    })
    .await;

    let good = format!("demo-v3-web-1-{}", std::process::id());
    let units = web_units(&good, &cleanup, &prefix, 3);
    place(&store, &units, &host.id).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let label = cleanup.label_arg();
    let bad = [
        ("bad-flag", format!("/usr/bin/docker run --privileged --name bad-flag-{0} {1}", std::process::id(), tests::BUSYBOX_IMAGE), "docker run flag --privileged is not supported"),
        ("bad-image", format!("/usr/bin/docker run --name bad-image-{0} -l {label} paz-test/does-not-exist:1", std::process::id()), "cannot pull paz-test/does-not-exist:1"),
        ("bad-pull", format!("/usr/bin/docker run --name bad-pull-{0} -l {label} {registry_addr}/web:1", std::process::id()), "cannot pull"),
        ("bad-port", format!("/usr/bin/docker run --name bad-port-{0} -l {label} -p 127.0.0.1:{taken_port}:8080 {1} sleep 100", std::process::id(), tests::BUSYBOX_IMAGE), "cannot start the container"),
    ];
    for (name, exec, _) in &bad {
        place(
            &store,
            &[(
                format!("{name}.service"),
                format!("[Service]\nExecStart={exec}\n"),
            )],
            &host.id,
        )
        .await;
    }
    for (name, _, reason) in &bad {
        let failed = eventually(60, &format!("{name} to fail"), async || {
            state(&store, &format!("{name}.service"))
                .await
                .filter(|s| s.active == ActiveState::Failed)
        })
        .await;
        assert!(
            failed
                .reason
                .as_deref()
                .unwrap_or_default()
                .contains(reason),
            "{name}: {failed:?}"
        );
    }
    eventually(30, "the good unit to run beside the bad ones", async || {
        state(&store, &units[0].0)
            .await
            .filter(|s| s.active == ActiveState::Active)
    })
    .await;
    eventually(30, "the good unit's announcement", async || {
        service(&store, 3).await
    })
    .await;
    drop(taken);
    for (unit, _) in units.iter().chain(
        bad.iter()
            .map(|(n, e, _)| (format!("{n}.service"), e.clone()))
            .collect::<Vec<_>>()
            .iter(),
    ) {
        store
            .delete(&store.keys().schedule(unit).unwrap())
            .await
            .unwrap();
    }
    eventually(30, "the cleanup", async || {
        state(&store, &units[0].0).await.is_none().then_some(())
    })
    .await;
    // A unit that never got a container leaves no state behind either (a
    // deploy waiting for its name to be free would wait for it).
    for (name, _, _) in &bad {
        let unit = format!("{name}.service");
        eventually(30, &format!("{unit}'s state to go"), async || {
            state(&store, &unit).await.is_none().then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_rendered_docker_run_line_makes_the_same_container_as_the_agent() {
    let docker = tests::docker().await;
    tests::busybox_image(&docker).await;
    let cleanup = DockerCleanup::new("agent-same");
    let store = tests::test_store("agent-same").await;
    let host = start_agent(&store, |_| {}).await;
    let (app, _) = units::render_instance(&units::Instance {
        app: "demo".into(),
        release: 4,
        process: "web".into(),
        index: std::process::id(),
        image: tests::BUSYBOX_IMAGE.into(),
        port: 8080,
        env: vec![("GREETING".into(), "hello world".into())],
        command: vec!["sleep".into(), "300".into()],
        service_key: format!("{}/services/demo/4/1", store.keys().root()),
        health_path: "/".into(),
        health_timeout: 1,
        health_attempts: 2,
        stop_timeout: 1,
        memory: None,
        nano_cpus: None,
    })
    .unwrap();
    let text = app.text.replace(
        " -l paz.app=demo",
        &format!(" -l {} -l paz.app=demo", cleanup.label_arg()),
    );
    place(&store, &[(app.name.clone(), text.clone())], &host.id).await;
    let by_agent = eventually(60, "the agent's container", async || {
        state(&store, &app.name).await.and_then(|s| s.container)
    })
    .await;

    // The same line, run by hand with the docker CLI under another name.
    let parsed = units::parse_unit(&app.name, &text).unwrap();
    let units::Exec::Container(mut spec) = parsed.exec else {
        panic!()
    };
    spec.name = format!("{}-by-hand", spec.name);
    let words = units::spec::render_docker_run(&spec);
    let by_hand = Command::new("docker")
        .arg("run")
        .arg("-d")
        .args(&words)
        .output()
        .unwrap();
    assert!(
        by_hand.status.success(),
        "{}",
        String::from_utf8_lossy(&by_hand.stderr)
    );
    let by_hand = String::from_utf8_lossy(&by_hand.stdout).trim().to_string();

    let (agent, hand) = (inspect(&by_agent), inspect(&by_hand));
    for pointer in ["/Config/Image", "/Config/Cmd", "/Config/ExposedPorts"] {
        assert_eq!(agent.pointer(pointer), hand.pointer(pointer), "{pointer}");
    }
    let env = |value: &serde_json::Value| -> Vec<String> {
        let mut env: Vec<String> = value["Config"]["Env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .filter(|v| !v.starts_with("PATH="))
            .collect();
        env.sort();
        env
    };
    assert_eq!(env(&agent), env(&hand));
    let labels = |value: &serde_json::Value| -> HashMap<String, String> {
        value["Config"]["Labels"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| !["paz.machine", "paz.stop-timeout"].contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect()
    };
    assert_eq!(labels(&agent), labels(&hand));
    // The same ports; the agent publishes them on its advertised address
    // only, where a plain `docker run -p` publishes on every address.
    assert_eq!(
        hand.pointer("/HostConfig/PortBindings"),
        Some(&serde_json::json!({"8080/tcp": [{"HostIp": "", "HostPort": ""}]}))
    );
    assert_eq!(
        agent.pointer("/HostConfig/PortBindings"),
        Some(&serde_json::json!({"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}))
    );
    let _ = Command::new("docker").args(["rm", "-f", &by_hand]).output();
    store
        .delete(&store.keys().schedule(&app.name).unwrap())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_agent_adopts_its_containers_and_a_dead_one_loses_its_keys() {
    let docker = tests::docker().await;
    tests::busybox_image(&docker).await;
    let cleanup = DockerCleanup::new("agent-restart");
    let store = tests::test_store("agent-restart").await;
    let prefix = store.keys().root().to_string();
    let url = tests::shared_etcd().await.url();
    let data = tests::temp_dir();
    let spawn = || {
        tests::ChildGuard::spawn(
            Command::new(env!("CARGO_BIN_EXE_paz"))
                .args([
                    "agent",
                    "--etcd",
                    &url,
                    "--etcd-prefix",
                    &prefix,
                    "--advertise-addr",
                    "127.0.0.1",
                    "--drain",
                    "1",
                ])
                .arg("--data-dir")
                .arg(data.path())
                .stdout(std::process::Stdio::null()),
        )
    };
    let mut agent = spawn();
    let id = eventually(30, "the machine id", async || {
        std::fs::read_to_string(data.path().join("machine-id")).ok()
    })
    .await;
    let id = id.trim().to_string();
    let name = format!("demo-v5-web-1-{}", std::process::id());
    let units = web_units(&name, &cleanup, &prefix, 5);
    place(&store, &units, &id).await;
    let container = eventually(60, "the container", async || {
        state(&store, &units[0].0)
            .await
            .filter(|s| s.active == ActiveState::Active)
            .and_then(|s| s.container)
    })
    .await;
    eventually(30, "the announcement", async || service(&store, 5).await).await;
    let started_at = inspect(&container)["State"]["StartedAt"].clone();

    agent.signal(nix::sys::signal::Signal::SIGKILL);
    agent.wait_timeout(Duration::from_secs(10)).unwrap();
    let _agent = spawn();
    // Past the dead agent's leases: everything is the new agent's now.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let adopted = eventually(30, "the adopted unit's state", async || {
        state(&store, &units[0].0)
            .await
            .filter(|s| s.active == ActiveState::Active)
    })
    .await;
    assert_eq!(
        adopted.container.as_deref(),
        Some(container.as_str()),
        "the same container"
    );
    assert_eq!(
        inspect(&container)["State"]["StartedAt"],
        started_at,
        "not restarted"
    );
    assert!(service(&store, 5).await.is_some(), "announced again");
    assert!(store
        .get(&store.keys().machine(&id).unwrap())
        .await
        .unwrap()
        .is_some());

    // Killed for good: its machine and its announcement go with their leases.
    drop(_agent);
    eventually(25, "the machine key to expire", async || {
        store
            .get(&store.keys().machine(&id).unwrap())
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    eventually(25, "the announcement to expire", async || {
        service(&store, 5).await.is_none().then_some(())
    })
    .await;
    assert_eq!(
        inspect(&container)["State"]["Running"],
        true,
        "the app keeps running without its agent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn machines_and_units_are_listed_shown_and_exported() {
    let docker = tests::docker().await;
    tests::busybox_image(&docker).await;
    let cleanup = DockerCleanup::new("agent-verbs");
    let store = tests::test_store("agent-verbs").await;
    let prefix = store.keys().root().to_string();
    let host = start_agent(&store, |config| {
        config.metadata.insert("region".into(), "eu".into());
    })
    .await;
    let name = format!("demo-v6-web-{}", std::process::id());
    let units = web_units(&name, &cleanup, &prefix, 6);
    place(&store, &units, &host.id).await;
    eventually(60, "the unit to run", async || {
        state(&store, &units[0].0)
            .await
            .filter(|s| s.active == ActiveState::Active)
    })
    .await;

    let (context, admin, _data) = tests::admin_verbs(&store);
    let run = |caller: verbs::Caller, verb: &'static str, args: Vec<String>| {
        let context = context.clone();
        async move { verbs::run(&context, &caller, verb, &args, b"").await }
    };
    let machines = run(admin.clone(), "machines:list", vec![])
        .await
        .unwrap()
        .text;
    assert!(
        machines.contains(&format!("{}  127.0.0.1  region=eu  2 units", host.id)),
        "{machines}"
    );
    let listed = run(admin.clone(), "units:list", vec!["demo".into()])
        .await
        .unwrap()
        .text;
    assert!(
        listed.contains(&format!("{}  {}  active", units[0].0, host.id)),
        "{listed}"
    );
    let shown = run(admin.clone(), "units:cat", vec![units[0].0.clone()])
        .await
        .unwrap()
        .text;
    assert_eq!(shown, units[0].1.trim_end());
    let outsider = verbs::Caller {
        name: "olga".into(),
        role: store::records::Role::Deployer,
        apps: vec![store::AppName::new("other").unwrap()],
        token: false,
    };
    let refused = run(outsider.clone(), "units:cat", vec![units[0].0.clone()])
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .starts_with("`olga` may not use app `demo`"),
        "{refused}"
    );
    assert!(run(outsider, "machines:list", vec![]).await.is_err());
    assert!(run(admin.clone(), "units:cat", vec!["nope.service".into()])
        .await
        .unwrap_err()
        .to_string()
        .contains("no unit nope.service"));

    let out = tests::temp_dir();
    let url = tests::shared_etcd().await.url();
    let export = |app: &str| {
        Command::new(env!("CARGO_BIN_EXE_paz"))
            .args(["units", "export", app])
            .arg(out.path())
            .args(["--etcd", &url, "--etcd-prefix", &prefix])
            .output()
            .unwrap()
    };
    let exported = export("demo");
    assert!(
        exported.status.success(),
        "{}",
        String::from_utf8_lossy(&exported.stderr)
    );
    for (unit, text) in &units {
        assert_eq!(
            &std::fs::read_to_string(out.path().join(unit)).unwrap(),
            text
        );
    }
    let none = export("ghost");
    assert!(!none.status.success());
    assert!(String::from_utf8_lossy(&none.stderr)
        .contains("app ghost has no units: nothing was written"));
    for (unit, _) in &units {
        store
            .delete(&store.keys().schedule(unit).unwrap())
            .await
            .unwrap();
    }
    eventually(30, "the cleanup", async || {
        state(&store, &units[0].0).await.is_none().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_global_unit_runs_unscheduled_on_each_machine_its_metadata_allows() {
    let docker = tests::docker().await;
    tests::busybox_image(&docker).await;
    let cleanup = DockerCleanup::new("agent-global");
    let store = tests::test_store("agent-global").await;
    let prefix = store.keys().root().to_string();
    let edge = start_agent(&store, |config| {
        config.metadata.insert("role".into(), "edge".into());
    })
    .await;
    let _core = start_agent(&store, |config| {
        config.metadata.insert("role".into(), "core".into());
    })
    .await;
    let name = format!("logs-v1-web-1-{}", std::process::id());
    let [(unit, text), _] = web_units(&name, &cleanup, &prefix, 1);
    let text = format!("{text}\n[X-Fleet]\nGlobal=true\nMachineMetadata=role=edge\n");
    store
        .put(&store.keys().unit(&unit).unwrap(), &text)
        .await
        .unwrap();
    let running = eventually(60, "the global unit to become active", async || {
        state(&store, &unit)
            .await
            .filter(|s| s.active == ActiveState::Active)
    })
    .await;
    assert_eq!(running.machine, edge.id, "only the edge machine runs it");
    assert!(
        store
            .get(&store.keys().schedule(&unit).unwrap())
            .await
            .unwrap()
            .is_none(),
        "a global unit has no placement"
    );
    // A few more passes of both agents: the core machine never starts it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let containers = Command::new("docker")
        .args([
            "ps",
            "--filter",
            &format!("name={name}"),
            "--format",
            "{{.Label \"paz.machine\"}}",
        ])
        .output()
        .unwrap();
    let machines = String::from_utf8_lossy(&containers.stdout);
    assert_eq!(machines.trim(), edge.id, "{machines}");
    store
        .delete(&store.keys().unit(&unit).unwrap())
        .await
        .unwrap();
    eventually(30, "the global unit to stop", async || {
        state(&store, &unit).await.is_none().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_machines_instances_run_again_elsewhere_and_current_is_unchanged() {
    let docker = tests::docker().await;
    tests::busybox_image(&docker).await;
    let mut cleanup = DockerCleanup::new("agent-lost");
    let store = tests::test_store("agent-lost").await;
    let ttl = Duration::from_secs(3);
    let mut hosts: Vec<Option<Host>> = Vec::new();
    for _ in 0..3 {
        let host = start_agent(&store, |config| config.lease_ttl = ttl).await;
        cleanup.track_label(&format!("paz.machine={}", host.id));
        hosts.push(Some(host));
    }
    let scheduler = deployer::Scheduler::new(
        store.clone(),
        deployer::SchedulerConfig {
            candidate: "test".into(),
            lease_ttl: Duration::from_secs(3),
        },
    );
    tokio::spawn(scheduler.run(std::future::pending()));

    // A 3-instance app, released and rolled out by the deployer.
    let app = store::AppName::new(&format!("lost{}", std::process::id())).unwrap();
    let mut record = store::records::App::new(app.clone(), 1);
    record.scale.web = 3;
    record.port = Some(8080);
    store.put(&store.keys().app(&app), &record).await.unwrap();
    let release = store::records::NewRelease {
        image: store::ResolvedImage {
            image: tests::BUSYBOX_IMAGE.to_string(),
            source: None,
            exposed_ports: Vec::new(),
        },
        git_sha: None,
        env: Default::default(),
        created_at: 1,
        by: "test".into(),
        cause: store::records::ReleaseCause::Image,
        processes: [(
            "web".to_string(),
            "mkdir -p /www && echo hi > /www/index.html && exec httpd -f -p $PORT -h /www"
                .to_string(),
        )]
        .into(),
        release_command: None,
        resources: Default::default(),
        cron: Vec::new(),
    };
    let n = store.create_release(&app, release).await.unwrap();
    // In one batch of three: all three units are submitted before the first
    // instance is announced.
    let deployer = deployer::Deployer::new(
        store.clone(),
        deployer::DeployConfig {
            batch: 3,
            ..Default::default()
        },
    );
    let seen_at_first_announce = {
        let (store, app) = (store.clone(), app.clone());
        tokio::spawn(async move {
            let first = store.keys().service(&app, n, "1").unwrap();
            loop {
                if store.get(&first).await.unwrap().is_some() {
                    let mut submitted = 0;
                    for i in 1..=3 {
                        let unit = store
                            .keys()
                            .unit(&format!("{app}-v{n}-web-{i}.service"))
                            .unwrap();
                        submitted += usize::from(store.get(&unit).await.unwrap().is_some());
                    }
                    return submitted;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let (lines, mut said) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move { while said.recv().await.is_some() {} });
    deployer
        .roll_out(&app, n, &lines)
        .await
        .expect("the rollout succeeds");
    assert_eq!(
        seen_at_first_announce.await.unwrap(),
        3,
        "one batch of three"
    );

    let placements = async || {
        let mut placed = std::collections::BTreeMap::new();
        for i in 1..=3 {
            let unit = format!("{app}-v{n}-web-{i}.service");
            let machine = store
                .get(&store.keys().schedule(&unit).unwrap())
                .await
                .unwrap()
                .map(|v| v.value);
            placed.insert(unit, machine);
        }
        placed
    };
    let before = placements().await;
    let machines: std::collections::BTreeSet<_> = before.values().flatten().collect();
    assert_eq!(machines.len(), 3, "one instance per machine: {before:?}");

    // Machine 0 is lost for good: its agent and its containers go.
    let lost = hosts[0].take().unwrap();
    let lost_id = lost.id.clone();
    drop(lost);
    // Its agent has stopped once its machine key is gone; then its containers go.
    let machine_key = store.keys().machine(&lost_id).unwrap();
    eventually(10, "the lost agent to stop", async || {
        store
            .get(&machine_key)
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "docker rm -f $(docker ps -aq --filter label=paz.machine={lost_id})"
        ))
        .output();
    let moved = before
        .iter()
        .find(|(_, m)| m.as_deref() == Some(lost_id.as_str()))
        .map(|(u, _)| u.clone())
        .unwrap();
    let index = moved
        .trim_end_matches(".service")
        .rsplit('-')
        .next()
        .unwrap()
        .to_string();
    // Within the lease TTL and 5 s more: placed elsewhere, running, announced.
    let seconds = ttl.as_secs() + 5;
    let state = eventually(seconds, "the lost instance to run elsewhere", async || {
        let state = state(&store, &moved).await?;
        let announced = store
            .get(&store.keys().service(&app, n, &index).unwrap())
            .await
            .unwrap()?;
        // The announced address answers (not the lost one's, withdrawn).
        (state.active == ActiveState::Active
            && state.machine != lost_id
            && curl(&announced.value).contains("hi"))
        .then_some((state, announced))
    })
    .await;
    assert_ne!(state.0.machine, lost_id);
    let after = placements().await;
    for (unit, machine) in &before {
        if unit != &moved {
            assert_eq!(after.get(unit), Some(machine), "{unit} must not move");
        }
    }
    assert_eq!(
        store
            .get(&store.keys().current(&app))
            .await
            .unwrap()
            .unwrap()
            .value,
        n,
        "current is unchanged"
    );
    for unit in before.keys() {
        store
            .delete(&store.keys().unit(unit).unwrap())
            .await
            .unwrap();
        let _ = store
            .delete(
                &store
                    .keys()
                    .unit(&unit.replace(".service", "-announce.service"))
                    .unwrap(),
            )
            .await;
    }
}

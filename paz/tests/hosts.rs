//! Several hosts, simulated on one machine as the README's "Several hosts"
//! section runs them: one etcd, `paz server`, `paz proxy` and two `paz agent`s
//! with their own data dirs (so their own machine ids), driven with `ssh`,
//! `git`, `docker` and HTTP.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{answers, example, paz, said, spawn_until, start_role};
use tests::{ChildGuard, DockerCleanup, SshIdentity};

/// `paz agent` with its own data dir, draining for 1 s; returns it and its
/// machine id.
fn agent(etcd: &str, data: &Path, registry: u16, token: &str) -> (ChildGuard, String) {
    common::agent(etcd, data, registry, token, &["--drain", "1"])
}

/// `ps demo --json`: each instance's (machine, state).
fn instances(admin: &SshIdentity, ssh: u16) -> Vec<(String, String)> {
    let output = admin.ssh("paz@127.0.0.1", ssh, &["ps", "demo", "--json"]);
    assert!(output.status.success(), "{}", said(&output));
    let rows: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["machine"].as_str().unwrap_or("-").to_string(),
                row["state"]["active"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_share_an_app_and_a_killed_ones_instance_moves_to_the_other() {
    let docker = tests::docker().await;
    tests::busybox_image(&docker).await;
    let etcd = tests::own_etcd().await;
    let url = etcd.etcd.client_url();
    let admin = SshIdentity::new("ed25519");
    let key = admin.private_key.with_extension("pub");
    let mut cleanup = DockerCleanup::new("hosts");

    // The control host.
    let server_data = tests::temp_dir();
    let server = start_role(
        "server",
        &[
            "--etcd",
            &url,
            "--data-dir",
            server_data.path().to_str().unwrap(),
            "--admin-key",
            key.to_str().unwrap(),
            "--deploy-timeout",
            "20",
        ],
        &[],
    );
    let ssh = server.ssh_port;
    let verb = |args: &[&str]| {
        let output = admin.ssh("paz@127.0.0.1", ssh, args);
        assert!(output.status.success(), "{args:?}: {}", said(&output));
        output
    };

    // Two app hosts, pulling with a machine token, and an edge host.
    let token: serde_json::Value = serde_json::from_slice(
        &verb(&["tokens:create", "hosts", "--role", "machine", "--json"]).stdout,
    )
    .unwrap();
    let token = format!(
        "{}:{}",
        token["name"].as_str().unwrap(),
        token["secret"].as_str().unwrap()
    );
    let (one_data, two_data) = (tests::temp_dir(), tests::temp_dir());
    let (mut one, one_id) = agent(&url, one_data.path(), server.registry_port, &token);
    let (_two, two_id) = agent(&url, two_data.path(), server.registry_port, &token);
    assert_ne!(one_id, two_id);
    cleanup.track_label(&format!("paz.machine={one_id}"));
    cleanup.track_label(&format!("paz.machine={two_id}"));
    let (_proxy, listening) = spawn_until(
        paz().args(["proxy", "--etcd", &url]).args([
            "--http-listen",
            "127.0.0.1:0",
            "--https-listen",
            "off",
            "--access-log",
            "off",
        ]),
        "proxy listening on ",
    );
    let http: u16 = listening.rsplit(':').next().unwrap().parse().unwrap();
    let listed = String::from_utf8_lossy(&verb(&["machines:list"]).stdout).to_string();
    assert!(
        listed.contains(&one_id[..12]) && listed.contains(&two_id[..12]),
        "{listed}"
    );

    // A two-instance app: one instance on each agent.
    verb(&["apps:create", "demo"]);
    let app = example("hello");
    let ports = (ssh, server.registry_port);
    let pushed = common::push_dir(&admin, app.path(), ports, "demo", &mut cleanup);
    assert!(
        pushed.status.success() && said(&pushed).contains("Released v1"),
        "{}",
        said(&pushed)
    );
    verb(&["ps:scale", "demo", "web=2"]);
    let mut placed: Vec<(String, String)> = instances(&admin, ssh);
    placed.sort();
    let mut expected = vec![
        (one_id.clone(), "active".to_string()),
        (two_id.clone(), "active".to_string()),
    ];
    expected.sort();
    assert_eq!(placed, expected, "one instance on each agent");
    answers(http, "demo.paz.localhost", "Hello from Paz");

    // Host one is lost: its agent is killed, and its containers go with it
    // (on one shared Docker Engine, by hand). Its machine's lease ends, and its
    // instance runs on host two.
    one.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = one.wait_timeout(Duration::from_secs(5));
    let removed = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "docker ps -aq --filter label=paz.machine={one_id} | xargs -r docker rm -f"
        ))
        .output()
        .unwrap();
    assert!(removed.status.success(), "{}", said(&removed));
    tests::eventually(
        "both instances to be on host two",
        Duration::from_secs(30),
        async || {
            let now = instances(&admin, ssh);
            (now == vec![
                (two_id.clone(), "active".to_string()),
                (two_id.clone(), "active".to_string()),
            ])
            .then_some(())
        },
    )
    .await;
    let running = std::process::Command::new("docker")
        .args(["ps", "--format", "{{.Names}}"])
        .args(["--filter", &format!("label=paz.machine={two_id}")])
        .output()
        .unwrap();
    let running = String::from_utf8_lossy(&running.stdout);
    assert_eq!(
        running.lines().filter(|n| n.starts_with("demo-")).count(),
        2,
        "{running}"
    );
    answers(http, "demo.paz.localhost", "Hello from Paz");
    drop(server);
}

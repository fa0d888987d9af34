//! Metrics, as an operator collects them: `paz up` with the proxy's
//! metrics on, an app that takes requests, then Prometheus' own tools on
//! every endpoint the service discovery lists, a real Prometheus scraping
//! the cluster through it, and `ps` with each instance's CPU and memory.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{answers, example, said, start};
use tests::{ChildGuard, DockerCleanup, SshIdentity};

fn curl(args: &[&str]) -> (String, String) {
    let output = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').unwrap_or((&text, ""));
    (status.to_string(), body.to_string())
}

/// `promtool check metrics` of what `url` serves: its complaints, if any.
fn promtool_check(url: &str) -> Result<(), String> {
    let (status, body) = curl(&[url]);
    assert_eq!(status, "200", "{url}: {body}");
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    check
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let output = check.wait_with_output().unwrap();
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("{url}:\n{}\n{body}", said(&output)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_finds_every_agent_and_proxy_and_records_an_apps_requests() {
    let docker = tests::docker().await;
    tests::busybox_image(&docker).await;
    let admin = SshIdentity::new("ed25519");
    let data = tests::temp_dir();
    let mut cleanup = DockerCleanup::new("metrics");
    let machine = agent::machine_id(data.path()).unwrap();
    cleanup.track_label(&format!("paz.machine={machine}"));
    let key = admin.private_key.with_extension("pub");
    let running = start(
        &[
            "--data-dir",
            data.path().to_str().unwrap(),
            "--admin-key",
            key.to_str().unwrap(),
            "--metrics-listen",
            "127.0.0.1:0",
            "--access-log",
            "off",
        ],
        &[],
    );
    let verb = |args: &[&str]| {
        let output = admin.ssh("paz@127.0.0.1", running.ssh_port, args);
        assert!(output.status.success(), "{args:?}: {}", said(&output));
        String::from_utf8_lossy(&output.stdout).to_string()
    };
    verb(&["apps:create", "metered"]);
    let app = example("hello");
    let ports = (running.ssh_port, running.registry_port);
    let pushed = common::push_dir(&admin, app.path(), ports, "metered", &mut cleanup);
    assert!(pushed.status.success(), "{}", said(&pushed));
    for _ in 0..5 {
        answers(running.http_port, "metered.paz.localhost", "Hello from Paz");
    }

    // The service discovery lists the agent and the proxy, for admins only.
    let token: serde_json::Value = serde_json::from_str(&verb(&[
        "tokens:create",
        "prom",
        "--role",
        "admin",
        "--json",
    ]))
    .unwrap();
    let secret = token["secret"].as_str().unwrap().to_string();
    let deployer: serde_json::Value = serde_json::from_str(&verb(&[
        "tokens:create",
        "ci",
        "--role",
        "deployer",
        "--apps",
        "metered",
        "--json",
    ]))
    .unwrap();
    let sd = format!(
        "http://127.0.0.1:{}/api/v1/prometheus/targets",
        running.api_port
    );
    let bearer = |secret: &str| format!("Authorization: Bearer {secret}");
    assert_eq!(
        curl(&["-H", &bearer(deployer["secret"].as_str().unwrap()), &sd]).0,
        "403"
    );
    assert_eq!(curl(&[&sd]).0, "401");
    let (status, body) = curl(&["-H", &bearer(&secret), &sd]);
    assert_eq!(status, "200", "{body}");
    let groups: serde_json::Value = serde_json::from_str(&body).unwrap();
    let groups = groups.as_array().unwrap();
    let role = |role: &str| {
        groups
            .iter()
            .filter(|g| g["labels"]["paz_role"] == role)
            .map(|g| g["targets"][0].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let (agents, proxies) = (role("agent"), role("proxy"));
    assert_eq!((agents.len(), proxies.len()), (1, 1), "{body}");
    assert!(
        groups
            .iter()
            .any(|g| g["labels"]["paz_machine"] == machine.as_str()),
        "{body}"
    );

    // Prometheus' own checker accepts every endpoint it lists.
    for target in agents.iter().chain(&proxies) {
        let url = format!("http://{target}/metrics");
        tests::eventually(
            "the metrics to pass promtool",
            Duration::from_secs(20),
            async || promtool_check(&url).ok(),
        )
        .await;
        if let Err(complaint) = promtool_check(&url) {
            panic!("{complaint}");
        }
    }
    let (_, proxy_text) = curl(&[&format!("http://{}/metrics", proxies[0])]);
    assert!(
        proxy_text.contains(r#"paz_proxy_request_duration_seconds_count{app="metered"}"#),
        "{proxy_text}"
    );
    let agent_text = tests::eventually(
        "the agent to sample its container",
        Duration::from_secs(20),
        async || {
            let (_, text) = curl(&[&format!("http://{}/metrics", agents[0])]);
            text.contains(r#"paz_agent_container_memory_bytes{app="metered""#)
                .then_some(text)
        },
    )
    .await;
    for name in [
        "paz_agent_host_cpu_usage_percent",
        "paz_agent_host_memory_used_bytes",
        "paz_agent_host_disk_used_bytes",
        "paz_agent_container_memory_bytes",
        "paz_agent_container_cpu_seconds_total",
        "paz_agent_container_restarts_total",
    ] {
        assert!(agent_text.contains(name), "{name}:\n{agent_text}");
    }

    // A real Prometheus, configured with one http_sd_configs entry.
    let prom_dir = tests::temp_dir();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: paz\n    http_sd_configs:\n      - url: {sd}\n        refresh_interval: 2s\n        authorization:\n          type: Bearer\n          credentials: '{secret}'\n"
    );
    std::fs::write(prom_dir.path().join("prometheus.yml"), config).unwrap();
    let _prometheus = ChildGuard::spawn(
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                prom_dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                prom_dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(prom_dir.path().join("log")).unwrap()),
    );
    let targets = format!("http://127.0.0.1:{port}/api/v1/targets");
    let diagnose = || {
        format!(
            "targets: {}\nlog: {}",
            curl(&[&targets]).1,
            std::fs::read_to_string(prom_dir.path().join("log")).unwrap_or_default()
        )
    };
    let query = format!(
        "http://127.0.0.1:{port}/api/v1/query?query=sum(paz_proxy_requests_total%7Bapp%3D%22metered%22%7D)"
    );
    let mut recorded = 0.0;
    for _ in 0..150 {
        let got = async {
            let (status, body) = curl(&[&query]);
            if status != "200" {
                return None;
            }
            let answer: serde_json::Value = serde_json::from_str(&body).ok()?;
            let value: f64 = answer["data"]["result"][0]["value"][1]
                .as_str()?
                .parse()
                .ok()?;
            (value >= 5.0).then_some(value)
        }
        .await;
        if let Some(got) = got {
            recorded = got;
            break;
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert!(recorded >= 5.0, "{}", diagnose());
    let up = format!("http://127.0.0.1:{port}/api/v1/query?query=count(up%3D%3D1)");
    tests::eventually(
        "Prometheus to scrape the agent and the proxy",
        Duration::from_secs(30),
        async || {
            let (_, body) = curl(&[&up]);
            let answer: serde_json::Value = serde_json::from_str(&body).ok()?;
            (answer["data"]["result"][0]["value"][1].as_str()? == "2").then_some(())
        },
    )
    .await;

    // `ps` shows each instance's CPU and memory, and so does the API.
    let ps = tests::eventually("ps to show usage", Duration::from_secs(20), async || {
        let text = verb(&["ps", "metered"]);
        text.contains("mem ").then_some(text)
    })
    .await;
    assert!(ps.contains("cpu ") && ps.contains("MiB"), "{ps}");
    let (status, body) = curl(&[
        "-H",
        &bearer(&secret),
        &format!(
            "http://127.0.0.1:{}/api/v1/apps/metered/instances",
            running.api_port
        ),
    ]);
    assert_eq!(status, "200", "{body}");
    assert!(body.contains("\"memory_bytes\""), "{body}");
    drop(running);
}

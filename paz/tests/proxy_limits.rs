//! Out of file descriptors: `paz proxy` caps its connections below its
//! limit (the rest wait in the backlog) and serves again once they close;
//! in `paz up`, a flood of the proxy or the registry leaves SSH working.

mod common;

use std::net::TcpStream;
use std::time::Duration;

/// Lets this test process hold `n` sockets of its own.
fn allow_open_files(n: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft < n {
        setrlimit(Resource::RLIMIT_NOFILE, n.min(hard), hard).unwrap();
    }
}

/// Up to `n` idle connections to `port`: until one cannot connect (the
/// server takes no more and its backlog is full).
fn flood(port: u16, n: usize) -> Vec<TcpStream> {
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    (0..n)
        .map_while(|_| TcpStream::connect_timeout(&address, Duration::from_secs(3)).ok())
        .collect()
}

/// How many descriptors process `pid` holds.
fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[tokio::test]
async fn with_few_file_descriptors_the_proxy_holds_its_cap_and_then_serves_again() {
    let etcd = tests::own_etcd().await;
    let log = tests::temp_dir();
    let log_path = log.path().join("proxy.log");
    // Few descriptors: what the proxy needs to run, and a handful more.
    let paz = env!("CARGO_BIN_EXE_paz");
    let (_proxy, listening) = common::spawn_until(
        std::process::Command::new("sh")
            .env("PAZ_LOG", "warn")
            .env("NO_COLOR", "1")
            .arg("-c")
            .arg(format!(
                "ulimit -n 48 && exec {paz} proxy --etcd {} --http-listen 127.0.0.1:0 --https-listen off --workers 1 --access-log off 2>{}",
                etcd.etcd.client_url(),
                log_path.display()
            )),
        "proxy listening on ",
    );
    let port: u16 = listening.rsplit(':').next().unwrap().parse().unwrap();
    // More connections than descriptors: the kernel completes them all, the
    // proxy can take only some.
    let held = flood(port, 80);
    std::thread::sleep(Duration::from_secs(2));
    let said = std::fs::read_to_string(&log_path).unwrap();
    // It stops taking connections at its cap (48 descriptors, less a
    // reserve, halved), instead of failing accepts.
    assert_eq!(
        said.matches("connection cap reached").count(),
        1,
        "the cap is said once: {said}"
    );
    assert!(said.contains("limit=8"), "{said}");
    assert!(!said.contains("accept failed"), "it ran out: {said}");

    // The held connections go; the proxy answers again.
    drop(held);
    tests::eventually(
        "the proxy to answer again",
        Duration::from_secs(10),
        async || (common::get(port, "nobody.example").0 == 404).then_some(()),
    )
    .await;
}

#[tokio::test]
async fn a_flood_of_the_proxy_or_the_registry_leaves_ssh_working() {
    allow_open_files(4096);
    let admin = tests::SshIdentity::new("ed25519");
    let admin_file = admin.private_key.with_extension("pub");
    let dir = tests::temp_dir();
    // 512 descriptors: the proxy may hold 128 connections, the registry 64.
    let mut running = common::start_with_nofile(
        512,
        &[
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--admin-key",
            admin_file.to_str().unwrap(),
        ],
        &[],
    );
    let pid = running.paz.child().id();
    let ssh_works = |when: &str| {
        let output = admin.ssh("paz@127.0.0.1", running.ssh_port, &["apps:list"]);
        assert!(
            output.status.success(),
            "{when}: SSH: {}",
            common::said(&output)
        );
    };
    let registry_answers = |when: &str| {
        let output = std::process::Command::new("curl")
            .args(["-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("http://127.0.0.1:{}/v2/", running.registry_port))
            .output()
            .unwrap();
        assert_eq!(common::stdout(&output), "401", "{when}: the registry");
    };

    // At most 2 x 128 for the proxy and 64 for the registry: three eighths
    // of the 512 stay free for SSH, git, etcd and Docker.
    let reserve_kept = |when: &str| {
        let held = open_files(pid);
        assert!(
            held <= 512 - 192,
            "{when}: paz holds {held} of 512 descriptors"
        );
    };

    // More connections to the proxy than the process has descriptors: it
    // takes 128, the rest wait in its backlog until that is full.
    let proxy_flood = flood(running.http_port, 1000);
    assert!(proxy_flood.len() >= 128, "{} connected", proxy_flood.len());
    reserve_kept("the proxy flooded");
    ssh_works("the proxy flooded");
    registry_answers("the proxy flooded");

    // The registry flooded too.
    let registry_flood = flood(running.registry_port, 1000);
    assert!(
        registry_flood.len() >= 64,
        "{} connected",
        registry_flood.len()
    );
    reserve_kept("the proxy and the registry flooded");
    ssh_works("the proxy and the registry flooded");

    // The floods go; both answer again.
    drop(proxy_flood);
    drop(registry_flood);
    tests::eventually(
        "the proxy to answer again",
        Duration::from_secs(10),
        async || (common::get(running.http_port, "nobody.example").0 == 404).then_some(()),
    )
    .await;
    registry_answers("after the floods");
    ssh_works("after the floods");
}

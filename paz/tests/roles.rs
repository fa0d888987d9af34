//! `paz up`'s roles under one supervisor: a role that fails stops Paz with
//! an error naming it (and etcd with it), and a signal gives the proxy its
//! whole drain to finish a slow request.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;

#[test]
fn a_role_that_fails_stops_paz_up_with_its_name() {
    let dir = tests::temp_dir();
    let mut paz = tests::ChildGuard::spawn(
        common::paz()
            .args(["up", "--data-dir", dir.path().to_str().unwrap()])
            .args([
                "--ssh-listen",
                "127.0.0.1:0",
                "--registry-listen",
                "127.0.0.1:0",
            ])
            .args([
                "--http-listen",
                "127.0.0.1:0",
                "--https-listen",
                "127.0.0.1:0",
            ])
            .env("FAILPOINTS", "scheduler=return")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let status = paz
        .wait_timeout(Duration::from_secs(60))
        .expect("paz up exits when a role fails");
    let mut said = String::new();
    paz.child()
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut said)
        .unwrap();
    assert!(
        !status.success(),
        "a failed role is a non-zero exit: {said}"
    );
    assert!(
        said.contains("the scheduler failed: stopping Paz"),
        "the role is named: {said}"
    );
    // The others were stopped, and its etcd with them.
    assert!(said.contains("stopping every role"), "{said}");
    assert!(said.contains("local etcd stopped"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_lets_the_proxy_finish_a_request_of_25_seconds() {
    let dir = tests::temp_dir();
    let mut running = common::start(&["--data-dir", dir.path().to_str().unwrap()], &[]);
    // A backend that answers 25 s after it is asked.
    let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let backend_addr = backend.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut stream, _) = backend.accept().unwrap();
        let mut buffer = [0u8; 4096];
        let _ = stream.read(&mut buffer).unwrap();
        std::thread::sleep(Duration::from_secs(25));
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow");
    });
    let store = running.store("/paz").await;
    let app = store::AppName::new("slow").unwrap();
    store
        .put(
            &store.keys().app(&app),
            &store::records::App::new(app.clone(), 1),
        )
        .await
        .unwrap();
    let service = store.keys().service(&app, 1, "1").unwrap();
    store
        .put(&service, &backend_addr.to_string())
        .await
        .unwrap();
    let port = running.http_port;
    let request = std::thread::spawn(move || {
        // The table learns the route within moments of the write (a probe
        // would use up the backend's one answer).
        std::thread::sleep(Duration::from_secs(2));
        Command::new("curl")
            .args(["-s", "-m", "60", "-H", "Host: slow.paz.localhost"])
            .arg(format!("http://127.0.0.1:{port}/"))
            .output()
            .unwrap()
    });
    // The request is under way; then Paz is told to stop.
    std::thread::sleep(Duration::from_secs(4));
    running.paz.signal(Signal::SIGTERM);
    let answer = request.join().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&answer.stdout),
        "slow",
        "the request in flight is answered: {}",
        String::from_utf8_lossy(&answer.stderr)
    );
    let status = running
        .paz
        .wait_timeout(Duration::from_secs(60))
        .expect("paz up exits after the drain");
    assert!(status.success(), "{status}");
}

//! `paz proxy` out of file descriptors: it pauses instead of spinning on the
//! failed accepts, and serves again once connections close.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::Stdio;
use std::time::Duration;

use tests::ChildGuard;

#[tokio::test]
async fn out_of_file_descriptors_the_proxy_pauses_and_then_serves_again() {
    let etcd = tests::own_etcd().await;
    let log = tests::temp_dir();
    let log_path = log.path().join("proxy.log");
    // Few descriptors: what the proxy needs to run, and a handful more.
    let paz = env!("CARGO_BIN_EXE_paz");
    let mut proxy = ChildGuard::spawn(
        std::process::Command::new("sh")
            .env("PAZ_LOG", "warn")
            .arg("-c")
            .arg(format!(
                "ulimit -n 48 && exec {paz} proxy --etcd {} --http-listen 127.0.0.1:0 --workers 1 --access-log off 2>{}",
                etcd.etcd.client_url(),
                log_path.display()
            ))
            .stdout(Stdio::piped()),
    );
    let stdout = proxy.child().stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let port: u16 = loop {
        let line = lines
            .next()
            .expect("the proxy said where it listens")
            .unwrap();
        if let Some(address) = line.strip_prefix("proxy listening on ") {
            break address.rsplit(':').next().unwrap().parse().unwrap();
        }
    };

    // More connections than descriptors: the kernel completes them all, the
    // proxy can take only some.
    let held: Vec<_> = (0..80)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let said = std::fs::read_to_string(&log_path).unwrap();
    let pauses = said.matches("accept failed; pausing").count();
    assert!(pauses >= 1, "the accepts failed: {said}");
    // Spinning would log thousands of lines in two seconds; pausing, a few dozen.
    assert!(pauses <= 60, "{pauses} failed accepts logged: it spins");

    // The held connections go; the proxy answers again.
    drop(held);
    let mut answer = String::new();
    for _ in 0..50 {
        answer.clear();
        if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = stream.write_all(b"GET / HTTP/1.0\r\nHost: nobody.example\r\n\r\n");
            let _ = stream.read_to_string(&mut answer);
            if answer.starts_with("HTTP/1.0 404") || answer.starts_with("HTTP/1.1 404") {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(answer.contains(" 404 "), "{answer}");
}

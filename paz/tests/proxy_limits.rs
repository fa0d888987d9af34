//! `paz proxy` out of file descriptors: it pauses instead of spinning on the
//! failed accepts, and serves again once connections close.

mod common;

use std::time::Duration;

#[tokio::test]
async fn out_of_file_descriptors_the_proxy_pauses_and_then_serves_again() {
    let etcd = tests::own_etcd().await;
    let log = tests::temp_dir();
    let log_path = log.path().join("proxy.log");
    // Few descriptors: what the proxy needs to run, and a handful more.
    let paz = env!("CARGO_BIN_EXE_paz");
    let (_proxy, listening) = common::spawn_until(
        std::process::Command::new("sh")
            .env("PAZ_LOG", "warn")
            .arg("-c")
            .arg(format!(
                "ulimit -n 48 && exec {paz} proxy --etcd {} --http-listen 127.0.0.1:0 --workers 1 --access-log off 2>{}",
                etcd.etcd.client_url(),
                log_path.display()
            )),
        "proxy listening on ",
    );
    let port: u16 = listening.rsplit(':').next().unwrap().parse().unwrap();
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
    let mut answer = (0, String::new());
    for _ in 0..50 {
        answer = common::get(port, "nobody.example");
        if answer.0 == 404 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(answer.0, 404, "{answer:?}");
}

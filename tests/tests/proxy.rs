//! The proxy with real etcd and real HTTP backends (in-process axum servers):
//! routing, forwarding, retries and drains under load, static stability, and
//! bad input.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use store::{AppName, Store};

/// A backend answering `NAME` plus the forwarded headers it saw.
struct Backend {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

async fn backend(name: &'static str) -> Backend {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route(
            "/",
            axum::routing::get(move |headers: HeaderMap| async move {
                let seen = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-")
                        .to_string()
                };
                format!(
                    "{name} for={} proto={} host={} id={}",
                    seen("x-forwarded-for"),
                    seen("x-forwarded-proto"),
                    seen("x-forwarded-host"),
                    seen("x-request-id")
                )
            }),
        )
        .route(
            "/slow",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                "slow"
            }),
        );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
    });
    Backend {
        addr,
        stop: Some(stop),
        task,
    }
}

impl Backend {
    /// Stops taking requests, finishing those in flight.
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.task.await;
    }
}

struct Fixture {
    store: Store,
    addr: SocketAddr,
    metrics: SocketAddr,
    http: reqwest::Client,
    _stop: tokio::sync::watch::Sender<bool>,
}

async fn proxy(store: Store, tune: impl FnOnce(&mut proxy::ProxyConfig)) -> Fixture {
    store
        .put(&store.keys().domain(), &"paz.test".to_string())
        .await
        .unwrap();
    let mut config = proxy::ProxyConfig {
        access_log: proxy::AccessLog::Off,
        // Both backend paths pass the same tests: PAZ_BACKEND_HTTP=hyper.
        backend_http: std::env::var("PAZ_BACKEND_HTTP")
            .map(|client| client.parse().expect("PAZ_BACKEND_HTTP is hyper or direct"))
            .unwrap_or_default(),
        ..Default::default()
    };
    tune(&mut config);
    let proxy = proxy::Proxy::new(config, store.clone()).expect("the proxy starts");
    let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = metrics_listener.local_addr().unwrap();
    // The task ends when the test's runtime does.
    drop(proxy.serve_metrics(metrics_listener));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(proxy.serve(listener, async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    Fixture {
        store,
        addr,
        metrics,
        http,
        _stop: stop,
    }
}

async fn add_app(store: &Store, name: &str, domains: &[&str]) {
    let app = AppName::new(name).unwrap();
    let mut record = store::records::App::new(app.clone(), 1);
    record.domains = domains.iter().map(|d| d.to_string()).collect();
    store.put(&store.keys().app(&app), &record).await.unwrap();
}

async fn announce(store: &Store, app: &str, instance: &str, addr: SocketAddr) {
    let key = store
        .keys()
        .service(&AppName::new(app).unwrap(), 1, instance)
        .unwrap();
    store.put(&key, &addr.to_string()).await.unwrap();
}

async fn withdraw(store: &Store, app: &str, instance: &str) {
    let key = store
        .keys()
        .service(&AppName::new(app).unwrap(), 1, instance)
        .unwrap();
    store.delete(&key).await.unwrap();
}

impl Fixture {
    async fn get(&self, host: &str, path: &str) -> (u16, String) {
        let response = self
            .http
            .get(format!("http://{}{path}", self.addr))
            .header("Host", host)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// Waits until `host` answers with `status` (the table follows etcd; a
    /// watch that lost etcd reconnects with back-off): up to 15 s.
    async fn until(&self, host: &str, status: u16, body: &str) {
        tests::eventually(
            &format!("{host} to answer {status} with `{body}`"),
            Duration::from_secs(15),
            async || {
                let (got, text) = self.get(host, "/").await;
                (got == status && text.contains(body)).then_some(())
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hosts_and_domains_route_to_their_app_and_the_rest_is_404_or_503() {
    let dir = tests::temp_dir();
    let access_log = dir.path().join("access.log");
    let fixture = proxy(tests::test_store("proxy-routing").await, |config| {
        config.access_log = proxy::AccessLog::File(access_log.clone());
    })
    .await;
    let a = backend("A").await;
    add_app(&fixture.store, "web", &["www.example.com"]).await;
    add_app(&fixture.store, "idle", &[]).await;
    announce(&fixture.store, "web", "1", a.addr).await;
    fixture.until("web.paz.test", 200, "A").await;

    let (_, text) = fixture.get("www.example.com:8080", "/").await;
    assert!(
        text.starts_with("A for=127.0.0.1 proto=http host=www.example.com id="),
        "{text}"
    );
    let (status, text) = fixture.get("WEB.PAZ.TEST", "/").await;
    assert_eq!(status, 200, "hosts are case-insensitive: {text}");
    let given = fixture
        .http
        .get(format!("http://{}/", fixture.addr))
        .header("Host", "web.paz.test")
        .header("X-Request-Id", "abc-123")
        .header("X-Forwarded-For", "10.1.2.3")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // The client's own claim of where it is from is not passed on: the edge says.
    assert!(
        given.contains("id=abc-123") && given.contains("for=127.0.0.1 "),
        "{given}"
    );
    // A request id that would forge access-log fields is replaced.
    let forged = fixture
        .http
        .get(format!("http://{}/", fixture.addr))
        .header("Host", "web.paz.test")
        .header("X-Request-Id", "x app=admin status=200")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let id = forged.rsplit("id=").next().unwrap();
    assert!(
        id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()),
        "{forged}"
    );

    let (status, text) = fixture.get("nobody.paz.test", "/").await;
    assert_eq!(status, 404);
    assert!(text.contains("no app serves nobody.paz.test"), "{text}");
    let (status, text) = fixture.get("idle.paz.test", "/").await;
    assert_eq!(status, 503);
    assert!(text.contains("idle has no healthy instance"), "{text}");
    let (status, _) = fixture.get("web_paz!test", "/").await;
    assert_eq!(status, 400);

    let metrics = fixture
        .http
        .get(format!("http://{}/metrics", fixture.metrics))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "paz_proxy_requests_total{app=\"web\",status=\"200\"}",
        "paz_proxy_requests_total{app=\"idle\",status=\"503\"} 1",
        // (404s also come while the route is being learnt: any count.)
        "paz_proxy_requests_total{app=\"-\",status=\"404\"}",
        "paz_proxy_table_backends 1",
        "paz_proxy_request_duration_seconds_count",
        "paz_proxy_last_sync_age_seconds",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }

    // One access log line per request; the writer flushes within 200 ms.
    let wanted = [
        "app=web status=200 method=GET path=\"/\" ".to_string(),
        format!(" backend={} request_id=abc-123\n", a.addr),
        "app=- status=404 method=GET path=\"/\" ".to_string(),
        "app=idle status=503 method=GET path=\"/\" ".to_string(),
        "app=- status=400 ".to_string(),
    ];
    let log = tests::eventually(
        "every wanted line to be in the access log",
        Duration::from_secs(10),
        async || {
            let log = std::fs::read_to_string(&access_log).unwrap_or_default();
            wanted
                .iter()
                .all(|line| log.contains(line.as_str()))
                .then_some(log)
        },
    )
    .await;
    assert!(
        log.lines().all(|line| line.contains(" duration_ms=")
            && line.ends_with(|c: char| c.is_ascii_alphanumeric() || c == '-')),
        "{log}"
    );
    a.stop().await;
}

/// Sends requests from 4 clients until `done`; returns (ok, failed).
fn load(
    fixture: &Fixture,
    done: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<(usize, Vec<String>)> {
    let (http, addr) = (fixture.http.clone(), fixture.addr);
    tokio::spawn(async move {
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut clients = Vec::new();
        for _ in 0..4 {
            let (http, done, ok, failed) = (http.clone(), done.clone(), ok.clone(), failed.clone());
            clients.push(tokio::spawn(async move {
                while !done.load(Ordering::Relaxed) {
                    let sent = http
                        .get(format!("http://{addr}/"))
                        .header("Host", "web.paz.test")
                        .send()
                        .await;
                    match sent {
                        Ok(response) if response.status() == 200 => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(response) => {
                            let line = format!(
                                "{} {}",
                                response.status(),
                                response.text().await.unwrap_or_default()
                            );
                            failed.lock().unwrap().push(line);
                        }
                        Err(error) => failed.lock().unwrap().push(error.to_string()),
                    }
                }
            }));
        }
        for client in clients {
            let _ = client.await;
        }
        let failed = failed.lock().unwrap().clone();
        (ok.load(Ordering::Relaxed), failed)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn adding_and_draining_instances_under_load_drops_no_request() {
    let fixture = proxy(tests::test_store("proxy-drain").await, |_| {}).await;
    add_app(&fixture.store, "web", &[]).await;
    let a = backend("A").await;
    announce(&fixture.store, "web", "1", a.addr).await;
    fixture.until("web.paz.test", 200, "A").await;

    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let running = load(&fixture, done.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let b = backend("B").await;
    announce(&fixture.store, "web", "2", b.addr).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    // A leaves: its key first, then, after a drain, its server.
    withdraw(&fixture.store, "web", "1").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.stop().await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    done.store(true, Ordering::Relaxed);
    let (ok, failed) = running.await.unwrap();
    assert!(ok > 50, "the load ran ({ok} requests)");
    assert!(
        failed.is_empty(),
        "{} of {} failed: {:?}",
        failed.len(),
        ok + failed.len(),
        &failed[..failed.len().min(5)]
    );
    fixture.until("web.paz.test", 200, "B").await;
    b.stop().await;
}

/// A backend answering `B` whose task owns its listener and every connection:
/// aborting the task kills the server outright, as a crash would.
async fn killable_backend() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            let service = hyper::service::service_fn(|_request| async {
                Ok::<_, std::convert::Infallible>(hyper::Response::new(axum::body::Body::from("B")))
            });
            connections.spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
            );
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_instance_still_announced_is_routed_around() {
    let fixture = proxy(tests::test_store("proxy-dead").await, |_| {}).await;
    add_app(&fixture.store, "web", &[]).await;
    let a = backend("A").await;
    let (b_addr, b) = killable_backend().await;
    announce(&fixture.store, "web", "1", a.addr).await;
    announce(&fixture.store, "web", "2", b_addr).await;
    fixture.until("web.paz.test", 200, "").await;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let running = load(&fixture, done.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    // B dies without its key going: its open connections close and its port
    // refuses new ones. Every later request picked for B must be retried on A.
    b.abort();
    let _ = b.await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    done.store(true, Ordering::Relaxed);
    let (ok, failed) = running.await.unwrap();
    // Only requests already on B's connections when it died may fail.
    assert!(
        failed.len() <= 4,
        "{} failed after B died: {:?}",
        failed.len(),
        failed
    );
    assert!(ok > 50);
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_last_table_serves_while_etcd_is_down_and_resyncs_after() {
    let mut own = tests::own_etcd().await;
    let store = tests::etcd::connect(&own.etcd.client_url(), "/paz").await;
    let fixture = proxy(store.clone(), |_| {}).await;
    add_app(&store, "web", &[]).await;
    add_app(&store, "api", &[]).await;
    let a = backend("A").await;
    announce(&store, "web", "1", a.addr).await;
    fixture.until("web.paz.test", 200, "A").await;

    own.etcd.stop().await;
    for _ in 0..10 {
        assert_eq!(
            fixture.get("web.paz.test", "/").await.0,
            200,
            "served from the last table"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    own.etcd.restart().await.unwrap();
    let writer = tests::etcd::connect(&own.etcd.client_url(), "/paz").await;
    let b = backend("B").await;
    announce(&writer, "api", "1", b.addr).await;
    fixture.until("api.paz.test", 200, "B").await;
    a.stop().await;
    b.stop().await;
}

/// Sends raw bytes, returns what comes back before the proxy closes or 5 s pass.
fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = stream.write_all(bytes);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_requests_get_a_4xx_or_are_closed_and_others_are_still_served() {
    let fixture = proxy(tests::test_store("proxy-bad").await, |config| {
        config.header_timeout = Duration::from_secs(1);
        config.max_header_bytes = 16 * 1024;
    })
    .await;
    add_app(&fixture.store, "web", &[]).await;
    let a = backend("A").await;
    announce(&fixture.store, "web", "1", a.addr).await;
    fixture.until("web.paz.test", 200, "A").await;
    let addr = fixture.addr;

    let answer = tokio::task::spawn_blocking(move || raw(addr, b"THIS IS NOT HTTP\r\n\r\n"))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: web.paz.test\r\nX-Big: {}\r\n\r\n",
        "x".repeat(64 * 1024)
    );
    let answer = tokio::task::spawn_blocking(move || raw(addr, huge.as_bytes()))
        .await
        .unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 431") || answer.is_empty(),
        "{answer:?}"
    );
    let answer =
        tokio::task::spawn_blocking(move || raw(addr, b"GET / HTTP/1.1\r\nHost: web paz\r\n\r\n"))
            .await
            .unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    // Two Host headers: which one routes is ambiguous, so neither does.
    let answer = tokio::task::spawn_blocking(move || {
        raw(
            addr,
            b"GET / HTTP/1.1\r\nHost: web.paz.test\r\nHost: other.paz.test\r\n\r\n",
        )
    })
    .await
    .unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 400") && answer.contains("two Host headers"),
        "{answer:?}"
    );
    // An absolute-form target's authority wins over Host.
    let answer = tokio::task::spawn_blocking(move || {
        raw(
            addr,
            b"GET http://nobody.paz.test/ HTTP/1.1\r\nHost: web.paz.test\r\n\r\n",
        )
    })
    .await
    .unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 404") && answer.contains("no app serves nobody.paz.test"),
        "{answer:?}"
    );
    // CONNECT is refused at once, not left hanging.
    let answer = tokio::task::spawn_blocking(move || {
        raw(
            addr,
            b"CONNECT web.paz.test:443 HTTP/1.1\r\nHost: web.paz.test:443\r\n\r\n",
        )
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer:?}");
    // A client that sends nothing at all, and one that stays idle after a
    // request on a kept-alive connection, are closed after the header
    // timeout rather than held open (each holds a descriptor).
    let silent = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buffer = [0u8; 1];
        matches!(stream.read(&mut buffer), Ok(0))
    });
    let idle = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: web.paz.test\r\n\r\n")
            .unwrap();
        let mut answer = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer) {
                Ok(0) => return (String::from_utf8_lossy(&answer).to_string(), true),
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
                Err(_) => return (String::from_utf8_lossy(&answer).to_string(), false),
            }
        }
    });
    assert!(silent.await.unwrap(), "a silent connection was left open");
    let (answer, closed) = idle.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(closed, "an idle kept-alive connection was left open");
    // A slow client sending its headers a byte at a time is cut off...
    let slow = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        let started = std::time::Instant::now();
        for byte in b"GET / HTTP/1.1\r\nHost: web.paz.test\r\nX-Slow: "
            .iter()
            .cycle()
        {
            if stream.write_all(&[*byte]).is_err() || started.elapsed() > Duration::from_secs(10) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        started.elapsed()
    });
    // ...while others are served.
    for _ in 0..5 {
        assert_eq!(fixture.get("web.paz.test", "/").await.0, 200);
    }
    let held = slow.await.unwrap();
    assert!(
        held < Duration::from_secs(10),
        "the slow client was closed ({held:?})"
    );
    a.stop().await;
}

/// The resident memory of this process, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gigabyte_streams_both_ways_without_being_held_in_memory() {
    const SIZE: u64 = 1 << 30;
    let fixture = proxy(tests::test_store("proxy-stream").await, |_| {}).await;
    add_app(&fixture.store, "web", &[]).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "streamer" }))
        .route(
            "/upload",
            axum::routing::post(|body: axum::body::Body| async move {
                use futures::StreamExt;
                let mut stream = body.into_data_stream();
                let mut total = 0u64;
                while let Some(chunk) = stream.next().await {
                    total += chunk.unwrap().len() as u64;
                }
                total.to_string()
            }),
        )
        .route(
            "/download",
            axum::routing::get(|| async {
                let chunk = axum::body::Bytes::from(vec![7u8; 1 << 20]);
                let stream = futures::stream::iter(
                    (0..1024).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
                );
                axum::body::Body::from_stream(stream)
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    announce(&fixture.store, "web", "1", addr).await;
    fixture.until("web.paz.test", 200, "streamer").await;

    let before = rss();
    let chunk = axum::body::Bytes::from(vec![9u8; 1 << 20]);
    let upload =
        futures::stream::iter((0..1024).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let response = fixture
        .http
        .post(format!("http://{}/upload", fixture.addr))
        .header("Host", "web.paz.test")
        .body(reqwest::Body::wrap_stream(upload))
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), SIZE.to_string());
    let mut download = fixture
        .http
        .get(format!("http://{}/download", fixture.addr))
        .header("Host", "web.paz.test")
        .send()
        .await
        .unwrap();
    let mut received = 0u64;
    let mut peak = rss();
    while let Some(chunk) = download.chunk().await.unwrap() {
        received += chunk.len() as u64;
        if received % (64 << 20) < chunk.len() as u64 {
            peak = peak.max(rss());
        }
    }
    assert_eq!(received, SIZE);
    let grown = peak.saturating_sub(before);
    assert!(
        grown < 64 << 20,
        "memory grew by {} MiB moving 1 GiB each way",
        grown >> 20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_answer_before_the_whole_upload_reaches_the_client_at_once() {
    let fixture = proxy(tests::test_store("proxy-early").await, |config| {
        config.response_timeout = Duration::from_secs(30);
    })
    .await;
    add_app(&fixture.store, "web", &[]).await;
    // A backend that refuses an upload from its head: it answers 413 and
    // reads none of the body (keeping the connection a while, as a server
    // that lingers does).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                // One request per connection: the probes' answers close
                // theirs, so the upload never goes to a pooled connection
                // whose handler is no longer reading.
                if head.starts_with(b"GET") {
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nearly")
                        .await;
                    return;
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 8\r\nconnection: close\r\n\r\ntoo much")
                    .await;
                tokio::time::sleep(Duration::from_secs(20)).await;
            });
        }
    });
    announce(&fixture.store, "web", "1", addr).await;
    fixture.until("web.paz.test", 200, "early").await;

    let proxy = fixture.addr;
    let answer = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(proxy).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(25)))
            .unwrap();
        stream
            .write_all(
                b"POST /upload HTTP/1.1\r\nhost: web.paz.test\r\ncontent-length: 67108864\r\n\r\n",
            )
            .unwrap();
        let mut uploader = stream.try_clone().unwrap();
        std::thread::spawn(move || {
            let chunk = vec![b'u'; 64 << 10];
            for _ in 0..1024 {
                if uploader.write_all(&chunk).is_err() {
                    return;
                }
            }
        });
        let mut answer = Vec::new();
        let mut byte = [0u8; 1];
        while !answer.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte) {
                Ok(1) => answer.push(byte[0]),
                _ => break,
            }
        }
        String::from_utf8_lossy(&answer).to_string()
    })
    .await
    .unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 413"),
        "the backend's early answer did not come through: {answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upgrades_like_websocket_pass_through_both_ways() {
    let fixture = proxy(tests::test_store("proxy-upgrade").await, |_| {}).await;
    add_app(&fixture.store, "web", &[]).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "echo server" }))
        .route(
            "/echo",
            axum::routing::get(|mut request: axum::extract::Request| async move {
                let upgrade = hyper::upgrade::on(&mut request);
                tokio::spawn(async move {
                    if let Ok(upgraded) = upgrade.await {
                        let (mut reader, mut writer) =
                            tokio::io::split(hyper_util::rt::TokioIo::new(upgraded));
                        let _ = tokio::io::copy(&mut reader, &mut writer).await;
                    }
                });
                axum::response::Response::builder()
                    .status(101)
                    .header("upgrade", "echo")
                    .header("connection", "upgrade")
                    .body(axum::body::Body::empty())
                    .unwrap()
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    announce(&fixture.store, "web", "1", addr).await;
    fixture.until("web.paz.test", 200, "echo server").await;

    let proxy = fixture.addr;
    let echoed = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(proxy).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        stream.write_all(b"GET /echo HTTP/1.1\r\nHost: web.paz.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n").unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_string();
        let mut answers = Vec::new();
        for message in ["ping", "pong!"] {
            stream.write_all(message.as_bytes()).unwrap();
            let mut back = vec![0u8; message.len()];
            stream.read_exact(&mut back).unwrap();
            answers.push(String::from_utf8(back).unwrap());
        }
        (head, answers)
    })
    .await
    .unwrap();
    assert!(echoed.0.starts_with("HTTP/1.1 101"), "{}", echoed.0);
    // The client sees what it switched to.
    let head = echoed.0.to_ascii_lowercase();
    assert!(
        head.contains("\r\nupgrade: echo\r\n") && head.contains("\r\nconnection: upgrade\r\n"),
        "{}",
        echoed.0
    );
    assert_eq!(echoed.1, ["ping", "pong!"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_speaking_http2_are_served_and_backends_get_http1() {
    use http_body_util::BodyExt;
    let fixture = proxy(tests::test_store("proxy-h2").await, |_| {}).await;
    let a = backend("A").await;
    add_app(&fixture.store, "web", &[]).await;
    announce(&fixture.store, "web", "1", a.addr).await;
    fixture.until("web.paz.test", 200, "A").await;

    // h2c with prior knowledge: the host travels as `:authority`, not `Host`.
    let stream = tokio::net::TcpStream::connect(fixture.addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("the proxy speaks HTTP/2");
    tokio::spawn(connection);
    for _ in 0..3 {
        let request = hyper::Request::get("http://web.paz.test/")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.version(), hyper::Version::HTTP_2);
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&body);
        assert!(
            text.starts_with("A for=127.0.0.1 proto=http host=web.paz.test id="),
            "{text}"
        );
    }
    let request = hyper::Request::get("http://nobody.paz.test/")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    assert_eq!(sender.send_request(request).await.unwrap().status(), 404);
    a.stop().await;
}

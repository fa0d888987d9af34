//! The proxy's two backend paths side by side (`--backend-http hyper` and
//! `direct`), against raw TCP backends that send exactly the bytes given:
//! the adversarial corpus and generated answers reach the client as the same
//! status, headers and body through both, or are refused by both; and a
//! pooled backend connection never hands one request another's answer.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use h1::corpus::{Case, Expect};
use store::{AppName, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A proxy on `path`, serving the apps in `store` on its own port.
async fn proxy(store: &Store, path: proxy::BackendHttp) -> SocketAddr {
    let config = proxy::ProxyConfig {
        access_log: proxy::AccessLog::Off,
        backend_http: path,
        response_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    let proxy = proxy::Proxy::new(config, store.clone()).expect("the proxy starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // The task ends when the test's runtime does.
    tokio::spawn(proxy.serve(listener, std::future::pending()));
    addr
}

/// An app `name` routed to the one backend at `backend`.
async fn route(store: &Store, name: &str, backend: SocketAddr) {
    store
        .put(&store.keys().domain(), &"paz.test".to_string())
        .await
        .unwrap();
    let app = AppName::new(name).unwrap();
    let record = store::records::App::new(app.clone(), 1);
    store.put(&store.keys().app(&app), &record).await.unwrap();
    let key = store.keys().service(&app, 1, "1").unwrap();
    store.put(&key, &backend.to_string()).await.unwrap();
}

/// Reads one request head from `stream` (the proxies send no body here):
/// its path, or `None` when the connection ends first.
async fn read_request(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            buf.drain(..end + 4);
            return head.split(' ').nth(1).map(str::to_string);
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A raw TCP backend on a port of its own: `serve` takes each connection
/// it accepts, in a task of its own.
async fn raw_backend<F>(serve: impl Fn(tokio::net::TcpStream) -> F + Send + 'static) -> SocketAddr
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream));
        }
    });
    addr
}

/// A backend that answers `/N` with `answers[N]`, byte for byte, and closes.
async fn replay(answers: Arc<Vec<Vec<u8>>>) -> SocketAddr {
    raw_backend(move |mut stream| {
        let answers = answers.clone();
        async move {
            let mut buf = Vec::new();
            let Some(path) = read_request(&mut stream, &mut buf).await else {
                return;
            };
            let n: usize = path.trim_start_matches('/').parse().unwrap();
            let _ = stream.write_all(&answers[n]).await;
            let _ = stream.shutdown().await;
        }
    })
    .await
}

/// What reached the client.
#[derive(PartialEq, Eq)]
enum Seen {
    /// A whole answer: its status, its headers (all but `date`, which each
    /// proxy stamps) and its body.
    Answer {
        status: u16,
        headers: BTreeMap<String, Vec<String>>,
        body: Vec<u8>,
    },
    /// The proxy's 502: it refused the backend's answer.
    Refused,
    /// The connection was cut, before the head or within the body (which of
    /// the two depends on when the head was flushed).
    Cut,
}

impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Seen::Answer {
                status,
                headers,
                body,
            } => write!(
                f,
                "{status} {headers:?} body {:?}",
                String::from_utf8_lossy(&body[..body.len().min(60)])
            ),
            Seen::Refused => write!(f, "502"),
            Seen::Cut => write!(f, "cut"),
        }
    }
}

async fn ask(
    client: &reqwest::Client,
    proxy: SocketAddr,
    host: &str,
    n: usize,
    head: bool,
) -> Seen {
    let url = format!("http://{proxy}/{n}");
    let request = if head {
        client.head(url)
    } else {
        client.get(url)
    };
    let Ok(response) = request.header("Host", host).send().await else {
        return Seen::Cut;
    };
    let status = response.status().as_u16();
    if status == 502 {
        return Seen::Refused;
    }
    let mut headers = BTreeMap::<String, Vec<String>>::new();
    for (name, value) in response.headers() {
        if name != "date" {
            headers
                .entry(name.to_string())
                .or_default()
                .push(String::from_utf8_lossy(value.as_bytes()).to_string());
        }
    }
    match response.bytes().await {
        Ok(body) => Seen::Answer {
            status,
            headers,
            body: body.to_vec(),
        },
        Err(_) => Seen::Cut,
    }
}

/// Generated well-formed answers: statuses with and without a body, each
/// framing (length, chunks with extensions and trailers, close), sizes
/// around the read buffer's, and headers of mixed case.
fn generated() -> Vec<(String, Vec<u8>)> {
    let mut answers = Vec::new();
    let mut seed = 0x9e37_79b9_u32;
    let mut next = move |below: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed as usize % below
    };
    for status in [
        "200 OK",
        "201 Created",
        "404 Not Found",
        "500 Oops",
        "204 No Content",
        "304 Not Modified",
    ] {
        for size in [0usize, 1, 7, 4096, 16 * 1024 + 3, 70_000] {
            for framing in ["length", "chunked", "close"] {
                let body: Vec<u8> = (0..size).map(|i| b"abcdefghij"[(i + size) % 10]).collect();
                let mut wire = format!("HTTP/1.1 {status}\r\n").into_bytes();
                for i in 0..next(4) {
                    let name = ["X-Gen", "x-gen", "X-GEN-Other", "Cache-Control"][i];
                    wire.extend(format!("{name}: v{}\r\n", next(1000)).bytes());
                }
                let no_body = status.starts_with("204") || status.starts_with("304");
                match framing {
                    "length" => {
                        wire.extend(format!("Content-Length: {size}\r\n\r\n").bytes());
                        if !no_body {
                            wire.extend(&body);
                        }
                    }
                    "chunked" => {
                        wire.extend(b"Transfer-Encoding: chunked\r\n\r\n");
                        if !no_body {
                            let mut at = 0;
                            while at < size {
                                let take = (1 + next(9000)).min(size - at);
                                let ext = if next(3) == 0 { ";name=value" } else { "" };
                                wire.extend(format!("{take:x}{ext}\r\n").bytes());
                                wire.extend(&body[at..at + take]);
                                wire.extend(b"\r\n");
                                at += take;
                            }
                            wire.extend(b"0\r\n");
                            if next(2) == 0 {
                                wire.extend(b"X-Trailer: t\r\n");
                            }
                            wire.extend(b"\r\n");
                        }
                    }
                    _ => {
                        wire.extend(b"\r\n");
                        if !no_body {
                            wire.extend(&body);
                        }
                    }
                }
                answers.push((format!("{status} {size} {framing}"), wire));
            }
        }
    }
    answers
}

/// Was the answer refused (a 502), or the connection cut?
fn refused(seen: &Seen) -> bool {
    !matches!(seen, Seen::Answer { .. })
}

/// Does what reached the client agree with what the corpus says hyper's
/// client does? What it refuses is refused; what it reads is delivered as
/// it reads it, or refused (the proxy may be stricter than hyper).
fn agrees(case: &Case, seen: &Seen) -> bool {
    match (&case.expect, seen) {
        (Expect::Refuse, seen) => refused(seen),
        (Expect::Body(want), Seen::Answer { body, .. }) => body == want,
        (Expect::Body(_), _) | (Expect::CloseDelimited, _) => true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_corpus_and_generated_answers_reach_the_client_alike_on_both_paths() {
    let corpus: Vec<Case> = h1::corpus::cases()
        .into_iter()
        .filter(|case| !case.request)
        .collect();
    let generated = generated();
    let mut answers: Vec<Vec<u8>> = corpus.iter().map(|case| case.wire.clone()).collect();
    answers.extend(generated.iter().map(|(_, wire)| wire.clone()));
    let backend = replay(Arc::new(answers)).await;
    let store = tests::test_store("proxy-differential").await;
    route(&store, "diff", backend).await;
    let hyper_path = proxy(&store, proxy::BackendHttp::Hyper).await;
    let direct_path = proxy(&store, proxy::BackendHttp::Direct).await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    for addr in [hyper_path, direct_path] {
        tests::eventually(
            "the route to be in the table",
            Duration::from_secs(15),
            async || {
                let status = client
                    .get(format!("http://{addr}/{}", corpus.len()))
                    .header("Host", "diff.paz.test")
                    .send()
                    .await
                    .ok()?
                    .status();
                (status != 404 && status != 503).then_some(())
            },
        )
        .await;
    }

    let mut differ = Vec::new();
    let mut disagree = Vec::new();
    let mut delivered = 0;
    let named = corpus
        .iter()
        .map(|case| (case.name.clone(), case.head, Some(case)))
        .chain(
            generated
                .iter()
                .map(|(name, _)| (name.clone(), false, None)),
        );
    for (n, (name, head, case)) in named.enumerate() {
        let through_hyper = ask(&client, hyper_path, "diff.paz.test", n, head).await;
        let through_direct = ask(&client, direct_path, "diff.paz.test", n, head).await;
        if through_hyper != through_direct {
            differ.push(format!(
                "{name}:\n  hyper:  {through_hyper:?}\n  direct: {through_direct:?}"
            ));
        }
        // Generated answers are well formed: both paths deliver them whole.
        let wanted = match case {
            Some(case) => agrees(case, &through_hyper),
            None => !refused(&through_hyper),
        };
        delivered += usize::from(!refused(&through_direct));
        if !wanted {
            disagree.push(format!("{name}: {through_hyper:?}"));
        }
    }
    // Most answers are good ones; a path refusing them all proves nothing.
    assert!(
        delivered > generated.len() + 20,
        "only {delivered} answers delivered"
    );
    assert!(
        disagree.is_empty() && differ.is_empty(),
        "through hyper's path, not what hyper's client is recorded to do:\n{}\n\
         {} of {} answers reached the client differently:\n{}",
        disagree.join("\n"),
        differ.len(),
        corpus.len() + generated.len(),
        differ.join("\n")
    );
}

/// The answer `ok`, and a second one no request asked for.
const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
const EVIL: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil";

/// A keep-alive backend: `/own/ID` is answered with a body naming ID (by
/// length or in chunks, of a size that ID picks); `/split/ID` with `ok`
/// followed in the same send by a second, unasked answer `evil`, as a
/// response-splitting backend does; `/late/ID` with `ok`, and `evil` 50 ms
/// later, while the connection is idle. It counts the connections it accepts.
async fn keep_alive_backend(connections: Arc<AtomicUsize>) -> SocketAddr {
    raw_backend(move |mut stream| {
        connections.fetch_add(1, Ordering::Relaxed);
        async move {
            let mut buf = Vec::new();
            while let Some(path) = read_request(&mut stream, &mut buf).await {
                let answer = if path.starts_with("/split/") {
                    [OK, EVIL].concat()
                } else if path.starts_with("/late/") {
                    OK.to_vec()
                } else {
                    own_answer(&path)
                };
                if stream.write_all(&answer).await.is_err() {
                    return;
                }
                if path.starts_with("/late/") {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    if stream.write_all(EVIL).await.is_err() {
                        return;
                    }
                }
            }
        }
    })
    .await
}

/// GET `path` of `host` through `proxy`: the status and the whole body.
async fn fetch(
    client: &reqwest::Client,
    proxy: SocketAddr,
    host: &str,
    path: &str,
) -> (u16, bytes::Bytes) {
    let response = client
        .get(format!("http://{proxy}{path}"))
        .header("Host", host)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.bytes().await.unwrap())
}

fn own_body(id: usize) -> Vec<u8> {
    format!("answer to {id};").repeat(id % 97 * 13).into_bytes()
}

fn own_answer(path: &str) -> Vec<u8> {
    let id: usize = path.trim_start_matches("/own/").parse().unwrap();
    let body = own_body(id);
    let mut wire = Vec::new();
    if id.is_multiple_of(2) {
        wire.extend(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).bytes());
        wire.extend(&body);
    } else {
        wire.extend(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        for piece in body.chunks(1 + id % 1000) {
            wire.extend(format!("{:x}\r\n", piece.len()).bytes());
            wire.extend(piece);
            wire.extend(b"\r\n");
        }
        wire.extend(b"0\r\n\r\n");
    }
    wire
}

// One thread: the direct path's pools are per thread, so the request after
// a late answer is sure to be offered that connection.
#[tokio::test(flavor = "current_thread")]
async fn a_pooled_backend_connection_never_hands_one_request_another_answer() {
    let store = tests::test_store("proxy-pooled").await;
    for (app, path) in [
        ("pooled-hyper", proxy::BackendHttp::Hyper),
        ("pooled-direct", proxy::BackendHttp::Direct),
    ] {
        let connections = Arc::new(AtomicUsize::new(0));
        let backend = keep_alive_backend(connections.clone()).await;
        route(&store, app, backend).await;
        let proxy = proxy(&store, path).await;
        let host = format!("{app}.paz.test");
        let client = reqwest::Client::new();
        tests::eventually(
            "the route to be in the table",
            Duration::from_secs(15),
            async || {
                let response = client
                    .get(format!("http://{proxy}/own/0"))
                    .header("Host", &host)
                    .send()
                    .await
                    .ok()?;
                (response.status() == 200).then_some(())
            },
        )
        .await;
        connections.store(0, Ordering::Relaxed);

        // 32 clients at once, each a mix of its own answers and splitting ones.
        let clients = 32;
        let each = 40;
        let mut tasks = Vec::new();
        for c in 0..clients {
            let (client, host) = (client.clone(), host.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..each {
                    let id: usize = c * each + i;
                    let split = id.is_multiple_of(5);
                    let path = if split {
                        format!("/split/{id}")
                    } else {
                        format!("/own/{id}")
                    };
                    let (status, body) = fetch(&client, proxy, &host, &path).await;
                    assert_eq!(status, 200, "{path}");
                    let want = if split { b"ok".to_vec() } else { own_body(id) };
                    assert!(
                        body.as_ref() == want.as_slice(),
                        "{path} got another answer: {:?}",
                        String::from_utf8_lossy(&body[..body.len().min(80)])
                    );
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        // The backend connections were reused, or this proved nothing.
        let opened = connections.load(Ordering::Relaxed);
        assert!(
            opened < clients * each * 4 / 5,
            "{path:?}: {opened} backend connections for {} requests: not pooled",
            clients * each
        );

        // Bytes a backend sends on a connection while it is idle in the pool
        // are no answer to the next request on it.
        let client = reqwest::Client::new();
        for id in 0..3 {
            let get = async |path: String| fetch(&client, proxy, &host, &path).await.1;
            assert_eq!(get(format!("/late/{id}")).await, "ok");
            tokio::time::sleep(Duration::from_millis(300)).await;
            let own = 2 * id + 2;
            assert_eq!(
                get(format!("/own/{own}")).await,
                own_body(own),
                "{path:?}: after a late answer"
            );
        }
    }
}

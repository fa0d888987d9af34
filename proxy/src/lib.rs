//! Paz's reverse proxy: routes `Host: <app>.<domain>` (and each app's extra
//! domains) to the app's healthy instances as etcd announces them, over
//! HTTP and over TLS with the certificates kept in etcd; answers the ACME
//! CA's HTTP-01 probes from etcd, so any edge host can.
//!
//! The routing table is rebuilt from etcd watches and swapped whole
//! (`ArcSwap`); a request never waits for it. If etcd goes away the last table
//! keeps serving. A request is retried on another instance only when its
//! connection failed before anything was sent.

#![forbid(unsafe_code)]

mod access_log;
mod batched;
mod certs;
mod direct;
mod first_bytes;
mod metrics;
mod pool;
pub mod table;
mod watch;

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::header::{HeaderName, HeaderValue, CONNECTION, HOST, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use store::Store;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

pub use crate::access_log::AccessLog;
use crate::certs::Certs;
use crate::pool::Pools;
use crate::table::{Backend, Table};

pub type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// How the proxy behaves.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub connect_timeout: Duration,
    /// From sending a request to the backend's response headers; then 504.
    pub response_timeout: Duration,
    /// How long a client may take to send its request headers.
    pub header_timeout: Duration,
    /// The largest request head (request line and headers).
    pub max_header_bytes: usize,
    /// The largest request body; `None`: no limit (bodies stream, never buffered).
    pub max_body_bytes: Option<usize>,
    /// Other instances tried when a connection fails before anything was sent.
    pub retries: usize,
    /// How long shutdown waits for requests in flight.
    pub shutdown_timeout: Duration,
    /// Where the line per request goes.
    pub access_log: AccessLog,
    /// The most client connections held at once, over all workers; more wait
    /// in the kernel's backlog until one closes. Each holds up to two file
    /// descriptors (the client's and a backend's), so the binary sets this
    /// from the open-file limit, keeping a reserve for the roles beside it.
    pub max_connections: usize,
    /// Which HTTP/1 client talks to the backends.
    pub backend_http: BackendHttp,
}

/// The HTTP/1 client that talks to the backends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BackendHttp {
    /// hyper's client.
    Hyper,
    /// Paz's own codec (`h1`) on plain sockets, pooled per worker thread:
    /// the default, as it is the faster (bench/proxy) and passes the proof
    /// (h1's property, fuzz and corpus tests; tests/tests/proxy_differential.rs).
    #[default]
    Direct,
}

impl std::str::FromStr for BackendHttp {
    type Err = String;

    fn from_str(text: &str) -> Result<BackendHttp, String> {
        match text {
            "hyper" => Ok(BackendHttp::Hyper),
            "direct" => Ok(BackendHttp::Direct),
            other => Err(format!(
                "{other:?} is not a backend HTTP client: say hyper or direct"
            )),
        }
    }
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            connect_timeout: Duration::from_secs(3),
            response_timeout: Duration::from_secs(60),
            header_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            max_body_bytes: None,
            retries: 2,
            shutdown_timeout: Duration::from_secs(30),
            access_log: AccessLog::default(),
            max_connections: 10_000,
            backend_http: BackendHttp::default(),
        }
    }
}

struct State {
    config: ProxyConfig,
    store: Store,
    table: Arc<ArcSwap<Table>>,
    certs: Arc<ArcSwap<Certs>>,
    tls: Arc<rustls::ServerConfig>,
    /// The HTTPS listener's port, for redirects (0: no HTTPS served).
    https_port: AtomicU16,
    /// The pending ACME challenges by token, from etcd.
    challenges: Arc<ArcSwap<Challenges>>,
    /// Reads of etcd for a challenge the watch has not brought yet: few at once.
    challenge_reads: tokio::sync::Semaphore,
    pools: Pools,
    metrics: Arc<metrics::Metrics>,
    access_log: Option<access_log::Writer>,
    /// One slot per client connection, shared by every worker.
    slots: support::Slots,
}

/// What became of one request, for the metrics and the access log.
#[derive(Default)]
struct Outcome {
    app: Option<store::AppName>,
    backend: Option<Arc<Backend>>,
    request_id: Option<HeaderValue>,
}

/// The key authorizations of the pending HTTP-01 challenges, by token.
type Challenges = std::collections::HashMap<String, String>;

/// Where the proxy serves: plain HTTP, and HTTPS if given.
#[derive(Debug)]
pub struct Listeners {
    pub http: std::net::TcpListener,
    pub https: Option<std::net::TcpListener>,
}

/// The proxy: a routing table kept current from etcd, and the HTTP server.
pub struct Proxy {
    state: Arc<State>,
    watcher: JoinHandle<()>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("backends", &self.state.table.load().size())
            .finish()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

fn page(status: StatusCode, text: String) -> Response<Body> {
    let html = format!("<!doctype html><title>{status}</title><h1>{status}</h1><p>{text}</p>\n");
    let mut response = Response::new(
        Full::new(Bytes::from(html))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

/// The host a request is for: lowercase, without its port. An absolute-form
/// target's authority (and HTTP/2's `:authority`) wins over `Host`, as RFC
/// 9112 says; two `Host` headers, or a host with characters no host name
/// has, are the client's error.
fn host_of(request: &Request<hyper::body::Incoming>) -> Result<String, &'static str> {
    host_from(request.uri(), request.headers())
}

/// [`host_of`], from a request's target and headers.
fn host_from(uri: &hyper::Uri, headers: &hyper::HeaderMap) -> Result<String, &'static str> {
    const INVALID: &str = "the Host header is missing or is not a host name";
    let mut hosts = headers.get_all(HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err("the request has two Host headers: send one");
    }
    let host = match (uri.authority(), header) {
        (Some(authority), _) => authority.host(),
        (None, Some(value)) => {
            let raw = value.to_str().map_err(|_| INVALID)?;
            match raw.rsplit_once(':') {
                Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
                _ => raw,
            }
        }
        (None, None) => return Err(INVALID),
    }
    .trim_end_matches('.')
    .to_ascii_lowercase();
    let valid = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    valid.then_some(host).ok_or(INVALID)
}

/// Whether a client's `X-Request-Id` is one to keep: a short token that can
/// be logged as it is (no spaces, quotes or `=` to forge log fields with).
fn is_request_id(value: &[u8]) -> bool {
    (1..=128).contains(&value.len())
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Headers that belong to one connection, not to the request.
const HOP_BY_HOP: [HeaderName; 8] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    hyper::header::PROXY_AUTHENTICATE,
    hyper::header::PROXY_AUTHORIZATION,
    hyper::header::TE,
    hyper::header::TRAILER,
    hyper::header::TRANSFER_ENCODING,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

impl Proxy {
    /// Starts the watches that keep the table current, and the access log.
    pub fn new(config: ProxyConfig, store: Store) -> std::io::Result<Proxy> {
        let access_log = access_log::Writer::start(&config.access_log)?;
        let table = Arc::new(ArcSwap::from_pointee(Table::default()));
        let certs = Arc::new(ArcSwap::from_pointee(Certs::default()));
        let challenges = Arc::new(ArcSwap::from_pointee(Challenges::new()));
        let metrics = Arc::new(metrics::Metrics::new());
        let watcher = tokio::spawn(watch::keep_current(
            store.clone(),
            table.clone(),
            certs.clone(),
            challenges.clone(),
            metrics.clone(),
        ));
        let pools = Pools::new(config.connect_timeout);
        let slots = support::Slots::new("proxy", config.max_connections);
        Ok(Proxy {
            state: Arc::new(State {
                slots,
                config,
                store,
                table,
                tls: certs::server_config(certs.clone()),
                certs,
                https_port: AtomicU16::new(0),
                challenges,
                challenge_reads: tokio::sync::Semaphore::new(4),
                pools,
                metrics,
                access_log,
            }),
            watcher,
        })
    }

    /// How many certificates the proxy can serve now.
    pub fn certificates(&self) -> usize {
        self.state.certs.load().len()
    }

    /// How many backends the table routes to now.
    pub fn backends(&self) -> usize {
        self.state.table.load().size()
    }

    /// Serves the Prometheus metrics on `listener` (any path) until the task is dropped.
    pub fn serve_metrics(&self, listener: tokio::net::TcpListener) -> JoinHandle<()> {
        let metrics = self.state.metrics.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let metrics = metrics.clone();
                let service =
                    hyper::service::service_fn(move |_request: Request<hyper::body::Incoming>| {
                        let text = metrics.render();
                        async move {
                            let mut response = Response::new(Full::new(Bytes::from(text)));
                            response.headers_mut().insert(
                                hyper::header::CONTENT_TYPE,
                                HeaderValue::from_static(telemetry::TEXT_FORMAT),
                            );
                            Ok::<_, Infallible>(response)
                        }
                    });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        })
    }

    /// Serves on `listener` until `shutdown`; then stops accepting and lets
    /// requests in flight finish (up to the shutdown timeout).
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        serve_on(self.state.clone(), listener, None, shutdown).await
    }

    /// Like [`Proxy::serve`], on `workers` threads of their own (default: one
    /// per CPU), each accepting from `listener` and running a single-threaded
    /// event loop, as HAProxy's and nginx's workers do: a request never
    /// crosses threads. The routing table and the etcd watches stay shared.
    pub async fn serve_threads(
        self,
        listeners: Listeners,
        workers: Option<u16>,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let workers = match workers {
            Some(n) => usize::from(n.max(1)),
            None => std::thread::available_parallelism().map_or(1, usize::from),
        };
        let Listeners {
            http: listener,
            https,
        } = listeners;
        listener.set_nonblocking(true)?;
        if let Some(https) = &https {
            https.set_nonblocking(true)?;
            self.state
                .https_port
                .store(https.local_addr()?.port(), Ordering::Relaxed);
        }
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut running = Vec::new();
        for n in 0..workers {
            let listener = listener.try_clone()?;
            let https = https.as_ref().map(|https| https.try_clone()).transpose()?;
            let state = self.state.clone();
            let mut stopped = stopped.clone();
            let (done, finished) = tokio::sync::oneshot::channel();
            std::thread::Builder::new()
                .name(format!("paz-proxy-{n}"))
                .spawn(move || {
                    let result = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .and_then(|runtime| {
                            runtime.block_on(async move {
                                let listener = tokio::net::TcpListener::from_std(listener)?;
                                let stop = async move {
                                    let _ = stopped.wait_for(|stop| *stop).await;
                                };
                                let Some(https) = https else {
                                    return serve_on(state, listener, None, stop).await;
                                };
                                let https = tokio::net::TcpListener::from_std(https)?;
                                let acceptor = TlsAcceptor::from(state.tls.clone());
                                let stop = futures::FutureExt::shared(Box::pin(stop));
                                let (plain, tls) = tokio::join!(
                                    serve_on(state.clone(), listener, None, stop.clone()),
                                    serve_on(state, https, Some(acceptor), stop),
                                );
                                plain.and(tls)
                            })
                        });
                    let _ = done.send(result);
                })?;
            running.push(finished);
        }
        let failed = tokio::select! {
            () = shutdown => None,
            (first, _, _) = futures::future::select_all(running.iter_mut()) => Some(first),
        };
        let _ = stop.send(true);
        let mut outcome = match failed {
            Some(Ok(Err(error))) => Err(error),
            Some(_) => Err(std::io::Error::other("a proxy worker thread stopped")),
            None => Ok(()),
        };
        for finished in running {
            if let Ok(Err(error)) = finished.await {
                if outcome.is_ok() {
                    outcome = Err(error);
                }
            }
        }
        outcome
    }
}

/// One event loop's accept loop, until `shutdown`; then graceful shutdown.
/// With `tls`, each connection's TLS handshake comes first (within the
/// header timeout), and its requests are marked HTTPS.
async fn serve_on(
    state: Arc<State>,
    listener: tokio::net::TcpListener,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(state.config.header_timeout)
        .max_buf_size(state.config.max_header_bytes.max(8192))
        .writev(false);
    tokio::pin!(shutdown);
    loop {
        // A connection is taken only with a slot for it: at the cap the rest
        // wait in the backlog, and the descriptors left serve the other roles.
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            slot = state.slots.take() => slot,
        };
        let (stream, client) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // The client gave up before we took it: nothing to wait for.
                Err(error) if matches!(
                    error.kind(),
                    std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset
                ) => continue,
                // Out of file descriptors or memory: retrying at once would
                // spin; wait a moment for connections to close.
                Err(error) => {
                    warn!(%error, "accept failed; pausing 100 ms");
                    tokio::select! {
                        _ = &mut shutdown => break,
                        () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    }
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let first_byte = state.config.header_timeout;
        let state = state.clone();
        let https = tls.is_some();
        // The client's address as a header value, made once per connection.
        let client_ip = HeaderValue::try_from(client.ip().to_string())
            .expect("an IP address is a header value");
        let service = hyper::service::service_fn(move |request| {
            let state = state.clone();
            let client_ip = client_ip.clone();
            async move {
                let started = Instant::now();
                // Only what the access log needs, and only when it is on.
                let asked = state
                    .access_log
                    .as_ref()
                    .map(|_| (request.method().clone(), request.uri().clone()));
                let mut outcome = Outcome::default();
                let response = handle(&state, request, client_ip, https, &mut outcome).await;
                let app = outcome.app.as_ref().map_or("-", |app| app.as_str());
                if let (Some(log), Some((method, uri))) = (&state.access_log, asked) {
                    log.log(&access_log::Entry {
                        app,
                        status: response.status().as_u16(),
                        method: method.as_str(),
                        path: uri.path_and_query().map_or("/", |p| p.as_str()),
                        duration: started.elapsed(),
                        backend: outcome.backend.as_ref().map_or("-", |b| b.addr.as_str()),
                        request_id: outcome
                            .request_id
                            .as_ref()
                            .and_then(|id| id.to_str().ok())
                            .unwrap_or("-"),
                    });
                }
                let seconds = started.elapsed().as_secs_f64();
                state
                    .metrics
                    .record(app, response.status().as_u16(), seconds);
                if response.status() == StatusCode::BAD_GATEWAY
                    || response.status() == StatusCode::GATEWAY_TIMEOUT
                {
                    state.metrics.backend_errors.inc();
                }
                Ok::<_, Infallible>(response)
            }
        });
        let (builder, watcher) = (builder.clone(), graceful.watcher());
        let tls = tls.clone();
        tokio::spawn(async move {
            let _slot = slot;
            if let Some(tls) = tls {
                // A handshake that does not finish within the header timeout
                // (or is not TLS at all) is closed, and so is one whose first
                // request bytes do not come within it after the handshake.
                let first = async move {
                    let mut stream = tls.accept(batched::Batched::new(stream)).await?;
                    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                        stream.get_mut().0.send_straight();
                    }
                    first_bytes::FirstBytes::read(stream).await
                };
                let Ok(Ok(Some(stream))) = tokio::time::timeout(first_byte, first).await else {
                    return;
                };
                let connection =
                    builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                let _ = watcher.watch(connection.into_owned()).await;
                return;
            }
            // A client that sends nothing is closed after the header timeout:
            // telling HTTP/1 from HTTP/2 waits for its first bytes, before
            // hyper's own header timeout runs.
            let mut first = [0u8; 3];
            let peeked = match tokio::time::timeout(first_byte, stream.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => n,
                _ => return,
            };
            let mut stream = batched::Batched::new(stream);
            // HTTP/2 with prior knowledge opens with `PRI * HTTP/2.0`.
            if &first[..peeked] == b"PRI" {
                stream.send_straight();
            }
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            let _ = watcher.watch(connection.into_owned()).await;
        });
    }
    info!("proxy: no longer accepting; finishing requests in flight");
    if tokio::time::timeout(state.config.shutdown_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("proxy: requests still in flight after the shutdown timeout");
    }
    Ok(())
}

/// Answers one request; notes in `outcome` which app and backend it went to.
async fn handle(
    state: &State,
    request: Request<hyper::body::Incoming>,
    client: HeaderValue,
    https: bool,
    outcome: &mut Outcome,
) -> Response<Body> {
    if request.method() == hyper::Method::CONNECT {
        let mut response = page(
            StatusCode::METHOD_NOT_ALLOWED,
            "CONNECT is not served: this is a reverse proxy for Paz's apps".to_string(),
        );
        response.headers_mut().insert(
            hyper::header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
        );
        return response;
    }
    if !https {
        if let Some(token) = request.uri().path().strip_prefix(ACME_CHALLENGE) {
            return acme_challenge(state, token).await;
        }
    }
    let host = match host_of(&request) {
        Ok(host) => host,
        Err(text) => return page(StatusCode::BAD_REQUEST, text.to_string()),
    };
    let table = state.table.load();
    let (target, settings) = match table.endpoints.get(&host) {
        Some(servers) => (Target::Endpoint(servers), Default::default()),
        None => match table.app_for(&host) {
            Some(app) => {
                outcome.app = Some(app.clone());
                (Target::App(app), table.https_of(app))
            }
            None => return page(StatusCode::NOT_FOUND, format!("no app serves {host}")),
        },
    };
    if !https && settings.redirect != Some(false) {
        let port = state.https_port.load(Ordering::Relaxed);
        if port != 0 && state.certs.load().find(&host, support::now()).is_some() {
            return redirect_to_https(&host, port, request.uri());
        }
    }
    let mut response = forward(state, &table, target, host, request, client, https, outcome).await;
    if https && settings.hsts {
        response
            .headers_mut()
            .entry(hyper::header::STRICT_TRANSPORT_SECURITY)
            .or_insert(HeaderValue::from_static("max-age=31536000"));
    }
    response
}

/// Where the ACME CA probes an HTTP-01 challenge (RFC 8555 §8.3).
const ACME_CHALLENGE: &str = "/.well-known/acme-challenge/";

/// The key authorization of a pending challenge, from etcd: whichever edge
/// host the CA reaches answers for the one that ordered. The watch's map
/// answers; a token it does not know yet is read from etcd, a few at once
/// (more get a 404), so that nobody can make the proxy load etcd.
async fn acme_challenge(state: &State, token: &str) -> Response<Body> {
    let Ok(key) = state.store.keys().acme_challenge(token) else {
        return page(StatusCode::NOT_FOUND, "no such challenge".to_string());
    };
    let known = state.challenges.load().get(token).cloned();
    let found = match known {
        Some(answer) => Ok(Some(answer)),
        None => match state.challenge_reads.try_acquire() {
            Ok(_permit) => state
                .store
                .get(&key)
                .await
                .map(|found| found.map(|f| f.value)),
            Err(_) => Ok(None),
        },
    };
    match found {
        Ok(Some(answer)) => {
            let mut response = Response::new(
                Full::new(Bytes::from(answer))
                    .map_err(|never| match never {})
                    .boxed(),
            );
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            response
        }
        Ok(None) => page(StatusCode::NOT_FOUND, "no such challenge".to_string()),
        Err(error) => {
            warn!(%error, "cannot read an ACME challenge from etcd");
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                "the challenge cannot be read now".to_string(),
            )
        }
    }
}

/// A 308 to the same place over HTTPS.
fn redirect_to_https(host: &str, port: u16, uri: &hyper::Uri) -> Response<Body> {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let location = match port {
        443 => format!("https://{host}{path}"),
        port => format!("https://{host}:{port}{path}"),
    };
    let mut response = page(
        StatusCode::PERMANENT_REDIRECT,
        format!("this site is served over HTTPS: {location}"),
    );
    if let Ok(location) = HeaderValue::try_from(location) {
        response
            .headers_mut()
            .insert(hyper::header::LOCATION, location);
    }
    response
}

/// What a request is forwarded to: an app's instances, or one of Paz's own endpoints.
#[derive(Clone, Copy)]
enum Target<'a> {
    App(&'a store::AppName),
    /// The servers publishing one of Paz's own names.
    Endpoint(&'a [Arc<Backend>]),
}

impl Target<'_> {
    fn pick(&self, table: &Table, tried: &[String]) -> Option<Arc<Backend>> {
        match self {
            Target::App(app) => table.pick(app, tried),
            Target::Endpoint(servers) => {
                let untried: Vec<&Arc<Backend>> = servers
                    .iter()
                    .filter(|backend| !tried.contains(&backend.addr))
                    .collect();
                match untried.len() {
                    0 => None,
                    n => Some(Arc::clone(untried[rand::random_range(0..n)])),
                }
            }
        }
    }
}

impl std::fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::App(app) => write!(f, "{app}"),
            Target::Endpoint(_) => write!(f, "Paz's own endpoint"),
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn forward(
    state: &State,
    table: &Table,
    app: Target<'_>,
    host: String,
    mut request: Request<hyper::body::Incoming>,
    client: HeaderValue,
    https: bool,
    outcome: &mut Outcome,
) -> Response<Body> {
    // What the backend is told about the original request. (`String`s
    // become header values without a copy.)
    // The proxy is the edge: it says who the client is, and what a client
    // claims of itself (`X-Forwarded-For`, `Forwarded`, `X-Real-IP`) goes.
    let authority = request.uri().authority().map(|a| a.as_str().to_string());
    let headers = request.headers_mut();
    headers.insert(X_FORWARDED_FOR, client);
    headers.remove(hyper::header::FORWARDED);
    headers.remove(X_REAL_IP);
    headers.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(if https { "https" } else { "http" }),
    );
    let host = HeaderValue::try_from(host).unwrap_or(HeaderValue::from_static(""));
    // The backend is told the host the request was routed by.
    match authority.and_then(|authority| HeaderValue::try_from(authority).ok()) {
        Some(authority) => {
            headers.insert(HOST, authority);
        }
        None if !headers.contains_key(HOST) => {
            headers.insert(HOST, host.clone());
        }
        None => {}
    }
    headers.insert(X_FORWARDED_HOST, host);
    let given = headers
        .get(&X_REQUEST_ID)
        .filter(|id| is_request_id(id.as_bytes()));
    let request_id = match given {
        Some(given) => given.clone(),
        None => {
            let mut hex = [0u8; 32];
            hex::encode_to_slice(rand::random::<u128>().to_be_bytes(), &mut hex)
                .expect("16 bytes are 32 hex digits");
            let id = HeaderValue::from_bytes(&hex).expect("hex digits are a header value");
            headers.insert(X_REQUEST_ID, id.clone());
            id
        }
    };
    outcome.request_id = Some(request_id);
    let upgrade = headers.contains_key(UPGRADE);
    if !upgrade {
        for name in HOP_BY_HOP {
            headers.remove(name);
        }
    }
    let mut client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    let (mut parts, body) = request.into_parts();
    let asked = h1::Asked {
        head: parts.method == hyper::Method::HEAD,
        upgrade,
    };
    parts.version = hyper::Version::HTTP_11;
    // The backend gets the origin form (`/path?query`), also when the client
    // sent the absolute form.
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        parts.uri = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .unwrap_or_default();
    }
    let body: Body = match state.config.max_body_bytes {
        Some(limit) => http_body_util::Limited::new(body, limit).boxed(),
        None => body
            .map_err(|error| Box::new(error) as Box<dyn std::error::Error + Send + Sync>)
            .boxed(),
    };
    let mut request = Some(Request::from_parts(parts, body));

    let mut tried: Vec<String> = Vec::new();
    for _ in 0..=state.config.retries {
        let Some(backend) = app.pick(table, &tried) else {
            break;
        };
        if state.config.backend_http == BackendHttp::Direct {
            // A failed connect sent nothing: the next instance gets the request.
            let checkout = match direct::checkout(&backend.addr, state.config.connect_timeout).await
            {
                Ok(checkout) => checkout,
                Err(error) => {
                    warn!(%app, backend = %backend.addr, %error, "backend unreachable; trying another");
                    tried.push(backend.addr.clone());
                    continue;
                }
            };
            outcome.backend = Some(backend.clone());
            backend.outstanding.fetch_add(1, Ordering::Relaxed);
            let sent = tokio::time::timeout(
                state.config.response_timeout,
                direct::send(
                    checkout,
                    &backend.addr,
                    state.config.connect_timeout,
                    request.take().expect("sent once"),
                    client_upgrade.take(),
                ),
            )
            .await;
            backend.outstanding.fetch_sub(1, Ordering::Relaxed);
            return answered(app, &backend, sent).unwrap_or_else(|failed| failed);
        }
        // A failed connect sent nothing: the next instance gets the request.
        let mut sender = match state.pools.get(&backend.addr).await {
            Ok(sender) => sender,
            Err(error) => {
                warn!(%app, backend = %backend.addr, %error, "backend unreachable; trying another");
                tried.push(backend.addr.clone());
                continue;
            }
        };
        outcome.backend = Some(backend.clone());
        backend
            .outstanding
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let request = request.take().expect("sent once");
        let sent =
            tokio::time::timeout(state.config.response_timeout, sender.send_request(request)).await;
        backend
            .outstanding
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        let response = match answered(app, &backend, sent) {
            Ok(response) => response,
            Err(failed) => return failed,
        };
        // The head hyper's client read is checked and cleaned as the direct
        // path's: hyper lets Transfer-Encoding win over a Content-Length it
        // keeps, takes equal duplicate lengths and a 101 no one asked for,
        // and keeps hop-by-hop headers. Refused, its connection is dropped.
        let mut response = response;
        let headers = std::mem::take(response.headers_mut());
        let http11 = response.version() == hyper::Version::HTTP_11;
        match h1::frame_answer(response.status(), http11, headers, asked) {
            Ok(framed) => *response.headers_mut() = framed.headers,
            Err(error) => {
                warn!(%app, backend = %backend.addr, %error, "backend failed");
                return page(StatusCode::BAD_GATEWAY, format!("{app} failed to answer"));
            }
        }
        // The framing to the client is the proxy's own.
        *response.version_mut() = hyper::Version::HTTP_11;
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            return switch_protocols(response, client_upgrade);
        }
        return response.map(|body| {
            state
                .pools
                .returning(backend.clone(), sender, body)
                .map_err(|error| Box::new(error) as Box<dyn std::error::Error + Send + Sync>)
                .boxed()
        });
    }
    if tried.is_empty() {
        page(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{app} has no healthy instance right now"),
        )
    } else {
        page(
            StatusCode::BAD_GATEWAY,
            format!("no instance of {app} could be reached"),
        )
    }
}

/// A backend's answer, or the page that says it timed out (504) or failed (502).
// The error is the page itself, handed straight back to the client.
#[allow(clippy::result_large_err)]
fn answered<T, E: std::fmt::Display>(
    app: Target<'_>,
    backend: &Backend,
    sent: Result<Result<T, E>, tokio::time::error::Elapsed>,
) -> Result<T, Response<Body>> {
    match sent {
        Err(_) => {
            warn!(%app, backend = %backend.addr, "backend timed out");
            Err(page(
                StatusCode::GATEWAY_TIMEOUT,
                format!("{app} did not answer in time"),
            ))
        }
        Ok(Err(error)) => {
            warn!(%app, backend = %backend.addr, %error, "backend failed");
            Err(page(
                StatusCode::BAD_GATEWAY,
                format!("{app} failed to answer"),
            ))
        }
        Ok(Ok(response)) => Ok(response),
    }
}

/// Joins the client's and the backend's upgraded connections (WebSocket and
/// other `Upgrade`s) and copies both ways until either closes.
fn switch_protocols(
    mut response: Response<hyper::body::Incoming>,
    client: Option<hyper::upgrade::OnUpgrade>,
) -> Response<Body> {
    let backend = hyper::upgrade::on(&mut response);
    if let Some(client) = client {
        tokio::spawn(async move {
            let (Ok(client), Ok(backend)) = (client.await, backend.await) else {
                return;
            };
            let (mut client, mut backend) = (TokioIo::new(client), TokioIo::new(backend));
            let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
        });
    }
    let (mut parts, _) = response.into_parts();
    parts
        .headers
        .entry(CONNECTION)
        .or_insert(HeaderValue::from_static("upgrade"));
    Response::from_parts(
        parts,
        http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(target: &str, hosts: &[&str]) -> Result<String, &'static str> {
        let uri: hyper::Uri = target.parse().unwrap();
        let mut headers = hyper::HeaderMap::new();
        for value in hosts {
            headers.append(HOST, HeaderValue::from_str(value).unwrap());
        }
        host_from(&uri, &headers)
    }

    #[test]
    fn the_host_is_read_as_rfc_9112_says() {
        assert_eq!(
            host("/", &["Demo.Paz.Localhost:8080"]).unwrap(),
            "demo.paz.localhost"
        );
        assert_eq!(
            host("/", &["demo.paz.localhost."]).unwrap(),
            "demo.paz.localhost"
        );
        // An absolute-form target's authority wins over Host.
        assert_eq!(
            host("http://api.example.com/x", &["demo.paz.localhost"]).unwrap(),
            "api.example.com"
        );
        assert_eq!(
            host("/", &["a.example", "b.example"]),
            Err("the request has two Host headers: send one")
        );
        for bad in [&[][..], &["bad_host"], &["evil.example/x"], &[""]] {
            assert!(host("/", bad).is_err(), "{bad:?}");
        }
        assert!(
            host("/", &[&"a".repeat(254)]).is_err(),
            "longer than a host name"
        );
    }

    #[test]
    fn the_backend_client_is_hyper_or_direct_and_nothing_else() {
        assert_eq!("hyper".parse(), Ok(BackendHttp::Hyper));
        assert_eq!("direct".parse(), Ok(BackendHttp::Direct));
        assert_eq!(
            "curl".parse::<BackendHttp>(),
            Err("\"curl\" is not a backend HTTP client: say hyper or direct".to_string())
        );
    }

    #[test]
    fn a_clients_request_id_is_kept_only_when_it_is_a_plain_token() {
        assert!(is_request_id(b"req-7f3a_c.1"));
        assert!(is_request_id("a".repeat(128).as_bytes()));
        assert!(!is_request_id(b""));
        assert!(!is_request_id("a".repeat(129).as_bytes()));
        assert!(!is_request_id(b"a b"));
        assert!(!is_request_id(b"id status=200"), "no forged log fields");
        assert!(!is_request_id(b"\"x\""));
    }
}

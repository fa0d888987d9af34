//! Paz's reverse proxy: routes `Host: <app>.<domain>` (and each app's extra
//! domains) to the app's healthy instances as etcd announces them.
//!
//! The routing table is rebuilt from etcd watches and swapped whole
//! (`ArcSwap`); a request never waits for it. If etcd goes away the last table
//! keeps serving. A request is retried on another instance only when its
//! connection failed before anything was sent.

#![forbid(unsafe_code)]

mod metrics;
mod pool;
pub mod table;
mod watch;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
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
use tracing::{info, warn};

use crate::pool::Pools;
use crate::table::Table;

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
        }
    }
}

struct State {
    config: ProxyConfig,
    table: Arc<ArcSwap<Table>>,
    pools: Pools,
    metrics: Arc<metrics::Metrics>,
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

/// The host a request is for: lowercase, without its port; `None` if it has
/// characters no host name has.
fn host_of(request: &Request<hyper::body::Incoming>) -> Option<String> {
    let raw = match request.headers().get(HOST) {
        Some(value) => value.to_str().ok()?.to_string(),
        None => request.uri().authority()?.as_str().to_string(),
    };
    let host = match raw.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => raw.as_str(),
    }
    .trim_end_matches('.')
    .to_ascii_lowercase();
    let valid = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    valid.then_some(host)
}

/// Headers that belong to one connection, not to the request.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

impl Proxy {
    /// Starts the watches that keep the table current.
    pub fn new(config: ProxyConfig, store: Store) -> Proxy {
        let table = Arc::new(ArcSwap::from_pointee(Table::default()));
        let metrics = Arc::new(metrics::Metrics::new());
        let watcher = tokio::spawn(watch::keep_current(store, table.clone(), metrics.clone()));
        let pools = Pools::new(config.connect_timeout);
        Proxy {
            state: Arc::new(State {
                config,
                table,
                pools,
                metrics,
            }),
            watcher,
        }
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
                                HeaderValue::from_static("text/plain; version=0.0.4"),
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
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(self.state.config.header_timeout)
            .max_buf_size(self.state.config.max_header_bytes.max(8192));
        tokio::pin!(shutdown);
        loop {
            let (stream, client) = tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        warn!(%error, "accept failed");
                        continue;
                    }
                },
            };
            let state = self.state.clone();
            let service = hyper::service::service_fn(move |request| {
                let state = state.clone();
                async move {
                    let started = Instant::now();
                    let (response, app) = handle(state.clone(), request, client).await;
                    let labels = metrics::RequestLabels {
                        app: app.unwrap_or_else(|| "-".to_string()),
                        status: response.status().as_u16(),
                    };
                    state.metrics.requests.get_or_create(&labels).inc();
                    state
                        .metrics
                        .latency
                        .observe(started.elapsed().as_secs_f64());
                    if response.status() == StatusCode::BAD_GATEWAY
                        || response.status() == StatusCode::GATEWAY_TIMEOUT
                    {
                        state.metrics.backend_errors.inc();
                    }
                    Ok::<_, Infallible>(response)
                }
            });
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            let connection = graceful.watch(connection.into_owned());
            tokio::spawn(async move {
                let _ = connection.await;
            });
        }
        info!("proxy: no longer accepting; finishing requests in flight");
        if tokio::time::timeout(self.state.config.shutdown_timeout, graceful.shutdown())
            .await
            .is_err()
        {
            warn!("proxy: requests still in flight after the shutdown timeout");
        }
        Ok(())
    }
}

/// Answers one request; also says which app it was for (for the metrics).
async fn handle(
    state: Arc<State>,
    request: Request<hyper::body::Incoming>,
    client: SocketAddr,
) -> (Response<Body>, Option<String>) {
    let Some(host) = host_of(&request) else {
        let text = "the Host header is missing or is not a host name".to_string();
        return (page(StatusCode::BAD_REQUEST, text), None);
    };
    let table = state.table.load();
    let Some(app) = table.app_for(&host).cloned() else {
        return (
            page(StatusCode::NOT_FOUND, format!("no app serves {host}")),
            None,
        );
    };
    let response = forward(&state, &table, &app, host, request, client).await;
    (response, Some(app.to_string()))
}

async fn forward(
    state: &State,
    table: &Table,
    app: &store::AppName,
    host: String,
    mut request: Request<hyper::body::Incoming>,
    client: SocketAddr,
) -> Response<Body> {
    let started = Instant::now();

    // What the backend is told about the original request.
    let headers = request.headers_mut();
    let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(previous) => format!("{previous}, {}", client.ip()),
        None => client.ip().to_string(),
    };
    let set = |headers: &mut hyper::HeaderMap, name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    set(headers, "x-forwarded-for", &forwarded_for);
    set(headers, "x-forwarded-proto", "http");
    set(headers, "x-forwarded-host", &host);
    if !headers.contains_key("x-request-id") {
        set(
            headers,
            "x-request-id",
            &format!("{:032x}", rand::random::<u128>()),
        );
    }
    let upgrade = headers.contains_key(UPGRADE);
    if !upgrade {
        for name in HOP_BY_HOP {
            headers.remove(*name);
        }
    }
    if !headers.contains_key(HOST) {
        if let Ok(value) = HeaderValue::from_str(&host) {
            headers.insert(HOST, value);
        }
    }
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    let (mut parts, body) = request.into_parts();
    parts.version = hyper::Version::HTTP_11;
    parts.uri = path.parse().unwrap_or_default();
    let body: Body = match state.config.max_body_bytes {
        Some(limit) => http_body_util::Limited::new(body, limit).boxed(),
        None => body
            .map_err(|error| Box::new(error) as Box<dyn std::error::Error + Send + Sync>)
            .boxed(),
    };
    let mut request = Some(Request::from_parts(parts, body));

    let mut tried: Vec<String> = Vec::new();
    for _ in 0..=state.config.retries {
        let Some(backend) = table.pick(app, &tried) else {
            break;
        };
        // A failed connect sent nothing: the next instance gets the request.
        let mut sender = match state.pools.get(&backend.addr).await {
            Ok(sender) => sender,
            Err(error) => {
                warn!(%app, backend = %backend.addr, %error, "backend unreachable; trying another");
                tried.push(backend.addr.clone());
                continue;
            }
        };
        backend
            .outstanding
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let request = request.take().expect("sent once");
        let sent =
            tokio::time::timeout(state.config.response_timeout, sender.send_request(request)).await;
        backend
            .outstanding
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        let response = match sent {
            Err(_) => {
                info!(%app, status = 504, backend = %backend.addr, "backend timed out");
                return page(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("{app} did not answer in time"),
                );
            }
            Ok(Err(error)) => {
                warn!(%app, backend = %backend.addr, %error, "backend failed");
                return page(StatusCode::BAD_GATEWAY, format!("{app} failed to answer"));
            }
            Ok(Ok(response)) => response,
        };
        info!(%app, status = response.status().as_u16(), duration_ms = started.elapsed().as_millis() as u64, backend = %backend.addr, "request");
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            return switch_protocols(response, client_upgrade);
        }
        state.pools.put_back(&backend.addr, sender);
        return response.map(|body| {
            body.map_err(|error| Box::new(error) as Box<dyn std::error::Error + Send + Sync>)
                .boxed()
        });
    }
    if tried.is_empty() {
        info!(%app, status = 503, "no healthy instance");
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

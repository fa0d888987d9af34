//! The agent's endpoint (`--agent-listen`): the logs this host keeps of its
//! instances (`GET /v1/logs/APP`, one JSON event a line, followed with
//! `follow=true`) and its stats (`GET /v1/stats`), both only for a caller
//! with the cluster's agent secret; and its Prometheus metrics
//! (`GET /metrics`: numbers only, as a node exporter serves them); and
//! the attach of a one-off (`GET /v1/runs/UNIT/attach`, upgraded:
//! `attach.rs`), for the same caller. The server asks it, users never do.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query as UrlQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use subtle::ConstantTimeEq;
use telemetry::{Event, Query};
use tokio::sync::broadcast;

use crate::logs::{Instance, Logs};
use crate::stats::Sampled;

/// What the endpoint serves from.
#[derive(Clone)]
pub(crate) struct Endpoint {
    pub(crate) secret: Arc<String>,
    pub(crate) logs: Logs,
    pub(crate) sampled: Sampled,
    pub(crate) runs: crate::attach::Runs,
}

/// How often a quiet follow sends an empty line, so that a reader that went
/// away is noticed.
const KEEPALIVE: Duration = Duration::from_secs(10);

pub(crate) fn router(endpoint: Endpoint) -> Router {
    Router::new()
        .route("/v1/logs/{app}", get(logs))
        .route("/v1/stats", get(stats))
        .route("/metrics", get(metrics))
        .route("/v1/runs/{unit}/attach", get(attach))
        .with_state(endpoint)
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, format!("{message}\n")).into_response()
}

/// Whether the caller sent the cluster's agent secret.
fn authorized(endpoint: &Endpoint, headers: &HeaderMap) -> bool {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_default();
    bool::from(given.as_bytes().ct_eq(endpoint.secret.as_bytes()))
}

/// The answer to a caller without the secret.
fn unauthorized() -> Response {
    refuse(
        StatusCode::UNAUTHORIZED,
        "this agent endpoint answers only Paz's server: send the cluster's agent secret (/paz/config/agent-secret) as a bearer token",
    )
}

/// Upgrades to `paz-attach` and runs the one-off `unit` over the
/// connection (`attach.rs`), once its unit says it may run here.
async fn attach(
    State(endpoint): State<Endpoint>,
    Path(unit): Path<String>,
    UrlQuery(size): UrlQuery<crate::attach::TermSize>,
    mut request: axum::extract::Request,
) -> Response {
    if !authorized(&endpoint, request.headers()) {
        return unauthorized();
    }
    let protocol = telemetry::attach::ATTACH_PROTOCOL;
    let asked = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok());
    if asked != Some(protocol) {
        return refuse(
            StatusCode::BAD_REQUEST,
            &format!("an attach asks for Upgrade: {protocol}"),
        );
    }
    let spec = match endpoint.runs.attachable(&unit).await {
        Ok(spec) => spec,
        Err(reason) => return refuse(StatusCode::NOT_FOUND, &reason),
    };
    let upgrade = hyper::upgrade::on(&mut request);
    let runs = endpoint.runs.clone();
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let connection = hyper_util::rt::TokioIo::new(upgraded);
                runs.serve(&unit, spec, size, connection).await
            }
            Err(error) => tracing::warn!(%unit, %error, "an attach's upgrade failed"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, protocol)
        .body(Body::empty())
        .unwrap_or_default()
}

fn event_line(event: &Event) -> Bytes {
    let mut text = Vec::new();
    push_event(&mut text, event);
    Bytes::from(text)
}

fn push_event(text: &mut Vec<u8>, event: &Event) {
    if serde_json::to_writer(&mut *text, event).is_ok() {
        text.push(b'\n');
    }
}

/// A written line as the event `{"line": ...}`, from its JSON as written,
/// if `query` selects it.
fn push_written(text: &mut Vec<u8>, written: &crate::logs::files::Written, query: &Query) {
    if query.matches(&written.line) {
        text.extend_from_slice(b"{\"line\":");
        text.extend_from_slice(&written.json);
        text.extend_from_slice(b"}\n");
    }
}

/// What one write of the stream holds at most: lines go out together, not
/// one write (and one chunk) each.
const BATCH: usize = 64 * 1024;

/// The kept lines as a few large chunks.
fn batches(lines: Vec<telemetry::Line>) -> Vec<Bytes> {
    let mut chunks = Vec::new();
    let mut text = Vec::with_capacity(BATCH);
    for line in lines {
        push_event(&mut text, &Event::Line(line));
        if text.len() >= BATCH {
            chunks.push(Bytes::from(std::mem::replace(
                &mut text,
                Vec::with_capacity(BATCH),
            )));
        }
    }
    if !text.is_empty() {
        chunks.push(Bytes::from(text));
    }
    chunks
}

async fn logs(
    State(endpoint): State<Endpoint>,
    Path(app): Path<String>,
    headers: HeaderMap,
    query: Result<UrlQuery<Query>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if !authorized(&endpoint, &headers) {
        return unauthorized();
    }
    let Ok(UrlQuery(query)) = query else {
        return refuse(StatusCode::BAD_REQUEST, "the query is invalid: lines=N, since=NANOS, after=NANOS, process=P, instance=web.N, follow=true|false");
    };
    if let Err(error) = store::AppName::new(&app) {
        return refuse(StatusCode::BAD_REQUEST, &error.to_string());
    }
    // An app with no log here has no lines, and gets no files made for it.
    if !endpoint.logs.apps().contains(&app) && !query.follow {
        return ndjson(futures::stream::empty().boxed());
    }
    let log = match endpoint.logs.app(&app) {
        Ok(log) => log,
        Err(error) => {
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot read the log of {app}: {error}"),
            )
        }
    };
    let read = {
        let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
        if query.follow {
            log.read_and_follow(&query)
                .map(|(kept, new)| (kept, Some(new)))
        } else {
            log.read(&query).map(|kept| (kept, None))
        }
    };
    let (kept, new) = match read {
        Ok(read) => read,
        Err(error) => {
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot read the log of {app}: {error}"),
            )
        }
    };
    let kept = futures::stream::iter(batches(kept));
    match new {
        None => ndjson(kept.boxed()),
        Some(new) => {
            let live = futures::stream::once(async { event_line(&Event::Live) });
            ndjson(kept.chain(live).chain(follow(new, query)).boxed())
        }
    }
}

/// The new lines `query` selects, as they are written.
fn follow(
    receiver: broadcast::Receiver<Arc<crate::logs::files::Written>>,
    query: Query,
) -> impl Stream<Item = Bytes> + Send {
    use broadcast::error::{RecvError, TryRecvError};
    let lagged = |skipped: u64| {
        Event::Notice(format!(
            "{skipped} lines were written faster than they could be sent, and are left out here (they are kept: ask again without -f)"
        ))
    };
    futures::stream::unfold((receiver, query), move |(mut receiver, query)| async move {
        let mut text = Vec::new();
        // The first line waits (or a keep-alive goes); what is ready
        // after it goes in the same write.
        match tokio::time::timeout(KEEPALIVE, receiver.recv()).await {
            Err(_) => return Some((Bytes::from_static(b"\n"), (receiver, query))),
            Ok(Ok(written)) => push_written(&mut text, &written, &query),
            Ok(Err(RecvError::Lagged(skipped))) => push_event(&mut text, &lagged(skipped)),
            Ok(Err(RecvError::Closed)) => return None,
        }
        while text.len() < BATCH {
            match receiver.try_recv() {
                Ok(written) => push_written(&mut text, &written, &query),
                Err(TryRecvError::Lagged(skipped)) => push_event(&mut text, &lagged(skipped)),
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
        if text.is_empty() {
            // Nothing this reader selects: a keep-alive, which it skips.
            text.push(b'\n');
        }
        Some((Bytes::from(text), (receiver, query)))
    })
}

fn ndjson(body: futures::stream::BoxStream<'static, Bytes>) -> Response {
    let body = Body::from_stream(body.map(Ok::<_, Infallible>));
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

async fn stats(State(endpoint): State<Endpoint>, headers: HeaderMap) -> Response {
    if !authorized(&endpoint, &headers) {
        return unauthorized();
    }
    axum::Json(endpoint.sampled.latest()).into_response()
}

type Labels = Vec<(&'static str, String)>;

async fn metrics(State(endpoint): State<Endpoint>) -> Response {
    let stats = endpoint.sampled.latest();
    let mut registry = Registry::with_prefix("paz_agent");
    let gauge = |registry: &mut Registry, name: &str, help: &str, value: f64| {
        let metric = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        metric.set(value);
        registry.register(name, help, metric);
    };
    let host = &stats.host;
    gauge(
        &mut registry,
        "host_cpu_usage_percent",
        "Busy share of all the host's CPUs over the last sample",
        host.cpu_percent,
    );
    gauge(
        &mut registry,
        "host_cpus",
        "The host's CPUs",
        f64::from(host.cpus),
    );
    gauge(
        &mut registry,
        "host_memory_used_bytes",
        "Memory in use on the host (total less available)",
        host.memory_used_bytes as f64,
    );
    gauge(
        &mut registry,
        "host_memory_total_bytes",
        "The host's memory",
        host.memory_total_bytes as f64,
    );
    gauge(
        &mut registry,
        "host_disk_used_bytes",
        "Used space of the file system of the agent's data dir",
        host.disk_used_bytes as f64,
    );
    gauge(
        &mut registry,
        "host_disk_total_bytes",
        "Size of the file system of the agent's data dir",
        host.disk_total_bytes as f64,
    );
    let cpu = Family::<Labels, Counter<f64, std::sync::atomic::AtomicU64>>::default();
    let memory = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    let restarts = Family::<Labels, Counter>::default();
    for container in &stats.containers {
        let Some(instance) = Instance::of_unit(&container.unit) else {
            continue;
        };
        let labels: Labels = vec![
            ("app", instance.app),
            ("release", instance.release.to_string()),
            ("instance", instance.name),
        ];
        cpu.get_or_create(&labels).inc_by(container.cpu_seconds);
        memory
            .get_or_create(&labels)
            .set(container.memory_bytes as f64);
        restarts
            .get_or_create(&labels)
            .inc_by(u64::from(container.restarts));
    }
    registry.register(
        "container_cpu_seconds",
        "CPU time used by an instance's container",
        cpu,
    );
    registry.register(
        "container_memory_bytes",
        "Memory in use by an instance's container, without its reclaimable cache",
        memory,
    );
    registry.register(
        "container_restarts",
        "Restarts of an instance after crashes on this machine",
        restarts,
    );
    let log_bytes = Family::<Labels, Gauge>::default();
    for app in endpoint.logs.apps() {
        if let Ok(log) = endpoint.logs.app(&app) {
            let size = log.lock().unwrap_or_else(|e| e.into_inner()).size();
            log_bytes
                .get_or_create(&vec![("app", app)])
                .set(size as i64);
        }
    }
    registry.register(
        "log_bytes",
        "Bytes of an app's log kept on this host",
        log_bytes,
    );
    let mut text = String::new();
    if encode(&mut text, &registry).is_err() {
        return refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the metrics",
        );
    }
    (
        [(header::CONTENT_TYPE, telemetry::TEXT_FORMAT)],
        telemetry::to_text_format(&text),
    )
        .into_response()
}

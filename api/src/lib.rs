//! Paz's REST API, `/api/v1`: the verbs over HTTP and JSON, for the `paz`
//! client, scripts and the web UI. Every resource calls the verbs (one place
//! for rights and for the `by` of each release); a caller is a Paz token.

#![forbid(unsafe_code)]

mod access;
mod apps;
mod auth;
mod build_log;
mod cluster;
mod error;
mod events;
mod input;
mod releases;
mod rollouts;
mod run;

use std::future::Future;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use serde_json::Value;
use store::TokenCache;
use verbs::Caller;

pub use error::ApiError;

/// The largest request body read.
const BODY_LIMIT: usize = 64 * 1024;

const REQUEST_ID: HeaderName = HeaderName::from_static("request-id");

/// What every handler works with.
#[derive(Debug)]
pub struct ApiState {
    pub context: verbs::Context,
    pub tokens: Arc<TokenCache>,
}

/// The API on `context`, checking callers against `tokens`.
#[derive(Debug, Clone)]
pub struct Api {
    state: Arc<ApiState>,
}

impl Api {
    pub fn new(context: verbs::Context, tokens: Arc<TokenCache>) -> Api {
        Api {
            state: Arc::new(ApiState { context, tokens }),
        }
    }

    /// The routes under `/api/v1`, with their limits and `Request-Id`.
    pub fn router(&self) -> Router {
        let v1 = Router::new()
            .merge(apps::routes())
            .merge(releases::routes())
            .merge(rollouts::routes())
            .merge(cluster::routes())
            .merge(access::routes())
            .merge(events::routes())
            .merge(run::routes());
        Router::new()
            .nest("/api/v1", v1)
            .fallback(|| async {
                ApiError::not_found(
                    "no such resource: the REST API section of the README lists them",
                )
            })
            .layer(DefaultBodyLimit::max(BODY_LIMIT))
            .layer(axum::middleware::from_fn(request_id))
            .with_state(self.state.clone())
    }

    /// Serves on `listener` until `shutdown`, then lets requests in flight finish.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }
}

/// Gives every answer a `Request-Id`: the client's, when it is a plain
/// token, else a new one.
async fn request_id(request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(&REQUEST_ID)
        .filter(|value| {
            let bytes = value.as_bytes();
            (1..=128).contains(&bytes.len())
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        })
        .cloned();
    let id = given.unwrap_or_else(|| {
        let random: [u8; 12] = rand::random();
        HeaderValue::from_str(&hex::encode(random)).expect("hex is a header value")
    });
    let mut response = next.run(request).await;
    response.headers_mut().insert(REQUEST_ID, id);
    response
}

/// Runs verb `name` with `args` (and `stdin`) as `caller`; its JSON.
async fn verb(
    state: &ApiState,
    caller: &Caller,
    name: &str,
    args: Vec<String>,
    stdin: &[u8],
) -> Result<Value, ApiError> {
    let outcome = verbs::run(&state.context, caller, name, &args, stdin).await?;
    Ok(outcome.json)
}

/// Runs verb `name` on app `app` (its name checked first) as `caller`; its JSON.
async fn app_verb(
    state: &ApiState,
    caller: &Caller,
    name: &str,
    app: &str,
) -> Result<Value, ApiError> {
    let app = input::app(app)?.to_string();
    verb(state, caller, name, vec![app], b"").await
}

/// The items of a verb's JSON list.
fn items(listed: Value) -> Vec<Value> {
    match listed {
        Value::Array(items) => items,
        _ => Vec::new(),
    }
}

/// The item of a verb's JSON list that `wanted` picks, or 404 saying `missing`.
fn one_of(
    listed: Value,
    wanted: impl Fn(&Value) -> bool,
    missing: impl FnOnce() -> String,
) -> Result<axum::Json<Value>, ApiError> {
    items(listed)
        .into_iter()
        .find(|item| wanted(item))
        .map(axum::Json)
        .ok_or_else(|| ApiError::not_found(missing()))
}

/// Whether the client asks for Server-Sent Events (`Accept: text/event-stream`).
fn wants_events(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains("text/event-stream"))
}

/// The `Last-Event-ID` a reconnecting client sends: the number of the last
/// event it has.
fn last_event_id(headers: &axum::http::HeaderMap) -> Option<usize> {
    headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|id| id.trim().parse().ok())
}

//! Paz's REST API, `/api/v1`: the verbs over HTTP and JSON, for the `paz`
//! client, scripts and the web UI. Every resource calls the verbs (one place
//! for rights and for the `by` of each release); a caller is a Paz token.

#![forbid(unsafe_code)]

mod access;
mod apps;
mod auth;
mod build_log;
mod certs;
mod cluster;
mod error;
mod events;
mod input;
mod logs;
mod one_offs;
mod releases;
mod rollouts;
mod run;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use serde_json::Value;
use store::TokenCache;
use utoipa_axum::router::OpenApiRouter;
use verbs::Caller;

pub use auth::caller_of;
pub use build_log::{build_log_events, LogEvent};
pub use error::ApiError;
pub use events::{changes, Change, Kind, Revision};
pub use rollouts::{rollback, rollout, rollouts, start_rollout};

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

    /// What its handlers work with (the web UI works with the same).
    pub fn state(&self) -> &Arc<ApiState> {
        &self.state
    }

    /// The routes under `/api/v1`, with their limits and `Request-Id`.
    pub fn router(&self) -> Router {
        let (router, _) = described_routes().split_for_parts();
        router
            .fallback(|uri: axum::http::Uri| async move {
                if uri.path().starts_with("/api/") {
                    ApiError::not_found(
                        "no such resource: GET /api/v1/openapi.json lists them (so does the README)",
                    )
                } else {
                    ApiError::not_found(
                        "no such page: the web UI starts at /, the API at /api/v1/openapi.json",
                    )
                }
            })
            .method_not_allowed_fallback(|| async {
                ApiError::new(
                    axum::http::StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "this resource does not take that method: GET /api/v1/openapi.json says which it takes",
                )
            })
            .layer(DefaultBodyLimit::max(BODY_LIMIT))
            .layer(axum::middleware::from_fn(request_id))
            .with_state(self.state.clone())
    }
}

/// What the description says besides the routes: who Paz is, and how
/// callers authenticate.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Paz",
        description = "Paz's REST API: the SSH verbs over HTTP and JSON, and live streams (Server-Sent Events) of builds, rollouts and every change. Authenticate with Authorization: Bearer <token secret> (tokens:create prints one).",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(schemas(error::ErrorBody))
)]
struct Description;

/// What every operation shares: a bearer token (`tokens:create`), and its
/// errors' body.
struct Common;

impl utoipa::Modify for Common {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        let refused = error("refused: {id, message} says why (401 no or unknown token, 403 not the caller's, 404, 405, 409, 410 history compacted, 413, 415, 422)");
        let failed = error("the store did not answer (503), or Paz failed (500)");
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                let responses = &mut operation.responses.responses;
                responses.insert("4XX".into(), refused.clone().into());
                responses.insert("5XX".into(), failed.clone().into());
            }
        }
        use utoipa::openapi::security::{
            HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("a Paz token's secret (tokens:create)"))
                    .build(),
            ),
        );
        openapi.security = Some(vec![SecurityRequirement::new(
            "token",
            Vec::<String>::new(),
        )]);
    }
}

/// Every route under `/api/v1` with its description: the router and the
/// OpenAPI document come from the same list, so neither has a route the
/// other lacks.
fn described_routes() -> OpenApiRouter<Arc<ApiState>> {
    use utoipa::OpenApi;
    let v1 = OpenApiRouter::new()
        .merge(apps::routes())
        .merge(releases::routes())
        .merge(rollouts::routes())
        .merge(cluster::routes())
        .merge(access::routes())
        .merge(events::routes())
        .merge(run::routes())
        .merge(one_offs::routes())
        .merge(logs::routes())
        .merge(certs::routes())
        .routes(utoipa_axum::routes!(openapi_json));
    OpenApiRouter::with_openapi(Description::openapi()).nest("/api/v1", v1)
}

/// The OpenAPI 3.1 description of the API, made from its handlers.
pub fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::Modify;
    let mut description = described_routes().into_openapi();
    description.info.version = env!("CARGO_PKG_VERSION").to_string();
    // After the routes are in: it changes every operation.
    Common.modify(&mut description);
    description
}

#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    summary = "This description (OpenAPI 3.1); no token needed",
    security(()),
    responses((status = 200, body = Object))
)]
async fn openapi_json() -> axum::Json<utoipa::openapi::OpenApi> {
    static DESCRIPTION: std::sync::LazyLock<utoipa::openapi::OpenApi> =
        std::sync::LazyLock::new(openapi);
    axum::Json(DESCRIPTION.clone())
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
pub async fn verb(
    state: &ApiState,
    caller: &Caller,
    name: &str,
    args: Vec<String>,
    stdin: &[u8],
) -> Result<Value, ApiError> {
    Ok(run_verb(state, caller, name, args, stdin).await?.json)
}

/// Runs verb `name` in a task of its own, so that a client that goes away
/// does not cut short what it does (a rollout finishes, or rolls back).
async fn run_verb(
    state: &ApiState,
    caller: &Caller,
    name: &str,
    args: Vec<String>,
    stdin: &[u8],
) -> Result<verbs::Outcome, ApiError> {
    let (context, caller) = (state.context.clone(), caller.clone());
    let (name, stdin) = (name.to_string(), stdin.to_vec());
    let task =
        tokio::spawn(async move { verbs::run(&context, &caller, &name, &args, &stdin).await });
    match task.await {
        Ok(outcome) => Ok(outcome?),
        Err(error) => Err(ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the verb's task failed ({error}): see the server's log"),
        )),
    }
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

#[cfg(test)]
mod tests {
    /// The API's contract, checked in: a change to any route, parameter or
    /// body shows in review as a change to `api/openapi.json`
    /// (`UPDATE_EXPECT=1 cargo test -p api` writes it).
    #[test]
    fn the_openapi_description_is_the_checked_in_one() {
        let description = serde_json::to_string_pretty(&super::openapi()).unwrap();
        expect_test::expect_file!["../openapi.json"].assert_eq(&format!("{description}\n"));
    }

    /// Routes are added only through `described_routes` (utoipa-axum's
    /// `routes!`, which puts each in the description too): no source file
    /// adds one to a plain axum router.
    #[test]
    fn no_route_is_added_outside_the_description() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        // In pieces, so that this test's own lines do not match.
        let needles = [concat!(".rou", "te("), concat!("Router", "::new()")];
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.trim_start().replace("OpenApiRouter", "");
                if code.starts_with("//") {
                    continue;
                }
                assert!(
                    !needles.iter().any(|needle| code.contains(needle)),
                    "{}:{}: a route outside the description: {line}",
                    path.display(),
                    n + 1
                );
            }
        }
    }
}

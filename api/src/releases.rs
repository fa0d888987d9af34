//! `/apps/{app}/releases` and `/apps/{app}/builds`: what an app ran and
//! how its images were built.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Authed;
use crate::error::ApiError;
use crate::input::{app, Page, Params};
use crate::{app_verb, items, one_of, verb, ApiState};

pub(crate) fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new()
        .routes(routes!(releases, crate::rollouts::release))
        .routes(routes!(release))
        .routes(routes!(builds))
        .routes(routes!(build))
        .routes(routes!(build_log))
}

type Api = State<Arc<ApiState>>;

/// The release's number, from `7` or `v7`.
fn version(text: &str) -> Result<u64, ApiError> {
    text.trim_start_matches('v')
        .parse()
        .map_err(|_| ApiError::invalid(format!("`{text}` is not a release number such as 7")))
}

/// Oldest first, as Heroku lists them; `?after=N` starts after vN.
#[utoipa::path(
    get,
    path = "/apps/{app}/releases",
    tag = "releases",
    summary = "The app's releases, oldest first (releases)",
    params(("app" = String, Path, description = "the app's name"), crate::input::Page),
    responses((status = 200, description = "one page; a Link: rel=next header when more follow", body = Vec<store::records::Release>))
)]
async fn releases(
    State(state): Api,
    Authed(caller): Authed,
    Path(name): Path<String>,
    Params(page): Params<Page>,
) -> Result<Response, ApiError> {
    let all = items(app_verb(&state, &caller, "releases", &name).await?);
    let path = format!("/api/v1/apps/{name}/releases");
    Ok(page.of(all, |release| release["n"].to_string(), &path))
}

#[utoipa::path(
    get,
    path = "/apps/{app}/releases/{version}",
    tag = "releases",
    summary = "One release",
    params(("app" = String, Path, description = "the app's name"), ("version" = String, Path, description = "its number: 7 or v7")),
    responses((status = 200, body = store::records::Release))
)]
async fn release(
    State(state): Api,
    Authed(caller): Authed,
    Path((name, wanted)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let n = version(&wanted)?;
    let listed = app_verb(&state, &caller, "releases", &name).await?;
    one_of(
        listed,
        |release| release["n"].as_u64() == Some(n),
        || format!("{name} has no release v{n}"),
    )
}

/// Newest first (the last 20).
#[utoipa::path(
    get,
    path = "/apps/{app}/builds",
    tag = "builds",
    summary = "The app's last builds, newest first (builds)",
    params(("app" = String, Path, description = "the app's name"), crate::input::Page),
    responses((status = 200, body = Vec<verbs::BuildRow>))
)]
async fn builds(
    State(state): Api,
    Authed(caller): Authed,
    Path(name): Path<String>,
    Params(page): Params<Page>,
) -> Result<Response, ApiError> {
    let all = items(app_verb(&state, &caller, "builds", &name).await?);
    let path = format!("/api/v1/apps/{name}/builds");
    let key = |build: &Value| build["id"].as_str().unwrap_or_default().to_string();
    Ok(page.of(all, key, &path))
}

#[utoipa::path(
    get,
    path = "/apps/{app}/builds/{id}",
    tag = "builds",
    summary = "One build",
    params(("app" = String, Path, description = "the app's name"), ("id" = String, Path, description = "the build's id")),
    responses((status = 200, body = verbs::BuildRow))
)]
async fn build(
    State(state): Api,
    Authed(caller): Authed,
    Path((name, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let listed = app_verb(&state, &caller, "builds", &name).await?;
    one_of(
        listed,
        |build| build["id"].as_str() == Some(id.as_str()),
        || format!("{name} has no build {id} among its last 20"),
    )
}

/// The whole log as text; with `Accept: text/event-stream`, each line as
/// the builder writes it (see `build_log`).
#[utoipa::path(
    get,
    path = "/apps/{app}/builds/{id}/log",
    tag = "builds",
    summary = "A build's log: the whole text, or with Accept: text/event-stream each line as it is written (line events, their number the id; Last-Event-ID resumes), then an end event",
    params(("app" = String, Path, description = "the app's name"), ("id" = String, Path, description = "the build's id"), ("Last-Event-ID" = Option<String>, Header, description = "the number of the last line the client has")),
    responses((status = 200, content((String = "text/plain"), (String = "text/event-stream"))))
)]
async fn build_log(
    State(state): Api,
    Authed(caller): Authed,
    Path((name, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let app = app(&name)?;
    crate::input::segment("build id", &id)?;
    if crate::wants_events(&headers) {
        let from = crate::last_event_id(&headers).map_or(0, |last| last.saturating_add(1));
        let (path, owner) = crate::build_log::log_of(&state, &caller, &app, &id).await?;
        return crate::build_log::stream(path, owner, from).await;
    }
    let logged = verb(
        &state,
        &caller,
        "builds:log",
        vec![app.to_string(), id],
        b"",
    )
    .await?;
    let text = logged["log"].as_str().unwrap_or_default().to_string();
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

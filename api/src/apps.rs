//! `/apps`: apps and what each has (config, domains, health check,
//! formation, instances), and following an image repository.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::Authed;
use crate::error::ApiError;
use crate::input::{app, Input, Page, Params};
use crate::{app_verb, verb, ApiState};

pub(crate) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/apps", get(list).post(create))
        .route("/apps/{app}", get(show).delete(destroy))
        .route("/apps/{app}/config", get(config).patch(change_config))
        .route("/apps/{app}/domains", get(domains).post(add_domain))
        .route("/apps/{app}/domains/{domain}", delete(remove_domain))
        .route("/apps/{app}/health", get(health).put(set_health))
        .route("/apps/{app}/formation", get(formation).patch(scale))
        .route("/apps/{app}/instances", get(instances))
        .route("/apps/{app}/follow", post(follow))
}

type Api = State<Arc<ApiState>>;

async fn list(
    State(state): Api,
    Authed(caller): Authed,
    Params(page): Params<Page>,
) -> Result<Response, ApiError> {
    let names = verb(&state, &caller, "apps:list", vec![], b"").await?;
    let mut apps = Vec::new();
    for name in names.as_array().into_iter().flatten() {
        let name = name.as_str().unwrap_or_default().to_string();
        apps.push(verb(&state, &caller, "apps:info", vec![name], b"").await?);
    }
    let key = |info: &Value| info["app"]["name"].as_str().unwrap_or_default().to_string();
    Ok(page.of(apps, key, "/api/v1/apps"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewApp {
    name: String,
}

async fn create(
    State(state): Api,
    Authed(caller): Authed,
    Input(new): Input<NewApp>,
) -> Result<Response, ApiError> {
    let name = app(&new.name)?.to_string();
    verb(&state, &caller, "apps:create", vec![name.clone()], b"").await?;
    let info = verb(&state, &caller, "apps:info", vec![name.clone()], b"").await?;
    let location = format!("/api/v1/apps/{name}");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(info),
    )
        .into_response())
}

async fn show(
    State(state): Api,
    Authed(caller): Authed,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(app_verb(&state, &caller, "apps:info", &name).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Force {
    force: Option<bool>,
}

async fn destroy(
    State(state): Api,
    Authed(caller): Authed,
    Path(name): Path<String>,
    Params(force): Params<Force>,
) -> Result<StatusCode, ApiError> {
    let mut args = vec![app(&name)?.to_string()];
    if force.force == Some(true) {
        args.push("--force".into());
    }
    verb(&state, &caller, "apps:destroy", args, b"").await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn config(
    State(state): Api,
    Authed(caller): Authed,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(app_verb(&state, &caller, "config:show", &name).await?))
}

/// `{"K": "v", "OLD": null}` sets K and unsets OLD in one new release.
async fn change_config(
    State(state): Api,
    Authed(caller): Authed,
    Path(name): Path<String>,
    Input(changes): Input<BTreeMap<String, Option<String>>>,
) -> Result<Json<Value>, ApiError> {
    let name = app(&name)?;
    let changes = changes.into_iter().collect();
    let changed = verbs::change_config(&state.context, &caller, name.as_str(), changes).await?;
    Ok(Json(serde_json::to_value(&changed.env).unwrap_or_default()))
}

async fn domains(
    State(state): Api,
    Authed(caller): Authed,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        app_verb(&state, &caller, "domains:list", &name).await?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewDomain {
    domain: String,
}

async fn add_domain(
    State(state): Api,
    Authed(caller): Authed,
    Path(name): Path<String>,
    Input(new): Input<NewDomain>,
) -> Result<Response, ApiError> {
    let name = app(&name)?.to_string();
    store::names::check_domain(&new.domain)?;
    let args = vec![name.clone(), new.domain.clone()];
    let added = verb(&state, &caller, "domains:add", args, b"").await?;
    let location = format!("/api/v1/apps/{name}/domains/{}", new.domain);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(added),
    )
        .into_response())
}

async fn remove_domain(
    State(state): Api,
    Authed(caller): Authed,
    Path((name, domain)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let name = app(&name)?.to_string();
    store::names::check_domain(&domain)?;
    verb(&state, &caller, "domains:remove", vec![name, domain], b"").await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn health(
    State(state): Api,
    Authed(caller): Authed,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let info = app_verb(&state, &caller, "apps:info", &name).await?;
    Ok(Json(info["app"]["health"].clone()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthCheck {
    path: Option<String>,
    timeout: Option<u64>,
    attempts: Option<u32>,
}

async fn set_health(
    State(state): Api,
    Authed(caller): Authed,
    Path(name): Path<String>,
    Input(check): Input<HealthCheck>,
) -> Result<Json<Value>, ApiError> {
    let mut args = vec![app(&name)?.to_string()];
    args.extend(check.path.map(|path| format!("path={path}")));
    args.extend(check.timeout.map(|timeout| format!("timeout={timeout}")));
    args.extend(
        check
            .attempts
            .map(|attempts| format!("attempts={attempts}")),
    );
    if args.len() == 1 {
        return Err(ApiError::invalid(
            "name at least one of path, timeout and attempts",
        ));
    }
    Ok(Json(verb(&state, &caller, "health:set", args, b"").await?))
}

/// The process types and how many of each run, from the app's settings.
fn formation_of(info: &Value) -> Value {
    let scale = &info["app"]["scale"];
    json!([
        {"type": "web", "quantity": scale["web"]},
        {"type": "worker", "quantity": scale["worker"]},
    ])
}

async fn formation(
    State(state): Api,
    Authed(caller): Authed,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let info = app_verb(&state, &caller, "apps:info", &name).await?;
    Ok(Json(formation_of(&info)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Quantity {
    r#type: String,
    quantity: u32,
}

/// `[{"type": "web", "quantity": 3}]`: scales, rolling the serving release
/// out at the new counts; answers the formation after.
async fn scale(
    State(state): Api,
    Authed(caller): Authed,
    Path(name): Path<String>,
    Input(wanted): Input<Vec<Quantity>>,
) -> Result<Json<Value>, ApiError> {
    let name = app(&name)?.to_string();
    if wanted.is_empty() {
        return Err(ApiError::invalid("name at least one process type"));
    }
    let mut args = vec![name.clone()];
    for process in &wanted {
        crate::input::segment("process type", &process.r#type)?;
        args.push(format!("{}={}", process.r#type, process.quantity));
    }
    verb(&state, &caller, "ps:scale", args, b"").await?;
    let info = verb(&state, &caller, "apps:info", vec![name], b"").await?;
    Ok(Json(formation_of(&info)))
}

async fn instances(
    State(state): Api,
    Authed(caller): Authed,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(app_verb(&state, &caller, "ps", &name).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Follow {
    repository: String,
    /// A tag glob (`v*`); every tag when absent.
    tags: Option<String>,
}

async fn follow(
    State(state): Api,
    Authed(caller): Authed,
    Path(name): Path<String>,
    Input(follow): Input<Follow>,
) -> Result<Json<Value>, ApiError> {
    let mut args = vec![app(&name)?.to_string(), follow.repository];
    args.extend(follow.tags);
    if args[1].starts_with('-') || args.get(2).is_some_and(|tags| tags.starts_with('-')) {
        return Err(ApiError::invalid(
            "a repository or tag glob cannot start with -",
        ));
    }
    Ok(Json(
        verb(&state, &caller, "deploy:follow", args, b"").await?,
    ))
}

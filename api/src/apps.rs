//! `/apps`: apps and what each has (config, domains, health check,
//! formation, instances), and following an image repository.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Authed;
use crate::error::ApiError;
use crate::input::{app, Input, Page, Params};
use crate::{app_verb, verb, ApiState};

pub(crate) fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, destroy))
        .routes(routes!(config, change_config))
        .routes(routes!(domains, add_domain))
        .routes(routes!(remove_domain))
        .routes(routes!(health, set_health))
        .routes(routes!(resources, set_resources))
        .routes(routes!(formation, scale))
        .routes(routes!(instances))
        .routes(routes!(follow))
}

type Api = State<Arc<ApiState>>;

#[utoipa::path(
    get,
    path = "/apps",
    tag = "apps",
    summary = "The apps the caller may use, with their settings",
    params(crate::input::Page),
    responses((status = 200, description = "one page of apps, by name; a Link: rel=next header when more follow", body = Vec<verbs::AppInfo>))
)]
async fn list(
    State(state): Api,
    Authed(caller): Authed,
    Params(page): Params<Page>,
) -> Result<Response, ApiError> {
    let names = verb(&state, &caller, "apps:list", vec![], b"").await?;
    let mut apps = Vec::new();
    for name in names.as_array().into_iter().flatten() {
        let name = name.as_str().unwrap_or_default().to_string();
        match verb(&state, &caller, "apps:info", vec![name], b"").await {
            Ok(info) => apps.push(info),
            // Destroyed since it was listed.
            Err(error) if error.status == StatusCode::NOT_FOUND => {}
            Err(error) => return Err(error),
        }
    }
    let key = |info: &Value| info["app"]["name"].as_str().unwrap_or_default().to_string();
    Ok(page.of(apps, key, "/api/v1/apps"))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewApp {
    name: String,
}

#[utoipa::path(
    post,
    path = "/apps",
    tag = "apps",
    summary = "Create an app (apps:create)",
    request_body = NewApp,
    responses((status = 201, description = "created; Location is its URL", body = verbs::AppInfo))
)]
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

#[utoipa::path(
    get,
    path = "/apps/{app}",
    tag = "apps",
    summary = "An app and its settings (apps:info)",
    params(("app" = String, Path, description = "the app's name")),
    responses((status = 200, body = verbs::AppInfo))
)]
async fn show(
    State(state): Api,
    Authed(caller): Authed,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(app_verb(&state, &caller, "apps:info", &name).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct Force {
    force: Option<bool>,
}

#[utoipa::path(
    delete,
    path = "/apps/{app}",
    tag = "apps",
    summary = "Delete an app and everything it runs (apps:destroy); needs ?force=true",
    params(("app" = String, Path, description = "the app's name"), Force),
    responses((status = 204, description = "deleted"))
)]
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

#[utoipa::path(
    get,
    path = "/apps/{app}/config",
    tag = "config",
    summary = "The app's env (config:show)",
    params(("app" = String, Path, description = "the app's name")),
    responses((status = 200, body = std::collections::BTreeMap<String, String>))
)]
async fn config(
    State(state): Api,
    Authed(caller): Authed,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(app_verb(&state, &caller, "config:show", &name).await?))
}

/// `{"K": "v", "OLD": null}` sets K and unsets OLD in one new release.
#[utoipa::path(
    patch,
    path = "/apps/{app}/config",
    tag = "config",
    summary = "Set and unset env in one new release: {\"K\": \"v\", \"OLD\": null}",
    params(("app" = String, Path, description = "the app's name")),
    request_body = std::collections::BTreeMap<String, Option<String>>,
    responses((status = 200, description = "the env after", body = std::collections::BTreeMap<String, String>))
)]
async fn change_config(
    State(state): Api,
    Authed(caller): Authed,
    Path(name): Path<String>,
    Input(changes): Input<BTreeMap<String, Option<String>>>,
) -> Result<Json<Value>, ApiError> {
    let name = app(&name)?;
    let changes = changes.into_iter().collect();
    // In a task of its own, as every verb: its rollout outlives the client.
    let context = state.context.clone();
    let change =
        async move { verbs::change_config(&context, &caller, name.as_str(), changes).await };
    let changed = tokio::spawn(change).await.map_err(|error| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the config change's task failed ({error}): see the server's log"),
        )
    })??;
    Ok(Json(serde_json::to_value(&changed.env).unwrap_or_default()))
}

#[utoipa::path(
    get,
    path = "/apps/{app}/domains",
    tag = "domains",
    summary = "The app's extra domains (domains:list)",
    params(("app" = String, Path, description = "the app's name")),
    responses((status = 200, body = Vec<String>))
)]
async fn domains(
    State(state): Api,
    Authed(caller): Authed,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        app_verb(&state, &caller, "domains:list", &name).await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewDomain {
    domain: String,
}

#[utoipa::path(
    post,
    path = "/apps/{app}/domains",
    tag = "domains",
    summary = "Route a domain to the app (domains:add)",
    params(("app" = String, Path, description = "the app's name")),
    request_body = NewDomain,
    responses((status = 201, description = "the domains after", body = Vec<String>))
)]
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

#[utoipa::path(
    delete,
    path = "/apps/{app}/domains/{domain}",
    tag = "domains",
    summary = "Stop routing a domain to the app (domains:remove)",
    params(("app" = String, Path, description = "the app's name"), ("domain" = String, Path, description = "the domain")),
    responses((status = 204, description = "removed"))
)]
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

#[utoipa::path(
    get,
    path = "/apps/{app}/health",
    tag = "health",
    summary = "The app's health check",
    params(("app" = String, Path, description = "the app's name")),
    responses((status = 200, body = store::records::Health))
)]
async fn health(
    State(state): Api,
    Authed(caller): Authed,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let info = app_verb(&state, &caller, "apps:info", &name).await?;
    Ok(Json(info["app"]["health"].clone()))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct HealthCheck {
    path: Option<String>,
    timeout: Option<u64>,
    attempts: Option<u32>,
}

#[utoipa::path(
    put,
    path = "/apps/{app}/health",
    tag = "health",
    summary = "Change the health check (health:set)",
    params(("app" = String, Path, description = "the app's name")),
    request_body = HealthCheck,
    responses((status = 200, description = "the check after", body = store::records::Health))
)]
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

#[utoipa::path(
    get,
    path = "/apps/{app}/resources",
    tag = "resources",
    summary = "The app's memory and CPU limits, as set and per process type (resource:report)",
    params(("app" = String, Path, description = "the app's name")),
    responses((status = 200, body = verbs::ResourceReport))
)]
async fn resources(
    State(state): Api,
    Authed(caller): Authed,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        app_verb(&state, &caller, "resource:report", &name).await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct LimitRequest {
    /// One process type's own limits; every type's when absent.
    process: Option<String>,
    /// `512m`, `1g`; `none` lifts the limit.
    memory: Option<String>,
    /// `1`, `0.5`; `none` lifts the limit.
    cpus: Option<String>,
}

#[utoipa::path(
    put,
    path = "/apps/{app}/resources",
    tag = "resources",
    summary = "Limit memory (swap included) and CPUs, releasing the serving image with them (resource:limit)",
    params(("app" = String, Path, description = "the app's name")),
    request_body = LimitRequest,
    responses((status = 200, description = "the limits after", body = store::records::Resources))
)]
async fn set_resources(
    State(state): Api,
    Authed(caller): Authed,
    Path(name): Path<String>,
    Input(limits): Input<LimitRequest>,
) -> Result<Json<Value>, ApiError> {
    let mut args = vec![app(&name)?.to_string()];
    if let Some(process) = limits.process {
        crate::input::segment("process type", &process)?;
        args.push(format!("--process={process}"));
    }
    let settings: Vec<String> = [("memory", limits.memory), ("cpus", limits.cpus)]
        .into_iter()
        .filter_map(|(name, value)| Some(format!("{name}={}", value?)))
        .collect();
    if settings.is_empty() {
        return Err(ApiError::invalid("name memory, cpus or both"));
    }
    args.extend(settings);
    Ok(Json(
        verb(&state, &caller, "resource:limit", args, b"").await?,
    ))
}

/// The process types and how many of each run, from the app's settings.
fn formation_of(info: &Value) -> Vec<Quantity> {
    let scale = &info["app"]["scale"];
    let mut types = vec!["web".to_string(), "worker".to_string()];
    if let Some(all) = scale.as_object() {
        types.extend(
            all.keys()
                .filter(|t| *t != "web" && *t != "worker")
                .cloned(),
        );
    }
    types
        .into_iter()
        .map(|process| Quantity {
            quantity: scale[&process].as_u64().unwrap_or(0) as u32,
            r#type: process,
        })
        .collect()
}

#[utoipa::path(
    get,
    path = "/apps/{app}/formation",
    tag = "formation",
    summary = "How many of each process type run",
    params(("app" = String, Path, description = "the app's name")),
    responses((status = 200, body = Vec<Quantity>))
)]
async fn formation(
    State(state): Api,
    Authed(caller): Authed,
    Path(name): Path<String>,
) -> Result<Json<Vec<Quantity>>, ApiError> {
    let info = app_verb(&state, &caller, "apps:info", &name).await?;
    Ok(Json(formation_of(&info)))
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Quantity {
    r#type: String,
    quantity: u32,
}

/// `[{"type": "web", "quantity": 3}]`: scales, rolling the serving release
/// out at the new counts; answers the formation after.
#[utoipa::path(
    patch,
    path = "/apps/{app}/formation",
    tag = "formation",
    summary = "Scale: [{\"type\": \"web\", \"quantity\": 3}] (ps:scale)",
    params(("app" = String, Path, description = "the app's name")),
    request_body = Vec<Quantity>,
    responses((status = 200, description = "the formation after", body = Vec<Quantity>))
)]
async fn scale(
    State(state): Api,
    Authed(caller): Authed,
    Path(name): Path<String>,
    Input(wanted): Input<Vec<Quantity>>,
) -> Result<Json<Vec<Quantity>>, ApiError> {
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

#[utoipa::path(
    get,
    path = "/apps/{app}/instances",
    tag = "formation",
    summary = "The app's instances: where each runs, its state, and its CPU and memory as its agent last sampled them (ps)",
    params(("app" = String, Path, description = "the app's name")),
    responses((status = 200, body = Vec<verbs::UnitRow>))
)]
async fn instances(
    State(state): Api,
    Authed(caller): Authed,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(app_verb(&state, &caller, "ps", &name).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Follow {
    repository: String,
    /// A tag glob (`v*`); every tag when absent.
    tags: Option<String>,
}

#[utoipa::path(
    post,
    path = "/apps/{app}/follow",
    tag = "apps",
    summary = "Deploy each new image of a repository, or of its tags matching a glob (deploy:follow)",
    params(("app" = String, Path, description = "the app's name")),
    request_body = Follow,
    responses((status = 200, body = store::records::DeploySettings))
)]
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

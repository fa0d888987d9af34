//! `/machines` and `/units`: what runs where; `/prometheus/targets`: where
//! Prometheus finds every agent's and proxy's metrics.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Authed;
use crate::error::ApiError;
use crate::input::{app, Params};
use crate::{one_of, verb, ApiState};

pub(crate) fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new()
        .routes(routes!(machines))
        .routes(routes!(machine))
        .routes(routes!(units))
        .routes(routes!(unit))
        .routes(routes!(prometheus_targets))
}

/// One group of Prometheus HTTP service discovery: addresses and their labels.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct TargetGroup {
    targets: Vec<String>,
    labels: std::collections::BTreeMap<String, String>,
}

/// Prometheus' HTTP service discovery (`http_sd_configs`): every agent
/// (`paz_role="agent"`, its machine) and every proxy that serves metrics
/// (`paz_role="proxy"`), from etcd, so that one entry finds the cluster.
#[utoipa::path(
    get,
    path = "/prometheus/targets",
    tag = "cluster",
    summary = "Every agent's and proxy's metrics address, as Prometheus' http_sd_configs reads them (admins)",
    responses((status = 200, body = Vec<TargetGroup>))
)]
async fn prometheus_targets(
    State(state): Api,
    Authed(caller): Authed,
) -> Result<Json<Vec<TargetGroup>>, ApiError> {
    caller.require_admin("list the cluster's metrics targets")?;
    let store = &state.context.store;
    let keys = store.keys();
    let mut groups = Vec::new();
    let group = |address: String, role: &str, id: &str, name: &str| TargetGroup {
        targets: vec![address],
        labels: [
            ("paz_role".to_string(), role.to_string()),
            (name.to_string(), id.to_string()),
            ("__metrics_path__".to_string(), "/metrics".to_string()),
        ]
        .into(),
    };
    for entry in store.list(&keys.machines()).await?.entries {
        let id = keys.machines().child_name(&entry.key).to_string();
        let Some(endpoint) = entry.value.endpoint else {
            continue;
        };
        let address = endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        groups.push(group(address, "agent", &id, "paz_machine"));
    }
    for entry in store.list(&keys.proxies()).await?.entries {
        let id = keys.proxies().child_name(&entry.key).to_string();
        groups.push(group(entry.value.metrics, "proxy", &id, "paz_proxy"));
    }
    Ok(Json(groups))
}

type Api = State<Arc<ApiState>>;

#[utoipa::path(
    get,
    path = "/machines",
    tag = "cluster",
    summary = "The machines alive, with how many units each runs (admins)",
    responses((status = 200, body = Vec<verbs::MachineRow>))
)]
async fn machines(State(state): Api, Authed(caller): Authed) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        verb(&state, &caller, "machines:list", vec![], b"").await?,
    ))
}

#[utoipa::path(
    get,
    path = "/machines/{id}",
    tag = "cluster",
    summary = "One machine (admins)",
    params(("id" = String, Path, description = "the machine's id")),
    responses((status = 200, body = verbs::MachineRow))
)]
async fn machine(
    State(state): Api,
    Authed(caller): Authed,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let listed = verb(&state, &caller, "machines:list", vec![], b"").await?;
    one_of(
        listed,
        |machine| machine["id"].as_str() == Some(id.as_str()),
        || format!("no machine {id} is alive: see /api/v1/machines"),
    )
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct Of {
    app: Option<String>,
}

#[utoipa::path(
    get,
    path = "/units",
    tag = "cluster",
    summary = "The submitted units, where each is placed and its state (an app's for a deployer)",
    params(Of),
    responses((status = 200, body = Vec<verbs::UnitRow>))
)]
async fn units(
    State(state): Api,
    Authed(caller): Authed,
    Params(of): Params<Of>,
) -> Result<Json<Value>, ApiError> {
    let args = match of.app {
        Some(name) => vec![app(&name)?.to_string()],
        None => vec![],
    };
    Ok(Json(verb(&state, &caller, "units:list", args, b"").await?))
}

/// The unit file, as text.
#[utoipa::path(
    get,
    path = "/units/{name}",
    tag = "cluster",
    summary = "A unit file's text (units:cat)",
    params(("name" = String, Path, description = "the unit's name")),
    responses((status = 200, body = String, content_type = "text/plain"))
)]
async fn unit(
    State(state): Api,
    Authed(caller): Authed,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    crate::input::segment("unit name", &name)?;
    let unit = verb(&state, &caller, "units:cat", vec![name], b"").await?;
    let text = unit["text"].as_str().unwrap_or_default().to_string();
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

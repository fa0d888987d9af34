//! `/machines` and `/units`: what runs where.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;

use crate::auth::Authed;
use crate::error::ApiError;
use crate::input::{app, Params};
use crate::{one_of, verb, ApiState};

pub(crate) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/machines", get(machines))
        .route("/machines/{id}", get(machine))
        .route("/units", get(units))
        .route("/units/{name}", get(unit))
}

type Api = State<Arc<ApiState>>;

async fn machines(State(state): Api, Authed(caller): Authed) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        verb(&state, &caller, "machines:list", vec![], b"").await?,
    ))
}

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Of {
    app: Option<String>,
}

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

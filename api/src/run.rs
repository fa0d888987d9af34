//! `POST /verbs/{verb}`: any verb with its SSH arguments, answering its text
//! and JSON, so that the `paz` client gives the output SSH gives (one
//! documentation for both doors). Rights are the verb's, as everywhere.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Authed;
use crate::error::ApiError;
use crate::input::Input;
use crate::ApiState;

pub(crate) fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new().routes(routes!(run))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Call {
    /// The verb's arguments, as `ssh paz@HOST VERB ARGS` takes them.
    #[serde(default)]
    args: Vec<String>,
    /// What the verb reads on stdin (`ssh-keys:add`).
    #[serde(default)]
    stdin: String,
}

/// What a verb answered.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
struct Answer {
    /// What SSH prints.
    text: String,
    /// What `--json` prints.
    #[schema(value_type = Object)]
    json: Value,
}

/// `{"text": ..., "json": ...}`: what SSH prints, and what `--json` prints.
#[utoipa::path(
    post,
    path = "/verbs/{verb}",
    tag = "verbs",
    summary = "Run any verb with its SSH arguments: what SSH prints (text) and --json prints (json)",
    params(("verb" = String, Path, description = "the verb, e.g. apps:list")),
    request_body = Call,
    responses((status = 200, body = Answer))
)]
async fn run(
    State(state): State<Arc<ApiState>>,
    Authed(caller): Authed,
    Path(verb): Path<String>,
    Input(call): Input<Call>,
) -> Result<Json<Answer>, ApiError> {
    let outcome = crate::run_verb(&state, &caller, &verb, call.args, call.stdin.as_bytes()).await?;
    Ok(Json(Answer {
        text: outcome.text,
        json: outcome.json,
    }))
}

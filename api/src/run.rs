//! `POST /verbs/{verb}`: any verb with its SSH arguments, answering its text
//! and JSON, so that the `paz` client gives the output SSH gives (one
//! documentation for both doors). Rights are the verb's, as everywhere.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::Authed;
use crate::error::ApiError;
use crate::input::Input;
use crate::ApiState;

pub(crate) fn routes() -> Router<Arc<ApiState>> {
    Router::new().route("/verbs/{verb}", post(run))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Call {
    /// The verb's arguments, as `ssh paz@HOST VERB ARGS` takes them.
    #[serde(default)]
    args: Vec<String>,
    /// What the verb reads on stdin (`ssh-keys:add`).
    #[serde(default)]
    stdin: String,
}

/// `{"text": ..., "json": ...}`: what SSH prints, and what `--json` prints.
async fn run(
    State(state): State<Arc<ApiState>>,
    Authed(caller): Authed,
    Path(verb): Path<String>,
    Input(call): Input<Call>,
) -> Result<Json<Value>, ApiError> {
    let outcome = verbs::run(
        &state.context,
        &caller,
        &verb,
        &call.args,
        call.stdin.as_bytes(),
    )
    .await?;
    Ok(Json(json!({"text": outcome.text, "json": outcome.json})))
}

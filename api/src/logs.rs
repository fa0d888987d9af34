//! `/apps/{app}/logs`: an app's log lines from every machine, merged by
//! time (the `logs` verb): JSON, or with `follow=true` (or `Accept:
//! text/event-stream`) Server-Sent Events, a `line` event each (its data
//! the line as JSON, with its `text` as `logs` prints it) and `notice`
//! events for what is said about the stream (a machine that cannot be
//! reached), until the client goes away.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use verbs::logs::LogEvent;

use crate::auth::Authed;
use crate::error::ApiError;
use crate::input::{app, Params};
use crate::ApiState;

pub(crate) fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new().routes(routes!(logs))
}

/// Which lines, as `logs` takes them.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct LogParams {
    /// How many of the newest kept lines (default 100).
    lines: Option<usize>,
    /// Only lines since a time (`2026-12-01T10:00:00Z`) or a while ago (`10m`).
    since: Option<String>,
    /// Only this process type (`web`).
    process: Option<String>,
    /// Only this instance (`web.2`).
    instance: Option<String>,
    /// Then each new line as it is written (Server-Sent Events).
    #[serde(default)]
    follow: bool,
}

impl LogParams {
    /// The `logs` verb's words for these.
    fn words(&self, app: &str) -> Vec<String> {
        let mut words = vec![app.to_string()];
        let mut add = |flag: &str, value: Option<String>| {
            if let Some(value) = value {
                words.push(flag.to_string());
                words.push(value);
            }
        };
        add("-n", self.lines.map(|n| n.to_string()));
        add("--since", self.since.clone());
        add("--process", self.process.clone());
        add("--instance", self.instance.clone());
        if self.follow {
            words.push("-f".to_string());
        }
        words
    }
}

#[utoipa::path(
    get,
    path = "/apps/{app}/logs",
    tag = "apps",
    summary = "An app's log lines from every machine, merged by time (logs): JSON, or with follow=true or Accept: text/event-stream line and notice events, the lines kept then each new one",
    params(("app" = String, Path, description = "the app's name"), LogParams),
    responses((status = 200, description = "the lines and what was said of the machines asked", body = verbs::logs::LogLines, content_type = "application/json"), (status = 200, description = "followed", content_type = "text/event-stream"))
)]
async fn logs(
    State(state): State<Arc<ApiState>>,
    Authed(caller): Authed,
    Path(name): Path<String>,
    Params(params): Params<LogParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let app = app(&name)?;
    let events = params.follow || crate::wants_events(&headers);
    let stream = verbs::logs::stream(&state.context, &caller, &params.words(app.as_str())).await?;
    if !events {
        return Ok(Json(stream.gather().await).into_response());
    }
    let events = futures::stream::unfold(stream, |mut stream| async move {
        let event = match stream.events.recv().await? {
            LogEvent::Line(line) => {
                let mut data = serde_json::to_value(&line).unwrap_or_default();
                data["text"] = serde_json::Value::String(line.to_string());
                data["time"] = serde_json::Value::String(line.time());
                Event::default().event("line").data(data.to_string())
            }
            LogEvent::Notice(notice) => Event::default().event("notice").data(notice),
        };
        Some((Ok::<Event, Infallible>(event), stream))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

//! One-off containers over the API (`run`, `run:detached`, `run:list`,
//! `run:stop`): `POST /apps/{app}/runs` starts one, detached (201), or
//! attached when the request asks to upgrade to `paz-attach` (101): the
//! connection then carries the attach frames of `telemetry::attach`, the
//! caller's stdin and window size one way, the container's stdout, stderr
//! and exit code the other, as `paz run` speaks them. Rights are the
//! verbs'.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::Value;
use telemetry::attach::{Frame, FrameCodec, ATTACH_PROTOCOL};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Authed;
use crate::error::ApiError;
use crate::input::{app, Input};
use crate::{verb, ApiState};

pub(crate) fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new()
        .routes(routes!(list, start))
        .routes(routes!(stop))
}

#[utoipa::path(
    get,
    path = "/apps/{app}/runs",
    tag = "runs",
    summary = "The app's one-off containers (run:list)",
    params(("app" = String, Path, description = "the app's name")),
    responses((status = 200, body = Vec<verbs::runs::RunRow>))
)]
async fn list(
    State(state): State<Arc<ApiState>>,
    Authed(caller): Authed,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let name = app(&name)?.to_string();
    Ok(Json(
        verb(&state, &caller, "run:list", vec![name], b"").await?,
    ))
}

/// A request's upgrade to `paz-attach`, if it asked for one.
pub(crate) struct Upgrade(Option<hyper::upgrade::OnUpgrade>);

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Upgrade, ApiError> {
        let asked = parts
            .headers
            .get(header::UPGRADE)
            .and_then(|value| value.to_str().ok());
        match asked {
            None => Ok(Upgrade(None)),
            Some(protocol) if protocol.eq_ignore_ascii_case(ATTACH_PROTOCOL) => {
                match parts.extensions.remove::<hyper::upgrade::OnUpgrade>() {
                    Some(upgrade) => Ok(Upgrade(Some(upgrade))),
                    // Never started detached instead of what was asked.
                    None => Err(ApiError::invalid(
                        "this connection cannot be upgraded (an attach needs HTTP/1.1 to the API, through no proxy that drops Upgrade)",
                    )),
                }
            }
            Some(other) => Err(ApiError::invalid(format!(
                "Upgrade: {other} is not what this takes: ask for Upgrade: {ATTACH_PROTOCOL} to attach, or none to start it detached"
            ))),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewRun {
    /// The command, exec form (`["sh", "-c", "./migrate"]`).
    command: Vec<String>,
    /// When attached: a TTY of this many columns and rows.
    tty: Option<TermSize>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct TermSize {
    cols: u16,
    rows: u16,
}

#[utoipa::path(
    post,
    path = "/apps/{app}/runs",
    tag = "runs",
    summary = "Start a one-off container of the serving release: detached (run:detached), or attached with Upgrade: paz-attach (run)",
    params(("app" = String, Path, description = "the app's name")),
    request_body = NewRun,
    responses(
        (status = 201, description = "started detached: its output goes to the app's logs", body = Object),
        (status = 101, description = "attached: the connection carries paz-attach frames until it exits")
    )
)]
async fn start(
    State(state): State<Arc<ApiState>>,
    Authed(caller): Authed,
    Path(name): Path<String>,
    Upgrade(upgrade): Upgrade,
    Input(run): Input<NewRun>,
) -> Result<Response, ApiError> {
    let name = app(&name)?.to_string();
    let Some(upgrade) = upgrade else {
        if run.tty.is_some() {
            return Err(ApiError::invalid(
                "a TTY is for an attached run: ask for Upgrade: paz-attach",
            ));
        }
        let mut args = vec![name];
        args.extend(run.command);
        let started = verb(&state, &caller, "run:detached", args, b"").await?;
        return Ok((StatusCode::CREATED, Json(started)).into_response());
    };
    let context = &state.context;
    let size = run.tty.as_ref().map(|size| (size.cols, size.rows));
    let started =
        verbs::runs::start_attached(context, &caller, &name, &run.command, size.is_some()).await?;
    let agent = started.attach(context, size).await?;
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let client = tokio_util::codec::Framed::new(
                    hyper_util::rt::TokioIo::new(upgraded),
                    FrameCodec,
                );
                relay(client, agent).await;
            }
            Err(error) => tracing::warn!(%error, "an attach's upgrade failed"),
        }
        // Dropped: the one-off's unit goes with its lease.
        drop(started);
    });
    Ok(Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, ATTACH_PROTOCOL)
        .body(axum::body::Body::empty())
        .unwrap_or_default())
}

/// Carries the caller's frames (stdin, its end, window sizes) to the agent
/// and the agent's (output, exit) to the caller, each way on its own, until
/// either ends.
async fn relay<C>(client: C, agent: verbs::runs::Attached)
where
    C: futures::Stream<Item = Result<Frame, telemetry::attach::FrameError>>
        + futures::Sink<Frame>
        + Unpin,
{
    let (mut client_sink, mut client_stream) = client.split();
    let (mut agent_sink, mut agent_stream) = agent.split();
    {
        let up = async {
            loop {
                match client_stream.next().await {
                    Some(Ok(
                        frame @ (Frame::Stdin(_) | Frame::StdinEnd | Frame::Resize { .. }),
                    )) => {
                        if agent_sink.send(frame).await.is_err() {
                            return;
                        }
                    }
                    // The caller's end of the connection closed: it is gone
                    // (its stdin ends with a StdinEnd frame, not a half-close),
                    // and so is its run. Another kind is not the caller's to
                    // send, and a broken frame ends it too.
                    None | Some(_) => return,
                }
            }
        };
        let down = async {
            loop {
                let frame = match agent_stream.next().await {
                    Some(Ok(frame)) => frame,
                    _ => Frame::Failed("the connection to the one-off's machine was lost".into()),
                };
                let last = matches!(frame, Frame::Exit(_) | Frame::Failed(_));
                if client_sink.send(frame).await.is_err() || last {
                    return;
                }
            }
        };
        tokio::select! {
            () = up => {}
            () = down => {}
        }
    }
    let _ = client_sink.close().await;
}

#[utoipa::path(
    delete,
    path = "/apps/{app}/runs/{id}",
    tag = "runs",
    summary = "Stop a one-off and remove its container (run:stop)",
    params(("app" = String, Path, description = "the app's name"), ("id" = String, Path, description = "the one-off's id")),
    responses((status = 204, description = "stopped"))
)]
async fn stop(
    State(state): State<Arc<ApiState>>,
    Authed(caller): Authed,
    Path((name, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let name = app(&name)?.to_string();
    verb(&state, &caller, "run:stop", vec![name, id], b"").await?;
    Ok(StatusCode::NO_CONTENT)
}

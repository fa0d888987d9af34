//! Rollouts started over the API: `POST /apps/{app}/releases` (deploy an
//! image, or roll back to a release) and `POST /apps/{app}/actions/restart`
//! answer 202 with the rollout's `Location`; `/apps/{app}/rollouts/{id}` is
//! its record (kept after it ends), and `.../events` its steps, live as
//! Server-Sent Events that resume from `Last-Event-ID`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use deployer::RolloutRecord;
use serde::Deserialize;
use serde_json::{json, Value};
use store::{AppName, Key, Rollout, RolloutStatus, Step};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use verbs::{Caller, VerbError};

use crate::auth::Authed;
use crate::error::ApiError;
use crate::input::{app, Input, Page, Params};
use crate::ApiState;

pub(crate) fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new()
        .routes(routes!(restart))
        .routes(routes!(list))
        .routes(routes!(show))
        .routes(routes!(events))
}

type Api = State<Arc<ApiState>>;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewRelease {
    /// An image to release with the app's env (`deploy`).
    image: Option<String>,
    /// A release to run again (`rollback`).
    release: Option<u64>,
    /// `true`: run again the last release before the serving one that ran
    /// (`rollback APP`).
    previous: Option<bool>,
}

/// `{"image": ...}` deploys, `{"release": N}` rolls back.
#[utoipa::path(
    post,
    path = "/apps/{app}/releases",
    tag = "releases",
    summary = "Deploy an image ({\"image\": ...}), or roll back ({\"release\": N} or {\"previous\": true}): a rollout",
    params(("app" = String, Path, description = "the app's name")),
    request_body = NewRelease,
    responses((status = 202, description = "started; Location is the rollout, whose events follow it", body = store::Rollout))
)]
pub(crate) async fn release(
    State(state): Api,
    Authed(caller): Authed,
    Path(name): Path<String>,
    Input(new): Input<NewRelease>,
) -> Result<Response, ApiError> {
    let app = app(&name)?;
    let (kind, verb, args, needs) = match (new.image, new.release, new.previous) {
        (Some(image), None, None) if !image.starts_with('-') => {
            units::check_image(&image).map_err(ApiError::invalid)?;
            ("deploy", "deploy", vec![app.to_string(), image], Needs::Nothing)
        }
        (None, Some(n), None) => {
            let args = vec![app.to_string(), n.to_string()];
            ("rollback", "rollback", args, Needs::Release(n))
        }
        (None, None, Some(true)) => ("rollback", "rollback", vec![app.to_string()], Needs::Serving),
        _ => return Err(ApiError::invalid(
            "give {\"image\": \"REPO:TAG\"} to deploy an image, {\"release\": N} to roll back to release N, or {\"previous\": true} to roll back to the one before",
        )),
    };
    let record = begin(&state, caller, app, (kind, verb, args), needs).await?;
    Ok(accepted(record))
}

/// 202 with the rollout's `Location`.
fn accepted(record: Rollout) -> Response {
    let location = format!("/api/v1/apps/{}/rollouts/{}", record.app, record.id);
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(record),
    )
        .into_response()
}

/// Rolls `app` back to release `n` as `caller`, as `POST .../releases`
/// with `{"release": N}` does; the rollout's record, which its steps go on
/// to fill.
pub async fn rollback(
    state: &ApiState,
    caller: &Caller,
    app: &AppName,
    n: u64,
) -> Result<Rollout, ApiError> {
    let args = vec![app.to_string(), n.to_string()];
    let verb = ("rollback", "rollback", args);
    begin(state, caller.clone(), app.clone(), verb, Needs::Release(n)).await
}

/// Runs `verb` (`config:set`, `ps:scale`, ...) with `args` on `app` as
/// `caller`, its rollout recorded as `kind`; the record, which the verb's
/// steps go on to fill. What the verb refuses ends the record as failed
/// with its reason.
pub async fn start_rollout(
    state: &ApiState,
    caller: &Caller,
    app: &AppName,
    (kind, verb, args): (&str, &'static str, Vec<String>),
) -> Result<Rollout, ApiError> {
    let verb = (kind, verb, args);
    begin(state, caller.clone(), app.clone(), verb, Needs::Nothing).await
}

#[utoipa::path(
    post,
    path = "/apps/{app}/actions/restart",
    tag = "rollouts",
    summary = "Restart the serving release's instances one at a time (ps:restart): a rollout",
    params(("app" = String, Path, description = "the app's name")),
    responses((status = 202, description = "started; Location is the rollout", body = store::Rollout))
)]
async fn restart(
    State(state): Api,
    Authed(caller): Authed,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let app = app(&name)?;
    let args = vec![app.to_string()];
    let verb = ("restart", "ps:restart", args);
    let record = begin(&state, caller, app, verb, Needs::Serving).await?;
    Ok(accepted(record))
}

/// What a rollout needs before it can start, checked before its 202 (what
/// only the rollout can find out ends it as failed).
#[derive(Debug, Clone, Copy)]
enum Needs {
    Nothing,
    /// This release to exist (a rollback to it).
    Release(u64),
    /// A serving release (a restart, a rollback to the one before).
    Serving,
}

impl Needs {
    async fn check(self, store: &store::Store, app: &AppName) -> Result<(), ApiError> {
        match self {
            Needs::Nothing => {}
            // The verb's own words: one message for both doors.
            Needs::Release(n) if store.get(&store.keys().release(app, n)).await?.is_none() => {
                return Err(ApiError::not_found(format!(
                    "{app} has no release v{n}: see `releases {app}`"
                )));
            }
            Needs::Serving if store.get(&store.keys().current(app)).await?.is_none() => {
                return Err(ApiError::invalid(format!(
                    "{app} has no release yet: push it, or deploy an image first"
                )));
            }
            Needs::Release(_) | Needs::Serving => {}
        }
        Ok(())
    }
}

/// Records a rollout and runs `verb` in a task of its own (a client that
/// goes away does not stop it); the record, to which the verb writes its
/// steps.
async fn begin(
    state: &ApiState,
    caller: Caller,
    app: AppName,
    (kind, verb, args): (&str, &'static str, Vec<String>),
    needs: Needs,
) -> Result<Rollout, ApiError> {
    caller.require_app(&app)?;
    let store = state.context.store.clone();
    let known = store.get(&store.keys().app(&app)).await?;
    if known.is_none() {
        return Err(ApiError::not_found(format!(
            "app `{app}` does not exist: create it with POST /api/v1/apps"
        )));
    }
    needs.check(&store, &app).await?;
    if state.context.rollouts.is_none() {
        return Err(ApiError::invalid(
            "no deployer runs with this server: use paz up or paz server",
        ));
    }
    let clock = state.context.clock;
    let (written, record) = RolloutRecord::begin(&store, clock, &app, kind, &caller.name).await?;
    let mut context = state.context.clone();
    context.rollout_record = Some(written.key().clone());
    tokio::spawn(async move {
        let result = verbs::run(&context, &caller, verb, &args, b"").await;
        // A verb refused before its rollout began (a bad image, a release
        // that failed) ends the record here; one that rolled out ended it.
        let release = result
            .as_ref()
            .ok()
            .and_then(|outcome| outcome.json["release"].as_u64());
        let error = result.err().map(|error| match error {
            VerbError::Rollout { error, .. } => error.to_string(),
            error => error.to_string(),
        });
        written.finish(release, error).await;
    });
    Ok(record)
}

/// The rollout record `id` of `app`, if `caller` may use the app.
async fn record_of(
    state: &ApiState,
    caller: &Caller,
    name: &str,
    id: &str,
) -> Result<(Key<Rollout>, Rollout), ApiError> {
    let app = app(name)?;
    caller.require_app(&app)?;
    let store = &state.context.store;
    let key = store.keys().rollout(&app, id)?;
    let record = store
        .get(&key)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("{app} has no rollout {id}")))?;
    let clock = state.context.clock;
    let record =
        RolloutRecord::settled(store, clock, &key, record.mod_revision, record.value).await?;
    Ok((key, record))
}

/// Rollout `id` of `app`, if `caller` may use the app (one whose server
/// stopped is ended as failed first).
pub async fn rollout(
    state: &ApiState,
    caller: &Caller,
    app: &AppName,
    id: &str,
) -> Result<Rollout, ApiError> {
    Ok(record_of(state, caller, app.as_str(), id).await?.1)
}

/// The rollouts of `app`, oldest first, if `caller` may use the app.
pub async fn rollouts(
    state: &ApiState,
    caller: &Caller,
    app: &AppName,
) -> Result<Vec<Rollout>, ApiError> {
    caller.require_app(app)?;
    let store = &state.context.store;
    let listing = store.list(&store.keys().rollouts(app)).await?;
    let mut records = Vec::new();
    for entry in listing.entries {
        let key = store.keys().rollout(app, &entry.value.id)?;
        let clock = state.context.clock;
        records.push(
            RolloutRecord::settled(store, clock, &key, entry.mod_revision, entry.value).await?,
        );
    }
    Ok(records)
}

/// The app's rollouts started over the API, oldest first.
#[utoipa::path(
    get,
    path = "/apps/{app}/rollouts",
    tag = "rollouts",
    summary = "The app's rollouts (pushes, deploys, rollbacks, config changes, scales, restarts), oldest first",
    params(("app" = String, Path, description = "the app's name"), crate::input::Page),
    responses((status = 200, body = Vec<store::Rollout>))
)]
async fn list(
    State(state): Api,
    Authed(caller): Authed,
    Path(name): Path<String>,
    Params(page): Params<Page>,
) -> Result<Response, ApiError> {
    let app = app(&name)?;
    let records = rollouts(&state, &caller, &app)
        .await?
        .into_iter()
        .map(|record| serde_json::to_value(record).unwrap_or_default())
        .collect();
    let path = format!("/api/v1/apps/{app}/rollouts");
    let key = |record: &Value| record["id"].as_str().unwrap_or_default().to_string();
    Ok(page.of(records, key, &path))
}

#[utoipa::path(
    get,
    path = "/apps/{app}/rollouts/{id}",
    tag = "rollouts",
    summary = "One rollout: its steps so far and how it ended",
    params(("app" = String, Path, description = "the app's name"), ("id" = String, Path, description = "the rollout's id")),
    responses((status = 200, body = store::Rollout))
)]
async fn show(
    State(state): Api,
    Authed(caller): Authed,
    Path((name, id)): Path<(String, String)>,
) -> Result<Json<Rollout>, ApiError> {
    Ok(Json(record_of(&state, &caller, &name, &id).await?.1))
}

/// A step as an event: its index is the event id, its JSON (with the line
/// SSH prints as `text`) the data.
fn step_event(index: usize, step: &Step) -> Event {
    let mut data = serde_json::to_value(step).unwrap_or_default();
    data["text"] = json!(step.to_string());
    Event::default()
        .id(index.to_string())
        .event("step")
        .data(data.to_string())
}

/// The steps so far as JSON, or, with `Accept: text/event-stream`, every
/// step as it happens from the one after `Last-Event-ID`, then an `end`
/// event with how it ended.
#[utoipa::path(
    get,
    path = "/apps/{app}/rollouts/{id}/events",
    tag = "rollouts",
    summary = "A rollout's steps: so far as JSON, or with Accept: text/event-stream each as it happens (step events, their index the id; Last-Event-ID resumes), then an end event",
    params(("app" = String, Path, description = "the app's name"), ("id" = String, Path, description = "the rollout's id"), ("Last-Event-ID" = Option<String>, Header, description = "the index of the last step the client has")),
    responses((status = 200, content((Vec<store::Step> = "application/json"), (String = "text/event-stream"))))
)]
async fn events(
    State(state): Api,
    Authed(caller): Authed,
    Path((name, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (key, record) = record_of(&state, &caller, &name, &id).await?;
    if !crate::wants_events(&headers) {
        return Ok(Json(record.steps).into_response());
    }
    let sent = crate::last_event_id(&headers).map_or(0, |last| last.saturating_add(1));
    let store = state.context.store.clone();
    let watch = store.watch_key(&key);
    let start = Follow {
        watch,
        sent,
        pending: VecDeque::new(),
        done: false,
        store,
        clock: state.context.clock,
        key,
    };
    let stream = futures::stream::unfold(start, |mut follow| async move {
        loop {
            if let Some(event) = follow.pending.pop_front() {
                return Some((Ok::<Event, Infallible>(event), follow));
            }
            if follow.done {
                return None;
            }
            let event = match tokio::time::timeout(QUIET, follow.watch.next_event()).await {
                Ok(event) => event?,
                // Nothing for a while: its server may have stopped.
                Err(_) => {
                    follow.settle().await;
                    continue;
                }
            };
            match event.into_latest() {
                Some(record) => follow.take(&record),
                None => follow.done = true,
            }
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// How long a rollout's stream waits for a change before it checks that
/// the rollout's server still runs it.
const QUIET: std::time::Duration = std::time::Duration::from_secs(15);

/// Where an event stream of a rollout is.
struct Follow {
    watch: store::Watch<Rollout>,
    /// The index of the next step to send.
    sent: usize,
    pending: VecDeque<Event>,
    done: bool,
    store: store::Store,
    clock: verbs::Clock,
    key: Key<Rollout>,
}

impl Follow {
    /// Ends the record if its server stopped; the watch then tells it.
    async fn settle(&self) {
        if let Ok(Some(record)) = self.store.get(&self.key).await {
            let (store, clock) = (&self.store, self.clock);
            let settled =
                RolloutRecord::settled(store, clock, &self.key, record.mod_revision, record.value);
            if let Err(error) = settled.await {
                tracing::debug!(key = %self.key, %error, "cannot settle a quiet rollout");
            }
        }
    }

    /// Queues the steps of `record` not sent yet, and the end when it ended.
    fn take(&mut self, record: &Rollout) {
        for (index, step) in record.steps.iter().enumerate().skip(self.sent) {
            self.pending.push_back(step_event(index, step));
        }
        self.sent = self.sent.max(record.steps.len());
        if record.status != RolloutStatus::Running {
            let end =
                json!({"status": record.status, "release": record.release, "error": record.error});
            self.pending
                .push_back(Event::default().event("end").data(end.to_string()));
            self.done = true;
        }
    }
}

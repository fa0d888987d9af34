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
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{json, Value};
use store::{AppName, Key, Rollout, RolloutStatus, Step, Store};
use tokio::sync::mpsc;
use verbs::{Caller, VerbError};

use crate::auth::Authed;
use crate::error::ApiError;
use crate::input::{app, Input};
use crate::ApiState;

pub(crate) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/apps/{app}/actions/restart", post(restart))
        .route("/apps/{app}/rollouts", get(list))
        .route("/apps/{app}/rollouts/{id}", get(show))
        .route("/apps/{app}/rollouts/{id}/events", get(events))
}

type Api = State<Arc<ApiState>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewRelease {
    /// An image to release with the app's env (`deploy`).
    image: Option<String>,
    /// A release to run again (`rollback`).
    release: Option<u64>,
}

/// `{"image": ...}` deploys, `{"release": N}` rolls back.
pub(crate) async fn release(
    State(state): Api,
    Authed(caller): Authed,
    Path(name): Path<String>,
    Input(new): Input<NewRelease>,
) -> Result<Response, ApiError> {
    let app = app(&name)?;
    let (kind, verb, args) = match (new.image, new.release) {
        (Some(image), None) if !image.starts_with('-') => {
            ("deploy", "deploy", vec![app.to_string(), image])
        }
        (None, Some(n)) => ("rollback", "rollback", vec![app.to_string(), n.to_string()]),
        _ => return Err(ApiError::invalid(
            "give {\"image\": \"REPO:TAG\"} to deploy an image or {\"release\": N} to roll back",
        )),
    };
    begin(&state, caller, app, kind, verb, args).await
}

async fn restart(
    State(state): Api,
    Authed(caller): Authed,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let app = app(&name)?;
    let args = vec![app.to_string()];
    begin(&state, caller, app, "restart", "ps:restart", args).await
}

/// Records a rollout and runs `verb` in a task of its own (a client that
/// goes away does not stop it); answers 202 with the record's `Location`.
async fn begin(
    state: &ApiState,
    caller: Caller,
    app: AppName,
    kind: &str,
    verb: &'static str,
    args: Vec<String>,
) -> Result<Response, ApiError> {
    caller.require_app(&app)?;
    let store = state.context.store.clone();
    let known = store
        .get(&store.keys().app(&app))
        .await
        .map_err(|error| ApiError::from(VerbError::from(error)))?;
    if known.is_none() {
        return Err(ApiError::not_found(format!(
            "app `{app}` does not exist: create it with POST /api/v1/apps"
        )));
    }
    let rollouts = state.context.rollouts.clone().ok_or_else(|| {
        ApiError::invalid("no deployer runs with this server: use paz up or paz server")
    })?;
    let now = state.context.clock.now();
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis());
    let id = format!("{millis}-{}", hex::encode(rand::random::<[u8; 3]>()));
    let record = Rollout {
        id: id.clone(),
        app: app.clone(),
        kind: kind.to_string(),
        by: caller.name.clone(),
        started_at: now,
        finished_at: None,
        release: None,
        status: RolloutStatus::Running,
        steps: Vec::new(),
        error: None,
    };
    let key = store.keys().rollout(&app, &id)?;
    store
        .create(&key, &record)
        .await
        .map_err(|error| ApiError::from(VerbError::from(error)))?;
    let mut context = state.context.clone();
    context.rollouts = Some(Arc::new(Recorded {
        inner: rollouts,
        store: store.clone(),
        key: key.clone(),
    }));
    tokio::spawn(async move {
        let result = verbs::run(&context, &caller, verb, &args, b"").await;
        finish(&store, &key, result, context.clock.now()).await;
    });
    let location = format!("/api/v1/apps/{app}/rollouts/{id}");
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(record),
    )
        .into_response())
}

/// Writes how the rollout ended.
async fn finish(
    store: &Store,
    key: &Key<Rollout>,
    result: Result<verbs::Outcome, VerbError>,
    now: u64,
) {
    let ended = |record: &mut Rollout| {
        record.finished_at = Some(now);
        match &result {
            Ok(outcome) => {
                record.status = RolloutStatus::Succeeded;
                if let Some(n) = outcome.json["release"].as_u64() {
                    record.release = Some(n);
                }
            }
            Err(error) => {
                record.status = RolloutStatus::Failed;
                // A failed rollout's steps are in the record already.
                let reason = match error {
                    VerbError::Rollout { error, .. } => error.to_string(),
                    error => error.to_string(),
                };
                record.error = Some(reason);
            }
        }
        Ok::<(), store::StoreError>(())
    };
    if let Err(error) = store.update_with(key, ended).await {
        tracing::warn!(key = %key, %error, "cannot record how a rollout ended");
    }
}

/// The deployer, with each step also appended to the rollout's record.
#[derive(Debug)]
struct Recorded {
    inner: Arc<dyn verbs::Rollouts>,
    store: Store,
    key: Key<Rollout>,
}

impl Recorded {
    /// A channel for the deployer's steps: each is written to the record,
    /// then passed on to `report`; the task ends when the deployer is done.
    fn tee(
        &self,
        release: Option<u64>,
        report: mpsc::Sender<Step>,
    ) -> (mpsc::Sender<Step>, tokio::task::JoinHandle<()>) {
        let (steps, mut received) = mpsc::channel::<Step>(64);
        let (store, key) = (self.store.clone(), self.key.clone());
        let task = tokio::spawn(async move {
            while let Some(step) = received.recv().await {
                let noted = step.clone();
                let append = |record: &mut Rollout| {
                    record.steps.push(noted.clone());
                    record.release = record.release.or(release);
                    Ok::<(), store::StoreError>(())
                };
                if let Err(error) = store.update_with(&key, append).await {
                    tracing::warn!(key = %key, %error, "cannot record a rollout's step");
                }
                let _ = report.send(step).await;
            }
        });
        (steps, task)
    }
}

type Done = BoxFuture<'static, Result<(), deployer::DeployError>>;

impl verbs::Rollouts for Recorded {
    fn roll_out(&self, app: AppName, n: u64, report: mpsc::Sender<Step>) -> Done {
        let (steps, written) = self.tee(Some(n), report);
        let inner = self.inner.roll_out(app, n, steps);
        Box::pin(async move {
            let result = inner.await;
            let _ = written.await;
            result
        })
    }

    fn restart(&self, app: AppName, report: mpsc::Sender<Step>) -> Done {
        let (steps, written) = self.tee(None, report);
        let inner = self.inner.restart(app, steps);
        Box::pin(async move {
            let result = inner.await;
            let _ = written.await;
            result
        })
    }

    fn resolve_image(
        &self,
        reference: String,
    ) -> BoxFuture<'static, Result<store::ResolvedImage, deployer::DeployError>> {
        self.inner.resolve_image(reference)
    }

    fn image_owner(&self, reference: &str) -> Option<AppName> {
        self.inner.image_owner(reference)
    }
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
        .await
        .map_err(|error| ApiError::from(VerbError::from(error)))?
        .ok_or_else(|| ApiError::not_found(format!("{app} has no rollout {id}")))?;
    Ok((key, record.value))
}

/// The app's rollouts started over the API, oldest first.
async fn list(
    State(state): Api,
    Authed(caller): Authed,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let app = app(&name)?;
    caller.require_app(&app)?;
    let store = &state.context.store;
    let listing = store
        .list(&store.keys().rollouts(&app))
        .await
        .map_err(|error| ApiError::from(VerbError::from(error)))?;
    let records: Vec<Value> = listing
        .entries
        .into_iter()
        .map(|entry| serde_json::to_value(entry.value).unwrap_or_default())
        .collect();
    Ok(Json(Value::Array(records)))
}

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
    let sent = crate::last_event_id(&headers).map_or(0, |last| last + 1);
    let watch = state.context.store.watch_key(&key);
    let start = Follow {
        watch,
        sent,
        pending: VecDeque::new(),
        done: false,
    };
    let stream = futures::stream::unfold(start, |mut follow| async move {
        loop {
            if let Some(event) = follow.pending.pop_front() {
                return Some((Ok::<Event, Infallible>(event), follow));
            }
            if follow.done {
                return None;
            }
            let event = follow.watch.next_event().await?;
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

/// Where an event stream of a rollout is.
struct Follow {
    watch: store::Watch<Rollout>,
    /// The index of the next step to send.
    sent: usize,
    pending: VecDeque<Event>,
    done: bool,
}

impl Follow {
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

//! `GET /events`: every change the caller may see (apps, releases, rollouts,
//! builds, units and their placement and state, routed instances, machines)
//! as Server-Sent Events, one per etcd revision (its `id`), so a client that
//! reconnects with `Last-Event-ID` gets what it missed, each once, in order.
//! Without `Accept: text/event-stream` it answers the revision now and the
//! changes since `?after=` as JSON.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use store::{Keys, SnapshotReason, WatchEvent};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use verbs::Caller;

use crate::auth::Authed;
use crate::error::ApiError;
use crate::input::Params;
use crate::ApiState;

pub(crate) fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new().routes(routes!(events))
}

/// The most changes one JSON answer holds.
const MOST_CHANGES: usize = 1000;

/// How long a JSON answer waits for etcd's history to reach now.
const CATCH_UP: Duration = Duration::from_secs(2);

/// What a changed key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    App,
    Release,
    /// The number of the release that serves.
    Current,
    Rollout,
    Build,
    /// A unit file submitted or withdrawn.
    Unit,
    /// Where the scheduler placed a unit.
    Placement,
    /// Why the scheduler cannot place a unit.
    Unplaced,
    /// What an agent reports of a unit (its instance's state).
    State,
    /// A healthy instance announced to the proxy.
    Route,
    Machine,
}

/// One changed key, as the stream tells it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Change {
    pub kind: Kind,
    /// `put` or `delete`.
    pub action: &'static str,
    /// The app it belongs to; none for a machine.
    pub app: Option<String>,
    /// What it is within its kind: the release number, the unit name, the
    /// machine id, `<release>/<instance>` for a route.
    pub name: String,
    /// The record after the change (JSON, or text for a unit file); none
    /// after a delete.
    pub value: Option<Value>,
}

/// What `key` (a full key) is, with its app; `None` for keys the stream
/// never shows (keys, tokens, settings, elections, image events).
pub(crate) fn classify(keys: &Keys, key: &str) -> Option<(Kind, Option<String>, String)> {
    let rest = key.strip_prefix(keys.root())?.strip_prefix('/')?;
    let (dir, rest) = rest.split_once('/')?;
    let parts: Vec<&str> = rest.split('/').collect();
    let unit_app = |unit: &str| units::parse_instance_name(unit).map(|name| name.app.to_string());
    let app_and = |kind, name: String| Some((kind, Some(parts[0].to_string()), name));
    match (dir, parts.as_slice()) {
        ("apps", [app]) => Some((Kind::App, Some(app.to_string()), app.to_string())),
        ("apps", [_, "current"]) => app_and(Kind::Current, "current".into()),
        ("apps", [_, "releases", n]) => app_and(Kind::Release, n.to_string()),
        ("apps", [_, "rollouts", id]) => app_and(Kind::Rollout, id.to_string()),
        ("builds", [_, id]) => app_and(Kind::Build, id.to_string()),
        ("services", [_, release, instance]) => {
            app_and(Kind::Route, format!("{release}/{instance}"))
        }
        ("machines", [id]) => Some((Kind::Machine, None, id.to_string())),
        ("units", [unit]) => Some((Kind::Unit, unit_app(unit), unit.to_string())),
        ("schedule", [unit]) => Some((Kind::Placement, unit_app(unit), unit.to_string())),
        ("unplaced", [unit]) => Some((Kind::Unplaced, unit_app(unit), unit.to_string())),
        ("state", [unit]) => Some((Kind::State, unit_app(unit), unit.to_string())),
        _ => None,
    }
}

/// Whether `caller` may see a change of `kind` to `app`: an admin sees
/// everything, a deployer its apps' changes (never machines, nor units
/// that belong to no app).
fn may_see(caller: &Caller, kind: Kind, app: Option<&str>) -> bool {
    if caller.is_admin() {
        return true;
    }
    match (kind, app) {
        (Kind::Machine, _) | (_, None) => false,
        (_, Some(app)) => store::AppName::new(app).is_ok_and(|app| caller.may_use(&app)),
    }
}

/// The record stored at a key, as JSON (text that is not JSON, e.g. a unit
/// file or `ip:port`, as a string).
fn value_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// The changes of one watch event that `caller` may see.
fn change_of(keys: &Keys, caller: &Caller, event: WatchEvent<Vec<u8>>) -> Option<Change> {
    let (key, action, value) = match event {
        WatchEvent::Put { key, value, .. } => (key, "put", Some(value_of(&value))),
        WatchEvent::Delete { key, .. } => (key, "delete", None),
        // Raw bytes always decode; a snapshot is told as a reset.
        WatchEvent::Invalid { .. } | WatchEvent::Snapshot { .. } => return None,
    };
    let (kind, app, name) = classify(keys, &key)?;
    may_see(caller, kind, app.as_deref()).then_some(Change {
        kind,
        action,
        app,
        name,
        value,
    })
}

/// What one revision changed, for one caller.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Revision {
    pub revision: i64,
    pub changes: Vec<Change>,
}

/// Sorts a watch's batch into revisions; a snapshot (the history asked for
/// was compacted) becomes `Err(revision)`.
fn revisions(
    keys: &Keys,
    caller: &Caller,
    batch: Vec<WatchEvent<Vec<u8>>>,
) -> Vec<Result<Revision, i64>> {
    let mut out: Vec<Result<Revision, i64>> = Vec::new();
    for event in batch {
        let revision = event.revision();
        if let WatchEvent::Snapshot { reason, .. } = &event {
            debug_assert_eq!(*reason, SnapshotReason::Compacted);
            out.push(Err(revision));
            continue;
        }
        let Some(change) = change_of(keys, caller, event) else {
            continue;
        };
        match out.last_mut() {
            Some(Ok(last)) if last.revision == revision => last.changes.push(change),
            _ => out.push(Ok(Revision {
                revision,
                changes: vec![change],
            })),
        }
    }
    out
}

/// The changes since a revision, as JSON.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Changes {
    /// The revision they reach: ask `?after=` it next.
    revision: i64,
    changes: Vec<Revision>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct After {
    /// The revision after which to tell changes (as `Last-Event-ID`).
    after: Option<i64>,
}

/// The changes `caller` may see after revision `last`, up to `now` (or as
/// many as one answer holds, or as etcd gives within `CATCH_UP`): the
/// revision they reach is the one to ask after next, so none is skipped.
async fn changes_since(
    store: &store::Store,
    keys: &Keys,
    caller: &Caller,
    last: i64,
    now: i64,
) -> Result<Changes, ApiError> {
    let mut changes = Vec::new();
    let mut reached = last;
    if last < now {
        let mut watch = store.watch_from(&keys.everything(), last + 1);
        let deadline = tokio::time::Instant::now() + CATCH_UP;
        while reached < now && changes.len() < MOST_CHANGES {
            let Ok(Some(batch)) = tokio::time::timeout_at(deadline, watch.next_batch()).await
            else {
                break;
            };
            let end = batch.last().map_or(reached, WatchEvent::revision);
            for revision in revisions(keys, caller, batch) {
                changes.push(revision.map_err(|_| {
                    ApiError::new(
                        axum::http::StatusCode::GONE,
                        "compacted",
                        format!("the history after revision {last} was compacted: read the state again, then ask after revision {now}"),
                    )
                })?);
            }
            reached = end;
        }
    }
    Ok(Changes {
        revision: reached,
        changes,
    })
}

/// Whether the token `caller` came with is still there, with the same rights.
async fn still_granted(tokens: &store::TokenCache, caller: &Caller) -> bool {
    tokens.all().await.iter().any(|token| {
        token.name == caller.name && token.role == caller.role && token.apps == caller.apps
    })
}

/// The changes `caller` may see after revision `after`, as etcd hands them
/// over (a batch of revisions at a time; a compacted history as
/// `Err(revision)`); it ends when the caller's token is revoked or changed.
pub fn changes(
    state: &ApiState,
    caller: Caller,
    after: i64,
) -> impl futures::Stream<Item = Vec<Result<Revision, i64>>> + Send + 'static {
    let store = state.context.store.clone();
    let keys = store.keys().clone();
    let watch = store.watch_from(&keys.everything(), after + 1);
    let tokens = state.tokens.clone();
    futures::stream::unfold(watch, move |mut watch| {
        let (keys, caller, tokens) = (keys.clone(), caller.clone(), tokens.clone());
        async move {
            loop {
                let batch = watch.next_batch().await?;
                // A token revoked (or changed) since the stream began is
                // told nothing more.
                if !still_granted(&tokens, &caller).await {
                    return None;
                }
                let told = revisions(&keys, &caller, batch);
                if !told.is_empty() {
                    return Some((told, watch));
                }
            }
        }
    })
}

/// The stream, or the JSON of the changes since `after`.
#[utoipa::path(
    get,
    path = "/events",
    tag = "events",
    summary = "Every change the caller may see: with Accept: text/event-stream live, one change event per etcd revision (the id; Last-Event-ID resumes, a reset event if that history is gone); else the changes since ?after= as JSON",
    params(After, ("Last-Event-ID" = Option<String>, Header, description = "the revision of the last event the client has")),
    responses((status = 200, content((Changes = "application/json"), (String = "text/event-stream"))))
)]
async fn events(
    State(state): State<Arc<ApiState>>,
    Authed(caller): Authed,
    Params(query): Params<After>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let store = state.context.store.clone();
    let now = store.revision().await?;
    let last = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|id| id.trim().parse::<i64>().ok())
        .or(query.after);
    if let Some(last) = last {
        if !(0..=now).contains(&last) {
            return Err(ApiError::invalid(format!(
                "revision {last} is not one this cluster has had (it is at {now})"
            )));
        }
    }
    let keys = store.keys().clone();
    if !crate::wants_events(&headers) {
        let since = changes_since(&store, &keys, &caller, last.unwrap_or(now), now).await?;
        return Ok(Json(since).into_response());
    }
    let revisions = changes(&state, caller, last.unwrap_or(now));
    let stream = futures::StreamExt::flat_map(revisions, |batch| {
        futures::stream::iter(batch.into_iter().map(|revision| {
            Ok::<Event, Infallible>(match revision {
                Ok(revision) => Event::default()
                    .id(revision.revision.to_string())
                    .event("change")
                    .data(serde_json::to_string(&revision).unwrap_or_default()),
                Err(revision) => Event::default()
                    .id(revision.to_string())
                    .event("reset")
                    .data(serde_json::json!({"revision": revision, "message": "changes were missed (etcd compacted its history): read the state again"}).to_string()),
            })
        }))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_told_by_kind_and_app() {
        let keys = Keys::new("/paz");
        let told = |key: &str| classify(&keys, key);
        assert_eq!(
            told("/paz/apps/web"),
            Some((Kind::App, Some("web".into()), "web".into()))
        );
        assert_eq!(
            told("/paz/apps/web/releases/3"),
            Some((Kind::Release, Some("web".into()), "3".into()))
        );
        assert_eq!(
            told("/paz/apps/web/current").map(|t| t.0),
            Some(Kind::Current)
        );
        assert_eq!(
            told("/paz/state/my-v2-app-v12-web-3.service"),
            Some((
                Kind::State,
                Some("my-v2-app".into()),
                "my-v2-app-v12-web-3.service".into()
            ))
        );
        assert_eq!(
            told("/paz/services/web/4/2"),
            Some((Kind::Route, Some("web".into()), "4/2".into()))
        );
        assert_eq!(
            told("/paz/machines/m1"),
            Some((Kind::Machine, None, "m1".into()))
        );
        assert_eq!(told("/paz/units/odd.service").map(|t| t.1), Some(None));
        for hidden in [
            "/paz/tokens/ci",
            "/paz/keys/SHA256:x",
            "/paz/config/domain",
            "/paz/leader/scheduler",
            "/paz/images/events/1",
            "/other/apps/web",
            "/paz/apps/web/releases/3/extra",
        ] {
            assert_eq!(told(hidden), None, "{hidden}");
        }
    }

    #[test]
    fn a_deployer_sees_only_its_apps() {
        let token = store::records::Token {
            name: "ci".into(),
            secret_sha256: String::new(),
            role: store::records::Role::Deployer,
            apps: vec![store::AppName::new("web").unwrap()],
            signing_sealed: None,
        };
        let deployer = Caller::from_token(&token);
        assert!(may_see(&deployer, Kind::Release, Some("web")));
        assert!(!may_see(&deployer, Kind::Release, Some("other")));
        assert!(!may_see(&deployer, Kind::Machine, None));
        assert!(!may_see(&deployer, Kind::Unit, None));
    }
}

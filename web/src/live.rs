//! What makes pages live: `GET /live?view=PATH&after=REV` follows the
//! changes the caller may see (the API's change stream) after the revision
//! the page was read at, and each time one alters what the view shows it
//! renders the view's live part again and sends it whole as a `live` event,
//! which htmx swaps in. `GET /live/log/APP/ID` sends a running build's log
//! lines as HTML as the builder writes them.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use maud::html;
use serde::Deserialize;

use crate::error::Failure;
use crate::pages::View;
use crate::session::Session;
use crate::WebState;

/// How long changes are gathered before the view is rendered again: a
/// rollout's burst of keys becomes one render.
const GATHER: Duration = Duration::from_millis(20);

#[derive(Debug, Deserialize)]
pub(crate) struct Follow {
    view: String,
    after: i64,
}

/// The stream of a view's live part.
pub(crate) async fn follow(
    State(state): State<Arc<WebState>>,
    session: Session,
    Query(follow): Query<Follow>,
) -> Result<Response, Failure> {
    let view = View::parse(&follow.view)
        .ok_or_else(|| Failure::not_found(format!("`{}` is no page", follow.view)))?;
    // What the caller may not see is refused here, not sent as errors.
    view.render(&state, &session).await?;
    let changes = api::changes(&state.api, session.caller.clone(), follow.after.max(0)).boxed();
    let stream = futures::stream::unfold(
        (changes, state, session, view),
        |(mut changes, state, session, view)| async move {
            loop {
                let mut batches = vec![changes.next().await?];
                // Whatever else arrives within GATHER is in the same render.
                let deadline = tokio::time::Instant::now() + GATHER;
                while let Ok(Some(more)) = tokio::time::timeout_at(deadline, changes.next()).await {
                    batches.push(more);
                }
                let Some(cared) = cared(&view, &batches) else {
                    continue;
                };
                let event = match next_event(&state, &session, &view, &cared).await {
                    Ok(event) => event,
                    Err(failure) => Event::default()
                        .event("live")
                        .data(html! { p.error role="alert" { (failure.told().1) } }.into_string()),
                };
                return Some((
                    Ok::<Event, Infallible>(event),
                    (changes, state, session, view),
                ));
            }
        },
    );
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The changes in `batches` that alter what `view` shows, and the newest
/// revision they reach: `None` if there are none; an empty list when a
/// compacted history may have hidden some (then the view is rendered again
/// whole).
fn cared<'a>(
    view: &View,
    batches: &'a [Vec<Result<api::Revision, i64>>],
) -> Option<(Vec<&'a api::Change>, i64)> {
    let mut cared = Vec::new();
    let mut newest = 0;
    for revision in batches.iter().flatten() {
        match revision {
            Ok(revision) => {
                let before = cared.len();
                cared.extend(revision.changes.iter().filter(|c| view.cares(c)));
                if cared.len() > before {
                    newest = newest.max(revision.revision);
                }
            }
            Err(revision) => return Some((Vec::new(), *revision)),
        }
    }
    (!cared.is_empty()).then_some((cared, newest))
}

/// What the page is sent for `changes` (up to revision `newest`): its
/// units swapped in place where the fleet page can (`patch`), else its
/// live part rendered again whole (`live`); no change listed means render
/// it all. The fleet's pages wait for the mirror to have the changes.
async fn next_event(
    state: &WebState,
    session: &Session,
    view: &View,
    (changes, newest): &(Vec<&api::Change>, i64),
) -> Result<Event, Failure> {
    if *view == View::Fleet && !changes.is_empty() {
        if let Some(items) = crate::pages::fleet::patch(state, changes, *newest).await? {
            return Ok(Event::default().event("patch").data(items.into_string()));
        }
    }
    if matches!(view, View::Fleet | View::Machine(_)) {
        state.mirror.at_least(*newest).await;
    }
    let page = view.render(state, session).await?;
    Ok(Event::default().event("live").data(page.live.into_string()))
}

#[derive(Debug, Deserialize)]
pub(crate) struct From {
    #[serde(default)]
    from: usize,
}

/// An app's log as HTML lines (`line` events, each escaped; `notice`
/// events for what is said of the machines): its newest 200 lines from
/// every machine, then each new one, for as long as the page is open.
pub(crate) async fn app_log(
    State(state): State<Arc<WebState>>,
    session: Session,
    Path(name): Path<String>,
) -> Result<Response, Failure> {
    let app = store::AppName::new(&name).map_err(|error| Failure::Invalid(error.to_string()))?;
    let words = [app.to_string(), "-n".into(), "200".into(), "-f".into()];
    let stream = verbs::logs::stream(&state.api.context, &session.caller, &words)
        .await
        .map_err(api::ApiError::from)?;
    let events = futures::stream::unfold(stream, |mut stream| async move {
        let event = match stream.events.recv().await? {
            verbs::logs::LogEvent::Line(line) => Event::default()
                .event("line")
                .data(html! { div { (line.to_string()) } }.into_string()),
            verbs::logs::LogEvent::Notice(notice) => Event::default()
                .event("notice")
                .data(html! { div.muted { "paz: " (notice) } }.into_string()),
        };
        Some((Ok::<Event, Infallible>(event), stream))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// A build's log as HTML lines (`line` events, each escaped), then its
/// status (`end`).
pub(crate) async fn build_log(
    State(state): State<Arc<WebState>>,
    session: Session,
    Path((name, id)): Path<(String, String)>,
    Query(from): Query<From>,
) -> Result<Response, Failure> {
    let app = store::AppName::new(&name).map_err(|error| Failure::Invalid(error.to_string()))?;
    let events = api::build_log_events(&state.api, &session.caller, &app, &id, from.from).await?;
    let events = events.map(|event| {
        Ok::<Event, Infallible>(match event {
            api::LogEvent::Line { number, text } => Event::default()
                .id(number.to_string())
                .event("line")
                .data(html! { div { (text) } }.into_string()),
            api::LogEvent::End { status, .. } => {
                let told = match status {
                    Some(status) => crate::layout::named(&status),
                    None => "ended".into(),
                };
                Event::default()
                    .event("end")
                    .data(html! { "build " (crate::layout::badge(&told)) }.into_string())
            }
        })
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

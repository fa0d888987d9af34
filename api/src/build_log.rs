//! `/apps/{app}/builds/{id}/log` live: with `Accept: text/event-stream`,
//! each line of a build's log as the builder writes it (its number is the
//! event id; `Last-Event-ID` resumes after it), then an `end` event when
//! the build has ended. The log is on the host that built it.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::path::PathBuf;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use store::records::{Build, BuildStatus};
use tokio::io::AsyncReadExt;

use crate::error::ApiError;

/// How often a log that has not ended is read again for new lines.
const TICK: Duration = Duration::from_millis(100);

/// How often a running build's log stream checks that its server still
/// builds it.
const ALIVE_CHECK: Duration = Duration::from_secs(5);

/// How long the builder may take to put an ended build's log in place.
const SETTLE: Duration = Duration::from_secs(10);

/// What a build's log stream tells.
#[derive(Debug, Clone, PartialEq)]
pub enum LogEvent {
    /// Line `number` (from 0) of the log.
    Line { number: usize, text: String },
    /// The build ended (`status` none when its record did not say), after
    /// `lines` lines.
    End {
        status: Option<BuildStatus>,
        lines: usize,
    },
}

/// The log of `build` (at `path`, `<id>.log` or `<id>.log.partial` while it
/// runs) as Server-Sent Events, from line `from`.
pub(crate) async fn stream(
    path: PathBuf,
    owner: (store::Store, store::AppName, String),
    from: usize,
) -> Result<Response, ApiError> {
    let events = log_events(path, owner, from).await?;
    let events = futures::StreamExt::map(events, |event| {
        Ok::<Event, Infallible>(match event {
            LogEvent::Line { number, text } => Event::default()
                .id(number.to_string())
                .event("line")
                .data(text),
            LogEvent::End { status, lines } => Event::default()
                .event("end")
                .data(json!({"status": status, "lines": lines}).to_string()),
        })
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// Where build `id` of `app` keeps its log, if `caller` may read it.
pub(crate) async fn log_of(
    state: &crate::ApiState,
    caller: &verbs::Caller,
    app: &store::AppName,
    id: &str,
) -> Result<(PathBuf, (store::Store, store::AppName, String)), ApiError> {
    caller.require_app(app)?;
    let store = &state.context.store;
    let key = store.keys().build(app, id)?;
    let build = store
        .get(&key)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("{app} has no build {id}: see builds {app}")))?;
    let path = state.context.data_dir.join(&build.value.log_path);
    Ok((path, (store.clone(), app.clone(), id.to_string())))
}

/// The log of build `id` of `app` as it is written, from line `from`, then
/// its end, if `caller` may read it (what the web UI shows live).
pub async fn build_log_events(
    state: &crate::ApiState,
    caller: &verbs::Caller,
    app: &store::AppName,
    id: &str,
    from: usize,
) -> Result<impl futures::Stream<Item = LogEvent> + Send + 'static, ApiError> {
    let (path, owner) = log_of(state, caller, app, id).await?;
    log_events(path, owner, from).await
}

/// The log of `build` (at `path`) as it is written, from line `from`,
/// then its end.
async fn log_events(
    path: PathBuf,
    (store, app, id): (store::Store, store::AppName, String),
    from: usize,
) -> Result<impl futures::Stream<Item = LogEvent> + Send + 'static, ApiError> {
    let key = store.keys().build(&app, &id)?;
    let build = store.watch_key(&key);
    let partial = path.with_extension("log.partial");
    let file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(_) => tokio::fs::File::open(&partial).await.map_err(|_| {
            ApiError::not_found(format!(
                "the log of this build is not on this host ({})",
                path.display()
            ))
        })?,
    };
    let tail = Tail {
        file,
        path,
        build,
        line: 0,
        from,
        pending: Vec::new(),
        queue: VecDeque::new(),
        ended: None,
        done: false,
        owner: (store, app, id),
        checked: tokio::time::Instant::now(),
    };
    Ok(futures::stream::unfold(tail, |mut tail| async move {
        loop {
            if let Some(event) = tail.queue.pop_front() {
                return Some((event, tail));
            }
            if tail.done {
                return None;
            }
            tail.advance().await;
        }
    }))
}

/// Where a stream of a build's log is.
struct Tail {
    file: tokio::fs::File,
    /// The log's final place: once it is there, the builder wrote it all.
    path: PathBuf,
    build: store::Watch<Build>,
    /// The number of the next whole line.
    line: usize,
    /// The first line to send.
    from: usize,
    /// The bytes after the last newline read (a line, or a character, cut
    /// by a read).
    pending: Vec<u8>,
    queue: VecDeque<LogEvent>,
    /// How the build ended, once it did (and when that was seen).
    ended: Option<(BuildStatus, tokio::time::Instant)>,
    done: bool,
    /// Where the build's record is, to end it if its server stopped.
    owner: (store::Store, store::AppName, String),
    /// When that was last looked at.
    checked: tokio::time::Instant,
}

impl Tail {
    /// Reads what was written since, and queues its whole lines; else waits
    /// for more, or ends when the build has and its log is all there.
    async fn advance(&mut self) {
        let mut buffer = [0; 16 * 1024];
        let read = self.file.read(&mut buffer).await.unwrap_or(0);
        if read > 0 {
            self.pending.extend_from_slice(&buffer[..read]);
            while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                self.queue_line(String::from_utf8_lossy(&line[..end]).into_owned());
            }
            return;
        }
        // The log in its final place is the builder's last step: all of it
        // is written. Its end was recorded just before; if the watch has not
        // said so yet, it is on its way.
        let complete = self.path.exists();
        if complete && self.ended.is_none() {
            let status = tokio::time::timeout(Duration::from_secs(2), self.next_end()).await;
            self.end(status.ok().flatten()).await;
            return;
        }
        if let Some((status, seen)) = self.ended {
            if complete || seen.elapsed() > SETTLE {
                self.end(Some(status)).await;
                return;
            }
            tokio::time::sleep(TICK).await;
            return;
        }
        tokio::select! {
            event = self.build.next_event() => match event.and_then(store::WatchEvent::into_latest) {
                Some(build) if build.status == BuildStatus::Running => {}
                Some(build) => self.ended = Some((build.status, tokio::time::Instant::now())),
                None => self.ended = Some((BuildStatus::Failed, tokio::time::Instant::now())),
            },
            () = tokio::time::sleep(TICK) => {
                if self.checked.elapsed() > ALIVE_CHECK {
                    self.checked = tokio::time::Instant::now();
                    self.settle().await;
                }
            }
        }
    }

    /// Ends the build's record if the server that ran it stopped; the
    /// watch then tells it.
    async fn settle(&self) {
        let (store, app, id) = &self.owner;
        let Ok(key) = store.keys().build(app, id) else {
            return;
        };
        if let Ok(Some(read)) = store.get(&key).await {
            if let Err(error) = store
                .settled_build(app, id, read, verbs::Clock::System.now())
                .await
            {
                tracing::debug!(%key, %error, "cannot settle a quiet build");
            }
        }
    }

    /// How the build ended, from its record's next changes.
    async fn next_end(&mut self) -> Option<BuildStatus> {
        loop {
            let build = self.build.next_event().await?.into_latest()?;
            if build.status != BuildStatus::Running {
                return Some(build.status);
            }
        }
    }

    /// Queues the rest of the log and the `end` event (`status` null when
    /// the record did not say).
    async fn end(&mut self, status: Option<BuildStatus>) {
        // What was written before the rename.
        let mut rest = Vec::new();
        let _ = self.file.read_to_end(&mut rest).await;
        self.pending.extend_from_slice(&rest);
        let pending = std::mem::take(&mut self.pending);
        for line in String::from_utf8_lossy(&pending).lines() {
            self.queue_line(line.to_string());
        }
        self.queue.push_back(LogEvent::End {
            status,
            lines: self.line,
        });
        self.done = true;
    }

    fn queue_line(&mut self, text: String) {
        let number = self.line;
        self.line += 1;
        if number >= self.from {
            self.queue.push_back(LogEvent::Line { number, text });
        }
    }
}

//! The instances' logs on this host: every container of this machine has a
//! task that copies its output, with Docker's timestamps, into its app's
//! files ([`files::AppLog`]), and the agent adds its own lines (started,
//! stopped, crashed, OOM-killed, health check failed). The files outlive
//! the containers, the deploys and the agent; a restarted agent goes on
//! from the last line each container's files hold.

pub(crate) mod files;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptionsBuilder;
use engine::Docker;
use futures::{FutureExt, StreamExt};
use telemetry::{Line, Source};
use tokio::sync::watch;
use tracing::warn;

use self::files::{AppLog, Cursor};

/// How long a stop or a restart waits for a container's last lines.
const DRAIN: Duration = Duration::from_secs(10);

/// The logs of this machine's instances; cheap to clone.
#[derive(Clone)]
pub(crate) struct Logs(Arc<Inner>);

impl std::fmt::Debug for Logs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logs").field("root", &self.0.root).finish()
    }
}

struct Inner {
    /// `<data-dir>/logs`.
    root: PathBuf,
    /// Bytes each app may keep on this host.
    cap: u64,
    docker: Docker,
    apps: Mutex<HashMap<String, Arc<Mutex<AppLog>>>>,
    /// Each container's copying task: true once it copied the last line.
    copying: Mutex<HashMap<String, watch::Receiver<bool>>>,
}

/// What a unit name says of the instance it runs.
#[derive(Debug, Clone)]
pub(crate) struct Instance {
    pub(crate) app: String,
    pub(crate) release: u64,
    /// `web.1`.
    pub(crate) name: String,
}

impl Instance {
    /// The instance a unit runs, if it is one Paz made: a one-off is
    /// `run.<id>`.
    pub(crate) fn of_unit(unit: &str) -> Option<Instance> {
        if let Some(run) = units::parse_run_name(unit) {
            return Some(Instance {
                app: run.app.to_string(),
                release: run.release,
                name: format!("run.{}", run.id),
            });
        }
        let name = units::parse_instance_name(unit).filter(|name| !name.sidekick)?;
        Some(Instance {
            app: name.app.to_string(),
            release: name.release,
            name: format!("{}.{}", name.process, name.index),
        })
    }
}

fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// A container id as lines carry it.
fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

impl Logs {
    pub(crate) fn new(root: PathBuf, cap: u64, docker: Docker) -> Logs {
        Logs(Arc::new(Inner {
            root,
            cap,
            docker,
            apps: Mutex::default(),
            copying: Mutex::default(),
        }))
    }

    /// The log of `app` on this host, opened once.
    pub(crate) fn app(&self, app: &str) -> std::io::Result<Arc<Mutex<AppLog>>> {
        let mut apps = self.0.apps.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(log) = apps.get(app) {
            return Ok(log.clone());
        }
        let log = Arc::new(Mutex::new(AppLog::open(self.0.root.join(app), self.0.cap)?));
        apps.insert(app.to_string(), log.clone());
        Ok(log)
    }

    /// The apps with a log on this host.
    pub(crate) fn apps(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.0.root) else {
            return Vec::new();
        };
        entries
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .collect()
    }

    /// Writes one of the agent's own lines about `unit`'s instance:
    /// `web.1 <message>`.
    pub(crate) fn note(&self, unit: &str, message: impl std::fmt::Display) {
        let Some(instance) = Instance::of_unit(unit) else {
            return;
        };
        let line = Line {
            t: now_nanos(),
            instance: instance.name.clone(),
            release: instance.release,
            source: Source::Agent,
            container: String::new(),
            message: format!("{} {message}", instance.name),
        };
        let written = self.app(&instance.app).and_then(|log| {
            log.lock()
                .unwrap_or_else(|e| e.into_inner())
                .append(vec![line])
        });
        if let Err(error) = written {
            warn!(%unit, %error, "cannot write to the app's log");
        }
    }

    /// Copies container `id`'s output (of `unit`) unless a task does already
    /// or did to its end.
    pub(crate) fn copy(&self, id: &str, unit: &str) {
        let Some(instance) = Instance::of_unit(unit) else {
            return;
        };
        let mut copying = self.0.copying.lock().unwrap_or_else(|e| e.into_inner());
        if copying.contains_key(id) {
            return;
        }
        let (done, copied) = watch::channel(false);
        copying.insert(id.to_string(), copied);
        let (logs, id) = (self.clone(), id.to_string());
        tokio::spawn(async move {
            logs.copy_all(&id, &instance).await;
            let _ = done.send(true);
        });
    }

    /// Forgets the copying of containers that are gone.
    pub(crate) fn retain(&self, present: impl Fn(&str) -> bool) {
        let mut copying = self.0.copying.lock().unwrap_or_else(|e| e.into_inner());
        copying.retain(|id, copied| present(id) || !*copied.borrow());
    }

    /// Waits (a while) until container `id`, stopped, has had its last line
    /// copied: before it is removed.
    pub(crate) async fn drained(&self, id: &str, unit: &str) {
        self.copy(id, unit);
        let copied = self
            .0
            .copying
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned();
        if let Some(mut copied) = copied {
            if tokio::time::timeout(DRAIN, copied.wait_for(|done| *done))
                .await
                .is_err()
            {
                warn!(%unit, container = %id, "its last lines are still being copied: removing it anyway");
            }
        }
    }

    /// Copies `id`'s lines after the last one its app's files hold, until
    /// the container stops (or is gone).
    async fn copy_all(&self, id: &str, instance: &Instance) {
        let log = match self.app(&instance.app) {
            Ok(log) => log,
            Err(error) => {
                warn!(app = %instance.app, %error, "cannot open the app's log: its lines are not kept");
                return;
            }
        };
        let container = short(id).to_string();
        loop {
            let cursor = match log
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .cursor(&container)
            {
                Ok(cursor) => cursor,
                Err(error) => {
                    warn!(app = %instance.app, %error, "cannot read the app's log");
                    return;
                }
            };
            self.copy_from(id, instance, &container, cursor, &log).await;
            // A stream ends when the container stops, or when the engine
            // dropped it: then it goes on from where the files say.
            let running = match self.0.docker.inspect_container(id, None).await {
                Ok(inspected) => inspected
                    .state
                    .and_then(|state| state.running)
                    .unwrap_or(false),
                Err(_) => false,
            };
            if !running {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn copy_from(
        &self,
        id: &str,
        instance: &Instance,
        container: &str,
        cursor: Option<Cursor>,
        log: &Mutex<AppLog>,
    ) {
        let since = cursor.map_or(0, |c| (c.t / 1_000_000_000) as i32);
        let options = LogsOptionsBuilder::new()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .timestamps(true)
            .since(since)
            .build();
        let mut stream = self.0.docker.logs(id, Some(options));
        let mut skip = Skip::new(cursor);
        while let Some(first) = stream.next().await {
            let mut batch = Vec::new();
            let mut next = Some(first);
            // What is ready now is written together.
            while let Some(item) = next {
                match item {
                    Ok(output) => {
                        if let Some(line) = to_line(output, instance, container) {
                            if skip.passes(line.t) {
                                batch.push(line);
                            }
                        }
                    }
                    Err(error) => {
                        warn!(container = %id, error = %engine::describe(error), "the log stream broke");
                        break;
                    }
                }
                if batch.len() >= 4096 {
                    break;
                }
                next = stream.next().now_or_never().flatten();
            }
            if !batch.is_empty() {
                let written = log.lock().unwrap_or_else(|e| e.into_inner()).append(batch);
                if let Err(error) = written {
                    warn!(app = %instance.app, %error, "cannot write to the app's log");
                }
            }
        }
    }
}

/// Which lines of a stream that starts at the cursor's second were copied
/// already.
struct Skip {
    cursor: Option<Cursor>,
    seen_at_cursor: u32,
}

impl Skip {
    fn new(cursor: Option<Cursor>) -> Skip {
        Skip {
            cursor,
            seen_at_cursor: 0,
        }
    }

    /// Whether a line of time `t` is new.
    fn passes(&mut self, t: i64) -> bool {
        let Some(cursor) = self.cursor else {
            return true;
        };
        if t < cursor.t {
            return false;
        }
        if t == cursor.t && self.seen_at_cursor < cursor.same {
            self.seen_at_cursor += 1;
            return false;
        }
        self.cursor = None;
        true
    }
}

/// A frame of Docker's log stream as a line: `<RFC 3339 nanos> <text>`.
fn to_line(output: LogOutput, instance: &Instance, container: &str) -> Option<Line> {
    let (source, bytes) = match output {
        LogOutput::StdErr { message } => (Source::Err, message),
        LogOutput::StdOut { message } | LogOutput::Console { message } => (Source::Out, message),
        LogOutput::StdIn { .. } => return None,
    };
    let text = String::from_utf8_lossy(&bytes);
    let (time, message) = text.split_once(' ').unwrap_or((&text, ""));
    let t = humantime::parse_rfc3339(time.trim())
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_nanos() as i64;
    Some(Line {
        t,
        instance: instance.name.clone(),
        release: instance.release,
        source,
        container: container.to_string(),
        message: message.trim_end_matches(['\n', '\r']).to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_stream_skips_exactly_what_was_copied() {
        let mut skip = Skip::new(Some(Cursor { t: 10, same: 2 }));
        let passed: Vec<bool> = [9, 10, 10, 10, 11, 10]
            .iter()
            .map(|&t| skip.passes(t))
            .collect();
        // Before the cursor: copied; the two at its time: copied; then new.
        assert_eq!(passed, [false, false, false, true, true, true]);
        let mut fresh = Skip::new(None);
        assert!(fresh.passes(0));
    }

    #[test]
    fn docker_frames_become_lines_with_their_nanoseconds() {
        let instance = Instance::of_unit("my-app-v7-web-2.service").unwrap();
        assert_eq!(
            (
                instance.app.as_str(),
                instance.release,
                instance.name.as_str()
            ),
            ("my-app", 7, "web.2")
        );
        assert!(Instance::of_unit("my-app-v7-web-2-announce.service").is_none());
        let frame = LogOutput::StdErr {
            message: "2026-12-01T10:00:00.123456789Z boom\n".into(),
        };
        let line = to_line(frame, &instance, "c0ffee").unwrap();
        assert_eq!(line.t, 1_796_119_200_123_456_789);
        assert_eq!(line.source, Source::Err);
        assert_eq!(line.message, "boom");
        assert_eq!(line.instance, "web.2");
    }
}

//! The access log: one line per request, Heroku-router style
//! (`time app= status= method= path= duration_ms= backend= request_id=`).
//!
//! Lines are appended to a buffer of the worker thread's own (no lock is
//! shared between threads on the request path) and a thread of the log's
//! own writes each buffer out when it fills or every 200 ms, so a request
//! costs one formatted line and no system call. If the destination cannot
//! keep up, whole buffers are dropped (and counted) rather than slowing
//! requests.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Where access log lines go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AccessLog {
    /// No access log.
    Off,
    /// The process's standard output.
    #[default]
    Stdout,
    /// Appended to this file (created if missing).
    File(PathBuf),
}

impl std::str::FromStr for AccessLog {
    type Err = std::convert::Infallible;

    /// `off`, `-` (standard output) or a file path.
    fn from_str(text: &str) -> Result<AccessLog, Self::Err> {
        Ok(match text {
            "off" => AccessLog::Off,
            "-" => AccessLog::Stdout,
            path => AccessLog::File(PathBuf::from(path)),
        })
    }
}

/// A buffer is handed to the writer thread once it holds this much.
const FLUSH_BYTES: usize = 32 * 1024;
/// Buffers waiting for the writer thread before new ones are dropped.
const QUEUE: usize = 64;

/// One request, as logged.
pub(crate) struct Entry<'a> {
    pub(crate) app: &'a str,
    pub(crate) status: u16,
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
    pub(crate) duration: Duration,
    pub(crate) backend: &'a str,
    pub(crate) request_id: &'a str,
}

/// One worker thread's lines not yet handed to the writer thread; only the
/// writer thread's 200 ms tick locks it from elsewhere.
type Buffer = Arc<Mutex<String>>;

/// Every buffer of a log, one per thread that logged to it.
type Buffers = Arc<Mutex<Vec<Buffer>>>;

/// Tells logs apart in [`LOCAL`] (tests run several proxies in a process).
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's buffer of each log it wrote to, by the log's id.
    static LOCAL: RefCell<Vec<(u64, Buffer)>> = const { RefCell::new(Vec::new()) };
}

/// The request path's side of the log.
#[derive(Debug)]
pub(crate) struct Writer {
    id: u64,
    buffers: Buffers,
    sender: SyncSender<String>,
    dropped: Arc<AtomicU64>,
}

impl Writer {
    /// Starts the writer thread; `None` when the log is off.
    pub(crate) fn start(destination: &AccessLog) -> std::io::Result<Option<Writer>> {
        let out: Box<dyn std::io::Write + Send> = match destination {
            AccessLog::Off => return Ok(None),
            AccessLog::Stdout => Box::new(std::io::stdout()),
            AccessLog::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|error| {
                        std::io::Error::new(
                            error.kind(),
                            format!("cannot open the access log {}: {error}", path.display()),
                        )
                    })?,
            ),
        };
        let buffers = Buffers::default();
        let dropped = Arc::new(AtomicU64::new(0));
        let (sender, receiver) = sync_channel(QUEUE);
        let shared = buffers.clone();
        std::thread::Builder::new()
            .name("paz-access-log".into())
            .spawn(move || write_out(out, receiver, shared))?;
        Ok(Some(Writer {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            buffers,
            sender,
            dropped,
        }))
    }

    /// This thread's buffer for this log, made and registered on first use.
    fn local(&self) -> Buffer {
        LOCAL.with(|local| {
            let mut local = local.borrow_mut();
            if let Some((_, buffer)) = local.iter().find(|(id, _)| *id == self.id) {
                return buffer.clone();
            }
            let buffer = Buffer::new(Mutex::new(String::with_capacity(FLUSH_BYTES * 2)));
            self.buffers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(buffer.clone());
            local.push((self.id, buffer.clone()));
            buffer
        })
    }

    /// Adds one line.
    pub(crate) fn log(&self, entry: &Entry<'_>) {
        let local = self.local();
        let full = {
            let mut buffer = local.lock().unwrap_or_else(|p| p.into_inner());
            write_line(&mut buffer, entry, SystemTime::now());
            (buffer.len() >= FLUSH_BYTES)
                .then(|| std::mem::replace(&mut *buffer, String::with_capacity(FLUSH_BYTES * 2)))
        };
        if let Some(full) = full {
            let lines = full.lines().count() as u64;
            if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
                self.sender.try_send(full)
            {
                let before = self.dropped.fetch_add(lines, Ordering::Relaxed);
                if before == 0 {
                    tracing::warn!("the access log cannot keep up; dropping lines");
                }
            }
        }
    }
}

/// Appends `entry`'s line, as of `now`, to `buffer`.
fn write_line(buffer: &mut String, entry: &Entry<'_>, now: SystemTime) {
    let micros = entry.duration.as_micros();
    let _ = writeln!(
        buffer,
        "{} app={} status={} method={} path=\"{}\" duration_ms={}.{:03} backend={} request_id={}",
        humantime::format_rfc3339_millis(now),
        entry.app,
        entry.status,
        entry.method,
        entry.path.escape_debug(),
        micros / 1000,
        micros % 1000,
        entry.backend,
        entry.request_id,
    );
}

/// What every thread has buffered, taken from its buffer.
fn take_all(buffers: &Buffers) -> String {
    let mut all = String::new();
    for buffer in buffers.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        let mut buffer = buffer.lock().unwrap_or_else(|p| p.into_inner());
        if all.is_empty() {
            all = std::mem::take(&mut *buffer);
        } else {
            all.push_str(&buffer);
            buffer.clear();
        }
    }
    all
}

/// The writer thread: writes each full buffer, and every 200 ms whatever
/// the threads have buffered since.
fn write_out(
    mut out: Box<dyn std::io::Write + Send>,
    receiver: Receiver<String>,
    buffers: Buffers,
) {
    const TICK: Duration = Duration::from_millis(200);
    let mut ticked = std::time::Instant::now();
    loop {
        // Every TICK the quiet threads' lines go out too, however often a
        // busy thread hands over full buffers.
        let wait = TICK.saturating_sub(ticked.elapsed());
        let mut text = match receiver.recv_timeout(wait) {
            Ok(text) => text,
            Err(RecvTimeoutError::Timeout) => String::new(),
            // The proxy is gone: write what is left and stop.
            Err(RecvTimeoutError::Disconnected) => {
                let rest = take_all(&buffers);
                let _ = out.write_all(rest.as_bytes()).and_then(|()| out.flush());
                return;
            }
        };
        if ticked.elapsed() >= TICK {
            text.push_str(&take_all(&buffers));
            ticked = std::time::Instant::now();
        }
        if text.is_empty() {
            continue;
        }
        if let Err(error) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            tracing::warn!(%error, "cannot write the access log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_has_every_field_and_a_path_cannot_forge_one() {
        let entry = Entry {
            app: "demo",
            status: 200,
            method: "GET",
            path: "/a \"b\" status=500\n",
            duration: Duration::from_micros(12_345),
            backend: "10.0.0.7:32768",
            request_id: "req-1",
        };
        let mut buffer = String::new();
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_119_200_123);
        write_line(&mut buffer, &entry, at);
        assert_eq!(
            buffer,
            "2026-12-01T10:00:00.123Z app=demo status=200 method=GET path=\"/a \\\"b\\\" status=500\\n\" duration_ms=12.345 backend=10.0.0.7:32768 request_id=req-1\n"
        );
    }

    #[test]
    fn lines_from_several_threads_all_reach_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let writer = Arc::new(
            Writer::start(&AccessLog::File(path.clone()))
                .unwrap()
                .unwrap(),
        );
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        let path = format!("/{t}/{i}");
                        writer.log(&Entry {
                            app: "demo",
                            status: 200,
                            method: "GET",
                            path: &path,
                            duration: Duration::from_micros(1),
                            backend: "-",
                            request_id: "-",
                        });
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        // Dropping the log hands what is buffered to its thread, which
        // writes it out; the 200 ms tick writes it too.
        drop(writer);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.lines().count() == 2000 || std::time::Instant::now() > deadline {
                let mut paths: Vec<&str> = text
                    .lines()
                    .filter_map(|line| line.split("path=\"").nth(1)?.split('"').next())
                    .collect();
                paths.sort_unstable();
                paths.dedup();
                assert_eq!(paths.len(), 2000, "every line, once");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn a_destination_is_off_standard_output_or_a_file() {
        assert_eq!("off".parse::<AccessLog>().unwrap(), AccessLog::Off);
        assert_eq!("-".parse::<AccessLog>().unwrap(), AccessLog::Stdout);
        assert_eq!(
            "/var/log/paz/access.log".parse::<AccessLog>().unwrap(),
            AccessLog::File(PathBuf::from("/var/log/paz/access.log"))
        );
    }
}

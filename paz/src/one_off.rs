//! `paz run APP COMMAND...`: a one-off container attached over the API
//! (`POST /apps/APP/runs`, upgraded to `paz-attach`): stdin in, stdout and
//! stderr out apart, the command's exit code as `paz`'s. On a terminal it
//! gets a TTY: the terminal goes raw while it runs and its size follows
//! the window.

use std::io::{IsTerminal, Write};

use anyhow::{bail, Context};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use telemetry::attach::{Frame, FrameCodec, ATTACH_PROTOCOL};

use crate::client::Credentials;

/// The terminal's settings before it went raw, put back when dropped.
struct RawTerminal(rustix::termios::Termios);

impl RawTerminal {
    fn enter() -> anyhow::Result<RawTerminal> {
        let stdin = std::io::stdin();
        let saved =
            rustix::termios::tcgetattr(&stdin).context("cannot read the terminal's settings")?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw)
            .context("cannot put the terminal in raw mode")?;
        Ok(RawTerminal(saved))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let stdin = std::io::stdin();
        let _ = rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &self.0);
    }
}

/// The terminal's columns and rows.
fn window() -> Option<(u16, u16)> {
    let size = rustix::termios::tcgetwinsize(std::io::stdout()).ok()?;
    (size.ws_col > 0 && size.ws_row > 0).then_some((size.ws_col, size.ws_row))
}

/// Runs `args` (APP COMMAND...) attached; returns its exit code.
pub(crate) async fn run(credentials: &Credentials, args: &[String]) -> anyhow::Result<i32> {
    let Some((app, command)) = args.split_first() else {
        bail!("usage: paz run [-a APP] COMMAND... (in a checkout whose paz remote names the app, or with -a)");
    };
    let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let size = if tty { window() } else { None };
    let mut body = json!({ "command": command });
    if tty {
        let (cols, rows) = size.unwrap_or((80, 24));
        body["tty"] = json!({ "cols": cols, "rows": rows });
    }
    let url = format!("{}/api/v1/apps/{app}/runs", credentials.url);
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(&credentials.token)
        .header(reqwest::header::CONNECTION, "Upgrade")
        .header(reqwest::header::UPGRADE, ATTACH_PROTOCOL)
        .json(&body)
        .send()
        .await
        .with_context(|| {
            format!(
                "cannot reach the API at {}: is paz up running, and is the URL right?",
                credentials.url
            )
        })?;
    if response.status() != reqwest::StatusCode::SWITCHING_PROTOCOLS {
        let answer: Value = response.json().await.unwrap_or_default();
        bail!(
            "{}",
            answer["message"]
                .as_str()
                .unwrap_or("the API refused the run")
        );
    }
    let upgraded = response
        .upgrade()
        .await
        .context("the API's answer to the run broke off")?;
    let frames = tokio_util::codec::Framed::new(upgraded, FrameCodec);
    let _raw = if tty {
        Some(RawTerminal::enter()?)
    } else {
        None
    };
    // Stdin read on a thread of its own (a blocked read never holds up the
    // output); `None` is its end.
    let (input_sender, mut input) = tokio::sync::mpsc::channel::<Option<bytes::Bytes>>(4);
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buffer = vec![0u8; 16 * 1024];
        let mut stdin = std::io::stdin().lock();
        loop {
            let read = match stdin.read(&mut buffer) {
                Ok(0) | Err(_) => None,
                Ok(n) => Some(bytes::Bytes::copy_from_slice(&buffer[..n])),
            };
            let end = read.is_none();
            if input_sender.blocking_send(read).is_err() || end {
                break;
            }
        }
    });
    let mut window_changes =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
            .context("cannot watch the terminal's size")?;
    let (mut sink, mut stream) = frames.split();
    // Each way on its own: output is read while input waits to be taken.
    let up = async {
        let mut stdin_open = true;
        loop {
            let frame = tokio::select! {
                read = input.recv(), if stdin_open => match read.flatten() {
                    Some(data) => Frame::Stdin(data),
                    None => {
                        stdin_open = false;
                        Frame::StdinEnd
                    }
                },
                _ = window_changes.recv(), if tty => match window() {
                    Some((cols, rows)) => Frame::Resize { cols, rows },
                    None => continue,
                },
                // Stdin ended and no terminal to watch: nothing more goes up.
                else => return std::future::pending::<anyhow::Result<i32>>().await,
            };
            if sink.send(frame).await.is_err() {
                // The output side says how it ended.
                return std::future::pending::<anyhow::Result<i32>>().await;
            }
        }
    };
    let down = async {
        loop {
            match stream.next().await {
                Some(Ok(Frame::Stdout(data))) => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(&data)?;
                    out.flush()?;
                }
                Some(Ok(Frame::Stderr(data))) => {
                    let mut err = std::io::stderr().lock();
                    err.write_all(&data)?;
                    err.flush()?;
                }
                Some(Ok(Frame::Exit(code))) => return Ok(u8::try_from(code).map_or(255, i32::from)),
                Some(Ok(Frame::Failed(reason))) => bail!("{reason}"),
                Some(Ok(_)) | Some(Err(_)) | None => {
                    bail!("the connection to the one-off broke off")
                }
            }
        }
    };
    tokio::select! {
        ended = up => ended,
        ended = down => ended,
    }
}

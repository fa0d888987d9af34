//! `GET /v1/runs/UNIT/attach` (upgraded to `paz-attach`): the server
//! attaches its caller to an attached one-off (`run`) placed on this
//! machine. The agent's reconcile made the container, not started; this
//! attaches to it, starts it, and carries [`Frame`]s between the
//! connection and the container until it exits (its code is the last
//! frame). A caller that goes away kills it.

use std::time::Duration;

use bollard::container::LogOutput;
use bollard::query_parameters::{
    AttachContainerOptions, KillContainerOptionsBuilder, ResizeContainerTTYOptions,
};
use bollard::Docker;
use futures::{SinkExt, StreamExt};
use store::Store;
use telemetry::attach::{Frame, FrameCodec};
use tokio::io::AsyncWriteExt;
use tokio_util::codec::Framed;
use tracing::{info, warn};

use crate::docker::MACHINE_LABEL;

/// How long an attach waits for the agent's reconcile to make the
/// container (it may pull the image first).
const MADE_WAIT: Duration = Duration::from_secs(120);

/// The caller's terminal when it attaches (`?cols=&rows=`), so that the
/// TTY has its size from the start.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize)]
pub(crate) struct TermSize {
    cols: Option<u16>,
    rows: Option<u16>,
}

/// What an attach needs of the agent.
#[derive(Clone)]
pub(crate) struct Runs {
    pub(crate) docker: Docker,
    pub(crate) store: Store,
    pub(crate) machine: String,
    /// The one-offs attached to since this agent started: each once.
    pub(crate) attached: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

impl Runs {
    /// The container spec of `unit` if it is an attached one-off placed
    /// here; else why not, as the caller is told.
    pub(crate) async fn attachable(&self, unit: &str) -> Result<units::ContainerSpec, String> {
        if units::parse_run_name(unit).is_none() {
            return Err(format!("{unit} is not a one-off's unit"));
        }
        let keys = self.store.keys();
        let key = keys.schedule(unit).map_err(|error| error.to_string())?;
        let placed = self.store.get(&key).await.map_err(|e| e.to_string())?;
        if placed.map(|v| v.value).as_deref() != Some(self.machine.as_str()) {
            return Err(format!("{unit} is not placed on this machine"));
        }
        let key = keys.unit(unit).map_err(|error| error.to_string())?;
        let text = self
            .store
            .get(&key)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{unit} is not submitted"))?
            .value;
        let spec = match units::parse_unit(unit, &text).map(|unit| unit.exec) {
            Ok(units::Exec::Container(spec)) if spec.interactive => spec,
            Ok(_) => return Err(format!("{unit} is not an attached one-off")),
            Err(error) => return Err(format!("{unit} is invalid: {error}")),
        };
        // One caller per one-off: a second attach never shares its terminal.
        let first = self
            .attached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(unit.to_string());
        if !first {
            return Err(format!("{unit} has been attached to already"));
        }
        Ok(spec)
    }

    /// Waits for the container of `spec` (of `unit`) to be made, not
    /// started; a state that says it failed ends the wait with its reason.
    async fn made(&self, unit: &str, spec: &units::ContainerSpec) -> Result<String, String> {
        let deadline = tokio::time::Instant::now() + MADE_WAIT;
        let state_key = self
            .store
            .keys()
            .unit_state(unit)
            .map_err(|e| e.to_string())?;
        loop {
            if let Ok(Some(state)) = self.store.get(&state_key).await {
                if state.value.active == store::records::ActiveState::Failed {
                    let reason = state.value.reason.unwrap_or_default();
                    return Err(format!("it could not start: {reason}"));
                }
            }
            if let Ok(inspected) = self.docker.inspect_container(&spec.name, None).await {
                let ours = inspected
                    .config
                    .and_then(|config| config.labels)
                    .and_then(|labels| labels.get(MACHINE_LABEL).cloned())
                    == Some(self.machine.clone());
                let status = inspected.state.and_then(|state| state.status);
                let created = status == Some(bollard::models::ContainerStateStatusEnum::CREATED);
                match (ours, created, inspected.id) {
                    (true, true, Some(id)) => return Ok(id),
                    (true, false, _) => {
                        return Err("this one-off has run already: start another".into())
                    }
                    _ => {}
                }
            }
            if tokio::time::Instant::now() > deadline {
                return Err("its container was not made in time: see its state in run:list".into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Runs the attached one-off `spec` over `connection` until it exits
    /// or the caller goes away.
    pub(crate) async fn serve<T>(
        &self,
        unit: &str,
        spec: units::ContainerSpec,
        size: TermSize,
        connection: T,
    ) where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
    {
        let mut frames = Framed::new(connection, FrameCodec);
        let id = match self.made(unit, &spec).await {
            Ok(id) => id,
            Err(reason) => return self.not_started(unit, &mut frames, reason).await,
        };
        let options = AttachContainerOptions {
            stdin: true,
            stdout: true,
            stderr: true,
            stream: true,
            ..Default::default()
        };
        let attached = match self.docker.attach_container(&id, Some(options)).await {
            Ok(attached) => attached,
            Err(error) => {
                let reason = format!("cannot attach: {}", engine::describe(error));
                return self.not_started(unit, &mut frames, reason).await;
            }
        };
        if let Err(error) = self.docker.start_container(&id, None).await {
            let reason = format!("cannot start: {}", engine::describe(error));
            return self.not_started(unit, &mut frames, reason).await;
        }
        if let (Some(cols), Some(rows), true) = (size.cols, size.rows, spec.tty) {
            let size = ResizeContainerTTYOptions {
                w: cols.into(),
                h: rows.into(),
            };
            let _ = self.docker.resize_container_tty(&id, size).await;
        }
        info!(%unit, container = %id, "one-off attached and started");
        // Each way on its own: a command that does not read its input
        // never holds up its output (nor the other way round).
        let (mut sink, mut stream) = frames.split();
        let (mut output, mut input) = (attached.output, Some(attached.input));
        let ended = {
            let from_caller = async {
                while let Some(Ok(frame)) = stream.next().await {
                    match frame {
                        Frame::Stdin(data) => {
                            if let Some(writer) = input.as_mut() {
                                if writer.write_all(&data).await.is_err() {
                                    input = None;
                                }
                            }
                        }
                        Frame::StdinEnd => {
                            if let Some(mut writer) = input.take() {
                                let _ = writer.shutdown().await;
                            }
                        }
                        Frame::Resize { cols, rows } => {
                            let size = ResizeContainerTTYOptions {
                                w: cols.into(),
                                h: rows.into(),
                            };
                            let _ = self.docker.resize_container_tty(&id, size).await;
                        }
                        other => {
                            warn!(%unit, ?other, "an attach sent a frame only an agent sends; ending it");
                            return Some("the caller sent a frame only an agent sends".to_string());
                        }
                    }
                }
                // The caller went away.
                None
            };
            let to_caller = async {
                loop {
                    let frame = match output.next().await {
                        Some(Ok(
                            LogOutput::StdOut { message } | LogOutput::Console { message },
                        )) => Frame::Stdout(message),
                        Some(Ok(LogOutput::StdErr { message })) => Frame::Stderr(message),
                        Some(Ok(LogOutput::StdIn { .. })) => continue,
                        // The container's output ended: it exited.
                        None => return Ok(()),
                        // The engine's stream broke: the container may still run.
                        Some(Err(error)) => {
                            return Err(Some(format!("the engine's output stream broke: {error}")))
                        }
                    };
                    if sink.send(frame).await.is_err() {
                        return Err(None);
                    }
                }
            };
            tokio::select! {
                ended = to_caller => ended,
                // The caller went away (`None`), or sent what it may not.
                reason = from_caller => Err(reason),
            }
        };
        if let Err(reason) = ended {
            // Then its one-off goes too, saying why if the caller is there.
            self.kill(unit, &id).await;
            if let Some(reason) = reason {
                let _ = sink.send(Frame::Failed(reason)).await;
            }
            return;
        }
        let code = self.exit_code(&id).await;
        let _ = sink.send(Frame::Exit(code)).await;
        let _ = sink.close().await;
    }

    /// The exit code of the container `id`, once it exited (-1: unknown).
    async fn exit_code(&self, id: &str) -> i64 {
        let mut waited = self.docker.wait_container(id, None);
        match waited.next().await {
            Some(Ok(response)) => response.status_code,
            // A non-zero exit is an error to bollard; inspect tells the code.
            _ => self
                .docker
                .inspect_container(id, None)
                .await
                .ok()
                .and_then(|inspected| inspected.state?.exit_code)
                .unwrap_or(-1),
        }
    }

    /// Says why the one-off could not start, and lets its caller (or the
    /// next attach) try again.
    async fn not_started<T>(&self, unit: &str, frames: &mut Framed<T, FrameCodec>, reason: String)
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        self.attached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(unit);
        let _ = frames.send(Frame::Failed(reason)).await;
    }

    async fn kill(&self, unit: &str, id: &str) {
        info!(%unit, "the caller of a one-off went away: killing it");
        let options = KillContainerOptionsBuilder::new().signal("SIGKILL").build();
        let _ = self.docker.kill_container(id, Some(options)).await;
    }
}

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
        match units::parse_unit(unit, &text).map(|unit| unit.exec) {
            Ok(units::Exec::Container(spec)) if spec.interactive => Ok(spec),
            Ok(_) => Err(format!("{unit} is not an attached one-off")),
            Err(error) => Err(format!("{unit} is invalid: {error}")),
        }
    }

    /// Waits for the container of `spec` to be made, not started.
    async fn made(&self, spec: &units::ContainerSpec) -> Result<String, String> {
        let deadline = tokio::time::Instant::now() + MADE_WAIT;
        loop {
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
        let id = match self.made(&spec).await {
            Ok(id) => id,
            Err(reason) => {
                let _ = frames.send(Frame::Failed(reason)).await;
                return;
            }
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
                let _ = frames.send(Frame::Failed(reason)).await;
                return;
            }
        };
        if let Err(error) = self.docker.start_container(&id, None).await {
            let reason = format!("cannot start: {}", engine::describe(error));
            let _ = frames.send(Frame::Failed(reason)).await;
            return;
        }
        if let (Some(cols), Some(rows), true) = (size.cols, size.rows, spec.tty) {
            let size = ResizeContainerTTYOptions {
                w: cols.into(),
                h: rows.into(),
            };
            let _ = self.docker.resize_container_tty(&id, size).await;
        }
        info!(%unit, container = %id, "one-off attached and started");
        let (mut output, mut input) = (attached.output, Some(attached.input));
        loop {
            tokio::select! {
                out = output.next() => match out {
                    Some(Ok(LogOutput::StdOut { message } | LogOutput::Console { message })) => {
                        if frames.send(Frame::Stdout(message)).await.is_err() {
                            break self.kill(unit, &id).await;
                        }
                    }
                    Some(Ok(LogOutput::StdErr { message })) => {
                        if frames.send(Frame::Stderr(message)).await.is_err() {
                            break self.kill(unit, &id).await;
                        }
                    }
                    Some(Ok(LogOutput::StdIn { .. })) => {}
                    // The container's output ended: it exited.
                    Some(Err(_)) | None => break self.finish(&id, &mut frames).await,
                },
                frame = frames.next() => match frame {
                    Some(Ok(Frame::Stdin(data))) => {
                        if let Some(writer) = input.as_mut() {
                            if writer.write_all(&data).await.is_err() {
                                input = None;
                            }
                        }
                    }
                    Some(Ok(Frame::StdinEnd)) => {
                        if let Some(mut writer) = input.take() {
                            let _ = writer.shutdown().await;
                        }
                    }
                    Some(Ok(Frame::Resize { cols, rows })) => {
                        let size = ResizeContainerTTYOptions { w: cols.into(), h: rows.into() };
                        let _ = self.docker.resize_container_tty(&id, size).await;
                    }
                    Some(Ok(other)) => {
                        warn!(%unit, ?other, "an attach sent a frame only an agent sends; ending it");
                        break self.kill(unit, &id).await;
                    }
                    // The caller went away: so does its one-off.
                    Some(Err(_)) | None => break self.kill(unit, &id).await,
                },
            }
        }
    }

    /// Sends the container's exit code.
    async fn finish<T>(&self, id: &str, frames: &mut Framed<T, FrameCodec>)
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let mut waited = self.docker.wait_container(id, None);
        let code = match waited.next().await {
            Some(Ok(response)) => response.status_code,
            // A non-zero exit is an error to bollard; inspect tells the code.
            _ => self
                .docker
                .inspect_container(id, None)
                .await
                .ok()
                .and_then(|inspected| inspected.state?.exit_code)
                .unwrap_or(-1),
        };
        let _ = frames.send(Frame::Exit(code)).await;
        let _ = frames.close().await;
    }

    async fn kill(&self, unit: &str, id: &str) {
        info!(%unit, "the caller of a one-off went away: killing it");
        let options = KillContainerOptionsBuilder::new().signal("SIGKILL").build();
        let _ = self.docker.kill_container(id, Some(options)).await;
    }
}

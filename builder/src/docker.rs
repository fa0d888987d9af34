//! Building and pushing with the Docker Engine (bollard).

use std::collections::HashMap;

use bollard::query_parameters::{BuildImageOptionsBuilder, PushImageOptionsBuilder};
use bollard::Docker;
use bytes::Bytes;
use futures::StreamExt;

use crate::error::{BuildError, Result};
use crate::log::BuildLog;
use crate::source::Source;

/// A `Write` that hands the tar to the HTTP body in chunks.
struct ChannelWriter {
    sender: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    buffer: Vec<u8>,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= 1 << 20 {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buffer));
        self.sender.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the build stopped reading its context",
            )
        })
    }
}

/// Builds the context as `tag`, logging the build's lines indented.
pub(crate) async fn build(
    docker: &Docker,
    source: Source,
    dockerfile: Option<String>,
    tag: &str,
    labels: &HashMap<&str, String>,
    log: &mut BuildLog,
) -> Result<()> {
    let (sender, mut receiver) = tokio::sync::mpsc::channel(4);
    let writer = tokio::task::spawn_blocking(move || {
        let mut writer = ChannelWriter {
            sender,
            buffer: Vec::new(),
        };
        source.write_tar(dockerfile.as_deref(), &mut writer)
    });
    let body = futures::stream::poll_fn(move |cx| receiver.poll_recv(cx));
    let options = BuildImageOptionsBuilder::new()
        .dockerfile("Dockerfile")
        .t(tag)
        .rm(true)
        .forcerm(true)
        .labels(labels)
        .build();
    let mut stream = docker.build_image(options, None, Some(bollard::body_try_stream(body)));
    let mut pending = String::new();
    let mut failure = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(text) = info.stream {
                    pending.push_str(&text);
                    while let Some(end) = pending.find('\n') {
                        let line: String = pending.drain(..=end).collect();
                        let line = line.trim_end();
                        if !line.is_empty() {
                            log.line(format!("       {line}")).await;
                        }
                    }
                }
                if let Some(detail) = info.error_detail {
                    failure = Some(
                        detail
                            .message
                            .unwrap_or_else(|| "the build failed".to_string()),
                    );
                }
            }
            Err(error) => {
                failure = Some(engine::describe(error));
                break;
            }
        }
    }
    if !pending.trim().is_empty() {
        log.line(format!("       {}", pending.trim_end())).await;
    }
    let written = writer
        .await
        .map_err(|error| BuildError::Task(error.to_string()))?;
    match failure {
        Some(message) => Err(BuildError::Docker(message)),
        None => written,
    }
}

/// Pushes `registry/app:tag` with the builder's token; returns the digest.
pub(crate) async fn push(
    docker: &Docker,
    login: &engine::RegistryLogin,
    app: &str,
    tag: &str,
) -> Result<String> {
    let repository = format!("{}/{app}", login.registry);
    let options = PushImageOptionsBuilder::new().tag(tag).build();
    let mut stream = docker.push_image(&repository, Some(options), Some(login.credentials()));
    let mut digest = None;
    while let Some(item) = stream.next().await {
        let info = item.map_err(|error| {
            BuildError::Docker(format!(
                "cannot push the image: {}",
                engine::describe(error)
            ))
        })?;
        if let Some(detail) = info.error_detail {
            return Err(BuildError::Docker(format!(
                "cannot push the image: {}",
                detail.message.unwrap_or_default()
            )));
        }
        if let Some(found) = info
            .status
            .as_deref()
            .and_then(|status| status.split("digest: ").nth(1))
        {
            digest = found.split_whitespace().next().map(str::to_string);
        }
    }
    digest.ok_or_else(|| {
        BuildError::Docker("the registry did not report the pushed image's digest".to_string())
    })
}

/// Pulls `reference` and reads back its digest (the repository's entry of
/// `RepoDigests`) and the TCP ports its config exposes.
pub(crate) async fn inspect_remote(
    docker: &Docker,
    reference: &str,
) -> Result<store::ResolvedImage> {
    engine::pull(docker, reference, None).await?;
    let inspected = docker.inspect_image(reference).await.map_err(|error| {
        BuildError::Docker(format!(
            "cannot inspect {reference}: {}",
            engine::describe(error)
        ))
    })?;
    let (repository, _) = store::images::split_reference(reference);
    let digest = inspected
        .repo_digests
        .unwrap_or_default()
        .into_iter()
        .find_map(|pinned| {
            let pinned = store::images::Reference::parse(&pinned);
            let name = pinned.name;
            (name == repository || name.ends_with(&format!("/{repository}")))
                .then(|| pinned.digest.map(str::to_string))
                .flatten()
        });
    let exposed = inspected
        .config
        .and_then(|config| config.exposed_ports)
        .unwrap_or_default();
    let exposed_ports = store::images::tcp_ports(exposed.iter().map(String::as_str));
    Ok(match digest {
        Some(digest) => store::ResolvedImage {
            image: format!("{repository}@{digest}"),
            source: (!reference.contains('@')).then(|| reference.to_string()),
            exposed_ports,
        },
        None => store::ResolvedImage {
            image: reference.to_string(),
            source: None,
            exposed_ports,
        },
    })
}

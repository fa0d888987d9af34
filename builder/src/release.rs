//! The release phase: a Procfile's `release:` command, run once in a one-off
//! container of the release's image before it is rolled out (Heroku's
//! release phase). Its output streams to the pusher; a non-zero exit stops
//! the deploy.

use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::error::{BuildError, Result};
use crate::Builder;

/// Removes the one-off container however the release phase ends.
struct Remove {
    docker: bollard::Docker,
    id: String,
}

impl Drop for Remove {
    fn drop(&mut self) {
        let (docker, id) = (self.docker.clone(), self.id.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let options = RemoveContainerOptionsBuilder::new().force(true).build();
                let _ = docker.remove_container(&id, Some(options)).await;
            });
        }
    }
}

impl Builder {
    /// Runs `command` (shell) in a container of `image` with `env`; each line
    /// of its output goes to `output`. `Err` says why the deploy must stop.
    pub async fn run_release_command(
        &self,
        app: &str,
        image: &str,
        command: &str,
        env: &[(String, String)],
        output: &mpsc::Sender<String>,
    ) -> Result<()> {
        let docker = self.docker().await?;
        if docker.inspect_image(image).await.is_err() {
            // The builder's token goes to Paz's registry only, never to
            // whatever registry an image names.
            let pull = engine::pull(&docker, image, Some(&self.inner.config.login));
            tokio::time::timeout(self.inner.config.timeout, pull)
                .await
                .map_err(|_| {
                    BuildError::Docker(format!("pulling {image} for the release command timed out"))
                })??;
        }
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            cmd: Some(vec!["sh".into(), "-c".into(), command.to_string()]),
            env: Some(env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some([("paz.release-phase".to_string(), app.to_string())].into()),
            ..Default::default()
        };
        let created = docker
            .create_container(Some(CreateContainerOptionsBuilder::new().build()), body)
            .await
            .map_err(|error| {
                BuildError::Docker(format!(
                    "cannot create the release command's container: {error}"
                ))
            })?;
        let _remove = Remove {
            docker: docker.clone(),
            id: created.id.clone(),
        };
        docker
            .start_container(&created.id, None)
            .await
            .map_err(|error| {
                BuildError::Docker(format!("cannot start the release command: {error}"))
            })?;
        let run = async {
            let options = LogsOptionsBuilder::new()
                .follow(true)
                .stdout(true)
                .stderr(true)
                .build();
            let mut logs = docker.logs(&created.id, Some(options));
            let mut partial = String::new();
            while let Some(Ok(chunk)) = logs.next().await {
                partial.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
                while let Some(end) = partial.find('\n') {
                    let line: String = partial.drain(..=end).collect();
                    let _ = output.send(line.trim_end().to_string()).await;
                }
            }
            if !partial.trim().is_empty() {
                let _ = output.send(partial.trim_end().to_string()).await;
            }
            let mut waited = docker.wait_container(&created.id, None);
            let code = match waited.next().await {
                Some(Ok(exit)) => exit.status_code,
                // A non-zero exit comes back as an error carrying the code.
                Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
                Some(Err(error)) => {
                    return Err(BuildError::Docker(format!(
                        "cannot wait for the release command: {error}"
                    )))
                }
                None => {
                    return Err(BuildError::Docker(
                        "the release command's container vanished".to_string(),
                    ))
                }
            };
            if code == 0 {
                Ok(())
            } else {
                Err(BuildError::ReleaseCommand(format!(
                    "the release command `{command}` failed (exit code {code})"
                )))
            }
        };
        match tokio::time::timeout(self.inner.config.timeout, run).await {
            Ok(result) => result,
            Err(_) => Err(BuildError::TimedOut {
                what: format!("the release command `{command}`"),
                after: self.inner.config.timeout,
            }),
        }
    }
}

//! Paz's glue for the Docker Engine (bollard) that the builder and the agent
//! both need: connecting with the API version negotiated, what an engine
//! error says, the login to Paz's registry, and pulling an image.

#![forbid(unsafe_code)]

use bollard::auth::DockerCredentials;
use bollard::query_parameters::CreateImageOptionsBuilder;
pub use bollard::Docker;
use futures::TryStreamExt;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// This host's Docker Engine does not answer.
    #[error("Docker is not running on this host: start dockerd (scripts/setup does) ({0})")]
    Unreachable(String),
    /// The engine could not pull an image.
    #[error("cannot pull {image}: {reason}")]
    Pull { image: String, reason: String },
}

/// Connects to this host's Docker Engine and negotiates the API version
/// (Debian's engine speaks an older one than bollard's default).
pub async fn connect() -> Result<Docker, EngineError> {
    let unreachable = |error: bollard::errors::Error| EngineError::Unreachable(error.to_string());
    Docker::connect_with_local_defaults()
        .map_err(unreachable)?
        .negotiate_version()
        .await
        .map_err(unreachable)
}

/// What an engine error says, without bollard's wrapping.
pub fn describe(error: bollard::errors::Error) -> String {
    match error {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message,
        bollard::errors::Error::DockerStreamError { error } => error,
        other => other.to_string(),
    }
}

/// A token of Paz's registry: what the builder pushes with and the agents
/// pull with.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryLogin {
    /// The registry, `host:port`.
    pub registry: String,
    /// The token's name.
    pub name: String,
    pub secret: String,
}

impl std::fmt::Debug for RegistryLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryLogin")
            .field("registry", &self.registry)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl RegistryLogin {
    /// The login as the engine takes it.
    pub fn credentials(&self) -> DockerCredentials {
        DockerCredentials {
            username: Some(self.name.clone()),
            password: Some(self.secret.clone()),
            serveraddress: Some(self.registry.clone()),
            ..Default::default()
        }
    }

    /// The login for pulling `image`: only an image of this registry gets
    /// it, never one of whatever registry an image names.
    pub fn for_image(&self, image: &str) -> Option<DockerCredentials> {
        (image.split('/').next() == Some(self.registry.as_str())).then(|| self.credentials())
    }
}

/// Pulls `image`, with `login` when it is an image of Paz's registry.
pub async fn pull(
    docker: &Docker,
    image: &str,
    login: Option<&RegistryLogin>,
) -> Result<(), EngineError> {
    let options = CreateImageOptionsBuilder::new().from_image(image).build();
    let credentials = login.and_then(|login| login.for_image(image));
    docker
        .create_image(Some(options), None, credentials)
        .try_collect::<Vec<_>>()
        .await
        .map(|_| ())
        .map_err(|error| EngineError::Pull {
            image: image.to_string(),
            reason: describe(error),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_images_of_paz_registry_get_its_login() {
        let login = RegistryLogin {
            registry: "10.0.0.7:5000".into(),
            name: "agent".into(),
            secret: "s3cret".into(),
        };
        let ours = login.for_image("10.0.0.7:5000/demo@sha256:ab").unwrap();
        assert_eq!(ours.password.as_deref(), Some("s3cret"));
        assert!(login
            .for_image("10.0.0.7:5000.evil.example/demo:1")
            .is_none());
        assert!(login.for_image("docker.io/library/busybox").is_none());
        assert!(login.for_image("10.0.0.7:5001/demo:1").is_none());
        assert!(
            !format!("{login:?}").contains("s3cret"),
            "the secret is not logged"
        );
    }
}

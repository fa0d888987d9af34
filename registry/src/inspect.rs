//! Reads an image of Paz's registry without pulling it: the manifest digest a
//! tag points at and the TCP ports the image's config exposes (`EXPOSE`), so
//! that a release records both.

use serde::Deserialize;

use store::images::tcp_ports;

use crate::error::{RegistryError, Result};
use crate::names::{check_digest, check_name, check_tag};
use crate::storage::Storage;

/// What a release needs to know of an image in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspected {
    /// The manifest (or index) digest the reference names, `sha256:...`.
    pub digest: String,
    /// TCP ports of the image config's `ExposedPorts`, lowest first.
    pub exposed_ports: Vec<u16>,
}

#[derive(Deserialize)]
struct Descriptor {
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
}

/// An image manifest or an index: whichever fields are there.
#[derive(Deserialize)]
struct Manifest {
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct ImageConfig {
    #[serde(default)]
    config: Option<ContainerConfig>,
}

#[derive(Deserialize)]
struct ContainerConfig {
    #[serde(rename = "ExposedPorts", default)]
    exposed_ports: Option<std::collections::BTreeMap<String, serde_json::Value>>,
}

/// Docker's name for this host's architecture, as image indexes spell it.
fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

impl Storage {
    /// The digest and exposed ports of `repo` at `reference` (a tag or a
    /// digest). Fails with `MANIFEST_UNKNOWN` when the registry lacks it.
    pub async fn inspect(&self, repo: &str, reference: &str) -> Result<Inspected> {
        let repo = check_name(repo)?;
        let digest = if reference.starts_with("sha256:") {
            let digest = check_digest(reference)?;
            if self.manifest_type(&repo, &digest).await.is_none() {
                return Err(RegistryError::manifest_unknown(&digest));
            }
            digest
        } else {
            let tag = check_tag(reference)?;
            self.tag_digest(&repo, &tag)
                .await
                .ok_or_else(|| RegistryError::manifest_unknown(&tag))?
        };
        let parse = |bytes: Vec<u8>| {
            serde_json::from_slice::<Manifest>(&bytes)
                .map_err(|error| RegistryError::manifest_invalid(error.to_string()))
        };
        let mut manifest = parse(self.read_blob(&digest).await?)?;
        if manifest.config.is_none() && !manifest.manifests.is_empty() {
            // An index: the image this host's Docker would pull.
            let chosen = manifest
                .manifests
                .iter()
                .find(|m| {
                    m.platform
                        .as_ref()
                        .is_some_and(|p| p.os == "linux" && p.architecture == host_architecture())
                })
                .unwrap_or(&manifest.manifests[0]);
            manifest = parse(self.read_blob(&chosen.digest).await?)?;
        }
        let exposed_ports = match manifest.config {
            Some(config) => {
                let config: ImageConfig = serde_json::from_slice(
                    &self.read_blob(&config.digest).await?,
                )
                .map_err(|error| {
                    RegistryError::manifest_invalid(format!("its image config: {error}"))
                })?;
                let keys = config
                    .config
                    .and_then(|c| c.exposed_ports)
                    .unwrap_or_default();
                tcp_ports(keys.keys().map(String::as_str))
            }
            None => Vec::new(),
        };
        Ok(Inspected {
            digest,
            exposed_ports,
        })
    }
}

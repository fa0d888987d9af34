//! The image resolver `paz` gives the builder, the deployer and the verbs:
//! references to Paz's registry are read from its files (digest and exposed
//! ports, no pull); others are pulled through the builder's Docker Engine.

use std::future::Future;
use std::pin::Pin;

use store::images::{registry_repository, split_reference};
use store::ResolvedImage;
use tracing::warn;

#[derive(Debug)]
pub(crate) struct Images {
    /// Paz's registry on this host.
    pub(crate) storage: registry::Storage,
    /// The registry's address in image names (`127.0.0.1:5000`).
    pub(crate) registry_host: String,
    /// For images of other registries; `None` where no builder runs.
    pub(crate) builder: Option<builder::Builder>,
}

impl Images {
    async fn resolve_reference(&self, reference: &str) -> Result<ResolvedImage, String> {
        let (name, tag_or_digest) = split_reference(reference);
        let wanted = tag_or_digest.unwrap_or("latest");
        if let Some(repository) = registry_repository(&self.registry_host, name) {
            let inspected = self
                .storage
                .inspect(repository, wanted)
                .await
                .map_err(|error| {
                    format!(
                        "{reference} is not in Paz's registry ({}): push it first, or check the name",
                        error.message
                    )
                })?;
            return Ok(ResolvedImage {
                image: format!("{}/{repository}@{}", self.registry_host, inspected.digest),
                source: (!wanted.starts_with("sha256:")).then(|| reference.to_string()),
                exposed_ports: inspected.exposed_ports,
            });
        }
        let unpinned = ResolvedImage {
            image: reference.to_string(),
            source: None,
            exposed_ports: Vec::new(),
        };
        let Some(builder) = &self.builder else {
            return Ok(unpinned);
        };
        match builder.inspect_remote(reference).await {
            Ok(resolved) => Ok(resolved),
            // The hosts that run it may reach what this one cannot.
            Err(error) => {
                warn!(%reference, %error, "cannot pin an image of another registry: its release names it as given");
                Ok(unpinned)
            }
        }
    }
}

impl store::ImageResolver for Images {
    fn owner(&self, reference: &str) -> Option<store::AppName> {
        store::images::registry_owner(&self.registry_host, reference)
    }

    fn resolve(
        &self,
        reference: &str,
    ) -> Pin<Box<dyn Future<Output = Result<ResolvedImage, String>> + Send + '_>> {
        let reference = reference.to_string();
        Box::pin(async move { self.resolve_reference(&reference).await })
    }
}

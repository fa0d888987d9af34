//! The image resolver `paz` gives the builder, the deployer and the verbs:
//! references to Paz's registry are read from its files (digest and exposed
//! ports, no pull); others are pulled through the builder's Docker Engine.

use std::future::Future;
use std::pin::Pin;

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

/// `REPO[:TAG]` or `REPO@DIGEST` as (repository, tag or digest).
fn split_reference(reference: &str) -> (&str, Option<&str>) {
    if let Some((name, digest)) = reference.split_once('@') {
        return (name, Some(digest));
    }
    match reference.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, Some(tag)),
        _ => (reference, None),
    }
}

impl Images {
    /// The repository in Paz's registry that `name` names, if it names one.
    fn own_repository<'a>(&self, name: &'a str) -> Option<&'a str> {
        let localhost = self
            .registry_host
            .strip_prefix("127.0.0.1:")
            .map(|port| format!("localhost:{port}"));
        let hosts = [Some(self.registry_host.as_str()), localhost.as_deref()];
        let repository = hosts
            .into_iter()
            .flatten()
            .find_map(|host| name.strip_prefix(host)?.strip_prefix('/'));
        repository
    }

    async fn resolve_reference(&self, reference: &str) -> Result<ResolvedImage, String> {
        let (name, tag_or_digest) = split_reference(reference);
        let wanted = tag_or_digest.unwrap_or("latest");
        if let Some(repository) = self.own_repository(name) {
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
        let (name, _) = split_reference(reference);
        store::images::repository_app(self.own_repository(name)?)
    }

    fn resolve(
        &self,
        reference: &str,
    ) -> Pin<Box<dyn Future<Output = Result<ResolvedImage, String>> + Send + '_>> {
        let reference = reference.to_string();
        Box::pin(async move { self.resolve_reference(&reference).await })
    }
}

#[cfg(test)]
mod tests {
    use super::split_reference;

    #[test]
    fn references_split_into_repository_and_tag_or_digest() {
        assert_eq!(
            split_reference("127.0.0.1:5000/hello:ci-1"),
            ("127.0.0.1:5000/hello", Some("ci-1"))
        );
        assert_eq!(
            split_reference("127.0.0.1:5000/hello"),
            ("127.0.0.1:5000/hello", None)
        );
        assert_eq!(
            split_reference("127.0.0.1:5000/hello@sha256:ab"),
            ("127.0.0.1:5000/hello", Some("sha256:ab"))
        );
        assert_eq!(split_reference("nginx:1.25"), ("nginx", Some("1.25")));
    }
}

//! What a release records of its image, and the handle that finds it out:
//! the crates that make releases (builder, verbs, deployer) ask it; `paz`
//! gives them one that reads Paz's registry (and asks Docker for others).

use std::future::Future;
use std::pin::Pin;

/// An image reference pinned to what it named when it was resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    /// `repo@sha256:digest` when the digest is known, else the reference as given.
    pub image: String,
    /// The reference it was resolved from, when that named a tag
    /// (`127.0.0.1:5000/hello:ci-1`).
    pub source: Option<String>,
    /// The TCP ports the image exposes (`EXPOSE`), lowest first.
    pub exposed_ports: Vec<u16>,
}

/// Resolves image references at release time.
pub trait ImageResolver: Send + Sync + std::fmt::Debug {
    /// Pins `reference` (`REPO[:TAG]` or `REPO@sha256:...`) to its digest and
    /// reads the ports its image exposes. Fails when the image is in Paz's
    /// registry and does not exist there, with a message that says so.
    fn resolve(
        &self,
        reference: &str,
    ) -> Pin<Box<dyn Future<Output = Result<ResolvedImage, String>> + Send + '_>>;

    /// The app whose repository in Paz's registry `reference` names
    /// (`HOST/two:v1` -> `two`), if it names one: only who may use that app
    /// may deploy, follow or build on it.
    fn owner(&self, reference: &str) -> Option<crate::AppName>;
}

/// The app a repository of Paz's registry belongs to: its first component.
pub fn repository_app(repository: &str) -> Option<crate::AppName> {
    crate::AppName::new(repository.split('/').next()?).ok()
}

/// An image reference, `[HOST/]PATH[:TAG][@DIGEST]`, split as Docker reads
/// it: a colon after the last slash starts a tag, one before it is a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reference<'a> {
    /// `HOST/PATH` or `PATH`, without tag or digest.
    pub name: &'a str,
    pub tag: Option<&'a str>,
    pub digest: Option<&'a str>,
}

impl<'a> Reference<'a> {
    pub fn parse(reference: &'a str) -> Reference<'a> {
        let (rest, digest) = match reference.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest)),
            None => (reference, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        match rest[last_slash..].rfind(':') {
            Some(i) => Reference {
                name: &rest[..last_slash + i],
                tag: Some(&rest[last_slash + i + 1..]),
                digest,
            },
            None => Reference {
                name: rest,
                tag: None,
                digest,
            },
        }
    }

    /// The name without its registry host (`127.0.0.1:5000/web` -> `web`):
    /// a first component with a `.` or a `:`, or `localhost`, is a host.
    pub fn path(&self) -> &'a str {
        match self.name.split_once('/') {
            Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => rest,
            _ => self.name,
        }
    }
}

/// `REPO[:TAG][@DIGEST]` as (repository, the digest else the tag).
pub fn split_reference(reference: &str) -> (&str, Option<&str>) {
    let parsed = Reference::parse(reference);
    (parsed.name, parsed.digest.or(parsed.tag))
}

/// The repository of Paz's registry that the image name `name` (no tag or
/// digest) is in: it starts with `registry_host`, or with `localhost:PORT`
/// for a registry at `127.0.0.1:PORT`.
pub fn registry_repository<'a>(registry_host: &str, name: &'a str) -> Option<&'a str> {
    let rest = name.strip_prefix(registry_host).or_else(|| {
        let port = registry_host.strip_prefix("127.0.0.1:")?;
        name.strip_prefix("localhost:")?.strip_prefix(port)
    })?;
    rest.strip_prefix('/')
}

/// The app whose repository in Paz's registry (at `registry_host`)
/// `reference` names, if it names one.
pub fn registry_owner(registry_host: &str, reference: &str) -> Option<crate::AppName> {
    let (name, _) = split_reference(reference);
    repository_app(registry_repository(registry_host, name)?)
}

/// The port an instance listens on: the app's setting, else the image's
/// first exposed TCP port, else 5000 (as DESIGN.md says).
pub fn instance_port(configured: Option<u16>, exposed: &[u16]) -> u16 {
    configured.or(exposed.first().copied()).unwrap_or(5000)
}

/// The TCP ports among an image's `ExposedPorts` keys (`8080/tcp`,
/// `53/udp`, `9000`), lowest first.
pub fn tcp_ports<'a>(keys: impl IntoIterator<Item = &'a str>) -> Vec<u16> {
    let mut ports: Vec<u16> = keys
        .into_iter()
        .filter_map(|key| {
            let (port, protocol) = key.split_once('/').unwrap_or((key, "tcp"));
            (protocol == "tcp").then(|| port.parse().ok()).flatten()
        })
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

#[cfg(test)]
mod tests {
    use super::{instance_port, split_reference, tcp_ports, Reference};

    #[test]
    fn only_tcp_ports_count_lowest_first() {
        assert_eq!(
            tcp_ports(["8080/tcp", "53/udp", "443/tcp", "9000"]),
            vec![443, 8080, 9000]
        );
        assert_eq!(tcp_ports(["x/tcp", "70000/tcp"]), Vec::<u16>::new());
    }

    #[test]
    fn references_name_their_app_only_in_pazs_registry() {
        use super::{registry_owner, split_reference};
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
        let host = "127.0.0.1:5000";
        let owner = |reference| registry_owner(host, reference).map(|app| app.to_string());
        assert_eq!(owner("127.0.0.1:5000/two:v1").as_deref(), Some("two"));
        assert_eq!(
            owner("localhost:5000/two/api@sha256:ab").as_deref(),
            Some("two")
        );
        assert_eq!(owner("127.0.0.1:50000/two:v1"), None);
        assert_eq!(owner("localhost:50001/two"), None);
        assert_eq!(owner("docker.io/two:v1"), None);
        assert_eq!(owner("two:v1"), None);
    }

    #[test]
    fn the_setting_wins_then_the_image_then_5000() {
        assert_eq!(instance_port(Some(3000), &[8080]), 3000);
        assert_eq!(instance_port(None, &[80, 8080]), 80);
        assert_eq!(instance_port(None, &[]), 5000);
    }

    #[test]
    fn references_split_as_docker_reads_them() {
        let digest = "sha256:0123";
        let parsed = Reference::parse("127.0.0.1:5000/web/api:v2@sha256:0123");
        assert_eq!(parsed.name, "127.0.0.1:5000/web/api");
        assert_eq!(parsed.tag, Some("v2"));
        assert_eq!(parsed.digest, Some(digest));
        assert_eq!(parsed.path(), "web/api");
        // A port is not a tag.
        let parsed = Reference::parse("localhost:5000/web");
        assert_eq!((parsed.name, parsed.tag), ("localhost:5000/web", None));
        assert_eq!(parsed.path(), "web");
        assert_eq!(Reference::parse("acme/web").path(), "acme/web");
        assert_eq!(split_reference("web:v1"), ("web", Some("v1")));
        assert_eq!(split_reference("web:v1@sha256:0123"), ("web", Some(digest)));
        assert_eq!(split_reference("web"), ("web", None));
    }
}

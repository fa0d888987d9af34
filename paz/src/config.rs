//! `paz up` settings: flags and env vars over the optional TOML config file over
//! the defaults, parsed and checked once into [`UpConfig`] before anything starts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::cli::UpFlags;

/// Everything `paz up` runs with, checked.
#[derive(Debug, Clone)]
pub(crate) struct UpConfig {
    pub(crate) data_dir: PathBuf,
    /// `None`: start a local etcd under `data_dir/etcd`.
    pub(crate) etcd: Option<Vec<String>>,
    pub(crate) etcd_prefix: String,
    /// `--etcd-tls`: the client TLS files of a shared etcd.
    pub(crate) etcd_tls: Option<PathBuf>,
    pub(crate) domain: String,
    pub(crate) ssh_listen: SocketAddr,
    pub(crate) registry_listen: SocketAddr,
    /// `--registry-advertise`: the host, and the port if one was given.
    pub(crate) registry_advertise: Option<(String, Option<u16>)>,
    pub(crate) http_listen: SocketAddr,
    pub(crate) api_listen: SocketAddr,
    pub(crate) admin_key: Option<PathBuf>,
    /// Base images by buildpack name.
    pub(crate) buildpack_images: std::collections::HashMap<String, String>,
    pub(crate) build_timeout: std::time::Duration,
    pub(crate) build_concurrency: usize,
    pub(crate) max_context_bytes: u64,
    /// Where the proxy's metrics are served, if anywhere.
    pub(crate) metrics_listen: Option<SocketAddr>,
    pub(crate) access_log: proxy::AccessLog,
    pub(crate) backend_http: proxy::BackendHttp,
    pub(crate) deploy_timeout: std::time::Duration,
    pub(crate) deploy_batch: usize,
    /// `paz server`: no agent and no proxy on this host.
    pub(crate) server_only: bool,
    /// Where the agent's endpoint listens (`None`: a free port).
    pub(crate) agent_listen: Option<SocketAddr>,
    /// What each app may keep of its log on this host.
    pub(crate) log_cap: u64,
    /// Where the proxy serves HTTPS (`None`: it does not).
    pub(crate) https_listen: Option<SocketAddr>,
    /// The ACME role, with `--acme-email`.
    pub(crate) acme: Option<acme::AcmeConfig>,
    /// `--publish-endpoints`: paz.<domain> and registry.<domain> through the proxies.
    pub(crate) publish_endpoints: bool,
}

/// The config file: the same names as the flags, with `_` for `-`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    etcd: Option<EtcdEndpoints>,
    etcd_prefix: Option<String>,
    etcd_tls: Option<PathBuf>,
    domain: Option<String>,
    ssh_listen: Option<String>,
    registry_listen: Option<String>,
    registry_advertise: Option<String>,
    http_listen: Option<String>,
    api_listen: Option<String>,
    admin_key: Option<PathBuf>,
    /// `[buildpack_images]` table: `static = "busybox:1.36"`.
    buildpack_images: Option<std::collections::HashMap<String, String>>,
    build_timeout: Option<u64>,
    build_concurrency: Option<usize>,
    max_context_mb: Option<u64>,
    metrics_listen: Option<String>,
    access_log: Option<String>,
    deploy_timeout: Option<u64>,
    deploy_batch: Option<u64>,
    agent_listen: Option<String>,
    log_cap: Option<String>,
    https_listen: Option<String>,
    publish_endpoints: Option<bool>,
    acme_email: Option<String>,
    acme_directory: Option<String>,
    acme_ca_file: Option<PathBuf>,
    acme_backoff: Option<String>,
}

/// `etcd = "http://a:2379,http://b:2379"` or `etcd = ["http://a:2379", ...]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum EtcdEndpoints {
    One(String),
    Many(Vec<String>),
}

impl EtcdEndpoints {
    fn into_list(self) -> Vec<String> {
        match self {
            EtcdEndpoints::One(text) => text.split(',').map(str::to_string).collect(),
            EtcdEndpoints::Many(list) => list,
        }
    }
}

impl UpConfig {
    /// Merges flags (which include env vars), the config file and the defaults.
    pub(crate) fn resolve(flags: UpFlags, config_file: Option<&Path>) -> anyhow::Result<UpConfig> {
        let file = match config_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("config file {} is invalid", path.display()))?
            }
            None => FileConfig::default(),
        };
        let data_dir = flags
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("/var/lib/paz"));
        let data_dir = std::path::absolute(&data_dir)
            .with_context(|| format!("data dir {} is not a usable path", data_dir.display()))?;
        let etcd = flags.etcd.or(file.etcd.map(EtcdEndpoints::into_list));
        let etcd = match etcd {
            Some(list) => {
                let list: Vec<String> = list
                    .into_iter()
                    .map(|url| url.trim().to_string())
                    .filter(|url| !url.is_empty())
                    .collect();
                if list.is_empty() {
                    bail!("--etcd is empty: give etcd URLs such as http://127.0.0.1:2379, or leave it out to start a local etcd");
                }
                Some(list)
            }
            None => None,
        };
        let etcd_prefix = flags
            .etcd_prefix
            .or(file.etcd_prefix)
            .unwrap_or_else(|| "/paz".to_string());
        if !etcd_prefix.starts_with('/') || etcd_prefix.trim_end_matches('/').is_empty() {
            bail!("--etcd-prefix `{etcd_prefix}` is invalid: use a path such as /paz");
        }
        let domain = flags
            .domain
            .or(file.domain)
            .unwrap_or_else(|| "paz.localhost".to_string());
        store::names::check_domain(&domain).context("--domain")?;
        let listen =
            |flag: &str, given: Option<String>, from_file: Option<String>, default: &str| {
                let text = given.or(from_file).unwrap_or_else(|| default.to_string());
                text.parse::<SocketAddr>().map_err(|_| {
                    anyhow::anyhow!("--{flag} `{text}` is invalid: use IP:PORT, such as {default}")
                })
            };
        // Served by default on a free loopback port: the web UI's charts
        // (and Prometheus, through the service discovery) find it in etcd.
        let metrics_listen = match flags.metrics_listen.or(file.metrics_listen) {
            Some(text) if text.trim() == "off" => None,
            None => Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            Some(text) => Some(listen(
                "metrics-listen",
                Some(text),
                None,
                "127.0.0.1:9100",
            )?),
        };
        let access_log = match flags.access_log.or(file.access_log) {
            Some(text) if text.trim().is_empty() => {
                bail!("--access-log is empty: give a file, `-` for standard output, or `off`")
            }
            Some(text) => text.parse().unwrap_or_default(),
            None => proxy::AccessLog::Stdout,
        };
        let agent_listen = match flags.agent.agent_listen {
            Some(address) => Some(address),
            None => match file.agent_listen {
                Some(text) => Some(listen("agent-listen", Some(text), None, "10.0.0.7:7070")?),
                None => None,
            },
        };
        let log_cap = match (flags.agent.log_cap, file.log_cap) {
            (Some(cap), _) => cap,
            (None, Some(text)) => agent::parse_log_cap(&text).map_err(|e| anyhow::anyhow!(e))?,
            (None, None) => agent::DEFAULT_LOG_CAP,
        };
        let https_listen = crate::cli::https_listen(
            flags
                .https_listen
                .as_deref()
                .or(file.https_listen.as_deref())
                .unwrap_or("0.0.0.0:443"),
        )?;
        let acme = crate::cli::AcmeFlags {
            acme_email: flags.acme.acme_email.clone().or(file.acme_email),
            acme_directory: flags.acme.acme_directory.clone().or(file.acme_directory),
            acme_ca_file: flags.acme.acme_ca_file.clone().or(file.acme_ca_file),
            acme_backoff: match (flags.acme.acme_backoff, file.acme_backoff) {
                (Some(backoff), _) => Some(backoff),
                (None, Some(text)) => Some(humantime::parse_duration(&text).map_err(|error| {
                    anyhow::anyhow!("acme_backoff `{text}` is not a duration such as 5m: {error}")
                })?),
                (None, None) => None,
            },
        };
        Ok(UpConfig {
            https_listen,
            acme: acme.config()?,
            publish_endpoints: flags.publish_endpoints || file.publish_endpoints.unwrap_or(false),
            agent_listen,
            log_cap,
            server_only: false,
            deploy_batch: positive(
                "deploy-batch",
                flags.deploy_batch.or(file.deploy_batch).unwrap_or(1),
            )? as usize,
            deploy_timeout: std::time::Duration::from_secs(positive(
                "deploy-timeout",
                flags.deploy_timeout.or(file.deploy_timeout).unwrap_or(60),
            )?),
            metrics_listen,
            access_log,
            backend_http: flags.backend_http,
            data_dir,
            etcd,
            etcd_prefix,
            etcd_tls: flags.etcd_tls.or(file.etcd_tls),
            domain,
            ssh_listen: listen(
                "ssh-listen",
                flags.ssh_listen,
                file.ssh_listen,
                "0.0.0.0:2222",
            )?,
            registry_listen: listen(
                "registry-listen",
                flags.registry_listen,
                file.registry_listen,
                "0.0.0.0:5000",
            )?,
            registry_advertise: flags
                .registry_advertise
                .or(file.registry_advertise)
                .map(|text| advertised(&text))
                .transpose()?,
            http_listen: listen(
                "http-listen",
                flags.http_listen,
                file.http_listen,
                "0.0.0.0:80",
            )?,
            api_listen: listen(
                "api-listen",
                flags.api_listen,
                file.api_listen,
                "127.0.0.1:9000",
            )?,
            admin_key: flags.admin_key.or(file.admin_key),
            buildpack_images: buildpack_images(&flags.buildpack_image, file.buildpack_images)?,
            build_timeout: std::time::Duration::from_secs(positive(
                "build-timeout",
                flags.build_timeout.or(file.build_timeout).unwrap_or(1800),
            )?),
            build_concurrency: positive(
                "build-concurrency",
                flags
                    .build_concurrency
                    .or(file.build_concurrency)
                    .unwrap_or(1) as u64,
            )? as usize,
            max_context_bytes: positive(
                "max-context-mb",
                flags.max_context_mb.or(file.max_context_mb).unwrap_or(1024),
            )? << 20,
        })
    }
}

/// `--registry-advertise HOST[:PORT]`, checked: image names start with it.
fn advertised(text: &str) -> anyhow::Result<(String, Option<u16>)> {
    let invalid = || {
        anyhow::anyhow!(
            "--registry-advertise `{text}` is invalid: use HOST or HOST:PORT, such as registry.example.com or 10.0.0.1:5000"
        )
    };
    let (host, port) = match text.split_once(':') {
        Some((host, port)) => {
            let port = port.parse::<u16>().ok().filter(|port| *port > 0);
            (host, Some(port.ok_or_else(invalid)?))
        }
        None => (text, None),
    };
    let host = host.to_ascii_lowercase();
    store::names::check_domain(&host).map_err(|_| invalid())?;
    Ok((host, port))
}

fn positive(flag: &str, value: u64) -> anyhow::Result<u64> {
    if value == 0 {
        bail!("--{flag} must be at least 1");
    }
    Ok(value)
}

/// `NAME=IMAGE` flags over the file's `[buildpack_images]` table.
fn buildpack_images(
    flags: &[String],
    file: Option<std::collections::HashMap<String, String>>,
) -> anyhow::Result<std::collections::HashMap<String, String>> {
    let mut images = file.unwrap_or_default();
    for pair in flags.iter().filter(|pair| !pair.is_empty()) {
        let (name, image) = pair.split_once('=').filter(|(name, image)| !name.is_empty() && !image.is_empty()).ok_or_else(|| {
            anyhow::anyhow!("--buildpack-image `{pair}` is invalid: use NAME=IMAGE, such as static=busybox:1.36")
        })?;
        images.insert(name.to_string(), image.to_string());
    }
    let known: Vec<String> = builder::buildpacks::all()
        .into_iter()
        .map(|pack| pack.name)
        .collect();
    if let Some(unknown) = images.keys().find(|name| !known.contains(name)) {
        bail!(
            "--buildpack-image names `{unknown}`, which is not a buildpack: use one of {}",
            known.join(", ")
        );
    }
    Ok(images)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    #[test]
    fn defaults_match_the_design() {
        let config = UpConfig::resolve(UpFlags::default(), None).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/paz"));
        assert_eq!(config.etcd, None);
        assert_eq!(config.etcd_prefix, "/paz");
        assert_eq!(config.domain, "paz.localhost");
        assert_eq!(config.ssh_listen.to_string(), "0.0.0.0:2222");
        assert_eq!(config.registry_listen.to_string(), "0.0.0.0:5000");
        assert_eq!(config.http_listen.to_string(), "0.0.0.0:80");
        assert_eq!(config.api_listen.to_string(), "127.0.0.1:9000");
    }

    #[test]
    fn the_advertised_registry_is_a_host_and_maybe_a_port() {
        assert_eq!(
            advertised("Registry.Example.com").unwrap(),
            ("registry.example.com".to_string(), None)
        );
        assert_eq!(
            advertised("10.0.0.1:5000").unwrap(),
            ("10.0.0.1".to_string(), Some(5000))
        );
        for bad in [
            "",
            "http://registry.example.com",
            "registry.example.com/paz",
            "registry.example.com:",
            "registry.example.com:0",
            "registry.example.com:99999",
            "-bad.example.com",
            "a..b",
            "::1",
            "two words",
        ] {
            let message = format!("{:#}", advertised(bad).unwrap_err());
            assert_eq!(
                message,
                format!("--registry-advertise `{bad}` is invalid: use HOST or HOST:PORT, such as registry.example.com or 10.0.0.1:5000")
            );
        }
        let file = write("registry_advertise = \"paz1.internal\"\n");
        let config = UpConfig::resolve(UpFlags::default(), Some(file.path())).unwrap();
        assert_eq!(
            config.registry_advertise,
            Some(("paz1.internal".to_string(), None))
        );
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let file = write(
            "domain = \"file.example\"\netcd = \"http://a:1,http://b:2\"\nssh_listen = \"127.0.0.1:2200\"\n",
        );
        let flags = UpFlags {
            domain: Some("flag.example".to_string()),
            ..UpFlags::default()
        };
        let config = UpConfig::resolve(flags, Some(file.path())).unwrap();
        assert_eq!(config.domain, "flag.example");
        assert_eq!(config.etcd.unwrap(), ["http://a:1", "http://b:2"]);
        assert_eq!(config.ssh_listen.to_string(), "127.0.0.1:2200");
    }

    #[test]
    fn bad_settings_are_refused_with_what_to_use() {
        let error = |flags: UpFlags, file: Option<&str>| {
            let file = file.map(write);
            format!(
                "{:#}",
                UpConfig::resolve(flags, file.as_ref().map(|f| f.path())).unwrap_err()
            )
        };
        let message = error(
            UpFlags {
                ssh_listen: Some("nonsense".into()),
                ..UpFlags::default()
            },
            None,
        );
        assert_eq!(
            message,
            "--ssh-listen `nonsense` is invalid: use IP:PORT, such as 0.0.0.0:2222"
        );
        let message = error(
            UpFlags {
                domain: Some("Bad_Domain".into()),
                ..UpFlags::default()
            },
            None,
        );
        assert!(
            message.starts_with("--domain: domain `Bad_Domain` is invalid"),
            "{message}"
        );
        let message = error(UpFlags::default(), Some("data_dri = \"/x\"\n"));
        assert!(
            message.contains("is invalid") && message.contains("unknown field `data_dri`"),
            "{message}"
        );
        let message = error(
            UpFlags {
                etcd: Some(vec![" ".into()]),
                ..UpFlags::default()
            },
            None,
        );
        assert!(message.starts_with("--etcd is empty"), "{message}");
        let message = error(
            UpFlags {
                etcd_prefix: Some("paz".into()),
                ..UpFlags::default()
            },
            None,
        );
        assert!(
            message.starts_with("--etcd-prefix `paz` is invalid"),
            "{message}"
        );
        let missing =
            UpConfig::resolve(UpFlags::default(), Some(Path::new("/nonexistent/paz.toml")))
                .unwrap_err();
        assert!(format!("{missing:#}").starts_with("cannot read config file /nonexistent/paz.toml"));
    }
}

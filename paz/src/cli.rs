//! The command line: subcommands and flags, each flag also an env var `PAZ_<FLAG>`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "paz",
    version,
    about = "Paz: git push to deploy, on your own servers"
)]
pub(crate) struct Cli {
    /// A TOML file with the same settings as the flags (flags and env vars win).
    #[arg(long, env = "PAZ_CONFIG", global = true, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run all of Paz on this machine, with a local etcd unless --etcd is given.
    Up(UpFlags),
    /// Run the control roles (SSH and git, registry, builder, deployer, scheduler) against a shared etcd; no agent, no proxy.
    Server(UpFlags),
    /// Run the agent of this host: the units placed on it, through the local Docker Engine.
    Agent(AgentFlags),
    /// Run the HTTP proxy of this edge host: routes each app's hosts to its healthy instances.
    Proxy(ProxyFlags),
    /// Manage SSH keys on this host, against etcd directly (e.g. the first admin key).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Unit files on this host's disk.
    Units {
        #[command(subcommand)]
        command: UnitsCommand,
    },
    /// Make etcd's client TLS for several hosts into DIR: a CA, etcd's certificate (for 127.0.0.1, localhost and each --host) and Paz's client certificate, mode 0600.
    EtcdTls {
        /// Where the files go (made mode 0700); existing files are kept
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// A name or IP address etcd is reached at (repeatable)
        #[arg(long = "host", value_name = "HOST")]
        hosts: Vec<String>,
    },
    /// Manage the image registry on this host.
    Registry {
        #[command(subcommand)]
        command: RegistryCommand,
    },
    /// Run by git in each app repo; not for people.
    #[command(hide = true)]
    Hook {
        #[command(subcommand)]
        hook: HookCommand,
    },
    /// Keep the REST API's URL and a token (from tokens:create) for the verbs, in ~/.config/paz/credentials.
    Login {
        /// The API, e.g. http://127.0.0.1:9000
        #[arg(value_name = "URL")]
        url: String,
    },
    /// List the verbs, which run as `paz VERB ARGS` over the API (as `ssh paz@HOST VERB ARGS` does).
    Verbs,
    /// Any other name is a verb (apps:list, config:set APP K=V, ...), run over the API.
    #[command(external_subcommand)]
    Verb(Vec<String>),
}

#[derive(Debug, Args)]
pub(crate) struct AgentFlags {
    #[command(flatten)]
    pub(crate) store: StoreFlags,
    /// The address other hosts reach this machine's containers on [default: the one it reaches etcd from]
    #[arg(long, env = "PAZ_ADVERTISE_ADDR", value_name = "IP")]
    pub(crate) advertise_addr: Option<String>,
    /// This machine's metadata for [X-Fleet] MachineMetadata, e.g. region=eu,disk=ssd
    #[arg(
        long,
        env = "PAZ_METADATA",
        value_name = "K=V[,K=V]",
        value_delimiter = ','
    )]
    pub(crate) metadata: Vec<String>,
    /// Paz's registry, HOST:PORT, which images are pulled from with --registry-token
    #[arg(long, env = "PAZ_REGISTRY", value_name = "HOST:PORT")]
    pub(crate) registry: Option<String>,
    /// The machine token to pull with, NAME:SECRET (tokens:create NAME --role machine)
    #[arg(
        long,
        visible_alias = "token",
        env = "PAZ_REGISTRY_TOKEN",
        value_name = "NAME:SECRET"
    )]
    pub(crate) registry_token: Option<String>,
    /// Seconds between withdrawing an instance and stopping its container
    #[arg(long, env = "PAZ_DRAIN", default_value_t = 5, value_name = "SECONDS")]
    pub(crate) drain: u64,
    #[command(flatten)]
    pub(crate) logs: AgentEndpointFlags,
}

/// The agent's endpoint and the logs it keeps (`paz agent` and `paz up`).
#[derive(Debug, Default, Args)]
pub(crate) struct AgentEndpointFlags {
    /// Where the agent serves its instances' logs and stats (to Paz's server, with the cluster's agent secret) and its metrics [default: a free port on the advertised address]
    #[arg(long, env = "PAZ_AGENT_LISTEN", value_name = "ADDR")]
    pub(crate) agent_listen: Option<std::net::SocketAddr>,
    /// What each app may keep of its log on this host, e.g. 100m or 1g [default: 100m]
    #[arg(long, env = "PAZ_LOG_CAP", value_name = "SIZE", value_parser = agent::parse_log_cap)]
    pub(crate) log_cap: Option<u64>,
}

#[derive(Debug, Args)]
pub(crate) struct ProxyFlags {
    #[command(flatten)]
    pub(crate) store: StoreFlags,
    /// Where the proxy listens
    #[arg(
        long,
        env = "PAZ_HTTP_LISTEN",
        default_value = "0.0.0.0:80",
        value_name = "ADDR"
    )]
    pub(crate) http_listen: std::net::SocketAddr,
    /// The largest request body, in MiB [default: no limit; bodies stream]
    #[arg(long, env = "PAZ_MAX_BODY_MB", value_name = "MIB")]
    pub(crate) max_body_mb: Option<usize>,
    /// Where Prometheus metrics are served [default: not served]
    #[arg(long, env = "PAZ_METRICS_LISTEN", value_name = "ADDR")]
    pub(crate) metrics_listen: Option<std::net::SocketAddr>,
    /// The access log: a file, `-` for standard output, or `off`
    #[arg(long, env = "PAZ_ACCESS_LOG", value_name = "FILE", default_value = "-")]
    pub(crate) access_log: proxy::AccessLog,
    /// The HTTP/1 client that talks to the backends: direct (Paz's own codec), or hyper
    #[arg(
        long,
        env = "PAZ_BACKEND_HTTP",
        value_name = "CLIENT",
        default_value = "direct"
    )]
    pub(crate) backend_http: proxy::BackendHttp,
    /// Threads serving requests, each with its own event loop [default: one per CPU]
    #[arg(long, env = "PAZ_PROXY_WORKERS", value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub(crate) workers: Option<u16>,
    /// Where the proxy serves HTTPS, with the certificates in etcd, or `off`
    #[arg(
        long,
        env = "PAZ_HTTPS_LISTEN",
        default_value = "0.0.0.0:443",
        value_name = "ADDR"
    )]
    pub(crate) https_listen: String,
    #[command(flatten)]
    pub(crate) acme: AcmeFlags,
}

/// Certificates from an ACME CA (`paz proxy` and `paz up`).
#[derive(Debug, Default, Args)]
pub(crate) struct AcmeFlags {
    /// Order a certificate from ACME for every name Paz routes, with this contact email [default: no ACME]
    #[arg(long, env = "PAZ_ACME_EMAIL", value_name = "EMAIL")]
    pub(crate) acme_email: Option<String>,
    /// The ACME CA's directory [default: Let's Encrypt, https://acme-v02.api.letsencrypt.org/directory]
    #[arg(long, env = "PAZ_ACME_DIRECTORY", value_name = "URL")]
    pub(crate) acme_directory: Option<String>,
    /// A CA certificate (PEM) to trust for the directory's HTTPS, for a test CA such as pebble
    #[arg(long, env = "PAZ_ACME_CA_FILE", value_name = "FILE")]
    pub(crate) acme_ca_file: Option<PathBuf>,
    /// The wait after a failed order, doubled with each failure in a row up to a day, e.g. 5m [default: 5m]
    #[arg(long, env = "PAZ_ACME_BACKOFF", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) acme_backoff: Option<std::time::Duration>,
}

impl AcmeFlags {
    /// The ACME role's settings, if `--acme-email` turns it on.
    pub(crate) fn config(&self) -> anyhow::Result<Option<acme::AcmeConfig>> {
        let Some(email) = &self.acme_email else {
            if self.acme_directory.is_some() || self.acme_ca_file.is_some() {
                anyhow::bail!("--acme-directory and --acme-ca-file need --acme-email, the ACME account's contact");
            }
            return Ok(None);
        };
        if !email.contains('@') || email.chars().any(|c| c.is_whitespace() || c == ',') {
            anyhow::bail!("--acme-email `{email}` is not an email address: give the contact the CA writes to about expiring certificates");
        }
        let mut config = acme::AcmeConfig::new(email.clone());
        if let Some(directory) = &self.acme_directory {
            if !directory.starts_with("https://") {
                anyhow::bail!("--acme-directory `{directory}` is not an https:// URL: ACME is served over HTTPS");
            }
            config.directory = directory.clone();
        }
        if let Some(path) = &self.acme_ca_file {
            std::fs::metadata(path)
                .map_err(|error| anyhow::anyhow!("--acme-ca-file {}: {error}", path.display()))?;
            config.ca_file = Some(path.clone());
        }
        if let Some(backoff) = self.acme_backoff {
            if backoff.is_zero() {
                anyhow::bail!("--acme-backoff is zero: give a wait such as 5m, so a refused name is not asked for in a loop");
            }
            config.backoff = backoff;
        }
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|name| name.into_string().ok())
            .unwrap_or_else(|| "host".to_string());
        config.holder = format!("{host}:{}", std::process::id());
        Ok(Some(config))
    }
}

/// `--https-listen`: an address, or `off`.
pub(crate) fn https_listen(text: &str) -> anyhow::Result<Option<std::net::SocketAddr>> {
    match text.trim() {
        "off" => Ok(None),
        text => text.parse().map(Some).map_err(|_| {
            anyhow::anyhow!(
                "--https-listen `{text}` is invalid: use IP:PORT, such as 0.0.0.0:443, or `off`"
            )
        }),
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// Add the OpenSSH public key in FILE as NAME.
    Add(KeysAddFlags),
}

#[derive(Debug, Args)]
pub(crate) struct KeysAddFlags {
    /// The key's name, shown in logs and recorded on what it changes
    pub(crate) name: String,
    /// The public key file (e.g. ~/.ssh/id_ed25519.pub)
    pub(crate) file: PathBuf,
    /// admin: everything; deployer: push and manage the apps in --apps
    #[arg(long, default_value = "deployer", value_parser = ["admin", "deployer"])]
    pub(crate) role: String,
    /// The apps a deployer may use, comma-separated
    #[arg(long, value_delimiter = ',')]
    pub(crate) apps: Vec<String>,
    #[command(flatten)]
    pub(crate) store: StoreFlags,
}

/// Where local commands find etcd.
#[derive(Debug, Args)]
pub(crate) struct StoreFlags {
    /// The data dir of the paz up on this host, whose etcd URL it records [default: /var/lib/paz]
    #[arg(long, env = "PAZ_DATA_DIR", value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// etcd client URLs, comma-separated [default: the one paz up on this host uses]
    #[arg(
        long,
        env = "PAZ_ETCD",
        value_name = "URL[,URL]",
        value_delimiter = ','
    )]
    pub(crate) etcd: Option<Vec<String>>,
    /// The key prefix of this cluster in etcd
    #[arg(
        long,
        env = "PAZ_ETCD_PREFIX",
        default_value = "/paz",
        value_name = "PREFIX"
    )]
    pub(crate) etcd_prefix: String,
    /// etcd's client TLS: a directory with ca.pem, client.pem and client-key.pem [default: none; the local etcd of paz up uses its own]
    #[arg(long, env = "PAZ_ETCD_TLS", value_name = "DIR")]
    pub(crate) etcd_tls: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum UnitsCommand {
    /// Write APP's unit files into DIR, for a plain systemd or fleet host.
    Export {
        app: String,
        dir: PathBuf,
        #[command(flatten)]
        store: StoreFlags,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum RegistryCommand {
    /// Remove manifests and blobs no tag, release or upload refers to.
    Gc(GcFlags),
}

#[derive(Debug, Args)]
pub(crate) struct GcFlags {
    /// Only report what would be removed
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Leave anything younger than this many seconds (a push may be in flight)
    #[arg(long, default_value_t = 3600, value_name = "SECONDS")]
    pub(crate) min_age: u64,
    #[command(flatten)]
    pub(crate) store: StoreFlags,
}

#[derive(Debug, Subcommand)]
pub(crate) enum HookCommand {
    /// The pre-receive hook: hands the push to the running paz server.
    PreReceive,
}

/// `paz up` flags. Every one is optional here: the config file and the
/// defaults fill in what is not given (see `config.rs`).
#[derive(Debug, Default, Args)]
pub(crate) struct UpFlags {
    /// Everything Paz keeps on disk [default: /var/lib/paz]
    #[arg(long, env = "PAZ_DATA_DIR", value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,

    /// etcd client URLs, comma-separated [default: start a local etcd]
    #[arg(
        long,
        env = "PAZ_ETCD",
        value_name = "URL[,URL]",
        value_delimiter = ','
    )]
    pub(crate) etcd: Option<Vec<String>>,

    /// The key prefix of this cluster in etcd [default: /paz]
    #[arg(long, env = "PAZ_ETCD_PREFIX", value_name = "PREFIX")]
    pub(crate) etcd_prefix: Option<String>,

    /// etcd's client TLS: a directory with ca.pem, client.pem and client-key.pem [default: none; the local etcd of paz up uses its own]
    #[arg(long, env = "PAZ_ETCD_TLS", value_name = "DIR")]
    pub(crate) etcd_tls: Option<PathBuf>,

    /// Base domain: an app's URL is http://<app>.<domain> [default: paz.localhost]
    #[arg(long, env = "PAZ_DOMAIN", value_name = "DOMAIN")]
    pub(crate) domain: Option<String>,

    /// git push and SSH verbs [default: 0.0.0.0:2222]
    #[arg(long, env = "PAZ_SSH_LISTEN", value_name = "ADDR")]
    pub(crate) ssh_listen: Option<String>,

    /// Image registry and /hooks/* [default: 0.0.0.0:5000]
    #[arg(long, env = "PAZ_REGISTRY_LISTEN", value_name = "ADDR")]
    pub(crate) registry_listen: Option<String>,

    /// The registry as every host's Docker reaches it, HOST[:PORT] (port: the
    /// listen port), when that is not the listen address: a routable IP, or
    /// the name of a TLS proxy in front [default: the listen address]
    #[arg(long, env = "PAZ_REGISTRY_ADVERTISE", value_name = "HOST[:PORT]")]
    pub(crate) registry_advertise: Option<String>,

    /// The HTTP proxy in front of the apps [default: 0.0.0.0:80]
    #[arg(long, env = "PAZ_HTTP_LISTEN", value_name = "ADDR")]
    pub(crate) http_listen: Option<String>,

    /// The REST API (/api/v1) [default: 127.0.0.1:9000]
    #[arg(long, env = "PAZ_API_LISTEN", value_name = "ADDR")]
    pub(crate) api_listen: Option<String>,

    /// Adds this OpenSSH public key as admin `admin` if no admin key exists
    #[arg(long, env = "PAZ_ADMIN_KEY", value_name = "FILE")]
    pub(crate) admin_key: Option<PathBuf>,

    /// The base image of a buildpack, e.g. static=busybox:1.36 (repeatable)
    #[arg(
        long,
        env = "PAZ_BUILDPACK_IMAGE",
        value_name = "NAME=IMAGE",
        value_delimiter = ','
    )]
    pub(crate) buildpack_image: Vec<String>,

    /// The longest a build may take, in seconds [default: 1800]
    #[arg(long, env = "PAZ_BUILD_TIMEOUT", value_name = "SECONDS")]
    pub(crate) build_timeout: Option<u64>,

    /// How many builds run at once on this host [default: 1]
    #[arg(long, env = "PAZ_BUILD_CONCURRENCY", value_name = "N")]
    pub(crate) build_concurrency: Option<usize>,

    /// The largest build context, in MiB [default: 1024]
    #[arg(long, env = "PAZ_MAX_CONTEXT_MB", value_name = "MIB")]
    pub(crate) max_context_mb: Option<u64>,

    /// Where the proxy's Prometheus metrics are served, or `off` [default: a free port on 127.0.0.1, found through /api/v1/prometheus/targets]
    #[arg(long, env = "PAZ_METRICS_LISTEN", value_name = "ADDR")]
    pub(crate) metrics_listen: Option<String>,

    /// How long a new instance may take to pass its health check during a deploy, in seconds [default: 60]
    #[arg(long, env = "PAZ_DEPLOY_TIMEOUT", value_name = "SECONDS")]
    pub(crate) deploy_timeout: Option<u64>,

    /// New instances started before old ones are removed, in a deploy [default: 1]
    #[arg(long, env = "PAZ_DEPLOY_BATCH", value_name = "N")]
    pub(crate) deploy_batch: Option<u64>,

    /// The proxy's access log: a file, `-` for standard output, or `off` [default: -]
    #[arg(long, env = "PAZ_ACCESS_LOG", value_name = "FILE")]
    pub(crate) access_log: Option<String>,

    /// The HTTP/1 client that talks to the backends: direct (Paz's own codec), or hyper
    #[arg(
        long,
        env = "PAZ_BACKEND_HTTP",
        value_name = "CLIENT",
        default_value = "direct"
    )]
    pub(crate) backend_http: proxy::BackendHttp,

    /// The proxy over TLS, or `off` [default: 0.0.0.0:443]
    #[arg(long, env = "PAZ_HTTPS_LISTEN", value_name = "ADDR")]
    pub(crate) https_listen: Option<String>,

    /// Publish the API and web UI as paz.<domain> and the registry as registry.<domain> through every proxy (with their certificates)
    #[arg(long, env = "PAZ_PUBLISH_ENDPOINTS")]
    pub(crate) publish_endpoints: bool,

    #[command(flatten)]
    pub(crate) acme: AcmeFlags,

    #[command(flatten)]
    pub(crate) agent: AgentEndpointFlags,
}

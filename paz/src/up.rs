//! `paz up`: all of Paz on one machine. Starts a local etcd unless `--etcd` is
//! given, prepares the cluster state, runs until SIGINT or SIGTERM, then shuts
//! down in order: the roles first, etcd last.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use store::{LocalEtcd, Store, StoreConfig};
use tracing::{error, info, warn};

use crate::admin_key;
use crate::config::UpConfig;
use crate::deploy::BuildAndRelease;

/// How long shutdown may take before Paz kills what is left.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);

pub(crate) async fn run(config: UpConfig) -> anyhow::Result<()> {
    info!(
        data_dir = %config.data_dir.display(),
        etcd = ?config.etcd,
        etcd_prefix = %config.etcd_prefix,
        domain = %config.domain,
        ssh_listen = %config.ssh_listen,
        registry_listen = %config.registry_listen,
        http_listen = %config.http_listen,
        api_listen = %config.api_listen,
        "starting paz up"
    );
    // Read the admin key before starting anything, so a bad file changes nothing.
    let admin_key = match &config.admin_key {
        Some(path) => Some(admin_key::read(path)?),
        None => None,
    };
    crate::private_data_dir(&config.data_dir)?;
    let _lock = lock_data_dir(&config.data_dir)?;

    let mut local_etcd = None;
    let (endpoints, tls) = match &config.etcd {
        Some(endpoints) => (
            endpoints.clone(),
            config.etcd_tls.as_deref().map(store::TlsFiles::in_dir),
        ),
        None => {
            // Only who can read Paz's client certificate gets an answer.
            let etcd = LocalEtcd::start_with_tls(
                &config.data_dir.join("etcd"),
                &config.data_dir.join(crate::LOCAL_ETCD_TLS),
            )
            .await
            .context("cannot start the local etcd")?;
            let url = etcd.client_url();
            let tls = etcd.client_tls();
            local_etcd = Some(etcd);
            (vec![url], tls)
        }
    };
    let outcome = run_roles(
        &config,
        (endpoints, tls),
        admin_key.as_ref(),
        local_etcd.as_mut(),
    )
    .await;

    // etcd goes last: the roles above have stopped using it.
    if let Some(etcd) = local_etcd.as_mut() {
        let _ = std::fs::remove_file(config.data_dir.join("etcd.url"));
        if tokio::time::timeout(SHUTDOWN_TIMEOUT, etcd.stop())
            .await
            .is_err()
        {
            warn!("etcd did not stop in time; killing it");
            etcd.kill();
        }
        info!("local etcd stopped");
    }
    outcome
}

/// Runs the roles until a signal (or the death of the local etcd), then stops
/// them in order.
async fn run_roles(
    config: &UpConfig,
    endpoints: (Vec<String>, Option<store::TlsFiles>),
    admin_key: Option<&store::records::SshKey>,
    local_etcd: Option<&mut LocalEtcd>,
) -> anyhow::Result<()> {
    if let Some(etcd) = local_etcd.as_deref() {
        write_atomically(&config.data_dir.join("etcd.url"), &etcd.client_url())?;
    }
    let store = prepare(config, endpoints, admin_key).await?;
    let ssh_listener = tokio::net::TcpListener::bind(config.ssh_listen)
        .await
        .with_context(|| format!("cannot listen on --ssh-listen {}", config.ssh_listen))?;
    let ssh_addr = ssh_listener.local_addr()?;
    let registry_listener = tokio::net::TcpListener::bind(config.registry_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on --registry-listen {}",
                config.registry_listen
            )
        })?;
    let registry_addr = registry_listener.local_addr()?;
    let registry_host = registry_host(registry_addr, config.registry_advertise.as_ref());
    let mut tokens = issue_internal_tokens(&store, &config.data_dir, &registry_host).await?;
    let builder_login = tokens.remove("builder").expect("issued above");
    let agent_login = tokens.remove("agent").expect("issued above");
    let mut builder_config = builder::BuilderConfig::new(config.data_dir.clone(), builder_login);
    builder_config.base_images = config.buildpack_images.clone();
    builder_config.timeout = config.build_timeout;
    builder_config.concurrency = config.build_concurrency;
    builder_config.context_limit = config.max_context_bytes;
    // What the builder pushes is in Paz's registry: no other is asked.
    let registry_root = config.data_dir.join("registry");
    builder_config.images = Some(Arc::new(crate::images::Images {
        storage: registry::Storage::new(registry_root.clone()),
        registry_host: registry_host.clone(),
        builder: None,
    }));
    let builder = builder::Builder::new(builder_config, store.clone());
    let hook_program =
        std::env::current_exe().context("cannot find the paz binary for git hooks")?;
    let deployer = deployer::Deployer::new(
        store.clone(),
        deployer::DeployConfig {
            health_timeout: config.deploy_timeout,
            batch: config.deploy_batch,
        },
    )
    .with_release_phase(Arc::new(crate::deploy::BuilderReleasePhase(
        builder.clone(),
    )))
    .with_images(Arc::new(crate::images::Images {
        storage: registry::Storage::new(registry_root.clone()),
        registry_host: registry_host.clone(),
        builder: Some(builder.clone()),
    }));
    // Seals the tokens' webhook signing secrets; never in etcd. Control
    // hosts that take webhooks share it (copy it, mode 0600).
    let hooks_key_path = config.data_dir.join("hooks.key");
    let hook_key = Arc::new(
        store::HookKey::load_or_create(&hooks_key_path)
            .with_context(|| format!("cannot read or make {}", hooks_key_path.display()))?,
    );
    let rollouts: Arc<dyn verbs::Rollouts> = Arc::new(crate::deploy::Rollouts(deployer.clone()));
    let mut gitd_config = gitd::GitdConfig::new(config.data_dir.clone(), hook_program);
    gitd_config.rollouts = Some(rollouts.clone());
    gitd_config.hooks = Some(hook_key.clone());
    let api_context = verbs::Context {
        store: store.clone(),
        data_dir: config.data_dir.clone(),
        rollouts: Some(rollouts),
        hooks: Some(hook_key.clone()),
        clock: verbs::Clock::System,
        rollout_record: None,
    };
    let gitd = gitd::Gitd::new(
        gitd_config,
        store.clone(),
        Arc::new(BuildAndRelease {
            builder,
            deployer: deployer.clone(),
        }),
    )?;
    // A flood of the proxy or the registry leaves descriptors for SSH, the
    // builder, the agent, etcd and Docker.
    let caps = crate::descriptors::shared(crate::descriptors::limit());
    let registry = registry::Registry::new(registry_root.clone(), store.clone())
        .with_max_connections(caps.registry)
        .with_hook_key(hook_key)
        .with_host(registry_host.clone());
    // The API checks tokens against the registry's cache of them.
    let api = api::Api::new(api_context, registry.tokens());
    // The web UI at the root of --api-listen, the API under /api/v1.
    let web = web::Web::new(api, Some(registry_root));
    let api_listener = tokio::net::TcpListener::bind(config.api_listen)
        .await
        .with_context(|| format!("cannot listen on --api-listen {}", config.api_listen))?;
    let api_addr = api_listener.local_addr()?;

    let mut roles = crate::roles::Roles::new();
    roles.spawn("SSH server", |stop| gitd.serve(ssh_listener, stop));
    let advertise =
        crate::agent::address_towards(store.endpoints().split(',').next().unwrap_or_default())?;
    let mut agent_config = agent::AgentConfig::new(config.data_dir.clone(), advertise);
    agent_config.registry = Some(agent_login);
    agent_config.endpoint_listen = config.agent_listen;
    agent_config.log_cap = config.log_cap;
    if !config.server_only {
        match agent::Agent::new(agent_config, store.clone()).await {
            Ok(agent) => roles.spawn("agent", |stop| agent.run(stop)),
            Err(reason) => {
                warn!(%reason, "no agent on this host: apps cannot run here until Docker runs");
            }
        }
    }
    roles.spawn("registry", |stop| registry.serve(registry_listener, stop));
    roles.spawn("API and web UI", |stop| web.serve(api_listener, stop));
    let candidate = format!("{}:{}", advertise_host(&store), std::process::id());
    let scheduler = deployer::Scheduler::new(
        store.clone(),
        deployer::SchedulerConfig {
            candidate: candidate.clone(),
            lease_ttl: Duration::from_secs(10),
        },
    );
    roles.spawn("scheduler", |stop| async move {
        // Tests make the role fail here (`FAILPOINTS=scheduler=return`).
        fail::fail_point!("scheduler", |_| Err(anyhow::anyhow!(
            "failed at its failpoint"
        )));
        scheduler.run(stop).await;
        Ok::<(), anyhow::Error>(())
    });
    let follower = deployer::ImageFollower::new(
        store.clone(),
        deployer.clone(),
        deployer::FollowConfig {
            candidate,
            registry_host: Some(registry_host.clone()),
            // Every server's builder, not only this one's: any server may
            // claim the event of another's push.
            ignore_by: vec![BUILDER_TOKEN_PREFIX.to_string()],
        },
    );
    roles.spawn("image follower", |stop| async move {
        follower.run(stop).await;
        Ok::<(), std::convert::Infallible>(())
    });
    // Shutdown waits for the proxy's drain (none without a proxy).
    let mut proxy_drain = Duration::ZERO;
    let mut https_addr = None;
    if config.publish_endpoints {
        let published = crate::publish_endpoints(&store, api_addr, registry_addr).await?;
        roles.spawn("published endpoints", |stop| async move {
            stop.await;
            drop(published);
            Ok::<(), std::convert::Infallible>(())
        });
    }
    let http_addr = if config.server_only {
        None
    } else {
        let http_listener = tokio::net::TcpListener::bind(config.http_listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on --http-listen {} (ports below 1024 need root)",
                    config.http_listen
                )
            })?;
        let http_addr = http_listener.local_addr()?;
        let https_listener = crate::bind_https(config.https_listen).await?;
        https_addr = https_listener
            .as_ref()
            .map(|listener| listener.local_addr())
            .transpose()?;
        if let Some(acme) = config.acme.clone() {
            let role = tokio::spawn(acme::run(store.clone(), acme));
            roles.spawn("ACME", |stop| async move {
                stop.await;
                role.abort();
                Ok::<(), std::convert::Infallible>(())
            });
        }
        let proxy_config = proxy::ProxyConfig {
            access_log: config.access_log.clone(),
            max_connections: caps.proxy,
            backend_http: config.backend_http,
            ..Default::default()
        };
        proxy_drain = proxy_config.shutdown_timeout;
        let proxy = proxy::Proxy::new(proxy_config, store.clone())?;
        if let Some(mut metrics) =
            crate::serve_proxy_metrics(&proxy, &store, config.metrics_listen).await?
        {
            roles.spawn("metrics server", |stop| async move {
                tokio::select! {
                    () = stop => {
                        metrics.abort();
                        Ok(())
                    }
                    ended = &mut metrics => Err(anyhow::anyhow!("it stopped accepting: {ended:?}")),
                }
            });
        }
        let listeners = proxy::Listeners {
            http: http_listener.into_std()?,
            https: https_listener.map(|l| l.into_std()).transpose()?,
        };
        roles.spawn("proxy", |stop| proxy.serve_threads(listeners, None, stop));
        Some(http_addr)
    };

    // Only the banner needs them: a failed read leaves its admin lines out.
    let admins = admin_key::admins(&store).await.unwrap_or_else(|error| {
        warn!(%error, "cannot list the admin keys for the banner");
        Vec::new()
    });
    let listening = Addresses {
        pid: std::process::id(),
        etcd: local_etcd
            .as_deref()
            .map_or_else(|| store.endpoints().to_string(), LocalEtcd::client_url),
        etcd_pid: local_etcd.as_deref().and_then(LocalEtcd::pid),
        etcd_tls: local_etcd.as_deref().and_then(LocalEtcd::client_tls),
        ssh: ssh_addr,
        registry: registry_addr,
        http: http_addr,
        https: https_addr,
        api: api_addr,
    };
    listening.write(&config.data_dir)?;
    print_banner(
        config,
        &store,
        &admins,
        local_etcd.as_deref(),
        ssh_addr,
        (registry_addr, &registry_host),
        (http_addr, https_addr),
    );
    // One deadline for every role, longer than the proxy's drain.
    roles
        .run_until(
            wait_for_shutdown(local_etcd),
            proxy_drain + Duration::from_secs(5),
        )
        .await
}

/// What listens where, for scripts and tests: `<data-dir>/addresses.json`,
/// written whole before the banner says that Paz is up.
#[derive(Debug, serde::Serialize)]
struct Addresses {
    pid: u32,
    /// The etcd Paz uses (its local one's client URL, or `--etcd`).
    etcd: String,
    /// The local etcd's process, if Paz runs one.
    etcd_pid: Option<u32>,
    /// The local etcd's client certificates, when it speaks TLS.
    etcd_tls: Option<store::TlsFiles>,
    ssh: SocketAddr,
    registry: SocketAddr,
    /// The proxy (`paz up`); none for `paz server`.
    http: Option<SocketAddr>,
    /// The proxy over TLS; none for `paz server` or `--https-listen off`.
    https: Option<SocketAddr>,
    /// The REST API.
    api: SocketAddr,
}

impl Addresses {
    fn write(&self, data_dir: &Path) -> anyhow::Result<()> {
        let path = data_dir.join("addresses.json");
        let json = serde_json::to_vec_pretty(self)?;
        support::write_file(&path, &json)
            .with_context(|| format!("cannot write {}", path.display()))
    }
}

/// This host's name for the scheduler's leader key (who leads is then visible).
fn advertise_host(store: &Store) -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .unwrap_or_else(|| store.endpoints().to_string())
}

/// How the builders' internal tokens are named: `paz-builder-HOST`.
const BUILDER_TOKEN_PREFIX: &str = "paz-builder-";

/// The registry credentials of this Paz's own builder (`paz-builder-HOST`,
/// admin: pushes every app's images) and agent (`paz-agent-HOST`, machine:
/// pulls only), named after this data dir's machine id so that two servers
/// on one etcd never replace each other's. New secrets every start; only
/// their hashes go to etcd, the secrets to `<data-dir>/internal-tokens.json`
/// (mode 0600) for the roles on this host.
async fn issue_internal_tokens(
    store: &Store,
    data_dir: &Path,
    registry: &str,
) -> anyhow::Result<HashMap<&'static str, engine::RegistryLogin>> {
    let mut secrets = serde_json::Map::new();
    let mut issued = HashMap::new();
    let host = agent::machine_id(data_dir)
        .with_context(|| format!("cannot read or make {}/machine-id", data_dir.display()))?;
    let host: String = host.chars().take(12).collect();
    // The names of earlier versions, one for every server: never valid again.
    for legacy in ["paz-builder", "paz-agent"] {
        store.delete(&store.keys().token(legacy)?).await?;
    }
    for (role_name, role) in [
        ("builder", store::records::Role::Admin),
        ("agent", store::records::Role::Machine),
    ] {
        let name = &format!("paz-{role_name}-{host}");
        let (token, secret) = store::records::Token::create(name, role, Vec::new());
        store.put(&store.keys().token(name)?, &token).await?;
        secrets.insert(
            role_name.to_string(),
            serde_json::json!({"name": name, "secret": secret}),
        );
        let login = engine::RegistryLogin {
            registry: registry.to_string(),
            name: name.to_string(),
            secret,
        };
        issued.insert(role_name, login);
    }
    let path = data_dir.join("internal-tokens.json");
    let text = serde_json::Value::Object(secrets).to_string();
    support::write_private_file(&path, text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(issued)
}

/// Where every host's Docker Engine reaches the registry (what image names
/// start with): the advertised address, else the listen address, with
/// loopback when the registry listens on every address (Docker trusts plain
/// HTTP there).
fn registry_host(listening: SocketAddr, advertised: Option<&(String, Option<u16>)>) -> String {
    if let Some((host, port)) = advertised {
        return format!("{host}:{}", port.unwrap_or(listening.port()));
    }
    if listening.ip().is_unspecified() || listening.ip().is_loopback() {
        format!("127.0.0.1:{}", listening.port())
    } else {
        listening.to_string()
    }
}

/// Writes `text` to `path` whole (a temp file, synced and renamed).
fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    support::write_file(path, text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Connects to the store and writes the settings the cluster shares.
async fn prepare(
    config: &UpConfig,
    (endpoints, tls): (Vec<String>, Option<store::TlsFiles>),
    admin_key: Option<&store::records::SshKey>,
) -> anyhow::Result<Store> {
    let mut store_config = StoreConfig::new(endpoints);
    store_config.prefix = config.etcd_prefix.clone();
    store_config.tls = tls;
    let store = Store::connect(store_config).await?;
    let domain_key = store.keys().domain();
    let current = store.get(&domain_key).await?;
    if current.as_ref().map(|d| &d.value) != Some(&config.domain) {
        store.put(&domain_key, &config.domain).await?;
        info!(domain = %config.domain, "base domain set");
    }
    if let Some(key) = admin_key {
        if admin_key::add_if_no_admin(&store, key).await? {
            info!(fingerprint = %key.fingerprint, "admin key added as `admin`");
        } else {
            info!("an admin key exists already; --admin-key left unused");
        }
    }
    Ok(store)
}

/// Resolves on SIGINT or SIGTERM (Ok), or when the local etcd dies (Err).
async fn wait_for_shutdown(mut local_etcd: Option<&mut LocalEtcd>) -> anyhow::Result<()> {
    // One signal future for the whole wait, so no signal falls between two checks.
    let stop = crate::stop_signal();
    tokio::pin!(stop);
    let mut check = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(()),
            _ = check.tick() => {
                if let Some(status) = local_etcd.as_mut().and_then(|etcd| etcd.exit_status()) {
                    error!(%status, "the local etcd exited");
                    let log = local_etcd.as_ref().map(|etcd| etcd.log_path().display().to_string());
                    bail!("the local etcd exited ({status}); see {}", log.unwrap_or_default());
                }
            }
        }
    }
}

/// Holds an exclusive lock on `<data-dir>/paz.lock` for as long as Paz runs, so
/// two Paz processes never share one data dir (and one etcd data dir).
fn lock_data_dir(data_dir: &Path) -> anyhow::Result<File> {
    let path = data_dir.join("paz.lock");
    let mut file = File::options()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    if file.try_lock().is_err() {
        let holder = std::fs::read_to_string(&path).unwrap_or_default();
        bail!(
            "another paz (pid {}) is using data dir {}: stop it or choose another --data-dir",
            holder.trim(),
            data_dir.display()
        );
    }
    file.set_len(0)?;
    write!(file, "{}", std::process::id())?;
    Ok(file)
}

fn print_banner(
    config: &UpConfig,
    store: &Store,
    admins: &[store::records::SshKey],
    local_etcd: Option<&LocalEtcd>,
    ssh: SocketAddr,
    (registry, registry_host): (SocketAddr, &str),
    (http, https): (Option<SocketAddr>, Option<SocketAddr>),
) {
    let etcd = match local_etcd {
        Some(etcd) => format!(
            "{} (local, pid {}, data in {})",
            etcd.client_url(),
            etcd.pid().unwrap_or_default(),
            etcd.data_dir().display()
        ),
        None => store.endpoints().to_string(),
    };
    println!("paz is up");
    println!("  etcd      {etcd}");
    println!("  prefix    {}", config.etcd_prefix);
    println!("  data dir  {}", config.data_dir.display());
    println!("  domain    {}", config.domain);
    println!(
        "  ssh       {ssh}   git remote: ssh://paz@HOST:{}/APP",
        ssh.port()
    );
    match &config.registry_advertise {
        Some(_) => println!("  registry  {registry}   docker login {registry_host} -u TOKEN-NAME"),
        None => println!(
            "  registry  {registry}   docker login HOST:{} -u TOKEN-NAME",
            registry.port()
        ),
    }
    match http {
        Some(http) => println!("  http      {http}   apps at http://APP.{}", config.domain),
        None => println!("  http      (paz server: run paz proxy on the edge hosts)"),
    }
    if let Some(https) = https {
        let acme = match &config.acme {
            Some(acme) => format!("certificates from {}", acme.directory),
            None => "certificates from certs:add (no --acme-email)".to_string(),
        };
        println!("  https     {https}   {acme}");
    }
    if config.publish_endpoints {
        println!(
            "  published paz.{0} (API and web UI), registry.{0} (registry)",
            config.domain
        );
    }
    match admins {
        [] => {
            // `paz keys add` finds a local etcd through the data dir; a shared
            // one must be named, with this cluster's prefix.
            let reach = match local_etcd {
                Some(_) => format!("--data-dir {}", config.data_dir.display()),
                None => format!("--etcd {}", store.endpoints()),
            };
            let prefix = if config.etcd_prefix == "/paz" {
                String::new()
            } else {
                format!(" --etcd-prefix {}", config.etcd_prefix)
            };
            println!(
                "  admin     no admin key yet: paz keys add admin ~/.ssh/id_ed25519.pub --role admin {reach}{prefix}"
            );
        }
        keys => {
            for key in keys {
                println!("  admin     {} ({})", key.fingerprint, key.name);
            }
        }
    }
    let app_url = match http {
        Some(http) if http.port() != 80 => {
            format!("http://myapp.{}:{}", config.domain, http.port())
        }
        _ => format!("http://myapp.{}", config.domain),
    };
    println!("next steps (from the machine holding the admin key):");
    println!("  1. ssh -p {} paz@HOST apps:create myapp", ssh.port());
    println!(
        "  2. git remote add paz ssh://paz@HOST:{}/myapp",
        ssh.port()
    );
    println!("  3. git push paz main");
    match http {
        Some(_) => println!(
            "  4. curl {app_url}   (with wildcard DNS for *.{0} to this host, or myapp.{0} in /etc/hosts)",
            config.domain
        ),
        None => println!("  4. open {app_url} through a paz proxy on an edge host"),
    }
    println!("stop with Ctrl-C");
}

//! The `paz` binary: parses the command line, sets up logging, runs the role.

#![forbid(unsafe_code)]

mod admin_key;
mod agent;
mod cli;
mod client;
mod config;
mod deploy;
mod descriptors;
mod images;
mod keys;
mod one_off;
mod progress;
mod roles;
mod up;

use clap::Parser;

/// mimalloc: the proxy allocates per request, and glibc's allocator is the slower one there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Resolves on SIGINT or SIGTERM: how the long-running commands are stopped.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut interrupt), Ok(mut terminate)) => {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        }
        // Without signal handlers the default action (exit) applies anyway.
        _ => std::future::pending().await,
    }
}

/// Serves the proxy's metrics on `--metrics-listen`, if given, until the
/// returned task is dropped with the proxy's role; meanwhile the proxy is
/// registered at `/paz/proxies/<id>` (on a lease), where the server's
/// Prometheus service discovery finds it.
async fn serve_proxy_metrics(
    proxy: &proxy::Proxy,
    store: &store::Store,
    address: Option<std::net::SocketAddr>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    use anyhow::Context;
    let Some(address) = address else {
        return Ok(None);
    };
    let metrics = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on --metrics-listen {address}"))?;
    let bound = metrics.local_addr()?;
    println!("metrics on http://{bound}/metrics");
    let host = if bound.ip().is_unspecified() {
        crate::agent::address_towards(store.endpoints().split(',').next().unwrap_or_default())?
    } else {
        bound.ip().to_string()
    };
    let record = store::records::ProxyRecord {
        metrics: std::net::SocketAddr::new(host.parse()?, bound.port()).to_string(),
        started_at: support::now(),
    };
    let id = hex::encode(rand::random::<[u8; 8]>());
    let registration = store
        .register(
            &store.keys().proxy(&id)?,
            &record,
            std::time::Duration::from_secs(10),
        )
        .await
        .context("cannot register this proxy's metrics in etcd")?;
    let served = proxy.serve_metrics(metrics);
    Ok(Some(tokio::spawn(async move {
        // Aborting this task stops the server too, and ends the registration.
        struct Serving(tokio::task::JoinHandle<()>);
        impl Drop for Serving {
            fn drop(&mut self) {
                self.0.abort();
            }
        }
        let _registration = registration;
        let mut serving = Serving(served);
        let _ = (&mut serving.0).await;
    })))
}

/// `paz proxy`: the proxy alone, until SIGINT or SIGTERM.
async fn run_proxy(flags: cli::ProxyFlags) -> anyhow::Result<()> {
    use anyhow::Context;
    let (store, _) = keys::connect(&flags.store).await?;
    let listener = tokio::net::TcpListener::bind(flags.http_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on --http-listen {} (ports below 1024 need root)",
                flags.http_listen
            )
        })?;
    let config = proxy::ProxyConfig {
        max_body_bytes: flags.max_body_mb.map(|mib| mib << 20),
        access_log: flags.access_log,
        max_connections: descriptors::proxy_alone(descriptors::limit()),
        backend_http: flags.backend_http,
        ..Default::default()
    };
    let https = bind_https(cli::https_listen(&flags.https_listen)?).await?;
    let acme = flags.acme.config()?;
    println!("proxy listening on {}", listener.local_addr()?);
    if let Some(https) = &https {
        println!("proxy serving HTTPS on {}", https.local_addr()?);
    }
    let proxy = proxy::Proxy::new(config, store.clone())?;
    let _metrics = serve_proxy_metrics(&proxy, &store, flags.metrics_listen).await?;
    // Ends with this function: the role goes with the proxy.
    let _acme = acme.map(|acme| AbortOnDrop(tokio::spawn(acme::run(store.clone(), acme))));
    let listeners = proxy::Listeners {
        http: listener.into_std()?,
        https: https.map(|l| l.into_std()).transpose()?,
    };
    proxy
        .serve_threads(listeners, flags.workers, stop_signal())
        .await?;
    Ok(())
}

/// A task that ends when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Binds `--https-listen`, if it is not `off`.
async fn bind_https(
    address: Option<std::net::SocketAddr>,
) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    use anyhow::Context;
    let Some(address) = address else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| {
            format!("cannot listen on --https-listen {address} (ports below 1024 need root; `off` serves no HTTPS)")
        })?;
    Ok(Some(listener))
}

/// Publishes the API (as `paz.<domain>`) and the registry (as
/// `registry.<domain>`) for every proxy to route, at the addresses other
/// hosts reach them on, while the returned registrations live.
async fn publish_endpoints(
    store: &store::Store,
    api: std::net::SocketAddr,
    registry: std::net::SocketAddr,
) -> anyhow::Result<Vec<store::Registration>> {
    use anyhow::Context;
    let mut published = Vec::new();
    let server = hex::encode(rand::random::<[u8; 8]>());
    let etcd = store.endpoints().split(',').next().unwrap_or_default();
    for (label, address) in [("paz", api), ("registry", registry)] {
        let host = if address.ip().is_unspecified() {
            crate::agent::address_towards(etcd)?
        } else {
            address.ip().to_string()
        };
        let reachable = std::net::SocketAddr::new(host.parse()?, address.port());
        if reachable.ip().is_loopback()
            && !etcd.contains("127.0.0.1")
            && !etcd.contains("localhost")
        {
            tracing::warn!(%reachable, label, "published on a loopback address: only a proxy on this host reaches it (give --api-listen / --registry-listen an address the edge hosts reach)");
        }
        let reachable = reachable.to_string();
        published.push(
            store
                .register(
                    &store.keys().endpoint(label, &server)?,
                    &reachable,
                    std::time::Duration::from_secs(10),
                )
                .await
                .with_context(|| format!("cannot publish {label}.<domain> in etcd"))?,
        );
    }
    Ok(published)
}

/// `paz units export APP DIR`: each unit file written whole (temp file, rename).
async fn export_units(
    app: &str,
    dir: &std::path::Path,
    flags: &cli::StoreFlags,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let app = store::AppName::new(app)?;
    let (store, _) = keys::connect(flags).await?;
    let units = verbs::cluster::app_units(&store, &app).await?;
    if units.is_empty() {
        anyhow::bail!("app {app} has no units: nothing was written");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, text) in &units {
        let path = dir.join(name);
        support::write_file(&path, text.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(())
}

/// Where `paz up` keeps its local etcd's certificates, under the data dir.
pub(crate) const LOCAL_ETCD_TLS: &str = "etcd-tls";

/// Makes `dir` (the data dir) private to Paz's user: made mode 0700, or set
/// to it, and what this process creates from now on is 0600/0700 (umask
/// 077). App sources, build logs, registry blobs, tokens and etcd's
/// certificates live there.
pub(crate) fn private_data_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let cannot = || {
        format!(
            "cannot create data dir {}: choose another with --data-dir",
            dir.display()
        )
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(cannot)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot make data dir {} private (mode 0700)", dir.display()))
}

/// `paz registry gc`: runs against the registry files of the data dir.
async fn registry_gc(flags: cli::GcFlags) -> anyhow::Result<()> {
    let (store, data_dir) = keys::connect(&flags.store).await?;
    let storage = registry::Storage::new(data_dir.join("registry"));
    let min_age = std::time::Duration::from_secs(flags.min_age);
    let report = registry::collect(&storage, &store, flags.dry_run, min_age).await?;
    let verb = if flags.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for manifest in &report.manifests {
        println!("{verb} manifest {manifest}");
    }
    println!(
        "{verb} {} manifests, {} blobs ({} bytes), {} abandoned uploads",
        report.manifests.len(),
        report.blobs.len(),
        report.bytes,
        report.uploads
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    // The hook's output goes to the pusher: no logging setup, nothing extra.
    if let cli::Command::Hook {
        hook: cli::HookCommand::PreReceive,
    } = cli.command
    {
        return std::process::ExitCode::from(gitd::pre_receive_main().clamp(0, 255) as u8);
    }
    // Log lines (one per proxied request, among others) are written by a
    // thread of their own, so no request waits for stderr.
    let (writer, _flush_on_exit) = tracing_appender::non_blocking(std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PAZ_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(writer)
        .init();
    // Failpoints exist only in test builds (the `failpoints` feature, from
    // the dev-dependencies); in a release build this reads nothing.
    let _failpoints = fail::FailScenario::setup();
    descriptors::raise_limit();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("paz: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            cli::Command::Up(flags) => {
                let config = config::UpConfig::resolve(flags, cli.config.as_deref())?;
                up::run(config).await
            }
            cli::Command::Server(flags) => {
                let mut config = config::UpConfig::resolve(flags, cli.config.as_deref())?;
                if config.etcd.is_none() {
                    anyhow::bail!("paz server needs --etcd URL, the etcd the hosts share; paz up runs its own etcd for one host");
                }
                if config.acme.is_some() {
                    anyhow::bail!("--acme-email is for the edge hosts: paz server runs no proxy; give it to paz proxy");
                }
                config.server_only = true;
                up::run(config).await
            }
            cli::Command::Keys {
                command: cli::KeysCommand::Add(flags),
            } => keys::add(flags).await,
            cli::Command::Agent(flags) => agent::run(flags).await,
            cli::Command::Proxy(flags) => run_proxy(flags).await,
            cli::Command::Units {
                command: cli::UnitsCommand::Export { app, dir, store },
            } => export_units(&app, &dir, &store).await,
            cli::Command::Registry {
                command: cli::RegistryCommand::Gc(flags),
            } => registry_gc(flags).await,
            cli::Command::EtcdTls { dir, hosts } => {
                let tls = store::EtcdTls::ensure(&dir, &hosts)?;
                let client = tls.client();
                println!("etcd:    --client-cert-auth --trusted-ca-file {} --cert-file {} --key-file {}", client.ca.display(), tls.server_cert().display(), tls.server_key().display());
                println!("paz:     --etcd https://HOST:2379 --etcd-tls {} (copy ca.pem, client.pem and client-key.pem to each host, mode 0600)", dir.display());
                Ok(())
            }
            cli::Command::Login { url } => client::login(&url).await,
            cli::Command::Verbs => client::run(vec!["help".to_string()]).await,
            cli::Command::Verb(words) => client::run(words).await,
            cli::Command::Hook { .. } => unreachable!("handled before the runtime starts"),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("paz: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

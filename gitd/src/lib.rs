//! Paz's SSH server, the only user of russh: public-key auth against
//! `/paz/keys`, `git push` / `git clone` over the real git, the `pre-receive`
//! deploy hook, and the SSH verbs.
//!
//! A component in the mini-redis manner: [`Gitd::serve`] takes an already
//! bound listener and a shutdown future.

#![forbid(unsafe_code)]

mod command;
mod deploy;
mod git;
mod hook;
mod hostkey;
mod server;

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use store::Store;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{info, warn, Instrument};

pub use deploy::{DeployHandler, Output, Push, Pusher};
pub use hook::pre_receive_main;

use server::{Connection, Shared};

/// Why gitd could not start.
#[derive(Debug, thiserror::Error)]
pub enum GitdError {
    #[error("cannot use the SSH host key {path}: {reason}")]
    HostKey { path: PathBuf, reason: String },
    #[error("cannot listen for hooks on {path}: {source}")]
    HookSocket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How gitd runs.
#[derive(Debug, Clone)]
pub struct GitdConfig {
    /// Repos in `<data_dir>/git`, host key in `<data_dir>/ssh`, hook socket
    /// `<data_dir>/gitd.sock`.
    pub data_dir: PathBuf,
    /// The `paz` binary, which repo hooks run as `paz hook pre-receive`.
    pub hook_program: PathBuf,
    /// Connections beyond this are closed at once.
    pub max_connections: usize,
    /// Connections from one IP address beyond this are closed at once, so
    /// that one client cannot use up `max_connections` and lock others out.
    pub max_connections_per_address: usize,
    /// A client must authenticate and ask for something within this.
    pub handshake_timeout: Duration,
    /// A connection that sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// The deployer, for the verbs that roll releases out.
    pub rollouts: Option<std::sync::Arc<dyn verbs::Rollouts>>,
    /// Seals new tokens' webhook signing secrets (`hooks.key`).
    pub hooks: Option<std::sync::Arc<store::HookKey>>,
}

impl GitdConfig {
    pub fn new(data_dir: PathBuf, hook_program: PathBuf) -> GitdConfig {
        GitdConfig {
            data_dir,
            hook_program,
            max_connections: 100,
            max_connections_per_address: 10,
            handshake_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(600),
            rollouts: None,
            hooks: None,
        }
    }
}

/// The SSH server, ready to serve.
pub struct Gitd {
    config: GitdConfig,
    shared: Arc<Shared>,
    ssh: Arc<russh::server::Config>,
}

impl std::fmt::Debug for Gitd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gitd")
            .field("config", &self.config)
            .finish()
    }
}

impl Gitd {
    /// Loads (or makes) the host key; nothing listens yet.
    pub fn new(
        config: GitdConfig,
        store: Store,
        deploy: Arc<dyn DeployHandler>,
    ) -> Result<Gitd, GitdError> {
        let host_key = hostkey::load_or_create(&config.data_dir.join("ssh"))?;
        let ssh = russh::server::Config {
            server_id: russh::SshId::Standard("SSH-2.0-paz".into()),
            methods: russh::MethodSet::from(&[russh::MethodKind::PublicKey][..]),
            keys: vec![host_key],
            inactivity_timeout: Some(config.idle_timeout),
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_max: 3,
            auth_rejection_time: Duration::from_millis(300),
            auth_rejection_time_initial: Some(Duration::from_millis(0)),
            nodelay: true,
            ..Default::default()
        };
        let shared = Shared::new(
            verbs::Context {
                store,
                data_dir: config.data_dir.clone(),
                rollouts: config.rollouts.clone(),
                hooks: config.hooks.clone(),
                clock: verbs::Clock::System,
                rollout_record: None,
            },
            deploy,
            config.hook_program.clone(),
            config.data_dir.join("gitd.sock"),
        );
        Ok(Gitd {
            config,
            shared: Arc::new(shared),
            ssh: Arc::new(ssh),
        })
    }

    /// The host key's public half, as a known-hosts line would hold it.
    pub fn host_public_key(&self) -> String {
        self.ssh
            .keys
            .first()
            .and_then(|key| key.public_key().to_openssh().ok())
            .unwrap_or_default()
    }

    /// Serves SSH on `listener` until `shutdown` resolves; then stops taking
    /// connections and gives running ones 10 s to finish.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), GitdError> {
        let socket_path = self.shared.hook_socket.clone();
        let _ = std::fs::remove_file(&socket_path);
        let hooks = UnixListener::bind(&socket_path).map_err(|source| GitdError::HookSocket {
            path: socket_path.clone(),
            source,
        })?;
        let hook_server = tokio::spawn(hook::serve(hooks, self.shared.clone()));
        let shared = self.shared.clone();
        let key_watch = tokio::spawn(async move { shared.follow_keys().await });
        let slots = Arc::new(Semaphore::new(self.config.max_connections));
        let per_address: Arc<std::sync::Mutex<HashMap<IpAddr, usize>>> = Arc::default();
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            let (socket, peer) = tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            };
            let Some(from_address) = PerAddress::take(
                &per_address,
                peer.ip(),
                self.config.max_connections_per_address,
            ) else {
                warn!(%peer, limit = self.config.max_connections_per_address, "too many connections from this address; closing this one");
                continue;
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                warn!(%peer, limit = self.config.max_connections, "too many connections; closing this one");
                continue;
            };
            let (started, started_watch) = watch::channel(false);
            let handler = Connection::new(self.shared.clone(), peer.to_string(), started);
            let fingerprint = handler.fingerprint.clone();
            let keys_now = self.shared.keys_now.subscribe();
            let shared = self.shared.clone();
            let ssh = self.ssh.clone();
            let handshake_timeout = self.config.handshake_timeout;
            connections.spawn(
                async move {
                    let _slot = (slot, from_address);
                    let watched = Watched {
                        started: started_watch,
                        fingerprint,
                        keys_now,
                        shared,
                    };
                    serve_connection(ssh, socket, handler, handshake_timeout, watched).await;
                }
                .instrument(tracing::info_span!("ssh", %peer)),
            );
        }
        info!("ssh: no longer taking connections");
        let drain = async { while connections.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(10), drain)
            .await
            .is_err()
        {
            warn!("ssh: connections still open after 10s; closing them");
        }
        connections.abort_all();
        hook_server.abort();
        key_watch.abort();
        let _ = std::fs::remove_file(&socket_path);
        Ok(())
    }
}

/// One connection's share of its address's count; given back on drop.
struct PerAddress {
    counts: Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>,
    address: IpAddr,
}

impl PerAddress {
    /// A share for `address`, unless it has `limit` connections already.
    fn take(
        counts: &Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>,
        address: IpAddr,
        limit: usize,
    ) -> Option<PerAddress> {
        let mut map = counts.lock().unwrap_or_else(|p| p.into_inner());
        let count = map.entry(address).or_default();
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(PerAddress {
            counts: counts.clone(),
            address,
        })
    }
}

impl Drop for PerAddress {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = map.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.address);
            }
        }
    }
}

/// What a connection's loop watches besides the session.
struct Watched {
    /// Whether the client has asked for something yet.
    started: watch::Receiver<bool>,
    /// The key it authenticated with, once it has.
    fingerprint: Arc<std::sync::Mutex<Option<String>>>,
    /// The keys in `/paz/keys` now.
    keys_now: watch::Receiver<Option<Arc<std::collections::HashSet<String>>>>,
    /// To read the key itself before acting on what the watch says.
    shared: Arc<server::Shared>,
}

/// The connection's key (once it has one), if it has left `/paz/keys` as the
/// watch sees it.
fn removed_key(
    fingerprint: &std::sync::Mutex<Option<String>>,
    keys_now: &watch::Receiver<Option<Arc<std::collections::HashSet<String>>>>,
) -> Option<String> {
    let fingerprint = fingerprint
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()?;
    let keys = keys_now.borrow().clone()?;
    (!keys.contains(&fingerprint)).then_some(fingerprint)
}

/// Runs one connection; closes it if it has not asked for anything within the
/// handshake timeout, and when its key is removed.
async fn serve_connection(
    ssh: Arc<russh::server::Config>,
    socket: tokio::net::TcpStream,
    handler: Connection,
    handshake_timeout: Duration,
    watched: Watched,
) {
    let Watched {
        mut started,
        fingerprint,
        mut keys_now,
        shared,
    } = watched;
    let session = match tokio::time::timeout(
        handshake_timeout,
        russh::server::run_stream(ssh, socket, handler),
    )
    .await
    {
        Ok(Ok(session)) => session,
        Ok(Err(error)) => {
            info!(%error, "ssh handshake failed");
            return;
        }
        Err(_) => {
            info!("ssh handshake timed out");
            return;
        }
    };
    let handle = session.handle();
    tokio::pin!(session);
    let deadline = tokio::time::sleep(handshake_timeout);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            result = &mut session => {
                if let Err(error) = result {
                    info!(%error, "connection ended with an error");
                }
                return;
            }
            _ = &mut deadline, if !*started.borrow() => {
                info!("client asked for nothing in time; disconnecting");
                let _ = handle
                    .disconnect(russh::Disconnect::ByApplication, "timed out: authenticate and run a command".into(), "en".into())
                    .await;
                return;
            }
            changed = started.changed() => {
                if changed.is_err() {
                    // The handler is gone; the session future ends too.
                    let _ = (&mut session).await;
                    return;
                }
            }
            Ok(()) = keys_now.changed() => {
                // The watch may lag a key added a moment ago: the store decides.
                let removed = match removed_key(&fingerprint, &keys_now) {
                    Some(gone) => shared.key_record(&gone).await.is_none(),
                    None => false,
                };
                if removed {
                    info!("the connection's key was removed; disconnecting");
                    let _ = handle
                        .disconnect(russh::Disconnect::ByApplication, "your key has been removed".into(), "en".into())
                        .await;
                    return;
                }
            }
        }
    }
}

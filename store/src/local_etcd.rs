//! A private etcd server run as a child process: for `paz up` without `--etcd`,
//! and for tests. The child dies with its parent, also when the parent is killed.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tracing::{info, warn};

use crate::client::{Store, StoreConfig};

/// Why the local etcd could not be run.
#[derive(Debug, thiserror::Error)]
pub enum LocalEtcdError {
    #[error(
        "cannot find `{program}` on PATH: install it with scripts/setup (Debian package {package})"
    )]
    NotInstalled {
        program: &'static str,
        package: &'static str,
    },
    #[error("cannot prepare {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("etcd exited during start-up ({status}); its log {log} ends with:\n{tail}")]
    Exited {
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("etcd did not answer within {}s of starting; see its log {log}", after.as_secs())]
    NotReady { after: Duration, log: PathBuf },
    #[error(transparent)]
    Tls(#[from] crate::EtcdTlsError),
}

/// A running etcd child process with its data in one directory.
#[derive(Debug)]
pub struct LocalEtcd {
    data_dir: PathBuf,
    log_path: PathBuf,
    client_addr: SocketAddr,
    peer_addr: SocketAddr,
    /// Client TLS with client certificates: only who holds Paz's certificate
    /// gets an answer. `None`: plain HTTP on loopback (the tests' own etcds).
    tls: Option<crate::EtcdTls>,
    child: Option<Child>,
}

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

impl LocalEtcd {
    /// Starts etcd on two free loopback ports with its data in `data_dir` (made
    /// if missing) and its log in `<data_dir>.log`; returns once it answers.
    pub async fn start(data_dir: &Path) -> Result<LocalEtcd, LocalEtcdError> {
        Self::start_with(data_dir, None).await
    }

    /// As [`LocalEtcd::start`], serving only clients that present the client
    /// certificate of `tls_dir` (made there, mode 0600, if missing).
    pub async fn start_with_tls(
        data_dir: &Path,
        tls_dir: &Path,
    ) -> Result<LocalEtcd, LocalEtcdError> {
        let tls = crate::EtcdTls::ensure(tls_dir, &[])?;
        Self::start_with(data_dir, Some(tls)).await
    }

    async fn start_with(
        data_dir: &Path,
        tls: Option<crate::EtcdTls>,
    ) -> Result<LocalEtcd, LocalEtcdError> {
        let io_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LocalEtcdError::Io { path, source }
        };
        std::fs::create_dir_all(data_dir).map_err(io_error(data_dir))?;
        let data_dir = data_dir.canonicalize().map_err(io_error(data_dir))?;
        let mut attempt = 1;
        loop {
            let (client_addr, peer_addr) = free_ports().map_err(io_error(&data_dir))?;
            let mut etcd = LocalEtcd {
                log_path: data_dir.with_extension("log"),
                data_dir: data_dir.clone(),
                client_addr,
                peer_addr,
                tls: tls.clone(),
                child: None,
            };
            match etcd.run().await {
                Ok(()) => return Ok(etcd),
                // Another process took a port between our check and etcd's bind.
                Err(LocalEtcdError::Exited { tail, .. })
                    if attempt < 3 && tail.contains("address already in use") =>
                {
                    warn!("a chosen port was taken meanwhile; trying other ports");
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// The URL clients connect to.
    pub fn client_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.client_addr)
    }

    /// What a client must present, when it serves TLS.
    pub fn client_tls(&self) -> Option<crate::TlsFiles> {
        self.tls.as_ref().map(crate::EtcdTls::client)
    }

    /// The address clients connect to.
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts it again on the same ports and data dir after [`LocalEtcd::stop`] or
    /// [`LocalEtcd::kill`].
    pub async fn restart(&mut self) -> Result<(), LocalEtcdError> {
        if self.child.is_some() {
            self.stop().await;
        }
        self.run().await
    }

    /// Stops it gracefully: SIGTERM, then SIGKILL if it has not exited in 10 s.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() >= deadline => {
                    warn!(pid = child.id(), "etcd did not stop within 10s; killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
                Ok(None) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// If it has exited by itself, how; `None` while it runs (or after `stop`).
    pub fn exit_status(&mut self) -> Option<String> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status.to_string())
    }

    /// Kills it at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    async fn run(&mut self) -> Result<(), LocalEtcdError> {
        let etcd = find_program("etcd", "etcd-server")?;
        let setpriv = find_program("setpriv", "util-linux")?;
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|source| LocalEtcdError::Io {
                path: self.log_path.clone(),
                source,
            })?;
        let log_err = log.try_clone().map_err(|source| LocalEtcdError::Io {
            path: self.log_path.clone(),
            source,
        })?;
        let client_url = self.client_url();
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let peer_url = format!("{scheme}://{}", self.peer_addr);
        let mut command = Command::new(setpriv);
        // setpriv asks the kernel to SIGKILL etcd when its parent dies, then execs etcd.
        command
            .args(["--pdeathsig", "KILL", "--"])
            .arg(etcd)
            .args(["--name", "paz", "--data-dir"])
            .arg(&self.data_dir)
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("paz={peer_url}")])
            .args(["--logger", "zap", "--log-outputs", "stderr"]);
        if let Some(tls) = &self.tls {
            command
                .arg("--client-cert-auth")
                .arg("--trusted-ca-file")
                .arg(tls.client().ca)
                .arg("--cert-file")
                .arg(tls.server_cert())
                .arg("--key-file")
                .arg(tls.server_key())
                // The peer port too: nobody else may speak raft to it.
                .arg("--peer-client-cert-auth")
                .arg("--peer-trusted-ca-file")
                .arg(tls.client().ca)
                .arg("--peer-cert-file")
                .arg(tls.server_cert())
                .arg("--peer-key-file")
                .arg(tls.server_key());
        }
        command
            // Its own process group: a terminal's Ctrl-C reaches only Paz, which
            // then stops etcd last, after the roles that use it.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let child = spawn_tied_to_process(command).map_err(|source| LocalEtcdError::Io {
            path: self.data_dir.clone(),
            source,
        })?;
        info!(pid = child.id(), url = %client_url, data_dir = %self.data_dir.display(), "started etcd");
        self.child = Some(child);
        self.wait_until_ready().await
    }

    async fn wait_until_ready(&mut self) -> Result<(), LocalEtcdError> {
        let started = Instant::now();
        let mut probe = StoreConfig::new(vec![self.client_url()]);
        probe.timeout = Duration::from_secs(1);
        probe.tls = self.client_tls();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(LocalEtcdError::Exited {
                        status: status.to_string(),
                        tail: log_tail(&self.log_path),
                        log: self.log_path.clone(),
                    });
                }
            }
            if Store::connect(probe.clone()).await.is_ok() {
                return Ok(());
            }
            if started.elapsed() > READY_TIMEOUT {
                self.kill();
                return Err(LocalEtcdError::NotReady {
                    after: READY_TIMEOUT,
                    log: self.log_path.clone(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Two distinct free loopback ports (both held until both are known).
fn free_ports() -> std::io::Result<(SocketAddr, SocketAddr)> {
    let client = TcpListener::bind("127.0.0.1:0")?;
    let peer = TcpListener::bind("127.0.0.1:0")?;
    Ok((client.local_addr()?, peer.local_addr()?))
}

fn find_program(program: &'static str, package: &'static str) -> Result<PathBuf, LocalEtcdError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .ok_or(LocalEtcdError::NotInstalled { program, package })
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns `command` from one thread that lives as long as the process.
///
/// The kernel's parent-death signal fires when the *thread* that forked the
/// child exits, not the process; spawning from a short-lived thread (a test
/// thread, a blocking-pool thread) would kill the child early.
fn spawn_tied_to_process(command: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (sender, requests) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("paz-spawner".to_string())
            .spawn(move || {
                for (mut command, reply) in requests {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("cannot start the spawner thread");
        Mutex::new(sender)
    });
    let (reply, answer) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .send((command, reply))
        .map_err(|_| std::io::Error::other("spawner thread is gone"))?;
    answer
        .recv()
        .map_err(|_| std::io::Error::other("spawner thread is gone"))?
}

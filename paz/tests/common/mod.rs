//! What the SSH tests share: a gitd on a test store with an admin key, a deploy
//! handler the test controls, and git helpers.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use gitd::{DeployHandler, Gitd, GitdConfig, Push};
use store::records::Role;
use store::Store;
use tests::{ChildGuard, SshIdentity};
use tokio::sync::{watch, Semaphore};

/// A deploy handler for tests: it prints three steps, can be held between the
/// first and the second until the test releases it, reads the pushed commit's
/// message from git's quarantine, and refuses commits whose message says "fail".
#[derive(Clone, Default)]
pub struct TestHandler(Arc<HandlerState>);

#[derive(Default)]
pub struct HandlerState {
    pushes: Mutex<Vec<Push>>,
    /// When set, each deploy waits for one permit after its first line.
    gate: Mutex<Option<Arc<Semaphore>>>,
}

impl std::ops::Deref for TestHandler {
    type Target = HandlerState;
    fn deref(&self) -> &HandlerState {
        &self.0
    }
}

impl TestHandler {
    pub fn hold(&self) -> Arc<Semaphore> {
        let gate = Arc::new(Semaphore::new(0));
        *self.gate.lock().unwrap() = Some(gate.clone());
        gate
    }

    pub fn pushed(&self) -> Vec<String> {
        self.pushes
            .lock()
            .unwrap()
            .iter()
            .map(|push| push.new_sha.clone())
            .collect()
    }
}

impl DeployHandler for TestHandler {
    fn deploy(&self, push: Push, output: gitd::Output) -> BoxFuture<'static, Result<(), String>> {
        let handler = self.clone();
        Box::pin(async move {
            handler.pushes.lock().unwrap().push(push.clone());
            output
                .line(format!("step 1: building {}", &push.new_sha[..7]))
                .await;
            let gate = handler.gate.lock().unwrap().clone();
            if let Some(gate) = gate {
                gate.acquire().await.unwrap().forget();
            }
            let message = Command::new("git")
                .args(["log", "-1", "--format=%s", &push.new_sha])
                .current_dir(&push.repo)
                .envs(push.git_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .output()
                .unwrap();
            let message = String::from_utf8_lossy(&message.stdout).trim().to_string();
            output.line(format!("step 2: commit says {message}")).await;
            if message.contains("fail") {
                return Err("the test handler refuses commits that say fail".to_string());
            }
            output
                .line(format!(
                    "step 3: deployed {} by {}",
                    push.app, push.pusher.name
                ))
                .await;
            Ok(())
        })
    }
}

pub struct Fixture {
    pub store: Store,
    pub data: tempfile::TempDir,
    pub port: u16,
    pub handler: TestHandler,
    pub admin: SshIdentity,
    _stop: watch::Sender<bool>,
}

pub async fn add_key(store: &Store, identity: &SshIdentity, name: &str, role: Role, apps: &[&str]) {
    let apps = apps
        .iter()
        .map(|app| store::AppName::new(app).unwrap())
        .collect();
    let key = verbs::keys::parse_public_key(&identity.public_key, name, role, apps).unwrap();
    store
        .put(&store.keys().ssh_key(&key.fingerprint).unwrap(), &key)
        .await
        .unwrap();
}

pub async fn start_gitd(
    store: Store,
    data_dir: &Path,
    handler: TestHandler,
    tune: impl FnOnce(&mut GitdConfig),
) -> (u16, watch::Sender<bool>, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut config = GitdConfig::new(
        data_dir.to_path_buf(),
        PathBuf::from(env!("CARGO_BIN_EXE_paz")),
    );
    tune(&mut config);
    let gitd = Gitd::new(config, store, Arc::new(handler)).unwrap();
    let host_key = gitd.host_public_key();
    let (stop, mut stopped) = watch::channel(false);
    tokio::spawn(gitd.serve(listener, async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    }));
    (port, stop, host_key)
}

pub async fn fixture(test_name: &str) -> Fixture {
    let store = tests::test_store(test_name).await;
    let admin = SshIdentity::new("ed25519");
    add_key(&store, &admin, "admin", Role::Admin, &[]).await;
    let data = tests::temp_dir();
    let handler = TestHandler::default();
    let (port, stop, _) = start_gitd(store.clone(), data.path(), handler.clone(), |_| {}).await;
    Fixture {
        store,
        data,
        port,
        handler,
        admin,
        _stop: stop,
    }
}

impl Fixture {
    pub fn url(&self, app: &str) -> String {
        format!("ssh://paz@127.0.0.1:{}/{app}", self.port)
    }

    pub fn ssh(&self, who: &SshIdentity, args: &[&str]) -> Output {
        who.ssh("paz@127.0.0.1", self.port, args)
    }

    pub fn repo(&self, app: &str) -> PathBuf {
        self.data.path().join("git").join(format!("{app}.git"))
    }

    /// Every key and revision under the test's prefix, and every file under the
    /// data dir's repos: what a refused request must leave as it was.
    pub async fn state(&self) -> (Vec<(String, i64)>, Vec<PathBuf>) {
        let listing = self
            .store
            .list(&self.store.keys().everything())
            .await
            .unwrap();
        let keys = listing
            .entries
            .into_iter()
            .map(|e| (e.key, e.mod_revision))
            .collect();
        let mut files = Vec::new();
        let mut stack = vec![self.data.path().join("git")];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if entry.path().is_dir() {
                    stack.push(entry.path());
                }
                files.push(entry.path());
            }
        }
        files.sort();
        (keys, files)
    }
}

/// A work tree with one commit per message, on branch main.
pub fn work_tree(who: &SshIdentity, messages: &[&str]) -> tempfile::TempDir {
    let dir = tests::temp_dir();
    run_git(who, dir.path(), &["init", "-q", "-b", "main"]);
    for (n, message) in messages.iter().enumerate() {
        std::fs::write(dir.path().join("file.txt"), format!("version {n}\n")).unwrap();
        run_git(who, dir.path(), &["add", "."]);
        run_git(who, dir.path(), &["commit", "-q", "-m", message]);
    }
    dir
}

pub fn run_git(who: &SshIdentity, dir: &Path, args: &[&str]) -> String {
    let output = who.git(dir).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// The ref `name` on the server as `git ls-remote` shows it.
pub fn remote_ref(fixture: &Fixture, who: &SshIdentity, app: &str, name: &str) -> Option<String> {
    let dir = tests::temp_dir();
    let output = who
        .git(dir.path())
        .args(["ls-remote", &fixture.url(app), name])
        .output()
        .unwrap();
    assert!(output.status.success(), "ls-remote: {}", stderr(&output));
    stdout(&output)
        .split_whitespace()
        .next()
        .map(str::to_string)
}

/// `paz` with no PAZ_* settings inherited from the environment.
pub fn paz() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_paz"));
    without_paz_settings(&mut command);
    command
}

/// Clears the `PAZ_*` settings of the test's environment but the backend
/// path the run tests (scripts/test runs the proxy's tests on both); the API
/// listens on a free port (tests run side by side), unless a test names one.
fn without_paz_settings(command: &mut Command) {
    for (name, _) in std::env::vars() {
        if name.starts_with("PAZ_") && name != "PAZ_BACKEND_HTTP" {
            command.env_remove(name);
        }
    }
    command.env("PAZ_API_LISTEN", "127.0.0.1:0");
}

/// A running `paz up` and what its banner said.
pub struct Running {
    pub paz: ChildGuard,
    pub etcd_url: String,
    /// The client certificates of its local etcd (`<data-dir>/etcd-tls`).
    pub etcd_tls: Option<PathBuf>,
    pub etcd_pid: Option<u32>,
    pub ssh_port: u16,
    pub registry_port: u16,
    pub http_port: u16,
    /// The proxy's HTTPS port (0: none).
    pub https_port: u16,
    /// The REST API's port.
    pub api_port: u16,
    /// Every line of the banner, up to "stop with Ctrl-C".
    pub banner: Vec<String>,
}

/// Starts `paz up ARGS` and waits for its banner.
pub fn start(args: &[&str], envs: &[(&str, &str)]) -> Running {
    start_role(
        "up",
        &[&["--http-listen", "127.0.0.1:0"], args].concat(),
        envs,
    )
}

/// Starts `paz ROLE ARGS` (`up` or `server`) and waits for its banner; a
/// `server` has no proxy, so its `http_port` is 0.
pub fn start_role(role: &str, args: &[&str], envs: &[(&str, &str)]) -> Running {
    let mut command = paz();
    command.arg(role);
    start_command(command, args, envs)
}

/// Starts `paz up ARGS` with at most `nofile` open files (soft and hard, so
/// it cannot raise them), through util-linux's `prlimit`.
pub fn start_with_nofile(nofile: u64, args: &[&str], envs: &[(&str, &str)]) -> Running {
    let mut command = Command::new("prlimit");
    command
        .arg(format!("--nofile={nofile}:{nofile}"))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_paz"))
        .args(["up", "--http-listen", "127.0.0.1:0"]);
    without_paz_settings(&mut command);
    start_command(command, args, envs)
}

/// Starts `command` (a `paz` role) with ARGS and waits for its banner.
fn start_command(mut command: Command, args: &[&str], envs: &[(&str, &str)]) -> Running {
    // HTTPS on a free port too, unless the test says where.
    if !args.contains(&"--https-listen") {
        command.args(["--https-listen", "127.0.0.1:0"]);
    }
    let mut paz = ChildGuard::spawn(
        command
            // A free port: tests run side by side.
            .args([
                "--ssh-listen",
                "127.0.0.1:0",
                "--registry-listen",
                "127.0.0.1:0",
            ])
            .args(args)
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    );
    let stdout = paz.child().stdout.take().unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut banner = Vec::new();
    loop {
        let line = received
            .recv_timeout(Duration::from_secs(60))
            .expect("paz up printed no banner within 60s");
        banner.push(line.clone());
        if line.starts_with("stop with Ctrl-C") {
            break;
        }
    }
    // What listens where, as Paz wrote it before its banner.
    let data_dir = args
        .iter()
        .position(|arg| *arg == "--data-dir")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from)
        .expect("tests give paz a --data-dir");
    let path = data_dir.join("addresses.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    let addresses: serde_json::Value = serde_json::from_str(&text).unwrap();
    let port = |name: &str| {
        addresses[name].as_str().map(|address| {
            address
                .parse::<std::net::SocketAddr>()
                .unwrap_or_else(|error| panic!("{name} {address}: {error}"))
                .port()
        })
    };
    let etcd_tls = addresses["etcd_tls"]["ca"]
        .as_str()
        .map(|ca| PathBuf::from(ca).parent().unwrap().to_path_buf());
    assert_eq!(
        addresses["pid"].as_u64(),
        Some(u64::from(paz.id())),
        "{} is this paz's",
        path.display()
    );
    Running {
        etcd_url: addresses["etcd"].as_str().unwrap().to_string(),
        etcd_tls,
        etcd_pid: addresses["etcd_pid"].as_u64().map(|pid| pid as u32),
        ssh_port: port("ssh").expect("addresses.json names the ssh address"),
        registry_port: port("registry").expect("addresses.json names the registry"),
        http_port: port("http").unwrap_or(0),
        https_port: port("https").unwrap_or(0),
        api_port: port("api").expect("addresses.json names the API"),
        banner,
        paz,
    }
}

impl Running {
    /// A store on its etcd under `prefix`, with its certificates.
    pub async fn store(&self, prefix: &str) -> Store {
        tests::etcd::connect_with_tls(&self.etcd_url, prefix, self.etcd_tls.as_deref()).await
    }
}

/// Every key under the store's prefix and its revision: what a refused
/// request must leave as it was.
pub async fn key_revisions(store: &Store) -> Vec<(String, i64)> {
    let listing = store.list(&store.keys().everything()).await.unwrap();
    listing
        .entries
        .into_iter()
        .map(|entry| (entry.key, entry.mod_revision))
        .collect()
}

/// What a command printed, stdout then stderr.
pub fn said(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr)
}

/// A copy of `examples/<name>` in a temp dir of its own.
pub fn example(name: &str) -> tempfile::TempDir {
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name);
    let to = tests::temp_dir();
    copy_tree(&from, to.path());
    to
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// `GET /` through the proxy with raw HTTP/1.0: (status, body); status 0 if
/// the connection failed.
pub fn get(port: u16, host: &str) -> (u16, String) {
    get_path(port, host, "/")
}

pub fn get_path(port: u16, host: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Asks until the answer has status 200 and contains `text`, for up to 30 s.
pub fn answers(port: u16, host: &str, text: &str) -> String {
    tests::eventually_blocking(
        &format!("{host} to answer with {text:?}"),
        Duration::from_secs(30),
        || {
            let (status, body) = get(port, host);
            (status == 200 && body.contains(text)).then_some(body)
        },
    )
}

/// A client asking `host` about 200 times a second until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(Instant, u16, String)>>,
}

impl Load {
    pub fn start(port: u16, host: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let host = host.to_string();
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                let mut next = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let asked = Instant::now();
                    let (status, body) = get(port, &host);
                    seen.push((asked, status, body));
                    next += Duration::from_millis(5);
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                }
                seen
            })
        };
        Load { stop, thread }
    }

    /// Each request's start, status and body.
    pub fn finish(self) -> Vec<(Instant, u16, String)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// Fails unless every request of a [`Load`] was answered 200.
pub fn assert_all_answered(seen: &[(std::time::Instant, u16, String)]) {
    let failed: Vec<_> = seen
        .iter()
        .filter(|(_, status, _)| *status != 200)
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        seen.len(),
        &failed[..failed.len().min(5)]
    );
}

/// Starts `command` and returns it with the first stdout line that starts
/// with `prefix`, minus the prefix.
pub fn spawn_until(command: &mut std::process::Command, prefix: &str) -> (ChildGuard, String) {
    let mut child = ChildGuard::spawn(command.stdout(Stdio::piped()).stderr(Stdio::inherit()));
    let stdout = child.child().stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let rest = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("exited before printing {prefix:?}"))
            .unwrap();
        if let Some(rest) = line.strip_prefix(prefix) {
            break rest.to_string();
        }
    };
    // Keep reading, so a later line never blocks the child.
    std::thread::spawn(move || lines.for_each(drop));
    (child, rest)
}

/// Commits `dir` as a new repository on `main` (unless it is one) and pushes
/// it as `who` to `app` on the SSH port `ssh`; the image it builds (tagged
/// with the commit, in the registry on `registry`) is removed by `cleanup`.
/// The push's output, for the caller to check.
pub fn push_dir(
    who: &SshIdentity,
    dir: &Path,
    (ssh, registry): (u16, u16),
    app: &str,
    cleanup: &mut tests::DockerCleanup,
) -> Output {
    let git = |args: &[&str]| {
        let output = who.git(dir).args(args).output().unwrap();
        assert!(output.status.success(), "git {args:?}: {}", said(&output));
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    };
    if !dir.join(".git").exists() {
        git(&["init", "-q", "-b", "main"]);
        git(&["add", "-A"]);
        git(&["commit", "-q", "-m", app]);
    }
    let sha = git(&["rev-parse", "HEAD"]);
    cleanup.track_image(&format!("127.0.0.1:{registry}/{app}:{sha}"));
    let url = format!("ssh://paz@127.0.0.1:{ssh}/{app}");
    who.git(dir)
        .args(["push", "--force", &url, "main"])
        .output()
        .unwrap()
}

/// `paz agent` on `etcd` with its own data dir, pulling from the registry
/// on `registry` with the machine token `token` (`NAME:SECRET`), and
/// `extra` flags; returns it and its machine id.
#[allow(dead_code)]
pub fn agent(
    etcd: &str,
    data: &Path,
    registry: u16,
    token: &str,
    extra: &[&str],
) -> (ChildGuard, String) {
    let (child, rest) = spawn_until(
        paz()
            .args(["agent", "--etcd", etcd])
            .args([
                "--data-dir",
                data.to_str().unwrap(),
                "--advertise-addr",
                "127.0.0.1",
                "--registry",
                &format!("127.0.0.1:{registry}"),
                // --registry-token, as the README writes it.
                "--token",
                token,
            ])
            .args(extra),
        "agent ",
    );
    let id = rest.trim_end_matches(" is running").to_string();
    (child, id)
}

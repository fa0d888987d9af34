//! `paz up` from the outside: the real binary, its own etcd, signals, and bad input.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{paz, start};
use nix::sys::signal::Signal;

fn alive(pid: u32) -> bool {
    // A zombie still has /proc/<pid>; it is dead for our purpose.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| !stat.contains(") Z "))
        .unwrap_or(false)
}

fn wait_until_dead(pid: u32, what: &str) {
    tests::eventually_blocking(
        &format!("{what} (pid {pid}) to stop"),
        Duration::from_secs(10),
        || (!alive(pid)).then_some(()),
    );
}

#[tokio::test]
async fn paz_up_starts_its_own_etcd_and_a_signal_stops_both() {
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        let dir = tests::temp_dir();
        let data_dir = dir.path().to_str().unwrap();
        let mut running = start(&["--data-dir", data_dir], &[]);
        let etcd_pid = running.etcd_pid.expect("a local etcd");
        assert!(alive(etcd_pid));
        assert!(
            dir.path().join("etcd/member").is_dir(),
            "etcd keeps its data in <data-dir>/etcd"
        );

        let store = running.store("/paz").await;
        let domain = store.get(&store.keys().domain()).await.unwrap().unwrap();
        assert_eq!(domain.value, "paz.localhost");

        running.paz.signal(signal);
        let status = running
            .paz
            .wait_timeout(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("paz did not exit within 30s of {signal}"));
        assert!(status.success(), "paz exits 0 on {signal}: {status}");
        wait_until_dead(etcd_pid, "etcd");
    }
}

#[tokio::test]
async fn killing_paz_with_sigkill_leaves_no_etcd_behind() {
    let dir = tests::temp_dir();
    let mut running = start(&["--data-dir", dir.path().to_str().unwrap()], &[]);
    let etcd_pid = running.etcd_pid.unwrap();
    running.paz.signal(Signal::SIGKILL);
    running.paz.wait_timeout(Duration::from_secs(10)).unwrap();
    wait_until_dead(etcd_pid, "etcd after paz was killed");
}

#[tokio::test]
async fn state_survives_a_restart_on_the_same_data_dir() {
    let dir = tests::temp_dir();
    let data_dir = dir.path().to_str().unwrap();
    let mut running = start(&["--data-dir", data_dir], &[]);
    let store = running.store("/paz").await;
    let key = store.keys().unit("kept.service").unwrap();
    store.put(&key, &"[Service]\n".to_string()).await.unwrap();
    drop(store);
    running.paz.signal(Signal::SIGTERM);
    assert!(running
        .paz
        .wait_timeout(Duration::from_secs(30))
        .unwrap()
        .success());

    let running = start(
        &["--data-dir", data_dir, "--domain", "apps.example.com"],
        &[],
    );
    let store = running.store("/paz").await;
    assert_eq!(store.get(&key).await.unwrap().unwrap().value, "[Service]\n");
    let domain = store.get(&store.keys().domain()).await.unwrap().unwrap();
    assert_eq!(domain.value, "apps.example.com");
}

#[tokio::test]
async fn a_second_paz_on_the_same_data_dir_is_refused() {
    let dir = tests::temp_dir();
    let data_dir = dir.path().to_str().unwrap();
    let running = start(&["--data-dir", data_dir], &[]);
    let output = paz().args(["up", "--data-dir", data_dir]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "paz: another paz (pid {}) is using data dir {data_dir}: stop it or choose another --data-dir",
            running.paz.id()
        )),
        "{stderr}"
    );
    assert!(
        alive(running.etcd_pid.unwrap()),
        "the first paz's etcd is untouched"
    );
}

#[tokio::test]
async fn with_etcd_given_paz_uses_it_and_reads_settings_from_env_and_config_file() {
    let etcd = tests::shared_etcd().await;
    let prefix = tests::etcd::unique_prefix("up-external");
    let dir = tests::temp_dir();
    let config = dir.path().join("paz.toml");
    std::fs::write(
        &config,
        format!(
            "etcd = \"{}\"\ndomain = \"from-file.example\"\n",
            etcd.url()
        ),
    )
    .unwrap();
    let data_dir = dir.path().join("data");
    let running = start(
        &[
            "--config",
            config.to_str().unwrap(),
            "--data-dir",
            data_dir.to_str().unwrap(),
        ],
        &[
            ("PAZ_ETCD_PREFIX", prefix.as_str()),
            ("PAZ_DOMAIN", "from-env.example"),
        ],
    );
    assert_eq!(running.etcd_pid, None, "no local etcd when --etcd is given");
    assert!(!data_dir.join("etcd").exists());
    // With no admin key, the banner says how to add one to this very etcd and prefix.
    let banner = running.banner.join("\n");
    assert!(
        banner.contains(&format!(
            "paz keys add admin ~/.ssh/id_ed25519.pub --role admin --etcd {} --etcd-prefix {prefix}",
            etcd.url()
        )),
        "{banner}"
    );
    let store = tests::etcd::connect(&etcd.url(), &prefix).await;
    let domain = store.get(&store.keys().domain()).await.unwrap().unwrap();
    assert_eq!(
        domain.value, "from-env.example",
        "env var wins over the config file"
    );
}

#[test]
fn an_unreachable_etcd_fails_fast_with_a_clear_message() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tests::temp_dir();
    let output = paz()
        .args(["up", "--data-dir", dir.path().to_str().unwrap()])
        .args(["--etcd", &format!("http://127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "paz: cannot reach etcd at http://127.0.0.1:{port} within 5s"
        )),
        "{stderr}"
    );
}

#[test]
fn bad_flags_are_refused_before_anything_is_made() {
    let dir = tests::temp_dir();
    let data_dir = dir.path().join("never-made");
    for (flag, value, message) in [
        (
            "--ssh-listen",
            "nonsense",
            "paz: --ssh-listen `nonsense` is invalid: use IP:PORT, such as 0.0.0.0:2222",
        ),
        (
            "--domain",
            "Not_A_Domain",
            "paz: --domain: domain `Not_A_Domain` is invalid",
        ),
        (
            "--etcd-prefix",
            "relative",
            "paz: --etcd-prefix `relative` is invalid: use a path such as /paz",
        ),
    ] {
        let output = paz()
            .args(["up", "--data-dir", data_dir.to_str().unwrap(), flag, value])
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(message), "{flag}: {stderr}");
        assert!(!data_dir.exists(), "{flag}: nothing is made");
    }
}

#[tokio::test]
async fn admin_key_is_added_once_with_the_fingerprint_ssh_keygen_prints() {
    let etcd = tests::shared_etcd().await;
    for kind in ["ed25519", "ecdsa", "rsa"] {
        let prefix = tests::etcd::unique_prefix("up-admin-key");
        let identity = tests::SshIdentity::new(kind);
        let public_key = identity.private_key.with_extension("pub");
        let dir = tests::temp_dir();
        let start_with_admin_key = |file: &Path| {
            start(
                &[
                    "--etcd",
                    &etcd.url(),
                    "--etcd-prefix",
                    &prefix,
                    "--data-dir",
                    dir.path().to_str().unwrap(),
                    "--admin-key",
                    file.to_str().unwrap(),
                ],
                &[],
            )
        };
        let mut running = start_with_admin_key(&public_key);
        let store = tests::etcd::connect(&etcd.url(), &prefix).await;
        let key = store.keys().ssh_key(&identity.fingerprint()).unwrap();
        let record = store
            .get(&key)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{kind} key not added"))
            .value;
        assert_eq!(record.name, "admin");
        assert_eq!(record.fingerprint, identity.fingerprint());
        assert_eq!(record.role, store::records::Role::Admin);
        assert_eq!(record.public_key, identity.public_key);
        running.paz.signal(Signal::SIGTERM);
        running.paz.wait_timeout(Duration::from_secs(30)).unwrap();

        // An admin exists now: another --admin-key is not added.
        let other = tests::SshIdentity::new("ed25519");
        let other_file = other.private_key.with_extension("pub");
        let _running = start_with_admin_key(&other_file);
        let keys = store.list(&store.keys().ssh_keys()).await.unwrap();
        assert_eq!(keys.entries.len(), 1, "{kind}: only the first admin key");
    }
}

#[tokio::test]
async fn a_bad_admin_key_is_refused_and_nothing_is_written() {
    let etcd = tests::shared_etcd().await;
    let prefix = tests::etcd::unique_prefix("up-bad-admin-key");
    let identity = tests::SshIdentity::new("ed25519");
    let dir = tests::temp_dir();
    let garbage = dir.path().join("garbage.pub");
    std::fs::write(&garbage, "ssh-ed25519 not-base64 me@host\n").unwrap();
    for (file, message) in [
        (
            identity.private_key.as_path(),
            "that is a private key: give the public key (the .pub file)",
        ),
        (garbage.as_path(), "not an OpenSSH public key"),
        (
            Path::new("/nonexistent.pub"),
            "cannot read admin key /nonexistent.pub",
        ),
    ] {
        let output = paz()
            .args(["up", "--etcd", &etcd.url(), "--etcd-prefix", &prefix])
            .args(["--data-dir", dir.path().join("data").to_str().unwrap()])
            .arg("--admin-key")
            .arg(file)
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(message), "{}: {stderr}", file.display());
    }
    let store = tests::etcd::connect(&etcd.url(), &prefix).await;
    let everything = store.list(&store.keys().everything()).await.unwrap();
    assert!(
        everything.entries.is_empty(),
        "nothing written: {:?}",
        everything.entries
    );
}

#[tokio::test]
async fn a_push_to_paz_up_reaches_the_builder_and_paz_keys_add_lets_a_deployer_in() {
    let admin = tests::SshIdentity::new("ed25519");
    let admin_file = admin.private_key.with_extension("pub");
    let dir = tests::temp_dir();
    let data_dir = dir.path().to_str().unwrap();
    let running = start(
        &[
            "--data-dir",
            data_dir,
            "--admin-key",
            admin_file.to_str().unwrap(),
        ],
        &[],
    );
    let url = format!("ssh://paz@127.0.0.1:{}/demo", running.ssh_port);

    let work = tests::temp_dir();
    let git = |args: &[&str]| {
        let output = admin.git(work.path()).args(args).output().unwrap();
        assert!(
            output.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stderr).to_string()
    };
    git(&["init", "-q", "-b", "main"]);
    std::fs::write(work.path().join("README"), "hello\n").unwrap();
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "first"]);
    // The push reaches the builder, which finds nothing to build in a README.
    let pushed = admin
        .git(work.path())
        .args(["push", &url, "main"])
        .output()
        .unwrap();
    assert!(!pushed.status.success());
    let said = String::from_utf8_lossy(&pushed.stderr);
    assert!(
        said.contains("remote: deploy failed: nothing to build"),
        "{said}"
    );

    // The first deployer key, added on the host against the etcd paz up runs.
    let deployer = tests::SshIdentity::new("ed25519");
    let deployer_file = deployer.private_key.with_extension("pub");
    let output = paz()
        .args([
            "keys",
            "add",
            "dana",
            deployer_file.to_str().unwrap(),
            "--apps",
            "demo",
            "--data-dir",
            data_dir,
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("added key dana ({}) as deployer", deployer.fingerprint())
    );
    let output = deployer.ssh("paz@127.0.0.1", running.ssh_port, &["apps:list"]);
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "demo");

    // Bad input to paz keys add changes nothing.
    let output = paz()
        .args([
            "keys",
            "add",
            "dana",
            deployer_file.to_str().unwrap(),
            "--data-dir",
            data_dir,
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("this key is already added as `dana`"));
    let output = paz()
        .args([
            "keys",
            "add",
            "x",
            "/nonexistent.pub",
            "--data-dir",
            data_dir,
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read /nonexistent.pub"));
    let output = paz()
        .args([
            "keys",
            "add",
            "x",
            deployer_file.to_str().unwrap(),
            "--data-dir",
            "/nonexistent",
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("no --etcd given and /nonexistent/etcd.url is missing"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn paz_up_serves_the_registry_with_tokens_for_its_own_builder_and_agent() {
    let dir = tests::temp_dir();
    let running = start(&["--data-dir", dir.path().to_str().unwrap()], &[]);
    let path = dir.path().join("internal-tokens.json");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the secrets are for root only");
    let tokens: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let curl = |who: &str, method: &str, path: &str| {
        let credentials = format!(
            "{}:{}",
            tokens[who]["name"].as_str().unwrap(),
            tokens[who]["secret"].as_str().unwrap()
        );
        let output = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-X",
                method,
                "-u",
                &credentials,
            ])
            .arg(format!("http://127.0.0.1:{}{path}", running.registry_port))
            .output()
            .expect("cannot run curl: run scripts/test, which installs it");
        String::from_utf8_lossy(&output.stdout).to_string()
    };
    assert_eq!(curl("builder", "GET", "/v2/"), "200");
    assert_eq!(
        curl("builder", "POST", "/v2/web/blobs/uploads/"),
        "202",
        "the builder pushes"
    );
    assert_eq!(curl("agent", "GET", "/v2/"), "200");
    assert_eq!(
        curl("agent", "POST", "/v2/web/blobs/uploads/"),
        "403",
        "the agent only pulls"
    );
}

#[tokio::test]
async fn paz_up_and_paz_proxy_answer_http_for_the_apps() {
    let dir = tests::temp_dir();
    let running = start(&["--data-dir", dir.path().to_str().unwrap()], &[]);
    let curl = |port: u16, host: &str| {
        let output = Command::new("curl")
            .args(["-s", "-w", " %{http_code}", "-H", &format!("Host: {host}")])
            .arg(format!("http://127.0.0.1:{port}/"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).to_string()
    };
    let answer = curl(running.http_port, "nothing.paz.localhost");
    assert!(
        answer.contains("no app serves nothing.paz.localhost") && answer.ends_with(" 404"),
        "{answer}"
    );

    // The proxy on its own, on the same cluster.
    let mut proxy = tests::ChildGuard::spawn(
        paz()
            .args([
                "proxy",
                "--etcd",
                &running.etcd_url,
                "--etcd-tls",
                running.etcd_tls.as_ref().unwrap().to_str().unwrap(),
                "--http-listen",
                "127.0.0.1:0",
                "--https-listen",
                "off",
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .stdout(std::process::Stdio::piped()),
    );
    let mut stdout = std::io::BufReader::new(proxy.child().stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    let port: u16 = line.trim().rsplit(':').next().unwrap().parse().unwrap();
    let mut metrics_line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut metrics_line).unwrap();
    let metrics_url = metrics_line
        .trim()
        .strip_prefix("metrics on ")
        .unwrap()
        .to_string();
    let answer = curl(port, "other.paz.localhost");
    assert!(
        answer.contains("no app serves other.paz.localhost") && answer.ends_with(" 404"),
        "{answer}"
    );
    let metrics = Command::new("curl")
        .args(["-s", &metrics_url])
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    assert!(
        metrics.contains("paz_proxy_requests_total{app=\"-\",status=\"404\"} 1"),
        "{metrics}"
    );
    proxy.signal(Signal::SIGTERM);
    assert!(proxy
        .wait_timeout(Duration::from_secs(30))
        .unwrap()
        .success());
}

/// Runs `command ARGS` as the unprivileged user `nobody`, as a local user
/// without root would.
fn as_nobody(command: &str, args: &[&str]) -> std::process::Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(command)
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_user_reads_nothing_of_the_data_dir_and_gets_no_answer_from_its_etcd() {
    let dir = tests::temp_dir();
    let data = dir.path();
    let running = start(&["--data-dir", data.to_str().unwrap()], &[]);
    assert!(
        running.etcd_url.starts_with("https://"),
        "{}",
        running.etcd_url
    );

    // Nothing under the data dir is open to another user...
    use std::os::unix::fs::PermissionsExt;
    let mut open = Vec::new();
    let mut pending = vec![data.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.permissions().mode() & 0o077 != 0 && !meta.file_type().is_symlink() {
            open.push(format!(
                "{} {:o}",
                path.display(),
                meta.permissions().mode()
            ));
        }
        if meta.is_dir() {
            pending.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
    }
    assert!(open.is_empty(), "open to other users: {open:?}");
    assert_eq!(
        std::fs::metadata(data).unwrap().permissions().mode() & 0o777,
        0o700
    );
    // ...and a local user without root is refused each file, the etcd URL
    // and Paz's certificates among them.
    for file in [
        "etcd.url",
        "internal-tokens.json",
        "etcd-tls/client-key.pem",
    ] {
        let path = data.join(file);
        assert!(path.is_file(), "{file} exists");
        let read = as_nobody("cat", &[path.to_str().unwrap()]);
        assert!(!read.status.success(), "nobody read {file}");
        assert!(
            String::from_utf8_lossy(&read.stderr).contains("Permission denied"),
            "{}",
            String::from_utf8_lossy(&read.stderr)
        );
    }

    // Its etcd answers nobody without Paz's client certificate, not even
    // root, TLS checks skipped or not: no read of the tokens, no admin key written.
    let etcdctl = |user: &str, args: &[&str]| {
        let mut command = if user == "nobody" {
            let mut command = Command::new("setpriv");
            command.args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--",
                "etcdctl",
            ]);
            command
        } else {
            Command::new("etcdctl")
        };
        command
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                &running.etcd_url,
                "--command-timeout=3s",
                "--dial-timeout=3s",
            ])
            .args(args)
            .output()
            .unwrap()
    };
    for user in ["nobody", "root"] {
        for args in [
            vec!["get", "--prefix", "/paz/tokens"],
            vec![
                "--insecure-skip-tls-verify",
                "get",
                "--prefix",
                "/paz/tokens",
            ],
            vec![
                "--insecure-skip-tls-verify",
                "put",
                "/paz/keys/forged",
                "{}",
            ],
        ] {
            let output = etcdctl(user, &args);
            assert!(!output.status.success(), "{user} {args:?} got an answer");
        }
    }
    // With Paz's certificate (root can read it) the same etcd answers, and
    // nothing was written by the refused calls.
    let tls = running.etcd_tls.clone().unwrap();
    let with_certs = etcdctl(
        "root",
        &[
            "--cacert",
            tls.join("ca.pem").to_str().unwrap(),
            "--cert",
            tls.join("client.pem").to_str().unwrap(),
            "--key",
            tls.join("client-key.pem").to_str().unwrap(),
            "get",
            "--prefix",
            "--keys-only",
            "/paz/keys/",
        ],
    );
    assert!(
        with_certs.status.success(),
        "{}",
        String::from_utf8_lossy(&with_certs.stderr)
    );
    assert!(!String::from_utf8_lossy(&with_certs.stdout).contains("forged"));
    let store = running.store("/paz").await;
    assert_eq!(
        store
            .get(&store.keys().domain())
            .await
            .unwrap()
            .unwrap()
            .value,
        "paz.localhost"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paz_etcd_tls_makes_certificates_that_a_shared_etcd_and_paz_use() {
    let dir = tests::temp_dir();
    let tls = dir.path().join("etcd-tls");
    // The README's several hosts: etcd on another address than loopback's first.
    let made = paz()
        .args(["etcd-tls", tls.to_str().unwrap(), "--host", "127.0.0.2"])
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    use std::os::unix::fs::PermissionsExt;
    for file in [
        "ca.pem",
        "server.pem",
        "server-key.pem",
        "client.pem",
        "client-key.pem",
    ] {
        let mode = std::fs::metadata(tls.join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    let port = |ip: &str| {
        std::net::TcpListener::bind((ip, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (client, peer) = (port("127.0.0.2"), port("127.0.0.2"));
    let url = format!("https://127.0.0.2:{client}");
    let file = |name: &str| tls.join(name).to_str().unwrap().to_string();
    let _etcd = tests::ChildGuard::spawn(
        Command::new("etcd")
            .args(["--name", "shared", "--data-dir"])
            .arg(dir.path().join("etcd"))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args(["--listen-peer-urls", &format!("http://127.0.0.2:{peer}")])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.2:{peer}"),
            ])
            .args([
                "--initial-cluster",
                &format!("shared=http://127.0.0.2:{peer}"),
            ])
            .args(["--client-cert-auth", "--trusted-ca-file", &file("ca.pem")])
            .args([
                "--cert-file",
                &file("server.pem"),
                "--key-file",
                &file("server-key.pem"),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    // paz's local commands reach it with --etcd-tls, and only with it.
    let key = tests::SshIdentity::new("ed25519");
    let add = |with_tls: bool| {
        let mut command = paz();
        command
            .args(["keys", "add", "ops"])
            .arg(key.private_key.with_extension("pub"));
        command.args(["--role", "admin", "--etcd", &url]);
        if with_tls {
            command.args(["--etcd-tls", tls.to_str().unwrap()]);
        }
        command.output().unwrap()
    };
    tests::eventually(
        "the key to be added over --etcd-tls",
        Duration::from_secs(10),
        async || add(true).status.success().then_some(()),
    )
    .await;
    let refused = add(false);
    assert!(!refused.status.success());
    let store = tests::etcd::connect_with_tls(&url, "/paz", Some(&tls)).await;
    let keys = store.list(&store.keys().ssh_keys()).await.unwrap();
    assert_eq!(keys.entries.len(), 1);
}

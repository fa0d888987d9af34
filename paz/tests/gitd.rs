//! gitd with the real OpenSSH client and the real git: pushes, clones, the deploy
//! hook, rights, refusals, and the SSH verbs.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use store::records::Role;
use tests::SshIdentity;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_push_creates_the_app_and_streams_the_deploy_live() {
    let fixture = fixture("gitd-push").await;
    let tree = work_tree(&fixture.admin, &["first version"]);
    let sha = run_git(&fixture.admin, tree.path(), &["rev-parse", "HEAD"]);
    let gate = fixture.handler.hold();

    // The handler waits after its first line until the test has seen that line
    // on the pushing client: buffered output would never arrive, and the push
    // would never end.
    let mut push = fixture
        .admin
        .git(tree.path())
        .args(["push", &fixture.url("demo"), "main"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(push.stderr.take().unwrap());
    let mut seen = Vec::new();
    let mut line = String::new();
    while lines.read_line(&mut line).unwrap() > 0 {
        let text = line.trim().to_string();
        line.clear();
        if text.starts_with("remote: step 1") {
            assert!(
                push.try_wait().unwrap().is_none(),
                "the push is still running"
            );
            gate.add_permits(1);
        }
        seen.push(text);
    }
    assert!(push.wait().unwrap().success(), "{seen:#?}");
    let steps: Vec<&String> = seen
        .iter()
        .filter(|l| l.starts_with("remote: step"))
        .collect();
    assert_eq!(steps.len(), 3, "{seen:#?}");
    assert!(steps[0].starts_with(&format!("remote: step 1: building {}", &sha[..7])));
    assert!(steps[1].starts_with("remote: step 2: commit says first version"));
    assert!(steps[2].starts_with("remote: step 3: deployed demo by admin"));

    assert_eq!(fixture.handler.pushed(), vec![sha.clone()]);
    let app = store::AppName::new("demo").unwrap();
    assert!(fixture
        .store
        .get(&fixture.store.keys().app(&app))
        .await
        .unwrap()
        .is_some());
    assert!(fixture.repo("demo").join("hooks/pre-receive").exists());
    assert_eq!(
        remote_ref(&fixture, &fixture.admin, "demo", "refs/heads/main"),
        Some(sha)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_deploy_rejects_the_push_and_discards_its_objects() {
    let fixture = fixture("gitd-reject").await;
    let tree = work_tree(&fixture.admin, &["good"]);
    let good = run_git(&fixture.admin, tree.path(), &["rev-parse", "HEAD"]);
    run_git(
        &fixture.admin,
        tree.path(),
        &["push", "-q", &fixture.url("demo"), "main"],
    );

    std::fs::write(tree.path().join("new.txt"), "bad\n").unwrap();
    run_git(&fixture.admin, tree.path(), &["add", "."]);
    run_git(
        &fixture.admin,
        tree.path(),
        &["commit", "-q", "-m", "please fail"],
    );
    let bad = run_git(&fixture.admin, tree.path(), &["rev-parse", "HEAD"]);
    let output = fixture
        .admin
        .git(tree.path())
        .args(["push", &fixture.url("demo"), "main"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let text = stderr(&output);
    assert!(
        text.contains("remote: deploy failed: the test handler refuses commits that say fail"),
        "{text}"
    );
    assert!(text.contains("pre-receive hook declined"), "{text}");
    assert_eq!(
        remote_ref(&fixture, &fixture.admin, "demo", "refs/heads/main"),
        Some(good)
    );
    let exists = Command::new("git")
        .args(["cat-file", "-e", &bad])
        .current_dir(fixture.repo("demo"))
        .status()
        .unwrap();
    assert!(
        !exists.success(),
        "the rejected commit's objects were discarded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_to_another_branch_is_stored_and_not_deployed() {
    let fixture = fixture("gitd-branch").await;
    let tree = work_tree(&fixture.admin, &["on a feature"]);
    let sha = run_git(&fixture.admin, tree.path(), &["rev-parse", "HEAD"]);
    let output = fixture
        .admin
        .git(tree.path())
        .args(["push", &fixture.url("demo"), "main:feature"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("remote: stored refs/heads/feature; nothing was deployed (pushes to main or master deploy)"),
        "{}",
        stderr(&output)
    );
    assert!(fixture.handler.pushed().is_empty());
    assert_eq!(
        remote_ref(&fixture, &fixture.admin, "demo", "refs/heads/feature"),
        Some(sha)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clone_works_with_rights_and_is_refused_without() {
    let fixture = fixture("gitd-clone").await;
    let tree = work_tree(&fixture.admin, &["cloneable"]);
    run_git(
        &fixture.admin,
        tree.path(),
        &["push", "-q", &fixture.url("demo"), "main"],
    );

    let deployer = SshIdentity::new("ecdsa");
    add_key(&fixture.store, &deployer, "dana", Role::Deployer, &["demo"]).await;
    let outsider = SshIdentity::new("rsa");
    add_key(
        &fixture.store,
        &outsider,
        "olga",
        Role::Deployer,
        &["other"],
    )
    .await;

    for (who, protocol) in [(&fixture.admin, "2"), (&deployer, "0")] {
        let target = tests::temp_dir();
        let output = who
            .git(target.path())
            .args([
                "-c",
                &format!("protocol.version={protocol}"),
                "clone",
                "-q",
                &fixture.url("demo"),
                "copy",
            ])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "protocol {protocol}: {}",
            stderr(&output)
        );
        assert_eq!(
            std::fs::read_to_string(target.path().join("copy/file.txt")).unwrap(),
            "version 0\n"
        );
    }

    let target = tests::temp_dir();
    let output = outsider
        .git(target.path())
        .args(["clone", "-q", &fixture.url("demo"), "copy"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("paz: `olga` may not use app `demo`: its apps are other"),
        "{}",
        stderr(&output)
    );
    assert!(!target.path().join("copy/file.txt").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_say_why_and_change_nothing() {
    let fixture = fixture("gitd-refusals").await;
    let tree = work_tree(&fixture.admin, &["base"]);
    run_git(
        &fixture.admin,
        tree.path(),
        &["push", "-q", &fixture.url("demo"), "main"],
    );
    let deployer = SshIdentity::new("ed25519");
    add_key(
        &fixture.store,
        &deployer,
        "dana",
        Role::Deployer,
        &["other"],
    )
    .await;
    let stranger = SshIdentity::new("ed25519");
    let before = fixture.state().await;

    // An unknown key cannot log in.
    let output = fixture.ssh(&stranger, &["apps:list"]);
    assert_eq!(output.status.code(), Some(255));
    assert!(
        stderr(&output).contains("Permission denied (publickey)"),
        "{}",
        stderr(&output)
    );

    // A deployer may not push to an app outside its list, nor create apps, nor manage keys.
    let output = deployer
        .git(tree.path())
        .args(["push", &fixture.url("demo"), "main:other"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("paz: `dana` may not use app `demo`: its apps are other"),
        "{}",
        stderr(&output)
    );
    let output = deployer
        .git(tree.path())
        .args(["push", &fixture.url("other"), "main"])
        .output()
        .unwrap();
    assert!(
        stderr(&output).contains("paz: app `other` does not exist, and `dana` may not create apps"),
        "{}",
        stderr(&output)
    );
    let output = deployer.ssh_with_input(
        "paz@127.0.0.1",
        fixture.port,
        &["ssh-keys:add", "eve"],
        stranger.public_key.as_bytes(),
    );
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output).trim(),
        "paz: `dana` is a deployer and may not add keys: that needs the admin role"
    );

    // Bad repo paths are refused before git runs.
    for path in ["'../../etc'", "'/tmp/x'", "'a b'"] {
        let output = fixture.ssh(&fixture.admin, &[&format!("git-receive-pack {path}")]);
        assert_eq!(output.status.code(), Some(1), "{path}");
        assert!(
            stderr(&output).starts_with("paz: repository path `"),
            "{path}: {}",
            stderr(&output)
        );
    }

    // Unknown verbs, shells, ptys, subsystems and forwarding.
    let output = fixture.ssh(&fixture.admin, &["rm", "-rf", "/"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output).trim(),
        "paz: unknown verb `rm`: run `help` to list the verbs"
    );
    let output = fixture
        .admin
        .ssh_to("paz@127.0.0.1", fixture.port, &[])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("there is no shell here"),
        "{}",
        stderr(&output)
    );
    // A pty is granted (`run` gives it to its one-off); any other verb's
    // lines then end with CRLF, for the client's raw terminal.
    let output = fixture
        .admin
        .ssh_to(
            "paz@127.0.0.1",
            fixture.port,
            &["-tt", "-o", "LogLevel=INFO", "apps:list"],
        )
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).ends_with("\r\n"),
        "{:?}",
        String::from_utf8_lossy(&output.stdout)
    );
    let output = fixture
        .admin
        .ssh_to("paz@127.0.0.1", fixture.port, &["-s", "sftp"])
        .output()
        .unwrap();
    assert_ne!(output.status.code(), Some(0), "no sftp subsystem");
    let output = fixture
        .admin
        .ssh_to("paz@127.0.0.1", fixture.port, &["-W", "127.0.0.1:22"])
        .output()
        .unwrap();
    assert_ne!(output.status.code(), Some(0));
    assert!(
        stderr(&output).contains("administratively prohibited"),
        "{}",
        stderr(&output)
    );
    let output = fixture
        .admin
        .ssh_to(
            "paz@127.0.0.1",
            fixture.port,
            &[
                "-N",
                "-o",
                "ExitOnForwardFailure=yes",
                "-R",
                "0:127.0.0.1:22",
            ],
        )
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(255));
    assert!(
        stderr(&output).contains("remote port forwarding failed"),
        "{}",
        stderr(&output)
    );

    assert_eq!(
        fixture.state().await,
        before,
        "nothing on disk or in etcd changed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_key_is_refused_on_the_next_connection() {
    let fixture = fixture("gitd-removed-key").await;
    let deployer = SshIdentity::new("ed25519");
    add_key(&fixture.store, &deployer, "dana", Role::Deployer, &[]).await;
    assert_eq!(
        fixture.ssh(&deployer, &["apps:list"]).status.code(),
        Some(0)
    );
    let output = fixture.ssh(&fixture.admin, &["ssh-keys:remove", "dana"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let output = fixture.ssh(&deployer, &["apps:list"]);
    assert_eq!(output.status.code(), Some(255));
    assert!(stderr(&output).contains("Permission denied (publickey)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pushes_to_one_app_run_one_after_the_other() {
    let fixture = fixture("gitd-concurrent").await;
    let tree = work_tree(&fixture.admin, &["base"]);
    run_git(
        &fixture.admin,
        tree.path(),
        &["push", "-q", &fixture.url("demo"), "main"],
    );
    // Two new commits: the second push builds on the first.
    std::fs::write(tree.path().join("file.txt"), "second\n").unwrap();
    run_git(&fixture.admin, tree.path(), &["commit", "-qam", "second"]);
    let second = run_git(&fixture.admin, tree.path(), &["rev-parse", "HEAD"]);
    std::fs::write(tree.path().join("file.txt"), "third\n").unwrap();
    run_git(&fixture.admin, tree.path(), &["commit", "-qam", "third"]);
    let third = run_git(&fixture.admin, tree.path(), &["rev-parse", "HEAD"]);

    let gate = fixture.handler.hold();
    let spawn_push = |refspec: String| {
        let mut command = fixture.admin.git(tree.path());
        command
            .args(["push", &fixture.url("demo"), &refspec])
            .stderr(Stdio::piped());
        command.spawn().unwrap()
    };
    let mut first = spawn_push(format!("{second}:refs/heads/main"));
    let mut first_err = BufReader::new(first.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("remote: step 1") {
        line.clear();
        assert!(
            first_err.read_line(&mut line).unwrap() > 0,
            "the first push ended early"
        );
    }
    // The first push is held in its deploy; the second must wait for it.
    let mut second_push = spawn_push(format!("{third}:refs/heads/main"));
    let mut second_err = BufReader::new(second_push.stderr.take().unwrap());
    line.clear();
    second_err.read_line(&mut line).unwrap();
    assert_eq!(
        line.trim(),
        "paz: waiting for another push to demo to finish..."
    );
    gate.add_permits(2);
    let mut rest = String::new();
    first_err.read_to_string(&mut rest).unwrap();
    assert!(first.wait().unwrap().success(), "{rest}");
    let mut rest = String::new();
    second_err.read_to_string(&mut rest).unwrap();
    assert!(second_push.wait().unwrap().success(), "{rest}");
    assert!(rest.contains("remote: step 3: deployed demo"), "{rest}");

    let pushed = fixture.handler.pushed();
    assert_eq!(pushed[pushed.len() - 2..], [second, third.clone()]);
    assert_eq!(
        remote_ref(&fixture, &fixture.admin, "demo", "refs/heads/main"),
        Some(third)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_key_is_made_once_and_kept() {
    let store = tests::test_store("gitd-host-key").await;
    let data = tests::temp_dir();
    let handler = TestHandler::default();
    let (_, stop, first) = start_gitd(store.clone(), data.path(), handler.clone(), |_| {}).await;
    drop(stop);
    let (_, _stop, second) = start_gitd(store, data.path(), handler, |_| {}).await;
    assert!(first.starts_with("ssh-ed25519 "), "{first}");
    assert_eq!(first, second);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(data.path().join("ssh/host_ed25519"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_excess_connections_are_closed() {
    let store = tests::test_store("gitd-limits").await;
    let data = tests::temp_dir();
    let (port, _stop, _) = start_gitd(store, data.path(), TestHandler::default(), |config| {
        config.max_connections = 1;
        config.handshake_timeout = Duration::from_secs(1);
    })
    .await;
    let read_all = |mut stream: std::net::TcpStream| {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut received = Vec::new();
        let _ = stream.read_to_end(&mut received);
        String::from_utf8_lossy(&received).to_string()
    };
    let silent = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // The one slot is taken: a second connection is closed without a word.
    let excess = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    assert_eq!(read_all(excess), "");
    // The silent one gets the server's greeting, then is closed by the handshake timeout.
    assert!(read_all(silent).starts_with("SSH-2.0-paz"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_type_logs_in() {
    let fixture = fixture("gitd-key-types").await;
    for kind in ["ecdsa", "rsa"] {
        let identity = SshIdentity::new(kind);
        add_key(&fixture.store, &identity, kind, Role::Admin, &[]).await;
        let output = fixture.ssh(&identity, &["apps:list", "--json"]);
        assert!(output.status.success(), "{kind}: {}", stderr(&output));
        assert_eq!(stdout(&output), "[]");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_from_one_address_do_not_lock_out_another() {
    let fixture = fixture("gitd-per-address").await;
    // 120 idle connections from 127.0.0.2 (loopback, another address): more
    // than the whole cap of 100. Those past its per-address share are closed.
    let mut idle = Vec::new();
    for _ in 0..120 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        if let Ok(stream) = socket
            .connect(format!("127.0.0.1:{}", fixture.port).parse().unwrap())
            .await
        {
            idle.push(stream);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A user from 127.0.0.1 still gets in and is served.
    let output = fixture.ssh(&fixture.admin, &["apps:list", "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "[]");
    // And what the attacker holds open is its share, not the server's slots.
    let mut open = 0;
    for stream in &idle {
        let mut byte = [0u8; 1];
        // The server speaks first (its SSH banner) on the connections it kept.
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(200), stream.peek(&mut byte)).await
        {
            if n > 0 {
                open += 1;
            }
        }
    }
    assert_eq!(open, 10, "connections kept from one address");
}

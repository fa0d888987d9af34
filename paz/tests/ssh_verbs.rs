//! The SSH verbs with the real OpenSSH client: each does its job, refuses bad
//! input with one clear line and exit status 1, and changes nothing then.

mod common;

use common::*;
use tests::SshIdentity;

/// Runs a verb as `who`; returns (exit code, stdout, stderr).
fn verb(fixture: &Fixture, who: &SshIdentity, args: &[&str]) -> (i32, String, String) {
    let output = fixture.ssh(who, args);
    // The first connection of an identity makes ssh note the host key.
    let err: Vec<String> = stderr(&output)
        .lines()
        .filter(|line| !line.starts_with("Warning: Permanently added"))
        .map(str::to_string)
        .collect();
    (
        output.status.code().unwrap_or(-1),
        stdout(&output),
        err.join("\n").trim().to_string(),
    )
}

/// Asserts the verb fails with exactly `message` on stderr and changes nothing.
async fn refused(fixture: &Fixture, who: &SshIdentity, args: &[&str], message: &str) {
    let before = fixture.state().await;
    let (code, out, err) = verb(fixture, who, args);
    assert_eq!((code, out.as_str()), (1, ""), "{args:?}: {err}");
    assert_eq!(err, format!("paz: {message}"), "{args:?}");
    assert_eq!(fixture.state().await, before, "{args:?} changed something");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_are_created_listed_shown_and_destroyed() {
    let fixture = fixture("verbs-apps").await;
    let admin = &fixture.admin;
    assert_eq!(
        verb(&fixture, admin, &["apps:create", "web"]),
        (0, "created app web".into(), String::new())
    );
    refused(
        &fixture,
        admin,
        &["apps:create", "web"],
        "app `web` already exists",
    )
    .await;
    refused(
        &fixture,
        admin,
        &["apps:create", "My_App"],
        "app name `My_App` is invalid: it must start with a lowercase letter; use 1 to 63 lowercase letters, digits and dashes, starting with a letter and not ending with a dash",
    )
    .await;
    refused(&fixture, admin, &["apps:create"], "usage: apps:create APP").await;
    refused(
        &fixture,
        admin,
        &["apps:create", "a", "b"],
        "usage: apps:create APP",
    )
    .await;
    refused(
        &fixture,
        admin,
        &["apps:create", "a", "--bogus"],
        "unknown option `--bogus`: usage: apps:create APP",
    )
    .await;

    let (code, out, _) = verb(&fixture, admin, &["apps:list", "--json"]);
    assert_eq!(
        (code, serde_json::from_str::<Vec<String>>(&out).unwrap()),
        (0, vec!["web".to_string()])
    );
    let (code, out, _) = verb(&fixture, admin, &["apps:info", "web"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("app        web") && out.contains("release    none yet"),
        "{out}"
    );
    let (_, out, _) = verb(&fixture, admin, &["apps:info", "web", "--json"]);
    let info: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(info["app"]["name"], "web");
    assert_eq!(info["app"]["health"]["path"], "/");
    refused(
        &fixture,
        admin,
        &["apps:info", "nope"],
        "app `nope` does not exist: create it with apps:create nope",
    )
    .await;

    // A push makes the repo; destroy needs --force and then removes state and repo.
    let tree = work_tree(admin, &["v1"]);
    run_git(
        admin,
        tree.path(),
        &["push", "-q", &fixture.url("web"), "main"],
    );
    assert!(fixture.repo("web").exists());
    refused(
        &fixture,
        admin,
        &["apps:destroy", "web"],
        "this deletes app `web`, its instances, releases, builds and git repo: run apps:destroy web --force",
    )
    .await;
    assert_eq!(
        verb(&fixture, admin, &["apps:destroy", "web", "--force"]).0,
        0
    );
    assert!(!fixture.repo("web").exists());
    let everything = fixture
        .store
        .list(&fixture.store.keys().everything())
        .await
        .unwrap();
    assert!(
        everything
            .entries
            .iter()
            .all(|e| !e.key.contains("/apps/web")),
        "{:?}",
        everything.entries
    );
    assert_eq!(
        verb(&fixture, admin, &["apps:list"]).1,
        "no apps yet: create one with apps:create APP"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_is_set_read_and_unset() {
    let fixture = fixture("verbs-config").await;
    let admin = &fixture.admin;
    verb(&fixture, admin, &["apps:create", "web"]);
    let (code, out, err) = verb(
        &fixture,
        admin,
        &["config:set", "web", "GREETING=hello", "MODE=prod"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "set GREETING, MODE on web; it takes effect with the next release"
    );
    // The ssh client joins the words with spaces: quotes keep a value with spaces whole.
    assert_eq!(
        verb(&fixture, admin, &["config:set", "web", "'QUOTED=a b'"]).0,
        0
    );
    assert_eq!(
        verb(&fixture, admin, &["config:get", "web", "QUOTED"]).1,
        "a b"
    );
    refused(
        &fixture,
        admin,
        &["config:set", "web", "OTHER=hello", "world"],
        "`world` is not KEY=VALUE: usage: config:set APP KEY=VALUE ...",
    )
    .await;
    assert_eq!(
        verb(&fixture, admin, &["config:show", "web"]).1,
        "GREETING=hello\nMODE=prod\nQUOTED=a b"
    );
    refused(
        &fixture,
        admin,
        &["config:set", "web", "1BAD=x"],
        "config key `1BAD` is invalid: use letters, digits and _, not starting with a digit",
    )
    .await;
    refused(
        &fixture,
        admin,
        &["config:set", "web", "NOEQUALS"],
        "`NOEQUALS` is not KEY=VALUE: usage: config:set APP KEY=VALUE ...",
    )
    .await;
    refused(
        &fixture,
        admin,
        &["config:unset", "web", "MODE", "MISSING"],
        "web has no config MISSING: nothing was changed",
    )
    .await;
    refused(
        &fixture,
        admin,
        &["config:get", "web", "MISSING"],
        "web has no config MISSING: see config:show web",
    )
    .await;
    assert_eq!(verb(&fixture, admin, &["config:unset", "web", "MODE"]).0, 0);
    let (_, out, _) = verb(&fixture, admin, &["config:show", "web", "--json"]);
    let env: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        env,
        serde_json::json!({"GREETING": "hello", "QUOTED": "a b"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domains_and_health_checks_are_validated() {
    let fixture = fixture("verbs-domains").await;
    let admin = &fixture.admin;
    fixture
        .store
        .put(&fixture.store.keys().domain(), &"paz.example".to_string())
        .await
        .unwrap();
    verb(&fixture, admin, &["apps:create", "web"]);
    verb(&fixture, admin, &["apps:create", "api"]);
    assert_eq!(
        verb(&fixture, admin, &["domains:add", "web", "www.example.com"]).1,
        "added www.example.com to web"
    );
    assert_eq!(
        verb(&fixture, admin, &["domains:list", "web"]).1,
        "web.paz.example\nwww.example.com"
    );
    refused(
        &fixture,
        admin,
        &["domains:add", "api", "www.example.com"],
        "domain www.example.com is already routed to app `web`",
    )
    .await;
    refused(
        &fixture,
        admin,
        &["domains:add", "web", "www.example.com"],
        "web already has domain www.example.com",
    )
    .await;
    refused(&fixture, admin, &["domains:add", "web", "Bad_Domain"], "domain `Bad_Domain` is invalid: it has a character other than a-z, 0-9, - and .; use dot-separated labels of lowercase letters, digits and dashes, such as paz.example.com").await;
    refused(
        &fixture,
        admin,
        &["domains:remove", "web", "other.example.com"],
        "web has no domain other.example.com",
    )
    .await;
    assert_eq!(
        verb(
            &fixture,
            admin,
            &["domains:remove", "web", "www.example.com"]
        )
        .0,
        0
    );

    let (code, out, _) = verb(
        &fixture,
        admin,
        &["health:set", "web", "path=/up", "timeout=10", "attempts=5"],
    );
    assert_eq!(
        (code, out.as_str()),
        (0, "web health check: GET /up within 10s, 5 attempts")
    );
    refused(
        &fixture,
        admin,
        &["health:set", "web", "path=up"],
        "`path=up` is invalid: the path starts with / and has no spaces",
    )
    .await;
    refused(
        &fixture,
        admin,
        &["health:set", "web", "timeout=0"],
        "`timeout=0` is invalid: use a whole number from 1 to 300",
    )
    .await;
    refused(
        &fixture,
        admin,
        &["health:set", "web", "retries=3"],
        "`retries=3` is not a health setting: use path=/up, timeout=SECONDS or attempts=N",
    )
    .await;
    refused(
        &fixture,
        admin,
        &["health:set", "web"],
        "usage: health:set APP [path=/up] [timeout=5] [attempts=3]",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_added_from_stdin_listed_and_removed() {
    let fixture = fixture("verbs-keys").await;
    let admin = &fixture.admin;
    verb(&fixture, admin, &["apps:create", "web"]);
    let dana = SshIdentity::new("ed25519");
    let output = admin.ssh_with_input(
        "paz@127.0.0.1",
        fixture.port,
        &["ssh-keys:add", "dana", "--apps", "web"],
        dana.public_key.as_bytes(),
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        format!("added key dana  deployer  {}  web", dana.fingerprint())
    );
    let (_, listed, _) = verb(&fixture, admin, &["ssh-keys:list"]);
    assert!(
        listed.contains(&format!("dana  deployer  {}  web", dana.fingerprint())),
        "{listed}"
    );

    // The new deployer may use web, and only web.
    assert_eq!(verb(&fixture, &dana, &["apps:list"]).1, "web");
    assert_eq!(verb(&fixture, &dana, &["config:set", "web", "A=1"]).0, 0);
    assert_eq!(
        verb(&fixture, &dana, &["ports:set", "web", "8080"]).1,
        "web listens on port 8080; it takes effect with the next release"
    );
    verb(&fixture, admin, &["apps:create", "other"]);
    refused(
        &fixture,
        &dana,
        &["ports:set", "other", "8080"],
        "`dana` may not use app `other`: its apps are web; an admin can add it with ssh-keys:add --apps",
    )
    .await;
    refused(
        &fixture,
        &dana,
        &["apps:create", "mine"],
        "`dana` is a deployer and may not create apps: that needs the admin role",
    )
    .await;
    refused(
        &fixture,
        &dana,
        &["tokens:list"],
        "`dana` is a deployer and may not list tokens: that needs the admin role",
    )
    .await;

    let before = fixture.state().await;
    let another_key = SshIdentity::new("ed25519").public_key;
    for (input, args, message) in [
        (dana.public_key.as_str(), vec!["ssh-keys:add", "again"], "this key is already added as `dana`".to_string()),
        (another_key.as_str(), vec!["ssh-keys:add", "dana"], "a key named `dana` exists: remove it first or choose another name".to_string()),
        ("not a key", vec!["ssh-keys:add", "x"], "not an OpenSSH public key: give a line such as `ssh-ed25519 AAAA... me@host`".to_string()),
        ("", vec!["ssh-keys:add", "x"], "no public key given: pass the .pub file on stdin".to_string()),
        (dana.public_key.as_str(), vec!["ssh-keys:add", "x", "--role", "root"], "role `root` is invalid: use admin, deployer or machine".to_string()),
        (dana.public_key.as_str(), vec!["ssh-keys:add", "a/b"], "key name `a/b` is invalid: it has a character that is not allowed; use 1 to 128 letters, digits, dots, dashes, underscores or colons".to_string()),
    ] {
        let output = admin.ssh_with_input("paz@127.0.0.1", fixture.port, &args, input.as_bytes());
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert_eq!(stderr(&output).trim(), format!("paz: {message}"), "{args:?}");
    }
    let private_key = std::fs::read_to_string(&dana.private_key).unwrap();
    let output = admin.ssh_with_input(
        "paz@127.0.0.1",
        fixture.port,
        &["ssh-keys:add", "x"],
        private_key.as_bytes(),
    );
    assert_eq!(
        stderr(&output).trim(),
        "paz: that is a private key: give the public key (the .pub file)"
    );
    assert_eq!(
        fixture.state().await,
        before,
        "refused key changes changed nothing"
    );

    refused(
        &fixture,
        admin,
        &["ssh-keys:remove", "admin"],
        "`admin` is the last admin key: add another admin key before removing it",
    )
    .await;
    refused(
        &fixture,
        admin,
        &["ssh-keys:remove", "nobody"],
        "no key named or with fingerprint `nobody`: see ssh-keys:list",
    )
    .await;
    assert_eq!(
        verb(&fixture, admin, &["ssh-keys:remove", &dana.fingerprint()]).0,
        0
    );
    assert_eq!(fixture.ssh(&dana, &["apps:list"]).status.code(), Some(255));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_show_their_secret_once_and_store_only_its_hash() {
    let fixture = fixture("verbs-tokens").await;
    let admin = &fixture.admin;
    let (code, out, _) = verb(
        &fixture,
        admin,
        &[
            "tokens:create",
            "ci",
            "--role",
            "deployer",
            "--apps",
            "web",
            "--json",
        ],
    );
    assert_eq!(code, 0);
    let created: serde_json::Value = serde_json::from_str(&out).unwrap();
    let secret = created["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("paz_") && secret.len() > 40, "{secret}");
    let stored = fixture
        .store
        .get(&fixture.store.keys().token("ci").unwrap())
        .await
        .unwrap()
        .unwrap()
        .value;
    assert_eq!(stored.secret_sha256, store::records::secret_sha256(&secret));
    let everything = fixture
        .store
        .list(&fixture.store.keys().everything())
        .await
        .unwrap();
    assert!(
        everything
            .entries
            .iter()
            .all(|e| !String::from_utf8_lossy(&e.value).contains(&secret)),
        "the secret itself is stored nowhere"
    );
    assert_eq!(
        verb(&fixture, admin, &["tokens:list"]).1,
        "ci  deployer  web"
    );
    refused(
        &fixture,
        admin,
        &["tokens:create", "ci"],
        "a token named `ci` exists: revoke it first or choose another name",
    )
    .await;
    refused(
        &fixture,
        admin,
        &["tokens:create", "x", "--role", "admin", "--apps", "web"],
        "--apps is for deployers: an admin may use every app, a machine only pulls",
    )
    .await;
    assert_eq!(
        verb(&fixture, admin, &["tokens:revoke", "ci"]).1,
        "revoked token ci"
    );
    refused(
        &fixture,
        admin,
        &["tokens:revoke", "ci"],
        "no token named `ci`: see tokens:list",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_lists_every_verb() {
    let fixture = fixture("verbs-help").await;
    let (code, out, _) = verb(&fixture, &fixture.admin, &["help"]);
    assert_eq!(code, 0);
    for name in [
        "apps:create APP",
        "ssh-keys:add NAME",
        "tokens:create NAME",
        "config:set APP KEY=VALUE",
        "domains:add APP DOMAIN",
        "health:set APP",
    ] {
        assert!(out.contains(name), "{name} missing from:\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployer_cannot_take_another_apps_hostname_or_a_name_nobody_owns() {
    let fixture = fixture("verbs-domain-takeover").await;
    let admin = &fixture.admin;
    fixture
        .store
        .put(&fixture.store.keys().domain(), &"paz.localhost".to_string())
        .await
        .unwrap();
    verb(&fixture, admin, &["apps:create", "one"]);
    verb(&fixture, admin, &["apps:create", "aaa"]);
    let deployer = SshIdentity::new("ed25519");
    add_key(
        &fixture.store,
        &deployer,
        "dev",
        store::records::Role::Deployer,
        &["one"],
    )
    .await;
    for (domain, message) in [
        ("aaa.paz.localhost", "domain aaa.paz.localhost belongs to the app named `aaa`: only names outside paz.localhost (or deeper under it) can be added"),
        ("future.paz.localhost", "domain future.paz.localhost belongs to the app named `future`: only names outside paz.localhost (or deeper under it) can be added"),
        ("one.paz.localhost", "domain one.paz.localhost is one's own name: it is routed already"),
        ("paz.localhost", "domain paz.localhost is the base domain: apps answer at APP.paz.localhost by themselves"),
        ("localhost", "domain localhost names this machine, not an app: add a name under a domain you own"),
        ("10.0.0.1", "domain 10.0.0.1 is an IP address: add a name that resolves to the proxy"),
        ("127.0.0.1", "domain 127.0.0.1 is an IP address: add a name that resolves to the proxy"),
        ("api.one.paz.localhost", "`dev` is a deployer and may not add names under the base domain paz.localhost: that needs the admin role"),
    ] {
        refused(&fixture, &deployer, &["domains:add", "one", domain], message).await;
    }
    // An admin is held to the same names, but may route one deeper under the base.
    refused(
        &fixture,
        admin,
        &["domains:add", "one", "aaa.paz.localhost"],
        "domain aaa.paz.localhost belongs to the app named `aaa`: only names outside paz.localhost (or deeper under it) can be added",
    )
    .await;
    assert_eq!(
        verb(
            &fixture,
            admin,
            &["domains:add", "one", "api.one.paz.localhost"]
        )
        .1,
        "added api.one.paz.localhost to one"
    );
    // What a deployer may add: a name of its own, to its own app only.
    assert_eq!(
        verb(&fixture, &deployer, &["domains:add", "one", "www.one.test"]).1,
        "added www.one.test to one"
    );
    refused(
        &fixture,
        &deployer,
        &["domains:add", "aaa", "www.aaa.test"],
        "`dev` may not use app `aaa`: its apps are one; an admin can add it with ssh-keys:add --apps",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_keys_open_connections_are_closed_and_refused() {
    let fixture = fixture("verbs-removed-key").await;
    let admin = &fixture.admin;
    verb(&fixture, admin, &["apps:create", "web"]);
    let dana = SshIdentity::new("ed25519");
    add_key(
        &fixture.store,
        &dana,
        "dana",
        store::records::Role::Deployer,
        &["web"],
    )
    .await;
    // One OpenSSH master connection that later commands are multiplexed over.
    let control = dana.home().join("control.sock");
    let ssh = |extra: &[&str], args: &[&str]| {
        let command = dana.ssh_command();
        let mut parts = command.split_whitespace();
        let mut ssh = std::process::Command::new(parts.next().unwrap());
        ssh.args(parts)
            .args(["-o", &format!("ControlPath={}", control.display())])
            .args(extra)
            .args(["-p", &fixture.port.to_string(), "paz@127.0.0.1"])
            .args(args)
            .env("HOME", dana.home())
            .stdin(std::process::Stdio::null());
        ssh
    };
    let master = ssh(&["-M", "-N", "-f"], &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(master.success(), "the master connection did not start");
    let over_master = |args: &[&str]| ssh(&["-o", "ControlMaster=no"], args).output().unwrap();
    let set = over_master(&["config:set", "web", "A=1"]);
    assert!(set.status.success(), "{}", stderr(&set));

    assert_eq!(verb(&fixture, admin, &["ssh-keys:remove", "dana"]).0, 0);
    // The connection the removed key opened is closed...
    tests::eventually(
        "the removed key's connection to close",
        std::time::Duration::from_secs(10),
        async || {
            let open = ssh(&["-O", "check"], &[])
                .output()
                .unwrap()
                .status
                .success();
            (!open).then_some(())
        },
    )
    .await;
    // ...and nothing runs for it any more, over it or anew.
    let after = over_master(&["config:set", "web", "A=2"]);
    assert!(!after.status.success(), "{}", stdout(&after));
    assert_eq!(verb(&fixture, admin, &["config:get", "web", "A"]).1, "1");
}

//! The REST API from outside: `paz up` on a real etcd, real HTTP, tokens
//! made with the SSH verbs. Each resource does what its verb does, with the
//! token's rights; bad callers and bad input get their status and a reason,
//! and change nothing.

mod common;

use std::io::Write;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tests::SshIdentity;

struct Api {
    running: Running,
    /// After `running` (fields drop in order): this paz up's containers go
    /// once its agent, which would start them again, has stopped.
    _cleanup: tests::DockerCleanup,
    admin_key: SshIdentity,
    _data: tempfile::TempDir,
    http: reqwest::Client,
    store: store::Store,
    /// What `paz up` was started with, to start it again.
    args: Vec<String>,
}

impl Api {
    async fn start() -> Api {
        let admin_key = SshIdentity::new("ed25519");
        let data = tests::temp_dir();
        let key_file = data.path().join("admin.pub");
        std::fs::write(&key_file, &admin_key.public_key).unwrap();
        let args: Vec<String> = [
            "--data-dir",
            data.path().join("paz").to_str().unwrap(),
            "--admin-key",
            key_file.to_str().unwrap(),
        ]
        .map(String::from)
        .into();
        let running = start(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
        let store = running.store("/paz").await;
        let mut cleanup = tests::DockerCleanup::new("api");
        let machine = agent::machine_id(&data.path().join("paz")).unwrap();
        cleanup.track_label(&format!("paz.machine={machine}"));
        Api {
            running,
            _cleanup: cleanup,
            admin_key,
            _data: data,
            http: reqwest::Client::new(),
            store,
            args,
        }
    }

    /// `paz up` with an admin token (its secret) and an app `name`, and the
    /// base image its pushes build on.
    async fn with_app(name: &str) -> (Api, String, &'static str) {
        let docker = tests::docker().await;
        let base = tests::busybox_image(&docker).await;
        let api = Api::start().await;
        let secret = api.token("ops", "admin", &[]);
        let (status, _, body) = api
            .call(
                Some(&secret),
                Method::POST,
                "/apps",
                Some(json!({"name": name})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        (api, secret, base)
    }

    /// Pushes a web app to `app` whose build takes `seconds` (a step of its
    /// own: never Docker's cache, which would make it quick) and waits for
    /// its build to run: the work tree, the push, the build's id, and the
    /// nonce the slow step echoes (`built NONCE`).
    async fn push_slowly(
        &self,
        base: &str,
        app: &str,
        seconds: u32,
        secret: &str,
    ) -> (tempfile::TempDir, tests::ChildGuard, String, String) {
        let nonce = format!("{:x}", rand_nonce());
        let slow = format!("sleep {seconds} && echo built {nonce}");
        let (tree, mut push) = self.app_tree(base, app, &format!("{app} v1"), Some(&slow));
        let push = tests::ChildGuard::spawn(
            push.stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null()),
        );
        let builds = format!("/apps/{app}/builds");
        let id = tests::eventually(
            "the build to run",
            std::time::Duration::from_secs(30),
            async || {
                let (_, _, listed) = self.call(Some(secret), Method::GET, &builds, None).await;
                (listed[0]["build"]["status"] == "running")
                    .then(|| listed[0]["id"].as_str().unwrap().to_string())
            },
        )
        .await;
        (tree, push, id, nonce)
    }

    /// `GET path` as Server-Sent Events, with the token `secret`.
    async fn stream(&self, secret: &str, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(secret)
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap()
    }

    /// Kills `paz up` (SIGKILL: nothing of it ends cleanly; its etcd goes
    /// with it) and starts it again on the same data dir.
    async fn kill_and_restart(&mut self) {
        self.running.paz.signal(nix::sys::signal::Signal::SIGKILL);
        assert!(self
            .running
            .paz
            .wait_timeout(std::time::Duration::from_secs(30))
            .is_some());
        if let Some(etcd) = self.running.etcd_pid {
            tests::eventually_blocking(
                "the local etcd to stop with its paz",
                std::time::Duration::from_secs(30),
                || (!std::path::Path::new(&format!("/proc/{etcd}")).exists()).then_some(()),
            );
        }
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.running = start(&args, &[]);
        self.store = self.running.store("/paz").await;
    }

    /// A new token's secret, made over SSH as an admin would.
    fn token(&self, name: &str, role: &str, apps: &[&str]) -> String {
        let mut args = vec!["tokens:create", name, "--role", role];
        let apps = apps.join(",");
        if !apps.is_empty() {
            args.extend(["--apps", apps.as_str()]);
        }
        let output = self
            .admin_key
            .ssh("paz@127.0.0.1", self.running.ssh_port, &args);
        assert!(output.status.success(), "{}", said(&output));
        stdout(&output)
            .lines()
            .find_map(|line| line.strip_prefix("secret (shown once, keep it safe): "))
            .expect("tokens:create prints the secret")
            .to_string()
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/api/v1{path}", self.running.api_port)
    }

    /// `method path` with `token` and a JSON `body`: the status, the answer.
    async fn call(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, headers, value)
    }

    /// A committed work tree of a web app on `base` whose page says `say`,
    /// with `run` (a Dockerfile `RUN` line's command) if given; and the git
    /// command that pushes it to `app`.
    fn app_tree(
        &self,
        base: &str,
        app: &str,
        say: &str,
        run: Option<&str>,
    ) -> (tempfile::TempDir, std::process::Command) {
        let tree = tests::temp_dir();
        let command =
            serde_json::to_string(&["sh", "-c", "exec httpd -f -p $PORT -h /www"]).unwrap();
        let run = run.map(|run| format!("RUN {run}\n")).unwrap_or_default();
        std::fs::write(
            tree.path().join("Dockerfile"),
            format!("FROM {base}\n{run}COPY index.html /www/index.html\nCMD {command}\n"),
        )
        .unwrap();
        std::fs::write(tree.path().join("index.html"), format!("{say}\n")).unwrap();
        for args in [
            &["init", "-q", "-b", "main"][..],
            &["add", "."],
            &["commit", "-q", "-m", say],
        ] {
            let output = self.admin_key.git(tree.path()).args(args).output().unwrap();
            assert!(output.status.success(), "git {args:?}: {}", said(&output));
        }
        let url = format!("ssh://paz@127.0.0.1:{}/{app}", self.running.ssh_port);
        let mut push = self.admin_key.git(tree.path());
        push.args(["push", &url, "main"]);
        (tree, push)
    }

    /// Every key under Paz's prefix and its revision: what a refused
    /// request must leave as it was.
    async fn state(&self) -> Vec<(String, i64)> {
        key_revisions(&self.store).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_resource_does_what_its_verb_does() {
    let api = Api::start().await;
    let admin = api.token("ops", "admin", &[]);
    let admin = Some(admin.as_str());

    let (status, headers, created) = api
        .call(admin, Method::POST, "/apps", Some(json!({"name": "shop"})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(headers["location"], "/api/v1/apps/shop");
    assert_eq!(created["app"]["name"], "shop");
    assert_eq!(created["url"], "http://shop.paz.localhost");
    assert!(
        headers.contains_key("request-id"),
        "every answer has a Request-Id"
    );

    let (status, _, env) = api
        .call(
            admin,
            Method::PATCH,
            "/apps/shop/config",
            Some(json!({"GREETING": "hi", "OLD": "x"})),
        )
        .await;
    assert_eq!(
        (status, env.clone()),
        (StatusCode::OK, json!({"GREETING": "hi", "OLD": "x"}))
    );
    // Set and unset in one change.
    let (status, _, env) = api
        .call(
            admin,
            Method::PATCH,
            "/apps/shop/config",
            Some(json!({"GREETING": "hello", "OLD": null})),
        )
        .await;
    assert_eq!(
        (status, env),
        (StatusCode::OK, json!({"GREETING": "hello"}))
    );
    let (_, _, env) = api
        .call(admin, Method::GET, "/apps/shop/config", None)
        .await;
    assert_eq!(env, json!({"GREETING": "hello"}));

    let (status, _, domains) = api
        .call(
            admin,
            Method::POST,
            "/apps/shop/domains",
            Some(json!({"domain": "www.shop.test"})),
        )
        .await;
    assert_eq!(
        (status, domains),
        (StatusCode::CREATED, json!(["www.shop.test"]))
    );
    let (_, _, domains) = api
        .call(admin, Method::GET, "/apps/shop/domains", None)
        .await;
    assert_eq!(domains, json!(["shop.paz.localhost", "www.shop.test"]));
    let (status, _, _) = api
        .call(
            admin,
            Method::DELETE,
            "/apps/shop/domains/www.shop.test",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let (status, _, health) = api
        .call(
            admin,
            Method::PUT,
            "/apps/shop/health",
            Some(json!({"path": "/up", "attempts": 5})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (health["path"].clone(), health["attempts"].clone()),
        (json!("/up"), json!(5))
    );
    let (_, _, health) = api
        .call(admin, Method::GET, "/apps/shop/health", None)
        .await;
    assert_eq!(health["timeout"], 5);

    let (status, _, limits) = api
        .call(
            admin,
            Method::PUT,
            "/apps/shop/resources",
            Some(json!({"memory": "256m", "cpus": "0.5"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{limits}");
    assert_eq!(
        limits,
        json!({"all": {"memory": 256 << 20, "nano_cpus": 500_000_000}})
    );
    let (_, _, report) = api
        .call(admin, Method::GET, "/apps/shop/resources", None)
        .await;
    assert_eq!(report["effective"]["web"]["memory"], 256 << 20, "{report}");

    let (status, _, formation) = api
        .call(
            admin,
            Method::PATCH,
            "/apps/shop/formation",
            Some(json!([{"type": "web", "quantity": 2}])),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{formation}");
    assert_eq!(
        formation,
        json!([{"type": "web", "quantity": 2}, {"type": "worker", "quantity": 0}])
    );
    let (_, _, instances) = api
        .call(admin, Method::GET, "/apps/shop/instances", None)
        .await;
    assert_eq!(instances, json!([]), "not deployed yet");
    let (_, _, releases) = api
        .call(admin, Method::GET, "/apps/shop/releases", None)
        .await;
    assert_eq!(releases, json!([]));
    let (status, _, missing) = api
        .call(admin, Method::GET, "/apps/shop/releases/1", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(missing["id"], "not_found");

    let (status, _, machines) = api.call(admin, Method::GET, "/machines", None).await;
    assert_eq!(status, StatusCode::OK);
    let id = machines[0]["id"]
        .as_str()
        .expect("paz up runs an agent")
        .to_string();
    let (_, _, machine) = api
        .call(admin, Method::GET, &format!("/machines/{id}"), None)
        .await;
    assert_eq!(machine["id"], id.as_str());
    let (_, _, units) = api.call(admin, Method::GET, "/units?app=shop", None).await;
    assert_eq!(units, json!([]));

    let (_, _, tokens) = api.call(admin, Method::GET, "/tokens", None).await;
    let names: Vec<&str> = tokens
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|token| token["name"].as_str())
        .collect();
    assert!(names.contains(&"ops"), "{tokens}");
    let (status, _, made) = api
        .call(
            admin,
            Method::POST,
            "/tokens",
            Some(json!({"name": "ci", "role": "deployer", "apps": ["shop"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let ci = made["secret"]
        .as_str()
        .expect("the secret, once")
        .to_string();
    let (status, _, info) = api.call(Some(&ci), Method::GET, "/apps/shop", None).await;
    assert_eq!(
        (status, info["app"]["name"].clone()),
        (StatusCode::OK, json!("shop"))
    );
    let (status, _, _) = api.call(admin, Method::DELETE, "/tokens/ci", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = api.call(Some(&ci), Method::GET, "/apps/shop", None).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a revoked token fails at once"
    );

    // Lists page with Link headers.
    for name in ["shop2", "shop3"] {
        let (status, _, _) = api
            .call(admin, Method::POST, "/apps", Some(json!({"name": name})))
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let (_, headers, first) = api.call(admin, Method::GET, "/apps?limit=2", None).await;
    assert_eq!(first.as_array().unwrap().len(), 2);
    let next = headers["link"].to_str().unwrap().to_string();
    assert_eq!(next, "</api/v1/apps?limit=2&after=shop2>; rel=\"next\"");
    let (_, headers, rest) = api
        .call(admin, Method::GET, "/apps?limit=2&after=shop2", None)
        .await;
    assert_eq!(rest[0]["app"]["name"], "shop3");
    assert!(!headers.contains_key("link"), "the last page");

    let (status, _, _) = api
        .call(admin, Method::DELETE, "/apps/shop3?force=true", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = api.call(admin, Method::GET, "/apps/shop3", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Who, what, the body, and the status it must get.
type Case<'a> = (Option<&'a str>, Method, &'a str, Option<Value>, StatusCode);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_callers_and_bad_input_get_their_status_and_change_nothing() {
    let api = Api::start().await;
    let admin = api.token("ops", "admin", &[]);
    let deployer = api.token("dev", "deployer", &["mine"]);
    let machine = api.token("node", "machine", &[]);
    for name in ["mine", "theirs"] {
        let (status, _, _) = api
            .call(
                Some(&admin),
                Method::POST,
                "/apps",
                Some(json!({"name": name})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let before = api.state().await;
    let cases: Vec<Case> = vec![
        // A rollout that could not start is refused before its 202: no record.
        (
            Some(&admin),
            Method::POST,
            "/apps/mine/releases",
            Some(json!({"image": "not an image"})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Some(&admin),
            Method::POST,
            "/apps/mine/releases",
            Some(json!({"release": 99})),
            StatusCode::NOT_FOUND,
        ),
        (
            Some(&admin),
            Method::POST,
            "/apps/mine/releases",
            Some(json!({"previous": true})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Some(&admin),
            Method::POST,
            "/apps/mine/actions/restart",
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (None, Method::GET, "/apps", None, StatusCode::UNAUTHORIZED),
        (
            None,
            Method::POST,
            "/apps",
            Some(json!({"name": "x"})),
            StatusCode::UNAUTHORIZED,
        ),
        (
            Some("paz_0123456789"),
            Method::GET,
            "/apps",
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            Some(&machine),
            Method::GET,
            "/apps",
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            Some(&deployer),
            Method::GET,
            "/apps/theirs",
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            Some(&deployer),
            Method::DELETE,
            "/apps/theirs?force=true",
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            Some(&deployer),
            Method::PATCH,
            "/apps/theirs/config",
            Some(json!({"A": "1"})),
            StatusCode::FORBIDDEN,
        ),
        (
            Some(&deployer),
            Method::PATCH,
            "/apps/theirs/formation",
            Some(json!([{"type": "web", "quantity": 3}])),
            StatusCode::FORBIDDEN,
        ),
        (
            Some(&deployer),
            Method::PUT,
            "/apps/theirs/resources",
            Some(json!({"memory": "1g"})),
            StatusCode::FORBIDDEN,
        ),
        (
            Some(&deployer),
            Method::GET,
            "/apps/theirs/resources",
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            Some(&deployer),
            Method::POST,
            "/apps",
            Some(json!({"name": "new"})),
            StatusCode::FORBIDDEN,
        ),
        (
            Some(&deployer),
            Method::GET,
            "/tokens",
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            Some(&deployer),
            Method::POST,
            "/tokens",
            Some(json!({"name": "t2"})),
            StatusCode::FORBIDDEN,
        ),
        (
            Some(&deployer),
            Method::GET,
            "/machines",
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            Some(&admin),
            Method::POST,
            "/apps",
            Some(json!({"name": "ok", "extra": 1})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Some(&admin),
            Method::POST,
            "/apps",
            Some(json!({"name": "Not_A_Name"})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Some(&admin),
            Method::POST,
            "/apps",
            Some(json!("mine")),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Some(&admin),
            Method::POST,
            "/apps",
            Some(json!({"name": "mine"})),
            StatusCode::CONFLICT,
        ),
        (
            Some(&admin),
            Method::GET,
            "/apps/Not_A_Name",
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Some(&admin),
            Method::GET,
            "/apps/ghost",
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            Some(&admin),
            Method::DELETE,
            "/apps/mine",
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Some(&admin),
            Method::PATCH,
            "/apps/mine/config",
            Some(json!({"1BAD": "x"})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Some(&admin),
            Method::PATCH,
            "/apps/mine/config",
            Some(json!({"A": 1})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Some(&admin),
            Method::PATCH,
            "/apps/mine/formation",
            Some(json!([{"type": "web", "quantity": 500}])),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Some(&admin),
            Method::PUT,
            "/apps/mine/health",
            Some(json!({"path": "no-slash"})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Some(&admin),
            Method::PUT,
            "/apps/mine/resources",
            Some(json!({"memory": "lots"})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Some(&admin),
            Method::PUT,
            "/apps/mine/resources",
            Some(json!({"cpus": 2})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Some(&admin),
            Method::PUT,
            "/apps/mine/resources",
            Some(json!({"process": "web"})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Some(&admin),
            Method::GET,
            "/apps?limit=many",
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Some(&admin),
            Method::GET,
            "/apps?colour=red",
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Some(&admin),
            Method::GET,
            "/nothing-here",
            None,
            StatusCode::NOT_FOUND,
        ),
    ];
    let mut cases = cases;
    // A rollout of an app that does not exist is refused before it starts.
    cases.push((
        Some(&admin),
        Method::POST,
        "/apps/ghost/releases",
        Some(json!({"image": "ghost:1"})),
        StatusCode::NOT_FOUND,
    ));
    for (token, method, path, body, expected) in cases {
        let (status, headers, answer) = api.call(token, method.clone(), path, body.clone()).await;
        assert_eq!(status, expected, "{method} {path} {body:?}: {answer}");
        assert!(
            answer["id"].is_string() && !answer["message"].as_str().unwrap_or_default().is_empty(),
            "{method} {path}: the error says what and why: {answer}"
        );
        assert!(headers.contains_key("request-id"), "{method} {path}");
    }
    // A body that is not JSON at all.
    let response = api
        .http
        .post(api.url("/apps"))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // One larger than the API reads.
    let response = api
        .http
        .post(api.url("/apps"))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(format!("{{\"name\": \"{}\"}}", "a".repeat(100_000)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(api.state().await, before, "a refused request changed etcd");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_paz_client_prints_what_ssh_prints() {
    let api = Api::start().await;
    let secret = api.token("laptop", "admin", &[]);
    let home = tests::temp_dir();
    let checkout = tests::temp_dir();
    let client = |dir: &std::path::Path, args: &[&str], stdin: &str| {
        run_client(dir, home.path(), args, stdin)
    };
    let url = format!("http://127.0.0.1:{}", api.running.api_port);
    // A wrong token is refused and nothing is kept.
    let refused = client(checkout.path(), &["login", &url], "paz_not_a_token\n");
    assert!(!refused.status.success());
    assert!(
        said(&refused).contains("unknown token"),
        "{}",
        said(&refused)
    );
    let credentials = home.path().join(".config/paz/credentials");
    assert!(!credentials.exists());
    let login = client(checkout.path(), &["login", &url], &format!("{secret}\n"));
    assert!(login.status.success(), "{}", said(&login));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&credentials)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the token is for its owner only");

    let ssh = |args: &[&str]| {
        let output = api
            .admin_key
            .ssh("paz@127.0.0.1", api.running.ssh_port, args);
        (output.status.code(), stdout(&output), stderr(&output))
    };
    let ssh_stderr = |text: String| {
        text.lines()
            .filter(|line| !line.starts_with("Warning: Permanently added"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    // In a checkout whose `paz` remote names the app, APP may be left out.
    std::process::Command::new("git")
        .args(["init", "-q"])
        .current_dir(checkout.path())
        .status()
        .unwrap();
    std::process::Command::new("git")
        .args([
            "remote",
            "add",
            "paz",
            &format!("ssh://paz@127.0.0.1:{}/shop", api.running.ssh_port),
        ])
        .current_dir(checkout.path())
        .status()
        .unwrap();
    let (status, _, _) = api
        .call(
            Some(&secret),
            Method::POST,
            "/apps",
            Some(json!({"name": "shop"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec!["apps:create", "shop"], vec!["apps:create", "shop"]),
        (vec!["apps:list"], vec!["apps:list"]),
        (
            vec!["config:set", "GREETING=hi"],
            vec!["config:set", "shop", "GREETING=hi"],
        ),
        (vec!["config:show"], vec!["config:show", "shop"]),
        (
            vec!["config:show", "--json"],
            vec!["config:show", "shop", "--json"],
        ),
        (vec!["apps:info", "-a", "shop"], vec!["apps:info", "shop"]),
        (vec!["releases"], vec!["releases", "shop"]),
        (vec!["domains:list", "shop"], vec!["domains:list", "shop"]),
        (
            vec!["config:get", "MISSING"],
            vec!["config:get", "shop", "MISSING"],
        ),
        (vec!["verbs"], vec!["help"]),
    ];
    for (by_client, by_ssh) in cases {
        let output = client(checkout.path(), &by_client, "");
        let (code, out, err) = ssh(&by_ssh);
        assert_eq!(
            (
                output.status.code(),
                stdout(&output),
                ssh_stderr(stderr(&output))
            ),
            (code, out, ssh_stderr(err)),
            "paz {by_client:?} and ssh {by_ssh:?}"
        );
    }
}

/// One Server-Sent Event: (id, event, data).
type SseEvent = (Option<String>, String, Value);

/// A Server-Sent Events stream read one event at a time.
struct Sse {
    stream: futures::stream::BoxStream<'static, reqwest::Result<Vec<u8>>>,
    text: String,
}

impl Sse {
    fn new(response: reqwest::Response) -> Sse {
        use futures::StreamExt;
        Sse {
            stream: response
                .bytes_stream()
                .map(|chunk| chunk.map(|bytes| bytes.to_vec()))
                .boxed(),
            text: String::new(),
        }
    }

    /// The next event with data; `None` when the stream ends.
    async fn next(&mut self) -> Option<SseEvent> {
        use futures::StreamExt;
        loop {
            while let Some(end) = self.text.find("\n\n") {
                let block: String = self.text.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, "message".to_string(), String::new());
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("id:") {
                        id = Some(value.trim().to_string());
                    } else if let Some(value) = line.strip_prefix("event:") {
                        event = value.trim().to_string();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.trim());
                    }
                }
                if !data.is_empty() {
                    let data = serde_json::from_str(&data).unwrap_or(Value::String(data));
                    return Some((id, event, data));
                }
            }
            let chunk = self.stream.next().await?.unwrap();
            self.text.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

/// `paz ARGS` as a user runs it in `dir` with `home` (and no PAZ_API_*
/// settings), `stdin` on its standard input.
fn run_client(
    dir: &std::path::Path,
    home: &std::path::Path,
    args: &[&str],
    stdin: &str,
) -> std::process::Output {
    let mut child = paz()
        .args(args)
        .current_dir(dir)
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("PAZ_API_URL")
        .env_remove("PAZ_API_TOKEN")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

/// The events of a Server-Sent Events stream until its `end`.
async fn read_events(response: reqwest::Response) -> Vec<SseEvent> {
    let mut sse = Sse::new(response);
    let mut events = Vec::new();
    while let Some(event) = sse.next().await {
        let ended = event.1 == "end";
        events.push(event);
        if ended {
            return events;
        }
    }
    panic!("the stream ended without an end event: {events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_over_the_api_is_a_rollout_whose_steps_stream_as_they_happen() {
    let docker = tests::docker().await;
    let base = tests::busybox_image(&docker).await;
    let api = Api::start().await;
    let secret = api.token("ops", "admin", &[]);
    let admin = Some(secret.as_str());
    let other = api.token("other", "deployer", &["elsewhere"]);
    let (status, _, _) = api
        .call(
            admin,
            Method::POST,
            "/apps",
            Some(json!({"name": "rolled"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    // v1, by a push.
    let (_tree, mut push) = api.app_tree(base, "rolled", "v1", None);
    let pushed = push.output().unwrap();
    assert!(pushed.status.success(), "{}", said(&pushed));
    let (_, _, v1) = api
        .call(admin, Method::GET, "/apps/rolled/releases/1", None)
        .await;
    let image = v1["image"].as_str().unwrap().to_string();

    // Another app's deployer may not deploy it: nothing starts.
    let (status, _, _) = api
        .call(
            Some(&other),
            Method::POST,
            "/apps/rolled/releases",
            Some(json!({"image": image})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = api
        .call(
            admin,
            Method::POST,
            "/apps/rolled/releases",
            Some(json!({"image": image, "release": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // The push's rollout has its record too; a refused request starts none.
    let (_, _, pushed) = api
        .call(admin, Method::GET, "/apps/rolled/rollouts", None)
        .await;
    let pushed = pushed.as_array().unwrap();
    assert_eq!(pushed.len(), 1, "{pushed:?}");
    assert_eq!(
        (
            &pushed[0]["kind"],
            &pushed[0]["by"],
            &pushed[0]["status"],
            &pushed[0]["release"]
        ),
        (
            &json!("push"),
            &json!("admin"),
            &json!("succeeded"),
            &json!(1)
        )
    );

    // v2, the same image by the API: 202, then its steps live.
    let (status, headers, started) = api
        .call(
            admin,
            Method::POST,
            "/apps/rolled/releases",
            Some(json!({"image": image})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let location = headers["location"].to_str().unwrap().to_string();
    assert_eq!(started["status"], "running");
    assert_eq!(started["by"], "ops");
    let rollout = location.trim_start_matches("/api/v1").to_string();
    let events_url = api.url(&format!("{rollout}/events"));
    let live = api
        .http
        .get(&events_url)
        .bearer_auth(&secret)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), StatusCode::OK);
    let events = read_events(live).await;
    let (steps, end) = events.split_at(events.len() - 1);
    let ids: Vec<String> = steps.iter().filter_map(|(id, _, _)| id.clone()).collect();
    let expected: Vec<String> = (0..steps.len()).map(|i| i.to_string()).collect();
    assert_eq!(ids, expected, "each step once, in order");
    let texts: Vec<&str> = steps
        .iter()
        .filter_map(|(_, _, data)| data["text"].as_str())
        .collect();
    assert!(
        texts.contains(&"-----> Released v2: http://rolled.paz.localhost"),
        "{texts:?}"
    );
    assert_eq!(end[0].2["status"], "succeeded", "{end:?}");
    assert_eq!(end[0].2["release"], 2);
    // The record is kept, and so are its steps.
    let (_, _, record) = api.call(admin, Method::GET, &rollout, None).await;
    assert_eq!(record["status"], "succeeded");
    assert_eq!(record["release"], 2);
    assert_eq!(record["steps"].as_array().unwrap().len(), steps.len());
    let (_, _, so_far) = api
        .call(admin, Method::GET, &format!("{rollout}/events"), None)
        .await;
    assert_eq!(
        so_far.as_array().unwrap().len(),
        steps.len(),
        "without SSE: the steps so far"
    );
    // A client that reconnects after step 1 gets the rest, once.
    let resumed = api
        .http
        .get(&events_url)
        .bearer_auth(&secret)
        .header("accept", "text/event-stream")
        .header("last-event-id", "1")
        .send()
        .await
        .unwrap();
    let rest = read_events(resumed).await;
    let ids: Vec<String> = rest.iter().filter_map(|(id, _, _)| id.clone()).collect();
    let expected: Vec<String> = (2..steps.len()).map(|i| i.to_string()).collect();
    assert_eq!(ids, expected);
    let (status, _, _) = api.call(Some(&other), Method::GET, &rollout, None).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "another app's deployer reads nothing"
    );

    // A rollback to v1 is v3.
    let (status, headers, _) = api
        .call(
            admin,
            Method::POST,
            "/apps/rolled/releases",
            Some(json!({"release": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let rollback = headers["location"]
        .to_str()
        .unwrap()
        .trim_start_matches("/api/v1")
        .to_string();
    let ended = tests::eventually(
        "the rollback to end",
        std::time::Duration::from_secs(60),
        async || {
            let (_, _, record) = api.call(admin, Method::GET, &rollback, None).await;
            (record["status"] != "running").then_some(record)
        },
    )
    .await;
    assert_eq!(
        (ended["status"].clone(), ended["release"].clone()),
        (json!("succeeded"), json!(3))
    );
    let (_, _, v3) = api
        .call(admin, Method::GET, "/apps/rolled/releases/3", None)
        .await;
    assert_eq!(v3["cause"], "rollback");
    assert_eq!(
        get(api.running.http_port, "rolled.paz.localhost"),
        (200, "v1\n".to_string())
    );
    let (_, _, all) = api
        .call(admin, Method::GET, "/apps/rolled/rollouts", None)
        .await;
    let kinds: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|record| record["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["push", "deploy", "rollback"]);
}

/// Reads `sse` until an event at `revision` or later; the revisions read
/// and the changes they brought.
async fn events_until(sse: &mut Sse, revision: i64) -> Vec<(i64, Value)> {
    let mut read = Vec::new();
    while let Some((id, event, data)) =
        tokio::time::timeout(std::time::Duration::from_secs(30), sse.next())
            .await
            .expect("events within 30 s")
    {
        assert_eq!(event, "change", "{data}");
        let id: i64 = id.expect("every event has an id").parse().unwrap();
        assert_eq!(data["revision"], id);
        read.push((id, data["changes"].clone()));
        if id >= revision {
            return read;
        }
    }
    panic!("the stream ended before revision {revision}: {read:?}");
}

/// The revisions of etcd's history after `after`, up to `until`, that
/// changed a key under `/paz/apps/<app>` for one of `apps`.
async fn history(store: &store::Store, after: i64, until: i64, apps: &[&str]) -> Vec<i64> {
    let mut watch = store.watch_from(&store.keys().everything(), after + 1);
    let mut revisions = Vec::new();
    loop {
        let batch = watch.next_batch().await.unwrap();
        for event in batch {
            let (store::WatchEvent::Put { key, revision, .. }
            | store::WatchEvent::Delete { key, revision }) = event
            else {
                panic!("a snapshot in the history: {event:?}");
            };
            let touches = apps.iter().any(|app| {
                let dir = format!("/paz/apps/{app}");
                key == dir || key.starts_with(&format!("{dir}/"))
            });
            if touches && revisions.last() != Some(&revision) {
                revisions.push(revision);
            }
            if revision >= until {
                return revisions;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_resume_from_last_event_id_each_once_in_order() {
    let api = Api::start().await;
    let admin = api.token("ops", "admin", &[]);
    let deployer = api.token("ci", "deployer", &["ev-a"]);
    let stream = |token: &str, last: Option<i64>| {
        let mut request = api
            .http
            .get(api.url("/events"))
            .bearer_auth(token)
            .header("accept", "text/event-stream");
        if let Some(last) = last {
            request = request.header("last-event-id", last.to_string());
        }
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.headers()["content-type"], "text/event-stream");
            Sse::new(response)
        }
    };
    let mut watching = stream(&admin, None).await;
    let mut deployer_stream = stream(&deployer, None).await;
    let admin_secret = admin.clone();
    let admin = Some(admin.as_str());
    for app in ["ev-a", "ev-b"] {
        let (status, _, body) = api
            .call(admin, Method::POST, "/apps", Some(json!({"name": app})))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, _, body) = api
        .call(
            admin,
            Method::PATCH,
            "/apps/ev-a/config",
            Some(json!({"K": "1"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let before_cut = api.store.revision().await.unwrap();
    let seen = events_until(&mut watching, before_cut).await;
    let kinds: Vec<(&str, &str)> = seen
        .iter()
        .flat_map(|(_, changes)| changes.as_array().unwrap())
        .filter_map(|change| Some((change["kind"].as_str()?, change["app"].as_str()?)))
        .collect();
    assert!(kinds.contains(&("app", "ev-a")), "{kinds:?}");
    assert!(kinds.contains(&("app", "ev-b")), "{kinds:?}");
    let last = seen.last().unwrap().0;
    drop(watching);

    // Changes while the client is away.
    for (method, path, body) in [
        (Method::PATCH, "/apps/ev-a/config", json!({"K": "2"})),
        (
            Method::POST,
            "/apps/ev-b/domains",
            json!({"domain": "ev-b.example.com"}),
        ),
        (Method::PATCH, "/apps/ev-b/config", json!({"L": "1"})),
        (Method::PATCH, "/apps/ev-a/config", json!({"K": null})),
    ] {
        let (status, _, answer) = api.call(admin, method, path, Some(body)).await;
        assert!(status.is_success(), "{path}: {answer}");
    }
    let after_cut = api.store.revision().await.unwrap();
    let mut resumed = stream(&admin_secret, Some(last)).await;
    let missed = events_until(&mut resumed, after_cut).await;
    let ids: Vec<i64> = missed.iter().map(|(id, _)| *id).collect();
    assert!(
        ids.windows(2).all(|pair| pair[0] < pair[1]) && ids[0] > last,
        "each once, in order, after {last}: {ids:?}"
    );
    let about_apps: Vec<i64> = missed
        .iter()
        .filter(|(_, changes)| {
            // What is kept under /paz/apps/<app>.
            changes.as_array().unwrap().iter().any(|change| {
                let kind = change["kind"].as_str().unwrap();
                ["app", "release", "current", "rollout"].contains(&kind)
            })
        })
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(
        about_apps,
        history(&api.store, last, after_cut, &["ev-a", "ev-b"]).await,
        "every change of the apps made while away, as etcd recorded them"
    );

    // The same changes as JSON, without the stream.
    let (status, _, since) = api
        .call(admin, Method::GET, &format!("/events?after={last}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{since}");
    let json_ids: Vec<i64> = since["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|revision| revision["revision"].as_i64().unwrap())
        .filter(|id| *id <= after_cut)
        .collect();
    assert_eq!(json_ids, ids);

    // A deployer of ev-a sees ev-a's changes only.
    let theirs = events_until(&mut deployer_stream, after_cut).await;
    let apps: std::collections::BTreeSet<String> = theirs
        .iter()
        .flat_map(|(_, changes)| changes.as_array().unwrap().clone())
        .map(|change| change["app"].as_str().unwrap_or("none").to_string())
        .collect();
    assert_eq!(apps, ["ev-a".to_string()].into(), "{theirs:?}");

    // A revoked token's stream ends: the next change does not reach it.
    let revoked = api.admin_key.ssh(
        "paz@127.0.0.1",
        api.running.ssh_port,
        &["tokens:revoke", "ci"],
    );
    assert!(revoked.status.success(), "{}", said(&revoked));
    let (status, _, _) = api
        .call(
            admin,
            Method::PATCH,
            "/apps/ev-a/config",
            Some(json!({"K": "3"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let after_revoke =
        tokio::time::timeout(std::time::Duration::from_secs(30), deployer_stream.next())
            .await
            .expect("the revoked token's stream ends");
    assert!(
        after_revoke.is_none(),
        "a revoked token was told: {after_revoke:?}"
    );

    // Bad callers and bad positions.
    let (status, _, body) = api.call(None, Method::GET, "/events", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _, body) = api
        .call(
            admin,
            Method::GET,
            &format!("/events?after={}", after_cut + 1000),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("is at"),
        "{body}"
    );
}

/// A number no earlier run used.
fn rand_nonce() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// `text` with every run of digits as `N`: two rollouts' lines compare
/// equal when only their numbers (releases, seconds) differ.
fn shape(text: &str) -> String {
    let mut shaped = String::new();
    for c in text.chars() {
        if !c.is_ascii_digit() {
            shaped.push(c);
        } else if !shaped.ends_with('N') {
            shaped.push('N');
        }
    }
    shaped
}

/// The walk-through, from outside: an app made over the API, pushed
/// with git, its build log and rollout watched live, its config and scale
/// changed, rolled back (by the API and by the `paz` client in a checkout,
/// which prints what SSH prints), and deleted; `/events` saw it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_walks_through_its_life_over_the_api() {
    let docker = tests::docker().await;
    let base = tests::busybox_image(&docker).await;
    let api = Api::start().await;
    let secret = api.token("ops", "admin", &[]);
    let admin = Some(secret.as_str());
    let watching = api
        .http
        .get(api.url("/events"))
        .bearer_auth(&secret)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let mut watching = Sse::new(watching);

    let (status, _, created) = api
        .call(admin, Method::POST, "/apps", Some(json!({"name": "walk"})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");

    // A push whose build takes a while: its log and its rollout, live.
    // A build that takes 3 s.
    let (tree, mut push, id, nonce) = api.push_slowly(base, "walk", 3, &secret).await;
    let log = api
        .http
        .get(api.url(&format!("/apps/walk/builds/{id}/log")))
        .bearer_auth(&secret)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let mut log = Sse::new(log);
    let first = log.next().await.unwrap();
    assert_eq!(first.1, "line", "{first:?}");
    let (_, _, build) = api
        .call(admin, Method::GET, &format!("/apps/walk/builds/{id}"), None)
        .await;
    assert_eq!(
        build["build"]["status"], "running",
        "the first line came before the build ended"
    );
    let mut lines = vec![first];
    while let Some(event) = log.next().await {
        let ended = event.1 == "end";
        lines.push(event);
        if ended {
            break;
        }
    }
    let (end, lines) = lines.split_last().unwrap();
    assert_eq!(end.2["status"], "succeeded", "{end:?}");
    let ids: Vec<String> = lines.iter().filter_map(|(id, _, _)| id.clone()).collect();
    let expected: Vec<String> = (0..lines.len()).map(|n| n.to_string()).collect();
    assert_eq!(ids, expected, "each line once, in order");
    // Without the stream header: the whole log, the same lines.
    let log_url = api.url(&format!("/apps/walk/builds/{id}/log"));
    let whole = api
        .http
        .get(&log_url)
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    let whole = whole.text().await.unwrap();
    assert_eq!(whole.lines().count(), lines.len(), "{whole}");
    // A client back after line 5 gets the rest, once.
    let resumed = api
        .http
        .get(&log_url)
        .bearer_auth(&secret)
        .header("accept", "text/event-stream")
        .header("last-event-id", "5")
        .send()
        .await
        .unwrap();
    let rest = read_events(resumed).await;
    let ids: Vec<String> = rest.iter().filter_map(|(id, _, _)| id.clone()).collect();
    let expected: Vec<String> = (6..lines.len()).map(|n| n.to_string()).collect();
    assert_eq!(ids, expected);
    assert!(
        lines
            .iter()
            .any(|(_, _, data)| *data == json!(format!("built {nonce}"))),
        "{lines:?}"
    );
    let rollout = tests::eventually(
        "the push's rollout to be recorded",
        std::time::Duration::from_secs(30),
        async || {
            let (_, _, all) = api
                .call(admin, Method::GET, "/apps/walk/rollouts", None)
                .await;
            all[0]["id"].as_str().map(str::to_string)
        },
    )
    .await;
    let steps = read_events(
        api.stream(&secret, &format!("/apps/walk/rollouts/{rollout}/events"))
            .await,
    )
    .await;
    let (end, steps) = steps.split_last().unwrap();
    assert_eq!(end.2["status"], "succeeded", "{end:?}");
    assert!(
        steps
            .iter()
            .any(|(_, _, step)| step["text"] == "-----> Released v1: http://walk.paz.localhost"),
        "{steps:?}"
    );
    assert!(push.child().wait().unwrap().success(), "the push succeeds");
    assert_eq!(
        get(api.running.http_port, "walk.paz.localhost"),
        (200, "walk v1\n".to_string())
    );

    // Config by PATCH: release v2.
    let (status, _, env) = api
        .call(
            admin,
            Method::PATCH,
            "/apps/walk/config",
            Some(json!({"GREETING": "hi"})),
        )
        .await;
    assert_eq!((status, env), (StatusCode::OK, json!({"GREETING": "hi"})));
    let (_, _, v2) = api
        .call(admin, Method::GET, "/apps/walk/releases/2", None)
        .await;
    assert_eq!(
        (v2["cause"].clone(), v2["env"]["GREETING"].clone()),
        (json!("config"), json!("hi"))
    );

    // A rollback by the API: v3 runs v1 again.
    let (status, headers, _) = api
        .call(
            admin,
            Method::POST,
            "/apps/walk/releases",
            Some(json!({"release": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let location = headers["location"].to_str().unwrap().to_string();
    let events = read_events(
        api.http
            .get(format!(
                "http://127.0.0.1:{}{location}/events",
                api.running.api_port
            ))
            .bearer_auth(&secret)
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(events.last().unwrap().2["release"], 3, "{events:?}");
    let (_, _, v3) = api
        .call(admin, Method::GET, "/apps/walk/releases/3", None)
        .await;
    assert_eq!(v3["cause"], "rollback");

    // The client in the checkout (its `paz` remote names the app) prints
    // what SSH prints, and follows a rollback to its end.
    let home = tests::temp_dir();
    let url = format!("ssh://paz@127.0.0.1:{}/walk", api.running.ssh_port);
    let added = api
        .admin_key
        .git(tree.path())
        .args(["remote", "add", "paz", &url])
        .output()
        .unwrap();
    assert!(added.status.success(), "{}", said(&added));
    let client = |args: &[&str], stdin: &str| run_client(tree.path(), home.path(), args, stdin);
    let api_url = format!("http://127.0.0.1:{}", api.running.api_port);
    let login = client(&["login", &api_url], &format!("{secret}\n"));
    assert!(login.status.success(), "{}", said(&login));
    let ssh = |args: &[&str]| {
        api.admin_key
            .ssh("paz@127.0.0.1", api.running.ssh_port, args)
    };
    for (by_client, by_ssh) in [
        (vec!["apps:list"], vec!["apps:list"]),
        (vec!["config:show"], vec!["config:show", "walk"]),
        (vec!["releases"], vec!["releases", "walk"]),
    ] {
        let (ours, theirs) = (client(&by_client, ""), ssh(&by_ssh));
        assert!(ours.status.success(), "{}", said(&ours));
        assert_eq!(stdout(&ours), stdout(&theirs), "paz {by_client:?}");
    }
    // builds:log -f follows the newest build to its end: here, all of it.
    let followed = client(&["builds:log", "-f"], "");
    assert!(followed.status.success(), "{}", said(&followed));
    assert_eq!(
        stdout(&followed).trim_end(),
        stdout(&ssh(&["builds:log", "walk"])).trim_end()
    );
    // config:set rolls a release out: the same lines but for the numbers.
    let ours = client(&["config:set", "COLOUR=blue"], "");
    let theirs = ssh(&["config:set", "walk", "COLOUR=green"]);
    assert!(ours.status.success(), "{}", said(&ours));
    assert_eq!(
        shape(&stdout(&ours)).replace("COLOUR", "X"),
        shape(&stdout(&theirs)).replace("COLOUR", "X")
    );
    let ours = client(&["rollback"], "");
    assert!(ours.status.success(), "{}", said(&ours));
    let theirs = ssh(&["rollback", "walk"]);
    assert!(theirs.status.success(), "{}", said(&theirs));
    assert!(
        stdout(&ours).contains("-----> Released v6: http://walk.paz.localhost"),
        "{}",
        said(&ours)
    );
    assert_eq!(shape(&stdout(&ours)), shape(&stdout(&theirs)));
    // A rollback to a release that does not exist fails, and says so.
    let refused = client(&["rollback", "v99"], "");
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(
        stderr(&refused).trim(),
        stderr(&ssh(&["rollback", "walk", "v99"])).trim()
    );

    // Scale by PATCH: two web instances run.
    let (status, _, formation) = api
        .call(
            admin,
            Method::PATCH,
            "/apps/walk/formation",
            Some(json!([{"type": "web", "quantity": 2}])),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{formation}");
    assert_eq!(formation[0], json!({"type": "web", "quantity": 2}));
    tests::eventually(
        "two web instances",
        std::time::Duration::from_secs(60),
        async || {
            let (_, _, instances) = api
                .call(admin, Method::GET, "/apps/walk/instances", None)
                .await;
            let running = instances
                .as_array()?
                .iter()
                .filter(|row| row["state"]["active"] == "active")
                .count();
            (running == 2).then_some(())
        },
    )
    .await;
    // A client that goes away mid-rollout does not cut it short: the
    // scale to 3 still ends, and well.
    let impatient = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(200))
        .build()
        .unwrap();
    let cut = impatient
        .patch(api.url("/apps/walk/formation"))
        .bearer_auth(&secret)
        .json(&json!([{"type": "web", "quantity": 3}]))
        .send()
        .await;
    assert!(cut.is_err(), "the client gave up before the rollout ended");
    let scaled = tests::eventually(
        "the cut-off scale's rollout to end",
        std::time::Duration::from_secs(60),
        async || {
            let (_, _, all) = api
                .call(admin, Method::GET, "/apps/walk/rollouts", None)
                .await;
            let last = all.as_array()?.last()?.clone();
            (last["kind"] == "scale" && last["status"] != "running").then_some(last)
        },
    )
    .await;
    assert_eq!(scaled["status"], "succeeded", "{scaled}");
    let (_, _, instances) = api
        .call(admin, Method::GET, "/apps/walk/instances", None)
        .await;
    let web = instances
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| {
            row["unit"]
                .as_str()
                .is_some_and(|unit| !unit.ends_with("-announce.service"))
        })
        .count();
    assert_eq!(web, 3, "{instances}");

    // Deleted, with ?force=true only.
    let (status, _, body) = api.call(admin, Method::DELETE, "/apps/walk", None).await;
    assert!(status.is_client_error(), "{status} {body}");
    let (status, _, body) = api
        .call(admin, Method::DELETE, "/apps/walk?force=true", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, _, _) = api.call(admin, Method::GET, "/apps/walk", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The event stream saw every kind of change on the way.
    let now = api.store.revision().await.unwrap();
    let seen = events_until(&mut watching, now).await;
    let kinds: std::collections::BTreeSet<String> = seen
        .iter()
        .flat_map(|(_, changes)| changes.as_array().unwrap().clone())
        .filter(|change| change["app"] == "walk")
        .map(|change| change["kind"].as_str().unwrap().to_string())
        .collect();
    for kind in [
        "app",
        "build",
        "release",
        "current",
        "rollout",
        "unit",
        "placement",
        "state",
        "route",
    ] {
        assert!(kinds.contains(kind), "no {kind} change among {kinds:?}");
    }
}

/// `/openapi.json` on a running server is the checked-in description, and
/// every operation it names is a route (without a token: 401, never the
/// answer for a path or method that does not exist).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_described_operation_is_a_route() {
    let api = Api::start().await;
    let (status, _, served) = api.call(None, Method::GET, "/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(served, serde_json::to_value(api::openapi()).unwrap());
    assert_eq!(served["openapi"], "3.1.0");
    let paths = served["paths"].as_object().unwrap();
    assert!(paths.len() >= 25, "{:?}", paths.keys());
    let base = format!("http://127.0.0.1:{}", api.running.api_port);
    let mut operations = 0;
    for (path, methods) in paths {
        // Any value for each `{parameter}`.
        let concrete: String = path
            .split('/')
            .map(|part| if part.starts_with('{') { "x" } else { part })
            .collect::<Vec<_>>()
            .join("/");
        for method in methods.as_object().unwrap().keys() {
            operations += 1;
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let response = api
                .http
                .request(method.clone(), format!("{base}{concrete}"))
                .send()
                .await
                .unwrap();
            let status = response.status();
            let body: Value = response.json().await.unwrap_or_default();
            let expected = if path == "/api/v1/openapi.json" {
                StatusCode::OK
            } else {
                StatusCode::UNAUTHORIZED
            };
            assert_eq!(status, expected, "{method} {path}: {body}");
        }
    }
    assert!(operations >= 38, "{operations} operations");
    // What is not described is not there: an unknown path, a wrong method.
    let (status, _, body) = api.call(None, Method::GET, "/nothing-here", None).await;
    assert_eq!(
        (status, &body["id"]),
        (StatusCode::NOT_FOUND, &json!("not_found"))
    );
    let (status, _, body) = api.call(None, Method::PUT, "/apps", None).await;
    assert_eq!(
        (status, &body["id"]),
        (StatusCode::METHOD_NOT_ALLOWED, &json!("method_not_allowed")),
        "{body}"
    );
}

/// A rollout whose server stops before it ends is not left running: once
/// its `alive` key's lease is gone, reading it ends it as failed, saying
/// why, with its steps kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_whose_server_stopped_is_ended_not_left_running() {
    let (mut api, secret, base) = Api::with_app("orphan").await;
    let admin = Some(secret.as_str());
    let (_tree, mut push) = api.app_tree(base, "orphan", "v1", None);
    let pushed = push.output().unwrap();
    assert!(pushed.status.success(), "{}", said(&pushed));
    // A port the app does not listen on: v2 is never healthy, and its
    // rollout waits (60 s) for it.
    let waiting = tokio::spawn(
        api.http
            .post(api.url("/verbs/ports:set"))
            .bearer_auth(&secret)
            .json(&json!({"args": ["orphan", "9999"]}))
            .send(),
    );
    let running = tests::eventually(
        "the config rollout to place v2",
        std::time::Duration::from_secs(30),
        async || {
            let (_, _, all) = api
                .call(admin, Method::GET, "/apps/orphan/rollouts", None)
                .await;
            let config = all
                .as_array()?
                .iter()
                .find(|r| r["kind"] == "config")?
                .clone();
            let placed = config["steps"]
                .as_array()?
                .iter()
                .any(|step| step["step"] == "placed");
            placed.then_some(config)
        },
    )
    .await;
    assert_eq!(
        running["status"], "running",
        "alive while it runs: {running}"
    );
    let id = running["id"].as_str().unwrap().to_string();

    api.kill_and_restart().await;
    let _ = waiting.await;
    let ended = tests::eventually(
        "the abandoned rollout to be ended",
        std::time::Duration::from_secs(60),
        async || {
            let (_, _, record) = api
                .call(
                    admin,
                    Method::GET,
                    &format!("/apps/orphan/rollouts/{id}"),
                    None,
                )
                .await;
            (record["status"] != "running").then_some(record)
        },
    )
    .await;
    assert_eq!(ended["status"], "failed", "{ended}");
    assert!(
        ended["error"]
            .as_str()
            .unwrap()
            .contains("the server that ran it stopped"),
        "{ended}"
    );
    assert!(
        !ended["steps"].as_array().unwrap().is_empty(),
        "its steps are kept"
    );
}

/// A build whose server stops before it ends is not left running either:
/// once its `alive` key's lease is gone it reads as failed, saying why, and
/// a stream of its log ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_whose_server_stopped_is_ended_not_left_running() {
    let (mut api, secret, base) = Api::with_app("halted").await;
    let admin = Some(secret.as_str());
    let (_tree, _push, id, _) = api.push_slowly(base, "halted", 60, &secret).await;

    api.kill_and_restart().await;
    let ended = tests::eventually(
        "the abandoned build to be ended",
        std::time::Duration::from_secs(60),
        async || {
            let (_, _, build) = api
                .call(
                    admin,
                    Method::GET,
                    &format!("/apps/halted/builds/{id}"),
                    None,
                )
                .await;
            (build["build"]["status"] != "running").then_some(build)
        },
    )
    .await;
    assert_eq!(ended["build"]["status"], "failed", "{ended}");
    assert_eq!(ended["build"]["error"], store::ABANDONED_BUILD, "{ended}");
    // Its log (what was written) streams, then ends as failed.
    let events = read_events(
        api.stream(&secret, &format!("/apps/halted/builds/{id}/log"))
            .await,
    )
    .await;
    assert_eq!(events.last().unwrap().2["status"], "failed", "{events:?}");
    assert!(
        events.len() > 1,
        "the lines written before it stopped: {events:?}"
    );
}

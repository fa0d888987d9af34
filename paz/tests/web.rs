//! The web UI in a real browser: Debian's Chromium driven through
//! chromedriver (WebDriver, by fantoccini) against `paz up` on a real etcd
//! and Docker Engine, apps pushed with git over SSH. Pages change live
//! (checked without a reload: a mark set in the page survives), what is
//! rendered is escaped (no script of a value runs), and a deployer's
//! session sees and changes only its apps; forged forms change nothing.

mod common;

use std::time::Duration;

use common::*;
use fantoccini::{Client, Locator};
use serde_json::json;
use tests::SshIdentity;

/// `paz up`, a Chromium, and the admin's SSH key.
struct Ui {
    running: Running,
    /// After `running` (fields drop in order).
    _cleanup: tests::DockerCleanup,
    admin_key: SshIdentity,
    _data: tempfile::TempDir,
    store: store::Store,
    browser: Client,
    _driver: tests::ChildGuard,
    base: &'static str,
}

/// Where the tests save their screenshots (copied by hand to `docs/`
/// once looked at).
fn screenshots() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A port no one listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// chromedriver and a headless Chromium it drives.
async fn browser() -> (Client, tests::ChildGuard) {
    let port = free_port();
    let driver = tests::ChildGuard::spawn(
        std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    let url = format!("http://127.0.0.1:{port}");
    let capabilities = json!({
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            // As root (the test machine), Chromium needs --no-sandbox.
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1280,900"],
        }
    });
    let capabilities = capabilities.as_object().unwrap().clone();
    let client = tests::eventually(
        "chromedriver to answer",
        Duration::from_secs(30),
        async || {
            fantoccini::ClientBuilder::new(
                    hyper_util::client::legacy::connect::HttpConnector::new(),
                )
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
                .ok()
        },
    )
    .await;
    (client, driver)
}

impl Ui {
    async fn start(test: &str) -> Ui {
        let docker = tests::docker().await;
        let base = tests::busybox_image(&docker).await;
        let admin_key = SshIdentity::new("ed25519");
        let data = tests::temp_dir();
        let key_file = data.path().join("admin.pub");
        std::fs::write(&key_file, &admin_key.public_key).unwrap();
        let data_dir = data.path().join("paz");
        let running = start(
            &[
                "--data-dir",
                data_dir.to_str().unwrap(),
                "--admin-key",
                key_file.to_str().unwrap(),
            ],
            &[],
        );
        let store = running.store("/paz").await;
        let mut cleanup = tests::DockerCleanup::new(test);
        let machine = agent::machine_id(&data_dir).unwrap();
        cleanup.track_label(&format!("paz.machine={machine}"));
        let (browser, driver) = browser().await;
        Ui {
            running,
            _cleanup: cleanup,
            admin_key,
            _data: data,
            store,
            browser,
            _driver: driver,
            base,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.running.api_port)
    }

    /// Runs a verb over SSH as the admin; its output.
    fn ssh(&self, args: &[&str]) -> String {
        let output = self
            .admin_key
            .ssh("paz@127.0.0.1", self.running.ssh_port, args);
        assert!(output.status.success(), "{args:?}: {}", said(&output));
        stdout(&output)
    }

    /// A new token's secret.
    fn token(&self, name: &str, role: &str, apps: &[&str]) -> String {
        let mut args = vec!["tokens:create", name, "--role", role];
        let apps = apps.join(",");
        if !apps.is_empty() {
            args.extend(["--apps", apps.as_str()]);
        }
        self.ssh(&args)
            .lines()
            .find_map(|line| line.strip_prefix("secret (shown once, keep it safe): "))
            .expect("tokens:create prints the secret")
            .to_string()
    }

    /// Commits, in work tree `tree` (made a repo if it is not one), a web
    /// app whose page says `say`, with `message`, whose build runs `run` if
    /// given; and the command that pushes it to `app`.
    fn commit(
        &self,
        tree: &std::path::Path,
        app: &str,
        (say, message): (&str, &str),
        run: Option<&str>,
    ) -> std::process::Command {
        let command =
            serde_json::to_string(&["sh", "-c", "exec httpd -f -p $PORT -h /www"]).unwrap();
        let run = run.map(|run| format!("RUN {run}\n")).unwrap_or_default();
        std::fs::write(
            tree.join("Dockerfile"),
            format!(
                "FROM {}\n{run}COPY index.html /www/index.html\nCMD {command}\n",
                self.base
            ),
        )
        .unwrap();
        std::fs::write(tree.join("index.html"), format!("{say}\n")).unwrap();
        let git = |args: &[&str]| {
            let output = self.admin_key.git(tree).args(args).output().unwrap();
            assert!(output.status.success(), "git {args:?}: {}", said(&output));
        };
        if !tree.join(".git").exists() {
            git(&["init", "-q", "-b", "main"]);
        }
        git(&["add", "."]);
        git(&["commit", "-q", "-m", message]);
        let url = format!("ssh://paz@127.0.0.1:{}/{app}", self.running.ssh_port);
        let mut push = self.admin_key.git(tree);
        push.args(["push", &url, "main"]);
        push
    }

    /// Creates `app` and pushes a page that says `say` to it (to its end).
    fn deploy(&self, app: &str, say: &str, message: &str) -> tempfile::TempDir {
        self.ssh(&["apps:create", app]);
        let tree = tests::temp_dir();
        let output = self
            .commit(tree.path(), app, (say, message), None)
            .output()
            .unwrap();
        assert!(output.status.success(), "push: {}", said(&output));
        tree
    }

    /// Waits until the app answers `text` through the proxy.
    async fn answers_with(&self, app: &str, text: &str) {
        self.answers_with_on(&format!("{app}.paz.localhost"), text)
            .await;
    }

    /// Waits until the proxy answers `text` for `host`.
    async fn answers_with_on(&self, host: &str, text: &str) {
        let (port, host) = (self.running.http_port, host.to_string());
        let app = host.clone();
        tests::eventually(
            &format!("{app} to answer {text}"),
            Duration::from_secs(30),
            async || {
                let host = host.clone();
                let (_, body) = tokio::task::spawn_blocking(move || get(port, &host))
                    .await
                    .unwrap();
                (body.trim() == text).then_some(())
            },
        )
        .await;
    }

    /// Logs the browser in with `secret`.
    async fn log_in(&self, secret: &str) {
        self.browser.goto(&self.url("/login")).await.unwrap();
        self.fill("input[name=token]", secret).await;
        self.click("button[type=submit]").await;
        self.wait_for_text("Fleet").await;
    }

    /// Types `text` into the field `css` finds.
    async fn fill(&self, css: &str, text: &str) {
        let field = self.browser.find(Locator::Css(css)).await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    /// Clicks what `css` finds.
    async fn click(&self, css: &str) {
        let target = self.browser.find(Locator::Css(css)).await.unwrap();
        target.click().await.unwrap();
    }

    /// Opens `path` and marks the page, so that `still_same_page` can tell
    /// a live change from a reload.
    async fn open(&self, path: &str) {
        self.browser.goto(&self.url(path)).await.unwrap();
        self.browser
            .execute("window.pazMark = 'unreloaded';", vec![])
            .await
            .unwrap();
    }

    /// The page was changed in place, not loaded again.
    async fn still_same_page(&self) {
        let mark = self
            .browser
            .execute("return window.pazMark || null;", vec![])
            .await
            .unwrap();
        assert_eq!(mark, json!("unreloaded"), "the page was reloaded");
    }

    /// The visible text of the page.
    async fn text(&self) -> String {
        // Between pages (after a click) there may be no body yet.
        match self.browser.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Waits until the page's text has `wanted`.
    async fn wait_for_text(&self, wanted: &str) -> String {
        let mut last = String::new();
        for _ in 0..600 {
            last = self.text().await;
            if last.contains(wanted) {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the page never showed `{wanted}`; it shows:\n{last}");
    }

    /// Saves a screenshot of the page as `name.png`.
    async fn screenshot(&self, name: &str) {
        let png = self.browser.screenshot().await.unwrap();
        std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
    }

    /// No alert is open and no script of a value ran.
    async fn no_script_ran(&self) {
        assert!(
            self.browser.get_alert_text().await.is_err(),
            "an alert is open: a script ran"
        );
        let ran = self
            .browser
            .execute("return window.pazXss || null;", vec![])
            .await
            .unwrap();
        assert_eq!(ran, json!(null), "a script of a value ran");
    }

    /// The newest rollout record of `app` of `kind`.
    async fn newest_rollout(&self, app: &str, kind: &str) -> Option<store::Rollout> {
        let app = store::AppName::new(app).unwrap();
        let listing = self
            .store
            .list(&self.store.keys().rollouts(&app))
            .await
            .unwrap();
        listing
            .entries
            .into_iter()
            .map(|e| e.value)
            .filter(|r| r.kind == kind)
            .max_by_key(|r| r.started_at)
    }

    /// Every key and its revision: what a refused request leaves as it was.
    async fn state(&self) -> Vec<(String, i64)> {
        key_revisions(&self.store).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_watches_the_fleet_builds_and_rollouts_live_and_rolls_back() {
    let ui = Ui::start("web-admin").await;
    let script = "<script>alert(1)</script>";
    let tree = ui.deploy("shop", "shop v1", &format!("first {script}"));
    let admin = ui.token("ops", "admin", &[]);

    // A wrong token is refused with the reason, on the login page.
    ui.browser.goto(&ui.url("/login")).await.unwrap();
    ui.fill("input[name=token]", &format!("paz_{}", "0".repeat(48)))
        .await;
    ui.click("button[type=submit]").await;
    ui.wait_for_text("unknown token").await;

    ui.log_in(&admin).await;
    let cookie = ui.browser.get_named_cookie("paz_session").await.unwrap();
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(format!("{:?}", cookie.same_site()), "Some(Strict)");

    // The fleet: the machine, and the app's unit with its state.
    ui.open("/").await;
    let fleet = ui.wait_for_text("shop v1 web.1").await;
    assert!(fleet.contains("active"), "{fleet}");
    assert_eq!(
        ui.browser
            .find_all(Locator::Css("article.machine"))
            .await
            .unwrap()
            .len(),
        1
    );

    // Scaled over SSH: the new units appear on the open page.
    let mut scale = ui.admin_key.ssh_to(
        "paz@127.0.0.1",
        ui.running.ssh_port,
        &["ps:scale", "shop", "web=3"],
    );
    let scale = scale
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    ui.wait_for_text("shop v1 web.3").await;
    ui.still_same_page().await;
    let scaled = tokio::task::spawn_blocking(move || scale.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(scaled.status.success(), "{}", said(&scaled));
    tests::eventually(
        "three active units on the page",
        Duration::from_secs(60),
        async || {
            let text = ui.text().await;
            (text.matches("active").count() >= 3).then_some(())
        },
    )
    .await;
    ui.still_same_page().await;
    ui.screenshot("fleet").await;
    // The same page as a phone shows it.
    ui.browser.set_window_size(390, 844).await.unwrap();
    ui.screenshot("fleet-phone").await;
    ui.browser.set_window_size(1280, 900).await.unwrap();

    // A unit no machine may run is shown apart, with the scheduler's reason.
    let stray = ui.store.keys().unit("mars-v1-web-1.service").unwrap();
    let unit = ui.ssh(&["units:cat", "shop-v1-web-1.service"]);
    let text = match unit.split_once("[X-Fleet]\n") {
        Some((before, after)) => format!("{before}[X-Fleet]\nMachineMetadata=region=mars\n{after}"),
        None => format!("{unit}\n[X-Fleet]\nMachineMetadata=region=mars\n"),
    };
    ui.store.put(&stray, &text).await.unwrap();
    let fleet = ui.wait_for_text("Not placed").await;
    assert!(fleet.contains("mars v1 web.1"), "{fleet}");
    let reason = tests::eventually(
        "the reason it is not placed",
        Duration::from_secs(30),
        async || {
            let reason = ui.browser.find(Locator::Css(".warn .reason")).await.ok()?;
            reason.text().await.ok().filter(|text| !text.is_empty())
        },
    )
    .await;
    assert!(reason.contains("MachineMetadata"), "{reason}");
    ui.still_same_page().await;
    ui.screenshot("fleet-unplaced").await;
    ui.store.delete(&stray).await.unwrap();

    // The release list, open while the next push builds and rolls out.
    ui.open("/apps/shop/releases").await;
    ui.wait_for_text("v1").await;
    let releases = ui.browser.window().await.unwrap();
    // The commit message is shown as text: no script runs.
    assert!(ui.text().await.contains(&format!("first {script}")));
    ui.no_script_ran().await;

    let nonce = format!("{:x}", std::process::id() as u64 * 7919 + rand_nonce());
    let slow = format!("sleep 3 && echo built {nonce}");
    let first_push = ui
        .newest_rollout("shop", "push")
        .await
        .expect("v1's push rollout");
    let mut push = ui.commit(tree.path(), "shop", ("shop v2", "second"), Some(&slow));
    let _push = tests::ChildGuard::spawn(
        push.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    let app = store::AppName::new("shop").unwrap();
    let build = tests::eventually("the build to run", Duration::from_secs(60), async || {
        let listing = ui.store.list(&ui.store.keys().builds(&app)).await.unwrap();
        listing
            .entries
            .into_iter()
            .find(|e| e.value.status == store::records::BuildStatus::Running)
            .map(|e| ui.store.keys().builds(&app).child_name(&e.key).to_string())
    })
    .await;
    let window = ui.browser.new_window(true).await.unwrap();
    ui.browser
        .switch_to_window(window.handle.clone())
        .await
        .unwrap();
    ui.open(&format!("/apps/shop/builds/{build}")).await;
    ui.wait_for_text("building").await;
    // The slow step's line appears as the builder writes it.
    ui.wait_for_text(&format!("built {nonce}")).await;
    ui.still_same_page().await;
    ui.screenshot("build").await;

    // The rollout's page, live: each instance's steps, then its end.
    let rollout = tests::eventually("the push's rollout", Duration::from_secs(60), async || {
        ui.newest_rollout("shop", "push")
            .await
            .filter(|r| r.id != first_push.id)
    })
    .await;
    ui.open(&format!("/apps/shop/rollouts/{}", rollout.id))
        .await;
    ui.wait_for_text("succeeded").await;
    ui.still_same_page().await;
    let rows = ui
        .browser
        .find_all(Locator::Css("table.steps tbody tr"))
        .await
        .unwrap();
    let mut instances = Vec::new();
    for row in &rows {
        instances.push(row.attr("data-instance").await.unwrap().unwrap_or_default());
    }
    for i in 1..=3 {
        assert!(
            instances.contains(&format!("shop-v2-web-{i}")),
            "{instances:?}"
        );
        assert!(
            instances.contains(&format!("shop-v1-web-{i}")),
            "the old ones withdrawn: {instances:?}"
        );
    }
    ui.screenshot("rollout").await;
    ui.answers_with("shop", "shop v2").await;

    // The release list shows the new release, without a reload.
    ui.browser.switch_to_window(releases.clone()).await.unwrap();
    tests::eventually(
        "v2 serving on the open release list",
        Duration::from_secs(30),
        async || {
            let row = ui.browser.find(Locator::Css("tr.serving")).await.ok()?;
            (row.attr("data-release").await.ok()?? == "2").then_some(())
        },
    )
    .await;
    ui.still_same_page().await;
    ui.screenshot("releases").await;

    // Roll back to v1 from this list, while the other window shows it too:
    // the page says what will run, and the button does it.
    ui.browser
        .switch_to_window(window.handle.clone())
        .await
        .unwrap();
    ui.open("/apps/shop/releases").await;
    let watching = ui.browser.window().await.unwrap();
    ui.browser.switch_to_window(releases).await.unwrap();
    ui.click("tr[data-release='1'] a.button").await;
    let confirm = ui.wait_for_text("roll back to v1?").await;
    assert!(confirm.contains("makes release v3"), "{confirm}");
    ui.click("button.danger").await;
    ui.wait_for_text("rollback").await;
    ui.browser
        .execute("window.pazMark = 'unreloaded';", vec![])
        .await
        .unwrap();
    ui.wait_for_text("succeeded").await;
    ui.still_same_page().await;
    ui.answers_with("shop", "shop v1").await;
    ui.browser.switch_to_window(watching).await.unwrap();
    tests::eventually(
        "v3 serving on the open release list",
        Duration::from_secs(30),
        async || {
            let row = ui.browser.find(Locator::Css("tr.serving")).await.ok()?;
            (row.attr("data-release").await.ok()?? == "3").then_some(())
        },
    )
    .await;
    ui.still_same_page().await;

    // Config from the page: a new release, its value shown as text.
    ui.open("/apps/shop/config").await;
    let config_page = ui.text().await;
    assert!(
        config_page.contains("Saving makes release v4"),
        "{config_page}"
    );
    let value = "<script>window.pazXss=1;alert(1)</script>";
    ui.fill("input[name=key]", "GREETING").await;
    ui.fill("input[name=value]", value).await;
    ui.click("form[action='/apps/shop/config'] button").await;
    ui.wait_for_text("config").await;
    ui.wait_for_text("succeeded").await;
    ui.screenshot("config-rollout").await;
    let env = ui.ssh(&["config:get", "shop", "GREETING"]);
    assert_eq!(env.trim(), value);
    ui.open("/apps/shop/config").await;
    assert!(!ui.text().await.contains(value), "masked by default");
    ui.open("/apps/shop/config/revealed").await;
    ui.wait_for_text(value).await;
    ui.no_script_ran().await;
    ui.screenshot("config").await;

    // A domain added from the settings page is routed.
    ui.open("/apps/shop/settings").await;
    ui.fill("input[name=domain]", "www.shop.test").await;
    ui.click("form[action='/apps/shop/domains'] button").await;
    ui.wait_for_text("Remove").await;
    assert!(ui.ssh(&["domains:list", "shop"]).contains("www.shop.test"));
    ui.answers_with_on("www.shop.test", "shop v1").await;

    // HTTPS on the same page: each name's certificate (none here: no
    // ACME, none brought), and the switches for the redirect and HSTS.
    ui.wait_for_text("HTTPS").await;
    assert!(ui.text().await.contains("www.shop.test"));
    ui.click("#https-hsts").await;
    ui.wait_for_text("Turn HSTS off").await;
    assert!(ui.ssh(&["apps:info", "shop"]).contains("hsts on"));

    // A token made on the admin page: its secret is shown this once.
    ui.open("/admin").await;
    ui.fill("form[action='/admin/tokens'] input[name=name]", "ci")
        .await;
    ui.fill("form[action='/admin/tokens'] input[name=apps]", "shop")
        .await;
    ui.click("form[action='/admin/tokens'] button").await;
    ui.wait_for_text("shown this once").await;
    let secret = ui
        .browser
        .find(Locator::Css("#new-secret"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(secret.starts_with("paz_"), "{secret}");
    assert!(ui.ssh(&["tokens:list"]).contains("ci"));
    ui.open("/admin").await;
    assert!(
        !ui.browser.source().await.unwrap().contains(secret.trim()),
        "shown once only"
    );

    // Every other page, for the README and a look.
    for (path, name) in [
        ("/apps", "apps"),
        ("/apps/shop", "app"),
        ("/apps/shop/builds", "builds"),
        ("/apps/shop/settings", "settings"),
        ("/apps/shop/units", "units"),
        ("/registry", "registry"),
        ("/audit", "audit"),
        ("/admin", "admin"),
    ] {
        ui.open(path).await;
        ui.no_script_ran().await;
        ui.screenshot(name).await;
    }
    // A machine's page: its units, metadata and heartbeat.
    ui.open("/").await;
    let link = ui
        .browser
        .find(Locator::Css("article.machine a.mono"))
        .await
        .unwrap();
    let machine = link
        .attr("href")
        .await
        .unwrap()
        .expect("a link to the machine");
    ui.open(&machine).await;
    let page = ui.wait_for_text("Heartbeat").await;
    assert!(
        page.contains("shop v4 web.1") && page.contains("127.0.0.1"),
        "{page}"
    );
    ui.screenshot("machine").await;
    ui.open("/registry").await;
    ui.wait_for_text("shop v1").await;
    ui.open("/apps/shop").await;
    let overview = ui.wait_for_text("healthy").await;
    assert!(overview.contains("v4"), "{overview}");

    // The charts: after some requests, the app's page draws its request
    // rate, latency and memory from what the server read of the cluster.
    let mut drawn = false;
    for _ in 0..40 {
        for _ in 0..5 {
            ui.answers_with("shop", "shop v1").await;
        }
        ui.open("/apps/shop").await;
        let lines = |chart: &'static str| {
            let browser = ui.browser.clone();
            async move {
                browser
                    .find_all(Locator::Css(&format!(
                        "figure[data-chart='{chart}'] polyline"
                    )))
                    .await
                    .map_or(0, |found| found.len())
            }
        };
        if lines("Requests").await > 0 && lines("Latency").await > 0 && lines("Memory").await > 0 {
            drawn = true;
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(drawn, "the charts never had data:\n{}", ui.text().await);
    let points = ui
        .browser
        .find(Locator::Css("figure[data-chart='Requests'] polyline"))
        .await
        .unwrap()
        .attr("points")
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(!points.is_empty(), "the request rate has points");
    // Its newest rate is the requests just made, not a line at 0.
    let rate = ui
        .browser
        .find(Locator::Css(
            "figure[data-chart='Requests'] figcaption .key",
        ))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let rate: f64 = rate.split_whitespace().next().unwrap().parse().unwrap();
    assert!(rate > 0.0, "the request rate is drawn above 0: {rate}");
    ui.no_script_ran().await;
    ui.browser
        .execute(
            "document.querySelector('section.charts').scrollIntoView();",
            vec![],
        )
        .await
        .unwrap();
    ui.screenshot("charts").await;
    // The machine's page draws its host's CPU and memory.
    ui.open(&machine).await;
    ui.wait_for_text("The last hour").await;
    assert!(
        !ui.browser
            .find_all(Locator::Css("figure[data-chart='CPU'] polyline"))
            .await
            .unwrap()
            .is_empty(),
        "the host's CPU is drawn"
    );
    // The logs tab: the app's lines (this one prints none) and the agent's.
    ui.open("/apps/shop/logs").await;
    let logs = ui.wait_for_text("paz[agent] v4").await;
    assert!(logs.contains("web.1 started in container"), "{logs}");
    ui.screenshot("logs").await;

    // Logging out ends the session in the browser.
    ui.click("form.who button").await;
    ui.wait_for_text("Paz token").await;
    ui.browser.goto(&ui.url("/apps")).await.unwrap();
    ui.wait_for_text("Paz token").await;
    ui.browser.clone().close().await.unwrap();
}

fn rand_nonce() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
}

/// The CSRF token in a page's forms.
fn csrf_in(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .expect("the page has a form")
        + 19;
    page[at..at + 32].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployer_sees_only_its_apps_and_forged_forms_change_nothing() {
    let ui = Ui::start("web-deployer").await;
    let mine_tree = ui.deploy("mine", "mine v1", "mine");
    let _theirs = ui.deploy("theirs", "theirs v1", "theirs");
    // A second release of each, so that a rollback has somewhere to go.
    ui.ssh(&["config:set", "mine", "A=1"]);
    ui.ssh(&["config:set", "theirs", "A=1"]);
    let deployer = ui.token("dev", "deployer", &["mine"]);
    let admin = ui.token("ops", "admin", &[]);
    ui.log_in(&deployer).await;

    // No page shows the other app, nor its units.
    for path in [
        "/",
        "/apps",
        "/registry",
        "/audit",
        "/apps/mine",
        "/apps/mine/releases",
    ] {
        ui.open(path).await;
        let page = ui.browser.source().await.unwrap();
        assert!(page.contains("mine"), "{path} shows the deployer's app");
        assert!(!page.contains("theirs"), "{path} shows another app: {page}");
    }
    ui.open("/").await;
    ui.screenshot("fleet-deployer").await;
    for path in [
        "/apps/theirs",
        "/apps/theirs/releases",
        "/apps/theirs/config",
        "/admin",
        "/apps/mine/config/revealed",
        "/machines/x",
    ] {
        ui.open(path).await;
        let page = ui.text().await;
        assert!(
            page.contains("Forbidden") || page.contains("Not Found"),
            "{path}: {page}"
        );
    }

    // Forms sent without the browser: with the deployer's cookie, a foreign
    // Origin or no CSRF token is refused, as is the other app; nothing changes.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = |secret: String, path: &str| {
        let request = http
            .get(ui.url(path))
            .header("cookie", format!("paz_session={secret}"));
        async move { request.send().await.unwrap().text().await.unwrap() }
    };
    let csrf = csrf_in(&page(deployer.clone(), "/apps/mine/releases").await);
    let admin_csrf = csrf_in(&page(admin.clone(), "/apps/theirs/releases").await);
    let post = |secret: &str, origin: Option<&str>, path: &str, body: String| {
        let mut request = http
            .post(ui.url(path))
            .header("cookie", format!("paz_session={secret}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    let ours = ui.url("");
    let before = ui.state().await;
    let refused = [
        (
            deployer.as_str(),
            Some(ours.as_str()),
            "/apps/mine/rollback/1",
            String::new(),
            "no CSRF token",
        ),
        (
            deployer.as_str(),
            Some(ours.as_str()),
            "/apps/mine/rollback/1",
            format!("csrf={admin_csrf}"),
            "another session's CSRF token",
        ),
        (
            deployer.as_str(),
            Some("http://evil.example"),
            "/apps/mine/rollback/1",
            format!("csrf={csrf}"),
            "a foreign Origin",
        ),
        (
            deployer.as_str(),
            None,
            "/apps/mine/rollback/1",
            format!("csrf={csrf}"),
            "no Origin",
        ),
        (
            deployer.as_str(),
            Some(ours.as_str()),
            "/apps/theirs/rollback/1",
            format!("csrf={csrf}"),
            "another app",
        ),
        (
            deployer.as_str(),
            Some(ours.as_str()),
            "/apps/theirs/config",
            format!("csrf={csrf}&key=B&value=2"),
            "another app's config",
        ),
        (
            deployer.as_str(),
            Some(ours.as_str()),
            "/admin/tokens",
            format!("csrf={csrf}&name=x&role=admin"),
            "an admin's form",
        ),
        (
            admin.as_str(),
            Some("http://evil.example"),
            "/apps/theirs/rollback/1",
            format!("csrf={admin_csrf}"),
            "an admin's form from elsewhere",
        ),
        (
            "paz_nonsense",
            Some(ours.as_str()),
            "/apps/mine/rollback/1",
            format!("csrf={csrf}"),
            "no session",
        ),
    ];
    for (secret, origin, path, body, why) in refused {
        let (status, answer) = post(secret, origin, path, body).await;
        assert!(
            matches!(status, 303 | 401 | 403),
            "{why}: {status} {answer}"
        );
        if status == 303 {
            assert_eq!(
                secret, "paz_nonsense",
                "{why}: only no session is sent to log in"
            );
        }
    }
    assert_eq!(ui.state().await, before, "a refused form changes nothing");
    // Every page forbids inline script and other origins.
    let answered = http.get(ui.url("/login")).send().await.unwrap();
    let policy = answered.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        policy.contains("script-src 'self'") && !policy.contains("unsafe"),
        "{policy}"
    );
    assert_eq!(answered.headers()["x-frame-options"], "DENY");
    let live = http
        .get(ui.url("/live?view=/apps/theirs&after=0"))
        .header("cookie", format!("paz_session={deployer}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        live.status(),
        403,
        "another app's page is not followed either"
    );

    // The same form, from the page with its token, does roll back.
    let (status, answer) = post(
        &deployer,
        Some(&ours),
        "/apps/mine/rollback/1",
        format!("csrf={csrf}"),
    )
    .await;
    assert_eq!(status, 303, "{answer}");
    tests::eventually(
        "the rollback to serve",
        Duration::from_secs(60),
        async || {
            let rollout = ui.newest_rollout("mine", "rollback").await?;
            (rollout.status == store::RolloutStatus::Succeeded).then_some(())
        },
    )
    .await;
    ui.answers_with("mine", "mine v1").await;

    // A release whose instances crash: its rollout's page says which step
    // failed and why, and the app goes on answering.
    let last = ui
        .newest_rollout("mine", "push")
        .await
        .expect("mine's push");
    let tree = &mine_tree;
    std::fs::write(
        tree.path().join("Dockerfile"),
        format!("FROM {}\nCMD [\"sh\", \"-c\", \"exit 3\"]\n", ui.base),
    )
    .unwrap();
    for args in [&["add", "."][..], &["commit", "-q", "-m", "crash"]] {
        let output = ui.admin_key.git(tree.path()).args(args).output().unwrap();
        assert!(output.status.success(), "git {args:?}: {}", said(&output));
    }
    let url = format!("ssh://paz@127.0.0.1:{}/mine", ui.running.ssh_port);
    let pushed = ui
        .admin_key
        .git(tree.path())
        .args(["push", &url, "main"])
        .output()
        .unwrap();
    assert!(
        !pushed.status.success(),
        "a release that crashes is not released"
    );
    let failed = tests::eventually(
        "the crash's rollout to end",
        Duration::from_secs(30),
        async || {
            let newest = ui.newest_rollout("mine", "push").await?;
            (newest.id != last.id && newest.status != store::RolloutStatus::Running)
                .then_some(newest)
        },
    )
    .await;
    assert_eq!(failed.status, store::RolloutStatus::Failed);
    ui.open(&format!("/apps/mine/rollouts/{}", failed.id)).await;
    let page = ui.wait_for_text("Failed:").await;
    let alert = ui
        .browser
        .find(Locator::Css("p.error"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        alert.len() > "Failed: ".len() + 10,
        "the failure says why: {alert}"
    );
    assert!(page.contains("failed"), "{page}");
    ui.screenshot("rollout-failed").await;
    ui.answers_with("mine", "mine v1").await;
    ui.browser.clone().close().await.unwrap();
}

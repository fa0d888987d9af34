//! Builds through `paz up`, from the outside: real git pushes, the real Docker
//! Engine, the image in Paz's registry, and the image running and answering HTTP.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{get, get_path, start, Running};
use tests::{DockerCleanup, SshIdentity};

struct Paz {
    running: Running,
    data: tempfile::TempDir,
    admin: SshIdentity,
    store: store::Store,
    cleanup: DockerCleanup,
}

async fn paz_up(test_name: &str) -> Paz {
    paz_up_with(test_name, &[]).await
}

async fn paz_up_with(test_name: &str, extra: &[&str]) -> Paz {
    let docker = tests::docker().await;
    let base = tests::busybox_image(&docker).await;
    let admin = SshIdentity::new("ed25519");
    let key = admin.private_key.with_extension("pub");
    let data = tests::temp_dir();
    let running = start(
        &[
            "--data-dir",
            data.path().to_str().unwrap(),
            "--admin-key",
            key.to_str().unwrap(),
            "--buildpack-image",
            &format!("static={base}"),
        ]
        .into_iter()
        .chain(extra.iter().copied())
        .collect::<Vec<_>>(),
        &[],
    );
    let store = running.store("/paz").await;
    let mut cleanup = DockerCleanup::new(test_name);
    // What this paz up's agent runs goes with the test.
    let machine = agent::machine_id(data.path()).unwrap();
    cleanup.track_label(&format!("paz.machine={machine}"));
    Paz {
        running,
        data,
        admin,
        store,
        cleanup,
    }
}

impl Paz {
    fn url(&self, app: &str) -> String {
        format!("ssh://paz@127.0.0.1:{}/{app}", self.running.ssh_port)
    }

    /// A work tree holding `files`, committed on main.
    fn tree(&self, files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tests::temp_dir();
        self.git(dir.path(), &["init", "-q", "-b", "main"]);
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        self.git(dir.path(), &["add", "."]);
        self.git(dir.path(), &["commit", "-q", "-m", "app"]);
        dir
    }

    fn git(&self, dir: &Path, args: &[&str]) -> String {
        let output = self.admin.git(dir).args(args).output().unwrap();
        assert!(
            output.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    fn push(&mut self, dir: &Path, app: &str) -> Output {
        let sha = self.git(dir, &["rev-parse", "HEAD"]);
        self.cleanup.track_image(&format!(
            "127.0.0.1:{}/{app}:{sha}",
            self.running.registry_port
        ));
        self.admin
            .git(dir)
            .args(["push", &self.url(app), "main"])
            .output()
            .unwrap()
    }

    /// Release `n` of `app`, which must exist.
    async fn release(&self, app: &store::AppName, n: u64) -> store::records::Release {
        self.store
            .get(&self.store.keys().release(app, n))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{app} has no release v{n}"))
            .value
    }

    /// How many releases `app` has.
    async fn releases(&self, app: &store::AppName) -> usize {
        self.store
            .list(&self.store.keys().releases(app))
            .await
            .unwrap()
            .entries
            .len()
    }

    /// Pushes `dir`'s main over whatever the app's main is.
    fn force_push(&mut self, dir: &Path, app: &str) -> Output {
        self.admin
            .git(dir)
            .args(["push", "--force", &self.url(app), "main"])
            .output()
            .unwrap()
    }

    /// The status of `GET /v2/<app>/manifests/<reference>` with the builder's token.
    fn registry_status(&self, app: &str, reference: &str) -> String {
        let tokens: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(self.data.path().join("internal-tokens.json")).unwrap(),
        )
        .unwrap();
        let credentials = format!(
            "{}:{}",
            tokens["builder"]["name"].as_str().unwrap(),
            tokens["builder"]["secret"].as_str().unwrap()
        );
        let output = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-u",
                &credentials,
            ])
            .args([
                "-H",
                "Accept: application/vnd.docker.distribution.manifest.v2+json",
            ])
            .arg(format!(
                "http://127.0.0.1:{}/v2/{app}/manifests/{reference}",
                self.running.registry_port
            ))
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).to_string()
    }

    /// Runs `image` with PORT=`port` published on loopback; returns the host port.
    fn run_container(&self, image: &str, port: u16) -> u16 {
        let output = Command::new("docker")
            .args([
                "run",
                "-d",
                "--label",
                &self.cleanup.label_arg(),
                "-e",
                &format!("PORT={port}"),
            ])
            .args(["-p", &format!("127.0.0.1::{port}"), image])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "docker run: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let id = String::from_utf8_lossy(&output.stdout).trim().to_string();
        let mapped = Command::new("docker")
            .args(["port", &id, &port.to_string()])
            .output()
            .unwrap();
        let mapped = String::from_utf8_lossy(&mapped.stdout);
        mapped
            .lines()
            .next()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

/// `GET http://127.0.0.1:port/path`, retried while the container starts.
/// `GET /` through Paz's proxy with `Host: host`.
fn curl_host(port: u16, host: &str) -> String {
    let output = Command::new("curl")
        .args(["-s", "-H", &format!("Host: {host}")])
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).to_string()
}

fn http_get(port: u16, path: &str) -> String {
    tests::eventually_blocking(
        &format!("an answer from http://127.0.0.1:{port}{path}"),
        Duration::from_secs(10),
        || {
            let output = Command::new("curl")
                .args(["-s", "-f", &format!("http://127.0.0.1:{port}{path}")])
                .output()
                .unwrap();
            output
                .status
                .success()
                .then(|| String::from_utf8_lossy(&output.stdout).to_string())
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dockerfile_app_and_a_static_app_are_built_pushed_and_served() {
    let mut paz = paz_up("build-apps").await;
    let base = tests::BUSYBOX_IMAGE;
    let dockerfile = format!("FROM {base}\nCOPY index.html /www/index.html\nCMD [\"sh\", \"-c\", \"exec httpd -f -p $PORT -h /www\"]\n");
    let tree = paz.tree(&[
        ("Dockerfile", &dockerfile),
        ("index.html", "hello from a Dockerfile\n"),
    ]);
    let sha = paz.git(tree.path(), &["rev-parse", "HEAD"]);
    let pushed = paz.push(tree.path(), "demo");
    let said = text(&pushed);
    assert!(pushed.status.success(), "{said}");
    for expected in [
        format!(
            "remote: -----> Building demo ({}) with Dockerfile",
            &sha[..7]
        ),
        "remote:        Step 1/".to_string(),
        format!(
            "remote: -----> Pushing image 127.0.0.1:{}/demo:{}",
            paz.running.registry_port,
            &sha[..7]
        ),
        "remote: -----> Recorded release v1: ".to_string(),
        "remote: -----> Starting demo-v1-web-1 on machine ".to_string(),
        "remote:        demo-v1-web-1 healthy after ".to_string(),
        "remote: -----> Released v1: http://demo.paz.localhost".to_string(),
        "remote: -----> Done in ".to_string(),
    ] {
        assert!(said.contains(&expected), "missing `{expected}` in:\n{said}");
    }
    assert_eq!(
        paz.registry_status("demo", &sha),
        "200",
        "the image is in the registry"
    );
    let app = store::AppName::new("demo").unwrap();
    let release = paz.release(&app, 1).await;
    assert!(release.image.starts_with(&format!(
        "127.0.0.1:{}/demo@sha256:",
        paz.running.registry_port
    )));
    assert_eq!(release.git_sha.as_deref(), Some(sha.as_str()));
    assert_eq!(
        release.status,
        store::records::ReleaseStatus::Active,
        "rolled out before the push ended"
    );
    assert_eq!(
        curl_host(paz.running.http_port, "demo.paz.localhost"),
        "hello from a Dockerfile\n",
        "live behind the proxy when the push ends"
    );
    let demo_sha = sha.clone();
    let port = paz.run_container(
        &format!("127.0.0.1:{}/demo:{sha}", paz.running.registry_port),
        8080,
    );
    assert_eq!(http_get(port, "/"), "hello from a Dockerfile\n");

    // A static site: the buildpack, with its base image set to the test busybox.
    let tree = paz.tree(&[
        ("index.html", "<h1>static</h1>\n"),
        ("Procfile", "worker: sleep 1000\n"),
    ]);
    let sha = paz.git(tree.path(), &["rev-parse", "HEAD"]);
    let pushed = paz.push(tree.path(), "site");
    assert!(pushed.status.success(), "{}", text(&pushed));
    assert!(
        text(&pushed).contains("with the static buildpack"),
        "{}",
        text(&pushed)
    );
    let site = store::AppName::new("site").unwrap();
    let release = paz.release(&site, 1).await;
    assert_eq!(
        release.processes.get("worker").map(String::as_str),
        Some("sleep 1000")
    );
    let port = paz.run_container(
        &format!("127.0.0.1:{}/site:{sha}", paz.running.registry_port),
        5000,
    );
    assert_eq!(http_get(port, "/index.html"), "<h1>static</h1>\n");

    // The builds are recorded, with their logs.
    let builds = paz
        .admin
        .ssh("paz@127.0.0.1", paz.running.ssh_port, &["builds", "demo"]);
    let listed = String::from_utf8_lossy(&builds.stdout);
    assert!(
        listed.contains("succeeded")
            && listed.contains(&demo_sha[..7])
            && listed.contains("Dockerfile"),
        "{listed}"
    );
    let log = paz.admin.ssh(
        "paz@127.0.0.1",
        paz.running.ssh_port,
        &["builds:log", "demo"],
    );
    assert!(String::from_utf8_lossy(&log.stdout).contains(&format!("Step 1/5 : FROM {base}")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_and_undetectable_builds_reject_the_push() {
    let mut paz = paz_up("build-failures").await;
    let base = tests::BUSYBOX_IMAGE;
    let tree = paz.tree(&[(
        "Dockerfile",
        &format!("FROM {base}\nRUN echo this step fails && false\n"),
    )]);
    let sha = paz.git(tree.path(), &["rev-parse", "HEAD"]);
    let pushed = paz.push(tree.path(), "broken");
    let said = text(&pushed);
    assert!(!pushed.status.success());
    assert!(
        said.contains("remote:        this step fails"),
        "the failing step's output: {said}"
    );
    assert!(said.contains("pre-receive hook declined"), "{said}");
    assert!(said.contains("the last lines of build"), "{said}");
    assert_eq!(
        paz.registry_status("broken", &sha),
        "404",
        "no image in the registry"
    );
    let app = store::AppName::new("broken").unwrap();
    let builds = paz
        .store
        .list(&paz.store.keys().builds(&app))
        .await
        .unwrap();
    assert_eq!(builds.entries.len(), 1);
    assert_eq!(
        builds.entries[0].value.status,
        store::records::BuildStatus::Failed
    );
    assert_eq!(paz.releases(&app).await, 0, "no release");

    let tree = paz.tree(&[("README.md", "nothing to build\n")]);
    let pushed = paz.push(tree.path(), "empty");
    assert!(!pushed.status.success());
    assert!(
        text(&pushed).contains("nothing to build: no Dockerfile and no buildpack matches; looked for Dockerfile, package.json (node)"),
        "{}",
        text(&pushed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dockerignore_is_honoured_and_an_unchanged_tree_is_not_built_again() {
    let mut paz = paz_up("build-ignore").await;
    let base = tests::BUSYBOX_IMAGE;
    let tree = paz.tree(&[
        (
            "Dockerfile",
            &format!("FROM {base}\nCOPY . /app\nCMD [\"sh\", \"-c\", \"exec httpd -f -p $PORT -h /app\"]\n"),
        ),
        (".dockerignore", "secret.txt\nlogs/\n"),
        ("secret.txt", "do not ship\n"),
        ("logs/old.log", "old\n"),
        ("kept.txt", "ship me\n"),
    ]);
    let sha = paz.git(tree.path(), &["rev-parse", "HEAD"]);
    let pushed = paz.push(tree.path(), "ignore");
    assert!(pushed.status.success(), "{}", text(&pushed));
    let image = format!("127.0.0.1:{}/ignore:{sha}", paz.running.registry_port);
    let listed = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--label",
            &paz.cleanup.label_arg(),
            &image,
            "ls",
            "/app",
        ])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains("kept.txt"), "{listed}");
    assert!(
        !listed.contains("secret.txt") && !listed.contains("logs"),
        "{listed}"
    );

    // The same tree again (a new commit, no change): nothing is built.
    paz.git(
        tree.path(),
        &["commit", "-q", "--allow-empty", "-m", "no change"],
    );
    let again = paz.push(tree.path(), "ignore");
    let said = text(&again);
    assert!(again.status.success(), "{said}");
    assert!(
        said.contains("remote: -----> No change since build"),
        "{said}"
    );
    assert!(!said.contains("Building ignore"), "{said}");
    let app = store::AppName::new("ignore").unwrap();
    let releases = paz
        .store
        .list(&paz.store.keys().releases(&app))
        .await
        .unwrap();
    assert_eq!(releases.entries.len(), 2);
    assert_eq!(
        releases.entries[0].value.image, releases.entries[1].value.image,
        "the image is reused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pusher_that_disconnects_leaves_a_finished_recorded_build() {
    let mut paz = paz_up("build-disconnect").await;
    let base = tests::BUSYBOX_IMAGE;
    let tree = paz.tree(&[(
        "Dockerfile",
        &format!("FROM {base}\nRUN sleep 3 && echo slow step done\n"),
    )]);
    let sha = paz.git(tree.path(), &["rev-parse", "HEAD"]);
    paz.cleanup.track_image(&format!(
        "127.0.0.1:{}/slow:{sha}",
        paz.running.registry_port
    ));
    let mut push = paz.admin.git(tree.path());
    push.args(["push", &paz.url("slow"), "main"])
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = push.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("-----> Building slow") {
        line.clear();
        assert!(
            lines.read_line(&mut line).unwrap() > 0,
            "the push ended before its build started"
        );
    }
    // The pusher goes away: git and its ssh, the whole group.
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = child.wait();

    let app = store::AppName::new("slow").unwrap();
    let status = tests::eventually(
        "the build to finish without its pusher",
        Duration::from_secs(30),
        async || {
            let builds = paz
                .store
                .list(&paz.store.keys().builds(&app))
                .await
                .unwrap();
            let status = builds.entries.first().map(|entry| entry.value.status)?;
            (status != store::records::BuildStatus::Running).then_some(status)
        },
    )
    .await;
    assert_eq!(
        status,
        store::records::BuildStatus::Succeeded,
        "the build finished without its pusher"
    );
    let log = std::fs::read_dir(paz.data.path().join("builds/slow"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("slow step done"));
}

/// Runs the docker CLI with its config (logins) in `config`, `stdin` on its
/// input; fails the test if it fails.
fn docker_with(config: &Path, args: &[&str], stdin: Option<&str>) {
    let mut command = Command::new("docker");
    command
        .env("DOCKER_CONFIG", config)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "docker {args:?}: {}",
        text(&output)
    );
}

/// Builds `context` as `image`, labelled for the test's cleanup.
fn build_image(paz: &Paz, config: &Path, image: &str, context: &Path) {
    let label = paz.cleanup.label_arg();
    let args = ["build", "-q", "--label", &label, "-t", image];
    let context = context.to_str().unwrap();
    docker_with(config, &[&args[..], &[context]].concat(), None);
}

fn web_app(paz: &Paz, say: &str) -> tempfile::TempDir {
    app_running(
        paz,
        say,
        "echo ${GREETING:-unset} > /www/greeting && exec httpd -f -p $PORT -h /www",
    )
}

/// An app whose page says `say`, started with `sh -c SHELL`.
fn app_running(paz: &Paz, say: &str, shell: &str) -> tempfile::TempDir {
    let base = tests::BUSYBOX_IMAGE;
    let command = serde_json::to_string(&["sh", "-c", shell]).unwrap();
    paz.tree(&[
        (
            "Dockerfile",
            &format!("FROM {base}\nCOPY index.html /www/index.html\nCMD {command}\n"),
        ),
        ("index.html", &format!("{say}\n")),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_roll_out_with_no_failed_request_and_bad_releases_never_serve() {
    let mut paz = paz_up_with("deploy-rolling", &["--deploy-timeout", "12"]).await;
    let http = paz.running.http_port;
    let v1 = web_app(&paz, "v1");
    let pushed = paz.force_push(v1.path(), "roll");
    assert!(pushed.status.success(), "{}", text(&pushed));
    assert_eq!(get(http, "roll.paz.localhost"), (200, "v1\n".to_string()));

    // A release that never passes its health check: rejected with the reason,
    // and v1 keeps serving all along.
    let base = tests::BUSYBOX_IMAGE;
    let bad = paz.tree(&[(
        "Dockerfile",
        &format!("FROM {base}\nCMD [\"sleep\", \"1000\"]\n"),
    )]);
    let pushed = paz.force_push(bad.path(), "roll");
    let said = text(&pushed);
    assert!(!pushed.status.success(), "{said}");
    assert!(
        said.contains("roll-v2-web-1 did not pass its health check within 12 s")
            && said.contains("pre-receive hook declined"),
        "{said}"
    );
    let app = store::AppName::new("roll").unwrap();
    let v2 = paz.release(&app, 2).await;
    assert_eq!(v2.status, store::records::ReleaseStatus::Failed);
    assert!(
        paz.store
            .get(&paz.store.keys().service(&app, 2, "1").unwrap())
            .await
            .unwrap()
            .is_none(),
        "a failed release is never announced"
    );
    assert!(
        paz.store
            .get(&paz.store.keys().unit("roll-v2-web-1.service").unwrap())
            .await
            .unwrap()
            .is_none(),
        "its units are removed"
    );
    assert_eq!(get(http, "roll.paz.localhost"), (200, "v1\n".to_string()));
    assert_eq!(
        paz.store
            .get(&paz.store.keys().current(&app))
            .await
            .unwrap()
            .unwrap()
            .value,
        1
    );

    // Scale to 2, then roll v3 out while a client keeps asking.
    let scaled = paz.admin.ssh(
        "paz@127.0.0.1",
        paz.running.ssh_port,
        &["ps:scale", "roll", "web=3"],
    );
    assert!(scaled.status.success(), "{}", text(&scaled));
    let listed = paz
        .admin
        .ssh("paz@127.0.0.1", paz.running.ssh_port, &["ps", "roll"]);
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(
        (1..=3).all(|i| listed.contains(&format!("roll-v1-web-{i}"))),
        "{listed}"
    );

    let load = common::Load::start(http, "roll.paz.localhost");
    let v3 = web_app(&paz, "v3");
    let v3_sha = paz.git(v3.path(), &["rev-parse", "HEAD"]);
    let pushed = paz.force_push(v3.path(), "roll");
    let said = text(&pushed);
    assert!(pushed.status.success(), "{said}");
    assert!(
        said.find("Starting roll-v3-web-1").unwrap() < said.find("Stopping roll-v1-web-").unwrap()
            && said.contains("Released v3: http://roll.paz.localhost"),
        "one instance at a time, new before old: {said}"
    );
    // The drained v1 instances stop after the push; keep asking a moment more.
    std::thread::sleep(Duration::from_secs(3));
    let seen = load.finish();
    common::assert_all_answered(&seen);
    let bodies: Vec<&str> = seen.iter().map(|(_, _, body)| body.as_str()).collect();
    let first_new = bodies
        .iter()
        .position(|b| *b == "v3\n")
        .expect("v3 answered");
    assert!(
        bodies[..first_new].iter().all(|b| *b == "v1\n"),
        "old, then new"
    );
    assert_eq!(bodies.last(), Some(&"v3\n"));

    // Rollback: v1's image again, as v4, without a build.
    let rolled = paz
        .admin
        .ssh("paz@127.0.0.1", paz.running.ssh_port, &["rollback", "roll"]);
    let said = String::from_utf8_lossy(&rolled.stdout).to_string()
        + &String::from_utf8_lossy(&rolled.stderr);
    assert!(rolled.status.success(), "{said}");
    assert!(said.contains("Released v4"), "{said}");
    assert!(!said.contains("Building"), "{said}");
    assert_eq!(get(http, "roll.paz.localhost"), (200, "v1\n".to_string()));
    let v4 = paz.release(&app, 4).await;
    let v1 = paz.release(&app, 1).await;
    assert_eq!(v4.image, v1.image);
    assert_eq!(v4.cause, store::records::ReleaseCause::Rollback);

    // Down to one instance; the releases list tells the story.
    let scaled = paz.admin.ssh(
        "paz@127.0.0.1",
        paz.running.ssh_port,
        &["ps:scale", "roll", "web=1"],
    );
    assert!(scaled.status.success(), "{}", text(&scaled));
    assert!(paz
        .store
        .get(&paz.store.keys().unit("roll-v4-web-2.service").unwrap())
        .await
        .unwrap()
        .is_none());
    let releases = paz
        .admin
        .ssh("paz@127.0.0.1", paz.running.ssh_port, &["releases", "roll"]);
    let releases = String::from_utf8_lossy(&releases.stdout).to_string();
    let lines: Vec<&str> = releases.lines().collect();
    assert!(
        lines[0].starts_with("v4") && lines[0].contains("current") && lines[0].contains("rollback"),
        "{releases}"
    );
    // When, as a UTC time such as 2026-11-28T05:50:19Z.
    assert!(
        lines[0]
            .split_whitespace()
            .any(|word| word.len() == 20 && word.as_bytes()[10] == b'T' && word.ends_with('Z')),
        "{releases}"
    );
    assert!(
        releases
            .lines()
            .any(|l| l.starts_with("v2") && l.contains("failed")),
        "{releases}"
    );
    // config:set: a new release, same image, whose containers see the env.
    assert_eq!(
        get_path(http, "roll.paz.localhost", "/greeting"),
        (200, "unset\n".to_string())
    );
    let set = paz.admin.ssh(
        "paz@127.0.0.1",
        paz.running.ssh_port,
        &["config:set", "roll", "GREETING=hi"],
    );
    let said =
        String::from_utf8_lossy(&set.stdout).to_string() + &String::from_utf8_lossy(&set.stderr);
    assert!(
        set.status.success() && said.contains("Released v5"),
        "{said}"
    );
    assert_eq!(
        get_path(http, "roll.paz.localhost", "/greeting"),
        (200, "hi\n".to_string())
    );
    let v5 = paz.release(&app, 5).await;
    assert_eq!(v5.image, v1.image);
    assert_eq!(v5.cause, store::records::ReleaseCause::Config);

    // ps:restart: the same release, in new containers.
    let state_key = paz
        .store
        .keys()
        .unit_state("roll-v5-web-1.service")
        .unwrap();
    let container = |state: Option<store::Versioned<store::records::UnitState>>| {
        state.and_then(|s| s.value.container)
    };
    let before = container(paz.store.get(&state_key).await.unwrap());
    assert!(before.is_some());
    let restarted = paz.admin.ssh(
        "paz@127.0.0.1",
        paz.running.ssh_port,
        &["ps:restart", "roll"],
    );
    let said = String::from_utf8_lossy(&restarted.stdout).to_string();
    assert!(
        restarted.status.success() && said.contains("Restarted roll v5"),
        "{}",
        text(&restarted)
    );
    let after = container(paz.store.get(&state_key).await.unwrap());
    assert!(after.is_some() && after != before, "{before:?} {after:?}");
    assert_eq!(
        get_path(http, "roll.paz.localhost", "/greeting"),
        (200, "hi\n".to_string())
    );
    let bad = paz.admin.ssh(
        "paz@127.0.0.1",
        paz.running.ssh_port,
        &["ps:scale", "roll", "web=many"],
    );
    assert!(!bad.status.success());
    let bad = paz.admin.ssh(
        "paz@127.0.0.1",
        paz.running.ssh_port,
        &["deploy", "roll", "not an image"],
    );
    assert!(!bad.status.success());

    // apps:destroy: its instances stop and its host is no longer routed.
    let destroyed = paz.admin.ssh(
        "paz@127.0.0.1",
        paz.running.ssh_port,
        &["apps:destroy", "roll", "--force"],
    );
    assert!(destroyed.status.success(), "{}", text(&destroyed));
    let units = paz.store.list(&paz.store.keys().units()).await.unwrap();
    assert!(units.entries.is_empty(), "{:?}", units.entries);
    tests::eventually(
        "the destroyed app's host to answer 404",
        Duration::from_secs(10),
        async || (get(http, "roll.paz.localhost").0 == 404).then_some(()),
    )
    .await;
    assert_eq!(get(http, "roll.paz.localhost").0, 404);
    // Its repository in Paz's registry goes too (the blobs wait for gc).
    tests::eventually(
        "the destroyed app's image to be gone",
        Duration::from_secs(10),
        async || (paz.registry_status("roll", &v3_sha) == "404").then_some(()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_pushed_to_a_followed_repository_deploys_and_others_do_not() {
    let mut paz = paz_up_with("deploy-follow", &["--deploy-timeout", "15"]).await;
    let http = paz.running.http_port;
    let ssh = |paz: &Paz, args: &[&str]| {
        let output = paz.admin.ssh("paz@127.0.0.1", paz.running.ssh_port, args);
        assert!(output.status.success(), "{args:?}: {}", text(&output));
        String::from_utf8_lossy(&output.stdout).to_string()
    };
    let v1 = web_app(&paz, "v1");
    let pushed = paz.push(v1.path(), "follow");
    assert!(pushed.status.success(), "{}", text(&pushed));
    let said = ssh(&paz, &["deploy:follow", "follow", "webimg", "v*"]);
    assert!(
        said.contains("follow now deploys each new tag of webimg matching v*"),
        "{said}"
    );
    let bad = paz.admin.ssh(
        "paz@127.0.0.1",
        paz.running.ssh_port,
        &["deploy:follow", "follow", "Bad Repo!"],
    );
    assert!(!bad.status.success());
    let created: serde_json::Value = serde_json::from_str(&ssh(
        &paz,
        &["tokens:create", "ci", "--role", "admin", "--json"],
    ))
    .unwrap();
    let secret = created["secret"].as_str().unwrap().to_string();

    // CI builds an image and pushes it to Paz's registry as a docker client would.
    let docker_config = tests::temp_dir();
    let registry = format!("127.0.0.1:{}", paz.running.registry_port);
    let docker =
        |args: &[&str], stdin: Option<&str>| docker_with(docker_config.path(), args, stdin);
    docker(
        &["login", &registry, "-u", "ci", "--password-stdin"],
        Some(&secret),
    );
    let context = web_app(&paz, "v2 from CI");
    let follow = store::AppName::new("follow").unwrap();
    for (reference, deploys) in [
        ("other:v9", false),
        ("webimg:latest", false),
        ("webimg:v2", true),
    ] {
        let image = format!("{registry}/{reference}");
        paz.cleanup.track_image(&image);
        build_image(&paz, docker_config.path(), &image, context.path());
        let before = paz.releases(&follow).await;
        docker(&["push", &image], None);
        if !deploys {
            // Give a wrong deploy the time it would take to show.
            tokio::time::sleep(Duration::from_secs(2)).await;
            assert_eq!(
                paz.releases(&follow).await,
                before,
                "{reference} must deploy nothing"
            );
            assert_eq!(get(http, "follow.paz.localhost"), (200, "v1\n".to_string()));
        }
    }
    let answer = tests::eventually(
        "the followed image to go live",
        Duration::from_secs(30),
        async || {
            let answer = get(http, "follow.paz.localhost");
            (answer.1 == "v2 from CI\n").then_some(answer)
        },
    )
    .await;
    assert_eq!(
        answer,
        (200, "v2 from CI\n".to_string()),
        "the followed image went live"
    );
    let app = store::AppName::new("follow").unwrap();
    let v2 = paz.release(&app, 2).await;
    assert_eq!(v2.cause, store::records::ReleaseCause::Image);
    assert_eq!(v2.by, "ci");
    assert!(
        v2.image.starts_with(&format!("{registry}/webimg@sha256:")),
        "{}",
        v2.image
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_release_command_stops_the_deploy_and_a_passing_one_runs_once_before_it() {
    let mut paz = paz_up_with("deploy-release-phase", &["--deploy-timeout", "15"]).await;
    let http = paz.running.http_port;
    let base = tests::BUSYBOX_IMAGE;
    let app = |paz: &Paz, say: &str, release: &str| {
        paz.tree(&[
            (
                "Dockerfile",
                &format!("FROM {base}\nCOPY index.html /www/index.html\nCMD [\"sh\", \"-c\", \"exec httpd -f -p $PORT -h /www\"]\n"),
            ),
            ("index.html", &format!("{say}\n")),
            (
                "Procfile",
                &format!("release: {release}\nworker: while true; do sleep 1; done\nclock: while true; do sleep 1; done\n"),
            ),
        ])
    };
    let failing = app(&paz, "v1", "echo migrating && exit 3");
    let pushed = paz.force_push(failing.path(), "phase");
    let said = text(&pushed);
    assert!(!pushed.status.success(), "{said}");
    assert!(
        said.contains("remote: -----> Running release command: echo migrating && exit 3")
            && said.contains("remote:        migrating")
            && said.contains("the release command `echo migrating && exit 3` failed (exit code 3)"),
        "{said}"
    );
    assert!(
        !said.contains("Starting phase-v1-web-1"),
        "nothing started: {said}"
    );
    assert_eq!(
        get(http, "phase.paz.localhost").0,
        503,
        "the app runs nothing"
    );

    let passing = app(&paz, "v2", "echo migrated");
    let pushed = paz.force_push(passing.path(), "phase");
    let said = text(&pushed);
    assert!(pushed.status.success(), "{said}");
    let ran = said
        .find("remote:        migrated")
        .expect("the release command's output");
    assert!(
        ran < said.find("Starting phase-v2-web-1").unwrap(),
        "before the rollout: {said}"
    );
    assert_eq!(get(http, "phase.paz.localhost"), (200, "v2\n".to_string()));
    let leftovers = Command::new("docker")
        .args(["ps", "-aq", "--filter", "label=paz.release-phase=phase"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&leftovers.stdout).trim().is_empty(),
        "the one-off containers are removed"
    );

    // A worker process: scaled up, it runs (no port, no sidekick); scaled to
    // zero, it goes. The release command does not run again.
    let scaled = paz.admin.ssh(
        "paz@127.0.0.1",
        paz.running.ssh_port,
        &["ps:scale", "phase", "worker=1"],
    );
    let said = String::from_utf8_lossy(&scaled.stdout).to_string();
    assert!(scaled.status.success(), "{}", text(&scaled));
    assert!(said.contains("phase-v2-worker-1 running after"), "{said}");
    assert!(!said.contains("Running release command"), "{said}");
    let ps = paz
        .admin
        .ssh("paz@127.0.0.1", paz.running.ssh_port, &["ps", "phase"]);
    let listed = String::from_utf8_lossy(&ps.stdout).to_string();
    assert!(
        listed.contains("phase-v2-worker-1") && listed.contains("phase-v2-web-1"),
        "{listed}"
    );
    assert!(paz
        .store
        .get(
            &paz.store
                .keys()
                .unit("phase-v2-worker-1-announce.service")
                .unwrap()
        )
        .await
        .unwrap()
        .is_none());
    // Any type the Procfile names: a clock, with no port.
    let scaled = paz.admin.ssh(
        "paz@127.0.0.1",
        paz.running.ssh_port,
        &["ps:scale", "phase", "clock=1"],
    );
    let said = String::from_utf8_lossy(&scaled.stdout).to_string();
    assert!(scaled.status.success(), "{}", text(&scaled));
    assert!(said.contains("phase-v2-clock-1 running after"), "{said}");
    let ps = paz
        .admin
        .ssh("paz@127.0.0.1", paz.running.ssh_port, &["ps", "phase"]);
    let listed = String::from_utf8_lossy(&ps.stdout).to_string();
    for unit in ["phase-v2-web-1", "phase-v2-worker-1", "phase-v2-clock-1"] {
        assert!(listed.contains(unit), "{unit}: {listed}");
    }
    // Each type under its name, as Heroku's `ps` shows them.
    let headings: Vec<&str> = listed.lines().filter(|l| l.starts_with("===")).collect();
    assert_eq!(
        headings,
        ["=== web (1)", "=== worker (1)", "=== clock (1)"],
        "{listed}"
    );
    let clock = paz
        .store
        .get(&paz.store.keys().unit("phase-v2-clock-1.service").unwrap())
        .await
        .unwrap()
        .expect("the clock's unit")
        .value;
    assert!(
        !clock.contains(" -p ") && !clock.contains("PORT="),
        "only web gets a port: {clock}"
    );
    let scaled = paz.admin.ssh(
        "paz@127.0.0.1",
        paz.running.ssh_port,
        &["ps:scale", "phase", "worker=0"],
    );
    assert!(scaled.status.success(), "{}", text(&scaled));
    let said = String::from_utf8_lossy(&scaled.stdout).to_string();
    assert!(said.contains("Stopping phase-v2-worker-1"), "{said}");
    assert!(
        !said.contains("still announced"),
        "a worker is never announced: {said}"
    );
    assert_eq!(get(http, "phase.paz.localhost"), (200, "v2\n".to_string()));

    // A type the Procfile does not name, a malformed one, and the release
    // command: refused with the reason, and the scale is as it was.
    let app_key = paz.store.keys().app(&store::AppName::new("phase").unwrap());
    let before = paz.store.get(&app_key).await.unwrap().unwrap().value.scale;
    for (word, reason) in [
        (
            "nope=1",
            "process type `nope` is not in v2's Procfile (it has web, clock, worker)",
        ),
        ("Clock=1", "process type `Clock` is invalid"),
        ("my-clock=1", "process type `my-clock` is invalid"),
        ("release=1", "`release` is the release command"),
    ] {
        let bad = paz.admin.ssh(
            "paz@127.0.0.1",
            paz.running.ssh_port,
            &["ps:scale", "phase", "web=2", word],
        );
        assert!(!bad.status.success(), "{word}");
        assert!(text(&bad).contains(reason), "{word}: {}", text(&bad));
    }
    let after = paz.store.get(&app_key).await.unwrap().unwrap().value.scale;
    assert_eq!(after, before, "nothing changed");
    assert_eq!(after.of("clock"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_scale_up_leaves_the_serving_instances_and_release_as_they_were() {
    let mut paz = paz_up_with("scale-fails", &["--deploy-timeout", "5"]).await;
    let http = paz.running.http_port;
    // Only the first instance (DYNO=web.1) ever listens.
    let app = app_running(
        &paz,
        "only one",
        "[ \"$DYNO\" = web.1 ] || exec sleep 1000; exec httpd -f -p $PORT -h /www",
    );
    let pushed = paz.push(app.path(), "lonely");
    assert!(pushed.status.success(), "{}", text(&pushed));
    assert_eq!(
        get(http, "lonely.paz.localhost"),
        (200, "only one\n".to_string())
    );

    let scaled = paz.admin.ssh(
        "paz@127.0.0.1",
        paz.running.ssh_port,
        &["ps:scale", "lonely", "web=2"],
    );
    let said = text(&scaled);
    assert!(!scaled.status.success(), "{said}");
    assert!(
        said.contains("lonely-v1-web-2 did not pass its health check within 5 s"),
        "{said}"
    );
    // What served still serves, and the release is still the current one.
    assert_eq!(
        get(http, "lonely.paz.localhost"),
        (200, "only one\n".to_string())
    );
    let name = store::AppName::new("lonely").unwrap();
    let v1 = paz.release(&name, 1).await;
    assert_eq!(v1.status, store::records::ReleaseStatus::Active);
    assert_eq!(
        paz.store
            .get(&paz.store.keys().current(&name))
            .await
            .unwrap()
            .unwrap()
            .value,
        1
    );
    let keys = paz.store.keys();
    assert!(paz
        .store
        .get(&keys.unit("lonely-v1-web-1.service").unwrap())
        .await
        .unwrap()
        .is_some());
    assert!(paz
        .store
        .get(&keys.unit("lonely-v1-web-2.service").unwrap())
        .await
        .unwrap()
        .is_none());
    assert!(paz
        .store
        .get(&keys.service(&name, 1, "1").unwrap())
        .await
        .unwrap()
        .is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pusher_who_goes_away_mid_rollout_does_not_stop_it() {
    let mut paz = paz_up("pusher-gone").await;
    let http = paz.running.http_port;
    let v1 = web_app(&paz, "v1");
    let pushed = paz.force_push(v1.path(), "gone");
    assert!(pushed.status.success(), "{}", text(&pushed));

    // v2 takes a few seconds to listen; the pusher leaves as soon as it starts.
    let v2 = app_running(&paz, "v2", "sleep 3; exec httpd -f -p $PORT -h /www");
    let mut push = paz
        .admin
        .git(v2.path())
        .args(["push", "--force", &paz.url("gone"), "main"])
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let stderr = push.stderr.take().unwrap();
    let mut said = String::new();
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        said.push_str(&line);
        said.push('\n');
        if line.contains("-----> Starting gone-v2-web-1") {
            break;
        }
    }
    assert!(said.contains("Starting gone-v2-web-1"), "{said}");
    // git and its ssh, the whole group: the SSH session ends.
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(push.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = push.wait();
    assert_eq!(get(http, "gone.paz.localhost"), (200, "v1\n".to_string()));

    // The rollout goes on without anyone watching: v2 serves and is current.
    let answer = tests::eventually("v2 to answer", Duration::from_secs(20), async || {
        let answer = get(http, "gone.paz.localhost");
        (answer.1 == "v2\n").then_some(answer)
    })
    .await;
    assert_eq!(answer, (200, "v2\n".to_string()));
    let name = store::AppName::new("gone").unwrap();
    tests::eventually(
        "the release to finish",
        Duration::from_secs(10),
        async || {
            let current = paz
                .store
                .get(&paz.store.keys().current(&name))
                .await
                .unwrap()
                .unwrap()
                .value;
            (current == 2).then_some(())
        },
    )
    .await;
    assert!(paz
        .store
        .get(&paz.store.keys().unit("gone-v1-web-1.service").unwrap())
        .await
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_that_keeps_crashing_is_rejected_without_waiting_for_the_timeout() {
    // The default deploy timeout (60 s): the crashes end the deploy, not it.
    let mut paz = paz_up("crash-loop").await;
    let http = paz.running.http_port;
    let v1 = web_app(&paz, "steady");
    let pushed = paz.push(v1.path(), "crashy");
    assert!(pushed.status.success(), "{}", text(&pushed));

    let base = tests::BUSYBOX_IMAGE;
    let crashing = paz.tree(&[(
        "Dockerfile",
        &format!(
            "FROM {base}\nCMD [\"sh\", \"-c\", \"echo cannot reach the database >&2; exit 3\"]\n"
        ),
    )]);
    let pushed = paz.force_push(crashing.path(), "crashy");
    let said = text(&pushed);
    assert!(!pushed.status.success(), "{said}");
    assert!(
        said.contains("crashy-v2-web-1 keeps crashing: it exited 2 times")
            && said.contains("exit code 3")
            && !said.contains("did not pass its health check"),
        "{said}"
    );
    assert_eq!(
        get(http, "crashy.paz.localhost"),
        (200, "steady\n".to_string())
    );
    let name = store::AppName::new("crashy").unwrap();
    assert_eq!(
        paz.release(&name, 2).await.status,
        store::records::ReleaseStatus::Failed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_event_whose_server_died_is_deployed_by_the_next_look_and_a_stale_one_never() {
    use store::records::{ImageEvent, ImageSource, ReleaseCause, ReleaseStatus};
    let mut paz = paz_up_with("follow-recovery", &["--deploy-timeout", "15"]).await;
    let v1 = web_app(&paz, "v1");
    let pushed = paz.push(v1.path(), "recover");
    assert!(pushed.status.success(), "{}", text(&pushed));
    let app = store::AppName::new("recover").unwrap();
    let v1 = paz.release(&app, 1).await;
    let registry = format!("127.0.0.1:{}/", paz.running.registry_port);
    let reference = v1.image.strip_prefix(&registry).unwrap_or_else(|| {
        panic!("{} is not in Paz's registry", v1.image);
    });
    let (repository, tag, digest) = match reference.split_once('@') {
        Some((repository, digest)) => (repository, None, Some(digest.to_string())),
        None => {
            let (repository, tag) = reference.rsplit_once(':').unwrap();
            (repository, Some(tag.to_string()), None)
        }
    };
    // The events are a CI token's, which may deploy the app.
    let token = admin_ssh(
        &paz,
        &[
            "tokens:create",
            "ci",
            "--role",
            "deployer",
            "--apps",
            "recover",
        ],
    );
    assert!(token.status.success(), "{}", text(&token));
    let keys = paz.store.keys().clone();
    // A server publishes an event for the app and claims it, then dies
    // before deploying it: its claim is on a lease, which ends with it.
    let died_after_claiming = async |paz: &Paz, suffix: &str| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let id = format!("{:020}-{suffix}", now.as_nanos());
        let event = ImageEvent {
            repository: repository.to_string(),
            tag: tag.clone(),
            digest: digest.clone(),
            media_type: None,
            app: Some(app.clone()),
            by: "ci".into(),
            source: ImageSource::Push,
            at: now.as_secs(),
        };
        let lease = paz
            .store
            .grant_lease(Duration::from_secs(10))
            .await
            .unwrap();
        paz.store
            .transaction()
            .put_on_lease(
                &keys.image_claim(&id).unwrap(),
                &"a server that died".to_string(),
                &lease,
            )
            .put(&keys.image_event(&id).unwrap(), &event)
            .commit()
            .await
            .unwrap();
        (id, lease)
    };
    let claim_of = async |paz: &Paz, id: &str| {
        paz.store
            .get(&keys.image_claim(id).unwrap())
            .await
            .unwrap()
            .map(|claim| claim.value)
    };

    let (dead, lease) = died_after_claiming(&paz, "dead01").await;
    // Give a wrong deploy the time it would take to show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        paz.releases(&app).await,
        1,
        "a claimed event is its claimer's"
    );
    lease.revoke().await.unwrap();
    let deployed = tests::eventually(
        "the dead server's event to be deployed by the next look",
        Duration::from_secs(30),
        async || {
            let found = paz.store.get(&keys.release(&app, 2)).await.unwrap()?;
            (found.value.status == ReleaseStatus::Active).then_some(found.value)
        },
    )
    .await;
    assert_eq!(deployed.cause, ReleaseCause::Image);
    assert_eq!(deployed.by, "ci");
    assert_eq!(deployed.image, v1.image);
    // The deploy has ended; its claim stays, off its lease (a lease would
    // take it with the server that holds it).
    let claim_key = keys.image_claim(&dead).unwrap();
    tests::eventually(
        "the deployed event's claim to be kept off its lease",
        Duration::from_secs(10),
        async || {
            let claim = paz.store.get(&claim_key).await.unwrap()?;
            let lease = paz.store.lease_of(&claim_key).await.unwrap();
            (lease.is_none() && claim.value != "a server that died").then_some(())
        },
    )
    .await;

    // Another such event, then a push: when the event is found, the app
    // has a newer release, and the event must not take it back.
    let (stale, lease) = died_after_claiming(&paz, "old001").await;
    let v3 = web_app(&paz, "v3");
    let pushed = paz.force_push(v3.path(), "recover");
    assert!(pushed.status.success(), "{}", text(&pushed));
    assert_eq!(paz.releases(&app).await, 3);
    lease.revoke().await.unwrap();
    let settled = tests::eventually(
        "the stale event to be looked at",
        Duration::from_secs(15),
        async || claim_of(&paz, &stale).await,
    )
    .await;
    assert!(
        settled.ends_with("older than the newest release of each app that follows it"),
        "{settled}"
    );
    // Give a wrong deploy the time it would take to show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        paz.releases(&app).await,
        3,
        "the stale event deployed nothing"
    );
    assert_eq!(
        get(paz.running.http_port, "recover.paz.localhost"),
        (200, "v3\n".to_string())
    );

    // Every event has been dealt with, the build's own pushes included, so
    // that the looks for unclaimed events pass them all by.
    let events = paz.store.list(&keys.image_events()).await.unwrap();
    let claims = paz.store.list(&keys.image_claims()).await.unwrap();
    assert!(events.entries.len() >= 4, "{:?}", events.entries.len());
    assert_eq!(events.entries.len(), claims.entries.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_are_named_after_the_advertised_registry_address() {
    // `localhost` reaches the same registry as 127.0.0.1, under another name.
    let mut paz = paz_up_with("registry-advertise", &["--registry-advertise", "localhost"]).await;
    let advertised = format!("localhost:{}", paz.running.registry_port);
    assert!(
        paz.running
            .banner
            .iter()
            .any(|line| line.ends_with(&format!("docker login {advertised} -u TOKEN-NAME"))),
        "{:?}",
        paz.running.banner
    );
    let app = web_app(&paz, "named");
    let sha = paz.git(app.path(), &["rev-parse", "HEAD"]);
    paz.cleanup
        .track_image(&format!("{advertised}/advertised:{sha}"));
    let pushed = paz.push(app.path(), "advertised");
    assert!(pushed.status.success(), "{}", text(&pushed));
    let v1 = paz
        .release(&store::AppName::new("advertised").unwrap(), 1)
        .await;
    assert!(
        v1.image.starts_with(&format!("{advertised}/advertised")),
        "{}",
        v1.image
    );
    assert_eq!(
        get(paz.running.http_port, "advertised.paz.localhost"),
        (200, "named\n".to_string())
    );

    // A bad address stops paz up before it starts anything.
    let output = common::paz()
        .args(["up", "--registry-advertise", "http://registry.example.com"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains(
            "--registry-advertise `http://registry.example.com` is invalid: use HOST or HOST:PORT"
        ),
        "{}",
        text(&output)
    );
}

/// `ssh paz@… ARGS` as the admin; the output, whether it succeeded.
fn admin_ssh(paz: &Paz, args: &[&str]) -> Output {
    paz.admin.ssh("paz@127.0.0.1", paz.running.ssh_port, args)
}

/// The text of `unit` as submitted.
async fn unit_text(paz: &Paz, unit: &str) -> String {
    paz.store
        .get(&paz.store.keys().unit(unit).unwrap())
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no unit {unit}"))
        .value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_listens_on_its_images_exposed_port_unless_ports_set_says_otherwise() {
    let mut paz = paz_up_with("image-port", &["--deploy-timeout", "8"]).await;
    let http = paz.running.http_port;
    let base = tests::BUSYBOX_IMAGE;

    // EXPOSE 8080 and a server that ignores $PORT, as off-the-shelf images do.
    let exposed = paz.tree(&[
        (
            "Dockerfile",
            &format!(
                "FROM {base}\nCOPY index.html /www/index.html\nEXPOSE 8080\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
            ),
        ),
        ("index.html", "on 8080\n"),
    ]);
    let pushed = paz.push(exposed.path(), "exposed");
    assert!(pushed.status.success(), "{}", text(&pushed));
    assert_eq!(
        get(http, "exposed.paz.localhost"),
        (200, "on 8080\n".to_string())
    );
    let app = store::AppName::new("exposed").unwrap();
    assert_eq!(paz.release(&app, 1).await.exposed_ports, vec![8080]);
    // Published on the agent's advertised address only: not around the proxy.
    let published = Command::new("docker")
        .args(["port", "exposed-v1-web-1", "8080"])
        .output()
        .unwrap();
    let published = String::from_utf8_lossy(&published.stdout).to_string();
    assert!(
        published.starts_with("127.0.0.1:") && !published.contains("0.0.0.0"),
        "{published}"
    );
    assert!(unit_text(&paz, "exposed-v1-web-1.service")
        .await
        .contains("PORT=8080"));

    // No EXPOSE: 5000, where the app listens on $PORT.
    let plain = web_app(&paz, "on $PORT");
    let pushed = paz.push(plain.path(), "plain");
    assert!(pushed.status.success(), "{}", text(&pushed));
    let plain_app = store::AppName::new("plain").unwrap();
    assert!(paz.release(&plain_app, 1).await.exposed_ports.is_empty());
    assert!(unit_text(&paz, "plain-v1-web-1.service")
        .await
        .contains("PORT=5000"));

    // Bad ports change nothing.
    for bad in ["0", "65536", "http", "-1"] {
        let output = admin_ssh(&paz, &["ports:set", "plain", bad]);
        assert!(!output.status.success(), "ports:set {bad} must fail");
        assert!(text(&output).contains("is not a port"), "{}", text(&output));
    }
    assert_eq!(paz.releases(&plain_app).await, 1);

    // ports:set: a new release on the new port, rolled out under load.
    let load = common::Load::start(http, "plain.paz.localhost");
    let output = admin_ssh(&paz, &["ports:set", "plain", "7000"]);
    assert!(output.status.success(), "{}", text(&output));
    let seen = load.finish();
    common::assert_all_answered(&seen);
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("plain listens on port 7000"),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert_eq!(paz.releases(&plain_app).await, 2);
    assert!(unit_text(&paz, "plain-v2-web-1.service")
        .await
        .contains("PORT=7000"));
    assert_eq!(get(http, "plain.paz.localhost").0, 200);

    // An image that exposes one port and listens on another: the failure
    // says what was checked and how to fix it.
    let wrong = paz.tree(&[(
        "Dockerfile",
        &format!("FROM {base}\nEXPOSE 8080\nCMD [\"httpd\", \"-f\", \"-p\", \"9000\"]\n"),
    )]);
    let pushed = paz.force_push(wrong.path(), "exposed");
    let said = text(&pushed);
    assert!(!pushed.status.success(), "{said}");
    assert!(
        said.contains("it checked GET / on port 8080 (the image's first EXPOSE)")
            && said.contains("the image exposes 8080")
            && said.contains("ports:set exposed PORT"),
        "{said}"
    );
    assert_eq!(
        get(http, "exposed.paz.localhost"),
        (200, "on 8080\n".to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_of_another_install_named_like_a_unit_is_never_announced_or_routed() {
    let mut paz = paz_up_with("foreign-container", &["--deploy-timeout", "15"]).await;
    let http = paz.running.http_port;
    // Left by another paz up on this engine: the same name, Paz's labels, another machine.
    let foreign = Command::new("docker")
        .args([
            "run",
            "-d",
            "--name",
            "fgn-v1-web-1",
            "--label",
            &paz.cleanup.label_arg(),
            "--label",
            "paz.unit=fgn-v1-web-1.service",
            "--label",
            "paz.machine=0123456789abcdef0123456789abcdef",
            "-e",
            "PORT=5000",
            "-p",
            "127.0.0.1::5000",
            tests::BUSYBOX_IMAGE,
            "sh",
            "-c",
            "mkdir -p /www && echo foreign > /www/index.html && exec httpd -f -p 5000 -h /www",
        ])
        .output()
        .unwrap();
    assert!(foreign.status.success(), "{}", text(&foreign));
    let app = web_app(&paz, "own");
    let watch = paz.store.clone();
    let services = watch.keys().services();
    let pushed = paz.push(app.path(), "fgn");
    let said = text(&pushed);
    let _ = Command::new("docker")
        .args(["rm", "-f", "fgn-v1-web-1"])
        .output();
    assert!(!pushed.status.success(), "{said}");
    assert!(
        said.contains("a container named fgn-v1-web-1 that this machine did not start")
            && said.contains("docker rm -f fgn-v1-web-1"),
        "{said}"
    );
    assert!(!said.contains("healthy"), "{said}");
    let announced = watch.list(&services).await.unwrap();
    assert!(
        announced.entries.iter().all(|e| !e.key.contains("/fgn/")),
        "the foreign container was announced: {:?}",
        announced.entries
    );
    let (status, body) = get(http, "fgn.paz.localhost");
    assert_ne!(
        body, "foreign\n",
        "the proxy routed to the foreign container"
    );
    assert_ne!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_of_a_tag_records_its_digest_and_a_rollback_runs_the_original_bits() {
    let mut paz = paz_up_with("pinned-release", &["--deploy-timeout", "15"]).await;
    let http = paz.running.http_port;
    let registry = format!("127.0.0.1:{}", paz.running.registry_port);
    let created = admin_ssh(&paz, &["apps:create", "pin"]);
    assert!(created.status.success(), "{}", text(&created));
    let token: serde_json::Value = serde_json::from_slice(
        &admin_ssh(
            &paz,
            &[
                "tokens:create",
                "ci",
                "--role",
                "deployer",
                "--apps",
                "pin",
                "--json",
            ],
        )
        .stdout,
    )
    .unwrap();
    let secret = token["secret"].as_str().unwrap().to_string();
    // Its webhook signing secret is shown once and stored nowhere in etcd.
    let signing = token["signing_secret"].as_str().unwrap().to_string();
    assert!(signing.starts_with("whsec_"), "{token}");
    let everything = paz
        .store
        .list(&paz.store.keys().everything())
        .await
        .unwrap();
    assert!(everything
        .entries
        .iter()
        .all(|e| !String::from_utf8_lossy(&e.value).contains(&signing)));
    let docker_config = tests::temp_dir();
    let docker =
        |args: &[&str], stdin: Option<&str>| docker_with(docker_config.path(), args, stdin);
    docker(
        &["login", &registry, "-u", "ci", "--password-stdin"],
        Some(&secret),
    );
    let tag = format!("{registry}/pin:ci-1");
    paz.cleanup.track_image(&tag);
    let build_and_push = |say: &str| {
        let context = web_app(&paz, say);
        build_image(&paz, docker_config.path(), &tag, context.path());
        docker(&["push", &tag], None);
    };

    // deploy APP REPO:TAG records the digest the tag names, and the tag.
    build_and_push("first bits");
    let deployed = admin_ssh(&paz, &["deploy", "pin", &tag]);
    assert!(deployed.status.success(), "{}", text(&deployed));
    let app = store::AppName::new("pin").unwrap();
    let v1 = paz.release(&app, 1).await;
    assert!(
        v1.image.starts_with(&format!("{registry}/pin@sha256:")),
        "{}",
        v1.image
    );
    assert_eq!(v1.source.as_deref(), Some(tag.as_str()));
    assert_eq!(
        get(http, "pin.paz.localhost"),
        (200, "first bits\n".to_string())
    );
    let listed = String::from_utf8_lossy(&admin_ssh(&paz, &["releases", "pin"]).stdout).to_string();
    assert!(
        listed.contains(&format!("{} (from {tag})", v1.image)),
        "{listed}"
    );
    // A tag Paz's registry lacks is refused, and records nothing.
    let missing = admin_ssh(&paz, &["deploy", "pin", &format!("{registry}/pin:nope")]);
    assert!(!missing.status.success());
    assert!(
        text(&missing).contains("is not in Paz's registry"),
        "{}",
        text(&missing)
    );
    assert_eq!(paz.releases(&app).await, 1);

    // The tag moves; POST /hooks/deploy with it pins the new digest.
    build_and_push("second bits");
    let hook = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .args(["-H", &format!("Authorization: Bearer {secret}")])
        .args(["-H", "Content-Type: application/json"])
        .args([
            "-d",
            &serde_json::json!({"app": "pin", "image": tag}).to_string(),
        ])
        .arg(format!("http://{registry}/hooks/deploy"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&hook.stdout), "202");
    common::answers(http, "pin.paz.localhost", "second bits");
    let v2 = paz.release(&app, 2).await;
    assert!(
        v2.image.starts_with(&format!("{registry}/pin@sha256:")) && v2.image != v1.image,
        "{} after {}",
        v2.image,
        v1.image
    );
    assert_eq!(v2.source.as_deref(), Some(tag.as_str()));

    // Rolling back to v1 runs v1's bits, wherever the tag points now.
    let rolled = admin_ssh(&paz, &["rollback", "pin", "1"]);
    assert!(rolled.status.success(), "{}", text(&rolled));
    assert_eq!(paz.release(&app, 3).await.image, v1.image);
    assert_eq!(
        get(http, "pin.paz.localhost"),
        (200, "first bits\n".to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_check_that_redirects_fails_where_following_it_would_pass() {
    let mut paz = paz_up_with("health-redirect", &["--deploy-timeout", "6"]).await;
    let http = paz.running.http_port;
    let created = admin_ssh(&paz, &["apps:create", "hop"]);
    assert!(created.status.success(), "{}", text(&created));
    // busybox httpd answers `GET /sub` (a directory) with a redirect to `/sub/`,
    // which answers 200: a check that followed redirects would pass.
    let base = tests::BUSYBOX_IMAGE;
    let app = paz.tree(&[
        (
            "Dockerfile",
            &format!("FROM {base}\nCOPY www /www\nCMD [\"sh\", \"-c\", \"exec httpd -f -p $PORT -h /www\"]\n"),
        ),
        ("www/index.html", "top\n"),
        ("www/sub/index.html", "sub\n"),
    ]);
    let set = admin_ssh(&paz, &["health:set", "hop", "path=/sub"]);
    assert!(set.status.success(), "{}", text(&set));
    let pushed = paz.push(app.path(), "hop");
    let said = text(&pushed);
    assert!(!pushed.status.success(), "{said}");
    assert!(
        said.contains("hop-v1-web-1 did not pass its health check within 6 s"),
        "{said}"
    );
    assert_ne!(get(http, "hop.paz.localhost").0, 200);

    // The same app with a check that answers 200 itself is released.
    let set = admin_ssh(&paz, &["health:set", "hop", "path=/sub/"]);
    assert!(set.status.success(), "{}", text(&set));
    let pushed = paz.force_push(app.path(), "hop");
    assert!(pushed.status.success(), "{}", text(&pushed));
    assert_eq!(get(http, "hop.paz.localhost"), (200, "top\n".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployer_of_one_app_cannot_deploy_follow_or_build_on_another_apps_images() {
    let mut paz = paz_up_with("cross-app-images", &["--deploy-timeout", "6"]).await;
    let registry = format!("127.0.0.1:{}", paz.running.registry_port);
    for app in ["one", "two"] {
        let created = admin_ssh(&paz, &["apps:create", app]);
        assert!(created.status.success(), "{}", text(&created));
    }
    let two_app = web_app(&paz, "two's code");
    let pushed = paz.push(two_app.path(), "two");
    assert!(pushed.status.success(), "{}", text(&pushed));
    let two = store::AppName::new("two").unwrap();
    let one = store::AppName::new("one").unwrap();
    let two_image = paz.release(&two, 1).await.image;
    let two_tag = format!(
        "{registry}/two:{}",
        paz.git(two_app.path(), &["rev-parse", "HEAD"])
    );

    // A deployer key and a deployer token of `one` only.
    let dev = SshIdentity::new("ed25519");
    let added = paz.admin.ssh_with_input(
        "paz@127.0.0.1",
        paz.running.ssh_port,
        &["ssh-keys:add", "dev", "--apps", "one"],
        dev.public_key.as_bytes(),
    );
    assert!(added.status.success(), "{}", text(&added));
    let token: serde_json::Value = serde_json::from_slice(
        &admin_ssh(
            &paz,
            &[
                "tokens:create",
                "ci-one",
                "--role",
                "deployer",
                "--apps",
                "one",
                "--json",
            ],
        )
        .stdout,
    )
    .unwrap();
    let secret = token["secret"].as_str().unwrap().to_string();
    let dev_ssh = |args: &[&str]| dev.ssh("paz@127.0.0.1", paz.running.ssh_port, args);

    // deploy and deploy:follow of two's images are refused, and change nothing.
    for args in [
        vec!["deploy", "one", two_image.as_str()],
        vec!["deploy", "one", two_tag.as_str()],
        vec!["deploy:follow", "one", "two"],
        vec!["deploy:follow", "one", &format!("{registry}/two")],
    ] {
        let output = dev_ssh(&args);
        assert!(!output.status.success(), "{args:?}");
        assert!(
            text(&output).contains("`dev` may not use the images of app `two`"),
            "{args:?}: {}",
            text(&output)
        );
    }
    assert_eq!(paz.releases(&one).await, 0);
    let record = paz
        .store
        .get(&paz.store.keys().app(&one))
        .await
        .unwrap()
        .unwrap()
        .value;
    assert_eq!(record.deploy.image_repo, None);

    // /hooks/deploy with one's token and two's image is refused (403).
    let hook = |path: &str, body: serde_json::Value| {
        let output = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
            .args([
                "-H",
                "Content-Type: application/json",
                "-d",
                &body.to_string(),
            ])
            .arg(format!("http://{registry}{path}"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).to_string()
    };
    let status = hook(
        &format!("/hooks/deploy?token={secret}"),
        serde_json::json!({"app": "one", "image": two_tag}),
    );
    assert_eq!(status, "403");
    // A repository both follow: one's token fires the Docker Hub hook.
    for (app, repository) in [("two", "acme/web"), ("one", "acme/web")] {
        let followed = admin_ssh(&paz, &["deploy:follow", app, repository]);
        assert!(followed.status.success(), "{}", text(&followed));
    }
    let payload = serde_json::json!({
        "push_data": {"tag": "chosen"},
        "repository": {"repo_name": "acme/web"}
    });
    assert_eq!(
        hook(&format!("/hooks/dockerhub?token={secret}"), payload),
        "202"
    );
    // Give a wrong deploy the time it would take to show: two keeps its one release.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(paz.releases(&two).await, 1, "one's token released two");
    let releases = paz
        .store
        .list(&paz.store.keys().releases(&one))
        .await
        .unwrap();
    assert!(
        releases
            .entries
            .iter()
            .all(|r| !r.value.image.contains("/two")),
        "one got two's image: {:?}",
        releases.entries
    );

    // A Dockerfile of one that builds on two's image is refused.
    let sneaky = paz.tree(&[(
        "Dockerfile",
        &format!("ARG BASE={two_tag}\nFROM $BASE\nCMD [\"sleep\", \"1\"]\n"),
    )]);
    let pushed = dev
        .git(sneaky.path())
        .args(["push", &paz.url("one"), "main"])
        .output()
        .unwrap();
    let said = text(&pushed);
    assert!(!pushed.status.success(), "{said}");
    assert!(
        said.contains(&format!(
            "the Dockerfile builds on {two_tag}, an image of app `two`, which `dev` may not use"
        )),
        "{said}"
    );
    // What one's deployer may do: build on a public image.
    let own = web_app(&paz, "one's code");
    let pushed = dev
        .git(own.path())
        .args(["push", &paz.url("one"), "main"])
        .output()
        .unwrap();
    assert!(pushed.status.success(), "{}", text(&pushed));
}

/// What a command printed, stdout then stderr.
fn both(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `docker inspect` of `container` with a Go template.
fn inspect(container: &str, format: &str) -> String {
    let output = Command::new("docker")
        .args(["inspect", container, "--format", format])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_limits_reach_the_containers_and_an_oom_kill_says_so() {
    let mut paz = paz_up("limits").await;
    let http = paz.running.http_port;
    let base = tests::BUSYBOX_IMAGE;
    // A worker that asks for 200 MiB after a while, a hog at once.
    let tree = paz.tree(&[
        (
            "Dockerfile",
            &format!("FROM {base}\nCOPY index.html /www/index.html\nCMD [\"sh\", \"-c\", \"exec httpd -f -p $PORT -h /www\"]\n"),
        ),
        ("index.html", "limited\n"),
        (
            "Procfile",
            "worker: sleep 8; exec dd if=/dev/zero of=/dev/null bs=200M count=1\nhog: exec dd if=/dev/zero of=/dev/null bs=200M count=1\n",
        ),
    ]);
    let pushed = paz.push(tree.path(), "limited");
    assert!(pushed.status.success(), "{}", text(&pushed));

    // Bad input is refused with the field named, and changes nothing.
    for (args, says) in [
        (
            &["memory=lots"][..],
            "memory `lots` is not a size such as 512m",
        ),
        (&["cpus=many"][..], "cpus `many` is not a number of CPUs"),
        (
            &["--process", "clock", "memory=64m"][..],
            "process type `clock` is not in v1's Procfile",
        ),
    ] {
        let mut line = vec!["resource:limit", "limited"];
        line.extend(args);
        let refused = admin_ssh(&paz, &line);
        assert!(!refused.status.success(), "{args:?}");
        assert!(
            both(&refused).contains(says),
            "{args:?}: {}",
            both(&refused)
        );
    }
    let name = store::AppName::new("limited").unwrap();
    assert_eq!(paz.releases(&name).await, 1, "no release was made");

    // A limit is a new release whose containers carry it, swap the same.
    let limited = admin_ssh(&paz, &["resource:limit", "limited", "memory=64m"]);
    let said = both(&limited);
    assert!(
        limited.status.success() && said.contains("Released v2"),
        "{said}"
    );
    assert!(
        unit_text(&paz, "limited-v2-web-1.service")
            .await
            .contains(" -m 64m --memory-swap 64m "),
        "the unit says it"
    );
    assert_eq!(
        inspect(
            "limited-v2-web-1",
            "{{.HostConfig.Memory}} {{.HostConfig.MemorySwap}}"
        ),
        format!("{0} {0}", 64 << 20)
    );
    let limited = admin_ssh(
        &paz,
        &["resource:limit", "limited", "--process", "web", "cpus=0.5"],
    );
    assert!(limited.status.success(), "{}", both(&limited));
    assert_eq!(
        inspect(
            "limited-v3-web-1",
            "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}}"
        ),
        format!("{} 500000000", 64 << 20),
        "web's own CPUs over every process's memory"
    );
    let report = both(&admin_ssh(&paz, &["resource:report", "limited"]));
    let rows: Vec<Vec<&str>> = report
        .lines()
        .map(|line| line.split_whitespace().collect())
        .collect();
    for row in [
        ["web", "64m", "0.5"],
        ["worker", "64m", "-"],
        ["hog", "64m", "-"],
    ] {
        assert!(rows.contains(&row.to_vec()), "{row:?}: {report}");
    }
    assert_eq!(
        get(http, "limited.paz.localhost"),
        (200, "limited\n".to_string())
    );

    // A worker killed for its memory: `ps` and its log say so.
    let scaled = admin_ssh(&paz, &["ps:scale", "limited", "worker=1"]);
    assert!(scaled.status.success(), "{}", both(&scaled));
    let ps = tests::eventually_blocking(
        "ps to tell of the OOM kill",
        Duration::from_secs(60),
        || {
            let ps = both(&admin_ssh(&paz, &["ps", "limited"]));
            ps.lines()
                .any(|line| {
                    line.starts_with("limited-v3-worker-1")
                        && line.contains(
                            "killed for using more memory than its limit (OOM), exit code 137",
                        )
                })
                .then_some(ps)
        },
    );
    assert!(ps.contains("=== worker (1)"), "{ps}");
    let logs = both(&admin_ssh(
        &paz,
        &["logs", "limited", "--process", "worker"],
    ));
    assert!(
        logs.contains("was killed for using more memory than its limit (OOM), exit code 137"),
        "{logs}"
    );

    // One killed at once fails its deploy, which says why.
    let scaled = admin_ssh(&paz, &["ps:scale", "limited", "hog=1"]);
    let said = both(&scaled);
    assert!(!scaled.status.success(), "{said}");
    assert!(
        said.contains("limited-v3-hog-1 keeps crashing")
            && said.contains("killed for using more memory than its limit (OOM)"),
        "{said}"
    );
    assert_eq!(
        get(http, "limited.paz.localhost"),
        (200, "limited\n".to_string())
    );
}

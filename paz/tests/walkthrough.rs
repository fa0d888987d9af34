//! The README's walkthrough, end to end, as a user does it: start the `paz`
//! binary with a fresh data dir, then use only `ssh`, `git`, `docker` and HTTP
//! on the sample apps in `examples/`.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use common::{answers, example, get, said, start, Load, Running};
use tests::{DockerCleanup, SshIdentity};

/// A user of one `paz up`: the admin key and the paz up's ports.
struct User {
    admin: SshIdentity,
    running: Running,
    /// Removes what the test made: containers, and each pushed image.
    cleanup: std::cell::RefCell<DockerCleanup>,
}

impl User {
    fn ssh(&self, args: &[&str]) -> Output {
        self.admin.ssh("paz@127.0.0.1", self.running.ssh_port, args)
    }

    /// Runs a verb that must succeed; returns what it printed, both streams.
    fn verb(&self, args: &[&str]) -> String {
        said(&self.verb_output(args))
    }

    fn verb_output(&self, args: &[&str]) -> Output {
        let output = self.ssh(args);
        assert!(output.status.success(), "{args:?}: {}", said(&output));
        output
    }

    /// What a verb that must succeed printed on stdout.
    fn verb_stdout(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.verb_output(args).stdout).to_string()
    }

    fn push(&self, dir: &Path, app: &str) -> Output {
        let sha = self
            .admin
            .git(dir)
            .args(["rev-parse", "HEAD"])
            .output()
            .unwrap();
        self.cleanup.borrow_mut().track_image(&format!(
            "127.0.0.1:{}/{app}:{}",
            self.running.registry_port,
            String::from_utf8_lossy(&sha.stdout).trim()
        ));
        let url = format!("ssh://paz@127.0.0.1:{}/{app}", self.running.ssh_port);
        self.admin
            .git(dir)
            .args(["push", "--force", &url, "main"])
            .output()
            .unwrap()
    }

    fn git(&self, dir: &Path, args: &[&str]) {
        let output = self.admin.git(dir).args(args).output().unwrap();
        assert!(output.status.success(), "git {args:?}: {}", said(&output));
    }

    /// Pushes the hello sample with one Dockerfile line changed to demo, which
    /// must reject it saying each of `reasons`.
    fn rejected(&self, (from, to): (&str, &str), message: &str, reasons: &[&str]) {
        let app = example("hello");
        edit(&app.path().join("Dockerfile"), from, to);
        edit(
            &app.path().join("www/index.html"),
            "version 1",
            "a rejected version",
        );
        self.commit(app.path(), message);
        let pushed = self.push(app.path(), "demo");
        let text = said(&pushed);
        assert!(!pushed.status.success(), "{text}");
        assert!(
            reasons.iter().all(|reason| text.contains(reason))
                && text.contains("pre-receive hook declined"),
            "{text}"
        );
    }

    /// Commits everything in `dir` on main (a new repository the first time).
    fn commit(&self, dir: &Path, message: &str) {
        if !dir.join(".git").exists() {
            self.git(dir, &["init", "-q", "-b", "main"]);
        }
        self.git(dir, &["add", "-A"]);
        self.git(dir, &["commit", "-q", "-m", message]);
    }
}

/// Replaces `from` with `to` in the file `path` (which must contain it).
fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} has no {from:?}", path.display());
    std::fs::write(path, text.replace(from, to)).unwrap();
}

fn paz_up(admin: &SshIdentity, data: &Path) -> Running {
    let key = admin.private_key.with_extension("pub");
    start(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--admin-key",
            key.to_str().unwrap(),
            "--buildpack-image",
            &format!("static={}", tests::BUSYBOX_IMAGE),
            "--deploy-timeout",
            "15",
        ],
        &[],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walkthrough_works_from_a_fresh_data_dir() {
    let docker = tests::docker().await;
    tests::busybox_image(&docker).await;
    let admin = SshIdentity::new("ed25519");
    let data = tests::temp_dir();
    let mut cleanup = DockerCleanup::new("walkthrough");
    let machine = agent::machine_id(data.path()).unwrap();
    cleanup.track_label(&format!("paz.machine={machine}"));
    let mut user = User {
        running: paz_up(&admin, data.path()),
        admin,
        cleanup: std::cell::RefCell::new(cleanup),
    };
    let http = user.running.http_port;

    // The banner names the admin key in use and the next steps.
    let banner = user.running.banner.join("\n");
    assert!(
        banner.contains(&format!("admin     {} (admin)", user.admin.fingerprint())),
        "{banner}"
    );
    assert!(
        banner.contains(&format!(
            "git remote add paz ssh://paz@HOST:{}/myapp",
            user.running.ssh_port
        )) && banner.contains("git push paz main"),
        "{banner}"
    );

    // The first push of the Dockerfile sample: build lines as `remote:` lines,
    // the URL at the end, and the app answers through the proxy.
    user.verb(&["apps:create", "demo"]);
    let app = example("hello");
    user.commit(app.path(), "hello, version 1");
    let pushed = user.push(app.path(), "demo");
    let text = said(&pushed);
    assert!(pushed.status.success(), "{text}");
    assert!(
        text.contains("remote: -----> Building demo")
            && text
                .lines()
                .any(|line| line.starts_with("remote: ") && line.contains("Step 1/"))
            && text.contains("remote: -----> Recorded release v1"),
        "{text}"
    );
    let last = text
        .lines()
        .rfind(|line| line.starts_with("remote: "))
        .unwrap();
    assert!(
        last.contains("Released v1: http://demo.paz.localhost"),
        "the push ends with the URL: {text}"
    );
    let body = answers(http, "demo.paz.localhost", "Hello from Paz");
    assert!(body.contains("version 1"), "{body}");

    // Under about 200 requests a second: a visible change rolls out, then a
    // build that fails and an app that fails its health check are rejected,
    // and no request fails at any point.
    let load = Load::start(http, "demo.paz.localhost");
    edit(&app.path().join("www/index.html"), "version 1", "version 2");
    user.commit(app.path(), "version 2");
    let pushed = user.push(app.path(), "demo");
    let released = Instant::now();
    assert!(pushed.status.success(), "{}", said(&pushed));
    assert!(said(&pushed).contains("Released v2"), "{}", said(&pushed));

    user.rejected(
        (
            "COPY www /app/www",
            "RUN echo the tests are red >&2 && exit 3",
        ),
        "a build that fails",
        &["the tests are red", "returned a non-zero code: 3"],
    );
    user.rejected(
        (
            "CMD [\"sh\", \"/app/start.sh\"]",
            "CMD [\"sleep\", \"1000\"]",
        ),
        "an app that never listens",
        &["did not pass its health check within 15 s"],
    );
    std::thread::sleep(Duration::from_secs(1));
    let seen = load.finish();
    common::assert_all_answered(&seen);
    // Old until the new instance passed its check, both while one replaces
    // the other, and only new once the push said Released.
    let first_new = seen
        .iter()
        .position(|(_, _, body)| body.contains("version 2"))
        .expect("version 2 answered");
    assert!(
        seen[..first_new]
            .iter()
            .all(|(_, _, body)| body.contains("version 1")),
        "old answers, then new"
    );
    assert!(
        seen.iter()
            .all(|(_, _, body)| !body.contains("a rejected version")),
        "the rejected pushes never answered"
    );
    let old_after_release = seen
        .iter()
        .filter(|(asked, _, body)| *asked > released && !body.contains("version 2"))
        .count();
    assert_eq!(
        old_after_release, 0,
        "once released, only the new version answers"
    );
    assert!(seen.len() > 1000, "the client kept asking: {}", seen.len());

    // ps:scale, rollback and config:set, each visible from the outside.
    user.verb(&["ps:scale", "demo", "web=3"]);
    let listed: serde_json::Value =
        serde_json::from_str(&user.verb_stdout(&["ps", "demo", "--json"])).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(listed.iter().all(|row| row["state"]["active"] == "active"));
    let said_back = user.verb(&["rollback", "demo"]);
    assert!(said_back.contains("Released v4"), "{said_back}");
    answers(http, "demo.paz.localhost", "version 1");
    let ps = user.verb_stdout(&["ps", "demo"]);
    assert_eq!(ps.lines().next(), Some("=== web (3)"), "{ps}");
    assert_eq!(
        ps.lines().filter(|l| !l.starts_with("===")).count(),
        3,
        "{ps}"
    );
    let set = user.verb(&["config:set", "demo", "GREETING=hi"]);
    assert!(set.contains("Released v5"), "{set}");
    answers(http, "demo.paz.localhost", "hi from Paz");

    // The static sample, built by the static buildpack.
    user.verb(&["apps:create", "site"]);
    let site = example("static-site");
    user.commit(site.path(), "a static site");
    let pushed = user.push(site.path(), "site");
    assert!(pushed.status.success(), "{}", said(&pushed));
    assert!(
        said(&pushed).contains("with the static buildpack"),
        "{}",
        said(&pushed)
    );
    answers(http, "site.paz.localhost", "A static site on Paz");

    // Stop paz up, start it on the same data dir: both apps answer as they
    // were, with no new build.
    let builds_before = user.verb_stdout(&["builds", "demo"]);
    user.running.paz.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(user
        .running
        .paz
        .wait_timeout(Duration::from_secs(60))
        .unwrap()
        .success());
    user.running = paz_up(&user.admin, data.path());
    let http = user.running.http_port;
    answers(http, "demo.paz.localhost", "hi from Paz");
    answers(http, "site.paz.localhost", "A static site on Paz");
    assert_eq!(user.verb_stdout(&["builds", "demo"]), builds_before);
    assert!(
        user.verb_stdout(&["releases", "demo"]).starts_with("v5"),
        "no release either"
    );

    // apps:destroy: the app stops answering and its containers go.
    user.verb(&["apps:destroy", "demo", "--force"]);
    tests::eventually(
        "the destroyed app's host to answer 404",
        Duration::from_secs(10),
        async || (get(http, "demo.paz.localhost").0 == 404).then_some(()),
    )
    .await;
    tests::eventually(
        "demo's containers to go",
        Duration::from_secs(20),
        async || {
            let output = std::process::Command::new("docker")
                .args(["ps", "-a", "--format", "{{.Names}}"])
                .args(["--filter", &format!("label=paz.machine={machine}")])
                .output()
                .unwrap();
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .all(|name| !name.starts_with("demo-"))
                .then_some(())
        },
    )
    .await;
    answers(http, "site.paz.localhost", "A static site on Paz");
}

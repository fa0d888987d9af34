//! One-off containers (`run`, `run:detached`, `run:list`, `run:stop`) as a
//! user runs them: `paz up`, an app pushed with git, and OpenSSH's `ssh`
//! (in a real pty, driven by python3, for the TTY and its window changes).

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{push_dir, said, start, stderr, stdout, Running};
use tests::{DockerCleanup, SshIdentity};

struct Paz {
    app: &'static str,
    running: Running,
    admin: SshIdentity,
    _data: tempfile::TempDir,
    _cleanup: DockerCleanup,
}

impl Paz {
    fn ssh(&self, args: &[&str]) -> std::process::Output {
        self.admin.ssh("paz@127.0.0.1", self.running.ssh_port, args)
    }
}

/// `paz up` with `app` pushed: busybox, serving on $PORT (tests side by
/// side share the engine: each has an app of its own).
async fn paz_with_app(test: &str, app_name: &'static str) -> Paz {
    let docker = tests::docker().await;
    tests::busybox_image(&docker).await;
    let admin = SshIdentity::new("ed25519");
    let key = admin.private_key.with_extension("pub");
    let data = tests::temp_dir();
    let running = start(
        &[
            "--data-dir",
            data.path().to_str().unwrap(),
            "--admin-key",
            key.to_str().unwrap(),
        ],
        &[],
    );
    let mut cleanup = DockerCleanup::new(test);
    let machine = agent::machine_id(data.path()).unwrap();
    cleanup.track_label(&format!("paz.machine={machine}"));
    let app = tests::temp_dir();
    std::fs::write(
        app.path().join("Dockerfile"),
        format!(
            "FROM {}\nRUN mkdir /www && echo hi > /www/index.html\nCMD [\"sh\", \"-c\", \"exec httpd -f -p $PORT -h /www\"]\n",
            tests::BUSYBOX_IMAGE
        ),
    )
    .unwrap();
    let pushed = push_dir(
        &admin,
        app.path(),
        (running.ssh_port, running.registry_port),
        app_name,
        &mut cleanup,
    );
    assert!(pushed.status.success(), "{}", said(&pushed));
    Paz {
        app: app_name,
        running,
        admin,
        _data: data,
        _cleanup: cleanup,
    }
}

/// The names and states of the one-off containers of `app` on this engine.
fn one_off_containers(app: &str) -> String {
    let output = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("label=paz.app={app}"),
            "--filter",
            "label=paz.run",
            "--format",
            "{{.Names}} {{.State}}",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn until_no_one_off_is_left(app: &str) {
    tests::eventually_blocking(
        "the one-off's container to be removed",
        Duration::from_secs(30),
        || one_off_containers(app).is_empty().then_some(()),
    );
}

/// What a command wrote on stdout, as it wrote it.
fn out(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).to_string()
}

/// Runs `ssh -tt ARGS` in a pty of 30 rows × 100 columns; once `first`
/// is printed the pty becomes 40 × 120 and ssh is told (SIGWINCH). What
/// the pty showed, and ssh's exit code.
fn in_a_pty(ssh: Command, first: &str) -> (String, i32) {
    const DRIVER: &str = r#"
import fcntl, os, select, signal, struct, subprocess, sys, termios, time
first, argv = sys.argv[1].encode(), sys.argv[2:]
master, slave = os.openpty()
def size(rows, cols):
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
size(30, 100)
ssh = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave)
os.close(slave)
seen, resized, deadline = b"", False, time.time() + 60
while time.time() < deadline:
    ready, _, _ = select.select([master], [], [], 0.2)
    if ready:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        seen += chunk
        if not resized and first in seen:
            size(40, 120)
            ssh.send_signal(signal.SIGWINCH)
            resized = True
    elif ssh.poll() is not None:
        break
sys.stdout.write(seen.decode(errors="replace"))
sys.exit(ssh.wait())
"#;
    let mut driver = Command::new("python3");
    driver.args(["-c", DRIVER, first]);
    driver.arg(ssh.get_program());
    driver.args(ssh.get_args());
    for (name, value) in ssh.get_envs() {
        match value {
            Some(value) => driver.env(name, value),
            None => driver.env_remove(name),
        };
    }
    let output = driver
        .output()
        .expect("python3 runs (scripts/setup installs it)");
    (
        String::from_utf8_lossy(&output.stdout).to_string(),
        output.status.code().unwrap_or(-1),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_off_runs_attached_with_its_streams_apart_and_its_exit_code() {
    let paz = paz_with_app("run-attached", "runny").await;

    // Pipes: stdout and stderr apart, the exit code the command's.
    let ran = paz.ssh(&[
        "run",
        "runny",
        "sh",
        "-c",
        "'echo out; echo err >&2; exit 3'",
    ]);
    assert_eq!(ran.status.code(), Some(3), "{}", said(&ran));
    assert_eq!(out(&ran), "out\n");
    assert_eq!(stderr(&ran), "err\n");
    // The release's image and env, and its own DYNO.
    let ran = paz.ssh(&[
        "run",
        "runny",
        "sh",
        "-c",
        "'echo $DYNO; cat /www/index.html'",
    ]);
    assert!(ran.status.success(), "{}", said(&ran));
    let shown = out(&ran);
    assert!(
        shown.starts_with("run.") && shown.ends_with("\nhi\n"),
        "{shown}"
    );
    // Stdin, to its end: a script's input.
    let ran = paz.admin.ssh_with_input(
        "paz@127.0.0.1",
        paz.running.ssh_port,
        &["run", "runny", "wc", "-c"],
        b"hello world\n",
    );
    assert!(ran.status.success(), "{}", said(&ran));
    assert_eq!(stdout(&ran).trim(), "12");
    // Much input to a command that writes it all back: neither way waits
    // for the other.
    let input: Vec<u8> = (0..4 << 20).map(|i: u32| b'a' + (i % 26) as u8).collect();
    let ran = paz.admin.ssh_with_input(
        "paz@127.0.0.1",
        paz.running.ssh_port,
        &["run", "runny", "cat"],
        &input,
    );
    assert!(ran.status.success(), "{}", stderr(&ran));
    assert!(
        ran.stdout == input,
        "cat gave back {} of {} bytes",
        ran.stdout.len(),
        input.len()
    );
    // An attached run's output is its caller's, never the app's log.
    let ran = paz.ssh(&["run", "runny", "echo", "console-only-output"]);
    assert!(ran.status.success(), "{}", said(&ran));
    let logs = stdout(&paz.ssh(&["logs", "runny", "-n", "1000"]));
    assert!(!logs.contains("console-only-output"), "{logs}");
    until_no_one_off_is_left(paz.app);

    // A TTY, whose size follows the client's window.
    let ssh = paz.admin.ssh_to(
        "paz@127.0.0.1",
        paz.running.ssh_port,
        &[
            "-tt",
            "run",
            "runny",
            "sh",
            "-c",
            // A moment first: a TTY's size is set just after it starts.
            "'sleep 1; tty; stty size; sleep 2; stty size'",
        ],
    );
    let (shown, code) = in_a_pty(ssh, "30 100");
    assert_eq!(code, 0, "{shown}");
    assert!(shown.contains("/dev/pts/"), "a TTY inside: {shown}");
    assert!(
        shown.contains("30 100") && shown.contains("40 120"),
        "the window size, then its change: {shown}"
    );
    until_no_one_off_is_left(paz.app);

    // Killing the client removes the container.
    let mut client = paz
        .admin
        .ssh_to(
            "paz@127.0.0.1",
            paz.running.ssh_port,
            &["run", "runny", "sleep", "300"],
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    tests::eventually_blocking("the one-off to run", Duration::from_secs(30), || {
        one_off_containers(paz.app)
            .contains("running")
            .then_some(())
    });
    // Its agent reports it up on its next pass.
    let listed =
        tests::eventually_blocking("run:list to show it up", Duration::from_secs(20), || {
            let listed = stdout(&paz.ssh(&["run:list", "runny"]));
            listed.contains(" up ").then_some(listed)
        });
    assert!(
        listed.contains("attached") && listed.contains("sleep 300"),
        "{listed}"
    );
    client.kill().unwrap();
    let _ = client.wait();
    until_no_one_off_is_left(paz.app);
    let listed = stdout(&paz.ssh(&["run:list", "runny"]));
    assert_eq!(listed.trim(), "runny runs no one-offs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detached_one_off_logs_its_output_and_bad_runs_change_nothing() {
    let paz = paz_with_app("run-detached", "runner").await;

    let started = paz.ssh(&[
        "run:detached",
        paz.app,
        "sh",
        "-c",
        "'echo detached-out; exit 4'",
    ]);
    assert!(started.status.success(), "{}", said(&started));
    let said_text = stdout(&started);
    let id = said_text
        .split_whitespace()
        .find_map(|word| word.strip_prefix("run."))
        .expect("the one-off's id")
        .to_string();
    let instance = format!("run.{id}");
    let logs = tests::eventually_blocking(
        "the one-off's output and exit in the logs",
        Duration::from_secs(30),
        || {
            let logs = stdout(&paz.ssh(&["logs", paz.app, "--instance", &instance]));
            (logs.contains("detached-out") && logs.contains("exited with code 4")).then_some(logs)
        },
    );
    assert!(logs.contains(&instance), "{logs}");
    // Done, it goes.
    until_no_one_off_is_left(paz.app);

    // run:stop ends one that would run on.
    let started = paz.ssh(&["run:detached", paz.app, "sleep", "300"]);
    assert!(started.status.success(), "{}", said(&started));
    let id = stdout(&started)
        .split_whitespace()
        .find_map(|word| word.strip_prefix("run.").map(str::to_string))
        .unwrap();
    tests::eventually_blocking("the one-off to run", Duration::from_secs(30), || {
        one_off_containers(paz.app)
            .contains("running")
            .then_some(())
    });
    let listed = stdout(&paz.ssh(&["run:list", paz.app]));
    assert!(
        listed.contains("detached") && listed.contains("sleep 300"),
        "{listed}"
    );
    let stopped = paz.ssh(&["run:stop", paz.app, &id]);
    assert!(stopped.status.success(), "{}", said(&stopped));
    until_no_one_off_is_left(paz.app);

    // Bad input and other callers' rights: refused, with a reason.
    let other = SshIdentity::new("ed25519");
    let added = paz.admin.ssh_with_input(
        "paz@127.0.0.1",
        paz.running.ssh_port,
        &[
            "ssh-keys:add",
            "bo",
            "--role",
            "deployer",
            "--apps",
            "other",
        ],
        other.public_key.as_bytes(),
    );
    assert!(added.status.success(), "{}", said(&added));
    let as_other = |args: &[&str]| other.ssh("paz@127.0.0.1", paz.running.ssh_port, args);
    for (output, says) in [
        (paz.ssh(&["run", paz.app]), "name the command to run"),
        (
            paz.ssh(&["run", "ghost", "sh"]),
            "app `ghost` does not exist",
        ),
        (
            paz.ssh(&["run:stop", paz.app, "Bad!"]),
            "is not a one-off's id",
        ),
        (
            paz.ssh(&["run:stop", paz.app, "zz123456"]),
            "has no one-off run.zz123456",
        ),
        (
            as_other(&["run", paz.app, "sh"]),
            "`bo` may not use app `runner`",
        ),
        (
            as_other(&["run:detached", paz.app, "sh"]),
            "`bo` may not use app `runner`",
        ),
        (
            as_other(&["run:list", paz.app]),
            "`bo` may not use app `runner`",
        ),
        (
            as_other(&["run:stop", paz.app, "zz123456"]),
            "`bo` may not use app `runner`",
        ),
    ] {
        assert!(!output.status.success(), "{says}: {}", said(&output));
        assert!(said(&output).contains(says), "{says}: {}", said(&output));
    }
    assert!(one_off_containers(paz.app).is_empty(), "nothing ran");

    // Destroying the app stops and removes its one-offs too.
    let started = paz.ssh(&["run:detached", paz.app, "sleep", "300"]);
    assert!(started.status.success(), "{}", said(&started));
    tests::eventually_blocking("the one-off to run", Duration::from_secs(30), || {
        one_off_containers(paz.app)
            .contains("running")
            .then_some(())
    });
    let destroyed = paz.ssh(&["apps:destroy", paz.app, "--force"]);
    assert!(destroyed.status.success(), "{}", said(&destroyed));
    until_no_one_off_is_left(paz.app);
}

impl Paz {
    /// A new API token's secret.
    fn token(&self, name: &str, role: &str, apps: &str) -> String {
        let mut args = vec!["tokens:create", name, "--role", role];
        if !apps.is_empty() {
            args.extend(["--apps", apps]);
        }
        let output = self.ssh(&args);
        assert!(output.status.success(), "{}", said(&output));
        stdout(&output)
            .lines()
            .find_map(|line| line.strip_prefix("secret (shown once, keep it safe): "))
            .expect("tokens:create prints the secret")
            .to_string()
    }

    /// `paz ARGS` as a client of this API with `token`.
    fn client(&self, token: &str, args: &[&str], input: &[u8]) -> std::process::Output {
        use std::io::Write;
        let home = tests::temp_dir();
        let mut child = common::paz()
            .args(args)
            .env("HOME", home.path())
            .env(
                "PAZ_API_URL",
                format!("http://127.0.0.1:{}", self.running.api_port),
            )
            .env("PAZ_API_TOKEN", token)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }

    /// `curl` of the API: the status and body.
    fn curl(&self, token: Option<&str>, method: &str, path: &str, body: &str) -> (u16, String) {
        let mut curl = Command::new("curl");
        curl.args(["-s", "-w", "\n%{http_code}", "-X", method]);
        if let Some(token) = token {
            curl.args(["-H", &format!("Authorization: Bearer {token}")]);
        }
        if !body.is_empty() {
            curl.args(["-H", "Content-Type: application/json", "-d", body]);
        }
        let output = curl
            .arg(format!(
                "http://127.0.0.1:{}/api/v1{path}",
                self.running.api_port
            ))
            .output()
            .unwrap();
        let text = out(&output);
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", ""));
        (status.parse().unwrap_or(0), body.to_string())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paz_run_and_the_api_run_one_offs_with_the_callers_rights() {
    let paz = paz_with_app("run-api", "apirun").await;
    let admin = paz.token("laptop", "admin", "");
    let other = paz.token("theirs", "deployer", "other");

    // `paz run`: the client's streams and exit code are the command's,
    // its flags (-a, --json) those of the command once it begins.
    let ran = paz.client(
        &admin,
        &[
            "run",
            "-a",
            "apirun",
            "sh",
            "-c",
            "cat; echo err >&2; echo --json; exit 5",
        ],
        b"from stdin\n",
    );
    assert_eq!(ran.status.code(), Some(5), "{}", said(&ran));
    assert_eq!(out(&ran), "from stdin\n--json\n");
    assert_eq!(stderr(&ran), "err\n");
    until_no_one_off_is_left(paz.app);

    // Detached over the API: 201, listed, stopped with DELETE.
    let (status, body) = paz.curl(
        Some(&admin),
        "POST",
        "/apps/apirun/runs",
        r#"{"command": ["sleep", "300"]}"#,
    );
    assert_eq!(status, 201, "{body}");
    let started: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = started["id"].as_str().unwrap().to_string();
    let (status, body) = paz.curl(Some(&admin), "GET", "/apps/apirun/runs", "");
    assert_eq!(status, 200, "{body}");
    let runs: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(runs[0]["id"], id.as_str(), "{body}");
    assert_eq!(runs[0]["command"], serde_json::json!(["sleep", "300"]));

    // Another app's deployer, an anonymous caller, bad input: refused.
    for (token, method, path, body, expected) in [
        (
            Some(other.as_str()),
            "POST",
            "/apps/apirun/runs",
            r#"{"command": ["sh"]}"#,
            403,
        ),
        (Some(other.as_str()), "GET", "/apps/apirun/runs", "", 403),
        (
            Some(other.as_str()),
            "DELETE",
            &format!("/apps/apirun/runs/{id}") as &str,
            "",
            403,
        ),
        (
            None,
            "POST",
            "/apps/apirun/runs",
            r#"{"command": ["sh"]}"#,
            401,
        ),
        (
            Some(admin.as_str()),
            "POST",
            "/apps/apirun/runs",
            r#"{"command": []}"#,
            422,
        ),
        (
            Some(admin.as_str()),
            "POST",
            "/apps/apirun/runs",
            r#"{"cmd": ["sh"]}"#,
            422,
        ),
        (
            Some(admin.as_str()),
            "POST",
            "/apps/apirun/runs",
            r#"{"command": ["sh"], "tty": {"cols": 80, "rows": 24}}"#,
            422,
        ),
        (
            Some(admin.as_str()),
            "DELETE",
            "/apps/apirun/runs/Bad!",
            "",
            422,
        ),
    ] {
        let (status, answer) = paz.curl(token, method, path, body);
        assert_eq!(status, expected, "{method} {path} {body}: {answer}");
    }
    let refused = paz.client(&other, &["run", "-a", "apirun", "sh"], b"");
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("may not use app `apirun`"),
        "{}",
        said(&refused)
    );
    assert!(
        one_off_containers(paz.app).lines().count() <= 1,
        "only the detached one: {}",
        one_off_containers(paz.app)
    );

    let (status, body) = paz.curl(
        Some(&admin),
        "DELETE",
        &format!("/apps/apirun/runs/{id}"),
        "",
    );
    assert_eq!(status, 204, "{body}");
    until_no_one_off_is_left(paz.app);
}

//! Logs, as a user reads them: `paz server`, `paz proxy` and `paz agent`s
//! on one etcd (as `hosts.rs` runs them), an app that prints a line per
//! request (busybox httpd -vv) and can be made to crash, driven with `ssh`,
//! `git`, HTTP and the REST API. The lines outlive their containers, their
//! releases and an agent's restart, a cap holds, a follow goes on when a
//! host goes away, and every door checks who asks.

mod common;

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{get_path, paz, said, spawn_until, start_role, Running};
use tests::{ChildGuard, DockerCleanup, SshIdentity};

/// The app: it says which release it is, logs each request, crashes with
/// exit code 3 when `/cgi-bin/crash` is asked for, and (by `MODE`) counts
/// or floods its output.
fn talker() -> tempfile::TempDir {
    let dir = tests::temp_dir();
    let path = dir.path();
    std::fs::write(
        path.join("Dockerfile"),
        "ARG BASE_IMAGE=paz/busybox:latest\nFROM ${BASE_IMAGE}\nCOPY . /app\nENV PORT=5000\nEXPOSE 5000\nCMD [\"sh\", \"/app/start.sh\"]\n",
    )
    .unwrap();
    std::fs::write(
        path.join("start.sh"),
        r#"#!/bin/sh
case "$MODE" in
count) (i=0; while :; do i=$((i+1)); echo "n $i"; usleep 2000; done) & ;;
spam) (pad=$(printf '%0900d' 0); i=0; while [ $i -lt 60000 ]; do echo "spam $i $pad"; i=$((i+1)); done; echo "spam done") & ;;
esac
echo "release ${MARK:-one} listening on $PORT"
httpd -f -vv -p "$PORT" -h /app/www &
while sleep 0.2; do
  if [ -f /tmp/crash ]; then echo "crashing on purpose" >&2; exit 3; fi
done
"#,
    )
    .unwrap();
    std::fs::create_dir_all(path.join("www/cgi-bin")).unwrap();
    std::fs::write(path.join("www/index.html"), "talking\n").unwrap();
    let crash = path.join("www/cgi-bin/crash");
    std::fs::write(
        &crash,
        "#!/bin/sh\ntouch /tmp/crash\nprintf 'Content-Type: text/plain\\r\\n\\r\\nbye\\n'\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&crash, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// One etcd, a server, a proxy and agents, all on loopback.
struct Cluster {
    etcd: tests::OwnEtcd,
    server: Running,
    admin: SshIdentity,
    /// `NAME:SECRET` of the agents' machine token.
    token: String,
    http: u16,
    _proxy: ChildGuard,
    cleanup: DockerCleanup,
}

/// A `paz agent` and its data dir.
struct Agent {
    child: ChildGuard,
    id: String,
    data: tempfile::TempDir,
}

impl Cluster {
    async fn start(name: &str) -> Cluster {
        let docker = tests::docker().await;
        tests::busybox_image(&docker).await;
        let etcd = tests::own_etcd().await;
        let url = etcd.etcd.client_url();
        let admin = SshIdentity::new("ed25519");
        let key = admin.private_key.with_extension("pub");
        let server_data = tests::temp_dir();
        let server = start_role(
            "server",
            &[
                "--etcd",
                &url,
                "--data-dir",
                server_data.path().to_str().unwrap(),
                "--admin-key",
                key.to_str().unwrap(),
                "--deploy-timeout",
                "30",
            ],
            &[],
        );
        std::mem::forget(server_data);
        let output = admin.ssh(
            "paz@127.0.0.1",
            server.ssh_port,
            &["tokens:create", "hosts", "--role", "machine", "--json"],
        );
        assert!(output.status.success(), "{}", said(&output));
        let token: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let token = format!(
            "{}:{}",
            token["name"].as_str().unwrap(),
            token["secret"].as_str().unwrap()
        );
        let (proxy, listening) = spawn_until(
            paz().args(["proxy", "--etcd", &url]).args([
                "--http-listen",
                "127.0.0.1:0",
                "--https-listen",
                "off",
                "--access-log",
                "off",
            ]),
            "proxy listening on ",
        );
        let http = listening.rsplit(':').next().unwrap().parse().unwrap();
        Cluster {
            etcd,
            server,
            admin,
            token,
            http,
            _proxy: proxy,
            cleanup: DockerCleanup::new(name),
        }
    }

    fn url(&self) -> String {
        self.etcd.etcd.client_url()
    }

    /// Starts `paz agent` on `data` (a new dir unless given), with `extra` flags.
    fn agent(&mut self, data: Option<tempfile::TempDir>, extra: &[&str]) -> Agent {
        let data = data.unwrap_or_else(tests::temp_dir);
        let (child, rest) = spawn_until(
            paz()
                .args(["agent", "--etcd", &self.url()])
                .args(["--data-dir", data.path().to_str().unwrap()])
                .args(["--advertise-addr", "127.0.0.1"])
                .args([
                    "--registry",
                    &format!("127.0.0.1:{}", self.server.registry_port),
                ])
                .args(["--token", &self.token, "--drain", "1"])
                .args(extra),
            "agent ",
        );
        let id = rest.trim_end_matches(" is running").to_string();
        self.cleanup.track_label(&format!("paz.machine={id}"));
        Agent { child, id, data }
    }

    fn ssh(&self, who: &SshIdentity, args: &[&str]) -> std::process::Output {
        who.ssh("paz@127.0.0.1", self.server.ssh_port, args)
    }

    /// A verb that must succeed, as the admin: what it printed on stdout.
    fn verb(&self, args: &[&str]) -> String {
        let output = self.ssh(&self.admin, args);
        assert!(output.status.success(), "{args:?}: {}", said(&output));
        String::from_utf8_lossy(&output.stdout).to_string()
    }

    /// Pushes `dir` to `app`, which must deploy.
    fn push(&mut self, dir: &Path, app: &str) {
        let ports = (self.server.ssh_port, self.server.registry_port);
        let pushed = common::push_dir(&self.admin, dir, ports, app, &mut self.cleanup);
        assert!(pushed.status.success(), "{}", said(&pushed));
    }

    /// `logs ARGS` as the admin: its lines.
    fn logs(&self, args: &[&str]) -> Vec<String> {
        let mut words = vec!["logs"];
        words.extend_from_slice(args);
        self.verb(&words).lines().map(str::to_string).collect()
    }

    async fn store(&self) -> store::Store {
        tests::etcd::connect(&self.url(), "/paz").await
    }
}

/// The lines of `logs` whose message has `text`.
fn with<'a>(lines: &'a [String], text: &str) -> Vec<&'a String> {
    lines.iter().filter(|line| line.contains(text)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_outlive_containers_releases_and_agent_restarts_under_a_cap() {
    let mut cluster = Cluster::start("logs-kept").await;
    let agent = cluster.agent(None, &["--log-cap", "10m"]);
    let app = talker();

    // Three releases of `talk`, two requests each, and a crash of the last.
    cluster.verb(&["apps:create", "talk"]);
    cluster.push(app.path(), "talk");
    let host = "talk.paz.localhost";
    for mark in ["one", "two", "three"] {
        if mark != "one" {
            cluster.verb(&["config:set", "talk", &format!("MARK={mark}")]);
        }
        for _ in 0..2 {
            assert_eq!(get_path(cluster.http, host, "/").0, 200);
        }
    }
    assert_eq!(get_path(cluster.http, host, "/cgi-bin/crash").0, 200);
    let lines = tests::eventually(
        "the crash to be in the log",
        Duration::from_secs(30),
        async || {
            let lines = cluster.logs(&["talk", "-n", "50"]);
            (!with(&lines, "crashed with exit code 3").is_empty()).then_some(lines)
        },
    )
    .await;
    let text = lines.join("\n");
    for (release, mark) in [(1, "one"), (2, "two"), (3, "three")] {
        assert!(
            text.contains(&format!(
                "app[web.1] v{release} machine-{}: release {mark} listening",
                &agent.id[..8]
            )),
            "v{release}'s start is kept:\n{text}"
        );
        let requests = lines
            .iter()
            .filter(|l| l.contains(&format!("app[web.1] v{release} ")) && l.contains("url:/"))
            .count();
        assert!(
            requests >= 2,
            "v{release}'s requests are kept ({requests}):\n{text}"
        );
    }
    assert!(text.contains("crashing on purpose"), "{text}");
    let crash = with(&lines, "crashed with exit code 3");
    assert!(
        crash[0].contains("paz[agent] v3") && crash[0].contains("web.1 crashed"),
        "{text}"
    );
    assert!(
        text.contains("paz[agent] v1") && text.contains("web.1 started"),
        "{text}"
    );
    let times: Vec<&str> = lines.iter().map(|l| l.split(' ').next().unwrap()).collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted, "in time order:\n{text}");
    // The containers of v1 and v2 are gone; their lines are not.
    tests::eventually(
        "v1's and v2's containers to be removed",
        Duration::from_secs(60),
        async || {
            let names = Command::new("docker")
                .args([
                    "ps",
                    "-a",
                    "--format",
                    "{{.Names}}",
                    "--filter",
                    &format!("label=paz.machine={}", agent.id),
                ])
                .output()
                .unwrap();
            let names = String::from_utf8_lossy(&names.stdout).to_string();
            (!names.contains("talk-v1-") && !names.contains("talk-v2-")).then_some(())
        },
    )
    .await;
    let again = cluster.logs(&["talk", "-n", "1000"]);
    assert!(
        again.iter().any(|l| l.contains("release one listening")),
        "{}",
        again.join("\n")
    );
    assert!(
        again
            .iter()
            .any(|l| l.contains("v1") && l.contains("web.1 stopped")),
        "{}",
        again.join("\n")
    );
    // -n, --instance and --process select.
    assert_eq!(cluster.logs(&["talk", "-n", "3"]).len(), 3);
    assert!(cluster.logs(&["talk", "--process", "worker"]).is_empty());
    let one_instance = cluster.logs(&["talk", "--instance", "web.1", "-n", "500"]);
    assert!(one_instance
        .iter()
        .all(|l| l.contains("[web.1]") || l.contains(": web.1 ")));

    // The same through the REST API: `paz logs` (SSE), and JSON.
    let ops: serde_json::Value =
        serde_json::from_str(&cluster.verb(&["tokens:create", "ops", "--role", "admin", "--json"]))
            .unwrap();
    let ops = ops["secret"].as_str().unwrap().to_string();
    let client = paz()
        .args(["logs", "talk", "-n", "5", "--instance", "web.1"])
        .env(
            "PAZ_API_URL",
            format!("http://127.0.0.1:{}", cluster.server.api_port),
        )
        .env("PAZ_API_TOKEN", &ops)
        .env("HOME", tests::temp_dir().path())
        .output()
        .unwrap();
    assert!(client.status.success(), "{}", said(&client));
    let printed = String::from_utf8_lossy(&client.stdout).to_string();
    assert_eq!(printed.lines().count(), 5, "{printed}");
    assert!(
        printed
            .lines()
            .all(|l| l.contains("app[web.1] v") || l.contains(": web.1 ")),
        "{printed}"
    );
    let json = Command::new("curl")
        .args(["-s", "-H", &format!("Authorization: Bearer {ops}")])
        .arg(format!(
            "http://127.0.0.1:{}/api/v1/apps/talk/logs?lines=2&process=web",
            cluster.server.api_port
        ))
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["lines"].as_array().map(Vec::len), Some(2), "{json}");
    assert_eq!(json["lines"][0]["app"], "talk", "{json}");
    let events = Command::new("curl")
        .args([
            "-s",
            "-N",
            "--max-time",
            "3",
            "-H",
            &format!("Authorization: Bearer {ops}"),
        ])
        .arg(format!(
            "http://127.0.0.1:{}/api/v1/apps/talk/logs?lines=1&follow=true",
            cluster.server.api_port
        ))
        .output()
        .unwrap();
    let events = String::from_utf8_lossy(&events.stdout);
    assert!(
        events.contains("event: line") && events.contains("\"text\":"),
        "{events}"
    );

    // Who may read them: a deployer of another app may not, over SSH or the API.
    cluster.verb(&["apps:create", "spam"]);
    let other = SshIdentity::new("ed25519");
    let added = cluster.admin.ssh_with_input(
        "paz@127.0.0.1",
        cluster.server.ssh_port,
        &[
            "ssh-keys:add",
            "other",
            "--role",
            "deployer",
            "--apps",
            "spam",
        ],
        std::fs::read(other.private_key.with_extension("pub"))
            .unwrap()
            .as_slice(),
    );
    assert!(added.status.success(), "{}", said(&added));
    let refused = cluster.ssh(&other, &["logs", "talk"]);
    assert!(
        !refused.status.success() && said(&refused).contains("talk"),
        "{}",
        said(&refused)
    );
    let refused = cluster.ssh(&other, &["logs", "talk", "-f"]);
    assert!(!refused.status.success(), "{}", said(&refused));
    let allowed = cluster.ssh(&other, &["logs", "spam"]);
    assert!(allowed.status.success(), "{}", said(&allowed));
    let token: serde_json::Value = serde_json::from_str(&cluster.verb(&[
        "tokens:create",
        "spam-ci",
        "--role",
        "deployer",
        "--apps",
        "spam",
        "--json",
    ]))
    .unwrap();
    let secret = token["secret"].as_str().unwrap();
    let api = |path: &str, bearer: &str| {
        let output = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
            .arg(format!("Authorization: Bearer {bearer}"))
            .arg(format!(
                "http://127.0.0.1:{}{path}",
                cluster.server.api_port
            ))
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).to_string()
    };
    assert_eq!(api("/api/v1/apps/talk/logs", secret), "403");
    assert_eq!(api("/api/v1/apps/spam/logs", secret), "200");
    assert_eq!(api("/api/v1/apps/talk/logs", "not-a-token"), "401");
    // The agent endpoint answers only the cluster's secret.
    let store = cluster.store().await;
    let keys = store.keys().clone();
    let agent_secret = store
        .get(&keys.agent_secret())
        .await
        .unwrap()
        .unwrap()
        .value;
    let machine = store
        .get(&keys.machine(&agent.id).unwrap())
        .await
        .unwrap()
        .unwrap()
        .value;
    let endpoint = machine.endpoint.expect("the agent records its endpoint");
    let at_agent = |bearer: Option<&str>| {
        let mut curl = Command::new("curl");
        curl.args(["-s", "-o", "/dev/null", "-w", "%{http_code}"]);
        if let Some(bearer) = bearer {
            curl.arg("-H")
                .arg(format!("Authorization: Bearer {bearer}"));
        }
        let output = curl
            .arg(format!("{endpoint}/v1/logs/talk"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).to_string()
    };
    assert_eq!(at_agent(None), "401");
    assert_eq!(at_agent(Some(secret)), "401");
    assert_eq!(at_agent(Some(&agent_secret)), "200");

    // The cap: `spam` prints 50 MiB; 10 MiB stay, the newest.
    cluster.verb(&["config:set", "spam", "MODE=spam"]);
    cluster.push(app.path(), "spam");
    // Copied whole (on a busy machine this takes a while), then asked for.
    let spam_dir = agent.data.path().join("logs/spam");
    tests::eventually(
        "spam's last line to be copied",
        Duration::from_secs(300),
        async || {
            let files = std::fs::read_dir(&spam_dir).ok()?;
            let mut paths: Vec<_> = files.filter_map(|e| Some(e.ok()?.path())).collect();
            paths.sort();
            let newest = std::fs::read_to_string(paths.last()?).ok()?;
            newest.contains("\"message\":\"spam done\"").then_some(())
        },
    )
    .await;
    let newest = cluster.logs(&["spam", "-n", "200"]);
    assert!(
        newest.iter().any(|l| l.ends_with("spam done"))
            && newest.iter().any(|l| l.contains(": spam 59999 ")),
        "the newest lines are kept: {:?}",
        newest.iter().rev().take(5).collect::<Vec<_>>()
    );
    let kept: u64 = std::fs::read_dir(agent.data.path().join("logs/spam"))
        .unwrap()
        .map(|entry| entry.unwrap().metadata().unwrap().len())
        .sum();
    assert!(kept <= 10 << 20, "{kept} bytes kept");
    assert!(kept >= 5 << 20, "only {kept} bytes kept");

    // An agent killed and started again while `count` prints: every line once.
    cluster.verb(&["apps:create", "count"]);
    cluster.verb(&["config:set", "count", "MODE=count"]);
    cluster.push(app.path(), "count");
    std::thread::sleep(Duration::from_secs(2));
    agent.child.signal(nix::sys::signal::Signal::SIGKILL);
    let Agent {
        mut child, data, ..
    } = agent;
    let _ = child.wait_timeout(Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(3));
    let again = cluster.agent(Some(data), &["--log-cap", "10m"]);
    std::thread::sleep(Duration::from_secs(3));
    let numbers: Vec<u64> = cluster
        .logs(&["count", "-n", "100000", "--instance", "web.1"])
        .iter()
        .filter_map(|line| line.split(": n ").nth(1)?.parse().ok())
        .collect();
    assert!(
        numbers.len() > 1000,
        "only {} numbered lines",
        numbers.len()
    );
    let expected: Vec<u64> = (1..=numbers.len() as u64).collect();
    assert!(
        numbers == expected,
        "lost or repeated: {} lines, first gap or repeat at {:?}",
        numbers.len(),
        numbers.iter().zip(&expected).position(|(a, b)| a != b)
    );
    drop(again);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_merges_two_hosts_and_goes_on_when_one_goes_away() {
    let mut cluster = Cluster::start("logs-follow").await;
    let one = cluster.agent(None, &[]);
    let two = cluster.agent(None, &[]);
    cluster.verb(&["apps:create", "duo"]);
    cluster.push(talker().path(), "duo");
    cluster.verb(&["ps:scale", "duo", "web=2"]);
    let host = "duo.paz.localhost";
    // Follow, as a user does in another terminal.
    let mut follow = ChildGuard::spawn(
        cluster
            .admin
            .ssh_to(
                "paz@127.0.0.1",
                cluster.server.ssh_port,
                &["logs", "duo", "-n", "0", "-f"],
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let (sender, seen) = std::sync::mpsc::channel::<String>();
    let out = follow.child().stdout.take().unwrap();
    let err = follow.child().stderr.take().unwrap();
    for (stream, prefix) in [
        (Box::new(out) as Box<dyn std::io::Read + Send>, "out"),
        (Box::new(err), "err"),
    ] {
        let sender = sender.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if sender.send(format!("{prefix} {line}")).is_err() {
                    break;
                }
            }
        });
    }
    std::thread::sleep(Duration::from_secs(2));
    // Requests until both instances said so; each is one `url:/index.html`
    // line (the health checks ask for `/`).
    let mut got: Vec<String> = Vec::new();
    let mut asked = 0;
    tests::eventually_blocking("lines of both hosts", Duration::from_secs(30), || {
        assert_eq!(get_path(cluster.http, host, "/index.html").0, 200);
        asked += 1;
        got.extend(seen.try_iter());
        let from = |id: &str| {
            got.iter().any(|l| {
                l.contains("url:/index.html") && l.contains(&format!("machine-{}", &id[..8]))
            })
        };
        (from(&one.id) && from(&two.id)).then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    got.extend(seen.try_iter());
    let requests = got
        .iter()
        .filter(|l| l.starts_with("out ") && l.contains("url:/index.html"))
        .count();
    assert_eq!(
        requests,
        asked,
        "each request's line once:\n{}",
        got.join("\n")
    );

    // Host one's agent goes away: the stream says so and follows host two.
    let Agent {
        child: one_child,
        id: one_id,
        ..
    } = one;
    one_child.signal(nix::sys::signal::Signal::SIGKILL);
    drop(one_child);
    let said_so = tests::eventually_blocking(
        "the stream to say host one is unreachable",
        Duration::from_secs(30),
        || {
            got.extend(seen.try_iter());
            got.iter()
                .find(|l| {
                    l.starts_with("err ")
                        && l.contains(&format!("machine {}", &one_id[..8]))
                        && l.contains("cannot be reached")
                })
                .cloned()
        },
    );
    assert!(said_so.contains("following the others"), "{said_so}");
    let before = got.len();
    tests::eventually_blocking("host two's new lines", Duration::from_secs(30), || {
        let _ = get_path(cluster.http, host, "/");
        got.extend(seen.try_iter());
        got[before..]
            .iter()
            .any(|l| {
                l.starts_with("out ")
                    && l.contains("url:/")
                    && l.contains(&format!("machine-{}", &two.id[..8]))
            })
            .then_some(())
    });
    drop(follow);
    drop(two);
}

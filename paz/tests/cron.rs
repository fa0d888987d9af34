//! Cron as an operator runs it: one etcd, two `paz server`s (so two
//! scheduler candidates) and a `paz agent`, an app whose `app.json` has a
//! job every minute, and the scheduler's leader killed between ticks:
//! each minute's tick runs once, counted in the job's output.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{said, start_role, stdout};
use tests::{DockerCleanup, SshIdentity};

fn server(etcd: &str, data: &Path, key: &Path) -> common::Running {
    start_role(
        "server",
        &[
            "--etcd",
            etcd,
            "--data-dir",
            data.to_str().unwrap(),
            "--admin-key",
            key.to_str().unwrap(),
            "--deploy-timeout",
            "20",
        ],
        &[],
    )
}

/// The app: a web process, and `app.json` with `cron`.
fn app(cron: &str) -> tempfile::TempDir {
    let dir = tests::temp_dir();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!(
            "FROM {}\nRUN mkdir /www && echo hi > /www/index.html\nCMD [\"sh\", \"-c\", \"exec httpd -f -p $PORT -h /www\"]\n",
            tests::BUSYBOX_IMAGE
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("app.json"), cron).unwrap();
    dir
}

/// The minutes (since the epoch) of the ticks the job's output counts.
fn ticks(logs: &str) -> Vec<u64> {
    logs.lines()
        .filter_map(|line| line.split("tick-").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .map(|seconds| seconds / 60)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_every_minute_runs_once_a_minute_across_a_change_of_leader() {
    let docker = tests::docker().await;
    tests::busybox_image(&docker).await;
    let etcd = tests::own_etcd().await;
    let url = etcd.etcd.client_url();
    let admin = SshIdentity::new("ed25519");
    let key = admin.private_key.with_extension("pub");
    let mut cleanup = DockerCleanup::new("cron");
    let (data_a, data_b) = (tests::temp_dir(), tests::temp_dir());
    let mut a = server(&url, data_a.path(), &key);
    let verb = |ssh: u16, args: &[&str]| admin.ssh("paz@127.0.0.1", ssh, args);
    let token: serde_json::Value = serde_json::from_slice(
        &verb(
            a.ssh_port,
            &["tokens:create", "hosts", "--role", "machine", "--json"],
        )
        .stdout,
    )
    .unwrap();
    let token = format!(
        "{}:{}",
        token["name"].as_str().unwrap(),
        token["secret"].as_str().unwrap()
    );
    let agent_data = tests::temp_dir();
    let (_agent, machine) = common::agent(&url, agent_data.path(), a.registry_port, &token, &[]);
    cleanup.track_label(&format!("paz.machine={machine}"));
    let mut b = server(&url, data_b.path(), &key);

    // A schedule that does not parse: the push is refused, naming the field.
    let ports = (a.ssh_port, a.registry_port);
    let bad = app(r#"{"cron": [{"command": "echo tick", "schedule": "every minute"}]}"#);
    let pushed = common::push_dir(&admin, bad.path(), ports, "clock", &mut cleanup);
    assert!(!pushed.status.success());
    assert!(
        said(&pushed).contains("app.json cron[0].schedule: `every minute` is not a cron schedule"),
        "{}",
        said(&pushed)
    );
    let listed = stdout(&verb(a.ssh_port, &["releases", "clock"]));
    assert!(listed.contains("no releases"), "nothing released: {listed}");

    let good = app(r#"{"cron": [{"command": "echo tick-$(date +%s)", "schedule": "* * * * *"}]}"#);
    let pushed = common::push_dir(&admin, good.path(), ports, "clock", &mut cleanup);
    assert!(pushed.status.success(), "{}", said(&pushed));
    let listed = stdout(&verb(a.ssh_port, &["cron:list", "clock"]));
    assert!(
        listed.contains("* * * * *")
            && listed.contains("echo tick-$(date +%s)")
            && listed.contains("next 20"),
        "{listed}"
    );

    // The first tick runs, and its exit code is kept.
    let logs = |ssh: u16| stdout(&verb(ssh, &["logs", "clock", "-n", "1000"]));
    tests::eventually_blocking("the first tick", Duration::from_secs(90), || {
        (!ticks(&logs(a.ssh_port)).is_empty()).then_some(())
    });
    tests::eventually_blocking(
        "its exit code in cron:list",
        Duration::from_secs(30),
        || {
            let listed = stdout(&verb(a.ssh_port, &["cron:list", "clock"]));
            listed.contains("exit 0").then_some(())
        },
    );

    // The leader goes; the other server's scheduler leads, and goes on.
    let store = a.store("/paz").await;
    let leader = store
        .get(&store.keys().leader("scheduler").unwrap())
        .await
        .unwrap()
        .expect("a scheduler leads")
        .value;
    let (killed, survivor) = if leader.ends_with(&format!(":{}", a.paz.id())) {
        (&mut a, &b)
    } else {
        (&mut b, &a)
    };
    killed.paz.signal(nix::sys::signal::Signal::SIGKILL);
    let ssh = survivor.ssh_port;
    let before = ticks(&logs(ssh)).len();
    let seen = tests::eventually_blocking(
        "two more ticks under the next leader",
        Duration::from_secs(200),
        || {
            let seen = ticks(&logs(ssh));
            (seen.len() >= before + 2).then_some(seen)
        },
    );
    let mut minutes = seen.clone();
    minutes.sort();
    minutes.dedup();
    assert_eq!(
        minutes.len(),
        seen.len(),
        "no minute's tick ran twice: {seen:?}"
    );
    // The new leader keeps the exit codes too.
    let listed = tests::eventually_blocking(
        "an exit code under the new leader",
        Duration::from_secs(70),
        || {
            let listed = stdout(&verb(ssh, &["cron:list", "clock"]));
            listed.contains("exit 0").then_some(listed)
        },
    );

    // cron:run runs it now (refused, not overlapped, while a tick runs), as
    // a one-off whose output is the job's.
    let id = listed.split_whitespace().next().unwrap().to_string();
    let instance = tests::eventually_blocking("cron:run to start", Duration::from_secs(70), || {
        let ran = verb(ssh, &["cron:run", "clock", &id]);
        if !ran.status.success() {
            assert!(said(&ran).contains("still runs"), "{}", said(&ran));
            return None;
        }
        stdout(&ran).split_whitespace().find_map(|word| {
            word.strip_prefix("run.")
                .map(|id| format!("run.{}", id.trim_end_matches(':')))
        })
    });
    tests::eventually_blocking("the run's output", Duration::from_secs(30), || {
        let logs = stdout(&verb(ssh, &["logs", "clock", "--instance", &instance]));
        (!ticks(&logs).is_empty() && logs.contains("exited with code 0")).then_some(())
    });
    let refused = verb(ssh, &["cron:run", "clock", "c0000000"]);
    assert!(
        said(&refused).contains("has no cron job `c0000000`"),
        "{}",
        said(&refused)
    );
}

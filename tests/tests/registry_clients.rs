//! Paz's registry with the real clients: the Docker CLI (login, push, pull of a
//! multi-layer image) and skopeo (copy from an OCI layout, inspect, list-tags,
//! delete).

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The Docker CLI with a config dir of the test's own (its login lives there).
fn docker_cli(config: &Path) -> Command {
    let mut command = Command::new("docker");
    command
        .env("DOCKER_CONFIG", config)
        .env("DOCKER_BUILDKIT", "0");
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_logs_in_pushes_and_pulls_a_multi_layer_image() {
    let fixture = start_registry("reg-docker").await;
    let docker = tests::docker().await;
    let base = tests::busybox_image(&docker).await;
    let mut cleanup = tests::DockerCleanup::new("reg-docker");
    let image = format!("127.0.0.1:{}/web/docker-test:v1", fixture.addr.port());
    cleanup.track_image(&image);
    let build = tests::temp_dir();
    std::fs::write(
        build.path().join("Dockerfile"),
        format!(
            "FROM {base}\nRUN echo one > /one\nRUN echo two > /two\nLABEL {}\n",
            cleanup.label_arg()
        ),
    )
    .unwrap();
    let config = tests::temp_dir();
    let built = run(docker_cli(config.path())
        .args(["build", "-q", "-t", &image])
        .arg(build.path()));
    assert!(built.status.success(), "{}", text(&built));

    let anonymous = run(docker_cli(config.path()).args(["push", &image]));
    assert!(!anonymous.status.success());
    let said = text(&anonymous);
    assert!(
        said.contains("no basic auth credentials") || said.contains("unauthorized"),
        "{said}"
    );

    let mut login = docker_cli(config.path());
    login
        .args([
            "login",
            &fixture.addr.to_string(),
            "-u",
            &fixture.admin.name,
            "--password-stdin",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = login.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(fixture.admin.secret.as_bytes())
        .unwrap();
    let logged_in = child.wait_with_output().unwrap();
    assert!(
        text(&logged_in).contains("Login Succeeded"),
        "{}",
        text(&logged_in)
    );

    let pushed = run(docker_cli(config.path()).args(["push", &image]));
    assert!(pushed.status.success(), "{}", text(&pushed));
    let digest = text(&pushed)
        .split_whitespace()
        .find(|word| word.starts_with("sha256:"))
        .expect("docker push prints the digest")
        .to_string();

    let removed = run(docker_cli(config.path()).args(["image", "rm", &image]));
    assert!(removed.status.success(), "{}", text(&removed));
    let pulled = run(docker_cli(config.path()).args(["pull", &image]));
    assert!(pulled.status.success(), "{}", text(&pulled));
    assert!(text(&pulled).contains(&digest), "{}", text(&pulled));
    let layers = run(docker_cli(config.path()).args([
        "image",
        "inspect",
        "--format",
        "{{len .RootFS.Layers}}",
        &image,
    ]));
    assert_eq!(String::from_utf8_lossy(&layers.stdout).trim(), "3");
    let ran = run(docker_cli(config.path()).args([
        "run",
        "--rm",
        "--label",
        &cleanup.label_arg(),
        &image,
        "cat",
        "/one",
        "/two",
    ]));
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "one\ntwo\n");

    // The registry recorded the push as an image event.
    let events = fixture
        .store
        .list(&fixture.store.keys().image_events())
        .await
        .unwrap();
    assert!(events
        .entries
        .iter()
        .any(|e| e.value.repository == "web/docker-test"
            && e.value.digest.as_deref() == Some(digest.as_str())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_copies_inspects_lists_and_deletes() {
    let fixture = start_registry("reg-skopeo").await;
    let docker = tests::docker().await;
    let base = tests::busybox_image(&docker).await;
    let layout = tests::temp_dir();
    let oci = format!("oci:{}:latest", layout.path().join("image").display());
    let exported =
        run(Command::new("skopeo").args(["copy", &format!("docker-daemon:{base}"), &oci]));
    assert!(exported.status.success(), "{}", text(&exported));

    let creds = format!("{}:{}", fixture.admin.name, fixture.admin.secret);
    let target = format!("docker://127.0.0.1:{}/web/tool", fixture.addr.port());
    let skopeo = |args: &[&str]| run(Command::new("skopeo").args(args));
    let copied = skopeo(&[
        "copy",
        "--dest-creds",
        &creds,
        "--dest-tls-verify=false",
        &oci,
        &format!("{target}:v1"),
    ]);
    assert!(copied.status.success(), "{}", text(&copied));

    let inspected = skopeo(&[
        "inspect",
        "--creds",
        &creds,
        "--tls-verify=false",
        &format!("{target}:v1"),
    ]);
    assert!(inspected.status.success(), "{}", text(&inspected));
    let inspected: serde_json::Value = serde_json::from_slice(&inspected.stdout).unwrap();
    assert_eq!(inspected["Layers"].as_array().unwrap().len(), 1);
    let digest = inspected["Digest"].as_str().unwrap().to_string();

    let tags = skopeo(&[
        "list-tags",
        "--creds",
        &creds,
        "--tls-verify=false",
        &target,
    ]);
    let tags: serde_json::Value = serde_json::from_slice(&tags.stdout).unwrap();
    assert_eq!(tags["Tags"], serde_json::json!(["v1"]));

    let wrong = skopeo(&[
        "inspect",
        "--creds",
        "root:wrong",
        "--tls-verify=false",
        &format!("{target}:v1"),
    ]);
    assert!(!wrong.status.success());
    assert!(
        text(&wrong).contains("unauthorized") || text(&wrong).contains("401"),
        "{}",
        text(&wrong)
    );

    let deleted = skopeo(&[
        "delete",
        "--creds",
        &creds,
        "--tls-verify=false",
        &format!("{target}:v1"),
    ]);
    assert!(deleted.status.success(), "{}", text(&deleted));
    let gone = skopeo(&[
        "inspect",
        "--creds",
        &creds,
        "--tls-verify=false",
        &format!("{target}@{digest}"),
    ]);
    assert!(!gone.status.success());
}

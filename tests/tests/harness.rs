//! The harness itself against the real Docker Engine, git and ssh-keygen: the
//! busybox base image runs, cleanup guards remove what a test made even when it
//! panics, and the git helpers work in an isolated home.

use std::collections::HashMap;

use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    WaitContainerOptions,
};
use futures::TryStreamExt;

async fn containers_labelled(docker: &bollard::Docker, label: &str) -> usize {
    let filters = HashMap::from([("label", vec![label])]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    docker.list_containers(Some(options)).await.unwrap().len()
}

#[tokio::test]
async fn the_busybox_base_image_runs_a_shell() {
    let docker = tests::docker().await;
    let image = tests::busybox_image(&docker).await;
    let cleanup = tests::DockerCleanup::new("busybox-runs");
    let name = format!("paz-test-busybox-{}", std::process::id());
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        cmd: Some(vec![
            "sh".into(),
            "-c".into(),
            "echo hello from $(basename $(readlink /bin/sh))".into(),
        ]),
        labels: Some(cleanup.labels()),
        ..Default::default()
    };
    docker
        .create_container(
            Some(CreateContainerOptionsBuilder::new().name(&name).build()),
            body,
        )
        .await
        .unwrap();
    docker.start_container(&name, None).await.unwrap();
    let exits: Vec<_> = docker
        .wait_container(&name, None::<WaitContainerOptions>)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(exits.last().unwrap().status_code, 0);
    let logs: Vec<_> = docker
        .logs(&name, Some(LogsOptionsBuilder::new().stdout(true).build()))
        .try_collect()
        .await
        .unwrap();
    let text: String = logs.iter().map(|chunk| chunk.to_string()).collect();
    assert_eq!(text.trim(), "hello from busybox");

    let label = cleanup.label_arg();
    drop(cleanup);
    assert_eq!(
        containers_labelled(&docker, &label).await,
        0,
        "the guard removed the container"
    );
}

#[tokio::test]
async fn the_cleanup_guard_removes_containers_when_the_test_panics() {
    let docker = tests::docker().await;
    let image = tests::busybox_image(&docker).await.to_string();
    let label = tests::DockerCleanup::new("cleanup-on-panic").label_arg();
    let panicking = tokio::spawn(async move {
        let docker = tests::docker().await;
        let cleanup = tests::DockerCleanup::new("cleanup-on-panic");
        let body = ContainerCreateBody {
            image: Some(image),
            cmd: Some(vec!["sleep".into(), "300".into()]),
            labels: Some(cleanup.labels()),
            ..Default::default()
        };
        let created = docker
            .create_container(
                None::<bollard::query_parameters::CreateContainerOptions>,
                body,
            )
            .await
            .unwrap();
        docker.start_container(&created.id, None).await.unwrap();
        panic!("the test fails while its container runs");
    });
    assert!(panicking.await.unwrap_err().is_panic());
    assert_eq!(containers_labelled(&docker, &label).await, 0);
}

#[test]
fn ssh_identities_have_the_fingerprint_ssh_keygen_prints() {
    for kind in ["ed25519", "ecdsa", "rsa"] {
        let identity = tests::SshIdentity::new(kind);
        let fingerprint = identity.fingerprint();
        assert!(fingerprint.starts_with("SHA256:"), "{kind}: {fingerprint}");
        assert!(identity.public_key.starts_with(match kind {
            "ed25519" => "ssh-ed25519 ",
            "ecdsa" => "ecdsa-sha2-nistp256 ",
            _ => "ssh-rsa ",
        }));
        assert!(identity.ssh_command().contains("IdentitiesOnly=yes"));
    }
}

#[test]
fn git_runs_in_an_isolated_home_and_clones_what_it_committed() {
    let home = tests::temp_dir();
    let work = tests::temp_dir();
    let run = |dir: &std::path::Path, args: &[&str]| {
        let output = tests::git(dir, home.path()).args(args).output().unwrap();
        assert!(output.status.success(), "git {args:?}: {output:?}");
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    };
    run(work.path(), &["init", "-q", "-b", "main"]);
    std::fs::write(work.path().join("Procfile"), "web: httpd -f -p $PORT\n").unwrap();
    run(work.path(), &["add", "."]);
    run(work.path(), &["commit", "-q", "-m", "first"]);
    assert_eq!(
        run(work.path(), &["log", "--format=%an <%ae>"]),
        "Paz Test <test@paz.localhost>"
    );

    let clone = tests::temp_dir();
    let source = work.path().to_str().unwrap().to_string();
    run(clone.path(), &["clone", "-q", &source, "copy"]);
    assert!(clone.path().join("copy/Procfile").exists());
}

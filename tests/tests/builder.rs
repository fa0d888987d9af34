//! The builder on its own, with a real repo and the real Docker Engine: the
//! limits it puts on a build.

use std::path::Path;
use std::time::Duration;

use builder::{BuildRequest, Builder, BuilderConfig};
use store::records::BuildStatus;

/// A bare repo holding one commit of `files`; returns (repo dir, commit).
fn repo_with(files: &[(&str, &[u8])]) -> (tempfile::TempDir, String) {
    let home = tests::temp_dir();
    let work = tests::temp_dir();
    let run = |dir: &Path, args: &[&str]| {
        let output = tests::git(dir, home.path()).args(args).output().unwrap();
        assert!(output.status.success(), "git {args:?}: {output:?}");
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    };
    run(work.path(), &["init", "-q", "-b", "main"]);
    for (path, content) in files {
        std::fs::write(work.path().join(path), content).unwrap();
    }
    run(work.path(), &["add", "."]);
    run(work.path(), &["commit", "-q", "-m", "app"]);
    let sha = run(work.path(), &["rev-parse", "HEAD"]);
    let bare = tests::temp_dir();
    run(bare.path(), &["init", "-q", "--bare", "."]);
    run(
        work.path(),
        &["push", "-q", bare.path().to_str().unwrap(), "main"],
    );
    (bare, sha)
}

async fn build(
    name: &str,
    files: &[(&str, &[u8])],
    tune: impl FnOnce(&mut BuilderConfig),
) -> (Result<builder::Built, String>, store::Store, String) {
    let store = tests::test_store(name).await;
    let (repo, sha) = repo_with(files);
    let data = tests::temp_dir();
    let login = engine::RegistryLogin {
        registry: "127.0.0.1:1".into(),
        name: "nobody".into(),
        secret: "none".into(),
    };
    let mut config = BuilderConfig::new(data.path().to_path_buf(), login);
    tune(&mut config);
    let builder = Builder::new(config, store.clone());
    let (lines, mut received) = tokio::sync::mpsc::channel(1000);
    let request = BuildRequest {
        app: store::AppName::new("limits").unwrap(),
        git_sha: sha.clone(),
        repo: repo.path().to_path_buf(),
        git_env: Vec::new(),
        by: "test".into(),
        may_use: None,
    };
    let result = builder
        .build(request, lines)
        .await
        .map_err(|error| error.to_string());
    let mut output = String::new();
    while let Ok(line) = received.try_recv() {
        output.push_str(&line);
        output.push('\n');
    }
    (result, store, output)
}

#[tokio::test]
async fn a_context_over_the_limit_is_refused_before_building() {
    let big = vec![7u8; 2 << 20];
    let (result, store, _) = build(
        "builder-context",
        &[("Dockerfile", b"FROM scratch\n"), ("big.bin", &big)],
        |config| {
            config.context_limit = 1 << 20;
        },
    )
    .await;
    let error = result.unwrap_err();
    assert!(error.starts_with("the build context is 2 MiB, over the limit of 1 MiB: leave files out with a .dockerignore, or raise the limit"), "{error}");
    let builds = store
        .list(&store.keys().builds(&store::AppName::new("limits").unwrap()))
        .await
        .unwrap();
    assert_eq!(builds.entries[0].value.status, BuildStatus::Failed);
}

#[tokio::test]
async fn a_build_over_its_time_is_stopped_and_recorded_as_failed() {
    let docker = tests::docker().await;
    let base = tests::busybox_image(&docker).await;
    let dockerfile = format!("FROM {base}\nRUN sleep 30\n");
    let (result, store, output) = build(
        "builder-timeout",
        &[("Dockerfile", dockerfile.as_bytes())],
        |config| {
            config.timeout = Duration::from_secs(2);
        },
    )
    .await;
    let error = result.unwrap_err();
    assert!(
        error.starts_with("the build took longer than 2 s and was stopped"),
        "{error}\n{output}"
    );
    let builds = store
        .list(&store.keys().builds(&store::AppName::new("limits").unwrap()))
        .await
        .unwrap();
    assert_eq!(builds.entries[0].value.status, BuildStatus::Failed);
}

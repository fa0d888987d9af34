//! `LocalEtcd`, the etcd child of `paz up` and of the tests: failures to start
//! are reported with etcd's own words.

use store::LocalEtcdError;

#[tokio::test]
async fn an_etcd_that_cannot_start_is_reported_with_the_end_of_its_log() {
    let dir = tests::temp_dir();
    let data_dir = dir.path().join("etcd");
    // A data dir etcd cannot read: a write-ahead log full of garbage.
    std::fs::create_dir_all(data_dir.join("member/wal")).unwrap();
    std::fs::create_dir_all(data_dir.join("member/snap")).unwrap();
    std::fs::write(
        data_dir.join("member/wal/0000000000000000-0000000000000000.wal"),
        "this is not a write-ahead log",
    )
    .unwrap();
    let error = store::LocalEtcd::start(&data_dir).await.unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, LocalEtcdError::Exited { .. }), "{message}");
    assert!(
        message.starts_with("etcd exited during start-up"),
        "{message}"
    );
    assert!(
        message.contains(&format!("{}.log", data_dir.display())),
        "{message}"
    );
}

#[tokio::test]
async fn a_data_dir_that_cannot_be_made_is_a_clear_error() {
    let dir = tests::temp_dir();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let error = store::LocalEtcd::start(&file.join("etcd"))
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with(&format!("cannot prepare {}/etcd", file.display())),
        "{error}"
    );
}

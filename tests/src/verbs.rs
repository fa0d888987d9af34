//! Running SSH verbs in-process, as an admin, against a test's store.

/// The verbs' context on `store` (no deployer) and an admin caller; the
/// temp dir is the data dir and must outlive them.
pub fn admin_verbs(store: &store::Store) -> (verbs::Context, verbs::Caller, tempfile::TempDir) {
    let data = crate::temp_dir();
    let context = verbs::Context {
        store: store.clone(),
        data_dir: data.path().to_path_buf(),
        rollouts: None,
        hooks: None,
        clock: verbs::Clock::System,
        rollout_record: None,
    };
    let admin = verbs::Caller {
        name: "admin".into(),
        role: store::records::Role::Admin,
        apps: vec![],
        token: false,
    };
    (context, admin, data)
}

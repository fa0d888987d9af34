//! `--admin-key FILE`: records an OpenSSH public key as admin `admin` when the
//! cluster has no admin key yet, so a fresh install can be reached over SSH.

use std::path::Path;

use anyhow::Context;
use store::records::{Role, SshKey};
use store::Store;

/// Reads and checks the public key in `path`.
pub(crate) fn read(path: &Path) -> anyhow::Result<SshKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read admin key {}", path.display()))?;
    verbs::keys::parse_public_key(&text, "admin", Role::Admin, Vec::new())
        .with_context(|| format!("--admin-key {}", path.display()))
}

/// Adds `key` unless some admin key exists; returns whether it was added.
pub(crate) async fn add_if_no_admin(store: &Store, key: &SshKey) -> anyhow::Result<bool> {
    if !admins(store).await?.is_empty() {
        return Ok(false);
    }
    let record_key = store.keys().ssh_key(&key.fingerprint)?;
    match store.create(&record_key, key).await {
        Ok(_) => Ok(true),
        // The same key is already there (under another role): leave it as it is.
        Err(error) if error.conflict().is_some() => Ok(false),
        Err(error) => Err(error.into()),
    }
}

/// The admin keys in the cluster, for the banner.
pub(crate) async fn admins(store: &Store) -> anyhow::Result<Vec<SshKey>> {
    let keys = store.list(&store.keys().ssh_keys()).await?;
    Ok(keys
        .entries
        .into_iter()
        .map(|entry| entry.value)
        .filter(|key| key.role == Role::Admin)
        .collect())
}

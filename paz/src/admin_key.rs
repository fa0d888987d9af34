//! `--admin-key FILE`: records an OpenSSH public key as admin `admin` when the
//! cluster has no admin key yet, so a fresh install can be reached over SSH.

use std::path::Path;

use anyhow::{bail, Context};
use ssh_key::{Algorithm, HashAlg, PublicKey};
use store::records::{Role, SshKey};
use store::Store;

/// Reads and checks the public key in `path`.
pub(crate) fn read(path: &Path) -> anyhow::Result<SshKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read admin key {}", path.display()))?;
    if text.contains("PRIVATE KEY") {
        bail!(
            "{} is a private key: give the public key (the .pub file) to --admin-key",
            path.display()
        );
    }
    let line = text
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with('#'))
        .with_context(|| format!("admin key {} is empty", path.display()))?;
    let key = PublicKey::from_openssh(line).with_context(|| {
        format!(
            "admin key {} is not an OpenSSH public key (a line such as `ssh-ed25519 AAAA... me@host`)",
            path.display()
        )
    })?;
    match key.algorithm() {
        Algorithm::Ed25519 | Algorithm::Ecdsa { .. } | Algorithm::Rsa { .. } => {}
        other => bail!(
            "admin key {} is a {} key: use an ed25519, ECDSA or RSA key",
            path.display(),
            other.as_str()
        ),
    }
    Ok(SshKey {
        name: "admin".to_string(),
        fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
        public_key: line.to_string(),
        role: Role::Admin,
        apps: Vec::new(),
    })
}

/// Adds `key` unless some admin key exists; returns whether it was added.
pub(crate) async fn add_if_no_admin(store: &Store, key: &SshKey) -> anyhow::Result<bool> {
    let keys = store.list(&store.keys().ssh_keys()).await?;
    if keys
        .entries
        .iter()
        .any(|entry| entry.value.role == Role::Admin)
    {
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

//! The server's Ed25519 host key: made on first start, then reused, so clients'
//! known-hosts entries stay valid across restarts.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, PrivateKey};

use crate::GitdError;

/// Reads `<dir>/host_ed25519`, or makes it (and its `.pub`) if it does not exist.
pub(crate) fn load_or_create(dir: &Path) -> Result<PrivateKey, GitdError> {
    let path = dir.join("host_ed25519");
    let io = |source| GitdError::HostKey {
        path: path.clone(),
        reason: format!("{source}"),
    };
    if path.exists() {
        let text = std::fs::read_to_string(&path).map_err(io)?;
        return PrivateKey::from_openssh(&text).map_err(|error| GitdError::HostKey {
            path: path.clone(),
            reason: format!(
                "it is not an OpenSSH private key ({error}); move it away to make a new one"
            ),
        });
    }
    std::fs::create_dir_all(dir).map_err(io)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).map_err(|error| {
        GitdError::HostKey {
            path: path.clone(),
            reason: format!("cannot generate a key: {error}"),
        }
    })?;
    let private = key
        .to_openssh(LineEnding::LF)
        .map_err(|error| GitdError::HostKey {
            path: path.clone(),
            reason: error.to_string(),
        })?;
    let public = key
        .public_key()
        .to_openssh()
        .map_err(|error| GitdError::HostKey {
            path: path.clone(),
            reason: error.to_string(),
        })?;
    // Written whole, so a crash leaves no half key.
    support::write_file(
        &dir.join("host_ed25519.pub"),
        format!("{public}\n").as_bytes(),
    )
    .map_err(io)?;
    support::write_private_file(&path, private.as_bytes()).map_err(io)?;
    Ok(key)
}

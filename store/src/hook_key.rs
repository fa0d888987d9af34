//! The key that seals each token's webhook signing secret in its record
//! (ChaCha20-Poly1305, the token's name as associated data). It lives in the
//! control hosts' data dirs (`hooks.key`, 0600), never in etcd: who reads
//! etcd or a backup of it learns no secret that signs a webhook.

use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngExt;

/// The sealing key of this cluster's webhook secrets.
pub struct HookKey(ChaCha20Poly1305);

impl std::fmt::Debug for HookKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HookKey(..)")
    }
}

impl HookKey {
    /// The key in `path`, made there (32 random bytes, mode 0600, through a
    /// temp file and a rename) if missing.
    pub fn load_or_create(path: &Path) -> std::io::Result<HookKey> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let bytes: [u8; 32] = rand::rng().random();
                crate::etcd_tls::write_private(path, &bytes)?;
                bytes.to_vec()
            }
            Err(error) => return Err(error),
        };
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| {
            std::io::Error::other(format!(
                "{} is not a 32-byte key: restore it from another control host",
                path.display()
            ))
        })?;
        Ok(HookKey(ChaCha20Poly1305::new(&Key::from(bytes))))
    }

    /// `secret` sealed for the token `name`: hex of nonce and ciphertext.
    pub fn seal(&self, name: &str, secret: &[u8]) -> String {
        let nonce: [u8; 12] = rand::rng().random();
        let sealed = self
            .0
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: secret,
                    aad: name.as_bytes(),
                },
            )
            .expect("sealing a short secret in memory does not fail");
        format!("{}{}", hex::encode(nonce), hex::encode(sealed))
    }

    /// The secret sealed for token `name`; `None` if it was sealed with
    /// another key, for another token, or changed.
    pub fn open(&self, name: &str, sealed: &str) -> Option<Vec<u8>> {
        let bytes = hex::decode(sealed).ok()?;
        if bytes.len() < 12 {
            return None;
        }
        let (nonce, sealed) = bytes.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().ok()?;
        self.0
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: sealed,
                    aad: name.as_bytes(),
                },
            )
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::HookKey;

    #[test]
    fn a_sealed_secret_opens_only_for_its_token_and_key() {
        let dir = std::env::temp_dir().join(format!("paz-hook-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = HookKey::load_or_create(&dir.join("a.key")).unwrap();
        let same = HookKey::load_or_create(&dir.join("a.key")).unwrap();
        let other = HookKey::load_or_create(&dir.join("b.key")).unwrap();
        let sealed = key.seal("ci", b"whsec_x");
        assert_eq!(same.open("ci", &sealed).as_deref(), Some(&b"whsec_x"[..]));
        assert_eq!(key.open("admin", &sealed), None);
        assert_eq!(other.open("ci", &sealed), None);
        assert_eq!(key.open("ci", "00"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

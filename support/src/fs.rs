//! Files written whole or not at all: to a temporary file beside the target,
//! synced, then renamed into place (and the directory synced), so that a
//! crash at any point leaves the old file or the new one, never a part.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use atomic_write_file::unix::OpenOptionsExt as _;
use atomic_write_file::OpenOptions;

/// Writes `contents` to `path` atomically, readable as the umask allows.
pub fn write_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    write_with_mode(path, contents, 0o666)
}

/// Writes `contents` to `path` atomically, readable by its owner only
/// (mode 0600), whatever the umask: keys, tokens, certificates.
pub fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    write_with_mode(path, contents, 0o600)
}

fn write_with_mode(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let mut file = OpenOptions::new()
        .mode(mode)
        .preserve_mode(false)
        .open(path)?;
    file.write_all(contents)?;
    file.commit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_file_is_replaced_whole_and_a_private_one_is_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("machine-id");
        write_file(&path, b"first").unwrap();
        write_file(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let secret = dir.path().join("hooks.key");
        write_private_file(&secret, b"k").unwrap();
        let mode = std::fs::metadata(&secret).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Nothing is left beside them.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn a_write_into_a_missing_directory_fails_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("file");
        assert!(write_file(&path, b"x").is_err());
        assert!(!dir.path().join("missing").exists());
    }
}

//! Temporary directories for tests, named after the test process so that a
//! later run can remove what a killed run left behind.

use std::path::Path;
use std::sync::Once;

/// A new temporary directory, removed when dropped.
///
/// The first call in a process also removes directories left by test
/// processes that no longer exist (a killed test never drops its guards).
pub fn temp_dir() -> tempfile::TempDir {
    static SWEEP: Once = Once::new();
    SWEEP.call_once(sweep_stale_dirs);
    tempfile::Builder::new()
        .prefix(&format!("paz-test-{}-", std::process::id()))
        .tempdir()
        .expect("cannot make a temporary directory")
}

fn sweep_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("paz-test-")) else {
            continue;
        };
        let Some(pid) = rest
            .split('-')
            .next()
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

//! `scripts/check-tools`, which `scripts/setup` runs after installing: it
//! names the package to install when protoc cannot find its well-known
//! types. (That it passes on a set-up machine is shown by every run of
//! `scripts/test`, whose setup runs it first; it is not run here as well,
//! because the etcd it starts could take a port that a test running beside
//! it has just picked for its own etcd.)

use std::path::PathBuf;
use std::process::Command;

fn check_tools() -> Command {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/check-tools");
    Command::new(script)
}

/// The protoc on PATH.
fn protoc() -> PathBuf {
    let output = Command::new("sh")
        .args(["-c", "command -v protoc"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "protoc is not on PATH: run scripts/setup"
    );
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

#[test]
fn protoc_without_its_well_known_types_is_named_with_the_package_that_has_them() {
    // protoc finds its well-known types relative to its own binary
    // (`../include`: /usr/include for /usr/bin/protoc, where libprotobuf-dev
    // puts them): a copy with no include beside it stands for a machine
    // without that package.
    let dir = tests::temp_dir();
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let copy = bin.join("protoc");
    std::fs::copy(protoc(), &copy).unwrap();
    let output = check_tools().env("PROTOC", &copy).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr
            .contains("protoc cannot find its well-known types (google/protobuf/descriptor.proto)")
            && stderr.contains("apt-get install libprotobuf-dev"),
        "{stderr}"
    );
}

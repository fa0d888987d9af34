//! The real `git` and `ssh` clients for tests, with a throwaway key, an isolated
//! home and a known-hosts file of the test's own.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::temp::temp_dir;

/// A throwaway SSH identity: key pair, known-hosts file and a home directory
/// that `git` and `ssh` use instead of the user's.
#[derive(Debug)]
pub struct SshIdentity {
    dir: tempfile::TempDir,
    pub private_key: PathBuf,
    /// The OpenSSH one-line public key.
    pub public_key: String,
}

impl SshIdentity {
    /// Makes a key of `kind` (`ed25519`, `ecdsa` or `rsa`) with `ssh-keygen`.
    pub fn new(kind: &str) -> SshIdentity {
        let dir = temp_dir();
        let private_key = dir.path().join(format!("id_{kind}"));
        let output = Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                kind,
                "-N",
                "",
                "-C",
                &format!("paz-test-{kind}"),
                "-f",
            ])
            .arg(&private_key)
            .output()
            .expect("cannot run ssh-keygen: run scripts/test, which installs openssh-client");
        assert!(output.status.success(), "ssh-keygen failed: {output:?}");
        let public_key = std::fs::read_to_string(private_key.with_extension("pub"))
            .expect("ssh-keygen wrote no public key")
            .trim()
            .to_string();
        SshIdentity {
            dir,
            private_key,
            public_key,
        }
    }

    /// The fingerprint as `ssh-keygen -lf` prints it (`SHA256:...`).
    pub fn fingerprint(&self) -> String {
        let output = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(self.private_key.with_extension("pub"))
            .output()
            .expect("cannot run ssh-keygen");
        String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .nth(1)
            .expect("ssh-keygen -lf printed no fingerprint")
            .to_string()
    }

    /// The home directory `git` and `ssh` run with.
    pub fn home(&self) -> &Path {
        self.dir.path()
    }

    /// The `ssh` command line with this identity: only this key, and host keys
    /// remembered in a file of the test's own.
    pub fn ssh_command(&self) -> String {
        format!(
            "ssh -i {} -o IdentitiesOnly=yes -o IdentityAgent=none -o BatchMode=yes -o StrictHostKeyChecking=accept-new -o UserKnownHostsFile={} -o ConnectTimeout=10",
            self.private_key.display(),
            self.dir.path().join("known_hosts").display()
        )
    }

    /// An `ssh -p PORT user@host ARGS...` command with this identity.
    pub fn ssh_to(&self, destination: &str, port: u16, args: &[&str]) -> Command {
        let command = self.ssh_command();
        let mut parts = command.split_whitespace();
        let mut ssh = Command::new(parts.next().expect("ssh"));
        ssh.args(parts)
            .args(["-p", &port.to_string(), destination])
            .args(args)
            .env("HOME", self.home());
        ssh
    }

    /// Runs `ssh -p PORT user@host ARGS...` with this identity and no input.
    pub fn ssh(&self, destination: &str, port: u16, args: &[&str]) -> Output {
        self.ssh_with_input(destination, port, args, b"")
    }

    /// A `git` command in `dir` that uses this identity for SSH remotes.
    pub fn git(&self, dir: &Path) -> Command {
        let mut command = git(dir, self.home());
        command.env("GIT_SSH_COMMAND", self.ssh_command());
        command
    }
}

/// A `git` command in `dir` with an isolated `home`: no system or user config
/// leaks in, and commits have a fixed author.
pub fn git(dir: &Path, home: &Path) -> Command {
    let mut command = Command::new("git");
    command
        .current_dir(dir)
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Paz Test")
        .env("GIT_AUTHOR_EMAIL", "test@paz.localhost")
        .env("GIT_COMMITTER_NAME", "Paz Test")
        .env("GIT_COMMITTER_EMAIL", "test@paz.localhost")
        .env("GIT_TERMINAL_PROMPT", "0");
    command
}

impl SshIdentity {
    /// Runs `ssh -p PORT user@host ARGS...` with `input` on its stdin.
    pub fn ssh_with_input(
        &self,
        destination: &str,
        port: u16,
        args: &[&str],
        input: &[u8],
    ) -> Output {
        use std::io::Write;
        let mut ssh = self.ssh_to(destination, port, args);
        ssh.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = ssh.spawn().expect("cannot run ssh");
        let mut stdin = child.stdin.take().expect("piped");
        stdin.write_all(input).expect("write ssh stdin");
        drop(stdin);
        child.wait_with_output().expect("wait for ssh")
    }
}

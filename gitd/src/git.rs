//! The app repos on disk and the real `git receive-pack` / `git upload-pack`,
//! piped to an SSH channel both ways.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use russh::server::Msg;
use russh::{Channel, ChannelMsg};
use tokio::io::AsyncWriteExt;

use crate::command::GitService;
use crate::hook::HOOK_SCRIPT;

/// Makes the bare repo at `repo` if it is missing (in a temp dir renamed into
/// place, so it appears whole), and installs the current hook.
pub(crate) async fn ensure_repo(repo: &Path) -> Result<(), String> {
    let failed = |what: &str, error: &dyn std::fmt::Display| {
        format!("paz: cannot {what} {}: {error}", repo.display())
    };
    if !repo.exists() {
        let parent = repo.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| failed("create the parent of", &e))?;
        let temp = parent.join(format!(
            ".new-{}-{}",
            repo.file_name().and_then(|n| n.to_str()).unwrap_or("repo"),
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&temp);
        let output = tokio::process::Command::new("git")
            .args(["init", "--bare", "--quiet", "--initial-branch=main"])
            .arg(&temp)
            .output()
            .await
            .map_err(|e| failed("run git init for", &e))?;
        if !output.status.success() {
            return Err(failed("git init", &String::from_utf8_lossy(&output.stderr)));
        }
        install_hook(&temp).map_err(|e| failed("install the hook in", &e))?;
        std::fs::rename(&temp, repo).map_err(|e| failed("move into place", &e))?;
    }
    install_hook(repo).map_err(|e| failed("install the hook in", &e))
}

/// Writes `hooks/pre-receive` unless it is already current.
fn install_hook(repo: &Path) -> std::io::Result<()> {
    let hooks = repo.join("hooks");
    let hook = hooks.join("pre-receive");
    if std::fs::read_to_string(&hook).is_ok_and(|text| text == HOOK_SCRIPT) {
        return Ok(());
    }
    std::fs::create_dir_all(&hooks)?;
    let temp = hooks.join(".pre-receive.tmp");
    std::fs::write(&temp, HOOK_SCRIPT)?;
    std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&temp, &hook)
}

/// Runs `git SERVICE repo` with `env`, its stdin fed from the channel, its
/// stdout and stderr sent to the channel; returns its exit code.
pub(crate) async fn run(
    service: GitService,
    repo: &Path,
    env: Vec<(String, PathBuf)>,
    git_protocol: Option<String>,
    channel: Channel<Msg>,
) -> u32 {
    let mut command = tokio::process::Command::new("git");
    command
        .arg(service.subcommand())
        .arg(repo)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", repo)
        .env("LANG", "C.UTF-8")
        .envs(env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(protocol) = git_protocol {
        command.env("GIT_PROTOCOL", protocol);
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            let message = format!("paz: cannot run git {}: {error}", service.subcommand());
            return crate::server::refuse(channel, &message).await;
        }
    };
    let stdin = child.stdin.take().expect("piped");
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let (mut read_half, write_half) = channel.split();
    let mut out = write_half.make_writer();
    let mut err = write_half.make_writer_ext(Some(1));

    // The client's bytes go to git until the client sends EOF; the channel is
    // read all along, also after that, so the session never stalls.
    let feed = async move {
        let mut stdin = Some(stdin);
        while let Some(message) = read_half.wait().await {
            match message {
                ChannelMsg::Data { data } => {
                    if let Some(pipe) = stdin.as_mut() {
                        if pipe.write_all(&data).await.is_err() {
                            stdin = None;
                        }
                    }
                }
                // Dropping the pipe closes it: git sees the end of its input.
                ChannelMsg::Eof => stdin = None,
                ChannelMsg::Close => break,
                _ => {}
            }
        }
    };
    let feeding = tokio::spawn(feed);
    let copy_out = async {
        let copied = tokio::io::copy(&mut stdout, &mut out).await;
        let _ = out.flush().await;
        copied
    };
    let copy_err = async {
        let copied = tokio::io::copy(&mut stderr, &mut err).await;
        let _ = err.flush().await;
        copied
    };
    let (_, _, status) = tokio::join!(copy_out, copy_err, child.wait());
    feeding.abort();
    let code = status
        .map(|status| status.code().unwrap_or(1) as u32)
        .unwrap_or(1);
    let _ = write_half.exit_status(code).await;
    let _ = write_half.eof().await;
    let _ = write_half.close().await;
    code
}

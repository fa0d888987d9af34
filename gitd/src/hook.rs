//! The `pre-receive` hook, both ends. Each repo's hook runs `paz hook
//! pre-receive`, which sends the ref updates over a Unix socket to the running
//! server and prints the server's lines as they come (git shows them to the
//! pusher as `remote:` lines). The server decides which updates deploy and
//! hands those to the [`DeployHandler`].

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use store::AppName;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::mpsc;
use tracing::{info, warn, Instrument};

use crate::deploy::{Output, Push, Pusher};
use crate::server::Shared;

/// The hook script installed in every repo. It only hands over to Paz: the
/// program and socket come from the environment gitd gives `git receive-pack`.
pub(crate) const HOOK_SCRIPT: &str = r#"#!/bin/sh
# Installed by Paz: hands this push to the Paz server that runs git receive-pack.
if [ -z "$PAZ_HOOK_PROGRAM" ]; then
  echo "pushes to this repository go through Paz's SSH server (ssh://paz@HOST:2222/APP)" >&2
  exit 1
fi
exec "$PAZ_HOOK_PROGRAM" hook pre-receive
"#;

const ZERO_SHA: &str = "0000000000000000000000000000000000000000";

/// git's quarantine variables: the hook needs them to read the pushed objects.
const QUARANTINE_VARIABLES: &[&str] = &[
    "GIT_QUARANTINE_PATH",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
];

#[derive(Debug, Serialize, Deserialize)]
struct HookRequest {
    push: String,
    updates: Vec<RefUpdate>,
    git_env: Vec<(String, String)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RefUpdate {
    old: String,
    new: String,
    name: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum HookReply {
    Line(String),
    Exit(i32),
}

/// The push gitd is running `git receive-pack` for, known by the id it put in
/// the hook's environment (so the hook cannot claim to be someone else).
#[derive(Debug, Clone)]
pub(crate) struct PushContext {
    pub(crate) app: AppName,
    pub(crate) pusher: Pusher,
    pub(crate) repo: std::path::PathBuf,
}

/// `paz hook pre-receive`: the hook's side. Returns the hook's exit code.
pub fn pre_receive_main() -> i32 {
    let (Ok(socket), Ok(push)) = (
        std::env::var("PAZ_HOOK_SOCKET"),
        std::env::var("PAZ_PUSH_ID"),
    ) else {
        eprintln!("paz: this hook runs only under Paz's SSH server");
        return 1;
    };
    let mut input = String::new();
    if std::io::stdin().read_to_string(&mut input).is_err() {
        eprintln!("paz: cannot read the ref updates from git");
        return 1;
    }
    let updates = input
        .lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            Some(RefUpdate {
                old: parts.next()?.to_string(),
                new: parts.next()?.to_string(),
                name: parts.next()?.to_string(),
            })
        })
        .collect();
    let git_env = QUARANTINE_VARIABLES
        .iter()
        .filter_map(|name| Some((name.to_string(), std::env::var(name).ok()?)))
        .collect();
    let request = HookRequest {
        push,
        updates,
        git_env,
    };
    let lost = |error: std::io::Error| {
        eprintln!("paz: lost the connection to the Paz server ({error}); nothing was deployed");
        1
    };
    let mut stream = match UnixStream::connect(&socket) {
        Ok(stream) => stream,
        Err(error) => return lost(error),
    };
    let mut line = serde_json::to_vec(&request).expect("requests always serialize");
    line.push(b'\n');
    if let Err(error) = stream.write_all(&line) {
        return lost(error);
    }
    let stdout = std::io::stdout();
    for line in BufReader::new(stream).lines() {
        let line = match line {
            Ok(line) => line,
            Err(error) => return lost(error),
        };
        match serde_json::from_str::<HookReply>(&line) {
            Ok(HookReply::Line(text)) => {
                let mut out = stdout.lock();
                let _ = writeln!(out, "{text}");
                let _ = out.flush();
            }
            Ok(HookReply::Exit(code)) => return code,
            Err(_) => {
                eprintln!("paz: the Paz server sent something unexpected; nothing was deployed");
                return 1;
            }
        }
    }
    lost(std::io::ErrorKind::UnexpectedEof.into())
}

/// The server's side: answers hook connections until the task is dropped.
pub(crate) async fn serve(listener: UnixListener, shared: Arc<Shared>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(connection) => connection,
            Err(error) => {
                warn!(%error, "hook socket accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(
            async move {
                if let Err(error) = answer(stream, shared).await {
                    warn!(%error, "hook connection failed");
                }
            }
            .instrument(tracing::info_span!("hook")),
        );
    }
}

async fn answer(stream: tokio::net::UnixStream, shared: Arc<Shared>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut request = String::new();
    tokio::io::BufReader::new(read.take(1 << 20))
        .read_line(&mut request)
        .await?;
    let reply = |reply: HookReply| {
        let mut line = serde_json::to_vec(&reply).expect("replies always serialize");
        line.push(b'\n');
        line
    };
    let Ok(request) = serde_json::from_str::<HookRequest>(&request) else {
        write
            .write_all(&reply(HookReply::Line(
                "paz: the hook sent an unreadable request".into(),
            )))
            .await?;
        return write.write_all(&reply(HookReply::Exit(1))).await;
    };
    let Some(context) = shared.push_context(&request.push) else {
        write
            .write_all(&reply(HookReply::Line(
                "paz: this push is not known to the Paz server".into(),
            )))
            .await?;
        return write.write_all(&reply(HookReply::Exit(1))).await;
    };
    let (lines, mut received) = mpsc::channel::<String>(64);
    let decision = decide(&shared, &context, &request).await;
    let deploy = match decision {
        Err(message) => {
            write.write_all(&reply(HookReply::Line(message))).await?;
            return write.write_all(&reply(HookReply::Exit(1))).await;
        }
        Ok((messages, deploy)) => {
            for message in messages {
                write.write_all(&reply(HookReply::Line(message))).await?;
            }
            match deploy {
                None => return write.write_all(&reply(HookReply::Exit(0))).await,
                Some(push) => push,
            }
        }
    };
    info!(app = %deploy.app, sha = %deploy.new_sha, pusher = %deploy.pusher.name, "deploying a push");
    let mut deploying = shared.deploy.deploy(deploy, Output::new(lines));
    // Lines go to the pusher as they come; if the pusher is gone, the write
    // fails and dropping the future cancels the deploy.
    let verdict = loop {
        tokio::select! {
            verdict = &mut deploying => break verdict,
            Some(line) = received.recv() => {
                write.write_all(&reply(HookReply::Line(line))).await?;
            }
        }
    };
    while let Ok(line) = received.try_recv() {
        write.write_all(&reply(HookReply::Line(line))).await?;
    }
    match verdict {
        Ok(()) => write.write_all(&reply(HookReply::Exit(0))).await,
        Err(reason) => {
            write
                .write_all(&reply(HookReply::Line(format!("deploy failed: {reason}"))))
                .await?;
            write.write_all(&reply(HookReply::Exit(1))).await
        }
    }
}

/// Sorts the updates: the messages for branches that are only stored, and the
/// one push to deploy, if any.
async fn decide(
    shared: &Shared,
    context: &PushContext,
    request: &HookRequest,
) -> Result<(Vec<String>, Option<Push>), String> {
    let app = shared
        .store()
        .get(&shared.store().keys().app(&context.app))
        .await
        .map_err(|error| format!("paz: cannot read app {}: {error}", context.app))?
        .ok_or_else(|| format!("paz: app {} was deleted during the push", context.app))?
        .value;
    let deploy_branches: Vec<String> = match &app.deploy.branch {
        Some(branch) => vec![branch.clone()],
        None => vec!["main".to_string(), "master".to_string()],
    };
    let mut messages = Vec::new();
    let mut to_deploy: Vec<&RefUpdate> = Vec::new();
    for update in &request.updates {
        let branch = update.name.strip_prefix("refs/heads/");
        match branch {
            Some(branch) if deploy_branches.iter().any(|b| b == branch) => {
                if update.new == ZERO_SHA {
                    return Err(format!(
                        "paz: {branch} is the deploy branch of {}: it cannot be deleted",
                        context.app
                    ));
                }
                to_deploy.push(update);
            }
            _ => messages.push(format!(
                "stored {}; nothing was deployed (pushes to {} deploy)",
                update.name,
                deploy_branches.join(" or ")
            )),
        }
    }
    if to_deploy.len() > 1 {
        return Err("paz: push one deploy branch at a time".to_string());
    }
    let Some(update) = to_deploy.pop() else {
        return Ok((messages, None));
    };
    let env: HashMap<&str, &str> = request
        .git_env
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    let git_env = QUARANTINE_VARIABLES
        .iter()
        .filter_map(|name| Some((name.to_string(), env.get(name)?.to_string())))
        .collect();
    let push = Push {
        app: context.app.clone(),
        branch: update.name.trim_start_matches("refs/heads/").to_string(),
        old_sha: update.old.clone(),
        new_sha: update.new.clone(),
        pusher: context.pusher.clone(),
        repo: context.repo.clone(),
        git_env,
    };
    Ok((messages, Some(push)))
}

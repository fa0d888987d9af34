//! One SSH connection: public-key auth against `/paz/keys`, then each session
//! channel's `exec` request runs a git service or a verb; `run` attaches
//! the channel to a one-off container (with a TTY when a pty was asked
//! for, its window changes passed on). Shells, subsystems and forwarding
//! are refused.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures::{SinkExt, StreamExt};
use russh::keys::ssh_key::PublicKey;
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelMsg, Pty};
use store::records::SshKey;
use store::{AppName, Store};
use telemetry::attach::Frame;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tracing::{info, warn, Instrument};
use verbs::Caller;

use crate::command::{self, GitService, Request};
use crate::deploy::{DeployHandler, Pusher};
use crate::hook::PushContext;

/// What every connection shares.
pub(crate) struct Shared {
    pub(crate) verbs: verbs::Context,
    pub(crate) deploy: Arc<dyn DeployHandler>,
    /// The program the repo hooks run (`paz`), handed to them in the environment.
    pub(crate) hook_program: PathBuf,
    pub(crate) hook_socket: PathBuf,
    /// Pushes whose `git receive-pack` runs now, by the id given to their hook.
    pushes: Mutex<HashMap<String, PushContext>>,
    /// One lock per app: pushes to an app run one after the other.
    push_locks: support::KeyedLocks<AppName>,
    /// The fingerprints of the keys in `/paz/keys` now (`None` until the
    /// watch has read them): a connection whose key leaves it is closed.
    pub(crate) keys_now: watch::Sender<Option<Arc<std::collections::HashSet<String>>>>,
}

impl Shared {
    pub(crate) fn new(
        verbs: verbs::Context,
        deploy: Arc<dyn DeployHandler>,
        hook_program: PathBuf,
        hook_socket: PathBuf,
    ) -> Shared {
        Shared {
            verbs,
            deploy,
            hook_program,
            hook_socket,
            pushes: Mutex::new(HashMap::new()),
            push_locks: support::KeyedLocks::default(),
            keys_now: watch::channel(None).0,
        }
    }

    /// Keeps [`Shared::keys_now`] current from a watch of `/paz/keys`.
    pub(crate) async fn follow_keys(&self) {
        let prefix = self.store().keys().ssh_keys();
        let mut watch = self.store().watch(&prefix);
        let mut known: HashMap<String, String> = HashMap::new();
        while let Some(event) = watch.next_event().await {
            match event {
                store::WatchEvent::Snapshot { entries, .. } => {
                    known = entries
                        .into_iter()
                        .map(|entry| (entry.key, entry.value.fingerprint))
                        .collect();
                }
                store::WatchEvent::Put { key, value, .. } => {
                    known.insert(key, value.fingerprint);
                }
                store::WatchEvent::Delete { key, .. } | store::WatchEvent::Invalid { key, .. } => {
                    known.remove(&key);
                }
            }
            let fingerprints = known.values().cloned().collect();
            self.keys_now.send_replace(Some(Arc::new(fingerprints)));
        }
    }

    pub(crate) fn store(&self) -> &Store {
        &self.verbs.store
    }

    pub(crate) fn push_context(&self, id: &str) -> Option<PushContext> {
        self.pushes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// The key with this fingerprint, if it may connect.
    async fn find_key(&self, key: &PublicKey) -> Option<SshKey> {
        if !verbs::keys::is_supported(&key.algorithm()) {
            return None;
        }
        self.key_record(&verbs::keys::fingerprint(key)).await
    }

    /// The record of the key with `fingerprint` as `/paz/keys` has it now.
    pub(crate) async fn key_record(&self, fingerprint: &str) -> Option<SshKey> {
        let record_key = self.store().keys().ssh_key(fingerprint).ok()?;
        match self.store().get(&record_key).await {
            Ok(Some(record)) if record.value.fingerprint == fingerprint => Some(record.value),
            Ok(_) => None,
            Err(error) => {
                warn!(%error, "cannot check a key against the store; refusing it");
                None
            }
        }
    }
}

/// Removes a push from [`Shared::pushes`] when its `git receive-pack` ends.
struct PushRegistration<'a> {
    shared: &'a Shared,
    id: String,
}

impl Drop for PushRegistration<'_> {
    fn drop(&mut self) {
        self.shared
            .pushes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

/// At most this many session channels per connection.
const MAX_CHANNELS: usize = 4;

/// The state of one client connection.
pub(crate) struct Connection {
    shared: Arc<Shared>,
    peer: String,
    key: Option<SshKey>,
    /// Opened session channels waiting for their request.
    channels: HashMap<ChannelId, Channel<Msg>>,
    /// `GIT_PROTOCOL` sent by the client, per channel.
    git_protocol: HashMap<ChannelId, String>,
    /// The terminal size (if known) of each channel that asked for a pty.
    ptys: HashMap<ChannelId, Option<(u16, u16)>>,
    /// Set once the client has asked for something; the handshake timeout ends then.
    started: watch::Sender<bool>,
    /// The authenticated key's fingerprint, for the connection's loop, which
    /// closes the connection when that key is removed.
    pub(crate) fingerprint: Arc<Mutex<Option<String>>>,
}

impl Connection {
    pub(crate) fn new(
        shared: Arc<Shared>,
        peer: String,
        started: watch::Sender<bool>,
    ) -> Connection {
        Connection {
            shared,
            peer,
            key: None,
            channels: HashMap::new(),
            git_protocol: HashMap::new(),
            ptys: HashMap::new(),
            started,
            fingerprint: Arc::default(),
        }
    }
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        // Only keys Paz knows are worth a signature check.
        Ok(match self.shared.find_key(offer.public_key).await {
            Some(_) => Auth::Accept,
            None => Auth::reject(),
        })
    }

    async fn auth_publickey(
        &mut self,
        _user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        match self.shared.find_key(key.public_key).await {
            Some(record) => {
                info!(peer = %self.peer, key = %record.name, "authenticated");
                *self.fingerprint.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(record.fingerprint.clone());
                self.key = Some(record);
                Ok(Auth::Accept)
            }
            None => {
                info!(peer = %self.peer, fingerprint = %verbs::keys::fingerprint(key.public_key), "refused an unknown key");
                Ok(Auth::reject())
            }
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.key.is_some() && self.channels.len() < MAX_CHANNELS {
            self.channels.insert(channel.id(), channel);
            reply.accept().await;
        }
        // Otherwise dropping `reply` refuses the channel.
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        col_width: u32,
        row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if !self.channels.contains_key(&channel) {
            return session.channel_failure(channel);
        }
        // `run` gives its container a TTY of this size (0: the client does
        // not know it); other verbs end their lines with CRLF for the raw
        // terminal.
        self.ptys.insert(channel, term_size(col_width, row_height));
        session.channel_success(channel)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let valid = value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '=' | ':' | '.' | '-' | '_'));
        if name == "GIT_PROTOCOL" && valid && value.len() <= 128 {
            self.git_protocol.insert(channel, value.to_string());
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(channel_handle) = self.channels.remove(&channel) else {
            return session.channel_failure(channel);
        };
        session.channel_success(channel)?;
        let _ = self.started.send(true);
        let name = self
            .key
            .as_ref()
            .map(|key| key.name.clone())
            .unwrap_or_default();
        tokio::spawn(async move {
            let message = format!(
                "paz: hello {name}; there is no shell here: run `ssh -p PORT paz@HOST help` to list the verbs"
            );
            refuse(channel_handle, &message).await;
        });
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        _name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let (Some(channel_handle), Some(key)) = (self.channels.remove(&channel), self.key.clone())
        else {
            return session.channel_failure(channel);
        };
        session.channel_success(channel)?;
        let _ = self.started.send(true);
        let git_protocol = self.git_protocol.remove(&channel);
        let pty = self.ptys.remove(&channel);
        let shared = self.shared.clone();
        let command = data.to_vec();
        let span = tracing::info_span!("exec", peer = %self.peer, key = %key.name);
        tokio::spawn(
            CRLF.scope(
                pty.is_some(),
                async move {
                    let request = Exec {
                        command: &command,
                        git_protocol,
                        pty,
                    };
                    let code = execute(&shared, &key, channel_handle, request).await;
                    info!(code, command = %String::from_utf8_lossy(&command), "done");
                }
                .instrument(span),
            ),
        );
        Ok(())
    }
}

tokio::task_local! {
    /// The channel has a pty: the client's terminal is raw, so lines end
    /// with CRLF.
    static CRLF: bool;
}

/// `text` with its line ends as the channel's terminal wants them.
fn line_ends(text: &str) -> std::borrow::Cow<'_, str> {
    if CRLF.try_with(|crlf| *crlf).unwrap_or(false) {
        std::borrow::Cow::Owned(text.replace('\n', "\r\n"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// A terminal size as Docker takes it (at most 1000 × 1000); `None` when
/// the client does not know it (0).
fn term_size(cols: u32, rows: u32) -> Option<(u16, u16)> {
    (cols > 0 && rows > 0).then(|| (cols.min(1000) as u16, rows.min(1000) as u16))
}

/// What an exec request asked for.
struct Exec<'a> {
    command: &'a [u8],
    git_protocol: Option<String>,
    /// A pty was asked for, with its columns and rows if known.
    pty: Option<Option<(u16, u16)>>,
}

/// Writes `message` as one line on the channel's stderr and ends the channel
/// with exit status 1.
pub(crate) async fn refuse(channel: Channel<Msg>, message: &str) -> u32 {
    finish(channel, "", message, 1).await
}

/// Writes `stdout` and `stderr` text, then the exit status, and closes.
async fn finish(channel: Channel<Msg>, stdout: &str, stderr: &str, code: u32) -> u32 {
    let (_, write_half) = channel.split();
    if !stdout.is_empty() {
        let mut out = write_half.make_writer();
        let _ = out
            .write_all(line_ends(&format!("{stdout}\n")).as_bytes())
            .await;
        let _ = out.flush().await;
    }
    if !stderr.is_empty() {
        let mut err = write_half.make_writer_ext(Some(1));
        let _ = err
            .write_all(line_ends(&format!("{stderr}\n")).as_bytes())
            .await;
        let _ = err.flush().await;
    }
    let _ = write_half.exit_status(code).await;
    let _ = write_half.eof().await;
    let _ = write_half.close().await;
    code
}

/// Runs what the client asked for on its channel; returns the exit code.
/// The key is read again first: a key removed (or whose rights changed)
/// since the connection was made is held to what `/paz/keys` says now.
async fn execute(shared: &Shared, key: &SshKey, channel: Channel<Msg>, request: Exec<'_>) -> u32 {
    let Exec {
        command,
        git_protocol,
        pty,
    } = request;
    let Some(key) = shared.key_record(&key.fingerprint).await else {
        return refuse(
            channel,
            &format!(
                "paz: key `{}` has been removed: ask an admin to add it again (ssh-keys:add)",
                key.name
            ),
        )
        .await;
    };
    let key = &key;
    match command::parse(command) {
        Err(message) => refuse(channel, &format!("paz: {message}")).await,
        Ok(Request::Git { service, app }) => {
            serve_git(shared, key, channel, service, app, git_protocol).await
        }
        Ok(Request::Verb { verb, args, .. }) if verb == "run" => {
            run_attached(shared, key, channel, &args, pty).await
        }
        Ok(Request::Verb { verb, args, json }) => {
            run_verb(shared, key, channel, &verb, &args, json).await
        }
    }
}

/// Largest stdin a verb accepts (a public key is well under this).
const MAX_VERB_INPUT: usize = 64 * 1024;

async fn run_verb(
    shared: &Shared,
    key: &SshKey,
    mut channel: Channel<Msg>,
    verb: &str,
    args: &[String],
    json: bool,
) -> u32 {
    let mut input = Vec::new();
    if verbs::find(verb).is_some_and(|spec| spec.reads_stdin) {
        while let Some(message) = channel.wait().await {
            match message {
                ChannelMsg::Data { data } => {
                    input.extend_from_slice(&data);
                    if input.len() > MAX_VERB_INPUT {
                        return refuse(channel, "paz: the input is too large").await;
                    }
                }
                ChannelMsg::Eof | ChannelMsg::Close => break,
                _ => {}
            }
        }
    }
    let caller = Caller::from_key(key);
    if verb == "logs" && !json {
        return stream_logs(shared, &caller, channel, args).await;
    }
    match verbs::run(&shared.verbs, &caller, verb, args, &input).await {
        Ok(outcome) => {
            let text = if json {
                serde_json::to_string_pretty(&outcome.json).unwrap_or_default()
            } else {
                outcome.text
            };
            finish(channel, &text, "", 0).await
        }
        Err(error) => refuse(channel, &format!("paz: {error}")).await,
    }
}

/// How an attached run ended.
enum Ended {
    Exit(u32),
    /// It could not go on: said to the client, exit status 1.
    Said(String),
    ClientGone,
}

/// Input frames waiting for the one-off to take them (an SSH packet holds
/// at most 32 KiB: 16 MiB).
const INPUT_QUEUE: usize = 512;

/// `run APP COMMAND...`: a one-off container attached to the channel:
/// stdin in, stdout and stderr out on their own streams (one stream under
/// a TTY), window changes passed on, its exit code the channel's. The
/// client going away stops and removes it.
async fn run_attached(
    shared: &Shared,
    key: &SshKey,
    channel: Channel<Msg>,
    args: &[String],
    pty: Option<Option<(u16, u16)>>,
) -> u32 {
    let caller = Caller::from_key(key);
    let Some((app, command)) = args.split_first() else {
        return refuse(channel, "paz: usage: run APP COMMAND...").await;
    };
    let context = &shared.verbs;
    let started =
        match verbs::runs::start_attached(context, &caller, app, command, pty.is_some()).await {
            Ok(started) => started,
            Err(error) => return refuse(channel, &format!("paz: {error}")).await,
        };
    let frames = match started.attach(context, pty.flatten()).await {
        Ok(frames) => frames,
        Err(error) => return refuse(channel, &format!("paz: {error}")).await,
    };
    info!(app = %started.app, run = %started.id, "one-off attached");
    let (mut read_half, write_half) = channel.split();
    let mut out = write_half.make_writer_ext(None);
    let mut err = write_half.make_writer_ext(Some(1));
    let (mut sink, mut stream) = frames.split();
    // The channel is read all the time (a channel left unread stalls the
    // whole session); what the command has not taken yet waits here.
    let (queue, mut queued) = tokio::sync::mpsc::channel::<Frame>(INPUT_QUEUE);
    let ended = {
        let from_client = async {
            loop {
                let frame = match read_half.wait().await {
                    Some(ChannelMsg::Data { data }) => {
                        Frame::Stdin(bytes::Bytes::copy_from_slice(&data))
                    }
                    Some(ChannelMsg::Eof) => Frame::StdinEnd,
                    Some(ChannelMsg::WindowChange {
                        col_width,
                        row_height,
                        ..
                    }) => match term_size(col_width, row_height) {
                        Some((cols, rows)) => Frame::Resize { cols, rows },
                        None => continue,
                    },
                    // The client went away: dropping `started` ends the run.
                    None | Some(ChannelMsg::Close) => return Ended::ClientGone,
                    Some(_) => continue,
                };
                if queue.try_send(frame).is_err() {
                    return Ended::Said(
                        "the input came faster than the command read it (over 16 MiB waiting): the run is stopped".into(),
                    );
                }
            }
        };
        let to_agent = async {
            while let Some(frame) = queued.recv().await {
                if sink.send(frame).await.is_err() {
                    break;
                }
            }
            std::future::pending::<Ended>().await
        };
        let to_client = async {
            loop {
                let (to, data) = match stream.next().await {
                    Some(Ok(Frame::Stdout(data))) => (&mut out, data),
                    Some(Ok(Frame::Stderr(data))) => (&mut err, data),
                    Some(Ok(Frame::Exit(code))) => {
                        return Ended::Exit(u8::try_from(code).map_or(255, u32::from))
                    }
                    Some(Ok(Frame::Failed(reason))) => return Ended::Said(reason),
                    Some(Ok(_)) | Some(Err(_)) | None => {
                        return Ended::Said(format!(
                            "the connection to run.{}'s machine was lost",
                            started.id
                        ))
                    }
                };
                let written = match to.write_all(&data).await {
                    Ok(()) => to.flush().await,
                    Err(error) => Err(error),
                };
                if written.is_err() {
                    return Ended::ClientGone;
                }
            }
        };
        tokio::select! {
            ended = from_client => ended,
            ended = to_agent => ended,
            ended = to_client => ended,
        }
    };
    // Nothing reads the channel any more: its input is dropped from here
    // on, so a client still sending cannot stall the session's last words.
    drop(read_half);
    let code = match ended {
        Ended::Exit(code) => code,
        Ended::Said(reason) => {
            let said = line_ends(&format!("paz: {reason}\n")).into_owned();
            let _ = err.write_all(said.as_bytes()).await;
            1
        }
        // Dropping `started` ends the run.
        Ended::ClientGone => return 0,
    };
    let _ = out.flush().await;
    let _ = err.flush().await;
    let _ = write_half.exit_status(code).await;
    let _ = write_half.eof().await;
    let _ = write_half.close().await;
    code
}

/// `logs`: each line on stdout as it comes, what is said about the stream
/// (a machine that cannot be reached) on stderr; followed, until the client
/// goes away.
async fn stream_logs(
    shared: &Shared,
    caller: &Caller,
    channel: Channel<Msg>,
    args: &[String],
) -> u32 {
    let mut stream = match verbs::logs::stream(&shared.verbs, caller, args).await {
        Ok(stream) => stream,
        Err(error) => return refuse(channel, &format!("paz: {error}")).await,
    };
    let (mut read_half, write_half) = channel.split();
    // Both typed alike, so that one loop writes either.
    let mut out = write_half.make_writer_ext(None);
    let mut err = write_half.make_writer_ext(Some(1));
    let (mut lines, mut notices) = (String::new(), String::new());
    loop {
        tokio::select! {
            event = stream.events.recv() => {
                let Some(event) = event else { break };
                // What is ready goes in one write per stream, not one each.
                let mut next = Some(event);
                while let Some(event) = next {
                    match event {
                        verbs::logs::LogEvent::Line(line) => {
                            lines.push_str(&line_ends(&format!("{line}\n")));
                        }
                        verbs::logs::LogEvent::Notice(notice) => {
                            notices.push_str(&line_ends(&format!("paz: {notice}\n")));
                        }
                    }
                    next = if lines.len() < 64 * 1024 { stream.events.try_recv().ok() } else { None };
                }
                for (text, to) in [(&mut lines, &mut out), (&mut notices, &mut err)] {
                    if text.is_empty() {
                        continue;
                    }
                    let written = match to.write_all(text.as_bytes()).await {
                        Ok(()) => to.flush().await,
                        Err(error) => Err(error),
                    };
                    if written.is_err() {
                        return 0;
                    }
                    text.clear();
                }
            }
            message = read_half.wait() => {
                // Under a pty, Ctrl-C is a byte (0x03) to the server: it ends the follow.
                let interrupted = matches!(&message, Some(ChannelMsg::Data { data }) if data.contains(&3u8))
                    && CRLF.try_with(|crlf| *crlf).unwrap_or(false);
                if interrupted || matches!(message, None | Some(ChannelMsg::Close)) {
                    // The client went away: the stream (and its requests) goes too.
                    return 0;
                }
            }
        }
    }
    let _ = write_half.exit_status(0).await;
    let _ = write_half.eof().await;
    let _ = write_half.close().await;
    0
}

async fn serve_git(
    shared: &Shared,
    key: &SshKey,
    channel: Channel<Msg>,
    service: GitService,
    app: AppName,
    git_protocol: Option<String>,
) -> u32 {
    let caller = Caller::from_key(key);
    if let Err(error) = caller.require_app(&app) {
        return refuse(channel, &format!("paz: {error}")).await;
    }
    let store = shared.store();
    let exists = match store.get(&store.keys().app(&app)).await {
        Ok(record) => record.is_some(),
        Err(error) => return refuse(channel, &format!("paz: {error}")).await,
    };
    let repo = shared.verbs.repo_path(&app);
    if service == GitService::UploadPack {
        if !exists {
            return refuse(channel, &format!("paz: app `{app}` does not exist")).await;
        }
        if !repo.exists() {
            return refuse(
                channel,
                &format!("paz: app `{app}` has no code yet: push to it first"),
            )
            .await;
        }
        return crate::git::run(service, &repo, Vec::new(), git_protocol, channel).await;
    }

    if !exists {
        if !caller.is_admin() {
            let message = format!(
                "paz: app `{app}` does not exist, and `{}` may not create apps: an admin can run apps:create {app}",
                key.name
            );
            return refuse(channel, &message).await;
        }
        match verbs::create_app(&shared.verbs, &app).await {
            Ok(()) => info!(%app, "app created by its first push"),
            Err(verbs::VerbError::Conflict(_)) => {}
            Err(error) => return refuse(channel, &format!("paz: {error}")).await,
        }
    }

    let _turn = shared
        .push_locks
        .lock_or_say(&app, || async {
            let mut err = channel.make_writer_ext(Some(1));
            let _ = err
                .write_all(
                    format!("paz: waiting for another push to {app} to finish...\n").as_bytes(),
                )
                .await;
            let _ = err.flush().await;
        })
        .await;
    if let Err(message) = crate::git::ensure_repo(&repo).await {
        return refuse(channel, &message).await;
    }
    let push_id = hex::encode(rand::random::<[u8; 16]>());
    shared
        .pushes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(
            push_id.clone(),
            PushContext {
                app: app.clone(),
                pusher: Pusher {
                    name: key.name.clone(),
                    fingerprint: key.fingerprint.clone(),
                    apps: (!Caller::from_key(key).is_admin()).then(|| key.apps.clone()),
                },
                repo: repo.clone(),
            },
        );
    let _registration = PushRegistration {
        shared,
        id: push_id.clone(),
    };
    let env = vec![
        ("PAZ_HOOK_PROGRAM".to_string(), shared.hook_program.clone()),
        ("PAZ_HOOK_SOCKET".to_string(), shared.hook_socket.clone()),
        ("PAZ_PUSH_ID".to_string(), PathBuf::from(push_id)),
    ];
    crate::git::run(service, &repo, env, git_protocol, channel).await
}

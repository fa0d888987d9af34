//! `logs APP [-n N] [-f] [--since T] [--process P] [--instance web.N]`: an
//! app's lines from every machine that keeps some, merged by time. Each
//! machine's agent endpoint is asked (with the cluster's agent secret);
//! followed, new machines are asked as they join, and a machine that
//! cannot be reached is said once and asked again while it stays
//! registered, the others followed meanwhile.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;
use store::records::Machine;
use store::{AppName, WatchEvent};
use telemetry::{AgentClient, Event, Line, MachineLine, Query};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::apps::load;
use crate::args::Args;
use crate::{Caller, Context, VerbError};

/// What a `logs` stream sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogEvent {
    Line(MachineLine),
    /// Something about the stream itself (a machine that cannot be reached).
    Notice(String),
}

/// A running `logs`: its events until it ends (or, followed, until dropped).
#[derive(Debug)]
pub struct LogStream {
    pub app: AppName,
    pub follow: bool,
    pub events: mpsc::Receiver<LogEvent>,
    task: JoinHandle<()>,
}

impl Drop for LogStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `logs` as one answer (the front doors that cannot stream): the lines
/// and what was said about them.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LogLines {
    pub lines: Vec<MachineLine>,
    pub notices: Vec<String>,
}

impl std::fmt::Display for LogLines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let notices = self.notices.iter().map(|notice| format!("({notice})"));
        crate::lines_or(
            f,
            self.lines.iter().map(ToString::to_string).chain(notices),
            "no lines kept yet",
        )
    }
}

/// How long the kept lines of every machine are waited for.
const HISTORY_WAIT: Duration = Duration::from_secs(10);
/// Between tries of a machine that cannot be reached.
const RETRY: Duration = Duration::from_secs(2);

/// Reads `logs`' arguments: the app and the query.
fn parse(args: &Args) -> Result<(String, Query), VerbError> {
    let mut query = Query {
        lines: Query::DEFAULT_LINES,
        ..Query::default()
    };
    let mut app = None;
    let mut words = args.raw().iter();
    let value = |words: &mut std::slice::Iter<'_, String>, flag: &str| {
        words
            .next()
            .cloned()
            .ok_or_else(|| VerbError::Invalid(format!("{flag} needs a value: usage: logs APP [-n N] [-f] [--since TIME] [--process P] [--instance web.N]")))
    };
    while let Some(word) = words.next() {
        let (flag, inline) = match word.split_once('=') {
            Some((flag, value)) if flag.starts_with('-') => (flag, Some(value.to_string())),
            _ => (word.as_str(), None),
        };
        let take = |words: &mut std::slice::Iter<'_, String>| match inline.clone() {
            Some(value) => Ok(value),
            None => value(words, flag),
        };
        match flag {
            "-n" | "--num" | "--lines" => {
                let given = take(&mut words)?;
                query.lines = given
                    .parse()
                    .ok()
                    .filter(|n| *n <= Query::MAX_LINES)
                    .ok_or_else(|| {
                        VerbError::Invalid(format!(
                            "-n `{given}` is not a number of lines from 0 to {}",
                            Query::MAX_LINES
                        ))
                    })?;
            }
            "-f" | "--follow" | "--tail" => query.follow = true,
            "--since" => query.since = Some(since(&take(&mut words)?)?),
            "--process" | "-p" => {
                let process = take(&mut words)?;
                if !valid_process(&process) {
                    return Err(VerbError::Invalid(format!(
                        "--process `{process}` is not a process type such as web or worker"
                    )));
                }
                query.process = Some(process);
            }
            "--instance" | "-i" => {
                let instance = take(&mut words)?;
                // `web.2`, or a one-off's `run.a1b2c3d4`.
                let valid = instance.split_once('.').is_some_and(|(process, n)| {
                    (valid_process(process) && n.parse::<u32>().is_ok())
                        || (process == "run" && units::check_run_id(n).is_ok())
                });
                if !valid {
                    return Err(VerbError::Invalid(format!(
                        "--instance `{instance}` is not an instance such as web.2 or run.a1b2c3d4"
                    )));
                }
                query.instance = Some(instance);
            }
            other if other.starts_with('-') => {
                return Err(VerbError::Invalid(format!(
                    "unknown option `{other}`: usage: logs APP [-n N] [-f] [--since TIME] [--process P] [--instance web.N]"
                )))
            }
            _ if app.is_none() => app = Some(word.clone()),
            _ => return Err(args.usage()),
        }
    }
    let app = app.ok_or_else(|| args.usage())?;
    Ok((app, query))
}

fn valid_process(process: &str) -> bool {
    store::names::check_process_type(process).is_ok()
}

/// `--since`: a time (`2026-12-01T10:00:00Z`) or how long ago (`10m`, `2h`).
fn since(text: &str) -> Result<i64, VerbError> {
    if let Ok(ago) = humantime::parse_duration(text) {
        let now = std::time::SystemTime::now();
        let at = now.checked_sub(ago).unwrap_or(std::time::UNIX_EPOCH);
        return Ok(nanos(at));
    }
    humantime::parse_rfc3339_weak(text)
        .map(nanos)
        .map_err(|_| {
            VerbError::Invalid(format!(
                "--since `{text}` is neither a time such as 2026-12-01T10:00:00Z nor a duration such as 10m"
            ))
        })
}

fn nanos(at: std::time::SystemTime) -> i64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Starts `logs ARGS` for `caller`: the caller's rights on the app are
/// checked before any machine is asked.
pub async fn stream(
    context: &Context,
    caller: &Caller,
    args: &[String],
) -> Result<LogStream, VerbError> {
    let verb = crate::find("logs").ok_or_else(|| VerbError::UnknownVerb("logs".into()))?;
    start(context, caller, Args::new(verb, args)).await
}

async fn start(context: &Context, caller: &Caller, args: Args) -> Result<LogStream, VerbError> {
    let (name, query) = parse(&args)?;
    let (app, _) = load(context, caller, &name).await?;
    let keys = context.store.keys();
    let Some(secret) = context.store.get(&keys.agent_secret()).await? else {
        return Err(VerbError::NotFound(
            "no agent has started in this cluster yet, so no logs are kept: start paz agent (or paz up) on a host".into(),
        ));
    };
    let client = AgentClient::new(&secret.value);
    let machines = context.store.list(&keys.machines()).await?;
    let (sender, events) = mpsc::channel(1024);
    let follow = query.follow;
    let found: Vec<(String, Machine)> = machines
        .entries
        .into_iter()
        .map(|entry| {
            (
                keys.machines().child_name(&entry.key).to_string(),
                entry.value,
            )
        })
        .collect();
    let watch = follow.then(|| {
        context
            .store
            .watch_from(&keys.machines(), machines.revision + 1)
    });
    let prefix = keys.machines();
    let task = tokio::spawn(merge(
        client,
        app.clone(),
        query,
        found,
        watch.map(|watch| (watch, prefix)),
        sender,
    ));
    Ok(LogStream {
        app,
        follow,
        events,
        task,
    })
}

/// `logs` as one answer.
pub(crate) async fn collect(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<LogLines, VerbError> {
    let stream = start(context, caller, args).await?;
    if stream.follow {
        return Err(VerbError::Invalid(
            "-f streams: follow logs over SSH, with paz logs -f, or GET /api/v1/apps/APP/logs?follow=true".into(),
        ));
    }
    Ok(stream.gather().await)
}

impl LogStream {
    /// Every event until the stream ends, as one answer (of a stream that
    /// does not follow: one that does ends only when dropped).
    pub async fn gather(mut self) -> LogLines {
        let mut lines = LogLines {
            lines: Vec::new(),
            notices: Vec::new(),
        };
        while let Some(event) = self.events.recv().await {
            match event {
                LogEvent::Line(line) => lines.lines.push(line),
                LogEvent::Notice(notice) => lines.notices.push(notice),
            }
        }
        lines
    }
}

/// What a machine's task tells the merge.
enum FromMachine {
    /// Lines, in the order the machine sent them.
    Lines(Vec<Line>),
    Notice(String),
    /// Every kept line was sent (or the stream ended, unfollowed).
    Kept,
    /// It cannot be reached (said once until it answers again).
    Broke(String),
    Back,
}

fn short(machine: &str) -> String {
    machine.chars().take(8).collect()
}

async fn merge(
    client: AgentClient,
    app: AppName,
    query: Query,
    machines: Vec<(String, Machine)>,
    mut watch: Option<(store::Watch<Machine>, store::Prefix<Machine>)>,
    out: mpsc::Sender<LogEvent>,
) {
    let (sender, mut from) = mpsc::channel::<(String, FromMachine)>(4096);
    let mut tasks = Tasks::default();
    let mut waiting: Vec<String> = Vec::new();
    for (id, machine) in machines {
        let Some(endpoint) = machine.endpoint else {
            continue;
        };
        waiting.push(id.clone());
        let task = tokio::spawn(ask(
            client.clone(),
            id.clone(),
            endpoint.clone(),
            app.to_string(),
            query.clone(),
            sender.clone(),
        ));
        tasks.insert(id, (endpoint, task));
    }
    // The kept lines of every machine, merged by time, the newest `lines`.
    let mut kept: Vec<MachineLine> = Vec::new();
    let mut early: Vec<MachineLine> = Vec::new();
    let deadline = tokio::time::Instant::now() + HISTORY_WAIT;
    while !waiting.is_empty() {
        let Ok(Some((machine, said))) = tokio::time::timeout_at(deadline, from.recv()).await else {
            for machine in waiting.drain(..) {
                let _ = out
                    .send(LogEvent::Notice(format!(
                        "machine {} did not send its lines within {}s: left out",
                        short(&machine),
                        HISTORY_WAIT.as_secs()
                    )))
                    .await;
            }
            break;
        };
        let line = |line| MachineLine {
            app: app.to_string(),
            machine: machine.clone(),
            line,
        };
        let still_waiting = waiting.contains(&machine);
        match said {
            FromMachine::Lines(lines) if still_waiting => kept.extend(lines.into_iter().map(line)),
            FromMachine::Lines(lines) => early.extend(lines.into_iter().map(line)),
            FromMachine::Notice(notice) => {
                let _ = out
                    .send(LogEvent::Notice(format!(
                        "machine {}: {notice}",
                        short(&machine)
                    )))
                    .await;
            }
            FromMachine::Kept | FromMachine::Back => waiting.retain(|m| *m != machine),
            FromMachine::Broke(error) => {
                waiting.retain(|m| *m != machine);
                let _ = out
                    .send(LogEvent::Notice(unreachable(
                        &machine,
                        &error,
                        query.follow,
                    )))
                    .await;
            }
        }
    }
    kept.sort_by_key(|line| line.line.t);
    let skip = kept.len().saturating_sub(query.lines);
    for line in kept.into_iter().skip(skip).chain(early) {
        if out.send(LogEvent::Line(line)).await.is_err() {
            return;
        }
    }
    let Some((watch, prefix)) = watch.as_mut() else {
        return;
    };
    // Followed: every new line as it comes, from every machine that joins.
    let joined_query = Query {
        lines: Query::MAX_LINES,
        since: Some(nanos(std::time::SystemTime::now()) - 2_000_000_000).max(query.since),
        ..query.clone()
    };
    // The time of the newest line each machine sent: where a machine whose
    // agent came back at another address is asked from.
    let mut newest: HashMap<String, i64> = HashMap::new();
    loop {
        tokio::select! {
            said = from.recv() => {
                let Some((machine, said)) = said else { break };
                let event = match said {
                    FromMachine::Lines(lines) => {
                        if let Some(t) = lines.iter().map(|line| line.t).max() {
                            let seen = newest.entry(machine.clone()).or_insert(t);
                            *seen = (*seen).max(t);
                        }
                        for line in lines {
                            let line = MachineLine { app: app.to_string(), machine: machine.clone(), line };
                            if out.send(LogEvent::Line(line)).await.is_err() {
                                return;
                            }
                        }
                        continue;
                    }
                    FromMachine::Notice(notice) => LogEvent::Notice(format!("machine {}: {notice}", short(&machine))),
                    FromMachine::Broke(error) => LogEvent::Notice(unreachable(&machine, &error, true)),
                    FromMachine::Back => LogEvent::Notice(format!("machine {} answers again: following it", short(&machine))),
                    FromMachine::Kept => continue,
                };
                if out.send(event).await.is_err() {
                    break;
                }
            }
            event = watch.next_event() => {
                let Some(event) = event else { break };
                match event {
                    WatchEvent::Put { key, value, .. } => {
                        let id = prefix.child_name(&key).to_string();
                        let Some(endpoint) = value.endpoint else { continue };
                        let asked = tasks.get(&id).filter(|(_, task)| !task.is_finished());
                        if asked.is_some_and(|(at, _)| *at == endpoint) {
                            continue;
                        }
                        // A new machine, or its agent back at another address.
                        let said = if asked.is_some() { "is back at another address" } else { "joined" };
                        let _ = out.send(LogEvent::Notice(format!("machine {} {said}: following it", short(&id)))).await;
                        let mut query = joined_query.clone();
                        if let Some(t) = newest.get(&id) {
                            query.after = Some(*t);
                        }
                        let task = tokio::spawn(ask(client.clone(), id.clone(), endpoint.clone(), app.to_string(), query, sender.clone()));
                        if let Some((_, old)) = tasks.insert(id, (endpoint, task)) {
                            old.abort();
                        }
                    }
                    WatchEvent::Delete { key, .. } => {
                        let id = prefix.child_name(&key).to_string();
                        if let Some((_, task)) = tasks.remove(&id) {
                            task.abort();
                            let _ = out.send(LogEvent::Notice(format!("machine {} left the cluster (its agent stopped or lost etcd): its lines stay on it", short(&id)))).await;
                        }
                    }
                    _ => {}
                }
            }
            () = out.closed() => break,
        }
    }
}

/// The tasks asking each machine, by machine: aborted with the merge
/// (however it ends, or when its stream is dropped), so that no request
/// to an agent outlives its reader.
#[derive(Default)]
struct Tasks(HashMap<String, (String, JoinHandle<()>)>);

impl std::ops::Deref for Tasks {
    type Target = HashMap<String, (String, JoinHandle<()>)>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Tasks {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for (_, task) in self.0.values() {
            task.abort();
        }
    }
}

fn unreachable(machine: &str, error: &str, follow: bool) -> String {
    if follow {
        format!(
            "machine {} cannot be reached ({error}): following the others, and asking it again",
            short(machine)
        )
    } else {
        format!(
            "machine {} cannot be reached ({error}): its lines are left out",
            short(machine)
        )
    }
}

/// Asks one machine for its lines; followed, asks again after a break,
/// from the last line it sent.
async fn ask(
    client: AgentClient,
    machine: String,
    endpoint: String,
    app: String,
    mut query: Query,
    to: mpsc::Sender<(String, FromMachine)>,
) {
    use futures::{FutureExt, StreamExt};
    let mut broken = false;
    loop {
        let said = match client.logs(&endpoint, &app, &query).await {
            Ok(events) => {
                let mut events = std::pin::pin!(events);
                if broken {
                    broken = false;
                    if to.send((machine.clone(), FromMachine::Back)).await.is_err() {
                        return;
                    }
                }
                let mut ended = None;
                let mut lines = Vec::new();
                while let Some(first) = events.next().await {
                    // What was received already goes on together: the
                    // lines as one message, before whatever follows them.
                    let mut next = Some(first);
                    while let Some(event) = next.take() {
                        let message = match event {
                            Ok(Event::Line(line)) => {
                                // The newest time sent: the file is in the order
                                // lines were copied, nearly but not quite by time.
                                query.after = query.after.max(Some(line.t));
                                lines.push(line);
                                None
                            }
                            Ok(Event::Notice(notice)) => Some(FromMachine::Notice(notice)),
                            Ok(Event::Live) => {
                                // Kept lines sent: a resumed follow asks from now
                                // on, not for every kept line again.
                                if query.after.is_none() {
                                    query.after = Some(nanos(std::time::SystemTime::now()));
                                }
                                Some(FromMachine::Kept)
                            }
                            Err(error) => {
                                ended = Some(error.to_string());
                                None
                            }
                        };
                        if message.is_some() || ended.is_some() || lines.len() >= 4096 {
                            let batch = FromMachine::Lines(std::mem::take(&mut lines));
                            if to.send((machine.clone(), batch)).await.is_err() {
                                return;
                            }
                        }
                        if let Some(message) = message {
                            if to.send((machine.clone(), message)).await.is_err() {
                                return;
                            }
                        }
                        if ended.is_none() {
                            next = events.next().now_or_never().flatten();
                        }
                    }
                    if !lines.is_empty() {
                        let batch = FromMachine::Lines(std::mem::take(&mut lines));
                        if to.send((machine.clone(), batch)).await.is_err() {
                            return;
                        }
                    }
                    if ended.is_some() {
                        break;
                    }
                }
                match ended {
                    Some(error) => Err(error),
                    None if query.follow => Err("the stream ended".to_string()),
                    None => Ok(()),
                }
            }
            Err(error) => Err(error.to_string()),
        };
        match said {
            Ok(()) => {
                let _ = to.send((machine.clone(), FromMachine::Kept)).await;
                return;
            }
            Err(error) => {
                if !broken {
                    broken = true;
                    if to
                        .send((machine.clone(), FromMachine::Broke(error)))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                if !query.follow {
                    return;
                }
            }
        }
        // What comes after the break: every kept line since the last one sent.
        query.lines = Query::MAX_LINES;
        tokio::time::sleep(RETRY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Args {
        let verb = crate::find("logs").unwrap();
        let words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
        Args::new(verb, &words)
    }

    #[test]
    fn logs_reads_heroku_and_dokku_style_options() {
        let (app, query) = parse(&args(&["demo", "-n", "50", "-f", "--process=web"])).unwrap();
        assert_eq!(app, "demo");
        assert_eq!(query.lines, 50);
        assert!(query.follow);
        assert_eq!(query.process.as_deref(), Some("web"));
        let (_, query) = parse(&args(&[
            "demo",
            "--instance",
            "web.2",
            "--since",
            "2026-12-01T10:00:00Z",
        ]))
        .unwrap();
        assert_eq!(query.instance.as_deref(), Some("web.2"));
        assert_eq!(query.since, Some(1_796_119_200_000_000_000));
        assert_eq!(parse(&args(&["demo"])).unwrap().1.lines, 100);
        for (bad, said) in [
            (&["demo", "-n", "lots"][..], "-n `lots` is not a number"),
            (&["demo", "-n"][..], "-n needs a value"),
            (
                &["demo", "--instance", "web"][..],
                "not an instance such as web.2",
            ),
            (&["demo", "--process", "Web!"][..], "not a process type"),
            (
                &["demo", "--since", "yesterday-ish"][..],
                "--since `yesterday-ish`",
            ),
            (
                &["demo", "--frobnicate"][..],
                "unknown option `--frobnicate`",
            ),
        ] {
            let error = parse(&args(bad)).unwrap_err().to_string();
            assert!(error.contains(said), "{bad:?}: {error}");
        }
        assert!(matches!(parse(&args(&[])), Err(VerbError::Usage(_))));
        assert!(matches!(
            parse(&args(&["a", "b"])),
            Err(VerbError::Usage(_))
        ));
    }
}

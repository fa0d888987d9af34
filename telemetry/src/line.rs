//! A log line as an agent keeps it and sends it, and the query that
//! selects lines (`logs APP -n N --since ... --process P --instance web.N`).

use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Where a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The instance's standard output.
    Out,
    /// The instance's standard error.
    Err,
    /// The agent: started, stopped, crashed, OOM-killed, health check failed.
    Agent,
}

/// One line of an app's log on one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Line {
    /// Nanoseconds since the Unix epoch: Docker's timestamp of the line for
    /// an instance's output, the agent's clock for its own lines.
    pub t: i64,
    /// The instance, `web.1`.
    pub instance: String,
    pub release: u64,
    pub source: Source,
    /// The first 12 digits of the container's id; empty for the agent's lines.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub container: String,
    pub message: String,
}

impl Line {
    /// The process type of its instance (`web` of `web.1`).
    pub fn process(&self) -> &str {
        self.instance
            .split_once('.')
            .map_or(self.instance.as_str(), |(process, _)| process)
    }
}

/// A line with the app and the machine that kept it, as the server merges them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MachineLine {
    pub app: String,
    pub machine: String,
    #[serde(flatten)]
    pub line: Line,
}

impl MachineLine {
    /// When, as RFC 3339 UTC to the millisecond.
    pub fn time(&self) -> String {
        let t = UNIX_EPOCH + Duration::from_nanos(self.line.t.max(0) as u64);
        humantime::format_rfc3339_millis(t).to_string()
    }
}

/// `2026-12-01T10:00:00.123Z app[web.1] v7 machine-8c1f2a3b: message`; the
/// agent's own lines are `paz[agent]`.
impl std::fmt::Display for MachineLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let machine: String = self.machine.chars().take(8).collect();
        let who = match self.line.source {
            Source::Out | Source::Err => format!("app[{}]", self.line.instance),
            Source::Agent => "paz[agent]".to_string(),
        };
        write!(
            f,
            "{} {who} v{} machine-{machine}: {}",
            self.time(),
            self.line.release,
            self.line.message
        )
    }
}

/// What an agent endpoint's log stream sends, one JSON object a line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Event {
    Line(Line),
    /// Something the reader should know (lines skipped by a slow reader).
    Notice(String),
    /// A followed stream sent every kept line: what comes next is new.
    Live,
}

/// Which lines: the last `lines` that match, then (with `follow`) each new one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Query {
    /// How many of the kept lines (the newest).
    #[serde(default = "default_lines")]
    pub lines: usize,
    /// Only lines at or after this time (nanoseconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
    /// Only lines after this time: where a stream that broke resumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<i64>,
    /// Only this process type (`web`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
    /// Only this instance (`web.2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    #[serde(default)]
    pub follow: bool,
}

fn default_lines() -> usize {
    Query::DEFAULT_LINES
}

impl Query {
    /// `logs` shows this many lines unless told (`-n`).
    pub const DEFAULT_LINES: usize = 100;
    /// The most lines one query returns from what is kept.
    pub const MAX_LINES: usize = 100_000;

    /// Whether `line` is one this query selects.
    pub fn matches(&self, line: &Line) -> bool {
        self.since.is_none_or(|since| line.t >= since)
            && self.after.is_none_or(|after| line.t > after)
            && self
                .process
                .as_deref()
                .is_none_or(|process| line.process() == process)
            && self
                .instance
                .as_deref()
                .is_none_or(|instance| line.instance == instance)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(t: i64, instance: &str, source: Source) -> Line {
        Line {
            t,
            instance: instance.into(),
            release: 7,
            source,
            container: "c0ffee".into(),
            message: "GET / 200".into(),
        }
    }

    #[test]
    fn a_line_reads_as_heroku_writes_it_with_the_release_and_machine() {
        let shown = MachineLine {
            app: "demo".into(),
            machine: "8c1f2a3b4d5e6f70".into(),
            line: line(1_796_119_200_123_456_789, "web.1", Source::Out),
        };
        assert_eq!(
            shown.to_string(),
            "2026-12-01T10:00:00.123Z app[web.1] v7 machine-8c1f2a3b: GET / 200"
        );
        let agent = MachineLine {
            line: Line {
                message: "web.1 crashed with exit code 3".into(),
                ..line(1_796_119_200_000_000_000, "web.1", Source::Agent)
            },
            ..shown
        };
        assert_eq!(
            agent.to_string(),
            "2026-12-01T10:00:00.000Z paz[agent] v7 machine-8c1f2a3b: web.1 crashed with exit code 3"
        );
    }

    #[test]
    fn a_query_selects_by_time_process_and_instance() {
        let query = Query {
            since: Some(10),
            process: Some("web".into()),
            ..Query::default()
        };
        assert!(query.matches(&line(10, "web.2", Source::Err)));
        assert!(!query.matches(&line(9, "web.2", Source::Err)));
        assert!(!query.matches(&line(11, "worker.1", Source::Out)));
        let instance = Query {
            instance: Some("web.2".into()),
            after: Some(10),
            ..Query::default()
        };
        assert!(instance.matches(&line(11, "web.2", Source::Agent)));
        assert!(!instance.matches(&line(10, "web.2", Source::Out)));
        assert!(!instance.matches(&line(11, "web.1", Source::Out)));
        // A query read from a URL without `lines` asks for the default.
        let parsed: Query = serde_json::from_str("{}").unwrap();
        assert_eq!(parsed.lines, Query::DEFAULT_LINES);
    }
}

//! What a rollout says as it goes: typed steps that the deployer emits and
//! the SSH output, the API and the web UI render each their own way (text
//! lines for SSH), and the record of a rollout that the API keeps.

use serde::{Deserialize, Serialize};

use crate::AppName;

/// One step of a rollout or restart, in the order they happen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Another deploy of the app holds its lock; this one waits its turn.
    Waiting { app: String },
    /// Something the plan says before it starts (a process type that cannot run).
    Note { text: String },
    /// The release's `release:` command starts.
    ReleaseCommand { command: String },
    /// A line of the release command's output.
    Output { line: String },
    /// A new instance (`demo-v7-web-1`) was placed on a machine.
    Placed { instance: String, machine: String },
    /// A new instance's agent pulls its image.
    Pulling { instance: String },
    /// A new instance's container runs (a web instance is not checked yet).
    Started { instance: String },
    /// A new instance is ready: a web instance passed its health check and
    /// is routed, another type runs.
    Ready {
        instance: String,
        routed: bool,
        seconds: f64,
    },
    /// An old instance is taken out: withdrawn from the routes, drained
    /// and stopped by its agent.
    Stopping { instance: String },
    /// The proxies send an old web instance nothing new any more (its
    /// agent stops it after the drain).
    Withdrawn { instance: String },
    /// An old instance is still announced after `seconds` (its machine may
    /// be gone): the rollout goes on.
    StillAnnounced { instance: String, seconds: u64 },
    /// An instance's container is gone (`ps:restart` waits for it).
    Stopped { instance: String },
    /// An instance of the serving release restarts (`ps:restart`).
    Restarting { instance: String },
    /// The rollout failed and takes its changes back.
    Failed { reason: String },
    /// The release serves at `url`.
    Released { release: u64, url: String },
    /// Every instance of the serving release was restarted.
    Restarted { app: String, release: u64 },
}

impl Step {
    /// The instance name of a unit (`demo-v7-web-1.service` -> `demo-v7-web-1`).
    pub fn instance(unit: &str) -> String {
        unit.trim_end_matches(".service").to_string()
    }
}

/// The SSH output's line: `----->` starts a step, an indented line adds to one.
impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Waiting { app } => {
                write!(f, "-----> Waiting for the deploy of {app} in progress")
            }
            Step::Note { text } => write!(f, "-----> {text}"),
            Step::ReleaseCommand { command } => {
                write!(f, "-----> Running release command: {command}")
            }
            Step::Output { line } => write!(f, "       {line}"),
            Step::Placed { instance, machine } => {
                let short: String = machine.chars().take(8).collect();
                write!(f, "-----> Starting {instance} on machine {short}")
            }
            Step::Pulling { instance } => write!(f, "       {instance} pulling its image"),
            Step::Started { instance } => write!(f, "       {instance} started"),
            Step::Ready {
                instance,
                routed,
                seconds,
            } => {
                let how = if *routed { "healthy" } else { "running" };
                write!(f, "       {instance} {how} after {seconds:.1} s")
            }
            Step::Stopping { instance } => write!(f, "-----> Stopping {instance}"),
            Step::Withdrawn { instance } => write!(f, "       {instance} withdrawn"),
            Step::StillAnnounced { instance, seconds } => write!(
                f,
                "       {instance} is still announced after {seconds} s (its machine may be gone); going on"
            ),
            Step::Stopped { instance } => write!(f, "       {instance} stopped"),
            Step::Restarting { instance } => write!(f, "-----> Restarting {instance}"),
            Step::Failed { reason } => write!(f, "-----> {reason}; rolling back"),
            Step::Released { release, url } => write!(f, "-----> Released v{release}: {url}"),
            Step::Restarted { app, release } => write!(f, "-----> Restarted {app} v{release}"),
        }
    }
}

/// `/paz/apps/<app>/rollouts/<id>`: one rollout (every one has a record),
/// its steps written as they happen; kept after it ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Rollout {
    pub id: String,
    pub app: AppName,
    /// What started it: `push`, `deploy`, `rollback`, `config`, `scale`,
    /// `restart` or `follow` (a followed image).
    pub kind: String,
    /// Who started it: the token, SSH key or pusher (for `follow`, the
    /// image event's sender).
    pub by: String,
    pub started_at: u64,
    #[serde(default)]
    pub finished_at: Option<u64>,
    /// The release it rolls out, once it is known.
    #[serde(default)]
    pub release: Option<u64>,
    pub status: RolloutStatus,
    #[serde(default)]
    pub steps: Vec<Step>,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RolloutStatus {
    Running,
    Succeeded,
    Failed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_step_is_one_line_of_text_and_a_tagged_json_object() {
        let steps = [
            Step::Placed {
                instance: "demo-v7-web-1".into(),
                machine: "8c1f2a9e77d1".into(),
            },
            Step::Ready {
                instance: "demo-v7-web-1".into(),
                routed: true,
                seconds: 1.26,
            },
            Step::Output {
                line: "migrated".into(),
            },
            Step::Pulling {
                instance: "demo-v7-web-1".into(),
            },
            Step::Withdrawn {
                instance: "demo-v6-web-1".into(),
            },
            Step::Released {
                release: 7,
                url: "http://demo.paz.localhost".into(),
            },
        ];
        let text: Vec<String> = steps.iter().map(Step::to_string).collect();
        assert_eq!(
            text,
            [
                "-----> Starting demo-v7-web-1 on machine 8c1f2a9e",
                "       demo-v7-web-1 healthy after 1.3 s",
                "       migrated",
                "       demo-v7-web-1 pulling its image",
                "       demo-v6-web-1 withdrawn",
                "-----> Released v7: http://demo.paz.localhost",
            ]
        );
        let json = serde_json::to_value(&steps[1]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"step": "ready", "instance": "demo-v7-web-1", "routed": true, "seconds": 1.26})
        );
    }
}

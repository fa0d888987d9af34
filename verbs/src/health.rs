//! `health:set`: how new instances are checked before they take traffic.

use serde::Serialize;
use store::records::Health;
use store::AppName;

use crate::apps::update;
use crate::args::Args;
use crate::{Caller, Context, VerbError};

/// An app's health check, as set (`health:set`).
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct HealthCheck {
    #[serde(skip)]
    pub app: AppName,
    pub health: Health,
}

impl std::fmt::Display for HealthCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let health = &self.health;
        write!(
            f,
            "{} health check: GET {} within {}s, {} attempts",
            self.app, health.path, health.timeout, health.attempts
        )
    }
}

pub(crate) async fn set(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<HealthCheck, VerbError> {
    let words = args.at_least(2)?;
    let mut path = None;
    let mut timeout = None;
    let mut attempts = None;
    for setting in &words[1..] {
        let number = |value: &str, max: u64| {
            value
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| {
                    VerbError::Invalid(format!(
                        "`{setting}` is invalid: use a whole number from 1 to {max}"
                    ))
                })
        };
        match setting.split_once('=') {
            Some(("path", value))
                if value.starts_with('/') && !value.contains(char::is_whitespace) =>
            {
                path = Some(value.to_string())
            }
            Some(("path", _)) => {
                return Err(VerbError::Invalid(format!(
                    "`{setting}` is invalid: the path starts with / and has no spaces"
                )))
            }
            Some(("timeout", value)) => timeout = Some(number(value, 300)?),
            Some(("attempts", value)) => attempts = Some(number(value, 100)? as u32),
            _ => {
                return Err(VerbError::Invalid(format!(
                "`{setting}` is not a health setting: use path=/up, timeout=SECONDS or attempts=N"
            )))
            }
        }
    }
    let (app, ()) = update(context, caller, &words[0], |app| {
        if let Some(path) = &path {
            app.health.path = path.clone();
        }
        if let Some(timeout) = timeout {
            app.health.timeout = timeout;
        }
        if let Some(attempts) = attempts {
            app.health.attempts = attempts;
        }
        Ok(())
    })
    .await?;
    Ok(HealthCheck {
        app: app.name,
        health: app.health,
    })
}

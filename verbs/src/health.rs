//! `health:set`: how new instances are checked before they take traffic.

use serde_json::json;

use crate::apps::update;
use crate::args::Args;
use crate::{Caller, Context, Outcome, VerbError};

pub(crate) async fn set(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<Outcome, VerbError> {
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
    let health = &app.health;
    Ok(Outcome::new(
        format!(
            "{} health check: GET {} within {}s, {} attempts",
            app.name, health.path, health.timeout, health.attempts
        ),
        json!(health),
    ))
}

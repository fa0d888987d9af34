//! `config:*` verbs: an app's environment variables.

use serde_json::json;

use crate::apps::{load, update};
use crate::args::Args;
use crate::{Caller, Context, Outcome, VerbError};

/// Environment variable names: letters, digits and `_`, not starting with a digit.
fn check_name(name: &str) -> Result<(), VerbError> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(VerbError::Invalid(format!(
            "config key `{name}` is invalid: use letters, digits and _, not starting with a digit"
        )))
    }
}

pub(crate) async fn show(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<Outcome, VerbError> {
    let name = args.one()?;
    let (app, record) = load(context, caller, &name).await?;
    let env = record.value.env;
    let text = if env.is_empty() {
        format!("{app} has no config")
    } else {
        env.iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    Ok(Outcome::new(text, json!(env)))
}

pub(crate) async fn get(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<Outcome, VerbError> {
    let (name, key) = args.two()?;
    let (app, record) = load(context, caller, &name).await?;
    let value = record.value.env.get(&key).ok_or_else(|| {
        VerbError::NotFound(format!("{app} has no config {key}: see config:show {app}"))
    })?;
    Ok(Outcome::new(value.clone(), json!({ key: value })))
}

pub(crate) async fn set(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<Outcome, VerbError> {
    let words = args.at_least(2)?;
    let mut pairs = Vec::new();
    for pair in &words[1..] {
        let (key, value) = pair.split_once('=').ok_or_else(|| {
            VerbError::Invalid(format!(
                "`{pair}` is not KEY=VALUE: usage: config:set APP KEY=VALUE ..."
            ))
        })?;
        check_name(key)?;
        pairs.push((key.to_string(), value.to_string()));
    }
    let (app, ()) = update(context, caller, &words[0], |app| {
        for (key, value) in &pairs {
            app.env.insert(key.clone(), value.clone());
        }
        Ok(())
    })
    .await?;
    let names: Vec<&str> = pairs.iter().map(|(key, _)| key.as_str()).collect();
    let said = format!("set {} on {}", names.join(", "), app.name);
    crate::releases::after_config_change(context, caller, &app, said).await
}

pub(crate) async fn unset(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<Outcome, VerbError> {
    let words = args.at_least(2)?;
    let names = &words[1..];
    let (app, ()) = update(context, caller, &words[0], |app| {
        if let Some(missing) = names.iter().find(|name| !app.env.contains_key(*name)) {
            return Err(VerbError::NotFound(format!(
                "{} has no config {missing}: nothing was changed",
                app.name
            )));
        }
        for name in names {
            app.env.remove(name);
        }
        Ok(())
    })
    .await?;
    let said = format!("unset {} on {}", names.join(", "), app.name);
    crate::releases::after_config_change(context, caller, &app, said).await
}

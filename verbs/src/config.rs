//! `config:*` verbs: an app's environment variables.

use std::collections::BTreeMap;

use serde::Serialize;
use store::AppName;

use crate::apps::{load, update};
use crate::args::Args;
use crate::releases::ConfigChange;
use crate::{Caller, Context, VerbError};

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

/// An app's environment (`config:show`).
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct Config {
    #[serde(skip)]
    pub app: AppName,
    pub env: BTreeMap<String, String>,
}

impl std::fmt::Display for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pairs = self.env.iter().map(|(key, value)| format!("{key}={value}"));
        crate::lines_or(f, pairs, format!("{} has no config", self.app))
    }
}

pub(crate) async fn show(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<Config, VerbError> {
    let name = args.one()?;
    let (app, record) = load(context, caller, &name).await?;
    Ok(Config {
        app,
        env: record.value.env,
    })
}

/// One environment variable (`config:get`): its value as text, `{KEY: value}` as JSON.
#[derive(Debug)]
pub struct ConfigValue {
    pub key: String,
    pub value: String,
}

impl Serialize for ConfigValue {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(&self.key, &self.value)?;
        map.end()
    }
}

impl std::fmt::Display for ConfigValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.value)
    }
}

pub(crate) async fn get(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<ConfigValue, VerbError> {
    let (name, key) = args.two()?;
    let (app, record) = load(context, caller, &name).await?;
    let value = record.value.env.get(&key).cloned().ok_or_else(|| {
        VerbError::NotFound(format!("{app} has no config {key}: see config:show {app}"))
    })?;
    Ok(ConfigValue { key, value })
}

pub(crate) async fn set(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<ConfigChange, VerbError> {
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
) -> Result<ConfigChange, VerbError> {
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

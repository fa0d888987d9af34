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
        pairs.push((key.to_string(), Some(value.to_string())));
    }
    change(context, caller, &words[0], pairs).await
}

pub(crate) async fn unset(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<ConfigChange, VerbError> {
    let words = args.at_least(2)?;
    let changes = words[1..].iter().map(|name| (name.clone(), None)).collect();
    change(context, caller, &words[0], changes).await
}

/// Sets (`Some`) and unsets (`None`) environment variables of app `name` in
/// one new release, as Heroku's config PATCH does; unsetting a variable the
/// app does not have is refused (not found), and nothing changes.
pub async fn change(
    context: &Context,
    caller: &Caller,
    name: &str,
    changes: Vec<(String, Option<String>)>,
) -> Result<ConfigChange, VerbError> {
    if changes.is_empty() {
        return Err(VerbError::Invalid(
            "no config to change: name at least one KEY".into(),
        ));
    }
    for (key, _) in &changes {
        check_name(key)?;
    }
    let (app, ()) = update(context, caller, name, |app| {
        let missing = changes
            .iter()
            .find(|(key, value)| value.is_none() && !app.env.contains_key(key));
        if let Some((missing, _)) = missing {
            return Err(VerbError::NotFound(format!(
                "{} has no config {missing}: nothing was changed",
                app.name
            )));
        }
        for (key, value) in &changes {
            match value {
                Some(value) => app.env.insert(key.clone(), value.clone()),
                None => app.env.remove(key),
            };
        }
        Ok(())
    })
    .await?;
    let names = |set: bool| -> Vec<&str> {
        changes
            .iter()
            .filter(|(_, value)| value.is_some() == set)
            .map(|(key, _)| key.as_str())
            .collect()
    };
    let mut said = Vec::new();
    for (set, verb) in [(true, "set"), (false, "unset")] {
        let keys = names(set);
        if !keys.is_empty() {
            said.push(format!("{verb} {}", keys.join(", ")));
        }
    }
    let said = format!("{} on {}", said.join(" and "), app.name);
    crate::releases::after_config_change(context, caller, &app, said).await
}

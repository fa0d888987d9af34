//! `domains:*` verbs: the extra domains the proxy routes to an app.

use serde_json::json;
use store::names::check_domain;

use crate::apps::{load, update};
use crate::args::Args;
use crate::{Caller, Context, Outcome, VerbError};

pub(crate) async fn list(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<Outcome, VerbError> {
    let name = args.one()?;
    let (app, record) = load(context, caller, &name).await?;
    let base = context
        .store
        .get(&context.store.keys().domain())
        .await?
        .map(|d| d.value);
    let mut domains: Vec<String> = base
        .map(|base| format!("{app}.{base}"))
        .into_iter()
        .collect();
    domains.extend(record.value.domains);
    Ok(Outcome::new(domains.join("\n"), json!(domains)))
}

pub(crate) async fn add(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<Outcome, VerbError> {
    let (name, domain) = args.two()?;
    check_domain(&domain)?;
    // A domain routes to one app only.
    let apps = context.store.list(&context.store.keys().apps()).await?;
    if let Some(owner) = apps
        .entries
        .iter()
        .find(|entry| entry.value.name.as_str() != name && entry.value.domains.contains(&domain))
    {
        let owner = if caller.may_use(&owner.value.name) {
            format!("app `{}`", owner.value.name)
        } else {
            "another app".to_string()
        };
        return Err(VerbError::Conflict(format!(
            "domain {domain} is already routed to {owner}"
        )));
    }
    let (app, ()) = update(context, caller, &name, |app| {
        if app.domains.contains(&domain) {
            return Err(VerbError::Conflict(format!(
                "{} already has domain {domain}",
                app.name
            )));
        }
        app.domains.push(domain.clone());
        Ok(())
    })
    .await?;
    Ok(Outcome::new(
        format!("added {domain} to {}", app.name),
        json!(app.domains),
    ))
}

pub(crate) async fn remove(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<Outcome, VerbError> {
    let (name, domain) = args.two()?;
    let (app, ()) = update(context, caller, &name, |app| {
        let before = app.domains.len();
        app.domains.retain(|existing| existing != &domain);
        if app.domains.len() == before {
            return Err(VerbError::NotFound(format!(
                "{} has no domain {domain}",
                app.name
            )));
        }
        Ok(())
    })
    .await?;
    Ok(Outcome::new(
        format!("removed {domain} from {}", app.name),
        json!(app.domains),
    ))
}

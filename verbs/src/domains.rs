//! `domains:*` verbs: the extra domains the proxy routes to an app.

use serde::Serialize;
use store::names::check_domain;

use crate::apps::{load, update};
use crate::args::Args;
use crate::{Caller, Context, VerbError};

/// The names an app answers at (`domains:list`): its own under the base
/// domain first, then those added.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct Domains(pub Vec<String>);

impl std::fmt::Display for Domains {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.join("\n"))
    }
}

pub(crate) async fn list(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<Domains, VerbError> {
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
    Ok(Domains(domains))
}

/// A domain added or removed: what was done as text, the app's added
/// domains as JSON.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct DomainChange {
    #[serde(skip)]
    pub said: String,
    pub domains: Vec<String>,
}

crate::shown_as_said!(DomainChange);

pub(crate) async fn add(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<DomainChange, VerbError> {
    let (name, domain) = args.two()?;
    caller.require_app(&store::AppName::new(&name)?)?;
    check_domain(&domain)?;
    let base = context
        .store
        .get(&context.store.keys().domain())
        .await?
        .map(|d| d.value);
    check_routable(caller, &name, &domain, base.as_deref())?;
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
    Ok(DomainChange {
        said: format!("added {domain} to {}", app.name),
        domains: app.domains,
    })
}

/// Whether `caller` may route `domain` to app `name`: never `localhost`, an
/// IP address or the base domain itself; under the base domain only an
/// admin, and never `<label>.<base>`, which belongs to the app of that name
/// (created or not: the proxy routes it to that app).
fn check_routable(
    caller: &Caller,
    name: &str,
    domain: &str,
    base: Option<&str>,
) -> Result<(), VerbError> {
    let refuse = |why: String| Err(VerbError::Invalid(format!("domain {domain} {why}")));
    if base == Some(domain) {
        return refuse(format!(
            "is the base domain: apps answer at APP.{domain} by themselves"
        ));
    }
    let under_base = base.is_some_and(|base| domain.ends_with(&format!(".{base}")));
    if domain == "localhost" || (domain.ends_with(".localhost") && !under_base) {
        return refuse("names this machine, not an app: add a name under a domain you own".into());
    }
    if domain
        .split('.')
        .all(|label| label.chars().all(|c| c.is_ascii_digit()))
    {
        return refuse("is an IP address: add a name that resolves to the proxy".into());
    }
    let Some(base) = base else {
        return Ok(());
    };
    let Some(under) = domain.strip_suffix(&format!(".{base}")) else {
        return Ok(());
    };
    if !under.contains('.') {
        return refuse(if under == name {
            format!("is {name}'s own name: it is routed already")
        } else {
            format!("belongs to the app named `{under}`: only names outside {base} (or deeper under it) can be added")
        });
    }
    caller.require_admin(&format!("add names under the base domain {base}"))?;
    Ok(())
}

pub(crate) async fn remove(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<DomainChange, VerbError> {
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
    // A certificate brought by hand for the name was the app's: it goes
    // with the route, so that it never serves the name's next owner. (An
    // ACME one stays, not renewed, for the CA's limits' sake.)
    let key = context.store.keys().certificate(&domain)?;
    let mut said = format!("removed {domain} from {}", app.name);
    if let Some(record) = context.store.get(&key).await? {
        if record.value.source == store::records::CertSource::Manual
            && context
                .store
                .delete_if_unchanged(&key, record.mod_revision)
                .await
                .is_ok()
        {
            said.push_str(", and its certificate brought by hand");
        }
    }
    Ok(DomainChange {
        said,
        domains: app.domains,
    })
}

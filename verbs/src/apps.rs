//! `apps:*` verbs, and the read-modify-write helper the other app verbs share.

use serde_json::json;
use store::records::App;
use store::{AppName, StoreError, Versioned};

use crate::args::Args;
use crate::{now, Caller, Context, Outcome, VerbError};

/// Reads `app`, refusing callers who may not use it. A caller who may not use
/// an app learns nothing about whether it exists.
pub(crate) async fn load(
    context: &Context,
    caller: &Caller,
    name: &str,
) -> Result<(AppName, Versioned<App>), VerbError> {
    let app = AppName::new(name)?;
    caller.require_app(&app)?;
    let record = context
        .store
        .get(&context.store.keys().app(&app))
        .await?
        .ok_or_else(|| missing(&app))?;
    Ok((app, record))
}

/// Applies `change` to the app and writes it if nobody else wrote in between,
/// reading again and retrying when someone did.
pub(crate) async fn update<T>(
    context: &Context,
    caller: &Caller,
    name: &str,
    change: impl FnMut(&mut App) -> Result<T, VerbError>,
) -> Result<(App, T), VerbError> {
    let app = AppName::new(name)?;
    caller.require_app(&app)?;
    match context
        .store
        .update_with(&context.store.keys().app(&app), change)
        .await
    {
        Ok(Some(updated)) => Ok(updated),
        Ok(None) => Err(missing(&app)),
        Err(VerbError::Store(error)) if error.conflict().is_some() => Err(VerbError::Conflict(
            format!("app `{app}` kept changing while this ran: try again"),
        )),
        Err(error) => Err(error),
    }
}

/// That `app` does not exist, and how to make it.
fn missing(app: &AppName) -> VerbError {
    VerbError::NotFound(format!(
        "app `{app}` does not exist: create it with apps:create {app}"
    ))
}

pub(crate) async fn list(context: &Context, caller: &Caller) -> Result<Outcome, VerbError> {
    let listing = context.store.list(&context.store.keys().apps()).await?;
    let names: Vec<&str> = listing
        .entries
        .iter()
        .map(|entry| &entry.value.name)
        .filter(|app| caller.may_use(app))
        .map(AppName::as_str)
        .collect();
    Ok(Outcome::listing(
        &names,
        "no apps yet: create one with apps:create APP",
        json!(names),
    ))
}

pub(crate) async fn create(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<Outcome, VerbError> {
    let name = args.one()?;
    caller.require_admin("create apps")?;
    let app = AppName::new(&name)?;
    create_app(context, &app).await?;
    Ok(Outcome::new(
        format!("created app {app}"),
        json!({"app": app}),
    ))
}

/// Creates `app` with the default settings; a conflict if it exists.
pub async fn create_app(context: &Context, app: &AppName) -> Result<(), VerbError> {
    let key = context.store.keys().app(app);
    match context
        .store
        .create(&key, &App::new(app.clone(), now()))
        .await
    {
        Ok(_) => Ok(()),
        Err(StoreError::Conflict { .. }) => {
            Err(VerbError::Conflict(format!("app `{app}` already exists")))
        }
        Err(error) => Err(error.into()),
    }
}

pub(crate) async fn info(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<Outcome, VerbError> {
    let name = args.one()?;
    let (app, record) = load(context, caller, &name).await?;
    let app_record = record.value;
    let keys = context.store.keys();
    let domain = context.store.get(&keys.domain()).await?.map(|d| d.value);
    let current = context
        .store
        .get(&keys.current(&app))
        .await?
        .map(|c| c.value);
    let url = domain
        .as_ref()
        .map(|domain| format!("http://{app}.{domain}"));
    let branch = app_record
        .deploy
        .branch
        .clone()
        .unwrap_or_else(|| "main (or master)".to_string());
    let mut text = format!("app        {app}\n");
    if let Some(url) = &url {
        text.push_str(&format!("url        {url}\n"));
    }
    text.push_str(&format!(
        "domains    {}\nport       {}\nscale      web={} worker={}\nhealth     path={} timeout={} attempts={}\nbranch     {branch}\nrelease    {}",
        if app_record.domains.is_empty() { "-".to_string() } else { app_record.domains.join(" ") },
        app_record.port.map(|port| port.to_string()).unwrap_or_else(|| "from the image, else 5000".to_string()),
        app_record.scale.web,
        app_record.scale.worker,
        app_record.health.path,
        app_record.health.timeout,
        app_record.health.attempts,
        current.map(|n| format!("v{n}")).unwrap_or_else(|| "none yet".to_string()),
    ));
    let json = json!({
        "app": app_record,
        "url": url,
        "current_release": current,
    });
    Ok(Outcome::new(text, json))
}

pub(crate) async fn destroy(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<Outcome, VerbError> {
    let (name, flags) = args.one_and_flags()?;
    caller.require_admin("destroy apps")?;
    let (app, record) = load(context, caller, &name).await?;
    if !flags.contains_key("--force") {
        return Err(VerbError::Invalid(format!(
            "this deletes app `{app}`, its instances, releases, builds and git repo: run apps:destroy {app} --force"
        )));
    }
    let keys = context.store.keys();
    // Its units go with it (the agents withdraw, drain and stop them), and its
    // routes at once.
    let units = context.store.list(&keys.units()).await?;
    let mut change = context
        .store
        .transaction()
        .require_unchanged(&keys.app(&app), record.mod_revision)
        .delete(&keys.app(&app))
        .delete_prefix(&keys.app_children(&app))
        .delete_prefix(&keys.builds_all(&app))
        .delete_prefix(&keys.services_of(&app));
    for entry in &units.entries {
        let unit = keys.units().child_name(&entry.key);
        if crate::cluster::unit_of(unit, app.as_str()) {
            change = change.delete(&keys.unit(unit)?);
        }
    }
    change
        .commit()
        .await
        .map_err(|error| match error.conflict() {
            Some(_) => {
                VerbError::Conflict(format!("app `{app}` changed while this ran: try again"))
            }
            None => error.into(),
        })?;
    // The repo goes after the state: a crash in between leaves a repo without an
    // app, which the next apps:create of that name reuses.
    let repo = context.repo_path(&app);
    if repo.exists() {
        let trash = repo.with_extension(format!("git.deleted-{}", now()));
        std::fs::rename(&repo, &trash)
            .and_then(|()| std::fs::remove_dir_all(&trash))
            .map_err(|error| {
                VerbError::Disk(format!(
                    "app `{app}` was deleted but its repo {} was not: {error}",
                    repo.display()
                ))
            })?;
    }
    Ok(Outcome::new(
        format!("destroyed app {app}"),
        json!({"app": app}),
    ))
}

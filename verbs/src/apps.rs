//! `apps:*` verbs, and the read-modify-write helper the other app verbs share.

use serde::Serialize;
use store::records::App;
use store::{AppName, StoreError, Versioned};

use crate::args::Args;
use crate::{Caller, Context, VerbError};

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

/// The apps a caller may use (`apps:list`).
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct AppList(pub Vec<AppName>);

impl std::fmt::Display for AppList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        crate::lines_or(f, &self.0, "no apps yet: create one with apps:create APP")
    }
}

pub(crate) async fn list(context: &Context, caller: &Caller) -> Result<AppList, VerbError> {
    let listing = context.store.list(&context.store.keys().apps()).await?;
    Ok(AppList(
        listing
            .entries
            .into_iter()
            .map(|entry| entry.value.name)
            .filter(|app| caller.may_use(app))
            .collect(),
    ))
}

/// An app made or deleted (`apps:create`, `apps:destroy`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AppChanged {
    pub app: AppName,
    #[serde(skip)]
    pub done: &'static str,
}

impl std::fmt::Display for AppChanged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} app {}", self.done, self.app)
    }
}

pub(crate) async fn create(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<AppChanged, VerbError> {
    let name = args.one()?;
    caller.require_admin("create apps")?;
    let app = AppName::new(&name)?;
    create_app(context, &app).await?;
    Ok(AppChanged {
        app,
        done: "created",
    })
}

/// Creates `app` with the default settings; a conflict if it exists.
pub async fn create_app(context: &Context, app: &AppName) -> Result<(), VerbError> {
    let key = context.store.keys().app(app);
    match context
        .store
        .create(&key, &App::new(app.clone(), context.now()))
        .await
    {
        Ok(_) => Ok(()),
        Err(StoreError::Conflict { .. }) => {
            Err(VerbError::Conflict(format!("app `{app}` already exists")))
        }
        Err(error) => Err(error.into()),
    }
}

/// An app's settings (`apps:info`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AppInfo {
    pub app: App,
    /// Where it answers under the base domain, if one is set.
    pub url: Option<String>,
    /// The release that serves, if any.
    pub current_release: Option<u64>,
}

impl std::fmt::Display for AppInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let app = &self.app;
        writeln!(f, "app        {}", app.name)?;
        if let Some(url) = &self.url {
            writeln!(f, "url        {url}")?;
        }
        let domains = match app.domains.as_slice() {
            [] => "-".to_string(),
            domains => domains.join(" "),
        };
        writeln!(f, "domains    {domains}")?;
        match app.port {
            Some(port) => writeln!(f, "port       {port}")?,
            None => writeln!(f, "port       from the image, else 5000")?,
        }
        let scale: Vec<String> = app
            .scale
            .all()
            .iter()
            .map(|(process, n)| format!("{process}={n}"))
            .collect();
        writeln!(f, "scale      {}", scale.join(" "))?;
        let health = &app.health;
        writeln!(
            f,
            "health     path={} timeout={} attempts={}",
            health.path, health.timeout, health.attempts
        )?;
        let redirect = match app.https.redirect {
            None => "on once a name has a certificate",
            Some(true) => "on",
            Some(false) => "off",
        };
        let hsts = if app.https.hsts { "on" } else { "off" };
        writeln!(f, "https      redirect {redirect}, hsts {hsts}")?;
        let branch = app.deploy.branch.as_deref().unwrap_or("main (or master)");
        writeln!(f, "branch     {branch}")?;
        match self.current_release {
            Some(n) => write!(f, "release    v{n}"),
            None => write!(f, "release    none yet"),
        }
    }
}

pub(crate) async fn info(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<AppInfo, VerbError> {
    let name = args.one()?;
    let (app, record) = load(context, caller, &name).await?;
    let keys = context.store.keys();
    let domain = context.store.get(&keys.domain()).await?.map(|d| d.value);
    let current_release = context
        .store
        .get(&keys.current(&app))
        .await?
        .map(|c| c.value);
    Ok(AppInfo {
        url: domain.map(|domain| format!("http://{app}.{domain}")),
        app: record.value,
        current_release,
    })
}

pub(crate) async fn destroy(
    context: &Context,
    caller: &Caller,
    args: Args,
) -> Result<AppChanged, VerbError> {
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
    // Certificates brought by hand for its added names go with it, so that
    // they never serve a name's next owner (ACME ones stay, not renewed).
    let certificates = context.store.list(&keys.certificates()).await?;
    for entry in &certificates.entries {
        let certificate = &entry.value;
        if certificate.source == store::records::CertSource::Manual
            && record.value.domains.contains(&certificate.domain)
        {
            change = change.delete(&keys.certificate(&certificate.domain)?);
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
        let trash = repo.with_extension(format!("git.deleted-{}", context.now()));
        std::fs::rename(&repo, &trash)
            .and_then(|()| std::fs::remove_dir_all(&trash))
            .map_err(|error| {
                VerbError::Disk(format!(
                    "app `{app}` was deleted but its repo {} was not: {error}",
                    repo.display()
                ))
            })?;
    }
    Ok(AppChanged {
        app,
        done: "destroyed",
    })
}

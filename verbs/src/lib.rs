//! Paz's verbs (`apps:create`, `config:set`, ...) as functions over the store:
//! one implementation serves every front door (SSH commands now, the REST API
//! later). A front door authenticates the caller, splits the command line and
//! calls [`run`]; the verb checks the caller's rights and does the work.

#![forbid(unsafe_code)]

mod apps;
mod args;
mod builds;
mod caller;
mod certs;
pub mod cluster;
mod config;
pub mod cron;
mod domains;
mod error;
mod follow;
mod health;
mod instances;
pub mod keys;
pub mod logs;
mod ports;
mod releases;
mod resources;
pub mod runs;
mod tokens;

use std::path::PathBuf;

use serde::Serialize;
use store::Store;
pub use support::Clock;

pub use apps::{create_app, AppChanged, AppInfo, AppList};
pub use builds::{BuildList, BuildLog, BuildRow};
pub use caller::Caller;
pub use certs::{CertChange, CertList, CertRow, HttpsChange};
pub use cluster::{MachineRow, Machines, UnitFile, UnitRow, Units};
pub use config::{change as change_config, Config, ConfigValue};
pub use domains::{DomainChange, Domains};
pub use error::VerbError;
pub use follow::Following;
pub use health::HealthCheck;
pub use instances::{Instances, Scaled};
pub use keys::{KeyChange, KeyList};
pub use ports::PortChange;
pub use releases::{pinned_note, ConfigChange, ReleaseList, RolloutReport};
pub use resources::{LimitChange, ResourceReport};
pub use tokens::{NewToken, Revoked, TokenList, TokenRow};

/// What verbs work on.
#[derive(Debug, Clone)]
pub struct Context {
    pub store: Store,
    /// The data dir: git repos live in `<data_dir>/git/<app>.git`.
    pub data_dir: PathBuf,
    /// Who rolls releases out (the deployer); `None` where none runs.
    pub rollouts: Option<std::sync::Arc<dyn Rollouts>>,
    /// Seals the webhook signing secret of each new token; `None`: tokens
    /// made here cannot sign webhooks.
    pub hooks: Option<std::sync::Arc<store::HookKey>>,
    /// What "now" is for records and ages (fixed in snapshot tests).
    pub clock: Clock,
    /// The record the rollout of this call writes, made already (the API
    /// makes it to answer 202 before the verb runs); `None`: a new one.
    pub rollout_record: Option<store::Key<store::Rollout>>,
}

/// Rolls a recorded release out, sending each step as a line; the handle
/// `paz` gives the verbs (and gitd) so that they need not know the deployer.
pub trait Rollouts: Send + Sync + std::fmt::Debug {
    fn roll_out(
        &self,
        app: store::AppName,
        n: u64,
        report: tokio::sync::mpsc::Sender<deployer::Step>,
    ) -> futures::future::BoxFuture<'static, Result<(), deployer::DeployError>>;

    /// Restarts the serving release's instances one at a time.
    fn restart(
        &self,
        app: store::AppName,
        report: tokio::sync::mpsc::Sender<deployer::Step>,
    ) -> futures::future::BoxFuture<'static, Result<(), deployer::DeployError>>;

    /// Pins an image reference to its digest and reads its exposed ports,
    /// for a release of it.
    fn resolve_image(
        &self,
        reference: String,
    ) -> futures::future::BoxFuture<'static, Result<store::ResolvedImage, deployer::DeployError>>;

    /// The app whose repository in Paz's registry `reference` names, if any.
    fn image_owner(&self, reference: &str) -> Option<store::AppName>;
}

impl Context {
    /// The deployer, or the reason a release cannot be rolled out here.
    pub(crate) fn rollouts(&self) -> Result<&std::sync::Arc<dyn Rollouts>, VerbError> {
        self.rollouts.as_ref().ok_or_else(|| {
            VerbError::Invalid("no deployer runs with this server: use paz up or paz server".into())
        })
    }

    /// Seconds since the Unix epoch by the context's clock.
    pub(crate) fn now(&self) -> u64 {
        self.clock.now()
    }

    /// The bare repository of `app`.
    pub fn repo_path(&self, app: &store::AppName) -> PathBuf {
        self.data_dir.join("git").join(format!("{app}.git"))
    }
}

/// A verb's result as the front doors show it: text for people and JSON for
/// scripts (`--json`), both rendered from the verb's typed value.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub text: String,
    pub json: serde_json::Value,
}

impl Outcome {
    /// Renders a verb's value: its `Display` is the text, its `Serialize` the JSON.
    pub fn of<T: std::fmt::Display + Serialize>(value: &T) -> Outcome {
        Outcome {
            text: value.to_string(),
            json: serde_json::to_value(value).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// `Display` of a verb's result that says what was done in its `said`
/// field (its JSON is the other fields).
macro_rules! shown_as_said {
    ($($name:ty),* $(,)?) => {$(
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.said)
            }
        }
    )*};
}
pub(crate) use shown_as_said;

/// Writes `lines`, a line each, or `empty` when there are none.
fn lines_or<S: std::fmt::Display>(
    f: &mut std::fmt::Formatter<'_>,
    lines: impl IntoIterator<Item = S>,
    empty: impl std::fmt::Display,
) -> std::fmt::Result {
    let mut any = false;
    for line in lines {
        if any {
            writeln!(f)?;
        }
        write!(f, "{line}")?;
        any = true;
    }
    if !any {
        write!(f, "{empty}")?;
    }
    Ok(())
}

/// The apps of a key or token as one column: `a,b`, or `-` for none.
fn apps_column(apps: &[store::AppName]) -> String {
    if apps.is_empty() {
        return "-".to_string();
    }
    let names: Vec<&str> = apps.iter().map(store::AppName::as_str).collect();
    names.join(",")
}

/// A typed verb's future as the table's: its value rendered.
fn rendered<'a, T: std::fmt::Display + Serialize>(
    verb: impl std::future::Future<Output = Result<T, VerbError>> + Send + 'a,
) -> futures::future::BoxFuture<'a, Result<Outcome, VerbError>> {
    Box::pin(async move { verb.await.map(|value| Outcome::of(&value)) })
}

/// One verb as `help` lists it.
#[derive(Clone, Copy)]
pub struct Verb {
    pub name: &'static str,
    pub usage: &'static str,
    pub summary: &'static str,
    /// Whether it reads its input (e.g. a public key) from stdin.
    pub reads_stdin: bool,
    /// What runs it: the one place a name meets its code.
    run: Run,
}

/// A verb's code: the context, the caller, its arguments and stdin.
type Run = for<'a> fn(
    &'a Context,
    &'a Caller,
    args::Args,
    &'a [u8],
) -> futures::future::BoxFuture<'a, Result<Outcome, VerbError>>;

impl std::fmt::Debug for Verb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verb")
            .field("name", &self.name)
            .field("usage", &self.usage)
            .finish()
    }
}

const fn verb(name: &'static str, usage: &'static str, summary: &'static str, run: Run) -> Verb {
    Verb {
        name,
        usage,
        summary,
        reads_stdin: false,
        run,
    }
}

/// Every verb, in the order `help` lists them.
pub const VERBS: &[Verb] = &[
    verb("help", "help", "list the verbs", |_, _, _, _| {
        rendered(async { Ok(help()) })
    }),
    verb(
        "apps:list",
        "apps:list",
        "list the apps you may use",
        |context, caller, _, _| rendered(apps::list(context, caller)),
    ),
    verb(
        "apps:create",
        "apps:create APP",
        "create an app (admin)",
        |context, caller, args, _| rendered(apps::create(context, caller, args)),
    ),
    verb(
        "apps:info",
        "apps:info APP",
        "show an app's settings",
        |context, caller, args, _| rendered(apps::info(context, caller, args)),
    ),
    verb(
        "apps:destroy",
        "apps:destroy APP --force",
        "delete an app, its releases and its repo (admin)",
        |context, caller, args, _| rendered(apps::destroy(context, caller, args)),
    ),
    verb(
        "ssh-keys:list",
        "ssh-keys:list",
        "list the SSH keys (admin)",
        |context, caller, _, _| rendered(keys::list(context, caller)),
    ),
    Verb {
        reads_stdin: true,
        ..verb(
            "ssh-keys:add",
            "ssh-keys:add NAME [--role admin|deployer] [--apps A,B] < key.pub",
            "add the public key on stdin (admin)",
            |context, caller, args, stdin| rendered(keys::add(context, caller, args, stdin)),
        )
    },
    verb(
        "ssh-keys:remove",
        "ssh-keys:remove NAME|FINGERPRINT",
        "remove an SSH key (admin)",
        |context, caller, args, _| rendered(keys::remove(context, caller, args)),
    ),
    verb(
        "tokens:list",
        "tokens:list",
        "list the API tokens (admin)",
        |context, caller, _, _| rendered(tokens::list(context, caller)),
    ),
    verb(
        "tokens:create",
        "tokens:create NAME [--role admin|deployer|machine] [--apps A,B]",
        "create an API token and print its secret once (admin)",
        |context, caller, args, _| rendered(tokens::create(context, caller, args)),
    ),
    verb(
        "tokens:revoke",
        "tokens:revoke NAME",
        "revoke an API token (admin)",
        |context, caller, args, _| rendered(tokens::revoke(context, caller, args)),
    ),
    verb(
        "config:show",
        "config:show APP",
        "show an app's environment",
        |context, caller, args, _| rendered(config::show(context, caller, args)),
    ),
    verb(
        "config:get",
        "config:get APP KEY",
        "print one environment variable",
        |context, caller, args, _| rendered(config::get(context, caller, args)),
    ),
    verb(
        "config:set",
        "config:set APP KEY=VALUE ...",
        "set environment variables",
        |context, caller, args, _| rendered(config::set(context, caller, args)),
    ),
    verb(
        "config:unset",
        "config:unset APP KEY ...",
        "remove environment variables",
        |context, caller, args, _| rendered(config::unset(context, caller, args)),
    ),
    verb(
        "domains:list",
        "domains:list APP",
        "list the domains routed to an app",
        |context, caller, args, _| rendered(domains::list(context, caller, args)),
    ),
    verb(
        "domains:add",
        "domains:add APP DOMAIN",
        "route a domain to an app",
        |context, caller, args, _| rendered(domains::add(context, caller, args)),
    ),
    verb(
        "domains:remove",
        "domains:remove APP DOMAIN",
        "stop routing a domain to an app",
        |context, caller, args, _| rendered(domains::remove(context, caller, args)),
    ),
    verb(
        "certs:list",
        "certs:list",
        "list the certificates every proxy serves: domain, state, expiry, issuer",
        |context, caller, _, _| rendered(certs::list(context, caller)),
    ),
    Verb {
        reads_stdin: true,
        ..verb(
            "certs:add",
            "certs:add DOMAIN < bundle.pem",
            "serve the certificate chain and private key on stdin for DOMAIN (or *.DOMAIN)",
            |context, caller, args, stdin| rendered(certs::add(context, caller, args, stdin)),
        )
    },
    verb(
        "certs:remove",
        "certs:remove DOMAIN",
        "stop serving a certificate",
        |context, caller, args, _| rendered(certs::remove(context, caller, args)),
    ),
    verb(
        "certs:renew",
        "certs:renew DOMAIN",
        "order an ACME certificate again now",
        |context, caller, args, _| rendered(certs::renew(context, caller, args)),
    ),
    verb(
        "https:redirect",
        "https:redirect APP on|off|default",
        "answer http:// with a 308 to https:// (default: on once a name has a certificate)",
        |context, caller, args, _| rendered(certs::redirect(context, caller, args)),
    ),
    verb(
        "https:hsts",
        "https:hsts APP on|off",
        "send Strict-Transport-Security over HTTPS (off by default)",
        |context, caller, args, _| rendered(certs::hsts(context, caller, args)),
    ),
    verb(
        "builds",
        "builds APP",
        "list an app's builds, newest first",
        |context, caller, args, _| rendered(builds::list(context, caller, args)),
    ),
    verb(
        "logs",
        "logs APP [-n N] [-f] [--since TIME] [--process P] [--instance web.N]",
        "print an app's log lines from every machine, merged by time (-f follows)",
        |context, caller, args, _| rendered(logs::collect(context, caller, args)),
    ),
    verb(
        "machines:list",
        "machines:list",
        "list the machines and their units (admin)",
        |context, caller, _, _| rendered(cluster::machines(context, caller)),
    ),
    verb(
        "units:list",
        "units:list [APP]",
        "list units, where they run and their state",
        |context, caller, args, _| rendered(cluster::units(context, caller, args)),
    ),
    verb(
        "units:cat",
        "units:cat UNIT",
        "print a unit file",
        |context, caller, args, _| rendered(cluster::cat(context, caller, args)),
    ),
    verb(
        "builds:log",
        "builds:log APP [ID]",
        "print a build's log (the newest by default)",
        |context, caller, args, _| rendered(builds::log(context, caller, args)),
    ),
    verb(
        "health:set",
        "health:set APP [path=/up] [timeout=5] [attempts=3]",
        "set how new instances are checked",
        |context, caller, args, _| rendered(health::set(context, caller, args)),
    ),
    verb(
        "resource:limit",
        "resource:limit APP [--process TYPE] memory=SIZE|cpus=N...",
        "limit the memory (swap included) and CPUs of every process, or of one type (none lifts a limit)",
        |context, caller, args, _| rendered(resources::limit(context, caller, args)),
    ),
    verb(
        "resource:limit-clear",
        "resource:limit-clear APP [--process TYPE]",
        "lift the limits of every process, or a type's own",
        |context, caller, args, _| rendered(resources::clear(context, caller, args)),
    ),
    verb(
        "resource:report",
        "resource:report APP",
        "show the limits as set and what each process type gets",
        |context, caller, args, _| rendered(resources::report(context, caller, args)),
    ),
    verb(
        "ports:set",
        "ports:set APP PORT|default",
        "set the port the app listens on ($PORT; default: the image's EXPOSE, else 5000)",
        |context, caller, args, _| rendered(ports::set(context, caller, args)),
    ),
    verb(
        "releases",
        "releases APP",
        "list an app's releases, newest first",
        |context, caller, args, _| rendered(releases::list(context, caller, args)),
    ),
    verb(
        "deploy",
        "deploy APP IMAGE",
        "release IMAGE with the app's env and roll it out",
        |context, caller, args, _| rendered(releases::deploy(context, caller, args)),
    ),
    verb(
        "rollback",
        "rollback APP [N]",
        "release an earlier release's image and env again (default: the one before)",
        |context, caller, args, _| rendered(releases::rollback(context, caller, args)),
    ),
    verb(
        "deploy:follow",
        "deploy:follow APP REPO [TAG-GLOB]",
        "deploy each new tag of REPO (matching TAG-GLOB) pushed to Paz's registry",
        |context, caller, args, _| rendered(follow::follow(context, caller, args)),
    ),
    verb(
        "ps",
        "ps APP",
        "list an app's instances",
        |context, caller, args, _| rendered(instances::ps(context, caller, args)),
    ),
    verb(
        "run",
        "run APP COMMAND...",
        "run COMMAND in a one-off container of the serving release, attached (with a TTY under ssh -t); its exit code is yours",
        |_, _, _, _| {
            Box::pin(async {
                Err(VerbError::Invalid(
                    "run attaches a terminal or pipes: use ssh paz@HOST run APP COMMAND or paz run, or run:detached".into(),
                ))
            })
        },
    ),
    verb(
        "run:detached",
        "run:detached APP COMMAND...",
        "run COMMAND in a one-off container whose output goes to the app's logs",
        |context, caller, args, _| rendered(runs::detached(context, caller, args)),
    ),
    verb(
        "run:list",
        "run:list APP",
        "list an app's one-off containers",
        |context, caller, args, _| rendered(runs::list(context, caller, args)),
    ),
    verb(
        "run:stop",
        "run:stop APP ID",
        "stop a one-off and remove its container",
        |context, caller, args, _| rendered(runs::stop(context, caller, args)),
    ),
    verb(
        "cron:list",
        "cron:list APP",
        "list the app's cron jobs (app.json): next run, last run and its exit code, in UTC",
        |context, caller, args, _| rendered(cron::list(context, caller, args)),
    ),
    verb(
        "cron:run",
        "cron:run APP ID",
        "run a cron job now, as a detached one-off",
        |context, caller, args, _| rendered(cron::run(context, caller, args)),
    ),
    verb(
        "ps:restart",
        "ps:restart APP",
        "restart an app's instances one at a time",
        |context, caller, args, _| rendered(instances::restart(context, caller, args)),
    ),
    verb(
        "ps:scale",
        "ps:scale APP TYPE=N...",
        "run N instances of each process type (web, or any the Procfile names)",
        |context, caller, args, _| rendered(instances::scale(context, caller, args)),
    ),
];

/// The verb called `name`, if there is one.
pub fn find(name: &str) -> Option<&'static Verb> {
    VERBS.iter().find(|verb| verb.name == name)
}

/// Runs `verb` with `args` for `caller`. `stdin` is the caller's input for verbs
/// that read it, and empty otherwise.
pub async fn run(
    context: &Context,
    caller: &Caller,
    verb: &str,
    args: &[String],
    stdin: &[u8],
) -> Result<Outcome, VerbError> {
    let Some(spec) = find(verb) else {
        return Err(VerbError::UnknownVerb(verb.to_string()));
    };
    (spec.run)(context, caller, args::Args::new(spec, args), stdin).await
}

/// What `help` says: every verb of the table.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct Help(Vec<VerbHelp>);

/// One line of `help`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VerbHelp {
    pub verb: &'static str,
    pub usage: &'static str,
    pub summary: &'static str,
}

impl std::fmt::Display for Help {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let width = self
            .0
            .iter()
            .map(|verb| verb.usage.len())
            .max()
            .unwrap_or(0);
        write!(f, "Paz verbs (add --json for machine-readable output):")?;
        for verb in &self.0 {
            write!(f, "\n  {:width$}  {}", verb.usage, verb.summary)?;
        }
        Ok(())
    }
}

fn help() -> Help {
    Help(
        VERBS
            .iter()
            .map(|verb| VerbHelp {
                verb: verb.name,
                usage: verb.usage,
                summary: verb.summary,
            })
            .collect(),
    )
}

/// A time in seconds since the Unix epoch as RFC 3339 UTC (`2026-11-28T05:50:19Z`).
fn utc(seconds: u64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds),
    )
    .to_string()
}

/// How long before `now` the time `seconds` was (both since the Unix
/// epoch), to the largest two units (`3h 12m`).
fn age(seconds: u64, now: u64) -> String {
    let elapsed = now.saturating_sub(seconds);
    let (days, hours, minutes) = (elapsed / 86400, elapsed / 3600 % 24, elapsed / 60 % 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{elapsed}s"),
        (0, 0, m) => format!("{m}m {}s", elapsed % 60),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_table_names_each_verb_once_and_help_lists_them_all() {
        let mut names: Vec<&str> = VERBS.iter().map(|verb| verb.name).collect();
        names.sort_unstable();
        let count = names.len();
        names.dedup();
        assert_eq!(names.len(), count, "a verb is named twice");
        let help = help();
        for verb in VERBS {
            assert!(
                verb.usage.split_whitespace().next() == Some(verb.name),
                "{}: its usage starts with its name",
                verb.name
            );
            assert!(
                help.to_string().contains(verb.usage),
                "help lists {}",
                verb.name
            );
            assert_eq!(find(verb.name).map(|found| found.name), Some(verb.name));
        }
        assert!(find("apps:frobnicate").is_none());
    }
}

//! Paz's verbs (`apps:create`, `config:set`, ...) as functions over the store:
//! one implementation serves every front door (SSH commands now, the REST API
//! later). A front door authenticates the caller, splits the command line and
//! calls [`run`]; the verb checks the caller's rights and does the work.

#![forbid(unsafe_code)]

mod apps;
mod args;
mod builds;
mod caller;
pub mod cluster;
mod config;
mod domains;
mod error;
mod health;
pub mod keys;
mod ports;
mod releases;
mod tokens;

use std::path::PathBuf;

use serde_json::json;
use store::Store;
use support::now;

pub use apps::create_app;
pub use caller::Caller;
pub use error::VerbError;

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
}

/// Rolls a recorded release out, sending each step as a line; the handle
/// `paz` gives the verbs (and gitd) so that they need not know the deployer.
pub trait Rollouts: Send + Sync + std::fmt::Debug {
    fn roll_out(
        &self,
        app: store::AppName,
        n: u64,
        report: tokio::sync::mpsc::Sender<String>,
    ) -> futures::future::BoxFuture<'static, Result<(), deployer::DeployError>>;

    /// Restarts the serving release's instances one at a time.
    fn restart(
        &self,
        app: store::AppName,
        report: tokio::sync::mpsc::Sender<String>,
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

    /// The bare repository of `app`.
    pub fn repo_path(&self, app: &store::AppName) -> PathBuf {
        self.data_dir.join("git").join(format!("{app}.git"))
    }
}

/// A verb's result: text for people and JSON for scripts (`--json`).
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub text: String,
    pub json: serde_json::Value,
}

impl Outcome {
    fn new(text: impl Into<String>, json: serde_json::Value) -> Outcome {
        Outcome {
            text: text.into(),
            json,
        }
    }

    /// A list, a line per item, or `empty` when there is none.
    fn listing<S: std::borrow::Borrow<str>>(
        lines: &[S],
        empty: impl Into<String>,
        json: serde_json::Value,
    ) -> Outcome {
        let text = if lines.is_empty() {
            empty.into()
        } else {
            lines.join("\n")
        };
        Outcome::new(text, json)
    }
}

/// One verb as `help` lists it.
#[derive(Debug, Clone, Copy)]
pub struct Verb {
    pub name: &'static str,
    pub usage: &'static str,
    pub summary: &'static str,
    /// Whether it reads its input (e.g. a public key) from stdin.
    pub reads_stdin: bool,
}

const fn verb(name: &'static str, usage: &'static str, summary: &'static str) -> Verb {
    Verb {
        name,
        usage,
        summary,
        reads_stdin: false,
    }
}

/// Every verb, in the order `help` lists them.
pub const VERBS: &[Verb] = &[
    verb("help", "help", "list the verbs"),
    verb("apps:list", "apps:list", "list the apps you may use"),
    verb("apps:create", "apps:create APP", "create an app (admin)"),
    verb("apps:info", "apps:info APP", "show an app's settings"),
    verb(
        "apps:destroy",
        "apps:destroy APP --force",
        "delete an app, its releases and its repo (admin)",
    ),
    verb(
        "ssh-keys:list",
        "ssh-keys:list",
        "list the SSH keys (admin)",
    ),
    Verb {
        reads_stdin: true,
        ..verb(
            "ssh-keys:add",
            "ssh-keys:add NAME [--role admin|deployer] [--apps A,B] < key.pub",
            "add the public key on stdin (admin)",
        )
    },
    verb(
        "ssh-keys:remove",
        "ssh-keys:remove NAME|FINGERPRINT",
        "remove an SSH key (admin)",
    ),
    verb("tokens:list", "tokens:list", "list the API tokens (admin)"),
    verb(
        "tokens:create",
        "tokens:create NAME [--role admin|deployer|machine] [--apps A,B]",
        "create an API token and print its secret once (admin)",
    ),
    verb(
        "tokens:revoke",
        "tokens:revoke NAME",
        "revoke an API token (admin)",
    ),
    verb(
        "config:show",
        "config:show APP",
        "show an app's environment",
    ),
    verb(
        "config:get",
        "config:get APP KEY",
        "print one environment variable",
    ),
    verb(
        "config:set",
        "config:set APP KEY=VALUE ...",
        "set environment variables",
    ),
    verb(
        "config:unset",
        "config:unset APP KEY ...",
        "remove environment variables",
    ),
    verb(
        "domains:list",
        "domains:list APP",
        "list the domains routed to an app",
    ),
    verb(
        "domains:add",
        "domains:add APP DOMAIN",
        "route a domain to an app",
    ),
    verb(
        "domains:remove",
        "domains:remove APP DOMAIN",
        "stop routing a domain to an app",
    ),
    verb("builds", "builds APP", "list an app's builds, newest first"),
    verb(
        "machines:list",
        "machines:list",
        "list the machines and their units (admin)",
    ),
    verb(
        "units:list",
        "units:list [APP]",
        "list units, where they run and their state",
    ),
    verb("units:cat", "units:cat UNIT", "print a unit file"),
    verb(
        "builds:log",
        "builds:log APP [ID]",
        "print a build's log (the newest by default)",
    ),
    verb(
        "health:set",
        "health:set APP [path=/up] [timeout=5] [attempts=3]",
        "set how new instances are checked",
    ),
    verb(
        "ports:set",
        "ports:set APP PORT|default",
        "set the port the app listens on ($PORT; default: the image's EXPOSE, else 5000)",
    ),
    verb(
        "releases",
        "releases APP",
        "list an app's releases, newest first",
    ),
    verb(
        "deploy",
        "deploy APP IMAGE",
        "release IMAGE with the app's env and roll it out",
    ),
    verb(
        "rollback",
        "rollback APP [N]",
        "release an earlier release's image and env again (default: the one before)",
    ),
    verb(
        "deploy:follow",
        "deploy:follow APP REPO [TAG-GLOB]",
        "deploy each new tag of REPO (matching TAG-GLOB) pushed to Paz's registry",
    ),
    verb("ps", "ps APP", "list an app's instances"),
    verb(
        "ps:restart",
        "ps:restart APP",
        "restart an app's instances one at a time",
    ),
    verb(
        "ps:scale",
        "ps:scale APP [web=N] [worker=M]",
        "run N web and M worker instances of the current release",
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
    let args = args::Args::new(spec, args);
    match spec.name {
        "help" => Ok(help()),
        "apps:list" => apps::list(context, caller).await,
        "apps:create" => apps::create(context, caller, args).await,
        "apps:info" => apps::info(context, caller, args).await,
        "apps:destroy" => apps::destroy(context, caller, args).await,
        "ssh-keys:list" => keys::list(context, caller).await,
        "ssh-keys:add" => keys::add(context, caller, args, stdin).await,
        "ssh-keys:remove" => keys::remove(context, caller, args).await,
        "tokens:list" => tokens::list(context, caller).await,
        "tokens:create" => tokens::create(context, caller, args).await,
        "tokens:revoke" => tokens::revoke(context, caller, args).await,
        "config:show" => config::show(context, caller, args).await,
        "config:get" => config::get(context, caller, args).await,
        "config:set" => config::set(context, caller, args).await,
        "config:unset" => config::unset(context, caller, args).await,
        "domains:list" => domains::list(context, caller, args).await,
        "domains:add" => domains::add(context, caller, args).await,
        "domains:remove" => domains::remove(context, caller, args).await,
        "health:set" => health::set(context, caller, args).await,
        "ports:set" => ports::set(context, caller, args).await,
        "builds" => builds::list(context, caller, args).await,
        "machines:list" => cluster::machines(context, caller).await,
        "units:list" => cluster::units(context, caller, args).await,
        "units:cat" => cluster::cat(context, caller, args).await,
        "builds:log" => builds::log(context, caller, args).await,
        "releases" => releases::list(context, caller, args).await,
        "deploy" => releases::deploy(context, caller, args).await,
        "rollback" => releases::rollback(context, caller, args).await,
        "ps" => releases::ps(context, caller, args).await,
        "ps:restart" => releases::restart(context, caller, args).await,
        "deploy:follow" => releases::follow(context, caller, args).await,
        "ps:scale" => releases::scale(context, caller, args).await,
        other => Err(VerbError::UnknownVerb(other.to_string())),
    }
}

fn help() -> Outcome {
    let width = VERBS.iter().map(|verb| verb.usage.len()).max().unwrap_or(0);
    let mut text = String::from("Paz verbs (add --json for machine-readable output):\n");
    for verb in VERBS {
        text.push_str(&format!("  {:width$}  {}\n", verb.usage, verb.summary));
    }
    let json = json!(VERBS
        .iter()
        .map(|verb| json!({"verb": verb.name, "usage": verb.usage, "summary": verb.summary}))
        .collect::<Vec<_>>());
    Outcome::new(text.trim_end(), json)
}

/// A time in seconds since the Unix epoch as RFC 3339 UTC (`2026-11-28T05:50:19Z`).
fn utc(seconds: u64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds),
    )
    .to_string()
}

/// How long ago `seconds` (since the Unix epoch) was, to the largest two units (`3h 12m`).
fn age(seconds: u64) -> String {
    let elapsed = now().saturating_sub(seconds);
    let (days, hours, minutes) = (elapsed / 86400, elapsed / 3600 % 24, elapsed / 60 % 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{elapsed}s"),
        (0, 0, m) => format!("{m}m {}s", elapsed % 60),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

//! Every page is a view of a path: the same function renders it whole for
//! a GET and again, its live part only, each time the cluster changes in a
//! way it shows (`live.rs`).

pub(crate) mod admin;
pub(crate) mod app;
pub(crate) mod fleet;
pub(crate) mod login;
pub(crate) mod registry;
pub(crate) mod rollout;

use store::AppName;

use crate::error::Failure;
use crate::layout::Page;
use crate::session::Session;
use crate::WebState;

/// What a path shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum View {
    Fleet,
    Machine(String),
    Apps,
    App(AppName, AppTab),
    Build(AppName, String),
    Rollout(AppName, String),
    /// What rolling back to a release will run, and the button that does it.
    Rollback(AppName, u64),
    Registry,
    Audit,
    Admin,
}

/// A section of an app's page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AppTab {
    Overview,
    Releases,
    Builds,
    Config { revealed: bool },
    Settings,
    Units,
    Logs,
}

/// A path segment that may name a build, rollout or machine.
fn id(text: &str) -> Option<String> {
    (!text.is_empty()
        && text.len() <= 128
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')))
    .then(|| text.to_string())
}

impl View {
    /// The view of `path`; `None` for a path that is no page.
    pub(crate) fn parse(path: &str) -> Option<View> {
        let parts: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
        let app = |name: &str| AppName::new(name).ok();
        Some(match parts.as_slice() {
            [] | [""] => View::Fleet,
            ["machines", machine] => View::Machine(id(machine)?),
            ["apps"] => View::Apps,
            ["registry"] => View::Registry,
            ["audit"] => View::Audit,
            ["admin"] => View::Admin,
            ["apps", name] => View::App(app(name)?, AppTab::Overview),
            ["apps", name, "releases"] => View::App(app(name)?, AppTab::Releases),
            ["apps", name, "builds"] => View::App(app(name)?, AppTab::Builds),
            ["apps", name, "config"] => View::App(app(name)?, AppTab::Config { revealed: false }),
            ["apps", name, "config", "revealed"] => {
                View::App(app(name)?, AppTab::Config { revealed: true })
            }
            ["apps", name, "settings"] => View::App(app(name)?, AppTab::Settings),
            ["apps", name, "units"] => View::App(app(name)?, AppTab::Units),
            ["apps", name, "logs"] => View::App(app(name)?, AppTab::Logs),
            ["apps", name, "builds", build] => View::Build(app(name)?, id(build)?),
            ["apps", name, "rollouts", rollout] => View::Rollout(app(name)?, id(rollout)?),
            ["apps", name, "rollback", n] => View::Rollback(app(name)?, n.parse().ok()?),
            _ => return None,
        })
    }

    /// Renders the view for `session`.
    pub(crate) async fn render(
        &self,
        state: &WebState,
        session: &Session,
    ) -> Result<Page, Failure> {
        match self {
            View::Fleet => fleet::fleet(state, session).await,
            View::Machine(id) => fleet::machine(state, session, id).await,
            View::Apps => app::list(state, session).await,
            View::App(name, tab) => app::app(state, session, name, *tab).await,
            View::Build(name, id) => app::build(state, session, name, id).await,
            View::Rollout(name, id) => rollout::rollout(state, session, name, id).await,
            View::Rollback(name, n) => rollout::rollback(state, session, name, *n).await,
            View::Registry => registry::registry(state, session).await,
            View::Audit => admin::audit(state, session).await,
            View::Admin => admin::admin(state, session, None).await,
        }
    }

    /// Whether `change` alters what the view shows.
    pub(crate) fn cares(&self, change: &api::Change) -> bool {
        use api::Kind;
        let of = |app: &AppName| change.app.as_deref() == Some(app.as_str());
        match self {
            View::Fleet | View::Machine(_) => matches!(
                change.kind,
                Kind::Unit | Kind::Placement | Kind::Unplaced | Kind::State | Kind::Machine
            ),
            View::Apps | View::Audit => true,
            View::App(app, _) | View::Rollback(app, _) => of(app),
            View::Build(app, id) => of(app) && change.kind == Kind::Build && change.name == *id,
            View::Rollout(app, id) => of(app) && change.kind == Kind::Rollout && change.name == *id,
            View::Registry => matches!(change.kind, Kind::Release | Kind::App),
            View::Admin => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_views() {
        let web = || AppName::new("web").unwrap();
        assert_eq!(View::parse("/"), Some(View::Fleet));
        assert_eq!(
            View::parse("/apps/web"),
            Some(View::App(web(), AppTab::Overview))
        );
        assert_eq!(
            View::parse("/apps/web/config/revealed"),
            Some(View::App(web(), AppTab::Config { revealed: true }))
        );
        assert_eq!(
            View::parse("/apps/web/rollouts/r-1"),
            Some(View::Rollout(web(), "r-1".into()))
        );
        assert_eq!(
            View::parse("/apps/web/rollback/3"),
            Some(View::Rollback(web(), 3))
        );
        for none in [
            "/apps/Bad_Name",
            "/apps/web/rollback/x",
            "/apps/web/builds/a%2F..",
            "/etc/passwd",
            "/apps/web/nope",
        ] {
            assert_eq!(View::parse(none), None, "{none}");
        }
    }
}

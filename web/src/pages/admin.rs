//! The admin page (SSH keys and tokens, a new token's secret shown once)
//! and the audit log: who changed what and when, from the records etcd
//! already keeps (apps, releases, rollouts, builds).

use maud::{html, Markup};
use store::records::Role;

use crate::data;
use crate::error::Failure;
use crate::layout::{button, csrf, utc, when, Page};
use crate::session::Session;
use crate::WebState;

/// A token just made: its secret, shown this once.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct NewToken {
    pub(crate) name: String,
    pub(crate) secret: String,
}

fn role_fields() -> Markup {
    html! {
        label { "Role "
            select name="role" {
                option value="deployer" { "deployer" }
                option value="admin" { "admin" }
            }
        }
        label { "Apps " input type="text" name="apps" placeholder="app1,app2 (deployers)"; }
    }
}

pub(crate) async fn admin(
    state: &WebState,
    session: &Session,
    new: Option<NewToken>,
) -> Result<Page, Failure> {
    let caller = &session.caller;
    caller
        .require_admin("see the keys and tokens")
        .map_err(|error| Failure::Api(error.into()))?;
    let keys = data::keys(state, caller).await?;
    let tokens: Vec<data::TokenRow> = data::read(state, caller, "tokens:list", &[]).await?;
    let apps = |apps: &[store::AppName], role: Role| -> String {
        match role {
            Role::Admin => "every app".into(),
            _ => apps
                .iter()
                .map(|a| a.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }
    };
    let live = html! {
        @if let Some(new) = &new {
            section.card.notice role="status" {
                h2 { "Token " (new.name) " made" }
                p { "Its secret is shown this once: copy it now." }
                pre.mono #new-secret { (new.secret) }
            }
        }
        h2 { "Tokens" }
        table.tokens {
            thead { tr { th { "Name" } th { "Role" } th { "Apps" } th {} } }
            tbody {
                @for token in &tokens {
                    tr data-token=(token.name) {
                        td { (token.name) }
                        td { (token.role.as_str()) }
                        td { (apps(&token.apps, token.role)) }
                        td { (button(session, &format!("/admin/tokens/{}/revoke", token.name), "Revoke", "link")) }
                    }
                }
            }
        }
        h2 { "SSH keys" }
        table.keys {
            thead { tr { th { "Name" } th { "Fingerprint" } th { "Role" } th { "Apps" } th {} } }
            tbody {
                @for key in &keys {
                    tr data-key=(key.name) {
                        td { (key.name) }
                        td.mono { (key.fingerprint) }
                        td { (key.role.as_str()) }
                        td { (apps(&key.apps, key.role)) }
                        td { (button(session, &format!("/admin/keys/{}/remove", key.fingerprint), "Remove", "link")) }
                    }
                }
            }
        }
    };
    let fixed = html! {
        section.card {
            h2 { "Make a token" }
            form.row method="post" action="/admin/tokens" {
                (csrf(session))
                label { "Name " input type="text" name="name" required pattern="[a-z0-9][a-z0-9-]*"; }
                (role_fields())
                button.primary type="submit" { "Make" }
            }
        }
        section.card {
            h2 { "Add an SSH key" }
            form.stack method="post" action="/admin/keys" {
                (csrf(session))
                div.row {
                    label { "Name " input type="text" name="name" required pattern="[a-z0-9][a-z0-9-]*"; }
                    (role_fields())
                }
                label { "Public key " textarea name="public_key" rows="3" required placeholder="ssh-ed25519 AAAA… you@host" {} }
                button.primary type="submit" { "Add" }
            }
        }
    };
    Ok(Page::new("Admin", live).with_fixed(fixed))
}

/// One thing that happened.
#[derive(Debug)]
struct Entry {
    at: u64,
    by: String,
    app: String,
    what: String,
    link: Option<String>,
}

pub(crate) async fn audit(state: &WebState, session: &Session) -> Result<Page, Failure> {
    let caller = &session.caller;
    let now = state.api.context.clock.now();
    let mut entries = Vec::new();
    for app in data::apps(state, caller).await? {
        let info = data::app_info(state, caller, &app).await?;
        let name = app.to_string();
        entries.push(Entry {
            at: info.app.created_at,
            by: String::new(),
            app: name.clone(),
            what: "app created".into(),
            link: None,
        });
        for release in data::releases(state, caller, &app).await? {
            let cause = crate::layout::named(&release.cause);
            entries.push(Entry {
                at: release.created_at,
                by: release.by,
                app: name.clone(),
                what: format!("release v{} ({cause})", release.n),
                link: Some(format!("/apps/{app}/releases")),
            });
        }
        for rollout in api::rollouts(&state.api, caller, &app).await? {
            let status = crate::layout::named(&rollout.status);
            entries.push(Entry {
                at: rollout.started_at,
                by: rollout.by,
                app: name.clone(),
                what: format!("{} rollout, {status}", rollout.kind),
                link: Some(format!("/apps/{app}/rollouts/{}", rollout.id)),
            });
        }
        for build in data::builds(state, caller, &app).await? {
            let status = crate::layout::named(&build.build.status);
            let sha = &build.build.git_sha[..build.build.git_sha.len().min(7)];
            entries.push(Entry {
                at: build.build.started_at,
                by: build.build.by,
                app: name.clone(),
                what: format!("build of {sha}, {status}"),
                link: Some(format!("/apps/{app}/builds/{}", build.id)),
            });
        }
    }
    entries.sort_by_key(|entry| std::cmp::Reverse(entry.at));
    entries.truncate(300);
    let live = html! {
        @if entries.is_empty() { p.muted { "Nothing has happened yet." } }
        @else {
            table.audit {
                thead { tr { th { "When" } th { "Who" } th { "App" } th { "What" } } }
                tbody {
                    @for entry in &entries {
                        tr {
                            td title=(utc(entry.at)) { (when(entry.at, now)) }
                            td { (entry.by) }
                            td { a href={ "/apps/" (entry.app) } { (entry.app) } }
                            td { @match &entry.link { Some(link) => { a href=(link) { (entry.what) } } None => { (entry.what) } } }
                        }
                    }
                }
            }
        }
    };
    Ok(Page::new("Audit log", live))
}

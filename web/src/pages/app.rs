//! The apps page and an app's page: its overview (release, formation with
//! scale controls, instances), releases (with what changed and a rollback
//! to each), builds and their logs, config, settings (domains, health
//! check) and unit files.

use std::collections::{BTreeMap, BTreeSet};

use maud::{html, Markup};
use store::records::{Release, ReleaseStatus};
use store::AppName;

use crate::charts::chart;
use crate::data::{self, AppInfo, UnitRow};
use crate::error::Failure;
use crate::layout::{badge, button, csrf, masked, named, short_digest, when, Page};
use crate::pages::AppTab;
use crate::session::Session;
use crate::WebState;

fn now(state: &WebState) -> u64 {
    state.api.context.clock.now()
}

/// The tabs of an app's page, `on` marked.
fn tabs(app: &AppName, on: Option<AppTab>) -> Markup {
    let tab = |path: &str, name: &str, this: bool| {
        html! { a href={ "/apps/" (app) (path) } aria-current=[this.then_some("page")] { (name) } }
    };
    html! {
        nav.tabs {
            (tab("", "Overview", on == Some(AppTab::Overview)))
            (tab("/releases", "Releases", on == Some(AppTab::Releases)))
            (tab("/builds", "Builds", on == Some(AppTab::Builds)))
            (tab("/config", "Config", matches!(on, Some(AppTab::Config { .. }))))
            (tab("/settings", "Settings", on == Some(AppTab::Settings)))
            (tab("/units", "Units", on == Some(AppTab::Units)))
            (tab("/logs", "Logs", on == Some(AppTab::Logs)))
        }
    }
}

/// The process types of a release: its Procfile's, or `web` alone.
fn process_types(release: Option<&Release>) -> Vec<String> {
    match release {
        Some(release) if !release.processes.is_empty() => {
            release.processes.keys().cloned().collect()
        }
        _ => vec!["web".into()],
    }
}

pub(crate) async fn list(state: &WebState, session: &Session) -> Result<Page, Failure> {
    let caller = &session.caller;
    let now = now(state);
    let mut rows = Vec::new();
    for app in data::apps(state, caller).await? {
        let info = data::app_info(state, caller, &app).await?;
        let instances = data::instances(state, caller, &app).await?;
        let last = api::rollouts(&state.api, caller, &app)
            .await?
            .into_iter()
            .last();
        rows.push((app, info, instances, last));
    }
    let live = html! {
        @if rows.is_empty() {
            p.empty { "No apps yet: create one with " code { "ssh paz@HOST apps:create APP" } "." }
        } @else {
            table.apps {
                thead { tr { th { "App" } th { "Release" } th { "Instances" } th { "Domains" } th { "Last deploy" } } }
                tbody {
                    @for (app, info, instances, last) in &rows {
                        @let running = instances.iter().filter(|i| !i.is_sidekick() && i.active() == "active").count();
                        @let desired: u32 = info.app.scale.all().iter().map(|(_, n)| n).sum();
                        tr data-app=(app) {
                            td { a href={ "/apps/" (app) } { strong { (app) } } }
                            td { @match info.current_release { Some(n) => { "v" (n) } None => { span.muted { "none" } } } }
                            td { (running) " / " (desired) }
                            td {
                                @if let Some(url) = &info.url { a href=(url) { (url.trim_start_matches("http://")) } br; }
                                @for domain in &info.app.domains { (domain) br; }
                            }
                            td {
                                @if let Some(last) = last {
                                    a href={ "/apps/" (app) "/rollouts/" (last.id) } { (last.kind) }
                                    " by " (last.by) " " (when(last.started_at, now)) " "
                                    (badge(&named(&last.status)))
                                } @else { span.muted { "never" } }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(Page::new("Apps", live))
}

pub(crate) async fn app(
    state: &WebState,
    session: &Session,
    app: &AppName,
    tab: AppTab,
) -> Result<Page, Failure> {
    let caller = &session.caller;
    let info = data::app_info(state, caller, app).await?;
    let page = match tab {
        AppTab::Overview => overview(state, session, app, &info).await?,
        AppTab::Releases => releases(state, session, app, &info).await?,
        AppTab::Builds => builds(state, session, app).await?,
        AppTab::Config { revealed } => config(state, session, app, &info, revealed).await?,
        AppTab::Settings => settings(state, session, app, &info).await?,
        AppTab::Units => unit_files(state, session, app).await?,
        AppTab::Logs => logs(app),
    };
    Ok(page.with_tabs(tabs(app, Some(tab))))
}

async fn overview(
    state: &WebState,
    session: &Session,
    app: &AppName,
    info: &AppInfo,
) -> Result<Page, Failure> {
    let caller = &session.caller;
    let now = now(state);
    let releases = data::releases(state, caller, app).await?;
    let current = info
        .current_release
        .and_then(|n| releases.iter().find(|r| r.n == n));
    let instances = data::instances(state, caller, app).await?;
    let store = &state.api.context.store;
    let routed: BTreeSet<String> = store
        .list(&store.keys().services_of(app))
        .await?
        .entries
        .iter()
        .map(|entry| {
            store
                .keys()
                .services_of(app)
                .child_name(&entry.key)
                .to_string()
        })
        .collect();
    let types = process_types(current);
    let desired = |process: &str| info.app.scale.of(process);
    let running = |process: &str| {
        instances
            .iter()
            .filter(|row| !row.is_sidekick() && row.active() == "active")
            .filter(|row| {
                units::parse_instance_name(&row.unit).is_some_and(|n| n.process == process)
            })
            .count()
    };
    let health = |row: &UnitRow| {
        let name = units::parse_instance_name(&row.unit)?;
        if name.process != "web" {
            return None;
        }
        Some(routed.contains(&format!("{}/{}", name.release, name.index)))
    };
    let live = html! {
        dl.facts {
            dt { "URL" } dd { @match &info.url { Some(url) => { a href=(url) { (url) } } None => { span.muted { "no base domain set" } } } }
            dt { "Release" } dd {
                @match current {
                    Some(release) => {
                        a href={ "/apps/" (app) "/releases" } { "v" (release.n) } " "
                        span.mono { (short_digest(&release.image)) }
                        @if let Some(sha) = &release.git_sha { " · " span.mono { (&sha[..sha.len().min(7)]) } }
                        " · by " (release.by) " " (when(release.created_at, now))
                    }
                    None => { span.muted { "none yet: git push paz main, or deploy an image" } }
                }
            }
            dt { "Domains" } dd {
                @if info.app.domains.is_empty() { span.muted { "none" } }
                @for domain in &info.app.domains { span.chip { (domain) } }
            }
        }
        h2 { "Formation" }
        table.formation {
            thead { tr { th { "Process" } th { "Running" } th { "Desired" } } }
            tbody {
                @for process in &types {
                    tr data-process=(process) {
                        td { (process) }
                        td.running { (running(process)) }
                        td.desired { (desired(process)) }
                    }
                }
            }
        }
        h2 { "Instances" }
        @if instances.is_empty() {
            p.muted { "No instances." }
        } @else {
            table.instances {
                thead { tr { th { "Instance" } th { "Machine" } th { "State" } th { "Health" } th { "Age" } } }
                tbody {
                    @for row in instances.iter().filter(|row| !row.is_sidekick()) {
                        tr data-unit=(row.unit) {
                            td { (row.label()) }
                            td.mono { @if let Some(m) = &row.machine { (&m[..m.len().min(12)]) } @else { "-" } }
                            td { (badge(row.active())) @if let Some(reason) = row.state.as_ref().and_then(|s| s.reason.as_deref()).or(row.unplaced.as_deref()) { " " span.reason { (reason) } } }
                            td {
                                @match health(row) {
                                    Some(true) => { (badge("healthy")) }
                                    Some(false) => { span.muted { "not routed" } }
                                    None => { span.muted { "-" } }
                                }
                            }
                            td { @if let Some(s) = &row.state { (crate::layout::age(s.since, now)) } }
                        }
                    }
                }
            }
        }
    };
    let charts = state.history.app(app.as_str());
    let now_f = now as f64;
    let one =
        |label: &str, points: &crate::history::Points| vec![(label.to_string(), points.clone())];
    let fixed = html! {
        section.charts {
            h2 { "The last hour" }
            div.chart-grid {
                (chart("Requests", "/s", &one("requests", &charts.requests), now_f))
                (chart("Errors (5xx)", "/s", &one("errors", &charts.errors), now_f))
                (chart("Latency", "ms", &[("p50".to_string(), charts.p50.clone()), ("p99".to_string(), charts.p99.clone())], now_f))
                (chart("Memory", "MiB", &charts.memory, now_f))
            }
        }
        section.card {
            h2 { "Scale" }
            form.row method="post" action={ "/apps/" (app) "/scale" } {
                (csrf(session))
                @for process in types.iter().filter(|p| p.as_str() != "release") {
                    label { (process) " "
                        input type="number" name=(process) min="0" max="100" value=(desired(process)) required;
                    }
                }
                button.primary type="submit" { "Scale" }
            }
            p.hint { "Scaling rolls the current release out to that many instances; the rollout's page follows it." }
            (button(session, &format!("/apps/{app}/restart"), "Restart every instance", "secondary"))
        }
    };
    Ok(Page::new(app.to_string(), live).with_fixed(fixed))
}

/// What changed from `before` to `release`, env values masked.
fn difference(release: &Release, before: Option<&Release>) -> Markup {
    let Some(before) = before else {
        return html! { span.muted { "the first release" } };
    };
    let mut lines: Vec<Markup> = Vec::new();
    if release.image != before.image {
        lines.push(html! { "image " span.mono { (short_digest(&before.image)) } " → " span.mono { (short_digest(&release.image)) } });
    }
    if release.git_sha != before.git_sha {
        let short = |sha: &Option<String>| {
            sha.as_deref()
                .map(|s| s[..s.len().min(7)].to_string())
                .unwrap_or_else(|| "-".into())
        };
        lines.push(
            html! { "git " span.mono { (short(&before.git_sha)) " → " (short(&release.git_sha)) } },
        );
    }
    let keys: BTreeSet<&String> = release.env.keys().chain(before.env.keys()).collect();
    for key in keys {
        match (before.env.get(key), release.env.get(key)) {
            (None, Some(_)) => lines.push(html! { ins { "+ " (key) "=" (masked()) } }),
            (Some(_), None) => lines.push(html! { del { "− " (key) } }),
            (Some(a), Some(b)) if a != b => lines.push(html! { "~ " (key) " changed" }),
            _ => {}
        }
    }
    if release.processes != before.processes {
        lines.push(html! { "processes: " (release.processes.keys().cloned().collect::<Vec<_>>().join(", ")) });
    }
    html! {
        @if lines.is_empty() { span.muted { "same image and env as v" (before.n) } }
        @else { ul.diff { @for line in lines { li { (line) } } } }
    }
}

async fn releases(
    state: &WebState,
    session: &Session,
    app: &AppName,
    info: &AppInfo,
) -> Result<Page, Failure> {
    let caller = &session.caller;
    let now = now(state);
    let releases = data::releases(state, caller, app).await?;
    let mut subjects = BTreeMap::new();
    for sha in releases.iter().filter_map(|r| r.git_sha.as_deref()) {
        if !subjects.contains_key(sha) {
            subjects.insert(sha.to_string(), data::commit_subject(state, app, sha).await);
        }
    }
    let live = html! {
        @if releases.is_empty() {
            p.empty { "No releases yet: " code { "git push paz main" } ", or deploy an image." }
        } @else {
            table.releases {
                thead { tr { th { "Version" } th { "Cause" } th { "Image" } th { "Commit" } th { "By" } th { "When" } th { "Status" } th { "Changes" } th {} } }
                tbody {
                    @for (i, release) in releases.iter().enumerate().rev() {
                        @let serving = info.current_release == Some(release.n);
                        tr data-release=(release.n) class=[serving.then_some("serving")] {
                            td { strong { "v" (release.n) } @if serving { " " (badge("serving")) } }
                            td { (named(&release.cause)) }
                            td.mono title=(release.image) { (short_digest(&release.image)) }
                            td {
                                @if let Some(sha) = &release.git_sha {
                                    span.mono { (&sha[..sha.len().min(7)]) }
                                    @if let Some(Some(subject)) = subjects.get(sha) { " " span.subject { (subject) } }
                                }
                            }
                            td { (release.by) }
                            td { (when(release.created_at, now)) }
                            td { (badge(&named(&release.status))) }
                            td { (difference(release, i.checked_sub(1).and_then(|b| releases.get(b)))) }
                            td {
                                @if !serving && matches!(release.status, ReleaseStatus::Active | ReleaseStatus::Superseded) {
                                    a.button.secondary href={ "/apps/" (app) "/rollback/" (release.n) } { "Roll back to v" (release.n) "…" }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(Page::new(format!("{app}: releases"), live))
}

async fn builds(state: &WebState, session: &Session, app: &AppName) -> Result<Page, Failure> {
    let caller = &session.caller;
    let now = now(state);
    let builds = data::builds(state, caller, app).await?;
    let live = html! {
        @if builds.is_empty() {
            p.empty { "No builds yet: " code { "git push paz main" } "." }
        } @else {
            table.builds {
                thead { tr { th { "Build" } th { "Commit" } th { "By" } th { "Started" } th { "Buildpack" } th { "Status" } } }
                tbody {
                    @for row in builds.iter().rev() {
                        tr data-build=(row.id) {
                            td { a href={ "/apps/" (app) "/builds/" (row.id) } { (row.id) } }
                            td.mono { (&row.build.git_sha[..row.build.git_sha.len().min(7)]) }
                            td { (row.build.by) }
                            td { (when(row.build.started_at, now)) }
                            td { (row.build.buildpack.as_deref().unwrap_or("-")) }
                            td { (badge(&named(&row.build.status))) }
                        }
                    }
                }
            }
        }
    };
    Ok(Page::new(format!("{app}: builds"), live))
}

/// One build: its record (live) and its log, whose new lines are added as
/// the builder writes them.
pub(crate) async fn build(
    state: &WebState,
    session: &Session,
    app: &AppName,
    id: &str,
) -> Result<Page, Failure> {
    let caller = &session.caller;
    let now = now(state);
    let builds = data::builds(state, caller, app).await?;
    let row = builds
        .iter()
        .find(|row| row.id == id)
        .ok_or_else(|| Failure::not_found(format!("{app} has no build {id} among its last 20")))?;
    let build = &row.build;
    let subject = data::commit_subject(state, app, &build.git_sha).await;
    let running = build.status == store::records::BuildStatus::Running;
    let live = html! {
        dl.facts {
            dt { "Status" } dd { (badge(&named(&build.status))) }
            dt { "Commit" } dd { span.mono { (build.git_sha) } @if let Some(subject) = &subject { " " span.subject { (subject) } } }
            dt { "By" } dd { (build.by) }
            dt { "Started" } dd { (when(build.started_at, now)) }
            @if let Some(finished) = build.finished_at { dt { "Took" } dd { (finished.saturating_sub(build.started_at)) " s" } }
            @if let Some(image) = &build.image { dt { "Image" } dd.mono { (image) } }
            @if let Some(error) = &build.error { dt { "Error" } dd.error { (error) } }
        }
    };
    // The log so far; while the build runs, the rest follows line by line.
    let log: Option<String> = if running {
        None
    } else {
        let logged: Result<serde_json::Value, _> =
            data::read(state, caller, "builds:log", &[app.as_str(), id]).await;
        logged
            .ok()
            .and_then(|v| v["log"].as_str().map(str::to_string))
    };
    let fixed = html! {
        h2 { "Log" }
        @if running {
            div hx-ext="sse" sse-connect={ "/live/log/" (app) "/" (id) } sse-close="end" {
                pre.log #log sse-swap="line" hx-swap="beforeend" {}
                p.muted #log-end sse-swap="end" { "building…" }
            }
        } @else {
            pre.log #log {
                @match &log {
                    Some(log) => { @for line in log.lines() { div { (line) } } }
                    None => { "the log is not on this host" }
                }
            }
        }
    };
    Ok(Page::new(format!("{app}: build {id}"), live)
        .with_tabs(tabs(app, Some(AppTab::Builds)))
        .with_fixed(fixed))
}

/// The app's log: its newest lines from every machine, then each new one
/// as it is printed (`/live/logs/APP`).
fn logs(app: &AppName) -> Page {
    let fixed = html! {
        p.hint { "Every instance's output and the agents' own lines, from every machine, merged by time. The same as " span.mono { "logs " (app) " -f" } " over SSH." }
        div hx-ext="sse" sse-connect={ "/live/logs/" (app) } {
            pre.log #app-log sse-swap="line,notice" hx-swap="beforeend" {}
        }
    };
    Page::new(format!("{app}: logs"), html! {}).with_fixed(fixed)
}

async fn config(
    state: &WebState,
    session: &Session,
    app: &AppName,
    info: &AppInfo,
    revealed: bool,
) -> Result<Page, Failure> {
    let caller = &session.caller;
    if revealed && !caller.is_admin() {
        return Err(Failure::forbidden(
            "only an admin may see config values: a deployer sets them",
        ));
    }
    let env = data::config(state, caller, app).await?;
    let next = data::releases(state, caller, app)
        .await?
        .iter()
        .map(|r| r.n)
        .max()
        .unwrap_or(0)
        + 1;
    let live = html! {
        @if env.is_empty() {
            p.muted { "No config vars." }
        } @else {
            table.config {
                thead { tr { th { "Key" } th { "Value" } th {} } }
                tbody {
                    @for (key, value) in &env {
                        tr data-key=(key) {
                            td.mono { (key) }
                            td.mono { @if revealed { (value) } @else { (masked()) } }
                            td {
                                form.inline method="post" action={ "/apps/" (app) "/config/unset" } {
                                    (csrf(session))
                                    input type="hidden" name="key" value=(key);
                                    button.link type="submit" { "Remove" }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if caller.is_admin() {
            p {
                @if revealed { a href={ "/apps/" (app) "/config" } { "Mask the values" } }
                @else { a href={ "/apps/" (app) "/config/revealed" } { "Reveal the values" } }
            }
        }
    };
    let makes = if info.current_release.is_some() {
        format!("Saving makes release v{next} with this change and rolls it out.")
    } else {
        "Saved for the first release (the app has none yet).".to_string()
    };
    let fixed = html! {
        section.card {
            h2 { "Set a config var" }
            form.row method="post" action={ "/apps/" (app) "/config" } {
                (csrf(session))
                label { "Key " input type="text" name="key" required pattern="[A-Za-z_][A-Za-z0-9_]*" autocomplete="off"; }
                label { "Value " input type="text" name="value" autocomplete="off"; }
                button.primary type="submit" { "Save" }
            }
            p.hint #makes-release { (makes) }
        }
    };
    Ok(Page::new(format!("{app}: config"), live).with_fixed(fixed))
}

async fn settings(
    state: &WebState,
    session: &Session,
    app: &AppName,
    info: &AppInfo,
) -> Result<Page, Failure> {
    let health = &info.app.health;
    let listed = api::verb(&state.api, &session.caller, "certs:list", Vec::new(), b"").await?;
    let certs: Vec<serde_json::Value> = listed
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter(|row| row["app"].as_str() == Some(app.as_str()))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let https = &info.app.https;
    let redirect = https.redirect.unwrap_or(true);
    let text =
        |row: &serde_json::Value, field: &str| row[field].as_str().unwrap_or("-").to_string();
    let live = html! {
        h2 { "HTTPS" }
        table #certificates {
            thead { tr { th { "Domain" } th { "Certificate" } th { "Expires" } th { "Issuer" } } }
            tbody {
                @for row in &certs {
                    tr {
                        td { (text(row, "domain")) }
                        td.{ "state-" (text(row, "state")) } {
                            (text(row, "state"))
                            @if let Some(reason) = row["reason"].as_str() { br; span.muted { (reason) } }
                        }
                        td { (text(row, "expires")) }
                        td { (text(row, "issuer")) }
                    }
                }
            }
        }
        p #https-settings {
            "Redirect from http:// to https://: " strong { @if redirect { "on" } @else { "off" } }
            @if https.redirect.is_none() { " (the default, for names with a certificate)" }
            ". HSTS: " strong { @if https.hsts { "on" } @else { "off" } } "."
        }
        h2 { "Domains" }
        @if info.app.domains.is_empty() { p.muted { "No domains besides " (info.url.as_deref().unwrap_or("the base domain's")) "." } }
        ul.plain {
            @for domain in &info.app.domains {
                li { (domain) " "
                    form.inline method="post" action={ "/apps/" (app) "/domains/remove" } {
                        (csrf(session))
                        input type="hidden" name="domain" value=(domain);
                        button.link type="submit" { "Remove" }
                    }
                }
            }
        }
        h2 { "Health check" }
        p { "New instances get " code { "GET " (health.path) } " within " (health.timeout) " s, up to " (health.attempts) " attempts, before they take traffic." }
    };
    let switch = |setting: &str, on: bool, label: &str| {
        html! {
            form.inline method="post" action={ "/apps/" (app) "/https" } {
                (csrf(session))
                input type="hidden" name="setting" value=(setting);
                input type="hidden" name="value" value=(if on { "off" } else { "on" });
                button type="submit" #{ "https-" (setting) } { "Turn " (label) (if on { " off" } else { " on" }) }
            }
        }
    };
    let fixed = html! {
        section.card {
            h2 { "Serve over HTTPS" }
            p { (switch("redirect", redirect, "the redirect to HTTPS")) " " (switch("hsts", https.hsts, "HSTS")) }
            p.hint { "HSTS tells browsers to use https:// only, for a year: turn it on once HTTPS works." }
        }
        section.card {
            h2 { "Add a domain" }
            form.row method="post" action={ "/apps/" (app) "/domains" } {
                (csrf(session))
                label { "Domain " input type="text" name="domain" required placeholder="www.example.com"; }
                button.primary type="submit" { "Add" }
            }
        }
        section.card {
            h2 { "Change the health check" }
            form.row method="post" action={ "/apps/" (app) "/health" } {
                (csrf(session))
                label { "Path " input type="text" name="path" value=(health.path) required; }
                label { "Timeout (s) " input type="number" name="timeout" min="1" max="60" value=(health.timeout) required; }
                label { "Attempts " input type="number" name="attempts" min="1" max="100" value=(health.attempts) required; }
                button.primary type="submit" { "Save" }
            }
        }
    };
    Ok(Page::new(format!("{app}: settings"), live).with_fixed(fixed))
}

async fn unit_files(state: &WebState, session: &Session, app: &AppName) -> Result<Page, Failure> {
    let caller = &session.caller;
    let units: Vec<UnitRow> = data::read(state, caller, "units:list", &[app.as_str()]).await?;
    let mut files = Vec::new();
    for row in &units {
        let file: data::UnitFile =
            data::read(state, caller, "units:cat", &[row.unit.as_str()]).await?;
        files.push((row, file.text));
    }
    let live = html! {
        @if files.is_empty() { p.muted { "No units: the app runs nothing now." } }
        @for (row, text) in &files {
            details.unit-file {
                summary { span.mono { (row.unit) } " " (badge(row.active())) }
                pre { (text) }
            }
        }
    };
    Ok(Page::new(format!("{app}: units"), live))
}

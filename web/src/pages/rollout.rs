//! A rollout's page: each instance's steps (placed, pulled, started,
//! healthy and routed; for an old one withdrawn and stopped), live while it
//! runs and kept after; and the page that says what a rollback will run.

use std::collections::BTreeMap;

use maud::{html, Markup};
use store::{AppName, Rollout, Step};

use crate::data;
use crate::error::Failure;
use crate::layout::{badge, csrf, masked, short_digest, when, Page};
use crate::session::Session;
use crate::WebState;

/// What happened to one instance, in the columns the page shows.
#[derive(Debug, Default)]
struct Instance {
    machine: Option<String>,
    pulled: bool,
    started: bool,
    ready: Option<(bool, f64)>,
    withdrawn: bool,
    stopping: bool,
    stopped: bool,
    restarting: bool,
}

/// Each instance the steps name, in the order they first appear.
fn instances(steps: &[Step]) -> Vec<(String, Instance)> {
    let mut order: Vec<String> = Vec::new();
    let mut seen: BTreeMap<String, Instance> = BTreeMap::new();
    for step in steps {
        let name = match step {
            Step::Placed { instance, .. }
            | Step::Pulling { instance }
            | Step::Started { instance }
            | Step::Ready { instance, .. }
            | Step::Stopping { instance }
            | Step::Withdrawn { instance }
            | Step::StillAnnounced { instance, .. }
            | Step::Stopped { instance }
            | Step::Restarting { instance } => instance.clone(),
            _ => continue,
        };
        if !seen.contains_key(&name) {
            order.push(name.clone());
        }
        let entry = seen.entry(name).or_default();
        match step {
            Step::Placed { machine, .. } => entry.machine = Some(machine.clone()),
            Step::Pulling { .. } => entry.pulled = true,
            Step::Started { .. } => {
                entry.pulled = true;
                entry.started = true;
            }
            Step::Ready {
                routed, seconds, ..
            } => entry.ready = Some((*routed, *seconds)),
            Step::Stopping { .. } => entry.stopping = true,
            Step::Withdrawn { .. } => entry.withdrawn = true,
            Step::Stopped { .. } => entry.stopped = true,
            Step::Restarting { .. } => entry.restarting = true,
            _ => {}
        }
    }
    order
        .into_iter()
        .filter_map(|name| seen.remove(&name).map(|i| (name, i)))
        .collect()
}

fn mark(done: bool) -> Markup {
    html! { @if done { span.done title="done" { "✓" } } @else { span.muted { "·" } } }
}

pub(crate) async fn rollout(
    state: &WebState,
    session: &Session,
    app: &AppName,
    id: &str,
) -> Result<Page, Failure> {
    let record: Rollout = api::rollout(&state.api, &session.caller, app, id).await?;
    let now = state.api.context.clock.now();
    let status = crate::layout::named(&record.status);
    let failed_step = record.steps.iter().find_map(|step| match step {
        Step::Failed { reason } => Some(reason.clone()),
        _ => None,
    });
    let rows = instances(&record.steps);
    let live = html! {
        dl.facts {
            dt { "Status" } dd #rollout-status { (badge(&status)) }
            dt { "What" } dd { (record.kind) @if let Some(n) = record.release { " of " a href={ "/apps/" (app) "/releases" } { "v" (n) } } }
            dt { "By" } dd { (record.by) }
            dt { "Started" } dd { (when(record.started_at, now)) }
            @if let Some(finished) = record.finished_at { dt { "Took" } dd { (finished.saturating_sub(record.started_at)) " s" } }
        }
        @if let Some(reason) = failed_step.as_ref().or(record.error.as_ref()) {
            p.error role="alert" { "Failed: " (reason) }
        }
        @if !rows.is_empty() {
            table.steps {
                thead { tr { th { "Instance" } th { "Placed on" } th { "Pulled" } th { "Started" } th { "Healthy" } th { "Routed" } th { "Withdrawn" } th { "Stopped" } } }
                tbody {
                    @for (name, instance) in &rows {
                        tr data-instance=(name) {
                            td.mono { (name) @if instance.restarting { " " span.muted { "restart" } } }
                            td.mono { @if let Some(m) = &instance.machine { (&m[..m.len().min(12)]) } @else if instance.stopping { span.muted { "old" } } }
                            td { (mark(instance.pulled)) }
                            td { (mark(instance.started)) }
                            td { @match instance.ready { Some((_, seconds)) => { span.done { "✓" } " " (format!("{seconds:.1}")) " s" } None => { (mark(false)) } } }
                            td { (mark(instance.ready.is_some_and(|(routed, _)| routed))) }
                            td { (mark(instance.withdrawn)) }
                            td { (mark(instance.stopped)) }
                        }
                    }
                }
            }
        }
        h2 { "Steps" }
        ol.log.steps {
            @for step in &record.steps {
                li class=[matches!(step, Step::Failed { .. }).then_some("error")] { (step.to_string()) }
            }
            @if record.status == store::RolloutStatus::Running { li.muted { "…" } }
        }
    };
    Ok(Page::new(
        format!("{app}: {} {}", record.kind, record.id),
        live,
    ))
}

/// What rolling back to release `n` will run, and the button that does it.
pub(crate) async fn rollback(
    state: &WebState,
    session: &Session,
    app: &AppName,
    n: u64,
) -> Result<Page, Failure> {
    let caller = &session.caller;
    let info = data::app_info(state, caller, app).await?;
    let releases = data::releases(state, caller, app).await?;
    let target = releases
        .iter()
        .find(|release| release.n == n)
        .ok_or_else(|| {
            Failure::not_found(format!("{app} has no release v{n}: see its releases"))
        })?;
    let next = releases.iter().map(|r| r.n).max().unwrap_or(0) + 1;
    let live = html! {
        p {
            "This makes release " strong { "v" (next) } " with the image and config of "
            strong { "v" (n) } " and rolls it out"
            @if let Some(current) = info.current_release { ", replacing v" (current) } ":"
        }
        dl.facts {
            dt { "Image" } dd.mono { (target.image) }
            dt { "Digest" } dd.mono { (short_digest(&target.image)) }
            @if let Some(sha) = &target.git_sha { dt { "Commit" } dd.mono { (sha) } }
            dt { "Config" } dd {
                @if target.env.is_empty() { span.muted { "none" } }
                @for key in target.env.keys() { span.chip { (key) "=" (masked()) } }
            }
            dt { "Processes" } dd {
                @if target.processes.is_empty() { "web (the image's command)" }
                @for (process, command) in &target.processes { div { strong { (process) } ": " code { (command) } } }
            }
            dt { "Instances" } dd {
                @for (i, (process, n)) in info.app.scale.all().into_iter().filter(|(p, n)| *p == "web" || *n > 0).enumerate() {
                    @if i > 0 { ", " } (n) " " (process)
                }
            }
        }
    };
    let fixed = html! {
        form.row method="post" action={ "/apps/" (app) "/rollback/" (n) } {
            (csrf(session))
            button.danger type="submit" { "Roll back to v" (n) }
            a.button.secondary href={ "/apps/" (app) "/releases" } { "Cancel" }
        }
    };
    Ok(Page::new(format!("{app}: roll back to v{n}?"), live).with_fixed(fixed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_gathered_by_instance() {
        let steps = vec![
            Step::Placed {
                instance: "a-v2-web-1".into(),
                machine: "m1".into(),
            },
            Step::Started {
                instance: "a-v2-web-1".into(),
            },
            Step::Ready {
                instance: "a-v2-web-1".into(),
                routed: true,
                seconds: 1.5,
            },
            Step::Stopping {
                instance: "a-v1-web-1".into(),
            },
            Step::Withdrawn {
                instance: "a-v1-web-1".into(),
            },
            Step::Released {
                release: 2,
                url: "http://a".into(),
            },
        ];
        let rows = instances(&steps);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].0, "a-v2-web-1");
        assert_eq!(rows[0].1.machine.as_deref(), Some("m1"));
        assert_eq!(rows[0].1.ready, Some((true, 1.5)));
        assert!(rows[1].1.withdrawn && !rows[1].1.stopped);
    }
}

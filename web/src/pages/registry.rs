//! The registry page: each repository of Paz's registry the caller may see,
//! its tags and digests, and the releases that run each.

use std::collections::BTreeMap;

use maud::html;

use crate::data;
use crate::error::Failure;
use crate::layout::{badge, Page};
use crate::session::Session;
use crate::WebState;

pub(crate) async fn registry(state: &WebState, session: &Session) -> Result<Page, Failure> {
    let caller = &session.caller;
    let apps = data::apps(state, caller).await?;
    // Which releases run each digest.
    let mut used: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for app in &apps {
        for release in data::releases(state, caller, app).await? {
            if let Some((_, hex)) = release.image.split_once("@sha256:") {
                used.entry(format!("sha256:{hex}"))
                    .or_default()
                    .push(format!("{app} v{}", release.n));
            }
        }
    }
    let catalog = match &state.registry {
        Some(storage) => storage.catalog().await,
        None => Vec::new(),
    };
    // A repository `app` or `app/...` belongs to app `app`.
    let visible: Vec<_> = catalog
        .into_iter()
        .filter(|repo| {
            let owner = repo.name.split('/').next().unwrap_or_default();
            caller.is_admin() || apps.iter().any(|app| app.as_str() == owner)
        })
        .collect();
    let live = html! {
        @if state.registry.is_none() {
            p.muted { "No registry runs with this server." }
        } @else if visible.is_empty() {
            p.empty { "No images yet: a push builds one, or " code { "docker push" } " to the registry." }
        }
        @for repo in &visible {
            section.card data-repository=(repo.name) {
                h2.mono { (repo.name) }
                table {
                    thead { tr { th { "Digest" } th { "Tags" } th { "Used by" } } }
                    tbody {
                        @for digest in &repo.manifests {
                            @let tags: Vec<&str> = repo.tags.iter().filter(|(_, d)| d.as_deref() == Some(digest.as_str())).map(|(t, _)| t.as_str()).collect();
                            tr {
                                td.mono title=(digest) { (&digest[..digest.len().min(19)]) }
                                td { @for tag in &tags { span.chip { (tag) } } }
                                td {
                                    @match used.get(digest) {
                                        Some(releases) => { @for release in releases { (badge("release")) " " (release) " " } }
                                        None => { span.muted { "no release" } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(Page::new("Registry", live))
}

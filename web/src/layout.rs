//! The one layout every page has: a header with the sections and who is
//! logged in, the page's title and tabs, its live part (swapped whole by
//! the server over SSE when what it shows changes) and its forms; and the
//! small helpers pages share (times, ages, masked values, forms).

use maud::{html, Markup, DOCTYPE};

use crate::session::Session;

/// What htmx may do under the Content-Security-Policy: no inline styles
/// of its own, no eval, no script tags from swapped HTML.
const HTMX_CONFIG: &str = r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false,"historyCacheSize":0}"#;

/// A page as its view renders it.
#[derive(Debug)]
pub(crate) struct Page {
    pub(crate) title: String,
    /// Tabs under the title (an app's sections), if any.
    pub(crate) tabs: Option<Markup>,
    /// What changes as the cluster does: sent again whole when it does.
    pub(crate) live: Markup,
    /// What stays (forms, which a swap would clear while one types).
    pub(crate) fixed: Markup,
    /// The store revision it shows, when older than the one read before
    /// it (the fleet's mirror): its live part follows the changes after.
    pub(crate) revision: Option<i64>,
}

impl Page {
    pub(crate) fn new(title: impl Into<String>, live: Markup) -> Page {
        Page {
            title: title.into(),
            tabs: None,
            live,
            fixed: html! {},
            revision: None,
        }
    }

    pub(crate) fn with_tabs(mut self, tabs: Markup) -> Page {
        self.tabs = Some(tabs);
        self
    }

    pub(crate) fn with_fixed(mut self, fixed: Markup) -> Page {
        self.fixed = fixed;
        self
    }
}

/// The head every document has.
fn head(title: &str) -> Markup {
    let version = crate::assets::version();
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="htmx-config" content=(HTMX_CONFIG);
            title { (title) " · Paz" }
            link rel="stylesheet" href={ "/static/paz.css?v=" (version) };
            script src={ "/static/htmx.min.js?v=" (version) } defer {}
            script src={ "/static/sse.min.js?v=" (version) } defer {}
        }
    }
}

/// A whole page for `session`; `view` is its path, which its live part
/// follows from `revision` on.
pub(crate) fn document(session: &Session, view: &str, revision: i64, page: Page) -> Markup {
    let caller = &session.caller;
    let revision = page.revision.map_or(revision, |shown| shown.min(revision));
    let live_url = format!("/live?view={}&after={revision}", form_urlencode(view));
    let section = view.split('/').nth(1).unwrap_or_default();
    let nav = |href: &str, name: &str, on: bool| {
        html! { a href=(href) aria-current=[on.then_some("page")] { (name) } }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(&page.title))
            body {
                header.top {
                    a.brand href="/" { "Paz" }
                    nav {
                        (nav("/", "Fleet", section.is_empty() || section == "machines"))
                        (nav("/apps", "Apps", section == "apps"))
                        (nav("/registry", "Registry", section == "registry"))
                        (nav("/audit", "Audit", section == "audit"))
                        @if caller.is_admin() {
                            (nav("/admin", "Admin", section == "admin"))
                        }
                    }
                    form.who method="post" action="/logout" {
                        span { (caller.name) " · " (caller.role.as_str()) }
                        (csrf(session))
                        button.link type="submit" { "Log out" }
                    }
                }
                main {
                    h1 { (page.title) }
                    @if let Some(tabs) = &page.tabs { (tabs) }
                    div.live hx-ext="sse" sse-connect=(live_url) {
                        div #live sse-swap="live" { (page.live) }
                        // Items swapped in place by their ids (hx-swap-oob).
                        div hidden sse-swap="patch" hx-swap="none" {}
                    }
                    (page.fixed)
                }
            }
        }
    }
}

/// A page with no session (login, errors).
pub(crate) fn bare(title: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header.top { a.brand href="/" { "Paz" } }
                main.narrow {
                    h1 { (title) }
                    (content)
                }
            }
        }
    }
}

/// The hidden field every form that changes something carries.
pub(crate) fn csrf(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

/// A form of one button that POSTs to `action`.
pub(crate) fn button(session: &Session, action: &str, label: &str, class: &str) -> Markup {
    html! {
        form.inline method="post" action=(action) {
            (csrf(session))
            button class=(class) type="submit" { (label) }
        }
    }
}

/// `text` for a URL's query.
pub(crate) fn form_urlencode(text: &str) -> String {
    serde_urlencoded::to_string([("", text)])
        .unwrap_or_default()
        .trim_start_matches('=')
        .to_string()
}

/// A time as UTC, to the second.
pub(crate) fn utc(seconds: u64) -> String {
    let days = seconds / 86_400;
    let (hour, minute, second) = (seconds / 3600 % 24, seconds / 60 % 60, seconds % 60);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02} UTC")
}

/// How long ago `then` was, in one unit ("4 s", "3 min", "2 h", "5 d").
pub(crate) fn age(then: u64, now: u64) -> String {
    let seconds = now.saturating_sub(then);
    match seconds {
        0..60 => format!("{seconds} s"),
        60..3600 => format!("{} min", seconds / 60),
        3600..86_400 => format!("{} h", seconds / 3600),
        _ => format!("{} d", seconds / 86_400),
    }
}

/// A time with its age beside it, the exact time on hover.
pub(crate) fn when(then: u64, now: u64) -> Markup {
    html! { time title=(utc(then)) { (age(then, now)) " ago" } }
}

/// What an env value shows as until an admin asks for it.
pub(crate) fn masked() -> Markup {
    html! { span.masked title="masked" { "••••••••" } }
}

/// The short form of a digest (`sha256:0123456789ab`).
pub(crate) fn short_digest(image: &str) -> String {
    match image.split_once("@sha256:") {
        Some((_, hex)) => format!("sha256:{}", &hex[..hex.len().min(12)]),
        None => image.to_string(),
    }
}

/// A record's word for one of its states or causes (`succeeded`,
/// `rollback`): its name in etcd and the API, from its serde form.
pub(crate) fn named(value: &impl serde::Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        _ => "unknown".into(),
    }
}

/// A state as a badge whose class colours it.
pub(crate) fn badge(state: &str) -> Markup {
    html! { span class={ "badge " (state) } { (state) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_and_ages_short() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_796_083_200), "2026-12-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(age(100, 104), "4 s");
        assert_eq!(age(0, 3 * 3600), "3 h");
        assert_eq!(age(10, 5), "0 s");
    }

    #[test]
    fn what_a_page_renders_is_escaped() {
        let value = "<script>alert(1)</script>";
        let page = html! { td { (value) } };
        assert_eq!(
            page.into_string(),
            "<td>&lt;script&gt;alert(1)&lt;/script&gt;</td>"
        );
    }

    #[test]
    fn states_are_named_as_etcd_and_the_api_name_them() {
        assert_eq!(named(&store::RolloutStatus::Succeeded), "succeeded");
        assert_eq!(named(&store::records::ReleaseCause::Rollback), "rollback");
        assert_eq!(named(&store::records::BuildStatus::Running), "running");
    }

    #[test]
    fn digests_are_shortened() {
        let image = format!("r/app@sha256:{}", "ab".repeat(32));
        assert_eq!(short_digest(&image), "sha256:abababababab");
    }
}

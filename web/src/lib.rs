//! Paz's web UI, served at the root of `--api-listen` beside the API:
//! server-rendered pages (maud) of the fleet, the apps, their releases,
//! builds and rollouts, made live by Server-Sent Events that htmx swaps
//! in, on the API's data and rights (a session is a Paz token).

#![forbid(unsafe_code)]

mod actions;
mod assets;
mod charts;
mod data;
mod error;
mod history;
mod layout;
mod live;
mod mirror;
mod pages;
mod session;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::error::Failure;
use crate::pages::View;
use crate::session::Session;

/// What no page may do: run a script or load anything from elsewhere, be
/// framed, or send a form to another site.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// What every handler works with.
#[derive(Debug)]
pub(crate) struct WebState {
    pub(crate) api: Arc<api::ApiState>,
    /// Paz's registry's files, for the registry page.
    pub(crate) registry: Option<registry::Storage>,
    /// The machines' heartbeat ages as last read, and when: etcd answers
    /// them one lease at a time, so a page reads them at most every
    /// `data::HEARTBEATS_FRESH`, not at each render.
    pub(crate) heartbeats: tokio::sync::Mutex<Option<data::Heartbeats>>,
    /// The fleet page's state, kept in memory by a watch.
    pub(crate) mirror: mirror::Mirror,
    /// The last hour of the cluster's numbers, for the charts.
    pub(crate) history: history::History,
}

/// The web UI on the API's state.
#[derive(Debug, Clone)]
pub struct Web {
    state: Arc<WebState>,
    api: api::Api,
}

impl Web {
    /// The UI beside `api`; the registry page reads the registry kept at
    /// `registry_root`. Starts the fleet's mirror (on the Tokio runtime).
    pub fn new(api: api::Api, registry_root: Option<PathBuf>) -> Web {
        let state = Arc::new(WebState {
            api: api.state().clone(),
            registry: registry_root.map(registry::Storage::new),
            heartbeats: tokio::sync::Mutex::new(None),
            mirror: mirror::Mirror::start(api.state().context.store.clone()),
            history: history::History::start(api.state().context.store.clone()),
        });
        Web { state, api }
    }

    /// The pages, and the API under `/api/v1` (whatever is no page).
    pub fn router(&self) -> Router {
        let pages = Router::new()
            .route("/", get(page))
            .route("/apps", get(page))
            .route("/apps/{app}", get(page))
            .route("/apps/{app}/releases", get(page))
            .route("/apps/{app}/builds", get(page))
            .route("/apps/{app}/builds/{id}", get(page))
            .route("/apps/{app}/config", get(page).post(actions::set_config))
            .route("/apps/{app}/config/revealed", get(page))
            .route("/apps/{app}/settings", get(page))
            .route("/apps/{app}/units", get(page))
            .route("/apps/{app}/logs", get(page))
            .route("/apps/{app}/rollouts/{id}", get(page))
            .route(
                "/apps/{app}/rollback/{n}",
                get(page).post(actions::rollback),
            )
            .route("/machines/{id}", get(page))
            .route("/registry", get(page))
            .route("/audit", get(page))
            .route("/admin", get(page))
            .route("/login", get(login_form).post(actions::login))
            .route("/logout", post(actions::logout))
            .route("/apps/{app}/scale", post(actions::scale))
            .route("/apps/{app}/restart", post(actions::restart))
            .route("/apps/{app}/config/unset", post(actions::unset_config))
            .route("/apps/{app}/domains", post(actions::add_domain))
            .route("/apps/{app}/domains/remove", post(actions::remove_domain))
            .route("/apps/{app}/health", post(actions::health))
            .route("/apps/{app}/https", post(actions::https))
            .route("/admin/tokens", post(actions::create_token))
            .route("/admin/tokens/{name}/revoke", post(actions::revoke_token))
            .route("/admin/keys", post(actions::add_key))
            .route("/admin/keys/{key}/remove", post(actions::remove_key))
            .route("/live", get(live::follow))
            .route("/live/log/{app}/{id}", get(live::build_log))
            .route("/live/logs/{app}", get(live::app_log))
            .route("/static/{file}", get(assets::file))
            .layer(tower_http::compression::CompressionLayer::new())
            .layer(axum::middleware::from_fn(guard))
            .with_state(self.state.clone());
        pages.fallback_service(self.api.router())
    }

    /// Serves the UI and the API on `listener` until `shutdown`, then lets
    /// requests in flight finish.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }
}

/// The headers every page and file has: the Content-Security-Policy, no
/// sniffing, no framing, no referrer to other sites, and no caching of a
/// page (each shows one user's view).
async fn guard(request: Request, next: Next) -> Response {
    let is_file = request.uri().path().starts_with("/static/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let set = |headers: &mut axum::http::HeaderMap, name, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(headers, header::CONTENT_SECURITY_POLICY, CSP);
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::REFERRER_POLICY, "same-origin");
    if !is_file {
        set(headers, header::CACHE_CONTROL, "no-store");
    }
    response
}

/// `GET /login`.
async fn login_form() -> impl IntoResponse {
    pages::login::form(None)
}

/// Every page: the view its path names, for the session's caller.
async fn page(
    State(state): State<Arc<WebState>>,
    session: Session,
    uri: axum::http::Uri,
) -> Result<Response, Failure> {
    let path = uri.path();
    let view = View::parse(path).ok_or_else(|| Failure::not_found(format!("no page {path}")))?;
    // Read before the page, so that a change made while it is read is sent.
    let revision = state.api.context.store.revision().await?;
    let page = view.render(&state, &session).await?;
    Ok(layout::document(
        &session,
        path.trim_end_matches('/').max("/"),
        revision,
        page,
    )
    .into_response())
}

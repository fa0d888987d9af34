//! Paz's OCI image registry (distribution spec v1.1, pull and push), the image
//! events it emits, and the inbound image webhooks, on one axum router.
//!
//! A component in the mini-redis manner: [`Registry::serve`] takes a bound
//! listener and a shutdown future; [`Registry::router`] serves tests without
//! a socket.

#![forbid(unsafe_code)]

mod auth;
mod error;
pub mod events;
pub mod gc;
mod handlers;
mod hooks;
pub mod inspect;
mod listener;
mod names;
mod storage;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::HeaderValue;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use store::Store;

pub use error::RegistryError;
pub use gc::{collect, GcReport};
pub use handlers::MAX_MANIFEST;
pub use storage::{Limits, Repository, Storage};

/// What the handlers share.
#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) storage: Storage,
    pub(crate) store: Arc<Store>,
    pub(crate) tokens: Arc<store::TokenCache>,
    /// Opens the tokens' webhook signing secrets; `None`: signed webhooks
    /// are refused.
    pub(crate) hook_key: Option<Arc<store::HookKey>>,
    /// This registry as image names spell it (`127.0.0.1:5000`), so that a
    /// hook naming one of its images is held to the right to pull it.
    pub(crate) host: Option<String>,
}

/// The registry: storage under a root directory, auth and events on the store.
#[derive(Debug)]
pub struct Registry {
    state: Arc<AppState>,
    /// The most connections served at once (see [`Registry::with_max_connections`]).
    max_connections: usize,
}

/// The largest webhook body read (1 MiB); a larger one is refused with 413
/// while it is read, before it is authenticated.
pub const HOOK_BODY_LIMIT: usize = 1 << 20;

/// How long a new connection may take to send its first byte.
const FIRST_BYTE: Duration = Duration::from_secs(10);

/// How long an upload may go unwritten before it counts as abandoned.
const STALE_UPLOAD: Duration = Duration::from_secs(24 * 3600);

impl Registry {
    /// `root` is `<data-dir>/registry`. Must run inside a tokio runtime (it
    /// starts the watch that keeps the token list current).
    pub fn new(root: PathBuf, store: Store) -> Registry {
        let tokens = Arc::new(store::TokenCache::watch(store.clone()));
        Registry {
            state: Arc::new(AppState {
                storage: Storage::new(root),
                store: Arc::new(store),
                tokens,
                hook_key: None,
                host: None,
            }),
            max_connections: 1024,
        }
    }

    /// The tokens as this registry checks them, kept current by a watch:
    /// for another front door of this process to share.
    pub fn tokens(&self) -> Arc<store::TokenCache> {
        self.state.tokens.clone()
    }

    /// Serves at most `max` connections at once (default 1024); more wait
    /// in the backlog. The binary sets it from the open-file limit, so that a
    /// flood of the registry leaves descriptors for the roles beside it.
    pub fn with_max_connections(mut self, max: usize) -> Registry {
        self.max_connections = max;
        self
    }

    /// Names this registry's images `host/REPO` (the advertised address).
    pub fn with_host(mut self, host: String) -> Registry {
        if let Some(state) = Arc::get_mut(&mut self.state) {
            state.host = Some(host);
        }
        self
    }

    /// Refuses uploads beyond `limits`.
    pub fn with_limits(mut self, limits: storage::Limits) -> Registry {
        if let Some(state) = Arc::get_mut(&mut self.state) {
            let storage = std::mem::replace(&mut state.storage, Storage::new(PathBuf::new()));
            state.storage = storage.with_limits(limits);
        }
        self
    }

    /// Checks signed webhooks with `key` (the control hosts' `hooks.key`).
    pub fn with_hook_key(mut self, key: Arc<store::HookKey>) -> Registry {
        if let Some(state) = Arc::get_mut(&mut self.state) {
            state.hook_key = Some(key);
        }
        self
    }

    pub fn storage(&self) -> &Storage {
        &self.state.storage
    }

    /// The HTTP surface: `/v2/...` and `/hooks/...`.
    pub fn router(&self) -> Router {
        Router::new()
            // A hook's body is small: read no more than this, authenticated or not.
            .route(
                "/hooks/registry",
                post(hooks::registry).layer(DefaultBodyLimit::max(HOOK_BODY_LIMIT)),
            )
            .route(
                "/hooks/dockerhub",
                post(hooks::dockerhub).layer(DefaultBodyLimit::max(HOOK_BODY_LIMIT)),
            )
            .route(
                "/hooks/deploy",
                post(hooks::deploy).layer(DefaultBodyLimit::max(HOOK_BODY_LIMIT)),
            )
            .fallback(handlers::dispatch)
            .layer(axum::middleware::map_response(api_version))
            .layer(DefaultBodyLimit::disable())
            .with_state(self.state.clone())
    }

    /// Serves until `shutdown` resolves; removes abandoned uploads as it goes.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let state = self.state.clone();
        let sweeper = tokio::spawn(async move {
            loop {
                let removed = state.storage.remove_stale_uploads(STALE_UPLOAD).await;
                if removed > 0 {
                    tracing::info!(removed, "removed abandoned uploads");
                }
                tokio::time::sleep(Duration::from_secs(600)).await;
            }
        });
        let forgetter = tokio::spawn(forget_destroyed_apps(self.state.clone()));
        let listener = listener::Capped::new(listener, self.max_connections, FIRST_BYTE)?;
        let result = axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await;
        sweeper.abort();
        forgetter.abort();
        result
    }
}

/// An app's repositories go when the app does (`apps:destroy`): at its
/// delete event, and at every snapshot (the registry's start, a watch
/// resumed) for repositories whose owning app is gone or was made again.
async fn forget_destroyed_apps(state: Arc<AppState>) {
    let apps = state.store.keys().apps();
    let mut watch = state.store.watch(&apps);
    while let Some(event) = watch.next_event().await {
        match event {
            store::WatchEvent::Delete { key, .. } => {
                if let Ok(app) = store::AppName::new(apps.child_name(&key)) {
                    forget(&state, app.as_str()).await;
                }
            }
            store::WatchEvent::Snapshot {
                entries, invalid, ..
            } => {
                let live: std::collections::HashMap<&str, i64> = entries
                    .iter()
                    .map(|entry| (apps.child_name(&entry.key), entry.create_revision))
                    .collect();
                // An app whose record cannot be read still exists.
                let unreadable: Vec<&str> = invalid
                    .iter()
                    .map(|(key, _)| apps.child_name(key))
                    .collect();
                for app in state.storage.top_level().await {
                    let Some(created) = state.storage.owner(&app).await else {
                        continue;
                    };
                    if live.get(app.as_str()) != Some(&created)
                        && !unreadable.contains(&app.as_str())
                    {
                        forget(&state, &app).await;
                    }
                }
            }
            _ => {}
        }
    }
}

/// Removes the repositories of destroyed app `app`.
async fn forget(state: &AppState, app: &str) {
    match state.storage.remove_repository(app).await {
        Ok(true) => tracing::info!(%app, "removed the destroyed app's repository"),
        Ok(false) => {}
        Err(error) => {
            tracing::warn!(%app, %error, "cannot remove the destroyed app's repository")
        }
    }
}

/// After a manifest push to `repository`: notes the app it belongs to (by
/// its create revision) in the repository, if that app exists. A
/// repository of no app (an admin's base image) is never forgotten.
pub(crate) async fn mark_owner(state: &AppState, repository: &str) {
    let Some(app) = store::images::repository_app(repository) else {
        return;
    };
    let created = match state.store.get(&state.store.keys().app(&app)).await {
        Ok(Some(record)) => record.create_revision,
        Ok(None) => return,
        Err(error) => {
            tracing::warn!(%app, %error, "cannot note the owner of a pushed repository");
            return;
        }
    };
    if let Err(error) = state.storage.mark_owner(app.as_str(), created).await {
        tracing::warn!(%app, %error, "cannot note the owner of a pushed repository");
    }
}

async fn api_version(mut response: Response) -> Response {
    response.headers_mut().insert(
        "Docker-Distribution-API-Version",
        HeaderValue::from_static("registry/2.0"),
    );
    response
}

//! Inbound webhooks for images built and stored elsewhere. Each turns into the
//! same image event as a push to Paz's own registry:
//!
//! - `POST /hooks/registry`: a distribution registry's notification envelope;
//! - `POST /hooks/dockerhub`: Docker Hub's payload (`?token=`, as Docker Hub cannot sign);
//! - `POST /hooks/deploy`: `{"app": ..., "image": ...}`.
//!
//! Auth: `Authorization: Bearer <token secret>`, `?token=<secret>`, or
//! `X-Paz-Signature: t=<unix seconds>,v1=<hex>` (HMAC-SHA256 of `<t>.<body>`
//! keyed by the token's signing secret, taken once within 5 minutes of `t`;
//! see `auth::by_signature`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};
use store::records::{ImageEvent, ImageSource};
use store::AppName;

use crate::auth::{self, Principal};
use crate::AppState;

/// A webhook refusal: a 4xx (or 500) with a JSON reason.
#[derive(Debug)]
pub(crate) struct HookError(StatusCode, String);

impl IntoResponse for HookError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({"error": self.1}))).into_response()
    }
}

fn bad(message: impl Into<String>) -> HookError {
    HookError(StatusCode::BAD_REQUEST, message.into())
}

#[derive(Debug, Deserialize)]
pub(crate) struct TokenQuery {
    token: Option<String>,
}

/// The caller of a webhook, or 401.
async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    query: &TokenQuery,
    body: &[u8],
) -> Result<Principal, HookError> {
    let unauthorized = || {
        HookError(
            StatusCode::UNAUTHORIZED,
            "authenticate with Authorization: Bearer <token secret>, ?token=<secret>, or X-Hub-Signature-256".to_string(),
        )
    };
    if headers.contains_key("X-Hub-Signature-256") {
        return Err(HookError(
            StatusCode::UNAUTHORIZED,
            "X-Hub-Signature-256 is not accepted (it signs no time and can be replayed): sign with X-Paz-Signature, or use a bearer token".to_string(),
        ));
    }
    if let Some(signature) = headers.get("X-Paz-Signature").and_then(|v| v.to_str().ok()) {
        return auth::by_signature(
            &state.tokens,
            &state.store,
            state.hook_key.as_deref(),
            body,
            signature,
        )
        .await
        .map_err(|message| HookError(StatusCode::UNAUTHORIZED, message));
    }
    let secret = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string)
        .or_else(|| query.token.clone())
        .ok_or_else(unauthorized)?;
    auth::by_secret(&state.tokens, secret.trim())
        .await
        .ok_or_else(|| HookError(StatusCode::UNAUTHORIZED, "unknown token".to_string()))
}

fn parse_json(body: &[u8]) -> Result<Value, HookError> {
    serde_json::from_slice(body).map_err(|error| bad(format!("the body is not JSON: {error}")))
}

/// Splits `repo[:tag][@digest]`.
fn split_image(image: &str) -> (String, Option<String>, Option<String>) {
    let parsed = store::images::Reference::parse(image);
    (
        parsed.name.to_string(),
        parsed.tag.map(str::to_string),
        parsed.digest.map(str::to_string),
    )
}

/// The apps that follow `repository` (`deploy.image_repo`), which `who` may use.
async fn followers(
    state: &AppState,
    who: &Principal,
    repository: &str,
) -> Result<Vec<AppName>, HookError> {
    let apps = state
        .store
        .list(&state.store.keys().apps())
        .await
        .map_err(|error| {
            HookError(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot read apps: {error}"),
            )
        })?;
    let following: Vec<AppName> = apps
        .entries
        .into_iter()
        .map(|e| e.value)
        .filter(|app| {
            app.deploy
                .image_repo
                .as_deref()
                .is_some_and(|followed| same_repository(followed, repository))
        })
        .map(|app| app.name)
        .collect();
    if following.is_empty() {
        return Err(HookError(
            StatusCode::NOT_FOUND,
            format!("no app follows repository {repository}: run deploy:follow APP {repository}"),
        ));
    }
    if !following.iter().any(|app| who.may_use_app(app)) {
        return Err(HookError(
            StatusCode::FORBIDDEN,
            format!(
                "token `{}` may not deploy the apps that follow {repository}",
                who.name
            ),
        ));
    }
    Ok(following)
}

/// `docker.io/library/x`, `library/x` and `x` are one Docker Hub repository.
fn same_repository(followed: &str, given: &str) -> bool {
    let normalize = |name: &str| {
        let name = name
            .trim_start_matches("docker.io/")
            .trim_start_matches("index.docker.io/");
        name.strip_prefix("library/").unwrap_or(name).to_string()
    };
    normalize(followed) == normalize(given)
}

async fn announce(state: &AppState, event: ImageEvent) -> Result<Response, HookError> {
    crate::events::publish(&state.store, event)
        .await
        .map_err(|error| {
            HookError(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot record the event: {error}"),
            )
        })?;
    Ok((StatusCode::ACCEPTED, axum::Json(json!({"accepted": true}))).into_response())
}

pub(crate) async fn registry(
    State(state): State<Arc<AppState>>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HookError> {
    let who = authenticate(&state, &headers, &query, &body).await?;
    let envelope = parse_json(&body)?;
    let events = envelope
        .get("events")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("expected a notification envelope: {\"events\": [...]}"))?;
    let mut pushes = Vec::new();
    for event in events {
        if event.get("action").and_then(Value::as_str) != Some("push") {
            continue;
        }
        let target = event
            .get("target")
            .ok_or_else(|| bad("a push event has no target"))?;
        let repository = target
            .get("repository")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("a push event's target has no repository"))?;
        let tag = target.get("tag").and_then(Value::as_str);
        // Pushes of layers and untagged manifests are not new images.
        let Some(tag) = tag else { continue };
        let digest = target
            .get("digest")
            .and_then(Value::as_str)
            .map(str::to_string);
        let media_type = target
            .get("mediaType")
            .and_then(Value::as_str)
            .map(str::to_string);
        followers(&state, &who, repository).await?;
        pushes.push(ImageEvent {
            repository: repository.to_string(),
            tag: Some(tag.to_string()),
            digest,
            media_type,
            app: None,
            by: who.name.clone(),
            source: ImageSource::Registry,
            at: 0,
        });
    }
    if pushes.is_empty() {
        return Err(bad("the envelope has no tagged push event"));
    }
    for event in pushes {
        announce(&state, event).await?;
    }
    Ok((StatusCode::ACCEPTED, axum::Json(json!({"accepted": true}))).into_response())
}

pub(crate) async fn dockerhub(
    State(state): State<Arc<AppState>>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HookError> {
    let who = authenticate(&state, &headers, &query, &body).await?;
    let payload = parse_json(&body)?;
    let repository = payload
        .pointer("/repository/repo_name")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("expected Docker Hub's payload: repository.repo_name is missing"))?;
    let tag = payload
        .pointer("/push_data/tag")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("expected Docker Hub's payload: push_data.tag is missing"))?;
    followers(&state, &who, repository).await?;
    announce(
        &state,
        ImageEvent {
            repository: repository.to_string(),
            tag: Some(tag.to_string()),
            digest: None,
            media_type: None,
            app: None,
            by: who.name.clone(),
            source: ImageSource::Dockerhub,
            at: 0,
        },
    )
    .await
}

pub(crate) async fn deploy(
    State(state): State<Arc<AppState>>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HookError> {
    let who = authenticate(&state, &headers, &query, &body).await?;
    let payload = parse_json(&body)?;
    let app = payload
        .get("app")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("expected {\"app\": ..., \"image\": ...}: app is missing"))?;
    let image = payload
        .get("image")
        .and_then(Value::as_str)
        .filter(|image| !image.is_empty() && !image.contains(char::is_whitespace))
        .ok_or_else(|| {
            bad("expected {\"app\": ..., \"image\": ...}: image is missing or has spaces")
        })?;
    let app = AppName::new(app).map_err(|error| bad(error.to_string()))?;
    if !who.may_use_app(&app) {
        return Err(HookError(
            StatusCode::FORBIDDEN,
            format!("token `{}` may not deploy app `{app}`", who.name),
        ));
    }
    let exists = state
        .store
        .get(&state.store.keys().app(&app))
        .await
        .map_err(|error| {
            HookError(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot read app {app}: {error}"),
            )
        })?
        .is_some();
    if !exists {
        return Err(HookError(
            StatusCode::NOT_FOUND,
            format!("app `{app}` does not exist"),
        ));
    }
    // Checked here, before anything is recorded: it ends up in a unit file.
    units::check_image(image).map_err(bad)?;
    // One of this registry's images is its app's to deploy.
    let owner = state
        .host
        .as_deref()
        .and_then(|host| store::images::registry_owner(host, image));
    if let Some(owner) = owner.filter(|owner| !who.may_use_app(owner)) {
        return Err(HookError(
            StatusCode::FORBIDDEN,
            format!(
                "token `{}` may not use the images of app `{owner}`: deploy your own apps' images",
                who.name
            ),
        ));
    }
    let (repository, tag, digest) = split_image(image);
    if let Some(digest) = &digest {
        crate::names::check_digest(digest).map_err(|error| bad(error.message))?;
    }
    announce(
        &state,
        ImageEvent {
            repository,
            tag,
            digest,
            media_type: None,
            app: Some(app),
            by: who.name.clone(),
            source: ImageSource::Deploy,
            at: 0,
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_split_into_repository_tag_and_digest() {
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(split_image("web"), ("web".into(), None, None));
        assert_eq!(
            split_image("web:v1"),
            ("web".into(), Some("v1".into()), None)
        );
        assert_eq!(
            split_image(&format!("127.0.0.1:5000/web/api:v2@{digest}")),
            (
                "127.0.0.1:5000/web/api".into(),
                Some("v2".into()),
                Some(digest.clone())
            )
        );
        assert_eq!(
            split_image("127.0.0.1:5000/web"),
            ("127.0.0.1:5000/web".into(), None, None)
        );
        assert!(same_repository("docker.io/library/nginx", "nginx"));
        assert!(!same_repository("acme/web", "acme/api"));
    }
}

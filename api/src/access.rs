//! `/tokens` and `/ssh-keys`: who may reach Paz (admins only).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::Value;
use store::records::Role;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Authed;
use crate::error::ApiError;
use crate::input::{app, Page, Params};
use crate::{items, verb, ApiState};

pub(crate) fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new()
        .routes(routes!(tokens, create_token))
        .routes(routes!(revoke_token))
        .routes(routes!(keys, add_key))
        .routes(routes!(remove_key))
}

type Api = State<Arc<ApiState>>;

/// A name for a token or key, checked before it reaches a verb.
fn name(text: &str) -> Result<String, ApiError> {
    crate::input::segment("name", text)
}

/// The role and apps of a new token or key, as the verbs' flags.
fn role_flags(role: Option<Role>, apps: &[String]) -> Result<Vec<String>, ApiError> {
    let mut flags = Vec::new();
    if let Some(role) = role {
        flags.extend(["--role".to_string(), role.as_str().to_string()]);
    }
    if !apps.is_empty() {
        let apps: Vec<String> = apps
            .iter()
            .map(|name| app(name).map(|app| app.to_string()))
            .collect::<Result<_, _>>()?;
        flags.extend(["--apps".to_string(), apps.join(",")]);
    }
    Ok(flags)
}

#[utoipa::path(
    get,
    path = "/tokens",
    tag = "access",
    summary = "The API tokens (admins)",
    params(crate::input::Page),
    responses((status = 200, body = Vec<verbs::TokenRow>))
)]
async fn tokens(
    State(state): Api,
    Authed(caller): Authed,
    Params(page): Params<Page>,
) -> Result<Response, ApiError> {
    let all = items(verb(&state, &caller, "tokens:list", vec![], b"").await?);
    let key = |token: &Value| token["name"].as_str().unwrap_or_default().to_string();
    Ok(page.of(all, key, "/api/v1/tokens"))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    name: String,
    role: Option<Role>,
    #[serde(default)]
    apps: Vec<String>,
}

/// Its secret is in this answer only.
#[utoipa::path(
    post,
    path = "/tokens",
    tag = "access",
    summary = "Make a token; its secret is in this answer only (admins)",
    request_body = TokenRequest,
    responses((status = 201, body = verbs::NewToken))
)]
async fn create_token(
    State(state): Api,
    Authed(caller): Authed,
    crate::input::Input(new): crate::input::Input<TokenRequest>,
) -> Result<Response, ApiError> {
    let mut args = vec![name(&new.name)?];
    args.extend(role_flags(new.role, &new.apps)?);
    let created = verb(&state, &caller, "tokens:create", args, b"").await?;
    let location = format!("/api/v1/tokens/{}", new.name);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(created),
    )
        .into_response())
}

#[utoipa::path(
    delete,
    path = "/tokens/{name}",
    tag = "access",
    summary = "Revoke a token (admins)",
    params(("name" = String, Path, description = "the token's name")),
    responses((status = 204, description = "revoked"))
)]
async fn revoke_token(
    State(state): Api,
    Authed(caller): Authed,
    Path(token): Path<String>,
) -> Result<StatusCode, ApiError> {
    verb(&state, &caller, "tokens:revoke", vec![name(&token)?], b"").await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/ssh-keys",
    tag = "access",
    summary = "The SSH keys (admins)",
    params(crate::input::Page),
    responses((status = 200, body = Vec<store::records::SshKey>))
)]
async fn keys(
    State(state): Api,
    Authed(caller): Authed,
    Params(page): Params<Page>,
) -> Result<Response, ApiError> {
    let all = items(verb(&state, &caller, "ssh-keys:list", vec![], b"").await?);
    let key = |key: &Value| key["name"].as_str().unwrap_or_default().to_string();
    Ok(page.of(all, key, "/api/v1/ssh-keys"))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewKey {
    name: String,
    /// The OpenSSH public key line (`ssh-ed25519 AAAA... comment`).
    public_key: String,
    role: Option<Role>,
    #[serde(default)]
    apps: Vec<String>,
}

#[utoipa::path(
    post,
    path = "/ssh-keys",
    tag = "access",
    summary = "Add an SSH key (admins)",
    request_body = NewKey,
    responses((status = 201, body = store::records::SshKey))
)]
async fn add_key(
    State(state): Api,
    Authed(caller): Authed,
    crate::input::Input(new): crate::input::Input<NewKey>,
) -> Result<Response, ApiError> {
    let mut args = vec![name(&new.name)?];
    args.extend(role_flags(new.role, &new.apps)?);
    let added = verb(
        &state,
        &caller,
        "ssh-keys:add",
        args,
        new.public_key.as_bytes(),
    )
    .await?;
    let location = format!("/api/v1/ssh-keys/{}", new.name);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(added),
    )
        .into_response())
}

/// By name or fingerprint.
#[utoipa::path(
    delete,
    path = "/ssh-keys/{name}",
    tag = "access",
    summary = "Remove an SSH key, by name or fingerprint (admins)",
    params(("name" = String, Path, description = "the key's name or fingerprint")),
    responses((status = 204, description = "removed"))
)]
async fn remove_key(
    State(state): Api,
    Authed(caller): Authed,
    Path(key): Path<String>,
) -> Result<StatusCode, ApiError> {
    if key.starts_with('-') {
        return Err(ApiError::invalid(format!("`{key}` is not a key name")));
    }
    verb(&state, &caller, "ssh-keys:remove", vec![key], b"").await?;
    Ok(StatusCode::NO_CONTENT)
}

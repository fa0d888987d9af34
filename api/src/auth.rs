//! Who calls: `Authorization: Bearer <token secret>` (the secret
//! `tokens:create` prints), with the token's role and apps. A machine
//! token only pulls images, so it may do nothing here.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use store::records::Role;
use verbs::Caller;

use crate::error::ApiError;
use crate::ApiState;

/// The caller of a request, authenticated.
#[derive(Debug, Clone)]
pub(crate) struct Authed(pub(crate) Caller);

impl FromRequestParts<Arc<ApiState>> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Authed, ApiError> {
        let secret = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|secret| !secret.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "authenticate with Authorization: Bearer <token secret> (an admin makes one with tokens:create NAME)",
                )
            })?;
        caller_of(state, secret).await.map(Authed)
    }
}

/// The caller whose token has `secret` (what the web UI's session holds),
/// checked as every API request is: a revoked token is unknown at once,
/// and a machine token may do nothing here.
pub async fn caller_of(state: &ApiState, secret: &str) -> Result<Caller, ApiError> {
    let token = state.tokens.by_secret(secret).await?.ok_or_else(|| {
        ApiError::unauthorized("unknown token: it was revoked, or the secret is wrong")
    })?;
    if token.role == Role::Machine {
        return Err(ApiError::forbidden(format!(
            "token `{}` is a machine token, which only pulls images: use an admin or deployer token",
            token.name
        )));
    }
    Ok(Caller::from_token(&token))
}

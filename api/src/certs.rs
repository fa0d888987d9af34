//! `/certs` and `/apps/{app}/https`: the certificates every proxy serves
//! (certs:list, certs:add, certs:remove, certs:renew) and how an app is
//! served over HTTPS (https:redirect, https:hsts). Private keys go in,
//! never out.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Authed;
use crate::error::ApiError;
use crate::input::{app, Input};
use crate::{verb, ApiState};

pub(crate) fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(add, remove))
        .routes(routes!(renew))
        .routes(routes!(https))
}

type Api = State<Arc<ApiState>>;

#[utoipa::path(
    get,
    path = "/certs",
    tag = "certs",
    summary = "The certificates the caller may see: domain, state, expiry, issuer (certs:list)",
    responses((status = 200, body = Vec<verbs::CertRow>))
)]
async fn list(State(state): Api, Authed(caller): Authed) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        verb(&state, &caller, "certs:list", Vec::new(), b"").await?,
    ))
}

/// A certificate brought by hand.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Bundle {
    /// The chain in PEM, leaf first.
    chain_pem: String,
    /// The leaf's private key in PEM.
    key_pem: String,
}

#[utoipa::path(
    put,
    path = "/certs/{domain}",
    tag = "certs",
    summary = "Serve this certificate and key for the domain, or *.domain (certs:add)",
    params(("domain" = String, Path, description = "the domain, or *.domain")),
    request_body = Bundle,
    responses((status = 200, description = "the certificate as it is kept"))
)]
async fn add(
    State(state): Api,
    Authed(caller): Authed,
    Path(domain): Path<String>,
    Input(bundle): Input<Bundle>,
) -> Result<Json<Value>, ApiError> {
    let pem = format!("{}\n{}", bundle.chain_pem, bundle.key_pem);
    Ok(Json(
        verb(&state, &caller, "certs:add", vec![domain], pem.as_bytes()).await?,
    ))
}

#[utoipa::path(
    delete,
    path = "/certs/{domain}",
    tag = "certs",
    summary = "Stop serving the domain's certificate (certs:remove)",
    params(("domain" = String, Path, description = "the domain, or *.domain")),
    responses((status = 204, description = "removed"))
)]
async fn remove(
    State(state): Api,
    Authed(caller): Authed,
    Path(domain): Path<String>,
) -> Result<StatusCode, ApiError> {
    verb(&state, &caller, "certs:remove", vec![domain], b"").await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/certs/{domain}/renew",
    tag = "certs",
    summary = "Order the domain's ACME certificate again now (certs:renew)",
    params(("domain" = String, Path, description = "the domain")),
    responses((status = 202, description = "an edge host with --acme-email orders it"))
)]
async fn renew(
    State(state): Api,
    Authed(caller): Authed,
    Path(domain): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let renewing = verb(&state, &caller, "certs:renew", vec![domain], b"").await?;
    Ok((StatusCode::ACCEPTED, Json(renewing)))
}

/// What to change of an app's HTTPS; what is left out stays.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct HttpsChange {
    /// A 308 from http:// to https:// (https:redirect).
    redirect: Option<bool>,
    /// Strict-Transport-Security over HTTPS (https:hsts).
    hsts: Option<bool>,
}

#[utoipa::path(
    patch,
    path = "/apps/{app}/https",
    tag = "certs",
    summary = "Set the app's redirect to HTTPS and HSTS (https:redirect, https:hsts)",
    params(("app" = String, Path, description = "the app's name")),
    request_body = HttpsChange,
    responses((status = 200, description = "the app's HTTPS settings", body = store::records::HttpsSettings))
)]
async fn https(
    State(state): Api,
    Authed(caller): Authed,
    Path(name): Path<String>,
    Input(change): Input<HttpsChange>,
) -> Result<Json<Value>, ApiError> {
    let name = app(&name)?.to_string();
    let on_off = |on: bool| if on { "on" } else { "off" }.to_string();
    let mut settings = Value::Null;
    for (verb_name, value) in [
        ("https:redirect", change.redirect),
        ("https:hsts", change.hsts),
    ] {
        if let Some(on) = value {
            let changed = verb(
                &state,
                &caller,
                verb_name,
                vec![name.clone(), on_off(on)],
                b"",
            )
            .await?;
            settings = changed["https"].clone();
        }
    }
    if settings.is_null() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "nothing to change: send redirect, hsts or both".to_string(),
        ));
    }
    Ok(Json(settings))
}

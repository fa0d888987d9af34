//! What the forms do: each checks its session, Origin and CSRF token
//! (`Posted`), names the app in the path (whose rights the verb checks),
//! runs the verb or starts the rollout, and sends the browser on (303) to
//! the page that shows the outcome: a rollout's page, or the form's page.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use store::AppName;

use crate::error::Failure;
use crate::session::{Posted, Session};
use crate::WebState;

type Web = State<Arc<WebState>>;

/// An app named in a path.
fn app(name: &str) -> Result<AppName, Failure> {
    AppName::new(name).map_err(|error| Failure::Invalid(error.to_string()))
}

/// A word from a form for a verb: never taken for one of its flags.
fn word<'a>(what: &str, text: &'a str) -> Result<&'a str, Failure> {
    let text = text.trim();
    if text.is_empty() || text.starts_with('-') || text.contains(char::is_control) {
        return Err(Failure::Invalid(format!("`{text}` is not a {what}")));
    }
    Ok(text)
}

async fn verb(
    state: &WebState,
    session: &Session,
    name: &str,
    args: Vec<String>,
    stdin: &[u8],
) -> Result<serde_json::Value, Failure> {
    Ok(api::verb(&state.api, &session.caller, name, args, stdin).await?)
}

/// To the page of a rollout just started.
fn to_rollout(record: &store::Rollout) -> Response {
    Redirect::to(&format!("/apps/{}/rollouts/{}", record.app, record.id)).into_response()
}

#[derive(Debug, Deserialize)]
pub(crate) struct Login {
    token: String,
}

pub(crate) async fn login(State(state): Web, request: Request) -> Result<Response, Failure> {
    crate::session::same_origin(request.headers())?;
    let secure = request
        .headers()
        .get("x-forwarded-proto")
        .is_some_and(|proto| proto == "https");
    let body = crate::session::form_body(request).await?;
    let form: Login = serde_urlencoded::from_bytes(&body)
        .map_err(|_| Failure::LoginRefused("give your token in the form's one field".into()))?;
    crate::session::log_in(&state, &form.token, secure).await
}

/// A form with nothing but its CSRF token.
#[derive(Debug, Deserialize)]
pub(crate) struct Nothing {}

pub(crate) async fn logout(Posted(_, Nothing {}): Posted<Nothing>) -> Response {
    crate::session::log_out()
}

pub(crate) async fn scale(
    State(state): Web,
    Path(name): Path<String>,
    Posted(session, form): Posted<BTreeMap<String, String>>,
) -> Result<Response, Failure> {
    let app = app(&name)?;
    let mut args = vec![app.to_string()];
    // Every field named as a process type is one (the form's others, such
    // as its CSRF token, are not); the verb checks them against the Procfile.
    for (process, count) in &form {
        if process == "csrf" || store::names::check_process_type(process).is_err() {
            continue;
        }
        let count: u32 = count.trim().parse().map_err(|_| {
            Failure::Invalid(format!("`{count}` is not a number of {process} instances"))
        })?;
        args.push(format!("{process}={count}"));
    }
    if args.len() == 1 {
        return Err(Failure::Invalid(
            "say how many instances of each process type to run".into(),
        ));
    }
    let record = api::start_rollout(
        &state.api,
        &session.caller,
        &app,
        ("scale", "ps:scale", args),
    )
    .await?;
    Ok(to_rollout(&record))
}

pub(crate) async fn restart(
    State(state): Web,
    Path(name): Path<String>,
    Posted(session, Nothing {}): Posted<Nothing>,
) -> Result<Response, Failure> {
    let app = app(&name)?;
    let args = vec![app.to_string()];
    let record = api::start_rollout(
        &state.api,
        &session.caller,
        &app,
        ("restart", "ps:restart", args),
    )
    .await?;
    Ok(to_rollout(&record))
}

pub(crate) async fn rollback(
    State(state): Web,
    Path((name, n)): Path<(String, u64)>,
    Posted(session, Nothing {}): Posted<Nothing>,
) -> Result<Response, Failure> {
    let app = app(&name)?;
    let record = api::rollback(&state.api, &session.caller, &app, n).await?;
    Ok(to_rollout(&record))
}

/// A config change: rolled out when the app has a release, else saved.
async fn change_config(
    state: &WebState,
    session: &Session,
    app: &AppName,
    verb_name: &'static str,
    args: Vec<String>,
) -> Result<Response, Failure> {
    let info = crate::data::app_info(state, &session.caller, app).await?;
    if info.current_release.is_some() {
        let record = api::start_rollout(
            &state.api,
            &session.caller,
            app,
            ("config", verb_name, args),
        )
        .await?;
        return Ok(to_rollout(&record));
    }
    verb(state, session, verb_name, args, b"").await?;
    Ok(Redirect::to(&format!("/apps/{app}/config")).into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct SetConfig {
    key: String,
    #[serde(default)]
    value: String,
}

pub(crate) async fn set_config(
    State(state): Web,
    Path(name): Path<String>,
    Posted(session, form): Posted<SetConfig>,
) -> Result<Response, Failure> {
    let app = app(&name)?;
    let key = word("config key", &form.key)?;
    let args = vec![app.to_string(), format!("{key}={}", form.value)];
    change_config(&state, &session, &app, "config:set", args).await
}

#[derive(Debug, Deserialize)]
pub(crate) struct Key {
    key: String,
}

pub(crate) async fn unset_config(
    State(state): Web,
    Path(name): Path<String>,
    Posted(session, form): Posted<Key>,
) -> Result<Response, Failure> {
    let app = app(&name)?;
    let args = vec![app.to_string(), word("config key", &form.key)?.to_string()];
    change_config(&state, &session, &app, "config:unset", args).await
}

#[derive(Debug, Deserialize)]
pub(crate) struct Domain {
    domain: String,
}

async fn domain(
    state: &WebState,
    name: &str,
    session: &Session,
    verb_name: &str,
    form: &Domain,
) -> Result<Response, Failure> {
    let app = app(name)?;
    let args = vec![app.to_string(), word("domain", &form.domain)?.to_string()];
    verb(state, session, verb_name, args, b"").await?;
    Ok(Redirect::to(&format!("/apps/{app}/settings")).into_response())
}

pub(crate) async fn add_domain(
    State(state): Web,
    Path(name): Path<String>,
    Posted(session, form): Posted<Domain>,
) -> Result<Response, Failure> {
    domain(&state, &name, &session, "domains:add", &form).await
}

pub(crate) async fn remove_domain(
    State(state): Web,
    Path(name): Path<String>,
    Posted(session, form): Posted<Domain>,
) -> Result<Response, Failure> {
    domain(&state, &name, &session, "domains:remove", &form).await
}

#[derive(Debug, Deserialize)]
pub(crate) struct HttpsSwitch {
    setting: String,
    value: String,
}

pub(crate) async fn https(
    State(state): Web,
    Path(name): Path<String>,
    Posted(session, form): Posted<HttpsSwitch>,
) -> Result<Response, Failure> {
    let app = app(&name)?;
    let verb_name = match form.setting.as_str() {
        "redirect" => "https:redirect",
        "hsts" => "https:hsts",
        other => {
            return Err(Failure::Invalid(format!(
                "`{other}` is not an HTTPS setting"
            )))
        }
    };
    let args = vec![app.to_string(), word("on or off", &form.value)?.to_string()];
    verb(&state, &session, verb_name, args, b"").await?;
    Ok(Redirect::to(&format!("/apps/{app}/settings")).into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct Health {
    path: String,
    timeout: String,
    attempts: String,
}

pub(crate) async fn health(
    State(state): Web,
    Path(name): Path<String>,
    Posted(session, form): Posted<Health>,
) -> Result<Response, Failure> {
    let app = app(&name)?;
    let args = vec![
        app.to_string(),
        format!("path={}", form.path.trim()),
        format!("timeout={}", form.timeout.trim()),
        format!("attempts={}", form.attempts.trim()),
    ];
    verb(&state, &session, "health:set", args, b"").await?;
    Ok(Redirect::to(&format!("/apps/{app}/settings")).into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct Grant {
    name: String,
    role: String,
    #[serde(default)]
    apps: String,
    #[serde(default)]
    public_key: String,
}

impl Grant {
    /// The verb's arguments: the name, then its role and apps as flags.
    fn args(&self) -> Result<Vec<String>, Failure> {
        let mut args = vec![word("name", &self.name)?.to_string()];
        let role = word("role", &self.role)?;
        args.extend(["--role".to_string(), role.to_string()]);
        let apps: Vec<&str> = self
            .apps
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .collect();
        if !apps.is_empty() {
            for app in &apps {
                word("app", app)?;
            }
            args.extend(["--apps".to_string(), apps.join(",")]);
        }
        Ok(args)
    }
}

pub(crate) async fn create_token(
    State(state): Web,
    Posted(session, form): Posted<Grant>,
) -> Result<Response, Failure> {
    let made = verb(&state, &session, "tokens:create", form.args()?, b"").await?;
    let new: crate::pages::admin::NewToken = serde_json::from_value(made).map_err(|_| {
        Failure::Invalid(
            "the token was made, but its answer is unreadable: revoke it and make another".into(),
        )
    })?;
    // The page with its secret, this once (not a redirect that would lose it).
    let page = crate::pages::admin::admin(&state, &session, Some(new)).await?;
    let revision = state.api.context.store.revision().await?;
    let document = crate::layout::document(&session, "/admin", revision, page);
    Ok((StatusCode::CREATED, document).into_response())
}

pub(crate) async fn revoke_token(
    State(state): Web,
    Path(name): Path<String>,
    Posted(session, Nothing {}): Posted<Nothing>,
) -> Result<Response, Failure> {
    verb(
        &state,
        &session,
        "tokens:revoke",
        vec![word("token name", &name)?.to_string()],
        b"",
    )
    .await?;
    Ok(Redirect::to("/admin").into_response())
}

pub(crate) async fn add_key(
    State(state): Web,
    Posted(session, form): Posted<Grant>,
) -> Result<Response, Failure> {
    verb(
        &state,
        &session,
        "ssh-keys:add",
        form.args()?,
        form.public_key.trim().as_bytes(),
    )
    .await?;
    Ok(Redirect::to("/admin").into_response())
}

pub(crate) async fn remove_key(
    State(state): Web,
    Path(key): Path<String>,
    Posted(session, Nothing {}): Posted<Nothing>,
) -> Result<Response, Failure> {
    verb(
        &state,
        &session,
        "ssh-keys:remove",
        vec![word("key", &key)?.to_string()],
        b"",
    )
    .await?;
    Ok(Redirect::to("/admin").into_response())
}

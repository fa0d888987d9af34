//! Who uses the UI: a session cookie holding the token secret given at the
//! login form (HttpOnly, SameSite=Strict), checked at every request as the
//! API checks a bearer token; and the checks of every form that changes
//! something: the request's `Origin` is this site, and its CSRF token is
//! the session's.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::de::DeserializeOwned;
use sha2::Digest;
use verbs::Caller;

use crate::error::Failure;
use crate::WebState;

/// The session cookie's name.
pub(crate) const COOKIE: &str = "paz_session";

/// The largest form read.
const FORM_LIMIT: usize = 64 * 1024;

/// A logged-in user: the caller their token makes, and the CSRF token
/// their forms carry.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) caller: Caller,
    pub(crate) csrf: String,
}

/// The CSRF token of the session holding `secret`: a hash of it, which a
/// page of another site can neither read nor make.
fn csrf_of(secret: &str) -> String {
    let hash = sha2::Sha256::digest(format!("paz-web-csrf\0{secret}").as_bytes());
    hex::encode(&hash[..16])
}

/// The session cookie's value among the request's cookies.
fn secret_in(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|cookies| cookies.split(';'))
        .filter_map(|cookie| cookie.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
        .filter(|value| !value.is_empty())
}

/// The session of a request, or why there is none.
async fn session_of(headers: &HeaderMap, state: &WebState) -> Result<Session, Failure> {
    let secret = secret_in(headers).ok_or(Failure::LoggedOut)?;
    // Of a token's form, so that a cookie of junk asks etcd nothing.
    if !store::records::Token::is_secret_form(secret) {
        return Err(Failure::LoggedOut);
    }
    match api::caller_of(&state.api, secret).await {
        Ok(caller) => Ok(Session {
            caller,
            csrf: csrf_of(secret),
        }),
        Err(error) if error.status == StatusCode::UNAUTHORIZED => Err(Failure::LoggedOut),
        Err(error) => Err(error.into()),
    }
}

impl FromRequestParts<Arc<WebState>> for Session {
    type Rejection = Failure;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<WebState>,
    ) -> Result<Session, Failure> {
        session_of(&parts.headers, state).await
    }
}

/// Refuses a request that another site's page may have made: its `Origin`
/// (which browsers send with every POST) must be this site's, and a
/// browser's `Sec-Fetch-Site` must not say cross-site.
pub(crate) fn same_origin(headers: &HeaderMap) -> Result<(), Failure> {
    let refused = |why: &str| Err(Failure::Forged(why.to_string()));
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let Some(host) = host else {
        return refused("the request names no Host");
    };
    let Some(origin) = origin else {
        return refused("the request has no Origin (send it from Paz's own page)");
    };
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    if origin_host != Some(host) {
        return refused(&format!("it comes from {origin}, not from this site"));
    }
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if matches!(fetch_site, Some("cross-site" | "same-site")) {
        return refused("the browser says another site sent it");
    }
    Ok(())
}

/// A form that changes something, sent by the logged-in user from one of
/// Paz's pages: same origin, the session's CSRF token in its `csrf` field.
#[derive(Debug)]
pub(crate) struct Posted<T>(pub(crate) Session, pub(crate) T);

impl<T: DeserializeOwned> FromRequest<Arc<WebState>> for Posted<T> {
    type Rejection = Failure;

    async fn from_request(request: Request, state: &Arc<WebState>) -> Result<Self, Failure> {
        same_origin(request.headers())?;
        let session = session_of(request.headers(), state).await?;
        let body = form_body(request).await?;
        let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&body)
            .map_err(|error| Failure::Invalid(format!("the form is not readable: {error}")))?;
        let given = fields
            .iter()
            .find(|(name, _)| name == "csrf")
            .map(|(_, value)| value.as_str())
            .unwrap_or_default();
        use subtle::ConstantTimeEq;
        if !bool::from(given.as_bytes().ct_eq(session.csrf.as_bytes())) {
            return Err(Failure::Forged(
                "its CSRF token is missing or not this session's (reload the page and send it again)"
                    .into(),
            ));
        }
        let form = serde_urlencoded::from_bytes(&body)
            .map_err(|error| Failure::Invalid(format!("the form is incomplete: {error}")))?;
        Ok(Posted(session, form))
    }
}

/// The body of a form request, of its type and within the limit.
pub(crate) async fn form_body(request: Request) -> Result<Bytes, Failure> {
    let kind = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !kind.starts_with("application/x-www-form-urlencoded") {
        return Err(Failure::Invalid(format!(
            "send a form (application/x-www-form-urlencoded), not `{kind}`"
        )));
    }
    axum::body::to_bytes(request.into_body(), FORM_LIMIT)
        .await
        .map_err(|_| Failure::Invalid(format!("the form is over {FORM_LIMIT} bytes")))
}

/// Logs in with the token secret `secret`: its session cookie, and a
/// redirect home; `None` if the token is unknown.
pub(crate) async fn log_in(
    state: &WebState,
    secret: &str,
    secure: bool,
) -> Result<Response, Failure> {
    let secret = secret.trim();
    if !store::records::Token::is_secret_form(secret) {
        return Err(Failure::LoginRefused(
            "that is not a Paz token: it starts with paz_ (an admin makes one with tokens:create NAME)".into(),
        ));
    }
    match api::caller_of(state.api.as_ref(), secret).await {
        Ok(_) => {}
        Err(error) if error.status.is_client_error() => {
            return Err(Failure::LoginRefused(error.message))
        }
        Err(error) => return Err(error.into()),
    }
    let secure = if secure { "; Secure" } else { "" };
    let cookie = format!("{COOKIE}={secret}; Path=/; HttpOnly; SameSite=Strict{secure}");
    let mut response = Redirect::to("/").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie)
            .map_err(|_| Failure::LoginRefused("that is not a Paz token".into()))?,
    );
    Ok(response)
}

/// Ends the session: the cookie is cleared, and the login page shows.
pub(crate) fn log_out() -> Response {
    let mut response = Redirect::to("/login").into_response();
    let cookie = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("a plain cookie"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let sent = headers(&[("cookie", "a=1; paz_session=paz_abc; b=2")]);
        assert_eq!(secret_in(&sent), Some("paz_abc"));
        assert_eq!(secret_in(&headers(&[("cookie", "paz_session=")])), None);
        assert_eq!(secret_in(&headers(&[("cookie", "xpaz_session=1")])), None);
    }

    #[test]
    fn a_form_from_another_site_is_refused() {
        let ours = [
            ("host", "127.0.0.1:9000"),
            ("origin", "http://127.0.0.1:9000"),
        ];
        assert!(same_origin(&headers(&ours)).is_ok());
        let foreign = [
            ("host", "127.0.0.1:9000"),
            ("origin", "http://evil.example"),
        ];
        assert!(same_origin(&headers(&foreign)).is_err());
        assert!(same_origin(&headers(&[("host", "127.0.0.1:9000")])).is_err());
        let told = [
            ("host", "127.0.0.1:9000"),
            ("origin", "http://127.0.0.1:9000"),
            ("sec-fetch-site", "cross-site"),
        ];
        assert!(same_origin(&headers(&told)).is_err());
    }

    #[test]
    fn each_secret_has_its_own_csrf_token() {
        assert_eq!(csrf_of("paz_a"), csrf_of("paz_a"));
        assert_ne!(csrf_of("paz_a"), csrf_of("paz_b"));
        assert!(!csrf_of("paz_a").contains("paz_a"));
    }
}

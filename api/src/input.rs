//! What requests bring: JSON bodies (unknown fields refused, a malformed
//! body a 422 with the reason), app names from the path, and pages.

use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use store::AppName;

use crate::error::ApiError;

/// A JSON body of `T`.
#[derive(Debug)]
pub(crate) struct Input<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Input<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Input<T>, ApiError> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Input(value)),
            // Too large (413) or not JSON at all (415) keep their status.
            Err(rejection) if matches!(rejection.status().as_u16(), 413 | 415) => {
                let id = if rejection.status().as_u16() == 413 {
                    "too_large"
                } else {
                    "not_json"
                };
                Err(ApiError::new(
                    rejection.status(),
                    id,
                    format!(
                        "{}: send a JSON body (Content-Type: application/json) of at most 64 KiB",
                        rejection.body_text()
                    ),
                ))
            }
            Err(rejection) => Err(ApiError::invalid(format!(
                "the body is not what this endpoint takes: {}",
                rejection.body_text()
            ))),
        }
    }
}

/// A name from the path or a body that becomes a verb's argument, checked:
/// a key segment, and never one that a verb would read as a `--flag`.
pub(crate) fn segment(what: &'static str, text: &str) -> Result<String, ApiError> {
    if text.starts_with('-') {
        return Err(ApiError::invalid(format!(
            "{what} `{text}` cannot start with -"
        )));
    }
    Ok(store::names::check_segment(what, text)?.to_string())
}

/// An app name from the path, checked.
pub(crate) fn app(name: &str) -> Result<AppName, ApiError> {
    Ok(AppName::new(name)?)
}

/// `?limit=&after=`: at most `limit` items (default 100, at most 500),
/// starting after the item whose key is `after`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct Page {
    pub(crate) limit: Option<usize>,
    pub(crate) after: Option<String>,
}

/// A query string of `T` (unknown parameters refused, as unknown fields are).
#[derive(Debug)]
pub(crate) struct Params<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Params<T>, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Params(value)),
            Err(rejection) => Err(ApiError::invalid(rejection.body_text())),
        }
    }
}

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 500;

impl Page {
    /// One page of `items` (in their order, each known by `key`), with a
    /// `Link: <path?limit=N&after=KEY>; rel="next"` when more follow.
    pub(crate) fn of(
        &self,
        items: Vec<Value>,
        key: impl Fn(&Value) -> String,
        path: &str,
    ) -> Response {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
        let start = match &self.after {
            Some(after) => items
                .iter()
                .position(|item| &key(item) == after)
                .map_or(items.len(), |i| i + 1),
            None => 0,
        };
        let page: Vec<Value> = items.iter().skip(start).take(limit).cloned().collect();
        let more = start + page.len() < items.len();
        let mut response = axum::Json(Value::Array(page.clone())).into_response();
        if let (true, Some(last)) = (more, page.last()) {
            let link = format!("<{path}?limit={limit}&after={}>; rel=\"next\"", key(last));
            if let Ok(value) = HeaderValue::from_str(&link) {
                response.headers_mut().insert(header::LINK, value);
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pages_follow_each_other_to_the_end() {
        let items: Vec<Value> = (1..=5).map(|n| json!({"n": n})).collect();
        let key = |item: &Value| item["n"].to_string();
        let first = Page {
            limit: Some(2),
            after: None,
        }
        .of(items.clone(), key, "/api/v1/x");
        assert_eq!(
            first.headers()[header::LINK],
            "</api/v1/x?limit=2&after=2>; rel=\"next\""
        );
        let last = Page {
            limit: Some(2),
            after: Some("4".into()),
        }
        .of(items, key, "/api/v1/x");
        assert!(last.headers().get(header::LINK).is_none(), "the last page");
    }
}

//! Why a page or an action failed, as the user sees it: an HTML page with
//! the status and what to do (the API's own message where it said no).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;

/// What went wrong.
#[derive(Debug)]
pub(crate) enum Failure {
    /// No session, or its token was revoked: log in.
    LoggedOut,
    /// The login form's token is refused.
    LoginRefused(String),
    /// A form that another site may have sent (its Origin or CSRF token).
    Forged(String),
    /// A form or a path that does not say what it needs.
    Invalid(String),
    /// The API said no (its status and message), or failed.
    Api(api::ApiError),
}

impl From<api::ApiError> for Failure {
    fn from(error: api::ApiError) -> Failure {
        Failure::Api(error)
    }
}

impl From<store::StoreError> for Failure {
    fn from(error: store::StoreError) -> Failure {
        Failure::Api(error.into())
    }
}

impl From<store::NameError> for Failure {
    fn from(error: store::NameError) -> Failure {
        Failure::Api(error.into())
    }
}

impl Failure {
    pub(crate) fn not_found(message: impl Into<String>) -> Failure {
        Failure::Api(api::ApiError::not_found(message))
    }

    pub(crate) fn forbidden(message: impl Into<String>) -> Failure {
        Failure::Api(api::ApiError::forbidden(message))
    }

    /// Its status and the sentence that says what happened.
    pub(crate) fn told(&self) -> (StatusCode, String) {
        match self {
            Failure::LoggedOut => (StatusCode::UNAUTHORIZED, "log in first".into()),
            Failure::LoginRefused(why) => (StatusCode::UNAUTHORIZED, why.clone()),
            Failure::Forged(why) => (
                StatusCode::FORBIDDEN,
                format!("refused, as a form another site may have sent: {why}"),
            ),
            Failure::Invalid(why) => (StatusCode::UNPROCESSABLE_ENTITY, why.clone()),
            Failure::Api(error) => (error.status, error.message.clone()),
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        match self {
            Failure::LoggedOut => Redirect::to("/login").into_response(),
            Failure::LoginRefused(why) => {
                let page = crate::pages::login::form(Some(&why));
                (StatusCode::UNAUTHORIZED, page).into_response()
            }
            failure => {
                let (status, message) = failure.told();
                let page = crate::layout::bare(
                    status.canonical_reason().unwrap_or("Error"),
                    html! {
                        p.error { (message) }
                        p { a href="/" { "Back to the fleet" } }
                    },
                );
                (status, page).into_response()
            }
        }
    }
}

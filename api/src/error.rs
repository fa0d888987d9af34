//! The API's errors: a status and `{"id": "...", "message": "..."}`, the
//! message being the verb's one-line reason.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use verbs::VerbError;

/// An answer that is not a success.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: StatusCode,
    /// What kind of error, for programs (`not_found`, `invalid`, ...).
    pub id: &'static str,
    pub message: String,
}

/// Every error's body.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody<'a> {
    /// What kind of error, for programs (`not_found`, `invalid`, ...).
    id: &'a str,
    /// The one-line reason, saying what to do.
    message: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, id: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            id,
            message: message.into(),
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

impl From<VerbError> for ApiError {
    fn from(error: VerbError) -> ApiError {
        let (status, id) = match &error {
            VerbError::UnknownVerb(_) => (StatusCode::NOT_FOUND, "not_found"),
            VerbError::Usage(_) | VerbError::Invalid(_) | VerbError::Name(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid")
            }
            VerbError::Denied(_) => (StatusCode::FORBIDDEN, "forbidden"),
            VerbError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            VerbError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            // Paz's store is unreachable: not the caller's mistake.
            VerbError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            VerbError::Rollout { .. } if error.store_error().is_some() => {
                (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
            }
            VerbError::Rollout { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "rollout_failed"),
            VerbError::Disk(_) => (StatusCode::INTERNAL_SERVER_ERROR, "disk"),
        };
        ApiError::new(status, id, error.to_string())
    }
}

/// The store's failure, with the status the verbs give it (503 when it
/// does not answer).
impl From<store::StoreError> for ApiError {
    fn from(error: store::StoreError) -> ApiError {
        ApiError::from(VerbError::from(error))
    }
}

impl From<store::NameError> for ApiError {
    fn from(error: store::NameError) -> ApiError {
        ApiError::invalid(error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            id: self.id,
            message: &self.message,
        };
        (self.status, axum::Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_verb_error_has_its_status() {
        let cases = [
            (VerbError::Denied("no".into()), 403),
            (VerbError::NotFound("gone".into()), 404),
            (VerbError::Invalid("bad".into()), 422),
            (VerbError::Usage("apps:info APP"), 422),
            (VerbError::Conflict("exists".into()), 409),
        ];
        for (error, status) in cases {
            let message = error.to_string();
            let api = ApiError::from(error);
            assert_eq!(api.status.as_u16(), status, "{message}");
            assert_eq!(api.message, message);
        }
    }

    #[test]
    fn a_store_that_does_not_answer_is_unavailable_not_the_callers_fault() {
        let timeout = || store::StoreError::Timeout {
            endpoints: "https://127.0.0.1:2379".into(),
            operation: "get /paz/apps/demo".into(),
            timeout: std::time::Duration::from_secs(5),
        };
        let plain = ApiError::from(VerbError::Store(timeout()));
        assert_eq!(
            (plain.status.as_u16(), plain.id),
            (503, "store_unavailable")
        );
        let mid_rollout = ApiError::from(VerbError::Rollout {
            steps: Vec::new(),
            error: deployer::DeployError::Store(timeout()),
        });
        assert_eq!(
            (mid_rollout.status.as_u16(), mid_rollout.id),
            (503, "store_unavailable")
        );
        let unhealthy = ApiError::from(VerbError::Rollout {
            steps: Vec::new(),
            error: deployer::DeployError::Broken {
                unit: "demo-v3-web-1".into(),
                reason: "failed: exit code 1".into(),
            },
        });
        assert_eq!(
            (unhealthy.status.as_u16(), unhealthy.id),
            (500, "rollout_failed")
        );
    }
}

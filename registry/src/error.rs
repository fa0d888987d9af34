//! The registry's errors, as the distribution spec's error JSON
//! (`{"errors":[{"code","message","detail"}]}`) with the right status.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// One error of the spec's list; the message says what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl RegistryError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> RegistryError {
        RegistryError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn blob_unknown(digest: &str) -> RegistryError {
        Self::new(
            StatusCode::NOT_FOUND,
            "BLOB_UNKNOWN",
            format!("blob {digest} is not in this repository"),
        )
    }
    pub fn upload_unknown() -> RegistryError {
        Self::new(
            StatusCode::NOT_FOUND,
            "BLOB_UPLOAD_UNKNOWN",
            "no such upload in this repository: start a new one with POST",
        )
    }
    pub fn upload_invalid(message: impl Into<String>) -> RegistryError {
        Self::new(StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID", message)
    }
    pub fn digest_invalid(message: impl Into<String>) -> RegistryError {
        Self::new(StatusCode::BAD_REQUEST, "DIGEST_INVALID", message)
    }
    pub fn manifest_blob_unknown(digest: &str) -> RegistryError {
        Self::new(
            StatusCode::BAD_REQUEST,
            "MANIFEST_BLOB_UNKNOWN",
            format!(
                "the manifest refers to {digest}, which is not in this repository: push it first"
            ),
        )
    }
    pub fn manifest_invalid(message: impl Into<String>) -> RegistryError {
        Self::new(StatusCode::BAD_REQUEST, "MANIFEST_INVALID", message)
    }
    pub fn manifest_unknown(reference: &str) -> RegistryError {
        Self::new(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            format!("manifest {reference} is not in this repository"),
        )
    }
    pub fn name_invalid(message: impl Into<String>) -> RegistryError {
        Self::new(StatusCode::BAD_REQUEST, "NAME_INVALID", message)
    }
    pub fn name_unknown(name: &str) -> RegistryError {
        Self::new(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            format!("repository {name} is not known to this registry"),
        )
    }
    pub fn size_invalid(message: impl Into<String>) -> RegistryError {
        Self::new(StatusCode::BAD_REQUEST, "SIZE_INVALID", message)
    }
    pub fn too_large(message: impl Into<String>) -> RegistryError {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID", message)
    }
    pub fn unauthorized(message: impl Into<String>) -> RegistryError {
        Self::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message)
    }
    pub fn denied(message: impl Into<String>) -> RegistryError {
        Self::new(StatusCode::FORBIDDEN, "DENIED", message)
    }
    pub fn unsupported(message: impl Into<String>) -> RegistryError {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED", message)
    }
    pub fn range_invalid(message: impl Into<String>) -> RegistryError {
        Self::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "BLOB_UPLOAD_INVALID",
            message,
        )
    }
    pub fn not_found() -> RegistryError {
        Self::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "no such endpoint: see the OCI distribution spec",
        )
    }
    /// A failure of Paz itself; the detail is logged, the client gets a short message.
    pub fn internal(what: &str, error: impl std::fmt::Display) -> RegistryError {
        tracing::error!(%error, "{what}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNKNOWN",
            format!("the registry failed to {what}; see its log"),
        )
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let body =
            json!({"errors": [{"code": self.code, "message": self.message, "detail": null}]});
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"paz\""),
            );
        }
        response
    }
}

pub(crate) type Result<T, E = RegistryError> = std::result::Result<T, E>;

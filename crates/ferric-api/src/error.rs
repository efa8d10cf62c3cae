//! `ApiError`: the one place that maps failures to HTTP statuses and renders
//! Ironic's error body (reference ironic.md §7.3).
//!
//! The body is double-encoded, as Ironic sends it:
//! `{"error_message": "{\"faultcode\": \"Client\", \"faultstring\": \"...\", \"debuginfo\": null}"}`.
//! A 406 from version negotiation uses Ironic's other inner shape
//! (`{"code": 406, "title": "Not Acceptable", "description": ...}`).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ferric_conductor::TaskError;
use ferric_core::DomainError;
use ferric_store::StoreError;
use serde_json::json;
use tracing::error;

/// Seconds a client is asked to wait after a lock conflict (python-ironicclient
/// retries every 2 s on its own; the header is for other integrators).
pub const RETRY_AFTER_SECS: u64 = 2;

/// Which inner document the error body carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `{faultcode, faultstring, debuginfo}`: every handler error.
    Fault,
    /// `{code, title, description}`: version negotiation.
    NotAcceptable,
}

/// An HTTP error with Ironic's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    retry_after: Option<u64>,
    shape: Shape,
}

impl ApiError {
    /// An error with `status` and the user-facing `message` (Ironic wording).
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
            shape: Shape::Fault,
        }
    }

    /// 400: invalid input or a request the node's state does not allow.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 409 without Retry-After: a request that conflicts with stored data
    /// (a duplicate name or UUID, an instance already associated, a state
    /// that forbids the operation), as Ironic answers it. The real clients
    /// retry a 409 for a while before they report it.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    /// 403: an operation the node forbids (Ironic's NodeProtected).
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    /// 409 without Retry-After: Ironic's `Conflict` (a duplicate MAC, a
    /// port in a state that forbids the change). Secondary resources answer
    /// these with 409 exactly as Ironic does.
    pub fn conflict_409(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    /// 409 with Retry-After: someone else holds the node.
    pub fn locked(message: impl Into<String>) -> Self {
        ApiError {
            retry_after: Some(RETRY_AFTER_SECS),
            ..Self::new(StatusCode::CONFLICT, message)
        }
    }

    /// 406 from version negotiation (Ironic's `{code, title, description}` shape).
    pub fn version_not_acceptable(message: impl Into<String>) -> Self {
        ApiError {
            shape: Shape::NotAcceptable,
            ..Self::new(StatusCode::NOT_ACCEPTABLE, message)
        }
    }

    /// 406 for a feature the requested microversion does not have.
    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_ACCEPTABLE, message)
    }

    /// 412: If-Match did not match.
    pub fn precondition_failed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PRECONDITION_FAILED, message)
    }

    /// 413.
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Request body is larger than the limit of {limit} bytes."),
        )
    }

    /// 503 with Retry-After.
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError {
            retry_after: Some(RETRY_AFTER_SECS),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
        }
    }

    /// 500 with a generic message; the cause is logged here, never echoed.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        error!(error.message = %cause, "internal error while serving a request");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "An internal error occurred; see the ferric log for details.",
        )
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The user-facing message (Ironic's `faultstring`).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The inner error document, as a JSON string.
    fn inner(&self) -> String {
        match self.shape {
            Shape::Fault => json!({
                "faultcode": if self.status.is_client_error() { "Client" } else { "Server" },
                "faultstring": self.message,
                "debuginfo": null,
            }),
            Shape::NotAcceptable => json!({
                "code": self.status.as_u16(),
                "title": self.status.canonical_reason().unwrap_or("Error"),
                "description": self.message,
            }),
        }
        .to_string()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error_message": self.inner() }).to_string();
        let mut resp = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NodeNotFound(ident) => {
                ApiError::not_found(format!("Node {ident} could not be found."))
            }
            StoreError::NodeLocked { .. }
            | StoreError::LockLost { .. }
            | StoreError::NodeNotLocked { .. } => ApiError::locked(e.to_string()),
            StoreError::Duplicate { field, value } => match field {
                "uuid" => ApiError::conflict(format!("A node with UUID {value} already exists.")),
                "instance_uuid" if value.is_empty() => {
                    ApiError::conflict("The instance is already associated with another node.")
                }
                "instance_uuid" => ApiError::conflict(format!(
                    "Instance {value} is already associated with a node."
                )),
                _ => ApiError::conflict(format!("A node with {field} {value} already exists.")),
            },
            StoreError::ResourceNotFound { kind, ident } => {
                ApiError::not_found(format!("{} {ident} could not be found.", title(kind)))
            }
            StoreError::ResourceDuplicate { kind, field, value } => {
                let what = match field {
                    "uuid" => "UUID",
                    "address" => "MAC address",
                    other => other,
                };
                ApiError::conflict_409(format!("A {kind} with {what} {value} already exists."))
            }
            StoreError::ResourceChanged { kind, uuid, .. } => ApiError::locked(format!(
                "{} {uuid} was changed by another request; please retry.",
                title(kind)
            )),
            StoreError::NodeAssociated { .. } => ApiError::conflict_409(e.to_string()),
            StoreError::ConductorNotFound(h) => {
                ApiError::not_found(format!("Conductor {h} could not be found."))
            }
            StoreError::Invalid(m) => ApiError::bad_request(m),
            // The database is unreachable or busy: the client may retry.
            other if other.is_unavailable() => {
                tracing::warn!(error.message = %other, "the database is unavailable; answering 503");
                ApiError::unavailable(
                    "The database is unavailable right now; nothing was changed. Please retry.",
                )
            }
            // Corrupt rows, database and migration failures.
            other => ApiError::internal(&other),
        }
    }
}

/// A resource kind as a message starts it ("Port", "Portgroup", "Chassis").
fn title(kind: ferric_store::ResourceKind) -> String {
    let s = kind.as_str();
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

impl From<ferric_conductor::provision::ProvisionError> for ApiError {
    fn from(e: ferric_conductor::provision::ProvisionError) -> Self {
        use ferric_conductor::provision::ProvisionError as P;
        match e {
            P::Invalid(m) => ApiError::bad_request(m),
            P::Protected(_) => ApiError::forbidden(e.to_string()),
            P::Task(t) => t.into(),
        }
    }
}

impl From<TaskError> for ApiError {
    fn from(e: TaskError) -> Self {
        match e {
            TaskError::Store(s) => s.into(),
            TaskError::Domain(d) => d.into(),
            TaskError::NoFreeConductorWorker => ApiError::unavailable(
                "Requested action cannot be performed due to lack of free conductor workers.",
            ),
            TaskError::ShuttingDown => {
                ApiError::unavailable("The conductor is shutting down; please retry.")
            }
            TaskError::Fenced => ApiError::unavailable(
                "The conductor cannot reach its database to heartbeat; please retry.",
            ),
            // Released tasks, driver failures: a bug or a broken BMC, not the client's fault.
            other => ApiError::internal(&other),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn fault_body_is_double_encoded() {
        let e = ApiError::not_found("Node nope could not be found.");
        let outer = json!({ "error_message": e.inner() });
        let inner: serde_json::Value =
            serde_json::from_str(outer["error_message"].as_str().unwrap()).unwrap();
        assert_eq!(inner["faultcode"], "Client");
        assert_eq!(inner["faultstring"], "Node nope could not be found.");
        assert!(inner["debuginfo"].is_null());
    }

    #[test]
    fn server_errors_have_server_faultcode() {
        let e = ApiError::unavailable("busy");
        let inner: serde_json::Value = serde_json::from_str(&e.inner()).unwrap();
        assert_eq!(inner["faultcode"], "Server");
    }

    #[test]
    fn version_406_uses_ironics_other_shape() {
        let e = ApiError::version_not_acceptable("Version 1.200 was requested");
        let inner: serde_json::Value = serde_json::from_str(&e.inner()).unwrap();
        assert_eq!(inner["code"], 406);
        assert_eq!(inner["title"], "Not Acceptable");
    }
}

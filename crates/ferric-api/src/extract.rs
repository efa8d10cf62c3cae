//! Extractors whose rejections are [`ApiError`]s, so every bad input gets
//! Ironic's error body instead of axum's plain-text rejection.

use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A JSON body. The Content-Type is not checked (clients differ); the body
/// must parse as `T`, whose serde rules (`deny_unknown_fields`, types) are the
/// validation.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

/// Like [`JsonBody`], but an empty body is `None` (e.g. `DELETE …/maintenance`
/// sends none, with `Content-Type: application/octet-stream`).
#[derive(Debug)]
pub struct OptionalJsonBody<T>(pub Option<T>);

async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    let timed_out = req
        .extensions()
        .get::<crate::server::BodyTimedOut>()
        .cloned();
    Bytes::from_request(req, state).await.map_err(|rej| {
        if timed_out.is_some_and(|t| t.is_set()) {
            crate::server::body_timeout_error()
        } else if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::payload_too_large(MAX_BODY_BYTES)
        } else {
            ApiError::bad_request(format!(
                "Could not read the request body: {}",
                rej.body_text()
            ))
        }
    })
}

/// Parse `bytes` as JSON `T`, with a 400 naming what is wrong.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let what = if e.is_syntax() || e.is_eof() {
            "Malformed JSON in request body"
        } else {
            "Invalid request body"
        };
        ApiError::bad_request(format!("{what}: {e}"))
    })
}

/// Refuse a NUL character in text stored in a text column or compared with
/// one: PostgreSQL's text type cannot hold it (SQLite can), so without this
/// the same request would be a 500 on one engine and accepted on the other.
pub fn check_text(field: &str, text: &str) -> Result<(), ApiError> {
    if text.contains('\0') {
        return Err(ApiError::bad_request(format!(
            "Invalid value for {field}: it must not contain a NUL character."
        )));
    }
    Ok(())
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = body_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::bad_request(
                "The request body is empty; a JSON document is required.",
            ));
        }
        parse_json(&bytes).map(JsonBody)
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = body_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(None));
        }
        parse_json(&bytes).map(|v| OptionalJsonBody(Some(v)))
    }
}

/// Query parameters; unknown or mistyped parameters are a 400.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|rej| ApiError::bad_request(rej.body_text()))
    }
}

/// Path parameters; a rejection is a 400.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|rej| ApiError::bad_request(rej.body_text()))
    }
}

/// The public base URL of this request (`http://<Host>`), for links.
#[derive(Debug, Clone)]
pub struct BaseUrl(pub String);

impl<S: Send + Sync> FromRequestParts<S> for BaseUrl {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| {
                !h.is_empty()
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
            })
            .map(str::to_string)
            .or_else(|| parts.uri.authority().map(|a| a.to_string()))
            .unwrap_or_else(|| "localhost:6385".to_string());
        Ok(BaseUrl(format!("http://{host}")))
    }
}

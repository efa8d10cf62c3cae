//! Extractors whose rejections are [`ApiError`]s, so every bad input gets
//! Ironic's error body instead of axum's plain-text rejection.

use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
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

/// The base URL of the links this API writes (`links`, `next`, `Location`,
/// `/openapi.json`'s server): never taken from the request (issue 17: a
/// `Host` header or an absolute request URI is the client's to choose, and
/// was reflected into every link). In order:
///
/// 1. the configured public endpoint (`api.public_endpoint`, Ironic's
///    `[api] public_endpoint`): [`PublicEndpoint`], set by [`crate::router`];
/// 2. else the address the connection arrived on (`http://<local address>`),
///    set by the server ([`LocalAddr`]): the listener's address, or with a
///    wildcard bind the machine's address the client connected to;
/// 3. else (a request handed to the router without a server, in tests)
///    `http://localhost:6385`.
///
/// Decision: Ironic without `public_endpoint` uses the request's host URL;
/// ferric does not, so a client cannot make the server hand out links to a
/// host of its choosing.
#[derive(Debug, Clone)]
pub struct BaseUrl(pub String);

/// A configured public endpoint: an `http(s)://host[:port][/path]` URL
/// without userinfo, query or fragment, and without a trailing `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicEndpoint(std::sync::Arc<str>);

impl PublicEndpoint {
    /// Parse and normalise `url` (trailing slashes dropped); the error says
    /// what is wrong, for the config check at start.
    pub fn parse(url: &str) -> Result<PublicEndpoint, String> {
        // A URL with user information may carry a password: not echoed.
        let shown = if url.contains('@') {
            "(a URL with user information, not shown)".to_string()
        } else {
            format!("{url:?}")
        };
        let bad = |why: &str| {
            Err(format!(
                "{shown} is not a valid public endpoint: {why} \
                 (expected http(s)://HOST[:PORT][/PATH], like https://ironic.example.com:6385)"
            ))
        };
        let lower = url.to_ascii_lowercase();
        if !lower.starts_with("http://") && !lower.starts_with("https://") {
            return bad("the scheme must be http or https");
        }
        if url.contains('#') {
            return bad("it must not have a fragment");
        }
        if url.contains('?') {
            return bad("it must not have a query");
        }
        let uri = match url.parse::<axum::http::Uri>() {
            Ok(u) => u,
            Err(e) => return bad(&e.to_string()),
        };
        let Some(authority) = uri.authority() else {
            return bad("it has no host");
        };
        if authority.as_str().contains('@') {
            return bad("it must not carry user information");
        }
        if authority.host().is_empty() {
            return bad("it has no host");
        }
        let trimmed = url.trim_end_matches('/');
        Ok(PublicEndpoint(std::sync::Arc::from(trimmed)))
    }

    /// The URL, without a trailing `/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The local address of the connection a request came on (a request
/// extension set by [`crate::server`]).
#[derive(Debug, Clone, Copy)]
pub struct LocalAddr(pub std::net::SocketAddr);

impl<S: Send + Sync> FromRequestParts<S> for BaseUrl {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(p) = parts.extensions.get::<PublicEndpoint>() {
            return Ok(BaseUrl(p.as_str().to_string()));
        }
        if let Some(LocalAddr(addr)) = parts.extensions.get::<LocalAddr>() {
            let addr = std::net::SocketAddr::new(addr.ip().to_canonical(), addr.port());
            return Ok(BaseUrl(format!("http://{addr}")));
        }
        Ok(BaseUrl("http://localhost:6385".to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::PublicEndpoint;

    #[test]
    fn public_endpoints_are_checked() {
        for ok in [
            "http://ironic.example.com",
            "https://ironic.example.com:6385",
            "https://[2001:db8::1]:6385/baremetal/",
            "http://10.0.0.1:6385/",
        ] {
            assert!(PublicEndpoint::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            PublicEndpoint::parse("https://a.example/x//")
                .map(|p| p.as_str().to_string())
                .ok()
                .as_deref(),
            Some("https://a.example/x")
        );
        for (bad, why) in [
            ("ftp://a.example", "scheme"),
            ("a.example:6385", "scheme"),
            ("https://a.example/?x=1", "query"),
            ("https://a.example/#top", "fragment"),
            ("https://user:pw@a.example", "user information"),
            ("https://", "not a valid public endpoint"),
            ("http://a b", "public endpoint"),
            ("", "scheme"),
        ] {
            match PublicEndpoint::parse(bad) {
                Ok(p) => panic!("{bad:?} accepted as {p:?}"),
                Err(e) => assert!(e.contains(why), "{bad:?}: {e}"),
            }
        }
    }
}

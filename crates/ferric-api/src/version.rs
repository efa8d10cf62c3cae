//! Microversion negotiation (reference ironic.md §7.1, ecosystem.md §1.4).
//!
//! * Request headers: `OpenStack-API-Version: baremetal 1.N` (preferred, as
//!   microversion-parse does) or `X-OpenStack-Ironic-API-Version: 1.N`;
//!   `latest` means the maximum; absent means the minimum (1.1).
//! * Malformed, major ≠ 1, or minor outside [min, max] → 406.
//! * Every response carries the min/max headers; every non-406 response also
//!   carries the version used.

use crate::error::ApiError;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Lowest microversion served.
pub const MIN_MINOR: u32 = 1;
/// Highest microversion served: Ironic 39's maximum. Every gate up to
/// 1.115 that concerns a resource ferric serves is applied.
pub const MAX_MINOR: u32 = 115;

/// The legacy (and python-ironicclient's) request/response header.
pub const VERSION_HEADER: &str = "x-openstack-ironic-api-version";
/// Minimum-version response header.
pub const MIN_HEADER: &str = "x-openstack-ironic-api-minimum-version";
/// Maximum-version response header.
pub const MAX_HEADER: &str = "x-openstack-ironic-api-maximum-version";
/// The service-type-qualified header openstacksdk sends as well.
pub const OPENSTACK_HEADER: &str = "openstack-api-version";

/// The microversion a request is served at (`1.minor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub minor: u32,
}

impl Version {
    /// 1.1.
    pub const MIN: Version = Version { minor: MIN_MINOR };
    /// The maximum served.
    pub const MAX: Version = Version { minor: MAX_MINOR };

    /// Whether this request's version is at least `1.minor`.
    pub fn at_least(self, minor: u32) -> bool {
        self.minor >= minor
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "1.{}", self.minor)
    }
}

fn range() -> String {
    format!("[{}, {}]", Version::MIN, Version::MAX)
}

/// The version string the client asked for, if any.
fn requested(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    for value in headers.get_all(OPENSTACK_HEADER) {
        let text = value.to_str().map_err(|_| {
            ApiError::version_not_acceptable("Invalid value for OpenStack-API-Version header.")
        })?;
        for entry in text.split(',') {
            let mut parts = entry.split_whitespace();
            if let (Some(service), Some(ver)) = (parts.next(), parts.next()) {
                if service.eq_ignore_ascii_case("baremetal") {
                    return Ok(Some(ver.to_string()));
                }
            }
        }
    }
    match headers.get(VERSION_HEADER) {
        None => Ok(None),
        Some(v) => v.to_str().map(|s| Some(s.trim().to_string())).map_err(|_| {
            ApiError::version_not_acceptable(
                "Invalid value for X-OpenStack-Ironic-API-Version header.",
            )
        }),
    }
}

/// Negotiate the version of a request from its headers.
pub fn negotiate(headers: &HeaderMap) -> Result<Version, ApiError> {
    let Some(text) = requested(headers)? else {
        return Ok(Version::MIN);
    };
    if text.eq_ignore_ascii_case("latest") {
        return Ok(Version::MAX);
    }
    let malformed = || {
        ApiError::version_not_acceptable(format!(
            "Invalid value for X-OpenStack-Ironic-API-Version header: \"{text}\". \
             Expected \"latest\" or a version such as \"1.{MAX_MINOR}\"; \
             the supported version range is: {}.",
            range()
        ))
    };
    let (major, minor) = text.split_once('.').ok_or_else(malformed)?;
    let digits = |s: &str| !s.is_empty() && s.len() <= 9 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(major) || !digits(minor) {
        return Err(malformed());
    }
    let major: u32 = major.parse().map_err(|_| malformed())?;
    let minor: u32 = minor.parse().map_err(|_| malformed())?;
    if major != 1 {
        return Err(ApiError::version_not_acceptable(format!(
            "Mutually exclusive versions requested. Version {text} requested but not supported \
             by this service. The supported version range is: {}.",
            range()
        )));
    }
    if !(MIN_MINOR..=MAX_MINOR).contains(&minor) {
        return Err(ApiError::version_not_acceptable(format!(
            "Version {text} was requested but the minor version is not supported by this \
             service. The supported version range is: {}.",
            range()
        )));
    }
    Ok(Version { minor })
}

fn set(headers: &mut HeaderMap, name: &'static str, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(HeaderName::from_static(name), v);
    }
}

/// The most of a refused request's body read before the 406 (bodies larger
/// than this lose their connection instead).
const NEGOTIATION_DRAIN_BYTES_MAX: usize = 1 << 20;

/// Middleware: negotiate, record the [`Version`] in the request's extensions,
/// and put the version headers on every response.
pub async fn middleware(mut req: Request, next: Next) -> Response {
    // The root document is served whatever version is asked for.
    let negotiated = match negotiate(req.headers()) {
        Err(_) if req.uri().path() == "/" => Ok(Version::MIN),
        other => other,
    };
    let mut resp = match negotiated {
        Ok(v) => {
            req.extensions_mut().insert(v);
            let mut resp = next.run(req).await;
            set(resp.headers_mut(), VERSION_HEADER, v.to_string());
            resp
        }
        Err(e) => {
            // Read the body before answering: a response sent while the
            // body is unread makes hyper close the connection, and the real
            // clients retry their 406 (version negotiation) on that same
            // pooled connection ("Remote end closed connection").
            let _ = axum::body::to_bytes(req.into_body(), NEGOTIATION_DRAIN_BYTES_MAX).await;
            e.into_response()
        }
    };
    let h = resp.headers_mut();
    set(h, MIN_HEADER, Version::MIN.to_string());
    set(h, MAX_HEADER, Version::MAX.to_string());
    resp
}

impl<S: Send + Sync> FromRequestParts<S> for Version {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Version>()
            .copied()
            .unwrap_or(Version::MIN))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn absent_is_minimum_and_latest_is_maximum() {
        assert_eq!(negotiate(&h(&[])).unwrap(), Version::MIN);
        assert_eq!(
            negotiate(&h(&[(VERSION_HEADER, "latest")])).unwrap(),
            Version::MAX
        );
        assert_eq!(
            negotiate(&h(&[(VERSION_HEADER, "1.31")])).unwrap().minor,
            31
        );
    }

    #[test]
    fn service_qualified_header_wins() {
        let v = negotiate(&h(&[
            (OPENSTACK_HEADER, "compute 2.1, baremetal 1.80"),
            (VERSION_HEADER, "1.2"),
        ]))
        .unwrap();
        assert_eq!(v.minor, 80);
        // Another service only: fall back to the legacy header.
        let v = negotiate(&h(&[
            (OPENSTACK_HEADER, "compute 2.1"),
            (VERSION_HEADER, "1.2"),
        ]))
        .unwrap();
        assert_eq!(v.minor, 2);
    }

    #[test]
    fn bad_versions_are_406() {
        for bad in ["1.200", "1.0", "2.1", "abc", "1.", "1.x", "1.2.3", ""] {
            let mut m = HeaderMap::new();
            m.insert(VERSION_HEADER, HeaderValue::from_str(bad).unwrap());
            let e = negotiate(&m).unwrap_err();
            assert_eq!(e.status().as_u16(), 406, "{bad}");
        }
        let e = negotiate(&h(&[(VERSION_HEADER, "1.200")])).unwrap_err();
        assert_eq!(
            e.message(),
            "Version 1.200 was requested but the minor version is not supported by this service. The supported version range is: [1.1, 1.115]."
        );
    }
}

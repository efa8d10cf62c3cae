//! Authentication (SPEC §8): bearer tokens and HTTP basic against an
//! htpasswd file of bcrypt hashes (Ironic's `auth_strategy = http_basic`).
//!
//! Which mode a deployment may use (no auth only on loopback, refusing to
//! start otherwise unless told `--insecure-no-auth`) is the binary's decision;
//! this module only checks requests. The version documents (`GET /`,
//! `GET /v1`) stay public, as in Ironic, so clients can negotiate first, and
//! so do the ramdisk agent's endpoints (`/v1/lookup`,
//! `/v1/heartbeat/<lower-case uuid or name>`: Ironic's `acl_public_routes`),
//! which the agent token protects instead.

use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a verified basic credential is remembered (bcrypt is slow on purpose).
const VERIFIED_TTL: Duration = Duration::from_secs(300);
/// Most remembered credentials.
const VERIFIED_MAX: usize = 1024;

/// Users and their bcrypt hashes, as read from an htpasswd file.
#[derive(Clone, Default)]
pub struct Htpasswd {
    users: HashMap<String, String>,
}

impl std::fmt::Debug for Htpasswd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut users: Vec<&String> = self.users.keys().collect();
        users.sort();
        f.debug_struct("Htpasswd").field("users", &users).finish()
    }
}

impl Htpasswd {
    /// Parse `user:hash` lines (blank lines and `#` comments skipped). Only
    /// bcrypt hashes (`$2a$`, `$2b$`, `$2y$`) are accepted, as in Ironic.
    pub fn parse(text: &str) -> Result<Htpasswd, String> {
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                return Err(format!("htpasswd line {}: expected user:hash", i + 1));
            };
            if user.is_empty() {
                return Err(format!("htpasswd line {}: empty user name", i + 1));
            }
            if !["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p)) {
                return Err(format!(
                    "htpasswd line {} (user {user}): only bcrypt hashes are supported (htpasswd -B)",
                    i + 1
                ));
            }
            users.insert(user.to_string(), hash.to_string());
        }
        if users.is_empty() {
            return Err("htpasswd file has no users".to_string());
        }
        Ok(Htpasswd { users })
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether there are no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// Who may call the API.
#[derive(Debug, Default)]
pub struct Auth {
    /// Accepted bearer tokens (`Authorization: Bearer T` or `X-Auth-Token: T`).
    tokens: Vec<String>,
    /// HTTP basic users.
    htpasswd: Option<Htpasswd>,
    /// Recently verified basic credentials (header value → when).
    verified: Mutex<HashMap<String, Instant>>,
}

impl Auth {
    /// No authentication.
    pub fn none() -> Auth {
        Auth::default()
    }

    /// Accept any of `tokens` (empty tokens are ignored).
    pub fn with_tokens(mut self, tokens: impl IntoIterator<Item = String>) -> Auth {
        self.tokens
            .extend(tokens.into_iter().filter(|t| !t.is_empty()));
        self
    }

    /// Accept HTTP basic credentials of these users.
    pub fn with_htpasswd(mut self, htpasswd: Htpasswd) -> Auth {
        self.htpasswd = Some(htpasswd);
        self
    }

    /// Whether requests must authenticate.
    pub fn is_required(&self) -> bool {
        !self.tokens.is_empty() || self.htpasswd.is_some()
    }

    fn token_ok(&self, presented: &str) -> bool {
        // Every token is compared, in constant time per token.
        self.tokens.iter().fold(false, |ok, t| {
            ok | constant_time_eq(t.as_bytes(), presented.as_bytes())
        })
    }

    fn remembered(&self, header: &str) -> bool {
        let guard = match self.verified.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        guard
            .get(header)
            .is_some_and(|at| at.elapsed() < VERIFIED_TTL)
    }

    fn remember(&self, header: &str) {
        let mut guard = match self.verified.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if guard.len() >= VERIFIED_MAX {
            guard.retain(|_, at| at.elapsed() < VERIFIED_TTL);
            if guard.len() >= VERIFIED_MAX {
                guard.clear();
            }
        }
        guard.insert(header.to_string(), Instant::now());
    }

    /// Check the credentials of a request.
    pub async fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if !self.is_required() {
            return Ok(());
        }
        let authz = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::trim);
        if !self.tokens.is_empty() {
            let bearer = authz.and_then(|a| {
                a.strip_prefix("Bearer ")
                    .or_else(|| a.strip_prefix("bearer "))
            });
            let x_auth = headers.get("x-auth-token").and_then(|v| v.to_str().ok());
            if let Some(t) = bearer.or(x_auth) {
                if self.token_ok(t.trim()) {
                    return Ok(());
                }
            }
        }
        if let (Some(htpasswd), Some(a)) = (&self.htpasswd, authz) {
            if let Some(encoded) = a
                .strip_prefix("Basic ")
                .or_else(|| a.strip_prefix("basic "))
            {
                if self.remembered(a) {
                    return Ok(());
                }
                if let Some((user, password)) = decode_basic(encoded.trim()) {
                    if let Some(hash) = htpasswd.users.get(&user).cloned() {
                        let ok = tokio::task::spawn_blocking(move || {
                            bcrypt::verify(password, &hash).unwrap_or(false)
                        })
                        .await
                        .unwrap_or(false);
                        if ok {
                            self.remember(a);
                            return Ok(());
                        }
                    }
                }
            }
        }
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "The request you have made requires authentication.",
        ))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The user name of a request's HTTP basic credentials, if it has any (for
/// the audit trail; the middleware has verified them already).
pub fn basic_user(headers: &HeaderMap) -> Option<String> {
    let authz = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let encoded = authz
        .strip_prefix("Basic ")
        .or_else(|| authz.strip_prefix("basic "))?;
    decode_basic(encoded.trim()).map(|(user, _)| user)
}

/// Decode `base64(user:password)`.
fn decode_basic(encoded: &str) -> Option<(String, String)> {
    let bytes = base64_decode(encoded)?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Standard base64 with padding (RFC 4648 §4); `None` when malformed.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let s = s.as_bytes();
    if s.is_empty() || !s.len().is_multiple_of(4) || s.len() > 8192 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for chunk in s.chunks(4) {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 {
            return None;
        }
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            let v = if i >= 4 - pad { 0 } else { val(c)? };
            n = (n << 6) | v;
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

/// Paths served without credentials (version discovery, the API description).
fn is_public(path: &str) -> bool {
    let path = path.trim_end_matches('/');
    matches!(path, "" | "/v1" | "/openapi.json" | "/v1/lookup")
        || is_heartbeat(path)
        || crate::boot::is_boot_path(path)
}

/// Ironic's public route `/v1/heartbeat/[a-z0-9\-]+`: the ramdisk agent
/// has no API credentials; its heartbeat is checked by the agent token
/// instead (`crate::agent`), and the lookup hands the token out only once.
fn is_heartbeat(path: &str) -> bool {
    path.strip_prefix("/v1/heartbeat/").is_some_and(|node| {
        !node.is_empty()
            && node
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    })
}

/// Middleware: refuse unauthenticated requests with 401 (and a
/// `WWW-Authenticate` challenge when basic auth is configured).
pub async fn middleware(
    State(auth): State<std::sync::Arc<Auth>>,
    req: Request,
    next: Next,
) -> Response {
    if !auth.is_required() || is_public(req.uri().path()) {
        return next.run(req).await;
    }
    match auth.check(req.headers()).await {
        Ok(()) => next.run(req).await,
        Err(e) => {
            let mut resp = e.into_response();
            if auth.htpasswd.is_some() {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"Baremetal API\""),
                );
            }
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn basic_user_names_the_audit_actor() {
        let mut h = HeaderMap::new();
        assert_eq!(basic_user(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic YWRtaW46c2VjcmV0"),
        );
        assert_eq!(basic_user(&h).as_deref(), Some("admin"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        assert_eq!(basic_user(&h), None);
    }

    #[test]
    fn base64_round_trips_known_values() {
        assert_eq!(base64_decode("YWRtaW46c2VjcmV0").unwrap(), b"admin:secret");
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert_eq!(base64_decode("YWI=").unwrap(), b"ab");
        assert!(base64_decode("YQ=").is_none());
        assert!(base64_decode("Y!==").is_none());
    }

    #[test]
    fn htpasswd_accepts_only_bcrypt() {
        let h = Htpasswd::parse("# users\nadmin:$2y$05$abcdefghijklmnopqrstuu\n\n").unwrap();
        assert_eq!(h.len(), 1);
        assert!(Htpasswd::parse("admin:{SHA}xyz").is_err());
        assert!(Htpasswd::parse("nocolon").is_err());
        assert!(Htpasswd::parse("").is_err());
    }

    #[tokio::test]
    async fn tokens_and_basic_credentials_are_checked() {
        let hash = bcrypt::hash("secret", 4).unwrap();
        let auth = Auth::none()
            .with_tokens(["tok".to_string()])
            .with_htpasswd(Htpasswd::parse(&format!("admin:{hash}")).unwrap());
        let h = |k: &'static str, v: &'static str| {
            let mut m = HeaderMap::new();
            m.insert(k, HeaderValue::from_static(v));
            m
        };
        assert!(auth.check(&HeaderMap::new()).await.is_err());
        assert!(auth.check(&h("authorization", "Bearer tok")).await.is_ok());
        assert!(auth.check(&h("x-auth-token", "tok")).await.is_ok());
        assert!(auth.check(&h("x-auth-token", "nope")).await.is_err());
        assert!(auth
            .check(&h("authorization", "Basic YWRtaW46c2VjcmV0"))
            .await
            .is_ok());
        // Remembered the second time.
        assert!(auth
            .check(&h("authorization", "Basic YWRtaW46c2VjcmV0"))
            .await
            .is_ok());
        // admin:wrong
        assert!(auth
            .check(&h("authorization", "Basic YWRtaW46d3Jvbmc="))
            .await
            .is_err());
        assert!(!Auth::none().is_required());
        assert!(Auth::none().check(&HeaderMap::new()).await.is_ok());
    }

    #[test]
    fn version_documents_are_public() {
        assert!(is_public("/"));
        assert!(is_public("/v1"));
        assert!(is_public("/v1/"));
        assert!(!is_public("/v1/nodes"));
    }

    #[test]
    fn boot_files_are_public() {
        assert!(is_public("/boot/boot.ipxe"));
        assert!(is_public("/boot/nodes/n1/deploy_kernel"));
        assert!(!is_public("/bootx"));
        assert!(!is_public("/v1/boot/boot.ipxe"));
    }

    #[test]
    fn agent_endpoints_are_public_as_in_ironic() {
        assert!(is_public("/v1/lookup"));
        assert!(is_public("/v1/lookup/"));
        assert!(is_public(
            "/v1/heartbeat/1be26c0b-03f2-4d2e-ae87-c02d7f33c123"
        ));
        assert!(is_public("/v1/heartbeat/node-1"));
        assert!(!is_public("/v1/heartbeat/"));
        assert!(
            !is_public("/v1/heartbeat/Node1"),
            "Ironic's pattern is lower case"
        );
        assert!(!is_public("/v1/heartbeat/n1/x"));
        assert!(!is_public("/v1/lookupx"));
        assert!(!is_public("/lookup"), "only the /v1 paths, as Ironic");
    }
}

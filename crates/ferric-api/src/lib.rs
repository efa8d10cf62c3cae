//! ferric-api: the REST API, a compatible subset of OpenStack Ironic v1
//! (SPEC §8; reference ironic.md §7, ecosystem.md §1).
//!
//! [`router`] builds the whole service; the binary binds it (default port
//! 6385) and serves it. Layout:
//!
//! * [`version`]: microversion negotiation and the version headers on every
//!   response;
//! * [`error`]: `ApiError`, the only HTTP mapping, rendering Ironic's
//!   double-encoded error body;
//! * [`auth`]: bearer tokens and HTTP basic (htpasswd, bcrypt);
//! * [`extract`]: JSON / query / path extractors whose rejections are
//!   `ApiError`s;
//! * [`nodes`], [`states`], [`misc`]: the handlers; [`patch`]: JSON Patch on a
//!   node as a pure function; [`render`]: Ironic's JSON documents.
//!
//! Boundary: every node write goes through the conductor's `TaskManager`
//! under the node's exclusive lock; reads go to the store directly.

pub mod agent;
pub mod allocations;
pub mod auth;
pub mod boot;
pub mod chassis;
pub mod deploy_templates;
pub mod error;
pub mod extract;
pub(crate) mod fields;
pub mod inspection_rules;
pub mod locks;
pub mod lookup;
pub mod metrics;
pub mod misc;
pub mod node_states;
pub mod node_sub;
pub mod nodes;
pub mod patch;
pub mod portgroups;
pub mod ports;
pub mod render;
pub mod resource;
pub mod runbooks;
pub mod server;
pub mod states;
pub(crate) mod traits;
pub mod version;
pub mod vifs;
pub mod volume;

pub use error::ApiError;
pub use patch::{apply_patch, PatchOp};
pub use version::Version;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::uri::PathAndQuery;
use axum::http::{StatusCode, Uri};
use axum::routing::get;
use axum::Router;
use ferric_conductor::cluster::current_ring;
use ferric_conductor::drivers::Drivers;
use ferric_conductor::provision::Provisioner;
use ferric_conductor::ring::HashRing;
use ferric_conductor::{Retry, TaskManager};
use prometheus_client::registry::Registry;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tower::ServiceExt;

/// Ironic's default `[api] ramdisk_heartbeat_timeout`.
pub const DEFAULT_RAMDISK_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(300);

/// Default pause before each step of the provision and power flows.
pub const DEFAULT_FAKE_STEP_DELAY: Duration = ferric_conductor::provision::DEFAULT_STEP_DELAY;

/// What the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    /// The conductor's TaskManager; also gives the store.
    pub tm: TaskManager,
    /// How API writes wait for a node someone else holds before answering 409
    /// (Ironic's conductor: 3 × 1 s).
    pub retry: Retry,
    /// Set when [`serve`] begins its graceful shutdown: long polls answer.
    pub(crate) stopping: Arc<tokio::sync::watch::Sender<bool>>,
    /// Request counters and latencies (registered in `registry`).
    pub metrics: Arc<metrics::Metrics>,
    /// The process's metrics registry, encoded at `/metrics`: the request
    /// metrics and whatever else was registered before it was handed over
    /// ([`ApiState::with_registry`]).
    pub registry: Arc<Registry>,
    /// Who may call the API (default: anyone).
    pub auth: Arc<auth::Auth>,
    /// The hash ring of this conductor's group, briefly cached: it names the
    /// `conductor` of each node in responses.
    ring: Arc<Mutex<Option<CachedRing>>>,
    /// The conductor's provisioning flow: every verb, power action and
    /// agent heartbeat goes through it.
    pub(crate) prov: Provisioner,
    /// `heartbeat_timeout` told to ramdisk agents at lookup (Ironic's
    /// `[api] ramdisk_heartbeat_timeout`; agents heartbeat every 30-60 % of it).
    pub ramdisk_heartbeat_timeout: Duration,
    /// The base URL of every link (`api.public_endpoint`, Ironic's
    /// `[api] public_endpoint`); absent: the connection's local address
    /// (`extract::BaseUrl`).
    pub public_endpoint: Option<extract::PublicEndpoint>,
}

/// A ring and when it was read.
type CachedRing = (Instant, Arc<HashRing>);

/// How long the cached ring is used before the conductor list is read again.
const RING_CACHE_TTL: Duration = Duration::from_secs(2);

/// Which conductor manages which node (Ironic's `conductor` field).
pub(crate) struct Owners {
    ring: Option<Arc<HashRing>>,
    group: String,
}

impl Owners {
    /// The ring owner of `node`, if its group is this conductor's group and
    /// the ring has members.
    pub(crate) fn owner(&self, node: &ferric_core::Node) -> Option<&str> {
        if node.conductor_group != self.group {
            return None;
        }
        self.ring.as_deref()?.owner(node.uuid)
    }
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("tm", &self.tm)
            .field("provisioner", &self.prov)
            .field("retry", &self.retry)
            .field("auth_required", &self.auth.is_required())
            .finish()
    }
}

impl ApiState {
    /// State with the defaults: the built-in hardware types, 500 ms steps,
    /// `Retry::Default`.
    pub fn new(tm: TaskManager) -> Self {
        let metrics = Arc::new(metrics::Metrics::default());
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        ApiState {
            tm: tm.clone(),
            retry: Retry::Default,
            auth: Arc::new(auth::Auth::none()),
            metrics,
            registry: Arc::new(registry),
            stopping: Arc::new(tokio::sync::watch::Sender::new(false)),
            ring: Arc::new(Mutex::new(None)),
            prov: Provisioner::new(tm, Drivers::new(), DEFAULT_FAKE_STEP_DELAY),
            ramdisk_heartbeat_timeout: DEFAULT_RAMDISK_HEARTBEAT_TIMEOUT,
            public_endpoint: None,
        }
    }

    /// The provisioning flow; it also holds the hardware types and
    /// interfaces (`GET /v1/drivers`, node interface fields).
    pub fn provisioner(&self) -> &Provisioner {
        &self.prov
    }

    /// The hardware registry.
    pub(crate) fn drivers(&self) -> &Drivers {
        self.prov.drivers()
    }

    /// The current ring owners (cached for [`RING_CACHE_TTL`]). A store
    /// failure yields no owners rather than failing the request.
    pub(crate) async fn owners(&self) -> Owners {
        let group = self.tm.config().conductor_group.to_ascii_lowercase();
        let cached = match self.ring.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let ring = match cached {
            Some((at, ring)) if at.elapsed() < RING_CACHE_TTL => Some(ring),
            _ => match current_ring(&self.tm).await {
                Ok(r) => {
                    let r = Arc::new(r);
                    let entry = Some((Instant::now(), r.clone()));
                    match self.ring.lock() {
                        Ok(mut g) => *g = entry,
                        Err(p) => *p.into_inner() = entry,
                    }
                    Some(r)
                }
                Err(e) => {
                    tracing::warn!(error.message = %e, "cannot read the conductor ring");
                    None
                }
            },
        };
        Owners { ring, group }
    }

    /// Require these credentials (bearer tokens and/or HTTP basic).
    pub fn with_auth(mut self, auth: auth::Auth) -> Self {
        self.auth = Arc::new(auth);
        self
    }

    /// Serve `registry` at `/metrics`: the process's one registry, holding
    /// the other components' families; the request metrics are added to it.
    pub fn with_registry(mut self, mut registry: Registry) -> Self {
        self.metrics.register(&mut registry);
        self.registry = Arc::new(registry);
        self
    }

    /// Use these hardware drivers.
    pub fn with_drivers(mut self, drivers: Drivers) -> Self {
        self.prov = Provisioner::new(self.tm.clone(), drivers, self.prov.step_delay());
        self
    }

    /// Set the pause before each step of the provision and power flows.
    pub fn with_fake_step_delay(mut self, delay: Duration) -> Self {
        self.prov = Provisioner::new(self.tm.clone(), self.prov.drivers().clone(), delay);
        self
    }

    /// Set how writes wait for a locked node.
    pub fn with_retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// Write links with this base URL instead of the connection's address.
    pub fn with_public_endpoint(mut self, endpoint: Option<extract::PublicEndpoint>) -> Self {
        self.public_endpoint = endpoint;
        self
    }

    /// Set the `heartbeat_timeout` told to ramdisk agents at lookup.
    pub fn with_ramdisk_heartbeat_timeout(mut self, timeout: Duration) -> Self {
        self.ramdisk_heartbeat_timeout = timeout;
        self
    }
}

fn v1_routes() -> Router<ApiState> {
    use axum::routing::put;
    Router::new()
        .route("/v1", get(misc::v1))
        .route("/v1/nodes", get(nodes::list).post(nodes::create))
        .route("/v1/nodes/detail", get(nodes::list_detail))
        .route("/v1/nodes/changes", get(misc::changes))
        .route(
            "/v1/nodes/{ident}",
            get(nodes::get).patch(nodes::patch).delete(nodes::delete),
        )
        .route("/v1/nodes/{ident}/states", get(states::get_states))
        .route(
            "/v1/nodes/{ident}/states/provision",
            put(states::set_provision),
        )
        .route("/v1/nodes/{ident}/states/power", put(states::set_power))
        .route(
            "/v1/nodes/{ident}/maintenance",
            put(states::put_maintenance).delete(states::delete_maintenance),
        )
        .route("/v1/nodes/{ident}/validate", get(states::validate))
        // ferric extension: `ferric lock release` through a running conductor.
        .route(
            "/v1/nodes/{ident}/lock/release",
            axum::routing::post(locks::release),
        )
        .route("/v1/conductors", get(misc::conductors))
        .route("/v1/conductors/{hostname}", get(misc::conductor))
        .route("/v1/drivers", get(misc::drivers))
        .route("/v1/drivers/{name}", get(misc::driver))
        .route(
            "/v1/heartbeat/{node}",
            axum::routing::post(agent::heartbeat),
        )
        .merge(traits::routes())
        .merge(ports::routes())
        .merge(portgroups::routes())
        .merge(chassis::routes())
        .merge(vifs::routes())
        .merge(node_states::routes())
        .merge(deploy_templates::routes())
        .merge(runbooks::routes())
        .merge(volume::routes())
        .merge(inspection_rules::routes())
        .merge(node_sub::routes())
        .merge(allocations::routes())
        .route("/v1/lookup", get(lookup::lookup))
}

async fn not_found() -> ApiError {
    ApiError::not_found("The resource could not be found.")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "The method is not allowed for the requested URL.",
    )
}

/// Ironic tolerates trailing slashes and routes paths without `/v1` to v1.
fn normalize(uri: &Uri) -> Option<Uri> {
    let path = uri.path();
    let mut p = path.trim_end_matches('/').to_string();
    if p.is_empty() {
        return None;
    }
    if p != "/v1"
        && !p.starts_with("/v1/")
        && p != "/openapi.json"
        && p != "/metrics"
        && !boot::is_boot_path(&p)
    {
        p = format!("/v1{p}");
    }
    if p == path {
        return None;
    }
    let pq = match uri.query() {
        Some(q) => format!("{p}?{q}"),
        None => p,
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(pq).ok()?);
    Uri::from_parts(parts).ok()
}

/// The whole API. Every response carries the version headers; every error
/// has Ironic's body; request bodies are limited to
/// [`extract::MAX_BODY_BYTES`]; everything but the version documents needs
/// the credentials of [`ApiState::auth`] when it requires any.
pub fn router(state: ApiState) -> Router {
    let auth_state = state.auth.clone();
    let metrics = state.metrics.clone();
    let public_endpoint = state.public_endpoint.clone();
    // gzip for clients that ask for it (Accept-Encoding), at the fastest
    // level: a 100,000-node detail list is ~240 MB of JSON, and the level
    // decides whether compressing costs more than it saves (issue 18). Only
    // the REST API: boot files and images go out as they are.
    let compression = tower_http::compression::CompressionLayer::new()
        .quality(tower_http::CompressionLevel::Fastest);
    let inner: Router = v1_routes()
        .layer(compression)
        .route("/", get(misc::root))
        .route("/openapi.json", get(misc::openapi))
        .route("/metrics", get(serve_metrics))
        .merge(boot::routes())
        .route_layer(axum::middleware::from_fn(record_route))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(extract::MAX_BODY_BYTES))
        .with_state(state);
    Router::new()
        .fallback(move |mut req: Request| {
            let inner = inner.clone();
            let public_endpoint = public_endpoint.clone();
            async move {
                if let Some(uri) = normalize(req.uri()) {
                    *req.uri_mut() = uri;
                }
                if let Some(p) = public_endpoint {
                    req.extensions_mut().insert(p);
                }
                match inner.oneshot(req).await {
                    Ok(resp) => resp,
                    Err(never) => match never {},
                }
            }
        })
        .layer(axum::middleware::from_fn_with_state(
            auth_state,
            auth::middleware,
        ))
        .layer(axum::middleware::from_fn(version::middleware))
        .layer(axum::middleware::from_fn_with_state(metrics, trace))
}

/// `GET /metrics`: the registry in the Prometheus text format 0.0.4.
async fn serve_metrics(
    axum::extract::State(st): axum::extract::State<ApiState>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use prometheus_client::encoding::prometheus_text;
    let mut text = String::new();
    match prometheus_text::encode(&mut text, &st.registry) {
        Ok(()) => (
            [(
                axum::http::header::CONTENT_TYPE,
                prometheus_text::CONTENT_TYPE,
            )],
            text,
        )
            .into_response(),
        Err(e) => ApiError::internal(&e).into_response(),
    }
}

/// Route layer: record the matched route template for the metrics.
async fn record_route(req: Request, next: axum::middleware::Next) -> axum::response::Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(metrics::Route::matched);
    let mut resp = next.run(req).await;
    if let Some(r) = route {
        resp.extensions_mut().insert(r);
    }
    resp
}

/// Outermost middleware: a `request` span with a request id (returned as
/// Ironic's `x-openstack-request-id` / `openstack-request-id`), and one log
/// line per request (debug; server errors at warn, their cause is logged
/// where the error was made).
async fn trace(
    axum::extract::State(metrics): axum::extract::State<Arc<metrics::Metrics>>,
    req: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use tracing::Instrument;
    let _in_flight = metrics.start();
    let method = metrics::Method::of(req.method());
    let request_id = format!("req-{}", uuid::Uuid::new_v4());
    let span = tracing::info_span!(
        "request",
        method = %req.method(),
        path = %req.uri().path(),
        request_id = %request_id,
    );
    let started = Instant::now();
    let mut resp = next.run(req).instrument(span.clone()).await;
    let status = resp.status().as_u16();
    let elapsed = started.elapsed();
    let route = resp
        .extensions_mut()
        .remove::<metrics::Route>()
        .unwrap_or(metrics::Route::UNMATCHED);
    metrics.record(method, route, status, elapsed);
    let elapsed_ms = elapsed.as_millis() as u64;
    if resp.status().is_server_error() {
        tracing::warn!(parent: &span, status, elapsed_ms, "request failed");
    } else {
        tracing::debug!(parent: &span, status, elapsed_ms, "request served");
    }
    if let Ok(v) = axum::http::HeaderValue::from_str(&request_id) {
        let h = resp.headers_mut();
        h.insert("x-openstack-request-id", v.clone());
        h.insert("openstack-request-id", v);
    }
    resp
}

/// Serve the API on `listener` until `shutdown` completes; in-flight
/// requests finish first (graceful shutdown), and long polls of the
/// change feed answer at once when it starts.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, state, server::ServeOptions::default(), shutdown).await
}

/// [`serve`] with the connection bounds of `options` (timeouts, connection
/// limit: [`server`]).
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    state: ApiState,
    options: server::ServeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stopping = state.stopping.clone();
    let shutdown = async move {
        shutdown.await;
        stopping.send_replace(true);
    };
    server::serve_app(listener, router(state), options, shutdown).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn paths_are_normalized() {
        let n = |s: &str| normalize(&s.parse::<Uri>().unwrap()).map(|u| u.to_string());
        assert_eq!(
            n("/v1/nodes/?fields=uuid"),
            Some("/v1/nodes?fields=uuid".into())
        );
        assert_eq!(n("/v1/"), Some("/v1".into()));
        assert_eq!(n("/nodes/abc"), Some("/v1/nodes/abc".into()));
        assert_eq!(n("/v1/nodes"), None);
        assert_eq!(n("/"), None);
        assert_eq!(n("/openapi.json"), None);
        assert_eq!(n("/metrics"), None);
        assert_eq!(n("/boot/boot.ipxe"), None);
    }
}

//! The one harness of the `it` binary: an [`ApiState`] over a [`TestStore`],
//! served on 127.0.0.1:0 ([`Options`]: drivers, workers, step delay, auth,
//! engine, conductor host), and the HTTP helpers every module uses
//! ([`Api`], [`Reply`]).

use ferric_api::auth::Auth;
use ferric_api::ApiState;
use ferric_conductor::drivers::Drivers;
use ferric_conductor::{ConductorConfig, MemorySink, TaskManager};
use ferric_store::testing::{Engine, TestStore};
use ferric_store::Store;
use prometheus_client::registry::Registry;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

/// Ironic's microversion header.
pub const V: &str = "x-openstack-ironic-api-version";

/// How to start one API process. [`Options::new`]: SQLite, conductor
/// `cond-a`, node-locked retries every 50 ms (the conductor's defaults
/// otherwise), no drivers beyond the defaults, fake steps of 20 ms, no auth.
pub struct Options {
    engine: Engine,
    config: ConductorConfig,
    drivers: Option<Drivers>,
    step: Duration,
    auth: Auth,
    registry: Option<Registry>,
    wake_listener: bool,
    ramdisk_heartbeat_timeout: Option<Duration>,
    public_endpoint: Option<ferric_api::extract::PublicEndpoint>,
}

impl Options {
    pub fn new() -> Options {
        Options {
            engine: Engine::Sqlite,
            config: ConductorConfig {
                host: "cond-a".into(),
                node_locked_retry_interval: Duration::from_millis(50),
                ..Default::default()
            },
            drivers: None,
            step: Duration::from_millis(20),
            auth: Auth::none(),
            registry: None,
            wake_listener: false,
            ramdisk_heartbeat_timeout: None,
            public_endpoint: None,
        }
    }

    /// The store engine of [`Options::spawn`].
    pub fn engine(mut self, engine: Engine) -> Options {
        self.engine = engine;
        self
    }

    /// The conductor's name (registered by [`Options::spawn`]).
    pub fn host(mut self, host: &str) -> Options {
        self.config.host = host.into();
        self
    }

    pub fn workers(mut self, workers: u32) -> Options {
        self.config.workers_pool_size = workers;
        self
    }

    /// Attempts and interval of the node-locked retry.
    pub fn locked_retry(mut self, attempts: u32, interval: Duration) -> Options {
        self.config.node_locked_retry_attempts = attempts;
        self.config.node_locked_retry_interval = interval;
        self
    }

    /// Any other change to the conductor's config.
    pub fn config(mut self, adjust: impl FnOnce(ConductorConfig) -> ConductorConfig) -> Options {
        self.config = adjust(self.config);
        self
    }

    pub fn drivers(mut self, drivers: Option<Drivers>) -> Options {
        self.drivers = drivers;
        self
    }

    /// The fake driver's step delay.
    pub fn step(mut self, step: Duration) -> Options {
        self.step = step;
        self
    }

    pub fn auth(mut self, auth: Auth) -> Options {
        self.auth = auth;
        self
    }

    /// Metric families registered outside the API (shown in `/metrics`).
    pub fn registry(mut self, registry: Registry) -> Options {
        self.registry = Some(registry);
        self
    }

    /// Start the TaskManager's push-wakeup listener (cross-process wakeups).
    pub fn wake_listener(mut self) -> Options {
        self.wake_listener = true;
        self
    }

    /// The `heartbeat_timeout` the lookup tells agents.
    pub fn ramdisk_heartbeat_timeout(mut self, timeout: Duration) -> Options {
        self.ramdisk_heartbeat_timeout = Some(timeout);
        self
    }

    /// The base URL of links (`api.public_endpoint`).
    pub fn public_endpoint(mut self, url: &str) -> Options {
        self.public_endpoint = Some(ferric_api::extract::PublicEndpoint::parse(url).unwrap());
        self
    }

    /// The conductor's TaskManager and the API state over `store`, not served.
    pub async fn state(self, store: Arc<dyn Store>) -> (ApiState, TaskManager) {
        let tm = TaskManager::new(store, self.config, Arc::new(MemorySink::default()));
        if self.wake_listener {
            tm.start_wake_listener().await.unwrap();
        }
        let mut state = ApiState::new(tm.clone())
            .with_fake_step_delay(self.step)
            .with_auth(self.auth)
            .with_public_endpoint(self.public_endpoint);
        if let Some(r) = self.registry {
            state = state.with_registry(r);
        }
        if let Some(d) = self.drivers {
            state = state.with_drivers(d);
        }
        if let Some(t) = self.ramdisk_heartbeat_timeout {
            state = state.with_ramdisk_heartbeat_timeout(t);
        }
        (state, tm)
    }

    /// Serve the API over `store` on 127.0.0.1:0 (the conductor is not
    /// registered: see [`TestStore::conductor`]).
    pub async fn serve(self, store: Arc<dyn Store>) -> Api {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        self.serve_on(listener, store).await
    }

    /// [`Options::serve`] on a listener bound beforehand (its address is
    /// known before the drivers are built: network boot's `http_url`).
    pub async fn serve_on(self, listener: tokio::net::TcpListener, store: Arc<dyn Store>) -> Api {
        let (state, tm) = self.state(store).await;
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            ferric_api::serve(listener, state, std::future::pending())
                .await
                .unwrap();
        });
        Api {
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            tm,
        }
    }

    /// A fresh store (heartbeats good for 600 s) with the conductor
    /// registered, served. `None` when the engine is not configured (see
    /// [`TestStore::open_with`]).
    pub async fn spawn(self) -> Option<App> {
        let store = TestStore::open_with(self.engine, |o| {
            o.heartbeat_timeout = Duration::from_secs(600)
        })
        .await?;
        store.conductor(&self.config.host).await;
        let api = self.serve(store.store.clone()).await;
        Some(App { api, store })
    }
}

/// One API process: its base URL, a client, its conductor's TaskManager.
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
    pub tm: TaskManager,
}

/// An [`Api`] over the [`TestStore`] it owns.
pub struct App {
    pub api: Api,
    pub store: TestStore,
}

impl Deref for App {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

/// A reply with a JSON body (`Null` when empty).
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The inner `faultstring` of Ironic's double-encoded error body.
    pub fn fault(&self) -> String {
        let inner = self.body["error_message"]
            .as_str()
            .unwrap_or_else(|| panic!("not an Ironic error body: {}", self.body));
        let inner: Value = serde_json::from_str(inner).expect("inner error is JSON");
        assert_eq!(
            inner["faultcode"],
            if self.status.is_client_error() {
                "Client"
            } else {
                "Server"
            }
        );
        inner["faultstring"].as_str().unwrap().to_string()
    }

    /// A revision header (`X-Ferric-Revision`, `ETag`), quotes stripped.
    pub fn revision(&self, header: &str) -> i64 {
        self.headers
            .get(header)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.trim_matches('"'))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no {header} header"))
    }
}

/// `method` `base``path` with `body` as JSON at the latest microversion; the
/// status and the JSON body (`Null` when there is none or it is not JSON).
pub async fn json(
    http: &reqwest::Client,
    base: &str,
    method: Method,
    path: &str,
    body: Value,
) -> (StatusCode, Value) {
    let r = http
        .request(method, format!("{base}{path}"))
        .header(V, "latest")
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

impl Api {
    /// A request to `path` at the latest microversion.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header(V, "latest")
    }

    /// A request at microversion `version` (none: no header), with `body`.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        version: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(v) = version {
            req = req.header(V, v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        self.finish(req).await
    }

    /// Send `req`; the body must be JSON (or empty).
    pub async fn finish(&self, req: reqwest::RequestBuilder) -> Reply {
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|_| panic!("non-JSON body ({status}): {text}"))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    /// A request at microversion `version`, with an optional body.
    pub async fn at(
        &self,
        method: Method,
        path: &str,
        version: &str,
        body: Option<Value>,
    ) -> Reply {
        self.call(method, path, Some(version), body).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, Some("latest"), None).await
    }

    pub async fn send(&self, method: Method, path: &str, body: Value) -> Reply {
        self.call(method, path, Some("latest"), Some(body)).await
    }

    /// `body` sent verbatim as `application/json`.
    pub async fn raw(&self, method: Method, path: &str, body: &'static str) -> Reply {
        let req = self
            .request(method, path)
            .header("content-type", "application/json")
            .body(body);
        self.finish(req).await
    }

    /// [`json`] against this API.
    pub async fn json(&self, method: Method, path: &str, body: Value) -> (StatusCode, Value) {
        json(&self.http, &self.base, method, path, body).await
    }

    /// `GET /v1/nodes/{ident}`, which must succeed.
    pub async fn node(&self, ident: &str) -> Value {
        let r = self.get(&format!("/v1/nodes/{ident}")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body
    }

    /// The node's agent token, as an agent gets it: a lookup by UUID (which
    /// mints it); when an earlier lookup took it (the answer is masked), the
    /// harness reads it from the store. `None` when the node may not look up.
    pub async fn agent_token(&self, ident: &str) -> Option<String> {
        let ident = ferric_store::NodeIdent::parse(ident);
        let node = self.tm.store().get_node(&ident).await.ok()?;
        let r = self
            .http
            .get(format!("{}/v1/lookup?node_uuid={}", self.base, node.uuid))
            .header(V, "1.68")
            .send()
            .await
            .unwrap();
        if r.status() != StatusCode::OK {
            return None;
        }
        let body: Value = r.json().await.unwrap();
        match body["config"]["agent_token"].as_str() {
            Some(t) if t != "******" => Some(t.to_string()),
            _ => {
                let node = self.tm.store().get_node(&node.uuid.into()).await.ok()?;
                node.driver_internal_info
                    .get("agent_secret_token")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            }
        }
    }
}

//! Arbitrary requests to the real router over a real store (SQLite; also
//! PostgreSQL when `FERRIC_TEST_PG_URL` is set): never a 5xx, every 4xx has
//! Ironic's error body, and a rejected request changes nothing: not the
//! nodes, not their number, not the change feed's revision.

use crate::common::Options;
use crate::props::gen::{self, config};
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode};
use axum::Router;
use ferric_core::Node;
use ferric_store::testing::{Engine, TestStore, PG_URL_VAR};
use ferric_store::{NodeQuery, Store};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{TestCaseError, TestRunner};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;
use uuid::Uuid;

/// The name of the node every case starts from.
const MAIN: &str = "fuzz-main";

/// One request.
#[derive(Clone)]
pub struct Req {
    pub(super) method: Method,
    pub(super) path: String,
    pub(super) headers: Vec<(&'static str, Vec<u8>)>,
    pub(super) body: Vec<u8>,
}

impl Req {
    /// A request at the latest version.
    pub fn new(method: Method, path: &str, body: Vec<u8>) -> Req {
        Req {
            method,
            path: path.to_string(),
            headers: vec![("x-openstack-ironic-api-version", b"latest".to_vec())],
            body,
        }
    }
}

impl std::fmt::Debug for Req {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let headers: Vec<_> = self.headers.iter().map(|(n, v)| (n, text(v))).collect();
        let body = if self.body.len() > 2000 {
            format!("{} bytes: {}...", self.body.len(), text(&self.body[..200]))
        } else {
            text(&self.body)
        };
        f.debug_struct("Req")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("headers", &headers)
            .field("body", &body)
            .finish()
    }
}

/// The router over a fresh store with one node, on a current-thread runtime
/// (background work runs only while a request or [`Harness::settle`] runs).
pub struct Harness {
    rt: tokio::runtime::Runtime,
    app: Router,
    store: Arc<dyn Store>,
    main: Uuid,
    /// How many replies of each status the cases got (printed at the end).
    statuses: std::cell::RefCell<std::collections::BTreeMap<u16, u32>>,
    _db: TestStore,
}

pub fn engines() -> Vec<Engine> {
    let mut e = vec![Engine::Sqlite];
    if std::env::var_os(PG_URL_VAR).is_some() {
        e.push(Engine::Postgres);
    } else {
        ferric_store::testing::skip(PG_URL_VAR, "the PostgreSQL cases did not run");
    }
    e
}

impl Harness {
    pub fn new(engine: Engine) -> Harness {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (app, store, db) = rt.block_on(async {
            let db =
                TestStore::open_with(engine, |o| o.heartbeat_timeout = Duration::from_secs(600))
                    .await
                    .unwrap();
            db.conductor("cond-a").await;
            let store: Arc<dyn Store> = db.store.clone();
            let (state, _tm) = Options::new()
                .locked_retry(2, Duration::from_millis(20))
                .workers(16)
                .step(Duration::from_millis(1))
                .state(store.clone())
                .await;
            (ferric_api::router(state), store, db)
        });
        let mut h = Harness {
            rt,
            app,
            store,
            main: Uuid::nil(),
            statuses: Default::default(),
            _db: db,
        };
        let (status, body) = h.send(&Req {
            method: Method::POST,
            path: "/v1/nodes".into(),
            headers: vec![("x-openstack-ironic-api-version", b"latest".to_vec())],
            body: json!({"driver": "fake-hardware", "name": MAIN, "extra": {"a": {"b": 1}}})
                .to_string()
                .into_bytes(),
        });
        assert_eq!(status, StatusCode::CREATED, "{body}");
        h.main = body["uuid"].as_str().unwrap().parse().unwrap();
        h
    }

    /// Send `req`; the status and the body (JSON, or `Value::String` of the
    /// raw text when it is not JSON, `Null` when empty).
    pub fn send(&self, req: &Req) -> (StatusCode, Value) {
        let path = req.path.replace("{main}", &self.main.to_string());
        let mut b = Request::builder().method(req.method.clone()).uri(path);
        for (name, value) in &req.headers {
            if let Ok(v) = HeaderValue::from_bytes(value) {
                b = b.header(HeaderName::from_static(name), v);
            }
        }
        let request = b.body(Body::from(req.body.clone())).unwrap();
        self.rt.block_on(async {
            let resp = self.app.clone().oneshot(request).await.unwrap();
            let status = resp.status();
            let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .unwrap();
            let body = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
            };
            (status, body)
        })
    }

    /// Every node as stored (the lock's fencing epoch aside: taking and
    /// giving back the lock is not a change), and the change-feed revision.
    fn snapshot(&self) -> (Vec<Node>, i64) {
        self.rt.block_on(async {
            let page = self.store.list_nodes(&NodeQuery::default()).await.unwrap();
            let nodes = page
                .nodes
                .into_iter()
                .map(|mut n| {
                    n.lock_epoch = 0;
                    n
                })
                .collect();
            (nodes, page.revision)
        })
    }

    /// Wait until no node is locked or heading for another state, so that
    /// background work of an accepted request does not run into the next case.
    fn settle(&self) {
        let until = Instant::now() + Duration::from_secs(20);
        self.rt.block_on(async {
            loop {
                let page = self.store.list_nodes(&NodeQuery::default()).await.unwrap();
                let busy = page.nodes.iter().any(|n| {
                    n.reservation.is_some()
                        || n.target_power_state.is_some()
                        || n.provision_state.is_unstable()
                });
                if !busy {
                    return;
                }
                assert!(Instant::now() < until, "background work did not settle");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
    }

    /// The properties of one request: see the module documentation.
    fn check(&self, req: &Req) -> Result<(), TestCaseError> {
        let before = self.snapshot();
        let shown_before = self.send(&get_main());
        let (status, body) = self.send(req);
        *self
            .statuses
            .borrow_mut()
            .entry(status.as_u16())
            .or_default() += 1;
        check_reply(status, &body)?;
        if std::env::var_os("FERRIC_PROPS_TRACE").is_some() {
            eprintln!(
                "{} {} -> {status} {}",
                req.method,
                req.path,
                body.to_string().chars().take(300).collect::<String>()
            );
        }
        if status.is_client_error() {
            let after = self.snapshot();
            prop_assert!(
                before == after,
                "rejected ({}) but state changed:\nbefore {:?}\nafter  {:?}",
                status,
                before,
                after
            );
            prop_assert_eq!(&shown_before, &self.send(&get_main()));
        } else {
            self.settle();
            self.check_rereads(req, status, &body, before.1)?;
        }
        Ok(())
    }

    /// After an accepted write: the node reads back as the write answered,
    /// and the node and the change feed still read.
    fn check_rereads(
        &self,
        req: &Req,
        status: StatusCode,
        body: &Value,
        since: i64,
    ) -> Result<(), TestCaseError> {
        let versions: Vec<_> = req
            .headers
            .iter()
            .filter(|(n, _)| n.contains("version"))
            .cloned()
            .collect();
        let write = req.method == Method::PATCH || req.method == Method::POST;
        if write && matches!(status, StatusCode::OK | StatusCode::CREATED) {
            let uuid = body["uuid"].as_str().unwrap_or_default();
            let (s, again) = self.send(&Req {
                method: Method::GET,
                path: format!("/v1/nodes/{uuid}"),
                headers: versions,
                body: Vec::new(),
            });
            prop_assert_eq!(s, StatusCode::OK, "re-read: {}", again);
            prop_assert_eq!(&again, body, "the node reads back differently");
        }
        for path in [
            "/v1/nodes/{main}".to_string(),
            format!("/v1/nodes/changes?since={since}"),
            "/v1/nodes/detail".to_string(),
        ] {
            let (s, b) = self.send(&Req { path, ..get_main() });
            prop_assert_eq!(s, StatusCode::OK, "read after an accepted write: {}", b);
        }
        Ok(())
    }
}

fn get_main() -> Req {
    Req {
        method: Method::GET,
        path: "/v1/nodes/{main}".into(),
        headers: vec![("x-openstack-ironic-api-version", b"latest".to_vec())],
        body: Vec::new(),
    }
}

/// Never a 5xx; a 4xx has Ironic's double-encoded error body with a message.
pub(super) fn check_reply(status: StatusCode, body: &Value) -> Result<(), TestCaseError> {
    prop_assert!(
        !status.is_server_error(),
        "server error {}: {}",
        status,
        body
    );
    if !status.is_client_error() {
        return Ok(());
    }
    let obj = body.as_object();
    prop_assert!(
        obj.is_some_and(|o| o.len() == 1),
        "{}: not an Ironic error body: {}",
        status,
        body
    );
    let inner = body["error_message"].as_str();
    prop_assert!(inner.is_some(), "{}: no error_message: {}", status, body);
    let inner: Value = serde_json::from_str(inner.unwrap_or_default())
        .map_err(|e| TestCaseError::fail(format!("inner error is not JSON: {e}: {body}")))?;
    let message = if status == StatusCode::NOT_ACCEPTABLE && inner.get("code").is_some() {
        prop_assert_eq!(&inner["code"], &json!(406));
        prop_assert_eq!(&inner["title"], &json!("Not Acceptable"));
        inner["description"].as_str()
    } else {
        prop_assert_eq!(&inner["faultcode"], &json!("Client"), "{}", inner);
        prop_assert!(inner["debuginfo"].is_null());
        inner["faultstring"].as_str()
    };
    prop_assert!(
        message.is_some_and(|m| !m.trim().is_empty()),
        "{}: no message: {}",
        status,
        inner
    );
    Ok(())
}

/// Percent-encode everything but RFC 3986's unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Values of the version headers, good and bad.
fn version() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        12 => select(vec!["latest", "1.1", "1.5", "1.11", "1.27", "1.38", "1.87", "1.96", "latest", "latest"])
            .prop_map(|s| Some(s.as_bytes().to_vec())),
        2 => Just(None),
        2 => select(vec!["1.97", "1.0", "2.1", "1.", "1.x", "", " latest ", "1.01", "01.1", "1.4294967296", "1.999999999", "LATEST"])
            .prop_map(|s| Some(s.as_bytes().to_vec())),
        1 => prop::collection::vec(any::<u8>(), 0..12).prop_map(Some),
    ]
}

fn headers() -> impl Strategy<Value = Vec<(&'static str, Vec<u8>)>> {
    (
        version(),
        prop::option::weighted(
            0.1,
            prop_oneof![
                Just(b"baremetal 1.31".to_vec()),
                Just(b"compute 2.1, baremetal latest".to_vec()),
                Just(b"baremetal 9.9".to_vec()),
                prop::collection::vec(any::<u8>(), 0..16),
            ],
        ),
        prop::option::of(select(vec![
            "application/json",
            "text/plain",
            "application/octet-stream",
        ])),
        prop::option::weighted(
            0.1,
            prop_oneof![
                Just(b"\"3\"".to_vec()),
                Just(b"W/\"999999\"".to_vec()),
                Just(b"nope".to_vec()),
            ],
        ),
    )
        .prop_map(|(v, os, ct, if_match)| {
            let mut h = Vec::new();
            if let Some(v) = v {
                h.push(("x-openstack-ironic-api-version", v));
            }
            if let Some(os) = os {
                h.push(("openstack-api-version", os));
            }
            if let Some(ct) = ct {
                h.push(("content-type", ct.as_bytes().to_vec()));
            }
            if let Some(m) = if_match {
                h.push(("if-match", m));
            }
            h
        })
}

/// The request bodies of the write endpoints.
#[derive(Debug, Clone, Copy)]
enum Endpoint {
    Create,
    Patch,
    Provision,
    Power,
    Maintenance,
}

fn plausible_body(e: Endpoint) -> BoxedStrategy<Value> {
    let fields = |names: Vec<&'static str>| {
        prop::collection::vec(
            (
                prop_oneof![4 => select(names), 1 => select(vec!["colour", "uuid ", "Target", ""])],
                prop_oneof![2 => gen::plausible_value("/name"), 3 => gen::value(), 1 => gen::deep_value()],
            ),
            0..5,
        )
        .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
    };
    match e {
        Endpoint::Create => prop_oneof![
            1 => fields(vec![
                "driver", "name", "uuid", "driver_info", "properties", "extra",
                "conductor_group", "power_interface", "boot_interface", "network_interface",
            ]),
            3 => (
                select(vec!["fake-hardware", "redfish", "fake-hardware", "redfish", "ipmi", ""]),
                prop::option::weighted(0.3, gen::string()),
                prop::option::weighted(0.3, select(vec!["", "g1", "bad group"])),
                prop::option::of(gen::value()),
                prop::option::weighted(0.2, gen::deep_value()),
                prop::option::weighted(0.2, select(vec!["fake", "bad iface", ""])),
            )
                .prop_map(|(driver, name, group, extra, deep, iface)| {
                    let mut m = serde_json::Map::new();
                    m.insert("driver".into(), json!(driver));
                    if let Some(n) = name {
                        m.insert("name".into(), json!(n));
                    }
                    if let Some(g) = group {
                        m.insert("conductor_group".into(), json!(g));
                    }
                    if let Some(x) = extra {
                        m.insert("extra".into(), json!({"x": x}));
                    }
                    if let Some(d) = deep {
                        m.insert("properties".into(), json!({"d": d}));
                    }
                    if let Some(i) = iface {
                        m.insert("deploy_interface".into(), json!(i));
                    }
                    Value::Object(m)
                }),
        ]
        .boxed(),
        Endpoint::Patch => prop_oneof![
            4 => prop::collection::vec(gen::plausible_op(), 1..4),
            1 => (1usize..80, 1usize..80, any::<bool>()).prop_map(|(first, second, arrays)| vec![
                json!({"op": "add", "path": "/extra/deep", "value": gen::nested(first, false)}),
                json!({"op": "add", "path": format!("/extra/deep{}", "/a".repeat(first)), "value": gen::nested(second, arrays)}),
            ]),
            2 => prop::collection::vec(gen::op_json(), 0..5),
            2 => (prop::collection::vec(gen::plausible_op(), 0..3), gen::op_json())
                .prop_map(|(mut ops, op)| {
                    ops.push(op);
                    ops
                }),
        ]
        .prop_map(Value::Array)
        .boxed(),
        Endpoint::Provision => prop_oneof![
            1 => fields(vec![
                "target", "configdrive", "clean_steps", "deploy_steps", "service_steps",
                "runbook", "disable_ramdisk", "rescue_password",
            ]),
            3 => (
                select(vec![
                    "active", "deploy", "rebuild", "deleted", "undeploy", "manage", "provide",
                    "inspect", "abort", "clean", "adopt", "rescue", "unrescue", "unhold",
                    "service", "Active", "enroll", "",
                ]),
                prop::option::of(select(vec!["clean_steps", "rescue_password", "service_steps", "configdrive", "disable_ramdisk"])),
                gen::value(),
            )
                .prop_map(|(t, extra, v)| {
                    let mut m = serde_json::Map::new();
                    m.insert("target".into(), json!(t));
                    if let Some(k) = extra {
                        m.insert(k.into(), v);
                    }
                    Value::Object(m)
                }),
        ]
        .boxed(),
        Endpoint::Power => prop_oneof![
            1 => fields(vec!["target", "timeout"]),
            3 => (
                select(vec!["power on", "power off", "rebooting", "soft power off", "soft rebooting", "on", ""]),
                prop::option::of(prop_oneof![
                    Just(json!(0)), Just(json!(-1)), Just(json!(30)), Just(json!(u64::MAX)),
                    Just(json!(1.5)), Just(json!("30")),
                ]),
            )
                .prop_map(|(t, timeout)| match timeout {
                    Some(x) => json!({"target": t, "timeout": x}),
                    None => json!({"target": t}),
                }),
        ]
        .boxed(),
        Endpoint::Maintenance => fields(vec!["reason"]).boxed(),
    }
}

/// A body: plausible JSON for the endpoint, other JSON, arbitrary bytes,
/// nothing, or too much.
fn body(e: Endpoint) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        20 => plausible_body(e).prop_map(|v| v.to_string().into_bytes()),
        2 => gen::value().prop_map(|v| v.to_string().into_bytes()),
        2 => prop::collection::vec(any::<u8>(), 0..48),
        1 => select(vec!["", "   ", "null", "[]", "{}", "[{}]", "{\"target\":", "\u{feff}{}", "[1e999]"])
            .prop_map(|s| s.as_bytes().to_vec()),
        1 => Just(()).prop_map(|_| {
            // Over the 1 MiB limit.
            let mut b = b"{\"driver\":\"fake-hardware\",\"extra\":{\"x\":\"".to_vec();
            b.resize(ferric_api::extract::MAX_BODY_BYTES + 10, b'a');
            b.extend_from_slice(b"\"}}");
            b
        }),
    ]
}

fn write_request() -> impl Strategy<Value = Req> {
    let endpoint = select(vec![
        Endpoint::Create,
        Endpoint::Patch,
        Endpoint::Patch,
        Endpoint::Provision,
        Endpoint::Power,
        Endpoint::Maintenance,
    ]);
    let ident = select(vec!["{main}", "{main}", "{main}", "{main}", MAIN]);
    (endpoint, ident, prop::bool::weighted(0.1), headers())
        .prop_flat_map(|(e, ident, slash, headers)| {
            (Just(e), Just(ident), Just(slash), Just(headers), body(e))
        })
        .prop_map(|(e, ident, slash, headers, body)| {
            let (method, path) = match e {
                Endpoint::Create => (Method::POST, "/v1/nodes".to_string()),
                Endpoint::Patch => (Method::PATCH, format!("/v1/nodes/{ident}")),
                Endpoint::Provision => (Method::PUT, format!("/v1/nodes/{ident}/states/provision")),
                Endpoint::Power => (Method::PUT, format!("/v1/nodes/{ident}/states/power")),
                Endpoint::Maintenance => (Method::PUT, format!("/v1/nodes/{ident}/maintenance")),
            };
            Req {
                method,
                // Ironic ignores a trailing slash.
                path: if slash { format!("{path}/") } else { path },
                headers,
                body,
            }
        })
}

/// Query strings of the node listings.
fn list_request() -> impl Strategy<Value = Req> {
    let key = prop_oneof![
        8 => select(vec![
            "limit", "marker", "fields", "sort_key", "sort_dir", "detail", "provision_state",
            "maintenance", "driver", "conductor_group",
        ])
        .prop_map(str::to_string),
        1 => select(vec!["associated", "owner", "LIMIT", "", "limit[]"]).prop_map(str::to_string),
        1 => gen::string(),
    ];
    let value = prop_oneof![
        4 => select(vec![
            "0", "1", "2", "-1", "1000", "1001", "99999999999999999999", "1.5", "", "true",
            "False", "yes", "maybe", "uuid", "name", "asc", "desc", "ASC", "uuid,name",
            "name,,links", "bogus", "uuid, provision_state", "enroll", "active", "fake-hardware",
            "g1", "G1", "bad group", "0d8b5a41-6f7e-4e0a-9d3b-6c1f0b3a1e22", "ffffffff",
        ])
        .prop_map(str::to_string),
        2 => gen::string(),
    ];
    let query = prop_oneof![
        6 => prop::collection::vec((key, value, any::<bool>()), 0..5).prop_map(|kv| {
            kv.iter()
                .map(|(k, v, raw)| {
                    if *raw && v.bytes().all(|b| b.is_ascii_alphanumeric() || b",.-".contains(&b)) {
                        format!("{}={v}", encode(k))
                    } else {
                        format!("{}={}", encode(k), encode(v))
                    }
                })
                .collect::<Vec<_>>()
                .join("&")
        }),
        1 => select(vec!["&&", "=", "limit", "limit=1&limit=2", "%", "%zz=1", "limit=%ff", "a=%00", "fields=%e2%98%83"])
            .prop_map(str::to_string),
        1 => prop::collection::vec(any::<u8>(), 0..24).prop_map(|b| {
            b.iter().map(|b| format!("%{b:02X}")).collect::<String>()
        }),
    ];
    let path = select(vec![
        "/v1/nodes",
        "/v1/nodes/detail",
        "/nodes",
        "/v1/nodes/",
        "/v1/nodes/changes",
    ]);
    (path, query, headers()).prop_map(|(path, query, headers)| Req {
        method: Method::GET,
        path: if query.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{query}")
        },
        headers,
        body: Vec::new(),
    })
}

/// Any method on any node sub-resource, with an arbitrary identifier.
fn ident_request() -> impl Strategy<Value = Req> {
    let ident = prop_oneof![
        4 => gen::string(),
        1 => select(vec![
            "detail", "changes", ".", "..", "%", "n1", "N1", "fuzz-main ", "00000000-0000-0000-0000-000000000000",
            "0D8B5A41-6F7E-4E0A-9D3B-6C1F0B3A1E22", "{0d8b5a41-6f7e-4e0a-9d3b-6c1f0b3a1e22}",
            "0d8b5a416f7e4e0a9d3b6c1f0b3a1e22", "urn:uuid:0d8b5a41-6f7e-4e0a-9d3b-6c1f0b3a1e22",
        ])
        .prop_map(str::to_string),
    ];
    let sub = select(vec![
        "",
        "/states",
        "/states/provision",
        "/states/power",
        "/maintenance",
        "/validate",
        "/states/raid",
        "/x",
    ]);
    let method = select(vec![
        Method::GET,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::POST,
    ]);
    (ident, sub, method, headers(), body(Endpoint::Provision)).prop_map(
        |(ident, sub, method, headers, body)| Req {
            method,
            // Keep the main node: a DELETE of it would be a legitimate change.
            path: if ident == MAIN {
                format!("/v1/nodes/x{sub}")
            } else {
                format!("/v1/nodes/{}{sub}", encode(&ident))
            },
            headers,
            body,
        },
    )
}

fn run<S: Strategy<Value = Req>>(name: &str, cases: u32, strategy: S) {
    for engine in engines() {
        let started = Instant::now();
        let h = Harness::new(engine);
        let mut cfg = config(cases);
        cfg.source_file = Some(file!());
        let mut runner = TestRunner::new(cfg);
        if let Err(e) = runner.run(&strategy, |req| h.check(&req)) {
            panic!("{name} on {engine:?}: {e}");
        }
        eprintln!(
            "{name} on {engine:?}: {} cases in {:?}, statuses {:?}",
            cfg_cases(cases),
            started.elapsed(),
            h.statuses.borrow()
        );
    }
}

fn cfg_cases(cases: u32) -> u32 {
    config(cases).cases
}

/// Bodies of POST /v1/nodes, PATCH /v1/nodes/{id}, PUT …/states/provision,
/// …/states/power and …/maintenance.
#[test]
fn write_requests() {
    run("write_requests", 384, write_request());
}

/// Query strings of GET /v1/nodes, /v1/nodes/detail and the change feed.
#[test]
fn list_queries() {
    run("list_queries", 256, list_request());
}

/// Arbitrary node identifiers in every node path, with every method.
#[test]
fn node_identifiers() {
    run("node_identifiers", 128, ident_request());
}

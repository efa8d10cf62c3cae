//! The OpenAPI document against the server (issue 13). For every operation
//! `/openapi.json` lists, requests are built from the document itself —
//! path parameters naming stored and unknown objects, the declared query
//! parameters with valid and invalid values, bodies generated from the
//! declared request schema and then broken on purpose — and sent to the real
//! router over a real store. A disagreement fails the case:
//!
//! * a status the operation does not document (including an undocumented
//!   5xx);
//! * an error without Ironic's body;
//! * a request that breaks the documented schema answered with a 2xx: a
//!   body property of the wrong type, a property the schema does not allow
//!   (`additionalProperties: false`), a missing required property, a string
//!   longer than `maxLength`, an integer outside `minimum`/`maximum`, a value
//!   outside an `enum`, an ill-formed `format: uuid`; the same for query
//!   parameters.
//!
//! Because the document is read at run time, every path a later change
//! adds is fuzzed without touching this file.

use super::http::{check_reply, engines, Harness, Req};
use axum::http::{Method, StatusCode};
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;

/// One documented operation.
#[derive(Debug, Clone)]
struct Op {
    method: Method,
    path: String,
    params: Vec<Param>,
    body: Option<Value>,
    responses: BTreeSet<u16>,
}

#[derive(Debug, Clone)]
struct Param {
    name: String,
    in_path: bool,
    schema: Value,
}

/// Every operation of the document.
fn operations(doc: &Value) -> Vec<Op> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (m, op) in item.as_object().expect("path item") {
            let method = match m.as_str() {
                "get" => Method::GET,
                "post" => Method::POST,
                "put" => Method::PUT,
                "patch" => Method::PATCH,
                "delete" => Method::DELETE,
                _ => continue,
            };
            let params = op["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .map(|p| Param {
                            name: p["name"].as_str().unwrap_or_default().to_string(),
                            in_path: p["in"] == "path",
                            schema: p["schema"].clone(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let body = op["requestBody"]["content"]["application/json"]["schema"].clone();
            let responses = op["responses"]
                .as_object()
                .map(|r| r.keys().filter_map(|k| k.parse().ok()).collect())
                .unwrap_or_default();
            ops.push(Op {
                method,
                path: path.clone(),
                params,
                body: (!body.is_null()).then_some(body),
                responses,
            });
        }
    }
    ops
}

/// A small deterministic generator: each case is (operation, seed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // SplitMix64.
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// The JSON types a schema admits (`number` admits integers).
fn types(schema: &Value) -> Vec<&str> {
    match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

fn admits(schema: &Value, v: &Value) -> bool {
    let ts = types(schema);
    if ts.is_empty() {
        return true;
    }
    ts.iter().any(|t| match *t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "string" => v.is_string(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => true,
    })
}

/// A value the schema accepts, as far as the document says.
fn valid_value(rng: &mut Rng, schema: &Value, ids: &[String]) -> Value {
    if let Some(e) = schema["enum"].as_array() {
        if !e.is_empty() {
            return rng.pick(e).clone();
        }
    }
    let ts = types(schema);
    let t = if ts.is_empty() {
        "string"
    } else {
        *rng.pick(&ts)
    };
    match t {
        "null" => Value::Null,
        "boolean" => json!(rng.chance(50)),
        "integer" | "number" => {
            let lo = schema["minimum"].as_i64().unwrap_or(0);
            let hi = schema["maximum"].as_i64().unwrap_or(lo + 100);
            json!(lo + (rng.below((hi - lo + 1).max(1) as usize) as i64))
        }
        "array" => {
            let n = rng.below(3);
            Value::Array(
                (0..n)
                    .map(|_| valid_value(rng, &schema["items"], ids))
                    .collect(),
            )
        }
        "object" => {
            let mut m = Map::new();
            if let Some(props) = schema["properties"].as_object() {
                let required = required(schema);
                for (k, s) in props {
                    if required.contains(k) || rng.chance(40) {
                        m.insert(k.clone(), valid_value(rng, s, ids));
                    }
                }
            }
            Value::Object(m)
        }
        _ => {
            if schema["format"] == "uuid" {
                return json!(rng.pick(ids));
            }
            let max = schema["maxLength"].as_u64().unwrap_or(16) as usize;
            let words = ["x", "CUSTOM_FUZZ", "52:54:00:12:34:56", "fuzz-main", "a b"];
            let w: String = rng.pick(&words).chars().take(max.max(1)).collect();
            json!(w)
        }
    }
}

fn required(schema: &Value) -> BTreeSet<String> {
    schema["required"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A value of a type the schema does not admit, if there is one.
fn wrong_type(rng: &mut Rng, schema: &Value) -> Option<Value> {
    let candidates = [
        json!(null),
        json!(true),
        json!(7),
        json!(1.5),
        json!("s"),
        json!([1]),
        json!({"k": 1}),
    ];
    let bad: Vec<&Value> = candidates.iter().filter(|v| !admits(schema, v)).collect();
    if bad.is_empty() || types(schema).is_empty() {
        return None;
    }
    Some((*rng.pick(&bad)).clone())
}

/// Break `body` (generated from `schema`) in one documented way; `None`
/// when the schema gives nothing to break.
fn break_body(rng: &mut Rng, schema: &Value, body: &mut Value) -> Option<String> {
    let props = schema["properties"].as_object();
    let obj = body.as_object_mut()?;
    for _ in 0..4 {
        match rng.below(5) {
            0 => {
                let (k, s) = props.and_then(|p| {
                    let keys: Vec<_> = p.iter().collect();
                    (!keys.is_empty()).then(|| *rng.pick(&keys))
                })?;
                if let Some(v) = wrong_type(rng, s) {
                    obj.insert(k.clone(), v.clone());
                    return Some(format!("{k} = {v} (type)"));
                }
            }
            1 if schema["additionalProperties"] == json!(false) => {
                obj.insert("fuzz_unknown_field".into(), json!(1));
                return Some("unknown property".into());
            }
            2 => {
                let req: Vec<String> = required(schema).into_iter().collect();
                if !req.is_empty() {
                    let k = rng.pick(&req).clone();
                    obj.remove(&k);
                    return Some(format!("{k} missing"));
                }
            }
            3 => {
                let long = props.and_then(|p| {
                    let ks: Vec<_> = p
                        .iter()
                        .filter(|(_, s)| s["maxLength"].is_u64() && types(s).contains(&"string"))
                        .collect();
                    (!ks.is_empty()).then(|| *rng.pick(&ks))
                });
                if let Some((k, s)) = long {
                    let n = s["maxLength"].as_u64().unwrap_or(0) as usize + 1;
                    obj.insert(k.clone(), json!("y".repeat(n)));
                    return Some(format!("{k} longer than {}", n - 1));
                }
            }
            _ => {
                let bounded = props.and_then(|p| {
                    let ks: Vec<_> = p
                        .iter()
                        .filter(|(_, s)| s["maximum"].is_i64() || s["enum"].is_array())
                        .collect();
                    (!ks.is_empty()).then(|| *rng.pick(&ks))
                });
                if let Some((k, s)) = bounded {
                    let v = match s["maximum"].as_i64() {
                        Some(max) => json!(max + 1),
                        None => json!("fuzz-not-in-enum"),
                    };
                    obj.insert(k.clone(), v.clone());
                    return Some(format!("{k} = {v} (bounds)"));
                }
            }
        }
    }
    None
}

/// A query value that breaks the parameter's schema, if it can be broken.
fn bad_query_value(rng: &mut Rng, schema: &Value) -> Option<String> {
    let t = types(schema).first().copied().unwrap_or("string");
    match t {
        "integer" => Some(
            match (schema["minimum"].as_i64(), schema["maximum"].as_i64()) {
                (_, Some(max)) if rng.chance(40) => (max + 1).to_string(),
                (Some(min), _) if rng.chance(40) => (min - 1).to_string(),
                _ => "not-a-number".into(),
            },
        ),
        "boolean" => Some("maybe".into()),
        _ if schema["enum"].is_array() => Some("fuzz-not-in-enum".into()),
        _ if schema["format"] == "uuid" => Some("not-a-uuid".into()),
        _ => None,
    }
}

fn query_value(rng: &mut Rng, schema: &Value, ids: &[String]) -> String {
    match valid_value(rng, schema, ids) {
        Value::String(s) => s,
        Value::Bool(b) => b.to_string(),
        v => v.to_string(),
    }
}

/// Percent-encode a path or query component.
fn enc(s: &str) -> String {
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

/// Build one request for `op`; also what it breaks on purpose, if anything.
fn build(rng: &mut Rng, op: &Op, ids: &[String], names: &[String]) -> (Req, Option<String>) {
    let mut broken = None;
    let mut path = op.path.clone();
    for p in op.params.iter().filter(|p| p.in_path) {
        let v = match rng.below(4) {
            0 => rng.pick(names).clone(),
            1 => uuid::Uuid::new_v4().to_string(),
            _ => rng.pick(ids).clone(),
        };
        path = path.replace(&format!("{{{}}}", p.name), &enc(&v));
    }
    let mut query = Vec::new();
    for p in op.params.iter().filter(|p| !p.in_path) {
        if rng.chance(25) {
            let v = match bad_query_value(rng, &p.schema) {
                Some(bad) if broken.is_none() && rng.chance(30) => {
                    broken = Some(format!("query {}={bad}", p.name));
                    bad
                }
                _ => query_value(rng, &p.schema, ids),
            };
            query.push(format!("{}={}", p.name, enc(&v)));
        }
    }
    if !query.is_empty() {
        path = format!("{path}?{}", query.join("&"));
    }
    let body = match &op.body {
        Some(schema) => {
            let mut b = valid_value(rng, schema, ids);
            if broken.is_none() && rng.chance(50) {
                broken = break_body(rng, schema, &mut b);
            }
            b.to_string().into_bytes()
        }
        None if op.method == Method::GET || op.method == Method::DELETE => Vec::new(),
        None => rng
            .pick(&[json!({}), json!([]), json!({"a": 1})])
            .to_string()
            .into_bytes(),
    };
    let version = rng.pick(&["latest", "latest", "latest", "1.1", "1.31", "1.60"]);
    let req = Req {
        method: op.method.clone(),
        path,
        headers: vec![(
            "x-openstack-ironic-api-version",
            version.as_bytes().to_vec(),
        )],
        body,
    };
    (req, broken)
}

fn fuzz(engine: ferric_store::testing::Engine, cases: u32) {
    let h = Harness::new(engine);
    let post = |path: &str, body: Value| -> Value {
        let (s, b) = h.send(&Req::new(Method::POST, path, body.to_string().into_bytes()));
        assert!(s.is_success(), "{path}: {s} {b}");
        b
    };
    // Objects for the path parameters to name: the node, a port, a port
    // group, a chassis (as the document grows, so can this list).
    let node = h
        .send(&Req::new(Method::GET, "/v1/nodes/{main}", Vec::new()))
        .1;
    let node_uuid = node["uuid"].as_str().unwrap().to_string();
    let pg = post(
        "/v1/portgroups",
        json!({"node_uuid": node_uuid, "name": "fuzz-pg", "address": "52:54:00:aa:bb:cc"}),
    );
    let port = post(
        "/v1/ports",
        json!({"node_uuid": node_uuid, "address": "52:54:00:12:34:56"}),
    );
    let chassis = post("/v1/chassis", json!({"description": "fuzz"}));
    let ids: Vec<String> = [&node, &pg, &port, &chassis]
        .iter()
        .map(|d| d["uuid"].as_str().unwrap().to_string())
        .collect();
    let names: Vec<String> = [
        "fuzz-main",
        "fake-hardware",
        "CUSTOM_FUZZ",
        "no-such-thing",
        "a b/c",
        "cond-a",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (s, doc) = h.send(&Req::new(Method::GET, "/openapi.json", Vec::new()));
    assert_eq!(s, StatusCode::OK);
    let ops = operations(&doc);
    assert!(ops.len() > 40, "only {} operations documented", ops.len());
    // Every disagreement is collected (one example per operation and kind),
    // so one run shows them all. Seeds are fixed: a failure replays.
    let mut found = std::collections::BTreeMap::new();
    let base = std::env::var("FERRIC_OPENAPI_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x0a91_5eed_u64);
    for case in 0..cases {
        let mut rng = Rng(base ^ u64::from(case).wrapping_mul(0x2545_f491_4f6c_dd1d));
        let op = &ops[rng.below(ops.len())];
        let (req, broken) = build(&mut rng, op, &ids, &names);
        let (status, body) = h.send(&req);
        let code = status.as_u16();
        let what = format!("{} {}", req.method, req.path);
        let mut disagree = |kind: String, detail: String| {
            found
                .entry((op.method.to_string(), op.path.clone(), kind))
                .or_insert(format!("case {case}: {what}: {detail}"));
        };
        if !op.responses.contains(&code) {
            disagree(
                format!("undocumented {code}"),
                format!("documented {:?}: {body}", op.responses),
            );
        } else if !status.is_server_error() {
            if let Err(e) = check_reply(status, &body) {
                disagree("error body".into(), e.to_string());
            }
        }
        if let Some(broke) = broken {
            if status.is_success() {
                disagree(
                    "accepts what the schema refuses".into(),
                    format!(
                        "{broke}: {status} {body}; sent {}",
                        String::from_utf8_lossy(&req.body)
                    ),
                );
            }
        }
    }
    let report: Vec<String> = found
        .iter()
        .map(|((m, p, k), ex)| format!("{m} {p}: {k}\n    {ex}"))
        .collect();
    assert!(
        report.is_empty(),
        "{engine:?}: the server disagrees with /openapi.json in {} ways:\n{}",
        report.len(),
        report.join("\n")
    );
}

#[test]
fn the_server_agrees_with_its_openapi_document() {
    for engine in engines() {
        let cases = match engine {
            ferric_store::testing::Engine::Sqlite => 3000,
            _ => 1000,
        };
        fuzz(engine, cases);
    }
}

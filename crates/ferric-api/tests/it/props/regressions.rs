//! The minimal inputs of bugs the properties found, kept as plain tests.

use crate::props::http::{Harness, Req};
use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

fn patch(ops: &Value) -> Req {
    Req::new(
        Method::PATCH,
        "/v1/nodes/{main}",
        ops.to_string().into_bytes(),
    )
}

/// Nesting built up by several operations of one patch, each value well
/// within the body parser's limit: the node was stored, then every read of
/// it failed (500: "recursion limit exceeded"), and a deep enough patch
/// overflowed the stack.
#[test]
fn patches_cannot_nest_dictionaries_beyond_the_limit() {
    let h = Harness::new(ferric_store::testing::Engine::Sqlite);
    let nested = crate::props::gen::nested;
    let (status, body) = h.send(&patch(&json!([
        {"op": "add", "path": "/extra/deep", "value": nested(20, false)},
        {"op": "add", "path": format!("/extra/deep{}", "/a".repeat(20)), "value": nested(106, false)},
    ])));
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = h.send(&Req::new(Method::GET, "/v1/nodes/{main}", Vec::new()));
    assert_eq!(status, StatusCode::OK, "{body}");

    // Many operations, each one nesting deeper (about 10 000 levels in 1 MB).
    let mut ops = Vec::new();
    let mut path = "/extra/deep".to_string();
    let mut size = 0;
    while size < 900_000 {
        ops.push(json!({"op": "add", "path": path, "value": nested(100, false)}));
        size += path.len() + 1000;
        path.push_str(&"/a".repeat(100));
    }
    let (status, body) = h.send(&patch(&Value::Array(ops)));
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

/// NUL characters in text the store keeps or filters by (PostgreSQL's text
/// type cannot hold them): stored, or refused with a 400, never a 500.
#[test]
fn nul_characters_never_make_a_server_error() {
    for engine in crate::props::http::engines() {
        let h = Harness::new(engine);
        let reqs = [
            Req::new(
                Method::PUT,
                "/v1/nodes/{main}/maintenance",
                br#"{"reason": "a\u0000b"}"#.to_vec(),
            ),
            patch(&json!([{"op": "add", "path": "/maintenance_reason", "value": "x\u{0}"}])),
            patch(&json!([{"op": "add", "path": "/extra/k\u{0}", "value": "v\u{0}"}])),
            Req::new(Method::GET, "/v1/nodes?driver=%00", Vec::new()),
            Req::new(
                Method::GET,
                "/v1/nodes?driver=a%00&provision_state=enroll",
                Vec::new(),
            ),
            Req::new(
                Method::POST,
                "/v1/nodes",
                br#"{"driver": "fake-hardware", "extra": {"\u0000": "\u0000"}}"#.to_vec(),
            ),
            Req::new(
                Method::PUT,
                "/v1/nodes/{main}/states/power",
                br#"{"target": "power on\u0000"}"#.to_vec(),
            ),
            Req::new(Method::GET, "/v1/nodes/a%00b", Vec::new()),
        ];
        for req in &reqs {
            let (status, body) = h.send(req);
            assert!(
                !status.is_server_error(),
                "{engine:?} {req:?}: {status} {body}"
            );
        }
    }
}

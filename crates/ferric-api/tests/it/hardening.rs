//! Issue 17's API items: links never carry the client's `Host` (a
//! configured public endpoint, else the connection's address), and every
//! numeric query parameter of every listing is parsed and bounded as Ironic
//! does (400 with Ironic's body, nothing changed, never a 5xx).

use crate::common::{App, Options, V};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A node (with a port, a portgroup, a volume connector and target, in a
/// chassis), a deploy template, a runbook and an inspection rule, so every
/// listing has something to page through; returns the path parameter of
/// each resource kind: (node, portgroup, chassis).
async fn populate(app: &App) -> (String, String, String) {
    let c = app.send(Method::POST, "/v1/chassis", json!({})).await;
    assert_eq!(c.status, StatusCode::CREATED, "{}", c.body);
    let chassis = c.body["uuid"].as_str().unwrap().to_string();
    let mut node = String::new();
    for name in ["h1", "h2"] {
        let n = app
            .send(
                Method::POST,
                "/v1/nodes",
                json!({"name": name, "driver": "fake-hardware", "chassis_uuid": chassis}),
            )
            .await;
        assert_eq!(n.status, StatusCode::CREATED, "{}", n.body);
        node = n.body["uuid"].as_str().unwrap().to_string();
    }
    let pg = app
        .send(
            Method::POST,
            "/v1/portgroups",
            json!({"node_uuid": node, "address": "52:54:00:00:00:10"}),
        )
        .await;
    assert_eq!(pg.status, StatusCode::CREATED, "{}", pg.body);
    let portgroup = pg.body["uuid"].as_str().unwrap().to_string();
    for (i, mac) in ["52:54:00:00:00:01", "52:54:00:00:00:02"]
        .iter()
        .enumerate()
    {
        let p = app
            .send(
                Method::POST,
                "/v1/ports",
                json!({"node_uuid": node, "address": mac, "portgroup_uuid": if i == 0 { json!(portgroup) } else { Value::Null }}),
            )
            .await;
        assert_eq!(p.status, StatusCode::CREATED, "{}", p.body);
    }
    for (path, body) in [
        (
            "/v1/volume/connectors",
            json!({"node_uuid": node, "type": "iqn", "connector_id": "iqn.2026-01.org.example:h2"}),
        ),
        (
            "/v1/volume/targets",
            json!({"node_uuid": node, "volume_type": "iscsi", "boot_index": 0, "volume_id": "v1"}),
        ),
        (
            "/v1/deploy_templates",
            json!({"name": "CUSTOM_HARD", "steps": [{"interface": "bios", "step": "apply_configuration", "args": {}, "priority": 10}]}),
        ),
        (
            "/v1/runbooks",
            json!({"name": "CUSTOM_HARD", "steps": [{"interface": "bios", "step": "apply_configuration", "args": {}, "order": 1}]}),
        ),
        (
            "/v1/inspection_rules",
            json!({"description": "r", "actions": [{"op": "set-attribute", "args": {"path": "/extra/x", "value": 1}}]}),
        ),
    ] {
        let r = app.send(Method::POST, path, body).await;
        assert!(r.status.is_success(), "{path}: {} {}", r.status, r.body);
    }
    let r = app
        .send(
            Method::PATCH,
            &format!("/v1/nodes/{node}"),
            json!([{"op": "add", "path": "/extra/k", "value": "v"}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    (node, portgroup, chassis)
}

/// Every GET of `/openapi.json` that takes a `limit` (but the change feed),
/// its path parameters filled with the resources of [`populate`].
async fn listings(app: &App, node: &str, pg: &str, chassis: &str) -> Vec<String> {
    let doc = app.get("/openapi.json").await.body;
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let Some(get) = item.get("get") else { continue };
        let params = get["parameters"].as_array().cloned().unwrap_or_default();
        // The change feed (ferric's own, not Ironic's) has its own ranges,
        // tested below.
        if !params.iter().any(|p| p["name"] == "limit") || path == "/v1/nodes/changes" {
            continue;
        }
        let mut filled = Vec::new();
        let segments: Vec<&str> = path.split('/').collect();
        for (i, seg) in segments.iter().enumerate() {
            if seg.starts_with('{') {
                filled.push(match segments[i - 1] {
                    "nodes" => node,
                    "portgroups" => pg,
                    "chassis" => chassis,
                    other => panic!("no value for the path parameter after {other} in {path}"),
                });
            } else {
                filled.push(seg);
            }
        }
        out.push(filled.join("/"));
    }
    out.sort();
    out
}

/// The store's revision, read from the change feed.
async fn revision(app: &App) -> i64 {
    let r = app.get("/v1/nodes/changes?resource=all&limit=1000").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["revision"].as_i64().unwrap()
}

async fn every_listing_bounds_limit_and_marker(engine: ferric_store::testing::Engine) {
    let Some(app) = Options::new().engine(engine).spawn().await else {
        return;
    };
    let (node, pg, chassis) = populate(&app).await;
    let paths = listings(&app, &node, &pg, &chassis).await;
    // The document lists every paged listing; a new one appears here by
    // itself, and these must be among them.
    for must in [
        "/v1/nodes",
        "/v1/nodes/detail",
        "/v1/ports",
        "/v1/ports/detail",
        "/v1/portgroups",
        "/v1/portgroups/detail",
        "/v1/chassis",
        "/v1/chassis/detail",
        "/v1/allocations",
        "/v1/deploy_templates",
        "/v1/runbooks",
        "/v1/volume/connectors",
        "/v1/volume/targets",
        "/v1/inspection_rules",
        "/v1/conductors",
    ] {
        assert!(paths.iter().any(|p| p == must), "{must} not in {paths:?}");
    }
    assert!(paths.len() >= 20, "{paths:?}");
    let before = revision(&app).await;
    let bad = [
        ("-1", "Limit must be positive"),
        ("0", "Limit must be positive"),
        ("-99999999999999999999999", "Limit must be positive"),
        ("1e308", "Expected an integer for limit: 1e308"),
        ("NaN", "Expected an integer for limit: NaN"),
        ("inf", "Expected an integer for limit: inf"),
        ("1.5", "Expected an integer for limit: 1.5"),
        ("abc", "Expected an integer for limit: abc"),
        ("", "Expected an integer for limit: "),
        ("0x10", "Expected an integer for limit: 0x10"),
    ];
    for path in &paths {
        for (value, fault) in bad {
            let r = app.get(&format!("{path}?limit={}", urlencode(value))).await;
            assert_eq!(
                r.status,
                StatusCode::BAD_REQUEST,
                "{path}?limit={value}: {}",
                r.body
            );
            assert_eq!(r.fault(), fault, "{path}?limit={value}");
        }
        // Larger than max_limit, however large: clamped (Ironic's
        // validate_limit), a full answer.
        for value in ["1001", "99999999999999999999999", "+5", " 7 "] {
            let r = app.get(&format!("{path}?limit={}", urlencode(value))).await;
            assert_eq!(r.status, StatusCode::OK, "{path}?limit={value}: {}", r.body);
        }
        // limit=1 pages: a `next` whenever something was listed, and it
        // works.
        let r = app.get(&format!("{path}?limit=1")).await;
        assert_eq!(r.status, StatusCode::OK, "{path}?limit=1: {}", r.body);
        let items = r
            .body
            .as_object()
            .unwrap()
            .values()
            .find_map(Value::as_array)
            .unwrap_or_else(|| panic!("{path}: no item list in {}", r.body));
        if !items.is_empty() {
            let next = r.body["next"]
                .as_str()
                .unwrap_or_else(|| panic!("{path}?limit=1: no next in {}", r.body));
            let next = next
                .strip_prefix(&app.base)
                .unwrap_or_else(|| panic!("{path}: next {next} is not under {}", app.base));
            let r = app.get(next).await;
            assert_eq!(r.status, StatusCode::OK, "{next}: {}", r.body);
        }
        // A marker that is no identifier is a 400, never a 500.
        let r = app.get(&format!("{path}?marker=%00%01")).await;
        assert!(
            r.status == StatusCode::BAD_REQUEST || r.status == StatusCode::NOT_FOUND,
            "{path}?marker=NUL: {} {}",
            r.status,
            r.body
        );
        let _ = r.fault();
    }
    // The change feed (ferric's own): since, limit and timeout bounded.
    for q in [
        "since=-1",
        "since=1e308",
        "since=99999999999999999999999",
        "since=",
        "limit=0",
        "limit=1001",
        "limit=-1",
        "limit=NaN",
        "limit=",
        "timeout=-1",
        "timeout=61",
        "timeout=1e308",
        "timeout=NaN",
        "timeout=inf",
        "timeout=abc",
        "timeout=",
    ] {
        let r = app.get(&format!("/v1/nodes/changes?{q}")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "changes?{q}: {}", r.body);
        let _ = r.fault();
    }
    assert_eq!(
        revision(&app).await,
        before,
        "a refused request changed something"
    );
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `GET path` over a raw connection with `Host: evil.example` and an
/// absolute request URI naming evil.example too; the whole response.
async fn evil_get(app: &App, path: &str) -> String {
    raw_request(app, "GET", path, "").await
}

async fn raw_request(app: &App, method: &str, path: &str, body: &str) -> String {
    let addr = app.base.strip_prefix("http://").unwrap();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} http://evil.example:6385{path} HTTP/1.1\r\nHost: evil.example:6385\r\n\
         {V}: latest\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(20), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// Every place a link is written: version documents, a list's `next`, a
/// resource's `links`, `Location` of a create and of a state change, the
/// OpenAPI document's server, the change feed.
async fn link_outputs(app: &App, node: &str) -> Vec<String> {
    let mut out = Vec::new();
    for path in [
        "/".to_string(),
        "/v1".to_string(),
        "/v1/nodes?limit=1".to_string(),
        "/v1/nodes/detail?limit=1".to_string(),
        format!("/v1/nodes/{node}"),
        format!("/v1/nodes/{node}/ports?limit=1"),
        "/v1/ports?limit=1".to_string(),
        "/v1/chassis".to_string(),
        "/v1/conductors".to_string(),
        "/v1/drivers".to_string(),
        "/v1/nodes/changes?resource=all".to_string(),
        "/openapi.json".to_string(),
    ] {
        out.push(evil_get(app, &path).await);
    }
    out.push(raw_request(app, "POST", "/v1/nodes", r#"{"driver": "fake-hardware"}"#).await);
    out.push(
        raw_request(
            app,
            "PUT",
            &format!("/v1/nodes/{node}/states/provision"),
            r#"{"target": "manage"}"#,
        )
        .await,
    );
    out
}

async fn links_never_carry_the_host_header(engine: ferric_store::testing::Engine) {
    let Some(app) = Options::new().engine(engine).spawn().await else {
        return;
    };
    let (node, _, _) = populate(&app).await;
    let outputs = link_outputs(&app, &node).await;
    for (i, text) in outputs.iter().enumerate() {
        let (head, _) = text.split_once("\r\n").unwrap_or_default();
        assert!(
            head.contains(" 200 ") || head.contains(" 201 ") || head.contains(" 202 "),
            "output {i}: {text}"
        );
        assert!(
            !text.contains("evil"),
            "output {i} reflects the Host: {text}"
        );
    }
    // The links name the address the connection arrived on.
    let all = outputs.join("\n");
    assert!(all.contains(&format!("{}/v1/nodes/", app.base)), "{all}");
    assert!(
        outputs[2].contains(&format!("\"next\":\"{}/v1/nodes?limit=1", app.base)),
        "{}",
        outputs[2]
    );
    let location = |text: &str| {
        text.lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("location: ")
                    .map(|_| l[10..].trim().to_string())
            })
            .unwrap_or_else(|| panic!("no Location in {text}"))
    };
    assert!(location(&outputs[12]).starts_with(&format!("{}/v1/nodes/", app.base)));
    assert_eq!(
        location(&outputs[13]),
        format!("{}/v1/nodes/{node}/states", app.base)
    );
}

async fn links_carry_the_public_endpoint(engine: ferric_store::testing::Engine) {
    let public = "https://ironic.example.com:6385/baremetal";
    let Some(app) = Options::new()
        .engine(engine)
        .public_endpoint(&format!("{public}/"))
        .spawn()
        .await
    else {
        return;
    };
    let (node, _, _) = populate(&app).await;
    let outputs = link_outputs(&app, &node).await;
    for (i, text) in outputs.iter().enumerate() {
        assert!(
            !text.contains("evil"),
            "output {i} reflects the Host: {text}"
        );
        assert!(
            !text.contains(&app.base),
            "output {i} names the listener, not the public endpoint: {text}"
        );
    }
    assert!(
        outputs[2].contains(&format!("\"next\":\"{public}/v1/nodes?limit=1")),
        "{}",
        outputs[2]
    );
    assert!(
        outputs[4].contains(&format!("\"href\":\"{public}/v1/nodes/{node}\"")),
        "{}",
        outputs[4]
    );
    assert!(
        outputs[11].contains(&format!("\"url\":\"{public}\"")),
        "{}",
        outputs[11]
    );
    assert!(
        outputs[13]
            .to_ascii_lowercase()
            .contains(&format!("location: {public}/v1/nodes/{node}/states").to_ascii_lowercase()),
        "{}",
        outputs[13]
    );
    // Through an ordinary client too.
    let r = app.get("/v1/nodes?limit=1").await;
    assert!(
        r.body["next"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{public}/v1/nodes?")),
        "{}",
        r.body
    );
}

/// `/openapi.json` and the server agree on request bodies: every POST, PUT
/// or PATCH whose body the document marks required is refused with 400 and
/// Ironic's body when sent none (the issue: bodies were not marked required
/// at all), and nothing changes.
async fn required_bodies_are_required(engine: ferric_store::testing::Engine) {
    let Some(app) = Options::new().engine(engine).spawn().await else {
        return;
    };
    let (node, pg, chassis) = populate(&app).await;
    let doc = app.get("/openapi.json").await.body;
    // The operations whose bodies the document once left undeclared.
    for (path, method) in [
        ("/v1/nodes", "post"),
        ("/v1/nodes/{ident}", "patch"),
        ("/v1/nodes/{ident}/states/provision", "put"),
        ("/v1/nodes/{ident}/states/power", "put"),
        ("/v1/heartbeat/{node}", "post"),
        ("/v1/nodes/{ident}/traits", "put"),
    ] {
        assert_eq!(
            doc["paths"][path][method]["requestBody"]["required"],
            json!(true),
            "{method} {path}"
        );
    }
    let before = revision(&app).await;
    let mut checked = 0;
    let mut wrong = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["post", "put", "patch"] {
            let Some(op) = item.get(method) else { continue };
            if op["requestBody"]["required"] != json!(true) {
                continue;
            }
            let segments: Vec<&str> = path.split('/').collect();
            let filled: Vec<&str> = segments
                .iter()
                .enumerate()
                .map(|(i, seg)| {
                    match (seg.starts_with('{'), i.checked_sub(1).map(|j| segments[j])) {
                        (false, _) => seg,
                        (true, Some("nodes")) => node.as_str(),
                        (true, Some("portgroups")) => pg.as_str(),
                        (true, Some("chassis")) => chassis.as_str(),
                        (true, Some("runbooks" | "deploy_templates")) => "CUSTOM_HARD",
                        (true, _) => "x",
                    }
                })
                .collect();
            let url = filled.join("/");
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = app.finish(app.request(m, &url)).await;
            if r.status == StatusCode::BAD_REQUEST {
                let _ = r.fault();
            } else {
                wrong.push(format!("{method} {url}: {} {}", r.status, r.body));
            }
            checked += 1;
        }
    }
    assert!(
        wrong.is_empty(),
        "a required body, yet no 400 without it:\n{}",
        wrong.join("\n")
    );
    assert!(
        checked >= 25,
        "only {checked} operations declare a required body"
    );
    assert_eq!(
        revision(&app).await,
        before,
        "a refused request changed something"
    );
}

both_engines!(
    every_listing_bounds_limit_and_marker,
    links_never_carry_the_host_header,
    links_carry_the_public_endpoint,
    required_bodies_are_required,
);

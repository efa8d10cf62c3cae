//! Ironic's node fields beyond identity and state: create, PATCH and render
//! at each microversion, the list filters and sorting with markers, the
//! 409s, protected and retired.

use crate::common::{App, Options, Reply};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn spawn() -> App {
    Options::new()
        .locked_retry(3, Duration::from_millis(50))
        .step(Duration::from_millis(5))
        .spawn()
        .await
        .unwrap()
}

impl App {
    async fn create_with(&self, body: Value) -> Value {
        let r = self.send(Method::POST, "/v1/nodes", body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.body
    }

    async fn patch_at(&self, ident: &str, version: &str, ops: Value) -> Reply {
        self.call(
            Method::PATCH,
            &format!("/v1/nodes/{ident}"),
            Some(version),
            Some(ops),
        )
        .await
    }

    async fn patch(&self, ident: &str, ops: Value) -> Reply {
        self.patch_at(ident, "latest", ops).await
    }

    async fn verb(&self, ident: &str, target: &str) -> Reply {
        self.send(
            Method::PUT,
            &format!("/v1/nodes/{ident}/states/provision"),
            json!({"target": target}),
        )
        .await
    }

    /// Drive `ident` with `target` and wait until it rests in `state`.
    async fn move_to(&self, ident: &str, target: &str, state: &str) -> Value {
        let r = self.verb(ident, target).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let n = self.node(ident).await;
            if n["provision_state"] == state
                && n["target_provision_state"].is_null()
                && n["reservation"].is_null()
            {
                return n;
            }
            assert!(Instant::now() < until, "never reached {state}: {n}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Names of `GET path` (list items), in the order listed.
    async fn names(&self, path: &str) -> Vec<String> {
        let r = self.get(path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
        r.body["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["name"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test]
async fn create_stores_and_renders_every_field_metal3_sends() {
    let app = spawn().await;
    // What Metal3's baremetal-operator sends on create, disable_power_off
    // included.
    let n = app
        .create_with(json!({
            "driver": "fake-hardware",
            "name": "m3",
            "resource_class": "baremetal",
            "owner": "proj-a",
            "lessee": "proj-b",
            "description": "rack 4",
            "automated_clean": "false",
            "disable_power_off": false,
            "shard": "s1",
            "network_data": {"links": []},
            "retired": true,
            "retired_reason": "old",
            "instance_info": {"image_source": "http://i"},
            "chassis_uuid": "1be26c0b-03f2-4d2e-ae87-c02d7f33c123",
            "properties": {"cpus": 2},
        }))
        .await;
    for (field, want) in [
        ("resource_class", json!("baremetal")),
        ("owner", json!("proj-a")),
        ("lessee", json!("proj-b")),
        ("description", json!("rack 4")),
        ("automated_clean", json!(false)),
        ("disable_power_off", json!(false)),
        ("shard", json!("s1")),
        ("network_data", json!({"links": []})),
        ("retired", json!(true)),
        ("retired_reason", json!("old")),
        ("instance_info", json!({"image_source": "http://i"})),
        (
            "chassis_uuid",
            json!("1be26c0b-03f2-4d2e-ae87-c02d7f33c123"),
        ),
        ("protected", json!(false)),
        ("traits", json!([])),
        ("parent_node", Value::Null),
    ] {
        assert_eq!(n[field], want, "{field}: {n}");
    }
    // Stored, not just echoed.
    let read = app.node("m3").await;
    assert_eq!(read["shard"], "s1");
    assert_eq!(read["automated_clean"], false);
    // Fields above the request's version are hidden...
    let old = app
        .call(Method::GET, "/v1/nodes/m3", Some("1.49"), None)
        .await;
    assert!(old.body.get("owner").is_none(), "{}", old.body);
    assert!(old.body.get("resource_class").is_some());
    let r = app
        .call(Method::GET, "/v1/nodes/m3", Some("1.81"), None)
        .await;
    assert!(r.body.get("shard").is_none());
    assert_eq!(r.body["lessee"], "proj-b");
    // ...and refused when sent (406), nothing created.
    let r = app
        .call(
            Method::POST,
            "/v1/nodes",
            Some("1.49"),
            Some(json!({"driver": "fake-hardware", "name": "old", "owner": "x"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_ACCEPTABLE, "{}", r.body);
    assert_eq!(app.get("/v1/nodes/old").await.status, StatusCode::NOT_FOUND);
    // Fields not accepted on create, bad values.
    for (body, needle) in [
        (
            json!({"driver": "fake-hardware", "protected": true}),
            "unknown field `protected`",
        ),
        (
            json!({"driver": "fake-hardware", "fault": "x"}),
            "unknown field `fault`",
        ),
        (
            json!({"driver": "fake-hardware", "resource_class": "x".repeat(81)}),
            "at most 80",
        ),
        (
            json!({"driver": "fake-hardware", "description": "x".repeat(4097)}),
            "4096",
        ),
        (
            json!({"driver": "fake-hardware", "retired": "maybe"}),
            "retired",
        ),
        (
            json!({"driver": "fake-hardware", "chassis_uuid": "nope"}),
            "chassis_uuid",
        ),
        (
            json!({"driver": "fake-hardware", "retired_reason": "x"}),
            "retired is True",
        ),
        (
            json!({"driver": "fake-hardware", "parent_node": "ghost"}),
            "parent_node 'ghost'",
        ),
    ] {
        let r = app.send(Method::POST, "/v1/nodes", body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.body);
        assert!(r.fault().contains(needle), "{body}: {}", r.fault());
    }
    // parent_node by name resolves to the parent's UUID.
    let child = app
        .create_with(
            json!({"driver": "fake-hardware", "name": "kid", "parent_node": "m3",
                            "owner": "proj-a"}),
        )
        .await;
    assert_eq!(child["parent_node"], n["uuid"]);
    // Another owner's node cannot be the parent (Ironic hides which).
    let r = app
        .send(
            Method::POST,
            "/v1/nodes",
            json!({"driver": "fake-hardware", "parent_node": "m3"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
}

#[tokio::test]
async fn patch_sets_and_removes_fields_with_ironics_rules() {
    let app = spawn().await;
    app.create_with(json!({"driver": "fake-hardware", "name": "p1"}))
        .await;
    let r = app
        .patch(
            "p1",
            json!([
                {"op": "add", "path": "/resource_class", "value": "gold"},
                {"op": "add", "path": "/owner", "value": "o"},
                {"op": "add", "path": "/lessee", "value": "l"},
                {"op": "add", "path": "/description", "value": "d"},
                {"op": "add", "path": "/automated_clean", "value": true},
                {"op": "add", "path": "/disable_power_off", "value": true},
                {"op": "add", "path": "/shard", "value": "s9"},
                {"op": "add", "path": "/network_data", "value": {"a": 1}},
                {"op": "add", "path": "/network_data/b", "value": 2},
                {"op": "add", "path": "/chassis_uuid", "value": "1be26c0b-03f2-4d2e-ae87-c02d7f33c123"},
            ]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["resource_class"], "gold");
    assert_eq!(r.body["network_data"], json!({"a": 1, "b": 2}));
    assert_eq!(r.body["disable_power_off"], true);
    let n = app.node("p1").await;
    assert_eq!(n["shard"], "s9");
    assert_eq!(n["automated_clean"], true);
    let r = app
        .patch(
            "p1",
            json!([
                {"op": "remove", "path": "/shard"},
                {"op": "replace", "path": "/description", "value": null},
                {"op": "remove", "path": "/automated_clean"},
            ]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["shard"], Value::Null);
    assert_eq!(r.body["description"], Value::Null);
    assert_eq!(r.body["automated_clean"], Value::Null);
    let before = app.node("p1").await;
    for (ops, status, needle) in [
        (
            json!([{"op": "add", "path": "/traits", "value": ["CUSTOM_A"]}]),
            StatusCode::BAD_REQUEST,
            "Cannot patch /traits. Only the following can be updated: automated_clean,",
        ),
        (
            json!([{"op": "add", "path": "/boot_mode", "value": "uefi"}]),
            StatusCode::BAD_REQUEST,
            "Cannot patch /boot_mode",
        ),
        (
            json!([{"op": "add", "path": "/fault", "value": "power failure"}]),
            StatusCode::BAD_REQUEST,
            "/fault",
        ),
        (
            json!([{"op": "add", "path": "/protected", "value": true}]),
            StatusCode::CONFLICT,
            "can only be made protected in provision states 'active' or 'rescue', the current state is 'enroll'",
        ),
        (
            json!([{"op": "add", "path": "/protected_reason", "value": "x"}]),
            StatusCode::BAD_REQUEST,
            "The protected_reason field can only be set when protected is True",
        ),
        (
            json!([{"op": "add", "path": "/retired_reason", "value": "x"}]),
            StatusCode::BAD_REQUEST,
            "The retired_reason field can only be set when retired is True",
        ),
        (
            json!([{"op": "add", "path": "/description", "value": "x".repeat(4097)}]),
            StatusCode::BAD_REQUEST,
            "Cannot update node with description exceeding 4096 characters",
        ),
        (
            json!([{"op": "add", "path": "/parent_node", "value": "p1"}]),
            StatusCode::BAD_REQUEST,
            "parent_node",
        ),
    ] {
        let r = app.patch("p1", ops.clone()).await;
        assert_eq!(r.status, status, "{ops}: {}", r.body);
        assert!(r.fault().contains(needle), "{ops}: {}", r.fault());
        assert!(r.header("retry-after").is_none(), "Retry-After only on NodeLocked");
    }
    assert_eq!(
        app.node("p1").await,
        before,
        "refused patches changed nothing"
    );
    // A field newer than the request's version: 406.
    let r = app
        .patch_at(
            "p1",
            "1.81",
            json!([{"op": "add", "path": "/shard", "value": "s"}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_ACCEPTABLE, "{}", r.body);
    // Retired, then un-retired: the reason goes with it.
    let r = app
        .patch(
            "p1",
            json!([{"op": "add", "path": "/retired", "value": "true"},
                   {"op": "add", "path": "/retired_reason", "value": "eol"}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["retired_reason"], "eol");
    let r = app
        .patch(
            "p1",
            json!([{"op": "replace", "path": "/retired", "value": false}]),
        )
        .await;
    assert_eq!(r.body["retired"], false);
    assert_eq!(r.body["retired_reason"], Value::Null);
}

#[tokio::test]
async fn duplicates_and_state_conflicts_answer_409_as_ironic() {
    let app = spawn().await;
    let a = app
        .create_with(json!({"driver": "fake-hardware", "name": "dup"}))
        .await;
    let r = app
        .send(
            Method::POST,
            "/v1/nodes",
            json!({"driver": "fake-hardware", "name": "dup"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.fault(), "A node with name dup already exists.");
    assert!(r.header("retry-after").is_none());
    let r = app
        .send(
            Method::POST,
            "/v1/nodes",
            json!({"driver": "fake-hardware", "uuid": a["uuid"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(
        r.fault(),
        format!(
            "A node with UUID {} already exists.",
            a["uuid"].as_str().unwrap()
        )
    );
    let instance = "6f1c0c1e-4b0a-4a4e-9d7e-0f5c3b3f6a11";
    app.create_with(json!({"driver": "fake-hardware", "name": "i1", "instance_uuid": instance}))
        .await;
    let r = app
        .send(
            Method::POST,
            "/v1/nodes",
            json!({"driver": "fake-hardware", "name": "i2", "instance_uuid": instance}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert!(
        r.fault()
            .starts_with(&format!("Instance {instance} is already associated with a node, it cannot be associated with this other node")),
        "{}",
        r.fault()
    );
    let r = app
        .patch(
            "dup",
            json!([{"op": "add", "path": "/instance_uuid", "value": instance}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert!(r.fault().contains("already associated"), "{}", r.fault());
    // Delete: an associated instance is a 409 (allowed in maintenance).
    let r = app.send(Method::DELETE, "/v1/nodes/i1", json!(null)).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert!(
        r.fault().contains("is associated with instance"),
        "{}",
        r.fault()
    );
    app.patch(
        "i1",
        json!([{"op": "add", "path": "/maintenance", "value": true}]),
    )
    .await;
    let r = app.send(Method::DELETE, "/v1/nodes/i1", json!(null)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
}

#[tokio::test]
async fn protected_nodes_refuse_undeploy_rebuild_and_delete() {
    let app = spawn().await;
    app.create_with(json!({"driver": "fake-hardware", "name": "pr"}))
        .await;
    app.move_to("pr", "manage", "manageable").await;
    app.move_to("pr", "provide", "available").await;
    app.move_to("pr", "active", "active").await;
    let r = app
        .patch(
            "pr",
            json!([{"op": "add", "path": "/protected", "value": true},
                   {"op": "add", "path": "/protected_reason", "value": "prod"}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["protected"], true);
    assert_eq!(r.body["protected_reason"], "prod");
    // An active node's interfaces and resource class are fixed (409).
    for (path, value) in [
        ("/deploy_interface", "ramdisk"),
        ("/resource_class", "gold"),
    ] {
        app.patch(
            "pr",
            json!([{"op": "add", "path": "/resource_class", "value": "silver"}]),
        )
        .await;
        let r = app
            .patch("pr", json!([{"op": "add", "path": path, "value": value}]))
            .await;
        if path == "/resource_class" {
            assert_eq!(r.status, StatusCode::CONFLICT, "{path}: {}", r.body);
            assert!(
                r.fault().contains("can not have resource_class updated"),
                "{}",
                r.fault()
            );
        } else {
            assert_eq!(r.status, StatusCode::CONFLICT, "{path}: {}", r.body);
            assert!(
                r.fault().contains("can not have deploy_interface updated"),
                "{}",
                r.fault()
            );
        }
    }
    for target in ["deleted", "rebuild"] {
        let r = app.verb("pr", target).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{target}: {}", r.body);
        assert!(
            r.fault()
                .ends_with("is protected and cannot be undeployed, rebuilt or deleted"),
            "{}",
            r.fault()
        );
    }
    app.patch(
        "pr",
        json!([{"op": "add", "path": "/maintenance", "value": true}]),
    )
    .await;
    let r = app.send(Method::DELETE, "/v1/nodes/pr", json!(null)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(app.node("pr").await["provision_state"], "active");
    // Unprotecting clears the reason; then undeploy works.
    let r = app
        .patch(
            "pr",
            json!([{"op": "replace", "path": "/protected", "value": false},
                   {"op": "replace", "path": "/maintenance", "value": false}]),
        )
        .await;
    assert_eq!(r.body["protected_reason"], Value::Null, "{}", r.body);
    app.move_to("pr", "deleted", "available").await;
}

#[tokio::test]
async fn retired_nodes_are_not_provided_and_clean_back_to_manageable() {
    let app = spawn().await;
    app.create_with(json!({"driver": "fake-hardware", "name": "rt"}))
        .await;
    app.move_to("rt", "manage", "manageable").await;
    app.move_to("rt", "provide", "available").await;
    let r = app
        .patch(
            "rt",
            json!([{"op": "add", "path": "/retired", "value": true}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert!(r
        .fault()
        .contains("can not have 'retired' set in provision state 'available'"));
    app.move_to("rt", "active", "active").await;
    let r = app
        .patch(
            "rt",
            json!([{"op": "add", "path": "/retired", "value": true}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // Undeploy cleans, and a retired node ends in manageable.
    app.move_to("rt", "deleted", "manageable").await;
    let r = app.verb("rt", "provide").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(
        r.fault().ends_with("because it is retired."),
        "{}",
        r.fault()
    );
    assert_eq!(app.node("rt").await["provision_state"], "manageable");
}

#[tokio::test]
async fn list_filters_each_select_their_nodes() {
    let app = spawn().await;
    app.create_with(
        json!({"driver": "fake-hardware", "name": "a", "resource_class": "gold",
                            "owner": "p1", "shard": "s1", "description": "Rack Four",
                            "chassis_uuid": "1be26c0b-03f2-4d2e-ae87-c02d7f33c123",
                            "instance_uuid": "6f1c0c1e-4b0a-4a4e-9d7e-0f5c3b3f6a11"}),
    )
    .await;
    app.create_with(
        json!({"driver": "fake-hardware", "name": "b", "resource_class": "silver",
                           "lessee": "p1", "shard": "s2", "retired": true}),
    )
    .await;
    app.create_with(json!({"driver": "fake-hardware", "name": "c", "maintenance": true}))
        .await;
    app.create_with(
        json!({"driver": "fake-hardware", "name": "kid", "parent_node": "a",
                           "owner": "p1"}),
    )
    .await;
    for (query, want) in [
        ("", vec!["a", "b", "c"]),
        ("resource_class=gold", vec!["a"]),
        ("owner=p1", vec!["a"]),
        ("lessee=p1", vec!["b"]),
        ("shard=s1,s2", vec!["a", "b"]),
        ("sharded=false", vec!["c"]),
        ("retired=true", vec!["b"]),
        ("maintenance=true", vec!["c"]),
        ("associated=true", vec!["a"]),
        ("associated=false", vec!["b", "c"]),
        (
            "instance_uuid=6f1c0c1e-4b0a-4a4e-9d7e-0f5c3b3f6a11",
            vec!["a"],
        ),
        (
            "chassis_uuid=1be26c0b-03f2-4d2e-ae87-c02d7f33c123",
            vec!["a"],
        ),
        ("description_contains=ack%20F", vec!["a"]),
        ("include_children=true", vec!["a", "b", "c", "kid"]),
        ("parent_node=a", vec!["kid"]),
        (
            "provision_state=enroll&driver=fake-hardware",
            vec!["a", "b", "c"],
        ),
    ] {
        let got = sorted(app.names(&format!("/v1/nodes?{query}")).await);
        assert_eq!(got, want, "{query}");
    }
    // Version gates (406) and bad values (400).
    for (query, version, status) in [
        ("owner=p1", "1.49", StatusCode::NOT_ACCEPTABLE),
        ("lessee=p1", "1.64", StatusCode::NOT_ACCEPTABLE),
        ("shard=s1", "1.81", StatusCode::NOT_ACCEPTABLE),
        ("sharded=true", "1.81", StatusCode::NOT_ACCEPTABLE),
        ("resource_class=x", "1.20", StatusCode::NOT_ACCEPTABLE),
        ("parent_node=a", "1.82", StatusCode::NOT_ACCEPTABLE),
        ("fault=nope", "latest", StatusCode::BAD_REQUEST),
        ("associated=maybe", "latest", StatusCode::BAD_REQUEST),
        ("instance_uuid=nope", "latest", StatusCode::BAD_REQUEST),
        ("sort_key=properties", "latest", StatusCode::BAD_REQUEST),
        ("sort_key=nope", "latest", StatusCode::BAD_REQUEST),
        ("sort_dir=up", "latest", StatusCode::BAD_REQUEST),
        ("sort_key=owner", "1.49", StatusCode::NOT_ACCEPTABLE),
        ("parent_node=ghost", "latest", StatusCode::NOT_FOUND),
    ] {
        let r = app
            .call(
                Method::GET,
                &format!("/v1/nodes?{query}"),
                Some(version),
                None,
            )
            .await;
        assert_eq!(r.status, status, "{query} at {version}: {}", r.body);
    }
    // A field newer than the request in ?fields=: 406; an unknown one: 400.
    let r = app
        .call(
            Method::GET,
            "/v1/nodes?fields=uuid,owner",
            Some("1.49"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_ACCEPTABLE, "{}", r.body);
    let r = app
        .call(Method::GET, "/v1/nodes/a?fields=shard", Some("1.81"), None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_ACCEPTABLE, "{}", r.body);
    let r = app.get("/v1/nodes?fields=uuid,colour").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let r = app.get("/v1/nodes?sort_key=properties").await;
    assert_eq!(
        r.fault(),
        "The sort_key value properties is an invalid field for sorting"
    );
    let r = app.get("/v1/nodes?sort_key=nope").await;
    assert_eq!(
        r.fault(),
        "The sort_key value \"nope\" is an invalid field for sorting"
    );
    let r = app.get("/v1/nodes?sort_dir=up").await;
    assert_eq!(
        r.fault(),
        "Invalid sort direction: up. Acceptable values are 'asc' or 'desc'"
    );
}

#[tokio::test]
async fn sorted_pages_follow_the_marker_and_the_next_link() {
    let app = spawn().await;
    let classes = ["b", "", "a", "b", "", "c", "a"];
    for (i, class) in classes.iter().enumerate() {
        let mut body = json!({"driver": "fake-hardware", "name": format!("n{i}")});
        if !class.is_empty() {
            body["resource_class"] = json!(class);
        }
        app.create_with(body).await;
    }
    for dir in ["asc", "desc"] {
        let all = app
            .names(&format!(
                "/v1/nodes?sort_key=resource_class&sort_dir={dir}&fields=name,resource_class"
            ))
            .await;
        assert_eq!(all.len(), 7);
        // Follow the `next` links two at a time.
        let mut seen = Vec::new();
        let mut url = format!(
            "{}/v1/nodes?sort_key=resource_class&sort_dir={dir}&limit=2",
            app.base
        );
        loop {
            let r = app
                .finish(
                    app.http
                        .get(&url)
                        .header("X-OpenStack-Ironic-API-Version", "latest"),
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            for n in r.body["nodes"].as_array().unwrap() {
                seen.push(n["name"].as_str().unwrap().to_string());
            }
            match r.body["next"].as_str() {
                Some(next) => {
                    assert!(next.contains("sort_key=resource_class"), "{next}");
                    url = next.to_string();
                }
                None => break,
            }
        }
        assert_eq!(seen, all, "{dir}");
        let classes_seen: Vec<Value> = {
            let r = app
                .get(&format!(
                    "/v1/nodes?sort_key=resource_class&sort_dir={dir}&fields=resource_class"
                ))
                .await;
            r.body["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["resource_class"].clone())
                .collect()
        };
        let want: Vec<Value> = if dir == "asc" {
            vec![
                json!("a"),
                json!("a"),
                json!("b"),
                json!("b"),
                json!("c"),
                Value::Null,
                Value::Null,
            ]
        } else {
            vec![
                Value::Null,
                Value::Null,
                json!("c"),
                json!("b"),
                json!("b"),
                json!("a"),
                json!("a"),
            ]
        };
        assert_eq!(classes_seen, want, "{dir}");
    }
    // An unknown marker is a 404, as in Ironic.
    let r = app
        .get("/v1/nodes?marker=6f1c0c1e-4b0a-4a4e-9d7e-0f5c3b3f6a11")
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
}

async fn node_traits(app: &App) -> Value {
    let r = app.get("/v1/nodes/t1/traits").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["traits"].clone()
}

#[tokio::test]
async fn traits_are_set_added_removed_and_validated() {
    let app = spawn().await;
    app.create_with(json!({"driver": "fake-hardware", "name": "t1"}))
        .await;
    let r = app
        .send(
            Method::PUT,
            "/v1/nodes/t1/traits",
            json!({"traits": ["CUSTOM_B", "HW_CPU_X86_VMX", "CUSTOM_B"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert_eq!(
        node_traits(&app).await,
        json!(["CUSTOM_B", "HW_CPU_X86_VMX"])
    );
    let r = app
        .call(
            Method::PUT,
            "/v1/nodes/t1/traits/CUSTOM_A",
            Some("latest"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert!(r.header("location").unwrap().ends_with("/traits/CUSTOM_A"));
    assert_eq!(
        node_traits(&app).await,
        json!(["CUSTOM_A", "CUSTOM_B", "HW_CPU_X86_VMX"])
    );
    // Traits show in the node, sorted.
    assert_eq!(app.node("t1").await["traits"], node_traits(&app).await);
    let r = app
        .call(
            Method::DELETE,
            "/v1/nodes/t1/traits/CUSTOM_B",
            Some("latest"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let r = app
        .call(
            Method::DELETE,
            "/v1/nodes/t1/traits/CUSTOM_B",
            Some("latest"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    assert!(
        r.fault().ends_with("doesn't have a trait 'CUSTOM_B'"),
        "{}",
        r.fault()
    );
    let before = app.node("t1").await;
    for (method, path, body) in [
        (Method::PUT, "/v1/nodes/t1/traits/custom_lower", None),
        (Method::PUT, "/v1/nodes/t1/traits/HW_NOT_REAL", None),
        (
            Method::PUT,
            "/v1/nodes/t1/traits",
            Some(json!({"traits": ["CUSTOM_OK", "bad"]})),
        ),
        (
            Method::PUT,
            "/v1/nodes/t1/traits",
            Some(json!({"traits": "CUSTOM_A"})),
        ),
        (
            Method::PUT,
            "/v1/nodes/t1/traits",
            Some(json!({"other": 1})),
        ),
        (Method::PUT, "/v1/nodes/t1/traits", Some(json!({}))),
        (
            Method::PUT,
            "/v1/nodes/t1/traits/CUSTOM_C",
            Some(json!({"traits": ["CUSTOM_C"]})),
        ),
    ] {
        let r = app.call(method, path, Some("latest"), body.clone()).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{path} {body:?}: {}",
            r.body
        );
    }
    let many: Vec<String> = (0..51).map(|i| format!("CUSTOM_{i}")).collect();
    let r = app
        .send(Method::PUT, "/v1/nodes/t1/traits", json!({"traits": many}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(r.fault().contains("(51 vs. 50)"), "{}", r.fault());
    assert_eq!(
        app.node("t1").await,
        before,
        "refused writes changed nothing"
    );
    // Too old a version: the sub-resource does not exist.
    let r = app
        .call(Method::GET, "/v1/nodes/t1/traits", Some("1.36"), None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    assert_eq!(
        app.get("/v1/nodes/ghost/traits").await.status,
        StatusCode::NOT_FOUND
    );
    let r = app
        .call(Method::DELETE, "/v1/nodes/t1/traits", Some("latest"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert_eq!(node_traits(&app).await, json!([]));
}

#[tokio::test]
async fn shards_count_nodes_and_children_list_uuids() {
    let app = spawn().await;
    let parent = app
        .create_with(json!({"driver": "fake-hardware", "name": "par", "shard": "s1"}))
        .await;
    app.create_with(json!({"driver": "fake-hardware", "name": "x", "shard": "s1"}))
        .await;
    app.create_with(json!({"driver": "fake-hardware", "name": "y", "shard": "s2"}))
        .await;
    let kid = app
        .create_with(json!({"driver": "fake-hardware", "name": "kid", "parent_node": "par"}))
        .await;
    let r = app.get("/v1/shards").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.body["shards"],
        json!([{"name": "s1", "count": 2}, {"name": "None", "count": 1}, {"name": "s2", "count": 1}])
    );
    let r = app
        .call(Method::GET, "/v1/shards", Some("1.81"), None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    let r = app.get("/v1/nodes/par/children").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["children"], json!([kid["uuid"]]));
    let r = app
        .get(&format!(
            "/v1/nodes/{}/children",
            kid["uuid"].as_str().unwrap()
        ))
        .await;
    assert_eq!(r.body["children"], json!([]));
    let r = app
        .call(Method::GET, "/v1/nodes/par/children", Some("1.82"), None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    assert_eq!(parent["parent_node"], Value::Null);
}

/// One HTTP/1.1 response from `stream`: the status line and the body.
async fn read_response(stream: &mut tokio::net::TcpStream) -> (String, String) {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed mid-body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let status = head.lines().next().unwrap_or_default().to_string();
    let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).to_string();
    (status, body)
}

/// The clients negotiate by sending their newest version first and
/// retrying the 406 on the same pooled connection: the connection must
/// survive a refused request that carried a body.
#[tokio::test]
async fn a_refused_version_leaves_the_connection_usable() {
    use tokio::io::AsyncWriteExt;
    let app = spawn().await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let body = format!(
        r#"{{"driver": "fake-hardware", "extra": {{"pad": "{}"}}}}"#,
        "x".repeat(60_000)
    );
    let request = format!(
        "POST /v1/nodes HTTP/1.1\r\nHost: {addr}\r\nX-OpenStack-Ironic-API-Version: 1.999\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    let (status, _) = read_response(&mut stream).await;
    assert!(status.contains(" 406 "), "{status}");
    let again = format!(
        "GET /v1/nodes HTTP/1.1\r\nHost: {addr}\r\nX-OpenStack-Ironic-API-Version: 1.96\r\n\r\n"
    );
    stream.write_all(again.as_bytes()).await.unwrap();
    let (status, body) = read_response(&mut stream).await;
    assert!(status.contains(" 200 "), "{status}: {body}");
}

#[tokio::test]
async fn no_patch_while_a_state_transition_is_in_progress() {
    let app = spawn().await;
    app.create_with(json!({"driver": "fake-hardware", "name": "w1",
                           "driver_info": {"fake_clean": "wait"}}))
        .await;
    app.move_to("w1", "manage", "manageable").await;
    let r = app.verb("w1", "provide").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    // Cleaning waits for an agent that never comes: the lock is free, the
    // target is set.
    let until = Instant::now() + Duration::from_secs(20);
    let before = loop {
        let n = app.node("w1").await;
        if n["provision_state"] == "clean wait" && n["reservation"].is_null() {
            break n;
        }
        assert!(Instant::now() < until, "never waited: {n}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let r = app
        .patch("w1", json!([{"op": "add", "path": "/extra/a", "value": 1}]))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(
        r.fault(),
        format!(
            "Node {} can not be updated while a state transition is in progress.",
            before["uuid"].as_str().unwrap()
        )
    );
    assert!(r.header("retry-after").is_none());
    assert_eq!(app.node("w1").await, before);
}

/// A malformed UUID in a node body gets Ironic's wording (clients match on
/// it) and creates nothing.
#[tokio::test]
async fn malformed_uuids_in_a_node_body_use_ironics_wording() {
    let app = spawn().await;
    for (field, body) in [
        ("uuid", json!({"driver": "fake-hardware", "uuid": "abc"})),
        (
            "instance_uuid",
            json!({"driver": "fake-hardware", "instance_uuid": "i-1"}),
        ),
    ] {
        let r = app.send(Method::POST, "/v1/nodes", body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
        let bad = body[field].as_str().unwrap();
        assert_eq!(r.fault(), format!("Expected UUID for {field}: {bad}"));
    }
    let listed = app.get("/v1/nodes").await;
    assert_eq!(listed.body["nodes"], json!([]));
}

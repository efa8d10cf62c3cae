//! The rest of the node surface over real HTTP: the `/v1` root's links,
//! the `shard` filter of ports and portgroups, VIFs, the boot mode, secure
//! boot, console and RAID states.

use crate::common::{App, Options};
use ferric_store::testing::Engine;
use ferric_store::Store;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

async fn app(engine: Engine) -> Option<App> {
    Options::new()
        .engine(engine)
        .locked_retry(2, Duration::from_millis(20))
        .spawn()
        .await
}

/// SQLite always, PostgreSQL when configured.
async fn engines() -> Vec<App> {
    let mut apps = vec![app(Engine::Sqlite).await.unwrap()];
    if let Some(pg) = app(Engine::Postgres).await {
        apps.push(pg);
    }
    apps
}

impl App {
    async fn created(&self, path: &str, body: Value) -> Value {
        let r = self.send(Method::POST, path, body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{path}: {}", r.body);
        r.body
    }
}

fn uuids(v: &Value, key: &str) -> Vec<String> {
    let mut u: Vec<String> = v[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["uuid"].as_str().unwrap().to_string())
        .collect();
    u.sort();
    u
}

#[tokio::test]
async fn the_v1_root_lists_each_resource_from_its_version() {
    let app = app(Engine::Sqlite).await.unwrap();
    for (name, minor) in [
        ("portgroups", 23),
        ("volume", 32),
        ("lookup", 22),
        ("heartbeat", 22),
        ("conductors", 49),
        ("allocations", 52),
        ("events", 54),
        ("deploy_templates", 55),
        ("shards", 82),
        ("continue_inspection", 84),
        ("runbooks", 92),
        ("inspection_rules", 96),
    ] {
        let before = app
            .call(Method::GET, "/v1", Some(&format!("1.{}", minor - 1)), None)
            .await;
        assert!(before.body.get(name).is_none(), "{name} before 1.{minor}");
        let at = app
            .call(Method::GET, "/v1", Some(&format!("1.{minor}")), None)
            .await;
        assert_eq!(
            at.body[name][0]["href"],
            format!("{}/v1/{name}", app.base),
            "{name} at 1.{minor}: {}",
            at.body
        );
    }
    let r = app.call(Method::GET, "/v1", Some("1.1"), None).await;
    for name in ["chassis", "nodes", "ports", "drivers"] {
        assert!(r.body[name].is_array(), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ports_and_portgroups_filter_on_their_nodes_shard() {
    for app in engines().await {
        let a = app
            .created(
                "/v1/nodes",
                json!({"driver": "fake-hardware", "shard": "s1"}),
            )
            .await;
        let b = app
            .created(
                "/v1/nodes",
                json!({"driver": "fake-hardware", "shard": "s2"}),
            )
            .await;
        let c = app
            .created("/v1/nodes", json!({"driver": "fake-hardware"}))
            .await;
        let mut ports = Vec::new();
        let mut pgs = Vec::new();
        for (i, n) in [&a, &b, &c].into_iter().enumerate() {
            ports.push(
                app.created(
                    "/v1/ports",
                    json!({"node_uuid": n["uuid"], "address": format!("52:54:00:00:00:0{i}")}),
                )
                .await["uuid"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
            pgs.push(
                app.created("/v1/portgroups", json!({"node_uuid": n["uuid"]}))
                    .await["uuid"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
        // Ports are filtered by shard from 1.82, portgroups from 1.106.
        for (kind, all, before, from) in [
            ("ports", &ports, "1.81", "1.82"),
            ("portgroups", &pgs, "1.105", "1.106"),
        ] {
            for (query, want) in [
                ("shard=s1", vec![all[0].clone()]),
                ("shard=s1,%20s2", {
                    let mut v = vec![all[0].clone(), all[1].clone()];
                    v.sort();
                    v
                }),
                ("shard=nope", vec![]),
            ] {
                for path in [
                    format!("/v1/{kind}?{query}"),
                    format!("/v1/{kind}/detail?{query}"),
                ] {
                    let r = app.call(Method::GET, &path, Some(from), None).await;
                    assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
                    assert_eq!(uuids(&r.body, kind), want, "{path}");
                }
            }
            let r = app
                .call(
                    Method::GET,
                    &format!("/v1/{kind}?shard=s1"),
                    Some(before),
                    None,
                )
                .await;
            assert_eq!(r.status, StatusCode::NOT_ACCEPTABLE, "{kind}");
        }
        let r = app
            .get(&format!(
                "/v1/ports?shard=s1&node_uuid={}",
                a["uuid"].as_str().unwrap()
            ))
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
        let r = app
            .get(&format!(
                "/v1/portgroups?shard=s1&node={}",
                a["uuid"].as_str().unwrap()
            ))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
        app.store.cleanup().await;
    }
}

/// The VIF recorded on a port or portgroup (`internal_info`).
async fn vif_on(app: &App, kind: &str, uuid: &Value) -> Value {
    let r = app
        .get(&format!("/v1/{kind}/{}", uuid.as_str().unwrap()))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["internal_info"]["tenant_vif_port_id"].clone()
}

async fn vif_ids(app: &App, node: &str) -> Vec<String> {
    let r = app.get(&format!("/v1/nodes/{node}/vifs")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let mut ids: Vec<String> = r.body["vifs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn vifs_on_a_noop_network_change_nothing() {
    let app = app(Engine::Sqlite).await.unwrap();
    let n = app
        .created(
            "/v1/nodes",
            json!({"driver": "fake-hardware", "name": "nn"}),
        )
        .await;
    assert_eq!(n["network_interface"], "noop");
    app.created(
        "/v1/ports",
        json!({"node_uuid": n["uuid"], "address": "52:54:00:00:01:01"}),
    )
    .await;
    let r = app
        .send(Method::POST, "/v1/nodes/nn/vifs", json!({"id": "v1"}))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert_eq!(vif_ids(&app, "nn").await, Vec::<String>::new());
    let r = app
        .call(
            Method::DELETE,
            "/v1/nodes/nn/vifs/never",
            Some("latest"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    // The resource needs 1.28.
    let r = app
        .call(Method::GET, "/v1/nodes/nn/vifs", Some("1.27"), None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app.get("/v1/nodes/nope/vifs").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flat_vifs_take_free_ports_as_ironic_picks_them() {
    for app in engines().await {
        let n = app
            .created(
                "/v1/nodes",
                json!({"driver": "fake-hardware", "name": "fn", "network_interface": "flat"}),
            )
            .await;
        let node = n["uuid"].as_str().unwrap().to_string();
        let attach = |body: Value| {
            let app = &app;
            async move { app.send(Method::POST, "/v1/nodes/fn/vifs", body).await }
        };
        // No port at all.
        let r = attach(json!({"id": "v1"})).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            r.fault(),
            "Unable to attach VIF v1, not enough free physical ports."
        );
        let p1 = app
            .created(
                "/v1/ports",
                json!({"node_uuid": node, "address": "52:54:00:00:02:01", "pxe_enabled": false}),
            )
            .await["uuid"]
            .clone();
        let p2 = app
            .created(
                "/v1/ports",
                json!({"node_uuid": node, "address": "52:54:00:00:02:02", "pxe_enabled": true}),
            )
            .await["uuid"]
            .clone();
        // The PXE-enabled port first.
        let r = attach(json!({"id": "v1"})).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
        assert_eq!(vif_on(&app, "ports", &p2).await, "v1");
        assert_eq!(vif_ids(&app, "fn").await, ["v1"]);
        let r = attach(json!({"id": "v1"})).await;
        assert_eq!(r.status, StatusCode::CONFLICT);
        assert_eq!(
            r.fault(),
            format!(
                "Unable to attach VIF because VIF v1 is already attached to Ironic Port {}",
                p2.as_str().unwrap()
            )
        );
        assert!(r.header("retry-after").is_none());
        let r = attach(json!({"id": "v2"})).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
        assert_eq!(vif_on(&app, "ports", &p1).await, "v2");
        let r = attach(json!({"id": "v3"})).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            r.fault(),
            "Unable to attach VIF v3, not enough free physical ports."
        );
        // Bad requests change nothing.
        for (body, version, msg) in [
            (
                json!({}),
                "latest",
                "Schema error for vif: 'id' is a required property".to_string(),
            ),
            (
                json!({"id": 5}),
                "latest",
                "Schema error for vif: 5 is not of type 'string'".to_string(),
            ),
            (
                json!({"id": "a b"}),
                "latest",
                "Expected UUID or name for id: a b".to_string(),
            ),
            (
                json!({"id": "v9", "port_uuid": p1, "portgroup_uuid": p1}),
                "1.67",
                "Cannot specify both port_uuid and portgroup_uuid".to_string(),
            ),
        ] {
            let r = app
                .call(
                    Method::POST,
                    "/v1/nodes/fn/vifs",
                    Some(version),
                    Some(body.clone()),
                )
                .await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(r.fault(), msg, "{body}");
        }
        // Detach, then attach to the port asked for.
        let r = app
            .call(Method::DELETE, "/v1/nodes/fn/vifs/v1", Some("latest"), None)
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
        assert!(vif_on(&app, "ports", &p2).await.is_null());
        assert_eq!(vif_ids(&app, "fn").await, ["v2"]);
        let r = app
            .call(Method::DELETE, "/v1/nodes/fn/vifs/v1", Some("latest"), None)
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            r.fault(),
            format!("Unable to detach VIF v1 from node {node} because it is not attached to it.")
        );
        let history = app.get("/v1/nodes/fn/history").await.body;
        assert!(
            history["history"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["severity"] == "ERROR"
                    && e["event"]
                        .as_str()
                        .unwrap()
                        .starts_with("Failed to detach VIF v1")),
            "{history}"
        );
        let r = attach(json!({"id": "v4", "port_uuid": p1})).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "p1 is taken: {}", r.body);
        let r = attach(json!({"id": "v4", "port_uuid": p2})).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
        assert_eq!(vif_on(&app, "ports", &p2).await, "v4");
        // A portgroup with a free member wins over a free port.
        let g = app
            .created("/v1/portgroups", json!({"node_uuid": node}))
            .await["uuid"]
            .clone();
        app.created(
            "/v1/ports",
            json!({"node_uuid": node, "address": "52:54:00:00:02:03", "portgroup_uuid": g}),
        )
        .await;
        app.created(
            "/v1/ports",
            json!({"node_uuid": node, "address": "52:54:00:00:02:04", "pxe_enabled": true}),
        )
        .await;
        let r = attach(json!({"id": "v5"})).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
        assert_eq!(vif_on(&app, "portgroups", &g).await, "v5");
        assert_eq!(vif_ids(&app, "fn").await, ["v2", "v4", "v5"]);
        let r = app
            .call(Method::DELETE, "/v1/nodes/fn/vifs/v5", Some("latest"), None)
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
        assert!(vif_on(&app, "portgroups", &g).await.is_null());
        app.store.cleanup().await;
    }
}

/// Poll `GET /v1/nodes/{ident}` until `done` holds (bounded).
async fn until(app: &App, ident: &str, done: impl Fn(&Value) -> bool) -> Value {
    let end = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let n = app.node(ident).await;
        if done(&n) {
            return n;
        }
        assert!(std::time::Instant::now() < end, "never converged: {n}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn boot_mode_and_secure_boot_go_through_the_management_interface() {
    let app = app(Engine::Sqlite).await.unwrap();
    app.created(
        "/v1/nodes",
        json!({"driver": "fake-hardware", "name": "bm"}),
    )
    .await;
    let put = |path: &'static str, version: &'static str, body: Value| {
        let app = &app;
        async move {
            app.call(
                Method::PUT,
                &format!("/v1/nodes/bm/states/{path}"),
                Some(version),
                Some(body),
            )
            .await
        }
    };
    // Version gate (404 before 1.76) and bad targets (400).
    let r = put("boot_mode", "1.75", json!({"target": "uefi"})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        r.fault(),
        "This endpoint is supported starting with the API version 1.76"
    );
    let r = put("boot_mode", "1.76", json!({"target": "efi"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.fault(),
        "Invalid boot mode efi requested for node. Allowed boot modes are: bios, uefi"
    );
    let r = put("secure_boot", "1.76", json!({"target": "maybe"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.fault()
            .starts_with("Invalid target: Unrecognized value 'maybe'"),
        "{}",
        r.fault()
    );
    let r = put("secure_boot", "1.76", json!({})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // The fake management interface cannot change them (as Ironic's): 202,
    // then last_error.
    let r = put("boot_mode", "1.76", json!({"target": "uefi"})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(
        r.header("location").unwrap(),
        format!("{}/v1/nodes/bm/states", app.base)
    );
    let n = until(&app, "bm", |n| n["last_error"].is_string()).await;
    assert_eq!(
        n["last_error"],
        "Failed to change boot mode to 'uefi: Driver fake-hardware does not support set_boot_mode (disabled or not implemented)."
    );
    assert!(n["boot_mode"].is_null());
    let r = put("secure_boot", "1.76", json!({"target": true})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let n = until(&app, "bm", |n| {
        n["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("secure_boot"))
    })
    .await;
    assert_eq!(
        n["last_error"],
        "Failed to change secure_boot state to 'True': Driver fake-hardware does not support set_secure_boot_state (disabled or not implemented)."
    );
    // A transitioning node is refused (409).
    app.store
        .store
        .create_node(ferric_core::NewNode {
            name: Some("busy".into()),
            driver: "fake-hardware".into(),
            provision_state: Some(ferric_core::ProvisionState::Deploying),
            ..Default::default()
        })
        .await
        .unwrap();
    let r = app
        .call(
            Method::PUT,
            "/v1/nodes/busy/states/boot_mode",
            Some("1.76"),
            Some(json!({"target": "bios"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    // The states document shows the fields from their versions.
    let s = app
        .call(Method::GET, "/v1/nodes/bm/states", Some("1.74"), None)
        .await
        .body;
    assert!(
        s.get("boot_mode").is_none() && s.get("raid_config").is_some(),
        "{s}"
    );
    let s = app
        .call(Method::GET, "/v1/nodes/bm/states", Some("1.11"), None)
        .await
        .body;
    assert!(
        s.get("raid_config").is_none() && s.get("console_enabled").is_some(),
        "{s}"
    );
    let s = app
        .call(Method::GET, "/v1/nodes/bm/states", Some("1.75"), None)
        .await
        .body;
    assert!(
        s.get("boot_mode").is_some() && s.get("secure_boot").is_some(),
        "{s}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_is_enabled_and_disabled_through_its_interface() {
    let app = app(Engine::Sqlite).await.unwrap();
    app.created(
        "/v1/nodes",
        json!({"driver": "fake-hardware", "name": "c1", "console_interface": "fake"}),
    )
    .await;
    app.created(
        "/v1/nodes",
        json!({"driver": "fake-hardware", "name": "c2", "console_interface": "no-console"}),
    )
    .await;
    let get = app.get("/v1/nodes/c1/states/console").await;
    assert_eq!(get.status, StatusCode::OK);
    assert_eq!(
        get.body,
        json!({"console_enabled": false, "console_info": null})
    );
    let r = app
        .send(
            Method::PUT,
            "/v1/nodes/c1/states/console",
            json!({"enabled": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(
        r.header("location").unwrap(),
        format!("{}/v1/nodes/c1/states/console", app.base)
    );
    until(&app, "c1", |n| n["console_enabled"] == true).await;
    let get = app.get("/v1/nodes/c1/states/console").await;
    assert_eq!(
        get.body,
        json!({"console_enabled": true, "console_info": {}})
    );
    let r = app
        .send(
            Method::PUT,
            "/v1/nodes/c1/states/console",
            json!({"enabled": "false"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    until(&app, "c1", |n| n["console_enabled"] == false).await;
    // no-console refuses (Ironic's UnsupportedDriverExtension, 400).
    let r = app
        .send(
            Method::PUT,
            "/v1/nodes/c2/states/console",
            json!({"enabled": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.fault(),
        "Driver fake-hardware does not support console (disabled or not implemented)."
    );
    assert_eq!(app.node("c2").await["console_enabled"], false);
    for body in [json!({}), json!({"enabled": "perhaps"})] {
        let r = app
            .send(Method::PUT, "/v1/nodes/c1/states/console", body.clone())
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
    }
    let r = app.get("/v1/nodes/nope/states/console").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn target_raid_config_is_validated_by_the_raid_interface() {
    for app in engines().await {
        app.created(
            "/v1/nodes",
            json!({"driver": "fake-hardware", "name": "r1", "raid_interface": "fake"}),
        )
        .await;
        app.created(
            "/v1/nodes",
            json!({"driver": "fake-hardware", "name": "r2", "raid_interface": "no-raid"}),
        )
        .await;
        let put = |node: &'static str, version: &'static str, body: Value| {
            let app = &app;
            async move {
                app.call(
                    Method::PUT,
                    &format!("/v1/nodes/{node}/states/raid"),
                    Some(version),
                    Some(body),
                )
                .await
            }
        };
        let config =
            json!({"logical_disks": [{"raid_level": "1", "size_gb": 100, "is_root_volume": true}]});
        let r = put("r1", "1.11", config.clone()).await;
        assert_eq!(r.status, StatusCode::NOT_ACCEPTABLE);
        let r = put("r1", "1.12", config.clone()).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
        assert_eq!(app.node("r1").await["target_raid_config"], config);
        let s = app.get("/v1/nodes/r1/states").await.body;
        assert_eq!(s["target_raid_config"], config);
        for (body, msg) in [
            (json!({"logical_disks": [{"raid_level": "7", "size_gb": 1}]}),
             "RAID config validation error: '7' is not one of ['JBOD', '0', '1', '2', '5', '6', '1+0', '5+0', '6+0']"),
            (json!({"disks": []}), "RAID config validation error: 'logical_disks' is a required property"),
            (json!({"logical_disks": [{"raid_level": "1", "size_gb": 1, "is_root_volume": true},
                                      {"raid_level": "1", "size_gb": "MAX", "is_root_volume": true}]}),
             "Raid config cannot have more than one root volume. 2 root volumes were specified"),
        ] {
            let r = put("r1", "latest", body.clone()).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(r.fault(), msg);
        }
        assert_eq!(
            app.node("r1").await["target_raid_config"],
            config,
            "unchanged"
        );
        let r = put("r1", "latest", json!([1])).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        // {} unsets, even without a RAID interface.
        let r = put("r1", "latest", json!({})).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        assert_eq!(app.node("r1").await["target_raid_config"], json!({}));
        let r = put("r2", "latest", config.clone()).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(
            r.fault(),
            "Driver fake-hardware does not support raid (disabled or not implemented)."
        );
        let r = put("r2", "latest", json!({})).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        app.store.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gates_up_to_1_115_follow_ironic() {
    let app = app(Engine::Sqlite).await.unwrap();
    let n = app
        .created("/v1/nodes", json!({"driver": "fake-hardware", "name": "g"}))
        .await;
    // OVN VTEP switches: 1.90 to 1.104 only.
    let llc = json!({"port_id": "p1", "vtep-logical-switch": "ls", "vtep-physical-switch": "ps"});
    let r = app
        .call(Method::POST, "/v1/ports", Some("1.104"),
              Some(json!({"node_uuid": n["uuid"], "address": "52:54:00:00:03:01", "local_link_connection": llc})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["local_link_connection"], llc);
    let port = r.body["uuid"].as_str().unwrap().to_string();
    let r = app
        .call(
            Method::GET,
            &format!("/v1/ports/{port}"),
            Some("1.105"),
            None,
        )
        .await;
    assert_eq!(
        r.body["local_link_connection"],
        json!({}),
        "hidden from 1.105"
    );
    let r = app
        .call(Method::POST, "/v1/ports", Some("1.105"),
              Some(json!({"node_uuid": n["uuid"], "address": "52:54:00:00:03:02", "local_link_connection": llc})))
        .await;
    assert_eq!(r.status, StatusCode::NOT_ACCEPTABLE, "{}", r.body);
    // disable_ramdisk: cleaning from 1.70, servicing from 1.108.
    for (target, version, extra) in [
        ("clean", "1.69", json!({"clean_steps": []})),
        ("service", "1.107", json!({"service_steps": []})),
    ] {
        let mut body = json!({"target": target, "disable_ramdisk": true});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let r = app
            .call(
                Method::PUT,
                "/v1/nodes/g/states/provision",
                Some(version),
                Some(body),
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_ACCEPTABLE, "{target}: {}", r.body);
        assert_eq!(
            r.fault(),
            "disable_ramdisk is not acceptable in this API version"
        );
    }
    // Aborting a deployment waiting for its agent needs 1.110.
    app.store
        .store
        .create_node(ferric_core::NewNode {
            name: Some("dw".into()),
            driver: "fake-hardware".into(),
            provision_state: Some(ferric_core::ProvisionState::DeployWait),
            ..Default::default()
        })
        .await
        .unwrap();
    let abort = json!({"target": "abort"});
    let r = app
        .call(
            Method::PUT,
            "/v1/nodes/dw/states/provision",
            Some("1.109"),
            Some(abort.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_ACCEPTABLE, "{}", r.body);
    assert_eq!(app.node("dw").await["provision_state"], "wait call-back");
    let r = app
        .call(
            Method::PUT,
            "/v1/nodes/dw/states/provision",
            Some("1.110"),
            Some(abort),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    until(&app, "dw", |n| n["provision_state"] == "deploy failed").await;
}

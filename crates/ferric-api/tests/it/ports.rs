//! Ports over real HTTP (Ironic 39's `/v1/ports`), on SQLite and, when
//! `FERRIC_TEST_PG_URL` is set, PostgreSQL.

use crate::common::{App, Options};
use ferric_core::{NewNode, ProvisionState};
use ferric_store::testing::Engine;
use ferric_store::Store;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;
use uuid::Uuid;

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
    /// A node straight in the store, in provision state `state`.
    async fn node_in(&self, name: &str, state: ProvisionState) -> Uuid {
        self.store
            .store
            .create_node(NewNode {
                name: Some(name.into()),
                driver: "fake-hardware".into(),
                provision_state: Some(state),
                ..Default::default()
            })
            .await
            .unwrap()
            .uuid
    }

    async fn port(&self, node: Uuid, mac: &str) -> Value {
        let r = self
            .send(
                Method::POST,
                "/v1/ports",
                json!({"node_uuid": node, "address": mac}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.body
    }
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crud_with_ironics_fields_and_versions() {
    for app in engines().await {
        let node = app.node_in("n1", ProvisionState::Enroll).await;
        let r = app
            .send(
                Method::POST,
                "/v1/ports",
                json!({
                    "node_uuid": node, "address": "52:54:00:AB:CD:01", "name": "eth0",
                    "pxe_enabled": "false", "physical_network": "physnet1",
                    "local_link_connection": {"port_id": "Ethernet1/1", "switch_id": "AA:BB:CC:DD:EE:FF", "switch_info": "sw1"},
                    "extra": {"k": "v"}
                }),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let p = r.body.clone();
        let uuid = p["uuid"].as_str().unwrap().to_string();
        assert_eq!(
            r.header("location").unwrap(),
            format!("{}/v1/ports/{uuid}", app.base)
        );
        // Latest (1.115): every field.
        assert_eq!(
            keys(&p),
            set(&[
                "uuid",
                "address",
                "node_uuid",
                "portgroup_uuid",
                "local_link_connection",
                "pxe_enabled",
                "physical_network",
                "internal_info",
                "extra",
                "is_smartnic",
                "name",
                "description",
                "vendor",
                "category",
                "available_for_dynamic_portgroup",
                "created_at",
                "updated_at",
                "links"
            ])
        );
        assert_eq!(
            p["address"], "52:54:00:ab:cd:01",
            "MACs are stored lower case"
        );
        assert_eq!(p["local_link_connection"]["switch_id"], "aa:bb:cc:dd:ee:ff");
        assert_eq!(p["pxe_enabled"], false);
        assert_eq!(p["is_smartnic"], false);
        assert_eq!(p["internal_info"], json!({}));
        assert_eq!(p["portgroup_uuid"], Value::Null);
        assert_eq!(p["updated_at"], Value::Null);
        assert_eq!(
            p["links"][0]["href"],
            format!("{}/v1/ports/{uuid}", app.base)
        );
        // Fields appear at their versions.
        let old = app
            .at(Method::GET, &format!("/v1/ports/{uuid}"), "1.18", None)
            .await;
        assert_eq!(
            keys(&old.body),
            set(&[
                "uuid",
                "address",
                "node_uuid",
                "internal_info",
                "extra",
                "created_at",
                "updated_at",
                "links"
            ])
        );
        let v87 = app
            .at(Method::GET, &format!("/v1/ports/{uuid}"), "1.87", None)
            .await;
        assert!(!v87.body.as_object().unwrap().contains_key("name"));
        assert!(v87.body.as_object().unwrap().contains_key("is_smartnic"));
        // By name (1.88), not before.
        assert_eq!(app.get("/v1/ports/eth0").await.body["uuid"], uuid.as_str());
        let r = app.at(Method::GET, "/v1/ports/eth0", "1.87", None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(r.fault(), "Port eth0 could not be found.");
        // fields, and a field above the version is 406.
        let r = app
            .get(&format!("/v1/ports/{uuid}?fields=address,extra"))
            .await;
        assert_eq!(keys(&r.body), set(&["address", "extra", "links"]));
        let r = app
            .at(
                Method::GET,
                &format!("/v1/ports/{uuid}?fields=name"),
                "1.87",
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_ACCEPTABLE);
        let r = app.get(&format!("/v1/ports/{uuid}?fields=nope")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.fault(), "Field(s) \"nope\" are not valid");

        // PATCH.
        let r = app
            .send(
                Method::PATCH,
                &format!("/v1/ports/{uuid}"),
                json!([
                    {"op": "replace", "path": "/address", "value": "52:54:00:AB:CD:02"},
                    {"op": "add", "path": "/extra/x", "value": 1},
                    {"op": "remove", "path": "/physical_network"},
                    {"op": "remove", "path": "/pxe_enabled"}
                ]),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["address"], "52:54:00:ab:cd:02");
        assert_eq!(r.body["extra"], json!({"k": "v", "x": 1}));
        assert_eq!(r.body["physical_network"], Value::Null);
        assert_eq!(
            r.body["pxe_enabled"], true,
            "removing resets to the default"
        );
        assert!(r.body["updated_at"].is_string());
        for (patch, status, msg) in [
            (json!([{"op": "replace", "path": "/uuid", "value": "x"}]), 400,
             "Cannot patch /uuid. Only the following can be updated: address, extra, is_smartnic, local_link_connection, node_ident, node_uuid, physical_network, portgroup_uuid, pxe_enabled, name, description, vendor, category, available_for_dynamic_portgroup"),
            (json!([{"op": "replace", "path": "/address", "value": "zz"}]), 400,
             "Expected valid MAC address for address: zz"),
            (json!([{"op": "replace", "path": "/physical_network", "value": ""}]), 400,
             "A non-empty value is required when setting physical_network"),
            (json!([{"op": "replace", "path": "/node_uuid", "value": Uuid::nil()}]), 400,
             "Node 00000000-0000-0000-0000-000000000000 could not be found."),
            (json!([{"op": "add", "path": "/foo", "value": 1}]), 400,
             "Cannot patch /foo. Only the following can be updated: address, extra, is_smartnic, local_link_connection, node_ident, node_uuid, physical_network, portgroup_uuid, pxe_enabled, name, description, vendor, category, available_for_dynamic_portgroup"),
        ] {
            let before = app.get(&format!("/v1/ports/{uuid}")).await.body;
            let r = app.send(Method::PATCH, &format!("/v1/ports/{uuid}"), patch.clone()).await;
            assert_eq!(r.status.as_u16(), status, "{patch}: {}", r.body);
            assert_eq!(r.fault(), msg, "{patch}");
            assert_eq!(app.get(&format!("/v1/ports/{uuid}")).await.body, before, "nothing changed");
        }
        let r = app
            .at(
                Method::PATCH,
                &format!("/v1/ports/{uuid}"),
                "1.87",
                Some(json!([{"op": "replace", "path": "/name", "value": "x"}])),
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_ACCEPTABLE);

        // DELETE: by UUID only.
        let r = app
            .call(Method::DELETE, "/v1/ports/eth0", Some("latest"), None)
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.fault(), "Expected UUID for port_uuid: eth0");
        let r = app
            .call(
                Method::DELETE,
                &format!("/v1/ports/{uuid}"),
                Some("latest"),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        let r = app.get(&format!("/v1/ports/{uuid}")).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(r.fault(), format!("Port {uuid} could not be found."));
        app.store.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_is_validated_as_ironic_and_changes_nothing_on_refusal() {
    for app in engines().await {
        let node = app.node_in("n1", ProvisionState::Enroll).await;
        app.port(node, "52:54:00:00:00:01").await;
        let missing = Uuid::new_v4();
        for (body, status, msg) in [
            (json!({"node_uuid": node, "address": "52:54:00:00:00:01"}), 409,
             "A port with MAC address 52:54:00:00:00:01 already exists.".to_string()),
            (json!({"node_uuid": node, "address": "52:54:00:00:00:0G"}), 400,
             "Expected valid MAC address for address: 52:54:00:00:00:0G".to_string()),
            (json!({"node_uuid": node}), 400,
             "Schema error for port: 'address' is a required property".to_string()),
            (json!({"node_uuid": missing, "address": "52:54:00:00:00:02"}), 400,
             format!("Node {missing} could not be found.")),
            (json!({"node_uuid": "nope", "address": "52:54:00:00:00:02"}), 400,
             "Expected UUID for node_uuid: nope".to_string()),
            (json!({"node_uuid": node, "address": "52:54:00:00:00:02", "bogus": 1}), 400,
             "Schema error for port: Additional properties are not allowed ('bogus' was unexpected)".to_string()),
            (json!({"node_uuid": node, "address": "52:54:00:00:00:02", "is_smartnic": true,
                    "local_link_connection": {"port_id": "p", "switch_id": "52:54:00:00:00:09"}}), 400,
             "Smart NIC port must have port_id and hostname in local_link_connection".to_string()),
            (json!({"node_uuid": node, "address": "52:54:00:00:00:02", "physical_network": ""}), 400,
             "A non-empty value is required when setting physical_network".to_string()),
            (json!({"node_uuid": node, "address": "52:54:00:00:00:02", "local_link_connection": {"port_id": "p"}}), 400,
             "Schema error for local_link_connection: {\"port_id\":\"p\"} is not valid under any of the given schemas".to_string()),
            (json!({"node_uuid": node, "address": "52:54:00:00:00:02", "portgroup_uuid": missing}), 400,
             format!("Portgroup {missing} could not be found.")),
            (json!({"node_uuid": node, "address": "52:54:00:00:00:02", "description": "x".repeat(256)}), 400,
             format!("Schema error for port: '{}' is too long", "x".repeat(256))),
        ] {
            let r = app.send(Method::POST, "/v1/ports", body.clone()).await;
            assert_eq!(r.status.as_u16(), status, "{body}: {}", r.body);
            assert_eq!(r.fault(), msg, "{body}");
            assert!(r.header("retry-after").is_none());
        }
        // node_ident (1.94) names the node by name; not before.
        let r = app
            .at(
                Method::POST,
                "/v1/ports",
                "1.94",
                Some(json!({"node_ident": "n1", "address": "52:54:00:00:00:03"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        assert_eq!(r.body["node_uuid"], node.to_string());
        let r = app
            .at(
                Method::POST,
                "/v1/ports",
                "1.93",
                Some(json!({"node_ident": "n1", "address": "52:54:00:00:00:04"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_ACCEPTABLE);
        // A field above the request's version is 406.
        let r = app
            .at(
                Method::POST,
                "/v1/ports",
                "1.87",
                Some(json!({"node_uuid": node, "address": "52:54:00:00:00:05", "name": "x"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_ACCEPTABLE);
        let all = app.get("/v1/ports").await.body["ports"]
            .as_array()
            .unwrap()
            .len();
        assert_eq!(all, 2, "only the two good creates");
        app.store.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_creates_of_one_mac_have_one_winner() {
    for app in engines().await {
        let node = app.node_in("n1", ProvisionState::Enroll).await;
        let mut tasks = Vec::new();
        for i in 0..16 {
            let http = app.http.clone();
            let base = app.base.clone();
            tasks.push(tokio::spawn(async move {
                crate::common::json(
                    &http,
                    &base,
                    Method::POST,
                    "/v1/ports",
                    json!({"node_uuid": node, "address": "52:54:00:12:34:56", "extra": {"i": i}}),
                )
                .await
            }));
        }
        let mut statuses = Vec::new();
        for t in tasks {
            let (status, body) = t.await.unwrap();
            if status == StatusCode::CONFLICT {
                let inner: Value =
                    serde_json::from_str(body["error_message"].as_str().unwrap()).unwrap();
                assert_eq!(
                    inner["faultstring"],
                    "A port with MAC address 52:54:00:12:34:56 already exists."
                );
            }
            statuses.push(status.as_u16());
        }
        statuses.sort();
        assert_eq!(statuses[0], 201);
        assert!(statuses[1..].iter().all(|s| *s == 409), "{statuses:?}");
        app.store.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lists_filter_page_and_nest() {
    for app in engines().await {
        let a = app.node_in("a", ProvisionState::Enroll).await;
        let b = app.node_in("b", ProvisionState::Enroll).await;
        let mut on_a = BTreeSet::new();
        for i in 0..5 {
            on_a.insert(
                app.port(a, &format!("52:54:00:00:0a:{i:02x}")).await["uuid"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
        app.port(b, "52:54:00:00:0b:01").await;
        // Default list: uuid, address, links.
        let l = app.get("/v1/ports").await.body;
        assert_eq!(l["ports"].as_array().unwrap().len(), 6);
        assert_eq!(keys(&l["ports"][0]), set(&["uuid", "address", "links"]));
        assert!(l.get("next").is_none());
        // Detail, and detail=true.
        let d = app.get("/v1/ports/detail").await.body;
        assert!(keys(&d["ports"][0]).contains("local_link_connection"));
        let d2 = app.get("/v1/ports?detail=true").await.body;
        assert_eq!(d["ports"], d2["ports"]);
        // Filters: node by name and UUID, node_uuid, address (normalised).
        for path in [
            "/v1/ports?node=a".to_string(),
            format!("/v1/ports?node={a}"),
            format!("/v1/ports?node_uuid={a}"),
            "/v1/nodes/a/ports".to_string(),
            format!("/v1/nodes/{a}/ports/detail"),
        ] {
            let got: BTreeSet<String> = app.get(&path).await.body["ports"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["uuid"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(got, on_a, "{path}");
        }
        let r = app.get("/v1/ports?address=52:54:00:00:0B:01").await.body;
        assert_eq!(r["ports"].as_array().unwrap().len(), 1);
        assert_eq!(r["ports"][0]["address"], "52:54:00:00:0b:01");
        let r = app.get("/v1/ports?address=nope").await;
        assert_eq!(r.fault(), "Expected valid MAC address for address: nope");
        let r = app.get("/v1/nodes/zzz/ports").await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(r.fault(), "Node zzz could not be found.");
        let r = app.get("/v1/ports?node=a&portgroup=x").await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let r = app.get("/v1/ports?sort_key=extra").await;
        assert_eq!(
            r.fault(),
            "The sort_key value extra is an invalid field for sorting"
        );
        // Pages of 2 by address, following `next`, in both directions.
        for dir in ["asc", "desc"] {
            let mut url = format!("/v1/ports?limit=2&sort_key=address&sort_dir={dir}");
            let mut seen = Vec::new();
            loop {
                let page = app.get(&url).await.body;
                for p in page["ports"].as_array().unwrap() {
                    seen.push(p["address"].as_str().unwrap().to_string());
                }
                match page["next"].as_str() {
                    Some(n) => url = n.strip_prefix(&app.base).unwrap().to_string(),
                    None => break,
                }
            }
            let mut sorted = seen.clone();
            sorted.sort();
            if dir == "desc" {
                sorted.reverse();
            }
            assert_eq!(seen, sorted);
            assert_eq!(seen.len(), 6);
        }
        // conductor_groups needs 1.99: 406 below.
        let r = app
            .call(
                Method::GET,
                "/v1/ports?conductor_groups=x",
                Some("1.98"),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_ACCEPTABLE);
        app.store.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conductor_checks_under_the_node_lock() {
    for app in engines().await {
        let avail = app.node_in("avail", ProvisionState::Available).await;
        let active = app.node_in("active", ProvisionState::Active).await;
        let p = app.port(avail, "52:54:00:00:0c:01").await;
        let q = app.port(active, "52:54:00:00:0c:02").await;
        let (pu, qu) = (p["uuid"].as_str().unwrap(), q["uuid"].as_str().unwrap());
        // Connectivity fields only in enroll/inspecting/inspect wait/manageable or maintenance.
        let r = app
            .send(
                Method::PATCH,
                &format!("/v1/ports/{pu}"),
                json!([{"op": "replace", "path": "/pxe_enabled", "value": false}]),
            )
            .await;
        assert_eq!(r.status, StatusCode::CONFLICT);
        assert_eq!(
            r.fault(),
            format!("Port {pu} can not have any connectivity attributes (portgroup_id, pxe_enabled, local_link_connection, physical_network) updated unless node {avail} is in a enroll, inspecting, inspect wait, manageable state or in maintenance mode. The current state is available.")
        );
        // extra may change.
        let r = app
            .send(
                Method::PATCH,
                &format!("/v1/ports/{pu}"),
                json!([{"op": "add", "path": "/extra/a", "value": 1}]),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        // The hardware address of an active node's port is fixed.
        let r = app
            .send(
                Method::PATCH,
                &format!("/v1/ports/{qu}"),
                json!([{"op": "replace", "path": "/address", "value": "52:54:00:00:0c:03"}]),
            )
            .await;
        assert_eq!(r.status, StatusCode::CONFLICT);
        assert_eq!(
            r.fault(),
            format!("Cannot update hardware address for port {qu} as node {active} is active or has instance UUID assigned")
        );
        // A port bound to a VIF is not deleted.
        let r = app
            .send(
                Method::PATCH,
                &format!("/v1/ports/{pu}"),
                json!([{"op": "add", "path": "/extra/vif_port_id", "value": "vif-1"}]),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        let r = app
            .call(
                Method::DELETE,
                &format!("/v1/ports/{pu}"),
                Some("latest"),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::CONFLICT);
        assert_eq!(
            r.fault(),
            format!("Cannot delete the port {pu} as it is bound to VIF vif-1 for use.")
        );
        // A held lock: the write waits, then answers 409 with Retry-After.
        let task = app
            .tm
            .acquire(avail)
            .purpose("test")
            .exclusive()
            .await
            .unwrap();
        let r = app
            .send(
                Method::PATCH,
                &format!("/v1/ports/{pu}"),
                json!([{"op": "add", "path": "/extra/b", "value": 2}]),
            )
            .await;
        assert_eq!(r.status, StatusCode::CONFLICT);
        assert!(r.header("retry-after").is_some());
        task.release().await.unwrap();
        assert!(app.get(&format!("/v1/ports/{pu}")).await.body["extra"]
            .get("b")
            .is_none());
        app.store.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_deletion_takes_its_ports_and_the_feed_says_so() {
    for app in engines().await {
        let node = app.node_in("gone", ProvisionState::Enroll).await;
        let keep = app.node_in("kept", ProvisionState::Enroll).await;
        let since = app.get("/v1/nodes/changes").await.body["revision"]
            .as_i64()
            .unwrap();
        let p = app.port(node, "52:54:00:00:0d:01").await;
        let k = app.port(keep, "52:54:00:00:0d:02").await;
        let r = app
            .call(Method::DELETE, "/v1/nodes/gone", Some("latest"), None)
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        assert_eq!(
            app.get(&format!("/v1/ports/{}", p["uuid"].as_str().unwrap()))
                .await
                .status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            app.get(&format!("/v1/ports/{}", k["uuid"].as_str().unwrap()))
                .await
                .status,
            StatusCode::OK
        );
        // Old consumers see nodes only, unchanged; the revision moves past ports.
        let feed = app
            .get(&format!("/v1/nodes/changes?since={since}"))
            .await
            .body;
        let entries = feed["changes"].as_array().unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0]["kind"], "deleted");
        assert!(entries[0].get("resource").is_none());
        let all = app
            .get(&format!("/v1/nodes/changes?since={since}&resource=all"))
            .await
            .body;
        assert_eq!(all["revision"], feed["revision"]);
        let seen: Vec<(String, String, String)> = all["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["resource"].as_str().unwrap().into(),
                    c["kind"].as_str().unwrap().into(),
                    c["uuid"].as_str().unwrap().into(),
                )
            })
            .collect();
        let (pu, ku) = (
            p["uuid"].as_str().unwrap().to_string(),
            k["uuid"].as_str().unwrap().to_string(),
        );
        assert_eq!(
            seen,
            vec![
                ("port".into(), "created".into(), pu.clone()),
                ("port".into(), "created".into(), ku),
                ("port".into(), "deleted".into(), pu),
                ("node".into(), "deleted".into(), node.to_string()),
            ]
        );
        let created = &all["changes"][0];
        assert_eq!(created["port"]["address"], "52:54:00:00:0d:01");
        assert_eq!(created["node_uuid"], node.to_string());
        assert_eq!(all["changes"][2]["port"], Value::Null);
        let ports_only = app
            .get(&format!("/v1/nodes/changes?since={since}&resource=port"))
            .await
            .body;
        assert_eq!(ports_only["changes"].as_array().unwrap().len(), 3);
        let r = app.get("/v1/nodes/changes?resource=bogus").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        app.store.cleanup().await;
    }
}

/// A port moved to another node takes that node's lock too, and the move
/// is checked against the node it goes to (Ironic's conductor locks and
/// checks the new node): a held lock on the new node is a 409 NodeLocked
/// that changes nothing, an active new node refuses the address change.
#[tokio::test]
async fn moving_a_port_locks_and_checks_the_new_node() {
    for app in engines().await {
        let from = app.node_in("from", ProvisionState::Manageable).await;
        let to = app.node_in("to", ProvisionState::Manageable).await;
        let active = app.node_in("busy", ProvisionState::Active).await;
        let p = app.port(from, "52:54:00:00:0d:01").await;
        let pu = p["uuid"].as_str().unwrap();
        let path = format!("/v1/ports/{pu}");
        let holder = app
            .tm
            .acquire(to)
            .purpose("test holds the new node")
            .exclusive()
            .await
            .unwrap();
        let r = app
            .send(
                Method::PATCH,
                &path,
                json!([{"op": "replace", "path": "/node_uuid", "value": to}]),
            )
            .await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
        assert!(r.headers.contains_key("retry-after"), "{:?}", r.headers);
        assert_eq!(app.get(&path).await.body["node_uuid"], json!(from));
        holder.release().await.unwrap();
        // To an active node with a new address: refused by the new node's state.
        let r = app
            .send(
                Method::PATCH,
                &path,
                json!([
                    {"op": "replace", "path": "/node_uuid", "value": active},
                    {"op": "replace", "path": "/address", "value": "52:54:00:00:0d:02"}
                ]),
            )
            .await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
        assert!(r.fault().contains(&active.to_string()), "{}", r.fault());
        assert_eq!(app.get(&path).await.body["node_uuid"], json!(from));
        // Unlocked and manageable: moved, and both locks are free again.
        let r = app
            .send(
                Method::PATCH,
                &path,
                json!([{"op": "replace", "path": "/node_uuid", "value": to}]),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["node_uuid"], json!(to));
        for n in [from, to] {
            let node = app.get(&format!("/v1/nodes/{n}")).await;
            assert_eq!(node.body["reservation"], json!(null), "{n}");
        }
    }
}

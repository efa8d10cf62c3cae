//! Portgroups over real HTTP (Ironic 39's `/v1/portgroups`, 1.23+), and
//! ports as their members.

use crate::common::{App, Options};
use ferric_core::{NewNode, ProvisionState};
use ferric_store::testing::Engine;
use ferric_store::Store;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use uuid::Uuid;

async fn engines() -> Vec<App> {
    let mut apps = vec![Options::new().spawn().await.unwrap()];
    if let Some(pg) = Options::new().engine(Engine::Postgres).spawn().await {
        apps.push(pg);
    }
    apps
}

async fn node(app: &App, name: &str) -> Uuid {
    app.store
        .store
        .create_node(NewNode {
            name: Some(name.into()),
            driver: "fake-hardware".into(),
            provision_state: Some(ProvisionState::Enroll),
            ..Default::default()
        })
        .await
        .unwrap()
        .uuid
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn portgroup_crud_members_and_ironics_refusals() {
    for app in engines().await {
        let a = node(&app, "a").await;
        let b = node(&app, "b").await;
        // Below 1.23 there are no portgroups.
        let r = app
            .call(Method::GET, "/v1/portgroups", Some("1.22"), None)
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        let r = app
            .send(
                Method::POST,
                "/v1/portgroups",
                json!({"node_uuid": a, "address": "52:54:00:AA:00:01", "name": "bond0", "standalone_ports_supported": false}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let pg = r.body.clone();
        let pgu = pg["uuid"].as_str().unwrap().to_string();
        let expected: BTreeSet<String> = [
            "uuid",
            "address",
            "name",
            "node_uuid",
            "standalone_ports_supported",
            "internal_info",
            "extra",
            "mode",
            "properties",
            "physical_network",
            "category",
            "dynamic_portgroup",
            "created_at",
            "updated_at",
            "links",
            "ports",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(keys(&pg), expected);
        assert_eq!(pg["address"], "52:54:00:aa:00:01");
        assert_eq!(pg["mode"], "active-backup");
        assert_eq!(
            pg["ports"][0]["href"],
            format!("{}/v1/portgroups/{pgu}/ports", app.base)
        );
        // mode/properties appear at 1.26.
        let old = app
            .call(Method::GET, "/v1/portgroups/bond0", Some("1.25"), None)
            .await;
        assert!(!keys(&old.body).contains("mode"));
        // Refusals, nothing created.
        for (body, status, msg) in [
            (
                json!({"node_uuid": a, "address": "52:54:00:aa:00:01"}),
                409,
                "A portgroup with MAC address 52:54:00:aa:00:01 already exists.".to_string(),
            ),
            (
                json!({"node_uuid": b, "name": "bond0"}),
                409,
                "A portgroup with name bond0 already exists.".to_string(),
            ),
            (
                json!({"node_uuid": a, "name": "bad name"}),
                400,
                "Cannot create portgroup with invalid name 'bad name'".to_string(),
            ),
            (
                json!({"address": "52:54:00:aa:00:09"}),
                400,
                "Schema error for portgroup: 'node_uuid' is a required property".to_string(),
            ),
            (
                json!({"node_uuid": Uuid::nil()}),
                400,
                format!("Node {} could not be found.", Uuid::nil()),
            ),
        ] {
            let r = app.send(Method::POST, "/v1/portgroups", body.clone()).await;
            assert_eq!(r.status.as_u16(), status, "{body}: {}", r.body);
            assert_eq!(r.fault(), msg);
        }
        assert_eq!(
            app.get("/v1/portgroups").await.body["portgroups"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        let l = app.get("/v1/portgroups").await.body;
        assert_eq!(
            keys(&l["portgroups"][0]),
            ["uuid", "address", "name", "links"]
                .iter()
                .map(|s| s.to_string())
                .collect()
        );
        // Ports join it: same node only; pxe_enabled=true refused when standalone ports are not supported.
        let r = app
            .send(
                Method::POST,
                "/v1/ports",
                json!({"node_uuid": b, "address": "52:54:00:aa:01:01", "portgroup_uuid": pgu}),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            r.fault(),
            "Port can not be added to a portgroup belonging to a different node."
        );
        let r = app
            .send(Method::POST, "/v1/ports", json!({"node_uuid": a, "address": "52:54:00:aa:01:01", "portgroup_uuid": pgu, "pxe_enabled": true}))
            .await;
        assert_eq!(r.status, StatusCode::CONFLICT);
        assert_eq!(r.fault(), format!("Port group {pgu} doesn't support standalone ports. This port cannot be created as a member of that portgroup as the port's 'pxe_enabled' field was set to True."));
        let r = app
            .send(Method::POST, "/v1/ports", json!({"node_uuid": a, "address": "52:54:00:aa:01:01", "portgroup_uuid": pgu, "pxe_enabled": false}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let port = r.body["uuid"].as_str().unwrap().to_string();
        assert_eq!(r.body["portgroup_uuid"], pgu.as_str());
        for path in [
            "/v1/portgroups/bond0/ports".to_string(),
            format!("/v1/ports?portgroup={pgu}"),
        ] {
            let ports = app.get(&path).await.body["ports"].clone();
            assert_eq!(ports.as_array().unwrap().len(), 1, "{path}");
            assert_eq!(ports[0]["uuid"], port.as_str());
        }
        let r = app
            .call(
                Method::GET,
                "/v1/portgroups/bond0/ports",
                Some("1.23"),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        // Nested under the node.
        assert_eq!(
            app.get("/v1/nodes/a/portgroups").await.body["portgroups"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            app.get("/v1/nodes/b/portgroups").await.body["portgroups"]
                .as_array()
                .unwrap()
                .len(),
            0
        );
        // PATCH.
        let r = app
            .send(Method::PATCH, "/v1/portgroups/bond0", json!([{"op": "replace", "path": "/mode", "value": "802.3ad"}, {"op": "add", "path": "/properties/miimon", "value": "100"}]))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["mode"], "802.3ad");
        assert_eq!(r.body["properties"], json!({"miimon": "100"}));
        let r = app
            .send(
                Method::PATCH,
                "/v1/portgroups/bond0",
                json!([{"op": "replace", "path": "/node_uuid", "value": b}]),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.fault(), format!("Portgroup {pgu} can not be associated with node {a} because there are ports associated with this portgroup."));
        let r = app
            .send(
                Method::PATCH,
                "/v1/portgroups/bond0",
                json!([{"op": "replace", "path": "/name", "value": "bad name"}]),
            )
            .await;
        assert_eq!(
            r.fault(),
            "Portgroup bond0: Cannot change name to invalid name 'bad name'"
        );
        // Delete: refused while it has ports.
        let r = app
            .call(Method::DELETE, "/v1/portgroups/bond0", Some("latest"), None)
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            r.fault(),
            format!("Cannot complete the requested action because portgroup {pgu} contains ports.")
        );
        let r = app
            .send(
                Method::PATCH,
                &format!("/v1/ports/{port}"),
                json!([{"op": "remove", "path": "/portgroup_uuid"}]),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["portgroup_uuid"], Value::Null);
        let r = app
            .call(Method::DELETE, "/v1/portgroups/bond0", Some("latest"), None)
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        let r = app.get(&format!("/v1/portgroups/{pgu}")).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(r.fault(), format!("Portgroup {pgu} could not be found."));
        app.store.cleanup().await;
    }
}

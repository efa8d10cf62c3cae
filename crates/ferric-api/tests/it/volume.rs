//! Volume connectors and targets over real HTTP (Ironic 39's `/v1/volume`,
//! 1.32): CRUD, Ironic's refusals, the node's power state and lock on
//! writes, nested lists, removal with the node.

use crate::common::{App, Options, Reply};
use ferric_store::testing::Engine;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use uuid::Uuid;

async fn engines() -> Vec<App> {
    let mut apps = vec![Options::new().spawn().await.unwrap()];
    if let Some(pg) = Options::new().engine(Engine::Postgres).spawn().await {
        apps.push(pg);
    }
    apps
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

fn assert_fault(r: &Reply, status: u16, message: &str) {
    assert_eq!(r.status.as_u16(), status, "{}", r.body);
    assert_eq!(r.fault(), message);
}

async fn node(app: &App, name: &str) -> String {
    let r = app
        .send(
            Method::POST,
            "/v1/nodes",
            json!({"driver": "fake-hardware", "name": name}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body["uuid"].as_str().unwrap().to_string()
}

async fn settle_power(app: &App, name: &str, power: &str) {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let n = app.node(name).await;
        if n["power_state"] == power
            && n["target_power_state"].is_null()
            && n["reservation"].is_null()
        {
            return;
        }
        assert!(Instant::now() < until, "never {power}: {n}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn volume_connectors_and_targets() {
    for app in engines().await {
        let n1 = node(&app, "v1").await;
        let n2 = node(&app, "v2").await;

        // The root and the version gate.
        let r = app.at(Method::GET, "/v1/volume", "1.32", None).await;
        assert_eq!(keys(&r.body), ["connectors", "links", "targets"]);
        assert_eq!(
            r.body["connectors"][0]["href"],
            format!("{}/v1/volume/connectors", app.base)
        );
        let r = app.get("/v1/nodes/v1/volume").await;
        assert_eq!(
            r.body["targets"][0]["href"],
            format!("{}/v1/nodes/v1/volume/targets", app.base)
        );
        for path in ["/v1/volume", "/v1/volume/connectors", "/v1/volume/targets"] {
            assert_fault(
                &app.at(Method::GET, path, "1.31", None).await,
                404,
                "The API is not supported for this version",
            );
        }

        // Connectors.
        let cid = Uuid::new_v4();
        let r = app
            .send(Method::POST, "/v1/volume/connectors",
                  json!({"uuid": cid, "node_uuid": n1, "type": "iqn", "connector_id": "iqn.2017-07.org.openstack:01:d9a51732c3f"}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        assert_eq!(
            r.header("location").unwrap(),
            format!("{}/v1/volume/connectors/{cid}", app.base)
        );
        assert_eq!(
            keys(&r.body),
            [
                "connector_id",
                "created_at",
                "extra",
                "links",
                "node_uuid",
                "type",
                "updated_at",
                "uuid"
            ]
        );
        let missing = Uuid::new_v4();
        for (body, status, msg) in [
            (json!({"node_uuid": n2, "type": "iqn", "connector_id": "iqn.2017-07.org.openstack:01:d9a51732c3f"}), 409,
             "A volume connector with type iqn and connector ID iqn.2017-07.org.openstack:01:d9a51732c3f already exists.".to_string()),
            (json!({"uuid": cid, "node_uuid": n1, "type": "ip", "connector_id": "192.0.2.1"}), 409,
             format!("A volume connector with UUID {cid} already exists.")),
            (json!({"node_uuid": missing, "type": "ip", "connector_id": "192.0.2.1"}), 400,
             format!("Invalid input for field/attribute node_uuid. Value: '{missing}'. ")),
            (json!({"node_uuid": "v1", "type": "ip", "connector_id": "192.0.2.1"}), 400,
             "Expected UUID for node_uuid: v1".into()),
            (json!({"node_uuid": n1, "type": "ip"}), 400, "Schema error for connector: 'connector_id' is a required property".into()),
            (json!({"node_uuid": n1, "type": 1, "connector_id": "x"}), 400, "Schema error for connector: 1 is not of type 'string'".into()),
            (json!({"node_uuid": n1, "type": "ip", "connector_id": "x", "name": "y"}), 400,
             "Schema error for connector: Additional properties are not allowed ('name' was unexpected)".into()),
        ] {
            let r = app.send(Method::POST, "/v1/volume/connectors", body.clone()).await;
            assert_fault(&r, status, &msg);
        }
        // Same connector_id, other type: fine.
        let r = app
            .send(Method::POST, "/v1/volume/connectors",
                  json!({"node_uuid": n2, "type": "ip", "connector_id": "iqn.2017-07.org.openstack:01:d9a51732c3f"}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let r = app
            .send(
                Method::POST,
                "/v1/nodes/v1/volume/connectors",
                json!({"node_uuid": n1, "type": "mac", "connector_id": "52:54:00:00:00:01"}),
            )
            .await;
        assert_fault(&r, 400, "Malformed request URI.");

        let l = app.get("/v1/volume/connectors").await.body;
        assert_eq!(l["connectors"].as_array().unwrap().len(), 2);
        assert_eq!(
            keys(&l["connectors"][0]),
            ["connector_id", "links", "node_uuid", "type", "uuid"]
        );
        let l = app
            .get("/v1/volume/connectors?node=v2&detail=True")
            .await
            .body;
        assert_eq!(l["connectors"].as_array().unwrap().len(), 1);
        assert_eq!(l["connectors"][0]["type"], "ip");
        assert_eq!(keys(&l["connectors"][0]).len(), 8);
        let l = app.get("/v1/nodes/v1/volume/connectors").await.body;
        assert_eq!(l["connectors"][0]["uuid"], json!(cid));
        assert_fault(
            &app.get("/v1/nodes/nope/volume/connectors").await,
            404,
            "Node nope could not be found.",
        );
        assert_fault(
            &app.get("/v1/volume/connectors?fields=uuid&detail=True")
                .await,
            400,
            "Can't fetch a subset of fields with 'detail' set",
        );
        assert_fault(
            &app.get(&format!("/v1/volume/connectors/{missing}")).await,
            404,
            &format!("Volume connector {missing} could not be found."),
        );

        // Writes need the node powered off (Ironic's conductor check).
        let cpath = format!("/v1/volume/connectors/{cid}");
        let patch = json!([{"op": "replace", "path": "/connector_id", "value": "iqn.new"},
                           {"op": "add", "path": "/extra/a", "value": 1}]);
        let r = app.send(Method::PATCH, &cpath, patch.clone()).await;
        assert_fault(&r, 400, &format!(
            "The requested action \"volume connector update\" can not be performed on node \"{n1}\" while it is in state \"None\"."
        ));
        let r = app
            .send(
                Method::PUT,
                "/v1/nodes/v1/states/power",
                json!({"target": "power off"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
        settle_power(&app, "v1", "power off").await;
        let r = app.send(Method::PATCH, &cpath, patch).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(
            (&r.body["connector_id"], &r.body["extra"]),
            (&json!("iqn.new"), &json!({"a": 1}))
        );
        for (ops, msg) in [
            (json!([{"op": "replace", "path": "/uuid", "value": missing}]),
             "Cannot patch /uuid. Only the following can be updated: connector_id, extra, node_uuid, type".to_string()),
            (json!([{"op": "replace", "path": "/node_uuid", "value": "v2"}]),
             "Expected a UUID for node_uuid, but received v2.".into()),
            (json!([{"op": "replace", "path": "/node_uuid", "value": missing}]),
             format!("Unable to apply the requested node_uuid '{missing}'. Requested value was invalid.")),
            (json!([{"op": "remove", "path": "/type"}]), "Schema error for patch: 'type' is a required property".into()),
        ] {
            assert_fault(&app.send(Method::PATCH, &cpath, ops).await, 400, &msg);
        }

        // Targets: boot_index unique per node.
        let tbody = |node: &str, idx: i64| {
            json!({"node_uuid": node, "volume_type": "iscsi", "boot_index": idx,
                                                  "volume_id": "04452bed-5367-4202-8bf5-de4335ac56d2",
                                                  "properties": {"auth_password": "s3cret", "target_lun": 0}})
        };
        let r = app
            .send(Method::POST, "/v1/volume/targets", tbody(&n1, 0))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        assert_eq!(
            keys(&r.body),
            [
                "boot_index",
                "created_at",
                "extra",
                "links",
                "node_uuid",
                "properties",
                "updated_at",
                "uuid",
                "volume_id",
                "volume_type"
            ]
        );
        assert_eq!(
            r.body["properties"],
            json!({"auth_password": "******", "target_lun": 0})
        );
        let tid = r.body["uuid"].as_str().unwrap().to_string();
        assert_fault(
            &app.send(Method::POST, "/v1/volume/targets", tbody(&n1, 0))
                .await,
            409,
            "A volume target with boot index '0' for the same node already exists.",
        );
        assert_eq!(
            app.send(Method::POST, "/v1/volume/targets", tbody(&n2, 0))
                .await
                .status,
            201
        );
        assert_fault(
            &app.send(Method::POST, "/v1/volume/targets", json!({"node_uuid": n1, "volume_type": "iscsi", "boot_index": "1", "volume_id": "x"})).await,
            400,
            "Schema error for target: '1' is not of type 'integer'",
        );
        let l = app.get("/v1/nodes/v1/volume/targets").await.body;
        assert_eq!(
            keys(&l["targets"][0]),
            [
                "boot_index",
                "links",
                "node_uuid",
                "uuid",
                "volume_id",
                "volume_type"
            ]
        );
        let r = app
            .send(
                Method::PATCH,
                &format!("/v1/volume/targets/{tid}"),
                json!([{"op": "replace", "path": "/boot_index", "value": 1}]),
            )
            .await;
        assert_eq!(r.body["boot_index"], 1, "{}", r.body);

        // Deletion: allowed in enroll whatever the power state.
        let r = app
            .call(
                Method::DELETE,
                &format!("/v1/volume/targets/{tid}"),
                Some("1.32"),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        assert_eq!(
            app.get(&format!("/v1/volume/targets/{tid}")).await.status,
            404
        );

        // Deleting a node deletes its volume resources.
        let r = app
            .call(Method::DELETE, "/v1/nodes/v2", Some("latest"), None)
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
        assert_eq!(
            app.get("/v1/volume/targets").await.body["targets"],
            json!([])
        );
        let l = app.get("/v1/volume/connectors").await.body;
        assert_eq!(l["connectors"].as_array().unwrap().len(), 1, "{l}");
        app.tm.shutdown();
    }
}

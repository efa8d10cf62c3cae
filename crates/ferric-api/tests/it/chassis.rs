//! Chassis over real HTTP (Ironic 39's `/v1/chassis`).

use crate::common::{App, Options};
use ferric_store::testing::Engine;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

async fn engines() -> Vec<App> {
    let mut apps = vec![Options::new().spawn().await.unwrap()];
    if let Some(pg) = Options::new().engine(Engine::Postgres).spawn().await {
        apps.push(pg);
    }
    apps
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chassis_crud_and_ironics_refusals() {
    for app in engines().await {
        let id = Uuid::new_v4();
        let r = app
            .call(
                Method::POST,
                "/v1/chassis",
                Some("1.1"),
                Some(json!({"uuid": id, "description": "rack 1", "extra": {"row": 3}})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        assert_eq!(
            r.header("location").unwrap(),
            format!("{}/v1/chassis/{id}", app.base)
        );
        let mut keys: Vec<&str> = r
            .body
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "created_at",
                "description",
                "extra",
                "links",
                "nodes",
                "updated_at",
                "uuid"
            ]
        );
        assert_eq!(
            r.body["nodes"][0]["href"],
            format!("{}/v1/chassis/{id}/nodes", app.base)
        );
        for (body, status, msg) in [
            (json!({"uuid": id}), 409, format!("A chassis with UUID {id} already exists.")),
            (json!({"description": "x".repeat(256)}), 400, format!("Schema error for chassis: '{}' is too long", "x".repeat(256))),
            (json!({"name": "x"}), 400, "Schema error for chassis: Additional properties are not allowed ('name' was unexpected)".to_string()),
            (json!({"uuid": "nope"}), 400, "Expected UUID for uuid: nope".to_string()),
        ] {
            let r = app.send(Method::POST, "/v1/chassis", body.clone()).await;
            assert_eq!(r.status.as_u16(), status, "{body}");
            assert_eq!(r.fault(), msg);
        }
        app.send(Method::POST, "/v1/chassis", json!({})).await;
        let l = app.get("/v1/chassis").await.body;
        assert_eq!(l["chassis"].as_array().unwrap().len(), 2);
        let mut keys: Vec<&str> = l["chassis"][0]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort();
        assert_eq!(keys, ["description", "links", "uuid"]);
        let page = app.get("/v1/chassis/detail?limit=1").await.body;
        assert_eq!(page["chassis"].as_array().unwrap().len(), 1);
        assert!(page["next"].as_str().unwrap().contains("marker="));
        let r = app
            .send(Method::PATCH, &format!("/v1/chassis/{id}"), json!([{"op": "replace", "path": "/description", "value": "rack 2"}, {"op": "remove", "path": "/extra/row"}]))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["description"], "rack 2");
        assert_eq!(r.body["extra"], json!({}));
        assert!(r.body["updated_at"].is_string());
        let r = app
            .send(
                Method::PATCH,
                &format!("/v1/chassis/{id}"),
                json!([{"op": "add", "path": "/nodes", "value": 1}]),
            )
            .await;
        assert_eq!(
            r.fault(),
            "Cannot patch /nodes. Only the following can be updated: uuid, extra, description"
        );
        let r = app.get("/v1/chassis/not-a-uuid").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.fault(), "Expected UUID for chassis_uuid: not-a-uuid");
        let r = app
            .call(
                Method::DELETE,
                &format!("/v1/chassis/{id}"),
                Some("latest"),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        let r = app.get(&format!("/v1/chassis/{id}")).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(r.fault(), format!("Chassis {id} could not be found."));
        let feed = app.get("/v1/nodes/changes?resource=chassis").await.body;
        let kinds: Vec<&Value> = feed["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| &c["kind"])
            .collect();
        assert_eq!(
            kinds,
            [
                &json!("created"),
                &json!("created"),
                &json!("updated"),
                &json!("deleted")
            ]
        );
        app.store.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_name_existing_chassis_and_are_listed_under_them() {
    for app in engines().await {
        let c = Uuid::new_v4();
        let unknown = Uuid::new_v4();
        let r = app
            .send(
                Method::POST,
                "/v1/nodes",
                json!({"driver": "fake-hardware", "name": "n1", "chassis_uuid": unknown}),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
        assert_eq!(r.fault(), format!("Chassis {unknown} could not be found."));
        let r = app
            .send(Method::POST, "/v1/chassis", json!({"uuid": c}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
        for (name, chassis) in [("n1", Some(c)), ("n2", None), ("n3", None)] {
            let r = app
                .send(
                    Method::POST,
                    "/v1/nodes",
                    json!({"driver": "fake-hardware", "name": name, "chassis_uuid": chassis}),
                )
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        }
        let patch = |ident: &str, version: &str, ops: Value| {
            let path = format!("/v1/nodes/{ident}");
            let app = &app;
            let version = version.to_string();
            async move {
                app.call(Method::PATCH, &path, Some(&version), Some(ops))
                    .await
            }
        };
        let r = patch(
            "n2",
            "latest",
            json!([{"op": "add", "path": "/chassis_uuid", "value": unknown}]),
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
        assert_eq!(r.fault(), format!("Chassis {unknown} could not be found."));
        assert!(app.node("n2").await["chassis_uuid"].is_null());
        let r = patch(
            "n2",
            "latest",
            json!([{"op": "add", "path": "/chassis_uuid", "value": c}]),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        // Deletion refused while nodes belong to it (Ironic's ChassisNotEmpty).
        let r = app
            .call(Method::DELETE, &format!("/v1/chassis/{c}"), None, None)
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            r.fault(),
            format!("Cannot complete the requested action because chassis {c} contains nodes.")
        );
        // The chassis' nodes, as the node list filtered on it.
        let names = |v: &Value| -> Vec<String> {
            let mut n: Vec<String> = v["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["name"].as_str().unwrap().to_string())
                .collect();
            n.sort();
            n
        };
        let r = app.get(&format!("/v1/chassis/{c}/nodes")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(names(&r.body), ["n1", "n2"]);
        assert!(r.body["nodes"][0].get("driver").is_none());
        let r = app.get(&format!("/v1/chassis/{c}/nodes/detail")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(names(&r.body), ["n1", "n2"]);
        assert_eq!(r.body["nodes"][0]["driver"], "fake-hardware");
        assert_eq!(r.body["nodes"][0]["chassis_uuid"], json!(c));
        let r = app.get(&format!("/v1/chassis/{c}/nodes?limit=1")).await;
        assert_eq!(r.body["nodes"].as_array().unwrap().len(), 1);
        assert!(r.body["next"].as_str().unwrap().contains("marker="));
        let r = app.get(&format!("/v1/nodes?chassis_uuid={c}")).await;
        assert_eq!(names(&r.body), ["n1", "n2"]);
        for path in [
            format!("/v1/chassis/{unknown}/nodes"),
            format!("/v1/chassis/{unknown}/nodes/detail"),
            format!("/v1/nodes?chassis_uuid={unknown}"),
            format!("/v1/nodes/detail?chassis_uuid={unknown}"),
        ] {
            let r = app.get(&path).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
            assert_eq!(r.fault(), format!("Chassis {unknown} could not be found."));
        }
        let r = app.get("/v1/chassis/rack/nodes").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.fault(), "Expected UUID for chassis_uuid: rack");
        let r = app.get(&format!("/v1/chassis/{c}/nodes/n1")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.fault(), "Malformed request URI.");
        // Removing a node's chassis needs 1.25.
        let remove = json!([{"op": "remove", "path": "/chassis_uuid"}]);
        let r = patch("n1", "1.24", remove.clone()).await;
        assert_eq!(r.status, StatusCode::NOT_ACCEPTABLE, "{}", r.body);
        assert_eq!(app.node("n1").await["chassis_uuid"], json!(c));
        for n in ["n1", "n2"] {
            let r = patch(n, "1.25", remove.clone()).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        }
        let r = app.get(&format!("/v1/chassis/{c}/nodes")).await;
        assert_eq!(names(&r.body), Vec::<String>::new());
        let r = app
            .call(Method::DELETE, &format!("/v1/chassis/{c}"), None, None)
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
        app.store.cleanup().await;
    }
}

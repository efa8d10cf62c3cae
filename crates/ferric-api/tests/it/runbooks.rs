//! Runbooks over real HTTP (Ironic 39's `/v1/runbooks`, 1.92), and the
//! `runbook` argument of manual cleaning.

use crate::common::{App, Options, Reply};
use ferric_conductor::drivers::fake::FakeHardware;
use ferric_conductor::drivers::Drivers;
use ferric_store::testing::Engine;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;
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

const FIELDS: [&str; 10] = [
    "created_at",
    "disable_ramdisk",
    "extra",
    "links",
    "name",
    "owner",
    "public",
    "steps",
    "updated_at",
    "uuid",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runbooks_crud_and_ironics_refusals() {
    for app in engines().await {
        let id = Uuid::new_v4();
        let steps = json!([
            {"interface": "bios", "step": "apply_configuration", "order": "2",
             "args": {"settings": [], "password": "x"}},
            {"interface": "raid", "step": "delete_configuration", "order": 1},
        ]);
        let body = json!({"uuid": id, "name": "CUSTOM_RB", "steps": steps, "owner": "proj"});
        let r = app
            .at(Method::POST, "/v1/runbooks", "1.91", Some(body.clone()))
            .await;
        assert_fault(&r, 405, "The API version does not allow runbooks");
        let r = app.at(Method::GET, "/v1/runbooks", "1.91", None).await;
        assert_fault(&r, 404, "The API version does not allow runbooks");

        let r = app
            .at(Method::POST, "/v1/runbooks", "1.92", Some(body.clone()))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        assert_eq!(
            r.header("location").unwrap(),
            format!("{}/v1/runbooks/{id}", app.base)
        );
        assert_eq!(keys(&r.body), FIELDS);
        assert_eq!(
            r.body["steps"],
            json!([
                {"interface": "bios", "step": "apply_configuration", "args": {"settings": [], "password": "******"}, "order": 2},
                {"interface": "raid", "step": "delete_configuration", "args": {}, "order": 1},
            ])
        );
        assert_eq!(
            (
                &r.body["owner"],
                &r.body["public"],
                &r.body["disable_ramdisk"]
            ),
            (&json!("proj"), &json!(false), &json!(false))
        );

        let ok_steps = json!([{"interface": "deploy", "step": "erase_devices", "order": 0}]);
        for (body, status, msg) in [
            (json!({"name": "CUSTOM_RB", "steps": ok_steps}), 409,
             "A runbook with name CUSTOM_RB already exists.".to_string()),
            (json!({"uuid": id, "name": "CUSTOM_RB2", "steps": ok_steps}), 409,
             format!("A runbook with UUID {id} already exists.")),
            (json!({"name": "CUSTOM_A"}), 400, "Schema error for runbook: 'steps' is a required property".into()),
            (json!({"name": "CUSTOM_A", "steps": ok_steps, "description": "x"}), 400,
             "Schema error for runbook: Additional properties are not allowed ('description' was unexpected)".into()),
            (json!({"name": "my-runbook", "steps": ok_steps}), 400,
             "Schema error for runbook: 'my-runbook' is not valid under any of the given schemas. Possible root cause: 'my-runbook' does not match '^CUSTOM_[A-Z0-9_]+$'".into()),
            (json!({"name": "CUSTOM_A", "steps": [{"interface": "deploy", "step": "x"}]}), 400,
             "Schema error for runbook: 'order' is a required property".into()),
            (json!({"name": "CUSTOM_A", "steps": [{"interface": "deploy", "step": "x", "order": 1, "priority": 1}]}), 400,
             "Schema error for runbook: Additional properties are not allowed ('priority' was unexpected)".into()),
            (json!({"name": "CUSTOM_A", "steps": ok_steps, "public": "yes"}), 400,
             "Schema error for runbook: 'yes' is not of type 'boolean', 'null'".into()),
        ] {
            let r = app.send(Method::POST, "/v1/runbooks", body.clone()).await;
            assert_fault(&r, status, &msg);
        }

        let l = app.get("/v1/runbooks").await.body;
        assert_eq!(keys(&l["runbooks"][0]), ["links", "name", "uuid"]);
        let l = app.get("/v1/runbooks?detail=True").await.body;
        assert_eq!(keys(&l["runbooks"][0]), FIELDS);
        assert_fault(
            &app.get("/v1/runbooks?sort_key=traits").await,
            400,
            "The sort_key value traits is an invalid field for sorting",
        );
        assert_eq!(
            app.get("/v1/runbooks/CUSTOM_RB").await.body["uuid"],
            json!(id)
        );
        assert_fault(
            &app.get("/v1/runbooks/CUSTOM_NO").await,
            404,
            "Runbook CUSTOM_NO could not be found.",
        );

        // PATCH: a public runbook has no owner; patching public clears it.
        let path = format!("/v1/runbooks/{id}");
        let r = app
            .send(
                Method::PATCH,
                &path,
                json!([{"op": "replace", "path": "/public", "value": true}]),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(
            (&r.body["public"], &r.body["owner"]),
            (&json!(true), &Value::Null)
        );
        let r = app
            .send(
                Method::PATCH,
                &path,
                json!([{"op": "replace", "path": "/owner", "value": "p2"}]),
            )
            .await;
        assert_fault(&r, 400, "Couldn't apply patch '[{'op': 'replace', 'path': '/owner', 'value': 'p2'}]'. Reason: There cannot be an owner for a public runbook");
        let r = app
            .send(
                Method::PATCH,
                &path,
                json!([
                    {"op": "replace", "path": "/public", "value": false},
                    {"op": "replace", "path": "/owner", "value": "p2"},
                    {"op": "replace", "path": "/disable_ramdisk", "value": true},
                ]),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(
            (
                &r.body["public"],
                &r.body["owner"],
                &r.body["disable_ramdisk"]
            ),
            (&json!(false), &json!("p2"), &json!(true))
        );
        let r = app
            .send(
                Method::PATCH,
                &path,
                json!([{"op": "add", "path": "/description", "value": "x"}]),
            )
            .await;
        assert_fault(&r, 400, "Cannot patch /description. Only the following can be updated: disable_ramdisk, extra, name, owner, public, steps");

        let r = app
            .call(Method::DELETE, "/v1/runbooks/CUSTOM_RB", Some("1.92"), None)
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        assert_eq!(app.get(&path).await.status, StatusCode::NOT_FOUND);
        app.tm.shutdown();
    }
}

async fn settle(app: &App, ident: &str, state: &str) -> Value {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let n = app.node(ident).await;
        let ps = n["provision_state"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(!ps.ends_with("failed"), "node failed: {n}");
        if ps == state && n["target_provision_state"].is_null() && n["reservation"].is_null() {
            return n;
        }
        assert!(Instant::now() < until, "node never reached {state}: {n}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn manual_cleaning_runs_an_approved_runbook() {
    let app = Options::new()
        .drivers(Some(Drivers::new().with(Arc::new(FakeHardware::new()))))
        .spawn()
        .await
        .unwrap();
    let apply = |order: u32, value: &str| {
        json!({"interface": "bios", "step": "apply_configuration", "order": order,
               "args": {"settings": [{"name": "BootMode", "value": value}]}})
    };
    // Run by order: the last one written wins.
    let r = app
        .send(
            Method::POST,
            "/v1/runbooks",
            json!({"name": "CUSTOM_BIOS", "steps": [apply(2, "Uefi"), apply(1, "Bios")]}),
        )
        .await;
    // Duplicate interface/step pairs are refused, as Ironic does.
    assert_fault(&r, 400, "Deploy template invalid: Duplicate deploy steps. A template cannot have multiple deploy steps with the same interface and step. Duplicates: interface: bios, step: apply_configuration.");
    let r = app
        .send(
            Method::POST,
            "/v1/runbooks",
            json!({"name": "CUSTOM_BIOS", "steps": [
                apply(2, "Uefi"),
                {"interface": "bios", "step": "factory_reset", "order": 1},
            ]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = app
        .send(
            Method::POST,
            "/v1/nodes",
            json!({"driver": "fake-hardware", "name": "rb"}),
        )
        .await;
    let uuid = r.body["uuid"].as_str().unwrap().to_string();
    let r = app
        .send(
            Method::PUT,
            "/v1/nodes/rb/states/provision",
            json!({"target": "manage"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    settle(&app, "rb", "manageable").await;

    let clean = |body: Value| {
        let app = &app;
        async move {
            app.send(Method::PUT, "/v1/nodes/rb/states/provision", body)
                .await
        }
    };
    // Not approved: the runbook's name is not a node trait.
    let r = clean(json!({"target": "clean", "runbook": "CUSTOM_BIOS"})).await;
    assert_fault(&r, 400, &format!("This runbook has not been approved for use on this node {uuid}. Please ask an administrator to add it to your node traits."));
    let r = app
        .send(Method::PUT, "/v1/nodes/rb/traits/CUSTOM_BIOS", json!(null))
        .await;
    assert!(r.status.is_success(), "{}", r.body);
    let r = clean(json!({"target": "clean", "runbook": "CUSTOM_NOPE"})).await;
    assert_fault(&r, 404, "Runbook CUSTOM_NOPE could not be found.");
    let r = clean(json!({"target": "clean", "runbook": "CUSTOM_BIOS",
                         "clean_steps": [{"interface": "bios", "step": "factory_reset"}]}))
    .await;
    assert_fault(
        &r,
        400,
        "Please provide either \"clean_steps\" or a runbook, but not both.",
    );
    let r = app
        .at(
            Method::PUT,
            "/v1/nodes/rb/states/provision",
            "1.91",
            Some(json!({"target": "clean", "runbook": "CUSTOM_BIOS"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_ACCEPTABLE, "{}", r.body);

    let r = clean(json!({"target": "clean", "runbook": "CUSTOM_BIOS"})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    settle(&app, "rb", "manageable").await;
    // factory_reset (order 1) ran before apply_configuration (order 2).
    let bios = app.get("/v1/nodes/rb/bios").await.body;
    assert_eq!(bios["bios"][0]["name"], "BootMode", "{bios}");
    assert_eq!(bios["bios"][0]["value"], "Uefi", "{bios}");
    app.tm.shutdown();
}

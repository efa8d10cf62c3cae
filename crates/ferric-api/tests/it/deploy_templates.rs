//! Deploy templates over real HTTP (Ironic 39's `/v1/deploy_templates`,
//! 1.55), and their steps applied at deploy time through the steps engine.

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

fn step(interface: &str, name: &str, priority: Value) -> Value {
    json!({"interface": interface, "step": name, "args": {}, "priority": priority})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deploy_templates_crud_and_ironics_refusals() {
    for app in engines().await {
        let id = Uuid::new_v4();
        let body = json!({
            "uuid": id,
            "name": "CUSTOM_HYPERTHREADING_ON",
            "steps": [{"interface": "bios", "step": "apply_configuration",
                       "args": {"settings": [{"name": "LogicalProc", "value": "Enabled"}], "admin_password": "hunter2"},
                       "priority": "150"}],
            "extra": {"a": 1},
            "description": "ignored, as Ironic's model has no column for it"
        });
        // Older than 1.55: 404 on GET, 405 on writes.
        let r = app
            .at(
                Method::POST,
                "/v1/deploy_templates",
                "1.54",
                Some(body.clone()),
            )
            .await;
        assert_fault(&r, 405, "The API version does not allow deploy templates");
        let r = app
            .at(Method::GET, "/v1/deploy_templates", "1.54", None)
            .await;
        assert_fault(&r, 404, "The API version does not allow deploy templates");

        let r = app
            .at(
                Method::POST,
                "/v1/deploy_templates",
                "1.55",
                Some(body.clone()),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        assert_eq!(
            r.header("location").unwrap(),
            format!("{}/v1/deploy_templates/{id}", app.base)
        );
        assert_eq!(
            keys(&r.body),
            [
                "created_at",
                "extra",
                "links",
                "name",
                "steps",
                "updated_at",
                "uuid"
            ]
        );
        // The priority string is stored as an integer; secrets are masked.
        assert_eq!(
            r.body["steps"],
            json!([{"interface": "bios", "step": "apply_configuration",
                    "args": {"settings": [{"name": "LogicalProc", "value": "Enabled"}], "admin_password": "******"},
                    "priority": 150}])
        );
        assert_eq!(r.body["extra"], json!({"a": 1}));

        let ok_steps = json!([step("deploy", "x", json!(10))]);
        let name_err = "Schema error for template: 'custom_x' is not valid under any of the given schemas. Possible root cause: 'custom_x' does not match '^CUSTOM_[A-Z0-9_]+$'";
        for (body, status, msg) in [
            (json!({"name": "CUSTOM_HYPERTHREADING_ON", "steps": ok_steps}), 409,
             "A deploy template with name CUSTOM_HYPERTHREADING_ON already exists.".to_string()),
            (json!({"uuid": id, "name": "CUSTOM_OTHER", "steps": ok_steps}), 409,
             format!("A deploy template with UUID {id} already exists.")),
            (json!({"name": "CUSTOM_A"}), 400, "Schema error for template: 'steps' is a required property".into()),
            (json!({"steps": ok_steps}), 400, "Schema error for template: 'name' is a required property".into()),
            (json!({"name": "CUSTOM_A", "steps": ok_steps, "owner": "x"}), 400,
             "Schema error for template: Additional properties are not allowed ('owner' was unexpected)".into()),
            (json!({"name": "custom_x", "steps": ok_steps}), 400, name_err.into()),
            (json!({"name": "HW_CPU_X86_AVX2", "steps": []}), 400, "Schema error for template: [] should be non-empty".into()),
            (json!({"name": "CUSTOM_A", "steps": [step("network", "x", json!(1))]}), 400,
             "Schema error for template: 'network' is not one of ['vendor', 'power', 'management', 'firmware', 'deploy', 'bios', 'raid']".into()),
            (json!({"name": "CUSTOM_A", "steps": [step("deploy", "x", json!(-1))]}), 400,
             "Schema error for template: -1 is not valid under any of the given schemas. Possible root cause: -1 is less than the minimum of 0".into()),
            (json!({"name": "CUSTOM_A", "steps": [{"interface": "deploy", "step": "x", "priority": 1}]}), 400,
             "Schema error for template: 'args' is a required property".into()),
            (json!({"name": "CUSTOM_A", "steps": [step("deploy", "x", json!(1)), step("deploy", "x", json!(2))]}), 400,
             "Deploy template invalid: Duplicate deploy steps. A template cannot have multiple deploy steps with the same interface and step. Duplicates: interface: deploy, step: x.".into()),
            (json!({"name": "CUSTOM_A", "steps": ok_steps, "uuid": "nope"}), 400, "Expected UUID for uuid: nope".into()),
        ] {
            let r = app.send(Method::POST, "/v1/deploy_templates", body.clone()).await;
            assert_fault(&r, status, &msg);
        }
        // A standard trait is a valid name too.
        let r = app
            .send(
                Method::POST,
                "/v1/deploy_templates",
                json!({"name": "HW_CPU_X86_AVX2", "steps": ok_steps}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let second = r.body["uuid"].as_str().unwrap().to_string();

        // Lists: uuid and name by default, every field with detail, fields.
        let l = app.get("/v1/deploy_templates").await.body;
        let items = l["deploy_templates"].as_array().unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(keys(&items[0]), ["links", "name", "uuid"]);
        let l = app.get("/v1/deploy_templates?detail=True").await.body;
        assert_eq!(
            keys(&l["deploy_templates"][0]),
            [
                "created_at",
                "extra",
                "links",
                "name",
                "steps",
                "updated_at",
                "uuid"
            ]
        );
        assert_eq!(
            l["deploy_templates"][0]["steps"][0]["args"]["admin_password"],
            "******"
        );
        let l = app.get("/v1/deploy_templates?fields=steps").await.body;
        assert_eq!(keys(&l["deploy_templates"][0]), ["links", "steps"]);
        let l = app
            .get("/v1/deploy_templates?limit=1&sort_key=name")
            .await
            .body;
        assert_eq!(l["deploy_templates"][0]["name"], "CUSTOM_HYPERTHREADING_ON");
        assert!(l["next"].as_str().unwrap().contains("marker="), "{l}");
        assert_fault(
            &app.get("/v1/deploy_templates?sort_key=steps").await,
            400,
            "The sort_key value steps is an invalid field for sorting",
        );
        assert_fault(
            &app.get("/v1/deploy_templates?detail=True&fields=name")
                .await,
            400,
            "Can not specify ?detail=True and fields in the same request.",
        );
        assert_eq!(
            app.get("/v1/deploy_templates?fields=bogus").await.status,
            400
        );

        // Show by name and by UUID; unknown and invalid identifiers.
        let r = app
            .get("/v1/deploy_templates/CUSTOM_HYPERTHREADING_ON")
            .await;
        assert_eq!(r.body["uuid"], json!(id));
        let r = app
            .get(&format!("/v1/deploy_templates/{second}?fields=name"))
            .await;
        assert_eq!(keys(&r.body), ["links", "name"]);
        assert_fault(
            &app.get("/v1/deploy_templates/CUSTOM_NOPE").await,
            404,
            "Deploy template CUSTOM_NOPE could not be found.",
        );
        assert_fault(
            &app.get("/v1/deploy_templates/bad%20name").await,
            400,
            "Expected UUID or name for template_ident: bad name",
        );

        // PATCH: Ironic's rules.
        let path = format!("/v1/deploy_templates/{id}");
        let r = app
            .send(Method::PATCH, &path, json!([
                {"op": "replace", "path": "/name", "value": "CUSTOM_HT"},
                {"op": "add", "path": "/extra/b", "value": 2},
                {"op": "replace", "path": "/steps", "value": [step("bios", "factory_reset", json!(0))]},
            ]))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["name"], "CUSTOM_HT");
        assert_eq!(r.body["extra"], json!({"a": 1, "b": 2}));
        assert_eq!(
            r.body["steps"],
            json!([step("bios", "factory_reset", json!(0))])
        );
        assert!(r.body["updated_at"].is_string());
        for (ops, status, msg) in [
            (json!([{"op": "replace", "path": "/uuid", "value": Uuid::new_v4()}]), 400,
             "Cannot patch /uuid. Only the following can be updated: extra, name, steps, description".to_string()),
            (json!([{"op": "replace", "path": "/name", "value": "HW_CPU_X86_AVX2"}]), 409,
             "A deploy template with name HW_CPU_X86_AVX2 already exists.".into()),
            (json!([{"op": "remove", "path": "/name"}]), 400, "Schema error for patch: 'name' is a required property".into()),
            (json!([{"op": "replace", "path": "/steps", "value": []}]), 400, "Schema error for patch: [] should be non-empty".into()),
            (json!([{"op": "replace", "path": "/name", "value": "nope"}]), 400,
             "Schema error for patch: 'nope' is not valid under any of the given schemas. Possible root cause: 'nope' does not match '^CUSTOM_[A-Z0-9_]+$'".into()),
        ] {
            let r = app.send(Method::PATCH, &path, ops.clone()).await;
            assert_fault(&r, status, &msg);
        }
        let r = app
            .send(
                Method::PATCH,
                &path,
                json!([{"op": "remove", "path": "/extra"}]),
            )
            .await;
        assert_eq!(r.body["extra"], json!({}));
        assert_eq!(app.get(&path).await.body["name"], "CUSTOM_HT");

        // DELETE by name, then it is gone.
        let r = app
            .call(
                Method::DELETE,
                "/v1/deploy_templates/CUSTOM_HT",
                Some("1.55"),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        assert_eq!(app.get(&path).await.status, StatusCode::NOT_FOUND);
        let r = app.call(Method::DELETE, &path, Some("1.54"), None).await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
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

async fn provision(app: &App, ident: &str, body: Value) -> Reply {
    app.send(
        Method::PUT,
        &format!("/v1/nodes/{ident}/states/provision"),
        body,
    )
    .await
}

/// A fake-hardware node in `available` with `traits` and instance traits.
async fn available(app: &App, name: &str, traits: Value, instance_traits: Value) -> String {
    let r = app
        .send(
            Method::POST,
            "/v1/nodes",
            json!({"driver": "fake-hardware", "name": name}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let uuid = r.body["uuid"].as_str().unwrap().to_string();
    let r = app
        .send(
            Method::PUT,
            &format!("/v1/nodes/{name}/traits"),
            json!({"traits": traits}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let r = app
        .send(
            Method::PATCH,
            &format!("/v1/nodes/{name}"),
            json!([{"op": "add", "path": "/instance_info", "value": {"traits": instance_traits}}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        provision(app, name, json!({"target": "manage"}))
            .await
            .status,
        202
    );
    settle(app, name, "manageable").await;
    assert_eq!(
        provision(app, name, json!({"target": "provide"}))
            .await
            .status,
        202
    );
    settle(app, name, "available").await;
    uuid
}

fn bios_names(r: &Reply) -> Vec<(String, Value)> {
    r.body["bios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_string(), s["value"].clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn matching_templates_apply_their_steps_at_deploy_time() {
    let app = Options::new()
        .drivers(Some(Drivers::new().with(Arc::new(FakeHardware::new()))))
        .spawn()
        .await
        .unwrap();
    let apply = |value: &str| {
        json!({"interface": "bios", "step": "apply_configuration", "priority": 50,
               "args": {"settings": [{"name": "BootMode", "value": value}]}})
    };
    for (name, steps) in [
        ("CUSTOM_UEFI", json!([apply("Uefi")])),
        // Not an instance trait of the node: never applied.
        ("CUSTOM_LEGACY", json!([apply("Bios")])),
        // A step the fake interfaces offer for cleaning only.
        (
            "CUSTOM_RAID",
            json!([{"interface": "raid", "step": "create_configuration", "args": {}, "priority": 10}]),
        ),
    ] {
        let r = app
            .send(
                Method::POST,
                "/v1/deploy_templates",
                json!({"name": name, "steps": steps}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }

    // The template named by an instance trait runs: its step wrote the BIOS
    // settings it carries.
    available(
        &app,
        "tpl",
        json!(["CUSTOM_UEFI", "CUSTOM_LEGACY"]),
        json!(["CUSTOM_UEFI"]),
    )
    .await;
    assert_eq!(
        provision(&app, "tpl", json!({"target": "active"}))
            .await
            .status,
        202
    );
    settle(&app, "tpl", "active").await;
    let r = app.get("/v1/nodes/tpl/bios").await;
    assert_eq!(bios_names(&r), [("BootMode".to_string(), json!("Uefi"))]);

    // A user deploy step with the same interface and name wins over the
    // template's.
    assert_eq!(
        provision(&app, "tpl", json!({"target": "deleted"}))
            .await
            .status,
        202
    );
    settle(&app, "tpl", "available").await;
    let r = provision(
        &app,
        "tpl",
        json!({"target": "active", "deploy_steps": [apply("Custom")]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    settle(&app, "tpl", "active").await;
    let r = app.get("/v1/nodes/tpl/bios").await;
    assert_eq!(bios_names(&r), [("BootMode".to_string(), json!("Custom"))]);

    // A template step the node's interfaces do not offer: 400, Ironic's words.
    let uuid = available(&app, "raid", json!(["CUSTOM_RAID"]), json!(["CUSTOM_RAID"])).await;
    let r = provision(&app, "raid", json!({"target": "active"})).await;
    assert_fault(&r, 400, &format!(
        "Failed to validate deploy or power info for node {uuid}: Validation of deploy steps from deploy templates matching this node's instance traits failed. Matching deploy templates: CUSTOM_RAID. Errors: node does not support this deploy step: {{'interface': 'raid', 'step': 'create_configuration', 'args': {{}}, 'priority': 10}}"
    ));
    assert_eq!(app.node("raid").await["provision_state"], "available");

    // Instance traits must be node traits.
    let uuid = available(
        &app,
        "miss",
        json!(["CUSTOM_UEFI"]),
        json!(["CUSTOM_UEFI", "CUSTOM_GONE"]),
    )
    .await;
    let r = provision(&app, "miss", json!({"target": "active"})).await;
    assert_fault(&r, 400, &format!(
        "Failed to validate deploy or power info for node {uuid}: Cannot specify instance traits that are not also set on the node. Node {uuid} is missing traits CUSTOM_GONE"
    ));
    app.tm.shutdown();
}

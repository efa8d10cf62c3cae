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

/// The runbook's fields from 1.112.
fn fields_112() -> Vec<String> {
    let mut f: Vec<String> = FIELDS.iter().map(|s| s.to_string()).collect();
    f.extend(["description".to_string(), "traits".to_string()]);
    f.sort();
    f
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
            let r = app
                .at(Method::POST, "/v1/runbooks", "1.111", Some(body.clone()))
                .await;
            assert_fault(&r, status, &msg);
        }

        let l = app.get("/v1/runbooks").await.body;
        assert_eq!(keys(&l["runbooks"][0]), ["links", "name", "uuid"]);
        let l = app
            .at(Method::GET, "/v1/runbooks?detail=True", "1.111", None)
            .await
            .body;
        assert_eq!(keys(&l["runbooks"][0]), FIELDS);
        let l = app.get("/v1/runbooks?detail=True").await.body;
        assert_eq!(keys(&l["runbooks"][0]), fields_112());
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
            .at(
                Method::PATCH,
                &path,
                "1.111",
                Some(json!([{"op": "add", "path": "/description", "value": "x"}])),
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

    // Below 1.112 the runbook's name must be a node trait.
    let clean = |body: Value| {
        let app = &app;
        async move {
            app.at(
                Method::PUT,
                "/v1/nodes/rb/states/provision",
                "1.111",
                Some(body),
            )
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runbook_traits_description_and_names_from_1_112() {
    for app in engines().await {
        let steps = json!([{"interface": "deploy", "step": "erase_devices", "order": 0}]);
        let post = |v: &'static str, body: Value| {
            let app = &app;
            async move { app.at(Method::POST, "/v1/runbooks", v, Some(body)).await }
        };
        // 1.112: relaxed names and a description; traits only through the
        // sub-resource.
        let r = post(
            "1.112",
            json!({"name": "bios-Reset.v1~x", "steps": steps, "description": "Reset"}),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        assert_eq!(keys(&r.body), fields_112());
        assert_eq!(
            (&r.body["description"], &r.body["traits"]),
            (&json!("Reset"), &json!([]))
        );
        let id = r.body["uuid"].as_str().unwrap().to_string();
        let long = "x".repeat(256);
        for (v, body, msg) in [
            ("1.112", json!({"name": "CUSTOM_T", "steps": steps, "traits": ["CUSTOM_A"]}),
             "Schema error for runbook: Additional properties are not allowed ('traits' was unexpected)".to_string()),
            ("1.112", json!({"name": "bad name", "steps": steps}),
             r"Schema error for runbook: 'bad name' does not match '^[A-Za-z0-9\\-._~]+$'".into()),
            ("1.112", json!({"name": "", "steps": steps}),
             "Schema error for runbook: '' should be non-empty".into()),
            ("1.112", json!({"name": long, "steps": steps}),
             format!("Schema error for runbook: '{long}' is too long")),
            ("1.112", json!({"name": "ok", "steps": steps, "description": long}),
             format!("Schema error for runbook: '{long}' is too long")),
            ("1.112", json!({"name": "ok", "steps": steps, "description": 5}),
             "Schema error for runbook: 5 is not of type 'string', 'null'".into()),
            ("1.111", json!({"name": "bios-reset", "steps": steps}),
             "Schema error for runbook: 'bios-reset' is not valid under any of the given schemas. Possible root cause: 'bios-reset' does not match '^CUSTOM_[A-Z0-9_]+$'".into()),
            ("1.111", json!({"name": "CUSTOM_D", "steps": steps, "description": "d"}),
             "Schema error for runbook: Additional properties are not allowed ('description' was unexpected)".into()),
        ] {
            assert_fault(&post(v, body).await, 400, &msg);
        }

        // Below 1.112 the fields are hidden and the sub-resource is 404.
        let path = format!("/v1/runbooks/{id}");
        let traits = format!("{path}/traits");
        let r = app.at(Method::GET, &path, "1.111", None).await;
        assert_eq!(keys(&r.body), FIELDS);
        let r = app
            .at(Method::GET, &format!("{path}?fields=traits"), "1.111", None)
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
        let r = app
            .at(Method::GET, &format!("{path}?fields=traits"), "1.112", None)
            .await;
        assert_eq!(keys(&r.body), ["links", "traits"]);
        assert_eq!(r.body["traits"], json!([]));
        for (m, p, body) in [
            (Method::GET, traits.clone(), None),
            (Method::PUT, traits.clone(), Some(json!({"traits": []}))),
            (Method::DELETE, traits.clone(), None),
            (Method::PUT, format!("{traits}/CUSTOM_A"), None),
            (Method::DELETE, format!("{traits}/CUSTOM_A"), None),
        ] {
            let r = app.at(m.clone(), &p, "1.111", body.clone()).await;
            assert_fault(&r, 404, "The API version does not allow runbook traits");
            let r = app.at(m.clone(), &p, "1.91", body).await;
            if m == Method::GET {
                assert_fault(&r, 404, "The API version does not allow runbooks");
            } else {
                assert_fault(&r, 405, "The API version does not allow runbooks");
            }
        }

        // The sub-resource at 1.112.
        let at = |m: Method, p: String, body: Option<Value>| {
            let app = &app;
            async move { app.at(m, &p, "1.112", body).await }
        };
        assert_eq!(
            at(Method::GET, traits.clone(), None).await.body,
            json!({"traits": []})
        );
        for _ in 0..2 {
            let r = at(Method::PUT, format!("{traits}/CUSTOM_B"), None).await;
            assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
            assert_eq!(
                r.header("location").unwrap(),
                format!("{}{traits}/CUSTOM_B", app.base)
            );
        }
        assert_eq!(
            at(Method::GET, traits.clone(), None).await.body,
            json!({"traits": ["CUSTOM_B"]})
        );
        let r = at(
            Method::PUT,
            traits.clone(),
            Some(json!({"traits": ["CUSTOM_C", "HW_CPU_X86_AVX2", "CUSTOM_C"]})),
        )
        .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
        let r = app
            .at(Method::GET, "/v1/runbooks/bios-Reset.v1~x", "1.112", None)
            .await;
        assert_eq!(r.body["traits"], json!(["CUSTOM_C", "HW_CPU_X86_AVX2"]));
        let usage = "A single runbook trait may be added via PUT /v1/runbooks/<runbook identifier>/traits/<trait> with no body, or all runbook traits may be replaced via PUT /v1/runbooks/<runbook identifier>/traits with the list of traits specified in the request body.";
        let bad = "Schema error for body: 'bad' is not valid under any of the given schemas. Possible root cause: 'bad' does not match '^CUSTOM_[A-Z0-9_]+$'";
        for (p, body, status, msg) in [
            (traits.clone(), None, 400, usage.to_string()),
            (traits.clone(), Some(json!({})), 400, usage.into()),
            (format!("{traits}/CUSTOM_E"), Some(json!({"traits": ["CUSTOM_E"]})), 400, usage.into()),
            (traits.clone(), Some(json!({"foo": 1})), 400,
             "Schema error for body: Additional properties are not allowed ('foo' was unexpected)".into()),
            (traits.clone(), Some(json!({"traits": "CUSTOM_A"})), 400,
             "Schema error for body: 'CUSTOM_A' is not of type 'array'".into()),
            (traits.clone(), Some(json!({"traits": ["CUSTOM_A", "bad"]})), 400, bad.into()),
            (format!("{traits}/bad"), None, 400,
             "Schema error for trait: 'bad' is not valid under any of the given schemas. Possible root cause: 'bad' does not match '^CUSTOM_[A-Z0-9_]+$'".into()),
            ("/v1/runbooks/CUSTOM_NO/traits".into(), Some(json!({"traits": []})), 404,
             "Runbook CUSTOM_NO could not be found.".into()),
            ("/v1/runbooks/CUSTOM_NO/traits/CUSTOM_A".into(), None, 404,
             "Runbook CUSTOM_NO could not be found.".into()),
        ] {
            assert_fault(&at(Method::PUT, p, body).await, status, &msg);
        }
        assert_fault(
            &at(Method::GET, "/v1/runbooks/CUSTOM_NO/traits".into(), None).await,
            404,
            "Runbook CUSTOM_NO could not be found.",
        );
        assert_eq!(
            at(Method::GET, traits.clone(), None).await.body,
            json!({"traits": ["CUSTOM_C", "HW_CPU_X86_AVX2"]}),
            "refused writes changed nothing"
        );

        // PATCH: description from 1.112, never traits; names are checked
        // against 1.112's schema at every version (as Ironic does); the
        // traits survive.
        let r = at(
            Method::PATCH,
            path.clone(),
            Some(json!([{"op": "replace", "path": "/traits", "value": []}])),
        )
        .await;
        assert_fault(&r, 400, "Cannot patch /traits. Only the following can be updated: disable_ramdisk, extra, name, owner, public, steps, description");
        let r = at(
            Method::PATCH,
            path.clone(),
            Some(json!([{"op": "replace", "path": "/description", "value": "New"}])),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["description"], "New");
        let r = app
            .at(
                Method::PATCH,
                &path,
                "1.111",
                Some(json!([{"op": "replace", "path": "/name", "value": "bad name"}])),
            )
            .await;
        assert_fault(
            &r,
            400,
            r"Schema error for patch: 'bad name' does not match '^[A-Za-z0-9\\-._~]+$'",
        );
        let r = app
            .at(
                Method::PATCH,
                &path,
                "1.111",
                Some(json!([{"op": "replace", "path": "/name", "value": "renamed-rb"}])),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(keys(&r.body), FIELDS);
        let r = at(Method::GET, "/v1/runbooks/renamed-rb".into(), None).await;
        assert_eq!(
            (&r.body["description"], &r.body["traits"]),
            (&json!("New"), &json!(["CUSTOM_C", "HW_CPU_X86_AVX2"]))
        );

        // DELETE one (absent is a no-op), DELETE all.
        for p in [
            format!("{traits}/CUSTOM_ABSENT"),
            format!("{traits}/CUSTOM_C"),
        ] {
            let r = at(Method::DELETE, p, None).await;
            assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
        }
        assert_eq!(
            at(Method::GET, traits.clone(), None).await.body,
            json!({"traits": ["HW_CPU_X86_AVX2"]})
        );
        let r = at(Method::DELETE, traits.clone(), None).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
        assert_eq!(
            at(Method::GET, traits.clone(), None).await.body,
            json!({"traits": []})
        );
        app.tm.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runbook_matching_by_traits_from_1_112() {
    let app = Options::new()
        .drivers(Some(Drivers::new().with(Arc::new(FakeHardware::new()))))
        .spawn()
        .await
        .unwrap();
    let r = app
        .at(
            Method::POST,
            "/v1/runbooks",
            "1.112",
            Some(json!({"name": "CUSTOM_BIOS", "steps": [
                {"interface": "bios", "step": "factory_reset", "order": 1},
            ]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let rb = r.body["uuid"].as_str().unwrap().to_string();
    let r = app
        .send(
            Method::POST,
            "/v1/nodes",
            json!({"driver": "fake-hardware", "name": "rb"}),
        )
        .await;
    let node = r.body["uuid"].as_str().unwrap().to_string();
    let r = app
        .send(
            Method::PUT,
            "/v1/nodes/rb/states/provision",
            json!({"target": "manage"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    settle(&app, "rb", "manageable").await;
    // The node has the runbook's name as a trait: enough below 1.112.
    let r = app
        .send(Method::PUT, "/v1/nodes/rb/traits/CUSTOM_BIOS", json!(null))
        .await;
    assert!(r.status.is_success(), "{}", r.body);
    let clean = |v: &'static str| {
        let app = &app;
        async move {
            app.at(
                Method::PUT,
                "/v1/nodes/rb/states/provision",
                v,
                Some(json!({"target": "clean", "runbook": "CUSTOM_BIOS"})),
            )
            .await
        }
    };
    // From 1.112 the name no longer counts: the runbook needs traits…
    assert_fault(
        &clean("1.112").await,
        400,
        &format!("Runbook {rb} has no traits configured. Please ask an administrator to add traits to the runbook."),
    );
    // …and the node one of them.
    let r = app
        .at(
            Method::PUT,
            "/v1/runbooks/CUSTOM_BIOS/traits",
            "1.112",
            Some(json!({"traits": ["CUSTOM_X", "CUSTOM_W"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert_fault(
        &clean("1.115").await,
        400,
        &format!("This runbook has not been approved for use on this node {node}. The node does not have any of the runbook's traits ['CUSTOM_W', 'CUSTOM_X']. Please ask an administrator to add a matching trait to your node."),
    );
    // Below 1.112 the old rule still holds (the runbook's traits are
    // ignored): the name is a node trait, so it runs.
    let r = clean("1.111").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    settle(&app, "rb", "manageable").await;
    // The old rule refuses a name that is no node trait, whatever the
    // runbook's traits.
    let r = app
        .send(
            Method::DELETE,
            "/v1/nodes/rb/traits/CUSTOM_BIOS",
            json!(null),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.body);
    let r = app
        .send(Method::PUT, "/v1/nodes/rb/traits/CUSTOM_W", json!(null))
        .await;
    assert!(r.status.is_success(), "{}", r.body);
    assert_fault(
        &clean("1.111").await,
        400,
        &format!("This runbook has not been approved for use on this node {node}. Please ask an administrator to add it to your node traits."),
    );
    // From 1.112 one shared trait is enough.
    let r = clean("1.112").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    settle(&app, "rb", "manageable").await;
    app.tm.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_runbook_trait_adds_all_land() {
    for app in engines().await {
        let r = app
            .at(
                Method::POST,
                "/v1/runbooks",
                "1.112",
                Some(json!({"name": "race", "steps": [
                    {"interface": "deploy", "step": "erase_devices", "order": 0},
                ]})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let app = Arc::new(app);
        let writers: Vec<_> = (0..12)
            .map(|i| {
                let app = app.clone();
                tokio::spawn(async move {
                    app.at(
                        Method::PUT,
                        &format!("/v1/runbooks/race/traits/CUSTOM_T{i:02}"),
                        "1.112",
                        None,
                    )
                    .await
                })
            })
            .collect();
        for w in writers {
            let r = w.await.unwrap();
            assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
        }
        let want: Vec<String> = (0..12).map(|i| format!("CUSTOM_T{i:02}")).collect();
        let r = app
            .at(Method::GET, "/v1/runbooks/race/traits", "1.112", None)
            .await;
        assert_eq!(r.body["traits"], json!(want), "no lost update");
        app.tm.shutdown();
    }
}

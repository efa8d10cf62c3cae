//! Inspection rules over real HTTP (Ironic 39's `/v1/inspection_rules`,
//! 1.96): storage and validation.

use crate::common::{App, Options, Reply};
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
    "actions",
    "conditions",
    "created_at",
    "description",
    "links",
    "phase",
    "priority",
    "sensitive",
    "updated_at",
    "uuid",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inspection_rules_crud_and_validation() {
    for app in engines().await {
        let id = Uuid::new_v4();
        let rule = json!({
            "uuid": id,
            "description": "GPU nodes",
            "priority": 10,
            "conditions": [
                {"op": "contains", "args": {"value": "{inventory[system_vendor][product_name]}", "regex": "GPU"},
                 "loop": ["a"], "multiple": "all"},
                {"op": "!is-empty", "args": {"value": "{inventory[cpu][count]}"}},
            ],
            "actions": [{"op": "add-trait", "args": {"name": "CUSTOM_GPU"}},
                        {"op": "set-plugin-data", "args": {"path": "x", "value": 1}}],
        });
        let r = app
            .at(
                Method::POST,
                "/v1/inspection_rules",
                "1.95",
                Some(rule.clone()),
            )
            .await;
        assert_fault(&r, 405, "The API version does not allow inspection rules");
        let r = app
            .at(Method::GET, "/v1/inspection_rules", "1.95", None)
            .await;
        assert_fault(&r, 404, "The API version does not allow inspection rules");

        let r = app
            .at(
                Method::POST,
                "/v1/inspection_rules",
                "1.96",
                Some(rule.clone()),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        assert_eq!(
            r.header("location").unwrap(),
            format!("{}/v1/inspection_rules/{id}", app.base)
        );
        assert_eq!(keys(&r.body), FIELDS);
        assert_eq!(
            (&r.body["phase"], &r.body["sensitive"]),
            (&json!("main"), &json!(false))
        );
        assert_eq!(
            r.body["conditions"],
            json!([
                {"op": "contains", "args": {"value": "{inventory[system_vendor][product_name]}", "regex": "GPU"},
                 "loop": ["a"], "multiple": "all"},
                {"op": "!is-empty", "args": {"value": "{inventory[cpu][count]}"}},
            ])
        );
        // Ironic adds plugin_data to the plugin-data actions' arguments.
        assert_eq!(
            r.body["actions"][1]["args"],
            json!({"path": "x", "value": 1, "plugin_data": {}})
        );

        let act = json!([{"op": "log", "args": {"msg": "x"}}]);
        for (body, status, msg) in [
            (json!({"uuid": id, "actions": act}), 409, format!("A rule with UUID {id} already exists.")),
            (json!({"conditions": []}), 400, "Schema error: 'actions' is a required property".into()),
            (json!({"actions": []}), 400, "Schema error: [] should be non-empty".into()),
            (json!({"actions": act, "name": "x"}), 400, "Schema error: Additional properties are not allowed ('name' was unexpected)".into()),
            (json!({"actions": [{"op": "explode", "args": {}}]}), 400,
             "Schema error: 'explode' is not one of ['fail', 'log', 'set-attribute', 'extend-attribute', 'del-attribute', 'set-capability', 'unset-capability', 'add-trait', 'remove-trait', 'set-plugin-data', 'extend-plugin-data', 'unset-plugin-data', 'set-port-attribute', 'extend-port-attribute', 'del-port-attribute', 'api-call']".into()),
            (json!({"actions": [{"op": "log", "args": "x"}]}), 400, "Schema error: 'x' is not of type 'array', 'object'".into()),
            (json!({"actions": act, "priority": -1}), 400, "Schema error: -1 is less than the minimum of 0".into()),
            (json!({"actions": act, "priority": 10000}), 400, "Priority must be between 0 and 9999 for user-defined rules.".into()),
            (json!({"actions": act, "phase": "late"}), 400, "Invalid phase: late. Valid phases are: main".into()),
            (json!({"actions": act, "phase": "late", "priority": 10000}), 400,
             "Multiple validation errors occurred: Invalid phase: late. Valid phases are: main; Priority must be between 0 and 9999 for user-defined rules.".into()),
            (json!({"actions": [{"op": "set-attribute", "args": {"path": "/a"}}]}), 400,
             "Inspection rule validation failed. Reason: missing required argument(s): value".into()),
            (json!({"actions": [{"op": "log", "args": {"msg": "m", "colour": "red"}}]}), 400,
             "Inspection rule validation failed. Reason: unexpected argument(s): colour".into()),
            (json!({"actions": act, "conditions": [{"op": "eq", "args": {"value": 1}}]}), 400,
             "Inspection rule validation failed. Reason: missing required argument(s): values; unexpected argument(s): value".into()),
            (json!({"actions": act, "conditions": [{"op": "in-net", "args": ["10.0.0.1"]}]}), 400,
             "Inspection rule validation failed. Reason: Not enough arguments provided. Missing: subnet".into()),
            (json!({"actions": act, "uuid": "nope"}), 400, "Expected UUID for uuid: nope".into()),
        ] {
            let r = app.send(Method::POST, "/v1/inspection_rules", body.clone()).await;
            assert_fault(&r, status, &msg);
        }

        // A sensitive rule hides its conditions and actions.
        let r = app
            .send(Method::POST, "/v1/inspection_rules",
                  json!({"sensitive": true, "actions": [{"op": "set-attribute", "args": {"path": "/driver_info/bmc_password", "value": "pw"}}]}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        assert_eq!(
            (&r.body["conditions"], &r.body["actions"]),
            (&Value::Null, &Value::Null)
        );
        let secret = r.body["uuid"].as_str().unwrap().to_string();
        let spath = format!("/v1/inspection_rules/{secret}");
        assert_eq!(app.get(&spath).await.body["actions"], Value::Null);
        let r = app
            .send(
                Method::PATCH,
                &spath,
                json!([{"op": "replace", "path": "/sensitive", "value": false}]),
            )
            .await;
        assert_fault(&r, 400, "Couldn't apply patch '[{'op': 'replace', 'path': '/sensitive', 'value': False}]'. Reason: Inspection rules cannot have the sensitive flag unset.");

        let l = app.get("/v1/inspection_rules").await.body;
        assert_eq!(l["inspection_rules"].as_array().unwrap().len(), 2);
        assert_eq!(
            keys(&l["inspection_rules"][0]),
            ["description", "links", "phase", "priority", "uuid"]
        );
        let l = app
            .get("/v1/inspection_rules?detail=True&phase=main")
            .await
            .body;
        assert_eq!(keys(&l["inspection_rules"][0]), FIELDS);
        let l = app.get("/v1/inspection_rules?phase=other").await.body;
        assert_eq!(l["inspection_rules"], json!([]));
        assert_fault(
            &app.get("/v1/inspection_rules?sort_key=actions").await,
            400,
            "The sort_key value actions is an invalid field for sorting",
        );
        let missing = Uuid::new_v4();
        assert_fault(
            &app.get(&format!("/v1/inspection_rules/{missing}")).await,
            404,
            &format!("Rule {missing} could not be found."),
        );

        let path = format!("/v1/inspection_rules/{id}");
        let r = app
            .send(
                Method::PATCH,
                &path,
                json!([
                    {"op": "replace", "path": "/priority", "value": 20},
                    {"op": "replace", "path": "/description", "value": "GPUs"},
                ]),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(
            (&r.body["priority"], &r.body["description"]),
            (&json!(20), &json!("GPUs"))
        );
        let r = app
            .send(
                Method::PATCH,
                &path,
                json!([{"op": "remove", "path": "/actions"}]),
            )
            .await;
        assert_fault(
            &r,
            400,
            "Schema error for patch: 'actions' is a required property",
        );
        let r = app
            .send(
                Method::PATCH,
                &path,
                json!([{"op": "replace", "path": "/phase", "value": "x"}]),
            )
            .await;
        assert_fault(&r, 400, "Invalid phase: x. Valid phases are: main");

        let r = app.call(Method::DELETE, &path, Some("1.96"), None).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        assert_eq!(app.get(&path).await.status, StatusCode::NOT_FOUND);
        app.tm.shutdown();
    }
}

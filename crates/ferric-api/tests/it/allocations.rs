//! Allocations over real HTTP (Ironic 39's `/v1/allocations`), on SQLite
//! and PostgreSQL: the race of 32 allocations for 8 nodes (one API process
//! and two on one database), fields by version, Ironic's refusals, backfill,
//! deletion rules, `/v1/nodes/{node}/allocation`, node deletion and the feed.

use crate::common::{Api, App, Options};
use ferric_core::{NewNode, NodeAttrs, PowerState, ProvisionState};
use ferric_store::testing::Engine;
use ferric_store::Store;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use uuid::Uuid;

async fn engines() -> Vec<App> {
    let mut apps = vec![Options::new().spawn().await.unwrap()];
    if let Some(pg) = Options::new().engine(Engine::Postgres).spawn().await {
        apps.push(pg);
    }
    apps
}

/// A node in `state` with resource class `rc`, `traits` and a known power
/// state (what allocation candidates need).
async fn node(app: &App, name: &str, rc: &str, state: ProvisionState, traits: &[&str]) -> Uuid {
    let uuid = app
        .store
        .store
        .create_node(NewNode {
            name: Some(name.into()),
            driver: "fake-hardware".into(),
            provision_state: Some(state),
            attrs: NodeAttrs {
                resource_class: Some(rc.into()),
                traits: traits.iter().map(|t| t.to_string()).collect(),
                ..Default::default()
            },
            ..Default::default()
        })
        .await
        .unwrap()
        .uuid;
    let mut task = app
        .tm
        .acquire(uuid)
        .purpose("test")
        .exclusive()
        .await
        .unwrap();
    task.node_mut().power_state = Some(PowerState::Off);
    task.save().await.unwrap();
    task.release().await.unwrap();
    uuid
}

/// Poll the allocation until it is no longer `allocating`.
async fn settled(api: &Api, uuid: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = api.get(&format!("/v1/allocations/{uuid}")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        if r.body["state"] != "allocating" {
            return r.body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "allocation {uuid} still allocating"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const RACE_MESSAGES: [&str; 3] = [
    "no available nodes match the resource class race",
    "could not reserve any of",
    "all nodes were filtered out during reservation",
];

/// Create `n` allocations of resource class `race` at once, spread over
/// `apis`; return their settled documents.
async fn race(apis: &[&Api], n: usize) -> Vec<Value> {
    let mut handles = Vec::new();
    for i in 0..n {
        let api = apis[i % apis.len()];
        let http = api.http.clone();
        let base = api.base.clone();
        handles.push(tokio::spawn(async move {
            crate::common::json(
                &http,
                &base,
                Method::POST,
                "/v1/allocations",
                json!({"resource_class": "race"}),
            )
            .await
        }));
    }
    let mut uuids = Vec::new();
    for h in handles {
        let (status, body) = h.await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["state"], "allocating");
        uuids.push(body["uuid"].as_str().unwrap().to_string());
    }
    let mut done = Vec::new();
    for u in &uuids {
        done.push(settled(apis[0], u).await);
    }
    done
}

/// Exactly one allocation per node, each node's instance the allocation,
/// the rest failed with one of Ironic's messages.
async fn check_race(app: &App, done: &[Value], nodes: &[Uuid]) {
    let active: Vec<&Value> = done.iter().filter(|a| a["state"] == "active").collect();
    let failed: Vec<&Value> = done.iter().filter(|a| a["state"] == "error").collect();
    assert_eq!(active.len(), nodes.len(), "{done:#?}");
    assert_eq!(failed.len(), done.len() - nodes.len());
    let mut by_node: BTreeMap<String, String> = BTreeMap::new();
    for a in &active {
        let node = a["node_uuid"].as_str().unwrap().to_string();
        let uuid = a["uuid"].as_str().unwrap().to_string();
        assert!(
            by_node.insert(node.clone(), uuid.clone()).is_none(),
            "node {node} got two allocations"
        );
        let n = app.node(&node).await;
        assert_eq!(n["instance_uuid"], uuid);
        assert_eq!(n["allocation_uuid"], uuid);
        assert_eq!(n["instance_info"]["traits"], json!([]));
    }
    let got: BTreeSet<String> = by_node.keys().cloned().collect();
    let want: BTreeSet<String> = nodes.iter().map(Uuid::to_string).collect();
    assert_eq!(got, want);
    for f in failed {
        let msg = f["last_error"].as_str().unwrap();
        let prefix = format!(
            "Failed to process allocation {}: ",
            f["uuid"].as_str().unwrap()
        );
        assert!(msg.starts_with(&prefix), "{msg}");
        assert!(
            RACE_MESSAGES.iter().any(|m| msg.contains(m)),
            "unexpected failure: {msg}"
        );
        assert_eq!(f["node_uuid"], Value::Null);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn thirty_two_allocations_race_for_eight_nodes() {
    for app in engines().await {
        let mut nodes = Vec::new();
        for i in 0..8 {
            nodes.push(
                node(
                    &app,
                    &format!("race-{i}"),
                    "race",
                    ProvisionState::Available,
                    &[],
                )
                .await,
            );
        }
        // A node of another class is never taken.
        let other = node(&app, "other", "other", ProvisionState::Available, &[]).await;
        let done = race(&[&app.api], 32).await;
        check_race(&app, &done, &nodes).await;
        assert_eq!(
            app.node(&other.to_string()).await["instance_uuid"],
            Value::Null
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn two_api_processes_race_on_one_database() {
    for app in engines().await {
        app.store.conductor("cond-b").await;
        let b = Options::new()
            .host("cond-b")
            .serve(app.store.store.clone())
            .await;
        let mut nodes = Vec::new();
        for i in 0..8 {
            nodes.push(
                node(
                    &app,
                    &format!("race-{i}"),
                    "race",
                    ProvisionState::Available,
                    &[],
                )
                .await,
            );
        }
        let done = race(&[&app.api, &b], 32).await;
        check_race(&app, &done, &nodes).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn allocation_fields_versions_and_refusals() {
    for app in engines().await {
        let n1 = node(
            &app,
            "n1",
            "gold",
            ProvisionState::Available,
            &["CUSTOM_GPU"],
        )
        .await;
        let _n2 = node(&app, "n2", "gold", ProvisionState::Available, &[]).await;
        // Too old.
        let r = app.at(Method::GET, "/v1/allocations", "1.51", None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(r.fault(), "The API version does not allow allocations");
        let r = app
            .at(
                Method::POST,
                "/v1/allocations",
                "1.51",
                Some(json!({"resource_class": "gold"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
        // Refusals: nothing is created.
        for (version, body, status, msg) in [
            ("1.52", json!({}), 400, "The resource_class field is mandatory when not backfilling".to_string()),
            ("1.52", json!({"resource_class": "gold", "candidate_nodes": ["nope", "n1"]}), 400, "Nodes cannot be found: nope".to_string()),
            ("1.52", json!({"resource_class": "x".repeat(81)}), 400, format!("Schema error for allocation: '{}' is too long", "x".repeat(81))),
            ("1.52", json!({"resource_class": "gold", "traits": ["lowercase"]}), 400, "Schema error for allocation: \"lowercase\" is not valid under any of the given schemas".to_string()),
            ("1.52", json!({"resource_class": "gold", "name": "bad name"}), 400, "Cannot create allocation with invalid name 'bad name'".to_string()),
            ("1.52", json!({"resource_class": "gold", "bogus": 1}), 400, "Schema error for allocation: Additional properties are not allowed ('bogus' was unexpected)".to_string()),
            ("1.57", json!({"resource_class": "gold", "node": "n1"}), 400, "Schema error for allocation: Additional properties are not allowed ('node' was unexpected)".to_string()),
            ("1.58", json!({"resource_class": "gold", "node": "ghost"}), 400, "Node ghost could not be found.".to_string()),
            ("1.59", json!({"resource_class": "gold", "owner": "p"}), 406, "Request not acceptable.".to_string()),
        ] {
            let r = app.at(Method::POST, "/v1/allocations", version, Some(body.clone())).await;
            assert_eq!(r.status.as_u16(), status, "{body}: {}", r.body);
            assert_eq!(r.fault(), msg, "{body}");
        }
        assert_eq!(
            app.get("/v1/allocations").await.body["allocations"],
            json!([])
        );

        // A named allocation with a trait and candidates by name: n1.
        let r = app
            .at(
                Method::POST,
                "/v1/allocations",
                "1.52",
                Some(
                    json!({"resource_class": "gold", "name": "a1", "traits": ["CUSTOM_GPU"],
                            "candidate_nodes": ["n1", "n2"], "extra": {"k": "v"}}),
                ),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let a1 = r.body["uuid"].as_str().unwrap().to_string();
        assert_eq!(
            r.header("location").unwrap(),
            format!("{}/v1/allocations/{a1}", app.base)
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
                "candidate_nodes",
                "created_at",
                "extra",
                "last_error",
                "links",
                "name",
                "node_uuid",
                "resource_class",
                "state",
                "traits",
                "updated_at",
                "uuid"
            ]
        );
        let done = settled(&app, &a1).await;
        assert_eq!(done["state"], "active", "{done}");
        assert_eq!(done["node_uuid"], n1.to_string());
        assert_eq!(done["candidate_nodes"].as_array().unwrap().len(), 2);
        let n = app.node("n1").await;
        assert_eq!(n["instance_uuid"], a1);
        assert_eq!(n["allocation_uuid"], a1);
        assert_eq!(n["instance_info"]["traits"], json!(["CUSTOM_GPU"]));
        // owner from 1.60, by name too.
        let r = app
            .at(Method::GET, "/v1/allocations/a1", "1.60", None)
            .await;
        assert_eq!(r.body["owner"], Value::Null);
        assert_eq!(r.body["uuid"], a1);
        let r = app
            .at(Method::GET, "/v1/allocations/a1?fields=owner", "1.59", None)
            .await;
        assert_eq!(r.status, StatusCode::NOT_ACCEPTABLE);
        let r = app
            .at(Method::GET, "/v1/allocations?owner=x", "1.59", None)
            .await;
        assert_eq!(r.status, StatusCode::NOT_ACCEPTABLE);
        // Duplicate name and UUID: 409, Ironic's words.
        let r = app
            .send(
                Method::POST,
                "/v1/allocations",
                json!({"resource_class": "gold", "name": "a1"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CONFLICT);
        assert_eq!(r.fault(), "An allocation with name a1 already exists.");
        let r = app
            .send(
                Method::POST,
                "/v1/allocations",
                json!({"resource_class": "gold", "uuid": a1}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CONFLICT);
        assert_eq!(
            r.fault(),
            format!("An allocation with UUID {a1} already exists.")
        );

        // Failures end in `error` with Ironic's messages.
        for (body, error) in [
            (
                json!({"resource_class": "silver"}),
                "no available nodes match the resource class silver",
            ),
            (
                json!({"resource_class": "gold", "candidate_nodes": ["n1"]}),
                "none of the requested nodes are available and match the resource class gold",
            ),
            (
                json!({"resource_class": "gold", "traits": ["CUSTOM_GPU", "CUSTOM_FPGA"]}),
                "no suitable nodes have the requested traits CUSTOM_FPGA, CUSTOM_GPU",
            ),
        ] {
            let r = app
                .send(Method::POST, "/v1/allocations", body.clone())
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
            let uuid = r.body["uuid"].as_str().unwrap().to_string();
            let done = settled(&app, &uuid).await;
            assert_eq!(done["state"], "error");
            assert_eq!(
                done["last_error"],
                format!("Failed to process allocation {uuid}: {error}."),
                "{body}"
            );
        }

        // List: filters, fields, paging, sort keys.
        let all = app.get("/v1/allocations").await.body["allocations"]
            .as_array()
            .unwrap()
            .len();
        assert_eq!(all, 4);
        let errors = app
            .get("/v1/allocations?state=error&fields=uuid,state")
            .await
            .body;
        assert_eq!(errors["allocations"].as_array().unwrap().len(), 3);
        let keys: BTreeSet<&str> = errors["allocations"][0]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, BTreeSet::from(["links", "state", "uuid"]));
        let r = app.get("/v1/allocations?node=n1").await.body;
        assert_eq!(r["allocations"][0]["uuid"], a1);
        assert_eq!(r["allocations"].as_array().unwrap().len(), 1);
        let r = app.get("/v1/allocations?resource_class=silver").await.body;
        assert_eq!(r["allocations"].as_array().unwrap().len(), 1);
        let r = app.get("/v1/allocations?node=ghost").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.fault(), "Node ghost could not be found.");
        let r = app.get("/v1/allocations?sort_key=traits").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            r.fault(),
            "The sort_key value traits is an invalid field for sorting"
        );
        let page = app.get("/v1/allocations?limit=2").await.body;
        assert_eq!(page["allocations"].as_array().unwrap().len(), 2);
        assert!(page["next"].as_str().unwrap().contains("marker="));

        // PATCH: 1.57, name and extra only.
        let r = app
            .at(
                Method::PATCH,
                "/v1/allocations/a1",
                "1.56",
                Some(json!([{"op": "replace", "path": "/name", "value": "a2"}])),
            )
            .await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            r.fault(),
            "The API version does not allow updating allocations"
        );
        let r = app
            .at(
                Method::PATCH,
                "/v1/allocations/a1",
                "1.57",
                Some(json!([{"op": "replace", "path": "/resource_class", "value": "x"}])),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            r.fault(),
            "Cannot patch /resource_class. Only the following can be updated: name, extra"
        );
        let r = app
            .at(
                Method::PATCH,
                "/v1/allocations/a1",
                "1.57",
                Some(json!([
                {"op": "replace", "path": "/name", "value": "a2"},
                {"op": "add", "path": "/extra/x", "value": 1}])),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["name"], "a2");
        assert_eq!(r.body["extra"], json!({"k": "v", "x": 1}));
        assert_eq!(r.body["state"], "active");
        let r = app.get("/v1/allocations/a1").await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(r.fault(), "Allocation a1 could not be found.");

        // The node's allocation.
        let r = app.get("/v1/nodes/n1/allocation?fields=uuid").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["uuid"], a1);
        let r = app.get("/v1/nodes/n2/allocation").await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(r.fault(), "Allocation for node n2 was not found");
        let r = app.get("/v1/nodes/ghost/allocation").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        let r = app
            .at(Method::GET, "/v1/nodes/n1/allocation", "1.51", None)
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);

        // Deleting it (the node is available) frees the node.
        let r = app
            .call(
                Method::DELETE,
                "/v1/nodes/n1/allocation",
                Some("latest"),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
        let n = app.node("n1").await;
        assert_eq!(n["instance_uuid"], Value::Null);
        assert_eq!(n["allocation_uuid"], Value::Null);
        assert_eq!(
            app.get(&format!("/v1/allocations/{a1}")).await.status,
            StatusCode::NOT_FOUND
        );
        // An allocation without a node goes at once.
        let failed = app.get("/v1/allocations?state=error").await.body["allocations"][0]["uuid"]
            .as_str()
            .unwrap()
            .to_string();
        let r = app
            .call(
                Method::DELETE,
                &format!("/v1/allocations/{failed}"),
                Some("latest"),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        let r = app
            .call(
                Method::DELETE,
                &format!("/v1/allocations/{failed}"),
                Some("latest"),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backfill_delete_rules_node_deletion_and_feed() {
    for app in engines().await {
        let deployed = node(&app, "deployed", "gold", ProvisionState::Active, &[]).await;
        let wrong = node(&app, "wrong", "iron", ProvisionState::Active, &[]).await;
        let since = app.get("/v1/nodes/changes?limit=1000").await.body["revision"]
            .as_i64()
            .unwrap();
        // Backfill: the allocation takes the deployed node at once.
        let r = app
            .at(
                Method::POST,
                "/v1/allocations",
                "1.58",
                Some(json!({"node": "deployed", "name": "bf"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        assert_eq!(r.body["state"], "active");
        assert_eq!(r.body["node_uuid"], deployed.to_string());
        assert_eq!(r.body["resource_class"], "gold");
        let bf = r.body["uuid"].as_str().unwrap().to_string();
        assert_eq!(app.node("deployed").await["instance_uuid"], bf);
        // A node that has an allocation cannot be backfilled again: its
        // instance UUID is the default UUID (taken), or the node is associated.
        let r = app
            .at(
                Method::POST,
                "/v1/allocations",
                "1.58",
                Some(json!({"node": "deployed", "resource_class": "gold"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
        assert_eq!(
            r.fault(),
            format!("An allocation with UUID {bf} already exists.")
        );
        let other = Uuid::new_v4();
        let r = app
            .at(
                Method::POST,
                "/v1/allocations",
                "1.58",
                Some(json!({"node": "deployed", "uuid": other})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
        assert_eq!(
            r.fault(),
            format!("Node {deployed} is associated with instance {bf}.")
        );
        assert_eq!(
            app.get(&format!("/v1/allocations/{other}")).await.body["state"],
            "error"
        );
        // A mismatch: refused, the allocation ends in error.
        let r = app
            .at(
                Method::POST,
                "/v1/allocations",
                "1.58",
                Some(json!({"node": "wrong", "resource_class": "gold", "name": "mismatch"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
        assert!(r.fault().contains(&format!("Cannot backfill an allocation for node {wrong}: Resource class iron does not match the requested resource class gold")), "{}", r.fault());
        let m = app.get("/v1/allocations/mismatch").await.body;
        assert_eq!(m["state"], "error");
        assert_eq!(app.node("wrong").await["instance_uuid"], Value::Null);

        // Deletion of an active node's allocation: refused outside maintenance.
        let r = app
            .call(Method::DELETE, "/v1/allocations/bf", Some("latest"), None)
            .await;
        assert_eq!(r.status, StatusCode::CONFLICT);
        assert_eq!(
            r.fault(),
            format!("Cannot remove allocation {bf} for node {deployed}, because the node is active (and maintenance mode is off)")
        );
        assert_eq!(app.node("deployed").await["instance_uuid"], bf);
        let r = app
            .send(
                Method::PATCH,
                "/v1/nodes/deployed",
                json!([{"op": "replace", "path": "/maintenance", "value": true}]),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);

        // Deleting the node (maintenance) deletes its allocation.
        let r = app
            .call(Method::DELETE, "/v1/nodes/deployed", Some("latest"), None)
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
        assert_eq!(
            app.get(&format!("/v1/allocations/{bf}")).await.status,
            StatusCode::NOT_FOUND
        );

        // The feed: created, updated (bound), deleted with the node.
        let feed = app
            .get(&format!(
                "/v1/nodes/changes?since={since}&resource=allocation&limit=1000"
            ))
            .await
            .body;
        let mine: Vec<&Value> = feed["changes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["uuid"] == bf.as_str())
            .collect();
        let kinds: Vec<&str> = mine.iter().map(|c| c["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["created", "updated", "deleted"], "{feed}");
        assert!(mine.iter().all(|c| c["resource"] == "allocation"));
        assert_eq!(mine[1]["allocation"]["state"], "active");
        assert_eq!(mine[1]["node_uuid"], deployed.to_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_orphaned_allocation_is_resumed_at_start_up() {
    for app in engines().await {
        let n = node(&app, "free", "gold", ProvisionState::Available, &[]).await;
        // Left `allocating` by this conductor's previous life.
        let orphan = ferric_conductor::allocation::Allocation {
            uuid: Uuid::new_v4(),
            name: None,
            node: None,
            state: "allocating".into(),
            last_error: None,
            resource_class: Some("gold".into()),
            traits: Vec::new(),
            candidate_nodes: Vec::new(),
            extra: Default::default(),
            owner: None,
            conductor_affinity: Some("cond-a".into()),
            created_at: ferric_core::DbTime(0),
            updated_at: None,
            revision: 0,
        };
        app.store
            .store
            .create_resource(
                ferric_store::ResourceKind::Allocation,
                ferric_store::NewResource {
                    uuid: Some(orphan.uuid),
                    body: orphan.body(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let conductor = ferric_conductor::cluster::Conductor::start(app.tm.clone())
            .await
            .unwrap();
        let done = settled(&app, &orphan.uuid.to_string()).await;
        assert_eq!(done["state"], "active");
        assert_eq!(done["node_uuid"], n.to_string());
        conductor.stop().await;
    }
}

/// A node deployed through the API (enroll → manageable → available → active).
async fn deployed(app: &App, name: &str) -> Uuid {
    let r = app
        .send(
            Method::POST,
            "/v1/nodes",
            json!({"name": name, "driver": "fake-hardware", "resource_class": "gold"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    for (target, state) in [
        ("manage", "manageable"),
        ("provide", "available"),
        ("active", "active"),
    ] {
        let r = app
            .send(
                Method::PUT,
                &format!("/v1/nodes/{name}/states/provision"),
                json!({"target": target}),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
        rests_in(app, name, state).await;
    }
    r.body["uuid"].as_str().unwrap().parse().unwrap()
}

/// Poll the node until it rests (no target) in `state`.
async fn rests_in(api: &Api, ident: &str, state: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let n = api.node(ident).await;
        if n["provision_state"] == state && n["target_provision_state"].is_null() {
            return n;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{ident} never rested in {state}: {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn removing_the_instance_or_tearing_down_deletes_the_allocation() {
    for app in engines().await {
        // PATCH remove /instance_uuid: refused on an active node outside
        // maintenance, allowed on an available one (the allocation goes).
        let active = deployed(&app, "active").await;
        let r = app
            .at(
                Method::POST,
                "/v1/allocations",
                "1.58",
                Some(json!({"node": "active"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let on_active = r.body["uuid"].as_str().unwrap().to_string();
        let remove = json!([{"op": "remove", "path": "/instance_uuid"}]);
        let r = app
            .send(Method::PATCH, "/v1/nodes/active", remove.clone())
            .await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
        assert_eq!(
            r.fault(),
            format!("Node {active} with an allocation can not have instance_uuid removed unless it is in one of allowed (enroll, inspecting, inspect wait, manageable, available) states or in maintenance mode. Current state is 'active'.")
        );
        assert_eq!(
            app.get(&format!("/v1/allocations/{on_active}"))
                .await
                .status,
            StatusCode::OK
        );

        let free = node(&app, "free", "gold", ProvisionState::Available, &[]).await;
        let r = app
            .send(
                Method::POST,
                "/v1/allocations",
                json!({"resource_class": "gold"}),
            )
            .await;
        let a = r.body["uuid"].as_str().unwrap().to_string();
        assert_eq!(settled(&app, &a).await["node_uuid"], free.to_string());
        let r = app.send(Method::PATCH, "/v1/nodes/free", remove).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["instance_uuid"], Value::Null);
        assert_eq!(r.body["allocation_uuid"], Value::Null);
        assert_eq!(
            app.get(&format!("/v1/allocations/{a}")).await.status,
            StatusCode::NOT_FOUND
        );

        // Undeploying the active node tears its allocation down with it.
        let r = app
            .send(
                Method::PUT,
                "/v1/nodes/active/states/provision",
                json!({"target": "deleted"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
        let n = rests_in(&app, "active", "available").await;
        assert_eq!(n["instance_uuid"], Value::Null);
        assert_eq!(n["allocation_uuid"], Value::Null);
        assert_eq!(
            app.get(&format!("/v1/allocations/{on_active}"))
                .await
                .status,
            StatusCode::NOT_FOUND
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_named_like_the_allocation_is_tried_first() {
    let app = Options::new().spawn().await.unwrap();
    for i in 0..4 {
        node(
            &app,
            &format!("pick-{i}"),
            "gold",
            ProvisionState::Available,
            &[],
        )
        .await;
    }
    for round in 0..3 {
        let r = app
            .send(
                Method::POST,
                "/v1/allocations",
                json!({"resource_class": "gold", "name": "pick-2"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let uuid = r.body["uuid"].as_str().unwrap().to_string();
        let done = settled(&app, &uuid).await;
        assert_eq!(
            done["node_uuid"],
            app.node("pick-2").await["uuid"],
            "round {round}"
        );
        let r = app
            .call(
                Method::DELETE,
                "/v1/allocations/pick-2",
                Some("latest"),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
    }
}

//! The rest of the node surface over real HTTP: the `/v1` root's links,
//! the `shard` filter of ports and portgroups, VIFs, the boot mode, secure
//! boot, console and RAID states.

use crate::common::{App, Options};
use ferric_store::testing::Engine;
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
        for (kind, all) in [("ports", &ports), ("portgroups", &pgs)] {
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
                    let r = app.get(&path).await;
                    assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
                    assert_eq!(uuids(&r.body, kind), want, "{path}");
                }
            }
            let r = app
                .call(
                    Method::GET,
                    &format!("/v1/{kind}?shard=s1"),
                    Some("1.81"),
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

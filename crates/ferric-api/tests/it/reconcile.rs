//! Seed 001 (nova bug 1841481): a reconciler that acts on a stale picture of
//! the nodes. Nova's resource tracker read the instance list, then the node
//! list minutes later; an instance scheduled in between made a healthy node
//! look orphaned and its resource provider was deleted. The same shape with
//! ferric's API: a reconciler lists the nodes, and while it works from that
//! list, node X changes owner (instance A deleted, instance B claims X). The
//! naive reconciler "cleans up" X for A with a plain PATCH and wipes B's
//! claim, orphaning B. The reconciler that lists, then watches the change
//! feed from the list's revision (`X-Ferric-Revision`,
//! `GET /v1/nodes/changes?since=`), sees every change in order and leaves X
//! alone; and a write made from a stale picture with `If-Match` is refused
//! (412) instead of overwriting the newer state.

use crate::common::{App, Options, Reply};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use uuid::Uuid;

async fn spawn_app() -> App {
    Options::new()
        .step(Duration::from_millis(10))
        .spawn()
        .await
        .unwrap()
}

/// The helpers of these tests, on top of [`crate::common::Api`]'s.
impl App {
    /// A request at the latest microversion, `If-Match: "{if_match}"` when given.
    async fn call_if(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        if_match: Option<i64>,
    ) -> Reply {
        let mut req = self.request(method, path);
        if let Some(b) = body {
            req = req.json(&b);
        }
        if let Some(rev) = if_match {
            req = req.header("if-match", format!("\"{rev}\""));
        }
        self.finish(req).await
    }

    async fn set_instance(
        &self,
        node: &str,
        instance: Option<Uuid>,
        if_match: Option<i64>,
    ) -> Reply {
        let op = match instance {
            Some(i) => json!([{"op": "add", "path": "/instance_uuid", "value": i.to_string()}]),
            None => json!([{"op": "remove", "path": "/instance_uuid"}]),
        };
        self.call_if(
            Method::PATCH,
            &format!("/v1/nodes/{node}"),
            Some(op),
            if_match,
        )
        .await
    }

    async fn instance_of(&self, node: &str) -> Option<Uuid> {
        let r = self
            .call_if(Method::GET, &format!("/v1/nodes/{node}"), None, None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body["instance_uuid"].as_str().map(|s| s.parse().unwrap())
    }
}

/// What a reconciler believes: node name → the instance it holds.
type Picture = BTreeMap<String, Option<Uuid>>;

fn instance(v: &Value) -> Option<Uuid> {
    v["instance_uuid"].as_str().map(|s| s.parse().unwrap())
}

/// List the nodes; the picture and the revision it is consistent at.
async fn list(app: &App) -> (Picture, i64) {
    let r = app.call_if(Method::GET, "/v1/nodes", None, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let picture = r.body["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["name"].as_str().unwrap().to_string(), instance(n)))
        .collect();
    (picture, r.revision("x-ferric-revision"))
}

/// Apply every change after `since` to `picture`; the new revision and the
/// revisions seen (strictly increasing, no gaps in what the feed returned).
async fn watch(app: &App, picture: &mut Picture, since: i64) -> (i64, Vec<i64>) {
    let r = app
        .call_if(
            Method::GET,
            &format!("/v1/nodes/changes?since={since}&timeout=0"),
            None,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let mut seen = Vec::new();
    for c in r.body["changes"].as_array().unwrap() {
        seen.push(c["revision"].as_i64().unwrap());
        let node = &c["node"];
        if node.is_null() {
            continue;
        }
        let name = node["name"].as_str().unwrap().to_string();
        if c["kind"] == "deleted" {
            picture.remove(&name);
        } else {
            picture.insert(name, instance(node));
        }
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    (r.body["revision"].as_i64().unwrap(), seen)
}

/// The reconciler's decision: nodes whose instance is not live get their
/// claim cleared (the resource tracker's "orphan" cleanup).
fn orphans(picture: &Picture, live: &BTreeSet<Uuid>) -> Vec<(String, Uuid)> {
    picture
        .iter()
        .filter_map(|(n, i)| i.filter(|i| !live.contains(i)).map(|i| (n.clone(), i)))
        .collect()
}

/// Three nodes; x holds instance A, y holds C, z is free.
async fn setup(app: &App) -> (Uuid, Uuid) {
    let (a, c) = (Uuid::new_v4(), Uuid::new_v4());
    for name in ["x", "y", "z"] {
        let r = app
            .call_if(
                Method::POST,
                "/v1/nodes",
                Some(json!({"driver": "fake-hardware", "name": name})),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    assert_eq!(
        app.set_instance("x", Some(a), None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.set_instance("y", Some(c), None).await.status,
        StatusCode::OK
    );
    (a, c)
}

/// While the reconciler works from its list: A is deleted (x's claim
/// cleared) and B is scheduled onto x. Returns B.
async fn reschedule_x(app: &App) -> Uuid {
    let b = Uuid::new_v4();
    assert_eq!(
        app.set_instance("x", None, None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.set_instance("x", Some(b), None).await.status,
        StatusCode::OK
    );
    b
}

#[tokio::test]
async fn naive_reconciler_orphans_a_fresh_claim() {
    let app = spawn_app().await;
    let (a, c) = setup(&app).await;

    // The reconciler lists (x → A), then takes its time.
    let (picture, _) = list(&app).await;
    assert_eq!(picture["x"], Some(a));
    let b = reschedule_x(&app).await;
    // Its instance inventory is current: A is gone, B and C live.
    let live: BTreeSet<Uuid> = [b, c].into();

    // Acting on the stale list: x "holds the dead instance A" → clear it.
    let doomed = orphans(&picture, &live);
    assert_eq!(doomed, vec![("x".to_string(), a)]);
    for (node, _) in &doomed {
        let r = app.set_instance(node, None, None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    // The race: B's claim on x is gone; B runs on a node nobody owns.
    assert_eq!(app.instance_of("x").await, None, "B was orphaned");
}

#[tokio::test]
async fn list_then_watch_from_the_lists_revision_sees_the_new_claim() {
    let app = spawn_app().await;
    let (a, c) = setup(&app).await;

    let (mut picture, rev) = list(&app).await;
    assert_eq!(picture["x"], Some(a));
    let b = reschedule_x(&app).await;
    let live: BTreeSet<Uuid> = [b, c].into();

    // Before acting, catch up from exactly the list's revision: both
    // changes of x arrive, in order, and nothing before the list.
    let (now, seen) = watch(&app, &mut picture, rev).await;
    assert_eq!(
        seen.len(),
        2,
        "exactly x's two changes since the list: {seen:?}"
    );
    assert!(seen.iter().all(|r| *r > rev));
    assert_eq!(picture["x"], Some(b));
    assert!(orphans(&picture, &live).is_empty(), "{picture:?}");
    assert_eq!(app.instance_of("x").await, Some(b));

    // Nothing more until something changes.
    let (again, seen) = watch(&app, &mut picture, now).await;
    assert!(seen.is_empty());
    assert_eq!(again, now);
}

#[tokio::test]
async fn a_write_from_a_stale_picture_with_if_match_is_refused() {
    let app = spawn_app().await;
    let (a, c) = setup(&app).await;

    // The reconciler's picture of x, with x's revision (ETag).
    let r = app.call_if(Method::GET, "/v1/nodes/x", None, None).await;
    let x_rev = r.revision("etag");
    assert_eq!(instance(&r.body), Some(a));
    let b = reschedule_x(&app).await;

    // Acting on the stale picture, but conditionally: refused, B intact.
    let r = app.set_instance("x", None, Some(x_rev)).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED, "{}", r.body);
    assert_eq!(app.instance_of("x").await, Some(b));

    // A current picture (the refused writer re-reads) decides correctly.
    let r = app.call_if(Method::GET, "/v1/nodes/x", None, None).await;
    assert_eq!(instance(&r.body), Some(b));
    let live: BTreeSet<Uuid> = [b, c].into();
    assert!(instance(&r.body).is_none_or(|i| live.contains(&i)));
    // And a conditional write at the current revision goes through.
    let fresh = r.revision("etag");
    let r = app
        .call_if(
            Method::PATCH,
            "/v1/nodes/x",
            Some(json!([{"op": "add", "path": "/extra/checked", "value": true}])),
            Some(fresh),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

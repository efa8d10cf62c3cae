//! The API served on 127.0.0.1:0 over a real SQLite store, driven with
//! reqwest the way the `baremetal` CLI and openstacksdk drive Ironic.

use crate::common::{App, Options, Reply, V};
use ferric_api::auth::{Auth, Htpasswd};
use ferric_conductor::drivers::fake::FakeHardware;
use ferric_conductor::drivers::{Drivers, HardwareConfig, InterfaceKind};
use ferric_core::PowerState;
use ferric_store::testing::{Engine, TestStore};
use ferric_store::Store as _;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn spawn_app() -> App {
    spawn_app_with(None).await
}

async fn spawn_app_with(fake: Option<Arc<FakeHardware>>) -> App {
    spawn_app_opts(fake, 16, Duration::from_millis(20)).await
}

async fn spawn_app_opts(fake: Option<Arc<FakeHardware>>, workers: u32, step: Duration) -> App {
    spawn_app_full(
        fake.map(|f| Drivers::new().with(f)),
        workers,
        step,
        Auth::none(),
    )
    .await
}

async fn spawn_app_full(drivers: Option<Drivers>, workers: u32, step: Duration, auth: Auth) -> App {
    // A family registered by another component shows in `/metrics` too.
    let extra = prometheus_client::metrics::gauge::Gauge::<i64>::default();
    extra.set(1);
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register("ferric_test_extra", "Registered outside the API", extra);
    Options::new()
        .locked_retry(3, Duration::from_millis(50))
        .workers(workers)
        .step(step)
        .auth(auth)
        .registry(registry)
        .drivers(drivers)
        .spawn()
        .await
        .unwrap()
}

/// The helpers of these tests, on top of [`crate::common::Api`]'s.
impl App {
    async fn create(&self, name: &str) -> Value {
        let r = self
            .send(
                Method::POST,
                "/v1/nodes",
                json!({"driver": "fake-hardware", "name": name}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.body
    }

    async fn provision(&self, ident: &str, target: &str) -> Reply {
        self.send(
            Method::PUT,
            &format!("/v1/nodes/{ident}/states/provision"),
            json!({"target": target}),
        )
        .await
    }

    /// Poll like `baremetal --wait`: fail on "error" / "* failed", stop at `state`.
    async fn wait_for(&self, ident: &str, state: &str) -> Value {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let n = self.node(ident).await;
            let ps = n["provision_state"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert!(
                ps != "error" && !ps.ends_with(" failed"),
                "node failed: {n}"
            );
            if ps == state && n["target_provision_state"].is_null() && n["reservation"].is_null() {
                return n;
            }
            assert!(Instant::now() < until, "node never reached {state}: {n}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn wait_power(&self, ident: &str, power: &str) -> Value {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let n = self.node(ident).await;
            if n["power_state"] == power
                && n["target_power_state"].is_null()
                && n["reservation"].is_null()
            {
                return n;
            }
            assert!(Instant::now() < until, "node never reached {power}: {n}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A new fake node, managed (`manageable`, unlocked).
    async fn manageable(&self, name: &str) -> Value {
        self.create(name).await;
        self.provision(name, "manage").await;
        self.wait_for(name, "manageable").await
    }

    /// Add `driver_info.{key} = value` (a fake BMC knob).
    async fn set_driver_info(&self, ident: &str, key: &str, value: &str) {
        let r = self
            .send(
                Method::PATCH,
                &format!("/v1/nodes/{ident}"),
                json!([{"op": "add", "path": format!("/driver_info/{key}"), "value": value}]),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }

    /// Poll until nobody holds the node and it is in provision state
    /// `state` (failed states included, unlike `wait_for`).
    async fn wait_unlocked_in(&self, ident: &str, state: &str) -> Value {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let n = self.node(ident).await;
            if n["provision_state"] == state && n["reservation"].is_null() {
                return n;
            }
            assert!(Instant::now() < until, "node never settled in {state}: {n}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Fields that change without any request (nothing does, today) are
/// compared whole: a rejected request must leave the node as it was.
async fn assert_unchanged(app: &App, ident: &str, before: &Value) {
    let after = app.node(ident).await;
    assert_eq!(&after, before, "a rejected request changed the node");
}

#[tokio::test]
async fn full_lifecycle_like_the_baremetal_cli() {
    let app = spawn_app().await;

    // create
    let r = app
        .send(
            Method::POST,
            "/v1/nodes",
            json!({
                "driver": "fake-hardware",
                "name": "n1",
                "driver_info": {"redfish_address": "http://bmc", "redfish_password": "hunter2"},
                "properties": {"cpus": 8},
            }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let uuid = r.body["uuid"].as_str().unwrap().to_string();
    assert_eq!(
        r.header("location").unwrap(),
        format!("{}/v1/nodes/{uuid}", app.base)
    );
    assert_eq!(r.body["provision_state"], "enroll");
    assert_eq!(r.body["power_state"], Value::Null);
    assert_eq!(r.body["driver_info"]["redfish_password"], "******");
    assert_eq!(r.body["driver_info"]["redfish_address"], "http://bmc");
    assert_eq!(r.body["power_interface"], "fake");
    assert_eq!(r.body["conductor"], "cond-a");
    assert_eq!(
        r.body["links"][0]["href"],
        format!("{}/v1/nodes/{uuid}", app.base)
    );
    assert!(
        r.body.as_object().unwrap().len() >= 60,
        "full node document expected"
    );

    // list
    let r = app.get("/v1/nodes").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.header("x-ferric-revision")
            .unwrap()
            .parse::<i64>()
            .unwrap()
            > 0
    );
    let items = r.body["nodes"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    let keys: Vec<&String> = items[0].as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 7, "default list fields: {keys:?}");
    assert_eq!(items[0]["name"], "n1");
    assert!(r.body.get("next").is_none());
    let r = app.get("/v1/nodes/detail").await;
    assert_eq!(r.body["nodes"][0]["driver"], "fake-hardware");
    let r = app.get("/v1/nodes/?fields=uuid,provision_state").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["nodes"][0]["provision_state"], "enroll");
    assert!(r.body["nodes"][0].get("name").is_none());

    // show by name, with fields
    let n = app.node("n1").await;
    assert_eq!(n["uuid"], uuid.as_str());
    let r = app.get("/v1/nodes/n1?fields=uuid,power_state").await;
    assert_eq!(r.body["uuid"], uuid.as_str());
    assert!(r.body.get("driver").is_none());

    // patch
    let r = app
        .send(
            Method::PATCH,
            "/v1/nodes/n1",
            json!([
                {"op": "add", "path": "/name", "value": "n2"},
                {"op": "add", "path": "/extra/rack", "value": "r1"},
                {"op": "remove", "path": "/properties/cpus"},
            ]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["name"], "n2");
    assert_eq!(r.body["extra"]["rack"], "r1");
    assert_eq!(r.body["properties"], json!({}));
    assert_eq!(r.body["driver_info"]["redfish_password"], "******");
    assert_eq!(app.get("/v1/nodes/n1").await.status, StatusCode::NOT_FOUND);

    // manage: 202, Location, target visible at once
    let r = app.provision("n2", "manage").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.body, Value::Null);
    assert_eq!(
        r.header("location").unwrap(),
        format!("{}/v1/nodes/n2/states", app.base)
    );
    let n = app.node("n2").await;
    assert!(
        n["target_provision_state"] == "manageable" || n["provision_state"] == "manageable",
        "{n}"
    );
    app.wait_for("n2", "manageable").await;

    // provide → cleaning → available
    let r = app.provision("n2", "provide").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let n = app.node("n2").await;
    assert!(n["target_provision_state"] == "available" || n["provision_state"] == "available");
    app.wait_for("n2", "available").await;

    // deploy → active, powered on
    let r = app.provision("n2", "active").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let n = app.wait_for("n2", "active").await;
    assert_eq!(n["power_state"], "power on");

    // power off / on
    let r = app
        .send(
            Method::PUT,
            "/v1/nodes/n2/states/power",
            json!({"target": "power off"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert!(r
        .header("location")
        .unwrap()
        .ends_with("/v1/nodes/n2/states"));
    app.wait_power("n2", "power off").await;
    let r = app
        .send(
            Method::PUT,
            "/v1/nodes/n2/states/power",
            json!({"target": "power on", "timeout": 30}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    app.wait_power("n2", "power on").await;
    let r = app.get("/v1/nodes/n2/states").await;
    assert_eq!(r.body["power_state"], "power on");
    assert_eq!(r.body["provision_state"], "active");

    // maintenance set / unset (unset sends no body, octet-stream)
    let r = app
        .send(
            Method::PUT,
            "/v1/nodes/n2/maintenance",
            json!({"reason": "fan"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let n = app.node("n2").await;
    assert_eq!(n["maintenance"], true);
    assert_eq!(n["maintenance_reason"], "fan");
    let r = app.get("/v1/nodes?maintenance=True").await;
    assert_eq!(r.body["nodes"].as_array().unwrap().len(), 1);
    let r = app.get("/v1/nodes?maintenance=False").await;
    assert_eq!(r.body["nodes"].as_array().unwrap().len(), 0);
    let req = app
        .http
        .delete(format!("{}/v1/nodes/n2/maintenance", app.base))
        .header(V, "latest")
        .header("content-type", "application/octet-stream");
    let r = app.finish(req).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let n = app.node("n2").await;
    assert_eq!(n["maintenance"], false);
    assert_eq!(n["maintenance_reason"], Value::Null);

    // validate
    let r = app.get("/v1/nodes/n2/validate").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["power"]["result"], true);
    assert_eq!(r.body["deploy"]["result"], true);

    // delete refused while active
    let before = app.node("n2").await;
    let r = app
        .call(Method::DELETE, "/v1/nodes/n2", Some("latest"), None)
        .await;
    // Ironic's InvalidState: 409 (no Retry-After: that is NodeLocked's).
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert!(r.header("retry-after").is_none());
    assert!(r.fault().contains("active"), "{}", r.fault());
    assert_unchanged(&app, "n2", &before).await;

    // undeploy → deleting → cleaning → available, powered off
    let r = app.provision("n2", "deleted").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let n = app.wait_for("n2", "available").await;
    assert_eq!(n["power_state"], "power off");

    // delete
    let r = app
        .call(Method::DELETE, "/v1/nodes/n2", Some("latest"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let r = app.get(&format!("/v1/nodes/{uuid}")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.fault(), format!("Node {uuid} could not be found."));
}

#[tokio::test]
async fn bad_input_is_an_ironic_shaped_4xx_and_changes_nothing() {
    let app = spawn_app().await;
    let n = app.create("bad1").await;
    let uuid = n["uuid"].as_str().unwrap().to_string();
    let before = app.node("bad1").await;

    // malformed JSON
    let r = app.raw(Method::POST, "/v1/nodes", "{\"driver\": ").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.fault().contains("Malformed JSON"), "{}", r.fault());
    let r = app
        .raw(Method::PATCH, "/v1/nodes/bad1", "[{\"op\": \"add\",")
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.fault().contains("Malformed JSON"), "{}", r.fault());
    // unknown field
    let r = app
        .send(
            Method::POST,
            "/v1/nodes",
            json!({"driver": "fake-hardware", "colour": "red"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.fault().contains("unknown field `colour`"),
        "{}",
        r.fault()
    );
    let r = app
        .send(
            Method::PUT,
            "/v1/nodes/bad1/states/provision",
            json!({"target": "manage", "force": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.fault().contains("unknown field `force`"), "{}", r.fault());
    // wrong types
    let r = app
        .send(Method::POST, "/v1/nodes", json!({"driver": 5}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.fault().contains("invalid type"), "{}", r.fault());
    let r = app
        .send(
            Method::PATCH,
            "/v1/nodes/bad1",
            json!([{"op": "replace", "path": "/maintenance", "value": "yes"}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.fault().contains("/maintenance"), "{}", r.fault());
    let r = app
        .send(Method::PATCH, "/v1/nodes/bad1", json!({"op": "add"}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // read-only and unknown patch paths
    let r = app
        .send(
            Method::PATCH,
            "/v1/nodes/bad1",
            json!([{"op": "replace", "path": "/provision_state", "value": "active"}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.fault().contains("internal attribute"), "{}", r.fault());
    let r = app
        .send(
            Method::PATCH,
            "/v1/nodes/bad1",
            json!([{"op": "add", "path": "/name", "value": "ok-name"}, {"op": "add", "path": "/nope", "value": 1}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // bad uuid / name in the path, bad uuid in the body
    let r = app.get("/v1/nodes/not%20a%20name!").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.fault().contains("Expected a logical name or UUID"),
        "{}",
        r.fault()
    );
    let r = app
        .send(
            Method::POST,
            "/v1/nodes",
            json!({"driver": "fake-hardware", "uuid": "1234"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.fault().contains("uuid") || r.fault().contains("UUID"),
        "{}",
        r.fault()
    );
    // unknown driver
    let r = app
        .send(Method::POST, "/v1/nodes", json!({"driver": "ipmi"}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.fault().contains("No valid host"), "{}", r.fault());
    // duplicate name
    let r = app
        .send(
            Method::POST,
            "/v1/nodes",
            json!({"driver": "fake-hardware", "name": "bad1"}),
        )
        .await;
    // Ironic's DuplicateName: 409, without Retry-After.
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert!(r.header("retry-after").is_none());
    // huge body
    let huge = format!(
        "{{\"driver\": \"fake-hardware\", \"extra\": {{\"x\": \"{}\"}}}}",
        "a".repeat(2 << 20)
    );
    let req = app
        .http
        .post(format!("{}/v1/nodes", app.base))
        .header(V, "latest")
        .header("content-type", "application/json")
        .body(huge);
    let r = app.finish(req).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.fault().contains("larger than"), "{}", r.fault());
    // unknown node
    let r = app.get("/v1/nodes/ghost").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.fault(), "Node ghost could not be found.");
    let r = app.provision("ghost", "manage").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // invalid transitions list what is allowed
    let r = app.provision("bad1", "active").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let f = r.fault();
    assert!(
        f.contains("can not be performed") && f.contains("\"enroll\""),
        "{f}"
    );
    assert!(f.contains("manage"), "{f}");
    let r = app.provision("bad1", "explode").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.fault().contains("explode"));
    let r = app
        .send(
            Method::PUT,
            "/v1/nodes/bad1/states/power",
            json!({"target": "power sideways"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // clean without steps
    let r = app.provision("bad1", "clean").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.fault().contains("clean_steps"));
    // bad query parameters
    let r = app.get("/v1/nodes?limit=abc").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = app.get("/v1/nodes?bogus=1").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.fault().contains("bogus"), "{}", r.fault());
    let r = app.get("/v1/nodes/bad1?fields=uuid,nonsense").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.fault().contains("nonsense"));
    // unknown routes and methods still get the Ironic body and version headers
    let r = app.get("/v1/chassis-of-doom").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    r.fault();
    assert!(r.header("x-openstack-ironic-api-maximum-version").is_some());
    let r = app
        .call(
            Method::POST,
            "/v1/nodes/bad1",
            Some("latest"),
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    r.fault();

    assert_unchanged(&app, &uuid, &before).await;
    let r = app.get("/v1/nodes").await;
    assert_eq!(
        r.body["nodes"].as_array().unwrap().len(),
        1,
        "no node was created"
    );
}

#[tokio::test]
async fn version_negotiation_follows_ironic() {
    let app = spawn_app().await;
    // absent → 1.1
    let r = app.call(Method::GET, "/v1", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header(V), Some("1.1"));
    assert_eq!(
        r.header("x-openstack-ironic-api-minimum-version"),
        Some("1.1")
    );
    assert_eq!(
        r.header("x-openstack-ironic-api-maximum-version"),
        Some("1.115")
    );
    assert!(r
        .header("x-openstack-request-id")
        .unwrap()
        .starts_with("req-"));
    assert_eq!(r.body["id"], "v1");
    assert_eq!(r.body["version"]["version"], "1.115");
    assert_eq!(
        r.body["media_types"]["type"],
        "application/vnd.openstack.ironic.v1+json"
    );
    assert!(r.body.get("conductors").is_none(), "conductors need 1.49");
    let r = app.call(Method::GET, "/v1/", Some("1.49"), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.get("conductors").is_some());
    // latest → max
    let r = app.get("/v1/nodes").await;
    assert_eq!(r.header(V), Some("1.115"));
    // the service-qualified header
    let req = app
        .http
        .get(format!("{}/v1/nodes", app.base))
        .header("openstack-api-version", "baremetal 1.50");
    let r = app.finish(req).await;
    assert_eq!(r.header(V), Some("1.50"));
    // out of range and malformed → 406 with min/max but no version
    for bad in ["1.116", "1.0", "2.1", "one", "1.x"] {
        let r = app.call(Method::GET, "/v1/nodes", Some(bad), None).await;
        assert_eq!(r.status, StatusCode::NOT_ACCEPTABLE, "{bad}");
        assert_eq!(
            r.header("x-openstack-ironic-api-minimum-version"),
            Some("1.1")
        );
        assert_eq!(
            r.header("x-openstack-ironic-api-maximum-version"),
            Some("1.115")
        );
        assert_eq!(r.header(V), None);
        let inner: Value = serde_json::from_str(r.body["error_message"].as_str().unwrap()).unwrap();
        assert_eq!(inner["code"], 406);
        assert!(
            inner["description"]
                .as_str()
                .unwrap()
                .contains("[1.1, 1.115]"),
            "{inner}"
        );
    }
    let r = app
        .call(Method::GET, "/v1/nodes", Some("1.116"), None)
        .await;
    let inner: Value = serde_json::from_str(r.body["error_message"].as_str().unwrap()).unwrap();
    assert_eq!(
        inner["description"],
        "Version 1.116 was requested but the minor version is not supported by this service. The supported version range is: [1.1, 1.115]."
    );
    // root document (openstacksdk discovery), with the request's host
    let r = app.call(Method::GET, "/", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["name"], "OpenStack Ironic API");
    assert_eq!(r.body["versions"][0]["min_version"], "1.1");
    assert_eq!(r.body["default_version"]["version"], "1.115");
    assert_eq!(
        r.body["default_version"]["links"][0]["href"],
        format!("{}/v1/", app.base)
    );
    // per-version behaviour: 1.1 starts nodes in available, shown as null; no names
    let r = app
        .call(
            Method::POST,
            "/v1/nodes",
            Some("1.10"),
            Some(json!({"driver": "fake-hardware"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["provision_state"], "available");
    let uuid = r.body["uuid"].as_str().unwrap().to_string();
    let r = app
        .call(Method::GET, &format!("/v1/nodes/{uuid}"), None, None)
        .await;
    assert_eq!(r.body["provision_state"], Value::Null);
    assert!(r.body.get("name").is_none(), "names arrived in 1.5");
    assert!(
        r.body.get("power_interface").is_none(),
        "interfaces arrived in 1.31"
    );
    let r = app
        .call(
            Method::PATCH,
            &format!("/v1/nodes/{uuid}"),
            Some("1.4"),
            Some(json!([{"op": "add", "path": "/name", "value": "late"}])),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_ACCEPTABLE);
    assert!(r.fault().contains("1.5"), "{}", r.fault());
    let r = app
        .call(
            Method::GET,
            &format!("/v1/nodes/{uuid}?fields=conductor"),
            Some("1.48"),
            None,
        )
        .await;
    // Ironic's check_allowed_fields: a field newer than the request is 406.
    assert_eq!(r.status, StatusCode::NOT_ACCEPTABLE);
    let r = app
        .call(Method::GET, "/v1/nodes/somename", None, None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // a verb newer than the request's version → 406
    let r = app
        .call(
            Method::PUT,
            &format!("/v1/nodes/{uuid}/states/provision"),
            Some("1.3"),
            Some(json!({"target": "manage"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_ACCEPTABLE);
    assert!(r.fault().contains("1.4"));
    // conductors need 1.49
    let r = app
        .call(Method::GET, "/v1/conductors", Some("1.48"), None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_locked_node_is_409_with_retry_after_and_unchanged() {
    let app = spawn_app().await;
    let n = app.create("busy").await;
    let uuid: uuid::Uuid = n["uuid"].as_str().unwrap().parse().unwrap();
    let before = app.node("busy").await;
    let held = app
        .tm
        .acquire(uuid)
        .purpose("test holder")
        .exclusive()
        .await
        .unwrap();

    let r = app
        .send(
            Method::PATCH,
            "/v1/nodes/busy",
            json!([{"op": "add", "path": "/extra/a", "value": 1}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.header("retry-after"), Some("2"));
    let f = r.fault();
    assert!(
        f.contains("is locked by host cond-a") && f.contains("test holder"),
        "{f}"
    );
    let r = app.provision("busy", "manage").await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.header("retry-after").is_some());
    let r = app
        .send(
            Method::PUT,
            "/v1/nodes/busy/states/power",
            json!({"target": "power on"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = app
        .call(Method::DELETE, "/v1/nodes/busy", Some("latest"), None)
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    // reads are not blocked
    let mut during = app.node("busy").await;
    assert_eq!(during["reservation"], "cond-a");
    during["reservation"] = Value::Null;
    assert_eq!(during, before);

    held.release().await.unwrap();
    assert_unchanged(&app, "busy", &before).await;
    let r = app
        .send(
            Method::PATCH,
            "/v1/nodes/busy",
            json!([{"op": "add", "path": "/extra/a", "value": 1}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

#[tokio::test]
async fn pagination_follows_next_links() {
    let app = spawn_app().await;
    for i in 0..5 {
        app.create(&format!("p{i}")).await;
    }
    let mut seen = Vec::new();
    let mut url = "/v1/nodes?limit=2".to_string();
    loop {
        let r = app.get(&url).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        for n in r.body["nodes"].as_array().unwrap() {
            seen.push(n["uuid"].as_str().unwrap().to_string());
        }
        match r.body.get("next").and_then(Value::as_str) {
            Some(next) => url = next.strip_prefix(&app.base).unwrap().to_string(),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, seen, "pages are in uuid order without repeats");
    // Renaming onto a taken name: 409 (Ironic's DuplicateName), nothing changes.
    let before = app.node("p0").await;
    let r = app
        .send(
            Method::PATCH,
            "/v1/nodes/p0",
            json!([{"op": "replace", "path": "/name", "value": "p1"}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert!(r.fault().contains("p1"), "{}", r.fault());
    assert_unchanged(&app, "p0", &before).await;
    let r = app
        .get("/v1/nodes?provision_state=enroll&driver=fake-hardware")
        .await;
    assert_eq!(r.body["nodes"].as_array().unwrap().len(), 5);
    let r = app.get("/v1/nodes?provision_state=active").await;
    assert_eq!(r.body["nodes"].as_array().unwrap().len(), 0);
    let r = app.get("/v1/nodes?detail=True&limit=1").await;
    assert!(r.body["nodes"][0].get("driver_info").is_some());
    assert!(r.body["next"].as_str().unwrap().contains("detail=True"));
}

#[tokio::test]
async fn conductors_and_drivers() {
    let app = spawn_app().await;
    let r = app.get("/v1/conductors").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["conductors"][0]["hostname"], "cond-a");
    assert_eq!(r.body["conductors"][0]["alive"], true);
    let r = app.get("/v1/conductors/cond-a").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["drivers"], json!(["fake-hardware"]));
    let r = app.get("/v1/conductors/nobody").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.fault(), "Conductor nobody could not be found.");
    let r = app.get("/v1/drivers").await;
    let names: Vec<&str> = r.body["drivers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["fake-hardware", "redfish"]);
    let text = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("ferric_api_requests_total{method=\"GET\",route=\"/v1/conductors/{hostname}\",status=\"404\"} 1"),
        "{text}"
    );
    assert!(text.contains("route=\"/v1/drivers\""), "{text}");
    assert!(text.contains("\nferric_test_extra 1\n"), "{text}");
    assert_eq!(r.body["drivers"][0]["hosts"], json!(["cond-a"]));
    let r = app.get("/v1/drivers/fake-hardware").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["default_power_interface"], "fake");
    assert_eq!(
        app.get("/v1/drivers/ipmi").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn if_match_guards_patch_and_changes_feed_has_no_gaps() {
    let app = spawn_app().await;
    let list = app.get("/v1/nodes").await;
    let rev0: i64 = list.header("x-ferric-revision").unwrap().parse().unwrap();

    let n = app.create("w1").await;
    let r = app.get("/v1/nodes/w1").await;
    let rev: i64 = r.header("x-ferric-revision").unwrap().parse().unwrap();
    assert_eq!(r.header("etag"), Some(format!("\"{rev}\"").as_str()));
    let stale = rev - 1;
    let req = app
        .http
        .patch(format!("{}/v1/nodes/w1", app.base))
        .header(V, "latest")
        .header("if-match", stale.to_string())
        .json(&json!([{"op": "add", "path": "/instance_uuid", "value": uuid::Uuid::new_v4().to_string()}]));
    let r = app.finish(req).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED, "{}", r.body);
    assert_eq!(app.node("w1").await["instance_uuid"], Value::Null);
    let claim = uuid::Uuid::new_v4().to_string();
    let req = app
        .http
        .patch(format!("{}/v1/nodes/w1", app.base))
        .header(V, "latest")
        .header("if-match", format!("\"{rev}\""))
        .json(&json!([{"op": "add", "path": "/instance_uuid", "value": claim}]));
    let r = app.finish(req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["instance_uuid"], claim.as_str());

    // Every change since the list, in order.
    let r = app.get(&format!("/v1/nodes/changes?since={rev0}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let changes = r.body["changes"].as_array().unwrap();
    assert!(changes.len() >= 2, "{}", r.body);
    assert_eq!(changes[0]["kind"], "created");
    assert_eq!(changes[0]["uuid"], n["uuid"]);
    let revs: Vec<i64> = changes
        .iter()
        .map(|c| c["revision"].as_i64().unwrap())
        .collect();
    assert!(revs.windows(2).all(|w| w[0] < w[1]), "{revs:?}");
    let last = r.body["revision"].as_i64().unwrap();
    assert_eq!(last, *revs.last().unwrap());

    // Out-of-range numbers are refused with Ironic's body, never a panic
    // (timeout=1e308 once overflowed Duration::from_secs_f64).
    for q in [
        "timeout=1e308",
        "timeout=61",
        "timeout=-1",
        "timeout=nan",
        "limit=1001",
        "limit=0",
    ] {
        let r = app
            .get(&format!("/v1/nodes/changes?since={last}&{q}"))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}: {}", r.body);
        let _ = r.fault();
    }

    // Long poll: nothing yet, then a change arrives while waiting.
    let r = app
        .get(&format!("/v1/nodes/changes?since={last}&timeout=0"))
        .await;
    assert_eq!(r.body["changes"].as_array().unwrap().len(), 0);
    let poll = {
        let http = app.http.clone();
        let url = format!("{}/v1/nodes/changes?since={last}&timeout=10", app.base);
        tokio::spawn(async move {
            http.get(url)
                .header(V, "latest")
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.send(
        Method::PATCH,
        "/v1/nodes/w1",
        json!([{"op": "add", "path": "/extra/k", "value": "v"}]),
    )
    .await;
    let body = poll.await.unwrap();
    let changes = body["changes"].as_array().unwrap();
    assert!(!changes.is_empty(), "{body}");
    assert_eq!(changes[0]["node"]["extra"]["k"], "v");
}

#[tokio::test]
async fn registered_drivers_do_the_hardware_work() {
    let fake = Arc::new(FakeHardware::new());
    let app = spawn_app_with(Some(fake.clone())).await;
    let n = app.create("hw").await;
    let uuid: uuid::Uuid = n["uuid"].as_str().unwrap().parse().unwrap();

    assert_eq!(
        app.provision("hw", "manage").await.status,
        StatusCode::ACCEPTED
    );
    app.wait_for("hw", "manageable").await;
    assert_eq!(
        app.provision("hw", "provide").await.status,
        StatusCode::ACCEPTED
    );
    app.wait_for("hw", "available").await;
    assert_eq!(
        app.provision("hw", "active").await.status,
        StatusCode::ACCEPTED
    );
    let n = app.wait_for("hw", "active").await;
    assert_eq!(n["power_state"], "power on");
    assert_eq!(fake.bmc_power(uuid), PowerState::On);

    let r = app
        .send(
            Method::PUT,
            "/v1/nodes/hw/states/power",
            json!({"target": "power off"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    app.wait_power("hw", "power off").await;
    assert_eq!(fake.bmc_power(uuid), PowerState::Off);

    // A failing BMC: the error lands in last_error, the power state stays.
    app.set_driver_info("hw", "fake_fail_power", "BMC unreachable")
        .await;
    let r = app
        .send(
            Method::PUT,
            "/v1/nodes/hw/states/power",
            json!({"target": "power on"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let until = Instant::now() + Duration::from_secs(20);
    let n = loop {
        let n = app.node("hw").await;
        if n["reservation"].is_null() && n["target_power_state"].is_null() {
            break n;
        }
        assert!(Instant::now() < until, "power action never ended: {n}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(n["power_state"], "power off");
    assert!(
        n["last_error"]
            .as_str()
            .unwrap()
            .contains("BMC unreachable"),
        "{n}"
    );

    // Validation reports the driver's verdict.
    app.set_driver_info("hw", "fake_invalid", "no address")
        .await;
    let r = app.get("/v1/nodes/hw/validate").await;
    assert_eq!(r.body["power"]["result"], false);
    assert_eq!(r.body["power"]["reason"], "no address");
    assert_eq!(r.body["console"]["result"], true);

    // A failing deploy ends in "deploy failed" with the reason.
    let r = app.provision("hw", "deleted").await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    app.wait_for("hw", "available").await;
    let r = app
        .send(
            Method::PATCH,
            "/v1/nodes/hw",
            json!([
                {"op": "remove", "path": "/driver_info/fake_invalid"},
                {"op": "add", "path": "/driver_info/fake_fail_deploy", "value": "disk on fire"},
            ]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        app.provision("hw", "active").await.status,
        StatusCode::ACCEPTED
    );
    let n = app.wait_unlocked_in("hw", "deploy failed").await;
    assert!(
        n["last_error"].as_str().unwrap().contains("disk on fire"),
        "{n}"
    );
}

#[tokio::test]
async fn no_free_worker_is_503_and_the_node_is_restored() {
    // One worker slot, held by a slow power action.
    let app = spawn_app_opts(None, 1, Duration::from_secs(3)).await;
    app.create("w-a").await;
    app.create("w-b").await;
    let before = app.node("w-b").await;
    let r = app
        .send(
            Method::PUT,
            "/v1/nodes/w-a/states/power",
            json!({"target": "power on"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);

    let r = app.provision("w-b", "manage").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert!(r.header("retry-after").is_some());
    assert!(
        r.fault().contains("free conductor workers"),
        "{}",
        r.fault()
    );
    let after = app.node("w-b").await;
    assert_eq!(after["provision_state"], "enroll");
    assert_eq!(after["target_provision_state"], Value::Null);
    assert_eq!(after["reservation"], Value::Null);
    assert_eq!(after["last_error"], "No free conductor workers available");
    assert_eq!(after["name"], before["name"]);

    // A power action that cannot start leaves no target power state behind.
    let r = app
        .send(
            Method::PUT,
            "/v1/nodes/w-b/states/power",
            json!({"target": "power on"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    let after = app.node("w-b").await;
    assert_eq!(after["target_power_state"], Value::Null, "{after}");
    assert_eq!(after["power_state"], before["power_state"]);
    assert_eq!(after["reservation"], Value::Null);
    assert_eq!(after["last_error"], "No free conductor workers available");
}

#[tokio::test]
async fn credentials_are_required_when_configured() {
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let auth = Auth::none()
        .with_tokens(["tok-1".to_string()])
        .with_htpasswd(Htpasswd::parse(&format!("admin:{hash}")).unwrap());
    let app = spawn_app_full(None, 4, Duration::from_millis(20), auth).await;

    // Version discovery stays public.
    let r = app.call(Method::GET, "/", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app.call(Method::GET, "/v1/", Some("latest"), None).await;
    assert_eq!(r.status, StatusCode::OK);

    let r = app.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["openapi"], "3.0.3");
    assert!(r.body["paths"]["/v1/nodes/{ident}/states/provision"]["put"].is_object());

    // Everything else needs credentials; the 401 still has the version headers.
    let r = app.get("/v1/nodes").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.fault().contains("authentication"), "{}", r.fault());
    assert_eq!(
        r.header("x-openstack-ironic-api-maximum-version"),
        Some("1.115")
    );
    assert!(r.header("www-authenticate").unwrap().starts_with("Basic"));
    let req = app
        .http
        .get(format!("{}/v1/nodes", app.base))
        .header(V, "latest")
        .header("x-auth-token", "wrong");
    assert_eq!(app.finish(req).await.status, StatusCode::UNAUTHORIZED);

    // A token (keystoneauth's X-Auth-Token or a bearer header) or basic works.
    let req = app
        .http
        .get(format!("{}/v1/nodes", app.base))
        .header(V, "latest")
        .header("x-auth-token", "tok-1");
    assert_eq!(app.finish(req).await.status, StatusCode::OK);
    let req = app
        .http
        .get(format!("{}/v1/nodes", app.base))
        .header(V, "latest")
        .bearer_auth("tok-1");
    assert_eq!(app.finish(req).await.status, StatusCode::OK);
    let req = app
        .http
        .post(format!("{}/v1/nodes", app.base))
        .header(V, "latest")
        .basic_auth("admin", Some("s3cret"))
        .json(&json!({"driver": "fake-hardware", "name": "authed"}));
    assert_eq!(app.finish(req).await.status, StatusCode::CREATED);
    let req = app
        .http
        .get(format!("{}/v1/nodes/authed", app.base))
        .header(V, "latest")
        .basic_auth("admin", Some("wrong"));
    assert_eq!(app.finish(req).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn graceful_shutdown_is_not_held_up_by_long_polls() {
    let store = TestStore::open_with(Engine::Sqlite, |o| {
        o.heartbeat_timeout = Duration::from_secs(600)
    })
    .await
    .unwrap();
    store.conductor("cond-a").await;
    // Served here, not by `Options::serve`: the shutdown signal is the test's.
    let (state, _tm) = Options::new().state(store.store.clone()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(ferric_api::serve(listener, state, async move {
        let _ = stop_rx.await;
    }));
    let poll = tokio::spawn(async move {
        reqwest::Client::new()
            .get(format!("http://{addr}/v1/nodes/changes?since=0&timeout=60"))
            .header(V, "latest")
            .send()
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_tx.send(()).unwrap();
    // A hang guard, not a performance check: without the fix this waits 60 s.
    let ended = tokio::time::timeout(Duration::from_secs(30), server).await;
    assert!(
        ended.is_ok(),
        "server did not stop while a long poll was open"
    );
    let resp = poll.await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

/// The hardware types and the implementations each supports, written out
/// from Ironic's model (the oracle: not read from the registry under test).
fn supported(driver: &str, kind: InterfaceKind, name: &str) -> bool {
    let enabled = HardwareConfig::default();
    if !enabled.enabled(kind).iter().any(|e| e == name) {
        return false;
    }
    match driver {
        // fake-hardware accepts any enabled implementation (Ironic's special case).
        "fake-hardware" => true,
        "redfish" => match kind {
            InterfaceKind::Power | InterfaceKind::Management => name == "redfish",
            InterfaceKind::Boot => matches!(name, "ipxe" | "pxe" | "redfish-virtual-media"),
            InterfaceKind::Deploy => matches!(name, "direct" | "ramdisk"),
            InterfaceKind::Network => matches!(name, "noop" | "flat"),
            InterfaceKind::Storage => name == "noop",
            other => name == format!("no-{other}"),
        },
        _ => false,
    }
}

/// An interface field set on create or PATCH: `success` with the value
/// shown, or a 400 whose message names the field.
fn check_verdict(r: &Reply, ok: bool, success: StatusCode, field: &str, name: &str, what: &str) {
    let label = format!("{what} {field}={name}");
    if ok {
        assert_eq!(r.status, success, "{label}: {}", r.body);
        assert_eq!(r.body[field], name, "{label}");
    } else {
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{label}: {}", r.body);
        assert!(r.fault().contains(field), "{label}: {}", r.fault());
    }
}

#[tokio::test]
async fn every_hardware_type_and_interface_is_checked_on_create_and_patch() {
    let app = spawn_app().await;
    let registry = Drivers::new();
    assert_eq!(registry.names(), vec!["fake-hardware", "redfish"]);
    for driver in registry.names() {
        let base = app
            .send(Method::POST, "/v1/nodes", json!({"driver": driver}))
            .await;
        assert_eq!(base.status, StatusCode::CREATED, "{}", base.body);
        let uuid = base.body["uuid"].as_str().unwrap().to_string();
        for kind in InterfaceKind::ALL {
            let field = kind.field();
            let mut candidates: Vec<String> = HardwareConfig::default().enabled(kind).to_vec();
            candidates.extend(["redfish-https".to_string(), "bogus".to_string()]);
            for name in candidates {
                let ok = supported(driver, kind, &name);
                let r = app
                    .send(
                        Method::POST,
                        "/v1/nodes",
                        json!({"driver": driver, field.clone(): name}),
                    )
                    .await;
                check_verdict(&r, ok, StatusCode::CREATED, &field, &name, "POST");
                let before = app.node(&uuid).await;
                let r = app
                    .send(
                        Method::PATCH,
                        &format!("/v1/nodes/{uuid}"),
                        json!([{"op": "replace", "path": format!("/{field}"), "value": name}]),
                    )
                    .await;
                check_verdict(&r, ok, StatusCode::OK, &field, &name, "PATCH");
                if !ok {
                    let after = app.node(&uuid).await;
                    assert_eq!(before, after, "a refused PATCH changes nothing");
                }
            }
            // Back to the default, for the next interface.
            let r = app
                .send(
                    Method::PATCH,
                    &format!("/v1/nodes/{uuid}"),
                    json!([{"op": "remove", "path": format!("/{field}")}]),
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        }
        // GET /v1/drivers/{name} is what the registry holds.
        let doc = app.get(&format!("/v1/drivers/{driver}")).await;
        assert_eq!(doc.status, StatusCode::OK);
        for d in registry.describe(driver).unwrap() {
            let k = d.kind.as_str();
            assert_eq!(
                doc.body[format!("default_{k}_interface")],
                json!(d.default),
                "{driver} {k}"
            );
            assert_eq!(
                doc.body[format!("enabled_{k}_interfaces")],
                json!(d.enabled),
                "{driver} {k}"
            );
            for name in &d.enabled {
                assert!(
                    supported(driver, d.kind, name),
                    "{driver} advertises {k} {name}"
                );
            }
        }
    }
    let r = app.get("/v1/drivers/ipmi").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app
        .send(Method::POST, "/v1/nodes", json!({"driver": "ipmi"}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn changing_the_driver_resets_interfaces_to_the_new_defaults() {
    let app = spawn_app().await;
    app.create("mover").await;
    let r = app
        .send(
            Method::PATCH,
            "/v1/nodes/mover",
            json!([
                {"op": "replace", "path": "/driver", "value": "redfish"},
                {"op": "replace", "path": "/deploy_interface", "value": "ramdisk"},
            ]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["power_interface"], "redfish");
    assert_eq!(r.body["boot_interface"], "ipxe");
    assert_eq!(r.body["deploy_interface"], "ramdisk");
    assert_eq!(r.body["rescue_interface"], "no-rescue");
}

#[tokio::test]
async fn verbs_without_an_interface_are_refused() {
    let app = spawn_app().await;
    // fake-hardware takes any enabled implementation: no-rescue, no-inspect.
    let r = app
        .send(
            Method::POST,
            "/v1/nodes",
            json!({"driver": "fake-hardware", "name": "honest",
                   "rescue_interface": "no-rescue", "inspect_interface": "no-inspect"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    app.provision("honest", "manage").await;
    app.wait_for("honest", "manageable").await;
    let r = app.provision("honest", "inspect").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.fault().contains("does not support inspect"),
        "{}",
        r.fault()
    );
    assert_eq!(app.node("honest").await["provision_state"], "manageable");

    app.provision("honest", "provide").await;
    app.wait_for("honest", "available").await;
    app.provision("honest", "active").await;
    app.wait_for("honest", "active").await;
    let r = app
        .send(
            Method::PUT,
            "/v1/nodes/honest/states/provision",
            json!({"target": "rescue", "rescue_password": "pw"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.fault().contains("does not support rescue"),
        "{}",
        r.fault()
    );
    assert_eq!(app.node("honest").await["provision_state"], "active");

    // With the fake rescue interface the same verb works. An active node's
    // interfaces change only in maintenance (Ironic's rule; 409 otherwise).
    let r = app
        .send(
            Method::PATCH,
            "/v1/nodes/honest",
            json!([{"op": "replace", "path": "/rescue_interface", "value": "fake"}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    let r = app
        .send(
            Method::PATCH,
            "/v1/nodes/honest",
            json!([{"op": "replace", "path": "/rescue_interface", "value": "fake"},
                   {"op": "replace", "path": "/maintenance", "value": true}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = app
        .send(
            Method::PATCH,
            "/v1/nodes/honest",
            json!([{"op": "replace", "path": "/maintenance", "value": false}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = app
        .send(
            Method::PUT,
            "/v1/nodes/honest/states/provision",
            json!({"target": "rescue", "rescue_password": "pw"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    app.wait_for("honest", "rescue").await;
}

#[tokio::test]
async fn manage_verifies_the_bmc_and_reads_the_power_state() {
    use ferric_conductor::drivers::redfish::{Redfish, RedfishConfig};
    let quick = Arc::new(Redfish::new(RedfishConfig {
        request_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(1),
        retries: 0,
        ..RedfishConfig::default()
    }));
    let fake = Arc::new(FakeHardware::new());
    let drivers = Drivers::new().with(quick).with(fake.clone());
    let app = spawn_app_full(Some(drivers), 8, Duration::from_millis(10), Auth::none()).await;

    // Missing driver_info: validation fails, back to enroll.
    let r = app
        .send(
            Method::POST,
            "/v1/nodes",
            json!({"driver": "redfish", "name": "no-bmc"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        app.provision("no-bmc", "manage").await.status,
        StatusCode::ACCEPTED
    );
    // The 202 came with the node in `verifying`, locked: enroll and
    // unlocked again means verification ended.
    let n = app.wait_unlocked_in("no-bmc", "enroll").await;
    assert_eq!(n["provision_state"], "enroll", "{n}");
    let e = n["last_error"].as_str().unwrap();
    assert!(
        e.contains("Failed to verify node") && e.contains("power"),
        "{e}"
    );

    // A wrong BMC address: valid settings, but the power state cannot be read.
    let r = app
        .send(
            Method::POST,
            "/v1/nodes",
            json!({"driver": "redfish", "name": "wrong-bmc", "driver_info": {
                "redfish_address": "http://127.0.0.1:9", "redfish_system_id": "/redfish/v1/Systems/1"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        app.provision("wrong-bmc", "manage").await.status,
        StatusCode::ACCEPTED
    );
    let n = app.wait_unlocked_in("wrong-bmc", "enroll").await;
    assert_eq!(n["provision_state"], "enroll", "{n}");
    assert!(
        n["last_error"].as_str().unwrap().contains("power state"),
        "{n}"
    );

    // A working BMC: manageable with the power state it reports.
    app.create("good").await;
    let uuid = uuid::Uuid::parse_str(app.node("good").await["uuid"].as_str().unwrap()).unwrap();
    fake.set_bmc_power(uuid, PowerState::On);
    app.provision("good", "manage").await;
    let n = app.wait_for("good", "manageable").await;
    assert_eq!(n["power_state"], "power on");
    assert!(n["last_error"].is_null());
}

#[tokio::test]
async fn manual_cleaning_runs_the_requested_steps_and_refuses_unknown_ones() {
    let app = spawn_app().await;
    app.manageable("cl").await;
    let before = app.node("cl").await;
    for steps in [
        json!([{"interface": "deploy", "step": "no_such_step"}]),
        json!([{"interface": "rescue", "step": "x"}]),
        json!([{"step": "erase_devices"}]),
        json!(["erase_devices"]),
    ] {
        let r = app
            .send(
                Method::PUT,
                "/v1/nodes/cl/states/provision",
                json!({"target": "clean", "clean_steps": steps}),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{steps}: {}", r.body);
        assert!(
            r.fault().contains("clean_steps") || r.fault().contains("Clean step"),
            "{}",
            r.fault()
        );
        assert_eq!(
            app.node("cl").await,
            before,
            "a refused clean changes nothing"
        );
    }
    let r = app
        .send(
            Method::PUT,
            "/v1/nodes/cl/states/provision",
            json!({"target": "clean", "clean_steps": [
                {"interface": "raid", "step": "delete_configuration"},
                {"interface": "deploy", "step": "erase_devices_metadata", "args": {}},
            ]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let n = app.wait_for("cl", "manageable").await;
    assert_eq!(n["clean_step"], json!({}));
    assert!(
        !n["driver_internal_info"]
            .as_object()
            .unwrap()
            .contains_key("clean_steps"),
        "the steps engine leaves no trace: {n}"
    );
}

#[tokio::test]
async fn abort_in_clean_wait_fails_cleaning_and_clears_the_steps() {
    let app = spawn_app().await;
    app.manageable("ab").await;
    app.set_driver_info("ab", "fake_clean", "wait").await;
    let r = app
        .send(
            Method::PUT,
            "/v1/nodes/ab/states/provision",
            json!({"target": "clean", "clean_steps": [{"interface": "deploy", "step": "erase_devices"}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let n = app.wait_unlocked_in("ab", "clean wait").await;
    let dii = n["driver_internal_info"].as_object().unwrap();
    assert_eq!(
        dii["clean_steps"][0]["step"], "erase_devices",
        "the plan is on the node, for any conductor to continue: {n}"
    );
    let r = app.provision("ab", "abort").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let n = app.node("ab").await;
    assert_eq!(n["provision_state"], "clean failed", "{n}");
    assert!(n["last_error"].as_str().unwrap().contains("aborted"), "{n}");
    assert!(!n["driver_internal_info"]
        .as_object()
        .unwrap()
        .contains_key("clean_steps"));
}

#[tokio::test]
async fn manual_clean_steps_run_in_the_users_order_and_a_failing_one_fails_cleaning() {
    let app = spawn_app().await;
    let steps = json!([
        {"interface": "raid", "step": "delete_configuration"},
        {"interface": "deploy", "step": "erase_devices"},
    ]);
    // Each step in turn is made to fail: the failure names it, so the engine
    // ran the steps before it and stopped there.
    for (node, failing, label) in [
        ("cs-1", "delete_configuration", "raid.delete_configuration"),
        ("cs-2", "erase_devices", "deploy.erase_devices"),
    ] {
        app.manageable(node).await;
        app.set_driver_info(node, "fake_fail_step", failing).await;
        let r = app
            .send(
                Method::PUT,
                &format!("/v1/nodes/{node}/states/provision"),
                json!({"target": "clean", "clean_steps": steps}),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
        let n = app.wait_unlocked_in(node, "clean failed").await;
        let e = n["last_error"].as_str().unwrap();
        assert!(e.contains(&format!("Clean step {label} failed")), "{e}");
        assert_eq!(n["clean_step"], json!({}), "{n}");
    }
}

#[tokio::test]
async fn deploy_is_refused_when_the_driver_does_not_validate() {
    let app = spawn_app().await;
    app.manageable("dv").await;
    app.provision("dv", "provide").await;
    app.wait_for("dv", "available").await;
    app.set_driver_info("dv", "fake_invalid", "no BMC address")
        .await;
    let before = app.node("dv").await;
    let r = app.provision("dv", "active").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(r.fault().contains("no BMC address"), "{}", r.fault());
    assert_eq!(
        app.node("dv").await,
        before,
        "a refused deploy changes nothing"
    );
}

/// Issue 18: node lists and shows are written straight from the nodes; what
/// a client gets is the generic document (`render::node`, narrowed by
/// `render::select`) of the same stored node, on every page, for detail,
/// the default list and a `fields` selection; `Accept-Encoding: gzip` gets
/// the same bytes compressed, and a client that does not ask gets them plain.
#[tokio::test]
async fn lists_show_the_generic_documents_and_gzip_when_asked() {
    use std::io::Read as _;
    let app = spawn_app().await;
    for i in 0..5 {
        let r = app
            .send(
                Method::POST,
                "/v1/nodes",
                json!({
                    "name": format!("g{i}"), "driver": "fake-hardware",
                    "driver_info": {"ipmi_password": "p", "nested": {"token": [1, {"secret": 2}]}},
                    "instance_info": {"configdrive": {"x": 1}, "image_url": "http://i", "root_gb": i},
                    "properties": {"cpus": i}, "extra": {"quote\"d": "a\nb"},
                    "owner": if i % 2 == 0 { Value::from("p1") } else { Value::Null },
                }),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    let base = app.base.clone();
    let v = ferric_api::version::Version::MAX;
    let generic = |n: &ferric_core::Node, conductor: &Value| {
        Value::Object(ferric_api::render::node(n, &base, v, conductor.as_str()))
    };
    for (path, fields) in [
        ("/v1/nodes/detail?limit=2", None),
        (
            "/v1/nodes?limit=2",
            Some(ferric_api::render::LIST_FIELDS.to_vec()),
        ),
        (
            "/v1/nodes?limit=2&fields=uuid,driver_info,instance_info,owner,conductor",
            Some(vec![
                "uuid",
                "driver_info",
                "instance_info",
                "owner",
                "conductor",
            ]),
        ),
    ] {
        let mut url = format!("{base}{path}");
        let mut seen = 0;
        loop {
            let plain = app.http.get(&url).header(V, "latest").send().await.unwrap();
            assert_eq!(plain.status(), StatusCode::OK);
            assert!(plain.headers().get("content-encoding").is_none());
            assert_eq!(plain.headers()["content-type"], "application/json");
            let plain = plain.bytes().await.unwrap();
            let zipped = app
                .http
                .get(&url)
                .header(V, "latest")
                .header("accept-encoding", "gzip")
                .send()
                .await
                .unwrap();
            assert_eq!(zipped.headers()["content-encoding"], "gzip");
            let zipped = zipped.bytes().await.unwrap();
            let mut unzipped = Vec::new();
            flate2::read::GzDecoder::new(&zipped[..])
                .read_to_end(&mut unzipped)
                .unwrap();
            assert_eq!(
                unzipped,
                plain.to_vec(),
                "{url}: gzip carries the same bytes"
            );
            let body: Value = serde_json::from_slice(&plain).unwrap();
            for item in body["nodes"].as_array().unwrap() {
                let uuid: uuid::Uuid = item["uuid"].as_str().unwrap().parse().unwrap();
                let stored = app
                    .store
                    .store
                    .get_node(&ferric_store::NodeIdent::Uuid(uuid))
                    .await
                    .unwrap();
                let conductor = generic(&stored, &Value::Null)["conductor"].clone();
                let conductor = item.get("conductor").cloned().unwrap_or(conductor);
                let mut want = generic(&stored, &conductor);
                if let Some(f) = &fields {
                    let map = want.as_object().unwrap().clone();
                    want = Value::Object(ferric_api::render::select(map, f));
                }
                assert_eq!(item, &want, "{url}");
                seen += 1;
            }
            match body["next"].as_str() {
                Some(next) => url = next.to_string(),
                None => break,
            }
        }
        assert_eq!(seen, 5, "{path}");
    }
    // A show, whole and narrowed, is the generic document too.
    let shown = app.node("g1").await;
    let stored = app
        .store
        .store
        .get_node(&ferric_store::NodeIdent::Name("g1".into()))
        .await
        .unwrap();
    assert_eq!(shown, generic(&stored, &shown["conductor"]));
    assert_eq!(shown["driver_info"]["ipmi_password"], "******");
    assert_eq!(shown["instance_info"]["configdrive"], "******");
    let r = app.get("/v1/nodes/g1?fields=name,extra").await;
    let keys: Vec<&String> = r.body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["extra", "links", "name"]);
    let r = app.get("/v1/nodes/g1?fields=name,bogus").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.fault(), "Field(s) \"bogus\" are not valid");
}

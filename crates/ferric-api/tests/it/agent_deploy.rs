//! The `direct` deploy interface against a scripted agent (issue 14): the
//! conductor side of Ironic's agent protocol — in-band steps fetched at the
//! agent's first call-back, `write_image` sent with the image, checksum and
//! config drive, the command polled on later heartbeats (the node keeps
//! waiting, its timeout restarted), the token on every request, tear-down
//! through `standby.sync` and out-of-band power, cleaning through the
//! agent's steps at the configured priorities, failures into `deploy
//! failed` / `clean failed` with the agent's message. SQLite and
//! PostgreSQL. The real ironic-python-agent drives the same paths in
//! `.ci/agent.sh`.
//!
//! The scripted agent (`crate::scripted_agent`) speaks IPA's command API.

use crate::common::Options;
use crate::scripted_agent::{self, scripted_agent, Script, Shared};
use ferric_conductor::drivers::fake::FakeHardware;
use ferric_conductor::drivers::Drivers;
use ferric_core::PowerState;
use ferric_store::testing::Engine;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

const BOUND: Duration = Duration::from_secs(30);
use crate::scripted_agent::SHA;

struct Env {
    app: crate::common::App,
    fake: Arc<FakeHardware>,
    agent_url: String,
    agent: Shared,
}

async fn env(
    engine: Engine,
    adjust: impl FnOnce(ferric_conductor::ConductorConfig) -> ferric_conductor::ConductorConfig,
) -> Option<Env> {
    let fake = Arc::new(FakeHardware::new());
    let app = Options::new()
        .engine(engine)
        .workers(16)
        .config(adjust)
        .drivers(Some(Drivers::new().with(fake.clone())))
        .spawn()
        .await?;
    let (agent_url, agent) = scripted_agent().await;
    Some(Env {
        app,
        fake,
        agent_url,
        agent,
    })
}

impl Env {
    async fn provision(&self, node: &str, body: Value) -> (StatusCode, Value) {
        self.app
            .json(
                reqwest::Method::PUT,
                &format!("/v1/nodes/{node}/states/provision"),
                body,
            )
            .await
    }

    async fn wait_for(&self, node: &str, state: &str) -> Value {
        let until = Instant::now() + BOUND;
        loop {
            let n = self.app.node(node).await;
            if n["provision_state"] == state && n["reservation"].is_null() {
                return n;
            }
            assert!(Instant::now() < until, "node never reached {state}: {n}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn issue_token(&self, node: Uuid) -> String {
        scripted_agent::issue_token(&self.app, &self.agent, node).await
    }

    async fn heartbeat(&self, node: &str, token: &str) {
        scripted_agent::heartbeat(&self.app, &self.agent_url, node, token).await
    }

    /// Heartbeat (the agent's loop) until the node reaches `state`.
    async fn agent_until(&self, node: &str, token: &str, state: &str) -> Value {
        let until = Instant::now() + BOUND;
        loop {
            let n = self.app.node(node).await;
            if n["provision_state"] == state && n["reservation"].is_null() {
                return n;
            }
            assert!(Instant::now() < until, "node never reached {state}: {n}");
            if matches!(
                n["provision_state"].as_str(),
                Some("wait call-back" | "clean wait")
            ) {
                self.heartbeat(node, token).await;
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }

    fn received(&self) -> Vec<String> {
        self.agent
            .lock()
            .unwrap()
            .received
            .iter()
            .map(|(n, _, _)| n.clone())
            .collect()
    }

    fn params_of(&self, name: &str) -> Value {
        self.agent
            .lock()
            .unwrap()
            .received
            .iter()
            .rev()
            .find(|(n, _, _)| n == name)
            .map(|(_, p, _)| p.clone())
            .unwrap_or_else(|| panic!("the agent never got {name}"))
    }

    /// A manageable fake-hardware node with the direct deploy interface.
    async fn manageable(&self, name: &str, extra: Value) {
        let mut body = json!({"driver": "fake-hardware", "name": name, "deploy_interface": "direct",
                              "boot_interface": "fake"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (s, b) = self
            .app
            .json(reqwest::Method::POST, "/v1/nodes", body)
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let (s, b) = self.provision(name, json!({"target": "manage"})).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{b}");
        self.wait_for(name, "manageable").await;
    }
}

async fn uuid(e: &Env, name: &str) -> Uuid {
    Uuid::parse_str(e.app.node(name).await["uuid"].as_str().unwrap()).unwrap()
}

both_engines!(
    cleaning_and_deploy_run_through_the_agent,
    a_failed_image_write_fails_the_deploy_with_the_agents_message,
    deploy_is_refused_without_a_valid_image,
    disabled_automated_cleaning_skips_the_agent,
    manual_cleaning_sends_the_users_step_to_the_agent,
    an_agent_that_stops_calling_back_mid_step_fails_cleaning_after_the_timeout,
);

async fn cleaning_and_deploy_run_through_the_agent(engine: Engine) {
    let Some(e) = env(engine, |c| c).await else {
        return;
    };
    e.manageable("n1", json!({})).await;
    let id = uuid(&e, "n1").await;

    // Automated cleaning: the ramdisk boots, the agent reports its steps,
    // erase_devices_metadata (99) runs, erase_devices (agent's 10) does not.
    e.agent.lock().unwrap().script = Some(Script {
        running_reads: 2,
        fails_with: None,
    });
    let (s, b) = e.provision("n1", json!({"target": "provide"})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let n = e.wait_for("n1", "clean wait").await;
    assert_eq!(n["power_state"], "power on", "the ramdisk runs: {n}");
    let token = e.issue_token(id).await;
    let n = e.agent_until("n1", &token, "available").await;
    assert!(n["last_error"].is_null(), "{n}");
    let got = e.received();
    assert_eq!(got[0], "clean.get_clean_steps", "{got:?}");
    let step = e.params_of("clean.execute_clean_step")["step"].clone();
    assert_eq!(step["step"], "erase_devices_metadata");
    assert_eq!(step["priority"], 99);
    assert_eq!(
        got.iter()
            .filter(|c| *c == "clean.execute_clean_step")
            .count(),
        1,
        "only the metadata is erased by default: {got:?}"
    );
    assert_eq!(n["power_state"], "power off", "cleaning ends powered off");
    assert!(
        n["driver_internal_info"].get("agent_url").is_none(),
        "the agent's session ended: {n}"
    );
    assert!(
        n["driver_internal_info"]
            .get("agent_secret_token")
            .is_none(),
        "{n}"
    );

    // Deploy with a config drive object.
    e.agent.lock().unwrap().received.clear();
    e.agent.lock().unwrap().commands.clear();
    let ii = json!([
        {"op": "add", "path": "/instance_info/image_source", "value": "http://127.0.0.1:1/disk.qcow2"},
        {"op": "add", "path": "/instance_info/image_os_hash_algo", "value": "sha256"},
        {"op": "add", "path": "/instance_info/image_os_hash_value", "value": SHA},
        {"op": "add", "path": "/instance_info/image_disk_format", "value": "qcow2"},
        {"op": "add", "path": "/properties/root_device", "value": {"name": "/dev/loop7"}},
    ]);
    let (s, b) = e.app.json(reqwest::Method::PATCH, "/v1/nodes/n1", ii).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    e.agent.lock().unwrap().script = Some(Script {
        running_reads: 3,
        fails_with: None,
    });
    let (s, b) = e
        .provision("n1", json!({"target": "active", "configdrive": {"user_data": "#cloud-config\nhostname: n1\n"}}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let n = e.wait_for("n1", "wait call-back").await;
    assert_eq!(n["power_state"], "power on", "the ramdisk runs: {n}");
    let token = e.issue_token(id).await;

    // While the image is written the node keeps waiting, and each
    // call-back restarts the wait timeout.
    let mut touched = Vec::new();
    let until = Instant::now() + BOUND;
    while !e
        .received()
        .iter()
        .any(|c| c == "deploy.execute_deploy_step")
    {
        assert!(
            Instant::now() < until,
            "write_image never sent: {:?}",
            e.received()
        );
        e.heartbeat("n1", &token).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..2 {
        let n = e.wait_for("n1", "wait call-back").await;
        assert_eq!(n["deploy_step"]["step"], "write_image", "{n}");
        touched.push(n["provision_updated_at"].clone());
        tokio::time::sleep(Duration::from_millis(20)).await;
        e.heartbeat("n1", &token).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_ne!(
        touched[0], touched[1],
        "a call-back while the step runs touches provision_updated_at"
    );
    let n = e.agent_until("n1", &token, "active").await;
    assert!(n["last_error"].is_null(), "{n}");
    assert_eq!(n["power_state"], "power on");
    assert_eq!(
        e.received(),
        [
            "deploy.get_deploy_steps",
            "deploy.execute_deploy_step",
            "standby.sync"
        ]
    );
    let p = e.params_of("deploy.execute_deploy_step");
    assert_eq!(p["step"]["step"], "write_image");
    let info = &p["step"]["args"]["image_info"];
    assert_eq!(info["urls"], json!(["http://127.0.0.1:1/disk.qcow2"]));
    assert_eq!(info["os_hash_algo"], "sha256");
    assert_eq!(info["os_hash_value"], SHA);
    assert_eq!(info["disk_format"], "qcow2");
    assert_eq!(info["id"], "disk.qcow2");
    let cd = p["step"]["args"]["configdrive"].as_str().unwrap();
    assert!(
        cd.starts_with("H4sI"),
        "a gzipped, base64-encoded image: {cd:.20}"
    );
    assert_eq!(p["node"]["properties"]["root_device"]["name"], "/dev/loop7");
    assert!(p["node"]["driver_internal_info"]
        .get("agent_secret_token")
        .is_none());
    {
        let s = e.agent.lock().unwrap();
        assert!(
            s.received
                .iter()
                .all(|(_, _, t)| t.as_deref() == Some(token.as_str())),
            "the token is on every command"
        );
        assert_eq!(s.refused, 0);
    }
    assert_eq!(e.fake.bmc_power(id), PowerState::On);
    assert!(
        n["driver_internal_info"]
            .get("agent_secret_token")
            .is_none(),
        "{n}"
    );
    assert!(n["driver_internal_info"].get("agent_url").is_none(), "{n}");
    // The stored config drive is the user's object, shown masked.
    assert_eq!(n["instance_info"]["configdrive"], "******", "{n}");
    e.app.tm.shutdown();
    e.app.store.cleanup().await;
}

async fn a_failed_image_write_fails_the_deploy_with_the_agents_message(engine: Engine) {
    let Some(e) = env(engine, |mut c| {
        c.automated_clean = false;
        c
    })
    .await
    else {
        return;
    };
    e.manageable(
        "f1",
        json!({"instance_info": {"image_source": "http://127.0.0.1:1/x.raw", "image_checksum": SHA}}),
    )
    .await;
    let id = uuid(&e, "f1").await;
    let (s, b) = e.provision("f1", json!({"target": "provide"})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    e.wait_for("f1", "available").await;
    e.agent.lock().unwrap().script = Some(Script {
        running_reads: 1,
        fails_with: Some("Image failed to verify against checksum. location: x.raw; expected: 9f86…; actual: 0000".into()),
    });
    let (s, b) = e.provision("f1", json!({"target": "active"})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    e.wait_for("f1", "wait call-back").await;
    let token = e.issue_token(id).await;
    let n = e.agent_until("f1", &token, "deploy failed").await;
    let err = n["last_error"].as_str().unwrap();
    assert!(err.contains("deploy.write_image"), "{err}");
    assert!(
        err.contains("Image failed to verify against checksum"),
        "{err}"
    );
    assert_eq!(
        e.fake.bmc_power(id),
        PowerState::Off,
        "powered off after the failure"
    );
    assert!(
        n["driver_internal_info"]
            .get("agent_secret_token")
            .is_none(),
        "{n}"
    );
    e.app.tm.shutdown();
    e.app.store.cleanup().await;
}

async fn deploy_is_refused_without_a_valid_image(engine: Engine) {
    let Some(e) = env(engine, |mut c| {
        c.automated_clean = false;
        c
    })
    .await
    else {
        return;
    };
    e.manageable("v1", json!({})).await;
    let (s, _) = e.provision("v1", json!({"target": "provide"})).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let before = e.wait_for("v1", "available").await;
    for (ii, says) in [
        (json!({}), "Missing are: ['instance_info.image_source']"),
        (
            json!({"image_source": "http://h/i.raw"}),
            "image_os_hash_algo",
        ),
        (
            json!({"image_source": "http://h/i.raw", "image_checksum": "d41d8cd98f00b204e9800998ecf8427e"}),
            "MD5",
        ),
        (
            json!({"image_source": "file:///etc/passwd", "image_checksum": SHA}),
            "http:// or https://",
        ),
    ] {
        if ii.as_object().unwrap().is_empty() {
            let (s, b) = e
                .app
                .json(
                    reqwest::Method::PATCH,
                    "/v1/nodes/v1",
                    json!([{"op": "remove", "path": "/instance_info"}]),
                )
                .await;
            assert!(s == StatusCode::OK || s == StatusCode::BAD_REQUEST, "{b}");
        } else {
            let (s, b) = e
                .app
                .json(
                    reqwest::Method::PATCH,
                    "/v1/nodes/v1",
                    json!([{"op": "add", "path": "/instance_info", "value": ii}]),
                )
                .await;
            assert_eq!(s, StatusCode::OK, "{b}");
        }
        let n0 = e.app.node("v1").await;
        let r = e
            .app
            .send(
                reqwest::Method::PUT,
                "/v1/nodes/v1/states/provision",
                json!({"target": "active"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{ii}: {}", r.body);
        assert!(r.fault().contains(says), "{ii}: {}", r.fault());
        let n1 = e.app.node("v1").await;
        assert_eq!(n0["provision_state"], n1["provision_state"]);
        assert_eq!(
            n0["updated_at"], n1["updated_at"],
            "a refused deploy changes nothing"
        );
    }
    // A config drive that is neither JSON, a URL nor base64.
    let (s, b) = e.app.json(reqwest::Method::PATCH, "/v1/nodes/v1", json!([{"op": "add", "path": "/instance_info", "value": {"image_source": "http://h/i.raw", "image_checksum": SHA}}])).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let r = e
        .app
        .send(
            reqwest::Method::PUT,
            "/v1/nodes/v1/states/provision",
            json!({"target": "active", "configdrive": "not base64!"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.fault().contains("Invalid configdrive format"),
        "{}",
        r.fault()
    );
    let r = e
        .app
        .send(
            reqwest::Method::PUT,
            "/v1/nodes/v1/states/provision",
            json!({"target": "active", "configdrive": {"user_data": "x", "bogus": {}}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        e.app.node("v1").await["provision_state"],
        before["provision_state"]
    );
    e.app.tm.shutdown();
    e.app.store.cleanup().await;
}

async fn disabled_automated_cleaning_skips_the_agent(engine: Engine) {
    let Some(e) = env(engine, |c| c).await else {
        return;
    };
    e.manageable("d1", json!({"automated_clean": false})).await;
    let (s, _) = e.provision("d1", json!({"target": "provide"})).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let n = e.wait_for("d1", "available").await;
    assert!(n["last_error"].is_null(), "{n}");
    assert!(e.received().is_empty(), "no agent was asked anything");
    e.app.tm.shutdown();
    e.app.store.cleanup().await;
}

async fn manual_cleaning_sends_the_users_step_to_the_agent(engine: Engine) {
    let Some(e) = env(engine, |mut c| {
        c.automated_clean = false;
        c
    })
    .await
    else {
        return;
    };
    e.manageable("m1", json!({})).await;
    let id = uuid(&e, "m1").await;
    e.agent.lock().unwrap().script = Some(Script {
        running_reads: 1,
        fails_with: None,
    });
    let (s, b) = e
        .provision(
            "m1",
            json!({"target": "clean", "clean_steps": [{"interface": "deploy", "step": "erase_devices", "args": {"passes": 1}}]}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    e.wait_for("m1", "clean wait").await;
    let token = e.issue_token(id).await;
    let n = e.agent_until("m1", &token, "manageable").await;
    assert!(n["last_error"].is_null(), "{n}");
    let p = e.params_of("clean.execute_clean_step");
    assert_eq!(p["step"]["step"], "erase_devices");
    assert_eq!(p["step"]["args"], json!({"passes": 1}));
    assert_eq!(
        p["clean_version"],
        json!({"generic_hardware_manager": "1.2"})
    );
    e.app.tm.shutdown();
    e.app.store.cleanup().await;
}

/// The agent starts a clean step, then dies (no more call-backs): the
/// `clean wait` timeout fails the node into `clean failed`, and a late
/// heartbeat changes nothing.
async fn an_agent_that_stops_calling_back_mid_step_fails_cleaning_after_the_timeout(
    engine: Engine,
) {
    let timeout = Duration::from_secs(1);
    let Some(e) = env(engine, |mut c| {
        c.clean_callback_timeout = timeout;
        c.check_provision_state_interval = Duration::from_millis(200);
        c.sync_power_state_interval = Duration::ZERO;
        c
    })
    .await
    else {
        return;
    };
    let conductor = ferric_conductor::cluster::Conductor::start_with(
        e.app.tm.clone(),
        ferric_conductor::cluster::StartOptions::default(),
    )
    .await
    .unwrap();
    e.manageable("w1", json!({})).await;
    let id = uuid(&e, "w1").await;
    e.agent.lock().unwrap().script = Some(Script {
        running_reads: 1000,
        fails_with: None,
    });
    let (s, b) = e.provision("w1", json!({"target": "provide"})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    e.wait_for("w1", "clean wait").await;
    let token = e.issue_token(id).await;
    let until = Instant::now() + BOUND;
    while !e.received().iter().any(|c| c == "clean.execute_clean_step") {
        assert!(
            Instant::now() < until,
            "the clean step never started: {:?}",
            e.received()
        );
        e.heartbeat("w1", &token).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The agent is gone from here on.
    let since = Instant::now();
    let n = e.wait_for("w1", "clean failed").await;
    assert!(
        since.elapsed() + Duration::from_millis(100) >= timeout,
        "failed too early"
    );
    let err = n["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("Timeout reached while waiting for callback"),
        "{n}"
    );
    assert!(
        n["driver_internal_info"]
            .get("agent_secret_token")
            .is_none(),
        "{n}"
    );
    // A late heartbeat with the wiped token is refused and changes nothing.
    let before = e.app.node("w1").await;
    let r = e
        .app
        .http
        .post(format!("{}/v1/heartbeat/w1", e.app.base))
        .header(crate::common::V, "1.68")
        .json(
            &json!({"callback_url": e.agent_url, "agent_version": "13.0.0", "agent_token": token}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = e.app.node("w1").await;
    assert_eq!(after["provision_state"], "clean failed");
    assert_eq!(before, after);
    conductor.stop().await;
    e.app.store.cleanup().await;
}

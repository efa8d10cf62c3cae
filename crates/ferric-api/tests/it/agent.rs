//! The async deploy / clean flow (SPEC §10): a step waits for the ramdisk
//! agent with the lock released, a simulated agent posts
//! `POST /v1/heartbeat/{node}` to any API process, and the continuation —
//! a patient acquisition — takes the node to its target. Also: a node whose
//! agent never calls back fails after the wait timeout, and seed 000 (a
//! console-like client taking the lock again and again with short holds
//! cannot starve the continuation). SQLite and PostgreSQL.

use crate::common::{self, Api, Options, V};
use ferric_conductor::cluster::{Conductor, StartOptions};
use ferric_conductor::drivers::fake::FakeHardware;
use ferric_conductor::drivers::Drivers;
use ferric_conductor::{ConductorConfig, Retry};
use ferric_core::ProvisionState;
use ferric_store::testing::{Engine, TestStore};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Every wait in these tests ends within this bound.
const BOUND: Duration = Duration::from_secs(30);

/// One API process of conductor `host`; `fake` is shared by every API
/// process of a test: it stands for the BMCs.
fn options(host: &str, fake: Arc<FakeHardware>) -> Options {
    Options::new()
        .host(host)
        .locked_retry(3, Duration::from_millis(50))
        .workers(16)
        .drivers(Some(Drivers::new().with(fake)))
        .wake_listener()
}

struct Env {
    store: TestStore,
    fake: Arc<FakeHardware>,
    a: Api,
    http: reqwest::Client,
}

async fn env(engine: Engine) -> Option<Env> {
    env_with(engine, |c| c).await
}

async fn env_with(
    engine: Engine,
    adjust: impl FnOnce(ConductorConfig) -> ConductorConfig,
) -> Option<Env> {
    let fake = Arc::new(FakeHardware::new());
    let app = options("cond-a", fake.clone())
        .engine(engine)
        .config(adjust)
        .spawn()
        .await?;
    Some(Env {
        store: app.store,
        fake,
        a: app.api,
        http: reqwest::Client::new(),
    })
}

impl Env {
    /// A second API process: its own conductor name and connection pool.
    async fn second_api(&self) -> Api {
        let store = self.store.reopen(|_| {}).await;
        self.store.conductor("cond-b").await;
        options("cond-b", self.fake.clone()).serve(store).await
    }

    async fn call(
        &self,
        base: &str,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        common::json(&self.http, base, method, path, body).await
    }

    async fn node(&self, ident: &str) -> Value {
        self.a.node(ident).await
    }

    async fn provision(&self, ident: &str, body: Value) {
        let (s, b) = self
            .call(
                &self.a.base,
                reqwest::Method::PUT,
                &format!("/v1/nodes/{ident}/states/provision"),
                body,
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    }

    /// Poll until the node is in `state` (and, when `unlocked`, its lock is free).
    async fn wait_for(&self, ident: &str, state: &str, unlocked: bool) -> Value {
        let until = Instant::now() + BOUND;
        loop {
            let n = self.node(ident).await;
            if n["provision_state"] == state && (!unlocked || n["reservation"].is_null()) {
                return n;
            }
            assert!(Instant::now() < until, "node never reached {state}: {n}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A fake-hardware node whose deploy and clean steps wait for the agent,
    /// taken to `available`.
    async fn available_node(&self, name: &str) -> String {
        let (s, b) = self
            .call(
                &self.a.base,
                reqwest::Method::POST,
                "/v1/nodes",
                json!({"driver": "fake-hardware", "name": name,
                       "driver_info": {"fake_deploy": "wait", "fake_clean": "wait"}}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        self.provision(name, json!({"target": "manage"})).await;
        self.wait_for(name, "manageable", true).await;
        // Automated cleaning waits for the agent too: provide, then call back.
        self.provision(name, json!({"target": "provide"})).await;
        self.wait_for(name, "clean wait", true).await;
        let agent = simulated_agent(
            &self.http,
            &self.a.base,
            &self.a,
            name,
            Duration::from_millis(200),
        );
        tokio::time::timeout(BOUND, agent)
            .await
            .expect("agent ran too long");
        self.wait_for(name, "available", true).await;
        b["uuid"].as_str().unwrap().to_string()
    }
}

/// A simulated ironic-python-agent: heartbeats every `every` (as IPA does,
/// with its callback URL, version and agent token, which `tokens` looks up)
/// until the node has left the states in which a call-back is expected.
/// Returns how many heartbeats it sent.
async fn simulated_agent(
    http: &reqwest::Client,
    api: &str,
    tokens: &Api,
    node: &str,
    every: Duration,
) -> u32 {
    let mut sent = 0;
    loop {
        let r = http
            .get(format!("{api}/v1/nodes/{node}"))
            .header(V, "latest")
            .send()
            .await
            .unwrap();
        let n: Value = r.json().await.unwrap();
        let state = n["provision_state"].as_str().unwrap_or_default();
        if !matches!(
            state,
            "wait call-back" | "clean wait" | "deploying" | "cleaning"
        ) {
            return sent;
        }
        let token = tokens.agent_token(node).await;
        let r = http
            .post(format!("{api}/v1/heartbeat/{node}"))
            .header(V, "1.68")
            .json(&json!({"callback_url": "http://192.0.2.10:9999", "agent_version": "9.10.0", "agent_token": token}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::ACCEPTED,
            "{}",
            r.text().await.unwrap()
        );
        sent += 1;
        tokio::time::sleep(every).await;
    }
}

both_engines!(
    deploy_waits_with_the_lock_released_and_the_heartbeat_on_another_api_finishes_it,
    manual_cleaning_waits_for_the_agent_and_returns_to_manageable,
    an_agent_that_never_calls_back_fails_the_deploy_after_the_timeout,
    seed_000_console_loop_cannot_starve_the_deploy_continuation,
);

async fn deploy_waits_with_the_lock_released_and_the_heartbeat_on_another_api_finishes_it(
    engine: Engine,
) {
    let Some(e) = env(engine).await else { return };
    let b = e.second_api().await;
    e.available_node("n1").await;
    e.provision("n1", json!({"target": "active"})).await;
    let n = e.wait_for("n1", "wait call-back", true).await;
    assert_eq!(n["target_provision_state"], "active");
    assert!(
        n["reservation"].is_null(),
        "lock released while waiting: {n}"
    );

    // A heartbeat in an old microversion or without a callback URL is refused.
    let (s, _) = e
        .call(
            &b.base,
            reqwest::Method::POST,
            "/v1/heartbeat/n1",
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let r = e
        .http
        .post(format!("{}/v1/heartbeat/n1", b.base))
        .header(V, "1.21")
        .json(&json!({"callback_url": "http://192.0.2.10:9999"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let (s, _) = e
        .call(
            &b.base,
            reqwest::Method::POST,
            "/v1/heartbeat/nope",
            json!({"callback_url": "http://192.0.2.10:9999"}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // The agent calls the OTHER API process.
    let started = Instant::now();
    let sent = tokio::time::timeout(
        BOUND,
        simulated_agent(&e.http, &b.base, &e.a, "n1", Duration::from_millis(100)),
    )
    .await
    .expect("agent ran too long");
    assert!(sent >= 1);
    let n = e.wait_for("n1", "active", true).await;
    assert!(n["target_provision_state"].is_null(), "{n}");
    assert_eq!(n["power_state"], "power on");
    assert!(n["last_error"].is_null(), "{n}");
    eprintln!(
        "deploy continued {:?} after the first heartbeat ({sent} heartbeats)",
        started.elapsed()
    );

    // A late heartbeat on an active node changes nothing: accepted and
    // ignored while the node still holds the token, refused (400) once the
    // token is wiped.
    let before = e.node("n1").await;
    let token = e.a.agent_token("n1").await;
    let (s, body) = e
        .call(
            &e.a.base,
            reqwest::Method::POST,
            "/v1/heartbeat/n1",
            json!({"callback_url": "http://192.0.2.10:9999", "agent_version": "9.10.0", "agent_token": token}),
        )
        .await;
    assert!(
        s == StatusCode::ACCEPTED || s == StatusCode::BAD_REQUEST,
        "{s} {body}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = e.node("n1").await;
    assert_eq!(before["provision_state"], after["provision_state"]);
    assert_eq!(before["updated_at"], after["updated_at"]);
    b.tm.shutdown();
    e.a.tm.shutdown();
    e.store.cleanup().await;
}

async fn manual_cleaning_waits_for_the_agent_and_returns_to_manageable(engine: Engine) {
    let Some(e) = env(engine).await else { return };
    e.available_node("c1").await;
    e.provision("c1", json!({"target": "manage"})).await;
    e.wait_for("c1", "manageable", true).await;
    e.provision(
        "c1",
        json!({"target": "clean", "clean_steps": [{"interface": "deploy", "step": "erase_devices"}]}),
    )
    .await;
    let n = e.wait_for("c1", "clean wait", true).await;
    assert_eq!(
        n["target_provision_state"], "manageable",
        "manual cleaning keeps its target: {n}"
    );
    tokio::time::timeout(
        BOUND,
        simulated_agent(&e.http, &e.a.base, &e.a, "c1", Duration::from_millis(100)),
    )
    .await
    .expect("agent ran too long");
    let n = e.wait_for("c1", "manageable", true).await;
    assert!(n["target_provision_state"].is_null(), "{n}");
    e.a.tm.shutdown();
    e.store.cleanup().await;
}

async fn an_agent_that_never_calls_back_fails_the_deploy_after_the_timeout(engine: Engine) {
    let timeout = Duration::from_secs(1);
    let Some(e) = env_with(engine, |c| ConductorConfig {
        deploy_callback_timeout: timeout,
        check_provision_state_interval: Duration::from_millis(200),
        sync_power_state_interval: Duration::ZERO,
        ..c
    })
    .await
    else {
        return;
    };
    // The conductor's periodic work (heartbeat, wait-state timeouts).
    let conductor = Conductor::start_with(e.a.tm.clone(), StartOptions::default())
        .await
        .unwrap();
    e.available_node("t1").await;
    e.provision("t1", json!({"target": "active"})).await;
    let waiting = e.wait_for("t1", "wait call-back", true).await;
    let since = Instant::now();
    // No agent. The node fails once the timeout has passed, not before.
    let n = e.wait_for("t1", "deploy failed", true).await;
    let waited = since.elapsed();
    assert!(
        waited + Duration::from_millis(100) >= timeout,
        "failed too early ({waited:?}): {waiting} -> {n}"
    );
    let err = n["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("Timeout reached while waiting for callback"),
        "{n}"
    );
    eprintln!("deploy failed {waited:?} after entering wait call-back (timeout {timeout:?})");
    // A heartbeat that comes too late (here without a token) is refused
    // and does nothing.
    let (s, _) = e
        .call(
            &e.a.base,
            reqwest::Method::POST,
            "/v1/heartbeat/t1",
            json!({"callback_url": "http://192.0.2.10:9999", "agent_version": "9.10.0"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(e.node("t1").await["provision_state"], "deploy failed");
    conductor.stop().await;
    e.store.cleanup().await;
}

/// Seed 000 (Ironic story 2008323): while the deploy waits for its agent, a
/// console-like client of another process takes the node's lock again and
/// again with short holds. The heartbeat's continuation queues patiently
/// (FIFO) and completes the deploy in bounded time.
async fn seed_000_console_loop_cannot_starve_the_deploy_continuation(engine: Engine) {
    let Some(e) = env(engine).await else { return };
    let uuid = e.available_node("s1").await;
    let node: uuid::Uuid = uuid.parse().unwrap();
    e.provision("s1", json!({"target": "active"})).await;
    e.wait_for("s1", "wait call-back", true).await;
    // The agent looked up before the console loop starts (the lookup takes
    // the lock briefly to mint its token).
    let token = e.a.agent_token("s1").await;
    assert!(token.is_some(), "a node in wait call-back has a token");

    let console = e.second_api().await.tm;
    let stop = Arc::new(AtomicBool::new(false));
    let grabs = Arc::new(AtomicU64::new(0));
    let hog = {
        let (stop, grabs, console) = (stop.clone(), grabs.clone(), console.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                match console
                    .acquire(node)
                    .purpose("console")
                    .retry(Retry::For(Duration::from_secs(5)))
                    .exclusive()
                    .await
                {
                    Ok(t) => {
                        grabs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        t.release().await.unwrap();
                    }
                    Err(err) if err.is_node_locked() => {}
                    Err(err) => panic!("{err}"),
                }
            }
        })
    };
    let until = Instant::now() + BOUND;
    while grabs.load(Ordering::SeqCst) < 5 {
        assert!(Instant::now() < until, "the console loop never ran");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }

    // One heartbeat: the continuation must get through on its own.
    let started = Instant::now();
    let (s, b) = e
        .call(
            &e.a.base,
            reqwest::Method::POST,
            "/v1/heartbeat/s1",
            json!({"callback_url": "http://192.0.2.10:9999", "agent_version": "9.10.0", "agent_token": token}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let store = e.a.tm.store().clone();
    loop {
        let n = store.get_node(&node.into()).await.unwrap();
        if n.provision_state == ProvisionState::Active {
            break;
        }
        assert!(
            n.provision_state == ProvisionState::DeployWait
                || n.provision_state == ProvisionState::Deploying,
            "unexpected state {}: {:?}",
            n.provision_state,
            n.last_error
        );
        assert!(
            started.elapsed() < BOUND,
            "deploy starved: still {} after {BOUND:?} ({} console grabs)",
            n.provision_state,
            grabs.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    hog.await.unwrap();
    let total = grabs.load(Ordering::SeqCst);
    eprintln!("seed 000: active {took:?} after the heartbeat, console took the lock {total} times");
    e.wait_for("s1", "active", true).await;
    console.shutdown();
    e.a.tm.shutdown();
    e.store.cleanup().await;
}

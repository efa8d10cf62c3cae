//! A conductor frozen (SIGSTOP) inside the transaction that holds the
//! one-row revision counter must not freeze the cluster (issue 17, item 1):
//! the other conductor's writes wait at most 2 s, and the frozen one's
//! locks are recovered within heartbeat_timeout + recovery_interval + 1 s.
//! PostgreSQL only: the server ends the frozen session
//! (`idle_in_transaction_session_timeout`, set on every connection by
//! `PgSession`) and its row locks go with it. SQLite has no server; a frozen
//! SQLite writer blocks the file's other writers until it resumes (they
//! fail with 503 after the busy timeout).
//!
//! The window is widened by ferric-store's test hook
//! (`testing::HOLD_REVISION_TRIGGER_VAR`, built only with the `testing`
//! feature, which `cargo test` enables and production builds do not).

use crate::helpers::{ferric, http_at, rt, signal, success, url_for, wait_until, Serve};
use ferric_core::ProvisionState;
use ferric_store::testing::{Engine, TestStore, HOLD_REVISION_TRIGGER_VAR};
use ferric_store::{NodeIdent, Store};
use std::path::Path;
use std::time::{Duration, Instant};

const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(1);
const RECOVERY_INTERVAL: Duration = Duration::from_millis(200);

/// Logged (debug) by a node save that waits for the running batch of saves
/// (the one holding the revision counter) to end.
const BATCH_WAIT: &str = "waiting for the running batch of node saves";

fn start(url: &str, host: &str, dir: &Path, trigger: &Path) -> Serve {
    let trigger = trigger.display().to_string();
    Serve::conductor(
        url,
        host,
        dir,
        "200ms",
        "1s",
        &[
            (HOLD_REVISION_TRIGGER_VAR, trigger.as_str()),
            ("FERRIC_LOG", "info,ferric_store::sql::batch=debug"),
        ],
    )
}

fn node(store: &dyn Store, name: &str) -> ferric_core::Node {
    rt().block_on(store.get_node(&NodeIdent::Name(name.into())))
        .unwrap()
}

fn create(api: &str, name: &str, driver_info: &str) {
    let body =
        format!(r#"{{"name": "{name}", "driver": "fake-hardware", "driver_info": {driver_info}}}"#);
    let created = http_at(api, "POST", "/v1/nodes", Some(&body), Some("1.10"));
    assert!(created.starts_with("HTTP/1.1 201"), "{created}");
}

fn patch(api: &str, name: &str, value: &str) -> String {
    let body = format!(r#"[{{"op": "add", "path": "/extra/mark", "value": "{value}"}}]"#);
    http_at(
        api,
        "PATCH",
        &format!("/v1/nodes/{name}"),
        Some(&body),
        Some("1.10"),
    )
}

#[test]
fn conductor_frozen_holding_the_revision_counter_does_not_stall_the_cluster_postgres() {
    let Some(ts) = rt().block_on(TestStore::open(Engine::Postgres)) else {
        return;
    };
    let url = url_for(&ts);
    let store = ts.store.clone();
    let dir = tempfile::tempdir().unwrap();
    success(
        ferric()
            .args(["db", "migrate"])
            .env("FERRIC_DATABASE__URL", &url),
    );
    let trigger_a = dir.path().join("hold-a");
    let mut a = start(&url, "frozen-a", dir.path(), &trigger_a);
    let mut b = start(&url, "frozen-b", dir.path(), &dir.path().join("hold-b"));
    let (api_a, api_b) = (a.api(), b.api());
    // By the way: serve warns at start when PostgreSQL runs without
    // autovacuum (list pages slow down without planner statistics).
    let autovacuum: String = rt()
        .block_on(
            sqlx::query_scalar("SELECT current_setting('autovacuum')")
                .fetch_one(ts.store.raw_access().pool()),
        )
        .unwrap();
    assert_eq!(
        a.log().contains("PostgreSQL runs with autovacuum off"),
        autovacuum == "off",
        "autovacuum = {autovacuum}:\n{}",
        a.log()
    );

    // frozen-a holds "held" in a long deploy step.
    create(&api_a, "held", r#"{"fake_deploy_delay_ms": 120000}"#);
    let deploy = http_at(
        &api_a,
        "PUT",
        "/v1/nodes/held/states/provision",
        Some(r#"{"target": "active"}"#),
        Some("1.10"),
    );
    assert!(deploy.starts_with("HTTP/1.1 202"), "{deploy}");
    wait_until("frozen-a to hold held's lock mid-deploy", || {
        let n = node(&*store, "held");
        n.provision_state == ProvisionState::Deploying
            && n.reservation.is_some_and(|r| r.holder == "frozen-a")
    });
    create(&api_a, "poked", "{}");
    create(&api_b, "busy", "{}");
    let queued = ["queued-1", "queued-2"];
    for name in queued {
        create(&api_a, name, "{}");
    }
    // Both conductors take over new nodes (a write that takes the counter):
    // let that settle first, so that the hook catches the PATCH below and
    // not a take-over that would also leave "busy" locked by frozen-a (the
    // pre-landing run of 2026-11 waited 2.02 s for that lock's recovery).
    wait_until("the ring's owners to take over poked and busy", || {
        ["poked", "busy"]
            .iter()
            .chain(&queued)
            .all(|name| node(&*store, name).conductor_affinity.is_some())
    });

    // frozen-a writes "poked" and stops inside the transaction, counter held.
    std::fs::write(&trigger_a, b"").unwrap();
    let poke = {
        let api_a = api_a.clone();
        std::thread::spawn(move || {
            let _ = std::panic::catch_unwind(|| patch(&api_a, "poked", "from-a"));
        })
    };
    wait_until("frozen-a to hold the revision counter", || {
        a.log().contains("test hook: holding the revision counter")
    });
    // Two more saves of frozen-a come behind it. Queued for the counter's
    // row lock in PostgreSQL, each would be granted it in turn as the
    // previous session is ended, and frozen-b would wait one
    // idle_in_transaction_session_timeout per session (3 s); they wait
    // inside frozen-a instead, for the batch that holds the counter
    // (sql::batch; other writes wait for their turn, sql::changes::CounterTurn).
    let batch_waits_before = a.log().matches(BATCH_WAIT).count();
    let queued_writes: Vec<_> = queued
        .iter()
        .map(|name| {
            let (api_a, name) = (api_a.clone(), name.to_string());
            std::thread::spawn(move || {
                let _ = std::panic::catch_unwind(|| patch(&api_a, &name, "from-a"));
            })
        })
        .collect();
    wait_until(
        "frozen-a's two queued saves to wait for the running batch",
        || a.log().matches(BATCH_WAIT).count() >= batch_waits_before + queued.len(),
    );
    signal(a.child.id(), "STOP");
    let frozen = Instant::now();
    // The hook caught the PATCH: frozen-a holds poked's lock, not busy's.
    assert_eq!(
        node(&*store, "poked").reservation.map(|r| r.holder),
        Some("frozen-a".to_string()),
        "{}",
        a.log()
    );
    assert!(node(&*store, "busy").reservation.is_none(), "{}", a.log());

    // The other conductor's writes go on.
    let mut waits = Vec::new();
    for i in 0..3 {
        let started = Instant::now();
        let reply = patch(&api_b, "busy", &format!("b-{i}"));
        let took = started.elapsed();
        waits.push(took);
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}\n{}", b.log());
        assert!(
            took <= Duration::from_secs(2),
            "a write on frozen-b waited {took:?} while frozen-a was frozen"
        );
    }

    // frozen-a's locks are recovered within the bound.
    wait_until("frozen-b to recover held's lock and fail it", || {
        let n = node(&*store, "held");
        n.reservation.is_none() && n.provision_state == ProvisionState::DeployFailed
    });
    let recovered = frozen.elapsed();
    let bound = HEARTBEAT_TIMEOUT + RECOVERY_INTERVAL + Duration::from_secs(1);
    eprintln!(
        "writes on frozen-b waited {waits:?}; held recovered after {recovered:?} (bound {bound:?})"
    );
    assert!(
        recovered <= bound,
        "recovered after {recovered:?}, bound {bound:?}\n{}",
        b.log()
    );
    wait_until("poked's lock to be recovered", || {
        node(&*store, "poked").reservation.is_none()
    });

    // Resumed, frozen-a's write did not land (its session was ended).
    signal(a.child.id(), "CONT");
    let _ = poke.join();
    for write in queued_writes {
        let _ = write.join();
    }
    let poked = node(&*store, "poked");
    assert_ne!(
        poked.extra.get("mark").and_then(|v| v.as_str()),
        Some("from-a"),
        "the frozen conductor's write landed after its session was ended"
    );
    drop(a);
    drop(b);
    rt().block_on(ts.cleanup());
}

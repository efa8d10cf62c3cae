//! Issue 18 item 5: a task releases the node's lock the moment the node is
//! in its stable state (no idle holding), and the fake driver's step delay
//! is a setting: `[conductor] fake_step_delay` for `ferric serve`, and a
//! node's own `driver_info.fake_step_delay_ms` (0 allowed) over it.

use crate::helpers::{http_at, url_for, Serve};
use ferric_core::ProvisionState;
use ferric_store::testing::{Engine, TestStore};
use ferric_store::{NodeIdent, Store};
use std::time::{Duration, Instant};

/// The process's fake step delay: long, so that one more step held under
/// the lock after the node is stable would be obvious.
const STEP: Duration = Duration::from_millis(1500);

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn create(api: &str, name: &str, driver_info: &str) {
    let body =
        format!(r#"{{"name": "{name}", "driver": "fake-hardware", "driver_info": {driver_info}}}"#);
    // 1.10: new nodes start in "available", as on Ironic.
    let created = http_at(api, "POST", "/v1/nodes", Some(&body), Some("1.10"));
    assert!(created.starts_with("HTTP/1.1 201"), "{created}");
}

fn deploy(api: &str, name: &str) {
    let r = http_at(
        api,
        "PUT",
        &format!("/v1/nodes/{name}/states/provision"),
        Some(r#"{"target": "active"}"#),
        Some("1.10"),
    );
    assert!(r.starts_with("HTTP/1.1 202"), "{r}");
}

/// Poll the store every 2 ms until `name` is `state`; how long it took,
/// and the node as first seen there.
fn until_state(
    rt: &tokio::runtime::Runtime,
    store: &dyn Store,
    name: &str,
    state: ProvisionState,
) -> (Duration, ferric_core::Node) {
    let start = Instant::now();
    loop {
        let n = rt
            .block_on(store.get_node(&NodeIdent::Name(name.into())))
            .unwrap();
        if n.provision_state == state {
            return (start.elapsed(), n);
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{name} never reached {state}: {:?}",
            n.provision_state
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// How long after `name` is seen stable its lock stays held.
fn lock_free_within(rt: &tokio::runtime::Runtime, store: &dyn Store, name: &str) -> Duration {
    let start = Instant::now();
    loop {
        let n = rt
            .block_on(store.get_node(&NodeIdent::Name(name.into())))
            .unwrap();
        if n.reservation.is_none() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{name}'s lock never freed"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn the_lock_is_free_as_soon_as_the_node_is_stable_and_the_step_delay_is_a_setting() {
    let rt = rt();
    let Some(ts) = rt.block_on(TestStore::open(Engine::Sqlite)) else {
        unreachable!("SQLite is always available")
    };
    let dir = tempfile::tempdir().unwrap();
    let step = format!("{}ms", STEP.as_millis());
    let mut serve = Serve::conductor(
        &url_for(&ts),
        "idle-lock",
        dir.path(),
        "1s",
        "10s",
        &[("FERRIC_CONDUCTOR__FAKE_STEP_DELAY", &step)],
    );
    let api = serve.api();
    let store = ts.store.clone();

    // The process's delay: the deploy pauses STEP before its work.
    create(&api, "slow", "{}");
    deploy(&api, "slow");
    let (took, node) = until_state(&rt, store.as_ref(), "slow", ProvisionState::Active);
    assert!(
        took >= STEP - Duration::from_millis(100),
        "the configured step delay was not applied: active after {took:?}"
    );
    // Stable: the lock goes with the last write (at most the release's own
    // statement later), not one more step later.
    let held = if node.reservation.is_none() {
        Duration::ZERO
    } else {
        lock_free_within(&rt, store.as_ref(), "slow")
    };
    assert!(
        held < Duration::from_millis(300),
        "the lock was held {held:?} after the node became active"
    );
    // A verb right after finds the node free at once (no NodeLocked wait).
    let r = http_at(
        &api,
        "PUT",
        "/v1/nodes/slow/states/provision",
        Some(r#"{"target": "deleted"}"#),
        Some("1.10"),
    );
    assert!(r.starts_with("HTTP/1.1 202"), "{r}");
    until_state(&rt, store.as_ref(), "slow", ProvisionState::Available);
    let held = lock_free_within(&rt, store.as_ref(), "slow");
    assert!(
        held < Duration::from_millis(300),
        "the lock was held {held:?} after the node became available"
    );

    // A node's own delay overrides the process's: 0 means no pause at all.
    create(&api, "quick", r#"{"fake_step_delay_ms": 0}"#);
    let start = Instant::now();
    deploy(&api, "quick");
    until_state(&rt, store.as_ref(), "quick", ProvisionState::Active);
    let took = start.elapsed();
    assert!(
        took < STEP - Duration::from_millis(300),
        "fake_step_delay_ms = 0 still paused: active after {took:?}"
    );
    drop(serve);
}

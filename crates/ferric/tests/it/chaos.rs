//! Real `ferric serve` processes sharing one database (a SQLite file, or a
//! PostgreSQL schema): one is killed with SIGKILL or frozen with SIGSTOP in
//! the middle of a deploy; the other recovers its locks within
//! heartbeat_timeout + recovery_interval + 1 s, fails the node and takes it
//! over; the frozen one, resumed, cannot write anything (fencing).

use crate::helpers::{ferric, http_at, rt, signal, success, url_for, wait_until, Serve};
use ferric_core::ProvisionState;
use ferric_store::testing::{Engine, TestStore};
use ferric_store::{NodeIdent, Store};
use std::time::{Duration, Instant};

const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(1);
const RECOVERY_INTERVAL: Duration = Duration::from_millis(200);

fn start(url: &str, host: &str, dir: &std::path::Path) -> Serve {
    Serve::conductor(
        url,
        host,
        dir,
        "200ms",
        "1s",
        &[("FERRIC_LOG", "info,ferric_conductor=debug")],
    )
}

/// Create a fake-hardware node whose deploy step takes `deploy_ms`, deploy it
/// through `api`, and return its name.
fn deploy_slow_node(api: &str, name: &str, deploy_ms: u64) {
    let body = format!(
        r#"{{"name": "{name}", "driver": "fake-hardware", "driver_info": {{"fake_deploy_delay_ms": {deploy_ms}}}}}"#
    );
    // 1.10: new nodes start in "available" (enroll from 1.11), as on Ironic.
    let created = http_at(api, "POST", "/v1/nodes", Some(&body), Some("1.10"));
    assert!(created.starts_with("HTTP/1.1 201"), "{created}");
    let deploy = http_at(
        api,
        "PUT",
        &format!("/v1/nodes/{name}/states/provision"),
        Some(r#"{"target": "active"}"#),
        Some("1.10"),
    );
    assert!(deploy.starts_with("HTTP/1.1 202"), "{deploy}");
}

fn node(store: &dyn Store, name: &str) -> ferric_core::Node {
    rt().block_on(store.get_node(&NodeIdent::Name(name.into())))
        .unwrap()
}

fn open(engine: Engine) -> Option<TestStore> {
    rt().block_on(TestStore::open(engine))
}

/// Two `ferric serve` processes, `{prefix}-a` and `{prefix}-b`, on a fresh
/// database, with `{prefix}-a` holding node `name`'s lock in the middle of a
/// deploy step that lasts `deploy_ms`. `None` when the engine is not configured.
struct MidDeploy {
    ts: TestStore,
    url: String,
    a: Serve,
    b: Serve,
    _dir: tempfile::TempDir,
}

fn two_conductors_mid_deploy(
    engine: Engine,
    prefix: &str,
    name: &str,
    deploy_ms: u64,
) -> Option<MidDeploy> {
    let ts = open(engine)?;
    let url = url_for(&ts);
    let dir = tempfile::tempdir().unwrap();
    success(
        ferric()
            .args(["db", "migrate"])
            .env("FERRIC_DATABASE__URL", &url),
    );
    let holder = format!("{prefix}-a");
    let mut a = start(&url, &holder, dir.path());
    let mut b = start(&url, &format!("{prefix}-b"), dir.path());
    let api_a = a.api();
    let _ = b.api();
    deploy_slow_node(&api_a, name, deploy_ms);
    let store = ts.store.clone();
    wait_until(
        &format!("the deploy to hold the node's lock on {holder}"),
        || {
            let n = node(&*store, name);
            n.provision_state == ProvisionState::Deploying
                && n.reservation.is_some_and(|r| r.holder == holder)
        },
    );
    Some(MidDeploy {
        ts,
        url,
        a,
        b,
        _dir: dir,
    })
}

fn kill_9_mid_deploy(engine: Engine) {
    let Some(MidDeploy {
        ts,
        url,
        mut a,
        mut b,
        _dir,
    }) = two_conductors_mid_deploy(engine, "chaos", "victim", 120_000)
    else {
        return;
    };
    let store = ts.store.clone();

    signal(a.child.id(), "KILL");
    let killed = Instant::now();
    let _ = a.child.wait_bounded();
    wait_until("chaos-b to recover the lock and fail the node", || {
        let n = node(&*store, "victim");
        n.reservation.is_none() && n.provision_state == ProvisionState::DeployFailed
    });
    let took = killed.elapsed();
    let bound = HEARTBEAT_TIMEOUT + RECOVERY_INTERVAL + Duration::from_secs(1);
    assert!(
        took <= bound,
        "recovered after {took:?}, bound {bound:?}\n{}",
        b.log()
    );
    let n = node(&*store, "victim");
    let msg = n.last_error.clone().unwrap_or_default();
    assert!(
        msg.contains("chaos-a went offline") && msg.contains("recovered by chaos-b"),
        "{msg}"
    );
    wait_until("chaos-b to take the node over", || {
        node(&*store, "victim").conductor_affinity.as_deref() == Some("chaos-b")
    });

    // The ring change is visible: chaos-b now serves the node.
    let listed = success(
        ferric()
            .args(["conductor", "list", "--json"])
            .env("FERRIC_DATABASE__URL", &url)
            .env("FERRIC_CONDUCTOR__HEARTBEAT_INTERVAL", "200ms")
            .env("FERRIC_CONDUCTOR__HEARTBEAT_TIMEOUT", "1s"),
    );
    let rows: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let row = |h: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["hostname"] == h)
            .cloned()
            .unwrap()
    };
    assert_eq!(row("chaos-a")["alive"], false, "{listed}");
    assert_eq!(row("chaos-b")["nodes"], 1, "{listed}");

    signal(b.child.id(), "TERM");
    assert_eq!(b.child.wait_bounded().code(), Some(0), "{}", b.log());
    rt().block_on(ts.cleanup());
}

fn sigstop_past_timeout_then_sigcont(engine: Engine) {
    // The deploy step ends 2.5 s after it starts: while zombie-a is frozen.
    let Some(MidDeploy {
        ts,
        url: _,
        mut a,
        mut b,
        _dir,
    }) = two_conductors_mid_deploy(engine, "zombie", "frozen", 2_500)
    else {
        return;
    };
    let store = ts.store.clone();
    let epoch_a = node(&*store, "frozen").lock_epoch;

    signal(a.child.id(), "STOP");
    wait_until("zombie-b to recover the frozen conductor's lock", || {
        let n = node(&*store, "frozen");
        n.reservation.is_none() && n.provision_state == ProvisionState::DeployFailed
    });
    // Past the deploy step's end: when resumed, zombie-a's step finishes at
    // once and tries to move the node to active with its old token.
    std::thread::sleep(Duration::from_secs(3));
    signal(a.child.id(), "CONT");
    // Either its own heartbeat fence stops it first (issue 17: its last
    // beat is older than the fence), or its write meets the epoch fence.
    wait_until("zombie-a to notice its lock is gone", || {
        let log = a.log();
        log.contains("lock lost") || log.contains("fenced (taking no locks")
    });
    std::thread::sleep(Duration::from_millis(500));
    let n = node(&*store, "frozen");
    assert_eq!(
        n.provision_state,
        ProvisionState::DeployFailed,
        "a zombie write landed:\n{}",
        a.log()
    );
    assert_ne!(
        n.power_state,
        Some(ferric_core::PowerState::On),
        "a zombie write landed"
    );
    assert!(n
        .last_error
        .unwrap_or_default()
        .contains("zombie-a went offline"));
    assert!(n.lock_epoch > epoch_a);
    // One holder at a time: the lock column has at most one value, and now
    // nobody holds it (zombie-a did not re-take it behind anyone's back).
    assert!(n.reservation.is_none() || n.reservation.is_some_and(|r| r.epoch > epoch_a));

    for s in [&mut a, &mut b] {
        signal(s.child.id(), "TERM");
        assert_eq!(s.child.wait_bounded().code(), Some(0), "{}", s.log());
    }
    rt().block_on(ts.cleanup());
}

#[test]
fn kill_9_mid_deploy_is_recovered_within_bound_sqlite() {
    kill_9_mid_deploy(Engine::Sqlite);
}

#[test]
fn kill_9_mid_deploy_is_recovered_within_bound_postgres() {
    kill_9_mid_deploy(Engine::Postgres);
}

#[test]
fn frozen_conductor_cannot_write_after_resuming_sqlite() {
    sigstop_past_timeout_then_sigcont(Engine::Sqlite);
}

#[test]
fn frozen_conductor_cannot_write_after_resuming_postgres() {
    sigstop_past_timeout_then_sigcont(Engine::Postgres);
}

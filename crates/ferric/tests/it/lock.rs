//! `ferric lock list|release|audit` against a real database, run as the
//! operator would: the built binary on the database a conductor uses.

use crate::helpers::{ferric, output, success, url_for};
use ferric_conductor::{ConductorConfig, MemorySink, TaskManager};
use ferric_core::{NewNode, ProvisionState};
use ferric_store::testing::{register, Engine, TestStore};
use ferric_store::{Store, StoreError};
use std::sync::Arc;

async fn locked_node(
    ts: &TestStore,
    name: &str,
    state: ProvisionState,
    holder: &str,
) -> ferric_store::LockToken {
    let store = ts.store.clone();
    let n = store
        .create_node(NewNode {
            name: Some(name.into()),
            driver: "fake-hardware".into(),
            provision_state: Some(state),
            ..Default::default()
        })
        .await
        .unwrap();
    register(&*store, holder).await;
    let tm = TaskManager::new(
        store,
        ConductorConfig {
            host: holder.into(),
            ..Default::default()
        },
        Arc::new(MemorySink::default()),
    );
    let task = tm
        .acquire(n.uuid)
        .purpose("deploy")
        .exclusive()
        .await
        .unwrap();
    let token = task.token().clone();
    std::mem::forget(task); // the holder keeps it (alive) or dies with it
    token
}

fn run(url: &str, args: &[&str]) -> std::process::Output {
    output(ferric().args(args).env("FERRIC_DATABASE__URL", url))
}

async fn lock_tooling(engine: Engine) {
    let Some(ts) = TestStore::open_with(engine, |o| {
        o.heartbeat_timeout = std::time::Duration::from_secs(600)
    })
    .await
    else {
        return;
    };
    let url = url_for(&ts);
    let live = locked_node(&ts, "busy", ProvisionState::Deploying, "cond-live").await;
    let dead = locked_node(&ts, "stuck", ProvisionState::Cleaning, "cond-dead").await;
    ts.store.unregister_conductor("cond-dead").await.unwrap();

    let u = url.clone();
    let listed = tokio::task::spawn_blocking(move || {
        success(
            ferric()
                .args(["lock", "list", "--json"])
                .env("FERRIC_DATABASE__URL", &u),
        )
    })
    .await
    .unwrap();
    let views: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let by_name = |name: &str| {
        views
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["node_name"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(by_name("busy")["holder"], "cond-live");
    assert_eq!(by_name("busy")["holder_online"], true);
    assert_eq!(by_name("stuck")["holder_online"], false);
    let u = url.clone();
    let table = tokio::task::spawn_blocking(move || {
        success(
            ferric()
                .args(["lock", "list"])
                .env("FERRIC_DATABASE__URL", &u),
        )
    })
    .await
    .unwrap();
    assert!(
        table.starts_with("NODE") && table.contains("cond-dead") && table.contains("NO"),
        "{table}"
    );

    let u = url.clone();
    let (refused, no_reason, forced_while_running) = tokio::task::spawn_blocking(move || {
        (
            run(&u, &["lock", "release", "busy"]),
            run(&u, &["lock", "release", "busy", "--force"]),
            run(
                &u,
                &["lock", "release", "busy", "--force", "--reason", "BMC hung"],
            ),
        )
    })
    .await
    .unwrap();
    // A live holder's lock is not released without --force.
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("refusing")
            && err.contains("cond-live is alive")
            && err.contains("--force --reason"),
        "{err}"
    );
    // --force needs a reason (usage error, nothing done).
    assert_eq!(
        no_reason.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&no_reason.stderr)
    );
    // While a conductor runs, the CLI does not do it itself (that
    // conductor's sinks and /metrics would miss it): it names the running
    // conductors and says to go through an API (tests/it/lock_api.rs).
    assert_eq!(forced_while_running.status.code(), Some(1));
    let err = String::from_utf8_lossy(&forced_while_running.stderr);
    assert!(
        err.contains("cond-live") && err.contains("--url") && err.contains("running"),
        "{err}"
    );
    let busy = ts.store.get_node(&live.node.into()).await.unwrap();
    assert!(busy.reservation.is_some(), "nothing may change: {busy:?}");

    // No conductor alive any more: the documented fallback, in this process.
    ts.store.unregister_conductor("cond-live").await.unwrap();
    let u = url.clone();
    let (released, stale, unlocked, audit) = tokio::task::spawn_blocking(move || {
        (
            run(&u, &["lock", "release", "busy"]),
            run(&u, &["lock", "release", "stuck"]),
            run(&u, &["lock", "release", "stuck"]),
            success(
                ferric()
                    .args(["lock", "audit", "--json"])
                    .env("FERRIC_DATABASE__URL", &u),
            ),
        )
    })
    .await
    .unwrap();
    assert!(
        released.status.success(),
        "{}",
        String::from_utf8_lossy(&released.stderr)
    );
    let busy = ts.store.get_node(&live.node.into()).await.unwrap();
    assert!(busy.reservation.is_none());
    assert_eq!(busy.provision_state, ProvisionState::DeployFailed);
    assert!(busy
        .last_error
        .as_deref()
        .unwrap_or_default()
        .contains("holder cond-live is offline"));
    assert!(matches!(
        ts.store.save_node(&live, &busy).await.unwrap_err(),
        StoreError::LockLost { .. }
    ));
    // A dead holder's lock is released without --force.
    assert!(
        stale.status.success(),
        "{}",
        String::from_utf8_lossy(&stale.stderr)
    );
    let stuck = ts.store.get_node(&dead.node.into()).await.unwrap();
    assert!(stuck.reservation.is_none());
    assert_eq!(stuck.provision_state, ProvisionState::CleanFailed);
    // Nothing left to release.
    assert_eq!(unlocked.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unlocked.stderr).contains("not locked"));
    // Both overrides are in the audit trail.
    let audit: serde_json::Value = serde_json::from_str(&audit).unwrap();
    let records = audit.as_array().unwrap();
    assert_eq!(records.len(), 2, "{audit}");
    assert_eq!(records[0]["action"], "release-stale");
    assert_eq!(records[0]["previous_holder"], "cond-live");
    assert_eq!(records[0]["previous_epoch"], live.epoch);
    assert_eq!(records[1]["action"], "release-stale");
    assert_eq!(records[1]["previous_holder"], "cond-dead");
    ts.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_list_release_and_audit_sqlite() {
    lock_tooling(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_list_release_and_audit_postgres() {
    lock_tooling(Engine::Postgres).await;
}

//! Issue 18: what a contended release gives the grantee, and how a waiter in
//! another process hears of its grant, on SQLite (a file shared by two
//! stores, as by two processes) and PostgreSQL (skipped only when
//! FERRIC_TEST_PG_URL is unset).
//!
//! * The release returns the node row as granted (PostgreSQL: in the one
//!   round trip of `ferric_release`), equal to what a read sees after it.
//! * The grantee's subscription fires with exactly that grant, and nothing
//!   else fires it: other commits (node creations, uncontended lock
//!   traffic) wake nobody — SQLite used to poll `data_version` and wake
//!   every waiter on every foreign commit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferric_core::NewNode;
use ferric_store::testing::{register, Engine, TestStore};
use ferric_store::{Claim, Enqueued, Store, WakeEvent};
use std::time::Duration;
use uuid::Uuid;

fn claim(holder: &str) -> Claim {
    Claim {
        holder: holder.to_string(),
        task_id: Uuid::new_v4(),
        purpose: "wakeup test".to_string(),
    }
}

async fn node(s: &dyn Store, name: &str) -> Uuid {
    s.create_node(NewNode {
        name: Some(name.to_string()),
        driver: "fake-hardware".to_string(),
        ..Default::default()
    })
    .await
    .unwrap()
    .uuid
}

async fn grant_is_pushed_with_the_row_and_nothing_else_wakes(engine: Engine) {
    let Some(t) = TestStore::open(engine).await else {
        return;
    };
    let a = t.store.clone();
    let b = t.reopen(|_| {}).await;
    register(&*a, "cond-a").await;
    register(&*a, "cond-b").await;
    let n = node(&*a, "n").await;
    let mut sub = b.subscribe_wakeups("cond-b").await.unwrap();
    assert!(
        !sub.is_poll(),
        "{engine:?}: cross-process wakeups must be pushed, not polled"
    );
    let held = a.try_acquire(n, &claim("cond-a")).await.unwrap();
    let waiter = claim("cond-b");
    let Enqueued::Queued { .. } = b
        .enqueue(n, &waiter, Some(Duration::from_secs(60)), 32)
        .await
        .unwrap()
    else {
        panic!("expected to queue behind cond-a");
    };
    // Other traffic commits on the file/database: nobody is woken.
    for i in 0..20 {
        let m = node(&*a, &format!("other-{i}")).await;
        let tok = a.try_acquire(m, &claim("cond-a")).await.unwrap();
        a.release(&tok).await.unwrap();
    }
    let quiet = tokio::time::timeout(Duration::from_millis(300), sub.next()).await;
    assert!(
        quiet.is_err(),
        "{engine:?}: a wakeup without a grant: {quiet:?}"
    );
    // The release grants cond-b's waiter: the row comes back with it...
    let rel = a.release(&held).await.unwrap();
    let g = rel.granted_to.expect("the waiter is granted");
    assert_eq!(
        (g.conductor.as_str(), g.task_id),
        ("cond-b", waiter.task_id)
    );
    let granted = g.node.expect("the release returns the granted row");
    let now = a.get_node(&n.into()).await.unwrap();
    assert_eq!(*granted, now, "the granted row is the row as stored");
    let r = granted.reservation.clone().unwrap();
    assert_eq!(
        (r.holder.as_str(), r.task_id, r.epoch),
        ("cond-b", waiter.task_id, held.epoch + 1)
    );
    // ...and cond-b's process hears exactly that grant.
    let ev = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("the grant was not pushed to the waiter's process")
        .unwrap();
    assert_eq!(
        ev,
        Some(WakeEvent::Granted {
            node: n,
            task_id: waiter.task_id
        })
    );
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_grant_is_pushed_with_the_row_and_nothing_else_wakes() {
    grant_is_pushed_with_the_row_and_nothing_else_wakes(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_grant_is_pushed_with_the_row_and_nothing_else_wakes() {
    grant_is_pushed_with_the_row_and_nothing_else_wakes(Engine::Postgres).await;
}

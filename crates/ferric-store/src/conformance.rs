//! The conformance suite: behaviour every [`Store`] implementation must show.
//!
//! Each function is one test over a fresh store whose heartbeat timeout is
//! [`crate::testing::TEST_HEARTBEAT_TIMEOUT`]; `tests/conformance.rs`
//! instantiates all of them for SQLite and PostgreSQL. A new backend (the
//! simulator's memory store) instantiates the same list.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::testing::register;
use crate::*;
use ferric_core::{NewNode, ProvisionState};
use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// The names of every conformance test, for instantiation macros.
#[macro_export]
macro_rules! for_each_conformance_test {
    ($m:ident) => {
        $m!(
            create_get_and_duplicates,
            invalid_node_is_rejected_and_nothing_is_created,
            grant_increments_epoch_and_names_holder,
            second_acquire_is_refused_with_holder_purpose_and_duration,
            release_by_non_holder_is_rejected_and_changes_nothing,
            fenced_write_fails_after_lock_is_lost,
            handoff_is_atomic_and_fences_the_old_holder,
            waiters_are_granted_in_ticket_order_on_release,
            fresh_acquire_does_not_jump_the_queue,
            dead_and_expired_waiters_are_skipped,
            queue_is_bounded_by_max_waiters,
            cancel_after_grant_returns_the_lock,
            delete_is_fenced_and_removes_waiters,
            break_lock_is_conditional_and_audited,
            revisions_and_change_feed_have_no_gaps,
            power_observations_are_recorded_only_if_nothing_happened_since,
            list_pages_and_filters,
            conductor_liveness_uses_database_clock,
            racing_acquirers_never_share_the_lock,
            node_fields_round_trip,
            list_filters_select_in_the_store,
            list_sorts_by_any_key_with_a_stable_marker,
            resources_create_get_and_uniqueness,
            resources_go_with_their_node_and_feed_the_changes,
            resources_list_filters_sort_and_pages,
            resources_updates_are_conditional,
            resources_racing_creates_one_winner,
            resources_of_every_kind_are_stored_and_go_with_their_node,
            allocations_bind_and_delete_with_the_node_fenced,
            allocation_candidates_and_body_filters_select_in_the_store,
            a_save_without_provision_updated_at_touches_it,
            save_and_release_is_one_fenced_step,
            a_create_and_a_rename_racing_for_one_name_have_one_winner,
            a_node_delete_and_an_update_of_its_resource_race_without_a_cycle,
            concurrent_saves_each_keep_their_own_outcome
        );
    };
}

fn claim(holder: &str, purpose: &str) -> Claim {
    Claim {
        holder: holder.to_string(),
        task_id: Uuid::new_v4(),
        purpose: purpose.to_string(),
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

/// The queue invariants: waiter count on the row equals the waiter rows, and
/// an unlocked node has no waiters.
pub async fn check_lock_invariants(s: &dyn Store, n: Uuid) {
    let view = s.lock_view(n).await.unwrap();
    let node = s.get_node(&n.into()).await.unwrap();
    assert_eq!(
        node.lock_waiters as usize,
        view.waiters.len(),
        "lock_waiters out of sync"
    );
    if view.holder.is_none() {
        assert!(
            view.waiters.is_empty(),
            "unlocked node with waiters: {view:?}"
        );
    }
}

pub async fn create_get_and_duplicates(store: Arc<dyn Store>) {
    let s: &dyn Store = &*store;
    let n = s
        .create_node(NewNode {
            name: Some("node-a".into()),
            driver: "fake-hardware".into(),
            conductor_group: "Rack1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(n.provision_state, ProvisionState::Enroll);
    assert_eq!(n.conductor_group, "rack1");
    assert!(n.reservation.is_none());
    assert_eq!(n.lock_epoch, 0);
    let by_name = s.get_node(&NodeIdent::Name("node-a".into())).await.unwrap();
    let by_uuid = s.get_node(&n.uuid.into()).await.unwrap();
    assert_eq!(by_name, by_uuid);
    let dup = s
        .create_node(NewNode {
            name: Some("node-a".into()),
            driver: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(dup, StoreError::Duplicate { field: "name", .. }),
        "{dup:?}"
    );
    let dup = s
        .create_node(NewNode {
            uuid: Some(n.uuid),
            driver: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(dup, StoreError::Duplicate { field: "uuid", .. }),
        "{dup:?}"
    );
    let missing = s
        .get_node(&NodeIdent::Name("nope".into()))
        .await
        .unwrap_err();
    assert!(matches!(missing, StoreError::NodeNotFound(_)));
    let missing = s
        .try_acquire(Uuid::new_v4(), &claim("c", "x"))
        .await
        .unwrap_err();
    assert!(matches!(missing, StoreError::NodeNotFound(_)));
}

pub async fn invalid_node_is_rejected_and_nothing_is_created(store: Arc<dyn Store>) {
    let s: &dyn Store = &*store;
    for bad in [
        NewNode {
            name: Some("has space".into()),
            driver: "d".into(),
            ..Default::default()
        },
        NewNode {
            driver: String::new(),
            ..Default::default()
        },
        NewNode {
            driver: "d".into(),
            conductor_group: "bad group".into(),
            ..Default::default()
        },
    ] {
        let e = s.create_node(bad).await.unwrap_err();
        assert!(matches!(e, StoreError::Invalid(_)), "{e:?}");
    }
    let page = s.list_nodes(&NodeQuery::default()).await.unwrap();
    assert!(page.nodes.is_empty());
    assert_eq!(page.revision, 0);
}

pub async fn grant_increments_epoch_and_names_holder(store: Arc<dyn Store>) {
    let s: &dyn Store = &*store;
    let n = node(s, "n").await;
    let c = claim("cond-a", "power on");
    let t1 = s.try_acquire(n, &c).await.unwrap();
    assert_eq!(t1.epoch, 1);
    let got = s.get_node(&n.into()).await.unwrap();
    let r = got.reservation.unwrap();
    assert_eq!(
        (r.holder.as_str(), r.task_id, r.epoch, r.purpose.as_str()),
        ("cond-a", c.task_id, 1, "power on")
    );
    s.release(&t1).await.unwrap();
    assert!(s.get_node(&n.into()).await.unwrap().reservation.is_none());
    let t2 = s.try_acquire(n, &claim("cond-b", "deploy")).await.unwrap();
    assert_eq!(t2.epoch, 2, "every grant increments the epoch");
    s.release(&t2).await.unwrap();
    assert_eq!(
        s.get_node(&n.into()).await.unwrap().lock_epoch,
        2,
        "release keeps the epoch"
    );
}

pub async fn second_acquire_is_refused_with_holder_purpose_and_duration(store: Arc<dyn Store>) {
    let s: &dyn Store = &*store;
    let n = node(s, "n").await;
    let t = s.try_acquire(n, &claim("cond-a", "deploy")).await.unwrap();
    // The same conductor is refused too: locks are not re-entrant.
    for who in ["cond-b", "cond-a"] {
        let e = s.try_acquire(n, &claim(who, "console")).await.unwrap_err();
        match &e {
            StoreError::NodeLocked {
                holder,
                purpose,
                queue_full,
                ..
            } => {
                assert_eq!(holder.as_deref(), Some("cond-a"));
                assert_eq!(purpose.as_deref(), Some("deploy"));
                assert!(!queue_full);
            }
            other => panic!("expected NodeLocked, got {other:?}"),
        }
        let msg = e.to_string();
        assert!(
            msg.contains("locked by host cond-a (purpose: deploy) for"),
            "{msg}"
        );
        assert!(
            msg.ends_with("please retry after the current operation is completed."),
            "{msg}"
        );
    }
    s.release(&t).await.unwrap();
}

pub async fn release_by_non_holder_is_rejected_and_changes_nothing(store: Arc<dyn Store>) {
    let s: &dyn Store = &*store;
    let n = node(s, "n").await;
    // Releasing an unlocked node.
    let ghost = LockToken {
        node: n,
        holder: "cond-a".into(),
        task_id: Uuid::new_v4(),
        epoch: 0,
        purpose: String::new(),
        acquired_at: DbTime(0),
    };
    assert!(matches!(
        s.release(&ghost).await.unwrap_err(),
        StoreError::NodeNotLocked { current: None, .. }
    ));
    let t = s.try_acquire(n, &claim("cond-a", "deploy")).await.unwrap();
    // Another conductor, another task of the same conductor, a stale epoch.
    let others = [
        LockToken {
            holder: "cond-b".into(),
            ..t.clone()
        },
        LockToken {
            task_id: Uuid::new_v4(),
            ..t.clone()
        },
        LockToken {
            epoch: t.epoch - 1,
            ..t.clone()
        },
    ];
    for o in &others {
        let e = s.release(o).await.unwrap_err();
        assert!(
            matches!(&e, StoreError::NodeNotLocked { current: Some(h), .. } if h == "cond-a"),
            "{e:?}"
        );
        let still = s.get_node(&n.into()).await.unwrap().reservation.unwrap();
        assert_eq!(
            (still.task_id, still.epoch),
            (t.task_id, t.epoch),
            "someone else's lock was touched"
        );
    }
    s.release(&t).await.unwrap();
    // A second release of the same token is rejected.
    assert!(matches!(
        s.release(&t).await.unwrap_err(),
        StoreError::NodeNotLocked { .. }
    ));
}

pub async fn fenced_write_fails_after_lock_is_lost(store: Arc<dyn Store>) {
    let s: &dyn Store = &*store;
    register(s, "cond-a").await;
    let n = node(s, "n").await;
    let t1 = s.try_acquire(n, &claim("cond-a", "deploy")).await.unwrap();
    let mut node1 = s.get_node(&n.into()).await.unwrap();
    node1.last_error = Some("first".into());
    let saved = s.save_node(&t1, &node1).await.unwrap();
    assert_eq!(saved.last_error.as_deref(), Some("first"));
    // The lock is broken (operator force / recovery) and taken by another.
    s.break_lock(n, &t1, None).await.unwrap();
    let t2 = s.try_acquire(n, &claim("cond-b", "recover")).await.unwrap();
    assert_eq!(t2.epoch, t1.epoch + 1);
    // The zombie holder writes with its old token: refused, nothing written.
    let mut zombie = saved.clone();
    zombie.last_error = Some("zombie".into());
    zombie.provision_state = ProvisionState::Active;
    let e = s.save_node(&t1, &zombie).await.unwrap_err();
    assert!(
        matches!(&e, StoreError::LockLost { current: Some(h), .. } if h == "cond-b"),
        "{e:?}"
    );
    let now = s.get_node(&n.into()).await.unwrap();
    assert_eq!(now.last_error.as_deref(), Some("first"));
    assert_eq!(now.provision_state, ProvisionState::Enroll);
    assert_eq!(
        now.revision, saved.revision,
        "a refused write must not bump the revision"
    );
    // After release, the old token is refused as well.
    s.release(&t2).await.unwrap();
    assert!(matches!(
        s.save_node(&t2, &zombie).await.unwrap_err(),
        StoreError::LockLost { current: None, .. }
    ));
    // Writes for a deleted node say so.
    let gone = LockToken {
        node: Uuid::new_v4(),
        ..t2.clone()
    };
    let mut other = zombie.clone();
    other.uuid = gone.node;
    assert!(matches!(
        s.save_node(&gone, &other).await.unwrap_err(),
        StoreError::NodeNotFound(_)
    ));
}

/// `save_node_and_release`: the write and the release land together (one
/// revision, one change-feed entry, lock free or handed to the head waiter
/// with the saved row); a stale token writes and releases nothing; a write
/// the store refuses for its content releases nothing either.
pub async fn save_and_release_is_one_fenced_step(store: Arc<dyn Store>) {
    let s: &dyn Store = &*store;
    register(s, "cond-a").await;
    register(s, "cond-b").await;
    let n = node(s, "n").await;
    node(s, "taken-name").await;
    // Nobody waits: saved and unlocked.
    let t1 = s.try_acquire(n, &claim("cond-a", "deploy")).await.unwrap();
    let before = s.get_node(&n.into()).await.unwrap();
    let mut changed = before.clone();
    changed.extra.insert("k".into(), serde_json::json!("v1"));
    let (saved, rel) = s.save_node_and_release(&t1, &changed).await.unwrap();
    assert_eq!(rel, Release::default());
    assert_eq!(saved.extra.get("k"), Some(&serde_json::json!("v1")));
    assert!(saved.revision > before.revision);
    let now = s.get_node(&n.into()).await.unwrap();
    assert!(now.reservation.is_none(), "released: {now:?}");
    assert_eq!(now.revision, saved.revision);
    assert_eq!(now.extra, saved.extra);
    let feed = s.changes_since(before.revision, 100).await.unwrap();
    let ours: Vec<_> = feed.iter().filter(|c| c.node == n).collect();
    assert_eq!(ours.len(), 1, "one change-feed entry: {feed:?}");
    assert_eq!(ours[0].revision, saved.revision);
    check_lock_invariants(s, n).await;
    // A waiter is queued: the lock goes to it, with the saved row.
    let t2 = s.try_acquire(n, &claim("cond-a", "deploy")).await.unwrap();
    let c = claim("cond-b", "wait");
    let ticket = match s
        .enqueue(n, &c, Some(Duration::from_secs(60)), 32)
        .await
        .unwrap()
    {
        Enqueued::Queued { ticket, .. } => ticket,
        other => panic!("expected to queue, got {other:?}"),
    };
    let mut changed = s.get_node(&n.into()).await.unwrap();
    changed.extra.insert("k".into(), serde_json::json!("v2"));
    let (saved, rel) = s.save_node_and_release(&t2, &changed).await.unwrap();
    let g = rel.granted_to.expect("handed to the waiter");
    assert_eq!(
        (g.conductor.as_str(), g.task_id, g.ticket, g.epoch),
        ("cond-b", c.task_id, ticket, t2.epoch + 1)
    );
    let now = s.get_node(&n.into()).await.unwrap();
    if let Some(granted) = &g.node {
        assert_eq!(**granted, now, "the grantee gets the row as stored");
    }
    assert_eq!(now.extra.get("k"), Some(&serde_json::json!("v2")));
    assert_eq!(now.revision, saved.revision);
    let held = now.reservation.clone().expect("granted");
    assert_eq!((held.task_id, held.epoch), (c.task_id, g.epoch));
    check_lock_invariants(s, n).await;
    // The old holder's token is stale now: nothing written or released.
    let mut zombie = now.clone();
    zombie.extra.insert("k".into(), serde_json::json!("zombie"));
    let e = s.save_node_and_release(&t2, &zombie).await.unwrap_err();
    assert!(
        matches!(&e, StoreError::LockLost { current: Some(h), .. } if h == "cond-b"),
        "{e:?}"
    );
    let after = s.get_node(&n.into()).await.unwrap();
    assert_eq!(after, now, "a refused save-and-release changes nothing");
    // The holder's write is refused for its content (a taken name): the
    // lock stays with it.
    let t3 = match s.poll_waiter(n, ticket, c.task_id).await.unwrap() {
        WaitStatus::Granted(t) => t,
        other => panic!("expected the grant, got {other:?}"),
    };
    let mut clash = after.clone();
    clash.name = Some("taken-name".into());
    assert!(s.save_node_and_release(&t3, &clash).await.is_err());
    let still = s.get_node(&n.into()).await.unwrap();
    assert_eq!(still, after, "nothing written");
    assert_eq!(
        still.reservation.map(|r| (r.task_id, r.epoch)),
        Some((t3.task_id, t3.epoch)),
        "the lock is still the holder's"
    );
    s.release(&t3).await.unwrap();
    check_lock_invariants(s, n).await;
}

/// `provision_updated_at` moves with the provision state, and when a node
/// is saved without it (`ExclusiveTask::touch_provisioning`, Ironic's
/// `touch_provisioning`): the database's now; otherwise it stays.
pub async fn a_save_without_provision_updated_at_touches_it(store: Arc<dyn Store>) {
    let s: &dyn Store = &*store;
    register(s, "cond-a").await;
    let n = node(s, "touch").await;
    let t = s.try_acquire(n, &claim("cond-a", "wait")).await.unwrap();
    let created = s.get_node(&n.into()).await.unwrap();
    let first = created.provision_updated_at.expect("set at creation");
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let mut same = created.clone();
    same.last_error = Some("x".into());
    let saved = s.save_node(&t, &same).await.unwrap();
    assert_eq!(
        saved.provision_updated_at,
        Some(first),
        "an ordinary save keeps it"
    );
    let mut touched = saved.clone();
    touched.provision_updated_at = None;
    let saved = s.save_node(&t, &touched).await.unwrap();
    let later = saved.provision_updated_at.expect("stamped");
    assert!(later.0 > first.0, "touched: {later:?} after {first:?}");
    assert_eq!(saved.provision_state, created.provision_state);
    s.release(&t).await.unwrap();
}

pub async fn handoff_is_atomic_and_fences_the_old_holder(store: Arc<dyn Store>) {
    let s: &dyn Store = &*store;
    let n = node(s, "n").await;
    let t1 = s.try_acquire(n, &claim("cond-a", "deploy")).await.unwrap();
    let to = claim("cond-b", "continue deploy");
    let t2 = s.handoff(&t1, &to).await.unwrap();
    assert_eq!(t2.epoch, t1.epoch + 1);
    assert_eq!((t2.holder.as_str(), t2.task_id), ("cond-b", to.task_id));
    // Nobody could have slipped in: the node is held by the receiver.
    let r = s.get_node(&n.into()).await.unwrap().reservation.unwrap();
    assert_eq!((r.holder.as_str(), r.epoch), ("cond-b", t2.epoch));
    // The giver can no longer write, release or hand off.
    let node_now = s.get_node(&n.into()).await.unwrap();
    assert!(matches!(
        s.save_node(&t1, &node_now).await.unwrap_err(),
        StoreError::LockLost { .. }
    ));
    assert!(matches!(
        s.release(&t1).await.unwrap_err(),
        StoreError::NodeNotLocked { .. }
    ));
    assert!(matches!(
        s.handoff(&t1, &claim("x", "y")).await.unwrap_err(),
        StoreError::LockLost { .. }
    ));
    s.save_node(&t2, &node_now).await.unwrap();
    s.release(&t2).await.unwrap();
}

pub async fn waiters_are_granted_in_ticket_order_on_release(store: Arc<dyn Store>) {
    let s: &dyn Store = &*store;
    for h in ["cond-a", "cond-b", "cond-c", "cond-d"] {
        register(s, h).await;
    }
    let n = node(s, "n").await;
    let holder = s.try_acquire(n, &claim("cond-a", "deploy")).await.unwrap();
    let mut tickets = Vec::new();
    for h in ["cond-b", "cond-c", "cond-d"] {
        let c = claim(h, "wait");
        match s
            .enqueue(n, &c, Some(Duration::from_secs(60)), 32)
            .await
            .unwrap()
        {
            Enqueued::Queued { ticket, position } => {
                assert_eq!(position as usize, tickets.len() + 1);
                tickets.push((ticket, c));
            }
            other => panic!("expected to queue, got {other:?}"),
        }
    }
    assert!(
        tickets.windows(2).all(|w| w[0].0 < w[1].0),
        "tickets are monotonic"
    );
    check_lock_invariants(s, n).await;
    let mut current = holder;
    for (ticket, c) in &tickets {
        assert_eq!(
            s.poll_waiter(n, *ticket, c.task_id).await.unwrap(),
            WaitStatus::Waiting
        );
        let rel = s.release(&current).await.unwrap();
        let g = rel
            .granted_to
            .expect("release hands the lock to the head waiter");
        assert_eq!(
            (g.conductor.as_str(), g.task_id, g.ticket),
            (c.holder.as_str(), c.task_id, *ticket)
        );
        assert_eq!(g.epoch, current.epoch + 1);
        // A store that reads the granted row in the release hands out the
        // row as stored (the grantee in process uses it instead of a read).
        if let Some(granted) = &g.node {
            assert_eq!(**granted, s.get_node(&n.into()).await.unwrap());
        }
        match s.poll_waiter(n, *ticket, c.task_id).await.unwrap() {
            WaitStatus::Granted(t) => {
                assert_eq!(t.epoch, g.epoch);
                // The combined poll agrees and returns the node as granted.
                let (again, loaded) = s.poll_waiter_node(n, *ticket, c.task_id).await.unwrap();
                assert_eq!(again, WaitStatus::Granted(t.clone()));
                let r = loaded
                    .expect("granted poll returns the node")
                    .reservation
                    .unwrap();
                assert_eq!((r.task_id, r.epoch), (c.task_id, t.epoch));
                current = t;
            }
            other => panic!("expected a grant, got {other:?}"),
        }
        check_lock_invariants(s, n).await;
    }
    let rel = s.release(&current).await.unwrap();
    assert!(rel.granted_to.is_none());
    check_lock_invariants(s, n).await;
    assert_eq!(s.get_node(&n.into()).await.unwrap().lock_epoch, 4);
}

pub async fn fresh_acquire_does_not_jump_the_queue(store: Arc<dyn Store>) {
    let s: &dyn Store = &*store;
    register(s, "cond-a").await;
    register(s, "cond-b").await;
    let n = node(s, "n").await;
    let holder = s.try_acquire(n, &claim("cond-a", "console")).await.unwrap();
    let patient = claim("cond-b", "continue deploy");
    let Enqueued::Queued { ticket, .. } = s.enqueue(n, &patient, None, 32).await.unwrap() else {
        panic!("should queue")
    };
    s.release(&holder).await.unwrap();
    // The "hog" tries again right after its release: the lock already belongs to the waiter.
    let e = s
        .try_acquire(n, &claim("cond-a", "console"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, StoreError::NodeLocked { holder: Some(h), .. } if h == "cond-b"),
        "{e:?}"
    );
    let Enqueued::Queued { .. } = s
        .enqueue(
            n,
            &claim("cond-a", "console"),
            Some(Duration::from_secs(5)),
            32,
        )
        .await
        .unwrap()
    else {
        panic!("should queue behind the holder")
    };
    let WaitStatus::Granted(t) = s.poll_waiter(n, ticket, patient.task_id).await.unwrap() else {
        panic!("patient waiter should hold the lock")
    };
    check_lock_invariants(s, n).await;
    let rel = s.release(&t).await.unwrap();
    assert_eq!(rel.granted_to.unwrap().conductor, "cond-a");
    check_lock_invariants(s, n).await;
}

pub async fn dead_and_expired_waiters_are_skipped(store: Arc<dyn Store>) {
    let s: &dyn Store = &*store;
    for h in ["cond-a", "cond-dead", "cond-live"] {
        register(s, h).await;
    }
    let n = node(s, "n").await;
    let t = s.try_acquire(n, &claim("cond-a", "deploy")).await.unwrap();
    let dead = claim("cond-dead", "wait");
    let expired = claim("cond-live", "short wait");
    let live = claim("cond-live", "long wait");
    let unknown = claim("cond-never-registered", "wait");
    let mut tickets = Vec::new();
    for (c, wait) in [
        (&dead, Some(Duration::from_secs(60))),
        (&expired, Some(Duration::from_millis(1))),
        (&unknown, None),
        (&live, Some(Duration::from_secs(60))),
    ] {
        let Enqueued::Queued { ticket, .. } = s.enqueue(n, c, wait, 32).await.unwrap() else {
            panic!()
        };
        tickets.push(ticket);
    }
    s.unregister_conductor("cond-dead").await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let view = s.lock_view(n).await.unwrap();
    let live_flags: Vec<bool> = view.waiters.iter().map(|w| w.live).collect();
    assert_eq!(live_flags, vec![false, false, false, true]);
    let rel = s.release(&t).await.unwrap();
    assert_eq!(rel.skipped_waiters, 3);
    assert_eq!(rel.granted_to.unwrap().task_id, live.task_id);
    for (c, ticket) in [
        (&dead, tickets[0]),
        (&expired, tickets[1]),
        (&unknown, tickets[2]),
    ] {
        assert_eq!(
            s.poll_waiter(n, ticket, c.task_id).await.unwrap(),
            WaitStatus::Gone
        );
    }
    check_lock_invariants(s, n).await;
}

pub async fn queue_is_bounded_by_max_waiters(store: Arc<dyn Store>) {
    let s: &dyn Store = &*store;
    register(s, "cond-a").await;
    let n = node(s, "n").await;
    let t = s.try_acquire(n, &claim("cond-a", "deploy")).await.unwrap();
    for _ in 0..3 {
        assert!(matches!(
            s.enqueue(n, &claim("cond-a", "w"), Some(Duration::from_secs(9)), 3)
                .await
                .unwrap(),
            Enqueued::Queued { .. }
        ));
    }
    let e = s
        .enqueue(n, &claim("cond-a", "w"), Some(Duration::from_secs(9)), 3)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &e,
            StoreError::NodeLocked {
                queue_full: true,
                waiters: 3,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("queue is full"));
    check_lock_invariants(s, n).await;
    assert_eq!(
        s.lock_view(n).await.unwrap().waiters.len(),
        3,
        "the refused waiter was not queued"
    );
    s.release(&t).await.unwrap();
}

pub async fn cancel_after_grant_returns_the_lock(store: Arc<dyn Store>) {
    let s: &dyn Store = &*store;
    register(s, "cond-a").await;
    let n = node(s, "n").await;
    let t = s.try_acquire(n, &claim("cond-a", "deploy")).await.unwrap();
    let w1 = claim("cond-a", "w1");
    let w2 = claim("cond-a", "w2");
    let Enqueued::Queued { ticket: k1, .. } = s.enqueue(n, &w1, None, 32).await.unwrap() else {
        panic!()
    };
    let Enqueued::Queued { ticket: k2, .. } = s.enqueue(n, &w2, None, 32).await.unwrap() else {
        panic!()
    };
    // w2 gives up before being granted: it leaves the queue.
    assert_eq!(s.cancel_wait(n, k2, w2.task_id).await.unwrap(), None);
    check_lock_invariants(s, n).await;
    // w1 is granted by the release, then "cancels" (its deadline fired at the
    // same moment): the cancel reports the grant and the lock is kept.
    s.release(&t).await.unwrap();
    let got = s
        .cancel_wait(n, k1, w1.task_id)
        .await
        .unwrap()
        .expect("granted before cancel");
    assert_eq!(got.task_id, w1.task_id);
    check_lock_invariants(s, n).await;
    let rel = s.release(&got).await.unwrap();
    assert!(
        rel.granted_to.is_none(),
        "the cancelled waiter must not be granted"
    );
    check_lock_invariants(s, n).await;
}

pub async fn delete_is_fenced_and_removes_waiters(store: Arc<dyn Store>) {
    let s: &dyn Store = &*store;
    register(s, "cond-a").await;
    let n = node(s, "n").await;
    let t = s.try_acquire(n, &claim("cond-a", "delete")).await.unwrap();
    let w = claim("cond-a", "w");
    let Enqueued::Queued { ticket, .. } = s.enqueue(n, &w, None, 32).await.unwrap() else {
        panic!()
    };
    let stale = LockToken {
        epoch: t.epoch + 5,
        ..t.clone()
    };
    assert!(matches!(
        s.delete_node(&stale).await.unwrap_err(),
        StoreError::LockLost { .. }
    ));
    s.get_node(&n.into()).await.unwrap();
    s.delete_node(&t).await.unwrap();
    assert!(matches!(
        s.get_node(&n.into()).await.unwrap_err(),
        StoreError::NodeNotFound(_)
    ));
    assert!(matches!(
        s.poll_waiter(n, ticket, w.task_id).await.unwrap_err(),
        StoreError::NodeNotFound(_)
    ));
    assert!(s.list_locks().await.unwrap().is_empty());
    assert!(matches!(
        s.release(&t).await.unwrap_err(),
        StoreError::NodeNotFound(_)
    ));
}

pub async fn break_lock_is_conditional_and_audited(store: Arc<dyn Store>) {
    let s: &dyn Store = &*store;
    register(s, "cond-a").await;
    register(s, "cond-b").await;
    let n = node(s, "n").await;
    let t = s.try_acquire(n, &claim("cond-a", "deploy")).await.unwrap();
    let w = claim("cond-b", "w");
    let Enqueued::Queued { .. } = s.enqueue(n, &w, None, 32).await.unwrap() else {
        panic!()
    };
    let audit = AuditEntry {
        action: "force-release".into(),
        actor: "alice".into(),
        reason: "stuck BMC".into(),
    };
    let rel = s.break_lock(n, &t, Some(&audit)).await.unwrap();
    assert_eq!(
        rel.granted_to.as_ref().unwrap().task_id,
        w.task_id,
        "a broken lock goes to the next waiter"
    );
    // A second recoverer with the same expectation changes nothing.
    let e = s.break_lock(n, &t, Some(&audit)).await.unwrap_err();
    assert!(
        matches!(&e, StoreError::NodeNotLocked { current: Some(h), .. } if h == "cond-b"),
        "{e:?}"
    );
    let log = s.list_audit(10).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(
        (
            log[0].actor.as_str(),
            log[0].reason.as_str(),
            log[0].previous_holder.as_deref(),
            log[0].previous_epoch
        ),
        ("alice", "stuck BMC", Some("cond-a"), t.epoch)
    );
    assert_eq!(log[0].previous_purpose.as_deref(), Some("deploy"));
    check_lock_invariants(s, n).await;
}

pub async fn revisions_and_change_feed_have_no_gaps(store: Arc<dyn Store>) {
    let s: &dyn Store = &*store;
    let a = node(s, "a").await;
    let b = node(s, "b").await;
    let t = s.try_acquire(a, &claim("c", "edit")).await.unwrap();
    let mut na = s.get_node(&a.into()).await.unwrap();
    na.extra.insert("k".into(), serde_json::json!("v"));
    let saved = s.save_node(&t, &na).await.unwrap();
    // Lock traffic is not a node change.
    s.release(&t).await.unwrap();
    let t = s.try_acquire(b, &claim("c", "delete")).await.unwrap();
    s.delete_node(&t).await.unwrap();
    let changes = s.changes_since(0, 100).await.unwrap();
    let revs: Vec<i64> = changes.iter().map(|c| c.revision).collect();
    assert_eq!(revs, vec![1, 2, 3, 4]);
    let kinds: Vec<(Uuid, ChangeKind)> = changes.iter().map(|c| (c.node, c.kind)).collect();
    assert_eq!(
        kinds,
        vec![
            (a, ChangeKind::Created),
            (b, ChangeKind::Created),
            (a, ChangeKind::Updated),
            (b, ChangeKind::Deleted)
        ]
    );
    assert_eq!(saved.revision, 3);
    // The change row carries the node exactly as saved, revision included,
    // and the store holds the revision save_node reported.
    assert_eq!(changes[2].snapshot.as_ref(), Some(&saved));
    assert_eq!(s.get_node(&a.into()).await.unwrap().revision, 3);
    assert_eq!(
        changes[2].snapshot.as_ref().unwrap().extra.get("k"),
        Some(&serde_json::json!("v"))
    );
    assert!(changes[3].snapshot.is_none());
    assert_eq!(s.changes_since(2, 100).await.unwrap().len(), 2);
    assert_eq!(s.changes_since(0, 1).await.unwrap().len(), 1);
    assert_eq!(
        s.list_nodes(&NodeQuery::default()).await.unwrap().revision,
        4
    );
}

pub async fn power_observations_are_recorded_only_if_nothing_happened_since(store: Arc<dyn Store>) {
    use ferric_core::PowerState;
    let s: &dyn Store = &*store;
    let observe = |n: &ferric_core::Node, p: PowerState| PowerObservation {
        node: n.uuid,
        lock_epoch: n.lock_epoch,
        revision: n.revision,
        power_state: p,
    };
    let [a, held, relocked, rewritten] = [
        node(s, "a").await,
        node(s, "held").await,
        node(s, "relocked").await,
        node(s, "rewritten").await,
    ];
    let listed = s.list_nodes(&NodeQuery::default()).await.unwrap();
    let seen = |u: Uuid| listed.nodes.iter().find(|n| n.uuid == u).unwrap().clone();
    // Locked now: skipped. Locked and released since: skipped.
    let hold = s.try_acquire(held, &claim("c", "deploy")).await.unwrap();
    let t = s.try_acquire(relocked, &claim("c", "edit")).await.unwrap();
    s.release(&t).await.unwrap();
    let before = s.changes_since(0, 1_000).await.unwrap().len();
    let stale_rewrite = observe(&seen(rewritten), PowerState::On);
    let mut observed = vec![
        observe(&seen(a), PowerState::On),
        observe(&seen(held), PowerState::On),
        observe(&seen(relocked), PowerState::On),
        stale_rewrite.clone(),
        PowerObservation {
            node: Uuid::new_v4(),
            lock_epoch: 0,
            revision: 0,
            power_state: PowerState::On,
        },
    ];
    let recorded = s.record_power_states(&observed).await.unwrap();
    let got: Vec<Uuid> = recorded.iter().map(|n| n.uuid).collect();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got.contains(&a) && got.contains(&rewritten));
    for n in [held, relocked] {
        assert_eq!(s.get_node(&n.into()).await.unwrap().power_state, None);
    }
    // Each recorded node has its own revision and change entry, exactly as
    // stored, and the counter moved by the number recorded.
    let changes = s.changes_since(0, 1_000).await.unwrap();
    assert_eq!(changes.len(), before + 2);
    let revs: Vec<i64> = changes.iter().map(|c| c.revision).collect();
    assert_eq!(revs, (1..=revs.len() as i64).collect::<Vec<_>>());
    for n in &recorded {
        let stored = s.get_node(&n.uuid.into()).await.unwrap();
        assert_eq!(&stored, n);
        assert_eq!(stored.power_state, Some(PowerState::On));
        assert_eq!(stored.lock_epoch, seen(n.uuid).lock_epoch, "no grant taken");
        let c = changes.iter().find(|c| c.revision == n.revision).unwrap();
        assert_eq!((c.node, c.kind), (n.uuid, ChangeKind::Updated));
        assert_eq!(c.snapshot.as_ref(), Some(n));
    }
    let page = s.list_nodes(&NodeQuery::default()).await.unwrap();
    assert_eq!(page.revision, *revs.last().unwrap());
    // The same observation again is stale (the node was written since): no
    // change, no revision, nothing in the feed.
    observed.truncate(0);
    observed.push(PowerObservation {
        power_state: PowerState::Off,
        ..stale_rewrite
    });
    assert!(s.record_power_states(&observed).await.unwrap().is_empty());
    assert_eq!(
        s.get_node(&rewritten.into()).await.unwrap().power_state,
        Some(PowerState::On)
    );
    assert_eq!(s.changes_since(0, 1_000).await.unwrap().len(), before + 2);
    assert!(s.record_power_states(&[]).await.unwrap().is_empty());
    // One node observed twice in a batch, the readings chunks apart: the
    // first counts, the second is stale by then.
    let n = s.get_node(&relocked.into()).await.unwrap();
    let mut twice = vec![observe(&n, PowerState::Off)];
    twice.extend((0..120).map(|_| PowerObservation {
        node: Uuid::new_v4(),
        lock_epoch: 0,
        revision: 0,
        power_state: PowerState::On,
    }));
    twice.push(observe(&n, PowerState::On));
    let recorded = s.record_power_states(&twice).await.unwrap();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0].power_state, Some(PowerState::Off));
    let stored = s.get_node(&relocked.into()).await.unwrap();
    assert_eq!(stored.power_state, Some(PowerState::Off));
    assert_eq!(
        s.changes_since(0, 1_000).await.unwrap().len(),
        before + 3,
        "one change for the node observed twice"
    );
    for n in [a, held, relocked, rewritten] {
        check_lock_invariants(s, n).await;
    }
    s.release(&hold).await.unwrap();
    // More observations than one multi-row statement holds.
    s.create_nodes(
        (0..130)
            .map(|i| NewNode {
                name: Some(format!("bulk-{i}")),
                driver: "fake-hardware".to_string(),
                ..Default::default()
            })
            .collect(),
    )
    .await
    .unwrap();
    let page = s.list_nodes(&NodeQuery::default()).await.unwrap();
    let bulk: Vec<PowerObservation> = page
        .nodes
        .iter()
        .filter(|n| n.power_state.is_none())
        .map(|n| observe(n, PowerState::Off))
        .collect();
    assert_eq!(bulk.len(), 131);
    let recorded = s.record_power_states(&bulk).await.unwrap();
    assert_eq!(recorded.len(), 131);
    let mut revs: Vec<i64> = recorded.iter().map(|n| n.revision).collect();
    revs.sort_unstable();
    assert_eq!(
        revs,
        ((page.revision + 1)..=(page.revision + 131)).collect::<Vec<_>>()
    );
    let after = s.list_nodes(&NodeQuery::default()).await.unwrap();
    assert_eq!(after.revision, page.revision + 131);
    assert!(after.nodes.iter().all(|n| n.power_state.is_some()));
    let feed = s.changes_since(page.revision, 1_000).await.unwrap();
    assert_eq!(feed.len(), 131);
    for c in feed {
        let n = after.nodes.iter().find(|n| n.uuid == c.node).unwrap();
        assert_eq!(c.snapshot.as_ref(), Some(n));
    }
}

pub async fn list_pages_and_filters(store: Arc<dyn Store>) {
    let s: &dyn Store = &*store;
    let mut all = Vec::new();
    for i in 0..7 {
        all.push(node(s, &format!("n{i}")).await);
    }
    all.sort();
    let mut seen = Vec::new();
    let mut marker = None;
    loop {
        let page = s
            .list_nodes(&NodeQuery {
                marker,
                limit: Some(3),
                ..Default::default()
            })
            .await
            .unwrap();
        if page.nodes.is_empty() {
            break;
        }
        marker = page.nodes.last().map(|n| n.uuid);
        seen.extend(page.nodes.iter().map(|n| n.uuid));
    }
    assert_eq!(seen, all);
    let t = s.try_acquire(all[0], &claim("c", "x")).await.unwrap();
    let reserved = s
        .list_nodes(&NodeQuery {
            reserved: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        reserved.nodes.iter().map(|n| n.uuid).collect::<Vec<_>>(),
        vec![all[0]]
    );
    let enroll = s
        .list_nodes(&NodeQuery {
            provision_state: Some("enroll".into()),
            maintenance: Some(false),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(enroll.nodes.len(), 7);
    let none = s
        .list_nodes(&NodeQuery {
            driver: Some("redfish".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(none.nodes.is_empty());
    s.release(&t).await.unwrap();
}

pub async fn conductor_liveness_uses_database_clock(store: Arc<dyn Store>) {
    let s: &dyn Store = &*store;
    register(s, "cond-a").await;
    register(s, "cond-b").await;
    let list = s.list_conductors().await.unwrap();
    assert!(list.iter().all(|c| c.alive && c.online));
    s.unregister_conductor("cond-b").await.unwrap();
    let list = s.list_conductors().await.unwrap();
    let b = list.iter().find(|c| c.hostname == "cond-b").unwrap();
    assert!(!b.online && !b.alive);
    assert!(matches!(
        s.heartbeat("nobody").await.unwrap_err(),
        StoreError::ConductorNotFound(_)
    ));
    // Let cond-a's heartbeat age past the timeout, keep it fresh for nobody else.
    let t0 = s.now().await.unwrap();
    tokio::time::sleep(crate::testing::TEST_HEARTBEAT_TIMEOUT + Duration::from_millis(300)).await;
    let t1 = s.now().await.unwrap();
    assert!(t1.micros_since(t0) >= crate::testing::TEST_HEARTBEAT_TIMEOUT.as_micros() as i64);
    let a = s
        .list_conductors()
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.hostname == "cond-a")
        .unwrap();
    assert!(a.online && !a.alive, "a stale heartbeat means dead: {a:?}");
    s.heartbeat("cond-a").await.unwrap();
    let a = s
        .list_conductors()
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.hostname == "cond-a")
        .unwrap();
    assert!(a.alive);
}

/// Many tasks race for one node through try_acquire and enqueue. At every
/// moment at most one believes it holds the lock; epochs are unique and
/// increasing; a write with any released token fails with LockLost.
pub async fn racing_acquirers_never_share_the_lock(store: Arc<dyn Store>) {
    let s: &dyn Store = &*store;
    register(s, "cond-a").await;
    register(s, "cond-b").await;
    // Both conductors stay alive however long a loaded machine takes: a
    // waiter of a conductor whose heartbeat aged out would (rightly) be
    // skipped, which is not what this test is about.
    let beating = {
        let store = store.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                for h in ["cond-a", "cond-b"] {
                    let _ = store.heartbeat(h).await;
                }
            }
        })
    };
    let n = node(s, "race").await;
    let inside = Arc::new(AtomicI64::new(0));
    let epochs = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let stale = Arc::new(tokio::sync::Mutex::new(Vec::<LockToken>::new()));
    let mut tasks = Vec::new();
    for i in 0..16 {
        let inside = inside.clone();
        let epochs = epochs.clone();
        let stale = stale.clone();
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let holder = if i % 2 == 0 { "cond-a" } else { "cond-b" };
            for round in 0..6 {
                let c = claim(holder, &format!("task {i} round {round}"));
                let token = if (i + round) % 3 == 0 {
                    match store.try_acquire(n, &c).await {
                        Ok(t) => t,
                        Err(StoreError::NodeLocked { .. }) => continue,
                        Err(e) => panic!("{e}"),
                    }
                } else {
                    match store
                        .enqueue(n, &c, Some(Duration::from_secs(30)), 64)
                        .await
                        .unwrap()
                    {
                        Enqueued::Granted(t) => t,
                        Enqueued::Queued { ticket, .. } => loop {
                            match store.poll_waiter(n, ticket, c.task_id).await.unwrap() {
                                WaitStatus::Granted(t) => break t,
                                WaitStatus::Waiting => {
                                    tokio::time::sleep(Duration::from_millis(1)).await
                                }
                                WaitStatus::Gone => panic!("live waiter dropped"),
                            }
                        },
                    }
                };
                assert_eq!(
                    inside.fetch_add(1, Ordering::SeqCst),
                    0,
                    "two holders at once"
                );
                epochs.lock().await.push(token.epoch);
                let mut cur = store.get_node(&n.into()).await.unwrap();
                cur.extra
                    .insert("last".into(), serde_json::json!(token.epoch));
                store.save_node(&token, &cur).await.unwrap();
                tokio::task::yield_now().await;
                inside.fetch_sub(1, Ordering::SeqCst);
                store.release(&token).await.unwrap();
                stale.lock().await.push(token);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    beating.abort();
    let epochs = epochs.lock().await.clone();
    let unique: HashSet<_> = epochs.iter().collect();
    assert_eq!(unique.len(), epochs.len(), "an epoch was granted twice");
    let mut sorted = epochs.clone();
    sorted.sort();
    assert_eq!(epochs, sorted, "grants happened out of epoch order");
    let cur = s.get_node(&n.into()).await.unwrap();
    assert_eq!(cur.lock_epoch as usize, epochs.len());
    for t in stale.lock().await.iter().take(10) {
        assert!(matches!(
            s.save_node(t, &cur).await.unwrap_err(),
            StoreError::LockLost { .. }
        ));
    }
    check_lock_invariants(s, n).await;
}

// ----- node fields, filters and sorting -----------------------------------

fn attrs_sample(parent: Option<Uuid>) -> ferric_core::NodeAttrs {
    let mut a = ferric_core::NodeAttrs {
        resource_class: Some("gold".into()),
        owner: Some("proj-a".into()),
        lessee: Some("proj-b".into()),
        description: Some("Rack 4, Slot 2".into()),
        automated_clean: Some(false),
        protected: true,
        protected_reason: Some("prod".into()),
        retired: true,
        retired_reason: Some("old".into()),
        disable_power_off: true,
        shard: Some("s1".into()),
        parent_node: parent,
        boot_mode: Some("uefi".into()),
        secure_boot: Some(true),
        instance_name: Some("vm-1".into()),
        health: Some("OK".into()),
        chassis_uuid: Some(Uuid::new_v4()),
        traits: vec!["CUSTOM_B".into(), "CUSTOM_A".into(), "CUSTOM_B".into()],
        fault: Some("power failure".into()),
        allocation_uuid: Some(Uuid::new_v4()),
        console_enabled: true,
        inspection_started_at: Some(ferric_core::DbTime(1_700_000_000_000_001)),
        inspection_finished_at: Some(ferric_core::DbTime(1_700_000_000_000_002)),
        ..Default::default()
    };
    a.network_data
        .insert("links".into(), serde_json::json!([{"id": "eth0"}]));
    a.raid_config
        .insert("logical_disks".into(), serde_json::json!([]));
    a.target_raid_config
        .insert("logical_disks".into(), serde_json::json!([{"size_gb": 10}]));
    a
}

/// Every field of a node survives create, read, save and the change feed;
/// traits are kept sorted and unique.
pub async fn node_fields_round_trip(store: Arc<dyn Store>) {
    let s: &dyn Store = &*store;
    let parent = node(s, "parent").await;
    let attrs = attrs_sample(Some(parent));
    let instance = Uuid::new_v4();
    let created = s
        .create_node(NewNode {
            name: Some("child".into()),
            driver: "fake-hardware".into(),
            instance_uuid: Some(instance),
            maintenance: true,
            attrs: attrs.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut expected = attrs.clone();
    expected.traits = vec!["CUSTOM_A".into(), "CUSTOM_B".into()];
    assert_eq!(created.attrs, expected);
    assert_eq!(created.instance_uuid, Some(instance));
    assert!(created.maintenance);
    let read = s.get_node(&created.uuid.into()).await.unwrap();
    assert_eq!(read.attrs, expected);
    let t = s.try_acquire(created.uuid, &claim("c", "x")).await.unwrap();
    let mut n = s.get_node(&created.uuid.into()).await.unwrap();
    n.attrs = ferric_core::NodeAttrs {
        traits: vec!["HW_CPU_X86_VMX".into()],
        ..Default::default()
    };
    let saved = s.save_node(&t, &n).await.unwrap();
    assert_eq!(saved.attrs, n.attrs);
    assert_eq!(
        s.get_node(&created.uuid.into()).await.unwrap().attrs,
        n.attrs
    );
    let feed = s.changes_since(0, 100).await.unwrap();
    let last = feed.last().unwrap().snapshot.clone().unwrap();
    assert_eq!(last.attrs, n.attrs);
    s.release(&t).await.unwrap();
    // Bulk creation stores the same fields.
    let sample = attrs_sample(None);
    let bulk: Vec<NewNode> = (0..3)
        .map(|i| NewNode {
            name: Some(format!("bulk{i}")),
            driver: "fake-hardware".into(),
            attrs: sample.clone(),
            ..Default::default()
        })
        .collect();
    assert_eq!(s.create_nodes(bulk).await.unwrap(), 3);
    let mut want = sample;
    want.traits = vec!["CUSTOM_A".into(), "CUSTOM_B".into()];
    for i in 0..3 {
        let got = s
            .get_node(&NodeIdent::Name(format!("bulk{i}")))
            .await
            .unwrap();
        assert_eq!(got.attrs, want, "bulk{i}");
    }
}

async fn node_with(s: &dyn Store, name: &str, attrs: ferric_core::NodeAttrs) -> Uuid {
    s.create_node(NewNode {
        name: Some(name.to_string()),
        driver: "fake-hardware".to_string(),
        attrs,
        ..Default::default()
    })
    .await
    .unwrap()
    .uuid
}

async fn names(s: &dyn Store, q: NodeQuery) -> Vec<String> {
    let mut names: Vec<String> = s
        .list_nodes(&q)
        .await
        .unwrap()
        .nodes
        .into_iter()
        .filter_map(|n| n.name)
        .collect();
    names.sort();
    names
}

/// Each filter of the node listing selects in the store, and child nodes
/// are left out unless asked for.
pub async fn list_filters_select_in_the_store(store: Arc<dyn Store>) {
    use ferric_core::NodeAttrs as A;
    let s: &dyn Store = &*store;
    let chassis = Uuid::new_v4();
    let a = node_with(
        s,
        "a",
        A {
            resource_class: Some("gold".into()),
            owner: Some("p1".into()),
            shard: Some("s1".into()),
            description: Some("Rack Four".into()),
            chassis_uuid: Some(chassis),
            ..Default::default()
        },
    )
    .await;
    node_with(
        s,
        "b",
        A {
            resource_class: Some("silver".into()),
            lessee: Some("p1".into()),
            shard: Some("s2".into()),
            retired: true,
            fault: Some("clean failure".into()),
            description: Some("rack four".into()),
            ..Default::default()
        },
    )
    .await;
    node_with(s, "c", A::default()).await;
    node_with(
        s,
        "child",
        A {
            parent_node: Some(a),
            resource_class: Some("gold".into()),
            ..Default::default()
        },
    )
    .await;
    let q = |f: fn(&mut NodeQuery)| {
        let mut q = NodeQuery::default();
        f(&mut q);
        q
    };
    assert_eq!(
        names(s, q(|q| q.hide_children = true)).await,
        ["a", "b", "c"]
    );
    // Internal callers (power sync, recovery) see children too.
    assert_eq!(names(s, q(|_| {})).await, ["a", "b", "c", "child"]);
    let mut children = NodeQuery {
        parent_node: Some(a),
        ..Default::default()
    };
    assert_eq!(names(s, children.clone()).await, ["child"]);
    children.resource_class = Some("silver".into());
    assert!(names(s, children).await.is_empty());
    assert_eq!(
        names(s, q(|q| q.resource_class = Some("gold".into()))).await,
        ["a", "child"]
    );
    let q = |f: fn(&mut NodeQuery)| {
        let mut q = NodeQuery {
            hide_children: true,
            ..Default::default()
        };
        f(&mut q);
        q
    };
    assert_eq!(names(s, q(|q| q.owner = Some("p1".into()))).await, ["a"]);
    assert_eq!(names(s, q(|q| q.lessee = Some("p1".into()))).await, ["b"]);
    assert_eq!(
        names(s, q(|q| q.resource_class = Some("gold".into()))).await,
        ["a"]
    );
    assert_eq!(
        names(s, q(|q| q.shards = Some(vec!["s1".into(), "s2".into()]))).await,
        ["a", "b"]
    );
    assert_eq!(
        names(s, q(|q| q.shards = Some(vec![]))).await,
        Vec::<String>::new()
    );
    assert_eq!(names(s, q(|q| q.sharded = Some(false))).await, ["c"]);
    assert_eq!(names(s, q(|q| q.retired = Some(true))).await, ["b"]);
    assert_eq!(names(s, q(|q| q.retired = Some(false))).await, ["a", "c"]);
    assert_eq!(
        names(s, q(|q| q.fault = Some("clean failure".into()))).await,
        ["b"]
    );
    // Case-sensitive, on every engine.
    assert_eq!(
        names(s, q(|q| q.description_contains = Some("ack F".into()))).await,
        ["a"]
    );
    let by_chassis = NodeQuery {
        chassis_uuid: Some(chassis),
        ..Default::default()
    };
    assert_eq!(names(s, by_chassis).await, ["a"]);
    // Associated / instance_uuid.
    let t = s.try_acquire(a, &claim("c", "x")).await.unwrap();
    let mut n = s.get_node(&a.into()).await.unwrap();
    let instance = Uuid::new_v4();
    n.instance_uuid = Some(instance);
    s.save_node(&t, &n).await.unwrap();
    s.release(&t).await.unwrap();
    assert_eq!(names(s, q(|q| q.associated = Some(true))).await, ["a"]);
    assert_eq!(
        names(s, q(|q| q.associated = Some(false))).await,
        ["b", "c"]
    );
    let by_instance = NodeQuery {
        instance_uuid: Some(instance),
        ..Default::default()
    };
    assert_eq!(names(s, by_instance).await, ["a"]);
    // Shards with their node counts, children included.
    assert_eq!(
        s.shard_counts().await.unwrap(),
        vec![(None, 2), (Some("s1".into()), 1), (Some("s2".into()), 1)]
    );
}

/// Paging through a listing sorted by a column with ties and missing
/// values, either way, visits every node once, in the same order on every
/// engine: missing values last ascending, then the UUID.
pub async fn list_sorts_by_any_key_with_a_stable_marker(store: Arc<dyn Store>) {
    use ferric_core::NodeAttrs as A;
    let s: &dyn Store = &*store;
    let classes = [
        Some("b"),
        None,
        Some("a"),
        Some("b"),
        None,
        Some("B"),
        Some("a"),
    ];
    let mut made = Vec::new();
    for (i, class) in classes.iter().enumerate() {
        let uuid = node_with(
            s,
            &format!("n{i}"),
            A {
                resource_class: class.map(str::to_string),
                ..Default::default()
            },
        )
        .await;
        made.push((class.is_none(), class.map(str::to_string), uuid));
    }
    made.sort();
    let ascending: Vec<Uuid> = made.iter().map(|m| m.2).collect();
    for descending in [false, true] {
        for limit in [1, 2, 3, 100] {
            let mut seen = Vec::new();
            let mut marker = None;
            loop {
                let page = s
                    .list_nodes(&NodeQuery {
                        marker,
                        limit: Some(limit),
                        sort: NodeSort {
                            key: "resource_class",
                            descending,
                        },
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                if page.nodes.is_empty() {
                    break;
                }
                marker = page.nodes.last().map(|n| n.uuid);
                seen.extend(page.nodes.iter().map(|n| n.uuid));
                assert!(seen.len() <= made.len(), "a page repeats nodes");
            }
            let mut want = ascending.clone();
            if descending {
                want.reverse();
            }
            assert_eq!(seen, want, "descending {descending}, limit {limit}");
        }
    }
    // Other keys sort too; an unknown one is refused.
    for key in ["name", "id", "maintenance", "updated_at", "protected"] {
        let page = s
            .list_nodes(&NodeQuery {
                sort: NodeSort {
                    key,
                    descending: false,
                },
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(page.nodes.len(), made.len(), "{key}");
    }
    let names: Vec<String> = s
        .list_nodes(&NodeQuery {
            sort: NodeSort {
                key: "name",
                descending: true,
            },
            ..Default::default()
        })
        .await
        .unwrap()
        .nodes
        .into_iter()
        .filter_map(|n| n.name)
        .collect();
    assert_eq!(names, ["n6", "n5", "n4", "n3", "n2", "n1", "n0"]);
    let bad = s
        .list_nodes(&NodeQuery {
            sort: NodeSort {
                key: "properties",
                descending: false,
            },
            ..Default::default()
        })
        .await;
    assert!(matches!(bad, Err(StoreError::Invalid(_))), "{bad:?}");
}

// ----- secondary resources ----------------------------------------------------

fn port(node: Uuid, mac: &str) -> NewResource {
    let mut body = serde_json::Map::new();
    body.insert("pxe_enabled".into(), serde_json::json!(true));
    NewResource {
        node: Some(node),
        key: Some(mac.to_string()),
        body,
        ..Default::default()
    }
}

pub async fn resources_create_get_and_uniqueness(store: Arc<dyn Store>) {
    let s: &dyn Store = &*store;
    let n = node(s, "n").await;
    let before = s.changes_since(0, 1_000).await.unwrap().len();
    let p = s
        .create_resource(
            ResourceKind::Port,
            NewResource {
                name: Some("p0".into()),
                ..port(n, "52:54:00:00:00:01")
            },
        )
        .await
        .unwrap();
    assert_eq!(p.kind, ResourceKind::Port);
    assert_eq!(p.node, Some(n));
    assert_eq!(p.key.as_deref(), Some("52:54:00:00:00:01"));
    assert_eq!(p.body["pxe_enabled"], serde_json::json!(true));
    assert!(p.revision > 0);
    assert!(p.updated_at.is_none());
    assert_eq!(
        s.get_resource(ResourceKind::Port, &p.uuid.into())
            .await
            .unwrap(),
        p
    );
    assert_eq!(
        s.get_resource(ResourceKind::Port, &NodeIdent::Name("p0".into()))
            .await
            .unwrap(),
        p
    );
    // The same UUID is free in another kind's table, not in its own.
    let dup = |e: StoreError| match e {
        StoreError::ResourceDuplicate { kind, field, value } => (kind, field, value),
        other => panic!("expected a duplicate, got {other:?}"),
    };
    assert_eq!(
        dup(s
            .create_resource(ResourceKind::Port, port(n, "52:54:00:00:00:01"))
            .await
            .unwrap_err()),
        (
            ResourceKind::Port,
            "address",
            "52:54:00:00:00:01".to_string()
        )
    );
    assert_eq!(
        dup(s
            .create_resource(
                ResourceKind::Port,
                NewResource {
                    name: Some("p0".into()),
                    ..port(n, "52:54:00:00:00:02")
                }
            )
            .await
            .unwrap_err()),
        (ResourceKind::Port, "name", "p0".to_string())
    );
    assert_eq!(
        dup(s
            .create_resource(
                ResourceKind::Port,
                NewResource {
                    uuid: Some(p.uuid),
                    ..port(n, "52:54:00:00:00:03")
                }
            )
            .await
            .unwrap_err()),
        (ResourceKind::Port, "uuid", p.uuid.to_string())
    );
    // Keys are unique per kind: a portgroup may have a port's address.
    s.create_resource(ResourceKind::Portgroup, port(n, "52:54:00:00:00:01"))
        .await
        .unwrap();
    // The owning node must exist.
    assert!(matches!(
        s.create_resource(
            ResourceKind::Port,
            port(Uuid::new_v4(), "52:54:00:00:00:09")
        )
        .await
        .unwrap_err(),
        StoreError::NodeNotFound(_)
    ));
    // Resources without a node (chassis).
    let c = s
        .create_resource(ResourceKind::Chassis, NewResource::default())
        .await
        .unwrap();
    assert_eq!(c.node, None);
    assert!(matches!(
        s.get_resource(ResourceKind::Port, &c.uuid.into())
            .await
            .unwrap_err(),
        StoreError::ResourceNotFound {
            kind: ResourceKind::Port,
            ..
        }
    ));
    // Refusals wrote nothing: three creates, three feed entries.
    assert_eq!(s.changes_since(0, 1_000).await.unwrap().len(), before + 3);
}

pub async fn resources_go_with_their_node_and_feed_the_changes(store: Arc<dyn Store>) {
    let s: &dyn Store = &*store;
    register(s, "cond-a").await;
    let n = node(s, "n").await;
    let other = node(s, "other").await;
    let since = s
        .changes_since(0, 1_000)
        .await
        .unwrap()
        .last()
        .unwrap()
        .revision;
    let pg = s
        .create_resource(ResourceKind::Portgroup, port(n, "52:54:00:00:01:00"))
        .await
        .unwrap();
    let p = s
        .create_resource(
            ResourceKind::Port,
            NewResource {
                parent: Some(pg.uuid),
                ..port(n, "52:54:00:00:01:01")
            },
        )
        .await
        .unwrap();
    let kept = s
        .create_resource(ResourceKind::Port, port(other, "52:54:00:00:01:02"))
        .await
        .unwrap();
    let mut changed = p.clone();
    changed
        .body
        .insert("extra".into(), serde_json::json!({"a": 1}));
    let changed = s.update_resource(&changed).await.unwrap();
    let t = s.try_acquire(n, &claim("cond-a", "delete")).await.unwrap();
    s.delete_node(&t).await.unwrap();
    assert!(matches!(
        s.get_resource(ResourceKind::Port, &p.uuid.into())
            .await
            .unwrap_err(),
        StoreError::ResourceNotFound { .. }
    ));
    assert!(matches!(
        s.get_resource(ResourceKind::Portgroup, &pg.uuid.into())
            .await
            .unwrap_err(),
        StoreError::ResourceNotFound { .. }
    ));
    assert_eq!(
        s.get_resource(ResourceKind::Port, &kept.uuid.into())
            .await
            .unwrap(),
        kept
    );
    let feed = s.changes_since(since, 1_000).await.unwrap();
    let seen: Vec<(Option<ResourceKind>, Uuid, ChangeKind)> = feed
        .iter()
        .map(|c| (c.resource.as_ref().map(|r| r.kind), c.node, c.kind))
        .collect();
    use ChangeKind::*;
    use ResourceKind::*;
    assert_eq!(
        seen,
        vec![
            (Some(Portgroup), pg.uuid, Created),
            (Some(Port), p.uuid, Created),
            (Some(Port), kept.uuid, Created),
            (Some(Port), p.uuid, Updated),
            (Some(Port), p.uuid, Deleted),
            (Some(Portgroup), pg.uuid, Deleted),
            (None, n, Deleted),
        ]
    );
    // No gaps, and each snapshot is the resource as stored at its revision.
    for w in feed.windows(2) {
        assert_eq!(w[1].revision, w[0].revision + 1);
    }
    assert_eq!(feed[0].revision, since + 1);
    assert_eq!(
        feed[1].resource.as_ref().unwrap().snapshot.as_ref(),
        Some(&p)
    );
    assert_eq!(
        feed[3].resource.as_ref().unwrap().snapshot.as_ref(),
        Some(&changed)
    );
    assert_eq!(feed[3].revision, changed.revision);
    assert!(feed[4].resource.as_ref().unwrap().snapshot.is_none());
    assert!(feed.iter().all(|c| c.snapshot.is_none()));
}

pub async fn resources_list_filters_sort_and_pages(store: Arc<dyn Store>) {
    let s: &dyn Store = &*store;
    let a = node(s, "a").await;
    let b = node(s, "b").await;
    let pg = s
        .create_resource(ResourceKind::Portgroup, port(a, "52:54:00:00:02:ff"))
        .await
        .unwrap();
    let mut made = Vec::new();
    for i in 0..12u32 {
        let owner = if i % 3 == 0 { b } else { a };
        let r = s
            .create_resource(
                ResourceKind::Port,
                NewResource {
                    parent: (i % 4 == 1).then_some(pg.uuid),
                    name: (i % 2 == 0).then(|| format!("port-{:02}", 11 - i)),
                    ..port(owner, &format!("52:54:00:00:02:{:02x}", (i * 7) % 12))
                },
            )
            .await
            .unwrap();
        made.push(r);
    }
    let q = ResourceQuery::all(ResourceKind::Port);
    let all = s.list_resources(&q).await.unwrap();
    let mut by_uuid = made.clone();
    by_uuid.sort_by_key(|r| r.uuid);
    assert_eq!(all, by_uuid);
    // Filters.
    let on_b = s
        .list_resources(&ResourceQuery {
            node: Some(b),
            ..q.clone()
        })
        .await
        .unwrap();
    assert_eq!(on_b.len(), 4);
    assert!(on_b.iter().all(|r| r.node == Some(b)));
    let in_pg = s
        .list_resources(&ResourceQuery {
            parent: Some(pg.uuid),
            ..q.clone()
        })
        .await
        .unwrap();
    assert_eq!(in_pg.len(), 3);
    let one = s
        .list_resources(&ResourceQuery {
            key: made[5].key.clone(),
            ..q.clone()
        })
        .await
        .unwrap();
    assert_eq!(one, vec![made[5].clone()]);
    let groups = s
        .list_resources(&ResourceQuery {
            node_conductor_groups: Some(vec![String::new()]),
            ..q.clone()
        })
        .await
        .unwrap();
    assert_eq!(groups.len(), 12);
    let none = s
        .list_resources(&ResourceQuery {
            node_conductor_groups: Some(vec!["elsewhere".into()]),
            ..q.clone()
        })
        .await
        .unwrap();
    assert!(none.is_empty());
    // Every sort, both directions, walked in pages of 5 with markers, equals
    // the full sorted list.
    for sort in [
        ResourceSort::Uuid,
        ResourceSort::CreatedAt,
        ResourceSort::Key,
        ResourceSort::Name,
    ] {
        for descending in [false, true] {
            let q = ResourceQuery {
                sort,
                descending,
                ..q.clone()
            };
            let full = s.list_resources(&q).await.unwrap();
            let mut expected = made.clone();
            expected.sort_by_key(|x| q.sort_value(x));
            if descending {
                expected.reverse();
            }
            assert_eq!(
                full.iter().map(|r| r.uuid).collect::<Vec<_>>(),
                expected.iter().map(|r| r.uuid).collect::<Vec<_>>(),
                "{sort:?} descending={descending}"
            );
            let mut walked = Vec::new();
            let mut marker = None;
            loop {
                let page = s
                    .list_resources(&ResourceQuery {
                        marker,
                        limit: Some(5),
                        ..q.clone()
                    })
                    .await
                    .unwrap();
                if page.is_empty() {
                    break;
                }
                marker = page.last().map(|r| r.uuid);
                walked.extend(page);
            }
            assert_eq!(walked, full, "{sort:?} descending={descending}");
        }
    }
    // A marker that does not exist.
    assert!(matches!(
        s.list_resources(&ResourceQuery {
            marker: Some(Uuid::new_v4()),
            ..q.clone()
        })
        .await
        .unwrap_err(),
        StoreError::ResourceNotFound { .. }
    ));
}

pub async fn resources_updates_are_conditional(store: Arc<dyn Store>) {
    let s: &dyn Store = &*store;
    let n = node(s, "n").await;
    let p = s
        .create_resource(ResourceKind::Port, port(n, "52:54:00:00:03:01"))
        .await
        .unwrap();
    let q = s
        .create_resource(ResourceKind::Port, port(n, "52:54:00:00:03:02"))
        .await
        .unwrap();
    let mut first = p.clone();
    first.key = Some("52:54:00:00:03:03".into());
    first.name = Some("renamed".into());
    let first = s.update_resource(&first).await.unwrap();
    assert!(first.revision > p.revision);
    assert!(first.updated_at.is_some());
    assert_eq!(first.created_at, p.created_at);
    // A second writer that read the old revision loses, and writes nothing.
    let mut stale = p.clone();
    stale.body.insert("lost".into(), serde_json::json!(true));
    assert!(matches!(
        s.update_resource(&stale).await.unwrap_err(),
        StoreError::ResourceChanged { expected, .. } if expected == p.revision
    ));
    assert_eq!(
        s.get_resource(ResourceKind::Port, &p.uuid.into())
            .await
            .unwrap(),
        first
    );
    // Moving onto a taken key is a duplicate, nothing written.
    let mut clash = q.clone();
    clash.key = first.key.clone();
    assert!(matches!(
        s.update_resource(&clash).await.unwrap_err(),
        StoreError::ResourceDuplicate {
            field: "address",
            ..
        }
    ));
    assert_eq!(
        s.get_resource(ResourceKind::Port, &q.uuid.into())
            .await
            .unwrap(),
        q
    );
    // Conditional delete.
    assert!(matches!(
        s.delete_resource(ResourceKind::Port, p.uuid, Some(p.revision))
            .await
            .unwrap_err(),
        StoreError::ResourceChanged { .. }
    ));
    s.delete_resource(ResourceKind::Port, p.uuid, Some(first.revision))
        .await
        .unwrap();
    assert!(matches!(
        s.delete_resource(ResourceKind::Port, p.uuid, None)
            .await
            .unwrap_err(),
        StoreError::ResourceNotFound { .. }
    ));
    assert!(matches!(
        s.update_resource(&first).await.unwrap_err(),
        StoreError::ResourceNotFound { .. }
    ));
    // The freed key can be used again.
    s.create_resource(ResourceKind::Port, port(n, "52:54:00:00:03:03"))
        .await
        .unwrap();
}

pub async fn resources_racing_creates_one_winner(store: Arc<dyn Store>) {
    let n = node(&*store, "n").await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.create_resource(ResourceKind::Port, port(n, "52:54:00:00:04:01"))
                .await
        }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => won += 1,
            Err(StoreError::ResourceDuplicate {
                field: "address", ..
            }) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(won, 1);
    // Racing conditional updates of one port: exactly one per revision wins.
    let p = store
        .list_resources(&ResourceQuery::all(ResourceKind::Port))
        .await
        .unwrap()
        .remove(0);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let s = store.clone();
        let mut mine = p.clone();
        mine.body.insert("writer".into(), serde_json::json!(i));
        tasks.push(tokio::spawn(async move { s.update_resource(&mine).await }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => won += 1,
            Err(StoreError::ResourceChanged { .. }) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(won, 1);
}

/// A create and a rename racing for one name: one wins, the other is told
/// the name is taken, and neither waits on the other in a cycle (a create
/// that took the revision counter before inserting its row deadlocked with
/// a rename that held the name and waited for the counter; PostgreSQL ended
/// one of them with a deadlock error after `deadlock_timeout`).
pub async fn a_create_and_a_rename_racing_for_one_name_have_one_winner(store: Arc<dyn Store>) {
    register(&*store, "cond-a").await;
    let renamed = node(&*store, "renamed").await;
    for round in 0..40 {
        let name = format!("contested-{round}");
        let token = store
            .try_acquire(renamed, &claim("cond-a", "rename"))
            .await
            .unwrap();
        let mut wanted = store.get_node(&renamed.into()).await.unwrap();
        wanted.name = Some(name.clone());
        let (s1, s2) = (store.clone(), store.clone());
        let n1 = name.clone();
        let create = tokio::spawn(async move {
            s1.create_node(NewNode {
                name: Some(n1),
                driver: "fake-hardware".into(),
                ..Default::default()
            })
            .await
        });
        let t = token.clone();
        let rename = tokio::spawn(async move { s2.save_node(&t, &wanted).await });
        let started = std::time::Instant::now();
        let (created, saved) = (create.await.unwrap(), rename.await.unwrap());
        let took = started.elapsed();
        let won = match (&created, &saved) {
            (Ok(_), Err(StoreError::Duplicate { field: "name", .. })) => "create",
            (Err(StoreError::Duplicate { field: "name", .. }), Ok(_)) => "rename",
            other => panic!("round {round}: expected one winner, got {other:?}"),
        };
        assert!(
            took < Duration::from_millis(900),
            "round {round}: the race ({won} won) took {took:?}"
        );
        // Undo for the next round: the rename's winner keeps its name.
        if let Ok(n) = created {
            let t = store
                .try_acquire(n.uuid, &claim("cond-a", "delete"))
                .await
                .unwrap();
            store.delete_node(&t).await.unwrap();
        }
        store.release(&token).await.unwrap();
    }
}

/// A node's deletion (its resources of every kind, then the node) racing an
/// update of one of its resources: either order, never a wait cycle. The
/// deletion once took a revision after deleting its ports and before its
/// portgroups, so a portgroup update holding its row and waiting for the
/// revision counter closed a cycle with it.
pub async fn a_node_delete_and_an_update_of_its_resource_race_without_a_cycle(
    store: Arc<dyn Store>,
) {
    register(&*store, "cond-a").await;
    for round in 0..30 {
        let n = node(&*store, &format!("doomed-{round}")).await;
        store
            .create_resource(
                ResourceKind::Port,
                port(n, &format!("52:54:00:00:07:{round:02x}")),
            )
            .await
            .unwrap();
        let group = store
            .create_resource(
                ResourceKind::Portgroup,
                NewResource {
                    node: Some(n),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let token = store
            .try_acquire(n, &claim("cond-a", "delete"))
            .await
            .unwrap();
        let mut changed = group.clone();
        changed
            .body
            .insert("round".into(), serde_json::json!(round));
        let (s1, s2) = (store.clone(), store.clone());
        let started = std::time::Instant::now();
        let delete = tokio::spawn(async move { s1.delete_node(&token).await });
        let update = tokio::spawn(async move { s2.update_resource(&changed).await });
        let (deleted, updated) = (delete.await.unwrap(), update.await.unwrap());
        let took = started.elapsed();
        deleted.unwrap_or_else(|e| panic!("round {round}: delete failed: {e:?}"));
        match updated {
            Ok(_) | Err(StoreError::ResourceNotFound { .. }) => {}
            Err(e) => panic!("round {round}: update failed: {e:?}"),
        }
        assert!(
            took < Duration::from_millis(900),
            "round {round}: the race took {took:?}"
        );
    }
}

/// Every kind has its table (migration 0004, 0007): a name, a key and a
/// node per kind round-trip, names and keys are unique per kind only, and
/// deleting the node deletes its resources of every kind, each with a
/// `deleted` feed entry.
pub async fn resources_of_every_kind_are_stored_and_go_with_their_node(store: Arc<dyn Store>) {
    let s: &dyn Store = &*store;
    register(s, "cond-a").await;
    let n = node(s, "n").await;
    let mut made = Vec::new();
    for kind in ResourceKind::ALL {
        let r = s
            .create_resource(
                kind,
                NewResource {
                    name: Some("CUSTOM_SAME".into()),
                    node: Some(n),
                    key: Some("same-key".into()),
                    body: serde_json::json!({"kind": kind.as_str()})
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(r.kind, kind);
        assert_eq!(
            s.get_resource(kind, &NodeIdent::Name("CUSTOM_SAME".into()))
                .await
                .unwrap(),
            r
        );
        let dup = s
            .create_resource(
                kind,
                NewResource {
                    name: Some("CUSTOM_SAME".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert!(
            matches!(dup, StoreError::ResourceDuplicate { field: "name", .. }),
            "{kind}: {dup:?}"
        );
        made.push(r);
    }
    let since = s
        .changes_since(0, 10_000)
        .await
        .unwrap()
        .last()
        .unwrap()
        .revision;
    let t = s.try_acquire(n, &claim("cond-a", "delete")).await.unwrap();
    s.delete_node(&t).await.unwrap();
    for r in &made {
        assert!(matches!(
            s.get_resource(r.kind, &r.uuid.into()).await.unwrap_err(),
            StoreError::ResourceNotFound { .. }
        ));
    }
    let deleted: Vec<ResourceKind> = s
        .changes_since(since, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|c| c.resource.map(|r| r.kind))
        .collect();
    for kind in ResourceKind::ALL {
        assert!(deleted.contains(&kind), "no deleted entry for {kind}");
    }
}

fn allocating(traits: &[&str]) -> NewResource {
    let mut body = serde_json::Map::new();
    body.insert("state".into(), serde_json::json!("allocating"));
    body.insert("traits".into(), serde_json::json!(traits));
    body.insert("resource_class".into(), serde_json::json!("gold"));
    NewResource {
        body,
        ..Default::default()
    }
}

/// An allocation and its node change in one transaction fenced by the
/// node's lock: bound only under the current token, never onto a node that
/// has an instance, deleted with the node cleared; a node's allocation goes
/// with the node, each step in the feed.
pub async fn allocations_bind_and_delete_with_the_node_fenced(store: Arc<dyn Store>) {
    let s: &dyn Store = &*store;
    register(s, "cond-a").await;
    let n = node(s, "n").await;
    let m = node(s, "m").await;
    let kind = ResourceKind::Allocation;
    let a = s
        .create_resource(kind, allocating(&["CUSTOM_X"]))
        .await
        .unwrap();
    let b = s.create_resource(kind, allocating(&[])).await.unwrap();

    // A stale token binds nothing.
    let stale = s
        .try_acquire(n, &claim("cond-a", "allocating"))
        .await
        .unwrap();
    s.release(&stale).await.unwrap();
    let e = s.bind_allocation(&stale, a.uuid).await.unwrap_err();
    assert!(matches!(e, StoreError::LockLost { .. }), "{e:?}");
    assert_eq!(s.get_node(&n.into()).await.unwrap().instance_uuid, None);
    assert_eq!(s.get_resource(kind, &a.uuid.into()).await.unwrap(), a);

    let t = s
        .try_acquire(n, &claim("cond-a", "allocating"))
        .await
        .unwrap();
    let (bound_node, bound) = s.bind_allocation(&t, a.uuid).await.unwrap();
    assert_eq!(bound_node.instance_uuid, Some(a.uuid));
    assert_eq!(bound_node.attrs.allocation_uuid, Some(a.uuid));
    assert_eq!(
        bound_node.instance_info["traits"],
        serde_json::json!(["CUSTOM_X"])
    );
    assert_eq!(bound.node, Some(n));
    assert_eq!(bound.body["state"], "active");
    assert_eq!(s.get_node(&n.into()).await.unwrap(), bound_node);
    assert_eq!(s.get_resource(kind, &a.uuid.into()).await.unwrap(), bound);
    // The node has an instance now: refused, nothing changes.
    let e = s.bind_allocation(&t, b.uuid).await.unwrap_err();
    assert!(
        matches!(e, StoreError::NodeAssociated { node, .. } if node == n),
        "{e:?}"
    );
    assert_eq!(s.get_resource(kind, &b.uuid.into()).await.unwrap(), b);
    // An allocation is bound once.
    let e = s.bind_allocation(&t, a.uuid).await.unwrap_err();
    assert!(matches!(e, StoreError::ResourceChanged { .. }), "{e:?}");
    // Deleting a bound allocation needs its node's lock.
    let e = s.delete_allocation(None, a.uuid).await.unwrap_err();
    assert!(matches!(e, StoreError::ResourceChanged { .. }), "{e:?}");
    s.delete_allocation(Some(&t), a.uuid).await.unwrap();
    let cleared = s.get_node(&n.into()).await.unwrap();
    assert_eq!(cleared.instance_uuid, None);
    assert_eq!(cleared.attrs.allocation_uuid, None);
    assert!(matches!(
        s.get_resource(kind, &a.uuid.into()).await,
        Err(StoreError::ResourceNotFound { .. })
    ));
    s.release(&t).await.unwrap();

    // Another node's instance is the allocation's UUID: Duplicate.
    let tm = s.try_acquire(m, &claim("cond-a", "deploy")).await.unwrap();
    let mut other = s.get_node(&m.into()).await.unwrap();
    let c = s.create_resource(kind, allocating(&[])).await.unwrap();
    other.instance_uuid = Some(c.uuid);
    s.save_node(&tm, &other).await.unwrap();
    s.release(&tm).await.unwrap();
    let t = s
        .try_acquire(n, &claim("cond-a", "allocating"))
        .await
        .unwrap();
    let e = s.bind_allocation(&t, c.uuid).await.unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::Duplicate {
                field: "instance_uuid",
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(s.get_node(&n.into()).await.unwrap().instance_uuid, None);

    // A node's allocation goes with the node, in the feed.
    s.bind_allocation(&t, b.uuid).await.unwrap();
    let since = s
        .changes_since(0, 10_000)
        .await
        .unwrap()
        .last()
        .unwrap()
        .revision;
    s.delete_node(&t).await.unwrap();
    assert!(matches!(
        s.get_resource(kind, &b.uuid.into()).await,
        Err(StoreError::ResourceNotFound { .. })
    ));
    let feed = s.changes_since(since, 100).await.unwrap();
    assert!(feed.iter().any(|c| c.node == b.uuid
        && c.kind == ChangeKind::Deleted
        && c.resource.as_ref().is_some_and(|r| r.kind == kind)));
}

/// The allocation's candidate filters and the body filters are answered by
/// the store.
pub async fn allocation_candidates_and_body_filters_select_in_the_store(store: Arc<dyn Store>) {
    let s: &dyn Store = &*store;
    register(s, "cond-a").await;
    let owned = node_with(
        s,
        "owned",
        ferric_core::NodeAttrs {
            owner: Some("p1".into()),
            ..Default::default()
        },
    )
    .await;
    let leased = node_with(
        s,
        "leased",
        ferric_core::NodeAttrs {
            lessee: Some("p1".into()),
            ..Default::default()
        },
    )
    .await;
    let other = node(s, "other").await;
    let t = s
        .try_acquire(other, &claim("cond-a", "power"))
        .await
        .unwrap();
    let mut n = s.get_node(&other.into()).await.unwrap();
    n.power_state = Some(ferric_core::PowerState::Off);
    s.save_node(&t, &n).await.unwrap();
    s.release(&t).await.unwrap();
    let q = |f: fn(&mut NodeQuery)| {
        let mut q = NodeQuery::default();
        f(&mut q);
        q
    };
    let got = |q: NodeQuery| async move {
        let mut v: Vec<String> = s
            .list_nodes(&q)
            .await
            .unwrap()
            .nodes
            .into_iter()
            .filter_map(|n| n.name)
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        got(q(|q| q.project = Some("p1".into()))).await,
        ["leased", "owned"]
    );
    assert_eq!(got(q(|q| q.with_power_state = Some(true))).await, ["other"]);
    assert_eq!(
        got(q(|q| q.with_power_state = Some(false))).await,
        ["leased", "owned"]
    );
    let by_uuid = NodeQuery {
        uuid_in: Some(vec![owned, other]),
        ..Default::default()
    };
    assert_eq!(got(by_uuid).await, ["other", "owned"]);
    let none = NodeQuery {
        uuid_in: Some(Vec::new()),
        ..Default::default()
    };
    assert!(got(none).await.is_empty());
    let _ = leased;

    let kind = ResourceKind::Allocation;
    let a = s.create_resource(kind, allocating(&[])).await.unwrap();
    let mut done = s.create_resource(kind, allocating(&[])).await.unwrap();
    done.body.insert("state".into(), serde_json::json!("error"));
    s.update_resource(&done).await.unwrap();
    let list = |body_eq: Vec<(&'static str, String)>, has_node: Option<bool>| async move {
        s.list_resources(&ResourceQuery {
            body_eq,
            has_node,
            ..ResourceQuery::all(kind)
        })
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.uuid)
        .collect::<Vec<_>>()
    };
    assert_eq!(
        list(vec![("state", "allocating".into())], None).await,
        [a.uuid]
    );
    assert_eq!(
        list(vec![("state", "error".into())], Some(false)).await,
        [done.uuid]
    );
    assert!(list(vec![("state", "error".into())], Some(true))
        .await
        .is_empty());
    assert_eq!(
        list(
            vec![("resource_class", "gold".into()), ("state", "error".into())],
            None
        )
        .await,
        [done.uuid]
    );
}

/// One round of concurrent saves with different fates (see
/// [`concurrent_saves_each_keep_their_own_outcome`]): prepared with
/// [`MixedSaves::prepare`], started with [`MixedSaves::spawn`], judged with
/// [`MixedSaves::check`]. Public so that a store that commits concurrent
/// saves together can also force them into one batch between `spawn` and
/// `check` (the SQL store's batcher tests do).
pub struct MixedSaves {
    head: i64,
    /// (token, node to save, release, expected fate).
    saves: Vec<(LockToken, ferric_core::Node, bool, Fate)>,
}

/// What a save of [`MixedSaves`] must come to.
#[derive(Debug, Clone, PartialEq)]
enum Fate {
    /// Saved; still locked by its token.
    Kept,
    /// Saved and released; nobody waited.
    Released,
    /// Saved and handed to this waiter (its claim and ticket).
    Granted(Claim, i64),
    /// Refused: its token is stale (the node's lock is held by this one).
    Lost(Option<LockToken>),
    /// Refused: the name is taken; nothing written, the lock still held.
    Duplicate,
}

impl MixedSaves {
    /// How many saves [`MixedSaves::spawn`] starts.
    pub fn len(&self) -> usize {
        self.saves.len()
    }

    /// Whether there are none (never: a round has at least six).
    pub fn is_empty(&self) -> bool {
        self.saves.is_empty()
    }

    /// Nodes named after `round`, locked by "cond-a" (registered with
    /// "cond-b" by the caller): two saves that keep their lock, three that
    /// release it, one that hands it to a waiter of "cond-b", one with a
    /// stale token, and with `duplicate` one whose name is taken.
    pub async fn prepare(s: &dyn Store, round: usize, duplicate: bool) -> MixedSaves {
        // The waiter's conductor must be alive when the lock is handed on.
        s.heartbeat("cond-b").await.unwrap();
        let mut fates = vec![
            Fate::Kept,
            Fate::Kept,
            Fate::Released,
            Fate::Released,
            Fate::Released,
        ];
        fates.push(Fate::Granted(claim("cond-b", "wait"), 0));
        fates.push(Fate::Lost(None));
        if duplicate {
            fates.push(Fate::Duplicate);
            node(s, &format!("r{round}-taken")).await;
        }
        let mut saves = Vec::new();
        for (i, mut fate) in fates.into_iter().enumerate() {
            let n = node(s, &format!("r{round}-n{i}")).await;
            let token = s.try_acquire(n, &claim("cond-a", "edit")).await.unwrap();
            match &mut fate {
                Fate::Granted(c, ticket) => {
                    *ticket = match s
                        .enqueue(n, c, Some(Duration::from_secs(60)), 32)
                        .await
                        .unwrap()
                    {
                        Enqueued::Queued { ticket, .. } => ticket,
                        other => panic!("expected to queue, got {other:?}"),
                    }
                }
                Fate::Lost(current) => {
                    s.release(&token).await.unwrap();
                    let newer = s.try_acquire(n, &claim("cond-a", "edit")).await.unwrap();
                    // `token` is the stale one now.
                    *current = Some(newer);
                }
                _ => {}
            }
            let mut saved = s.get_node(&n.into()).await.unwrap();
            saved
                .extra
                .insert("round".into(), serde_json::json!(format!("{round}-{i}")));
            if fate == Fate::Duplicate {
                saved.name = Some(format!("r{round}-taken"));
            }
            let release = !matches!(fate, Fate::Kept);
            saves.push((token, saved, release, fate));
        }
        let head = s.list_nodes(&NodeQuery::default()).await.unwrap().revision;
        MixedSaves { head, saves }
    }

    /// Every save at once, each in its own task.
    pub fn spawn(
        &self,
        store: Arc<dyn Store>,
    ) -> Vec<tokio::task::JoinHandle<StoreResult<(ferric_core::Node, Release)>>> {
        self.saves
            .iter()
            .map(|(token, n, release, _)| {
                let (store, token, n, release) =
                    (store.clone(), token.clone(), n.clone(), *release);
                tokio::spawn(async move {
                    match release {
                        true => store.save_node_and_release(&token, &n).await,
                        false => store
                            .save_node(&token, &n)
                            .await
                            .map(|n| (n, Release::default())),
                    }
                })
            })
            .collect()
    }

    /// Each save came to its own fate; the saved ones have distinct
    /// revisions right after the head seen before, each with its own
    /// change-feed entry carrying the node as saved (gapless, nothing else);
    /// the refused ones changed nothing.
    pub async fn check(
        self,
        s: &dyn Store,
        started: Vec<tokio::task::JoinHandle<StoreResult<(ferric_core::Node, Release)>>>,
    ) {
        let mut revisions = Vec::new();
        let mut saved_nodes = Vec::new();
        for ((token, sent, _, fate), handle) in self.saves.iter().zip(started) {
            let outcome = handle.await.unwrap();
            let now = s.get_node(&token.node.into()).await.unwrap();
            let holder = now
                .reservation
                .clone()
                .map(|r| (r.holder, r.task_id, r.epoch));
            match (fate, outcome) {
                (Fate::Lost(Some(current)), Err(e)) => {
                    assert!(
                        matches!(&e, StoreError::LockLost { current: Some(h), .. } if h == "cond-a"),
                        "{e:?}"
                    );
                    assert_eq!(
                        holder,
                        Some(("cond-a".into(), current.task_id, current.epoch))
                    );
                    assert_eq!(now.revision, sent.revision, "a refused save writes nothing");
                }
                (Fate::Duplicate, Err(e)) => {
                    assert!(matches!(&e, StoreError::Duplicate { .. }), "{e:?}");
                    assert_eq!(holder, Some(("cond-a".into(), token.task_id, token.epoch)));
                    assert_eq!(now.revision, sent.revision, "a refused save writes nothing");
                    assert_ne!(now.name, sent.name);
                }
                (fate, Ok((node, release))) => {
                    assert_eq!(node.revision, now.revision, "{fate:?}");
                    assert_eq!(node.extra.get("round"), sent.extra.get("round"));
                    assert_eq!(now.extra, node.extra);
                    // The node as saved: under the lock it was saved with,
                    // whatever came of the lock in the same commit.
                    assert_eq!(node.reservation, sent.reservation, "{fate:?}");
                    match fate {
                        Fate::Kept => {
                            assert_eq!(release, Release::default());
                            assert_eq!(holder, Some(("cond-a".into(), token.task_id, token.epoch)));
                        }
                        Fate::Released => {
                            assert_eq!(release, Release::default());
                            assert_eq!(holder, None);
                            let view = s.lock_view(token.node).await.unwrap();
                            assert_eq!(
                                (view.task_id, view.purpose, view.held_ms),
                                (None, None, None),
                                "every lock field cleared"
                            );
                        }
                        Fate::Granted(c, ticket) => {
                            let g = release.granted_to.expect("handed to the waiter");
                            assert_eq!(
                                (g.conductor.as_str(), g.task_id, g.ticket, g.epoch),
                                ("cond-b", c.task_id, *ticket, token.epoch + 1)
                            );
                            if let Some(granted) = &g.node {
                                assert_eq!(**granted, now, "the grantee gets the row as stored");
                            }
                            assert_eq!(holder, Some(("cond-b".into(), c.task_id, g.epoch)));
                        }
                        other => panic!("{other:?} must not succeed"),
                    }
                    revisions.push(node.revision);
                    saved_nodes.push(node);
                }
                (fate, Err(e)) => panic!("{fate:?} failed: {e:?}"),
            }
            check_lock_invariants(s, token.node).await;
        }
        revisions.sort_unstable();
        let expected: Vec<i64> = (1..=revisions.len() as i64)
            .map(|i| self.head + i)
            .collect();
        assert_eq!(
            revisions, expected,
            "distinct revisions right after the head"
        );
        let feed = s.changes_since(self.head, 1_000).await.unwrap();
        assert_eq!(
            feed.iter().map(|c| c.revision).collect::<Vec<_>>(),
            expected,
            "one change per save, gapless"
        );
        for change in feed {
            let node = saved_nodes
                .iter()
                .find(|n| n.revision == change.revision)
                .unwrap();
            assert_eq!(change.kind, ChangeKind::Updated);
            assert_eq!(change.snapshot.as_ref(), Some(node), "the node as saved");
        }
    }
}

/// Saves of several tasks at once, some refused, some releasing, one
/// handing its lock to a waiter: each comes to its own outcome, and the
/// change feed carries exactly the saved ones, gapless (issue 18: the SQL
/// stores commit a process's concurrent saves together).
pub async fn concurrent_saves_each_keep_their_own_outcome(store: Arc<dyn Store>) {
    let s: &dyn Store = &*store;
    register(s, "cond-a").await;
    register(s, "cond-b").await;
    for round in 0..12 {
        let saves = MixedSaves::prepare(s, round, round % 3 == 2).await;
        let started = saves.spawn(store.clone());
        saves.check(s, started).await;
    }
}

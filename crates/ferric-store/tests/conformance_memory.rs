//! The shared store suite on the in-memory store (the simulator's model),
//! with the wall clock as its database clock.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferric_store::testing::TEST_HEARTBEAT_TIMEOUT;
use ferric_store::{conformance, for_each_conformance_test, MemoryStore, Store};
use std::sync::Arc;

macro_rules! instantiate {
    ($($name:ident),* $(,)?) => {
        mod memory {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let store = Arc::new(MemoryStore::new(TEST_HEARTBEAT_TIMEOUT));
                    conformance::$name(store as Arc<dyn Store>).await;
                }
            )*
        }
    };
}

for_each_conformance_test!(instantiate);

/// The memory store's own hooks: injected faults, the injected clock, planted bugs.
mod hooks {
    use ferric_core::{DbTime, NewNode, PowerState};
    use ferric_store::memory::{Bug, Clock, LockEvent, INJECTED_FAULT};
    use ferric_store::testing::register;
    use ferric_store::{Claim, MemoryStore, PowerObservation, Store, StoreError};
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use uuid::Uuid;

    fn claim(holder: &str) -> Claim {
        Claim {
            holder: holder.into(),
            task_id: Uuid::new_v4(),
            purpose: "test".into(),
        }
    }

    async fn node(s: &MemoryStore) -> Uuid {
        let new = NewNode {
            driver: "fake-hardware".into(),
            ..Default::default()
        };
        s.create_node(new).await.unwrap().uuid
    }

    #[tokio::test]
    async fn injected_faults_fail_before_applying_then_clear() {
        let s = MemoryStore::new(Duration::from_secs(60));
        let n = node(&s).await;
        s.fail_next(2);
        for _ in 0..2 {
            let e = s.try_acquire(n, &claim("a")).await.unwrap_err();
            assert!(
                matches!(&e, StoreError::Invalid(m) if m == INJECTED_FAULT),
                "{e:?}"
            );
        }
        assert_eq!(s.get_node(&n.into()).await.unwrap().lock_epoch, 0);
        assert_eq!(s.try_acquire(n, &claim("a")).await.unwrap().epoch, 1);
    }

    #[tokio::test]
    async fn liveness_follows_the_injected_clock() {
        let t = Arc::new(AtomicI64::new(1_000_000));
        let clock: Clock = {
            let t = t.clone();
            Arc::new(move || DbTime(t.load(Ordering::SeqCst)))
        };
        let s = MemoryStore::with_clock(Duration::from_secs(10), clock);
        register(&s, "a").await;
        assert!(s.list_conductors().await.unwrap()[0].alive);
        t.fetch_add(10_000_001, Ordering::SeqCst);
        let row = &s.list_conductors().await.unwrap()[0];
        assert!(!row.alive);
        assert_eq!(row.heartbeat_age_ms, 10_000);
    }

    #[tokio::test]
    async fn operator_overrides_are_audited() {
        let s = MemoryStore::new(Duration::from_secs(60));
        let n = node(&s).await;
        let t = s.try_acquire(n, &claim("a")).await.unwrap();
        let entry = ferric_store::AuditEntry {
            action: "force-release".into(),
            actor: "alice".into(),
            reason: "stuck".into(),
        };
        s.record_audit(&t, &entry).await.unwrap();
        let log = s.list_audit(10).await.unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!(
            (log[0].previous_holder.as_deref(), log[0].previous_epoch),
            (Some("a"), t.epoch)
        );
        assert_eq!(log[0].previous_purpose.as_deref(), Some("test"));
    }

    #[tokio::test]
    async fn planted_bugs_break_the_protocol_on_purpose() {
        let s = MemoryStore::new(Duration::from_secs(60));
        let n = node(&s).await;
        let t1 = s.try_acquire(n, &claim("a")).await.unwrap();
        s.release(&t1).await.unwrap();
        let t2 = s.try_acquire(n, &claim("b")).await.unwrap();
        let cur = s.get_node(&n.into()).await.unwrap();
        s.plant_bug(Some(Bug::UnfencedWrite));
        s.save_node(&t1, &cur).await.unwrap();
        s.plant_bug(Some(Bug::ReleaseWithoutHolderCheck));
        s.release(&t1).await.unwrap();
        assert!(s.get_node(&n.into()).await.unwrap().reservation.is_none());
        s.plant_bug(None);
        assert!(matches!(
            s.release(&t2).await.unwrap_err(),
            StoreError::NodeNotLocked { .. }
        ));
    }

    /// Power states recorded without the lock are reported to the observer
    /// (with the reading's epoch and revision and the new revision), stale
    /// readings are neither recorded nor reported, and the planted bug
    /// records them anyway.
    #[tokio::test]
    async fn recorded_power_states_are_observed_and_the_planted_bug_unfences_them() {
        let s = MemoryStore::new(Duration::from_secs(60));
        let events = Arc::new(Mutex::new(Vec::<LockEvent>::new()));
        {
            let events = events.clone();
            s.set_observer(Some(Arc::new(move |e| {
                events.lock().unwrap().push(e.clone())
            })));
        }
        let last = || events.lock().unwrap().last().cloned();
        let count = || events.lock().unwrap().len();
        let n = node(&s).await;
        let read = |n: &ferric_core::Node| PowerObservation {
            node: n.uuid,
            lock_epoch: n.lock_epoch,
            revision: n.revision,
            power_state: PowerState::On,
        };
        let listed = s.get_node(&n.into()).await.unwrap();
        let recorded = s.record_power_states(&[read(&listed)]).await.unwrap();
        assert_eq!(recorded.len(), 1);
        assert!(matches!(
            last(),
            Some(LockEvent::Observed { node, lock_epoch: 0, revision, recorded: r, .. })
                if node == n && revision == listed.revision && r == recorded[0].revision
        ));
        // Written since: refused, not reported.
        let before = count();
        assert!(s
            .record_power_states(&[read(&listed)])
            .await
            .unwrap()
            .is_empty());
        assert_eq!(count(), before);
        // Held now: refused; a fenced write reports its revision.
        let t = s.try_acquire(n, &claim("a")).await.unwrap();
        let held = s.get_node(&n.into()).await.unwrap();
        assert!(s
            .record_power_states(&[read(&held)])
            .await
            .unwrap()
            .is_empty());
        let saved = s.save_node(&t, &held).await.unwrap();
        assert!(matches!(
            last(),
            Some(LockEvent::Written { deleted: false, revision, .. }) if revision == saved.revision
        ));
        // The planted bug records a stale reading of a held node.
        s.plant_bug(Some(Bug::UnfencedObservation));
        let recorded = s.record_power_states(&[read(&listed)]).await.unwrap();
        assert_eq!(recorded.len(), 1);
        assert!(matches!(
            last(),
            Some(LockEvent::Observed { lock_epoch: 0, .. })
        ));
        assert!(recorded[0].reservation.is_some());
    }
}

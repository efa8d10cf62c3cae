//! In-process wakeups for lock waiters.
//!
//! A waiter registers its task id before it enqueues; whoever hands it the
//! lock (a release in this process) wakes it. `tokio::sync::Notify` stores a
//! permit when nobody is waiting yet, so a wakeup that arrives between the
//! enqueue and the first wait is not lost. Wakeups from other processes
//! arrive through [`crate::wake`]; every waiter also re-checks the store at
//! least every `node_locked_retry_interval`, so any lost wakeup costs at most
//! one interval.

use ferric_core::Node;
use ferric_store::LockToken;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use uuid::Uuid;

/// One waiting task's wakeup, and what a release in this process handed it.
#[derive(Debug, Default)]
pub struct Slot {
    pub notify: Notify,
    handed: Mutex<Option<(LockToken, Node)>>,
}

/// Task id → its wakeup.
#[derive(Debug, Default)]
pub struct WaiterRegistry {
    waiters: Mutex<HashMap<Uuid, Arc<Slot>>>,
    /// Signalled whenever a waiter registers (pollers sleep while nobody waits).
    registered: Notify,
}

/// Removes the registration when dropped.
pub struct Registration<'a> {
    registry: &'a WaiterRegistry,
    task_id: Uuid,
    slot: Arc<Slot>,
}

impl Registration<'_> {
    /// The wakeup to wait on.
    pub fn notify(&self) -> &Notify {
        &self.slot.notify
    }

    /// The token and node row a release in this process handed this task
    /// (it holds the lock: the grant committed before it was handed).
    pub fn take_handed(&self) -> Option<(LockToken, Node)> {
        match self.slot.handed.lock() {
            Ok(mut h) => h.take(),
            Err(p) => p.into_inner().take(),
        }
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.registry.with(|m| {
            m.remove(&self.task_id);
        });
    }
}

impl WaiterRegistry {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<Uuid, Arc<Slot>>) -> R) -> R {
        match self.waiters.lock() {
            Ok(mut m) => f(&mut m),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// Register `task_id`; the registration lives as long as the returned guard.
    pub fn register(&self, task_id: Uuid) -> Registration<'_> {
        let slot = Arc::new(Slot::default());
        self.with(|m| m.insert(task_id, slot.clone()));
        self.registered.notify_one();
        Registration {
            registry: self,
            task_id,
            slot,
        }
    }

    /// Hand `task_id` the lock a release in this process granted it: its
    /// token and the node row as granted, then wake it. Returns whether it
    /// waits here.
    pub fn hand(&self, task_id: Uuid, token: LockToken, node: Node) -> bool {
        match self.with(|m| m.get(&task_id).cloned()) {
            Some(slot) => {
                match slot.handed.lock() {
                    Ok(mut h) => *h = Some((token, node)),
                    Err(p) => *p.into_inner() = Some((token, node)),
                }
                slot.notify.notify_one();
                true
            }
            None => false,
        }
    }

    /// Wake `task_id` if it waits here. Returns whether it was found.
    pub fn wake(&self, task_id: Uuid) -> bool {
        match self.with(|m| m.get(&task_id).cloned()) {
            Some(s) => {
                s.notify.notify_one();
                true
            }
            None => false,
        }
    }

    /// Wake every waiter (a foreign commit was seen; each re-checks).
    pub fn wake_all(&self) {
        let all: Vec<Arc<Slot>> = self.with(|m| m.values().cloned().collect());
        for s in all {
            s.notify.notify_one();
        }
    }

    /// Resolves once a waiter registers (immediately if one registered since
    /// the last call).
    pub async fn registered(&self) {
        self.registered.notified().await
    }

    /// How many tasks wait here now.
    pub fn len(&self) -> usize {
        self.with(|m| m.len())
    }

    /// Whether nobody waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferric_core::DbTime;

    #[tokio::test]
    async fn a_handed_lock_wakes_the_waiter_and_is_taken_once() {
        let reg = WaiterRegistry::default();
        let task = Uuid::new_v4();
        let r = reg.register(task);
        let node: Node = serde_json::from_value(serde_json::json!({
            "uuid": "8a4b5c1e-2f3d-4e5f-9a8b-7c6d5e4f3a2b",
            "name": "n1", "driver": "fake-hardware", "driver_info": {}, "properties": {},
            "extra": {}, "instance_info": {}, "instance_uuid": null, "interfaces": {},
            "provision_state": "available", "target_provision_state": null,
            "power_state": null, "target_power_state": null, "maintenance": false,
            "maintenance_reason": null, "last_error": null, "conductor_group": "",
            "conductor_affinity": null, "reservation": null, "lock_epoch": 0,
            "lock_waiters": 0, "revision": 0, "created_at": 0, "updated_at": null,
            "provision_updated_at": null
        }))
        .unwrap();
        let token = LockToken {
            node: node.uuid,
            holder: "c".into(),
            task_id: task,
            epoch: 7,
            purpose: "p".into(),
            acquired_at: DbTime(1),
        };
        assert!(reg.hand(task, token.clone(), node.clone()));
        // The permit is stored: the waiter wakes even if it waits later.
        tokio::time::timeout(std::time::Duration::from_secs(1), r.notify().notified())
            .await
            .expect("handing wakes the waiter");
        let (t, n) = r.take_handed().expect("the token and row were handed");
        assert_eq!((t, n.uuid), (token, node.uuid));
        assert!(r.take_handed().is_none(), "taken once");
        // Nobody waits under another task id.
        assert!(!reg.hand(Uuid::new_v4(), t_for(&node), node.clone()));
        drop(r);
        assert!(reg.is_empty());
    }

    fn t_for(node: &Node) -> LockToken {
        LockToken {
            node: node.uuid,
            holder: "c".into(),
            task_id: Uuid::new_v4(),
            epoch: 1,
            purpose: "p".into(),
            acquired_at: DbTime(1),
        }
    }
}

//! In-process wakeups for lock waiters.
//!
//! A waiter registers its task id before it enqueues; whoever hands it the
//! lock (a release in this process) wakes it. `tokio::sync::Notify` stores a
//! permit when nobody is waiting yet, so a wakeup that arrives between the
//! enqueue and the first wait is not lost. Wakeups from other processes
//! arrive through [`crate::wake`]; every waiter also re-checks the store at
//! least every `node_locked_retry_interval`, so any lost wakeup costs at most
//! one interval.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use uuid::Uuid;

/// Task id → its wakeup.
#[derive(Debug, Default)]
pub struct WaiterRegistry {
    waiters: Mutex<HashMap<Uuid, Arc<Notify>>>,
    /// Signalled whenever a waiter registers (pollers sleep while nobody waits).
    registered: Notify,
}

/// Removes the registration when dropped.
pub struct Registration<'a> {
    registry: &'a WaiterRegistry,
    task_id: Uuid,
    pub notify: Arc<Notify>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.registry.with(|m| {
            m.remove(&self.task_id);
        });
    }
}

impl WaiterRegistry {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<Uuid, Arc<Notify>>) -> R) -> R {
        match self.waiters.lock() {
            Ok(mut m) => f(&mut m),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// Register `task_id`; the registration lives as long as the returned guard.
    pub fn register(&self, task_id: Uuid) -> Registration<'_> {
        let notify = Arc::new(Notify::new());
        self.with(|m| m.insert(task_id, notify.clone()));
        self.registered.notify_one();
        Registration {
            registry: self,
            task_id,
            notify,
        }
    }

    /// Wake `task_id` if it waits here. Returns whether it was found.
    pub fn wake(&self, task_id: Uuid) -> bool {
        match self.with(|m| m.get(&task_id).cloned()) {
            Some(n) => {
                n.notify_one();
                true
            }
            None => false,
        }
    }

    /// Wake every waiter (a foreign commit was seen; each re-checks).
    pub fn wake_all(&self) {
        let all: Vec<Arc<Notify>> = self.with(|m| m.values().cloned().collect());
        for n in all {
            n.notify_one();
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

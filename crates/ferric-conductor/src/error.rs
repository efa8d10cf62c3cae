//! Task errors: what a TaskManager caller can see.

use ferric_core::DomainError;
use ferric_store::StoreError;

/// A failed task operation.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// Store failure, including NodeNotFound, NodeLocked, NodeNotLocked and LockLost.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The state machine or the model refused.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The hardware driver failed.
    #[error("driver error: {0}")]
    Driver(#[from] crate::drivers::DriverError),
    /// No background worker slot is free (Ironic's NoFreeConductorWorker → 503).
    #[error("no free conductor workers available")]
    NoFreeConductorWorker,
    /// The task was released already.
    #[error("task for node {0} was already released")]
    Released(uuid::Uuid),
    /// The conductor is shutting down and stopped waiting.
    #[error("conductor is shutting down")]
    ShuttingDown,
    /// This conductor could not write its heartbeat for too long: it takes
    /// no lock and writes nothing under one until it can (crate::liveness).
    #[error("conductor cannot reach the database to heartbeat; refusing to act until it can")]
    Fenced,
}

impl TaskError {
    /// The lock is held by someone else (→ 409 with Retry-After).
    pub fn is_node_locked(&self) -> bool {
        matches!(self, TaskError::Store(StoreError::NodeLocked { .. }))
    }

    /// A fenced write found the lock gone: the task must stop.
    pub fn is_lock_lost(&self) -> bool {
        matches!(
            self,
            TaskError::Store(StoreError::LockLost { .. } | StoreError::NodeNotLocked { .. })
        )
    }

    /// The node does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, TaskError::Store(StoreError::NodeNotFound(_)))
    }
}

//! Store errors. Lock errors carry who holds the lock, since when and why,
//! because that is what an operator needs to read in a 409.

use uuid::Uuid;

/// A failed store operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No node with that UUID or name.
    #[error("node {0} could not be found")]
    NodeNotFound(String),
    /// The node is locked by someone else (or too many wait for it).
    #[error("{}", locked_message(.node, .holder, .purpose, *.held_ms, *.waiters, *.queue_full))]
    NodeLocked {
        node: Uuid,
        /// Current holder's conductor, `None` if only waiters block the grant.
        holder: Option<String>,
        purpose: Option<String>,
        /// How long the current holder has held it (database clock).
        held_ms: i64,
        waiters: i64,
        /// True when refused because `max_waiters_per_node` already wait.
        queue_full: bool,
    },
    /// Release of a lock the caller does not hold. Nothing was changed.
    #[error("node {node} found not to be locked by {holder} (epoch {epoch}) on release{}", current.as_ref().map(|h| format!("; it is held by {h}")).unwrap_or_default())]
    NodeNotLocked {
        node: Uuid,
        holder: String,
        epoch: i64,
        current: Option<String>,
    },
    /// A fenced write found the lock no longer held under the caller's token:
    /// it was taken over or forcibly released. Nothing was written.
    #[error("lock on node {node} (epoch {epoch}) was lost{}", current.as_ref().map(|h| format!("; now held by {h}")).unwrap_or_default())]
    LockLost {
        node: Uuid,
        epoch: i64,
        current: Option<String>,
    },
    /// A unique field already taken.
    #[error("a node with {field} \"{value}\" already exists")]
    Duplicate { field: &'static str, value: String },
    /// No secondary resource of that kind with that UUID or name.
    #[error("{kind} {ident} could not be found")]
    ResourceNotFound {
        kind: crate::ResourceKind,
        ident: String,
    },
    /// A secondary resource's unique field (`uuid`, `name` or its kind's
    /// key, e.g. `address`) already taken. Nothing was written.
    #[error("a {kind} with {field} \"{value}\" already exists")]
    ResourceDuplicate {
        kind: crate::ResourceKind,
        field: &'static str,
        value: String,
    },
    /// A conditional resource write found it changed (or deleted) since the
    /// revision it was read at. Nothing was written.
    #[error("{kind} {uuid} changed since revision {expected}")]
    ResourceChanged {
        kind: crate::ResourceKind,
        uuid: Uuid,
        expected: i64,
    },
    /// The node already has an instance (Ironic's `NodeAssociated`):
    /// an allocation cannot take it. Nothing was written.
    #[error("Node {node} is associated with instance {instance}.")]
    NodeAssociated { node: Uuid, instance: String },
    /// A conductor that is not registered.
    #[error("conductor {0} could not be found")]
    ConductorNotFound(String),
    /// Input the store refuses.
    #[error("{0}")]
    Invalid(String),
    /// A row the store cannot decode (corruption or a foreign writer).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// `SqlStore::open_existing` found no database, or one without every
    /// migration applied (the text says which). Nothing was created or changed.
    #[error("the database {0}")]
    NotReady(String),
    /// Migrations failed.
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

fn locked_message(
    node: &Uuid,
    holder: &Option<String>,
    purpose: &Option<String>,
    held_ms: i64,
    waiters: i64,
    queue_full: bool,
) -> String {
    let mut m = match holder {
        Some(h) => format!(
            "Node {node} is locked by host {h} (purpose: {}) for {:.1}s",
            purpose.as_deref().unwrap_or("unspecified"),
            held_ms as f64 / 1000.0
        ),
        None => format!("Node {node} is reserved for queued waiters"),
    };
    if waiters > 0 {
        m.push_str(&format!(", {waiters} waiting"));
    }
    if queue_full {
        m.push_str(" (the wait queue is full)");
    }
    m.push_str("; please retry after the current operation is completed.");
    m
}

impl StoreError {
    /// Whether retrying later may succeed (lock contention, not a bad request).
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::NodeLocked { .. })
    }

    /// The database cannot be reached or is not accepting work right now
    /// (connection failures, an exhausted or closed pool, a server shutting
    /// down or starting, SQLite busy past its timeout): the request may
    /// succeed later, nothing was written.
    pub fn is_unavailable(&self) -> bool {
        let StoreError::Database(e) = self else {
            return false;
        };
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(db) => {
                let code = db.code().unwrap_or_default();
                // PostgreSQL: class 08 (connection exception), 57P01-57P03
                // (admin/crash shutdown, cannot connect now), 53300 (too many
                // connections). SQLite: 5 (BUSY), 6 (LOCKED).
                // Also the session bounds (PgSession): 55P03 (lock_timeout),
                // 57014 (statement_timeout), 25P03 (idle in transaction).
                code.starts_with("08")
                    || matches!(
                        code.as_ref(),
                        "57P01"
                            | "57P02"
                            | "57P03"
                            | "53300"
                            | "5"
                            | "6"
                            | "55P03"
                            | "57014"
                            | "25P03"
                    )
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_locked_names_holder_purpose_and_duration() {
        let e = StoreError::NodeLocked {
            node: Uuid::nil(),
            holder: Some("cond-a".into()),
            purpose: Some("deploy".into()),
            held_ms: 12_000,
            waiters: 0,
            queue_full: false,
        };
        assert_eq!(
            e.to_string(),
            "Node 00000000-0000-0000-0000-000000000000 is locked by host cond-a (purpose: deploy) for 12.0s; please retry after the current operation is completed."
        );
    }
}

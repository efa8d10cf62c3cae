//! ferric-store: persistence for ferric behind one [`Store`] trait.
//!
//! Two backends share one implementation ([`sql::SqlStore`]) over sqlx's `Any`
//! driver: SQLite (default: a local file in WAL mode, every write transaction
//! `BEGIN IMMEDIATE`, writes of one process queued through a fair async mutex)
//! and PostgreSQL (READ COMMITTED). Queries are built at run time, so nothing
//! needs a database to compile; migrations are embedded.
//!
//! The lock primitives of SPEC §4 live here as conditional statements:
//!
//! * grant: `reservation IS NULL AND lock_waiters = 0` → holder, `lock_epoch + 1`;
//!   the waiter count sits on the node row, so under READ COMMITTED a grant
//!   and an enqueue conflict on the same row and the re-check sees both;
//! * fenced write: every write under a lock matches `(reservation, lock_task,
//!   lock_epoch)`; zero rows is [`StoreError::LockLost`];
//! * release: matches the token; a release that does not match is
//!   [`StoreError::NodeNotLocked`] and changes nothing;
//! * grant-on-release: a release with queued waiters hands the lock, in the
//!   same transaction, to the first live waiter (FIFO by ticket), so the node
//!   is never observed unlocked while someone waits;
//! * handoff: the holder names the next holder in one conditional UPDATE.
//!
//! Invariant: at every commit, `reservation IS NULL` implies `lock_waiters = 0`.
//! Invariant: `lock_epoch` never decreases and grows by one per grant.

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod error;
pub mod memory;
pub mod resource;
mod sql;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod testing;
pub mod types;
pub mod wake;

pub use error::StoreError;
pub use memory::MemoryStore;
pub use resource::{
    NewResource, Resource, ResourceChange, ResourceKind, ResourceQuery, ResourceSort,
};
pub use sql::{PgSession, RawAccess, SaveBatchStats, SqlStore, StoreOptions};
pub use types::*;
pub use wake::{WakeEvent, WakeSubscription};

use async_trait::async_trait;
use ferric_core::{DbTime, NewNode, Node};
use std::time::Duration;
use uuid::Uuid;

/// Result of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// Everything ferric persists. One implementation per engine family; every
/// implementation must pass [`conformance`].
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which engine this is.
    fn backend(&self) -> Backend;

    /// The database clock. Liveness and deadlines are judged by it alone.
    async fn now(&self) -> StoreResult<DbTime>;

    // ----- nodes -------------------------------------------------------------

    /// Create a node; `provision_state` defaults to `enroll`.
    async fn create_node(&self, node: NewNode) -> StoreResult<Node>;

    /// Create many nodes (bulk enrolment, benchmarks). Each node gets its own
    /// revision and `created` change-feed entry, exactly as with
    /// [`Store::create_node`]; backends may batch the statements. Returns how
    /// many were created. The default creates them one by one (not atomic).
    async fn create_nodes(&self, nodes: Vec<NewNode>) -> StoreResult<usize> {
        let n = nodes.len();
        for node in nodes {
            self.create_node(node).await?;
        }
        Ok(n)
    }

    /// A node by UUID or by name.
    async fn get_node(&self, ident: &NodeIdent) -> StoreResult<Node>;

    /// A page of nodes ordered by UUID, with the global revision the page is
    /// consistent with.
    async fn list_nodes(&self, query: &NodeQuery) -> StoreResult<NodePage>;

    /// Write every mutable field of `node` under the lock `token` (fenced).
    /// Returns the node as stored, with its new revision.
    /// `provision_updated_at` is the store's: the database's now when the
    /// provision state changes or when `node` has none (a touch: the
    /// provision is still progressing), else unchanged.
    async fn save_node(&self, token: &LockToken, node: &Node) -> StoreResult<Node>;

    /// [`Store::save_node`] and then [`Store::release`] of the same lock,
    /// as one commit where the engine can (the SQL stores: one transaction,
    /// so a task that ends with a write pays one commit, not two). Fenced as
    /// `save_node`: if the write is refused nothing is written and nothing
    /// released. Any error but a fenced refusal may leave the lock held (the
    /// caller releases it). The default runs the two calls one after the
    /// other.
    async fn save_node_and_release(
        &self,
        token: &LockToken,
        node: &Node,
    ) -> StoreResult<(Node, Release)> {
        let saved = self.save_node(token, node).await?;
        let release = self.release(token).await?;
        Ok((saved, release))
    }

    /// Record power states read by power sync, each only if its node is
    /// unlocked now and was neither locked nor written since it was listed
    /// (same `lock_epoch` and `revision`). `lock_epoch` grows with every
    /// grant, so such a write is the same as taking the lock, writing
    /// `power_state` and releasing, with no one in between; any other node
    /// is left alone for the next round. Each recorded node gets its own
    /// revision and `updated` change-feed entry, as with
    /// [`Store::save_node`]. Returns the recorded nodes as stored. One
    /// transaction: the first sync round over 10,000 nodes is a few commits
    /// instead of 30,000.
    async fn record_power_states(&self, observed: &[PowerObservation]) -> StoreResult<Vec<Node>>;

    /// Delete a node under the lock `token` (fenced). Its waiters go with it.
    async fn delete_node(&self, token: &LockToken) -> StoreResult<()>;

    /// Changes after `since`, oldest first, at most `limit`.
    async fn changes_since(&self, since: i64, limit: u32) -> StoreResult<Vec<NodeChange>>;

    // ----- secondary resources (ports, portgroups, chassis, ...) --------------

    /// Create a resource of `kind`. Its owning node must exist
    /// (`NodeNotFound`); a taken UUID, name or key is `ResourceDuplicate`.
    /// Takes a revision and writes a `created` change-feed entry.
    async fn create_resource(&self, kind: ResourceKind, new: NewResource) -> StoreResult<Resource>;

    /// A resource by UUID or name.
    async fn get_resource(&self, kind: ResourceKind, ident: &NodeIdent) -> StoreResult<Resource>;

    /// A page of resources, filtered and ordered as `query` says. A marker
    /// that does not exist is `ResourceNotFound`.
    async fn list_resources(&self, query: &ResourceQuery) -> StoreResult<Vec<Resource>>;

    /// Write `resource` (name, node, parent, key, body) on the condition
    /// that it is still at `resource.revision` (`ResourceChanged` otherwise:
    /// no lost updates). Returns it as stored, with its new revision and an
    /// `updated` change-feed entry.
    async fn update_resource(&self, resource: &Resource) -> StoreResult<Resource>;

    /// Delete a resource, on the condition that it is still at `revision`
    /// when given. Writes a `deleted` change-feed entry.
    async fn delete_resource(
        &self,
        kind: ResourceKind,
        uuid: Uuid,
        revision: Option<i64>,
    ) -> StoreResult<()>;

    // ----- allocations ---------------------------------------------------------
    //
    // An allocation (a resource of kind `Allocation`) and the node it gets
    // change together: these write both in one transaction fenced by the
    // node's lock token. Stores without allocations refuse (defaults).

    /// Give the locked node `token.node` to allocation `allocation`, which
    /// must still be in state `allocating` with no node (`ResourceChanged`
    /// otherwise; `ResourceNotFound` when gone). In one transaction: the
    /// node's `instance_uuid` and `allocation_uuid` become the allocation's
    /// UUID and its `instance_info.traits` the allocation's traits; the
    /// allocation's node becomes the node, its state `active` and its
    /// `last_error` null. Refused with `NodeAssociated` when the node has an
    /// instance or allocation already (other than this one: a backfill of a
    /// node whose `instance_uuid` is the allocation's UUID is allowed), and
    /// `Duplicate { field: "instance_uuid" }` when another node's instance is
    /// the allocation's UUID. Both get revisions and change-feed entries.
    async fn bind_allocation(
        &self,
        token: &LockToken,
        allocation: Uuid,
    ) -> StoreResult<(Node, Resource)> {
        let _ = (token, allocation);
        Err(StoreError::Invalid(
            "this store keeps no allocations".into(),
        ))
    }

    /// Delete allocation `allocation` and, in the same transaction, clear
    /// `instance_uuid` and `allocation_uuid` of the node that holds it.
    /// With `token`, the allocation must be on `token.node` and the write is
    /// fenced by it; without, the allocation must have no node. Otherwise
    /// `ResourceChanged` (it got a node meanwhile: lock it and retry).
    async fn delete_allocation(
        &self,
        token: Option<&LockToken>,
        allocation: Uuid,
    ) -> StoreResult<()> {
        let _ = (token, allocation);
        Err(StoreError::Invalid(
            "this store keeps no allocations".into(),
        ))
    }

    // ----- the lock (SPEC §4) -------------------------------------------------

    /// One attempt to take the exclusive lock without queueing: granted only
    /// when the node is unlocked and nobody waits for it.
    async fn try_acquire(&self, node: Uuid, claim: &Claim) -> StoreResult<LockToken>;

    /// Like [`Store::try_acquire`], also returning the node as of the grant
    /// (one statement: the TaskManager's fast path).
    async fn try_acquire_node(&self, node: Uuid, claim: &Claim) -> StoreResult<(LockToken, Node)>;

    /// Wakeups from other processes for waiters of `conductor` (see [`wake`]).
    async fn subscribe_wakeups(&self, conductor: &str) -> StoreResult<WakeSubscription>;

    /// Queue for the lock: granted at once when free and nobody waits,
    /// otherwise a waiter row with the next ticket. `wait` is how long the
    /// waiter intends to wait (`None`: patient). Refused with `NodeLocked`
    /// when `max_waiters` already wait.
    async fn enqueue(
        &self,
        node: Uuid,
        claim: &Claim,
        wait: Option<Duration>,
        max_waiters: u32,
    ) -> StoreResult<Enqueued>;

    /// Where a queued waiter stands.
    async fn poll_waiter(&self, node: Uuid, ticket: i64, task_id: Uuid) -> StoreResult<WaitStatus>;

    /// Like [`Store::poll_waiter`], also returning the node when granted (the
    /// waiter's next read). Backends override this to save a round trip.
    async fn poll_waiter_node(
        &self,
        node: Uuid,
        ticket: i64,
        task_id: Uuid,
    ) -> StoreResult<(WaitStatus, Option<Node>)> {
        let status = self.poll_waiter(node, ticket, task_id).await?;
        let loaded = match status {
            WaitStatus::Granted(_) => Some(self.get_node(&node.into()).await?),
            _ => None,
        };
        Ok((status, loaded))
    }

    /// Leave the queue. Returns the token when the lock had already been
    /// granted to this waiter (the caller then holds it and must release it).
    async fn cancel_wait(
        &self,
        node: Uuid,
        ticket: i64,
        task_id: Uuid,
    ) -> StoreResult<Option<LockToken>>;

    /// Release the lock held under `token`; hands it to the first live waiter
    /// if there is one.
    async fn release(&self, token: &LockToken) -> StoreResult<Release>;

    /// Transfer the lock to `to` in one conditional statement (epoch + 1).
    async fn handoff(&self, token: &LockToken, to: &Claim) -> StoreResult<LockToken>;

    /// Clear a lock whose holder is known dead or is being overridden, on the
    /// condition that it is still held by `expected` (holder, task, epoch);
    /// hands it to the next live waiter like a release. Records `audit` when
    /// given.
    async fn break_lock(
        &self,
        node: Uuid,
        expected: &LockToken,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<Release>;

    /// Record an operator override of the lock `previous` in the audit trail.
    /// Backends without an audit trail refuse.
    async fn record_audit(&self, previous: &LockToken, entry: &AuditEntry) -> StoreResult<()> {
        let _ = (previous, entry);
        Err(StoreError::Invalid(
            "this store keeps no audit trail".into(),
        ))
    }

    /// The lock and queue of one node.
    async fn lock_view(&self, node: Uuid) -> StoreResult<LockView>;

    /// Every held lock or non-empty queue.
    async fn list_locks(&self) -> StoreResult<Vec<LockView>>;

    /// The audit trail, newest last.
    async fn list_audit(&self, limit: u32) -> StoreResult<Vec<AuditRecord>>;

    // ----- conductors ---------------------------------------------------------

    /// Register (or re-register) a conductor as online; heartbeat = now.
    async fn register_conductor(&self, conductor: &ConductorInfo) -> StoreResult<()>;

    /// Refresh a conductor's heartbeat. `NotFound` if it was never registered.
    async fn heartbeat(&self, hostname: &str) -> StoreResult<()>;

    /// Mark a conductor offline (graceful stop).
    async fn unregister_conductor(&self, hostname: &str) -> StoreResult<()>;

    /// All conductors with liveness judged against `heartbeat_timeout` on the
    /// database clock.
    async fn list_conductors(&self) -> StoreResult<Vec<ConductorRow>>;

    // ----- node fields (shards) ------------------------------------------------

    /// How many nodes each shard has (`None`: nodes without a shard), most
    /// nodes first, ties by name.
    async fn shard_counts(&self) -> StoreResult<Vec<(Option<String>, i64)>>;
    // ----- node data (history, BIOS, firmware, inventory) -------------------
    //
    // Rows keyed by node that go with the node. Writes are fenced by the
    // node's lock like node writes (`token.node` names the node); reads are
    // not. Stores that keep none refuse writes and read nothing (defaults).

    /// Record a history event for the locked node (Ironic's
    /// `node_history_record`); the oldest entries beyond
    /// [`NODE_HISTORY_MAX_ENTRIES`] go. A node write that sets a new
    /// non-empty `last_error` records it as an `ERROR` event by itself, in
    /// the same transaction.
    async fn add_node_history(
        &self,
        token: &LockToken,
        event: &NewHistoryEvent,
    ) -> StoreResult<HistoryEvent> {
        let _ = (token, event);
        Err(StoreError::Invalid(
            "this store keeps no node history".into(),
        ))
    }

    /// A page of a node's history, oldest first unless `descending`.
    /// `NodeNotFound` for an unknown node; an unknown marker is `Invalid`.
    async fn list_node_history(
        &self,
        node: Uuid,
        query: &HistoryQuery,
    ) -> StoreResult<Vec<HistoryEvent>> {
        let _ = (node, query);
        Ok(Vec::new())
    }

    /// One history event of a node.
    async fn get_node_history(&self, node: Uuid, event: Uuid) -> StoreResult<Option<HistoryEvent>> {
        let _ = (node, event);
        Ok(None)
    }

    /// Replace the locked node's cached BIOS settings with `settings`
    /// (settings kept keep their `created_at`).
    async fn set_bios_settings(
        &self,
        token: &LockToken,
        settings: &[BiosSetting],
    ) -> StoreResult<()> {
        let _ = (token, settings);
        Err(StoreError::Invalid(
            "this store keeps no BIOS settings".into(),
        ))
    }

    /// A node's cached BIOS settings, by name.
    async fn list_bios_settings(&self, node: Uuid) -> StoreResult<Vec<BiosSetting>> {
        let _ = node;
        Ok(Vec::new())
    }

    /// Replace the locked node's cached firmware components.
    async fn set_firmware_components(
        &self,
        token: &LockToken,
        components: &[FirmwareComponent],
    ) -> StoreResult<()> {
        let _ = (token, components);
        Err(StoreError::Invalid(
            "this store keeps no firmware components".into(),
        ))
    }

    /// A node's cached firmware components, by component name.
    async fn list_firmware_components(&self, node: Uuid) -> StoreResult<Vec<FirmwareComponent>> {
        let _ = node;
        Ok(Vec::new())
    }

    /// Store (replace) the locked node's inspection data.
    async fn set_node_inventory(
        &self,
        token: &LockToken,
        inventory: &serde_json::Value,
        plugin_data: &serde_json::Value,
    ) -> StoreResult<()> {
        let _ = (token, inventory, plugin_data);
        Err(StoreError::Invalid("this store keeps no inventory".into()))
    }

    /// A node's inspection data, if any was stored.
    async fn get_node_inventory(&self, node: Uuid) -> StoreResult<Option<NodeInventory>> {
        let _ = node;
        Ok(None)
    }
}

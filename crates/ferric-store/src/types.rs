//! Values that cross the store boundary.

use ferric_core::{DbTime, Node};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Which engine a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// How a node is named in a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeIdent {
    Uuid(Uuid),
    Name(String),
}

impl NodeIdent {
    /// A UUID if the text parses as one, a name otherwise.
    pub fn parse(s: &str) -> Self {
        match Uuid::parse_str(s) {
            Ok(u) => NodeIdent::Uuid(u),
            Err(_) => NodeIdent::Name(s.to_string()),
        }
    }
}

impl std::fmt::Display for NodeIdent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeIdent::Uuid(u) => write!(f, "{u}"),
            NodeIdent::Name(n) => f.write_str(n),
        }
    }
}

impl From<Uuid> for NodeIdent {
    fn from(u: Uuid) -> Self {
        NodeIdent::Uuid(u)
    }
}

/// Who asks for a lock: a task of a conductor, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// Conductor hostname; becomes the `reservation` value.
    pub holder: String,
    /// Unique per task.
    pub task_id: Uuid,
    pub purpose: String,
}

/// The fencing token of a held lock: (holder, task, epoch). Every write under
/// the lock is conditional on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockToken {
    pub node: Uuid,
    pub holder: String,
    pub task_id: Uuid,
    pub epoch: i64,
    pub purpose: String,
    pub acquired_at: DbTime,
}

impl LockToken {
    /// The token of the lock `node` is held under, if it is held.
    pub fn held(node: &Node) -> Option<LockToken> {
        node.reservation.as_ref().map(|r| LockToken {
            node: node.uuid,
            holder: r.holder.clone(),
            task_id: r.task_id,
            epoch: r.epoch,
            purpose: r.purpose.clone(),
            acquired_at: r.acquired_at,
        })
    }
}

/// Outcome of [`crate::Store::enqueue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    /// The lock was free and nobody waited: held now.
    Granted(LockToken),
    /// Queued with this ticket.
    Queued { ticket: i64, position: i64 },
}

/// Outcome of [`crate::Store::poll_waiter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitStatus {
    /// A release handed the lock to this waiter.
    Granted(LockToken),
    /// Still queued.
    Waiting,
    /// The waiter row is gone without a grant (judged dead or expired by a
    /// releaser, or its node was deleted).
    Gone,
}

/// Outcome of a release: who, if anyone, got the lock next.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Release {
    /// The waiter the lock was handed to: (conductor, task id, new epoch).
    pub granted_to: Option<Grantee>,
    /// Dead or expired waiters removed on the way.
    pub skipped_waiters: u32,
}

/// A waiter that received the lock on release.
#[derive(Debug, Clone, PartialEq)]
pub struct Grantee {
    pub conductor: String,
    pub task_id: Uuid,
    pub ticket: i64,
    pub epoch: i64,
    /// The node row as granted, when the store read it in the release
    /// itself (SQL stores): a grantee in the releasing process is handed
    /// it and needs no read of its own.
    pub node: Option<Box<ferric_core::Node>>,
}

/// One queued waiter, for listings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WaiterView {
    pub ticket: i64,
    pub conductor: String,
    pub task_id: Uuid,
    pub purpose: String,
    pub enqueued_at: DbTime,
    /// `None` for a patient waiter.
    pub deadline: Option<DbTime>,
    pub live: bool,
}

/// A node's lock as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LockView {
    pub node: Uuid,
    pub node_name: Option<String>,
    pub provision_state: String,
    pub holder: Option<String>,
    pub task_id: Option<Uuid>,
    pub holder_online: Option<bool>,
    pub purpose: Option<String>,
    pub epoch: i64,
    pub held_ms: Option<i64>,
    pub waiters: Vec<WaiterView>,
    pub now: DbTime,
}

impl LockView {
    /// The token of the current holder, if any.
    pub fn token(&self) -> Option<LockToken> {
        Some(LockToken {
            node: self.node,
            holder: self.holder.clone()?,
            task_id: self.task_id?,
            epoch: self.epoch,
            purpose: self.purpose.clone().unwrap_or_default(),
            acquired_at: DbTime(self.now.0 - self.held_ms.unwrap_or(0) * 1000),
        })
    }
}

/// An operator override to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub action: String,
    pub actor: String,
    pub reason: String,
}

/// A recorded override.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    pub id: i64,
    pub node: Uuid,
    pub action: String,
    pub actor: String,
    pub reason: String,
    pub previous_holder: Option<String>,
    pub previous_epoch: i64,
    pub previous_purpose: Option<String>,
    pub at: DbTime,
}

/// A conductor registering itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConductorInfo {
    pub hostname: String,
    pub conductor_group: String,
    pub drivers: Vec<String>,
}

/// A conductor as stored, with liveness judged on the database clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConductorRow {
    pub hostname: String,
    pub conductor_group: String,
    pub drivers: Vec<String>,
    /// Registered and not gracefully stopped.
    pub online: bool,
    /// `online` and heartbeat younger than the heartbeat timeout.
    pub alive: bool,
    pub started_at: DbTime,
    pub heartbeat_at: DbTime,
    pub heartbeat_age_ms: i64,
}

/// A power state read from a node's BMC by power sync, to be recorded
/// without taking the lock (see [`crate::Store::record_power_states`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PowerObservation {
    pub node: Uuid,
    /// The node's `lock_epoch` when it was listed, before the BMC was read.
    pub lock_epoch: i64,
    /// The node's `revision` when it was listed.
    pub revision: i64,
    /// What the BMC said.
    pub power_state: ferric_core::PowerState,
}

/// Node listing parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeQuery {
    /// Return nodes with a UUID greater than this.
    pub marker: Option<Uuid>,
    /// Page size; `None` = all.
    pub limit: Option<u32>,
    pub provision_state: Option<String>,
    pub maintenance: Option<bool>,
    pub driver: Option<String>,
    pub conductor_group: Option<String>,
    /// Only nodes whose lock is held (`Some(true)`) or free (`Some(false)`).
    pub reserved: Option<bool>,
    /// Only nodes with (`Some(true)`) or without an instance.
    pub associated: Option<bool>,
    pub resource_class: Option<String>,
    pub owner: Option<String>,
    pub lessee: Option<String>,
    /// Only nodes in one of these shards.
    pub shards: Option<Vec<String>>,
    /// Only nodes with (`Some(true)`) or without a shard.
    pub sharded: Option<bool>,
    pub fault: Option<String>,
    pub retired: Option<bool>,
    pub instance_uuid: Option<Uuid>,
    pub instance_name: Option<String>,
    pub chassis_uuid: Option<Uuid>,
    /// Only the children of this node.
    pub parent_node: Option<Uuid>,
    /// Leave out child nodes (those with a parent): the API's listing does
    /// unless asked for children (Ironic's rule). Internal callers (power
    /// sync, recovery) see every node.
    pub hide_children: bool,
    /// A substring of the description.
    pub description_contains: Option<String>,
    /// Only these nodes (the allocation's candidates).
    pub uuid_in: Option<Vec<Uuid>>,
    /// Only nodes whose power state is known (`Some(true)`) or unknown.
    pub with_power_state: Option<bool>,
    /// Only nodes owned or leased by this project (Ironic's `project`).
    pub project: Option<String>,
    /// The order; `marker` is the last node of the previous page in it.
    pub sort: NodeSort,
}

/// The order of a node listing: one column (see [`NODE_SORT_KEYS`]), then
/// the UUID. Missing values (NULL) sort after every value in ascending
/// order, before them in descending order, on every engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSort {
    /// One of [`NODE_SORT_KEYS`].
    pub key: &'static str,
    pub descending: bool,
}

impl Default for NodeSort {
    fn default() -> Self {
        NodeSort {
            key: "uuid",
            descending: false,
        }
    }
}

/// How a sort column's values compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKind {
    Text,
    Int,
    Bool,
}

/// The node columns a listing can be ordered by ("id", Ironic's default,
/// is creation order here). The JSON columns are not sortable, as in Ironic.
pub const NODE_SORT_KEYS: &[(&str, SortKind)] = &[
    ("uuid", SortKind::Text),
    ("id", SortKind::Int),
    ("name", SortKind::Text),
    ("driver", SortKind::Text),
    ("instance_uuid", SortKind::Text),
    ("provision_state", SortKind::Text),
    ("target_provision_state", SortKind::Text),
    ("power_state", SortKind::Text),
    ("target_power_state", SortKind::Text),
    ("maintenance", SortKind::Bool),
    ("maintenance_reason", SortKind::Text),
    ("last_error", SortKind::Text),
    ("conductor_group", SortKind::Text),
    ("reservation", SortKind::Text),
    ("created_at", SortKind::Int),
    ("updated_at", SortKind::Int),
    ("provision_updated_at", SortKind::Int),
    ("resource_class", SortKind::Text),
    ("owner", SortKind::Text),
    ("lessee", SortKind::Text),
    ("description", SortKind::Text),
    ("automated_clean", SortKind::Bool),
    ("protected", SortKind::Bool),
    ("protected_reason", SortKind::Text),
    ("retired", SortKind::Bool),
    ("retired_reason", SortKind::Text),
    ("disable_power_off", SortKind::Bool),
    ("shard", SortKind::Text),
    ("parent_node", SortKind::Text),
    ("boot_mode", SortKind::Text),
    ("secure_boot", SortKind::Bool),
    ("instance_name", SortKind::Text),
    ("health", SortKind::Text),
    ("fault", SortKind::Text),
    ("console_enabled", SortKind::Bool),
    ("inspection_started_at", SortKind::Int),
    ("inspection_finished_at", SortKind::Int),
];

/// The sort key named `key`, if nodes can be ordered by it.
pub fn node_sort_key(key: &str) -> Option<(&'static str, SortKind)> {
    NODE_SORT_KEYS.iter().find(|(k, _)| *k == key).copied()
}

/// A node's value in sort column `key` (`None` for NULL), for stores that
/// order in memory; the same order as the SQL stores'.
pub fn node_sort_value(n: &Node, key: &str) -> Option<SortValue> {
    use SortValue::*;
    let text = |s: &Option<String>| s.clone().map(Text);
    let a = &n.attrs;
    match key {
        "uuid" => Some(Text(n.uuid.to_string())),
        "id" | "created_at" => Some(Int(n.created_at.0)),
        "name" => text(&n.name),
        "driver" => Some(Text(n.driver.clone())),
        "instance_uuid" => n.instance_uuid.map(|u| Text(u.to_string())),
        "provision_state" => Some(Text(n.provision_state.as_str().to_string())),
        "target_provision_state" => n.target_provision_state.map(|s| Text(s.as_str().into())),
        "power_state" => n.power_state.map(|s| Text(s.as_str().into())),
        "target_power_state" => n.target_power_state.map(|s| Text(s.as_str().into())),
        "maintenance" => Some(Bool(n.maintenance)),
        "maintenance_reason" => text(&n.maintenance_reason),
        "last_error" => text(&n.last_error),
        "conductor_group" => Some(Text(n.conductor_group.clone())),
        "reservation" => n.reservation.as_ref().map(|r| Text(r.holder.clone())),
        "updated_at" => n.updated_at.map(|t| Int(t.0)),
        "provision_updated_at" => n.provision_updated_at.map(|t| Int(t.0)),
        "resource_class" => text(&a.resource_class),
        "owner" => text(&a.owner),
        "lessee" => text(&a.lessee),
        "description" => text(&a.description),
        "automated_clean" => a.automated_clean.map(Bool),
        "protected" => Some(Bool(a.protected)),
        "protected_reason" => text(&a.protected_reason),
        "retired" => Some(Bool(a.retired)),
        "retired_reason" => text(&a.retired_reason),
        "disable_power_off" => Some(Bool(a.disable_power_off)),
        "shard" => text(&a.shard),
        "parent_node" => a.parent_node.map(|u| Text(u.to_string())),
        "boot_mode" => text(&a.boot_mode),
        "secure_boot" => a.secure_boot.map(Bool),
        "instance_name" => text(&a.instance_name),
        "health" => text(&a.health),
        "fault" => text(&a.fault),
        "console_enabled" => Some(Bool(a.console_enabled)),
        "inspection_started_at" => a.inspection_started_at.map(|t| Int(t.0)),
        "inspection_finished_at" => a.inspection_finished_at.map(|t| Int(t.0)),
        _ => None,
    }
}

/// A value of a sort column.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum SortValue {
    Bool(bool),
    Int(i64),
    Text(String),
}

/// One page of nodes and the revision it is consistent with.
#[derive(Debug, Clone, PartialEq)]
pub struct NodePage {
    pub nodes: Vec<Node>,
    pub revision: i64,
}

/// What kind of change a feed entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Created,
    Updated,
    Deleted,
}

impl ChangeKind {
    /// The stored (and serialized) name.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Created => "created",
            ChangeKind::Updated => "updated",
            ChangeKind::Deleted => "deleted",
        }
    }
}

/// One committed node change (SPEC §8.5).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeChange {
    pub revision: i64,
    pub node: Uuid,
    pub kind: ChangeKind,
    pub at: DbTime,
    /// The node as of this revision; `None` for deletions and for
    /// resource entries.
    pub snapshot: Option<Node>,
    /// `None`: the entry is about the node `node`. `Some`: about a secondary
    /// resource, whose UUID is then in `node` (the feed's `uuid`).
    pub resource: Option<crate::resource::ResourceChange>,
}

// ----- node data (history, BIOS, firmware, inventory) ------------------------

/// Ironic's `[conductor]node_history_max_entries` default: the newest entries
/// kept per node; older ones go as new ones are recorded.
pub const NODE_HISTORY_MAX_ENTRIES: usize = 300;

/// One node history event (Ironic's `NodeHistory` object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEvent {
    pub uuid: Uuid,
    pub node: Uuid,
    pub created_at: DbTime,
    pub conductor: Option<String>,
    pub event_type: Option<String>,
    /// `ERROR` or `INFO`.
    pub severity: Option<String>,
    pub event: String,
    pub user: Option<String>,
    pub project: Option<String>,
    /// The node's provision state when the event was recorded.
    pub state: Option<String>,
    pub target_provision_state: Option<String>,
    /// Seconds since the node's last provision state change.
    pub duration_seconds: Option<i64>,
}

/// An event to record with [`crate::Store::add_node_history`]; the store
/// fills the uuid, time, state fields and duration from the node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewHistoryEvent {
    pub event: String,
    pub event_type: Option<String>,
    pub severity: Option<String>,
    pub user: Option<String>,
    pub project: Option<String>,
}

/// A page of a node's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Entries after this one (in the order asked).
    pub marker: Option<Uuid>,
    pub limit: Option<u32>,
    /// Newest first (`sort_dir=desc`).
    pub descending: bool,
}

/// The event type of an error recorded when `last_error` changes, from the
/// provision state the node was in (Ironic's `states.*` activity names).
/// The SQL triggers of migration 0005 apply the same mapping.
pub fn history_event_type(previous_state: &str) -> &'static str {
    match previous_state {
        "deploying" | "wait call-back" | "deploy failed" => "deploying",
        "cleaning" | "clean wait" | "clean failed" => "cleaning",
        "verifying" => "verifying",
        "inspecting" | "inspect wait" | "inspect failed" => "introspection",
        "rescuing" | "rescue wait" | "rescue failed" | "unrescuing" => "rescue",
        "servicing" | "service wait" | "service failed" => "servicing",
        "deleting" | "error" => "deleting",
        "adopting" => "adopting",
        _ => "UNKNOWN",
    }
}

/// One cached BIOS setting (Ironic's `BIOSSetting`, registry fields of 1.74).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BiosSetting {
    pub name: String,
    pub value: Option<String>,
    pub attribute_type: Option<String>,
    pub allowable_values: Option<Vec<String>>,
    pub lower_bound: Option<i64>,
    pub max_length: Option<i64>,
    pub min_length: Option<i64>,
    pub read_only: Option<bool>,
    pub reset_required: Option<bool>,
    pub unique: Option<bool>,
    pub upper_bound: Option<i64>,
    /// Set by the store.
    #[serde(skip)]
    pub created_at: Option<DbTime>,
    /// Set by the store.
    #[serde(skip)]
    pub updated_at: Option<DbTime>,
}

/// One cached firmware component (Ironic's `FirmwareComponent`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirmwareComponent {
    pub component: String,
    pub initial_version: String,
    pub current_version: Option<String>,
    pub last_version_flashed: Option<String>,
    pub vendor: Option<String>,
    pub model: Option<String>,
    pub serial_number: Option<String>,
    /// Set by the store.
    #[serde(skip)]
    pub created_at: Option<DbTime>,
    /// Set by the store.
    #[serde(skip)]
    pub updated_at: Option<DbTime>,
}

/// A node's inspection data (Ironic's `NodeInventory`).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeInventory {
    pub inventory: serde_json::Value,
    pub plugin_data: serde_json::Value,
    pub created_at: DbTime,
    pub updated_at: Option<DbTime>,
}

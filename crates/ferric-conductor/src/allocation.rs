//! Allocations (Ironic's `conductor/allocations.py`): find a node for an
//! allocation and reserve it, race-free on the fair lock.
//!
//! * Candidates are listed from the store with the filters in SQL
//!   (resource class, `available`, no instance, not in maintenance, power
//!   state known, the requested candidates, the owner's project), then
//!   matched on traits and shuffled, a node named like the allocation first.
//! * Each candidate is locked exclusively without queueing, re-verified under
//!   the lock, and given to the allocation by [`Store::bind_allocation`]: the
//!   node's `instance_uuid`/`allocation_uuid` and the allocation's node and
//!   state change in one transaction fenced by the node's lock token, which
//!   refuses a node that already has an instance. Nothing is checked outside
//!   the lock and then acted on.
//! * Nodes found locked are retried by queueing for their locks (fair
//!   waiting) instead of Ironic's fixed sleeps, within Ironic's overall
//!   budget (`node_locked_retry_attempts × node_locked_retry_interval`).
//! * Failures end in state `error` with Ironic's messages.
//!
//! [`Store::bind_allocation`]: ferric_store::Store::bind_allocation

use crate::{ExclusiveTask, Retry, TaskError, TaskManager};
use ferric_core::{DbTime, Node, ProvisionState};
use ferric_store::{NodeIdent, NodeQuery, Resource, ResourceKind, ResourceQuery, StoreError};
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};
use uuid::Uuid;

const KIND: ResourceKind = ResourceKind::Allocation;

/// Allocation states.
pub const ALLOCATING: &str = "allocating";
pub const ACTIVE: &str = "active";
pub const ERROR: &str = "error";

/// An allocation, typed (stored as a [`Resource`] of kind `Allocation`).
#[derive(Debug, Clone, PartialEq)]
pub struct Allocation {
    pub uuid: Uuid,
    pub name: Option<String>,
    /// The node it got.
    pub node: Option<Uuid>,
    pub state: String,
    pub last_error: Option<String>,
    pub resource_class: Option<String>,
    pub traits: Vec<String>,
    /// Stored as UUIDs.
    pub candidate_nodes: Vec<Uuid>,
    pub extra: Map<String, Value>,
    pub owner: Option<String>,
    /// The conductor processing it (for take-over).
    pub conductor_affinity: Option<String>,
    pub created_at: DbTime,
    pub updated_at: Option<DbTime>,
    pub revision: i64,
}

fn opt_string(body: &Map<String, Value>, key: &str) -> Option<String> {
    body.get(key).and_then(Value::as_str).map(str::to_string)
}

impl Allocation {
    /// From the stored form.
    pub fn from_resource(r: Resource) -> Allocation {
        let b = &r.body;
        Allocation {
            uuid: r.uuid,
            name: r.name.clone(),
            node: r.node,
            state: opt_string(b, "state").unwrap_or_else(|| ALLOCATING.to_string()),
            last_error: opt_string(b, "last_error"),
            resource_class: opt_string(b, "resource_class"),
            traits: b
                .get("traits")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            candidate_nodes: b
                .get("candidate_nodes")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .filter_map(|s| Uuid::parse_str(s).ok())
                        .collect()
                })
                .unwrap_or_default(),
            extra: b
                .get("extra")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            owner: opt_string(b, "owner"),
            conductor_affinity: opt_string(b, "conductor_affinity"),
            created_at: r.created_at,
            updated_at: r.updated_at,
            revision: r.revision,
        }
    }

    /// The stored body (every field but uuid, name and node).
    pub fn body(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("state".into(), json!(self.state));
        m.insert("last_error".into(), json!(self.last_error));
        m.insert("resource_class".into(), json!(self.resource_class));
        m.insert("traits".into(), json!(self.traits));
        m.insert(
            "candidate_nodes".into(),
            json!(self
                .candidate_nodes
                .iter()
                .map(Uuid::to_string)
                .collect::<Vec<_>>()),
        );
        m.insert("extra".into(), Value::Object(self.extra.clone()));
        m.insert("owner".into(), json!(self.owner));
        m.insert("conductor_affinity".into(), json!(self.conductor_affinity));
        m
    }

    /// The stored form (for an update: the revision it was read at).
    pub fn to_resource(&self) -> Resource {
        Resource {
            kind: KIND,
            uuid: self.uuid,
            name: self.name.clone(),
            node: self.node,
            parent: None,
            key: None,
            body: self.body(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            revision: self.revision,
        }
    }
}

/// Ironic's `AllocationFailed` text.
fn failed(uuid: Uuid, error: &str) -> String {
    format!("Failed to process allocation {uuid}: {error}.")
}

/// Process allocation `uuid` (Ironic's `do_allocate`): find and reserve a
/// node, or end in state `error`. Never fails: every outcome is written to
/// the allocation. An allocation no longer `allocating` (deleted, taken
/// over, done) is left alone.
pub async fn allocate(tm: &TaskManager, uuid: Uuid) {
    let alloc = match tm.store().get_resource(KIND, &NodeIdent::Uuid(uuid)).await {
        Ok(r) => Allocation::from_resource(r),
        Err(e) => {
            debug!(allocation_uuid = %uuid, error.message = %e, "allocation gone before processing");
            return;
        }
    };
    if alloc.state != ALLOCATING || alloc.node.is_some() {
        return;
    }
    let outcome = match candidate_nodes(tm, &alloc).await {
        Ok(nodes) => allocate_node(tm, &alloc, nodes).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(Some(node)) => {
            info!(allocation_uuid = %uuid, node_uuid = %node, "node reserved for allocation");
        }
        Ok(None) => {
            debug!(allocation_uuid = %uuid, "allocation changed or deleted while processed");
        }
        Err(Failure::Allocation(reason)) => {
            warn!(allocation_uuid = %uuid, error.message = %reason, "allocation failed");
            fail(tm, uuid, &reason).await;
        }
        Err(Failure::Unexpected(e)) => {
            error!(allocation_uuid = %uuid, error.message = %e, "unexpected error while allocating");
            fail(
                tm,
                uuid,
                &format!("Unexpected exception during allocation: {e}"),
            )
            .await;
        }
    }
}

/// Why an allocation failed.
#[derive(Debug)]
enum Failure {
    /// Ironic's `AllocationFailed` (the full text).
    Allocation(String),
    /// Anything else (the store, the lock).
    Unexpected(String),
}

impl From<TaskError> for Failure {
    fn from(e: TaskError) -> Self {
        Failure::Unexpected(e.to_string())
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Unexpected(e.to_string())
    }
}

fn traits_match(wanted: &[String], node: &Node) -> bool {
    wanted.iter().all(|t| node.attrs.traits.contains(t))
}

/// A random index below `n` (`n > 0`), from a v4 UUID's random bits.
fn random_below(n: usize) -> usize {
    (Uuid::new_v4().as_u128() % n as u128) as usize
}

/// The candidates, in the order they are tried (Ironic's `_candidate_nodes`).
async fn candidate_nodes(tm: &TaskManager, a: &Allocation) -> Result<Vec<Node>, Failure> {
    let page = tm
        .store()
        .list_nodes(&NodeQuery {
            resource_class: a.resource_class.clone(),
            provision_state: Some(ProvisionState::Available.as_str().to_string()),
            associated: Some(false),
            with_power_state: Some(true),
            maintenance: Some(false),
            uuid_in: (!a.candidate_nodes.is_empty()).then(|| a.candidate_nodes.clone()),
            project: a.owner.clone(),
            ..Default::default()
        })
        .await?;
    let mut nodes = page.nodes;
    let rc = a.resource_class.clone().unwrap_or_default();
    if nodes.is_empty() {
        let error = if a.candidate_nodes.is_empty() {
            format!("no available nodes match the resource class {rc}")
        } else {
            format!("none of the requested nodes are available and match the resource class {rc}")
        };
        return Err(Failure::Allocation(failed(a.uuid, &error)));
    }
    if !a.traits.is_empty() {
        nodes.retain(|n| traits_match(&a.traits, n));
        if nodes.is_empty() {
            let wanted: BTreeSet<&str> = a.traits.iter().map(String::as_str).collect();
            let error = format!(
                "no suitable nodes have the requested traits {}",
                wanted.into_iter().collect::<Vec<_>>().join(", ")
            );
            return Err(Failure::Allocation(failed(a.uuid, &error)));
        }
    }
    // Fisher-Yates.
    for i in (1..nodes.len()).rev() {
        nodes.swap(i, random_below(i + 1));
    }
    if let Some(name) = &a.name {
        if let Some(i) = nodes.iter().position(|n| n.name.as_ref() == Some(name)) {
            let n = nodes.remove(i);
            nodes.insert(0, n);
        }
    }
    debug!(allocation_uuid = %a.uuid, count = nodes.len(), "candidate nodes");
    Ok(nodes)
}

/// Whether the node still satisfies the request (Ironic's `_verify_node`),
/// judged under its lock.
fn verify_node(node: &Node, a: &Allocation) -> bool {
    !node.maintenance
        && node.instance_uuid.is_none()
        && node.attrs.allocation_uuid.is_none()
        && node.provision_state == ProvisionState::Available
        && node.attrs.resource_class == a.resource_class
        && (a.traits.is_empty() || traits_match(&a.traits, node))
}

/// What one reservation attempt on a node came to.
enum Attempt {
    /// The node is the allocation's now.
    Reserved,
    /// Locked by someone else: try again later.
    Locked,
    /// Not suitable (any more), or gone.
    Skipped,
    /// The allocation changed or went (deleted, taken over): stop.
    Abandoned,
}

async fn try_node(
    tm: &TaskManager,
    a: &Allocation,
    node: Uuid,
    retry: Retry,
) -> Result<Attempt, Failure> {
    let task = match tm
        .acquire(node)
        .purpose("allocating")
        .retry(retry)
        .exclusive()
        .await
    {
        Ok(t) => t,
        Err(e) if e.is_node_locked() => return Ok(Attempt::Locked),
        Err(e) if e.is_not_found() => return Ok(Attempt::Skipped),
        Err(e) => return Err(e.into()),
    };
    if !verify_node(task.node(), a) {
        debug!(node_uuid = %node, allocation_uuid = %a.uuid, "node no longer suitable, skipping");
        task.release().await?;
        return Ok(Attempt::Skipped);
    }
    let bound = tm.store().bind_allocation(task.token(), a.uuid).await;
    release(task).await;
    match bound {
        Ok(_) => Ok(Attempt::Reserved),
        Err(StoreError::NodeAssociated { .. }) => Ok(Attempt::Skipped),
        Err(StoreError::ResourceChanged { .. } | StoreError::ResourceNotFound { .. }) => {
            Ok(Attempt::Abandoned)
        }
        Err(StoreError::Duplicate { .. }) => Err(Failure::Unexpected(format!(
            "Instance {} is already associated with a node, it cannot be associated with this other node {node}",
            a.uuid
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Release a task whose outcome is already decided (a failed release is
/// logged; the lock is then broken by recovery as for a dead holder).
async fn release(task: ExclusiveTask) {
    let node = task.token().node;
    if let Err(e) = task.release().await {
        warn!(node_uuid = %node, error.message = %e, "could not release the node after allocating");
    }
}

/// Go through the candidates and reserve one (Ironic's `_allocate_node`).
/// Returns the node, or `None` when the allocation changed meanwhile.
async fn allocate_node(
    tm: &TaskManager,
    a: &Allocation,
    nodes: Vec<Node>,
) -> Result<Option<Uuid>, Failure> {
    let c = tm.config();
    let budget = c.node_locked_retry_interval * c.node_locked_retry_attempts;
    let deadline = Instant::now() + budget;
    let mut pending: Vec<Uuid> = nodes.iter().map(|n| n.uuid).collect();
    let mut first_pass = true;
    loop {
        let mut locked = Vec::new();
        let count = pending.len();
        for (i, node) in pending.iter().enumerate() {
            // First pass: no queueing (Ironic's retry=False). Later passes
            // queue fairly for each locked node, sharing what is left of
            // the budget among the nodes left to try.
            let retry = if first_pass {
                Retry::None
            } else {
                let left = deadline.saturating_duration_since(Instant::now());
                let share = left / (count - i).max(1) as u32;
                if share < Duration::from_millis(1) {
                    Retry::None
                } else {
                    Retry::For(share)
                }
            };
            match try_node(tm, a, *node, retry).await? {
                Attempt::Reserved => return Ok(Some(*node)),
                Attempt::Abandoned => return Ok(None),
                Attempt::Locked => locked.push(*node),
                Attempt::Skipped => {}
            }
        }
        pending = locked;
        first_pass = false;
        if pending.is_empty() || Instant::now() >= deadline {
            break;
        }
    }
    let error = if pending.is_empty() {
        "all nodes were filtered out during reservation".to_string()
    } else {
        format!("could not reserve any of {} suitable nodes", pending.len())
    };
    Err(Failure::Allocation(failed(a.uuid, &error)))
}

/// Record the failure (Ironic's `_allocation_failed`): no node, state
/// `error`, `last_error`. Conditional on the revision read; a concurrent
/// update (a PATCH of name or extra) is re-read and retried; a deleted or
/// finished allocation is left alone.
async fn fail(tm: &TaskManager, uuid: Uuid, reason: &str) {
    for _ in 0..5 {
        let current = match tm.store().get_resource(KIND, &NodeIdent::Uuid(uuid)).await {
            Ok(r) => Allocation::from_resource(r),
            Err(e) => {
                debug!(allocation_uuid = %uuid, error.message = %e, "not saving a failed allocation");
                return;
            }
        };
        if current.state != ALLOCATING {
            return;
        }
        let next = Allocation {
            node: None,
            state: ERROR.to_string(),
            last_error: Some(reason.to_string()),
            ..current
        };
        match tm.store().update_resource(&next.to_resource()).await {
            Ok(_) => return,
            Err(StoreError::ResourceChanged { .. }) => continue,
            Err(e) => {
                error!(allocation_uuid = %uuid, error.message = %e, "could not save the failed allocation");
                return;
            }
        }
    }
}

/// Why a backfill or a deletion was refused.
#[derive(Debug, thiserror::Error)]
pub enum AllocationError {
    /// Ironic's `AllocationFailed` (HTTP 500 in Ironic, since it has no code).
    #[error("{0}")]
    Failed(String),
    /// Ironic's `InvalidState` (409).
    #[error("{0}")]
    InvalidState(String),
    #[error(transparent)]
    Task(#[from] TaskError),
}

impl From<StoreError> for AllocationError {
    fn from(e: StoreError) -> Self {
        AllocationError::Task(e.into())
    }
}

/// Backfill allocation `a` (just created, `allocating`) with `node`, an
/// already deployed node (Ironic's `backfill_allocation`). On refusal the
/// allocation ends in `error` and the error is returned.
pub async fn backfill(
    tm: &TaskManager,
    a: &Allocation,
    node: Uuid,
) -> Result<Allocation, AllocationError> {
    let result = do_backfill(tm, a, node).await;
    if let Err(e) = &result {
        let reason = match e {
            AllocationError::Task(TaskError::Store(
                s @ (StoreError::NodeAssociated { .. } | StoreError::NodeNotFound(_)),
            )) => s.to_string(),
            AllocationError::Task(TaskError::Store(StoreError::Duplicate { .. })) => format!(
                "Instance {} is already associated with a node, it cannot be associated with this other node {node}",
                a.uuid
            ),
            AllocationError::Failed(m) | AllocationError::InvalidState(m) => m.clone(),
            other => format!("Unexpected exception during allocation: {other}"),
        };
        fail(tm, a.uuid, &reason).await;
    }
    result
}

async fn do_backfill(
    tm: &TaskManager,
    a: &Allocation,
    node: Uuid,
) -> Result<Allocation, AllocationError> {
    let task = tm
        .acquire(node)
        .purpose("allocation backfilling")
        .exclusive()
        .await?;
    let n = task.node();
    let mut errors = Vec::new();
    if n.provision_state != ProvisionState::Active {
        errors.push(format!(
            "Node must be in the \"active\" state, but the current state is \"{}\"",
            n.provision_state.as_str()
        ));
    }
    if a.resource_class.is_some() && n.attrs.resource_class != a.resource_class {
        errors.push(format!(
            "Resource class {} does not match the requested resource class {}",
            n.attrs.resource_class.as_deref().unwrap_or("None"),
            a.resource_class.as_deref().unwrap_or("None")
        ));
    }
    if !a.traits.is_empty() && !traits_match(&a.traits, n) {
        errors.push(format!(
            "List of traits {:?} does not match the requested traits {:?}",
            n.attrs.traits, a.traits
        ));
    }
    if !a.candidate_nodes.is_empty() && !a.candidate_nodes.contains(&n.uuid) {
        errors.push(format!(
            "Candidate nodes must be empty or contain the target node, but got {:?}",
            a.candidate_nodes
                .iter()
                .map(Uuid::to_string)
                .collect::<Vec<_>>()
        ));
    }
    if !errors.is_empty() {
        let msg = failed(
            a.uuid,
            &format!(
                "Cannot backfill an allocation for node {}: {}",
                n.uuid,
                errors.join("; ")
            ),
        );
        task.release().await?;
        return Err(AllocationError::Failed(msg));
    }
    let bound = tm.store().bind_allocation(task.token(), a.uuid).await;
    task.release().await?;
    let (_, stored) = bound?;
    info!(allocation_uuid = %a.uuid, node_uuid = %node, "allocation backfilled");
    Ok(Allocation::from_resource(stored))
}

/// Delete the allocation of the locked node, if it has one, clearing its
/// `instance_uuid` and `allocation_uuid` in the store and in the task's copy
/// (Ironic destroys it on tear-down and when `instance_uuid` is removed).
/// An allocation already gone is fine.
pub async fn drop_for_node(task: &mut ExclusiveTask) -> Result<(), TaskError> {
    let Some(a) = task.node().attrs.allocation_uuid else {
        return Ok(());
    };
    match task
        .manager()
        .store()
        .delete_allocation(Some(task.token()), a)
        .await
    {
        Ok(()) => {
            info!(allocation_uuid = %a, node_uuid = %task.node().uuid, "allocation deleted with the node's instance")
        }
        Err(StoreError::ResourceNotFound { .. } | StoreError::ResourceChanged { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let n = task.node_mut();
    n.instance_uuid = None;
    n.attrs.allocation_uuid = None;
    Ok(())
}

/// Ironic's `UPDATE_ALLOWED_STATES` (its `service` is a verb here, not a state).
const UPDATE_ALLOWED_STATES: [ProvisionState; 12] = [
    ProvisionState::DeployFailed,
    ProvisionState::Inspecting,
    ProvisionState::InspectFailed,
    ProvisionState::InspectWait,
    ProvisionState::CleanFailed,
    ProvisionState::Error,
    ProvisionState::Verifying,
    ProvisionState::AdoptFailed,
    ProvisionState::RescueFailed,
    ProvisionState::UnrescueFailed,
    ProvisionState::ServiceHold,
    ProvisionState::ServiceFailed,
];

/// Whether the allocation may be removed from `node` (Ironic's
/// `verify_node_for_deallocation`).
pub fn verify_node_for_deallocation(node: &Node, a: &Allocation) -> Result<(), AllocationError> {
    if node.maintenance {
        return Ok(());
    }
    if node.target_provision_state.is_some()
        && !UPDATE_ALLOWED_STATES.contains(&node.provision_state)
    {
        return Err(AllocationError::InvalidState(format!(
            "Cannot remove allocation {} for node {}, because the node is in state {} where updates are not allowed (and maintenance mode is off)",
            a.uuid,
            node.uuid,
            node.provision_state.as_str()
        )));
    }
    if node.provision_state == ProvisionState::Active {
        return Err(AllocationError::InvalidState(format!(
            "Cannot remove allocation {} for node {}, because the node is active (and maintenance mode is off)",
            a.uuid, node.uuid
        )));
    }
    Ok(())
}

/// Delete allocation `uuid` (Ironic's `destroy_allocation`): with a node,
/// under the node's exclusive lock after [`verify_node_for_deallocation`],
/// clearing the node's `instance_uuid` and `allocation_uuid` in the same
/// transaction. An allocation that gets a node while being deleted is
/// re-read and deleted under that node's lock.
pub async fn destroy(tm: &TaskManager, uuid: Uuid) -> Result<(), AllocationError> {
    for _ in 0..5 {
        let a = Allocation::from_resource(
            tm.store()
                .get_resource(KIND, &NodeIdent::Uuid(uuid))
                .await?,
        );
        let result = match a.node {
            None => tm.store().delete_allocation(None, uuid).await,
            Some(node) => {
                let task = match tm
                    .acquire(node)
                    .purpose("allocation deletion")
                    .exclusive()
                    .await
                {
                    Ok(t) => t,
                    // The node went (and the allocation with it, or it is
                    // about to): re-read.
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(e.into()),
                };
                if let Err(e) = verify_node_for_deallocation(task.node(), &a) {
                    task.release().await?;
                    return Err(e);
                }
                let r = tm.store().delete_allocation(Some(task.token()), uuid).await;
                task.release().await?;
                r
            }
        };
        match result {
            Ok(()) => {
                info!(allocation_uuid = %uuid, "allocation deleted");
                return Ok(());
            }
            Err(StoreError::ResourceChanged { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::ResourceChanged {
        kind: KIND,
        uuid,
        expected: 0,
    }
    .into())
}

/// Take over allocations left `allocating` by conductors that are offline
/// (Ironic's `_check_orphan_allocations`), and, when `include_own`, by this
/// conductor's previous run (at start-up: a restarted conductor's in-memory
/// work is gone). The take-over is a conditional write of
/// `conductor_affinity` on the revision read, so two conductors never
/// process one allocation. Returns how many were taken over; each is then
/// processed in the background.
pub async fn take_over_orphans(tm: &TaskManager, include_own: bool) -> Result<usize, TaskError> {
    // Ironic's `get_offline_conductors`: registered, heartbeat stale (or
    // stopped). A host that never registered is not judged.
    let offline: BTreeSet<String> = tm
        .store()
        .list_conductors()
        .await?
        .into_iter()
        .filter(|c| !c.alive)
        .map(|c| c.hostname)
        .collect();
    let rows = tm
        .store()
        .list_resources(&ResourceQuery {
            body_eq: vec![("state", ALLOCATING.to_string())],
            has_node: Some(false),
            ..ResourceQuery::all(KIND)
        })
        .await?;
    let mut taken = 0;
    for r in rows {
        let a = Allocation::from_resource(r);
        let orphaned = match a.conductor_affinity.as_deref() {
            None => true,
            Some(h) if h == tm.host() => include_own,
            Some(h) => offline.contains(h),
        };
        if !orphaned {
            continue;
        }
        let next = Allocation {
            conductor_affinity: Some(tm.host().to_string()),
            ..a.clone()
        };
        match tm.store().update_resource(&next.to_resource()).await {
            Ok(_) => {
                info!(allocation_uuid = %a.uuid, previous = ?a.conductor_affinity, "taking over allocation");
                taken += 1;
                let tm = tm.clone();
                tokio::spawn(async move { allocate(&tm, a.uuid).await });
            }
            Err(StoreError::ResourceChanged { .. } | StoreError::ResourceNotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(taken)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn alloc() -> Allocation {
        Allocation::from_resource(Resource {
            kind: KIND,
            uuid: Uuid::nil(),
            name: None,
            node: None,
            parent: None,
            key: None,
            body: Map::new(),
            created_at: DbTime(0),
            updated_at: None,
            revision: 0,
        })
    }

    fn node(state: ProvisionState, target: Option<ProvisionState>, maintenance: bool) -> Node {
        let mut n: Node = serde_json::from_value(json!({
            "uuid": Uuid::max(),
            "name": null, "driver": "fake-hardware", "driver_info": {}, "properties": {},
            "extra": {}, "instance_info": {}, "instance_uuid": null, "interfaces": {},
            "provision_state": "available", "target_provision_state": null,
            "power_state": null, "target_power_state": null, "maintenance": false,
            "maintenance_reason": null, "last_error": null, "conductor_group": "",
            "conductor_affinity": null, "reservation": null, "lock_epoch": 0,
            "lock_waiters": 0, "revision": 0, "created_at": 0, "updated_at": null,
            "provision_updated_at": null
        }))
        .unwrap();
        n.provision_state = state;
        n.target_provision_state = target;
        n.maintenance = maintenance;
        n
    }

    #[test]
    fn deallocation_follows_ironics_rules() {
        use ProvisionState as S;
        let a = alloc();
        assert!(verify_node_for_deallocation(&node(S::Available, None, false), &a).is_ok());
        assert!(verify_node_for_deallocation(&node(S::Active, None, true), &a).is_ok());
        let e = verify_node_for_deallocation(&node(S::Active, None, false), &a).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("Cannot remove allocation {} for node {}, because the node is active (and maintenance mode is off)", Uuid::nil(), Uuid::max())
        );
        let e = verify_node_for_deallocation(&node(S::Deploying, Some(S::Active), false), &a)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("Cannot remove allocation {} for node {}, because the node is in state deploying where updates are not allowed (and maintenance mode is off)", Uuid::nil(), Uuid::max())
        );
        // A failed state that allows updates.
        assert!(
            verify_node_for_deallocation(&node(S::DeployFailed, Some(S::Active), false), &a)
                .is_ok()
        );
    }

    #[test]
    fn the_body_round_trips() {
        let mut a = alloc();
        a.name = Some("x".into());
        a.traits = vec!["CUSTOM_A".into()];
        a.candidate_nodes = vec![Uuid::max()];
        a.owner = Some("p".into());
        a.conductor_affinity = Some("c".into());
        a.last_error = Some("e".into());
        a.state = ERROR.into();
        assert_eq!(Allocation::from_resource(a.to_resource()), a);
    }
}

//! An in-memory [`Store`]: the model the simulator runs against.
//!
//! Always compiled (it needs nothing beyond std and tokio) and passes the same
//! conformance suite (`crate::conformance`) as the SQL store
//! (`tests/conformance_memory.rs`). Every operation runs under one mutex, so
//! each is a single linearizable step, like a serialized SQLite transaction.
//!
//! What the simulator controls: the database clock ([`Clock`], default
//! [`system_clock`]), by which alone liveness of conductors and waiter
//! deadlines are judged.
//!
//! Simulation hooks (cargo feature `sim`, for ferric-sim and this crate's
//! tests; a production build has none of them):
//!
//! * faults: [`MemoryStore::fail_next`] makes the next N operations fail
//!   before they apply (`StoreError::Invalid("injected fault")`), and
//!   [`MemoryStore::set_latency`] delays each operation before it applies;
//! * observation: [`MemoryStore::set_observer`] sees every lock-relevant
//!   change (and every power state recorded without the lock) as a
//!   [`LockEvent`], in linearization order, so a checker can validate the
//!   history with its own model instead of trusting the store;
//! * planted bugs ([`MemoryStore::plant_bug`], for tests of the checkers
//!   only): a store that forgets a fencing condition must be caught.
//!
//! The memory store reports [`Backend::Sqlite`]: like SQLite it serializes
//! writers and has no cross-process push (`subscribe_wakeups` never fires).

use crate::resource::*;
use crate::types::*;
use crate::wake::WakeSubscription;
use crate::{Store, StoreError, StoreResult};
use async_trait::async_trait;
use ferric_core::{DbTime, NewNode, Node, ProvisionState, Reservation};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use uuid::Uuid;

/// The database clock: microseconds since the Unix epoch.
pub type Clock = Arc<dyn Fn() -> DbTime + Send + Sync>;

/// Delay before an operation applies (the round trip to the "database").
#[cfg(feature = "sim")]
pub type LatencyFn = Arc<dyn Fn(Op) -> Duration + Send + Sync>;

/// Sees every lock-relevant change, under the store's mutex. Must not call
/// back into the store.
#[cfg(feature = "sim")]
pub type Observer = Arc<dyn Fn(&LockEvent) + Send + Sync>;

/// The wall clock, for use outside the simulator.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        let us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or(0);
        DbTime(i64::try_from(us).unwrap_or(i64::MAX))
    })
}

/// The error every injected fault returns.
#[cfg(feature = "sim")]
pub const INJECTED_FAULT: &str = "injected fault";

/// One [`Store`] operation, for latency functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Now,
    CreateNode,
    GetNode,
    ListNodes,
    SaveNode,
    RecordPowerStates,
    DeleteNode,
    ChangesSince,
    TryAcquire,
    SubscribeWakeups,
    Enqueue,
    PollWaiter,
    CancelWait,
    Release,
    Handoff,
    BreakLock,
    RecordAudit,
    LockView,
    ListLocks,
    ListAudit,
    RegisterConductor,
    Heartbeat,
    UnregisterConductor,
    ListConductors,
    CreateResource,
    GetResource,
    ListResources,
    UpdateResource,
    DeleteResource,
}

/// A deliberately broken behaviour, to prove the simulator's checkers work.
/// Never planted outside tests.
#[cfg(feature = "sim")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bug {
    /// `save_node` / `delete_node` ignore the token (only the node must exist).
    UnfencedWrite,
    /// `release` clears any held lock, whoever presents the token.
    ReleaseWithoutHolderCheck,
    /// Grant-on-release hands the lock to the *last* live waiter, not the first.
    LifoGrant,
    /// `record_power_states` ignores its fence (unlocked, same `lock_epoch`,
    /// same `revision`): every observation of an existing node is recorded.
    UnfencedObservation,
}

/// The identity of a grant: (node, holder, task, epoch).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fence {
    pub node: Uuid,
    pub holder: String,
    pub task_id: Uuid,
    pub epoch: i64,
}

impl From<&LockToken> for Fence {
    fn from(t: &LockToken) -> Self {
        Fence {
            node: t.node,
            holder: t.holder.clone(),
            task_id: t.task_id,
            epoch: t.epoch,
        }
    }
}

/// How a grant came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantVia {
    /// `try_acquire` / `try_acquire_node`.
    Try,
    /// `enqueue` found the node free.
    Enqueue,
    /// Grant-on-release (or on break) to the waiter with this ticket.
    Queue { ticket: i64 },
    /// `handoff` from the previous holder.
    Handoff,
}

/// Why a waiter left the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaiterExit {
    Cancelled,
    /// Judged dead or expired by a release.
    Skipped,
    Granted,
    NodeDeleted,
}

/// A lock-relevant change, reported at its linearization point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockEvent {
    Granted {
        fence: Fence,
        purpose: String,
        via: GrantVia,
        at: DbTime,
    },
    /// The holder released (the lock may go on to a waiter: a `Granted` follows).
    Released { fence: Fence, at: DbTime },
    /// The lock held under `fence` was broken.
    Broken { fence: Fence, at: DbTime },
    /// A fenced write (save or delete) under the presented token succeeded.
    Written {
        fence: Fence,
        deleted: bool,
        /// The change-feed revision of the write (the node's new `revision`).
        revision: i64,
        at: DbTime,
    },
    /// `record_power_states` recorded a power state without the lock: the
    /// observation was made of the node at `lock_epoch` and `revision` (as
    /// listed); the node's new revision is `recorded`.
    Observed {
        node: Uuid,
        lock_epoch: i64,
        revision: i64,
        recorded: i64,
        at: DbTime,
    },
    Queued {
        node: Uuid,
        ticket: i64,
        conductor: String,
        task_id: Uuid,
        deadline: Option<DbTime>,
        at: DbTime,
    },
    WaiterLeft {
        node: Uuid,
        ticket: i64,
        exit: WaiterExit,
        at: DbTime,
    },
    /// A conductor registered or heartbeat (`heartbeat`: its heartbeat is
    /// now `at`), or went offline.
    Conductor {
        hostname: String,
        online: bool,
        heartbeat: bool,
        at: DbTime,
    },
}

#[derive(Debug, Clone)]
struct Waiter {
    node: Uuid,
    conductor: String,
    task_id: Uuid,
    purpose: String,
    enqueued_at: i64,
    deadline: Option<i64>,
}

#[derive(Debug, Clone)]
struct Conductor {
    group: String,
    drivers: Vec<String>,
    online: bool,
    started_at: i64,
    heartbeat_at: i64,
}

#[derive(Default)]
struct State {
    nodes: BTreeMap<Uuid, Node>,
    /// Every waiter by ticket; tickets are global and monotonic.
    waiters: BTreeMap<i64, Waiter>,
    next_ticket: i64,
    conductors: BTreeMap<String, Conductor>,
    revision: i64,
    changes: Vec<NodeChange>,
    audit: Vec<AuditRecord>,
    /// Secondary resources (ports, portgroups, ...).
    resources: BTreeMap<(ResourceKind, Uuid), Resource>,
    data: BTreeMap<Uuid, NodeData>,
}

/// A node's sub-resources (history, BIOS, firmware, inventory).
#[derive(Default)]
struct NodeData {
    /// Oldest first.
    history: Vec<HistoryEvent>,
    bios: BTreeMap<String, BiosSetting>,
    firmware: BTreeMap<String, FirmwareComponent>,
    inventory: Option<NodeInventory>,
}

impl State {
    /// Record `event` for `node`, keeping the newest [`NODE_HISTORY_MAX_ENTRIES`].
    fn push_history(&mut self, event: HistoryEvent) {
        let history = &mut self.data.entry(event.node).or_default().history;
        history.push(event);
        if history.len() > NODE_HISTORY_MAX_ENTRIES {
            let excess = history.len() - NODE_HISTORY_MAX_ENTRIES;
            history.drain(..excess);
        }
    }

    /// The fenced check of the node-data writes.
    fn fenced(&self, token: &LockToken) -> StoreResult<&Node> {
        match self.nodes.get(&token.node) {
            Some(n) if matches(n.reservation.as_ref(), token) => Ok(n),
            _ => Err(MemoryStore::fenced_error(self, token)),
        }
    }
}

/// Seconds since `since`, as the history's `duration_seconds`.
fn duration_since(since: Option<DbTime>, now: i64) -> Option<i64> {
    since.map(|t| (now - t.0).max(0) / 1_000_000)
}

#[cfg(feature = "sim")]
#[derive(Default)]
struct Hooks {
    fail_next: u32,
    latency: Option<LatencyFn>,
    observer: Option<Observer>,
    bug: Option<Bug>,
    ops: u64,
}

/// The in-memory store.
pub struct MemoryStore {
    state: Mutex<State>,
    #[cfg(feature = "sim")]
    hooks: Mutex<Hooks>,
    clock: Clock,
    heartbeat_timeout_us: i64,
}

/// Whether the deliberate bug `Bug::$bug` is planted: only possible with the
/// `sim` feature, never otherwise.
macro_rules! planted {
    ($store:expr, $bug:ident) => {{
        #[cfg(feature = "sim")]
        let planted = $store.bug(Bug::$bug);
        #[cfg(not(feature = "sim"))]
        let planted = {
            let _ = &$store;
            false
        };
        planted
    }};
}

fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

fn token_of(node: Uuid, r: &Reservation) -> LockToken {
    LockToken {
        node,
        holder: r.holder.clone(),
        task_id: r.task_id,
        epoch: r.epoch,
        purpose: r.purpose.clone(),
        acquired_at: r.acquired_at,
    }
}

fn matches(r: Option<&Reservation>, t: &LockToken) -> bool {
    r.is_some_and(|r| r.holder == t.holder && r.task_id == t.task_id && r.epoch == t.epoch)
}

impl MemoryStore {
    /// A store on the wall clock.
    pub fn new(heartbeat_timeout: Duration) -> Self {
        Self::with_clock(heartbeat_timeout, system_clock())
    }

    /// A store on an injected database clock.
    pub fn with_clock(heartbeat_timeout: Duration, clock: Clock) -> Self {
        MemoryStore {
            state: Mutex::new(State {
                next_ticket: 1,
                ..Default::default()
            }),
            #[cfg(feature = "sim")]
            hooks: Mutex::new(Hooks::default()),
            clock,
            heartbeat_timeout_us: i64::try_from(heartbeat_timeout.as_micros()).unwrap_or(i64::MAX),
        }
    }

    /// The next `n` operations fail before they apply.
    #[cfg(feature = "sim")]
    pub fn fail_next(&self, n: u32) {
        guard(&self.hooks).fail_next = n;
    }

    /// Delay every operation by `f(op)` before it applies (`None`: no delay).
    #[cfg(feature = "sim")]
    pub fn set_latency(&self, f: Option<LatencyFn>) {
        guard(&self.hooks).latency = f;
    }

    /// Report every lock-relevant change to `f`.
    #[cfg(feature = "sim")]
    pub fn set_observer(&self, f: Option<Observer>) {
        guard(&self.hooks).observer = f;
    }

    /// Testing only: break the store on purpose (see [`Bug`]).
    #[cfg(feature = "sim")]
    #[doc(hidden)]
    pub fn plant_bug(&self, bug: Option<Bug>) {
        guard(&self.hooks).bug = bug;
    }

    /// Operations attempted so far.
    #[cfg(feature = "sim")]
    pub fn ops(&self) -> u64 {
        guard(&self.hooks).ops
    }

    /// The heartbeat timeout liveness is judged with.
    pub fn heartbeat_timeout(&self) -> Duration {
        Duration::from_micros(u64::try_from(self.heartbeat_timeout_us).unwrap_or(0))
    }

    /// Every node as stored, read directly: no latency, no fault, not counted.
    pub fn peek_nodes(&self) -> Vec<Node> {
        guard(&self.state).nodes.values().cloned().collect()
    }

    /// Every queued waiter of `node` in ticket order, read directly.
    pub fn peek_waiters(&self, node: Uuid) -> Vec<WaiterView> {
        let st = guard(&self.state);
        let now = self.now_us();
        self.waiter_views(&st, node, now)
    }

    #[cfg(feature = "sim")]
    fn bug(&self, b: Bug) -> bool {
        guard(&self.hooks).bug == Some(b)
    }

    fn now_us(&self) -> i64 {
        (self.clock)().0
    }

    /// Without the simulation hooks there is nothing to do on entry.
    #[cfg(not(feature = "sim"))]
    async fn enter(&self, op: Op) -> StoreResult<()> {
        let _ = op;
        Ok(())
    }

    /// Latency, then the fault check: every operation passes here first.
    #[cfg(feature = "sim")]
    async fn enter(&self, op: Op) -> StoreResult<()> {
        let latency = {
            let mut h = guard(&self.hooks);
            h.ops += 1;
            h.latency.clone()
        };
        if let Some(f) = latency {
            let d = f(op);
            if !d.is_zero() {
                tokio::time::sleep(d).await;
            }
        }
        let mut h = guard(&self.hooks);
        if h.fail_next > 0 {
            h.fail_next -= 1;
            return Err(StoreError::Invalid(INJECTED_FAULT.to_string()));
        }
        Ok(())
    }

    /// Without the simulation hooks nobody observes.
    #[cfg(not(feature = "sim"))]
    fn emit(&self, e: LockEvent) {
        let _ = e;
    }

    #[cfg(feature = "sim")]
    fn emit(&self, e: LockEvent) {
        let observer = guard(&self.hooks).observer.clone();
        if let Some(o) = observer {
            o(&e);
        }
    }

    fn live(&self, st: &State, now: i64, deadline: Option<i64>, conductor: &str) -> bool {
        deadline.is_none_or(|d| d > now)
            && st.conductors.get(conductor).is_some_and(|c| {
                c.online && c.heartbeat_at >= now.saturating_sub(self.heartbeat_timeout_us)
            })
    }

    fn locked_error(&self, st: &State, node: Uuid, now: i64, queue_full: bool) -> StoreError {
        match st.nodes.get(&node) {
            None => StoreError::NodeNotFound(node.to_string()),
            Some(n) => StoreError::NodeLocked {
                node,
                holder: n.reservation.as_ref().map(|r| r.holder.clone()),
                purpose: n.reservation.as_ref().map(|r| r.purpose.clone()),
                held_ms: n
                    .reservation
                    .as_ref()
                    .map(|r| (now - r.acquired_at.0).max(0) / 1000)
                    .unwrap_or(0),
                waiters: n.lock_waiters,
                queue_full,
            },
        }
    }

    fn fenced_error(st: &State, t: &LockToken) -> StoreError {
        match st.nodes.get(&t.node) {
            None => StoreError::NodeNotFound(t.node.to_string()),
            Some(n) => StoreError::LockLost {
                node: t.node,
                epoch: t.epoch,
                current: n.reservation.as_ref().map(|r| r.holder.clone()),
            },
        }
    }

    fn not_locked(st: &State, node: Uuid, t: &LockToken) -> StoreError {
        match st.nodes.get(&node) {
            None => StoreError::NodeNotFound(node.to_string()),
            Some(n) => StoreError::NodeNotLocked {
                node,
                holder: t.holder.clone(),
                epoch: t.epoch,
                current: n.reservation.as_ref().map(|r| r.holder.clone()),
            },
        }
    }

    /// Set the lock of an existing node: epoch + 1, acquired now.
    fn grant(
        &self,
        st: &mut State,
        node: Uuid,
        claim: &Claim,
        via: GrantVia,
        now: i64,
    ) -> LockToken {
        let mut token = LockToken {
            node,
            holder: claim.holder.clone(),
            task_id: claim.task_id,
            epoch: 0,
            purpose: claim.purpose.clone(),
            acquired_at: DbTime(now),
        };
        if let Some(n) = st.nodes.get_mut(&node) {
            let before = n.lock_epoch;
            n.lock_epoch += 1;
            assert!(n.lock_epoch > before, "lock_epoch must increase on grant");
            token.epoch = n.lock_epoch;
            n.reservation = Some(Reservation {
                holder: token.holder.clone(),
                task_id: token.task_id,
                epoch: token.epoch,
                purpose: token.purpose.clone(),
                acquired_at: token.acquired_at,
            });
        }
        self.emit(LockEvent::Granted {
            fence: Fence::from(&token),
            purpose: token.purpose.clone(),
            via,
            at: DbTime(now),
        });
        token
    }

    fn try_grant(&self, node: Uuid, claim: &Claim) -> StoreResult<(LockToken, Node)> {
        let mut st = guard(&self.state);
        let now = self.now_us();
        let free = match st.nodes.get(&node) {
            None => return Err(StoreError::NodeNotFound(node.to_string())),
            Some(n) => n.reservation.is_none() && n.lock_waiters == 0,
        };
        if !free {
            return Err(self.locked_error(&st, node, now, false));
        }
        let token = self.grant(&mut st, node, claim, GrantVia::Try, now);
        let n = st
            .nodes
            .get(&node)
            .cloned()
            .ok_or_else(|| StoreError::NodeNotFound(node.to_string()))?;
        Ok((token, n))
    }

    /// Clear the lock of `node` and hand it to the first live waiter,
    /// removing dead or expired waiters ahead of it.
    fn unlock_and_handoff(&self, st: &mut State, node: Uuid, now: i64) -> Release {
        let queue: Vec<(i64, Waiter)> = st
            .waiters
            .iter()
            .filter(|(_, w)| w.node == node)
            .map(|(k, w)| (*k, w.clone()))
            .collect();
        let live: Vec<usize> = (0..queue.len())
            .filter(|&i| self.live(st, now, queue[i].1.deadline, &queue[i].1.conductor))
            .collect();
        let pick = if planted!(self, LifoGrant) {
            live.last().copied()
        } else {
            live.first().copied()
        };
        let examined = pick.map_or(queue.len(), |p| p + 1);
        let mut skipped = 0u32;
        for (ticket, _) in &queue[..examined] {
            st.waiters.remove(ticket);
            if Some(*ticket) != pick.map(|p| queue[p].0) {
                skipped += 1;
                self.emit(LockEvent::WaiterLeft {
                    node,
                    ticket: *ticket,
                    exit: WaiterExit::Skipped,
                    at: DbTime(now),
                });
            }
        }
        if let Some(n) = st.nodes.get_mut(&node) {
            n.lock_waiters -= examined as i64;
            assert!(n.lock_waiters >= 0, "lock_waiters went negative");
            n.reservation = None;
        }
        let granted_to = pick.map(|p| {
            let (ticket, w) = &queue[p];
            self.emit(LockEvent::WaiterLeft {
                node,
                ticket: *ticket,
                exit: WaiterExit::Granted,
                at: DbTime(now),
            });
            let claim = Claim {
                holder: w.conductor.clone(),
                task_id: w.task_id,
                purpose: w.purpose.clone(),
            };
            let via = GrantVia::Queue { ticket: *ticket };
            let t = self.grant(st, node, &claim, via, now);
            Grantee {
                conductor: t.holder,
                task_id: t.task_id,
                ticket: *ticket,
                epoch: t.epoch,
                node: None,
            }
        });
        Release {
            granted_to,
            skipped_waiters: skipped,
        }
    }

    fn record_change(st: &mut State, node: Uuid, kind: ChangeKind, now: i64) -> i64 {
        st.revision += 1;
        let revision = st.revision;
        let snapshot = match kind {
            ChangeKind::Deleted => None,
            _ => st.nodes.get_mut(&node).map(|n| {
                n.revision = revision;
                n.clone()
            }),
        };
        st.changes.push(NodeChange {
            revision,
            node,
            kind,
            at: DbTime(now),
            snapshot,
            resource: None,
        });
        revision
    }

    /// Stamp the next revision on resource `uuid` (unless deleted) and
    /// write its change-feed entry.
    fn record_resource_change(
        st: &mut State,
        kind: ResourceKind,
        uuid: Uuid,
        change: ChangeKind,
        now: i64,
    ) -> Option<Resource> {
        st.revision += 1;
        let revision = st.revision;
        let snapshot = match change {
            ChangeKind::Deleted => None,
            _ => st.resources.get_mut(&(kind, uuid)).map(|r| {
                r.revision = revision;
                r.clone()
            }),
        };
        st.changes.push(NodeChange {
            revision,
            node: uuid,
            kind: change,
            at: DbTime(now),
            snapshot: None,
            resource: Some(ResourceChange {
                kind,
                snapshot: snapshot.clone(),
            }),
        });
        snapshot
    }

    /// The unique fields of `r` against every other resource of its kind.
    fn check_resource_unique(st: &State, r: &Resource) -> StoreResult<()> {
        for other in st
            .resources
            .range((r.kind, Uuid::nil())..=(r.kind, Uuid::max()))
            .map(|(_, o)| o)
            .filter(|o| o.uuid != r.uuid)
        {
            if r.name.is_some() && other.name == r.name {
                return Err(StoreError::ResourceDuplicate {
                    kind: r.kind,
                    field: "name",
                    value: r.name.clone().unwrap_or_default(),
                });
            }
            if r.key.is_some() && other.key == r.key {
                return Err(StoreError::ResourceDuplicate {
                    kind: r.kind,
                    field: r.kind.key_field(),
                    value: r.key.clone().unwrap_or_default(),
                });
            }
        }
        Ok(())
    }

    fn find_resource(st: &State, kind: ResourceKind, ident: &NodeIdent) -> StoreResult<Resource> {
        let found = match ident {
            NodeIdent::Uuid(u) => st.resources.get(&(kind, *u)).cloned(),
            NodeIdent::Name(n) => st
                .resources
                .range((kind, Uuid::nil())..=(kind, Uuid::max()))
                .map(|(_, r)| r)
                .find(|r| r.name.as_deref() == Some(n.as_str()))
                .cloned(),
        };
        found.ok_or_else(|| StoreError::ResourceNotFound {
            kind,
            ident: ident.to_string(),
        })
    }

    fn waiter_views(&self, st: &State, node: Uuid, now: i64) -> Vec<WaiterView> {
        st.waiters
            .iter()
            .filter(|(_, w)| w.node == node)
            .map(|(ticket, w)| WaiterView {
                ticket: *ticket,
                conductor: w.conductor.clone(),
                task_id: w.task_id,
                purpose: w.purpose.clone(),
                enqueued_at: DbTime(w.enqueued_at),
                deadline: w.deadline.map(DbTime),
                live: self.live(st, now, w.deadline, &w.conductor),
            })
            .collect()
    }

    fn view(&self, st: &State, n: &Node, now: i64) -> LockView {
        let r = n.reservation.as_ref();
        LockView {
            node: n.uuid,
            node_name: n.name.clone(),
            provision_state: n.provision_state.as_str().to_string(),
            holder: r.map(|r| r.holder.clone()),
            task_id: r.map(|r| r.task_id),
            holder_online: r.map(|r| self.live(st, now, None, &r.holder)),
            purpose: r.map(|r| r.purpose.clone()),
            epoch: n.lock_epoch,
            held_ms: r.map(|r| (now - r.acquired_at.0).max(0) / 1000),
            waiters: self.waiter_views(st, n.uuid, now),
            now: DbTime(now),
        }
    }

    fn check_unique(st: &State, n: &Node) -> StoreResult<()> {
        for other in st.nodes.values().filter(|o| o.uuid != n.uuid) {
            if n.name.is_some() && other.name == n.name {
                return Err(StoreError::Duplicate {
                    field: "name",
                    value: n.name.clone().unwrap_or_default(),
                });
            }
            if n.instance_uuid.is_some() && other.instance_uuid == n.instance_uuid {
                return Err(StoreError::Duplicate {
                    field: "instance_uuid",
                    value: String::new(),
                });
            }
        }
        Ok(())
    }

    fn conductor_event(&self, hostname: &str, online: bool, heartbeat: bool, now: i64) {
        self.emit(LockEvent::Conductor {
            hostname: hostname.to_string(),
            online,
            heartbeat,
            at: DbTime(now),
        });
    }
}

fn query_matches(q: &NodeQuery, n: &Node) -> bool {
    let a = &n.attrs;
    let same = |want: &Option<String>, have: &Option<String>| {
        want.as_ref().is_none_or(|w| have.as_ref() == Some(w))
    };
    q.provision_state
        .as_deref()
        .is_none_or(|s| n.provision_state.as_str() == s)
        && q.driver.as_deref().is_none_or(|d| n.driver == d)
        && q.conductor_group
            .as_deref()
            .is_none_or(|g| n.conductor_group == g.to_ascii_lowercase())
        && q.maintenance.is_none_or(|m| n.maintenance == m)
        && q.reserved.is_none_or(|r| n.reservation.is_some() == r)
        && q.associated.is_none_or(|x| n.instance_uuid.is_some() == x)
        && same(&q.resource_class, &a.resource_class)
        && same(&q.owner, &a.owner)
        && same(&q.lessee, &a.lessee)
        && same(&q.fault, &a.fault)
        && same(&q.instance_name, &a.instance_name)
        && q.shards
            .as_ref()
            .is_none_or(|s| a.shard.as_ref().is_some_and(|x| s.contains(x)))
        && q.sharded.is_none_or(|x| a.shard.is_some() == x)
        && q.retired.is_none_or(|r| a.retired == r)
        && q.instance_uuid.is_none_or(|u| n.instance_uuid == Some(u))
        && q.chassis_uuid.is_none_or(|u| a.chassis_uuid == Some(u))
        && q.parent_node.is_none_or(|p| a.parent_node == Some(p))
        && !(q.hide_children && a.parent_node.is_some())
        && q.uuid_in.as_ref().is_none_or(|u| u.contains(&n.uuid))
        && q.with_power_state
            .is_none_or(|w| n.power_state.is_some() == w)
        && q.project
            .as_ref()
            .is_none_or(|p| a.owner.as_ref() == Some(p) || a.lessee.as_ref() == Some(p))
        && q.description_contains.as_ref().is_none_or(|t| {
            a.description
                .as_ref()
                .is_some_and(|d| d.contains(t.as_str()))
        })
}

/// A node's place in the order `sort`: missing values after all others
/// (ascending), then the value, then the UUID.
fn sort_tuple(sort: &NodeSort, n: &Node) -> (bool, Option<SortValue>, Uuid) {
    let v = node_sort_value(n, sort.key);
    (v.is_none(), v, n.uuid)
}

/// The page of `q` from `nodes`, in `q.sort` order after `q.marker`.
fn list_page(nodes: &BTreeMap<Uuid, Node>, q: &NodeQuery) -> Vec<Node> {
    let limit = q.limit.map_or(usize::MAX, |l| l as usize);
    let after = q.marker.map(|m| match nodes.get(&m) {
        Some(marker) => sort_tuple(&q.sort, marker),
        None => (true, None, m),
    });
    let mut page: Vec<(_, &Node)> = nodes
        .values()
        .filter(|n| query_matches(q, n))
        .map(|n| (sort_tuple(&q.sort, n), n))
        .filter(|(t, _)| match &after {
            None => true,
            Some(m) if q.sort.descending => t < m,
            Some(m) => t > m,
        })
        .collect();
    page.sort_by(|x, y| x.0.cmp(&y.0));
    if q.sort.descending {
        page.reverse();
    }
    page.into_iter()
        .take(limit)
        .map(|(_, n)| n.clone())
        .collect()
}

#[async_trait]
impl Store for MemoryStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn now(&self) -> StoreResult<DbTime> {
        self.enter(Op::Now).await?;
        Ok(DbTime(self.now_us()))
    }

    async fn create_node(&self, mut new: NewNode) -> StoreResult<Node> {
        self.enter(Op::CreateNode).await?;
        new.validate()
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        let uuid = new.uuid.unwrap_or_else(Uuid::new_v4);
        let mut st = guard(&self.state);
        let now = self.now_us();
        if st.nodes.contains_key(&uuid) {
            return Err(StoreError::Duplicate {
                field: "uuid",
                value: uuid.to_string(),
            });
        }
        let node = Node {
            uuid,
            name: new.name,
            driver: new.driver,
            driver_info: new.driver_info,
            properties: new.properties,
            extra: new.extra,
            instance_info: new.instance_info,
            instance_uuid: new.instance_uuid,
            interfaces: new.interfaces,
            driver_internal_info: Default::default(),
            clean_step: Default::default(),
            deploy_step: Default::default(),
            provision_state: new.provision_state.unwrap_or(ProvisionState::Enroll),
            target_provision_state: None,
            power_state: None,
            target_power_state: None,
            maintenance: new.maintenance,
            maintenance_reason: None,
            last_error: None,
            conductor_group: new.conductor_group,
            conductor_affinity: None,
            reservation: None,
            lock_epoch: 0,
            lock_waiters: 0,
            revision: 0,
            created_at: DbTime(now),
            updated_at: Some(DbTime(now)),
            provision_updated_at: Some(DbTime(now)),
            attrs: new.attrs,
        };
        Self::check_unique(&st, &node)?;
        st.nodes.insert(uuid, node);
        Self::record_change(&mut st, uuid, ChangeKind::Created, now);
        st.nodes
            .get(&uuid)
            .cloned()
            .ok_or_else(|| StoreError::NodeNotFound(uuid.to_string()))
    }

    async fn get_node(&self, ident: &NodeIdent) -> StoreResult<Node> {
        self.enter(Op::GetNode).await?;
        let st = guard(&self.state);
        let found = match ident {
            NodeIdent::Uuid(u) => st.nodes.get(u),
            NodeIdent::Name(name) => st
                .nodes
                .values()
                .find(|n| n.name.as_deref() == Some(name.as_str())),
        };
        found
            .cloned()
            .ok_or_else(|| StoreError::NodeNotFound(ident.to_string()))
    }

    async fn list_nodes(&self, q: &NodeQuery) -> StoreResult<NodePage> {
        self.enter(Op::ListNodes).await?;
        let st = guard(&self.state);
        if node_sort_key(q.sort.key).is_none() {
            return Err(StoreError::Invalid(format!(
                "nodes cannot be sorted by {:?}",
                q.sort.key
            )));
        }
        let nodes = list_page(&st.nodes, q);
        Ok(NodePage {
            nodes,
            revision: st.revision,
        })
    }

    async fn save_node(&self, token: &LockToken, n: &Node) -> StoreResult<Node> {
        self.enter(Op::SaveNode).await?;
        if n.uuid != token.node {
            return Err(StoreError::Invalid(
                "a node's uuid cannot be changed".into(),
            ));
        }
        if let Some(name) = &n.name {
            ferric_core::node::validate_name(name)
                .map_err(|e| StoreError::Invalid(e.to_string()))?;
        }
        let group = ferric_core::node::normalize_conductor_group(&n.conductor_group)
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        let mut attrs = n.attrs.clone();
        attrs
            .validate()
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        let unfenced = planted!(self, UnfencedWrite);
        let mut st = guard(&self.state);
        let now = self.now_us();
        let current = st.nodes.get(&token.node).map(|c| c.reservation.clone());
        match current {
            None => return Err(StoreError::NodeNotFound(token.node.to_string())),
            Some(r) if !unfenced && !matches(r.as_ref(), token) => {
                return Err(Self::fenced_error(&st, token));
            }
            Some(_) => {}
        }
        Self::check_unique(&st, n)?;
        let Some(stored) = st.nodes.get_mut(&token.node) else {
            return Err(StoreError::NodeNotFound(token.node.to_string()));
        };
        let error_event = match &n.last_error {
            Some(e) if !e.is_empty() && stored.last_error.as_ref() != Some(e) => {
                Some(HistoryEvent {
                    uuid: Uuid::new_v4(),
                    node: token.node,
                    created_at: DbTime(now),
                    conductor: Some(token.holder.clone()),
                    event_type: Some(
                        history_event_type(stored.provision_state.as_str()).to_string(),
                    ),
                    severity: Some("ERROR".into()),
                    event: e.clone(),
                    user: None,
                    project: None,
                    state: Some(n.provision_state.as_str().to_string()),
                    target_provision_state: n
                        .target_provision_state
                        .map(|s| s.as_str().to_string()),
                    duration_seconds: duration_since(stored.provision_updated_at, now),
                })
            }
            _ => None,
        };
        // A node saved without provision_updated_at asks for a touch.
        if stored.provision_state != n.provision_state || n.provision_updated_at.is_none() {
            stored.provision_updated_at = Some(DbTime(now));
        }
        stored.name = n.name.clone();
        stored.driver = n.driver.clone();
        stored.driver_info = n.driver_info.clone();
        stored.properties = n.properties.clone();
        stored.extra = n.extra.clone();
        stored.instance_info = n.instance_info.clone();
        stored.instance_uuid = n.instance_uuid;
        stored.interfaces = n.interfaces.clone();
        stored.driver_internal_info = n.driver_internal_info.clone();
        stored.clean_step = n.clean_step.clone();
        stored.deploy_step = n.deploy_step.clone();
        stored.provision_state = n.provision_state;
        stored.target_provision_state = n.target_provision_state;
        stored.power_state = n.power_state;
        stored.target_power_state = n.target_power_state;
        stored.maintenance = n.maintenance;
        stored.maintenance_reason = n.maintenance_reason.clone();
        stored.last_error = n.last_error.clone();
        stored.conductor_group = group;
        stored.conductor_affinity = n.conductor_affinity.clone();
        stored.attrs = attrs;
        stored.updated_at = Some(DbTime(now));
        if let Some(e) = error_event {
            st.push_history(e);
        }
        let revision = Self::record_change(&mut st, token.node, ChangeKind::Updated, now);
        self.emit(LockEvent::Written {
            fence: Fence::from(token),
            deleted: false,
            revision,
            at: DbTime(now),
        });
        st.nodes
            .get(&token.node)
            .cloned()
            .ok_or_else(|| StoreError::NodeNotFound(token.node.to_string()))
    }

    async fn record_power_states(&self, observed: &[PowerObservation]) -> StoreResult<Vec<Node>> {
        self.enter(Op::RecordPowerStates).await?;
        let unfenced = planted!(self, UnfencedObservation);
        let mut st = guard(&self.state);
        let now = self.now_us();
        let mut recorded = Vec::new();
        for o in observed {
            let Some(n) = st.nodes.get_mut(&o.node) else {
                continue;
            };
            let fenced_ok =
                n.reservation.is_none() && n.lock_epoch == o.lock_epoch && n.revision == o.revision;
            if !fenced_ok && !unfenced {
                continue;
            }
            n.power_state = Some(o.power_state);
            n.updated_at = Some(DbTime(now));
            let revision = Self::record_change(&mut st, o.node, ChangeKind::Updated, now);
            // Reported with the write, under the same mutex: the checker sees
            // it in linearization order with grants and fenced writes.
            self.emit(LockEvent::Observed {
                node: o.node,
                lock_epoch: o.lock_epoch,
                revision: o.revision,
                recorded: revision,
                at: DbTime(now),
            });
            if let Some(n) = st.nodes.get(&o.node) {
                recorded.push(n.clone());
            }
        }
        Ok(recorded)
    }

    async fn delete_node(&self, token: &LockToken) -> StoreResult<()> {
        self.enter(Op::DeleteNode).await?;
        let unfenced = planted!(self, UnfencedWrite);
        let mut st = guard(&self.state);
        let now = self.now_us();
        let fenced_ok = st
            .nodes
            .get(&token.node)
            .is_some_and(|n| unfenced || matches(n.reservation.as_ref(), token));
        if !fenced_ok {
            return Err(Self::fenced_error(&st, token));
        }
        st.nodes.remove(&token.node);
        let owned: Vec<(ResourceKind, Uuid)> = st
            .resources
            .iter()
            .filter(|(_, r)| r.node == Some(token.node))
            .map(|(k, _)| *k)
            .collect();
        for (kind, uuid) in owned {
            st.resources.remove(&(kind, uuid));
            Self::record_resource_change(&mut st, kind, uuid, ChangeKind::Deleted, now);
        }
        st.data.remove(&token.node);
        let gone: Vec<i64> = st
            .waiters
            .iter()
            .filter(|(_, w)| w.node == token.node)
            .map(|(k, _)| *k)
            .collect();
        for ticket in gone {
            st.waiters.remove(&ticket);
            self.emit(LockEvent::WaiterLeft {
                node: token.node,
                ticket,
                exit: WaiterExit::NodeDeleted,
                at: DbTime(now),
            });
        }
        let revision = Self::record_change(&mut st, token.node, ChangeKind::Deleted, now);
        self.emit(LockEvent::Written {
            fence: Fence::from(token),
            deleted: true,
            revision,
            at: DbTime(now),
        });
        Ok(())
    }

    async fn changes_since(&self, since: i64, limit: u32) -> StoreResult<Vec<NodeChange>> {
        self.enter(Op::ChangesSince).await?;
        let st = guard(&self.state);
        Ok(st
            .changes
            .iter()
            .filter(|c| c.revision > since)
            .take(limit as usize)
            .cloned()
            .collect())
    }

    async fn create_resource(&self, kind: ResourceKind, new: NewResource) -> StoreResult<Resource> {
        self.enter(Op::CreateResource).await?;
        let uuid = new.uuid.unwrap_or_else(Uuid::new_v4);
        let mut st = guard(&self.state);
        let now = self.now_us();
        if st.resources.contains_key(&(kind, uuid)) {
            return Err(StoreError::ResourceDuplicate {
                kind,
                field: "uuid",
                value: uuid.to_string(),
            });
        }
        let r = Resource {
            kind,
            uuid,
            name: new.name,
            node: new.node,
            parent: new.parent,
            key: new.key,
            body: new.body,
            created_at: DbTime(now),
            updated_at: None,
            revision: 0,
        };
        Self::check_resource_unique(&st, &r)?;
        if let Some(n) = r.node {
            if !st.nodes.contains_key(&n) {
                return Err(StoreError::NodeNotFound(n.to_string()));
            }
        }
        st.resources.insert((kind, uuid), r);
        Self::record_resource_change(&mut st, kind, uuid, ChangeKind::Created, now)
            .ok_or_else(|| StoreError::Corrupt("a resource vanished while it was created".into()))
    }

    async fn get_resource(&self, kind: ResourceKind, ident: &NodeIdent) -> StoreResult<Resource> {
        self.enter(Op::GetResource).await?;
        let st = guard(&self.state);
        Self::find_resource(&st, kind, ident)
    }

    async fn list_resources(&self, q: &ResourceQuery) -> StoreResult<Vec<Resource>> {
        self.enter(Op::ListResources).await?;
        let st = guard(&self.state);
        let marker = q
            .marker
            .map(|m| Self::find_resource(&st, q.kind, &NodeIdent::Uuid(m)))
            .transpose()?
            .map(|m| q.sort_value(&m));
        let mut out: Vec<(_, Resource)> = st
            .resources
            .range((q.kind, Uuid::nil())..=(q.kind, Uuid::max()))
            .map(|(_, r)| r)
            .filter(|r| q.matches_own(r))
            .filter(|r| {
                q.node_conductor_groups.as_ref().is_none_or(|groups| {
                    r.node
                        .and_then(|n| st.nodes.get(&n))
                        .is_some_and(|n| groups.contains(&n.conductor_group))
                })
            })
            .filter(|r| {
                q.node_shards.as_ref().is_none_or(|shards| {
                    r.node
                        .and_then(|n| st.nodes.get(&n))
                        .and_then(|n| n.attrs.shard.as_ref())
                        .is_some_and(|s| shards.contains(s))
                })
            })
            .map(|r| (q.sort_value(r), r.clone()))
            .filter(|(v, _)| {
                marker
                    .as_ref()
                    .is_none_or(|m| if q.descending { v < m } else { v > m })
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        if q.descending {
            out.reverse();
        }
        let limit = q.limit.map_or(usize::MAX, |l| l as usize);
        Ok(out.into_iter().take(limit).map(|(_, r)| r).collect())
    }

    async fn update_resource(&self, r: &Resource) -> StoreResult<Resource> {
        self.enter(Op::UpdateResource).await?;
        let mut st = guard(&self.state);
        let now = self.now_us();
        let current = Self::find_resource(&st, r.kind, &NodeIdent::Uuid(r.uuid))?;
        if current.revision != r.revision {
            return Err(StoreError::ResourceChanged {
                kind: r.kind,
                uuid: r.uuid,
                expected: r.revision,
            });
        }
        Self::check_resource_unique(&st, r)?;
        if let Some(n) = r.node {
            if !st.nodes.contains_key(&n) {
                return Err(StoreError::NodeNotFound(n.to_string()));
            }
        }
        let mut next = r.clone();
        next.created_at = current.created_at;
        next.updated_at = Some(DbTime(now));
        st.resources.insert((r.kind, r.uuid), next);
        Self::record_resource_change(&mut st, r.kind, r.uuid, ChangeKind::Updated, now)
            .ok_or_else(|| StoreError::Corrupt("a resource vanished while it was updated".into()))
    }

    async fn delete_resource(
        &self,
        kind: ResourceKind,
        uuid: Uuid,
        revision: Option<i64>,
    ) -> StoreResult<()> {
        self.enter(Op::DeleteResource).await?;
        let mut st = guard(&self.state);
        let now = self.now_us();
        let current = Self::find_resource(&st, kind, &NodeIdent::Uuid(uuid))?;
        if let Some(rev) = revision {
            if current.revision != rev {
                return Err(StoreError::ResourceChanged {
                    kind,
                    uuid,
                    expected: rev,
                });
            }
        }
        st.resources.remove(&(kind, uuid));
        Self::record_resource_change(&mut st, kind, uuid, ChangeKind::Deleted, now);
        Ok(())
    }

    async fn bind_allocation(
        &self,
        token: &LockToken,
        allocation: Uuid,
    ) -> StoreResult<(Node, Resource)> {
        self.enter(Op::UpdateResource).await?;
        let mut st = guard(&self.state);
        let now = self.now_us();
        let node = st.fenced(token)?.clone();
        let kind = ResourceKind::Allocation;
        let alloc = Self::find_resource(&st, kind, &NodeIdent::Uuid(allocation))?;
        if alloc.node.is_some()
            || alloc.body.get("state").and_then(serde_json::Value::as_str) != Some("allocating")
        {
            return Err(StoreError::ResourceChanged {
                kind,
                uuid: allocation,
                expected: alloc.revision,
            });
        }
        let taken = node
            .instance_uuid
            .filter(|i| *i != allocation)
            .or(node.attrs.allocation_uuid.filter(|a| *a != allocation));
        if let Some(instance) = taken {
            return Err(StoreError::NodeAssociated {
                node: node.uuid,
                instance: instance.to_string(),
            });
        }
        if st
            .nodes
            .values()
            .any(|n| n.uuid != node.uuid && n.instance_uuid == Some(allocation))
        {
            return Err(StoreError::Duplicate {
                field: "instance_uuid",
                value: allocation.to_string(),
            });
        }
        let Some(stored) = st.nodes.get_mut(&node.uuid) else {
            return Err(StoreError::NodeNotFound(node.uuid.to_string()));
        };
        stored.instance_uuid = Some(allocation);
        stored.attrs.allocation_uuid = Some(allocation);
        stored.instance_info.insert(
            "traits".into(),
            alloc
                .body
                .get("traits")
                .cloned()
                .unwrap_or(serde_json::json!([])),
        );
        stored.updated_at = Some(DbTime(now));
        let revision = Self::record_change(&mut st, node.uuid, ChangeKind::Updated, now);
        self.emit(LockEvent::Written {
            fence: Fence::from(token),
            deleted: false,
            revision,
            at: DbTime(now),
        });
        let mut next = alloc;
        next.node = Some(node.uuid);
        next.body
            .insert("state".into(), serde_json::json!("active"));
        next.body
            .insert("last_error".into(), serde_json::Value::Null);
        next.updated_at = Some(DbTime(now));
        st.resources.insert((kind, allocation), next);
        let stored =
            Self::record_resource_change(&mut st, kind, allocation, ChangeKind::Updated, now)
                .ok_or_else(|| {
                    StoreError::Corrupt("an allocation vanished while it was bound".into())
                })?;
        let node = st
            .nodes
            .get(&node.uuid)
            .cloned()
            .ok_or_else(|| StoreError::NodeNotFound(node.uuid.to_string()))?;
        Ok((node, stored))
    }

    async fn delete_allocation(
        &self,
        token: Option<&LockToken>,
        allocation: Uuid,
    ) -> StoreResult<()> {
        self.enter(Op::DeleteResource).await?;
        let mut st = guard(&self.state);
        let now = self.now_us();
        if let Some(t) = token {
            st.fenced(t)?;
        }
        let kind = ResourceKind::Allocation;
        let alloc = Self::find_resource(&st, kind, &NodeIdent::Uuid(allocation))?;
        if alloc.node != token.map(|t| t.node) {
            return Err(StoreError::ResourceChanged {
                kind,
                uuid: allocation,
                expected: alloc.revision,
            });
        }
        st.resources.remove(&(kind, allocation));
        Self::record_resource_change(&mut st, kind, allocation, ChangeKind::Deleted, now);
        if let (Some(node), Some(t)) = (alloc.node, token) {
            let cleared = match st.nodes.get_mut(&node) {
                Some(n) if n.attrs.allocation_uuid == Some(allocation) => {
                    n.instance_uuid = None;
                    n.attrs.allocation_uuid = None;
                    n.updated_at = Some(DbTime(now));
                    true
                }
                _ => false,
            };
            if cleared {
                let revision = Self::record_change(&mut st, node, ChangeKind::Updated, now);
                self.emit(LockEvent::Written {
                    fence: Fence::from(t),
                    deleted: false,
                    revision,
                    at: DbTime(now),
                });
            }
        }
        Ok(())
    }

    async fn try_acquire(&self, node: Uuid, claim: &Claim) -> StoreResult<LockToken> {
        self.enter(Op::TryAcquire).await?;
        self.try_grant(node, claim).map(|(t, _)| t)
    }

    async fn try_acquire_node(&self, node: Uuid, claim: &Claim) -> StoreResult<(LockToken, Node)> {
        self.enter(Op::TryAcquire).await?;
        self.try_grant(node, claim)
    }

    async fn subscribe_wakeups(&self, _conductor: &str) -> StoreResult<WakeSubscription> {
        self.enter(Op::SubscribeWakeups).await?;
        Ok(WakeSubscription::nothing())
    }

    async fn enqueue(
        &self,
        node: Uuid,
        claim: &Claim,
        wait: Option<Duration>,
        max_waiters: u32,
    ) -> StoreResult<Enqueued> {
        self.enter(Op::Enqueue).await?;
        let mut st = guard(&self.state);
        let now = self.now_us();
        let (free, waiters) = match st.nodes.get(&node) {
            None => return Err(StoreError::NodeNotFound(node.to_string())),
            Some(n) => (
                n.reservation.is_none() && n.lock_waiters == 0,
                n.lock_waiters,
            ),
        };
        if free {
            let t = self.grant(&mut st, node, claim, GrantVia::Enqueue, now);
            return Ok(Enqueued::Granted(t));
        }
        if waiters >= i64::from(max_waiters) {
            return Err(self.locked_error(&st, node, now, true));
        }
        let deadline =
            wait.map(|w| now.saturating_add(i64::try_from(w.as_micros()).unwrap_or(i64::MAX)));
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        st.waiters.insert(
            ticket,
            Waiter {
                node,
                conductor: claim.holder.clone(),
                task_id: claim.task_id,
                purpose: claim.purpose.clone(),
                enqueued_at: now,
                deadline,
            },
        );
        if let Some(n) = st.nodes.get_mut(&node) {
            n.lock_waiters += 1;
        }
        self.emit(LockEvent::Queued {
            node,
            ticket,
            conductor: claim.holder.clone(),
            task_id: claim.task_id,
            deadline: deadline.map(DbTime),
            at: DbTime(now),
        });
        Ok(Enqueued::Queued {
            ticket,
            position: waiters + 1,
        })
    }

    async fn poll_waiter(&self, node: Uuid, ticket: i64, task_id: Uuid) -> StoreResult<WaitStatus> {
        self.enter(Op::PollWaiter).await?;
        let st = guard(&self.state);
        let n = st
            .nodes
            .get(&node)
            .ok_or_else(|| StoreError::NodeNotFound(node.to_string()))?;
        if let Some(r) = n.reservation.as_ref().filter(|r| r.task_id == task_id) {
            return Ok(WaitStatus::Granted(token_of(node, r)));
        }
        Ok(if st.waiters.contains_key(&ticket) {
            WaitStatus::Waiting
        } else {
            WaitStatus::Gone
        })
    }

    async fn cancel_wait(
        &self,
        node: Uuid,
        ticket: i64,
        task_id: Uuid,
    ) -> StoreResult<Option<LockToken>> {
        self.enter(Op::CancelWait).await?;
        let mut st = guard(&self.state);
        let now = self.now_us();
        if !st.nodes.contains_key(&node) {
            return Ok(None);
        }
        let queued = st
            .waiters
            .get(&ticket)
            .is_some_and(|w| w.task_id == task_id);
        if queued {
            st.waiters.remove(&ticket);
            let waiter_node = st.nodes.get_mut(&node);
            if let Some(n) = waiter_node {
                n.lock_waiters -= 1;
                assert!(n.lock_waiters >= 0, "lock_waiters went negative");
            }
            self.emit(LockEvent::WaiterLeft {
                node,
                ticket,
                exit: WaiterExit::Cancelled,
                at: DbTime(now),
            });
            return Ok(None);
        }
        Ok(st.nodes.get(&node).and_then(|n| {
            n.reservation
                .as_ref()
                .filter(|r| r.task_id == task_id)
                .map(|r| token_of(node, r))
        }))
    }

    async fn release(&self, token: &LockToken) -> StoreResult<Release> {
        self.enter(Op::Release).await?;
        let unchecked = planted!(self, ReleaseWithoutHolderCheck);
        let mut st = guard(&self.state);
        let now = self.now_us();
        let ok = match st.nodes.get(&token.node) {
            None => return Err(StoreError::NodeNotFound(token.node.to_string())),
            Some(n) => {
                matches(n.reservation.as_ref(), token) || (unchecked && n.reservation.is_some())
            }
        };
        if !ok {
            return Err(Self::not_locked(&st, token.node, token));
        }
        self.emit(LockEvent::Released {
            fence: Fence::from(token),
            at: DbTime(now),
        });
        Ok(self.unlock_and_handoff(&mut st, token.node, now))
    }

    async fn handoff(&self, token: &LockToken, to: &Claim) -> StoreResult<LockToken> {
        self.enter(Op::Handoff).await?;
        let mut st = guard(&self.state);
        let now = self.now_us();
        let held = st
            .nodes
            .get(&token.node)
            .is_some_and(|n| matches(n.reservation.as_ref(), token));
        if !held {
            return Err(Self::fenced_error(&st, token));
        }
        self.emit(LockEvent::Released {
            fence: Fence::from(token),
            at: DbTime(now),
        });
        if let Some(n) = st.nodes.get_mut(&token.node) {
            n.reservation = None;
        }
        Ok(self.grant(&mut st, token.node, to, GrantVia::Handoff, now))
    }

    async fn break_lock(
        &self,
        node: Uuid,
        expected: &LockToken,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<Release> {
        self.enter(Op::BreakLock).await?;
        let mut st = guard(&self.state);
        let now = self.now_us();
        let purpose = match st.nodes.get(&node) {
            None => return Err(StoreError::NodeNotFound(node.to_string())),
            Some(n) if matches(n.reservation.as_ref(), expected) => {
                n.reservation.as_ref().map(|r| r.purpose.clone())
            }
            Some(_) => return Err(Self::not_locked(&st, node, expected)),
        };
        if let Some(a) = audit {
            let id = st.audit.len() as i64 + 1;
            st.audit.push(AuditRecord {
                id,
                node,
                action: a.action.clone(),
                actor: a.actor.clone(),
                reason: a.reason.clone(),
                previous_holder: Some(expected.holder.clone()),
                previous_epoch: expected.epoch,
                previous_purpose: purpose,
                at: DbTime(now),
            });
        }
        self.emit(LockEvent::Broken {
            fence: Fence {
                node,
                ..Fence::from(expected)
            },
            at: DbTime(now),
        });
        Ok(self.unlock_and_handoff(&mut st, node, now))
    }

    async fn record_audit(&self, previous: &LockToken, entry: &AuditEntry) -> StoreResult<()> {
        self.enter(Op::RecordAudit).await?;
        let mut st = guard(&self.state);
        let now = self.now_us();
        let id = st.audit.len() as i64 + 1;
        st.audit.push(AuditRecord {
            id,
            node: previous.node,
            action: entry.action.clone(),
            actor: entry.actor.clone(),
            reason: entry.reason.clone(),
            previous_holder: Some(previous.holder.clone()),
            previous_epoch: previous.epoch,
            previous_purpose: Some(previous.purpose.clone()),
            at: DbTime(now),
        });
        Ok(())
    }

    async fn lock_view(&self, node: Uuid) -> StoreResult<LockView> {
        self.enter(Op::LockView).await?;
        let st = guard(&self.state);
        let now = self.now_us();
        let n = st
            .nodes
            .get(&node)
            .ok_or_else(|| StoreError::NodeNotFound(node.to_string()))?;
        Ok(self.view(&st, n, now))
    }

    async fn list_locks(&self) -> StoreResult<Vec<LockView>> {
        self.enter(Op::ListLocks).await?;
        let st = guard(&self.state);
        let now = self.now_us();
        Ok(st
            .nodes
            .values()
            .filter(|n| n.reservation.is_some() || n.lock_waiters > 0)
            .map(|n| self.view(&st, n, now))
            .collect())
    }

    async fn list_audit(&self, limit: u32) -> StoreResult<Vec<AuditRecord>> {
        self.enter(Op::ListAudit).await?;
        let st = guard(&self.state);
        let skip = st.audit.len().saturating_sub(limit as usize);
        Ok(st.audit[skip..].to_vec())
    }

    async fn register_conductor(&self, c: &ConductorInfo) -> StoreResult<()> {
        self.enter(Op::RegisterConductor).await?;
        let mut st = guard(&self.state);
        let now = self.now_us();
        st.conductors.insert(
            c.hostname.clone(),
            Conductor {
                group: c.conductor_group.to_ascii_lowercase(),
                drivers: c.drivers.clone(),
                online: true,
                started_at: now,
                heartbeat_at: now,
            },
        );
        self.conductor_event(&c.hostname, true, true, now);
        Ok(())
    }

    async fn heartbeat(&self, hostname: &str) -> StoreResult<()> {
        self.enter(Op::Heartbeat).await?;
        let mut st = guard(&self.state);
        let now = self.now_us();
        let online = match st.conductors.get_mut(hostname) {
            None => return Err(StoreError::ConductorNotFound(hostname.to_string())),
            Some(c) => {
                c.heartbeat_at = now;
                c.online
            }
        };
        self.conductor_event(hostname, online, true, now);
        Ok(())
    }

    async fn unregister_conductor(&self, hostname: &str) -> StoreResult<()> {
        self.enter(Op::UnregisterConductor).await?;
        let mut st = guard(&self.state);
        let now = self.now_us();
        match st.conductors.get_mut(hostname) {
            None => return Err(StoreError::ConductorNotFound(hostname.to_string())),
            Some(c) => c.online = false,
        }
        self.conductor_event(hostname, false, false, now);
        Ok(())
    }

    async fn shard_counts(&self) -> StoreResult<Vec<(Option<String>, i64)>> {
        self.enter(Op::ListNodes).await?;
        let st = guard(&self.state);
        let mut by_shard: BTreeMap<Option<String>, i64> = BTreeMap::new();
        for n in st.nodes.values() {
            *by_shard.entry(n.attrs.shard.clone()).or_default() += 1;
        }
        let mut counts: Vec<_> = by_shard.into_iter().collect();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Ok(counts)
    }

    async fn list_conductors(&self) -> StoreResult<Vec<ConductorRow>> {
        self.enter(Op::ListConductors).await?;
        let st = guard(&self.state);
        let now = self.now_us();
        Ok(st
            .conductors
            .iter()
            .map(|(hostname, c)| ConductorRow {
                hostname: hostname.clone(),
                conductor_group: c.group.clone(),
                drivers: c.drivers.clone(),
                online: c.online,
                alive: self.live(&st, now, None, hostname),
                started_at: DbTime(c.started_at),
                heartbeat_at: DbTime(c.heartbeat_at),
                heartbeat_age_ms: (now - c.heartbeat_at).max(0) / 1000,
            })
            .collect())
    }

    // ----- node data (history, BIOS, firmware, inventory) -------------------

    async fn add_node_history(
        &self,
        token: &LockToken,
        ev: &NewHistoryEvent,
    ) -> StoreResult<HistoryEvent> {
        let mut st = guard(&self.state);
        let now = self.now_us();
        let n = st.fenced(token)?;
        let event = HistoryEvent {
            uuid: Uuid::new_v4(),
            node: token.node,
            created_at: DbTime(now),
            conductor: Some(token.holder.clone()),
            event_type: Some(ev.event_type.clone().unwrap_or_else(|| "UNKNOWN".into())),
            severity: Some(ev.severity.clone().unwrap_or_else(|| "INFO".into())),
            event: ev.event.clone(),
            user: ev.user.clone(),
            project: ev.project.clone(),
            state: Some(n.provision_state.as_str().to_string()),
            target_provision_state: n.target_provision_state.map(|s| s.as_str().to_string()),
            duration_seconds: duration_since(n.provision_updated_at, now),
        };
        st.push_history(event.clone());
        Ok(event)
    }

    async fn list_node_history(
        &self,
        node: Uuid,
        q: &HistoryQuery,
    ) -> StoreResult<Vec<HistoryEvent>> {
        let st = guard(&self.state);
        if !st.nodes.contains_key(&node) {
            return Err(StoreError::NodeNotFound(node.to_string()));
        }
        let mut all: Vec<HistoryEvent> = st
            .data
            .get(&node)
            .map(|d| d.history.clone())
            .unwrap_or_default();
        if q.descending {
            all.reverse();
        }
        let start = match q.marker {
            None => 0,
            Some(m) => match all.iter().position(|e| e.uuid == m) {
                Some(i) => i + 1,
                None => {
                    return Err(StoreError::Invalid(format!(
                        "Node history record {m} could not be found."
                    )))
                }
            },
        };
        let limit = q.limit.map_or(usize::MAX, |l| l as usize);
        Ok(all.into_iter().skip(start).take(limit).collect())
    }

    async fn get_node_history(&self, node: Uuid, event: Uuid) -> StoreResult<Option<HistoryEvent>> {
        let st = guard(&self.state);
        Ok(st
            .data
            .get(&node)
            .and_then(|d| d.history.iter().find(|e| e.uuid == event).cloned()))
    }

    async fn set_bios_settings(
        &self,
        token: &LockToken,
        settings: &[BiosSetting],
    ) -> StoreResult<()> {
        let mut st = guard(&self.state);
        let now = DbTime(self.now_us());
        st.fenced(token)?;
        let data = st.data.entry(token.node).or_default();
        let mut next = BTreeMap::new();
        for s in settings {
            let mut s = s.clone();
            match data.bios.get(&s.name) {
                Some(old) => {
                    s.created_at = old.created_at;
                    s.updated_at = Some(now);
                }
                None => {
                    s.created_at = Some(now);
                    s.updated_at = None;
                }
            }
            next.insert(s.name.clone(), s);
        }
        data.bios = next;
        Ok(())
    }

    async fn list_bios_settings(&self, node: Uuid) -> StoreResult<Vec<BiosSetting>> {
        let st = guard(&self.state);
        if !st.nodes.contains_key(&node) {
            return Err(StoreError::NodeNotFound(node.to_string()));
        }
        Ok(st
            .data
            .get(&node)
            .map(|d| d.bios.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn set_firmware_components(
        &self,
        token: &LockToken,
        components: &[FirmwareComponent],
    ) -> StoreResult<()> {
        let mut st = guard(&self.state);
        let now = DbTime(self.now_us());
        st.fenced(token)?;
        let data = st.data.entry(token.node).or_default();
        let mut next = BTreeMap::new();
        for c in components {
            let mut c = c.clone();
            match data.firmware.get(&c.component) {
                Some(old) => {
                    c.created_at = old.created_at;
                    c.updated_at = Some(now);
                }
                None => {
                    c.created_at = Some(now);
                    c.updated_at = None;
                }
            }
            next.insert(c.component.clone(), c);
        }
        data.firmware = next;
        Ok(())
    }

    async fn list_firmware_components(&self, node: Uuid) -> StoreResult<Vec<FirmwareComponent>> {
        let st = guard(&self.state);
        if !st.nodes.contains_key(&node) {
            return Err(StoreError::NodeNotFound(node.to_string()));
        }
        Ok(st
            .data
            .get(&node)
            .map(|d| d.firmware.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn set_node_inventory(
        &self,
        token: &LockToken,
        inventory: &serde_json::Value,
        plugin_data: &serde_json::Value,
    ) -> StoreResult<()> {
        let mut st = guard(&self.state);
        let now = DbTime(self.now_us());
        st.fenced(token)?;
        let data = st.data.entry(token.node).or_default();
        let (created_at, updated_at) = match &data.inventory {
            Some(old) => (old.created_at, Some(now)),
            None => (now, None),
        };
        data.inventory = Some(NodeInventory {
            inventory: inventory.clone(),
            plugin_data: plugin_data.clone(),
            created_at,
            updated_at,
        });
        Ok(())
    }

    async fn get_node_inventory(&self, node: Uuid) -> StoreResult<Option<NodeInventory>> {
        let st = guard(&self.state);
        Ok(st.data.get(&node).and_then(|d| d.inventory.clone()))
    }
}

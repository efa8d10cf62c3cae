//! The checkers: a model of the lock protocol fed by the store's linearized
//! events, and the invariants checked against it.
//!
//! The model does not trust the store. Every event is validated against what
//! the model says the lock and queue are at that moment (safety: one holder,
//! fencing, FIFO, power states recorded without the lock only when nobody
//! took the lock or wrote the node since it was read);
//! [`Model::check_state`] compares the stored rows with the
//! model and checks the queue invariants of `conformance::check_lock_invariants`;
//! the world adds liveness checks that need to know which conductors run.

use ferric_core::Node;
use ferric_store::memory::{Fence, GrantVia, LockEvent, WaiterExit};
use ferric_store::WaiterView;
use serde_json::json;
use std::collections::BTreeMap;
use uuid::Uuid;

/// A broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Simulated milliseconds since the start of the run.
    pub at_ms: u64,
    /// Which invariant (a stable name).
    pub invariant: &'static str,
    pub detail: String,
}

impl Violation {
    /// As JSON for the batch report.
    pub fn to_json(&self, seed: u64) -> serde_json::Value {
        json!({"seed": seed, "at_ms": self.at_ms, "invariant": self.invariant, "detail": self.detail})
    }
}

/// A held lock as the model sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub fence: Fence,
    pub purpose: String,
    /// Database clock of the grant (µs).
    pub at_us: i64,
}

#[derive(Debug, Clone)]
struct QueuedWaiter {
    conductor: String,
    deadline_us: Option<i64>,
}

#[derive(Debug, Clone, Default)]
struct NodeModel {
    held: Option<Held>,
    epoch: i64,
    /// The node's revision after its last write (fenced or observed).
    revision: i64,
    queue: BTreeMap<i64, QueuedWaiter>,
}

#[derive(Debug, Clone, Copy)]
struct ConductorModel {
    online: bool,
    heartbeat_us: i64,
}

/// The model of every node's lock and queue, and of conductor liveness.
#[derive(Debug)]
pub struct Model {
    timeout_us: i64,
    /// Database clock at the start of the run (for `at_ms`).
    origin_us: i64,
    nodes: BTreeMap<Uuid, NodeModel>,
    conductors: BTreeMap<String, ConductorModel>,
    last_ticket: i64,
    /// Stable names for task ids, by first appearance.
    labels: BTreeMap<Uuid, String>,
    pub violations: Vec<Violation>,
    /// Lines describing each event (with stable labels).
    pub trace: Vec<String>,
    /// Keep `trace` (replay) or only hash it (batch).
    pub keep_trace: bool,
    /// FNV-1a over every trace line.
    pub hash: u64,
}

impl Model {
    /// A model for `nodes` as stored (all unlocked) with the store's
    /// heartbeat timeout.
    pub fn new(nodes: &[Node], timeout_us: i64, origin_us: i64, keep_trace: bool) -> Self {
        let model = |n: &Node| NodeModel {
            epoch: n.lock_epoch,
            revision: n.revision,
            ..Default::default()
        };
        Model {
            timeout_us,
            origin_us,
            nodes: nodes.iter().map(|n| (n.uuid, model(n))).collect(),
            conductors: BTreeMap::new(),
            last_ticket: 0,
            labels: BTreeMap::new(),
            violations: Vec::new(),
            trace: Vec::new(),
            keep_trace,
            hash: 0xcbf2_9ce4_8422_2325,
        }
    }

    fn ms(&self, at_us: i64) -> u64 {
        u64::try_from((at_us - self.origin_us).max(0) / 1000).unwrap_or(0)
    }

    /// Record a line of the trace.
    pub fn line(&mut self, at_us: i64, text: String) {
        let line = format!("{:>9.3} {text}", (at_us - self.origin_us) as f64 / 1e6);
        for b in line.bytes().chain([b'\n']) {
            self.hash ^= u64::from(b);
            self.hash = self.hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        if self.keep_trace {
            self.trace.push(line);
        }
    }

    /// Report a broken invariant.
    pub fn violate(&mut self, at_us: i64, invariant: &'static str, detail: String) {
        self.line(at_us, format!("VIOLATION {invariant}: {detail}"));
        self.violations.push(Violation {
            at_ms: self.ms(at_us),
            invariant,
            detail,
        });
    }

    /// The stable label of a task id ("c1.t7").
    pub fn label(&mut self, conductor: &str, task: Uuid) -> String {
        let next = self.labels.len();
        self.labels
            .entry(task)
            .or_insert_with(|| format!("{conductor}.t{next}"))
            .clone()
    }

    fn fence_str(&mut self, f: &Fence) -> String {
        let l = self.label(&f.holder, f.task_id);
        format!("{l}@e{}", f.epoch)
    }

    /// Whether the model judges `conductor` alive at `at_us` (same rule as
    /// the store: online and heartbeat within the timeout).
    pub fn alive(&self, conductor: &str, at_us: i64) -> bool {
        self.conductors
            .get(conductor)
            .is_some_and(|c| c.online && c.heartbeat_us >= at_us - self.timeout_us)
    }

    /// Since when (database clock) `conductor` is dead, if it is.
    pub fn dead_since(&self, conductor: &str, at_us: i64) -> Option<i64> {
        match self.conductors.get(conductor) {
            None => Some(self.origin_us),
            Some(c) if !c.online => Some(c.heartbeat_us.min(at_us)),
            Some(c) if c.heartbeat_us < at_us - self.timeout_us => {
                Some(c.heartbeat_us + self.timeout_us)
            }
            Some(_) => None,
        }
    }

    /// The lock of `node` as the model sees it.
    pub fn held(&self, node: Uuid) -> Option<&Held> {
        self.nodes.get(&node).and_then(|n| n.held.as_ref())
    }

    /// Every held lock.
    pub fn held_all(&self) -> Vec<Held> {
        self.nodes.values().filter_map(|n| n.held.clone()).collect()
    }

    /// Number of queued waiters over all nodes.
    pub fn queued(&self) -> usize {
        self.nodes.values().map(|n| n.queue.len()).sum()
    }

    fn waiter_live(&self, w: &QueuedWaiter, at_us: i64) -> bool {
        w.deadline_us.is_none_or(|d| d > at_us) && self.alive(&w.conductor, at_us)
    }

    /// Validate one event against the model, then apply it.
    pub fn apply(&mut self, e: &LockEvent) {
        match e {
            LockEvent::Granted {
                fence,
                purpose,
                via,
                at,
            } => self.granted(fence, purpose, *via, at.0),
            LockEvent::Released { fence, at } => self.ended(fence, at.0, "released"),
            LockEvent::Broken { fence, at } => self.ended(fence, at.0, "broken"),
            LockEvent::Written {
                fence,
                deleted,
                revision,
                at,
            } => self.written(fence, *deleted, *revision, at.0),
            LockEvent::Observed {
                node,
                lock_epoch,
                revision,
                recorded,
                at,
            } => self.observed(*node, *lock_epoch, *revision, *recorded, at.0),
            LockEvent::Queued {
                node,
                ticket,
                conductor,
                task_id,
                deadline,
                at,
            } => {
                let l = self.label(conductor, *task_id);
                self.line(
                    at.0,
                    format!("queue   {l} ticket {ticket} node {}", short(*node)),
                );
                if *ticket <= self.last_ticket {
                    self.violate(
                        at.0,
                        "tickets-monotonic",
                        format!("ticket {ticket} after {}", self.last_ticket),
                    );
                }
                self.last_ticket = self.last_ticket.max(*ticket);
                let w = QueuedWaiter {
                    conductor: conductor.clone(),
                    deadline_us: deadline.map(|d| d.0),
                };
                self.nodes
                    .entry(*node)
                    .or_default()
                    .queue
                    .insert(*ticket, w);
            }
            LockEvent::WaiterLeft {
                node,
                ticket,
                exit,
                at,
            } => self.waiter_left(*node, *ticket, *exit, at.0),
            LockEvent::Conductor {
                hostname,
                online,
                heartbeat,
                at,
            } => {
                let c = self
                    .conductors
                    .entry(hostname.clone())
                    .or_insert(ConductorModel {
                        online: *online,
                        heartbeat_us: at.0,
                    });
                c.online = *online;
                if *heartbeat {
                    c.heartbeat_us = at.0;
                }
            }
        }
    }

    fn granted(&mut self, fence: &Fence, purpose: &str, via: GrantVia, at: i64) {
        let f = self.fence_str(fence);
        self.line(
            at,
            format!(
                "grant   {f} node {} via {via:?} ({purpose})",
                short(fence.node)
            ),
        );
        let Some(n) = self.nodes.get(&fence.node).cloned() else {
            self.violate(at, "grant-existing-node", format!("{f} on an unknown node"));
            return;
        };
        if let Some(h) = &n.held {
            let other = self.fence_str(&h.fence.clone());
            self.violate(
                at,
                "one-holder",
                format!("{f} granted while {other} holds node {}", short(fence.node)),
            );
        }
        if fence.epoch != n.epoch + 1 {
            self.violate(at, "epoch-plus-one", format!("{f} after epoch {}", n.epoch));
        }
        match via {
            GrantVia::Try | GrantVia::Enqueue if !n.queue.is_empty() => {
                self.violate(
                    at,
                    "fifo-no-barging",
                    format!("{f} granted past {} queued waiters", n.queue.len()),
                );
            }
            GrantVia::Queue { ticket } => {
                if let Some(first) = n.queue.keys().next().filter(|t| **t < ticket) {
                    self.violate(
                        at,
                        "fifo-order",
                        format!("ticket {ticket} granted before live ticket {first}"),
                    );
                }
            }
            _ => {}
        }
        if let Some(m) = self.nodes.get_mut(&fence.node) {
            m.epoch = m.epoch.max(fence.epoch);
            m.held = Some(Held {
                fence: fence.clone(),
                purpose: purpose.to_string(),
                at_us: at,
            });
        }
    }

    fn ended(&mut self, fence: &Fence, at: i64, how: &'static str) {
        let f = self.fence_str(fence);
        self.line(at, format!("{how:<7} {f} node {}", short(fence.node)));
        let current = self.held(fence.node).map(|h| h.fence.clone());
        if current.as_ref() != Some(fence) {
            let cur = match current {
                Some(c) => self.fence_str(&c),
                None => "nobody".to_string(),
            };
            let invariant = if how == "broken" {
                "break-is-conditional"
            } else {
                "release-is-fenced"
            };
            self.violate(at, invariant, format!("{f} {how} the lock held by {cur}"));
        }
        if let Some(m) = self.nodes.get_mut(&fence.node) {
            m.held = None;
        }
    }

    fn written(&mut self, fence: &Fence, deleted: bool, revision: i64, at: i64) {
        let f = self.fence_str(fence);
        let what = if deleted { "delete" } else { "write" };
        self.line(at, format!("{what:<7} {f} node {}", short(fence.node)));
        let current = self.held(fence.node).map(|h| h.fence.clone());
        if current.as_ref() != Some(fence) {
            let cur = match current {
                Some(c) => self.fence_str(&c),
                None => "nobody".to_string(),
            };
            self.violate(
                at,
                "write-is-fenced",
                format!("{what} under stale token {f} accepted; the lock is held by {cur}"),
            );
        }
        if deleted {
            self.nodes.remove(&fence.node);
        } else if let Some(m) = self.nodes.get_mut(&fence.node) {
            m.revision = revision;
        }
    }

    /// A power state recorded without the lock, from a reading of the node
    /// at `lock_epoch` and `revision`: the same as taking the lock, writing
    /// and releasing with nobody in between only if nobody holds the lock
    /// now, nobody was granted it since (epoch) and nobody wrote the node
    /// since (revision).
    fn observed(&mut self, node: Uuid, lock_epoch: i64, revision: i64, recorded: i64, at: i64) {
        self.line(
            at,
            format!(
                "observe node {} read at e{lock_epoch} r{revision} -> r{recorded}",
                short(node)
            ),
        );
        let Some(n) = self.nodes.get(&node).cloned() else {
            self.violate(
                at,
                "observation-existing-node",
                format!("power state recorded for unknown node {}", short(node)),
            );
            return;
        };
        if let Some(h) = &n.held {
            let holder = self.fence_str(&h.fence);
            self.violate(
                at,
                "observation-while-held",
                format!(
                    "power state read at epoch {lock_epoch} recorded while {holder} holds node {}",
                    short(node)
                ),
            );
        } else if n.epoch != lock_epoch {
            self.violate(
                at,
                "observation-after-grant",
                format!(
                    "power state read at epoch {lock_epoch} recorded after the grant of epoch {} on node {}",
                    n.epoch,
                    short(node)
                ),
            );
        } else if n.revision != revision {
            self.violate(
                at,
                "observation-after-write",
                format!(
                    "power state read at revision {revision} recorded after the write of revision {} on node {}",
                    n.revision,
                    short(node)
                ),
            );
        }
        if let Some(m) = self.nodes.get_mut(&node) {
            m.revision = recorded;
        }
    }

    fn waiter_left(&mut self, node: Uuid, ticket: i64, exit: WaiterExit, at: i64) {
        self.line(
            at,
            format!("dequeue ticket {ticket} node {} ({exit:?})", short(node)),
        );
        let Some(w) = self
            .nodes
            .get_mut(&node)
            .and_then(|n| n.queue.remove(&ticket))
        else {
            self.violate(
                at,
                "queue-model",
                format!("ticket {ticket} left but was not queued"),
            );
            return;
        };
        let live = self.waiter_live(&w, at);
        match exit {
            WaiterExit::Skipped if live => self.violate(
                at,
                "fifo-live-waiter-skipped",
                format!("live ticket {ticket} of {} skipped on release", w.conductor),
            ),
            WaiterExit::Granted if !live => self.violate(
                at,
                "grant-to-live-waiter",
                format!(
                    "ticket {ticket} of {} granted though dead or expired",
                    w.conductor
                ),
            ),
            _ => {}
        }
    }

    /// Compare the stored rows (read directly, between operations) with the
    /// model, and check the queue invariants.
    pub fn check_state(
        &mut self,
        at: i64,
        nodes: &[Node],
        waiters: &dyn Fn(Uuid) -> Vec<WaiterView>,
    ) {
        for n in nodes {
            let ws = waiters(n.uuid);
            if n.lock_waiters as usize != ws.len() {
                self.violate(
                    at,
                    "lock-waiters-count",
                    format!(
                        "node {} lock_waiters {} but {} rows",
                        short(n.uuid),
                        n.lock_waiters,
                        ws.len()
                    ),
                );
            }
            if n.reservation.is_none() && !ws.is_empty() {
                self.violate(
                    at,
                    "unlocked-implies-no-waiters",
                    format!("node {} unlocked with {} waiters", short(n.uuid), ws.len()),
                );
            }
            let stored = n
                .reservation
                .as_ref()
                .map(|r| (r.holder.clone(), r.task_id, r.epoch));
            let model = self
                .held(n.uuid)
                .map(|h| (h.fence.holder.clone(), h.fence.task_id, h.fence.epoch));
            if stored != model {
                self.violate(
                    at,
                    "store-matches-model",
                    format!("node {} stored {stored:?} model {model:?}", short(n.uuid)),
                );
            }
            let revision = self.nodes.get(&n.uuid).map(|m| m.revision);
            if revision != Some(n.revision) {
                self.violate(
                    at,
                    "store-matches-model",
                    format!(
                        "node {} revision {} model {revision:?}",
                        short(n.uuid),
                        n.revision
                    ),
                );
            }
            let tickets: Vec<i64> = ws.iter().map(|w| w.ticket).collect();
            let modelled: Vec<i64> = self
                .nodes
                .get(&n.uuid)
                .map(|m| m.queue.keys().copied().collect())
                .unwrap_or_default();
            if tickets != modelled {
                self.violate(
                    at,
                    "store-matches-model",
                    format!(
                        "node {} queue {tickets:?} model {modelled:?}",
                        short(n.uuid)
                    ),
                );
            }
        }
    }
}

/// The first 8 hex digits of a UUID, for traces.
pub fn short(u: Uuid) -> String {
    u.simple().to_string()[..8].to_string()
}

//! A conductor's connection to the simulated database.
//!
//! Every conductor talks to the shared [`MemoryStore`] through its own
//! [`SimConn`], which is where per-process faults live:
//!
//! * pause (a zombie: SIGSTOP, a long GC pause, a partition): operations wait
//!   at the gate, both before they reach the store and before their answer
//!   reaches the conductor; on resume they go on with whatever token they had;
//! * crash: every waiting and later operation fails; the conductor's next
//!   life gets a new connection. A request already in flight still lands;
//! * ambiguous commit (opt-in): the next operation applies, then reports an
//!   error, like a connection lost before the commit was acknowledged.
//!
//! The connection also keeps a ledger of what each simulated actor obtained
//! (tokens granted, tickets queued). It is how the simulator works around the
//! TaskManager not cleaning up after a store error (see the crate docs).

use async_trait::async_trait;
use ferric_core::{DbTime, NewNode, Node};
use ferric_store::memory::MemoryStore;
use ferric_store::*;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use uuid::Uuid;

tokio::task_local! {
    /// The simulated actor an operation is made for (ledger key).
    pub static ACTOR: u64;
}

/// The error a crashed conductor's operations get.
pub const CRASHED: &str = "simulated conductor crashed";
/// The error of an ambiguous commit (the operation did apply).
pub const AMBIGUOUS: &str = "simulated connection lost after commit";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Open,
    Paused,
    Crashed,
}

/// What one actor obtained through this connection.
#[derive(Debug, Default, Clone)]
pub struct Ledger {
    /// Tokens granted to the actor, in order.
    pub tokens: Vec<LockToken>,
    /// Waiters queued for the actor: (node, ticket, task).
    pub queued: Vec<(Uuid, i64, Uuid)>,
}

#[derive(Default)]
struct Books {
    ambiguous_next: u32,
    ledgers: BTreeMap<u64, Ledger>,
}

/// One conductor life's connection.
pub struct SimConn {
    inner: Arc<MemoryStore>,
    host: String,
    /// Not a `watch` channel: its receivers wake in an order tokio draws at
    /// random, which would make runs differ.
    mode: Mutex<Mode>,
    changed: Notify,
    books: Mutex<Books>,
}

fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl SimConn {
    /// A connection of conductor `host` to `store`.
    pub fn new(store: Arc<MemoryStore>, host: &str) -> Self {
        SimConn {
            inner: store,
            host: host.to_string(),
            mode: Mutex::new(Mode::Open),
            changed: Notify::new(),
            books: Mutex::new(Books::default()),
        }
    }

    fn set_mode(&self, from: Option<Mode>, to: Mode) {
        let mut m = guard(&self.mode);
        if from.is_none_or(|f| *m == f) {
            *m = to;
            drop(m);
            self.changed.notify_waiters();
        }
    }

    /// Stop every operation at the gate until [`SimConn::resume`].
    pub fn pause(&self) {
        self.set_mode(Some(Mode::Open), Mode::Paused);
    }

    /// Let paused operations go on.
    pub fn resume(&self) {
        self.set_mode(Some(Mode::Paused), Mode::Open);
    }

    /// Fail every waiting and later operation, for good.
    pub fn crash(&self) {
        self.set_mode(None, Mode::Crashed);
    }

    /// The next `n` operations apply and then report an error.
    pub fn ambiguous_next(&self, n: u32) {
        guard(&self.books).ambiguous_next = n;
    }

    /// Take what `actor` obtained since the last call.
    pub fn take_ledger(&self, actor: u64) -> Ledger {
        guard(&self.books)
            .ledgers
            .remove(&actor)
            .unwrap_or_default()
    }

    async fn gate(&self) -> StoreResult<()> {
        loop {
            // Created before the check, so a change in between is not missed.
            let changed = self.changed.notified();
            match *guard(&self.mode) {
                Mode::Open => return Ok(()),
                Mode::Crashed => return Err(StoreError::Invalid(CRASHED.to_string())),
                Mode::Paused => {}
            }
            changed.await;
        }
    }

    /// The answer to an operation passes the gate again; an ambiguous fault
    /// replaces it with an error after it applied.
    async fn answer<T>(&self, r: StoreResult<T>) -> StoreResult<T> {
        self.gate().await?;
        let ambiguous = {
            let mut b = guard(&self.books);
            let hit = b.ambiguous_next > 0;
            if hit {
                b.ambiguous_next -= 1;
            }
            hit
        };
        if ambiguous {
            return Err(StoreError::Invalid(AMBIGUOUS.to_string()));
        }
        r
    }

    fn note(&self, f: impl FnOnce(&mut Ledger)) {
        if let Ok(actor) = ACTOR.try_with(|a| *a) {
            f(guard(&self.books).ledgers.entry(actor).or_default());
        }
    }

    fn note_token(&self, t: &LockToken) {
        if t.holder == self.host {
            let t = t.clone();
            self.note(move |l| l.tokens.push(t));
        }
    }
}

#[async_trait]
impl Store for SimConn {
    fn backend(&self) -> Backend {
        self.inner.backend()
    }

    async fn now(&self) -> StoreResult<DbTime> {
        self.gate().await?;
        let r = self.inner.now().await;
        self.answer(r).await
    }

    async fn create_node(&self, node: NewNode) -> StoreResult<Node> {
        self.gate().await?;
        let r = self.inner.create_node(node).await;
        self.answer(r).await
    }

    async fn get_node(&self, ident: &NodeIdent) -> StoreResult<Node> {
        self.gate().await?;
        let r = self.inner.get_node(ident).await;
        self.answer(r).await
    }

    async fn list_nodes(&self, query: &NodeQuery) -> StoreResult<NodePage> {
        self.gate().await?;
        let r = self.inner.list_nodes(query).await;
        self.answer(r).await
    }

    async fn save_node(&self, token: &LockToken, node: &Node) -> StoreResult<Node> {
        self.gate().await?;
        let r = self.inner.save_node(token, node).await;
        self.answer(r).await
    }

    async fn save_node_and_release(
        &self,
        token: &LockToken,
        node: &Node,
    ) -> StoreResult<(Node, Release)> {
        self.gate().await?;
        let r = self.inner.save_node_and_release(token, node).await;
        self.answer(r).await
    }

    async fn record_power_states(&self, observed: &[PowerObservation]) -> StoreResult<Vec<Node>> {
        self.gate().await?;
        let r = self.inner.record_power_states(observed).await;
        self.answer(r).await
    }

    async fn delete_node(&self, token: &LockToken) -> StoreResult<()> {
        self.gate().await?;
        let r = self.inner.delete_node(token).await;
        self.answer(r).await
    }

    async fn changes_since(&self, since: i64, limit: u32) -> StoreResult<Vec<NodeChange>> {
        self.gate().await?;
        let r = self.inner.changes_since(since, limit).await;
        self.answer(r).await
    }

    async fn create_resource(&self, kind: ResourceKind, new: NewResource) -> StoreResult<Resource> {
        self.gate().await?;
        let r = self.inner.create_resource(kind, new).await;
        self.answer(r).await
    }

    async fn get_resource(&self, kind: ResourceKind, ident: &NodeIdent) -> StoreResult<Resource> {
        self.gate().await?;
        let r = self.inner.get_resource(kind, ident).await;
        self.answer(r).await
    }

    async fn list_resources(&self, q: &ResourceQuery) -> StoreResult<Vec<Resource>> {
        self.gate().await?;
        let r = self.inner.list_resources(q).await;
        self.answer(r).await
    }

    async fn update_resource(&self, resource: &Resource) -> StoreResult<Resource> {
        self.gate().await?;
        let r = self.inner.update_resource(resource).await;
        self.answer(r).await
    }

    async fn delete_resource(
        &self,
        kind: ResourceKind,
        uuid: Uuid,
        revision: Option<i64>,
    ) -> StoreResult<()> {
        self.gate().await?;
        let r = self.inner.delete_resource(kind, uuid, revision).await;
        self.answer(r).await
    }

    async fn try_acquire(&self, node: Uuid, claim: &Claim) -> StoreResult<LockToken> {
        self.gate().await?;
        let r = self.inner.try_acquire(node, claim).await;
        if let Ok(t) = &r {
            self.note_token(t);
        }
        self.answer(r).await
    }

    async fn try_acquire_node(&self, node: Uuid, claim: &Claim) -> StoreResult<(LockToken, Node)> {
        self.gate().await?;
        let r = self.inner.try_acquire_node(node, claim).await;
        if let Ok((t, _)) = &r {
            self.note_token(t);
        }
        self.answer(r).await
    }

    async fn subscribe_wakeups(&self, conductor: &str) -> StoreResult<WakeSubscription> {
        self.gate().await?;
        let r = self.inner.subscribe_wakeups(conductor).await;
        self.answer(r).await
    }

    async fn enqueue(
        &self,
        node: Uuid,
        claim: &Claim,
        wait: Option<Duration>,
        max_waiters: u32,
    ) -> StoreResult<Enqueued> {
        self.gate().await?;
        let r = self.inner.enqueue(node, claim, wait, max_waiters).await;
        match &r {
            Ok(Enqueued::Granted(t)) => self.note_token(t),
            Ok(Enqueued::Queued { ticket, .. }) => {
                let entry = (node, *ticket, claim.task_id);
                self.note(move |l| l.queued.push(entry));
            }
            Err(_) => {}
        }
        self.answer(r).await
    }

    async fn poll_waiter(&self, node: Uuid, ticket: i64, task_id: Uuid) -> StoreResult<WaitStatus> {
        self.gate().await?;
        let r = self.inner.poll_waiter(node, ticket, task_id).await;
        if let Ok(WaitStatus::Granted(t)) = &r {
            self.note_token(t);
        }
        self.answer(r).await
    }

    async fn cancel_wait(
        &self,
        node: Uuid,
        ticket: i64,
        task_id: Uuid,
    ) -> StoreResult<Option<LockToken>> {
        self.gate().await?;
        let r = self.inner.cancel_wait(node, ticket, task_id).await;
        if let Ok(Some(t)) = &r {
            self.note_token(t);
        }
        self.answer(r).await
    }

    async fn release(&self, token: &LockToken) -> StoreResult<Release> {
        self.gate().await?;
        let r = self.inner.release(token).await;
        self.answer(r).await
    }

    async fn handoff(&self, token: &LockToken, to: &Claim) -> StoreResult<LockToken> {
        self.gate().await?;
        let r = self.inner.handoff(token, to).await;
        if let Ok(t) = &r {
            self.note_token(t);
        }
        self.answer(r).await
    }

    async fn break_lock(
        &self,
        node: Uuid,
        expected: &LockToken,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<Release> {
        self.gate().await?;
        let r = self.inner.break_lock(node, expected, audit).await;
        self.answer(r).await
    }

    async fn record_audit(&self, previous: &LockToken, entry: &AuditEntry) -> StoreResult<()> {
        self.gate().await?;
        let r = self.inner.record_audit(previous, entry).await;
        self.answer(r).await
    }

    async fn lock_view(&self, node: Uuid) -> StoreResult<LockView> {
        self.gate().await?;
        let r = self.inner.lock_view(node).await;
        self.answer(r).await
    }

    async fn list_locks(&self) -> StoreResult<Vec<LockView>> {
        self.gate().await?;
        let r = self.inner.list_locks().await;
        self.answer(r).await
    }

    async fn list_audit(&self, limit: u32) -> StoreResult<Vec<AuditRecord>> {
        self.gate().await?;
        let r = self.inner.list_audit(limit).await;
        self.answer(r).await
    }

    async fn register_conductor(&self, conductor: &ConductorInfo) -> StoreResult<()> {
        self.gate().await?;
        let r = self.inner.register_conductor(conductor).await;
        self.answer(r).await
    }

    async fn heartbeat(&self, hostname: &str) -> StoreResult<()> {
        self.gate().await?;
        let r = self.inner.heartbeat(hostname).await;
        self.answer(r).await
    }

    async fn unregister_conductor(&self, hostname: &str) -> StoreResult<()> {
        self.gate().await?;
        let r = self.inner.unregister_conductor(hostname).await;
        self.answer(r).await
    }

    async fn list_conductors(&self) -> StoreResult<Vec<ConductorRow>> {
        self.gate().await?;
        let r = self.inner.list_conductors().await;
        self.answer(r).await
    }

    async fn shard_counts(&self) -> StoreResult<Vec<(Option<String>, i64)>> {
        self.gate().await?;
        let r = self.inner.shard_counts().await;
        self.answer(r).await
    }
}

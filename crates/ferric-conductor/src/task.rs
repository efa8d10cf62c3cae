//! The TaskManager (SPEC §5): acquire a node shared or exclusive, work on it,
//! release it.
//!
//! * [`ExclusiveTask`] holds the node's lock and is the only type with write
//!   methods; a [`SharedTask`] can only read, so writing under a shared task is
//!   a compile error:
//!
//! ```compile_fail
//! # async fn f(tm: ferric_conductor::TaskManager, id: uuid::Uuid) {
//! let mut task = tm.acquire(id).purpose("validate").shared().await.unwrap();
//! task.save().await; // no such method on SharedTask
//! # }
//! ```
//!
//! while the same code on an exclusive task compiles:
//!
//! ```no_run
//! # async fn f(tm: ferric_conductor::TaskManager, id: uuid::Uuid) {
//! let mut task = tm.acquire(id).purpose("validate").shared().await.unwrap();
//! let mut task = task.upgrade().await.unwrap();
//! task.save().await.unwrap();
//! # }
//! ```
//!
//! * Every write under the lock is fenced by the task's token; if the lock was
//!   taken over or forcibly released the write fails with `LockLost` and
//!   nothing is written.
//! * `spawn_after` keeps the lock while background work runs, then releases it.
//! * A task dropped without `release` is released in the background with a
//!   warning; it never leaks.

use crate::error::TaskError;
use crate::notify::NotificationSink;
use crate::wait::WaiterRegistry;
use crate::ConductorConfig;
use ferric_core::notify::{provision_status, ProvisionNotification};
use ferric_core::{Event, Machine, Node, ProvisionState};
use ferric_store::{Claim, Enqueued, LockToken, NodeIdent, Release, Store, StoreError, WaitStatus};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
// tokio's clock, so a paused-time simulation controls every deadline here.
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tracing::{debug, error, info, warn, Instrument};
use uuid::Uuid;

/// A boxed future borrowing the task it works on.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Errors returned by background work.
pub type WorkError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// How long to wait for a lock someone else holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Retry {
    /// One attempt; NodeLocked at once when held.
    None,
    /// Fair waiting up to `node_locked_retry_attempts × node_locked_retry_interval`.
    #[default]
    Default,
    /// Wait, in FIFO order, until granted (ends only on shutdown or deletion).
    Patient,
    /// Fair waiting up to this long.
    For(Duration),
}

/// Hooks and signals shared by every task of one conductor.
pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) config: ConductorConfig,
    pub(crate) waiters: WaiterRegistry,
    pub(crate) workers: Arc<Semaphore>,
    pub(crate) sink: Arc<dyn NotificationSink>,
    pub(crate) shutdown: watch::Sender<bool>,
    /// Called after a release handed the lock to a waiter of another process.
    pub(crate) remote_wake: std::sync::RwLock<Option<Arc<dyn RemoteWake>>>,
    /// This conductor's metrics (crate::metrics).
    pub(crate) metrics: Arc<crate::metrics::ConductorMetrics>,
    /// This conductor's own heartbeat: fenced, may judge others
    /// (crate::liveness).
    pub(crate) liveness: Arc<crate::liveness::Liveness>,
}

/// Tells a waiter in another process that it was granted a lock.
pub trait RemoteWake: Send + Sync + 'static {
    /// `conductor`'s task `task_id` now holds `node`.
    fn wake(&self, conductor: &str, node: Uuid, task_id: Uuid);
}

/// Acquires nodes for one conductor. Cheap to clone.
#[derive(Clone)]
pub struct TaskManager {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for TaskManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskManager")
            .field("host", &self.inner.config.host)
            .finish()
    }
}

impl TaskManager {
    /// A TaskManager for the conductor described by `config`.
    pub fn new(
        store: Arc<dyn Store>,
        config: ConductorConfig,
        sink: Arc<dyn NotificationSink>,
    ) -> Self {
        let (shutdown, _) = watch::channel(false);
        TaskManager {
            inner: Arc::new(Inner {
                store,
                workers: Arc::new(Semaphore::new(config.workers_pool_size as usize)),
                waiters: WaiterRegistry::default(),
                sink,
                shutdown,
                remote_wake: std::sync::RwLock::new(None),
                metrics: Arc::default(),
                liveness: Arc::new(crate::liveness::Liveness::new(
                    config.heartbeat_interval,
                    config.heartbeat_timeout,
                )),
                config,
            }),
        }
    }

    /// This conductor's view of its own heartbeat (self-fencing).
    pub fn liveness(&self) -> &Arc<crate::liveness::Liveness> {
        &self.inner.liveness
    }

    /// This conductor's name (the lock holder tag).
    pub fn host(&self) -> &str {
        &self.inner.config.host
    }

    /// The settings in force.
    pub fn config(&self) -> &ConductorConfig {
        &self.inner.config
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// This conductor's metrics (registered into `/metrics` by `serve`).
    pub fn metrics(&self) -> &Arc<crate::metrics::ConductorMetrics> {
        &self.inner.metrics
    }

    /// The in-process waiter registry (for cross-process wake sources).
    pub fn waiters(&self) -> &WaiterRegistry {
        &self.inner.waiters
    }

    /// Install the cross-process wakeup used after releases.
    pub fn set_remote_wake(&self, wake: Arc<dyn RemoteWake>) {
        match self.inner.remote_wake.write() {
            Ok(mut w) => *w = Some(wake),
            Err(p) => *p.into_inner() = Some(wake),
        }
    }

    /// Stop every wait (patient ones included) with `ShuttingDown`.
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }

    /// Free background worker slots.
    pub fn free_workers(&self) -> usize {
        self.inner.workers.available_permits()
    }

    /// Start acquiring `node` (a UUID or a name).
    pub fn acquire(&self, node: impl Into<NodeIdent>) -> Acquire {
        Acquire {
            tm: self.clone(),
            ident: node.into(),
            purpose: "unspecified action".to_string(),
            retry: Retry::Default,
        }
    }

    /// Take charge of a lock this conductor was handed (a handoff receiver or
    /// a recovery): the node is loaded and the token checked against it.
    pub async fn adopt(&self, token: LockToken) -> Result<ExclusiveTask, TaskError> {
        let node = self.inner.store.get_node(&token.node.into()).await?;
        let matches = node.reservation.as_ref().is_some_and(|r| {
            r.holder == token.holder && r.task_id == token.task_id && r.epoch == token.epoch
        });
        if !matches {
            return Err(TaskError::Store(StoreError::LockLost {
                node: token.node,
                epoch: token.epoch,
                current: node.reservation.map(|r| r.holder),
            }));
        }
        Ok(ExclusiveTask {
            tm: self.clone(),
            token,
            node,
            acquired: Instant::now(),
            pending: None,
            prior: None,
            error_hook: None,
            released: false,
        })
    }

    /// Wake whoever a release handed the lock to.
    pub(crate) fn wake_grantee(&self, node: Uuid, release: &Release) {
        if let Some(g) = &release.granted_to {
            if g.conductor == self.host() {
                // The store read the granted row in the release: hand it
                // over, so the grantee needs no read of its own.
                let handed = g.node.as_deref().and_then(|n| {
                    LockToken::held(n)
                        .filter(|t| t.task_id == g.task_id && t.epoch == g.epoch)
                        .map(|t| (t, n.clone()))
                });
                let woken = match handed {
                    Some((token, n)) => self.inner.waiters.hand(g.task_id, token, n),
                    None => self.inner.waiters.wake(g.task_id),
                };
                if woken {
                    return;
                }
            }
            let remote = match self.inner.remote_wake.read() {
                Ok(r) => r.clone(),
                Err(p) => p.into_inner().clone(),
            };
            if let Some(r) = remote {
                r.wake(&g.conductor, node, g.task_id);
            }
        }
    }

    /// Start delivering wakeups from other processes to this conductor's
    /// waiters (PostgreSQL LISTEN; SQLite: the conductor's wakeup socket, or
    /// where none can be bound `data_version` polling while anyone waits).
    /// Runs until [`TaskManager::shutdown`].
    pub async fn start_wake_listener(&self) -> Result<tokio::task::JoinHandle<()>, TaskError> {
        let mut sub = self.inner.store.subscribe_wakeups(self.host()).await?;
        let tm = self.clone();
        let mut shutdown = self.inner.shutdown.subscribe();
        let span = tracing::info_span!("worker", name = "lock_wakeups", conductor = %self.host());
        Ok(tokio::spawn(
            async move {
                let registry = &tm.inner.waiters;
                let poll_every = tm.inner.config.sqlite_poll_interval;
                loop {
                    if *shutdown.borrow() {
                        break;
                    }
                    let event = if sub.is_poll() {
                        if registry.is_empty() {
                            tokio::select! {
                                biased;
                                _ = registry.registered() => {}
                                _ = shutdown.changed() => {}
                            }
                            continue;
                        }
                        tokio::time::sleep(poll_every).await;
                        sub.next().await
                    } else {
                        tokio::select! {
                            biased;
                            e = sub.next() => e,
                            _ = shutdown.changed() => continue,
                        }
                    };
                    match event {
                        Ok(Some(ferric_store::WakeEvent::Granted { task_id, .. })) => {
                            registry.wake(task_id);
                        }
                        Ok(Some(_)) => registry.wake_all(),
                        Ok(None) => {}
                        Err(e) => {
                            warn!(error.message = %e, "lock wakeup listener failed; waiters fall back to re-checking");
                            registry.wake_all();
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }
            .instrument(span),
        ))
    }

    /// Queue for `node` and wait until granted, the wait runs out, or shutdown.
    async fn wait_for_lock(
        &self,
        node: Uuid,
        claim: &Claim,
        retry: Retry,
    ) -> Result<(LockToken, Option<Node>), TaskError> {
        let wait = match retry {
            Retry::None => None,
            Retry::Default => Some(self.inner.config.default_wait()),
            Retry::For(d) => Some(d),
            Retry::Patient => None,
        };
        let started = Instant::now();
        let deadline = wait.map(|w| started + w);
        let recheck = self.inner.config.node_locked_retry_interval;
        let mut shutdown = self.inner.shutdown.subscribe();
        let registration = self.inner.waiters.register(claim.task_id);
        let _waiting = self.inner.metrics.waiting();
        let store = &self.inner.store;
        'enqueue: loop {
            let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let ticket = match store
                .enqueue(
                    node,
                    claim,
                    remaining,
                    self.inner.config.max_waiters_per_node,
                )
                .await?
            {
                Enqueued::Granted(t) => return Ok((t, None)),
                Enqueued::Queued { ticket, position } => {
                    debug!(node_uuid = %node, purpose = %claim.purpose, ticket, position, "queued for node lock");
                    ticket
                }
            };
            // If this wait ends any other way than below (a store error, or the
            // caller dropping the future, e.g. an HTTP client going away), the
            // waiter row must not stay queued: it would later be granted to a
            // task nobody runs, under a live conductor, and never released.
            let mut queued = QueueGuard::new(self.clone(), node, ticket, claim.task_id);
            loop {
                let now = Instant::now();
                if deadline.is_some_and(|d| now >= d) || *shutdown.borrow() {
                    let cancelled = store.cancel_wait(node, ticket, claim.task_id).await?;
                    queued.disarm();
                    if let Some(t) = cancelled {
                        return Ok((t, None));
                    }
                    if *shutdown.borrow() {
                        return Err(TaskError::ShuttingDown);
                    }
                    return Err(locked_error(store.as_ref(), node).await);
                }
                let nap = deadline.map_or(recheck, |d| recheck.min(d - now));
                tokio::select! {
                    biased;
                    _ = registration.notify().notified() => {}
                    _ = tokio::time::sleep(nap) => {}
                    _ = shutdown.changed() => {}
                }
                if let Some((t, n)) = registration.take_handed() {
                    queued.disarm();
                    return Ok((t, Some(n)));
                }
                match store.poll_waiter_node(node, ticket, claim.task_id).await? {
                    (WaitStatus::Granted(t), loaded) => {
                        queued.disarm();
                        return Ok((t, loaded));
                    }
                    (WaitStatus::Waiting, _) => {}
                    (WaitStatus::Gone, _) => {
                        queued.disarm();
                        warn!(node_uuid = %node, ticket, "lock waiter was dropped from the queue; queueing again");
                        continue 'enqueue;
                    }
                }
            }
        }
    }
}

/// Cancels a queued waiter (and releases the lock if it was granted
/// meanwhile) when a wait ends without handing its outcome to anyone.
struct QueueGuard {
    tm: TaskManager,
    node: Uuid,
    ticket: i64,
    task_id: Uuid,
    armed: bool,
}

impl QueueGuard {
    fn new(tm: TaskManager, node: Uuid, ticket: i64, task_id: Uuid) -> Self {
        QueueGuard {
            tm,
            node,
            ticket,
            task_id,
            armed: true,
        }
    }

    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for QueueGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (tm, node, ticket, task_id) = (self.tm.clone(), self.node, self.ticket, self.task_id);
        warn!(node_uuid = %node, ticket, "abandoned lock wait; leaving the queue in the background");
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(async move {
                    match tm.inner.store.cancel_wait(node, ticket, task_id).await {
                        Ok(Some(token)) => release_in_background(&tm, token).await,
                        Ok(None) => {}
                        Err(e) => warn!(node_uuid = %node, ticket, error.message = %e, "could not leave the lock queue; the waiter is skipped once its conductor or deadline is gone"),
                    }
                });
            }
            Err(_) => error!(node_uuid = %node, ticket, "no runtime to leave the lock queue"),
        }
    }
}

/// Releases a token nobody will use, retrying store errors with backoff
/// (up to about a heartbeat timeout; after that recovery would take it).
pub(crate) async fn release_in_background(tm: &TaskManager, token: LockToken) {
    let mut pause = Duration::from_millis(20);
    let give_up = Instant::now() + tm.inner.config.heartbeat_timeout;
    loop {
        match tm.inner.store.release(&token).await {
            Ok(rel) => {
                tm.wake_grantee(token.node, &rel);
                return;
            }
            Err(StoreError::NodeNotFound(_) | StoreError::NodeNotLocked { .. }) => return,
            Err(e) if Instant::now() >= give_up => {
                error!(node_uuid = %token.node, lock_epoch = token.epoch, error.message = %e, "giving up releasing a lock; it stays held by this conductor");
                return;
            }
            Err(e) => {
                warn!(node_uuid = %token.node, error.message = %e, "release failed; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Releases a granted token if the acquisition is abandoned before the task
/// exists (an error or a dropped future between grant and task).
struct TokenGuard {
    tm: TaskManager,
    token: Option<LockToken>,
}

impl TokenGuard {
    fn take(mut self) -> LockToken {
        // Infallible: the token is set at construction and taken only here.
        self.token
            .take()
            .unwrap_or_else(|| unreachable!("token taken twice"))
    }
}

impl Drop for TokenGuard {
    fn drop(&mut self) {
        if let Some(token) = self.token.take() {
            let tm = self.tm.clone();
            match tokio::runtime::Handle::try_current() {
                Ok(h) => {
                    h.spawn(async move { release_in_background(&tm, token).await });
                }
                Err(_) => {
                    error!(node_uuid = %token.node, "no runtime to release an abandoned lock")
                }
            }
        }
    }
}

async fn locked_error(store: &dyn Store, node: Uuid) -> TaskError {
    match store.lock_view(node).await {
        Ok(v) => TaskError::Store(StoreError::NodeLocked {
            node,
            holder: v.holder,
            purpose: v.purpose,
            held_ms: v.held_ms.unwrap_or(0),
            waiters: v.waiters.len() as i64,
            queue_full: false,
        }),
        Err(e) => e.into(),
    }
}

/// An acquisition being configured: purpose, retry policy, mode.
#[must_use = "an acquisition does nothing until .exclusive() or .shared() is awaited"]
pub struct Acquire {
    tm: TaskManager,
    ident: NodeIdent,
    purpose: String,
    retry: Retry,
}

impl Acquire {
    /// What the task is for; shown in logs, lock listings and NodeLocked errors.
    pub fn purpose(mut self, purpose: impl Into<String>) -> Self {
        self.purpose = purpose.into();
        self
    }

    /// How to wait when the node is locked (default: `Retry::Default`).
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// Read the node without locking it.
    pub async fn shared(self) -> Result<SharedTask, TaskError> {
        let node = self.tm.inner.store.get_node(&self.ident).await?;
        debug!(node_uuid = %node.uuid, purpose = %self.purpose, "shared task started");
        Ok(SharedTask {
            tm: self.tm,
            node,
            purpose: self.purpose,
            retry: self.retry,
        })
    }

    /// Take the node's exclusive lock.
    pub async fn exclusive(self) -> Result<ExclusiveTask, TaskError> {
        // NodeNotFound comes first and is never retried (Ironic's order); a
        // UUID goes straight to the grant, which reports a missing node itself.
        let uuid = match &self.ident {
            NodeIdent::Uuid(u) => *u,
            NodeIdent::Name(_) => self.tm.inner.store.get_node(&self.ident).await?.uuid,
        };
        lock(self.tm, uuid, self.purpose, self.retry).await
    }
}

async fn lock(
    tm: TaskManager,
    node: Uuid,
    purpose: String,
    retry: Retry,
) -> Result<ExclusiveTask, TaskError> {
    if tm.inner.liveness.is_fenced() {
        return Err(TaskError::Fenced);
    }
    let claim = Claim {
        holder: tm.host().to_string(),
        task_id: Uuid::new_v4(),
        purpose,
    };
    let started = Instant::now();
    // The node is read with or after the grant, so the task sees every change
    // of the previous holder.
    let (token, node_now) = match tm.inner.store.try_acquire_node(node, &claim).await {
        Ok(granted) => granted,
        Err(StoreError::NodeLocked { .. }) if retry != Retry::None => {
            let (token, loaded) = tm.wait_for_lock(node, &claim, retry).await.inspect_err(|e| {
                if e.is_node_locked() {
                    tm.inner.metrics.node_locked(&claim.purpose);
                }
                info!(node_uuid = %node, purpose = %claim.purpose, wait_ms = started.elapsed().as_millis() as u64, error.message = %e, "could not lock node");
            })?;
            let guard = TokenGuard {
                tm: tm.clone(),
                token: Some(token),
            };
            let n = match loaded {
                Some(n) => n,
                // On error (or if this future is dropped here) the guard
                // releases the lock in the background.
                None => tm.inner.store.get_node(&node.into()).await?,
            };
            (guard.take(), n)
        }
        Err(e @ StoreError::NodeLocked { .. }) => {
            tm.inner.metrics.node_locked(&claim.purpose);
            return Err(e.into());
        }
        Err(e) => return Err(e.into()),
    };
    tm.inner
        .metrics
        .observe_wait(&claim.purpose, started.elapsed());
    debug!(
        node_uuid = %node, purpose = %claim.purpose, lock_epoch = token.epoch,
        wait_ms = started.elapsed().as_millis() as u64, "node locked"
    );
    Ok(ExclusiveTask {
        tm,
        token,
        node: node_now,
        acquired: Instant::now(),
        pending: None,
        prior: None,
        error_hook: None,
        released: false,
    })
}

/// A read-only view of a node. Any number may coexist with each other and
/// with an exclusive holder.
pub struct SharedTask {
    tm: TaskManager,
    node: Node,
    purpose: String,
    retry: Retry,
}

impl SharedTask {
    /// The node as read when the task started.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The state machine positioned at the node's state.
    pub fn machine(&self) -> Machine {
        Machine::new(self.node.provision_state, self.node.target_provision_state)
    }

    /// What the task is for.
    pub fn purpose(&self) -> &str {
        &self.purpose
    }

    /// Take the exclusive lock with the task's retry policy. The node is
    /// reloaded after the grant: callers must re-check their preconditions.
    pub async fn upgrade(self) -> Result<ExclusiveTask, TaskError> {
        let retry = self.retry;
        self.upgrade_with(retry, None).await
    }

    /// Like [`SharedTask::upgrade`] with another retry policy and purpose.
    pub async fn upgrade_with(
        self,
        retry: Retry,
        purpose: Option<String>,
    ) -> Result<ExclusiveTask, TaskError> {
        let purpose = purpose.unwrap_or(self.purpose);
        lock(self.tm, self.node.uuid, purpose, retry).await
    }

    /// End the task (nothing to release).
    pub fn release(self) {
        debug!(node_uuid = %self.node.uuid, purpose = %self.purpose, "shared task released");
    }
}

/// Options of [`ExclusiveTask::process_event`].
#[derive(Debug, Clone, Default)]
pub struct EventOpts {
    /// Override the target state (must be stable).
    pub target: Option<ProvisionState>,
    /// Set `last_error` to this.
    pub last_error: Option<String>,
    /// Background work will follow (`spawn_after`): the target is kept even in a
    /// stable state, `last_error` is cleared unless given, the notification is
    /// sent once the work started, and if no worker can be had the previous
    /// states are restored with "No free conductor workers available".
    pub spawn: bool,
}

type ErrorHook = Box<dyn FnOnce(&TaskError, &mut Node) + Send + Sync + 'static>;

struct PendingNotification {
    event: Event,
    previous: ProvisionState,
    previous_target: Option<ProvisionState>,
}

/// A node held under its exclusive lock.
pub struct ExclusiveTask {
    tm: TaskManager,
    token: LockToken,
    node: Node,
    acquired: Instant,
    pending: Option<PendingNotification>,
    prior: Option<(ProvisionState, Option<ProvisionState>)>,
    error_hook: Option<ErrorHook>,
    released: bool,
}

impl ExclusiveTask {
    /// The node (as of the grant or the last save).
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Change the node in memory; [`ExclusiveTask::save`] writes it.
    pub fn node_mut(&mut self) -> &mut Node {
        &mut self.node
    }

    /// The fencing token.
    pub fn token(&self) -> &LockToken {
        &self.token
    }

    /// The TaskManager this task belongs to.
    pub fn manager(&self) -> &TaskManager {
        &self.tm
    }

    /// The state machine positioned at the node's state.
    pub fn machine(&self) -> Machine {
        Machine::new(self.node.provision_state, self.node.target_provision_state)
    }

    /// Write the node under the lock (fenced). On `LockLost` nothing was
    /// written and the task must stop.
    pub async fn save(&mut self) -> Result<(), TaskError> {
        let node = self.node.clone();
        self.node = self.fenced_save(&node).await?;
        Ok(())
    }

    /// Write `node` under the token; a refusal because the lock is gone is
    /// logged at error level (an operator must know a holder was fenced out).
    async fn fenced_save(&self, node: &Node) -> Result<Node, TaskError> {
        if self.tm.inner.liveness.is_fenced() {
            return Err(TaskError::Fenced);
        }
        self.tm
            .inner
            .store
            .save_node(&self.token, node)
            .await
            .map_err(|e| {
                if matches!(e, StoreError::LockLost { .. }) {
                    self.write_refused(&e);
                }
                e.into()
            })
    }

    /// A fenced write was refused because the lock is gone: counted and
    /// logged at error level (an operator must know a holder was fenced out).
    fn write_refused(&self, e: &StoreError) {
        self.tm
            .inner
            .metrics
            .lock_lost(crate::metrics::LockOp::Write);
        error!(node_uuid = %self.token.node, lock_epoch = self.token.epoch, purpose = %self.token.purpose, error.message = %e, "lock lost; write refused");
    }

    /// Mark the node as still progressing in its provision state (Ironic's
    /// `touch_provisioning`): the next save stamps `provision_updated_at`
    /// with the database's clock, which restarts the wait-state timeout.
    pub fn touch_provisioning(&mut self) {
        self.node.provision_updated_at = None;
    }

    /// Run `event` through the state machine, set provision and target state,
    /// save, and notify (see [`EventOpts`]). On rejection nothing changes.
    pub async fn process_event(&mut self, event: Event, opts: EventOpts) -> Result<(), TaskError> {
        let previous = self.node.provision_state;
        let previous_target = self.node.target_provision_state;
        let mut machine = self.machine();
        let new = machine.process_event(event, opts.target)?;
        let mut node = self.node.clone();
        node.provision_state = new;
        if !new.agent_may_run() {
            // The agent's session ends with the agent states: a token or
            // URL left behind would let a stale agent act on the node.
            for key in ferric_core::mask::AGENT_SESSION_KEYS {
                node.driver_internal_info.remove(key);
            }
        }
        node.target_provision_state = if !opts.spawn && new.is_stable() {
            None
        } else {
            machine.target()
        };
        if opts.spawn {
            node.last_error = opts.last_error;
        } else if let Some(e) = opts.last_error {
            node.last_error = Some(e);
        }
        self.node = self.fenced_save(&node).await?;
        if new.is_failure() || new == ProvisionState::Error {
            error!(node_uuid = %node.uuid, state = %new, previous = %previous, target = ?self.node.target_provision_state, "node moved to provision state");
        } else {
            info!(node_uuid = %node.uuid, state = %new, previous = %previous, target = ?self.node.target_provision_state, "node moved to provision state");
        }
        let pending = PendingNotification {
            event,
            previous,
            previous_target,
        };
        if opts.spawn {
            self.prior = Some((previous, previous_target));
            self.pending = Some(pending);
        } else {
            self.emit(pending);
        }
        Ok(())
    }

    fn emit(&self, p: PendingNotification) {
        let (status, level) = provision_status(p.event, p.previous, self.node.provision_state);
        let notification = ProvisionNotification {
            node_uuid: self.node.uuid,
            node_name: self.node.name.clone(),
            event: p.event,
            previous_provision_state: p.previous,
            previous_target_provision_state: p.previous_target,
            provision_state: self.node.provision_state,
            target_provision_state: self.node.target_provision_state,
            status,
            level,
            publisher: self.tm.host().to_string(),
        };
        self.tm.inner.sink.emit_with_node(notification, &self.node);
    }

    /// Run `hook` on the node if starting background work fails (no free
    /// worker); the node is then saved and the lock released. A hook replaces
    /// the default one installed by `process_event(.., spawn: true)`.
    pub fn set_spawn_error_hook(
        &mut self,
        hook: impl FnOnce(&TaskError, &mut Node) + Send + Sync + 'static,
    ) {
        self.error_hook = Some(Box::new(hook));
    }

    /// Run `work` in the background holding the lock; release when it ends.
    ///
    /// Returns once the work has started. If no worker slot is free the error
    /// hook runs, the node is saved, the lock released and
    /// `NoFreeConductorWorker` returned. If the work fails, its error is written
    /// to `last_error` as "Async execution of `step` failed with error: ..."
    /// unless `last_error` is already set.
    pub async fn spawn_after<W>(mut self, step: &str, work: W) -> Result<(), TaskError>
    where
        W: for<'a> FnOnce(&'a mut ExclusiveTask) -> BoxFuture<'a, Result<(), WorkError>>
            + Send
            + 'static,
    {
        let permit = match self.tm.inner.workers.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let err = TaskError::NoFreeConductorWorker;
                self.run_error_hook(&err).await;
                self.pending = None;
                self.release_inner().await;
                return Err(err);
            }
        };
        if let Some(p) = self.pending.take() {
            self.emit(p);
        }
        self.error_hook = None;
        let step = step.to_string();
        let span = tracing::info_span!("task", node_uuid = %self.token.node, purpose = %self.token.purpose, lock_epoch = self.token.epoch, step = %step);
        tokio::spawn(
            async move {
                let _permit = permit;
                let mut task = self;
                let result = work(&mut task).await;
                if let Err(e) = result {
                    task.write_async_error(&step, &e).await;
                }
                task.release_inner().await;
            }
            .instrument(span),
        );
        Ok(())
    }

    async fn run_error_hook(&mut self, err: &TaskError) {
        let before = self.node.clone();
        match self.error_hook.take() {
            Some(hook) => {
                let mut node = self.node.clone();
                let outcome =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook(err, &mut node)));
                match outcome {
                    Ok(()) => self.node = node,
                    Err(_) => {
                        warn!(node_uuid = %self.node.uuid, "spawn error hook panicked; original error kept")
                    }
                }
            }
            None => {
                if let Some((state, target)) = self.prior.take() {
                    self.node.provision_state = state;
                    self.node.target_provision_state = target;
                    self.node.last_error = Some("No free conductor workers available".to_string());
                }
            }
        }
        if self.node != before {
            if let Err(e) = self.save().await {
                warn!(node_uuid = %self.node.uuid, error.message = %e, "could not save after spawn failure");
            }
        }
    }

    async fn write_async_error(&mut self, step: &str, e: &WorkError) {
        warn!(node_uuid = %self.node.uuid, step, error.message = %e, "async work failed");
        // Re-read: the work may have written the node meanwhile.
        let fresh = match self.tm.inner.store.get_node(&self.node.uuid.into()).await {
            Ok(n) => n,
            Err(StoreError::NodeNotFound(_)) => return,
            Err(err) => {
                warn!(node_uuid = %self.node.uuid, error.message = %err, "cannot record async failure");
                return;
            }
        };
        if fresh.last_error.is_some() {
            return;
        }
        self.node = fresh;
        self.node.last_error = Some(format!("Async execution of {step} failed with error: {e}"));
        match self.save().await {
            Ok(()) | Err(TaskError::Store(StoreError::NodeNotFound(_))) => {}
            Err(err) => {
                warn!(node_uuid = %self.node.uuid, error.message = %err, "cannot record async failure")
            }
        }
    }

    /// Hand the lock to `to` (another conductor or worker) in one conditional
    /// statement: the node is never unlocked in between.
    pub async fn handoff(mut self, to: &Claim) -> Result<LockToken, TaskError> {
        self.released = true;
        if let Some(p) = self.pending.take() {
            self.emit(p);
        }
        let t = match self.tm.inner.store.handoff(&self.token, to).await {
            Ok(t) => t,
            Err(e @ (StoreError::LockLost { .. } | StoreError::NodeNotFound(_))) => {
                return Err(e.into())
            }
            Err(e) => {
                // The hand-off did not happen and the lock is still ours:
                // give it back rather than keep it with nobody using it.
                warn!(node_uuid = %self.token.node, error.message = %e, "hand-off failed; releasing in the background");
                let (tm, token) = (self.tm.clone(), self.token.clone());
                tokio::spawn(async move { release_in_background(&tm, token).await });
                return Err(e.into());
            }
        };
        self.tm
            .inner
            .metrics
            .observe_hold(&self.token.purpose, self.acquired.elapsed());
        info!(node_uuid = %t.node, from = %self.token.holder, to = %t.holder, lock_epoch = t.epoch, "lock handed off");
        if t.holder == self.tm.host() {
            self.tm.inner.waiters.wake(t.task_id);
        }
        Ok(t)
    }

    /// Release the lock, handing it to the next waiter. A release that finds
    /// the lock gone reports `NodeNotLocked` (the lock was taken over).
    pub async fn release(mut self) -> Result<(), TaskError> {
        self.released = true;
        if let Some(p) = self.pending.take() {
            self.emit(p);
        }
        let r = self.tm.inner.store.release(&self.token).await;
        self.after_release(r)
    }

    /// Save the node and release the lock in one store call: one commit on
    /// the SQL stores where `save` then `release` take two. Use it when a
    /// task ends with a write. A fenced refusal (`LockLost`) writes and
    /// releases nothing (the lock is not ours); any other failure releases
    /// the lock as `release` would and returns the save's error. Returns the
    /// node as saved.
    pub async fn save_and_release(mut self) -> Result<Node, TaskError> {
        if self.tm.inner.liveness.is_fenced() {
            // Dropped unreleased: the drop releases in the background, as
            // after a refused `save`.
            return Err(TaskError::Fenced);
        }
        let node = self.node.clone();
        match self
            .tm
            .inner
            .store
            .save_node_and_release(&self.token, &node)
            .await
        {
            Ok((saved, release)) => {
                self.node = saved;
                self.released = true;
                if let Some(p) = self.pending.take() {
                    self.emit(p);
                }
                self.after_release(Ok(release))?;
                Ok(self.node.clone())
            }
            Err(e @ StoreError::LockLost { .. }) => {
                self.released = true;
                self.write_refused(&e);
                Err(e.into())
            }
            Err(e) => {
                self.release_inner().await;
                Err(e.into())
            }
        }
    }

    /// Give up the lock but keep reading: the node is reloaded.
    pub async fn downgrade(self) -> Result<SharedTask, TaskError> {
        let tm = self.tm.clone();
        let uuid = self.token.node;
        let purpose = self.token.purpose.clone();
        self.release().await?;
        let node = tm.inner.store.get_node(&uuid.into()).await?;
        Ok(SharedTask {
            tm,
            node,
            purpose,
            retry: Retry::Default,
        })
    }

    async fn release_inner(&mut self) {
        if self.released {
            return;
        }
        self.released = true;
        if let Some(p) = self.pending.take() {
            self.emit(p);
        }
        let r = self.tm.inner.store.release(&self.token).await;
        if let Err(e) = self.after_release(r) {
            warn!(node_uuid = %self.token.node, error.message = %e, "release failed");
        }
    }

    fn after_release(&self, r: Result<Release, StoreError>) -> Result<(), TaskError> {
        let held_ms = self.acquired.elapsed().as_millis() as u64;
        match r {
            Ok(rel) => {
                self.tm
                    .inner
                    .metrics
                    .observe_hold(&self.token.purpose, self.acquired.elapsed());
                debug!(node_uuid = %self.token.node, purpose = %self.token.purpose, lock_epoch = self.token.epoch, hold_ms = held_ms, handed_to = ?rel.granted_to.as_ref().map(|g| &g.conductor), "node lock released");
                self.tm.wake_grantee(self.token.node, &rel);
                Ok(())
            }
            // The node was deleted inside the task: nothing left to release.
            Err(StoreError::NodeNotFound(_)) => Ok(()),
            // The store failed: the lock is still ours. Keep trying in the
            // background rather than leak it under a live conductor.
            Err(e)
                if !matches!(
                    e,
                    StoreError::NodeNotLocked { .. } | StoreError::LockLost { .. }
                ) =>
            {
                warn!(node_uuid = %self.token.node, lock_epoch = self.token.epoch, error.message = %e, "release failed; retrying in the background");
                let (tm, token) = (self.tm.clone(), self.token.clone());
                tokio::spawn(async move { release_in_background(&tm, token).await });
                Err(e.into())
            }
            Err(e) => {
                self.tm
                    .inner
                    .metrics
                    .lock_lost(crate::metrics::LockOp::Release);
                warn!(node_uuid = %self.token.node, lock_epoch = self.token.epoch, error.message = %e, "release refused: the lock is not ours any more");
                Err(e.into())
            }
        }
    }

    /// Delete the node under the lock (fenced). The task ends.
    pub async fn destroy(mut self) -> Result<(), TaskError> {
        self.tm.inner.store.delete_node(&self.token).await?;
        self.released = true;
        info!(node_uuid = %self.token.node, "node deleted");
        Ok(())
    }
}

impl std::fmt::Debug for ExclusiveTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExclusiveTask")
            .field("node", &self.token.node)
            .field("holder", &self.token.holder)
            .field("epoch", &self.token.epoch)
            .field("purpose", &self.token.purpose)
            .finish()
    }
}

impl std::fmt::Debug for SharedTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTask")
            .field("node", &self.node.uuid)
            .field("purpose", &self.purpose)
            .finish()
    }
}

impl Drop for ExclusiveTask {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        warn!(node_uuid = %self.token.node, purpose = %self.token.purpose, lock_epoch = self.token.epoch, "exclusive task dropped without release; releasing in the background");
        let tm = self.tm.clone();
        let token = self.token.clone();
        let pending = self.pending.take();
        let node = self.node.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(async move {
                    let mut task = ExclusiveTask {
                        tm,
                        token,
                        node,
                        acquired: Instant::now(),
                        pending,
                        prior: None,
                        error_hook: None,
                        released: false,
                    };
                    // A task abandoned mid-operation (its future dropped) leaves
                    // the node in a transient state nobody is working on; fail
                    // it before giving the lock back. Wait states are meant to
                    // be left unlocked and are not touched.
                    let state = task.node.provision_state;
                    if state.is_unstable() && !state.is_wait() {
                        let why = format!(
                            "the task working on the node ({}) ended without finishing; the node was in \"{state}\"",
                            task.token.purpose
                        );
                        let failed = task
                            .process_event(
                                Event::Fail,
                                EventOpts { last_error: Some(why), ..Default::default() },
                            )
                            .await;
                        if let Err(e) = failed {
                            warn!(node_uuid = %task.token.node, error.message = %e, "could not fail the node of an abandoned task");
                        }
                    }
                    task.release_inner().await;
                });
            }
            Err(_) => {
                error!(node_uuid = %token.node, "no runtime to release a dropped task's lock; it stays until this conductor restarts")
            }
        }
    }
}

//! One simulated run: conductors running the real TaskManager against the
//! memory store, a nemesis injecting faults, and the checkers.

use crate::checker::{short, Model, Violation};
use crate::conn::{SimConn, ACTOR};
use crate::rng::Rng;
use ferric_conductor::cluster::{recover_lock, recover_own_locks, recover_stale_locks_once, Cause};
use ferric_conductor::{
    ConductorConfig, EventOpts, ExclusiveTask, MemorySink, RemoteWake, Retry, TaskError,
    TaskManager,
};
use ferric_core::{DbTime, Event, NewNode, PowerState, ProvisionState};
use ferric_store::memory::{Bug, Clock, Fence, LatencyFn, MemoryStore};
use ferric_store::{
    Claim, ConductorInfo, LockToken, NodeQuery, PowerObservation, Store, StoreError,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

/// Which faults a run injects, and which known gaps it works around.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConfig {
    /// Conductor crash (its tasks vanish, heartbeats stop) and restart.
    pub crashes: bool,
    /// Pauses: a zombie conductor that later writes with its old token.
    pub pauses: bool,
    /// Lost and delayed cross-conductor wakeups.
    pub lost_notifications: bool,
    /// Store errors (operations fail before applying) and latency.
    pub store_errors: bool,
    /// An operator force-releases a live holder's lock (`ferric lock
    /// release --force`): the holder must be fenced out.
    pub operator_releases: bool,
    /// Operations that apply and then report an error (a commit whose
    /// acknowledgement was lost).
    pub ambiguous_commits: bool,
    /// A waiting acquisition is dropped (its caller went away, like an HTTP
    /// handler whose client disconnected).
    pub cancelled_waits: bool,
    /// Each conductor runs a power sync that records power states without
    /// the lock (`Store::record_power_states`), read a while before.
    pub power_sync: bool,
    /// Clean up after the TaskManager's known gaps (see crate docs). Off:
    /// the simulator reports them.
    pub workarounds: Workarounds,
    /// Plant a bug in the store (checker tests).
    pub bug: Option<Bug>,
    /// Keep the trace lines (replay) instead of only hashing them.
    pub keep_trace: bool,
    /// Simulated time with work and faults, before the quiet drain.
    pub active: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            crashes: true,
            pauses: true,
            lost_notifications: true,
            store_errors: true,
            operator_releases: true,
            ambiguous_commits: true,
            cancelled_waits: true,
            power_sync: true,
            workarounds: Workarounds::ALL,
            bug: None,
            keep_trace: false,
            active: Duration::from_secs(60),
        }
    }
}

/// The simulator's stand-ins for cleanup the TaskManager and recovery do not
/// do yet (crate docs, gaps 1 to 4). Each can be turned off to show the gap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workarounds {
    /// Gap 1: after a store error cut an acquisition short, cancel its
    /// queued waiter (or release the lock it was granted meanwhile).
    pub cancel_left_waiter: bool,
    /// Gap 2: retry a release (or a handoff's fallback release) that failed
    /// with a store error.
    pub retry_release: bool,
    /// Gap 3: on restart, drop the previous life's queued waiters.
    pub drop_own_waiters_on_restart: bool,
    /// Gap 4: release a lock recovery (or an operator release) took over and
    /// then failed to finish with.
    pub release_after_failed_recovery: bool,
}

impl Workarounds {
    /// Every workaround on (the default: runs report protocol violations).
    pub const ALL: Workarounds = Workarounds {
        cancel_left_waiter: true,
        retry_release: true,
        drop_own_waiters_on_restart: true,
        release_after_failed_recovery: true,
    };
    /// Every workaround off: runs also report the gaps.
    pub const NONE: Workarounds = Workarounds {
        cancel_left_waiter: false,
        retry_release: false,
        drop_own_waiters_on_restart: false,
        release_after_failed_recovery: false,
    };

    /// Turn one off by name; false when the name is unknown.
    pub fn disable(&mut self, name: &str) -> bool {
        let flag = match name {
            "cancel-left-waiter" => &mut self.cancel_left_waiter,
            "retry-release" => &mut self.retry_release,
            "drop-own-waiters-on-restart" => &mut self.drop_own_waiters_on_restart,
            "release-after-failed-recovery" => &mut self.release_after_failed_recovery,
            _ => return false,
        };
        *flag = false;
        true
    }
}

/// What a run did and found.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub seed: u64,
    /// FNV-1a of the trace: equal for two runs of one seed.
    pub trace_hash: u64,
    pub violations: Vec<Violation>,
    /// Empty unless `keep_trace`.
    pub trace: Vec<String>,
    pub simulated_ms: u64,
    pub store_ops: u64,
    pub summary: String,
}

/// Database clock at simulated time zero (µs since the epoch).
const ORIGIN_US: i64 = 1_700_000_000_000_000;
/// How long after the active period every waiter must have been served.
const DRAIN: Duration = Duration::from_secs(120);
const CHECK_EVERY: Duration = Duration::from_millis(100);

/// Timings and sizes drawn from the seed.
#[derive(Debug, Clone)]
struct Params {
    conductors: usize,
    nodes: usize,
    workers: usize,
    latency_ms_max: u64,
    heartbeat_interval: Duration,
    heartbeat_timeout: Duration,
    retry_interval: Duration,
    recovery_period: Duration,
    max_waiters: u32,
}

impl Params {
    fn draw(rng: &mut Rng) -> Self {
        let retry_ms = [200, 500, 1000][rng.pick(3)];
        Params {
            conductors: rng.range(2, 5) as usize,
            nodes: rng.range(1, 4) as usize,
            workers: rng.range(1, 4) as usize,
            latency_ms_max: [0, 2, 10, 50][rng.pick(4)],
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(rng.range(3, 7)),
            retry_interval: Duration::from_millis(retry_ms),
            recovery_period: Duration::from_secs(2),
            max_waiters: if rng.chance(25) { 2 } else { 32 },
        }
    }

    /// A lock whose holder nobody runs must be gone within this.
    fn orphan_bound(&self) -> Duration {
        self.retry_interval * 2 + Duration::from_secs(3)
    }

    /// A dead holder's lock must be recovered within this after it died
    /// (SPEC §7: heartbeat_timeout + one recovery period after its last
    /// heartbeat). Store errors can fail recovery passes: then a few more.
    fn recovery_bound(&self, store_faults: bool) -> Duration {
        let slack = Duration::from_millis(self.latency_ms_max * 10 + 100);
        if store_faults {
            self.recovery_period * 5 + Duration::from_secs(2)
        } else {
            self.recovery_period + slack
        }
    }

    /// A granted waiter must have its task within this after the grant.
    fn wake_bound(&self) -> Duration {
        self.retry_interval + Duration::from_millis(self.latency_ms_max * 6 + 500)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Up,
    Paused,
    Down,
}

struct Slot {
    host: String,
    life: u32,
    status: Status,
    /// Database clock since which the conductor runs without a pause.
    up_since_us: i64,
    conn: Arc<SimConn>,
    tm: TaskManager,
    actors: Vec<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
}

/// A handoff announced to its receiver: (claim task id, node, expiry µs).
type Announced = (Uuid, Uuid, i64);

/// A worker waiting in `acquire`.
#[derive(Debug, Clone)]
struct Waiting {
    host: String,
    node: Uuid,
    since_us: i64,
}

struct World {
    seed: u64,
    cfg: SimConfig,
    p: Params,
    store: Arc<MemoryStore>,
    model: Arc<Mutex<Model>>,
    nodes: Vec<Uuid>,
    slots: Mutex<Vec<Slot>>,
    /// Locks a running worker believes it holds → when it stopped believing
    /// (`None`: still does).
    believers: Mutex<BTreeMap<Fence, Option<i64>>>,
    waiting: Mutex<BTreeMap<u64, Waiting>>,
    reported: Mutex<std::collections::BTreeSet<(&'static str, Fence)>>,
    /// Handoffs announced to a conductor before they commit: host →
    /// (task id of the claim, node, expiry on the database clock).
    handoffs: Mutex<BTreeMap<String, Vec<Announced>>>,
    /// Nodes seen in a transient state with no holder → since when.
    transient_unlocked: Mutex<BTreeMap<Uuid, i64>>,
    stop: AtomicBool,
    /// Faults on (off for the drain).
    chaos: AtomicBool,
    wake_rng: Mutex<Rng>,
    origin: Instant,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Run one seed to completion on a fresh paused-clock runtime.
pub fn run(seed: u64, cfg: &SimConfig) -> Outcome {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return Outcome {
                seed,
                trace_hash: 0,
                violations: vec![Violation {
                    at_ms: 0,
                    invariant: "runtime",
                    detail: format!("cannot build runtime: {e}"),
                }],
                trace: Vec::new(),
                simulated_ms: 0,
                store_ops: 0,
                summary: String::new(),
            }
        }
    };
    rt.block_on(simulate(seed, cfg.clone()))
}

fn sim_clock(origin: Instant) -> Clock {
    Arc::new(move || {
        let us = i64::try_from(origin.elapsed().as_micros()).unwrap_or(i64::MAX / 2);
        DbTime(ORIGIN_US + us)
    })
}

fn latency(seed: u64, max_ms: u64) -> LatencyFn {
    let rng = Mutex::new(Rng::fork(seed, 0x1a7e));
    Arc::new(move |_op| {
        if max_ms == 0 {
            return Duration::ZERO;
        }
        Duration::from_micros(lock(&rng).range(0, max_ms * 1000))
    })
}

async fn simulate(seed: u64, cfg: SimConfig) -> Outcome {
    let mut rng = Rng::new(seed);
    let p = Params::draw(&mut rng);
    let origin = Instant::now();
    let store = Arc::new(MemoryStore::with_clock(
        p.heartbeat_timeout,
        sim_clock(origin),
    ));
    let nodes = create_nodes(&store, seed, p.nodes).await;
    let timeout_us = i64::try_from(p.heartbeat_timeout.as_micros()).unwrap_or(i64::MAX);
    let model = Arc::new(Mutex::new(Model::new(
        &store.peek_nodes(),
        timeout_us,
        ORIGIN_US,
        cfg.keep_trace,
    )));
    {
        let model = model.clone();
        store.set_observer(Some(Arc::new(move |e| lock(&model).apply(e))));
    }
    store.set_latency(Some(latency(seed, p.latency_ms_max)));
    store.plant_bug(cfg.bug);
    let summary = format!(
        "seed {seed}: {} conductors × {} workers, {} nodes, latency ≤ {} ms, heartbeat timeout {:?}, retry interval {:?}, max waiters {}",
        p.conductors, p.workers, p.nodes, p.latency_ms_max, p.heartbeat_timeout, p.retry_interval, p.max_waiters
    );
    let world = Arc::new(World {
        seed,
        p,
        store,
        model,
        nodes,
        slots: Mutex::new(Vec::new()),
        believers: Mutex::new(BTreeMap::new()),
        waiting: Mutex::new(BTreeMap::new()),
        reported: Mutex::new(Default::default()),
        handoffs: Mutex::new(BTreeMap::new()),
        transient_unlocked: Mutex::new(BTreeMap::new()),
        stop: AtomicBool::new(false),
        chaos: AtomicBool::new(true),
        wake_rng: Mutex::new(Rng::fork(seed, 0x3a4e)),
        origin,
        cfg,
    });
    world.line(summary.clone());
    for i in 0..world.p.conductors {
        start_conductor(&world, i, 0).await;
    }
    let checker = tokio::spawn(check_loop(world.clone()));
    let nemesis = tokio::spawn(nemesis(world.clone(), Rng::fork(seed, 0x4e3e)));
    tokio::time::sleep(world.cfg.active).await;
    nemesis.abort();
    drain(&world).await;
    checker.abort();
    for slot in lock(&world.slots).iter() {
        for h in slot.actors.iter().chain(slot.workers.iter()) {
            h.abort();
        }
    }
    world.store.set_observer(None);
    let mut m = lock(&world.model);
    Outcome {
        seed,
        trace_hash: m.hash,
        violations: std::mem::take(&mut m.violations),
        trace: std::mem::take(&mut m.trace),
        simulated_ms: u64::try_from(world.origin.elapsed().as_millis()).unwrap_or(0),
        store_ops: world.store.ops(),
        summary,
    }
}

async fn create_nodes(store: &MemoryStore, seed: u64, n: usize) -> Vec<Uuid> {
    let mut out = Vec::new();
    for i in 0..n {
        let uuid = Uuid::from_u128(((0x5eed_0000 + i as u128) << 96) | u128::from(seed));
        let new = NewNode {
            uuid: Some(uuid),
            name: Some(format!("node-{i}")),
            driver: "fake-hardware".into(),
            ..Default::default()
        };
        if store.create_node(new).await.is_ok() {
            out.push(uuid);
        }
    }
    out
}

impl World {
    fn now_us(&self) -> i64 {
        ORIGIN_US + i64::try_from(self.origin.elapsed().as_micros()).unwrap_or(0)
    }

    fn line(&self, text: String) {
        let now = self.now_us();
        lock(&self.model).line(now, text);
    }

    fn violate(&self, invariant: &'static str, detail: String) {
        let now = self.now_us();
        lock(&self.model).violate(now, invariant, detail);
    }

    /// Report a standing condition once per `key` (it is checked every tick).
    fn violate_once(&self, invariant: &'static str, key: &Fence, detail: String) {
        if lock(&self.reported).insert((invariant, key.clone())) {
            self.violate(invariant, detail);
        }
    }

    fn config(&self, host: &str) -> ConductorConfig {
        ConductorConfig {
            host: host.to_string(),
            heartbeat_interval: self.p.heartbeat_interval,
            heartbeat_timeout: self.p.heartbeat_timeout,
            node_locked_retry_interval: self.p.retry_interval,
            max_waiters_per_node: self.p.max_waiters,
            workers_pool_size: 3,
            ..Default::default()
        }
    }

    fn slot<R>(&self, i: usize, f: impl FnOnce(&mut Slot) -> R) -> Option<R> {
        lock(&self.slots).get_mut(i).map(f)
    }
}

/// Delivers cross-conductor wakeups, losing or delaying some.
struct Router {
    world: std::sync::Weak<World>,
}

impl RemoteWake for Router {
    fn wake(&self, conductor: &str, node: Uuid, task_id: Uuid) {
        let Some(world) = self.world.upgrade() else {
            return;
        };
        let chaos = world.cfg.lost_notifications && world.chaos.load(Ordering::SeqCst);
        let (lost, delay) = {
            let mut r = lock(&world.wake_rng);
            let lost = chaos && r.chance(25);
            let delay = if chaos && r.chance(30) {
                r.millis(1, 2000)
            } else {
                Duration::ZERO
            };
            (lost, delay)
        };
        let label = lock(&world.model).label(conductor, task_id);
        if lost {
            world.line(format!("wakeup  {label} node {} LOST", short(node)));
            return;
        }
        let host = conductor.to_string();
        let deliver = move |world: &World| {
            let tm = lock(&world.slots)
                .iter()
                .find(|s| s.host == host && s.status != Status::Down)
                .map(|s| s.tm.clone());
            if let Some(tm) = tm {
                tm.waiters().wake(task_id);
            }
        };
        if delay.is_zero() {
            deliver(&world);
            return;
        }
        world.line(format!(
            "wakeup  {label} node {} delayed {delay:?}",
            short(node)
        ));
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            deliver(&world);
        });
    }
}

/// Bring up conductor `i` (life `life`): clean up a previous life, register,
/// start heartbeats, recovery and workers.
async fn start_conductor(world: &Arc<World>, i: usize, life: u32) {
    let host = format!("c{i}");
    let conn = Arc::new(SimConn::new(world.store.clone(), &host));
    let tm = TaskManager::new(
        conn.clone() as Arc<dyn Store>,
        world.config(&host),
        Arc::new(MemorySink::default()),
    );
    tm.set_remote_wake(Arc::new(Router {
        world: Arc::downgrade(world),
    }));
    if life > 0 {
        restart_cleanup(world, &tm, &conn, &host).await;
    }
    let info = ConductorInfo {
        hostname: host.clone(),
        conductor_group: String::new(),
        drivers: vec!["fake-hardware".into()],
    };
    while let Err(e) = conn.register_conductor(&info).await {
        world.line(format!("{host} register failed: {e}"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut actors = vec![
        tokio::spawn(heartbeat_loop(
            conn.clone(),
            host.clone(),
            world.p.heartbeat_interval,
        )),
        tokio::spawn(recovery_loop(
            world.clone(),
            tm.clone(),
            conn.clone(),
            actor_id(i, life, 99),
        )),
    ];
    actors.push(tokio::spawn(adopter(
        world.clone(),
        tm.clone(),
        conn.clone(),
        actor_id(i, life, 98),
        Rng::fork(world.seed, actor_id(i, life, 98)),
    )));
    if world.cfg.power_sync {
        actors.push(tokio::spawn(power_sync(
            world.clone(),
            conn.clone(),
            host.clone(),
            Rng::fork(world.seed, actor_id(i, life, 96)),
        )));
    }
    let mut workers = Vec::new();
    for w in 0..world.p.workers {
        let rng = Rng::fork(world.seed, actor_id(i, life, w as u64));
        workers.push(tokio::spawn(worker(
            world.clone(),
            tm.clone(),
            conn.clone(),
            actor_id(i, life, w as u64),
            format!("{host}.w{w}"),
            rng,
        )));
    }
    let now = world.now_us();
    let slot = Slot {
        host: host.clone(),
        life,
        status: Status::Up,
        up_since_us: now,
        conn,
        tm,
        actors,
        workers,
    };
    let mut slots = lock(&world.slots);
    if i < slots.len() {
        slots[i] = slot;
    } else {
        slots.push(slot);
    }
    drop(slots);
    world.line(format!("{host} up (life {life})"));
}

fn actor_id(conductor: usize, life: u32, n: u64) -> u64 {
    ((conductor as u64) << 48) | (u64::from(life) << 16) | n
}

/// SPEC §6: a restarted conductor recovers the locks of its previous life.
/// Workaround (gap 3): it also drops its previous life's queued waiters,
/// which would otherwise be granted the lock with nobody to use it.
async fn restart_cleanup(world: &World, tm: &TaskManager, conn: &SimConn, host: &str) {
    for _ in 0..50 {
        let own_locks = world
            .store
            .peek_nodes()
            .iter()
            .filter(|n| n.reservation.as_ref().is_some_and(|r| r.holder == host))
            .count();
        if own_locks == 0 {
            break;
        }
        if let Err(e) = recover_own_locks(tm).await {
            world.line(format!("{host} recover_own_locks failed: {e}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !world.cfg.workarounds.drop_own_waiters_on_restart {
        return;
    }
    for _ in 0..50 {
        let ghosts: Vec<(Uuid, i64, Uuid)> = world
            .nodes
            .iter()
            .flat_map(|n| {
                world
                    .store
                    .peek_waiters(*n)
                    .into_iter()
                    .filter(|w| w.conductor == host)
                    .map(move |w| (*n, w.ticket, w.task_id))
            })
            .collect();
        if ghosts.is_empty() {
            break;
        }
        for (node, ticket, task) in ghosts {
            if let Ok(Some(t)) = conn.cancel_wait(node, ticket, task).await {
                let _ = conn.release(&t).await;
            }
        }
    }
}

async fn heartbeat_loop(conn: Arc<SimConn>, host: String, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let _ = conn.heartbeat(&host).await;
    }
}

async fn recovery_loop(world: Arc<World>, tm: TaskManager, conn: Arc<SimConn>, id: u64) {
    loop {
        tokio::time::sleep(world.p.recovery_period).await;
        match ACTOR.scope(id, recover_stale_locks_once(&tm)).await {
            Ok(r) if !r.recovered.is_empty() => world.line(format!(
                "{} recovered {} stale locks ({} failed nodes)",
                tm.host(),
                r.recovered.len(),
                r.failed.len()
            )),
            Ok(_) => {}
            Err(e) => world.line(format!("{} recovery pass failed: {e}", tm.host())),
        }
        if world.cfg.workarounds.release_after_failed_recovery {
            reconcile(&world, &conn, id, Some(&tm)).await;
        }
    }
}

/// Workaround (gaps 1, 2, 4): release tokens and cancel waiters an actor
/// obtained but no longer runs (a store error cut its path short). Uses the
/// connection's ledger and reads the store directly to see what is left.
async fn reconcile(world: &World, conn: &SimConn, actor: u64, finish: Option<&TaskManager>) {
    let ledger = conn.take_ledger(actor);
    let stored = world.store.peek_nodes();
    for t in ledger.tokens {
        let held = stored.iter().any(|n| {
            n.reservation
                .as_ref()
                .is_some_and(|r| n.uuid == t.node && r.task_id == t.task_id && r.epoch == t.epoch)
        });
        if !held {
            continue;
        }
        world.line(format!(
            "reconcile: releasing leaked lock of node {}",
            short(t.node)
        ));
        if let Some(tm) = finish {
            finish_takeover(world, tm, &t).await;
        }
        release_retrying(world, conn, &t).await;
    }
    for (node, ticket, task) in ledger.queued {
        let queued = world
            .store
            .peek_waiters(node)
            .iter()
            .any(|w| w.ticket == ticket);
        let granted = stored
            .iter()
            .any(|n| n.uuid == node && n.reservation.as_ref().is_some_and(|r| r.task_id == task));
        if !queued && !granted {
            continue;
        }
        world.line(format!(
            "reconcile: cancelling leaked waiter ticket {ticket}"
        ));
        for _ in 0..20 {
            match conn.cancel_wait(node, ticket, task).await {
                Ok(Some(t)) => {
                    release_retrying(world, conn, &t).await;
                    break;
                }
                Ok(None) => break,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

/// A takeover (recovery, operator release) that stopped after its handoff
/// must still fail a node left in a transient state before letting go.
async fn finish_takeover(world: &World, tm: &TaskManager, t: &LockToken) {
    for _ in 0..20 {
        let mut task = match tm.adopt(t.clone()).await {
            Ok(task) => task,
            Err(e) if e.is_lock_lost() || e.is_not_found() => return,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = task.node().provision_state;
        let done = if state.is_unstable() {
            let opts = EventOpts {
                last_error: Some(format!("lock taken over while the node was in {state}")),
                ..Default::default()
            };
            task.process_event(Event::Fail, opts).await
        } else {
            Ok(())
        };
        // Released here when it can be; the caller retries a failed release.
        let _ = task.release().await;
        match done {
            Ok(()) => {
                world.line(format!(
                    "reconcile: failed node {} out of {state}",
                    short(t.node)
                ));
                return;
            }
            Err(e) if e.is_lock_lost() => return,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn release_retrying(world: &World, conn: &SimConn, t: &LockToken) {
    for _ in 0..20 {
        match conn.release(t).await {
            Ok(rel) => {
                if let Some(g) = rel.granted_to {
                    let tm = lock(&world.slots)
                        .iter()
                        .find(|s| s.host == g.conductor && s.status != Status::Down)
                        .map(|s| s.tm.clone());
                    if let Some(tm) = tm {
                        tm.waiters().wake(g.task_id);
                    }
                }
                return;
            }
            Err(
                StoreError::NodeNotLocked { .. }
                | StoreError::NodeNotFound(_)
                | StoreError::LockLost { .. },
            ) => return,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn worker(
    world: Arc<World>,
    tm: TaskManager,
    conn: Arc<SimConn>,
    id: u64,
    label: String,
    mut rng: Rng,
) {
    while !world.stop.load(Ordering::SeqCst) {
        tokio::time::sleep(rng.millis(0, 2000)).await;
        if world.stop.load(Ordering::SeqCst) {
            break;
        }
        let node = world.nodes[rng.pick(world.nodes.len())];
        let patient = rng.chance(75);
        let cancel_after =
            (world.cfg.cancelled_waits && patient && rng.chance(20)).then(|| rng.millis(1, 3000));
        one_round(
            &world,
            &tm,
            &conn,
            id,
            &label,
            node,
            patient,
            cancel_after,
            &mut rng,
        )
        .await;
        if world.cfg.workarounds.cancel_left_waiter {
            reconcile(&world, &conn, id, None).await;
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn one_round(
    world: &World,
    tm: &TaskManager,
    conn: &SimConn,
    id: u64,
    label: &str,
    node: Uuid,
    patient: bool,
    cancel_after: Option<Duration>,
    rng: &mut Rng,
) {
    let retry = if patient { Retry::Patient } else { Retry::None };
    let since_us = world.now_us();
    lock(&world.waiting).insert(
        id,
        Waiting {
            host: tm.host().to_string(),
            node,
            since_us,
        },
    );
    let acquire = tm.acquire(node).purpose(label).retry(retry).exclusive();
    let result = match cancel_after {
        None => Some(ACTOR.scope(id, acquire).await),
        Some(d) => tokio::time::timeout(d, ACTOR.scope(id, acquire)).await.ok(),
    };
    lock(&world.waiting).remove(&id);
    let mode = if patient { "patient" } else { "once" };
    let mut task = match result {
        None => {
            world.line(format!(
                "{label} acquire node {} {mode} CANCELLED by caller",
                short(node)
            ));
            return;
        }
        Some(Err(e)) => {
            world.line(format!(
                "{label} acquire node {} {mode} failed: {}",
                short(node),
                brief(&e)
            ));
            return;
        }
        Some(Ok(t)) => t,
    };
    let fence = Fence::from(task.token());
    world.line(format!(
        "{label} acquire node {} {mode} -> epoch {}",
        short(node),
        fence.epoch
    ));
    check_wake_bound(world, tm.host(), &fence);
    lock(&world.believers).insert(fence.clone(), None);
    let lost = hold(world, &mut task, id, label, rng).await;
    tokio::time::sleep(rng.millis(0, 1000)).await;
    let token = task.token().clone();
    let now = world.now_us();
    lock(&world.believers).insert(fence.clone(), Some(now));
    let others: Vec<usize> = (0..world.p.conductors)
        .filter(|j| format!("c{j}") != tm.host())
        .collect();
    if !lost && !others.is_empty() && rng.chance(15) {
        let to = Claim {
            holder: format!("c{}", others[rng.pick(others.len())]),
            task_id: Uuid::from_u64_pair(rng.next_u64(), rng.next_u64()),
            purpose: format!("{label} handoff"),
        };
        // The receiver learns the claim first, then watches for the handoff:
        // told only afterwards, a giver paused or crashed right after the
        // commit would leave a live receiver holding a lock it never uses.
        let expiry = world.now_us() + 60_000_000;
        lock(&world.handoffs)
            .entry(to.holder.clone())
            .or_default()
            .push((to.task_id, node, expiry));
        match ACTOR.scope(id, task.handoff(&to)).await {
            Ok(t) => {
                world.line(format!(
                    "{label} handed node {} to {} (epoch {})",
                    short(node),
                    t.holder,
                    t.epoch
                ));
            }
            Err(e) => {
                world.line(format!(
                    "{label} handoff node {}: {}",
                    short(node),
                    brief(&e)
                ));
                // Withdraw the announcement only when the handoff surely did
                // not happen: after any other error it may have committed.
                if e.is_lock_lost() {
                    if let Some(v) = lock(&world.handoffs).get_mut(&to.holder) {
                        v.retain(|h| h.0 != to.task_id);
                    }
                } else if world.cfg.workarounds.retry_release {
                    release_retrying(world, conn, &token).await;
                }
            }
        }
        return;
    }
    // Half the tasks end with a last write folded into the release (one
    // store call, one transaction on the SQL stores).
    let ended = if !lost && rng.chance(50) {
        let stamp = format!("{label}@{}", fence.epoch);
        task.node_mut()
            .extra
            .insert("writer".into(), serde_json::Value::String(stamp));
        ACTOR.scope(id, task.save_and_release()).await.map(drop)
    } else {
        ACTOR.scope(id, task.release()).await
    };
    if let Err(e) = ended {
        world.line(format!(
            "{label} release node {} epoch {}: {}",
            short(node),
            fence.epoch,
            brief(&e)
        ));
        if world.cfg.workarounds.retry_release && !e.is_lock_lost() {
            release_retrying(world, conn, &token).await;
        }
    }
}

/// Work under the lock: maybe a provision-state excursion through a transient
/// state (so a crash leaves one for recovery to fail), a few fenced writes.
/// Returns whether the lock was found lost.
async fn hold(
    world: &World,
    task: &mut ExclusiveTask,
    id: u64,
    label: &str,
    rng: &mut Rng,
) -> bool {
    let (start, finish) = match task.node().provision_state {
        ProvisionState::Enroll => (Some(Event::Manage), Some(Event::Done)),
        ProvisionState::Manageable if rng.chance(50) => (Some(Event::Inspect), Some(Event::Done)),
        ProvisionState::InspectFailed => (Some(Event::Manage), None),
        _ => (None, None),
    };
    if let Some(ev) = start {
        if event(world, task, id, label, ev).await {
            return true;
        }
    }
    let epoch = task.token().epoch;
    for _ in 0..rng.range(0, 3) {
        tokio::time::sleep(rng.millis(0, 1500)).await;
        let stamp = format!("{label}@{epoch}");
        task.node_mut()
            .extra
            .insert("writer".into(), serde_json::Value::String(stamp));
        if let Err(e) = ACTOR.scope(id, task.save()).await {
            world.line(format!("{label} save epoch {epoch}: {}", brief(&e)));
            if e.is_lock_lost() {
                return true;
            }
        }
    }
    match finish {
        Some(ev) => event(world, task, id, label, ev).await,
        None => false,
    }
}

/// Process `ev`, retrying store errors a few times. Returns whether the lock
/// was found lost.
async fn event(world: &World, task: &mut ExclusiveTask, id: u64, label: &str, ev: Event) -> bool {
    for _ in 0..10 {
        let r = ACTOR
            .scope(id, task.process_event(ev, EventOpts::default()))
            .await;
        match r {
            Ok(()) => {
                world.line(format!("{label} {ev:?} -> {}", task.node().provision_state));
                return false;
            }
            Err(e) if e.is_lock_lost() => {
                world.line(format!("{label} {ev:?}: LockLost"));
                return true;
            }
            Err(TaskError::Domain(e)) => {
                world.line(format!("{label} {ev:?} refused: {e}"));
                return false;
            }
            Err(e) => {
                world.line(format!("{label} {ev:?}: {}", brief(&e)));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    false
}

/// Takes charge of locks handed to this conductor: watches the nodes of
/// announced handoffs, adopts the lock once it is there, holds it a while and
/// releases it.
async fn adopter(world: Arc<World>, tm: TaskManager, conn: Arc<SimConn>, id: u64, mut rng: Rng) {
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = world.now_us();
        let pending: Vec<Announced> = lock(&world.handoffs)
            .get_mut(tm.host())
            .map(|v| {
                v.retain(|h| h.2 > now);
                v.clone()
            })
            .unwrap_or_default();
        for (task_id, node, _) in pending {
            let Ok(view) = conn.lock_view(node).await else {
                continue;
            };
            let Some(token) = view.token().filter(|t| t.task_id == task_id) else {
                continue;
            };
            let fence = Fence::from(&token);
            let task = match ACTOR.scope(id, tm.adopt(token.clone())).await {
                Ok(task) => task,
                Err(e) => {
                    world.line(format!(
                        "{} adopt node {}: {}",
                        tm.host(),
                        short(node),
                        brief(&e)
                    ));
                    continue;
                }
            };
            if let Some(v) = lock(&world.handoffs).get_mut(tm.host()) {
                v.retain(|h| h.0 != task_id);
            }
            world.line(format!(
                "{} adopted node {} (epoch {})",
                tm.host(),
                short(node),
                fence.epoch
            ));
            lock(&world.believers).insert(fence.clone(), None);
            tokio::time::sleep(rng.millis(0, 1000)).await;
            let now = world.now_us();
            lock(&world.believers).insert(fence.clone(), Some(now));
            if let Err(e) = ACTOR.scope(id, task.release()).await {
                if world.cfg.workarounds.retry_release && !e.is_lock_lost() {
                    release_retrying(&world, &conn, &token).await;
                }
            }
        }
        if world.cfg.workarounds.cancel_left_waiter {
            reconcile(&world, &conn, id, None).await;
        }
    }
}

/// Power sync without the lock, as `ferric_conductor::power` does it: read
/// some nodes, ask their "BMCs" (a random simulated while, during which
/// other actors take the lock and write), then record what was read with
/// `record_power_states`, fenced by the `lock_epoch` and `revision` read.
/// The store must drop every reading someone took the lock or wrote the node
/// since; the checker validates each one it records.
async fn power_sync(world: Arc<World>, conn: Arc<SimConn>, host: String, mut rng: Rng) {
    loop {
        tokio::time::sleep(rng.millis(1000, 5000)).await;
        let one = rng.chance(30).then(|| rng.pick(world.nodes.len()));
        let read = if let Some(node) = one.and_then(|i| world.nodes.get(i)) {
            conn.get_node(&(*node).into()).await.map(|n| vec![n])
        } else {
            conn.list_nodes(&NodeQuery::default())
                .await
                .map(|page| page.nodes)
        };
        let nodes = match read {
            Ok(nodes) => nodes,
            Err(e) => {
                world.line(format!("{host} power sync read: {e}"));
                continue;
            }
        };
        // Power sync leaves locked nodes alone; now and then a caller that
        // does not, whose readings the store must refuse all the same.
        let careless = rng.chance(20);
        let observed: Vec<PowerObservation> = nodes
            .iter()
            .filter(|n| careless || n.reservation.is_none())
            .map(|n| PowerObservation {
                node: n.uuid,
                lock_epoch: n.lock_epoch,
                revision: n.revision,
                power_state: if rng.chance(50) {
                    PowerState::On
                } else {
                    PowerState::Off
                },
            })
            .collect();
        if observed.is_empty() {
            continue;
        }
        let bmc = match rng.range(0, 100) {
            0..50 => rng.millis(0, 20),
            50..85 => rng.millis(20, 1000),
            _ => rng.millis(1000, 5000),
        };
        tokio::time::sleep(bmc).await;
        // A store error is retried a few times with the same readings: after
        // an ambiguous commit they are stale, and must be refused.
        for _ in 0..3 {
            match conn.record_power_states(&observed).await {
                Ok(recorded) => {
                    world.line(format!(
                        "{host} power sync recorded {} of {} after {bmc:?}",
                        recorded.len(),
                        observed.len()
                    ));
                    break;
                }
                Err(e) => {
                    world.line(format!("{host} power sync record: {e}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

fn brief(e: &TaskError) -> String {
    match e {
        TaskError::Store(StoreError::NodeLocked { queue_full, .. }) => {
            format!(
                "NodeLocked{}",
                if *queue_full { " (queue full)" } else { "" }
            )
        }
        TaskError::Store(StoreError::LockLost { .. }) => "LockLost".into(),
        TaskError::Store(StoreError::NodeNotLocked { .. }) => "NodeNotLocked".into(),
        other => other.to_string(),
    }
}

/// A granted waiter gets its task within the wake bound (a lost wakeup costs
/// at most one retry interval), unless its conductor was paused meanwhile.
fn check_wake_bound(world: &World, host: &str, fence: &Fence) {
    let now = world.now_us();
    let granted_at = lock(&world.model)
        .held(fence.node)
        .filter(|h| &h.fence == fence)
        .map(|h| h.at_us);
    let up_since = lock(&world.slots)
        .iter()
        .find(|s| s.host == host)
        .map(|s| s.up_since_us)
        .unwrap_or(now);
    if let Some(g) = granted_at {
        let bound = i64::try_from(world.p.wake_bound().as_micros()).unwrap_or(i64::MAX);
        if g >= up_since && now - g > bound {
            world.violate(
                "granted-waiter-woken",
                format!(
                    "{host} took {} ms to pick up the lock of node {} granted at epoch {} (bound {:?})",
                    (now - g) / 1000,
                    short(fence.node),
                    fence.epoch,
                    world.p.wake_bound()
                ),
            );
        }
    }
}

async fn nemesis(world: Arc<World>, mut rng: Rng) {
    loop {
        tokio::time::sleep(rng.millis(300, 4000)).await;
        let i = rng.pick(world.p.conductors);
        let roll = rng.range(0, 100);
        let cfg = &world.cfg;
        if roll < 15 && cfg.crashes {
            crash(&world, i, rng.millis(500, 15_000)).await;
        } else if roll < 35 && cfg.pauses {
            let d = if rng.chance(50) {
                rng.millis(100, 2000)
            } else {
                world.p.heartbeat_timeout + rng.millis(0, 8000)
            };
            pause(&world, i, d);
        } else if roll < 55 && cfg.store_errors {
            let n = rng.range(1, 6) as u32;
            world.line(format!("store: next {n} operations fail"));
            world.store.fail_next(n);
        } else if roll < 62 && cfg.operator_releases {
            tokio::spawn(force_release(world.clone(), i, rng.next_u64()));
        } else if roll < 70 && cfg.ambiguous_commits {
            let conn = world.slot(i, |s| s.conn.clone());
            if let Some(conn) = conn {
                world.line(format!("c{i}: next operation commits then errors"));
                conn.ambiguous_next(1);
            }
        }
    }
}

/// An operator on conductor `i` force-releases some held lock, alive holder
/// or not, through the same conditional takeover as recovery.
async fn force_release(world: Arc<World>, i: usize, pick: u64) {
    let up = world.slot(i, |s| {
        (s.status == Status::Up).then(|| (s.tm.clone(), s.conn.clone(), s.life))
    });
    let Some(Some((tm, conn, life))) = up else {
        return;
    };
    let Ok(locks) = conn.list_locks().await else {
        return;
    };
    let held: Vec<_> = locks.into_iter().filter(|v| v.holder.is_some()).collect();
    if held.is_empty() {
        return;
    }
    let view = &held[(pick % held.len() as u64) as usize];
    let cause = Cause::Operator {
        actor: "sim-operator".into(),
        reason: "chaos".into(),
        forced: true,
    };
    let id = actor_id(i, life, 97);
    let holder = view.holder.clone().unwrap_or_default();
    match ACTOR.scope(id, recover_lock(&tm, view, cause)).await {
        Ok(done) => world.line(format!(
            "operator on {} force-released node {} from {holder} (epoch {}): {}",
            tm.host(),
            short(view.node),
            view.epoch,
            if done { "done" } else { "raced" }
        )),
        Err(e) => world.line(format!("operator force-release failed: {}", brief(&e))),
    }
    if world.cfg.workarounds.release_after_failed_recovery {
        reconcile(&world, &conn, id, Some(&tm)).await;
    }
}

fn pause(world: &Arc<World>, i: usize, d: Duration) {
    let conn = world.slot(i, |s| {
        (s.status == Status::Up).then(|| {
            s.status = Status::Paused;
            (s.conn.clone(), s.life)
        })
    });
    let Some(Some((conn, life))) = conn else {
        return;
    };
    world.line(format!("c{i} PAUSE for {d:?}"));
    conn.pause();
    let world = world.clone();
    tokio::spawn(async move {
        tokio::time::sleep(d).await;
        resume(&world, i, life);
    });
}

fn resume(world: &World, i: usize, life: u32) {
    let now = world.now_us();
    let conn = world.slot(i, |s| {
        (s.life == life && s.status == Status::Paused).then(|| {
            s.status = Status::Up;
            s.up_since_us = now;
            s.conn.clone()
        })
    });
    if let Some(Some(conn)) = conn {
        world.line(format!("c{i} resume"));
        conn.resume();
    }
}

async fn crash(world: &Arc<World>, i: usize, down: Duration) {
    let gone = world.slot(i, |s| {
        (s.status != Status::Down).then(|| {
            s.status = Status::Down;
            s.conn.crash();
            for h in s.actors.iter().chain(s.workers.iter()) {
                h.abort();
            }
            (s.host.clone(), s.life)
        })
    });
    let Some(Some((host, life))) = gone else {
        return;
    };
    world.line(format!("{host} CRASH (down {down:?})"));
    lock(&world.believers).retain(|f, _| f.holder != host);
    lock(&world.waiting).retain(|_, w| w.host != host);
    let world = world.clone();
    tokio::spawn(async move {
        tokio::time::sleep(down).await;
        restart(&world, i, life).await;
    });
}

async fn restart(world: &Arc<World>, i: usize, life: u32) {
    let down = world.slot(i, |s| s.life == life && s.status == Status::Down);
    if down == Some(true) {
        start_conductor(world, i, life + 1).await;
    }
}

/// Every CHECK_EVERY: the stored rows against the model, then the liveness
/// bounds that need to know which conductors run.
async fn check_loop(world: Arc<World>) {
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        check_now(&world);
    }
}

fn check_now(world: &World) {
    let now = world.now_us();
    let stored = world.store.peek_nodes();
    let store = world.store.clone();
    lock(&world.model).check_state(now, &stored, &move |n| store.peek_waiters(n));
    check_transient(world, now, &stored);
    let held = lock(&world.model).held_all();
    let slots: Vec<(String, Status, i64)> = lock(&world.slots)
        .iter()
        .map(|s| (s.host.clone(), s.status, s.up_since_us))
        .collect();
    let believers = lock(&world.believers).clone();
    for h in held {
        let holder = &h.fence.holder;
        let slot = slots.iter().find(|s| &s.0 == holder);
        let dead_since = lock(&world.model).dead_since(holder, now);
        match (dead_since, slot) {
            (Some(d), _) => {
                let since = d.max(h.at_us);
                let rescuer = slots
                    .iter()
                    .any(|s| &s.0 != holder && s.1 == Status::Up && s.2 <= since);
                let store_faults = world.cfg.store_errors || world.cfg.ambiguous_commits;
                let bound = world.p.recovery_bound(store_faults);
                let bound = i64::try_from(bound.as_micros()).unwrap_or(0);
                if rescuer && now - since > bound {
                    world.violate_once(
                        "dead-holder-recovered",
                        &h.fence,
                        format!(
                            "node {} still held by dead {holder} (epoch {}) {} ms after it died",
                            short(h.fence.node),
                            h.fence.epoch,
                            (now - since) / 1000
                        ),
                    );
                }
            }
            (None, Some((_, Status::Up, up_since))) if believers.get(&h.fence) != Some(&None) => {
                let since = h
                    .at_us
                    .max(*up_since)
                    .max(believers.get(&h.fence).copied().flatten().unwrap_or(0));
                let bound = i64::try_from(world.p.orphan_bound().as_micros()).unwrap_or(0);
                if now - since > bound {
                    world.violate_once(
                        "no-leaked-lock",
                        &h.fence,
                        format!(
                            "node {} held by live {holder} (epoch {}, purpose {:?}) for {} ms with no task using it",
                            short(h.fence.node),
                            h.fence.epoch,
                            h.purpose,
                            (now - since) / 1000
                        ),
                    );
                }
            }
            _ => {}
        }
    }
}

/// A node in a transient state is being worked on: it has a holder (a dead
/// one is the dead-holder check's business). Unheld, it would stay there.
fn check_transient(world: &World, now: i64, stored: &[ferric_core::Node]) {
    let bound = i64::try_from(world.p.orphan_bound().as_micros()).unwrap_or(0);
    let mut seen = lock(&world.transient_unlocked);
    for n in stored {
        if !n.provision_state.is_unstable() || n.reservation.is_some() {
            seen.remove(&n.uuid);
            continue;
        }
        let since = *seen.entry(n.uuid).or_insert(now);
        if now - since > bound {
            let key = Fence {
                node: n.uuid,
                holder: String::new(),
                task_id: Uuid::nil(),
                epoch: n.lock_epoch,
            };
            world.violate_once(
                "transient-state-has-holder",
                &key,
                format!(
                    "node {} in {} with no holder for {} ms (last error: {:?})",
                    short(n.uuid),
                    n.provision_state,
                    (now - since) / 1000,
                    n.last_error
                ),
            );
        }
    }
}

/// Stop faults and new work, heal every conductor, then require that every
/// waiter was served and every lock came back.
async fn drain(world: &Arc<World>) {
    world.chaos.store(false, Ordering::SeqCst);
    world.stop.store(true, Ordering::SeqCst);
    world.store.fail_next(0);
    world.line("drain: faults off, no new work".into());
    let n = world.p.conductors;
    for i in 0..n {
        let state = world.slot(i, |s| (s.status, s.life));
        match state {
            Some((Status::Paused, life)) => resume(world, i, life),
            Some((Status::Down, life)) => restart(world, i, life).await,
            _ => {}
        }
    }
    let deadline = Instant::now() + DRAIN;
    loop {
        let busy = lock(&world.slots)
            .iter()
            .any(|s| s.workers.iter().any(|h| !h.is_finished()));
        if !busy {
            break;
        }
        if Instant::now() >= deadline {
            let stuck: Vec<String> = lock(&world.waiting)
                .values()
                .map(|w| {
                    format!(
                        "{} waiting for node {} since {} ms",
                        w.host,
                        short(w.node),
                        (w.since_us - ORIGIN_US) / 1000
                    )
                })
                .collect();
            world.violate(
                "patient-waiter-granted",
                format!("workers still busy {DRAIN:?} after the faults stopped: {stuck:?}"),
            );
            break;
        }
        tokio::time::sleep(CHECK_EVERY).await;
    }
    tokio::time::sleep(world.p.recovery_bound(true)).await;
    check_now(world);
    let m = lock(&world.model);
    let held = m.held_all();
    let queued = m.queued();
    drop(m);
    if !held.is_empty() || queued > 0 {
        let who: Vec<String> = held
            .iter()
            .map(|h| {
                format!(
                    "node {} by {} ({})",
                    short(h.fence.node),
                    h.fence.holder,
                    h.purpose
                )
            })
            .collect();
        world.violate(
            "all-locks-returned",
            format!("after the drain: held {who:?}, {queued} waiters queued"),
        );
    }
}

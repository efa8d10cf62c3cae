//! `ferric bench locks` (SPEC §11): lock throughput against the raw database
//! limit measured in the same run, contended handoff latency, and fairness.
//! Results are data (JSON), never assertions.
//!
//! `ferric bench scale` (SPEC §11): enrolment rate, the full paginated detail
//! list, change-feed read and write throughput, power-sync cycle time and the
//! process's RSS at 100,000 nodes.

use crate::{ConductorConfig, LogSink, Retry, TaskError, TaskManager};
use ferric_core::NewNode;
use ferric_store::{ConductorInfo, SqlStore, Store};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// What to run.
#[derive(Debug, Clone)]
pub struct LockBenchParams {
    /// Concurrent workers (tasks) in each phase.
    pub workers: usize,
    /// Nodes for the uncontended phases (at least `workers`).
    pub nodes: usize,
    /// Length of each of the three phases.
    pub phase: Duration,
    /// How long a contended holder keeps the lock.
    pub hold: Duration,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub samples: usize,
}

/// One `ferric bench locks` result.
#[derive(Debug, Clone, Serialize)]
pub struct LockBenchReport {
    pub bench: &'static str,
    pub backend: ferric_store::Backend,
    pub workers: usize,
    pub nodes: usize,
    pub phase_s: f64,
    /// Uncontended TaskManager exclusive acquire + release per second.
    pub pairs_per_s: f64,
    /// Raw conditional UPDATE pairs per second, same backend, same run.
    pub raw_update_pairs_per_s: f64,
    /// pairs_per_s / raw_update_pairs_per_s (target ≥ 0.5).
    pub ratio_to_raw: f64,
    /// Release start → next waiter holds, `workers` waiters on one node.
    pub handoff_latency_ms: Latency,
    /// Jain's fairness index of acquisitions per worker in the contended phase.
    pub jain_index: f64,
    /// Workers that never got the lock in the contended phase.
    pub starved: usize,
    /// Longest wait for the contended lock.
    pub max_wait_ms: f64,
    /// SPEC §11 bound for max_wait_ms: queue length (`workers`) × hold time
    /// + 10 ms, with the hold time as measured (`measured_hold_ms`).
    pub max_wait_bound_ms: f64,
    /// Every wait for the contended lock (acquire called → held).
    pub wait_ms: Latency,
    /// The hold asked for (`tokio::time::sleep`).
    pub hold_ms: f64,
    /// The mean hold as it happened: a 1 ms tokio sleep lasts longer (the
    /// timer has millisecond granularity), and the bound must use the real one.
    pub measured_hold_ms: f64,
    pub contended_acquisitions: u64,
}

fn latency(mut v: Vec<f64>) -> Latency {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| {
        if v.is_empty() {
            0.0
        } else {
            v[((v.len() - 1) as f64 * q).round() as usize]
        }
    };
    Latency {
        p50: at(0.5),
        p99: at(0.99),
        max: v.last().copied().unwrap_or(0.0),
        samples: v.len(),
    }
}

/// Jain's index: (Σx)² / (n·Σx²); 1.0 is perfectly fair.
pub fn jain_index(xs: &[u64]) -> f64 {
    let n = xs.len() as f64;
    let sum: f64 = xs.iter().map(|&x| x as f64).sum();
    let sq: f64 = xs.iter().map(|&x| (x as f64) * (x as f64)).sum();
    if sq == 0.0 {
        0.0
    } else {
        sum * sum / (n * sq)
    }
}

/// Run the three phases on `store` (which should be an empty database).
pub async fn run_lock_bench(
    store: Arc<SqlStore>,
    p: LockBenchParams,
) -> Result<LockBenchReport, TaskError> {
    let host = "bench-conductor";
    store
        .register_conductor(&ConductorInfo {
            hostname: host.into(),
            conductor_group: String::new(),
            drivers: vec![],
        })
        .await?;
    let workers = p.workers.max(1);
    let mut nodes = Vec::new();
    for i in 0..p.nodes.max(workers) {
        let n = store
            .create_node(NewNode {
                name: Some(format!("bench-{i}")),
                driver: "fake-hardware".into(),
                ..Default::default()
            })
            .await?;
        nodes.push(n.uuid);
    }
    let nodes = Arc::new(nodes);

    // Phase 1: the raw limit.
    let raw = run_phase(workers, p.phase, {
        let store = store.clone();
        let nodes = nodes.clone();
        move |w, i| {
            let store = store.clone();
            let node = nodes[(w + i * workers) % nodes.len()];
            async move {
                store
                    .raw_update_pair(node, host)
                    .await
                    .map(|_| ())
                    .map_err(TaskError::from)
            }
        }
    })
    .await?;

    // Phase 2: the product path, uncontended.
    let config = ConductorConfig {
        host: host.into(),
        max_waiters_per_node: (workers as u32 + 1).max(32),
        ..Default::default()
    };
    let tm = TaskManager::new(store.clone(), config, Arc::new(LogSink));
    let listener = tm.start_wake_listener().await?;
    let ours = run_phase(workers, p.phase, {
        let tm = tm.clone();
        let nodes = nodes.clone();
        move |w, i| {
            let tm = tm.clone();
            let node = nodes[(w + i * workers) % nodes.len()];
            async move {
                let t = tm
                    .acquire(node)
                    .purpose("bench")
                    .retry(Retry::None)
                    .exclusive()
                    .await?;
                t.release().await
            }
        }
    })
    .await?;

    // Phase 3: every worker on one node, patient, FIFO. The first
    // WARM_UP is run but not recorded (pool connections opening, first
    // statements prepared); everything after it is.
    let hot = nodes[0];
    let stop = Arc::new(AtomicBool::new(false));
    let recording = Arc::new(AtomicBool::new(false));
    let last_release: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let samples = Arc::new(Mutex::new(ContendedSamples::default()));
    let mut handles = Vec::new();
    for _ in 0..workers {
        let tm = tm.clone();
        let stop = stop.clone();
        let recording = recording.clone();
        let last_release = last_release.clone();
        let samples = samples.clone();
        let hold = p.hold;
        handles.push(tokio::spawn(async move {
            let mut count = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let task = tm
                    .acquire(hot)
                    .purpose("contended")
                    .retry(Retry::Patient)
                    .exclusive()
                    .await?;
                let now = Instant::now();
                let prev = lock_slot(&last_release).take();
                let record = recording.load(Ordering::Relaxed);
                tokio::time::sleep(hold).await;
                let released = Instant::now();
                if record {
                    count += 1;
                    let mut s = lock_slot(&samples);
                    s.waits.push(ms(now - t0));
                    s.holds.push(ms(released - now));
                    if let Some(r) = prev {
                        s.handoffs.push(ms(now - r));
                    }
                }
                *lock_slot(&last_release) = Some(released);
                task.release().await?;
            }
            Ok::<u64, TaskError>(count)
        }));
    }
    tokio::time::sleep(WARM_UP).await;
    recording.store(true, Ordering::Relaxed);
    tokio::time::sleep(p.phase).await;
    stop.store(true, Ordering::Relaxed);
    let mut counts = Vec::new();
    for h in handles {
        match h.await {
            Ok(r) => counts.push(r?),
            Err(e) => {
                return Err(TaskError::Store(ferric_store::StoreError::Invalid(
                    format!("bench worker failed: {e}"),
                )))
            }
        }
    }
    tm.shutdown();
    let _ = listener.await;
    let ContendedSamples {
        waits,
        holds,
        handoffs,
    } = std::mem::take(&mut *lock_slot(&samples));
    let measured_hold_ms = if holds.is_empty() {
        0.0
    } else {
        holds.iter().sum::<f64>() / holds.len() as f64
    };
    let handoff = latency(handoffs);
    let wait = latency(waits);
    let hold_ms = p.hold.as_secs_f64() * 1000.0;
    let pairs = ours as f64 / p.phase.as_secs_f64();
    let raw_pairs = raw as f64 / p.phase.as_secs_f64();
    Ok(LockBenchReport {
        bench: "locks",
        backend: store.backend(),
        workers,
        nodes: nodes.len(),
        phase_s: p.phase.as_secs_f64(),
        pairs_per_s: pairs,
        raw_update_pairs_per_s: raw_pairs,
        ratio_to_raw: if raw_pairs > 0.0 {
            pairs / raw_pairs
        } else {
            0.0
        },
        max_wait_bound_ms: workers as f64 * measured_hold_ms + 10.0,
        handoff_latency_ms: handoff,
        jain_index: jain_index(&counts),
        starved: counts.iter().filter(|&&c| c == 0).count(),
        max_wait_ms: wait.max,
        wait_ms: wait,
        measured_hold_ms,
        hold_ms,
        contended_acquisitions: counts.iter().sum(),
    })
}

/// Unrecorded start of the contended phase (connections open, statements
/// get prepared).
const WARM_UP: Duration = Duration::from_millis(500);

/// What the contended phase records, in milliseconds.
#[derive(Default)]
struct ContendedSamples {
    waits: Vec<f64>,
    holds: Vec<f64>,
    handoffs: Vec<f64>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn lock_slot<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Run `op(worker, iteration)` in `workers` tasks for `phase`; total completed.
async fn run_phase<F, Fut>(workers: usize, phase: Duration, op: F) -> Result<u64, TaskError>
where
    F: Fn(usize, usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Result<(), TaskError>> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for w in 0..workers {
        let op = op.clone();
        let stop = stop.clone();
        handles.push(tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                op(w, i).await?;
                i += 1;
            }
            Ok::<u64, TaskError>(i as u64)
        }));
    }
    tokio::time::sleep(phase).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for h in handles {
        match h.await {
            Ok(r) => total += r?,
            Err(e) => {
                return Err(TaskError::Store(ferric_store::StoreError::Invalid(
                    format!("bench worker failed: {e}"),
                )))
            }
        }
    }
    Ok(total)
}

/// A fresh uuid-named PostgreSQL schema for a bench run.
pub fn bench_schema() -> String {
    format!("ferric_bench_{}", Uuid::new_v4().simple())
}

// ----- `ferric bench scale` ---------------------------------------------------

/// What `ferric bench scale` runs.
#[derive(Debug, Clone)]
pub struct ScaleBenchParams {
    /// Nodes enrolled (SPEC §11: 100,000).
    pub nodes: usize,
    /// Nodes per `create_nodes` batch.
    pub enroll_batch: usize,
    /// Page size of the detail list and of the change-feed reads.
    pub page: u32,
    /// Nodes (of `nodes`) the power sync covers, in their own conductor group.
    pub sync_nodes: usize,
    /// How long the change-feed write phase runs.
    pub feed_write_for: Duration,
    /// Concurrent writers in the change-feed write phase.
    pub writers: usize,
}

impl Default for ScaleBenchParams {
    fn default() -> Self {
        ScaleBenchParams {
            nodes: 100_000,
            enroll_batch: 1_000,
            page: 1_000,
            sync_nodes: 10_000,
            feed_write_for: Duration::from_secs(5),
            writers: 8,
        }
    }
}

/// One `ferric bench scale` result. Targets (SPEC §11) are reported beside
/// the measurements; nothing here asserts them.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleBenchReport {
    pub bench: &'static str,
    pub backend: ferric_store::Backend,
    pub nodes: usize,
    /// Enrolment through `Store::create_nodes` (each node its own revision and change).
    pub enroll_s: f64,
    pub enroll_nodes_per_s: f64,
    /// Anchor: the same rows by raw multi-row INSERT into a scratch table
    /// (no revisions, no change feed).
    pub raw_enroll_rows_per_s: f64,
    /// Full paginated detail list through `Store::list_nodes` with a marker.
    pub list_page_size: u32,
    pub list_pages: usize,
    pub list_nodes_seen: usize,
    pub list_s: f64,
    /// Anchor: the same pages by the same SELECT and pool, rows not decoded.
    pub raw_list_s: f64,
    pub list_target_s: f64,
    /// Reading the whole change feed from revision 0 in pages.
    pub feed_read_changes: usize,
    pub feed_read_s: f64,
    pub feed_read_changes_per_s: f64,
    /// Anchor: the same pages of `node_changes`, rows not decoded.
    pub raw_feed_read_changes_per_s: f64,
    /// Node updates through the TaskManager (acquire, fenced save, release),
    /// `writers` at once; each is one change.
    pub feed_write_changes: u64,
    pub feed_write_s: f64,
    pub feed_write_changes_per_s: f64,
    /// Anchor: `writers` at once, each commit one single-row UPDATE.
    pub raw_feed_write_commits_per_s: f64,
    /// A tailer following the feed while the writers ran: the largest gap
    /// between the head and what it had read, and how long it needed after
    /// the writers stopped to reach the head.
    pub feed_tail_max_lag_changes: i64,
    pub feed_tail_catch_up_ms: f64,
    pub feed_target_changes_per_s: f64,
    /// Power sync over `sync_nodes` fake nodes: the first cycle records every
    /// node's power state (batched fenced writes, `Store::record_power_states`);
    /// the second finds nothing to do.
    pub sync_nodes: usize,
    pub sync_first_cycle_s: f64,
    pub sync_first_cycle_corrected: usize,
    /// The first cycle is a burst of change-feed entries (one per node
    /// recorded): its rate, and a tailer following the feed through it, as
    /// in the write phase.
    pub sync_first_cycle_changes_per_s: f64,
    pub sync_feed_tail_max_lag_changes: i64,
    pub sync_feed_tail_catch_up_ms: f64,
    pub sync_steady_cycle_s: f64,
    pub sync_steady_cycle_checked: usize,
    /// Anchor: writing the same nodes' power state by raw multi-row UPDATE in
    /// the same batches (no list, no BMC, no fence, no change feed).
    pub raw_sync_record_s: f64,
    pub sync_target_s: f64,
    /// This process after the run (VmRSS) and at its peak (VmHWM).
    pub rss_mb: f64,
    pub peak_rss_mb: f64,
    pub rss_target_mb: f64,
}

/// `VmRSS` and `VmHWM` of this process in MiB (0 where /proc is missing).
pub fn rss_mb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A change-feed consumer following the head while a phase writes: the
/// largest gap between the head and what it had read, and how long it
/// needed after the phase ended to reach the head.
struct Tailer {
    stop: Arc<AtomicBool>,
    max_lag: Arc<std::sync::atomic::AtomicI64>,
    task: tokio::task::JoinHandle<Result<f64, TaskError>>,
}

impl Tailer {
    fn start(store: Arc<SqlStore>, mut since: i64, page: u32) -> Tailer {
        let stop = Arc::new(AtomicBool::new(false));
        let max_lag = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let task = {
            let (stop, max_lag) = (stop.clone(), max_lag.clone());
            tokio::spawn(async move {
                let mut caught_up_after_stop: Option<Instant> = None;
                loop {
                    let changes = store.changes_since(since, page).await?;
                    if let Some(c) = changes.last() {
                        since = c.revision;
                    }
                    let head = store
                        .list_nodes(&ferric_store::NodeQuery {
                            limit: Some(0),
                            ..Default::default()
                        })
                        .await?
                        .revision;
                    max_lag.fetch_max(head - since, Ordering::Relaxed);
                    if stop.load(Ordering::Relaxed) {
                        let t = *caught_up_after_stop.get_or_insert_with(Instant::now);
                        if since >= head {
                            return Ok(t.elapsed().as_secs_f64() * 1000.0);
                        }
                    } else if changes.is_empty() {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
            })
        };
        Tailer {
            stop,
            max_lag,
            task,
        }
    }

    /// Stop after reaching the head: (max lag in changes, catch-up ms).
    async fn finish(self) -> Result<(i64, f64), TaskError> {
        self.stop.store(true, Ordering::Relaxed);
        let catch_up_ms = self
            .task
            .await
            .map_err(|e| TaskError::Store(ferric_store::StoreError::Invalid(e.to_string())))??;
        Ok((self.max_lag.load(Ordering::Relaxed), catch_up_ms))
    }
}

/// An anchor must have done the same work as the workload it stands beside.
fn same_work(what: &str, anchor: usize, ours: usize) -> Result<(), TaskError> {
    if anchor == ours {
        return Ok(());
    }
    Err(TaskError::Store(ferric_store::StoreError::Invalid(
        format!("{what} read {anchor} rows where the product path read {ours}"),
    )))
}

/// Run the scale benchmark on `store` (an empty database).
pub async fn run_scale_bench(
    store: Arc<SqlStore>,
    p: ScaleBenchParams,
) -> Result<ScaleBenchReport, TaskError> {
    use ferric_core::ProvisionState;
    use ferric_store::NodeQuery;
    let sync_group = "bench-sync";
    let host = "bench-scale";
    store
        .register_conductor(&ConductorInfo {
            hostname: host.into(),
            conductor_group: sync_group.into(),
            drivers: vec!["fake-hardware".into()],
        })
        .await?;

    // Enrol: the first `sync_nodes` go to the power-sync conductor's group.
    let started = Instant::now();
    let mut made = 0;
    while made < p.nodes {
        let n = p.enroll_batch.max(1).min(p.nodes - made);
        let batch = (made..made + n)
            .map(|i| NewNode {
                name: Some(format!("scale-{i}")),
                driver: "fake-hardware".into(),
                provision_state: Some(ProvisionState::Available),
                conductor_group: if i < p.sync_nodes {
                    sync_group.into()
                } else {
                    String::new()
                },
                ..Default::default()
            })
            .collect();
        made += store.create_nodes(batch).await?;
    }
    let enroll_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    store.raw_enroll(p.nodes, p.enroll_batch).await?;
    let raw_enroll_s = started.elapsed().as_secs_f64();

    // The full detail list, page by page.
    let started = Instant::now();
    let (mut marker, mut pages, mut seen) = (None, 0, 0);
    loop {
        let page = store
            .list_nodes(&NodeQuery {
                marker,
                limit: Some(p.page),
                ..Default::default()
            })
            .await?;
        pages += 1;
        seen += page.nodes.len();
        if page.nodes.len() < p.page as usize {
            break;
        }
        marker = page.nodes.last().map(|n| n.uuid);
    }
    let list_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    same_work("raw list", store.raw_list(p.page).await?, seen)?;
    let raw_list_s = started.elapsed().as_secs_f64();

    // Read the whole feed.
    let started = Instant::now();
    let (mut since, mut feed_read) = (0, 0);
    loop {
        let changes = store.changes_since(since, p.page).await?;
        feed_read += changes.len();
        match changes.last() {
            Some(c) => since = c.revision,
            None => break,
        }
    }
    let feed_read_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    same_work(
        "raw feed read",
        store.raw_feed_read(p.page).await?,
        feed_read,
    )?;
    let raw_feed_read_s = started.elapsed().as_secs_f64();

    // Write changes through the TaskManager while a tailer follows the feed.
    let config = ConductorConfig {
        host: host.into(),
        conductor_group: sync_group.into(),
        workers_pool_size: 64,
        ..Default::default()
    };
    let tm = TaskManager::new(store.clone(), config, Arc::new(LogSink));
    let writable: Vec<Uuid> = store
        .list_nodes(&NodeQuery {
            conductor_group: Some(String::new()),
            limit: Some((p.writers.max(1) * 64) as u32),
            ..Default::default()
        })
        .await?
        .nodes
        .into_iter()
        .map(|n| n.uuid)
        .collect();
    if writable.is_empty() {
        // Every node belongs to the power-sync group (--sync-nodes equal to
        // --nodes): there is nothing to write to without disturbing it.
        return Err(TaskError::Store(ferric_store::StoreError::Invalid(
            "the change-feed phase needs nodes outside the power-sync set: use --nodes greater than --sync-nodes".into(),
        )));
    }
    let writable = Arc::new(writable);
    let tailer = Tailer::start(store.clone(), since, p.page);
    let writers = p.writers.max(1);
    let started = Instant::now();
    let feed_write = run_phase(writers, p.feed_write_for, {
        let (tm, nodes) = (tm.clone(), writable.clone());
        move |w, i| {
            let (tm, node) = (tm.clone(), nodes[(w + i * writers) % nodes.len()]);
            async move {
                let mut task = tm
                    .acquire(node)
                    .purpose("bench")
                    .retry(Retry::None)
                    .exclusive()
                    .await?;
                task.node_mut()
                    .extra
                    .insert("bench".into(), serde_json::json!(i));
                task.save().await?;
                task.release().await?;
                Ok(())
            }
        }
    })
    .await?;
    let feed_write_s = started.elapsed().as_secs_f64();
    let (max_lag, catch_up_ms) = tailer.finish().await?;
    // The anchor: the same writers, each commit one bare UPDATE.
    let started = Instant::now();
    let raw_written = run_phase(writers, p.feed_write_for, {
        let (store, nodes) = (store.clone(), writable.clone());
        move |w, i| {
            let (store, node) = (store.clone(), nodes[(w + i * writers) % nodes.len()]);
            async move { Ok(store.raw_write_one(node, i as i64).await?) }
        }
    })
    .await?;
    let raw_feed_write_s = started.elapsed().as_secs_f64();

    // Power sync over the sync group's fake nodes.
    let drivers =
        crate::drivers::Drivers::new().with(Arc::new(crate::drivers::fake::FakeHardware::new()));
    let sync = crate::power::PowerSync::default();
    // The bench conductor does not heartbeat on its own: beat before each
    // cycle so the ring still names it (a long run outlives the timeout).
    store.heartbeat(host).await?;
    let head = store
        .list_nodes(&NodeQuery {
            limit: Some(0),
            ..Default::default()
        })
        .await?
        .revision;
    let tailer = Tailer::start(store.clone(), head, p.page);
    let started = Instant::now();
    let first = sync.sync_once(&tm, &drivers).await?;
    let sync_first_cycle_s = started.elapsed().as_secs_f64();
    let (sync_tail_max_lag, sync_tail_catch_up_ms) = tailer.finish().await?;
    store.heartbeat(host).await?;
    let started = Instant::now();
    let steady = sync.sync_once(&tm, &drivers).await?;
    let sync_steady_cycle_s = started.elapsed().as_secs_f64();
    let sync_set: Vec<Uuid> = store
        .list_nodes(&NodeQuery {
            conductor_group: Some(sync_group.into()),
            ..Default::default()
        })
        .await?
        .nodes
        .iter()
        .map(|n| n.uuid)
        .collect();
    let started = Instant::now();
    store
        .raw_record_power(&sync_set, "power off", crate::power::RECORD_BATCH)
        .await?;
    let raw_sync_record_s = started.elapsed().as_secs_f64();

    let (rss, peak) = rss_mb();
    Ok(ScaleBenchReport {
        bench: "scale",
        backend: store.backend(),
        nodes: made,
        enroll_s,
        enroll_nodes_per_s: made as f64 / enroll_s.max(1e-9),
        raw_enroll_rows_per_s: p.nodes as f64 / raw_enroll_s.max(1e-9),
        list_page_size: p.page,
        list_pages: pages,
        list_nodes_seen: seen,
        list_s,
        raw_list_s,
        list_target_s: 2.0,
        feed_read_changes: feed_read,
        feed_read_s,
        feed_read_changes_per_s: feed_read as f64 / feed_read_s.max(1e-9),
        raw_feed_read_changes_per_s: feed_read as f64 / raw_feed_read_s.max(1e-9),
        feed_write_changes: feed_write,
        feed_write_s,
        feed_write_changes_per_s: feed_write as f64 / feed_write_s.max(1e-9),
        raw_feed_write_commits_per_s: raw_written as f64 / raw_feed_write_s.max(1e-9),
        feed_tail_max_lag_changes: max_lag,
        feed_tail_catch_up_ms: catch_up_ms,
        feed_target_changes_per_s: 5_000.0,
        sync_nodes: p.sync_nodes.min(made),
        sync_first_cycle_s,
        sync_first_cycle_corrected: first.corrected.len(),
        sync_first_cycle_changes_per_s: first.corrected.len() as f64 / sync_first_cycle_s.max(1e-9),
        sync_feed_tail_max_lag_changes: sync_tail_max_lag,
        sync_feed_tail_catch_up_ms: sync_tail_catch_up_ms,
        sync_steady_cycle_s,
        sync_steady_cycle_checked: steady.checked,
        raw_sync_record_s,
        sync_target_s: 10.0,
        rss_mb: rss,
        peak_rss_mb: peak,
        rss_target_mb: 200.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jain_index_is_one_when_fair_and_lower_when_not() {
        assert!((jain_index(&[5, 5, 5, 5]) - 1.0).abs() < 1e-9);
        assert!((jain_index(&[10, 0, 0, 0]) - 0.25).abs() < 1e-9);
    }

    #[test]
    fn percentiles_pick_from_sorted_samples() {
        let l = latency((1..=100).map(f64::from).collect());
        assert_eq!((l.p50, l.p99, l.max, l.samples), (51.0, 99.0, 100.0, 100));
    }

    /// A small scale run: every phase sees what it should (counts only;
    /// timings are BENCHMARKS.md's business).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scale_bench_runs_every_phase_on_sqlite() {
        scale_bench_runs_every_phase(ferric_store::testing::Engine::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scale_bench_runs_every_phase_on_postgres() {
        scale_bench_runs_every_phase(ferric_store::testing::Engine::Postgres).await;
    }

    async fn scale_bench_runs_every_phase(engine: ferric_store::testing::Engine) {
        let Some(t) = ferric_store::testing::TestStore::open(engine).await else {
            return; // PostgreSQL not configured (FERRIC_TEST_PG_URL)
        };
        let r = run_scale_bench(
            t.store.clone(),
            ScaleBenchParams {
                nodes: 1_234,
                enroll_batch: 500,
                page: 100,
                sync_nodes: 200,
                feed_write_for: Duration::from_millis(200),
                writers: 2,
            },
        )
        .await
        .unwrap();
        assert_eq!(r.nodes, 1_234);
        assert_eq!((r.list_nodes_seen, r.list_pages), (1_234, 13));
        assert_eq!(r.feed_read_changes, 1_234);
        assert!(r.feed_write_changes > 0);
        // Every anchor ran (the bench itself checks they read what we read).
        for v in [
            r.raw_enroll_rows_per_s,
            r.raw_list_s,
            r.raw_feed_read_changes_per_s,
            r.raw_feed_write_commits_per_s,
            r.raw_sync_record_s,
            r.sync_first_cycle_changes_per_s,
        ] {
            assert!(v > 0.0, "{r:?}");
        }
        assert_eq!(r.sync_first_cycle_corrected, 200);
        assert_eq!(r.sync_steady_cycle_checked, 200);
        assert!(r.rss_mb > 0.0 && r.peak_rss_mb >= r.rss_mb);
        t.cleanup().await;
    }
}

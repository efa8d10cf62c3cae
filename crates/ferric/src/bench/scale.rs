//! `ferric bench scale` (SPEC §11): enrolment rate, the full paginated detail
//! list, change-feed read and write throughput, power-sync cycle time and the
//! process's RSS at 100,000 nodes, each beside its raw-database anchor
//! ([`super::raw`]).

use super::{raw, run_phase};
use ferric_conductor::{ConductorConfig, LogSink, Retry, TaskError, TaskManager};
use ferric_core::NewNode;
use ferric_store::{ConductorInfo, SqlStore, Store};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// What `ferric bench scale` runs.
#[derive(Debug, Clone)]
pub struct ScaleBenchParams {
    /// Nodes enrolled (the target scale: 100,000).
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
    /// Node updates through the TaskManager (acquire, then the fenced save and the release in one transaction: `save_and_release`),
    /// `writers` at once; each is one change.
    pub feed_write_changes: u64,
    pub feed_write_s: f64,
    pub feed_write_changes_per_s: f64,
    /// Of those saves, how many were committed together with others
    /// (group commit), and in how many transactions.
    pub feed_write_batched_saves: u64,
    pub feed_write_batches: u64,
    /// The same phase with group commit off (`SqlStore::set_group_commit`):
    /// every save in a transaction of its own.
    pub feed_write_unbatched_changes_per_s: f64,
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
    raw::enroll(&store, p.nodes, p.enroll_batch).await?;
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
    same_work("raw list", raw::list(&store, p.page).await?, seen)?;
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
        raw::feed_read(&store, p.page).await?,
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
    let batched_before = store.save_batch_stats();
    let started = Instant::now();
    let write_through_tm = |tm: TaskManager, nodes: Arc<Vec<Uuid>>| {
        move |w: usize, i: usize| {
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
                task.save_and_release().await?;
                Ok(())
            }
        }
    };
    let feed_write = run_phase(
        writers,
        p.feed_write_for,
        write_through_tm(tm.clone(), writable.clone()),
    )
    .await?;
    let feed_write_s = started.elapsed().as_secs_f64();
    let batched = store.save_batch_stats();
    let (max_lag, catch_up_ms) = tailer.finish().await?;
    // The same writes with every save committed alone.
    store.set_group_commit(false);
    let started = Instant::now();
    let unbatched = run_phase(
        writers,
        p.feed_write_for,
        write_through_tm(tm.clone(), writable.clone()),
    )
    .await;
    store.set_group_commit(true);
    let unbatched_s = started.elapsed().as_secs_f64();
    let unbatched = unbatched?;
    // The anchor: the same writers, each commit one bare UPDATE.
    let started = Instant::now();
    let raw_written = run_phase(writers, p.feed_write_for, {
        let (store, nodes) = (store.clone(), writable.clone());
        move |w, i| {
            let (store, node) = (store.clone(), nodes[(w + i * writers) % nodes.len()]);
            async move { Ok(raw::write_one(&store, node, i as i64).await?) }
        }
    })
    .await?;
    let raw_feed_write_s = started.elapsed().as_secs_f64();

    // Power sync over the sync group's fake nodes.
    let drivers = ferric_conductor::drivers::Drivers::new().with(Arc::new(
        ferric_conductor::drivers::fake::FakeHardware::new(),
    ));
    let sync = ferric_conductor::power::PowerSync::default();
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
    raw::record_power(
        &store,
        &sync_set,
        "power off",
        ferric_conductor::power::RECORD_BATCH,
    )
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
        feed_write_batched_saves: batched.batched_saves - batched_before.batched_saves,
        feed_write_batches: batched.batches - batched_before.batches,
        feed_write_unbatched_changes_per_s: unbatched as f64 / unbatched_s.max(1e-9),
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

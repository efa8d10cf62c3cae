//! `ferric bench ...` (SPEC §11): benchmarks print one JSON object on stdout.
//! Nothing here asserts a number; BENCHMARKS.md records the results.
//!
//! This file is the command line and what the benchmarks share; [`locks`]
//! and [`scale`] are the two benchmarks and [`raw`] the raw-database
//! anchors they are reported beside. Benchmarks live in the binary crate so
//! that no library carries them.

use anyhow::Context as _;
use clap::{Subcommand, ValueEnum};
use ferric_conductor::TaskError;
use ferric_store::{SqlStore, StoreOptions};
use locks::{run_lock_bench, LockBenchParams};
use ports::{run_ports_bench, PortsBenchParams};
use scale::{run_scale_bench, ScaleBenchParams};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

pub mod api;
pub mod ipmi;
pub mod locks;
pub mod ports;
pub mod raw;
pub mod scale;
pub mod soak;

/// Engines a benchmark can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchBackend {
    Sqlite,
    Postgres,
}

/// `ferric bench ...`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Lock throughput vs the raw database limit, handoff latency, fairness.
    Locks {
        #[arg(long, value_enum, default_value_t = BenchBackend::Sqlite)]
        backend: BenchBackend,
        /// Database URL. SQLite default: a fresh temporary file. PostgreSQL:
        /// required; the run uses a fresh schema and drops it afterwards.
        /// (`--url`, its old spelling, is still accepted.)
        #[arg(long = "database-url", alias = "url", value_name = "URL")]
        url: Option<String>,
        /// Concurrent workers (and waiters on the contended node).
        #[arg(long, default_value_t = 8)]
        workers: usize,
        /// Nodes for the uncontended phases.
        #[arg(long, default_value_t = 64)]
        nodes: usize,
        /// Seconds per phase (three phases).
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        /// Milliseconds each contended holder keeps the lock.
        #[arg(long, default_value_t = 1.0)]
        hold_ms: f64,
    },
    /// Enrol many nodes, list them all, read and write the change feed, run
    /// a power-sync cycle over fake nodes, report RSS beside the targets.
    Scale {
        #[arg(long, value_enum, default_value_t = BenchBackend::Sqlite)]
        backend: BenchBackend,
        /// Database URL. SQLite default: a fresh temporary file. PostgreSQL:
        /// required; the run uses a fresh schema and drops it afterwards.
        /// (`--url`, its old spelling, is still accepted.)
        #[arg(long = "database-url", alias = "url", value_name = "URL")]
        url: Option<String>,
        /// Nodes to enrol.
        #[arg(long, default_value_t = 100_000)]
        nodes: usize,
        /// Of those, nodes the power-sync cycle covers.
        #[arg(long, default_value_t = 10_000)]
        sync_nodes: usize,
        /// Page size of the detail list and the change-feed reads.
        #[arg(long, default_value_t = 1_000)]
        page: u32,
        /// Seconds of change-feed writes (through the TaskManager).
        #[arg(long, default_value_t = 5.0)]
        write_seconds: f64,
        /// Concurrent writers.
        #[arg(long, default_value_t = 8)]
        writers: usize,
    },
    /// Nodes with one port each: the full `GET /v1/ports/detail` walk over
    /// HTTP beside the store's own list (issue 13).
    Ports {
        #[arg(long, value_enum, default_value_t = BenchBackend::Sqlite)]
        backend: BenchBackend,
        /// Database URL. SQLite default: a fresh temporary file. PostgreSQL:
        /// required; the run uses a fresh schema and drops it afterwards.
        /// (`--url`, its old spelling, is still accepted.)
        #[arg(long = "database-url", alias = "url", value_name = "URL")]
        url: Option<String>,
        /// Nodes, one port each (100000 for the record).
        #[arg(long, default_value_t = 1_000)]
        nodes: usize,
        /// Page size of both walks.
        #[arg(long, default_value_t = 1_000)]
        page: u32,
        /// Concurrent port creators.
        #[arg(long, default_value_t = 4)]
        writers: usize,
    },
    /// A long run of `ferric serve` (a child process on a temporary SQLite
    /// file) under a bounded, mixed API load: the server's RSS every
    /// --sample-every, requests done, errors by HTTP status.
    Soak {
        /// How long the load runs, e.g. 30m.
        #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Load steps per second, all workers together (an upper bound); a
        /// step is one request, or 2 (provision: show + verb) or 3 (churn:
        /// create, PATCH, DELETE), so requests/s stay below 3 × rate.
        #[arg(long, default_value_t = 40)]
        rate: u32,
        /// Concurrent clients.
        #[arg(long, default_value_t = 4)]
        workers: usize,
        /// Fake nodes the provision verbs cycle through.
        #[arg(long, default_value_t = 20)]
        nodes: usize,
        /// RSS sampling period.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        sample_every: Duration,
        /// The ferric binary to run as the server (default: this one).
        #[arg(long, value_name = "PATH")]
        server_binary: Option<PathBuf>,
    },
    /// The API through HTTP (issue 18): enrolment, the full detail list,
    /// manage→provide→deploy of fake nodes, one-node PATCH contention and
    /// the server's CPU and RSS, each beside its store-level anchor. Starts
    /// `ferric serve` in this process unless --url names a running one.
    Api {
        /// Database of the in-process server: a fresh temporary SQLite file
        /// by default; a `postgres://` URL makes (and drops) a fresh
        /// database on that server.
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
        /// Drive this running API instead (no anchors).
        #[arg(long, value_name = "URL", conflicts_with = "database_url")]
        url: Option<String>,
        /// With --url: the server's process id, for its CPU time and RSS.
        #[arg(long, requires = "url")]
        server_pid: Option<u32>,
        /// Nodes enrolled and listed (100000 for the record).
        #[arg(long, default_value_t = 2_000)]
        nodes: usize,
        /// Concurrent clients for enrolment and the lifecycle.
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Page size of the detail list.
        #[arg(long, default_value_t = 1_000)]
        page: u32,
        /// Fake nodes taken manage→provide→deploy.
        #[arg(long, default_value_t = 50)]
        lifecycle_nodes: usize,
        /// Clients PATCHing one node at once.
        #[arg(long, default_value_t = 16)]
        patch_clients: usize,
        /// PATCHes each of those clients sends.
        #[arg(long, default_value_t = 25)]
        patches: usize,
    },
    /// Power-sync cycle time over real BMCs through the ipmi hardware type
    /// (ipmitool, per-BMC discipline). The password comes from the
    /// IPMI_PASSWORD environment variable, never from the command line.
    Ipmi {
        /// BMCs: `host:port`, `host:first-last`, comma-separated.
        #[arg(long)]
        bmcs: String,
        #[arg(long, default_value = "admin")]
        username: String,
        /// Power-sync cycles (the first records every state).
        #[arg(long, default_value_t = 3)]
        cycles: usize,
        /// `sync_power_state_workers` (Ironic's default 8).
        #[arg(long, default_value_t = 8)]
        workers: u32,
        /// `[ipmi] min_command_interval` (also the pause between cycles).
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        min_command_interval: Duration,
        /// `[ipmi] command_retry_timeout`.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        command_retry_timeout: Duration,
        /// The ipmitool program.
        #[arg(long, default_value = "ipmitool")]
        ipmitool: String,
    },
}

/// A fresh private directory under the system's temporary directory for a
/// SQLite bench database, removed with everything in it when dropped. (Not
/// the `tempfile` crate: that is a test dependency, and production builds
/// carry none.)
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> std::io::Result<ScratchDir> {
        let path = std::env::temp_dir().join(format!("ferric-bench-{}", Uuid::new_v4().simple()));
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&path)?;
        Ok(ScratchDir(path))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Open a fresh bench database: a temporary SQLite file under `dir`, or a new
/// PostgreSQL schema (returned, to be dropped after the run).
async fn open_bench_store(
    backend: BenchBackend,
    url: Option<String>,
    dir: &ScratchDir,
    max_connections: u32,
) -> anyhow::Result<(Arc<SqlStore>, Option<String>)> {
    let (mut options, schema) = match backend {
        BenchBackend::Sqlite => {
            let url =
                url.unwrap_or_else(|| format!("sqlite://{}", dir.0.join("bench.db").display()));
            (StoreOptions::new(url), None)
        }
        BenchBackend::Postgres => {
            let url = url.context("--database-url is required with --backend postgres")?;
            let schema = bench_schema();
            let mut o = StoreOptions::new(url);
            o.pg_schema = Some(schema.clone());
            (o, Some(schema))
        }
    };
    options.max_connections = max_connections;
    let store = SqlStore::open(options)
        .await
        .context("opening the bench database")?;
    Ok((Arc::new(store), schema))
}

/// Run a benchmark and print its JSON.
pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Soak {
            duration,
            rate,
            workers,
            nodes,
            sample_every,
            server_binary,
        } => {
            if duration < Duration::from_secs(1) || duration > Duration::from_secs(7 * 24 * 3600) {
                anyhow::bail!("--duration must be between 1s and 7 days");
            }
            if rate == 0 || rate > 10_000 || workers == 0 || workers > 256 {
                anyhow::bail!("--rate must be 1..=10000 and --workers 1..=256");
            }
            if nodes == 0 || nodes > 10_000 {
                anyhow::bail!("--nodes must be 1..=10000");
            }
            if sample_every < Duration::from_millis(100) {
                anyhow::bail!("--sample-every must be at least 100ms");
            }
            let server_binary = match server_binary {
                Some(p) => p,
                None => std::env::current_exe().context("locating this binary")?,
            };
            let report = soak::run_soak(soak::SoakParams {
                duration,
                rate,
                workers,
                nodes,
                sample_every,
                server_binary,
            })
            .await
            .context("running the soak")?;
            println!(
                "{}",
                serde_json::to_string_pretty(&report).context("rendering the report")?
            );
            Ok(())
        }
        BenchCommand::Ipmi {
            bmcs,
            username,
            cycles,
            workers,
            min_command_interval,
            command_retry_timeout,
            ipmitool,
        } => {
            let bmcs = ipmi::parse_bmcs(&bmcs).map_err(|e| anyhow::anyhow!("--bmcs: {e}"))?;
            if cycles == 0 || cycles > 1_000 || workers == 0 || workers > 256 {
                anyhow::bail!("--cycles must be 1..=1000 and --workers 1..=256");
            }
            let mut config = ipmi::default_ipmi_config(min_command_interval);
            config.command_retry_timeout = command_retry_timeout;
            config.ipmitool_path = ipmitool;
            let problems = config.problems();
            if !problems.is_empty() {
                anyhow::bail!(problems.join("; "));
            }
            let dir = ScratchDir::new().context("creating a temporary directory")?;
            let (store, _) = open_bench_store(BenchBackend::Sqlite, None, &dir, 8).await?;
            let report = ipmi::run_ipmi_bench(
                store.clone(),
                ipmi::IpmiBenchParams {
                    bmcs,
                    username,
                    password: std::env::var("IPMI_PASSWORD").unwrap_or_default(),
                    cycles,
                    workers,
                    ipmi: config,
                },
            )
            .await;
            store.close().await;
            let report = report.context("running the ipmi benchmark")?;
            println!(
                "{}",
                serde_json::to_string_pretty(&report).context("rendering the report")?
            );
            Ok(())
        }
        BenchCommand::Api {
            database_url,
            url,
            server_pid,
            nodes,
            clients,
            page,
            lifecycle_nodes,
            patch_clients,
            patches,
        } => {
            if nodes > 10_000_000 || lifecycle_nodes > 1_000_000 || page == 0 || page > 1_000 {
                anyhow::bail!(
                    "--nodes must be 0..=10000000, --lifecycle-nodes 0..=1000000 and --page 1..=1000"
                );
            }
            if clients == 0 || clients > 256 || patch_clients == 0 || patch_clients > 256 {
                anyhow::bail!("--clients and --patch-clients must be 1..=256");
            }
            if patches > 100_000 {
                anyhow::bail!("--patches must be 0..=100000");
            }
            let params = api::ApiBenchParams {
                nodes,
                clients,
                page,
                lifecycle_nodes,
                patch_clients,
                patches,
                ..Default::default()
            };
            let report = match url {
                Some(url) => {
                    api::run_api_bench(
                        api::Target::External {
                            url,
                            pid: server_pid,
                        },
                        params,
                    )
                    .await
                }
                None => run_api_in_process(database_url, params).await,
            }
            .context("running the api benchmark")?;
            println!(
                "{}",
                serde_json::to_string_pretty(&report).context("rendering the report")?
            );
            Ok(())
        }
        BenchCommand::Ports {
            backend,
            url,
            nodes,
            page,
            writers,
        } => {
            if nodes == 0 || nodes > 10_000_000 || page == 0 || page > 1_000 {
                anyhow::bail!("--nodes must be 1..=10000000 and --page 1..=1000");
            }
            if writers == 0 || writers > 64 {
                anyhow::bail!("--writers must be 1..=64");
            }
            let dir = ScratchDir::new().context("creating a temporary directory")?;
            let (store, schema) =
                open_bench_store(backend, url, &dir, (writers as u32 + 4).min(64)).await?;
            let report = run_ports_bench(
                store.clone(),
                PortsBenchParams {
                    nodes,
                    page,
                    writers,
                },
            )
            .await;
            if let Some(schema) = schema {
                store
                    .drop_schema(&schema)
                    .await
                    .context("dropping the bench schema")?;
            }
            store.close().await;
            let report = report.context("running the ports benchmark")?;
            println!(
                "{}",
                serde_json::to_string_pretty(&report).context("rendering the report")?
            );
            Ok(())
        }
        BenchCommand::Scale {
            backend,
            url,
            nodes,
            sync_nodes,
            page,
            write_seconds,
            writers,
        } => {
            if nodes == 0 || nodes > 10_000_000 || sync_nodes >= nodes {
                anyhow::bail!(
                    "--nodes must be 1..=10000000 and --sync-nodes less than --nodes \
                     (the change-feed phase writes to the nodes outside the power-sync set)"
                );
            }
            if page == 0 || page > 10_000 {
                anyhow::bail!("--page must be 1..=10000");
            }
            if !(0.1..=3600.0).contains(&write_seconds) || writers == 0 || writers > 256 {
                anyhow::bail!("--write-seconds must be 0.1..=3600 and --writers 1..=256");
            }
            let dir = ScratchDir::new().context("creating a temporary directory")?;
            let (store, schema) =
                open_bench_store(backend, url, &dir, (writers as u32 + 4).min(64)).await?;
            let params = ScaleBenchParams {
                nodes,
                sync_nodes,
                page,
                feed_write_for: Duration::from_secs_f64(write_seconds),
                writers,
                ..Default::default()
            };
            let report = run_scale_bench(store.clone(), params).await;
            if let Some(schema) = schema {
                store
                    .drop_schema(&schema)
                    .await
                    .context("dropping the bench schema")?;
            }
            store.close().await;
            let report = report.context("running the scale benchmark")?;
            println!(
                "{}",
                serde_json::to_string_pretty(&report).context("rendering the report")?
            );
            Ok(())
        }
        BenchCommand::Locks {
            backend,
            url,
            workers,
            nodes,
            duration,
            hold_ms,
        } => {
            if !(0.1..=3600.0).contains(&duration) {
                anyhow::bail!("--duration must be between 0.1 and 3600 seconds");
            }
            if workers == 0 || workers > 1024 || nodes == 0 || nodes > 1_000_000 {
                anyhow::bail!("--workers must be 1..=1024 and --nodes 1..=1000000");
            }
            if !(0.0..=10_000.0).contains(&hold_ms) {
                anyhow::bail!("--hold-ms must be between 0 and 10000");
            }
            let dir = ScratchDir::new().context("creating a temporary directory")?;
            let (mut options, schema) = match backend {
                BenchBackend::Sqlite => {
                    let url = url.unwrap_or_else(|| {
                        format!("sqlite://{}", dir.0.join("bench.db").display())
                    });
                    (StoreOptions::new(url), None)
                }
                BenchBackend::Postgres => {
                    let url = url.context("--database-url is required with --backend postgres")?;
                    let schema = bench_schema();
                    let mut o = StoreOptions::new(url);
                    o.pg_schema = Some(schema.clone());
                    (o, Some(schema))
                }
            };
            options.max_connections = (workers as u32 + 4).min(64);
            let store = Arc::new(
                SqlStore::open(options)
                    .await
                    .context("opening the bench database")?,
            );
            let params = LockBenchParams {
                workers,
                nodes,
                phase: Duration::from_secs_f64(duration),
                hold: Duration::from_secs_f64(hold_ms / 1000.0),
            };
            let report = run_lock_bench(store.clone(), params).await;
            if let Some(schema) = schema {
                store
                    .drop_schema(&schema)
                    .await
                    .context("dropping the bench schema")?;
            }
            store.close().await;
            let report = report.context("running the lock benchmark")?;
            println!(
                "{}",
                serde_json::to_string_pretty(&report).context("rendering the report")?
            );
            Ok(())
        }
    }
}

/// `ferric bench api` with `ferric serve` in this process on a fresh
/// database (a temporary SQLite file, or a new PostgreSQL database on the
/// server `database_url` names, dropped afterwards).
pub async fn run_api_in_process(
    database_url: Option<String>,
    params: api::ApiBenchParams,
) -> anyhow::Result<api::ApiBenchReport> {
    let dir = ScratchDir::new().context("creating a temporary directory")?;
    let (url, pg) = match database_url {
        None => (
            format!("sqlite://{}", dir.0.join("bench.db").display()),
            None,
        ),
        Some(u) if u.starts_with("sqlite:") => (u, None),
        Some(u) => {
            let name = bench_schema();
            let fresh = raw::create_pg_database(&u, &name)
                .await
                .context("creating the bench database")?;
            (fresh, Some((u, name)))
        }
    };
    let mut config = crate::config::Config::default();
    config.database.url = url.clone();
    config.database.max_connections = 16;
    config.conductor.host = "bench-api".into();
    let mut anchor = StoreOptions::new(url);
    anchor.max_connections = 16;
    let report = api::run_api_bench(
        api::Target::InProcess {
            config: Box::new(config),
            anchor,
        },
        params,
    )
    .await;
    if let Some((server, name)) = pg {
        raw::drop_pg_database(&server, &name)
            .await
            .context("dropping the bench database")?;
    }
    report
}

/// Run `op(worker, iteration)` in `workers` tasks for `phase`; total completed.
pub(crate) async fn run_phase<F, Fut>(
    workers: usize,
    phase: Duration,
    op: F,
) -> Result<u64, TaskError>
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

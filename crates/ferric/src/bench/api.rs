//! `ferric bench api` (SPEC §11, issue 18): the figures users see, through
//! HTTP. It starts `ferric serve` in this process (its own runtime and
//! threads, so the server's CPU time can be told from the clients'), or
//! drives one already running (`--url`), with keep-alive clients, and
//! prints enrolment, the full detail list, manage→provide→deploy of fake
//! nodes and one-node PATCH contention, each beside its anchor from the
//! same run: the store-level operation without HTTP (and the raw SELECT for
//! the list). Anchors need the database, so they are measured only when the
//! server runs in this process.

use super::raw;
use crate::config::Config;
use ferric_conductor::{ConductorConfig, LogSink, Retry, TaskManager};
use ferric_core::NewNode;
use ferric_store::{NodeQuery, SqlStore, Store, StoreOptions};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// What `ferric bench api` runs.
#[derive(Debug, Clone)]
pub struct ApiBenchParams {
    /// Nodes enrolled through `POST /v1/nodes` (and listed).
    pub nodes: usize,
    /// Concurrent clients for enrolment and the lifecycle.
    pub clients: usize,
    /// Page size of the detail list (Ironic's max_limit is 1000).
    pub page: u32,
    /// Fake nodes taken manage→provide→deploy.
    pub lifecycle_nodes: usize,
    /// Clients PATCHing one node at once, and PATCHes each sends.
    pub patch_clients: usize,
    pub patches: usize,
    /// Give up on the lifecycle after this long.
    pub lifecycle_timeout: Duration,
}

impl Default for ApiBenchParams {
    fn default() -> Self {
        ApiBenchParams {
            nodes: 10_000,
            clients: 8,
            page: 1_000,
            lifecycle_nodes: 100,
            patch_clients: 16,
            patches: 50,
            lifecycle_timeout: Duration::from_secs(600),
        }
    }
}

/// One `ferric bench api` result. Targets (SPEC §11) stand beside the
/// measurements; nothing here asserts them.
#[derive(Debug, Clone, Serialize)]
pub struct ApiBenchReport {
    pub bench: &'static str,
    /// `sqlite`, `postgres`, or `external` (`--url`).
    pub backend: String,
    /// The 1, 5 and 15 minute load averages before and after the run.
    pub load_average_before: [f64; 3],
    pub load_average_after: [f64; 3],
    pub nodes: usize,
    pub clients: usize,
    /// `POST /v1/nodes` from `clients` keep-alive clients.
    pub enroll_s: f64,
    pub enroll_nodes_per_s: f64,
    /// Anchor: `Store::create_node`, the same count from `clients` tasks.
    pub anchor_store_enroll_nodes_per_s: Option<f64>,
    /// PostgreSQL with autovacuum off (as on the benchmark machines): the
    /// bench ran `ANALYZE` after enrolment, as autovacuum would have, so
    /// that the lists are planned with statistics (`ferric serve` warns
    /// about this setting at start). In-process runs only.
    pub analyzed_after_enrol: bool,
    /// The full `GET /v1/nodes/detail` walk, following `next` as a client does.
    pub list_page_size: u32,
    pub list_pages: usize,
    pub list_nodes_seen: usize,
    pub list_bytes: u64,
    pub list_s: f64,
    /// The same walk sending `Accept-Encoding: gzip` (bytes on the wire).
    pub list_gzip_s: f64,
    pub list_gzip_bytes: u64,
    pub list_gzip_compressed: bool,
    /// Anchors: the same pages through `Store::list_nodes` (rows decoded into
    /// nodes), and by the raw SELECT (rows fetched, not decoded).
    pub anchor_store_list_s: Option<f64>,
    pub anchor_raw_list_s: Option<f64>,
    pub list_over_store: Option<f64>,
    pub list_target_s_at_100k: f64,
    /// Fake nodes taken enroll→manageable→available→active by `clients`
    /// clients, each driving its share (verb to all of them, then poll).
    pub lifecycle_nodes: usize,
    pub lifecycle_s: f64,
    /// Verbs answered 409 (node locked), each retried after 50 ms.
    pub lifecycle_409s: u64,
    pub lifecycle_target_s_at_1000: f64,
    /// `patch_clients` clients × `patches` PATCHes of one node's `extra`.
    pub patch_clients: usize,
    pub patches_per_client: usize,
    pub patch_successes: u64,
    pub patch_409s: u64,
    pub patch_other_failures: u64,
    pub patch_s: f64,
    pub patch_per_s: f64,
    pub patch_p50_ms: f64,
    pub patch_p99_ms: f64,
    pub patch_max_ms: f64,
    /// Jain's index over each client's successes.
    pub patch_jain: f64,
    /// CPU seconds the server spent per contended PATCH (its threads' user +
    /// system time over the phase: the serve runtime and SQLite's connection
    /// threads; a PostgreSQL server's own processes are not counted).
    pub server_cpu_s_per_patch: Option<f64>,
    /// Anchor: the same updates through the TaskManager (acquire exclusive,
    /// save, release), `patch_clients` tasks × `patches`, no HTTP.
    pub anchor_tm_patch_per_s: Option<f64>,
    /// RSS of the process serving (VmRSS at the end, VmHWM): in process it
    /// includes the bench's clients and anchors.
    pub server_rss_mb: Option<f64>,
    pub server_peak_rss_mb: Option<f64>,
}

fn err(what: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("api bench: {what}")
}

/// The load averages from /proc/loadavg (zeros where it is missing).
pub fn load_average() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut out = [0.0; 3];
    for (slot, field) in out.iter_mut().zip(text.split_whitespace()) {
        *slot = field.parse().unwrap_or(0.0);
    }
    out
}

/// Clock ticks per second of /proc's CPU times (`sysconf(_SC_CLK_TCK)`; 100
/// on every Linux build this runs on).
const CLK_TCK: f64 = 100.0;

/// User + system CPU seconds from a /proc `stat` line (fields 14 and 15,
/// counted after the parenthesised command name, which may hold spaces).
fn stat_cpu_s(stat: &str) -> Option<(String, f64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state): utime is field 14, stime 15.
    let utime: f64 = rest.get(11)?.parse().ok()?;
    let stime: f64 = rest.get(12)?.parse().ok()?;
    Some((comm, (utime + stime) / CLK_TCK))
}

/// Where the server's CPU time is read.
#[derive(Debug, Clone, Copy)]
enum ServerCpu {
    /// In process: the threads whose names start with these prefixes.
    Threads,
    /// Another process.
    Pid(u32),
    Unknown,
}

/// Thread name of the in-process server's runtime.
const SERVE_THREAD: &str = "ferric-serve";

impl ServerCpu {
    /// CPU seconds so far, per thread (in process) or for the whole
    /// process (`Pid`), keyed by thread id.
    fn sample(self) -> Option<BTreeMap<String, f64>> {
        match self {
            ServerCpu::Threads => {
                let mut threads = BTreeMap::new();
                for entry in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
                    let stat =
                        std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
                    if let Some((comm, s)) = stat_cpu_s(&stat) {
                        // comm is cut at 15 bytes: "sqlx-sqlite-wor"
                        if comm.starts_with(SERVE_THREAD) || comm.starts_with("sqlx-sqlite-wor") {
                            threads.insert(entry.file_name().to_string_lossy().into_owned(), s);
                        }
                    }
                }
                Some(threads)
            }
            ServerCpu::Pid(pid) => {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                stat_cpu_s(&stat).map(|(_, s)| BTreeMap::from([(pid.to_string(), s)]))
            }
            ServerCpu::Unknown => None,
        }
    }

    fn rss_mb(self) -> (Option<f64>, Option<f64>) {
        let status = match self {
            ServerCpu::Threads => std::fs::read_to_string("/proc/self/status").ok(),
            ServerCpu::Pid(pid) => std::fs::read_to_string(format!("/proc/{pid}/status")).ok(),
            ServerCpu::Unknown => None,
        };
        let Some(status) = status else {
            return (None, None);
        };
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
                .map(|kb| kb / 1024.0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

/// CPU seconds spent between two samples: per thread, by the threads alive
/// at the end (a thread that started meanwhile counts from zero). A thread
/// that exited meanwhile is lost, never subtracted: the server's runtime
/// keeps its blocking threads for the whole run, so that is rare.
fn cpu_spent(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> f64 {
    after
        .iter()
        .map(|(tid, a)| (a - before.get(tid).copied().unwrap_or(0.0)).max(0.0))
        .sum()
}

/// `ferric serve` running in this process on its own runtime.
struct InProcessServer {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl InProcessServer {
    /// Start `ferric serve` with `config` (its API port is chosen here) and
    /// wait until it answers.
    async fn start(mut config: Config) -> anyhow::Result<InProcessServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        config.api.host = "127.0.0.1".into();
        config.api.port = port;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(SERVE_THREAD.into())
            .spawn(move || -> anyhow::Result<()> {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .thread_name(SERVE_THREAD)
                    // Blocking threads stay for the run: their CPU time
                    // stays countable (see cpu_spent).
                    .thread_keep_alive(Duration::from_secs(24 * 3600))
                    .enable_all()
                    .build()?;
                rt.block_on(crate::serve::run(config, async move {
                    let _ = stop_rx.await;
                }))
            })?;
        let mut server = InProcessServer {
            base: format!("http://127.0.0.1:{port}"),
            stop: Some(stop_tx),
            thread: Some(thread),
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http.get(format!("{}/v1", server.base)).send().await {
                if r.status().is_success() {
                    return Ok(server);
                }
            }
            if server.thread.as_ref().is_some_and(|t| t.is_finished()) || Instant::now() > deadline
            {
                return Err(match server.finish().await {
                    Err(e) => e.context("ferric serve did not start"),
                    Ok(()) => err("ferric serve did not answer within 60 s"),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stop the server and wait for it.
    async fn finish(&mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_err(err)?
            .map_err(|_| err("the serve thread panicked"))?
    }
}

/// A keep-alive HTTP client of the API at the latest microversion.
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        self.http
            .request(method, url)
            .header("X-OpenStack-Ironic-API-Version", "latest")
    }
}

/// p-th percentile (0..=100) of sorted `xs`, nearest rank.
fn percentile(xs: &[f64], p: f64) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * xs.len() as f64).ceil() as usize;
    xs[rank.clamp(1, xs.len()) - 1]
}

/// Jain's fairness index of `xs` (1 when all equal).
fn jain(xs: &[f64]) -> f64 {
    let sum: f64 = xs.iter().sum();
    let squares: f64 = xs.iter().map(|x| x * x).sum();
    if squares == 0.0 {
        return 0.0;
    }
    sum * sum / (xs.len() as f64 * squares)
}

/// Split `0..n` among `k` workers: worker `w` takes every k-th item.
fn share(n: usize, k: usize, w: usize) -> impl Iterator<Item = usize> {
    (w..n).step_by(k.max(1))
}

/// Enrol `count` fake nodes named `{prefix}-{i}` from `clients` clients;
/// their UUIDs in order of `i`.
async fn enroll(
    api: &Api,
    prefix: &str,
    count: usize,
    clients: usize,
) -> anyhow::Result<Vec<Uuid>> {
    let mut tasks = Vec::new();
    for w in 0..clients {
        let (api, prefix) = (api.clone(), prefix.to_string());
        tasks.push(tokio::spawn(async move {
            let mut made = Vec::new();
            for i in share(count, clients, w) {
                let body = serde_json::json!({
                    "name": format!("{prefix}-{i}"),
                    "driver": "fake-hardware",
                    "properties": {"cpus": 8, "memory_mb": 16384, "local_gb": 100},
                    "driver_info": {"fake_password": "secret", "bench": i},
                    "extra": {"rack": i % 40},
                });
                let r = api
                    .request(reqwest::Method::POST, "/v1/nodes")
                    .json(&body)
                    .send()
                    .await
                    .map_err(err)?;
                if r.status() != reqwest::StatusCode::CREATED {
                    let status = r.status();
                    return Err(err(format!(
                        "POST /v1/nodes: {status}: {}",
                        r.text().await.unwrap_or_default()
                    )));
                }
                let doc: serde_json::Value = r.json().await.map_err(err)?;
                let uuid = doc["uuid"].as_str().and_then(|u| Uuid::parse_str(u).ok());
                made.push((i, uuid.ok_or_else(|| err("a created node without a uuid"))?));
            }
            Ok::<_, anyhow::Error>(made)
        }));
    }
    let mut all = Vec::with_capacity(count);
    for t in tasks {
        all.extend(t.await.map_err(err)??);
    }
    all.sort_unstable();
    Ok(all.into_iter().map(|(_, u)| u).collect())
}

/// Walk `GET /v1/nodes/detail` following `next`: (pages, nodes, bytes on
/// the wire, whether the answers were gzip-compressed).
async fn walk_detail(
    api: &Api,
    page: u32,
    gzip: bool,
) -> anyhow::Result<(usize, usize, u64, bool)> {
    use std::io::Read as _;
    let mut url = format!("/v1/nodes/detail?limit={page}");
    let (mut pages, mut seen, mut bytes, mut compressed) = (0, 0, 0u64, false);
    loop {
        let mut req = api.request(reqwest::Method::GET, &url);
        if gzip {
            req = req.header("Accept-Encoding", "gzip");
        }
        let r = req.send().await.map_err(err)?;
        if !r.status().is_success() {
            return Err(err(format!("{url}: {}", r.status())));
        }
        let is_gzip = r
            .headers()
            .get("content-encoding")
            .is_some_and(|v| v.as_bytes() == b"gzip");
        let raw = r.bytes().await.map_err(err)?;
        bytes += raw.len() as u64;
        let body: serde_json::Value = if is_gzip {
            compressed = true;
            let mut text = Vec::new();
            flate2::read::GzDecoder::new(&raw[..])
                .read_to_end(&mut text)
                .map_err(err)?;
            serde_json::from_slice(&text).map_err(err)?
        } else {
            serde_json::from_slice(&raw).map_err(err)?
        };
        pages += 1;
        seen += body["nodes"].as_array().map_or(0, Vec::len);
        match body["next"].as_str() {
            Some(next) => url = next.to_string(),
            None => return Ok((pages, seen, bytes, compressed)),
        }
    }
}

/// PUT a provision verb, retrying 409s every 50 ms; the 409s seen.
async fn verb(api: &Api, node: Uuid, target: &str, until: Instant) -> anyhow::Result<u64> {
    let mut conflicts = 0;
    loop {
        let r = api
            .request(
                reqwest::Method::PUT,
                &format!("/v1/nodes/{node}/states/provision"),
            )
            .json(&serde_json::json!({ "target": target }))
            .send()
            .await
            .map_err(err)?;
        match r.status() {
            reqwest::StatusCode::ACCEPTED => return Ok(conflicts),
            reqwest::StatusCode::CONFLICT if Instant::now() < until => {
                conflicts += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            status => {
                return Err(err(format!(
                    "{target} of {node}: {status}: {}",
                    r.text().await.unwrap_or_default()
                )))
            }
        }
    }
}

/// Poll one node until it is in `state`.
async fn wait_state(api: &Api, node: Uuid, state: &str, until: Instant) -> anyhow::Result<()> {
    loop {
        let r = api
            .request(
                reqwest::Method::GET,
                &format!("/v1/nodes/{node}?fields=provision_state,last_error"),
            )
            .send()
            .await
            .map_err(err)?;
        let doc: serde_json::Value = r.json().await.map_err(err)?;
        let now = doc["provision_state"].as_str().unwrap_or_default();
        if now == state {
            return Ok(());
        }
        if now.ends_with("failed") || now == "error" || Instant::now() > until {
            return Err(err(format!(
                "node {node} is {now} waiting for {state} (last_error: {})",
                doc["last_error"]
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// manage → provide → deploy of `nodes` from `clients` clients; (s, 409s).
async fn lifecycle(
    api: &Api,
    nodes: &[Uuid],
    clients: usize,
    timeout: Duration,
) -> anyhow::Result<(f64, u64)> {
    let started = Instant::now();
    let until = started + timeout;
    let nodes = Arc::new(nodes.to_vec());
    let mut tasks = Vec::new();
    for w in 0..clients {
        let (api, nodes) = (api.clone(), nodes.clone());
        tasks.push(tokio::spawn(async move {
            let mine: Vec<Uuid> = share(nodes.len(), clients, w).map(|i| nodes[i]).collect();
            let mut conflicts = 0;
            for (target, stable) in [
                ("manage", "manageable"),
                ("provide", "available"),
                ("active", "active"),
            ] {
                for n in &mine {
                    conflicts += verb(&api, *n, target, until).await?;
                }
                for n in &mine {
                    wait_state(&api, *n, stable, until).await?;
                }
            }
            Ok::<u64, anyhow::Error>(conflicts)
        }));
    }
    let mut conflicts = 0;
    for t in tasks {
        conflicts += t.await.map_err(err)??;
    }
    Ok((started.elapsed().as_secs_f64(), conflicts))
}

/// What the contention phase measured.
struct Contention {
    successes: Vec<u64>,
    conflicts: u64,
    failures: u64,
    latencies_ms: Vec<f64>,
    seconds: f64,
}

/// `clients` × `patches` PATCHes of `node`'s `extra`.
async fn contend(
    api: &Api,
    node: Uuid,
    clients: usize,
    patches: usize,
) -> anyhow::Result<Contention> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..clients {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut conflicts, mut failures, mut lat) = (0u64, 0u64, 0u64, Vec::new());
            for i in 0..patches {
                let body = serde_json::json!([
                    {"op": "add", "path": format!("/extra/client_{w}"), "value": i}
                ]);
                let t = Instant::now();
                let r = api
                    .request(reqwest::Method::PATCH, &format!("/v1/nodes/{node}"))
                    .json(&body)
                    .send()
                    .await
                    .map_err(err)?;
                let status = r.status();
                let _ = r.bytes().await.map_err(err)?;
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
                match status {
                    reqwest::StatusCode::OK => ok += 1,
                    reqwest::StatusCode::CONFLICT => conflicts += 1,
                    _ => failures += 1,
                }
            }
            Ok::<_, anyhow::Error>((ok, conflicts, failures, lat))
        }));
    }
    let mut c = Contention {
        successes: Vec::new(),
        conflicts: 0,
        failures: 0,
        latencies_ms: Vec::new(),
        seconds: 0.0,
    };
    for t in tasks {
        let (ok, conflicts, failures, lat) = t.await.map_err(err)??;
        c.successes.push(ok);
        c.conflicts += conflicts;
        c.failures += failures;
        c.latencies_ms.extend(lat);
    }
    c.seconds = started.elapsed().as_secs_f64();
    c.latencies_ms.sort_by(f64::total_cmp);
    Ok(c)
}

/// The anchors, measured on a second pool of the same database.
struct Anchors {
    store: Arc<SqlStore>,
}

impl Anchors {
    async fn enroll(&self, count: usize, clients: usize) -> anyhow::Result<f64> {
        let started = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..clients {
            let store = self.store.clone();
            tasks.push(tokio::spawn(async move {
                for i in share(count, clients, w) {
                    store
                        .create_node(NewNode {
                            name: Some(format!("anchor-{i}")),
                            driver: "fake-hardware".into(),
                            ..Default::default()
                        })
                        .await?;
                }
                Ok::<(), ferric_store::StoreError>(())
            }));
        }
        for t in tasks {
            t.await.map_err(err)??;
        }
        Ok(count as f64 / started.elapsed().as_secs_f64().max(1e-9))
    }

    /// (store list s, raw list s), after checking both read `expect` rows.
    async fn list(&self, page: u32, expect: usize) -> anyhow::Result<(f64, f64)> {
        let started = Instant::now();
        let (mut marker, mut seen) = (None, 0);
        loop {
            let p = self
                .store
                .list_nodes(&NodeQuery {
                    marker,
                    limit: Some(page),
                    ..Default::default()
                })
                .await?;
            seen += p.nodes.len();
            if p.nodes.len() < page as usize {
                break;
            }
            marker = p.nodes.last().map(|n| n.uuid);
        }
        let store_s = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let raw_seen = raw::list(&self.store, page).await?;
        let raw_s = started.elapsed().as_secs_f64();
        if seen != expect || raw_seen != expect {
            return Err(err(format!(
                "the list anchors read {seen} (store) and {raw_seen} (raw) nodes, HTTP {expect}"
            )));
        }
        Ok((store_s, raw_s))
    }

    /// The contended updates through a TaskManager of its own (another
    /// registered conductor, with its wake listener), no HTTP: updates per
    /// second.
    async fn patches(&self, node: Uuid, clients: usize, patches: usize) -> anyhow::Result<f64> {
        let host = "bench-api-anchor";
        self.store
            .register_conductor(&ferric_store::ConductorInfo {
                hostname: host.into(),
                conductor_group: String::new(),
                drivers: vec![],
            })
            .await?;
        let tm = TaskManager::new(
            self.store.clone(),
            ConductorConfig {
                host: host.into(),
                max_waiters_per_node: (clients as u32 + 1).max(32),
                ..Default::default()
            },
            Arc::new(LogSink),
        );
        let listener = tm.start_wake_listener().await?;
        let started = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..clients {
            let tm = tm.clone();
            tasks.push(tokio::spawn(async move {
                let mut done = 0u64;
                for i in 0..patches {
                    let mut task = match tm
                        .acquire(node)
                        .purpose("bench")
                        .retry(Retry::Default)
                        .exclusive()
                        .await
                    {
                        Ok(t) => t,
                        Err(ferric_conductor::TaskError::Store(
                            ferric_store::StoreError::NodeLocked { .. },
                        )) => continue,
                        Err(e) => return Err(anyhow::Error::new(e)),
                    };
                    task.node_mut()
                        .extra
                        .insert(format!("anchor_{w}"), serde_json::json!(i));
                    task.save_and_release().await?;
                    done += 1;
                }
                Ok::<u64, anyhow::Error>(done)
            }));
        }
        let mut done = 0;
        for t in tasks {
            done += t.await.map_err(err)??;
        }
        let per_s = done as f64 / started.elapsed().as_secs_f64().max(1e-9);
        tm.shutdown();
        let _ = listener.await;
        self.store.unregister_conductor(host).await?;
        Ok(per_s)
    }
}

/// Where the bench runs.
pub enum Target {
    /// `ferric serve` in this process on `config`'s database; `anchor` opens
    /// a second pool on it for the anchors.
    InProcess {
        config: Box<Config>,
        anchor: StoreOptions,
    },
    /// A running server; `pid` (optional) for its CPU time and RSS.
    External { url: String, pid: Option<u32> },
}

/// Run the benchmark.
pub async fn run_api_bench(target: Target, p: ApiBenchParams) -> anyhow::Result<ApiBenchReport> {
    let load_before = load_average();
    let clients = p.clients.max(1);
    let (mut server, anchors, backend, cpu, base) = match target {
        Target::InProcess { config, anchor } => {
            let backend = if config.database.is_sqlite() {
                "sqlite"
            } else {
                "postgres"
            };
            let server = InProcessServer::start(*config).await?;
            let base = server.base.clone();
            let store = match SqlStore::open(anchor).await {
                Ok(s) => Arc::new(s),
                Err(e) => {
                    let mut server = server;
                    server.finish().await?;
                    return Err(e.into());
                }
            };
            let anchors = Some(Anchors { store });
            (Some(server), anchors, backend, ServerCpu::Threads, base)
        }
        Target::External { url, pid } => (
            None,
            None,
            "external",
            pid.map_or(ServerCpu::Unknown, ServerCpu::Pid),
            url.trim_end_matches('/').to_string(),
        ),
    };
    let result = async {
        let api = Api {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()
                .map_err(err)?,
            base: base.clone(),
        };
        run_phases(&api, anchors.as_ref(), cpu, &p, clients).await
    };
    let result = result.await;
    if let Some(s) = server.as_mut() {
        s.finish().await?;
    }
    if let Some(a) = anchors {
        a.store.close().await;
    }
    let mut report = result?;
    report.backend = backend.to_string();
    report.load_average_before = load_before;
    report.load_average_after = load_average();
    Ok(report)
}

async fn run_phases(
    api: &Api,
    anchors: Option<&Anchors>,
    cpu: ServerCpu,
    p: &ApiBenchParams,
    clients: usize,
) -> anyhow::Result<ApiBenchReport> {
    let run = Uuid::new_v4().simple().to_string();
    let run = &run[..8];
    // Enrol.
    let started = Instant::now();
    let enrolled = enroll(api, &format!("api-{run}"), p.nodes, clients).await?;
    let enroll_s = started.elapsed().as_secs_f64();
    let analyzed_after_enrol = match anchors {
        Some(a) if a.store.autovacuum_off().await? => {
            a.store.analyze().await?;
            true
        }
        _ => false,
    };

    // The detail list, plain and gzip.
    let started = Instant::now();
    let (list_pages, list_nodes_seen, list_bytes, _) = walk_detail(api, p.page, false).await?;
    let list_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let (_, gzip_seen, list_gzip_bytes, list_gzip_compressed) =
        walk_detail(api, p.page, true).await?;
    let list_gzip_s = started.elapsed().as_secs_f64();
    if gzip_seen != list_nodes_seen || (anchors.is_some() && list_nodes_seen != enrolled.len()) {
        return Err(err(format!(
            "the lists saw {list_nodes_seen} and {gzip_seen} nodes of {} enrolled",
            enrolled.len()
        )));
    }
    let (anchor_store_list_s, anchor_raw_list_s) = match anchors {
        Some(a) => {
            let (s, r) = a.list(p.page, list_nodes_seen).await?;
            (Some(s), Some(r))
        }
        None => (None, None),
    };

    // manage → provide → deploy.
    let life_nodes = enroll(api, &format!("life-{run}"), p.lifecycle_nodes, clients).await?;
    let (lifecycle_s, lifecycle_409s) =
        lifecycle(api, &life_nodes, clients, p.lifecycle_timeout).await?;

    // One node, contended PATCHes.
    let target = enrolled
        .first()
        .copied()
        .or_else(|| life_nodes.first().copied())
        .ok_or_else(|| err("no node to PATCH: use --nodes 1 or more"))?;
    let cpu_before = cpu.sample();
    let c = contend(api, target, p.patch_clients.max(1), p.patches).await?;
    let cpu_after = cpu.sample();
    let successes: u64 = c.successes.iter().sum();
    let server_cpu_s_per_patch = match (cpu_before, cpu_after) {
        (Some(b), Some(a)) => {
            let attempts = (p.patch_clients.max(1) * p.patches).max(1) as f64;
            Some(cpu_spent(&b, &a) / attempts)
        }
        _ => None,
    };
    let (server_rss_mb, server_peak_rss_mb) = cpu.rss_mb();

    // Anchors that write: after everything the HTTP phases read.
    let (anchor_tm_patch_per_s, anchor_store_enroll_nodes_per_s) = match anchors {
        Some(a) => (
            Some(a.patches(target, p.patch_clients.max(1), p.patches).await?),
            Some(a.enroll(p.nodes, clients).await?),
        ),
        None => (None, None),
    };
    let shares: Vec<f64> = c.successes.iter().map(|&s| s as f64).collect();
    Ok(ApiBenchReport {
        bench: "api",
        backend: String::new(),
        load_average_before: [0.0; 3],
        load_average_after: [0.0; 3],
        nodes: p.nodes,
        clients,
        enroll_s,
        enroll_nodes_per_s: p.nodes as f64 / enroll_s.max(1e-9),
        anchor_store_enroll_nodes_per_s,
        analyzed_after_enrol,
        list_page_size: p.page,
        list_pages,
        list_nodes_seen,
        list_bytes,
        list_s,
        list_gzip_s,
        list_gzip_bytes,
        list_gzip_compressed,
        anchor_store_list_s,
        anchor_raw_list_s,
        list_over_store: anchor_store_list_s.map(|s| list_s / s.max(1e-9)),
        list_target_s_at_100k: 3.0,
        lifecycle_nodes: life_nodes.len(),
        lifecycle_s,
        lifecycle_409s,
        lifecycle_target_s_at_1000: 10.0,
        patch_clients: p.patch_clients.max(1),
        patches_per_client: p.patches,
        patch_successes: successes,
        patch_409s: c.conflicts,
        patch_other_failures: c.failures,
        patch_s: c.seconds,
        patch_per_s: successes as f64 / c.seconds.max(1e-9),
        patch_p50_ms: percentile(&c.latencies_ms, 50.0),
        patch_p99_ms: percentile(&c.latencies_ms, 99.0),
        patch_max_ms: c.latencies_ms.last().copied().unwrap_or(0.0),
        patch_jain: jain(&shares),
        server_cpu_s_per_patch,
        anchor_tm_patch_per_s,
        server_rss_mb,
        server_peak_rss_mb,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A tiny run on each engine: every phase ran, the JSON has every
    /// figure, and the figures agree with each other (so the bench cannot rot).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn api_bench_runs_on_sqlite() {
        api_bench_runs(None).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn api_bench_runs_on_postgres() {
        let Ok(url) = std::env::var("FERRIC_TEST_PG_URL") else {
            return; // PostgreSQL not configured
        };
        api_bench_runs(Some(url)).await;
    }

    async fn api_bench_runs(database_url: Option<String>) {
        let p = ApiBenchParams {
            nodes: 30,
            clients: 3,
            page: 10,
            lifecycle_nodes: 3,
            patch_clients: 4,
            patches: 3,
            lifecycle_timeout: Duration::from_secs(120),
        };
        let r = super::super::run_api_in_process(database_url.clone(), p)
            .await
            .unwrap();
        let json = serde_json::to_value(&r).unwrap();
        for key in [
            "enroll_nodes_per_s",
            "anchor_store_enroll_nodes_per_s",
            "list_s",
            "list_bytes",
            "anchor_store_list_s",
            "anchor_raw_list_s",
            "lifecycle_s",
            "patch_p99_ms",
            "patch_jain",
            "server_cpu_s_per_patch",
            "anchor_tm_patch_per_s",
            "server_rss_mb",
            "load_average_before",
        ] {
            assert!(!json[key].is_null(), "{key} missing: {json}");
        }
        let backend = if database_url.is_some() {
            "postgres"
        } else {
            "sqlite"
        };
        assert_eq!(r.backend, backend);
        assert_eq!((r.list_nodes_seen, r.list_pages), (30, 4), "{json}");
        assert!(
            r.list_gzip_compressed && r.list_gzip_bytes < r.list_bytes,
            "{json}"
        );
        assert!(r.list_bytes > 30 * 1_000, "{json}");
        assert_eq!(r.lifecycle_nodes, 3);
        assert_eq!(
            r.patch_successes + r.patch_409s + r.patch_other_failures,
            12
        );
        assert_eq!(r.patch_other_failures, 0, "{json}");
        assert!(r.patch_p50_ms <= r.patch_p99_ms && r.patch_p99_ms <= r.patch_max_ms);
        assert!(r.patch_jain > 0.0 && r.patch_jain <= 1.0 + 1e-9);
        let cpu = r.server_cpu_s_per_patch.unwrap();
        assert!((0.0..1.0).contains(&cpu), "{json}");
        assert!(r.server_rss_mb.unwrap() > 1.0);
        assert!(r.anchor_store_list_s.unwrap() > 0.0 && r.list_over_store.unwrap() > 0.0);
    }

    #[test]
    fn cpu_spent_counts_living_threads_and_never_goes_negative() {
        let m = |v: &[(&str, f64)]| {
            v.iter()
                .map(|(k, s)| (k.to_string(), *s))
                .collect::<BTreeMap<_, _>>()
        };
        let before = m(&[("1", 1.0), ("2", 5.0)]);
        // 1 spent 0.5 s, 2 exited (its 5 s are not subtracted), 3 is new.
        let after = m(&[("1", 1.5), ("3", 0.25)]);
        assert!((cpu_spent(&before, &after) - 0.75).abs() < 1e-9);
        assert_eq!(cpu_spent(&after, &after), 0.0);
    }

    #[test]
    fn stat_lines_give_cpu_seconds() {
        let line = "42 (sqlx-sqlite-wor) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0";
        assert_eq!(stat_cpu_s(line), Some(("sqlx-sqlite-wor".to_string(), 3.0)));
        let spaced = "7 (a (b) c) R 1 2 3 4 5 6 7 8 9 10 100 0 0 0";
        assert_eq!(stat_cpu_s(spaced), Some(("a (b) c".to_string(), 1.0)));
        assert_eq!(stat_cpu_s("garbage"), None);
    }

    #[test]
    fn percentiles_and_jain() {
        let xs: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&xs, 50.0), 50.0);
        assert_eq!(percentile(&xs, 99.0), 99.0);
        assert_eq!(percentile(&xs, 100.0), 100.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
        assert!((jain(&[5.0, 5.0, 5.0]) - 1.0).abs() < 1e-12);
        assert!((jain(&[1.0, 0.0]) - 0.5).abs() < 1e-12);
    }
}

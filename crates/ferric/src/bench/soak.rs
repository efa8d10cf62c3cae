//! `ferric bench soak` (issue 17): a long run of `ferric serve` under a
//! bounded, mixed API load, watching the server's memory.
//!
//! The server is a child process (this binary, or `--server-binary`) on a
//! fresh SQLite file in a private temporary directory, its API on a free
//! loopback port, every `FERRIC_*` variable of the caller removed so that no
//! operator configuration leaks in. `workers` clients share one rate limit
//! and cycle through a fixed mix of requests: list, detail list, `?fields=`,
//! show, PATCH, the change feed, provision verbs on a pool of fake nodes
//! (manage, provide, deploy, undeploy as each node's state allows), and
//! create/PATCH/DELETE churn. The server's `VmRSS` (from /proc/PID/status)
//! and the load average are sampled every `sample_every`. At the end the
//! child is stopped with SIGTERM by its PID (SIGKILL after 30 s) and one
//! JSON object is printed: the RSS series and its summary (start, median,
//! end, max, least-squares slope), requests done, errors by HTTP status.
//!
//! A `409 Conflict` (node locked by a running verb, or a verb the node's
//! state does not allow yet) is an expected answer under this load and is
//! counted, not treated as a failure; a 5xx or a transport error is what a
//! soak looks for.

use anyhow::{bail, Context as _};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::process::Child;

/// What `ferric bench soak` runs.
#[derive(Debug, Clone)]
pub struct SoakParams {
    /// How long the load runs.
    pub duration: Duration,
    /// Load steps per second, all workers together (an upper bound; a step
    /// is 1 to 3 requests).
    pub rate: u32,
    /// Concurrent clients.
    pub workers: usize,
    /// Nodes in the pool the provision verbs cycle through.
    pub nodes: usize,
    /// RSS sampling period.
    pub sample_every: Duration,
    /// The `ferric` binary to run as the server.
    pub server_binary: PathBuf,
}

/// One RSS sample of the server.
#[derive(Debug, Clone, Serialize)]
pub struct RssSample {
    /// Seconds since the load started.
    pub t_s: f64,
    pub rss_mb: f64,
    /// 1-minute load average of the machine.
    pub load1: f64,
    /// Requests done so far.
    pub requests: u64,
}

/// The result of one soak run.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    pub bench: &'static str,
    pub backend: &'static str,
    pub duration_s: f64,
    pub workers: usize,
    pub rate_limit_per_s: u32,
    pub pool_nodes: usize,
    /// HTTP requests answered (any status) and their rate.
    pub requests: u64,
    pub requests_per_s: f64,
    /// Answers by status class and by status (e.g. "200": 1234).
    pub by_status: BTreeMap<String, u64>,
    /// Answers with status >= 400, by status.
    pub errors_by_status: BTreeMap<String, u64>,
    pub server_errors_5xx: u64,
    /// Requests that got no HTTP answer (connection refused/reset, timeout).
    pub transport_errors: u64,
    /// Create/PATCH/DELETE churn cycles completed, and provision verbs accepted (202).
    pub churn_cycles: u64,
    pub provision_verbs_accepted: u64,
    pub rss_start_mb: f64,
    pub rss_median_mb: f64,
    pub rss_end_mb: f64,
    pub rss_max_mb: f64,
    /// Peak RSS of the server as the kernel recorded it (VmHWM), at the end.
    pub rss_hwm_mb: f64,
    /// Least-squares slope of RSS over every sample, and over the second
    /// half of the run (warm-up excluded), in MiB per hour.
    pub rss_slope_mb_per_h: f64,
    pub rss_slope_second_half_mb_per_h: f64,
    /// Load average (1, 5, 15 min) at the end of the load.
    pub load_avg_end: [f64; 3],
    /// The server's PID, and how it exited after SIGTERM.
    pub server_pid: u32,
    pub server_exit: String,
    pub rss_samples: Vec<RssSample>,
}

/// Counters shared by the workers.
#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    transport: AtomicU64,
    churn: AtomicU64,
    verbs: AtomicU64,
    by_status: Mutex<BTreeMap<u16, u64>>,
    since: AtomicI64,
}

impl Tally {
    fn record(&self, status: u16) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.by_status.lock() {
            *m.entry(status).or_default() += 1;
        }
    }
}

/// A request through the shared client; the status and the JSON body (Null
/// when there is none), or None after a transport error (counted).
async fn call(
    http: &reqwest::Client,
    tally: &Tally,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> Option<(u16, Value)> {
    let mut req = http
        .request(method, url)
        .header("X-OpenStack-Ironic-API-Version", "1.80");
    if let Some(b) = body {
        req = req.json(&b);
    }
    match req.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            tally.record(status);
            let v = resp.json::<Value>().await.unwrap_or(Value::Null);
            Some((status, v))
        }
        Err(_) => {
            tally.transport.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// The server process's VmRSS and VmHWM in MiB (None once it is gone).
fn server_rss_mb(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:").unwrap_or(0.0)))
}

fn load_avg() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = text
        .split_whitespace()
        .map(|x| x.parse::<f64>().unwrap_or(0.0));
    [
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
    ]
}

/// Least-squares slope of `(t_s, rss_mb)` in MiB per hour (0 with < 2 points).
pub fn slope_mb_per_h(samples: &[RssSample]) -> f64 {
    let n = samples.len() as f64;
    if samples.len() < 2 {
        return 0.0;
    }
    let mt = samples.iter().map(|s| s.t_s).sum::<f64>() / n;
    let mr = samples.iter().map(|s| s.rss_mb).sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for s in samples {
        num += (s.t_s - mt) * (s.rss_mb - mr);
        den += (s.t_s - mt) * (s.t_s - mt);
    }
    if den == 0.0 {
        0.0
    } else {
        num / den * 3600.0
    }
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// A free loopback port (bound then released; the server binds it next).
fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr().context("reading the free port")?.port())
}

/// Stop the server with SIGTERM (by PID), SIGKILL after 30 s; how it ended.
async fn stop_server(child: &mut Child) -> String {
    let Some(pid) = child.id() else {
        return "already exited".into();
    };
    let term = tokio::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await;
    if term.is_ok() {
        if let Ok(Ok(status)) = tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
            return format!("SIGTERM: {status}");
        }
    }
    let _ = child.start_kill();
    match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
        Ok(Ok(status)) => format!("SIGKILL after SIGTERM failed: {status}"),
        _ => "did not exit after SIGKILL".into(),
    }
}

/// One worker's iteration `i`: the request mix.
async fn one_step(
    http: &reqwest::Client,
    base: &str,
    tally: &Tally,
    w: usize,
    i: u64,
    pool: &[String],
) {
    use reqwest::Method;
    let node = &pool[(i as usize + w * 7) % pool.len()];
    match i % 8 {
        0 => {
            call(
                http,
                tally,
                Method::GET,
                format!("{base}/v1/nodes?limit=100"),
                None,
            )
            .await;
        }
        1 => {
            call(
                http,
                tally,
                Method::GET,
                format!("{base}/v1/nodes/detail?limit=50"),
                None,
            )
            .await;
        }
        2 => {
            call(
                http,
                tally,
                Method::GET,
                format!("{base}/v1/nodes?fields=uuid,name,provision_state,extra"),
                None,
            )
            .await;
        }
        3 => {
            call(
                http,
                tally,
                Method::GET,
                format!("{base}/v1/nodes/{node}"),
                None,
            )
            .await;
        }
        4 => {
            let patch = json!([{"op": "add", "path": "/extra/soak", "value": i}]);
            call(
                http,
                tally,
                Method::PATCH,
                format!("{base}/v1/nodes/{node}"),
                Some(patch),
            )
            .await;
        }
        5 => {
            let since = tally.since.load(Ordering::Relaxed);
            if let Some((200, body)) = call(
                http,
                tally,
                Method::GET,
                format!("{base}/v1/nodes/changes?since={since}&limit=200"),
                None,
            )
            .await
            {
                if let Some(rev) = body.get("revision").and_then(Value::as_i64) {
                    tally.since.fetch_max(rev, Ordering::Relaxed);
                }
            }
        }
        6 => {
            // The verb the node's current state allows: enroll → manage →
            // provide → deploy (active) → undeploy (deleted) → available.
            let Some((200, body)) = call(
                http,
                tally,
                Method::GET,
                format!("{base}/v1/nodes/{node}"),
                None,
            )
            .await
            else {
                return;
            };
            let verb = match body.get("provision_state").and_then(Value::as_str) {
                Some("enroll") => "manage",
                Some("manageable") => "provide",
                Some("available") => "active",
                Some("active") | Some("deploy failed") | Some("error") => "deleted",
                Some("clean failed") => "manage",
                _ => return,
            };
            if let Some((202, _)) = call(
                http,
                tally,
                Method::PUT,
                format!("{base}/v1/nodes/{node}/states/provision"),
                Some(json!({"target": verb})),
            )
            .await
            {
                tally.verbs.fetch_add(1, Ordering::Relaxed);
            }
        }
        _ => {
            let name = format!("soak-churn-{w}-{i}");
            let created = call(
                http,
                tally,
                Method::POST,
                format!("{base}/v1/nodes"),
                Some(json!({"name": name, "driver": "fake-hardware",
                    "extra": {"churn": i}, "properties": {"cpus": 4}})),
            )
            .await;
            if !matches!(created, Some((201, _))) {
                return;
            }
            let patch = json!([{"op": "replace", "path": "/properties/cpus", "value": 8}]);
            call(
                http,
                tally,
                Method::PATCH,
                format!("{base}/v1/nodes/{name}"),
                Some(patch),
            )
            .await;
            if let Some((204, _)) = call(
                http,
                tally,
                Method::DELETE,
                format!("{base}/v1/nodes/{name}"),
                None,
            )
            .await
            {
                tally.churn.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Run the soak: start the server, load it, sample it, stop it.
pub async fn run_soak(params: SoakParams) -> anyhow::Result<SoakReport> {
    if params.workers == 0 || params.nodes == 0 || params.rate == 0 {
        bail!("workers, nodes and rate must be at least 1");
    }
    let dir = super::ScratchDir::new().context("creating a temporary directory")?;
    let port = free_port()?;
    let log_path = dir.0.join("serve.log");
    let log = std::fs::File::create(&log_path).context("creating the server log")?;
    let mut cmd = tokio::process::Command::new(&params.server_binary);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("FERRIC_") {
            cmd.env_remove(k);
        }
    }
    cmd.arg("serve")
        .args(["--host", "soak-conductor"])
        .env(
            "FERRIC_DATABASE__URL",
            format!("sqlite://{}", dir.0.join("soak.db").display()),
        )
        .env("FERRIC_API__HOST", "127.0.0.1")
        .env("FERRIC_API__PORT", port.to_string())
        .env("FERRIC_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", params.server_binary.display()))?;
    let pid = child.id().context("the server exited at once")?;
    let result = drive(&params, pid, port, &mut child).await;
    let exit = stop_server(&mut child).await;
    let tail = || {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    };
    match result {
        Ok(mut report) => {
            report.server_exit = exit;
            Ok(report)
        }
        Err(e) => Err(e.context(format!("server log (last lines):\n{}", tail()))),
    }
}

async fn drive(
    params: &SoakParams,
    pid: u32,
    port: u16,
    child: &mut Child,
) -> anyhow::Result<SoakReport> {
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .context("building the HTTP client")?;
    // Ready: GET /v1 answers (bounded: 60 s).
    let ready_by = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            bail!("the server exited during start-up: {status}");
        }
        if let Ok(r) = http.get(format!("{base}/v1")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        if Instant::now() > ready_by {
            bail!("the server did not answer GET /v1 within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tally = Arc::new(Tally::default());
    let mut pool = Vec::with_capacity(params.nodes);
    for k in 0..params.nodes {
        let name = format!("soak-{k}");
        match call(
            &http,
            &tally,
            reqwest::Method::POST,
            format!("{base}/v1/nodes"),
            Some(json!({"name": name, "driver": "fake-hardware"})),
        )
        .await
        {
            Some((201, _)) => pool.push(name),
            other => bail!("enrolling pool node {name}: {other:?}"),
        }
    }
    let pool = Arc::new(pool);

    let stop = Arc::new(AtomicBool::new(false));
    let limiter = {
        let mut iv = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(params.rate)));
        iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Arc::new(tokio::sync::Mutex::new(iv))
    };
    let start = Instant::now();
    let mut workers = Vec::new();
    for w in 0..params.workers {
        let (http, tally, pool, stop, limiter, base) = (
            http.clone(),
            tally.clone(),
            pool.clone(),
            stop.clone(),
            limiter.clone(),
            base.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                limiter.lock().await.tick().await;
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                one_step(&http, &base, &tally, w, i, &pool).await;
                i += 1;
            }
        }));
    }
    let mut samples = Vec::new();
    let sample = |tally: &Tally| {
        server_rss_mb(pid).map(|(rss, _)| RssSample {
            t_s: start.elapsed().as_secs_f64(),
            rss_mb: rss,
            load1: load_avg()[0],
            requests: tally.requests.load(Ordering::Relaxed),
        })
    };
    samples.extend(sample(&tally));
    let end = start + params.duration;
    let mut server_died = None;
    while Instant::now() < end {
        let next = (Instant::now() + params.sample_every).min(end);
        tokio::time::sleep_until(next.into()).await;
        if let Ok(Some(status)) = child.try_wait() {
            server_died = Some(status);
            break;
        }
        samples.extend(sample(&tally));
    }
    stop.store(true, Ordering::Relaxed);
    for h in workers {
        let _ = h.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    if let Some(status) = server_died {
        bail!("the server exited during the soak: {status}");
    }
    let load_avg_end = load_avg();
    samples.extend(sample(&tally));
    let hwm = server_rss_mb(pid).map_or(0.0, |(_, h)| h);
    let rss: Vec<f64> = samples.iter().map(|s| s.rss_mb).collect();
    let by_status = tally
        .by_status
        .lock()
        .map(|m| m.clone())
        .unwrap_or_default();
    let requests = tally.requests.load(Ordering::Relaxed);
    let second_half: Vec<RssSample> = samples
        .iter()
        .filter(|s| s.t_s >= elapsed / 2.0)
        .cloned()
        .collect();
    Ok(SoakReport {
        bench: "soak",
        backend: "sqlite",
        duration_s: elapsed,
        workers: params.workers,
        rate_limit_per_s: params.rate,
        pool_nodes: params.nodes,
        requests,
        requests_per_s: requests as f64 / elapsed.max(1e-9),
        errors_by_status: by_status
            .iter()
            .filter(|(s, _)| **s >= 400)
            .map(|(s, n)| (s.to_string(), *n))
            .collect(),
        server_errors_5xx: by_status
            .iter()
            .filter(|(s, _)| **s >= 500)
            .map(|(_, n)| n)
            .sum(),
        by_status: by_status.iter().map(|(s, n)| (s.to_string(), *n)).collect(),
        transport_errors: tally.transport.load(Ordering::Relaxed),
        churn_cycles: tally.churn.load(Ordering::Relaxed),
        provision_verbs_accepted: tally.verbs.load(Ordering::Relaxed),
        rss_start_mb: rss.first().copied().unwrap_or(0.0),
        rss_median_mb: median(&rss),
        rss_end_mb: rss.last().copied().unwrap_or(0.0),
        rss_max_mb: rss.iter().copied().fold(0.0, f64::max),
        rss_hwm_mb: hwm,
        rss_slope_mb_per_h: slope_mb_per_h(&samples),
        rss_slope_second_half_mb_per_h: slope_mb_per_h(&second_half),
        load_avg_end,
        server_pid: pid,
        server_exit: String::new(),
        rss_samples: samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: f64, r: f64) -> RssSample {
        RssSample {
            t_s: t,
            rss_mb: r,
            load1: 0.0,
            requests: 0,
        }
    }

    #[test]
    fn slope_is_mib_per_hour() {
        // 1 MiB per minute = 60 MiB per hour.
        let pts: Vec<_> = (0..10)
            .map(|m| s(m as f64 * 60.0, 10.0 + m as f64))
            .collect();
        assert!((slope_mb_per_h(&pts) - 60.0).abs() < 1e-9);
        assert_eq!(slope_mb_per_h(&[s(0.0, 5.0)]), 0.0);
        let flat: Vec<_> = (0..5).map(|m| s(m as f64, 7.0)).collect();
        assert_eq!(slope_mb_per_h(&flat), 0.0);
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }
}

//! Conductor metrics in the Prometheus text format (SPEC §8, issue 8): lock
//! wait and hold histograms by purpose, NodeLocked and LockLost counters, the
//! lock queue depth, heartbeat age per conductor, recovery actions, periodic
//! job durations and notification delivery.
//!
//! A small hand-rolled registry, rendered by `ferric-api` through
//! `ApiState::with_extra_metrics`: it matches the API's own request metrics
//! (same format, same bucket style, no new dependency) and keeps the hot path
//! to one short mutex section or one atomic add.
//!
//! Invariant: every label set is bounded. Lock purposes are free text
//! ("provision action: deploy", "recover lock of host-3"), so they are mapped
//! onto the fixed set [`PURPOSES`] by [`purpose_label`]; conductor hostnames
//! (heartbeat age) are bounded by the cluster's size and replaced wholesale on
//! each sample, so a departed conductor's series disappears.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lock wait/hold bucket upper bounds, in seconds.
const LOCK_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0,
];

/// Periodic job bucket upper bounds, in seconds.
const JOB_BUCKETS: [f64; 11] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

/// Every value the `purpose` label can take.
pub const PURPOSES: [&str; 15] = [
    "deploy",
    "clean",
    "provision",
    "power",
    "power_sync",
    "agent_heartbeat",
    "recovery",
    "wait_timeout",
    "takeover",
    "update",
    "delete",
    "console",
    "validate",
    "bench",
    "other",
];

/// Map a free-text lock purpose onto [`PURPOSES`] (first match wins).
///
/// Runs on every lock acquisition and release, so it compares in place,
/// ignoring ASCII case, instead of allocating a lower-cased copy.
pub fn purpose_label(purpose: &str) -> &'static str {
    let p = purpose.as_bytes();
    let has = |s: &str| {
        let s = s.as_bytes();
        p.len() >= s.len() && p.windows(s.len()).any(|w| w.eq_ignore_ascii_case(s))
    };
    let starts = |s: &str| p.len() >= s.len() && p[..s.len()].eq_ignore_ascii_case(s.as_bytes());
    if starts("recover") {
        "recovery"
    } else if has("power state sync") || has("power sync") {
        "power_sync"
    } else if has("heartbeat") {
        "agent_heartbeat"
    } else if has("wait timeout") {
        "wait_timeout"
    } else if has("take over") || has("takeover") {
        "takeover"
    } else if has("deploy") {
        "deploy"
    } else if has("clean") {
        "clean"
    } else if starts("provision") {
        "provision"
    } else if has("power") || has("reboot") {
        "power"
    } else if has("delet") {
        "delete"
    } else if has("update") {
        "update"
    } else if has("console") {
        "console"
    } else if has("validate") {
        "validate"
    } else if has("bench") {
        "bench"
    } else {
        "other"
    }
}

/// A cumulative histogram over fixed buckets.
#[derive(Debug, Clone, Default)]
struct Histogram {
    count: u64,
    sum_secs: f64,
    /// Per-bucket (non-cumulative) counts; cumulated when rendered.
    buckets: Vec<u64>,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], secs: f64) {
        if self.buckets.len() != bounds.len() {
            self.buckets = vec![0; bounds.len()];
        }
        self.count += 1;
        self.sum_secs += secs;
        if let Some(i) = bounds.iter().position(|le| secs <= *le) {
            self.buckets[i] += 1;
        }
    }

    fn render(&self, out: &mut String, name: &str, labels: &str, bounds: &[f64]) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, le) in bounds.iter().enumerate() {
            cumulative += self.buckets.get(i).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum_secs);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

#[derive(Debug, Default)]
struct State {
    lock_wait: BTreeMap<&'static str, Histogram>,
    lock_hold: BTreeMap<&'static str, Histogram>,
    node_locked: BTreeMap<&'static str, u64>,
    lock_lost: BTreeMap<&'static str, u64>,
    recovery: BTreeMap<(&'static str, &'static str), u64>,
    periodic: BTreeMap<&'static str, Histogram>,
    heartbeat_age: BTreeMap<String, f64>,
}

/// The metrics of one conductor process. One per [`crate::TaskManager`].
#[derive(Debug)]
pub struct ConductorMetrics {
    state: Mutex<State>,
    /// Tasks of this process queued for a lock right now.
    waiting: AtomicI64,
    /// Waiters queued on all nodes (cluster-wide), as of the last sample;
    /// -1 before the first sample.
    queue_depth: AtomicI64,
    /// Nodes whose lock is held (cluster-wide), as of the last sample.
    locks_held: AtomicI64,
}

impl Default for ConductorMetrics {
    fn default() -> Self {
        ConductorMetrics {
            state: Mutex::new(State::default()),
            waiting: AtomicI64::new(0),
            queue_depth: AtomicI64::new(-1),
            locks_held: AtomicI64::new(-1),
        }
    }
}

/// Counts one task as queued for a lock until dropped.
#[derive(Debug)]
pub struct Waiting<'a>(&'a ConductorMetrics);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Records a periodic job's duration when dropped.
#[derive(Debug)]
pub struct JobTimer<'a> {
    metrics: &'a ConductorMetrics,
    job: &'static str,
    started: Instant,
}

impl Drop for JobTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .observe_periodic(self.job, self.started.elapsed());
    }
}

impl ConductorMetrics {
    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        match self.state.lock() {
            Ok(mut g) => f(&mut g),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    /// A lock was granted after `waited` (zero-wait grants included).
    pub fn observe_wait(&self, purpose: &str, waited: Duration) {
        let label = purpose_label(purpose);
        self.with(|s| {
            s.lock_wait
                .entry(label)
                .or_default()
                .observe(&LOCK_BUCKETS, waited.as_secs_f64())
        });
    }

    /// A lock was released (or handed on) after being held for `held`.
    pub fn observe_hold(&self, purpose: &str, held: Duration) {
        let label = purpose_label(purpose);
        self.with(|s| {
            s.lock_hold
                .entry(label)
                .or_default()
                .observe(&LOCK_BUCKETS, held.as_secs_f64())
        });
    }

    /// An acquisition ended in NodeLocked (refused at once, queue full, or
    /// the wait ran out).
    pub fn node_locked(&self, purpose: &str) {
        let label = purpose_label(purpose);
        self.with(|s| *s.node_locked.entry(label).or_default() += 1);
    }

    /// A holder found its lock gone: `op` is `"write"` (a fenced write was
    /// refused) or `"release"` (the release matched nothing).
    pub fn lock_lost(&self, op: &'static str) {
        self.with(|s| *s.lock_lost.entry(op).or_default() += 1);
    }

    /// A recovery took a lock from `cause` (`offline`, `restarted`,
    /// `operator`); `action` is `recovered` or `failed_node`.
    pub fn recovery_action(&self, cause: &'static str, action: &'static str) {
        self.with(|s| *s.recovery.entry((cause, action)).or_default() += 1);
    }

    /// A periodic job (`recovery`, `wait_timeouts`, `takeover`,
    /// `power_sync`) ran for `took`.
    pub fn observe_periodic(&self, job: &'static str, took: Duration) {
        self.with(|s| {
            s.periodic
                .entry(job)
                .or_default()
                .observe(&JOB_BUCKETS, took.as_secs_f64())
        });
    }

    /// Time a periodic job until the returned guard drops.
    pub fn time_job(&self, job: &'static str) -> JobTimer<'_> {
        JobTimer {
            metrics: self,
            job,
            started: Instant::now(),
        }
    }

    /// Count a task as queued for a lock until the guard drops.
    pub fn waiting(&self) -> Waiting<'_> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        Waiting(self)
    }

    /// Record the cluster's lock table as sampled by a recovery pass:
    /// held locks and queued waiters over all nodes.
    pub fn sample_locks(&self, held: usize, waiters: usize) {
        self.locks_held.store(held as i64, Ordering::Relaxed);
        self.queue_depth.store(waiters as i64, Ordering::Relaxed);
    }

    /// Replace the heartbeat ages (conductor → seconds, database clock).
    pub fn sample_heartbeats(&self, ages: impl IntoIterator<Item = (String, f64)>) {
        let ages: BTreeMap<String, f64> = ages.into_iter().collect();
        self.with(|s| s.heartbeat_age = ages);
    }

    /// NodeLocked refusals so far for a purpose label (tests).
    pub fn node_locked_count(&self, label: &str) -> u64 {
        self.with(|s| s.node_locked.get(label).copied().unwrap_or(0))
    }

    /// LockLost events so far for an op (tests).
    pub fn lock_lost_count(&self, op: &str) -> u64 {
        self.with(|s| s.lock_lost.get(op).copied().unwrap_or(0))
    }

    /// Recovery actions so far, all causes (tests).
    pub fn recovery_count(&self, action: &str) -> u64 {
        self.with(|s| {
            s.recovery
                .iter()
                .filter(|((_, a), _)| *a == action)
                .map(|(_, n)| n)
                .sum()
        })
    }

    /// Observations of a periodic job so far (tests).
    pub fn periodic_count(&self, job: &str) -> u64 {
        self.with(|s| s.periodic.get(job).map_or(0, |h| h.count))
    }

    /// The metrics in Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        let (wait, hold, locked, lost, recovery, periodic, ages) = self.with(|s| {
            (
                s.lock_wait.clone(),
                s.lock_hold.clone(),
                s.node_locked.clone(),
                s.lock_lost.clone(),
                s.recovery.clone(),
                s.periodic.clone(),
                s.heartbeat_age.clone(),
            )
        });
        let head = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
        };
        head(
            &mut out,
            "ferric_lock_wait_seconds",
            "histogram",
            "Time from asking for a node's exclusive lock to holding it, by purpose.",
        );
        for (p, h) in &wait {
            let labels = format!("purpose=\"{p}\"");
            h.render(&mut out, "ferric_lock_wait_seconds", &labels, &LOCK_BUCKETS);
        }
        head(
            &mut out,
            "ferric_lock_hold_seconds",
            "histogram",
            "Time a node's exclusive lock was held by this conductor, by purpose.",
        );
        for (p, h) in &hold {
            let labels = format!("purpose=\"{p}\"");
            h.render(&mut out, "ferric_lock_hold_seconds", &labels, &LOCK_BUCKETS);
        }
        head(
            &mut out,
            "ferric_lock_node_locked_total",
            "counter",
            "Acquisitions that ended in NodeLocked, by purpose.",
        );
        for (p, n) in &locked {
            let _ = writeln!(out, "ferric_lock_node_locked_total{{purpose=\"{p}\"}} {n}");
        }
        head(
            &mut out,
            "ferric_lock_lost_total",
            "counter",
            "Fenced writes or releases refused because the lock was gone (LockLost).",
        );
        for (op, n) in &lost {
            let _ = writeln!(out, "ferric_lock_lost_total{{op=\"{op}\"}} {n}");
        }
        head(
            &mut out,
            "ferric_lock_waiting_tasks",
            "gauge",
            "Tasks of this conductor queued for a node lock.",
        );
        let _ = writeln!(
            out,
            "ferric_lock_waiting_tasks {}",
            self.waiting.load(Ordering::Relaxed)
        );
        let depth = self.queue_depth.load(Ordering::Relaxed);
        if depth >= 0 {
            head(
                &mut out,
                "ferric_lock_queue_depth",
                "gauge",
                "Waiters queued on all nodes' locks, as of the last recovery pass.",
            );
            let _ = writeln!(out, "ferric_lock_queue_depth {depth}");
            head(
                &mut out,
                "ferric_locks_held",
                "gauge",
                "Nodes whose lock is held, as of the last recovery pass.",
            );
            let _ = writeln!(
                out,
                "ferric_locks_held {}",
                self.locks_held.load(Ordering::Relaxed)
            );
        }
        head(
            &mut out,
            "ferric_conductor_heartbeat_age_seconds",
            "gauge",
            "Age of each registered conductor's heartbeat (database clock), as of the last recovery pass.",
        );
        for (host, age) in &ages {
            let _ = writeln!(
                out,
                "ferric_conductor_heartbeat_age_seconds{{conductor=\"{}\"}} {age}",
                esc(host)
            );
        }
        head(
            &mut out,
            "ferric_recovery_actions_total",
            "counter",
            "Locks recovered from dead or overridden holders, and nodes failed by recovery.",
        );
        for ((cause, action), n) in &recovery {
            let _ = writeln!(
                out,
                "ferric_recovery_actions_total{{cause=\"{cause}\",action=\"{action}\"}} {n}"
            );
        }
        head(
            &mut out,
            "ferric_periodic_job_duration_seconds",
            "histogram",
            "Duration of one pass of a periodic job.",
        );
        for (job, h) in &periodic {
            let labels = format!("job=\"{job}\"");
            h.render(
                &mut out,
                "ferric_periodic_job_duration_seconds",
                &labels,
                &JOB_BUCKETS,
            );
        }
        out
    }
}

/// Delivery counters of a notification sink.
#[derive(Debug, Default)]
pub struct NotifyCounters {
    /// Accepted into the sender's queue.
    pub queued: AtomicU64,
    /// Delivered (webhook 2xx, AMQP publish confirmed, logged).
    pub sent: AtomicU64,
    /// Dropped because the queue was full (emission never blocks a task).
    pub dropped: AtomicU64,
    /// Given up on after the retries ran out.
    pub failed: AtomicU64,
}

impl NotifyCounters {
    /// Prometheus text for the counters, labelled with the sink kind.
    pub fn render(&self, sink: &str) -> String {
        let mut out = String::new();
        for (name, help, v) in [
            (
                "ferric_notifications_queued_total",
                "Notifications accepted into the sender queue.",
                &self.queued,
            ),
            (
                "ferric_notifications_sent_total",
                "Notifications delivered.",
                &self.sent,
            ),
            (
                "ferric_notifications_dropped_total",
                "Notifications dropped because the sender queue was full.",
                &self.dropped,
            ),
            (
                "ferric_notifications_failed_total",
                "Notifications given up on after the retries ran out.",
                &self.failed,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(
                out,
                "{name}{{sink=\"{sink}\"}} {}",
                v.load(Ordering::Relaxed)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_map_to_the_fixed_set() {
        for (free, label) in [
            ("provision action: deploy", "deploy"),
            ("provision action: manage", "provision"),
            ("continue deploy", "deploy"),
            ("changing node power state to power on", "power"),
            ("power state sync", "power_sync"),
            ("recover lock of host-3", "recovery"),
            ("agent heartbeat: continue", "agent_heartbeat"),
            ("wait timeout", "wait_timeout"),
            ("take over", "takeover"),
            ("node update", "update"),
            ("node deletion", "delete"),
            ("something a driver made up 12345", "other"),
            // Case does not matter; short and empty purposes are "other".
            ("Recover lock of host-3", "recovery"),
            ("Continue DEPLOY", "deploy"),
            ("PROVISION action: manage", "provision"),
            ("po", "other"),
            ("", "other"),
        ] {
            assert_eq!(purpose_label(free), label, "{free}");
            assert!(PURPOSES.contains(&purpose_label(free)));
        }
    }

    #[test]
    fn renders_cumulative_histograms_counters_and_gauges() {
        let m = ConductorMetrics::default();
        m.observe_wait("deploy", Duration::from_micros(300));
        m.observe_wait("deploy", Duration::from_millis(40));
        m.node_locked("power on");
        m.lock_lost("write");
        m.recovery_action("offline", "recovered");
        m.sample_heartbeats([("c1".to_string(), 1.5)]);
        m.sample_locks(3, 2);
        {
            let _w = m.waiting();
            assert!(m.render().contains("ferric_lock_waiting_tasks 1\n"));
        }
        drop(m.time_job("takeover"));
        let text = m.render();
        assert!(
            text.contains("ferric_lock_wait_seconds_bucket{purpose=\"deploy\",le=\"0.0005\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("ferric_lock_wait_seconds_bucket{purpose=\"deploy\",le=\"0.05\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("ferric_lock_wait_seconds_count{purpose=\"deploy\"} 2\n"));
        assert!(text.contains("ferric_lock_node_locked_total{purpose=\"power\"} 1\n"));
        assert!(text.contains("ferric_lock_lost_total{op=\"write\"} 1\n"));
        assert!(text
            .contains("ferric_recovery_actions_total{cause=\"offline\",action=\"recovered\"} 1\n"));
        assert!(text.contains("ferric_conductor_heartbeat_age_seconds{conductor=\"c1\"} 1.5\n"));
        assert!(text.contains("ferric_lock_queue_depth 2\n"));
        assert!(text.contains("ferric_lock_waiting_tasks 0\n"));
        assert!(text.contains("ferric_periodic_job_duration_seconds_count{job=\"takeover\"} 1\n"));
    }
}

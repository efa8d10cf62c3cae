//! Conductor metrics (SPEC §8, issue 8): lock wait and hold histograms by
//! purpose, NodeLocked and LockLost counters, the lock queue depth, heartbeat
//! age per conductor, recovery actions, periodic job durations and
//! notification delivery.
//!
//! The families are `prometheus-client` metrics. Each struct here makes its
//! families once and [`ConductorMetrics::register`]s them (shared handles,
//! not copies) into the process's one [`Registry`], which `ferric serve`
//! builds and `ferric-api` encodes at `/metrics`. A TaskManager built without
//! `serve` (tests, tools) still counts; [`ConductorMetrics::render`] encodes
//! its families alone. The hot path is one atomic add or one short mutex
//! section.
//!
//! Invariant: every label set is bounded and typed. Lock purposes are free
//! text ("provision action: deploy", "recover lock of host-3"), so they are
//! mapped onto the closed enum [`Purpose`]; lock ops, recovery causes and
//! actions, and periodic jobs are enums too, and every combination of them is
//! present (at zero) from the start. Conductor hostnames (heartbeat age) are
//! bounded by the cluster's size; a departed conductor's series is removed at
//! the next sample.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
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

/// `registry` in the Prometheus text exposition format 0.0.4. Encoding into a
/// `String` fails only if a label value cannot be written (none of ours can);
/// the failure is then rendered as a comment.
pub fn render_registry(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, registry) {
        let _ = writeln!(out, "# encoding failed: {e}");
    }
    out
}

/// A closed set of label values: the enum, `ALL`, and each value's text.
macro_rules! label_values {
    (
        $(#[$doc:meta])*
        $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal,)+ }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// Every value, in label order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The label value.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
                EncodeLabelValue::encode(&self.as_str(), encoder)
            }
        }
    };
}

label_values! {
    /// The `purpose` label: what a lock was taken for (see [`Purpose::of`]).
    Purpose {
        Deploy => "deploy",
        Clean => "clean",
        Provision => "provision",
        Power => "power",
        PowerSync => "power_sync",
        AgentHeartbeat => "agent_heartbeat",
        Recovery => "recovery",
        WaitTimeout => "wait_timeout",
        Takeover => "takeover",
        Update => "update",
        Delete => "delete",
        Console => "console",
        Validate => "validate",
        Bench => "bench",
        Other => "other",
    }
}

label_values! {
    /// The `op` label of LockLost: what the holder tried when it found its
    /// lock gone.
    LockOp {
        /// A fenced write was refused.
        Write => "write",
        /// The release matched nothing.
        Release => "release",
    }
}

label_values! {
    /// The `cause` label of a recovery: why the lock was taken from its holder.
    RecoveryCause {
        Offline => "offline",
        Restarted => "restarted",
        Operator => "operator",
    }
}

label_values! {
    /// The `action` label of a recovery.
    RecoveryAction {
        /// The lock was taken over.
        Recovered => "recovered",
        /// The node was left mid-operation and has been failed.
        FailedNode => "failed_node",
    }
}

label_values! {
    /// The `job` label: the conductor's periodic jobs.
    PeriodicJob {
        Recovery => "recovery",
        WaitTimeouts => "wait_timeouts",
        Takeover => "takeover",
        PowerSync => "power_sync",
    }
}

impl Purpose {
    /// Map a free-text lock purpose onto the fixed set (first match wins).
    ///
    /// Runs on every lock acquisition and release, so it compares in place,
    /// ignoring ASCII case, instead of allocating a lower-cased copy.
    pub fn of(purpose: &str) -> Purpose {
        let p = purpose.as_bytes();
        let has = |s: &str| {
            let s = s.as_bytes();
            p.len() >= s.len() && p.windows(s.len()).any(|w| w.eq_ignore_ascii_case(s))
        };
        let starts =
            |s: &str| p.len() >= s.len() && p[..s.len()].eq_ignore_ascii_case(s.as_bytes());
        if starts("recover") {
            Purpose::Recovery
        } else if has("power state sync") || has("power sync") {
            Purpose::PowerSync
        } else if has("heartbeat") {
            Purpose::AgentHeartbeat
        } else if has("wait timeout") {
            Purpose::WaitTimeout
        } else if has("take over") || has("takeover") {
            Purpose::Takeover
        } else if has("deploy") {
            Purpose::Deploy
        } else if has("clean") {
            Purpose::Clean
        } else if starts("provision") {
            Purpose::Provision
        } else if has("power") || has("reboot") {
            Purpose::Power
        } else if has("delet") {
            Purpose::Delete
        } else if has("update") {
            Purpose::Update
        } else if has("console") {
            Purpose::Console
        } else if has("validate") {
            Purpose::Validate
        } else if has("bench") {
            Purpose::Bench
        } else {
            Purpose::Other
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PurposeLabels {
    purpose: Purpose,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OpLabels {
    op: LockOp,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RecoveryLabels {
    cause: RecoveryCause,
    action: RecoveryAction,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct JobLabels {
    job: PeriodicJob,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ConductorLabels {
    conductor: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn lock_histogram() -> Histogram {
    Histogram::new(LOCK_BUCKETS)
}

fn job_histogram() -> Histogram {
    Histogram::new(JOB_BUCKETS)
}

/// The metrics of one conductor process. One per [`crate::TaskManager`].
#[derive(Debug)]
pub struct ConductorMetrics {
    lock_wait: HistogramFamily<PurposeLabels>,
    lock_hold: HistogramFamily<PurposeLabels>,
    node_locked: Family<PurposeLabels, Counter>,
    lock_lost: Family<OpLabels, Counter>,
    /// Tasks of this process queued for a lock right now.
    waiting: Gauge,
    /// Waiters queued on all nodes (cluster-wide), as of the last sample.
    queue_depth: Gauge,
    /// Nodes whose lock is held (cluster-wide), as of the last sample.
    locks_held: Gauge,
    heartbeat_age: Family<ConductorLabels, Gauge<f64, AtomicU64>>,
    /// The conductors `heartbeat_age` has a series for. Its lock also
    /// serialises samples.
    heartbeat_hosts: Mutex<BTreeSet<String>>,
    recovery: Family<RecoveryLabels, Counter>,
    periodic: HistogramFamily<JobLabels>,
}

impl Default for ConductorMetrics {
    /// The families, every bounded label combination present at zero.
    fn default() -> Self {
        let m = ConductorMetrics {
            lock_wait: Family::new_with_constructor(lock_histogram),
            lock_hold: Family::new_with_constructor(lock_histogram),
            node_locked: Family::default(),
            lock_lost: Family::default(),
            waiting: Gauge::default(),
            queue_depth: Gauge::default(),
            locks_held: Gauge::default(),
            heartbeat_age: Family::default(),
            heartbeat_hosts: Mutex::new(BTreeSet::new()),
            recovery: Family::default(),
            periodic: Family::new_with_constructor(job_histogram),
        };
        // Each guard is dropped at once: a held read guard would deadlock the
        // next `get_or_create` of a new label set.
        for &purpose in Purpose::ALL {
            let labels = PurposeLabels { purpose };
            let _ = m.lock_wait.get_or_create(&labels);
            let _ = m.lock_hold.get_or_create(&labels);
            let _ = m.node_locked.get_or_create(&labels);
        }
        for &op in LockOp::ALL {
            let _ = m.lock_lost.get_or_create(&OpLabels { op });
        }
        for &cause in RecoveryCause::ALL {
            for &action in RecoveryAction::ALL {
                let _ = m.recovery.get_or_create(&RecoveryLabels { cause, action });
            }
        }
        for &job in PeriodicJob::ALL {
            let _ = m.periodic.get_or_create(&JobLabels { job });
        }
        m
    }
}

/// Counts one task as queued for a lock until dropped.
#[derive(Debug)]
pub struct Waiting<'a>(&'a ConductorMetrics);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.dec();
    }
}

/// Records a periodic job's duration when dropped.
#[derive(Debug)]
pub struct JobTimer<'a> {
    metrics: &'a ConductorMetrics,
    job: PeriodicJob,
    started: Instant,
}

impl Drop for JobTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .observe_periodic(self.job, self.started.elapsed());
    }
}

impl ConductorMetrics {
    /// Register the families into `registry` (the handles are shared: what
    /// this struct records shows in `registry`). Called once, by the owner of
    /// the process's registry.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "ferric_lock_wait_seconds",
            "Time from asking for a node's exclusive lock to holding it, by purpose",
            self.lock_wait.clone(),
        );
        registry.register(
            "ferric_lock_hold_seconds",
            "Time a node's exclusive lock was held by this conductor, by purpose",
            self.lock_hold.clone(),
        );
        // Counter names are registered without `_total`: the encoder adds it.
        registry.register(
            "ferric_lock_node_locked",
            "Acquisitions that ended in NodeLocked, by purpose",
            self.node_locked.clone(),
        );
        registry.register(
            "ferric_lock_lost",
            "Fenced writes or releases refused because the lock was gone (LockLost)",
            self.lock_lost.clone(),
        );
        registry.register(
            "ferric_lock_waiting_tasks",
            "Tasks of this conductor queued for a node lock",
            self.waiting.clone(),
        );
        registry.register(
            "ferric_lock_queue_depth",
            "Waiters queued on all nodes' locks, as of the last recovery pass",
            self.queue_depth.clone(),
        );
        registry.register(
            "ferric_locks_held",
            "Nodes whose lock is held, as of the last recovery pass",
            self.locks_held.clone(),
        );
        registry.register(
            "ferric_conductor_heartbeat_age_seconds",
            "Age of each registered conductor's heartbeat (database clock), as of the last recovery pass",
            self.heartbeat_age.clone(),
        );
        registry.register(
            "ferric_recovery_actions",
            "Locks recovered from dead or overridden holders, and nodes failed by recovery",
            self.recovery.clone(),
        );
        registry.register(
            "ferric_periodic_job_duration_seconds",
            "Duration of one pass of a periodic job",
            self.periodic.clone(),
        );
    }

    /// A lock was granted after `waited` (zero-wait grants included).
    pub fn observe_wait(&self, purpose: &str, waited: Duration) {
        let labels = PurposeLabels {
            purpose: Purpose::of(purpose),
        };
        self.lock_wait
            .get_or_create(&labels)
            .observe(waited.as_secs_f64());
    }

    /// A lock was released (or handed on) after being held for `held`.
    pub fn observe_hold(&self, purpose: &str, held: Duration) {
        let labels = PurposeLabels {
            purpose: Purpose::of(purpose),
        };
        self.lock_hold
            .get_or_create(&labels)
            .observe(held.as_secs_f64());
    }

    /// An acquisition ended in NodeLocked (refused at once, queue full, or
    /// the wait ran out).
    pub fn node_locked(&self, purpose: &str) {
        let labels = PurposeLabels {
            purpose: Purpose::of(purpose),
        };
        self.node_locked.get_or_create(&labels).inc();
    }

    /// A holder found its lock gone.
    pub fn lock_lost(&self, op: LockOp) {
        self.lock_lost.get_or_create(&OpLabels { op }).inc();
    }

    /// A recovery took a lock away for `cause`.
    pub fn recovery_action(&self, cause: RecoveryCause, action: RecoveryAction) {
        self.recovery
            .get_or_create(&RecoveryLabels { cause, action })
            .inc();
    }

    /// A periodic job ran for `took`.
    pub fn observe_periodic(&self, job: PeriodicJob, took: Duration) {
        self.periodic
            .get_or_create(&JobLabels { job })
            .observe(took.as_secs_f64());
    }

    /// Time a periodic job until the returned guard drops.
    pub fn time_job(&self, job: PeriodicJob) -> JobTimer<'_> {
        JobTimer {
            metrics: self,
            job,
            started: Instant::now(),
        }
    }

    /// Count a task as queued for a lock until the guard drops.
    pub fn waiting(&self) -> Waiting<'_> {
        self.waiting.inc();
        Waiting(self)
    }

    /// Record the cluster's lock table as sampled by a recovery pass:
    /// held locks and queued waiters over all nodes.
    pub fn sample_locks(&self, held: usize, waiters: usize) {
        self.locks_held.set(i64::try_from(held).unwrap_or(i64::MAX));
        self.queue_depth
            .set(i64::try_from(waiters).unwrap_or(i64::MAX));
    }

    /// Replace the heartbeat ages (conductor → seconds, database clock): the
    /// new ages are set first, then the series of conductors no longer listed
    /// are removed, so a scrape never misses a conductor that stays.
    pub fn sample_heartbeats(&self, ages: impl IntoIterator<Item = (String, f64)>) {
        let mut hosts = match self.heartbeat_hosts.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let mut now = BTreeSet::new();
        for (conductor, age) in ages {
            let labels = ConductorLabels { conductor };
            self.heartbeat_age.get_or_create(&labels).set(age);
            now.insert(labels.conductor);
        }
        for departed in hosts.difference(&now) {
            self.heartbeat_age.remove(&ConductorLabels {
                conductor: departed.clone(),
            });
        }
        *hosts = now;
    }

    /// NodeLocked refusals so far for a purpose label (tests).
    pub fn node_locked_count(&self, label: &str) -> u64 {
        Purpose::ALL
            .iter()
            .find(|p| p.as_str() == label)
            .and_then(|&purpose| self.node_locked.get(&PurposeLabels { purpose }))
            .map_or(0, |c| c.get())
    }

    /// LockLost events so far for an op label (tests).
    pub fn lock_lost_count(&self, op: &str) -> u64 {
        LockOp::ALL
            .iter()
            .find(|o| o.as_str() == op)
            .and_then(|&op| self.lock_lost.get(&OpLabels { op }))
            .map_or(0, |c| c.get())
    }

    /// Recovery actions so far for an action label, all causes (tests).
    pub fn recovery_count(&self, action: &str) -> u64 {
        let Some(&action) = RecoveryAction::ALL.iter().find(|a| a.as_str() == action) else {
            return 0;
        };
        RecoveryCause::ALL
            .iter()
            .filter_map(|&cause| self.recovery.get(&RecoveryLabels { cause, action }))
            .map(|c| c.get())
            .sum()
    }

    /// Observations of a periodic job so far, read off the encoded `_count`
    /// sample (the client keeps a histogram's count private) (tests).
    pub fn periodic_count(&self, job: &str) -> u64 {
        let mut registry = Registry::default();
        registry.register("periodic", "", self.periodic.clone());
        let prefix = format!("periodic_count{{job=\"{job}\"}} ");
        render_registry(&registry)
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// This conductor's families alone in the Prometheus text format (tests
    /// and tools; `/metrics` encodes the process's registry).
    pub fn render(&self) -> String {
        let mut registry = Registry::default();
        self.register(&mut registry);
        render_registry(&registry)
    }
}

/// Delivery counters of a notification sink, labelled with the sink kind
/// when registered.
#[derive(Debug, Default)]
pub struct NotifyCounters {
    /// Accepted into the sender's queue.
    pub queued: Counter,
    /// Delivered (webhook 2xx, AMQP publish confirmed, logged).
    pub sent: Counter,
    /// Dropped because the queue was full (emission never blocks a task).
    pub dropped: Counter,
    /// Given up on after the retries ran out.
    pub failed: Counter,
}

impl NotifyCounters {
    /// Register the counters into `registry` with the label `sink="<sink>"`.
    pub fn register(&self, sink: &'static str, registry: &mut Registry) {
        let labelled =
            registry.sub_registry_with_label((Cow::Borrowed("sink"), Cow::Borrowed(sink)));
        labelled.register(
            "ferric_notifications_queued",
            "Notifications accepted into the sender queue",
            self.queued.clone(),
        );
        labelled.register(
            "ferric_notifications_sent",
            "Notifications delivered",
            self.sent.clone(),
        );
        labelled.register(
            "ferric_notifications_dropped",
            "Notifications dropped because the sender queue was full",
            self.dropped.clone(),
        );
        labelled.register(
            "ferric_notifications_failed",
            "Notifications given up on after the retries ran out",
            self.failed.clone(),
        );
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
            assert_eq!(Purpose::of(free).as_str(), label, "{free}");
            assert!(Purpose::ALL.contains(&Purpose::of(free)));
        }
    }

    #[test]
    fn renders_cumulative_histograms_counters_and_gauges() {
        let m = ConductorMetrics::default();
        m.observe_wait("deploy", Duration::from_micros(300));
        m.observe_wait("deploy", Duration::from_millis(40));
        m.node_locked("power on");
        m.lock_lost(LockOp::Write);
        m.recovery_action(RecoveryCause::Offline, RecoveryAction::Recovered);
        m.sample_heartbeats([("c1".to_string(), 1.5)]);
        m.sample_locks(3, 2);
        {
            let _w = m.waiting();
            assert!(m.render().contains("ferric_lock_waiting_tasks 1\n"));
        }
        drop(m.time_job(PeriodicJob::Takeover));
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
        assert_eq!(m.periodic_count("takeover"), 1);
    }

    #[test]
    fn bounded_counters_start_at_zero() {
        let text = ConductorMetrics::default().render();
        for &purpose in Purpose::ALL {
            let line = format!(
                "ferric_lock_node_locked_total{{purpose=\"{}\"}} 0\n",
                purpose.as_str()
            );
            assert!(text.contains(&line), "{line}\n{text}");
        }
        for line in [
            "ferric_lock_lost_total{op=\"write\"} 0\n",
            "ferric_lock_lost_total{op=\"release\"} 0\n",
            "ferric_recovery_actions_total{cause=\"operator\",action=\"failed_node\"} 0\n",
            "ferric_periodic_job_duration_seconds_count{job=\"power_sync\"} 0\n",
            "ferric_lock_hold_seconds_count{purpose=\"clean\"} 0\n",
        ] {
            assert!(text.contains(line), "{line}\n{text}");
        }
    }

    #[test]
    fn a_departed_conductors_heartbeat_series_goes_away() {
        let m = ConductorMetrics::default();
        m.sample_heartbeats([("c1".to_string(), 1.25), ("c2".to_string(), 2.5)]);
        let text = m.render();
        assert!(text.contains("conductor=\"c1\"} 1.25\n"), "{text}");
        assert!(text.contains("conductor=\"c2\"} 2.5\n"), "{text}");
        m.sample_heartbeats([("c2".to_string(), 3.75)]);
        let text = m.render();
        assert!(!text.contains("conductor=\"c1\""), "{text}");
        assert!(text.contains("conductor=\"c2\"} 3.75\n"), "{text}");
    }

    #[test]
    fn notify_counters_carry_the_sink_label() {
        let c = NotifyCounters::default();
        let mut registry = Registry::default();
        c.register("webhook", &mut registry);
        c.queued.inc();
        let text = render_registry(&registry);
        assert!(
            text.contains("ferric_notifications_queued_total{sink=\"webhook\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("ferric_notifications_failed_total{sink=\"webhook\"} 0\n"),
            "{text}"
        );
    }
}

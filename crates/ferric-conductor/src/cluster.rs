//! Conductor membership and the periodic work every live conductor does
//! (SPEC §6, §7): heartbeats on the database clock, the hash ring, recovery of
//! locks held by dead conductors, wait-state timeouts, takeover.
//!
//! Each periodic job has a `*_once` function that tests (and the simulator)
//! drive directly; [`Conductor::start`] runs them on timers.

use crate::drivers::Drivers;
use crate::metrics::{PeriodicJob, RecoveryAction, RecoveryCause};
use crate::power::PowerSync;
use crate::ring::HashRing;
use crate::task::{EventOpts, Retry, TaskManager};
use crate::TaskError;
use ferric_core::{Event, ProvisionState};
use ferric_store::{Claim, ConductorInfo, LockView, NodeQuery, StoreError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn, Instrument};
use uuid::Uuid;

/// What a recovery pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Locks taken from dead holders.
    pub recovered: Vec<Uuid>,
    /// Of those, nodes moved from a transient state to its failure state.
    pub failed: Vec<Uuid>,
    /// Locks another conductor recovered first (or whose node went away).
    pub raced: usize,
}

/// Why a lock is being recovered, for messages and the audit trail.
pub enum Cause {
    /// The holder's heartbeat is older than heartbeat_timeout (or it stopped).
    Offline,
    /// This conductor restarted under the holder's hostname.
    Restarted,
    /// An operator released it (`ferric lock release`); `forced` when the
    /// holder was alive.
    Operator {
        actor: String,
        reason: String,
        forced: bool,
    },
}

/// Take the lock of `view` away from its holder, conditional on the holder's
/// exact token: the node is failed if it is in a transient state, then the
/// lock goes to the next live waiter. Operator releases are audited.
/// Returns `false` when someone else changed the lock first.
pub async fn recover_lock(
    tm: &TaskManager,
    view: &LockView,
    cause: Cause,
) -> Result<bool, TaskError> {
    let mut report = RecoveryReport::default();
    recover_one(tm, view, cause, &mut report).await?;
    Ok(!report.recovered.is_empty())
}

async fn recover_one(
    tm: &TaskManager,
    view: &LockView,
    cause: Cause,
    report: &mut RecoveryReport,
) -> Result<(), TaskError> {
    let Some(token) = view.token() else {
        return Ok(());
    };
    let dead = token.holder.clone();
    let claim = Claim {
        holder: tm.host().to_string(),
        task_id: Uuid::new_v4(),
        purpose: format!("recover lock of {dead}"),
    };
    // Conditional on the stale (holder, task, epoch): of two recoverers, one wins.
    let mine = match tm.store().handoff(&token, &claim).await {
        Ok(t) => t,
        Err(StoreError::LockLost { .. } | StoreError::NodeNotFound(_)) => {
            report.raced += 1;
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    report.recovered.push(token.node);
    let cause_label = match &cause {
        Cause::Offline => RecoveryCause::Offline,
        Cause::Restarted => RecoveryCause::Restarted,
        Cause::Operator { .. } => RecoveryCause::Operator,
    };
    tm.metrics()
        .recovery_action(cause_label, RecoveryAction::Recovered);
    let why = match &cause {
        Cause::Offline => format!("conductor {dead} went offline"),
        Cause::Restarted => format!("conductor {dead} restarted"),
        Cause::Operator {
            actor,
            reason,
            forced: true,
        } => format!("{actor} took the lock from its live holder {dead} (forced: {reason})"),
        Cause::Operator { actor, reason, .. } => {
            format!("{actor} released the lock of {dead} ({reason})")
        }
    };
    // From here on the lock is ours: whatever fails, the node must not stay
    // locked by a live conductor that does nothing with it.
    // Reading the node can fail on a store error: retry with backoff before
    // giving the lock back (released unfailed, a transient node would be
    // left with nobody working on it).
    let mut adopted = tm.adopt(mine.clone()).await;
    let mut pause = Duration::from_millis(100);
    for _ in 0..8 {
        match &adopted {
            Ok(_) => break,
            Err(e) if e.is_lock_lost() || e.is_not_found() => break,
            Err(_) => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
                adopted = tm.adopt(mine.clone()).await;
            }
        }
    }
    let mut task = match adopted {
        Ok(t) => t,
        Err(e) => {
            crate::task::release_in_background(tm, mine).await;
            return Err(e);
        }
    };
    let mut audit_error = None;
    if let Cause::Operator {
        actor,
        reason,
        forced,
    } = &cause
    {
        let entry = ferric_store::AuditEntry {
            action: if *forced {
                "force-release"
            } else {
                "release-stale"
            }
            .to_string(),
            actor: actor.clone(),
            reason: reason.clone(),
        };
        if let Err(e) = tm.store().record_audit(&token, &entry).await {
            warn!(node_uuid = %token.node, error.message = %e, "could not record the override in the audit trail");
            audit_error = Some(e);
        }
    }
    let state = task.node().provision_state;
    let what = recovery_log_message(&cause);
    warn!(node_uuid = %token.node, holder = %dead, lock_epoch = token.epoch, purpose = %token.purpose, state = %state, "{what}");
    // Store errors while failing the node are retried with backoff (about 6 s
    // in all): a transient node released without being failed would be left
    // with nobody working on it.
    let mut outcome = settle_recovered_node(&mut task, &why, &token).await;
    let mut pause = Duration::from_millis(100);
    for _ in 0..8 {
        match &outcome {
            Ok(_) => break,
            Err(e) if e.is_lock_lost() || e.is_not_found() => break,
            Err(e) => {
                warn!(node_uuid = %token.node, error.message = %e, "failing the recovered node failed; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
                outcome = settle_recovered_node(&mut task, &why, &token).await;
            }
        }
    }
    let released = task.release().await;
    if outcome? {
        report.failed.push(token.node);
        tm.metrics()
            .recovery_action(cause_label, RecoveryAction::FailedNode);
    }
    released?;
    match audit_error {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// The log line of a recovery: only a holder judged offline is called dead.
pub fn recovery_log_message(cause: &Cause) -> &'static str {
    match cause {
        Cause::Offline => "recovering the lock of a dead conductor",
        Cause::Restarted => "recovering the lock of this conductor's previous run",
        Cause::Operator { forced: true, .. } => {
            "an operator is taking the lock from its live holder (forced)"
        }
        Cause::Operator { forced: false, .. } => {
            "an operator is releasing the lock of an offline holder"
        }
    }
}

/// Fail a recovered node that was in a transient state (or drop a pending
/// power target). Returns whether the node was failed.
async fn settle_recovered_node(
    task: &mut crate::task::ExclusiveTask,
    why: &str,
    token: &ferric_store::LockToken,
) -> Result<bool, TaskError> {
    let state = task.node().provision_state;
    if state.is_unstable() {
        let msg = format!(
            "{why} while the node was in \"{state}\" (lock epoch {}, purpose: {}); the lock was recovered by {}",
            token.epoch,
            token.purpose,
            task.manager().host()
        );
        let keep = matches!(state, ProvisionState::CleanWait | ProvisionState::Cleaning)
            .then_some(task.node().target_provision_state)
            .flatten()
            .filter(|t| t.is_stable());
        task.process_event(
            Event::Fail,
            EventOpts {
                target: keep,
                last_error: Some(msg),
                spawn: false,
            },
        )
        .await?;
        return Ok(true);
    }
    if task.node().target_power_state.is_some() {
        task.node_mut().target_power_state = None;
        task.node_mut().last_error =
            Some(format!("Pending power operation was aborted because {why}"));
        task.save().await?;
    }
    Ok(false)
}

/// Recover every lock held by a conductor that is not alive (heartbeat older
/// than heartbeat_timeout on the database clock, or stopped). Maintenance
/// nodes included. Idempotent and safe to run on every conductor at once.
pub async fn recover_stale_locks_once(tm: &TaskManager) -> Result<RecoveryReport, TaskError> {
    let _timer = tm.metrics().time_job(PeriodicJob::Recovery);
    let mut report = RecoveryReport::default();
    // Fenced, or just back from an outage: the others may not have had
    // time to beat again (crate::liveness).
    if !tm.liveness().may_judge_others() {
        tracing::debug!("stale lock recovery skipped: own heartbeat fenced or in its grace");
        return Ok(report);
    }
    let views = tm.store().list_locks().await?;
    tm.metrics().sample_locks(
        views.iter().filter(|v| v.holder.is_some()).count(),
        views.iter().map(|v| v.waiters.len()).sum(),
    );
    for view in views {
        if view.holder.is_some()
            && view.holder_online == Some(false)
            && view.holder.as_deref() != Some(tm.host())
        {
            if let Err(e) = recover_one(tm, &view, Cause::Offline, &mut report).await {
                warn!(node_uuid = %view.node, error.message = %e, "stale lock recovery failed; will retry");
            }
        }
    }
    Ok(report)
}

/// At start-up, before registering: locks held under this exact hostname
/// belong to a previous life of this conductor. Recover them all.
pub async fn recover_own_locks(tm: &TaskManager) -> Result<RecoveryReport, TaskError> {
    let mut report = RecoveryReport::default();
    for view in tm.store().list_locks().await? {
        if view.holder.as_deref() == Some(tm.host()) {
            if let Err(e) = recover_one(tm, &view, Cause::Restarted, &mut report).await {
                warn!(node_uuid = %view.node, error.message = %e, "recovery of own stale lock failed");
            }
        }
    }
    Ok(report)
}

/// Sample every registered conductor's heartbeat age (database clock) into
/// the metrics. Run with each recovery pass.
pub async fn sample_heartbeats(tm: &TaskManager) -> Result<(), TaskError> {
    let rows = tm.store().list_conductors().await?;
    tm.metrics().sample_heartbeats(
        rows.into_iter()
            .filter(|c| c.online)
            .map(|c| (c.hostname, c.heartbeat_age_ms as f64 / 1000.0)),
    );
    Ok(())
}

/// The ring of this conductor's group over alive conductors.
pub async fn current_ring(tm: &TaskManager) -> Result<HashRing, TaskError> {
    let group = tm.config().conductor_group.to_ascii_lowercase();
    let alive = tm
        .store()
        .list_conductors()
        .await?
        .into_iter()
        .filter(|c| c.alive && c.conductor_group == group)
        .map(|c| c.hostname);
    Ok(HashRing::new(alive, tm.config().hash_partition_exponent))
}

/// Fail nodes this conductor owns that waited for a call-back too long.
/// Locked nodes are skipped this round. Returns the nodes failed.
pub async fn fail_timed_out_waits_once(tm: &TaskManager) -> Result<Vec<Uuid>, TaskError> {
    let _timer = tm.metrics().time_job(PeriodicJob::WaitTimeouts);
    let c = tm.config();
    let ring = current_ring(tm).await?;
    let now = tm.store().now().await?;
    let mut failed = Vec::new();
    for (state, timeout) in [
        (ProvisionState::DeployWait, c.deploy_callback_timeout),
        (ProvisionState::CleanWait, c.clean_callback_timeout),
        (ProvisionState::InspectWait, c.inspect_wait_timeout),
        (ProvisionState::RescueWait, c.rescue_callback_timeout),
        (ProvisionState::ServiceWait, c.service_callback_timeout),
    ] {
        if timeout.is_zero() {
            continue;
        }
        let limit = now.0 - timeout.as_micros() as i64;
        let page = tm
            .store()
            .list_nodes(&NodeQuery {
                provision_state: Some(state.as_str().to_string()),
                conductor_group: Some(c.conductor_group.clone()),
                ..Default::default()
            })
            .await?;
        for node in page.nodes {
            let stale = node.provision_updated_at.is_none_or(|t| t.0 < limit);
            if !stale || ring.owner(node.uuid) != Some(tm.host()) {
                continue;
            }
            let mut task = match tm
                .acquire(node.uuid)
                .purpose("wait timeout")
                .retry(Retry::None)
                .exclusive()
                .await
            {
                Ok(t) => t,
                Err(e) if e.is_node_locked() || e.is_not_found() => continue,
                Err(e) => return Err(e),
            };
            // Re-check under the lock: the call-back may have arrived meanwhile.
            let fresh = task.node();
            if fresh.provision_state != state
                || fresh.provision_updated_at.is_some_and(|t| t.0 >= limit)
            {
                task.release().await?;
                continue;
            }
            let keep = if state == ProvisionState::DeployWait {
                None
            } else {
                fresh.target_provision_state.filter(|t| t.is_stable())
            };
            let msg = format!(
                "Timeout reached while waiting for callback for node {} (\"{state}\")",
                node.uuid
            );
            crate::provision::steps::wipe(task.node_mut());
            task.process_event(
                Event::Fail,
                EventOpts {
                    target: keep,
                    last_error: Some(msg),
                    spawn: false,
                },
            )
            .await?;
            failed.push(node.uuid);
            task.release().await?;
        }
    }
    Ok(failed)
}

/// Nodes a periodic job reads at a time: its memory stays bounded by a page
/// whatever the fleet's size.
pub(crate) const PERIODIC_PAGE: u32 = 1000;

/// The nodes of `query` in uuid order, [`PERIODIC_PAGE`] at a time.
pub(crate) struct Pages {
    query: NodeQuery,
    done: bool,
}

impl Pages {
    pub(crate) fn new(query: NodeQuery) -> Self {
        Pages { query, done: false }
    }

    /// The next page; `None` after the last one.
    pub(crate) async fn next(
        &mut self,
        tm: &TaskManager,
    ) -> Result<Option<Vec<ferric_core::Node>>, TaskError> {
        if self.done {
            return Ok(None);
        }
        self.query.limit = Some(PERIODIC_PAGE);
        let nodes = tm.store().list_nodes(&self.query).await?.nodes;
        self.done = nodes.len() < PERIODIC_PAGE as usize;
        self.query.marker = nodes.last().map(|n| n.uuid);
        Ok(Some(nodes))
    }
}

/// Take over the nodes the ring gives this conductor: record
/// `conductor_affinity` (what `ferric conductor list` counts as a
/// conductor's nodes, so every state is taken over, not only `active` ones
/// as Ironic's `_sync_local_state` does). Locked nodes are skipped this
/// round (the store filters them). Returns the nodes taken over.
pub async fn take_over_once(tm: &TaskManager) -> Result<Vec<Uuid>, TaskError> {
    let _timer = tm.metrics().time_job(PeriodicJob::Takeover);
    // The ring's membership is judged by heartbeats too (crate::liveness).
    if !tm.liveness().may_judge_others() {
        return Ok(Vec::new());
    }
    let ring = current_ring(tm).await?;
    let mut taken = Vec::new();
    let mut pages = Pages::new(NodeQuery {
        conductor_group: Some(tm.config().conductor_group.clone()),
        reserved: Some(false),
        ..Default::default()
    });
    while let Some(nodes) = pages.next(tm).await? {
        take_over_page(tm, &ring, nodes, &mut taken).await?;
    }
    if !taken.is_empty() {
        info!(count = taken.len(), "took over nodes after a ring change");
    }
    Ok(taken)
}

async fn take_over_page(
    tm: &TaskManager,
    ring: &HashRing,
    nodes: Vec<ferric_core::Node>,
    taken: &mut Vec<Uuid>,
) -> Result<(), TaskError> {
    for node in nodes {
        if ring.owner(node.uuid) != Some(tm.host())
            || node.conductor_affinity.as_deref() == Some(tm.host())
            || node.reservation.is_some()
        {
            continue;
        }
        let mut task = match tm
            .acquire(node.uuid)
            .purpose("take over")
            .retry(Retry::None)
            .exclusive()
            .await
        {
            Ok(t) => t,
            Err(e) if e.is_node_locked() || e.is_not_found() => continue,
            Err(e) => return Err(e),
        };
        task.node_mut().conductor_affinity = Some(tm.host().to_string());
        task.save_and_release().await?;
        taken.push(node.uuid);
    }
    Ok(())
}

/// A running conductor: heartbeats, wakeups and periodic jobs.
pub struct Conductor {
    tm: TaskManager,
    stop: watch::Sender<bool>,
    jobs: Vec<JoinHandle<()>>,
}

/// What [`Conductor::start_with`] runs besides the lock and recovery loops.
#[derive(Clone)]
pub struct StartOptions {
    /// Register and heartbeat (off when the embedding process runs its own heartbeat).
    pub heartbeat: bool,
    /// Drivers for the power-state sync; none registered means no sync.
    pub drivers: Drivers,
}

impl Default for StartOptions {
    fn default() -> Self {
        StartOptions {
            heartbeat: true,
            drivers: Drivers::empty(),
        }
    }
}

impl Conductor {
    /// Recover this hostname's stale locks, register, and start every loop.
    pub async fn start(tm: TaskManager) -> Result<Conductor, TaskError> {
        Self::start_with(tm, StartOptions::default()).await
    }

    /// Like [`Conductor::start`] with options.
    pub async fn start_with(
        tm: TaskManager,
        options: StartOptions,
    ) -> Result<Conductor, TaskError> {
        let own = recover_own_locks(&tm).await?;
        if !own.recovered.is_empty() {
            warn!(
                count = own.recovered.len(),
                "recovered locks left by a previous run of this conductor"
            );
        }
        // Allocations this hostname left `allocating` in a previous life
        // (their processing died with it).
        match crate::allocation::take_over_orphans(&tm, true).await {
            Ok(0) => {}
            Ok(n) => warn!(count = n, "resumed allocations left by a previous run"),
            Err(e) => warn!(error.message = %e, "resuming orphaned allocations failed"),
        }
        let c = tm.config().clone();
        let driver_names: Vec<String> = if options.drivers.names().is_empty() {
            vec!["fake-hardware".to_string()]
        } else {
            options
                .drivers
                .names()
                .into_iter()
                .map(String::from)
                .collect()
        };
        if options.heartbeat {
            tm.store()
                .register_conductor(&ConductorInfo {
                    hostname: c.host.clone(),
                    conductor_group: c.conductor_group.clone(),
                    drivers: driver_names,
                })
                .await?;
        }
        let (stop, _) = watch::channel(false);
        let mut jobs = vec![tm.start_wake_listener().await?];
        if options.heartbeat {
            jobs.push(spawn_every(
                &stop,
                "heartbeat",
                c.heartbeat_interval,
                tm.clone(),
                |tm| {
                    Box::pin(async move {
                        match tm.store().heartbeat(tm.host()).await {
                            Ok(()) => {}
                            Err(StoreError::ConductorNotFound(_)) => {
                                let c = tm.config();
                                let info = ConductorInfo {
                                    hostname: c.host.clone(),
                                    conductor_group: c.conductor_group.clone(),
                                    drivers: vec!["fake-hardware".into()],
                                };
                                if let Err(e) = tm.store().register_conductor(&info).await {
                                    warn!(error.message = %e, "re-registration failed");
                                }
                            }
                            // Keep heartbeating after database errors (an old Ironic bug killed the loop).
                            Err(e) => warn!(error.message = %e, "heartbeat failed; will retry"),
                        }
                    })
                },
            ));
        }
        if !options.drivers.names().is_empty() && !c.sync_power_state_interval.is_zero() {
            let sync = Arc::new(PowerSync::default());
            let drivers = options.drivers.clone();
            jobs.push(spawn_every(
                &stop,
                "power_sync",
                c.sync_power_state_interval,
                tm.clone(),
                move |tm| {
                    let sync = sync.clone();
                    let drivers = drivers.clone();
                    Box::pin(async move {
                        match sync.sync_once(&tm, &drivers).await {
                            Ok(r) => tracing::debug!(
                                checked = r.checked,
                                corrected = r.corrected.len(),
                                skipped_locked = r.skipped_locked,
                                "power sync round"
                            ),
                            Err(e) => warn!(error.message = %e, "power sync round failed"),
                        }
                    })
                },
            ));
        }
        jobs.push(spawn_every(
            &stop,
            "stale_lock_recovery",
            c.recovery_interval,
            tm.clone(),
            |tm| {
                Box::pin(async move {
                    if let Err(e) = sample_heartbeats(&tm).await {
                        warn!(error.message = %e, "heartbeat metrics sample failed");
                    }
                    match recover_stale_locks_once(&tm).await {
                        Ok(r) if !r.recovered.is_empty() => info!(
                            recovered = r.recovered.len(),
                            failed = r.failed.len(),
                            "stale locks recovered"
                        ),
                        Ok(_) => {}
                        Err(e) => warn!(error.message = %e, "stale lock recovery pass failed"),
                    }
                })
            },
        ));
        jobs.push(spawn_every(
            &stop,
            "provision_state_check",
            c.check_provision_state_interval,
            tm.clone(),
            |tm| {
                Box::pin(async move {
                    if let Err(e) = fail_timed_out_waits_once(&tm).await {
                        warn!(error.message = %e, "wait timeout pass failed");
                    }
                    if let Err(e) = take_over_once(&tm).await {
                        warn!(error.message = %e, "takeover pass failed");
                    }
                    if let Err(e) = crate::allocation::take_over_orphans(&tm, false).await {
                        warn!(error.message = %e, "orphaned allocation pass failed");
                    }
                })
            },
        ));
        info!(host = %c.host, group = %c.conductor_group, "conductor started");
        Ok(Conductor { tm, stop, jobs })
    }

    /// The conductor's TaskManager.
    pub fn task_manager(&self) -> &TaskManager {
        &self.tm
    }

    /// Graceful stop: stop waiting for locks, let running background work
    /// finish (up to graceful_shutdown_timeout) while heartbeats go on, then
    /// stop the loops and mark this conductor offline.
    pub async fn stop(self) {
        self.tm.shutdown();
        let pool = self.tm.config().workers_pool_size as usize;
        let deadline = tokio::time::Instant::now() + self.tm.config().graceful_shutdown_timeout;
        while self.tm.free_workers() < pool && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if self.tm.free_workers() < pool {
            warn!(
                busy = pool - self.tm.free_workers(),
                "graceful shutdown timeout: work still running; its locks will be recovered"
            );
        }
        self.stop.send_replace(true);
        for j in self.jobs {
            let _ = j.await;
        }
        if let Err(e) = self.tm.store().unregister_conductor(self.tm.host()).await {
            warn!(error.message = %e, "unregister failed");
        }
        info!(host = %self.tm.host(), "conductor stopped");
    }
}

/// Run `job` every `every` until `stop` turns true, in a `worker` span.
fn spawn_every(
    stop: &watch::Sender<bool>,
    name: &'static str,
    every: Duration,
    tm: TaskManager,
    job: impl Fn(TaskManager) -> crate::task::BoxFuture<'static, ()> + Send + 'static,
) -> JoinHandle<()> {
    let mut stop = stop.subscribe();
    let span = tracing::info_span!("worker", name);
    tokio::spawn(
        async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                if *stop.borrow() {
                    break;
                }
                tokio::select! {
                    biased;
                    changed = stop.changed() => {
                        if changed.is_err() {
                            break;
                        }
                    }
                    _ = tick.tick() => job(tm.clone()).await,
                }
            }
        }
        .instrument(span),
    )
}

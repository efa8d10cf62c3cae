//! Power actions under a lock and the periodic power-state sync (SPEC §7).

use crate::cluster::current_ring;
use crate::drivers::{Drivers, PowerInterface};
use crate::task::{ExclusiveTask, Retry, TaskManager};
use crate::TaskError;
use ferric_core::{PowerState, ProvisionState};
use ferric_store::{NodeQuery, PowerObservation};
use futures_util::StreamExt as _;
use std::collections::HashMap;
use std::sync::Mutex;
use tracing::{info, warn};
use uuid::Uuid;

/// Change a node's power under its lock: record the target, ask the BMC,
/// record the result (Ironic's `node_power_action`). A BMC failure is
/// written to `last_error` and returned.
pub async fn power_action(
    task: &mut ExclusiveTask,
    driver: &dyn PowerInterface,
    target: PowerState,
) -> Result<(), TaskError> {
    task.node_mut().target_power_state = Some(target);
    task.node_mut().last_error = None;
    task.save().await?;
    let result = driver.set_power_state(task, target).await;
    let node = task.node_mut();
    node.target_power_state = None;
    match &result {
        Ok(()) => {
            node.power_state = Some(match target {
                PowerState::Off | PowerState::SoftPowerOff => PowerState::Off,
                _ => PowerState::On,
            });
        }
        Err(e) => {
            node.last_error = Some(format!("Failed to change power state to '{target}': {e}"));
        }
    }
    task.save().await?;
    result.map_err(TaskError::from)
}

/// States in which power sync leaves a node alone (Ironic's SYNC_EXCLUDED_STATES).
pub fn sync_excluded(state: ProvisionState) -> bool {
    matches!(
        state,
        ProvisionState::DeployWait
            | ProvisionState::CleanWait
            | ProvisionState::Enroll
            | ProvisionState::AdoptFailed
    )
}

/// Per-conductor memory of BMC failures between sync rounds.
#[derive(Debug, Default)]
pub struct PowerSync {
    failures: Mutex<HashMap<Uuid, u32>>,
}

/// What one sync round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PowerSyncReport {
    /// Nodes whose BMC was asked.
    pub checked: usize,
    /// Nodes whose DB state was recorded or whose hardware was corrected.
    pub corrected: Vec<Uuid>,
    /// Nodes skipped because someone held their lock, or took it or wrote
    /// the node between listing and recording (no error, next round).
    pub skipped_locked: usize,
    /// BMC read failures this round.
    pub bmc_failures: usize,
    /// Nodes put into maintenance after too many failures.
    pub to_maintenance: Vec<Uuid>,
}

impl PowerSync {
    fn bump(&self, node: Uuid) -> u32 {
        let mut m = match self.failures.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let c = m.entry(node).or_insert(0);
        *c += 1;
        *c
    }

    fn reset(&self, node: Uuid) {
        match self.failures.lock() {
            Ok(mut m) => m.remove(&node),
            Err(p) => p.into_inner().remove(&node),
        };
    }

    /// One round over the nodes this conductor owns.
    pub async fn sync_once(
        &self,
        tm: &TaskManager,
        drivers: &Drivers,
    ) -> Result<PowerSyncReport, TaskError> {
        let _timer = tm
            .metrics()
            .time_job(crate::metrics::PeriodicJob::PowerSync);
        let ring = current_ring(tm).await?;
        let mut report = PowerSyncReport::default();
        let mut observed = Vec::new();
        // Page by page: memory stays bounded by a page whatever the fleet's
        // size.
        let mut pages = crate::cluster::Pages::new(NodeQuery {
            conductor_group: Some(tm.config().conductor_group.clone()),
            maintenance: Some(false),
            ..Default::default()
        });
        while let Some(nodes) = pages.next(tm).await? {
            self.sync_page(tm, drivers, &ring, nodes, &mut observed, &mut report)
                .await?;
        }
        Self::record(tm, &mut observed, &mut report).await?;
        Ok(report)
    }

    /// One page of a sync round: the nodes this conductor owns, unlocked,
    /// with a power interface, up to sync_power_state_workers at a time.
    async fn sync_page(
        &self,
        tm: &TaskManager,
        drivers: &Drivers,
        ring: &crate::ring::HashRing,
        nodes: Vec<ferric_core::Node>,
        observed: &mut Vec<PowerObservation>,
        report: &mut PowerSyncReport,
    ) -> Result<(), TaskError> {
        let max_retries = tm.config().power_state_sync_max_retries;
        let mut candidates = Vec::new();
        for node in nodes {
            if ring.owner(node.uuid) != Some(tm.host()) || sync_excluded(node.provision_state) {
                continue;
            }
            if node.reservation.is_some() {
                report.skipped_locked += 1;
                continue;
            }
            let Some(driver) = drivers.power_for(&node) else {
                continue;
            };
            candidates.push((node, driver));
        }
        report.checked += candidates.len();
        // Nodes are independent: up to sync_power_state_workers at a time
        // (Ironic's default 8), so BMC round trips and commits overlap.
        let workers = tm.config().sync_power_state_workers.max(1) as usize;
        let mut queue = candidates.into_iter();
        let mut outcomes = futures_util::stream::FuturesUnordered::new();
        loop {
            while outcomes.len() < workers {
                let Some((node, driver)) = queue.next() else {
                    break;
                };
                outcomes.push(self.sync_node(tm, driver, node, max_retries));
            }
            let Some((uuid, outcome)) = outcomes.next().await else {
                break;
            };
            match outcome? {
                Outcome::InSync => {}
                Outcome::Locked => report.skipped_locked += 1,
                Outcome::Corrected => report.corrected.push(uuid),
                Outcome::Observed(o) => {
                    observed.push(o);
                    if observed.len() >= RECORD_BATCH {
                        Self::record(tm, observed, report).await?;
                    }
                }
                Outcome::BmcFailed { to_maintenance } => {
                    report.bmc_failures += 1;
                    if to_maintenance {
                        report.to_maintenance.push(uuid);
                    }
                }
            }
        }
        Ok(())
    }

    /// Record a batch of observed power states (one transaction). A node
    /// locked or written since it was listed is skipped, like a locked one.
    async fn record(
        tm: &TaskManager,
        observed: &mut Vec<PowerObservation>,
        report: &mut PowerSyncReport,
    ) -> Result<(), TaskError> {
        if observed.is_empty() {
            return Ok(());
        }
        let recorded = tm.store().record_power_states(observed).await?;
        report.skipped_locked += observed.len() - recorded.len();
        report.corrected.extend(recorded.iter().map(|n| n.uuid));
        observed.clear();
        Ok(())
    }

    /// One node of a sync round.
    async fn sync_node(
        &self,
        tm: &TaskManager,
        driver: std::sync::Arc<dyn PowerInterface>,
        node: ferric_core::Node,
        max_retries: u32,
    ) -> (uuid::Uuid, Result<Outcome, TaskError>) {
        let uuid = node.uuid;
        (
            uuid,
            self.sync_node_inner(tm, driver.as_ref(), node, max_retries)
                .await,
        )
    }

    async fn sync_node_inner(
        &self,
        tm: &TaskManager,
        driver: &dyn PowerInterface,
        node: ferric_core::Node,
        max_retries: u32,
    ) -> Result<Outcome, TaskError> {
        let bmc = driver.get_power_state(&node).await;
        if let Ok(state) = bmc {
            let force = tm.config().force_power_state_during_sync;
            match node.power_state {
                Some(db) if db == state => {
                    self.reset(node.uuid);
                    return Ok(Outcome::InSync);
                }
                // Not known yet, or recorded wrong and we believe the
                // hardware: record what the BMC says, batched, without the
                // lock (Store::record_power_states is fenced by lock_epoch
                // and revision, so it is skipped if anyone locked or wrote
                // the node since it was listed).
                db if db.is_none() || !force => {
                    self.reset(node.uuid);
                    if let Some(db) = db {
                        info!(node_uuid = %node.uuid, db = %db, bmc = %state, "power state sync: recording the hardware state");
                    }
                    return Ok(Outcome::Observed(PowerObservation {
                        node: node.uuid,
                        lock_epoch: node.lock_epoch,
                        revision: node.revision,
                        power_state: state,
                    }));
                }
                // Correcting the hardware is an action: under the lock.
                _ => {}
            }
        }
        let mut task = match tm
            .acquire(node.uuid)
            .purpose("power state sync")
            .retry(Retry::None)
            .exclusive()
            .await
        {
            Ok(t) => t,
            Err(e) if e.is_node_locked() => return Ok(Outcome::Locked),
            Err(e) if e.is_not_found() => return Ok(Outcome::InSync),
            Err(e) => return Err(e),
        };
        let outcome = match bmc {
            Err(e) => {
                let n = self.bump(node.uuid);
                warn!(node_uuid = %node.uuid, failures = n, error.message = %e, "power state sync: BMC read failed");
                let to_maintenance = n >= max_retries;
                if to_maintenance {
                    let t = task.node_mut();
                    t.maintenance = true;
                    t.maintenance_reason = Some(format!(
                        "During sync_power_state, max retries exceeded for node {}; switching node to maintenance mode. Error: {e}",
                        node.uuid
                    ));
                    t.last_error = t.maintenance_reason.clone();
                    task.save().await?;
                    self.reset(node.uuid);
                }
                Outcome::BmcFailed { to_maintenance }
            }
            // Only a mismatch under force_power_state_during_sync gets here
            // (every other reading is recorded without the lock); look again
            // under the lock, the node may have changed since it was listed.
            Ok(state) => {
                self.reset(node.uuid);
                match task.node().power_state {
                    Some(db) if db == state => Outcome::InSync,
                    Some(db) => {
                        info!(node_uuid = %node.uuid, db = %db, bmc = %state, "power state sync: correcting hardware to the recorded state");
                        if let Err(e) = driver.set_power_state(&task, db).await {
                            task.node_mut().last_error =
                                Some(format!("Failed to correct power state to '{db}': {e}"));
                            task.save().await?;
                        }
                        Outcome::Corrected
                    }
                    None => {
                        task.node_mut().power_state = Some(state);
                        task.save().await?;
                        Outcome::Corrected
                    }
                }
            }
        };
        task.release().await?;
        Ok(outcome)
    }
}

/// Observations recorded per transaction: bounds how long one batch holds
/// SQLite's writer (or PostgreSQL's revision counter) against other writes.
pub const RECORD_BATCH: usize = 256;

/// What happened to one node in a sync round.
enum Outcome {
    InSync,
    Locked,
    Corrected,
    /// The BMC's state, to record in a batch.
    Observed(PowerObservation),
    BmcFailed {
        to_maintenance: bool,
    },
}

//! The ramdisk agent's call-back (SPEC §10; reference ironic.md §2.11).
//!
//! A deploy or clean step that needs the agent ends with
//! [`StepOutcome::Wait`](crate::drivers::StepOutcome): the node moves to
//! `wait call-back` / `clean wait` and its lock is released. The agent's
//! heartbeat can reach any API process, which answers 202 at once (Ironic
//! casts the RPC and does not wait) and calls [`Provisioner::heartbeat`];
//! the continuation runs in the background:
//!
//! 1. a **patient** acquisition of the node ([`Retry::Patient`]): it waits in
//!    FIFO order, so a console-like client taking the lock again and again
//!    with short holds cannot starve it (seed 000, Ironic story 2008323);
//! 2. the state is checked again under the lock (a timeout, an abort or an
//!    earlier heartbeat may have moved the node meanwhile: then nothing
//!    happens);
//! 3. `resume` (→ `deploying` / `cleaning`), then the steps engine finishes
//!    the waiting step and runs the rest ([`super::steps::resume`]) in
//!    `spawn_after`, holding the lock until the end.
//!
//! Where the continuation runs (decision): Ironic routes a heartbeat to the
//! hash-ring owner of the node. ferric has no conductor-to-conductor RPC, so
//! the process that received the heartbeat runs the continuation itself.
//! This is safe because the lock protocol is in the store, not in the
//! process: the acquisition queues with every other waiter of every
//! process, every write is fenced by the (holder, task, epoch) token, and the
//! state is re-checked under the lock, so two heartbeats arriving at two
//! processes resume the node once.
//!
//! Heartbeats while the step is still running (`deploying` / `cleaning`,
//! lock held) also start a continuation: it queues behind the step and
//! resumes the node if the step ends in a wait state. One continuation per
//! node is queued per process at a time; repeated heartbeats are absorbed.

use super::steps::{self, Phase};
use super::Provisioner;
use crate::drivers::agent_client::URL_KEY;
use crate::drivers::InterfaceKind;
use crate::task::{EventOpts, ExclusiveTask, Retry, WorkError};
use crate::TaskError;
use ferric_core::{Event, Node, PowerState, ProvisionState};
use serde_json::Value;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use tracing::{debug, info, warn, Instrument};
use uuid::Uuid;

/// States in which a heartbeat leads to a continuation.
pub fn continues_from(state: ProvisionState) -> bool {
    matches!(
        state,
        ProvisionState::DeployWait
            | ProvisionState::CleanWait
            | ProvisionState::Deploying
            | ProvisionState::Cleaning
    )
}

/// Nodes whose continuation this process has queued (one at a time).
#[derive(Debug, Default)]
pub struct Continuations {
    queued: Mutex<HashSet<Uuid>>,
}

/// Removes its node from [`Continuations`] when dropped.
struct Queued {
    set: Arc<Continuations>,
    node: Uuid,
}

impl Continuations {
    fn claim(self: &Arc<Self>, node: Uuid) -> Option<Queued> {
        let mut q = match self.queued.lock() {
            Ok(q) => q,
            Err(p) => p.into_inner(),
        };
        q.insert(node).then(|| Queued {
            set: self.clone(),
            node,
        })
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        let mut q = match self.set.queued.lock() {
            Ok(q) => q,
            Err(p) => p.into_inner(),
        };
        q.remove(&self.node);
    }
}

/// What [`Provisioner::heartbeat`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    /// The node expects no call-back now (state or maintenance): ignored.
    Ignored,
    /// A continuation of this node is already queued in this process.
    AlreadyQueued,
    /// A continuation started in the background.
    Continuing,
}

/// What [`Provisioner::continue_node`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Continued {
    /// The node was waiting in this state and was resumed; the rest of the
    /// flow runs in the background under the lock.
    Resumed(ProvisionState),
    /// The node was not waiting for its agent (state under the lock).
    NotWaiting(ProvisionState),
    /// The waiting step still runs; the node keeps waiting in this state.
    StillWaiting(ProvisionState),
    /// The waiting step failed; the node failed from this state.
    Failed(ProvisionState),
}

/// What an agent's heartbeat says about the agent (IPA's heartbeat body).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentCallback {
    /// Where the agent's API listens.
    pub callback_url: String,
    pub agent_version: Option<String>,
    /// The agent's certificate (automatic TLS), or a verify setting.
    pub agent_verify_ca: Option<String>,
    pub agent_status: Option<String>,
    pub agent_status_message: Option<String>,
}

impl AgentCallback {
    /// Record the agent on the node (Ironic's heartbeat): its URL, version,
    /// certificate and status. Returns whether anything changed.
    fn record(&self, n: &mut Node) -> bool {
        let dii = &mut n.driver_internal_info;
        let before = dii.clone();
        dii.insert(URL_KEY.into(), Value::String(self.callback_url.clone()));
        for (key, v) in [
            ("agent_version", &self.agent_version),
            ("agent_verify_ca", &self.agent_verify_ca),
            ("agent_status", &self.agent_status),
            ("agent_status_message", &self.agent_status_message),
        ] {
            if let Some(v) = v {
                dii.insert(key.into(), Value::String(v.clone()));
            }
        }
        *dii != before
    }
}

impl Provisioner {
    /// An agent heartbeat for `node` (as read without the lock): start the
    /// continuation in the background if the node expects one.
    pub fn heartbeat(&self, node: &Node, callback: AgentCallback) -> Heartbeat {
        let state = node.provision_state;
        if !continues_from(state) || node.maintenance {
            warn!(node_uuid = %node.uuid, %state, maintenance = node.maintenance, callback_url = %callback.callback_url, "heartbeat from node in a state that expects none; not taking any action");
            return Heartbeat::Ignored;
        }
        let Some(queued) = self.continuations.claim(node.uuid) else {
            debug!(node_uuid = %node.uuid, "heartbeat: a continuation is already queued here");
            return Heartbeat::AlreadyQueued;
        };
        let this = self.clone();
        let uuid = node.uuid;
        let span = tracing::info_span!("agent_continuation", node_uuid = %uuid);
        tokio::spawn(
            async move {
                let _queued = queued;
                match this.continue_node_in(uuid, &callback, Some(state)).await {
                    Ok(c) => debug!(outcome = ?c, "continuation done"),
                    Err(e) if matches!(e, TaskError::ShuttingDown) || e.is_not_found() => {
                        info!(error.message = %e, "continuation dropped")
                    }
                    Err(e) => warn!(error.message = %e, "continuation failed"),
                }
            }
            .instrument(span),
        );
        Heartbeat::Continuing
    }

    /// Continue a node waiting for its agent: patient acquisition, the
    /// agent recorded on the node, the state checked under the lock, then
    /// the waiting step polled ([`steps::poll`]): still running → the node
    /// keeps waiting (its wait timeout restarts, Ironic's
    /// `touch_provisioning`); finished → `resume` and the rest of the flow
    /// in `spawn_after`; failed → the node fails. Returns once that is
    /// decided.
    pub async fn continue_node(
        &self,
        node: Uuid,
        callback: &AgentCallback,
    ) -> Result<Continued, TaskError> {
        self.continue_node_in(node, callback, None).await
    }

    /// [`Provisioner::continue_node`] for a heartbeat received while the
    /// node was in `seen`: a node that has left that state by the time the
    /// lock is granted (its phase ended, another began) does not take the
    /// stale heartbeat for the new phase's agent.
    async fn continue_node_in(
        &self,
        node: Uuid,
        callback: &AgentCallback,
        seen: Option<ProvisionState>,
    ) -> Result<Continued, TaskError> {
        let mut task = self
            .tm
            .acquire(node)
            .purpose("agent heartbeat: continue")
            .retry(Retry::Patient)
            .exclusive()
            .await?;
        let n = task.node();
        let state = n.provision_state;
        let waiting = matches!(
            state,
            ProvisionState::DeployWait | ProvisionState::CleanWait
        ) && !n.maintenance
            && seen.is_none_or(|s| s == state);
        let recorded = state.agent_may_run() && callback.record(task.node_mut());
        if !waiting {
            debug!(node_uuid = %node, %state, "node is not waiting for its agent; nothing to continue");
            if recorded {
                if let Err(e) = task.save().await {
                    warn!(node_uuid = %node, error.message = %e, "cannot record the agent's heartbeat");
                }
            }
            task.release().await?;
            return Ok(Continued::NotWaiting(state));
        }
        let phase = if state == ProvisionState::DeployWait {
            Phase::Deploy
        } else {
            Phase::Clean
        };
        let driver = match self.drivers.compose(task.node()) {
            Ok(d) => Ok(d),
            Err(e) => Err(e.to_string()),
        };
        let polled = match &driver {
            Ok(d) => steps::poll(&mut task, d, phase).await,
            Err(m) => Ok(steps::Polled::Failed(m.clone())),
        };
        let polled = match polled {
            Ok(p) => p,
            Err(e) => {
                if let Err(r) = task.release().await {
                    warn!(node_uuid = %node, error.message = %r, "release after a failed poll failed");
                }
                return Err(work_to_task(e));
            }
        };
        match polled {
            steps::Polled::Running => {
                task.touch_provisioning();
                task.save_and_release().await?;
                Ok(Continued::StillWaiting(state))
            }
            steps::Polled::Failed(message) => {
                warn!(node_uuid = %node, %state, error.message = %message, "the agent's step failed");
                if let Ok(d) = &driver {
                    if phase == Phase::Clean {
                        if let Err(e) = d.deploy.tear_down_cleaning(d, &mut task).await {
                            warn!(node_uuid = %node, error.message = %e, "tear down of cleaning after a failure failed");
                        }
                    } else if let Err(e) =
                        crate::drivers::direct::power(d, &mut task, PowerState::Off).await
                    {
                        // Ironic powers a node off after a failed deploy.
                        warn!(node_uuid = %node, error.message = %e, "power off after a failed deploy failed");
                    }
                }
                let failed = super::fail(&mut task, message).await;
                task.release().await?;
                failed.map_err(work_to_task)?;
                Ok(Continued::Failed(state))
            }
            steps::Polled::Next(next) => {
                // Manual cleaning keeps its manageable target (Ironic's resume_cleaning).
                let target = if state == ProvisionState::CleanWait {
                    task.node().target_provision_state.filter(|t| t.is_stable())
                } else {
                    None
                };
                let opts = EventOpts {
                    target,
                    last_error: None,
                    spawn: true,
                };
                if let Err(e) = task.process_event(Event::Resume, opts).await {
                    if let Err(r) = task.release().await {
                        warn!(node_uuid = %node, error.message = %r, "release after a refused resume failed");
                    }
                    return Err(e);
                }
                let step = match phase {
                    Phase::Deploy => "continue deploy",
                    Phase::Clean => "continue clean",
                };
                let this = self.clone();
                task.spawn_after(step, move |t| {
                    Box::pin(async move { this.continuation(t, phase, next).await })
                })
                .await?;
                Ok(Continued::Resumed(state))
            }
        }
    }

    /// The rest of the flow after `resume`, under the lock.
    async fn continuation(
        &self,
        t: &mut ExclusiveTask,
        phase: Phase,
        next: usize,
    ) -> Result<(), WorkError> {
        tokio::time::sleep(self.pause_for(t.node(), InterfaceKind::Deploy)).await;
        let driver = match self.drivers.compose(t.node()) {
            Ok(d) => d,
            Err(e) => return super::fail(t, e.to_string()).await,
        };
        steps::continue_from(t, &driver, phase, next).await
    }
}

/// A flow error as a task error (the flow's errors are task or store
/// errors; anything else is reported as a driver failure).
fn work_to_task(e: WorkError) -> TaskError {
    match e.downcast::<TaskError>() {
        Ok(t) => *t,
        Err(e) => match e.downcast::<ferric_store::StoreError>() {
            Ok(s) => TaskError::Store(*s),
            Err(e) => TaskError::Driver(crate::drivers::DriverError::permanent(e.to_string())),
        },
    }
}

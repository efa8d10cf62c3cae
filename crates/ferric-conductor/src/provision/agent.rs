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
use crate::task::{EventOpts, ExclusiveTask, Retry, WorkError};
use crate::TaskError;
use ferric_core::{Event, Node, ProvisionState};
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
}

impl Provisioner {
    /// An agent heartbeat for `node` (as read without the lock): start the
    /// continuation in the background if the node expects one.
    pub fn heartbeat(&self, node: &Node, callback_url: &str) -> Heartbeat {
        let state = node.provision_state;
        if !continues_from(state) || node.maintenance {
            warn!(node_uuid = %node.uuid, %state, maintenance = node.maintenance, callback_url, "heartbeat from node in a state that expects none; not taking any action");
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
                match this.continue_node(uuid).await {
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

    /// Resume a node waiting for its agent: patient acquisition, state check
    /// under the lock, `resume`, then the rest of the deploy or clean flow in
    /// `spawn_after`. Returns once the flow has started (or nothing was to
    /// be done).
    pub async fn continue_node(&self, node: Uuid) -> Result<Continued, TaskError> {
        let mut task = self
            .tm
            .acquire(node)
            .purpose("agent heartbeat: continue")
            .retry(Retry::Patient)
            .exclusive()
            .await?;
        let n = task.node();
        let state = n.provision_state;
        if !matches!(
            state,
            ProvisionState::DeployWait | ProvisionState::CleanWait
        ) || n.maintenance
        {
            debug!(node_uuid = %node, %state, "node is not waiting for its agent; nothing to continue");
            task.release().await?;
            return Ok(Continued::NotWaiting(state));
        }
        // Manual cleaning keeps its manageable target (Ironic's resume_cleaning).
        let target = if state == ProvisionState::CleanWait {
            n.target_provision_state.filter(|t| t.is_stable())
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
        let (step, phase) = if state == ProvisionState::DeployWait {
            ("continue deploy", Phase::Deploy)
        } else {
            ("continue clean", Phase::Clean)
        };
        let this = self.clone();
        task.spawn_after(step, move |t| {
            Box::pin(async move { this.continuation(t, phase).await })
        })
        .await?;
        Ok(Continued::Resumed(state))
    }

    /// The rest of the flow after `resume`, under the lock.
    async fn continuation(&self, t: &mut ExclusiveTask, phase: Phase) -> Result<(), WorkError> {
        tokio::time::sleep(self.step_delay).await;
        let driver = match self.drivers.compose(t.node()) {
            Ok(d) => d,
            Err(e) => return super::fail(t, e.to_string()).await,
        };
        steps::resume(t, &driver, phase).await
    }
}

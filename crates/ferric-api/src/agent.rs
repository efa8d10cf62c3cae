//! The ramdisk agent's call-back (SPEC §10; reference ironic.md §2.11):
//! `POST /v1/heartbeat/{node}`.
//!
//! A deploy or clean step that needs the agent ends with
//! [`StepOutcome::Wait`]: the node moves to `wait call-back` / `clean wait`
//! and its lock is released. The agent's heartbeat can reach any API
//! process. The handler answers 202 at once (Ironic casts the RPC and does
//! not wait), and the continuation runs in the background:
//!
//! 1. a **patient** acquisition of the node ([`Retry::Patient`]): it waits in
//!    FIFO order, so a console-like client taking the lock again and again
//!    with short holds cannot starve it (seed 000, Ironic story 2008323);
//! 2. the state is checked again under the lock (a timeout, an abort or an
//!    earlier heartbeat may have moved the node meanwhile: then nothing
//!    happens);
//! 3. `resume` (→ `deploying` / `cleaning`), then the driver's
//!    `continue_deploy` / `continue_clean` and `done` (→ `active`, or
//!    `available` / `manageable` after cleaning) in `spawn_after`, holding
//!    the lock until the end.
//!
//! Where the continuation runs (decision): Ironic routes a heartbeat to the
//! hash-ring owner of the node. ferric has no conductor-to-conductor RPC yet,
//! so the process that received the heartbeat computes the ring owner (and
//! logs it) but runs the continuation itself. This is safe because the lock
//! protocol is in the store, not in the process: the acquisition queues with
//! every other waiter of every process, every write is fenced by the
//! (holder, task, epoch) token, and the state is re-checked under the lock,
//! so two heartbeats arriving at two processes resume the node once. When an
//! internal RPC exists the handler can forward to the owner and the owner
//! calls the same [`continue_node`].
//!
//! Heartbeats in a state where no call-back is expected are accepted (202)
//! and ignored with a log line, as Ironic's `heartbeat_allowed` does.
//! Heartbeats while the step is still running (`deploying` / `cleaning`,
//! lock held) also start a continuation: it queues behind the step and
//! resumes the node if the step ends in a wait state. One continuation per
//! node is queued per process at a time; repeated heartbeats are absorbed.

use crate::error::ApiError;
use crate::extract::{ApiPath, JsonBody};
use crate::nodes::node_ident;
use crate::states::{clean_done, fail};
use crate::version::Version;
use crate::ApiState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ferric_conductor::drivers::{Drivers, StepOutcome};
use ferric_conductor::{EventOpts, ExclusiveTask, Retry, TaskError, TaskManager, WorkError};
use ferric_core::{Event, PowerState, ProvisionState};
use serde::Deserialize;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{debug, info, warn, Instrument};
use uuid::Uuid;

/// `POST /v1/heartbeat/{node}` body (ironic-python-agent's fields).
#[derive(Debug, Deserialize)]
pub struct HeartbeatBody {
    /// Where the agent listens (recorded in logs).
    pub callback_url: String,
    /// API 1.36+.
    #[serde(default)]
    pub agent_version: Option<String>,
    /// API 1.62+; not checked yet (no agent tokens).
    #[serde(default)]
    pub agent_token: Option<String>,
    /// API 1.68+.
    #[serde(default)]
    pub agent_verify_ca: Option<String>,
    /// API 1.72+.
    #[serde(default)]
    pub agent_status: Option<String>,
    /// API 1.72+.
    #[serde(default)]
    pub agent_status_message: Option<String>,
}

/// States in which a heartbeat leads to a continuation.
fn continues_from(state: ProvisionState) -> bool {
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
pub(crate) struct Continuations {
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

/// `POST /v1/heartbeat/{node_ident}` (API 1.22+): 202, empty body.
pub async fn heartbeat(
    State(st): State<ApiState>,
    v: Version,
    ApiPath(id): ApiPath<String>,
    JsonBody(body): JsonBody<HeartbeatBody>,
) -> Result<Response, ApiError> {
    if !v.at_least(22) {
        return Err(ApiError::not_found("The resource could not be found."));
    }
    for (given, min, field) in [
        (body.agent_version.is_some(), 36, "agent_version"),
        (body.agent_token.is_some(), 62, "agent_token"),
        (body.agent_verify_ca.is_some(), 68, "agent_verify_ca"),
        (
            body.agent_status.is_some() || body.agent_status_message.is_some(),
            72,
            "agent_status",
        ),
    ] {
        if given && !v.at_least(min) {
            return Err(ApiError::bad_request(format!(
                "Field \"{field}\" needs API version 1.{min} or later; this request used {v}."
            )));
        }
    }
    if body.callback_url.trim().is_empty() {
        return Err(ApiError::bad_request(
            "Invalid input for field/attribute callback_url: a URL is required.",
        ));
    }
    let node = st.tm.store().get_node(&node_ident(&id, v)?).await?;
    let state = node.provision_state;
    let agent_version = body.agent_version.as_deref().unwrap_or("unknown");
    if !continues_from(state) || node.maintenance {
        warn!(node_uuid = %node.uuid, %state, maintenance = node.maintenance, callback_url = %body.callback_url, "heartbeat from node in a state that expects none; not taking any action");
        return Ok(StatusCode::ACCEPTED.into_response());
    }
    let owner = st.owners().await.owner(&node).map(str::to_string);
    let Some(queued) = st.agent.claim(node.uuid) else {
        debug!(node_uuid = %node.uuid, "heartbeat: a continuation is already queued here");
        return Ok(StatusCode::ACCEPTED.into_response());
    };
    info!(node_uuid = %node.uuid, %state, callback_url = %body.callback_url, agent_version, ring_owner = owner.as_deref().unwrap_or("none"), here = %st.tm.host(), "agent heartbeat: continuing here (the fenced store lock makes any process safe)");
    let tm = st.tm.clone();
    let drivers = st.drivers.clone();
    let delay = st.fake_step_delay;
    let uuid = node.uuid;
    let span = tracing::info_span!("agent_continuation", node_uuid = %uuid);
    tokio::spawn(
        async move {
            let _queued = queued;
            match continue_node(&tm, &drivers, uuid, delay).await {
                Ok(c) => debug!(outcome = ?c, "continuation done"),
                Err(e) if matches!(e, TaskError::ShuttingDown) || e.is_not_found() => {
                    info!(error.message = %e, "continuation dropped")
                }
                Err(e) => warn!(error.message = %e, "continuation failed"),
            }
        }
        .instrument(span),
    );
    Ok(StatusCode::ACCEPTED.into_response())
}

/// What [`continue_node`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Continued {
    /// The node was waiting in this state and was resumed; the rest of the
    /// flow runs in the background under the lock.
    Resumed(ProvisionState),
    /// The node was not waiting for its agent (state under the lock).
    NotWaiting(ProvisionState),
}

/// Resume a node waiting for its agent: patient acquisition, state check
/// under the lock, `resume`, then the rest of the deploy or clean flow in
/// `spawn_after` (each step after `step_delay`). Returns once the flow has
/// started (or nothing was to be done).
pub async fn continue_node(
    tm: &TaskManager,
    drivers: &Drivers,
    node: Uuid,
    step_delay: Duration,
) -> Result<Continued, TaskError> {
    let mut task = tm
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
    let driver = drivers.get(&n.driver);
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
    let step = if state == ProvisionState::DeployWait {
        "continue deploy"
    } else {
        "continue clean"
    };
    task.spawn_after(step, move |t| Box::pin(continuation(t, driver, step_delay)))
        .await?;
    Ok(Continued::Resumed(state))
}

/// The rest of the flow after `resume`, under the lock.
async fn continuation(
    t: &mut ExclusiveTask,
    driver: Option<Arc<dyn ferric_conductor::drivers::Driver>>,
    delay: Duration,
) -> Result<(), WorkError> {
    tokio::time::sleep(delay).await;
    let (event, target) = match t.node().provision_state {
        ProvisionState::Deploying => {
            let outcome = match &driver {
                Some(d) => d.continue_deploy(t).await,
                None => Ok(StepOutcome::Done),
            };
            match outcome {
                Ok(StepOutcome::Done) => {
                    t.node_mut().power_state = Some(PowerState::On);
                    (Event::Done, None)
                }
                Ok(StepOutcome::Wait) => (Event::Wait, None),
                Err(e) => return fail(t, format!("Deploy step failed: {e}")).await,
            }
        }
        ProvisionState::Cleaning => {
            let outcome = match &driver {
                Some(d) => d.continue_clean(t).await,
                None => Ok(StepOutcome::Done),
            };
            match outcome {
                Ok(StepOutcome::Done) => (clean_done(t), None),
                Ok(StepOutcome::Wait) => (
                    Event::Wait,
                    t.node().target_provision_state.filter(|s| s.is_stable()),
                ),
                Err(e) => return fail(t, format!("Clean step failed: {e}")).await,
            }
        }
        _ => return Ok(()),
    };
    // Record what the step did to the power (a BMC read failure only logs).
    if let Some(d) = &driver {
        match d.get_power_state(t.node()).await {
            Ok(p) => t.node_mut().power_state = Some(p),
            Err(e) => {
                warn!(node_uuid = %t.node().uuid, error.message = %e, "cannot read the power state after the step")
            }
        }
    }
    t.process_event(
        event,
        EventOpts {
            target,
            ..Default::default()
        },
    )
    .await?;
    Ok(())
}

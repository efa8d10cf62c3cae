//! The provisioning flow: what the conductor does in each provision state.
//!
//! Invariant: only this module (and the cluster's recovery and wait
//! timeouts, which only fail nodes) moves `provision_state`; `ferric-api`
//! parses requests and calls [`Provisioner`].
//!
//! * [`Provisioner::provision`]: a verb (`manage`, `provide`, `deploy`,
//!   `clean`, `abort`, ...). Under the node's lock it checks what Ironic's
//!   conductor checks (state, maintenance, interface support, the user's
//!   steps, the driver's validation), moves the node with the FSM and runs
//!   the rest in the background (`spawn_after`), still holding the lock.
//! * The background flow per state: `verifying` (power validation and a
//!   power-state read), `deploying` and `cleaning` (the steps engine,
//!   [`steps`]), `deleting` (tear down, then cleaning), and the states whose
//!   interfaces are `fake` today (inspecting, rescuing, ...).
//! * [`agent`]: the ramdisk agent's heartbeat continues a node parked in
//!   `wait call-back` / `clean wait`.
//! * [`Provisioner::power`]: a power action.

pub mod agent;
pub mod steps;
pub mod templates;
pub mod token;

use crate::drivers::{Composed, Drivers, InterfaceKind, Invalid};
use crate::power::power_action;
use crate::task::{EventOpts, ExclusiveTask, Retry, TaskManager, WorkError};
use crate::TaskError;
use ferric_core::fsm::{allowed_events, next_state};
use ferric_core::{Event, Node, PowerState, ProvisionState};
use ferric_store::NodeIdent;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use steps::Phase;
use tracing::warn;

/// Default pause before each step of the provision and power flows (lets
/// clients observe the transient states, as on Ironic's fake driver).
pub const DEFAULT_STEP_DELAY: Duration = crate::config::defaults::FAKE_STEP_DELAY;

/// The `driver_info` key of a node's own fake step delay, in milliseconds.
pub const FAKE_STEP_DELAY_KEY: &str = "fake_step_delay_ms";

/// The longest fake step delay a node may ask for.
const MAX_FAKE_STEP_DELAY_MS: u64 = 600_000;

/// Why a verb was refused. Nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// The request cannot be done for this node now (Ironic's 400s:
    /// InvalidStateRequested, InvalidParameterValue, UnsupportedDriverExtension).
    #[error("{0}")]
    Invalid(String),
    /// The node is protected: no undeploy, rebuild or delete (Ironic's
    /// NodeProtected, a 403).
    #[error("Node {0} is protected and cannot be undeployed, rebuilt or deleted")]
    Protected(uuid::Uuid),
    /// The lock or the store said no.
    #[error(transparent)]
    Task(#[from] TaskError),
}

/// A provision verb and its arguments, as parsed by the API.
#[derive(Debug, Clone)]
pub struct Action {
    /// The FSM event.
    pub event: Event,
    /// The verb as the user wrote it (`active`, `deploy`, ...), for messages.
    pub verb: String,
    /// Manual cleaning's steps.
    pub clean_steps: Option<Vec<Value>>,
    /// Deploy steps given with `deploy` / `rebuild`.
    pub deploy_steps: Option<Vec<Value>>,
    /// The config drive of `deploy` / `rebuild` (kept in `instance_info`).
    pub configdrive: Option<Value>,
}

impl Action {
    /// A verb with no arguments.
    pub fn new(event: Event, verb: impl Into<String>) -> Action {
        Action {
            event,
            verb: verb.into(),
            clean_steps: None,
            deploy_steps: None,
            configdrive: None,
        }
    }
}

/// Names of the verbs, for "Actions allowed in this state" (one per event).
const VERB_NAMES: &[(Event, &str)] = &[
    (Event::Deploy, "active"),
    (Event::Rebuild, "rebuild"),
    (Event::Delete, "deleted"),
    (Event::Manage, "manage"),
    (Event::Provide, "provide"),
    (Event::Inspect, "inspect"),
    (Event::Abort, "abort"),
    (Event::Clean, "clean"),
    (Event::Adopt, "adopt"),
    (Event::Rescue, "rescue"),
    (Event::Unrescue, "unrescue"),
    (Event::Unhold, "unhold"),
    (Event::Service, "service"),
];

/// The verbs a user can send in `state`.
pub fn allowed_verbs(state: ProvisionState) -> Vec<&'static str> {
    let events = allowed_events(state);
    VERB_NAMES
        .iter()
        .filter(|(e, _)| events.contains(e))
        .map(|(_, v)| *v)
        .collect()
}

/// One interface's verdict in `GET /v1/nodes/{node}/validate`.
pub type Verdict = Result<(), Invalid>;

/// Runs the provisioning flow for one conductor process. Cheap to clone.
#[derive(Clone)]
pub struct Provisioner {
    tm: TaskManager,
    drivers: Drivers,
    step_delay: Duration,
    continuations: Arc<agent::Continuations>,
}

impl std::fmt::Debug for Provisioner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provisioner")
            .field("drivers", &self.drivers)
            .field("step_delay", &self.step_delay)
            .finish()
    }
}

impl Provisioner {
    /// The flow over `tm`'s nodes with `drivers`, pausing `step_delay`
    /// before each step.
    pub fn new(tm: TaskManager, drivers: Drivers, step_delay: Duration) -> Self {
        Provisioner {
            tm,
            drivers,
            step_delay,
            continuations: Arc::default(),
        }
    }

    /// The TaskManager.
    pub fn task_manager(&self) -> &TaskManager {
        &self.tm
    }

    /// The driver registry.
    pub fn drivers(&self) -> &Drivers {
        &self.drivers
    }

    /// The pause before each step.
    pub fn step_delay(&self) -> Duration {
        self.step_delay
    }

    /// The pause before a flow's work on `node`: the fake step delay when
    /// the interface doing the work is `fake` (it stands for real work),
    /// none for a real implementation (its own latency is real). The
    /// node's `driver_info.fake_step_delay_ms` (0 allowed, at most 600 s)
    /// overrides this process's setting (`[conductor] fake_step_delay`).
    pub(crate) fn pause_for(&self, node: &Node, kind: InterfaceKind) -> Duration {
        match self.drivers.interface_name(node, kind) {
            Some(name) if name == "fake" => node
                .driver_info
                .get(FAKE_STEP_DELAY_KEY)
                .and_then(|v| v.as_u64())
                .map_or(self.step_delay, |ms| {
                    Duration::from_millis(ms.min(MAX_FAKE_STEP_DELAY_MS))
                }),
            _ => Duration::ZERO,
        }
    }

    /// Each interface's verdict on `node` (Ironic's `validate`).
    pub async fn validate(&self, node: &Node) -> Vec<(InterfaceKind, Verdict)> {
        let driver = match self.drivers.compose(node) {
            Ok(d) => d,
            Err(e) => {
                return InterfaceKind::ALL
                    .into_iter()
                    .map(|k| (k, Err(Invalid::Config(e.to_string()))))
                    .collect()
            }
        };
        let mut out = Vec::new();
        for kind in InterfaceKind::ALL {
            out.push((kind, driver.interface(kind).validate(node).await));
        }
        out
    }

    /// Start a provision verb on the node `ident` (Ironic's
    /// `do_provisioning_action` and friends). Returns once the node moved
    /// and the background work, if any, started.
    pub async fn provision(
        &self,
        ident: impl Into<NodeIdent>,
        action: Action,
        retry: Retry,
    ) -> Result<(), ProvisionError> {
        let mut task = self
            .tm
            .acquire(ident)
            .purpose(format!("provision action: {}", action.verb))
            .retry(retry)
            .exclusive()
            .await?;
        match self.check_and_start(&mut task, &action).await {
            Ok(Started::Background) => {
                let this = self.clone();
                let step = format!("provision action {}", action.verb);
                task.spawn_after(&step, move |t| {
                    Box::pin(async move { this.background(t).await })
                })
                .await?;
                Ok(())
            }
            Ok(Started::Done) => {
                release(task).await;
                Ok(())
            }
            Err(e) => {
                release(task).await;
                Err(e)
            }
        }
    }

    /// The checks under the lock and the first transition.
    async fn check_and_start(
        &self,
        task: &mut ExclusiveTask,
        action: &Action,
    ) -> Result<Started, ProvisionError> {
        let event = action.event;
        let n = task.node();
        let state = n.provision_state;
        let verb = &action.verb;
        if matches!(event, Event::Rebuild | Event::Delete) && n.attrs.protected {
            return Err(ProvisionError::Protected(n.uuid));
        }
        if event == Event::Provide && state == ProvisionState::Manageable && n.attrs.retired {
            return Err(ProvisionError::Invalid(format!(
                "The providing operation can't be performed on node {} because it is retired.",
                n.uuid
            )));
        }
        if matches!(event, Event::Deploy | Event::Rebuild) && n.maintenance {
            return Err(ProvisionError::Invalid(format!(
                "The requested action \"{verb}\" can not be performed on node \"{}\" while it is in maintenance mode.",
                n.uuid
            )));
        }
        let Some(next) = next_state(state, event) else {
            let allowed = allowed_verbs(state);
            return Err(ProvisionError::Invalid(format!(
                "The requested action \"{verb}\" can not be performed on node \"{}\" while it is in state \"{state}\". Actions allowed in this state: {}.",
                n.uuid,
                if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") }
            )));
        };
        let driver = self.compose_for_verb(n, event)?;
        self.check_verb(&driver, task, action).await?;

        if event == Event::Abort {
            return self.abort(task, &driver).await;
        }
        // Manual cleaning returns to manageable (Ironic passes target_state).
        let explicit = (event == Event::Clean).then_some(ProvisionState::Manageable);
        let background = next.is_unstable();
        let opts = EventOpts {
            target: explicit,
            last_error: None,
            spawn: background,
        };
        task.process_event(event, opts).await?;
        Ok(if background {
            Started::Background
        } else {
            Started::Done
        })
    }

    /// The node's driver, for the verbs that need one.
    fn compose_for_verb(
        &self,
        node: &Node,
        event: Event,
    ) -> Result<Option<Composed>, ProvisionError> {
        match self.drivers.compose(node) {
            Ok(d) => Ok(Some(d)),
            // `manage` records the problem in last_error (verification
            // fails); other verbs that act on hardware are refused.
            Err(_) if matches!(event, Event::Manage | Event::Abort | Event::Delete) => Ok(None),
            Err(e) => Err(ProvisionError::Invalid(e.to_string())),
        }
    }

    /// Interface support, the user's steps and the driver's validation (400s).
    async fn check_verb(
        &self,
        driver: &Option<Composed>,
        task: &mut ExclusiveTask,
        action: &Action,
    ) -> Result<(), ProvisionError> {
        let Some(driver) = driver else { return Ok(()) };
        let n = task.node();
        let unsupported = |kind: InterfaceKind| {
            ProvisionError::Invalid(format!(
                "Driver {} does not support {kind} (disabled or not implemented).",
                n.driver
            ))
        };
        match action.event {
            Event::Rescue | Event::Unrescue
                if !driver.interface(InterfaceKind::Rescue).supported() =>
            {
                return Err(unsupported(InterfaceKind::Rescue))
            }
            Event::Inspect if !driver.interface(InterfaceKind::Inspect).supported() => {
                return Err(unsupported(InterfaceKind::Inspect))
            }
            _ => {}
        }
        match action.event {
            Event::Deploy | Event::Rebuild => {
                let mut problems = Vec::new();
                for kind in [
                    InterfaceKind::Power,
                    InterfaceKind::Management,
                    InterfaceKind::Boot,
                    InterfaceKind::Deploy,
                ] {
                    if let Err(Invalid::Config(m) | Invalid::Unsupported(m)) =
                        driver.interface(kind).validate(n).await
                    {
                        problems.push(format!("{kind}: {m}"));
                    }
                }
                if !problems.is_empty() {
                    return Err(ProvisionError::Invalid(format!(
                        "RPC do_node_deploy failed to validate deploy or power info for node {}. Error: {}",
                        n.uuid,
                        problems.join("; ")
                    )));
                }
                if let Some(cd) = &action.configdrive {
                    crate::configdrive::validate(cd).map_err(ProvisionError::Invalid)?;
                }
                let user = match &action.deploy_steps {
                    Some(raw) => steps::parse_user_steps(driver, n, Phase::Deploy, raw)
                        .map_err(ProvisionError::Invalid)?,
                    None => Vec::new(),
                };
                templates::template_steps(self.tm.store().as_ref(), driver, n)
                    .await
                    .map_err(|m| {
                        ProvisionError::Invalid(format!(
                            "Failed to validate deploy or power info for node {}: {m}",
                            n.uuid
                        ))
                    })?;
                let node = task.node_mut();
                steps::wipe(node);
                if !user.is_empty() {
                    node.driver_internal_info
                        .insert(steps::USER_DEPLOY_STEPS.into(), steps::to_json(&user));
                }
                if let Some(cd) = &action.configdrive {
                    node.instance_info.insert("configdrive".into(), cd.clone());
                }
            }
            Event::Clean => {
                if let Err(Invalid::Config(m) | Invalid::Unsupported(m)) =
                    driver.power.validate(n).await
                {
                    return Err(ProvisionError::Invalid(format!(
                        "RPC do_node_clean failed to validate power info. Cannot clean node {}. Error: {m}",
                        n.uuid
                    )));
                }
                let raw = action.clean_steps.as_deref().unwrap_or(&[]);
                let user = steps::parse_user_steps(driver, n, Phase::Clean, raw)
                    .map_err(ProvisionError::Invalid)?;
                let node = task.node_mut();
                steps::wipe(node);
                node.driver_internal_info
                    .insert(steps::MANUAL_CLEAN_STEPS.into(), steps::to_json(&user));
            }
            Event::Provide | Event::Delete => steps::wipe(task.node_mut()),
            _ => {}
        }
        Ok(())
    }

    /// `abort`: in `clean wait` the current step may not be abortable, then
    /// cleaning stops after it (Ironic's `abort_after`); otherwise cleaning
    /// is torn down and the node fails with the FSM's abort transition.
    async fn abort(
        &self,
        task: &mut ExclusiveTask,
        driver: &Option<Composed>,
    ) -> Result<Started, ProvisionError> {
        let n = task.node();
        let uuid = n.uuid;
        if n.provision_state == ProvisionState::CleanWait
            && !n.clean_step.is_empty()
            && n.clean_step.get("abortable") != Some(&Value::Bool(true))
        {
            let step = n.clean_step.get("step").cloned().unwrap_or(Value::Null);
            tracing::info!(node_uuid = %uuid, %step, "the current clean step is not abortable; cleaning stops after it");
            task.node_mut()
                .clean_step
                .insert("abort_after".into(), Value::Bool(true));
            task.save().await?;
            return Ok(Started::Done);
        }
        let was_cleaning = n.provision_state == ProvisionState::CleanWait;
        let step = n
            .clean_step
            .get("step")
            .and_then(Value::as_str)
            .map(str::to_string);
        if was_cleaning {
            if let Some(d) = driver {
                if let Err(e) = d.deploy.tear_down_cleaning(d, task).await {
                    warn!(node_uuid = %uuid, error.message = %e, "tear down of cleaning after abort failed");
                }
            }
        }
        steps::wipe(task.node_mut());
        let last_error = if was_cleaning {
            Some(match step {
                Some(s) => format!(
                    "By request, the clean operation was aborted for node {uuid} during or after the completion of step \"{s}\""
                ),
                None => format!("By request, the clean operation was aborted for node {uuid}"),
            })
        } else {
            None
        };
        task.process_event(
            Event::Abort,
            EventOpts {
                last_error,
                ..Default::default()
            },
        )
        .await?;
        Ok(Started::Done)
    }

    /// The work after a verb, under the lock: move the node from the state
    /// the verb left it in to the stable state it heads for.
    async fn background(&self, t: &mut ExclusiveTask) -> Result<(), WorkError> {
        use ProvisionState as S;
        // Bounded: the longest path is deleting → cleaning → available.
        for _ in 0..4 {
            let state = t.node().provision_state;
            if !matches!(
                state,
                S::Verifying
                    | S::Deploying
                    | S::Cleaning
                    | S::Deleting
                    | S::Inspecting
                    | S::Adopting
                    | S::Rescuing
                    | S::Unrescuing
                    | S::Servicing
            ) {
                return Ok(());
            }
            tokio::time::sleep(self.pause_for(t.node(), InterfaceKind::Deploy)).await;
            let driver = match self.drivers.compose(t.node()) {
                Ok(d) => d,
                Err(e) => {
                    let msg = if state == S::Verifying {
                        format!("Failed to verify node {}: {e}", t.node().uuid)
                    } else {
                        e.to_string()
                    };
                    return fail(t, msg).await;
                }
            };
            let event = match state {
                S::Verifying => match verify(t, &driver).await {
                    Ok(()) => Event::Done,
                    Err(msg) => return fail(t, msg).await,
                },
                S::Deploying => return steps::start_deploy(t, &driver).await,
                S::Cleaning => return steps::start_clean(t, &driver).await,
                S::Deleting => {
                    if let Err(e) = driver.deploy.tear_down(&driver, t).await {
                        return fail(t, format!("Tear down failed: {e}")).await;
                    }
                    // Ironic destroys the node's allocation on tear-down.
                    crate::allocation::drop_for_node(t).await?;
                    let n = t.node_mut();
                    n.power_state = Some(PowerState::Off);
                    n.instance_uuid = None;
                    n.instance_info.clear();
                    Event::Clean
                }
                // Inspecting, adopting, rescuing, unrescuing, servicing:
                // the interfaces that exist for them today finish at once.
                _ => Event::Done,
            };
            t.process_event(event, EventOpts::default()).await?;
        }
        Ok(())
    }

    /// Start a power action on `ident` (Ironic's `change_node_power_state`):
    /// `target_power_state` is set before this returns; the BMC work runs in
    /// the background under the lock.
    pub async fn power(
        &self,
        ident: impl Into<NodeIdent>,
        target: PowerState,
        label: &str,
        retry: Retry,
    ) -> Result<(), ProvisionError> {
        let result = match target {
            PowerState::Off | PowerState::SoftPowerOff => PowerState::Off,
            _ => PowerState::On,
        };
        let mut task = self
            .tm
            .acquire(ident)
            .purpose(format!("changing node power state to {label}"))
            .retry(retry)
            .exclusive()
            .await?;
        let n = task.node();
        if matches!(
            n.provision_state,
            ProvisionState::Cleaning | ProvisionState::CleanWait
        ) {
            let e = ProvisionError::Invalid(format!(
                "Can not change the power state of node {} while it is in provision state \"{}\".",
                n.uuid, n.provision_state
            ));
            release(task).await;
            return Err(e);
        }
        let power = match self.drivers.compose(n) {
            Ok(d) => d.power,
            Err(e) => {
                release(task).await;
                return Err(ProvisionError::Invalid(e.to_string()));
            }
        };
        // What Ironic shows while the action runs: the state it heads for.
        task.node_mut().target_power_state = Some(result);
        task.node_mut().last_error = None;
        if let Err(e) = task.save().await {
            release(task).await;
            return Err(e.into());
        }
        // No free worker: the action never starts, so the node must not go on
        // showing a target (Ironic's power_state_error_handler).
        task.set_spawn_error_hook(|_err, n| {
            n.target_power_state = None;
            n.last_error = Some("No free conductor workers available".to_string());
        });
        let delay = self.pause_for(task.node(), InterfaceKind::Power);
        task.spawn_after("power action", move |t| {
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                power_action(t, power.as_ref(), target).await?;
                Ok(())
            })
        })
        .await?;
        Ok(())
    }
}

/// What [`Provisioner::check_and_start`] left to do.
enum Started {
    /// Background work follows.
    Background,
    /// Nothing more: release the lock.
    Done,
}

/// Release, logging a failure (the work is done; the lock is recovered if
/// the release did not land).
pub(crate) async fn release(task: ExclusiveTask) {
    let node = task.node().uuid;
    if let Err(e) = task.release().await {
        warn!(node_uuid = %node, error.message = %e, "release failed");
    }
}

/// Ironic's verify: the power and management interfaces validate, then the
/// power state is read and recorded, and the boot mode and secure boot
/// state cached (Ironic's `node_update_cache`). `Err` is the `last_error`.
async fn verify(t: &mut ExclusiveTask, driver: &Composed) -> Result<(), String> {
    let node = t.node();
    let uuid = node.uuid;
    let mut failed = Vec::new();
    for kind in [InterfaceKind::Power, InterfaceKind::Management] {
        if let Err(Invalid::Config(m) | Invalid::Unsupported(m)) =
            driver.interface(kind).validate(node).await
        {
            failed.push(format!("{kind}: {m}"));
        }
    }
    if !failed.is_empty() {
        return Err(format!(
            "Failed to verify node {uuid}: {}",
            failed.join("; ")
        ));
    }
    match driver.power.get_power_state(node).await {
        Ok(p) => {
            t.node_mut().power_state = Some(p);
            crate::management::cache_boot_mode(t, driver).await;
            Ok(())
        }
        Err(e) => Err(format!(
            "Failed to verify node {uuid}: cannot read the power state: {e}"
        )),
    }
}

/// Move the node to `Fail`'s destination with `message` in `last_error`,
/// wiping the steps engine's state.
pub(crate) async fn fail(t: &mut ExclusiveTask, message: String) -> Result<(), WorkError> {
    steps::wipe(t.node_mut());
    let opts = EventOpts {
        last_error: Some(message),
        ..Default::default()
    };
    t.process_event(Event::Fail, opts).await?;
    Ok(())
}

/// Read the power state after hardware work; a failure only logs.
pub(crate) async fn record_power(t: &mut ExclusiveTask, driver: &Composed) {
    match driver.power.get_power_state(t.node()).await {
        Ok(p) => t.node_mut().power_state = Some(p),
        Err(e) => {
            warn!(node_uuid = %t.node().uuid, error.message = %e, "cannot read the power state after the step")
        }
    }
}

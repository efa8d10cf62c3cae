//! The steps engine (Ironic's `conductor/steps.py`, `deployments.py`,
//! `cleaning.py`).
//!
//! Every interface of the node's driver offers deploy and clean steps
//! (name, priority, arguments). Automated deploys and cleaning run the steps
//! whose priority is above 0, highest first (ties: power, management,
//! deploy, firmware, bios, raid, others); manual cleaning runs the user's
//! steps in the user's order, each checked against what the interfaces
//! offer. A step may finish (`Done`: the next one runs) or wait for the
//! ramdisk agent (`Wait`: the node parks in `wait call-back` / `clean wait`
//! with the lock released).
//!
//! State lives on the node, so any conductor can continue after a heartbeat
//! or a crash: `driver_internal_info.{deploy,clean}_steps` (the list),
//! `{deploy,clean}_step_index` (the step running or waiting), and the node's
//! `deploy_step` / `clean_step` field (that step, as the API shows it).

use super::{fail, record_power};
pub use crate::drivers::Phase;
use crate::drivers::{Composed, InterfaceKind, Step, StepOutcome};
use crate::task::{EventOpts, ExclusiveTask, WorkError};
use ferric_core::{Event, Node, PowerState, ProvisionState};
use serde_json::{Map, Value};

/// `driver_internal_info` key of the user's deploy steps.
pub const USER_DEPLOY_STEPS: &str = "user_deploy_steps";
/// `driver_internal_info` key of manual cleaning's steps (validated).
pub const MANUAL_CLEAN_STEPS: &str = "manual_clean_steps";

impl Phase {
    fn steps_key(self) -> &'static str {
        match self {
            Phase::Deploy => "deploy_steps",
            Phase::Clean => "clean_steps",
        }
    }

    fn index_key(self) -> &'static str {
        match self {
            Phase::Deploy => "deploy_step_index",
            Phase::Clean => "clean_step_index",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Phase::Deploy => "Deploy",
            Phase::Clean => "Clean",
        }
    }

    fn current(self, n: &mut Node) -> &mut Map<String, Value> {
        match self {
            Phase::Deploy => &mut n.deploy_step,
            Phase::Clean => &mut n.clean_step,
        }
    }
}

/// Steps as a JSON list.
pub fn to_json(steps: &[Step]) -> Value {
    Value::Array(steps.iter().map(|s| Value::Object(s.to_map())).collect())
}

fn from_json(v: Option<&Value>) -> Vec<Step> {
    v.and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default()
}

/// Remove every trace of a deploy or cleaning from the node.
pub fn wipe(n: &mut Node) {
    for key in [
        "deploy_steps",
        "deploy_step_index",
        "clean_steps",
        "clean_step_index",
        USER_DEPLOY_STEPS,
        MANUAL_CLEAN_STEPS,
        // The agent reports its steps again at its first call-back.
        "agent_cached_deploy_steps",
        "agent_cached_clean_steps",
    ] {
        n.driver_internal_info.remove(key);
    }
    n.deploy_step.clear();
    n.clean_step.clear();
}

/// Every step the driver's interfaces offer for `phase`.
pub fn offered(driver: &Composed, node: &Node, phase: Phase) -> Vec<Step> {
    InterfaceKind::ALL
        .into_iter()
        .flat_map(|k| {
            let i = driver.interface(k);
            match phase {
                Phase::Deploy => i.deploy_steps(node),
                Phase::Clean => i.clean_steps(node),
            }
        })
        .collect()
}

/// Highest priority first; equal priorities by interface order.
fn sort(steps: &mut [Step]) {
    steps.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(b.interface.step_order().cmp(&a.interface.step_order()))
    });
}

/// Interfaces whose steps a user may ask for (Ironic's schemas).
fn user_step_interfaces(phase: Phase) -> &'static [InterfaceKind] {
    use InterfaceKind as K;
    match phase {
        Phase::Clean => &[
            K::Power,
            K::Management,
            K::Deploy,
            K::Firmware,
            K::Bios,
            K::Raid,
        ],
        Phase::Deploy => &[
            K::Deploy,
            K::Bios,
            K::Raid,
            K::Firmware,
            K::Management,
            K::Power,
        ],
    }
}

/// Check the user's steps against what the interfaces offer. `Err` is the
/// 400 message.
pub fn parse_user_steps(
    driver: &Composed,
    node: &Node,
    phase: Phase,
    raw: &[Value],
) -> Result<Vec<Step>, String> {
    let field = match phase {
        Phase::Deploy => "deploy_steps",
        Phase::Clean => "clean_steps",
    };
    let allowed = user_step_interfaces(phase);
    let available = offered(driver, node, phase);
    let mut out = Vec::with_capacity(raw.len());
    for (i, v) in raw.iter().enumerate() {
        let bad =
            |why: String| format!("Invalid input for field/attribute {field}. Item {i}: {why}");
        let Value::Object(m) = v else {
            return Err(bad(format!("{v} is not of type 'object'")));
        };
        for k in m.keys() {
            let known = matches!(k.as_str(), "interface" | "step" | "args")
                || (k == "priority" && phase == Phase::Deploy);
            if !known {
                return Err(bad(format!(
                    "Additional properties are not allowed ('{k}' was unexpected)"
                )));
            }
        }
        let iface = match m.get("interface") {
            Some(Value::String(s)) => match InterfaceKind::parse(s) {
                Some(k) if allowed.contains(&k) => k,
                _ => {
                    let names: Vec<&str> = allowed.iter().map(|k| k.as_str()).collect();
                    return Err(bad(format!("'{s}' is not one of {names:?}")));
                }
            },
            Some(other) => return Err(bad(format!("{other} is not of type 'string'"))),
            None => return Err(bad("'interface' is a required property".into())),
        };
        let name = match m.get("step") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(other) => return Err(bad(format!("{other} is not a non-empty string"))),
            None => return Err(bad("'step' is a required property".into())),
        };
        let args = match m.get("args") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(a)) => a.clone(),
            Some(other) => return Err(bad(format!("{other} is not of type 'object'"))),
        };
        let Some(known) = available
            .iter()
            .find(|s| s.interface == iface && s.step == name)
        else {
            return Err(format!(
                "{} step \"{iface}.{name}\" is not supported by node {}: its {iface} interface {} offers {}.",
                phase.name(),
                node.uuid,
                driver.interface(iface).name(),
                {
                    let names: Vec<String> = available
                        .iter()
                        .filter(|s| s.interface == iface)
                        .map(|s| s.step.clone())
                        .collect();
                    if names.is_empty() { "no steps".to_string() } else { names.join(", ") }
                }
            ));
        };
        let priority = match (phase, m.get("priority")) {
            (Phase::Deploy, Some(p)) => match p.as_i64() {
                Some(p) if p >= 0 => p,
                _ => return Err(bad(format!("priority {p} is not a non-negative integer"))),
            },
            (Phase::Deploy, None) => return Err(bad("'priority' is a required property".into())),
            (Phase::Clean, _) => known.priority,
        };
        out.push(Step {
            interface: iface,
            step: name,
            priority,
            args,
            abortable: known.abortable,
        });
    }
    Ok(out)
}

/// The deploy steps to run: the interfaces' steps with priority > 0, with
/// the user's steps, then the deploy templates' steps the user did not
/// name, overriding (same interface and name) or added; a priority of 0
/// disables a step.
fn deploy_plan(driver: &Composed, node: &Node, templates: Vec<Step>) -> Vec<Step> {
    let mut user = from_json(node.driver_internal_info.get(USER_DEPLOY_STEPS));
    let from_templates: Vec<Step> = templates
        .into_iter()
        .filter(|t| {
            !user
                .iter()
                .any(|u| u.interface == t.interface && u.step == t.step)
        })
        .collect();
    user.extend(from_templates);
    let mut steps: Vec<Step> = offered(driver, node, Phase::Deploy)
        .into_iter()
        .filter(|s| {
            !user
                .iter()
                .any(|u| u.interface == s.interface && u.step == s.step)
        })
        .collect();
    steps.extend(user);
    steps.retain(|s| s.priority > 0);
    sort(&mut steps);
    steps
}

/// `deploying`: plan the deploy steps (the deploy templates read again:
/// they may have changed since the verb) and run them.
pub(crate) async fn start_deploy(
    t: &mut ExclusiveTask,
    driver: &Composed,
) -> Result<(), WorkError> {
    let store = t.manager().store().clone();
    let templates = match super::templates::template_steps(store.as_ref(), driver, t.node()).await {
        Ok(s) => s,
        Err(m) => return fail(t, format!("Cannot get deploy steps; failed to deploy: {m}")).await,
    };
    let steps = deploy_plan(driver, t.node(), templates);
    let n = t.node_mut();
    n.driver_internal_info
        .insert(Phase::Deploy.steps_key().into(), to_json(&steps));
    n.driver_internal_info.remove(Phase::Deploy.index_key());
    run(t, driver, Phase::Deploy, 0).await
}

/// `cleaning`: manual steps (validated when the verb came) or the automated
/// ones; the deploy interface prepares the node first (may wait for the agent).
pub(crate) async fn start_clean(t: &mut ExclusiveTask, driver: &Composed) -> Result<(), WorkError> {
    let manual = t.node().target_provision_state == Some(ProvisionState::Manageable);
    let automated_clean = t
        .node()
        .attrs
        .automated_clean
        .unwrap_or(t.manager().config().automated_clean);
    if !manual && !automated_clean {
        // Ironic's skip_automated_cleaning: nothing boots, nothing runs.
        tracing::info!(node_uuid = %t.node().uuid, "automated cleaning is disabled; the node is available");
        wipe(t.node_mut());
        let event = clean_done(t);
        t.process_event(event, EventOpts::default()).await?;
        return Ok(());
    }
    let steps = if manual {
        from_json(t.node().driver_internal_info.get(MANUAL_CLEAN_STEPS))
    } else {
        automated_clean_plan(driver, t.node())
    };
    let n = t.node_mut();
    n.driver_internal_info.remove(MANUAL_CLEAN_STEPS);
    n.driver_internal_info
        .insert(Phase::Clean.steps_key().into(), to_json(&steps));
    n.driver_internal_info.remove(Phase::Clean.index_key());
    match driver.deploy.prepare_cleaning(driver, t).await {
        Ok(StepOutcome::Done) => run(t, driver, Phase::Clean, 0).await,
        Ok(StepOutcome::Wait) => wait(t, Phase::Clean).await,
        Err(e) => {
            undo_ramdisk_boot(t, driver).await;
            fail(
                t,
                format!("Failed to prepare node {} for cleaning: {e}", t.node().uuid),
            )
            .await
        }
    }
}

/// Run the steps of `phase` from index `from`, then finish.
async fn run(
    t: &mut ExclusiveTask,
    driver: &Composed,
    phase: Phase,
    from: usize,
) -> Result<(), WorkError> {
    let steps = from_json(t.node().driver_internal_info.get(phase.steps_key()));
    for (i, step) in steps.iter().enumerate().skip(from) {
        {
            let n = t.node_mut();
            *phase.current(n) = step.to_map();
            n.driver_internal_info
                .insert(phase.index_key().into(), Value::from(i as u64));
        }
        t.save().await?;
        let iface = driver.interface(step.interface);
        match iface.execute_step(driver, t, step).await {
            Ok(StepOutcome::Done) => {
                if aborted_after(t, phase) {
                    return abort_after_step(t, driver, step).await;
                }
            }
            Ok(StepOutcome::Wait) => return wait(t, phase).await,
            Err(e) => return step_failed(t, driver, phase, step, &e.to_string()).await,
        }
    }
    finish(t, driver, phase).await
}

/// A step asked to wait for the agent: `wait call-back` / `clean wait`.
async fn wait(t: &mut ExclusiveTask, phase: Phase) -> Result<(), WorkError> {
    // Manual cleaning keeps its manageable target through the wait.
    let target = match phase {
        Phase::Clean => t.node().target_provision_state.filter(|s| s.is_stable()),
        Phase::Deploy => None,
    };
    t.process_event(
        Event::Wait,
        EventOpts {
            target,
            ..Default::default()
        },
    )
    .await?;
    Ok(())
}

/// A failed flow leaves no ramdisk boot behind (Ironic's error handlers
/// clean up the boot: DHCP entries, an inserted virtual CD and its ISO).
/// Best effort: a failure only logs (the node fails anyway).
async fn undo_ramdisk_boot(t: &mut ExclusiveTask, driver: &Composed) {
    if let Err(e) = driver.boot.clean_up_ramdisk(driver, t).await {
        tracing::warn!(node_uuid = %t.node().uuid, error.message = %e, "clean-up of the ramdisk boot after a failure failed");
    }
}

async fn step_failed(
    t: &mut ExclusiveTask,
    driver: &Composed,
    phase: Phase,
    step: &Step,
    err: &str,
) -> Result<(), WorkError> {
    undo_ramdisk_boot(t, driver).await;
    let uuid = t.node().uuid;
    fail(
        t,
        format!(
            "{} step {} failed on node {uuid}: {err}",
            phase.name(),
            step.label()
        ),
    )
    .await
}

fn aborted_after(t: &ExclusiveTask, phase: Phase) -> bool {
    phase == Phase::Clean && t.node().clean_step.get("abort_after") == Some(&Value::Bool(true))
}

/// `abort` came while a non-abortable clean step ran: stop after it.
async fn abort_after_step(
    t: &mut ExclusiveTask,
    driver: &Composed,
    step: &Step,
) -> Result<(), WorkError> {
    let uuid = t.node().uuid;
    if let Err(e) = driver.deploy.tear_down_cleaning(driver, t).await {
        tracing::warn!(node_uuid = %uuid, error.message = %e, "tear down of cleaning after abort failed");
    }
    wipe(t.node_mut());
    // `cleaning` has no abort transition: fail it, as Ironic does.
    t.process_event(
        Event::Fail,
        EventOpts {
            last_error: Some(format!(
                "By request, the clean operation was aborted for node {uuid} after the completion of step \"{}\"",
                step.step
            )),
            ..Default::default()
        },
    )
    .await?;
    Ok(())
}

/// Every step ran: leave the phase.
async fn finish(t: &mut ExclusiveTask, driver: &Composed, phase: Phase) -> Result<(), WorkError> {
    if phase == Phase::Clean {
        if let Err(e) = driver.deploy.tear_down_cleaning(driver, t).await {
            let uuid = t.node().uuid;
            return fail(
                t,
                format!("Failed to tear down from cleaning for node {uuid}: {e}"),
            )
            .await;
        }
    }
    record_power(t, driver).await;
    wipe(t.node_mut());
    let event = match phase {
        Phase::Deploy => {
            // A deployed node runs its instance (a fake BMC that cannot be
            // read still shows it on, as before).
            if t.node().power_state.is_none() {
                t.node_mut().power_state = Some(PowerState::On);
            }
            Event::Done
        }
        Phase::Clean => clean_done(t),
    };
    t.process_event(event, EventOpts::default()).await?;
    Ok(())
}

/// Cleaning finished: manual cleaning returns to manageable, automated
/// cleaning ends in available, except for a retired node, which goes back
/// to manageable (Ironic's rule: it is not offered for deployment again).
fn clean_done(t: &ExclusiveTask) -> Event {
    if t.node().target_provision_state == Some(ProvisionState::Manageable) || t.node().attrs.retired
    {
        Event::Manage
    } else {
        Event::Done
    }
}

/// What an agent's call-back found while the node waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Polled {
    /// The waiting step still runs (or the agent was busy or unreachable:
    /// the next call-back asks again; the wait timeout bounds it).
    Running,
    /// The step finished: resume and go on from this index.
    Next(usize),
    /// Fail the node with this message.
    Failed(String),
}

/// The agent called back while the node waits in `phase`'s wait state
/// (under the lock, before `resume`): at its first call-back of the phase
/// its own steps are fetched and the plan is made again with them (Ironic's
/// `refresh_steps` + `set_node_{deployment,cleaning}_steps`); then the
/// waiting step is asked whether it finished.
pub(crate) async fn poll(
    t: &mut ExclusiveTask,
    driver: &Composed,
    phase: Phase,
) -> Result<Polled, WorkError> {
    let uuid = t.node().uuid;
    let cache_key = format!("agent_cached_{}_steps", phase.as_str());
    if !t.node().driver_internal_info.contains_key(&cache_key) {
        if let Err(e) = driver.deploy.refresh_steps(driver, t, phase).await {
            if e.retryable {
                tracing::warn!(node_uuid = %uuid, error.message = %e, "cannot get the agent's steps yet; asking again at the next call-back");
                return Ok(Polled::Running);
            }
            let what = match phase {
                Phase::Deploy => "Failed to load in-band deploy steps",
                Phase::Clean => "Node failed to start the first cleaning step",
            };
            return Ok(Polled::Failed(format!("{what}: {e}")));
        }
        if t.node().driver_internal_info.contains_key(&cache_key) {
            if let Err(m) = replan(t, driver, phase).await {
                return Ok(Polled::Failed(m));
            }
        }
    }
    let index = t
        .node()
        .driver_internal_info
        .get(phase.index_key())
        .and_then(Value::as_u64)
        .map(|i| i as usize);
    let steps = from_json(t.node().driver_internal_info.get(phase.steps_key()));
    let Some(index) = index else {
        // Cleaning waited in prepare_cleaning: the agent is up; run the
        // steps. A deploy waits only in a step: nothing left to run.
        return Ok(Polled::Next(match phase {
            Phase::Clean => 0,
            Phase::Deploy => steps.len(),
        }));
    };
    let Some(step) = steps.get(index).cloned() else {
        return Ok(Polled::Next(steps.len()));
    };
    match driver
        .interface(step.interface)
        .continue_step(driver, t, &step)
        .await
    {
        Ok(StepOutcome::Done) => Ok(Polled::Next(index + 1)),
        Ok(StepOutcome::Wait) => Ok(Polled::Running),
        Err(e) if e.retryable => {
            tracing::warn!(node_uuid = %uuid, step = %step.label(), error.message = %e, "cannot read the step's progress; asking again at the next call-back");
            Ok(Polled::Running)
        }
        Err(e) => Ok(Polled::Failed(format!(
            "{} step {} failed on node {uuid}: {e}",
            phase.name(),
            step.label()
        ))),
    }
}

/// Make the plan again now that the agent's own steps are known, keeping
/// the position: a deploy continues after the step that booted the agent;
/// an automated cleaning takes the agent's steps at their priorities, a
/// manual one keeps the user's.
async fn replan(t: &mut ExclusiveTask, driver: &Composed, phase: Phase) -> Result<(), String> {
    match phase {
        Phase::Deploy => {
            let Some(index) = t
                .node()
                .driver_internal_info
                .get(phase.index_key())
                .and_then(Value::as_u64)
            else {
                return Ok(());
            };
            let old = from_json(t.node().driver_internal_info.get(phase.steps_key()));
            let Some(current) = old.get(index as usize).cloned() else {
                return Ok(());
            };
            let store = t.manager().store().clone();
            let templates = super::templates::template_steps(store.as_ref(), driver, t.node())
                .await
                .map_err(|m| format!("Cannot get deploy steps; failed to deploy: {m}"))?;
            let new = deploy_plan(driver, t.node(), templates);
            let Some(pos) = new
                .iter()
                .position(|s| s.interface == current.interface && s.step == current.step)
            else {
                return Ok(());
            };
            let n = t.node_mut();
            n.driver_internal_info
                .insert(phase.steps_key().into(), to_json(&new));
            n.driver_internal_info
                .insert(phase.index_key().into(), Value::from(pos as u64));
        }
        Phase::Clean => {
            let manual = t.node().target_provision_state == Some(ProvisionState::Manageable);
            if !manual {
                let steps = automated_clean_plan(driver, t.node());
                t.node_mut()
                    .driver_internal_info
                    .insert(phase.steps_key().into(), to_json(&steps));
            }
        }
    }
    Ok(())
}

/// Automated cleaning: every offered clean step with priority > 0, in order.
fn automated_clean_plan(driver: &Composed, node: &Node) -> Vec<Step> {
    let mut s: Vec<Step> = offered(driver, node, Phase::Clean)
        .into_iter()
        .filter(|s| s.priority > 0)
        .collect();
    sort(&mut s);
    s
}

/// After `resume` (the node is `deploying` / `cleaning` again): go on from
/// step `next` — unless an abort asked cleaning to stop after the step
/// that just finished.
pub(crate) async fn continue_from(
    t: &mut ExclusiveTask,
    driver: &Composed,
    phase: Phase,
    next: usize,
) -> Result<(), WorkError> {
    if next > 0 && aborted_after(t, phase) {
        let steps = from_json(t.node().driver_internal_info.get(phase.steps_key()));
        if let Some(step) = steps.get(next - 1) {
            return abort_after_step(t, driver, step).await;
        }
    }
    run(t, driver, phase, next).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::drivers::Drivers;
    use serde_json::json;

    fn node(driver: &str) -> Node {
        let mut n: Node = serde_json::from_value(json!({
            "uuid": "8a4b5c1e-2f3d-4e5f-9a8b-7c6d5e4f3a2b",
            "name": null, "driver": driver, "driver_info": {}, "properties": {},
            "extra": {}, "instance_info": {}, "instance_uuid": null, "interfaces": {},
            "provision_state": "manageable", "target_provision_state": null,
            "power_state": null, "target_power_state": null, "maintenance": false,
            "maintenance_reason": null, "last_error": null, "conductor_group": "",
            "conductor_affinity": null, "reservation": null, "lock_epoch": 0,
            "lock_waiters": 0, "revision": 0, "created_at": 0, "updated_at": null,
            "provision_updated_at": null
        }))
        .unwrap();
        Drivers::new()
            .check_and_fill(driver, &mut n.interfaces)
            .unwrap();
        n
    }

    #[test]
    fn deploy_steps_run_by_priority_and_user_steps_override() {
        let d = Drivers::new();
        let mut n = node("redfish");
        let c = d.compose(&n).unwrap();
        let plan: Vec<String> = deploy_plan(&c, &n, Vec::new())
            .iter()
            .map(Step::label)
            .collect();
        assert_eq!(
            plan,
            [
                "deploy.deploy",
                "deploy.write_image",
                "deploy.prepare_instance_boot",
                "deploy.tear_down_agent",
                "deploy.boot_instance"
            ]
        );
        let user = parse_user_steps(
            &c,
            &n,
            Phase::Deploy,
            &[json!({"interface": "deploy", "step": "boot_instance", "priority": 0, "args": {}})],
        )
        .unwrap();
        n.driver_internal_info
            .insert(USER_DEPLOY_STEPS.into(), to_json(&user));
        let plan: Vec<String> = deploy_plan(&c, &n, Vec::new())
            .iter()
            .map(Step::label)
            .collect();
        assert_eq!(
            plan,
            [
                "deploy.deploy",
                "deploy.write_image",
                "deploy.prepare_instance_boot",
                "deploy.tear_down_agent"
            ]
        );
    }

    #[test]
    fn user_steps_are_checked_against_the_interfaces() {
        let d = Drivers::new();
        let n = node("fake-hardware");
        let c = d.compose(&n).unwrap();
        let ok = parse_user_steps(
            &c,
            &n,
            Phase::Clean,
            &[
                json!({"interface": "raid", "step": "delete_configuration"}),
                json!({"interface": "deploy", "step": "erase_devices", "args": {"x": 1}}),
            ],
        )
        .unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[0].interface, InterfaceKind::Raid, "user order is kept");
        assert_eq!(ok[1].args["x"], 1);
        for (bad, says) in [
            (
                json!({"interface": "deploy", "step": "nope"}),
                "not supported",
            ),
            (json!({"interface": "rescue", "step": "x"}), "is not one of"),
            (
                json!({"step": "erase_devices"}),
                "'interface' is a required",
            ),
            (json!({"interface": "deploy"}), "'step' is a required"),
            (
                json!({"interface": "deploy", "step": "erase_devices", "bogus": 1}),
                "Additional properties",
            ),
            (
                json!({"interface": "deploy", "step": "erase_devices", "args": []}),
                "type 'object'",
            ),
            (json!("erase"), "type 'object'"),
        ] {
            let e = parse_user_steps(&c, &n, Phase::Clean, std::slice::from_ref(&bad)).unwrap_err();
            assert!(e.contains(says), "{bad} → {e}");
        }
        let e = parse_user_steps(
            &c,
            &n,
            Phase::Deploy,
            &[json!({"interface": "deploy", "step": "deploy"})],
        )
        .unwrap_err();
        assert!(e.contains("'priority' is a required"), "{e}");
    }

    #[test]
    fn wipe_removes_every_trace() {
        let mut n = node("fake-hardware");
        n.driver_internal_info
            .insert("clean_steps".into(), json!([]));
        n.driver_internal_info
            .insert("agent_url".into(), json!("http://x"));
        n.driver_internal_info
            .insert("agent_cached_clean_steps".into(), json!({}));
        n.clean_step.insert("step".into(), json!("erase_devices"));
        wipe(&mut n);
        assert!(n.clean_step.is_empty());
        assert!(!n.driver_internal_info.contains_key("clean_steps"));
        assert!(!n
            .driver_internal_info
            .contains_key("agent_cached_clean_steps"));
        // The agent's session ends with the agent states (process_event),
        // not with a phase's bookkeeping.
        assert!(n.driver_internal_info.contains_key("agent_url"));
    }
}

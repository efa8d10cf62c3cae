//! Node state endpoints: `GET …/states`, `PUT …/states/provision`,
//! `PUT …/states/power`, `PUT/DELETE …/maintenance`, `GET …/validate`.
//!
//! Work that Ironic does on the conductor after replying (verifying,
//! deploying, cleaning, tearing down, power changes) runs in `spawn_after`,
//! holding the node's lock: through the node's driver when one is registered
//! in [`crate::ApiState::drivers`], else as a fake flow where every step
//! succeeds. `target_*` fields are set before the 202 goes out, so `--wait`
//! clients see the same sequence of states as on Ironic.

use crate::error::ApiError;
use crate::extract::{ApiPath, BaseUrl, JsonBody, OptionalJsonBody};
use crate::nodes::{node_ident, release};
use crate::render;
use crate::version::Version;
use crate::ApiState;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferric_conductor::drivers::{Driver, StepOutcome};
use ferric_conductor::power::power_action;
use ferric_conductor::{EventOpts, ExclusiveTask, WorkError};
use ferric_core::fsm::{allowed_events, next_state};
use ferric_core::{Event, PowerState, ProvisionState};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// 202, empty body, `Location: …/v1/nodes/<ident>/states`.
fn accepted(base: &BaseUrl, ident: &str) -> Response {
    let mut resp = StatusCode::ACCEPTED.into_response();
    if let Ok(l) = HeaderValue::from_str(&format!("{}/v1/nodes/{ident}/states", base.0)) {
        resp.headers_mut().insert(header::LOCATION, l);
    }
    resp
}

/// `GET /v1/nodes/{ident}/states`.
pub async fn get_states(
    State(st): State<ApiState>,
    v: Version,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let n = st.tm.store().get_node(&node_ident(&id, v)?).await?;
    let full = render::node(&n, "", v, None);
    let mut out = serde_json::Map::new();
    for k in [
        "console_enabled",
        "last_error",
        "power_state",
        "provision_state",
        "target_power_state",
        "target_provision_state",
        "provision_updated_at",
        "raid_config",
        "target_raid_config",
        "boot_mode",
        "secure_boot",
    ] {
        out.insert(k.to_string(), full.get(k).cloned().unwrap_or(Value::Null));
    }
    Ok(Json(out).into_response())
}

/// A provision verb: the FSM event it sends and the version introducing it
/// (reference ironic.md §5.5).
pub fn verb(target: &str) -> Option<(Event, u32)> {
    Some(match target {
        "active" => (Event::Deploy, 1),
        "deploy" => (Event::Deploy, 73),
        "rebuild" => (Event::Rebuild, 1),
        "deleted" => (Event::Delete, 1),
        "undeploy" => (Event::Delete, 1),
        "manage" => (Event::Manage, 4),
        "provide" => (Event::Provide, 4),
        "inspect" => (Event::Inspect, 6),
        "abort" => (Event::Abort, 13),
        "clean" => (Event::Clean, 15),
        "adopt" => (Event::Adopt, 17),
        "rescue" => (Event::Rescue, 38),
        "unrescue" => (Event::Unrescue, 38),
        "unhold" => (Event::Unhold, 85),
        "service" => (Event::Service, 87),
        _ => return None,
    })
}

/// Every verb, for error messages.
const VERBS: &[&str] = &[
    "active", "deploy", "rebuild", "deleted", "undeploy", "manage", "provide", "inspect", "abort",
    "clean", "adopt", "rescue", "unrescue", "unhold", "service",
];

/// The verbs a user can send in `state` (events of the FSM that are verbs).
pub fn allowed_verbs(state: ProvisionState) -> Vec<&'static str> {
    let events = allowed_events(state);
    VERBS
        .iter()
        .copied()
        .filter(|v| {
            // One name per event: prefer the historical spelling.
            !matches!(*v, "deploy" | "undeploy")
                && verb(v).is_some_and(|(e, _)| events.contains(&e))
        })
        .collect()
}

/// `PUT /v1/nodes/{ident}/states/provision` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionBody {
    pub target: String,
    #[serde(default)]
    pub configdrive: Option<Value>,
    #[serde(default)]
    pub clean_steps: Option<Vec<Value>>,
    #[serde(default)]
    pub deploy_steps: Option<Vec<Value>>,
    #[serde(default)]
    pub service_steps: Option<Vec<Value>>,
    #[serde(default)]
    pub runbook: Option<String>,
    #[serde(default)]
    pub disable_ramdisk: Option<bool>,
    #[serde(default)]
    pub rescue_password: Option<String>,
}

/// `PUT /v1/nodes/{ident}/states/provision`.
pub async fn set_provision(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiPath(id): ApiPath<String>,
    JsonBody(body): JsonBody<ProvisionBody>,
) -> Result<Response, ApiError> {
    let ident = node_ident(&id, v)?;
    let target = body.target.as_str();
    let Some((event, min)) = verb(target) else {
        return Err(ApiError::bad_request(format!(
            "Invalid input for field/attribute target. Value: '{target}'. Value should be one of: {}.",
            VERBS.join(", ")
        )));
    };
    if !v.at_least(min) {
        return Err(ApiError::not_acceptable(format!(
            "The provision target \"{target}\" needs API version 1.{min} or later; this request used {v}."
        )));
    }
    let checks = [
        (
            body.configdrive.is_some() && !matches!(event, Event::Deploy | Event::Rebuild),
            "configdrive",
        ),
        (
            body.clean_steps.is_some() && event != Event::Clean,
            "clean_steps",
        ),
        (
            body.deploy_steps.is_some() && !matches!(event, Event::Deploy | Event::Rebuild),
            "deploy_steps",
        ),
        (
            body.service_steps.is_some() && event != Event::Service,
            "service_steps",
        ),
        (
            body.rescue_password.is_some() && event != Event::Rescue,
            "rescue_password",
        ),
        (
            body.disable_ramdisk.is_some() && !matches!(event, Event::Clean | Event::Service),
            "disable_ramdisk",
        ),
    ];
    if let Some((_, field)) = checks.iter().find(|(bad, _)| *bad) {
        return Err(ApiError::bad_request(format!(
            "\"{field}\" can not be given when setting the provision target to \"{target}\"."
        )));
    }
    if event == Event::Clean && body.clean_steps.is_none() && body.runbook.is_none() {
        return Err(ApiError::bad_request(
            "\"clean_steps\" or \"runbook\" is required when setting target provision state to clean",
        ));
    }
    if event == Event::Service && body.service_steps.is_none() && body.runbook.is_none() {
        return Err(ApiError::bad_request(
            "\"service_steps\" or \"runbook\" is required when setting target provision state to service",
        ));
    }
    if event == Event::Rescue && body.rescue_password.as_deref().unwrap_or("").is_empty() {
        return Err(ApiError::bad_request(
            "A non-empty \"rescue_password\" is required when setting target provision state to rescue",
        ));
    }

    let mut task = st
        .tm
        .acquire(ident)
        .purpose(format!("provision action: {target}"))
        .retry(st.retry)
        .exclusive()
        .await?;
    let n = task.node();
    let state = n.provision_state;
    let refusal = if matches!(event, Event::Deploy | Event::Rebuild) && n.maintenance {
        Some(ApiError::bad_request(format!(
            "The requested action \"{target}\" can not be performed on node \"{}\" while it is in maintenance mode.",
            n.uuid
        )))
    } else if next_state(state, event).is_none() {
        let allowed = allowed_verbs(state);
        Some(ApiError::bad_request(format!(
            "The requested action \"{target}\" can not be performed on node \"{}\" while it is in state \"{state}\". Actions allowed in this state: {}.",
            n.uuid,
            if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") }
        )))
    } else {
        None
    };
    if let Some(e) = refusal {
        release(task).await;
        return Err(e);
    }
    // Manual cleaning returns to manageable (Ironic passes target_state).
    let explicit = (event == Event::Clean).then_some(ProvisionState::Manageable);
    let background = next_state(state, event).is_some_and(ProvisionState::is_unstable);
    let opts = EventOpts {
        target: explicit,
        last_error: None,
        spawn: background,
    };
    if let Err(e) = task.process_event(event, opts).await {
        release(task).await;
        return Err(e.into());
    }
    if background {
        let delay = st.fake_step_delay;
        let driver = st.drivers.get(&task.node().driver);
        let step = format!("provision action {target}");
        task.spawn_after(&step, move |t| Box::pin(provision_flow(t, driver, delay)))
            .await?;
    } else {
        release(task).await;
    }
    Ok(accepted(&base, &id))
}

/// Move the node to `Fail`'s destination with `message` in `last_error`.
pub(crate) async fn fail(t: &mut ExclusiveTask, message: String) -> Result<(), WorkError> {
    let opts = EventOpts {
        last_error: Some(message),
        ..Default::default()
    };
    t.process_event(Event::Fail, opts).await?;
    Ok(())
}

/// The conductor work after a provision verb: move the node from the state
/// the verb left it in towards the stable state it heads for, one step per
/// `delay`. With a `driver` the hardware work is the driver's (and may fail
/// or wait for an agent); without one every step succeeds.
async fn provision_flow(
    t: &mut ExclusiveTask,
    driver: Option<Arc<dyn Driver>>,
    delay: Duration,
) -> Result<(), WorkError> {
    use ProvisionState as S;
    // Bounded: the longest path is deleting → cleaning → available.
    for _ in 0..4 {
        tokio::time::sleep(delay).await;
        let state = t.node().provision_state;
        let event = match (state, &driver) {
            (S::Verifying, Some(d)) => {
                let failed: Vec<String> = d
                    .validate(t.node())
                    .await
                    .into_iter()
                    .filter(|(iface, _)| matches!(*iface, "power" | "management"))
                    .filter_map(|(iface, r)| r.err().map(|e| format!("{iface}: {e}")))
                    .collect();
                if !failed.is_empty() {
                    let uuid = t.node().uuid;
                    return fail(
                        t,
                        format!("Failed to verify node {uuid}: {}", failed.join("; ")),
                    )
                    .await;
                }
                Event::Done
            }
            (S::Deploying, Some(d)) => match d.deploy(t).await {
                Ok(StepOutcome::Done) => {
                    t.node_mut().power_state = Some(PowerState::On);
                    Event::Done
                }
                Ok(StepOutcome::Wait) => Event::Wait,
                Err(e) => return fail(t, format!("Deploy step failed: {e}")).await,
            },
            (S::Deploying, None) => {
                t.node_mut().power_state = Some(PowerState::On);
                Event::Done
            }
            (S::Cleaning, Some(d)) => match d.clean(t).await {
                Ok(StepOutcome::Done) => clean_done(t),
                Ok(StepOutcome::Wait) => Event::Wait,
                Err(e) => return fail(t, format!("Clean step failed: {e}")).await,
            },
            (S::Cleaning, None) => clean_done(t),
            (S::Deleting, _) => {
                if let Some(d) = &driver {
                    if let Err(e) = d.tear_down(t).await {
                        return fail(t, format!("Tear down failed: {e}")).await;
                    }
                }
                let n = t.node_mut();
                n.power_state = Some(PowerState::Off);
                n.instance_uuid = None;
                n.instance_info.clear();
                Event::Clean
            }
            (
                S::Verifying
                | S::Inspecting
                | S::Adopting
                | S::Rescuing
                | S::Unrescuing
                | S::Servicing,
                _,
            ) => Event::Done,
            _ => return Ok(()),
        };
        // Manual cleaning keeps its manageable target through the wait.
        let target = (state == S::Cleaning && event == Event::Wait)
            .then(|| t.node().target_provision_state.filter(|s| s.is_stable()))
            .flatten();
        let opts = EventOpts {
            target,
            ..Default::default()
        };
        t.process_event(event, opts).await?;
    }
    Ok(())
}

/// Cleaning finished: manual cleaning returns to manageable, automated
/// cleaning ends in available.
pub(crate) fn clean_done(t: &ExclusiveTask) -> Event {
    if t.node().target_provision_state == Some(ProvisionState::Manageable) {
        Event::Manage
    } else {
        Event::Done
    }
}

/// `PUT /v1/nodes/{ident}/states/power` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerBody {
    pub target: String,
    #[serde(default)]
    pub timeout: Option<u64>,
}

/// `PUT /v1/nodes/{ident}/states/power`.
pub async fn set_power(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiPath(id): ApiPath<String>,
    JsonBody(body): JsonBody<PowerBody>,
) -> Result<Response, ApiError> {
    let ident = node_ident(&id, v)?;
    let (target, result) = match body.target.as_str() {
        "power on" => (PowerState::On, PowerState::On),
        "power off" => (PowerState::Off, PowerState::Off),
        "rebooting" => (PowerState::Rebooting, PowerState::On),
        "soft power off" => (PowerState::SoftPowerOff, PowerState::Off),
        "soft rebooting" => (PowerState::SoftRebooting, PowerState::On),
        other => {
            return Err(ApiError::bad_request(format!(
                "Invalid input for field/attribute target. Value: '{other}'. Value should be one of: power on, power off, rebooting, soft power off, soft rebooting."
            )))
        }
    };
    let soft = matches!(target, PowerState::SoftPowerOff | PowerState::SoftRebooting);
    if (soft || body.timeout.is_some()) && !v.at_least(27) {
        return Err(ApiError::not_acceptable(
            "Soft power actions and the power timeout need API version 1.27 or later.",
        ));
    }
    if body.timeout == Some(0) {
        return Err(ApiError::bad_request(
            "Invalid timeout value 0; it must be a positive integer.",
        ));
    }
    let mut task = st
        .tm
        .acquire(ident)
        .purpose(format!("changing node power state to {}", body.target))
        .retry(st.retry)
        .exclusive()
        .await?;
    let n = task.node();
    if matches!(
        n.provision_state,
        ProvisionState::Cleaning | ProvisionState::CleanWait
    ) {
        let e = ApiError::bad_request(format!(
            "Can not change the power state of node {} while it is in provision state \"{}\".",
            n.uuid, n.provision_state
        ));
        release(task).await;
        return Err(e);
    }
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
    let delay = st.fake_step_delay;
    let driver = st.drivers.get(&task.node().driver);
    task.spawn_after("power action", move |t| {
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            match driver {
                Some(d) => power_action(t, d.as_ref(), target).await?,
                None => {
                    let n = t.node_mut();
                    n.power_state = Some(result);
                    n.target_power_state = None;
                    t.save().await?;
                }
            }
            Ok(())
        })
    })
    .await?;
    Ok(accepted(&base, &id))
}

/// `PUT /v1/nodes/{ident}/maintenance` body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceBody {
    #[serde(default)]
    pub reason: Option<String>,
}

async fn set_maintenance(
    st: ApiState,
    v: Version,
    id: &str,
    on: bool,
    reason: Option<String>,
) -> Result<(), ApiError> {
    let ident = node_ident(id, v)?;
    let mut task = st
        .tm
        .acquire(ident)
        .purpose("node update")
        .retry(st.retry)
        .exclusive()
        .await?;
    let n = task.node_mut();
    n.maintenance = on;
    n.maintenance_reason = if on { reason } else { None };
    let saved = task.save().await;
    release(task).await;
    saved.map_err(ApiError::from)
}

/// `PUT /v1/nodes/{ident}/maintenance`.
pub async fn put_maintenance(
    State(st): State<ApiState>,
    v: Version,
    ApiPath(id): ApiPath<String>,
    OptionalJsonBody(body): OptionalJsonBody<MaintenanceBody>,
) -> Result<Response, ApiError> {
    let reason = body.unwrap_or_default().reason;
    if let Some(r) = &reason {
        crate::extract::check_text("reason", r)?;
    }
    set_maintenance(st, v, &id, true, reason).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// `DELETE /v1/nodes/{ident}/maintenance` (any body is ignored).
pub async fn delete_maintenance(
    State(st): State<ApiState>,
    v: Version,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    set_maintenance(st, v, &id, false, None).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// `GET /v1/nodes/{ident}/validate`: the registered driver's verdicts; an
/// interface it does not check passes (null for `no-*` interfaces).
pub async fn validate(
    State(st): State<ApiState>,
    v: Version,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let n = st.tm.store().get_node(&node_ident(&id, v)?).await?;
    let verdicts = match st.drivers.get(&n.driver) {
        Some(d) => d.validate(&n).await,
        None => Default::default(),
    };
    let mut out = serde_json::Map::new();
    for iface in render::INTERFACES {
        if let Some(verdict) = verdicts.get(iface) {
            let entry = match verdict {
                Ok(()) => json!({"result": true, "reason": null}),
                Err(reason) => json!({"result": false, "reason": reason}),
            };
            out.insert((*iface).to_string(), entry);
            continue;
        }
        let name = n
            .interfaces
            .get(&format!("{iface}_interface"))
            .map(String::as_str)
            .unwrap_or_else(|| render::default_interface(&n.driver, iface));
        let entry = if name.starts_with("no-") || name == "noop" && *iface != "network" {
            json!({"result": null, "reason": format!("not supported by the {name} interface")})
        } else {
            json!({"result": true, "reason": null})
        };
        out.insert((*iface).to_string(), entry);
    }
    Ok(Json(out).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_map_to_ironics_events() {
        assert_eq!(verb("active"), Some((Event::Deploy, 1)));
        assert_eq!(verb("deleted"), Some((Event::Delete, 1)));
        assert_eq!(verb("manage"), Some((Event::Manage, 4)));
        assert_eq!(verb("clean"), Some((Event::Clean, 15)));
        assert_eq!(verb("nope"), None);
    }

    #[test]
    fn allowed_verbs_name_what_the_user_can_send() {
        assert_eq!(
            allowed_verbs(ProvisionState::Manageable),
            vec!["provide", "inspect", "clean", "adopt"]
        );
        assert_eq!(allowed_verbs(ProvisionState::Enroll), vec!["manage"]);
    }
}

//! Node state endpoints: `GET …/states`, `PUT …/states/provision`,
//! `PUT …/states/power`, `PUT/DELETE …/maintenance`, `GET …/validate`.
//!
//! These handlers parse and check the request (version, body shape) and
//! call the conductor's [`Provisioner`](ferric_conductor::provision::Provisioner),
//! which checks the node under its lock, moves it and runs the work
//! (verifying, deploying, cleaning, tearing down, power changes) in the
//! background. `target_*` fields are set before the 202 goes out, so
//! `--wait` clients see the same sequence of states as on Ironic.

use crate::error::ApiError;
use crate::extract::{ApiPath, BaseUrl, JsonBody, OptionalJsonBody};
use crate::nodes::node_ident;
use crate::render;
use crate::version::Version;
use crate::ApiState;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferric_conductor::drivers::Invalid;
use ferric_conductor::provision::Action;
use ferric_core::{Event, PowerState};
use serde::Deserialize;
use serde_json::{json, Value};

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
        // raid_config and target_raid_config from 1.12, boot_mode and
        // secure_boot from 1.75 (Ironic's node_states_convert).
        if !v.at_least(render::node_field_version(k)) {
            continue;
        }
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

pub use ferric_conductor::provision::allowed_verbs;

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
    // A config drive: Ironic's schema, a JSON object from 1.56, vendor_data
    // in it from 1.59.
    if let Some(cd) = &body.configdrive {
        ferric_conductor::configdrive::validate(cd).map_err(ApiError::bad_request)?;
        if let Value::Object(m) = cd {
            if !v.at_least(56) {
                return Err(ApiError::bad_request(
                    "Providing a JSON object for configdrive is only supported starting with API version 1.56",
                ));
            }
            if m.contains_key("vendor_data") && !v.at_least(59) {
                return Err(ApiError::bad_request(
                    "Providing vendor_data in configdrive is only supported starting with API version 1.59",
                ));
            }
        }
    }
    // disable_ramdisk: manual cleaning from 1.70, servicing from 1.108.
    let ramdisk_min = if event == Event::Service { 108 } else { 70 };
    if body.disable_ramdisk.is_some() && !v.at_least(ramdisk_min) {
        return Err(ApiError::not_acceptable(
            "disable_ramdisk is not acceptable in this API version",
        ));
    }
    // Aborting inspection needs 1.41, aborting a deployment 1.110.
    if event == Event::Abort {
        let state = st.tm.store().get_node(&ident).await?.provision_state;
        let min = match state {
            ferric_core::ProvisionState::InspectWait => 41,
            ferric_core::ProvisionState::DeployWait => 110,
            _ => 0,
        };
        if !v.at_least(min) {
            return Err(ApiError::not_acceptable("Request not acceptable."));
        }
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

    let clean_steps = match &body.runbook {
        Some(rb) => {
            crate::runbooks::provision_steps(&st, v, &ident, event, rb, body.clean_steps).await?
        }
        None => body.clean_steps,
    };
    let action = Action {
        event,
        verb: target.to_string(),
        clean_steps,
        deploy_steps: body.deploy_steps,
        configdrive: body.configdrive,
    };
    st.prov.provision(ident, action, st.retry).await?;
    Ok(accepted(&base, &id))
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
    let target = match body.target.as_str() {
        "power on" => PowerState::On,
        "power off" => PowerState::Off,
        "rebooting" => PowerState::Rebooting,
        "soft power off" => PowerState::SoftPowerOff,
        "soft rebooting" => PowerState::SoftRebooting,
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
    st.prov.power(ident, target, &body.target, st.retry).await?;
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
    task.save_and_release().await.map_err(ApiError::from)?;
    Ok(())
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
    let mut out = serde_json::Map::new();
    for (kind, verdict) in st.prov.validate(&n).await {
        let entry = match verdict {
            Ok(()) => json!({"result": true, "reason": null}),
            Err(Invalid::Config(reason)) => json!({"result": false, "reason": reason}),
            Err(Invalid::Unsupported(reason)) => json!({"result": null, "reason": reason}),
        };
        out.insert(kind.as_str().to_string(), entry);
    }
    Ok(Json(out).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferric_core::ProvisionState;

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

//! Ironic's node fields beyond identity, driver and state (resource class,
//! owner, protected, retired, shard, parent node, ...): how a value sent on
//! create or in a PATCH is checked and stored ([`set_attr`]), and the rules
//! Ironic's conductor applies to an update as a whole ([`check_update`]).

use crate::error::ApiError;
use ferric_core::node::{json_depth, MAX_DESCRIPTION_LEN, MAX_DICT_DEPTH};
use ferric_core::{Node, NodeAttrs, ProvisionState};
use serde_json::Value;
use uuid::Uuid;

/// The fields [`set_attr`] takes on create (Ironic's node schema).
pub(crate) const CREATE_FIELDS: &[&str] = &[
    "automated_clean",
    "boot_mode",
    "chassis_uuid",
    "console_enabled",
    "description",
    "disable_power_off",
    "instance_name",
    "lessee",
    "network_data",
    "owner",
    "parent_node",
    "resource_class",
    "retired",
    "retired_reason",
    "secure_boot",
    "shard",
];

/// The fields [`set_attr`] takes in a PATCH (Ironic's `PATCH_ALLOWED_FIELDS`
/// less the ones handled elsewhere).
pub(crate) const PATCH_FIELDS: &[&str] = &[
    "automated_clean",
    "chassis_uuid",
    "description",
    "disable_power_off",
    "instance_name",
    "lessee",
    "network_data",
    "owner",
    "parent_node",
    "protected",
    "protected_reason",
    "resource_class",
    "retired",
    "retired_reason",
    "shard",
];

/// Node fields a PATCH may not name, refused with Ironic's "Cannot patch"
/// message: the conductor writes them, or (traits) they have their own API.
pub(crate) const NOT_PATCHABLE: &[&str] = &["boot_mode", "secure_boot", "health", "traits"];

/// Provision states in which a node's resource class and interfaces may
/// change (Ironic's `allowed_update_states`).
const UPDATE_ALLOWED_STATES: [ProvisionState; 5] = [
    ProvisionState::Enroll,
    ProvisionState::Inspecting,
    ProvisionState::InspectWait,
    ProvisionState::Manageable,
    ProvisionState::Available,
];

fn invalid(field: &str, expected: &str, got: &Value) -> ApiError {
    ApiError::bad_request(format!(
        "Invalid value for {field}: expected {expected}, got {got}."
    ))
}

/// oslo's strict boolean: a JSON boolean or one of its strings.
fn boolean(field: &str, v: &Value) -> Result<bool, ApiError> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) => crate::nodes::parse_bool(field, s),
        other => Err(invalid(field, "a boolean", other)),
    }
}

fn text(field: &str, v: Option<Value>, max: usize) -> Result<Option<String>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            crate::extract::check_text(field, &s)?;
            if s.chars().count() > max {
                return Err(ApiError::bad_request(format!(
                    "Invalid value for {field}: it must be at most {max} characters."
                )));
            }
            Ok(Some(s))
        }
        Some(other) => Err(invalid(field, "a string or null", &other)),
    }
}

fn uuid(field: &str, v: Option<Value>) -> Result<Option<Uuid>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Uuid::parse_str(&s).map(Some).map_err(|_| {
            ApiError::bad_request(format!("Expected a UUID for {field} but received {s}."))
        }),
        Some(other) => Err(invalid(field, "a UUID string or null", &other)),
    }
}

/// Set field `field` of `a` to `value` (`None`: removed, back to its
/// default). `Ok(false)` when `field` is not one of these fields. The
/// caller checks that the field is allowed here (create or PATCH) and at
/// the request's version; `parent_node` must already be resolved to a UUID
/// ([`resolve_parent`]).
pub(crate) fn set_attr(
    a: &mut NodeAttrs,
    field: &str,
    value: Option<Value>,
) -> Result<bool, ApiError> {
    let flag = |v: Option<Value>| -> Result<bool, ApiError> {
        match v {
            None | Some(Value::Null) => Ok(false),
            Some(v) => boolean(field, &v),
        }
    };
    match field {
        "resource_class" => a.resource_class = text(field, value, 80)?,
        "owner" => a.owner = text(field, value, 255)?,
        "lessee" => a.lessee = text(field, value, 255)?,
        "shard" => a.shard = text(field, value, 255)?,
        "boot_mode" => a.boot_mode = text(field, value, 255)?,
        "protected_reason" => a.protected_reason = text(field, value, 255)?,
        "retired_reason" => a.retired_reason = text(field, value, 255)?,
        "description" => {
            a.description = match text(field, value, usize::MAX)? {
                Some(d) if d.chars().count() > MAX_DESCRIPTION_LEN => {
                    return Err(ApiError::bad_request(format!(
                        "Cannot update node with description exceeding {MAX_DESCRIPTION_LEN} characters"
                    )))
                }
                d => d,
            }
        }
        "instance_name" => {
            let name = text(field, value, 255)?;
            if name.as_deref() == Some("") {
                return Err(ApiError::bad_request(
                    "Invalid value for instance_name: it must not be empty.",
                ));
            }
            a.instance_name = name;
        }
        "automated_clean" => {
            a.automated_clean = match value {
                None | Some(Value::Null) => None,
                Some(v) => Some(boolean(field, &v)?),
            }
        }
        "secure_boot" => {
            a.secure_boot = match value {
                None | Some(Value::Null) => None,
                Some(v) => Some(boolean(field, &v)?),
            }
        }
        "protected" => a.protected = flag(value)?,
        "retired" => a.retired = flag(value)?,
        "disable_power_off" => a.disable_power_off = flag(value)?,
        "console_enabled" => a.console_enabled = flag(value)?,
        "chassis_uuid" => a.chassis_uuid = uuid(field, value)?,
        "parent_node" => a.parent_node = uuid(field, value)?,
        "network_data" => {
            a.network_data = match value {
                None | Some(Value::Null) => Default::default(),
                Some(Value::Object(o)) => {
                    let depth = json_depth(&Value::Object(o.clone()));
                    if depth > MAX_DICT_DEPTH {
                        return Err(ApiError::bad_request(format!(
                            "Invalid value for network_data: it nests {depth} levels deep; at most {MAX_DICT_DEPTH} are allowed."
                        )));
                    }
                    o
                }
                Some(other) => return Err(invalid(field, "an object", &other)),
            }
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// The message Ironic gives for a `parent_node` that does not name a node
/// the caller may link to.
pub(crate) fn bad_parent(requested: &str) -> ApiError {
    ApiError::bad_request(format!(
        "Unable to apply the requested parent_node '{requested}'. Requested value was invalid."
    ))
}

/// Resolve a `parent_node` value (a node UUID or name) to the parent's
/// UUID, as Ironic's `authorize_node_link`: the node must exist and have
/// the same owner as the child (`child_owner`).
pub(crate) async fn resolve_parent(
    store: &dyn ferric_store::Store,
    requested: &Value,
    child_owner: Option<&str>,
) -> Result<Value, ApiError> {
    let Value::String(ident) = requested else {
        return match requested {
            Value::Null => Ok(Value::Null),
            other => Err(invalid("parent_node", "a string or null", other)),
        };
    };
    if ident.len() > 36 {
        return Err(bad_parent(ident));
    }
    match store.get_node(&ferric_store::NodeIdent::parse(ident)).await {
        Ok(parent) if parent.attrs.owner.as_deref() == child_owner => {
            Ok(Value::String(parent.uuid.to_string()))
        }
        Ok(_) | Err(ferric_store::StoreError::NodeNotFound(_)) => Err(bad_parent(ident)),
        Err(e) => Err(e.into()),
    }
}

/// Whether a chassis with this UUID exists (a read of the chassis store).
pub(crate) async fn chassis_exists(
    store: &dyn ferric_store::Store,
    chassis: Uuid,
) -> Result<bool, ApiError> {
    match store
        .get_resource(
            ferric_store::ResourceKind::Chassis,
            &ferric_store::NodeIdent::Uuid(chassis),
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(ferric_store::StoreError::ResourceNotFound { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Refuse a `chassis_uuid` that names no chassis: Ironic's
/// `ChassisNotFound` turned into a 400 on node create and PATCH.
pub(crate) async fn check_chassis(
    store: &dyn ferric_store::Store,
    a: &NodeAttrs,
) -> Result<(), ApiError> {
    match a.chassis_uuid {
        Some(c) if !chassis_exists(store, c).await? => Err(ApiError::bad_request(format!(
            "Chassis {c} could not be found."
        ))),
        _ => Ok(()),
    }
}

/// Transitional states in which a node may still be updated (Ironic's
/// `states.UPDATE_ALLOWED_STATES`).
const TRANSITION_UPDATE_STATES: [ProvisionState; 13] = [
    ProvisionState::DeployFailed,
    ProvisionState::Inspecting,
    ProvisionState::InspectFailed,
    ProvisionState::InspectWait,
    ProvisionState::CleanFailed,
    ProvisionState::Error,
    ProvisionState::Verifying,
    ProvisionState::AdoptFailed,
    ProvisionState::RescueFailed,
    ProvisionState::UnrescueFailed,
    ProvisionState::Servicing,
    ProvisionState::ServiceHold,
    ProvisionState::ServiceFailed,
];

/// Ironic's API rule before any PATCH: no update while a state transition
/// is in progress (a target state set, outside the states above), except
/// removing the instance of a node in maintenance; none in `inspecting`
/// from 1.39 (409).
pub(crate) fn check_not_in_transition(
    n: &Node,
    removes_instance_only: bool,
    v: crate::version::Version,
) -> Result<(), ApiError> {
    if n.maintenance && removes_instance_only {
        return Ok(());
    }
    if n.target_provision_state.is_some() && !TRANSITION_UPDATE_STATES.contains(&n.provision_state)
    {
        return Err(ApiError::conflict(format!(
            "Node {} can not be updated while a state transition is in progress.",
            n.uuid
        )));
    }
    if n.provision_state == ProvisionState::Inspecting && v.at_least(39) {
        return Err(ApiError::conflict(format!(
            "Cannot update node \"{}\" while it is in state \"inspecting\".",
            n.uuid
        )));
    }
    Ok(())
}

/// Ironic's conductor rules for an update from `old` to `new` (a PATCH):
/// protected only in `active` or `rescue`, retired not in `available`,
/// the reasons only with their flag, the resource class of a deployed node
/// fixed, its interfaces too unless in maintenance. Clears what Ironic clears (a reason when its flag goes, `fault`
/// with maintenance).
pub(crate) fn check_update(old: &Node, new: &mut Node) -> Result<(), ApiError> {
    let (was, now) = (&old.attrs, &mut new.attrs);
    if was.protected != now.protected {
        if !now.protected {
            now.protected_reason = None;
        } else if !matches!(
            new.provision_state,
            ProvisionState::Active | ProvisionState::Rescue
        ) {
            return Err(ApiError::conflict(format!(
                "Node {} can only be made protected in provision states 'active' or 'rescue', the current state is '{}'",
                new.uuid, new.provision_state
            )));
        }
    }
    if was.protected_reason != now.protected_reason
        && now.protected_reason.is_some()
        && !now.protected
    {
        return Err(ApiError::bad_request(
            "The protected_reason field can only be set when protected is True",
        ));
    }
    if was.retired != now.retired {
        if !now.retired {
            now.retired_reason = None;
        } else if new.provision_state == ProvisionState::Available {
            return Err(ApiError::conflict(format!(
                "Node {} can not have 'retired' set in provision state 'available', the current state is '{}'",
                new.uuid, new.provision_state
            )));
        }
    }
    if was.retired_reason != now.retired_reason && now.retired_reason.is_some() && !now.retired {
        return Err(ApiError::bad_request(
            "The retired_reason field can only be set when retired is True",
        ));
    }
    if old.maintenance && !new.maintenance {
        now.fault = None;
    }
    if was.resource_class != now.resource_class
        && was.resource_class.is_some()
        && !UPDATE_ALLOWED_STATES.contains(&old.provision_state)
    {
        return Err(ApiError::conflict(format!(
            "Node {} can not have resource_class updated unless it is in one of allowed ({}) states. Current state is '{}'.",
            new.uuid,
            UPDATE_ALLOWED_STATES.map(|s| s.as_str()).join(", "),
            old.provision_state
        )));
    }
    if old.interfaces != new.interfaces
        && !new.maintenance
        && !UPDATE_ALLOWED_STATES.contains(&old.provision_state)
    {
        let field = new
            .interfaces
            .iter()
            .find(|(k, v)| old.interfaces.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .unwrap_or_else(|| "driver".to_string());
        return Err(ApiError::conflict(format!(
            "Node {} can not have {field} updated unless it is in one of allowed ({}) states or in maintenance mode. Current state is '{}'.",
            new.uuid,
            UPDATE_ALLOWED_STATES.map(|s| s.as_str()).join(", "),
            old.provision_state
        )));
    }
    if now.parent_node == Some(new.uuid) {
        return Err(bad_parent(&new.uuid.to_string()));
    }
    Ok(())
}

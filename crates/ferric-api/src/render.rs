//! Ironic's JSON representation of ferric's records (reference ironic.md §7.5,
//! golden node in ecosystem.md §1.6).

use crate::error::ApiError;
use crate::version::Version;
use ferric_conductor::drivers::{Drivers, InterfaceKind};
use ferric_core::{DbTime, Node, ProvisionState};
use serde_json::{json, Map, Value};

/// The hardware interfaces a node has, in Ironic's field order.
pub use ferric_core::node::INTERFACES;

/// Default fields of a node list item without `detail`.
pub const LIST_FIELDS: &[&str] = &[
    "uuid",
    "name",
    "instance_uuid",
    "power_state",
    "provision_state",
    "maintenance",
    "links",
];

/// The masked value shown for a secret.
pub const MASK: &str = ferric_core::mask::MASK;

/// ISO 8601 with microseconds and `+00:00`, as Ironic prints datetimes.
pub fn timestamp(t: DbTime) -> Value {
    match chrono::DateTime::<chrono::Utc>::from_timestamp_micros(t.0) {
        Some(d) => Value::String(d.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()),
        None => Value::Null,
    }
}

fn opt_timestamp(t: Option<DbTime>) -> Value {
    t.map_or(Value::Null, timestamp)
}

/// `self` and `bookmark` links of `/v1/<path>`.
pub fn links(base: &str, path: &str) -> Value {
    json!([
        {"href": format!("{base}/v1/{path}"), "rel": "self"},
        {"href": format!("{base}/{path}"), "rel": "bookmark"},
    ])
}

/// `driver_info` with secrets replaced by [`MASK`] at any depth
/// (`ferric_core::mask`, Ironic's `mask_dict_password`).
pub fn mask_driver_info(info: &Map<String, Value>) -> Map<String, Value> {
    ferric_core::mask::mask_dict(info)
}

/// A provision state as shown at version `v` (`available` is null below 1.2,
/// `inspect wait` is `inspecting` below 1.39).
pub fn provision_state(s: ProvisionState, v: Version) -> Value {
    match s {
        ProvisionState::Available if !v.at_least(2) => Value::Null,
        ProvisionState::InspectWait if !v.at_least(39) => {
            Value::String(ProvisionState::Inspecting.as_str().to_string())
        }
        other => Value::String(other.as_str().to_string()),
    }
}

/// Node fields newer than 1.1 and the microversion that introduced each
/// (Ironic's `hide_fields_in_newer_versions`). Below it a field is neither
/// shown nor accepted.
const NODE_FIELD_VERSIONS: &[(&str, u32)] = &[
    ("driver_internal_info", 3),
    ("name", 5),
    ("inspection_started_at", 6),
    ("inspection_finished_at", 6),
    ("clean_step", 7),
    ("raid_config", 12),
    ("target_raid_config", 12),
    ("network_interface", 20),
    ("resource_class", 21),
    ("portgroups", 24),
    ("boot_interface", 31),
    ("console_interface", 31),
    ("deploy_interface", 31),
    ("inspect_interface", 31),
    ("management_interface", 31),
    ("power_interface", 31),
    ("raid_interface", 31),
    ("vendor_interface", 31),
    ("volume", 32),
    ("storage_interface", 33),
    ("traits", 37),
    ("rescue_interface", 38),
    ("bios_interface", 40),
    ("fault", 42),
    ("deploy_step", 44),
    ("conductor_group", 46),
    ("automated_clean", 47),
    ("protected", 48),
    ("protected_reason", 48),
    ("conductor", 49),
    ("owner", 50),
    ("description", 51),
    ("allocation_uuid", 52),
    ("retired", 61),
    ("retired_reason", 61),
    ("lessee", 65),
    ("network_data", 66),
    ("boot_mode", 75),
    ("secure_boot", 75),
    ("shard", 82),
    ("parent_node", 83),
    ("firmware_interface", 86),
    ("service_step", 87),
    ("disable_power_off", 95),
    // Newer than ferric's maximum: never shown.
    ("instance_name", 104),
    ("health", 109),
];

/// The microversion that introduced node field `field` (1 for the original ones).
pub fn node_field_version(field: &str) -> u32 {
    NODE_FIELD_VERSIONS
        .iter()
        .find(|(f, _)| *f == field)
        .map_or(1, |(_, m)| *m)
}

/// Refuse a node field the request's version does not have (Ironic: 406).
pub fn check_field_version(field: &str, v: Version) -> Result<(), ApiError> {
    let min = node_field_version(field);
    if v.at_least(min) {
        Ok(())
    } else {
        Err(ApiError::not_acceptable(format!(
            "The field \"{field}\" needs API version 1.{min} or later; this request used {v}."
        )))
    }
}

/// The full node document at version `v`, fields newer than `v` left out.
/// `conductor` is the conductor managing the node.
pub fn node(n: &Node, base: &str, v: Version, conductor: Option<&str>) -> Map<String, Value> {
    let uuid = n.uuid.to_string();
    let a = &n.attrs;
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_string(), v);
    };
    put("uuid", json!(uuid));
    put("name", json!(n.name));
    put("created_at", timestamp(n.created_at));
    put("updated_at", opt_timestamp(n.updated_at));
    put("automated_clean", json!(a.automated_clean));
    for kind in InterfaceKind::ALL {
        // Nodes enrolled straight into the store may lack the field: show
        // the built-in default.
        let value = n
            .interfaces
            .get(&kind.field())
            .cloned()
            .or_else(|| Drivers::builtin().interface_name(n, kind));
        put(&kind.field(), json!(value));
    }
    put("boot_mode", json!(a.boot_mode));
    put("clean_step", Value::Object(n.clean_step.clone()));
    put("conductor_group", json!(n.conductor_group));
    put("console_enabled", json!(a.console_enabled));
    put("deploy_step", Value::Object(n.deploy_step.clone()));
    put("description", json!(a.description));
    put("disable_power_off", json!(a.disable_power_off));
    put("driver", json!(n.driver));
    put(
        "driver_info",
        Value::Object(mask_driver_info(&n.driver_info)),
    );
    put(
        "driver_internal_info",
        Value::Object(ferric_core::mask::driver_internal_info(
            &n.driver_internal_info,
        )),
    );
    put("extra", Value::Object(n.extra.clone()));
    put("fault", json!(a.fault));
    put("health", json!(a.health));
    put(
        "inspection_finished_at",
        opt_timestamp(a.inspection_finished_at),
    );
    put(
        "inspection_started_at",
        opt_timestamp(a.inspection_started_at),
    );
    put(
        "instance_info",
        Value::Object(ferric_core::mask::instance_info(&n.instance_info)),
    );
    put("instance_name", json!(a.instance_name));
    put(
        "instance_uuid",
        json!(n.instance_uuid.map(|u| u.to_string())),
    );
    put("last_error", json!(n.last_error));
    put("lessee", json!(a.lessee));
    put("maintenance", json!(n.maintenance));
    put("maintenance_reason", json!(n.maintenance_reason));
    put("network_data", Value::Object(a.network_data.clone()));
    put("owner", json!(a.owner));
    put("parent_node", json!(a.parent_node.map(|u| u.to_string())));
    put("power_state", json!(n.power_state.map(|p| p.as_str())));
    put("properties", Value::Object(n.properties.clone()));
    put("protected", json!(a.protected));
    put("protected_reason", json!(a.protected_reason));
    put("provision_state", provision_state(n.provision_state, v));
    put(
        "provision_updated_at",
        opt_timestamp(n.provision_updated_at),
    );
    put("raid_config", Value::Object(a.raid_config.clone()));
    put(
        "reservation",
        json!(n.reservation.as_ref().map(|r| r.holder.clone())),
    );
    put("resource_class", json!(a.resource_class));
    put("retired", json!(a.retired));
    put("retired_reason", json!(a.retired_reason));
    put("secure_boot", json!(a.secure_boot));
    put("service_step", json!({}));
    put("shard", json!(a.shard));
    put(
        "target_power_state",
        json!(n.target_power_state.map(|p| p.as_str())),
    );
    put(
        "target_provision_state",
        n.target_provision_state
            .map_or(Value::Null, |s| provision_state(s, v)),
    );
    put(
        "target_raid_config",
        Value::Object(a.target_raid_config.clone()),
    );
    put("traits", json!(a.traits));
    put("links", links(base, &format!("nodes/{uuid}")));
    put("conductor", json!(conductor));
    put(
        "allocation_uuid",
        json!(a.allocation_uuid.map(|u| u.to_string())),
    );
    put("chassis_uuid", json!(a.chassis_uuid.map(|u| u.to_string())));
    for sub in ["ports", "states", "portgroups", "volume"] {
        put(sub, links(base, &format!("nodes/{uuid}/{sub}")));
    }
    m.retain(|k, _| v.at_least(node_field_version(k)));
    m
}

/// Parse a `fields=a,b` parameter against the keys of `full`.
pub fn parse_fields(fields: &str, full: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let wanted: Vec<String> = fields
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(str::to_string)
        .collect();
    let invalid: Vec<&str> = wanted
        .iter()
        .filter(|f| !full.contains_key(f.as_str()))
        .map(String::as_str)
        .collect();
    if !invalid.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Field(s) \"{}\" are not valid",
            invalid.join(", ")
        )));
    }
    Ok(wanted)
}

/// Keep only `fields` (and `links`, as Ironic does).
pub fn select(mut full: Map<String, Value>, fields: &[impl AsRef<str>]) -> Map<String, Value> {
    full.retain(|k, _| k == "links" || fields.iter().any(|f| f.as_ref() == k));
    full
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn secrets_are_masked() {
        let mut info = Map::new();
        info.insert("redfish_password".into(), json!("hunter2"));
        info.insert("ipmi_username".into(), json!("admin"));
        info.insert("Auth_Token".into(), json!("t"));
        info.insert("ssh_key".into(), json!("k"));
        let m = mask_driver_info(&info);
        assert_eq!(m["redfish_password"], MASK);
        assert_eq!(m["Auth_Token"], MASK);
        assert_eq!(m["ssh_key"], MASK);
        assert_eq!(m["ipmi_username"], "admin");
    }

    #[test]
    fn timestamps_look_like_ironics() {
        assert_eq!(
            timestamp(DbTime(1_795_000_000_020_917)),
            json!("2026-11-18T11:06:40.020917+00:00")
        );
    }

    #[test]
    fn fields_appear_with_their_microversion() {
        let n = crate::nodes::tests_support::node();
        let old = node(&n, "http://x", Version { minor: 1 }, Some("c"));
        assert!(!old.contains_key("name"));
        assert!(!old.contains_key("power_interface"));
        assert!(!old.contains_key("conductor"));
        assert!(old.contains_key("driver_info"));
        let new = node(&n, "http://x", Version::MAX, Some("c"));
        assert!(new.contains_key("disable_power_off"));
        assert!(new.contains_key("firmware_interface"));
        assert!(new.contains_key("health"), "1.109");
        let before = node(&n, "http://x", Version { minor: 108 }, Some("c"));
        assert!(!before.contains_key("health"), "newer than 1.108");
        assert_eq!(new["conductor"], "c");
        assert!(check_field_version("owner", Version { minor: 49 }).is_err());
        assert!(check_field_version("owner", Version { minor: 50 }).is_ok());
    }

    #[test]
    fn old_versions_hide_available() {
        assert!(provision_state(ProvisionState::Available, Version { minor: 1 }).is_null());
        assert_eq!(
            provision_state(ProvisionState::Available, Version { minor: 2 }),
            "available"
        );
    }
}

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
    provision_state_str(s, v).map_or(Value::Null, |s| Value::String(s.to_string()))
}

/// [`provision_state`] as a string (`None`: null).
fn provision_state_str(s: ProvisionState, v: Version) -> Option<&'static str> {
    match s {
        ProvisionState::Available if !v.at_least(2) => None,
        ProvisionState::InspectWait if !v.at_least(39) => Some(ProvisionState::Inspecting.as_str()),
        other => Some(other.as_str()),
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

/// One key of a node document (see [`node`], which builds the same
/// document as a map; [`NodeDoc`] writes it straight to the serializer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    AllocationUuid,
    AutomatedClean,
    BootMode,
    ChassisUuid,
    CleanStep,
    Conductor,
    ConductorGroup,
    ConsoleEnabled,
    CreatedAt,
    DeployStep,
    Description,
    DisablePowerOff,
    Driver,
    DriverInfo,
    DriverInternalInfo,
    Extra,
    Fault,
    Health,
    InspectionFinishedAt,
    InspectionStartedAt,
    InstanceInfo,
    InstanceName,
    InstanceUuid,
    Interface(InterfaceKind),
    LastError,
    Lessee,
    Links,
    Maintenance,
    MaintenanceReason,
    Name,
    NetworkData,
    Owner,
    ParentNode,
    PowerState,
    Properties,
    Protected,
    ProtectedReason,
    ProvisionState,
    ProvisionUpdatedAt,
    RaidConfig,
    Reservation,
    ResourceClass,
    Retired,
    RetiredReason,
    SecureBoot,
    ServiceStep,
    Shard,
    /// A sub-resource link list (`ports`, `states`, `portgroups`, `volume`).
    Sub(&'static str),
    TargetPowerState,
    TargetProvisionState,
    TargetRaidConfig,
    Traits,
    UpdatedAt,
    Uuid,
}

/// Every key of a node document with its name, in no particular order.
fn all_keys() -> Vec<(String, Key)> {
    let named: [(&str, Key); 51] = [
        ("allocation_uuid", Key::AllocationUuid),
        ("automated_clean", Key::AutomatedClean),
        ("boot_mode", Key::BootMode),
        ("chassis_uuid", Key::ChassisUuid),
        ("clean_step", Key::CleanStep),
        ("conductor", Key::Conductor),
        ("conductor_group", Key::ConductorGroup),
        ("console_enabled", Key::ConsoleEnabled),
        ("created_at", Key::CreatedAt),
        ("deploy_step", Key::DeployStep),
        ("description", Key::Description),
        ("disable_power_off", Key::DisablePowerOff),
        ("driver", Key::Driver),
        ("driver_info", Key::DriverInfo),
        ("driver_internal_info", Key::DriverInternalInfo),
        ("extra", Key::Extra),
        ("fault", Key::Fault),
        ("health", Key::Health),
        ("inspection_finished_at", Key::InspectionFinishedAt),
        ("inspection_started_at", Key::InspectionStartedAt),
        ("instance_info", Key::InstanceInfo),
        ("instance_name", Key::InstanceName),
        ("instance_uuid", Key::InstanceUuid),
        ("last_error", Key::LastError),
        ("lessee", Key::Lessee),
        ("links", Key::Links),
        ("maintenance", Key::Maintenance),
        ("maintenance_reason", Key::MaintenanceReason),
        ("name", Key::Name),
        ("network_data", Key::NetworkData),
        ("owner", Key::Owner),
        ("parent_node", Key::ParentNode),
        ("power_state", Key::PowerState),
        ("properties", Key::Properties),
        ("protected", Key::Protected),
        ("protected_reason", Key::ProtectedReason),
        ("provision_state", Key::ProvisionState),
        ("provision_updated_at", Key::ProvisionUpdatedAt),
        ("raid_config", Key::RaidConfig),
        ("reservation", Key::Reservation),
        ("resource_class", Key::ResourceClass),
        ("retired", Key::Retired),
        ("retired_reason", Key::RetiredReason),
        ("secure_boot", Key::SecureBoot),
        ("service_step", Key::ServiceStep),
        ("shard", Key::Shard),
        ("target_power_state", Key::TargetPowerState),
        ("target_provision_state", Key::TargetProvisionState),
        ("target_raid_config", Key::TargetRaidConfig),
        ("traits", Key::Traits),
        ("updated_at", Key::UpdatedAt),
    ];
    let mut keys: Vec<(String, Key)> = named
        .into_iter()
        .map(|(name, key)| (name.to_string(), key))
        .collect();
    keys.push(("uuid".to_string(), Key::Uuid));
    keys.extend(
        InterfaceKind::ALL
            .into_iter()
            .map(|k| (k.field(), Key::Interface(k))),
    );
    keys.extend(
        ["ports", "states", "portgroups", "volume"]
            .into_iter()
            .map(|sub| (sub.to_string(), Key::Sub(sub))),
    );
    keys
}

/// Which keys of a node document a response shows, in the document's key
/// order (byte order, as a `serde_json::Map` keeps them): the keys of
/// version `v`, narrowed to a `fields` selection (`links` always stays).
/// Built once per request; [`NodeDoc`] writes each node by it.
#[derive(Debug, Clone)]
pub struct NodePlan {
    keys: Vec<(String, Key)>,
    v: Version,
}

impl NodePlan {
    /// The whole document at `v` (a detail list).
    pub fn detail(v: Version) -> NodePlan {
        let mut keys = all_keys();
        keys.retain(|(name, _)| v.at_least(node_field_version(name)));
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        NodePlan { keys, v }
    }

    /// Only `fields` (and `links`), as [`select`] keeps them; fields the
    /// version does not have are left out.
    pub fn select(v: Version, fields: &[impl AsRef<str>]) -> NodePlan {
        let mut plan = NodePlan::detail(v);
        plan.keys
            .retain(|(k, _)| k == "links" || fields.iter().any(|f| f.as_ref() == k));
        plan
    }

    /// Parse a `fields=a,b` parameter against the keys of the document at
    /// `v` ([`parse_fields`] against a full node at `v`).
    pub fn parse_fields(fields: &str, v: Version) -> Result<Vec<String>, ApiError> {
        let plan = NodePlan::detail(v);
        parse_fields_with(fields, |f| plan.keys.iter().any(|(k, _)| k == f))
    }
}

/// A node document written straight to the serializer by a [`NodePlan`]:
/// the same JSON as `select(node(n, base, v, conductor), fields)`, without
/// building the map (issue 18: the map per node was most of a list's CPU).
#[derive(Debug, Clone, Copy)]
pub struct NodeDoc<'a> {
    pub node: &'a Node,
    pub base: &'a str,
    pub conductor: Option<&'a str>,
    pub plan: &'a NodePlan,
}

/// A datetime as [`timestamp`] shows it.
struct Ts(Option<DbTime>);

impl serde::Serialize for Ts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use chrono::{Datelike, Timelike};
        let Some(d) = self
            .0
            .and_then(|t| chrono::DateTime::<chrono::Utc>::from_timestamp_micros(t.0))
        else {
            return s.serialize_none();
        };
        if !(0..=9999).contains(&d.year()) {
            // chrono's own rendering of years outside 4 digits
            return s.collect_str(&d.format("%Y-%m-%dT%H:%M:%S%.6f+00:00"));
        }
        s.collect_str(&format_args!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}+00:00",
            d.year(),
            d.month(),
            d.day(),
            d.hour(),
            d.minute(),
            d.second(),
            d.timestamp_subsec_micros()
        ))
    }
}

/// [`links`] of `/v1/nodes/{uuid}[/{sub}]`.
struct NodeLinks<'a> {
    base: &'a str,
    uuid: &'a uuid::Uuid,
    sub: Option<&'static str>,
}

/// One `{"href": ..., "rel": ...}` of [`NodeLinks`].
struct NodeLink<'a>(&'a NodeLinks<'a>, bool);

impl serde::Serialize for NodeLink<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let NodeLink(l, bookmark) = self;
        let v1 = if *bookmark { "" } else { "/v1" };
        let mut m = s.serialize_map(Some(2))?;
        match l.sub {
            Some(sub) => m.serialize_entry(
                "href",
                &format_args!("{}{v1}/nodes/{}/{sub}", l.base, l.uuid),
            )?,
            None => m.serialize_entry("href", &format_args!("{}{v1}/nodes/{}", l.base, l.uuid))?,
        }
        m.serialize_entry("rel", if *bookmark { "bookmark" } else { "self" })?;
        m.end()
    }
}

impl serde::Serialize for NodeLinks<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(2))?;
        seq.serialize_element(&NodeLink(self, false))?;
        seq.serialize_element(&NodeLink(self, true))?;
        seq.end()
    }
}

impl serde::Serialize for NodeDoc<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use ferric_core::mask::{Masked, Masking};
        use serde::ser::SerializeMap;
        let (n, a, v) = (self.node, &self.node.attrs, self.plan.v);
        let mut m = s.serialize_map(Some(self.plan.keys.len()))?;
        for (name, key) in &self.plan.keys {
            let name = name.as_str();
            match *key {
                Key::AllocationUuid => m.serialize_entry(name, &a.allocation_uuid)?,
                Key::AutomatedClean => m.serialize_entry(name, &a.automated_clean)?,
                Key::BootMode => m.serialize_entry(name, &a.boot_mode)?,
                Key::ChassisUuid => m.serialize_entry(name, &a.chassis_uuid)?,
                Key::CleanStep => m.serialize_entry(name, &n.clean_step)?,
                Key::Conductor => m.serialize_entry(name, &self.conductor)?,
                Key::ConductorGroup => m.serialize_entry(name, &n.conductor_group)?,
                Key::ConsoleEnabled => m.serialize_entry(name, &a.console_enabled)?,
                Key::CreatedAt => m.serialize_entry(name, &Ts(Some(n.created_at)))?,
                Key::DeployStep => m.serialize_entry(name, &n.deploy_step)?,
                Key::Description => m.serialize_entry(name, &a.description)?,
                Key::DisablePowerOff => m.serialize_entry(name, &a.disable_power_off)?,
                Key::Driver => m.serialize_entry(name, &n.driver)?,
                Key::DriverInfo | Key::DriverInternalInfo => {
                    let map = if *key == Key::DriverInfo {
                        &n.driver_info
                    } else {
                        &n.driver_internal_info
                    };
                    m.serialize_entry(
                        name,
                        &Masked {
                            map,
                            how: Masking::Dict,
                        },
                    )?
                }
                Key::Extra => m.serialize_entry(name, &n.extra)?,
                Key::Fault => m.serialize_entry(name, &a.fault)?,
                Key::Health => m.serialize_entry(name, &a.health)?,
                Key::InspectionFinishedAt => {
                    m.serialize_entry(name, &Ts(a.inspection_finished_at))?
                }
                Key::InspectionStartedAt => {
                    m.serialize_entry(name, &Ts(a.inspection_started_at))?
                }
                Key::InstanceInfo => m.serialize_entry(
                    name,
                    &Masked {
                        map: &n.instance_info,
                        how: Masking::InstanceInfo,
                    },
                )?,
                Key::InstanceName => m.serialize_entry(name, &a.instance_name)?,
                Key::InstanceUuid => m.serialize_entry(name, &n.instance_uuid)?,
                Key::Interface(kind) => match n.interfaces.get(name) {
                    Some(i) => m.serialize_entry(name, i)?,
                    // Nodes enrolled straight into the store may lack the
                    // field: the built-in default, as `node` shows it.
                    None => m.serialize_entry(name, &Drivers::builtin().interface_name(n, kind))?,
                },
                Key::LastError => m.serialize_entry(name, &n.last_error)?,
                Key::Lessee => m.serialize_entry(name, &a.lessee)?,
                Key::Links | Key::Sub(_) => m.serialize_entry(
                    name,
                    &NodeLinks {
                        base: self.base,
                        uuid: &n.uuid,
                        sub: match key {
                            Key::Sub(sub) => Some(*sub),
                            _ => None,
                        },
                    },
                )?,
                Key::Maintenance => m.serialize_entry(name, &n.maintenance)?,
                Key::MaintenanceReason => m.serialize_entry(name, &n.maintenance_reason)?,
                Key::Name => m.serialize_entry(name, &n.name)?,
                Key::NetworkData => m.serialize_entry(name, &a.network_data)?,
                Key::Owner => m.serialize_entry(name, &a.owner)?,
                Key::ParentNode => m.serialize_entry(name, &a.parent_node)?,
                Key::PowerState => m.serialize_entry(name, &n.power_state.map(|p| p.as_str()))?,
                Key::Properties => m.serialize_entry(name, &n.properties)?,
                Key::Protected => m.serialize_entry(name, &a.protected)?,
                Key::ProtectedReason => m.serialize_entry(name, &a.protected_reason)?,
                Key::ProvisionState => {
                    m.serialize_entry(name, &provision_state_str(n.provision_state, v))?
                }
                Key::ProvisionUpdatedAt => m.serialize_entry(name, &Ts(n.provision_updated_at))?,
                Key::RaidConfig => m.serialize_entry(name, &a.raid_config)?,
                Key::Reservation => {
                    m.serialize_entry(name, &n.reservation.as_ref().map(|r| r.holder.as_str()))?
                }
                Key::ResourceClass => m.serialize_entry(name, &a.resource_class)?,
                Key::Retired => m.serialize_entry(name, &a.retired)?,
                Key::RetiredReason => m.serialize_entry(name, &a.retired_reason)?,
                Key::SecureBoot => m.serialize_entry(name, &a.secure_boot)?,
                Key::ServiceStep => m.serialize_entry(name, &Map::new())?,
                Key::Shard => m.serialize_entry(name, &a.shard)?,
                Key::TargetPowerState => {
                    m.serialize_entry(name, &n.target_power_state.map(|p| p.as_str()))?
                }
                Key::TargetProvisionState => m.serialize_entry(
                    name,
                    &n.target_provision_state
                        .and_then(|s| provision_state_str(s, v)),
                )?,
                Key::TargetRaidConfig => m.serialize_entry(name, &a.target_raid_config)?,
                Key::Traits => m.serialize_entry(name, &a.traits)?,
                Key::UpdatedAt => m.serialize_entry(name, &Ts(n.updated_at))?,
                Key::Uuid => m.serialize_entry(name, &n.uuid)?,
            }
        }
        m.end()
    }
}

/// Parse a `fields=a,b` parameter against the keys of `full`.
pub fn parse_fields(fields: &str, full: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    parse_fields_with(fields, |f| full.contains_key(f))
}

/// A `fields=a,b` parameter: the names, each one `valid`, else Ironic's 400
/// naming every invalid one.
fn parse_fields_with(fields: &str, valid: impl Fn(&str) -> bool) -> Result<Vec<String>, ApiError> {
    let wanted: Vec<String> = fields
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(str::to_string)
        .collect();
    let invalid: Vec<&str> = wanted
        .iter()
        .map(String::as_str)
        .filter(|f| !valid(f))
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

    /// Nodes that exercise every kind of value a document shows: defaults,
    /// every attribute set, secrets at depth, masked instance_info keys,
    /// stored and defaulted interfaces, odd datetimes, every provision state.
    fn varied_nodes() -> Vec<Node> {
        use ferric_core::{PowerState, Reservation};
        let obj = |v: Value| match v {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        let base = crate::nodes::tests_support::node();
        let mut out = vec![base.clone()];
        for (i, ps) in ProvisionState::ALL.iter().enumerate() {
            let mut n = base.clone();
            n.uuid = uuid::Uuid::from_u128(0x1234_0000 + i as u128);
            n.provision_state = *ps;
            n.target_provision_state = (i % 3 == 0).then_some(ProvisionState::Available);
            n.target_provision_state = n
                .target_provision_state
                .or((i % 3 == 1).then_some(ProvisionState::InspectWait));
            n.name = (i % 2 == 0).then(|| format!("node-{i}"));
            n.driver = ["fake-hardware", "redfish", "ipmi", "no-such-driver"][i % 4].into();
            if i % 2 == 1 {
                n.interfaces.insert("power_interface".into(), "fake".into());
                n.interfaces
                    .insert("deploy_interface".into(), "direct".into());
            }
            n.driver_info = obj(json!({
                "redfish_password": "p", "ipmi_username": "u", "Auth_Token": 1,
                "nested": {"ssh_key": "k", "list": [{"token": "t"}, [{"passwd": 2}], "x"]},
                "quote\"d": "line\nbreak \u{e9}",
            }));
            n.driver_internal_info = obj(json!({
                "agent_secret_token": "abc", "agent_url": "http://a",
                "deploy_steps": [{"step": "write_image", "args": {"image_password": "x"}}],
            }));
            n.instance_info = obj(match i % 3 {
                0 => {
                    json!({"configdrive": {"user_data": "x"}, "image_url": "http://t", "root_gb": 10})
                }
                1 => json!({"configdrive": "H4sI", "image_url": "", "image_source": "http://s"}),
                _ => json!({"image_url": {}, "capabilities": {"boot_mode": "uefi"}}),
            });
            n.properties = obj(json!({"cpus": i, "memory_mb": 1.5, "capabilities": "a:b"}));
            n.extra = obj(json!({"k": [1, null, true, {"z": "a"}]}));
            n.clean_step = obj(json!({"step": "erase", "priority": 10}));
            n.deploy_step = obj(json!({"step": "deploy"}));
            n.instance_uuid = (i % 2 == 0).then(|| uuid::Uuid::from_u128(99 + i as u128));
            n.power_state = [None, Some(PowerState::On), Some(PowerState::Off)][i % 3];
            n.target_power_state = (i % 4 == 0).then_some(PowerState::Off);
            n.maintenance = i % 2 == 0;
            n.maintenance_reason = n.maintenance.then(|| "why".to_string());
            n.last_error = (i % 3 == 2).then(|| "failed \"badly\"".to_string());
            n.conductor_group = if i % 2 == 0 {
                "g1".into()
            } else {
                String::new()
            };
            n.reservation = (i % 5 == 0).then(|| Reservation {
                holder: "cond-1".into(),
                task_id: uuid::Uuid::nil(),
                epoch: 3,
                purpose: "bench".into(),
                acquired_at: DbTime(5),
            });
            n.created_at = DbTime(1_795_000_000_020_917 + i as i64 * 1_000_007);
            n.updated_at = (i % 2 == 0).then_some(DbTime(0));
            n.provision_updated_at = (i % 3 == 0).then_some(DbTime(-1_234_567));
            let a = &mut n.attrs;
            if i % 2 == 0 {
                a.resource_class = Some("gold".into());
                a.owner = Some("proj".into());
                a.lessee = Some("l".into());
                a.description = Some("d\u{1F600}".into());
                a.automated_clean = Some(i % 4 == 0);
                a.protected = true;
                a.protected_reason = Some("r".into());
                a.retired = true;
                a.retired_reason = Some("old".into());
                a.disable_power_off = true;
                a.shard = Some("s1".into());
                a.parent_node = Some(uuid::Uuid::from_u128(7));
                a.network_data = obj(json!({"links": [], "password": "n"}));
                a.boot_mode = Some("uefi".into());
                a.secure_boot = Some(false);
                a.instance_name = Some("inst".into());
                a.health = Some("OK".into());
                a.chassis_uuid = Some(uuid::Uuid::from_u128(8));
                a.traits = vec!["CUSTOM_A".into(), "CUSTOM_B".into()];
                a.fault = Some("power failure".into());
                a.allocation_uuid = Some(uuid::Uuid::from_u128(9));
                a.console_enabled = true;
                a.raid_config = obj(json!({"logical_disks": [{"size_gb": 10}]}));
                a.target_raid_config = obj(json!({"logical_disks": []}));
                a.inspection_started_at = Some(DbTime(1_000_000));
                a.inspection_finished_at = Some(DbTime(253_402_300_800_000_000));
            }
            out.push(n);
        }
        out
    }

    /// The streaming document is the same JSON, byte for byte, as the map
    /// built by `node` and narrowed by `select`: every node above, every
    /// version that changes the document, detail, list and field selections.
    #[test]
    fn streamed_documents_equal_the_generic_ones() {
        let nodes = varied_nodes();
        let all: Vec<String> = node(&nodes[0], "b", Version::MAX, None)
            .keys()
            .cloned()
            .collect();
        let mut selections: Vec<Option<Vec<String>>> = vec![
            None,
            Some(LIST_FIELDS.iter().map(|s| s.to_string()).collect()),
            Some(vec!["uuid".into()]),
            Some(vec![
                "driver_info".into(),
                "instance_info".into(),
                "uuid".into(),
                "uuid".into(),
            ]),
            Some(vec![]),
        ];
        // Every third key, and every key alone.
        selections.push(Some(all.iter().step_by(3).cloned().collect()));
        selections.extend(all.iter().map(|k| Some(vec![k.clone()])));
        let mut versions: Vec<u32> = vec![1, 2, 5, 38, 39, 40, 48, 82, 95, 103, 108];
        versions.push(Version::MAX.minor);
        let mut compared = 0;
        for minor in versions {
            let v = Version { minor };
            // Each key alone at three versions; the rest at every one.
            let per_key = [1, 39, Version::MAX.minor].contains(&minor);
            for sel in selections.iter().take(if per_key { usize::MAX } else { 6 }) {
                let plan = match sel {
                    None => NodePlan::detail(v),
                    Some(f) => NodePlan::select(v, f),
                };
                for (i, n) in nodes.iter().enumerate() {
                    let conductor = (i % 2 == 0).then_some("cond-a");
                    let base = "http://127.0.0.1:6385";
                    let generic = node(n, base, v, conductor);
                    let generic = match sel {
                        None => generic,
                        Some(f) => select(generic, f),
                    };
                    let streamed = NodeDoc {
                        node: n,
                        base,
                        conductor,
                        plan: &plan,
                    };
                    assert_eq!(
                        serde_json::to_string(&streamed).unwrap(),
                        serde_json::to_string(&Value::Object(generic)).unwrap(),
                        "node {i} at 1.{minor}, fields {sel:?}"
                    );
                    compared += 1;
                }
            }
        }
        assert!(compared > 5_000, "{compared}");
    }

    /// Field names are checked against the document of the request's
    /// version, with `parse_fields`' message.
    #[test]
    fn plan_fields_are_checked_like_the_generic_ones() {
        for (fields, minor) in [
            ("uuid,name", 5),
            ("uuid,name", 4),
            ("bogus, uuid ,x", 100),
            ("", 1),
            ("health", 108),
            ("health", 109),
        ] {
            let v = Version { minor };
            let probe = node(&crate::nodes::tests_support::node(), "b", v, None);
            let generic = parse_fields(fields, &probe).map_err(|e| format!("{e:?}"));
            let planned = NodePlan::parse_fields(fields, v).map_err(|e| format!("{e:?}"));
            assert_eq!(planned, generic, "{fields} at 1.{minor}");
        }
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

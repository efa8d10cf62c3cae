//! The node record (SPEC §3) and the values it is built from.

use crate::error::DomainError;
use crate::interface::InterfaceKind;
use crate::state::{PowerState, ProvisionState};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use uuid::Uuid;

/// A point in time read from the database clock, in microseconds since the
/// Unix epoch. Liveness decisions compare only values of this type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DbTime(pub i64);

impl DbTime {
    /// Microseconds between `earlier` and `self` (saturating at zero).
    pub fn micros_since(self, earlier: DbTime) -> i64 {
        (self.0 - earlier.0).max(0)
    }
}

/// Who holds a node's exclusive lock and under which fencing token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// The holder's conductor hostname (Ironic's `reservation` column value).
    pub holder: String,
    /// The task inside that conductor (distinguishes two tasks of one conductor).
    pub task_id: Uuid,
    /// The fencing epoch of this grant.
    pub epoch: i64,
    /// What the holder said it is doing.
    pub purpose: String,
    /// When it was granted (database clock).
    pub acquired_at: DbTime,
}

/// One node: the inventory record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub uuid: Uuid,
    pub name: Option<String>,
    pub driver: String,
    pub driver_info: Map<String, Value>,
    pub properties: Map<String, Value>,
    pub extra: Map<String, Value>,
    pub instance_info: Map<String, Value>,
    pub instance_uuid: Option<Uuid>,
    /// Hardware interface names (power_interface, deploy_interface, ...).
    pub interfaces: BTreeMap<String, String>,
    /// Conductor-private state (Ironic's `driver_internal_info`): the step
    /// lists of a running deploy or clean, the agent's URL, ...
    #[serde(default)]
    pub driver_internal_info: Map<String, Value>,
    /// The clean step running now (`{}` when none).
    #[serde(default)]
    pub clean_step: Map<String, Value>,
    /// The deploy step running now (`{}` when none).
    #[serde(default)]
    pub deploy_step: Map<String, Value>,
    pub provision_state: ProvisionState,
    pub target_provision_state: Option<ProvisionState>,
    pub power_state: Option<PowerState>,
    pub target_power_state: Option<PowerState>,
    pub maintenance: bool,
    pub maintenance_reason: Option<String>,
    pub last_error: Option<String>,
    pub conductor_group: String,
    pub conductor_affinity: Option<String>,
    /// The current exclusive lock, if any.
    pub reservation: Option<Reservation>,
    /// Grants so far; the next grant gets `lock_epoch + 1`. Never decreases.
    pub lock_epoch: i64,
    /// Waiters queued for the lock.
    pub lock_waiters: i64,
    /// Global revision of the last committed change to this node.
    pub revision: i64,
    pub created_at: DbTime,
    pub updated_at: Option<DbTime>,
    pub provision_updated_at: Option<DbTime>,
    /// Ironic's descriptive and scheduling fields (resource class, owner,
    /// protected, retired, traits, ...). Nested, not flattened, when
    /// serialized: serde's flatten buffers values and reads some floats
    /// back differently, and the change feed keeps nodes as JSON.
    #[serde(default)]
    pub attrs: NodeAttrs,
}

/// The node fields Ironic has beyond identity, driver, state and lock:
/// scheduling and ownership, protection and retirement, traits, and the
/// conductor-owned ones the API shows read-only. Each is a column of
/// `nodes` (traits as a JSON list).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeAttrs {
    pub resource_class: Option<String>,
    pub owner: Option<String>,
    pub lessee: Option<String>,
    pub description: Option<String>,
    /// `None`: the conductor's `automated_clean` setting decides.
    pub automated_clean: Option<bool>,
    /// Refuses undeploy, rebuild and delete; settable only in `active` or `rescue`.
    pub protected: bool,
    pub protected_reason: Option<String>,
    /// A retired node is not provided again: cleaning ends in `manageable`.
    pub retired: bool,
    pub retired_reason: Option<String>,
    pub disable_power_off: bool,
    pub shard: Option<String>,
    /// The UUID of this node's parent node.
    pub parent_node: Option<Uuid>,
    pub network_data: Map<String, Value>,
    pub boot_mode: Option<String>,
    pub secure_boot: Option<bool>,
    pub instance_name: Option<String>,
    /// Conductor-owned (read-only in the API).
    pub health: Option<String>,
    /// The chassis the node belongs to.
    pub chassis_uuid: Option<Uuid>,
    /// Sorted, without duplicates.
    pub traits: Vec<String>,
    /// Conductor-owned: why the conductor put the node in maintenance.
    pub fault: Option<String>,
    /// Conductor-owned: the allocation the node is part of.
    pub allocation_uuid: Option<Uuid>,
    pub console_enabled: bool,
    pub raid_config: Map<String, Value>,
    pub target_raid_config: Map<String, Value>,
    pub inspection_started_at: Option<DbTime>,
    pub inspection_finished_at: Option<DbTime>,
}

/// What a new node is created from. Everything else starts at its default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NewNode {
    pub uuid: Option<Uuid>,
    pub name: Option<String>,
    pub driver: String,
    pub driver_info: Map<String, Value>,
    pub properties: Map<String, Value>,
    pub extra: Map<String, Value>,
    pub interfaces: BTreeMap<String, String>,
    pub conductor_group: String,
    /// Initial provision state (Ironic: `enroll` from API 1.11, `available` before).
    pub provision_state: Option<ProvisionState>,
    /// Instance fields accepted on create.
    #[serde(default)]
    pub instance_info: Map<String, Value>,
    pub instance_uuid: Option<Uuid>,
    pub maintenance: bool,
    #[serde(default)]
    pub attrs: NodeAttrs,
}

/// Node names follow Ironic's rule: RFC 3986 unreserved characters, no UUID look-alikes.
pub fn validate_name(name: &str) -> Result<(), DomainError> {
    let bad = |reason: &str| DomainError::InvalidField {
        field: "name",
        reason: reason.to_string(),
    };
    if name.is_empty() || name.len() > 255 {
        return Err(bad("must be 1 to 255 characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~'))
    {
        return Err(bad(
            "may contain only letters, digits and the characters - . _ ~",
        ));
    }
    if Uuid::parse_str(name).is_ok() {
        return Err(bad("must not be a UUID"));
    }
    if name == "." || name == ".." {
        // A path segment of its own: /v1/nodes/.. is not this node.
        return Err(bad("must not be \".\" or \"..\""));
    }
    Ok(())
}

/// Conductor groups: Ironic's `^[a-zA-Z0-9_\-\.]*$`, stored lower-case.
pub fn normalize_conductor_group(group: &str) -> Result<String, DomainError> {
    if group.len() > 255
        || !group
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(DomainError::InvalidField {
            field: "conductor_group",
            reason: "may contain only letters, digits and the characters _ - . (at most 255)"
                .to_string(),
        });
    }
    Ok(group.to_ascii_lowercase())
}

/// The hardware interfaces a node has, in Ironic's field order; each is the
/// field `<name>_interface` of the API and of notification payloads. The
/// names of [`InterfaceKind::ALL`].
pub const INTERFACES: [&str; 13] = {
    let mut names = [""; 13];
    let mut i = 0;
    while i < names.len() {
        names[i] = InterfaceKind::ALL[i].as_str();
        i += 1;
    }
    names
};

/// The deepest nesting of a node's dictionary fields (`driver_info`,
/// `properties`, `extra`, `instance_info`), the dictionary itself counting
/// as 1. Node documents are read back with serde_json, which refuses
/// documents nested deeper than 128 levels: with this bound a stored node,
/// its change-feed snapshot and every response showing it stay well within
/// that, and nothing recursing over a value can run out of stack.
pub const MAX_DICT_DEPTH: usize = 64;

/// How deeply `v` nests: 0 for a scalar, 1 for an array or object of
/// scalars, and so on. Iterative, so any depth is safe to measure.
pub fn json_depth(v: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(v, 1usize)];
    while let Some((v, level)) = stack.pop() {
        match v {
            Value::Array(items) => {
                deepest = deepest.max(level);
                stack.extend(items.iter().map(|c| (c, level + 1)));
            }
            Value::Object(members) => {
                deepest = deepest.max(level);
                stack.extend(members.values().map(|c| (c, level + 1)));
            }
            _ => {}
        }
    }
    deepest
}

/// Refuse a dictionary field nested deeper than [`MAX_DICT_DEPTH`].
pub fn validate_dict_depth(
    field: &'static str,
    dict: &Map<String, Value>,
) -> Result<(), DomainError> {
    let depth = 1 + dict.values().map(json_depth).max().unwrap_or(0);
    if depth > MAX_DICT_DEPTH {
        return Err(DomainError::InvalidField {
            field,
            reason: format!("nests {depth} levels deep; at most {MAX_DICT_DEPTH} are allowed"),
        });
    }
    Ok(())
}

impl NewNode {
    /// Check every field; the first problem is reported.
    pub fn validate(&mut self) -> Result<(), DomainError> {
        if let Some(name) = &self.name {
            validate_name(name)?;
        }
        validate_dict_depth("driver_info", &self.driver_info)?;
        validate_dict_depth("properties", &self.properties)?;
        validate_dict_depth("extra", &self.extra)?;
        validate_dict_depth("instance_info", &self.instance_info)?;
        self.attrs.validate()?;
        if self.driver.is_empty() || self.driver.len() > 255 {
            return Err(DomainError::InvalidField {
                field: "driver",
                reason: "must be 1 to 255 characters".to_string(),
            });
        }
        self.conductor_group = normalize_conductor_group(&self.conductor_group)?;
        Ok(())
    }
}

/// The longest `description` (Ironic's `_NODE_DESCRIPTION_MAX_LENGTH`).
pub const MAX_DESCRIPTION_LEN: usize = 4096;

/// The longest trait name.
pub const MAX_TRAIT_LEN: usize = 255;

/// The most traits a node may have (Ironic's `MAX_TRAITS_PER_NODE`).
pub const MAX_TRAITS_PER_NODE: usize = 50;

/// Whether `name` is a trait Ironic accepts: `CUSTOM_` followed by capital
/// letters, digits and `_`, or a standard os-traits name; at most
/// [`MAX_TRAIT_LEN`] characters.
pub fn is_valid_trait(name: &str) -> bool {
    if name.is_empty() || name.len() > MAX_TRAIT_LEN {
        return false;
    }
    match name.strip_prefix("CUSTOM_") {
        Some(rest) => {
            !rest.is_empty()
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        }
        None => crate::traits::STANDARD_TRAITS.binary_search(&name).is_ok(),
    }
}

impl NodeAttrs {
    /// Check the stored shapes: lengths, dictionary depth, traits sorted
    /// and unique. Whether a value is allowed in the node's state is the
    /// caller's rule.
    pub fn validate(&mut self) -> Result<(), DomainError> {
        let too_long = |field: &'static str, max: usize| DomainError::InvalidField {
            field,
            reason: format!("must be at most {max} characters"),
        };
        if self
            .description
            .as_ref()
            .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION_LEN)
        {
            return Err(too_long("description", MAX_DESCRIPTION_LEN));
        }
        if self.resource_class.as_ref().is_some_and(|r| r.len() > 80) {
            return Err(too_long("resource_class", 80));
        }
        for (field, value) in [
            ("owner", &self.owner),
            ("lessee", &self.lessee),
            ("shard", &self.shard),
            ("instance_name", &self.instance_name),
            ("boot_mode", &self.boot_mode),
            ("protected_reason", &self.protected_reason),
            ("retired_reason", &self.retired_reason),
        ] {
            if value.as_ref().is_some_and(|v| v.len() > 255) {
                return Err(too_long(field, 255));
            }
        }
        validate_dict_depth("network_data", &self.network_data)?;
        validate_dict_depth("raid_config", &self.raid_config)?;
        validate_dict_depth("target_raid_config", &self.target_raid_config)?;
        if self.traits.len() > MAX_TRAITS_PER_NODE {
            return Err(DomainError::InvalidField {
                field: "traits",
                reason: format!("a node may have at most {MAX_TRAITS_PER_NODE} traits"),
            });
        }
        self.traits.sort();
        self.traits.dedup();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_ironics_rules() {
        assert!(validate_name("node-1.rack_2~a").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("has space").is_err());
        assert!(validate_name("8a4b5c1e-2f3d-4e5f-9a8b-7c6d5e4f3a2b").is_err());
        assert!(validate_name(".").is_err());
        assert!(validate_name("..").is_err());
        assert!(validate_name("...").is_ok());
    }

    #[test]
    fn json_depth_counts_containers() {
        use serde_json::json;
        assert_eq!(json_depth(&json!(1)), 0);
        assert_eq!(json_depth(&json!([])), 1);
        assert_eq!(json_depth(&json!({"a": [1, {"b": null}]})), 3);
        let mut deep = json!(0);
        for _ in 0..100_000 {
            // Not `json!([deep])`: that serialises `deep`, recursively.
            deep = Value::Array(vec![deep]);
        }
        assert_eq!(json_depth(&deep), 100_000);
        // Dropping it recursively would overflow the stack; leak it instead.
        std::mem::forget(deep);
    }

    #[test]
    fn new_nodes_with_too_deep_dictionaries_are_refused() {
        use serde_json::json;
        let mut deep = json!(1);
        for _ in 0..MAX_DICT_DEPTH {
            deep = json!({ "a": deep });
        }
        let mut n = NewNode {
            driver: "fake-hardware".into(),
            ..Default::default()
        };
        n.extra.insert("ok".into(), deep["a"].clone());
        assert!(n.validate().is_ok());
        n.extra.insert("deep".into(), deep);
        let e = n.validate().unwrap_err().to_string();
        assert!(e.contains("extra") && e.contains("65 levels"), "{e}");
    }

    #[test]
    fn traits_are_custom_or_standard() {
        let std = crate::traits::STANDARD_TRAITS;
        assert!(
            std.windows(2).all(|w| w[0] < w[1]),
            "sorted for binary search"
        );
        assert!(is_valid_trait("CUSTOM_GPU_1"));
        assert!(is_valid_trait("HW_CPU_X86_VMX"));
        assert!(is_valid_trait(std[0]) && is_valid_trait(std[std.len() - 1]));
        assert!(!is_valid_trait("CUSTOM_"));
        assert!(!is_valid_trait("CUSTOM_lower"));
        assert!(!is_valid_trait("HW_NOT_A_TRAIT"));
        assert!(!is_valid_trait(&format!("CUSTOM_{}", "A".repeat(249))));
        assert!(is_valid_trait(&format!("CUSTOM_{}", "A".repeat(248))));
    }

    #[test]
    fn conductor_groups_are_lower_cased_and_checked() {
        assert_eq!(normalize_conductor_group("Rack-A").unwrap(), "rack-a");
        assert!(normalize_conductor_group("rack a").is_err());
    }
}

//! JSON Patch (RFC 6902 `add`, `replace`, `remove`) on a node, as
//! `PATCH /v1/nodes/{ident}` takes it. [`apply_patch_with`] is pure: it
//! either returns the whole patched node or rejects the whole patch. The
//! driver and interface fields are checked against the hardware registry
//! (Ironic's `check_and_update_node_interfaces`).

use crate::error::ApiError;
use crate::fields;
use crate::render::INTERFACES;
use ferric_conductor::drivers::Drivers;
use ferric_core::node::{json_depth, normalize_conductor_group, validate_name, MAX_DICT_DEPTH};
use ferric_core::Node;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use uuid::Uuid;

/// One JSON Patch operation.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchOp {
    pub op: String,
    pub path: String,
    /// `Some(Value::Null)` for an explicit `null`; `None` when absent.
    #[serde(default, deserialize_with = "present")]
    pub value: Option<Value>,
    #[serde(default)]
    pub from: Option<String>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// Ironic's `PATCH_ALLOWED_FIELDS`, for its "Cannot patch" message.
const PATCH_ALLOWED_FIELDS: &[&str] = &[
    "automated_clean",
    "bios_interface",
    "boot_interface",
    "chassis_uuid",
    "conductor_group",
    "console_interface",
    "deploy_interface",
    "description",
    "disable_power_off",
    "driver",
    "driver_info",
    "extra",
    "inspect_interface",
    "instance_info",
    "instance_name",
    "instance_uuid",
    "lessee",
    "maintenance",
    "management_interface",
    "name",
    "network_data",
    "network_interface",
    "owner",
    "power_interface",
    "properties",
    "protected",
    "protected_reason",
    "raid_interface",
    "rescue_interface",
    "resource_class",
    "retired",
    "retired_reason",
    "shard",
    "storage_interface",
    "vendor_interface",
    "parent_node",
    "firmware_interface",
];

/// Fields only ferric's conductor writes.
const READ_ONLY: &[&str] = &[
    "uuid",
    "id",
    "created_at",
    "updated_at",
    "provision_state",
    "target_provision_state",
    "power_state",
    "target_power_state",
    "provision_updated_at",
    "reservation",
    "last_error",
    "driver_internal_info",
    "conductor",
    "links",
    "ports",
    "states",
    "portgroups",
    "volume",
    "console_enabled",
    "clean_step",
    "deploy_step",
    "service_step",
    "raid_config",
    "target_raid_config",
    "inspection_started_at",
    "inspection_finished_at",
    "allocation_uuid",
    "fault",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Replace,
    Remove,
}

/// Decode a JSON pointer into its reference tokens.
fn pointer(path: &str) -> Result<Vec<String>, ApiError> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(ApiError::bad_request(format!(
            "Invalid patch path \"{path}\": a path must start with \"/\"."
        )));
    };
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

/// [`apply_patch_with`] over the built-in hardware types and default config.
pub fn apply_patch(node: &Node, ops: &[PatchOp]) -> Result<Node, ApiError> {
    apply_patch_with(Drivers::builtin(), node, ops)
}

/// Apply `ops` to a copy of `node`. Read-only fields, unknown fields, bad
/// values, impossible operations, an unknown driver and an interface the
/// driver does not support or `drivers` does not enable reject the whole
/// patch with a 400.
pub fn apply_patch_with(drivers: &Drivers, node: &Node, ops: &[PatchOp]) -> Result<Node, ApiError> {
    if ops.is_empty() {
        return Err(ApiError::bad_request("The patch is empty."));
    }
    let mut n = node.clone();
    for p in ops {
        apply_one(&mut n, p)?;
    }
    if n.driver != node.driver {
        // Like Ironic: interfaces not set in this patch reset to the new
        // hardware type's defaults.
        for iface in INTERFACES {
            let key = format!("{iface}_interface");
            let touched = ops.iter().any(|p| p.path == format!("/{key}"));
            if !touched {
                n.interfaces.remove(&key);
            }
        }
    }
    drivers
        .check_and_fill(&n.driver, &mut n.interfaces)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(n)
}

fn apply_one(n: &mut Node, p: &PatchOp) -> Result<(), ApiError> {
    let op = match p.op.as_str() {
        "add" => Op::Add,
        "replace" => Op::Replace,
        "remove" => Op::Remove,
        other => {
            return Err(ApiError::bad_request(format!(
                "Unsupported patch operation \"{other}\" on {}; ferric supports add, replace and remove.",
                p.path
            )))
        }
    };
    if p.from.is_some() {
        return Err(ApiError::bad_request(format!(
            "\"from\" is not allowed in a \"{}\" operation.",
            p.op
        )));
    }
    let value = match (op, &p.value) {
        (Op::Remove, None) => None,
        (Op::Remove, Some(_)) => {
            return Err(ApiError::bad_request(format!(
                "A \"remove\" operation on {} must not have a value.",
                p.path
            )))
        }
        (_, None) => {
            return Err(ApiError::bad_request(format!(
                "'{}' operation on {} requires a value.",
                p.op, p.path
            )))
        }
        (_, Some(v)) => Some(v.clone()),
    };
    let tokens = pointer(&p.path)?;
    let (root, rest) = match tokens.split_first() {
        Some((r, rest)) if !r.is_empty() => (r.as_str(), rest),
        _ => {
            return Err(ApiError::bad_request(format!(
                "Invalid patch path \"{}\".",
                p.path
            )))
        }
    };
    let path = &p.path;
    if READ_ONLY.contains(&root) {
        return Err(ApiError::bad_request(format!(
            "'/{root}' is an internal attribute and can not be updated"
        )));
    }
    let scalar = |rest: &[String]| -> Result<(), ApiError> {
        if rest.is_empty() {
            Ok(())
        } else {
            Err(ApiError::bad_request(format!(
                "Invalid patch path {path}: /{root} is not a dictionary."
            )))
        }
    };
    match root {
        "driver_info" | "properties" | "extra" | "instance_info" => {
            let map = match root {
                "driver_info" => &mut n.driver_info,
                "properties" => &mut n.properties,
                "extra" => &mut n.extra,
                _ => &mut n.instance_info,
            };
            patch_map(map, root, rest, op, value, path)
        }
        "name" => {
            scalar(rest)?;
            n.name = match value {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => {
                    validate_name(&s).map_err(|e| ApiError::bad_request(format!("{e}.")))?;
                    Some(s)
                }
                Some(other) => return Err(type_error(path, "a string or null", &other)),
            };
            Ok(())
        }
        "driver" => {
            scalar(rest)?;
            match value {
                None => Err(ApiError::bad_request(
                    "'/driver' is a mandatory attribute and can not be removed",
                )),
                // Whether a conductor offers it is checked after the patch.
                Some(Value::String(s)) if !s.is_empty() && s.len() <= 255 => {
                    n.driver = s;
                    Ok(())
                }
                Some(Value::String(s)) => Err(ApiError::bad_request(format!(
                    "No valid host was found. Reason: No conductor service registered which supports driver {s}."
                ))),
                Some(other) => Err(type_error(path, "a string", &other)),
            }
        }
        "instance_uuid" => {
            scalar(rest)?;
            let new = match value {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(Uuid::parse_str(&s).map_err(|_| {
                    ApiError::bad_request(format!(
                        "Expected a UUID for instance_uuid but received {s}."
                    ))
                })?),
                Some(other) => return Err(type_error(path, "a UUID string or null", &other)),
            };
            if let (Some(old), Some(new)) = (n.instance_uuid, new) {
                if old != new {
                    return Err(ApiError::conflict(format!(
                        "Node {} is associated with instance {old}.",
                        n.uuid
                    )));
                }
            }
            n.instance_uuid = new;
            Ok(())
        }
        "maintenance" => {
            scalar(rest)?;
            match value {
                None => n.maintenance = false,
                Some(Value::Bool(b)) => n.maintenance = b,
                Some(other) => return Err(type_error(path, "a boolean", &other)),
            }
            if !n.maintenance {
                n.maintenance_reason = None;
            }
            Ok(())
        }
        "maintenance_reason" => {
            scalar(rest)?;
            n.maintenance_reason = match value {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => {
                    crate::extract::check_text(path, &s)?;
                    Some(s)
                }
                Some(other) => return Err(type_error(path, "a string or null", &other)),
            };
            Ok(())
        }
        "conductor_group" => {
            scalar(rest)?;
            n.conductor_group = match value {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => normalize_conductor_group(&s)
                    .map_err(|e| ApiError::bad_request(format!("{e}.")))?,
                Some(other) => return Err(type_error(path, "a string", &other)),
            };
            Ok(())
        }
        iface
            if iface
                .strip_suffix("_interface")
                .is_some_and(|i| INTERFACES.contains(&i)) =>
        {
            scalar(rest)?;
            match value {
                None | Some(Value::Null) => {
                    n.interfaces.remove(iface);
                }
                Some(Value::String(s)) if valid_interface_name(&s) => {
                    n.interfaces.insert(iface.to_string(), s);
                }
                Some(Value::String(s)) => {
                    return Err(ApiError::bad_request(format!(
                        "Invalid {iface} \"{s}\"; expected an interface name such as \"fake\"."
                    )))
                }
                Some(other) => return Err(type_error(path, "a string", &other)),
            }
            Ok(())
        }
        other if fields::NOT_PATCHABLE.contains(&other) => Err(ApiError::bad_request(format!(
            "Cannot patch {path}. Only the following can be updated: {}",
            PATCH_ALLOWED_FIELDS.join(", ")
        ))),
        "network_data" => patch_map(&mut n.attrs.network_data, root, rest, op, value, path),
        other if fields::PATCH_FIELDS.contains(&other) => {
            scalar(rest)?;
            fields::set_attr(&mut n.attrs, other, value)?;
            Ok(())
        }
        other => Err(ApiError::bad_request(format!(
            "Adding a new attribute (/{other}) to the root of the resource is not allowed"
        ))),
    }
}

fn valid_interface_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn type_error(path: &str, expected: &str, got: &Value) -> ApiError {
    ApiError::bad_request(format!(
        "Invalid value for {path}: expected {expected}, got {got}."
    ))
}

/// Apply one operation inside a dictionary field.
fn patch_map(
    map: &mut Map<String, Value>,
    root: &str,
    rest: &[String],
    op: Op,
    value: Option<Value>,
    path: &str,
) -> Result<(), ApiError> {
    // Checked before every operation, not once at the end: a patch of many
    // operations could otherwise nest without bound, and values that deep
    // overflow the stack wherever they are cloned, dropped or serialised.
    let levels_above = rest.len();
    if let Some(v) = &value {
        let depth = levels_above + json_depth(v);
        if depth > MAX_DICT_DEPTH {
            return Err(ApiError::bad_request(format!(
                "Invalid value for {path}: /{root} would nest {depth} levels deep; at most {MAX_DICT_DEPTH} are allowed."
            )));
        }
    }
    let Some((last, parents)) = rest.split_last() else {
        // The whole dictionary.
        match value {
            None => map.clear(),
            Some(Value::Object(o)) => *map = o,
            Some(other) => return Err(type_error(path, "an object", &other)),
        }
        return Ok(());
    };
    let mut cur = map;
    for (i, t) in parents.iter().enumerate() {
        let shown = format!("/{root}/{}", parents[..=i].join("/"));
        cur = match cur.get_mut(t) {
            Some(Value::Object(o)) => o,
            Some(_) => {
                return Err(ApiError::bad_request(format!(
                    "Invalid patch path {path}: {shown} is not a dictionary."
                )))
            }
            None => {
                return Err(ApiError::bad_request(format!(
                    "Invalid patch path {path}: {shown} does not exist."
                )))
            }
        };
    }
    match (op, value) {
        (Op::Add, Some(v)) => {
            cur.insert(last.clone(), v);
        }
        (Op::Replace, Some(v)) => match cur.get_mut(last) {
            Some(slot) => *slot = v,
            None => {
                return Err(ApiError::bad_request(format!(
                    "can't replace a non-existent object '{last}' ({path})"
                )))
            }
        },
        (Op::Remove, _) => {
            if cur.remove(last).is_none() {
                return Err(ApiError::bad_request(format!(
                    "can't remove a non-existent object '{last}' ({path})"
                )));
            }
        }
        (_, None) => {
            return Err(ApiError::bad_request(format!(
                "operation on {path} requires a value."
            )))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ferric_core::{DbTime, ProvisionState};
    use serde_json::json;

    fn node() -> Node {
        Node {
            uuid: Uuid::new_v4(),
            name: Some("n1".into()),
            driver: "fake-hardware".into(),
            driver_info: Map::new(),
            properties: Map::new(),
            extra: Map::new(),
            instance_info: Map::new(),
            instance_uuid: None,
            interfaces: Default::default(),
            driver_internal_info: Default::default(),
            clean_step: Default::default(),
            deploy_step: Default::default(),
            provision_state: ProvisionState::Enroll,
            target_provision_state: None,
            power_state: None,
            target_power_state: None,
            maintenance: false,
            maintenance_reason: None,
            last_error: None,
            conductor_group: String::new(),
            conductor_affinity: None,
            reservation: None,
            lock_epoch: 0,
            lock_waiters: 0,
            revision: 1,
            created_at: DbTime(0),
            updated_at: None,
            provision_updated_at: None,
            attrs: Default::default(),
        }
    }

    fn ops(v: Value) -> Vec<PatchOp> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn name_can_be_set_replaced_and_removed() {
        let n = node();
        let p = apply_patch(
            &n,
            &ops(json!([{"op": "add", "path": "/name", "value": "y"}])),
        )
        .unwrap();
        assert_eq!(p.name.as_deref(), Some("y"));
        let p = apply_patch(&n, &ops(json!([{"op": "remove", "path": "/name"}]))).unwrap();
        assert_eq!(p.name, None);
        let e = apply_patch(
            &n,
            &ops(json!([{"op": "replace", "path": "/name", "value": "bad name"}])),
        );
        assert_eq!(e.unwrap_err().status().as_u16(), 400);
    }

    #[test]
    fn dictionary_keys_are_added_and_removed() {
        let n = node();
        let p = apply_patch(
            &n,
            &ops(json!([
                {"op": "add", "path": "/properties/cpus", "value": 8},
                {"op": "add", "path": "/driver_info/redfish_address", "value": "http://bmc"},
                {"op": "add", "path": "/extra/a~1b", "value": {"c": 1}},
                {"op": "replace", "path": "/extra/a~1b/c", "value": 2},
            ])),
        )
        .unwrap();
        assert_eq!(p.properties["cpus"], 8);
        assert_eq!(p.driver_info["redfish_address"], "http://bmc");
        assert_eq!(p.extra["a/b"], json!({"c": 2}));
        let q = apply_patch(
            &p,
            &ops(json!([{"op": "remove", "path": "/properties/cpus"}])),
        )
        .unwrap();
        assert!(q.properties.is_empty());
        let e = apply_patch(
            &q,
            &ops(json!([{"op": "remove", "path": "/properties/cpus"}])),
        )
        .unwrap_err();
        assert!(e.message().contains("non-existent"), "{}", e.message());
        let e = apply_patch(
            &q,
            &ops(json!([{"op": "replace", "path": "/extra/zz", "value": 1}])),
        )
        .unwrap_err();
        assert_eq!(e.status().as_u16(), 400);
    }

    #[test]
    fn whole_dictionaries_replace_and_must_be_objects() {
        let n = node();
        let p = apply_patch(
            &n,
            &ops(json!([{"op": "replace", "path": "/extra", "value": {"k": "v"}}])),
        )
        .unwrap();
        assert_eq!(p.extra["k"], "v");
        let e = apply_patch(
            &n,
            &ops(json!([{"op": "replace", "path": "/extra", "value": 3}])),
        )
        .unwrap_err();
        assert_eq!(e.status().as_u16(), 400);
    }

    #[test]
    fn read_only_and_unknown_fields_are_rejected() {
        let n = node();
        for path in [
            "/uuid",
            "/provision_state",
            "/power_state",
            "/reservation",
            "/driver_internal_info",
        ] {
            let e = apply_patch(
                &n,
                &ops(json!([{"op": "replace", "path": path, "value": "x"}])),
            )
            .unwrap_err();
            assert!(
                e.message().contains("internal attribute"),
                "{path}: {}",
                e.message()
            );
        }
        let e =
            apply_patch(&n, &ops(json!([{"op": "add", "path": "/foo", "value": 1}]))).unwrap_err();
        assert!(e.message().contains("/foo"));
        let e = apply_patch(
            &n,
            &ops(json!([{"op": "move", "path": "/name", "from": "/extra"}])),
        )
        .unwrap_err();
        assert!(e.message().contains("move"));
        let e = apply_patch(&n, &ops(json!([{"op": "add", "path": "/name"}]))).unwrap_err();
        assert!(e.message().contains("requires a value"));
        let e = apply_patch(
            &n,
            &ops(json!([{"op": "add", "path": "name", "value": "x"}])),
        )
        .unwrap_err();
        assert_eq!(e.status().as_u16(), 400);
    }

    #[test]
    fn a_failing_op_rejects_the_whole_patch() {
        let n = node();
        let e = apply_patch(
            &n,
            &ops(json!([
                {"op": "add", "path": "/name", "value": "changed"},
                {"op": "add", "path": "/maintenance", "value": "yes"},
            ])),
        );
        assert!(e.is_err());
        assert_eq!(n.name.as_deref(), Some("n1"));
    }

    #[test]
    fn instance_uuid_and_maintenance() {
        let n = node();
        let id = Uuid::new_v4();
        let p = apply_patch(
            &n,
            &ops(json!([
                {"op": "add", "path": "/instance_uuid", "value": id.to_string()},
                {"op": "replace", "path": "/maintenance", "value": true},
                {"op": "add", "path": "/maintenance_reason", "value": "broken"},
            ])),
        )
        .unwrap();
        assert_eq!(p.instance_uuid, Some(id));
        assert!(p.maintenance);
        let e = apply_patch(
            &p,
            &ops(json!([{"op": "add", "path": "/instance_uuid", "value": Uuid::new_v4().to_string()}])),
        )
        .unwrap_err();
        // Ironic's NodeAssociated is an InvalidState: 409.
        assert_eq!(e.status().as_u16(), 409);
        let q = apply_patch(
            &p,
            &ops(json!([{"op": "replace", "path": "/maintenance", "value": false}])),
        )
        .unwrap();
        assert!(!q.maintenance);
        assert_eq!(q.maintenance_reason, None);
        let e = apply_patch(
            &n,
            &ops(json!([{"op": "add", "path": "/instance_uuid", "value": "nope"}])),
        )
        .unwrap_err();
        assert_eq!(e.status().as_u16(), 400);
    }

    #[test]
    fn interfaces_and_driver() {
        let n = node();
        let p = apply_patch(
            &n,
            &ops(json!([
                {"op": "replace", "path": "/driver", "value": "redfish"},
                {"op": "replace", "path": "/power_interface", "value": "redfish"},
            ])),
        )
        .unwrap();
        assert_eq!(p.driver, "redfish");
        assert_eq!(p.interfaces["power_interface"], "redfish");
        assert_eq!(p.interfaces["boot_interface"], "ipxe");
        let mut n2 = node();
        n2.interfaces
            .insert("deploy_interface".into(), "fake".into());
        let p = apply_patch(
            &n2,
            &ops(json!([
                {"op": "replace", "path": "/driver", "value": "redfish"},
                {"op": "replace", "path": "/boot_interface", "value": "pxe"},
            ])),
        )
        .unwrap();
        assert_eq!(p.interfaces["deploy_interface"], "direct");
        assert_eq!(p.interfaces["boot_interface"], "pxe");
        // redfish does not support the fake boot interface.
        let e = apply_patch(
            &n2,
            &ops(json!([
                {"op": "replace", "path": "/driver", "value": "redfish"},
                {"op": "replace", "path": "/boot_interface", "value": "fake"},
            ])),
        )
        .unwrap_err();
        assert!(e.to_string().contains("boot_interface"), "{e}");
        let e = apply_patch(
            &n,
            &ops(json!([{"op": "replace", "path": "/driver", "value": "ipmi-x"}])),
        )
        .unwrap_err();
        assert_eq!(e.status().as_u16(), 400);
        let e = apply_patch(&n, &ops(json!([{"op": "remove", "path": "/driver"}]))).unwrap_err();
        assert_eq!(e.status().as_u16(), 400);
    }
}

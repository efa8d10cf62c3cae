//! Deploy templates at deploy time (Ironic's `conductor/steps.py`
//! `_get_deployment_templates`, `_get_steps_from_deployment_templates`,
//! `_get_validated_steps_from_templates`, and `conductor/utils.py`
//! `validate_instance_info_traits`).
//!
//! The templates that apply to a deploy are those named by the node's
//! instance traits (`instance_info.traits`, which must be a subset of the
//! node's traits). Their steps join the user's deploy steps (a user step
//! with the same interface and name wins) and then override or add to the
//! driver's steps like user steps do. They are validated against the
//! interfaces when the verb comes (a 400) and read again when the deploy
//! starts, since a template may change in between.
//!
//! Stored form (written by ferric-api's `deploy_templates`): a resource of
//! kind `DeployTemplate` whose name is the trait and whose body holds
//! `steps`: `[{interface, step, args, priority}]`.

use super::steps::{offered, Phase};
use crate::drivers::{Composed, InterfaceKind, Step};
use ferric_core::Node;
use ferric_store::{NodeIdent, Resource, ResourceKind, Store, StoreError};
use serde_json::{Map, Value};

/// Steps the conductor resolves itself; Ironic leaves them out of the
/// validated template steps.
const RESERVED: [&str; 5] = ["power_on", "power_off", "reboot", "hold", "wait"];

/// The node's instance traits, checked as Ironic's
/// `validate_instance_info_traits` (`Err` is Ironic's message).
pub fn instance_traits(node: &Node) -> Result<Vec<String>, String> {
    let invalid = || {
        format!(
            "Error parsing traits from Node {} instance_info field. A list of strings is expected.",
            node.uuid
        )
    };
    let traits = match node.instance_info.get("traits") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => return Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => return Ok(Vec::new()),
        Some(Value::Array(a)) if a.is_empty() => return Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|t| t.as_str().map(str::to_string).ok_or_else(invalid))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(invalid()),
    };
    let mut missing: Vec<&str> = traits
        .iter()
        .filter(|t| !node.attrs.traits.contains(t))
        .map(String::as_str)
        .collect();
    missing.dedup();
    if !missing.is_empty() {
        return Err(format!(
            "Cannot specify instance traits that are not also set on the node. Node {} is missing traits {}",
            node.uuid,
            missing.join(", ")
        ));
    }
    Ok(traits)
}

/// The templates named by `traits`, in creation order.
async fn templates_named(
    store: &dyn Store,
    traits: &[String],
) -> Result<Vec<Resource>, StoreError> {
    let mut found: Vec<Resource> = Vec::new();
    for t in traits {
        match store
            .get_resource(ResourceKind::DeployTemplate, &NodeIdent::Name(t.clone()))
            .await
        {
            Ok(r) if !found.iter().any(|f| f.uuid == r.uuid) => found.push(r),
            Ok(_) | Err(StoreError::ResourceNotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    found.sort_by_key(|r| (r.created_at, r.uuid));
    Ok(found)
}

/// Python's repr of a template step as Ironic's messages print it.
fn step_repr(s: &Map<String, Value>) -> String {
    fn repr(v: &Value) -> String {
        match v {
            Value::Null => "None".into(),
            Value::Bool(true) => "True".into(),
            Value::Bool(false) => "False".into(),
            Value::Number(n) => n.to_string(),
            Value::String(s) => format!("'{s}'"),
            Value::Array(a) => format!("[{}]", a.iter().map(repr).collect::<Vec<_>>().join(", ")),
            Value::Object(o) => format!(
                "{{{}}}",
                o.iter()
                    .map(|(k, v)| format!("'{k}': {}", repr(v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
    let parts: Vec<String> = ["interface", "step", "args", "priority"]
        .iter()
        .map(|k| format!("'{k}': {}", repr(s.get(*k).unwrap_or(&Value::Null))))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

/// The validated steps of the deploy templates matching the node's
/// instance traits (every priority: 0 disables a driver step). `Err` is
/// Ironic's message (without the verb's prefix).
pub async fn template_steps(
    store: &dyn Store,
    driver: &Composed,
    node: &Node,
) -> Result<Vec<Step>, String> {
    let traits = instance_traits(node)?;
    if traits.is_empty() {
        return Ok(Vec::new());
    }
    let templates = templates_named(store, &traits)
        .await
        .map_err(|e| format!("Failed to read the deploy templates: {e}"))?;
    let available = offered(driver, node, Phase::Deploy);
    let mut errors: Vec<String> = Vec::new();
    let mut out: Vec<Step> = Vec::new();
    for t in &templates {
        let raw = t
            .body
            .get("steps")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for v in raw {
            let Value::Object(m) = v else { continue };
            let name = m.get("step").and_then(Value::as_str).unwrap_or_default();
            if RESERVED.contains(&name) {
                continue;
            }
            let iface = m
                .get("interface")
                .and_then(Value::as_str)
                .and_then(InterfaceKind::parse);
            let priority = m.get("priority").and_then(Value::as_i64).unwrap_or(0);
            let known = iface.and_then(|i| {
                available
                    .iter()
                    .find(|s| s.interface == i && s.step == name)
            });
            let (Some(iface), Some(known)) = (iface, known) else {
                errors.push(format!(
                    "node does not support this deploy step: {}",
                    step_repr(&m)
                ));
                continue;
            };
            if priority > 0 && iface == InterfaceKind::Deploy && name == "deploy" {
                errors.push(
                    "deploy step deploy on interface deploy is a core step and cannot be overridden by user steps. It may be disabled by setting the priority to 0"
                        .to_string(),
                );
            }
            out.push(Step {
                interface: iface,
                step: name.to_string(),
                priority,
                args: m
                    .get("args")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default(),
                abortable: known.abortable,
            });
        }
    }
    let mut duplicates: Vec<String> = Vec::new();
    for (i, s) in out.iter().enumerate() {
        let id = s.label();
        if out[..i].iter().any(|o| o.label() == id) && !duplicates.contains(&id) {
            duplicates.push(id);
        }
    }
    if !duplicates.is_empty() {
        errors.push(format!(
            "deploy steps from all deploy templates matching this node's instance traits cannot have the same interface and step. Duplicate deploy steps for {}",
            duplicates.join(", ")
        ));
    }
    if !errors.is_empty() {
        let names: Vec<&str> = templates.iter().filter_map(|t| t.name.as_deref()).collect();
        return Err(format!(
            "Validation of deploy steps from deploy templates matching this node's instance traits failed. Matching deploy templates: {}. Errors: {}",
            names.join(","),
            errors.join("; ")
        ));
    }
    Ok(out)
}

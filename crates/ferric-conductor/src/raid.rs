//! Ironic's RAID configuration rules (`ironic/drivers/raid_config_schema.json`
//! and `ironic.common.raid.validate_configuration`): the shape a
//! `target_raid_config` must have before a RAID interface accepts it.
//! Messages are the schema validator's, prefixed as Ironic prefixes them
//! ("RAID config validation error: ...").

use serde_json::{Map, Value};

/// Ironic's RAID levels.
pub const RAID_LEVELS: [&str; 9] = ["JBOD", "0", "1", "2", "5", "6", "1+0", "5+0", "6+0"];

const DISK_TYPES: [&str; 2] = ["hdd", "ssd"];
const INTERFACE_TYPES: [&str; 3] = ["sata", "scsi", "sas"];
const LOGICAL_DISK_KEYS: [&str; 10] = [
    "raid_level",
    "size_gb",
    "volume_name",
    "is_root_volume",
    "share_physical_disks",
    "disk_type",
    "interface_type",
    "number_of_physical_disks",
    "controller",
    "physical_disks",
];

/// A JSON value written as Python writes it (the validator's messages show
/// `repr` of the instance).
pub fn py_repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        Value::Array(a) => format!("[{}]", a.iter().map(py_repr).collect::<Vec<_>>().join(", ")),
        Value::Object(o) => format!(
            "{{{}}}",
            o.iter()
                .map(|(k, v)| format!("'{k}': {}", py_repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn list(items: &[&str]) -> String {
    format!(
        "[{}]",
        items
            .iter()
            .map(|s| format!("'{s}'"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn not_type(v: &Value, t: &str) -> String {
    format!("{} is not of type '{t}'", py_repr(v))
}

fn one_of(v: &Value, allowed: &[&str]) -> Result<(), String> {
    match v {
        Value::String(s) if allowed.contains(&s.as_str()) => Ok(()),
        other => Err(format!(
            "{} is not one of {}",
            py_repr(other),
            list(allowed)
        )),
    }
}

fn string(v: &Value) -> Result<(), String> {
    if v.is_string() {
        Ok(())
    } else {
        Err(not_type(v, "string"))
    }
}

fn boolean(v: &Value) -> Result<(), String> {
    if v.is_boolean() {
        Ok(())
    } else {
        Err(not_type(v, "boolean"))
    }
}

fn logical_disk(d: &Value) -> Result<(), String> {
    let Value::Object(m) = d else {
        return Err(not_type(d, "object"));
    };
    for key in ["raid_level", "size_gb"] {
        if !m.contains_key(key) {
            return Err(format!("'{key}' is a required property"));
        }
    }
    let extra: Vec<&String> = m
        .keys()
        .filter(|k| !LOGICAL_DISK_KEYS.contains(&k.as_str()))
        .collect();
    if !extra.is_empty() {
        let names: Vec<String> = extra.iter().map(|k| format!("'{k}'")).collect();
        let verb = if extra.len() == 1 { "was" } else { "were" };
        return Err(format!(
            "Additional properties are not allowed ({} {verb} unexpected)",
            names.join(", ")
        ));
    }
    if m.contains_key("physical_disks") && !m.contains_key("controller") {
        return Err("'controller' is a dependency of 'physical_disks'".into());
    }
    for (k, v) in m {
        match k.as_str() {
            "raid_level" => one_of(v, &RAID_LEVELS)?,
            "size_gb" => {
                let ok = match v {
                    Value::Number(n) => n.as_u64().is_some(),
                    Value::String(s) => s == "MAX",
                    _ => false,
                };
                if !ok {
                    return Err(format!(
                        "{} is not valid under any of the given schemas",
                        py_repr(v)
                    ));
                }
            }
            "volume_name" | "controller" => string(v)?,
            "is_root_volume" | "share_physical_disks" => boolean(v)?,
            "disk_type" => one_of(v, &DISK_TYPES)?,
            "interface_type" => one_of(v, &INTERFACE_TYPES)?,
            "number_of_physical_disks" => match v {
                Value::Number(n) if n.is_i64() || n.is_u64() => {
                    if n.as_i64().is_some_and(|i| i <= 0) {
                        return Err(format!("{n} is less than or equal to the minimum of 0"));
                    }
                }
                other => return Err(not_type(other, "integer")),
            },
            "physical_disks" => {
                let ok = match v {
                    Value::Array(a) => {
                        a.iter().all(Value::is_string)
                            || (a.len() >= 2 && a.iter().all(Value::is_object))
                    }
                    _ => false,
                };
                if !ok {
                    return Err(format!(
                        "{} is not valid under any of the given schemas",
                        py_repr(v)
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Check `config` against Ironic's RAID schema and its one-root-volume
/// rule. The error is Ironic's message.
pub fn validate_raid_config(config: &Map<String, Value>) -> Result<(), String> {
    let schema = |m: String| format!("RAID config validation error: {m}");
    let Some(disks) = config.get("logical_disks") else {
        return Err(schema("'logical_disks' is a required property".into()));
    };
    let extra: Vec<String> = config
        .keys()
        .filter(|k| *k != "logical_disks")
        .map(|k| format!("'{k}'"))
        .collect();
    if !extra.is_empty() {
        let verb = if extra.len() == 1 { "was" } else { "were" };
        return Err(schema(format!(
            "Additional properties are not allowed ({} {verb} unexpected)",
            extra.join(", ")
        )));
    }
    let Value::Array(disks) = disks else {
        return Err(schema(not_type(disks, "array")));
    };
    if disks.is_empty() {
        return Err(schema("[] is too short".into()));
    }
    for d in disks {
        logical_disk(d).map_err(schema)?;
    }
    let roots = disks
        .iter()
        .filter(|d| d.get("is_root_volume") == Some(&Value::Bool(true)))
        .count();
    if roots > 1 {
        return Err(format!(
            "Raid config cannot have more than one root volume. {roots} root volumes were specified"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(v: Value) -> Result<(), String> {
        validate_raid_config(v.as_object().unwrap())
    }

    #[test]
    fn valid_configs_pass() {
        check(
            json!({"logical_disks": [{"raid_level": "1", "size_gb": 100, "is_root_volume": true}]}),
        )
        .unwrap();
        check(json!({"logical_disks": [
            {"raid_level": "5", "size_gb": "MAX", "disk_type": "ssd", "interface_type": "sas",
             "number_of_physical_disks": 3, "controller": "RAID.1", "physical_disks": ["a", "b", "c"],
             "volume_name": "data", "share_physical_disks": false}
        ]}))
        .unwrap();
    }

    #[test]
    fn each_rule_has_the_validators_message() {
        let e = |v: Value| check(v).unwrap_err();
        let p = "RAID config validation error: ";
        assert_eq!(
            e(json!({})),
            format!("{p}'logical_disks' is a required property")
        );
        assert_eq!(
            e(json!({"logical_disks": []})),
            format!("{p}[] is too short")
        );
        assert_eq!(
            e(json!({"logical_disks": [], "x": 1})),
            format!("{p}Additional properties are not allowed ('x' was unexpected)")
        );
        assert_eq!(
            e(json!({"logical_disks": [{"size_gb": 1}]})),
            format!("{p}'raid_level' is a required property")
        );
        assert_eq!(
            e(json!({"logical_disks": [{"raid_level": "10", "size_gb": 1}]})),
            format!("{p}'10' is not one of ['JBOD', '0', '1', '2', '5', '6', '1+0', '5+0', '6+0']")
        );
        assert_eq!(
            e(json!({"logical_disks": [{"raid_level": "1", "size_gb": -1}]})),
            format!("{p}-1 is not valid under any of the given schemas")
        );
        assert_eq!(
            e(
                json!({"logical_disks": [{"raid_level": "1", "size_gb": 1, "physical_disks": ["a"]}]})
            ),
            format!("{p}'controller' is a dependency of 'physical_disks'")
        );
        assert_eq!(
            e(
                json!({"logical_disks": [{"raid_level": "1", "size_gb": 1, "number_of_physical_disks": 0}]})
            ),
            format!("{p}0 is less than or equal to the minimum of 0")
        );
        assert_eq!(
            e(json!({"logical_disks": [
                {"raid_level": "1", "size_gb": 1, "is_root_volume": true},
                {"raid_level": "0", "size_gb": 1, "is_root_volume": true}
            ]})),
            "Raid config cannot have more than one root volume. 2 root volumes were specified"
        );
    }
}

//! Secrets in node documents, shown as `******` wherever a node leaves the
//! process: the API's node documents (GET, lists, PATCH answers, the change
//! feed, the agent's lookup) and the notification payloads.
//!
//! Ironic's rules (api/controllers/v1/node.py `node_sanitize`,
//! objects/notification.py `mask_secrets`): oslo.utils'
//! `mask_dict_password` on `instance_info` and `driver_internal_info` (a key
//! containing one of [`SANITIZE_KEYS`], case-insensitively, has its value
//! replaced whatever it is; nested objects, also inside arrays, are masked
//! the same way), then `instance_info.configdrive` (which may be an object)
//! and a non-empty `instance_info.image_url` (a temporary URL) are masked
//! whole. `driver_internal_info.agent_secret_token` is masked by its key.
//!
//! Not done: oslo's `mask_password` on free-text values (`password=...`
//! inside a string); ferric stores no command lines.

use serde_json::{Map, Value};

/// What a secret is shown as.
pub const MASK: &str = "******";

/// oslo.utils' `_SANITIZE_KEYS` (strutils), lower case: a key containing
/// any of these holds a secret.
pub const SANITIZE_KEYS: &[&str] = &[
    "adminpass",
    "admin_pass",
    "password",
    "admin_password",
    "auth_token",
    "new_pass",
    "auth_password",
    "secret_uuid",
    "secret",
    "sys_pswd",
    "token",
    "configdrive",
    "chappassword",
    "encrypted_key",
    "private_key",
    "fernetkey",
    "sslkey",
    "passphrase",
    "cephclusterfsid",
    "octaviaheartbeatkey",
    "rabbitcookie",
    "cephmanilaclientkey",
    "pacemakerremoteauthkey",
    "designaterndckey",
    "cephadminkey",
    "heatauthencryptionkey",
    "cephclientkey",
    "keystonecredential",
    "barbicansimplecryptokek",
    "cephrgwkey",
    "swifthashsuffix",
    "migrationsshkey",
    "cephmdskey",
    "cephmonkey",
    "chapsecret",
];

/// Broader markers ferric adds to oslo's list, for BMC credentials named
/// freely in `driver_info` (`bmc_passwd`, `ipmi_kg_key`, `ssh_key`).
const EXTRA_MARKERS: &[&str] = &["key", "passwd", "pswd"];

/// `driver_internal_info` keys of an agent's session (Ironic's
/// `wipe_token_and_url`): they exist only while the node is in a state
/// where an agent may run (`ExclusiveTask::process_event` removes them).
pub const AGENT_SESSION_KEYS: [&str; 4] = [
    "agent_secret_token",
    "agent_secret_token_pregenerated",
    "agent_url",
    "agent_verify_ca",
];

/// Whether `key` names a secret (oslo's rule: a sanitize key is a substring
/// of the lower-cased key; plus [`EXTRA_MARKERS`]).
pub fn is_sanitized_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    SANITIZE_KEYS
        .iter()
        .chain(EXTRA_MARKERS)
        .any(|s| k.contains(s))
}

/// oslo's `mask_dict_password`: every value under a secret key becomes
/// [`MASK`]; objects (also inside arrays) are masked recursively.
pub fn mask_dict(map: &Map<String, Value>) -> Map<String, Value> {
    map.iter()
        .map(|(k, v)| {
            let v = match v {
                Value::Object(inner) => Value::Object(mask_dict(inner)),
                _ if is_sanitized_key(k) => Value::String(MASK.to_string()),
                other => mask_nested(other),
            };
            (k.clone(), v)
        })
        .collect()
}

/// [`mask_dict`], leaving the top-level keys in `keep` as they are (the
/// config drive the agent must write).
pub fn mask_dict_keeping(map: &Map<String, Value>, keep: &[&str]) -> Map<String, Value> {
    let mut m = mask_dict(map);
    for k in keep {
        if let Some(v) = map.get(*k) {
            m.insert((*k).to_string(), v.clone());
        }
    }
    m
}

/// Objects inside arrays are masked too (oslo's `_deep_mask`).
fn mask_nested(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(mask_dict(m)),
        Value::Array(items) => Value::Array(items.iter().map(mask_nested).collect()),
        other => other.clone(),
    }
}

/// `instance_info` as shown: [`mask_dict`], then `configdrive` (present)
/// and `image_url` (non-empty) whole.
pub fn instance_info(info: &Map<String, Value>) -> Map<String, Value> {
    let mut m = mask_dict(info);
    if let Some(cd) = m.get_mut("configdrive") {
        *cd = Value::String(MASK.to_string());
    }
    if let Some(url) = m.get_mut("image_url") {
        if truthy(url) {
            *url = Value::String(MASK.to_string());
        }
    }
    m
}

/// `driver_internal_info` as shown: [`mask_dict`] (the agent token, any
/// other secret a driver keeps there).
pub fn driver_internal_info(info: &Map<String, Value>) -> Map<String, Value> {
    mask_dict(info)
}

/// Python's truthiness of a JSON value.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("test input is an object"),
        }
    }

    #[test]
    fn instance_info_secrets_configdrive_and_image_url_are_masked() {
        let info = obj(json!({
            "image_source": "http://img/x.qcow2",
            "image_password": "hunter2",
            "Image_Auth_Token": "t",
            "configdrive": {"meta_data": {"uuid": "u"}, "user_data": "#!/bin/sh"},
            "image_url": "http://temp/url?sig=1",
            "nested": {"admin_pass": "p", "fine": 1},
            "list": [{"passphrase": "x", "k": "v"}, "plain"],
            "root_gb": 10,
        }));
        let m = instance_info(&info);
        assert_eq!(m["image_source"], "http://img/x.qcow2");
        assert_eq!(m["image_password"], MASK);
        assert_eq!(m["Image_Auth_Token"], MASK);
        assert_eq!(
            m["configdrive"], MASK,
            "an object configdrive is masked whole"
        );
        assert_eq!(m["image_url"], MASK);
        assert_eq!(m["nested"], json!({"admin_pass": MASK, "fine": 1}));
        assert_eq!(m["list"], json!([{"passphrase": MASK, "k": "v"}, "plain"]));
        assert_eq!(m["root_gb"], 10);
        let m = instance_info(&obj(json!({"configdrive": "H4sI...", "image_url": ""})));
        assert_eq!(m["configdrive"], MASK);
        assert_eq!(m["image_url"], "", "an empty image_url stays");
    }

    #[test]
    fn bmc_secrets_are_masked_at_any_depth() {
        let info = obj(json!({
            "ipmi_password": "x", "bmc_passwd": "y", "ipmi_kg_key": "k",
            "redfish_username": "u", "nested": {"password": "p", "deeper": [{"token": "t"}]},
            "deploy_kernel": "http://k", "ipmi_address": "10.0.0.1",
        }));
        let m = mask_dict(&info);
        for k in ["ipmi_password", "bmc_passwd", "ipmi_kg_key"] {
            assert_eq!(m[k], MASK, "{k}");
        }
        assert_eq!(
            m["nested"],
            json!({"password": MASK, "deeper": [{"token": MASK}]})
        );
        for k in ["redfish_username", "deploy_kernel", "ipmi_address"] {
            assert_eq!(m[k], info[k], "{k}");
        }
        let kept = mask_dict_keeping(
            &obj(json!({"configdrive": {"user_data": "x"}, "image_password": "p"})),
            &["configdrive"],
        );
        assert_eq!(kept["configdrive"], json!({"user_data": "x"}));
        assert_eq!(kept["image_password"], MASK);
    }

    #[test]
    fn the_agent_token_is_masked_in_driver_internal_info() {
        let dii = obj(json!({
            "agent_secret_token": "abc",
            "agent_secret_token_pregenerated": true,
            "agent_url": "http://10.0.0.5:9999",
            "deploy_steps": [{"step": "write_image", "args": {}}],
        }));
        let m = driver_internal_info(&dii);
        assert_eq!(m["agent_secret_token"], MASK);
        assert_eq!(m["agent_secret_token_pregenerated"], MASK);
        assert_eq!(m["agent_url"], "http://10.0.0.5:9999");
        assert_eq!(m["deploy_steps"], dii["deploy_steps"]);
    }
}

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
    SANITIZE_KEYS
        .iter()
        .chain(EXTRA_MARKERS)
        .any(|s| contains_ignore_ascii_case(key, s))
}

/// Whether `hay` contains `needle` (lower case ASCII), ignoring ASCII case:
/// `hay.to_ascii_lowercase().contains(needle)` without the allocation.
fn contains_ignore_ascii_case(hay: &str, needle: &str) -> bool {
    let (hay, needle) = (hay.as_bytes(), needle.as_bytes());
    needle.is_empty()
        || hay
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
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

/// Which masking a [`Masked`] applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Masking {
    /// [`mask_dict`] (`driver_info`, `driver_internal_info`).
    Dict,
    /// [`instance_info`].
    InstanceInfo,
}

/// A dictionary serialized as [`mask_dict`] or [`instance_info`] would
/// return it, written straight to the serializer (no masked copy is built):
/// the same keys, in the same order, with the same values.
#[derive(Debug, Clone, Copy)]
pub struct Masked<'a> {
    pub map: &'a Map<String, Value>,
    pub how: Masking,
}

impl serde::Serialize for Masked<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.map.len()))?;
        for (k, v) in self.map {
            if self.how == Masking::InstanceInfo {
                // `configdrive` masked whole; a truthy `image_url` too (the
                // masked value is truthy when the original is, or when a
                // scalar under a secret key became the mask).
                let whole = match k.as_str() {
                    "configdrive" => true,
                    "image_url" => match v {
                        Value::Object(o) => !o.is_empty(),
                        _ => is_sanitized_key(k) || truthy(v),
                    },
                    _ => false,
                };
                if whole {
                    m.serialize_entry(k, MASK)?;
                    continue;
                }
            }
            match v {
                Value::Object(inner) => m.serialize_entry(
                    k,
                    &Masked {
                        map: inner,
                        how: Masking::Dict,
                    },
                )?,
                _ if is_sanitized_key(k) => m.serialize_entry(k, MASK)?,
                other => m.serialize_entry(k, &Nested(other))?,
            }
        }
        m.end()
    }
}

/// [`mask_nested`] while serializing.
struct Nested<'a>(&'a Value);

impl serde::Serialize for Nested<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        match self.0 {
            Value::Object(map) => Masked {
                map,
                how: Masking::Dict,
            }
            .serialize(s),
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&Nested(item))?;
                }
                seq.end()
            }
            other => other.serialize(s),
        }
    }
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

    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let key = prop::sample::select(vec![
            "password",
            "Admin_Pass",
            "configdrive",
            "image_url",
            "name",
            "ssh_KEY",
            "plain",
            "x",
            "agent_secret_token",
            "",
        ]);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            prop::sample::select(vec!["", "s", "http://x"]).prop_map(|s| json!(s)),
        ];
        leaf.prop_recursive(4, 32, 5, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(key.clone().prop_map(str::to_string), inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// The streaming [`Masked`] writes exactly what serializing the
        /// masked copy writes, for both kinds of masking.
        #[test]
        fn streaming_masking_writes_the_masked_copy(v in json_value()) {
            let map = match v {
                Value::Object(m) => m,
                other => [("image_url".to_string(), other.clone()), ("k".to_string(), other)]
                    .into_iter()
                    .collect(),
            };
            let streamed = |how| serde_json::to_string(&Masked { map: &map, how }).unwrap_or_default();
            proptest::prop_assert_eq!(
                streamed(Masking::Dict),
                serde_json::to_string(&mask_dict(&map)).unwrap_or_default()
            );
            proptest::prop_assert_eq!(
                streamed(Masking::InstanceInfo),
                serde_json::to_string(&instance_info(&map)).unwrap_or_default()
            );
        }
    }

    #[test]
    fn keys_are_matched_ignoring_case_anywhere() {
        assert!(is_sanitized_key("My_PassWord_2"));
        assert!(is_sanitized_key("TOKEN"));
        assert!(!is_sanitized_key("plain"));
        assert!(!is_sanitized_key(""));
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

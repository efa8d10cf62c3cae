//! Secrets in node documents: which keys hold one, and how they are shown
//! (Ironic's `strutils.mask_dict_password`, "******").

use serde_json::{Map, Value};

/// The masked value shown for a secret.
pub const MASK: &str = "******";

/// `driver_internal_info` keys of an agent's session (Ironic's
/// `wipe_token_and_url`): they go when the node leaves the agent states.
pub const AGENT_SESSION_KEYS: [&str; 4] = [
    "agent_secret_token",
    "agent_secret_token_pregenerated",
    "agent_url",
    "agent_verify_ca",
];

/// Marker substrings of secret keys (Ironic masks keys like these).
const SECRET_MARKERS: &[&str] = &["password", "secret", "token", "key"];

/// Whether a key holds a secret.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    SECRET_MARKERS.iter().any(|m| k.contains(m))
}

/// `map` with the values of secret keys replaced by [`MASK`] (nulls stay).
pub fn mask(map: &Map<String, Value>) -> Map<String, Value> {
    mask_except(map, &[])
}

/// [`mask`], leaving the keys in `keep` as they are.
pub fn mask_except(map: &Map<String, Value>, keep: &[&str]) -> Map<String, Value> {
    map.iter()
        .map(|(k, v)| {
            let v = if is_secret_key(k) && !v.is_null() && !keep.contains(&k.as_str()) {
                Value::String(MASK.to_string())
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_keys_are_masked() {
        let m = json!({"ipmi_password": "x", "redfish_username": "u", "agent_secret_token": "t", "k": null, "ssh_key": "k"});
        let out = mask(m.as_object().unwrap());
        assert_eq!(out["ipmi_password"], MASK);
        assert_eq!(out["agent_secret_token"], MASK);
        assert_eq!(out["ssh_key"], MASK);
        assert_eq!(out["redfish_username"], "u");
        assert!(out["k"].is_null());
    }
}

//! The config drive: what the instance reads at first boot (cloud-init's
//! "config-2" data source), as Ironic builds it
//! (`conductor/configdrive_utils.py`, openstacksdk's `baremetal.configdrive`).
//!
//! `instance_info.configdrive` is one of:
//! * a JSON object with `meta_data`, `network_data`, `user_data` and
//!   `vendor_data` (all optional): ferric builds an ISO 9660 image labelled
//!   `config-2` holding `openstack/{2012-08-10,latest}/meta_data.json`,
//!   `network_data.json`, `vendor_data2.json` and `user_data`, then gzips it
//!   and encodes it in base64 — what the agent expects;
//! * a URL (the agent downloads it) or an already gzipped and base64-encoded
//!   image: passed through unchanged.
//!
//! The ISO writer (decision): `xorrisofs` from Debian's xorriso, called with
//! the same options openstacksdk gives genisoimage/mkisofs/xorrisofs
//! (Rock Ridge and Joliet, volume id `config-2`). xorriso is maintained by
//! the GNU project, is in every distribution, and is what cloud images and
//! openstacksdk already use; the Rust ISO 9660 writers on crates.io are
//! young and lack Rock Ridge/Joliet, which cloud-init's reader of long file
//! names needs. It runs with a fixed argument list (no shell), in a private
//! temporary directory, with a timeout, and is killed if it overruns.

use base64::Engine;
use ferric_core::Node;
use flate2::write::GzEncoder;
use flate2::Compression;
use serde_json::{Map, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::process::Command;

/// The ISO writer's program.
pub const ISO_WRITER: &str = "xorrisofs";

/// How long the ISO writer may run.
const WRITER_TIMEOUT: Duration = Duration::from_secs(60);

/// The largest config drive the agent accepts (its partition is 64 MiB).
pub const MAX_SIZE: usize = 64 * 1024 * 1024;

/// Keys a config drive object may have (Ironic's `_CONFIG_DRIVE_SCHEMA`).
const KEYS: [&str; 4] = ["meta_data", "network_data", "user_data", "vendor_data"];

const B64: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\n\r";

/// Check a `configdrive` value as Ironic's API does; `Err` is the 400 text.
pub fn validate(value: &Value) -> Result<(), String> {
    match value {
        Value::Null => Ok(()),
        Value::String(s) => {
            if s.contains("://") || s.chars().all(|c| B64.contains(c)) {
                Ok(())
            } else {
                Err("Invalid configdrive format: it is neither a JSON, nor a URL, nor a base64 string".into())
            }
        }
        Value::Object(m) => {
            for (k, v) in m {
                if !KEYS.contains(&k.as_str()) {
                    return Err(format!(
                        "Invalid configdrive format: Additional properties are not allowed ('{k}' was unexpected)"
                    ));
                }
                let ok = match k.as_str() {
                    "user_data" => matches!(
                        v,
                        Value::Object(_) | Value::Array(_) | Value::String(_) | Value::Null
                    ),
                    _ => matches!(v, Value::Object(_) | Value::Null),
                };
                if !ok {
                    return Err(format!(
                        "Invalid configdrive format: {v} is not valid under any of the given schemas ('{k}')"
                    ));
                }
            }
            Ok(())
        }
        other => Err(format!(
            "Invalid configdrive format: {other} is not valid under any of the given schemas"
        )),
    }
}

/// The config drive to hand the agent for `node`: `None` without one; a
/// URL or an encoded image unchanged; an object built into an image.
pub async fn image_for(node: &Node) -> Result<Option<String>, String> {
    match node.instance_info.get("configdrive") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Object(m)) => build(node, m).await.map(Some),
        Some(other) => Err(format!("Invalid configdrive format: {other}")),
    }
}

/// Build the gzipped, base64-encoded ISO image of a config drive object.
/// `meta_data` gets the node's `uuid` and `name` unless it has them.
pub async fn build(node: &Node, cd: &Map<String, Value>) -> Result<String, String> {
    validate(&Value::Object(cd.clone()))?;
    let mut meta = match cd.get("meta_data") {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    meta.entry("uuid")
        .or_insert_with(|| Value::String(node.uuid.to_string()));
    if let Some(name) = &node.name {
        meta.entry("name")
            .or_insert_with(|| Value::String(name.clone()));
    }
    let user_data: Option<Vec<u8>> = match cd.get("user_data") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.as_bytes().to_vec()),
        Some(v) => Some(v.to_string().into_bytes()),
    };
    let non_empty = |k: &str| match cd.get(k) {
        Some(Value::Object(m)) if !m.is_empty() => Some(Value::Object(m.clone())),
        _ => None,
    };
    let dir = TempDir::new()?;
    let root = dir.path().join("root");
    for version in ["2012-08-10", "latest"] {
        let sub = root.join("openstack").join(version);
        std::fs::create_dir_all(&sub).map_err(|e| format!("cannot build the config drive: {e}"))?;
        let mut files: Vec<(&str, Vec<u8>)> = vec![(
            "meta_data.json",
            Value::Object(meta.clone()).to_string().into_bytes(),
        )];
        if let Some(nd) = non_empty("network_data") {
            files.push(("network_data.json", nd.to_string().into_bytes()));
        }
        if let Some(vd) = non_empty("vendor_data") {
            files.push(("vendor_data2.json", vd.to_string().into_bytes()));
        }
        if let Some(ud) = &user_data {
            files.push(("user_data", ud.clone()));
        }
        for (name, bytes) in files {
            std::fs::write(sub.join(name), bytes)
                .map_err(|e| format!("cannot build the config drive: {e}"))?;
        }
    }
    let iso = dir.path().join("configdrive.iso");
    let mut cmd = Command::new(ISO_WRITER);
    cmd.arg("-o")
        .arg(&iso)
        .args([
            "-ldots",
            "-allow-lowercase",
            "-allow-multidot",
            "-l",
            "-publisher",
            "ferric",
            "-quiet",
            "-J",
            "-r",
            "-V",
            "config-2",
        ])
        .arg(&root)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = match tokio::time::timeout(WRITER_TIMEOUT, cmd.output()).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => {
            return Err(format!(
                "cannot run {ISO_WRITER} to build the config drive (install xorriso): {e}"
            ))
        }
        Err(_) => {
            return Err(format!(
                "{ISO_WRITER} did not build the config drive within {}s",
                WRITER_TIMEOUT.as_secs()
            ))
        }
    };
    if !out.status.success() {
        return Err(format!(
            "{ISO_WRITER} failed to build the config drive ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let raw = std::fs::read(&iso).map_err(|e| format!("cannot read the config drive: {e}"))?;
    if raw.len() > MAX_SIZE {
        return Err(format!(
            "Config drive size exceeds maximum limit of 64MiB: {} bytes",
            raw.len()
        ));
    }
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&raw)
        .and_then(|_| gz.finish())
        .map(|z| base64::engine::general_purpose::STANDARD.encode(z))
        .map_err(|e| format!("cannot compress the config drive: {e}"))
}

/// A private temporary directory, removed when dropped (the production
/// build carries no `tempfile`).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir, String> {
        let p = std::env::temp_dir().join(format!("ferric-configdrive-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir(&p).map_err(|e| format!("cannot create {}: {e}", p.display()))?;
        Ok(TempDir(p))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!(path = %self.0.display(), error.message = %e, "cannot remove a config drive's temporary directory");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;
    use std::io::Read;

    fn node() -> Node {
        serde_json::from_value(json!({
            "uuid": "8a4b5c1e-2f3d-4e5f-9a8b-7c6d5e4f3a2b",
            "name": "n1", "driver": "fake-hardware", "driver_info": {}, "properties": {},
            "extra": {}, "instance_info": {}, "instance_uuid": null, "interfaces": {},
            "provision_state": "deploying", "target_provision_state": "active",
            "power_state": null, "target_power_state": null, "maintenance": false,
            "maintenance_reason": null, "last_error": null, "conductor_group": "",
            "conductor_affinity": null, "reservation": null, "lock_epoch": 0,
            "lock_waiters": 0, "revision": 0, "created_at": 0, "updated_at": null,
            "provision_updated_at": null
        }))
        .unwrap()
    }

    #[test]
    fn validation_follows_ironic_schema() {
        assert!(validate(&json!("http://x/cd.iso")).is_ok());
        assert!(validate(&json!("H4sIAAAA+/==")).is_ok());
        assert!(validate(&json!("not base64!"))
            .unwrap_err()
            .contains("neither a JSON"));
        assert!(validate(&json!({"user_data": "#cloud-config", "meta_data": {}})).is_ok());
        assert!(validate(&json!({"bogus": 1}))
            .unwrap_err()
            .contains("'bogus' was unexpected"));
        assert!(validate(&json!({"meta_data": "x"}))
            .unwrap_err()
            .contains("meta_data"));
        assert!(validate(&json!(3)).is_err());
    }

    #[tokio::test]
    async fn builds_a_config_2_iso() {
        if which(ISO_WRITER).is_none() {
            // CI installs xorriso (.ci/run) and must build the image; a
            // developer machine without it gets the same failure as
            // production, which we check here.
            assert!(
                std::env::var_os("CI").is_none(),
                "{ISO_WRITER} is missing in CI: .ci/run installs xorriso"
            );
            let e = build(&node(), &Map::new()).await.unwrap_err();
            assert!(e.contains("install xorriso"), "{e}");
            return;
        }
        let cd = json!({"user_data": "#cloud-config\nhostname: hello\n", "meta_data": {"k": "v"},
                        "network_data": {"links": []}});
        let encoded = build(&node(), cd.as_object().unwrap()).await.unwrap();
        let gz = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        let mut iso = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut iso)
            .unwrap();
        // ISO 9660: the primary volume descriptor at 16 × 2048, volume id at +40.
        let pvd = &iso[16 * 2048..17 * 2048];
        assert_eq!(&pvd[1..6], b"CD001");
        assert_eq!(std::str::from_utf8(&pvd[40..48]).unwrap(), "config-2");
        let text = String::from_utf8_lossy(&iso);
        assert!(
            text.contains("hostname: hello"),
            "user_data is in the image"
        );
        assert!(
            text.contains("8a4b5c1e-2f3d-4e5f-9a8b-7c6d5e4f3a2b"),
            "meta_data has the node's uuid"
        );
        assert!(text.contains("\"name\":\"n1\""), "and its name");
    }

    fn which(prog: &str) -> Option<PathBuf> {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(prog))
                .find(|p| p.is_file())
        })
    }
}

//! The boot ISO of the `redfish-virtual-media` boot interface (issue 15):
//! Ironic's `image_utils.prepare_deploy_iso`, published from ferric's own
//! listener instead of Ironic's `[deploy] http_root`.
//!
//! * `driver_info.deploy_iso` (or `rescue_iso`) given: that ISO, fetched
//!   into the image cache and served as it is;
//! * else `deploy_kernel` + `deploy_ramdisk` (or the rescue pair): a BIOS +
//!   UEFI ISO built with [`super::iso`] around them and the ramdisk's kernel
//!   command line (`kernel_append_params`, default Ironic's `[redfish]`
//!   one, then `ipa-api-url` and `boot_method=vmedia`).
//!
//! The ISO is a pure function of the node's row and the cached images: its
//! file is named by the node and a hash of its inputs
//! (`<state_dir>/netboot/vmedia/boot-<node>-<key>.iso`). Any `ferric serve`
//! of a cluster that receives the BMC's `GET /boot/nodes/<node>/boot.iso`
//! builds it on a miss, as it fetches a kernel on a cache miss: no
//! conductor-affinity RPC, no shared file system. The conductor builds it
//! before it inserts the URL, so a bad image fails the verb, not the boot.

use super::cache::{hex, CachedFile};
use super::iso::{build_boot_iso, IsoTools};
use super::{NetBoot, NetbootError, Ramdisk};
use ferric_core::Node;
use ferric_store::{NodeIdent, Store};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use uuid::Uuid;

/// The boot interface these ISOs are for.
pub const BOOT_INTERFACE: &str = "redfish-virtual-media";

/// Ironic's `[redfish] kernel_append_params` default.
pub const DEFAULT_APPEND: &str = "nofb vga=normal";

/// Where the ramdisk of `node` comes from, for virtual media.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IsoSource {
    /// A ready ISO (`driver_info.<mode>_iso`).
    Iso(String),
    /// A kernel and a ramdisk to build the ISO from.
    KernelRamdisk { kernel: String, ramdisk: String },
}

fn checked_url(node: &Node, key: &str) -> Result<Option<String>, NetbootError> {
    match node.driver_info.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(u)) if u.is_empty() => Ok(None),
        Some(Value::String(u))
            if u.starts_with("http://") || u.starts_with("https://") || u.starts_with("file:///") =>
        {
            Ok(Some(u.clone()))
        }
        Some(other) => Err(NetbootError::Invalid(format!(
            "driver_info.{key} of node {} must be an http://, https:// or file:/// URL, not {other}",
            node.uuid
        ))),
    }
}

impl NetBoot {
    /// What the BMC is given: the node's ISO on this listener.
    pub fn boot_iso_url(&self, node: Uuid) -> String {
        format!("{}/boot/nodes/{node}/boot.iso", self.base())
    }

    fn vmedia_dir(&self) -> PathBuf {
        self.config.state_dir.join("netboot/vmedia")
    }

    /// Ironic's `_parse_driver_info` for virtual media: `<mode>_iso`, else
    /// both `<mode>_kernel` and `<mode>_ramdisk` (Ironic's message names
    /// the missing ones).
    pub fn iso_source(node: &Node, ramdisk: Ramdisk) -> Result<IsoSource, NetbootError> {
        let p = ramdisk.prefix();
        if let Some(iso) = checked_url(node, &format!("{p}_iso"))? {
            return Ok(IsoSource::Iso(iso));
        }
        let kernel = checked_url(node, &format!("{p}_kernel"))?;
        let initrd = checked_url(node, &format!("{p}_ramdisk"))?;
        match (kernel, initrd) {
            (Some(kernel), Some(ramdisk)) => Ok(IsoSource::KernelRamdisk { kernel, ramdisk }),
            (k, r) => {
                let missing: Vec<String> = [(k.is_none(), "kernel"), (r.is_none(), "ramdisk")]
                    .into_iter()
                    .filter(|(m, _)| *m)
                    .map(|(_, part)| format!("'{p}_{part}'"))
                    .collect();
                Err(NetbootError::Invalid(format!(
                    "Error validating Redfish virtual media. Some parameters were missing in node's driver_info. Missing are: [{}]",
                    missing.join(", ")
                )))
            }
        }
    }

    /// The ramdisk's kernel command line on virtual media (Ironic's
    /// `ramdisk_params`: `ipa-api-url`, `boot_method=vmedia`).
    pub fn vmedia_params(&self, node: &Node) -> String {
        format!(
            "{} ipa-api-url={} boot_method=vmedia",
            self.append_params(node, DEFAULT_APPEND),
            self.agent_api_url()
        )
        .trim()
        .to_string()
    }

    /// The ISO `node` boots for `ramdisk`: the given one, or one built (on a
    /// miss) from its kernel and ramdisk. `refresh`: re-fetch old http(s)
    /// images first (the conductor does, when it prepares the boot).
    pub async fn boot_iso(
        &self,
        node: &Node,
        ramdisk: Ramdisk,
        refresh: bool,
    ) -> Result<CachedFile, NetbootError> {
        let fetch = |url: String| async move {
            self.cache
                .get(&url, refresh)
                .await
                .map_err(|e| NetbootError::Unavailable(e.0))
        };
        let (kernel, initrd) = match Self::iso_source(node, ramdisk)? {
            IsoSource::Iso(url) => return fetch(url).await,
            IsoSource::KernelRamdisk { kernel, ramdisk } => {
                (fetch(kernel).await?, fetch(ramdisk).await?)
            }
        };
        let params = self.vmedia_params(node);
        let key = hex(&Sha256::digest(format!(
            "{}\n{}\n{params}\n",
            kernel.sha256, initrd.sha256
        )));
        let dir = self.vmedia_dir();
        let prefix = format!("boot-{}-", node.uuid);
        let path = dir.join(format!("{prefix}{}.iso", &key[..32]));
        let unavailable =
            |what: &str, e: std::io::Error| NetbootError::Unavailable(format!("{what}: {e}"));
        // One build at a time in this process (builds are rare and CPU bound).
        let _gate = self.iso_gate.lock().await;
        if let Ok(meta) = tokio::fs::metadata(&path).await {
            return Ok(CachedFile {
                path,
                sha256: key,
                size: meta.len(),
            });
        }
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| unavailable("cannot create the ISO directory", e))?;
        let work = dir.join(format!(".build-{}", Uuid::new_v4()));
        let tmp = dir.join(format!(".{}.iso", Uuid::new_v4()));
        let built = build_boot_iso(
            &kernel.path,
            &initrd.path,
            &params,
            &work,
            &tmp,
            &IsoTools::default(),
        )
        .await;
        let _ = tokio::fs::remove_dir_all(&work).await;
        if let Err(e) = built {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(NetbootError::Unavailable(format!(
                "cannot build the boot ISO of node {}: {e}",
                node.uuid
            )));
        }
        // An older ISO of this node (other images or parameters) goes.
        self.remove_boot_iso(node.uuid).await?;
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(|e| unavailable("cannot publish the boot ISO", e))?;
        let size = tokio::fs::metadata(&path)
            .await
            .map_err(|e| unavailable("cannot read the boot ISO", e))?
            .len();
        tracing::info!(node_uuid = %node.uuid, size, path = %path.display(), "boot ISO built");
        Ok(CachedFile {
            path,
            sha256: key,
            size,
        })
    }

    /// The ISO of a node, for the BMC's download: only while the node uses
    /// virtual media and its provision state boots a ramdisk (else 404).
    pub async fn boot_iso_for_node(
        &self,
        store: &dyn Store,
        ident: &NodeIdent,
    ) -> Result<CachedFile, NetbootError> {
        let node = store.get_node(ident).await?;
        if node.interfaces.get("boot_interface").map(String::as_str) != Some(BOOT_INTERFACE) {
            return Err(NetbootError::NotFound(format!(
                "node {} does not boot from virtual media",
                node.uuid
            )));
        }
        let Some(ramdisk) = Ramdisk::for_state(node.provision_state) else {
            return Err(NetbootError::NotFound(format!(
                "node {} boots no ramdisk in provision state {}",
                node.uuid,
                node.provision_state.as_str()
            )));
        };
        self.boot_iso(&node, ramdisk, false).await
    }

    /// Remove this process's built ISOs of `node` (Ironic's
    /// `cleanup_iso_image`). A given `deploy_iso` stays in the cache.
    pub async fn remove_boot_iso(&self, node: Uuid) -> Result<(), NetbootError> {
        let dir = self.vmedia_dir();
        let prefix = format!("boot-{node}-");
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(NetbootError::Unavailable(format!(
                    "cannot list {}: {e}",
                    dir.display()
                )))
            }
        };
        while let Ok(Some(entry)) = entries.next_entry().await {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(&prefix) && name.ends_with(".iso") {
                match tokio::fs::remove_file(entry.path()).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(NetbootError::Unavailable(format!(
                            "cannot remove {}: {e}",
                            entry.path().display()
                        )))
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ferric_core::ProvisionState;
    use serde_json::json;

    fn node(info: Value) -> Node {
        let mut n: Node = serde_json::from_value(json!({
            "uuid": "1be26c0b-03f2-4d2e-ae87-c02d7f33c123",
            "name": null, "driver": "redfish", "driver_info": {}, "properties": {},
            "extra": {}, "instance_info": {}, "instance_uuid": null,
            "interfaces": {"boot_interface": BOOT_INTERFACE},
            "provision_state": "cleaning", "target_provision_state": null,
            "power_state": null, "target_power_state": null, "maintenance": false,
            "maintenance_reason": null, "last_error": null, "conductor_group": "",
            "conductor_affinity": null, "reservation": null, "lock_epoch": 0,
            "lock_waiters": 0, "revision": 0, "created_at": 0, "updated_at": null,
            "provision_updated_at": null
        }))
        .unwrap();
        n.driver_info = info.as_object().unwrap().clone();
        n
    }

    #[test]
    fn sources_follow_ironics_driver_info_rules() {
        let e = NetBoot::iso_source(&node(json!({})), Ramdisk::Deploy).unwrap_err();
        assert_eq!(e.to_string(), "Error validating Redfish virtual media. Some parameters were missing in node's driver_info. Missing are: ['deploy_kernel', 'deploy_ramdisk']");
        let n = node(json!({"deploy_kernel": "http://h/k"}));
        let e = NetBoot::iso_source(&n, Ramdisk::Deploy).unwrap_err();
        assert!(
            e.to_string().ends_with("Missing are: ['deploy_ramdisk']"),
            "{e}"
        );
        let e = NetBoot::iso_source(&n, Ramdisk::Rescue).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("['rescue_kernel', 'rescue_ramdisk']"),
            "{e}"
        );
        let n = node(json!({"deploy_kernel": "http://h/k", "deploy_ramdisk": "file:///r"}));
        assert_eq!(
            NetBoot::iso_source(&n, Ramdisk::Deploy).unwrap(),
            IsoSource::KernelRamdisk {
                kernel: "http://h/k".into(),
                ramdisk: "file:///r".into()
            }
        );
        // An ISO wins over a kernel and ramdisk; a bad URL is named.
        let n = node(json!({"deploy_iso": "https://h/ipa.iso", "deploy_kernel": "x"}));
        assert_eq!(
            NetBoot::iso_source(&n, Ramdisk::Deploy).unwrap(),
            IsoSource::Iso("https://h/ipa.iso".into())
        );
        let n = node(json!({"deploy_iso": "glance-uuid"}));
        let e = NetBoot::iso_source(&n, Ramdisk::Deploy).unwrap_err();
        assert!(e.to_string().contains("driver_info.deploy_iso"), "{e}");
    }

    #[test]
    fn the_command_line_is_ironics_vmedia_one() {
        let nb = NetBoot::new(super::super::PxeConfig {
            http_url: "http://10.0.0.1:6385/".into(),
            ..Default::default()
        });
        let mut n = node(json!({}));
        assert_eq!(
            nb.vmedia_params(&n),
            "nofb vga=normal ipa-api-url=http://10.0.0.1:6385 boot_method=vmedia"
        );
        n.driver_info.insert(
            "kernel_append_params".into(),
            json!("console=ttyS0 %default%"),
        );
        assert_eq!(
            nb.vmedia_params(&n),
            "console=ttyS0 nofb vga=normal ipa-api-url=http://10.0.0.1:6385 boot_method=vmedia"
        );
        assert_eq!(
            nb.boot_iso_url(n.uuid),
            "http://10.0.0.1:6385/boot/nodes/1be26c0b-03f2-4d2e-ae87-c02d7f33c123/boot.iso"
        );
    }

    /// The ISO tools are installed by `.ci/run`; elsewhere the build test
    /// needs them too, unless not in CI.
    fn tools_present() -> bool {
        let ok = ["xorriso", "grub-mkstandalone", "mkfs.vfat", "mcopy"]
            .iter()
            .all(|t| {
                std::process::Command::new("sh")
                    .arg("-c")
                    .arg(format!("command -v {t}"))
                    .output()
                    .is_ok_and(|o| o.status.success())
            })
            && IsoTools::default().isolinux_bin.exists();
        assert!(
            ok || std::env::var_os("CI").is_none(),
            "the boot ISO tools are missing in CI: .ci/run installs them"
        );
        ok
    }

    #[tokio::test]
    async fn an_iso_is_built_once_per_input_and_removed() {
        if !tools_present() {
            eprintln!("skipped: xorriso/grub-mkstandalone/mtools/isolinux not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("k"), b"kernel").unwrap();
        std::fs::write(dir.path().join("r"), b"ramdisk").unwrap();
        let url = |f: &str| format!("file://{}", dir.path().join(f).display());
        let nb = NetBoot::new(super::super::PxeConfig {
            http_url: "http://127.0.0.1:6385".into(),
            state_dir: dir.path().join("state"),
            ..Default::default()
        });
        let mut n = node(json!({"deploy_kernel": url("k"), "deploy_ramdisk": url("r")}));
        let a = nb.boot_iso(&n, Ramdisk::Deploy, true).await.unwrap();
        let bytes = std::fs::read(&a.path).unwrap();
        assert_eq!(&bytes[0x8001..0x8006], b"CD001");
        assert_eq!(a.size, bytes.len() as u64);
        let mtime = std::fs::metadata(&a.path).unwrap().modified().unwrap();
        // The same inputs: the same file, not rebuilt.
        let b = nb.boot_iso(&n, Ramdisk::Deploy, false).await.unwrap();
        assert_eq!(a, b);
        assert_eq!(
            std::fs::metadata(&b.path).unwrap().modified().unwrap(),
            mtime
        );
        // Other parameters: a new ISO replaces the old one.
        n.driver_info
            .insert("kernel_append_params".into(), json!("quiet"));
        let c = nb.boot_iso(&n, Ramdisk::Deploy, false).await.unwrap();
        assert_ne!(c.path, a.path);
        assert!(!a.path.exists() && c.path.exists());
        // Served only while the node boots a ramdisk with virtual media.
        n.provision_state = ProvisionState::Active;
        assert!(Ramdisk::for_state(n.provision_state).is_none());
        nb.remove_boot_iso(n.uuid).await.unwrap();
        assert!(!c.path.exists());
        nb.remove_boot_iso(n.uuid).await.unwrap();
        // A broken source fails with the cache's message, nothing left.
        let n = node(json!({"deploy_kernel": url("missing"), "deploy_ramdisk": url("r")}));
        assert!(nb.boot_iso(&n, Ramdisk::Deploy, true).await.is_err());
        let left: Vec<_> = std::fs::read_dir(dir.path().join("state/netboot/vmedia"))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}

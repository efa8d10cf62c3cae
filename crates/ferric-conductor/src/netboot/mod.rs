//! Network boot of the ramdisk (issue 15): what the `ipxe` and `pxe` boot
//! interfaces need besides the BMC.
//!
//! * [`cache`]: the content-addressed image cache (kernels, ramdisks from
//!   `driver_info.{deploy,rescue}_{kernel,ramdisk}` http(s)/file URLs);
//! * [`ipxe`]: the per-node and chain scripts (Ironic's templates);
//! * [`dnsmasq`]: the DHCP host and option entries, and dnsmasq's own
//!   configuration.
//!
//! Everything a booting machine asks for is rendered on request from the
//! database ([`NetBoot::script_for_mac`], [`NetBoot::image_for_node`]): any
//! `ferric serve` process of a cluster can answer any node, no
//! conductor-affinity RPC is needed. The DHCP entries are files in
//! directories dnsmasq watches; ferric writes them under the node's lock
//! when the ramdisk is prepared and rewrites them on clean-up.

pub mod cache;
pub mod dnsmasq;
pub mod ipxe;
pub mod iso;
pub mod vmedia;

use cache::{CachedFile, ImageCache};
use ferric_core::{Node, ProvisionState};
use ferric_store::resource::{ResourceKind, ResourceQuery};
use ferric_store::{NodeIdent, Store, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;
use uuid::Uuid;

/// `[pxe]`: network boot of the ramdisk (Ironic's `[pxe]`, `[deploy]
/// http_url` and `[dnsmasq]` options).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PxeConfig {
    /// Base URL booting machines reach this ferric's API listener at (the
    /// scripts, kernels and ramdisks are under `/boot/`). Empty: `http://`
    /// `api.host:api.port` (`serve` fills it in).
    pub http_url: String,
    /// `ipa-api-url` given to the ramdisk. Empty: `http_url`.
    pub api_url: String,
    /// ferric's state directory (cache and dnsmasq files below it).
    pub state_dir: PathBuf,
    /// The image cache directory. Empty: `<state_dir>/netboot/cache`.
    pub cache_dir: String,
    /// Size limit of the image cache (least recently used images go first).
    pub cache_max_bytes: u64,
    /// Largest single image accepted.
    pub max_image_bytes: u64,
    /// An http(s) image older than this is downloaded again when a ramdisk
    /// boot is prepared (file:// images are checked every time).
    #[serde(with = "humantime_serde")]
    pub image_refresh: Duration,
    /// Kernel parameters for the ramdisk (Ironic's `[pxe]
    /// kernel_append_params`); a node's `instance_info` or `driver_info`
    /// `kernel_append_params` replaces it (`%default%` inserts it).
    pub kernel_append_params: String,
    /// iPXE download timeout in seconds (0: none).
    pub ipxe_timeout_secs: u64,
    /// Write dnsmasq host/option files for PXE-enabled ports. Off for an
    /// operator's own DHCP server (see README: the options it must send).
    pub manage_dhcp: bool,
    /// `dhcp-hostsdir`. Empty: `<state_dir>/dnsmasq/hostsdir.d`.
    pub dhcp_hostsdir: String,
    /// `dhcp-optsdir`. Empty: `<state_dir>/dnsmasq/optsdir.d`.
    pub dhcp_optsdir: String,
    /// First-stage boot file for BIOS PXE clients (TFTP).
    pub bios_bootfile: String,
    /// First-stage boot file for x86-64 UEFI PXE clients (TFTP).
    pub uefi_bootfile: String,
    /// dnsmasq's TFTP root (Debian's `ipxe` package installs the boot files
    /// there). Empty: no TFTP.
    pub tftp_root: String,
    /// Run dnsmasq as a child of `ferric serve` with the generated
    /// configuration (needs the right to bind DHCP's port 67).
    pub dnsmasq_spawn: bool,
    /// The dnsmasq program.
    pub dnsmasq_binary: String,
    /// `interface=` for the generated configuration (empty: all).
    pub dnsmasq_interface: String,
    /// `dhcp-range=` for the generated configuration.
    pub dnsmasq_dhcp_range: String,
    /// Extra lines for the generated configuration.
    pub dnsmasq_extra: Vec<String>,
}

impl Default for PxeConfig {
    fn default() -> Self {
        PxeConfig {
            http_url: String::new(),
            api_url: String::new(),
            state_dir: PathBuf::from("/var/lib/ferric"),
            cache_dir: String::new(),
            cache_max_bytes: 20 << 30,
            max_image_bytes: 4 << 30,
            image_refresh: Duration::from_secs(3600),
            kernel_append_params: "nofb nomodeset vga=normal".into(),
            ipxe_timeout_secs: 0,
            manage_dhcp: true,
            dhcp_hostsdir: String::new(),
            dhcp_optsdir: String::new(),
            bios_bootfile: "undionly.kpxe".into(),
            uefi_bootfile: "snponly.efi".into(),
            tftp_root: "/usr/lib/ipxe".into(),
            dnsmasq_spawn: false,
            dnsmasq_binary: "dnsmasq".into(),
            dnsmasq_interface: String::new(),
            dnsmasq_dhcp_range: String::new(),
            dnsmasq_extra: Vec::new(),
        }
    }
}

fn or_under(value: &str, base: &Path, rel: &str) -> PathBuf {
    if value.is_empty() {
        base.join(rel)
    } else {
        PathBuf::from(value)
    }
}

impl PxeConfig {
    /// The image cache directory.
    pub fn cache_dir(&self) -> PathBuf {
        or_under(&self.cache_dir, &self.state_dir, "netboot/cache")
    }

    /// `dhcp-hostsdir`.
    pub fn hostsdir(&self) -> PathBuf {
        or_under(&self.dhcp_hostsdir, &self.state_dir, "dnsmasq/hostsdir.d")
    }

    /// `dhcp-optsdir`.
    pub fn optsdir(&self) -> PathBuf {
        or_under(&self.dhcp_optsdir, &self.state_dir, "dnsmasq/optsdir.d")
    }

    /// Every problem, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        for (key, url) in [
            ("pxe.http_url", &self.http_url),
            ("pxe.api_url", &self.api_url),
        ] {
            if !url.is_empty() && !url.starts_with("http://") && !url.starts_with("https://") {
                p.push(format!("{key} {url:?} must be an http:// or https:// URL"));
            }
        }
        if self.max_image_bytes == 0 {
            p.push("pxe.max_image_bytes must be more than 0".into());
        }
        if self.cache_max_bytes < self.max_image_bytes {
            p.push(format!(
                "pxe.cache_max_bytes ({}) must be at least pxe.max_image_bytes ({})",
                self.cache_max_bytes, self.max_image_bytes
            ));
        }
        for (key, v) in [
            ("pxe.bios_bootfile", &self.bios_bootfile),
            ("pxe.uefi_bootfile", &self.uefi_bootfile),
        ] {
            if v.is_empty() || v.contains([',', '\n', ' ']) {
                p.push(format!("{key} {v:?} must be a file name"));
            }
        }
        if self.dnsmasq_spawn && !self.manage_dhcp {
            p.push("pxe.dnsmasq_spawn needs pxe.manage_dhcp".into());
        }
        if self.dnsmasq_extra.iter().any(|l| l.contains('\n')) {
            p.push("pxe.dnsmasq_extra: one line per entry".into());
        }
        p
    }
}

/// Why a boot file or script cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetbootError {
    /// No such node, port or file (iPXE moves to its next NIC on a 404).
    #[error("{0}")]
    NotFound(String),
    /// The node's settings are wrong.
    #[error("{0}")]
    Invalid(String),
    /// The image source or the database failed.
    #[error("{0}")]
    Unavailable(String),
}

impl From<StoreError> for NetbootError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NodeNotFound(_) | StoreError::ResourceNotFound { .. } => {
                NetbootError::NotFound(e.to_string())
            }
            other => NetbootError::Unavailable(other.to_string()),
        }
    }
}

/// Which ramdisk: Ironic's deploy or rescue images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ramdisk {
    Deploy,
    Rescue,
}

impl Ramdisk {
    /// The `driver_info` key prefix (`deploy` / `rescue`).
    pub fn prefix(self) -> &'static str {
        match self {
            Ramdisk::Deploy => "deploy",
            Ramdisk::Rescue => "rescue",
        }
    }

    /// The ramdisk a node in `state` boots, if any: deploy, clean, inspect
    /// and service boot the deploy ramdisk, rescue the rescue one.
    pub fn for_state(state: ProvisionState) -> Option<Ramdisk> {
        use ProvisionState::*;
        match state {
            Deploying | DeployWait | Cleaning | CleanWait | Inspecting | InspectWait
            | Servicing | ServiceWait => Some(Ramdisk::Deploy),
            Rescuing | RescueWait => Some(Ramdisk::Rescue),
            _ => None,
        }
    }
}

/// Network boot: the config, the image cache, the DHCP files.
#[derive(Debug)]
pub struct NetBoot {
    config: PxeConfig,
    cache: ImageCache,
    /// One boot ISO build at a time (`vmedia`).
    iso_gate: tokio::sync::Mutex<()>,
}

/// The `driver_info` key of a ramdisk's kernel or initrd.
fn image_key(ramdisk: Ramdisk, part: &str) -> String {
    format!("{}_{part}", ramdisk.prefix())
}

impl NetBoot {
    /// Network boot with `config` (`http_url` must be set by then).
    pub fn new(config: PxeConfig) -> Self {
        let cache = ImageCache::new(
            config.cache_dir(),
            config.cache_max_bytes,
            config.max_image_bytes,
            config.image_refresh,
        );
        NetBoot {
            config,
            cache,
            iso_gate: tokio::sync::Mutex::new(()),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &PxeConfig {
        &self.config
    }

    /// The image cache.
    pub fn cache(&self) -> &ImageCache {
        &self.cache
    }

    fn base(&self) -> &str {
        self.config.http_url.trim_end_matches('/')
    }

    /// URL of the chain script (DHCP's boot file for iPXE clients).
    pub fn chain_url(&self) -> String {
        format!("{}/boot/boot.ipxe", self.base())
    }

    /// The chain script.
    pub fn chain_script(&self) -> String {
        ipxe::chain_script(&format!("{}/boot/ipxe/mac/", self.base()))
    }

    /// The `driver_info` URL of `ramdisk`'s `part` (`kernel`/`ramdisk`),
    /// checked: an http(s) or file URL.
    pub fn source_url(node: &Node, ramdisk: Ramdisk, part: &str) -> Result<String, NetbootError> {
        let key = image_key(ramdisk, part);
        match node.driver_info.get(&key) {
            Some(Value::String(u))
                if u.starts_with("http://")
                    || u.starts_with("https://")
                    || u.starts_with("file:///") =>
            {
                Ok(u.clone())
            }
            Some(Value::String(u)) if !u.is_empty() => Err(NetbootError::Invalid(format!(
                "driver_info.{key} of node {} must be an http://, https:// or file:/// URL, not {u:?}",
                node.uuid
            ))),
            _ => Err(NetbootError::Invalid(format!(
                "Cannot validate PXE bootloader. Some parameters were missing in node's driver_info. Missing are: ['{key}'] (node {})",
                node.uuid
            ))),
        }
    }

    /// What `validate` checks for `ramdisk`: both URLs present and well
    /// formed, and the kernel parameters usable.
    pub fn check(node: &Node, ramdisk: Ramdisk) -> Result<(), NetbootError> {
        Self::source_url(node, ramdisk, "kernel")?;
        Self::source_url(node, ramdisk, "ramdisk")?;
        Ok(())
    }

    /// Fetch `ramdisk`'s kernel and initrd into the cache now (refreshing
    /// old http(s) copies), so a bad URL fails the verb instead of the boot.
    pub async fn warm(&self, node: &Node, ramdisk: Ramdisk) -> Result<(), NetbootError> {
        for part in ["kernel", "ramdisk"] {
            let url = Self::source_url(node, ramdisk, part)?;
            self.cache
                .get(&url, true)
                .await
                .map_err(|e| NetbootError::Unavailable(e.0))?;
        }
        Ok(())
    }

    /// A node's kernel or initrd (`name` = `deploy_kernel`, ...), fetched
    /// into the cache if needed.
    pub async fn image_for_node(
        &self,
        store: &dyn Store,
        node: &NodeIdent,
        name: &str,
    ) -> Result<CachedFile, NetbootError> {
        let (ramdisk, part) = match name {
            "deploy_kernel" => (Ramdisk::Deploy, "kernel"),
            "deploy_ramdisk" => (Ramdisk::Deploy, "ramdisk"),
            "rescue_kernel" => (Ramdisk::Rescue, "kernel"),
            "rescue_ramdisk" => (Ramdisk::Rescue, "ramdisk"),
            other => return Err(NetbootError::NotFound(format!("no boot file {other:?}"))),
        };
        let node = store.get_node(node).await?;
        let url = Self::source_url(&node, ramdisk, part)?;
        self.cache
            .get(&url, false)
            .await
            .map_err(|e| NetbootError::Unavailable(e.0))
    }

    /// `kernel_append_params` of the ramdisk: instance_info, then
    /// driver_info, else `default` (`%default%` replaced by it).
    pub fn append_params(&self, node: &Node, default: &str) -> String {
        let own = [&node.instance_info, &node.driver_info]
            .into_iter()
            .find_map(|m| m.get("kernel_append_params").and_then(Value::as_str));
        match own {
            Some(p) => p.replace("%default%", default),
            None => default.to_string(),
        }
    }

    /// `ipa-api-url`: `api_url`, else `http_url`.
    pub fn agent_api_url(&self) -> &str {
        if self.config.api_url.is_empty() {
            self.base()
        } else {
            self.config.api_url.trim_end_matches('/')
        }
    }

    /// The kernel command line of the ramdisk after Ironic's fixed words:
    /// kernel_append_params (instance_info, then driver_info, then config;
    /// `%default%` replaced), `ipa-api-url`, `ipa-global-request-id`.
    pub fn kernel_params(&self, node: &Node, request_id: &str) -> String {
        let mut params = self.append_params(node, &self.config.kernel_append_params);
        params.push_str(&format!(
            " ipa-api-url={} ipa-global-request-id={request_id}",
            self.agent_api_url()
        ));
        params.trim().to_string()
    }

    /// The script for `node` booting from `mac`: its ramdisk while its
    /// provision state boots one, else the local disk.
    pub fn script_for_node(&self, node: &Node, mac: Option<&str>, request_id: &str) -> String {
        let Some(ramdisk) = Ramdisk::for_state(node.provision_state) else {
            return ipxe::local_disk_script();
        };
        let prefix = ramdisk.prefix();
        ipxe::ramdisk_script(&ipxe::RamdiskScript {
            kernel_url: format!("{}/boot/nodes/{}/{prefix}_kernel", self.base(), node.uuid),
            ramdisk_url: format!("{}/boot/nodes/{}/{prefix}_ramdisk", self.base(), node.uuid),
            append: self.kernel_params(node, request_id),
            bootif: mac.map(str::to_string),
            timeout_secs: self.config.ipxe_timeout_secs,
        })
    }

    /// The script for the machine booting from `mac` (any form iPXE sends):
    /// the node of the port with that address.
    pub async fn script_for_mac(
        &self,
        store: &dyn Store,
        mac: &str,
        request_id: &str,
    ) -> Result<(Node, String), NetbootError> {
        let mac = ipxe::parse_mac(mac)
            .ok_or_else(|| NetbootError::NotFound(format!("{mac:?} is not a MAC address")))?;
        let mut q = ResourceQuery::all(ResourceKind::Port);
        q.key = Some(mac.clone());
        let ports = store.list_resources(&q).await?;
        let node = ports
            .first()
            .and_then(|p| p.node)
            .ok_or_else(|| NetbootError::NotFound(format!("no port with address {mac}")))?;
        let node = store.get_node(&NodeIdent::Uuid(node)).await?;
        let script = self.script_for_node(&node, Some(&mac), request_id);
        Ok((node, script))
    }

    /// The PXE-enabled port addresses of `node`.
    pub async fn pxe_macs(store: &dyn Store, node: Uuid) -> Result<Vec<String>, NetbootError> {
        let mut q = ResourceQuery::all(ResourceKind::Port);
        q.node = Some(node);
        let ports = store.list_resources(&q).await?;
        Ok(ports
            .into_iter()
            .filter(|p| p.body.get("pxe_enabled").and_then(Value::as_bool) != Some(false))
            .filter_map(|p| p.key)
            .collect())
    }

    /// Write the DHCP entries of `node` (its PXE-enabled MACs tagged, the
    /// node's options). Nothing when `manage_dhcp` is off.
    pub async fn write_dhcp(&self, node: Uuid, macs: &[String]) -> Result<(), NetbootError> {
        if !self.config.manage_dhcp {
            return Ok(());
        }
        let opts = dnsmasq::opts_entries(node, &self.config, &self.chain_url());
        // Options first: a host tagged before its options exist would get
        // an offer without a boot file.
        write_atomic(
            &self.config.optsdir().join(dnsmasq::opts_file_name(node)),
            &opts,
        )
        .await?;
        for mac in macs {
            write_atomic(
                &self.config.hostsdir().join(dnsmasq::host_file_name(mac)),
                &dnsmasq::host_entry(mac, node),
            )
            .await?;
        }
        Ok(())
    }

    /// Undo [`NetBoot::write_dhcp`]: the MACs ignored (dnsmasq keeps a
    /// deleted file's hosts until SIGHUP), the options file removed.
    pub async fn clean_dhcp(&self, node: Uuid, macs: &[String]) -> Result<(), NetbootError> {
        if !self.config.manage_dhcp {
            return Ok(());
        }
        for mac in macs {
            let path = self.config.hostsdir().join(dnsmasq::host_file_name(mac));
            if tokio::fs::try_exists(&path).await.unwrap_or(false) {
                write_atomic(&path, &dnsmasq::ignore_entry(mac)).await?;
            }
        }
        let opts = self.config.optsdir().join(dnsmasq::opts_file_name(node));
        match tokio::fs::remove_file(&opts).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(NetbootError::Unavailable(format!(
                "cannot remove {}: {e}",
                opts.display()
            ))),
        }
    }

    /// Write dnsmasq's configuration under the state directory (and the
    /// host/option directories); returns its path.
    pub async fn write_dnsmasq_conf(&self) -> Result<PathBuf, NetbootError> {
        let dir = self.config.state_dir.join("dnsmasq");
        for d in [dir.clone(), self.config.hostsdir(), self.config.optsdir()] {
            tokio::fs::create_dir_all(&d).await.map_err(|e| {
                NetbootError::Unavailable(format!("cannot create {}: {e}", d.display()))
            })?;
        }
        let leases = dir.join("dnsmasq.leases");
        let path = dir.join("dnsmasq.conf");
        write_atomic(
            &path,
            &dnsmasq::dnsmasq_conf(&self.config, &leases.display().to_string()),
        )
        .await?;
        Ok(path)
    }
}

/// Write `path` through a temporary file and a rename, so dnsmasq (which
/// watches the directory) never reads half a file.
async fn write_atomic(path: &Path, content: &str) -> Result<(), NetbootError> {
    let fail = |e: std::io::Error| {
        NetbootError::Unavailable(format!("cannot write {}: {e}", path.display()))
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    tokio::fs::create_dir_all(dir).await.map_err(fail)?;
    let tmp = dir.join(format!(".{}.tmp", Uuid::new_v4()));
    tokio::fs::write(&tmp, content).await.map_err(fail)?;
    tokio::fs::rename(&tmp, path).await.map_err(fail)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn node(state: ProvisionState) -> Node {
        let mut n: Node = serde_json::from_value(json!({
            "uuid": "1be26c0b-03f2-4d2e-ae87-c02d7f33c123",
            "name": null, "driver": "redfish", "driver_info": {}, "properties": {},
            "extra": {}, "instance_info": {}, "instance_uuid": null, "interfaces": {},
            "provision_state": "available", "target_provision_state": null,
            "power_state": null, "target_power_state": null, "maintenance": false,
            "maintenance_reason": null, "last_error": null, "conductor_group": "",
            "conductor_affinity": null, "reservation": null, "lock_epoch": 0,
            "lock_waiters": 0, "revision": 0, "created_at": 0, "updated_at": null,
            "provision_updated_at": null
        }))
        .unwrap();
        n.provision_state = state;
        n.driver_info
            .insert("deploy_kernel".into(), json!("http://img/k"));
        n.driver_info
            .insert("deploy_ramdisk".into(), json!("file:///srv/r"));
        n
    }

    fn netboot() -> NetBoot {
        NetBoot::new(PxeConfig {
            http_url: "http://10.0.0.1:6385/".into(),
            ..PxeConfig::default()
        })
    }

    #[test]
    fn the_state_picks_the_ramdisk_or_the_disk() {
        let nb = netboot();
        let s = nb.script_for_node(
            &node(ProvisionState::CleanWait),
            Some("52:54:00:00:00:01"),
            "req-1",
        );
        assert!(s.contains("kernel http://10.0.0.1:6385/boot/nodes/1be26c0b-03f2-4d2e-ae87-c02d7f33c123/deploy_kernel selinux=0 troubleshoot=0 text nofb nomodeset vga=normal ipa-api-url=http://10.0.0.1:6385 ipa-global-request-id=req-1 BOOTIF=52:54:00:00:00:01 initrd=deploy_ramdisk || goto retry"), "{s}");
        let s = nb.script_for_node(&node(ProvisionState::RescueWait), None, "r");
        assert!(s.contains("/rescue_kernel ") && s.contains("initrd=rescue_ramdisk"));
        for st in [
            ProvisionState::Active,
            ProvisionState::Available,
            ProvisionState::Manageable,
        ] {
            assert_eq!(
                nb.script_for_node(&node(st), None, "r"),
                ipxe::local_disk_script()
            );
        }
    }

    #[test]
    fn kernel_params_follow_ironics_lookup_order() {
        let nb = NetBoot::new(PxeConfig {
            http_url: "http://h:1".into(),
            api_url: "https://api:6385".into(),
            ..PxeConfig::default()
        });
        let mut n = node(ProvisionState::DeployWait);
        assert_eq!(
            nb.kernel_params(&n, "g"),
            "nofb nomodeset vga=normal ipa-api-url=https://api:6385 ipa-global-request-id=g"
        );
        n.driver_info.insert(
            "kernel_append_params".into(),
            json!("console=ttyS0 %default%"),
        );
        assert!(nb
            .kernel_params(&n, "g")
            .starts_with("console=ttyS0 nofb nomodeset vga=normal ipa-api-url"));
        n.instance_info
            .insert("kernel_append_params".into(), json!("quiet"));
        assert!(nb.kernel_params(&n, "g").starts_with("quiet ipa-api-url"));
    }

    #[test]
    fn image_urls_are_checked() {
        let mut n = node(ProvisionState::Available);
        assert!(NetBoot::check(&n, Ramdisk::Deploy).is_ok());
        let e = NetBoot::check(&n, Ramdisk::Rescue).unwrap_err();
        assert!(
            e.to_string().contains("Missing are: ['rescue_kernel']"),
            "{e}"
        );
        n.driver_info
            .insert("deploy_kernel".into(), json!("glance-uuid"));
        let e = NetBoot::check(&n, Ramdisk::Deploy).unwrap_err();
        assert!(e.to_string().contains("driver_info.deploy_kernel"), "{e}");
    }

    #[tokio::test]
    async fn dhcp_files_written_then_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let nb = NetBoot::new(PxeConfig {
            http_url: "http://10.0.0.1:6385".into(),
            state_dir: dir.path().into(),
            ..PxeConfig::default()
        });
        let n = node(ProvisionState::Deploying).uuid;
        let macs = vec!["52:54:00:00:00:01".to_string()];
        let conf = nb.write_dnsmasq_conf().await.unwrap();
        assert!(std::fs::read_to_string(conf)
            .unwrap()
            .contains("dhcp-hostsdir="));
        nb.write_dhcp(n, &macs).await.unwrap();
        let host = dir
            .path()
            .join("dnsmasq/hostsdir.d/ferric-52-54-00-00-00-01.conf");
        let opts = dir
            .path()
            .join(format!("dnsmasq/optsdir.d/ferric-{n}.conf"));
        assert_eq!(
            std::fs::read_to_string(&host).unwrap(),
            format!("52:54:00:00:00:01,set:ferric-{n},set:ferric\n")
        );
        assert!(std::fs::read_to_string(&opts)
            .unwrap()
            .contains("tag:ipxe,option:bootfile-name,http://10.0.0.1:6385/boot/boot.ipxe"));
        nb.clean_dhcp(n, &macs).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&host).unwrap(),
            "52:54:00:00:00:01,ignore\n"
        );
        assert!(!opts.exists());
        // Clean-up twice is fine; nothing else is in the directories.
        nb.clean_dhcp(n, &macs).await.unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path().join("dnsmasq/hostsdir.d"))
                .unwrap()
                .count(),
            1
        );
    }

    #[test]
    fn config_problems_name_their_keys() {
        let c = PxeConfig {
            http_url: "ftp://x".into(),
            cache_max_bytes: 1,
            bios_bootfile: "a b".into(),
            dnsmasq_spawn: true,
            manage_dhcp: false,
            ..PxeConfig::default()
        };
        let p = c.problems().join("\n");
        for key in [
            "pxe.http_url",
            "pxe.cache_max_bytes",
            "pxe.bios_bootfile",
            "pxe.dnsmasq_spawn",
        ] {
            assert!(p.contains(key), "{key} in {p}");
        }
        assert!(PxeConfig::default().problems().is_empty());
    }
}

//! `redfish`: power and boot device through a BMC's Redfish service (SPEC §10).
//!
//! `driver_info` keys (Ironic's names):
//!
//! * `redfish_address` (required): `http(s)://host[:port]`, no path, no
//!   credentials in it;
//! * `redfish_system_id` (required): the ComputerSystem's path, e.g.
//!   `/redfish/v1/Systems/<id>`;
//! * `redfish_username`, `redfish_password` (optional, HTTP basic). The
//!   password is a secret: it is never logged nor put in an error message;
//! * `redfish_verify_ca` (optional, default true): `true` (system roots),
//!   `false` (no certificate check; logged as a warning), or the path of a
//!   PEM CA bundle (only those roots).
//!
//! Power: `ComputerSystem.Reset` (`On`, `ForceOff`, `GracefulShutdown`,
//! `ForceRestart`, `GracefulRestart`), then the `PowerState` is polled until
//! it shows the target or `power_state_change_timeout` passes (BMCs and
//! the sushy-tools emulator apply a reset seconds later). Boot device:
//! PATCH `Boot.BootSourceOverrideTarget` / `BootSourceOverrideEnabled`
//! (read back from the ComputerSystem). NMI: `ComputerSystem.Reset` with
//! `ResetType: Nmi`.
//!
//! Every request has a timeout; transient failures (connection errors,
//! timeouts, 5xx except 501, 429, 409) are retried with exponential backoff
//! (`backon`); 4xx and 501 are permanent.
//!
//! This is the `redfish` power and management interface; the `redfish`
//! hardware type pairs it with the `ipxe`/`pxe` boot and `direct`/`ramdisk`
//! deploy interfaces (`super::generic`).

use super::tls::{Clients, Timeouts, Verify};
use super::{
    BootDevice, BootDeviceState, DriverError, Interface, Invalid, ManagementInterface,
    PowerInterface, Property,
};
use crate::task::ExclusiveTask;
use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use ferric_core::{Node, PowerState};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Settings of the redfish driver (all nodes).
#[derive(Debug, Clone)]
pub struct RedfishConfig {
    /// Whole-request timeout.
    pub request_timeout: Duration,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Retries of a transient failure (after the first attempt).
    pub retries: usize,
    /// First retry delay (doubles, with jitter, up to `retry_max_delay`).
    pub retry_min_delay: Duration,
    /// Longest retry delay.
    pub retry_max_delay: Duration,
    /// How long a power change may take to show in `PowerState`.
    pub power_state_change_timeout: Duration,
    /// How often `PowerState` is read while waiting for a change.
    pub power_poll_interval: Duration,
}

impl Default for RedfishConfig {
    fn default() -> Self {
        RedfishConfig {
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            retries: 5,
            retry_min_delay: Duration::from_millis(500),
            retry_max_delay: Duration::from_secs(5),
            power_state_change_timeout: Duration::from_secs(60),
            power_poll_interval: Duration::from_millis(500),
        }
    }
}

/// A password: shown as `***` everywhere.
#[derive(Clone, PartialEq, Eq)]
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// A node's BMC, from its driver_info.
#[derive(Debug, Clone)]
struct Bmc {
    address: String,
    system_id: String,
    username: Option<String>,
    password: Option<Secret>,
    verify: Verify,
}

impl Bmc {
    fn from_node(node: &Node) -> Result<Bmc, String> {
        Self::from_info(&node.driver_info)
    }

    fn from_info(info: &serde_json::Map<String, Value>) -> Result<Bmc, String> {
        let text = |key: &str| -> Result<Option<String>, String> {
            match info.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
                Some(_) => Err(format!("{key} must be a string")),
            }
        };
        let address = text("redfish_address")?
            .ok_or("missing redfish_address in driver_info")?
            .trim_end_matches('/')
            .to_string();
        let rest = address
            .strip_prefix("http://")
            .or_else(|| address.strip_prefix("https://"))
            .ok_or("redfish_address must start with http:// or https://")?;
        if rest.is_empty() || rest.contains('/') || rest.contains('?') || rest.contains('#') {
            return Err("redfish_address must be http(s)://host[:port] without a path".into());
        }
        if rest.contains('@') {
            // Never echo it: it would carry a password.
            return Err("redfish_address must not carry credentials; use redfish_username and redfish_password".into());
        }
        let system_id =
            text("redfish_system_id")?.ok_or("missing redfish_system_id in driver_info")?;
        if !system_id.starts_with('/') {
            return Err("redfish_system_id must be a path such as /redfish/v1/Systems/<id>".into());
        }
        let verify = Verify::parse(info.get("redfish_verify_ca"), "redfish_verify_ca")?;
        Ok(Bmc {
            address,
            system_id: system_id.trim_end_matches('/').to_string(),
            username: text("redfish_username")?,
            password: text("redfish_password")?.map(Secret),
            verify,
        })
    }

    fn system_url(&self) -> String {
        format!("{}{}", self.address, self.system_id)
    }

    /// A resource path the BMC linked (`@odata.id`) as a URL on this BMC.
    fn resolve(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }
}

/// The redfish hardware type.
#[derive(Debug)]
pub struct Redfish {
    config: RedfishConfig,
    clients: Clients,
}

impl Default for Redfish {
    fn default() -> Self {
        Self::new(RedfishConfig::default())
    }
}

/// An HTTP failure sorted into transient and permanent.
fn http_error(what: &str, e: &reqwest::Error) -> DriverError {
    // reqwest's message names the URL (no credentials: they are never in it).
    let msg = format!("Redfish {what} failed: {e}");
    if e.is_timeout() || e.is_connect() || e.is_request() {
        DriverError::transient(msg)
    } else {
        DriverError::permanent(msg)
    }
}

fn status_error(what: &str, status: reqwest::StatusCode, body: &str) -> DriverError {
    let detail: String = body.chars().take(300).collect();
    let msg = format!("Redfish {what} failed: HTTP {status}: {detail}");
    let transient = (status.is_server_error() && status != reqwest::StatusCode::NOT_IMPLEMENTED)
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::CONFLICT;
    if transient {
        DriverError::transient(msg)
    } else {
        DriverError::permanent(msg)
    }
}

/// Redfish `PowerState` → Ironic's power state.
fn parse_power(v: &Value) -> Result<PowerState, DriverError> {
    match v.get("PowerState").and_then(Value::as_str) {
        Some("On") | Some("PoweringOn") => Ok(PowerState::On),
        Some("Off") | Some("PoweringOff") => Ok(PowerState::Off),
        Some(other) => Err(DriverError::transient(format!(
            "Redfish reported an unknown PowerState {other:?}"
        ))),
        None => Err(DriverError::transient(
            "Redfish system has no PowerState".to_string(),
        )),
    }
}

fn boot_target(device: BootDevice) -> &'static str {
    match device {
        BootDevice::Pxe => "Pxe",
        BootDevice::Disk => "Hdd",
        BootDevice::Cdrom => "Cd",
        BootDevice::Bios => "BiosSetup",
        BootDevice::UefiHttp => "UefiHttp",
        // Not offered (supported_boot_devices is BootDevice::ALL).
        BootDevice::Safe => "None",
    }
}

/// The BMC's `Boot` object as Ironic reads it (`BOOT_DEVICE_MAP`,
/// `BOOT_DEVICE_PERSISTENT_MAP`): unknown values are `None`.
fn parse_boot(system: &Value) -> BootDeviceState {
    let boot = &system["Boot"];
    let device = boot["BootSourceOverrideTarget"]
        .as_str()
        .and_then(|t| BootDevice::ALL.into_iter().find(|d| boot_target(*d) == t));
    let persistent = match boot["BootSourceOverrideEnabled"].as_str() {
        Some("Continuous") => Some(true),
        Some("Once") => Some(false),
        _ => None,
    };
    BootDeviceState { device, persistent }
}

/// The `driver_info` keys the redfish interfaces read.
const PROPERTIES: [Property; 5] = [
    Property {
        name: "redfish_address",
        description: "Required. The URL address to the Redfish controller: http(s)://host[:port], \
                      without a path. For example: https://mgmt.vendor.com.",
    },
    Property {
        name: "redfish_system_id",
        description: "Required. The canonical path to the ComputerSystem resource that the driver \
                      will interact with, within the same authority as the redfish_address \
                      property. For example: /redfish/v1/Systems/1.",
    },
    Property {
        name: "redfish_username",
        description:
            "User account with admin/server-profile access privilege. Although this \
                      property is not mandatory it's highly recommended to set a username. Optional",
    },
    Property {
        name: "redfish_password",
        description: "User account password. Although this property is not mandatory, it's \
                      highly recommended to set a password. Optional",
    },
    Property {
        name: "redfish_verify_ca",
        description: "Either a Boolean value or the path to a PEM CA bundle. If set to True the \
                      driver will verify the host certificates; if False the driver will ignore \
                      verifying the SSL certificate. If it's a path the driver will trust only \
                      the certificates of that bundle. Defaults to True. Optional",
    },
];

impl Redfish {
    /// A driver with these settings.
    pub fn new(config: RedfishConfig) -> Self {
        let clients = Clients::new(
            "BMC",
            Timeouts {
                request: config.request_timeout,
                connect: config.connect_timeout,
            },
        );
        Redfish { config, clients }
    }

    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.config.retry_min_delay)
            .with_max_delay(self.config.retry_max_delay)
            .with_max_times(self.config.retries)
            .with_jitter()
    }

    /// One request with retries of transient failures; the JSON body of the
    /// answer (`Null` when empty).
    async fn call(
        &self,
        bmc: &Bmc,
        what: &str,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Value, DriverError> {
        let client = self.clients.get(&bmc.verify)?;
        let attempt = || async {
            let mut req = client
                .request(method.clone(), url)
                .header(reqwest::header::ACCEPT, "application/json");
            if let Some(user) = &bmc.username {
                req = req.basic_auth(user, bmc.password.as_ref().map(|p| p.0.as_str()));
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = req.send().await.map_err(|e| http_error(what, &e))?;
            let status = resp.status();
            let text = resp.text().await.map_err(|e| http_error(what, &e))?;
            if !status.is_success() {
                return Err(status_error(what, status, &text));
            }
            if text.trim().is_empty() {
                return Ok(Value::Null);
            }
            serde_json::from_str(&text).map_err(|e| {
                DriverError::transient(format!("Redfish {what}: invalid JSON answer: {e}"))
            })
        };
        attempt
            .retry(self.backoff())
            .when(|e: &DriverError| e.retryable)
            .notify(|e: &DriverError, after: Duration| {
                warn!(url, error.message = %e, retry_in_ms = after.as_millis() as u64, "transient Redfish failure; retrying");
            })
            .await
    }

    async fn read_power(&self, bmc: &Bmc) -> Result<PowerState, DriverError> {
        let v = self
            .call(
                bmc,
                "get power state",
                reqwest::Method::GET,
                &bmc.system_url(),
                None,
            )
            .await?;
        parse_power(&v)
    }

    async fn reset(&self, bmc: &Bmc, reset_type: &str) -> Result<(), DriverError> {
        let url = format!("{}/Actions/ComputerSystem.Reset", bmc.system_url());
        info!(system = %bmc.system_id, reset_type, "Redfish reset");
        self.call(
            bmc,
            "reset",
            reqwest::Method::POST,
            &url,
            Some(&json!({ "ResetType": reset_type })),
        )
        .await?;
        Ok(())
    }

    /// Poll `PowerState` until it shows `want` or the change timeout passes.
    async fn wait_power(&self, bmc: &Bmc, want: PowerState) -> Result<(), DriverError> {
        let started = Instant::now();
        loop {
            let now = self.read_power(bmc).await?;
            if now == want {
                debug!(system = %bmc.system_id, state = %want, waited_ms = started.elapsed().as_millis() as u64, "power state reached");
                return Ok(());
            }
            if started.elapsed() >= self.config.power_state_change_timeout {
                return Err(DriverError::transient(format!(
                    "Timed out after {:?} waiting for the BMC to report power state {want} (it reports {now})",
                    self.config.power_state_change_timeout
                )));
            }
            tokio::time::sleep(self.config.power_poll_interval).await;
        }
    }

    async fn power(&self, node: &Node, target: PowerState) -> Result<(), DriverError> {
        let bmc = Bmc::from_node(node).map_err(DriverError::permanent)?;
        let (reset_type, end) = match target {
            PowerState::On => ("On", PowerState::On),
            PowerState::Off => ("ForceOff", PowerState::Off),
            PowerState::SoftPowerOff => ("GracefulShutdown", PowerState::Off),
            PowerState::Rebooting | PowerState::SoftRebooting => {
                // A node that is off is powered on (Ironic's reboot).
                if self.read_power(&bmc).await? == PowerState::Off {
                    ("On", PowerState::On)
                } else if target == PowerState::Rebooting {
                    ("ForceRestart", PowerState::On)
                } else {
                    ("GracefulRestart", PowerState::On)
                }
            }
            PowerState::Error => {
                return Err(DriverError::permanent("cannot set power state to error"))
            }
        };
        if matches!(target, PowerState::On | PowerState::Off) && self.read_power(&bmc).await? == end
        {
            debug!(system = %bmc.system_id, state = %end, "already in the requested power state");
            return Ok(());
        }
        self.reset(&bmc, reset_type).await?;
        self.wait_power(&bmc, end).await
    }

    /// The system's SecureBoot resource; Ironic's UnsupportedDriverExtension
    /// when the system has none.
    async fn secure_boot_url(
        &self,
        bmc: &Bmc,
        task: &ExclusiveTask,
    ) -> Result<String, DriverError> {
        let system = self
            .call(
                bmc,
                "get secure boot",
                reqwest::Method::GET,
                &bmc.system_url(),
                None,
            )
            .await?;
        let Some(path) = system["SecureBoot"]["@odata.id"].as_str() else {
            return Err(super::unsupported_extension(task, "secure boot"));
        };
        Ok(bmc.resolve(path))
    }

    async fn boot(
        &self,
        node: &Node,
        device: BootDevice,
        persistent: bool,
    ) -> Result<(), DriverError> {
        let bmc = Bmc::from_node(node).map_err(DriverError::permanent)?;
        let body = json!({"Boot": {
            "BootSourceOverrideTarget": boot_target(device),
            "BootSourceOverrideEnabled": if persistent { "Continuous" } else { "Once" },
        }});
        self.call(
            &bmc,
            "set boot device",
            reqwest::Method::PATCH,
            &bmc.system_url(),
            Some(&body),
        )
        .await?;
        Ok(())
    }
}

/// Whether a virtual media slot takes a CD (or a DVD: Ironic uses a
/// DVD-only slot for a CD, bug 2031595).
fn is_cd_slot(slot: &Value) -> bool {
    slot["MediaTypes"]
        .as_array()
        .is_some_and(|t| t.iter().any(|m| m == "CD" || m == "DVD"))
}

/// The target of a slot's `#VirtualMedia.<action>`, else the standard path.
fn vmedia_action(bmc: &Bmc, url: &str, slot: &Value, action: &str) -> String {
    match slot["Actions"][format!("#VirtualMedia.{action}")]["target"].as_str() {
        Some(t) => bmc.resolve(t),
        None => format!("{url}/Actions/VirtualMedia.{action}"),
    }
}

/// Virtual media (the `redfish-virtual-media` boot interface, Ironic's
/// `redfish/boot.py` helpers).
impl Redfish {
    async fn get_json(&self, bmc: &Bmc, what: &str, url: &str) -> Result<Value, DriverError> {
        self.call(bmc, what, reqwest::Method::GET, url, None).await
    }

    /// The members of the `VirtualMedia` collections linked from
    /// `resources`, each as (URL, body), without repeats.
    async fn slots_of(
        &self,
        bmc: &Bmc,
        resources: &[Value],
        out: &mut Vec<(String, Value)>,
    ) -> Result<(), DriverError> {
        for r in resources {
            let Some(coll) = r["VirtualMedia"]["@odata.id"].as_str() else {
                continue;
            };
            let coll = self
                .get_json(bmc, "get virtual media", &bmc.resolve(coll))
                .await?;
            for m in coll["Members"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                let Some(path) = m["@odata.id"].as_str() else {
                    continue;
                };
                let url = bmc.resolve(path);
                if out.iter().any(|(u, _)| *u == url) {
                    continue;
                }
                let body = self.get_json(bmc, "get virtual media", &url).await?;
                out.push((url, body));
            }
        }
        Ok(())
    }

    /// The system's virtual media slots (`all`: and its managers'; else the
    /// managers' only when the system has none, as Ironic inserts).
    async fn vmedia_slots(
        &self,
        bmc: &Bmc,
        all: bool,
    ) -> Result<Vec<(String, Value)>, DriverError> {
        let system = self.get_json(bmc, "get system", &bmc.system_url()).await?;
        let mut slots = Vec::new();
        let via_system = system.get("VirtualMedia").is_some();
        if via_system {
            self.slots_of(bmc, std::slice::from_ref(&system), &mut slots)
                .await?;
        }
        if all || !via_system {
            let mut managers = Vec::new();
            for m in system["Links"]["ManagedBy"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                if let Some(path) = m["@odata.id"].as_str() {
                    managers.push(
                        self.get_json(bmc, "get manager", &bmc.resolve(path))
                            .await?,
                    );
                }
            }
            self.slots_of(bmc, &managers, &mut slots).await?;
        }
        Ok(slots)
    }

    /// Eject whatever is inserted in the node's CD/DVD slots (system and
    /// managers); whether anything was (Ironic's `_eject_vmedia`).
    pub async fn eject_cd(&self, node: &Node) -> Result<bool, DriverError> {
        let bmc = Bmc::from_node(node).map_err(DriverError::permanent)?;
        let mut found = false;
        for (url, slot) in self.vmedia_slots(&bmc, true).await? {
            if !is_cd_slot(&slot) || slot["Inserted"] != Value::Bool(true) {
                continue;
            }
            info!(node_uuid = %node.uuid, slot = %url, image = %slot["Image"], "ejecting virtual media");
            self.call(
                &bmc,
                "eject virtual media",
                reqwest::Method::POST,
                &vmedia_action(&bmc, &url, &slot, "EjectMedia"),
                Some(&json!({})),
            )
            .await?;
            found = true;
        }
        Ok(found)
    }

    /// Insert `image` into the first CD/DVD slot that takes it
    /// (`VirtualMedia.InsertMedia`, inserted and write protected), then
    /// read the slot back. A slot refusing with 4xx is skipped as Ironic
    /// does; the error names the BMC's answer.
    pub async fn insert_cd(&self, node: &Node, image: &str) -> Result<(), DriverError> {
        let bmc = Bmc::from_node(node).map_err(DriverError::permanent)?;
        let uuid = node.uuid;
        let mut errors: Vec<DriverError> = Vec::new();
        for (url, slot) in self.vmedia_slots(&bmc, false).await? {
            if !is_cd_slot(&slot) {
                continue;
            }
            let body = json!({"Image": image, "Inserted": true, "WriteProtected": true});
            match self
                .call(
                    &bmc,
                    "insert virtual media",
                    reqwest::Method::POST,
                    &vmedia_action(&bmc, &url, &slot, "InsertMedia"),
                    Some(&body),
                )
                .await
            {
                Ok(_) => {}
                Err(e) if !e.retryable => {
                    warn!(node_uuid = %uuid, slot = %url, error.message = %e, "virtual media slot refused the image; trying the next");
                    errors.push(e);
                    continue;
                }
                Err(e) => {
                    errors.push(e);
                    break;
                }
            }
            let now = self.get_json(&bmc, "get virtual media", &url).await?;
            if now["Inserted"] != Value::Bool(true) {
                return Err(DriverError::transient(format!(
                    "Virtual media mount failed for node {uuid} with image {image}. Error: the BMC shows {url} not inserted after InsertMedia"
                )));
            }
            info!(node_uuid = %uuid, slot = %url, image, "inserted boot media");
            return Ok(());
        }
        Err(match (errors.first(), errors.last()) {
            (Some(first), Some(last)) if first == last => DriverError {
                message: format!(
                    "Virtual media mount failed for node {uuid} with image {image}. Error: {}",
                    first.message
                ),
                retryable: first.retryable,
            },
            (Some(first), Some(last)) => DriverError {
                message: format!(
                    "Virtual media mount failed for node {uuid} with image {image} after multiple attempts. First error: {}. Last error: {}",
                    first.message, last.message
                ),
                retryable: last.retryable,
            },
            _ => DriverError::permanent(format!(
                "No suitable virtual media device found for node {uuid} to mount image {image}"
            )),
        })
    }
}

#[async_trait]
impl Interface for Redfish {
    fn name(&self) -> &'static str {
        "redfish"
    }

    async fn validate(&self, node: &Node) -> Result<(), Invalid> {
        Bmc::from_node(node).map(|_| ()).map_err(Invalid::Config)
    }

    fn properties(&self) -> Vec<Property> {
        PROPERTIES.to_vec()
    }
}

#[async_trait]
impl PowerInterface for Redfish {
    async fn get_power_state(&self, node: &Node) -> Result<PowerState, DriverError> {
        let bmc = Bmc::from_node(node).map_err(DriverError::permanent)?;
        self.read_power(&bmc).await
    }

    async fn set_power_state(
        &self,
        task: &ExclusiveTask,
        target: PowerState,
    ) -> Result<(), DriverError> {
        self.power(task.node(), target).await
    }
}

#[async_trait]
impl ManagementInterface for Redfish {
    async fn set_boot_device(
        &self,
        task: &ExclusiveTask,
        device: BootDevice,
        persistent: bool,
    ) -> Result<(), DriverError> {
        self.boot(task.node(), device, persistent).await
    }

    fn supported_boot_devices(&self, _node: &Node) -> Vec<BootDevice> {
        BootDevice::ALL.to_vec()
    }

    async fn get_boot_device(&self, task: &ExclusiveTask) -> Result<BootDeviceState, DriverError> {
        let bmc = Bmc::from_node(task.node()).map_err(DriverError::permanent)?;
        let system = self
            .call(
                &bmc,
                "get boot device",
                reqwest::Method::GET,
                &bmc.system_url(),
                None,
            )
            .await?;
        Ok(parse_boot(&system))
    }

    fn supports_inject_nmi(&self) -> bool {
        true
    }

    /// `Boot.BootSourceOverrideMode` (`UEFI` → `uefi`, `Legacy` → `bios`).
    async fn get_boot_mode(&self, task: &ExclusiveTask) -> Result<Option<String>, DriverError> {
        let bmc = Bmc::from_node(task.node()).map_err(DriverError::permanent)?;
        let system = self
            .call(
                &bmc,
                "get boot mode",
                reqwest::Method::GET,
                &bmc.system_url(),
                None,
            )
            .await?;
        Ok(match system["Boot"]["BootSourceOverrideMode"].as_str() {
            Some("UEFI") => Some("uefi".to_string()),
            Some("Legacy") => Some("bios".to_string()),
            _ => None,
        })
    }

    /// PATCH `Boot.BootSourceOverrideMode` (sushy's `set_system_boot_options(mode=...)`).
    async fn set_boot_mode(&self, task: &ExclusiveTask, mode: &str) -> Result<(), DriverError> {
        let bmc = Bmc::from_node(task.node()).map_err(DriverError::permanent)?;
        let value = if mode == "uefi" { "UEFI" } else { "Legacy" };
        self.call(
            &bmc,
            "set boot mode",
            reqwest::Method::PATCH,
            &bmc.system_url(),
            Some(&json!({"Boot": {"BootSourceOverrideMode": value}})),
        )
        .await
        .map_err(|e| DriverError {
            message: format!(
                "Setting boot mode to {mode} failed for node {}. Error: {}",
                task.node().uuid,
                e.message
            ),
            ..e
        })?;
        Ok(())
    }

    /// `SecureBoot.SecureBootEnable` of the system's SecureBoot resource.
    async fn get_secure_boot_state(&self, task: &ExclusiveTask) -> Result<bool, DriverError> {
        let bmc = Bmc::from_node(task.node()).map_err(DriverError::permanent)?;
        let url = self.secure_boot_url(&bmc, task).await?;
        let sb = self
            .call(&bmc, "get secure boot", reqwest::Method::GET, &url, None)
            .await?;
        Ok(sb["SecureBootEnable"].as_bool().unwrap_or(false))
    }

    /// PATCH `SecureBootEnable` on the SecureBoot resource.
    async fn set_secure_boot_state(
        &self,
        task: &ExclusiveTask,
        enabled: bool,
    ) -> Result<(), DriverError> {
        let bmc = Bmc::from_node(task.node()).map_err(DriverError::permanent)?;
        let url = self.secure_boot_url(&bmc, task).await?;
        self.call(
            &bmc,
            "set secure boot",
            reqwest::Method::PATCH,
            &url,
            Some(&json!({"SecureBootEnable": enabled})),
        )
        .await?;
        Ok(())
    }

    /// `ComputerSystem.Reset` with `ResetType: Nmi` (sushy's `RESET_NMI`);
    /// a failure has Ironic's message.
    async fn inject_nmi(&self, task: &ExclusiveTask) -> Result<(), DriverError> {
        let bmc = Bmc::from_node(task.node()).map_err(DriverError::permanent)?;
        self.reset(&bmc, "Nmi").await.map_err(|e| DriverError {
            message: format!(
                "Redfish inject NMI failed for node {}. Error: {}",
                task.node().uuid,
                e.message
            ),
            retryable: e.retryable,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn bmc(info: Value) -> Result<Bmc, String> {
        Bmc::from_info(info.as_object().unwrap())
    }

    #[test]
    fn driver_info_is_parsed_and_checked() {
        let b = bmc(json!({
            "redfish_address": "https://bmc.example:8000/",
            "redfish_system_id": "/redfish/v1/Systems/abc",
            "redfish_username": "admin",
            "redfish_password": "s3cret",
            "redfish_verify_ca": "False",
        }))
        .unwrap();
        assert_eq!(
            b.system_url(),
            "https://bmc.example:8000/redfish/v1/Systems/abc"
        );
        assert_eq!(b.verify, Verify::Insecure);
        assert!(
            !format!("{b:?}").contains("s3cret"),
            "password must not show"
        );

        let bad = |info: Value| bmc(info).unwrap_err();
        assert!(bad(json!({"redfish_system_id": "/x"})).contains("redfish_address"));
        assert!(
            bad(json!({"redfish_address": "ftp://h", "redfish_system_id": "/x"})).contains("http")
        );
        let e = bad(json!({"redfish_address": "http://u:pw@h", "redfish_system_id": "/x"}));
        assert!(!e.contains("pw"), "{e}");
        assert!(bad(json!({"redfish_address": "http://h"})).contains("redfish_system_id"));
        let b = bmc(json!({
            "redfish_address": "http://h:1", "redfish_system_id": "/s", "redfish_verify_ca": "/etc/ca.pem"
        }))
        .unwrap();
        assert_eq!(b.verify, Verify::Bundle("/etc/ca.pem".into()));
    }

    #[test]
    fn statuses_are_sorted_into_transient_and_permanent() {
        use reqwest::StatusCode as S;
        assert!(status_error("x", S::SERVICE_UNAVAILABLE, "").retryable);
        assert!(status_error("x", S::TOO_MANY_REQUESTS, "").retryable);
        assert!(!status_error("x", S::NOT_IMPLEMENTED, "").retryable);
        assert!(!status_error("x", S::UNAUTHORIZED, "").retryable);
        assert!(!status_error("x", S::NOT_FOUND, "").retryable);
        assert_eq!(
            parse_power(&json!({"PowerState": "PoweringOn"})).unwrap(),
            PowerState::On
        );
        assert!(parse_power(&json!({})).is_err());
    }

    #[tokio::test]
    async fn unreachable_bmc_is_retried_then_reported() {
        let d = Redfish::new(RedfishConfig {
            retries: 2,
            retry_min_delay: Duration::from_millis(1),
            retry_max_delay: Duration::from_millis(2),
            connect_timeout: Duration::from_millis(500),
            ..Default::default()
        });
        // A port nothing listens on.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let b = bmc(json!({
            "redfish_address": format!("http://127.0.0.1:{port}"),
            "redfish_system_id": "/redfish/v1/Systems/x",
            "redfish_username": "admin",
            "redfish_password": "hunter2",
        }))
        .unwrap();
        let e = d.read_power(&b).await.unwrap_err();
        assert!(e.retryable, "{e}");
        assert!(!e.message.contains("hunter2"));
    }
}

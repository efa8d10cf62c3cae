//! `ipmi`: power and boot device through `ipmitool` (SPEC §10, issue 16).
//!
//! The transport is the `ipmitool` binary, as in Ironic's `ipmitool`
//! interfaces (see ARCHITECTURE.md for the choice over a Rust IPMI crate).
//! Each BMC command is one `ipmitool` process:
//!
//! * argv: `-I lanplus|lan -H <address> -L <priv> [-p port] [-U user]
//!   [-y kg] [-C suite] [bridging] -R 1 -N <interval> -f <file> <command>`.
//!   The password is never on the command line: it is written to a fresh
//!   file (mode 0600, removed after the command) passed with `-f`, or, with
//!   `[ipmi] store_cred_in_env`, put in the child's `IPMI_PASSWORD`
//!   variable (`-E`). It is never logged nor put in an error message.
//! * Per-BMC discipline, process-wide: at most one command in flight per
//!   BMC (address and port), and at least `min_command_interval` between
//!   the end of one command and the start of the next. Every caller goes
//!   through it: power actions, boot device, power-state polling and the
//!   conductor's power sync (which calls [`PowerInterface::get_power_state`]).
//! * Retries (Ironic's `_exec_ipmitool`): a failed command is retried until
//!   `command_retry_timeout` has passed since the first attempt (waiting
//!   for the BMC's slot counts); with `use_ipmitool_retries` only the
//!   known-transient ipmitool errors are retried. Each attempt gets the
//!   time that remains; past it the child is killed (`kill_on_timeout`).
//! * Power changes (`power on|off|soft`) are followed by `power status`
//!   polling until the target shows or `power_state_change_timeout` passes;
//!   a reboot is off (if not off) then on, as Ironic's `IPMIPower.reboot`.
//! * Boot device: UEFI nodes get Ironic's raw `0x00 0x08 0x05` with the
//!   EFI and persistence flags; BIOS nodes `chassis bootdev <dev>
//!   [options=persistent]`; first, unless disabled, the raw command that
//!   turns off the BMC's 60-second boot-flag timeout. Read back with
//!   `chassis bootparam get 5`.

use super::{
    BootDevice, BootDeviceState, DriverError, Interface, Invalid, ManagementInterface,
    PowerInterface, Property,
};
use crate::task::ExclusiveTask;
use async_trait::async_trait;
use ferric_core::{Node, PowerState};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::time::Instant;
use tracing::{debug, info, warn};
use uuid::Uuid;

/// `[ipmi]`: Ironic's `[ipmi]` options (same names and defaults; durations
/// written like `"5s"`), plus the few ferric needs to run `ipmitool`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IpmiConfig {
    /// Longest time a command is retried for (from its first attempt,
    /// waiting for the BMC included). Ironic: 60 s.
    #[serde(with = "humantime_serde")]
    pub command_retry_timeout: Duration,
    /// Shortest gap between two commands to one BMC. Ironic: 5 s (lower
    /// values crash some BMCs).
    #[serde(with = "humantime_serde")]
    pub min_command_interval: Duration,
    /// Let ipmitool retry (`-R`/`-N` sized to `command_retry_timeout`), and
    /// retry here only the known-transient errors. Ironic: false.
    pub use_ipmitool_retries: bool,
    /// Kill an ipmitool that outlives the remaining retry time. Ironic: true.
    pub kill_on_timeout: bool,
    /// Send the raw command that disables the BMC's 60 s boot-flag timeout
    /// before setting a boot device (a node's `ipmi_disable_boot_timeout`
    /// overrides it). Ironic: true.
    pub disable_boot_timeout: bool,
    /// More ipmitool error texts to treat as transient.
    pub additional_retryable_ipmi_errors: Vec<String>,
    /// Pass `-v` to ipmitool.
    pub debug: bool,
    /// Give the password in the child's environment (`IPMI_PASSWORD`, `-E`)
    /// instead of a temporary file (`-f`).
    pub store_cred_in_env: bool,
    /// Cipher suites to try, last first, for nodes without
    /// `ipmi_cipher_suite`, when the BMC refuses the suite in use.
    pub cipher_suite_versions: Vec<String>,
    /// The ipmitool program (a name looked up in `PATH`, or a path).
    pub ipmitool_path: String,
    /// Where password files are written (default: the system temp dir).
    pub tempdir: Option<PathBuf>,
    /// How long a power change may take to show in `power status`
    /// (Ironic's `[conductor] power_state_change_timeout`, 60 s).
    #[serde(with = "humantime_serde")]
    pub power_state_change_timeout: Duration,
    /// Boot mode of nodes that name none (Ironic's `[deploy]
    /// default_boot_mode`, `uefi`): picks the boot-device command.
    pub default_boot_mode: String,
}

impl Default for IpmiConfig {
    fn default() -> Self {
        IpmiConfig {
            command_retry_timeout: Duration::from_secs(60),
            min_command_interval: Duration::from_secs(5),
            use_ipmitool_retries: false,
            kill_on_timeout: true,
            disable_boot_timeout: true,
            additional_retryable_ipmi_errors: Vec::new(),
            debug: false,
            store_cred_in_env: false,
            cipher_suite_versions: Vec::new(),
            ipmitool_path: "ipmitool".to_string(),
            tempdir: None,
            power_state_change_timeout: Duration::from_secs(60),
            default_boot_mode: "uefi".to_string(),
        }
    }
}

impl IpmiConfig {
    /// Every problem at once, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.command_retry_timeout.is_zero() {
            p.push("ipmi.command_retry_timeout must be greater than 0".to_string());
        }
        if self.power_state_change_timeout < Duration::from_secs(1) {
            p.push("ipmi.power_state_change_timeout must be at least 1s".to_string());
        }
        if self.ipmitool_path.trim().is_empty() {
            p.push("ipmi.ipmitool_path must not be empty".to_string());
        }
        for cs in &self.cipher_suite_versions {
            if cs.trim().parse::<u8>().is_err() {
                p.push(format!(
                    "ipmi.cipher_suite_versions: {cs:?} is not a cipher suite number"
                ));
            }
        }
        if !matches!(self.default_boot_mode.as_str(), "uefi" | "bios") {
            p.push(format!(
                "ipmi.default_boot_mode {:?} must be \"uefi\" or \"bios\"",
                self.default_boot_mode
            ));
        }
        p
    }

    /// ipmitool's own retry options (Ironic's `_ipmitool_timing_args`).
    fn timing_args(&self) -> Vec<String> {
        let interval = self.min_command_interval.as_secs().max(1);
        if !self.use_ipmitool_retries {
            return vec!["-R".into(), "1".into(), "-N".into(), interval.to_string()];
        }
        // For each attempt, ipmitool adds one second to the interval.
        let timeout = self.command_retry_timeout.as_secs();
        let (mut spent, mut step, mut tries) = (0u64, interval, 0u64);
        while spent + step <= timeout {
            spent += step;
            step += 1;
            tries += 1;
        }
        vec![
            "-R".into(),
            tries.to_string(),
            "-N".into(),
            interval.to_string(),
        ]
    }
}

/// A password or key: shown as `***` everywhere.
#[derive(Clone, PartialEq, Eq)]
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// The privilege levels ipmitool accepts (Ironic's `VALID_PRIV_LEVELS`).
const PRIV_LEVELS: [&str; 4] = ["ADMINISTRATOR", "CALLBACK", "OPERATOR", "USER"];

/// Ironic's `IPMITOOL_RETRYABLE_FAILURES`: ipmitool's fixed texts for a
/// busy or briefly unavailable BMC.
const RETRYABLE_FAILURES: [&str; 5] = [
    "insufficient resources for session",
    "Node busy",
    "Timeout",
    "Out of space",
    "BMC initialization in progress",
];

/// ipmitool's texts for a cipher suite the BMC refuses.
const CIPHER_SUITE_ERRORS: [&str; 3] = [
    "Unsupported cipher suite ID",
    "Error in open session response message : no matching cipher suite",
    "Error in open session response message : invalid role",
];

/// IPMI bridging (`ipmi_bridging`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Bridging {
    No,
    Single {
        local_address: Option<String>,
        target_channel: String,
        target_address: String,
    },
    Dual {
        local_address: Option<String>,
        transit_channel: String,
        transit_address: String,
        target_channel: String,
        target_address: String,
    },
}

/// A node's BMC, from its `driver_info` (Ironic's `_parse_driver_info`).
#[derive(Debug, Clone)]
struct IpmiInfo {
    address: String,
    port: Option<u16>,
    username: Option<String>,
    password: Secret,
    hex_kg_key: Option<Secret>,
    priv_level: String,
    bridging: Bridging,
    /// `true` for IPMI 2.0 (`lanplus`), `false` for 1.5 (`lan`).
    lanplus: bool,
    cipher_suite: Option<u8>,
    force_boot_device: bool,
    disable_boot_timeout: Option<bool>,
}

/// A driver_info value as text: strings trimmed, numbers written out.
fn text(info: &Map<String, Value>, key: &str) -> Option<String> {
    match info.get(key)? {
        Value::Null => None,
        Value::String(s) if s.trim().is_empty() => None,
        Value::String(s) => Some(s.trim().to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        other => Some(other.to_string()),
    }
}

/// oslo's `bool_from_string`, strict: `None` for anything else.
fn parse_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_i64() {
            Some(1) => Some(true),
            Some(0) => Some(false),
            _ => None,
        },
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "1" | "t" | "true" | "on" | "y" | "yes" => Some(true),
            "0" | "f" | "false" | "off" | "n" | "no" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

fn optional_bool(info: &Map<String, Value>, key: &str) -> Result<Option<bool>, String> {
    match info.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => parse_bool(v)
            .map(Some)
            .ok_or_else(|| format!("{key} must be a boolean (true or false), not {v}")),
    }
}

/// A host name as Ironic's `is_hostname_safe` accepts it (RFC 952/1123
/// labels, at most 253 characters).
fn hostname_safe(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        // The last label may not be all digits (an IP-like name).
        && !name.rsplit('.').next().is_some_and(|l| l.chars().all(|c| c.is_ascii_digit()))
}

fn parse_port(info: &Map<String, Value>, key: &str) -> Result<Option<u16>, String> {
    let Some(raw) = text(info, key) else {
        return Ok(None);
    };
    match raw.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(Some(p as u16)),
        _ => Err(format!("{key} \"{raw}\" is not a valid port.")),
    }
}

impl IpmiInfo {
    fn from_node(node: &Node) -> Result<IpmiInfo, String> {
        let info = Self::from_info(&node.driver_info)?;
        if info.address.parse::<IpAddr>().is_err() && !hostname_safe(&info.address) {
            return Err(format!(
                "Invalid IPMI address \"{}\" for node {}. Must be a valid IP address or hostname.",
                info.address, node.uuid
            ));
        }
        Ok(info)
    }

    fn from_info(info: &Map<String, Value>) -> Result<IpmiInfo, String> {
        let Some(address) = text(info, "ipmi_address") else {
            return Err(
                "Missing the following IPMI credentials in node's driver_info: ['ipmi_address']."
                    .to_string(),
            );
        };
        let protocol = text(info, "ipmi_protocol_version").unwrap_or_else(|| "2.0".into());
        let lanplus = match protocol.as_str() {
            "2.0" | "2" => true,
            "1.5" => false,
            other => {
                return Err(format!(
                    "Invalid IPMI protocol version value {other}, the valid value can be one of 2.0, 1.5"
                ))
            }
        };
        let port = parse_port(info, "ipmi_port")?;
        parse_port(info, "ipmi_terminal_port")?;
        let field = |k: &str| text(info, k);
        let bridging = match field("ipmi_bridging").as_deref().unwrap_or("no") {
            "no" => Bridging::No,
            kind @ ("single" | "dual") => {
                let mut undefined = Vec::new();
                for k in ["ipmi_target_channel", "ipmi_target_address"] {
                    if field(k).is_none() {
                        undefined.push(k);
                    }
                }
                if kind == "dual" {
                    for k in ["ipmi_transit_channel", "ipmi_transit_address"] {
                        if field(k).is_none() {
                            undefined.push(k);
                        }
                    }
                }
                if !undefined.is_empty() {
                    let list: Vec<String> = undefined.iter().map(|k| format!("'{k}'")).collect();
                    return Err(format!("[{}] not provided", list.join(", ")));
                }
                let get = |k: &str| field(k).unwrap_or_default();
                if kind == "single" {
                    Bridging::Single {
                        local_address: field("ipmi_local_address"),
                        target_channel: get("ipmi_target_channel"),
                        target_address: get("ipmi_target_address"),
                    }
                } else {
                    Bridging::Dual {
                        local_address: field("ipmi_local_address"),
                        transit_channel: get("ipmi_transit_channel"),
                        transit_address: get("ipmi_transit_address"),
                        target_channel: get("ipmi_target_channel"),
                        target_address: get("ipmi_target_address"),
                    }
                }
            }
            other => {
                return Err(format!(
                    "Invalid value for ipmi_bridging: {other}, the valid value can be one of: ['single', 'dual', 'no']"
                ))
            }
        };
        let priv_level = field("ipmi_priv_level").unwrap_or_else(|| "ADMINISTRATOR".into());
        if !PRIV_LEVELS.contains(&priv_level.as_str()) {
            return Err(format!(
                "Invalid privilege level value:{priv_level}, the valid value can be one of {}",
                PRIV_LEVELS.join(", ")
            ));
        }
        let hex_kg_key = field("ipmi_hex_kg_key");
        if let Some(k) = &hex_kg_key {
            if k.len() % 2 != 0 {
                return Err("Number of ipmi_hex_kg_key characters is not even".to_string());
            }
            if !k.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err("ipmi_hex_kg_key must be hexadecimal".to_string());
            }
        }
        let cipher_suite = match field("ipmi_cipher_suite") {
            None => None,
            Some(cs) => {
                let n = cs
                    .parse::<u8>()
                    .map_err(|_| format!("Invalid cipher suite {cs}, expected a number"))?;
                if !lanplus {
                    return Err("Cipher suites cannot be used with IPMI 1.5".to_string());
                }
                Some(n)
            }
        };
        Ok(IpmiInfo {
            address,
            port,
            username: field("ipmi_username"),
            // Not trimmed: a password may start or end with a space.
            password: Secret(match info.get("ipmi_password") {
                Some(Value::String(s)) => s.clone(),
                None | Some(Value::Null) => String::new(),
                Some(v) => v.to_string(),
            }),
            hex_kg_key: hex_kg_key.map(Secret),
            priv_level,
            bridging,
            lanplus,
            cipher_suite,
            force_boot_device: optional_bool(info, "ipmi_force_boot_device")?.unwrap_or(false),
            disable_boot_timeout: optional_bool(info, "ipmi_disable_boot_timeout")?,
        })
    }

    /// The per-BMC discipline's key: one BMC is one address and port.
    fn bmc_key(&self) -> String {
        format!("{}:{}", self.address, self.port.unwrap_or(623))
    }

    /// ipmitool's argv before the password option and the command, with
    /// the cipher suite `suite` (the node's, or a fallback's).
    fn args(&self, config: &IpmiConfig, suite: Option<u8>) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "-I".into(),
            if self.lanplus { "lanplus" } else { "lan" }.into(),
            "-H".into(),
            self.address.clone(),
            "-L".into(),
            self.priv_level.clone(),
        ];
        if let Some(p) = self.port {
            a.extend(["-p".into(), p.to_string()]);
        }
        if let Some(u) = &self.username {
            a.extend(["-U".into(), u.clone()]);
        }
        if let Some(k) = &self.hex_kg_key {
            a.extend(["-y".into(), k.0.clone()]);
        }
        if let Some(cs) = suite {
            a.extend(["-C".into(), cs.to_string()]);
        }
        let mut bridge = |opt: &str, v: &str| a.extend([opt.to_string(), v.to_string()]);
        match &self.bridging {
            Bridging::No => {}
            Bridging::Single {
                local_address,
                target_channel,
                target_address,
            } => {
                if let Some(l) = local_address {
                    bridge("-m", l);
                }
                bridge("-b", target_channel);
                bridge("-t", target_address);
            }
            Bridging::Dual {
                local_address,
                transit_channel,
                transit_address,
                target_channel,
                target_address,
            } => {
                if let Some(l) = local_address {
                    bridge("-m", l);
                }
                bridge("-B", transit_channel);
                bridge("-T", transit_address);
                bridge("-b", target_channel);
                bridge("-t", target_address);
            }
        }
        a.extend(config.timing_args());
        if config.debug {
            a.push("-v".into());
        }
        a
    }

    /// The argv for logs: the Kg key masked (the password is never in it).
    fn shown(args: &[String]) -> String {
        let mut out = Vec::with_capacity(args.len());
        let mut mask = false;
        for a in args {
            out.push(if mask { "***" } else { a.as_str() });
            mask = a == "-y";
        }
        out.join(" ")
    }
}

/// A password file: created 0600 with a fresh name, removed on drop.
struct PasswordFile {
    path: PathBuf,
}

impl PasswordFile {
    fn create(dir: Option<&PathBuf>, password: &Secret) -> Result<PasswordFile, DriverError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let dir = dir.cloned().unwrap_or_else(std::env::temp_dir);
        let path = dir.join(format!("ferric-ipmi-{}.pw", Uuid::new_v4()));
        let fail = |e: std::io::Error| {
            DriverError::permanent(format!(
                "IPMI password file could not be created in {}: {e}",
                dir.display()
            ))
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(fail)?;
        let file = PasswordFile { path };
        // ipmitool prompts without -f; an empty password is written as NUL
        // (Ironic does the same).
        let body = if password.0.is_empty() {
            "\0"
        } else {
            password.0.as_str()
        };
        f.write_all(body.as_bytes()).map_err(fail)?;
        Ok(file)
    }
}

impl Drop for PasswordFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One attempt's argv, child environment, and password file (kept until
/// the child has exited).
type CommandLine = (Vec<String>, Vec<(String, String)>, Option<PasswordFile>);

/// One BMC's slot: held while a command runs; remembers when the last
/// command ended.
type Slot = Arc<tokio::sync::Mutex<Option<Instant>>>;

/// The process-wide map BMC → slot (every `Ipmi` shares it, like Ironic's
/// module-level `LAST_CMD_TIME`).
fn slot(key: &str) -> Slot {
    static SLOTS: OnceLock<Mutex<HashMap<String, Slot>>> = OnceLock::new();
    let map = SLOTS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = match map.lock() {
        Ok(m) => m,
        Err(p) => p.into_inner(),
    };
    map.entry(key.to_string()).or_default().clone()
}

/// How one ipmitool run ended badly.
#[derive(Debug)]
struct RunError {
    message: String,
    stderr: String,
    /// Retrying cannot help (ipmitool missing, password file failure).
    fatal: bool,
}

/// ipmitool's boot device selector names → Ironic's boot device.
fn parse_bootparam(out: &str) -> BootDeviceState {
    let device = out
        .lines()
        .find_map(|l| {
            l.split_once("Boot Device Selector :")
                .map(|(_, s)| s.trim())
        })
        .and_then(|sel| {
            if sel.contains("PXE") {
                Some(BootDevice::Pxe)
            } else if sel.contains("Hard-Drive") {
                Some(if sel.contains("Safe-Mode") {
                    BootDevice::Safe
                } else {
                    BootDevice::Disk
                })
            } else if sel.contains("BIOS") {
                Some(BootDevice::Bios)
            } else if sel.contains("CD/DVD") {
                Some(BootDevice::Cdrom)
            } else {
                None
            }
        });
    BootDeviceState {
        device,
        persistent: Some(out.contains("Options apply to all future boots")),
    }
}

/// The boot device byte of "Set System Boot Options" parameter 5 (Ironic's
/// `BOOT_DEVICE_HEXA_MAP`).
fn boot_device_hex(device: BootDevice) -> Option<&'static str> {
    Some(match device {
        BootDevice::Pxe => "0x04",
        BootDevice::Disk => "0x08",
        BootDevice::Cdrom => "0x14",
        BootDevice::Bios => "0x18",
        BootDevice::Safe => "0x0c",
        BootDevice::UefiHttp => return None,
    })
}

/// The node's boot mode as Ironic's `boot_mode_utils.get_boot_mode` finds
/// it: `instance_info.deploy_boot_mode`, then the `boot_mode` capability,
/// then the configured default.
fn boot_mode(node: &Node, default: &str) -> String {
    if let Some(Value::String(m)) = node.instance_info.get("deploy_boot_mode") {
        return m.to_ascii_lowercase();
    }
    let caps = match node.properties.get("capabilities") {
        Some(Value::String(s)) => s
            .split(',')
            .filter_map(|kv| kv.split_once(':'))
            .find(|(k, _)| k.trim() == "boot_mode")
            .map(|(_, v)| v.trim().to_ascii_lowercase()),
        Some(Value::Object(m)) => m
            .get("boot_mode")
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase),
        _ => None,
    };
    caps.unwrap_or_else(|| default.to_string())
}

/// The ipmitool power and management interfaces.
#[derive(Debug)]
pub struct Ipmi {
    config: IpmiConfig,
    /// `ipmi_force_boot_device`: the boot device to set again before each
    /// power on, per node (this process only).
    forced: Mutex<HashMap<Uuid, BootDevice>>,
}

impl Default for Ipmi {
    fn default() -> Self {
        Self::new(IpmiConfig::default())
    }
}

/// The `driver_info` keys the ipmitool interfaces read (Ironic's
/// `COMMON_PROPERTIES`).
const PROPERTIES: [Property; 17] = [
    Property {
        name: "ipmi_address",
        description: "IP address or hostname of the node. Required.",
    },
    Property {
        name: "ipmi_password",
        description: "password. Optional.",
    },
    Property {
        name: "ipmi_hex_kg_key",
        description: "Kg key for IPMIv2 authentication. The key is expected in hexadecimal format. Optional.",
    },
    Property {
        name: "ipmi_port",
        description: "remote IPMI RMCP port. Optional.",
    },
    Property {
        name: "ipmi_priv_level",
        description: "privilege level; default is ADMINISTRATOR. One of ADMINISTRATOR, CALLBACK, OPERATOR, USER. Optional.",
    },
    Property {
        name: "ipmi_username",
        description: "username; default is NULL user. Optional.",
    },
    Property {
        name: "ipmi_bridging",
        description: "bridging_type; default is \"no\". One of \"single\", \"dual\", \"no\". Optional.",
    },
    Property {
        name: "ipmi_transit_channel",
        description: "transit channel for bridged request. Required only if ipmi_bridging is set to \"dual\".",
    },
    Property {
        name: "ipmi_transit_address",
        description: "transit address for bridged request. Required only if ipmi_bridging is set to \"dual\".",
    },
    Property {
        name: "ipmi_target_channel",
        description: "destination channel for bridged request. Required only if ipmi_bridging is set to \"single\" or \"dual\".",
    },
    Property {
        name: "ipmi_target_address",
        description: "destination address for bridged request. Required only if ipmi_bridging is set to \"single\" or \"dual\".",
    },
    Property {
        name: "ipmi_local_address",
        description: "local IPMB address for bridged requests. Used only if ipmi_bridging is set to \"single\" or \"dual\". Optional.",
    },
    Property {
        name: "ipmi_protocol_version",
        description: "the version of the IPMI protocol; default is \"2.0\". One of \"1.5\", \"2.0\". Optional.",
    },
    Property {
        name: "ipmi_force_boot_device",
        description: "Whether Ironic should specify the boot device to the BMC each time the server is turned on, eg. because the BMC is not capable of remembering the selected boot device across power cycles; default value is False. Optional.",
    },
    Property {
        name: "ipmi_disable_boot_timeout",
        description: "By default ironic will send a raw IPMI command to disable the 60 second timeout for booting. Setting this option to False will NOT send that command on this node. The [ipmi]disable_boot_timeout will be used if this option is not set. Optional.",
    },
    Property {
        name: "ipmi_cipher_suite",
        description: "The number of a cipher suite to use. Only 3 (AES-128 with SHA1) or 17 (AES-128 with SHA256) should ever be used; 17 is preferred. The default value depends on the ipmitool version, some recent versions have switched from 3 to 17.",
    },
    Property {
        name: "ipmi_terminal_port",
        description: "node's UDP port to connect to. Only required for console access.",
    },
];

impl Ipmi {
    /// The interfaces with these settings.
    pub fn new(config: IpmiConfig) -> Self {
        Ipmi {
            config,
            forced: Mutex::new(HashMap::new()),
        }
    }

    /// The settings in force.
    pub fn config(&self) -> &IpmiConfig {
        &self.config
    }

    /// Run `command` against the BMC under the per-BMC discipline, with
    /// Ironic's retries; ipmitool's stdout.
    async fn exec(&self, info: &IpmiInfo, command: &[&str]) -> Result<String, DriverError> {
        let cfg = &self.config;
        let started = Instant::now();
        let deadline = started + cfg.command_retry_timeout;
        let interval = cfg.min_command_interval;
        let mut tries_left = if interval.is_zero() {
            u64::MAX
        } else {
            (cfg.command_retry_timeout.as_millis() / interval.as_millis()).max(1) as u64
        };
        let cmd_text = command.join(" ");
        let mut change_cs = !cfg.cipher_suite_versions.is_empty() && info.cipher_suite.is_none();
        let mut suite = info.cipher_suite;
        let slot = slot(&info.bmc_key());
        loop {
            tries_left = tries_left.saturating_sub(1);
            // One command in flight per BMC: wait for the slot, but not
            // past the retry deadline.
            let Ok(mut last) = tokio::time::timeout_at(deadline, slot.clone().lock_owned()).await
            else {
                return Err(DriverError::transient(format!(
                    "IPMI call failed: {cmd_text}. (BMC {} busy for {:?})",
                    info.bmc_key(),
                    cfg.command_retry_timeout
                )));
            };
            if let Some(end) = *last {
                tokio::time::sleep_until(end + interval).await;
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            let result = self
                .run_once(info, suite, command, remaining.max(Duration::from_secs(1)))
                .await;
            *last = Some(Instant::now());
            drop(last);
            let e = match result {
                Ok(out) => return Ok(out),
                Err(e) => e,
            };
            let shown_err = e
                .stderr
                .lines()
                .last()
                .unwrap_or(&e.message)
                .trim()
                .to_string();
            let failure = |retryable: bool| DriverError {
                message: format!("IPMI call failed: {cmd_text}. ({shown_err})"),
                retryable,
            };
            if e.fatal {
                return Err(failure(false));
            }
            if change_cs && CIPHER_SUITE_ERRORS.iter().any(|c| e.stderr.contains(c)) {
                suite = self.next_cipher_suite(suite);
            } else {
                change_cs = false;
            }
            let known = RETRYABLE_FAILURES
                .iter()
                .map(|s| s.to_string())
                .chain(cfg.additional_retryable_ipmi_errors.iter().cloned())
                .any(|s| e.message.contains(&s) || e.stderr.contains(&s));
            let retry = known || !cfg.use_ipmitool_retries;
            if Instant::now() >= deadline || tries_left == 0 || !retry {
                warn!(bmc = %info.bmc_key(), command = %cmd_text, error.message = %shown_err, elapsed_ms = started.elapsed().as_millis() as u64, "IPMI command failed");
                return Err(failure(known || !cfg.use_ipmitool_retries));
            }
            warn!(bmc = %info.bmc_key(), command = %cmd_text, error.message = %shown_err, "IPMI error; retrying");
        }
    }

    /// Ironic's `choose_cipher_suite`: the next suite to try, from the end
    /// of `cipher_suite_versions`.
    fn next_cipher_suite(&self, current: Option<u8>) -> Option<u8> {
        let list: Vec<u8> = self
            .config
            .cipher_suite_versions
            .iter()
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        let last = *list.last()?;
        match current.and_then(|c| list.iter().position(|x| *x == c)) {
            None => Some(last),
            Some(i) => Some(list[i.saturating_sub(1)]),
        }
    }

    /// The full argv of one attempt and the child's environment (password
    /// file path or `IPMI_PASSWORD`); the file lives as long as the guard.
    fn command_line(
        &self,
        info: &IpmiInfo,
        suite: Option<u8>,
        command: &[&str],
    ) -> Result<CommandLine, DriverError> {
        let mut args = info.args(&self.config, suite);
        let mut env = Vec::new();
        let file = if self.config.store_cred_in_env {
            args.push("-E".into());
            env.push(("IPMI_PASSWORD".to_string(), info.password.0.clone()));
            None
        } else {
            let f = PasswordFile::create(self.config.tempdir.as_ref(), &info.password)?;
            args.push("-f".into());
            args.push(f.path.display().to_string());
            Some(f)
        };
        args.extend(command.iter().map(|c| c.to_string()));
        Ok((args, env, file))
    }

    /// One ipmitool process, killed past `timeout` (with `kill_on_timeout`).
    async fn run_once(
        &self,
        info: &IpmiInfo,
        suite: Option<u8>,
        command: &[&str],
        timeout: Duration,
    ) -> Result<String, RunError> {
        let fatal = |message: String| RunError {
            message,
            stderr: String::new(),
            fatal: true,
        };
        let (args, env, _file) = self
            .command_line(info, suite, command)
            .map_err(|e| fatal(e.message))?;
        debug!(argv = %IpmiInfo::shown(&args), "ipmitool");
        let mut cmd = tokio::process::Command::new(&self.config.ipmitool_path);
        cmd.args(&args)
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Dropping the future (timeout, cancelled caller) kills it.
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .map_err(|e| fatal(format!("cannot run {}: {e}", self.config.ipmitool_path)))?;
        let output = if self.config.kill_on_timeout {
            match tokio::time::timeout(timeout, child.wait_with_output()).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(RunError {
                        message: format!("ipmitool killed after {timeout:?} (Timeout)"),
                        stderr: String::new(),
                        fatal: false,
                    })
                }
            }
        } else {
            child.wait_with_output().await
        }
        .map_err(|e| RunError {
            message: format!("ipmitool: {e}"),
            stderr: String::new(),
            fatal: false,
        })?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            return Ok(stdout);
        }
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        Err(RunError {
            message: format!("ipmitool exited with {}", output.status),
            stderr,
            fatal: false,
        })
    }

    async fn read_power(&self, info: &IpmiInfo) -> Result<PowerState, DriverError> {
        let out = self.exec(info, &["power", "status"]).await?;
        match out.trim() {
            "Chassis Power is on" => Ok(PowerState::On),
            "Chassis Power is off" => Ok(PowerState::Off),
            other => Err(DriverError::transient(format!(
                "IPMI call failed: power status. (unexpected answer {other:?})"
            ))),
        }
    }

    /// `power <verb>`, then poll until `want` shows (Ironic's `_set_and_wait`
    /// and `node_wait_for_power_state`).
    async fn set_and_wait(
        &self,
        info: &IpmiInfo,
        verb: &str,
        want: PowerState,
    ) -> Result<(), DriverError> {
        self.exec(info, &["power", verb]).await?;
        let started = Instant::now();
        let mut delay = Duration::from_millis(250);
        loop {
            match self.read_power(info).await {
                Ok(s) if s == want => {
                    debug!(bmc = %info.bmc_key(), state = %want, waited_ms = started.elapsed().as_millis() as u64, "power state reached");
                    return Ok(());
                }
                Ok(_) => {}
                Err(e) => {
                    debug!(bmc = %info.bmc_key(), error.message = %e, "power status while waiting")
                }
            }
            if started.elapsed() >= self.config.power_state_change_timeout {
                return Err(DriverError::transient(format!(
                    "Failed to set node power state to {want}. (not reached after {:?})",
                    self.config.power_state_change_timeout
                )));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// `ipmi_force_boot_device`: set the remembered device again (one-time)
    /// before powering on (Ironic's `ensure_next_boot_device`).
    async fn ensure_next_boot_device(
        &self,
        node: &Node,
        info: &IpmiInfo,
    ) -> Result<(), DriverError> {
        if !info.force_boot_device {
            return Ok(());
        }
        let device = match self.forced.lock() {
            Ok(m) => m.get(&node.uuid).copied(),
            Err(p) => p.into_inner().get(&node.uuid).copied(),
        };
        if let Some(d) = device {
            self.write_boot_device(node, info, d, false).await?;
        }
        Ok(())
    }

    async fn power(&self, node: &Node, target: PowerState) -> Result<(), DriverError> {
        let info = IpmiInfo::from_node(node).map_err(DriverError::permanent)?;
        info!(node_uuid = %node.uuid, bmc = %info.bmc_key(), target = %target, "IPMI power change");
        match target {
            PowerState::On => {
                self.ensure_next_boot_device(node, &info).await?;
                self.set_and_wait(&info, "on", PowerState::On).await
            }
            PowerState::Off => self.set_and_wait(&info, "off", PowerState::Off).await,
            PowerState::SoftPowerOff => self.set_and_wait(&info, "soft", PowerState::Off).await,
            PowerState::Rebooting => {
                // Some BMCs refuse "off" when off already (Ironic's reboot).
                if self.read_power(&info).await? != PowerState::Off {
                    self.set_and_wait(&info, "off", PowerState::Off).await?;
                }
                self.ensure_next_boot_device(node, &info).await?;
                self.set_and_wait(&info, "on", PowerState::On).await
            }
            PowerState::SoftRebooting => {
                self.set_and_wait(&info, "soft", PowerState::Off).await?;
                self.ensure_next_boot_device(node, &info).await?;
                self.set_and_wait(&info, "on", PowerState::On).await
            }
            PowerState::Error => Err(DriverError::permanent(
                "set_power_state called with invalid power state error.",
            )),
        }
    }

    /// The commands that set `device` (Ironic's `IPMIManagement.set_boot_device`
    /// after its checks): each is one ipmitool call.
    fn boot_commands(
        &self,
        node: &Node,
        info: &IpmiInfo,
        device: BootDevice,
        persistent: bool,
    ) -> Result<Vec<Vec<String>>, DriverError> {
        let hex = boot_device_hex(device).ok_or_else(|| {
            DriverError::permanent(format!(
                "Invalid boot device {} specified.",
                device.as_str()
            ))
        })?;
        let words = |s: &str| s.split(' ').map(str::to_string).collect::<Vec<_>>();
        let mut cmds = Vec::new();
        if info
            .disable_boot_timeout
            .unwrap_or(self.config.disable_boot_timeout)
        {
            // Without it the BMC drops the boot flags after 60 seconds.
            cmds.push(words("raw 0x00 0x08 0x03 0x08"));
        }
        if boot_mode(node, &self.config.default_boot_mode) == "uefi" {
            let flags = if persistent { "0xe0" } else { "0xa0" };
            cmds.push(words(&format!(
                "raw 0x00 0x08 0x05 {flags} {hex} 0x00 0x00 0x00"
            )));
        } else {
            let mut c = words(&format!("chassis bootdev {}", device.as_str()));
            if persistent {
                c.push("options=persistent".into());
            }
            cmds.push(c);
        }
        Ok(cmds)
    }

    async fn write_boot_device(
        &self,
        node: &Node,
        info: &IpmiInfo,
        device: BootDevice,
        persistent: bool,
    ) -> Result<(), DriverError> {
        for c in self.boot_commands(node, info, device, persistent)? {
            let words: Vec<&str> = c.iter().map(String::as_str).collect();
            self.exec(info, &words).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Interface for Ipmi {
    fn name(&self) -> &'static str {
        "ipmitool"
    }

    async fn validate(&self, node: &Node) -> Result<(), Invalid> {
        // Never touches the BMC: validate runs often and BMCs are fragile
        // (Ironic's note).
        IpmiInfo::from_node(node)
            .map(|_| ())
            .map_err(Invalid::Config)
    }

    fn properties(&self) -> Vec<Property> {
        PROPERTIES.to_vec()
    }
}

#[async_trait]
impl PowerInterface for Ipmi {
    async fn get_power_state(&self, node: &Node) -> Result<PowerState, DriverError> {
        let info = IpmiInfo::from_node(node).map_err(DriverError::permanent)?;
        self.read_power(&info).await
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
impl ManagementInterface for Ipmi {
    async fn set_boot_device(
        &self,
        task: &ExclusiveTask,
        device: BootDevice,
        persistent: bool,
    ) -> Result<(), DriverError> {
        let node = task.node();
        let info = IpmiInfo::from_node(node).map_err(DriverError::permanent)?;
        let mut persistent = persistent;
        if info.force_boot_device {
            // Remembered here and set again before each power on; the BMC
            // gets a one-time setting (it may not keep a persistent one).
            let mut m = match self.forced.lock() {
                Ok(m) => m,
                Err(p) => p.into_inner(),
            };
            if persistent {
                m.insert(node.uuid, device);
            } else {
                m.remove(&node.uuid);
            }
            persistent = false;
        }
        self.write_boot_device(node, &info, device, persistent)
            .await
    }

    fn supported_boot_devices(&self, _node: &Node) -> Vec<BootDevice> {
        vec![
            BootDevice::Pxe,
            BootDevice::Disk,
            BootDevice::Cdrom,
            BootDevice::Bios,
            BootDevice::Safe,
        ]
    }

    async fn get_boot_device(&self, task: &ExclusiveTask) -> Result<BootDeviceState, DriverError> {
        let node = task.node();
        let info = IpmiInfo::from_node(node).map_err(DriverError::permanent)?;
        if info.force_boot_device {
            let remembered = match self.forced.lock() {
                Ok(m) => m.get(&node.uuid).copied(),
                Err(p) => p.into_inner().get(&node.uuid).copied(),
            };
            if let Some(d) = remembered {
                return Ok(BootDeviceState {
                    device: Some(d),
                    persistent: Some(true),
                });
            }
        }
        let out = self
            .exec(&info, &["chassis", "bootparam", "get", "5"])
            .await?;
        Ok(parse_bootparam(&out))
    }

    fn supports_inject_nmi(&self) -> bool {
        true
    }

    /// `power diag` (Ironic's `IPMIManagement.inject_nmi`).
    async fn inject_nmi(&self, task: &ExclusiveTask) -> Result<(), DriverError> {
        let info = IpmiInfo::from_node(task.node()).map_err(DriverError::permanent)?;
        self.exec(&info, &["power", "diag"]).await.map(|_| ())
    }
}

/// Read the power state of one BMC with these settings (the `bench ipmi`
/// path: the same discipline and argv as a node's power sync).
pub async fn read_power_state(
    ipmi: &Ipmi,
    driver_info: &Map<String, Value>,
) -> Result<PowerState, DriverError> {
    let info = IpmiInfo::from_info(driver_info).map_err(DriverError::permanent)?;
    ipmi.read_power(&info).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    fn info(v: Value) -> Result<IpmiInfo, String> {
        IpmiInfo::from_info(v.as_object().unwrap())
    }

    fn node(driver_info: Value) -> Node {
        serde_json::from_value(json!({
            "uuid": Uuid::new_v4(),
            "name": null, "driver": "ipmi", "driver_info": driver_info, "properties": {},
            "extra": {}, "instance_info": {}, "instance_uuid": null, "interfaces": {},
            "provision_state": "manageable", "target_provision_state": null,
            "power_state": null, "target_power_state": null, "maintenance": false,
            "maintenance_reason": null, "last_error": null, "conductor_group": "",
            "conductor_affinity": null, "reservation": null, "lock_epoch": 0,
            "lock_waiters": 0, "revision": 0, "created_at": 0, "updated_at": null,
            "provision_updated_at": null
        }))
        .unwrap()
    }

    #[test]
    fn driver_info_is_checked_with_ironics_messages() {
        let bad = |v: Value| info(v).unwrap_err();
        assert_eq!(
            bad(json!({})),
            "Missing the following IPMI credentials in node's driver_info: ['ipmi_address']."
        );
        assert_eq!(
            bad(json!({"ipmi_address": "h", "ipmi_protocol_version": "3"})),
            "Invalid IPMI protocol version value 3, the valid value can be one of 2.0, 1.5"
        );
        assert_eq!(
            bad(json!({"ipmi_address": "h", "ipmi_port": "99999"})),
            "ipmi_port \"99999\" is not a valid port."
        );
        assert_eq!(
            bad(json!({"ipmi_address": "h", "ipmi_priv_level": "ROOT"})),
            "Invalid privilege level value:ROOT, the valid value can be one of ADMINISTRATOR, CALLBACK, OPERATOR, USER"
        );
        assert_eq!(
            bad(json!({"ipmi_address": "h", "ipmi_bridging": "triple"})),
            "Invalid value for ipmi_bridging: triple, the valid value can be one of: ['single', 'dual', 'no']"
        );
        assert_eq!(
            bad(json!({"ipmi_address": "h", "ipmi_bridging": "dual", "ipmi_target_channel": "7"})),
            "['ipmi_target_address', 'ipmi_transit_channel', 'ipmi_transit_address'] not provided"
        );
        assert_eq!(
            bad(json!({"ipmi_address": "h", "ipmi_hex_kg_key": "abc"})),
            "Number of ipmi_hex_kg_key characters is not even"
        );
        assert_eq!(
            bad(json!({"ipmi_address": "h", "ipmi_cipher_suite": "x"})),
            "Invalid cipher suite x, expected a number"
        );
        assert_eq!(
            bad(
                json!({"ipmi_address": "h", "ipmi_cipher_suite": 3, "ipmi_protocol_version": "1.5"})
            ),
            "Cipher suites cannot be used with IPMI 1.5"
        );
        assert!(
            bad(json!({"ipmi_address": "h", "ipmi_force_boot_device": "maybe"}))
                .contains("ipmi_force_boot_device must be a boolean")
        );
        assert!(
            bad(json!({"ipmi_address": "h", "ipmi_disable_boot_timeout": []}))
                .contains("ipmi_disable_boot_timeout must be a boolean")
        );
        let n = node(json!({"ipmi_address": "bad host!"}));
        let e = IpmiInfo::from_node(&n).unwrap_err();
        assert!(
            e.starts_with("Invalid IPMI address \"bad host!\" for node "),
            "{e}"
        );

        let ok = info(json!({
            "ipmi_address": "10.0.0.5", "ipmi_port": 6230, "ipmi_username": "admin",
            "ipmi_password": "s3cret", "ipmi_cipher_suite": "17", "ipmi_force_boot_device": "True",
            "ipmi_disable_boot_timeout": false,
        }))
        .unwrap();
        assert_eq!(ok.port, Some(6230));
        assert_eq!(ok.cipher_suite, Some(17));
        assert!(ok.force_boot_device);
        assert_eq!(ok.disable_boot_timeout, Some(false));
        assert!(
            !format!("{ok:?}").contains("s3cret"),
            "password must not show"
        );
        assert!(IpmiInfo::from_node(&node(json!({"ipmi_address": "bmc-1.rack.example"}))).is_ok());
    }

    #[test]
    fn argv_follows_ironic_and_never_carries_the_password() {
        let ipmi = Ipmi::new(IpmiConfig {
            min_command_interval: Duration::from_secs(5),
            ..Default::default()
        });
        let i = info(json!({
            "ipmi_address": "10.0.0.5", "ipmi_port": "6230", "ipmi_username": "admin",
            "ipmi_password": "hunter2", "ipmi_priv_level": "OPERATOR", "ipmi_hex_kg_key": "abcd",
            "ipmi_cipher_suite": 17, "ipmi_bridging": "dual", "ipmi_transit_channel": "0",
            "ipmi_transit_address": "0x82", "ipmi_target_channel": "7", "ipmi_target_address": "0x72",
            "ipmi_local_address": "0x20",
        }))
        .unwrap();
        let (args, env, file) = ipmi
            .command_line(&i, i.cipher_suite, &["power", "status"])
            .unwrap();
        let file = file.unwrap();
        let expected_head = "-I lanplus -H 10.0.0.5 -L OPERATOR -p 6230 -U admin -y abcd -C 17 \
                             -m 0x20 -B 0 -T 0x82 -b 7 -t 0x72 -R 1 -N 5 -f";
        assert_eq!(args[..args.len() - 3].join(" "), expected_head);
        assert_eq!(args[args.len() - 3], file.path.display().to_string());
        assert_eq!(&args[args.len() - 2..], ["power", "status"]);
        assert!(env.is_empty());
        assert!(args.iter().all(|a| !a.contains("hunter2")), "{args:?}");
        assert!(!IpmiInfo::shown(&args).contains("abcd"));
        // The file holds the password, only for its owner, and goes away.
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(&file.path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&file.path).unwrap(), "hunter2");
        let path = file.path.clone();
        drop(file);
        assert!(!path.exists());

        // IPMI 1.5, no user, empty password: NUL in the file.
        let i = info(json!({"ipmi_address": "h", "ipmi_protocol_version": "1.5"})).unwrap();
        let (args, _, file) = ipmi.command_line(&i, None, &["power", "on"]).unwrap();
        assert_eq!(args[..6].join(" "), "-I lan -H h -L ADMINISTRATOR");
        assert!(!args.contains(&"-U".to_string()));
        assert_eq!(std::fs::read(&file.unwrap().path).unwrap(), b"\0");

        // store_cred_in_env: -E and the variable, no file.
        let env_ipmi = Ipmi::new(IpmiConfig {
            store_cred_in_env: true,
            ..Default::default()
        });
        let i = info(json!({"ipmi_address": "h", "ipmi_password": "pw"})).unwrap();
        let (args, env, file) = env_ipmi.command_line(&i, None, &["power", "on"]).unwrap();
        assert!(file.is_none());
        assert!(args.contains(&"-E".to_string()) && !args.contains(&"pw".to_string()));
        assert_eq!(env, vec![("IPMI_PASSWORD".to_string(), "pw".to_string())]);
    }

    #[test]
    fn timing_args_match_ironic() {
        let c = IpmiConfig::default();
        assert_eq!(c.timing_args(), ["-R", "1", "-N", "5"]);
        // 60 s budget, 5 s start, +1 s per try: 5+6+7+8+9+10+11 = 56.
        let c = IpmiConfig {
            use_ipmitool_retries: true,
            ..Default::default()
        };
        assert_eq!(c.timing_args(), ["-R", "7", "-N", "5"]);
    }

    #[test]
    fn boot_commands_follow_ironic() {
        let ipmi = Ipmi::default();
        let mut n = node(json!({"ipmi_address": "h"}));
        let i = IpmiInfo::from_node(&n).unwrap();
        let show = |c: Vec<Vec<String>>| c.into_iter().map(|c| c.join(" ")).collect::<Vec<_>>();
        // Default boot mode: uefi → raw boot flags with the EFI bit.
        assert_eq!(
            show(ipmi.boot_commands(&n, &i, BootDevice::Pxe, true).unwrap()),
            [
                "raw 0x00 0x08 0x03 0x08",
                "raw 0x00 0x08 0x05 0xe0 0x04 0x00 0x00 0x00"
            ]
        );
        assert_eq!(
            show(ipmi.boot_commands(&n, &i, BootDevice::Safe, false).unwrap()),
            [
                "raw 0x00 0x08 0x03 0x08",
                "raw 0x00 0x08 0x05 0xa0 0x0c 0x00 0x00 0x00"
            ]
        );
        // BIOS boot mode (capability) → chassis bootdev, persistent option.
        n.properties
            .insert("capabilities".into(), json!("boot_mode:bios,foo:bar"));
        n.driver_info
            .insert("ipmi_disable_boot_timeout".into(), json!("false"));
        let i = IpmiInfo::from_node(&n).unwrap();
        assert_eq!(
            show(ipmi.boot_commands(&n, &i, BootDevice::Cdrom, true).unwrap()),
            ["chassis bootdev cdrom options=persistent"]
        );
        assert_eq!(
            show(ipmi.boot_commands(&n, &i, BootDevice::Disk, false).unwrap()),
            ["chassis bootdev disk"]
        );
        // instance_info wins over the capability.
        n.instance_info
            .insert("deploy_boot_mode".into(), json!("uefi"));
        assert_eq!(boot_mode(&n, "bios"), "uefi");
        assert!(ipmi
            .boot_commands(&n, &i, BootDevice::UefiHttp, false)
            .is_err());
    }

    #[test]
    fn bootparam_output_is_parsed() {
        let out =
            " Boot Flags :\n   - Boot Flag Valid\n   - Options apply to all future boots\n   \
                   - BIOS EFI boot \n   - Boot Device Selector : Force PXE\n";
        assert_eq!(
            parse_bootparam(out),
            BootDeviceState {
                device: Some(BootDevice::Pxe),
                persistent: Some(true)
            }
        );
        let out = "   - Options apply to only next boot\n   - Boot Device Selector : Force Boot from default Hard-Drive, request Safe-Mode\n";
        assert_eq!(parse_bootparam(out).device, Some(BootDevice::Safe));
        assert_eq!(parse_bootparam(out).persistent, Some(false));
        let out = "   - Boot Device Selector : Force Boot from CD/DVD\n";
        assert_eq!(parse_bootparam(out).device, Some(BootDevice::Cdrom));
        let out = "   - Boot Device Selector : No override\n";
        assert_eq!(parse_bootparam(out).device, None);
    }

    #[test]
    fn cipher_suites_fall_back_last_first() {
        let ipmi = Ipmi::new(IpmiConfig {
            cipher_suite_versions: vec!["3".into(), "17".into()],
            ..Default::default()
        });
        assert_eq!(ipmi.next_cipher_suite(None), Some(17));
        assert_eq!(ipmi.next_cipher_suite(Some(17)), Some(3));
        assert_eq!(ipmi.next_cipher_suite(Some(3)), Some(3));
        assert_eq!(Ipmi::default().next_cipher_suite(None), None);
    }

    #[test]
    fn config_problems_name_their_key() {
        assert!(IpmiConfig::default().problems().is_empty());
        let c = IpmiConfig {
            command_retry_timeout: Duration::ZERO,
            cipher_suite_versions: vec!["seventeen".into()],
            default_boot_mode: "legacy".into(),
            ipmitool_path: " ".into(),
            ..Default::default()
        };
        let p = c.problems();
        assert_eq!(p.len(), 4, "{p:?}");
        assert!(p.iter().all(|p| p.starts_with("ipmi.")), "{p:?}");
        let bad: Result<IpmiConfig, _> = serde_json::from_str(r#"{"min_command_intervall": "1s"}"#);
        assert!(bad.is_err());
        let ok: IpmiConfig = serde_json::from_str(r#"{"min_command_interval": "250ms"}"#).unwrap();
        assert_eq!(ok.min_command_interval, Duration::from_millis(250));
    }

    /// A fake `ipmitool`: a shell script that logs each call's start and
    /// end (with its pid) and then runs `body`.
    fn fake_ipmitool(dir: &std::path::Path, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("ipmitool");
        let log = dir.join("calls.log");
        let script = format!(
            "#!/bin/sh\necho \"start $$ $(date +%s%N)\" >> {log}\n{body}\nrc=$?\necho \"end $$ $(date +%s%N)\" >> {log}\nexit $rc\n",
            log = log.display()
        );
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn calls(dir: &std::path::Path) -> Vec<(String, u32, u128)> {
        std::fs::read_to_string(dir.join("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let mut w = l.split(' ');
                (
                    w.next().unwrap().to_string(),
                    w.next().unwrap().parse().unwrap(),
                    w.next().unwrap().parse().unwrap(),
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn one_command_per_bmc_at_a_time_with_the_interval_between() {
        let dir = tempfile::tempdir().unwrap();
        let tool = fake_ipmitool(dir.path(), "sleep 0.05; echo 'Chassis Power is on'");
        let ipmi = Arc::new(Ipmi::new(IpmiConfig {
            ipmitool_path: tool.display().to_string(),
            min_command_interval: Duration::from_millis(30),
            tempdir: Some(dir.path().to_path_buf()),
            ..Default::default()
        }));
        let driver_info =
            json!({"ipmi_address": "127.0.0.1", "ipmi_port": 40001, "ipmi_password": "pw"});
        let mut joins = Vec::new();
        for _ in 0..6 {
            let ipmi = ipmi.clone();
            let di = driver_info.as_object().unwrap().clone();
            joins.push(tokio::spawn(
                async move { read_power_state(&ipmi, &di).await },
            ));
        }
        for j in joins {
            assert_eq!(j.await.unwrap().unwrap(), PowerState::On);
        }
        let log = calls(dir.path());
        assert_eq!(log.len(), 12, "{log:?}");
        // Strictly alternating start/end, and each start at least the
        // interval after the previous end.
        for pair in log.windows(2) {
            assert_ne!(pair[0].0, pair[1].0, "overlap: {log:?}");
            if pair[0].0 == "end" {
                let gap_ms = (pair[1].2 - pair[0].2) / 1_000_000;
                assert!(gap_ms >= 25, "gap {gap_ms} ms: {log:?}");
            }
        }
        // Password files are gone.
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".pw"))
            .collect();
        assert!(left.is_empty());
    }

    #[tokio::test]
    async fn a_hung_ipmitool_is_killed_and_the_command_fails_within_the_retry_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let tool = fake_ipmitool(dir.path(), "exec sleep 30");
        let ipmi = Ipmi::new(IpmiConfig {
            ipmitool_path: tool.display().to_string(),
            min_command_interval: Duration::from_millis(10),
            command_retry_timeout: Duration::from_millis(1500),
            ..Default::default()
        });
        let di =
            json!({"ipmi_address": "127.0.0.1", "ipmi_port": 40002, "ipmi_password": "hunter2"});
        let started = std::time::Instant::now();
        let e = read_power_state(&ipmi, di.as_object().unwrap())
            .await
            .unwrap_err();
        let took = started.elapsed();
        assert!(took < Duration::from_secs(4), "{took:?}");
        assert!(
            e.message.starts_with("IPMI call failed: power status."),
            "{e}"
        );
        assert!(!e.message.contains("hunter2"));
        // The child (the `exec`ed sleep keeps the script's pid) is gone.
        let pid = calls(dir.path())[0].1;
        let mut gone = false;
        for _ in 0..50 {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            if status.is_empty() || status.contains("State:\tZ") {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(gone, "ipmitool {pid} still running");
    }

    #[tokio::test]
    async fn failures_are_retried_until_success_or_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let counter = dir.path().join("n");
        // Fails twice with a busy BMC, then answers.
        let tool = fake_ipmitool(
            dir.path(),
            &format!(
                "n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; \
                 if [ $n -le 2 ]; then echo 'Error: Node busy' >&2; exit 1; fi; echo 'Chassis Power is off'",
                c = counter.display()
            ),
        );
        let ipmi = Ipmi::new(IpmiConfig {
            ipmitool_path: tool.display().to_string(),
            min_command_interval: Duration::from_millis(10),
            command_retry_timeout: Duration::from_secs(5),
            ..Default::default()
        });
        let di = json!({"ipmi_address": "127.0.0.1", "ipmi_port": 40003});
        assert_eq!(
            read_power_state(&ipmi, di.as_object().unwrap())
                .await
                .unwrap(),
            PowerState::Off
        );
        let starts = calls(dir.path()).iter().filter(|c| c.0 == "start").count();
        assert_eq!(starts, 3);

        // Always failing: gives up after command_retry_timeout, retryable.
        let tool = fake_ipmitool(
            dir.path(),
            "echo 'Error: Unable to establish IPMI v2 / RMCP+ session' >&2; exit 1",
        );
        let ipmi = Ipmi::new(IpmiConfig {
            ipmitool_path: tool.display().to_string(),
            min_command_interval: Duration::from_millis(100),
            command_retry_timeout: Duration::from_millis(700),
            ..Default::default()
        });
        let started = std::time::Instant::now();
        let e = read_power_state(&ipmi, di.as_object().unwrap())
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(
            e.message,
            "IPMI call failed: power status. (Error: Unable to establish IPMI v2 / RMCP+ session)"
        );
        assert!(e.retryable);

        // A missing ipmitool is permanent at once.
        let ipmi = Ipmi::new(IpmiConfig {
            ipmitool_path: dir.path().join("nope").display().to_string(),
            ..Default::default()
        });
        let e = read_power_state(&ipmi, di.as_object().unwrap())
            .await
            .unwrap_err();
        assert!(!e.retryable && e.message.contains("cannot run"), "{e}");
    }
}

//! Hardware interfaces (SPEC §10), composed as Ironic composes them.
//!
//! A node's driver is not one object: it is a *hardware type* (`fake-hardware`,
//! `redfish`, ...) plus one implementation per *interface* (power,
//! management, boot, deploy, and the optional bios, console, firmware,
//! inspect, network, raid, rescue, storage and vendor). The node names each
//! implementation in its `<interface>_interface` field; [`registry::Drivers`]
//! knows which implementations exist, which a hardware type supports, which
//! the operator enabled, and builds the node's [`Composed`] driver.
//!
//! Actions that change hardware take an [`ExclusiveTask`]: calling them under
//! a shared task does not compile (Ironic checks this at run time). Reads take
//! the node. No HTTP types of ferric's own API cross this boundary.
//!
//! Steps: every interface may offer deploy and clean steps (a name, a
//! priority, arguments); the conductor's steps engine (`crate::provision`)
//! orders them and runs them one by one through [`Interface::execute_step`].

pub mod agent_client;
pub mod direct;
pub mod fake;
pub mod generic;
pub mod ipmi;
pub mod redfish;
pub mod registry;
pub mod tls;
pub mod vmedia;

pub use ferric_core::InterfaceKind;
pub use registry::{Composed, Drivers, HardwareConfig, InterfaceError};

use crate::task::ExclusiveTask;
use async_trait::async_trait;
use ferric_core::{Node, PowerState};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A driver failure. `retryable` separates a flaky BMC from a bad request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DriverError {
    pub message: String,
    pub retryable: bool,
}

impl DriverError {
    /// A failure worth retrying later (timeouts, BMC busy).
    pub fn transient(message: impl Into<String>) -> Self {
        DriverError {
            message: message.into(),
            retryable: true,
        }
    }

    /// A failure that will not go away by itself (bad credentials, bad input).
    pub fn permanent(message: impl Into<String>) -> Self {
        DriverError {
            message: message.into(),
            retryable: false,
        }
    }
}

/// Boot devices (Ironic's names, `ironic.common.boot_devices`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootDevice {
    Pxe,
    Disk,
    Cdrom,
    Bios,
    /// UEFI HTTP boot (`uefihttp`).
    #[serde(rename = "uefihttp")]
    UefiHttp,
    /// Hard disk in safe mode (`safe`; IPMI only, not in [`BootDevice::ALL`]).
    Safe,
}

impl BootDevice {
    /// Every device, in Ironic's order.
    pub const ALL: [BootDevice; 5] = [
        BootDevice::Pxe,
        BootDevice::Disk,
        BootDevice::Cdrom,
        BootDevice::Bios,
        BootDevice::UefiHttp,
    ];

    /// Ironic's name.
    pub fn as_str(self) -> &'static str {
        match self {
            BootDevice::Pxe => "pxe",
            BootDevice::Disk => "disk",
            BootDevice::Cdrom => "cdrom",
            BootDevice::Bios => "bios",
            BootDevice::UefiHttp => "uefihttp",
            BootDevice::Safe => "safe",
        }
    }

    /// The device named `name` (Ironic's names).
    pub fn parse(name: &str) -> Option<BootDevice> {
        Self::ALL
            .into_iter()
            .chain([BootDevice::Safe])
            .find(|d| d.as_str() == name)
    }
}

/// What the BMC says the next boot device is; `None` when it does not say
/// (Ironic's `{"boot_device": ..., "persistent": ...}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BootDeviceState {
    pub device: Option<BootDevice>,
    pub persistent: Option<bool>,
}

/// One `driver_info` key an interface reads, for `GET
/// /v1/drivers/{name}/properties` (Ironic's `get_properties`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Property {
    pub name: &'static str,
    /// Ironic's description; required keys start with "Required.".
    pub description: &'static str,
}

/// Deploying or cleaning: which steps, and which wait state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Deploy,
    Clean,
}

impl Phase {
    /// `deploy` or `clean` (Ironic's step type).
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Deploy => "deploy",
            Phase::Clean => "clean",
        }
    }
}

/// What a deploy or clean step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    /// Finished: the engine goes on with the next step.
    Done,
    /// Waits for the ramdisk agent to call back (`wait call-back` / `clean wait`).
    Wait,
}

/// One deploy or clean step, as Ironic writes it
/// (`{"interface": "deploy", "step": "erase_devices", "priority": 10, "args": {}}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub interface: InterfaceKind,
    pub step: String,
    #[serde(default)]
    pub priority: i64,
    #[serde(default)]
    pub args: Map<String, Value>,
    #[serde(default)]
    pub abortable: bool,
}

impl Step {
    /// A step with no arguments.
    pub fn new(interface: InterfaceKind, step: &str, priority: i64) -> Step {
        Step {
            interface,
            step: step.to_string(),
            priority,
            args: Map::new(),
            abortable: false,
        }
    }

    /// `interface.step`, for messages.
    pub fn label(&self) -> String {
        format!("{}.{}", self.interface, self.step)
    }

    /// The step as a JSON object (what `clean_step` / `deploy_step` show).
    pub fn to_map(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            // A struct of strings, numbers and maps always serialises to an object.
            _ => Map::new(),
        }
    }
}

/// Why an interface cannot be used for a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// The node's settings are wrong or missing (fixable by the operator).
    Config(String),
    /// The implementation does nothing by design (`no-*`).
    Unsupported(String),
}

/// What every interface implementation has: a name, validation, and steps.
#[async_trait]
pub trait Interface: Send + Sync + 'static {
    /// The implementation's name (`fake`, `redfish`, `ipxe`, `no-rescue`, ...).
    fn name(&self) -> &'static str;

    /// Whether the node's settings let this interface work.
    async fn validate(&self, _node: &Node) -> Result<(), Invalid> {
        Ok(())
    }

    /// `false` for the `no-*` implementations: verbs that need the
    /// interface are refused.
    fn supported(&self) -> bool {
        true
    }

    /// The `driver_info` keys this interface reads, with Ironic's
    /// descriptions (`get_properties`).
    fn properties(&self) -> Vec<Property> {
        Vec::new()
    }

    /// The clean steps this interface offers for `node` (priority 0: manual
    /// cleaning only).
    fn clean_steps(&self, _node: &Node) -> Vec<Step> {
        Vec::new()
    }

    /// The deploy steps this interface offers for `node`.
    fn deploy_steps(&self, _node: &Node) -> Vec<Step> {
        Vec::new()
    }

    /// Run one of this interface's steps.
    async fn execute_step(
        &self,
        _driver: &Composed,
        _task: &mut ExclusiveTask,
        step: &Step,
    ) -> Result<StepOutcome, DriverError> {
        Err(DriverError::permanent(format!(
            "the {} {} interface has no step {}",
            self.name(),
            step.interface,
            step.step
        )))
    }

    /// A step that waited for the agent: the agent called back (the node is
    /// still in `wait call-back` / `clean wait`, under the lock). `Done`:
    /// the step finished and the flow goes on; `Wait`: it still runs (the
    /// node keeps waiting); an error fails the node. Default: finished.
    async fn continue_step(
        &self,
        _driver: &Composed,
        _task: &mut ExclusiveTask,
        _step: &Step,
    ) -> Result<StepOutcome, DriverError> {
        Ok(StepOutcome::Done)
    }
}

/// Power: read and change the power state through the BMC.
#[async_trait]
pub trait PowerInterface: Interface {
    /// Read the power state from the BMC.
    async fn get_power_state(&self, node: &Node) -> Result<PowerState, DriverError>;

    /// Set the power state (on, off) or reboot.
    async fn set_power_state(
        &self,
        task: &ExclusiveTask,
        target: PowerState,
    ) -> Result<(), DriverError>;
}

/// Management: boot device, NMI (virtual media, boot mode and sensors are
/// not here yet: the conductor answers them as for an unsupporting driver). Optional abilities are announced by `supports_*`; the conductor
/// refuses the request (Ironic's `UnsupportedDriverExtension`) before calling
/// a method whose ability is absent.
#[async_trait]
pub trait ManagementInterface: Interface {
    /// Set the next boot device (one of [`ManagementInterface::supported_boot_devices`]).
    async fn set_boot_device(
        &self,
        task: &ExclusiveTask,
        device: BootDevice,
        persistent: bool,
    ) -> Result<(), DriverError>;

    /// The boot devices [`ManagementInterface::set_boot_device`] accepts for `node`.
    fn supported_boot_devices(&self, _node: &Node) -> Vec<BootDevice> {
        vec![BootDevice::Pxe, BootDevice::Disk]
    }

    /// The next boot device as the BMC reports it (Ironic takes the
    /// exclusive lock for this read too).
    async fn get_boot_device(&self, task: &ExclusiveTask) -> Result<BootDeviceState, DriverError>;

    /// Whether [`ManagementInterface::inject_nmi`] is implemented.
    fn supports_inject_nmi(&self) -> bool {
        false
    }

    /// Inject a non-maskable interrupt now.
    async fn inject_nmi(&self, task: &ExclusiveTask) -> Result<(), DriverError> {
        let _ = task;
        Err(DriverError::permanent(format!(
            "the {} management interface cannot inject an NMI",
            self.name()
        )))
    }

    /// The boot mode the node boots in (`uefi` or `bios`), `None` when
    /// unknown. Default: Ironic's UnsupportedDriverExtension.
    async fn get_boot_mode(&self, task: &ExclusiveTask) -> Result<Option<String>, DriverError> {
        Err(unsupported_extension(task, "get_boot_mode"))
    }

    /// Set the boot mode (`uefi` or `bios`) for the next boot.
    async fn set_boot_mode(&self, task: &ExclusiveTask, mode: &str) -> Result<(), DriverError> {
        let _ = mode;
        Err(unsupported_extension(task, "set_boot_mode"))
    }

    /// Whether UEFI secure boot is on.
    async fn get_secure_boot_state(&self, task: &ExclusiveTask) -> Result<bool, DriverError> {
        Err(unsupported_extension(task, "get_secure_boot_state"))
    }

    /// Turn UEFI secure boot on or off.
    async fn set_secure_boot_state(
        &self,
        task: &ExclusiveTask,
        enabled: bool,
    ) -> Result<(), DriverError> {
        let _ = enabled;
        Err(unsupported_extension(task, "set_secure_boot_state"))
    }
}

/// Ironic's UnsupportedDriverExtension for the task's node, as a permanent
/// driver error.
pub fn unsupported_extension(task: &ExclusiveTask, extension: &str) -> DriverError {
    DriverError::permanent(format!(
        "Driver {} does not support {extension} (disabled or not implemented).",
        task.node().driver
    ))
}

/// Boot: how the node gets to the deploy ramdisk and to its instance.
#[async_trait]
pub trait BootInterface: Interface {
    /// Make the next boot start the deploy/cleaning ramdisk.
    async fn prepare_ramdisk(
        &self,
        driver: &Composed,
        task: &ExclusiveTask,
    ) -> Result<(), DriverError>;

    /// Undo [`BootInterface::prepare_ramdisk`].
    async fn clean_up_ramdisk(
        &self,
        _driver: &Composed,
        _task: &ExclusiveTask,
    ) -> Result<(), DriverError> {
        Ok(())
    }

    /// Make the next boot start the deployed instance.
    async fn prepare_instance(
        &self,
        driver: &Composed,
        task: &ExclusiveTask,
    ) -> Result<(), DriverError>;

    /// Undo [`BootInterface::prepare_instance`] (tear down).
    async fn clean_up_instance(
        &self,
        _driver: &Composed,
        _task: &ExclusiveTask,
    ) -> Result<(), DriverError> {
        Ok(())
    }
}

/// Deploy: the deploy steps (through [`Interface`]) and the frame around
/// cleaning and tear-down.
#[async_trait]
pub trait DeployInterface: Interface {
    /// Get the node ready for clean steps (boot the agent). `Wait` parks the
    /// node in `clean wait` until the agent calls back.
    async fn prepare_cleaning(
        &self,
        _driver: &Composed,
        _task: &mut ExclusiveTask,
    ) -> Result<StepOutcome, DriverError> {
        Ok(StepOutcome::Done)
    }

    /// The agent called back for the first time in this phase: ask it for
    /// its own (in-band) steps and cache them on the node, so that
    /// [`Interface::deploy_steps`] / [`Interface::clean_steps`] offer them.
    /// Default: no agent, nothing to ask.
    async fn refresh_steps(
        &self,
        _driver: &Composed,
        _task: &mut ExclusiveTask,
        _phase: Phase,
    ) -> Result<(), DriverError> {
        Ok(())
    }

    /// After the last clean step (power the agent off).
    async fn tear_down_cleaning(
        &self,
        _driver: &Composed,
        _task: &mut ExclusiveTask,
    ) -> Result<(), DriverError> {
        Ok(())
    }

    /// Tear down an instance (`deleting`). Default: power off, then the
    /// boot interface cleans up the instance boot.
    async fn tear_down(
        &self,
        driver: &Composed,
        task: &mut ExclusiveTask,
    ) -> Result<(), DriverError> {
        driver.power.set_power_state(task, PowerState::Off).await?;
        driver.boot.clean_up_instance(driver, task).await
    }
}

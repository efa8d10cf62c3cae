//! Hardware drivers (SPEC §10): power, management and deploy interfaces.
//!
//! Actions that change hardware take an [`ExclusiveTask`]: calling them under
//! a shared task does not compile (Ironic checks this at run time). Reads take
//! the node. No HTTP or protocol types cross this boundary.

pub mod fake;
pub mod redfish;

use crate::task::ExclusiveTask;
use async_trait::async_trait;
use ferric_core::{Node, PowerState};
use std::collections::BTreeMap;
use std::sync::Arc;

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

/// Boot devices (Ironic's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootDevice {
    Pxe,
    Disk,
    Cdrom,
    Bios,
}

/// What a deploy or clean step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    /// Finished: the node can move to its target.
    Done,
    /// Waits for the ramdisk agent to call back (`wait call-back` / `clean wait`).
    Wait,
}

/// One hardware type.
#[async_trait]
pub trait Driver: Send + Sync + 'static {
    /// The hardware type name (`fake-hardware`, `redfish`).
    fn name(&self) -> &'static str;

    /// Check the node's driver_info; per interface, `Err(reason)` when unusable.
    async fn validate(&self, node: &Node) -> BTreeMap<&'static str, Result<(), String>>;

    /// Read the power state from the BMC.
    async fn get_power_state(&self, node: &Node) -> Result<PowerState, DriverError>;

    /// Set the power state (on, off) or reboot.
    async fn set_power_state(
        &self,
        task: &ExclusiveTask,
        target: PowerState,
    ) -> Result<(), DriverError>;

    /// Set the next boot device.
    async fn set_boot_device(
        &self,
        task: &ExclusiveTask,
        device: BootDevice,
        persistent: bool,
    ) -> Result<(), DriverError>;

    /// Start or run the deployment.
    async fn deploy(&self, task: &ExclusiveTask) -> Result<StepOutcome, DriverError>;

    /// Start or run cleaning.
    async fn clean(&self, task: &ExclusiveTask) -> Result<StepOutcome, DriverError>;

    /// Continue a deployment after the agent called back (`wait call-back`
    /// → `deploying`). Default: the agent finished the work.
    async fn continue_deploy(&self, _task: &ExclusiveTask) -> Result<StepOutcome, DriverError> {
        Ok(StepOutcome::Done)
    }

    /// Continue cleaning after the agent called back (`clean wait` →
    /// `cleaning`). Default: the agent finished the work.
    async fn continue_clean(&self, _task: &ExclusiveTask) -> Result<StepOutcome, DriverError> {
        Ok(StepOutcome::Done)
    }

    /// Tear down an instance.
    async fn tear_down(&self, task: &ExclusiveTask) -> Result<(), DriverError>;
}

/// Drivers by name.
#[derive(Clone, Default)]
pub struct Drivers {
    by_name: BTreeMap<&'static str, Arc<dyn Driver>>,
}

impl Drivers {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Register `driver` under its name.
    pub fn with(mut self, driver: Arc<dyn Driver>) -> Self {
        self.by_name.insert(driver.name(), driver);
        self
    }

    /// The driver called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Driver>> {
        self.by_name.get(name).cloned()
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        self.by_name.keys().copied().collect()
    }
}

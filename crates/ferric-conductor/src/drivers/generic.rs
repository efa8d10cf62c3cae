//! Interface implementations that work with any BMC: they act through the
//! node's power and management interfaces.
//!
//! * `ipxe` / `pxe` boot: the ramdisk boots from the network (one-time PXE
//!   boot device), the instance from its disk (persistent). Serving the
//!   ramdisk (TFTP, iPXE scripts, DHCP) is not built yet: the deployment
//!   network must provide it.
//! * (`direct`, the agent deploy, is in `super::direct`.)
//! * `ramdisk` deploy: the instance *is* a ramdisk booted from the network.
//! * `no-*` and `noop`: the optional interfaces that do nothing.

use super::{
    BootDevice, BootInterface, Composed, DeployInterface, DriverError, Interface, InterfaceKind,
    Invalid, Step, StepOutcome,
};
use crate::task::ExclusiveTask;
use async_trait::async_trait;
use ferric_core::{Node, PowerState};

/// `ipxe` and `pxe`: network boot for the ramdisk, disk for the instance.
#[derive(Debug)]
pub struct PxeBoot {
    name: &'static str,
}

impl PxeBoot {
    /// The boot interface called `name` (`ipxe` or `pxe`).
    pub fn new(name: &'static str) -> Self {
        PxeBoot { name }
    }
}

#[async_trait]
impl Interface for PxeBoot {
    fn name(&self) -> &'static str {
        self.name
    }
}

#[async_trait]
impl BootInterface for PxeBoot {
    async fn prepare_ramdisk(
        &self,
        driver: &Composed,
        task: &ExclusiveTask,
    ) -> Result<(), DriverError> {
        driver
            .management
            .set_boot_device(task, BootDevice::Pxe, false)
            .await
    }

    async fn prepare_instance(
        &self,
        driver: &Composed,
        task: &ExclusiveTask,
    ) -> Result<(), DriverError> {
        driver
            .management
            .set_boot_device(task, BootDevice::Disk, true)
            .await
    }
}

/// `ramdisk`: the instance is a network-booted ramdisk; no agent.
#[derive(Debug)]
pub struct RamdiskDeploy;

#[async_trait]
impl Interface for RamdiskDeploy {
    fn name(&self) -> &'static str {
        "ramdisk"
    }

    fn deploy_steps(&self, _node: &Node) -> Vec<Step> {
        vec![Step::new(InterfaceKind::Deploy, "deploy", 100)]
    }

    async fn execute_step(
        &self,
        driver: &Composed,
        task: &mut ExclusiveTask,
        step: &Step,
    ) -> Result<StepOutcome, DriverError> {
        if step.step != "deploy" {
            return Err(DriverError::permanent(format!(
                "the ramdisk deploy interface has no step {}",
                step.step
            )));
        }
        driver
            .management
            .set_boot_device(task, BootDevice::Pxe, true)
            .await?;
        driver
            .power
            .set_power_state(task, PowerState::Rebooting)
            .await?;
        Ok(StepOutcome::Done)
    }
}

#[async_trait]
impl DeployInterface for RamdiskDeploy {}

/// `no-bios`, `no-rescue`, ...: the interface is not available.
#[derive(Debug)]
pub struct NoInterface {
    kind: InterfaceKind,
}

impl NoInterface {
    /// The `no-*` implementation of `kind`.
    pub fn new(kind: InterfaceKind) -> Self {
        NoInterface { kind }
    }
}

#[async_trait]
impl Interface for NoInterface {
    fn name(&self) -> &'static str {
        super::registry::no_name(self.kind).unwrap_or("noop")
    }

    async fn validate(&self, _node: &Node) -> Result<(), Invalid> {
        Err(Invalid::Unsupported(format!(
            "not supported by the {} interface",
            self.name()
        )))
    }

    fn supported(&self) -> bool {
        false
    }
}

/// The `flat` network interface: Ironic's VIF bookkeeping on ports and
/// portgroups (`internal_info.tenant_vif_port_id`; the API's `vifs`
/// resource does the attach, detach and list). ferric has no networking
/// service, so the Neutron calls Ironic's flat makes (physical networks of
/// a VIF, MAC and binding updates, the cleaning network) are absent: every
/// VIF may use any physical network.
#[derive(Debug)]
pub struct FlatNetwork;

#[async_trait]
impl Interface for FlatNetwork {
    fn name(&self) -> &'static str {
        "flat"
    }
}

/// `noop` network and storage: nothing to configure, always valid.
#[derive(Debug)]
pub struct NoopInterface {
    kind: InterfaceKind,
}

impl NoopInterface {
    /// The `noop` implementation of `kind`.
    pub fn new(kind: InterfaceKind) -> Self {
        NoopInterface { kind }
    }
}

#[async_trait]
impl Interface for NoopInterface {
    fn name(&self) -> &'static str {
        "noop"
    }

    async fn validate(&self, _node: &Node) -> Result<(), Invalid> {
        // Ironic's validate shows the noop network interface as valid and
        // the noop storage interface as not supported.
        if self.kind == InterfaceKind::Network {
            Ok(())
        } else {
            Err(Invalid::Unsupported(
                "not supported by the noop interface".to_string(),
            ))
        }
    }
}

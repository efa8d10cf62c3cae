//! Interface implementations that work with any BMC: they act through the
//! node's power and management interfaces.
//!
//! * `ipxe` / `pxe` boot: the ramdisk boots from the network (one-time PXE
//!   boot device), the instance from its disk (persistent). With
//!   [`NetBoot`] plugged in (`ferric serve` always does), ferric serves the
//!   ramdisk itself: the images are cached and the node's DHCP entries
//!   written when the ramdisk is prepared, the entries dropped on clean-up
//!   and when the instance boots from disk (`crate::netboot`). Without it
//!   (`Drivers::new()` in tests) only the boot device is set.
//! * (`direct`, the agent deploy, is in `super::direct`.)
//! * `ramdisk` deploy: the instance *is* a ramdisk booted from the network.
//! * `no-*` and `noop`: the optional interfaces that do nothing.

use super::{
    BootDevice, BootInterface, Composed, DeployInterface, DriverError, Interface, InterfaceKind,
    Invalid, Property, Step, StepOutcome,
};
use crate::netboot::{NetBoot, NetbootError, Ramdisk};
use crate::task::ExclusiveTask;
use async_trait::async_trait;
use ferric_core::{Node, PowerState};
use std::sync::Arc;

/// `ipxe` and `pxe`: network boot for the ramdisk, disk for the instance.
#[derive(Debug)]
pub struct PxeBoot {
    name: &'static str,
    netboot: Option<Arc<NetBoot>>,
}

impl PxeBoot {
    /// The boot interface called `name` (`ipxe` or `pxe`) that only sets
    /// the boot device (the network serves the ramdisk).
    pub fn new(name: &'static str) -> Self {
        PxeBoot {
            name,
            netboot: None,
        }
    }

    /// The boot interface called `name`, serving the ramdisk with `netboot`.
    pub fn with_netboot(name: &'static str, netboot: Arc<NetBoot>) -> Self {
        PxeBoot {
            name,
            netboot: Some(netboot),
        }
    }

    /// Drop the node's DHCP entries (PXE-enabled ports).
    async fn clean_dhcp(&self, task: &ExclusiveTask) -> Result<(), DriverError> {
        let Some(nb) = &self.netboot else {
            return Ok(());
        };
        let node = task.node().uuid;
        let macs = NetBoot::pxe_macs(task.manager().store().as_ref(), node)
            .await
            .map_err(netboot_error)?;
        nb.clean_dhcp(node, &macs).await.map_err(netboot_error)
    }
}

/// A network boot failure as a driver error: bad settings are permanent,
/// an unreachable image or database may pass.
pub(super) fn netboot_error(e: NetbootError) -> DriverError {
    match e {
        NetbootError::Unavailable(m) => DriverError::transient(m),
        NetbootError::Invalid(m) | NetbootError::NotFound(m) => DriverError::permanent(m),
    }
}

#[async_trait]
impl Interface for PxeBoot {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn validate(&self, node: &Node) -> Result<(), Invalid> {
        if self.netboot.is_some() {
            NetBoot::check(node, Ramdisk::Deploy).map_err(|e| Invalid::Config(e.to_string()))?;
        }
        Ok(())
    }

    fn properties(&self) -> Vec<Property> {
        vec![
            Property {
                name: "deploy_kernel",
                description: "UUID (from Glance) of the deployment kernel. Required.",
            },
            Property {
                name: "deploy_ramdisk",
                description: "UUID (from Glance) of the ramdisk that is mounted at boot time. Required.",
            },
            Property {
                name: "rescue_kernel",
                description: "UUID (from Glance) of the rescue kernel. This value is required for rescue mode.",
            },
            Property {
                name: "rescue_ramdisk",
                description: "UUID (from Glance) of the rescue ramdisk with agent that is used at node rescue time. This value is required for rescue mode.",
            },
            Property {
                name: "kernel_append_params",
                description: "Additional kernel parameters to pass down to instance kernel. These parameters can be consumed by the kernel or by the applications by reading /proc/cmdline. Mind severe cmdline size limit. Overrides the [pxe]/kernel_append_params configuration option, use %default% to insert its value.",
            },
        ]
    }
}

#[async_trait]
impl BootInterface for PxeBoot {
    async fn prepare_ramdisk(
        &self,
        driver: &Composed,
        task: &ExclusiveTask,
    ) -> Result<(), DriverError> {
        if let Some(nb) = &self.netboot {
            let node = task.node();
            let ramdisk = Ramdisk::for_state(node.provision_state).unwrap_or(Ramdisk::Deploy);
            NetBoot::check(node, ramdisk).map_err(netboot_error)?;
            nb.warm(node, ramdisk).await.map_err(netboot_error)?;
            let macs = NetBoot::pxe_macs(task.manager().store().as_ref(), node.uuid)
                .await
                .map_err(netboot_error)?;
            if macs.is_empty() && nb.config().manage_dhcp {
                return Err(DriverError::permanent(format!(
                    "node {} has no PXE-enabled port: it cannot boot from the network",
                    node.uuid
                )));
            }
            nb.write_dhcp(node.uuid, &macs)
                .await
                .map_err(netboot_error)?;
        }
        driver
            .management
            .set_boot_device(task, BootDevice::Pxe, false)
            .await
    }

    async fn clean_up_ramdisk(
        &self,
        _driver: &Composed,
        task: &ExclusiveTask,
    ) -> Result<(), DriverError> {
        self.clean_dhcp(task).await
    }

    async fn prepare_instance(
        &self,
        driver: &Composed,
        task: &ExclusiveTask,
    ) -> Result<(), DriverError> {
        self.clean_dhcp(task).await?;
        driver
            .management
            .set_boot_device(task, BootDevice::Disk, true)
            .await
    }

    async fn clean_up_instance(
        &self,
        _driver: &Composed,
        task: &ExclusiveTask,
    ) -> Result<(), DriverError> {
        self.clean_dhcp(task).await
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

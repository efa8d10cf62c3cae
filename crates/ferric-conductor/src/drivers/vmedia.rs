//! `redfish-virtual-media`: the ramdisk boots from an ISO the BMC inserts
//! as a virtual CD (Ironic's `RedfishVirtualMediaBoot`,
//! `ironic/drivers/modules/redfish/boot.py`).
//!
//! * validate: the node's Redfish `driver_info` and `deploy_iso`, or both
//!   `deploy_kernel` and `deploy_ramdisk` (`rescue_*` while rescuing),
//!   with Ironic's messages;
//! * `prepare_ramdisk`: power off, the ISO built (or the given ISO cached)
//!   and published on ferric's listener (`crate::netboot::vmedia`), any
//!   inserted CD ejected, `VirtualMedia.InsertMedia` with the ISO's URL on
//!   the system's (else the managers') CD/DVD slot, one-time boot from `Cd`;
//! * `clean_up_ramdisk`, `prepare_instance` (then boot from disk,
//!   persistent) and `clean_up_instance`: every inserted CD ejected and
//!   the node's built ISO removed.
//!
//! Not done (Ironic has them): the pregenerated agent token on the ISO
//! (the agent gets its token at lookup, as with iPXE), `config_via_removable`
//! (floppy/USB configuration image), `bootloader` (ferric builds its own
//! ESP), NFS/CIFS transport, fast track, the iDRAC version check, and
//! booting the instance itself from an ISO (ferric deploys to local disk).

use super::generic::netboot_error;
use super::redfish::Redfish;
use super::{BootDevice, BootInterface, Composed, DriverError, Interface, Invalid, Property};
use crate::netboot::vmedia::BOOT_INTERFACE;
use crate::netboot::{NetBoot, Ramdisk};
use crate::task::ExclusiveTask;
use async_trait::async_trait;
use ferric_core::{Node, PowerState};
use std::sync::Arc;

/// The `redfish-virtual-media` boot interface.
#[derive(Debug)]
pub struct RedfishVirtualMedia {
    redfish: Arc<Redfish>,
    netboot: Option<Arc<NetBoot>>,
}

impl RedfishVirtualMedia {
    /// Virtual media through `redfish`, the ISO published by `netboot`
    /// (without it, preparing the ramdisk fails: nothing could serve the ISO).
    pub fn new(redfish: Arc<Redfish>, netboot: Option<Arc<NetBoot>>) -> Self {
        RedfishVirtualMedia { redfish, netboot }
    }

    /// The ramdisk `node` boots now (rescue while rescuing, else deploy).
    fn ramdisk(node: &Node) -> Ramdisk {
        Ramdisk::for_state(node.provision_state).unwrap_or(Ramdisk::Deploy)
    }

    /// Eject the CD and drop the node's built ISO (Ironic's `_eject_all`).
    async fn eject_all(&self, task: &ExclusiveTask) -> Result<(), DriverError> {
        let node = task.node();
        self.redfish.eject_cd(node).await?;
        if let Some(nb) = &self.netboot {
            nb.remove_boot_iso(node.uuid).await.map_err(netboot_error)?;
        }
        Ok(())
    }
}

#[async_trait]
impl Interface for RedfishVirtualMedia {
    fn name(&self) -> &'static str {
        BOOT_INTERFACE
    }

    async fn validate(&self, node: &Node) -> Result<(), Invalid> {
        self.redfish.validate(node).await?;
        NetBoot::iso_source(node, Self::ramdisk(node))
            .map(|_| ())
            .map_err(|e| Invalid::Config(e.to_string()))
    }

    fn properties(&self) -> Vec<Property> {
        vec![
            Property {
                name: "deploy_kernel",
                description: "URL or Glance UUID of the deployment kernel. Required if deploy_iso is not set.",
            },
            Property {
                name: "deploy_ramdisk",
                description: "URL or Glance UUID of the ramdisk that is mounted at boot time. Required if deploy_iso is not set.",
            },
            Property {
                name: "deploy_iso",
                description: "URL or Glance UUID of the deployment ISO to use. Required if deploy_kernel/deploy_ramdisk are not set.",
            },
        ]
    }
}

#[async_trait]
impl BootInterface for RedfishVirtualMedia {
    async fn prepare_ramdisk(
        &self,
        driver: &Composed,
        task: &ExclusiveTask,
    ) -> Result<(), DriverError> {
        let Some(nb) = &self.netboot else {
            return Err(DriverError::permanent(
                "the redfish-virtual-media boot interface needs ferric's boot image service \
                 ([pxe], which `ferric serve` plugs in) to publish the ISO",
            ));
        };
        let node = task.node();
        let ramdisk = Self::ramdisk(node);
        NetBoot::iso_source(node, ramdisk).map_err(netboot_error)?;
        driver.power.set_power_state(task, PowerState::Off).await?;
        // Built (or fetched) before the BMC is asked, so a bad image fails
        // here with ferric's message; the BMC's download finds it ready.
        nb.boot_iso(node, ramdisk, true)
            .await
            .map_err(netboot_error)?;
        let url = nb.boot_iso_url(node.uuid);
        self.redfish.eject_cd(node).await?;
        self.redfish.insert_cd(node, &url).await?;
        driver
            .management
            .set_boot_device(task, BootDevice::Cdrom, false)
            .await
    }

    async fn clean_up_ramdisk(
        &self,
        _driver: &Composed,
        task: &ExclusiveTask,
    ) -> Result<(), DriverError> {
        self.eject_all(task).await
    }

    async fn prepare_instance(
        &self,
        driver: &Composed,
        task: &ExclusiveTask,
    ) -> Result<(), DriverError> {
        self.eject_all(task).await?;
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
        self.eject_all(task).await
    }
}

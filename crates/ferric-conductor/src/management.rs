//! Node management through the node's management interface (Ironic's
//! `ConductorManager.set_boot_device`, `get_boot_device`,
//! `get_supported_boot_devices`, `inject_nmi` and the virtual media calls),
//! driver properties, and the vendor passthru answers.
//!
//! Each call takes the node's lock through the TaskManager as Ironic does:
//! exclusive for the boot device (both reads and writes), NMI and virtual
//! media writes; shared for the supported devices and the virtual media read.
//! The interface is validated first (a bad `driver_info` is `Invalid`).

use crate::drivers::{BootDevice, BootDeviceState, Composed, DriverError, Drivers, Invalid};
use crate::provision::Provisioner;
use crate::task::{ExclusiveTask, Retry};
use crate::TaskError;
use ferric_core::{InterfaceKind, Node};
use ferric_store::NodeIdent;
use std::collections::BTreeMap;

/// Why a management call failed.
#[derive(Debug, thiserror::Error)]
pub enum ManagementError {
    /// Bad input or a node whose settings do not let the interface work
    /// (Ironic's InvalidParameterValue / MissingParameterValue).
    #[error("{0}")]
    Invalid(String),
    /// The node's driver cannot do it (Ironic's UnsupportedDriverExtension).
    #[error("{0}")]
    Unsupported(String),
    /// The hardware failed.
    #[error("{0}")]
    Driver(DriverError),
    /// Lock or store failure (NodeNotFound, NodeLocked, ...).
    #[error(transparent)]
    Task(#[from] TaskError),
}

/// Ironic's UnsupportedDriverExtension message.
pub fn unsupported(driver: &str, extension: &str) -> String {
    format!("Driver {driver} does not support {extension} (disabled or not implemented).")
}

/// Ironic's virtual media device types (`boot_devices.VMEDIA_DEVICES`).
pub const VMEDIA_DEVICES: [&str; 3] = ["disk", "cdrom", "floppy"];

fn compose(prov: &Provisioner, node: &Node) -> Result<Composed, ManagementError> {
    prov.drivers()
        .compose(node)
        .map_err(|e| ManagementError::Invalid(e.to_string()))
}

async fn validated(prov: &Provisioner, node: &Node) -> Result<Composed, ManagementError> {
    let driver = compose(prov, node)?;
    match driver.management.validate(node).await {
        Ok(()) => Ok(driver),
        Err(Invalid::Config(m) | Invalid::Unsupported(m)) => Err(ManagementError::Invalid(m)),
    }
}

async fn exclusive(
    prov: &Provisioner,
    node: NodeIdent,
    purpose: &str,
    retry: Retry,
) -> Result<ExclusiveTask, ManagementError> {
    Ok(prov
        .task_manager()
        .acquire(node)
        .purpose(purpose)
        .retry(retry)
        .exclusive()
        .await?)
}

async fn release(task: ExclusiveTask) {
    let node = task.node().uuid;
    if let Err(e) = task.release().await {
        tracing::warn!(node_uuid = %node, error.message = %e, "release after a management call failed");
    }
}

/// Run `f` on the validated driver under the exclusive lock, then release.
async fn with_exclusive<T>(
    prov: &Provisioner,
    node: NodeIdent,
    purpose: &str,
    retry: Retry,
    f: impl for<'a> FnOnce(
        &'a Composed,
        &'a mut ExclusiveTask,
    ) -> crate::BoxFuture<'a, Result<T, ManagementError>>,
) -> Result<T, ManagementError> {
    let mut task = exclusive(prov, node, purpose, retry).await?;
    let result = match validated(prov, task.node()).await {
        Ok(driver) => f(&driver, &mut task).await,
        Err(e) => Err(e),
    };
    release(task).await;
    result
}

/// `PUT /v1/nodes/{node}/management/boot_device`: set the next boot device.
pub async fn set_boot_device(
    prov: &Provisioner,
    node: NodeIdent,
    device: &str,
    persistent: bool,
    retry: Retry,
) -> Result<(), ManagementError> {
    let device = device.to_string();
    with_exclusive(
        prov,
        node,
        "setting boot device",
        retry,
        move |driver, task| {
            Box::pin(async move {
                let supported = driver.management.supported_boot_devices(task.node());
                let Some(dev) = BootDevice::parse(&device).filter(|d| supported.contains(d)) else {
                    return Err(ManagementError::Invalid(format!(
                        "Invalid boot device {device} specified."
                    )));
                };
                driver
                    .management
                    .set_boot_device(task, dev, persistent)
                    .await
                    .map_err(ManagementError::Driver)
            })
        },
    )
    .await
}

/// `GET /v1/nodes/{node}/management/boot_device`.
pub async fn get_boot_device(
    prov: &Provisioner,
    node: NodeIdent,
    retry: Retry,
) -> Result<BootDeviceState, ManagementError> {
    with_exclusive(prov, node, "getting boot device", retry, |driver, task| {
        Box::pin(async move {
            driver
                .management
                .get_boot_device(task)
                .await
                .map_err(ManagementError::Driver)
        })
    })
    .await
}

/// `GET /v1/nodes/{node}/management/boot_device/supported` (shared lock, no
/// validation, as Ironic).
pub async fn supported_boot_devices(
    prov: &Provisioner,
    node: NodeIdent,
    retry: Retry,
) -> Result<Vec<BootDevice>, ManagementError> {
    let task = prov
        .task_manager()
        .acquire(node)
        .purpose("getting supported boot devices")
        .retry(retry)
        .shared()
        .await?;
    let driver = compose(prov, task.node())?;
    Ok(driver.management.supported_boot_devices(task.node()))
}

/// `PUT /v1/nodes/{node}/management/inject_nmi`.
pub async fn inject_nmi(
    prov: &Provisioner,
    node: NodeIdent,
    retry: Retry,
) -> Result<(), ManagementError> {
    with_exclusive(prov, node, "inject nmi", retry, |driver, task| {
        Box::pin(async move {
            if !driver.management.supports_inject_nmi() {
                return Err(ManagementError::Unsupported(unsupported(
                    &task.node().driver,
                    "inject_nmi",
                )));
            }
            driver
                .management
                .inject_nmi(task)
                .await
                .map_err(ManagementError::Driver)
        })
    })
    .await
}

/// `GET /v1/nodes/{node}/vmedia` (shared lock): no management interface
/// does virtual media yet, so this is Ironic's UnsupportedDriverExtension
/// once the interface validated.
pub async fn get_virtual_media(
    prov: &Provisioner,
    node: NodeIdent,
    retry: Retry,
) -> Result<serde_json::Value, ManagementError> {
    let task = prov
        .task_manager()
        .acquire(node)
        .purpose("get virtual media devices")
        .retry(retry)
        .shared()
        .await?;
    validated(prov, task.node()).await?;
    Err(ManagementError::Unsupported(unsupported(
        &task.node().driver,
        "get_virtual_media",
    )))
}

/// What a virtual media request asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmediaAction {
    Attach {
        device_type: String,
    },
    /// `None`: every device.
    Detach {
        device_types: Option<Vec<String>>,
    },
}

/// `POST/DELETE /v1/nodes/{node}/vmedia`. As in Ironic the request is
/// accepted once the interface validated (the previous `last_error` is
/// cleared) and the attach/detach itself runs as the node's action: a driver
/// that cannot do it fails it, with Ironic's message in `last_error` (and so
/// in the node's history).
pub async fn virtual_media(
    prov: &Provisioner,
    node: NodeIdent,
    action: VmediaAction,
    retry: Retry,
) -> Result<(), ManagementError> {
    let purpose = match action {
        VmediaAction::Attach { .. } => "attaching virtual media",
        VmediaAction::Detach { .. } => "detaching virtual media",
    };
    with_exclusive(prov, node, purpose, retry, move |_driver, task| {
        Box::pin(async move {
            let uuid = task.node().uuid;
            let hw = task.node().driver.clone();
            let error = match &action {
                VmediaAction::Attach { device_type } => format!(
                    "Could not attach device {device_type} to node {uuid}: {}",
                    unsupported(&hw, "attach_virtual_media")
                ),
                VmediaAction::Detach { device_types } => format!(
                    "Could not detach device(s) {} from node {uuid}: {}",
                    py_list_or_none(device_types.as_deref()),
                    unsupported(&hw, "detach_virtual_media")
                ),
            };
            // No management interface does virtual media yet (it is not in
            // the trait): the action fails as on an unsupporting Ironic driver.
            task.node_mut().last_error = Some(error);
            task.save().await?;
            Ok(())
        })
    })
    .await
}

fn py_list_or_none(items: Option<&[String]>) -> String {
    match items {
        None => "None".into(),
        Some(list) => format!(
            "[{}]",
            list.iter()
                .map(|s| format!("'{s}'"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `GET /v1/drivers/{name}/properties`: the `driver_info` keys of the
/// hardware type's default interfaces (Ironic's `get_properties`); `None`
/// for an unknown or disabled type.
pub fn driver_properties(drivers: &Drivers, name: &str) -> Option<BTreeMap<String, String>> {
    let composed = drivers.default_composition(name)?;
    let mut out = BTreeMap::new();
    for kind in InterfaceKind::ALL {
        for p in composed.interface(kind).properties() {
            out.insert(p.name.to_string(), p.description.to_string());
        }
    }
    Some(out)
}

// ----- node states: boot mode, secure boot, console, RAID -------------------

/// Ironic's boot modes a node may be switched to.
pub const BOOT_MODES: [&str; 2] = ["bios", "uefi"];

/// Take the exclusive lock, validate the management interface, clear
/// `last_error` (a new operation starts) and run `work` in the background
/// holding the lock (Ironic's `change_node_boot_mode` /
/// `change_node_secure_boot`). Returns once the work has started.
async fn spawn_management<W>(
    prov: &Provisioner,
    node: NodeIdent,
    purpose: &str,
    retry: Retry,
    work: W,
) -> Result<(), ManagementError>
where
    W: for<'a> FnOnce(
            &'a mut ExclusiveTask,
        ) -> crate::BoxFuture<'a, Result<(), crate::task::WorkError>>
        + Send
        + 'static,
{
    let mut task = exclusive(prov, node, purpose, retry).await?;
    if let Err(e) = validated(prov, task.node()).await {
        release(task).await;
        return Err(e);
    }
    if task.node().last_error.is_some() {
        task.node_mut().last_error = None;
        if let Err(e) = task.save().await {
            release(task).await;
            return Err(e.into());
        }
    }
    task.spawn_after(purpose, work).await?;
    Ok(())
}

/// `PUT /v1/nodes/{node}/states/boot_mode`: switch the boot mode in the
/// background. Unchanged when the BMC already reports `mode`; a driver
/// failure lands in `last_error` with Ironic's wording; success records
/// `boot_mode` on the node.
pub async fn change_boot_mode(
    prov: &Provisioner,
    node: NodeIdent,
    mode: String,
    retry: Retry,
) -> Result<(), ManagementError> {
    let drivers = prov.drivers().clone();
    spawn_management(prov, node, "changing node boot mode", retry, move |task| {
        Box::pin(async move {
            let driver = drivers.compose(task.node())?;
            let current = driver.management.get_boot_mode(task).await.ok().flatten();
            if current.as_deref() == Some(mode.as_str()) {
                return Ok(());
            }
            match driver.management.set_boot_mode(task, &mode).await {
                Ok(()) => task.node_mut().attrs.boot_mode = Some(mode),
                Err(e) => {
                    task.node_mut().last_error =
                        Some(format!("Failed to change boot mode to '{mode}: {e}"))
                }
            }
            task.save().await?;
            Ok(())
        })
    })
    .await
}

/// Ironic's `node_cache_boot_mode` (run by verify): record the boot mode
/// and secure boot state the BMC reports on the node; a driver that does
/// not support reading one records `None` for it; any other failure only
/// logs and changes nothing.
pub(crate) async fn cache_boot_mode(task: &mut ExclusiveTask, driver: &Composed) {
    let unsupported_prefix = format!("Driver {} does not support ", task.node().driver);
    let mode = match driver.management.get_boot_mode(task).await {
        Ok(m) => m,
        Err(e) if e.message.starts_with(&unsupported_prefix) => None,
        Err(e) => {
            tracing::warn!(node_uuid = %task.node().uuid, error.message = %e, "cannot read the boot mode");
            return;
        }
    };
    let secure = match driver.management.get_secure_boot_state(task).await {
        Ok(b) => Some(b),
        Err(e) if e.message.starts_with(&unsupported_prefix) => None,
        Err(e) => {
            tracing::warn!(node_uuid = %task.node().uuid, error.message = %e, "cannot read the secure boot state");
            return;
        }
    };
    let attrs = &mut task.node_mut().attrs;
    attrs.boot_mode = mode;
    attrs.secure_boot = secure;
}

/// `PUT /v1/nodes/{node}/states/secure_boot`, as [`change_boot_mode`].
pub async fn change_secure_boot(
    prov: &Provisioner,
    node: NodeIdent,
    enabled: bool,
    retry: Retry,
) -> Result<(), ManagementError> {
    let drivers = prov.drivers().clone();
    spawn_management(
        prov,
        node,
        "changing node secure boot",
        retry,
        move |task| {
            Box::pin(async move {
                let driver = drivers.compose(task.node())?;
                let current = driver.management.get_secure_boot_state(task).await.ok();
                if current == Some(enabled) {
                    return Ok(());
                }
                match driver.management.set_secure_boot_state(task, enabled).await {
                    Ok(()) => task.node_mut().attrs.secure_boot = Some(enabled),
                    Err(e) => {
                        let shown = if enabled { "True" } else { "False" };
                        task.node_mut().last_error = Some(format!(
                            "Failed to change secure_boot state to '{shown}': {e}"
                        ))
                    }
                }
                task.save().await?;
                Ok(())
            })
        },
    )
    .await
}

/// The node's console interface, validated: `no-console` is Ironic's
/// UnsupportedDriverExtension.
async fn console_validated(prov: &Provisioner, node: &Node) -> Result<(), ManagementError> {
    let driver = compose(prov, node)?;
    let console = driver.interface(InterfaceKind::Console);
    if !console.supported() {
        return Err(ManagementError::Unsupported(unsupported(
            &node.driver,
            "console",
        )));
    }
    match console.validate(node).await {
        Ok(()) => Ok(()),
        Err(Invalid::Config(m) | Invalid::Unsupported(m)) => Err(ManagementError::Invalid(m)),
    }
}

/// `GET /v1/nodes/{node}/states/console` (shared lock): `None` when the
/// console is not enabled (Ironic's NodeConsoleNotEnabled, which the API
/// shows as disabled), else the console's connection information (the
/// fake console has none: an empty object).
pub async fn console_information(
    prov: &Provisioner,
    node: NodeIdent,
    retry: Retry,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>, ManagementError> {
    let task = prov
        .task_manager()
        .acquire(node)
        .purpose("getting console information")
        .retry(retry)
        .shared()
        .await?;
    if !task.node().attrs.console_enabled {
        return Ok(None);
    }
    console_validated(prov, task.node()).await?;
    Ok(Some(serde_json::Map::new()))
}

/// `PUT /v1/nodes/{node}/states/console`: validate under a shared lock;
/// when the state changes, upgrade to exclusive, clear `last_error` and
/// start or stop the console in the background, then record
/// `console_enabled` (Ironic's `set_console_mode`).
pub async fn set_console_mode(
    prov: &Provisioner,
    node: NodeIdent,
    enabled: bool,
    retry: Retry,
) -> Result<(), ManagementError> {
    let shared = prov
        .task_manager()
        .acquire(node)
        .purpose("setting console mode")
        .retry(retry)
        .shared()
        .await?;
    console_validated(prov, shared.node()).await?;
    if shared.node().attrs.console_enabled == enabled {
        return Ok(());
    }
    let mut task = shared.upgrade().await?;
    // Re-checked under the exclusive lock: another request may have won.
    if task.node().attrs.console_enabled == enabled {
        release(task).await;
        return Ok(());
    }
    task.node_mut().last_error = None;
    if let Err(e) = task.save().await {
        release(task).await;
        return Err(e.into());
    }
    task.spawn_after("setting console mode", move |task| {
        Box::pin(async move {
            // The fake console starts and stops nothing; a real one would
            // run its start/stop here before the state is recorded.
            let n = task.node_mut();
            n.attrs.console_enabled = enabled;
            n.last_error = None;
            task.save().await?;
            Ok(())
        })
    })
    .await?;
    Ok(())
}

/// `PUT /v1/nodes/{node}/states/raid`: store `config` as the node's
/// `target_raid_config` under the exclusive lock, validated by the RAID
/// interface unless empty (an empty one unsets it, as Ironic). A RAID
/// interface that cannot (`no-raid`) is `Unsupported`.
pub async fn set_target_raid_config(
    prov: &Provisioner,
    node: NodeIdent,
    config: serde_json::Map<String, serde_json::Value>,
    retry: Retry,
) -> Result<(), ManagementError> {
    let mut task = exclusive(prov, node, "setting target RAID config", retry).await?;
    let outcome = async {
        if !config.is_empty() {
            let driver = compose(prov, task.node())?;
            if !driver.interface(InterfaceKind::Raid).supported() {
                return Err(ManagementError::Unsupported(unsupported(
                    &task.node().driver,
                    "raid",
                )));
            }
            crate::raid::validate_raid_config(&config).map_err(ManagementError::Invalid)?;
        }
        task.node_mut().attrs.target_raid_config = config;
        task.save().await?;
        Ok(())
    }
    .await;
    release(task).await;
    outcome
}

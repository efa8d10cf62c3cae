//! `fake-hardware`: an in-memory BMC per node, for tests and benchmarks.
//!
//! Behaviour is set per node in `driver_info` (all optional):
//! `fake_power_delay_ms`, `fake_deploy_delay_ms` (how long actions take),
//! `fake_power_read_delay_ms` (a power-state read answers this late, with
//! the state as it was when asked),
//! `fake_fail_power` / `fake_fail_deploy` / `fake_fail_clean` (a message: the
//! action fails with it), `fake_power_state_error` (reading the power state
//! fails), `fake_deploy` / `fake_clean` = `"wait"` (the step waits for an agent
//! call-back instead of finishing), `fake_invalid` (validation fails),
//! `fake_fail_step` (a step name: that deploy or clean step fails when it
//! runs, proving the steps engine ran it).
//!
//! [`FakeHardware`] is the `fake` power and management interface (the BMC);
//! [`FakeDeploy`] the `fake` deploy interface (its one deploy step, `deploy`,
//! and the cleaning frame); [`FakeOptional`] the `fake` boot and optional
//! interfaces, which succeed at everything and offer a few manual clean steps.

use super::{
    BootDevice, BootDeviceState, BootInterface, Composed, DeployInterface, DriverError, Interface,
    InterfaceKind, Invalid, ManagementInterface, PowerInterface, Property, Step, StepOutcome,
};
use crate::task::ExclusiveTask;
use async_trait::async_trait;
use ferric_core::{Node, PowerState};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use uuid::Uuid;

/// The fake BMCs of every node.
#[derive(Debug, Default)]
pub struct FakeHardware {
    power: Mutex<HashMap<Uuid, PowerState>>,
    power_reads: std::sync::atomic::AtomicU64,
    boot: Mutex<HashMap<Uuid, (BootDevice, bool)>>,
}

fn opt_str<'a>(node: &'a Node, key: &str) -> Option<&'a str> {
    node.driver_info.get(key).and_then(|v| v.as_str())
}

fn delay(node: &Node, key: &str) -> Duration {
    Duration::from_millis(
        node.driver_info
            .get(key)
            .and_then(|v| v.as_u64())
            .unwrap_or(0)
            .min(600_000),
    )
}

impl FakeHardware {
    /// A fake with every BMC powered off.
    pub fn new() -> Self {
        Self::default()
    }

    /// What the fake BMC of `node` says (tests use this to change the hardware behind ferric's back).
    pub fn bmc_power(&self, node: Uuid) -> PowerState {
        match self.power.lock() {
            Ok(m) => m.get(&node).copied().unwrap_or(PowerState::Off),
            Err(p) => p
                .into_inner()
                .get(&node)
                .copied()
                .unwrap_or(PowerState::Off),
        }
    }

    /// How many power-state reads have been asked of any fake BMC.
    pub fn power_reads(&self) -> u64 {
        self.power_reads.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Change the fake BMC's power state directly.
    pub fn set_bmc_power(&self, node: Uuid, state: PowerState) {
        match self.power.lock() {
            Ok(mut m) => {
                m.insert(node, state);
            }
            Err(p) => {
                p.into_inner().insert(node, state);
            }
        }
    }

    /// The boot device last set for `node`.
    pub fn boot_device(&self, node: Uuid) -> Option<(BootDevice, bool)> {
        match self.boot.lock() {
            Ok(m) => m.get(&node).copied(),
            Err(p) => p.into_inner().get(&node).copied(),
        }
    }
}

/// `fake_fail_step` names `step`: it fails.
fn failing_step(node: &Node, step: &Step) -> Result<(), DriverError> {
    match opt_str(node, "fake_fail_step") {
        Some(name) if name == step.step => Err(DriverError::permanent(format!(
            "fake step {} failed as asked",
            step.label()
        ))),
        _ => Ok(()),
    }
}

fn fake_validate(node: &Node) -> Result<(), Invalid> {
    match opt_str(node, "fake_invalid") {
        Some(m) => Err(Invalid::Config(m.to_string())),
        None => Ok(()),
    }
}

#[async_trait]
impl Interface for FakeHardware {
    fn name(&self) -> &'static str {
        "fake"
    }

    async fn validate(&self, node: &Node) -> Result<(), Invalid> {
        fake_validate(node)
    }

    fn properties(&self) -> Vec<Property> {
        let opt = |name, description| Property { name, description };
        vec![
            opt(
                "fake_power_delay_ms",
                "Milliseconds a power change takes. Optional",
            ),
            opt(
                "fake_power_read_delay_ms",
                "Milliseconds a power state read takes. Optional",
            ),
            opt(
                "fake_fail_power",
                "A message: power changes fail with it. Optional",
            ),
            opt(
                "fake_power_state_error",
                "A message: power state reads fail with it. Optional",
            ),
            opt(
                "fake_invalid",
                "A message: validation fails with it. Optional",
            ),
            opt(
                "fake_step_delay_ms",
                "Milliseconds the flow pauses before each fake step (0 allowed; default: the conductor's fake_step_delay). Optional",
            ),
        ]
    }
}

#[async_trait]
impl PowerInterface for FakeHardware {
    async fn get_power_state(&self, node: &Node) -> Result<PowerState, DriverError> {
        if let Some(m) = opt_str(node, "fake_power_state_error") {
            return Err(DriverError::transient(m));
        }
        let state = self.bmc_power(node.uuid);
        self.power_reads
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // A zero sleep still waits for the next timer tick (1 ms): only
        // sleep when asked to.
        let late = delay(node, "fake_power_read_delay_ms");
        if !late.is_zero() {
            tokio::time::sleep(late).await;
        }
        Ok(state)
    }

    async fn set_power_state(
        &self,
        task: &ExclusiveTask,
        target: PowerState,
    ) -> Result<(), DriverError> {
        let node = task.node();
        tokio::time::sleep(delay(node, "fake_power_delay_ms")).await;
        if let Some(m) = opt_str(node, "fake_fail_power") {
            return Err(DriverError::transient(m));
        }
        let end = match target {
            PowerState::On | PowerState::Rebooting | PowerState::SoftRebooting => PowerState::On,
            PowerState::Off | PowerState::SoftPowerOff => PowerState::Off,
            PowerState::Error => {
                return Err(DriverError::permanent("cannot set power state to error"))
            }
        };
        self.set_bmc_power(node.uuid, end);
        Ok(())
    }
}

#[async_trait]
impl ManagementInterface for FakeHardware {
    async fn set_boot_device(
        &self,
        task: &ExclusiveTask,
        device: BootDevice,
        persistent: bool,
    ) -> Result<(), DriverError> {
        match self.boot.lock() {
            Ok(mut m) => m.insert(task.node().uuid, (device, persistent)),
            Err(p) => p
                .into_inner()
                .insert(task.node().uuid, (device, persistent)),
        };
        Ok(())
    }

    /// The devices the fake BMC remembers (Ironic's fake offers `pxe`
    /// only; ferric's fake BMC also takes what the ipxe/pxe boot
    /// interfaces set).
    fn supported_boot_devices(&self, _node: &Node) -> Vec<BootDevice> {
        vec![
            BootDevice::Pxe,
            BootDevice::Disk,
            BootDevice::Cdrom,
            BootDevice::Bios,
        ]
    }

    /// What was last set, else Ironic's fake answer (`pxe`, not persistent).
    async fn get_boot_device(&self, task: &ExclusiveTask) -> Result<BootDeviceState, DriverError> {
        let (device, persistent) = self
            .boot_device(task.node().uuid)
            .unwrap_or((BootDevice::Pxe, false));
        Ok(BootDeviceState {
            device: Some(device),
            persistent: Some(persistent),
        })
    }
}

/// The `fake` deploy interface: one deploy step, `deploy` (priority 100),
/// honouring the `fake_*` knobs; cleaning prepares with the same knobs.
#[derive(Debug)]
pub struct FakeDeploy {
    hw: Arc<FakeHardware>,
}

impl FakeDeploy {
    /// The fake deploy interface over the fake BMCs `hw`.
    pub fn new(hw: Arc<FakeHardware>) -> Self {
        FakeDeploy { hw }
    }
}

#[async_trait]
impl Interface for FakeDeploy {
    fn name(&self) -> &'static str {
        "fake"
    }

    async fn validate(&self, node: &Node) -> Result<(), Invalid> {
        fake_validate(node)
    }

    fn deploy_steps(&self, _node: &Node) -> Vec<Step> {
        vec![Step::new(InterfaceKind::Deploy, "deploy", 100)]
    }

    fn clean_steps(&self, _node: &Node) -> Vec<Step> {
        vec![
            Step::new(InterfaceKind::Deploy, "erase_devices", 0),
            Step::new(InterfaceKind::Deploy, "erase_devices_metadata", 0),
        ]
    }

    async fn execute_step(
        &self,
        _driver: &Composed,
        task: &mut ExclusiveTask,
        step: &Step,
    ) -> Result<StepOutcome, DriverError> {
        let node = task.node();
        failing_step(node, step)?;
        match step.step.as_str() {
            "deploy" => {
                tokio::time::sleep(delay(node, "fake_deploy_delay_ms")).await;
                if let Some(m) = opt_str(node, "fake_fail_deploy") {
                    return Err(DriverError::permanent(m));
                }
                self.hw.set_bmc_power(node.uuid, PowerState::On);
                Ok(if opt_str(node, "fake_deploy") == Some("wait") {
                    StepOutcome::Wait
                } else {
                    StepOutcome::Done
                })
            }
            "erase_devices" | "erase_devices_metadata" => Ok(StepOutcome::Done),
            other => Err(DriverError::permanent(format!(
                "the fake deploy interface has no step {other}"
            ))),
        }
    }
}

#[async_trait]
impl DeployInterface for FakeDeploy {
    async fn prepare_cleaning(
        &self,
        _driver: &Composed,
        task: &mut ExclusiveTask,
    ) -> Result<StepOutcome, DriverError> {
        let node = task.node();
        tokio::time::sleep(delay(node, "fake_deploy_delay_ms")).await;
        if let Some(m) = opt_str(node, "fake_fail_clean") {
            return Err(DriverError::permanent(m));
        }
        Ok(if opt_str(node, "fake_clean") == Some("wait") {
            StepOutcome::Wait
        } else {
            StepOutcome::Done
        })
    }

    async fn tear_down(
        &self,
        _driver: &Composed,
        task: &mut ExclusiveTask,
    ) -> Result<(), DriverError> {
        self.hw.set_bmc_power(task.node().uuid, PowerState::Off);
        Ok(())
    }
}

/// The `fake` implementation of the boot and optional interfaces: every
/// action succeeds at once. RAID and BIOS offer Ironic's fake manual clean
/// steps; BIOS `apply_configuration` and `factory_reset` write the node's
/// cached settings as Ironic's fake does.
#[derive(Debug)]
pub struct FakeOptional {
    kind: InterfaceKind,
}

impl FakeOptional {
    /// The fake `kind` interface.
    pub fn new(kind: InterfaceKind) -> Self {
        FakeOptional { kind }
    }
}

#[async_trait]
impl Interface for FakeOptional {
    fn name(&self) -> &'static str {
        "fake"
    }

    async fn validate(&self, node: &Node) -> Result<(), Invalid> {
        // `fake_invalid` is about the BMC: it fails power, management,
        // boot and deploy; the optional interfaces stay valid.
        if self.kind == InterfaceKind::Boot {
            fake_validate(node)
        } else {
            Ok(())
        }
    }

    /// The BIOS steps are deploy steps too (priority 0: run only when a
    /// user or a deploy template asks), as on Ironic's real BIOS
    /// interfaces (redfish, idrac); Ironic's fake BIOS offers them for
    /// cleaning only, which leaves a fake node no deploy step a deploy
    /// template could add.
    fn deploy_steps(&self, _node: &Node) -> Vec<Step> {
        let names: &[&str] = match self.kind {
            InterfaceKind::Bios => &["apply_configuration", "factory_reset"],
            _ => &[],
        };
        names.iter().map(|n| Step::new(self.kind, n, 0)).collect()
    }

    fn clean_steps(&self, _node: &Node) -> Vec<Step> {
        let names: &[&str] = match self.kind {
            InterfaceKind::Raid => &["create_configuration", "delete_configuration"],
            InterfaceKind::Bios => &["apply_configuration", "factory_reset"],
            _ => &[],
        };
        names.iter().map(|n| Step::new(self.kind, n, 0)).collect()
    }

    async fn execute_step(
        &self,
        _driver: &Composed,
        task: &mut ExclusiveTask,
        step: &Step,
    ) -> Result<StepOutcome, DriverError> {
        failing_step(task.node(), step)?;
        if self.kind == InterfaceKind::Bios {
            match step.step.as_str() {
                "apply_configuration" => {
                    fake_apply_bios(task, step).await?;
                    return Ok(StepOutcome::Done);
                }
                "factory_reset" => {
                    let store = task.manager().store().clone();
                    store
                        .set_bios_settings(task.token(), &[])
                        .await
                        .map_err(|e| DriverError::permanent(e.to_string()))?;
                    return Ok(StepOutcome::Done);
                }
                _ => {}
            }
        }
        if self
            .clean_steps(task.node())
            .iter()
            .any(|s| s.step == step.step)
        {
            Ok(StepOutcome::Done)
        } else {
            Err(DriverError::permanent(format!(
                "the fake {} interface has no step {}",
                self.kind, step.step
            )))
        }
    }
}

/// Ironic's fake BIOS `apply_configuration`: the cached settings become
/// the given `settings` (`[{"name": ..., "value": ...}]`): new ones are
/// created, changed values updated (registry fields kept), the others
/// deleted (`BIOSSettingList.sync_node_setting`).
async fn fake_apply_bios(task: &ExclusiveTask, step: &Step) -> Result<(), DriverError> {
    let invalid = || {
        DriverError::permanent(
            "bios.apply_configuration needs \"settings\": a list of {\"name\": ..., \"value\": ...}",
        )
    };
    let given = step
        .args
        .get("settings")
        .and_then(|v| v.as_array())
        .ok_or_else(invalid)?;
    let store = task.manager().store().clone();
    let current = store
        .list_bios_settings(task.node().uuid)
        .await
        .map_err(|e| DriverError::permanent(e.to_string()))?;
    let mut next = Vec::with_capacity(given.len());
    for item in given {
        let name = item
            .get("name")
            .and_then(|v| v.as_str())
            .ok_or_else(invalid)?;
        let value = match item.get("value") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(other) => Some(other.to_string()),
        };
        let mut setting = current
            .iter()
            .find(|c| c.name == name)
            .cloned()
            .unwrap_or_else(|| ferric_store::BiosSetting {
                name: name.to_string(),
                ..Default::default()
            });
        setting.value = value;
        next.push(setting);
    }
    store
        .set_bios_settings(task.token(), &next)
        .await
        .map_err(|e| DriverError::permanent(e.to_string()))
}

#[async_trait]
impl BootInterface for FakeOptional {
    async fn prepare_ramdisk(
        &self,
        _driver: &Composed,
        _task: &ExclusiveTask,
    ) -> Result<(), DriverError> {
        Ok(())
    }

    async fn prepare_instance(
        &self,
        _driver: &Composed,
        _task: &ExclusiveTask,
    ) -> Result<(), DriverError> {
        Ok(())
    }
}

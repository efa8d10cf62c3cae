//! `fake-hardware`: an in-memory BMC per node, for tests and benchmarks.
//!
//! Behaviour is set per node in `driver_info` (all optional):
//! `fake_power_delay_ms`, `fake_deploy_delay_ms` (how long actions take),
//! `fake_power_read_delay_ms` (a power-state read answers this late, with
//! the state as it was when asked),
//! `fake_fail_power` / `fake_fail_deploy` / `fake_fail_clean` (a message: the
//! action fails with it), `fake_power_state_error` (reading the power state
//! fails), `fake_deploy` / `fake_clean` = `"wait"` (the step waits for an agent
//! call-back instead of finishing), `fake_invalid` (validation fails).

use super::{BootDevice, Driver, DriverError, StepOutcome};
use crate::task::ExclusiveTask;
use async_trait::async_trait;
use ferric_core::{Node, PowerState};
use std::collections::{BTreeMap, HashMap};
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

#[async_trait]
impl Driver for FakeHardware {
    fn name(&self) -> &'static str {
        "fake-hardware"
    }

    async fn validate(&self, node: &Node) -> BTreeMap<&'static str, Result<(), String>> {
        let verdict = match opt_str(node, "fake_invalid") {
            Some(m) => Err(m.to_string()),
            None => Ok(()),
        };
        ["boot", "deploy", "management", "power"]
            .into_iter()
            .map(|i| (i, verdict.clone()))
            .collect()
    }

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

    async fn deploy(&self, task: &ExclusiveTask) -> Result<StepOutcome, DriverError> {
        let node = task.node();
        tokio::time::sleep(delay(node, "fake_deploy_delay_ms")).await;
        if let Some(m) = opt_str(node, "fake_fail_deploy") {
            return Err(DriverError::permanent(m));
        }
        self.set_bmc_power(node.uuid, PowerState::On);
        Ok(if opt_str(node, "fake_deploy") == Some("wait") {
            StepOutcome::Wait
        } else {
            StepOutcome::Done
        })
    }

    async fn clean(&self, task: &ExclusiveTask) -> Result<StepOutcome, DriverError> {
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

    async fn tear_down(&self, task: &ExclusiveTask) -> Result<(), DriverError> {
        self.set_bmc_power(task.node().uuid, PowerState::Off);
        Ok(())
    }
}

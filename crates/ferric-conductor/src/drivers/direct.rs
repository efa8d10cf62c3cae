//! `direct`: Ironic's agent deploy (`drivers/modules/agent.py`,
//! `agent_base.py`), on the steps engine.
//!
//! Deploy steps (out of band, Ironic's priorities):
//!
//! | step | priority | what |
//! |---|---|---|
//! | `deploy` | 100 | boot the agent ramdisk (boot interface + reboot), wait for its heartbeat |
//! | `write_image` | 80 | the agent's `deploy.execute_deploy_step` `write_image` with `image_info` and the config drive; polled on heartbeats |
//! | `prepare_instance_boot` | 60 | the boot interface's `prepare_instance` (boot from disk) |
//! | `tear_down_agent` | 40 | the agent's `standby.sync`, then power off out of band |
//! | `boot_instance` | 20 | power on |
//!
//! At the agent's first heartbeat the conductor asks it for its own deploy
//! and clean steps (`get_deploy_steps` / `get_clean_steps`) and caches them
//! in `driver_internal_info.agent_cached_{deploy,clean}_steps`; in-band
//! steps run through `execute_{deploy,clean}_step` and are polled
//! (`GET /v1/commands/`) on later heartbeats, as Ironic's
//! `process_next_step`. Clean steps are the agent's steps of the `deploy`
//! interface, with `erase_devices` and `erase_devices_metadata` at the
//! configured priorities (`[agent]`: 0 and 99 by default: only the metadata
//! is wiped). Before the agent has reported, the two erase steps are
//! offered at those priorities so a manual cleaning can be checked.
//!
//! Decision: ferric never asks the agent to power the machine off
//! (`standby.power_off`): the power interface does it out of band after a
//! `standby.sync`, so a ramdisk that ignores or mishandles the command
//! cannot leave the node half-deployed, and tests that run the agent on a
//! development machine cannot power it off.
//!
//! Images: whole-disk images from an http(s) URL with a checksum
//! (`image_os_hash_algo` + `image_os_hash_value`, or `image_checksum`, a
//! SHA-2 digest or a URL of a checksum file); checked when the deploy is
//! requested (400), as Ironic's `AgentDeploy.validate`.

use super::agent_client::{command_error, AgentClient, TOKEN_KEY};
use super::{
    Composed, DeployInterface, DriverError, Interface, InterfaceKind, Invalid, Phase, Property,
    Step, StepOutcome,
};
use crate::task::ExclusiveTask;
use async_trait::async_trait;
use ferric_core::{Node, PowerState};
use ferric_store::resource::{ResourceKind, ResourceQuery};
use serde_json::{json, Map, Value};
use std::sync::Arc;
use tracing::{info, warn};

/// Image disk formats the agent is asked to write.
pub const DISK_FORMATS: [&str; 2] = ["raw", "qcow2"];

/// Hash algorithms accepted in `image_os_hash_algo` (MD5 is refused, as
/// Ironic 39 refuses it by default).
pub const HASH_ALGOS: [&str; 4] = ["sha256", "sha384", "sha512", "sha1"];

/// The `direct` deploy interface.
#[derive(Debug)]
pub struct DirectDeploy {
    agent: Arc<AgentClient>,
}

impl DirectDeploy {
    /// The interface, talking to agents with `agent`.
    pub fn new(agent: Arc<AgentClient>) -> Self {
        DirectDeploy { agent }
    }

    /// `agent_cached_<phase>_steps` of the `deploy` interface, as steps.
    fn cached(&self, node: &Node, phase: Phase) -> Option<Vec<Step>> {
        let all = node
            .driver_internal_info
            .get(&format!("agent_cached_{}_steps", phase.as_str()))?
            .as_object()?;
        let list = all.get("deploy").and_then(Value::as_array)?;
        Some(
            list.iter()
                .filter_map(|s| {
                    let m = s.as_object()?;
                    let mut step = Step::new(
                        InterfaceKind::Deploy,
                        m.get("step")?.as_str()?,
                        m.get("priority").and_then(Value::as_i64).unwrap_or(0),
                    );
                    step.abortable = m.get("abortable").and_then(Value::as_bool).unwrap_or(false);
                    Some(step)
                })
                .collect(),
        )
    }

    fn erase_priority(&self, name: &str) -> Option<i64> {
        let c = self.agent.config();
        match name {
            "erase_devices" => Some(c.erase_devices_priority),
            "erase_devices_metadata" => Some(c.erase_devices_metadata_priority),
            _ => None,
        }
    }

    /// Send an in-band step to the agent; the node waits for it.
    async fn execute_in_band(
        &self,
        task: &ExclusiveTask,
        phase: Phase,
        step: &Step,
        args: Map<String, Value>,
    ) -> Result<StepOutcome, DriverError> {
        let node = task.node();
        let ports = ports_of(task).await?;
        let kind = phase.as_str();
        let params = json!({
            "step": {
                "interface": step.interface.as_str(),
                "step": step.step,
                "priority": step.priority,
                "args": args,
                "abortable": step.abortable,
            },
            "node": agent_node(node, phase == Phase::Deploy),
            "ports": ports,
            format!("{kind}_version"): node.driver_internal_info.get("hardware_manager_version").cloned().unwrap_or(Value::Null),
        });
        let result = self
            .agent
            .command(node, &format!("{kind}.execute_{kind}_step"), params, false)
            .await?;
        if result
            .get("command_status")
            .and_then(Value::as_str)
            .is_none()
        {
            return Err(DriverError::permanent(format!(
                "Agent on node {} returned bad command result: {result}",
                node.uuid
            )));
        }
        Ok(StepOutcome::Wait)
    }

    /// Poll the in-band step the node waits for (Ironic's
    /// `_get_completed_command`): `Wait` while it runs or has not started,
    /// `Done` when it succeeded, an error with the agent's message when it
    /// failed.
    async fn poll(
        &self,
        task: &ExclusiveTask,
        phase: Phase,
        step: &Step,
    ) -> Result<StepOutcome, DriverError> {
        let node = task.node();
        let commands = self.agent.commands_status(node).await?;
        let kind = phase.as_str();
        let Some(last) = commands.last() else {
            return Err(DriverError::permanent(format!(
                "the agent of node {} has no record of {kind} step {} (it restarted?)",
                node.uuid,
                step.label()
            )));
        };
        let name = last
            .get("command_name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if name != format!("execute_{kind}_step") {
            return Ok(StepOutcome::Wait);
        }
        let status = last
            .get("command_status")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let ran = last
            .get("command_result")
            .and_then(|r| r.get(format!("{kind}_step")))
            .and_then(Value::as_object);
        let same = ran.is_some_and(|r| {
            r.get("interface").and_then(Value::as_str) == Some(step.interface.as_str())
                && r.get("step").and_then(Value::as_str) == Some(step.step.as_str())
        });
        match status {
            "RUNNING" => Ok(StepOutcome::Wait),
            "SUCCEEDED" if same => Ok(StepOutcome::Done),
            // A previous step's command: this one has not started yet.
            "SUCCEEDED" => Ok(StepOutcome::Wait),
            "FAILED" => Err(DriverError::permanent(command_error(last))),
            other => Err(DriverError::permanent(format!(
                "Agent returned unknown status for {kind} step {} on node {}: {other}",
                step.label(),
                node.uuid
            ))),
        }
    }

    /// `write_image`: what the agent needs to download, check and write the image.
    async fn write_image(
        &self,
        task: &ExclusiveTask,
        step: &Step,
    ) -> Result<StepOutcome, DriverError> {
        let node = task.node();
        let ii = &node.instance_info;
        let text = |k: &str| ii.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
        let source = text("image_source").ok_or_else(|| {
            DriverError::permanent(format!(
                "node {} has no instance_info.image_source",
                node.uuid
            ))
        })?;
        let url = text("image_url").unwrap_or(source);
        let mut info = Map::new();
        info.insert(
            "id".into(),
            Value::String(source.rsplit('/').next().unwrap_or(source).to_string()),
        );
        info.insert("urls".into(), json!([url]));
        info.insert(
            "disk_format".into(),
            text("image_disk_format").map_or(Value::Null, Value::from),
        );
        info.insert(
            "container_format".into(),
            text("image_container_format").map_or(Value::Null, Value::from),
        );
        info.insert(
            "stream_raw_images".into(),
            Value::Bool(self.agent.config().stream_raw_images),
        );
        if let Some(c) = text("image_checksum") {
            info.insert("checksum".into(), Value::from(c));
        }
        if let (Some(a), Some(v)) = (text("image_os_hash_algo"), text("image_os_hash_value")) {
            info.insert("os_hash_algo".into(), Value::from(a));
            info.insert("os_hash_value".into(), Value::from(v));
        }
        info.insert("node_uuid".into(), Value::String(node.uuid.to_string()));
        let configdrive = crate::configdrive::image_for(node)
            .await
            .map_err(DriverError::permanent)?;
        if let Some(cd) = &configdrive {
            info.insert("configdrive".into(), Value::String(cd.clone()));
        }
        let mut args = Map::new();
        args.insert("image_info".into(), Value::Object(info));
        args.insert(
            "configdrive".into(),
            configdrive.map_or(Value::Null, Value::String),
        );
        info!(node_uuid = %node.uuid, image = %source, "asking the agent to write the image");
        self.execute_in_band(task, Phase::Deploy, step, args).await
    }
}

/// The node as the agent sees it (Ironic's `node.as_dict(secure=True)`):
/// secrets masked, the agent's token left out, the config drive only for a
/// deploy step.
pub fn agent_node(node: &Node, with_configdrive: bool) -> Value {
    let mut dii = node.driver_internal_info.clone();
    dii.remove(TOKEN_KEY);
    dii.remove("agent_secret_token_pregenerated");
    let ii = if with_configdrive {
        ferric_core::mask::mask_dict_keeping(&node.instance_info, &["configdrive"])
    } else {
        ferric_core::mask::instance_info(&node.instance_info)
    };
    json!({
        "uuid": node.uuid,
        "name": node.name,
        "driver": node.driver,
        "driver_info": ferric_core::mask::mask_dict(&node.driver_info),
        "driver_internal_info": dii,
        "instance_info": ii,
        "instance_uuid": node.instance_uuid,
        "properties": node.properties,
        "extra": node.extra,
        "provision_state": node.provision_state.as_str(),
        "target_provision_state": node.target_provision_state.map(|s| s.as_str()),
        "automated_clean": node.attrs.automated_clean,
        "traits": node.attrs.traits,
    })
}

/// The node's ports, as the agent sees them.
async fn ports_of(task: &ExclusiveTask) -> Result<Value, DriverError> {
    let node = task.node().uuid;
    let mut q = ResourceQuery::all(ResourceKind::Port);
    q.node = Some(node);
    let ports = task
        .manager()
        .store()
        .list_resources(&q)
        .await
        .map_err(|e| {
            DriverError::transient(format!("cannot read the ports of node {node}: {e}"))
        })?;
    Ok(Value::Array(
        ports
            .into_iter()
            .map(|p| {
                let mut m = p.body.clone();
                m.insert("uuid".into(), Value::String(p.uuid.to_string()));
                m.insert("node_uuid".into(), Value::String(node.to_string()));
                m.insert("address".into(), p.key.map_or(Value::Null, Value::String));
                Value::Object(m)
            })
            .collect(),
    ))
}

/// Boot the ramdisk: the boot interface prepares it, then a reboot (power
/// on when off).
pub(crate) async fn boot_ramdisk(
    driver: &Composed,
    task: &mut ExclusiveTask,
) -> Result<(), DriverError> {
    driver.boot.prepare_ramdisk(driver, task).await?;
    power(driver, task, PowerState::Rebooting).await
}

/// A power action inside a flow (Ironic's `node_power_action`): the node
/// shows the power state it was put in (saved with the flow's next save).
/// The agent's session needs nothing here: every flow that reboots into a
/// ramdisk starts from a state where no agent runs, and the session goes
/// with every transition out of the agent states (`process_event`).
pub(crate) async fn power(
    driver: &Composed,
    task: &mut ExclusiveTask,
    target: PowerState,
) -> Result<(), DriverError> {
    driver.power.set_power_state(task, target).await?;
    let n = task.node_mut();
    n.power_state = Some(match target {
        PowerState::Off | PowerState::SoftPowerOff => PowerState::Off,
        _ => PowerState::On,
    });
    n.target_power_state = None;
    Ok(())
}

/// Ironic's `AgentDeploy.validate` of `instance_info`; `Err` is the message.
pub fn validate_image(node: &Node) -> Result<(), String> {
    let ii = &node.instance_info;
    let text = |k: &str| -> Result<Option<&str>, String> {
        match ii.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim())),
            Some(other) => Err(format!("instance_info.{k} must be a string, not {other}")),
        }
    };
    let Some(source) = text("image_source")? else {
        return Err(format!(
            "Node {} failed to validate deploy image info. Some parameters were missing. Missing are: ['instance_info.image_source']",
            node.uuid
        ));
    };
    let url = text("image_url")?.unwrap_or(source);
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!(
            "instance_info.image_source {source:?} must be an http:// or https:// URL: ferric has no image service (Glance) and serves no local files"
        ));
    }
    if let Some(t) = text("image_type")? {
        match t {
            "whole-disk" => {}
            "partition" => {
                return Err(
                    "Invalid image_type \"partition\": ferric deploys whole-disk images only"
                        .into(),
                )
            }
            other => {
                return Err(format!(
                    "Invalid image_type \"{other}\", valid are partition, whole-disk"
                ))
            }
        }
    }
    if let Some(f) = text("image_disk_format")? {
        if !DISK_FORMATS.contains(&f) {
            return Err(format!(
                "instance_info.image_disk_format \"{f}\" is not one of the permitted image formats: {}",
                DISK_FORMATS.join(", ")
            ));
        }
    }
    let missing = || {
        format!(
            "image_source's \"image_checksum\", or \"image_os_hash_algo\" and \"image_os_hash_value\" must be provided in instance_info for node {}",
            node.uuid
        )
    };
    let checksum = text("image_checksum")?;
    match (text("image_os_hash_algo")?, text("image_os_hash_value")?) {
        (Some(algo), Some(value)) => {
            if !HASH_ALGOS.contains(&algo) {
                return Err(format!(
                    "instance_info.image_os_hash_algo \"{algo}\" is not one of {} (MD5 is disabled)",
                    HASH_ALGOS.join(", ")
                ));
            }
            if !value.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err("instance_info.image_os_hash_value must be a hexadecimal digest".into());
            }
        }
        (Some(_), None) | (None, Some(_)) => return Err(missing()),
        (None, None) => match checksum {
            None => return Err(missing()),
            Some(c) if c.contains("://") => {}
            Some(c) if c.len() <= 32 => {
                return Err(format!(
                    "instance_info.image_checksum of node {} looks like an MD5 digest; MD5 is disabled: give image_os_hash_algo and image_os_hash_value (e.g. sha256)",
                    node.uuid
                ))
            }
            Some(c) if !c.chars().all(|c| c.is_ascii_hexdigit()) => {
                return Err("instance_info.image_checksum must be a hexadecimal digest or a URL".into())
            }
            Some(_) => {}
        },
    }
    if let Some(cd) = ii.get("configdrive") {
        crate::configdrive::validate(cd)?;
    }
    Ok(())
}

#[async_trait]
impl Interface for DirectDeploy {
    fn name(&self) -> &'static str {
        "direct"
    }

    async fn validate(&self, node: &Node) -> Result<(), Invalid> {
        validate_image(node).map_err(Invalid::Config)
    }

    fn properties(&self) -> Vec<Property> {
        vec![Property {
            name: "agent_verify_ca",
            description: "Either a Boolean value, a path to a CA_BUNDLE file or directory with certificates of trusted CAs. If set to True ironic will verify the agent's certificate; if False the driver will ignore verifying the SSL certificate. If it's a path the driver will use the specified certificate or one of the certificates in the directory. Defaults to True. Optional",
        }]
    }

    fn deploy_steps(&self, node: &Node) -> Vec<Step> {
        let mut steps = vec![
            Step::new(InterfaceKind::Deploy, "deploy", 100),
            Step::new(InterfaceKind::Deploy, "write_image", 80),
            Step::new(InterfaceKind::Deploy, "prepare_instance_boot", 60),
            Step::new(InterfaceKind::Deploy, "tear_down_agent", 40),
            Step::new(InterfaceKind::Deploy, "boot_instance", 20),
        ];
        // In-band steps the agent reported, unless shadowed by ours.
        for s in self.cached(node, Phase::Deploy).unwrap_or_default() {
            if !steps.iter().any(|o| o.step == s.step) {
                steps.push(s);
            }
        }
        steps
    }

    fn clean_steps(&self, node: &Node) -> Vec<Step> {
        let mut steps = self.cached(node, Phase::Clean).unwrap_or_else(|| {
            ["erase_devices", "erase_devices_metadata"]
                .into_iter()
                .map(|n| Step::new(InterfaceKind::Deploy, n, 0))
                .collect()
        });
        for s in &mut steps {
            if let Some(p) = self.erase_priority(&s.step) {
                s.priority = p;
            }
        }
        steps
    }

    async fn execute_step(
        &self,
        driver: &Composed,
        task: &mut ExclusiveTask,
        step: &Step,
    ) -> Result<StepOutcome, DriverError> {
        let in_deploy = matches!(
            task.node().provision_state,
            ferric_core::ProvisionState::Deploying
        );
        if !in_deploy {
            return self
                .execute_in_band(task, Phase::Clean, step, step.args.clone())
                .await;
        }
        match step.step.as_str() {
            "deploy" => {
                boot_ramdisk(driver, task).await?;
                Ok(StepOutcome::Wait)
            }
            "write_image" => self.write_image(task, step).await,
            "prepare_instance_boot" => {
                driver.boot.prepare_instance(driver, task).await?;
                Ok(StepOutcome::Done)
            }
            "tear_down_agent" => {
                if let Err(e) = self
                    .agent
                    .command(task.node(), "standby.sync", json!({}), true)
                    .await
                {
                    warn!(node_uuid = %task.node().uuid, error.message = %e, "the agent could not flush the disks before power off");
                }
                power(driver, task, PowerState::Off).await?;
                Ok(StepOutcome::Done)
            }
            "boot_instance" => {
                power(driver, task, PowerState::On).await?;
                Ok(StepOutcome::Done)
            }
            _ if self.cached(task.node(), Phase::Deploy).is_some_and(|c| c.iter().any(|s| s.step == step.step)) => {
                self.execute_in_band(task, Phase::Deploy, step, step.args.clone()).await
            }
            other => Err(DriverError::permanent(format!(
                "Deploy step deploy.{other} has not been found. Available out-of-band steps: deploy, write_image, prepare_instance_boot, tear_down_agent, boot_instance. Agent is not running."
            ))),
        }
    }

    async fn continue_step(
        &self,
        _driver: &Composed,
        task: &mut ExclusiveTask,
        step: &Step,
    ) -> Result<StepOutcome, DriverError> {
        let phase = if matches!(
            task.node().provision_state,
            ferric_core::ProvisionState::DeployWait | ferric_core::ProvisionState::Deploying
        ) {
            Phase::Deploy
        } else {
            Phase::Clean
        };
        if phase == Phase::Deploy && step.step == "deploy" {
            // The ramdisk is up: that was the wait.
            return Ok(StepOutcome::Done);
        }
        self.poll(task, phase, step).await
    }
}

#[async_trait]
impl DeployInterface for DirectDeploy {
    async fn prepare_cleaning(
        &self,
        driver: &Composed,
        task: &mut ExclusiveTask,
    ) -> Result<StepOutcome, DriverError> {
        boot_ramdisk(driver, task).await?;
        Ok(StepOutcome::Wait)
    }

    async fn tear_down_cleaning(
        &self,
        driver: &Composed,
        task: &mut ExclusiveTask,
    ) -> Result<(), DriverError> {
        driver.boot.clean_up_ramdisk(driver, task).await?;
        power(driver, task, PowerState::Off).await
    }

    async fn refresh_steps(
        &self,
        _driver: &Composed,
        task: &mut ExclusiveTask,
        phase: Phase,
    ) -> Result<(), DriverError> {
        let kind = phase.as_str();
        let ports = ports_of(task).await?;
        let params = json!({"node": agent_node(task.node(), false), "ports": ports});
        let result = self
            .agent
            .command(
                task.node(),
                &format!("{kind}.get_{kind}_steps"),
                params,
                true,
            )
            .await?;
        let uuid = task.node().uuid;
        let r = result.get("command_result").cloned().unwrap_or(Value::Null);
        let (Some(Value::Object(by_manager)), Some(version)) = (
            r.get(format!("{kind}_steps")),
            r.get("hardware_manager_version"),
        ) else {
            return Err(DriverError::permanent(format!(
                "agent get_{kind}_steps for node {uuid} returned an invalid result: {r}"
            )));
        };
        let mut by_interface: Map<String, Value> = Map::new();
        for list in by_manager.values() {
            for s in list.as_array().map(Vec::as_slice).unwrap_or_default() {
                let ok = ["interface", "step", "priority"]
                    .iter()
                    .all(|k| s.get(k).is_some());
                if !ok {
                    return Err(DriverError::permanent(format!(
                        "agent get_{kind}_steps for node {uuid} returned an invalid {kind} step: {s}"
                    )));
                }
                let iface = s
                    .get("interface")
                    .and_then(Value::as_str)
                    .unwrap_or("deploy")
                    .to_string();
                if let Value::Array(v) = by_interface.entry(iface).or_insert_with(|| json!([])) {
                    v.push(s.clone());
                }
            }
        }
        let n = task.node_mut();
        n.driver_internal_info
            .insert("hardware_manager_version".into(), version.clone());
        n.driver_internal_info.insert(
            format!("agent_cached_{kind}_steps"),
            Value::Object(by_interface),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn node(ii: Value) -> Node {
        serde_json::from_value(json!({
            "uuid": "8a4b5c1e-2f3d-4e5f-9a8b-7c6d5e4f3a2b",
            "name": null, "driver": "redfish", "driver_info": {"redfish_password": "pw"}, "properties": {},
            "extra": {}, "instance_info": ii, "instance_uuid": null, "interfaces": {},
            "provision_state": "available", "target_provision_state": null,
            "power_state": null, "target_power_state": null, "maintenance": false,
            "maintenance_reason": null, "last_error": null, "conductor_group": "",
            "conductor_affinity": null, "reservation": null, "lock_epoch": 0,
            "lock_waiters": 0, "revision": 0, "created_at": 0, "updated_at": null,
            "provision_updated_at": null
        }))
        .unwrap()
    }

    const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn instance_info_rules_follow_ironic() {
        let ok = json!({"image_source": "http://h/i.qcow2", "image_os_hash_algo": "sha256", "image_os_hash_value": SHA});
        assert!(validate_image(&node(ok)).is_ok());
        assert!(validate_image(&node(
            json!({"image_source": "https://h/i", "image_checksum": SHA})
        ))
        .is_ok());
        assert!(validate_image(&node(
            json!({"image_source": "https://h/i", "image_checksum": "http://h/SHA256SUMS"})
        ))
        .is_ok());
        for (ii, says) in [
            (json!({}), "Missing are: ['instance_info.image_source']"),
            (
                json!({"image_source": "http://h/i"}),
                "must be provided in instance_info",
            ),
            (
                json!({"image_source": "http://h/i", "image_os_hash_algo": "sha256"}),
                "must be provided",
            ),
            (
                json!({"image_source": "http://h/i", "image_os_hash_value": SHA}),
                "must be provided",
            ),
            (
                json!({"image_source": "http://h/i", "image_checksum": "d41d8cd98f00b204e9800998ecf8427e"}),
                "MD5 is disabled",
            ),
            (
                json!({"image_source": "http://h/i", "image_os_hash_algo": "md5", "image_os_hash_value": SHA}),
                "MD5 is disabled",
            ),
            (
                json!({"image_source": "glance-uuid", "image_checksum": SHA}),
                "http:// or https://",
            ),
            (
                json!({"image_source": "http://h/i", "image_checksum": SHA, "image_disk_format": "vmdk"}),
                "permitted image formats",
            ),
            (
                json!({"image_source": "http://h/i", "image_checksum": SHA, "image_type": "partition"}),
                "whole-disk images only",
            ),
            (
                json!({"image_source": "http://h/i", "image_checksum": SHA, "configdrive": {"x": 1}}),
                "'x' was unexpected",
            ),
            (json!({"image_source": 3}), "must be a string"),
        ] {
            let e = validate_image(&node(ii.clone())).unwrap_err();
            assert!(e.contains(says), "{ii} → {e}");
        }
    }

    #[test]
    fn the_agent_sees_no_secret() {
        let mut n = node(
            json!({"image_source": "http://h/i", "configdrive": {"user_data": "x"}, "image_password": "p"}),
        );
        n.driver_internal_info
            .insert(TOKEN_KEY.into(), json!("tok"));
        let v = agent_node(&n, false);
        assert!(v["driver_internal_info"].get(TOKEN_KEY).is_none());
        assert_eq!(v["driver_info"]["redfish_password"], "******");
        assert_eq!(v["instance_info"]["image_password"], "******");
        assert_eq!(v["instance_info"]["configdrive"], "******");
        let v = agent_node(&n, true);
        assert_eq!(v["instance_info"]["configdrive"]["user_data"], "x");
    }

    #[test]
    fn clean_steps_take_the_configured_priorities() {
        let d = DirectDeploy::new(Arc::new(AgentClient::default()));
        let mut n = node(json!({}));
        let s = d.clean_steps(&n);
        assert_eq!(
            s.iter()
                .map(|s| (s.step.as_str(), s.priority))
                .collect::<Vec<_>>(),
            [("erase_devices", 0), ("erase_devices_metadata", 99)]
        );
        n.driver_internal_info.insert(
            "agent_cached_clean_steps".into(),
            json!({"deploy": [
                {"interface": "deploy", "step": "erase_devices", "priority": 10, "abortable": true},
                {"interface": "deploy", "step": "erase_devices_metadata", "priority": 99},
                {"interface": "deploy", "step": "burnin_cpu", "priority": 0},
            ]}),
        );
        let s = d.clean_steps(&n);
        assert_eq!(
            s.iter()
                .map(|s| (s.step.as_str(), s.priority, s.abortable))
                .collect::<Vec<_>>(),
            [
                ("erase_devices", 0, true),
                ("erase_devices_metadata", 99, false),
                ("burnin_cpu", 0, false)
            ]
        );
    }
}

//! `ferric bench ipmi`: power-sync cycle time over real BMCs (issue 16).
//!
//! Enrols one `ipmi` node per BMC address in a fresh SQLite store and runs
//! the conductor's power sync ([`PowerSync::sync_once`], the product path:
//! ring, listing, `sync_power_state_workers` at a time, each read one
//! `ipmitool power status` through the per-BMC discipline, batched
//! recording) `cycles` times, pausing `min_command_interval` between cycles
//! so the discipline's gap is not what is measured (a real sync runs every
//! `sync_power_state_interval`, 120 s). The limit it is reported beside is
//! the same reads with `ipmitool` in a shell loop (`.ci/ipmi.sh`).

use ferric_conductor::drivers::ipmi::{Ipmi, IpmiConfig};
use ferric_conductor::drivers::{Drivers, HardwareConfig};
use ferric_conductor::power::PowerSync;
use ferric_conductor::{ConductorConfig, LogSink, TaskError, TaskManager};
use ferric_core::{NewNode, ProvisionState};
use ferric_store::{ConductorInfo, SqlStore, Store, StoreError};
use serde::Serialize;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to measure.
#[derive(Debug, Clone)]
pub struct IpmiBenchParams {
    /// BMCs as `host:port`.
    pub bmcs: Vec<(String, u16)>,
    pub username: String,
    /// The BMCs' password (from `IPMI_PASSWORD`, never from argv).
    pub password: String,
    pub cycles: usize,
    /// `sync_power_state_workers`.
    pub workers: u32,
    pub ipmi: IpmiConfig,
}

/// The JSON `bench ipmi` prints.
#[derive(Debug, Clone, Serialize)]
pub struct IpmiBenchReport {
    pub bmcs: usize,
    pub workers: u32,
    pub min_command_interval_ms: u128,
    pub command_retry_timeout_s: u64,
    /// Each cycle's wall time.
    pub cycle_s: Vec<f64>,
    /// The first cycle records every state (nodes start unknown).
    pub first_cycle_s: f64,
    /// Mean of the later cycles (every node in sync: reads only).
    pub steady_cycle_mean_s: Option<f64>,
    /// BMC reads per second in the steady cycles.
    pub steady_reads_per_s: Option<f64>,
    /// Nodes whose BMC was asked, per cycle.
    pub checked: Vec<usize>,
    /// Failed reads, per cycle.
    pub bmc_failures: Vec<usize>,
    pub ipmitool: String,
}

/// Parse `host:port`, `host:first-last` and comma lists of them.
pub fn parse_bmcs(spec: &str) -> Result<Vec<(String, u16)>, String> {
    let mut out = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (host, ports) = item
            .rsplit_once(':')
            .ok_or_else(|| format!("{item:?}: expected host:port or host:first-last"))?;
        let port = |p: &str| {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{item:?}: {p:?} is not a port"))
        };
        let (first, last) = match ports.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => (port(ports)?, port(ports)?),
        };
        if last < first || host.is_empty() {
            return Err(format!("{item:?}: empty host or range"));
        }
        out.extend((first..=last).map(|p| (host.to_string(), p)));
    }
    if out.is_empty() || out.len() > 10_000 {
        return Err("--bmcs must name 1 to 10000 BMCs".into());
    }
    Ok(out)
}

fn invalid(msg: String) -> TaskError {
    TaskError::Store(StoreError::Invalid(msg))
}

/// Run the benchmark on `store` (an empty database).
pub async fn run_ipmi_bench(
    store: Arc<SqlStore>,
    p: IpmiBenchParams,
) -> Result<IpmiBenchReport, TaskError> {
    let host = "bench-ipmi";
    let group = "bench-ipmi";
    store
        .register_conductor(&ConductorInfo {
            hostname: host.into(),
            conductor_group: group.into(),
            drivers: vec!["ipmi".into()],
        })
        .await?;
    let nodes = p
        .bmcs
        .iter()
        .enumerate()
        .map(|(i, (addr, port))| {
            let info = json!({
                "ipmi_address": addr,
                "ipmi_port": port,
                "ipmi_username": p.username,
                "ipmi_password": p.password,
            });
            NewNode {
                name: Some(format!("ipmi-bench-{i}")),
                driver: "ipmi".into(),
                driver_info: info.as_object().cloned().unwrap_or_default(),
                provision_state: Some(ProvisionState::Available),
                conductor_group: group.into(),
                ..Default::default()
            }
        })
        .collect();
    store.create_nodes(nodes).await?;

    let hw = HardwareConfig {
        enabled_hardware_types: vec!["ipmi".into()],
        enabled_power_interfaces: vec!["ipmitool".into()],
        enabled_management_interfaces: vec!["ipmitool".into()],
        ..HardwareConfig::default()
    };
    let drivers = Drivers::new()
        .with(Arc::new(Ipmi::new(p.ipmi.clone())))
        .with_config(hw)
        .map_err(|problems| invalid(problems.join("; ")))?;
    let tm = TaskManager::new(
        store.clone(),
        ConductorConfig {
            host: host.into(),
            conductor_group: group.into(),
            sync_power_state_workers: p.workers,
            ..Default::default()
        },
        Arc::new(LogSink),
    );
    let sync = PowerSync::default();
    let (mut cycle_s, mut checked, mut failures) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..p.cycles.max(1) {
        if i > 0 {
            tokio::time::sleep(p.ipmi.min_command_interval).await;
        }
        store.heartbeat(host).await?;
        let started = Instant::now();
        let report = sync.sync_once(&tm, &drivers).await?;
        cycle_s.push(started.elapsed().as_secs_f64());
        checked.push(report.checked);
        failures.push(report.bmc_failures);
    }
    let steady: Vec<f64> = cycle_s.iter().skip(1).copied().collect();
    let steady_mean =
        (!steady.is_empty()).then(|| steady.iter().sum::<f64>() / steady.len() as f64);
    Ok(IpmiBenchReport {
        bmcs: p.bmcs.len(),
        workers: p.workers,
        min_command_interval_ms: p.ipmi.min_command_interval.as_millis(),
        command_retry_timeout_s: p.ipmi.command_retry_timeout.as_secs(),
        first_cycle_s: cycle_s.first().copied().unwrap_or_default(),
        steady_reads_per_s: steady_mean
            .filter(|m| *m > 0.0)
            .map(|m| p.bmcs.len() as f64 / m),
        steady_cycle_mean_s: steady_mean,
        cycle_s,
        checked,
        bmc_failures: failures,
        ipmitool: p.ipmi.ipmitool_path.clone(),
    })
}

/// The defaults `bench ipmi` starts from.
pub fn default_ipmi_config(min_command_interval: Duration) -> IpmiConfig {
    IpmiConfig {
        min_command_interval,
        ..IpmiConfig::default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn bmc_lists_and_ranges_are_parsed() {
        assert_eq!(
            parse_bmcs("127.0.0.1:6230-6232, 10.0.0.1:623").unwrap(),
            vec![
                ("127.0.0.1".to_string(), 6230),
                ("127.0.0.1".to_string(), 6231),
                ("127.0.0.1".to_string(), 6232),
                ("10.0.0.1".to_string(), 623),
            ]
        );
        assert!(parse_bmcs("").is_err());
        assert!(parse_bmcs("host").is_err());
        assert!(parse_bmcs("h:10-5").is_err());
        assert!(parse_bmcs("h:0").is_err());
        assert!(parse_bmcs("h:1-60000").is_err());
    }
}

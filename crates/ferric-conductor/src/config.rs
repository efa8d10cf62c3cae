//! Conductor settings, with Ironic's defaults (see `shared/reference/ironic.md` §6).

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Named defaults, one place.
pub mod defaults {
    use std::time::Duration;
    pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
    pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(60);
    pub const NODE_LOCKED_RETRY_ATTEMPTS: u32 = 3;
    pub const NODE_LOCKED_RETRY_INTERVAL: Duration = Duration::from_secs(1);
    pub const MAX_WAITERS_PER_NODE: u32 = 32;
    pub const WORKERS_POOL_SIZE: u32 = 300;
    pub const SQLITE_POLL_INTERVAL: Duration = Duration::from_millis(1);
    pub const RECOVERY_INTERVAL: Duration = Duration::from_secs(10);
    pub const CHECK_PROVISION_STATE_INTERVAL: Duration = Duration::from_secs(60);
    pub const CALLBACK_TIMEOUT: Duration = Duration::from_secs(1800);
    pub const GRACEFUL_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60);
    pub const HASH_PARTITION_EXPONENT: u32 = 5;
    pub const SYNC_POWER_STATE_INTERVAL: Duration = Duration::from_secs(120);
    pub const POWER_STATE_SYNC_MAX_RETRIES: u32 = 3;
    pub const SYNC_POWER_STATE_WORKERS: u32 = 8;
    pub const FAKE_STEP_DELAY: Duration = Duration::from_millis(500);
}

/// How the conductor behaves. Durations are written like `"10s"` or `"250ms"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConductorConfig {
    /// This conductor's name: the lock holder tag. Default: the machine's hostname.
    pub host: String,
    /// Conductor group served (lower-cased).
    pub conductor_group: String,
    /// How often the conductor refreshes its heartbeat.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// A conductor whose heartbeat is older than this is dead (database clock).
    #[serde(with = "humantime_serde")]
    pub heartbeat_timeout: Duration,
    /// `Retry::Default` waits up to attempts × interval for a lock.
    pub node_locked_retry_attempts: u32,
    /// The longest a waiter goes without re-checking (bounds a lost wakeup).
    #[serde(with = "humantime_serde")]
    pub node_locked_retry_interval: Duration,
    /// Beyond this many waiters an acquisition fails at once with NodeLocked.
    pub max_waiters_per_node: u32,
    /// Background work (spawn_after) slots; beyond it NoFreeConductorWorker.
    pub workers_pool_size: u32,
    /// SQLite only, where no wakeup socket can be bound (see
    /// `ferric_store::wake`): how often a waiter polls the file for foreign
    /// commits.
    #[serde(with = "humantime_serde")]
    pub sqlite_poll_interval: Duration,
    /// How often every conductor looks for locks of dead conductors. A dead
    /// holder's locks are recovered within heartbeat_timeout + this.
    #[serde(with = "humantime_serde")]
    pub recovery_interval: Duration,
    /// How often wait states are checked for timeouts and nodes taken over.
    #[serde(with = "humantime_serde")]
    pub check_provision_state_interval: Duration,
    /// `wait call-back` timeout (0 disables).
    #[serde(with = "humantime_serde")]
    pub deploy_callback_timeout: Duration,
    /// `clean wait` timeout (0 disables).
    #[serde(with = "humantime_serde")]
    pub clean_callback_timeout: Duration,
    /// `inspect wait` timeout (0 disables).
    #[serde(with = "humantime_serde")]
    pub inspect_wait_timeout: Duration,
    /// `rescue wait` timeout (0 disables).
    #[serde(with = "humantime_serde")]
    pub rescue_callback_timeout: Duration,
    /// `service wait` timeout (0 disables).
    #[serde(with = "humantime_serde")]
    pub service_callback_timeout: Duration,
    /// On stop, how long running work may take to finish while heartbeats go on.
    #[serde(with = "humantime_serde")]
    pub graceful_shutdown_timeout: Duration,
    /// 2^this ring partitions per conductor.
    pub hash_partition_exponent: u32,
    /// How often owned nodes' power states are compared with their BMCs.
    #[serde(with = "humantime_serde")]
    pub sync_power_state_interval: Duration,
    /// BMC read failures in a row before a node goes into maintenance.
    pub power_state_sync_max_retries: u32,
    /// Nodes a power-sync round works on at once.
    pub sync_power_state_workers: u32,
    /// On a mismatch, set the hardware to the recorded state (true) or record
    /// the hardware's state (false).
    pub force_power_state_during_sync: bool,
    /// Clean nodes automatically on their way to `available` (after
    /// `provide` and after tear-down) unless the node's `automated_clean`
    /// says otherwise (Ironic's `[conductor] automated_clean`).
    pub automated_clean: bool,
    /// The pause before each step of the provision and power flows when the
    /// interface doing the work is `fake` (it stands for hardware work; 0
    /// allowed). A node's `driver_info.fake_step_delay_ms` overrides it.
    #[serde(with = "humantime_serde")]
    pub fake_step_delay: Duration,
}

impl Default for ConductorConfig {
    fn default() -> Self {
        ConductorConfig {
            host: default_host(),
            conductor_group: String::new(),
            heartbeat_interval: defaults::HEARTBEAT_INTERVAL,
            heartbeat_timeout: defaults::HEARTBEAT_TIMEOUT,
            node_locked_retry_attempts: defaults::NODE_LOCKED_RETRY_ATTEMPTS,
            node_locked_retry_interval: defaults::NODE_LOCKED_RETRY_INTERVAL,
            max_waiters_per_node: defaults::MAX_WAITERS_PER_NODE,
            workers_pool_size: defaults::WORKERS_POOL_SIZE,
            sqlite_poll_interval: defaults::SQLITE_POLL_INTERVAL,
            recovery_interval: defaults::RECOVERY_INTERVAL,
            check_provision_state_interval: defaults::CHECK_PROVISION_STATE_INTERVAL,
            deploy_callback_timeout: defaults::CALLBACK_TIMEOUT,
            clean_callback_timeout: defaults::CALLBACK_TIMEOUT,
            inspect_wait_timeout: defaults::CALLBACK_TIMEOUT,
            rescue_callback_timeout: defaults::CALLBACK_TIMEOUT,
            service_callback_timeout: defaults::CALLBACK_TIMEOUT,
            graceful_shutdown_timeout: defaults::GRACEFUL_SHUTDOWN_TIMEOUT,
            hash_partition_exponent: defaults::HASH_PARTITION_EXPONENT,
            sync_power_state_interval: defaults::SYNC_POWER_STATE_INTERVAL,
            power_state_sync_max_retries: defaults::POWER_STATE_SYNC_MAX_RETRIES,
            sync_power_state_workers: defaults::SYNC_POWER_STATE_WORKERS,
            force_power_state_during_sync: true,
            automated_clean: true,
            fake_step_delay: defaults::FAKE_STEP_DELAY,
        }
    }
}

/// The machine's hostname, or `localhost` when it cannot be read.
pub fn default_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

impl ConductorConfig {
    /// Every problem at once, one per entry; empty when the config is usable.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.host.trim().is_empty() || self.host.len() > 255 {
            p.push("conductor.host must be 1 to 255 characters".to_string());
        }
        if ferric_core::node::normalize_conductor_group(&self.conductor_group).is_err() {
            p.push(format!(
                "conductor.conductor_group {:?} may contain only letters, digits and _ - .",
                self.conductor_group
            ));
        }
        if self.heartbeat_interval.is_zero() {
            p.push("conductor.heartbeat_interval must be greater than 0".to_string());
        }
        if self.heartbeat_timeout <= self.heartbeat_interval {
            p.push(format!(
                "conductor.heartbeat_timeout ({:?}) must be greater than heartbeat_interval ({:?})",
                self.heartbeat_timeout, self.heartbeat_interval
            ));
        }
        if self.node_locked_retry_attempts == 0 {
            p.push("conductor.node_locked_retry_attempts must be at least 1".to_string());
        }
        if self.node_locked_retry_interval.is_zero() {
            p.push("conductor.node_locked_retry_interval must be greater than 0".to_string());
        }
        if self.max_waiters_per_node == 0 || self.max_waiters_per_node > 10_000 {
            p.push("conductor.max_waiters_per_node must be between 1 and 10000".to_string());
        }
        if self.workers_pool_size < 3 {
            p.push("conductor.workers_pool_size must be at least 3".to_string());
        }
        if self.sqlite_poll_interval.is_zero() || self.sqlite_poll_interval > Duration::from_secs(1)
        {
            p.push("conductor.sqlite_poll_interval must be between 1µs and 1s".to_string());
        }
        if self.recovery_interval.is_zero() {
            p.push("conductor.recovery_interval must be greater than 0".to_string());
        }
        if self.check_provision_state_interval.is_zero() {
            p.push("conductor.check_provision_state_interval must be greater than 0".to_string());
        }
        if self.sync_power_state_workers == 0 || self.sync_power_state_workers > 256 {
            p.push("conductor.sync_power_state_workers must be between 1 and 256".to_string());
        }
        if self.fake_step_delay > Duration::from_secs(600) {
            p.push("conductor.fake_step_delay must be at most 600s".to_string());
        }
        if self.hash_partition_exponent > 12 {
            p.push("conductor.hash_partition_exponent must be at most 12".to_string());
        }
        p
    }

    /// How long `Retry::Default` waits in total.
    pub fn default_wait(&self) -> Duration {
        self.node_locked_retry_interval * self.node_locked_retry_attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_step_delay_may_be_zero_and_is_bounded() {
        let zero = ConductorConfig {
            fake_step_delay: Duration::ZERO,
            ..Default::default()
        };
        assert!(zero.problems().is_empty(), "{:?}", zero.problems());
        let long = ConductorConfig {
            fake_step_delay: Duration::from_secs(601),
            ..Default::default()
        };
        assert_eq!(
            long.problems(),
            vec!["conductor.fake_step_delay must be at most 600s".to_string()]
        );
    }

    #[test]
    fn defaults_are_ironics_and_valid() {
        let c = ConductorConfig::default();
        assert_eq!(c.node_locked_retry_attempts, 3);
        assert_eq!(c.node_locked_retry_interval, Duration::from_secs(1));
        assert_eq!(c.max_waiters_per_node, 32);
        assert_eq!(c.heartbeat_timeout, Duration::from_secs(60));
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        assert_eq!(c.default_wait(), Duration::from_secs(3));
    }

    #[test]
    fn all_problems_are_reported_together() {
        let c = ConductorConfig {
            heartbeat_interval: Duration::from_secs(60),
            node_locked_retry_attempts: 0,
            max_waiters_per_node: 0,
            ..Default::default()
        };
        assert_eq!(c.problems().len(), 3, "{:?}", c.problems());
    }

    #[test]
    fn unknown_keys_and_bad_durations_are_rejected() {
        let bad: Result<ConductorConfig, _> =
            serde_json::from_str(r#"{"hearbeat_interval": "1s"}"#);
        assert!(bad.unwrap_err().to_string().contains("unknown field"));
        let bad: Result<ConductorConfig, _> =
            serde_json::from_str(r#"{"heartbeat_interval": "soon"}"#);
        assert!(bad.is_err());
        let ok: ConductorConfig =
            serde_json::from_str(r#"{"heartbeat_interval": "250ms"}"#).unwrap();
        assert_eq!(ok.heartbeat_interval, Duration::from_millis(250));
    }
}

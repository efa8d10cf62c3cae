//! Provision-state notifications as data (`baremetal.node.provision_set.<status>`).
//!
//! The status rule is Ironic's: an event of `fail` or `error` is an ERROR; leaving a
//! not-unstable state for an unstable one STARTs work; leaving an unstable state
//! for a not-unstable one ENDs it; anything else is a SUCCESS.

use crate::state::{Event, ProvisionState};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Notification status, the last part of the event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyStatus {
    Start,
    End,
    Success,
    Error,
}

/// Notification priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyLevel {
    Info,
    Error,
}

/// Decide status and level of a provision-state change (Ironic's rule, see module doc).
pub fn provision_status(
    event: Event,
    previous: ProvisionState,
    new: ProvisionState,
) -> (NotifyStatus, NotifyLevel) {
    if event == Event::Fail {
        return (NotifyStatus::Error, NotifyLevel::Error);
    }
    match (previous.is_unstable(), new.is_unstable()) {
        (false, true) => (NotifyStatus::Start, NotifyLevel::Info),
        (true, false) => (NotifyStatus::End, NotifyLevel::Info),
        _ => (NotifyStatus::Success, NotifyLevel::Info),
    }
}

/// One provision-state notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisionNotification {
    pub node_uuid: Uuid,
    pub node_name: Option<String>,
    pub event: Event,
    pub previous_provision_state: ProvisionState,
    pub previous_target_provision_state: Option<ProvisionState>,
    pub provision_state: ProvisionState,
    pub target_provision_state: Option<ProvisionState>,
    pub status: NotifyStatus,
    pub level: NotifyLevel,
    /// The conductor that emitted it.
    pub publisher: String,
}

impl ProvisionNotification {
    /// Ironic's event type string, e.g. `baremetal.node.provision_set.start`.
    pub fn event_type(&self) -> String {
        let status = match self.status {
            NotifyStatus::Start => "start",
            NotifyStatus::End => "end",
            NotifyStatus::Success => "success",
            NotifyStatus::Error => "error",
        };
        format!("baremetal.node.provision_set.{status}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProvisionState::*;

    #[test]
    fn status_rules_match_ironics_catalogue() {
        // test_notify_error_state
        assert_eq!(
            provision_status(Event::Fail, Deploying, DeployFailed),
            (NotifyStatus::Error, NotifyLevel::Error)
        );
        // test_notify_unstable_to_unstable
        assert_eq!(
            provision_status(Event::Resume, DeployWait, Deploying).0,
            NotifyStatus::Success
        );
        // test_notify_stable_to_unstable
        assert_eq!(
            provision_status(Event::Deploy, Available, Deploying).0,
            NotifyStatus::Start
        );
        // test_notify_unstable_to_stable
        assert_eq!(
            provision_status(Event::Done, Deploying, Active).0,
            NotifyStatus::End
        );
        // test_notify_stable_to_stable
        assert_eq!(
            provision_status(Event::Manage, Available, Manageable).0,
            NotifyStatus::Success
        );
        // hold and failure states count as "not unstable"
        assert_eq!(
            provision_status(Event::Hold, Deploying, DeployHold).0,
            NotifyStatus::End
        );
        assert_eq!(
            provision_status(Event::Abort, CleanHold, CleanFailed).0,
            NotifyStatus::Success
        );
    }
}

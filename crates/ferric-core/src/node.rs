//! The node record (SPEC §3) and the values it is built from.

use crate::error::DomainError;
use crate::state::{PowerState, ProvisionState};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use uuid::Uuid;

/// A point in time read from the database clock, in microseconds since the
/// Unix epoch. Liveness decisions compare only values of this type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DbTime(pub i64);

impl DbTime {
    /// Microseconds between `earlier` and `self` (saturating at zero).
    pub fn micros_since(self, earlier: DbTime) -> i64 {
        (self.0 - earlier.0).max(0)
    }
}

/// Who holds a node's exclusive lock and under which fencing token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// The holder's conductor hostname (Ironic's `reservation` column value).
    pub holder: String,
    /// The task inside that conductor (distinguishes two tasks of one conductor).
    pub task_id: Uuid,
    /// The fencing epoch of this grant.
    pub epoch: i64,
    /// What the holder said it is doing.
    pub purpose: String,
    /// When it was granted (database clock).
    pub acquired_at: DbTime,
}

/// One node: the inventory record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub uuid: Uuid,
    pub name: Option<String>,
    pub driver: String,
    pub driver_info: Map<String, Value>,
    pub properties: Map<String, Value>,
    pub extra: Map<String, Value>,
    pub instance_info: Map<String, Value>,
    pub instance_uuid: Option<Uuid>,
    /// Hardware interface names (power_interface, deploy_interface, ...).
    pub interfaces: BTreeMap<String, String>,
    pub provision_state: ProvisionState,
    pub target_provision_state: Option<ProvisionState>,
    pub power_state: Option<PowerState>,
    pub target_power_state: Option<PowerState>,
    pub maintenance: bool,
    pub maintenance_reason: Option<String>,
    pub last_error: Option<String>,
    pub conductor_group: String,
    pub conductor_affinity: Option<String>,
    /// The current exclusive lock, if any.
    pub reservation: Option<Reservation>,
    /// Grants so far; the next grant gets `lock_epoch + 1`. Never decreases.
    pub lock_epoch: i64,
    /// Waiters queued for the lock.
    pub lock_waiters: i64,
    /// Global revision of the last committed change to this node.
    pub revision: i64,
    pub created_at: DbTime,
    pub updated_at: Option<DbTime>,
    pub provision_updated_at: Option<DbTime>,
}

/// What a new node is created from. Everything else starts at its default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NewNode {
    pub uuid: Option<Uuid>,
    pub name: Option<String>,
    pub driver: String,
    pub driver_info: Map<String, Value>,
    pub properties: Map<String, Value>,
    pub extra: Map<String, Value>,
    pub interfaces: BTreeMap<String, String>,
    pub conductor_group: String,
    /// Initial provision state (Ironic: `enroll` from API 1.11, `available` before).
    pub provision_state: Option<ProvisionState>,
}

/// Node names follow Ironic's rule: RFC 3986 unreserved characters, no UUID look-alikes.
pub fn validate_name(name: &str) -> Result<(), DomainError> {
    let bad = |reason: &str| DomainError::InvalidField {
        field: "name",
        reason: reason.to_string(),
    };
    if name.is_empty() || name.len() > 255 {
        return Err(bad("must be 1 to 255 characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~'))
    {
        return Err(bad(
            "may contain only letters, digits and the characters - . _ ~",
        ));
    }
    if Uuid::parse_str(name).is_ok() {
        return Err(bad("must not be a UUID"));
    }
    Ok(())
}

/// Conductor groups: Ironic's `^[a-zA-Z0-9_\-\.]*$`, stored lower-case.
pub fn normalize_conductor_group(group: &str) -> Result<String, DomainError> {
    if group.len() > 255
        || !group
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(DomainError::InvalidField {
            field: "conductor_group",
            reason: "may contain only letters, digits and the characters _ - . (at most 255)"
                .to_string(),
        });
    }
    Ok(group.to_ascii_lowercase())
}

impl NewNode {
    /// Check every field; the first problem is reported.
    pub fn validate(&mut self) -> Result<(), DomainError> {
        if let Some(name) = &self.name {
            validate_name(name)?;
        }
        if self.driver.is_empty() || self.driver.len() > 255 {
            return Err(DomainError::InvalidField {
                field: "driver",
                reason: "must be 1 to 255 characters".to_string(),
            });
        }
        self.conductor_group = normalize_conductor_group(&self.conductor_group)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_ironics_rules() {
        assert!(validate_name("node-1.rack_2~a").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("has space").is_err());
        assert!(validate_name("8a4b5c1e-2f3d-4e5f-9a8b-7c6d5e4f3a2b").is_err());
    }

    #[test]
    fn conductor_groups_are_lower_cased_and_checked() {
        assert_eq!(normalize_conductor_group("Rack-A").unwrap(), "rack-a");
        assert!(normalize_conductor_group("rack a").is_err());
    }
}

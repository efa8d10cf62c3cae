//! Domain errors: rejections that need no I/O to decide.

use crate::state::{Event, ProvisionState};

/// A rejection decided by the domain model alone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The state machine does not accept `event` in `state`.
    #[error("the requested action \"{event}\" can not be performed on a node in provision state \"{state}\"; allowed actions: {}", format_events(allowed))]
    InvalidState {
        state: ProvisionState,
        event: Event,
        allowed: Vec<Event>,
    },
    /// An explicit target state that is not stable.
    #[error("target state \"{target}\" is not a stable state")]
    InvalidTargetState { target: ProvisionState },
    /// A string that is not one of an enumeration's values.
    #[error("unknown {kind} \"{value}\"")]
    UnknownValue { kind: &'static str, value: String },
    /// A field value that breaks a rule of the model.
    #[error("invalid {field}: {reason}")]
    InvalidField { field: &'static str, reason: String },
}

fn format_events(events: &[Event]) -> String {
    if events.is_empty() {
        return "none".to_string();
    }
    events
        .iter()
        .map(|e| e.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

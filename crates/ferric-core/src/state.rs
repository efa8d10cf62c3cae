//! Ironic's provision states and events, with their classification.
//!
//! The string values are the ones Ironic's API uses; they are the wire
//! format and the database format, so never rename them.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// How a state behaves; decides notification status, recovery and timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateClass {
    /// FSM-stable: nothing is in progress (enroll, manageable, available, active, error, rescue).
    Stable,
    /// Work is in progress or awaited (Ironic's `UNSTABLE_STATES`).
    Unstable,
    /// A failure state an operator acts on (`*failed`).
    Failure,
    /// Paused by a hold step (`* hold`).
    Hold,
}

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire (API and database) spelling.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = crate::error::DomainError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(crate::error::DomainError::UnknownValue {
                        kind: stringify!($name),
                        value: other.to_string(),
                    }),
                }
            }
        }
    };
}

string_enum! {
    /// The 30 states of Ironic's provision state machine.
    ProvisionState {
        Enroll => "enroll",
        Verifying => "verifying",
        Manageable => "manageable",
        Available => "available",
        Deploying => "deploying",
        DeployWait => "wait call-back",
        DeployHold => "deploy hold",
        DeployFailed => "deploy failed",
        Active => "active",
        Deleting => "deleting",
        Cleaning => "cleaning",
        CleanWait => "clean wait",
        CleanHold => "clean hold",
        CleanFailed => "clean failed",
        Error => "error",
        Inspecting => "inspecting",
        InspectWait => "inspect wait",
        InspectFailed => "inspect failed",
        Adopting => "adopting",
        AdoptFailed => "adopt failed",
        Rescuing => "rescuing",
        RescueWait => "rescue wait",
        RescueFailed => "rescue failed",
        Rescue => "rescue",
        Unrescuing => "unrescuing",
        UnrescueFailed => "unrescue failed",
        Servicing => "servicing",
        ServiceWait => "service wait",
        ServiceHold => "service hold",
        ServiceFailed => "service failed",
    }
}

string_enum! {
    /// The 18 events of Ironic's provision state machine.
    Event {
        Deploy => "deploy",
        Rebuild => "rebuild",
        Delete => "delete",
        Clean => "clean",
        Manage => "manage",
        Provide => "provide",
        Inspect => "inspect",
        Adopt => "adopt",
        Rescue => "rescue",
        Unrescue => "unrescue",
        Service => "service",
        Wait => "wait",
        Resume => "resume",
        Hold => "hold",
        Unhold => "unhold",
        Done => "done",
        Fail => "fail",
        Abort => "abort",
    }
}

string_enum! {
    /// Power states as Ironic reports them.
    PowerState {
        On => "power on",
        Off => "power off",
        Rebooting => "rebooting",
        SoftRebooting => "soft rebooting",
        SoftPowerOff => "soft power off",
        Error => "error",
    }
}

impl ProvisionState {
    /// Stable / unstable / failure / hold, as in Ironic's `states.py`.
    pub const fn class(self) -> StateClass {
        use ProvisionState::*;
        match self {
            Enroll | Manageable | Available | Active | Error | Rescue => StateClass::Stable,
            Verifying | Deploying | DeployWait | Deleting | Cleaning | CleanWait | Inspecting
            | InspectWait | Adopting | Rescuing | RescueWait | Unrescuing | Servicing
            | ServiceWait => StateClass::Unstable,
            DeployFailed | CleanFailed | InspectFailed | AdoptFailed | RescueFailed
            | UnrescueFailed | ServiceFailed => StateClass::Failure,
            DeployHold | CleanHold | ServiceHold => StateClass::Hold,
        }
    }

    /// FSM-stable: nothing in progress.
    pub const fn is_stable(self) -> bool {
        matches!(self.class(), StateClass::Stable)
    }

    /// In Ironic's `UNSTABLE_STATES`: a conductor is working on, or waiting for, the node.
    /// These are the states stale-lock recovery fails (every one has a `fail` transition).
    pub const fn is_unstable(self) -> bool {
        matches!(self.class(), StateClass::Unstable)
    }

    /// A `*failed` state.
    pub const fn is_failure(self) -> bool {
        matches!(self.class(), StateClass::Failure)
    }

    /// Waits for an external call-back and therefore has a timeout.
    pub const fn is_wait(self) -> bool {
        use ProvisionState::*;
        matches!(
            self,
            DeployWait | CleanWait | InspectWait | RescueWait | ServiceWait
        )
    }

    /// A ramdisk agent may run on the node (Ironic's states that accept an
    /// agent's lookup, plus `rescue`, where the agent stays up). Leaving
    /// them ends the agent's session: its token and URL are wiped.
    pub const fn agent_may_run(self) -> bool {
        use ProvisionState::*;
        matches!(
            self,
            Deploying
                | DeployWait
                | Cleaning
                | CleanWait
                | Inspecting
                | InspectWait
                | Rescuing
                | RescueWait
                | Rescue
                | Servicing
                | ServiceWait
        )
    }

    /// The target a node in this state is heading for when nothing else was asked
    /// (Ironic's per-state default target). Always a stable state.
    pub const fn default_target(self) -> Option<ProvisionState> {
        use ProvisionState::*;
        match self {
            Verifying | Inspecting | InspectWait | InspectFailed => Some(Manageable),
            Deploying | DeployWait | DeployHold | DeployFailed | Adopting | AdoptFailed
            | Unrescuing | UnrescueFailed | Servicing | ServiceWait | ServiceHold
            | ServiceFailed => Some(Active),
            Deleting | Cleaning | CleanWait | CleanHold | CleanFailed => Some(Available),
            Rescuing | RescueWait | RescueFailed => Some(Rescue),
            Enroll | Manageable | Available | Active | Error | Rescue => None,
        }
    }
}

//! Ironic's provision state machine: the transition table and a small machine
//! that tracks the current state and the target state the way Ironic's does.

use crate::error::DomainError;
use crate::state::{Event, ProvisionState};

use Event as E;
use ProvisionState as S;

/// Every allowed transition: (source, event, destination). Exactly Ironic's 93.
pub const TRANSITIONS: &[(ProvisionState, Event, ProvisionState)] = &[
    (S::Active, E::Delete, S::Deleting),
    (S::Active, E::Rebuild, S::Deploying),
    (S::Active, E::Rescue, S::Rescuing),
    (S::Active, E::Service, S::Servicing),
    (S::AdoptFailed, E::Adopt, S::Adopting),
    (S::AdoptFailed, E::Manage, S::Manageable),
    (S::Adopting, E::Done, S::Active),
    (S::Adopting, E::Fail, S::AdoptFailed),
    (S::Available, E::Deploy, S::Deploying),
    (S::Available, E::Manage, S::Manageable),
    (S::CleanFailed, E::Manage, S::Manageable),
    (S::CleanHold, E::Abort, S::CleanFailed),
    (S::CleanHold, E::Unhold, S::CleanWait),
    (S::CleanWait, E::Abort, S::CleanFailed),
    (S::CleanWait, E::Fail, S::CleanFailed),
    (S::CleanWait, E::Hold, S::CleanHold),
    (S::CleanWait, E::Resume, S::Cleaning),
    (S::Cleaning, E::Done, S::Available),
    (S::Cleaning, E::Fail, S::CleanFailed),
    (S::Cleaning, E::Hold, S::CleanHold),
    (S::Cleaning, E::Manage, S::Manageable),
    (S::Cleaning, E::Wait, S::CleanWait),
    (S::Deleting, E::Clean, S::Cleaning),
    (S::Deleting, E::Fail, S::Error),
    (S::DeployFailed, E::Delete, S::Deleting),
    (S::DeployFailed, E::Deploy, S::Deploying),
    (S::DeployFailed, E::Rebuild, S::Deploying),
    (S::DeployHold, E::Abort, S::DeployFailed),
    (S::DeployHold, E::Unhold, S::DeployWait),
    (S::Deploying, E::Done, S::Active),
    (S::Deploying, E::Fail, S::DeployFailed),
    (S::Deploying, E::Hold, S::DeployHold),
    (S::Deploying, E::Wait, S::DeployWait),
    (S::Enroll, E::Manage, S::Verifying),
    (S::Error, E::Delete, S::Deleting),
    (S::Error, E::Rebuild, S::Deploying),
    (S::InspectFailed, E::Inspect, S::Inspecting),
    (S::InspectFailed, E::Manage, S::Manageable),
    (S::InspectWait, E::Abort, S::InspectFailed),
    (S::InspectWait, E::Done, S::Manageable),
    (S::InspectWait, E::Fail, S::InspectFailed),
    (S::InspectWait, E::Resume, S::Inspecting),
    (S::Inspecting, E::Done, S::Manageable),
    (S::Inspecting, E::Fail, S::InspectFailed),
    (S::Inspecting, E::Wait, S::InspectWait),
    (S::Manageable, E::Adopt, S::Adopting),
    (S::Manageable, E::Clean, S::Cleaning),
    (S::Manageable, E::Inspect, S::Inspecting),
    (S::Manageable, E::Provide, S::Cleaning),
    (S::Rescue, E::Delete, S::Deleting),
    (S::Rescue, E::Rescue, S::Rescuing),
    (S::Rescue, E::Unrescue, S::Unrescuing),
    (S::RescueFailed, E::Delete, S::Deleting),
    (S::RescueFailed, E::Rescue, S::Rescuing),
    (S::RescueFailed, E::Unrescue, S::Unrescuing),
    (S::RescueWait, E::Abort, S::RescueFailed),
    (S::RescueWait, E::Delete, S::Deleting),
    (S::RescueWait, E::Fail, S::RescueFailed),
    (S::RescueWait, E::Resume, S::Rescuing),
    (S::Rescuing, E::Done, S::Rescue),
    (S::Rescuing, E::Fail, S::RescueFailed),
    (S::Rescuing, E::Wait, S::RescueWait),
    (S::ServiceFailed, E::Abort, S::Active),
    (S::ServiceFailed, E::Delete, S::Deleting),
    (S::ServiceFailed, E::Hold, S::ServiceHold),
    (S::ServiceFailed, E::Rescue, S::Rescuing),
    (S::ServiceFailed, E::Service, S::Servicing),
    (S::ServiceFailed, E::Wait, S::ServiceWait),
    (S::ServiceHold, E::Abort, S::ServiceFailed),
    (S::ServiceHold, E::Fail, S::ServiceFailed),
    (S::ServiceHold, E::Service, S::Servicing),
    (S::ServiceHold, E::Unhold, S::ServiceWait),
    (S::ServiceWait, E::Abort, S::ServiceFailed),
    (S::ServiceWait, E::Delete, S::Deleting),
    (S::ServiceWait, E::Fail, S::ServiceFailed),
    (S::ServiceWait, E::Hold, S::ServiceHold),
    (S::ServiceWait, E::Resume, S::Servicing),
    (S::Servicing, E::Done, S::Active),
    (S::Servicing, E::Fail, S::ServiceFailed),
    (S::Servicing, E::Hold, S::ServiceHold),
    (S::Servicing, E::Wait, S::ServiceWait),
    (S::UnrescueFailed, E::Delete, S::Deleting),
    (S::UnrescueFailed, E::Rescue, S::Rescuing),
    (S::UnrescueFailed, E::Unrescue, S::Unrescuing),
    (S::Unrescuing, E::Done, S::Active),
    (S::Unrescuing, E::Fail, S::UnrescueFailed),
    (S::Verifying, E::Done, S::Manageable),
    (S::Verifying, E::Fail, S::Enroll),
    (S::DeployWait, E::Abort, S::DeployFailed),
    (S::DeployWait, E::Delete, S::Deleting),
    (S::DeployWait, E::Fail, S::DeployFailed),
    (S::DeployWait, E::Hold, S::DeployHold),
    (S::DeployWait, E::Resume, S::Deploying),
];

/// Where `event` leads from `state`, or `None` when Ironic's machine rejects it.
pub fn next_state(state: ProvisionState, event: Event) -> Option<ProvisionState> {
    TRANSITIONS
        .iter()
        .find(|(from, ev, _)| *from == state && *ev == event)
        .map(|(_, _, to)| *to)
}

/// The events accepted in `state`, in table order (used in error messages).
pub fn allowed_events(state: ProvisionState) -> Vec<Event> {
    TRANSITIONS
        .iter()
        .filter(|(from, _, _)| *from == state)
        .map(|(_, ev, _)| *ev)
        .collect()
}

/// A copy of the machine positioned at a node's (provision_state, target).
///
/// Target rules (Ironic's `fsm.py`): after a transition the target is cleared
/// when reached, then replaced by the new state's default target when it has
/// one; an explicit target overrides both and must be a stable state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Machine {
    current: ProvisionState,
    target: Option<ProvisionState>,
}

impl Machine {
    /// A machine at `current` heading for `target`.
    pub fn new(current: ProvisionState, target: Option<ProvisionState>) -> Self {
        Machine { current, target }
    }

    /// The current state.
    pub fn current(&self) -> ProvisionState {
        self.current
    }

    /// The target state, if any.
    pub fn target(&self) -> Option<ProvisionState> {
        self.target
    }

    /// Whether `event` is accepted in the current state.
    pub fn is_actionable(&self, event: Event) -> bool {
        next_state(self.current, event).is_some()
    }

    /// Apply `event`; on rejection the machine is unchanged.
    pub fn process_event(
        &mut self,
        event: Event,
        explicit_target: Option<ProvisionState>,
    ) -> Result<ProvisionState, DomainError> {
        let next = next_state(self.current, event).ok_or_else(|| DomainError::InvalidState {
            state: self.current,
            event,
            allowed: allowed_events(self.current),
        })?;
        if let Some(t) = explicit_target {
            if !t.is_stable() {
                return Err(DomainError::InvalidTargetState { target: t });
            }
        }
        let mut target = self.target;
        if target == Some(next) {
            target = None;
        }
        if let Some(default) = next.default_target() {
            target = Some(default);
        }
        if explicit_target.is_some() {
            target = explicit_target;
        }
        self.current = next;
        self.target = target;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn table_has_ironics_counts() {
        assert_eq!(ProvisionState::ALL.len(), 30);
        assert_eq!(Event::ALL.len(), 18);
        assert_eq!(TRANSITIONS.len(), 93);
        let unique: HashSet<_> = TRANSITIONS.iter().map(|(f, e, _)| (*f, *e)).collect();
        assert_eq!(unique.len(), 93, "a (state, event) pair is listed twice");
    }

    /// Every one of the 30 × 18 = 540 pairs: listed ones are accepted and land
    /// where the table says, all others are rejected with InvalidState and
    /// leave the machine untouched.
    #[test]
    fn every_state_event_pair_is_accepted_or_rejected_exactly_as_listed() {
        let mut accepted = 0;
        let mut rejected = 0;
        for &state in ProvisionState::ALL {
            for &event in Event::ALL {
                let listed = TRANSITIONS
                    .iter()
                    .find(|(f, e, _)| *f == state && *e == event)
                    .map(|(_, _, t)| *t);
                let mut m = Machine::new(state, None);
                match (listed, m.process_event(event, None)) {
                    (Some(to), Ok(got)) => {
                        assert_eq!(got, to, "{state} --{event}-->");
                        assert_eq!(m.current(), to);
                        accepted += 1;
                    }
                    (
                        None,
                        Err(DomainError::InvalidState {
                            state: s,
                            event: e,
                            allowed,
                        }),
                    ) => {
                        assert_eq!((s, e), (state, event));
                        assert!(!allowed.contains(&event));
                        assert_eq!(
                            m,
                            Machine::new(state, None),
                            "rejected event changed the machine"
                        );
                        rejected += 1;
                    }
                    (listed, got) => panic!("{state} --{event}--> listed {listed:?}, got {got:?}"),
                }
            }
        }
        assert_eq!(accepted, 93);
        assert_eq!(rejected, 30 * 18 - 93);
    }

    #[test]
    fn classification_matches_ironic() {
        use ProvisionState::*;
        let stable: Vec<_> = ProvisionState::ALL
            .iter()
            .filter(|s| s.is_stable())
            .copied()
            .collect();
        assert_eq!(
            stable,
            vec![Enroll, Manageable, Available, Active, Error, Rescue]
        );
        let unstable = ProvisionState::ALL
            .iter()
            .filter(|s| s.is_unstable())
            .count();
        assert_eq!(unstable, 14);
        let failed: Vec<_> = ProvisionState::ALL
            .iter()
            .filter(|s| s.is_failure())
            .collect();
        assert_eq!(failed.len(), 7);
        assert!(failed.iter().all(|s| s.as_str().ends_with("failed")));
        let waits: Vec<_> = ProvisionState::ALL
            .iter()
            .filter(|s| s.is_wait())
            .copied()
            .collect();
        assert_eq!(
            waits,
            vec![DeployWait, CleanWait, InspectWait, RescueWait, ServiceWait]
        );
        for s in ProvisionState::ALL {
            if let Some(t) = s.default_target() {
                assert!(t.is_stable(), "default target of {s} must be stable");
            }
            // Every unstable state can be failed, which is what recovery relies on.
            if s.is_unstable() {
                assert!(
                    next_state(*s, Event::Fail).is_some(),
                    "{s} has no fail transition"
                );
            }
        }
    }

    #[test]
    fn target_follows_ironic_rules() {
        use ProvisionState::*;
        // available --deploy--> deploying: default target active.
        let mut m = Machine::new(Available, None);
        m.process_event(Event::Deploy, None).unwrap();
        assert_eq!((m.current(), m.target()), (Deploying, Some(Active)));
        m.process_event(Event::Wait, None).unwrap();
        assert_eq!(m.target(), Some(Active));
        m.process_event(Event::Resume, None).unwrap();
        m.process_event(Event::Done, None).unwrap();
        assert_eq!(
            (m.current(), m.target()),
            (Active, None),
            "reached target is cleared"
        );

        // manual cleaning keeps an explicit manageable target through the wait.
        let mut m = Machine::new(Manageable, None);
        m.process_event(Event::Clean, Some(Manageable)).unwrap();
        assert_eq!(m.target(), Some(Manageable));
        // cleaning's default target (available) replaces it unless given again,
        // which is why Ironic's resume_cleaning passes it explicitly.
        m.process_event(Event::Wait, Some(Manageable)).unwrap();
        assert_eq!(m.target(), Some(Manageable));
        m.process_event(Event::Resume, Some(Manageable)).unwrap();
        assert_eq!((m.current(), m.target()), (Cleaning, Some(Manageable)));
        m.process_event(Event::Manage, None).unwrap();
        assert_eq!((m.current(), m.target()), (Manageable, None));

        // enroll --manage--> verifying targets manageable; a stable state with no
        // default keeps an unreached target.
        let mut m = Machine::new(Enroll, None);
        m.process_event(Event::Manage, None).unwrap();
        assert_eq!(m.target(), Some(Manageable));
        m.process_event(Event::Fail, None).unwrap();
        assert_eq!((m.current(), m.target()), (Enroll, Some(Manageable)));
    }

    #[test]
    fn explicit_target_must_be_stable() {
        let mut m = Machine::new(ProvisionState::Manageable, None);
        let err = m
            .process_event(Event::Clean, Some(ProvisionState::Cleaning))
            .unwrap_err();
        assert!(matches!(err, DomainError::InvalidTargetState { .. }));
        assert_eq!(m.current(), ProvisionState::Manageable);
    }

    #[test]
    fn states_round_trip_through_their_wire_names() {
        for s in ProvisionState::ALL {
            assert_eq!(s.as_str().parse::<ProvisionState>().unwrap(), *s);
            assert_eq!(
                serde_json::to_string(s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        for e in Event::ALL {
            assert_eq!(e.as_str().parse::<Event>().unwrap(), *e);
        }
        assert!("deployed".parse::<ProvisionState>().is_err());
    }
}

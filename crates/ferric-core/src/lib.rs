//! ferric-core: the domain of ferric. Nodes, Ironic's provision state machine,
//! provision notifications as data, and domain errors. No I/O, no async.
//!
//! Boundary: nothing here knows about databases, HTTP or time sources; the
//! store and the conductor build on these types.

pub mod error;
pub mod fsm;
pub mod interface;
pub mod node;
pub mod notify;
pub mod state;
pub mod traits;

pub use error::DomainError;
pub use fsm::Machine;
pub use interface::InterfaceKind;
pub use node::{DbTime, NewNode, Node, NodeAttrs, Reservation};
pub use state::{Event, PowerState, ProvisionState, StateClass};
pub mod mask;

//! ferric-conductor: the TaskManager (SPEC §5), lock waiting and wakeups,
//! notifications.
//!
//! Boundary: talks to persistence only through `ferric_store::Store`; knows
//! nothing of HTTP.

pub mod allocation;
pub mod cluster;
pub mod config;
pub mod configdrive;
pub mod drivers;
pub mod error;
pub mod liveness;
pub mod management;
pub mod metrics;
pub mod netboot;
pub mod notify;
pub mod power;
pub mod provision;
pub mod raid;
pub mod ring;
pub mod task;
pub mod wait;

pub use config::ConductorConfig;
pub use error::TaskError;
pub use notify::{LogSink, MemorySink, NotificationSink};
pub use task::{
    Acquire, BoxFuture, EventOpts, ExclusiveTask, RemoteWake, Retry, SharedTask, TaskManager,
    WorkError,
};

//! The `ferric` binary's library: configuration, logging, the CLI and the
//! running service. `main.rs` only parses the command line, runs it on a
//! tokio runtime and turns the outcome into an exit code; everything else is
//! here so that integration tests (`tests/it`) can call it in process.
//!
//! Code map:
//! - [`config`]: the layered `Config` tree, validation, secret masking;
//! - [`telemetry`]: the tracing subscriber;
//! - [`serve`]: `ferric serve` — store, registration, heartbeat, shutdown;
//! - [`cli`]: clap definitions and the admin commands;
//! - [`client`]: `ferric node ...`, client commands of the REST API.

pub mod bench;
pub mod cli;
pub mod client;
pub mod config;
pub mod fdlimit;
pub mod lock;
pub mod notifications;
pub mod serve;
pub mod telemetry;

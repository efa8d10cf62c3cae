//! Integration tests of the `ferric` binary crate, in one test binary:
//! configuration layering and validation (in process), the service run in
//! process, and the real built binary driven as an operator would.
//!
//! Test helpers panic on failure, like the tests themselves.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin_db;
mod chaos;
mod cli;
mod client;
mod config;
mod config_props;
mod connections;
mod existing_db;
mod frozen;
mod helpers;
mod idle_lock;
mod lock;
mod lock_api;
mod observability;
mod outage;
mod serve;
mod soak;

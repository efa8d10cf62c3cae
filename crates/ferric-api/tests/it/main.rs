//! ferric-api's integration tests, one binary: the API served on
//! 127.0.0.1:0 over a real store ([`common`] starts it), driven over HTTP.
//! Filter by module: `cargo test -p ferric-api --test it redfish::`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent;
mod agent_deploy;
mod allocations;
mod api;
mod chassis;
mod common;
mod deploy_templates;
mod inspection_rules;
mod ipmi;
mod lookup;
mod node_data;
mod node_fields;
mod node_states;
mod portgroups;
mod ports;
mod props;
mod reconcile;
mod redfish;
mod runbooks;
mod scripted_agent;
mod unavailable;
mod volume;

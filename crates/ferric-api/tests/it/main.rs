//! ferric-api's integration tests, one binary: the API served on
//! 127.0.0.1:0 over a real store ([`common`] starts it), driven over HTTP.
//! Filter by module: `cargo test -p ferric-api --test it redfish::`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

/// `both_engines!(test_a, test_b)`: each `async fn test_x(engine: Engine)`
/// of the module runs as `sqlite::test_x` and `postgres::test_x` (the
/// PostgreSQL one skips only when FERRIC_TEST_PG_URL is unset).
macro_rules! both_engines {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(ferric_store::testing::Engine::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(ferric_store::testing::Engine::Postgres).await;
                }
            )*
        }
    };
}

mod agent;
mod agent_deploy;
mod allocations;
mod api;
mod chassis;
mod common;
mod deploy_templates;
mod hardening;
mod inspection_rules;
mod ipmi;
mod lookup;
mod netboot;
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

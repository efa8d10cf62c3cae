//! The shared store suite, run on SQLite (a temp file) and PostgreSQL (a fresh
//! schema; skipped only when FERRIC_TEST_PG_URL is unset).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferric_store::testing::{Engine, TestStore};
use ferric_store::{conformance, for_each_conformance_test, Store};
use std::sync::Arc;

macro_rules! instantiate {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let t = TestStore::open(Engine::Sqlite).await.expect("sqlite always runs");
                    conformance::$name(t.store.clone() as Arc<dyn Store>).await;
                    t.cleanup().await;
                }
            )*
        }
        mod postgres {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let Some(t) = TestStore::open(Engine::Postgres).await else { return };
                    conformance::$name(t.store.clone() as Arc<dyn Store>).await;
                    t.cleanup().await;
                }
            )*
        }
    };
}

for_each_conformance_test!(instantiate);

//! Test harness shared by every crate's tests: a fresh SQLite file or a fresh
//! PostgreSQL schema per test.
//!
//! PostgreSQL tests read `FERRIC_TEST_PG_URL`. When it is unset they are
//! skipped ([`skip`]: a visible `SKIPPED` line, or a failure where CI
//! requires the variable); when it is set but unreachable they fail.

use crate::{ConductorInfo, SqlStore, Store, StoreOptions};
use ferric_core::{NewNode, ProvisionState};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// The engines the shared suite runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// The environment variable naming the PostgreSQL server for tests.
pub const PG_URL_VAR: &str = "FERRIC_TEST_PG_URL";

/// Variables (comma-separated) that must be set: a test that would skip
/// for lack of one of them fails instead. CI sets it (`.ci/run`), so every
/// test it can run, it runs for real.
pub const REQUIRE_VAR: &str = "FERRIC_TEST_REQUIRE";

/// A test (or part of one) cannot run because `var` is not set. The test
/// harness would report it `ok`, so this writes `SKIPPED <test>: ...`
/// straight to stderr (not the harness's captured output: it shows in a
/// plain `cargo test` run; `grep -c SKIPPED` counts them). When `var` is
/// listed in `FERRIC_TEST_REQUIRE` it panics instead.
pub fn skip(var: &str, what: &str) {
    skip_under(&std::env::var(REQUIRE_VAR).unwrap_or_default(), var, what);
}

/// [`skip`] with the `FERRIC_TEST_REQUIRE` value given.
fn skip_under(required: &str, var: &str, what: &str) {
    use std::io::Write as _;
    if is_required(required, var) {
        panic!("{var} is not set, but {REQUIRE_VAR} requires it: {what}");
    }
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: {var} is not set; {what}"
    );
}

/// Whether `var` is named in a `FERRIC_TEST_REQUIRE` value (comma-separated,
/// blanks around names ignored; exact names only).
fn is_required(list: &str, var: &str) -> bool {
    list.split(',').any(|v| v.trim() == var)
}

/// Heartbeat timeout used by the shared suite.
pub const TEST_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(3);

/// A store on a fresh database, removed by [`TestStore::cleanup`].
pub struct TestStore {
    pub store: Arc<SqlStore>,
    pub engine: Engine,
    pub url: String,
    pub schema: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestStore {
    /// Open a fresh store; `None` when the engine is PostgreSQL and no URL is configured.
    pub async fn open(engine: Engine) -> Option<TestStore> {
        Self::open_with(engine, |_| {}).await
    }

    /// Like [`TestStore::open`], adjusting the options first.
    pub async fn open_with(
        engine: Engine,
        adjust: impl FnOnce(&mut StoreOptions),
    ) -> Option<TestStore> {
        match engine {
            Engine::Sqlite => {
                let dir = tempfile::tempdir().ok()?;
                let url = format!("sqlite://{}", dir.path().join("ferric.db").display());
                let mut opts = StoreOptions::new(url.clone());
                opts.heartbeat_timeout = TEST_HEARTBEAT_TIMEOUT;
                adjust(&mut opts);
                let store = match SqlStore::open(opts).await {
                    Ok(s) => s,
                    Err(e) => panic!("cannot open SQLite test store at {url}: {e}"),
                };
                Some(TestStore {
                    store: Arc::new(store),
                    engine,
                    url,
                    schema: None,
                    _dir: Some(dir),
                })
            }
            Engine::Postgres => {
                let Ok(url) = std::env::var(PG_URL_VAR) else {
                    skip(PG_URL_VAR, "the PostgreSQL part of this test did not run");
                    return None;
                };
                let schema = format!("ferric_t_{}", uuid::Uuid::new_v4().simple());
                let mut opts = StoreOptions::new(url.clone());
                opts.heartbeat_timeout = TEST_HEARTBEAT_TIMEOUT;
                opts.pg_schema = Some(schema.clone());
                adjust(&mut opts);
                let store = match SqlStore::open(opts).await {
                    Ok(s) => s,
                    Err(e) => panic!("{PG_URL_VAR}={url} is set but PostgreSQL is not usable: {e}"),
                };
                Some(TestStore {
                    store: Arc::new(store),
                    engine,
                    url,
                    schema: Some(schema),
                    _dir: None,
                })
            }
        }
    }

    /// Another store on the same database with different options (e.g. a
    /// second "process", or a shorter heartbeat timeout).
    pub async fn reopen(&self, adjust: impl FnOnce(&mut StoreOptions)) -> Arc<SqlStore> {
        let mut opts = self.store.options().clone();
        adjust(&mut opts);
        match SqlStore::open(opts).await {
            Ok(s) => Arc::new(s),
            Err(e) => panic!("cannot reopen test store: {e}"),
        }
    }

    /// Register a live conductor named `hostname`.
    pub async fn conductor(&self, hostname: &str) {
        register(&*self.store, hostname).await;
    }

    /// Drop the PostgreSQL schema (SQLite files go with the temp dir). The
    /// test's own connection drops it, so nothing touches another schema.
    pub async fn cleanup(self) {
        if let Some(schema) = &self.schema {
            if let Err(e) = self.store.drop_schema(schema).await {
                panic!("cannot drop test schema {schema}: {e}");
            }
        }
        self.store.close().await;
    }
}

/// Register a live conductor on any store.
pub async fn register(store: &dyn Store, hostname: &str) {
    let info = ConductorInfo {
        hostname: hostname.to_string(),
        conductor_group: String::new(),
        drivers: vec!["fake-hardware".to_string()],
    };
    if let Err(e) = store.register_conductor(&info).await {
        panic!("register conductor {hostname}: {e}");
    }
}

/// Enrol a `fake-hardware` node named `name` in `state` on any store.
pub async fn fake_node(store: &dyn Store, name: &str, state: ProvisionState) -> Uuid {
    let new = NewNode {
        name: Some(name.into()),
        driver: "fake-hardware".into(),
        provision_state: Some(state),
        ..Default::default()
    };
    match store.create_node(new).await {
        Ok(node) => node.uuid,
        Err(e) => panic!("create node {name}: {e}"),
    }
}

/// Test hook (issue 17, item 1): names a trigger file. When it exists at the
/// moment a write takes the one-row revision counter, that write removes it,
/// logs `test hook: holding the revision counter` and waits
/// [`HOLD_REVISION_FOR`] inside its transaction, counter held, so that a test
/// can freeze the process (SIGSTOP) exactly there. Only in builds with the
/// `testing` feature, which production builds never enable (`.ci/run`
/// checks the binary's dependency tree).
pub const HOLD_REVISION_TRIGGER_VAR: &str = "FERRIC_TEST_HOLD_REVISION_TRIGGER";

/// How long [`hold_revision_if_triggered`] holds.
pub const HOLD_REVISION_FOR: Duration = Duration::from_secs(10);

/// See [`HOLD_REVISION_TRIGGER_VAR`].
pub async fn hold_revision_if_triggered() {
    let Some(path) = std::env::var_os(HOLD_REVISION_TRIGGER_VAR) else {
        return;
    };
    if std::fs::remove_file(&path).is_ok() {
        tracing::warn!("test hook: holding the revision counter");
        tokio::time::sleep(HOLD_REVISION_FOR).await;
    }
}

#[cfg(test)]
mod require_tests {
    use super::*;

    #[test]
    fn a_listed_variable_is_required_and_only_by_its_exact_name() {
        let list = "FERRIC_TEST_PG_URL, FERRIC_TEST_AMQP_URL";
        assert!(is_required(list, PG_URL_VAR));
        assert!(is_required(list, "FERRIC_TEST_AMQP_URL"));
        assert!(!is_required(list, "FERRIC_TEST_REDFISH_URL"));
        assert!(!is_required(list, "FERRIC_TEST_PG"));
        assert!(!is_required("", PG_URL_VAR));
    }

    #[test]
    #[should_panic(expected = "FERRIC_TEST_X is not set, but FERRIC_TEST_REQUIRE requires it")]
    fn a_required_skip_fails_the_test() {
        skip_under("FERRIC_TEST_X", "FERRIC_TEST_X", "needs X");
    }

    #[test]
    fn an_unrequired_skip_passes() {
        skip_under("FERRIC_TEST_Y", "FERRIC_TEST_X", "needs X");
    }
}

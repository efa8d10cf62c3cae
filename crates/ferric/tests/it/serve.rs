//! The service run in process: registration, heartbeat, graceful stop, and a
//! heartbeat that survives database errors.

use crate::helpers::{init_tracing, url_for, wait_until_async};
use ferric::config::Config;
use ferric::serve::{self, Heartbeat};
use ferric_store::testing::{Engine, TestStore};
use ferric_store::{ConductorInfo, ConductorRow, Store};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

async fn conductor(store: &dyn Store, host: &str) -> Option<ConductorRow> {
    store
        .list_conductors()
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.hostname == host)
}

fn config_for(ts: &TestStore, host: &str) -> Config {
    let mut config = Config::default();
    config.database.url = url_for(ts);
    config.database.max_connections = 2;
    config.conductor.host = host.to_string();
    config.conductor.heartbeat_interval = Duration::from_millis(50);
    config.conductor.heartbeat_timeout = Duration::from_secs(3);
    config.api.port = 0;
    config
}

async fn registers_beats_and_unregisters(engine: Engine) {
    init_tracing();
    let Some(ts) = TestStore::open(engine).await else {
        return;
    };
    let host = format!("serve-{}", uuid::Uuid::new_v4().simple());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = tokio::spawn(serve::run(config_for(&ts, &host), async {
        let _ = stopped.await;
    }));

    let store = ts.store.clone();
    wait_until_async("the conductor to register", || async {
        conductor(&*store, &host).await.is_some_and(|c| c.alive)
    })
    .await;
    let first = conductor(&*store, &host).await.unwrap();
    assert_eq!(
        first.drivers,
        vec!["fake-hardware".to_string(), "redfish".to_string()]
    );
    wait_until_async("a heartbeat after registration", || async {
        conductor(&*store, &host)
            .await
            .is_some_and(|c| c.heartbeat_at > first.heartbeat_at)
    })
    .await;

    stop.send(()).unwrap();
    service.await.unwrap().unwrap();
    let last = conductor(&*store, &host).await.unwrap();
    assert!(!last.online && !last.alive, "{last:?}");
    ts.cleanup().await;
}

#[tokio::test]
async fn serve_registers_beats_and_unregisters_on_shutdown_sqlite() {
    registers_beats_and_unregisters(Engine::Sqlite).await;
}

#[tokio::test]
async fn serve_registers_beats_and_unregisters_on_shutdown_postgres() {
    registers_beats_and_unregisters(Engine::Postgres).await;
}

#[tokio::test]
async fn serve_refuses_an_invalid_config_before_touching_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("never.db");
    let mut config = Config::default();
    config.database.url = format!("sqlite://{}", db.display());
    config.conductor.node_locked_retry_attempts = 0;
    let err = serve::run(config, std::future::pending())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("conductor.node_locked_retry_attempts"),
        "{err:#}"
    );
    assert_eq!(ferric::cli::exit_code(&err), ferric::cli::EXIT_CONFIG);
    assert!(
        !db.exists(),
        "an invalid config must not create the database"
    );
}

fn info(host: &str) -> ConductorInfo {
    ConductorInfo {
        hostname: host.to_string(),
        conductor_group: String::new(),
        drivers: vec!["fake-hardware".to_string()],
    }
}

/// Ironic's heartbeat thread once died on a database error, leaving a
/// healthy conductor looking dead. Here the table vanishes under the worker
/// and comes back; the worker must log, keep going, and beat again.
#[tokio::test]
async fn heartbeat_keeps_going_after_database_errors() {
    init_tracing();
    let ts = TestStore::open(Engine::Sqlite).await.unwrap();
    let store: Arc<dyn Store> = ts.store.clone();
    store.register_conductor(&info("hb")).await.unwrap();
    let heartbeat = Heartbeat::new(
        store.clone(),
        info("hb"),
        Duration::from_millis(20),
        Duration::from_secs(3),
    );
    let stats = heartbeat.stats();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(heartbeat.run(async {
        let _ = stopped.await;
    }));

    wait_until_async("a first beat", || async {
        stats.beats.load(Ordering::Relaxed) >= 1
    })
    .await;

    let raw = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&ts.url)
        .await
        .unwrap();
    sqlx::query("ALTER TABLE conductors RENAME TO conductors_away")
        .execute(&raw)
        .await
        .unwrap();
    wait_until_async("beats to fail", || async {
        stats.failures.load(Ordering::Relaxed) >= 3
    })
    .await;
    assert!(
        !worker.is_finished(),
        "the heartbeat worker died on a database error"
    );

    sqlx::query("ALTER TABLE conductors_away RENAME TO conductors")
        .execute(&raw)
        .await
        .unwrap();
    let beats = stats.beats.load(Ordering::Relaxed);
    wait_until_async("beats to resume", || async {
        stats.beats.load(Ordering::Relaxed) > beats + 1
    })
    .await;

    stop.send(()).unwrap();
    worker.await.unwrap();
    raw.close().await;
    ts.cleanup().await;
}

#[tokio::test]
async fn heartbeat_registers_again_when_the_row_is_gone() {
    let ts = TestStore::open(Engine::Sqlite).await.unwrap();
    let store: Arc<dyn Store> = ts.store.clone();
    let heartbeat = Heartbeat::new(
        store.clone(),
        info("gone"),
        Duration::from_secs(1),
        Duration::from_secs(3),
    );
    // Never registered (or deleted by hand): the beat registers it.
    heartbeat.run_once().await.unwrap();
    let row = conductor(&*store, "gone").await.unwrap();
    assert!(row.online && row.alive, "{row:?}");
    ts.cleanup().await;
}

//! A database that is not accepting work answers 503 with Retry-After and
//! Ironic's error body, and nothing is written (issue 17, item 6; before,
//! such failures were a 500 without Retry-After). The real case: another
//! process holds SQLite's write lock past the busy timeout.

use crate::common::Options;
use ferric_store::testing::{Engine, TestStore};
use reqwest::StatusCode;
use serde_json::json;
use sqlx::Connection;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_database_answers_503_with_retry_after_and_writes_nothing() {
    let store = TestStore::open_with(Engine::Sqlite, |o| {
        o.sqlite_busy_timeout = Duration::from_millis(200);
    })
    .await
    .expect("SQLite always runs");
    store.conductor("cond-a").await;
    let api = Options::new().serve(store.store.clone()).await;
    let (s, b) = api
        .json(
            reqwest::Method::POST,
            "/v1/nodes",
            json!({"driver": "fake-hardware", "name": "before"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");

    // Another process takes the database's write lock and keeps it.
    let mut other = sqlx::SqliteConnection::connect(&store.url).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut other)
        .await
        .unwrap();

    let r = api
        .send(
            reqwest::Method::POST,
            "/v1/nodes",
            json!({"driver": "fake-hardware", "name": "during"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert!(r.header("retry-after").is_some(), "Retry-After is set");
    assert!(
        r.fault().contains("database is unavailable"),
        "{}",
        r.fault()
    );

    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    other.close().await.unwrap();
    let r = api.get("/v1/nodes/during").await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "nothing was written: {}",
        r.body
    );
    let (s, b) = api
        .json(
            reqwest::Method::POST,
            "/v1/nodes",
            json!({"driver": "fake-hardware", "name": "after"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "the database is back: {b}");
    api.tm.shutdown();
    store.cleanup().await;
}

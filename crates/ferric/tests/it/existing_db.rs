//! The admin commands (`ferric lock list|audit|release`, `ferric conductor
//! list`) open an existing, migrated database and never create or migrate
//! one: a missing SQLite file, an empty one, or a schema without every
//! migration is one line of error and exit 1, and the database is left as
//! it was.

use crate::helpers::{ferric, output, sqlite_url, success};
use ferric_store::testing::PG_URL_VAR;
use std::path::Path;

/// Every admin command, on the database `url`.
const COMMANDS: &[&[&str]] = &[
    &["lock", "list"],
    &["lock", "audit"],
    &["lock", "release", "some-node"],
    &["conductor", "list"],
];

/// Run every admin command on `url`: each fails with exit 1 and one line
/// saying `what` about the database and what to run first.
fn every_command_refuses(url: &str, shown_url: &str, what: &str) {
    for args in COMMANDS {
        let out = output(ferric().args(*args).env("FERRIC_DATABASE__URL", url));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(
            err.trim_end(),
            format!(
                "error: database {shown_url} {what}; run `ferric serve` or `ferric db migrate` first"
            ),
            "{args:?}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

/// The files in `dir`, by name.
fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_missing_sqlite_file_is_an_error_and_is_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    every_command_refuses(&url, &url, "does not exist");
    assert!(files(dir.path()).is_empty(), "{:?}", files(dir.path()));
}

#[test]
fn an_empty_sqlite_file_is_unmigrated_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    std::fs::write(dir.path().join("ferric.db"), b"").unwrap();
    every_command_refuses(&url, &url, "is not migrated (no migrations applied)");
    assert_eq!(files(dir.path()), ["ferric.db"]);
    let len = std::fs::metadata(dir.path().join("ferric.db"))
        .unwrap()
        .len();
    assert_eq!(len, 0, "the empty file was written to");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_without_every_migration_is_an_error_and_is_not_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    success(ferric().args(["db", "migrate", "--database-url", &url]));
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("DELETE FROM _sqlx_migrations")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let u = url.clone();
    tokio::task::spawn_blocking(move || {
        let known = std::fs::read_dir(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../ferric-store/migrations/sqlite"
        ))
        .unwrap()
        .count();
        let want = format!("is not fully migrated (0 of {known} migrations applied)");
        every_command_refuses(&u, &u, &want)
    })
    .await
    .unwrap();
    // Still not migrated: nothing ran the migrations behind our back.
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    assert_eq!(n, 0);
}

#[test]
fn a_migrated_sqlite_database_works_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    success(ferric().args(["db", "migrate", "--database-url", &url]));
    for args in [
        &["lock", "list"][..],
        &["lock", "audit"],
        &["conductor", "list"],
    ] {
        let out = success(ferric().args(args).env("FERRIC_DATABASE__URL", &url));
        assert!(
            out.lines().count() == 1,
            "{args:?}: a header and no rows: {out}"
        );
    }
    // Release needs writes, and still opens the existing database.
    let out = output(
        ferric()
            .args(["lock", "release", "nope"])
            .env("FERRIC_DATABASE__URL", &url),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("node nope could not be found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmigrated_postgres_schema_is_an_error_and_is_not_migrated() {
    let Ok(base) = std::env::var(PG_URL_VAR) else {
        return; // PostgreSQL not configured
    };
    let schema = format!("ferric_it_{}", uuid::Uuid::new_v4().simple());
    let pool = sqlx::PgPool::connect(&base).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
        .execute(&pool)
        .await
        .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
    let u = url.clone();
    tokio::task::spawn_blocking(move || {
        every_command_refuses(&u, &u, "is not migrated (no migrations applied)")
    })
    .await
    .unwrap();
    let (tables,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = $1")
            .bind(&schema)
            .fetch_one(&pool)
            .await
            .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA \"{schema}\" CASCADE"
    )))
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    assert_eq!(tables, 0, "something created tables in {schema}");
}

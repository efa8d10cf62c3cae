//! Admin commands against databases that are not there: an unreachable
//! server is a quick one-line error, and `db migrate` on PostgreSQL creates
//! the database the URL names (or says exactly what to run).

use crate::helpers::{ferric, output};
use std::net::TcpListener;
use std::time::{Duration, Instant};

/// Run `args` against `url`; its output and how long it took.
fn timed(url: &str, args: &[&str]) -> (std::process::Output, Duration) {
    let start = Instant::now();
    let out = output(ferric().args(args).env("FERRIC_DATABASE__URL", url));
    (out, start.elapsed())
}

fn assert_fails_fast(url: &str, what: &str) {
    for args in [
        &["lock", "list"][..],
        &["conductor", "list"][..],
        &["db", "migrate"][..],
        &["lock", "release", "n1"][..],
    ] {
        let (out, took) = timed(url, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?} ({what}): {err}");
        assert!(
            took < Duration::from_secs(10),
            "{args:?} ({what}) took {took:?}: {err}"
        );
        let first = err.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("error: cannot reach database")
                && first.contains("within 5s")
                && first.contains("127.0.0.1"),
            "{args:?} ({what}): {err}"
        );
    }
}

#[test]
fn admin_commands_fail_fast_on_a_closed_port() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    assert_fails_fast(
        &format!("postgres://root@127.0.0.1:{port}/ferric"),
        "closed port",
    );
}

#[test]
fn admin_commands_fail_fast_on_a_server_that_never_answers() {
    // Accepts TCP connections (the kernel completes the handshake) and never
    // says a word: a hung or blackholed server.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    assert_fails_fast(
        &format!("postgres://root@127.0.0.1:{port}/ferric"),
        "silent server",
    );
    drop(listener);
}

/// The server and credentials of `FERRIC_TEST_PG_URL` with another database
/// name (and user, if given).
fn pg_url_with(base: &str, user: Option<&str>, db: &str) -> String {
    let (scheme, rest) = base.split_once("://").unwrap();
    let (auth_host, _) = rest.split_once('/').unwrap_or((rest, ""));
    let host = auth_host.rsplit_once('@').map_or(auth_host, |(_, h)| h);
    let auth = match user {
        Some(u) => format!("{u}@"),
        None => auth_host
            .rsplit_once('@')
            .map_or(String::new(), |(a, _)| format!("{a}@")),
    };
    format!("{scheme}://{auth}{host}/{db}")
}

async fn pg_exec(url: &str, sql: &str) {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_migrate_creates_a_missing_postgres_database() {
    let Ok(base) = std::env::var(ferric_store::testing::PG_URL_VAR) else {
        ferric_store::testing::skip(ferric_store::testing::PG_URL_VAR, "not run");
        return;
    };
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let db = format!("ferric_missing_{suffix}");
    let url = pg_url_with(&base, None, &db);
    let maintenance = pg_url_with(&base, None, "postgres");

    // A user who may create databases: created, migrated, and it says so.
    let u = url.clone();
    let (first, second) = tokio::task::spawn_blocking(move || {
        (
            timed(&u, &["db", "migrate"]).0,
            timed(&u, &["db", "migrate"]).0,
        )
    })
    .await
    .unwrap();
    let out = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(
        out.contains(&format!("created the PostgreSQL database \"{db}\""))
            && out.contains("schema is up to date"),
        "{out}"
    );
    // Again: it exists now; nothing is claimed to be created.
    let out = String::from_utf8_lossy(&second.stdout);
    assert!(second.status.success() && !out.contains("created"), "{out}");
    pg_exec(&maintenance, &format!("DROP DATABASE \"{db}\"")).await;

    // A user who may not: nothing created, the error says what to run.
    let role = format!("ferric_nocreate_{suffix}");
    pg_exec(
        &maintenance,
        &format!("CREATE ROLE \"{role}\" LOGIN NOCREATEDB"),
    )
    .await;
    let denied_url = pg_url_with(&base, Some(&role), &db);
    let u = denied_url.clone();
    let denied = tokio::task::spawn_blocking(move || timed(&u, &["db", "migrate"]).0)
        .await
        .unwrap();
    pg_exec(&maintenance, &format!("DROP ROLE \"{role}\"")).await;
    let err = String::from_utf8_lossy(&denied.stderr);
    assert_eq!(denied.status.code(), Some(1), "{err}");
    let first_line = err.lines().next().unwrap_or_default();
    assert!(
        first_line.contains(&format!("database \"{db}\" does not exist"))
            && first_line.contains(&format!("CREATE DATABASE \"{db}\" OWNER \"{role}\""))
            && first_line.contains("createdb"),
        "{err}"
    );
}

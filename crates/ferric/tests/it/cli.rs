//! The real built binary, driven as an operator would: `config show`, bad
//! config exit codes, `db migrate`, and `serve` stopped by SIGTERM.

use crate::helpers::{
    ferric, output, signal, sqlite_url, success, url_for, wait_until, ChildGuard,
};
use ferric_store::testing::{Engine, TestStore};
use std::process::Stdio;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn config_show_prints_the_layered_config_with_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ferric.toml");
    std::fs::write(
        &file,
        "[api]\nport = 7000\n[conductor]\nheartbeat_interval = \"7s\"\n",
    )
    .unwrap();
    let shown = success(
        ferric()
            .arg("--config")
            .arg(&file)
            .args(["config", "show"])
            .env(
                "FERRIC_DATABASE__URL",
                "postgres://root:hunter2@db.example/ferric",
            )
            .env("FERRIC_CONDUCTOR__HEARTBEAT_INTERVAL", "5s"),
    );
    assert!(shown.contains("port = 7000"), "{shown}");
    assert!(
        shown.contains("heartbeat_interval = \"5s\""),
        "env over file: {shown}"
    );
    assert!(
        shown.contains("url = \"postgres://root:****@db.example/ferric\""),
        "{shown}"
    );
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[test]
fn config_file_from_ferric_config_variable() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ferric.toml");
    std::fs::write(&file, "[api]\nport = 7002\n").unwrap();
    let shown = success(
        ferric()
            .args(["config", "show"])
            .env("FERRIC_CONFIG", &file),
    );
    assert!(shown.contains("port = 7002"), "{shown}");
}

#[test]
fn bad_config_exits_2_naming_the_key_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("typo.toml");
    std::fs::write(&file, "[conductor]\nhearbeat_interval = \"5s\"\n").unwrap();
    let url = sqlite_url(dir.path());
    let out = output(
        ferric()
            .arg("--config")
            .arg(&file)
            .args(["serve", "--database-url", &url]),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("conductor.hearbeat_interval"),
        "{}",
        stderr(&out)
    );
    assert!(
        !dir.path().join("ferric.db").exists(),
        "nothing may start on a bad config"
    );
}

#[test]
fn invalid_values_exit_2_listing_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let out = output(
        ferric()
            .args(["serve"])
            .env("FERRIC_DATABASE__URL", sqlite_url(dir.path()))
            .env("FERRIC_DATABASE__MAX_CONNECTIONS", "0")
            .env("FERRIC_CONDUCTOR__NODE_LOCKED_RETRY_ATTEMPTS", "0")
            .env("FERRIC_API__PORT", "not-a-port"),
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    // A type error stops before the semantic checks; fix it and see the rest.
    assert!(
        err.contains("api.port") && err.contains("FERRIC_API__PORT"),
        "{err}"
    );

    let out = output(
        ferric()
            .args(["serve"])
            .env("FERRIC_DATABASE__URL", sqlite_url(dir.path()))
            .env("FERRIC_DATABASE__MAX_CONNECTIONS", "0")
            .env("FERRIC_CONDUCTOR__NODE_LOCKED_RETRY_ATTEMPTS", "0"),
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("database.max_connections"), "{err}");
    assert!(
        err.contains("conductor.node_locked_retry_attempts"),
        "{err}"
    );
    assert!(!dir.path().join("ferric.db").exists());
}

#[test]
fn config_show_with_problems_prints_then_exits_2() {
    let out = output(
        ferric()
            .args(["config", "show"])
            .env("FERRIC_CONDUCTOR__HEARTBEAT_TIMEOUT", "1s"),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("heartbeat_timeout = \"1s\""));
    assert!(
        stderr(&out).contains("conductor.heartbeat_timeout"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_bad_log_filter_exits_2_naming_the_variable() {
    let out = output(
        ferric()
            .args(["config", "show"])
            .env("FERRIC_LOG", "info=bogus="),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("FERRIC_LOG"), "{}", stderr(&out));
}

#[test]
fn db_migrate_creates_the_database_and_can_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let first = success(ferric().args(["db", "migrate", "--database-url", &url]));
    assert!(first.contains("created"), "{first}");
    assert!(dir.path().join("ferric.db").exists());
    let again = success(
        ferric()
            .args(["db", "migrate"])
            .env("FERRIC_DATABASE__URL", &url),
    );
    assert!(again.contains("up to date"), "{again}");
}

/// The conductor row `hostname` as `conductor list --json` shows it.
fn listed(url: &str, hostname: &str) -> Option<serde_json::Value> {
    let out = success(ferric().args(["conductor", "list", "--json", "--database-url", url]));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    rows.into_iter().find(|r| r["hostname"] == hostname)
}

fn serve_until_sigterm(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let host = format!("it-{}", uuid::Uuid::new_v4().simple());
    // Migrate first so that `conductor list` never races serve's migration.
    success(
        ferric()
            .args(["db", "migrate"])
            .env("FERRIC_DATABASE__URL", url),
    );
    let log_path = dir.path().join("serve.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = ChildGuard(Some(
        ferric()
            .args(["serve", "--host", &host])
            .env("FERRIC_DATABASE__URL", url)
            .env("FERRIC_CONDUCTOR__HEARTBEAT_INTERVAL", "200ms")
            .env("FERRIC_API__PORT", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    ));
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    wait_until("serve to register as alive", || {
        if let Some(status) = child.try_wait() {
            panic!("serve exited early with {status}:\n{}", read_log());
        }
        listed(url, &host).is_some_and(|r| r["alive"] == true && r["online"] == true)
    });
    let registered = listed(url, &host).unwrap();
    assert_eq!(
        registered["drivers"],
        serde_json::json!(["fake-hardware", "redfish"])
    );
    wait_until("a heartbeat from the running binary", || {
        listed(url, &host).unwrap()["heartbeat_at"].as_i64() > registered["heartbeat_at"].as_i64()
    });
    let table = success(ferric().args(["conductor", "list", "--database-url", url]));
    assert!(table.starts_with("HOSTNAME"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&host) && l.contains("yes")),
        "{table}"
    );

    // The API answers on the address the service logged (port 0 → a free one).
    let log = read_log();
    let addr = crate::helpers::api_addr_in_log(&log)
        .unwrap_or_else(|| panic!("no API address in the log:\n{log}"));
    let reply = crate::helpers::http(&addr, "GET", "/v1", None);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        reply
            .to_ascii_lowercase()
            .contains("x-openstack-ironic-api-maximum-version"),
        "{reply}"
    );

    signal(child.id(), "TERM");
    let status = child.wait_bounded();
    let log = read_log();
    assert_eq!(status.code(), Some(0), "serve exited with {status}:\n{log}");
    assert!(log.contains("ferric serving"), "{log}");
    assert!(log.contains("ferric stopped"), "{log}");
    let after = listed(url, &host).unwrap();
    assert_eq!(after["online"], false, "{after}");
    assert_eq!(after["alive"], false, "{after}");
}

#[test]
fn serve_runs_until_sigterm_then_goes_offline_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    serve_until_sigterm(&sqlite_url(dir.path()));
}

#[tokio::test]
async fn serve_runs_until_sigterm_then_goes_offline_postgres() {
    // The harness makes a fresh schema; the processes reach it through search_path.
    let Some(ts) = TestStore::open(Engine::Postgres).await else {
        return;
    };
    let url = url_for(&ts);
    tokio::task::spawn_blocking(move || serve_until_sigterm(&url))
        .await
        .unwrap();
    ts.cleanup().await;
}

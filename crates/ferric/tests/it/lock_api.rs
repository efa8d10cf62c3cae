//! `ferric lock release --url`: a running `ferric serve` performs the
//! operator's release (POST /v1/nodes/NODE/lock/release), so the node's
//! failure notification reaches that server's sink (a webhook to a test
//! listener here) and its /metrics counts the recovery; the message for a
//! live holder does not call it dead.

use crate::helpers::{ferric, http, http_at, output, signal, sqlite_url, wait_until, Serve};
use ferric_conductor::{ConductorConfig, MemorySink, TaskManager};
use ferric_core::{NewNode, ProvisionState};
use ferric_store::{SqlStore, Store, StoreOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A webhook receiver answering 200 to every POST; keeps the bodies.
fn receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let b = bodies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let b = b.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let l = line.trim_end();
                        if l.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = l.split_once(':') {
                            if k.eq_ignore_ascii_case("content-length") {
                                length = v.trim().parse().unwrap();
                            }
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    b.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&body).into_owned());
                    if writer
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (addr, bodies)
}

/// A node in `state` locked by `holder` (registered, alive), which keeps it.
async fn locked_node(
    store: Arc<SqlStore>,
    name: &str,
    state: ProvisionState,
    holder: &str,
) -> ferric_store::LockToken {
    let n = store
        .create_node(NewNode {
            name: Some(name.into()),
            driver: "fake-hardware".into(),
            provision_state: Some(state),
            ..Default::default()
        })
        .await
        .unwrap();
    ferric_store::testing::register(&*store, holder).await;
    let tm = TaskManager::new(
        store,
        ConductorConfig {
            host: holder.into(),
            ..Default::default()
        },
        Arc::new(MemorySink::default()),
    );
    let task = tm
        .acquire(n.uuid)
        .purpose("deploy")
        .exclusive()
        .await
        .unwrap();
    let token = task.token().clone();
    std::mem::forget(task); // the holder keeps it
    token
}

fn metric(text: &str, line_prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_release_through_the_api_notifies_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let (hook, bodies) = receiver();
    let mut cmd = ferric();
    cmd.args(["serve", "--host", "srv", "--api-port", "0"])
        .env("FERRIC_DATABASE__URL", &url)
        .env("FERRIC_LOG", "info")
        // The test's holders never heartbeat: judge them alive for 10 min,
        // and keep the server's own stale-lock recovery out of the way.
        .env("FERRIC_CONDUCTOR__HEARTBEAT_TIMEOUT", "600s")
        .env("FERRIC_CONDUCTOR__RECOVERY_INTERVAL", "3600s")
        .env("FERRIC_NOTIFICATIONS__SINK", "webhook")
        .env(
            "FERRIC_NOTIFICATIONS__WEBHOOK_URL",
            format!("http://{hook}/hook"),
        );
    let mut serve = Serve::spawn(cmd, dir.path().join("srv.log"));
    let api = serve.api();

    let mut options = StoreOptions::new(url.clone());
    options.heartbeat_timeout = Duration::from_secs(600);
    let store = Arc::new(SqlStore::open(options).await.unwrap());
    let live = locked_node(
        store.clone(),
        "busy",
        ProvisionState::Deploying,
        "cond-live",
    )
    .await;
    let dead = locked_node(
        store.clone(),
        "stuck",
        ProvisionState::Cleaning,
        "cond-dead",
    )
    .await;
    store.unregister_conductor("cond-dead").await.unwrap();

    let (u, a) = (url.clone(), format!("http://{api}"));
    let (no_url, forced, stale) = tokio::task::spawn_blocking(move || {
        let run = |args: &[&str]| {
            output(
                ferric()
                    .args(args)
                    .env("FERRIC_DATABASE__URL", &u)
                    .env("FERRIC_CONDUCTOR__HEARTBEAT_TIMEOUT", "600s"),
            )
        };
        (
            run(&["lock", "release", "busy", "--force", "--reason", "BMC hung"]),
            run(&[
                "lock", "release", "busy", "--force", "--reason", "BMC hung", "--url", &a,
            ]),
            run(&["lock", "release", "stuck", "--url", &a]),
        )
    })
    .await
    .unwrap();
    // Without --url while srv runs: refused, nothing changed.
    assert_eq!(no_url.status.code(), Some(1));
    let err = String::from_utf8_lossy(&no_url.stderr);
    assert!(err.contains("srv") && err.contains("--url"), "{err}");
    // Through srv's API.
    let out = String::from_utf8_lossy(&forced.stdout);
    assert!(
        forced.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    assert!(
        out.starts_with("srv released the lock of node busy held by cond-live")
            && out.contains("taken from a live holder")
            && out.contains("deploy failed"),
        "{out}"
    );
    assert!(
        stale.status.success(),
        "{}",
        String::from_utf8_lossy(&stale.stderr)
    );
    let busy = store.get_node(&live.node.into()).await.unwrap();
    assert!(busy.reservation.is_none());
    assert_eq!(busy.provision_state, ProvisionState::DeployFailed);
    let last_error = busy.last_error.clone().unwrap_or_default();
    // A live holder is not called dead or offline.
    assert!(
        last_error.contains("took the lock from its live holder cond-live (forced: BMC hung)")
            && !last_error.contains("dead")
            && !last_error.contains("offline"),
        "{last_error}"
    );
    let stuck = store.get_node(&dead.node.into()).await.unwrap();
    assert_eq!(stuck.provision_state, ProvisionState::CleanFailed);

    // The failure notifications reached srv's webhook sink.
    let uuid = live.node.to_string();
    wait_until("the webhook to receive busy's failure", || {
        bodies
            .lock()
            .unwrap()
            .iter()
            .any(|b| b.contains(&uuid) && b.contains("deploy failed"))
    });
    // srv's /metrics counts both operator recoveries and both failed nodes.
    let metrics = http(&api, "GET", "/metrics", None);
    assert_eq!(
        metric(
            &metrics,
            "ferric_recovery_actions_total{cause=\"operator\",action=\"recovered\"}"
        ),
        2.0,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "ferric_recovery_actions_total{cause=\"operator\",action=\"failed_node\"}"
        ),
        2.0,
        "{metrics}"
    );
    // Audited with the actor and the forced flag; srv's log line for the
    // forced one does not say "dead conductor".
    let audit = store.list_audit(10).await.unwrap();
    assert_eq!(audit.len(), 2, "{audit:?}");
    assert_eq!(audit[0].action, "force-release");
    assert_eq!(audit[0].reason, "BMC hung");
    assert_eq!(audit[1].action, "release-stale");
    let log = serve.log();
    assert!(
        log.contains("an operator is taking the lock from its live holder (forced)"),
        "{log}"
    );

    // Bad input: force without a reason is a 400 and changes nothing; an
    // unlocked node is a 409.
    let v = Some("1.80");
    let reply = http_at(
        &api,
        "POST",
        "/v1/nodes/busy/lock/release",
        Some(r#"{"force":true}"#),
        v,
    );
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    let reply = http_at(&api, "POST", "/v1/nodes/busy/lock/release", Some("{}"), v);
    assert!(
        reply.starts_with("HTTP/1.1 409") && reply.contains("not locked"),
        "{reply}"
    );
    signal(serve.child.id(), "TERM");
    assert!(serve.child.wait_bounded().success(), "{}", serve.log());
    store.close().await;
}

//! Observability through the real binary: `/metrics` of a running
//! `ferric serve` after real provisioning work, and the webhook sink's
//! notifications all delivered by a graceful stop (none lost in the queue).

use crate::helpers::{
    api_addr_in_log, ferric, http_at, signal, sqlite_url, wait_until, ChildGuard,
};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A webhook receiver that records each POSTed JSON body and answers 200 only
/// once `open` is set: until then the sender is stuck on its first delivery
/// and everything else stays in its queue.
struct Receiver {
    addr: String,
    bodies: Arc<Mutex<Vec<Value>>>,
    open: Arc<AtomicBool>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let open = Arc::new(AtomicBool::new(false));
        let (b, o) = (bodies.clone(), open.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (b, o) = (b.clone(), o.clone());
                std::thread::spawn(move || serve_one(stream, &b, &o));
            }
        });
        Receiver { addr, bodies, open }
    }

    fn received(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }
}

/// Read requests off one connection; record each body; reply 200 when open.
fn serve_one(stream: TcpStream, bodies: &Mutex<Vec<Value>>, open: &AtomicBool) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        // Request line and headers.
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((name, value)) = l.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        bodies
            .lock()
            .unwrap()
            .push(serde_json::from_slice(&body).unwrap());
        while !open.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(10));
        }
        if writer
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}

/// The value of the first sample line starting with `prefix`.
fn sample(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn body_of(reply: &str) -> &str {
    reply.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

#[test]
fn metrics_and_notifications_through_a_running_serve() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start();
    let log_path = dir.path().join("serve.log");
    let mut cmd = ferric();
    cmd.args(["serve", "--host", "obs-test", "--api-port", "0"])
        .env("FERRIC_DATABASE__URL", sqlite_url(dir.path()))
        .env("FERRIC_NOTIFICATIONS__SINK", "webhook")
        .env(
            "FERRIC_NOTIFICATIONS__WEBHOOK_URL",
            format!("http://{}/hook", receiver.addr),
        )
        // The receiver holds its first reply until the stop; don't time out.
        .env("FERRIC_NOTIFICATIONS__WEBHOOK_TIMEOUT", "120s")
        .env("FERRIC_NOTIFICATIONS__FLUSH_TIMEOUT", "60s")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap());
    let mut child = ChildGuard(Some(cmd.spawn().unwrap()));
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let mut api = None;
    wait_until("the API address in the log", || {
        if let Some(status) = child.try_wait() {
            panic!("serve exited early with {status}:\n{}", log());
        }
        api = api_addr_in_log(&log());
        api.is_some()
    });
    let api = api.unwrap();
    let v = Some("1.96");

    // Real work: enroll, manage, provide (fake-hardware).
    let created = http_at(
        &api,
        "POST",
        "/v1/nodes",
        Some(r#"{"name":"obs-1","driver":"fake-hardware"}"#),
        v,
    );
    assert!(created.starts_with("HTTP/1.1 201"), "{created}");
    for (verb, stable) in [("manage", "manageable"), ("provide", "available")] {
        let reply = http_at(
            &api,
            "PUT",
            "/v1/nodes/obs-1/states/provision",
            Some(&format!(r#"{{"target":"{verb}"}}"#)),
            v,
        );
        assert!(reply.starts_with("HTTP/1.1 202"), "{reply}");
        wait_until(&format!("obs-1 to become {stable}"), || {
            let shown = http_at(&api, "GET", "/v1/nodes/obs-1", None, v);
            let node: Value = serde_json::from_str(body_of(&shown)).unwrap();
            node["provision_state"] == stable
        });
    }
    let reply = http_at(&api, "GET", "/metrics", None, None);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let metrics = body_of(&reply).to_string();
    for expected in [
        // Lock wait and hold by purpose, NodeLocked/LockLost, queue depth.
        "ferric_lock_wait_seconds_bucket{",
        "ferric_lock_hold_seconds_bucket{",
        "ferric_lock_node_locked_total",
        "ferric_lock_lost_total",
        "ferric_lock_queue_depth",
        // Heartbeat age per conductor, recovery, periodic jobs.
        "ferric_conductor_heartbeat_age_seconds{conductor=\"obs-test\"",
        "ferric_recovery_actions_total",
        "ferric_periodic_job_duration_seconds",
        // API latency by route.
        "ferric_api_request_duration_seconds_bucket{",
        "route=\"/v1/nodes/{ident}/states/provision\"",
        // The webhook sink's counters.
        "ferric_notifications_queued_total{sink=\"webhook\"}",
    ] {
        assert!(
            metrics.contains(expected),
            "/metrics lacks {expected}:\n{metrics}"
        );
    }
    // Every purpose's series exists from the start: one must have counted.
    let purpose_labelled = metrics.lines().any(|l| {
        l.starts_with("ferric_lock_hold_seconds_count{")
            && l.contains("purpose=")
            && !l.ends_with(" 0")
    });
    assert!(purpose_labelled, "no lock hold by purpose:\n{metrics}");

    // Every provision change queued its notifications; the receiver holds
    // the first delivery, so (almost) all of them are still queued.
    let queued = sample(
        &metrics,
        "ferric_notifications_queued_total{sink=\"webhook\"}",
    )
    .unwrap();
    assert!(
        queued >= 4.0,
        "manage + provide notify start and end: {queued}\n{metrics}"
    );
    wait_until("the first delivery to reach the receiver", || {
        !receiver.received().is_empty()
    });
    assert_eq!(
        receiver.received().len(),
        1,
        "the sender waits on its first delivery"
    );

    // A graceful stop delivers the rest before the process exits.
    signal(child.id(), "TERM");
    std::thread::sleep(Duration::from_millis(200));
    receiver.open.store(true, Ordering::SeqCst);
    let status = child.wait_bounded();
    let log = log();
    assert_eq!(status.code(), Some(0), "serve exited with {status}:\n{log}");
    let received = receiver.received();
    assert_eq!(
        received.len() as f64,
        queued,
        "every queued notification delivered by the stop:\n{log}"
    );
    for body in &received {
        let event = body["event_type"].as_str().unwrap_or_default();
        assert!(event.starts_with("baremetal.node.provision_set."), "{body}");
        assert_eq!(
            body["payload"]["ironic_object.data"]["name"], "obs-1",
            "{body}"
        );
    }
    assert!(log.contains("notifications delivered"), "{log}");
}

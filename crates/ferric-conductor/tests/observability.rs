//! Observability moves with behaviour: metrics count what the conductor did,
//! and notifications of a fake deploy reach a webhook and RabbitMQ.
//!
//! The AMQP test runs when `FERRIC_TEST_AMQP_URL` is set (CI sets it) and is
//! skipped otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferric_conductor::cluster::*;
use ferric_conductor::notify::{AmqpTransport, QueueOptions, QueuedSink, WebhookTransport};
use ferric_conductor::*;
use ferric_core::{Event, ProvisionState};
use ferric_store::testing::{fake_node as node, register, Engine, TestStore};
use ferric_store::Store;
use serde_json::Value;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

fn config(host: &str) -> ConductorConfig {
    ConductorConfig {
        host: host.to_string(),
        node_locked_retry_interval: Duration::from_millis(50),
        node_locked_retry_attempts: 2,
        heartbeat_timeout: Duration::from_secs(600),
        workers_pool_size: 4,
        ..Default::default()
    }
}

async fn store() -> TestStore {
    TestStore::open_with(Engine::Sqlite, |o| {
        o.heartbeat_timeout = Duration::from_secs(600)
    })
    .await
    .unwrap()
}

async fn conductor(t: &TestStore, host: &str, sink: Arc<dyn NotificationSink>) -> TaskManager {
    let store = t.reopen(|_| {}).await;
    register(&*store, host).await;
    TaskManager::new(store, config(host), sink)
}

async fn until(what: &str, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(15);
    while !ok() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_locked_wait_hold_and_lock_lost_are_counted() {
    let t = store().await;
    let a = conductor(&t, "cond-a", Arc::new(MemorySink::default())).await;
    let n = node(&*t.store, "n1", ProvisionState::Available).await;
    let m = a.metrics().clone();

    let held = a
        .acquire(n)
        .purpose("provision action: deploy")
        .exclusive()
        .await
        .unwrap();
    assert_eq!(m.node_locked_count("power"), 0);
    // Refused at once (Retry::None) and after a fair wait (Retry::Default).
    let e = a
        .acquire(n)
        .purpose("changing node power state to power on")
        .retry(Retry::None)
        .exclusive()
        .await
        .unwrap_err();
    assert!(e.is_node_locked());
    assert_eq!(m.node_locked_count("power"), 1);
    let e = a
        .acquire(n)
        .purpose("power off")
        .exclusive()
        .await
        .unwrap_err();
    assert!(e.is_node_locked());
    assert_eq!(m.node_locked_count("power"), 2);
    held.release().await.unwrap();

    let text = m.render();
    assert!(
        text.contains("ferric_lock_wait_seconds_count{purpose=\"deploy\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("ferric_lock_hold_seconds_count{purpose=\"deploy\"} 1\n"),
        "{text}"
    );
    assert!(text.contains("ferric_lock_node_locked_total{purpose=\"power\"} 2\n"));
    assert!(text.contains("ferric_lock_waiting_tasks 0\n"), "{text}");

    // A holder whose lock is broken is fenced out, and it is counted.
    let mut zombie = a.acquire(n).purpose("deploy").exclusive().await.unwrap();
    let token = zombie.token().clone();
    t.store.break_lock(n, &token, None).await.unwrap();
    zombie.node_mut().extra.insert("k".into(), "v".into());
    let e = zombie.save().await.unwrap_err();
    assert!(e.is_lock_lost());
    assert_eq!(m.lock_lost_count("write"), 1);
    assert!(zombie.release().await.is_err());
    assert_eq!(m.lock_lost_count("release"), 1);
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_queue_depth_heartbeats_and_periodic_durations_are_recorded() {
    let t = store().await;
    let s: &dyn Store = &*t.store;
    let n = node(s, "n1", ProvisionState::Deploying).await;
    let a = conductor(&t, "cond-a", Arc::new(MemorySink::default())).await;
    let b = conductor(&t, "cond-b", Arc::new(MemorySink::default())).await;
    let m = a.metrics().clone();
    let _held = b.acquire(n).purpose("deploy").exclusive().await.unwrap();
    // A waiter of cond-a queues behind cond-b.
    let waiter = {
        let a = a.clone();
        tokio::spawn(async move {
            a.acquire(n)
                .purpose("power state sync")
                .retry(Retry::Patient)
                .exclusive()
                .await
        })
    };
    while s.lock_view(n).await.unwrap().waiters.is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(m.render().contains("ferric_lock_waiting_tasks 1\n"));

    assert_eq!(m.periodic_count("recovery"), 0);
    recover_stale_locks_once(&a).await.unwrap();
    assert_eq!(m.periodic_count("recovery"), 1);
    assert_eq!(m.recovery_count("recovered"), 0);
    let text = m.render();
    assert!(text.contains("ferric_lock_queue_depth 1\n"), "{text}");
    assert!(text.contains("ferric_locks_held 1\n"), "{text}");

    sample_heartbeats(&a).await.unwrap();
    let text = m.render();
    assert!(
        text.contains("ferric_conductor_heartbeat_age_seconds{conductor=\"cond-a\"}")
            && text.contains("ferric_conductor_heartbeat_age_seconds{conductor=\"cond-b\"}"),
        "{text}"
    );

    // cond-b dies: its lock is recovered and the deploying node failed.
    s.unregister_conductor("cond-b").await.unwrap();
    let report = recover_stale_locks_once(&a).await.unwrap();
    assert_eq!(report.recovered, vec![n]);
    assert_eq!(m.recovery_count("recovered"), 1);
    assert_eq!(m.recovery_count("failed_node"), 1);
    assert!(m
        .render()
        .contains("ferric_recovery_actions_total{cause=\"offline\",action=\"recovered\"} 1\n"));
    let got = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    got.release().await.unwrap();
    assert!(m.render().contains("ferric_lock_waiting_tasks 0\n"));

    take_over_once(&a).await.unwrap();
    fail_timed_out_waits_once(&a).await.unwrap();
    assert_eq!(m.periodic_count("takeover"), 1);
    assert_eq!(m.periodic_count("wait_timeouts"), 1);
    let drivers = drivers::Drivers::new().with(Arc::new(drivers::fake::FakeHardware::new()));
    power::PowerSync::default()
        .sync_once(&a, &drivers)
        .await
        .unwrap();
    assert_eq!(m.periodic_count("power_sync"), 1);
    t.cleanup().await;
}

/// Available → deploying (start) → active (end), the work in the background
/// like a real deploy.
async fn fake_deploy(tm: &TaskManager, n: Uuid) {
    let mut task = tm.acquire(n).purpose("deploy").exclusive().await.unwrap();
    task.process_event(
        Event::Deploy,
        EventOpts {
            spawn: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    task.spawn_after("deploy", |task| {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            task.process_event(Event::Done, EventOpts::default())
                .await
                .map_err(|e| Box::new(e) as WorkError)
        })
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_receives_start_and_end_of_a_deploy_with_retries() {
    // A receiver that answers 503 to the first request: the sender retries.
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = {
        let got = got.clone();
        let calls = calls.clone();
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
                let got = got.clone();
                let calls = calls.clone();
                async move {
                    if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                        return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                    }
                    got.lock().unwrap().push(body);
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let transport =
        WebhookTransport::new(&format!("http://{addr}/hook"), Duration::from_secs(5)).unwrap();
    let options = QueueOptions {
        min_backoff: Duration::from_millis(10),
        ..Default::default()
    };
    let sink = QueuedSink::start(Arc::new(transport), options);
    let t = store().await;
    let tm = conductor(&t, "cond-a", sink.clone()).await;
    let n = node(&*t.store, "web-1", ProvisionState::Available).await;
    fake_deploy(&tm, n).await;

    until("two webhook deliveries", || got.lock().unwrap().len() == 2).await;
    let got = got.lock().unwrap().clone();
    let types: Vec<&str> = got
        .iter()
        .map(|m| m["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "baremetal.node.provision_set.start",
            "baremetal.node.provision_set.end"
        ]
    );
    let start = &got[0]["payload"]["ironic_object.data"];
    assert_eq!(start["uuid"], n.to_string());
    assert_eq!(start["previous_provision_state"], "available");
    assert_eq!(start["provision_state"], "deploying");
    assert_eq!(start["target_provision_state"], "active");
    assert_eq!(start["event"], "deploy");
    assert_eq!(start["driver"], "fake-hardware");
    let end = &got[1]["payload"]["ironic_object.data"];
    assert_eq!(end["previous_provision_state"], "deploying");
    assert_eq!(end["provision_state"], "active");
    assert_eq!(end["event"], "done");
    assert_eq!(got[1]["priority"], "INFO");
    assert_eq!(got[1]["publisher_id"], "ironic-conductor.cond-a");
    assert_eq!(calls.load(Ordering::SeqCst), 3, "one retry after the 503");
    let c = sink.counters();
    assert_eq!(c.sent.get(), 2);
    assert_eq!(c.dropped.get(), 0);
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_receives_start_and_end_on_ironics_exchange() {
    use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;
    let Ok(url) = std::env::var("FERRIC_TEST_AMQP_URL") else {
        ferric_store::testing::skip("FERRIC_TEST_AMQP_URL", "the AMQP test did not run");
        return;
    };
    let transport = Arc::new(AmqpTransport::new(&url, notify::AMQP_EXCHANGE).unwrap());
    let sink = QueuedSink::start(transport, QueueOptions::default());

    // A listener bound like a notification consumer of Ironic's: declare the
    // exchange (as the publisher would) and a private queue on both priorities.
    let conn = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
        .await
        .expect("FERRIC_TEST_AMQP_URL is set but RabbitMQ is not reachable");
    let ch = conn.create_channel().await.unwrap();
    ch.exchange_declare(
        notify::AMQP_EXCHANGE.into(),
        lapin::ExchangeKind::Topic,
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let queue = format!("ferric-test-{}", Uuid::new_v4().simple());
    ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        queue.as_str().into(),
        notify::AMQP_EXCHANGE.into(),
        "ironic_versioned_notifications.*".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();

    let t = store().await;
    let tm = conductor(&t, "cond-amqp", sink.clone()).await;
    let n = node(&*t.store, "amqp-1", ProvisionState::Available).await;
    fake_deploy(&tm, n).await;

    let mut seen = Vec::new();
    let end = Instant::now() + Duration::from_secs(15);
    while seen.len() < 2 {
        assert!(Instant::now() < end, "timed out; got {seen:?}");
        match ch
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            Some(msg) => {
                let outer: Value = serde_json::from_slice(&msg.delivery.data).unwrap();
                assert_eq!(outer["oslo.version"], "2.0");
                let inner: Value =
                    serde_json::from_str(outer["oslo.message"].as_str().unwrap()).unwrap();
                // Other conductors on this broker may publish too: keep ours.
                if inner["payload"]["ironic_object.data"]["uuid"] == n.to_string() {
                    seen.push((msg.delivery.routing_key.to_string(), inner));
                }
            }
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert_eq!(seen[0].0, "ironic_versioned_notifications.info");
    assert_eq!(
        seen[0].1["event_type"],
        "baremetal.node.provision_set.start"
    );
    assert_eq!(seen[1].1["event_type"], "baremetal.node.provision_set.end");
    assert_eq!(
        seen[1].1["payload"]["ironic_object.data"]["provision_state"],
        "active"
    );
    assert_eq!(sink.counters().sent.get(), 2);
    let _ = conn.close(200, "bye".into()).await;
    t.cleanup().await;
}

//! Membership, stale-lock recovery, wait timeouts and takeover on SQLite and
//! PostgreSQL. Periodic jobs are driven through their `*_once` functions.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferric_conductor::cluster::*;
use ferric_conductor::*;
use ferric_core::ProvisionState;
use ferric_store::testing::{fake_node as node, register, Engine, TestStore};
use ferric_store::{Store, StoreError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

fn config(host: &str) -> ConductorConfig {
    ConductorConfig {
        host: host.to_string(),
        node_locked_retry_interval: Duration::from_millis(100),
        heartbeat_interval: Duration::from_millis(200),
        heartbeat_timeout: Duration::from_secs(600),
        workers_pool_size: 4,
        ..Default::default()
    }
}

async fn conductor(t: &TestStore, host: &str, cfg: ConductorConfig) -> TaskManager {
    let store = t.reopen(|_| {}).await;
    register(&*store, host).await;
    TaskManager::new(store, cfg, Arc::new(MemorySink::default()))
}

macro_rules! both_engines {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let t = ferric_store::testing::TestStore::open_with(super::Engine::Sqlite, |o| o.heartbeat_timeout = std::time::Duration::from_secs(600)).await.unwrap();
                    super::$name(&t).await;
                    t.cleanup().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let Some(t) = ferric_store::testing::TestStore::open_with(super::Engine::Postgres, |o| o.heartbeat_timeout = std::time::Duration::from_secs(600)).await else { return };
                    super::$name(&t).await;
                    t.cleanup().await;
                }
            )*
        }
    };
}

both_engines!(
    dead_holders_lock_is_recovered_and_transient_node_failed,
    stable_and_maintenance_nodes_are_unlocked_without_state_change,
    concurrent_recoverers_recover_once,
    heartbeat_timeout_on_database_clock_makes_a_holder_dead,
    restart_with_same_hostname_recovers_own_locks,
    wait_states_time_out_only_when_stale_and_unlocked,
    ring_owners_take_over_their_nodes,
    graceful_stop_lets_work_finish_then_goes_offline,
    power_action_records_result_and_errors,
    power_sync_records_corrects_skips_locked_and_gives_up_into_maintenance,
    power_sync_never_records_a_reading_older_than_a_power_action,
    power_sync_without_force_records_the_hardware_state,
    periodic_jobs_read_the_fleet_page_by_page,
);

/// Take-over and power sync read their nodes in pages of 1,000: a fleet of
/// 1,200 (two pages) is covered whole, each node once.
async fn periodic_jobs_read_the_fleet_page_by_page(t: &TestStore) {
    use ferric_conductor::drivers::{fake::FakeHardware, Drivers};
    use ferric_conductor::power::PowerSync;
    let s: &dyn Store = &*t.store;
    let fleet = 1_200;
    let created = s
        .create_nodes(
            (0..fleet)
                .map(|i| ferric_core::NewNode {
                    name: Some(format!("p{i}")),
                    driver: "fake-hardware".into(),
                    provision_state: Some(ProvisionState::Active),
                    ..Default::default()
                })
                .collect(),
        )
        .await
        .unwrap();
    assert_eq!(created, fleet);
    let a = conductor(t, "cond-a", config("cond-a")).await;
    let taken = take_over_once(&a).await.unwrap();
    assert_eq!(taken.len(), fleet, "every active node taken over");
    let distinct: std::collections::HashSet<_> = taken.iter().collect();
    assert_eq!(distinct.len(), fleet, "each once");
    assert!(take_over_once(&a).await.unwrap().is_empty());
    let drivers = Drivers::new().with(Arc::new(FakeHardware::new()));
    let report = PowerSync::default().sync_once(&a, &drivers).await.unwrap();
    assert_eq!(report.checked, fleet, "every node checked: {report:?}");
    assert_eq!(report.corrected.len(), fleet, "every reading recorded");
}

/// `force_power_state_during_sync = false`: a node whose hardware drifted
/// gets the hardware's state recorded, and the hardware is left alone.
async fn power_sync_without_force_records_the_hardware_state(t: &TestStore) {
    use ferric_conductor::drivers::{fake::FakeHardware, Drivers};
    use ferric_conductor::power::PowerSync;
    use ferric_core::PowerState;
    let s: &dyn Store = &*t.store;
    let fake = Arc::new(FakeHardware::new());
    let drivers = Drivers::new().with(fake.clone());
    let cfg = ConductorConfig {
        force_power_state_during_sync: false,
        ..config("cond-a")
    };
    let a = conductor(t, "cond-a", cfg).await;
    let drifted = node(s, "drifted", ProvisionState::Active).await;
    let mut d = a.acquire(drifted).exclusive().await.unwrap();
    d.node_mut().power_state = Some(PowerState::On);
    d.save().await.unwrap();
    d.release().await.unwrap();
    let epoch = s.get_node(&drifted.into()).await.unwrap().lock_epoch;
    fake.set_bmc_power(drifted, PowerState::Off);
    let report = PowerSync::default().sync_once(&a, &drivers).await.unwrap();
    assert_eq!(report.corrected, vec![drifted]);
    let stored = s.get_node(&drifted.into()).await.unwrap();
    assert_eq!(stored.power_state, Some(PowerState::Off));
    assert_eq!(stored.lock_epoch, epoch, "recorded without taking the lock");
    assert_eq!(
        fake.bmc_power(drifted),
        PowerState::Off,
        "hardware left alone"
    );
}

/// Power sync records the BMC's answer without holding the lock; an answer
/// that an operator's power action overtook must not overwrite its result.
async fn power_sync_never_records_a_reading_older_than_a_power_action(t: &TestStore) {
    use ferric_conductor::drivers::{fake::FakeHardware, Drivers};
    use ferric_conductor::power::{power_action, PowerSync};
    use ferric_core::PowerState;
    let s: &dyn Store = &*t.store;
    let fake = Arc::new(FakeHardware::new());
    let drivers = Drivers::new().with(fake.clone());
    let a = conductor(t, "cond-a", config("cond-a")).await;
    let n = node(s, "slow-bmc", ProvisionState::Available).await;
    let mut task = a.acquire(n).exclusive().await.unwrap();
    task.node_mut()
        .driver_info
        .insert("fake_power_read_delay_ms".into(), serde_json::json!(1_000));
    task.save().await.unwrap();
    task.release().await.unwrap();
    // The sync lists the node (power unknown) and asks the BMC: "off"...
    let sync = {
        let (a, drivers) = (a.clone(), drivers.clone());
        tokio::spawn(async move { PowerSync::default().sync_once(&a, &drivers).await })
    };
    while fake.power_reads() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // ...and while that answer is on its way, an operator powers it on.
    let mut task = a.acquire(n).purpose("power on").exclusive().await.unwrap();
    power_action(&mut task, &*fake, PowerState::On)
        .await
        .unwrap();
    task.release().await.unwrap();
    let report = sync.await.unwrap().unwrap();
    assert_eq!(report.corrected, Vec::<Uuid>::new());
    assert_eq!(report.skipped_locked, 1, "{report:?}");
    let stored = s.get_node(&n.into()).await.unwrap();
    assert_eq!(
        stored.power_state,
        Some(PowerState::On),
        "stale reading recorded"
    );
    assert_eq!(fake.bmc_power(n), PowerState::On);
    // The next round sees hardware and record agree.
    let report = PowerSync::default().sync_once(&a, &drivers).await.unwrap();
    assert_eq!((report.checked, report.corrected.len()), (1, 0));
}

async fn power_action_records_result_and_errors(t: &TestStore) {
    use ferric_conductor::drivers::fake::FakeHardware;
    use ferric_conductor::power::power_action;
    use ferric_core::PowerState;
    let s: &dyn Store = &*t.store;
    let n = node(s, "n", ProvisionState::Available).await;
    let a = conductor(t, "cond-a", config("cond-a")).await;
    let fake = FakeHardware::new();
    let mut task = a.acquire(n).purpose("power on").exclusive().await.unwrap();
    power_action(&mut task, &fake, PowerState::On)
        .await
        .unwrap();
    assert_eq!(fake.bmc_power(n), PowerState::On);
    assert_eq!(
        (task.node().power_state, task.node().target_power_state),
        (Some(PowerState::On), None)
    );
    task.node_mut()
        .driver_info
        .insert("fake_fail_power".into(), serde_json::json!("BMC busy"));
    task.save().await.unwrap();
    let err = power_action(&mut task, &fake, PowerState::Off)
        .await
        .unwrap_err();
    assert!(matches!(err, TaskError::Driver(_)), "{err:?}");
    task.release().await.unwrap();
    let stored = s.get_node(&n.into()).await.unwrap();
    assert_eq!(stored.power_state, Some(PowerState::On));
    assert_eq!(stored.target_power_state, None);
    assert!(stored.last_error.unwrap().contains("BMC busy"));
}

async fn power_sync_records_corrects_skips_locked_and_gives_up_into_maintenance(t: &TestStore) {
    use ferric_conductor::drivers::{fake::FakeHardware, Drivers};
    use ferric_conductor::power::PowerSync;
    use ferric_core::PowerState;
    let s: &dyn Store = &*t.store;
    let fake = Arc::new(FakeHardware::new());
    let drivers = Drivers::new().with(fake.clone());
    let a = conductor(t, "cond-a", config("cond-a")).await;
    let unknown = node(s, "unknown", ProvisionState::Available).await;
    let drifted = node(s, "drifted", ProvisionState::Active).await;
    let locked = node(s, "locked", ProvisionState::Active).await;
    let broken = node(s, "broken", ProvisionState::Available).await;
    let waiting = node(s, "waiting", ProvisionState::DeployWait).await;
    // drifted: DB says on, hardware was switched off behind ferric's back.
    let mut d = a.acquire(drifted).exclusive().await.unwrap();
    d.node_mut().power_state = Some(PowerState::On);
    d.save().await.unwrap();
    d.release().await.unwrap();
    fake.set_bmc_power(drifted, PowerState::Off);
    let mut b = a.acquire(broken).exclusive().await.unwrap();
    b.node_mut().driver_info.insert(
        "fake_power_state_error".into(),
        serde_json::json!("BMC timeout"),
    );
    b.save().await.unwrap();
    b.release().await.unwrap();
    let holder = a
        .acquire(locked)
        .purpose("console")
        .exclusive()
        .await
        .unwrap();
    let sync = PowerSync::default();
    let r = sync.sync_once(&a, &drivers).await.unwrap();
    assert_eq!(
        r.skipped_locked, 1,
        "the locked node is skipped without error"
    );
    assert_eq!(r.bmc_failures, 1);
    assert!(r.corrected.contains(&unknown) && r.corrected.contains(&drifted));
    assert!(!r.corrected.contains(&waiting), "wait states are excluded");
    assert_eq!(
        s.get_node(&unknown.into()).await.unwrap().power_state,
        Some(PowerState::Off)
    );
    assert_eq!(
        fake.bmc_power(drifted),
        PowerState::On,
        "hardware corrected to the recorded state"
    );
    holder.release().await.unwrap();
    let r2 = sync.sync_once(&a, &drivers).await.unwrap();
    assert!(r2.to_maintenance.is_empty());
    let r3 = sync.sync_once(&a, &drivers).await.unwrap();
    assert_eq!(
        r3.to_maintenance,
        vec![broken],
        "maintenance after power_state_sync_max_retries failures"
    );
    let bn = s.get_node(&broken.into()).await.unwrap();
    assert!(
        bn.maintenance
            && bn
                .maintenance_reason
                .unwrap()
                .contains("max retries exceeded")
    );
    // In maintenance it is no longer polled.
    assert_eq!(sync.sync_once(&a, &drivers).await.unwrap().bmc_failures, 0);
}

async fn dead_holders_lock_is_recovered_and_transient_node_failed(t: &TestStore) {
    let s: &dyn Store = &*t.store;
    let n = node(s, "n", ProvisionState::Deploying).await;
    let b = conductor(t, "cond-b", config("cond-b")).await;
    let a = conductor(t, "cond-a", config("cond-a")).await;
    let c = conductor(t, "cond-c", config("cond-c")).await;
    let mut zombie = b.acquire(n).purpose("deploy").exclusive().await.unwrap();
    // A live waiter of a third conductor queues behind the doomed holder.
    let waiter = {
        let c = c.clone();
        tokio::spawn(async move {
            c.acquire(n)
                .purpose("power sync")
                .retry(Retry::Patient)
                .exclusive()
                .await
        })
    };
    while s.lock_view(n).await.unwrap().waiters.is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Nothing to recover while cond-b lives.
    assert!(recover_stale_locks_once(&a)
        .await
        .unwrap()
        .recovered
        .is_empty());
    s.unregister_conductor("cond-b").await.unwrap();
    let report = recover_stale_locks_once(&a).await.unwrap();
    assert_eq!(
        (report.recovered.clone(), report.failed.clone()),
        (vec![n], vec![n])
    );
    let got = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // The waiter sees the node already failed: recovery wrote before handing on.
    let node_now = got.node().clone();
    assert_eq!(node_now.provision_state, ProvisionState::DeployFailed);
    let msg = node_now.last_error.clone().unwrap();
    assert!(
        msg.contains("conductor cond-b went offline")
            && msg.contains("\"deploying\"")
            && msg.contains("recovered by cond-a"),
        "{msg}"
    );
    got.release().await.unwrap();
    // The zombie's writes are refused.
    zombie.node_mut().provision_state = ProvisionState::Active;
    assert!(zombie.save().await.unwrap_err().is_lock_lost());
    assert!(zombie.release().await.unwrap_err().is_lock_lost());
    assert_eq!(
        s.get_node(&n.into()).await.unwrap().provision_state,
        ProvisionState::DeployFailed
    );
}

async fn stable_and_maintenance_nodes_are_unlocked_without_state_change(t: &TestStore) {
    let s: &dyn Store = &*t.store;
    let stable = node(s, "stable", ProvisionState::Active).await;
    let maint = node(s, "maint", ProvisionState::Cleaning).await;
    let b = conductor(t, "cond-b", config("cond-b")).await;
    let a = conductor(t, "cond-a", config("cond-a")).await;
    let mut m = b.acquire(maint).exclusive().await.unwrap();
    m.node_mut().maintenance = true;
    m.save().await.unwrap();
    std::mem::forget(m); // the conductor "dies" holding it
    let mut st = b.acquire(stable).exclusive().await.unwrap();
    st.node_mut().target_power_state = Some(ferric_core::PowerState::Off);
    st.save().await.unwrap();
    std::mem::forget(st);
    s.unregister_conductor("cond-b").await.unwrap();
    let r = recover_stale_locks_once(&a).await.unwrap();
    assert_eq!(r.recovered.len(), 2);
    assert_eq!(r.failed, vec![maint]);
    let st = s.get_node(&stable.into()).await.unwrap();
    assert!(st.reservation.is_none());
    assert_eq!(st.provision_state, ProvisionState::Active);
    assert_eq!(st.target_power_state, None);
    assert!(st
        .last_error
        .unwrap()
        .contains("Pending power operation was aborted"));
    let m = s.get_node(&maint.into()).await.unwrap();
    assert!(m.reservation.is_none() && m.maintenance);
    assert_eq!(m.provision_state, ProvisionState::CleanFailed);
}

async fn concurrent_recoverers_recover_once(t: &TestStore) {
    let s: &dyn Store = &*t.store;
    let mut nodes = Vec::new();
    for i in 0..6 {
        nodes.push(node(s, &format!("n{i}"), ProvisionState::CleanWait).await);
    }
    let b = conductor(t, "cond-b", config("cond-b")).await;
    for n in &nodes {
        std::mem::forget(b.acquire(*n).exclusive().await.unwrap());
    }
    s.unregister_conductor("cond-b").await.unwrap();
    let a = conductor(t, "cond-a", config("cond-a")).await;
    let c = conductor(t, "cond-c", config("cond-c")).await;
    let (ra, rc) = tokio::join!(recover_stale_locks_once(&a), recover_stale_locks_once(&c));
    let (ra, rc) = (ra.unwrap(), rc.unwrap());
    let mut all: Vec<Uuid> = ra
        .recovered
        .iter()
        .chain(rc.recovered.iter())
        .copied()
        .collect();
    all.sort();
    let mut expect = nodes.clone();
    expect.sort();
    assert_eq!(all, expect, "each lock recovered exactly once");
    for n in nodes {
        let node = s.get_node(&n.into()).await.unwrap();
        assert_eq!(node.provision_state, ProvisionState::CleanFailed);
        assert!(node.reservation.is_none());
        assert_eq!(node.lock_epoch, 2, "one recovery grant per node");
    }
}

async fn heartbeat_timeout_on_database_clock_makes_a_holder_dead(t: &TestStore) {
    let short = t
        .reopen(|o| o.heartbeat_timeout = Duration::from_millis(800))
        .await;
    let n = node(&*short, "n", ProvisionState::Inspecting).await;
    register(&*short, "cond-b").await;
    register(&*short, "cond-a").await;
    let b = TaskManager::new(
        short.clone(),
        config("cond-b"),
        Arc::new(MemorySink::default()),
    );
    let a = TaskManager::new(
        short.clone(),
        config("cond-a"),
        Arc::new(MemorySink::default()),
    );
    std::mem::forget(b.acquire(n).exclusive().await.unwrap());
    // cond-a keeps heartbeating; cond-b (SIGKILLed, say) does not.
    let started = Instant::now();
    loop {
        short.heartbeat("cond-a").await.unwrap();
        let r = recover_stale_locks_once(&a).await.unwrap();
        if !r.recovered.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never recovered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "recovered a conductor that was still within its timeout"
    );
    assert_eq!(
        short.get_node(&n.into()).await.unwrap().provision_state,
        ProvisionState::InspectFailed
    );
}

async fn restart_with_same_hostname_recovers_own_locks(t: &TestStore) {
    let s: &dyn Store = &*t.store;
    let n = node(s, "n", ProvisionState::Cleaning).await;
    let other = node(s, "other", ProvisionState::Cleaning).await;
    // Exact hostname match only: "cond_1" must not match "condX1" (Ironic used LIKE).
    let first_life = conductor(t, "cond_1", config("cond_1")).await;
    std::mem::forget(first_life.acquire(n).exclusive().await.unwrap());
    let neighbour = conductor(t, "condX1", config("condX1")).await;
    let held = neighbour.acquire(other).exclusive().await.unwrap();
    // The conductor restarts under the same name while its row still looks alive.
    let second_life = TaskManager::new(
        t.reopen(|_| {}).await,
        config("cond_1"),
        Arc::new(MemorySink::default()),
    );
    let running = Conductor::start(second_life).await.unwrap();
    let node_now = s.get_node(&n.into()).await.unwrap();
    assert!(node_now.reservation.is_none());
    assert_eq!(node_now.provision_state, ProvisionState::CleanFailed);
    assert!(node_now
        .last_error
        .unwrap()
        .contains("conductor cond_1 restarted"));
    assert_eq!(
        s.get_node(&other.into())
            .await
            .unwrap()
            .reservation
            .unwrap()
            .holder,
        "condX1"
    );
    held.release().await.unwrap();
    running.stop().await;
}

async fn wait_states_time_out_only_when_stale_and_unlocked(t: &TestStore) {
    let s: &dyn Store = &*t.store;
    let cfg = ConductorConfig {
        deploy_callback_timeout: Duration::from_millis(300),
        clean_callback_timeout: Duration::from_millis(300),
        ..config("cond-a")
    };
    let a = conductor(t, "cond-a", cfg).await;
    let stale = node(s, "stale", ProvisionState::DeployWait).await;
    let locked = node(s, "locked", ProvisionState::CleanWait).await;
    let fresh_later = node(s, "fresh", ProvisionState::Available).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    // A node that entered its wait state just now is not stale.
    let mut f = a.acquire(fresh_later).exclusive().await.unwrap();
    f.process_event(ferric_core::Event::Deploy, EventOpts::default())
        .await
        .unwrap();
    f.process_event(ferric_core::Event::Wait, EventOpts::default())
        .await
        .unwrap();
    f.release().await.unwrap();
    let holder = a
        .acquire(locked)
        .purpose("agent heartbeat")
        .exclusive()
        .await
        .unwrap();
    let failed = fail_timed_out_waits_once(&a).await.unwrap();
    assert_eq!(failed, vec![stale]);
    let n = s.get_node(&stale.into()).await.unwrap();
    assert_eq!(n.provision_state, ProvisionState::DeployFailed);
    assert!(n
        .last_error
        .unwrap()
        .starts_with("Timeout reached while waiting for callback"));
    assert_eq!(
        s.get_node(&fresh_later.into())
            .await
            .unwrap()
            .provision_state,
        ProvisionState::DeployWait
    );
    holder.release().await.unwrap();
    assert_eq!(
        fail_timed_out_waits_once(&a).await.unwrap(),
        vec![locked],
        "skipped while locked, failed next round"
    );
    assert_eq!(
        s.get_node(&locked.into()).await.unwrap().provision_state,
        ProvisionState::CleanFailed
    );
}

async fn ring_owners_take_over_their_nodes(t: &TestStore) {
    let s: &dyn Store = &*t.store;
    let mut nodes = Vec::new();
    for i in 0..40 {
        nodes.push(node(s, &format!("n{i}"), ProvisionState::Available).await);
    }
    let a = conductor(t, "cond-a", config("cond-a")).await;
    let b = conductor(t, "cond-b", config("cond-b")).await;
    let ta = take_over_once(&a).await.unwrap();
    let tb = take_over_once(&b).await.unwrap();
    assert_eq!(
        ta.len() + tb.len(),
        40,
        "every node taken over by exactly one owner"
    );
    assert!(!ta.is_empty() && !tb.is_empty());
    let ring = current_ring(&a).await.unwrap();
    for n in &nodes {
        let node = s.get_node(&(*n).into()).await.unwrap();
        assert_eq!(node.conductor_affinity.as_deref(), ring.owner(*n));
    }
    // cond-b leaves: cond-a takes over the rest; a second pass changes nothing.
    s.unregister_conductor("cond-b").await.unwrap();
    let moved = take_over_once(&a).await.unwrap();
    assert_eq!(moved.len(), tb.len());
    assert!(take_over_once(&a).await.unwrap().is_empty());
}

async fn graceful_stop_lets_work_finish_then_goes_offline(t: &TestStore) {
    let s: &dyn Store = &*t.store;
    let n = node(s, "n", ProvisionState::Available).await;
    let tm = TaskManager::new(
        t.reopen(|_| {}).await,
        config("cond-a"),
        Arc::new(MemorySink::default()),
    );
    let running = Conductor::start(tm.clone()).await.unwrap();
    let task = tm.acquire(n).exclusive().await.unwrap();
    task.spawn_after("slow step", |t| {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(600)).await;
            t.node_mut()
                .extra
                .insert("done".into(), serde_json::json!(true));
            t.save().await?;
            Ok(())
        })
    })
    .await
    .unwrap();
    let hb_before = s.list_conductors().await.unwrap()[0].heartbeat_at;
    running.stop().await;
    let node_now = s.get_node(&n.into()).await.unwrap();
    assert_eq!(
        node_now.extra.get("done"),
        Some(&serde_json::json!(true)),
        "work finished before stop returned"
    );
    assert!(node_now.reservation.is_none());
    let row = s
        .list_conductors()
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.hostname == "cond-a")
        .unwrap();
    assert!(!row.online, "offline after stop");
    assert!(
        row.heartbeat_at > hb_before,
        "kept heartbeating while draining"
    );
    assert!(matches!(
        s.heartbeat("nobody").await,
        Err(StoreError::ConductorNotFound(_))
    ));
}

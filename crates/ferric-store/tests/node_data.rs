//! Node sub-resources (history, BIOS, firmware, inventory) on SQLite,
//! PostgreSQL (skipped only when FERRIC_TEST_PG_URL is unset) and MemoryStore:
//! fenced writes, ordering and paging, the `last_error` history recorded with
//! the node write, the bound on entries, and removal with the node.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferric_core::ProvisionState;
use ferric_store::testing::{fake_node, register, Engine, TestStore};
use ferric_store::*;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

async fn lock(store: &dyn Store, node: Uuid) -> LockToken {
    let claim = Claim {
        holder: "c1".into(),
        task_id: Uuid::new_v4(),
        purpose: "test".into(),
    };
    store.try_acquire(node, &claim).await.unwrap()
}

async fn unlock(store: &dyn Store, t: &LockToken) {
    store.release(t).await.unwrap();
}

async fn history(store: &dyn Store, node: Uuid) -> Vec<HistoryEvent> {
    let q = HistoryQuery {
        marker: None,
        limit: None,
        descending: false,
    };
    store.list_node_history(node, &q).await.unwrap()
}

async fn last_error_is_recorded_with_the_write(store: Arc<dyn Store>) {
    register(&*store, "c1").await;
    let node = fake_node(&*store, "n1", ProvisionState::Deploying).await;
    let t = lock(&*store, node).await;
    let mut n = store.get_node(&node.into()).await.unwrap();
    n.provision_state = ProvisionState::DeployFailed;
    n.last_error = Some("deploy went wrong".into());
    store.save_node(&t, &n).await.unwrap();
    // The same error again, or clearing it, records nothing.
    store.save_node(&t, &n).await.unwrap();
    n.last_error = None;
    store.save_node(&t, &n).await.unwrap();
    n.last_error = Some(String::new());
    store.save_node(&t, &n).await.unwrap();
    unlock(&*store, &t).await;

    let h = history(&*store, node).await;
    assert_eq!(h.len(), 1, "{h:?}");
    let e = &h[0];
    assert_eq!(e.event, "deploy went wrong");
    assert_eq!(e.severity.as_deref(), Some("ERROR"));
    assert_eq!(e.event_type.as_deref(), Some("deploying"));
    assert_eq!(e.state.as_deref(), Some("deploy failed"));
    assert_eq!(e.conductor.as_deref(), Some("c1"));
    assert_eq!(e.node, node);
    assert!(e.duration_seconds.is_some_and(|d| d >= 0), "{e:?}");
    let got = store.get_node_history(node, e.uuid).await.unwrap();
    assert_eq!(got.as_ref(), Some(e));
    assert_eq!(
        store.get_node_history(node, Uuid::new_v4()).await.unwrap(),
        None
    );
}

async fn history_pages_and_is_bounded(store: Arc<dyn Store>) {
    register(&*store, "c1").await;
    let node = fake_node(&*store, "n1", ProvisionState::Manageable).await;
    let other = fake_node(&*store, "n2", ProvisionState::Manageable).await;
    let t = lock(&*store, node).await;
    for i in 0..(NODE_HISTORY_MAX_ENTRIES + 5) {
        let ev = NewHistoryEvent {
            event: format!("event {i}"),
            event_type: Some("monitoring".into()),
            ..Default::default()
        };
        let e = store.add_node_history(&t, &ev).await.unwrap();
        assert_eq!(e.severity.as_deref(), Some("INFO"));
        assert_eq!(e.state.as_deref(), Some("manageable"));
    }
    unlock(&*store, &t).await;
    let all = history(&*store, node).await;
    assert_eq!(all.len(), NODE_HISTORY_MAX_ENTRIES);
    assert_eq!(all[0].event, "event 5", "the oldest went");
    assert_eq!(
        all.last().unwrap().event,
        format!("event {}", NODE_HISTORY_MAX_ENTRIES + 4)
    );
    let page = |marker, limit, descending| HistoryQuery {
        marker,
        limit,
        descending,
    };
    let first = store
        .list_node_history(node, &page(None, Some(2), false))
        .await
        .unwrap();
    assert_eq!(
        first.iter().map(|e| e.event.as_str()).collect::<Vec<_>>(),
        ["event 5", "event 6"]
    );
    let next = store
        .list_node_history(node, &page(Some(first[1].uuid), Some(2), false))
        .await
        .unwrap();
    assert_eq!(next[0].event, "event 7");
    let newest = store
        .list_node_history(node, &page(None, Some(1), true))
        .await
        .unwrap();
    assert_eq!(newest[0].uuid, all.last().unwrap().uuid);
    let before = store
        .list_node_history(node, &page(Some(newest[0].uuid), Some(1), true))
        .await
        .unwrap();
    assert_eq!(before[0].uuid, all[all.len() - 2].uuid);
    // Another node's history is its own; a marker of another node is refused.
    assert!(history(&*store, other).await.is_empty());
    assert!(matches!(
        store
            .list_node_history(other, &page(Some(all[0].uuid), None, false))
            .await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(
        store.get_node_history(other, all[0].uuid).await.unwrap(),
        None
    );
    assert!(matches!(
        store
            .list_node_history(Uuid::new_v4(), &page(None, None, false))
            .await,
        Err(StoreError::NodeNotFound(_))
    ));
}

async fn writes_are_fenced(store: Arc<dyn Store>) {
    register(&*store, "c1").await;
    let node = fake_node(&*store, "n1", ProvisionState::Manageable).await;
    let t = lock(&*store, node).await;
    unlock(&*store, &t).await;
    let ev = NewHistoryEvent {
        event: "x".into(),
        ..Default::default()
    };
    assert!(matches!(
        store.add_node_history(&t, &ev).await,
        Err(StoreError::LockLost { .. })
    ));
    let s = BiosSetting {
        name: "a".into(),
        ..Default::default()
    };
    assert!(matches!(
        store.set_bios_settings(&t, &[s]).await,
        Err(StoreError::LockLost { .. })
    ));
    assert!(matches!(
        store.set_firmware_components(&t, &[]).await,
        Err(StoreError::LockLost { .. })
    ));
    assert!(matches!(
        store.set_node_inventory(&t, &json!({}), &json!({})).await,
        Err(StoreError::LockLost { .. })
    ));
    let mut gone = t.clone();
    gone.node = Uuid::new_v4();
    assert!(matches!(
        store
            .set_node_inventory(&gone, &json!({}), &json!({}))
            .await,
        Err(StoreError::NodeNotFound(_))
    ));
    assert!(history(&*store, node).await.is_empty());
    assert!(store.list_bios_settings(node).await.unwrap().is_empty());
    assert!(store.get_node_inventory(node).await.unwrap().is_none());
}

async fn caches_replace_and_go_with_the_node(store: Arc<dyn Store>) {
    register(&*store, "c1").await;
    let node = fake_node(&*store, "n1", ProvisionState::Manageable).await;
    let t = lock(&*store, node).await;
    let setting = |name: &str, value: &str| BiosSetting {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    };
    let mut boot = setting("BootMode", "Uefi");
    boot.attribute_type = Some("Enumeration".into());
    boot.allowable_values = Some(vec!["Bios".into(), "Uefi".into()]);
    boot.read_only = Some(false);
    boot.reset_required = Some(true);
    boot.unique = Some(false);
    let mut len = setting("Name", "x");
    len.min_length = Some(0);
    len.max_length = Some(16);
    len.lower_bound = Some(1);
    len.upper_bound = Some(9);
    store
        .set_bios_settings(&t, &[len.clone(), boot.clone(), setting("Gone", "1")])
        .await
        .unwrap();
    let first = store.list_bios_settings(node).await.unwrap();
    assert_eq!(
        first.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["BootMode", "Gone", "Name"]
    );
    let got = first[0].clone();
    assert!(got.created_at.is_some() && got.updated_at.is_none());
    assert_eq!(
        BiosSetting {
            created_at: None,
            updated_at: None,
            ..got
        },
        boot
    );
    assert_eq!(first[2].max_length, Some(16));
    assert_eq!(first[2].upper_bound, Some(9));
    // Replace: kept settings are updated, missing ones go.
    tokio::time::sleep(Duration::from_millis(2)).await;
    store
        .set_bios_settings(&t, &[setting("BootMode", "Bios")])
        .await
        .unwrap();
    let second = store.list_bios_settings(node).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].value.as_deref(), Some("Bios"));
    assert_eq!(second[0].created_at, first[0].created_at);
    assert!(second[0].updated_at.is_some());

    let fw = FirmwareComponent {
        component: "bios".into(),
        initial_version: "1.0".into(),
        current_version: Some("1.1".into()),
        vendor: Some("Acme".into()),
        ..Default::default()
    };
    store
        .set_firmware_components(&t, std::slice::from_ref(&fw))
        .await
        .unwrap();
    let got = store.list_firmware_components(node).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(
        FirmwareComponent {
            created_at: None,
            updated_at: None,
            ..got[0].clone()
        },
        fw
    );

    let inv = json!({"cpu": {"count": 4}, "interfaces": [{"mac_address": "52:54:00:00:00:01"}]});
    store
        .set_node_inventory(&t, &inv, &json!({"plugin": true}))
        .await
        .unwrap();
    let got = store.get_node_inventory(node).await.unwrap().unwrap();
    assert_eq!(got.inventory, inv);
    assert_eq!(got.plugin_data, json!({"plugin": true}));
    assert!(got.updated_at.is_none());

    store
        .add_node_history(
            &t,
            &NewHistoryEvent {
                event: "e".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    store.delete_node(&t).await.unwrap();
    // A node re-created with the same name starts empty; the old rows are gone.
    let again = fake_node(&*store, "n1", ProvisionState::Manageable).await;
    assert!(history(&*store, again).await.is_empty());
    assert!(matches!(
        store.list_bios_settings(node).await,
        Err(StoreError::NodeNotFound(_))
    ));
    assert!(matches!(
        store.list_firmware_components(node).await,
        Err(StoreError::NodeNotFound(_))
    ));
    assert!(store.get_node_inventory(node).await.unwrap().is_none());
}

macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    let t = TestStore::open(Engine::Sqlite).await.expect("sqlite always runs");
                    super::$name(t.store.clone() as Arc<dyn Store>).await;
                    t.cleanup().await;
                }
            )*
        }
        mod postgres {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(t) = TestStore::open(Engine::Postgres).await else { return };
                    super::$name(t.store.clone() as Arc<dyn Store>).await;
                    t.cleanup().await;
                }
            )*
        }
        mod memory {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(Arc::new(MemoryStore::new(Duration::from_secs(3))) as Arc<dyn Store>).await;
                }
            )*
        }
    };
}

on_every_store!(
    last_error_is_recorded_with_the_write,
    history_pages_and_is_bounded,
    writes_are_fenced,
    caches_replace_and_go_with_the_node,
);

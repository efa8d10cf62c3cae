//! `Store::create_nodes`: every node gets its own revision and `created`
//! change, like `create_node`, on SQLite, PostgreSQL and the memory store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferric_core::{NewNode, ProvisionState};
use ferric_store::testing::{Engine, TestStore};
use ferric_store::{ChangeKind, MemoryStore, NodeQuery, Store};
use std::time::Duration;

fn batch(n: usize, prefix: &str) -> Vec<NewNode> {
    (0..n)
        .map(|i| NewNode {
            name: Some(format!("{prefix}-{i}")),
            driver: "fake-hardware".into(),
            provision_state: Some(ProvisionState::Available),
            ..Default::default()
        })
        .collect()
}

async fn bulk_creates_nodes_with_one_change_each(s: &dyn Store) {
    let before = s.list_nodes(&NodeQuery::default()).await.unwrap().revision;
    // More than one multi-row statement's worth.
    assert_eq!(s.create_nodes(batch(1203, "bulk")).await.unwrap(), 1203);
    let page = s.list_nodes(&NodeQuery::default()).await.unwrap();
    assert_eq!(page.nodes.len(), 1203);
    assert_eq!(page.revision, before + 1203);
    let changes = s.changes_since(before, 5000).await.unwrap();
    assert_eq!(changes.len(), 1203);
    for (i, c) in changes.iter().enumerate() {
        assert_eq!(c.revision, before + 1 + i as i64);
        assert_eq!(c.kind, ChangeKind::Created);
        let stored = s.get_node(&c.node.into()).await.unwrap();
        assert_eq!(stored.revision, c.revision);
        assert_eq!(c.snapshot.as_ref(), Some(&stored));
    }
    // A duplicate name fails the whole batch and changes nothing.
    let mut dup = batch(3, "again");
    dup[2].name = Some("bulk-7".into());
    assert!(s.create_nodes(dup).await.is_err());
    let after = s.list_nodes(&NodeQuery::default()).await.unwrap();
    assert_eq!(after.nodes.len(), 1203);
    assert_eq!(after.revision, before + 1203);
    assert_eq!(s.create_nodes(Vec::new()).await.unwrap(), 0);
}

#[tokio::test]
async fn bulk_sqlite() {
    let t = TestStore::open(Engine::Sqlite).await.unwrap();
    bulk_creates_nodes_with_one_change_each(&*t.store).await;
    t.cleanup().await;
}

#[tokio::test]
async fn bulk_postgres() {
    let Some(t) = TestStore::open(Engine::Postgres).await else {
        return;
    };
    bulk_creates_nodes_with_one_change_each(&*t.store).await;
    t.cleanup().await;
}

#[tokio::test]
async fn bulk_memory_default_method() {
    let s = MemoryStore::new(Duration::from_secs(60));
    assert_eq!(s.create_nodes(batch(5, "m")).await.unwrap(), 5);
    assert_eq!(
        s.list_nodes(&NodeQuery::default())
            .await
            .unwrap()
            .nodes
            .len(),
        5
    );
}

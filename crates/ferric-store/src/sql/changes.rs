//! Revisions and the change feed: the one-row revision counter, taken last
//! by every node write, and the `node_changes` rows written with it.

use super::rows::*;
use super::SqlStore;
use crate::resource::{Resource, ResourceChange, ResourceKind};
use crate::types::*;
use crate::{StoreError, StoreResult};
use ferric_core::{DbTime, Node};
use sqlx::Row;
use uuid::Uuid;

/// A page of the change feed: `$1` = after this revision, `$2` = limit.
pub(super) const CHANGES_PAGE: &str =
    "SELECT revision, node_uuid, kind, changed_at, snapshot, resource \
    FROM node_changes WHERE revision > $1 ORDER BY revision LIMIT $2";

fn parse_snapshot<T: serde::de::DeserializeOwned>(s: &str) -> StoreResult<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("snapshot: {e}")))
}

/// `Store::changes_since` (`changes_since_impl`, called by the `Store`
/// impl in `mod.rs`) and the revision and change-feed writes every node
/// write makes.
impl SqlStore {
    pub(super) async fn changes_since_impl(
        &self,
        since: i64,
        limit: u32,
    ) -> StoreResult<Vec<NodeChange>> {
        let rows = sqlx::query(CHANGES_PAGE)
            .bind(since)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let kind = match r.try_get::<String, _>("kind")?.as_str() {
                    "created" => ChangeKind::Created,
                    "updated" => ChangeKind::Updated,
                    "deleted" => ChangeKind::Deleted,
                    other => return Err(StoreError::Corrupt(format!("change kind {other:?}"))),
                };
                let snapshot: Option<String> = r.try_get("snapshot")?;
                let resource: Option<String> = r.try_get("resource")?;
                let (snapshot, resource) = match resource {
                    None => (snapshot.as_deref().map(parse_snapshot).transpose()?, None),
                    Some(k) => {
                        let kind = ResourceKind::parse(&k).ok_or_else(|| {
                            StoreError::Corrupt(format!("change resource kind {k:?}"))
                        })?;
                        let snapshot = snapshot.as_deref().map(parse_snapshot).transpose()?;
                        (None, Some(ResourceChange { kind, snapshot }))
                    }
                };
                Ok(NodeChange {
                    revision: r.try_get("revision")?,
                    node: parse_uuid(&r.try_get::<String, _>("node_uuid")?)?,
                    kind,
                    at: DbTime(r.try_get("changed_at")?),
                    snapshot,
                    resource,
                })
            })
            .collect()
    }

    /// One change-feed entry per node, each at the node's own `revision`
    /// and with its snapshot, in multi-row statements.
    pub(super) async fn record_changes(
        &self,
        conn: &mut sqlx::AnyConnection,
        kind: ChangeKind,
        nodes: &[&Node],
    ) -> StoreResult<()> {
        let kind = kind.as_str();
        for chunk in nodes.chunks(self.bulk_rows()) {
            let rows = (0..chunk.len())
                .map(|i| {
                    format!(
                        "(${}, ${}, '{kind}', {{now}}, ${})",
                        i * 3 + 1,
                        i * 3 + 2,
                        i * 3 + 3
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            let mut q = sqlx::query(self.sql(&format!(
                "INSERT INTO node_changes (revision, node_uuid, kind, changed_at, snapshot) \
                 VALUES {rows}"
            )));
            for node in chunk {
                let snapshot =
                    serde_json::to_string(node).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                q = q
                    .bind(node.revision)
                    .bind(node.uuid.to_string())
                    .bind(snapshot);
            }
            q.execute(&mut *conn).await?;
        }
        Ok(())
    }

    pub(super) async fn bump_revision(&self, conn: &mut sqlx::AnyConnection) -> StoreResult<i64> {
        let rev: i64 = sqlx::query(
            "UPDATE revision_counter SET value = value + 1 WHERE id = 1 RETURNING value",
        )
        .fetch_one(&mut *conn)
        .await?
        .try_get("value")?;
        #[cfg(feature = "testing")]
        crate::testing::hold_revision_if_triggered().await;
        Ok(rev)
    }

    /// Bump the revision counter and stamp `node` with the new revision;
    /// one statement on PostgreSQL, two on SQLite (whose writers are
    /// serialised by the database anyway).
    pub(super) async fn stamp_revision(
        &self,
        conn: &mut sqlx::AnyConnection,
        node: Uuid,
    ) -> StoreResult<i64> {
        if self.backend == Backend::Postgres {
            let rev: i64 = sqlx::query(
                "WITH r AS (UPDATE revision_counter SET value = value + 1 WHERE id = 1 \
                 RETURNING value) \
                 UPDATE nodes SET revision = (SELECT value FROM r) WHERE uuid = $1 \
                 RETURNING revision",
            )
            .bind(node.to_string())
            .fetch_one(&mut *conn)
            .await?
            .try_get("revision")?;
            #[cfg(feature = "testing")]
            crate::testing::hold_revision_if_triggered().await;
            return Ok(rev);
        }
        let rev = self.bump_revision(conn).await?;
        sqlx::query("UPDATE nodes SET revision = $1 WHERE uuid = $2")
            .bind(rev)
            .bind(node.to_string())
            .execute(&mut *conn)
            .await?;
        Ok(rev)
    }

    pub(super) async fn record_change(
        &self,
        conn: &mut sqlx::AnyConnection,
        revision: i64,
        node: Uuid,
        kind: ChangeKind,
        snapshot: Option<&Node>,
    ) -> StoreResult<()> {
        let kind = kind.as_str();
        let snapshot = snapshot
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query(self.sql(
            "INSERT INTO node_changes (revision, node_uuid, kind, changed_at, snapshot) \
             VALUES ($1, $2, $3, {now}, $4)",
        ))
        .bind(revision)
        .bind(node.to_string())
        .bind(kind)
        .bind(snapshot)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// A change-feed entry about a secondary resource (`node_uuid` holds
    /// the resource's UUID, `resource` its kind).
    pub(super) async fn record_resource_change(
        &self,
        conn: &mut sqlx::AnyConnection,
        revision: i64,
        kind: ResourceKind,
        uuid: Uuid,
        change: ChangeKind,
        snapshot: Option<&Resource>,
    ) -> StoreResult<()> {
        let snapshot = snapshot
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query(self.sql(
            "INSERT INTO node_changes (revision, node_uuid, kind, changed_at, snapshot, resource) \
             VALUES ($1, $2, $3, {now}, $4, $5)",
        ))
        .bind(revision)
        .bind(uuid.to_string())
        .bind(change.as_str())
        .bind(snapshot)
        .bind(kind.as_str())
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

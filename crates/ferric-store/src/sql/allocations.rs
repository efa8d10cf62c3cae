//! Allocations and their nodes, written together: the bind that gives a
//! locked node to an allocation and the deletion that takes it back, each one
//! transaction fenced by the node's lock token (migration 0006).

use super::changes::CounterTurn;
use super::resources::{resource_from_row, RESOURCE_COLS};
use super::rows::*;
use super::SqlStore;
use crate::resource::*;
use crate::types::*;
use crate::{StoreError, StoreResult};
use ferric_core::Node;
use serde_json::{json, Value};

use uuid::Uuid;

const KIND: ResourceKind = ResourceKind::Allocation;

impl SqlStore {
    /// The allocation row, locked for the transaction on PostgreSQL.
    async fn locked_allocation(
        &self,
        conn: &mut sqlx::AnyConnection,
        allocation: Uuid,
    ) -> StoreResult<Resource> {
        let row = sqlx::query(self.sql(&format!(
            "SELECT {RESOURCE_COLS} FROM allocations WHERE uuid = $1{{for_update}}"
        )))
        .bind(allocation.to_string())
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::ResourceNotFound {
            kind: KIND,
            ident: allocation.to_string(),
        })?;
        resource_from_row(KIND, &row)
    }

    pub(super) async fn bind_allocation_impl(
        &self,
        token: &LockToken,
        allocation: Uuid,
    ) -> StoreResult<(Node, Resource)> {
        let _g = self.write_guard().await;
        let mut turn = CounterTurn::default();
        let mut tx = self.begin_write().await?;
        // The node row first (locked on PostgreSQL, as every node writer
        // does), then the allocation row.
        self.fence(&mut tx, token).await?;
        let node = self.fetch_node(&mut tx, token.node).await?;
        let alloc = self.locked_allocation(&mut tx, allocation).await?;
        if alloc.node.is_some()
            || alloc.body.get("state").and_then(Value::as_str) != Some("allocating")
        {
            tx.rollback().await?;
            return Err(StoreError::ResourceChanged {
                kind: KIND,
                uuid: allocation,
                expected: alloc.revision,
            });
        }
        let taken = node
            .instance_uuid
            .filter(|i| *i != allocation)
            .or(node.attrs.allocation_uuid.filter(|a| *a != allocation));
        if let Some(instance) = taken {
            tx.rollback().await?;
            return Err(StoreError::NodeAssociated {
                node: node.uuid,
                instance: instance.to_string(),
            });
        }
        let mut instance_info = node.instance_info.clone();
        instance_info.insert(
            "traits".into(),
            alloc.body.get("traits").cloned().unwrap_or(json!([])),
        );
        let row = sqlx::query(self.sql(
            "UPDATE nodes SET instance_uuid = $1, allocation_uuid = $2, instance_info = $3, \
             updated_at = {now} \
             WHERE uuid = $4 AND reservation = $5 AND lock_task = $6 AND lock_epoch = $7 \
             RETURNING {node_cols}",
        ))
        .bind(allocation.to_string())
        .bind(allocation.to_string())
        .bind(json_text(&instance_info)?)
        .bind(token.node.to_string())
        .bind(token.holder.clone())
        .bind(token.task_id.to_string())
        .bind(token.epoch)
        .fetch_optional(&mut *tx)
        .await;
        let row = match row {
            Ok(Some(row)) => row,
            Ok(None) => {
                let err = self.diagnose_fenced(&mut tx, token).await;
                tx.rollback().await?;
                return Err(err);
            }
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                tx.rollback().await?;
                return Err(StoreError::Duplicate {
                    field: "instance_uuid",
                    value: allocation.to_string(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let mut node = node_from_row(&row)?;
        let rev = self.stamp_revision(&mut tx, node.uuid, &mut turn).await?;
        node.revision = rev;
        self.record_change(&mut tx, rev, node.uuid, ChangeKind::Updated, Some(&node))
            .await?;
        let mut body = alloc.body.clone();
        body.insert("state".into(), json!("active"));
        body.insert("last_error".into(), Value::Null);
        sqlx::query(self.sql(
            "UPDATE allocations SET node_uuid = $1, body = $2, updated_at = {now} WHERE uuid = $3",
        ))
        .bind(node.uuid.to_string())
        .bind(json_text(&body)?)
        .bind(allocation.to_string())
        .execute(&mut *tx)
        .await?;
        let stored = self
            .stamp_resource(&mut tx, KIND, allocation, ChangeKind::Updated, &mut turn)
            .await?;
        tx.commit().await?;
        Ok((node, stored))
    }

    pub(super) async fn delete_allocation_impl(
        &self,
        token: Option<&LockToken>,
        allocation: Uuid,
    ) -> StoreResult<()> {
        let _g = self.write_guard().await;
        let mut turn = CounterTurn::default();
        let mut tx = self.begin_write().await?;
        if let Some(t) = token {
            self.fence(&mut tx, t).await?;
        }
        let alloc = self.locked_allocation(&mut tx, allocation).await?;
        let expected_node = token.map(|t| t.node);
        if alloc.node != expected_node {
            tx.rollback().await?;
            return Err(StoreError::ResourceChanged {
                kind: KIND,
                uuid: allocation,
                expected: alloc.revision,
            });
        }
        sqlx::query("DELETE FROM allocations WHERE uuid = $1")
            .bind(allocation.to_string())
            .execute(&mut *tx)
            .await?;
        // Every row this transaction writes before the revision counter
        // (see CounterTurn): the node's, then the two revisions.
        let unbound = match alloc.node {
            Some(node) => sqlx::query(self.sql(
                "UPDATE nodes SET instance_uuid = NULL, allocation_uuid = NULL, \
                 updated_at = {now} WHERE uuid = $1 AND allocation_uuid = $2 \
                 RETURNING {node_cols}",
            ))
            .bind(node.to_string())
            .bind(allocation.to_string())
            .fetch_optional(&mut *tx)
            .await?
            .map(|row| node_from_row(&row))
            .transpose()?,
            None => None,
        };
        let rev = self.bump_revision(&mut tx, &mut turn).await?;
        self.record_resource_change(&mut tx, rev, KIND, allocation, ChangeKind::Deleted, None)
            .await?;
        if let Some(mut n) = unbound {
            let rev = self.stamp_revision(&mut tx, n.uuid, &mut turn).await?;
            n.revision = rev;
            self.record_change(&mut tx, rev, n.uuid, ChangeKind::Updated, Some(&n))
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

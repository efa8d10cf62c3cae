//! Secondary resources (ports, portgroups, chassis, ...): one generic set of
//! statements over tables of one shape (migration 0004), the table named by
//! [`ResourceKind::table`]. Every write bumps the global revision and writes
//! a change-feed entry in the same transaction ([`super::changes`]).

use super::changes::CounterTurn;
use super::rows::*;
use super::SqlStore;
use crate::resource::*;
use crate::types::*;
use crate::{StoreError, StoreResult};
use ferric_core::DbTime;
use sqlx::{ColumnIndex, Decode, Row, Type};
use uuid::Uuid;

pub(super) const RESOURCE_COLS: &str =
    "uuid, name, node_uuid, parent_uuid, ukey, body, created_at, updated_at, revision";

/// A resource from a row of [`RESOURCE_COLS`], on either driver.
pub(super) fn resource_from_row<'r, R>(kind: ResourceKind, r: &'r R) -> StoreResult<Resource>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let opt_uuid = |col: &'static str| -> StoreResult<Option<Uuid>> {
        r.try_get::<Option<String>, _>(col)?
            .as_deref()
            .map(parse_uuid)
            .transpose()
    };
    Ok(Resource {
        kind,
        uuid: parse_uuid(&r.try_get::<String, _>("uuid")?)?,
        name: r.try_get("name")?,
        node: opt_uuid("node_uuid")?,
        parent: opt_uuid("parent_uuid")?,
        key: r.try_get("ukey")?,
        body: json_map(&r.try_get::<String, _>("body")?, "body")?,
        created_at: DbTime(r.try_get("created_at")?),
        updated_at: r.try_get::<Option<i64>, _>("updated_at")?.map(DbTime),
        revision: r.try_get("revision")?,
    })
}

/// A unique or foreign-key violation as the store's error; anything else
/// as it is.
fn map_violation(
    e: sqlx::Error,
    kind: ResourceKind,
    uuid: Uuid,
    name: Option<&str>,
    key: Option<&str>,
    node: Option<Uuid>,
) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        let text = format!("{} {}", db.message(), db.constraint().unwrap_or(""));
        if db.is_unique_violation() {
            // SQLite: "UNIQUE constraint failed: ports.ukey"; PostgreSQL
            // names the constraint (ports_ukey_uniq, ports_name_uniq,
            // ports_uuid_pkey).
            let (field, value) = if text.contains("ukey") {
                (kind.key_field(), key.unwrap_or_default().to_string())
            } else if text.contains("name") {
                ("name", name.unwrap_or_default().to_string())
            } else {
                ("uuid", uuid.to_string())
            };
            return StoreError::ResourceDuplicate { kind, field, value };
        }
        if db.is_foreign_key_violation() {
            return StoreError::NodeNotFound(node.map(|n| n.to_string()).unwrap_or_default());
        }
    }
    e.into()
}

impl SqlStore {
    pub(super) async fn create_resource_impl(
        &self,
        kind: ResourceKind,
        new: NewResource,
    ) -> StoreResult<Resource> {
        let uuid = new.uuid.unwrap_or_else(Uuid::new_v4);
        let body = json_text(&new.body)?;
        let table = kind.table();
        let _g = self.write_guard().await;
        let mut turn = CounterTurn::default();
        let mut tx = self.begin_write().await?;
        sqlx::query(self.sql(&format!(
            "INSERT INTO {table} (uuid, name, node_uuid, parent_uuid, ukey, body, created_at, \
             revision) VALUES ($1, $2, $3, $4, $5, $6, {{now}}, 0)"
        )))
        .bind(uuid.to_string())
        .bind(new.name.clone())
        .bind(new.node.map(|n| n.to_string()))
        .bind(new.parent.map(|p| p.to_string()))
        .bind(new.key.clone())
        .bind(body)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            map_violation(
                e,
                kind,
                uuid,
                new.name.as_deref(),
                new.key.as_deref(),
                new.node,
            )
        })?;
        let stored = self
            .stamp_resource(&mut tx, kind, uuid, ChangeKind::Created, &mut turn)
            .await?;
        tx.commit().await?;
        Ok(stored)
    }

    /// The last part of every resource write but deletion: take the next
    /// revision (last, as node writes do), stamp it on the row, read the
    /// row back and write its change-feed entry.
    pub(super) async fn stamp_resource(
        &self,
        conn: &mut sqlx::AnyConnection,
        kind: ResourceKind,
        uuid: Uuid,
        change: ChangeKind,
        turn: &mut CounterTurn,
    ) -> StoreResult<Resource> {
        let rev = self.bump_revision(conn, turn).await?;
        let table = kind.table();
        let row = sqlx::query(self.sql(&format!(
            "UPDATE {table} SET revision = $1 WHERE uuid = $2 RETURNING {RESOURCE_COLS}"
        )))
        .bind(rev)
        .bind(uuid.to_string())
        .fetch_one(&mut *conn)
        .await?;
        let stored = resource_from_row(kind, &row)?;
        self.record_resource_change(conn, rev, kind, uuid, change, Some(&stored))
            .await?;
        Ok(stored)
    }

    pub(super) async fn get_resource_impl(
        &self,
        kind: ResourceKind,
        ident: &NodeIdent,
    ) -> StoreResult<Resource> {
        let (col, value) = match ident {
            NodeIdent::Uuid(u) => ("uuid", u.to_string()),
            NodeIdent::Name(n) => ("name", n.clone()),
        };
        let table = kind.table();
        let row = sqlx::query(self.sql(&format!(
            "SELECT {RESOURCE_COLS} FROM {table} WHERE {col} = $1"
        )))
        .bind(value)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::ResourceNotFound {
            kind,
            ident: ident.to_string(),
        })?;
        resource_from_row(kind, &row)
    }

    pub(super) async fn list_resources_impl(
        &self,
        q: &ResourceQuery,
    ) -> StoreResult<Vec<Resource>> {
        let kind = q.kind;
        let table = kind.table();
        let collate = self.dialect.collate;
        let sort = q.sort.column();
        let cmp = if q.descending { "<" } else { ">" };
        let dir = if q.descending { "DESC" } else { "ASC" };
        let mut sql = format!("SELECT {RESOURCE_COLS} FROM {table} WHERE 1 = 1");
        let mut binds: Vec<String> = Vec::new();
        let mut bind = |v: String| {
            binds.push(v);
            format!("${}", binds.len())
        };
        if let Some(m) = q.marker {
            // The marker's own sort value, looked up here: a marker that
            // does not exist is an error, as in Ironic.
            let marker = self.get_resource_impl(kind, &NodeIdent::Uuid(m)).await?;
            let u = bind(m.to_string());
            // Row values: both engines use the (created_at, uuid) index.
            // UUID text orders the same under any collation (hex digits at
            // fixed hyphen positions), so only names and keys need `collate`.
            let (col, v) = match q.sort {
                ResourceSort::Uuid => (String::new(), String::new()),
                ResourceSort::CreatedAt => {
                    ("created_at".to_string(), marker.created_at.0.to_string())
                }
                ResourceSort::Key => (
                    format!("{sort}{collate}"),
                    format!("{}{collate}", bind(marker.key.unwrap_or_default())),
                ),
                ResourceSort::Name => (
                    format!("{sort}{collate}"),
                    format!("{}{collate}", bind(marker.name.unwrap_or_default())),
                ),
            };
            if q.sort == ResourceSort::Uuid {
                sql.push_str(&format!(" AND uuid {cmp} {u}"));
            } else {
                sql.push_str(&format!(" AND ({col}, uuid) {cmp} ({v}, {u})"));
            }
        }
        if let Some(n) = q.node {
            let b = bind(n.to_string());
            sql.push_str(&format!(" AND node_uuid = {b}"));
        }
        if let Some(p) = q.parent {
            let b = bind(p.to_string());
            sql.push_str(&format!(" AND parent_uuid = {b}"));
        }
        if let Some(k) = &q.key {
            let b = bind(k.clone());
            sql.push_str(&format!(" AND ukey = {b}"));
        }
        for (field, value) in &q.body_eq {
            // `field` is a constant of the caller's (never user input).
            let b = bind(value.clone());
            let extract = match self.backend {
                Backend::Sqlite => format!("json_extract(body, '$.{field}')"),
                Backend::Postgres => format!("(CAST(body AS json) ->> '{field}')"),
            };
            sql.push_str(&format!(" AND {extract} = {b}"));
        }
        match q.has_node {
            Some(true) => sql.push_str(" AND node_uuid IS NOT NULL"),
            Some(false) => sql.push_str(" AND node_uuid IS NULL"),
            None => {}
        }
        if let Some(groups) = &q.node_conductor_groups {
            if groups.is_empty() {
                sql.push_str(" AND 1 = 0");
            } else {
                let marks: Vec<String> = groups.iter().map(|g| bind(g.clone())).collect();
                sql.push_str(&format!(
                    " AND node_uuid IN (SELECT uuid FROM nodes WHERE conductor_group IN ({}))",
                    marks.join(", ")
                ));
            }
        }
        if let Some(shards) = &q.node_shards {
            if shards.is_empty() {
                sql.push_str(" AND 1 = 0");
            } else {
                let marks: Vec<String> = shards.iter().map(|g| bind(g.clone())).collect();
                sql.push_str(&format!(
                    " AND node_uuid IN (SELECT uuid FROM nodes WHERE shard IN ({}))",
                    marks.join(", ")
                ));
            }
        }
        match q.sort {
            ResourceSort::Uuid => sql.push_str(&format!(" ORDER BY uuid{collate} {dir}")),
            ResourceSort::CreatedAt => {
                sql.push_str(&format!(" ORDER BY created_at {dir}, uuid{collate} {dir}"))
            }
            _ => sql.push_str(&format!(
                " ORDER BY {sort}{collate} {dir}, uuid{collate} {dir}"
            )),
        }
        if let Some(l) = q.limit {
            sql.push_str(&format!(" LIMIT {l}"));
        }
        macro_rules! fetch_in {
            ($pool:expr) => {{
                let mut query = sqlx::query(self.sql(&sql));
                for b in binds {
                    query = query.bind(b);
                }
                query
                    .fetch_all($pool)
                    .await?
                    .iter()
                    .map(|r| resource_from_row(kind, r))
                    .collect::<StoreResult<Vec<_>>>()?
            }};
        }
        // Large lists read through a native read pool where there is one
        // (see `SqlStore::sqlite_reads` and `pg_reads`).
        Ok(match (&self.sqlite_reads, &self.pg_reads) {
            (Some(reads), _) => fetch_in!(reads),
            (None, Some(reads)) => fetch_in!(reads),
            (None, None) => fetch_in!(&self.pool),
        })
    }

    pub(super) async fn update_resource_impl(&self, r: &Resource) -> StoreResult<Resource> {
        let kind = r.kind;
        let table = kind.table();
        let body = json_text(&r.body)?;
        let _g = self.write_guard().await;
        let mut turn = CounterTurn::default();
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(self.sql(&format!(
            "UPDATE {table} SET name = $1, node_uuid = $2, parent_uuid = $3, ukey = $4, \
             body = $5, updated_at = {{now}} WHERE uuid = $6 AND revision = $7"
        )))
        .bind(r.name.clone())
        .bind(r.node.map(|n| n.to_string()))
        .bind(r.parent.map(|p| p.to_string()))
        .bind(r.key.clone())
        .bind(body)
        .bind(r.uuid.to_string())
        .bind(r.revision)
        .execute(&mut *tx)
        .await
        .map_err(|e| map_violation(e, kind, r.uuid, r.name.as_deref(), r.key.as_deref(), r.node))?
        .rows_affected();
        if updated != 1 {
            tx.rollback().await?;
            return Err(self.diagnose_resource(kind, r.uuid, r.revision).await);
        }
        let stored = self
            .stamp_resource(&mut tx, kind, r.uuid, ChangeKind::Updated, &mut turn)
            .await?;
        tx.commit().await?;
        Ok(stored)
    }

    /// Why a conditional write matched no row: gone, or changed.
    async fn diagnose_resource(&self, kind: ResourceKind, uuid: Uuid, expected: i64) -> StoreError {
        match self.get_resource_impl(kind, &NodeIdent::Uuid(uuid)).await {
            Ok(_) => StoreError::ResourceChanged {
                kind,
                uuid,
                expected,
            },
            Err(e) => e,
        }
    }

    pub(super) async fn delete_resource_impl(
        &self,
        kind: ResourceKind,
        uuid: Uuid,
        revision: Option<i64>,
    ) -> StoreResult<()> {
        let table = kind.table();
        let _g = self.write_guard().await;
        let mut turn = CounterTurn::default();
        let mut tx = self.begin_write().await?;
        let mut q = sqlx::query(self.sql(&format!(
            "DELETE FROM {table} WHERE uuid = $1{}",
            if revision.is_some() {
                " AND revision = $2"
            } else {
                ""
            }
        )))
        .bind(uuid.to_string());
        if let Some(rev) = revision {
            q = q.bind(rev);
        }
        let deleted = q.execute(&mut *tx).await?.rows_affected();
        if deleted != 1 {
            tx.rollback().await?;
            return Err(match revision {
                Some(rev) => self.diagnose_resource(kind, uuid, rev).await,
                None => StoreError::ResourceNotFound {
                    kind,
                    ident: uuid.to_string(),
                },
            });
        }
        let rev = self.bump_revision(&mut tx, &mut turn).await?;
        self.record_resource_change(&mut tx, rev, kind, uuid, ChangeKind::Deleted, None)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Inside a node's deletion, before the node row goes: delete its
    /// resources of every kind and return them, for their `deleted`
    /// change-feed entries ([`Self::record_deleted_resources`]; the foreign
    /// key's ON DELETE CASCADE would remove them silently).
    pub(super) async fn delete_node_resources(
        &self,
        conn: &mut sqlx::AnyConnection,
        node: Uuid,
    ) -> StoreResult<Vec<(ResourceKind, Uuid)>> {
        let mut deleted = Vec::new();
        for kind in ResourceKind::ALL {
            let table = kind.table();
            let gone: Vec<String> = sqlx::query(self.sql(&format!(
                "DELETE FROM {table} WHERE node_uuid = $1 RETURNING uuid"
            )))
            .bind(node.to_string())
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|r| r.try_get::<String, _>("uuid"))
            .collect::<Result<_, _>>()?;
            for uuid in gone {
                deleted.push((kind, parse_uuid(&uuid)?));
            }
        }
        Ok(deleted)
    }

    /// The `deleted` change-feed entries of [`Self::delete_node_resources`]'
    /// rows, each at its own revision (taken here, after the transaction's
    /// last row write: see `CounterTurn`).
    pub(super) async fn record_deleted_resources(
        &self,
        conn: &mut sqlx::AnyConnection,
        deleted: &[(ResourceKind, Uuid)],
        turn: &mut CounterTurn,
    ) -> StoreResult<()> {
        for &(kind, uuid) in deleted {
            let rev = self.bump_revision(conn, turn).await?;
            self.record_resource_change(conn, rev, kind, uuid, ChangeKind::Deleted, None)
                .await?;
        }
        Ok(())
    }
}

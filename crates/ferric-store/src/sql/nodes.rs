//! Node rows: create (one or in bulk), read, list pages, fenced save and
//! delete, and power states recorded without the lock. Every write stamps a
//! revision and writes its change-feed entry in the same transaction
//! ([`super::changes`]).

use super::batch::SaveRequest;
use super::changes::CounterTurn;
use super::rows::*;
use super::SqlStore;
use crate::types::*;
use crate::{StoreError, StoreResult};
use ferric_core::{NewNode, Node, ProvisionState};
use sqlx::{AssertSqlSafe, Row};
use uuid::Uuid;

/// The INSERT of `rows` new nodes: the creation columns, then
/// [`ATTR_COLS`], each row's timestamps from the database clock.
fn insert_sql(rows: usize) -> String {
    const FIRST: [&str; 13] = [
        "uuid",
        "name",
        "driver",
        "driver_info",
        "properties",
        "extra",
        "interfaces",
        "provision_state",
        "conductor_group",
        "revision",
        "instance_info",
        "instance_uuid",
        "maintenance",
    ];
    let per_row = FIRST.len() + ATTR_COLS.len();
    let mut sql = format!(
        "INSERT INTO nodes ({}, {}, created_at, updated_at, provision_updated_at) VALUES ",
        FIRST.join(", "),
        ATTR_COLS.join(", ")
    );
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        let marks: Vec<String> = (1..=per_row)
            .map(|k| format!("${}", i * per_row + k))
            .collect();
        sql.push_str(&format!(
            "({}, {{now}}, {{now}}, {{now}})",
            marks.join(", ")
        ));
    }
    sql
}

/// `col = $first, col = $first+1, ...` over [`ATTR_COLS`].
fn attr_sets(first: usize) -> String {
    ATTR_COLS
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{c} = ${}", first + i))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Appended to a save's SET list when it releases: the lock is cleared in
/// the same statement when nobody waits (SET expressions read the row as it
/// was, so `lock_waiters` is the queue the fenced WHERE saw).
const RELEASE_UNCONTENDED: &str = ", \
    reservation = CASE WHEN lock_waiters = 0 THEN NULL ELSE reservation END, \
    lock_task = CASE WHEN lock_waiters = 0 THEN NULL ELSE lock_task END, \
    lock_purpose = CASE WHEN lock_waiters = 0 THEN NULL ELSE lock_purpose END, \
    lock_acquired_at = CASE WHEN lock_waiters = 0 THEN NULL ELSE lock_acquired_at END";

/// What a save's fenced UPDATE wrote.
pub(super) struct SavedRow {
    /// The node as saved, under the lock it was saved with.
    pub(super) node: Node,
    /// The same statement released the lock (nobody waited).
    pub(super) released: bool,
}

/// `Store`'s node methods (`*_impl`, called by the `Store` impl in
/// `mod.rs`) and their helpers.
impl SqlStore {
    pub(super) async fn create_node_impl(&self, mut new: NewNode) -> StoreResult<Node> {
        new.validate()
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        let uuid = new.uuid.unwrap_or_else(Uuid::new_v4);
        let state = new.provision_state.unwrap_or(ProvisionState::Enroll);
        let _g = self.write_guard().await;
        let mut turn = CounterTurn::default();
        let mut tx = self.begin_write().await?;
        // The row first, the revision last (as every write): a create that
        // held the counter while its insert waited for a name another
        // transaction had taken, and was waiting for the counter, deadlocked.
        let q = sqlx::query(self.sql(&insert_sql(1)))
            .bind(uuid.to_string())
            .bind(new.name.clone())
            .bind(new.driver.clone())
            .bind(json_text(&new.driver_info)?)
            .bind(json_text(&new.properties)?)
            .bind(json_text(&new.extra)?)
            .bind(json_text(&new.interfaces)?)
            .bind(state.as_str())
            .bind(new.conductor_group.clone())
            .bind(0_i64)
            .bind(json_text(&new.instance_info)?)
            .bind(new.instance_uuid.map(|u| u.to_string()))
            .bind(new.maintenance);
        bind_attrs!(q, &new.attrs)?
            .execute(&mut *tx)
            .await
            .map_err(|e| Self::map_unique(e, &new, uuid))?;
        let rev = self.stamp_revision(&mut tx, uuid, &mut turn).await?;
        let node = self.fetch_node(&mut tx, uuid).await?;
        self.record_change(&mut tx, rev, uuid, ChangeKind::Created, Some(&node))
            .await?;
        tx.commit().await?;
        Ok(node)
    }

    /// One transaction: revisions reserved in one statement, nodes inserted
    /// and read back and their change rows written in multi-row statements
    /// of `bulk_rows` rows. All or nothing.
    pub(super) async fn create_nodes_impl(&self, nodes: Vec<NewNode>) -> StoreResult<usize> {
        let bulk_rows = self.bulk_rows();
        if nodes.is_empty() {
            return Ok(0);
        }
        let mut prepared = Vec::with_capacity(nodes.len());
        for mut new in nodes {
            new.validate()
                .map_err(|e| StoreError::Invalid(e.to_string()))?;
            let uuid = new.uuid.unwrap_or_else(Uuid::new_v4);
            prepared.push((uuid, new));
        }
        let count = prepared.len() as i64;
        let _g = self.write_guard().await;
        let mut turn = CounterTurn::default();
        let mut tx = self.begin_write().await?;
        self.counter_turn(&mut tx, &mut turn).await?;
        let last: i64 = sqlx::query(AssertSqlSafe(format!(
            "UPDATE revision_counter SET value = value + {count} WHERE id = 1 RETURNING value"
        )))
        .fetch_one(&mut *tx)
        .await?
        .try_get("value")?;
        let first = last - count + 1;
        for (chunk_no, chunk) in prepared.chunks(bulk_rows).enumerate() {
            let base_rev = first + (chunk_no * bulk_rows) as i64;
            let sql = insert_sql(chunk.len());
            let mut q = sqlx::query(self.sql(&sql));
            for (i, (uuid, new)) in chunk.iter().enumerate() {
                let state = new.provision_state.unwrap_or(ProvisionState::Enroll);
                q = q
                    .bind(uuid.to_string())
                    .bind(new.name.clone())
                    .bind(new.driver.clone())
                    .bind(json_text(&new.driver_info)?)
                    .bind(json_text(&new.properties)?)
                    .bind(json_text(&new.extra)?)
                    .bind(json_text(&new.interfaces)?)
                    .bind(state.as_str())
                    .bind(new.conductor_group.clone())
                    .bind(base_rev + i as i64)
                    .bind(json_text(&new.instance_info)?)
                    .bind(new.instance_uuid.map(|u| u.to_string()))
                    .bind(new.maintenance);
                q = bind_attrs!(q, &new.attrs)?;
            }
            q.execute(&mut *tx)
                .await
                .map_err(|e| Self::map_unique(e, &chunk[0].1, chunk[0].0))?;
            // Read the rows back (the database set the timestamps), then
            // write one `created` change per node with its snapshot.
            let marks = (1..=chunk.len())
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(", ");
            let mut q = sqlx::query(self.sql(&format!(
                "SELECT {{node_cols}} FROM nodes WHERE uuid IN ({marks})"
            )));
            for (uuid, _) in chunk {
                q = q.bind(uuid.to_string());
            }
            let stored = q
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(node_from_row)
                .collect::<StoreResult<Vec<_>>>()?;
            if stored.len() != chunk.len() {
                return Err(StoreError::Corrupt(format!(
                    "{} of {} nodes vanished inside their creating transaction",
                    chunk.len() - stored.len(),
                    chunk.len()
                )));
            }
            let stored: Vec<&Node> = stored.iter().collect();
            self.record_changes(&mut tx, ChangeKind::Created, &stored)
                .await?;
        }
        tx.commit().await?;
        Ok(prepared.len())
    }

    pub(super) async fn get_node_impl(&self, ident: &NodeIdent) -> StoreResult<Node> {
        let (sql, key) = match ident {
            NodeIdent::Uuid(u) => (
                "SELECT {node_cols} FROM nodes WHERE uuid = $1",
                u.to_string(),
            ),
            NodeIdent::Name(n) => ("SELECT {node_cols} FROM nodes WHERE name = $1", n.clone()),
        };
        let row = sqlx::query(self.sql(sql))
            .bind(key)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NodeNotFound(ident.to_string()))?;
        node_from_row(&row)
    }

    pub(super) async fn list_nodes_impl(&self, q: &NodeQuery) -> StoreResult<NodePage> {
        let mut sql = String::from("SELECT {node_cols} FROM nodes WHERE 1 = 1");
        let mut binds: Vec<String> = Vec::new();
        fn push(sql: &mut String, binds: &mut Vec<String>, clause: &str, v: String) {
            binds.push(v);
            sql.push_str(&clause.replace('?', &format!("${}", binds.len())));
        }
        if let Some(s) = &q.provision_state {
            push(&mut sql, &mut binds, " AND provision_state = ?", s.clone());
        }
        if let Some(d) = &q.driver {
            push(&mut sql, &mut binds, " AND driver = ?", d.clone());
        }
        if let Some(g) = &q.conductor_group {
            push(
                &mut sql,
                &mut binds,
                " AND conductor_group = ?",
                g.to_ascii_lowercase(),
            );
        }
        for (col, value) in [
            ("resource_class", &q.resource_class),
            ("owner", &q.owner),
            ("lessee", &q.lessee),
            ("fault", &q.fault),
            ("instance_name", &q.instance_name),
        ] {
            if let Some(v) = value {
                push(&mut sql, &mut binds, &format!(" AND {col} = ?"), v.clone());
            }
        }
        for (col, value) in [
            ("instance_uuid", &q.instance_uuid),
            ("chassis_uuid", &q.chassis_uuid),
        ] {
            if let Some(v) = value {
                push(
                    &mut sql,
                    &mut binds,
                    &format!(" AND {col} = ?"),
                    v.to_string(),
                );
            }
        }
        if let Some(shards) = &q.shards {
            if shards.is_empty() {
                sql.push_str(" AND 1 = 0");
            } else {
                sql.push_str(" AND shard IN (");
                for (i, shard) in shards.iter().enumerate() {
                    push(
                        &mut sql,
                        &mut binds,
                        if i == 0 { "?" } else { ", ?" },
                        shard.clone(),
                    );
                }
                sql.push(')');
            }
        }
        if let Some(text) = &q.description_contains {
            let find = match self.backend {
                Backend::Sqlite => " AND instr(description, ?) > 0",
                Backend::Postgres => " AND strpos(description, ?) > 0",
            };
            push(&mut sql, &mut binds, find, text.clone());
        }
        for (col, wanted) in [("maintenance", q.maintenance), ("retired", q.retired)] {
            match wanted {
                Some(true) => sql.push_str(&format!(" AND {col} = TRUE")),
                Some(false) => sql.push_str(&format!(" AND {col} = FALSE")),
                None => {}
            }
        }
        for (col, present) in [
            ("reservation", q.reserved),
            ("instance_uuid", q.associated),
            ("shard", q.sharded),
        ] {
            match present {
                Some(true) => sql.push_str(&format!(" AND {col} IS NOT NULL")),
                Some(false) => sql.push_str(&format!(" AND {col} IS NULL")),
                None => {}
            }
        }
        if let Some(uuids) = &q.uuid_in {
            if uuids.is_empty() {
                sql.push_str(" AND 1 = 0");
            } else {
                sql.push_str(" AND uuid IN (");
                for (i, u) in uuids.iter().enumerate() {
                    push(
                        &mut sql,
                        &mut binds,
                        if i == 0 { "?" } else { ", ?" },
                        u.to_string(),
                    );
                }
                sql.push(')');
            }
        }
        match q.with_power_state {
            Some(true) => sql.push_str(" AND power_state IS NOT NULL"),
            Some(false) => sql.push_str(" AND power_state IS NULL"),
            None => {}
        }
        if let Some(p) = &q.project {
            push(&mut sql, &mut binds, " AND (owner = ?", p.clone());
            push(&mut sql, &mut binds, " OR lessee = ?)", p.clone());
        }
        if let Some(p) = q.parent_node {
            push(&mut sql, &mut binds, " AND parent_node = ?", p.to_string());
        }
        if q.hide_children {
            sql.push_str(" AND parent_node IS NULL");
        }

        let (key, kind) = node_sort_key(q.sort.key).ok_or_else(|| {
            StoreError::Invalid(format!("nodes cannot be sorted by {:?}", q.sort.key))
        })?;
        let col = match (key, kind, self.backend) {
            ("id", _, _) => "created_at".to_string(),
            // Byte order, as SQLite and the memory store compare text.
            (_, SortKind::Text, Backend::Postgres) => format!("{key} COLLATE \"C\""),
            _ => key.to_string(),
        };
        let desc = q.sort.descending;
        if let Some(m) = q.marker {
            if key == "uuid" {
                push(
                    &mut sql,
                    &mut binds,
                    if desc {
                        " AND uuid < ?"
                    } else {
                        " AND uuid > ?"
                    },
                    m.to_string(),
                );
            } else {
                binds.push(m.to_string());
                let mk = format!("${}", binds.len());
                let mv = format!("(SELECT {col} FROM nodes WHERE uuid = {mk})");
                sql.push_str(&if desc {
                    format!(
                        " AND (({mv} IS NULL AND ({col} IS NOT NULL OR uuid < {mk})) \
                         OR ({mv} IS NOT NULL AND {col} IS NOT NULL \
                         AND ({col} < {mv} OR ({col} = {mv} AND uuid < {mk}))))"
                    )
                } else {
                    format!(
                        " AND (({mv} IS NULL AND {col} IS NULL AND uuid > {mk}) \
                         OR ({mv} IS NOT NULL AND ({col} IS NULL OR {col} > {mv} \
                         OR ({col} = {mv} AND uuid > {mk}))))"
                    )
                });
            }
        }
        sql.push_str(&match (key, desc) {
            ("uuid", false) => " ORDER BY uuid".to_string(),
            ("uuid", true) => " ORDER BY uuid DESC".to_string(),
            (_, false) => format!(" ORDER BY {col} IS NULL, {col}, uuid"),
            (_, true) => format!(" ORDER BY {col} IS NULL DESC, {col} DESC, uuid DESC"),
        });
        if let Some(l) = q.limit {
            sql.push_str(&format!(" LIMIT {l}"));
        }
        // The page and its revision come from one read transaction, on the
        // native read pool (SQLite file or PostgreSQL) where there is one
        // (the same code for every driver's transaction type).
        macro_rules! page_in {
            ($tx:expr) => {{
                let mut tx = $tx;
                let revision: i64 = sqlx::query("SELECT value FROM revision_counter WHERE id = 1")
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get("value")?;
                let mut query = sqlx::query(self.sql(&sql));
                for b in binds {
                    query = query.bind(b);
                }
                let rows = query.fetch_all(&mut *tx).await?;
                tx.commit().await?;
                let nodes = rows
                    .iter()
                    .map(node_from_row)
                    .collect::<StoreResult<Vec<_>>>()?;
                NodePage { nodes, revision }
            }};
        }
        Ok(match (&self.sqlite_reads, &self.pg_reads) {
            (Some(reads), _) => page_in!(reads.begin().await?),
            (None, Some(reads)) => page_in!(
                reads
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await?
            ),
            (None, None) => page_in!(self.begin_read().await?),
        })
    }

    /// Check a save before it is queued: what the store refuses fails here,
    /// alone, before any batch sees it.
    pub(super) fn prepare_save(
        token: &LockToken,
        n: &Node,
        release: bool,
    ) -> StoreResult<SaveRequest> {
        if n.uuid != token.node {
            return Err(StoreError::Invalid(
                "a node's uuid cannot be changed".into(),
            ));
        }
        if let Some(name) = &n.name {
            ferric_core::node::validate_name(name)
                .map_err(|e| StoreError::Invalid(e.to_string()))?;
        }
        let group = ferric_core::node::normalize_conductor_group(&n.conductor_group)
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        let mut node = n.clone();
        node.attrs
            .validate()
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        node.conductor_group = group;
        Ok(SaveRequest {
            token: token.clone(),
            node,
            release,
        })
    }

    /// The fenced UPDATE of one save: the node as saved, or `None` when
    /// the token no longer holds the lock. A unique violation (the name) is
    /// mapped to [`StoreError::Duplicate`]. With `req.release`, the same
    /// statement clears the lock when nobody waits for it (the common case:
    /// one statement and one row version less than a separate release);
    /// otherwise [`Self::finish_release`] hands it on.
    pub(super) async fn save_statement(
        &self,
        conn: &mut sqlx::AnyConnection,
        req: &SaveRequest,
    ) -> StoreResult<Option<SavedRow>> {
        let (token, n) = (&req.token, &req.node);
        let updated = sqlx::query(
            self.sql(
                &"UPDATE nodes SET name = $1, driver = $2, driver_info = $3, properties = $4, \
             extra = $5, instance_info = $6, instance_uuid = $7, interfaces = $8, \
             provision_updated_at = CASE WHEN provision_state <> $9 OR {touch} THEN {now} \
                                         ELSE provision_updated_at END, \
             provision_state = $9, target_provision_state = $10, power_state = $11, \
             target_power_state = $12, maintenance = $13, maintenance_reason = $14, \
             last_error = $15, conductor_group = $16, conductor_affinity = $17, \
             driver_internal_info = $22, clean_step = $23, deploy_step = $24, \
             {attr_sets}, updated_at = {now}{release} \
             WHERE uuid = $18 AND reservation = $19 AND lock_task = $20 AND lock_epoch = $21 \
             RETURNING {node_cols}"
                    .replace("{attr_sets}", &attr_sets(25))
                    .replace(
                        "{release}",
                        if req.release { RELEASE_UNCONTENDED } else { "" },
                    )
                    // A node saved without provision_updated_at asks for a
                    // touch (`ExclusiveTask::touch_provisioning`).
                    .replace(
                        "{touch}",
                        if n.provision_updated_at.is_none() {
                            "1 = 1"
                        } else {
                            "1 = 0"
                        },
                    ),
            ),
        )
        .bind(n.name.clone())
        .bind(n.driver.clone())
        .bind(json_text(&n.driver_info)?)
        .bind(json_text(&n.properties)?)
        .bind(json_text(&n.extra)?)
        .bind(json_text(&n.instance_info)?)
        .bind(n.instance_uuid.map(|u| u.to_string()))
        .bind(json_text(&n.interfaces)?)
        .bind(n.provision_state.as_str())
        .bind(n.target_provision_state.map(|s| s.as_str()))
        .bind(n.power_state.map(|s| s.as_str()))
        .bind(n.target_power_state.map(|s| s.as_str()))
        .bind(n.maintenance)
        .bind(n.maintenance_reason.clone())
        .bind(n.last_error.clone())
        .bind(n.conductor_group.clone())
        .bind(n.conductor_affinity.clone())
        .bind(token.node.to_string())
        .bind(token.holder.clone())
        .bind(token.task_id.to_string())
        .bind(token.epoch)
        .bind(json_text(&n.driver_internal_info)?)
        .bind(json_text(&n.clean_step)?)
        .bind(json_text(&n.deploy_step)?);
        match bind_attrs!(updated, &n.attrs)?
            .fetch_optional(&mut *conn)
            .await
        {
            Ok(None) => Ok(None),
            Ok(Some(row)) => {
                let mut node = node_from_row(&row)?;
                let released = req.release && node.reservation.is_none();
                // The node as saved is the node under its lock, as before a
                // separate release (what Ironic's PATCH answers, and what
                // the change feed has always carried); the fenced WHERE
                // matched these values.
                node.reservation = Some(ferric_core::node::Reservation {
                    holder: token.holder.clone(),
                    task_id: token.task_id,
                    epoch: token.epoch,
                    purpose: token.purpose.clone(),
                    acquired_at: token.acquired_at,
                });
                Ok(Some(SavedRow { node, released }))
            }
            Err(e) => {
                let new = NewNode {
                    name: n.name.clone(),
                    ..Default::default()
                };
                Err(Self::map_unique(e, &new, n.uuid))
            }
        }
    }

    /// The release a save asked for, after its UPDATE: nothing more when
    /// the UPDATE cleared the lock, else the hand-off to the first live
    /// waiter on the row the UPDATE holds. `None` when no release was asked.
    pub(super) async fn finish_release(
        &self,
        conn: &mut sqlx::AnyConnection,
        req: &SaveRequest,
        released: bool,
    ) -> StoreResult<Option<Release>> {
        Ok(match (req.release, released) {
            (false, _) => None,
            (true, true) => Some(Release::default()),
            (true, false) => Some(self.handoff_held(conn, &req.token).await?),
        })
    }

    /// One save in its own transaction (a batch of one, and the path each
    /// save of a failed batch is retried on); with `release`, the lock is
    /// released (or handed to the first live waiter) in the same
    /// transaction, after the node write and before the revision counter is
    /// taken.
    pub(super) async fn save_one(&self, req: &SaveRequest) -> StoreResult<(Node, Option<Release>)> {
        let token = &req.token;
        let _g = self.write_guard().await;
        let mut turn = CounterTurn::default();
        let mut tx = self.begin_write().await?;
        let Some(saved) = self.save_statement(&mut tx, req).await? else {
            let err = self.diagnose_fenced(&mut tx, token).await;
            tx.rollback().await?;
            return Err(err);
        };
        // The revision counter is one row: every node write queues on it
        // from the bump until its commit (that is what keeps the change feed
        // gap-free and in commit order). So the node is read back by the
        // UPDATE above, and the counter is taken last, in one statement on
        // PostgreSQL. The release needs only the node row, which the UPDATE
        // above holds: it goes before the counter so as not to lengthen
        // that queue.
        let mut node = saved.node;
        let mut released = self.finish_release(&mut tx, req, saved.released).await?;
        let rev = self.stamp_revision(&mut tx, token.node, &mut turn).await?;
        node.revision = rev;
        if let Some(g) = released.as_mut().and_then(|r| r.granted_to.as_mut()) {
            if let Some(granted) = g.node.as_mut() {
                // Read before the stamp: the row carries this revision now.
                granted.revision = rev;
            }
        }
        self.record_change(&mut tx, rev, token.node, ChangeKind::Updated, Some(&node))
            .await?;
        tx.commit().await?;
        if let Some(r) = &released {
            self.wake_sqlite_grantee(token.node, r);
        }
        Ok((node, released))
    }

    pub(super) async fn record_power_states_impl(
        &self,
        observed: &[PowerObservation],
    ) -> StoreResult<Vec<Node>> {
        if observed.is_empty() {
            return Ok(Vec::new());
        }
        // A node observed twice: the first reading counts, the second is
        // stale by then (as in the memory store). Without this, one
        // UPDATE ... FROM would apply an arbitrary one of the two, and two
        // chunks would both match (revisions are stamped after all chunks).
        let mut seen = std::collections::HashSet::new();
        let observed: Vec<&PowerObservation> =
            observed.iter().filter(|o| seen.insert(o.node)).collect();
        let _g = self.write_guard().await;
        let mut turn = CounterTurn::default();
        let mut tx = self.begin_write().await?;
        // The conditional write: unlocked, not granted since (lock_epoch),
        // not written since (revision). Row locks serialise it with grants.
        let mut recorded = Vec::new();
        for chunk in observed.chunks(self.bulk_rows()) {
            let mut q = sqlx::query(self.sql(&format!(
                "UPDATE nodes SET power_state = v.column4, updated_at = {{now}} \
                 FROM (VALUES {}) AS v \
                 WHERE nodes.uuid = v.column1 AND nodes.reservation IS NULL \
                 AND nodes.lock_epoch = v.column2 AND nodes.revision = v.column3 \
                 RETURNING {{node_cols}}",
                Self::values_marks(chunk.len(), 4)
            )));
            for o in chunk {
                q = q
                    .bind(o.node.to_string())
                    .bind(o.lock_epoch)
                    .bind(o.revision)
                    .bind(o.power_state.as_str());
            }
            for row in q.fetch_all(&mut *tx).await? {
                recorded.push(node_from_row(&row)?);
            }
        }
        if recorded.is_empty() {
            tx.rollback().await?;
            return Ok(recorded);
        }
        // Revisions last, as in save_node: the one-row counter is held from
        // here to the commit.
        let count = recorded.len() as i64;
        let last = self.bump_revisions(&mut tx, count, &mut turn).await?;
        for (i, node) in recorded.iter_mut().enumerate() {
            node.revision = last - count + 1 + i as i64;
        }
        let nodes: Vec<&Node> = recorded.iter().collect();
        self.write_revisions(&mut tx, &nodes).await?;
        let nodes: Vec<&Node> = recorded.iter().collect();
        self.record_changes(&mut tx, ChangeKind::Updated, &nodes)
            .await?;
        tx.commit().await?;
        Ok(recorded)
    }

    pub(super) async fn delete_node_impl(&self, token: &LockToken) -> StoreResult<()> {
        let _g = self.write_guard().await;
        let mut turn = CounterTurn::default();
        let mut tx = self.begin_write().await?;
        // Its ports, portgroups, ... first (rolled back with the rest if the
        // fence below fails); their change-feed entries go with the node's,
        // after every row write (see CounterTurn).
        let resources = self.delete_node_resources(&mut tx, token.node).await?;
        // Waiters go first so the node row can go (SQLite enforces the
        // reference only with foreign_keys on; be explicit on both engines).
        let deleted = sqlx::query(
            "DELETE FROM nodes WHERE uuid = $1 AND reservation = $2 AND lock_task = $3 \
             AND lock_epoch = $4",
        )
        .bind(token.node.to_string())
        .bind(token.holder.clone())
        .bind(token.task_id.to_string())
        .bind(token.epoch)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if deleted != 1 {
            let err = self.diagnose_fenced(&mut tx, token).await;
            tx.rollback().await?;
            return Err(err);
        }
        sqlx::query("DELETE FROM lock_waiters WHERE node_uuid = $1")
            .bind(token.node.to_string())
            .execute(&mut *tx)
            .await?;
        self.record_deleted_resources(&mut tx, &resources, &mut turn)
            .await?;
        let rev = self.bump_revision(&mut tx, &mut turn).await?;
        self.record_change(&mut tx, rev, token.node, ChangeKind::Deleted, None)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn shard_counts_impl(&self) -> StoreResult<Vec<(Option<String>, i64)>> {
        let rows = sqlx::query("SELECT shard, COUNT(*) AS n FROM nodes GROUP BY shard")
            .fetch_all(&self.pool)
            .await?;
        let mut counts = rows
            .iter()
            .map(|r| Ok((r.try_get::<Option<String>, _>("shard")?, r.try_get("n")?)))
            .collect::<StoreResult<Vec<(Option<String>, i64)>>>()?;
        counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Ok(counts)
    }

    pub(super) async fn fetch_node(
        &self,
        conn: &mut sqlx::AnyConnection,
        uuid: Uuid,
    ) -> StoreResult<Node> {
        let row = sqlx::query(self.sql("SELECT {node_cols} FROM nodes WHERE uuid = $1"))
            .bind(uuid.to_string())
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| StoreError::NodeNotFound(uuid.to_string()))?;
        node_from_row(&row)
    }

    pub(super) fn map_unique(e: sqlx::Error, node: &NewNode, uuid: Uuid) -> StoreError {
        if let sqlx::Error::Database(db) = &e {
            if db.is_unique_violation() {
                let msg = format!("{} {}", db.message(), db.constraint().unwrap_or(""));
                if msg.contains("name") && !msg.contains("uuid") {
                    return StoreError::Duplicate {
                        field: "name",
                        value: node.name.clone().unwrap_or_default(),
                    };
                }
                if msg.contains("instance_uuid") {
                    return StoreError::Duplicate {
                        field: "instance_uuid",
                        value: String::new(),
                    };
                }
                return StoreError::Duplicate {
                    field: "uuid",
                    value: uuid.to_string(),
                };
            }
        }
        e.into()
    }
}

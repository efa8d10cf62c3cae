//! The lock of record (SPEC §4): grant, queue, poll, cancel, release with
//! grant-on-release, hand-off, break with audit, and the lock views of
//! `ferric lock list`. Every statement here is conditional on the fencing
//! token (holder, task, epoch).

use super::rows::*;
use super::SqlStore;
use crate::types::*;
use crate::wake::WakeSubscription;
use crate::{StoreError, StoreResult};
use ferric_core::{DbTime, Node};
use sqlx::any::AnyRow;
use sqlx::Row;
use std::time::Duration;
use uuid::Uuid;

/// `Store`'s lock methods (`*_impl`, called by the `Store` impl in
/// `mod.rs`) and their helpers.
impl SqlStore {
    pub(super) async fn try_acquire_impl(
        &self,
        node: Uuid,
        claim: &Claim,
    ) -> StoreResult<LockToken> {
        let granted = {
            let _g = self.write_guard().await;
            let mut conn = self.pool.acquire().await?;
            self.grant_returning(
                &mut conn,
                node,
                claim,
                " AND reservation IS NULL AND lock_waiters = 0",
            )
            .await?
        };
        match granted {
            Some(t) => Ok(t),
            None => Err(self.diagnose_locked(node, false).await),
        }
    }

    pub(super) async fn try_acquire_node_impl(
        &self,
        node: Uuid,
        claim: &Claim,
    ) -> StoreResult<(LockToken, Node)> {
        let row = {
            let _g = self.write_guard().await;
            sqlx::query(self.sql(
                "UPDATE nodes SET reservation = $1, lock_task = $2, lock_purpose = $3, \
                 lock_epoch = lock_epoch + 1, lock_acquired_at = {now} \
                 WHERE uuid = $4 AND reservation IS NULL AND lock_waiters = 0 \
                 RETURNING {node_cols}",
            ))
            .bind(&claim.holder)
            .bind(claim.task_id.to_string())
            .bind(&claim.purpose)
            .bind(node.to_string())
            .fetch_optional(&self.pool)
            .await?
        };
        match row {
            Some(r) => {
                let n = node_from_row(&r)?;
                let token = LockToken::held(&n)
                    .ok_or_else(|| StoreError::Corrupt("granted lock not on the row".into()))?;
                Ok((token, n))
            }
            None => Err(self.diagnose_locked(node, false).await),
        }
    }

    pub(super) async fn subscribe_wakeups_impl(
        &self,
        conductor: &str,
    ) -> StoreResult<WakeSubscription> {
        match self.backend {
            Backend::Postgres => {
                // The channel as the senders name it (migration 0008), in
                // this store's schema.
                let channel: String = sqlx::query("SELECT ferric_wake_channel($1) AS c")
                    .bind(conductor)
                    .fetch_one(&self.pool)
                    .await?
                    .try_get("c")?;
                let mut l = sqlx::postgres::PgListener::connect(&self.options.url).await?;
                l.listen(&channel).await?;
                Ok(WakeSubscription::listen(l))
            }
            Backend::Sqlite => match self.waker.as_ref().and_then(|w| w.bind(conductor)) {
                Some(socket) => Ok(WakeSubscription::socket(socket)),
                None => Ok(WakeSubscription::poll(self.pool.acquire().await?)),
            },
        }
    }

    pub(super) async fn enqueue_impl(
        &self,
        node: Uuid,
        claim: &Claim,
        wait: Option<Duration>,
        max_waiters: u32,
    ) -> StoreResult<Enqueued> {
        let _g = self.write_guard().await;
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(self.sql(
            "SELECT reservation, lock_waiters, {now} AS now FROM nodes WHERE uuid = $1{for_update}",
        ))
        .bind(node.to_string())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::NodeNotFound(node.to_string()))?;
        let reservation: Option<String> = row.try_get("reservation")?;
        let waiters: i64 = row.try_get("lock_waiters")?;
        let now: i64 = row.try_get("now")?;
        if reservation.is_none() && waiters == 0 {
            let token = self.grant_returning(&mut tx, node, claim, "").await?;
            tx.commit().await?;
            return token
                .map(Enqueued::Granted)
                .ok_or_else(|| StoreError::NodeNotFound(node.to_string()));
        }
        if waiters >= i64::from(max_waiters) {
            tx.rollback().await?;
            drop(_g);
            return Err(self.diagnose_locked(node, true).await);
        }
        let deadline = wait.map(|w| now.saturating_add(w.as_micros().min(i64::MAX as u128) as i64));
        let ticket: i64 = sqlx::query(self.sql(
            "INSERT INTO lock_waiters (node_uuid, conductor, task_id, purpose, exclusive, \
             enqueued_at, deadline) VALUES ($1, $2, $3, $4, TRUE, {now}, $5) RETURNING ticket",
        ))
        .bind(node.to_string())
        .bind(claim.holder.clone())
        .bind(claim.task_id.to_string())
        .bind(claim.purpose.clone())
        .bind(deadline)
        .fetch_one(&mut *tx)
        .await?
        .try_get("ticket")?;
        sqlx::query("UPDATE nodes SET lock_waiters = lock_waiters + 1 WHERE uuid = $1")
            .bind(node.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Enqueued::Queued {
            ticket,
            position: waiters + 1,
        })
    }

    pub(super) async fn poll_waiter_impl(
        &self,
        node: Uuid,
        ticket: i64,
        task_id: Uuid,
    ) -> StoreResult<WaitStatus> {
        Ok(self.poll_waiter_node_impl(node, ticket, task_id).await?.0)
    }

    pub(super) async fn poll_waiter_node_impl(
        &self,
        node: Uuid,
        ticket: i64,
        task_id: Uuid,
    ) -> StoreResult<(WaitStatus, Option<Node>)> {
        let row = sqlx::query(self.sql(
            "SELECT {node_cols}, \
             (SELECT COUNT(*) FROM lock_waiters w WHERE w.ticket = $1) AS queued \
             FROM nodes WHERE uuid = $2",
        ))
        .bind(ticket)
        .bind(node.to_string())
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NodeNotFound(node.to_string()))?;
        let n = node_from_row(&row)?;
        if let Some(token) = LockToken::held(&n).filter(|t| t.task_id == task_id) {
            return Ok((WaitStatus::Granted(token), Some(n)));
        }
        let queued: i64 = row.try_get("queued")?;
        Ok((
            if queued > 0 {
                WaitStatus::Waiting
            } else {
                WaitStatus::Gone
            },
            None,
        ))
    }

    pub(super) async fn cancel_wait_impl(
        &self,
        node: Uuid,
        ticket: i64,
        task_id: Uuid,
    ) -> StoreResult<Option<LockToken>> {
        let _g = self.write_guard().await;
        let mut tx = self.begin_write().await?;
        let row =
            sqlx::query(self.sql("SELECT {node_cols} FROM nodes WHERE uuid = $1{for_update}"))
                .bind(node.to_string())
                .fetch_optional(&mut *tx)
                .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(None);
        };
        let held = LockToken::held(&node_from_row(&row)?);
        let deleted = sqlx::query("DELETE FROM lock_waiters WHERE ticket = $1 AND task_id = $2")
            .bind(ticket)
            .bind(task_id.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 1 {
            sqlx::query("UPDATE nodes SET lock_waiters = lock_waiters - 1 WHERE uuid = $1")
                .bind(node.to_string())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(None);
        }
        tx.commit().await?;
        Ok(held.filter(|t| t.task_id == task_id))
    }

    pub(super) async fn release_impl(&self, token: &LockToken) -> StoreResult<Release> {
        if self.backend == Backend::Postgres {
            return self.release_pg(token).await;
        }
        let _g = self.write_guard().await;
        let fast = sqlx::query(
            "UPDATE nodes SET reservation = NULL, lock_task = NULL, lock_purpose = NULL, \
             lock_acquired_at = NULL WHERE uuid = $1 AND reservation = $2 AND lock_task = $3 \
             AND lock_epoch = $4 AND lock_waiters = 0",
        )
        .bind(token.node.to_string())
        .bind(token.holder.clone())
        .bind(token.task_id.to_string())
        .bind(token.epoch)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if fast == 1 {
            return Ok(Release::default());
        }
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(self.sql(
            "SELECT reservation, lock_task, lock_epoch FROM nodes WHERE uuid = $1{for_update}",
        ))
        .bind(token.node.to_string())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::NodeNotFound(token.node.to_string()))?;
        if !token_matches(&row, token)? {
            tx.rollback().await?;
            return Err(StoreError::NodeNotLocked {
                node: token.node,
                holder: token.holder.clone(),
                epoch: token.epoch,
                current: row.try_get("reservation")?,
            });
        }
        let release = self.handoff_held(&mut tx, token).await?;
        tx.commit().await?;
        self.wake_sqlite_grantee(token.node, &release);
        Ok(release)
    }

    /// [`Self::unlock_and_handoff`], plus the grantee's node row read in the
    /// granting transaction (handed to an in-process grantee).
    pub(super) async fn handoff_held(
        &self,
        tx: &mut sqlx::AnyConnection,
        token: &LockToken,
    ) -> StoreResult<Release> {
        let mut release = self
            .unlock_and_handoff(&mut *tx, token.node, &token.holder)
            .await?;
        if let Some(g) = release.granted_to.as_mut() {
            let row = sqlx::query(self.sql("SELECT {node_cols} FROM nodes WHERE uuid = $1"))
                .bind(token.node.to_string())
                .fetch_one(&mut *tx)
                .await?;
            g.node = Some(Box::new(node_from_row(&row)?));
        }
        Ok(release)
    }

    /// PostgreSQL: the whole release, contended or not, in one round trip
    /// (`ferric_release`, migration 0008): fenced fast path, or grant to the
    /// first live waiter with its notification and the granted node row.
    async fn release_pg(&self, token: &LockToken) -> StoreResult<Release> {
        let row = sqlx::query(
            "SELECT outcome, g_ticket, g_conductor, g_task, g_removed, (g_node).* \
             FROM ferric_release($1, $2, $3, $4, $5)",
        )
        .bind(token.node.to_string())
        .bind(token.holder.clone())
        .bind(token.task_id.to_string())
        .bind(token.epoch)
        .bind(self.heartbeat_timeout_us)
        .fetch_one(&self.pool)
        .await?;
        let outcome: String = row.try_get("outcome")?;
        let removed: i64 = row.try_get("g_removed")?;
        match outcome.as_str() {
            "released" => Ok(Release {
                granted_to: None,
                skipped_waiters: removed.max(0) as u32,
            }),
            "not_found" => Err(StoreError::NodeNotFound(token.node.to_string())),
            "not_locked" => Err(StoreError::NodeNotLocked {
                node: token.node,
                holder: token.holder.clone(),
                epoch: token.epoch,
                current: row.try_get("g_conductor")?,
            }),
            "granted" => {
                let node = node_from_row(&row)?;
                let task_id = parse_uuid(&row.try_get::<String, _>("g_task")?)?;
                let held = LockToken::held(&node)
                    .filter(|t| t.task_id == task_id)
                    .ok_or_else(|| StoreError::Corrupt("granted lock not on the row".into()))?;
                Ok(Release {
                    granted_to: Some(Grantee {
                        conductor: held.holder,
                        task_id,
                        ticket: row.try_get("g_ticket")?,
                        epoch: held.epoch,
                        node: Some(Box::new(node)),
                    }),
                    skipped_waiters: (removed - 1).max(0) as u32,
                })
            }
            other => Err(StoreError::Corrupt(format!(
                "ferric_release answered {other:?}"
            ))),
        }
    }

    pub(super) async fn handoff_impl(
        &self,
        token: &LockToken,
        to: &Claim,
    ) -> StoreResult<LockToken> {
        let _g = self.write_guard().await;
        let mut conn = self.pool.acquire().await?;
        let row = sqlx::query(self.sql(
            "UPDATE nodes SET reservation = $1, lock_task = $2, lock_purpose = $3, \
             lock_epoch = lock_epoch + 1, lock_acquired_at = {now} \
             WHERE uuid = $4 AND reservation = $5 AND lock_task = $6 AND lock_epoch = $7 \
             RETURNING lock_epoch, lock_acquired_at",
        ))
        .bind(to.holder.clone())
        .bind(to.task_id.to_string())
        .bind(to.purpose.clone())
        .bind(token.node.to_string())
        .bind(token.holder.clone())
        .bind(token.task_id.to_string())
        .bind(token.epoch)
        .fetch_optional(&mut *conn)
        .await?;
        match row {
            Some(r) => Ok(LockToken {
                node: token.node,
                holder: to.holder.clone(),
                task_id: to.task_id,
                epoch: r.try_get("lock_epoch")?,
                purpose: to.purpose.clone(),
                acquired_at: DbTime(r.try_get("lock_acquired_at")?),
            }),
            None => Err(self.diagnose_fenced(&mut conn, token).await),
        }
    }

    pub(super) async fn break_lock_impl(
        &self,
        node: Uuid,
        expected: &LockToken,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<Release> {
        let _g = self.write_guard().await;
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(self.sql(
            "SELECT reservation, lock_task, lock_epoch, lock_purpose FROM nodes \
             WHERE uuid = $1{for_update}",
        ))
        .bind(node.to_string())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::NodeNotFound(node.to_string()))?;
        if !token_matches(&row, expected)? {
            tx.rollback().await?;
            return Err(StoreError::NodeNotLocked {
                node,
                holder: expected.holder.clone(),
                epoch: expected.epoch,
                current: row.try_get("reservation")?,
            });
        }
        if let Some(a) = audit {
            sqlx::query(self.sql(
                "INSERT INTO lock_audit (node_uuid, action, actor, reason, previous_holder, \
                 previous_epoch, previous_purpose, at) VALUES ($1, $2, $3, $4, $5, $6, $7, {now})",
            ))
            .bind(node.to_string())
            .bind(a.action.clone())
            .bind(a.actor.clone())
            .bind(a.reason.clone())
            .bind(expected.holder.clone())
            .bind(expected.epoch)
            .bind(row.try_get::<Option<String>, _>("lock_purpose")?)
            .execute(&mut *tx)
            .await?;
        }
        let release = self
            .unlock_and_handoff(&mut tx, node, &expected.holder)
            .await?;
        tx.commit().await?;
        self.wake_sqlite_grantee(node, &release);
        Ok(release)
    }

    pub(super) async fn record_audit_impl(
        &self,
        previous: &LockToken,
        a: &AuditEntry,
    ) -> StoreResult<()> {
        let _g = self.write_guard().await;
        sqlx::query(self.sql(
            "INSERT INTO lock_audit (node_uuid, action, actor, reason, previous_holder, \
             previous_epoch, previous_purpose, at) VALUES ($1, $2, $3, $4, $5, $6, $7, {now})",
        ))
        .bind(previous.node.to_string())
        .bind(a.action.clone())
        .bind(a.actor.clone())
        .bind(a.reason.clone())
        .bind(previous.holder.clone())
        .bind(previous.epoch)
        .bind(previous.purpose.clone())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn lock_view_impl(&self, node: Uuid) -> StoreResult<LockView> {
        let row = sqlx::query(self.sql(
            "SELECT n.uuid, n.name, n.provision_state, n.reservation, n.lock_task, n.lock_epoch, \
             n.lock_purpose, n.lock_acquired_at, c.online, c.heartbeat_at, {now} AS now \
             FROM nodes n LEFT JOIN conductors c ON c.hostname = n.reservation WHERE n.uuid = $1",
        ))
        .bind(node.to_string())
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NodeNotFound(node.to_string()))?;
        let waiters = self.waiters_of(node).await?;
        self.lock_view_from(&row, waiters)
    }

    pub(super) async fn list_locks_impl(&self) -> StoreResult<Vec<LockView>> {
        let rows = sqlx::query(self.sql(
            "SELECT n.uuid, n.name, n.provision_state, n.reservation, n.lock_task, n.lock_epoch, \
             n.lock_purpose, n.lock_acquired_at, c.online, c.heartbeat_at, {now} AS now \
             FROM nodes n LEFT JOIN conductors c ON c.hostname = n.reservation \
             WHERE n.reservation IS NOT NULL OR n.lock_waiters > 0 ORDER BY n.uuid",
        ))
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let node = parse_uuid(&r.try_get::<String, _>("uuid")?)?;
            let waiters = self.waiters_of(node).await?;
            out.push(self.lock_view_from(r, waiters)?);
        }
        Ok(out)
    }

    pub(super) async fn list_audit_impl(&self, limit: u32) -> StoreResult<Vec<AuditRecord>> {
        let rows = sqlx::query(
            "SELECT id, node_uuid, action, actor, reason, previous_holder, previous_epoch, \
             previous_purpose, at FROM lock_audit ORDER BY id DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut out = rows
            .iter()
            .map(|r| {
                Ok(AuditRecord {
                    id: r.try_get("id")?,
                    node: parse_uuid(&r.try_get::<String, _>("node_uuid")?)?,
                    action: r.try_get("action")?,
                    actor: r.try_get("actor")?,
                    reason: r.try_get("reason")?,
                    previous_holder: r.try_get("previous_holder")?,
                    previous_epoch: r.try_get("previous_epoch")?,
                    previous_purpose: r.try_get("previous_purpose")?,
                    at: DbTime(r.try_get("at")?),
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        out.reverse();
        Ok(out)
    }

    /// Why a lock statement matched nothing: the node is missing or held.
    pub(super) async fn diagnose_locked(&self, node: Uuid, queue_full: bool) -> StoreError {
        let row = sqlx::query(self.sql(
            "SELECT reservation, lock_purpose, lock_acquired_at, lock_waiters, {now} AS now \
             FROM nodes WHERE uuid = $1",
        ))
        .bind(node.to_string())
        .fetch_optional(&self.pool)
        .await;
        match row {
            Err(e) => e.into(),
            Ok(None) => StoreError::NodeNotFound(node.to_string()),
            Ok(Some(r)) => {
                let now: i64 = r.try_get("now").unwrap_or(0);
                let since: Option<i64> = r.try_get("lock_acquired_at").unwrap_or(None);
                StoreError::NodeLocked {
                    node,
                    holder: r.try_get("reservation").unwrap_or(None),
                    purpose: r.try_get("lock_purpose").unwrap_or(None),
                    held_ms: since.map(|s| (now - s).max(0) / 1000).unwrap_or(0),
                    waiters: r.try_get("lock_waiters").unwrap_or(0),
                    queue_full,
                }
            }
        }
    }

    /// Why a fenced statement matched nothing: the node is missing or the lock was lost.
    pub(super) async fn diagnose_fenced(
        &self,
        conn: &mut sqlx::AnyConnection,
        token: &LockToken,
    ) -> StoreError {
        let row = sqlx::query("SELECT reservation FROM nodes WHERE uuid = $1")
            .bind(token.node.to_string())
            .fetch_optional(&mut *conn)
            .await;
        match row {
            Err(e) => e.into(),
            Ok(None) => StoreError::NodeNotFound(token.node.to_string()),
            Ok(Some(r)) => StoreError::LockLost {
                node: token.node,
                epoch: token.epoch,
                current: r.try_get("reservation").unwrap_or(None),
            },
        }
    }

    /// Clear the lock of `node` (caller holds the row in `tx`) and hand it to
    /// the first live waiter, deleting dead or expired waiters ahead of it.
    pub(super) async fn unlock_and_handoff(
        &self,
        tx: &mut sqlx::AnyConnection,
        node: Uuid,
        releaser: &str,
    ) -> StoreResult<Release> {
        if self.backend == Backend::Postgres {
            return self.unlock_and_handoff_pg(tx, node, releaser).await;
        }
        let rows = sqlx::query(self.sql(
            "SELECT w.ticket, w.conductor, w.task_id, w.purpose, w.deadline, c.online, \
             c.heartbeat_at, {now} AS now \
             FROM lock_waiters w LEFT JOIN conductors c ON c.hostname = w.conductor \
             WHERE w.node_uuid = $1 ORDER BY w.ticket",
        ))
        .bind(node.to_string())
        .fetch_all(&mut *tx)
        .await?;
        let mut skipped = 0u32;
        let mut grantee: Option<(i64, String, Uuid, String)> = None;
        let mut last_ticket = None;
        for r in &rows {
            let now: i64 = r.try_get("now")?;
            let ticket: i64 = r.try_get("ticket")?;
            let online = get_opt_bool(r, "online")?.unwrap_or(false);
            let live = self.live(
                now,
                r.try_get("deadline")?,
                online,
                r.try_get("heartbeat_at")?,
            );
            last_ticket = Some(ticket);
            if live {
                let task: String = r.try_get("task_id")?;
                grantee = Some((
                    ticket,
                    r.try_get("conductor")?,
                    parse_uuid(&task)?,
                    r.try_get("purpose")?,
                ));
                break;
            }
            skipped += 1;
        }
        let removed = skipped as i64 + i64::from(grantee.is_some());
        if let Some(upto) = last_ticket {
            sqlx::query("DELETE FROM lock_waiters WHERE node_uuid = $1 AND ticket <= $2")
                .bind(node.to_string())
                .bind(upto)
                .execute(&mut *tx)
                .await?;
        }
        match grantee {
            Some((ticket, conductor, task_id, purpose)) => {
                let epoch: i64 = sqlx::query(self.sql(
                    "UPDATE nodes SET reservation = $1, lock_task = $2, lock_purpose = $3, \
                     lock_epoch = lock_epoch + 1, lock_acquired_at = {now}, \
                     lock_waiters = lock_waiters - $4 WHERE uuid = $5 RETURNING lock_epoch",
                ))
                .bind(&conductor)
                .bind(task_id.to_string())
                .bind(purpose)
                .bind(removed)
                .bind(node.to_string())
                .fetch_one(&mut *tx)
                .await?
                .try_get("lock_epoch")?;
                // SQLite has no server push: the caller sends the grantee's
                // process a datagram once this commits (see `wake`).
                Ok(Release {
                    granted_to: Some(Grantee {
                        conductor,
                        task_id,
                        ticket,
                        epoch,
                        node: None,
                    }),
                    skipped_waiters: skipped,
                })
            }
            None => {
                sqlx::query(
                    "UPDATE nodes SET reservation = NULL, lock_task = NULL, lock_purpose = NULL, \
                     lock_acquired_at = NULL, lock_waiters = lock_waiters - $1 WHERE uuid = $2",
                )
                .bind(removed)
                .bind(node.to_string())
                .execute(&mut *tx)
                .await?;
                Ok(Release {
                    granted_to: None,
                    skipped_waiters: skipped,
                })
            }
        }
    }

    /// SQLite: tell the grantee's process, after the commit (see `wake`).
    pub(super) fn wake_sqlite_grantee(&self, node: Uuid, release: &Release) {
        if let (Some(w), Some(g)) = (&self.waker, &release.granted_to) {
            w.granted(&g.conductor, node, g.task_id);
        }
    }

    /// PostgreSQL: the same hand-off as [`Self::unlock_and_handoff`] in one
    /// data-modifying statement (fewer round trips on the contended path).
    /// Safe because the caller already holds the node row (`FOR UPDATE` in an
    /// earlier statement of this READ COMMITTED transaction), so this
    /// statement's snapshot sees every committed waiter of the node.
    pub(super) async fn unlock_and_handoff_pg(
        &self,
        tx: &mut sqlx::AnyConnection,
        node: Uuid,
        releaser: &str,
    ) -> StoreResult<Release> {
        let row = sqlx::query(self.sql(
            "WITH w AS ( \
               SELECT w.ticket, w.conductor, w.task_id, w.purpose, \
                 ((w.deadline IS NULL OR w.deadline > {now}) AND COALESCE(c.online, FALSE) \
                  AND COALESCE(c.heartbeat_at >= {now} - $1, FALSE)) AS live \
               FROM lock_waiters w LEFT JOIN conductors c ON c.hostname = w.conductor \
               WHERE w.node_uuid = $2), \
             head AS (SELECT ticket, conductor, task_id, purpose FROM w WHERE live \
                      ORDER BY ticket LIMIT 1), \
             gone AS (DELETE FROM lock_waiters d WHERE d.node_uuid = $2 AND d.ticket <= \
                        COALESCE((SELECT ticket FROM head), (SELECT MAX(ticket) FROM w)) \
                      RETURNING d.ticket), \
             upd AS (UPDATE nodes SET \
                       reservation = (SELECT conductor FROM head), \
                       lock_task = (SELECT task_id FROM head), \
                       lock_purpose = (SELECT purpose FROM head), \
                       lock_epoch = lock_epoch + (SELECT COUNT(*) FROM head), \
                       lock_acquired_at = CASE WHEN EXISTS (SELECT 1 FROM head) THEN {now} END, \
                       lock_waiters = lock_waiters - (SELECT COUNT(*) FROM gone) \
                     WHERE uuid = $2 RETURNING lock_epoch) \
             SELECT (SELECT ticket FROM head) AS ticket, (SELECT conductor FROM head) AS conductor, \
               (SELECT task_id FROM head) AS task_id, (SELECT lock_epoch FROM upd) AS epoch, \
               (SELECT COUNT(*) FROM gone) AS removed",
        ))
        .bind(self.heartbeat_timeout_us)
        .bind(node.to_string())
        .fetch_one(&mut *tx)
        .await?;
        let removed: i64 = row.try_get("removed")?;
        let conductor: Option<String> = row.try_get("conductor")?;
        let Some(conductor) = conductor else {
            return Ok(Release {
                granted_to: None,
                skipped_waiters: removed as u32,
            });
        };
        let task_id = parse_uuid(&row.try_get::<String, _>("task_id")?)?;
        let ticket: i64 = row.try_get("ticket")?;
        let epoch: i64 = row.try_get("epoch")?;
        if conductor != releaser {
            // Delivered when this transaction commits, i.e. with the grant.
            sqlx::query("SELECT pg_notify(ferric_wake_channel($1), $2)")
                .bind(&conductor)
                .bind(format!("{node} {task_id}"))
                .execute(&mut *tx)
                .await?;
        }
        Ok(Release {
            granted_to: Some(Grantee {
                conductor,
                task_id,
                ticket,
                epoch,
                node: None,
            }),
            skipped_waiters: (removed - 1).max(0) as u32,
        })
    }

    pub(super) async fn grant_returning(
        &self,
        conn: &mut sqlx::AnyConnection,
        node: Uuid,
        claim: &Claim,
        condition: &str,
    ) -> StoreResult<Option<LockToken>> {
        let sql = format!(
            "UPDATE nodes SET reservation = $1, lock_task = $2, lock_purpose = $3, \
             lock_epoch = lock_epoch + 1, lock_acquired_at = {{now}} \
             WHERE uuid = $4{condition} RETURNING lock_epoch, lock_acquired_at"
        );
        let row = sqlx::query(self.sql(&sql))
            .bind(&claim.holder)
            .bind(claim.task_id.to_string())
            .bind(&claim.purpose)
            .bind(node.to_string())
            .fetch_optional(&mut *conn)
            .await?;
        row.map(|r| {
            Ok(LockToken {
                node,
                holder: claim.holder.clone(),
                task_id: claim.task_id,
                epoch: r.try_get("lock_epoch")?,
                purpose: claim.purpose.clone(),
                acquired_at: DbTime(r.try_get("lock_acquired_at")?),
            })
        })
        .transpose()
    }

    pub(super) fn lock_view_from(
        &self,
        r: &AnyRow,
        waiters: Vec<WaiterView>,
    ) -> StoreResult<LockView> {
        let now: i64 = r.try_get("now")?;
        let since: Option<i64> = r.try_get("lock_acquired_at")?;
        let task: Option<String> = r.try_get("lock_task")?;
        let holder: Option<String> = r.try_get("reservation")?;
        let holder_online = if holder.is_some() {
            let online = get_opt_bool(r, "online")?.unwrap_or(false);
            Some(self.live(now, None, online, r.try_get("heartbeat_at")?))
        } else {
            None
        };
        Ok(LockView {
            node: parse_uuid(&r.try_get::<String, _>("uuid")?)?,
            node_name: r.try_get("name")?,
            provision_state: r.try_get("provision_state")?,
            holder,
            task_id: task.as_deref().map(parse_uuid).transpose()?,
            holder_online,
            purpose: r.try_get("lock_purpose")?,
            epoch: r.try_get("lock_epoch")?,
            held_ms: since.map(|s| (now - s).max(0) / 1000),
            waiters,
            now: DbTime(now),
        })
    }

    pub(super) async fn waiters_of(&self, node: Uuid) -> StoreResult<Vec<WaiterView>> {
        let rows = sqlx::query(self.sql(
            "SELECT w.ticket, w.conductor, w.task_id, w.purpose, w.enqueued_at, w.deadline, \
             c.online, c.heartbeat_at, {now} AS now \
             FROM lock_waiters w LEFT JOIN conductors c ON c.hostname = w.conductor \
             WHERE w.node_uuid = $1 ORDER BY w.ticket",
        ))
        .bind(node.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let now: i64 = r.try_get("now")?;
                let deadline: Option<i64> = r.try_get("deadline")?;
                let online = get_opt_bool(r, "online")?.unwrap_or(false);
                Ok(WaiterView {
                    ticket: r.try_get("ticket")?,
                    conductor: r.try_get("conductor")?,
                    task_id: parse_uuid(&r.try_get::<String, _>("task_id")?)?,
                    purpose: r.try_get("purpose")?,
                    enqueued_at: DbTime(r.try_get("enqueued_at")?),
                    deadline: deadline.map(DbTime),
                    live: self.live(now, deadline, online, r.try_get("heartbeat_at")?),
                })
            })
            .collect()
    }
}

//! Revisions and the change feed: the one-row revision counter, taken last
//! by every node write, and the `node_changes` rows written with it.

use super::rows::*;
use super::SqlStore;
use crate::resource::{Resource, ResourceChange, ResourceKind};
use crate::types::*;
use crate::{StoreError, StoreResult};
use ferric_core::{DbTime, Node};
use sqlx::{AssertSqlSafe, Row};
use std::time::Duration;
use tokio::sync::OwnedMutexGuard;
use uuid::Uuid;

/// A write transaction's turn at the revision counter within this process
/// (PostgreSQL; a no-op on SQLite, whose write gate already admits one
/// writer per process).
///
/// The counter's row lock is held from a write's revision stamp to its
/// commit. Without turns, every writer of a process queues for that row
/// lock in PostgreSQL; if the process is then frozen (SIGSTOP, a stalled
/// VM), PostgreSQL grants the lock to its queued sessions one after the
/// other as each previous one is ended by `idle_in_transaction_session_timeout`,
/// and the rest of the cluster waits one timeout per queued session. With
/// turns, at most one session per process is in that queue; the others wait
/// in the process, idle in their transactions, and are ended together.
///
/// While it waits, a live process keeps its session from being ended
/// (`SELECT 1` every [`SqlStore::counter_turn_keepalive`]); a frozen one
/// sends nothing. The turn is an ordering aid, never the serialiser (the
/// row lock is): a transaction that waited [`COUNTER_TURN_FALLBACK`] goes to
/// the row lock without one. That bounds any wait cycle the database cannot
/// see (a turn holder blocked on a row that a turn waiter locked earlier in
/// its transaction); PostgreSQL's deadlock detection then sees the whole
/// graph. Taken once per transaction and held until dropped (after the
/// commit), so a transaction that stamps several rows asks once.
#[derive(Default)]
pub(super) struct CounterTurn {
    asked: bool,
    _held: Option<OwnedMutexGuard<()>>,
}

/// See [`CounterTurn`]: hundreds of turns' worth (a stamp, a change row and
/// a commit each), far shorter than `lock_timeout`.
pub(super) const COUNTER_TURN_FALLBACK: Duration = Duration::from_secs(2);

/// The longest pause between a turn waiter's keepalives.
const COUNTER_TURN_KEEPALIVE_MAX: Duration = Duration::from_millis(250);

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

    /// This transaction's turn at the counter (see [`CounterTurn`]); call
    /// before every statement that takes the counter.
    pub(super) async fn counter_turn(
        &self,
        conn: &mut sqlx::AnyConnection,
        turn: &mut CounterTurn,
    ) -> StoreResult<()> {
        if turn.asked {
            return Ok(());
        }
        turn.asked = true;
        let Some(gate) = &self.counter_gate else {
            return Ok(());
        };
        if let Ok(held) = gate.clone().try_lock_owned() {
            turn._held = Some(held);
            return Ok(());
        }
        tracing::debug!("waiting for a turn at the revision counter");
        let deadline = tokio::time::Instant::now() + COUNTER_TURN_FALLBACK;
        let keepalive = self.counter_turn_keepalive();
        // One acquire future throughout: tokio's mutex is FIFO and the
        // future keeps its place in the queue across the keepalives.
        let mut acquire = std::pin::pin!(gate.clone().lock_owned());
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                tracing::debug!(
                    "no turn at the revision counter within {COUNTER_TURN_FALLBACK:?}; \
                     queueing in the database"
                );
                return Ok(());
            }
            match tokio::time::timeout(keepalive.min(left), acquire.as_mut()).await {
                Ok(held) => {
                    turn._held = Some(held);
                    return Ok(());
                }
                Err(_) => {
                    sqlx::query("SELECT 1").execute(&mut *conn).await?;
                }
            }
        }
    }

    /// The pause between a turn waiter's keepalives: a quarter of the
    /// session's `idle_in_transaction_session_timeout`, at most
    /// [`COUNTER_TURN_KEEPALIVE_MAX`].
    fn counter_turn_keepalive(&self) -> Duration {
        let idle = self.options.pg_session.idle_in_transaction_timeout;
        if idle.is_zero() {
            return COUNTER_TURN_KEEPALIVE_MAX;
        }
        COUNTER_TURN_KEEPALIVE_MAX.min(idle / 4)
    }

    pub(super) async fn bump_revision(
        &self,
        conn: &mut sqlx::AnyConnection,
        turn: &mut CounterTurn,
    ) -> StoreResult<i64> {
        let rev = self.bump_revisions(conn, 1, turn).await?;
        #[cfg(feature = "testing")]
        crate::testing::hold_revision_if_triggered().await;
        Ok(rev)
    }

    /// Take `count` revisions at once; returns the last (they are
    /// `last - count + 1 ..= last`). The counter is held from here to the
    /// commit: call after every other row write of the transaction.
    pub(super) async fn bump_revisions(
        &self,
        conn: &mut sqlx::AnyConnection,
        count: i64,
        turn: &mut CounterTurn,
    ) -> StoreResult<i64> {
        self.counter_turn(conn, turn).await?;
        let last: i64 = sqlx::query(
            "UPDATE revision_counter SET value = value + $1 WHERE id = 1 RETURNING value",
        )
        .bind(count)
        .fetch_one(&mut *conn)
        .await?
        .try_get("value")?;
        Ok(last)
    }

    /// Write each node's `revision` (already assigned) to its row, in
    /// multi-row statements.
    pub(super) async fn write_revisions(
        &self,
        conn: &mut sqlx::AnyConnection,
        nodes: &[&Node],
    ) -> StoreResult<()> {
        for chunk in nodes.chunks(self.bulk_rows()) {
            let mut q = sqlx::query(AssertSqlSafe(format!(
                "UPDATE nodes SET revision = v.column2 FROM (VALUES {}) AS v \
                 WHERE nodes.uuid = v.column1",
                Self::values_marks(chunk.len(), 2)
            )));
            for node in chunk {
                q = q.bind(node.uuid.to_string()).bind(node.revision);
            }
            q.execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// Bump the revision counter and stamp `node` with the new revision;
    /// one statement on PostgreSQL, two on SQLite (whose writers are
    /// serialised by the database anyway).
    pub(super) async fn stamp_revision(
        &self,
        conn: &mut sqlx::AnyConnection,
        node: Uuid,
        turn: &mut CounterTurn,
    ) -> StoreResult<i64> {
        if self.backend == Backend::Postgres {
            self.counter_turn(conn, turn).await?;
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
        let rev = self.bump_revision(conn, turn).await?;
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

#[cfg(all(test, feature = "testing"))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::testing::{Engine, TestStore};
    use std::time::Instant;

    /// A write waiting for its turn in a live process outlasts the server's
    /// `idle_in_transaction_session_timeout`: its keepalives keep the
    /// session, it gets its turn in order and commits.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_turn_waiter_in_a_live_process_keeps_its_session() {
        let Some(ts) = TestStore::open(Engine::Postgres).await else {
            return;
        };
        let s = ts.store.clone();
        let idle = s.options.pg_session.idle_in_transaction_timeout;
        assert!(!idle.is_zero());
        let mut holder_turn = CounterTurn::default();
        let mut holder = s.pool.begin().await.unwrap();
        s.counter_turn(&mut holder, &mut holder_turn).await.unwrap();
        assert!(holder_turn._held.is_some(), "an idle gate gives the turn");
        let waiter = {
            let s = s.clone();
            tokio::spawn(async move {
                let mut turn = CounterTurn::default();
                let mut tx = s.pool.begin().await?;
                sqlx::query("SELECT 1").execute(&mut *tx).await?;
                let asked = Instant::now();
                s.counter_turn(&mut tx, &mut turn).await?;
                let waited = asked.elapsed();
                let held = turn._held.is_some();
                s.bump_revision(&mut tx, &mut turn).await?;
                tx.commit().await?;
                Ok::<_, StoreError>((waited, held))
            })
        };
        // The holder keeps the turn for 1.5 × the timeout, alive itself.
        let until = Instant::now() + idle * 3 / 2;
        while Instant::now() < until {
            tokio::time::sleep(idle / 5).await;
            sqlx::query("SELECT 1").execute(&mut *holder).await.unwrap();
        }
        holder.commit().await.unwrap();
        drop(holder_turn);
        let (waited, held) = waiter.await.unwrap().unwrap();
        assert!(held, "the waiter got its turn (waited {waited:?})");
        assert!(
            waited >= idle,
            "the waiter waited {waited:?}, less than {idle:?}"
        );
        ts.cleanup().await;
    }
}

//! The SQL implementation of [`Store`] for SQLite and PostgreSQL.
//!
//! One code path serves both engines through sqlx's `Any` driver. The only
//! dialect differences are rendered into the statement text: the database
//! clock (`{now}`), row locks (`{for_update}`) and how a write transaction
//! begins (`BEGIN IMMEDIATE` on SQLite). Parameters are written `$1, $2, ...`
//! and must first appear in increasing order (SQLite numbers named
//! parameters by first appearance).
//!
//! One exception: on a SQLite file, node list pages are read through a small
//! second pool on sqlx's native SQLite driver (same statement text, same row
//! decoder), because the `Any` driver's per-row conversion cost half of a
//! 100k-node detail list. Everything else, and every write, uses `Any`.

use crate::types::*;
use crate::wake::WakeSubscription;
use crate::{Store, StoreError, StoreResult};
use async_trait::async_trait;
use ferric_core::{DbTime, NewNode, Node, PowerState, ProvisionState, Reservation};
use serde_json::{Map, Value};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{Any, AnyPool, AssertSqlSafe, ColumnIndex, Decode, Executor, Row, Transaction, Type};
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, MutexGuard};
use uuid::Uuid;

mod raw;

/// How to open a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// `sqlite://PATH` (created if missing) or `postgres://...`.
    pub url: String,
    /// Connection pool size.
    pub max_connections: u32,
    /// A conductor whose heartbeat is older than this is dead (database clock).
    pub heartbeat_timeout: Duration,
    /// PostgreSQL only: the schema to use (created if missing). Tests use one
    /// schema each; production leaves this `None` (the `public` schema).
    pub pg_schema: Option<String>,
    /// How long a SQLite connection waits for another process's write lock.
    pub sqlite_busy_timeout: Duration,
}

impl StoreOptions {
    /// Options with defaults for everything but the URL.
    pub fn new(url: impl Into<String>) -> Self {
        StoreOptions {
            url: url.into(),
            max_connections: 8,
            heartbeat_timeout: Duration::from_secs(60),
            pg_schema: None,
            sqlite_busy_timeout: Duration::from_secs(10),
        }
    }
}

struct Dialect {
    now: &'static str,
    for_update: &'static str,
}

const SQLITE: Dialect = Dialect {
    now: "CAST(unixepoch('subsec') * 1000000 AS INTEGER)",
    for_update: "",
};

const POSTGRES: Dialect = Dialect {
    now: "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)",
    for_update: " FOR UPDATE",
};

/// The SQL store. Cheap to clone behind an `Arc`.
pub struct SqlStore {
    pool: AnyPool,
    /// SQLite files only: a second pool on sqlx's native SQLite driver for
    /// node list pages. The `Any` driver converts every row, value and
    /// column descriptor into its own types before we decode; that was half
    /// of a full detail list of 100k nodes (see BENCHMARKS.md). Reads only:
    /// every write still goes through `pool` and the write gate.
    sqlite_reads: Option<SqlitePool>,
    backend: Backend,
    dialect: &'static Dialect,
    /// SQLite: one writer at a time per process, queued fairly (tokio's mutex
    /// is FIFO) instead of spinning in SQLite's busy handler.
    write_gate: Option<Arc<Mutex<()>>>,
    heartbeat_timeout_us: i64,
    options: StoreOptions,
}

/// A page of the change feed: `$1` = after this revision, `$2` = limit.
const CHANGES_PAGE: &str = "SELECT revision, node_uuid, kind, changed_at, snapshot \
    FROM node_changes WHERE revision > $1 ORDER BY revision LIMIT $2";

const NODE_COLS: &str = "uuid, name, driver, driver_info, properties, extra, instance_info, \
    instance_uuid, interfaces, provision_state, target_provision_state, power_state, \
    target_power_state, maintenance, maintenance_reason, last_error, conductor_group, \
    conductor_affinity, reservation, lock_task, lock_epoch, lock_purpose, lock_acquired_at, \
    lock_waiters, revision, created_at, updated_at, provision_updated_at, \
    driver_internal_info, clean_step, deploy_step";

impl SqlStore {
    /// Connect, apply migrations and return the store.
    pub async fn open(options: StoreOptions) -> StoreResult<SqlStore> {
        sqlx::any::install_default_drivers();
        let url = options.url.clone();
        let (backend, dialect, url) = if let Some(rest) = url.strip_prefix("sqlite:") {
            let mut u = format!("sqlite:{rest}");
            if !u.contains("mode=") && !u.contains(":memory:") {
                u.push_str(if u.contains('?') {
                    "&mode=rwc"
                } else {
                    "?mode=rwc"
                });
            }
            (Backend::Sqlite, &SQLITE, u)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            (Backend::Postgres, &POSTGRES, url)
        } else {
            return Err(StoreError::Invalid(format!(
                "unsupported database URL {url:?}: expected sqlite://PATH or postgres://..."
            )));
        };
        if let (Backend::Postgres, Some(schema)) = (backend, &options.pg_schema) {
            if !schema
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(StoreError::Invalid(format!(
                    "invalid schema name {schema:?}"
                )));
            }
        }
        let busy_ms = options.sqlite_busy_timeout.as_millis();
        let schema = options.pg_schema.clone();
        let pool = AnyPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _meta| {
                let setup = match backend {
                    Backend::Sqlite => format!(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                         PRAGMA foreign_keys = ON; PRAGMA busy_timeout = {busy_ms};"
                    ),
                    Backend::Postgres => match &schema {
                        Some(s) => format!(
                            "CREATE SCHEMA IF NOT EXISTS \"{s}\"; SET search_path TO \"{s}\";"
                        ),
                        None => String::new(),
                    },
                };
                Box::pin(async move {
                    if !setup.is_empty() {
                        conn.execute(AssertSqlSafe(setup)).await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        let migrator = match backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite"),
            Backend::Postgres => sqlx::migrate!("./migrations/postgres"),
        };
        migrator.run(&pool).await?;
        let sqlite_reads = match backend {
            Backend::Sqlite if !url.contains(":memory:") && !url.contains("mode=memory") => {
                Some(Self::open_sqlite_reads(&url, &options).await?)
            }
            _ => None,
        };
        Ok(SqlStore {
            pool,
            sqlite_reads,
            backend,
            dialect,
            write_gate: (backend == Backend::Sqlite).then(|| Arc::new(Mutex::new(()))),
            heartbeat_timeout_us: options.heartbeat_timeout.as_micros() as i64,
            options,
        })
    }

    /// The native read pool over the same SQLite file (after migrations, so
    /// the schema exists). WAL readers see every committed write.
    async fn open_sqlite_reads(url: &str, options: &StoreOptions) -> StoreResult<SqlitePool> {
        let connect = SqliteConnectOptions::from_str(url)?
            .create_if_missing(false)
            .busy_timeout(options.sqlite_busy_timeout)
            .foreign_keys(true);
        Ok(SqlitePoolOptions::new()
            .max_connections(options.max_connections.clamp(1, 4))
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(connect)
            .await?)
    }

    /// The options this store was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.options
    }

    /// Drop a PostgreSQL schema and everything in it (test clean-up).
    #[doc(hidden)]
    pub async fn drop_schema(&self, schema: &str) -> StoreResult<()> {
        if !schema
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(StoreError::Invalid(format!(
                "invalid schema name {schema:?}"
            )));
        }
        sqlx::query(AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
        )))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The raw limit for benchmarks: one conditional grant UPDATE and one
    /// conditional release UPDATE, nothing else. Returns whether both matched.
    #[doc(hidden)]
    pub async fn raw_update_pair(&self, node: Uuid, holder: &str) -> StoreResult<bool> {
        let _g = self.write_guard().await;
        let a = sqlx::query(
            "UPDATE nodes SET reservation = $1, lock_epoch = lock_epoch + 1 \
             WHERE uuid = $2 AND reservation IS NULL",
        )
        .bind(holder.to_string())
        .bind(node.to_string())
        .execute(&self.pool)
        .await?
        .rows_affected();
        let b =
            sqlx::query("UPDATE nodes SET reservation = NULL WHERE uuid = $1 AND reservation = $2")
                .bind(node.to_string())
                .bind(holder.to_string())
                .execute(&self.pool)
                .await?
                .rows_affected();
        Ok(a == 1 && b == 1)
    }

    /// Close every connection.
    pub async fn close(&self) {
        if let Some(reads) = &self.sqlite_reads {
            reads.close().await;
        }
        self.pool.close().await;
    }

    fn sql(&self, template: &str) -> AssertSqlSafe<String> {
        AssertSqlSafe(
            template
                .replace("{now}", self.dialect.now)
                .replace("{for_update}", self.dialect.for_update)
                .replace("{node_cols}", NODE_COLS),
        )
    }

    async fn write_guard(&self) -> Option<MutexGuard<'_, ()>> {
        match &self.write_gate {
            Some(m) => Some(m.lock().await),
            None => None,
        }
    }

    async fn begin_write(&self) -> StoreResult<Transaction<'static, Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    async fn begin_read(&self) -> StoreResult<Transaction<'static, Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin().await?,
            Backend::Postgres => {
                self.pool
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await?
            }
        })
    }

    fn live(
        &self,
        now: i64,
        deadline: Option<i64>,
        online: bool,
        heartbeat_at: Option<i64>,
    ) -> bool {
        deadline.is_none_or(|d| d > now)
            && online
            && heartbeat_at.is_some_and(|h| h >= now - self.heartbeat_timeout_us)
    }

    /// Why a lock statement matched nothing: the node is missing or held.
    async fn diagnose_locked(&self, node: Uuid, queue_full: bool) -> StoreError {
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
    async fn diagnose_fenced(
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

    /// Rows per multi-row statement. SQLite looks up each bound parameter's
    /// name with a linear scan (sqlite3_bind_parameter_name), so binding
    /// costs grow with the square of a statement's parameters: 500 rows per
    /// statement spent most of an enrolment there. PostgreSQL has no such
    /// cost; fewer round trips win.
    fn bulk_rows(&self) -> usize {
        match self.backend {
            Backend::Sqlite => 50,
            Backend::Postgres => 500,
        }
    }

    /// `VALUES` rows of `width` parameters each, numbered from `$1`.
    fn values_marks(rows: usize, width: usize) -> String {
        (0..rows)
            .map(|i| {
                let marks: Vec<String> =
                    (1..=width).map(|k| format!("${}", i * width + k)).collect();
                format!("({})", marks.join(", "))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// One change-feed entry per node, each at the node's own `revision`
    /// and with its snapshot, in multi-row statements.
    async fn record_changes(
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

    async fn bump_revision(&self, conn: &mut sqlx::AnyConnection) -> StoreResult<i64> {
        let rev: i64 = sqlx::query(
            "UPDATE revision_counter SET value = value + 1 WHERE id = 1 RETURNING value",
        )
        .fetch_one(&mut *conn)
        .await?
        .try_get("value")?;
        Ok(rev)
    }

    /// Bump the revision counter and stamp `node` with the new revision;
    /// one statement on PostgreSQL, two on SQLite (whose writers are
    /// serialised by the database anyway).
    async fn stamp_revision(&self, conn: &mut sqlx::AnyConnection, node: Uuid) -> StoreResult<i64> {
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

    async fn record_change(
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

    async fn fetch_node(&self, conn: &mut sqlx::AnyConnection, uuid: Uuid) -> StoreResult<Node> {
        let row = sqlx::query(self.sql("SELECT {node_cols} FROM nodes WHERE uuid = $1"))
            .bind(uuid.to_string())
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| StoreError::NodeNotFound(uuid.to_string()))?;
        node_from_row(&row)
    }

    /// Clear the lock of `node` (caller holds the row in `tx`) and hand it to
    /// the first live waiter, deleting dead or expired waiters ahead of it.
    async fn unlock_and_handoff(
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
                // SQLite has no server push: the grantee's conductor polls
                // data_version (see `wake`).
                Ok(Release {
                    granted_to: Some(Grantee {
                        conductor,
                        task_id,
                        ticket,
                        epoch,
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

    /// PostgreSQL: the same hand-off as [`Self::unlock_and_handoff`] in one
    /// data-modifying statement (fewer round trips on the contended path).
    /// Safe because the caller already holds the node row (`FOR UPDATE` in an
    /// earlier statement of this READ COMMITTED transaction), so this
    /// statement's snapshot sees every committed waiter of the node.
    async fn unlock_and_handoff_pg(
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
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(crate::wake::wake_channel(
                    self.options.pg_schema.as_deref(),
                    &conductor,
                ))
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
            }),
            skipped_waiters: (removed - 1).max(0) as u32,
        })
    }

    async fn grant_returning(
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

    fn map_unique(e: sqlx::Error, node: &NewNode, uuid: Uuid) -> StoreError {
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

    fn lock_view_from(&self, r: &AnyRow, waiters: Vec<WaiterView>) -> StoreResult<LockView> {
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

    async fn waiters_of(&self, node: Uuid) -> StoreResult<Vec<WaiterView>> {
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

fn token_matches(r: &AnyRow, token: &LockToken) -> StoreResult<bool> {
    let holder: Option<String> = r.try_get("reservation")?;
    let task: Option<String> = r.try_get("lock_task")?;
    let epoch: i64 = r.try_get("lock_epoch")?;
    Ok(holder.as_deref() == Some(token.holder.as_str())
        && task.as_deref() == Some(token.task_id.to_string().as_str())
        && epoch == token.epoch)
}

fn parse_uuid(s: &str) -> StoreResult<Uuid> {
    Uuid::parse_str(s).map_err(|e| StoreError::Corrupt(format!("bad uuid {s:?}: {e}")))
}

fn get_opt_bool<'r, R>(r: &'r R, col: &'static str) -> StoreResult<Option<bool>>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    bool: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    if let Ok(v) = r.try_get::<Option<bool>, _>(col) {
        return Ok(v);
    }
    let v: Option<i64> = r.try_get(col)?;
    Ok(v.map(|i| i != 0))
}

fn json_map(s: &str, col: &str) -> StoreResult<Map<String, Value>> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("{col}: {e}")))
}

fn json_text<T: serde::Serialize>(v: &T) -> StoreResult<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Invalid(e.to_string()))
}

fn opt_enum<T: FromStr>(v: Option<String>, col: &str) -> StoreResult<Option<T>> {
    v.map(|s| {
        s.parse::<T>()
            .map_err(|_| StoreError::Corrupt(format!("{col}: unknown value {s:?}")))
    })
    .transpose()
}

/// A node from a row of `{node_cols}`, on either driver (the `Any` pool or
/// the native SQLite read pool).
fn node_from_row<'r, R>(r: &'r R) -> StoreResult<Node>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    bool: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let uuid = parse_uuid(&r.try_get::<String, _>("uuid")?)?;
    let reservation = match (
        r.try_get::<Option<String>, _>("reservation")?,
        r.try_get::<Option<String>, _>("lock_task")?,
    ) {
        (Some(holder), task) => Some(Reservation {
            holder,
            task_id: task
                .as_deref()
                .map(parse_uuid)
                .transpose()?
                .unwrap_or_default(),
            epoch: r.try_get("lock_epoch")?,
            purpose: r
                .try_get::<Option<String>, _>("lock_purpose")?
                .unwrap_or_default(),
            acquired_at: DbTime(
                r.try_get::<Option<i64>, _>("lock_acquired_at")?
                    .unwrap_or(0),
            ),
        }),
        (None, _) => None,
    };
    let interfaces: BTreeMap<String, String> =
        serde_json::from_str(&r.try_get::<String, _>("interfaces")?)
            .map_err(|e| StoreError::Corrupt(format!("interfaces: {e}")))?;
    let provision_state: String = r.try_get("provision_state")?;
    Ok(Node {
        uuid,
        name: r.try_get("name")?,
        driver: r.try_get("driver")?,
        driver_info: json_map(&r.try_get::<String, _>("driver_info")?, "driver_info")?,
        properties: json_map(&r.try_get::<String, _>("properties")?, "properties")?,
        extra: json_map(&r.try_get::<String, _>("extra")?, "extra")?,
        instance_info: json_map(&r.try_get::<String, _>("instance_info")?, "instance_info")?,
        instance_uuid: r
            .try_get::<Option<String>, _>("instance_uuid")?
            .as_deref()
            .map(parse_uuid)
            .transpose()?,
        interfaces,
        driver_internal_info: json_map(
            &r.try_get::<String, _>("driver_internal_info")?,
            "driver_internal_info",
        )?,
        clean_step: json_map(&r.try_get::<String, _>("clean_step")?, "clean_step")?,
        deploy_step: json_map(&r.try_get::<String, _>("deploy_step")?, "deploy_step")?,
        provision_state: ProvisionState::from_str(&provision_state)
            .map_err(|_| StoreError::Corrupt(format!("provision_state {provision_state:?}")))?,
        target_provision_state: opt_enum(
            r.try_get("target_provision_state")?,
            "target_provision_state",
        )?,
        power_state: opt_enum::<PowerState>(r.try_get("power_state")?, "power_state")?,
        target_power_state: opt_enum::<PowerState>(
            r.try_get("target_power_state")?,
            "target_power_state",
        )?,
        maintenance: get_opt_bool(r, "maintenance")?.unwrap_or(false),
        maintenance_reason: r.try_get("maintenance_reason")?,
        last_error: r.try_get("last_error")?,
        conductor_group: r.try_get("conductor_group")?,
        conductor_affinity: r.try_get("conductor_affinity")?,
        reservation,
        lock_epoch: r.try_get("lock_epoch")?,
        lock_waiters: r.try_get("lock_waiters")?,
        revision: r.try_get("revision")?,
        created_at: DbTime(r.try_get("created_at")?),
        updated_at: r.try_get::<Option<i64>, _>("updated_at")?.map(DbTime),
        provision_updated_at: r
            .try_get::<Option<i64>, _>("provision_updated_at")?
            .map(DbTime),
    })
}

#[async_trait]
impl Store for SqlStore {
    fn backend(&self) -> Backend {
        self.backend
    }

    async fn now(&self) -> StoreResult<DbTime> {
        let now: i64 = sqlx::query(self.sql("SELECT {now} AS now"))
            .fetch_one(&self.pool)
            .await?
            .try_get("now")?;
        Ok(DbTime(now))
    }

    async fn create_node(&self, mut new: NewNode) -> StoreResult<Node> {
        new.validate()
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        let uuid = new.uuid.unwrap_or_else(Uuid::new_v4);
        let state = new.provision_state.unwrap_or(ProvisionState::Enroll);
        let _g = self.write_guard().await;
        let mut tx = self.begin_write().await?;
        let rev = self.bump_revision(&mut tx).await?;
        sqlx::query(self.sql(
            "INSERT INTO nodes (uuid, name, driver, driver_info, properties, extra, interfaces, \
             provision_state, conductor_group, revision, created_at, updated_at, provision_updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, {now}, {now}, {now})",
        ))
        .bind(uuid.to_string())
        .bind(new.name.clone())
        .bind(new.driver.clone())
        .bind(json_text(&new.driver_info)?)
        .bind(json_text(&new.properties)?)
        .bind(json_text(&new.extra)?)
        .bind(json_text(&new.interfaces)?)
        .bind(state.as_str())
        .bind(new.conductor_group.clone())
        .bind(rev)
        .execute(&mut *tx)
        .await
        .map_err(|e| Self::map_unique(e, &new, uuid))?;
        let node = self.fetch_node(&mut tx, uuid).await?;
        self.record_change(&mut tx, rev, uuid, ChangeKind::Created, Some(&node))
            .await?;
        tx.commit().await?;
        Ok(node)
    }

    /// One transaction: revisions reserved in one statement, nodes inserted
    /// and read back and their change rows written in multi-row statements
    /// of `bulk_rows` rows. All or nothing.
    async fn create_nodes(&self, nodes: Vec<NewNode>) -> StoreResult<usize> {
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
        let mut tx = self.begin_write().await?;
        let last: i64 = sqlx::query(AssertSqlSafe(format!(
            "UPDATE revision_counter SET value = value + {count} WHERE id = 1 RETURNING value"
        )))
        .fetch_one(&mut *tx)
        .await?
        .try_get("value")?;
        let first = last - count + 1;
        for (chunk_no, chunk) in prepared.chunks(bulk_rows).enumerate() {
            let base_rev = first + (chunk_no * bulk_rows) as i64;
            let mut sql = String::from(
                "INSERT INTO nodes (uuid, name, driver, driver_info, properties, extra, interfaces, \
                 provision_state, conductor_group, revision, created_at, updated_at, provision_updated_at) VALUES ",
            );
            for i in 0..chunk.len() {
                let b = i * 10;
                if i > 0 {
                    sql.push_str(", ");
                }
                let marks: Vec<String> = (1..=10).map(|k| format!("${}", b + k)).collect();
                sql.push_str(&format!(
                    "({}, {{now}}, {{now}}, {{now}})",
                    marks.join(", ")
                ));
            }
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
                    .bind(base_rev + i as i64);
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

    async fn get_node(&self, ident: &NodeIdent) -> StoreResult<Node> {
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

    async fn list_nodes(&self, q: &NodeQuery) -> StoreResult<NodePage> {
        let mut sql = String::from("SELECT {node_cols} FROM nodes WHERE 1 = 1");
        let mut binds: Vec<String> = Vec::new();
        let mut push = |sql: &mut String, clause: &str, v: String| {
            binds.push(v);
            sql.push_str(&clause.replace('?', &format!("${}", binds.len())));
        };
        if let Some(m) = q.marker {
            push(&mut sql, " AND uuid > ?", m.to_string());
        }
        if let Some(s) = &q.provision_state {
            push(&mut sql, " AND provision_state = ?", s.clone());
        }
        if let Some(d) = &q.driver {
            push(&mut sql, " AND driver = ?", d.clone());
        }
        if let Some(g) = &q.conductor_group {
            push(&mut sql, " AND conductor_group = ?", g.to_ascii_lowercase());
        }
        match q.maintenance {
            Some(true) => sql.push_str(" AND maintenance = TRUE"),
            Some(false) => sql.push_str(" AND maintenance = FALSE"),
            None => {}
        }
        match q.reserved {
            Some(true) => sql.push_str(" AND reservation IS NOT NULL"),
            Some(false) => sql.push_str(" AND reservation IS NULL"),
            None => {}
        }
        sql.push_str(" ORDER BY uuid");
        if let Some(l) = q.limit {
            sql.push_str(&format!(" LIMIT {l}"));
        }
        // The page and its revision come from one read transaction, on the
        // native SQLite read pool where there is one (the same code for
        // either driver's transaction type).
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
        Ok(match &self.sqlite_reads {
            Some(reads) => page_in!(reads.begin().await?),
            None => page_in!(self.begin_read().await?),
        })
    }

    async fn save_node(&self, token: &LockToken, n: &Node) -> StoreResult<Node> {
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
        let _g = self.write_guard().await;
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(self.sql(
            "UPDATE nodes SET name = $1, driver = $2, driver_info = $3, properties = $4, \
             extra = $5, instance_info = $6, instance_uuid = $7, interfaces = $8, \
             provision_updated_at = CASE WHEN provision_state <> $9 THEN {now} \
                                         ELSE provision_updated_at END, \
             provision_state = $9, target_provision_state = $10, power_state = $11, \
             target_power_state = $12, maintenance = $13, maintenance_reason = $14, \
             last_error = $15, conductor_group = $16, conductor_affinity = $17, \
             driver_internal_info = $22, clean_step = $23, deploy_step = $24, \
             updated_at = {now} \
             WHERE uuid = $18 AND reservation = $19 AND lock_task = $20 AND lock_epoch = $21 \
             RETURNING {node_cols}",
        ))
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
        .bind(group)
        .bind(n.conductor_affinity.clone())
        .bind(token.node.to_string())
        .bind(token.holder.clone())
        .bind(token.task_id.to_string())
        .bind(token.epoch)
        .bind(json_text(&n.driver_internal_info)?)
        .bind(json_text(&n.clean_step)?)
        .bind(json_text(&n.deploy_step)?)
        .fetch_optional(&mut *tx)
        .await;
        let updated = match updated {
            Ok(row) => row,
            Err(e) => {
                let new = NewNode {
                    name: n.name.clone(),
                    ..Default::default()
                };
                return Err(Self::map_unique(e, &new, n.uuid));
            }
        };
        let Some(row) = updated else {
            let err = self.diagnose_fenced(&mut tx, token).await;
            tx.rollback().await?;
            return Err(err);
        };
        // The revision counter is one row: every node write queues on it
        // from the bump until its commit (that is what keeps the change feed
        // gap-free and in commit order). So the node is read back by the
        // UPDATE above, and the counter is taken last, in one statement on
        // PostgreSQL.
        let mut node = node_from_row(&row)?;
        let rev = self.stamp_revision(&mut tx, n.uuid).await?;
        node.revision = rev;
        self.record_change(&mut tx, rev, n.uuid, ChangeKind::Updated, Some(&node))
            .await?;
        tx.commit().await?;
        Ok(node)
    }

    async fn record_power_states(&self, observed: &[PowerObservation]) -> StoreResult<Vec<Node>> {
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
        let last: i64 = sqlx::query(
            "UPDATE revision_counter SET value = value + $1 WHERE id = 1 RETURNING value",
        )
        .bind(count)
        .fetch_one(&mut *tx)
        .await?
        .try_get("value")?;
        for (i, node) in recorded.iter_mut().enumerate() {
            node.revision = last - count + 1 + i as i64;
        }
        for chunk in recorded.chunks(self.bulk_rows()) {
            let mut q = sqlx::query(AssertSqlSafe(format!(
                "UPDATE nodes SET revision = v.column2 FROM (VALUES {}) AS v \
                 WHERE nodes.uuid = v.column1",
                Self::values_marks(chunk.len(), 2)
            )));
            for node in chunk {
                q = q.bind(node.uuid.to_string()).bind(node.revision);
            }
            q.execute(&mut *tx).await?;
        }
        let nodes: Vec<&Node> = recorded.iter().collect();
        self.record_changes(&mut tx, ChangeKind::Updated, &nodes)
            .await?;
        tx.commit().await?;
        Ok(recorded)
    }

    async fn delete_node(&self, token: &LockToken) -> StoreResult<()> {
        let _g = self.write_guard().await;
        let mut tx = self.begin_write().await?;
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
        let rev = self.bump_revision(&mut tx).await?;
        self.record_change(&mut tx, rev, token.node, ChangeKind::Deleted, None)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn changes_since(&self, since: i64, limit: u32) -> StoreResult<Vec<NodeChange>> {
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
                Ok(NodeChange {
                    revision: r.try_get("revision")?,
                    node: parse_uuid(&r.try_get::<String, _>("node_uuid")?)?,
                    kind,
                    at: DbTime(r.try_get("changed_at")?),
                    snapshot: snapshot
                        .map(|s| serde_json::from_str(&s))
                        .transpose()
                        .map_err(|e| StoreError::Corrupt(format!("snapshot: {e}")))?,
                })
            })
            .collect()
    }

    async fn try_acquire(&self, node: Uuid, claim: &Claim) -> StoreResult<LockToken> {
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

    async fn try_acquire_node(&self, node: Uuid, claim: &Claim) -> StoreResult<(LockToken, Node)> {
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

    async fn subscribe_wakeups(&self, conductor: &str) -> StoreResult<WakeSubscription> {
        match self.backend {
            Backend::Postgres => {
                let mut l = sqlx::postgres::PgListener::connect(&self.options.url).await?;
                l.listen(&crate::wake::wake_channel(
                    self.options.pg_schema.as_deref(),
                    conductor,
                ))
                .await?;
                Ok(WakeSubscription::listen(l))
            }
            Backend::Sqlite => Ok(WakeSubscription::poll(self.pool.acquire().await?)),
        }
    }

    async fn enqueue(
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

    async fn poll_waiter(&self, node: Uuid, ticket: i64, task_id: Uuid) -> StoreResult<WaitStatus> {
        Ok(self.poll_waiter_node(node, ticket, task_id).await?.0)
    }

    async fn poll_waiter_node(
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

    async fn cancel_wait(
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

    async fn release(&self, token: &LockToken) -> StoreResult<Release> {
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
        let release = self
            .unlock_and_handoff(&mut tx, token.node, &token.holder)
            .await?;
        tx.commit().await?;
        Ok(release)
    }

    async fn handoff(&self, token: &LockToken, to: &Claim) -> StoreResult<LockToken> {
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

    async fn break_lock(
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
        Ok(release)
    }

    async fn record_audit(&self, previous: &LockToken, a: &AuditEntry) -> StoreResult<()> {
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

    async fn lock_view(&self, node: Uuid) -> StoreResult<LockView> {
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

    async fn list_locks(&self) -> StoreResult<Vec<LockView>> {
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

    async fn list_audit(&self, limit: u32) -> StoreResult<Vec<AuditRecord>> {
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

    async fn register_conductor(&self, c: &ConductorInfo) -> StoreResult<()> {
        let _g = self.write_guard().await;
        sqlx::query(self.sql(
            "INSERT INTO conductors (hostname, conductor_group, drivers, online, started_at, \
             heartbeat_at) VALUES ($1, $2, $3, TRUE, {now}, {now}) \
             ON CONFLICT (hostname) DO UPDATE SET conductor_group = excluded.conductor_group, \
             drivers = excluded.drivers, online = TRUE, started_at = excluded.started_at, \
             heartbeat_at = excluded.heartbeat_at",
        ))
        .bind(c.hostname.clone())
        .bind(c.conductor_group.to_ascii_lowercase())
        .bind(json_text(&c.drivers)?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn heartbeat(&self, hostname: &str) -> StoreResult<()> {
        let _g = self.write_guard().await;
        let n =
            sqlx::query(self.sql("UPDATE conductors SET heartbeat_at = {now} WHERE hostname = $1"))
                .bind(hostname.to_string())
                .execute(&self.pool)
                .await?
                .rows_affected();
        if n == 0 {
            return Err(StoreError::ConductorNotFound(hostname.to_string()));
        }
        Ok(())
    }

    async fn unregister_conductor(&self, hostname: &str) -> StoreResult<()> {
        let _g = self.write_guard().await;
        let n = sqlx::query("UPDATE conductors SET online = FALSE WHERE hostname = $1")
            .bind(hostname.to_string())
            .execute(&self.pool)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::ConductorNotFound(hostname.to_string()));
        }
        Ok(())
    }

    async fn list_conductors(&self) -> StoreResult<Vec<ConductorRow>> {
        let rows = sqlx::query(self.sql(
            "SELECT hostname, conductor_group, drivers, online, started_at, heartbeat_at, \
             {now} AS now FROM conductors ORDER BY hostname",
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let now: i64 = r.try_get("now")?;
                let hb: i64 = r.try_get("heartbeat_at")?;
                let online = get_opt_bool(r, "online")?.unwrap_or(false);
                let drivers: Vec<String> =
                    serde_json::from_str(&r.try_get::<String, _>("drivers")?)
                        .map_err(|e| StoreError::Corrupt(format!("drivers: {e}")))?;
                Ok(ConductorRow {
                    hostname: r.try_get("hostname")?,
                    conductor_group: r.try_get("conductor_group")?,
                    drivers,
                    online,
                    alive: self.live(now, None, online, Some(hb)),
                    started_at: DbTime(r.try_get("started_at")?),
                    heartbeat_at: DbTime(hb),
                    heartbeat_age_ms: (now - hb).max(0) / 1000,
                })
            })
            .collect()
    }
}

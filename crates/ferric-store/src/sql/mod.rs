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
//!
//! Code map: this file opens the store (migrations, pools, the SQLite write
//! gate) and holds the SQL dialects and the `Store` impl, which delegates
//! to one file per concept: [`nodes`] (node rows), [`locks`] (SPEC §4: grant,
//! queue, release, hand-off, audit), [`changes`] (revisions and the change
//! feed), [`conductors`] (membership and heartbeats) and [`rows`] (decoding
//! rows into domain types).

use crate::resource::{NewResource, Resource, ResourceKind, ResourceQuery};
use crate::types::*;
use crate::wake::WakeSubscription;
use crate::{Store, StoreError, StoreResult};
use async_trait::async_trait;
pub use batch::SaveBatchStats;
use ferric_core::{DbTime, NewNode, Node};
use sqlx::any::AnyPoolOptions;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{Any, AnyPool, AssertSqlSafe, Executor, Row, Transaction};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, MutexGuard};
use uuid::Uuid;

mod allocations;
mod batch;
mod changes;
mod conductors;
mod locks;
mod node_data;
mod nodes;
mod resources;
mod rows;

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
    /// PostgreSQL session bounds set on every connection ([`PgSession`]).
    pub pg_session: PgSession,
    /// How long getting a connection may take (the pool's acquire timeout,
    /// connecting included). The admin commands use a short one so that an
    /// unreachable database is a quick, clear error.
    pub connect_timeout: Duration,
}

/// Server-side bounds on every PostgreSQL connection (issue 17: a frozen
/// conductor must not freeze the cluster). Zero leaves a setting at the
/// server's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgSession {
    /// `idle_in_transaction_session_timeout`: the server ends a session
    /// idle inside a transaction this long (a frozen or partitioned
    /// conductor), releasing its row locks. ferric's transactions await
    /// nothing but the database and their turn at the revision counter
    /// (`CounterTurn`, which keeps the session alive while it waits), so a
    /// healthy one is never idle long.
    pub idle_in_transaction_timeout: Duration,
    /// `lock_timeout`: the longest one statement waits for a row lock.
    pub lock_timeout: Duration,
    /// `statement_timeout`: the longest one statement runs.
    pub statement_timeout: Duration,
    /// `tcp_keepalives_idle` (interval: a third of it, count 3) and
    /// `tcp_user_timeout` (the same): the server notices a vanished client
    /// and ends its session.
    pub tcp_keepalive: Duration,
}

impl Default for PgSession {
    fn default() -> Self {
        PgSession {
            idle_in_transaction_timeout: Duration::from_secs(1),
            lock_timeout: Duration::from_secs(10),
            statement_timeout: Duration::from_secs(60),
            tcp_keepalive: Duration::from_secs(10),
        }
    }
}

impl PgSession {
    /// The `SET` statements, one string.
    pub fn setup_sql(&self) -> String {
        let ms = |d: Duration| d.as_millis();
        let mut sql = String::new();
        for (name, d) in [
            (
                "idle_in_transaction_session_timeout",
                self.idle_in_transaction_timeout,
            ),
            ("lock_timeout", self.lock_timeout),
            ("statement_timeout", self.statement_timeout),
        ] {
            if !d.is_zero() {
                sql.push_str(&format!("SET {name} = {}; ", ms(d)));
            }
        }
        if !self.tcp_keepalive.is_zero() {
            let secs = self.tcp_keepalive.as_secs().max(1);
            sql.push_str(&format!(
                "SET tcp_keepalives_idle = {secs}; SET tcp_keepalives_interval = {}; \
                 SET tcp_keepalives_count = 3; SET tcp_user_timeout = {}; ",
                (secs / 3).max(1),
                ms(self.tcp_keepalive)
            ));
        }
        sql
    }
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
            pg_session: PgSession::default(),
            connect_timeout: Duration::from_secs(30),
        }
    }
}

struct Dialect {
    now: &'static str,
    for_update: &'static str,
    /// Text comparisons in byte order (PostgreSQL's default collation may
    /// follow the locale; SQLite's BINARY is byte order already).
    collate: &'static str,
}

const SQLITE: Dialect = Dialect {
    now: "CAST(unixepoch('subsec') * 1000000 AS INTEGER)",
    for_update: "",
    collate: "",
};

const POSTGRES: Dialect = Dialect {
    now: "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)",
    for_update: " FOR UPDATE",
    collate: " COLLATE \"C\"",
};

/// The SQL store. Its clones share pools, gates and the save batcher.
#[derive(Clone)]
pub struct SqlStore {
    pool: AnyPool,
    /// SQLite files only: a second pool on sqlx's native SQLite driver for
    /// node list pages. The `Any` driver converts every row, value and
    /// column descriptor into its own types before we decode; that was half
    /// of a full detail list of 100k nodes (see BENCHMARKS.md). Reads only:
    /// every write still goes through `pool` and the write gate.
    sqlite_reads: Option<SqlitePool>,
    /// PostgreSQL: the same for list pages on sqlx's native PostgreSQL
    /// driver. A profile of the 100,000-node detail list through HTTP had
    /// ~20 % of the server's CPU in the `Any` conversions (`AnyRow`,
    /// `AnyColumn` per row, column lookup by name); see BENCHMARKS.md.
    pg_reads: Option<PgPool>,
    backend: Backend,
    dialect: &'static Dialect,
    /// SQLite: one writer at a time per process, queued fairly (tokio's mutex
    /// is FIFO) instead of spinning in SQLite's busy handler.
    write_gate: Option<Arc<Mutex<()>>>,
    /// PostgreSQL: one write transaction of this process at a time holds or
    /// waits for the revision counter's row lock; the others wait here (see
    /// [`changes::CounterTurn`]).
    counter_gate: Option<Arc<Mutex<()>>>,
    /// Node saves committed together (see [`batch`]).
    saves: Arc<batch::SaveBatcher>,
    heartbeat_timeout_us: i64,
    options: StoreOptions,
    /// SQLite files: cross-process grant wakeups (see `wake`).
    waker: Option<Arc<crate::wake::SqliteWaker>>,
    /// Held by every clone: the background checkpointer stops when the
    /// last one is gone.
    _alive: Arc<()>,
}

/// How often [`checkpointer`] copies the SQLite write-ahead log into the
/// database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// SQLite's write-ahead log is copied into the database file here, beside
/// the writers, not by them. By default SQLite runs that checkpoint inside
/// whichever commit fills the log past 1,000 pages, fsync of the database
/// file included, while that commit still holds the write lock: every
/// ~400th lock release or save then took 5–25 ms on this project's CI
/// machine (strace), the tail of the lock hand-off latency (BENCHMARKS.md).
/// A PASSIVE checkpoint neither waits for nor blocks writers or readers.
/// Stops when the store is dropped or closed; SQLite checkpoints once more
/// when its last connection closes.
async fn checkpointer(pool: AnyPool, alive: std::sync::Weak<()>) {
    loop {
        tokio::time::sleep(CHECKPOINT_EVERY).await;
        if alive.strong_count() == 0 || pool.is_closed() {
            return;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            tracing::debug!("checkpoint of the SQLite write-ahead log failed: {e}");
        }
    }
}

const NODE_COLS: &str = "uuid, name, driver, driver_info, properties, extra, instance_info, \
    instance_uuid, interfaces, provision_state, target_provision_state, power_state, \
    target_power_state, maintenance, maintenance_reason, last_error, conductor_group, \
    conductor_affinity, reservation, lock_task, lock_epoch, lock_purpose, lock_acquired_at, \
    lock_waiters, revision, created_at, updated_at, provision_updated_at, \
    driver_internal_info, clean_step, deploy_step, resource_class, owner, lessee, description, \
    automated_clean, protected, protected_reason, retired, retired_reason, disable_power_off, \
    shard, parent_node, network_data, boot_mode, secure_boot, instance_name, health, \
    chassis_uuid, traits, fault, allocation_uuid, console_enabled, raid_config, \
    target_raid_config, inspection_started_at, inspection_finished_at";
/// What opening a store may do to the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpenMode {
    /// Create it if missing (SQLite) and apply pending migrations.
    CreateAndMigrate,
    /// It must exist with every migration applied; nothing is created or
    /// migrated. `read_only`: SQLite connections are read-only.
    Existing { read_only: bool },
}

impl SqlStore {
    /// Connect, apply migrations and return the store.
    pub async fn open(options: StoreOptions) -> StoreResult<SqlStore> {
        Self::open_as(options, OpenMode::CreateAndMigrate).await
    }

    /// Open a database that already exists with every migration applied,
    /// creating and migrating nothing (the admin commands: `ferric lock ...`,
    /// `ferric conductor list`). A missing SQLite file, or a schema without
    /// every migration, is [`StoreError::NotReady`]. `read_only`: SQLite
    /// connections are opened read-only (every write then fails); PostgreSQL
    /// ignores it.
    pub async fn open_existing(options: StoreOptions, read_only: bool) -> StoreResult<SqlStore> {
        Self::open_as(options, OpenMode::Existing { read_only }).await
    }

    async fn open_as(options: StoreOptions, mode: OpenMode) -> StoreResult<SqlStore> {
        sqlx::any::install_default_drivers();
        let url = options.url.clone();
        let (backend, dialect, url) = if let Some(rest) = url.strip_prefix("sqlite:") {
            let mut u = format!("sqlite:{rest}");
            if !u.contains("mode=") && !u.contains(":memory:") {
                u.push_str(if u.contains('?') { "&mode=" } else { "?mode=" });
                u.push_str(match mode {
                    OpenMode::CreateAndMigrate => "rwc",
                    OpenMode::Existing { read_only: true } => "ro",
                    OpenMode::Existing { read_only: false } => "rw",
                });
            }
            if let OpenMode::Existing { .. } = mode {
                Self::check_sqlite_exists(&u)?;
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
        let pg_session = options.pg_session.setup_sql();
        let pool = AnyPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.connect_timeout)
            .after_connect(move |conn, _meta| {
                let setup = match (backend, mode) {
                    // No checkpoint inside a commit: `checkpointer` runs
                    // them beside the writers (see there).
                    (Backend::Sqlite, OpenMode::CreateAndMigrate) => format!(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                         PRAGMA wal_autocheckpoint = 0; \
                         PRAGMA foreign_keys = ON; PRAGMA busy_timeout = {busy_ms};"
                    ),
                    // The journal mode is the file's own (WAL since it was
                    // created); setting it could write, so it is left alone.
                    (Backend::Sqlite, OpenMode::Existing { read_only }) => format!(
                        "{}PRAGMA foreign_keys = ON; PRAGMA busy_timeout = {busy_ms};",
                        if read_only {
                            ""
                        } else {
                            "PRAGMA synchronous = NORMAL; "
                        }
                    ),
                    (Backend::Postgres, _) => {
                        let path = match (&schema, mode) {
                            (Some(s), OpenMode::CreateAndMigrate) => format!(
                                "CREATE SCHEMA IF NOT EXISTS \"{s}\"; SET search_path TO \"{s}\";"
                            ),
                            (Some(s), OpenMode::Existing { .. }) => {
                                format!("SET search_path TO \"{s}\";")
                            }
                            (None, _) => String::new(),
                        };
                        format!("{pg_session}{path}")
                    }
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
        match mode {
            OpenMode::CreateAndMigrate => migrator.run(&pool).await?,
            OpenMode::Existing { .. } => {
                if let Err(e) = Self::check_migrated(&pool, backend, &migrator).await {
                    pool.close().await;
                    return Err(e);
                }
            }
        }
        let sqlite_reads = match backend {
            Backend::Sqlite if !url.contains(":memory:") && !url.contains("mode=memory") => {
                Some(Self::open_sqlite_reads(&url, &options).await?)
            }
            _ => None,
        };
        let pg_reads = match backend {
            Backend::Postgres => Some(Self::open_pg_reads(&url, &options).await?),
            Backend::Sqlite => None,
        };
        let waker = match backend {
            Backend::Sqlite if sqlite_reads.is_some() => {
                let file = SqliteConnectOptions::from_str(&url)?
                    .get_filename()
                    .to_path_buf();
                // The same file under any name: the canonical path (it
                // exists: the pool just opened it).
                let canonical = std::fs::canonicalize(&file).unwrap_or(file);
                Some(Arc::new(crate::wake::SqliteWaker::new(
                    canonical.to_string_lossy().into_owned(),
                )))
            }
            _ => None,
        };
        let alive = Arc::new(());
        if backend == Backend::Sqlite && mode == OpenMode::CreateAndMigrate {
            tokio::spawn(checkpointer(pool.clone(), Arc::downgrade(&alive)));
        }
        Ok(SqlStore {
            _alive: alive,
            waker,
            pool,
            sqlite_reads,
            pg_reads,
            backend,
            dialect,
            write_gate: (backend == Backend::Sqlite).then(|| Arc::new(Mutex::new(()))),
            counter_gate: (backend == Backend::Postgres).then(|| Arc::new(Mutex::new(()))),
            saves: Arc::default(),
            heartbeat_timeout_us: options.heartbeat_timeout.as_micros() as i64,
            options,
        })
    }

    /// [`OpenMode::Existing`] on SQLite: the file must be there already.
    fn check_sqlite_exists(url: &str) -> StoreResult<()> {
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        if in_memory || !SqliteConnectOptions::from_str(url)?.get_filename().exists() {
            return Err(StoreError::NotReady("does not exist".into()));
        }
        Ok(())
    }

    /// [`OpenMode::Existing`]: every migration this build knows must have
    /// been applied (sqlx records them in `_sqlx_migrations`).
    async fn check_migrated(
        pool: &AnyPool,
        backend: Backend,
        migrator: &sqlx::migrate::Migrator,
    ) -> StoreResult<()> {
        let has_table = match backend {
            Backend::Sqlite => {
                "SELECT COUNT(*) AS n FROM sqlite_master \
                 WHERE type = 'table' AND name = '_sqlx_migrations'"
            }
            Backend::Postgres => {
                "SELECT COUNT(*) AS n FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_name = '_sqlx_migrations'"
            }
        };
        let n: i64 = sqlx::query(has_table).fetch_one(pool).await?.try_get("n")?;
        if n == 0 {
            return Err(StoreError::NotReady(
                "is not migrated (no migrations applied)".into(),
            ));
        }
        let applied: std::collections::BTreeSet<i64> =
            sqlx::query("SELECT version FROM _sqlx_migrations WHERE success = TRUE")
                .fetch_all(pool)
                .await?
                .iter()
                .map(|r| r.try_get::<i64, _>("version"))
                .collect::<Result<_, _>>()?;
        let known: Vec<i64> = migrator
            .iter()
            .filter(|m| !m.migration_type.is_down_migration())
            .map(|m| m.version)
            .collect();
        let done = known.iter().filter(|v| applied.contains(v)).count();
        if done < known.len() {
            return Err(StoreError::NotReady(format!(
                "is not fully migrated ({done} of {} migrations applied)",
                known.len()
            )));
        }
        Ok(())
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
            .acquire_timeout(options.connect_timeout)
            .connect_with(connect)
            .await?)
    }

    /// The native read pool on the same PostgreSQL database, with the
    /// session settings and search path of the main pool (the schema exists:
    /// migrations ran or were checked first).
    async fn open_pg_reads(url: &str, options: &StoreOptions) -> StoreResult<PgPool> {
        let path = options
            .pg_schema
            .as_ref()
            .map(|s| format!("SET search_path TO \"{s}\";"))
            .unwrap_or_default();
        let setup = format!("{}{path}", options.pg_session.setup_sql());
        Ok(PgPoolOptions::new()
            .max_connections(options.max_connections.clamp(1, 4))
            .acquire_timeout(options.connect_timeout)
            .after_connect(move |conn, _meta| {
                let setup = setup.clone();
                Box::pin(async move {
                    if !setup.is_empty() {
                        conn.execute(AssertSqlSafe(setup)).await?;
                    }
                    Ok(())
                })
            })
            .connect(url)
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

    /// PostgreSQL: whether the server runs without autovacuum, so that the
    /// planner's statistics of ferric's tables are only as fresh as the last
    /// manual `ANALYZE`. At 100,000 nodes enrolled without statistics every
    /// page of the node list was planned as a full scan and sort (240 ms a
    /// page against 9.5 ms after `ANALYZE`, BENCHMARKS.md). `false` on
    /// SQLite.
    pub async fn autovacuum_off(&self) -> StoreResult<bool> {
        if self.backend != Backend::Postgres {
            return Ok(false);
        }
        let setting: String = sqlx::query("SELECT current_setting('autovacuum') AS v")
            .fetch_one(&self.pool)
            .await?
            .try_get("v")?;
        Ok(setting == "off")
    }

    /// Refresh the planner's statistics of ferric's node, change-feed and
    /// resource tables (`ANALYZE`), what autovacuum does on its own where
    /// it runs.
    pub async fn analyze(&self) -> StoreResult<()> {
        let mut tables = vec!["nodes", "node_changes"];
        tables.extend(ResourceKind::ALL.iter().map(|k| k.table()));
        // PostgreSQL takes a list; SQLite one name per statement.
        let statements = match self.backend {
            Backend::Postgres => vec![format!("ANALYZE {}", tables.join(", "))],
            Backend::Sqlite => tables.iter().map(|t| format!("ANALYZE {t}")).collect(),
        };
        for statement in statements {
            sqlx::query(AssertSqlSafe(statement))
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Close every connection.
    pub async fn close(&self) {
        if let Some(reads) = &self.sqlite_reads {
            reads.close().await;
        }
        if let Some(reads) = &self.pg_reads {
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
}

/// Direct access to the database under a [`SqlStore`], for the raw-database
/// anchors of `ferric bench` (`crates/ferric/src/bench/raw.rs`) and nothing
/// else. An anchor measures the same database, pool, write gate and
/// statement shapes as the store, without the product on top (no lock, no
/// fence, no revision, no change feed), so it must go through the store's own
/// pools rather than open its own. Not part of the [`Store`] boundary.
#[doc(hidden)]
pub struct RawAccess<'a> {
    store: &'a SqlStore,
}

impl SqlStore {
    /// See [`RawAccess`]: benchmarks only.
    #[doc(hidden)]
    pub fn raw_access(&self) -> RawAccess<'_> {
        RawAccess { store: self }
    }
}

impl<'a> RawAccess<'a> {
    /// The columns every node read selects (`{node_cols}`).
    pub const NODE_COLS: &'static str = NODE_COLS;
    /// The change-feed page query: `$1` = after this revision, `$2` = limit.
    pub const CHANGES_PAGE: &'static str = changes::CHANGES_PAGE;

    /// The `Any` pool: every write and every read but node list pages.
    pub fn pool(&self) -> &'a AnyPool {
        &self.store.pool
    }

    /// PostgreSQL only: the native pool node list pages are read through.
    pub fn pg_reads(&self) -> Option<&'a PgPool> {
        self.store.pg_reads.as_ref()
    }

    /// SQLite files only: the native pool node list pages are read through.
    pub fn sqlite_reads(&self) -> Option<&'a SqlitePool> {
        self.store.sqlite_reads.as_ref()
    }

    /// SQLite: this process's write gate, held across one write; `None` on
    /// PostgreSQL.
    pub async fn write_guard(&self) -> Option<MutexGuard<'a, ()>> {
        let store: &'a SqlStore = self.store;
        store.write_guard().await
    }

    /// A write transaction as the store begins one (`BEGIN IMMEDIATE` on SQLite).
    pub async fn begin_write(&self) -> StoreResult<Transaction<'static, Any>> {
        self.store.begin_write().await
    }

    /// Rows per multi-row statement on this engine.
    pub fn bulk_rows(&self) -> usize {
        self.store.bulk_rows()
    }

    /// `VALUES` rows of `width` parameters each, numbered from `$1`.
    pub fn values_marks(rows: usize, width: usize) -> String {
        SqlStore::values_marks(rows, width)
    }
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
    async fn create_node(&self, new: NewNode) -> StoreResult<Node> {
        self.create_node_impl(new).await
    }

    async fn create_nodes(&self, nodes: Vec<NewNode>) -> StoreResult<usize> {
        self.create_nodes_impl(nodes).await
    }

    async fn get_node(&self, ident: &NodeIdent) -> StoreResult<Node> {
        self.get_node_impl(ident).await
    }

    async fn list_nodes(&self, q: &NodeQuery) -> StoreResult<NodePage> {
        self.list_nodes_impl(q).await
    }

    async fn save_node(&self, token: &LockToken, n: &Node) -> StoreResult<Node> {
        Ok(self.save_node_impl(token, n, false).await?.0)
    }

    async fn save_node_and_release(
        &self,
        token: &LockToken,
        n: &Node,
    ) -> StoreResult<(Node, Release)> {
        let (node, release) = self.save_node_impl(token, n, true).await?;
        Ok((node, release.unwrap_or_default()))
    }

    async fn record_power_states(&self, observed: &[PowerObservation]) -> StoreResult<Vec<Node>> {
        self.record_power_states_impl(observed).await
    }

    async fn delete_node(&self, token: &LockToken) -> StoreResult<()> {
        self.delete_node_impl(token).await
    }

    async fn changes_since(&self, since: i64, limit: u32) -> StoreResult<Vec<NodeChange>> {
        self.changes_since_impl(since, limit).await
    }

    async fn create_resource(&self, kind: ResourceKind, new: NewResource) -> StoreResult<Resource> {
        self.create_resource_impl(kind, new).await
    }

    async fn get_resource(&self, kind: ResourceKind, ident: &NodeIdent) -> StoreResult<Resource> {
        self.get_resource_impl(kind, ident).await
    }

    async fn list_resources(&self, q: &ResourceQuery) -> StoreResult<Vec<Resource>> {
        self.list_resources_impl(q).await
    }

    async fn update_resource(&self, r: &Resource) -> StoreResult<Resource> {
        self.update_resource_impl(r).await
    }

    async fn delete_resource(
        &self,
        kind: ResourceKind,
        uuid: Uuid,
        revision: Option<i64>,
    ) -> StoreResult<()> {
        self.delete_resource_impl(kind, uuid, revision).await
    }

    async fn bind_allocation(
        &self,
        token: &LockToken,
        allocation: Uuid,
    ) -> StoreResult<(Node, Resource)> {
        self.bind_allocation_impl(token, allocation).await
    }

    async fn delete_allocation(
        &self,
        token: Option<&LockToken>,
        allocation: Uuid,
    ) -> StoreResult<()> {
        self.delete_allocation_impl(token, allocation).await
    }

    async fn try_acquire(&self, node: Uuid, claim: &Claim) -> StoreResult<LockToken> {
        self.try_acquire_impl(node, claim).await
    }

    async fn try_acquire_node(&self, node: Uuid, claim: &Claim) -> StoreResult<(LockToken, Node)> {
        self.try_acquire_node_impl(node, claim).await
    }

    async fn subscribe_wakeups(&self, conductor: &str) -> StoreResult<WakeSubscription> {
        self.subscribe_wakeups_impl(conductor).await
    }

    async fn enqueue(
        &self,
        node: Uuid,
        claim: &Claim,
        wait: Option<Duration>,
        max_waiters: u32,
    ) -> StoreResult<Enqueued> {
        self.enqueue_impl(node, claim, wait, max_waiters).await
    }

    async fn poll_waiter(&self, node: Uuid, ticket: i64, task_id: Uuid) -> StoreResult<WaitStatus> {
        self.poll_waiter_impl(node, ticket, task_id).await
    }

    async fn poll_waiter_node(
        &self,
        node: Uuid,
        ticket: i64,
        task_id: Uuid,
    ) -> StoreResult<(WaitStatus, Option<Node>)> {
        self.poll_waiter_node_impl(node, ticket, task_id).await
    }

    async fn cancel_wait(
        &self,
        node: Uuid,
        ticket: i64,
        task_id: Uuid,
    ) -> StoreResult<Option<LockToken>> {
        self.cancel_wait_impl(node, ticket, task_id).await
    }

    async fn release(&self, token: &LockToken) -> StoreResult<Release> {
        self.release_impl(token).await
    }

    async fn handoff(&self, token: &LockToken, to: &Claim) -> StoreResult<LockToken> {
        self.handoff_impl(token, to).await
    }

    async fn break_lock(
        &self,
        node: Uuid,
        expected: &LockToken,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<Release> {
        self.break_lock_impl(node, expected, audit).await
    }

    async fn record_audit(&self, previous: &LockToken, a: &AuditEntry) -> StoreResult<()> {
        self.record_audit_impl(previous, a).await
    }

    async fn lock_view(&self, node: Uuid) -> StoreResult<LockView> {
        self.lock_view_impl(node).await
    }

    async fn list_locks(&self) -> StoreResult<Vec<LockView>> {
        self.list_locks_impl().await
    }

    async fn list_audit(&self, limit: u32) -> StoreResult<Vec<AuditRecord>> {
        self.list_audit_impl(limit).await
    }

    async fn register_conductor(&self, c: &ConductorInfo) -> StoreResult<()> {
        self.register_conductor_impl(c).await
    }

    async fn heartbeat(&self, hostname: &str) -> StoreResult<()> {
        self.heartbeat_impl(hostname).await
    }

    async fn unregister_conductor(&self, hostname: &str) -> StoreResult<()> {
        self.unregister_conductor_impl(hostname).await
    }

    async fn list_conductors(&self) -> StoreResult<Vec<ConductorRow>> {
        self.list_conductors_impl().await
    }

    async fn shard_counts(&self) -> StoreResult<Vec<(Option<String>, i64)>> {
        self.shard_counts_impl().await
    }

    // ----- node data (history, BIOS, firmware, inventory) -------------------

    async fn add_node_history(
        &self,
        token: &LockToken,
        event: &NewHistoryEvent,
    ) -> StoreResult<HistoryEvent> {
        self.add_node_history_impl(token, event).await
    }

    async fn list_node_history(
        &self,
        node: Uuid,
        query: &HistoryQuery,
    ) -> StoreResult<Vec<HistoryEvent>> {
        self.list_node_history_impl(node, query).await
    }

    async fn get_node_history(&self, node: Uuid, event: Uuid) -> StoreResult<Option<HistoryEvent>> {
        self.get_node_history_impl(node, event).await
    }

    async fn set_bios_settings(
        &self,
        token: &LockToken,
        settings: &[BiosSetting],
    ) -> StoreResult<()> {
        self.set_bios_settings_impl(token, settings).await
    }

    async fn list_bios_settings(&self, node: Uuid) -> StoreResult<Vec<BiosSetting>> {
        self.list_bios_settings_impl(node).await
    }

    async fn set_firmware_components(
        &self,
        token: &LockToken,
        components: &[FirmwareComponent],
    ) -> StoreResult<()> {
        self.set_firmware_components_impl(token, components).await
    }

    async fn list_firmware_components(&self, node: Uuid) -> StoreResult<Vec<FirmwareComponent>> {
        self.list_firmware_components_impl(node).await
    }

    async fn set_node_inventory(
        &self,
        token: &LockToken,
        inventory: &serde_json::Value,
        plugin_data: &serde_json::Value,
    ) -> StoreResult<()> {
        self.set_node_inventory_impl(token, inventory, plugin_data)
            .await
    }

    async fn get_node_inventory(&self, node: Uuid) -> StoreResult<Option<NodeInventory>> {
        self.get_node_inventory_impl(node).await
    }
}

#[cfg(all(test, feature = "testing"))]
mod planner_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::testing::{Engine, TestStore};

    async fn count(store: &SqlStore, sql: &'static str) -> i64 {
        sqlx::query(sql)
            .fetch_one(&store.pool)
            .await
            .unwrap()
            .try_get("n")
            .unwrap()
    }

    /// `autovacuum_off` reports the server's setting; `analyze` leaves
    /// statistics on the store's own tables (its schema), on SQLite too.
    #[tokio::test]
    async fn analyze_refreshes_the_statistics_of_the_stores_tables() {
        let t = TestStore::open(Engine::Sqlite).await.unwrap();
        assert!(!t.store.autovacuum_off().await.unwrap());
        t.store.analyze().await.unwrap();
        let stats = count(
            &t.store,
            "SELECT count(*) AS n FROM sqlite_master WHERE name = 'sqlite_stat1'",
        )
        .await;
        assert_eq!(stats, 1, "ANALYZE creates sqlite_stat1");
        t.cleanup().await;

        let Some(t) = TestStore::open(Engine::Postgres).await else {
            return;
        };
        let setting: String = sqlx::query("SELECT current_setting('autovacuum') AS v")
            .fetch_one(&t.store.pool)
            .await
            .unwrap()
            .try_get("v")
            .unwrap();
        assert_eq!(t.store.autovacuum_off().await.unwrap(), setting == "off");
        let analyzed = "SELECT count(*) AS n FROM pg_stat_user_tables \
            WHERE schemaname = current_schema() AND relname IN ('nodes', 'node_changes', 'ports') \
            AND last_analyze IS NOT NULL";
        let before = count(&t.store, analyzed).await;
        assert_eq!(before, 0);
        t.store.analyze().await.unwrap();
        let after = count(&t.store, analyzed).await;
        assert_eq!(after, 3);
        t.cleanup().await;
    }
}

#[cfg(all(test, feature = "testing"))]
mod checkpoint_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::testing::{Engine, TestStore};

    /// Commits never checkpoint the SQLite log (their write lock would be
    /// held through the database file's fsync); the background checkpointer
    /// copies it into the file within a few of its periods.
    #[tokio::test]
    async fn the_sqlite_log_is_checkpointed_beside_the_writers() {
        let t = TestStore::open(Engine::Sqlite).await.unwrap();
        let auto: i64 = sqlx::query("PRAGMA wal_autocheckpoint")
            .fetch_one(&t.store.pool)
            .await
            .unwrap()
            .try_get(0)
            .unwrap();
        assert_eq!(auto, 0, "no checkpoint inside a commit");
        let url = t.url.clone();
        let file = SqliteConnectOptions::from_str(&url)
            .unwrap()
            .get_filename()
            .to_path_buf();
        // Let the checkpointer catch up with the migrations first.
        tokio::time::sleep(CHECKPOINT_EVERY * 3).await;
        let before = std::fs::metadata(&file).unwrap().len();
        for i in 0..300 {
            t.store
                .create_node(NewNode {
                    name: Some(format!("n{i}")),
                    driver: "fake-hardware".into(),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        let mut grown = before;
        for _ in 0..40 {
            tokio::time::sleep(CHECKPOINT_EVERY / 2).await;
            grown = std::fs::metadata(&file).unwrap().len();
            if grown > before {
                break;
            }
        }
        assert!(
            grown > before,
            "the database file stayed at {before} bytes: nothing was checkpointed"
        );
        t.cleanup().await;
    }
}

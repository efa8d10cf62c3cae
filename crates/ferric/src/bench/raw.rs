//! The raw-database limits `ferric bench scale` reports beside each of its
//! workloads (SPEC §11: "each reported beside the raw-database limit of the
//! same run"). Same database, same pool and driver, same statement shapes;
//! none of the product: no lock, no fence, no revision or change feed, no
//! decoding into nodes. Also the raw limit of `ferric bench locks`: one
//! conditional grant UPDATE and one conditional release UPDATE.
//!
//! They reach the store's pools through [`SqlStore::raw_access`], the one
//! door ferric-store leaves open for this; so this file, and only it, uses
//! sqlx outside ferric-store.

use ferric_store::{RawAccess, SqlStore, StoreResult};
use sqlx::{AssertSqlSafe, Row};
use uuid::Uuid;

/// The scratch table the enrolment anchor fills and drops.
const SCRATCH: &str = "ferric_bench_raw_enroll";

/// The raw limit for benchmarks: one conditional grant UPDATE and one
/// conditional release UPDATE, nothing else. Returns whether both matched.
pub async fn update_pair(store: &SqlStore, node: Uuid, holder: &str) -> StoreResult<bool> {
    let raw = store.raw_access();
    let _g = raw.write_guard().await;
    let a = sqlx::query(
        "UPDATE nodes SET reservation = $1, lock_epoch = lock_epoch + 1 \
         WHERE uuid = $2 AND reservation IS NULL",
    )
    .bind(holder.to_string())
    .bind(node.to_string())
    .execute(raw.pool())
    .await?
    .rows_affected();
    let b = sqlx::query("UPDATE nodes SET reservation = NULL WHERE uuid = $1 AND reservation = $2")
        .bind(node.to_string())
        .bind(holder.to_string())
        .execute(raw.pool())
        .await?
        .rows_affected();
    Ok(a == 1 && b == 1)
}

/// Insert `rows` node-shaped rows (the columns `create_nodes` writes,
/// with a primary key and a unique name) into a scratch table, in
/// multi-row statements of the store's bulk size, one transaction per
/// `batch` rows; then drop the table.
pub async fn enroll(store: &SqlStore, rows: usize, batch: usize) -> StoreResult<()> {
    let raw = store.raw_access();
    sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {SCRATCH}")))
        .execute(raw.pool())
        .await?;
    sqlx::query(AssertSqlSafe(format!(
        "CREATE TABLE {SCRATCH} (uuid TEXT PRIMARY KEY NOT NULL, name TEXT UNIQUE, \
         driver TEXT NOT NULL, driver_info TEXT NOT NULL, properties TEXT NOT NULL, \
         extra TEXT NOT NULL, interfaces TEXT NOT NULL, provision_state TEXT NOT NULL, \
         conductor_group TEXT NOT NULL, revision BIGINT NOT NULL, created_at BIGINT NOT NULL)"
    )))
    .execute(raw.pool())
    .await?;
    let mut done = 0;
    while done < rows {
        let n = batch.max(1).min(rows - done);
        let _g = raw.write_guard().await;
        let mut tx = raw.begin_write().await?;
        let mut i = done;
        while i < done + n {
            let k = raw.bulk_rows().min(done + n - i);
            let mut q = sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO {SCRATCH} VALUES {}",
                RawAccess::values_marks(k, 11)
            )));
            for j in i..i + k {
                q = q
                    .bind(Uuid::new_v4().to_string())
                    .bind(format!("raw-{j}"))
                    .bind("fake-hardware")
                    .bind("{}")
                    .bind("{}")
                    .bind("{}")
                    .bind("{}")
                    .bind("available")
                    .bind("")
                    .bind(j as i64)
                    .bind(j as i64);
            }
            q.execute(&mut *tx).await?;
            i += k;
        }
        tx.commit().await?;
        done += n;
    }
    sqlx::query(AssertSqlSafe(format!("DROP TABLE {SCRATCH}")))
        .execute(raw.pool())
        .await?;
    Ok(())
}

/// Read every node row in `page`-sized pages by UUID marker, through
/// the pool `list_nodes` uses; rows are fetched, not decoded. Returns
/// the rows read.
pub async fn list(store: &SqlStore, page: u32) -> StoreResult<usize> {
    let raw = store.raw_access();
    let sql = format!(
        "SELECT {} FROM nodes WHERE uuid > $1 ORDER BY uuid LIMIT {page}",
        RawAccess::NODE_COLS
    );
    let (mut marker, mut seen) = (String::new(), 0);
    // Rows of the next page from `$pool`: (count, last uuid).
    macro_rules! page_from {
        ($pool:expr) => {{
            let rows = sqlx::query(AssertSqlSafe(sql.clone()))
                .bind(marker.clone())
                .fetch_all($pool)
                .await?;
            let last: Option<String> = match rows.last() {
                Some(r) => Some(r.try_get("uuid")?),
                None => None,
            };
            (rows.len(), last)
        }};
    }
    loop {
        // The pool the store's own list reads through.
        let (n, last) = match (raw.sqlite_reads(), raw.pg_reads()) {
            (Some(reads), _) => page_from!(reads),
            (None, Some(reads)) => page_from!(reads),
            (None, None) => page_from!(raw.pool()),
        };
        seen += n;
        match last {
            Some(m) if n == page as usize => marker = m,
            _ => return Ok(seen),
        }
    }
}

/// Read the whole change feed in `page`-sized pages; rows are fetched,
/// not decoded. Returns the changes read.
pub async fn feed_read(store: &SqlStore, page: u32) -> StoreResult<usize> {
    let raw = store.raw_access();
    let (mut since, mut seen) = (0i64, 0);
    loop {
        let rows = sqlx::query(RawAccess::CHANGES_PAGE)
            .bind(since)
            .bind(i64::from(page))
            .fetch_all(raw.pool())
            .await?;
        seen += rows.len();
        match rows.last() {
            Some(r) => since = r.try_get("revision")?,
            None => return Ok(seen),
        }
    }
}

/// One committed single-row UPDATE of a node (the floor of one change).
pub async fn write_one(store: &SqlStore, node: Uuid, value: i64) -> StoreResult<()> {
    let raw = store.raw_access();
    let _g = raw.write_guard().await;
    sqlx::query("UPDATE nodes SET updated_at = $1 WHERE uuid = $2")
        .bind(value)
        .bind(node.to_string())
        .execute(raw.pool())
        .await?;
    Ok(())
}

/// Set `power_state` on `nodes` in multi-row UPDATEs, one transaction
/// per `batch` nodes (the shape of power sync's recording, unfenced).
pub async fn record_power(
    store: &SqlStore,
    nodes: &[Uuid],
    state: &str,
    batch: usize,
) -> StoreResult<()> {
    let raw = store.raw_access();
    for tx_nodes in nodes.chunks(batch.max(1)) {
        let _g = raw.write_guard().await;
        let mut tx = raw.begin_write().await?;
        for chunk in tx_nodes.chunks(raw.bulk_rows()) {
            let mut q = sqlx::query(AssertSqlSafe(format!(
                "UPDATE nodes SET power_state = v.column2 FROM (VALUES {}) AS v \
                 WHERE nodes.uuid = v.column1",
                RawAccess::values_marks(chunk.len(), 2)
            )));
            for n in chunk {
                q = q.bind(n.to_string()).bind(state);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
    }
    Ok(())
}

/// `url` with its database name replaced by `db` (the path after the
/// authority; query kept).
pub fn with_database(url: &str, db: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    let after_scheme = head.find("://").map_or(0, |i| i + 3);
    let base = match head[after_scheme..].find('/') {
        Some(slash) => &head[..after_scheme + slash],
        None => head,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

/// Create a fresh PostgreSQL database for a bench run through `url`'s
/// server; its URL. `ferric bench api` runs a whole `ferric serve` on it,
/// which takes a URL, not a schema.
pub async fn create_pg_database(url: &str, name: &str) -> StoreResult<String> {
    use sqlx::Connection as _;
    let mut conn = sqlx::postgres::PgConnection::connect(url).await?;
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(with_database(url, name))
}

/// Drop a database [`create_pg_database`] made.
pub async fn drop_pg_database(url: &str, name: &str) -> StoreResult<()> {
    use sqlx::Connection as _;
    let mut conn = sqlx::postgres::PgConnection::connect(url).await?;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await?;
    conn.close().await?;
    Ok(())
}

#[cfg(test)]
mod url_tests {
    use super::with_database;

    #[test]
    fn the_database_of_a_url_is_replaced() {
        assert_eq!(
            with_database("postgres://root@127.0.0.1:5432/test", "b"),
            "postgres://root@127.0.0.1:5432/b"
        );
        assert_eq!(
            with_database("postgres://u:p@h/test?sslmode=disable", "b"),
            "postgres://u:p@h/b?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h:5432", "b"),
            "postgres://h:5432/b"
        );
    }
}

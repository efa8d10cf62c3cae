//! The raw-database limits `ferric bench scale` reports beside each of its
//! workloads (SPEC §11: "each reported beside the raw-database limit of the
//! same run"). Same database, same pool and driver, same statement shapes;
//! none of the product: no lock, no fence, no revision or change feed, no
//! decoding into nodes. Benchmarks only.

use super::SqlStore;
use crate::StoreResult;
use sqlx::{AssertSqlSafe, Row};
use uuid::Uuid;

/// The scratch table the enrolment anchor fills and drops.
const SCRATCH: &str = "ferric_bench_raw_enroll";

impl SqlStore {
    /// Insert `rows` node-shaped rows (the columns `create_nodes` writes,
    /// with a primary key and a unique name) into a scratch table, in
    /// multi-row statements of the store's bulk size, one transaction per
    /// `batch` rows; then drop the table.
    #[doc(hidden)]
    pub async fn raw_enroll(&self, rows: usize, batch: usize) -> StoreResult<()> {
        sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {SCRATCH}")))
            .execute(&self.pool)
            .await?;
        sqlx::query(AssertSqlSafe(format!(
            "CREATE TABLE {SCRATCH} (uuid TEXT PRIMARY KEY NOT NULL, name TEXT UNIQUE, \
             driver TEXT NOT NULL, driver_info TEXT NOT NULL, properties TEXT NOT NULL, \
             extra TEXT NOT NULL, interfaces TEXT NOT NULL, provision_state TEXT NOT NULL, \
             conductor_group TEXT NOT NULL, revision BIGINT NOT NULL, created_at BIGINT NOT NULL)"
        )))
        .execute(&self.pool)
        .await?;
        let mut done = 0;
        while done < rows {
            let n = batch.max(1).min(rows - done);
            let _g = self.write_guard().await;
            let mut tx = self.begin_write().await?;
            let mut i = done;
            while i < done + n {
                let k = self.bulk_rows().min(done + n - i);
                let mut q = sqlx::query(AssertSqlSafe(format!(
                    "INSERT INTO {SCRATCH} VALUES {}",
                    Self::values_marks(k, 11)
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
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Read every node row in `page`-sized pages by UUID marker, through
    /// the pool `list_nodes` uses; rows are fetched, not decoded. Returns
    /// the rows read.
    #[doc(hidden)]
    pub async fn raw_list(&self, page: u32) -> StoreResult<usize> {
        let sql = format!(
            "SELECT {} FROM nodes WHERE uuid > $1 ORDER BY uuid LIMIT {page}",
            super::NODE_COLS
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
            let (n, last) = match &self.sqlite_reads {
                Some(reads) => page_from!(reads),
                None => page_from!(&self.pool),
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
    #[doc(hidden)]
    pub async fn raw_feed_read(&self, page: u32) -> StoreResult<usize> {
        let (mut since, mut seen) = (0i64, 0);
        loop {
            let rows = sqlx::query(super::changes::CHANGES_PAGE)
                .bind(since)
                .bind(i64::from(page))
                .fetch_all(&self.pool)
                .await?;
            seen += rows.len();
            match rows.last() {
                Some(r) => since = r.try_get("revision")?,
                None => return Ok(seen),
            }
        }
    }

    /// One committed single-row UPDATE of a node (the floor of one change).
    #[doc(hidden)]
    pub async fn raw_write_one(&self, node: Uuid, value: i64) -> StoreResult<()> {
        let _g = self.write_guard().await;
        sqlx::query("UPDATE nodes SET updated_at = $1 WHERE uuid = $2")
            .bind(value)
            .bind(node.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Set `power_state` on `nodes` in multi-row UPDATEs, one transaction
    /// per `batch` nodes (the shape of power sync's recording, unfenced).
    #[doc(hidden)]
    pub async fn raw_record_power(
        &self,
        nodes: &[Uuid],
        state: &str,
        batch: usize,
    ) -> StoreResult<()> {
        for tx_nodes in nodes.chunks(batch.max(1)) {
            let _g = self.write_guard().await;
            let mut tx = self.begin_write().await?;
            for chunk in tx_nodes.chunks(self.bulk_rows()) {
                let mut q = sqlx::query(AssertSqlSafe(format!(
                    "UPDATE nodes SET power_state = v.column2 FROM (VALUES {}) AS v \
                     WHERE nodes.uuid = v.column1",
                    Self::values_marks(chunk.len(), 2)
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
}

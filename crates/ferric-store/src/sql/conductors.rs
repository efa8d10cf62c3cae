//! Conductor membership: registration, heartbeats on the database clock,
//! graceful unregistration and the list with liveness.

use super::rows::*;
use super::SqlStore;
use crate::types::*;
use crate::{StoreError, StoreResult};
use ferric_core::DbTime;
use sqlx::Row;

/// `Store`'s conductor methods (`*_impl`, called by the `Store` impl in
/// `mod.rs`).
impl SqlStore {
    pub(super) async fn register_conductor_impl(&self, c: &ConductorInfo) -> StoreResult<()> {
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

    pub(super) async fn heartbeat_impl(&self, hostname: &str) -> StoreResult<()> {
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

    pub(super) async fn unregister_conductor_impl(&self, hostname: &str) -> StoreResult<()> {
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

    pub(super) async fn list_conductors_impl(&self) -> StoreResult<Vec<ConductorRow>> {
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

//! Node sub-resources: history, cached BIOS settings and firmware components,
//! inventory (migration 0005). Writes are fenced by the node's lock: the
//! node row is locked and its token checked in the writing transaction.
//! Rows go with their node (ON DELETE CASCADE on PostgreSQL, a trigger on
//! SQLite); the `last_error` history trigger lives in the migration.

use super::rows::{get_opt_bool, json_text, parse_uuid, token_matches};
use super::SqlStore;
use crate::types::*;
use crate::{StoreError, StoreResult};
use ferric_core::DbTime;
use sqlx::any::AnyRow;
use sqlx::Row;
use uuid::Uuid;

const HISTORY_COLS: &str = "id, uuid, node_uuid, created_at, conductor, event_type, severity, \
     event, user_id, project, state, target_provision_state, duration_seconds";

const BIOS_COLS: &str = "name, value, attribute_type, allowable_values, lower_bound, max_length, \
     min_length, read_only, reset_required, is_unique, upper_bound, created_at, updated_at";

const FIRMWARE_COLS: &str = "component, initial_version, current_version, last_version_flashed, \
     vendor, model, serial_number, created_at, updated_at";

fn history_from_row(r: &AnyRow) -> StoreResult<HistoryEvent> {
    let uuid: String = r.try_get("uuid")?;
    let node: String = r.try_get("node_uuid")?;
    Ok(HistoryEvent {
        uuid: parse_uuid(&uuid)?,
        node: parse_uuid(&node)?,
        created_at: DbTime(r.try_get("created_at")?),
        conductor: r.try_get("conductor")?,
        event_type: r.try_get("event_type")?,
        severity: r.try_get("severity")?,
        event: r.try_get("event")?,
        user: r.try_get("user_id")?,
        project: r.try_get("project")?,
        state: r.try_get("state")?,
        target_provision_state: r.try_get("target_provision_state")?,
        duration_seconds: r.try_get("duration_seconds")?,
    })
}

fn bios_from_row(r: &AnyRow) -> StoreResult<BiosSetting> {
    let allowable: Option<String> = r.try_get("allowable_values")?;
    let allowable_values = allowable
        .map(|s| {
            serde_json::from_str(&s)
                .map_err(|e| StoreError::Corrupt(format!("allowable_values: {e}")))
        })
        .transpose()?;
    Ok(BiosSetting {
        name: r.try_get("name")?,
        value: r.try_get("value")?,
        attribute_type: r.try_get("attribute_type")?,
        allowable_values,
        lower_bound: r.try_get("lower_bound")?,
        max_length: r.try_get("max_length")?,
        min_length: r.try_get("min_length")?,
        read_only: get_opt_bool(r, "read_only")?,
        reset_required: get_opt_bool(r, "reset_required")?,
        unique: get_opt_bool(r, "is_unique")?,
        upper_bound: r.try_get("upper_bound")?,
        created_at: Some(DbTime(r.try_get("created_at")?)),
        updated_at: r.try_get::<Option<i64>, _>("updated_at")?.map(DbTime),
    })
}

fn firmware_from_row(r: &AnyRow) -> StoreResult<FirmwareComponent> {
    Ok(FirmwareComponent {
        component: r.try_get("component")?,
        initial_version: r.try_get("initial_version")?,
        current_version: r.try_get("current_version")?,
        last_version_flashed: r.try_get("last_version_flashed")?,
        vendor: r.try_get("vendor")?,
        model: r.try_get("model")?,
        serial_number: r.try_get("serial_number")?,
        created_at: Some(DbTime(r.try_get("created_at")?)),
        updated_at: r.try_get::<Option<i64>, _>("updated_at")?.map(DbTime),
    })
}

fn check_text(field: &str, s: &str) -> StoreResult<()> {
    if s.contains('\0') {
        return Err(StoreError::Invalid(format!(
            "{field} must not contain a NUL character"
        )));
    }
    Ok(())
}

impl SqlStore {
    /// Lock the node row in `tx` and check `token` holds it; returns the
    /// row's provision state, target and seconds since its last change.
    pub(super) async fn fence(
        &self,
        tx: &mut sqlx::AnyConnection,
        token: &LockToken,
    ) -> StoreResult<(String, Option<String>, Option<i64>)> {
        let row = sqlx::query(self.sql(
            "SELECT reservation, lock_task, lock_epoch, provision_state, \
             target_provision_state, provision_updated_at, {now} AS now \
             FROM nodes WHERE uuid = $1{for_update}",
        ))
        .bind(token.node.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        match row {
            Some(r) if token_matches(&r, token)? => {
                let now: i64 = r.try_get("now")?;
                let since: Option<i64> = r.try_get("provision_updated_at")?;
                Ok((
                    r.try_get("provision_state")?,
                    r.try_get("target_provision_state")?,
                    since.map(|t| (now - t).max(0) / 1_000_000),
                ))
            }
            _ => Err(self.diagnose_fenced(tx, token).await),
        }
    }

    async fn node_exists(&self, node: Uuid) -> StoreResult<()> {
        let found = sqlx::query("SELECT 1 AS one FROM nodes WHERE uuid = $1")
            .bind(node.to_string())
            .fetch_optional(&self.pool)
            .await?;
        match found {
            Some(_) => Ok(()),
            None => Err(StoreError::NodeNotFound(node.to_string())),
        }
    }

    pub(super) async fn add_node_history_impl(
        &self,
        token: &LockToken,
        ev: &NewHistoryEvent,
    ) -> StoreResult<HistoryEvent> {
        for (field, text) in [
            ("event", Some(ev.event.as_str())),
            ("event_type", ev.event_type.as_deref()),
            ("severity", ev.severity.as_deref()),
            ("user", ev.user.as_deref()),
            ("project", ev.project.as_deref()),
        ] {
            if let Some(t) = text {
                check_text(field, t)?;
            }
        }
        let _g = self.write_guard().await;
        let mut tx = self.begin_write().await?;
        let (state, target, duration) = match self.fence(&mut tx, token).await {
            Ok(v) => v,
            Err(e) => {
                tx.rollback().await?;
                return Err(e);
            }
        };
        let uuid = Uuid::new_v4();
        let row = sqlx::query(self.sql(&format!(
            "INSERT INTO node_history (uuid, node_uuid, created_at, conductor, event_type, \
             severity, event, user_id, project, state, target_provision_state, duration_seconds) \
             VALUES ($1, $2, {{now}}, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             RETURNING {HISTORY_COLS}"
        )))
        .bind(uuid.to_string())
        .bind(token.node.to_string())
        .bind(token.holder.clone())
        .bind(ev.event_type.clone().unwrap_or_else(|| "UNKNOWN".into()))
        .bind(ev.severity.clone().unwrap_or_else(|| "INFO".into()))
        .bind(ev.event.clone())
        .bind(ev.user.clone())
        .bind(ev.project.clone())
        .bind(state)
        .bind(target)
        .bind(duration)
        .fetch_one(&mut *tx)
        .await?;
        let event = history_from_row(&row)?;
        sqlx::query(
            "DELETE FROM node_history WHERE node_uuid = $1 AND id NOT IN (\
             SELECT id FROM node_history WHERE node_uuid = $1 ORDER BY id DESC LIMIT $2)",
        )
        .bind(token.node.to_string())
        .bind(NODE_HISTORY_MAX_ENTRIES as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(event)
    }

    pub(super) async fn list_node_history_impl(
        &self,
        node: Uuid,
        q: &HistoryQuery,
    ) -> StoreResult<Vec<HistoryEvent>> {
        self.node_exists(node).await?;
        let (cmp, dir) = if q.descending {
            ("<", "DESC")
        } else {
            (">", "ASC")
        };
        let mut sql = format!("SELECT {HISTORY_COLS} FROM node_history WHERE node_uuid = $1");
        let mut marker_id = None;
        if let Some(m) = q.marker {
            let row = sqlx::query("SELECT id FROM node_history WHERE uuid = $1 AND node_uuid = $2")
                .bind(m.to_string())
                .bind(node.to_string())
                .fetch_optional(&self.pool)
                .await?
                .ok_or_else(|| {
                    StoreError::Invalid(format!("Node history record {m} could not be found."))
                })?;
            let id: i64 = row.try_get("id")?;
            sql.push_str(&format!(" AND id {cmp} $2"));
            marker_id = Some(id);
        }
        sql.push_str(&format!(" ORDER BY id {dir}"));
        if let Some(l) = q.limit {
            sql.push_str(&format!(" LIMIT {l}"));
        }
        let mut query = sqlx::query(self.sql(&sql)).bind(node.to_string());
        if let Some(id) = marker_id {
            query = query.bind(id);
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(history_from_row).collect()
    }

    pub(super) async fn get_node_history_impl(
        &self,
        node: Uuid,
        event: Uuid,
    ) -> StoreResult<Option<HistoryEvent>> {
        let row = sqlx::query(self.sql(&format!(
            "SELECT {HISTORY_COLS} FROM node_history WHERE uuid = $1 AND node_uuid = $2"
        )))
        .bind(event.to_string())
        .bind(node.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(history_from_row).transpose()
    }

    pub(super) async fn set_bios_settings_impl(
        &self,
        token: &LockToken,
        settings: &[BiosSetting],
    ) -> StoreResult<()> {
        for s in settings {
            check_text("name", &s.name)?;
            for t in [&s.value, &s.attribute_type].into_iter().flatten() {
                check_text(&s.name, t)?;
            }
            for t in s.allowable_values.iter().flatten() {
                check_text(&s.name, t)?;
            }
        }
        let _g = self.write_guard().await;
        let mut tx = self.begin_write().await?;
        if let Err(e) = self.fence(&mut tx, token).await {
            tx.rollback().await?;
            return Err(e);
        }
        let node = token.node.to_string();
        let keep: Vec<&str> = settings.iter().map(|s| s.name.as_str()).collect();
        let existing = sqlx::query("SELECT name FROM bios_settings WHERE node_uuid = $1")
            .bind(node.clone())
            .fetch_all(&mut *tx)
            .await?;
        for r in &existing {
            let name: String = r.try_get("name")?;
            if !keep.contains(&name.as_str()) {
                sqlx::query("DELETE FROM bios_settings WHERE node_uuid = $1 AND name = $2")
                    .bind(node.clone())
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        for s in settings {
            let allowable = s.allowable_values.as_ref().map(json_text).transpose()?;
            sqlx::query(self.sql(
                "INSERT INTO bios_settings (node_uuid, name, value, attribute_type, \
                 allowable_values, lower_bound, max_length, min_length, read_only, \
                 reset_required, is_unique, upper_bound, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, {now}) \
                 ON CONFLICT (node_uuid, name) DO UPDATE SET value = excluded.value, \
                 attribute_type = excluded.attribute_type, \
                 allowable_values = excluded.allowable_values, \
                 lower_bound = excluded.lower_bound, max_length = excluded.max_length, \
                 min_length = excluded.min_length, read_only = excluded.read_only, \
                 reset_required = excluded.reset_required, is_unique = excluded.is_unique, \
                 upper_bound = excluded.upper_bound, updated_at = {now}",
            ))
            .bind(node.clone())
            .bind(s.name.clone())
            .bind(s.value.clone())
            .bind(s.attribute_type.clone())
            .bind(allowable)
            .bind(s.lower_bound)
            .bind(s.max_length)
            .bind(s.min_length)
            .bind(s.read_only)
            .bind(s.reset_required)
            .bind(s.unique)
            .bind(s.upper_bound)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn list_bios_settings_impl(
        &self,
        node: Uuid,
    ) -> StoreResult<Vec<BiosSetting>> {
        self.node_exists(node).await?;
        let rows = sqlx::query(self.sql(&format!(
            "SELECT {BIOS_COLS} FROM bios_settings WHERE node_uuid = $1 ORDER BY name"
        )))
        .bind(node.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(bios_from_row).collect()
    }

    pub(super) async fn set_firmware_components_impl(
        &self,
        token: &LockToken,
        components: &[FirmwareComponent],
    ) -> StoreResult<()> {
        for c in components {
            check_text("component", &c.component)?;
            check_text("initial_version", &c.initial_version)?;
            for t in [
                &c.current_version,
                &c.last_version_flashed,
                &c.vendor,
                &c.model,
                &c.serial_number,
            ]
            .into_iter()
            .flatten()
            {
                check_text(&c.component, t)?;
            }
        }
        let _g = self.write_guard().await;
        let mut tx = self.begin_write().await?;
        if let Err(e) = self.fence(&mut tx, token).await {
            tx.rollback().await?;
            return Err(e);
        }
        let node = token.node.to_string();
        let keep: Vec<&str> = components.iter().map(|c| c.component.as_str()).collect();
        let existing =
            sqlx::query("SELECT component FROM firmware_components WHERE node_uuid = $1")
                .bind(node.clone())
                .fetch_all(&mut *tx)
                .await?;
        for r in &existing {
            let name: String = r.try_get("component")?;
            if !keep.contains(&name.as_str()) {
                sqlx::query(
                    "DELETE FROM firmware_components WHERE node_uuid = $1 AND component = $2",
                )
                .bind(node.clone())
                .bind(name)
                .execute(&mut *tx)
                .await?;
            }
        }
        for c in components {
            sqlx::query(self.sql(
                "INSERT INTO firmware_components (node_uuid, component, initial_version, \
                 current_version, last_version_flashed, vendor, model, serial_number, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, {now}) \
                 ON CONFLICT (node_uuid, component) DO UPDATE SET \
                 initial_version = excluded.initial_version, \
                 current_version = excluded.current_version, \
                 last_version_flashed = excluded.last_version_flashed, \
                 vendor = excluded.vendor, model = excluded.model, \
                 serial_number = excluded.serial_number, updated_at = {now}",
            ))
            .bind(node.clone())
            .bind(c.component.clone())
            .bind(c.initial_version.clone())
            .bind(c.current_version.clone())
            .bind(c.last_version_flashed.clone())
            .bind(c.vendor.clone())
            .bind(c.model.clone())
            .bind(c.serial_number.clone())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn list_firmware_components_impl(
        &self,
        node: Uuid,
    ) -> StoreResult<Vec<FirmwareComponent>> {
        self.node_exists(node).await?;
        let rows = sqlx::query(self.sql(&format!(
            "SELECT {FIRMWARE_COLS} FROM firmware_components WHERE node_uuid = $1 \
             ORDER BY component"
        )))
        .bind(node.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(firmware_from_row).collect()
    }

    pub(super) async fn set_node_inventory_impl(
        &self,
        token: &LockToken,
        inventory: &serde_json::Value,
        plugin_data: &serde_json::Value,
    ) -> StoreResult<()> {
        let inventory = json_text(inventory)?;
        let plugin_data = json_text(plugin_data)?;
        let _g = self.write_guard().await;
        let mut tx = self.begin_write().await?;
        if let Err(e) = self.fence(&mut tx, token).await {
            tx.rollback().await?;
            return Err(e);
        }
        sqlx::query(self.sql(
            "INSERT INTO node_inventory (node_uuid, inventory, plugin_data, created_at) \
             VALUES ($1, $2, $3, {now}) ON CONFLICT (node_uuid) DO UPDATE SET \
             inventory = excluded.inventory, plugin_data = excluded.plugin_data, \
             updated_at = {now}",
        ))
        .bind(token.node.to_string())
        .bind(inventory)
        .bind(plugin_data)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn get_node_inventory_impl(
        &self,
        node: Uuid,
    ) -> StoreResult<Option<NodeInventory>> {
        let row = sqlx::query(
            "SELECT inventory, plugin_data, created_at, updated_at FROM node_inventory \
             WHERE node_uuid = $1",
        )
        .bind(node.to_string())
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else {
            return Ok(None);
        };
        let parse = |col: &str| -> StoreResult<serde_json::Value> {
            let text: String = r.try_get(col)?;
            serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("{col}: {e}")))
        };
        Ok(Some(NodeInventory {
            inventory: parse("inventory")?,
            plugin_data: parse("plugin_data")?,
            created_at: DbTime(r.try_get("created_at")?),
            updated_at: r.try_get::<Option<i64>, _>("updated_at")?.map(DbTime),
        }))
    }
}

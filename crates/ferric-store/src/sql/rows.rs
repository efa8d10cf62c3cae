//! Decoding rows into domain types, shared by every concept file; on either
//! driver (the `Any` pool or the native SQLite read pool) where generic.

use crate::types::*;
use crate::{StoreError, StoreResult};
use ferric_core::{DbTime, Node, PowerState, ProvisionState, Reservation};
use serde_json::{Map, Value};
use sqlx::any::AnyRow;
use sqlx::{ColumnIndex, Decode, Row, Type};
use std::collections::BTreeMap;
use std::str::FromStr;
use uuid::Uuid;

pub(super) fn token_matches(r: &AnyRow, token: &LockToken) -> StoreResult<bool> {
    let holder: Option<String> = r.try_get("reservation")?;
    let task: Option<String> = r.try_get("lock_task")?;
    let epoch: i64 = r.try_get("lock_epoch")?;
    Ok(holder.as_deref() == Some(token.holder.as_str())
        && task.as_deref() == Some(token.task_id.to_string().as_str())
        && epoch == token.epoch)
}

pub(super) fn parse_uuid(s: &str) -> StoreResult<Uuid> {
    Uuid::parse_str(s).map_err(|e| StoreError::Corrupt(format!("bad uuid {s:?}: {e}")))
}

pub(super) fn get_opt_bool<'r, R>(r: &'r R, col: &'static str) -> StoreResult<Option<bool>>
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

pub(super) fn json_map(s: &str, col: &str) -> StoreResult<Map<String, Value>> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("{col}: {e}")))
}

pub(super) fn json_text<T: serde::Serialize>(v: &T) -> StoreResult<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Invalid(e.to_string()))
}

pub(super) fn opt_enum<T: FromStr>(v: Option<String>, col: &str) -> StoreResult<Option<T>> {
    v.map(|s| {
        s.parse::<T>()
            .map_err(|_| StoreError::Corrupt(format!("{col}: unknown value {s:?}")))
    })
    .transpose()
}

/// A node from a row of `{node_cols}`, on either driver (the `Any` pool or
/// the native SQLite read pool).
pub(super) fn node_from_row<'r, R>(r: &'r R) -> StoreResult<Node>
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

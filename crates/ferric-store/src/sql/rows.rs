//! Decoding rows into domain types, shared by every concept file; on either
//! driver (the `Any` pool or the native SQLite read pool) where generic.

use crate::types::*;
use crate::{StoreError, StoreResult};
use ferric_core::{DbTime, Node, NodeAttrs, PowerState, ProvisionState, Reservation};
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
        attrs: attrs_from_row(r)?,
    })
}

/// The columns of [`NodeAttrs`], in the order [`bind_attrs!`] binds them.
pub(super) const ATTR_COLS: [&str; 26] = [
    "resource_class",
    "owner",
    "lessee",
    "description",
    "automated_clean",
    "protected",
    "protected_reason",
    "retired",
    "retired_reason",
    "disable_power_off",
    "shard",
    "parent_node",
    "network_data",
    "boot_mode",
    "secure_boot",
    "instance_name",
    "health",
    "chassis_uuid",
    "traits",
    "fault",
    "allocation_uuid",
    "console_enabled",
    "raid_config",
    "target_raid_config",
    "inspection_started_at",
    "inspection_finished_at",
];

/// Bind the values of a [`NodeAttrs`] in [`ATTR_COLS`] order (a macro: the
/// query types of the two drivers differ). Evaluates to
/// `StoreResult<query>`.
macro_rules! bind_attrs {
    ($q:expr, $a:expr) => {{
        let a: &ferric_core::NodeAttrs = $a;
        (|| -> $crate::StoreResult<_> {
            Ok($q
                .bind(a.resource_class.clone())
                .bind(a.owner.clone())
                .bind(a.lessee.clone())
                .bind(a.description.clone())
                .bind(a.automated_clean)
                .bind(a.protected)
                .bind(a.protected_reason.clone())
                .bind(a.retired)
                .bind(a.retired_reason.clone())
                .bind(a.disable_power_off)
                .bind(a.shard.clone())
                .bind(a.parent_node.map(|u| u.to_string()))
                .bind(json_text(&a.network_data)?)
                .bind(a.boot_mode.clone())
                .bind(a.secure_boot)
                .bind(a.instance_name.clone())
                .bind(a.health.clone())
                .bind(a.chassis_uuid.map(|u| u.to_string()))
                .bind(json_text(&a.traits)?)
                .bind(a.fault.clone())
                .bind(a.allocation_uuid.map(|u| u.to_string()))
                .bind(a.console_enabled)
                .bind(json_text(&a.raid_config)?)
                .bind(json_text(&a.target_raid_config)?)
                .bind(a.inspection_started_at.map(|t| t.0))
                .bind(a.inspection_finished_at.map(|t| t.0)))
        })()
    }};
}
pub(super) use bind_attrs;

fn opt_uuid<'r, R>(r: &'r R, col: &'static str) -> StoreResult<Option<Uuid>>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
{
    r.try_get::<Option<String>, _>(col)?
        .as_deref()
        .map(parse_uuid)
        .transpose()
}

fn attrs_from_row<'r, R>(r: &'r R) -> StoreResult<NodeAttrs>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    bool: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let traits: Vec<String> = serde_json::from_str(&r.try_get::<String, _>("traits")?)
        .map_err(|e| StoreError::Corrupt(format!("traits: {e}")))?;
    Ok(NodeAttrs {
        resource_class: r.try_get("resource_class")?,
        owner: r.try_get("owner")?,
        lessee: r.try_get("lessee")?,
        description: r.try_get("description")?,
        automated_clean: get_opt_bool(r, "automated_clean")?,
        protected: get_opt_bool(r, "protected")?.unwrap_or(false),
        protected_reason: r.try_get("protected_reason")?,
        retired: get_opt_bool(r, "retired")?.unwrap_or(false),
        retired_reason: r.try_get("retired_reason")?,
        disable_power_off: get_opt_bool(r, "disable_power_off")?.unwrap_or(false),
        shard: r.try_get("shard")?,
        parent_node: opt_uuid(r, "parent_node")?,
        network_data: json_map(&r.try_get::<String, _>("network_data")?, "network_data")?,
        boot_mode: r.try_get("boot_mode")?,
        secure_boot: get_opt_bool(r, "secure_boot")?,
        instance_name: r.try_get("instance_name")?,
        health: r.try_get("health")?,
        chassis_uuid: opt_uuid(r, "chassis_uuid")?,
        traits,
        fault: r.try_get("fault")?,
        allocation_uuid: opt_uuid(r, "allocation_uuid")?,
        console_enabled: get_opt_bool(r, "console_enabled")?.unwrap_or(false),
        raid_config: json_map(&r.try_get::<String, _>("raid_config")?, "raid_config")?,
        target_raid_config: json_map(
            &r.try_get::<String, _>("target_raid_config")?,
            "target_raid_config",
        )?,
        inspection_started_at: r
            .try_get::<Option<i64>, _>("inspection_started_at")?
            .map(DbTime),
        inspection_finished_at: r
            .try_get::<Option<i64>, _>("inspection_finished_at")?
            .map(DbTime),
    })
}

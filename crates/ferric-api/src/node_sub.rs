//! Node sub-resources and the small driver/event endpoints clients call
//! (Ironic 39's `NodeManagementController`, `NodeHistoryController`,
//! `NodeBiosController`, `NodeFirmwareController`, `NodeInventoryController`,
//! `NodeVmediaController`, `NodeVendorPassthruController`, the drivers'
//! `properties` and `vendor_passthru`, and `EventsController`):
//!
//! * `…/management/boot_device` (GET, PUT), `…/boot_device/supported`,
//!   `…/management/inject_nmi` (1.29): through the node's management
//!   interface, under its lock ([`ferric_conductor::management`]);
//! * `…/history` (1.78), `…/history/{event}`; `…/bios` (1.40),
//!   `…/bios/{setting}`; `…/firmware` (1.86); `…/inventory` (1.81): read
//!   from the store (the caches inspection and cleaning write);
//! * `…/vmedia` (POST/DELETE 1.89, GET 1.93): no management interface does
//!   virtual media yet, answered as Ironic answers for such a driver;
//! * `…/vendor_passthru[/methods]`, `/v1/drivers/{name}/vendor_passthru[/methods]`:
//!   ferric's vendor interfaces have no methods;
//! * `/v1/drivers/{name}/properties`; `POST /v1/events` (1.54).
//!
//! Version gates come first (after the node identifier is checked), as in
//! Ironic's `_lookup`: a sub-resource older than its version is a 404.

use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery, BaseUrl, JsonBody, OptionalJsonBody};
use crate::nodes::node_ident;
use crate::render::{links, timestamp};
use crate::resource::py_repr;
use crate::version::Version;
use crate::ApiState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use axum::{Json, Router};
use ferric_conductor::drivers::BootDevice;
use ferric_conductor::management::{self, ManagementError, VmediaAction, VMEDIA_DEVICES};
use ferric_store::{BiosSetting, FirmwareComponent, HistoryEvent, HistoryQuery, NodeIdent};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use uuid::Uuid;

/// The routes of this module.
pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route(
            "/v1/nodes/{ident}/management/boot_device",
            get(get_boot_device).put(set_boot_device),
        )
        .route(
            "/v1/nodes/{ident}/management/boot_device/supported",
            get(supported_boot_devices),
        )
        .route("/v1/nodes/{ident}/management/inject_nmi", put(inject_nmi))
        .route("/v1/nodes/{ident}/history", get(list_history))
        .route("/v1/nodes/{ident}/history/{event}", get(get_history))
        .route("/v1/nodes/{ident}/bios", get(list_bios))
        .route("/v1/nodes/{ident}/bios/{setting}", get(get_bios))
        .route("/v1/nodes/{ident}/firmware", get(list_firmware))
        .route("/v1/nodes/{ident}/inventory", get(get_inventory))
        .route(
            "/v1/nodes/{ident}/vmedia",
            get(get_vmedia).post(attach_vmedia).delete(detach_vmedia),
        )
        .route(
            "/v1/nodes/{ident}/vendor_passthru/methods",
            get(node_vendor_methods),
        )
        .route(
            "/v1/nodes/{ident}/vendor_passthru",
            any(node_vendor_passthru),
        )
        .route(
            "/v1/nodes/{ident}/vendor_passthru/{method}",
            any(node_vendor_passthru_path),
        )
        .route(
            "/v1/drivers/{name}/vendor_passthru/methods",
            get(driver_vendor_methods),
        )
        .route(
            "/v1/drivers/{name}/vendor_passthru",
            any(driver_vendor_passthru),
        )
        .route(
            "/v1/drivers/{name}/vendor_passthru/{method}",
            any(driver_vendor_passthru_path),
        )
        .route("/v1/drivers/{name}/properties", get(driver_properties))
        .route("/v1/events", post(events))
}

impl From<ManagementError> for ApiError {
    fn from(e: ManagementError) -> Self {
        match e {
            ManagementError::Invalid(m) | ManagementError::Unsupported(m) => {
                ApiError::bad_request(m)
            }
            ManagementError::Driver(d) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, d.message)
            }
            ManagementError::Task(t) => t.into(),
        }
    }
}

/// 404 for a resource the request's microversion does not have (ferric's
/// wording for every version gate, as `misc::require`).
fn too_old(minor: u32) -> ApiError {
    ApiError::not_found(format!(
        "The resource could not be found. (It needs API version 1.{minor} or later.)"
    ))
}

/// The node identifier, then the sub-resource's version gate (Ironic's
/// `_lookup` checks in this order and answers 404).
fn gated(id: &str, v: Version, min: u32) -> Result<NodeIdent, ApiError> {
    let ident = node_ident(id, v)?;
    if !v.at_least(min) {
        return Err(too_old(min));
    }
    Ok(ident)
}

/// oslo's `bool_from_string(strict=True)` as `args.boolean` uses it.
fn ironic_bool(name: &str, v: &Value) -> Result<Option<bool>, ApiError> {
    let text = match v {
        Value::Null => return Ok(None),
        Value::Bool(b) => return Ok(Some(*b)),
        Value::String(s) => s.trim().to_ascii_lowercase(),
        Value::Number(n) => n.to_string(),
        other => py_repr(other),
    };
    match text.as_str() {
        "1" | "t" | "true" | "on" | "y" | "yes" => Ok(Some(true)),
        "0" | "f" | "false" | "off" | "n" | "no" => Ok(Some(false)),
        _ => Err(ApiError::bad_request(format!(
            "Invalid {name}: Unrecognized value '{text}', acceptable values are: '0', '1', 'f', 'false', 'n', 'no', 'off', 'on', 't', 'true', 'y', 'yes'"
        ))),
    }
}

// ----- management -----------------------------------------------------------

/// `GET /v1/nodes/{ident}/management/boot_device`.
async fn get_boot_device(
    State(st): State<ApiState>,
    v: Version,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let ident = node_ident(&id, v)?;
    let state = management::get_boot_device(&st.prov, ident, st.retry).await?;
    Ok(Json(json!({
        "boot_device": state.device.map(BootDevice::as_str),
        "persistent": state.persistent,
    }))
    .into_response())
}

/// `PUT /v1/nodes/{ident}/management/boot_device`: `{"boot_device": ...,
/// "persistent": false}` → 204.
async fn set_boot_device(
    State(st): State<ApiState>,
    v: Version,
    ApiPath(id): ApiPath<String>,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> Result<Response, ApiError> {
    let ident = node_ident(&id, v)?;
    if let Some(k) = body
        .keys()
        .find(|k| !matches!(k.as_str(), "boot_device" | "persistent"))
    {
        return Err(ApiError::bad_request(format!("Unknown argument: \"{k}\"")));
    }
    let device = match body.get("boot_device") {
        None | Some(Value::Null) => {
            return Err(ApiError::bad_request("Missing argument: \"boot_device\""))
        }
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Expected string for boot_device: {}",
                py_repr(other)
            )))
        }
    };
    let persistent = match body.get("persistent") {
        None => false,
        Some(p) => ironic_bool("persistent", p)?.unwrap_or(false),
    };
    management::set_boot_device(&st.prov, ident, &device, persistent, st.retry).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /v1/nodes/{ident}/management/boot_device/supported`.
async fn supported_boot_devices(
    State(st): State<ApiState>,
    v: Version,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let ident = node_ident(&id, v)?;
    let devices = management::supported_boot_devices(&st.prov, ident, st.retry).await?;
    let names: Vec<&str> = devices.into_iter().map(BootDevice::as_str).collect();
    Ok(Json(json!({ "supported_boot_devices": names })).into_response())
}

/// `PUT /v1/nodes/{ident}/management/inject_nmi` (1.29; any body ignored) → 204.
async fn inject_nmi(
    State(st): State<ApiState>,
    v: Version,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    if !v.at_least(29) {
        return Err(too_old(29));
    }
    let ident = node_ident(&id, v)?;
    management::inject_nmi(&st.prov, ident, st.retry).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ----- history --------------------------------------------------------------

const HISTORY_STANDARD: [&str; 4] = ["uuid", "created_at", "severity", "event"];
const HISTORY_DETAIL: [&str; 11] = [
    "uuid",
    "created_at",
    "severity",
    "event_type",
    "event",
    "conductor",
    "user",
    "project",
    "state",
    "target_provision_state",
    "duration_seconds",
];

/// One history event as Ironic renders it at `v` (`detail`: every field).
fn history_doc(base: &str, node: Uuid, e: &HistoryEvent, detail: bool, v: Version) -> Value {
    let mut m = Map::new();
    m.insert("uuid".into(), json!(e.uuid));
    m.insert("created_at".into(), timestamp(e.created_at));
    m.insert("severity".into(), json!(e.severity));
    if detail {
        m.insert("event_type".into(), json!(e.event_type));
        m.insert("event".into(), json!(e.event));
        m.insert("conductor".into(), json!(e.conductor));
        m.insert("user".into(), json!(e.user));
        if v.at_least(113) {
            m.insert("project".into(), json!(e.project));
        }
        if v.at_least(115) {
            m.insert("state".into(), json!(e.state));
            m.insert(
                "target_provision_state".into(),
                json!(e.target_provision_state),
            );
            m.insert("duration_seconds".into(), json!(e.duration_seconds));
        }
    } else {
        // The list without detail truncates long events (Ironic's spec).
        let event = if e.event.chars().count() > 255 {
            format!("{}...", e.event.chars().take(251).collect::<String>())
        } else {
            e.event.clone()
        };
        m.insert("event".into(), json!(event));
    }
    m.insert(
        "links".into(),
        json!([{"href": format!("{base}/v1/nodes/{node}/history/{}", e.uuid), "rel": "self"}]),
    );
    Value::Object(m)
}

/// `GET …/history` query.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryListQuery {
    detail: Option<String>,
    marker: Option<String>,
    limit: Option<String>,
    sort_key: Option<String>,
    sort_dir: Option<String>,
}

/// `GET /v1/nodes/{ident}/history` (1.78).
async fn list_history(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<HistoryListQuery>,
) -> Result<Response, ApiError> {
    let ident = gated(&id, v, 78)?;
    let detail = match &q.detail {
        None => false,
        Some(d) => ironic_bool("detail", &json!(d))?.unwrap_or(false),
    };
    let marker = match &q.marker {
        None => None,
        Some(m) => Some(
            Uuid::parse_str(m)
                .map_err(|_| ApiError::bad_request(format!("Expected UUID for marker: {m}")))?,
        ),
    };
    let limit = crate::resource::parse_limit(q.limit.as_deref())?;
    let sort_dir = q.sort_dir.as_deref().unwrap_or("asc");
    if !matches!(sort_dir, "asc" | "desc") {
        return Err(ApiError::bad_request(format!(
            "Invalid sort direction: {sort_dir}. Acceptable values are 'asc' or 'desc'"
        )));
    }
    let sort_key = q.sort_key.as_deref().unwrap_or("created_at");
    if sort_key != "created_at" {
        return Err(ApiError::bad_request(format!(
            "The sort_key value {sort_key} is an invalid field for sorting"
        )));
    }
    let node = st.tm.store().get_node(&ident).await?;
    if let Some(m) = marker {
        if st
            .tm
            .store()
            .get_node_history(node.uuid, m)
            .await?
            .is_none()
        {
            return Err(ApiError::not_found(format!(
                "Node history record {m} could not be found."
            )));
        }
    }
    let query = HistoryQuery {
        marker,
        limit: Some(limit),
        descending: sort_dir == "desc",
    };
    let events = st.tm.store().list_node_history(node.uuid, &query).await?;
    let items: Vec<Value> = events
        .iter()
        .map(|e| history_doc(&base.0, node.uuid, e, detail, v))
        .collect();
    let mut body = json!({ "history": items });
    if !events.is_empty() && events.len() as u32 == limit {
        let fields: &[&str] = if detail {
            &HISTORY_DETAIL
        } else {
            &HISTORY_STANDARD
        };
        if let Some(last) = events.last() {
            body["next"] = json!(format!(
                "{}/v1/nodes/{id}/history?sort_key={sort_key}&sort_dir={sort_dir}&fields={}&limit={limit}&marker={}",
                base.0,
                fields.join(","),
                last.uuid
            ));
        }
    }
    Ok(Json(body).into_response())
}

/// `GET /v1/nodes/{ident}/history/{event}` (1.78): every field.
async fn get_history(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiPath((id, event)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let ident = gated(&id, v, 78)?;
    let node = st.tm.store().get_node(&ident).await?;
    let not_found =
        || ApiError::not_found(format!("Node history record {event} could not be found."));
    let Ok(event_uuid) = Uuid::parse_str(&event) else {
        return Err(not_found());
    };
    let e = st
        .tm
        .store()
        .get_node_history(node.uuid, event_uuid)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(history_doc(&base.0, node.uuid, &e, true, v)).into_response())
}

// ----- BIOS -----------------------------------------------------------------

const BIOS_DEFAULT: [&str; 2] = ["name", "value"];
const BIOS_REGISTRY: [&str; 11] = [
    "name",
    "value",
    "attribute_type",
    "allowable_values",
    "lower_bound",
    "max_length",
    "min_length",
    "read_only",
    "reset_required",
    "unique",
    "upper_bound",
];
/// The `fields` Ironic's schema accepts for BIOS settings (1.74).
const BIOS_FIELDS: [&str; 14] = [
    "allowable_values",
    "attribute_type",
    "created_at",
    "lower_bound",
    "links",
    "max_length",
    "min_length",
    "name",
    "node_uuid",
    "read_only",
    "reset_required",
    "unique",
    "updated_at",
    "value",
];

fn bios_value(s: &BiosSetting, node: Uuid, field: &str) -> Value {
    match field {
        "name" => json!(s.name),
        "value" => json!(s.value),
        "attribute_type" => json!(s.attribute_type),
        "allowable_values" => json!(s.allowable_values.clone().unwrap_or_default()),
        "lower_bound" => json!(s.lower_bound),
        "max_length" => json!(s.max_length),
        "min_length" => json!(s.min_length),
        "read_only" => json!(s.read_only),
        "reset_required" => json!(s.reset_required),
        "unique" => json!(s.unique),
        "upper_bound" => json!(s.upper_bound),
        "node_uuid" => json!(node),
        _ => Value::Null,
    }
}

/// One setting: `created_at`, `updated_at`, `fields`, links under `link_node`.
fn bios_doc(base: &str, link_node: &str, node: Uuid, s: &BiosSetting, fields: &[&str]) -> Value {
    let mut m = Map::new();
    m.insert(
        "created_at".into(),
        s.created_at.map_or(Value::Null, timestamp),
    );
    m.insert(
        "updated_at".into(),
        s.updated_at.map_or(Value::Null, timestamp),
    );
    for f in fields {
        if !matches!(*f, "created_at" | "updated_at" | "links") {
            m.insert((*f).to_string(), bios_value(s, node, f));
        }
    }
    m.insert(
        "links".into(),
        links(base, &format!("nodes/{link_node}/bios/{}", s.name)),
    );
    Value::Object(m)
}

/// `GET …/bios` query.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BiosListQuery {
    detail: Option<String>,
    fields: Option<String>,
}

/// `GET /v1/nodes/{ident}/bios` (1.40; `detail` and `fields` 1.74).
async fn list_bios(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<BiosListQuery>,
) -> Result<Response, ApiError> {
    let ident = gated(&id, v, 40)?;
    if let Some(d) = &q.detail {
        if !v.at_least(74) {
            return Err(ApiError::bad_request(format!(
                "Invalid query parameter ?detail={d} received."
            )));
        }
    }
    if let Some(f) = &q.fields {
        if !v.at_least(74) {
            return Err(ApiError::bad_request(format!(
                "Invalid query parameter ?fields={f} received."
            )));
        }
    }
    let detail = match &q.detail {
        None => false,
        Some(d) => ironic_bool("detail", &json!(d))?.unwrap_or(false),
    };
    let requested: Option<Vec<&str>> = q.fields.as_deref().map(|f| {
        f.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    });
    if let Some(fields) = &requested {
        if let Some(bad) = fields.iter().find(|f| !BIOS_FIELDS.contains(f)) {
            return Err(ApiError::bad_request(format!(
                "Schema error: '{bad}' is not one of {}",
                py_repr(&json!(BIOS_FIELDS))
            )));
        }
        if detail {
            return Err(ApiError::bad_request(
                "Can not specify ?detail=True and fields in the same request.",
            ));
        }
    }
    let fields: Vec<&str> = match (&requested, detail) {
        (Some(f), _) => f.clone(),
        (None, true) => BIOS_REGISTRY.to_vec(),
        (None, false) => BIOS_DEFAULT.to_vec(),
    };
    let node = st.tm.store().get_node(&ident).await?;
    let settings = st.tm.store().list_bios_settings(node.uuid).await?;
    let items: Vec<Value> = settings
        .iter()
        .map(|s| bios_doc(&base.0, &id, node.uuid, s, &fields))
        .collect();
    Ok(Json(json!({ "bios": items })).into_response())
}

/// `GET /v1/nodes/{ident}/bios/{setting}` (1.40; registry fields 1.74).
async fn get_bios(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiPath((id, name)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let ident = gated(&id, v, 40)?;
    let node = st.tm.store().get_node(&ident).await?;
    let settings = st.tm.store().list_bios_settings(node.uuid).await?;
    let Some(s) = settings.iter().find(|s| s.name == name) else {
        return Err(ApiError::not_found(format!(
            "Node {} doesn't have a BIOS setting '{name}'",
            node.uuid
        )));
    };
    let fields: &[&str] = if v.at_least(74) {
        &BIOS_REGISTRY
    } else {
        &BIOS_DEFAULT
    };
    let mut out = Map::new();
    out.insert(
        name.clone(),
        bios_doc(&base.0, &node.uuid.to_string(), node.uuid, s, fields),
    );
    Ok(Json(out).into_response())
}

// ----- firmware -------------------------------------------------------------

const FIRMWARE_DEFAULT: [&str; 4] = [
    "component",
    "initial_version",
    "current_version",
    "last_version_flashed",
];
const FIRMWARE_IDENTITY: [&str; 3] = ["vendor", "model", "serial_number"];

fn firmware_value(c: &FirmwareComponent, field: &str) -> Value {
    match field {
        "component" => json!(c.component),
        "initial_version" => json!(c.initial_version),
        "current_version" => json!(c.current_version),
        "last_version_flashed" => json!(c.last_version_flashed),
        "vendor" => json!(c.vendor),
        "model" => json!(c.model),
        "serial_number" => json!(c.serial_number),
        _ => Value::Null,
    }
}

/// `GET …/firmware` query.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FirmwareQuery {
    fields: Option<String>,
}

/// `GET /v1/nodes/{ident}/firmware` (1.86; vendor, model, serial_number 1.114).
async fn list_firmware(
    State(st): State<ApiState>,
    v: Version,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<FirmwareQuery>,
) -> Result<Response, ApiError> {
    let ident = gated(&id, v, 86)?;
    let mut known: Vec<&str> = FIRMWARE_DEFAULT.to_vec();
    if v.at_least(114) {
        known.extend(FIRMWARE_IDENTITY);
    }
    let fields: Vec<&str> = match q.fields.as_deref() {
        None => known.clone(),
        Some(f) => {
            let asked: Vec<&str> = f
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            let mut identity: Vec<&str> = asked
                .iter()
                .copied()
                .filter(|a| FIRMWARE_IDENTITY.contains(a))
                .collect();
            if !v.at_least(114) && !identity.is_empty() {
                identity.sort_unstable();
                return Err(ApiError::bad_request(format!(
                    "Fields {} are not allowed in this API version. They require at least API version 1.114.",
                    identity.join(", ")
                )));
            }
            let all = [
                &FIRMWARE_DEFAULT[..],
                &FIRMWARE_IDENTITY[..],
                &["created_at", "updated_at"],
            ]
            .concat();
            if let Some(bad) = asked.iter().find(|a| !all.contains(a)) {
                return Err(ApiError::bad_request(format!(
                    "Schema error: '{bad}' is not one of {}",
                    py_repr(&json!(all))
                )));
            }
            asked
        }
    };
    let node = st.tm.store().get_node(&ident).await?;
    let components = st.tm.store().list_firmware_components(node.uuid).await?;
    let items: Vec<Value> = components
        .iter()
        .map(|c| {
            let mut m = Map::new();
            m.insert(
                "created_at".into(),
                c.created_at.map_or(Value::Null, timestamp),
            );
            m.insert(
                "updated_at".into(),
                c.updated_at.map_or(Value::Null, timestamp),
            );
            for f in &fields {
                if !matches!(*f, "created_at" | "updated_at") {
                    m.insert((*f).to_string(), firmware_value(c, f));
                }
            }
            Value::Object(m)
        })
        .collect();
    Ok(Json(json!({ "firmware": items })).into_response())
}

// ----- inventory ------------------------------------------------------------

/// `GET /v1/nodes/{ident}/inventory` (1.81).
async fn get_inventory(
    State(st): State<ApiState>,
    v: Version,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let ident = gated(&id, v, 81)?;
    let node = st.tm.store().get_node(&ident).await?;
    match st.tm.store().get_node_inventory(node.uuid).await? {
        Some(inv) => Ok(Json(json!({
            "inventory": inv.inventory,
            "plugin_data": inv.plugin_data,
        }))
        .into_response()),
        None => Err(ApiError::not_found(format!(
            "Node inventory record for node {} could not be found.",
            node.uuid
        ))),
    }
}

// ----- virtual media --------------------------------------------------------

/// Ironic's `image_publisher.VMEDIA_SUPPORTED_URL_SCHEMES`.
const VMEDIA_SCHEMES: [&str; 5] = ["http", "https", "nfs", "cifs", "smb"];

/// `GET /v1/nodes/{ident}/vmedia` (1.93).
async fn get_vmedia(
    State(st): State<ApiState>,
    v: Version,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let ident = gated(&id, v, 89)?;
    if !v.at_least(93) {
        return Err(too_old(93));
    }
    let media = management::get_virtual_media(&st.prov, ident, st.retry).await?;
    Ok(Json(media).into_response())
}

/// Validate the attach body as Ironic's `VMEDIA_ATTACH_VALIDATOR`.
fn vmedia_body(body: &Value) -> Result<(String, String), ApiError> {
    let schema_error = |m: String| ApiError::bad_request(format!("Schema error: {m}"));
    let Value::Object(o) = body else {
        return Err(schema_error(format!(
            "{} is not of type 'object'",
            py_repr(body)
        )));
    };
    for k in o.keys() {
        if !matches!(
            k.as_str(),
            "device_type" | "image_url" | "image_download_source"
        ) {
            return Err(schema_error(format!(
                "Additional properties are not allowed ('{k}' was unexpected)"
            )));
        }
    }
    for k in ["device_type", "image_url"] {
        if !o.contains_key(k) {
            return Err(schema_error(format!("'{k}' is a required property")));
        }
    }
    let device = match &o["device_type"] {
        Value::String(s) if VMEDIA_DEVICES.contains(&s.as_str()) => s.clone(),
        Value::String(s) => {
            return Err(schema_error(format!(
                "'{s}' is not one of {}",
                py_repr(&json!(VMEDIA_DEVICES))
            )))
        }
        other => {
            return Err(schema_error(format!(
                "{} is not of type 'string'",
                py_repr(other)
            )))
        }
    };
    let url = match &o["image_url"] {
        Value::String(s) => s.clone(),
        other => {
            return Err(schema_error(format!(
                "{} is not of type 'string'",
                py_repr(other)
            )))
        }
    };
    if let Some(src) = o.get("image_download_source") {
        match src {
            Value::String(s) if matches!(s.as_str(), "http" | "local" | "swift") => {}
            Value::String(s) => {
                return Err(schema_error(format!(
                    "'{s}' is not one of ['http', 'local', 'swift']"
                )))
            }
            other => {
                return Err(schema_error(format!(
                    "{} is not of type 'string'",
                    py_repr(other)
                )))
            }
        }
    }
    Ok((device, url))
}

/// The scheme of `url` as Python's `urlparse` reads it (empty when none).
fn url_scheme(url: &str) -> String {
    match url.split_once(':') {
        Some((scheme, _))
            if !scheme.is_empty()
                && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
        {
            scheme.to_ascii_lowercase()
        }
        _ => String::new(),
    }
}

/// `POST /v1/nodes/{ident}/vmedia` (1.89) → 204.
async fn attach_vmedia(
    State(st): State<ApiState>,
    v: Version,
    ApiPath(id): ApiPath<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let ident = gated(&id, v, 89)?;
    let (device_type, url) = vmedia_body(&body)?;
    let scheme = url_scheme(&url);
    if !VMEDIA_SCHEMES.contains(&scheme.as_str()) {
        return Err(ApiError::bad_request(format!(
            "Unsupported or missing URL scheme: {scheme}"
        )));
    }
    crate::extract::check_text("image_url", &url)?;
    management::virtual_media(
        &st.prov,
        ident,
        VmediaAction::Attach { device_type },
        st.retry,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE …/vmedia` query.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DetachQuery {
    device_types: Option<Value>,
}

/// Ironic's `args.string_list`: comma-separated (or a JSON list), trimmed,
/// lower-cased, without duplicates; empty is `None`.
fn string_list(name: &str, v: &Value) -> Result<Option<Vec<String>>, ApiError> {
    let raw: Vec<String> = match v {
        Value::Null => return Ok(None),
        Value::String(s) => s.split(',').map(str::to_string).collect(),
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Ok(s.clone()),
                other => Err(ApiError::bad_request(format!(
                    "Expected string for {name}: {}",
                    py_repr(other)
                ))),
            })
            .collect::<Result<_, _>>()?,
        other => {
            return Err(ApiError::bad_request(format!(
                "Expected string for {name}: {}",
                py_repr(other)
            )))
        }
    };
    let mut out: Vec<String> = Vec::new();
    for item in raw {
        let item = item.trim().to_lowercase();
        if !item.is_empty() && !out.contains(&item) {
            out.push(item);
        }
    }
    Ok(Some(out).filter(|l| !l.is_empty()))
}

/// `DELETE /v1/nodes/{ident}/vmedia` (1.89) → 204. `device_types` comes
/// in the query (`?device_types=cdrom,floppy`) or, as openstacksdk sends
/// it, in a JSON body (`{"device_types": "cdrom"}`); none: every device.
async fn detach_vmedia(
    State(st): State<ApiState>,
    v: Version,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<DetachQuery>,
    OptionalJsonBody(body): OptionalJsonBody<DetachQuery>,
) -> Result<Response, ApiError> {
    let ident = gated(&id, v, 89)?;
    let asked = q
        .device_types
        .or_else(|| body.and_then(|b| b.device_types))
        .unwrap_or(Value::Null);
    let device_types = string_list("device_types", &asked)?;
    if let Some(list) = &device_types {
        let invalid: Vec<&str> = list
            .iter()
            .map(String::as_str)
            .filter(|d| !VMEDIA_DEVICES.contains(d))
            .collect();
        if !invalid.is_empty() {
            return Err(ApiError::bad_request(format!(
                "Invalid device type(s) {} (valid are {})",
                invalid.join(", "),
                VMEDIA_DEVICES.join(", ")
            )));
        }
    }
    management::virtual_media(
        &st.prov,
        ident,
        VmediaAction::Detach { device_types },
        st.retry,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ----- vendor passthru, driver properties -----------------------------------

/// `?method=` of a vendor passthru call.
#[derive(Debug, Default, Deserialize)]
struct PassthruQuery {
    method: Option<String>,
}

/// What a vendor passthru call gets: ferric's vendor interfaces have no
/// methods, so a named method has no handler.
fn no_handler(method: Option<&str>) -> ApiError {
    match method.filter(|m| !m.is_empty()) {
        None => ApiError::bad_request("Method not specified"),
        Some(m) => ApiError::bad_request(format!("No handler for method {m}")),
    }
}

/// `GET /v1/nodes/{ident}/vendor_passthru/methods`: `{}`.
async fn node_vendor_methods(
    State(st): State<ApiState>,
    v: Version,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let ident = node_ident(&id, v)?;
    st.tm.store().get_node(&ident).await?;
    Ok(Json(json!({})).into_response())
}

/// `* /v1/nodes/{ident}/vendor_passthru?method=...`.
async fn node_vendor_passthru(
    State(st): State<ApiState>,
    v: Version,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<PassthruQuery>,
    OptionalJsonBody(_body): OptionalJsonBody<Value>,
) -> Result<Response, ApiError> {
    let ident = node_ident(&id, v)?;
    if q.method.as_deref().is_none_or(str::is_empty) {
        return Err(no_handler(None));
    }
    st.tm.store().get_node(&ident).await?;
    Err(no_handler(q.method.as_deref()))
}

/// `* /v1/nodes/{ident}/vendor_passthru/{method}` (python-ironicclient's
/// form: the method in the path).
async fn node_vendor_passthru_path(
    State(st): State<ApiState>,
    v: Version,
    ApiPath((id, method)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let ident = node_ident(&id, v)?;
    st.tm.store().get_node(&ident).await?;
    Err(no_handler(Some(&method)))
}

/// `* /v1/drivers/{name}/vendor_passthru/{method}`.
async fn driver_vendor_passthru_path(
    State(st): State<ApiState>,
    ApiPath((name, method)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    if !st.drivers().has(&name) {
        return Err(driver_not_found(&name));
    }
    Err(no_handler(Some(&method)))
}

fn driver_not_found(name: &str) -> ApiError {
    ApiError::not_found(format!(
        "Could not find the following driver(s) or hardware type(s): {name}."
    ))
}

/// `GET /v1/drivers/{name}/vendor_passthru/methods`: `{}`.
async fn driver_vendor_methods(
    State(st): State<ApiState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Response, ApiError> {
    if !st.drivers().has(&name) {
        return Err(driver_not_found(&name));
    }
    Ok(Json(json!({})).into_response())
}

/// `* /v1/drivers/{name}/vendor_passthru?method=...`.
async fn driver_vendor_passthru(
    State(st): State<ApiState>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<PassthruQuery>,
    OptionalJsonBody(_body): OptionalJsonBody<Value>,
) -> Result<Response, ApiError> {
    if q.method.as_deref().is_none_or(str::is_empty) {
        return Err(no_handler(None));
    }
    if !st.drivers().has(&name) {
        return Err(driver_not_found(&name));
    }
    Err(no_handler(q.method.as_deref()))
}

/// `GET /v1/drivers/{name}/properties`: `{key: description}` of the type's
/// default interfaces.
async fn driver_properties(
    State(st): State<ApiState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Response, ApiError> {
    match management::driver_properties(st.drivers(), &name) {
        Some(props) => Ok(Json(props).into_response()),
        None => Err(driver_not_found(&name)),
    }
}

// ----- events ---------------------------------------------------------------

const EVENT_TYPES: [&str; 3] = [
    "network.bind_port",
    "network.unbind_port",
    "network.delete_port",
];

fn is_uuid_format(s: &str) -> bool {
    s.len() == 36
        && [8, 13, 18, 23].iter().all(|&i| s.as_bytes()[i] == b'-')
        && Uuid::parse_str(s).is_ok()
}

/// Ironic's `utils.is_valid_mac`: six hex pairs with one separator (`:` or `-`).
fn is_mac(s: &str) -> bool {
    let s = s.to_ascii_lowercase();
    let b = s.as_bytes();
    if b.len() != 17 {
        return false;
    }
    let sep = b[2];
    if sep != b':' && sep != b'-' {
        return false;
    }
    b.chunks(3).all(|c| {
        c[0].is_ascii_hexdigit() && c[1].is_ascii_hexdigit() && (c.len() == 2 || c[2] == sep)
    })
}

/// Validate one event as Ironic's schema (`api/schemas/v1/event.py`).
fn check_event(e: &Value) -> Result<(), String> {
    let Value::Object(o) = e else {
        return Err(format!("{} is not of type 'object'", py_repr(e)));
    };
    const KEYS: [&str; 7] = [
        "event",
        "port_id",
        "mac_address",
        "status",
        "device_id",
        "binding:host_id",
        "binding:vnic_type",
    ];
    if let Some(k) = o.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(format!(
            "Additional properties are not allowed ('{k}' was unexpected)"
        ));
    }
    for k in ["event", "port_id", "mac_address", "status"] {
        if !o.contains_key(k) {
            return Err(format!("'{k}' is a required property"));
        }
    }
    let string = |k: &str, nullable: bool| -> Result<Option<&str>, String> {
        match o.get(k) {
            None => Ok(None),
            Some(Value::Null) if nullable => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(format!(
                "{} is not of type {}",
                py_repr(other),
                if nullable {
                    "'string', 'null'"
                } else {
                    "'string'"
                }
            )),
        }
    };
    if let Some(ev) = string("event", false)? {
        if !EVENT_TYPES.contains(&ev) {
            return Err(format!(
                "'{ev}' is not one of {}",
                py_repr(&json!(EVENT_TYPES))
            ));
        }
    }
    for k in ["port_id", "device_id", "binding:host_id"] {
        if let Some(s) = string(k, k != "port_id")? {
            if !is_uuid_format(s) {
                return Err(format!("'{s}' is not a 'uuid'"));
            }
        }
    }
    if let Some(mac) = string("mac_address", false)? {
        if !is_mac(mac) {
            return Err(format!("'{mac}' is not a 'mac-address'"));
        }
    }
    string("status", false)?;
    string("binding:vnic_type", true)?;
    Ok(())
}

/// `POST /v1/events` (1.54): network events from Neutron, validated and
/// acknowledged (204); ferric's network interfaces act on none of them.
async fn events(v: Version, JsonBody(body): JsonBody<Value>) -> Result<Response, ApiError> {
    if !v.at_least(54) {
        return Err(too_old(54));
    }
    let schema_error = |m: String| ApiError::bad_request(format!("Schema error: {m}"));
    let Value::Object(o) = &body else {
        return Err(schema_error(format!(
            "{} is not of type 'object'",
            py_repr(&body)
        )));
    };
    if let Some(k) = o.keys().find(|k| k.as_str() != "events") {
        return Err(schema_error(format!(
            "Additional properties are not allowed ('{k}' was unexpected)"
        )));
    }
    let events = match o.get("events") {
        None => return Err(schema_error("'events' is a required property".into())),
        Some(Value::Array(a)) if a.is_empty() => {
            return Err(schema_error("[] should be non-empty".into()))
        }
        Some(Value::Array(a)) => a,
        Some(other) => {
            return Err(schema_error(format!(
                "{} is not of type 'array'",
                py_repr(other)
            )))
        }
    };
    for e in events {
        check_event(e).map_err(schema_error)?;
        tracing::debug!(event = %e, "received external event");
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ----- OpenAPI --------------------------------------------------------------

/// This module's paths for `/openapi.json`.
pub(crate) fn openapi_paths() -> Map<String, Value> {
    let err = crate::resource::oas::err;
    let ok = crate::resource::oas::ok;
    let no_content = json!({"description": "Done"});
    let ident =
        json!({"name": "ident", "in": "path", "required": true, "schema": {"type": "string"}});
    let name =
        json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string"}});
    let errors = |extra: Value| {
        let mut m = json!({
            "400": err("Invalid input"),
            "401": err("Credentials required"),
            "404": err("No such node (or the microversion is too old)"),
            "406": err("Microversion not acceptable"),
            "409": err("Node locked (Retry-After)"),
        });
        if let (Some(m), Value::Object(e)) = (m.as_object_mut(), extra) {
            m.extend(e);
        }
        m
    };
    let string_query = |n: &str| json!({"name": n, "in": "query", "schema": {"type": "string"}});
    let mut paths = Map::new();
    paths.insert("/v1/nodes/{ident}/management/boot_device".into(), json!({
            "parameters": [ident],
            "get": {"summary": "The next boot device {boot_device, persistent}", "responses": errors(json!({"200": ok("{boot_device, persistent}"), "500": err("BMC failure")}))},
            "put": {"summary": "Set the next boot device", "requestBody": {"required": true, "content": {"application/json": {"schema": {
                "type": "object", "required": ["boot_device"], "additionalProperties": false,
                "properties": {"boot_device": {"type": "string"}, "persistent": {"type": "boolean"}}}}}},
                "responses": errors(json!({"204": no_content, "500": err("BMC failure")}))},
        }));
    paths.insert("/v1/nodes/{ident}/management/boot_device/supported".into(), json!({"parameters": [ident], "get": {"summary": "Supported boot devices", "responses": errors(json!({"200": ok("{supported_boot_devices}")}))}}));
    paths.insert("/v1/nodes/{ident}/management/inject_nmi".into(), json!({"parameters": [ident], "put": {"summary": "Inject an NMI (1.29)", "responses": errors(json!({"204": no_content, "500": err("BMC failure")}))}}));
    paths.insert("/v1/nodes/{ident}/history".into(), json!({"parameters": [ident], "get": {"summary": "Node history (1.78)", "parameters": [
            string_query("detail"),
            {"name": "marker", "in": "query", "schema": {"type": "string", "format": "uuid"}},
            {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}},
            {"name": "sort_key", "in": "query", "schema": {"type": "string", "enum": ["created_at"]}},
            {"name": "sort_dir", "in": "query", "schema": {"type": "string", "enum": ["asc", "desc"]}},
        ], "responses": errors(json!({"200": ok("{history, next?}")}))}}));
    paths.insert("/v1/nodes/{ident}/history/{event}".into(), json!({"parameters": [ident, {"name": "event", "in": "path", "required": true, "schema": {"type": "string"}}],
            "get": {"summary": "One history event (1.78)", "responses": errors(json!({"200": ok("Event")}))}}));
    paths.insert("/v1/nodes/{ident}/bios".into(), json!({"parameters": [ident], "get": {"summary": "Cached BIOS settings (1.40; detail, fields 1.74)", "parameters": [string_query("detail"), string_query("fields")], "responses": errors(json!({"200": ok("{bios}")}))}}));
    paths.insert("/v1/nodes/{ident}/bios/{setting}".into(), json!({"parameters": [ident, {"name": "setting", "in": "path", "required": true, "schema": {"type": "string"}}],
            "get": {"summary": "One BIOS setting (1.40)", "responses": errors(json!({"200": ok("{name: setting}")}))}}));
    paths.insert("/v1/nodes/{ident}/firmware".into(), json!({"parameters": [ident], "get": {"summary": "Cached firmware components (1.86)", "parameters": [string_query("fields")], "responses": errors(json!({"200": ok("{firmware}")}))}}));
    paths.insert("/v1/nodes/{ident}/inventory".into(), json!({"parameters": [ident], "get": {"summary": "Inspection data (1.81)", "responses": errors(json!({"200": ok("{inventory, plugin_data}")}))}}));
    paths.insert("/v1/nodes/{ident}/vmedia".into(), json!({
            "parameters": [ident],
            "get": {"summary": "Virtual media (1.93)", "responses": errors(json!({"200": ok("Devices")}))},
            "post": {"summary": "Attach virtual media (1.89)", "requestBody": {"required": true, "content": {"application/json": {"schema": {
                "type": "object", "required": ["device_type", "image_url"], "additionalProperties": false,
                "properties": {"device_type": {"type": "string", "enum": VMEDIA_DEVICES}, "image_url": {"type": "string"},
                               "image_download_source": {"type": "string", "enum": ["http", "local", "swift"]}}}}}},
                "responses": errors(json!({"204": no_content}))},
            "delete": {"summary": "Detach virtual media (1.89)", "parameters": [string_query("device_types")], "responses": errors(json!({"204": no_content}))},
        }));
    paths.insert("/v1/nodes/{ident}/vendor_passthru/methods".into(), json!({"parameters": [ident], "get": {"summary": "Vendor methods of the node's driver", "responses": errors(json!({"200": ok("{method: metadata}")}))}}));
    paths.insert("/v1/drivers/{name}/vendor_passthru/methods".into(), json!({"parameters": [name], "get": {"summary": "Vendor methods of a hardware type", "responses": errors(json!({"200": ok("{method: metadata}")}))}}));
    paths.insert("/v1/drivers/{name}/properties".into(), json!({"parameters": [name], "get": {"summary": "driver_info keys of a hardware type's default interfaces", "responses": errors(json!({"200": ok("{key: description}")}))}}));
    paths.insert("/v1/events".into(), json!({"post": {"summary": "External (network) events (1.54)", "requestBody": {"required": true, "content": {"application/json": {"schema": {
            "type": "object", "required": ["events"], "additionalProperties": false,
            "properties": {"events": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["event", "port_id", "mac_address", "status"], "additionalProperties": false,
                "properties": {
                    "event": {"type": "string", "enum": EVENT_TYPES},
                    "port_id": {"type": "string", "format": "uuid"},
                    "mac_address": {"type": "string"},
                    "status": {"type": "string"},
                    "device_id": {"type": "string", "format": "uuid", "nullable": true},
                    "binding:host_id": {"type": "string", "format": "uuid", "nullable": true},
                    "binding:vnic_type": {"type": "string", "nullable": true},
                }}}}}}}},
            "responses": {"204": no_content, "400": err("Invalid event"), "401": err("Credentials required"), "404": err("Microversion too old"), "406": err("Microversion not acceptable")}}}));
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_and_uuids_are_checked_as_ironic() {
        assert!(is_mac("52:54:00:12:34:56"));
        assert!(is_mac("52-54-00-AB-cd-56"));
        assert!(!is_mac("52:54:00:12:34"));
        assert!(!is_mac("52:54-00:12:34:56"));
        assert!(!is_mac("zz:54:00:12:34:56"));
        assert!(is_uuid_format("27946b59-9e44-4fa7-8e91-f3527a1ef094"));
        assert!(!is_uuid_format("27946b599e444fa78e91f3527a1ef094"));
    }

    #[test]
    fn python_repr_and_url_schemes() {
        assert_eq!(
            py_repr(&json!(["a", 1, null, true])),
            "['a', 1, None, True]"
        );
        assert_eq!(url_scheme("HTTP://x/y.iso"), "http");
        assert_eq!(url_scheme("/local/file.iso"), "");
        assert_eq!(url_scheme("ftp://x"), "ftp");
    }
}

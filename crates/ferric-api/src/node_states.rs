//! The node state endpoints beyond power and provision (Ironic's
//! `NodeStatesController.boot_mode`, `secure_boot`, `raid` and
//! `NodeConsoleController`):
//!
//! * `PUT …/states/boot_mode`, `PUT …/states/secure_boot` (1.76): 202; the
//!   management interface switches in the background
//!   ([`ferric_conductor::management::change_boot_mode`]), a failure lands
//!   in `last_error` (the fake management interface cannot, as Ironic's);
//! * `GET/PUT …/states/console`: the console interface (`no-console`
//!   refuses with Ironic's UnsupportedDriverExtension);
//! * `PUT …/states/raid` (1.12): the node's `target_raid_config`, checked
//!   against Ironic's RAID schema (204; 404 for a driver without RAID).

use crate::error::ApiError;
use crate::extract::{ApiPath, BaseUrl, JsonBody};
use crate::nodes::node_ident;
use crate::version::Version;
use crate::ApiState;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use ferric_conductor::management::{self, ManagementError, BOOT_MODES};
use ferric_store::NodeIdent;
use serde_json::{json, Map, Value};

/// The routes of this module.
pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/nodes/{ident}/states/boot_mode", put(set_boot_mode))
        .route("/v1/nodes/{ident}/states/secure_boot", put(set_secure_boot))
        .route(
            "/v1/nodes/{ident}/states/console",
            get(get_console).put(set_console),
        )
        .route("/v1/nodes/{ident}/states/raid", put(set_raid))
}

/// 202 with `Location: <base>/v1/nodes/<ident>/<path>`.
fn accepted(base: &BaseUrl, ident: &str, path: &str) -> Response {
    let mut resp = StatusCode::ACCEPTED.into_response();
    if let Ok(l) = HeaderValue::from_str(&format!("{}/v1/nodes/{ident}/{path}", base.0)) {
        resp.headers_mut().insert(header::LOCATION, l);
    }
    resp
}

/// The node, then the 1.76 gate (Ironic checks in this order; a 404).
async fn boot_mode_node(st: &ApiState, id: &str, v: Version) -> Result<NodeIdent, ApiError> {
    let ident = node_ident(id, v)?;
    let node = st.tm.store().get_node(&ident).await?;
    if !v.at_least(76) {
        return Err(ApiError::not_found(
            "This endpoint is supported starting with the API version 1.76",
        ));
    }
    if node.provision_state.is_unstable() {
        // Ironic's message, its placeholder unformatted.
        return Err(ApiError::conflict(
            "Node is in %(state)s state. Since node is transitioning, the boot mode will not be set as this may interfere with ongoing changes and result in erroneous modification. Try again later.",
        ));
    }
    Ok(NodeIdent::Uuid(node.uuid))
}

/// Python's `str` of a request value, for Ironic's messages.
fn shown(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "None".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(true)) => "True".into(),
        Some(Value::Bool(false)) => "False".into(),
        Some(other) => other.to_string(),
    }
}

/// `PUT /v1/nodes/{ident}/states/boot_mode` `{"target": "uefi"|"bios"}`.
pub async fn set_boot_mode(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiPath(id): ApiPath<String>,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> Result<Response, ApiError> {
    let ident = boot_mode_node(&st, &id, v).await?;
    let target = match body.get("target") {
        Some(Value::String(t)) if BOOT_MODES.contains(&t.as_str()) => t.clone(),
        other => {
            return Err(ApiError::bad_request(format!(
                "Invalid boot mode {} requested for node. Allowed boot modes are: {}",
                shown(other),
                BOOT_MODES.join(", ")
            )))
        }
    };
    management::change_boot_mode(st.provisioner(), ident, target, st.retry).await?;
    Ok(accepted(&base, &id, "states"))
}

/// oslo's `bool_from_string(strict=True)` as Ironic's `args.boolean`
/// reports it (`Invalid <name>: ...`); `None` when absent or null.
fn strict_bool(name: &str, v: Option<&Value>) -> Result<Option<bool>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => {
            let text = match other {
                Value::String(s) => s.clone(),
                o => o.to_string(),
            };
            match text.trim().to_ascii_lowercase().as_str() {
                "1" | "t" | "true" | "on" | "y" | "yes" => Ok(Some(true)),
                "0" | "f" | "false" | "off" | "n" | "no" => Ok(Some(false)),
                _ => Err(ApiError::bad_request(format!(
                    "Invalid {name}: Unrecognized value '{text}', acceptable values are: '0', '1', 'f', 'false', 'n', 'no', 'off', 'on', 't', 'true', 'y', 'yes'"
                ))),
            }
        }
    }
}

/// `PUT /v1/nodes/{ident}/states/secure_boot` `{"target": true|false}`.
pub async fn set_secure_boot(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiPath(id): ApiPath<String>,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> Result<Response, ApiError> {
    let ident = boot_mode_node(&st, &id, v).await?;
    let Some(target) = strict_bool("target", body.get("target"))? else {
        return Err(ApiError::bad_request(
            "Invalid secure_boot None requested for node. Allowed secure_boot states are: True, False) ",
        ));
    };
    management::change_secure_boot(st.provisioner(), ident, target, st.retry).await?;
    Ok(accepted(&base, &id, "states"))
}

/// `GET /v1/nodes/{ident}/states/console`:
/// `{"console_enabled": bool, "console_info": object|null}`.
pub async fn get_console(
    State(st): State<ApiState>,
    v: Version,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let ident = node_ident(&id, v)?;
    let info = management::console_information(st.provisioner(), ident, st.retry).await?;
    Ok(Json(json!({
        "console_enabled": info.is_some(),
        "console_info": info,
    }))
    .into_response())
}

/// `PUT /v1/nodes/{ident}/states/console` `{"enabled": bool}`: 202.
pub async fn set_console(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiPath(id): ApiPath<String>,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> Result<Response, ApiError> {
    let ident = node_ident(&id, v)?;
    let Some(enabled) = strict_bool("enabled", body.get("enabled"))? else {
        return Err(ApiError::bad_request("Missing argument: \"enabled\""));
    };
    management::set_console_mode(st.provisioner(), ident, enabled, st.retry).await?;
    Ok(accepted(&base, &id, "states/console"))
}

/// `PUT /v1/nodes/{ident}/states/raid` (the body is the target RAID
/// configuration; `{}` unsets it): 204.
pub async fn set_raid(
    State(st): State<ApiState>,
    v: Version,
    ApiPath(id): ApiPath<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let ident = node_ident(&id, v)?;
    st.tm.store().get_node(&ident).await?;
    if !v.at_least(12) {
        return Err(ApiError::not_acceptable("Request not acceptable."));
    }
    let Value::Object(config) = body else {
        return Err(ApiError::bad_request(format!(
            "Invalid type for target_raid_config: {} is not a dict.",
            shown(Some(&body))
        )));
    };
    match management::set_target_raid_config(st.provisioner(), ident, config, st.retry).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
        // Ironic answers a driver without RAID with a 404 here.
        Err(ManagementError::Unsupported(m)) => Err(ApiError::not_found(m)),
        Err(e) => Err(e.into()),
    }
}

/// The OpenAPI paths of this module.
pub(crate) fn openapi_paths() -> Map<String, Value> {
    let ident =
        json!({"name": "ident", "in": "path", "required": true, "schema": {"type": "string"}});
    let common = |extra: Value| {
        crate::resource::oas::with_errors(
            extra,
            &[
                ("400", "Invalid input or unsupported by the driver"),
                ("401", "Credentials required"),
                ("404", "No such node, or the version is too old"),
                ("406", "Microversion not acceptable"),
                ("409", "Node locked or transitioning"),
            ],
        )
    };
    let body = |schema: Value| json!({"required": true, "content": {"application/json": {"schema": schema}}});
    let accepted = json!({"202": {"description": "Accepted"}});
    let mut m = Map::new();
    m.insert("/v1/nodes/{ident}/states/boot_mode".into(), json!({
        "put": {"summary": "Set the boot mode (1.76)", "parameters": [ident],
                "requestBody": body(json!({"type": "object", "properties": {"target": {"type": "string", "enum": BOOT_MODES}}, "required": ["target"]})),
                "responses": common(accepted.clone())},
    }));
    m.insert("/v1/nodes/{ident}/states/secure_boot".into(), json!({
        "put": {"summary": "Turn secure boot on or off (1.76)", "parameters": [ident],
                "requestBody": body(json!({"type": "object", "properties": {"target": {"type": "boolean"}}, "required": ["target"]})),
                "responses": common(accepted.clone())},
    }));
    m.insert("/v1/nodes/{ident}/states/console".into(), json!({
        "get": {"summary": "Console state and connection information", "parameters": [ident],
                "responses": common(json!({"200": {"description": "{console_enabled, console_info}", "content": {"application/json": {"schema": {"type": "object"}}}}}))},
        "put": {"summary": "Enable or disable the console", "parameters": [ident],
                "requestBody": body(json!({"type": "object", "properties": {"enabled": {"type": "boolean"}}, "required": ["enabled"]})),
                "responses": common(accepted)},
    }));
    m.insert(
        "/v1/nodes/{ident}/states/raid".into(),
        json!({
            "put": {"summary": "Set the target RAID configuration (1.12)", "parameters": [ident],
                    "requestBody": body(json!({"type": "object"})),
                    "responses": common(json!({"204": {"description": "Stored"}}))},
        }),
    );
    m
}

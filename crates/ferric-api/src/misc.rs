//! Version documents (`GET /`, `GET /v1`), conductors, drivers and the node
//! change feed.

use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery, BaseUrl};
use crate::nodes::{parse_bool, REVISION_HEADER};
use crate::render::{self, links};
use crate::version::{Version, MAX_MINOR};
use crate::ApiState;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferric_conductor::drivers::Drivers;
use ferric_store::ConductorRow;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::time::Duration;

fn version_doc(base: &str) -> Value {
    json!({
        "id": "v1",
        "links": [{"href": format!("{base}/v1/"), "rel": "self"}],
        "status": "CURRENT",
        "min_version": Version::MIN.to_string(),
        "version": format!("1.{MAX_MINOR}"),
    })
}

/// `GET /`.
pub async fn root(base: BaseUrl) -> Json<Value> {
    let v = version_doc(&base.0);
    Json(json!({
        "name": "OpenStack Ironic API",
        "description": "Ironic is an OpenStack project which enables the provision and management of baremetal machines.",
        "default_version": v,
        "versions": [v],
    }))
}

/// `GET /v1`.
pub async fn v1(base: BaseUrl, v: Version) -> Json<Value> {
    let b = &base.0;
    let mut doc = json!({
        "id": "v1",
        "links": [
            {"href": format!("{b}/v1/"), "rel": "self"},
            {"href": "https://docs.openstack.org//ironic/latest/contributor//webapi.html", "rel": "describedby", "type": "text/html"},
        ],
        "media_types": {"base": "application/json", "type": "application/vnd.openstack.ironic.v1+json"},
        "chassis": links(b, "chassis"),
        "nodes": links(b, "nodes"),
        "ports": links(b, "ports"),
        "drivers": links(b, "drivers"),
        "version": version_doc(b),
    });
    // Ironic's VERSIONED_CONTROLLERS: each listed from its version.
    for (name, minor) in [
        ("portgroups", 23),
        ("volume", 32),
        ("lookup", 22),
        ("heartbeat", 22),
        ("conductors", 49),
        ("allocations", 52),
        ("events", 54),
        ("deploy_templates", 55),
        ("shards", 82),
        ("runbooks", 92),
        ("inspection_rules", 96),
        ("continue_inspection", 84),
    ] {
        if v.at_least(minor) {
            doc[name] = links(b, name);
        }
    }
    Json(doc)
}

fn conductor_doc(c: &ConductorRow, base: &str, detail: bool) -> Value {
    let mut d = json!({
        "hostname": c.hostname,
        "conductor_group": c.conductor_group,
        "alive": c.alive,
        "links": links(base, &format!("conductors/{}", c.hostname)),
    });
    if detail {
        d["drivers"] = json!(c.drivers);
        d["created_at"] = render::timestamp(c.started_at);
        d["updated_at"] = render::timestamp(c.heartbeat_at);
    }
    d
}

fn require(v: Version, minor: u32) -> Result<(), ApiError> {
    if v.at_least(minor) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!(
            "The resource could not be found. (It needs API version 1.{minor} or later.)"
        )))
    }
}

/// `?detail=` of listings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetailQuery {
    detail: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    fields: Option<String>,
}

fn select_fields(doc: Value, fields: &Option<String>) -> Result<Value, ApiError> {
    let Some(f) = fields else { return Ok(doc) };
    let Value::Object(map) = doc else {
        return Ok(doc);
    };
    let wanted = render::parse_fields(f, &map)?;
    Ok(Value::Object(render::select(map, &wanted)))
}

/// `GET /v1/conductors` query: Ironic's `detail`, `fields`, and the page
/// (`limit`, `marker` = the hostname of the previous page's last conductor).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConductorsQuery {
    detail: Option<String>,
    fields: Option<String>,
    limit: Option<String>,
    marker: Option<String>,
}

/// `GET /v1/conductors` (1.49+), paged as Ironic's (`limit`, `marker`,
/// `next`).
pub async fn conductors(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiQuery(q): ApiQuery<ConductorsQuery>,
) -> Result<Response, ApiError> {
    require(v, 49)?;
    let detail = match &q.detail {
        Some(d) => parse_bool("detail", d)?,
        None => false,
    };
    let limit = crate::resource::parse_limit(q.limit.as_deref())?;
    let rows = st.tm.store().list_conductors().await?;
    let start = match &q.marker {
        None => 0,
        Some(m) => {
            crate::extract::check_text("marker", m)?;
            rows.iter()
                .position(|c| &c.hostname == m)
                .map(|i| i + 1)
                .ok_or_else(|| ApiError::not_found(format!("Conductor {m} could not be found.")))?
        }
    };
    let page: Vec<&ConductorRow> = rows.iter().skip(start).take(limit as usize).collect();
    let items = page
        .iter()
        .map(|c| {
            select_fields(
                conductor_doc(c, &base.0, detail || q.fields.is_some()),
                &q.fields,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut body = json!({ "conductors": items });
    if page.len() as u32 >= limit {
        if let Some(last) = page.last() {
            let mut params = vec![
                format!("limit={limit}"),
                format!("marker={}", crate::resource::encode(&last.hostname)),
            ];
            for (k, val) in [("detail", &q.detail), ("fields", &q.fields)] {
                if let Some(val) = val {
                    params.push(format!("{k}={}", crate::resource::encode(val)));
                }
            }
            body["next"] = json!(format!("{}/v1/conductors?{}", base.0, params.join("&")));
        }
    }
    Ok(Json(body).into_response())
}

/// `GET /v1/conductors/{hostname}` (1.49+).
pub async fn conductor(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiPath(host): ApiPath<String>,
    ApiQuery(q): ApiQuery<DetailQuery>,
) -> Result<Response, ApiError> {
    require(v, 49)?;
    let rows = st.tm.store().list_conductors().await?;
    let c = rows
        .iter()
        .find(|c| c.hostname == host)
        .ok_or_else(|| ApiError::not_found(format!("Conductor {host} could not be found.")))?;
    Ok(Json(select_fields(conductor_doc(c, &base.0, true), &q.fields)?).into_response())
}

/// The alive conductors.
async fn alive_hosts(st: &ApiState) -> Result<Vec<ConductorRow>, ApiError> {
    Ok(st
        .tm
        .store()
        .list_conductors()
        .await?
        .into_iter()
        .filter(|c| c.alive)
        .collect())
}

/// The hostnames of `conductors` that offer hardware type `driver`.
fn hosts_of(conductors: &[ConductorRow], driver: &str) -> Vec<String> {
    conductors
        .iter()
        .filter(|c| c.drivers.iter().any(|d| d == driver))
        .map(|c| c.hostname.clone())
        .collect()
}

fn driver_doc(drivers: &Drivers, name: &str, hosts: &[String], base: &str, detail: bool) -> Value {
    let mut d = json!({
        "name": name,
        "hosts": hosts,
        "type": "dynamic",
        "links": links(base, &format!("drivers/{name}")),
        "properties": links(base, &format!("drivers/{name}/properties")),
    });
    if detail {
        for doc in drivers.describe(name).unwrap_or_default() {
            let iface = doc.kind.as_str();
            d[format!("default_{iface}_interface")] = json!(doc.default);
            d[format!("enabled_{iface}_interfaces")] = json!(doc.enabled);
        }
    }
    d
}

/// `GET /v1/drivers`.
pub async fn drivers(
    State(st): State<ApiState>,
    base: BaseUrl,
    ApiQuery(q): ApiQuery<DetailQuery>,
) -> Result<Response, ApiError> {
    let detail = match &q.detail {
        Some(d) => parse_bool("detail", d)?,
        None => false,
    };
    if let Some(k) = &q.kind {
        if k != "dynamic" && k != "classic" {
            return Err(ApiError::bad_request(format!(
                "Invalid driver type \"{k}\"; expected \"classic\" or \"dynamic\"."
            )));
        }
    }
    let hosts = alive_hosts(&st).await?;
    let items = if q.kind.as_deref() == Some("classic") {
        Vec::new()
    } else {
        st.drivers()
            .names()
            .into_iter()
            .map(|d| {
                let hosts = hosts_of(&hosts, d);
                select_fields(
                    driver_doc(st.drivers(), d, &hosts, &base.0, detail),
                    &q.fields,
                )
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    Ok(Json(json!({ "drivers": items })).into_response())
}

/// `GET /v1/drivers/{name}`.
pub async fn driver(
    State(st): State<ApiState>,
    base: BaseUrl,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<DetailQuery>,
) -> Result<Response, ApiError> {
    if !st.drivers().has(&name) {
        return Err(ApiError::not_found(format!(
            "Could not find the following driver(s) or hardware type(s): {name}."
        )));
    }
    let hosts = hosts_of(&alive_hosts(&st).await?, &name);
    Ok(Json(select_fields(
        driver_doc(st.drivers(), &name, &hosts, &base.0, true),
        &q.fields,
    )?)
    .into_response())
}

/// Longest long-poll of the change feed.
pub const MAX_CHANGES_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest page of the change feed.
pub const MAX_CHANGES_LIMIT: u32 = 1000;
const CHANGES_POLL: Duration = Duration::from_millis(100);

/// `GET /v1/nodes/changes` query.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangesQuery {
    since: Option<i64>,
    limit: Option<u32>,
    /// Seconds to wait for a change when there is none yet (0: answer at once).
    timeout: Option<f64>,
    /// Which kinds to return, comma-separated (`node`, `port`, `portgroup`,
    /// `chassis`, or `all`). Absent: nodes only, in the original shape.
    resource: Option<String>,
}

/// `GET /v1/nodes/changes?since=REV&timeout=S&limit=N` (SPEC §8.5): every
/// committed change after `since`, oldest first, without gaps. With a
/// timeout the request waits until at least one change exists. The response
/// `revision` is where the next call should continue from.
pub async fn changes(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiQuery(q): ApiQuery<ChangesQuery>,
) -> Result<Response, ApiError> {
    let since = q.since.unwrap_or(0);
    if since < 0 {
        return Err(ApiError::bad_request("since must not be negative."));
    }
    let limit = match q.limit {
        None => MAX_CHANGES_LIMIT,
        Some(l) if (1..=MAX_CHANGES_LIMIT).contains(&l) => l,
        Some(l) => {
            return Err(ApiError::bad_request(format!(
                "Invalid limit {l}: 1 to {MAX_CHANGES_LIMIT} expected."
            )))
        }
    };
    // Bounded before the conversion: from_secs_f64 panics past u64 seconds.
    let timeout = match q.timeout {
        None => Duration::ZERO,
        Some(t) if t.is_finite() && (0.0..=MAX_CHANGES_TIMEOUT.as_secs_f64()).contains(&t) => {
            Duration::from_secs_f64(t)
        }
        Some(t) => {
            return Err(ApiError::bad_request(format!(
                "Invalid timeout {t}: seconds, 0 to {}, expected.",
                MAX_CHANGES_TIMEOUT.as_secs()
            )))
        }
    };
    let wanted = crate::resource::feed_kinds(q.resource.as_deref())?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut stopping = st.stopping.subscribe();
    // `cursor` passes entries of kinds not asked for, so the answer's
    // revision moves on even when none of them is returned.
    let mut cursor = since;
    let changes = loop {
        let mut changes = st.tm.store().changes_since(cursor, limit).await?;
        cursor = changes.last().map_or(cursor, |c| c.revision);
        changes.retain(|c| wanted.wants(c));
        // A stopping server answers at once so graceful shutdown is not held
        // up by long polls.
        if !changes.is_empty() || tokio::time::Instant::now() >= deadline || *stopping.borrow() {
            break changes;
        }
        let nap = CHANGES_POLL.min(deadline - tokio::time::Instant::now());
        tokio::select! {
            _ = tokio::time::sleep(nap) => {}
            _ = stopping.changed() => {}
        }
    };
    let revision = cursor;
    let owners = st.owners().await;
    let items: Vec<Value> = changes
        .iter()
        .map(|c| {
            if let Some(r) = &c.resource {
                return crate::resource::feed_entry(c, r, &base, v);
            }
            let mut m = Map::new();
            if wanted.explicit {
                m.insert("resource".into(), json!("node"));
            }
            m.insert("revision".into(), json!(c.revision));
            m.insert("uuid".into(), json!(c.node.to_string()));
            m.insert("kind".into(), json!(c.kind));
            m.insert("at".into(), render::timestamp(c.at));
            m.insert(
                "node".into(),
                c.snapshot.as_ref().map_or(Value::Null, |n| {
                    Value::Object(render::node(n, &base.0, v, owners.owner(n)))
                }),
            );
            Value::Object(m)
        })
        .collect();
    let mut resp = Json(json!({ "changes": items, "revision": revision })).into_response();
    resp.headers_mut().insert(
        HeaderName::from_static(REVISION_HEADER),
        HeaderValue::from(revision),
    );
    Ok(resp)
}

/// `GET /openapi.json`: the served surface as an OpenAPI 3.0 document
/// (paths, methods, parameters and status codes; bodies follow Ironic's API
/// reference).
pub async fn openapi(base: BaseUrl) -> Json<Value> {
    let err = crate::resource::oas::err;
    let ident = json!({"name": "ident", "in": "path", "required": true, "description": "Node UUID or name (names need 1.5)", "schema": {"type": "string"}});
    let ok = crate::resource::oas::ok;
    let accepted = json!({"description": "Accepted; Location names the node's states"});
    let common = json!({
        "400": err("Invalid input or a request the node's state does not allow"),
        "401": err("Credentials required"),
        "404": err("No such node"),
        "406": err("Microversion not acceptable"),
        "409": err("Node locked by another operation (NodeLocked, the only one with Retry-After), or a conflict with stored data or the node's state (a duplicate name, UUID or instance, an associated instance, a state that forbids the operation)"),
        "503": err("No free conductor worker (with Retry-After)"),
    });
    let with = |mut extra: Value| {
        if let (Some(e), Some(c)) = (extra.as_object_mut(), common.as_object()) {
            for (k, v) in c {
                e.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        extra
    };
    // Request bodies: every operation that reads one requires it (an absent
    // body is a 400), except DELETE/PUT maintenance's optional reason.
    let body = |schema: Value| json!({"required": true, "content": {"application/json": {"schema": schema}}});
    let node_create = body(
        json!({"type": "object", "required": ["driver"], "properties": {
            "driver": {"type": "string"},
            "name": {"type": ["string", "null"]},
            "uuid": {"type": ["string", "null"], "format": "uuid"},
        }}),
    );
    let patch_body = body(
        json!({"type": "array", "items": {"type": "object", "required": ["op", "path"], "properties": {
            "op": {"type": "string", "enum": ["add", "replace", "remove"]},
            "path": {"type": "string"},
            "value": {},
        }}}),
    );
    let provision_body = body(
        json!({"type": "object", "required": ["target"], "properties": {
        "target": {"type": "string"},
        "configdrive": {"type": ["object", "string", "null"]},
        "clean_steps": {"type": "array", "items": {"type": "object"}},
        "deploy_steps": {"type": "array", "items": {"type": "object"}},
        "service_steps": {"type": "array", "items": {"type": "object"}},
        "runbook": {"type": "string"},
        "disable_ramdisk": {"type": "boolean"},
        "rescue_password": {"type": "string"},
    }, "additionalProperties": false}),
    );
    let power_body = body(
        json!({"type": "object", "required": ["target"], "properties": {
        "target": {"type": "string", "enum": ["power on", "power off", "rebooting", "soft power off", "soft rebooting"]},
        "timeout": {"type": "integer", "minimum": 1, "description": "Seconds (1.27)"},
    }, "additionalProperties": false}),
    );
    let maintenance_body = json!({"required": false, "content": {"application/json": {"schema": {"type": "object", "properties": {
        "reason": {"type": ["string", "null"]},
    }, "additionalProperties": false}}}});
    let heartbeat_body = body(
        json!({"type": "object", "required": ["callback_url"], "properties": {
        "callback_url": {"type": "string"},
        "agent_version": {"type": "string"},
        "agent_token": {"type": "string"},
        "agent_verify_ca": {"type": "string"},
        "agent_status": {"type": "string"},
        "agent_status_message": {"type": "string"},
    }, "additionalProperties": false}),
    );
    let list_params = json!([
        crate::resource::openapi_limit_param(),
        {"name": "marker", "in": "query", "schema": {"type": "string", "format": "uuid"}},
        {"name": "fields", "in": "query", "schema": {"type": "string"}, "description": "Comma-separated node fields"},
        {"name": "detail", "in": "query", "schema": {"type": "boolean"}},
        {"name": "provision_state", "in": "query", "schema": {"type": "string"}},
        {"name": "maintenance", "in": "query", "schema": {"type": "boolean"}},
        {"name": "driver", "in": "query", "schema": {"type": "string"}},
        {"name": "conductor_group", "in": "query", "schema": {"type": "string"}},
        {"name": "associated", "in": "query", "schema": {"type": "boolean"}},
        {"name": "resource_class", "in": "query", "schema": {"type": "string"}, "description": "1.21"},
        {"name": "fault", "in": "query", "schema": {"type": "string", "enum": ["power failure", "clean failure", "rescue abort failure", "service failure"]}, "description": "1.42"},
        {"name": "owner", "in": "query", "schema": {"type": "string"}, "description": "1.50"},
        {"name": "description_contains", "in": "query", "schema": {"type": "string"}, "description": "1.51"},
        {"name": "retired", "in": "query", "schema": {"type": "boolean"}, "description": "1.61"},
        {"name": "lessee", "in": "query", "schema": {"type": "string"}, "description": "1.65"},
        {"name": "shard", "in": "query", "schema": {"type": "string"}, "description": "Comma-separated shards (1.82)"},
        {"name": "sharded", "in": "query", "schema": {"type": "boolean"}, "description": "1.82"},
        {"name": "instance_uuid", "in": "query", "schema": {"type": "string", "format": "uuid"}},
        {"name": "chassis_uuid", "in": "query", "schema": {"type": "string", "format": "uuid"}},
        {"name": "parent_node", "in": "query", "schema": {"type": "string"}, "description": "Node UUID or name (1.83)"},
        {"name": "include_children", "in": "query", "schema": {"type": "boolean"}, "description": "1.83; children are left out otherwise"},
        {"name": "sort_key", "in": "query", "schema": {"type": "string", "enum": ferric_store::NODE_SORT_KEYS.iter().map(|(k, _)| *k).collect::<Vec<_>>()}},
        {"name": "sort_dir", "in": "query", "schema": {"type": "string", "enum": ["asc", "desc"]}},
    ]);
    let mut doc = json!({
        "openapi": "3.0.3",
        "info": {
            "title": "ferric (OpenStack Ironic v1 compatible subset)",
            "version": format!("1.{MAX_MINOR}"),
            "description": "Send X-OpenStack-Ironic-API-Version: 1.N or latest (absent: 1.1). Errors are {\"error_message\": \"<JSON string with faultcode, faultstring, debuginfo>\"}.",
        },
        "servers": [{"url": base.0}],
        "paths": {
            "/": {"get": {"summary": "Version discovery", "security": [], "responses": {"200": ok("Versions")}}},
            "/v1": {"get": {"summary": "The v1 document", "security": [], "responses": {"200": ok("v1")}}},
            "/v1/nodes": {
                "get": {"summary": "List nodes (X-Ferric-Revision: store revision of the page)", "parameters": list_params, "responses": with(json!({"200": ok("{nodes, next?}")}))},
                "post": {"summary": "Create a node", "requestBody": node_create, "responses": with(json!({"201": ok("The node; Location header"), "413": err("Body too large")}))},
            },
            "/v1/nodes/detail": {"get": {"summary": "List nodes with every field", "parameters": list_params, "responses": with(json!({"200": ok("{nodes, next?}")}))}},
            "/v1/nodes/changes": {"get": {
                "summary": "Committed node changes after a revision, oldest first, without gaps (long poll with timeout)",
                "parameters": [
                    {"name": "since", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                    {"name": "resource", "in": "query", "schema": {"type": "string"}, "description": "Kinds, comma-separated: node, port, portgroup, chassis or all (default node)"},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_CHANGES_LIMIT}, "description": format!("At most this many changes (1 to {MAX_CHANGES_LIMIT})")},
                    {"name": "timeout", "in": "query", "schema": {"type": "number", "minimum": 0, "maximum": MAX_CHANGES_TIMEOUT.as_secs()}},
                ],
                "responses": with(json!({"200": ok("{changes: [{revision, uuid, kind, at, node}], revision}")})),
            }},
            "/v1/nodes/{ident}": {
                "parameters": [ident],
                "get": {"summary": "Show a node (ETag: \"revision\")", "parameters": [{"name": "fields", "in": "query", "schema": {"type": "string"}}], "responses": with(json!({"200": ok("The node")}))},
                "patch": {"summary": "JSON Patch (add, replace, remove); If-Match: revision", "requestBody": patch_body, "responses": with(json!({"200": ok("The node"), "412": err("If-Match does not match the node's revision")}))},
                "delete": {"summary": "Delete a node", "responses": with(json!({"204": {"description": "Deleted"}, "403": err("The node is protected")}))},
            },
            "/v1/nodes/{ident}/states": {"parameters": [ident], "get": {"summary": "Power and provision states", "responses": with(json!({"200": ok("States")}))}},
            "/v1/nodes/{ident}/states/provision": {"parameters": [ident], "put": {"summary": "Provision verb: manage, provide, active/deploy, deleted/undeploy, rebuild, clean, abort, inspect, adopt, rescue, unrescue, unhold, service", "requestBody": provision_body, "responses": with(json!({"202": accepted, "403": err("The node is protected (undeploy, rebuild)")}))}},
            "/v1/nodes/{ident}/states/power": {"parameters": [ident], "put": {"summary": "power on, power off, rebooting, soft power off, soft rebooting", "requestBody": power_body, "responses": with(json!({"202": accepted}))}},
            "/v1/nodes/{ident}/maintenance": {
                "parameters": [ident],
                "put": {"summary": "Set maintenance ({reason})", "requestBody": maintenance_body, "responses": with(json!({"202": {"description": "Accepted"}}))},
                "delete": {"summary": "Clear maintenance", "responses": with(json!({"202": {"description": "Accepted"}}))},
            },
            "/v1/nodes/{ident}/validate": {"parameters": [ident], "get": {"summary": "Validate the node's interfaces", "responses": with(json!({"200": ok("{interface: {result, reason}}")}))}},
            "/v1/conductors": {"get": {"summary": "Conductors (1.49)", "parameters": [
                crate::resource::openapi_limit_param(),
                {"name": "marker", "in": "query", "schema": {"type": "string"}, "description": "Hostname of the previous page's last conductor"},
                {"name": "detail", "in": "query", "schema": {"type": "boolean"}},
                {"name": "fields", "in": "query", "schema": {"type": "string"}},
            ], "responses": with(json!({"200": ok("{conductors, next?}")}))}},
            "/v1/conductors/{hostname}": {"get": {"summary": "One conductor (1.49)", "parameters": [{"name": "hostname", "in": "path", "required": true, "schema": {"type": "string"}}], "responses": with(json!({"200": ok("Conductor")}))}},
            "/v1/drivers": {"get": {"summary": "Hardware types", "responses": with(json!({"200": ok("{drivers}")}))}},
            "/v1/heartbeat/{node}": {"post": {"summary": "Ramdisk agent heartbeat (1.22; public, checked by the agent token): {callback_url, agent_token, agent_version}; resumes a node in wait call-back / clean wait in the background", "parameters": [{"name": "node", "in": "path", "required": true, "schema": {"type": "string"}}], "requestBody": heartbeat_body, "responses": with(json!({"202": {"description": "Accepted"}}))}},
            "/v1/lookup": {"get": {"summary": "Ramdisk agent lookup (1.22; public): the node whose port has one of the addresses (or node_uuid), in a state where an agent may run; {node: {uuid, properties, instance_info, driver_internal_info}, config: {heartbeat_timeout, agent_token (minted at the first lookup from 1.62, ****** afterwards), agent_token_required, ...}}", "parameters": [{"name": "addresses", "in": "query", "schema": {"type": "string"}, "description": "Comma-separated MAC addresses"}, {"name": "node_uuid", "in": "query", "schema": {"type": "string", "format": "uuid"}}], "responses": with(json!({"200": ok("{node, config}")}))}},
            "/v1/drivers/{name}": {"get": {"summary": "One hardware type", "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}], "responses": with(json!({"200": ok("Driver")}))}},
        },
        "components": {
            "schemas": {"Error": {"type": "object", "required": ["error_message"], "properties": {"error_message": {"type": "string", "description": "JSON document: faultcode, faultstring, debuginfo"}}}},
            "securitySchemes": {
                "token": {"type": "apiKey", "in": "header", "name": "X-Auth-Token"},
                "bearer": {"type": "http", "scheme": "bearer"},
                "basic": {"type": "http", "scheme": "basic"},
            },
        },
        "security": [{"token": []}, {"bearer": []}, {"basic": []}, {}],
    });
    if let Some(paths) = doc["paths"].as_object_mut() {
        paths.extend(crate::traits::openapi_paths());
        paths.extend(crate::ports::openapi_paths());
        paths.extend(crate::portgroups::openapi_paths());
        paths.extend(crate::chassis::openapi_paths());
        paths.extend(crate::vifs::openapi_paths());
        paths.extend(crate::node_states::openapi_paths());
        paths.extend(crate::deploy_templates::openapi_paths());
        paths.extend(crate::runbooks::openapi_paths());
        paths.extend(crate::volume::openapi_paths());
        paths.extend(crate::inspection_rules::openapi_paths());
        paths.extend(crate::node_sub::openapi_paths());
        paths.extend(crate::allocations::openapi_paths());
    }
    Json(doc)
}

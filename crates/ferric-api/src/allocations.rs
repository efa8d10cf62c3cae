//! Allocations (Ironic 39's `/v1/allocations`, microversion 1.52; PATCH
//! 1.57, backfill 1.58, `owner` 1.60): `POST/GET /v1/allocations`,
//! `GET/PATCH/DELETE /v1/allocations/{allocation_ident}` and
//! `GET/DELETE /v1/nodes/{node_ident}/allocation`.
//!
//! Stored as [`ferric_store::Resource`]s of kind `Allocation`, typed by
//! [`ferric_conductor::allocation::Allocation`]. A create answers 201 with
//! the allocation `allocating` and processing goes on in the background
//! ([`ferric_conductor::allocation::allocate`]); a backfill (`node` given)
//! is done before the answer. Deletion goes through the conductor, under
//! the node's lock when the allocation has one.

use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery, BaseUrl, JsonBody};
use crate::nodes::node_ident;
use crate::patch::PatchOp;
use crate::render;
use crate::resource::{self, schema_error, Doc};
use crate::version::Version;
use crate::ApiState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ferric_conductor::allocation::{self, Allocation, AllocationError, ALLOCATING};
use ferric_store::{NewResource, NodeIdent, ResourceKind, ResourceQuery, ResourceSort, StoreError};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;
use uuid::Uuid;

const KIND: ResourceKind = ResourceKind::Allocation;

/// Allocations exist from this microversion on.
const MIN: u32 = 52;
/// PATCH.
const MIN_UPDATE: u32 = 57;
/// Backfill (`node` on create).
const MIN_BACKFILL: u32 = 58;
/// The `owner` field.
const MIN_OWNER: u32 = 60;

const NOT_ALLOWED: &str = "The API version does not allow allocations";

/// Routes of this module.
pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/allocations", get(list).post(create))
        .route(
            "/v1/allocations/{ident}",
            get(show).patch(update).delete(delete),
        )
        .route(
            "/v1/nodes/{ident}/allocation",
            get(node_show).delete(node_delete),
        )
}

/// Reads below 1.52: 404; writes: 405 (Ironic's `api_version` gates).
fn gate(v: Version, minor: u32, write: bool, message: &str) -> Result<(), ApiError> {
    if v.at_least(minor) {
        Ok(())
    } else if write {
        Err(ApiError::new(StatusCode::METHOD_NOT_ALLOWED, message))
    } else {
        Err(ApiError::not_found(message))
    }
}

/// The allocation document at `v`.
pub fn render(a: &Allocation, base: &BaseUrl, v: Version) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("uuid".into(), json!(a.uuid));
    m.insert("name".into(), json!(a.name));
    m.insert("node_uuid".into(), json!(a.node));
    m.insert("state".into(), json!(a.state));
    m.insert("last_error".into(), json!(a.last_error));
    m.insert("resource_class".into(), json!(a.resource_class));
    m.insert("traits".into(), json!(a.traits));
    m.insert(
        "candidate_nodes".into(),
        json!(a
            .candidate_nodes
            .iter()
            .map(Uuid::to_string)
            .collect::<Vec<_>>()),
    );
    m.insert("extra".into(), Value::Object(a.extra.clone()));
    if v.at_least(MIN_OWNER) {
        m.insert("owner".into(), json!(a.owner));
    }
    m.insert("created_at".into(), render::timestamp(a.created_at));
    m.insert(
        "updated_at".into(),
        a.updated_at.map_or(Value::Null, render::timestamp),
    );
    m.insert(
        "links".into(),
        render::links(&base.0, &format!("allocations/{}", a.uuid)),
    );
    m
}

/// `fields`, with `owner` refused below 1.60 (406, as Ironic).
fn wanted_fields(fields: Option<&str>, v: Version) -> Result<Option<Vec<String>>, ApiError> {
    let fields = resource::requested_fields(fields, v)?;
    if let Some(f) = &fields {
        if f.iter().any(|x| x == "owner") && !v.at_least(MIN_OWNER) {
            return Err(ApiError::not_acceptable("Request not acceptable."));
        }
    }
    Ok(fields)
}

fn shape(doc: Map<String, Value>, fields: &Option<Vec<String>>) -> Result<Value, ApiError> {
    Ok(Value::Object(match fields {
        Some(f) => resource::select(doc, f)?,
        None => doc,
    }))
}

async fn find(st: &ApiState, ident: &str) -> Result<Allocation, ApiError> {
    let id = resource::ident(ident);
    match st.tm.store().get_resource(KIND, &id).await {
        Ok(r) => Ok(Allocation::from_resource(r)),
        Err(StoreError::ResourceNotFound { .. }) => Err(ApiError::not_found(format!(
            "Allocation {ident} could not be found."
        ))),
        Err(e) => Err(e.into()),
    }
}

/// A node named by the request, where Ironic answers an unknown one with 400.
async fn node_400(st: &ApiState, ident: &str, v: Version) -> Result<ferric_core::Node, ApiError> {
    let id = node_ident(ident, v).map_err(|e| ApiError::bad_request(e.message().to_string()))?;
    match st.tm.store().get_node(&id).await {
        Ok(n) => Ok(n),
        Err(StoreError::NodeNotFound(_)) => Err(ApiError::bad_request(format!(
            "Node {ident} could not be found."
        ))),
        Err(e) => Err(e.into()),
    }
}

fn map_allocation_error(e: AllocationError) -> ApiError {
    match e {
        // Ironic raises AllocationFailed (no HTTP code of its own); ferric
        // answers the client's mismatch with 400 and Ironic's text.
        AllocationError::Failed(m) => ApiError::bad_request(m),
        AllocationError::InvalidState(m) => ApiError::conflict_409(m),
        AllocationError::Task(ferric_conductor::TaskError::Store(s)) => store_error(s),
        AllocationError::Task(t) => t.into(),
    }
}

/// Store errors with the allocation wording.
fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::ResourceDuplicate { field, value, .. } => match field {
            "name" => {
                ApiError::conflict_409(format!("An allocation with name {value} already exists."))
            }
            _ => ApiError::conflict_409(format!("An allocation with UUID {value} already exists.")),
        },
        StoreError::NodeAssociated { .. } => ApiError::conflict_409(e.to_string()),
        other => other.into(),
    }
}

/// The traits of a request (Ironic's trait schema).
fn traits(d: &Doc<'_>) -> Result<Vec<String>, ApiError> {
    let list = match d.map.get("traits") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(other) => {
            return Err(schema_error(
                d.what,
                format!("{other} is not of type 'array', 'null'"),
            ))
        }
    };
    let mut out = Vec::with_capacity(list.len());
    for t in list {
        match t.as_str() {
            Some(s) if ferric_core::node::is_valid_trait(s) => out.push(s.to_string()),
            _ => {
                return Err(schema_error(
                    d.what,
                    format!("{t} is not valid under any of the given schemas"),
                ))
            }
        }
    }
    Ok(out)
}

/// Candidate node names or UUIDs → UUIDs (Ironic's `check_node_list`: an
/// unknown one is a 400 naming every missing identifier).
async fn candidates(st: &ApiState, d: &Doc<'_>) -> Result<Vec<Uuid>, ApiError> {
    let list = match d.map.get("candidate_nodes") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(other) => {
            return Err(schema_error(
                d.what,
                format!("{other} is not of type 'array', 'null'"),
            ))
        }
    };
    let mut idents = Vec::with_capacity(list.len());
    for c in list {
        match c.as_str() {
            Some(s) => idents.push(s.to_string()),
            None => return Err(schema_error(d.what, format!("{c} is not of type 'string'"))),
        }
    }
    let mut out = Vec::with_capacity(idents.len());
    let mut missing = BTreeSet::new();
    for ident in &idents {
        let id = match Uuid::parse_str(ident) {
            Ok(u) => NodeIdent::Uuid(u),
            Err(_) if ferric_core::node::validate_name(ident).is_ok() => {
                NodeIdent::Name(ident.clone())
            }
            Err(_) => {
                missing.insert(ident.clone());
                continue;
            }
        };
        match st.tm.store().get_node(&id).await {
            Ok(n) => {
                if !out.contains(&n.uuid) {
                    out.push(n.uuid);
                }
            }
            Err(StoreError::NodeNotFound(_)) => {
                missing.insert(ident.clone());
            }
            Err(e) => return Err(e.into()),
        }
    }
    if !missing.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Nodes cannot be found: {}",
            missing.into_iter().collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(out)
}

/// `POST /v1/allocations`.
pub async fn create(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    JsonBody(doc): JsonBody<Map<String, Value>>,
) -> Result<Response, ApiError> {
    gate(v, MIN, true, NOT_ALLOWED)?;
    let d = Doc {
        what: "allocation",
        map: &doc,
    };
    let mut allowed = vec![
        "candidate_nodes",
        "extra",
        "name",
        "owner",
        "resource_class",
        "traits",
        "uuid",
    ];
    if v.at_least(MIN_BACKFILL) {
        allowed.push("node");
    }
    d.only(&allowed)?;
    if doc.contains_key("owner") && !v.at_least(MIN_OWNER) {
        return Err(ApiError::not_acceptable("Request not acceptable."));
    }
    let name = d.opt_str("name", None)?;
    let owner = d.opt_str("owner", None)?;
    let resource_class = d.opt_str("resource_class", Some(80))?;
    let extra = d.opt_object("extra")?.unwrap_or_default();
    let traits = traits(&d)?;
    let uuid = d
        .opt_str("uuid", None)?
        .map(|u| resource::uuid_param("uuid", &u))
        .transpose()?;
    let node_param = d.opt_str("node", None)?;
    if let Some(n) = &name {
        if ferric_core::node::validate_name(n).is_err() {
            return Err(ApiError::bad_request(format!(
                "Cannot create allocation with invalid name '{n}'"
            )));
        }
    }
    let node = match &node_param {
        Some(n) => Some(node_400(&st, n, v).await?),
        None => None,
    };
    let resource_class = match resource_class.filter(|rc| !rc.is_empty()) {
        Some(rc) => Some(rc),
        None => match &node {
            Some(n) => n.attrs.resource_class.clone(),
            None => {
                return Err(ApiError::bad_request(
                    "The resource_class field is mandatory when not backfilling",
                ))
            }
        },
    };
    let candidate_nodes = candidates(&st, &d).await?;
    let uuid = uuid
        .or(node.as_ref().and_then(|n| n.instance_uuid))
        .unwrap_or_else(Uuid::new_v4);
    let a = Allocation {
        uuid,
        name: name.clone(),
        node: None,
        state: ALLOCATING.to_string(),
        last_error: None,
        resource_class,
        traits,
        candidate_nodes,
        extra,
        owner,
        conductor_affinity: Some(st.tm.host().to_string()),
        created_at: ferric_core::DbTime(0),
        updated_at: None,
        revision: 0,
    };
    let stored = st
        .tm
        .store()
        .create_resource(
            KIND,
            NewResource {
                uuid: Some(uuid),
                name,
                body: a.body(),
                ..Default::default()
            },
        )
        .await
        .map_err(store_error)?;
    let created = Allocation::from_resource(stored);
    let answer = match node {
        Some(n) => allocation::backfill(&st.tm, &created, n.uuid)
            .await
            .map_err(map_allocation_error)?,
        None => {
            let tm = st.tm.clone();
            tokio::spawn(async move { allocation::allocate(&tm, uuid).await });
            created
        }
    };
    Ok(resource::created(
        render(&answer, &base, v),
        &format!("{}/v1/allocations/{}", base.0, answer.uuid),
    ))
}

/// List query parameters.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    node: Option<String>,
    resource_class: Option<String>,
    state: Option<String>,
    owner: Option<String>,
    marker: Option<String>,
    limit: Option<String>,
    sort_key: Option<String>,
    sort_dir: Option<String>,
    fields: Option<String>,
}

/// `GET /v1/allocations`.
pub async fn list(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    gate(v, MIN, false, NOT_ALLOWED)?;
    let fields = wanted_fields(q.fields.as_deref(), v)?;
    if q.owner.is_some() && !v.at_least(MIN_OWNER) {
        return Err(ApiError::not_acceptable("Request not acceptable."));
    }
    let paging = resource::paging(
        q.limit.as_deref(),
        q.marker.as_deref(),
        q.sort_key.as_deref(),
        q.sort_dir.as_deref(),
        &[
            ("uuid", ResourceSort::Uuid),
            ("created_at", ResourceSort::CreatedAt),
            ("name", ResourceSort::Name),
        ],
        &["extra", "candidate_nodes", "traits"],
    )?;
    let mut query = ResourceQuery {
        marker: paging.marker,
        limit: Some(paging.limit),
        sort: paging.sort,
        descending: paging.descending,
        ..ResourceQuery::all(KIND)
    };
    if let Some(n) = &q.node {
        query.node = Some(node_400(&st, n, v).await?.uuid);
    }
    for (field, value) in [
        ("resource_class", &q.resource_class),
        ("state", &q.state),
        ("owner", &q.owner),
    ] {
        if let Some(value) = value {
            query.body_eq.push((field, value.clone()));
        }
    }
    let rows = st.tm.store().list_resources(&query).await?;
    let last = rows.last().map(|r| r.uuid);
    let mut items = Vec::with_capacity(rows.len());
    for r in rows {
        items.push(shape(
            render(&Allocation::from_resource(r), &base, v),
            &fields,
        )?);
    }
    let body = resource::collection(
        "allocations",
        items,
        last,
        &paging,
        &base,
        "allocations",
        &[
            ("fields", q.fields.as_deref()),
            ("node", q.node.as_deref()),
            ("resource_class", q.resource_class.as_deref()),
            ("state", q.state.as_deref()),
            ("owner", q.owner.as_deref()),
        ],
    );
    Ok(Json(body).into_response())
}

/// `fields` only.
pub type ShowQuery = resource::ShowQuery;

/// `GET /v1/allocations/{allocation_ident}`.
pub async fn show(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ShowQuery>,
) -> Result<Response, ApiError> {
    gate(v, MIN, false, NOT_ALLOWED)?;
    let a = find(&st, &id).await?;
    let fields = wanted_fields(q.fields.as_deref(), v)?;
    Ok(Json(shape(render(&a, &base, v), &fields)?).into_response())
}

const PATCHABLE: [&str; 2] = ["name", "extra"];

/// `PATCH /v1/allocations/{allocation_ident}` (1.57): name and extra only,
/// conditional on the revision read.
pub async fn update(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiPath(id): ApiPath<String>,
    JsonBody(ops): JsonBody<Vec<PatchOp>>,
) -> Result<Response, ApiError> {
    gate(
        v,
        MIN_UPDATE,
        true,
        "The API version does not allow updating allocations",
    )?;
    // Conditional on the revision read; the conductor may bind the
    // allocation meanwhile (a write of its own), so a changed allocation is
    // re-read and the patch applied again, a few times.
    let mut attempts = 0;
    loop {
        attempts += 1;
        let current = find(&st, &id).await?;
        let next = patched(&current, &ops)?;
        if next == current {
            return Ok(Json(render(&current, &base, v)).into_response());
        }
        match st.tm.store().update_resource(&next.to_resource()).await {
            Ok(stored) => {
                return Ok(
                    Json(render(&Allocation::from_resource(stored), &base, v)).into_response()
                )
            }
            Err(StoreError::ResourceChanged { .. }) if attempts < 5 => continue,
            Err(e) => return Err(store_error(e)),
        }
    }
}

/// `current` with the name/extra patch `ops` applied and validated.
fn patched(current: &Allocation, ops: &[PatchOp]) -> Result<Allocation, ApiError> {
    for op in ops {
        if op.path.trim_start_matches('/').split('/').next() == Some("name") {
            if let Some(Value::String(n)) = &op.value {
                if ferric_core::node::validate_name(n).is_err() {
                    return Err(ApiError::bad_request(format!(
                        "Cannot update allocation with invalid name '{n}'"
                    )));
                }
            }
        }
    }
    let mut doc = Map::new();
    doc.insert("name".into(), json!(current.name));
    doc.insert("extra".into(), Value::Object(current.extra.clone()));
    resource::apply_patch(&mut doc, ops, &PATCHABLE, |f| match f {
        "extra" => json!({}),
        _ => Value::Null,
    })?;
    let d = Doc {
        what: "allocation",
        map: &doc,
    };
    let name = d.opt_str("name", None)?;
    if let Some(n) = &name {
        if ferric_core::node::validate_name(n).is_err() {
            return Err(ApiError::bad_request(format!(
                "Cannot update allocation with invalid name '{n}'"
            )));
        }
    }
    let extra = d.opt_object("extra")?.unwrap_or_default();
    Ok(Allocation {
        name,
        extra,
        ..current.clone()
    })
}

/// `DELETE /v1/allocations/{allocation_ident}`.
pub async fn delete(
    State(st): State<ApiState>,
    v: Version,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    gate(v, MIN, true, NOT_ALLOWED)?;
    let a = find(&st, &id).await?;
    destroy(&st, a.uuid).await
}

async fn destroy(st: &ApiState, uuid: Uuid) -> Result<Response, ApiError> {
    match allocation::destroy(&st.tm, uuid).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(AllocationError::Task(ferric_conductor::TaskError::Store(
            StoreError::ResourceNotFound { .. },
        ))) => Err(ApiError::not_found(format!(
            "Allocation {uuid} could not be found."
        ))),
        Err(e) => Err(map_allocation_error(e)),
    }
}

/// The allocation of a node, if any.
async fn of_node(st: &ApiState, node: Uuid) -> Result<Option<Allocation>, ApiError> {
    Ok(st
        .tm
        .store()
        .list_resources(&ResourceQuery {
            node: Some(node),
            limit: Some(1),
            ..ResourceQuery::all(KIND)
        })
        .await?
        .into_iter()
        .next()
        .map(Allocation::from_resource))
}

/// `GET /v1/nodes/{node_ident}/allocation`.
pub async fn node_show(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ShowQuery>,
) -> Result<Response, ApiError> {
    gate(v, MIN, false, NOT_ALLOWED)?;
    let fields = wanted_fields(q.fields.as_deref(), v)?;
    let node = node_400(&st, &id, v).await?;
    let a = of_node(&st, node.uuid)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Allocation for node {id} was not found")))?;
    Ok(Json(shape(render(&a, &base, v), &fields)?).into_response())
}

/// `DELETE /v1/nodes/{node_ident}/allocation`.
pub async fn node_delete(
    State(st): State<ApiState>,
    v: Version,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    gate(v, MIN, false, NOT_ALLOWED)?;
    let node = st.tm.store().get_node(&node_ident(&id, v)?).await?;
    let a = of_node(&st, node.uuid)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Allocation for node {id} was not found")))?;
    destroy(&st, a.uuid).await
}

/// Whether a node PATCH from `old` to `new` removes the instance of a node
/// that has an allocation (the allocation then goes, as in Ironic's
/// `update_node`); refused (409) outside maintenance unless the node is in
/// a state that allows updates.
pub(crate) fn removes_allocated_instance(
    old: &ferric_core::Node,
    new: &ferric_core::Node,
) -> Result<bool, ApiError> {
    use ferric_core::ProvisionState as S;
    if old.attrs.allocation_uuid.is_none()
        || old.instance_uuid.is_none()
        || new.instance_uuid.is_some()
    {
        return Ok(false);
    }
    let allowed = [
        S::Enroll,
        S::Inspecting,
        S::InspectWait,
        S::Manageable,
        S::Available,
    ];
    if !old.maintenance && !allowed.contains(&old.provision_state) {
        return Err(ApiError::conflict_409(format!(
            "Node {} with an allocation can not have instance_uuid removed unless it is in one of allowed ({}) states or in maintenance mode. Current state is '{}'.",
            old.uuid,
            allowed.map(|s| s.as_str()).join(", "),
            old.provision_state.as_str()
        )));
    }
    Ok(true)
}

/// The OpenAPI paths of this module.
pub(crate) fn openapi_paths() -> Map<String, Value> {
    let ok = crate::resource::oas::ok;
    let common = |extra: Value| {
        crate::resource::oas::with_errors(
            extra,
            &[
                ("400", "Invalid input"),
                ("401", "Credentials required"),
                ("404", "No such allocation (or the version is below 1.52)"),
                ("405", "The version does not allow this method"),
                ("406", "Microversion not acceptable"),
                (
                    "409",
                    "Duplicate name or UUID, node associated, or changed concurrently",
                ),
            ],
        )
    };
    let list_params = json!([
        {"name": "node", "in": "query", "schema": {"type": "string"}},
        {"name": "resource_class", "in": "query", "schema": {"type": "string"}},
        {"name": "state", "in": "query", "schema": {"type": "string"}},
        {"name": "owner", "in": "query", "schema": {"type": "string"}},
        resource::openapi_limit_param(),
        {"name": "marker", "in": "query", "schema": {"type": "string", "format": "uuid"}},
        {"name": "sort_key", "in": "query", "schema": {"type": "string", "enum": ["id", "uuid", "created_at", "name"]}},
        {"name": "sort_dir", "in": "query", "schema": {"type": "string", "enum": ["asc", "desc"]}},
        {"name": "fields", "in": "query", "schema": {"type": "string"}},
    ]);
    let ident =
        json!({"name": "ident", "in": "path", "required": true, "schema": {"type": "string"}});
    let fields = json!({"name": "fields", "in": "query", "schema": {"type": "string"}});
    let body = json!({"required": true, "content": {"application/json": {"schema": {
        "type": "object",
        "properties": {
            "uuid": {"type": ["string", "null"]},
            "name": {"type": ["string", "null"]},
            "node": {"type": ["string", "null"]},
            "owner": {"type": ["string", "null"]},
            "resource_class": {"type": ["string", "null"], "maxLength": 80},
            "traits": {"type": ["array", "null"], "items": {"type": "string"}},
            "candidate_nodes": {"type": ["array", "null"], "items": {"type": "string"}},
            "extra": {"type": ["object", "null"]}
        },
        "additionalProperties": false
    }}}});
    let patch_body = json!({"required": true, "content": {"application/json": {"schema": {"type": "array", "items": {"type": "object"}}}}});
    let mut m = Map::new();
    m.insert("/v1/allocations".into(), json!({
        "get": {"summary": "List allocations", "parameters": list_params, "responses": common(json!({"200": ok("{allocations, next?}")}))},
        "post": {"summary": "Create an allocation (processed in the background; with node: backfill)", "requestBody": body, "responses": common(json!({"201": ok("The allocation")}))},
    }));
    m.insert("/v1/allocations/{ident}".into(), json!({
        "get": {"summary": "Show an allocation", "parameters": [ident, fields], "responses": common(json!({"200": ok("The allocation")}))},
        "patch": {"summary": "Update an allocation's name or extra (1.57)", "parameters": [ident], "requestBody": patch_body, "responses": common(json!({"200": ok("The allocation")}))},
        "delete": {"summary": "Delete an allocation, freeing its node", "parameters": [ident], "responses": common(json!({"204": {"description": "Deleted"}}))},
    }));
    m.insert("/v1/nodes/{ident}/allocation".into(), json!({
        "get": {"summary": "Show the node's allocation", "parameters": [ident, fields], "responses": common(json!({"200": ok("The allocation")}))},
        "delete": {"summary": "Delete the node's allocation", "parameters": [ident], "responses": common(json!({"204": {"description": "Deleted"}}))},
    }));
    m
}

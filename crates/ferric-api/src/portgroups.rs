//! Portgroups (Ironic 39's `/v1/portgroups`, 1.23+): `POST/GET
//! /v1/portgroups`, `GET /v1/portgroups/detail`, `GET/PATCH/DELETE
//! /v1/portgroups/{portgroup}`, and `/v1/nodes/{node}/portgroups[/detail]`.
//!
//! Stored as a [`ferric_store::Resource`] of kind `Portgroup`: the optional
//! MAC address is its unique key. Creation needs no lock (as in Ironic);
//! update and deletion take the node's exclusive lock, and deletion is
//! refused while ports are members (port creation into a portgroup takes
//! the same lock, so the check cannot race with it).

use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery, BaseUrl, JsonBody};
use crate::nodes::{node_ident, release};
use crate::patch::PatchOp;
use crate::render;
use crate::resource::{self, Doc};
use crate::version::Version;
use crate::ApiState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ferric_core::{DbTime, ProvisionState};
use ferric_store::{
    NewResource, NodeIdent, Resource, ResourceKind, ResourceQuery, ResourceSort, StoreError,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use uuid::Uuid;

const KIND: ResourceKind = ResourceKind::Portgroup;

/// Ironic's `[DEFAULT]default_portgroup_mode`.
pub const DEFAULT_MODE: &str = "active-backup";

/// Routes of this module.
pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/portgroups", get(list).post(create))
        .route("/v1/portgroups/detail", get(list_detail))
        .route(
            "/v1/portgroups/{ident}",
            get(show).patch(update).delete(delete),
        )
        .route("/v1/nodes/{ident}/portgroups", get(node_portgroups))
        .route(
            "/v1/nodes/{ident}/portgroups/detail",
            get(node_portgroups_detail),
        )
}

/// A portgroup, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct Portgroup {
    pub uuid: Uuid,
    pub address: Option<String>,
    pub node_uuid: Uuid,
    pub name: Option<String>,
    pub body: PortgroupBody,
    pub created_at: DbTime,
    pub updated_at: Option<DbTime>,
    pub revision: i64,
}

/// The fields kept in the stored body.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
#[serde(default)]
pub struct PortgroupBody {
    pub mode: String,
    pub properties: Map<String, Value>,
    pub standalone_ports_supported: bool,
    pub internal_info: Map<String, Value>,
    pub extra: Map<String, Value>,
    pub physical_network: Option<String>,
    pub category: Option<String>,
    pub dynamic_portgroup: bool,
}

impl Default for PortgroupBody {
    fn default() -> Self {
        PortgroupBody {
            mode: DEFAULT_MODE.into(),
            properties: Map::new(),
            standalone_ports_supported: true,
            internal_info: Map::new(),
            extra: Map::new(),
            physical_network: None,
            category: None,
            dynamic_portgroup: false,
        }
    }
}

impl Portgroup {
    /// From the stored form.
    pub fn from_resource(r: Resource) -> Result<Portgroup, ApiError> {
        let body: PortgroupBody = serde_json::from_value(Value::Object(r.body))
            .map_err(|e| ApiError::internal(&format!("portgroup {} body: {e}", r.uuid)))?;
        Ok(Portgroup {
            uuid: r.uuid,
            address: r.key,
            node_uuid: r
                .node
                .ok_or_else(|| ApiError::internal(&format!("portgroup {} has no node", r.uuid)))?,
            name: r.name,
            body,
            created_at: r.created_at,
            updated_at: r.updated_at,
            revision: r.revision,
        })
    }

    fn body_map(&self) -> Map<String, Value> {
        match serde_json::to_value(&self.body) {
            Ok(Value::Object(m)) => m,
            // A struct of plain fields always serializes to an object.
            _ => Map::new(),
        }
    }

    /// The stored form (for an update: the revision it was read at).
    pub fn to_resource(&self) -> Resource {
        Resource {
            kind: KIND,
            uuid: self.uuid,
            name: self.name.clone(),
            node: Some(self.node_uuid),
            parent: None,
            key: self.address.clone(),
            body: self.body_map(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            revision: self.revision,
        }
    }
}

fn field_version(field: &str) -> u32 {
    match field {
        "mode" | "properties" => 26,
        "physical_network" => 102,
        "category" => 103,
        "dynamic_portgroup" => 111,
        _ => 23,
    }
}

fn check_fields_allowed<'a>(
    fields: impl IntoIterator<Item = &'a str>,
    v: Version,
) -> Result<(), ApiError> {
    for f in fields {
        if !v.at_least(field_version(f)) {
            return Err(ApiError::not_acceptable("Request not acceptable."));
        }
    }
    Ok(())
}

/// Portgroups exist from 1.23: below, the resource is not there.
fn check_version(v: Version) -> Result<(), ApiError> {
    if v.at_least(23) {
        Ok(())
    } else {
        Err(ApiError::not_found("The resource could not be found."))
    }
}

/// The portgroup document at version `v`.
pub fn render(p: &Portgroup, base: &BaseUrl, v: Version) -> Map<String, Value> {
    let b = &p.body;
    let mut m = Map::new();
    m.insert("uuid".into(), json!(p.uuid));
    m.insert("address".into(), json!(p.address));
    m.insert("name".into(), json!(p.name));
    m.insert("node_uuid".into(), json!(p.node_uuid));
    m.insert(
        "standalone_ports_supported".into(),
        json!(b.standalone_ports_supported),
    );
    m.insert(
        "internal_info".into(),
        Value::Object(b.internal_info.clone()),
    );
    m.insert("extra".into(), Value::Object(b.extra.clone()));
    m.insert("created_at".into(), render::timestamp(p.created_at));
    m.insert(
        "updated_at".into(),
        p.updated_at.map_or(Value::Null, render::timestamp),
    );
    m.insert(
        "links".into(),
        render::links(&base.0, &format!("portgroups/{}", p.uuid)),
    );
    m.insert(
        "ports".into(),
        render::links(&base.0, &format!("portgroups/{}/ports", p.uuid)),
    );
    for (k, val) in [
        ("mode", json!(b.mode)),
        ("properties", Value::Object(b.properties.clone())),
        ("physical_network", json!(b.physical_network)),
        ("category", json!(b.category)),
        ("dynamic_portgroup", json!(b.dynamic_portgroup)),
    ] {
        if v.at_least(field_version(k)) {
            m.insert(k.into(), val);
        }
    }
    m
}

const FIELDS: [&str; 10] = [
    "address",
    "category",
    "extra",
    "mode",
    "name",
    "node_uuid",
    "physical_network",
    "properties",
    "standalone_ports_supported",
    "uuid",
];

const PATCH_FIELDS: [&str; 9] = [
    "address",
    "extra",
    "mode",
    "name",
    "node_uuid",
    "properties",
    "standalone_ports_supported",
    "physical_network",
    "category",
];

struct Validated {
    uuid: Option<Uuid>,
    address: Option<String>,
    node: Uuid,
    name: Option<String>,
    body: PortgroupBody,
}

fn validate(doc: &Map<String, Value>) -> Result<Validated, ApiError> {
    let d = Doc {
        what: "portgroup",
        map: doc,
    };
    d.only(&FIELDS)?;
    let node = match doc.get("node_uuid") {
        Some(Value::String(u)) => resource::uuid_param("node_uuid", u)?,
        Some(other) => {
            return Err(resource::schema_error(
                "portgroup",
                format!("{other} is not of type 'string'"),
            ))
        }
        None => {
            return Err(resource::schema_error(
                "portgroup",
                "'node_uuid' is a required property",
            ))
        }
    };
    let address = d
        .opt_str("address", None)?
        .map(|a| resource::mac_address("address", &a))
        .transpose()?;
    let uuid = d
        .opt_str("uuid", None)?
        .map(|u| resource::uuid_param("uuid", &u))
        .transpose()?;
    let name = d.opt_str("name", Some(255))?;
    let body = PortgroupBody {
        mode: d
            .opt_str("mode", Some(255))?
            .unwrap_or_else(|| DEFAULT_MODE.into()),
        properties: d.opt_object("properties")?.unwrap_or_default(),
        standalone_ports_supported: d.opt_bool("standalone_ports_supported")?.unwrap_or(true),
        internal_info: Map::new(),
        extra: d.opt_object("extra")?.unwrap_or_default(),
        physical_network: d.opt_str("physical_network", Some(64))?,
        category: d.opt_str("category", Some(80))?,
        dynamic_portgroup: false,
    };
    Ok(Validated {
        uuid,
        address,
        node,
        name,
        body,
    })
}

fn valid_name(name: &str) -> bool {
    ferric_core::node::validate_name(name).is_ok() && Uuid::parse_str(name).is_err()
}

/// `POST /v1/portgroups`.
pub async fn create(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    JsonBody(doc): JsonBody<Map<String, Value>>,
) -> Result<Response, ApiError> {
    check_version(v)?;
    let req = validate(&doc)?;
    if st
        .tm
        .store()
        .get_node(&NodeIdent::Uuid(req.node))
        .await
        .is_err()
    {
        return Err(ApiError::bad_request(format!(
            "Node {} could not be found.",
            req.node
        )));
    }
    check_fields_allowed(doc.keys().map(String::as_str), v)?;
    if let Some(n) = req.name.as_deref().filter(|n| !n.is_empty()) {
        if !valid_name(n) {
            return Err(ApiError::bad_request(format!(
                "Cannot create portgroup with invalid name '{n}'"
            )));
        }
    }
    let pg = Portgroup {
        uuid: req.uuid.unwrap_or_else(Uuid::new_v4),
        address: req.address,
        node_uuid: req.node,
        name: req.name,
        body: req.body,
        created_at: DbTime(0),
        updated_at: None,
        revision: 0,
    };
    let stored = st
        .tm
        .store()
        .create_resource(
            KIND,
            NewResource {
                uuid: Some(pg.uuid),
                name: pg.name.clone(),
                node: Some(pg.node_uuid),
                parent: None,
                key: pg.address.clone(),
                body: pg.body_map(),
            },
        )
        .await
        .map_err(|e| match e {
            StoreError::NodeNotFound(_) => {
                ApiError::bad_request(format!("Node {} could not be found.", pg.node_uuid))
            }
            e => e.into(),
        })?;
    let pg = Portgroup::from_resource(stored)?;
    Ok(resource::created(
        render(&pg, &base, v),
        &format!("{}/v1/portgroups/{}", base.0, pg.uuid),
    ))
}

/// List query parameters.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    node: Option<String>,
    address: Option<String>,
    shard: Option<String>,
    conductor_groups: Option<String>,
    marker: Option<String>,
    limit: Option<String>,
    sort_key: Option<String>,
    sort_dir: Option<String>,
    fields: Option<String>,
    detail: Option<String>,
}

/// `GET /v1/portgroups`.
pub async fn list(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    list_portgroups(st, v, base, q, false, None).await
}

/// `GET /v1/portgroups/detail`.
pub async fn list_detail(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    list_portgroups(st, v, base, q, true, None).await
}

async fn node_portgroups(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiPath(node): ApiPath<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    list_portgroups(st, v, base, q, false, Some(node)).await
}

async fn node_portgroups_detail(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiPath(node): ApiPath<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    list_portgroups(st, v, base, q, true, Some(node)).await
}

async fn list_portgroups(
    st: ApiState,
    v: Version,
    base: BaseUrl,
    q: ListQuery,
    detail_path: bool,
    parent_node: Option<String>,
) -> Result<Response, ApiError> {
    check_version(v)?;
    let (detail, fields) =
        resource::list_view(v, detail_path, q.detail.as_deref(), q.fields.as_deref())?;
    if let Some(f) = &fields {
        check_fields_allowed(f.iter().map(String::as_str), v)?;
    }
    // Portgroups are filtered by shard from 1.106 (ports from 1.82).
    if q.shard.is_some() && !v.at_least(106) {
        return Err(ApiError::not_acceptable("Request not acceptable."));
    }
    if q.conductor_groups.is_some() && !v.at_least(99) {
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
            ("address", ResourceSort::Key),
            ("name", ResourceSort::Name),
        ],
        &["extra", "internal_info", "properties"],
    )?;
    let node = parent_node.or_else(|| q.node.clone());
    let exclusive = [
        node.is_some(),
        q.address.is_some(),
        q.shard.is_some(),
        q.conductor_groups.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if exclusive > 1 {
        return Err(ApiError::bad_request(
            "Filtering by node, address, or shard simultaneously is not supported.",
        ));
    }
    let mut query = ResourceQuery {
        node_shards: resource::string_list(q.shard.as_deref()),
        marker: paging.marker,
        limit: Some(paging.limit),
        sort: paging.sort,
        descending: paging.descending,
        ..ResourceQuery::all(KIND)
    };
    if let Some(n) = &node {
        query.node = Some(st.tm.store().get_node(&node_ident(n, v)?).await?.uuid);
    }
    if let Some(a) = &q.address {
        query.key = Some(resource::mac_address("address", a)?);
    }
    if let Some(groups) = &q.conductor_groups {
        query.node_conductor_groups = Some(
            groups
                .split(',')
                .map(|g| g.trim().to_ascii_lowercase())
                .filter(|g| !g.is_empty())
                .collect(),
        );
    }
    let rows = st.tm.store().list_resources(&query).await?;
    let last = rows.last().map(|r| r.uuid);
    let wanted = resource::wanted(&fields, detail, &["uuid", "address", "name"]);
    let mut items = Vec::with_capacity(rows.len());
    for r in rows {
        let doc = render(&Portgroup::from_resource(r)?, &base, v);
        items.push(resource::shape(doc, detail, &wanted)?);
    }
    let path = match (&node, detail_path) {
        (Some(n), d) if q.node.is_none() => format!(
            "nodes/{}/portgroups{}",
            resource::encode(n),
            if d { "/detail" } else { "" }
        ),
        (_, true) => "portgroups/detail".to_string(),
        (_, false) => "portgroups".to_string(),
    };
    let body = resource::collection(
        "portgroups",
        items,
        last,
        &paging,
        &base,
        &path,
        &[
            ("node", q.node.as_deref()),
            ("address", q.address.as_deref()),
            ("conductor_groups", q.conductor_groups.as_deref()),
            ("fields", q.fields.as_deref()),
            ("detail", q.detail.as_deref()),
        ],
    );
    Ok(Json(body).into_response())
}

/// `GET /v1/portgroups/{portgroup}` query.
pub type ShowQuery = resource::ShowQuery;

async fn find(st: &ApiState, id: &str) -> Result<Portgroup, ApiError> {
    Portgroup::from_resource(
        st.tm
            .store()
            .get_resource(KIND, &resource::ident(id))
            .await?,
    )
}

/// `GET /v1/portgroups/{portgroup}`.
pub async fn show(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ShowQuery>,
) -> Result<Response, ApiError> {
    check_version(v)?;
    let fields = resource::requested_fields(q.fields.as_deref(), v)?;
    if let Some(f) = &fields {
        check_fields_allowed(f.iter().map(String::as_str), v)?;
    }
    let pg = find(&st, &id).await?;
    let doc = render(&pg, &base, v);
    let doc = match &fields {
        Some(f) => resource::select(doc, f)?,
        None => doc,
    };
    Ok(Json(doc).into_response())
}

const ASSOCIATION_STATES: [ProvisionState; 4] = [
    ProvisionState::Enroll,
    ProvisionState::Inspecting,
    ProvisionState::InspectWait,
    ProvisionState::Manageable,
];

/// `PATCH /v1/portgroups/{portgroup}`.
pub async fn update(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiPath(id): ApiPath<String>,
    JsonBody(ops): JsonBody<Vec<PatchOp>>,
) -> Result<Response, ApiError> {
    check_version(v)?;
    let roots = resource::patched_roots(&ops);
    check_fields_allowed(
        roots
            .iter()
            .map(String::as_str)
            .filter(|r| PATCH_FIELDS.contains(r)),
        v,
    )?;
    for op in &ops {
        if op.path == "/name" && op.op != "remove" {
            if let Some(Value::String(n)) = &op.value {
                if !n.is_empty() && !valid_name(n) {
                    return Err(ApiError::bad_request(format!(
                        "Portgroup {id}: Cannot change name to invalid name '{n}'"
                    )));
                }
            }
        }
    }
    let before = find(&st, &id).await?;
    let task = st
        .tm
        .acquire(before.node_uuid)
        .purpose("update portgroup")
        .retry(st.retry)
        .exclusive()
        .await?;
    let outcome = async {
        let current = Portgroup::from_resource(
            st.tm
                .store()
                .get_resource(KIND, &NodeIdent::Uuid(before.uuid))
                .await?,
        )?;
        let node = task.node().clone();
        let mut doc = current.body_map();
        doc.remove("internal_info");
        doc.remove("dynamic_portgroup");
        doc.insert("address".into(), json!(current.address));
        doc.insert("name".into(), json!(current.name));
        doc.insert("node_uuid".into(), json!(current.node_uuid));
        resource::apply_patch(&mut doc, &ops, &PATCH_FIELDS, |f| match f {
            "extra" | "properties" => json!({}),
            "standalone_ports_supported" => json!(true),
            "mode" => json!(DEFAULT_MODE),
            _ => Value::Null,
        })?;
        if doc.get("mode").is_none_or(Value::is_null) {
            return Err(ApiError::bad_request(
                "'mode' is a mandatory attribute and can not be removed",
            ));
        }
        let req = validate(&doc)?;
        let mut next = current.clone();
        next.address = req.address;
        next.node_uuid = req.node;
        next.name = req.name;
        let internal = std::mem::take(&mut next.body.internal_info);
        let dynamic = next.body.dynamic_portgroup;
        next.body = req.body;
        next.body.internal_info = internal;
        next.body.dynamic_portgroup = dynamic;
        if node.provision_state == ProvisionState::Inspecting && v.at_least(39) {
            return Err(ApiError::conflict_409(format!(
                "Cannot update portgroup \"{}\" on node \"{}\" while it is in state \"inspecting\".",
                current.uuid, node.uuid
            )));
        }
        let members = st
            .tm
            .store()
            .list_resources(&ResourceQuery {
                parent: Some(current.uuid),
                ..ResourceQuery::all(ResourceKind::Port)
            })
            .await?;
        if next.node_uuid != current.node_uuid {
            st.tm
                .store()
                .get_node(&NodeIdent::Uuid(next.node_uuid))
                .await
                .map_err(|_| {
                    ApiError::bad_request(format!("Node {} could not be found.", next.node_uuid))
                })?;
            if !(ASSOCIATION_STATES.contains(&node.provision_state) || node.maintenance) {
                return Err(ApiError::conflict_409(format!(
                    "Portgroup {} can not be associated to node {} unless the node is in a enroll, inspecting, inspect wait, manageable state or in maintenance mode. Current state is '{}'.",
                    current.uuid, node.uuid, node.provision_state
                )));
            }
            if !members.is_empty() {
                return Err(ApiError::bad_request(format!(
                    "Portgroup {} can not be associated with node {} because there are ports associated with this portgroup.",
                    current.uuid, node.uuid
                )));
            }
        }
        if !next.body.standalone_ports_supported
            && current.body.standalone_ports_supported
            && members
                .iter()
                .any(|p| p.body.get("pxe_enabled").and_then(Value::as_bool).unwrap_or(true))
        {
            return Err(ApiError::conflict_409(format!(
                "Port group {} has ports with pxe_enabled set to True; standalone_ports_supported can not be set to False.",
                current.uuid
            )));
        }
        if next == current {
            return Ok(current);
        }
        Portgroup::from_resource(st.tm.store().update_resource(&next.to_resource()).await?)
    }
    .await;
    release(task).await;
    let pg = outcome?;
    Ok(Json(render(&pg, &base, v)).into_response())
}

/// `DELETE /v1/portgroups/{portgroup}`: refused while ports are members.
pub async fn delete(
    State(st): State<ApiState>,
    v: Version,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    check_version(v)?;
    let before = find(&st, &id).await?;
    let task = st
        .tm
        .acquire(before.node_uuid)
        .purpose("portgroup deletion")
        .retry(st.retry)
        .exclusive()
        .await?;
    let outcome = async {
        let current = Portgroup::from_resource(
            st.tm
                .store()
                .get_resource(KIND, &NodeIdent::Uuid(before.uuid))
                .await?,
        )?;
        let members = st
            .tm
            .store()
            .list_resources(&ResourceQuery {
                parent: Some(current.uuid),
                limit: Some(1),
                ..ResourceQuery::all(ResourceKind::Port)
            })
            .await?;
        if !members.is_empty() {
            return Err(ApiError::bad_request(format!(
                "Cannot complete the requested action because portgroup {} contains ports.",
                current.uuid
            )));
        }
        st.tm
            .store()
            .delete_resource(KIND, current.uuid, Some(current.revision))
            .await?;
        Ok(())
    }
    .await;
    release(task).await;
    outcome?;
    Ok(StatusCode::NO_CONTENT.into_response())
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
                ("404", "No such portgroup or node (or version below 1.23)"),
                ("406", "Microversion not acceptable"),
                ("409", "Duplicate, or node locked (with Retry-After)"),
            ],
        )
    };
    let list_params = json!([
        {"name": "node", "in": "query", "schema": {"type": "string"}},
        {"name": "address", "in": "query", "schema": {"type": "string"}},
        crate::resource::openapi_limit_param(),
        {"name": "marker", "in": "query", "schema": {"type": "string", "format": "uuid"}},
        {"name": "sort_key", "in": "query", "schema": {"type": "string", "enum": ["id", "uuid", "created_at", "address", "name"]}},
        {"name": "sort_dir", "in": "query", "schema": {"type": "string", "enum": ["asc", "desc"]}},
        {"name": "fields", "in": "query", "schema": {"type": "string"}},
        {"name": "detail", "in": "query", "schema": {"type": "boolean"}},
    ]);
    let ident =
        json!({"name": "ident", "in": "path", "required": true, "schema": {"type": "string"}});
    let body = json!({"required": true, "content": {"application/json": {"schema": {
        "type": "object",
        "required": ["node_uuid"],
        "properties": {
            "node_uuid": {"type": "string", "format": "uuid"},
            "address": {"type": ["string", "null"]},
            "name": {"type": ["string", "null"]},
            "uuid": {"type": ["string", "null"]},
            "mode": {"type": ["string", "null"]},
            "properties": {"type": ["object", "null"]},
            "standalone_ports_supported": {"type": ["boolean", "null"]},
            "extra": {"type": ["object", "null"]},
            "physical_network": {"type": ["string", "null"], "maxLength": 64},
            "category": {"type": ["string", "null"], "maxLength": 80}
        },
        "additionalProperties": false
    }}}});
    let patch_body = json!({"required": true, "content": {"application/json": {"schema": {"type": "array", "items": {"type": "object"}}}}});
    let mut nested = list_params.as_array().cloned().unwrap_or_default();
    nested.insert(0, ident.clone());
    let mut m = Map::new();
    m.insert("/v1/portgroups".into(), json!({
        "get": {"summary": "List portgroups (1.23)", "parameters": list_params, "responses": common(json!({"200": ok("{portgroups, next?}")}))},
        "post": {"summary": "Create a portgroup (1.23)", "requestBody": body, "responses": common(json!({"201": ok("The portgroup")}))},
    }));
    m.insert("/v1/portgroups/detail".into(), json!({
        "get": {"summary": "List portgroups with every field", "parameters": list_params, "responses": common(json!({"200": ok("{portgroups, next?}")}))},
    }));
    m.insert("/v1/portgroups/{ident}".into(), json!({
        "get": {"summary": "Show a portgroup", "parameters": [ident, {"name": "fields", "in": "query", "schema": {"type": "string"}}], "responses": common(json!({"200": ok("The portgroup")}))},
        "patch": {"summary": "Update a portgroup (JSON Patch)", "parameters": [ident], "requestBody": patch_body, "responses": common(json!({"200": ok("The portgroup")}))},
        "delete": {"summary": "Delete a portgroup (refused while it has ports)", "parameters": [ident], "responses": common(json!({"204": {"description": "Deleted"}}))},
    }));
    m.insert("/v1/nodes/{ident}/portgroups".into(), json!({
        "get": {"summary": "List a node's portgroups", "parameters": nested, "responses": common(json!({"200": ok("{portgroups, next?}")}))},
    }));
    m
}

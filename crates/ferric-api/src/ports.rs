//! Ports (Ironic 39's `/v1/ports`): `POST/GET /v1/ports`,
//! `GET /v1/ports/detail`, `GET/PATCH/DELETE /v1/ports/{port}`, and the
//! nested lists `/v1/nodes/{node}/ports[/detail]` and
//! `/v1/portgroups/{portgroup}/ports[/detail]` (1.24).
//!
//! Stored as a [`ferric_store::Resource`] of kind `Port`: the MAC address is
//! its unique key, the portgroup its parent, every other field the body.
//! Writes take the node's lock as Ironic's conductor does: creation a shared
//! task (exclusive when joining a portgroup, so the portgroup cannot be
//! deleted under it), update and deletion the exclusive lock, with the
//! conductor's state checks made under it.

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
use ferric_core::{DbTime, Node, ProvisionState};
use ferric_store::{
    NewResource, NodeIdent, Resource, ResourceKind, ResourceQuery, ResourceSort, StoreError,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use uuid::Uuid;

const KIND: ResourceKind = ResourceKind::Port;

/// Routes of this module.
pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/ports", get(list).post(create))
        .route("/v1/ports/detail", get(list_detail))
        .route("/v1/ports/{ident}", get(show).patch(update).delete(delete))
        .route("/v1/nodes/{ident}/ports", get(node_ports))
        .route("/v1/nodes/{ident}/ports/detail", get(node_ports_detail))
        .route("/v1/portgroups/{ident}/ports", get(portgroup_ports))
        .route(
            "/v1/portgroups/{ident}/ports/detail",
            get(portgroup_ports_detail),
        )
}

/// A port, typed. `body` fields of the stored form are the ones below the
/// node/portgroup/address columns.
#[derive(Debug, Clone, PartialEq)]
pub struct Port {
    pub uuid: Uuid,
    pub address: String,
    pub node_uuid: Uuid,
    pub portgroup_uuid: Option<Uuid>,
    pub name: Option<String>,
    pub body: PortBody,
    pub created_at: DbTime,
    pub updated_at: Option<DbTime>,
    pub revision: i64,
}

/// The fields kept in the stored body.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
#[serde(default)]
pub struct PortBody {
    pub local_link_connection: Map<String, Value>,
    pub pxe_enabled: bool,
    pub physical_network: Option<String>,
    pub is_smartnic: bool,
    pub internal_info: Map<String, Value>,
    pub extra: Map<String, Value>,
    pub description: Option<String>,
    pub vendor: Option<String>,
    pub category: Option<String>,
    pub available_for_dynamic_portgroup: bool,
}

impl Default for PortBody {
    fn default() -> Self {
        PortBody {
            local_link_connection: Map::new(),
            pxe_enabled: true,
            physical_network: None,
            is_smartnic: false,
            internal_info: Map::new(),
            extra: Map::new(),
            description: None,
            vendor: None,
            category: None,
            available_for_dynamic_portgroup: false,
        }
    }
}

impl Port {
    /// From the stored form.
    pub fn from_resource(r: Resource) -> Result<Port, ApiError> {
        let body: PortBody = serde_json::from_value(Value::Object(r.body))
            .map_err(|e| ApiError::internal(&format!("port {} body: {e}", r.uuid)))?;
        Ok(Port {
            uuid: r.uuid,
            address: r.key.unwrap_or_default(),
            node_uuid: r
                .node
                .ok_or_else(|| ApiError::internal(&format!("port {} has no node", r.uuid)))?,
            portgroup_uuid: r.parent,
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
            parent: self.portgroup_uuid,
            key: Some(self.address.clone()),
            body: self.body_map(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            revision: self.revision,
        }
    }

    /// Every field, unversioned (the PATCH document).
    fn document(&self) -> Map<String, Value> {
        let mut m = self.body_map();
        m.insert("uuid".into(), json!(self.uuid));
        m.insert("address".into(), json!(self.address));
        m.insert("node_uuid".into(), json!(self.node_uuid));
        m.insert("portgroup_uuid".into(), json!(self.portgroup_uuid));
        m.insert("name".into(), json!(self.name));
        m
    }
}

/// The microversion each field appears in.
fn field_version(field: &str) -> u32 {
    match field {
        "internal_info" => 18,
        "pxe_enabled" | "local_link_connection" => 19,
        "portgroup_uuid" => 24,
        "physical_network" => 34,
        "is_smartnic" => 53,
        "name" => 88,
        "node_ident" => 94,
        "description" => 97,
        "vendor" => 100,
        "category" => 101,
        "available_for_dynamic_portgroup" => 111,
        _ => 1,
    }
}

/// Ironic's `_check_allowed_port_fields`: naming a field the version does
/// not have is a 406.
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

const VTEP_FIELDS: [&str; 2] = ["vtep-logical-switch", "vtep-physical-switch"];

/// OVN VTEP switches in `local_link_connection`: added in 1.90, removed in
/// 1.105 (Ironic's `allow_ovn_vtep_version`).
fn vtep_allowed(v: Version) -> bool {
    v.at_least(90) && !v.at_least(105)
}

/// The port document at version `v`.
pub fn render(p: &Port, base: &BaseUrl, v: Version) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("uuid".into(), json!(p.uuid));
    m.insert("address".into(), json!(p.address));
    m.insert("node_uuid".into(), json!(p.node_uuid));
    m.insert("extra".into(), Value::Object(p.body.extra.clone()));
    m.insert("created_at".into(), render::timestamp(p.created_at));
    m.insert(
        "updated_at".into(),
        p.updated_at.map_or(Value::Null, render::timestamp),
    );
    m.insert(
        "links".into(),
        render::links(&base.0, &format!("ports/{}", p.uuid)),
    );
    let b = &p.body;
    let versioned: [(&str, Value); 12] = [
        ("internal_info", Value::Object(b.internal_info.clone())),
        ("pxe_enabled", json!(b.pxe_enabled)),
        ("local_link_connection", {
            let llc = &b.local_link_connection;
            if !vtep_allowed(v) && VTEP_FIELDS.iter().any(|k| llc.contains_key(*k)) {
                json!({})
            } else {
                Value::Object(llc.clone())
            }
        }),
        ("portgroup_uuid", json!(p.portgroup_uuid)),
        ("physical_network", json!(b.physical_network)),
        ("is_smartnic", json!(b.is_smartnic)),
        ("name", json!(p.name)),
        ("description", json!(b.description)),
        ("vendor", json!(b.vendor)),
        ("category", json!(b.category)),
        (
            "available_for_dynamic_portgroup",
            json!(b.available_for_dynamic_portgroup),
        ),
        ("node_ident", Value::Null),
    ];
    for (k, val) in versioned {
        if k != "node_ident" && v.at_least(field_version(k)) {
            m.insert(k.into(), val);
        }
    }
    m
}

/// Ironic's `local_link_connection` schema (any of: port_id + switch_id;
/// port_id + hostname (smart NIC); network_type unmanaged; port_id + both
/// vtep switches (1.90); empty), with `switch_id` normalised.
fn validate_local_link(
    llc: &Map<String, Value>,
    v: Version,
) -> Result<Map<String, Value>, ApiError> {
    const KNOWN: [&str; 7] = [
        "port_id",
        "switch_id",
        "hostname",
        "switch_info",
        "network_type",
        "vtep-logical-switch",
        "vtep-physical-switch",
    ];
    let err =
        |m: String| ApiError::bad_request(format!("Schema error for local_link_connection: {m}"));
    if llc.contains_key("network_type") && !v.at_least(64) {
        return Err(ApiError::not_acceptable("Request not acceptable."));
    }
    if VTEP_FIELDS.iter().any(|k| llc.contains_key(*k)) && !vtep_allowed(v) {
        return Err(ApiError::not_acceptable("Request not acceptable."));
    }
    let mut out = llc.clone();
    for (k, val) in llc {
        if !KNOWN.contains(&k.as_str()) {
            return Err(err(format!(
                "Additional properties are not allowed ('{k}' was unexpected)"
            )));
        }
        let Value::String(s) = val else {
            return Err(err(format!("{val} is not of type 'string'")));
        };
        crate::extract::check_text("local_link_connection", s)?;
        if k == "network_type" && s != "managed" && s != "unmanaged" {
            return Err(err(format!("'{s}' is not one of ['managed', 'unmanaged']")));
        }
    }
    let has = |k: &str| llc.contains_key(k);
    if has("vtep-logical-switch") != has("vtep-physical-switch") {
        let (present, missing) = if has("vtep-logical-switch") {
            ("vtep-logical-switch", "vtep-physical-switch")
        } else {
            ("vtep-physical-switch", "vtep-logical-switch")
        };
        return Err(err(format!("'{missing}' is a dependency of '{present}'")));
    }
    let ok = llc.is_empty()
        || (has("port_id") && has("switch_id"))
        || (has("port_id") && has("hostname"))
        || llc.get("network_type").and_then(Value::as_str) == Some("unmanaged")
        || (has("port_id") && has("vtep-logical-switch") && has("vtep-physical-switch"));
    if !ok {
        return Err(err(format!(
            "{} is not valid under any of the given schemas",
            Value::Object(llc.clone())
        )));
    }
    if let Some(Value::String(sw)) = llc.get("switch_id") {
        let normalized = resource::mac_address("switch_id", sw)
            .ok()
            .or_else(|| datapath_id(sw))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "switch_id must be a valid MAC address or OpenFlow datapath ID, got \"{sw}\"."
                ))
            })?;
        out.insert("switch_id".into(), json!(normalized));
    }
    Ok(out)
}

/// An OpenFlow datapath ID (eight colon-separated hex pairs), lower case.
fn datapath_id(s: &str) -> Option<String> {
    let lower = s.to_ascii_lowercase();
    let parts: Vec<&str> = lower.split(':').collect();
    (parts.len() == 8
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit())))
    .then_some(lower)
}

const CREATE_FIELDS: [&str; 15] = [
    "address",
    "extra",
    "is_smartnic",
    "local_link_connection",
    "node_ident",
    "node_uuid",
    "physical_network",
    "portgroup_uuid",
    "pxe_enabled",
    "uuid",
    "name",
    "description",
    "vendor",
    "category",
    "available_for_dynamic_portgroup",
];

const PATCH_FIELDS: [&str; 14] = [
    "address",
    "extra",
    "is_smartnic",
    "local_link_connection",
    "node_ident",
    "node_uuid",
    "physical_network",
    "portgroup_uuid",
    "pxe_enabled",
    "name",
    "description",
    "vendor",
    "category",
    "available_for_dynamic_portgroup",
];

/// A port document validated as Ironic's `PORT_SCHEMA` plus its field
/// validators. `node` is the node reference (uuid or, 1.94, ident).
struct Validated {
    uuid: Option<Uuid>,
    address: String,
    node: String,
    portgroup: Option<Uuid>,
    name: Option<String>,
    body: PortBody,
    pxe_given: bool,
}

fn validate(doc: &Map<String, Value>, v: Version) -> Result<Validated, ApiError> {
    let d = Doc {
        what: "port",
        map: doc,
    };
    d.only(&CREATE_FIELDS)?;
    let address = match doc.get("address") {
        Some(Value::String(a)) => resource::mac_address("address", a)?,
        Some(other) => {
            return Err(resource::schema_error(
                "port",
                format!("{other} is not of type 'string'"),
            ))
        }
        None => {
            return Err(resource::schema_error(
                "port",
                "'address' is a required property",
            ))
        }
    };
    let node = match (doc.get("node_uuid"), doc.get("node_ident")) {
        (Some(Value::String(u)), None) => resource::uuid_param("node_uuid", u)?.to_string(),
        (None, Some(Value::String(i))) => {
            crate::extract::check_text("node_ident", i)?;
            i.clone()
        }
        (Some(_), Some(_)) => {
            return Err(resource::schema_error(
                "port",
                "node_uuid and node_ident are mutually exclusive (is valid under each of {'required': ['node_ident']}, {'required': ['node_uuid']})",
            ))
        }
        (None, None) => {
            return Err(resource::schema_error(
                "port",
                "is not valid under any of the given schemas: 'node_uuid' or 'node_ident' is required",
            ))
        }
        (Some(other), None) | (None, Some(other)) => {
            return Err(resource::schema_error(
                "port",
                format!("{other} is not of type 'string'"),
            ))
        }
    };
    let uuid = d
        .opt_str("uuid", None)?
        .map(|u| resource::uuid_param("uuid", &u))
        .transpose()?;
    let portgroup = d
        .opt_str("portgroup_uuid", None)?
        .map(|u| resource::uuid_param("portgroup_uuid", &u))
        .transpose()?;
    // Ironic stores any string as a port name (no logical-name check).
    let name = d.opt_str("name", Some(255))?;
    let local_link_connection = match d.opt_object("local_link_connection")? {
        Some(llc) => validate_local_link(&llc, v)?,
        None => Map::new(),
    };
    let pxe = d.opt_bool("pxe_enabled")?;
    let available = match doc.get("available_for_dynamic_portgroup") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(resource::schema_error(
                "port",
                format!("{other} is not of type 'boolean'"),
            ))
        }
    };
    let body = PortBody {
        local_link_connection,
        pxe_enabled: pxe.unwrap_or(true),
        physical_network: d.opt_str("physical_network", Some(64))?,
        is_smartnic: d.opt_bool("is_smartnic")?.unwrap_or(false),
        internal_info: Map::new(),
        extra: d.opt_object("extra")?.unwrap_or_default(),
        description: d.opt_str("description", Some(255))?,
        vendor: d.opt_str("vendor", Some(32))?,
        category: d.opt_str("category", Some(80))?,
        available_for_dynamic_portgroup: available,
    };
    if body.physical_network.as_deref() == Some("") {
        return Err(ApiError::bad_request(
            "A non-empty value is required when setting physical_network",
        ));
    }
    if body.is_smartnic
        && !(body.local_link_connection.contains_key("port_id")
            && body.local_link_connection.contains_key("hostname"))
    {
        return Err(ApiError::bad_request(
            "Smart NIC port must have port_id and hostname in local_link_connection",
        ));
    }
    Ok(Validated {
        uuid,
        address,
        node,
        portgroup,
        name,
        body,
        pxe_given: pxe == Some(true),
    })
}

/// A portgroup's `standalone_ports_supported` (default true), or 400 when
/// it does not exist (Ironic turns the 404 into a 400 on port writes).
async fn portgroup_of(st: &ApiState, pg: Uuid) -> Result<Resource, ApiError> {
    match st
        .tm
        .store()
        .get_resource(ResourceKind::Portgroup, &NodeIdent::Uuid(pg))
        .await
    {
        Ok(r) => Ok(r),
        Err(StoreError::ResourceNotFound { .. }) => Err(ApiError::bad_request(format!(
            "Portgroup {pg} could not be found."
        ))),
        Err(e) => Err(e.into()),
    }
}

fn standalone_supported(pg: &Resource) -> bool {
    pg.body
        .get("standalone_ports_supported")
        .and_then(Value::as_bool)
        .unwrap_or(true)
}

/// `POST /v1/ports`.
pub async fn create(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    JsonBody(doc): JsonBody<Map<String, Value>>,
) -> Result<Response, ApiError> {
    let req = validate(&doc, v)?;
    if doc.contains_key("node_ident") && !v.at_least(94) {
        return Err(ApiError::not_acceptable("Request not acceptable."));
    }
    let ident = NodeIdent::parse(&req.node);
    let missing_node =
        |ident: &str| ApiError::bad_request(format!("Node {ident} could not be found."));
    // Joining a portgroup takes the exclusive lock, so the portgroup cannot
    // be deleted in between (its deletion takes it too); otherwise a shared
    // task, as Ironic's conductor.
    let acquire = st
        .tm
        .acquire(ident.clone())
        .purpose("port create")
        .retry(st.retry);
    let acquired = if req.portgroup.is_some() {
        acquire
            .exclusive()
            .await
            .map(|t| (t.node().clone(), Some(t)))
    } else {
        acquire.shared().await.map(|t| {
            let node = t.node().clone();
            t.release();
            (node, None)
        })
    };
    let (node, held): (Node, Option<ferric_conductor::ExclusiveTask>) = match acquired {
        Ok(x) => x,
        Err(e) => {
            return Err(match ApiError::from(e) {
                e if e.status() == StatusCode::NOT_FOUND => missing_node(&req.node),
                e => e,
            })
        }
    };
    let outcome = async {
        check_fields_allowed(doc.keys().map(String::as_str), v)?;
        if let Some(pg_uuid) = req.portgroup {
            let pg = portgroup_of(&st, pg_uuid).await?;
            if pg.node != Some(node.uuid) {
                return Err(ApiError::bad_request(
                    "Port can not be added to a portgroup belonging to a different node.",
                ));
            }
            if req.pxe_given && !standalone_supported(&pg) {
                return Err(ApiError::conflict_409(format!(
                    "Port group {pg_uuid} doesn't support standalone ports. This port cannot be created as a member of that portgroup as the port's 'pxe_enabled' field was set to True."
                )));
            }
        }
        let mut body = req.body.clone();
        body.internal_info = Map::new();
        let new = NewResource {
            uuid: req.uuid,
            name: req.name.clone(),
            node: Some(node.uuid),
            parent: req.portgroup,
            key: Some(req.address.clone()),
            body: match serde_json::to_value(&body) {
                Ok(Value::Object(m)) => m,
                _ => Map::new(),
            },
        };
        match st.tm.store().create_resource(KIND, new).await {
            Ok(r) => Port::from_resource(r),
            Err(StoreError::NodeNotFound(_)) => Err(missing_node(&req.node)),
            Err(e) => Err(e.into()),
        }
    }
    .await;
    if let Some(t) = held {
        release(t).await;
    }
    let port = outcome?;
    Ok(resource::created(
        render(&port, &base, v),
        &format!("{}/v1/ports/{}", base.0, port.uuid),
    ))
}

/// List query parameters (Ironic's `get_all`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    node: Option<String>,
    node_uuid: Option<String>,
    address: Option<String>,
    portgroup: Option<String>,
    shard: Option<String>,
    conductor_groups: Option<String>,
    marker: Option<String>,
    limit: Option<String>,
    sort_key: Option<String>,
    sort_dir: Option<String>,
    fields: Option<String>,
    detail: Option<String>,
}

/// Where a list is nested, if anywhere.
enum Parent {
    None,
    Node(String),
    Portgroup(String),
}

/// `GET /v1/ports`.
pub async fn list(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    list_ports(st, v, base, q, false, Parent::None).await
}

/// `GET /v1/ports/detail`.
pub async fn list_detail(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    list_ports(st, v, base, q, true, Parent::None).await
}

async fn node_ports(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiPath(node): ApiPath<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    list_ports(st, v, base, q, false, Parent::Node(node)).await
}

async fn node_ports_detail(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiPath(node): ApiPath<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    list_ports(st, v, base, q, true, Parent::Node(node)).await
}

async fn portgroup_ports(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiPath(pg): ApiPath<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    list_ports(st, v, base, q, false, Parent::Portgroup(pg)).await
}

async fn portgroup_ports_detail(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiPath(pg): ApiPath<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    list_ports(st, v, base, q, true, Parent::Portgroup(pg)).await
}

/// Resolve a portgroup by UUID or name (404 when missing).
pub(crate) async fn find_portgroup(st: &ApiState, id: &str) -> Result<Resource, ApiError> {
    Ok(st
        .tm
        .store()
        .get_resource(ResourceKind::Portgroup, &resource::ident(id))
        .await?)
}

async fn list_ports(
    st: ApiState,
    v: Version,
    base: BaseUrl,
    q: ListQuery,
    detail_path: bool,
    parent: Parent,
) -> Result<Response, ApiError> {
    if let Parent::Portgroup(_) = parent {
        if !v.at_least(24) {
            return Err(ApiError::not_found("The resource could not be found."));
        }
    }
    let (detail, fields) =
        resource::list_view(v, detail_path, q.detail.as_deref(), q.fields.as_deref())?;
    if let Some(f) = &fields {
        check_fields_allowed(f.iter().map(String::as_str), v)?;
    }
    if let Some(k) = &q.sort_key {
        check_fields_allowed([k.as_str()], v)?;
    }
    if q.portgroup.is_some() && !v.at_least(24) {
        return Err(ApiError::not_acceptable("Request not acceptable."));
    }
    if q.shard.is_some() && !v.at_least(82) {
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
        &["extra", "internal_info", "local_link_connection"],
    )?;
    if let Some(u) = &q.node_uuid {
        // Ironic checks the format before anything else, nested lists too.
        resource::uuid_param("node_uuid", u)?;
    }
    let node_filter: Option<String> = match (&parent, &q.node_uuid, &q.node) {
        (Parent::Node(n), _, _) => Some(n.clone()),
        (_, Some(u), _) => Some(resource::uuid_param("node_uuid", u)?.to_string()),
        (_, None, Some(n)) => {
            if !v.at_least(5) && Uuid::parse_str(n).is_err() {
                return Err(ApiError::not_acceptable("Request not acceptable."));
            }
            Some(n.clone())
        }
        _ => None,
    };
    let pg_filter = match &parent {
        Parent::Portgroup(p) => Some(p.clone()),
        _ => q.portgroup.clone(),
    };
    let exclusive = [
        node_filter.is_some(),
        pg_filter.is_some(),
        q.shard.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if exclusive > 1 {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Operation not permitted.",
        ));
    }
    if q.conductor_groups.is_some()
        && (node_filter.is_some() || pg_filter.is_some() || q.address.is_some())
    {
        return Err(ApiError::bad_request(
            "Filtering by conductor_groups cannot be combined with node_ident, portgroup_ident, or node address filters.",
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
    if let Some(n) = &node_filter {
        let ident = node_ident(n, v)?;
        query.node = Some(st.tm.store().get_node(&ident).await?.uuid);
    }
    if let Some(p) = &pg_filter {
        query.parent = Some(find_portgroup(&st, p).await?.uuid);
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
    if let Some(a) = &q.address {
        query.key = Some(resource::mac_address("address", a)?);
    }
    let rows = st.tm.store().list_resources(&query).await?;
    let last = rows.last().map(|r| r.uuid);
    let wanted = resource::wanted(&fields, detail, &["uuid", "address"]);
    let mut items = Vec::with_capacity(rows.len());
    for r in rows {
        let doc = render(&Port::from_resource(r)?, &base, v);
        items.push(resource::shape(doc, detail, &wanted)?);
    }
    if let (Some(f), true) = (&fields, items.is_empty()) {
        // Validate the field names even when nothing is listed.
        let probe = Port {
            uuid: Uuid::nil(),
            address: String::new(),
            node_uuid: Uuid::nil(),
            portgroup_uuid: None,
            name: None,
            body: PortBody::default(),
            created_at: DbTime(0),
            updated_at: None,
            revision: 0,
        };
        resource::select(render(&probe, &base, v), f)?;
    }
    let path = match &parent {
        Parent::None if detail_path => "ports/detail".to_string(),
        Parent::None => "ports".to_string(),
        Parent::Node(n) => format!(
            "nodes/{}/ports{}",
            resource::encode(n),
            if detail_path { "/detail" } else { "" }
        ),
        Parent::Portgroup(p) => format!(
            "portgroups/{}/ports{}",
            resource::encode(p),
            if detail_path { "/detail" } else { "" }
        ),
    };
    let body = resource::collection(
        "ports",
        items,
        last,
        &paging,
        &base,
        &path,
        &[
            ("node", q.node.as_deref()),
            ("node_uuid", q.node_uuid.as_deref()),
            ("address", q.address.as_deref()),
            ("portgroup", q.portgroup.as_deref()),
            ("conductor_groups", q.conductor_groups.as_deref()),
            ("fields", q.fields.as_deref()),
            ("detail", q.detail.as_deref()),
        ],
    );
    Ok(Json(body).into_response())
}

/// `GET /v1/ports/{port}` query.
pub type ShowQuery = resource::ShowQuery;

/// A port by UUID, or by name from 1.88.
async fn find(st: &ApiState, id: &str, v: Version) -> Result<Port, ApiError> {
    let ident = match Uuid::parse_str(id) {
        Ok(u) => NodeIdent::Uuid(u),
        Err(_) if v.at_least(88) => NodeIdent::Name(id.to_string()),
        Err(_) => {
            return Err(ApiError::not_found(format!(
                "Port {id} could not be found."
            )))
        }
    };
    Port::from_resource(st.tm.store().get_resource(KIND, &ident).await?)
}

/// `GET /v1/ports/{port}`.
pub async fn show(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ShowQuery>,
) -> Result<Response, ApiError> {
    let fields = resource::requested_fields(q.fields.as_deref(), v)?;
    if let Some(f) = &fields {
        check_fields_allowed(f.iter().map(String::as_str), v)?;
    }
    let port = find(&st, &id, v).await?;
    let doc = render(&port, &base, v);
    let doc = match &fields {
        Some(f) => resource::select(doc, f)?,
        None => doc,
    };
    Ok(Json(doc).into_response())
}

/// Provision states in which connectivity fields may change (Ironic's
/// `allowed_update_states`), besides maintenance.
const CONNECTIVITY_STATES: [ProvisionState; 4] = [
    ProvisionState::Enroll,
    ProvisionState::Inspecting,
    ProvisionState::InspectWait,
    ProvisionState::Manageable,
];

/// `PATCH /v1/ports/{port}`: JSON Patch under the node's exclusive lock,
/// with the conductor's checks.
pub async fn update(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiPath(id): ApiPath<String>,
    JsonBody(ops): JsonBody<Vec<PatchOp>>,
) -> Result<Response, ApiError> {
    let roots = resource::patched_roots(&ops);
    check_fields_allowed(
        roots
            .iter()
            .map(String::as_str)
            .filter(|r| PATCH_FIELDS.contains(r)),
        v,
    )?;
    let before = find(&st, &id, v).await?;
    let task = st
        .tm
        .acquire(before.node_uuid)
        .purpose("port update")
        .retry(st.retry)
        .exclusive()
        .await?;
    // A port moved to another node also takes that node's lock: Ironic's
    // conductor updates the port under the new node's lock and checks the
    // new node's state; ferric holds both, so neither node's work sees the
    // port half-moved. Two moves in opposite directions cannot wait for each
    // other forever: the second lock is taken with the API's bounded retry.
    let mut moved_to: Option<ferric_conductor::ExclusiveTask> = None;
    let outcome = async {
        // Re-read under the lock: the update is conditional on this revision.
        let current = Port::from_resource(
            st.tm
                .store()
                .get_resource(KIND, &NodeIdent::Uuid(before.uuid))
                .await?,
        )?;
        let mut node = task.node().clone();
        let mut doc = current.document();
        doc.remove("internal_info");
        doc.remove("uuid");
        resource::apply_patch(&mut doc, &ops, &PATCH_FIELDS, |f| match f {
            "extra" | "local_link_connection" => json!({}),
            "pxe_enabled" => json!(true),
            "is_smartnic" | "available_for_dynamic_portgroup" => json!(false),
            _ => Value::Null,
        })?;
        // node_ident (1.94) names the new node as node_uuid does.
        if let Some(Value::String(i)) = doc.remove("node_ident") {
            let n = st
                .tm
                .store()
                .get_node(&node_ident(&i, v)?)
                .await
                .map_err(|_| ApiError::bad_request(format!("Node {i} could not be found.")))?;
            doc.insert("node_uuid".into(), json!(n.uuid));
        }
        let req = validate(&doc, v)?;
        let new_node = Uuid::parse_str(&req.node)
            .map_err(|_| ApiError::bad_request(format!("Expected UUID for node_uuid: {}", req.node)))?;
        if new_node != current.node_uuid {
            st.tm
                .store()
                .get_node(&NodeIdent::Uuid(new_node))
                .await
                .map_err(|_| ApiError::bad_request(format!("Node {new_node} could not be found.")))?;
            let second = st
                .tm
                .acquire(new_node)
                .purpose("port update")
                .retry(st.retry)
                .exclusive()
                .await?;
            node = second.node().clone();
            moved_to = Some(second);
        }
        let mut next = current.clone();
        next.address = req.address;
        next.node_uuid = new_node;
        next.portgroup_uuid = req.portgroup;
        next.name = req.name;
        let internal = std::mem::take(&mut next.body.internal_info);
        next.body = req.body;
        next.body.internal_info = internal;
        if node.provision_state == ProvisionState::Inspecting && v.at_least(39) {
            return Err(ApiError::conflict_409(format!(
                "Cannot update port \"{}\" on \"{}\" while it is in state \"inspecting\".",
                current.uuid, node.uuid
            )));
        }
        if next.address != current.address
            && (node.provision_state == ProvisionState::Active || node.instance_uuid.is_some())
            && !node.maintenance
        {
            return Err(ApiError::conflict_409(format!(
                "Cannot update hardware address for port {} as node {} is active or has instance UUID assigned",
                current.uuid, node.uuid
            )));
        }
        let connectivity_changed = next.portgroup_uuid != current.portgroup_uuid
            || next.body.pxe_enabled != current.body.pxe_enabled
            || next.body.local_link_connection != current.body.local_link_connection
            || next.body.physical_network != current.body.physical_network;
        if connectivity_changed
            && !(CONNECTIVITY_STATES.contains(&node.provision_state) || node.maintenance)
        {
            return Err(ApiError::conflict_409(format!(
                "Port {} can not have any connectivity attributes (portgroup_id, pxe_enabled, local_link_connection, physical_network) updated unless node {} is in a enroll, inspecting, inspect wait, manageable state or in maintenance mode. The current state is {}.",
                current.uuid, node.uuid, node.provision_state
            )));
        }
        if let Some(pg_uuid) = next.portgroup_uuid {
            if next.portgroup_uuid != current.portgroup_uuid || new_node != current.node_uuid {
                let pg = portgroup_of(&st, pg_uuid).await?;
                if pg.node != Some(new_node) {
                    return Err(ApiError::bad_request(
                        "Port can not be added to a portgroup belonging to a different node.",
                    ));
                }
            }
            if v.at_least(102) && next.body.physical_network != current.body.physical_network {
                return Err(ApiError::bad_request(
                    "physical_network cannot be changed while the port belongs to a portgroup.",
                ));
            }
        }
        if next == current {
            return Ok(current);
        }
        match st.tm.store().update_resource(&next.to_resource()).await {
            Ok(r) => Port::from_resource(r),
            Err(StoreError::NodeNotFound(n)) => {
                Err(ApiError::bad_request(format!("Node {n} could not be found.")))
            }
            Err(e) => Err(e.into()),
        }
    }
    .await;
    if let Some(second) = moved_to {
        release(second).await;
    }
    release(task).await;
    let port = outcome?;
    Ok(Json(render(&port, &base, v)).into_response())
}

/// The VIF a port is bound to (the network interface's
/// `get_current_vif`: tenant VIF in internal_info, else extra's vif_port_id).
fn current_vif(p: &Port) -> Option<String> {
    p.body
        .internal_info
        .get("tenant_vif_port_id")
        .or_else(|| p.body.extra.get("vif_port_id"))
        .and_then(|v| v.as_str().map(str::to_string))
}

/// `DELETE /v1/ports/{port_uuid}`.
pub async fn delete(
    State(st): State<ApiState>,
    v: Version,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let uuid = resource::uuid_param("port_uuid", &id)?;
    let before = find(&st, &uuid.to_string(), v).await?;
    let task = st
        .tm
        .acquire(before.node_uuid)
        .purpose("port deletion")
        .retry(st.retry)
        .exclusive()
        .await?;
    let outcome = async {
        let current = Port::from_resource(
            st.tm
                .store()
                .get_resource(KIND, &NodeIdent::Uuid(uuid))
                .await?,
        )?;
        if let Some(vif) = current_vif(&current) {
            if !task.node().maintenance {
                return Err(ApiError::conflict_409(format!(
                    "Cannot delete the port {uuid} as it is bound to VIF {vif} for use."
                )));
            }
        }
        st.tm
            .store()
            .delete_resource(KIND, uuid, Some(current.revision))
            .await?;
        Ok(())
    }
    .await;
    release(task).await;
    outcome?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The OpenAPI paths of this module (merged into `/openapi.json`).
pub(crate) fn openapi_paths() -> Map<String, Value> {
    let err = crate::resource::oas::err;
    let ok = crate::resource::oas::ok;
    let common = |extra: Value| {
        crate::resource::oas::with_errors(
            extra,
            &[
                ("400", "Invalid input"),
                ("401", "Credentials required"),
                ("404", "No such port, node or portgroup"),
                ("406", "Microversion not acceptable"),
                ("409", "Duplicate, or node locked (with Retry-After)"),
                ("503", "No free conductor worker"),
            ],
        )
    };
    let list_params = json!([
        {"name": "node", "in": "query", "schema": {"type": "string"}},
        {"name": "node_uuid", "in": "query", "schema": {"type": "string", "format": "uuid"}},
        {"name": "address", "in": "query", "schema": {"type": "string"}},
        {"name": "portgroup", "in": "query", "schema": {"type": "string"}},
        {"name": "conductor_groups", "in": "query", "schema": {"type": "string"}},
        crate::resource::openapi_limit_param(),
        {"name": "marker", "in": "query", "schema": {"type": "string", "format": "uuid"}},
        {"name": "sort_key", "in": "query", "schema": {"type": "string", "enum": ["id", "uuid", "created_at", "address", "name"]}},
        {"name": "sort_dir", "in": "query", "schema": {"type": "string", "enum": ["asc", "desc"]}},
        {"name": "fields", "in": "query", "schema": {"type": "string"}},
        {"name": "detail", "in": "query", "schema": {"type": "boolean"}},
    ]);
    let port_param =
        json!({"name": "ident", "in": "path", "required": true, "schema": {"type": "string"}});
    let node_param =
        json!({"name": "ident", "in": "path", "required": true, "schema": {"type": "string"}});
    let pg_param =
        json!({"name": "ident", "in": "path", "required": true, "schema": {"type": "string"}});
    let body = json!({"required": true, "content": {"application/json": {"schema": {
        "type": "object",
        "required": ["address"],
        "properties": {
            "address": {"type": "string"},
            "node_uuid": {"type": "string", "format": "uuid"},
            "node_ident": {"type": "string"},
            "uuid": {"type": "string", "format": "uuid"},
            "portgroup_uuid": {"type": ["string", "null"]},
            "local_link_connection": {"type": "object"},
            "pxe_enabled": {"type": "boolean"},
            "physical_network": {"type": ["string", "null"], "maxLength": 64},
            "is_smartnic": {"type": "boolean"},
            "extra": {"type": "object"},
            "name": {"type": ["string", "null"]},
            "description": {"type": ["string", "null"], "maxLength": 255},
            "vendor": {"type": ["string", "null"], "maxLength": 32},
            "category": {"type": ["string", "null"], "maxLength": 80},
            "available_for_dynamic_portgroup": {"type": "boolean"}
        },
        "additionalProperties": false
    }}}});
    let patch_body = json!({"required": true, "content": {"application/json": {"schema": {"type": "array", "items": {"type": "object"}}}}});
    let mut nested = list_params.as_array().cloned().unwrap_or_default();
    nested.insert(0, node_param);
    let mut pg_nested = list_params.as_array().cloned().unwrap_or_default();
    pg_nested.insert(0, pg_param);
    let mut m = Map::new();
    m.insert("/v1/ports".into(), json!({
        "get": {"summary": "List ports", "parameters": list_params, "responses": common(json!({"200": ok("{ports, next?}"), "403": err("More than one of node, portgroup and shard (Ironic: operation not permitted)")}))},
        "post": {"summary": "Create a port", "requestBody": body, "responses": common(json!({"201": ok("The port")}))},
    }));
    m.insert("/v1/ports/detail".into(), json!({
        "get": {"summary": "List ports with every field", "parameters": list_params, "responses": common(json!({"200": ok("{ports, next?}"), "403": err("More than one of node, portgroup and shard (Ironic: operation not permitted)")}))},
    }));
    m.insert("/v1/ports/{ident}".into(), json!({
        "get": {"summary": "Show a port", "parameters": [port_param, {"name": "fields", "in": "query", "schema": {"type": "string"}}], "responses": common(json!({"200": ok("The port")}))},
        "patch": {"summary": "Update a port (JSON Patch)", "parameters": [port_param], "requestBody": patch_body, "responses": common(json!({"200": ok("The port")}))},
        "delete": {"summary": "Delete a port", "parameters": [port_param], "responses": common(json!({"204": {"description": "Deleted"}}))},
    }));
    m.insert("/v1/nodes/{ident}/ports".into(), json!({
        "get": {"summary": "List a node's ports", "parameters": nested, "responses": common(json!({"200": ok("{ports, next?}"), "403": err("A node or portgroup filter on a nested list (Ironic: operation not permitted)")}))},
    }));
    m.insert("/v1/portgroups/{ident}/ports".into(), json!({
        "get": {"summary": "List a portgroup's ports (1.24)", "parameters": pg_nested, "responses": common(json!({"200": ok("{ports, next?}"), "403": err("A node or portgroup filter on a nested list (Ironic: operation not permitted)")}))},
    }));
    m
}

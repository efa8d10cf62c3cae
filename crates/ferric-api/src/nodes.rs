//! Node CRUD: `POST/GET /v1/nodes`, `GET /v1/nodes/detail`,
//! `GET/PATCH/DELETE /v1/nodes/{ident}`.

use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery, BaseUrl, JsonBody};
use crate::fields;
use crate::patch::{apply_patch_with, PatchOp};
use crate::render::{self, INTERFACES, LIST_FIELDS};
use crate::version::Version;
use crate::{ApiState, Owners};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferric_conductor::drivers::Drivers;
use ferric_conductor::ExclusiveTask;
use ferric_core::{NewNode, Node, ProvisionState};
use ferric_store::{NodeIdent, NodeQuery, NodeSort, StoreError};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use uuid::Uuid;

/// Ironic's `[api]max_limit`: the largest page.
pub const MAX_LIMIT: u32 = 1000;

/// Response header carrying the store revision a response is consistent with.
pub const REVISION_HEADER: &str = "x-ferric-revision";

/// Resolve a path identifier the way Ironic does: a UUID, or (from 1.5) a
/// valid logical name.
pub fn node_ident(s: &str, v: Version) -> Result<NodeIdent, ApiError> {
    if let Ok(u) = Uuid::parse_str(s) {
        return Ok(NodeIdent::Uuid(u));
    }
    if !v.at_least(5) {
        return Err(ApiError::not_found(format!(
            "Node {s} could not be found. (Node names need API version 1.5 or later.)"
        )));
    }
    if ferric_core::node::validate_name(s).is_err() {
        return Err(ApiError::bad_request(format!(
            "Expected a logical name or UUID but received {s}."
        )));
    }
    Ok(NodeIdent::Name(s.to_string()))
}

/// A node document for a response at `v`.
pub(crate) fn show(owners: &Owners, n: &Node, base: &BaseUrl, v: Version) -> Map<String, Value> {
    render::node(n, &base.0, v, owners.owner(n))
}

fn revision_header(rev: i64) -> [(HeaderName, HeaderValue); 1] {
    [(
        HeaderName::from_static(REVISION_HEADER),
        HeaderValue::from(rev),
    )]
}

/// The revision of one node, also as its `ETag` (for `If-Match`).
fn node_revision_headers(rev: i64) -> [(HeaderName, HeaderValue); 2] {
    let etag =
        HeaderValue::from_str(&format!("\"{rev}\"")).unwrap_or(HeaderValue::from_static("\"0\""));
    [
        (
            HeaderName::from_static(REVISION_HEADER),
            HeaderValue::from(rev),
        ),
        (header::ETAG, etag),
    ]
}

/// `POST /v1/nodes` body. Unknown fields are rejected.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateNode {
    pub driver: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub uuid: Option<String>,
    #[serde(default)]
    pub driver_info: Option<Map<String, Value>>,
    #[serde(default)]
    pub properties: Option<Map<String, Value>>,
    #[serde(default)]
    pub extra: Option<Map<String, Value>>,
    #[serde(default)]
    pub conductor_group: Option<String>,
    #[serde(default)]
    pub bios_interface: Option<String>,
    #[serde(default)]
    pub boot_interface: Option<String>,
    #[serde(default)]
    pub console_interface: Option<String>,
    #[serde(default)]
    pub deploy_interface: Option<String>,
    #[serde(default)]
    pub firmware_interface: Option<String>,
    #[serde(default)]
    pub inspect_interface: Option<String>,
    #[serde(default)]
    pub management_interface: Option<String>,
    #[serde(default)]
    pub network_interface: Option<String>,
    #[serde(default)]
    pub power_interface: Option<String>,
    #[serde(default)]
    pub raid_interface: Option<String>,
    #[serde(default)]
    pub rescue_interface: Option<String>,
    #[serde(default)]
    pub storage_interface: Option<String>,
    #[serde(default)]
    pub vendor_interface: Option<String>,
    #[serde(default)]
    pub instance_info: Option<Map<String, Value>>,
    #[serde(default)]
    pub instance_uuid: Option<String>,
    #[serde(default)]
    pub maintenance: Option<Value>,
    // Ironic's other create fields ([`fields::CREATE_FIELDS`]), checked by
    // [`fields::set_attr`].
    #[serde(default)]
    pub automated_clean: Option<Value>,
    #[serde(default)]
    pub boot_mode: Option<Value>,
    #[serde(default)]
    pub chassis_uuid: Option<Value>,
    #[serde(default)]
    pub console_enabled: Option<Value>,
    #[serde(default)]
    pub description: Option<Value>,
    #[serde(default)]
    pub disable_power_off: Option<Value>,
    #[serde(default)]
    pub instance_name: Option<Value>,
    #[serde(default)]
    pub lessee: Option<Value>,
    #[serde(default)]
    pub network_data: Option<Value>,
    #[serde(default)]
    pub owner: Option<Value>,
    #[serde(default)]
    pub parent_node: Option<Value>,
    #[serde(default)]
    pub resource_class: Option<Value>,
    #[serde(default)]
    pub retired: Option<Value>,
    #[serde(default)]
    pub retired_reason: Option<Value>,
    #[serde(default)]
    pub secure_boot: Option<Value>,
    #[serde(default)]
    pub shard: Option<Value>,
}

impl CreateNode {
    /// The fields of [`fields::CREATE_FIELDS`] that were sent.
    fn attrs(&self) -> Vec<(&'static str, &Value)> {
        let all: [(&'static str, &Option<Value>); 16] = [
            ("automated_clean", &self.automated_clean),
            ("boot_mode", &self.boot_mode),
            ("chassis_uuid", &self.chassis_uuid),
            ("console_enabled", &self.console_enabled),
            ("description", &self.description),
            ("disable_power_off", &self.disable_power_off),
            ("instance_name", &self.instance_name),
            ("lessee", &self.lessee),
            ("network_data", &self.network_data),
            ("owner", &self.owner),
            ("parent_node", &self.parent_node),
            ("resource_class", &self.resource_class),
            ("retired", &self.retired),
            ("retired_reason", &self.retired_reason),
            ("secure_boot", &self.secure_boot),
            ("shard", &self.shard),
        ];
        debug_assert!(all.iter().all(|(f, _)| fields::CREATE_FIELDS.contains(f)));
        all.into_iter()
            .filter_map(|(f, v)| v.as_ref().map(|v| (f, v)))
            .collect()
    }

    fn interfaces(&self) -> [(&'static str, &Option<String>); 13] {
        [
            ("bios", &self.bios_interface),
            ("boot", &self.boot_interface),
            ("console", &self.console_interface),
            ("deploy", &self.deploy_interface),
            ("firmware", &self.firmware_interface),
            ("inspect", &self.inspect_interface),
            ("management", &self.management_interface),
            ("network", &self.network_interface),
            ("power", &self.power_interface),
            ("raid", &self.raid_interface),
            ("rescue", &self.rescue_interface),
            ("storage", &self.storage_interface),
            ("vendor", &self.vendor_interface),
        ]
    }

    /// Validate and convert, with the initial state for version `v`.
    pub fn into_new_node(self, v: Version) -> Result<NewNode, ApiError> {
        self.into_new_node_with(Drivers::builtin(), v)
    }

    /// Validate and convert against `drivers`: the hardware type must be
    /// enabled, every interface given enabled and supported by it; the
    /// others get their defaults (Ironic's `check_and_update_node_interfaces`).
    pub fn into_new_node_with(self, drivers: &Drivers, v: Version) -> Result<NewNode, ApiError> {
        if !drivers.has(&self.driver) {
            return Err(ApiError::bad_request(format!(
                "No valid host was found. Reason: No conductor service registered which supports driver {} for conductor group \"{}\". Available drivers: {}.",
                self.driver,
                self.conductor_group.as_deref().unwrap_or(""),
                drivers.names().join(", ")
            )));
        }
        if self.name.is_some() {
            render::check_field_version("name", v)?;
        }
        if self.conductor_group.is_some() {
            render::check_field_version("conductor_group", v)?;
        }
        let sent = self.attrs();
        for (field, _) in &sent {
            render::check_field_version(field, v)?;
        }
        let mut attrs = ferric_core::NodeAttrs::default();
        for (field, value) in sent {
            fields::set_attr(&mut attrs, field, Some(value.clone()))?;
        }
        if attrs.retired_reason.is_some() && !attrs.retired {
            return Err(ApiError::bad_request(
                "The retired_reason field can only be set when retired is True",
            ));
        }
        let maintenance = match &self.maintenance {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => parse_bool("maintenance", s)?,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "Invalid value for maintenance: expected a boolean, got {other}."
                )))
            }
        };
        for (iface, value) in self.interfaces() {
            if value.is_some() {
                render::check_field_version(&format!("{iface}_interface"), v)?;
            }
        }
        let mut interfaces = BTreeMap::new();
        for (iface, value) in self.interfaces() {
            debug_assert!(INTERFACES.contains(&iface));
            let Some(value) = value.clone() else { continue };
            if value.is_empty()
                || !value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                return Err(ApiError::bad_request(format!(
                    "Invalid {iface}_interface \"{value}\"."
                )));
            }
            interfaces.insert(format!("{iface}_interface"), value);
        }
        drivers
            .check_and_fill(&self.driver, &mut interfaces)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let mut new = NewNode {
            uuid: expect_uuid("uuid", &self.uuid)?,
            name: self.name,
            driver: self.driver,
            driver_info: self.driver_info.unwrap_or_default(),
            properties: self.properties.unwrap_or_default(),
            extra: self.extra.unwrap_or_default(),
            interfaces,
            conductor_group: self.conductor_group.unwrap_or_default(),
            provision_state: Some(if v.at_least(11) {
                ProvisionState::Enroll
            } else {
                ProvisionState::Available
            }),
            instance_info: self.instance_info.unwrap_or_default(),
            instance_uuid: expect_uuid("instance_uuid", &self.instance_uuid)?,
            maintenance,
            attrs,
        };
        new.validate()
            .map_err(|e| ApiError::bad_request(format!("{e}.")))?;
        Ok(new)
    }
}

/// `POST /v1/nodes`.
pub async fn create(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    JsonBody(mut body): JsonBody<CreateNode>,
) -> Result<Response, ApiError> {
    let uuid = expect_uuid("uuid", &body.uuid)?.unwrap_or_else(Uuid::new_v4);
    body.uuid = Some(uuid.to_string());
    let instance = expect_uuid("instance_uuid", &body.instance_uuid)?;
    if let Some(parent) = body.parent_node.take() {
        render::check_field_version("parent_node", v)?;
        let owner = body.owner.as_ref().and_then(Value::as_str);
        let resolved = fields::resolve_parent(st.tm.store().as_ref(), &parent, owner).await?;
        body.parent_node = Some(resolved);
    }
    let new = body.into_new_node_with(st.drivers(), v)?;
    fields::check_chassis(st.tm.store().as_ref(), &new.attrs).await?;
    let node = st
        .tm
        .store()
        .create_node(new)
        .await
        .map_err(|e| instance_conflict(e, instance, uuid))?;
    let location = format!("{}/v1/nodes/{}", base.0, node.uuid);
    let mut resp = (
        StatusCode::CREATED,
        node_revision_headers(node.revision),
        Json(show(&st.owners().await, &node, &base, v)),
    )
        .into_response();
    if let Ok(l) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, l);
    }
    Ok(resp)
}

/// Ironic's InstanceAssociated (409) for a store refusal of a duplicate
/// instance UUID; any other error as it is.
fn instance_conflict(e: StoreError, instance: Option<Uuid>, node: Uuid) -> ApiError {
    match (e, instance) {
        (StoreError::Duplicate { field: "instance_uuid", .. }, Some(instance)) => {
            ApiError::conflict(format!(
                "Instance {instance} is already associated with a node, it cannot be associated with this other node {node}"
            ))
        }
        (e, _) => e.into(),
    }
}

/// Query of the node listings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<String>,
    marker: Option<String>,
    sort_key: Option<String>,
    sort_dir: Option<String>,
    fields: Option<String>,
    detail: Option<String>,
    provision_state: Option<String>,
    maintenance: Option<String>,
    driver: Option<String>,
    conductor_group: Option<String>,
    associated: Option<String>,
    resource_class: Option<String>,
    owner: Option<String>,
    lessee: Option<String>,
    shard: Option<String>,
    sharded: Option<String>,
    fault: Option<String>,
    retired: Option<String>,
    instance_uuid: Option<String>,
    instance_name: Option<String>,
    chassis_uuid: Option<String>,
    parent_node: Option<String>,
    include_children: Option<String>,
    description_contains: Option<String>,
}

/// Ironic's `faults.VALID_FAULTS`.
const VALID_FAULTS: [&str; 4] = [
    "power failure",
    "clean failure",
    "rescue abort failure",
    "service failure",
];

/// Node columns Ironic refuses to sort by.
const UNSORTABLE: &[&str] = &[
    "properties",
    "driver_info",
    "extra",
    "instance_info",
    "driver_internal_info",
    "clean_step",
    "deploy_step",
    "raid_config",
    "target_raid_config",
    "traits",
    "network_data",
    "service_step",
];

/// Ironic's `check_allowed_fields`: a `fields` entry newer than the
/// request is a 406 (an unknown one is a 400, later).
fn check_fields_version(fields: &str, v: Version) -> Result<(), ApiError> {
    fields
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .try_for_each(|f| render::check_field_version(f, v))
}

/// Ironic's 406 for a filter newer than the request.
fn filter_version(value: &Option<String>, minor: u32, v: Version) -> Result<(), ApiError> {
    if value.is_some() && !v.at_least(minor) {
        return Err(ApiError::not_acceptable(format!(
            "Request not acceptable. The minimal required API version should be 1.{minor}"
        )));
    }
    Ok(())
}

fn opt_bool(name: &str, value: &Option<String>) -> Result<Option<bool>, ApiError> {
    value.as_deref().map(|s| parse_bool(name, s)).transpose()
}

/// A UUID field of a request body, refused with Ironic's wording
/// ("Expected UUID for uuid: abc", which clients match on).
fn expect_uuid(name: &str, value: &Option<String>) -> Result<Option<Uuid>, ApiError> {
    value
        .as_deref()
        .map(|s| {
            Uuid::parse_str(s)
                .map_err(|_| ApiError::bad_request(format!("Expected UUID for {name}: {s}")))
        })
        .transpose()
}

fn opt_uuid(name: &str, value: &Option<String>) -> Result<Option<Uuid>, ApiError> {
    value
        .as_deref()
        .map(|s| {
            Uuid::parse_str(s).map_err(|_| {
                ApiError::bad_request(format!("Expected a UUID for {name} but received {s}."))
            })
        })
        .transpose()
}

impl ListQuery {
    /// The filters and order as a store query (without marker and limit),
    /// checked as Ironic checks them: version gates first (406), then values.
    async fn to_store_query(
        &self,
        store: &dyn ferric_store::Store,
        v: Version,
    ) -> Result<NodeQuery, ApiError> {
        filter_version(&self.driver, 16, v)?;
        filter_version(&self.resource_class, 21, v)?;
        filter_version(&self.fault, 42, v)?;
        filter_version(&self.conductor_group, 46, v)?;
        filter_version(&self.owner, 50, v)?;
        filter_version(&self.description_contains, 51, v)?;
        filter_version(&self.retired, 61, v)?;
        filter_version(&self.lessee, 65, v)?;
        filter_version(&self.shard, 82, v)?;
        filter_version(&self.sharded, 82, v)?;
        filter_version(&self.parent_node, 83, v)?;
        filter_version(&self.include_children, 83, v)?;
        filter_version(&self.instance_name, 104, v)?;
        if self.fields.is_some() && !v.at_least(8) {
            return Err(ApiError::not_acceptable(
                "Request not acceptable. The minimal required API version should be 1.8",
            ));
        }
        let sort = self.sort(v)?;
        if let Some(s) = &self.provision_state {
            s.parse::<ProvisionState>()
                .map_err(|_| ApiError::bad_request(format!("Invalid provision_state \"{s}\".")))?;
        }
        for (name, text) in [
            ("driver", &self.driver),
            ("resource_class", &self.resource_class),
            ("owner", &self.owner),
            ("lessee", &self.lessee),
            ("shard", &self.shard),
            ("instance_name", &self.instance_name),
            ("description_contains", &self.description_contains),
        ] {
            if let Some(t) = text {
                crate::extract::check_text(name, t)?;
            }
        }
        if let Some(f) = &self.fault {
            if !VALID_FAULTS.contains(&f.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "Unrecognized fault \"{f}\" is specified, allowed faults are ('{}')",
                    VALID_FAULTS.join("', '")
                )));
            }
        }
        let conductor_group = match &self.conductor_group {
            Some(g) => Some(
                ferric_core::node::normalize_conductor_group(g)
                    .map_err(|e| ApiError::bad_request(format!("{e}.")))?,
            ),
            None => None,
        };
        let parent_node = match &self.parent_node {
            None => None,
            Some(p) => match store.get_node(&NodeIdent::parse(p)).await {
                Ok(parent) => Some(parent.uuid),
                Err(StoreError::NodeNotFound(_)) => {
                    return Err(ApiError::not_found(format!("Node {p} could not be found.")))
                }
                Err(e) => return Err(e.into()),
            },
        };
        let include_children =
            opt_bool("include_children", &self.include_children)?.unwrap_or(false);
        let chassis_uuid = opt_uuid("chassis_uuid", &self.chassis_uuid)?;
        if let Some(c) = chassis_uuid {
            // Ironic's database layer looks the chassis up: unknown is a 404.
            if !fields::chassis_exists(store, c).await? {
                return Err(ApiError::not_found(format!(
                    "Chassis {c} could not be found."
                )));
            }
        }
        Ok(NodeQuery {
            marker: None,
            limit: None,
            provision_state: self.provision_state.clone(),
            maintenance: opt_bool("maintenance", &self.maintenance)?,
            driver: self.driver.clone(),
            conductor_group,
            reserved: None,
            associated: opt_bool("associated", &self.associated)?,
            resource_class: self.resource_class.clone(),
            owner: self.owner.clone(),
            lessee: self.lessee.clone(),
            shards: self.shard.as_ref().map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|x| !x.is_empty())
                    .map(str::to_string)
                    .collect()
            }),
            sharded: opt_bool("sharded", &self.sharded)?,
            fault: self.fault.clone(),
            retired: opt_bool("retired", &self.retired)?,
            instance_uuid: opt_uuid("instance_uuid", &self.instance_uuid)?,
            instance_name: self.instance_name.clone(),
            chassis_uuid,
            // Ironic: include_children lists every node, parent_node ignored;
            // otherwise children show only under their parent_node.
            parent_node: parent_node.filter(|_| !include_children),
            hide_children: !include_children && parent_node.is_none(),
            description_contains: self.description_contains.clone(),
            sort,
            ..NodeQuery::default()
        })
    }

    /// `sort_key` / `sort_dir` as Ironic checks them.
    fn sort(&self, v: Version) -> Result<NodeSort, ApiError> {
        let descending = match self.sort_dir.as_deref() {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(d) => {
                return Err(ApiError::bad_request(format!(
                    "Invalid sort direction: {d}. Acceptable values are 'asc' or 'desc'"
                )))
            }
        };
        let Some(key) = self.sort_key.as_deref() else {
            return Ok(NodeSort {
                key: "uuid",
                descending,
            });
        };
        if !v.at_least(render::node_field_version(key)) {
            return Err(ApiError::not_acceptable(format!(
                "The field \"{key}\" needs API version 1.{} or later; this request used {v}.",
                render::node_field_version(key)
            )));
        }
        if UNSORTABLE.contains(&key) {
            return Err(ApiError::bad_request(format!(
                "The sort_key value {key} is an invalid field for sorting"
            )));
        }
        match ferric_store::node_sort_key(key) {
            Some((key, _)) => Ok(NodeSort { key, descending }),
            None => Err(ApiError::bad_request(format!(
                "The sort_key value \"{key}\" is an invalid field for sorting"
            ))),
        }
    }

    /// The query parameters a `next` link repeats.
    fn next_params(&self) -> Vec<(&'static str, &Option<String>)> {
        vec![
            ("fields", &self.fields),
            ("detail", &self.detail),
            ("sort_key", &self.sort_key),
            ("sort_dir", &self.sort_dir),
            ("provision_state", &self.provision_state),
            ("maintenance", &self.maintenance),
            ("driver", &self.driver),
            ("conductor_group", &self.conductor_group),
            ("associated", &self.associated),
            ("resource_class", &self.resource_class),
            ("owner", &self.owner),
            ("lessee", &self.lessee),
            ("shard", &self.shard),
            ("sharded", &self.sharded),
            ("fault", &self.fault),
            ("retired", &self.retired),
            ("instance_uuid", &self.instance_uuid),
            ("instance_name", &self.instance_name),
            ("chassis_uuid", &self.chassis_uuid),
            ("parent_node", &self.parent_node),
            ("include_children", &self.include_children),
            ("description_contains", &self.description_contains),
        ]
    }
}

/// oslo's `bool_from_string(strict=True)`.
pub(crate) fn parse_bool(name: &str, s: &str) -> Result<bool, ApiError> {
    match s.to_ascii_lowercase().as_str() {
        "1" | "t" | "true" | "on" | "y" | "yes" => Ok(true),
        "0" | "f" | "false" | "off" | "n" | "no" => Ok(false),
        _ => Err(ApiError::bad_request(format!(
            "Invalid value for {name}: \"{s}\"; expected true or false."
        ))),
    }
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~,".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `GET /v1/nodes`.
pub async fn list(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let detail = match &q.detail {
        Some(d) => parse_bool("detail", d)?,
        None => false,
    };
    list_nodes(st, v, base, q, detail, "nodes").await
}

/// `GET /v1/chassis/{chassis_uuid}/nodes[/detail]`: the node list of one
/// chassis (Ironic's `NodesController` with `from_chassis`).
pub(crate) async fn list_for_chassis(
    st: ApiState,
    v: Version,
    base: BaseUrl,
    chassis: String,
    mut q: ListQuery,
    detail_path: bool,
) -> Result<Response, ApiError> {
    q.chassis_uuid = Some(chassis);
    if detail_path {
        if q.detail.is_some() || q.fields.is_some() {
            return Err(ApiError::bad_request(
                "The detail and fields parameters are not accepted by /v1/nodes/detail.",
            ));
        }
        return list_nodes(st, v, base, q, true, "nodes/detail").await;
    }
    let detail = match &q.detail {
        Some(d) => parse_bool("detail", d)?,
        None => false,
    };
    list_nodes(st, v, base, q, detail, "nodes").await
}

/// `GET /v1/nodes/detail`.
pub async fn list_detail(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    if q.detail.is_some() || q.fields.is_some() {
        return Err(ApiError::bad_request(
            "The detail and fields parameters are not accepted by /v1/nodes/detail.",
        ));
    }
    list_nodes(st, v, base, q, true, "nodes/detail").await
}

async fn list_nodes(
    st: ApiState,
    v: Version,
    base: BaseUrl,
    q: ListQuery,
    detail: bool,
    path: &str,
) -> Result<Response, ApiError> {
    if detail && q.fields.is_some() {
        return Err(ApiError::bad_request(
            "Can not specify ?detail=True and fields in the same request.",
        ));
    }
    let limit = crate::resource::parse_limit(q.limit.as_deref())?;
    let marker = q
        .marker
        .as_deref()
        .map(|m| crate::resource::uuid_param("marker", m))
        .transpose()?;
    if let Some(f) = &q.fields {
        check_fields_version(f, v)?;
    }
    let mut query = q.to_store_query(st.tm.store().as_ref(), v).await?;
    if let Some(m) = marker {
        // Ironic looks the marker up: an unknown one is a 404.
        st.tm.store().get_node(&NodeIdent::Uuid(m)).await?;
    }
    query.marker = marker;
    query.limit = Some(limit);
    let page = st.tm.store().list_nodes(&query).await?;
    let owners = st.owners().await;
    let plan = match (&q.fields, detail) {
        (Some(f), _) => render::NodePlan::select(v, &render::NodePlan::parse_fields(f, v)?),
        (None, true) => render::NodePlan::detail(v),
        (None, false) => render::NodePlan::select(v, LIST_FIELDS),
    };
    let mut next = None;
    if page.nodes.len() as u32 >= limit {
        if let Some(last) = page.nodes.last() {
            let mut params = vec![format!("limit={limit}"), format!("marker={}", last.uuid)];
            for (k, val) in q.next_params() {
                if let Some(val) = val {
                    params.push(format!("{k}={}", encode(val)));
                }
            }
            next = Some(format!("{}/v1/{path}?{}", base.0, params.join("&")));
        }
    }
    let docs: Vec<render::NodeDoc<'_>> = page
        .nodes
        .iter()
        .map(|n| render::NodeDoc {
            node: n,
            base: &base.0,
            conductor: owners.owner(n),
            plan: &plan,
        })
        .collect();
    let body = NodeListBody { next, nodes: &docs };
    // Written straight from the nodes into the response buffer (issue 18).
    let bytes = serde_json::to_vec(&body).map_err(|e| ApiError::internal(&e))?;
    Ok((
        revision_header(page.revision),
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
        .into_response())
}

/// A node list's body: `next` (when there may be more) before `nodes`, in
/// the key order of the map it replaces.
struct NodeListBody<'a> {
    next: Option<String>,
    nodes: &'a [render::NodeDoc<'a>],
}

impl serde::Serialize for NodeListBody<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        if let Some(next) = &self.next {
            m.serialize_entry("next", next)?;
        }
        m.serialize_entry("nodes", self.nodes)?;
        m.end()
    }
}

/// Test support: a node with every field at its default.
#[cfg(test)]
pub(crate) mod tests_support {
    /// A placeholder node.
    pub(crate) fn node() -> ferric_core::Node {
        super::placeholder()
    }
}

#[cfg(test)]
fn placeholder() -> Node {
    Node {
        uuid: Uuid::nil(),
        name: None,
        driver: String::new(),
        driver_info: Map::new(),
        properties: Map::new(),
        extra: Map::new(),
        instance_info: Map::new(),
        instance_uuid: None,
        interfaces: BTreeMap::new(),
        driver_internal_info: Default::default(),
        clean_step: Default::default(),
        deploy_step: Default::default(),
        provision_state: ProvisionState::Enroll,
        target_provision_state: None,
        power_state: None,
        target_power_state: None,
        maintenance: false,
        maintenance_reason: None,
        last_error: None,
        conductor_group: String::new(),
        conductor_affinity: None,
        reservation: None,
        lock_epoch: 0,
        lock_waiters: 0,
        revision: 0,
        created_at: ferric_core::DbTime(0),
        updated_at: None,
        provision_updated_at: None,
        attrs: Default::default(),
    }
}

/// `?fields=` of a single node.
pub type ShowQuery = crate::resource::ShowQuery;

/// `GET /v1/nodes/{ident}`.
pub async fn get(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ShowQuery>,
) -> Result<Response, ApiError> {
    let ident = node_ident(&id, v)?;
    let node = st.tm.store().get_node(&ident).await?;
    let plan = match &q.fields {
        Some(f) => {
            check_fields_version(f, v)?;
            render::NodePlan::select(v, &render::NodePlan::parse_fields(f, v)?)
        }
        None => render::NodePlan::detail(v),
    };
    let owners = st.owners().await;
    let doc = render::NodeDoc {
        node: &node,
        base: &base.0,
        conductor: owners.owner(&node),
        plan: &plan,
    };
    let bytes = serde_json::to_vec(&doc).map_err(|e| ApiError::internal(&e))?;
    Ok((
        node_revision_headers(node.revision),
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
        .into_response())
}

/// Release `task`, logging (not returning) a failure: the operation's own
/// result is what the client needs.
pub(crate) async fn release(task: ExclusiveTask) {
    let node = task.node().uuid;
    if let Err(e) = task.release().await {
        tracing::warn!(node_uuid = %node, error.message = %e, "release after API operation failed");
    }
}

/// The revision an `If-Match` header asks for, if any.
fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(h) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = h.to_str().unwrap_or_default().trim();
    let text = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
    text.parse::<i64>().map(Some).map_err(|_| {
        ApiError::bad_request(format!(
            "Invalid If-Match header \"{text}\": a node revision (integer) is expected."
        ))
    })
}

/// `PATCH /v1/nodes/{ident}`: JSON Patch under the node's exclusive lock.
/// `If-Match: <revision>` makes the update conditional (412 on mismatch).
pub async fn patch(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    JsonBody(ops): JsonBody<Vec<PatchOp>>,
) -> Result<Response, ApiError> {
    let ident = node_ident(&id, v)?;
    let expected = if_match(&headers)?;
    for op in &ops {
        let root = op
            .path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or("");
        render::check_field_version(root, v)?;
    }
    let mut ops = ops;
    if ops
        .iter()
        .any(|op| op.path == "/parent_node" && op.value.is_some())
    {
        // Resolved before the lock, against the node's owner as it is.
        let current = st.tm.store().get_node(&ident).await?;
        for op in ops.iter_mut().filter(|op| op.path == "/parent_node") {
            if let Some(value) = &op.value {
                op.value = Some(
                    fields::resolve_parent(
                        st.tm.store().as_ref(),
                        value,
                        current.attrs.owner.as_deref(),
                    )
                    .await?,
                );
            }
        }
    }
    let mut task = st
        .tm
        .acquire(ident)
        .purpose("node update")
        .retry(st.retry)
        .exclusive()
        .await?;
    let task_uuid = task.node().uuid;
    let outcome = async {
        if let Some(rev) = expected {
            if task.node().revision != rev {
                return Err(ApiError::precondition_failed(format!(
                    "Node {} is at revision {}, not {rev} as the If-Match header requires.",
                    task.node().uuid,
                    task.node().revision
                )));
            }
        }
        let removes_instance_only =
            ops.len() == 1 && ops[0].op == "remove" && ops[0].path == "/instance_uuid";
        fields::check_not_in_transition(task.node(), removes_instance_only, v)?;
        let mut patched = apply_patch_with(st.drivers(), task.node(), &ops)?;
        fields::check_update(task.node(), &mut patched)?;
        if patched.attrs.chassis_uuid != task.node().attrs.chassis_uuid {
            if patched.attrs.chassis_uuid.is_none() && !v.at_least(25) {
                // Ironic's allow_remove_chassis_uuid (1.25).
                return Err(ApiError::not_acceptable("Request not acceptable."));
            }
            fields::check_chassis(st.tm.store().as_ref(), &patched.attrs).await?;
        }
        if crate::allocations::removes_allocated_instance(task.node(), &patched)? {
            ferric_conductor::allocation::drop_for_node(&mut task).await?;
            patched.attrs.allocation_uuid = None;
        }
        Ok::<Option<Node>, ApiError>((&patched != task.node()).then_some(patched))
    }
    .await;
    let mut node = match outcome {
        // The write and the release in one commit.
        Ok(Some(patched)) => {
            let instance = patched.instance_uuid;
            *task.node_mut() = patched;
            task.save_and_release().await.map_err(|e| match e {
                ferric_conductor::TaskError::Store(s) => instance_conflict(s, instance, task_uuid),
                other => other.into(),
            })?
        }
        Ok(None) => {
            let node = task.node().clone();
            release(task).await;
            node
        }
        Err(e) => {
            release(task).await;
            return Err(e);
        }
    };
    node.reservation = None;
    Ok((
        node_revision_headers(node.revision),
        Json(show(&st.owners().await, &node, &base, v)),
    )
        .into_response())
}

/// `DELETE /v1/nodes/{ident}`, refused as Ironic's conductor refuses it:
/// an associated instance (unless in maintenance), protected (403), or a
/// provision state other than manageable, enroll, adopt failed and
/// available (unless in maintenance).
pub async fn delete(
    State(st): State<ApiState>,
    v: Version,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    use ProvisionState as S;
    let ident = node_ident(&id, v)?;
    let task = st
        .tm
        .acquire(ident)
        .purpose("node deletion")
        .retry(st.retry)
        .exclusive()
        .await?;
    let n = task.node();
    let allowed = [S::Manageable, S::Enroll, S::AdoptFailed, S::Available];
    let refusal = match n.instance_uuid {
        Some(instance) if !n.maintenance => Some(ApiError::conflict(format!(
            "Node {} is associated with instance {instance}.",
            n.uuid
        ))),
        _ if n.attrs.protected => Some(ApiError::forbidden(format!(
            "Node {} is protected and cannot be undeployed, rebuilt or deleted",
            n.uuid
        ))),
        _ if !n.maintenance && !allowed.contains(&n.provision_state) => {
            Some(ApiError::conflict(format!(
                "Can not delete node \"{}\" while it is in provision state \"{}\". Valid provision states to perform deletion are: \"('manageable', 'enroll', 'adopt failed', 'available')\", or set the node into maintenance mode",
                n.uuid, n.provision_state
            )))
        }
        _ => None,
    };
    if let Some(e) = refusal {
        release(task).await;
        return Err(e);
    }
    task.destroy().await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn idents_follow_ironics_rules() {
        let v = Version { minor: 5 };
        assert!(matches!(node_ident("n1", v), Ok(NodeIdent::Name(_))));
        let u = Uuid::new_v4().to_string();
        assert!(matches!(
            node_ident(&u, Version::MIN),
            Ok(NodeIdent::Uuid(_))
        ));
        assert_eq!(node_ident("n1", Version::MIN).unwrap_err().status(), 404);
        assert_eq!(node_ident("bad name!", v).unwrap_err().status(), 400);
    }

    #[test]
    fn create_starts_in_enroll_from_1_11() {
        let body: CreateNode = serde_json::from_value(json!({"driver": "fake-hardware"})).unwrap();
        let n = body.into_new_node(Version { minor: 11 }).unwrap();
        assert_eq!(n.provision_state, Some(ProvisionState::Enroll));
        let body: CreateNode = serde_json::from_value(json!({"driver": "fake-hardware"})).unwrap();
        let n = body.into_new_node(Version { minor: 10 }).unwrap();
        assert_eq!(n.provision_state, Some(ProvisionState::Available));
        assert_eq!(n.interfaces["power_interface"], "fake");
        assert_eq!(n.interfaces["network_interface"], "noop");
    }

    #[test]
    fn create_rejects_unknown_fields_and_drivers() {
        let bad: Result<CreateNode, _> =
            serde_json::from_value(json!({"driver": "fake-hardware", "colour": "red"}));
        assert!(bad.unwrap_err().to_string().contains("unknown field"));
        // Fields Ironic takes only in a PATCH.
        let bad: Result<CreateNode, _> =
            serde_json::from_value(json!({"driver": "fake-hardware", "protected": true}));
        assert!(bad.unwrap_err().to_string().contains("unknown field"));
        let body: CreateNode = serde_json::from_value(json!({"driver": "ipmi"})).unwrap();
        assert_eq!(body.into_new_node(Version::MAX).unwrap_err().status(), 400);
    }
}

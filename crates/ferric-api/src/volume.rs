//! Volume connectors and targets (Ironic 39's `/v1/volume`, API 1.32):
//! `GET /v1/volume` (the root's links), `POST/GET /v1/volume/connectors`,
//! `GET/PATCH/DELETE /v1/volume/connectors/{uuid}`, the same for
//! `/v1/volume/targets`, and the nested read-only
//! `/v1/nodes/{node}/volume[/connectors|/targets]`.
//!
//! Both are [`ferric_store::Resource`]s owned by a node (deleted with it).
//! Their unique keys are Ironic's unique constraints: a connector's
//! `"<type>/<connector_id>"` (unique over all connectors), a target's
//! `"<node_uuid>/<boot_index>"` (unique per node); every other field is the
//! body. As in Ironic, creation is an API-side write with no lock; update
//! and deletion take the node's exclusive lock and are refused unless the
//! node is powered off (deletion: also in manageable, enroll, adopt failed),
//! checked under the lock.

use crate::deploy_templates::{check_keys, mask_secrets};
use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery, BaseUrl, JsonBody};
use crate::nodes::{node_ident, release};
use crate::patch::PatchOp;
use crate::render;
use crate::resource::py_repr;
use crate::resource::{self, schema_error};
use crate::version::Version;
use crate::ApiState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ferric_core::{DbTime, PowerState, ProvisionState};
use ferric_store::{
    NewResource, NodeIdent, Resource, ResourceKind, ResourceQuery, ResourceSort, StoreError,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use uuid::Uuid;

/// The first microversion with the volume resources.
pub const MIN_MINOR: u32 = 32;

/// Routes of this module.
pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/volume", get(root))
        .route("/v1/nodes/{ident}/volume", get(node_root))
        .route(
            "/v1/volume/connectors",
            get(list_connectors).post(create_connector),
        )
        .route("/v1/volume/targets", get(list_targets).post(create_target))
        .route(
            "/v1/volume/connectors/{id}",
            get(show_connector)
                .patch(update_connector)
                .delete(delete_connector),
        )
        .route(
            "/v1/volume/targets/{id}",
            get(show_target).patch(update_target).delete(delete_target),
        )
        .route(
            "/v1/nodes/{ident}/volume/connectors",
            get(nested_connectors).post(nested_write),
        )
        .route(
            "/v1/nodes/{ident}/volume/targets",
            get(nested_targets).post(nested_write),
        )
}

/// One handler per kind and method, delegating to the generic ones.
macro_rules! per_kind {
    ($vol:expr, $create:ident, $list:ident, $show:ident, $update:ident, $delete:ident) => {
        async fn $create(
            st: State<ApiState>,
            v: Version,
            base: BaseUrl,
            doc: JsonBody<Value>,
        ) -> Result<Response, ApiError> {
            create(st, v, base, doc, $vol).await
        }
        async fn $list(
            st: State<ApiState>,
            v: Version,
            base: BaseUrl,
            q: ApiQuery<ListQuery>,
        ) -> Result<Response, ApiError> {
            list(st, v, base, q, $vol, None).await
        }
        async fn $show(
            st: State<ApiState>,
            v: Version,
            base: BaseUrl,
            id: ApiPath<String>,
            q: ApiQuery<ShowQuery>,
        ) -> Result<Response, ApiError> {
            show(st, v, base, id, q, $vol).await
        }
        async fn $update(
            st: State<ApiState>,
            v: Version,
            base: BaseUrl,
            id: ApiPath<String>,
            ops: JsonBody<Vec<PatchOp>>,
        ) -> Result<Response, ApiError> {
            update(st, v, base, id, ops, $vol).await
        }
        async fn $delete(
            st: State<ApiState>,
            v: Version,
            id: ApiPath<String>,
        ) -> Result<Response, ApiError> {
            delete(st, v, id, $vol).await
        }
    };
}

per_kind!(
    Vol::Connector,
    create_connector,
    list_connectors,
    show_connector,
    update_connector,
    delete_connector
);
per_kind!(
    Vol::Target,
    create_target,
    list_targets,
    show_target,
    update_target,
    delete_target
);

/// Which of the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vol {
    Connector,
    Target,
}

impl Vol {
    fn kind(self) -> ResourceKind {
        match self {
            Vol::Connector => ResourceKind::VolumeConnector,
            Vol::Target => ResourceKind::VolumeTarget,
        }
    }

    /// The path segment and list item name.
    fn plural(self) -> &'static str {
        match self {
            Vol::Connector => "connectors",
            Vol::Target => "targets",
        }
    }

    /// The name Ironic's validator gives the body in schema errors.
    fn what(self) -> &'static str {
        match self {
            Vol::Connector => "connector",
            Vol::Target => "target",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Vol::Connector => "Volume connector",
            Vol::Target => "Volume target",
        }
    }

    /// Body fields (everything but uuid and node_uuid), schema order.
    fn body_fields(self) -> &'static [&'static str] {
        match self {
            Vol::Connector => &["connector_id", "extra", "type"],
            Vol::Target => &[
                "boot_index",
                "extra",
                "properties",
                "volume_id",
                "volume_type",
            ],
        }
    }

    fn required(self) -> &'static [&'static str] {
        match self {
            Vol::Connector => &["connector_id", "node_uuid", "type"],
            Vol::Target => &["boot_index", "node_uuid", "volume_id", "volume_type"],
        }
    }

    fn patch_fields(self) -> &'static [&'static str] {
        match self {
            Vol::Connector => &["connector_id", "extra", "node_uuid", "type"],
            Vol::Target => &[
                "boot_index",
                "extra",
                "node_uuid",
                "properties",
                "volume_id",
                "volume_type",
            ],
        }
    }

    fn default_fields(self) -> &'static [&'static str] {
        match self {
            Vol::Connector => &["uuid", "node_uuid", "type", "connector_id"],
            Vol::Target => &[
                "uuid",
                "node_uuid",
                "volume_type",
                "boot_index",
                "volume_id",
            ],
        }
    }

    /// The unique key of a validated body on `node`.
    fn key(self, node: Uuid, body: &Map<String, Value>) -> String {
        match self {
            Vol::Connector => format!(
                "{}/{}",
                body["type"].as_str().unwrap_or_default(),
                body["connector_id"].as_str().unwrap_or_default()
            ),
            Vol::Target => format!("{node}/{}", body["boot_index"]),
        }
    }
}

fn too_old() -> ApiError {
    ApiError::not_found("The API is not supported for this version")
}

fn gate(v: Version) -> Result<(), ApiError> {
    if v.at_least(MIN_MINOR) {
        Ok(())
    } else {
        Err(too_old())
    }
}

/// A volume connector or target, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Volume {
    pub vol: Vol,
    pub uuid: Uuid,
    pub node_uuid: Uuid,
    pub body: Map<String, Value>,
    pub created_at: DbTime,
    pub updated_at: Option<DbTime>,
    pub revision: i64,
}

impl Volume {
    /// From the stored form.
    pub fn from_resource(vol: Vol, r: Resource) -> Result<Volume, ApiError> {
        Ok(Volume {
            vol,
            uuid: r.uuid,
            node_uuid: r.node.ok_or_else(|| {
                ApiError::internal(&format!("{} {} has no node", vol.what(), r.uuid))
            })?,
            body: r.body,
            created_at: r.created_at,
            updated_at: r.updated_at,
            revision: r.revision,
        })
    }

    fn to_resource(&self) -> Resource {
        Resource {
            kind: self.vol.kind(),
            uuid: self.uuid,
            name: None,
            node: Some(self.node_uuid),
            parent: None,
            key: Some(self.vol.key(self.node_uuid, &self.body)),
            body: self.body.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            revision: self.revision,
        }
    }
}

/// The document (Ironic's `convert_with_links` + sanitize: a target's
/// `properties` secrets masked).
pub fn render(d: &Volume, base: &BaseUrl) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("uuid".into(), json!(d.uuid));
    m.insert("created_at".into(), render::timestamp(d.created_at));
    m.insert(
        "updated_at".into(),
        d.updated_at.map_or(Value::Null, render::timestamp),
    );
    for f in d.vol.body_fields() {
        let v = d.body.get(*f).cloned().unwrap_or(Value::Null);
        let v = match (*f, v) {
            ("extra", Value::Null) => json!({}),
            ("properties", Value::Null) => json!({}),
            ("properties", Value::Object(p)) => Value::Object(mask_secrets(&p)),
            (_, v) => v,
        };
        m.insert((*f).into(), v);
    }
    m.insert(
        "links".into(),
        render::links(&base.0, &format!("volume/{}/{}", d.vol.plural(), d.uuid)),
    );
    m.insert("node_uuid".into(), json!(d.node_uuid));
    m
}

/// A validated document: uuid, node_uuid, body.
struct Validated {
    uuid: Option<Uuid>,
    node_uuid: Uuid,
    body: Map<String, Value>,
}

/// Ironic's `CONNECTOR_VALIDATOR` / `TARGET_VALIDATOR`: the schema (errors
/// named after `what`), then node_uuid and uuid as UUIDs.
fn validate(vol: Vol, doc: &Map<String, Value>, what: &str) -> Result<Validated, ApiError> {
    let schema = |m: String| schema_error(what, m);
    let mut allowed: Vec<&str> = vol.body_fields().to_vec();
    allowed.extend(["node_uuid", "uuid"]);
    check_keys(doc, vol.required(), &allowed).map_err(schema)?;
    let mut body = Map::new();
    for f in vol.body_fields() {
        let v = doc.get(*f).cloned().unwrap_or(Value::Null);
        let ok = match *f {
            "extra" | "properties" => matches!(v, Value::Null | Value::Object(_)),
            "boot_index" => v.is_i64(),
            _ => v.is_string(),
        };
        if !ok {
            let ty = match *f {
                "extra" | "properties" => "'object', 'null'",
                "boot_index" => "'integer'",
                _ => "'string'",
            };
            return Err(schema(format!("{} is not of type {ty}", py_repr(&v))));
        }
        // Ironic's JSON columns store a null dict as {}.
        let v = match (*f, v) {
            ("extra" | "properties", Value::Null) => json!({}),
            (_, v) => v,
        };
        match &v {
            Value::String(s) => crate::extract::check_text(f, s)?,
            Value::Object(_) => resource::check_json_text(f, &v)?,
            _ => {}
        }
        body.insert((*f).into(), v);
    }
    let node_raw = match &doc["node_uuid"] {
        Value::String(s) => s.clone(),
        other => {
            return Err(schema(format!(
                "{} is not of type 'string'",
                py_repr(other)
            )))
        }
    };
    let uuid_raw = match doc.get("uuid") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(schema(format!(
                "{} is not of type 'string', 'null'",
                py_repr(other)
            )))
        }
    };
    let node_uuid = resource::uuid_param("node_uuid", &node_raw)?;
    let uuid = uuid_raw
        .map(|u| resource::uuid_param("uuid", &u))
        .transpose()?;
    Ok(Validated {
        uuid,
        node_uuid,
        body,
    })
}

/// Ironic's messages for this kind's store errors.
fn store_error(vol: Vol, body: &Map<String, Value>, e: StoreError) -> ApiError {
    match (vol, e) {
        (
            _,
            StoreError::ResourceDuplicate {
                field: "uuid",
                value,
                ..
            },
        ) => ApiError::conflict_409(format!(
            "A volume {} with UUID {value} already exists.",
            vol.what()
        )),
        (Vol::Connector, StoreError::ResourceDuplicate { .. }) => ApiError::conflict_409(format!(
            "A volume connector with type {} and connector ID {} already exists.",
            body.get("type").and_then(Value::as_str).unwrap_or_default(),
            body.get("connector_id")
                .and_then(Value::as_str)
                .unwrap_or_default()
        )),
        (Vol::Target, StoreError::ResourceDuplicate { .. }) => ApiError::conflict_409(format!(
            "A volume target with boot index '{}' for the same node already exists.",
            body.get("boot_index").cloned().unwrap_or(Value::Null)
        )),
        (_, StoreError::ResourceNotFound { ident, .. }) => {
            ApiError::not_found(format!("{} {ident} could not be found.", vol.title()))
        }
        (_, other) => other.into(),
    }
}

/// `GET /v1/volume` (and `/v1/nodes/{node}/volume`): links to the two lists.
fn root_doc(base: &BaseUrl, prefix: &str) -> Value {
    json!({
        "links": render::links(&base.0, prefix),
        "connectors": render::links(&base.0, &format!("{prefix}connectors")),
        "targets": render::links(&base.0, &format!("{prefix}targets")),
    })
}

async fn root(v: Version, base: BaseUrl) -> Result<Response, ApiError> {
    gate(v)?;
    Ok(Json(root_doc(&base, "volume/")).into_response())
}

async fn node_root(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiPath(node): ApiPath<String>,
) -> Result<Response, ApiError> {
    gate(v)?;
    st.tm.store().get_node(&node_ident(&node, v)?).await?;
    Ok(Json(root_doc(
        &base,
        &format!("nodes/{}/volume/", resource::encode(&node)),
    ))
    .into_response())
}

/// `POST` on a nested path: Ironic's `MalformedRequestURI`.
async fn nested_write(v: Version) -> Result<Response, ApiError> {
    gate(v)?;
    Err(ApiError::bad_request("Malformed request URI."))
}

/// `POST /v1/volume/{connectors,targets}`: no lock, as Ironic.
async fn create(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    JsonBody(doc): JsonBody<Value>,
    vol: Vol,
) -> Result<Response, ApiError> {
    gate(v)?;
    let Value::Object(doc) = doc else {
        return Err(schema_error(
            vol.what(),
            format!("{} is not of type 'object'", py_repr(&doc)),
        ));
    };
    let req = validate(vol, &doc, vol.what())?;
    let node_missing = || {
        ApiError::bad_request(format!(
            "Invalid input for field/attribute node_uuid. Value: '{}'. ",
            req.node_uuid
        ))
    };
    match st
        .tm
        .store()
        .get_node(&NodeIdent::Uuid(req.node_uuid))
        .await
    {
        Ok(_) => {}
        Err(StoreError::NodeNotFound(_)) => return Err(node_missing()),
        Err(e) => return Err(e.into()),
    }
    let new = NewResource {
        uuid: req.uuid,
        name: None,
        node: Some(req.node_uuid),
        parent: None,
        key: Some(vol.key(req.node_uuid, &req.body)),
        body: req.body.clone(),
    };
    let stored = match st.tm.store().create_resource(vol.kind(), new).await {
        Ok(r) => r,
        Err(StoreError::NodeNotFound(_)) => return Err(node_missing()),
        Err(e) => return Err(store_error(vol, &req.body, e)),
    };
    let d = Volume::from_resource(vol, stored)?;
    Ok(resource::created(
        render(&d, &base),
        &format!("{}/v1/volume/{}/{}", base.0, vol.plural(), d.uuid),
    ))
}

/// List query parameters.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    node: Option<String>,
    marker: Option<String>,
    limit: Option<String>,
    sort_key: Option<String>,
    sort_dir: Option<String>,
    fields: Option<String>,
    detail: Option<String>,
}

async fn nested_connectors(
    st: State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiPath(node): ApiPath<String>,
    q: ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    list(st, v, base, q, Vol::Connector, Some(node)).await
}

async fn nested_targets(
    st: State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiPath(node): ApiPath<String>,
    q: ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    list(st, v, base, q, Vol::Target, Some(node)).await
}

async fn list(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiQuery(q): ApiQuery<ListQuery>,
    vol: Vol,
    parent: Option<String>,
) -> Result<Response, ApiError> {
    gate(v)?;
    let detail = match &q.detail {
        Some(d) => crate::nodes::parse_bool("detail", d)?,
        None => false,
    };
    let fields = resource::requested_fields(q.fields.as_deref(), v)?;
    if detail && fields.is_some() {
        return Err(ApiError::bad_request(
            "Can't fetch a subset of fields with 'detail' set",
        ));
    }
    let paging = resource::paging(
        q.limit.as_deref(),
        q.marker.as_deref(),
        q.sort_key.as_deref(),
        q.sort_dir.as_deref(),
        &[
            ("uuid", ResourceSort::Uuid),
            ("created_at", ResourceSort::CreatedAt),
        ],
        &["extra"],
    )?;
    let mut query = ResourceQuery {
        marker: paging.marker,
        limit: Some(paging.limit),
        sort: paging.sort,
        descending: paging.descending,
        ..ResourceQuery::all(vol.kind())
    };
    if let Some(n) = parent.as_ref().or(q.node.as_ref()) {
        query.node = Some(st.tm.store().get_node(&node_ident(n, v)?).await?.uuid);
    }
    let rows = st
        .tm
        .store()
        .list_resources(&query)
        .await
        .map_err(|e| store_error(vol, &Map::new(), e))?;
    let last = rows.last().map(|r| r.uuid);
    let wanted = resource::wanted(&fields, detail, vol.default_fields());
    if !detail {
        let probe = Volume {
            vol,
            uuid: Uuid::nil(),
            node_uuid: Uuid::nil(),
            body: Map::new(),
            created_at: DbTime(0),
            updated_at: None,
            revision: 0,
        };
        resource::select(render(&probe, &base), &wanted)?;
    }
    let mut items = Vec::with_capacity(rows.len());
    for r in rows {
        let doc = render(&Volume::from_resource(vol, r)?, &base);
        items.push(resource::shape(doc, detail, &wanted)?);
    }
    let path = match &parent {
        Some(n) => format!("nodes/{}/volume/{}", resource::encode(n), vol.plural()),
        None => format!("volume/{}", vol.plural()),
    };
    let body = resource::collection(
        vol.plural(),
        items,
        last,
        &paging,
        &base,
        &path,
        &[
            ("node", q.node.as_deref()),
            ("fields", q.fields.as_deref()),
            ("detail", q.detail.as_deref()),
        ],
    );
    Ok(Json(body).into_response())
}

/// `GET …/{uuid}` query.
pub type ShowQuery = resource::ShowQuery;

async fn find(st: &ApiState, vol: Vol, id: &str) -> Result<Volume, ApiError> {
    let field = match vol {
        Vol::Connector => "connector_uuid",
        Vol::Target => "target_uuid",
    };
    let uuid = resource::uuid_param(field, id)?;
    let r = st
        .tm
        .store()
        .get_resource(vol.kind(), &NodeIdent::Uuid(uuid))
        .await
        .map_err(|e| store_error(vol, &Map::new(), e))?;
    Volume::from_resource(vol, r)
}

async fn show(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ShowQuery>,
    vol: Vol,
) -> Result<Response, ApiError> {
    gate(v)?;
    let fields = resource::requested_fields(q.fields.as_deref(), v)?;
    let d = find(&st, vol, &id).await?;
    let doc = render(&d, &base);
    let doc = match &fields {
        Some(f) => resource::select(doc, f)?,
        None => doc,
    };
    Ok(Json(doc).into_response())
}

/// Ironic's `InvalidStateRequested` for a volume write.
fn wrong_state(action: &str, node: Uuid, power: Option<PowerState>) -> ApiError {
    ApiError::bad_request(format!(
        "The requested action \"{action}\" can not be performed on node \"{node}\" while it is in state \"{}\".",
        power.map_or("None".to_string(), |p| p.to_string())
    ))
}

/// `PATCH /v1/volume/{connectors,targets}/{uuid}`: the patch is checked in
/// the API as Ironic's; the write runs under the (new) node's exclusive
/// lock and only while that node is powered off.
async fn update(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiPath(id): ApiPath<String>,
    JsonBody(ops): JsonBody<Vec<PatchOp>>,
    vol: Vol,
) -> Result<Response, ApiError> {
    gate(v)?;
    let before = find(&st, vol, &id).await?;
    let allowed = vol.patch_fields();
    for op in &ops {
        let root = op
            .path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or("");
        if !allowed.contains(&root) {
            return Err(ApiError::bad_request(format!(
                "Cannot patch {}. Only the following can be updated: {}",
                op.path,
                allowed.join(", ")
            )));
        }
    }
    let mut new_node = before.node_uuid;
    for op in ops
        .iter()
        .filter(|o| o.path == "/node_uuid" && o.op != "remove")
    {
        let value = op.value.clone().unwrap_or(Value::Null);
        let text = match &value {
            Value::String(s) => s.clone(),
            other => py_repr(other),
        };
        let parsed = Uuid::parse_str(&text).map_err(|_| {
            ApiError::bad_request(format!(
                "Expected a UUID for node_uuid, but received {text}."
            ))
        })?;
        if st
            .tm
            .store()
            .get_node(&NodeIdent::Uuid(parsed))
            .await
            .is_err()
        {
            return Err(ApiError::bad_request(format!(
                "Unable to apply the requested node_uuid '{parsed}'. Requested value was invalid."
            )));
        }
        new_node = parsed;
    }
    let mut doc = before.body.clone();
    doc.insert("uuid".into(), json!(before.uuid));
    doc.insert("node_uuid".into(), Value::Null);
    resource::apply_patch(&mut doc, &ops, allowed, |_| Value::Null)?;
    doc.insert("node_uuid".into(), json!(new_node));
    // A removed field is gone (jsonpatch): required ones are then missing.
    doc.retain(|_, v| !v.is_null());
    let req = validate(vol, &doc, "patch")?;
    let task = st
        .tm
        .acquire(new_node)
        .purpose(format!("volume {} update", vol.what()))
        .retry(st.retry)
        .exclusive()
        .await?;
    let outcome = async {
        let node = task.node();
        if node.power_state != Some(PowerState::Off) {
            return Err(wrong_state(
                &format!("volume {} update", vol.what()),
                node.uuid,
                node.power_state,
            ));
        }
        let mut next = before.clone();
        next.node_uuid = req.node_uuid;
        next.body = req.body.clone();
        if next == before {
            return Ok(before.clone());
        }
        let stored = st
            .tm
            .store()
            .update_resource(&next.to_resource())
            .await
            .map_err(|e| store_error(vol, &req.body, e))?;
        Volume::from_resource(vol, stored)
    }
    .await;
    release(task).await;
    Ok(Json(render(&outcome?, &base)).into_response())
}

/// `DELETE /v1/volume/{connectors,targets}/{uuid}`: under the node's
/// exclusive lock; allowed in manageable, enroll, adopt failed or powered
/// off.
async fn delete(
    State(st): State<ApiState>,
    v: Version,
    ApiPath(id): ApiPath<String>,
    vol: Vol,
) -> Result<Response, ApiError> {
    gate(v)?;
    let before = find(&st, vol, &id).await?;
    let task = st
        .tm
        .acquire(before.node_uuid)
        .purpose(format!("volume {} deletion", vol.what()))
        .retry(st.retry)
        .exclusive()
        .await?;
    let outcome = async {
        let node = task.node();
        let deletable = matches!(
            node.provision_state,
            ProvisionState::Manageable | ProvisionState::Enroll | ProvisionState::AdoptFailed
        );
        if !deletable && node.power_state != Some(PowerState::Off) {
            return Err(wrong_state(
                &format!("volume {} deletion", vol.what()),
                node.uuid,
                node.power_state,
            ));
        }
        st.tm
            .store()
            .delete_resource(vol.kind(), before.uuid, None)
            .await
            .map_err(|e| store_error(vol, &Map::new(), e))
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
                ("400", "Invalid input, or the node is not powered off"),
                ("401", "Credentials required"),
                (
                    "404",
                    "No such volume resource or node, or API version below 1.32",
                ),
                ("406", "Microversion not acceptable"),
                ("409", "Duplicate, or node locked (with Retry-After)"),
                ("503", "No free conductor worker"),
            ],
        )
    };
    let list_params = json!([
        {"name": "node", "in": "query", "schema": {"type": "string"}},
        crate::resource::openapi_limit_param(),
        {"name": "marker", "in": "query", "schema": {"type": "string", "format": "uuid"}},
        {"name": "sort_key", "in": "query", "schema": {"type": "string", "enum": ["id", "uuid", "created_at"]}},
        {"name": "sort_dir", "in": "query", "schema": {"type": "string", "enum": ["asc", "desc"]}},
        {"name": "fields", "in": "query", "schema": {"type": "string"}},
        {"name": "detail", "in": "query", "schema": {"type": "boolean"}},
    ]);
    let id = json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}});
    let node =
        json!({"name": "ident", "in": "path", "required": true, "schema": {"type": "string"}});
    let connector = json!({"required": true, "content": {"application/json": {"schema": {
        "type": "object",
        "required": ["connector_id", "node_uuid", "type"],
        "properties": {
            "connector_id": {"type": "string"},
            "extra": {"type": ["object", "null"]},
            "node_uuid": {"type": "string", "format": "uuid"},
            "type": {"type": "string"},
            "uuid": {"type": ["string", "null"], "format": "uuid"}
        },
        "additionalProperties": false
    }}}});
    let target = json!({"required": true, "content": {"application/json": {"schema": {
        "type": "object",
        "required": ["boot_index", "node_uuid", "volume_id", "volume_type"],
        "properties": {
            "boot_index": {"type": "integer"},
            "extra": {"type": ["object", "null"]},
            "node_uuid": {"type": "string", "format": "uuid"},
            "properties": {"type": ["object", "null"]},
            "volume_id": {"type": "string"},
            "volume_type": {"type": "string"},
            "uuid": {"type": ["string", "null"], "format": "uuid"}
        },
        "additionalProperties": false
    }}}});
    let patch_body = json!({"required": true, "content": {"application/json": {"schema": {"type": "array", "items": {"type": "object"}}}}});
    let mut nested = list_params.as_array().cloned().unwrap_or_default();
    nested.retain(|p| p["name"] != "node");
    nested.insert(0, node.clone());
    let mut m = Map::new();
    m.insert("/v1/volume".into(), json!({
        "get": {"summary": "The volume root (1.32)", "responses": common(json!({"200": ok("Links")}))},
    }));
    m.insert("/v1/nodes/{ident}/volume".into(), json!({
        "get": {"summary": "A node's volume root (1.32)", "parameters": [node], "responses": common(json!({"200": ok("Links")}))},
    }));
    for (plural, body) in [("connectors", connector), ("targets", target)] {
        m.insert(format!("/v1/volume/{plural}"), json!({
            "get": {"summary": format!("List volume {plural} (1.32)"), "parameters": list_params, "responses": common(json!({"200": ok("{items, next?}")}))},
            "post": {"summary": format!("Create a volume {plural} entry"), "requestBody": body, "responses": common(json!({"201": ok("Created")}))},
        }));
        m.insert(format!("/v1/volume/{plural}/{{id}}"), json!({
            "get": {"summary": "Show", "parameters": [id, {"name": "fields", "in": "query", "schema": {"type": "string"}}], "responses": common(json!({"200": ok("The document")}))},
            "patch": {"summary": "Update (JSON Patch) while the node is powered off", "parameters": [id], "requestBody": patch_body, "responses": common(json!({"200": ok("The document")}))},
            "delete": {"summary": "Delete", "parameters": [id], "responses": common(json!({"204": {"description": "Deleted"}}))},
        }));
        m.insert(format!("/v1/nodes/{{ident}}/volume/{plural}"), json!({
            "get": {"summary": format!("List a node's volume {plural}"), "parameters": nested, "responses": common(json!({"200": ok("{items, next?}")}))},
        }));
    }
    m
}

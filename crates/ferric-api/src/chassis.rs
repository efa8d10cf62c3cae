//! Chassis (Ironic 39's `/v1/chassis`): `POST/GET /v1/chassis`,
//! `GET /v1/chassis/detail`, `GET/PATCH/DELETE /v1/chassis/{chassis_uuid}`.
//!
//! Stored as a [`ferric_store::Resource`] of kind `Chassis` (no node, no
//! key). Chassis have no node lock to take: a PATCH is a conditional update
//! on the revision it read (a concurrent writer gets a retryable 409, never
//! a lost update). Deletion is refused while nodes reference the chassis
//! ([`chassis_has_nodes`]).

use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery, BaseUrl, JsonBody};
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
use ferric_core::DbTime;
use ferric_store::{NewResource, NodeIdent, Resource, ResourceKind, ResourceQuery, ResourceSort};
use serde_json::{json, Map, Value};
use uuid::Uuid;

const KIND: ResourceKind = ResourceKind::Chassis;

/// Routes of this module.
pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/chassis", get(list).post(create))
        .route("/v1/chassis/detail", get(list_detail))
        .route(
            "/v1/chassis/{ident}",
            get(show).patch(update).delete(delete),
        )
        .route("/v1/chassis/{ident}/nodes", get(nodes).post(malformed))
        .route("/v1/chassis/{ident}/nodes/detail", get(nodes_detail))
        .route(
            "/v1/chassis/{ident}/nodes/{node}",
            get(malformed)
                .post(malformed)
                .patch(malformed)
                .delete(malformed),
        )
}

/// `GET /v1/chassis/{chassis_uuid}/nodes`: the chassis' nodes (404 for an
/// unknown chassis, as Ironic's node list filtered on it).
pub async fn nodes(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<crate::nodes::ListQuery>,
) -> Result<Response, ApiError> {
    let uuid = resource::uuid_param("chassis_uuid", &id)?;
    crate::nodes::list_for_chassis(st, v, base, uuid.to_string(), q, false).await
}

/// `GET /v1/chassis/{chassis_uuid}/nodes/detail`.
pub async fn nodes_detail(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<crate::nodes::ListQuery>,
) -> Result<Response, ApiError> {
    let uuid = resource::uuid_param("chassis_uuid", &id)?;
    crate::nodes::list_for_chassis(st, v, base, uuid.to_string(), q, true).await
}

/// Anything else under `/v1/chassis/{uuid}/nodes`: Ironic's
/// `MalformedRequestURI` (a node is shown, created and changed under
/// `/v1/nodes` only).
async fn malformed() -> ApiError {
    ApiError::bad_request("Malformed request URI.")
}

/// A chassis, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct Chassis {
    pub uuid: Uuid,
    pub description: Option<String>,
    pub extra: Map<String, Value>,
    pub created_at: DbTime,
    pub updated_at: Option<DbTime>,
    pub revision: i64,
}

impl Chassis {
    /// From the stored form.
    pub fn from_resource(r: Resource) -> Chassis {
        Chassis {
            uuid: r.uuid,
            description: r
                .body
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_string),
            extra: r
                .body
                .get("extra")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            created_at: r.created_at,
            updated_at: r.updated_at,
            revision: r.revision,
        }
    }

    fn body(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("description".into(), json!(self.description));
        m.insert("extra".into(), Value::Object(self.extra.clone()));
        m
    }

    /// The stored form (for an update: the revision it was read at).
    pub fn to_resource(&self) -> Resource {
        Resource {
            kind: KIND,
            uuid: self.uuid,
            name: None,
            node: None,
            parent: None,
            key: None,
            body: self.body(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            revision: self.revision,
        }
    }
}

/// The chassis document (every field exists since 1.1).
pub fn render(c: &Chassis, base: &BaseUrl) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("uuid".into(), json!(c.uuid));
    m.insert("description".into(), json!(c.description));
    m.insert("extra".into(), Value::Object(c.extra.clone()));
    m.insert("created_at".into(), render::timestamp(c.created_at));
    m.insert(
        "updated_at".into(),
        c.updated_at.map_or(Value::Null, render::timestamp),
    );
    m.insert(
        "links".into(),
        render::links(&base.0, &format!("chassis/{}", c.uuid)),
    );
    m.insert(
        "nodes".into(),
        render::links(&base.0, &format!("chassis/{}/nodes", c.uuid)),
    );
    m
}

const FIELDS: [&str; 3] = ["uuid", "extra", "description"];

/// A validated chassis document: uuid, description, extra.
type Fields = (Option<Uuid>, Option<String>, Map<String, Value>);

fn validate(doc: &Map<String, Value>) -> Result<Fields, ApiError> {
    let d = Doc {
        what: "chassis",
        map: doc,
    };
    d.only(&FIELDS)?;
    let uuid = d
        .opt_str("uuid", None)?
        .map(|u| resource::uuid_param("uuid", &u))
        .transpose()?;
    Ok((
        uuid,
        d.opt_str("description", Some(255))?,
        d.opt_object("extra")?.unwrap_or_default(),
    ))
}

/// Whether any node belongs to chassis `uuid` (Ironic's `ChassisNotEmpty`):
/// a one-row node list filtered on it, child nodes included.
pub async fn chassis_has_nodes(st: &ApiState, uuid: Uuid) -> Result<bool, ApiError> {
    let page = st
        .tm
        .store()
        .list_nodes(&ferric_store::NodeQuery {
            chassis_uuid: Some(uuid),
            limit: Some(1),
            ..Default::default()
        })
        .await?;
    Ok(!page.nodes.is_empty())
}

/// `POST /v1/chassis`.
pub async fn create(
    State(st): State<ApiState>,
    base: BaseUrl,
    JsonBody(doc): JsonBody<Map<String, Value>>,
) -> Result<Response, ApiError> {
    let (uuid, description, extra) = validate(&doc)?;
    let mut body = Map::new();
    body.insert("description".into(), json!(description));
    body.insert("extra".into(), Value::Object(extra));
    let stored = st
        .tm
        .store()
        .create_resource(
            KIND,
            NewResource {
                uuid,
                body,
                ..Default::default()
            },
        )
        .await?;
    let c = Chassis::from_resource(stored);
    Ok(resource::created(
        render(&c, &base),
        &format!("{}/v1/chassis/{}", base.0, c.uuid),
    ))
}

/// List query parameters.
pub type ListQuery = resource::PagedQuery;

/// `GET /v1/chassis`.
pub async fn list(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    list_chassis(st, v, base, q, false).await
}

/// `GET /v1/chassis/detail`.
pub async fn list_detail(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    list_chassis(st, v, base, q, true).await
}

async fn list_chassis(
    st: ApiState,
    v: Version,
    base: BaseUrl,
    q: ListQuery,
    detail_path: bool,
) -> Result<Response, ApiError> {
    let (detail, fields) =
        resource::list_view(v, detail_path, q.detail.as_deref(), q.fields.as_deref())?;
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
    let rows = st
        .tm
        .store()
        .list_resources(&ResourceQuery {
            marker: paging.marker,
            limit: Some(paging.limit),
            sort: paging.sort,
            descending: paging.descending,
            ..ResourceQuery::all(KIND)
        })
        .await?;
    let last = rows.last().map(|r| r.uuid);
    let wanted = resource::wanted(&fields, detail, &["uuid", "description"]);
    let mut items = Vec::with_capacity(rows.len());
    for r in rows {
        let doc = render(&Chassis::from_resource(r), &base);
        items.push(resource::shape(doc, detail, &wanted)?);
    }
    let body = resource::collection(
        "chassis",
        items,
        last,
        &paging,
        &base,
        if detail_path {
            "chassis/detail"
        } else {
            "chassis"
        },
        &[
            ("fields", q.fields.as_deref()),
            ("detail", q.detail.as_deref()),
        ],
    );
    Ok(Json(body).into_response())
}

/// `GET /v1/chassis/{uuid}` query.
pub type ShowQuery = resource::ShowQuery;

async fn find(st: &ApiState, id: &str) -> Result<Chassis, ApiError> {
    let uuid = resource::uuid_param("chassis_uuid", id)?;
    Ok(Chassis::from_resource(
        st.tm
            .store()
            .get_resource(KIND, &NodeIdent::Uuid(uuid))
            .await?,
    ))
}

/// `GET /v1/chassis/{chassis_uuid}`.
pub async fn show(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ShowQuery>,
) -> Result<Response, ApiError> {
    let fields = resource::requested_fields(q.fields.as_deref(), v)?;
    let c = find(&st, &id).await?;
    let doc = render(&c, &base);
    let doc = match &fields {
        Some(f) => resource::select(doc, f)?,
        None => doc,
    };
    Ok(Json(doc).into_response())
}

/// `PATCH /v1/chassis/{chassis_uuid}`: conditional on the revision read.
pub async fn update(
    State(st): State<ApiState>,
    base: BaseUrl,
    ApiPath(id): ApiPath<String>,
    JsonBody(ops): JsonBody<Vec<PatchOp>>,
) -> Result<Response, ApiError> {
    let current = find(&st, &id).await?;
    let mut doc = current.body();
    doc.insert("uuid".into(), json!(current.uuid));
    resource::apply_patch(&mut doc, &ops, &FIELDS, |f| match f {
        "extra" => json!({}),
        _ => Value::Null,
    })?;
    let (uuid, description, extra) = validate(&doc)?;
    if uuid != Some(current.uuid) {
        return Err(ApiError::bad_request("A chassis' uuid cannot be changed."));
    }
    let next = Chassis {
        description,
        extra,
        ..current.clone()
    };
    if next == current {
        return Ok(Json(render(&current, &base)).into_response());
    }
    let stored = st.tm.store().update_resource(&next.to_resource()).await?;
    Ok(Json(render(&Chassis::from_resource(stored), &base)).into_response())
}

/// `DELETE /v1/chassis/{chassis_uuid}`: refused while nodes belong to it.
pub async fn delete(
    State(st): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let current = find(&st, &id).await?;
    if chassis_has_nodes(&st, current.uuid).await? {
        return Err(ApiError::bad_request(format!(
            "Cannot complete the requested action because chassis {} contains nodes.",
            current.uuid
        )));
    }
    st.tm
        .store()
        .delete_resource(KIND, current.uuid, Some(current.revision))
        .await?;
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
                ("404", "No such chassis"),
                ("406", "Microversion not acceptable"),
                (
                    "409",
                    "Duplicate UUID, or changed concurrently (with Retry-After)",
                ),
            ],
        )
    };
    let list_params = json!([
        crate::resource::openapi_limit_param(),
        {"name": "marker", "in": "query", "schema": {"type": "string", "format": "uuid"}},
        {"name": "sort_key", "in": "query", "schema": {"type": "string", "enum": ["id", "uuid", "created_at"]}},
        {"name": "sort_dir", "in": "query", "schema": {"type": "string", "enum": ["asc", "desc"]}},
        {"name": "fields", "in": "query", "schema": {"type": "string"}},
        {"name": "detail", "in": "query", "schema": {"type": "boolean"}},
    ]);
    let ident = json!({"name": "ident", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}});
    let body = json!({"required": true, "content": {"application/json": {"schema": {
        "type": "object",
        "properties": {
            "uuid": {"type": ["string", "null"]},
            "description": {"type": ["string", "null"], "maxLength": 255},
            "extra": {"type": ["object", "null"]}
        },
        "additionalProperties": false
    }}}});
    let patch_body = json!({"required": true, "content": {"application/json": {"schema": {"type": "array", "items": {"type": "object"}}}}});
    let mut m = Map::new();
    m.insert("/v1/chassis".into(), json!({
        "get": {"summary": "List chassis", "parameters": list_params, "responses": common(json!({"200": ok("{chassis, next?}")}))},
        "post": {"summary": "Create a chassis", "requestBody": body, "responses": common(json!({"201": ok("The chassis")}))},
    }));
    m.insert("/v1/chassis/detail".into(), json!({
        "get": {"summary": "List chassis with every field", "parameters": list_params, "responses": common(json!({"200": ok("{chassis, next?}")}))},
    }));
    m.insert("/v1/chassis/{ident}".into(), json!({
        "get": {"summary": "Show a chassis", "parameters": [ident, {"name": "fields", "in": "query", "schema": {"type": "string"}}], "responses": common(json!({"200": ok("The chassis")}))},
        "patch": {"summary": "Update a chassis (JSON Patch)", "parameters": [ident], "requestBody": patch_body, "responses": common(json!({"200": ok("The chassis")}))},
        "delete": {"summary": "Delete a chassis (refused while nodes belong to it)", "parameters": [ident], "responses": common(json!({"204": {"description": "Deleted"}}))},
    }));
    m
}

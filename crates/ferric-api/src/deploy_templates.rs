//! Deploy templates (Ironic 39's `/v1/deploy_templates`, API 1.55):
//! `POST/GET /v1/deploy_templates`, `GET/PATCH/DELETE
//! /v1/deploy_templates/{template_ident}` (UUID or name).
//!
//! Stored as a [`ferric_store::Resource`] of kind `DeployTemplate`: the
//! name (a trait name) is the unique name column, `steps` and `extra` the
//! body. Templates belong to no node and take no lock: a PATCH is
//! conditional on the revision it read (a concurrent writer gets a 409,
//! never a lost update; Ironic itself documents the lost-update risk).
//! At deploy time the conductor (`ferric_conductor::provision::templates`)
//! reads the templates whose names are among the node's instance traits.

use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery, BaseUrl, JsonBody};
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
use ferric_core::DbTime;
use ferric_store::{
    NewResource, NodeIdent, Resource, ResourceKind, ResourceQuery, ResourceSort, StoreError,
};
use serde_json::{json, Map, Value};
use uuid::Uuid;

const KIND: ResourceKind = ResourceKind::DeployTemplate;

/// The first microversion with deploy templates.
pub const MIN_MINOR: u32 = 55;

/// Routes of this module.
pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/deploy_templates", get(list).post(create))
        .route(
            "/v1/deploy_templates/{ident}",
            get(show).patch(update).delete(delete),
        )
}

/// Ironic's `_route` gate: an older version gets 404 on GET, 405 otherwise.
pub(crate) fn gate(v: Version, minor: u32, get: bool, what: &str) -> Result<(), ApiError> {
    if v.at_least(minor) {
        return Ok(());
    }
    let msg = format!("The API version does not allow {what}");
    Err(if get {
        ApiError::not_found(msg)
    } else {
        ApiError::new(StatusCode::METHOD_NOT_ALLOWED, msg)
    })
}

/// A deploy template, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct DeployTemplate {
    pub uuid: Uuid,
    pub name: String,
    /// Normalised steps: `{interface, step, args, priority}` (priority an
    /// integer).
    pub steps: Vec<Value>,
    pub extra: Map<String, Value>,
    pub created_at: DbTime,
    pub updated_at: Option<DbTime>,
    pub revision: i64,
}

impl DeployTemplate {
    /// From the stored form.
    pub fn from_resource(r: Resource) -> DeployTemplate {
        DeployTemplate {
            uuid: r.uuid,
            name: r.name.unwrap_or_default(),
            steps: r
                .body
                .get("steps")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
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
        m.insert("steps".into(), Value::Array(self.steps.clone()));
        m.insert("extra".into(), Value::Object(self.extra.clone()));
        m
    }

    /// The stored form (for an update: the revision it was read at).
    pub fn to_resource(&self) -> Resource {
        Resource {
            kind: KIND,
            uuid: self.uuid,
            name: Some(self.name.clone()),
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

/// `strutils.mask_dict_password(args, "******")` (`ferric_core::mask`).
pub fn mask_secrets(args: &Map<String, Value>) -> Map<String, Value> {
    ferric_core::mask::mask_dict(args)
}

/// Steps as Ironic shows them (`convert_steps`, then `step_sanitize`):
/// `order` for runbook steps, `priority` otherwise; secrets in args masked.
pub fn render_steps(steps: &[Value]) -> Value {
    Value::Array(
        steps
            .iter()
            .map(|s| {
                let mut m = Map::new();
                for k in ["interface", "step"] {
                    m.insert(k.into(), s.get(k).cloned().unwrap_or(Value::Null));
                }
                let args = s
                    .get("args")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                m.insert("args".into(), Value::Object(mask_secrets(&args)));
                if let Some(p) = s.get("priority") {
                    m.insert("priority".into(), p.clone());
                } else if let Some(o) = s.get("order") {
                    m.insert("order".into(), o.clone());
                }
                Value::Object(m)
            })
            .collect(),
    )
}

/// The deploy template document.
pub fn render(t: &DeployTemplate, base: &BaseUrl) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("uuid".into(), json!(t.uuid));
    m.insert("created_at".into(), render::timestamp(t.created_at));
    m.insert(
        "updated_at".into(),
        t.updated_at.map_or(Value::Null, render::timestamp),
    );
    m.insert("name".into(), json!(t.name));
    m.insert("extra".into(), Value::Object(t.extra.clone()));
    m.insert(
        "links".into(),
        render::links(&base.0, &format!("deploy_templates/{}", t.uuid)),
    );
    m.insert("steps".into(), render_steps(&t.steps));
    m
}

/// The interfaces a deploy step may name, in Ironic's
/// `DEPLOYING_INTERFACE_PRIORITY` order (the order its messages list them).
pub const DEPLOY_STEP_INTERFACES: [&str; 7] = [
    "vendor",
    "power",
    "management",
    "firmware",
    "deploy",
    "bios",
    "raid",
];

/// A list of names as Python prints `['a', 'b']`.
fn py_list(names: &[&str]) -> String {
    format!(
        "[{}]",
        names
            .iter()
            .map(|n| format!("'{n}'"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// `required` then `additionalProperties` of a JSON object, jsonschema's
/// messages.
pub fn check_keys(
    m: &Map<String, Value>,
    required: &[&str],
    allowed: &[&str],
) -> Result<(), String> {
    if let Some(missing) = required.iter().find(|k| !m.contains_key(**k)) {
        return Err(format!("'{missing}' is a required property"));
    }
    let extra: Vec<String> = m
        .keys()
        .filter(|k| !allowed.contains(&k.as_str()))
        .map(|k| format!("'{k}'"))
        .collect();
    if !extra.is_empty() {
        let verb = if extra.len() == 1 { "was" } else { "were" };
        return Err(format!(
            "Additional properties are not allowed ({} {verb} unexpected)",
            extra.join(", ")
        ));
    }
    Ok(())
}

/// A step number (`priority` or `order`): a non-negative integer, or a
/// string of digits (Ironic's anyOf), as an integer.
pub fn step_number(v: &Value) -> Result<i64, String> {
    match v {
        Value::Number(n) => match n.as_i64() {
            Some(i) if i >= 0 => Ok(i),
            Some(i) => Err(format!(
                "{i} is not valid under any of the given schemas. Possible root cause: {i} is less than the minimum of 0"
            )),
            None => Err(format!(
                "{n} is not valid under any of the given schemas. Possible root cause: {n} is not of type 'integer'"
            )),
        },
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse::<i64>().map_err(|_| {
                format!("'{s}' is not valid under any of the given schemas")
            })
        }
        other => Err(format!(
            "{} is not valid under any of the given schemas",
            py_repr(other)
        )),
    }
}

/// One step against Ironic's `DEPLOY_STEP_SCHEMA` (or, with `order`, its
/// `RUNBOOK_STEP_SCHEMA`: `order` instead of `priority`, `args` optional),
/// normalised (`priority`/`order` an integer, `args` an object).
pub fn validate_step(v: &Value, interfaces: &[&str], order: bool) -> Result<Value, String> {
    let Value::Object(m) = v else {
        return Err(format!("{} is not of type 'object'", py_repr(v)));
    };
    let number = if order { "order" } else { "priority" };
    let required: &[&str] = if order {
        &["interface", "step", "order"]
    } else {
        &["interface", "step", "args", "priority"]
    };
    check_keys(m, required, &["interface", "step", "args", number])?;
    let interface = match &m["interface"] {
        Value::String(s) if interfaces.contains(&s.as_str()) => s.clone(),
        Value::String(s) => return Err(format!("'{s}' is not one of {}", py_list(interfaces))),
        other => return Err(format!("{} is not of type 'string'", py_repr(other))),
    };
    let step = match &m["step"] {
        Value::String(s) if s.is_empty() => return Err("'' should be non-empty".into()),
        Value::String(s) => {
            crate::extract::check_text("step", s).map_err(|e| e.message().to_string())?;
            s.clone()
        }
        other => return Err(format!("{} is not of type 'string'", py_repr(other))),
    };
    let args = match m.get("args") {
        None => Map::new(),
        Some(Value::Object(a)) => a.clone(),
        Some(other) => return Err(format!("{} is not of type 'object'", py_repr(other))),
    };
    resource::check_json_text("args", &Value::Object(args.clone()))
        .map_err(|e| e.message().to_string())?;
    let n = step_number(&m[number])?;
    let mut out = Map::new();
    out.insert("interface".into(), json!(interface));
    out.insert("step".into(), json!(step));
    out.insert("args".into(), Value::Object(args));
    out.insert(number.into(), json!(n));
    Ok(Value::Object(out))
}

/// Ironic's `TRAITS_SCHEMA` on a template name (jsonschema's messages).
pub fn check_trait_name(v: &Value) -> Result<String, String> {
    let Value::String(s) = v else {
        return Err(format!("{} is not of type 'string'", py_repr(v)));
    };
    if s.is_empty() {
        return Err("'' should be non-empty".into());
    }
    if s.chars().count() > 255 {
        return Err(format!("'{s}' is too long"));
    }
    if !ferric_core::node::is_valid_trait(s) {
        return Err(format!(
            "'{s}' is not valid under any of the given schemas. Possible root cause: '{s}' does not match '^CUSTOM_[A-Z0-9_]+$'"
        ));
    }
    Ok(s.clone())
}

const FIELDS: [&str; 5] = ["description", "extra", "name", "steps", "uuid"];
const PATCH_FIELDS: [&str; 4] = ["extra", "name", "steps", "description"];

/// A validated template document: uuid, name, steps, extra.
struct Validated {
    uuid: Option<Uuid>,
    name: String,
    steps: Vec<Value>,
    extra: Map<String, Value>,
}

/// Ironic's `TEMPLATE_VALIDATOR`: the schema (errors named after `what`:
/// `template` on create, `patch` on update), duplicate steps, the uuid.
fn validate(doc: &Map<String, Value>, what: &str) -> Result<Validated, ApiError> {
    let schema = |m: String| schema_error(what, m);
    check_keys(doc, &["steps", "name"], &FIELDS).map_err(schema)?;
    // Strong errors one level down first, then the name's anyOf (jsonschema's
    // best_match ranks a weak anyOf below them), then the steps' items.
    match doc.get("description") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.chars().count() > 255 => {
            return Err(schema(format!("'{s}' is too long")))
        }
        Some(Value::String(_)) => {}
        Some(other) => {
            return Err(schema(format!(
                "{} is not of type 'string', 'null'",
                py_repr(other)
            )))
        }
    }
    let extra = match doc.get("extra") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => {
            resource::check_json_text("extra", &Value::Object(m.clone()))?;
            m.clone()
        }
        Some(other) => {
            return Err(schema(format!(
                "{} is not of type 'object', 'null'",
                py_repr(other)
            )))
        }
    };
    let raw_steps = match &doc["steps"] {
        Value::Array(a) if a.is_empty() => return Err(schema("[] should be non-empty".into())),
        Value::Array(a) => a.clone(),
        other => return Err(schema(format!("{} is not of type 'array'", py_repr(other)))),
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
    let name = check_trait_name(&doc["name"]).map_err(schema)?;
    let steps = raw_steps
        .iter()
        .map(|s| validate_step(s, &DEPLOY_STEP_INTERFACES, false))
        .collect::<Result<Vec<_>, _>>()
        .map_err(schema)?;
    check_duplicate_steps(&steps)?;
    let uuid = uuid_raw
        .map(|u| resource::uuid_param("uuid", &u))
        .transpose()?;
    Ok(Validated {
        uuid,
        name,
        steps,
        extra,
    })
}

/// Ironic's duplicate-steps check of deploy templates (runbooks run it too,
/// message included): one step per (interface, step).
pub(crate) fn check_duplicate_steps(steps: &[Value]) -> Result<(), ApiError> {
    let mut seen: Vec<(&str, &str)> = Vec::new();
    let mut dups: Vec<String> = Vec::new();
    for s in steps {
        let key = (
            s["interface"].as_str().unwrap_or_default(),
            s["step"].as_str().unwrap_or_default(),
        );
        if !seen.contains(&key) {
            seen.push(key);
            continue;
        }
        let d = format!("interface: {}, step: {}", key.0, key.1);
        if !dups.contains(&d) {
            dups.push(d);
        }
    }
    if dups.is_empty() {
        return Ok(());
    }
    Err(ApiError::bad_request(format!(
        "Deploy template invalid: Duplicate deploy steps. A template cannot have multiple deploy steps with the same interface and step. Duplicates: {}.",
        dups.join("; ")
    )))
}

/// Ironic's messages for this kind's store errors.
fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::ResourceDuplicate {
            field: "name",
            value,
            ..
        } => ApiError::conflict_409(format!(
            "A deploy template with name {value} already exists."
        )),
        StoreError::ResourceDuplicate { value, .. } => ApiError::conflict_409(format!(
            "A deploy template with UUID {value} already exists."
        )),
        StoreError::ResourceNotFound { ident, .. } => {
            ApiError::not_found(format!("Deploy template {ident} could not be found."))
        }
        other => other.into(),
    }
}

/// `POST /v1/deploy_templates`.
pub async fn create(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    JsonBody(doc): JsonBody<Value>,
) -> Result<Response, ApiError> {
    gate(v, MIN_MINOR, false, "deploy templates")?;
    let Value::Object(doc) = doc else {
        return Err(schema_error(
            "template",
            format!("{} is not of type 'object'", py_repr(&doc)),
        ));
    };
    let req = validate(&doc, "template")?;
    let t = DeployTemplate {
        uuid: req.uuid.unwrap_or_else(Uuid::new_v4),
        name: req.name,
        steps: req.steps,
        extra: req.extra,
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
                uuid: Some(t.uuid),
                name: Some(t.name.clone()),
                body: t.body(),
                ..Default::default()
            },
        )
        .await
        .map_err(store_error)?;
    let t = DeployTemplate::from_resource(stored);
    Ok(resource::created(
        render(&t, &base),
        &format!("{}/v1/deploy_templates/{}", base.0, t.uuid),
    ))
}

/// List query parameters.
pub type ListQuery = resource::PagedQuery;

/// `GET /v1/deploy_templates` (`?detail=True` for every field).
pub async fn list(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    gate(v, MIN_MINOR, true, "deploy templates")?;
    let (detail, fields) = resource::list_view(v, false, q.detail.as_deref(), q.fields.as_deref())?;
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
        &["extra", "steps"],
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
        .await
        .map_err(store_error)?;
    let last = rows.last().map(|r| r.uuid);
    let wanted = resource::wanted(&fields, detail, &["uuid", "name"]);
    let probe = || DeployTemplate {
        uuid: Uuid::nil(),
        name: String::new(),
        steps: Vec::new(),
        extra: Map::new(),
        created_at: DbTime(0),
        updated_at: None,
        revision: 0,
    };
    if !detail {
        // Field names are checked even when nothing is listed.
        resource::select(render(&probe(), &base), &wanted)?;
    }
    let mut items = Vec::with_capacity(rows.len());
    for r in rows {
        let doc = render(&DeployTemplate::from_resource(r), &base);
        items.push(resource::shape(doc, detail, &wanted)?);
    }
    let body = resource::collection(
        "deploy_templates",
        items,
        last,
        &paging,
        &base,
        "deploy_templates",
        &[
            ("fields", q.fields.as_deref()),
            ("detail", q.detail.as_deref()),
        ],
    );
    Ok(Json(body).into_response())
}

/// `GET …/{ident}` query.
pub type ShowQuery = resource::ShowQuery;

/// A resource identifier as Ironic's `args.uuid_or_name` checks it:
/// `Expected UUID or name for <field>: <value>` otherwise.
pub fn uuid_or_name(field: &str, id: &str) -> Result<NodeIdent, ApiError> {
    if let Ok(u) = Uuid::parse_str(id) {
        return Ok(NodeIdent::Uuid(u));
    }
    if ferric_core::node::validate_name(id).is_err() {
        return Err(ApiError::bad_request(format!(
            "Expected UUID or name for {field}: {id}"
        )));
    }
    Ok(NodeIdent::Name(id.to_string()))
}

async fn find(st: &ApiState, id: &str) -> Result<DeployTemplate, ApiError> {
    let ident = uuid_or_name("template_ident", id)?;
    Ok(DeployTemplate::from_resource(
        st.tm
            .store()
            .get_resource(KIND, &ident)
            .await
            .map_err(store_error)?,
    ))
}

/// `GET /v1/deploy_templates/{template_ident}`.
pub async fn show(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ShowQuery>,
) -> Result<Response, ApiError> {
    gate(v, MIN_MINOR, true, "deploy templates")?;
    let fields = resource::requested_fields(q.fields.as_deref(), v)?;
    let t = find(&st, &id).await?;
    let doc = render(&t, &base);
    let doc = match &fields {
        Some(f) => resource::select(doc, f)?,
        None => doc,
    };
    Ok(Json(doc).into_response())
}

/// `PATCH /v1/deploy_templates/{template_ident}`: Ironic's patch rules,
/// conditional on the revision read.
pub async fn update(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiPath(id): ApiPath<String>,
    JsonBody(ops): JsonBody<Vec<PatchOp>>,
) -> Result<Response, ApiError> {
    gate(v, MIN_MINOR, false, "deploy templates")?;
    for op in &ops {
        let root = op
            .path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or("");
        if !PATCH_FIELDS.contains(&root) {
            return Err(ApiError::bad_request(format!(
                "Cannot patch {}. Only the following can be updated: {}",
                op.path,
                PATCH_FIELDS.join(", ")
            )));
        }
    }
    let current = find(&st, &id).await?;
    let mut doc = current.body();
    doc.insert("name".into(), json!(current.name));
    doc.insert("uuid".into(), json!(current.uuid));
    resource::apply_patch(&mut doc, &ops, &PATCH_FIELDS, |_| Value::Null)?;
    // A removed root field is gone (jsonpatch), not reset: a removed name
    // or steps is then "required", a removed extra is empty.
    doc.retain(|_, v| !v.is_null());
    let req = validate(&doc, "patch")?;
    let next = DeployTemplate {
        name: req.name,
        steps: req.steps,
        extra: req.extra,
        ..current.clone()
    };
    if next == current {
        return Ok(Json(render(&current, &base)).into_response());
    }
    let stored = st
        .tm
        .store()
        .update_resource(&next.to_resource())
        .await
        .map_err(store_error)?;
    Ok(Json(render(&DeployTemplate::from_resource(stored), &base)).into_response())
}

/// `DELETE /v1/deploy_templates/{template_ident}`.
pub async fn delete(
    State(st): State<ApiState>,
    v: Version,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    gate(v, MIN_MINOR, false, "deploy templates")?;
    let current = find(&st, &id).await?;
    st.tm
        .store()
        .delete_resource(KIND, current.uuid, Some(current.revision))
        .await
        .map_err(store_error)?;
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
                ("404", "No such deploy template, or API version below 1.55"),
                ("405", "API version below 1.55"),
                ("406", "Microversion not acceptable"),
                ("409", "Duplicate name or UUID, or changed concurrently"),
            ],
        )
    };
    let list_params = json!([
        crate::resource::openapi_limit_param(),
        {"name": "marker", "in": "query", "schema": {"type": "string", "format": "uuid"}},
        {"name": "sort_key", "in": "query", "schema": {"type": "string", "enum": ["id", "uuid", "created_at", "name"]}},
        {"name": "sort_dir", "in": "query", "schema": {"type": "string", "enum": ["asc", "desc"]}},
        {"name": "fields", "in": "query", "schema": {"type": "string"}},
        {"name": "detail", "in": "query", "schema": {"type": "boolean"}},
    ]);
    let ident =
        json!({"name": "ident", "in": "path", "required": true, "schema": {"type": "string"}});
    let step = json!({
        "type": "object",
        "required": ["interface", "step", "args", "priority"],
        "properties": {
            "interface": {"type": "string", "enum": DEPLOY_STEP_INTERFACES},
            "step": {"type": "string", "minLength": 1},
            "args": {"type": "object"},
            "priority": {"type": "integer", "minimum": 0}
        },
        "additionalProperties": false
    });
    let body = json!({"required": true, "content": {"application/json": {"schema": {
        "type": "object",
        "required": ["name", "steps"],
        "properties": {
            "uuid": {"type": ["string", "null"], "format": "uuid"},
            "name": {"type": "string", "pattern": "^CUSTOM_[A-Z0-9_]+$", "maxLength": 255},
            "description": {"type": ["string", "null"], "maxLength": 255},
            "extra": {"type": ["object", "null"]},
            "steps": {"type": "array", "minItems": 1, "items": step}
        },
        "additionalProperties": false
    }}}});
    let patch_body = json!({"required": true, "content": {"application/json": {"schema": {"type": "array", "items": {"type": "object"}}}}});
    let mut m = Map::new();
    m.insert("/v1/deploy_templates".into(), json!({
        "get": {"summary": "List deploy templates (1.55)", "parameters": list_params, "responses": common(json!({"200": ok("{deploy_templates, next?}")}))},
        "post": {"summary": "Create a deploy template (1.55)", "requestBody": body, "responses": common(json!({"201": ok("The deploy template")}))},
    }));
    m.insert("/v1/deploy_templates/{ident}".into(), json!({
        "get": {"summary": "Show a deploy template", "parameters": [ident, {"name": "fields", "in": "query", "schema": {"type": "string"}}], "responses": common(json!({"200": ok("The deploy template")}))},
        "patch": {"summary": "Update a deploy template (JSON Patch)", "parameters": [ident], "requestBody": patch_body, "responses": common(json!({"200": ok("The deploy template")}))},
        "delete": {"summary": "Delete a deploy template", "parameters": [ident], "responses": common(json!({"204": {"description": "Deleted"}}))},
    }));
    m
}

//! Runbooks (Ironic 39's `/v1/runbooks`, API 1.92): `POST/GET
//! /v1/runbooks`, `GET/PATCH/DELETE /v1/runbooks/{runbook_ident}` (UUID or
//! name), and from 1.112 `description`, `traits` and the
//! `/v1/runbooks/{runbook_ident}/traits` sub-resource.
//!
//! Stored as a [`ferric_store::Resource`] of kind `Runbook`: the name (a
//! trait name before 1.112, any URL-safe name from 1.112) is the unique
//! name column; steps (manual clean steps with an `order`), extra, public,
//! owner, disable_ramdisk, description and traits the body. No lock: a
//! write is conditional on the revision it read (trait writes retry).
//!
//! As in Ironic, traits are never set by POST or PATCH (only through the
//! sub-resource), and the clean/service verbs' `runbook` is matched by
//! name-as-trait below 1.112 and by runbook traits ∩ node traits from it.
//!
//! Not built: the `project` list filter, and project-scoped callers
//! (ferric's callers are all system-scoped, so `owner` and `public` are
//! taken as given).

use crate::deploy_templates::{
    check_keys, check_trait_name, gate, render_steps, uuid_or_name, validate_step,
    DEPLOY_STEP_INTERFACES,
};
use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery, BaseUrl, JsonBody};
use crate::patch::PatchOp;
use crate::render;
use crate::resource::py_repr;
use crate::resource::{self, schema_error};
use crate::version::Version;
use crate::ApiState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use ferric_core::DbTime;
use ferric_store::{NewResource, Resource, ResourceKind, ResourceQuery, ResourceSort, StoreError};
use serde_json::{json, Map, Value};
use uuid::Uuid;

const KIND: ResourceKind = ResourceKind::Runbook;

/// The first microversion with runbooks.
pub const MIN_MINOR: u32 = 92;

/// The first microversion with runbook traits, `description` and relaxed
/// names (Ironic's `MINOR_112_RUNBOOK_TRAITS`).
pub const TRAITS_MINOR: u32 = 112;

/// Ironic's `CLEANING_INTERFACE_PRIORITY` names: the same seven, in the
/// same order, as the deploy step interfaces.
const RUNBOOK_STEP_INTERFACES: [&str; 7] = DEPLOY_STEP_INTERFACES;

/// Routes of this module.
pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/runbooks", get(list).post(create))
        .route(
            "/v1/runbooks/{ident}",
            get(show).patch(update).delete(delete),
        )
        .route(
            "/v1/runbooks/{ident}/traits",
            get(traits_list).put(traits_set).delete(traits_remove_all),
        )
        .route(
            "/v1/runbooks/{ident}/traits/{trait}",
            put(traits_add).delete(traits_remove),
        )
}

/// A runbook, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct Runbook {
    pub uuid: Uuid,
    pub name: String,
    /// Normalised steps: `{interface, step, args, order}`.
    pub steps: Vec<Value>,
    pub extra: Map<String, Value>,
    pub public: bool,
    pub owner: Option<String>,
    pub disable_ramdisk: bool,
    /// 1.112.
    pub description: Option<String>,
    /// 1.112: the traits a node needs one of to run this runbook (sorted,
    /// no duplicates).
    pub traits: Vec<String>,
    pub created_at: DbTime,
    pub updated_at: Option<DbTime>,
    pub revision: i64,
}

impl Runbook {
    /// From the stored form.
    pub fn from_resource(r: Resource) -> Runbook {
        let b = &r.body;
        Runbook {
            uuid: r.uuid,
            name: r.name.clone().unwrap_or_default(),
            steps: b
                .get("steps")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            extra: b
                .get("extra")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            public: b.get("public").and_then(Value::as_bool).unwrap_or(false),
            owner: b.get("owner").and_then(Value::as_str).map(str::to_string),
            disable_ramdisk: b
                .get("disable_ramdisk")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            description: b
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_string),
            traits: b
                .get("traits")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
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
        m.insert("public".into(), json!(self.public));
        m.insert("owner".into(), json!(self.owner));
        m.insert("disable_ramdisk".into(), json!(self.disable_ramdisk));
        m.insert("description".into(), json!(self.description));
        m.insert("traits".into(), json!(self.traits));
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

/// The runbook document at `v` (`description` and `traits` from 1.112).
pub fn render(r: &Runbook, base: &BaseUrl, v: Version) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("uuid".into(), json!(r.uuid));
    m.insert("created_at".into(), render::timestamp(r.created_at));
    m.insert(
        "updated_at".into(),
        r.updated_at.map_or(Value::Null, render::timestamp),
    );
    m.insert("name".into(), json!(r.name));
    m.insert("extra".into(), Value::Object(r.extra.clone()));
    m.insert("public".into(), json!(r.public));
    m.insert("owner".into(), json!(r.owner));
    m.insert("disable_ramdisk".into(), json!(r.disable_ramdisk));
    m.insert(
        "links".into(),
        render::links(&base.0, &format!("runbooks/{}", r.uuid)),
    );
    m.insert("steps".into(), render_steps(&r.steps));
    if v.at_least(TRAITS_MINOR) {
        m.insert("description".into(), json!(r.description));
        m.insert("traits".into(), json!(r.traits));
    }
    m
}

const FIELDS: [&str; 7] = [
    "uuid",
    "name",
    "steps",
    "disable_ramdisk",
    "extra",
    "public",
    "owner",
];
/// `RUNBOOK_MUTATION_SCHEMA_V112`'s properties: no `traits` (those go
/// through the sub-resource only).
const FIELDS_V112: [&str; 8] = [
    "uuid",
    "name",
    "steps",
    "disable_ramdisk",
    "extra",
    "public",
    "owner",
    "description",
];
const PATCH_FIELDS: [&str; 6] = [
    "disable_ramdisk",
    "extra",
    "name",
    "owner",
    "public",
    "steps",
];
const PATCH_FIELDS_V112: [&str; 7] = [
    "disable_ramdisk",
    "extra",
    "name",
    "owner",
    "public",
    "steps",
    "description",
];

/// Ironic's `RUNBOOK_NAME_SCHEMA` pattern (1.112), as jsonschema quotes it.
const NAME_PATTERN_REPR: &str = r"^[A-Za-z0-9\\-._~]+$";

/// Ironic's `RUNBOOK_NAME_SCHEMA` (1.112): 1 to 255 RFC 3986 unreserved
/// characters.
fn check_relaxed_name(v: &Value) -> Result<String, String> {
    let Value::String(s) = v else {
        return Err(format!("{} is not of type 'string'", py_repr(v)));
    };
    if s.is_empty() {
        return Err("'' should be non-empty".into());
    }
    if s.chars().count() > 255 {
        return Err(format!("'{s}' is too long"));
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~'))
    {
        return Err(format!(
            "{} does not match '{NAME_PATTERN_REPR}'",
            py_repr(v)
        ));
    }
    Ok(s.clone())
}

struct Validated {
    uuid: Option<Uuid>,
    name: String,
    steps: Vec<Value>,
    extra: Map<String, Value>,
    public: bool,
    owner: Option<String>,
    disable_ramdisk: bool,
    description: Option<String>,
}

/// Which of Ironic's runbook schemas applies.
#[derive(Clone, Copy, PartialEq)]
enum Schema {
    /// `RUNBOOK_SCHEMA` (before 1.112): the name is a trait.
    Legacy,
    /// `RUNBOOK_MUTATION_SCHEMA_V112`: relaxed name, `description`.
    V112,
}

fn opt_bool(doc: &Map<String, Value>, field: &str) -> Result<Option<bool>, String> {
    match doc.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(format!(
            "{} is not of type 'boolean', 'null'",
            py_repr(other)
        )),
    }
}

/// Ironic's runbook validator (`RUNBOOK_SCHEMA` or, from 1.112 and for
/// every PATCH, `RUNBOOK_MUTATION_SCHEMA_V112`; duplicate steps, uuid);
/// schema errors are named after `what` (`runbook` or `patch`).
fn validate(doc: &Map<String, Value>, what: &str, which: Schema) -> Result<Validated, ApiError> {
    let schema = |m: String| schema_error(what, m);
    let allowed: &[&str] = match which {
        Schema::Legacy => &FIELDS,
        Schema::V112 => &FIELDS_V112,
    };
    check_keys(doc, &["steps", "name"], allowed).map_err(schema)?;
    let description = match doc.get("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.chars().count() > 255 => {
            return Err(schema(format!("'{s}' is too long")))
        }
        Some(Value::String(s)) => {
            crate::extract::check_text("description", s)?;
            Some(s.clone())
        }
        Some(other) => {
            return Err(schema(format!(
                "{} is not of type 'string', 'null'",
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
    let raw_steps = match &doc["steps"] {
        Value::Array(a) if a.is_empty() => return Err(schema("[] should be non-empty".into())),
        Value::Array(a) => a.clone(),
        other => return Err(schema(format!("{} is not of type 'array'", py_repr(other)))),
    };
    let disable_ramdisk = opt_bool(doc, "disable_ramdisk").map_err(schema)?;
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
    let public = opt_bool(doc, "public").map_err(schema)?;
    let owner = match doc.get("owner") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.chars().count() > 255 => {
            return Err(schema(format!("'{s}' is too long")))
        }
        Some(Value::String(s)) => {
            crate::extract::check_text("owner", s)?;
            Some(s.clone())
        }
        Some(other) => {
            return Err(schema(format!(
                "{} is not of type 'string', 'null'",
                py_repr(other)
            )))
        }
    };
    let name = match which {
        Schema::Legacy => check_trait_name(&doc["name"]),
        Schema::V112 => check_relaxed_name(&doc["name"]),
    }
    .map_err(schema)?;
    let steps = raw_steps
        .iter()
        .map(|s| validate_step(s, &RUNBOOK_STEP_INTERFACES, true))
        .collect::<Result<Vec<_>, _>>()
        .map_err(schema)?;
    // Ironic runs the deploy templates' duplicate check on runbooks too.
    crate::deploy_templates::check_duplicate_steps(&steps)?;
    let uuid = uuid_raw
        .map(|u| resource::uuid_param("uuid", &u))
        .transpose()?;
    Ok(Validated {
        uuid,
        name,
        steps,
        extra,
        public: public.unwrap_or(false),
        owner,
        disable_ramdisk: disable_ramdisk.unwrap_or(false),
        description,
    })
}

/// Ironic's messages for this kind's store errors.
fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::ResourceDuplicate {
            field: "name",
            value,
            ..
        } => ApiError::conflict_409(format!("A runbook with name {value} already exists.")),
        StoreError::ResourceDuplicate { value, .. } => {
            ApiError::conflict_409(format!("A runbook with UUID {value} already exists."))
        }
        StoreError::ResourceNotFound { ident, .. } => {
            ApiError::not_found(format!("Runbook {ident} could not be found."))
        }
        other => other.into(),
    }
}

/// A runbook by UUID or name (for the API and the clean/service verbs).
pub async fn find(st: &ApiState, id: &str) -> Result<Runbook, ApiError> {
    let ident = uuid_or_name("runbook_ident", id)?;
    Ok(Runbook::from_resource(
        st.tm
            .store()
            .get_resource(KIND, &ident)
            .await
            .map_err(store_error)?,
    ))
}

/// `POST /v1/runbooks`.
pub async fn create(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    JsonBody(doc): JsonBody<Value>,
) -> Result<Response, ApiError> {
    gate(v, MIN_MINOR, false, "runbooks")?;
    let Value::Object(doc) = doc else {
        return Err(schema_error(
            "runbook",
            format!("{} is not of type 'object'", py_repr(&doc)),
        ));
    };
    let which = if v.at_least(TRAITS_MINOR) {
        Schema::V112
    } else {
        Schema::Legacy
    };
    let req = validate(&doc, "runbook", which)?;
    let r = Runbook {
        uuid: req.uuid.unwrap_or_else(Uuid::new_v4),
        name: req.name,
        steps: req.steps,
        extra: req.extra,
        public: req.public,
        owner: req.owner,
        disable_ramdisk: req.disable_ramdisk,
        description: req.description,
        traits: Vec::new(),
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
                uuid: Some(r.uuid),
                name: Some(r.name.clone()),
                body: r.body(),
                ..Default::default()
            },
        )
        .await
        .map_err(store_error)?;
    let r = Runbook::from_resource(stored);
    Ok(resource::created(
        render(&r, &base, v),
        &format!("{}/v1/runbooks/{}", base.0, r.uuid),
    ))
}

/// List query parameters.
pub type ListQuery = resource::PagedQuery;

/// `GET /v1/runbooks` (`?detail=True` for every field).
pub async fn list(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    gate(v, MIN_MINOR, true, "runbooks")?;
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
        &["extra", "steps", "traits"],
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
    if !detail {
        let probe = Runbook::from_resource(Resource {
            kind: KIND,
            uuid: Uuid::nil(),
            name: None,
            node: None,
            parent: None,
            key: None,
            body: Map::new(),
            created_at: DbTime(0),
            updated_at: None,
            revision: 0,
        });
        resource::select(render(&probe, &base, v), &wanted)?;
    }
    let mut items = Vec::with_capacity(rows.len());
    for r in rows {
        let doc = render(&Runbook::from_resource(r), &base, v);
        items.push(resource::shape(doc, detail, &wanted)?);
    }
    let body = resource::collection(
        "runbooks",
        items,
        last,
        &paging,
        &base,
        "runbooks",
        &[
            ("fields", q.fields.as_deref()),
            ("detail", q.detail.as_deref()),
        ],
    );
    Ok(Json(body).into_response())
}

/// `GET …/{ident}` query.
pub type ShowQuery = resource::ShowQuery;

/// `GET /v1/runbooks/{runbook_ident}`.
pub async fn show(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ShowQuery>,
) -> Result<Response, ApiError> {
    gate(v, MIN_MINOR, true, "runbooks")?;
    let fields = resource::requested_fields(q.fields.as_deref(), v)?;
    let r = find(&st, &id).await?;
    let doc = render(&r, &base, v);
    let doc = match &fields {
        Some(f) => resource::select(doc, f)?,
        None => doc,
    };
    Ok(Json(doc).into_response())
}

/// `PATCH /v1/runbooks/{runbook_ident}`: Ironic's patch rules (a public
/// runbook has no owner; patching `public` clears the owner), conditional
/// on the revision read.
pub async fn update(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiPath(id): ApiPath<String>,
    JsonBody(ops): JsonBody<Vec<PatchOp>>,
) -> Result<Response, ApiError> {
    gate(v, MIN_MINOR, false, "runbooks")?;
    let patch_fields: &[&str] = if v.at_least(TRAITS_MINOR) {
        &PATCH_FIELDS_V112
    } else {
        &PATCH_FIELDS
    };
    for op in &ops {
        let root = op
            .path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or("");
        if !patch_fields.contains(&root) {
            return Err(ApiError::bad_request(format!(
                "Cannot patch {}. Only the following can be updated: {}",
                op.path,
                patch_fields.join(", ")
            )));
        }
    }
    let current = find(&st, &id).await?;
    let values = |path: &str| -> Vec<Value> {
        ops.iter()
            .filter(|o| o.path == path && o.op != "remove")
            .map(|o| o.value.clone().unwrap_or(Value::Null))
            .collect()
    };
    let owner = values("/owner");
    let public = values("/public");
    if !owner.is_empty() {
        let public_value = public.first().is_some_and(|p| p.as_bool() == Some(true));
        if (current.public && public.is_empty()) || public_value {
            let patch: Vec<Value> = ops
                .iter()
                .map(|o| json!({"op": o.op, "path": o.path, "value": o.value}))
                .collect();
            return Err(ApiError::bad_request(format!(
                "Couldn't apply patch '{}'. Reason: There cannot be an owner for a public runbook",
                py_repr(&Value::Array(patch))
            )));
        }
    }
    let mut doc = current.body();
    doc.remove("traits");
    doc.insert("name".into(), json!(current.name));
    doc.insert("uuid".into(), json!(current.uuid));
    if !public.is_empty() {
        doc.insert("owner".into(), Value::Null);
    }
    resource::apply_patch(&mut doc, &ops, patch_fields, |_| Value::Null)?;
    doc.retain(|k, v| !(v.is_null() && (k == "name" || k == "steps")));
    // Ironic validates every PATCH against the 1.112 mutation schema, so
    // a 1.112-style name stays patchable (and settable) at older versions.
    let req = validate(&doc, "patch", Schema::V112)?;
    let next = Runbook {
        name: req.name,
        steps: req.steps,
        extra: req.extra,
        public: req.public,
        owner: req.owner,
        disable_ramdisk: req.disable_ramdisk,
        description: req.description,
        ..current.clone()
    };
    if next == current {
        return Ok(Json(render(&current, &base, v)).into_response());
    }
    let stored = st
        .tm
        .store()
        .update_resource(&next.to_resource())
        .await
        .map_err(store_error)?;
    Ok(Json(render(&Runbook::from_resource(stored), &base, v)).into_response())
}

/// `DELETE /v1/runbooks/{runbook_ident}`.
pub async fn delete(
    State(st): State<ApiState>,
    v: Version,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    gate(v, MIN_MINOR, false, "runbooks")?;
    let current = find(&st, &id).await?;
    st.tm
        .store()
        .delete_resource(KIND, current.uuid, Some(current.revision))
        .await
        .map_err(store_error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The gates of `/v1/runbooks/{ident}/traits…`: Ironic's runbook gate
/// first (404 for GET, 405 otherwise below 1.92), then a 404 below 1.112.
fn traits_gate(v: Version, get: bool) -> Result<(), ApiError> {
    gate(v, MIN_MINOR, get, "runbooks")?;
    if v.at_least(TRAITS_MINOR) {
        Ok(())
    } else {
        Err(ApiError::not_found(
            "The API version does not allow runbook traits",
        ))
    }
}

const TRAITS_PUT_USAGE: &str = "A single runbook trait may be added via PUT /v1/runbooks/<runbook identifier>/traits/<trait> with no body, or all runbook traits may be replaced via PUT /v1/runbooks/<runbook identifier>/traits with the list of traits specified in the request body.";

/// How many times a trait write re-reads the runbook when another write
/// got in between (Ironic serialises them on the runbook's row).
const TRAIT_WRITE_ATTEMPTS: usize = 64;

/// Change the traits of runbook `id`: `change` gets the current list and
/// returns the new one; stored sorted without duplicates, conditional on
/// the revision read (re-read and re-applied when it moved).
async fn write_traits(
    st: &ApiState,
    id: &str,
    change: impl Fn(&[String]) -> Vec<String>,
) -> Result<(), ApiError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let current = find(st, id).await?;
        let mut traits = change(&current.traits);
        traits.sort();
        traits.dedup();
        if traits == current.traits {
            return Ok(());
        }
        let next = Runbook { traits, ..current };
        match st.tm.store().update_resource(&next.to_resource()).await {
            Ok(_) => return Ok(()),
            Err(StoreError::ResourceChanged { .. }) if attempt < TRAIT_WRITE_ATTEMPTS => {}
            Err(e) => return Err(store_error(e)),
        }
    }
}

/// `GET /v1/runbooks/{ident}/traits`.
async fn traits_list(
    State(st): State<ApiState>,
    v: Version,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    traits_gate(v, true)?;
    let r = find(&st, &id).await?;
    Ok(Json(json!({ "traits": r.traits })).into_response())
}

/// A body that is empty or JSON `null`.
fn no_body(body: &Bytes) -> Result<Option<Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let doc: Value = crate::extract::parse_json(body)?;
    Ok((!doc.is_null()).then_some(doc))
}

/// Ironic's `RUNBOOK_TRAITS_SCHEMA` on a PUT body, named `body`: the
/// traits to set, or `None` without a `traits` key.
fn traits_body(doc: &Value) -> Result<Option<Vec<String>>, ApiError> {
    let schema = |m: String| schema_error("body", m);
    let Value::Object(m) = doc else {
        return Err(schema(format!("{} is not of type 'object'", py_repr(doc))));
    };
    check_keys(m, &[], &["traits"]).map_err(schema)?;
    let Some(list) = m.get("traits") else {
        return Ok(None);
    };
    let Value::Array(items) = list else {
        return Err(schema(format!("{} is not of type 'array'", py_repr(list))));
    };
    items
        .iter()
        .map(check_trait_name)
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
        .map_err(schema)
}

/// `PUT /v1/runbooks/{ident}/traits` with `{"traits": [...]}`: replace
/// all.
async fn traits_set(
    State(st): State<ApiState>,
    v: Version,
    ApiPath(id): ApiPath<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    traits_gate(v, false)?;
    let traits = match no_body(&body)? {
        Some(doc) => traits_body(&doc)?,
        None => None,
    };
    let Some(traits) = traits else {
        find(&st, &id).await?;
        return Err(ApiError::bad_request(TRAITS_PUT_USAGE));
    };
    write_traits(&st, &id, |_| traits.clone()).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `PUT /v1/runbooks/{ident}/traits/{trait}`: add one (no body; already
/// there is fine).
async fn traits_add(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiPath((id, name)): ApiPath<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    traits_gate(v, false)?;
    check_trait_name(&Value::String(name.clone())).map_err(|m| schema_error("trait", m))?;
    let doc = no_body(&body)?;
    let listed = match &doc {
        Some(d) => traits_body(d)?.is_some(),
        None => false,
    };
    find(&st, &id).await?;
    if listed {
        return Err(ApiError::bad_request(TRAITS_PUT_USAGE));
    }
    if doc.is_some_and(|d| !matches!(&d, Value::Object(m) if m.is_empty())) {
        return Err(ApiError::bad_request(
            "No body should be provided when adding a trait",
        ));
    }
    let added = name.clone();
    write_traits(&st, &id, move |current| {
        let mut all = current.to_vec();
        all.push(added.clone());
        all
    })
    .await?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    if let Ok(location) =
        HeaderValue::from_str(&format!("{}/v1/runbooks/{id}/traits/{name}", base.0))
    {
        resp.headers_mut().insert(header::LOCATION, location);
    }
    Ok(resp)
}

/// `DELETE /v1/runbooks/{ident}/traits`: remove all.
async fn traits_remove_all(
    State(st): State<ApiState>,
    v: Version,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    traits_gate(v, false)?;
    write_traits(&st, &id, |_| Vec::new()).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /v1/runbooks/{ident}/traits/{trait}`: remove one; a trait the
/// runbook lacks is a no-op, as in Ironic.
async fn traits_remove(
    State(st): State<ApiState>,
    v: Version,
    ApiPath((id, name)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    traits_gate(v, false)?;
    write_traits(&st, &id, |current| {
        current.iter().filter(|t| **t != name).cloned().collect()
    })
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
                ("404", "No such runbook, or API version below 1.92"),
                ("405", "API version below 1.92"),
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
        "required": ["interface", "step", "order"],
        "properties": {
            "interface": {"type": "string", "enum": RUNBOOK_STEP_INTERFACES},
            "step": {"type": "string", "minLength": 1},
            "args": {"type": "object"},
            "order": {"type": "integer", "minimum": 0}
        },
        "additionalProperties": false
    });
    let body = json!({"required": true, "content": {"application/json": {"schema": {
        "type": "object",
        "required": ["name", "steps"],
        "properties": {
            "uuid": {"type": ["string", "null"], "format": "uuid"},
            "name": {"type": "string", "pattern": "^CUSTOM_[A-Z0-9_]+$", "maxLength": 255},
            "description": {"type": ["string", "null"], "maxLength": 255, "description": "1.112"},
            "steps": {"type": "array", "minItems": 1, "items": step},
            "disable_ramdisk": {"type": ["boolean", "null"]},
            "extra": {"type": ["object", "null"]},
            "public": {"type": ["boolean", "null"]},
            "owner": {"type": ["string", "null"], "maxLength": 255}
        },
        "additionalProperties": false
    }}}});
    let patch_body = json!({"required": true, "content": {"application/json": {"schema": {"type": "array", "items": {"type": "object"}}}}});
    let mut m = Map::new();
    m.insert("/v1/runbooks".into(), json!({
        "get": {"summary": "List runbooks (1.92)", "parameters": list_params, "responses": common(json!({"200": ok("{runbooks, next?}")}))},
        "post": {"summary": "Create a runbook (1.92)", "requestBody": body, "responses": common(json!({"201": ok("The runbook")}))},
    }));
    m.insert("/v1/runbooks/{ident}".into(), json!({
        "get": {"summary": "Show a runbook", "parameters": [ident, {"name": "fields", "in": "query", "schema": {"type": "string"}}], "responses": common(json!({"200": ok("The runbook")}))},
        "patch": {"summary": "Update a runbook (JSON Patch)", "parameters": [ident], "requestBody": patch_body, "responses": common(json!({"200": ok("The runbook")}))},
        "delete": {"summary": "Delete a runbook", "parameters": [ident], "responses": common(json!({"204": {"description": "Deleted"}}))},
    }));
    let trait_param = json!({"name": "trait", "in": "path", "required": true, "schema": {"type": "string", "pattern": "^CUSTOM_[A-Z0-9_]+$", "maxLength": 255}});
    let traits_body = json!({"required": true, "content": {"application/json": {"schema": {
        "type": "object",
        "required": ["traits"],
        "properties": {"traits": {"type": "array", "items": {"type": "string", "pattern": "^CUSTOM_[A-Z0-9_]+$", "maxLength": 255}}},
        "additionalProperties": false
    }}}});
    let no_content = json!({"204": {"description": "Done"}});
    m.insert("/v1/runbooks/{ident}/traits".into(), json!({
        "get": {"summary": "A runbook's traits (1.112)", "parameters": [ident], "responses": common(json!({"200": ok("{traits}")}))},
        "put": {"summary": "Replace a runbook's traits (1.112)", "parameters": [ident], "requestBody": traits_body, "responses": common(no_content.clone())},
        "delete": {"summary": "Remove all of a runbook's traits (1.112)", "parameters": [ident], "responses": common(no_content.clone())},
    }));
    m.insert("/v1/runbooks/{ident}/traits/{trait}".into(), json!({
        "put": {"summary": "Add a trait to a runbook (1.112)", "parameters": [ident, trait_param], "responses": common(no_content.clone())},
        "delete": {"summary": "Remove a trait from a runbook; absent is fine (1.112)", "parameters": [ident, trait_param], "responses": common(no_content)},
    }));
    m
}

/// The `runbook` argument of the provision verbs (Ironic's
/// `_handle_runbook`): below 1.112 the runbook's name must be one of the
/// node's traits; from 1.112 the runbook needs traits and the node one of
/// them. For `clean` its steps (by `order`) become the clean steps. Returns the clean steps to use. Servicing with a runbook is
/// refused: ferric's `service` verb takes no steps yet.
pub async fn provision_steps(
    st: &ApiState,
    v: Version,
    node: &ferric_store::NodeIdent,
    event: ferric_core::Event,
    runbook: &str,
    clean_steps: Option<Vec<Value>>,
) -> Result<Option<Vec<Value>>, ApiError> {
    use ferric_core::Event;
    if !v.at_least(MIN_MINOR) {
        return Err(ApiError::not_acceptable("Request not acceptable."));
    }
    if !matches!(event, Event::Clean | Event::Service) {
        return Err(ApiError::bad_request(
            "\"runbooks\" is only valid when setting target provision state to any of ['clean', 'service']",
        ));
    }
    let rb = find(st, runbook).await?;
    let n = st.tm.store().get_node(node).await?;
    if v.at_least(TRAITS_MINOR) {
        if rb.traits.is_empty() {
            return Err(ApiError::bad_request(format!(
                "Runbook {} has no traits configured. Please ask an administrator to add traits to the runbook.",
                rb.uuid
            )));
        }
        if !rb.traits.iter().any(|t| n.attrs.traits.contains(t)) {
            let listed: Vec<String> = rb.traits.iter().map(|t| format!("'{t}'")).collect();
            return Err(ApiError::bad_request(format!(
                "This runbook has not been approved for use on this node {}. The node does not have any of the runbook's traits [{}]. Please ask an administrator to add a matching trait to your node.",
                n.uuid,
                listed.join(", ")
            )));
        }
    } else if !n.attrs.traits.contains(&rb.name) {
        return Err(ApiError::bad_request(format!(
            "This runbook has not been approved for use on this node {}. Please ask an administrator to add it to your node traits.",
            n.uuid
        )));
    }
    if event == Event::Service {
        return Err(ApiError::bad_request(
            "Servicing with a runbook is not supported by ferric yet.",
        ));
    }
    if clean_steps.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::bad_request(
            "Please provide either \"clean_steps\" or a runbook, but not both.",
        ));
    }
    let mut steps = rb.steps.clone();
    steps.sort_by_key(|s| s.get("order").and_then(Value::as_i64).unwrap_or(0));
    Ok(Some(
        steps
            .into_iter()
            .map(|mut s| {
                if let Value::Object(m) = &mut s {
                    m.remove("order");
                }
                s
            })
            .collect(),
    ))
}

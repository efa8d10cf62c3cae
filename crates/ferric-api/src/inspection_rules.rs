//! Inspection rules (Ironic 39's `/v1/inspection_rules`, API 1.96):
//! `POST/GET /v1/inspection_rules`, `GET/PATCH/DELETE
//! /v1/inspection_rules/{uuid}`. Storage and validation only: running the
//! rules belongs to inspection.
//!
//! Stored as a [`ferric_store::Resource`] of kind `InspectionRule` (no
//! name, no key, no node): description, priority, sensitive, phase,
//! conditions and actions are the body. Validation is Ironic's request
//! schema, then `validate_rule` (phase, priority bounds, each operator's and
//! action's arguments against its signature). A sensitive rule's conditions
//! and actions are shown as null.
//!
//! Divergence: Ironic answers a rule whose operator arguments are missing
//! or unexpected with a 500 (its `InspectionRuleValidationFailure` has no
//! HTTP code); ferric answers 400 with the same message.

use crate::deploy_templates::{check_keys, gate};
use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery, BaseUrl, JsonBody};
use crate::patch::PatchOp;
use crate::render;
use crate::resource;
use crate::resource::py_repr;
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
use serde::Deserialize;
use serde_json::{json, Map, Value};
use uuid::Uuid;

const KIND: ResourceKind = ResourceKind::InspectionRule;

/// The first microversion with inspection rules.
pub const MIN_MINOR: u32 = 96;

/// Routes of this module.
pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/inspection_rules", get(list).post(create))
        .route(
            "/v1/inspection_rules/{id}",
            get(show).patch(update).delete(delete),
        )
}

/// Condition operators: (name, required args, optional args), from the
/// signatures of Ironic's operator plugins.
const OPERATORS: [(&str, &[&str], &[&str]); 11] = [
    ("eq", &["values"], &["force_strings"]),
    ("lt", &["values"], &["force_strings"]),
    ("gt", &["values"], &["force_strings"]),
    ("is-empty", &["value"], &[]),
    ("in-net", &["address", "subnet"], &[]),
    ("matches", &["value", "regex"], &[]),
    ("contains", &["value", "regex"], &[]),
    ("one-of", &["value"], &["values"]),
    ("is-none", &["value"], &[]),
    ("is-true", &["value"], &[]),
    ("is-false", &["value"], &[]),
];

/// Actions: (name, required args, optional args, needs plugin data).
const ACTIONS: [(&str, &[&str], &[&str], bool); 16] = [
    ("fail", &["msg"], &[], false),
    ("log", &["msg"], &["level"], false),
    ("set-attribute", &["path", "value"], &[], false),
    ("extend-attribute", &["path", "value"], &["unique"], false),
    ("del-attribute", &["path"], &[], false),
    ("set-capability", &["name", "value"], &[], false),
    ("unset-capability", &["name"], &[], false),
    ("add-trait", &["name"], &[], false),
    ("remove-trait", &["name"], &[], false),
    (
        "set-plugin-data",
        &["path", "value", "plugin_data"],
        &[],
        true,
    ),
    (
        "extend-plugin-data",
        &["path", "value", "plugin_data"],
        &["unique"],
        true,
    ),
    ("unset-plugin-data", &["path", "plugin_data"], &[], true),
    (
        "set-port-attribute",
        &["port_id", "path", "value"],
        &[],
        false,
    ),
    (
        "extend-port-attribute",
        &["port_id", "path", "value"],
        &["unique"],
        false,
    ),
    ("del-port-attribute", &["port_id", "path"], &[], false),
    (
        "api-call",
        &["url"],
        &["headers", "proxies", "timeout", "retries", "backoff_factor"],
        false,
    ),
];

/// An inspection rule, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct InspectionRule {
    pub uuid: Uuid,
    pub description: Option<String>,
    pub priority: i64,
    pub sensitive: bool,
    pub phase: String,
    pub conditions: Vec<Value>,
    pub actions: Vec<Value>,
    pub created_at: DbTime,
    pub updated_at: Option<DbTime>,
    pub revision: i64,
}

impl InspectionRule {
    /// From the stored form.
    pub fn from_resource(r: Resource) -> InspectionRule {
        let b = &r.body;
        let list = |k: &str| {
            b.get(k)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        InspectionRule {
            uuid: r.uuid,
            description: b
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_string),
            priority: b.get("priority").and_then(Value::as_i64).unwrap_or(0),
            sensitive: b.get("sensitive").and_then(Value::as_bool).unwrap_or(false),
            phase: b
                .get("phase")
                .and_then(Value::as_str)
                .unwrap_or("main")
                .to_string(),
            conditions: list("conditions"),
            actions: list("actions"),
            created_at: r.created_at,
            updated_at: r.updated_at,
            revision: r.revision,
        }
    }

    /// The request-schema fields (the PATCH document).
    fn document(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("uuid".into(), json!(self.uuid));
        m.insert("description".into(), json!(self.description));
        m.insert("priority".into(), json!(self.priority));
        m.insert("sensitive".into(), json!(self.sensitive));
        m.insert("phase".into(), json!(self.phase));
        m.insert("conditions".into(), Value::Array(self.conditions.clone()));
        m.insert("actions".into(), Value::Array(self.actions.clone()));
        m
    }

    fn body(&self) -> Map<String, Value> {
        let mut m = self.document();
        m.remove("uuid");
        m
    }

    fn to_resource(&self) -> Resource {
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

/// `{op, args}` plus `loop` (and, for conditions, `multiple`, default
/// `any`) when a loop is set: Ironic's `convert_conditions/actions`.
fn convert(items: &[Value], conditions: bool) -> Value {
    Value::Array(
        items
            .iter()
            .map(|i| {
                let mut m = Map::new();
                m.insert("op".into(), i.get("op").cloned().unwrap_or(Value::Null));
                m.insert("args".into(), i.get("args").cloned().unwrap_or(Value::Null));
                let has_loop = match i.get("loop") {
                    Some(Value::Array(a)) => !a.is_empty(),
                    Some(Value::Object(o)) => !o.is_empty(),
                    _ => false,
                };
                if has_loop {
                    m.insert("loop".into(), i["loop"].clone());
                    if conditions {
                        m.insert(
                            "multiple".into(),
                            i.get("multiple").cloned().unwrap_or(json!("any")),
                        );
                    }
                }
                Value::Object(m)
            })
            .collect(),
    )
}

/// The rule document; a sensitive rule's conditions and actions are null.
/// The links name `inspection/<uuid>`, as Ironic's do.
pub fn render(r: &InspectionRule, base: &BaseUrl) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("uuid".into(), json!(r.uuid));
    m.insert("created_at".into(), render::timestamp(r.created_at));
    m.insert(
        "updated_at".into(),
        r.updated_at.map_or(Value::Null, render::timestamp),
    );
    m.insert("description".into(), json!(r.description));
    m.insert("priority".into(), json!(r.priority));
    m.insert("sensitive".into(), json!(r.sensitive));
    m.insert("phase".into(), json!(r.phase));
    let (conditions, actions) = if r.sensitive {
        (Value::Null, Value::Null)
    } else {
        (convert(&r.conditions, true), convert(&r.actions, false))
    };
    m.insert("conditions".into(), conditions);
    m.insert("actions".into(), actions);
    m.insert(
        "links".into(),
        render::links(&base.0, &format!("inspection/{}", r.uuid)),
    );
    m
}

const FIELDS: [&str; 7] = [
    "actions",
    "conditions",
    "description",
    "phase",
    "priority",
    "sensitive",
    "uuid",
];

/// Ironic's `create_request_body` schema (messages prefixed `prefix`).
fn check_schema(doc: &Map<String, Value>, prefix: &str) -> Result<(), ApiError> {
    let err = |m: String| ApiError::bad_request(format!("{prefix}{m}"));
    check_keys(doc, &["actions"], &FIELDS).map_err(err)?;
    let list = |k: &str, min: usize| -> Result<Vec<Value>, String> {
        match doc.get(k) {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) if a.len() < min => Err("[] should be non-empty".into()),
            Some(Value::Array(a)) => Ok(a.clone()),
            Some(other) => Err(format!("{} is not of type 'array'", py_repr(other))),
        }
    };
    let actions = list("actions", 1).map_err(err)?;
    let conditions = list("conditions", 0).map_err(err)?;
    let items = |items: &[Value], ops: Vec<String>, conditions: bool| -> Result<(), String> {
        for i in items {
            let Value::Object(m) = i else {
                return Err(format!("{} is not of type 'object'", py_repr(i)));
            };
            for k in ["op", "args"] {
                if !m.contains_key(k) {
                    return Err(format!("'{k}' is a required property"));
                }
            }
            if !ops.iter().any(|o| Some(o.as_str()) == m["op"].as_str()) {
                let names: Vec<String> = ops.iter().map(|o| format!("'{o}'")).collect();
                return Err(format!(
                    "{} is not one of [{}]",
                    py_repr(&m["op"]),
                    names.join(", ")
                ));
            }
            for k in ["args", "loop"] {
                if let Some(v) = m.get(k) {
                    if !(v.is_array() || v.is_object()) {
                        return Err(format!("{} is not of type 'array', 'object'", py_repr(v)));
                    }
                }
            }
            if conditions {
                if let Some(v) = m.get("multiple") {
                    if !["any", "all", "first", "last"].iter().any(|o| v == o) {
                        return Err(format!(
                            "{} is not one of ['any', 'all', 'first', 'last']",
                            py_repr(v)
                        ));
                    }
                }
            }
            resource::check_json_text("args", i).map_err(|e| e.message().to_string())?;
        }
        Ok(())
    };
    let action_names: Vec<String> = ACTIONS.iter().map(|a| a.0.to_string()).collect();
    let mut op_names: Vec<String> = OPERATORS.iter().map(|o| o.0.to_string()).collect();
    op_names.extend(OPERATORS.iter().map(|o| format!("!{}", o.0)));
    match doc.get("description") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.chars().count() > 255 => {
            return Err(err(format!("'{s}' is too long")))
        }
        Some(Value::String(s)) => crate::extract::check_text("description", s)?,
        Some(other) => {
            return Err(err(format!(
                "{} is not of type 'string', 'null'",
                py_repr(other)
            )))
        }
    }
    match doc.get("phase") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.chars().count() > 16 => {
            return Err(err(format!("'{s}' is too long")))
        }
        Some(Value::String(_)) => {}
        Some(other) => {
            return Err(err(format!(
                "{} is not of type 'string', 'null'",
                py_repr(other)
            )))
        }
    }
    match doc.get("priority") {
        None => {}
        Some(Value::Number(n)) if n.as_i64().is_some_and(|p| p < 0) => {
            return Err(err(format!("{n} is less than the minimum of 0")));
        }
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => {}
        Some(other) => return Err(err(format!("{} is not of type 'integer'", py_repr(other)))),
    }
    match doc.get("sensitive") {
        None | Some(Value::Null) | Some(Value::Bool(_)) => {}
        Some(other) => {
            return Err(err(format!(
                "{} is not of type 'boolean', 'null'",
                py_repr(other)
            )))
        }
    }
    match doc.get("uuid") {
        None | Some(Value::Null) | Some(Value::String(_)) => {}
        Some(other) => {
            return Err(err(format!(
                "{} is not of type 'string', 'null'",
                py_repr(other)
            )))
        }
    }
    // Errors deeper in the document rank below the top-level ones
    // (jsonschema's best_match).
    items(&actions, action_names, false).map_err(err)?;
    items(&conditions, op_names, true).map_err(err)?;
    Ok(())
}

/// One operator's or action's arguments against its signature (Ironic's
/// `Base.validate`); `plugin_data` args get `{}` as Ironic adds it.
fn check_args(
    args: &mut Value,
    required: &[&str],
    optional: &[&str],
    plugin_data: bool,
) -> Result<(), String> {
    let fail = |m: String| format!("Inspection rule validation failed. Reason: {m}");
    let given: Vec<String> = match args {
        Value::Object(m) => {
            if plugin_data {
                m.insert("plugin_data".into(), json!({}));
            }
            m.keys().cloned().collect()
        }
        Value::Array(a) => {
            let mut n = a.len();
            if plugin_data {
                n += 1;
            }
            if n < required.len() {
                return Err(fail(format!(
                    "Not enough arguments provided. Missing: {}",
                    required[n..].join(", ")
                )));
            }
            required
                .iter()
                .chain(optional.iter())
                .take(n)
                .map(|s| s.to_string())
                .collect()
        }
        _ => return Err(fail("args must be either a list or dictionary".into())),
    };
    let missing: Vec<&str> = required
        .iter()
        .filter(|r| !given.iter().any(|g| g == *r))
        .copied()
        .collect();
    let unexpected: Vec<&str> = given
        .iter()
        .filter(|g| !required.contains(&g.as_str()) && !optional.contains(&g.as_str()))
        .map(String::as_str)
        .collect();
    let mut msg = Vec::new();
    if !missing.is_empty() {
        msg.push(format!(
            "missing required argument(s): {}",
            missing.join(", ")
        ));
    }
    if !unexpected.is_empty() {
        msg.push(format!("unexpected argument(s): {}", unexpected.join(", ")));
    }
    if msg.is_empty() {
        Ok(())
    } else {
        Err(fail(msg.join("; ")))
    }
}

/// Ironic's `validate_rule` after the schema: phase, priority, and every
/// condition's and action's arguments. Normalises `args` as Ironic does.
fn validate_rule(doc: &mut Map<String, Value>) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    let phase = doc.get("phase").cloned().unwrap_or(json!("main"));
    if phase != "main" {
        errors.push(format!(
            "Invalid phase: {}. Valid phases are: main",
            match &phase {
                Value::String(s) => s.clone(),
                other => py_repr(other),
            }
        ));
    }
    // A priority beyond i64 (the schema let any non-negative integer by)
    // is above the bound too.
    let priority = doc
        .get("priority")
        .map_or(0, |p| p.as_i64().unwrap_or(i64::MAX));
    if priority > 9999 {
        errors.push("Priority must be between 0 and 9999 for user-defined rules.".into());
    }
    if let Some(Value::Array(conditions)) = doc.get_mut("conditions") {
        for c in conditions.iter_mut() {
            let op = c["op"].as_str().unwrap_or_default();
            let op = op.strip_prefix('!').unwrap_or(op).to_string();
            if let Some((_, req, opt)) = OPERATORS.iter().find(|o| o.0 == op) {
                if let Some(args) = c.get_mut("args") {
                    check_args(args, req, opt, false).map_err(ApiError::bad_request)?;
                }
            }
        }
    }
    if let Some(Value::Array(actions)) = doc.get_mut("actions") {
        for a in actions.iter_mut() {
            let op = a["op"].as_str().unwrap_or_default().to_string();
            if let Some((_, req, opt, pd)) = ACTIONS.iter().find(|x| x.0 == op) {
                if let Some(args) = a.get_mut("args") {
                    check_args(args, req, opt, *pd).map_err(ApiError::bad_request)?;
                }
            }
        }
    }
    match errors.len() {
        0 => Ok(()),
        1 => Err(ApiError::bad_request(errors.remove(0))),
        _ => Err(ApiError::bad_request(format!(
            "Multiple validation errors occurred: {}",
            errors.join("; ")
        ))),
    }
}

/// A validated rule (uuid as given).
fn to_rule(doc: &Map<String, Value>) -> Result<(Option<Uuid>, InspectionRule), ApiError> {
    let uuid = match doc.get("uuid").and_then(Value::as_str) {
        Some(u) => Some(resource::uuid_param("uuid", u)?),
        None => None,
    };
    let list = |k: &str| {
        doc.get(k)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    Ok((
        uuid,
        InspectionRule {
            uuid: uuid.unwrap_or_else(Uuid::nil),
            description: doc
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_string),
            priority: doc.get("priority").and_then(Value::as_i64).unwrap_or(0),
            sensitive: doc
                .get("sensitive")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            phase: doc
                .get("phase")
                .and_then(Value::as_str)
                .unwrap_or("main")
                .to_string(),
            conditions: list("conditions"),
            actions: list("actions"),
            created_at: DbTime(0),
            updated_at: None,
            revision: 0,
        },
    ))
}

fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::ResourceDuplicate { value, .. } => {
            ApiError::conflict_409(format!("A rule with UUID {value} already exists."))
        }
        StoreError::ResourceNotFound { ident, .. } => {
            ApiError::not_found(format!("Rule {ident} could not be found."))
        }
        other => other.into(),
    }
}

/// `POST /v1/inspection_rules`.
pub async fn create(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    JsonBody(doc): JsonBody<Value>,
) -> Result<Response, ApiError> {
    gate(v, MIN_MINOR, false, "inspection rules")?;
    let Value::Object(mut doc) = doc else {
        return Err(ApiError::bad_request(format!(
            "Schema error: {} is not of type 'object'",
            py_repr(&doc)
        )));
    };
    check_schema(&doc, "Schema error: ")?;
    validate_rule(&mut doc)?;
    let (uuid, rule) = to_rule(&doc)?;
    let stored = st
        .tm
        .store()
        .create_resource(
            KIND,
            NewResource {
                uuid,
                body: rule.body(),
                ..Default::default()
            },
        )
        .await
        .map_err(store_error)?;
    let r = InspectionRule::from_resource(stored);
    Ok(resource::created(
        render(&r, &base),
        &format!("{}/v1/inspection_rules/{}", base.0, r.uuid),
    ))
}

/// List query parameters.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    marker: Option<String>,
    limit: Option<String>,
    sort_key: Option<String>,
    sort_dir: Option<String>,
    fields: Option<String>,
    detail: Option<String>,
    phase: Option<String>,
}

/// `GET /v1/inspection_rules` (`?detail=True`, `?phase=`).
pub async fn list(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    gate(v, MIN_MINOR, true, "inspection rules")?;
    let (detail, fields) = resource::list_view(v, false, q.detail.as_deref(), q.fields.as_deref())?;
    let paging = resource::paging(
        q.limit.as_deref(),
        q.marker.as_deref(),
        q.sort_key.as_deref(),
        q.sort_dir.as_deref(),
        &[
            ("uuid", ResourceSort::Uuid),
            ("created_at", ResourceSort::CreatedAt),
        ],
        &["actions", "conditions"],
    )?;
    // The phase filter is applied to the page read (rules are few; the
    // store has no column for it).
    let rows = st
        .tm
        .store()
        .list_resources(&ResourceQuery {
            marker: paging.marker,
            limit: if q.phase.is_some() {
                None
            } else {
                Some(paging.limit)
            },
            sort: paging.sort,
            descending: paging.descending,
            ..ResourceQuery::all(KIND)
        })
        .await
        .map_err(store_error)?;
    let mut rules: Vec<InspectionRule> = rows
        .into_iter()
        .map(InspectionRule::from_resource)
        .filter(|r| q.phase.as_ref().is_none_or(|p| &r.phase == p))
        .collect();
    rules.truncate(paging.limit as usize);
    let last = rules.last().map(|r| r.uuid);
    let wanted = resource::wanted(
        &fields,
        detail,
        &["uuid", "priority", "phase", "description"],
    );
    if !detail {
        let probe = InspectionRule::from_resource(Resource {
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
        resource::select(render(&probe, &base), &wanted)?;
    }
    let mut items = Vec::with_capacity(rules.len());
    for r in &rules {
        let doc = render(r, &base);
        items.push(resource::shape(doc, detail, &wanted)?);
    }
    let body = resource::collection(
        "inspection_rules",
        items,
        last,
        &paging,
        &base,
        "inspection_rules",
        &[
            ("phase", q.phase.as_deref()),
            ("fields", q.fields.as_deref()),
            ("detail", q.detail.as_deref()),
        ],
    );
    Ok(Json(body).into_response())
}

/// `GET …/{uuid}` query.
pub type ShowQuery = resource::ShowQuery;

async fn find(st: &ApiState, id: &str) -> Result<InspectionRule, ApiError> {
    let uuid = resource::uuid_param("inspection_rule_uuid", id)?;
    Ok(InspectionRule::from_resource(
        st.tm
            .store()
            .get_resource(KIND, &NodeIdent::Uuid(uuid))
            .await
            .map_err(store_error)?,
    ))
}

/// `GET /v1/inspection_rules/{uuid}`.
pub async fn show(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ShowQuery>,
) -> Result<Response, ApiError> {
    gate(v, MIN_MINOR, true, "inspection rules")?;
    let fields = resource::requested_fields(q.fields.as_deref(), v)?;
    let r = find(&st, &id).await?;
    let doc = render(&r, &base);
    let doc = match &fields {
        Some(f) => resource::select(doc, f)?,
        None => doc,
    };
    Ok(Json(doc).into_response())
}

/// `PATCH /v1/inspection_rules/{uuid}`: Ironic's rules (the sensitive flag
/// cannot be unset; the result validated again), conditional on the
/// revision read. The UUID cannot change.
pub async fn update(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiPath(id): ApiPath<String>,
    JsonBody(ops): JsonBody<Vec<PatchOp>>,
) -> Result<Response, ApiError> {
    gate(v, MIN_MINOR, false, "inspection rules")?;
    let current = find(&st, &id).await?;
    let sensitive = ops
        .iter()
        .find(|o| o.path == "/sensitive" && o.op != "remove")
        .map(|o| o.value.clone().unwrap_or(Value::Null));
    if let Some(s) = sensitive {
        let falsy = matches!(s, Value::Bool(false))
            || s == json!(0)
            || s == json!("")
            || s == json!([])
            || s == json!({});
        if falsy && current.sensitive {
            let patch: Vec<Value> = ops
                .iter()
                .map(|o| json!({"op": o.op, "path": o.path, "value": o.value}))
                .collect();
            return Err(ApiError::bad_request(format!(
                "Couldn't apply patch '{}'. Reason: Inspection rules cannot have the sensitive flag unset.",
                py_repr(&Value::Array(patch))
            )));
        }
    }
    let mut doc = current.document();
    resource::apply_patch(&mut doc, &ops, &FIELDS, |_| Value::Null)?;
    doc.retain(|k, v| !(v.is_null() && (k == "actions" || k == "conditions")));
    check_schema(&doc, "Schema error for patch: ")?;
    validate_rule(&mut doc)?;
    let (uuid, rule) = to_rule(&doc)?;
    if uuid != Some(current.uuid) {
        return Err(ApiError::bad_request(
            "An inspection rule's uuid cannot be changed.",
        ));
    }
    let next = InspectionRule {
        uuid: current.uuid,
        created_at: current.created_at,
        updated_at: current.updated_at,
        revision: current.revision,
        ..rule
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
    Ok(Json(render(&InspectionRule::from_resource(stored), &base)).into_response())
}

/// `DELETE /v1/inspection_rules/{uuid}`.
pub async fn delete(
    State(st): State<ApiState>,
    v: Version,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    gate(v, MIN_MINOR, false, "inspection rules")?;
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
                ("404", "No such rule, or API version below 1.96"),
                ("405", "API version below 1.96"),
                ("406", "Microversion not acceptable"),
                ("409", "Duplicate UUID, or changed concurrently"),
            ],
        )
    };
    let list_params = json!([
        {"name": "phase", "in": "query", "schema": {"type": "string"}},
        crate::resource::openapi_limit_param(),
        {"name": "marker", "in": "query", "schema": {"type": "string", "format": "uuid"}},
        {"name": "sort_key", "in": "query", "schema": {"type": "string", "enum": ["id", "uuid", "created_at"]}},
        {"name": "sort_dir", "in": "query", "schema": {"type": "string", "enum": ["asc", "desc"]}},
        {"name": "fields", "in": "query", "schema": {"type": "string"}},
        {"name": "detail", "in": "query", "schema": {"type": "boolean"}},
    ]);
    let id = json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}});
    let action_ops: Vec<&str> = ACTIONS.iter().map(|a| a.0).collect();
    let mut condition_ops: Vec<String> = OPERATORS.iter().map(|o| o.0.to_string()).collect();
    condition_ops.extend(OPERATORS.iter().map(|o| format!("!{}", o.0)));
    let body = json!({"required": true, "content": {"application/json": {"schema": {
        "type": "object",
        "required": ["actions"],
        "properties": {
            "actions": {"type": "array", "minItems": 1, "items": {"type": "object", "required": ["op", "args"], "properties": {
                "op": {"enum": action_ops}, "args": {"type": ["array", "object"]}, "loop": {"type": ["array", "object"]}}}},
            "conditions": {"type": "array", "items": {"type": "object", "required": ["op", "args"], "properties": {
                "op": {"enum": condition_ops}, "args": {"type": ["array", "object"]},
                "multiple": {"enum": ["any", "all", "first", "last"]}, "loop": {"type": ["array", "object"]}}}},
            "description": {"type": ["string", "null"], "maxLength": 255},
            "phase": {"type": ["string", "null"], "enum": ["main", null]},
            "priority": {"type": "integer", "minimum": 0, "maximum": 9999},
            "sensitive": {"type": ["boolean", "null"]},
            "uuid": {"type": ["string", "null"], "format": "uuid"}
        },
        "additionalProperties": false
    }}}});
    let patch_body = json!({"required": true, "content": {"application/json": {"schema": {"type": "array", "items": {"type": "object"}}}}});
    let mut m = Map::new();
    m.insert("/v1/inspection_rules".into(), json!({
        "get": {"summary": "List inspection rules (1.96)", "parameters": list_params, "responses": common(json!({"200": ok("{inspection_rules, next?}")}))},
        "post": {"summary": "Create an inspection rule (1.96)", "requestBody": body, "responses": common(json!({"201": ok("The rule")}))},
    }));
    m.insert("/v1/inspection_rules/{id}".into(), json!({
        "get": {"summary": "Show an inspection rule", "parameters": [id, {"name": "fields", "in": "query", "schema": {"type": "string"}}], "responses": common(json!({"200": ok("The rule")}))},
        "patch": {"summary": "Update an inspection rule (JSON Patch)", "parameters": [id], "requestBody": patch_body, "responses": common(json!({"200": ok("The rule")}))},
        "delete": {"summary": "Delete an inspection rule", "parameters": [id], "responses": common(json!({"204": {"description": "Deleted"}}))},
    }));
    m
}

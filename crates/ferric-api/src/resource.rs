//! What the handlers of Ironic's secondary resources (ports, portgroups,
//! chassis; later allocations, deploy templates, ...) share: identifiers,
//! list parameters and pages, JSON Patch on a document, Ironic's schema
//! error wording, and MAC addresses.

use crate::error::ApiError;
use crate::extract::{check_text, BaseUrl};
use crate::patch::PatchOp;
use crate::version::Version;
use ferric_store::{NodeChange, NodeIdent, Resource, ResourceChange, ResourceKind, ResourceSort};
use serde_json::{json, Map, Value};
use uuid::Uuid;

/// Ironic's `[api]max_limit`.
pub const MAX_LIMIT: u32 = crate::nodes::MAX_LIMIT;

/// `Schema error for <what>: <message>` (Ironic's jsonschema wrapper).
pub fn schema_error(what: &str, message: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("Schema error for {what}: {message}"))
}

/// A MAC address as Ironic accepts it (six colon-separated hex pairs, any
/// case), normalised to lower case; `field` names it in the error.
pub fn mac_address(field: &str, value: &str) -> Result<String, ApiError> {
    let lower = value.to_ascii_lowercase();
    let parts: Vec<&str> = lower.split(':').collect();
    let valid = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    if !valid {
        return Err(ApiError::bad_request(format!(
            "Expected valid MAC address for {field}: {value}"
        )));
    }
    Ok(lower)
}

/// A UUID parameter (`args.uuid`).
pub fn uuid_param(field: &str, value: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(value)
        .map_err(|_| ApiError::bad_request(format!("Expected UUID for {field}: {value}")))
}

/// Ironic's `string_list` query argument: comma-separated, trimmed, empty
/// items dropped.
pub fn string_list(value: Option<&str>) -> Option<Vec<String>> {
    value.map(|s| {
        s.split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(str::to_string)
            .collect()
    })
}

/// Ironic's `uuid_or_name` argument check: a UUID or a logical name.
pub fn is_name_or_uuid(value: &str) -> bool {
    Uuid::parse_str(value).is_ok() || ferric_core::node::validate_name(value).is_ok()
}

/// A resource path identifier: a UUID, or a name.
pub fn ident(value: &str) -> NodeIdent {
    NodeIdent::parse(value)
}

/// Typed access to a request document's fields with Ironic's schema errors.
pub struct Doc<'a> {
    pub what: &'static str,
    pub map: &'a Map<String, Value>,
}

impl Doc<'_> {
    /// Refuse fields outside `allowed` (`additionalProperties: false`).
    pub fn only(&self, allowed: &[&str]) -> Result<(), ApiError> {
        let extra: Vec<String> = self
            .map
            .keys()
            .filter(|k| !allowed.contains(&k.as_str()))
            .map(|k| format!("'{k}'"))
            .collect();
        if extra.is_empty() {
            return Ok(());
        }
        let verb = if extra.len() == 1 { "was" } else { "were" };
        Err(schema_error(
            self.what,
            format!(
                "Additional properties are not allowed ({} {verb} unexpected)",
                extra.join(", ")
            ),
        ))
    }

    /// An optional string of at most `max` characters (null = absent).
    pub fn opt_str(&self, field: &str, max: Option<usize>) -> Result<Option<String>, ApiError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => {
                check_text(field, s)?;
                if let Some(m) = max {
                    if s.chars().count() > m {
                        return Err(schema_error(self.what, format!("'{s}' is too long")));
                    }
                }
                Ok(Some(s.clone()))
            }
            Some(other) => Err(schema_error(
                self.what,
                format!("{other} is not of type 'string', 'null'"),
            )),
        }
    }

    /// An optional object (null = absent), at most `MAX_DICT_DEPTH` deep.
    pub fn opt_object(&self, field: &str) -> Result<Option<Map<String, Value>>, ApiError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(m)) => {
                check_json_text(field, &Value::Object(m.clone()))?;
                Ok(Some(m.clone()))
            }
            Some(other) => Err(schema_error(
                self.what,
                format!("{other} is not of type 'object', 'null'"),
            )),
        }
    }

    /// An optional boolean, also as a string (`args.boolean`).
    pub fn opt_bool(&self, field: &str) -> Result<Option<bool>, ApiError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) => crate::nodes::parse_bool(field, s).map(Some),
            Some(other) => Err(schema_error(
                self.what,
                format!("{other} is not of type 'string', 'boolean', 'null'"),
            )),
        }
    }
}

/// Refuse NUL characters anywhere in a JSON value (PostgreSQL text cannot
/// hold them) and documents nested deeper than Ironic's limit.
pub fn check_json_text(field: &str, value: &Value) -> Result<(), ApiError> {
    if ferric_core::node::json_depth(value) > ferric_core::node::MAX_DICT_DEPTH {
        return Err(ApiError::bad_request(format!(
            "Invalid value for {field}: it is nested too deeply."
        )));
    }
    if value.to_string().contains("\\u0000") {
        return Err(ApiError::bad_request(format!(
            "Invalid value for {field}: it must not contain a NUL character."
        )));
    }
    Ok(())
}

/// Apply JSON Patch `ops` (add, replace, remove) to `doc`, Ironic's way:
/// only `allowed` root fields may be named; `add` of an unknown root field
/// is refused; removing a root field resets it to `default(field)`.
pub fn apply_patch(
    doc: &mut Map<String, Value>,
    ops: &[PatchOp],
    allowed: &[&str],
    default: impl Fn(&str) -> Value,
) -> Result<(), ApiError> {
    for op in ops {
        let segments: Vec<String> = op
            .path
            .strip_prefix('/')
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "Invalid patch path \"{}\": it must start with /.",
                    op.path
                ))
            })?
            .split('/')
            .map(|s| s.replace("~1", "/").replace("~0", "~"))
            .collect();
        let root = segments[0].as_str();
        if !allowed.contains(&root) {
            return Err(ApiError::bad_request(format!(
                "Cannot patch {}. Only the following can be updated: {}",
                op.path,
                allowed.join(", ")
            )));
        }
        let fail = |reason: &str| {
            ApiError::bad_request(format!(
                "Couldn't apply patch '{}'. Reason: {reason}",
                json!({"op": op.op, "path": op.path, "value": op.value})
            ))
        };
        match op.op.as_str() {
            "add" | "replace" => {
                let value = op
                    .value
                    .clone()
                    .ok_or_else(|| fail("'value' is a required property"))?;
                if op.op == "add" && segments.len() == 1 && !doc.contains_key(root) {
                    return Err(ApiError::bad_request(format!(
                        "Adding a new attribute ({}) to the root of the resource is not allowed",
                        op.path
                    )));
                }
                let (last, parents) = segments.split_last().ok_or_else(|| fail("empty path"))?;
                let mut target: &mut Map<String, Value> = doc;
                for seg in parents {
                    target = match target.get_mut(seg.as_str()) {
                        Some(Value::Object(m)) => m,
                        Some(Value::Null) | None => {
                            return Err(fail(&format!(
                                "can't replace a non-existent object '{seg}'"
                            )))
                        }
                        Some(_) => return Err(fail(&format!("'{seg}' is not an object"))),
                    };
                }
                if op.op == "replace" && !target.contains_key(last.as_str()) {
                    return Err(fail(&format!(
                        "can't replace a non-existent object '{last}'"
                    )));
                }
                target.insert(last.clone(), value);
            }
            "remove" => {
                if segments.len() == 1 {
                    if !doc.contains_key(root) {
                        return Err(fail(&format!(
                            "can't remove a non-existent object '{root}'"
                        )));
                    }
                    doc.insert(root.to_string(), default(root));
                    continue;
                }
                let (last, parents) = segments.split_last().ok_or_else(|| fail("empty path"))?;
                let mut target: &mut Map<String, Value> = doc;
                for seg in parents {
                    target = match target.get_mut(seg.as_str()) {
                        Some(Value::Object(m)) => m,
                        _ => {
                            return Err(fail(&format!(
                                "can't remove a non-existent object '{seg}'"
                            )))
                        }
                    };
                }
                if target.remove(last.as_str()).is_none() {
                    return Err(fail(&format!(
                        "can't remove a non-existent object '{last}'"
                    )));
                }
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "Invalid patch operation \"{other}\": add, replace or remove expected."
                )))
            }
        }
    }
    Ok(())
}

/// The root fields a patch names.
pub fn patched_roots(ops: &[PatchOp]) -> Vec<String> {
    ops.iter()
        .map(|op| {
            op.path
                .trim_start_matches('/')
                .split('/')
                .next()
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

/// The common list parameters, parsed.
#[derive(Debug, Clone)]
pub struct Paging {
    pub limit: u32,
    pub marker: Option<Uuid>,
    pub sort: ResourceSort,
    pub descending: bool,
    /// As given, for the `next` link.
    pub sort_key: Option<String>,
    pub sort_dir: Option<String>,
}

/// Parse limit, marker, sort_key (`keys` maps the API's names onto the
/// store's sorts; absent = `id`, creation order) and sort_dir.
pub fn paging(
    limit: Option<&str>,
    marker: Option<&str>,
    sort_key: Option<&str>,
    sort_dir: Option<&str>,
    keys: &[(&str, ResourceSort)],
    unsortable: &[&str],
) -> Result<Paging, ApiError> {
    let limit = parse_limit(limit)?;
    let marker = marker.map(|m| uuid_param("marker", m)).transpose()?;
    let sort = match sort_key {
        None | Some("id") => ResourceSort::CreatedAt,
        Some(k) if unsortable.contains(&k) => {
            return Err(ApiError::bad_request(format!(
                "The sort_key value {k} is an invalid field for sorting"
            )))
        }
        Some(k) => keys
            .iter()
            .find(|(name, _)| *name == k)
            .map(|(_, s)| *s)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "The sort_key value \"{k}\" is not supported; supported: id, {}.",
                    keys.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                ))
            })?,
    };
    let descending = match sort_dir.map(str::to_ascii_lowercase).as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(d) => {
            return Err(ApiError::bad_request(format!(
                "Invalid sort direction: {d}. Acceptable values are 'asc' or 'desc'"
            )))
        }
    };
    Ok(Paging {
        limit,
        marker,
        sort,
        descending,
        sort_key: sort_key.map(str::to_string),
        sort_dir: sort_dir.map(str::to_string),
    })
}

/// The `limit` of every paged Ironic list, as Ironic 39 reads it
/// (`args.integer`, then `api_utils.validate_limit`): absent is
/// [`MAX_LIMIT`]; text Python's `int()` refuses is "Expected an integer for
/// limit: …"; zero or less is "Limit must be positive"; anything larger than
/// [`MAX_LIMIT`] (however many digits) is clamped to it.
pub fn parse_limit(limit: Option<&str>) -> Result<u32, ApiError> {
    let Some(raw) = limit else {
        return Ok(MAX_LIMIT);
    };
    let text = raw.trim();
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    // Python's int() also takes `_` between digits ("1_000").
    let well_formed = !digits.is_empty()
        && !digits.starts_with('_')
        && !digits.ends_with('_')
        && !digits.contains("__")
        && digits.bytes().all(|b| b.is_ascii_digit() || b == b'_');
    if !well_formed {
        return Err(ApiError::bad_request(format!(
            "Expected an integer for limit: {raw}"
        )));
    }
    let zero = digits.bytes().all(|b| b == b'0' || b == b'_');
    if negative || zero {
        return Err(ApiError::bad_request("Limit must be positive"));
    }
    // Positive: compare by value without overflowing (leading zeros and
    // underscores do not count).
    let significant: String = digits
        .chars()
        .filter(|c| *c != '_')
        .skip_while(|c| *c == '0')
        .collect();
    Ok(match significant.parse::<u32>() {
        Ok(n) => n.min(MAX_LIMIT),
        // More digits than u32 holds: larger than MAX_LIMIT.
        Err(_) => MAX_LIMIT,
    })
}

/// Percent-encode a query value.
pub fn encode(s: &str) -> String {
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

/// A collection body `{<item_name>: items, next?}`: `next` when the page is
/// full, continuing after `last`.
pub fn collection(
    item_name: &str,
    items: Vec<Value>,
    last: Option<Uuid>,
    paging: &Paging,
    base: &BaseUrl,
    path: &str,
    params: &[(&str, Option<&str>)],
) -> Value {
    let full = items.len() as u32 >= paging.limit;
    let mut body = json!({ item_name: items });
    if let (true, Some(last)) = (full, last) {
        let mut q = vec![format!("limit={}", paging.limit), format!("marker={last}")];
        for (k, v) in params.iter().copied().chain([
            ("sort_key", paging.sort_key.as_deref()),
            ("sort_dir", paging.sort_dir.as_deref()),
        ]) {
            if let Some(v) = v {
                q.push(format!("{k}={}", encode(v)));
            }
        }
        body["next"] = json!(format!("{}/v1/{path}?{}", base.0, q.join("&")));
    }
    body
}

/// How a list answers, from its URL and its `detail` / `fields` parameters:
/// `(every field?, the requested fields)`. A `/detail` URL takes neither
/// parameter; `?detail=` needs 1.43 (Ironic's allow_detail_query) and
/// excludes `fields`; `fields` needs 1.8.
pub(crate) fn list_view(
    v: Version,
    detail_path: bool,
    detail: Option<&str>,
    fields: Option<&str>,
) -> Result<(bool, Option<Vec<String>>), ApiError> {
    if detail_path && (fields.is_some() || detail.is_some()) {
        return Err(ApiError::bad_request(
            "The detail and fields parameters are not accepted by a /detail list.",
        ));
    }
    let detail = match detail {
        Some(d) => {
            if !v.at_least(43) {
                return Err(ApiError::not_acceptable("Request not acceptable."));
            }
            crate::nodes::parse_bool("detail", d)?
        }
        None => detail_path,
    };
    let fields = requested_fields(fields, v)?;
    if detail && fields.is_some() {
        return Err(ApiError::bad_request(
            "Can not specify ?detail=True and fields in the same request.",
        ));
    }
    Ok((detail, fields))
}

/// Fields of a `fields` parameter, 406 when the version is below 1.8.
pub fn requested_fields(fields: Option<&str>, v: Version) -> Result<Option<Vec<String>>, ApiError> {
    let Some(f) = fields else { return Ok(None) };
    if !v.at_least(8) {
        return Err(ApiError::not_acceptable("Request not acceptable."));
    }
    Ok(Some(
        f.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
    ))
}

/// Keep `fields` (and links) of `doc`; a field `doc` lacks is a 400.
pub fn select(doc: Map<String, Value>, fields: &[String]) -> Result<Map<String, Value>, ApiError> {
    let invalid: Vec<&str> = fields
        .iter()
        .filter(|f| !doc.contains_key(f.as_str()))
        .map(String::as_str)
        .collect();
    if !invalid.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Field(s) \"{}\" are not valid",
            invalid.join(", ")
        )));
    }
    Ok(crate::render::select(doc, fields))
}

/// The kinds a change-feed request asks for.
#[derive(Debug, Clone)]
pub struct FeedKinds {
    nodes: bool,
    kinds: Vec<ResourceKind>,
    /// The request named kinds: every entry then carries `resource`.
    pub explicit: bool,
}

impl FeedKinds {
    /// Whether entry `c` is wanted.
    pub fn wants(&self, c: &NodeChange) -> bool {
        match &c.resource {
            None => self.nodes,
            Some(r) => self.kinds.contains(&r.kind),
        }
    }
}

/// Parse the feed's `resource` parameter (absent: nodes only).
pub fn feed_kinds(param: Option<&str>) -> Result<FeedKinds, ApiError> {
    let Some(p) = param else {
        return Ok(FeedKinds {
            nodes: true,
            kinds: Vec::new(),
            explicit: false,
        });
    };
    let mut out = FeedKinds {
        nodes: false,
        kinds: Vec::new(),
        explicit: true,
    };
    for k in p.split(',').map(str::trim).filter(|k| !k.is_empty()) {
        match k {
            "all" => {
                out.nodes = true;
                out.kinds = ResourceKind::ALL.to_vec();
            }
            "node" => out.nodes = true,
            other => match ResourceKind::parse(other) {
                Some(kind) => out.kinds.push(kind),
                None => {
                    return Err(ApiError::bad_request(format!(
                        "Invalid resource \"{other}\": expected node, {} or all.",
                        ResourceKind::ALL.map(|k| k.as_str()).join(", ")
                    )))
                }
            },
        }
    }
    // `resource=` (or only commas) names no kind: a feed of nothing, whose
    // long poll could only wait out its timeout (found by the fuzzer).
    if !out.nodes && out.kinds.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Invalid resource \"{p}\": expected node, {} or all.",
            ResourceKind::ALL.map(|k| k.as_str()).join(", ")
        )));
    }
    Ok(out)
}

/// A resource's change-feed entry: revision, uuid, kind, at, `resource`
/// (its kind), `node_uuid` (its node, if any) and the document under the
/// kind's name (null for deletions).
pub fn feed_entry(c: &NodeChange, r: &ResourceChange, base: &BaseUrl, v: Version) -> Value {
    let doc = r
        .snapshot
        .as_ref()
        .map_or(Value::Null, |res| render_resource(res, base, v));
    json!({
        "revision": c.revision,
        "uuid": c.node,
        "kind": c.kind,
        "at": crate::render::timestamp(c.at),
        "resource": r.kind,
        "node_uuid": r.snapshot.as_ref().and_then(|s| s.node),
        r.kind.as_str(): doc,
    })
}

/// A stored resource as its API document at `v`.
pub fn render_resource(r: &Resource, base: &BaseUrl, v: Version) -> Value {
    let rendered = match r.kind {
        ResourceKind::Port => {
            crate::ports::Port::from_resource(r.clone()).map(|p| crate::ports::render(&p, base, v))
        }
        ResourceKind::Portgroup => crate::portgroups::Portgroup::from_resource(r.clone())
            .map(|p| crate::portgroups::render(&p, base, v)),
        ResourceKind::Chassis => Ok(crate::chassis::render(
            &crate::chassis::Chassis::from_resource(r.clone()),
            base,
        )),
        ResourceKind::DeployTemplate => Ok(crate::deploy_templates::render(
            &crate::deploy_templates::DeployTemplate::from_resource(r.clone()),
            base,
        )),
        ResourceKind::Runbook => Ok(crate::runbooks::render(
            &crate::runbooks::Runbook::from_resource(r.clone()),
            base,
            v,
        )),
        ResourceKind::VolumeConnector => {
            crate::volume::Volume::from_resource(crate::volume::Vol::Connector, r.clone())
                .map(|d| crate::volume::render(&d, base))
        }
        ResourceKind::VolumeTarget => {
            crate::volume::Volume::from_resource(crate::volume::Vol::Target, r.clone())
                .map(|d| crate::volume::render(&d, base))
        }
        ResourceKind::InspectionRule => Ok(crate::inspection_rules::render(
            &crate::inspection_rules::InspectionRule::from_resource(r.clone()),
            base,
        )),
        ResourceKind::Allocation => Ok(crate::allocations::render(
            &ferric_conductor::allocation::Allocation::from_resource(r.clone()),
            base,
            v,
        )),
    };
    rendered.map_or(Value::Null, Value::Object)
}

/// `201 Created` with the new object's document and its `Location`.
pub(crate) fn created(doc: impl serde::Serialize, location: &str) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut resp = (axum::http::StatusCode::CREATED, axum::Json(doc)).into_response();
    if let Ok(loc) = axum::http::HeaderValue::from_str(location) {
        resp.headers_mut().insert(axum::http::header::LOCATION, loc);
    }
    resp
}

/// Python's `repr` of a JSON value, as Ironic's and jsonschema's messages print
/// it.
pub(crate) fn py_repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("'{s}'"),
        Value::Array(a) => format!("[{}]", a.iter().map(py_repr).collect::<Vec<_>>().join(", ")),
        Value::Object(o) => format!(
            "{{{}}}",
            o.iter()
                .map(|(k, v)| format!("'{k}': {}", py_repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The fields a list shows: the requested ones, else every one with
/// `detail` (empty: no selection), else the kind's `summary` fields.
pub(crate) fn wanted(fields: &Option<Vec<String>>, detail: bool, summary: &[&str]) -> Vec<String> {
    match (fields, detail) {
        (Some(f), _) => f.clone(),
        (None, true) => Vec::new(),
        (None, false) => summary.iter().map(|s| s.to_string()).collect(),
    }
}

/// One list item: the whole document with `detail`, else the `wanted`
/// fields of it.
pub(crate) fn shape(
    doc: Map<String, Value>,
    detail: bool,
    wanted: &[String],
) -> Result<Value, ApiError> {
    Ok(Value::Object(if detail {
        doc
    } else {
        select(doc, wanted)?
    }))
}

/// The query of a show (`GET .../{ident}`): only `fields`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShowQuery {
    pub(crate) fields: Option<String>,
}

/// The query of a plain paged list (no filters of its own).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagedQuery {
    pub(crate) marker: Option<String>,
    pub(crate) limit: Option<String>,
    pub(crate) sort_key: Option<String>,
    pub(crate) sort_dir: Option<String>,
    pub(crate) fields: Option<String>,
    pub(crate) detail: Option<String>,
}

/// The `limit` query parameter of every paged list, as `/openapi.json`
/// documents it ([`parse_limit`]): Ironic refuses zero and less, and clamps
/// a larger value to its `max_limit` instead of refusing it, so the schema
/// has a minimum and no maximum.
pub(crate) fn openapi_limit_param() -> serde_json::Value {
    serde_json::json!({
        "name": "limit",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1},
        "description": format!("Page size, at least 1; more than {MAX_LIMIT} gives {MAX_LIMIT} (Ironic's max_limit)"),
    })
}

/// Building blocks of the `/openapi.json` fragments each module contributes
/// (`openapi_paths`).
pub(crate) mod oas {
    use serde_json::{json, Value};

    /// A response with Ironic's error body.
    pub(crate) fn err(description: &str) -> Value {
        json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
    }

    /// A response with a JSON object.
    pub(crate) fn ok(description: &str) -> Value {
        json!({"description": description, "content": {"application/json": {"schema": {"type": "object"}}}})
    }

    /// The responses `extra`, plus an error response for each (status,
    /// description) of `errors` that `extra` does not give itself.
    pub(crate) fn with_errors(extra: Value, errors: &[(&str, &str)]) -> Value {
        let mut m = extra.as_object().cloned().unwrap_or_default();
        for (status, description) in errors {
            m.entry(status.to_string())
                .or_insert_with(|| err(description));
        }
        Value::Object(m)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn macs_are_validated_and_lower_cased() {
        assert_eq!(
            mac_address("address", "52:54:00:AB:cd:0F").unwrap(),
            "52:54:00:ab:cd:0f"
        );
        for bad in [
            "52-54-00-ab-cd-0f",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:0g",
            "",
            "5254.00ab.cd0f",
        ] {
            let e = mac_address("address", bad).unwrap_err();
            assert_eq!(
                e.message(),
                format!("Expected valid MAC address for address: {bad}")
            );
        }
    }

    #[test]
    fn patch_follows_ironics_rules() {
        let mut doc = json!({"extra": {"a": 1}, "name": "x", "address": "m"})
            .as_object()
            .unwrap()
            .clone();
        let op = |op: &str, path: &str, value: Option<Value>| PatchOp {
            op: op.into(),
            path: path.into(),
            value,
            from: None,
        };
        apply_patch(
            &mut doc,
            &[
                op("add", "/extra/b", Some(json!(2))),
                op("remove", "/name", None),
            ],
            &["extra", "name"],
            |_| Value::Null,
        )
        .unwrap();
        assert_eq!(doc["extra"], json!({"a": 1, "b": 2}));
        assert_eq!(doc["name"], Value::Null);
        let e = apply_patch(
            &mut doc,
            &[op("replace", "/uuid", Some(json!(1)))],
            &["extra"],
            |_| Value::Null,
        )
        .unwrap_err();
        assert_eq!(
            e.message(),
            "Cannot patch /uuid. Only the following can be updated: extra"
        );
        let e = apply_patch(
            &mut doc,
            &[op("add", "/foo", Some(json!(1)))],
            &["foo"],
            |_| Value::Null,
        )
        .unwrap_err();
        assert!(e.message().starts_with("Adding a new attribute (/foo)"));
        assert!(apply_patch(
            &mut doc,
            &[op("remove", "/extra/zz", None)],
            &["extra"],
            |_| Value::Null
        )
        .is_err());
    }
}

//! A node's traits (`/v1/nodes/{ident}/traits`, 1.37), the shards
//! (`/v1/shards`, 1.82) and a node's children (`/v1/nodes/{ident}/children`,
//! 1.83). Trait writes go through the node's exclusive lock like every
//! other node write.

use crate::error::ApiError;
use crate::extract::ApiPath;
use crate::nodes::{node_ident, release};
use crate::version::Version;
use crate::ApiState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use ferric_core::node::{is_valid_trait, MAX_TRAITS_PER_NODE};
use ferric_store::{NodeIdent, NodeQuery};
use serde_json::{json, Map, Value};

/// The routes of this module.
pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route(
            "/v1/nodes/{ident}/traits",
            get(list).put(set_all).delete(remove_all),
        )
        .route(
            "/v1/nodes/{ident}/traits/{trait}",
            put(add_one).delete(remove_one),
        )
        .route("/v1/nodes/{ident}/children", get(children))
        .route("/v1/shards", get(shards))
}

/// Ironic answers a sub-resource newer than the request with a plain 404.
fn gate(v: Version, minor: u32, message: &str) -> Result<(), ApiError> {
    if v.at_least(minor) {
        Ok(())
    } else {
        Err(ApiError::not_found(message))
    }
}

const NOT_FOUND: &str = "The resource could not be found.";

const PUT_USAGE: &str = "A single node trait may be added via PUT /v1/nodes/<node identifier>/traits/<trait> with no body, or all node traits may be replaced via PUT /v1/nodes/<node identifier>/traits with the list of traits specified in the request body.";

fn check_trait(name: &str) -> Result<(), ApiError> {
    if is_valid_trait(name) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "Invalid trait '{name}': a trait is CUSTOM_ followed by capital letters, digits and _, or a standard trait name (at most 255 characters)."
        )))
    }
}

/// `GET /v1/nodes/{ident}/traits`.
async fn list(
    State(st): State<ApiState>,
    v: Version,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    gate(v, 37, NOT_FOUND)?;
    let node = st.tm.store().get_node(&node_ident(&id, v)?).await?;
    Ok(Json(json!({ "traits": node.attrs.traits })).into_response())
}

/// Change the traits of `ident` under its exclusive lock: `change` gets
/// the current list and returns the new one (or refuses).
async fn write_traits(
    st: &ApiState,
    ident: NodeIdent,
    change: impl FnOnce(&[String], uuid::Uuid) -> Result<Vec<String>, ApiError>,
) -> Result<(), ApiError> {
    let mut task = st
        .tm
        .acquire(ident)
        .purpose("node traits update")
        .retry(st.retry)
        .exclusive()
        .await?;
    let outcome = async {
        let uuid = task.node().uuid;
        let mut traits = change(&task.node().attrs.traits, uuid)?;
        traits.sort();
        traits.dedup();
        if traits.len() > MAX_TRAITS_PER_NODE {
            return Err(ApiError::bad_request(format!(
                "Could not modify traits for node {uuid} as it would exceed the maximum number of traits per node ({} vs. {MAX_TRAITS_PER_NODE})",
                traits.len()
            )));
        }
        if traits != task.node().attrs.traits {
            task.node_mut().attrs.traits = traits;
            task.save().await?;
        }
        Ok(())
    }
    .await;
    release(task).await;
    outcome
}

/// `PUT /v1/nodes/{ident}/traits` with `{"traits": [...]}`: replace all.
async fn set_all(
    State(st): State<ApiState>,
    v: Version,
    ApiPath(id): ApiPath<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    gate(v, 37, NOT_FOUND)?;
    let ident = node_ident(&id, v)?;
    let doc: Map<String, Value> = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        crate::extract::parse_json(&body)?
    };
    if let Some(extra) = doc.keys().find(|k| *k != "traits") {
        return Err(ApiError::bad_request(format!(
            "Additional properties are not allowed ('{extra}' was unexpected)"
        )));
    }
    let Some(list) = doc.get("traits") else {
        return Err(ApiError::bad_request(PUT_USAGE));
    };
    let Value::Array(items) = list else {
        return Err(ApiError::bad_request(format!(
            "Invalid traits {list}: a list of trait names is expected."
        )));
    };
    let mut traits = Vec::with_capacity(items.len());
    for item in items {
        let Value::String(name) = item else {
            return Err(ApiError::bad_request(format!(
                "Invalid trait {item}: a string is expected."
            )));
        };
        check_trait(name)?;
        traits.push(name.clone());
    }
    write_traits(&st, ident, |_, _| Ok(traits)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `PUT /v1/nodes/{ident}/traits/{trait}`: add one (no body).
async fn add_one(
    State(st): State<ApiState>,
    v: Version,
    ApiPath((id, name)): ApiPath<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    gate(v, 37, NOT_FOUND)?;
    let ident = node_ident(&id, v)?;
    check_trait(&name)?;
    if !body.iter().all(u8::is_ascii_whitespace) {
        let doc: Value = crate::extract::parse_json(&body)?;
        if !matches!(&doc, Value::Object(m) if m.is_empty()) && !doc.is_null() {
            return Err(ApiError::bad_request(
                "No body should be provided when adding a trait",
            ));
        }
    }
    let added = name.clone();
    write_traits(&st, ident, move |current, _| {
        let mut all = current.to_vec();
        all.push(added);
        Ok(all)
    })
    .await?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/nodes/{id}/traits/{name}")) {
        resp.headers_mut().insert(header::LOCATION, location);
    }
    Ok(resp)
}

/// `DELETE /v1/nodes/{ident}/traits`: remove all.
async fn remove_all(
    State(st): State<ApiState>,
    v: Version,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    gate(v, 37, NOT_FOUND)?;
    let ident = node_ident(&id, v)?;
    write_traits(&st, ident, |_, _| Ok(Vec::new())).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /v1/nodes/{ident}/traits/{trait}`: 404 when the node lacks it.
async fn remove_one(
    State(st): State<ApiState>,
    v: Version,
    ApiPath((id, name)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    gate(v, 37, NOT_FOUND)?;
    let ident = node_ident(&id, v)?;
    write_traits(&st, ident, |current, uuid| {
        if !current.contains(&name) {
            return Err(ApiError::not_found(format!(
                "Node {uuid} doesn't have a trait '{name}'"
            )));
        }
        Ok(current.iter().filter(|t| **t != name).cloned().collect())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /v1/nodes/{ident}/children` (1.83): the UUIDs of its child nodes.
async fn children(
    State(st): State<ApiState>,
    v: Version,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    gate(v, 83, NOT_FOUND)?;
    let parent = st.tm.store().get_node(&node_ident(&id, v)?).await?;
    let page = st
        .tm
        .store()
        .list_nodes(&NodeQuery {
            parent_node: Some(parent.uuid),
            ..Default::default()
        })
        .await?;
    let uuids: Vec<String> = page.nodes.iter().map(|n| n.uuid.to_string()).collect();
    Ok(Json(json!({ "children": uuids })).into_response())
}

/// `GET /v1/shards` (1.82): every shard with its node count, most nodes
/// first; nodes without a shard count as "None", as in Ironic.
async fn shards(State(st): State<ApiState>, v: Version) -> Result<Response, ApiError> {
    gate(v, 82, "The API version does not allow shards")?;
    let counts = st.tm.store().shard_counts().await?;
    let shards: Vec<Value> = counts
        .into_iter()
        .map(|(name, count)| json!({"name": name.unwrap_or_else(|| "None".into()), "count": count}))
        .collect();
    Ok(Json(json!({ "shards": shards })).into_response())
}

/// The OpenAPI paths of this module.
pub(crate) fn openapi_paths() -> Map<String, Value> {
    let ident = json!({"name": "ident", "in": "path", "required": true, "description": "Node UUID or name", "schema": {"type": "string"}});
    let name =
        json!({"name": "trait", "in": "path", "required": true, "schema": {"type": "string"}});
    let err = crate::resource::oas::err;
    let ok = crate::resource::oas::ok;
    let none = json!({"description": "Done"});
    let common = |mut extra: Value| {
        if let Some(e) = extra.as_object_mut() {
            for (k, v) in [
                ("400", err("Invalid trait or body")),
                ("401", err("Credentials required")),
                (
                    "404",
                    err("No such node or trait, or the version is too old"),
                ),
                (
                    "409",
                    err("Node locked by another operation (with Retry-After)"),
                ),
                ("503", err("No free conductor worker (with Retry-After)")),
            ] {
                e.entry(k).or_insert(v);
            }
        }
        extra
    };
    let mut paths = Map::new();
    paths.insert(
        "/v1/nodes/{ident}/traits".into(),
        json!({
            "parameters": [ident.clone()],
            "get": {"summary": "A node's traits (1.37)", "responses": common(json!({"200": ok("{traits}")}))},
            "put": {"summary": "Replace all traits: {traits: [...]} (1.37)", "requestBody": {"required": true, "content": {"application/json": {"schema": {
                "type": "object",
                "required": ["traits"],
                "properties": {"traits": {"type": "array", "items": {"type": "string"}}},
                "additionalProperties": false,
            }}}}, "responses": common(json!({"204": none.clone()}))},
            "delete": {"summary": "Remove all traits (1.37)", "responses": common(json!({"204": none.clone()}))},
        }),
    );
    paths.insert(
        "/v1/nodes/{ident}/traits/{trait}".into(),
        json!({
            "parameters": [ident.clone(), name],
            "put": {"summary": "Add one trait, no body (1.37)", "responses": common(json!({"204": none.clone()}))},
            "delete": {"summary": "Remove one trait (1.37)", "responses": common(json!({"204": none}))},
        }),
    );
    paths.insert(
        "/v1/nodes/{ident}/children".into(),
        json!({"parameters": [ident], "get": {"summary": "UUIDs of the node's child nodes (1.83)", "responses": common(json!({"200": ok("{children}")}))}}),
    );
    paths.insert(
        "/v1/shards".into(),
        json!({"get": {"summary": "Shards with their node counts (1.82)", "responses": common(json!({"200": ok("{shards: [{name, count}]}")}))}}),
    );
    paths
}

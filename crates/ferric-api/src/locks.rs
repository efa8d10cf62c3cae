//! `POST /v1/nodes/{ident}/lock/release` — a ferric extension (Ironic has no
//! such call): the operator's `ferric lock release` performed by a running
//! conductor, so that the node's failure notification goes to this
//! process's configured sinks and `/metrics` counts the recovery.
//!
//! Body: `{"force": bool, "reason": "text", "actor": "who"}`. Without
//! `force` a lock whose holder is alive is refused (409); `force` needs a
//! `reason`. The release is the same conditional take-over as stale-lock
//! recovery (`cluster::recover_lock`) and is written to the audit trail;
//! the actor recorded is the authenticated basic-auth user when there is
//! one, then the client's own `actor` text, then "api".
//! Like every non-public path, it needs the API's credentials.

use crate::error::ApiError;
use crate::extract::{check_text, ApiPath, JsonBody};
use crate::nodes::node_ident;
use crate::version::Version;
use crate::ApiState;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferric_conductor::cluster::{recover_lock, Cause};
use serde::Deserialize;
use serde_json::json;

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseBody {
    #[serde(default)]
    force: bool,
    reason: Option<String>,
    actor: Option<String>,
}

/// `POST /v1/nodes/{ident}/lock/release`.
pub async fn release(
    State(st): State<ApiState>,
    v: Version,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<ReleaseBody>,
) -> Result<Response, ApiError> {
    if let Some(r) = &body.reason {
        check_text("reason", r)?;
    }
    if let Some(a) = &body.actor {
        check_text("actor", a)?;
    }
    let reason = body.reason.filter(|r| !r.trim().is_empty());
    if body.force && reason.is_none() {
        return Err(ApiError::bad_request(
            "force needs a reason: it is recorded in the audit trail.",
        ));
    }
    let store = st.tm.store();
    let node = store.get_node(&node_ident(&id, v)?).await?;
    let view = store.lock_view(node.uuid).await?;
    let Some(holder) = view.holder.clone() else {
        return Err(ApiError::conflict(format!(
            "Node {id} is not locked; nothing to release."
        )));
    };
    let alive = view.holder_online == Some(true);
    if alive && !body.force {
        return Err(ApiError::conflict(format!(
            "Refusing to release the lock of node {id}: its holder {holder} is alive (purpose: {}). \
             It releases the lock itself when its work ends; to take it anyway use force with a reason.",
            view.purpose.as_deref().unwrap_or("unspecified")
        )));
    }
    let user = crate::auth::basic_user(&headers);
    let actor = match (user, body.actor) {
        (Some(u), Some(a)) => format!("{u} ({a})"),
        (Some(u), None) => u,
        (None, Some(a)) => a,
        (None, None) => "api".to_string(),
    };
    let reason = reason.unwrap_or_else(|| format!("holder {holder} is offline"));
    let cause = Cause::Operator {
        actor: actor.clone(),
        reason: reason.clone(),
        forced: alive,
    };
    if !recover_lock(&st.tm, &view, cause).await? {
        return Err(ApiError::conflict(format!(
            "The lock of node {id} changed while releasing it; look again."
        )));
    }
    let after = store.get_node(&node.uuid.into()).await?;
    Ok(Json(json!({
        "node_uuid": node.uuid,
        "previous_holder": holder,
        "previous_epoch": view.epoch,
        "holder_was_alive": alive,
        "forced": alive,
        "actor": actor,
        "reason": reason,
        "released_by": st.tm.host(),
        "provision_state": after.provision_state.to_string(),
        "reservation": after.reservation.map(|r| r.holder),
    }))
    .into_response())
}

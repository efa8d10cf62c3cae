//! The ramdisk agent's call-back: `POST /v1/heartbeat/{node}` (SPEC §10;
//! reference ironic.md §2.11).
//!
//! The handler checks the request (version-gated fields, a callback URL),
//! reads the node and hands it to the conductor's
//! [`Provisioner::heartbeat`](ferric_conductor::provision::Provisioner::heartbeat),
//! which continues a node waiting for its agent in the background (see
//! `ferric_conductor::provision::agent` for the protocol and where the
//! continuation runs). It answers 202 at once, as Ironic does; heartbeats in
//! a state where no call-back is expected are accepted and ignored.

use crate::error::ApiError;
use crate::extract::{ApiPath, JsonBody};
use crate::nodes::node_ident;
use crate::version::Version;
use crate::ApiState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ferric_conductor::provision::agent::{AgentCallback, Heartbeat};
use serde::Deserialize;
use tracing::info;

/// `POST /v1/heartbeat/{node}` body (ironic-python-agent's fields).
#[derive(Debug, Deserialize)]
pub struct HeartbeatBody {
    /// Where the agent listens (recorded in logs).
    pub callback_url: String,
    /// API 1.36+.
    #[serde(default)]
    pub agent_version: Option<String>,
    /// API 1.62+; not checked yet (no agent tokens).
    #[serde(default)]
    pub agent_token: Option<String>,
    /// API 1.68+.
    #[serde(default)]
    pub agent_verify_ca: Option<String>,
    /// API 1.72+.
    #[serde(default)]
    pub agent_status: Option<String>,
    /// API 1.72+.
    #[serde(default)]
    pub agent_status_message: Option<String>,
}

/// `POST /v1/heartbeat/{node_ident}` (API 1.22+): 202, empty body.
pub async fn heartbeat(
    State(st): State<ApiState>,
    v: Version,
    ApiPath(id): ApiPath<String>,
    JsonBody(body): JsonBody<HeartbeatBody>,
) -> Result<Response, ApiError> {
    if !v.at_least(22) {
        return Err(ApiError::not_found("The resource could not be found."));
    }
    for (given, min, field) in [
        (body.agent_version.is_some(), 36, "agent_version"),
        (body.agent_token.is_some(), 62, "agent_token"),
        (body.agent_verify_ca.is_some(), 68, "agent_verify_ca"),
        (
            body.agent_status.is_some() || body.agent_status_message.is_some(),
            72,
            "agent_status",
        ),
    ] {
        if given && !v.at_least(min) {
            return Err(ApiError::bad_request(format!(
                "Field \"{field}\" needs API version 1.{min} or later; this request used {v}."
            )));
        }
    }
    if body.callback_url.trim().is_empty() {
        return Err(ApiError::bad_request(
            "Invalid input for field/attribute callback_url: a URL is required.",
        ));
    }
    let node = st.tm.store().get_node(&node_ident(&id, v)?).await?;
    let agent_version = body.agent_version.as_deref().unwrap_or("unknown");
    let callback = AgentCallback {
        callback_url: body.callback_url.clone(),
        agent_version: body.agent_version.clone(),
        agent_verify_ca: body.agent_verify_ca.clone(),
        agent_status: body.agent_status.clone(),
        agent_status_message: body.agent_status_message.clone(),
    };
    if st.prov.heartbeat(&node, callback) == Heartbeat::Continuing {
        let owner = st.owners().await.owner(&node).map(str::to_string);
        info!(node_uuid = %node.uuid, state = %node.provision_state, callback_url = %body.callback_url, agent_version, ring_owner = owner.as_deref().unwrap_or("none"), here = %st.tm.host(), "agent heartbeat: continuing here (the fenced store lock makes any process safe)");
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

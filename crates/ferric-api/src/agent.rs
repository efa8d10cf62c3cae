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
//!
//! The endpoint is public (no API credentials, as in Ironic); the agent
//! token protects it instead (Ironic 39's checks, in its order): a
//! callback URL that is not http(s), or differs from the `agent_url` the
//! node recorded, is a 400; so is a heartbeat without `agent_token`, without
//! `agent_version` (and `agent_status`), or whose token is not the node's
//! (compared in constant time, `ferric_conductor::provision::token`; a node
//! without a token accepts none). A refused heartbeat changes nothing.

use crate::error::ApiError;
use crate::extract::{ApiPath, JsonBody};
use crate::nodes::node_ident;
use crate::version::Version;
use crate::ApiState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ferric_conductor::provision::agent::{AgentCallback, Heartbeat};
use ferric_conductor::provision::token;
use serde::Deserialize;
use tracing::{error, info};

/// `agent_status` values (anaconda's one-way heartbeat; Ironic's
/// `AGENT_VALID_STATES`).
const AGENT_VALID_STATES: &[&str] = &["start", "end", "error"];

/// `POST /v1/heartbeat/{node}` body (ironic-python-agent's fields).
#[derive(Debug, Deserialize)]
pub struct HeartbeatBody {
    /// Where the agent listens (recorded in logs).
    pub callback_url: String,
    /// API 1.36+.
    #[serde(default)]
    pub agent_version: Option<String>,
    /// The token the agent got at lookup; required (Ironic accepts the
    /// field at any version and requires it at every one).
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
    let scheme = body.callback_url.split_once("://").map(|(s, _)| s);
    if !scheme.is_some_and(|s| s.contains("http")) {
        return Err(ApiError::bad_request(
            "An issue with the supplied \"callback_url\" has been detected.",
        ));
    }
    let node = st.tm.store().get_node(&node_ident(&id, v)?).await?;
    if let Some(known) = node.driver_internal_info.get("agent_url") {
        if known.as_str() != Some(body.callback_url.as_str()) && !known.is_null() {
            error!(node_uuid = %node.uuid, callback_url = %body.callback_url, "heartbeat with a callback URL other than the recorded agent_url; not processed");
            return Err(ApiError::bad_request(
                "Detected change in ramdisk provided \"callback_url\"",
            ));
        }
    }
    if body.agent_token.is_none() {
        error!(node_uuid = %node.uuid, "agent heartbeat received without an agent token");
        return Err(ApiError::bad_request(
            "Agent token is required for heartbeat processing.",
        ));
    }
    if let Some(status) = &body.agent_status {
        if !AGENT_VALID_STATES.contains(&status.as_str()) {
            return Err(ApiError::bad_request(format!(
                "Agent status is invalid. Valid states are {}.",
                AGENT_VALID_STATES.join(",")
            )));
        }
    }
    if body.agent_version.is_none() && body.agent_status.is_none() {
        error!(node_uuid = %node.uuid, "agent transmitted no version information");
        return Err(ApiError::bad_request(
            "Agent did not transmit a version, and a version is required. Please update the agent being used.",
        ));
    }
    if !token::is_valid(&node, body.agent_token.as_deref()) {
        error!(node_uuid = %node.uuid, "invalid or missing agent_token received");
        return Err(ApiError::bad_request(
            "Invalid or missing agent token received.",
        ));
    }
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

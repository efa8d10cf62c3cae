//! The ramdisk agent's lookup: `GET /v1/lookup?addresses=MAC,MAC[&node_uuid=UUID]`
//! (Ironic's `LookupController`, API 1.22+; public like the heartbeat, see
//! [`crate::auth`]).
//!
//! * The node is found by `node_uuid` when given, else by the MAC addresses
//!   of its ports (invalid addresses are ignored, as Ironic does; neither a
//!   valid address nor a UUID is a 400). No node, several nodes, or a node
//!   in a state where no agent should run
//!   ([`token::LOOKUP_ALLOWED_STATES`]) are the same 404, so a caller
//!   cannot tell them apart.
//! * From 1.62 the node's agent token is minted here, once
//!   ([`token::issue`], under the node's lock); every later lookup shows
//!   `******`. Below 1.62 no token is minted and none is shown (Ironic
//!   would echo a stored one; ferric never hands a token out twice).
//! * The body is Ironic's: `node` (uuid, properties, instance_info,
//!   driver_internal_info and links, secrets masked) and `config`: the
//!   keys Ironic 39 sends that IPA 13 reads, with Ironic's defaults, except
//!   `metrics`, `metrics_statsd` and `agent_containers`, which IPA only reads
//!   when present (ferric has no agent metrics or container steps).

use crate::error::ApiError;
use crate::extract::{ApiQuery, BaseUrl};
use crate::render;
use crate::resource;
use crate::version::Version;
use crate::ApiState;
use axum::extract::State;
use axum::Json;
use ferric_conductor::provision::token::{self, Issued};
use ferric_core::Node;
use ferric_store::{ResourceKind, ResourceQuery};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;
use tracing::{error, warn};
use uuid::Uuid;

/// The node fields a lookup returns (Ironic's `_LOOKUP_RETURN_FIELDS`).
pub const LOOKUP_RETURN_FIELDS: &[&str] = &[
    "uuid",
    "properties",
    "instance_info",
    "driver_internal_info",
];

/// Management interfaces whose BMC address is known, so the agent need not
/// detect it (Ironic's `agent_skip_bmc_detect`).
const OUT_OF_BAND_MANAGEMENT: &[&str] = &["redfish", "idrac-redfish"];

/// `GET /v1/lookup` query.
#[derive(Debug, Deserialize)]
pub struct LookupQuery {
    /// Comma-separated MAC addresses.
    #[serde(default)]
    pub addresses: Option<String>,
    /// The node's UUID, when the agent knows it.
    #[serde(default)]
    pub node_uuid: Option<String>,
}

/// Ironic's answer for every lookup that finds nothing usable.
fn not_found() -> ApiError {
    ApiError::not_found("Resource could not be found.")
}

/// `GET /v1/lookup`.
pub async fn lookup(
    State(st): State<ApiState>,
    v: Version,
    base: BaseUrl,
    ApiQuery(q): ApiQuery<LookupQuery>,
) -> Result<Json<Value>, ApiError> {
    if !v.at_least(22) {
        return Err(not_found());
    }
    let node_uuid = match q.node_uuid.as_deref() {
        Some(u) => Some(resource::uuid_param("node_uuid", u)?),
        None => None,
    };
    let addresses = valid_addresses(q.addresses.as_deref());
    if addresses.is_empty() && node_uuid.is_none() {
        return Err(ApiError::bad_request(
            "At least one of 'addresses' and 'node_uuid' parameters is required",
        ));
    }
    let uuid = match node_uuid {
        Some(u) => u,
        None => node_by_addresses(&st, &addresses).await?,
    };
    let node = match st.tm.store().get_node(&uuid.into()).await {
        Ok(n) => n,
        Err(ferric_store::StoreError::NodeNotFound(_)) => {
            error!(node_uuid = %uuid, "no node has been found during lookup");
            return Err(not_found());
        }
        Err(e) => return Err(e.into()),
    };
    if !token::lookup_allowed(node.provision_state) {
        error!(node_uuid = %node.uuid, state = %node.provision_state, "lookup is not allowed for the node in this provision state");
        return Err(not_found());
    }
    let (node, shown) = if v.at_least(62) {
        match token::issue(&st.tm, node.uuid).await {
            Ok(Issued::Minted { node, token }) => (*node, Value::String(token)),
            Ok(Issued::AlreadyIssued(node)) => (*node, Value::String(token::MASK.into())),
            Ok(Issued::NotAllowed(state)) => {
                error!(node_uuid = %node.uuid, %state, "lookup is not allowed for the node in this provision state");
                return Err(not_found());
            }
            Err(token::TokenError::Task(e)) => return Err(e.into()),
            Err(e @ token::TokenError::Random(_)) => return Err(ApiError::internal(&e)),
        }
    } else {
        let shown = if token::is_present(&node) {
            Value::String(token::MASK.into())
        } else {
            Value::Null
        };
        (node, shown)
    };
    Ok(Json(json!({
        "node": Value::Object(node_subset(&node, &base.0, v)),
        "config": Value::Object(config(&st, &node, shown)),
    })))
}

/// The valid MAC addresses of `addresses`, lower case; invalid ones are
/// logged and ignored (Ironic's `get_valid_mac_addresses`).
fn valid_addresses(addresses: Option<&str>) -> Vec<String> {
    let mut valid = Vec::new();
    let mut invalid = Vec::new();
    for a in resource::string_list(addresses).unwrap_or_default() {
        match resource::mac_address("addresses", &a) {
            Ok(mac) => valid.push(mac),
            Err(_) => invalid.push(a),
        }
    }
    if !invalid.is_empty() {
        warn!(addresses = %invalid.join(", "), "invalid MAC addresses ignored by the lookup");
    }
    valid
}

/// The one node whose ports have any of `addresses`; none or several: 404.
async fn node_by_addresses(st: &ApiState, addresses: &[String]) -> Result<Uuid, ApiError> {
    let mut nodes = BTreeSet::new();
    for mac in addresses {
        let mut q = ResourceQuery::all(ResourceKind::Port);
        q.key = Some(mac.clone());
        for port in st.tm.store().list_resources(&q).await? {
            if let Some(n) = port.node {
                nodes.insert(n);
            }
        }
    }
    let mut it = nodes.iter();
    match (it.next(), it.next()) {
        (Some(n), None) => Ok(*n),
        (None, _) => {
            error!(addresses = %addresses.join(", "), "no node has been found during lookup");
            Err(not_found())
        }
        (Some(_), Some(_)) => {
            error!(addresses = %addresses.join(", "), "several nodes have ports with these addresses");
            Err(not_found())
        }
    }
}

/// The node document of a lookup: [`LOOKUP_RETURN_FIELDS`] and links,
/// secrets masked as everywhere.
pub fn node_subset(node: &Node, base: &str, v: Version) -> Map<String, Value> {
    let full = render::node(node, base, v, None);
    render::select(full, LOOKUP_RETURN_FIELDS)
}

/// The `config` of a lookup (Ironic's `ramdisk.config`).
fn config(st: &ApiState, node: &Node, agent_token: Value) -> Map<String, Value> {
    let skip_bmc_detect = node
        .interfaces
        .get("management_interface")
        .is_some_and(|m| OUT_OF_BAND_MANAGEMENT.contains(&m.as_str()));
    let c = json!({
        "heartbeat_timeout": st.ramdisk_heartbeat_timeout.as_secs(),
        "agent_token": agent_token,
        "agent_token_required": true,
        // ferric refuses MD5 image checksums at the deploy verb
        // (drivers::direct), so the agent is told to refuse them too.
        "agent_md5_checksum_enable": false,
        // Ironic 39's defaults: [conductor] disable_deep_image_inspection /
        // permitted_image_formats, [agent] enable_bios_bootloader_install /
        // tls_minimum_version / tls_ciphers.
        "disable_deep_image_inspection": false,
        "permitted_image_formats": ["raw", "gpt", "qcow2", "iso"],
        "agent_skip_bmc_detect": skip_bmc_detect,
        "enable_bios_bootloader_install": false,
        "tls_min_version": "1.3",
        "tls_cipher_suites": null,
    });
    match c {
        Value::Object(m) => m,
        _ => Map::new(), // unreachable: json!({..}) is an object
    }
}

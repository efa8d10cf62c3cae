//! `/v1/nodes/{node}/vifs` (1.28): list, attach and detach virtual network
//! interfaces, as Ironic's `NodeVIFController` and the node's network
//! interface do it.
//!
//! A VIF is an identifier recorded on one of the node's ports or portgroups
//! (`internal_info.tenant_vif_port_id`). What attach, detach and list do
//! depends on the node's network interface:
//!
//! * `noop`: attach and detach accept anything and change nothing; the list
//!   is empty (Ironic's `NoopNetwork`);
//! * `flat`: Ironic's `VIFPortIDMixin` bookkeeping. Attach picks a free port
//!   or portgroup ([`pick_free`]); detach clears the VIF from the port or
//!   portgroup holding it (and `extra.vif_port_id`). ferric has no
//!   networking service, so a VIF's physical networks are unknown (Ironic's
//!   empty set: every port is allowed) and no Neutron port is updated.
//!
//! Attach and detach run under the node's exclusive lock, the list under a
//! shared one, each after validating the network interface (Ironic's
//! conductor). A failed attach or detach is recorded in the node's history.

use crate::error::ApiError;
use crate::extract::{ApiPath, JsonBody};
use crate::nodes::{node_ident, release};
use crate::portgroups::Portgroup;
use crate::ports::Port;
use crate::resource;
use crate::version::Version;
use crate::ApiState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use ferric_conductor::drivers::Invalid;
use ferric_conductor::ExclusiveTask;
use ferric_core::{InterfaceKind, Node};
use ferric_store::{NewHistoryEvent, NodeIdent, ResourceKind, ResourceQuery, ResourceSort};
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;
use uuid::Uuid;

/// The `internal_info` key holding a tenant VIF (Ironic's
/// `NetType.TENANT.vif_key`).
pub const TENANT_VIF_KEY: &str = "tenant_vif_port_id";

/// The routes of this module.
pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/nodes/{ident}/vifs", get(list).post(attach))
        .route("/v1/nodes/{ident}/vifs/{vif}", delete(detach))
}

/// The node identifier, then the 1.28 gate (a 404 before, as Ironic's
/// `_lookup`).
fn gated(id: &str, v: Version) -> Result<NodeIdent, ApiError> {
    let ident = node_ident(id, v)?;
    if !v.at_least(28) {
        return Err(ApiError::not_found(
            "The resource could not be found. (It needs API version 1.28 or later.)",
        ));
    }
    Ok(ident)
}

/// The network interfaces whose VIFs are kept on ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Network {
    Noop,
    Flat,
}

/// The node's network interface, validated (Ironic's
/// `task.driver.network.validate`).
async fn network(st: &ApiState, node: &Node) -> Result<Network, ApiError> {
    let driver = st
        .drivers()
        .compose(node)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let iface = driver.interface(InterfaceKind::Network);
    match iface.validate(node).await {
        Ok(()) => {}
        Err(Invalid::Config(m) | Invalid::Unsupported(m)) => return Err(ApiError::bad_request(m)),
    }
    Ok(match iface.name() {
        "flat" => Network::Flat,
        _ => Network::Noop,
    })
}

/// A port or a portgroup of the node.
#[derive(Debug, Clone)]
enum PortLike {
    Port(Port),
    Portgroup(Portgroup),
}

impl PortLike {
    fn uuid(&self) -> Uuid {
        match self {
            PortLike::Port(p) => p.uuid,
            PortLike::Portgroup(p) => p.uuid,
        }
    }

    fn internal_info(&self) -> &Map<String, Value> {
        match self {
            PortLike::Port(p) => &p.body.internal_info,
            PortLike::Portgroup(p) => &p.body.internal_info,
        }
    }

    fn vif(&self) -> Option<&str> {
        self.internal_info()
            .get(TENANT_VIF_KEY)
            .and_then(Value::as_str)
    }

    fn class(&self) -> &'static str {
        match self {
            PortLike::Port(_) => "Port",
            PortLike::Portgroup(_) => "Portgroup",
        }
    }
}

/// The node's ports and portgroups, oldest first (Ironic's order by id).
async fn ports_of(st: &ApiState, node: Uuid) -> Result<(Vec<Port>, Vec<Portgroup>), ApiError> {
    let query = |kind| ResourceQuery {
        node: Some(node),
        sort: ResourceSort::CreatedAt,
        ..ResourceQuery::all(kind)
    };
    let store = st.tm.store();
    let ports = store
        .list_resources(&query(ResourceKind::Port))
        .await?
        .into_iter()
        .map(Port::from_resource)
        .collect::<Result<Vec<_>, _>>()?;
    let pgs = store
        .list_resources(&query(ResourceKind::Portgroup))
        .await?
        .into_iter()
        .map(Portgroup::from_resource)
        .collect::<Result<Vec<_>, _>>()?;
    Ok((ports, pgs))
}

/// Ironic's `validate_port_info` for a network interface other than
/// `neutron`: an InfiniBand port (`extra.client-id`) is usable; otherwise a
/// port is usable when it is a Smart NIC exactly if its
/// `local_link_connection` names a `port_id` and a `hostname`.
fn port_info_valid(p: &Port) -> bool {
    if p.body.extra.contains_key("client-id") {
        return true;
    }
    let llc = &p.body.local_link_connection;
    let smart_nic_link = ["port_id", "hostname"]
        .iter()
        .all(|k| llc.get(*k).is_some_and(Value::is_string));
    p.body.is_smartnic == smart_nic_link
}

/// What a VIF attach asks for beyond its id (Ironic's `vif_info`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VifTarget {
    pub port_uuid: Option<String>,
    pub portgroup_uuid: Option<String>,
}

/// Why no port-like object was picked.
#[derive(Debug, PartialEq, Eq)]
enum PickError {
    /// Ironic's `VifAlreadyAttached` (409).
    AlreadyAttached { class: &'static str, uuid: Uuid },
    /// Ironic's `NoFreePhysicalPorts` (400).
    NoFree,
    /// Ironic's `PortgroupPhysnetInconsistent` (500, an IronicException).
    Inconsistent { portgroup: Uuid, physnets: String },
}

/// Ironic's `get_free_port_like_object` with an empty set of physical
/// networks: the candidates are free ports outside portgroups, portgroups
/// with free ports and no attached VIF on any member (else their free
/// members), restricted to the requested port or portgroup; portgroups are
/// preferred to ports, then PXE-enabled ports, then the first listed.
fn pick_free(
    ports: &[Port],
    pgs: &[Portgroup],
    vif: &str,
    target: &VifTarget,
) -> Result<PortLike, PickError> {
    let attached = |pl: &PortLike| -> Result<bool, PickError> {
        match pl.vif() {
            Some(v) if v == vif => Err(PickError::AlreadyAttached {
                class: pl.class(),
                uuid: pl.uuid(),
            }),
            Some(_) => Ok(true),
            None => Ok(false),
        }
    };
    let port_uuid = target.port_uuid.as_deref();
    // Ironic reads portgroup_uuid only when port_uuid is absent.
    let portgroup_uuid = target
        .portgroup_uuid
        .as_deref()
        .filter(|_| port_uuid.is_none());
    let mut free: Vec<PortLike> = Vec::new();
    let mut by_group: Vec<(Option<Uuid>, Port)> = Vec::new();
    let mut unusable: BTreeSet<Option<Uuid>> = BTreeSet::new();
    for p in ports {
        if port_uuid.is_some_and(|u| u != p.uuid.to_string()) || !port_info_valid(p) {
            continue;
        }
        if attached(&PortLike::Port(p.clone()))? {
            unusable.insert(p.portgroup_uuid);
            continue;
        }
        if p.portgroup_uuid.is_none() && portgroup_uuid.is_none() {
            free.push(PortLike::Port(p.clone()));
        } else {
            by_group.push((p.portgroup_uuid, p.clone()));
        }
    }
    if port_uuid.is_none() {
        for pg in pgs {
            let pl = PortLike::Portgroup(pg.clone());
            if portgroup_uuid.is_some_and(|u| u != pg.uuid.to_string()) || attached(&pl)? {
                continue;
            }
            let members: Vec<&Port> = by_group
                .iter()
                .filter(|(g, _)| *g == Some(pg.uuid))
                .map(|(_, p)| p)
                .collect();
            if unusable.contains(&Some(pg.uuid)) {
                if portgroup_uuid.is_none() {
                    free.extend(members.into_iter().cloned().map(PortLike::Port));
                }
            } else if !members.is_empty() {
                free.push(pl);
            }
        }
    }
    if free.is_empty() {
        return Err(PickError::NoFree);
    }
    // The sort key of every candidate is computed (a portgroup's physical
    // networks are checked for consistency, as Ironic's sort key does).
    let mut best: Option<((bool, bool), PortLike)> = None;
    for pl in free {
        let key = match &pl {
            PortLike::Portgroup(pg) => {
                let physnets: BTreeSet<Option<&str>> = ports
                    .iter()
                    .filter(|p| p.portgroup_uuid == Some(pg.uuid))
                    .map(|p| p.body.physical_network.as_deref())
                    .collect();
                if physnets.len() > 1 {
                    return Err(PickError::Inconsistent {
                        portgroup: pg.uuid,
                        physnets: physnets
                            .iter()
                            .map(|p| p.unwrap_or("None"))
                            .collect::<Vec<_>>()
                            .join(", "),
                    });
                }
                (true, true)
            }
            PortLike::Port(p) => (false, p.body.pxe_enabled),
        };
        // Strictly greater: the first of equals wins (a stable sort).
        if best.as_ref().is_none_or(|(k, _)| key > *k) {
            best = Some((key, pl));
        }
    }
    best.map(|(_, pl)| pl).ok_or(PickError::NoFree)
}

async fn save(st: &ApiState, pl: &PortLike) -> Result<(), ApiError> {
    let r = match pl {
        PortLike::Port(p) => p.to_resource(),
        PortLike::Portgroup(p) => p.to_resource(),
    };
    st.tm.store().update_resource(&r).await?;
    Ok(())
}

/// Record a failed VIF call in the node's history (Ironic's conductor
/// does); a failure to record is logged, never answered.
async fn record_failure(st: &ApiState, task: &ExclusiveTask, event: String) {
    let n = task.node();
    let entry = NewHistoryEvent {
        event,
        event_type: Some(n.provision_state.as_str().to_string()),
        severity: Some("ERROR".into()),
        ..Default::default()
    };
    if let Err(e) = st.tm.store().add_node_history(task.token(), &entry).await {
        tracing::warn!(node_uuid = %n.uuid, error.message = %e, "recording a VIF failure failed");
    }
}

/// `GET /v1/nodes/{node}/vifs`.
pub async fn list(
    State(st): State<ApiState>,
    v: Version,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let ident = gated(&id, v)?;
    let task = st
        .tm
        .acquire(ident)
        .purpose("list vifs")
        .retry(st.retry)
        .shared()
        .await?;
    let node = task.node().clone();
    drop(task);
    let vifs = match network(&st, &node).await? {
        Network::Noop => Vec::new(),
        Network::Flat => {
            let (ports, pgs) = ports_of(&st, node.uuid).await?;
            ports
                .into_iter()
                .map(PortLike::Port)
                .chain(pgs.into_iter().map(PortLike::Portgroup))
                .filter_map(|pl| pl.vif().map(|v| json!({"id": v})))
                .collect()
        }
    };
    Ok(Json(json!({ "vifs": vifs })).into_response())
}

/// The attach request: `id` (a UUID or name) and, optionally, the port or
/// portgroup to use.
fn parse_attach(doc: &Map<String, Value>, v: Version) -> Result<(String, VifTarget), ApiError> {
    let id = match doc.get("id") {
        None => return Err(resource::schema_error("vif", "'id' is a required property")),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            let shown = match other {
                Value::Null => "None".to_string(),
                o => o.to_string(),
            };
            return Err(resource::schema_error(
                "vif",
                format!("{shown} is not of type 'string'"),
            ));
        }
    };
    crate::extract::check_text("id", &id)?;
    if !resource::is_name_or_uuid(&id) {
        return Err(ApiError::bad_request(format!(
            "Expected UUID or name for id: {id}"
        )));
    }
    let text = |k: &str| -> Option<String> {
        doc.get(k).map(|x| match x {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    };
    let target = VifTarget {
        port_uuid: text("port_uuid"),
        portgroup_uuid: text("portgroup_uuid"),
    };
    if v.at_least(67) && doc.contains_key("port_uuid") && doc.contains_key("portgroup_uuid") {
        return Err(ApiError::bad_request(
            "Cannot specify both port_uuid and portgroup_uuid",
        ));
    }
    Ok((id, target))
}

/// `POST /v1/nodes/{node}/vifs`: 204.
pub async fn attach(
    State(st): State<ApiState>,
    v: Version,
    ApiPath(id): ApiPath<String>,
    JsonBody(doc): JsonBody<Map<String, Value>>,
) -> Result<Response, ApiError> {
    let ident = gated(&id, v)?;
    let (vif, target) = parse_attach(&doc, v)?;
    let task = st
        .tm
        .acquire(ident)
        .purpose("attach vif")
        .retry(st.retry)
        .exclusive()
        .await?;
    let outcome = async {
        let node = task.node();
        if network(&st, node).await? == Network::Noop {
            return Ok(());
        }
        let (ports, pgs) = ports_of(&st, node.uuid).await?;
        let mut chosen = match pick_free(&ports, &pgs, &vif, &target) {
            Ok(pl) => pl,
            Err(PickError::AlreadyAttached { class, uuid }) => {
                return Err(ApiError::conflict_409(format!(
                    "Unable to attach VIF because VIF {vif} is already attached to Ironic {class} {uuid}"
                )))
            }
            Err(PickError::NoFree) => {
                return Err(ApiError::bad_request(format!(
                    "Unable to attach VIF {vif}, not enough free physical ports."
                )))
            }
            Err(PickError::Inconsistent {
                portgroup,
                physnets,
            }) => {
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("Port group {portgroup} has member ports with inconsistent physical networks ({physnets}). All ports in a port group must have the same physical network."),
                ))
            }
        };
        let info = match &mut chosen {
            PortLike::Port(p) => &mut p.body.internal_info,
            PortLike::Portgroup(p) => &mut p.body.internal_info,
        };
        info.insert(TENANT_VIF_KEY.into(), json!(vif));
        save(&st, &chosen).await
    }
    .await;
    if let Err(e) = &outcome {
        let node = task.node().uuid;
        record_failure(
            &st,
            &task,
            format!(
                "Failed to attach VIF {vif} to node {node}. Error: {}",
                e.message()
            ),
        )
        .await;
    }
    release(task).await;
    outcome?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /v1/nodes/{node}/vifs/{vif}`: 204.
pub async fn detach(
    State(st): State<ApiState>,
    v: Version,
    ApiPath((id, vif)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let ident = gated(&id, v)?;
    if !resource::is_name_or_uuid(&vif) {
        return Err(ApiError::bad_request(format!(
            "Expected UUID or name for vif_id: {vif}"
        )));
    }
    let task = st
        .tm
        .acquire(ident)
        .purpose("detach vif")
        .retry(st.retry)
        .exclusive()
        .await?;
    let outcome = async {
        let node = task.node();
        if network(&st, node).await? == Network::Noop {
            return Ok(());
        }
        let (ports, pgs) = ports_of(&st, node.uuid).await?;
        // Ironic looks in the portgroups first, then the ports.
        let holder = pgs
            .into_iter()
            .map(PortLike::Portgroup)
            .chain(ports.into_iter().map(PortLike::Port))
            .find(|pl| pl.vif() == Some(vif.as_str()));
        let Some(mut holder) = holder else {
            return Err(ApiError::bad_request(format!(
                "Unable to detach VIF {vif} from node {} because it is not attached to it.",
                node.uuid
            )));
        };
        let (info, extra) = match &mut holder {
            PortLike::Port(p) => (&mut p.body.internal_info, &mut p.body.extra),
            PortLike::Portgroup(p) => (&mut p.body.internal_info, &mut p.body.extra),
        };
        info.remove(TENANT_VIF_KEY);
        extra.remove("vif_port_id");
        save(&st, &holder).await
    }
    .await;
    if let Err(e) = &outcome {
        let node = task.node().uuid;
        record_failure(
            &st,
            &task,
            format!(
                "Failed to detach VIF {vif} from node {node}, Error: {}",
                e.message()
            ),
        )
        .await;
    }
    release(task).await;
    outcome?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The OpenAPI paths of this module.
pub(crate) fn openapi_paths() -> Map<String, Value> {
    let ident =
        json!({"name": "ident", "in": "path", "required": true, "schema": {"type": "string"}});
    let vif = json!({"name": "vif", "in": "path", "required": true, "schema": {"type": "string"}});
    let common = |extra: Value| {
        crate::resource::oas::with_errors(
            extra,
            &[
                ("400", "Invalid input, no free port, or not attached"),
                ("401", "Credentials required"),
                ("404", "No such node (or API version below 1.28)"),
                ("406", "Microversion not acceptable"),
                ("409", "VIF already attached, or node locked"),
            ],
        )
    };
    let body = json!({"required": true, "content": {"application/json": {"schema": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "port_uuid": {"type": "string"},
            "portgroup_uuid": {"type": "string"}
        },
        "required": ["id"]
    }}}});
    let mut m = Map::new();
    m.insert("/v1/nodes/{ident}/vifs".into(), json!({
        "get": {"summary": "List the node's VIFs (1.28)", "parameters": [ident], "responses": common(json!({"200": {"description": "{vifs: [{id}]}", "content": {"application/json": {"schema": {"type": "object"}}}}}))},
        "post": {"summary": "Attach a VIF (1.28)", "parameters": [ident], "requestBody": body, "responses": common(json!({"204": {"description": "Attached"}}))},
    }));
    m.insert("/v1/nodes/{ident}/vifs/{vif}".into(), json!({
        "delete": {"summary": "Detach a VIF (1.28)", "parameters": [ident, vif], "responses": common(json!({"204": {"description": "Detached"}}))},
    }));
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::portgroups::PortgroupBody;
    use crate::ports::PortBody;
    use ferric_core::DbTime;

    fn port(n: u8, group: Option<Uuid>, pxe: bool, vif: Option<&str>) -> Port {
        let mut body = PortBody {
            pxe_enabled: pxe,
            ..Default::default()
        };
        if let Some(v) = vif {
            body.internal_info.insert(TENANT_VIF_KEY.into(), json!(v));
        }
        Port {
            uuid: Uuid::from_u128(u128::from(n)),
            address: format!("52:54:00:00:00:{n:02x}"),
            node_uuid: Uuid::nil(),
            portgroup_uuid: group,
            name: None,
            body,
            created_at: DbTime(0),
            updated_at: None,
            revision: 1,
        }
    }

    fn pg(n: u8, vif: Option<&str>) -> Portgroup {
        let mut body = PortgroupBody::default();
        if let Some(v) = vif {
            body.internal_info.insert(TENANT_VIF_KEY.into(), json!(v));
        }
        Portgroup {
            uuid: Uuid::from_u128(u128::from(n)),
            address: None,
            node_uuid: Uuid::nil(),
            name: None,
            body,
            created_at: DbTime(0),
            updated_at: None,
            revision: 1,
        }
    }

    fn any() -> VifTarget {
        VifTarget::default()
    }

    #[test]
    fn portgroups_win_over_ports_and_pxe_ports_over_others() {
        let g = pg(10, None);
        let ports = [
            port(1, None, false, None),
            port(2, None, true, None),
            port(3, Some(g.uuid), false, None),
        ];
        let pick = pick_free(&ports, std::slice::from_ref(&g), "v", &any()).unwrap();
        assert_eq!(pick.uuid(), g.uuid);
        let pick = pick_free(&ports[..2], &[], "v", &any()).unwrap();
        assert_eq!(pick.uuid(), ports[1].uuid);
        // Equals: the first listed.
        let pick = pick_free(
            &[port(1, None, true, None), port(2, None, true, None)],
            &[],
            "v",
            &any(),
        )
        .unwrap();
        assert_eq!(pick.uuid(), Uuid::from_u128(1));
    }

    #[test]
    fn empty_portgroups_and_attached_ones_are_skipped() {
        let empty = pg(10, None);
        let busy = pg(11, Some("other"));
        let ports = [port(1, Some(busy.uuid), true, None)];
        assert_eq!(
            pick_free(&ports, &[empty.clone(), busy.clone()], "v", &any()).unwrap_err(),
            PickError::NoFree
        );
    }

    #[test]
    fn a_portgroup_with_an_attached_member_offers_its_free_members() {
        let g = pg(10, None);
        let ports = [
            port(1, Some(g.uuid), true, Some("other")),
            port(2, Some(g.uuid), false, None),
        ];
        let pick = pick_free(&ports, std::slice::from_ref(&g), "v", &any()).unwrap();
        assert_eq!(pick.uuid(), ports[1].uuid);
        // ... but not when that portgroup was asked for.
        let target = VifTarget {
            portgroup_uuid: Some(g.uuid.to_string()),
            ..any()
        };
        assert_eq!(
            pick_free(&ports, &[g], "v", &target).unwrap_err(),
            PickError::NoFree
        );
    }

    #[test]
    fn the_same_vif_twice_is_a_conflict() {
        let ports = [port(1, None, true, Some("v")), port(2, None, true, None)];
        assert_eq!(
            pick_free(&ports, &[], "v", &any()).unwrap_err(),
            PickError::AlreadyAttached {
                class: "Port",
                uuid: ports[0].uuid
            }
        );
        let g = pg(10, Some("v"));
        let ports = [port(1, Some(g.uuid), true, None)];
        assert!(matches!(
            pick_free(&ports, &[g], "v", &any()).unwrap_err(),
            PickError::AlreadyAttached {
                class: "Portgroup",
                ..
            }
        ));
    }

    #[test]
    fn a_requested_port_is_the_only_candidate() {
        let g = pg(10, None);
        let ports = [
            port(1, None, true, None),
            port(2, None, false, None),
            port(3, Some(g.uuid), true, None),
        ];
        let target = VifTarget {
            port_uuid: Some(ports[1].uuid.to_string()),
            ..any()
        };
        assert_eq!(
            pick_free(&ports, std::slice::from_ref(&g), "v", &target)
                .unwrap()
                .uuid(),
            ports[1].uuid
        );
        let target = VifTarget {
            port_uuid: Some(Uuid::from_u128(99).to_string()),
            ..any()
        };
        assert_eq!(
            pick_free(&ports, &[g], "v", &target).unwrap_err(),
            PickError::NoFree
        );
    }

    #[test]
    fn smart_nic_ports_need_their_link_and_others_must_not_have_it() {
        let mut smart = port(1, None, true, None);
        smart.body.is_smartnic = true;
        assert!(!port_info_valid(&smart));
        smart
            .body
            .local_link_connection
            .insert("port_id".into(), json!("p"));
        smart
            .body
            .local_link_connection
            .insert("hostname".into(), json!("h"));
        assert!(port_info_valid(&smart));
        let mut plain = smart.clone();
        plain.body.is_smartnic = false;
        assert!(!port_info_valid(&plain));
        plain.body.extra.insert("client-id".into(), json!("ib"));
        assert!(port_info_valid(&plain));
    }

    #[test]
    fn inconsistent_portgroup_physical_networks_are_refused() {
        let g = pg(10, None);
        let mut a = port(1, Some(g.uuid), true, None);
        a.body.physical_network = Some("net-a".into());
        let b = port(2, Some(g.uuid), true, None);
        assert!(matches!(
            pick_free(&[a, b], &[g], "v", &any()).unwrap_err(),
            PickError::Inconsistent { .. }
        ));
    }
}

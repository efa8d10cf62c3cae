//! Secondary resources: the generic stored form of Ironic's documents other
//! than nodes (ports, portgroups, chassis; next allocations, deploy
//! templates, runbooks, inspection rules, volume connectors and targets).
//!
//! Every kind is stored the same way (one table per kind, same columns):
//! a UUID, an optional unique name, an optional owning node (deleted with
//! it), an optional parent (a port's portgroup), an optional kind-specific
//! unique key (a port's MAC address) and a JSON body holding every other
//! field. Adding a kind is a [`ResourceKind`] variant plus a migration
//! creating its table; the store code is shared. Typed structs live with
//! their users (ferric-api) and convert to and from [`Resource`].

use ferric_core::DbTime;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// The kinds of secondary resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceKind {
    Port,
    Portgroup,
    Chassis,
    // ----- deploy templates, runbooks, volume, inspection rules (0007) ---
    DeployTemplate,
    Runbook,
    VolumeConnector,
    VolumeTarget,
    InspectionRule,
    Allocation,
}

impl ResourceKind {
    /// Every kind, in the order a node's resources are deleted.
    pub const ALL: [ResourceKind; 9] = [
        ResourceKind::Port,
        ResourceKind::Portgroup,
        ResourceKind::Chassis,
        ResourceKind::DeployTemplate,
        ResourceKind::Runbook,
        ResourceKind::VolumeConnector,
        ResourceKind::VolumeTarget,
        ResourceKind::InspectionRule,
        ResourceKind::Allocation,
    ];

    /// The stored (and serialized) name.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Port => "port",
            ResourceKind::Portgroup => "portgroup",
            ResourceKind::Chassis => "chassis",
            ResourceKind::DeployTemplate => "deploy_template",
            ResourceKind::Runbook => "runbook",
            ResourceKind::VolumeConnector => "volume_connector",
            ResourceKind::VolumeTarget => "volume_target",
            ResourceKind::InspectionRule => "inspection_rule",
            ResourceKind::Allocation => "allocation",
        }
    }

    /// The kind named `s`.
    pub fn parse(s: &str) -> Option<ResourceKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Its table (a constant, safe to splice into SQL).
    pub fn table(self) -> &'static str {
        match self {
            ResourceKind::Port => "ports",
            ResourceKind::Portgroup => "portgroups",
            ResourceKind::Chassis => "chassis",
            ResourceKind::DeployTemplate => "deploy_templates",
            ResourceKind::Runbook => "runbooks",
            ResourceKind::VolumeConnector => "volume_connectors",
            ResourceKind::VolumeTarget => "volume_targets",
            ResourceKind::InspectionRule => "inspection_rules",
            ResourceKind::Allocation => "allocations",
        }
    }

    /// What the unique key is called in the API (names the field of a
    /// [`crate::StoreError::ResourceDuplicate`]).
    pub fn key_field(self) -> &'static str {
        match self {
            ResourceKind::Port | ResourceKind::Portgroup => "address",
            ResourceKind::VolumeConnector => "connector_id",
            ResourceKind::VolumeTarget => "boot_index",
            ResourceKind::Chassis
            | ResourceKind::DeployTemplate
            | ResourceKind::Runbook
            | ResourceKind::InspectionRule
            | ResourceKind::Allocation => "key",
        }
    }
}

impl std::fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A resource as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    pub kind: ResourceKind,
    pub uuid: Uuid,
    pub name: Option<String>,
    /// The owning node; the resource is deleted with it.
    pub node: Option<Uuid>,
    /// The parent or group (a port's portgroup).
    pub parent: Option<Uuid>,
    /// The kind's unique key (a port's MAC address).
    pub key: Option<String>,
    /// Every other field.
    pub body: Map<String, Value>,
    pub created_at: DbTime,
    pub updated_at: Option<DbTime>,
    /// The global revision of its last write; updates are conditional on it.
    pub revision: i64,
}

/// A resource to create.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NewResource {
    /// Generated when `None`.
    pub uuid: Option<Uuid>,
    pub name: Option<String>,
    pub node: Option<Uuid>,
    pub parent: Option<Uuid>,
    pub key: Option<String>,
    pub body: Map<String, Value>,
}

/// What a list is ordered by (then by UUID, so the order is total).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResourceSort {
    #[default]
    Uuid,
    CreatedAt,
    /// The unique key (absent keys sort as the empty string).
    Key,
    /// The name (absent names sort as the empty string).
    Name,
}

impl ResourceSort {
    /// The column (a constant, safe to splice into SQL).
    pub(crate) fn column(self) -> &'static str {
        match self {
            ResourceSort::Uuid => "uuid",
            ResourceSort::CreatedAt => "created_at",
            ResourceSort::Key => "COALESCE(ukey, '')",
            ResourceSort::Name => "COALESCE(name, '')",
        }
    }
}

/// Listing parameters. Filters combine with AND.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceQuery {
    pub kind: ResourceKind,
    pub node: Option<Uuid>,
    pub parent: Option<Uuid>,
    pub key: Option<String>,
    /// Only resources whose body has these top-level string fields with
    /// these values (field names are constants, safe to splice into SQL).
    pub body_eq: Vec<(&'static str, String)>,
    /// Only resources without a node (`Some(false)`) or with one.
    pub has_node: Option<bool>,
    /// Only resources whose node is in one of these conductor groups.
    pub node_conductor_groups: Option<Vec<String>>,
    /// Only resources whose node is in one of these shards (Ironic's
    /// `shard` filter of ports and portgroups, 1.82).
    pub node_shards: Option<Vec<String>>,
    /// Resume after this resource (in the chosen order).
    pub marker: Option<Uuid>,
    /// Page size; `None` = all.
    pub limit: Option<u32>,
    pub sort: ResourceSort,
    pub descending: bool,
}

impl ResourceQuery {
    /// Every resource of `kind`, by UUID.
    pub fn all(kind: ResourceKind) -> Self {
        ResourceQuery {
            kind,
            node: None,
            parent: None,
            key: None,
            body_eq: Vec::new(),
            has_node: None,
            node_conductor_groups: None,
            node_shards: None,
            marker: None,
            limit: None,
            sort: ResourceSort::Uuid,
            descending: false,
        }
    }

    /// Whether `r` passes the filters other than the node-column ones
    /// (used by MemoryStore; the SQL store puts them in WHERE).
    pub(crate) fn matches_own(&self, r: &Resource) -> bool {
        r.kind == self.kind
            && self.node.is_none_or(|n| r.node == Some(n))
            && self.parent.is_none_or(|p| r.parent == Some(p))
            && self.key.as_ref().is_none_or(|k| r.key.as_ref() == Some(k))
            && self.has_node.is_none_or(|h| r.node.is_some() == h)
            && self.body_eq.iter().all(|(field, value)| {
                r.body.get(*field).and_then(Value::as_str) == Some(value.as_str())
            })
    }

    /// The sort value of `r` (MemoryStore).
    pub(crate) fn sort_value(&self, r: &Resource) -> (String, i64, Uuid) {
        match self.sort {
            ResourceSort::Uuid => (String::new(), 0, r.uuid),
            ResourceSort::CreatedAt => (String::new(), r.created_at.0, r.uuid),
            ResourceSort::Key => (r.key.clone().unwrap_or_default(), 0, r.uuid),
            ResourceSort::Name => (r.name.clone().unwrap_or_default(), 0, r.uuid),
        }
    }
}

/// A change-feed entry about a resource.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResourceChange {
    pub kind: ResourceKind,
    /// The resource as of this revision; `None` for deletions.
    pub snapshot: Option<Resource>,
}

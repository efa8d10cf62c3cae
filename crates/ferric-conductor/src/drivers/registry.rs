//! The one registry of hardware types and interface implementations.
//!
//! It is the single source of `GET /v1/drivers`, the conductor's `drivers`
//! list, node interface validation and defaults, and `validate`. Ironic's
//! rules (`ironic/common/driver_factory.py`):
//!
//! * an implementation is usable when it exists and is enabled in config
//!   (`enabled_<iface>_interfaces`);
//! * a hardware type supports an ordered list of implementations per
//!   interface; `fake-hardware` accepts any enabled implementation;
//! * a node's unset interface gets `default_<iface>_interface` from config if
//!   set (it must be supported), else the first implementation the hardware
//!   type supports that is enabled.

use super::agent_client::AgentClient;
use super::direct::DirectDeploy;
use super::fake::{FakeDeploy, FakeHardware, FakeOptional};
use super::generic::{FlatNetwork, NoInterface, NoopInterface, PxeBoot, RamdiskDeploy};
use super::ipmi::Ipmi;
use super::redfish::Redfish;
use super::vmedia::RedfishVirtualMedia;
use super::{
    BootInterface, DeployInterface, Interface, InterfaceKind, ManagementInterface, PowerInterface,
};
use ferric_core::Node;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Declares [`HardwareConfig`] with one `enabled_*` list and one `default_*`
/// name per interface (Ironic's option names), and its per-kind accessors.
macro_rules! hardware_config {
    ($( $kind:ident => $enabled:ident, $default:ident, [$($name:literal),*] ;)*) => {
        /// `[hardware]`: which hardware types and interface implementations
        /// this conductor offers (Ironic's `enabled_*` / `default_*` options).
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct HardwareConfig {
            /// Hardware types nodes may use.
            pub enabled_hardware_types: Vec<String>,
            $(
                #[doc = concat!("Enabled ", stringify!($kind), " interface implementations.")]
                pub $enabled: Vec<String>,
                #[doc = concat!("Default ", stringify!($kind), " interface (empty: the hardware type's first enabled one).")]
                pub $default: String,
            )*
        }

        impl Default for HardwareConfig {
            fn default() -> Self {
                HardwareConfig {
                    enabled_hardware_types: vec!["fake-hardware".into(), "redfish".into()],
                    $(
                        $enabled: vec![$($name.to_string()),*],
                        $default: String::new(),
                    )*
                }
            }
        }

        impl HardwareConfig {
            /// `enabled_<kind>_interfaces`.
            pub fn enabled(&self, kind: InterfaceKind) -> &[String] {
                match kind {
                    $(InterfaceKind::$kind => &self.$enabled,)*
                }
            }

            /// `default_<kind>_interface`, if set.
            pub fn default_for(&self, kind: InterfaceKind) -> Option<&str> {
                let d = match kind {
                    $(InterfaceKind::$kind => &self.$default,)*
                };
                (!d.is_empty()).then_some(d.as_str())
            }
        }
    };
}

hardware_config! {
    Bios => enabled_bios_interfaces, default_bios_interface, ["fake", "no-bios"];
    Boot => enabled_boot_interfaces, default_boot_interface, ["fake", "ipxe", "pxe", "redfish-virtual-media"];
    Console => enabled_console_interfaces, default_console_interface, ["fake", "no-console"];
    Deploy => enabled_deploy_interfaces, default_deploy_interface, ["fake", "direct", "ramdisk"];
    Firmware => enabled_firmware_interfaces, default_firmware_interface, ["fake", "no-firmware"];
    Inspect => enabled_inspect_interfaces, default_inspect_interface, ["fake", "no-inspect"];
    Management => enabled_management_interfaces, default_management_interface, ["fake", "redfish"];
    Network => enabled_network_interfaces, default_network_interface, ["flat", "noop"];
    Power => enabled_power_interfaces, default_power_interface, ["fake", "redfish"];
    Raid => enabled_raid_interfaces, default_raid_interface, ["fake", "no-raid"];
    Rescue => enabled_rescue_interfaces, default_rescue_interface, ["fake", "no-rescue"];
    Storage => enabled_storage_interfaces, default_storage_interface, ["noop"];
    Vendor => enabled_vendor_interfaces, default_vendor_interface, ["fake", "no-vendor"];
}

/// A hardware type: the implementations it supports per interface, in
/// order of preference.
#[derive(Debug, Clone)]
pub struct HardwareType {
    pub name: &'static str,
    supported: BTreeMap<InterfaceKind, Vec<&'static str>>,
    /// Accepts any enabled implementation (Ironic special-cases
    /// `fake-hardware` so tests can combine anything).
    any: bool,
}

impl HardwareType {
    /// The implementations of `kind` this type supports, preferred first.
    pub fn supported(&self, kind: InterfaceKind) -> &[&'static str] {
        self.supported.get(&kind).map_or(&[], Vec::as_slice)
    }

    fn supports(&self, kind: InterfaceKind, name: &str) -> bool {
        self.any || self.supported(kind).contains(&name)
    }
}

/// The `no-*` implementation names of the optional interfaces.
pub(super) fn no_name(kind: InterfaceKind) -> Option<&'static str> {
    Some(match kind {
        InterfaceKind::Bios => "no-bios",
        InterfaceKind::Console => "no-console",
        InterfaceKind::Firmware => "no-firmware",
        InterfaceKind::Inspect => "no-inspect",
        InterfaceKind::Raid => "no-raid",
        InterfaceKind::Rescue => "no-rescue",
        InterfaceKind::Vendor => "no-vendor",
        _ => return None,
    })
}

/// The built-in hardware types.
fn builtin_types() -> BTreeMap<&'static str, HardwareType> {
    use InterfaceKind as K;
    let mut fake = BTreeMap::new();
    let mut redfish = BTreeMap::new();
    for kind in K::ALL {
        let (f, r): (Vec<&'static str>, Vec<&'static str>) = match kind {
            // Ironic's generic types support flat and noop; its default is
            // noop without a Neutron DHCP provider, which ferric never has.
            K::Network => (vec!["noop", "flat"], vec!["noop", "flat"]),
            K::Storage => (vec!["noop"], vec!["noop"]),
            K::Power | K::Management => (vec!["fake"], vec!["redfish"]),
            // Ironic: virtual media goes last (limited vendor support).
            K::Boot => (vec!["fake"], vec!["ipxe", "pxe", VMEDIA]),
            K::Deploy => (vec!["fake"], vec!["direct", "ramdisk"]),
            other => {
                let no = no_name(other).unwrap_or("noop");
                (vec!["fake", no], vec![no])
            }
        };
        fake.insert(kind, f);
        redfish.insert(kind, r);
    }
    [
        HardwareType {
            name: "fake-hardware",
            supported: fake,
            any: true,
        },
        HardwareType {
            name: "redfish",
            supported: redfish,
            any: false,
        },
        ipmi_type(),
    ]
    .into_iter()
    .map(|t| (t.name, t))
    .collect()
}

/// Ironic's `ipmi` hardware type: the ipmitool power and management
/// interfaces, the generic boot and deploy ones, `no-*` for the rest (its
/// ipmitool console and vendor interfaces are not implemented). Known but
/// not enabled by default: see `[hardware]` in README.md.
fn ipmi_type() -> HardwareType {
    use InterfaceKind as K;
    let mut supported = BTreeMap::new();
    for kind in K::ALL {
        let names: Vec<&'static str> = match kind {
            K::Network => vec!["noop", "flat"],
            K::Storage => vec!["noop"],
            K::Power | K::Management => vec!["ipmitool"],
            K::Boot => vec!["ipxe", "pxe"],
            K::Deploy => vec!["direct", "ramdisk"],
            other => vec![no_name(other).unwrap_or("noop")],
        };
        supported.insert(kind, names);
    }
    HardwareType {
        name: "ipmi",
        supported,
        any: false,
    }
}

/// The virtual media boot interface's name.
const VMEDIA: &str = crate::netboot::vmedia::BOOT_INTERFACE;

/// Every implementation this build has, by interface.
#[derive(Clone, Default)]
struct Impls {
    power: BTreeMap<&'static str, Arc<dyn PowerInterface>>,
    management: BTreeMap<&'static str, Arc<dyn ManagementInterface>>,
    boot: BTreeMap<&'static str, Arc<dyn BootInterface>>,
    deploy: BTreeMap<&'static str, Arc<dyn DeployInterface>>,
    other: BTreeMap<(InterfaceKind, &'static str), Arc<dyn Interface>>,
    /// The redfish backend (virtual media boots through it).
    redfish: Option<Arc<Redfish>>,
}

impl Impls {
    fn names(&self, kind: InterfaceKind) -> Vec<&'static str> {
        match kind {
            InterfaceKind::Power => self.power.keys().copied().collect(),
            InterfaceKind::Management => self.management.keys().copied().collect(),
            InterfaceKind::Boot => self.boot.keys().copied().collect(),
            InterfaceKind::Deploy => self.deploy.keys().copied().collect(),
            k => self
                .other
                .keys()
                .filter(|(kk, _)| *kk == k)
                .map(|(_, n)| *n)
                .collect(),
        }
    }

    fn insert_fake(&mut self, fake: Arc<FakeHardware>) {
        self.power.insert("fake", fake.clone());
        self.management.insert("fake", fake.clone());
        self.deploy.insert("fake", Arc::new(FakeDeploy::new(fake)));
    }

    fn insert_redfish(&mut self, redfish: Arc<Redfish>) {
        self.power.insert("redfish", redfish.clone());
        self.management.insert("redfish", redfish.clone());
        self.redfish = Some(redfish);
    }

    /// (Re)build `redfish-virtual-media` from the redfish backend and
    /// network boot in force.
    fn insert_vmedia(&mut self, netboot: Option<Arc<crate::netboot::NetBoot>>) {
        if let Some(r) = &self.redfish {
            self.boot.insert(
                VMEDIA,
                Arc::new(RedfishVirtualMedia::new(r.clone(), netboot)),
            );
        }
    }

    fn insert_ipmi(&mut self, ipmi: Arc<Ipmi>) {
        self.power.insert("ipmitool", ipmi.clone());
        self.management.insert("ipmitool", ipmi);
    }
}

/// A node's driver: its hardware type and one implementation per interface.
#[derive(Clone)]
pub struct Composed {
    pub hardware_type: String,
    pub power: Arc<dyn PowerInterface>,
    pub management: Arc<dyn ManagementInterface>,
    pub boot: Arc<dyn BootInterface>,
    pub deploy: Arc<dyn DeployInterface>,
    others: BTreeMap<InterfaceKind, Arc<dyn Interface>>,
}

impl Composed {
    /// The implementation of `kind`.
    pub fn interface(&self, kind: InterfaceKind) -> Arc<dyn Interface> {
        match kind {
            InterfaceKind::Power => self.power.clone(),
            InterfaceKind::Management => self.management.clone(),
            InterfaceKind::Boot => self.boot.clone(),
            InterfaceKind::Deploy => self.deploy.clone(),
            // compose() fills every other kind.
            k => match self.others.get(&k) {
                Some(i) => i.clone(),
                None => Arc::new(NoInterface::new(k)),
            },
        }
    }
}

/// Why a node's driver or interfaces are refused. Each names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterfaceError {
    /// The hardware type is unknown or not enabled.
    #[error("No valid host was found. Reason: No conductor service registered which supports driver {driver}. Available drivers: {available}.")]
    DriverNotFound { driver: String, available: String },
    /// No such implementation is enabled.
    #[error("Invalid {field} \"{name}\": could not find the following interface in the 'ironic.hardware.interfaces.{kind}' entrypoint: {name}. Valid interfaces are {valid}.")]
    NotFound {
        field: String,
        kind: InterfaceKind,
        name: String,
        valid: String,
    },
    /// The implementation exists but the hardware type does not support it.
    #[error("Invalid {field} \"{name}\": {kind} interface implementation '{name}' is not supported by hardware type {driver}.")]
    Incompatible {
        field: String,
        kind: InterfaceKind,
        name: String,
        driver: String,
    },
    /// No default can be computed.
    #[error("No default value found for {kind} interface ({field}) for hardware type {driver}.")]
    NoDefault {
        field: String,
        kind: InterfaceKind,
        driver: String,
    },
}

impl InterfaceError {
    /// The node field the error is about (`driver` or `<iface>_interface`).
    pub fn field(&self) -> &str {
        match self {
            InterfaceError::DriverNotFound { .. } => "driver",
            InterfaceError::NotFound { field, .. }
            | InterfaceError::Incompatible { field, .. }
            | InterfaceError::NoDefault { field, .. } => field,
        }
    }
}

/// Python-list style, as Ironic prints valid names: `['fake', 'redfish']`.
fn py_list(names: &[String]) -> String {
    let items: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
    format!("[{}]", items.join(", "))
}

/// What `GET /v1/drivers/{name}` shows of one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceDoc {
    pub kind: InterfaceKind,
    /// The default for a node of this type (`None` if none can be computed).
    pub default: Option<String>,
    /// Enabled and supported, in config order.
    pub enabled: Vec<String>,
}

#[derive(Clone)]
struct Inner {
    types: BTreeMap<&'static str, HardwareType>,
    impls: Impls,
    config: HardwareConfig,
    /// Network boot, when plugged in (`Drivers::with(Arc<NetBoot>)`).
    netboot: Option<Arc<crate::netboot::NetBoot>>,
}

/// The registry of hardware types and interface implementations. Cheap to
/// clone.
#[derive(Clone)]
pub struct Drivers {
    inner: Arc<Inner>,
}

impl Default for Drivers {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Drivers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Drivers")
            .field("hardware_types", &self.names())
            .finish()
    }
}

/// Something [`Drivers::with`] can plug in: a BMC backend shared with tests.
pub trait Plug {
    /// Put the implementations into the registry.
    #[doc(hidden)]
    fn plug(self, impls: &mut Drivers);
}

impl Plug for Arc<FakeHardware> {
    fn plug(self, d: &mut Drivers) {
        Arc::make_mut(&mut d.inner).impls.insert_fake(self);
    }
}

impl Plug for Arc<Redfish> {
    fn plug(self, d: &mut Drivers) {
        let inner = Arc::make_mut(&mut d.inner);
        inner.impls.insert_redfish(self);
        inner.impls.insert_vmedia(inner.netboot.clone());
    }
}

impl Plug for Arc<Ipmi> {
    fn plug(self, d: &mut Drivers) {
        Arc::make_mut(&mut d.inner).impls.insert_ipmi(self);
    }
}

/// Network boot: `ipxe` and `pxe` serve the ramdisk through it.
impl Plug for Arc<crate::netboot::NetBoot> {
    fn plug(self, d: &mut Drivers) {
        let inner = Arc::make_mut(&mut d.inner);
        for name in ["ipxe", "pxe"] {
            inner
                .impls
                .boot
                .insert(name, Arc::new(PxeBoot::with_netboot(name, self.clone())));
        }
        inner.impls.insert_vmedia(Some(self.clone()));
        inner.netboot = Some(self);
    }
}

impl Plug for Arc<AgentClient> {
    fn plug(self, d: &mut Drivers) {
        Arc::make_mut(&mut d.inner)
            .impls
            .deploy
            .insert("direct", Arc::new(DirectDeploy::new(self)));
    }
}

impl Drivers {
    /// Every built-in hardware type and implementation, with the default
    /// config (`fake-hardware` and `redfish` enabled).
    pub fn new() -> Self {
        let mut impls = Impls::default();
        impls.insert_fake(Arc::new(FakeHardware::new()));
        impls.insert_redfish(Arc::new(Redfish::default()));
        impls.insert_vmedia(None);
        impls.insert_ipmi(Arc::new(Ipmi::default()));
        for name in ["ipxe", "pxe"] {
            impls.boot.insert(name, Arc::new(PxeBoot::new(name)));
        }
        impls
            .boot
            .insert("fake", Arc::new(FakeOptional::new(InterfaceKind::Boot)));
        impls.deploy.insert(
            "direct",
            Arc::new(DirectDeploy::new(Arc::new(AgentClient::default()))),
        );
        impls.deploy.insert("ramdisk", Arc::new(RamdiskDeploy));
        for kind in InterfaceKind::ALL {
            match kind {
                InterfaceKind::Network | InterfaceKind::Storage => {
                    impls
                        .other
                        .insert((kind, "noop"), Arc::new(NoopInterface::new(kind)));
                    if kind == InterfaceKind::Network {
                        impls.other.insert((kind, "flat"), Arc::new(FlatNetwork));
                    }
                }
                InterfaceKind::Power
                | InterfaceKind::Management
                | InterfaceKind::Boot
                | InterfaceKind::Deploy => {}
                k => {
                    impls
                        .other
                        .insert((k, "fake"), Arc::new(FakeOptional::new(k)));
                    if let Some(no) = no_name(k) {
                        impls.other.insert((k, no), Arc::new(NoInterface::new(k)));
                    }
                }
            }
        }
        Drivers {
            inner: Arc::new(Inner {
                types: builtin_types(),
                impls,
                config: HardwareConfig::default(),
                netboot: None,
            }),
        }
    }

    /// The built-in registry with the default config, shared: the fallback
    /// for showing interface fields a stored node lacks (nodes enrolled
    /// straight into the store).
    pub fn builtin() -> &'static Drivers {
        static BUILTIN: std::sync::OnceLock<Drivers> = std::sync::OnceLock::new();
        BUILTIN.get_or_init(Drivers::new)
    }

    /// No hardware type at all (a conductor that only manages locks; power
    /// sync is off).
    pub fn empty() -> Self {
        Drivers {
            inner: Arc::new(Inner {
                types: BTreeMap::new(),
                impls: Impls::default(),
                config: HardwareConfig {
                    enabled_hardware_types: Vec::new(),
                    ..HardwareConfig::default()
                },
                netboot: None,
            }),
        }
    }

    /// Network boot, when plugged in: the API serves its scripts and images.
    pub fn netboot(&self) -> Option<&Arc<crate::netboot::NetBoot>> {
        self.inner.netboot.as_ref()
    }

    /// Replace a BMC backend (`Arc<FakeHardware>`, `Arc<Redfish>`, `Arc<Ipmi>`).
    pub fn with(mut self, plug: impl Plug) -> Self {
        plug.plug(&mut self);
        self
    }

    /// Apply the operator's `[hardware]` config; every problem is listed.
    pub fn with_config(mut self, config: HardwareConfig) -> Result<Self, Vec<String>> {
        let problems = self.problems(&config);
        if !problems.is_empty() {
            return Err(problems);
        }
        Arc::make_mut(&mut self.inner).config = config;
        Ok(self)
    }

    /// What is wrong with `config` for this registry (each names its key).
    pub fn problems(&self, config: &HardwareConfig) -> Vec<String> {
        let mut problems = Vec::new();
        let known_types: Vec<&str> = self.inner.types.keys().copied().collect();
        for t in &config.enabled_hardware_types {
            if !known_types.contains(&t.as_str()) {
                problems.push(format!(
                    "hardware.enabled_hardware_types: unknown hardware type \"{t}\" (known: {})",
                    known_types.join(", ")
                ));
            }
        }
        for kind in InterfaceKind::ALL {
            let known = self.inner.impls.names(kind);
            let enabled = config.enabled(kind);
            for name in enabled {
                if !known.contains(&name.as_str()) {
                    problems.push(format!(
                        "hardware.enabled_{kind}_interfaces: unknown {kind} interface \"{name}\" (known: {})",
                        known.join(", ")
                    ));
                }
            }
            if let Some(d) = config.default_for(kind) {
                if !enabled.iter().any(|e| e == d) {
                    problems.push(format!(
                        "hardware.default_{kind}_interface: \"{d}\" is not in enabled_{kind}_interfaces"
                    ));
                }
            }
            for t in &config.enabled_hardware_types {
                let Some(ht) = self.inner.types.get(t.as_str()) else {
                    continue;
                };
                if !enabled.iter().any(|e| ht.supports(kind, e)) {
                    problems.push(format!(
                        "hardware.enabled_{kind}_interfaces: none of the {kind} interfaces hardware type {t} supports ({}) is enabled",
                        ht.supported(kind).join(", ")
                    ));
                }
            }
        }
        problems
    }

    /// The config in force.
    pub fn config(&self) -> &HardwareConfig {
        &self.inner.config
    }

    /// Enabled hardware type names, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        self.inner
            .types
            .keys()
            .copied()
            .filter(|t| self.is_enabled_type(t))
            .collect()
    }

    fn is_enabled_type(&self, name: &str) -> bool {
        self.inner
            .config
            .enabled_hardware_types
            .iter()
            .any(|t| t == name)
    }

    fn hardware_type(&self, driver: &str) -> Result<&HardwareType, InterfaceError> {
        match self.inner.types.get(driver) {
            Some(t) if self.is_enabled_type(driver) => Ok(t),
            _ => Err(InterfaceError::DriverNotFound {
                driver: driver.to_string(),
                available: self.names().join(", "),
            }),
        }
    }

    /// Is `driver` an enabled hardware type?
    pub fn has(&self, driver: &str) -> bool {
        self.hardware_type(driver).is_ok()
    }

    /// Check one named implementation for a node of hardware type `ht`.
    fn check(
        &self,
        ht: &HardwareType,
        kind: InterfaceKind,
        name: &str,
    ) -> Result<(), InterfaceError> {
        let enabled = self.inner.config.enabled(kind);
        let known = self.inner.impls.names(kind);
        if !enabled.iter().any(|e| e == name) || !known.contains(&name) {
            return Err(InterfaceError::NotFound {
                field: kind.field(),
                kind,
                name: name.to_string(),
                valid: py_list(enabled),
            });
        }
        if !ht.supports(kind, name) {
            return Err(InterfaceError::Incompatible {
                field: kind.field(),
                kind,
                name: name.to_string(),
                driver: ht.name.to_string(),
            });
        }
        Ok(())
    }

    /// The default implementation of `kind` for `ht`.
    fn default_of(&self, ht: &HardwareType, kind: InterfaceKind) -> Result<String, InterfaceError> {
        if let Some(d) = self.inner.config.default_for(kind) {
            self.check(ht, kind, d)?;
            return Ok(d.to_string());
        }
        let enabled = self.inner.config.enabled(kind);
        ht.supported(kind)
            .iter()
            .find(|s| enabled.iter().any(|e| e == *s))
            .map(|s| s.to_string())
            .ok_or_else(|| InterfaceError::NoDefault {
                field: kind.field(),
                kind,
                driver: ht.name.to_string(),
            })
    }

    /// Ironic's `check_and_update_node_interfaces`: every interface set in
    /// `interfaces` must be enabled and supported by `driver`; unset ones
    /// get their default. On error nothing is changed.
    pub fn check_and_fill(
        &self,
        driver: &str,
        interfaces: &mut BTreeMap<String, String>,
    ) -> Result<(), InterfaceError> {
        let ht = self.hardware_type(driver)?;
        let mut filled = interfaces.clone();
        for kind in InterfaceKind::ALL {
            let field = kind.field();
            match filled.get(&field) {
                Some(name) => self.check(ht, kind, name)?,
                None => {
                    let d = self.default_of(ht, kind)?;
                    filled.insert(field, d);
                }
            }
        }
        *interfaces = filled;
        Ok(())
    }

    /// The implementation name of `kind` on `node` (its field, else the default).
    pub fn interface_name(&self, node: &Node, kind: InterfaceKind) -> Option<String> {
        if let Some(n) = node.interfaces.get(&kind.field()) {
            return Some(n.clone());
        }
        let ht = self.inner.types.get(node.driver.as_str())?;
        self.default_of(ht, kind).ok()
    }

    /// Build the node's driver from its interface fields (defaults for
    /// fields not stored, e.g. nodes enrolled before the field existed).
    pub fn compose(&self, node: &Node) -> Result<Composed, InterfaceError> {
        let ht = self.hardware_type(&node.driver)?;
        let mut names = BTreeMap::new();
        for kind in InterfaceKind::ALL {
            let name = match node.interfaces.get(&kind.field()) {
                Some(n) => {
                    self.check(ht, kind, n)?;
                    n.clone()
                }
                None => self.default_of(ht, kind)?,
            };
            names.insert(kind, name);
        }
        self.build(ht, &names)
    }

    /// The driver a node of hardware type `driver` gets with every interface
    /// at its default (`GET /v1/drivers/{name}/properties`); `None` for a
    /// type that is unknown or not enabled.
    pub fn default_composition(&self, driver: &str) -> Option<Composed> {
        let ht = self.hardware_type(driver).ok()?;
        let mut names = BTreeMap::new();
        for kind in InterfaceKind::ALL {
            names.insert(kind, self.default_of(ht, kind).ok()?);
        }
        self.build(ht, &names).ok()
    }

    /// The implementations named in `names`, one per interface.
    fn build(
        &self,
        ht: &HardwareType,
        names: &BTreeMap<InterfaceKind, String>,
    ) -> Result<Composed, InterfaceError> {
        let impls = &self.inner.impls;
        let name = |kind: InterfaceKind| names.get(&kind).map(String::as_str).unwrap_or("");
        let power = self.pick(
            &impls.power,
            InterfaceKind::Power,
            name(InterfaceKind::Power),
        )?;
        let management = self.pick(
            &impls.management,
            InterfaceKind::Management,
            name(InterfaceKind::Management),
        )?;
        let boot = self.pick(&impls.boot, InterfaceKind::Boot, name(InterfaceKind::Boot))?;
        let deploy = self.pick(
            &impls.deploy,
            InterfaceKind::Deploy,
            name(InterfaceKind::Deploy),
        )?;
        let mut others = BTreeMap::new();
        for (kind, name) in names {
            if let Some(i) = impls.other.get(&(*kind, name.as_str())) {
                others.insert(*kind, i.clone());
            }
        }
        Ok(Composed {
            hardware_type: ht.name.to_string(),
            power,
            management,
            boot,
            deploy,
            others,
        })
    }

    /// The implementation `name` of `kind` in `impls` (`check` has already
    /// refused names this build does not have).
    fn pick<T: ?Sized>(
        &self,
        impls: &BTreeMap<&'static str, Arc<T>>,
        kind: InterfaceKind,
        name: &str,
    ) -> Result<Arc<T>, InterfaceError> {
        impls
            .get(name)
            .cloned()
            .ok_or_else(|| InterfaceError::NotFound {
                field: kind.field(),
                kind,
                name: name.to_string(),
                valid: py_list(self.inner.config.enabled(kind)),
            })
    }

    /// The power interface of `node`, if its driver can be built (power sync).
    pub fn power_for(&self, node: &Node) -> Option<Arc<dyn PowerInterface>> {
        self.compose(node).ok().map(|c| c.power)
    }

    /// `GET /v1/drivers/{name}`'s interface fields; `None` for a type that
    /// is unknown or not enabled.
    pub fn describe(&self, driver: &str) -> Option<Vec<InterfaceDoc>> {
        let ht = self.hardware_type(driver).ok()?;
        Some(
            InterfaceKind::ALL
                .into_iter()
                .map(|kind| InterfaceDoc {
                    kind,
                    default: self.default_of(ht, kind).ok(),
                    enabled: self
                        .inner
                        .config
                        .enabled(kind)
                        .iter()
                        .filter(|e| ht.supports(kind, e))
                        .cloned()
                        .collect(),
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn ifaces(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_default_config_is_valid() {
        let d = Drivers::new();
        assert!(d.problems(&HardwareConfig::default()).is_empty());
        assert_eq!(d.names(), vec!["fake-hardware", "redfish"]);
    }

    #[test]
    fn defaults_come_from_the_hardware_type_then_config() {
        let d = Drivers::new();
        let mut i = BTreeMap::new();
        d.check_and_fill("redfish", &mut i).unwrap();
        assert_eq!(i["power_interface"], "redfish");
        assert_eq!(i["boot_interface"], "ipxe");
        assert_eq!(i["deploy_interface"], "direct");
        assert_eq!(i["rescue_interface"], "no-rescue");
        assert_eq!(i["network_interface"], "noop");
        let mut i = BTreeMap::new();
        d.check_and_fill("fake-hardware", &mut i).unwrap();
        assert!(i.values().all(|v| v == "fake" || v == "noop"), "{i:?}");

        let config = HardwareConfig {
            default_boot_interface: "pxe".into(),
            ..HardwareConfig::default()
        };
        let d = Drivers::new().with_config(config).unwrap();
        let mut i = BTreeMap::new();
        d.check_and_fill("redfish", &mut i).unwrap();
        assert_eq!(i["boot_interface"], "pxe");
        // fake-hardware accepts any enabled implementation, so the
        // configured default applies to it too (as in Ironic).
        let mut i = BTreeMap::new();
        d.check_and_fill("fake-hardware", &mut i).unwrap();
        assert_eq!(i["boot_interface"], "pxe");
    }

    #[test]
    fn unsupported_or_disabled_interfaces_name_the_field() {
        let d = Drivers::new();
        let mut i = ifaces(&[("power_interface", "fake")]);
        let e = d.check_and_fill("redfish", &mut i).unwrap_err();
        assert_eq!(e.field(), "power_interface");
        assert!(
            e.to_string()
                .contains("not supported by hardware type redfish"),
            "{e}"
        );
        assert_eq!(i.len(), 1, "nothing changed on error");
        let mut i = ifaces(&[("boot_interface", "redfish-https")]);
        let e = d.check_and_fill("redfish", &mut i).unwrap_err();
        assert_eq!(e.field(), "boot_interface");
        assert!(
            e.to_string()
                .contains("Valid interfaces are ['fake', 'ipxe', 'pxe', 'redfish-virtual-media']"),
            "{e}"
        );
        // Virtual media is redfish's, not ipmi's (Ironic's generic boot list).
        let mut i = ifaces(&[("boot_interface", "redfish-virtual-media")]);
        d.check_and_fill("redfish", &mut i).unwrap();
        assert_eq!(i["boot_interface"], "redfish-virtual-media");
        let e = d.check_and_fill("ipmi", &mut BTreeMap::new()).unwrap_err();
        assert_eq!(e.field(), "driver");
    }

    #[test]
    fn bad_config_lists_every_problem() {
        let d = Drivers::new();
        let config = HardwareConfig {
            enabled_hardware_types: vec!["redfish".into(), "nope".into()],
            enabled_power_interfaces: vec!["fake".into(), "bogus".into()],
            default_deploy_interface: "ansible".into(),
            ..HardwareConfig::default()
        };
        let p = d.problems(&config);
        assert!(
            p.iter()
                .any(|p| p.contains("enabled_hardware_types") && p.contains("nope")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|p| p.contains("enabled_power_interfaces") && p.contains("bogus")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|p| p.contains("enabled_power_interfaces") && p.contains("redfish supports")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|p| p.contains("default_deploy_interface")),
            "{p:?}"
        );
        assert!(Drivers::new().with_config(config).is_err());
    }

    #[test]
    fn ipmi_is_known_but_enabled_only_by_config() {
        let d = Drivers::new();
        assert!(!d.has("ipmi"));
        let config = HardwareConfig {
            enabled_hardware_types: vec!["ipmi".into()],
            enabled_power_interfaces: vec!["ipmitool".into()],
            enabled_management_interfaces: vec!["ipmitool".into()],
            ..HardwareConfig::default()
        };
        let d = Drivers::new().with_config(config).unwrap();
        assert_eq!(d.names(), vec!["ipmi"]);
        let mut i = BTreeMap::new();
        d.check_and_fill("ipmi", &mut i).unwrap();
        assert_eq!(i["power_interface"], "ipmitool");
        assert_eq!(i["management_interface"], "ipmitool");
        assert_eq!(i["boot_interface"], "ipxe");
        assert_eq!(i["deploy_interface"], "direct");
        assert_eq!(i["console_interface"], "no-console");
        let mut i = ifaces(&[("power_interface", "fake")]);
        let e = d.check_and_fill("ipmi", &mut i).unwrap_err();
        assert_eq!(e.field(), "power_interface");
        // Enabling the type without its interfaces names what is missing.
        let p = Drivers::new().problems(&HardwareConfig {
            enabled_hardware_types: vec!["redfish".into(), "ipmi".into()],
            ..HardwareConfig::default()
        });
        assert!(
            p.iter().any(|p| p.contains("enabled_power_interfaces")
                && p.contains("hardware type ipmi supports (ipmitool)")),
            "{p:?}"
        );
    }

    #[test]
    fn describe_shows_enabled_and_default() {
        let d = Drivers::new();
        let docs = d.describe("redfish").unwrap();
        let boot = docs.iter().find(|x| x.kind == InterfaceKind::Boot).unwrap();
        assert_eq!(boot.default.as_deref(), Some("ipxe"));
        assert_eq!(boot.enabled, vec!["ipxe", "pxe", "redfish-virtual-media"]);
        assert!(d.describe("ipmi").is_none());
    }
}

//! The hardware interfaces a node has (Ironic's `<name>_interface` fields).

use serde::{Deserialize, Serialize};

/// The interfaces of a node, in Ironic's field order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InterfaceKind {
    Bios,
    Boot,
    Console,
    Deploy,
    Firmware,
    Inspect,
    Management,
    Network,
    Power,
    Raid,
    Rescue,
    Storage,
    Vendor,
}

impl InterfaceKind {
    /// Every interface, in Ironic's field order.
    pub const ALL: [InterfaceKind; 13] = [
        InterfaceKind::Bios,
        InterfaceKind::Boot,
        InterfaceKind::Console,
        InterfaceKind::Deploy,
        InterfaceKind::Firmware,
        InterfaceKind::Inspect,
        InterfaceKind::Management,
        InterfaceKind::Network,
        InterfaceKind::Power,
        InterfaceKind::Raid,
        InterfaceKind::Rescue,
        InterfaceKind::Storage,
        InterfaceKind::Vendor,
    ];

    /// Ironic's name (`power`, `boot`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            InterfaceKind::Bios => "bios",
            InterfaceKind::Boot => "boot",
            InterfaceKind::Console => "console",
            InterfaceKind::Deploy => "deploy",
            InterfaceKind::Firmware => "firmware",
            InterfaceKind::Inspect => "inspect",
            InterfaceKind::Management => "management",
            InterfaceKind::Network => "network",
            InterfaceKind::Power => "power",
            InterfaceKind::Raid => "raid",
            InterfaceKind::Rescue => "rescue",
            InterfaceKind::Storage => "storage",
            InterfaceKind::Vendor => "vendor",
        }
    }

    /// The interface called `name`.
    pub fn parse(name: &str) -> Option<InterfaceKind> {
        InterfaceKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The node field naming this interface's implementation (`power_interface`).
    pub fn field(self) -> String {
        format!("{}_interface", self.as_str())
    }

    /// Which interface's step runs first among steps of equal priority
    /// (Ironic's `CLEANING_INTERFACE_PRIORITY` / `DEPLOYING_INTERFACE_PRIORITY`;
    /// higher first).
    pub fn step_order(self) -> u8 {
        match self {
            InterfaceKind::Power => 7,
            InterfaceKind::Management => 6,
            InterfaceKind::Deploy => 5,
            InterfaceKind::Firmware => 4,
            InterfaceKind::Bios => 3,
            InterfaceKind::Raid => 2,
            _ => 1,
        }
    }
}

impl std::fmt::Display for InterfaceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

//! dnsmasq as ferric's DHCP and TFTP server for the deployment network:
//! the configuration ferric generates for it and the per-host entries it
//! manages through `dhcp-hostsdir` / `dhcp-optsdir` (Ironic's
//! `ironic/dhcp/dnsmasq.py`), rendered here without I/O.
//!
//! The chain: the firmware's PXE client asks for DHCP with option 93 (client
//! architecture) and no iPXE user class; dnsmasq answers with the first-stage
//! iPXE binary for that architecture over TFTP (`undionly.kpxe` for BIOS,
//! `snponly.efi` for x86-64 UEFI). iPXE then asks again with user class
//! `iPXE` (and option 175): this time the boot file is the HTTP URL of
//! ferric's chain script, so iPXE does not load itself again in a loop.
//! An iPXE ROM (QEMU's, many NICs') starts at the second step.

use super::PxeConfig;
use uuid::Uuid;

/// The dnsmasq tag of a node (Ironic generates a UUID per boot and keeps it
/// in `driver_internal_info.dnsmasq_tag`; a tag derived from the node needs
/// no write and is the same on every ferric process).
pub fn node_tag(node: Uuid) -> String {
    format!("ferric-{node}")
}

/// File name of a MAC's host entry in `dhcp-hostsdir`.
pub fn host_file_name(mac: &str) -> String {
    format!("ferric-{}.conf", mac.replace(':', "-"))
}

/// File name of a node's options in `dhcp-optsdir`.
pub fn opts_file_name(node: Uuid) -> String {
    format!("ferric-{node}.conf")
}

/// A PXE-enabled MAC's host entry: tag it with its node and as ferric's.
pub fn host_entry(mac: &str, node: Uuid) -> String {
    format!("{mac},set:{},set:ferric\n", node_tag(node))
}

/// The entry that replaces it on clean-up: dnsmasq keeps what it read from a
/// deleted hostsdir file until SIGHUP, so the file is rewritten to ignore
/// the MAC instead (Ironic's `clean_dhcp_opts`).
pub fn ignore_entry(mac: &str) -> String {
    format!("{mac},ignore\n")
}

/// A node's DHCP options: the first-stage iPXE binary by client
/// architecture (option 93) for a PXE client, the chain script's URL for
/// iPXE. Ironic's `dhcp_options_for_instance(ipxe_enabled=True)` with
/// `supports_ipxe_tag`, the boot file chosen per architecture instead of per
/// configured boot mode so that one node boots either way.
pub fn opts_entries(node: Uuid, config: &PxeConfig, chain_url: &str) -> String {
    let tag = node_tag(node);
    format!(
        "tag:{tag},tag:!ipxe,tag:!efi64,option:bootfile-name,{bios}\n\
         tag:{tag},tag:!ipxe,tag:efi64,option:bootfile-name,{uefi}\n\
         tag:{tag},tag:ipxe,option:bootfile-name,{chain_url}\n",
        bios = config.bios_bootfile,
        uefi = config.uefi_bootfile,
    )
}

/// The dnsmasq configuration ferric runs dnsmasq with (or an operator
/// includes): DHCP only for the MACs ferric wrote (`tag:!known` ignored),
/// the architecture and iPXE tags the option files rely on, TFTP from
/// `tftp_root`, no DNS.
pub fn dnsmasq_conf(config: &PxeConfig, leasefile: &str) -> String {
    let mut c =
        String::from("# Written by ferric (pxe.manage_dhcp); ferric manages the host entries.\n");
    c.push_str("port=0\n");
    if !config.dnsmasq_interface.is_empty() {
        c.push_str(&format!(
            "interface={}\nbind-interfaces\n",
            config.dnsmasq_interface
        ));
    }
    if !config.dnsmasq_dhcp_range.is_empty() {
        c.push_str(&format!("dhcp-range={}\n", config.dnsmasq_dhcp_range));
    }
    c.push_str(&format!(
        "dhcp-hostsdir={}\ndhcp-optsdir={}\ndhcp-leasefile={leasefile}\n",
        config.hostsdir().display(),
        config.optsdir().display()
    ));
    c.push_str(
        "dhcp-ignore=tag:!known\n\
         dhcp-match=set:ipxe,175\n\
         dhcp-userclass=set:ipxe,iPXE\n\
         dhcp-match=set:efi64,option:client-arch,7\n\
         dhcp-match=set:efi64,option:client-arch,9\n\
         dhcp-no-override\n\
         log-dhcp\n",
    );
    if !config.tftp_root.is_empty() {
        c.push_str(&format!("enable-tftp\ntftp-root={}\n", config.tftp_root));
    }
    for line in &config.dnsmasq_extra {
        c.push_str(line);
        c.push('\n');
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> Uuid {
        Uuid::parse_str("1be26c0b-03f2-4d2e-ae87-c02d7f33c123").unwrap_or_default()
    }

    #[test]
    fn host_entries_as_ironics_dnsmasq_provider() {
        assert_eq!(
            host_entry("52:54:00:12:34:56", node()),
            "52:54:00:12:34:56,set:ferric-1be26c0b-03f2-4d2e-ae87-c02d7f33c123,set:ferric\n"
        );
        assert_eq!(
            ignore_entry("52:54:00:12:34:56"),
            "52:54:00:12:34:56,ignore\n"
        );
        assert_eq!(
            host_file_name("52:54:00:12:34:56"),
            "ferric-52-54-00-12-34-56.conf"
        );
        assert_eq!(
            opts_file_name(node()),
            "ferric-1be26c0b-03f2-4d2e-ae87-c02d7f33c123.conf"
        );
    }

    #[test]
    fn options_chain_pxe_to_ipxe_for_bios_and_uefi() {
        let c = PxeConfig::default();
        let o = opts_entries(node(), &c, "http://10.0.0.1:6385/boot/boot.ipxe");
        let tag = "tag:ferric-1be26c0b-03f2-4d2e-ae87-c02d7f33c123";
        let lines: Vec<&str> = o.lines().collect();
        assert_eq!(
            lines,
            vec![
                format!("{tag},tag:!ipxe,tag:!efi64,option:bootfile-name,undionly.kpxe"),
                format!("{tag},tag:!ipxe,tag:efi64,option:bootfile-name,snponly.efi"),
                format!("{tag},tag:ipxe,option:bootfile-name,http://10.0.0.1:6385/boot/boot.ipxe"),
            ]
        );
    }

    #[test]
    fn conf_sets_the_tags_the_options_use() {
        let mut c = PxeConfig {
            state_dir: "/var/lib/ferric".into(),
            ..PxeConfig::default()
        };
        c.dnsmasq_interface = "br0".into();
        c.dnsmasq_dhcp_range = "10.0.0.100,10.0.0.200,1h".into();
        c.dnsmasq_extra = vec!["user=root".into()];
        let conf = dnsmasq_conf(&c, "/var/lib/ferric/dnsmasq/leases");
        for line in [
            "port=0",
            "interface=br0",
            "bind-interfaces",
            "dhcp-range=10.0.0.100,10.0.0.200,1h",
            "dhcp-hostsdir=/var/lib/ferric/dnsmasq/hostsdir.d",
            "dhcp-optsdir=/var/lib/ferric/dnsmasq/optsdir.d",
            "dhcp-leasefile=/var/lib/ferric/dnsmasq/leases",
            "dhcp-ignore=tag:!known",
            "dhcp-match=set:ipxe,175",
            "dhcp-userclass=set:ipxe,iPXE",
            "dhcp-match=set:efi64,option:client-arch,7",
            "dhcp-match=set:efi64,option:client-arch,9",
            "enable-tftp",
            "tftp-root=/usr/lib/ipxe",
            "user=root",
        ] {
            assert!(conf.lines().any(|l| l == line), "{line} missing in\n{conf}");
        }
    }
}

//! iPXE scripts, rendered from values (no I/O): the per-node script and the
//! chain script, with the semantics of Ironic's `ipxe_config.template` and
//! `boot.ipxe` (`ironic/drivers/modules/`).

/// What the per-node ramdisk script needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RamdiskScript {
    /// URL of the kernel (ferric's `/boot/nodes/{uuid}/{deploy|rescue}_kernel`).
    pub kernel_url: String,
    /// URL of the initrd; its last path segment is the image's name in iPXE,
    /// which the kernel's `initrd=` argument must repeat (UEFI's EFI stub
    /// loads the initrd by that name).
    pub ramdisk_url: String,
    /// The kernel command line after Ironic's fixed `selinux=0 troubleshoot=0
    /// text` (kernel_append_params, `ipa-api-url`, `ipa-global-request-id`, ...).
    pub append: String,
    /// The MAC the script was asked for (BOOTIF); `None`: iPXE's `${mac}`.
    pub bootif: Option<String>,
    /// iPXE download timeout in seconds (0: none), Ironic's `[pxe] ipxe_timeout`.
    pub timeout_secs: u64,
}

/// The last path segment of `url` (the name iPXE gives the image).
pub fn image_name(url: &str) -> &str {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    path.rsplit('/').next().unwrap_or(path)
}

/// The per-node script that boots the ramdisk: Ironic's `:deploy` label with
/// its ten attempts, growing pauses and power-off after the last.
pub fn ramdisk_script(p: &RamdiskScript) -> String {
    let timeout = if p.timeout_secs > 0 {
        format!("--timeout {} ", p.timeout_secs.saturating_mul(1000))
    } else {
        String::new()
    };
    let bootif = p.bootif.as_deref().unwrap_or("${mac}");
    let append = p.append.trim();
    let append = if append.is_empty() {
        String::new()
    } else {
        format!("{append} ")
    };
    format!(
        "#!ipxe\n\
         \n\
         set attempts:int32 10\n\
         set i:int32 0\n\
         \n\
         goto deploy\n\
         \n\
         :deploy\n\
         imgfree\n\
         kernel {timeout}{kernel} selinux=0 troubleshoot=0 text {append}BOOTIF={bootif} initrd={initrd} || goto retry\n\
         \n\
         initrd {timeout}{ramdisk} || goto retry\n\
         boot\n\
         \n\
         :retry\n\
         iseq ${{i}} ${{attempts}} && goto fail ||\n\
         inc i\n\
         echo No response, retrying in ${{i}} seconds.\n\
         sleep ${{i}}\n\
         goto deploy\n\
         \n\
         :fail\n\
         echo Failed to get a response after ${{attempts}} attempts\n\
         echo Powering off in 30 seconds.\n\
         sleep 30\n\
         poweroff\n",
        kernel = p.kernel_url,
        ramdisk = p.ramdisk_url,
        initrd = image_name(&p.ramdisk_url),
    )
}

/// The script for a node that should not boot a ramdisk now (deployed,
/// available, ...): boot the local disk, as Ironic's `:boot_whole_disk`
/// (`exit 0` lets the firmware try its next boot device where `sanboot`
/// cannot, e.g. UEFI).
pub fn local_disk_script() -> String {
    "#!ipxe\n\nsanboot --no-describe || exit 0\n".to_string()
}

/// The chain script (Ironic's `boot.ipxe`): try every NIC's MAC against
/// `mac_uri` (which ends with `/`; the MAC is appended as `aa-bb-..`), the
/// first that answers with a script wins; a 404 moves to the next NIC.
pub fn chain_script(mac_uri: &str) -> String {
    format!(
        "#!ipxe\n\
         \n\
         # Loop over all network devices and boot from the first one whose MAC\n\
         # ferric knows (a port of a node).\n\
         set netid:int32 -1\n\
         :loop\n\
         inc netid || chain {mac_uri}${{mac:hexhyp}} || goto old_rom\n\
         isset ${{net${{netid}}/mac}} || goto loop_done\n\
         echo Attempting to boot from MAC ${{net${{netid}}/mac:hexhyp}}\n\
         chain {mac_uri}${{net${{netid}}/mac:hexhyp}} || goto loop\n\
         \n\
         # The chained script returned: sanboot failed (some UEFI cases);\n\
         # exit 0 so the firmware continues with the next device.\n\
         echo Exiting pxe config to allow boot to continue on next device\n\
         exit 0\n\
         \n\
         :loop_done\n\
         echo PXE boot failed! No configuration found for any of the present NICs.\n\
         echo Press any key to reboot...\n\
         prompt --timeout 180\n\
         reboot\n\
         \n\
         :old_rom\n\
         echo PXE boot failed! No configuration found for NIC ${{mac:hexhyp}}.\n\
         echo Please update your iPXE ROM and retry.\n\
         echo Press any key to reboot...\n\
         prompt --timeout 180\n\
         reboot\n"
    )
}

/// A MAC in iPXE's `hexhyp` (`52-54-00-12-34-56`) or colon form, as
/// ferric stores port addresses (lower case, colons); `None` if malformed.
pub fn parse_mac(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    (parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit())))
    .then(|| parts.join(":").to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> RamdiskScript {
        RamdiskScript {
            kernel_url: "http://10.0.0.1:6385/boot/nodes/n1/deploy_kernel".into(),
            ramdisk_url: "http://10.0.0.1:6385/boot/nodes/n1/deploy_ramdisk".into(),
            append: "nofb vga=normal ipa-api-url=http://10.0.0.1:6385".into(),
            bootif: Some("52:54:00:12:34:56".into()),
            timeout_secs: 0,
        }
    }

    #[test]
    fn ramdisk_script_is_ironics_deploy_label() {
        let s = ramdisk_script(&params());
        // Ironic's template, with its Jinja values substituted.
        let expected = "#!ipxe\n\nset attempts:int32 10\nset i:int32 0\n\ngoto deploy\n\n:deploy\nimgfree\n\
kernel http://10.0.0.1:6385/boot/nodes/n1/deploy_kernel selinux=0 troubleshoot=0 text nofb vga=normal ipa-api-url=http://10.0.0.1:6385 BOOTIF=52:54:00:12:34:56 initrd=deploy_ramdisk || goto retry\n\n\
initrd http://10.0.0.1:6385/boot/nodes/n1/deploy_ramdisk || goto retry\nboot\n\n\
:retry\niseq ${i} ${attempts} && goto fail ||\ninc i\necho No response, retrying in ${i} seconds.\nsleep ${i}\ngoto deploy\n\n\
:fail\necho Failed to get a response after ${attempts} attempts\necho Powering off in 30 seconds.\nsleep 30\npoweroff\n";
        assert_eq!(s, expected);
    }

    #[test]
    fn timeout_and_ipxe_mac_variable() {
        let mut p = params();
        p.timeout_secs = 60;
        p.bootif = None;
        p.append = "   ".into();
        let s = ramdisk_script(&p);
        assert!(s.contains(
            "kernel --timeout 60000 http://10.0.0.1:6385/boot/nodes/n1/deploy_kernel selinux=0 troubleshoot=0 text BOOTIF=${mac} initrd=deploy_ramdisk || goto retry"
        ), "{s}");
        assert!(s.contains(
            "initrd --timeout 60000 http://10.0.0.1:6385/boot/nodes/n1/deploy_ramdisk || goto retry"
        ));
    }

    #[test]
    fn rescue_initrd_name_follows_the_url() {
        let mut p = params();
        p.ramdisk_url = "http://h/boot/nodes/n1/rescue_ramdisk".into();
        assert!(ramdisk_script(&p).contains("initrd=rescue_ramdisk "));
        assert_eq!(image_name("http://h/a/b?x=/y"), "b");
    }

    #[test]
    fn chain_script_loops_over_nics_as_boot_ipxe() {
        let s = chain_script("http://10.0.0.1:6385/boot/ipxe/mac/");
        assert!(s.starts_with("#!ipxe\n"));
        assert!(s.contains(
            "inc netid || chain http://10.0.0.1:6385/boot/ipxe/mac/${mac:hexhyp} || goto old_rom\n"
        ));
        assert!(s.contains("isset ${net${netid}/mac} || goto loop_done\n"));
        assert!(s.contains(
            "chain http://10.0.0.1:6385/boot/ipxe/mac/${net${netid}/mac:hexhyp} || goto loop\n"
        ));
        assert!(s.contains("exit 0\n"));
        assert!(s.contains(":loop_done\n") && s.contains(":old_rom\n"));
    }

    #[test]
    fn whole_disk_script() {
        assert_eq!(
            local_disk_script(),
            "#!ipxe\n\nsanboot --no-describe || exit 0\n"
        );
    }

    #[test]
    fn macs_in_either_form() {
        assert_eq!(
            parse_mac("52-54-00-AB-cd-01").as_deref(),
            Some("52:54:00:ab:cd:01")
        );
        assert_eq!(
            parse_mac("52:54:00:ab:cd:01").as_deref(),
            Some("52:54:00:ab:cd:01")
        );
        assert_eq!(parse_mac("52-54-00-ab-cd"), None);
        assert_eq!(parse_mac("52-54-00-ab-cd-zz"), None);
        assert_eq!(parse_mac("../../etc"), None);
    }
}

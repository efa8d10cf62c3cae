//! A bootable ISO of a kernel, an initrd and a kernel command line, for BIOS
//! and UEFI, as Ironic's `images.create_boot_iso` lays it out: ISOLINUX
//! (El Torito, no emulation) for BIOS, and an EFI system partition image
//! (FAT, `EFI/BOOT/BOOTX64.EFI`, a standalone GRUB whose embedded
//! configuration finds the ISO's `/vmlinuz` and boots it) as the alternate
//! El Torito entry for UEFI. Built with the maintained tools Debian ships:
//! xorriso, grub-mkstandalone (grub-efi-amd64-bin), mkfs.vfat and mtools;
//! ISOLINUX from the isolinux and syslinux-common packages.
//!
//! This is the first piece of the `redfish-virtual-media` boot interface
//! (issue 15, stage 3); the interface itself is not built yet.

use std::path::{Path, PathBuf};
use tokio::process::Command;

/// Where the boot loaders are (Debian's paths by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsoTools {
    pub isolinux_bin: PathBuf,
    pub ldlinux_c32: PathBuf,
}

impl Default for IsoTools {
    fn default() -> Self {
        IsoTools {
            isolinux_bin: "/usr/lib/ISOLINUX/isolinux.bin".into(),
            ldlinux_c32: "/usr/lib/syslinux/modules/bios/ldlinux.c32".into(),
        }
    }
}

/// ISOLINUX's configuration (BIOS): boot `/vmlinuz` with `/initrd`.
pub fn isolinux_cfg(params: &str) -> String {
    format!(
        "default boot\nprompt 0\ntimeout 0\nlabel boot\n  kernel /vmlinuz\n  append initrd=/initrd text {}\n",
        params.trim()
    )
}

/// GRUB's configuration (UEFI), embedded in the standalone GRUB: the root
/// is the ISO (found by its kernel), not GRUB's memdisk.
pub fn grub_cfg(params: &str) -> String {
    format!(
        "search --no-floppy --file /vmlinuz --set=root\nset default=0\nset timeout=0\nmenuentry \"boot\" {{\n  linux /vmlinuz text {}\n  initrd /initrd\n}}\n",
        params.trim()
    )
}

async fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd
        .output()
        .await
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Build `out` from `kernel`, `initrd` and `params` (a kernel command
/// line), working in `work` (an empty directory the caller removes).
pub async fn build_boot_iso(
    kernel: &Path,
    initrd: &Path,
    params: &str,
    work: &Path,
    out: &Path,
    tools: &IsoTools,
) -> Result<(), String> {
    if params.contains(['\n', '"']) {
        return Err("the kernel command line must be one line without quotes".into());
    }
    let io = |what: &str, e: std::io::Error| format!("building the ISO: {what}: {e}");
    let root = work.join("root");
    let isolinux = root.join("isolinux");
    tokio::fs::create_dir_all(&isolinux)
        .await
        .map_err(|e| io("creating its tree", e))?;
    tokio::fs::copy(kernel, root.join("vmlinuz"))
        .await
        .map_err(|e| io("copying the kernel", e))?;
    tokio::fs::copy(initrd, root.join("initrd"))
        .await
        .map_err(|e| io("copying the initrd", e))?;
    tokio::fs::copy(&tools.isolinux_bin, isolinux.join("isolinux.bin"))
        .await
        .map_err(|e| io("copying isolinux.bin (package isolinux)", e))?;
    tokio::fs::copy(&tools.ldlinux_c32, isolinux.join("ldlinux.c32"))
        .await
        .map_err(|e| io("copying ldlinux.c32 (package syslinux-common)", e))?;
    tokio::fs::write(isolinux.join("isolinux.cfg"), isolinux_cfg(params))
        .await
        .map_err(|e| io("writing isolinux.cfg", e))?;
    let grub = work.join("grub.cfg");
    tokio::fs::write(&grub, grub_cfg(params))
        .await
        .map_err(|e| io("writing grub.cfg", e))?;
    let efi = work.join("BOOTX64.EFI");
    run(
        Command::new("grub-mkstandalone")
            .arg("--format=x86_64-efi")
            .arg(format!("--output={}", efi.display()))
            .arg("--locales=")
            .arg("--fonts=")
            .arg(format!("boot/grub/grub.cfg={}", grub.display())),
        "grub-mkstandalone",
    )
    .await?;
    let esp = isolinux.join("efiboot.img");
    run(
        Command::new("mkfs.vfat").arg("-C").arg(&esp).arg("4096"),
        "mkfs.vfat",
    )
    .await?;
    run(
        Command::new("mmd")
            .arg("-i")
            .arg(&esp)
            .arg("::/EFI")
            .arg("::/EFI/BOOT"),
        "mmd",
    )
    .await?;
    run(
        Command::new("mcopy")
            .arg("-i")
            .arg(&esp)
            .arg(&efi)
            .arg("::/EFI/BOOT/BOOTX64.EFI"),
        "mcopy",
    )
    .await?;
    run(
        Command::new("xorriso")
            .args(["-as", "mkisofs", "-o"])
            .arg(out)
            .args(["-V", "FERRIC_BOOT", "-J", "-R"])
            .args(["-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat"])
            .args(["-no-emul-boot", "-boot-load-size", "4", "-boot-info-table"])
            .args([
                "-eltorito-alt-boot",
                "-e",
                "isolinux/efiboot.img",
                "-no-emul-boot",
            ])
            .arg(&root),
        "xorriso",
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loader_configs_carry_the_command_line() {
        assert_eq!(
            isolinux_cfg(" console=ttyS0 ipa-api-url=http://h:6385 "),
            "default boot\nprompt 0\ntimeout 0\nlabel boot\n  kernel /vmlinuz\n  append initrd=/initrd text console=ttyS0 ipa-api-url=http://h:6385\n"
        );
        let g = grub_cfg("console=ttyS0");
        assert!(g.starts_with("search --no-floppy --file /vmlinuz --set=root\n"));
        assert!(g.contains("  linux /vmlinuz text console=ttyS0\n  initrd /initrd\n"));
    }
}

//! The boot ISO (`netboot::iso`) boots a real kernel in QEMU (TCG), with
//! BIOS (SeaBIOS, ISOLINUX) and UEFI (OVMF, GRUB), and the kernel gets the
//! command line. Needs a kernel: `FERRIC_TEST_KERNEL` (a vmlinuz; the test
//! is skipped only when it is unset). `.ci/netboot.sh` runs it with
//! Debian's kernel.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferric_conductor::netboot::iso::{build_boot_iso, IsoTools};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn initrd(dir: &Path) -> std::path::PathBuf {
    let root = dir.join("ird");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("proc")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    std::fs::write(
        root.join("init"),
        "#!/bin/busybox sh\n/bin/busybox mount -t proc proc /proc\n\
         /bin/busybox echo \"ISO-MARKER $(/bin/busybox cat /proc/cmdline)\"\n/bin/busybox poweroff -f\n",
    )
    .unwrap();
    Command::new("chmod")
        .arg("+x")
        .arg(root.join("init"))
        .status()
        .unwrap();
    let out = dir.join("initrd.gz");
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd {} && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1 > {}",
            root.display(),
            out.display()
        ))
        .status()
        .unwrap();
    assert!(st.success());
    out
}

/// Boot `iso` with `firmware` args; the serial console's text.
fn boot(iso: &Path, dir: &Path, name: &str, firmware: &[String]) -> String {
    let log = dir.join(format!("{name}.log"));
    let mut child = Command::new("qemu-system-x86_64")
        .args(firmware)
        .args([
            "-m",
            "512",
            "-display",
            "none",
            "-monitor",
            "none",
            "-no-reboot",
        ])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .arg("-cdrom")
        .arg(iso)
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(240);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > until {
            child.kill().unwrap();
            child.wait().unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default()).into_owned()
}

#[tokio::test]
async fn the_boot_iso_boots_with_bios_and_uefi() {
    let Ok(kernel) = std::env::var("FERRIC_TEST_KERNEL") else {
        ferric_store::testing::skip("FERRIC_TEST_KERNEL", "run .ci/netboot.sh");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let initrd = initrd(dir.path());
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let iso = dir.path().join("boot.iso");
    let params = "console=ttyS0 panic=-1 ipa-api-url=http://10.0.0.1:6385 marker=iso-test";
    build_boot_iso(
        Path::new(&kernel),
        &initrd,
        params,
        &work,
        &iso,
        &IsoTools::default(),
    )
    .await
    .unwrap();

    let bios = boot(
        &iso,
        dir.path(),
        "bios",
        &[
            "-machine".into(),
            "pc,accel=tcg".into(),
            "-boot".into(),
            "d".into(),
        ],
    );
    assert!(
        bios.contains("Linux version"),
        "BIOS: no kernel banner:\n{bios}"
    );
    assert!(
        bios.lines().any(|l| l.starts_with("ISO-MARKER")
            && l.contains("marker=iso-test")
            && l.contains("ipa-api-url=http://10.0.0.1:6385")),
        "BIOS: no marker with the command line:\n{bios}"
    );

    let vars = dir.path().join("vars.fd");
    std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars).unwrap();
    let uefi = boot(
        &iso,
        dir.path(),
        "uefi",
        &[
            "-machine".into(),
            "q35,accel=tcg".into(),
            "-drive".into(),
            "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd".into(),
            "-drive".into(),
            format!("if=pflash,format=raw,file={}", vars.display()),
        ],
    );
    assert!(
        uefi.contains("Linux version"),
        "UEFI: no kernel banner:\n{uefi}"
    );
    assert!(
        uefi.lines()
            .any(|l| l.starts_with("ISO-MARKER") && l.contains("marker=iso-test")),
        "UEFI: no marker with the command line:\n{uefi}"
    );
}

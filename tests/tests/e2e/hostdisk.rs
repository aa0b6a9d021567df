//! End-to-end tests of the host disk (`host-disk=`): a raw image QEMU gives
//! the host as a virtio-blk, driven by the hypervisor itself through
//! `virtio-drivers` and never shown to the guest; and a `host-disk=` naming
//! something else stopping the boot with an error naming it.

use std::path::PathBuf;

use xtask::net::Nic;
use xtask::qemu::{self, RunOutcome, Verdict};

use super::{fail, hv_config, run};

/// Sectors of the test image (1 MiB).
const SECTORS: usize = 2048;
/// The marker that lets the self-test write the last sector (hypervisor's
/// `hostdisk::SCRATCH_MAGIC`).
const SCRATCH_MAGIC: &[u8] = b"SYNTHPCI-HOSTDISK-SCRATCH-LAST\n";

/// A raw image: sector 0 starts with the scratch marker, then a pattern; the
/// last sector holds another pattern; in between zeros.
fn image() -> Vec<u8> {
    let mut img = vec![0u8; SECTORS * 512];
    img[..SCRATCH_MAGIC.len()].copy_from_slice(SCRATCH_MAGIC);
    for (i, b) in img
        .iter_mut()
        .enumerate()
        .take(512)
        .skip(SCRATCH_MAGIC.len())
    {
        *b = (i as u8).wrapping_mul(7);
    }
    let last = (SECTORS - 1) * 512;
    for (i, b) in img[last..].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(13).wrapping_add(1);
    }
    img
}

fn hex16(b: &[u8]) -> String {
    b.iter().take(16).map(|x| format!("{x:02x}")).collect()
}

/// Writes the image to a file of its own in the temp dir.
fn write_image(name: &str, img: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hostdisk-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let path = dir.join(name);
    std::fs::write(&path, img).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path
}

/// Hypervisor lines (after `[hv] `).
fn hv_lines(out: &RunOutcome) -> Vec<&str> {
    out.console
        .iter()
        .filter_map(|l| l.strip_prefix("[hv] "))
        .collect()
}

#[test]
#[ignore = "boots Linux under QEMU: run through cargo xtask test"]
fn host_disk_is_driven_by_the_hypervisor_and_hidden_from_the_guest() {
    let img = image();
    let path = write_image("disk.img", &img);
    let mut cfg = hv_config("echo PCI=$(ls /sys/bus/pci/devices); echo PARTITIONS=$(tail -n +3 /proc/partitions | wc -l)");
    cfg.nic = Nic::None;
    cfg.host_disk = Some(path.clone());
    cfg.hypervisor_args = "host-disk-selftest its-selftest".into();
    let out = run(&cfg);
    if out.verdict != Verdict::PoweredOff {
        fail(
            &out,
            &format!("expected a clean power-off, got {}", out.summary()),
        );
    }
    let hv = hv_lines(&out);
    let has = |s: &str| hv.iter().any(|l| l.contains(s));
    let probe = format!(
        "host disk {}: virtio-blk, {SECTORS} sectors, read-write",
        qemu::HOST_DISK_ADDRESS
    );
    // QEMU's virt has an ITS and no message-based SPIs: the disk's MSI-X
    // goes through the ITS, DeviceID = its Requester ID (00:05.0 = 0x28,
    // `msi-map = <0 &its 0 0x10000>`), queue 0 on EventID 0, the first LPI.
    let its = "ITS #0 /intc@8000000/its@8080000 at 0x8080000: DeviceID 16 bits";
    if !has(its) {
        fail(&out, &format!("no `{its}` line"));
    }
    let msix = "MSI-X (ITS #0 DeviceID 0x28, LPI 8192)";
    if !has(&probe) || !has("DMA bypass through /smmuv3") || !has(msix) {
        fail(
            &out,
            &format!("no `{probe}` line with `{msix}` and SMMU bypass"),
        );
    }
    let last = SECTORS - 1;
    for want in [
        format!("host disk selftest: sector 0: {}", hex16(&img)),
        format!(
            "host disk selftest: sector {last}: {}",
            hex16(&img[last * 512..])
        ),
        format!("host disk selftest: scratch sector {last} written, read back and restored: ok"),
        format!("host disk selftest: read completed through {msix}"),
        // `its-selftest`: MAPD, MAPTI on CPU 0, MOVI to CPU 1, INT.
        "ITS selftest: LPI 8194 arrived on CPU 1 after MOVI: ok".to_string(),
    ] {
        if !has(&want) {
            fail(&out, &format!("no `{want}` line"));
        }
    }
    // The completions were counted as LPIs of the disk's queue vector.
    let taken = hv
        .iter()
        .find_map(|l| l.strip_prefix("LPI 8192: HostDisk, ITS #0 DeviceID 0x28 EventID 0 on CPU "))
        .and_then(|l| l.split_once(": taken "))
        .and_then(|(_, n)| n.trim().parse::<u64>().ok())
        .unwrap_or_else(|| fail(&out, "no `LPI 8192: HostDisk ...: taken N` line"));
    assert!(taken >= 1, "the disk's LPI was never taken");
    if hv.iter().any(|l| l.starts_with("ERROR")) {
        fail(&out, "the hypervisor reported an error");
    }
    // The guest sees only the synthetic segment, and no disk.
    let pci = out
        .console
        .iter()
        .find_map(|l| l.strip_prefix("PCI="))
        .unwrap_or_else(|| fail(&out, "no PCI= line"));
    assert!(
        pci.split_whitespace().all(|d| d.starts_with("0001:")),
        "the guest sees a host PCI function: {pci}"
    );
    assert!(
        out.console.iter().any(|l| l.trim() == "PARTITIONS=0"),
        "the guest has a block device:\n{}",
        out.tail(40)
    );
    // The scratch sector was restored: the image is as written.
    let after = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(after == img, "the image changed on disk");
    let _ = std::fs::remove_file(&path);
}

/// Boots with `host-disk=` naming `sbdf` (no disk attached) and returns the
/// console; the boot must stop with status 2 (a hypervisor fault).
fn refused(sbdf: &str) -> RunOutcome {
    let mut cfg = hv_config("true");
    cfg.nic = Nic::None;
    cfg.hypervisor_args = format!("host-disk={sbdf}");
    let out = run(&cfg);
    if out.verdict != Verdict::HypervisorFault {
        fail(
            &out,
            &format!("expected the boot to stop, got {}", out.summary()),
        );
    }
    out
}

#[test]
#[ignore = "boots Linux under QEMU: run through cargo xtask test"]
fn host_disk_naming_something_else_stops_the_boot_naming_it() {
    // QEMU's host bridge (Red Hat 1b36:0008) is not a virtio-blk.
    let out = refused("0000:00:00.0");
    let want = "ERROR fatal: host-disk=0000:00:00.0: 1b36:0008 is not a virtio-blk";
    if !hv_lines(&out).iter().any(|l| l.starts_with(want)) {
        fail(&out, &format!("no `{want}` line"));
    }
    // An empty slot.
    let out = refused("0000:00:07.0");
    let want = "ERROR fatal: host-disk=0000:00:07.0: no PCI function there";
    if !hv_lines(&out).iter().any(|l| l.starts_with(want)) {
        fail(&out, &format!("no `{want}` line"));
    }
}

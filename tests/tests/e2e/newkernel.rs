//! The second guest kernel: the backports suite's newest (`XTASK_GUEST_KERNEL_NEW`,
//! same initramfs), booted under the hypervisor beside the stable one.
//!
//! Fault 5 of issue 9: that kernel tells user space that FEAT_MOPS exists
//! (HWCAP2_MOPS, from ID_AA64ISAR2_EL1.MOPS), static busybox's memcpy then runs
//! CPYFP, which was UNDEFINED (HCRX_EL2.MSCEn clear): /init died of SIGILL
//! and the kernel panicked. The feature table now either enables a feature at
//! EL2 or hides it.

use super::*;

/// The newer kernel `Image` `cargo xtask test` passes.
fn new_kernel() -> std::path::PathBuf {
    std::env::var_os(qemu::env::NEW_KERNEL)
        .map(Into::into)
        .unwrap_or_else(|| panic!("{} is not set", qemu::env::NEW_KERNEL))
}

/// Lists the loaded modules, sorts 200000 lines both ways (busybox `sort` copies every line: memcpy and
/// memmove all along) and checks the round trip, after the module loads of
/// /init (the initramfs carries both kernels' modules).
const NEW_KERNEL_SCRIPT: &str = r#"echo KREL=$(uname -r)
grep -qw mops /proc/cpuinfo && echo HWCAP-MOPS=yes
lsmod | sed 's/^/NEWLSMOD:/' 
seq 1 200000 >/tmp/a
sort -rn /tmp/a | sort -n | cmp - /tmp/a && echo SORT-ROUND-TRIP=ok
dmesg -r | sed 's/^/NEWDMESG:/'
exit 0"#;

fn new_kernel_boot() -> &'static RunOutcome {
    static BOOT: OnceLock<RunOutcome> = OnceLock::new();
    BOOT.get_or_init(|| {
        let mut cfg = hv_config(NEW_KERNEL_SCRIPT);
        cfg.kernel = new_kernel();
        run(&cfg)
    })
}

/// The lines a kernel of this series logs at warning level on QEMU's `virt
/// -cpu max` at EL1 with or without the hypervisor (seen booting the same
/// `Image` directly on QEMU with `virtualization=off`): the CPU nodes of
/// neither DT describe caches.
const KNOWN_EL1_WARNINGS: &[&str] = &["cacheinfo: Unable to detect cache hierarchy"];

/// Fault 5: the newer kernel boots under the hypervisor, advertises MOPS, and
/// static busybox's memory copies run (no SIGILL at init or later).
#[test]
#[ignore = "boots Linux under QEMU: run through cargo xtask test"]
fn newer_kernel_runs_static_busybox_memcpy_with_mops() {
    let out = new_kernel_boot();
    expect_powered_off(out);
    let krel = tagged(out, "KREL");
    assert!(
        krel.first().is_some_and(|r| !r.starts_with("6.1.")),
        "kernel release {krel:?}: not the newer kernel"
    );
    assert_eq!(tagged(out, "HWCAP-MOPS"), ["yes"], "{}", out.tail(30));
    assert_eq!(tagged(out, "SORT-ROUND-TRIP"), ["ok"], "{}", out.tail(30));
}

/// The initramfs's modules load under the newer kernel too.
#[test]
#[ignore = "boots Linux under QEMU: run through cargo xtask test"]
fn newer_kernel_loads_its_modules_from_the_shared_initramfs() {
    let out = new_kernel_boot();
    expect_powered_off(out);
    // virtio_pci is built into this kernel; these are modules in both.
    let loaded: Vec<&str> = prefixed(out, "NEWLSMOD")
        .into_iter()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for m in ["virtio_blk", "ext4", "e1000e"] {
        assert!(loaded.contains(&m), "{m} not loaded: {loaded:?}");
    }
    let failed: Vec<&str> = out
        .console
        .iter()
        .filter(|l| l.contains("xtask-init: modprobe"))
        .map(String::as_str)
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
}

/// The newer kernel logs no warning under the hypervisor beyond those it logs
/// on QEMU alone at EL1.
#[test]
#[ignore = "boots Linux under QEMU: run through cargo xtask test"]
fn newer_kernel_dmesg_under_the_hypervisor_is_clean() {
    let out = new_kernel_boot();
    expect_powered_off(out);
    let dmesg = prefixed(out, "NEWDMESG");
    assert!(
        dmesg.len() > 100,
        "dmesg not captured: {} lines",
        dmesg.len()
    );
    let bad: Vec<&str> = all_warnings(&dmesg)
        .into_iter()
        .filter(|l| !KNOWN_EL1_WARNINGS.iter().any(|k| l.contains(k)))
        .collect();
    assert!(bad.is_empty(), "warnings:\n{}", bad.join("\n"));
}

//! End-to-end tests of PSCI, SMCCC and the trapped GIC system registers: as
//! Linux uses them, and as the probe guest's `psci`, `smccc` and `icc` groups
//! check them.

use std::sync::OnceLock;

use xtask::qemu::{self, Disk, Verdict};

use super::probe::{run_probe, ProbeRun};
use super::{fail, hv_config, prefixed, run};

/// Prints each `/sys/devices/system/cpu/vulnerabilities/*` entry and Linux's
/// view of the firmware.
const VULNERABILITIES_SCRIPT: &str = r#"cd /sys/devices/system/cpu/vulnerabilities
for f in *; do echo "VULN:$f=$(cat $f)"; done
dmesg | grep -E 'psci|SMC Calling' | sed 's/^/FW:/'
exit 0"#;

/// The guest's Spectre reports come from the CPU's ID registers and the
/// firmware's SMCCC_ARCH_WORKAROUND_n answers, which the hypervisor passes on
/// (it asks the host firmware at boot): booted under the hypervisor and
/// directly on QEMU, `/sys/devices/system/cpu/vulnerabilities/*` read the same.
#[test]
#[ignore = "boots Linux under QEMU: run through cargo xtask test"]
fn spectre_vulnerabilities_read_the_same_as_directly_on_qemu() {
    let hv_cfg = hv_config(VULNERABILITIES_SCRIPT);
    let mut direct_cfg = hv_cfg.clone();
    direct_cfg.mode = qemu::Mode::Direct;
    let mut reports = Vec::new();
    for cfg in [&hv_cfg, &direct_cfg] {
        let out = run(cfg);
        if out.verdict != Verdict::PoweredOff || out.exit_code() != 0 {
            fail(
                &out,
                &format!("{:?} boot did not power off cleanly", cfg.mode),
            );
        }
        let vulns: Vec<String> = prefixed(&out, "VULN")
            .into_iter()
            .map(str::to_string)
            .collect();
        if !vulns.iter().any(|v| v.starts_with("spectre_v2=")) {
            fail(&out, "no spectre_v2 entry");
        }
        reports.push(vulns);
    }
    assert_eq!(
        reports[0], reports[1],
        "under the hypervisor (left) and directly on QEMU (right)"
    );
}

/// One probe boot (two CPUs) running the `psci`, `smccc` and `icc` groups,
/// shared by the tests below.
fn probe_run() -> &'static ProbeRun {
    static RUN: OnceLock<ProbeRun> = OnceLock::new();
    RUN.get_or_init(|| {
        run_probe("psci,smccc,icc", |c| {
            c.smp = 2;
            c.disk = Disk::None;
        })
    })
}

/// The checks of the `psci` group.
const PSCI_CHECKS: &[&str] = &[
    "psci/version",
    "psci/features-cpu-off",
    "psci/features-cpu-on",
    "psci/features-affinity-info",
    "psci/features-system-off",
    "psci/features-system-reset2",
    "psci/features-smccc-version",
    "psci/features-cpu-suspend-64",
    "psci/features-cpu-suspend-32",
    "psci/features-migrate",
    "psci/features-system-suspend",
    "psci/features-mem-protect",
    "psci/features-mem-protect-check-range",
    "psci/features-unknown",
    "psci/migrate-not-supported",
    "psci/system-suspend-not-supported",
    "psci/mem-protect-not-supported",
    "psci/mem-protect-check-range-not-supported",
    "psci/unknown-function-not-supported",
    "psci/migrate-info-type",
    "psci/system-reset2-reserved-type",
    "psci/system-reset2-vendor-type",
    "psci/cpu-on-reserved-bits-24-31",
    "psci/cpu-on-reserved-bits-40-63",
    "psci/cpu-on-reserved-left-cpu-off",
    "psci/cpu-on-entry-outside-ram",
    "psci/cpu-on-absent-cpu",
    "psci/cpu-on-self-already-on",
    "psci/affinity-info-self-on",
    "psci/affinity-info-level1-on",
    "psci/affinity-info-level-4",
    "psci/affinity-info-reserved-bits",
    "psci/affinity-info-absent",
    "psci/cpu-suspend-reserved-bit-31",
    "psci/cpu-suspend-unknown-state-id",
    "psci/cpu-suspend-powerdown-entry-outside-ram",
    "psci/cpu-suspend-standby-wakes",
    "psci/secondary-started",
    "psci/secondary-version",
    "psci/secondary-cpu-on-reserved-bits",
    "psci/secondary-cpu-on-boot-already-on",
    "psci/secondary-affinity-info-boot-on",
    "psci/secondary-affinity-info-self-on",
    "psci/secondary-cpu-suspend-reserved",
    "psci/cpu-off-then-affinity-info-off",
    "psci/cpu-on-32-ignores-upper-half",
    "psci/cpu-suspend-powerdown-resumes-at-entry",
];

/// The checks of the `smccc` group.
const SMCCC_CHECKS: &[&str] = &[
    "smccc/psci-features-smccc-version",
    "smccc/version",
    "smccc/arch-features-version",
    "smccc/arch-features-arch-features",
    "smccc/arch-features-soc-id",
    "smccc/arch-features-psci-id",
    "smccc/unknown-arch-call",
    "smccc/workaround-1",
    "smccc/workaround-2",
    "smccc/workaround-3",
];

/// The checks of the `icc` group.
const ICC_CHECKS: &[&str] = &[
    "icc/gicd-ctlr-ds",
    "icc/sgi0r-group0-self",
    "icc/asgi1r-group0-self",
    "icc/sgi1r-group1-self",
    "icc/sgi1r-group0-self",
    "icc/sgi0r-not-group1",
    "icc/asgi1r-not-group1",
    "icc/sgi0r-other-cpu",
    "icc/sgi1r-other-cpu",
    "icc/sgi0r-irm-all-but-self",
    "icc/sgi1r-read-undefined",
];

/// Issue 9, fault 1: CPU_ON with reserved MPIDR bits set started a CPU.
#[test]
#[ignore = "end-to-end: run with `cargo xtask test`"]
fn issue9_fault1_cpu_on_with_reserved_mpidr_bits_is_invalid_parameters() {
    probe_run().assert_passed(&[
        "psci/cpu-on-reserved-bits-24-31",
        "psci/cpu-on-reserved-left-cpu-off",
    ]);
}

/// Issue 9, fault 2: CPU_SUSPEND was missing.
#[test]
#[ignore = "end-to-end: run with `cargo xtask test`"]
fn issue9_fault2_cpu_suspend_is_reported_and_suspends() {
    probe_run().assert_passed(&[
        "psci/features-cpu-suspend-64",
        "psci/features-cpu-suspend-32",
        "psci/cpu-suspend-standby-wakes",
    ]);
}

/// Issue 9, fault 3: ICC_SGI0R_EL1 and ICC_ASGI1R_EL1 writes were undefined.
#[test]
#[ignore = "end-to-end: run with `cargo xtask test`"]
fn issue9_fault3_sgi0r_and_asgi1r_generate_group0_sgis() {
    probe_run().assert_passed(&["icc/sgi0r-group0-self", "icc/asgi1r-group0-self"]);
}

/// Every PSCI function with valid, reserved and out-of-range arguments, from
/// two CPUs; CPU_SUSPEND's standby and powerdown.
#[test]
#[ignore = "end-to-end: run with `cargo xtask test`"]
fn probe_psci_checks_pass() {
    probe_run().assert_passed(PSCI_CHECKS);
}

/// SMCCC discovery, and the workaround answers are the host firmware's, as
/// the hypervisor's boot line reports them.
#[test]
#[ignore = "end-to-end: run with `cargo xtask test`"]
fn probe_smccc_checks_pass_and_workarounds_are_the_firmwares() {
    let run = probe_run();
    run.assert_passed(SMCCC_CHECKS);
    let fw = run
        .out
        .console
        .iter()
        .find_map(|l| l.split("(ARCH_WORKAROUND_1/2/3) ").nth(1))
        .unwrap_or_else(|| panic!("no firmware line:\n{}", run.out.tail(60)));
    let probed: Vec<String> = (1..=3)
        .map(|n| {
            let key = format!("PROBE-INFO smccc/workaround-{n}-features ");
            run.out
                .console
                .iter()
                .find_map(|l| {
                    l.split(key.as_str())
                        .nth(1)
                        .map(str::trim)
                        .map(String::from)
                })
                .unwrap_or_else(|| panic!("no {key}line"))
        })
        .collect();
    assert_eq!(
        probed.join("/"),
        fw.trim(),
        "guest's answers vs the firmware's"
    );
}

/// The trapped GIC system registers generate SGIs, Group 0 included.
#[test]
#[ignore = "end-to-end: run with `cargo xtask test`"]
fn probe_icc_checks_pass() {
    probe_run().assert_passed(ICC_CHECKS);
}

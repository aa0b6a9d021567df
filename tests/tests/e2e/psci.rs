//! End-to-end tests of PSCI and SMCCC as Linux uses them.

use xtask::qemu::{self, Verdict};

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

//! The `smccc` group: SMCCC 1.1 discovery (Arm DEN 0028): SMCCC_VERSION,
//! SMCCC_ARCH_FEATURES, and the SMCCC_ARCH_WORKAROUND_n calls, each answered as
//! the host firmware answers (the e2e test compares with the hypervisor's
//! boot line).

use crate::psci;
use crate::report::{check, eq};

const G: &str = "smccc";

const SMCCC_VERSION: u32 = 0x8000_0000;
const SMCCC_ARCH_FEATURES: u32 = 0x8000_0001;
const SMCCC_ARCH_SOC_ID: u32 = 0x8000_0002;
const WORKAROUNDS: [(&str, u32); 3] = [
    ("workaround-1", 0x8000_8000),
    ("workaround-2", 0x8000_7fff),
    ("workaround-3", 0x8000_3fff),
];
const NOT_SUPPORTED: i64 = -1;

fn c(fid: u32, a1: u64) -> i64 {
    psci::call(fid, a1, 0, 0) as i64
}

/// Runs the group.
pub fn run(_p: &crate::dt::Platform) {
    eq(
        G,
        "psci-features-smccc-version",
        c(0x8400_000a, u64::from(SMCCC_VERSION)),
        0,
        "SMCCC 1.1 discovery: PSCI_FEATURES(SMCCC_VERSION)",
    );
    eq(
        G,
        "version",
        c(SMCCC_VERSION, 0),
        0x1_0001,
        "SMCCC 1.1 SMCCC_VERSION",
    );
    eq(
        G,
        "arch-features-version",
        c(SMCCC_ARCH_FEATURES, u64::from(SMCCC_VERSION)),
        0,
        "SMCCC 1.1 SMCCC_ARCH_FEATURES",
    );
    eq(
        G,
        "arch-features-arch-features",
        c(SMCCC_ARCH_FEATURES, u64::from(SMCCC_ARCH_FEATURES)),
        0,
        "SMCCC 1.1 SMCCC_ARCH_FEATURES",
    );
    eq(
        G,
        "arch-features-soc-id",
        c(SMCCC_ARCH_FEATURES, u64::from(SMCCC_ARCH_SOC_ID)),
        NOT_SUPPORTED,
        "SMCCC 1.1: SMCCC_ARCH_SOC_ID is SMCCC 1.2",
    );
    eq(
        G,
        "arch-features-psci-id",
        c(SMCCC_ARCH_FEATURES, 0x8400_0000),
        NOT_SUPPORTED,
        "SMCCC 1.1 SMCCC_ARCH_FEATURES: architecture calls only",
    );
    eq(
        G,
        "unknown-arch-call",
        c(0x8000_ff00, 0),
        NOT_SUPPORTED,
        "SMCCC 1.1: unknown function",
    );
    for (name, fid) in WORKAROUNDS {
        let feature = c(SMCCC_ARCH_FEATURES, u64::from(fid));
        // The value itself is the firmware's: printed for the e2e test.
        crate::println!("PROBE-INFO smccc/{name}-features {feature}");
        let r = c(fid, 1);
        let ok = if feature == NOT_SUPPORTED {
            r == NOT_SUPPORTED
        } else {
            true
        };
        check(
            ok,
            G,
            name,
            format_args!("ARCH_FEATURES {feature}, call {r}"),
            "SMCCC 1.1 SMCCC_ARCH_WORKAROUND_n: NOT_SUPPORTED exactly when ARCH_FEATURES says so",
        );
    }
}

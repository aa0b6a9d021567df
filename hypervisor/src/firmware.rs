//! The host firmware's SMCCC services that the guest's calls reach: the
//! Spectre workarounds SMCCC_ARCH_WORKAROUND_1/2/3 (Arm DEN 0028).
//!
//! Each physical CPU asks the firmware at boot, over the conduit the host DT's
//! `/psci` node names, what it implements, following the discovery sequence of
//! DEN 0028: PSCI_VERSION >= 1.0, then PSCI_FEATURES(SMCCC_VERSION), then
//! SMCCC_VERSION >= 1.1, then SMCCC_ARCH_FEATURES(SMCCC_ARCH_WORKAROUND_n). A
//! step that fails leaves every workaround NOT_SUPPORTED; no call outside what
//! the firmware said it has is ever made. The guest's SMCCC_ARCH_FEATURES gets
//! these answers for the CPU its vCPU runs on, and its workaround calls go to
//! the firmware ([`call`]).

use core::sync::atomic::{AtomicI64, Ordering};

use arch_emu::psci::{self, FirmwareWorkarounds};

use crate::entry::MAX_CPUS;

/// The firmware's answers, per physical CPU: `[WORKAROUND_1, _2, _3]`.
static ANSWERS: [[AtomicI64; 3]; MAX_CPUS] =
    [const { [const { AtomicI64::new(psci::NOT_SUPPORTED) }; 3] }; MAX_CPUS];

/// What the firmware said of SMCCC on the boot CPU, for the boot log.
#[derive(Debug, Clone, Copy)]
pub struct Discovery {
    /// PSCI_VERSION.
    pub psci_version: i64,
    /// SMCCC_VERSION, or NOT_SUPPORTED when PSCI_FEATURES does not list it.
    pub smccc_version: i64,
    /// The workaround answers.
    pub workarounds: FirmwareWorkarounds,
}

/// Asks the firmware, on this physical CPU (`cpu`), which workarounds it
/// implements, and keeps the answers for [`workarounds`].
pub fn probe_this_cpu(cpu: usize) -> Discovery {
    let ask = |f: u32, x1: u32| crate::smc(u64::from(f), u64::from(x1), 0, 0) as i64;
    let psci_version = ask(psci::PSCI_VERSION, 0) & 0xffff_ffff;
    let mut smccc_version = psci::NOT_SUPPORTED;
    let mut w = FirmwareWorkarounds::NONE;
    // PSCI_FEATURES exists from PSCI 1.0 (major version in bits [30:16]).
    if psci_version >> 16 >= 1 && ask(psci::PSCI_FEATURES, psci::SMCCC_VERSION) == psci::SUCCESS {
        smccc_version = ask(psci::SMCCC_VERSION, 0);
        // SMCCC_ARCH_FEATURES exists from SMCCC 1.1.
        if smccc_version >= 0x1_0001 {
            let feature = |f: u32| ask(psci::SMCCC_ARCH_FEATURES, f);
            w = FirmwareWorkarounds {
                workaround_1: feature(psci::SMCCC_ARCH_WORKAROUND_1),
                workaround_2: feature(psci::SMCCC_ARCH_WORKAROUND_2),
                workaround_3: feature(psci::SMCCC_ARCH_WORKAROUND_3),
            };
        }
    }
    if let Some(slot) = ANSWERS.get(cpu) {
        slot[0].store(w.workaround_1, Ordering::Relaxed);
        slot[1].store(w.workaround_2, Ordering::Relaxed);
        slot[2].store(w.workaround_3, Ordering::Relaxed);
    }
    Discovery {
        psci_version,
        smccc_version,
        workarounds: w,
    }
}

/// The firmware's answers as physical CPU `cpu` asked them.
pub fn workarounds(cpu: usize) -> FirmwareWorkarounds {
    match ANSWERS.get(cpu) {
        Some(a) => FirmwareWorkarounds {
            workaround_1: a[0].load(Ordering::Relaxed),
            workaround_2: a[1].load(Ordering::Relaxed),
            workaround_3: a[2].load(Ordering::Relaxed),
        },
        None => FirmwareWorkarounds::NONE,
    }
}

/// Makes an SMCCC call the guest made (a workaround the firmware said it has)
/// to the firmware, returning its X0.
pub fn call(function_id: u32, w1: u32) -> u64 {
    crate::smc(u64::from(function_id), u64::from(w1), 0, 0)
}

/// A PSCI_VERSION or SMCCC_VERSION answer, printed as major.minor (or as the
/// error it is: SMCCC 1.0 firmware does not implement SMCCC_VERSION).
pub struct Version(pub i64);

impl core::fmt::Display for Version {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.0 < 0 {
            write!(f, "not reported ({})", self.0)
        } else {
            write!(f, "{}.{}", (self.0 >> 16) & 0x7fff, self.0 & 0xffff)
        }
    }
}

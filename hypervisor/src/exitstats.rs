//! Exits by cause, with the time spent at EL2 for each, from the generic
//! counter (CNTPCT_EL0 read when `handle_exit` starts and when it is done:
//! the vector's register save and restore, a few dozen instructions, are
//! outside). Printed as a table at shutdown, and on demand through a
//! hypercall in the SMCCC Vendor Specific Hypervisor Service range (Arm DEN
//! 0028 SMCCC 1.1, 6.2: owning entity 6, fast calls, SMC64 convention):
//!
//! | function ID | name | arguments | returns |
//! |---|---|---|---|
//! | `0xC600_0001` | [`EXIT_STATS_QUERY`] | x1: cause index (0..[`Cause::COUNT`]) | x0: exits, x1: EL2 counter ticks, x2: CNTFRQ_EL0; x0 = NOT_SUPPORTED (-1) for an index past the last |
//! | `0xC600_0002` | [`EXIT_STATS_LOG`] | - | x0 = 0; the table on the console now |
//! | `0xC600_0003` | [`EXIT_STATS_RESET`] | - | x0 = 0; every count and time zeroed |
//!
//! Other function IDs of the range answer NOT_SUPPORTED. The cause indexes
//! are [`Cause::ALL`]'s order. Under QEMU's `-icount shift=0` at 1 GHz the
//! ticks are instructions.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::sysreg::read_sysreg;

/// EXIT_STATS_QUERY: one cause's exits and EL2 ticks.
pub const EXIT_STATS_QUERY: u32 = 0xc600_0001;
/// EXIT_STATS_LOG: the table on the console.
pub const EXIT_STATS_LOG: u32 = 0xc600_0002;
/// EXIT_STATS_RESET: counts and times back to zero.
pub const EXIT_STATS_RESET: u32 = 0xc600_0003;

/// SMCCC NOT_SUPPORTED.
const NOT_SUPPORTED: u64 = -1i64 as u64;

/// Why the guest exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// A config access through the ECAM window.
    Ecam,
    /// A trapped BAR register (the virtio-pci BAR) other than MSI-X.
    PciBar,
    /// An MSI-X table or PBA access.
    Msix,
    /// A GIC distributor register.
    Gicd,
    /// A GIC redistributor register.
    Gicr,
    /// A PL011 register.
    Uart,
    /// A PSCI or SMCCC call (HVC or trapped SMC), these statistics' calls included.
    Psci,
    /// A write of ICC_SGI0R/SGI1R/ASGI1R_EL1.
    Sgi,
    /// A read of the ID register group (HCR_EL2.TID3).
    IdReg,
    /// Any other trapped system register (an undefined instruction injected).
    Sysreg,
    /// WFI or WFE.
    Wfx,
    /// A physical interrupt.
    Irq,
    /// An access nothing emulates, a walk into unmapped IPA, an instruction
    /// abort: an abort injected.
    Abort,
    /// Anything else (FIQ, SError, unknown exception classes).
    Other,
}

impl Cause {
    /// Number of causes.
    pub const COUNT: usize = 14;

    /// Every cause, in index order.
    pub const ALL: [Cause; Cause::COUNT] = [
        Cause::Ecam,
        Cause::PciBar,
        Cause::Msix,
        Cause::Gicd,
        Cause::Gicr,
        Cause::Uart,
        Cause::Psci,
        Cause::Sgi,
        Cause::IdReg,
        Cause::Sysreg,
        Cause::Wfx,
        Cause::Irq,
        Cause::Abort,
        Cause::Other,
    ];

    /// Its name in the table.
    pub fn name(self) -> &'static str {
        match self {
            Cause::Ecam => "ecam",
            Cause::PciBar => "pci-bar",
            Cause::Msix => "msi-x",
            Cause::Gicd => "gicd",
            Cause::Gicr => "gicr",
            Cause::Uart => "pl011",
            Cause::Psci => "psci/smccc",
            Cause::Sgi => "sgi",
            Cause::IdReg => "id-regs",
            Cause::Sysreg => "sysreg",
            Cause::Wfx => "wfi/wfe",
            Cause::Irq => "irq",
            Cause::Abort => "abort",
            Cause::Other => "other",
        }
    }
}

/// Exits and EL2 counter ticks by cause (atomics: every CPU counts).
#[derive(Debug, Default)]
pub struct ExitTimes {
    exits: [AtomicU64; Cause::COUNT],
    ticks: [AtomicU64; Cause::COUNT],
}

/// The generic counter now.
pub fn now() -> u64 {
    read_sysreg!("cntpct_el0")
}

impl ExitTimes {
    /// Counts one exit of `cause` that began at counter value `start`.
    pub fn record(&self, cause: Cause, start: u64) {
        let i = cause as usize;
        if let (Some(e), Some(t)) = (self.exits.get(i), self.ticks.get(i)) {
            e.fetch_add(1, Ordering::Relaxed);
            t.fetch_add(now().wrapping_sub(start), Ordering::Relaxed);
        }
    }

    /// Exits and ticks of the cause at `index`.
    pub fn get(&self, index: usize) -> Option<(u64, u64)> {
        Some((
            self.exits.get(index)?.load(Ordering::Relaxed),
            self.ticks.get(index)?.load(Ordering::Relaxed),
        ))
    }

    fn reset(&self) {
        for a in self.exits.iter().chain(self.ticks.iter()) {
            a.store(0, Ordering::Relaxed);
        }
    }

    /// The table on the console, one `[hv]` line per cause that occurred,
    /// each starting with `tag`.
    pub fn log(&self, tag: &str) {
        let freq = read_sysreg!("cntfrq_el0").max(1);
        log::info!("{tag}exits by cause, EL2 time from CNTPCT_EL0 at {freq} Hz:");
        log::info!(
            "{tag}  {:<11} {:>10} {:>14} {:>11} {:>12}",
            "cause",
            "exits",
            "EL2 ticks",
            "ticks/exit",
            "EL2 us"
        );
        let (mut n, mut t) = (0u64, 0u64);
        for (i, c) in Cause::ALL.iter().enumerate() {
            let Some((exits, ticks)) = self.get(i).filter(|g| g.0 > 0) else {
                continue;
            };
            n += exits;
            t = t.wrapping_add(ticks);
            log::info!(
                "{tag}  {:<11} {exits:>10} {ticks:>14} {:>11} {:>12}",
                c.name(),
                ticks / exits,
                u128::from(ticks) * 1_000_000 / u128::from(freq)
            );
        }
        log::info!(
            "{tag}  {:<11} {n:>10} {t:>14} {:>11} {:>12}",
            "total",
            t.checked_div(n).unwrap_or(0),
            u128::from(t) * 1_000_000 / u128::from(freq)
        );
    }

    /// A call in the Vendor Specific Hypervisor Service range (function ID
    /// `fid`, argument `x1`): the values for x0, x1, x2.
    pub fn call(&self, fid: u32, x1: u64) -> [u64; 3] {
        match fid {
            EXIT_STATS_QUERY => match usize::try_from(x1).ok().and_then(|i| self.get(i)) {
                Some((exits, ticks)) => [exits, ticks, read_sysreg!("cntfrq_el0")],
                None => [NOT_SUPPORTED, 0, 0],
            },
            EXIT_STATS_LOG => {
                self.log("");
                [0, 0, 0]
            }
            EXIT_STATS_RESET => {
                self.reset();
                [0, 0, 0]
            }
            _ => [NOT_SUPPORTED, 0, 0],
        }
    }
}

/// Whether `fid` lies in the Vendor Specific Hypervisor Service range
/// (SMCCC 1.1 6.2: fast call, owning entity 6, SMC32 or SMC64).
/// Only W0 names the function (SMCCC 1.1 2.5: the upper 32 bits of X0 are
/// ignored).
pub fn is_vendor_hyp(x0: u64) -> bool {
    (x0 as u32) & 0xbfff_0000 == 0x8600_0000
}

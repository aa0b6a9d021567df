//! Exceptions taken by the probe: a check that expects one (an abort, an
//! undefined instruction) arms [`expect`]; any other is a failure.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::entry::{cpu_index, MAX_CPUS};

/// The registers saved by the vectors.
#[repr(C)]
pub struct Frame {
    pub x: [u64; 31],
    _pad: u64,
}

/// A synchronous exception the probe took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    /// ESR_EL1.
    pub esr: u64,
    /// FAR_EL1.
    pub far: u64,
}

impl Taken {
    /// ESR_EL1.EC (Arm ARM D17.2.37).
    pub fn ec(&self) -> u64 {
        self.esr >> 26
    }
}

static EXPECTING: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// [`expect_each`]: every exception until `f` returns is expected, not just one.
static EXPECTING_EACH: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
static ESR: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(u64::MAX) }; MAX_CPUS];
static FAR: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(u64::MAX) }; MAX_CPUS];
/// Interrupts taken, per CPU, and the last INTID acknowledged.
pub static IRQS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
pub static LAST_INTID: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];

/// Runs `f`, which may take one synchronous exception: the faulting
/// instruction is skipped and the exception returned.
pub fn expect<F: FnOnce()>(f: F) -> Option<Taken> {
    let c = cpu_index().min(MAX_CPUS - 1);
    ESR[c].store(u64::MAX, Ordering::Relaxed);
    EXPECTING[c].store(true, Ordering::Relaxed);
    f();
    EXPECTING[c].store(false, Ordering::Relaxed);
    let esr = ESR[c].load(Ordering::Relaxed);
    (esr != u64::MAX).then(|| Taken {
        esr,
        far: FAR[c].load(Ordering::Relaxed),
    })
}

/// Runs `f`, any of whose instructions may take a synchronous exception (a
/// sequence that must run whole, like FEAT_MOPS's prologue, main and
/// epilogue, each UNDEFINED when disabled): each faulting instruction is
/// skipped, and the first exception returned.
pub fn expect_each<F: FnOnce()>(f: F) -> Option<Taken> {
    let c = cpu_index().min(MAX_CPUS - 1);
    EXPECTING_EACH[c].store(true, Ordering::Relaxed);
    let t = expect(f);
    EXPECTING_EACH[c].store(false, Ordering::Relaxed);
    t
}

fn sysreg_esr() -> (u64, u64, u64) {
    let (esr, far, elr): (u64, u64, u64);
    // SAFETY: reading the exception syndrome registers has no side effect.
    unsafe {
        core::arch::asm!("mrs {}, esr_el1", "mrs {}, far_el1", "mrs {}, elr_el1",
            out(reg) esr, out(reg) far, out(reg) elr)
    };
    (esr, far, elr)
}

/// Called by the vectors with the saved registers and the vector's index.
pub fn handle(frame: &mut Frame, kind: u64) {
    let c = cpu_index().min(MAX_CPUS - 1);
    if (kind == 12 || kind == 13) && crate::aarch32::handle(frame, kind) {
        return;
    }
    match kind {
        4 => {
            let (esr, far, elr) = sysreg_esr();
            let each = EXPECTING_EACH[c].load(Ordering::Relaxed);
            if (each && EXPECTING[c].load(Ordering::Relaxed))
                || EXPECTING[c].swap(false, Ordering::Relaxed)
            {
                if ESR[c].load(Ordering::Relaxed) == u64::MAX {
                    ESR[c].store(esr, Ordering::Relaxed);
                    FAR[c].store(far, Ordering::Relaxed);
                }
                // SAFETY: resumes after the faulting (4-byte A64) instruction.
                unsafe { core::arch::asm!("msr elr_el1, {}", in(reg) elr + 4) };
                return;
            }
            crate::println!(
                "PROBE-UNEXPECTED sync exception on CPU {c}: ESR {esr:#x} FAR {far:#x} ELR {elr:#x}"
            );
        }
        5 => {
            let intid: u64;
            // SAFETY: acknowledging the highest-priority Group 1 interrupt;
            // the matching EOI follows.
            unsafe { core::arch::asm!("mrs {}, S3_0_C12_C12_0", out(reg) intid) };
            if intid < 1020 {
                IRQS[c].fetch_add(1, Ordering::Relaxed);
                LAST_INTID[c].store(intid as u32, Ordering::Relaxed);
                // SAFETY: ICC_EOIR1_EL1 for the INTID just acknowledged.
                unsafe { core::arch::asm!("msr S3_0_C12_C12_1, {}", in(reg) intid) };
            }
            return;
        }
        _ => {
            let (esr, far, elr) = sysreg_esr();
            crate::println!(
                "PROBE-UNEXPECTED exception kind {kind} on CPU {c}: ESR {esr:#x} FAR {far:#x} ELR {elr:#x}"
            );
        }
    }
    crate::report::done();
    crate::psci::system_off_fallback()
}

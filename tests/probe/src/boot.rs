//! The probe's own footing: every CPU runs it, and an exception it expects
//! comes back as expected (so the other groups' checks can rely on both).

use core::sync::atomic::{AtomicU64, Ordering};

use crate::dt::Platform;
use crate::report::{check, eq};
use crate::{exc, psci};

const G: &str = "boot";

/// MPIDR_EL1 as each CPU read it.
static SEEN_MPIDR: [AtomicU64; crate::entry::MAX_CPUS] =
    [const { AtomicU64::new(u64::MAX) }; crate::entry::MAX_CPUS];

fn record_mpidr(idx: usize) {
    let m: u64;
    // SAFETY: reading MPIDR_EL1 has no side effect.
    unsafe { core::arch::asm!("mrs {}, mpidr_el1", out(reg) m) };
    if let Some(s) = SEEN_MPIDR.get(idx) {
        s.store(m & 0xff_00ff_ffff, Ordering::Relaxed);
    }
}

/// Runs the group.
pub fn run(p: &Platform) {
    for (idx, &mpidr) in p.cpus().iter().enumerate().skip(1) {
        let r = psci::run_on(idx, mpidr, record_mpidr, idx);
        let done = r == 0 && psci::wait_done(idx, 1 << 26);
        let seen = SEEN_MPIDR
            .get(idx)
            .map_or(u64::MAX, |s| s.load(Ordering::Relaxed));
        check(
            done && seen == mpidr,
            G,
            "secondary-runs",
            format_args!(
                "CPU {idx} (MPIDR {mpidr:#x}): CPU_ON {r}, ran {done}, MPIDR_EL1 {seen:#x}"
            ),
            "PSCI 1.1 5.6",
        );
    }
    // UDF: an undefined instruction, EC 0 ("unknown reason").
    let t = exc::expect(|| {
        // SAFETY: the exception it raises is expected and skipped.
        unsafe { core::arch::asm!("udf #0") }
    });
    eq(
        G,
        "udf-is-undefined",
        t.map(|t| t.ec()),
        Some(0),
        "Arm ARM D1.10.4, ESR_ELx.EC 0b000000",
    );
}

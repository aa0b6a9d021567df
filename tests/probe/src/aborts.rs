//! Aborts the hypervisor must pass on as hardware would give them, never
//! emulate: a stage-1 table walk that reaches an IPA with nothing behind it.

use crate::dt::Platform;
use crate::report::eq;
use crate::{exc, mmu};

const G: &str = "aborts";

/// A level-1 slot the probe does not use (the 1 GiB at 5 GiB).
const SLOT: usize = 5;

/// Runs the group.
pub fn run(p: &Platform) {
    // A table descriptor whose next-level table sits at an IPA with nothing
    // behind it: in no DT region, below guest RAM.
    let hole: u64 = 0x7000_0000;
    let in_ram = hole >= p.ram.0 && hole < p.ram.0 + p.ram.1;
    let old = mmu::set_l1(SLOT, hole | 0b11);
    let t = exc::expect(|| {
        let va = (SLOT as u64) << 30;
        // SAFETY: the load's stage-1 walk faults; the fault is expected.
        unsafe { core::arch::asm!("ldr {v}, [{a}]", v = out(reg) _, a = in(reg) va) };
    });
    mmu::set_l1(SLOT, old);
    // EC 0x25 (data abort, same EL); DFSC 0b0101xx: synchronous external
    // abort on a translation table walk (the level in the low two bits).
    eq(
        G,
        "s1ptw-is-an-external-abort-on-walk",
        (in_ram, t.map(|t| (t.ec(), t.esr & 0x3c))),
        (false, Some((0x25, 0x14))),
        "Arm ARM D8.15.2, D17.2.40 (ESR_ELx DFSC 0b0101LL)",
    );
}

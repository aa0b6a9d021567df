//! A fault the hypervisor cannot hand back to the guest: the guest's own
//! exception vector lies where nothing is (an IPA stage 2 does not map), so
//! the first exception it takes aborts fetching the vector, and the abort it
//! would be given is taken at that vector again (Arm ARM D1.3.1: exceptions
//! to EL1 are taken at VBAR_EL1 + offset). The hypervisor stops the guest
//! as faulted and every other guest runs on. Opt-in (`probe=fault`): the
//! probe never gets back, prints no `PROBE-DONE` and does not power off.

use crate::dt::Platform;
use crate::{mmu, println};

/// The level-1 slot of the 1 GiB at 1 GiB: below guest RAM, above the
/// devices the DT names, nothing at stage 2 (`aborts` uses the same hole).
const SLOT: usize = 1;

/// Runs the group: it does not return.
pub fn run(p: &Platform) {
    let vector = (SLOT as u64) << 30;
    if vector >= p.ram.0 && vector < p.ram.0 + p.ram.1 {
        println!("PROBE FAIL fault/vector-outside-ram {vector:#x} is guest RAM");
        return;
    }
    // Executable at stage 1, so that the fetch reaches stage 2.
    mmu::set_l1(SLOT, mmu::normal_block(vector));
    println!("PROBE-FAULT VBAR_EL1 {vector:#x}, then an undefined instruction");
    // SAFETY: deliberately unrecoverable: the UDF's exception is taken at
    // VBAR_EL1 + 0x200, whose fetch aborts at stage 2; the hypervisor stops
    // this guest there.
    unsafe {
        core::arch::asm!(
            "msr vbar_el1, {v}",
            "isb",
            "udf #0",
            v = in(reg) vector,
            options(nostack)
        )
    };
    println!("PROBE FAIL fault/guest-stopped the exception at VBAR_EL1 returned");
}

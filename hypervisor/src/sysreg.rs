//! System register access by name (`mrs`/`msr`), plus barriers.
//!
//! The names are the Arm ARM's; registers the assembler does not know by name
//! (the GIC's) are given in their `S3_<op1>_C<n>_C<m>_<op2>` form.

/// Reads a system register.
macro_rules! read_sysreg {
    ($reg:tt) => {{
        let v: u64;
        // SAFETY: reading a system register at EL2 has no memory side effects; the
        // registers read by this crate are all accessible at EL2.
        unsafe { core::arch::asm!(concat!("mrs {}, ", $reg), out(reg) v, options(nomem, nostack)) };
        v
    }};
}

/// Writes a system register.
macro_rules! write_sysreg {
    ($reg:tt, $val:expr) => {{
        let v: u64 = $val;
        // SAFETY: every caller writes an EL2-accessible register with a value chosen
        // per the Arm ARM for that register; the effects on translation, traps and
        // interrupts are the point of the call and are documented at each call site.
        unsafe { core::arch::asm!(concat!("msr ", $reg, ", {}"), in(reg) v, options(nostack)) };
    }};
}

pub(crate) use read_sysreg;
pub(crate) use write_sysreg;

/// Instruction synchronization barrier.
#[inline(always)]
pub fn isb() {
    // SAFETY: a barrier has no effect beyond ordering.
    unsafe { core::arch::asm!("isb", options(nostack)) };
}

/// Full-system data synchronization barrier.
#[inline(always)]
pub fn dsb_sy() {
    // SAFETY: a barrier has no effect beyond ordering.
    unsafe { core::arch::asm!("dsb sy", options(nostack)) };
}

/// Inner-shareable data synchronization barrier.
#[inline(always)]
pub fn dsb_ish() {
    // SAFETY: a barrier has no effect beyond ordering.
    unsafe { core::arch::asm!("dsb ish", options(nostack)) };
}

/// Waits for an event.
#[inline(always)]
pub fn wfe() {
    // SAFETY: WFE only suspends this PE until an event.
    unsafe { core::arch::asm!("wfe", options(nomem, nostack)) };
}

/// This CPU's MPIDR affinity (Aff3..Aff0, without the flag bits).
pub fn mpidr_affinity() -> u64 {
    read_sysreg!("mpidr_el1") & 0xff_00ff_ffff
}

/// Cleans the data cache to the point of coherency over `[start, start + len)`, so
/// that a guest running with its MMU and caches off sees what we wrote.
pub fn clean_dcache_range(start: usize, len: usize) {
    let ctr = read_sysreg!("ctr_el0");
    let line = 4usize << ((ctr >> 16) & 0xf);
    let mut a = start & !(line - 1);
    let end = start.saturating_add(len);
    while a < end {
        // SAFETY: DC CVAC on a mapped address only writes back a cache line.
        unsafe { core::arch::asm!("dc cvac, {}", in(reg) a, options(nostack)) };
        a += line;
    }
    dsb_sy();
}

//! The little of the GICv3 the probe's checks need (IHI 0069): the
//! distributor and this CPU's redistributor by MMIO, the CPU interface by
//! system registers, and the virtual timer as a wake-up source.

use crate::dt::Platform;

/// Size of one redistributor (RD_base + SGI_base).
const GICR_STRIDE: usize = 0x2_0000;
/// SGI_base within a redistributor.
pub const SGI_BASE: usize = 0x1_0000;
/// GICR_IGROUPR0, GICR_ISENABLER0, GICR_ICENABLER0, GICR_ISPENDR0, GICR_ICPENDR0
/// (offsets in SGI_base, IHI 0069 12.11).
pub const IGROUPR0: usize = 0x80;
pub const ISENABLER0: usize = 0x100;
pub const ICENABLER0: usize = 0x180;
pub const ISPENDR0: usize = 0x200;
pub const ICPENDR0: usize = 0x280;
/// The virtual timer's PPI (the guest DT's timer node, third interrupt).
pub const VTIMER_PPI: u32 = 27;

use crate::io::r64 as rd64;
pub use crate::io::{r32 as rd32, w32 as wr32};

/// The redistributor (RD_base) of the CPU with MPIDR affinity `mpidr`, found
/// by its GICR_TYPER.Affinity_Value.
pub fn redist(p: &Platform, mpidr: u64) -> Option<usize> {
    (0..p.ncpus)
        .map(|i| p.gicr + i * GICR_STRIDE)
        .find(|&rd| rd64(rd + 0x8) >> 32 == mpidr & 0xff_00ff_ffff)
}

/// This CPU's MPIDR affinity.
pub fn my_mpidr() -> u64 {
    let m: u64;
    // SAFETY: reading MPIDR_EL1 has no side effect.
    unsafe { core::arch::asm!("mrs {}, mpidr_el1", out(reg) m) };
    m & 0xff_00ff_ffff
}

/// Distributor on: affinity routing, both groups (GICD_CTLR with DS = 1).
pub fn dist_enable(p: &Platform) {
    wr32(p.gicd, (1 << 4) | (1 << 1) | 1);
}

/// This CPU's redistributor awake and its CPU interface on (SRE, PMR open,
/// both groups enabled); returns its SGI_base.
pub fn cpu_init(p: &Platform) -> Option<usize> {
    let rd = redist(p, my_mpidr())?;
    wr32(rd + 0x14, 0); // GICR_WAKER.ProcessorSleep = 0
                        // SAFETY: CPU interface configuration of this CPU only.
    unsafe {
        core::arch::asm!(
            "mrs {t}, S3_0_C12_C12_5", "orr {t}, {t}, #1", "msr S3_0_C12_C12_5, {t}", "isb",
            "mov {t}, #0xff", "msr S3_0_C4_C6_0, {t}",       // ICC_PMR_EL1
            "mov {t}, #1", "msr S3_0_C12_C12_6, {t}",         // ICC_IGRPEN0_EL1
            "msr S3_0_C12_C12_7, {t}", "isb",                 // ICC_IGRPEN1_EL1
            t = out(reg) _,
        )
    };
    Some(rd + SGI_BASE)
}

/// Acknowledges and completes this CPU's highest-priority pending Group 1
/// interrupt (ICC_IAR1_EL1, ICC_EOIR1_EL1); returns its INTID (1023: none).
pub fn ack_group1() -> u32 {
    let intid: u64;
    // SAFETY: acknowledging, then ending, one interrupt of this CPU.
    unsafe {
        core::arch::asm!("mrs {}, S3_0_C12_C12_0", out(reg) intid);
        if intid < 1020 {
            core::arch::asm!("msr S3_0_C12_C12_1, {}", "isb", in(reg) intid);
        }
    }
    intid as u32
}

/// Arms this CPU's virtual timer to fire in about `ms` milliseconds
/// (CNTV_TVAL_EL0, CNTV_CTL_EL0.ENABLE with IMASK clear).
pub fn vtimer_arm(ms: u64) {
    let freq: u64;
    // SAFETY: programming this CPU's virtual timer only.
    unsafe {
        core::arch::asm!("mrs {}, cntfrq_el0", out(reg) freq);
        core::arch::asm!("msr cntv_ctl_el0, xzr", "msr cntv_tval_el0, {}", "mov {t}, #1",
            "msr cntv_ctl_el0, {t}", "isb", in(reg) freq / 1000 * ms, t = out(reg) _);
    }
}

/// Whether the virtual timer's condition is met (CNTV_CTL_EL0.ISTATUS).
pub fn vtimer_fired() -> bool {
    let ctl: u64;
    // SAFETY: reading a timer register has no side effect.
    unsafe { core::arch::asm!("isb", "mrs {}, cntv_ctl_el0", out(reg) ctl) };
    ctl & 4 != 0
}

/// Stops the virtual timer.
pub fn vtimer_stop() {
    // SAFETY: as for `vtimer_arm`.
    unsafe { core::arch::asm!("msr cntv_ctl_el0, xzr", "isb") };
}

/// This CPU ready to be woken by its virtual timer: GIC on, the timer's PPI in
/// Group 1 and enabled. Returns SGI_base.
pub fn vtimer_wakeup_ready(p: &Platform) -> Option<usize> {
    dist_enable(p);
    let sgi = cpu_init(p)?;
    wr32(sgi + IGROUPR0, rd32(sgi + IGROUPR0) | 1 << VTIMER_PPI);
    wr32(sgi + ISENABLER0, 1 << VTIMER_PPI);
    Some(sgi)
}

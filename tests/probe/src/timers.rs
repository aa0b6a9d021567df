//! The EL1 timers and their interrupts as the GICv3 shows them (issue 9,
//! fault 6: the physical timer's PPI never reached the guest). Interrupts stay
//! masked in PSTATE: the checks poll ICC_IAR1_EL1, which acknowledges a pending
//! virtual interrupt all the same.

use crate::dt::Platform;
use crate::report::eq;

const G: &str = "timers";

/// INTIDs of the guest DT's timer node: EL1 physical timer PPI 14, virtual timer PPI 11.
const PTIMER: u32 = 30;
const VTIMER: u32 = 27;
/// ICC_IAR1_EL1's answer when nothing is pending.
const SPURIOUS: u64 = 1023;

/// GICD_CTLR (DS = 1 layout): ARE, EnableGrp1.
const GICD_CTLR_ARE_GRP1: u32 = (1 << 4) | (1 << 1);
const GICR_WAKER: usize = 0x14;
const SGI_BASE: usize = 0x1_0000;
const GICR_IGROUPR0: usize = SGI_BASE + 0x80;
const GICR_ISENABLER0: usize = SGI_BASE + 0x100;
const GICR_ISPENDR0: usize = SGI_BASE + 0x200;
const GICR_ISACTIVER0: usize = SGI_BASE + 0x300;

/// CNTx_CTL_EL0: ENABLE, IMASK, ISTATUS.
const ENABLE: u64 = 1;
const ISTATUS: u64 = 1 << 2;

use crate::io::{r32 as rd, w32 as wr};

/// The timers, by which EL1 timer: its TVAL and CTL registers.
#[derive(Clone, Copy)]
enum Timer {
    Physical,
    Virtual,
}

impl Timer {
    fn arm(self, ticks: u64) {
        // SAFETY: the EL1 timers are the probe's (CNTHCTL_EL2.EL1PCEN for the
        // physical one); programming them raises at most their interrupt.
        unsafe {
            match self {
                Timer::Physical => core::arch::asm!(
                    "msr cntp_tval_el0, {t}", "msr cntp_ctl_el0, {c}", "isb",
                    t = in(reg) ticks, c = in(reg) ENABLE),
                Timer::Virtual => core::arch::asm!(
                    "msr cntv_tval_el0, {t}", "msr cntv_ctl_el0, {c}", "isb",
                    t = in(reg) ticks, c = in(reg) ENABLE),
            }
        }
    }

    fn ctl(self) -> u64 {
        let v: u64;
        // SAFETY: reading a timer control register has no side effect.
        unsafe {
            match self {
                Timer::Physical => core::arch::asm!("mrs {}, cntp_ctl_el0", out(reg) v),
                Timer::Virtual => core::arch::asm!("mrs {}, cntv_ctl_el0", out(reg) v),
            }
        }
        v
    }

    fn disable(self) {
        // SAFETY: as for `arm`.
        unsafe {
            match self {
                Timer::Physical => core::arch::asm!("msr cntp_ctl_el0, xzr", "isb"),
                Timer::Virtual => core::arch::asm!("msr cntv_ctl_el0, xzr", "isb"),
            }
        }
    }

    /// Waits (bounded) for ISTATUS; then a short spin lets EL2 take the
    /// physical interrupt the output raised.
    fn wait_condition(self) -> bool {
        let mut n = 0u32;
        while self.ctl() & ISTATUS == 0 {
            n += 1;
            if n > 1 << 24 {
                return false;
            }
        }
        for _ in 0..1000 {
            core::hint::spin_loop();
        }
        true
    }
}

fn iar() -> u64 {
    let v: u64;
    // SAFETY: ICC_IAR1_EL1 acknowledges the highest-priority pending Group 1
    // interrupt; every acknowledged INTID is completed with `eoi`.
    unsafe { core::arch::asm!("mrs {}, S3_0_C12_C12_0", out(reg) v) };
    v & 0xff_ffff
}

fn eoi(intid: u64) {
    if intid < 1020 {
        // SAFETY: ICC_EOIR1_EL1 (EOImode 0: drop and deactivate) for an INTID
        // acknowledged by `iar`.
        unsafe { core::arch::asm!("msr S3_0_C12_C12_1, {}", "isb", in(reg) intid) };
    }
}

/// Polls ICC_IAR1_EL1 (bounded) until something is acknowledged.
fn ack() -> u64 {
    for _ in 0..1 << 22 {
        let i = iar();
        if i != SPURIOUS {
            return i;
        }
    }
    SPURIOUS
}

fn bit(v: u32, intid: u32) -> bool {
    v & (1 << intid) != 0
}

/// Runs the group on the boot CPU (vCPU 0, the first redistributor).
pub fn run(p: &Platform) {
    let rd_base = p.gicr;
    wr(p.gicd, GICD_CTLR_ARE_GRP1);
    wr(rd_base + GICR_WAKER, 0);
    wr(rd_base + GICR_IGROUPR0, u32::MAX);
    wr(rd_base + GICR_ISENABLER0, (1 << PTIMER) | (1 << VTIMER));
    // SAFETY: the GICv3 CPU interface through system registers: SRE on,
    // every priority unmasked, Group 1 enabled (ICC_SRE_EL1, ICC_PMR_EL1,
    // ICC_IGRPEN1_EL1); they only decide which interrupts the probe sees.
    unsafe {
        core::arch::asm!(
            "msr S3_0_C12_C12_5, {sre}", "isb",
            "msr S3_0_C4_C6_0, {pmr}",
            "msr S3_0_C12_C12_7, {en}", "isb",
            sre = in(reg) 7u64, pmr = in(reg) 0xffu64, en = in(reg) 1u64,
        )
    };
    let pend = || rd(rd_base + GICR_ISPENDR0);
    let active = || rd(rd_base + GICR_ISACTIVER0);
    let spec_timer = "Arm ARM D12.9.x timer interrupt; GICv3 12.11.x GICR_ISPENDR0";

    // The physical timer fires: pending at the GIC, delivered as its PPI,
    // and clear again once disabled and completed.
    Timer::Physical.arm(0x2000);
    let fired = Timer::Physical.wait_condition();
    eq(G, "ptimer-condition-met", fired, true, "Arm ARM D12.9.x");
    eq(G, "ptimer-pending", bit(pend(), PTIMER), true, spec_timer);
    let got = ack();
    eq(
        G,
        "ptimer-delivered",
        got,
        u64::from(PTIMER),
        "GICv3 4.2.4; guest DT timer node",
    );
    eq(
        G,
        "ptimer-active-while-handled",
        bit(active(), PTIMER),
        got == u64::from(PTIMER),
        "GICv3 12.11.x GICR_ISACTIVER0",
    );
    Timer::Physical.disable();
    eoi(got);
    eq(
        G,
        "ptimer-cleared",
        (bit(pend(), PTIMER), bit(active(), PTIMER)),
        (false, false),
        spec_timer,
    );

    // The virtual timer fires and EL2 takes it, but it is disabled before the
    // probe acknowledges it: its output is low, so it is neither pending nor
    // delivered.
    Timer::Virtual.arm(0x2000);
    let fired = Timer::Virtual.wait_condition();
    eq(G, "vtimer-condition-met", fired, true, "Arm ARM D12.9.x");
    Timer::Virtual.disable();
    eq(
        G,
        "vtimer-withdrawn-not-pending",
        bit(pend(), VTIMER),
        false,
        spec_timer,
    );
    let stale = iar();
    eoi(stale);
    eq(
        G,
        "vtimer-withdrawn-not-delivered",
        stale,
        SPURIOUS,
        "GICv3 12.11.x ICC_IAR1_EL1",
    );

    // Armed again, it is delivered.
    Timer::Virtual.arm(0x2000);
    let got = ack();
    eq(
        G,
        "vtimer-delivered",
        got,
        u64::from(VTIMER),
        "GICv3 4.2.4; guest DT timer node",
    );
    eq(
        G,
        "vtimer-active-while-handled",
        bit(active(), VTIMER),
        true,
        "GICv3 12.11.x GICR_ISACTIVER0",
    );
    Timer::Virtual.disable();
    eoi(got);
    eq(
        G,
        "vtimer-cleared",
        (bit(pend(), VTIMER), bit(active(), VTIMER)),
        (false, false),
        spec_timer,
    );
}

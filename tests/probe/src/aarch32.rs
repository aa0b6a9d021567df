//! AArch32 code at EL0, as a Linux guest's compat processes run it: a
//! trapped MMIO load from A32 and from T32 code (inside an IT block too),
//! and an interrupt taken while EL0 runs AArch32 (at EL1's "lower EL,
//! AArch32" vectors, Arm ARM D1.3.1). The instruction an emulated access
//! skips is 2 or 4 bytes long (ESR_EL2.IL) and, in T32, advances the IT
//! block (Arm ARM, AArch32 "ITSTATE", ITAdvance()).
//!
//! The code runs from an alias of its page at a VA below 4 GiB, mapped
//! for EL0 (AP = 0b01) and privileged-execute-never; the distributor's
//! block is made EL0-accessible for the time of the checks. Each sequence
//! ends with SVC, taken at EL1's lower-EL AArch32 vector, which hands back
//! R0-R7 and returns to the caller.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::dt::Platform;
use crate::report::{check, eq};

const G: &str = "aarch32";
const GIB: u64 = 1 << 30;
/// GICD_IIDR: an emulated, read-only register with a known value.
const GICD_IIDR: usize = 0x8;
/// Level-1 block descriptor bits (Arm ARM D8.3): AP\[2:1\] = 0b01 (EL0
/// and EL1 read/write), PXN, and the attribute index of Normal memory.
const AP_EL0_RW: u64 = 1 << 6;
const PXN: u64 = 1 << 53;
const ATTR_NORMAL: u64 = 1 << 2;
/// SPSR M\[4:0\] = 0b10000: User mode, AArch32; T: T32 state.
const SPSR_USR32: u64 = 0x10;
const SPSR_T: u64 = 1 << 5;
/// ESR_EL1.EC of an SVC from AArch32 (Arm ARM D23.2.41).
const EC_SVC32: u64 = 0x11;

/// The code page, written at run time.
#[repr(C, align(4096))]
struct Page([u32; 1024]);
static mut CODE: Page = Page([0; 1024]);
/// Word of [`CODE`] the interrupt handler sets, polled by the A32 loop.
const FLAG_WORD: usize = 512;

/// R0-R7 and ESR_EL1 of the SVC that ended the last run.
static RESULT: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];
static SVC_ESR: AtomicU64 = AtomicU64::new(0);
/// Interrupts taken from AArch32 EL0, and the last INTID.
static IRQS: AtomicU32 = AtomicU32::new(0);
static IRQ_INTID: AtomicU32 = AtomicU32::new(0);
static RUNNING: AtomicBool = AtomicBool::new(false);

core::arch::global_asm!(
    r#"
    .text
    .global probe_enter_el0
probe_enter_el0:                    // x0 = R0-R7, x1 = ELR_EL1, x2 = SPSR_EL1
    stp     x29, x30, [sp, #-96]!
    stp     x27, x28, [sp, #16]
    stp     x25, x26, [sp, #32]
    stp     x23, x24, [sp, #48]
    stp     x21, x22, [sp, #64]
    stp     x19, x20, [sp, #80]
    msr     elr_el1, x1
    msr     spsr_el1, x2
    mov     x9, x0
    ldp     x0, x1, [x9]
    ldp     x2, x3, [x9, #16]
    ldp     x4, x5, [x9, #32]
    ldp     x6, x7, [x9, #48]
    isb
    eret
    .global probe_el0_returned
probe_el0_returned:                 // from the SVC handler, SP as at the eret
    ldp     x19, x20, [sp, #80]
    ldp     x21, x22, [sp, #64]
    ldp     x23, x24, [sp, #48]
    ldp     x25, x26, [sp, #32]
    ldp     x27, x28, [sp, #16]
    ldp     x29, x30, [sp], #96
    ret
"#
);

extern "C" {
    fn probe_enter_el0(regs: *const u64, elr: u64, spsr: u64);
    fn probe_el0_returned();
}

/// The vectors' "lower EL, AArch32" entries: `kind` 12 (synchronous) or 13
/// (IRQ). False: not ours (the caller reports it as unexpected).
pub fn handle(frame: &mut crate::exc::Frame, kind: u64) -> bool {
    if !RUNNING.load(Ordering::Relaxed) {
        return false;
    }
    match kind {
        12 => {
            let esr: u64;
            // SAFETY: reading the syndrome has no side effect.
            unsafe { core::arch::asm!("mrs {}, esr_el1", out(reg) esr) };
            SVC_ESR.store(esr, Ordering::Relaxed);
            for (r, x) in RESULT.iter().zip(frame.x.iter()) {
                r.store(*x, Ordering::Relaxed);
            }
            // SAFETY: returns to `probe_el0_returned` at EL1h with every
            // exception masked, on the stack `probe_enter_el0` left (SP_EL1
            // is back at its eret value once the vector pops this frame).
            unsafe {
                core::arch::asm!(
                    "msr elr_el1, {e}",
                    "msr spsr_el1, {s}",
                    e = in(reg) probe_el0_returned as *const () as usize as u64,
                    s = in(reg) 0x3c5u64,
                )
            };
            true
        }
        13 => {
            let intid: u64;
            // SAFETY: acknowledges this CPU's highest-priority Group 1
            // interrupt (ICC_IAR1_EL1); the EOI follows.
            unsafe { core::arch::asm!("mrs {}, S3_0_C12_C12_0", out(reg) intid) };
            if intid < 1020 {
                // The timer's output drops before the EOI, or it fires again.
                crate::gic::vtimer_stop();
                // SAFETY: ICC_EOIR1_EL1 for the INTID just acknowledged.
                unsafe { core::arch::asm!("msr S3_0_C12_C12_1, {}", "isb", in(reg) intid) };
                IRQS.fetch_add(1, Ordering::Relaxed);
                IRQ_INTID.store(intid as u32, Ordering::Relaxed);
                let page = core::ptr::addr_of_mut!(CODE) as *mut u32;
                // SAFETY: a word of the probe's own code page, through its
                // EL1 mapping; the loop reads it through the alias (same
                // physical address and attributes).
                unsafe { page.add(FLAG_WORD).write_volatile(1) };
            }
            true
        }
        _ => false,
    }
}

/// Writes `words` at the start of the code page and makes them visible to
/// instruction fetch (Arm ARM D7.5.9.2: clean to PoU, invalidate I-cache).
fn load(words: &[u32]) {
    let page = core::ptr::addr_of_mut!(CODE) as *mut u32;
    for (i, &w) in words.iter().enumerate().take(FLAG_WORD) {
        // SAFETY: inside the probe's code page, not executing now.
        unsafe { page.add(i).write_volatile(w) };
    }
    // SAFETY: as above: the flag word, cleared.
    unsafe { page.add(FLAG_WORD).write_volatile(0) };
    let mut a = page as usize;
    while a < page as usize + 4096 {
        // SAFETY: cache maintenance of a mapped page.
        unsafe { core::arch::asm!("dc cvau, {}", in(reg) a) };
        a += 64;
    }
    // SAFETY: barriers and I-cache invalidation only.
    unsafe { core::arch::asm!("dsb ish", "ic iallu", "dsb ish", "isb") };
}

/// Runs the loaded code at EL0 from `alias` with `spsr` and R0-R7 = `regs`;
/// returns R0-R7 at its SVC.
fn run_el0(alias: u64, spsr: u64, regs: [u64; 8]) -> [u64; 8] {
    RUNNING.store(true, Ordering::Relaxed);
    SVC_ESR.store(0, Ordering::Relaxed);
    // SAFETY: the code at `alias` ends with SVC, whose handler returns here;
    // EL0 reaches only the alias and the distributor (`run_group` maps them).
    unsafe { probe_enter_el0(regs.as_ptr(), alias, spsr) };
    RUNNING.store(false, Ordering::Relaxed);
    core::array::from_fn(|i| RESULT[i].load(Ordering::Relaxed))
}

/// Runs the group.
pub fn run(p: &Platform) {
    let code_pa = core::ptr::addr_of!(CODE) as u64;
    let gicd_index = p.gicd as u64 / GIB;
    // A VA below 4 GiB for the alias: a block that holds no RAM, not the
    // code's and not the distributor's.
    let slot = (0..4u64).find(|&i| {
        let ram = i * GIB < p.ram.0 + p.ram.1 && (i + 1) * GIB > p.ram.0;
        !ram && i != code_pa / GIB && i != gicd_index
    });
    let (Some(slot), true) = (slot, gicd_index < 4) else {
        check(
            false,
            G,
            "set-up",
            format_args!(
                "no 1 GiB slot below 4 GiB for the alias, or GICD {:#x} above",
                p.gicd
            ),
            "Arm ARM D1.3",
        );
        return;
    };
    let alias = slot * GIB + (code_pa % GIB);
    let old_alias = crate::mmu::set_l1(
        slot as usize,
        (code_pa & !(GIB - 1)) | 0b01 | (1 << 10) | ATTR_NORMAL | (3 << 8) | AP_EL0_RW | PXN,
    );
    // The distributor's block as it is (Device, execute-never), EL0 too.
    let device = (gicd_index * GIB) | 0b01 | (1 << 10) | (3 << 53);
    let old_gicd = crate::mmu::set_l1(gicd_index as usize, device | AP_EL0_RW);
    let iidr = u64::from(crate::gic::rd32(p.gicd + GICD_IIDR));
    let r0 = (p.gicd + GICD_IIDR) as u64;

    // A32: LDR r1, [r0]; MOV r5, #9; SVC #0.
    load(&[0xe590_1000, 0xe3a0_5009, 0xef00_0000]);
    let r = run_el0(alias, SPSR_USR32, [r0, 0, 0, 0, 0, 0, 0, 0]);
    eq(
        G,
        "a32-trapped-load-reads-the-register-and-skips-4-bytes",
        (r[1], r[5], SVC_ESR.load(Ordering::Relaxed) >> 26),
        (iidr, 9, EC_SVC32),
        "Arm ARM D1.10.1 (R0-R14 are X0-X14), ESR_EL2.IL",
    );

    // T32: LDR r1,[r0]; MOVS r5,#9; CMP r0,r0; ITE EQ; LDREQ r2,[r0];
    // MOVNE r3,#1; MOVS r4,#7; SVC #0 (16-bit each, two a word).
    let t = |a: u32, b: u32| a | b << 16;
    load(&[
        t(0x6801, 0x2509),
        t(0x4280, 0xbf0c),
        t(0x6802, 0x2301),
        t(0x2407, 0xdf00),
    ]);
    let r = run_el0(alias, SPSR_USR32 | SPSR_T, [r0, 0, 0, 0, 0, 0, 0, 0]);
    eq(
        G,
        "t32-trapped-load-skips-2-bytes",
        (r[1], r[5]),
        (iidr, 9),
        "Arm ARM ESR_EL2.IL (16-bit instruction)",
    );
    eq(
        G,
        "t32-trapped-load-in-an-it-block-advances-it",
        (r[2], r[3], r[4]),
        (iidr, 0, 7),
        "Arm ARM AArch32 ITSTATE, ITAdvance()",
    );

    // An interrupt while EL0 runs A32: loop until the handler sets the
    // flag (or R4 runs out): LDR r3,[r0]; CMP r3,#0; BNE done; SUBS r4,#1;
    // BNE loop; done: SVC #0.
    load(&[
        0xe590_3000,
        0xe353_0000,
        0x1a00_0001,
        0xe254_4001,
        0x1aff_fffa,
        0xef00_0000,
    ]);
    let sgi = crate::gic::vtimer_wakeup_ready(p);
    IRQS.store(0, Ordering::Relaxed);
    crate::gic::vtimer_arm(5);
    let flag_va = alias + (FLAG_WORD as u64) * 4;
    let r = run_el0(alias, SPSR_USR32, [flag_va, 0, 0, 0, 50_000_000, 0, 0, 0]);
    crate::gic::vtimer_stop();
    if let Some(sgi) = sgi {
        crate::gic::wr32(sgi + crate::gic::ICENABLER0, 1 << crate::gic::VTIMER_PPI);
    }
    eq(
        G,
        "an-interrupt-taken-from-a32-el0-returns-to-it",
        (
            IRQS.load(Ordering::Relaxed),
            IRQ_INTID.load(Ordering::Relaxed),
            r[3],
            r[4] != 0,
        ),
        (1, crate::gic::VTIMER_PPI, 1, true),
        "Arm ARM D1.3.1 (lower EL, AArch32 vectors)",
    );

    crate::mmu::set_l1(gicd_index as usize, old_gicd);
    crate::mmu::set_l1(slot as usize, old_alias);
}

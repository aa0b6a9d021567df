//! Loads and stores of every width and A64 addressing form to an emulated
//! device (the distributor): the hypervisor must give each the effect the
//! instruction has on memory, including the forms whose data abort carries
//! no instruction syndrome (pairs, writeback, register offsets), and an
//! external abort to the forms a device cannot take (exclusives, atomics).
//! Targets: GICD_IPRIORITYR (byte- and word-accessible, IHI 0069) of SPIs
//! 224..239 and GICD_IROUTER (64-bit) of SPIs 250 and 251.

use core::arch::asm;

use crate::dt::Platform;
use crate::exc;
use crate::report::eq;

const G: &str = "mmio";
const ARM: &str = "Arm ARM C6.2";

/// IPRIORITYR byte of INTID 224.
const PRIO: usize = 0x400 + 224;
/// IROUTER of INTID 250.
const ROUTE: usize = 0x6000 + 8 * 250;

/// Runs the group.
pub fn run(p: &Platform) {
    let base = p.gicd + PRIO;
    // Bytes 0x10, 0x20 .. 0x80: multiples of 16 survive any implemented
    // priority width (at least 4 bits, IHI 0069 4.8).
    for i in 0..8u64 {
        let a = base + i as usize;
        let v = (i + 1) << 4;
        // SAFETY: a byte store to the distributor's IPRIORITYR.
        unsafe { asm!("strb {v:w}, [{a}]", v = in(reg) v, a = in(reg) a) };
    }
    let mut bytes = [0u64; 8];
    for (i, b) in bytes.iter_mut().enumerate() {
        // SAFETY: a byte load from IPRIORITYR.
        unsafe { asm!("ldrb {v:w}, [{a}]", v = out(reg) *b, a = in(reg) base + i) };
    }
    eq(
        G,
        "strb-ldrb",
        bytes,
        [0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80],
        ARM,
    );
    let w: u64;
    // SAFETY: a word load.
    unsafe { asm!("ldr {v:w}, [{a}]", v = out(reg) w, a = in(reg) base) };
    eq(G, "ldr-w", w, 0x4030_2010, ARM);
    let w: u64;
    // SAFETY: a word load with an immediate offset.
    unsafe { asm!("ldr {v:w}, [{a}, #4]", v = out(reg) w, a = in(reg) base) };
    eq(G, "ldr-w-imm-offset", w, 0x8070_6050, ARM);
    // Post-index and pre-index writeback (no syndrome: decoded).
    let mut a = base;
    let w: u64;
    // SAFETY: a word load; the base register is written back.
    unsafe { asm!("ldr {v:w}, [{a}], #4", v = out(reg) w, a = inout(reg) a) };
    eq(G, "ldr-post-index", (w, a - base), (0x4030_2010, 4), ARM);
    let mut a = base;
    let w: u64;
    // SAFETY: as above, pre-index.
    unsafe { asm!("ldr {v:w}, [{a}, #4]!", v = out(reg) w, a = inout(reg) a) };
    eq(G, "ldr-pre-index", (w, a - base), (0x8070_6050, 4), ARM);
    // Register offsets.
    let w: u64;
    // SAFETY: a word load at base + x.
    unsafe { asm!("ldr {v:w}, [{a}, {x}]", v = out(reg) w, a = in(reg) base, x = in(reg) 4u64) };
    eq(G, "ldr-register-offset", w, 0x8070_6050, ARM);
    let w: u64;
    // SAFETY: a word load at base + (x << 2).
    unsafe {
        asm!("ldr {v:w}, [{a}, {x}, lsl #2]", v = out(reg) w, a = in(reg) base, x = in(reg) 1u64)
    };
    eq(G, "ldr-register-offset-lsl", w, 0x8070_6050, ARM);
    let w: u64;
    // SAFETY: a word load at (base + 4) + sxtw(-4).
    unsafe {
        asm!("ldr {v:w}, [{a}, {x:w}, sxtw]", v = out(reg) w, a = in(reg) base + 4, x = in(reg) (-4i64) as u64)
    };
    eq(G, "ldr-register-offset-sxtw", w, 0x4030_2010, ARM);
    let w: u64;
    // SAFETY: an unscaled load with a negative offset.
    unsafe { asm!("ldur {v:w}, [{a}, #-4]", v = out(reg) w, a = in(reg) base + 4) };
    eq(G, "ldur-negative-offset", w, 0x4030_2010, ARM);
    // Word stores, read back by bytes.
    // SAFETY: a word store to IPRIORITYR (SPIs 228..231).
    unsafe { asm!("str {v:w}, [{a}, #4]", v = in(reg) 0x1020_3040u64, a = in(reg) base) };
    let b: u64;
    // SAFETY: a byte load.
    unsafe { asm!("ldrb {v:w}, [{a}, #7]", v = out(reg) b, a = in(reg) base) };
    eq(G, "str-w-ldrb", b, 0x10, ARM);
    // Sign-extending loads.
    // SAFETY: a word store (bytes a0 b0 c0 d0).
    unsafe { asm!("str {v:w}, [{a}, #8]", v = in(reg) 0xd0c0_b0a0u64, a = in(reg) base) };
    let (x, wv, sw): (u64, u64, u64);
    // SAFETY: sign-extending byte and word loads.
    unsafe {
        asm!("ldrsb {x}, [{a}, #8]", "ldrsb {w:w}, [{a}, #8]", "ldrsw {s}, [{a}, #8]",
            x = out(reg) x, w = out(reg) wv, s = out(reg) sw, a = in(reg) base)
    };
    eq(G, "ldrsb-x", x, 0xffff_ffff_ffff_ffa0, ARM);
    eq(G, "ldrsb-w", wv, 0xffff_ffa0, ARM);
    eq(G, "ldrsw", sw, 0xffff_ffff_d0c0_b0a0, ARM);
    // Pairs (no syndrome: decoded).
    let (w2, w3): (u64, u64);
    // SAFETY: a pair of word loads.
    unsafe { asm!("ldp {a:w}, {b:w}, [{p}]", a = out(reg) w2, b = out(reg) w3, p = in(reg) base) };
    eq(G, "ldp-w", (w2, w3), (0x4030_2010, 0x1020_3040), ARM);
    // SAFETY: a pair of word stores (SPIs 236..239 and 240..243).
    unsafe {
        asm!("stp {a:w}, {b:w}, [{p}, #12]", a = in(reg) 0x5060_7080u64, b = in(reg) 0x9000_a0b0u64, p = in(reg) base)
    };
    let (w2, w3): (u64, u64);
    // SAFETY: word loads.
    unsafe {
        asm!("ldr {a:w}, [{p}, #12]", "ldr {b:w}, [{p}, #16]", a = out(reg) w2, b = out(reg) w3, p = in(reg) base)
    };
    eq(G, "stp-w", (w2, w3), (0x5060_7080, 0x9000_a0b0), ARM);
    let mut a = base;
    let (w2, w3): (u64, u64);
    // SAFETY: a pair of word loads with post-index writeback.
    unsafe {
        asm!("ldp {x:w}, {y:w}, [{p}], #8", x = out(reg) w2, y = out(reg) w3, p = inout(reg) a)
    };
    eq(
        G,
        "ldp-post-index",
        (w2, w3, a - base),
        (0x4030_2010, 0x1020_3040, 8),
        ARM,
    );
    // The zero register as source and destination.
    // SAFETY: stores zero; the load's result is discarded.
    unsafe { asm!("str wzr, [{a}, #12]", "ldr wzr, [{a}]", a = in(reg) base) };
    let w: u64;
    // SAFETY: a word load.
    unsafe { asm!("ldr {v:w}, [{a}, #12]", v = out(reg) w, a = in(reg) base) };
    eq(G, "str-wzr", w, 0, ARM);
    // 64-bit: GICD_IROUTER<n> (IHI 0069: 64-bit, or 32-bit halves).
    let r = p.gicd + ROUTE;
    let aff = p.cpus().get(1).copied().unwrap_or(0) & 0xff_00ff_ffff;
    // SAFETY: a doubleword store to IROUTER<250>.
    unsafe { asm!("str {v}, [{a}]", v = in(reg) aff, a = in(reg) r) };
    let (x, lo): (u64, u64);
    // SAFETY: doubleword and word loads.
    unsafe {
        asm!("ldr {x}, [{a}]", "ldr {l:w}, [{a}]", x = out(reg) x, l = out(reg) lo, a = in(reg) r)
    };
    eq(
        G,
        "str-x-ldr-x",
        (x, lo),
        (aff, aff & 0xffff_ffff),
        "IHI 0069 GICD_IROUTER<n>",
    );
    // SAFETY: a pair of doubleword stores (IROUTER<250>, <251>).
    unsafe { asm!("stp {a}, {b}, [{p}]", a = in(reg) 0u64, b = in(reg) aff, p = in(reg) r) };
    let (x0, x1): (u64, u64);
    // SAFETY: a pair of doubleword loads.
    unsafe { asm!("ldp {a}, {b}, [{p}]", a = out(reg) x0, b = out(reg) x1, p = in(reg) r) };
    eq(G, "stp-ldp-x", (x0, x1), (0, aff), ARM);
    // Exclusives and atomics to a device: an external abort (the choice
    // Arm ARM B2.9 leaves to the implementation; arch_emu::insn documents it).
    let t = exc::expect(|| {
        let _v: u64;
        // SAFETY: the abort it raises is expected and skipped.
        unsafe { asm!("ldxr {v:w}, [{a}]", v = out(reg) _v, a = in(reg) base) };
    });
    // EC 0x25 (data abort, same EL), DFSC 0x10 (synchronous external abort).
    eq(
        G,
        "ldxr-external-abort",
        t.map(|t| (t.ec(), t.esr & 0x3f)),
        Some((0x25, 0x10)),
        "Arm ARM B2.9, D17.2.40",
    );
    let t = exc::expect(|| {
        let _v: u64;
        // SAFETY: as above (FEAT_LSE is in QEMU's max CPU).
        unsafe {
            asm!(".arch_extension lse", "ldadd {s:w}, {v:w}, [{a}]", s = in(reg) 1u64, v = out(reg) _v, a = in(reg) base)
        };
    });
    eq(
        G,
        "ldadd-external-abort",
        t.map(|t| (t.ec(), t.esr & 0x3f)),
        Some((0x25, 0x10)),
        "Arm ARM B2.9, D17.2.40",
    );
    // Put back what the group changed (priorities 0, routing to CPU 0).
    for off in (0..24).step_by(4) {
        // SAFETY: word stores to IPRIORITYR.
        unsafe { asm!("str wzr, [{a}]", a = in(reg) base + off) };
    }
    // SAFETY: doubleword stores to IROUTER.
    unsafe { asm!("stp xzr, xzr, [{p}]", p = in(reg) r) };
}

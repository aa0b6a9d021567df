//! The distributor's and redistributors' identification and RAZ/WI ranges,
//! as IHI 0069 (GICv3 and GICv4 Architecture Specification) describes each
//! register, for a distributor with affinity routing and DS = 1.

use crate::dt::Platform;
use crate::gic::{rd32, wr32};
use crate::io::r64 as rd64;
use crate::report::{check, eq};

const G: &str = "gic-regs";
const GICR_STRIDE: usize = 0x2_0000;

/// Runs the group.
pub fn run(p: &Platform) {
    let d = p.gicd;
    eq(
        G,
        "gicd-pidr2-archrev",
        (rd32(d + 0xffe8) >> 4) & 0xf,
        3,
        "IHI 0069 GICD_PIDR2.ArchRev",
    );
    let ctlr = rd32(d);
    eq(
        G,
        "gicd-ctlr-ds-are",
        (ctlr >> 6 & 1, ctlr >> 4 & 1),
        (1, 1),
        "IHI 0069 GICD_CTLR (DS = 1, ARE RAO/WI)",
    );
    wr32(d, ctlr & !(1 << 4));
    eq(
        G,
        "gicd-ctlr-are-rao-wi",
        rd32(d) >> 4 & 1,
        1,
        "IHI 0069 GICD_CTLR.ARE",
    );
    wr32(d, ctlr);
    let typer = rd32(d + 0x4);
    let lines = ((typer & 0x1f) + 1) * 32;
    check(
        lines >= 64 && typer >> 17 & 1 == 0,
        G,
        "gicd-typer",
        format_args!("{typer:#x}: {lines} INTIDs, LPIS {}", typer >> 17 & 1),
        "IHI 0069 GICD_TYPER",
    );
    // With affinity routing, the SGI/PPI banks of the distributor are RAZ/WI
    // (the redistributors hold them).
    for (name, off) in [
        ("gicd-igroupr0-raz-wi", 0x080usize),
        ("gicd-isenabler0-raz-wi", 0x100),
        ("gicd-ispendr0-raz-wi", 0x200),
        ("gicd-ipriorityr0-raz-wi", 0x400),
        ("gicd-itargetsr8-raz-wi", 0x800 + 32),
        ("gicd-irouter0-raz-wi", 0x6000),
    ] {
        wr32(d + off, 0xffff_ffff);
        eq(
            G,
            name,
            rd32(d + off),
            0,
            "IHI 0069 (affinity routing enabled: RAZ/WI)",
        );
    }
    // Reserved distributor space reads as zero.
    eq(
        G,
        "gicd-reserved-raz",
        (rd32(d + 0x20), rd32(d + 0x7c)),
        (0, 0),
        "IHI 0069 GICD register map (RES0)",
    );
    // One redistributor per CPU, in order, the last one marked.
    let mut ok = true;
    let n = p.cpus().len();
    for (i, &mpidr) in p.cpus().iter().enumerate() {
        let rd = p.gicr + i * GICR_STRIDE;
        let t = rd64(rd + 0x8);
        let last = t >> 4 & 1 == 1;
        let aff = t >> 32;
        let proc_num = (t >> 8) & 0xffff;
        let pidr2 = (rd32(rd + 0xffe8) >> 4) & 0xf;
        let good = aff == mpidr & 0xff_00ff_ffff
            && last == (i + 1 == n)
            && proc_num == i as u64
            && pidr2 == 3;
        ok &= good;
        check(
            good,
            G,
            "gicr-typer",
            format_args!(
                "redistributor {i}: TYPER {t:#x} (MPIDR {mpidr:#x}), PIDR2.ArchRev {pidr2}"
            ),
            "IHI 0069 GICR_TYPER (Affinity_Value, Last, Processor_Number), GICR_PIDR2",
        );
    }
    let _ = ok;
    // GICR_WAKER: ProcessorSleep cleared, ChildrenAsleep reads 0.
    let rd = p.gicr;
    wr32(rd + 0x14, rd32(rd + 0x14) & !(1 << 1));
    eq(
        G,
        "gicr-waker-awake",
        rd32(rd + 0x14) & 0b110,
        0,
        "IHI 0069 GICR_WAKER",
    );
}

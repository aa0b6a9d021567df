//! The `icc` group: the GIC system registers that trap to the hypervisor
//! (ICC_SGI0R_EL1, ICC_SGI1R_EL1, ICC_ASGI1R_EL1: HCR_EL2.FMO/IMO) generate
//! SGIs, Group 0 included (GICD_CTLR.DS = 1), seen as pending in the target's
//! GICR_ISPENDR0 while the SGI is disabled (IHI 0069, "Forwarding an SGI to a
//! target PE").

use crate::dt::Platform;
use crate::exc;
use crate::gic::{self, rd32, wr32, ICENABLER0, ICPENDR0, IGROUPR0, ISPENDR0, SGI_BASE};
use crate::report::{check, eq};

const G: &str = "icc";
/// SGI 1 is put in Group 0, SGI 2 in Group 1.
const SGI_G0: u64 = 1;
const SGI_G1: u64 = 2;

fn write_sgi0r(v: u64) -> Option<exc::Taken> {
    // SAFETY: generates an SGI; an exception, if any, is expected and skipped.
    exc::expect(|| unsafe { core::arch::asm!("msr S3_0_C12_C11_7, {}", "isb", in(reg) v) })
}
fn write_sgi1r(v: u64) -> Option<exc::Taken> {
    // SAFETY: as above.
    exc::expect(|| unsafe { core::arch::asm!("msr S3_0_C12_C11_5, {}", "isb", in(reg) v) })
}
fn write_asgi1r(v: u64) -> Option<exc::Taken> {
    // SAFETY: as above.
    exc::expect(|| unsafe { core::arch::asm!("msr S3_0_C12_C11_6, {}", "isb", in(reg) v) })
}

/// The SGI register value aiming SGI `intid` at the CPU with affinity `mpidr`.
fn target(intid: u64, mpidr: u64) -> u64 {
    let aff0 = mpidr & 0xff;
    ((mpidr >> 32) & 0xff) << 48
        | ((mpidr >> 16) & 0xff) << 32
        | (intid << 24)
        | ((mpidr >> 8) & 0xff) << 16
        | ((aff0 / 16) << 44)
        | (1 << (aff0 % 16))
}

/// SGIs 1 and 2 of `sgi_base` disabled and not pending, SGI 1 in Group 0.
fn prepare(sgi_base: usize) {
    let mask = (1 << SGI_G0) | (1 << SGI_G1);
    wr32(sgi_base + ICENABLER0, mask);
    wr32(sgi_base + ICPENDR0, mask);
    let g = rd32(sgi_base + IGROUPR0);
    wr32(sgi_base + IGROUPR0, (g & !(1 << SGI_G0)) | (1 << SGI_G1));
}

fn pending(sgi_base: usize, intid: u64) -> bool {
    rd32(sgi_base + ISPENDR0) & (1 << intid) != 0
}

/// Writes `v` through `write`, then reports whether SGI `intid` is pending at
/// `sgi_base` (and that no exception was taken); clears it again.
fn sgi_check(
    name: &str,
    write: fn(u64) -> Option<exc::Taken>,
    v: u64,
    sgi_base: usize,
    intid: u64,
    want: bool,
    spec: &str,
) {
    let taken = write(v);
    let got = pending(sgi_base, intid);
    check(
        taken.is_none() && got == want,
        G,
        name,
        format_args!("exception {taken:?}, SGI {intid} pending {got} want {want}"),
        spec,
    );
    wr32(sgi_base + ICPENDR0, 1 << intid);
}

/// Runs the group.
pub fn run(p: &Platform) {
    let cpus = p.cpus();
    let me = gic::my_mpidr();
    gic::dist_enable(p);
    eq(
        G,
        "gicd-ctlr-ds",
        rd32(p.gicd) >> 6 & 1,
        1,
        "IHI 0069 12.9.4 GICD_CTLR.DS",
    );
    let Some(mine) = gic::cpu_init(p) else {
        check(
            false,
            G,
            "redistributor",
            format_args!("none for {me:#x}"),
            "IHI 0069 12.11.28",
        );
        return;
    };
    prepare(mine);
    const TABLE: &str = "IHI 0069 'Forwarding an SGI to a target PE', GICD_CTLR.DS = 1";
    // Fault 3 of issue 9.
    sgi_check(
        "sgi0r-group0-self",
        write_sgi0r,
        target(SGI_G0, me),
        mine,
        SGI_G0,
        true,
        TABLE,
    );
    sgi_check(
        "asgi1r-group0-self",
        write_asgi1r,
        target(SGI_G0, me),
        mine,
        SGI_G0,
        true,
        TABLE,
    );
    sgi_check(
        "sgi1r-group1-self",
        write_sgi1r,
        target(SGI_G1, me),
        mine,
        SGI_G1,
        true,
        TABLE,
    );
    sgi_check(
        "sgi1r-group0-self",
        write_sgi1r,
        target(SGI_G0, me),
        mine,
        SGI_G0,
        true,
        TABLE,
    );
    sgi_check(
        "sgi0r-not-group1",
        write_sgi0r,
        target(SGI_G1, me),
        mine,
        SGI_G1,
        false,
        TABLE,
    );
    sgi_check(
        "asgi1r-not-group1",
        write_asgi1r,
        target(SGI_G1, me),
        mine,
        SGI_G1,
        false,
        TABLE,
    );
    if let Some(other) = cpus
        .get(1)
        .copied()
        .and_then(|m| gic::redist(p, m).map(|rd| (m, rd + SGI_BASE)))
    {
        let (m, theirs) = other;
        prepare(theirs);
        sgi_check(
            "sgi0r-other-cpu",
            write_sgi0r,
            target(SGI_G0, m),
            theirs,
            SGI_G0,
            true,
            TABLE,
        );
        sgi_check(
            "sgi1r-other-cpu",
            write_sgi1r,
            target(SGI_G1, m),
            theirs,
            SGI_G1,
            true,
            TABLE,
        );
        // IRM = 1: every PE but the sender.
        let irm = (1u64 << 40) | (SGI_G0 << 24);
        let taken = write_sgi0r(irm);
        let (there, here) = (pending(theirs, SGI_G0), pending(mine, SGI_G0));
        check(
            taken.is_none() && there && !here,
            G,
            "sgi0r-irm-all-but-self",
            format_args!("exception {taken:?}, other {there}, self {here}"),
            "IHI 0069 ICC_SGI0R_EL1.IRM",
        );
        wr32(theirs + ICPENDR0, 1 << SGI_G0);
    }
    // Reads of the write-only registers are UNDEFINED.
    let t = exc::expect(|| {
        // SAFETY: the exception it raises is expected and skipped.
        unsafe { core::arch::asm!("mrs {}, S3_0_C12_C11_5", out(reg) _) }
    });
    eq(
        G,
        "sgi1r-read-undefined",
        t.map(|t| t.ec()),
        Some(0),
        "IHI 0069 ICC_SGI1R_EL1: write-only",
    );
}

//! The CPU features the guest's ID registers advertise work at EL1, and the
//! ID register group reads as the Arm ARM says (issue 9, fault 5: MOPS was
//! advertised while HCRX_EL2.MSCEn left CPYF* UNDEFINED).

use crate::dt::Platform;
use crate::exc;
use crate::report::{check, eq};

const G: &str = "cpufeat";

macro_rules! id_reg {
    ($name:literal) => {{
        let v: u64;
        // SAFETY: reading an ID register has no side effect (the hypervisor
        // traps and answers it).
        unsafe { core::arch::asm!(concat!("mrs {}, ", $name), out(reg) v) };
        v
    }};
}

fn field(v: u64, shift: u32) -> u64 {
    (v >> shift) & 0xf
}

/// Copies `src` to `dst` with the FEAT_MOPS forward-only copy (CPYFP, CPYFM,
/// CPYFE; encodings from `llvm-mc -mattr=+mops -show-encoding`).
fn mops_copy(dst: &mut [u8], src: &[u8]) {
    let n = dst.len().min(src.len());
    // SAFETY: the prologue, main and epilogue copy `n` bytes from `src` to
    // `dst`, both valid for `n` bytes and not overlapping; the registers
    // they update are declared.
    unsafe {
        core::arch::asm!(
            ".inst 0x19010440", // cpyfp [x0]!, [x1]!, x2!
            ".inst 0x19410440", // cpyfm [x0]!, [x1]!, x2!
            ".inst 0x19810440", // cpyfe [x0]!, [x1]!, x2!
            inout("x0") dst.as_mut_ptr() => _,
            inout("x1") src.as_ptr() => _,
            inout("x2") n => _,
        )
    };
}

/// Runs the group.
pub fn run(_p: &Platform) {
    let pfr0 = id_reg!("id_aa64pfr0_el1");
    eq(
        G,
        "no-el2-or-el3",
        (field(pfr0, 8), field(pfr0, 12)),
        (0, 0),
        "Arm ARM D23.2 ID_AA64PFR0_EL1",
    );
    // Unallocated encodings of the ID register group read as zero.
    let raz = [
        id_reg!("S3_0_C0_C3_3"),
        id_reg!("S3_0_C0_C4_3"),
        id_reg!("S3_0_C0_C5_3"),
        id_reg!("S3_0_C0_C7_7"),
    ];
    eq(
        G,
        "unallocated-id-raz",
        raz,
        [0; 4],
        "Arm ARM D23.3, reserved ID encodings",
    );
    let isar2 = id_reg!("id_aa64isar2_el1");
    if field(isar2, 16) == 0 {
        check(
            true,
            G,
            "mops-runs",
            format_args!("MOPS not advertised"),
            "Arm ARM C6.2 CPYFP",
        );
        return;
    }
    let src: [u8; 100] = core::array::from_fn(|i| i as u8 ^ 0x5a);
    let mut dst = [0u8; 100];
    let t = exc::expect_each(|| mops_copy(&mut dst, &src));
    eq(
        G,
        "mops-runs",
        (t.map(|t| t.ec()), dst == src),
        (None, true),
        "Arm ARM C6.2 CPYFP; D23.2 HCRX_EL2.MSCEn",
    );
}

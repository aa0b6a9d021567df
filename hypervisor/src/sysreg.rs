//! System register access, plus barriers.
//!
//! Registers the `aarch64-cpu` crate names are used through it
//! (`aarch64_cpu::registers::HCR_EL2` and the like, fields named as in the Arm
//! ARM); the fields it leaves out are defined here as [`Field`]s of its
//! register types, in a module per register (`sctlr_el1::SPAN`). Registers it
//! does not have (most ICC_*, ZCR_EL2, SMCR_EL2, VPIDR_EL2, PMCR_EL0, CTR_EL0)
//! are read with [`read_sysreg!`] and written with [`write_sysreg!`], by name
//! or, where the assembler needs a feature for the name, in the
//! `S3_<op1>_C<n>_C<m>_<op2>` form; their fields are the `u64` constants of a
//! module per register.
//!
//! Field positions and RES1 bits are those of the register descriptions of the
//! Arm Architecture Reference Manual for A-profile (DDI 0487), in the layouts
//! for HCR_EL2.E2H = 0: the hypervisor never sets E2H.

use aarch64_cpu::registers::*;
use tock_registers::fields::{Field, FieldValue};
use tock_registers::RegisterLongName;

/// Reads a system register the `aarch64-cpu` crate does not name.
///
/// Safe to use: an `mrs` has no effect on memory. The registers read through it
/// are all accessible at EL2 (one that is not would trap to EL2, a hypervisor
/// fault); a read with a side effect (ICC_IAR1_EL1 acknowledges an interrupt)
/// changes interrupt controller state only.
macro_rules! read_sysreg {
    ($reg:tt) => {{
        let v: u64;
        // SAFETY: `mrs` does not access memory; see the macro's documentation.
        unsafe { core::arch::asm!(concat!("mrs {}, ", $reg), out(reg) v, options(nomem, nostack)) };
        v
    }};
}

/// Writes a system register the `aarch64-cpu` crate does not name.
///
/// # Safety
///
/// The expansion is an `msr` that must be in an `unsafe` block. The caller
/// guarantees that `$reg` is accessible at EL2 on this CPU (the feature that
/// defines it is implemented, and no trap control routes the access away),
/// and that the value, field by field as the Arm ARM defines them, does not
/// change the hypervisor's translation, exception or stack state under it, nor
/// give the guest access to memory outside its stage-2 map.
macro_rules! write_sysreg {
    ($reg:tt, $val:expr) => {{
        let v: u64 = $val;
        core::arch::asm!(concat!("msr ", $reg, ", {}"), in(reg) v, options(nostack))
    }};
}

pub(crate) use read_sysreg;
pub(crate) use write_sysreg;

/// The bits of `field` in its register (`mask << shift`).
const fn bits<R: RegisterLongName>(field: Field<u64, R>) -> u64 {
    field.mask << field.shift
}

/// A RES1 field value: every bit of `bits` set, named as such.
const fn res1<R: RegisterLongName>(bits: u64) -> FieldValue<u64, R> {
    FieldValue::<u64, R>::new(bits, 0, bits)
}

/// CPTR_EL2 with E2H = 0: the fields `aarch64-cpu` (TAM only) lacks.
pub mod cptr_el2 {
    use super::{res1, Field, FieldValue, CPTR_EL2::Register as R};

    /// TCPAC, bit 31: trap EL1 accesses to CPACR_EL1.
    pub const TCPAC: Field<u64, R> = Field::new(1, 31);
    /// TTA, bit 20: trap trace register accesses.
    pub const TTA: Field<u64, R> = Field::new(1, 20);
    /// TSM, bit 12: trap SME instructions and registers (RES1 without FEAT_SME).
    pub const TSM: Field<u64, R> = Field::new(1, 12);
    /// TFP, bit 10: trap Advanced SIMD and floating-point.
    pub const TFP: Field<u64, R> = Field::new(1, 10);
    /// TZ, bit 8: trap SVE instructions and registers (RES1 without FEAT_SVE).
    pub const TZ: Field<u64, R> = Field::new(1, 8);
    /// The RES1 bits: 13, 9 and 7:0.
    pub const RES1: FieldValue<u64, R> = res1((1 << 13) | (1 << 9) | 0xff);
}

/// SCTLR_EL2 with E2H = 0: its RES1 bits.
pub mod sctlr_el2 {
    use super::{res1, FieldValue, SCTLR_EL2::Register as R};

    /// The RES1 bits: 29, 28, 23, 18, 16, 5 and 4 (11 and 22, EOS and EIS, are
    /// RES1 too without FEAT_ExS; `aarch64-cpu` names them).
    pub const RES1: FieldValue<u64, R> =
        res1((1 << 29) | (1 << 28) | (1 << 23) | (1 << 18) | (1 << 16) | (1 << 5) | (1 << 4));
}

/// TCR_EL2 with E2H = 0: its RES1 bits.
pub mod tcr_el2 {
    use super::{res1, FieldValue, TCR_EL2::Register as R};

    /// The RES1 bits: 31 and 23.
    pub const RES1: FieldValue<u64, R> = res1((1 << 31) | (1 << 23));
}

/// SCTLR_EL1: the fields `aarch64-cpu` lacks that the hypervisor sets or
/// reads. All but DSSBS (RES0 then) are RES1 when their feature is not
/// implemented.
pub mod sctlr_el1 {
    use super::{Field, SCTLR_EL1::Register as R};

    /// DSSBS, bit 44: PSTATE.SSBS on taking an exception to EL1 (FEAT_SSBS).
    pub const DSSBS: Field<u64, R> = Field::new(1, 44);
    /// LSMAOE, bit 29: load/store multiple atomicity and ordering (FEAT_LSMAOC).
    pub const LSMAOE: Field<u64, R> = Field::new(1, 29);
    /// nTLSMD, bit 28: no trap of load/store multiple to Device memory (FEAT_LSMAOC).
    pub const NTLSMD: Field<u64, R> = Field::new(1, 28);
    /// SPAN, bit 23: 0 sets PSTATE.PAN on taking an exception to EL1 (FEAT_PAN).
    pub const SPAN: Field<u64, R> = Field::new(1, 23);
    /// EIS, bit 22: exception entry is context-synchronizing (FEAT_ExS).
    pub const EIS: Field<u64, R> = Field::new(1, 22);
    /// TSCXT, bit 20: trap EL0 accesses to SCXTNUM_EL0 (FEAT_CSV2_2).
    pub const TSCXT: Field<u64, R> = Field::new(1, 20);
    /// EOS, bit 11: exception return is context-synchronizing (FEAT_ExS).
    pub const EOS: Field<u64, R> = Field::new(1, 11);
}

/// SPSR_EL2 / SPSR_EL1 for AArch64 state: the PSTATE fields
/// `aarch64-cpu` lacks.
pub mod spsr {
    use super::{Field, SPSR_EL2::Register as R};

    /// DIT, bit 24: data independent timing (FEAT_DIT).
    pub const DIT: Field<u64, R> = Field::new(1, 24);
    /// PAN, bit 22: privileged access never (FEAT_PAN).
    pub const PAN: Field<u64, R> = Field::new(1, 22);
    /// SSBS, bit 12: speculative store bypass safe (FEAT_SSBS).
    pub const SSBS: Field<u64, R> = Field::new(1, 12);
}

/// ID_AA64PFR1_EL1: the field `aarch64-cpu` (MTE only) lacks that the
/// hypervisor reads (the guest's view of the whole group is [`crate::cpufeat`]'s).
pub mod id_aa64pfr1_el1 {
    use super::{Field, ID_AA64PFR1_EL1::Register as R};

    /// SSBS, bits 7:4: PSTATE.SSBS implemented when non-zero.
    pub const SSBS: Field<u64, R> = Field::new(0xf, 4);
}

/// ZCR_EL2, SVE control; written as `S3_4_C1_C2_0` (the assembler
/// knows the name only with SVE enabled).
pub mod zcr_el2 {
    /// LEN, bits 8:0 as first defined (now 3:0, with 8:4 RAZ/WI): the vector
    /// length is (LEN + 1) x 128 bits, capped at what the PE has; all ones asks
    /// for the largest.
    pub const LEN: u64 = 0x1ff;
}

/// SMCR_EL2, SME control; written as `S3_4_C1_C2_6`.
pub mod smcr_el2 {
    /// FA64, bit 31: the full A64 instruction set in Streaming SVE mode.
    pub const FA64: u64 = 1 << 31;
    /// EZT0, bit 30: ZT0 is accessible (FEAT_SME2).
    pub const EZT0: u64 = 1 << 30;
    /// LEN, bits 8:0 as first defined (now 3:0, with 8:4 RAZ/WI): the streaming
    /// vector length; all ones asks for the largest.
    pub const LEN: u64 = 0x1ff;
}

/// PMCR_EL0: the field the hypervisor reads.
pub mod pmcr_el0 {
    /// N, bits 15:11: the number of event counters implemented (shift).
    pub const N_SHIFT: u32 = 11;
    /// N's width mask (after the shift).
    pub const N_MASK: u64 = 0x1f;
}

/// CTR_EL0: the field the hypervisor reads.
pub mod ctr_el0 {
    /// DminLine, bits 19:16: log2 of the smallest data cache line, in 4-byte words (shift).
    pub const DMINLINE_SHIFT: u32 = 16;
    /// DminLine's width mask (after the shift).
    pub const DMINLINE_MASK: u64 = 0xf;
}

/// MPIDR_EL1's affinity fields (Aff3..Aff0), without U, MT and the RES1 bit.
const MPIDR_AFFINITY: u64 =
    bits(MPIDR_EL1::Aff3) | bits(MPIDR_EL1::Aff2) | bits(MPIDR_EL1::Aff1) | bits(MPIDR_EL1::Aff0);

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
    MPIDR_EL1.get() & MPIDR_AFFINITY
}

/// Cleans the data cache to the point of coherency over `[start, start + len)`, so
/// that a guest running with its MMU and caches off sees what we wrote.
pub fn clean_dcache_range(start: usize, len: usize) {
    let ctr = read_sysreg!("ctr_el0");
    let line = 4usize << ((ctr >> ctr_el0::DMINLINE_SHIFT) & ctr_el0::DMINLINE_MASK);
    let mut a = start & !(line - 1);
    let end = start.saturating_add(len);
    while a < end {
        // SAFETY: DC CVAC on a mapped address only writes back a cache line.
        unsafe { core::arch::asm!("dc cvac, {}", in(reg) a, options(nostack)) };
        a += line;
    }
    dsb_sy();
}

/// Whether the CPU has the memory copy and set instructions (FEAT_MOPS:
/// ID_AA64ISAR2_EL1.MOPS, bits 19:16, non-zero).
pub fn has_mops() -> bool {
    // ID_AA64ISAR2_EL1 is S3_0_C0_C6_2 (named only with newer assemblers).
    (read_sysreg!("S3_0_C0_C6_2") >> 16) & 0xf != 0
}

/// Copies `src` to `dst` (not overlapping) with the FEAT_MOPS forward-only
/// copy instructions, CPYFP, CPYFM, CPYFE (Arm ARM C6.2, "CPYFP, CPYFM,
/// CPYFE"): the CPU (or the emulator, which then copies whole pages at a
/// time) chooses how to move the bytes. At EL2 with HCR_EL2.E2H = 0 they
/// are always enabled when implemented.
///
/// # Safety
///
/// The CPU has FEAT_MOPS ([`has_mops`]); `src` is readable and `dst`
/// writable for `len` bytes, and they do not overlap.
pub unsafe fn copy_mops(dst: *mut u8, src: *const u8, len: usize) {
    // SAFETY: the caller's contract; the instructions access only
    // [src, src + len) and [dst, dst + len), updating the three registers.
    unsafe {
        core::arch::asm!(
            ".arch_extension mops",
            "cpyfp [{d}]!, [{s}]!, {n}!",
            "cpyfm [{d}]!, [{s}]!, {n}!",
            "cpyfe [{d}]!, [{s}]!, {n}!",
            d = inout(reg) dst => _,
            s = inout(reg) src => _,
            n = inout(reg) len => _,
            options(nostack)
        )
    };
}

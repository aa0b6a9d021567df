//! The guest's AArch32 EL0 state, as EL2 sees it in SPSR_EL2 when an
//! exception is taken from it (Arm ARM C5.2.18, "SPSR_EL2", AArch32 view).
//!
//! A guest whose EL1 is AArch64 (HCR_EL2.RW = 1) may still run AArch32
//! code at EL0 when the CPU implements it (ID_AA64PFR0_EL1.EL0 = 0b0010):
//! Linux's compat processes. Exceptions taken from such code to EL2 use
//! EL2's "lower EL, AArch64" vectors (the level below EL2, EL1, is AArch64:
//! Arm ARM D1.3.1), with SPSR_EL2 in its AArch32 layout; an emulated
//! instruction is skipped the AArch32 way: by 2 or 4 bytes (ESR_EL2.IL) and,
//! in T32 code, with the IT block state advanced. An exception injected
//! into the guest's EL1 from there is taken at VBAR_EL1 + 0x600 (EL0, the
//! level below EL1, is AArch32).

/// SPSR.M\[4\]: the exception was taken from AArch32 state.
pub const M4_AARCH32: u64 = 1 << 4;
/// SPSR.T: T32 (Thumb) state.
pub const T: u64 = 1 << 5;
/// SPSR.IT\[1:0\] (bits 26:25).
const IT_LOW_SHIFT: u32 = 25;
/// SPSR.IT\[7:2\] (bits 15:10).
const IT_HIGH_SHIFT: u32 = 10;
/// Every IT bit of SPSR.
pub const IT_MASK: u64 = (0b11 << IT_LOW_SHIFT) | (0b11_1111 << IT_HIGH_SHIFT);

/// Whether `spsr` (SPSR_EL2) says the exception came from AArch32 state.
pub fn from_aarch32(spsr: u64) -> bool {
    spsr & M4_AARCH32 != 0
}

/// The IT\[7:0\] field of an AArch32 `spsr`.
pub fn itstate(spsr: u64) -> u8 {
    let low = (spsr >> IT_LOW_SHIFT) & 0b11;
    let high = (spsr >> IT_HIGH_SHIFT) & 0b11_1111;
    ((high << 2) | low) as u8
}

/// `spsr` with IT\[7:0\] replaced by `it`.
pub fn with_itstate(spsr: u64, it: u8) -> u64 {
    let it = u64::from(it);
    (spsr & !IT_MASK) | ((it & 0b11) << IT_LOW_SHIFT) | ((it >> 2) << IT_HIGH_SHIFT)
}

/// ITAdvance (Arm ARM, AArch32 "ITSTATE" pseudocode): after an instruction
/// of an IT block, the mask IT\[4:0\] shifts left by one; after the last
/// (IT\[2:0\] = 0b000) the block ends and IT is all zeros. Outside a block
/// (IT = 0) nothing changes.
pub fn it_advance(it: u8) -> u8 {
    if it & 0b111 == 0 {
        0
    } else {
        (it & 0b1110_0000) | ((it << 1) & 0b1_1111)
    }
}

/// The guest's (PC, SPSR) after skipping the AArch32 instruction at `pc`
/// that trapped, `insn_32` bits long (ESR_EL2.IL): PC advanced by 4 or 2
/// within the 32-bit address space, and in T32 state the IT block advanced.
pub fn skip_instruction(pc: u64, spsr: u64, insn_32: bool) -> (u64, u64) {
    let len = if insn_32 { 4 } else { 2 };
    let pc = (pc as u32).wrapping_add(len);
    let spsr = if spsr & T != 0 {
        with_itstate(spsr, it_advance(itstate(spsr)))
    } else {
        spsr
    };
    (u64::from(pc), spsr)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// usr mode (M = 0b10000), T32, in an IT block.
    fn thumb_usr(it: u8) -> u64 {
        with_itstate(M4_AARCH32 | T, it)
    }

    #[test]
    fn itstate_round_trips_through_its_two_spsr_fields() {
        for it in 0..=u8::MAX {
            let spsr = with_itstate(0x6000_0030 | M4_AARCH32, it);
            assert_eq!(itstate(spsr), it);
            assert_eq!(spsr & !IT_MASK, 0x6000_0030 | M4_AARCH32);
        }
        // IT[1:0] at 26:25, IT[7:2] at 15:10.
        assert_eq!(with_itstate(0, 0b0000_0011), 0b11 << 25);
        assert_eq!(with_itstate(0, 0b1111_1100), 0b11_1111 << 10);
    }

    #[test]
    fn an_a32_instruction_is_skipped_by_four_and_leaves_spsr_alone() {
        let spsr = M4_AARCH32 | 0x8000_0000;
        assert_eq!(skip_instruction(0x1000, spsr, true), (0x1004, spsr));
    }

    #[test]
    fn a_16_bit_t32_instruction_is_skipped_by_two() {
        let spsr = thumb_usr(0);
        assert_eq!(skip_instruction(0x1000, spsr, false), (0x1002, spsr));
    }

    #[test]
    fn the_pc_wraps_within_the_32_bit_address_space() {
        assert_eq!(skip_instruction(0xffff_fffe, M4_AARCH32, true).0, 2);
    }

    #[test]
    fn the_last_instruction_of_an_it_block_ends_it() {
        // ITT EQ: firstcond 0b0000, mask 0b0100 → IT = 0b0000_0100; after
        // the first instruction IT = 0b0000_1000 (IT[2:0] = 0: the last),
        // after the second the block is over.
        assert_eq!(it_advance(0b0000_0100), 0b0000_1000);
        assert_eq!(it_advance(0b0000_1000), 0);
    }

    #[test]
    fn advancing_keeps_the_base_condition_and_shifts_the_mask() {
        // ITETE NE (firstcond 0b0001): IT = 0b0001_1101 → 0b0001_1010 → ...
        let it = 0b0001_1101;
        assert_eq!(it_advance(it), 0b0001_1010);
        assert_eq!(it_advance(0b0001_1010), 0b0001_0100);
        // IT[7:5] kept.
        assert_eq!(it_advance(0b1110_0011), 0b1110_0110);
    }

    #[test]
    fn a_t32_instruction_in_an_it_block_advances_the_block_in_spsr() {
        let (pc, spsr) = skip_instruction(0x2000, thumb_usr(0b0000_0100), false);
        assert_eq!(pc, 0x2002);
        assert_eq!(itstate(spsr), 0b0000_1000);
        let (pc, spsr) = skip_instruction(pc, spsr, true);
        assert_eq!(pc, 0x2006);
        assert_eq!(itstate(spsr), 0);
        assert_eq!(spsr, M4_AARCH32 | T);
    }

    #[test]
    fn outside_an_it_block_nothing_changes() {
        assert_eq!(it_advance(0), 0);
        // An A32 instruction leaves stray IT bits alone (they are RES0 there).
        let spsr = with_itstate(M4_AARCH32, 0b0000_0100);
        assert_eq!(skip_instruction(0, spsr, true).1, spsr);
    }

    #[test]
    fn aarch32_is_told_by_m4() {
        assert!(from_aarch32(0x10));
        assert!(!from_aarch32(0x3c5)); // EL1h, AArch64
        assert!(!from_aarch32(0));
    }
}

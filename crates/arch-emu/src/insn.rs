//! A64 load/store decode, for data aborts whose syndrome is not valid
//! (ESR_EL2.ISS.ISV = 0): load/store pair, pre/post-index writeback and
//! register-offset forms. The hypervisor fetches the instruction at the guest's
//! PC, decodes it here, and emulates each register transfer against the trapped
//! device, or injects an external abort for anything [`Decoded::Unsupported`].
//!
//! Encodings follow the Arm ARM (DDI 0487), C4.1.66 "Loads and Stores".

/// One register transfer of a decoded access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer {
    /// The register (31 = XZR/WZR).
    pub rt: u8,
    /// Byte offset from the access address.
    pub offset: u8,
}

/// How the address is formed from the base register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offset {
    /// A signed immediate added to Rn.
    Imm(i64),
    /// Register offset: Rm, extended and shifted.
    Reg {
        /// Rm (31 = XZR).
        rm: u8,
        /// Extend option (UXTW 0b010, LSL/UXTX 0b011, SXTW 0b110, SXTX 0b111).
        option: u8,
        /// Left shift amount.
        shift: u8,
    },
}

/// Writeback of the base register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writeback {
    /// None.
    None,
    /// Rn += imm before the access (the access uses the new value).
    Pre,
    /// The access uses Rn; then Rn += imm.
    Post,
}

/// A decoded load or store of general-purpose registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadStore {
    /// A load (else a store).
    pub load: bool,
    /// Bytes per register: 1, 2, 4 or 8.
    pub size: u8,
    /// The load sign-extends.
    pub sign_extend: bool,
    /// The loaded register is an X register (else W, zero-extended to 64 bits).
    pub dest_64: bool,
    /// The transfers, in order (a pair has two).
    pub transfers: [Option<Transfer>; 2],
    /// Rn (31 = SP).
    pub base: u8,
    /// Offset.
    pub offset: Offset,
    /// Base register writeback.
    pub writeback: Writeback,
}

/// Why an instruction is not emulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Not a load/store of general-purpose registers.
    NotLoadStore,
    /// SIMD&FP registers.
    SimdFp,
    /// PC-relative literal load (never an MMIO access).
    Literal,
    /// Exclusive, acquire/release or atomic (these have a valid syndrome anyway).
    ExclusiveOrAtomic,
    /// Prefetch.
    Prefetch,
    /// Unprivileged (LDTR/STTR) forms.
    Unprivileged,
    /// Writeback with the base also a transfer register (CONSTRAINED UNPREDICTABLE).
    WritebackOverlap,
    /// An unallocated encoding.
    Unallocated,
}

/// The decode result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// A load/store the hypervisor can emulate.
    LoadStore(LoadStore),
    /// Anything else: inject an external abort.
    Unsupported(Reason),
}

fn bits(insn: u32, hi: u32, lo: u32) -> u32 {
    (insn >> lo) & ((1 << (hi - lo + 1)) - 1)
}

fn sext(v: u32, width: u32) -> i64 {
    let shift = 64 - width;
    (i64::from(v) << shift) >> shift
}

/// Decodes one A64 instruction.
pub fn decode(insn: u32) -> Decoded {
    // Loads and stores: op0 bit 27 = 1, bit 25 = 0.
    if bits(insn, 27, 27) != 1 || bits(insn, 25, 25) != 0 {
        return Decoded::Unsupported(Reason::NotLoadStore);
    }
    let v = bits(insn, 26, 26) == 1;
    match bits(insn, 29, 28) {
        0b11 => {
            if v {
                return Decoded::Unsupported(Reason::SimdFp);
            }
            single(insn)
        }
        0b10 => {
            if v {
                return Decoded::Unsupported(Reason::SimdFp);
            }
            pair(insn)
        }
        0b01 if bits(insn, 24, 24) == 0 => {
            if v {
                Decoded::Unsupported(Reason::SimdFp)
            } else {
                Decoded::Unsupported(Reason::Literal)
            }
        }
        _ => Decoded::Unsupported(Reason::ExclusiveOrAtomic),
    }
}

/// Load/store register: unsigned immediate, unscaled, pre/post-index, register offset.
fn single(insn: u32) -> Decoded {
    let size_log = bits(insn, 31, 30);
    let opc = bits(insn, 23, 22);
    let rn = bits(insn, 9, 5) as u8;
    let rt = bits(insn, 4, 0) as u8;
    let (offset, writeback) = if bits(insn, 24, 24) == 1 {
        (
            Offset::Imm(i64::from(bits(insn, 21, 10)) << size_log),
            Writeback::None,
        )
    } else if bits(insn, 21, 21) == 0 {
        let imm = sext(bits(insn, 20, 12), 9);
        match bits(insn, 11, 10) {
            0b00 => (Offset::Imm(imm), Writeback::None),
            0b01 => (Offset::Imm(imm), Writeback::Post),
            0b11 => (Offset::Imm(imm), Writeback::Pre),
            _ => return Decoded::Unsupported(Reason::Unprivileged),
        }
    } else if bits(insn, 11, 10) == 0b10 {
        let option = bits(insn, 15, 13) as u8;
        if option & 0b010 == 0 {
            return Decoded::Unsupported(Reason::Unallocated);
        }
        let shift = if bits(insn, 12, 12) == 1 {
            size_log as u8
        } else {
            0
        };
        (
            Offset::Reg {
                rm: bits(insn, 20, 16) as u8,
                option,
                shift,
            },
            Writeback::None,
        )
    } else {
        return Decoded::Unsupported(Reason::ExclusiveOrAtomic);
    };
    let size = 1u8 << size_log;
    let (load, sign_extend, dest_64) = match (size_log, opc) {
        (_, 0b00) => (false, false, size_log == 3),
        (_, 0b01) => (true, false, size_log == 3),
        (3, 0b10) => return Decoded::Unsupported(Reason::Prefetch),
        (3, _) | (2, 0b11) => return Decoded::Unsupported(Reason::Unallocated),
        (_, 0b10) => (true, true, true),
        (_, _) => (true, true, false),
    };
    if writeback != Writeback::None && rn == rt && rn != 31 {
        return Decoded::Unsupported(Reason::WritebackOverlap);
    }
    Decoded::LoadStore(LoadStore {
        load,
        size,
        sign_extend,
        dest_64,
        transfers: [Some(Transfer { rt, offset: 0 }), None],
        base: rn,
        offset,
        writeback,
    })
}

/// Load/store pair: signed offset, pre/post-index, no-allocate.
fn pair(insn: u32) -> Decoded {
    let opc = bits(insn, 31, 30);
    let load = bits(insn, 22, 22) == 1;
    let writeback = match bits(insn, 24, 23) {
        0b00 | 0b10 => Writeback::None,
        0b01 => Writeback::Post,
        _ => Writeback::Pre,
    };
    let (size, sign_extend, dest_64) = match (opc, load) {
        (0b00, _) => (4u8, false, false),
        (0b01, true) if bits(insn, 24, 23) != 0 => (4, true, true),
        (0b10, _) => (8, false, true),
        _ => return Decoded::Unsupported(Reason::Unallocated),
    };
    let imm = sext(bits(insn, 21, 15), 7) * i64::from(size);
    let rt = bits(insn, 4, 0) as u8;
    let rt2 = bits(insn, 14, 10) as u8;
    let rn = bits(insn, 9, 5) as u8;
    if load && rt == rt2 {
        return Decoded::Unsupported(Reason::Unallocated);
    }
    if writeback != Writeback::None && rn != 31 && (rn == rt || rn == rt2) {
        return Decoded::Unsupported(Reason::WritebackOverlap);
    }
    Decoded::LoadStore(LoadStore {
        load,
        size,
        sign_extend,
        dest_64,
        transfers: [
            Some(Transfer { rt, offset: 0 }),
            Some(Transfer {
                rt: rt2,
                offset: size,
            }),
        ],
        base: rn,
        offset: Offset::Imm(imm),
        writeback,
    })
}

impl LoadStore {
    /// The address the first transfer uses, given Rn's and Rm's values.
    pub fn effective_address(&self, rn_value: u64, rm_value: u64) -> u64 {
        match (self.offset, self.writeback) {
            (_, Writeback::Post) => rn_value,
            (Offset::Imm(i), _) => rn_value.wrapping_add(i as u64),
            (Offset::Reg { option, shift, .. }, _) => {
                let ext = match option {
                    0b010 => rm_value & 0xffff_ffff,
                    0b110 => i64::from(rm_value as u32 as i32) as u64,
                    _ => rm_value,
                };
                rn_value.wrapping_add(ext << shift)
            }
        }
    }

    /// Rn's value after the instruction, if it writes it back.
    pub fn written_back_base(&self, rn_value: u64) -> Option<u64> {
        match (self.writeback, self.offset) {
            (Writeback::None, _) => None,
            (_, Offset::Imm(i)) => Some(rn_value.wrapping_add(i as u64)),
            (_, Offset::Reg { .. }) => None,
        }
    }
}

/// Sign- or zero-extends a loaded `value` of `size` bytes into its register.
pub fn apply_load(value: u64, size: u8, sign_extend: bool, dest_64: bool) -> u64 {
    let bits_in = u32::from(size.clamp(1, 8)) * 8;
    let v = if bits_in >= 64 {
        value
    } else {
        value & ((1 << bits_in) - 1)
    };
    let v = if sign_extend && bits_in < 64 {
        ((v << (64 - bits_in)) as i64 >> (64 - bits_in)) as u64
    } else {
        v
    };
    if dest_64 {
        v
    } else {
        v & 0xffff_ffff
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ls(insn: u32) -> LoadStore {
        match decode(insn) {
            Decoded::LoadStore(l) => l,
            d => panic!("{insn:#010x}: {d:?}"),
        }
    }

    fn t(rt: u8, offset: u8) -> Option<Transfer> {
        Some(Transfer { rt, offset })
    }

    // Encodings from llvm-mc -triple=aarch64 -show-encoding.

    #[test]
    fn ldr_w_unsigned_offset() {
        // ldr w0, [x1]
        let l = ls(0xb940_0020);
        assert_eq!((l.load, l.size, l.dest_64, l.base), (true, 4, false, 1));
        assert_eq!(l.transfers, [t(0, 0), None]);
        assert_eq!((l.offset, l.writeback), (Offset::Imm(0), Writeback::None));
    }

    #[test]
    fn ldr_x_scaled_immediate() {
        // ldr x3, [x4, #8]
        let l = ls(0xf940_0483);
        assert_eq!(
            (l.size, l.dest_64, l.base, l.offset),
            (8, true, 4, Offset::Imm(8))
        );
    }

    #[test]
    fn str_x_is_a_store() {
        // str x1, [x0, #8]
        let l = ls(0xf900_0401);
        assert!(!l.load);
        assert_eq!((l.transfers[0], l.offset), (t(1, 0), Offset::Imm(8)));
    }

    #[test]
    fn ldrb_post_index_writes_back() {
        // ldrb w0, [x1], #1
        let l = ls(0x3840_1420);
        assert_eq!(
            (l.size, l.writeback, l.offset),
            (1, Writeback::Post, Offset::Imm(1))
        );
        assert_eq!(l.effective_address(0x1000, 0), 0x1000);
        assert_eq!(l.written_back_base(0x1000), Some(0x1001));
    }

    #[test]
    fn ldrb_pre_index_negative() {
        // ldrb w5, [x6, #-1]!
        let l = ls(0x385f_fcc5);
        assert_eq!(
            (l.writeback, l.offset, l.base),
            (Writeback::Pre, Offset::Imm(-1), 6)
        );
        assert_eq!(l.effective_address(0x1000, 0), 0xfff);
    }

    #[test]
    fn halfword_forms() {
        // ldrh w0, [x1, #2]; strh w2, [x3]
        assert_eq!(ls(0x7940_0420).offset, Offset::Imm(2));
        let s = ls(0x7900_0062);
        assert_eq!((s.load, s.size), (false, 2));
    }

    #[test]
    fn signed_loads_extend_to_the_right_width() {
        // ldrsb x0, [x1]; ldrsb w0, [x1]; ldrsh x7, [x8, #6]; ldrsw x0, [x1]
        let a = ls(0x3980_0020);
        assert_eq!((a.size, a.sign_extend, a.dest_64), (1, true, true));
        let b = ls(0x39c0_0020);
        assert_eq!((b.size, b.sign_extend, b.dest_64), (1, true, false));
        let c = ls(0x7980_0d07);
        assert_eq!((c.size, c.dest_64, c.offset), (2, true, Offset::Imm(6)));
        let d = ls(0xb980_0020);
        assert_eq!((d.size, d.sign_extend, d.dest_64), (4, true, true));
    }

    #[test]
    fn unscaled_immediates() {
        // ldur w0, [x1, #-4]; stur x9, [x10, #3]
        assert_eq!(ls(0xb85f_c020).offset, Offset::Imm(-4));
        let s = ls(0xf800_3149);
        assert_eq!(
            (s.load, s.size, s.offset, s.base),
            (false, 8, Offset::Imm(3), 10)
        );
    }

    #[test]
    fn register_offset_forms() {
        // ldr x0, [x1, x2]; ldr w0, [x1, x2, lsl #2]; ldr x0, [x1, w2, sxtw]; str w0, [x1, w2, uxtw #2]
        assert_eq!(
            ls(0xf862_6820).offset,
            Offset::Reg {
                rm: 2,
                option: 0b011,
                shift: 0
            }
        );
        let b = ls(0xb862_7820);
        assert_eq!(
            b.offset,
            Offset::Reg {
                rm: 2,
                option: 0b011,
                shift: 2
            }
        );
        assert_eq!(b.effective_address(0x1000, 3), 0x100c);
        let c = ls(0xf862_c820);
        assert_eq!(c.effective_address(0x1000, 0xffff_ffff), 0xfff);
        let d = ls(0xb822_5820);
        assert!(!d.load);
        assert_eq!(d.effective_address(0x1000, 0x1_0000_0001), 0x1004);
    }

    #[test]
    fn ldp_x_has_two_transfers_eight_bytes_apart() {
        // ldp x0, x1, [x2]
        let l = ls(0xa940_0440);
        assert_eq!(l.transfers, [t(0, 0), t(1, 8)]);
        assert_eq!((l.size, l.base), (8, 2));
    }

    #[test]
    fn ldp_w_scales_its_offset() {
        // ldp w2, w3, [x4, #8]
        let l = ls(0x2941_0c82);
        assert_eq!(
            (l.size, l.offset, l.transfers),
            (4, Offset::Imm(8), [t(2, 0), t(3, 4)])
        );
    }

    #[test]
    fn stp_pre_index_on_sp() {
        // stp x29, x30, [sp, #-16]!
        let l = ls(0xa9bf_7bfd);
        assert_eq!(
            (l.load, l.base, l.writeback, l.offset),
            (false, 31, Writeback::Pre, Offset::Imm(-16))
        );
    }

    #[test]
    fn ldp_post_index() {
        // ldp x5, x6, [x7], #32
        let l = ls(0xa8c2_18e5);
        assert_eq!(
            (l.writeback, l.written_back_base(0x100)),
            (Writeback::Post, Some(0x120))
        );
    }

    #[test]
    fn ldpsw_sign_extends_words() {
        // ldpsw x0, x1, [x2, #-8]
        let l = ls(0x697f_0440);
        assert_eq!(
            (l.size, l.sign_extend, l.dest_64, l.offset),
            (4, true, true, Offset::Imm(-8))
        );
    }

    #[test]
    fn stores_of_the_zero_register() {
        // stp wzr, wzr, [x0]; str xzr, [x1]
        assert_eq!(ls(0x2900_7c1f).transfers, [t(31, 0), t(31, 4)]);
        assert_eq!(ls(0xf900_003f).transfers[0], t(31, 0));
    }

    #[test]
    fn ldnp_is_a_plain_pair() {
        // ldnp x0, x1, [x2]
        assert_eq!(ls(0xa840_0440).writeback, Writeback::None);
    }

    #[test]
    fn writeback_onto_the_loaded_register_is_refused() {
        // ldr x0, [x0], #8
        assert_eq!(
            decode(0xf840_8400),
            Decoded::Unsupported(Reason::WritebackOverlap)
        );
    }

    #[test]
    fn what_is_not_emulated_says_why() {
        assert_eq!(decode(0x5800_0000), Decoded::Unsupported(Reason::Literal)); // ldr x0, <label>
        assert_eq!(decode(0x3dc0_0020), Decoded::Unsupported(Reason::SimdFp)); // ldr q0, [x1]
        assert_eq!(
            decode(0xc85f_7c20),
            Decoded::Unsupported(Reason::ExclusiveOrAtomic)
        ); // ldxr
        assert_eq!(
            decode(0xc8df_fc20),
            Decoded::Unsupported(Reason::ExclusiveOrAtomic)
        ); // ldar
        assert_eq!(decode(0xf980_0020), Decoded::Unsupported(Reason::Prefetch)); // prfm
        assert_eq!(
            decode(0xf840_0820),
            Decoded::Unsupported(Reason::Unprivileged)
        ); // ldtr
        assert_eq!(
            decode(0x8b02_0020),
            Decoded::Unsupported(Reason::NotLoadStore)
        ); // add
    }

    #[test]
    fn apply_load_extends_as_the_instruction_says() {
        assert_eq!(apply_load(0x80, 1, true, true), 0xffff_ffff_ffff_ff80);
        assert_eq!(apply_load(0x80, 1, true, false), 0xffff_ff80);
        assert_eq!(apply_load(0x1_8000, 2, false, true), 0x8000);
        assert_eq!(apply_load(u64::MAX, 8, false, true), u64::MAX);
    }

    proptest! {
        #[test]
        fn any_word_decodes_without_panic_to_a_sane_access(insn in any::<u32>()) {
            if let Decoded::LoadStore(l) = decode(insn) {
                prop_assert!(matches!(l.size, 1 | 2 | 4 | 8));
                prop_assert!(l.transfers[0].is_some());
                prop_assert!(l.base < 32);
                for tr in l.transfers.iter().flatten() {
                    prop_assert!(tr.rt < 32);
                    prop_assert!(tr.offset < 16);
                }
            }
        }
    }
}

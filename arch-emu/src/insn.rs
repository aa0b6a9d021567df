//! A64 load/store decode, for data aborts whose syndrome is not valid
//! (ESR_EL2.ISS.ISV = 0): load/store pair, pre/post-index writeback and
//! register-offset forms. The hypervisor fetches the instruction at the guest's
//! PC, decodes it here, and emulates each register transfer against the trapped
//! device, or injects an external abort for anything [`Decoded::Unsupported`].
//!
//! Encodings follow the Arm ARM (DDI 0487), C4.1.66 "Loads and Stores": the
//! class is chosen by op0 (bits \[31:28\]), op1 (bit 26, V: SIMD&FP), op2
//! (bits \[24:23\]), op3 (bits \[21:16\]) and op4 (bits \[11:10\]).
//! Only loads and stores of general-purpose registers are emulated; every other
//! encoding in the class is [`Decoded::Unsupported`] with the [`Reason`].

/// One register transfer of a decoded access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer {
    /// The register (31 = XZR/WZR).
    pub rt: u8,
    /// Byte offset from the access address.
    pub offset: u8,
}

/// How a register offset (Rm) is extended before it is shifted: the `option`
/// field, bits \[15:13\], of "Load/store register (register offset)".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extend {
    /// `option` = 0b010: the low 32 bits of Rm (Wm), zero-extended.
    Uxtw,
    /// `option` = 0b011 (LSL, or UXTX): all 64 bits of Rm (Xm).
    Lsl,
    /// `option` = 0b110: the low 32 bits of Rm (Wm), sign-extended.
    Sxtw,
    /// `option` = 0b111: all 64 bits of Rm (Xm).
    Sxtx,
}

impl Extend {
    /// The extend an `option` field selects; `None` for the unallocated
    /// values (`option<1>` = 0).
    pub fn from_option(option: u32) -> Option<Self> {
        match option {
            0b010 => Some(Self::Uxtw),
            0b011 => Some(Self::Lsl),
            0b110 => Some(Self::Sxtw),
            0b111 => Some(Self::Sxtx),
            _ => None,
        }
    }

    /// Rm's value extended to 64 bits (before the shift).
    pub fn apply(self, rm_value: u64) -> u64 {
        match self {
            Self::Uxtw => rm_value & 0xffff_ffff,
            Self::Sxtw => i64::from(rm_value as u32 as i32) as u64,
            Self::Lsl | Self::Sxtx => rm_value,
        }
    }

    /// Rm is read as an X register (else as W).
    pub fn rm_is_64(self) -> bool {
        matches!(self, Self::Lsl | Self::Sxtx)
    }
}

/// How the address is formed from the base register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offset {
    /// A signed immediate (already scaled) added to Rn.
    Imm(i64),
    /// Register offset: Rm, extended and shifted, added to Rn.
    Reg {
        /// Rm (31 = XZR/WZR).
        rm: u8,
        /// How Rm is extended.
        extend: Extend,
        /// Left shift amount applied after the extend (0 or log2 of the size).
        shift: u8,
    },
}

/// Writeback of the base register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writeback {
    /// None.
    None,
    /// Pre-index: Rn += imm before the access (the access uses the new value).
    Pre,
    /// Post-index: the access uses Rn; then Rn += imm.
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
    /// The register is an X register (else W; a loaded W is zero-extended to
    /// 64 bits). For stores, true exactly when `size` is 8.
    pub dest_64: bool,
    /// The transfers, in order (a pair has two).
    pub transfers: [Option<Transfer>; 2],
    /// Rn (31 = SP).
    pub base: u8,
    /// Offset.
    pub offset: Offset,
    /// Base register writeback (only ever with an immediate offset).
    pub writeback: Writeback,
}

/// Why an instruction is not emulated: the encoding class it falls in.
///
/// Within a class, encodings whose should-be-one/should-be-zero fields are
/// wrong, or whose SIMD&FP size/opc combination is unallocated, keep the
/// class reason; either way the hypervisor injects an abort.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Not in the "Loads and Stores" encoding group.
    NotLoadStore,
    /// SIMD&FP registers (V = 1): LDR/STR/LDP/STP of B/H/S/D/Q, LDAPUR/STLUR
    /// of SIMD&FP, and the structure loads/stores (LD1..LD4, ST1..ST4), whether
    /// or not the size/opc combination is allocated.
    SimdFp,
    /// PC-relative literal load (LDR, LDRSW (literal)): never an MMIO access.
    Literal,
    /// Load/store exclusive: LDXR/STXR, LDAXR/STLXR and the pair forms.
    Exclusive,
    /// Load-acquire / store-release: LDAR/STLR, LDLAR/STLLR, LDAPR and the
    /// LDAPUR/STLUR (unscaled immediate) forms.
    AcquireRelease,
    /// Atomic memory operations: CAS/CASP, SWP, LDADD and the other LD<op>/
    /// ST<op>, the 128-bit atomics, and the 64-byte LD64B/ST64B family.
    Atomic,
    /// PRFM/PRFUM (immediate, register, literal).
    Prefetch,
    /// Unprivileged LDTR/STTR forms.
    Unprivileged,
    /// LDRAA/LDRAB (pointer authentication).
    PointerAuth,
    /// Memory tagging (FEAT_MTE): STG, STZG, ST2G, STZ2G, LDG, STGM, STZGM,
    /// LDGM, STGP.
    MemoryTags,
    /// Memory copy and memory set (FEAT_MOPS): CPY*, SET*.
    MemoryCopySet,
    /// Guarded control stack store (GCSSTR, GCSSTTR).
    GuardedControlStack,
    /// Writeback with the base also a transfer register (CONSTRAINED
    /// UNPREDICTABLE: WBOVERLAPLD / WBOVERLAPST).
    WritebackOverlap,
    /// LDP/LDPSW loading the same register twice (CONSTRAINED UNPREDICTABLE:
    /// LDPOVERLAP).
    LoadPairOverlap,
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

/// Bits \[hi:lo\] of `insn` (hi < 32, lo <= hi).
fn bits(insn: u32, hi: u32, lo: u32) -> u32 {
    let width = hi.saturating_sub(lo).saturating_add(1);
    let mask = 1u32
        .checked_shl(width)
        .map_or(u32::MAX, |m| m.wrapping_sub(1));
    insn.checked_shr(lo).unwrap_or(0) & mask
}

fn bit(insn: u32, n: u32) -> bool {
    bits(insn, n, n) == 1
}

/// Sign-extends the low `width` bits of `v` (1 <= width <= 32).
fn sext(v: u32, width: u32) -> i64 {
    let shift = 64u32.saturating_sub(width);
    i64::from(v).wrapping_shl(shift).wrapping_shr(shift)
}

/// Register number in bits \[lo+4:lo\].
fn reg(insn: u32, lo: u32) -> u8 {
    bits(insn, lo.saturating_add(4), lo) as u8
}

/// Decodes one A64 instruction.
pub fn decode(insn: u32) -> Decoded {
    // Loads and Stores: op0 (bits [28:25]) = x1x0.
    if !bit(insn, 27) || bit(insn, 25) {
        return Decoded::Unsupported(Reason::NotLoadStore);
    }
    let simd = bit(insn, 26);
    let decoded = match bits(insn, 29, 28) {
        0b00 => Err(exclusive_ordered_or_structure(insn, simd)),
        0b01 => Err(literal_or_extension(insn, simd)),
        0b10 if simd => Err(Reason::SimdFp),
        0b10 => pair(insn),
        _ if simd => Err(Reason::SimdFp),
        _ => single(insn),
    };
    match decoded {
        Ok(ls) => Decoded::LoadStore(ls),
        Err(reason) => Decoded::Unsupported(reason),
    }
}

/// op0 = xx00: exclusives, ordered, compare-and-swap, SIMD structures.
fn exclusive_ordered_or_structure(insn: u32, simd: bool) -> Reason {
    if simd {
        // Advanced SIMD load/store multiple/single structures need op0<3> = 0.
        return if bit(insn, 31) {
            Reason::Unallocated
        } else {
            Reason::SimdFp
        };
    }
    if bit(insn, 24) {
        return Reason::Unallocated;
    }
    // o2 (bit 23) and o1 (bit 21).
    match (bit(insn, 23), bit(insn, 21)) {
        // LDXR/STXR/LDAXR/STLXR.
        (false, false) => Reason::Exclusive,
        // sz = 1x: LDXP/STXP/LDAXP/STLXP; sz = 0x: CASP.
        (false, true) if bit(insn, 31) => Reason::Exclusive,
        (false, true) => Reason::Atomic,
        // LDAR/STLR/LDLAR/STLLR.
        (true, false) => Reason::AcquireRelease,
        // CAS, CASA, CASL, CASAL (all sizes).
        (true, true) => Reason::Atomic,
    }
}

/// op0 = xx01: literal loads (op2 = 0x), and the extension space (op2 = 1x):
/// LDAPUR/STLUR, memory copy/set, memory tags, 128-bit atomics, GCS.
fn literal_or_extension(insn: u32, simd: bool) -> Reason {
    let opc = bits(insn, 31, 30);
    if !bit(insn, 24) {
        return match (simd, opc) {
            (true, 0b11) => Reason::Unallocated,
            (true, _) => Reason::SimdFp,
            (false, 0b11) => Reason::Prefetch,
            (false, _) => Reason::Literal,
        };
    }
    let op4 = bits(insn, 11, 10);
    if !bit(insn, 21) && op4 == 0b01 {
        // CPYFP..SETGE: bit 26 (o0) is part of the opcode, not V; sz = 00 only.
        return if opc == 0b00 {
            Reason::MemoryCopySet
        } else {
            Reason::Unallocated
        };
    }
    if simd {
        return Reason::SimdFp;
    }
    let top = bits(insn, 31, 24);
    if bit(insn, 21) {
        // STZGM/STGM/LDGM (op4 = 00, opc != 01) have imm9 = 0.
        let tag_multiple = op4 == 0b00 && bits(insn, 23, 22) != 0b01;
        return match top {
            0xd9 if tag_multiple && bits(insn, 20, 12) != 0 => Reason::Unallocated,
            0xd9 => Reason::MemoryTags,
            0x19 => Reason::Atomic,
            _ => Reason::Unallocated,
        };
    }
    match op4 {
        // LDAPUR/STLUR (unscaled immediate): as LDUR/STUR, but no
        // LDAPURSW into W (size 10, opc 11) nor signed 64-bit (size 11, opc 1x).
        0b00 => match (opc, bits(insn, 23, 22)) {
            (0b10, 0b11) | (0b11, 0b10 | 0b11) => Reason::Unallocated,
            _ => Reason::AcquireRelease,
        },
        // FEAT_LRCPC3 forms (LDIAPP/STILP, LDAPR/STLR with writeback).
        0b10 => Reason::AcquireRelease,
        // GCSSTR (bits [15:12] = 0000) and GCSSTTR (0001), Rs field = 11111.
        _ if top == 0xd9 && bits(insn, 23, 16) == 0x1f && bits(insn, 15, 13) == 0 => {
            Reason::GuardedControlStack
        }
        _ => Reason::Unallocated,
    }
}

/// op0 = xx10, V = 0: LDP/STP/LDNP/STNP/LDPSW (signed offset, pre/post-index).
fn pair(insn: u32) -> Result<LoadStore, Reason> {
    let opc = bits(insn, 31, 30);
    let load = bit(insn, 22);
    let mode = bits(insn, 24, 23);
    let writeback = match mode {
        0b01 => Writeback::Post,
        0b11 => Writeback::Pre,
        // 0b00: no-allocate (LDNP/STNP); 0b10: signed offset.
        _ => Writeback::None,
    };
    let (size, sign_extend, dest_64) = match (opc, load, mode) {
        (0b00, _, _) => (4u8, false, false),
        (0b10, _, _) => (8, false, true),
        (0b01, _, 0b00) => return Err(Reason::Unallocated),
        (0b01, true, _) => (4, true, true),
        (0b01, false, _) => return Err(Reason::MemoryTags),
        _ => return Err(Reason::Unallocated),
    };
    let imm = sext(bits(insn, 21, 15), 7).wrapping_mul(i64::from(size));
    let rt = reg(insn, 0);
    let rt2 = reg(insn, 10);
    let rn = reg(insn, 5);
    if writeback != Writeback::None && rn != 31 && (rn == rt || rn == rt2) {
        return Err(Reason::WritebackOverlap);
    }
    if load && rt == rt2 {
        return Err(Reason::LoadPairOverlap);
    }
    Ok(LoadStore {
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

/// The addressing form of a single-register load/store (op0 = xx11, V = 0).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Form {
    UnsignedImm,
    Unscaled,
    PostIndex,
    PreIndex,
    Unprivileged,
    RegisterOffset,
}

/// op0 = xx11, V = 0: LDR/STR and the byte, halfword and signed forms.
fn single(insn: u32) -> Result<LoadStore, Reason> {
    let size_log = bits(insn, 31, 30);
    let opc = bits(insn, 23, 22);
    let op4 = bits(insn, 11, 10);
    let form = if bit(insn, 24) {
        Form::UnsignedImm
    } else if !bit(insn, 21) {
        match op4 {
            0b00 => Form::Unscaled,
            0b01 => Form::PostIndex,
            0b10 => Form::Unprivileged,
            _ => Form::PreIndex,
        }
    } else {
        match op4 {
            0b10 if Extend::from_option(bits(insn, 15, 13)).is_none() => {
                return Err(Reason::Unallocated)
            }
            0b10 => Form::RegisterOffset,
            0b00 => return Err(atomic_class(insn)),
            // LDRAA/LDRAB exist only with size = 0b11.
            _ if size_log == 0b11 => return Err(Reason::PointerAuth),
            _ => return Err(Reason::Unallocated),
        }
    };
    let prefetch_form = matches!(
        form,
        Form::UnsignedImm | Form::Unscaled | Form::RegisterOffset
    );
    let (load, sign_extend, dest_64) = match (size_log, opc) {
        (_, 0b00) => (false, false, size_log == 0b11),
        (_, 0b01) => (true, false, size_log == 0b11),
        (0b11, 0b10) if prefetch_form => return Err(Reason::Prefetch),
        (0b11, _) | (0b10, 0b11) => return Err(Reason::Unallocated),
        // LDRSB/LDRSH/LDRSW into X.
        (_, 0b10) => (true, true, true),
        // LDRSB/LDRSH into W.
        _ => (true, true, false),
    };
    let offset = match form {
        Form::UnsignedImm => Offset::Imm(i64::from(bits(insn, 21, 10)) << size_log),
        Form::RegisterOffset => {
            let extend = Extend::from_option(bits(insn, 15, 13)).ok_or(Reason::Unallocated)?;
            let shift = if bit(insn, 12) { size_log as u8 } else { 0 };
            Offset::Reg {
                rm: reg(insn, 16),
                extend,
                shift,
            }
        }
        Form::Unprivileged => return Err(Reason::Unprivileged),
        Form::Unscaled | Form::PostIndex | Form::PreIndex => {
            Offset::Imm(sext(bits(insn, 20, 12), 9))
        }
    };
    let writeback = match form {
        Form::PostIndex => Writeback::Post,
        Form::PreIndex => Writeback::Pre,
        _ => Writeback::None,
    };
    let rn = reg(insn, 5);
    let rt = reg(insn, 0);
    if writeback != Writeback::None && rn == rt && rn != 31 {
        return Err(Reason::WritebackOverlap);
    }
    Ok(LoadStore {
        load,
        size: 1 << size_log,
        sign_extend,
        dest_64,
        transfers: [Some(Transfer { rt, offset: 0 }), None],
        base: rn,
        offset,
        writeback,
    })
}

/// op0 = xx11, V = 0, op3 = 1xxxxx, op4 = 00: "Atomic memory operations".
fn atomic_class(insn: u32) -> Reason {
    let doubleword = bits(insn, 31, 30) == 0b11;
    let acquire_release = bits(insn, 23, 22);
    let rs_is_31 = bits(insn, 20, 16) == 0b11111;
    // o3 (bit 15) and opc (bits [14:12]).
    match (bit(insn, 15), bits(insn, 14, 12)) {
        // LDADD, LDCLR, LDEOR, LDSET, LDSMAX, LDSMIN, LDUMAX, LDUMIN; SWP.
        (false, _) | (true, 0b000) => Reason::Atomic,
        // LDAPR/LDAPRB/LDAPRH: A = 1, R = 0, Rs = 11111.
        (true, 0b100) if acquire_release == 0b10 && rs_is_31 => Reason::AcquireRelease,
        // ST64B, LD64B (Rs = 11111); ST64BV0, ST64BV: 64-bit size, no A/R.
        (true, 0b001 | 0b101) if doubleword && acquire_release == 0 && rs_is_31 => Reason::Atomic,
        (true, 0b010 | 0b011) if doubleword && acquire_release == 0 => Reason::Atomic,
        _ => Reason::Unallocated,
    }
}

impl LoadStore {
    /// The address the first transfer uses, given Rn's value and Rm's value
    /// (Rm is ignored for an immediate offset). The n-th transfer uses this
    /// plus its [`Transfer::offset`].
    pub fn effective_address(&self, rn_value: u64, rm_value: u64) -> u64 {
        match (self.writeback, self.offset) {
            (Writeback::Post, _) => rn_value,
            (_, Offset::Imm(imm)) => rn_value.wrapping_add_signed(imm),
            (_, Offset::Reg { extend, shift, .. }) => {
                let rm = extend.apply(rm_value);
                rn_value.wrapping_add(rm.checked_shl(u32::from(shift)).unwrap_or(0))
            }
        }
    }

    /// The signed amount added to Rn by writeback, if the instruction writes
    /// it back (before the access for [`Writeback::Pre`], after for
    /// [`Writeback::Post`]).
    pub fn writeback_amount(&self) -> Option<i64> {
        match (self.writeback, self.offset) {
            (Writeback::Pre | Writeback::Post, Offset::Imm(imm)) => Some(imm),
            _ => None,
        }
    }

    /// Rn's value after the instruction, if it writes it back.
    pub fn written_back_base(&self, rn_value: u64) -> Option<u64> {
        self.writeback_amount()
            .map(|imm| rn_value.wrapping_add_signed(imm))
    }
}

/// Sign- or zero-extends a loaded `value` of `size` bytes into its register:
/// a W destination (`dest_64` false) has bits \[63:32\] zero.
pub fn apply_load(value: u64, size: u8, sign_extend: bool, dest_64: bool) -> u64 {
    let width = u32::from(size.clamp(1, 8)) * 8;
    let shift = 64 - width;
    let v = if sign_extend {
        ((value << shift) as i64 >> shift) as u64
    } else {
        (value << shift) >> shift
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

    fn gpr(n: u8, x: bool) -> String {
        match (n, x) {
            (31, true) => "xzr".into(),
            (31, false) => "wzr".into(),
            (n, true) => format!("x{n}"),
            (n, false) => format!("w{n}"),
        }
    }

    /// Renders a decode in LLVM's disassembly syntax, with the unscaled and
    /// no-allocate mnemonics (LDUR, LDNP, ...) folded into LDR/LDP, and the
    /// redundant `#0` shift of a byte register offset left out.
    fn render(l: &LoadStore) -> String {
        let mnemonic = match (l.transfers[1].is_some(), l.load, l.sign_extend, l.size) {
            (true, _, true, _) => "ldpsw",
            (true, true, _, _) => "ldp",
            (true, false, _, _) => "stp",
            (false, true, true, 1) => "ldrsb",
            (false, true, true, 2) => "ldrsh",
            (false, true, true, _) => "ldrsw",
            (false, true, false, 1) => "ldrb",
            (false, true, false, 2) => "ldrh",
            (false, true, false, _) => "ldr",
            (false, false, _, 1) => "strb",
            (false, false, _, 2) => "strh",
            (false, false, _, _) => "str",
        };
        let regs: Vec<String> = l
            .transfers
            .iter()
            .flatten()
            .map(|tr| gpr(tr.rt, l.dest_64))
            .collect();
        let base = if l.base == 31 {
            "sp".to_string()
        } else {
            gpr(l.base, true)
        };
        let address = match (l.offset, l.writeback) {
            (Offset::Imm(0), Writeback::None) => format!("[{base}]"),
            (Offset::Imm(i), Writeback::None) => format!("[{base}, #{i}]"),
            (Offset::Imm(i), Writeback::Pre) => format!("[{base}, #{i}]!"),
            (Offset::Imm(i), Writeback::Post) => format!("[{base}], #{i}"),
            (Offset::Reg { rm, extend, shift }, _) => {
                let rm = gpr(rm, extend.rm_is_64());
                let name = match extend {
                    Extend::Uxtw => "uxtw",
                    Extend::Lsl => "lsl",
                    Extend::Sxtw => "sxtw",
                    Extend::Sxtx => "sxtx",
                };
                match (extend, shift) {
                    (Extend::Lsl, 0) => format!("[{base}, {rm}]"),
                    (_, 0) => format!("[{base}, {rm}, {name}]"),
                    (_, s) => format!("[{base}, {rm}, {name} #{s}]"),
                }
            }
        };
        format!("{mnemonic} {}, {address}", regs.join(", "))
    }

    /// LLVM's text with LDUR*/STUR* and LDNP/STNP folded and `#0` shifts dropped.
    fn normalize(llvm: &str) -> String {
        let llvm = llvm.split("//").next().unwrap_or("").trim();
        let (mnemonic, operands) = llvm.split_once(char::is_whitespace).unwrap_or((llvm, ""));
        let mnemonic = match mnemonic {
            "ldnp" => "ldp".to_string(),
            "stnp" => "stp".to_string(),
            m if m.starts_with("ldu") || m.starts_with("stu") => format!("{}{}", &m[..2], &m[3..]),
            m => m.to_string(),
        };
        let operands = operands
            .trim()
            .replace(", lsl #0]", "]")
            .replace("tw #0]", "tw]")
            .replace("tx #0]", "tx]");
        format!("{mnemonic} {operands}")
    }

    /// Encodings and text from `llvm-mc -triple=aarch64 -show-encoding`.
    const LLVM_MC: &[(u32, &str)] = &[
        (0xb940_0020, "ldr w0, [x1]"),
        (0xf940_0483, "ldr x3, [x4, #8]"),
        (0xf97f_fffe, "ldr x30, [sp, #32760]"),
        (0xb97f_fd07, "ldr w7, [x8, #16380]"),
        (0xf900_0401, "str x1, [x0, #8]"),
        (0xb900_03ff, "str wzr, [sp]"),
        (0x393f_fc62, "strb w2, [x3, #4095]"),
        (0x3840_1420, "ldrb w0, [x1], #1"),
        (0x385f_fcc5, "ldrb w5, [x6, #-1]!"),
        (0x7940_0420, "ldrh w0, [x1, #2]"),
        (0x7900_0062, "strh w2, [x3]"),
        (0x7850_0549, "ldrh w9, [x10], #-256"),
        (0x780f_fd8b, "strh w11, [x12, #255]!"),
        (0x3980_0020, "ldrsb x0, [x1]"),
        (0x39c0_0020, "ldrsb w0, [x1]"),
        (0x7980_0d07, "ldrsh x7, [x8, #6]"),
        (0x78c0_2507, "ldrsh w7, [x8], #2"),
        (0xb980_0020, "ldrsw x0, [x1]"),
        (0xb89f_cc62, "ldrsw x2, [x3, #-4]!"),
        (0xb85f_c020, "ldur w0, [x1, #-4]"),
        (0xf800_3149, "stur x9, [x10, #3]"),
        (0x3850_0020, "ldurb w0, [x1, #-256]"),
        (0x388f_f041, "ldursb x1, [x2, #255]"),
        (0x78c0_1083, "ldursh w3, [x4, #1]"),
        (0xb89f_f0c5, "ldursw x5, [x6, #-1]"),
        (0x781f_e3e7, "sturh w7, [sp, #-2]"),
        (0xf840_8420, "ldr x0, [x1], #8"),
        (0xf81f_8c20, "str x0, [x1, #-8]!"),
        (0xb801_07e3, "str w3, [sp], #16"),
        (0xf862_6820, "ldr x0, [x1, x2]"),
        (0xb862_7820, "ldr w0, [x1, x2, lsl #2]"),
        (0xf862_c820, "ldr x0, [x1, w2, sxtw]"),
        (0xf862_d820, "ldr x0, [x1, w2, sxtw #3]"),
        (0xb822_5820, "str w0, [x1, w2, uxtw #2]"),
        (0x3862_6820, "ldrb w0, [x1, x2]"),
        (0x3862_4820, "ldrb w0, [x1, w2, uxtw]"),
        (0x78a2_f820, "ldrsh x0, [x1, x2, sxtx #1]"),
        (0x783f_7be0, "strh w0, [sp, xzr, lsl #1]"),
        (0xb8a6_58a4, "ldrsw x4, [x5, w6, uxtw #2]"),
        (0xf822_e83f, "str xzr, [x1, x2, sxtx]"),
        (0xa940_0440, "ldp x0, x1, [x2]"),
        (0x2941_0c82, "ldp w2, w3, [x4, #8]"),
        (0x2960_0c82, "ldp w2, w3, [x4, #-256]"),
        (0xa95f_8c82, "ldp x2, x3, [x4, #504]"),
        (0xa9bf_7bfd, "stp x29, x30, [sp, #-16]!"),
        (0xa8c2_18e5, "ldp x5, x6, [x7], #32"),
        (0xa8c1_7bfd, "ldp x29, x30, [sp], #16"),
        (0x28bf_0440, "stp w0, w1, [x2], #-8"),
        (0x2900_7c1f, "stp wzr, wzr, [x0]"),
        (0x697f_0440, "ldpsw x0, x1, [x2, #-8]"),
        (0x68c0_90a3, "ldpsw x3, x4, [x5], #4"),
        (0x69df_9d06, "ldpsw x6, x7, [x8, #252]!"),
        (0xa840_0440, "ldnp x0, x1, [x2]"),
        (0x283f_90a3, "stnp w3, w4, [x5, #-4]"),
        (0xf800_8fe0, "str x0, [sp, #8]!"),
        (0xf840_87e0, "ldr x0, [sp], #8"),
    ];

    #[test]
    fn every_llvm_mc_encoding_decodes_to_the_instruction_it_assembles_from() {
        for &(insn, text) in LLVM_MC {
            assert_eq!(render(&ls(insn)), normalize(text), "{insn:#010x}");
        }
    }

    /// Encodings from `llvm-mc` (`-mattr=+v8.7a,+mte,+mops,+rcpc-immo,+ls64,+lse,+pauth`),
    /// or by hand from the Arm ARM where LLVM refuses an UNPREDICTABLE form.
    const UNSUPPORTED: &[(u32, Reason, &str)] = &[
        (0x5800_0000, Reason::Literal, "ldr x0, #0"),
        (0x9800_0040, Reason::Literal, "ldrsw x0, #8"),
        (0xd800_0000, Reason::Prefetch, "prfm pldl1keep, #0"),
        (0x3dc0_0020, Reason::SimdFp, "ldr q0, [x1]"),
        (0xfc40_8420, Reason::SimdFp, "ldr d0, [x1], #8"),
        (0x2d40_0440, Reason::SimdFp, "ldp s0, s1, [x2]"),
        (0x4c40_7000, Reason::SimdFp, "ld1 { v0.16b }, [x0]"),
        (0x1c00_0000, Reason::SimdFp, "ldr s0, #0"),
        (0xc85f_7c20, Reason::Exclusive, "ldxr x0, [x1]"),
        (0xc802_7c20, Reason::Exclusive, "stxr w2, x0, [x1]"),
        (0xc87f_8440, Reason::Exclusive, "ldaxp x0, x1, [x2]"),
        (0xc8df_fc20, Reason::AcquireRelease, "ldar x0, [x1]"),
        (0x889f_fc20, Reason::AcquireRelease, "stlr w0, [x1]"),
        (0xc8df_7c20, Reason::AcquireRelease, "ldlar x0, [x1]"),
        (0xf8bf_c020, Reason::AcquireRelease, "ldapr x0, [x1]"),
        (0x38bf_c020, Reason::AcquireRelease, "ldaprb w0, [x1]"),
        (0x995f_c020, Reason::AcquireRelease, "ldapur w0, [x1, #-4]"),
        (0xd900_8020, Reason::AcquireRelease, "stlur x0, [x1, #8]"),
        (0xc8a0_7c41, Reason::Atomic, "cas x0, x1, [x2]"),
        (0x4820_7c82, Reason::Atomic, "casp x0, x1, x2, x3, [x4]"),
        (0xf8e0_0041, Reason::Atomic, "ldaddal x0, x1, [x2]"),
        (0xb820_8041, Reason::Atomic, "swp w0, w1, [x2]"),
        (0xf820_003f, Reason::Atomic, "stadd x0, [x1]"),
        (0xf83f_d020, Reason::Atomic, "ld64b x0, [x1]"),
        (0xf83f_9020, Reason::Atomic, "st64b x0, [x1]"),
        (0xf980_0400, Reason::Prefetch, "prfm pldl1keep, [x0, #8]"),
        (0xf89f_f013, Reason::Prefetch, "prfum pstl2strm, [x0, #-1]"),
        (0xf8a1_6800, Reason::Prefetch, "prfm pldl1keep, [x0, x1]"),
        (0xf840_0820, Reason::Unprivileged, "ldtr x0, [x1]"),
        (0x381f_f820, Reason::Unprivileged, "sttrb w0, [x1, #-1]"),
        (0xf820_0420, Reason::PointerAuth, "ldraa x0, [x1]"),
        (0xf8ff_fc20, Reason::PointerAuth, "ldrab x0, [x1, #-8]!"),
        (0xd920_0820, Reason::MemoryTags, "stg x0, [x1]"),
        (0xd960_0020, Reason::MemoryTags, "ldg x0, [x1]"),
        (0x6900_0440, Reason::MemoryTags, "stgp x0, x1, [x2]"),
        (0xd9a0_0020, Reason::MemoryTags, "stgm x0, [x1]"),
        (
            0x1901_0440,
            Reason::MemoryCopySet,
            "cpyfp [x0]!, [x1]!, x2!",
        ),
        (0x1d01_0440, Reason::MemoryCopySet, "cpyp [x0]!, [x1]!, x2!"),
        (0x19c2_0420, Reason::MemoryCopySet, "setp [x0]!, x1!, x2"),
        (0xd91f_0c00, Reason::GuardedControlStack, "gcsstr x0, [x0]"),
        (0xf840_8400, Reason::WritebackOverlap, "ldr x0, [x0], #8"),
        (0xf800_8c21, Reason::WritebackOverlap, "str x1, [x1, #8]!"),
        (
            0xa9c1_0400,
            Reason::WritebackOverlap,
            "ldp x0, x1, [x0, #16]!",
        ),
        (
            0xa881_0420,
            Reason::WritebackOverlap,
            "stp x0, x1, [x1], #16",
        ),
        (0xa940_0020, Reason::LoadPairOverlap, "ldp x0, x0, [x1]"),
        (0x6940_0862, Reason::LoadPairOverlap, "ldpsw x2, x2, [x3]"),
        (
            0xf8c0_0400,
            Reason::Unallocated,
            "ldr (post-index) size=11 opc=11",
        ),
        (
            0xf880_0400,
            Reason::Unallocated,
            "prfm post-index does not exist",
        ),
        (0xb8c0_0020, Reason::Unallocated, "ldur size=10 opc=11"),
        (
            0xf862_0820,
            Reason::Unallocated,
            "ldr register offset with option=000",
        ),
        (0x6840_0440, Reason::Unallocated, "ldnp with opc=01"),
        (0xe940_0440, Reason::Unallocated, "ldp with opc=11"),
        (
            0xf8a3_ba1d,
            Reason::Unallocated,
            "prfm register offset, option=101",
        ),
        (0x5901_0440, Reason::Unallocated, "cpyfp with sz=01"),
        (0xd9a0_1020, Reason::Unallocated, "stgm with imm9 != 0"),
        (
            0xd980_0020,
            Reason::Unallocated,
            "ldapursw into x with size=11",
        ),
        (
            0xf820_e020,
            Reason::Unallocated,
            "atomic class, o3=1 opc=110",
        ),
        (0xd91f_1c00, Reason::GuardedControlStack, "gcssttr x0, [x0]"),
        (
            0xd91f_2c00,
            Reason::Unallocated,
            "gcs class, bits [15:12]=0010",
        ),
        (0x8b02_0020, Reason::NotLoadStore, "add x0, x1, x2"),
    ];

    #[test]
    fn every_unsupported_encoding_reports_its_class() {
        for &(insn, reason, text) in UNSUPPORTED {
            assert_eq!(
                decode(insn),
                Decoded::Unsupported(reason),
                "{insn:#010x} {text}"
            );
        }
    }

    #[test]
    fn ldp_x_has_two_transfers_eight_bytes_apart() {
        // ldp x0, x1, [x2]
        assert_eq!(ls(0xa940_0440).transfers, [t(0, 0), t(1, 8)]);
    }

    #[test]
    fn ldp_w_has_two_transfers_four_bytes_apart() {
        // ldp w2, w3, [x4, #8]
        assert_eq!(ls(0x2941_0c82).transfers, [t(2, 0), t(3, 4)]);
    }

    #[test]
    fn single_register_forms_have_one_transfer() {
        // ldr x3, [x4, #8]
        assert_eq!(ls(0xf940_0483).transfers, [t(3, 0), None]);
    }

    #[test]
    fn unsigned_offset_is_scaled_by_the_access_size() {
        // ldr x30, [sp, #32760]: imm12 = 4095
        assert_eq!(ls(0xf97f_fffe).offset, Offset::Imm(32760));
    }

    #[test]
    fn unscaled_offset_is_a_signed_byte_count() {
        // ldur w0, [x1, #-4]
        assert_eq!(ls(0xb85f_c020).offset, Offset::Imm(-4));
    }

    #[test]
    fn post_index_accesses_the_old_base() {
        // ldrb w0, [x1], #1
        assert_eq!(ls(0x3840_1420).effective_address(0x1000, 0), 0x1000);
    }

    #[test]
    fn post_index_writes_back_base_plus_immediate() {
        // ldp x5, x6, [x7], #32
        assert_eq!(ls(0xa8c2_18e5).written_back_base(0x100), Some(0x120));
    }

    #[test]
    fn pre_index_accesses_the_new_base() {
        // ldrb w5, [x6, #-1]!
        assert_eq!(ls(0x385f_fcc5).effective_address(0x1000, 0), 0xfff);
    }

    #[test]
    fn pre_index_writes_back_the_accessed_address() {
        // stp x29, x30, [sp, #-16]!
        let l = ls(0xa9bf_7bfd);
        assert_eq!(
            (l.writeback_amount(), l.written_back_base(0x8000)),
            (Some(-16), Some(0x7ff0))
        );
    }

    #[test]
    fn offset_forms_do_not_write_back() {
        // ldr x3, [x4, #8]; ldr x0, [x1, x2]; ldnp x0, x1, [x2]
        for insn in [0xf940_0483, 0xf862_6820, 0xa840_0440] {
            assert_eq!(ls(insn).written_back_base(0x1000), None, "{insn:#x}");
        }
    }

    #[test]
    fn immediate_offset_wraps_at_the_top_of_the_address_space() {
        // ldr x0, [x1, #8] with x1 near 2^64
        assert_eq!(ls(0xf940_0420).effective_address(u64::MAX - 3, 0), 4);
    }

    #[test]
    fn register_offset_lsl_shifts_by_the_access_size() {
        // ldr w0, [x1, x2, lsl #2]
        assert_eq!(ls(0xb862_7820).effective_address(0x1000, 3), 0x100c);
    }

    #[test]
    fn register_offset_sxtw_sign_extends_the_low_word() {
        // ldr x0, [x1, w2, sxtw]
        assert_eq!(
            ls(0xf862_c820).effective_address(0x1000, 0xffff_ffff),
            0xfff
        );
    }

    #[test]
    fn register_offset_uxtw_ignores_the_high_word() {
        // str w0, [x1, w2, uxtw #2]
        assert_eq!(
            ls(0xb822_5820).effective_address(0x1000, 0x1_0000_0001),
            0x1004
        );
    }

    #[test]
    fn register_offset_sxtx_uses_all_of_rm() {
        // ldrsh x0, [x1, x2, sxtx #1]
        assert_eq!(ls(0x78a2_f820).effective_address(0x1000, u64::MAX), 0xffe);
    }

    #[test]
    fn register_offset_names_rm() {
        // ldrsw x4, [x5, w6, uxtw #2]
        assert_eq!(
            ls(0xb8a6_58a4).offset,
            Offset::Reg {
                rm: 6,
                extend: Extend::Uxtw,
                shift: 2
            }
        );
    }

    #[test]
    fn byte_register_offset_with_s_set_does_not_shift() {
        // ldrb w0, [x1, x2, lsl #0]
        assert_eq!(ls(0x3862_7820).effective_address(0x1000, 1), 0x1001);
    }

    #[test]
    fn writeback_with_sp_base_and_zero_register_is_allowed() {
        // str xzr, [sp, #-8]!: Rn = 31 is SP, Rt = 31 is XZR
        let l = ls(0xf81f_8fff);
        assert_eq!((l.base, l.transfers[0]), (31, t(31, 0)));
    }

    #[test]
    fn ldrsw_loads_four_bytes_sign_extended_into_x() {
        // ldrsw x0, [x1]
        let l = ls(0xb980_0020);
        assert_eq!((l.size, l.sign_extend, l.dest_64), (4, true, true));
    }

    #[test]
    fn ldrsb_into_w_does_not_set_dest_64() {
        // ldrsb w0, [x1]
        let l = ls(0x39c0_0020);
        assert_eq!((l.size, l.sign_extend, l.dest_64), (1, true, false));
    }

    #[test]
    fn ldrh_zero_extends_into_w() {
        // ldrh w0, [x1, #2]
        let l = ls(0x7940_0420);
        assert_eq!((l.size, l.sign_extend, l.dest_64), (2, false, false));
    }

    #[test]
    fn apply_load_sign_extends_a_byte_into_x() {
        assert_eq!(apply_load(0x80, 1, true, true), 0xffff_ffff_ffff_ff80);
    }

    #[test]
    fn apply_load_sign_extends_a_byte_into_w_with_the_top_half_clear() {
        assert_eq!(apply_load(0x80, 1, true, false), 0xffff_ff80);
    }

    #[test]
    fn apply_load_zero_extends_and_drops_bits_beyond_the_size() {
        assert_eq!(apply_load(0x1_8000, 2, false, true), 0x8000);
    }

    #[test]
    fn apply_load_sign_extends_a_word_into_x() {
        assert_eq!(
            apply_load(0x8000_0000, 4, true, true),
            0xffff_ffff_8000_0000
        );
    }

    #[test]
    fn apply_load_keeps_a_doubleword() {
        assert_eq!(apply_load(u64::MAX, 8, true, true), u64::MAX);
    }

    #[test]
    fn extend_from_option_rejects_option_bit_1_clear() {
        assert_eq!(
            [0b000, 0b001, 0b100, 0b101].map(Extend::from_option),
            [None; 4]
        );
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
                if let Offset::Reg { rm, shift, .. } = l.offset {
                    prop_assert!(rm < 32 && shift <= 3);
                }
                let _ = l.effective_address(u64::MAX, u64::MAX);
                let _ = l.written_back_base(u64::MAX);
            }
        }

        #[test]
        fn loads_and_stores_space_never_says_not_load_store(insn in any::<u32>()) {
            // op0 bits [28:25] = x1x0.
            let insn = (insn | 1 << 27) & !(1 << 25);
            prop_assert_ne!(decode(insn), Decoded::Unsupported(Reason::NotLoadStore));
        }

        #[test]
        fn writeback_never_targets_a_transfer_register(insn in any::<u32>()) {
            if let Decoded::LoadStore(l) = decode(insn) {
                if l.writeback != Writeback::None && l.base != 31 {
                    prop_assert!(l.transfers.iter().flatten().all(|tr| tr.rt != l.base));
                }
            }
        }

        #[test]
        fn a_pair_load_never_loads_one_register_twice(insn in any::<u32>()) {
            if let Decoded::LoadStore(l) = decode(insn) {
                if let [Some(a), Some(b)] = l.transfers {
                    prop_assert!(!l.load || a.rt != b.rt);
                }
            }
        }

        #[test]
        fn apply_load_into_w_clears_the_top_half(value in any::<u64>(), size_log in 0u8..3, sx in any::<bool>()) {
            prop_assert_eq!(apply_load(value, 1 << size_log, sx, false) >> 32, 0);
        }
    }
}

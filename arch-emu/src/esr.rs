//! ESR_EL2 decode: the exception classes a hypervisor handles from a lower EL.
//!
//! Field names follow the Arm ARM (DDI 0487), section D23.2 "ESR_EL2, Exception
//! Syndrome Register (EL2)". Decoding is a pure function of the register value,
//! so every syndrome a guest can provoke has a defined result.

/// Exception Class values (ESR_ELx.EC, bits \[31:26\]) this module decodes.
pub mod ec {
    /// Unknown reason.
    pub const UNKNOWN: u8 = 0x00;
    /// Trapped WFI or WFE.
    pub const WFX: u8 = 0x01;
    /// HVC executed in AArch64 state.
    pub const HVC64: u8 = 0x16;
    /// SMC executed in AArch64 state (trapped by HCR_EL2.TSC).
    pub const SMC64: u8 = 0x17;
    /// Trapped MSR, MRS or system instruction in AArch64 state.
    pub const SYS64: u8 = 0x18;
    /// Instruction Abort from a lower Exception level.
    pub const IABT_LOW: u8 = 0x20;
    /// Instruction Abort taken without a change in Exception level.
    pub const IABT_CUR: u8 = 0x21;
    /// Data Abort from a lower Exception level.
    pub const DABT_LOW: u8 = 0x24;
    /// Data Abort taken without a change in Exception level.
    pub const DABT_CUR: u8 = 0x25;
}

/// ESR_ELx.IL, bit 25: the trapped instruction is 32 bits long.
pub const IL: u64 = 1 << 25;
/// Data and Instruction Abort ISS bit positions (Arm ARM D23.2.41, ESR_EL1).
pub mod iss {
    /// ISV, bit 24 (data aborts): the syndrome bits are valid.
    pub const ISV: u32 = 24;
    /// FnV, bit 10: FAR is not valid.
    pub const FNV: u32 = 10;
    /// EA, bit 9: external abort type.
    pub const EA: u32 = 9;
    /// S1PTW, bit 7: stage-2 fault on a stage-1 translation table walk.
    pub const S1PTW: u32 = 7;
    /// WnR, bit 6 (data aborts): the access was a write.
    pub const WNR: u32 = 6;
}

/// What the guest did that an injected abort reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortKind {
    /// A load or store (`write` for a store): a Data Abort.
    Data {
        /// The access was a write (WnR).
        write: bool,
    },
    /// An instruction fetch: an Instruction Abort.
    Instruction,
}

/// The ESR_EL1 value of an abort injected into EL1 (Arm ARM D23.2.41):
/// Data or Instruction Abort, from EL0 (`from_el0`, EC 0x24/0x20) or EL1
/// (EC 0x25/0x21), IL set, WnR for a data write, and the fault status `fsc`
/// (see [`fsc`]).
pub fn injected_abort(kind: AbortKind, from_el0: bool, fsc: u8) -> u64 {
    let (ec, wnr) = match (kind, from_el0) {
        (AbortKind::Data { write }, true) => (ec::DABT_LOW, write),
        (AbortKind::Data { write }, false) => (ec::DABT_CUR, write),
        (AbortKind::Instruction, true) => (ec::IABT_LOW, false),
        (AbortKind::Instruction, false) => (ec::IABT_CUR, false),
    };
    (u64::from(ec) << 26) | IL | (u64::from(wnr) << iss::WNR) | u64::from(fsc & 0x3f)
}

/// The ESR_EL1 value of an Undefined Instruction exception (EC 0, IL set).
pub fn injected_undef() -> u64 {
    (u64::from(ec::UNKNOWN) << 26) | IL
}

/// Data Abort ISS (ESR_EL2.ISS for EC 0x24), Arm ARM D23.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataAbort {
    /// ISV: the syndrome bits SAS, SSE, SRT, SF and AR are valid.
    pub isv: bool,
    /// SAS: access size in bytes (1, 2, 4 or 8); meaningful only when `isv`.
    pub access_size: u8,
    /// SSE: the load sign-extends; meaningful only when `isv`.
    pub sign_extend: bool,
    /// SRT: the transfer register (0..=31, 31 = XZR/WZR); meaningful only when `isv`.
    pub srt: u8,
    /// SF: the register is 64-bit (else 32-bit); meaningful only when `isv`.
    pub sixty_four: bool,
    /// AR: acquire/release semantics.
    pub acquire_release: bool,
    /// FnV: FAR_EL2 is not valid.
    pub far_not_valid: bool,
    /// EA: external abort type.
    pub external_abort: bool,
    /// CM: the abort came from a cache maintenance instruction.
    pub cache_maintenance: bool,
    /// S1PTW: stage-2 fault on a stage-1 translation table walk.
    pub s1ptw: bool,
    /// WnR: the access was a write.
    pub write: bool,
    /// DFSC: the data fault status code.
    pub dfsc: u8,
}

/// Instruction Abort ISS (EC 0x20).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstructionAbort {
    /// FnV: FAR_EL2 is not valid.
    pub far_not_valid: bool,
    /// EA: external abort type.
    pub external_abort: bool,
    /// S1PTW: stage-2 fault on a stage-1 translation table walk.
    pub s1ptw: bool,
    /// IFSC: the instruction fault status code.
    pub ifsc: u8,
}

/// Trapped MSR/MRS (EC 0x18) ISS: the system register encoding and direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SysRegAccess {
    /// Op0.
    pub op0: u8,
    /// Op1.
    pub op1: u8,
    /// CRn.
    pub crn: u8,
    /// CRm.
    pub crm: u8,
    /// Op2.
    pub op2: u8,
    /// Rt: the general-purpose register (31 = XZR).
    pub rt: u8,
    /// Direction: true for a read (MRS), false for a write (MSR).
    pub read: bool,
}

impl SysRegAccess {
    /// The register's (op0, op1, crn, crm, op2) encoding.
    pub fn encoding(&self) -> (u8, u8, u8, u8, u8) {
        (self.op0, self.op1, self.crn, self.crm, self.op2)
    }

    /// Whether this is a write of ICC_SGI1R_EL1 (S3_0_C12_C11_5), which EL1 writes trap
    /// to EL2 while HCR_EL2.IMO is set (GICv3 architecture, section 11.2.9).
    pub fn is_icc_sgi1r_write(&self) -> bool {
        !self.read && self.encoding() == ICC_SGI1R_EL1
    }
}

/// ICC_SGI1R_EL1's encoding (op0, op1, CRn, CRm, op2).
pub const ICC_SGI1R_EL1: (u8, u8, u8, u8, u8) = (3, 0, 12, 11, 5);

/// A decoded ESR_EL2 value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Trapped WFI (`wfe` false) or WFE (`wfe` true).
    Wfx {
        /// The instruction was WFE.
        wfe: bool,
    },
    /// HVC #imm16.
    Hvc {
        /// The immediate.
        imm16: u16,
    },
    /// SMC #imm16 (trapped by HCR_EL2.TSC).
    Smc {
        /// The immediate.
        imm16: u16,
    },
    /// Trapped system register access.
    SysReg(SysRegAccess),
    /// Instruction abort from a lower EL.
    InstructionAbort(InstructionAbort),
    /// Data abort from a lower EL.
    DataAbort(DataAbort),
    /// Any other exception class, with its EC and ISS.
    Other {
        /// The exception class.
        ec: u8,
        /// The instruction-specific syndrome.
        iss: u32,
    },
}

/// The exception class field of `esr`.
pub fn exception_class(esr: u64) -> u8 {
    ((esr >> 26) & 0x3f) as u8
}

/// IL: the trapped instruction was 32 bits long (always for A64).
pub fn instruction_length_32(esr: u64) -> bool {
    esr & (1 << 25) != 0
}

fn bit(v: u32, n: u32) -> bool {
    (v >> n) & 1 != 0
}

fn field(v: u32, lsb: u32, width: u32) -> u8 {
    ((v >> lsb) & ((1 << width) - 1)) as u8
}

/// Decodes an ESR_EL2 value taken from a lower Exception level.
pub fn decode(esr: u64) -> Exit {
    let ec = exception_class(esr);
    let iss = (esr & 0x01ff_ffff) as u32;
    match ec {
        ec::WFX => Exit::Wfx { wfe: bit(iss, 0) },
        ec::HVC64 => Exit::Hvc { imm16: iss as u16 },
        ec::SMC64 => Exit::Smc { imm16: iss as u16 },
        ec::SYS64 => Exit::SysReg(SysRegAccess {
            op0: field(iss, 20, 2),
            op2: field(iss, 17, 3),
            op1: field(iss, 14, 3),
            crn: field(iss, 10, 4),
            rt: field(iss, 5, 5),
            crm: field(iss, 1, 4),
            read: bit(iss, 0),
        }),
        ec::IABT_LOW => Exit::InstructionAbort(InstructionAbort {
            far_not_valid: bit(iss, iss::FNV),
            external_abort: bit(iss, iss::EA),
            s1ptw: bit(iss, iss::S1PTW),
            ifsc: field(iss, 0, 6),
        }),
        ec::DABT_LOW => Exit::DataAbort(DataAbort {
            isv: bit(iss, iss::ISV),
            access_size: 1 << field(iss, 22, 2),
            sign_extend: bit(iss, 21),
            srt: field(iss, 16, 5),
            sixty_four: bit(iss, 15),
            acquire_release: bit(iss, 14),
            far_not_valid: bit(iss, iss::FNV),
            external_abort: bit(iss, iss::EA),
            cache_maintenance: bit(iss, 8),
            s1ptw: bit(iss, iss::S1PTW),
            write: bit(iss, iss::WNR),
            dfsc: field(iss, 0, 6),
        }),
        _ => Exit::Other { ec, iss },
    }
}

/// Data/instruction fault status codes (DFSC/IFSC, Arm ARM D23.2.41): the
/// stage-2 faults the hypervisor distinguishes and the aborts it injects.
pub mod fsc {
    /// Synchronous External abort, not on a translation table walk.
    pub const SYNC_EXTERNAL: u8 = 0b01_0000;
    /// Synchronous External abort on a translation table walk or hardware
    /// update of a table, level 0 (levels 1..=3 follow: 0b0101LL).
    pub const SYNC_EXTERNAL_ON_WALK_L0: u8 = 0b01_0100;

    /// Synchronous External abort on a translation table walk at `level`
    /// (0..=3; larger values are taken as 3).
    pub fn sync_external_on_walk(level: u8) -> u8 {
        SYNC_EXTERNAL_ON_WALK_L0 | level.min(3)
    }

    /// Translation fault at `level` (0..=3): DFSC 0b0001LL.
    pub fn is_translation_fault(fsc: u8) -> bool {
        fsc & 0x3c == 0x04
    }
    /// Permission fault at levels 1..=3: DFSC 0b0011LL.
    pub fn is_permission_fault(fsc: u8) -> bool {
        fsc & 0x3c == 0x0c
    }
    /// Access flag fault: DFSC 0b0010LL.
    pub fn is_access_flag_fault(fsc: u8) -> bool {
        fsc & 0x3c == 0x08
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esr(ec: u8, iss: u32) -> u64 {
        (u64::from(ec) << 26) | (1 << 25) | u64::from(iss)
    }

    #[test]
    fn data_abort_with_syndrome_decodes_every_field() {
        // ISV=1, SAS=0b10 (word), SSE=0, SRT=5, SF=0, AR=0, WnR=1, DFSC=0b000101 (L1 translation).
        let iss = (1 << 24) | (0b10 << 22) | (5 << 16) | (1 << 6) | 0b000101;
        let Exit::DataAbort(d) = decode(esr(ec::DABT_LOW, iss)) else {
            panic!("not a data abort")
        };
        assert!(d.isv);
        assert_eq!(d.access_size, 4);
        assert!(!d.sign_extend);
        assert_eq!(d.srt, 5);
        assert!(!d.sixty_four);
        assert!(d.write);
        assert_eq!(d.dfsc, 5);
        assert!(fsc::is_translation_fault(d.dfsc));
    }

    #[test]
    fn injected_data_abort_from_el1_is_ec_0x25_with_wnr_and_fsc() {
        // A store at EL1 whose stage-1 walk hit nothing: EC 0x25, IL, WnR, DFSC 0b010100.
        let v = injected_abort(
            AbortKind::Data { write: true },
            false,
            fsc::sync_external_on_walk(0),
        );
        assert_eq!(v, 0x9600_0054);
        assert_eq!(exception_class(v), ec::DABT_CUR);
    }

    #[test]
    fn injected_instruction_abort_from_el0_is_ec_0x20_without_wnr() {
        let v = injected_abort(AbortKind::Instruction, true, fsc::SYNC_EXTERNAL);
        assert_eq!(v, 0x8200_0010);
    }

    #[test]
    fn walk_abort_level_saturates_at_three() {
        assert_eq!(fsc::sync_external_on_walk(2), 0b01_0110);
        assert_eq!(fsc::sync_external_on_walk(9), 0b01_0111);
    }

    #[test]
    fn undef_is_ec_zero_with_il() {
        assert_eq!(injected_undef(), 0x0200_0000);
    }

    #[test]
    fn data_abort_on_stage1_walk_decodes_s1ptw() {
        // ISV=0, S1PTW=1, WnR=0, DFSC=0b000110 (L2 translation fault at stage 2).
        let Exit::DataAbort(d) = decode(esr(ec::DABT_LOW, (1 << 7) | 0b000110)) else {
            panic!("not a data abort")
        };
        assert!(d.s1ptw && !d.isv && !d.write);
    }

    #[test]
    fn data_abort_sign_extending_64bit_load_is_decoded() {
        let iss = (1 << 24) | (0b01 << 22) | (1 << 21) | (30 << 16) | (1 << 15) | 0b000111;
        let Exit::DataAbort(d) = decode(esr(ec::DABT_LOW, iss)) else {
            panic!("not a data abort")
        };
        assert_eq!(d.access_size, 2);
        assert!(d.sign_extend);
        assert_eq!(d.srt, 30);
        assert!(d.sixty_four);
        assert!(!d.write);
    }

    #[test]
    fn data_abort_without_syndrome_reports_isv_clear() {
        let Exit::DataAbort(d) = decode(esr(ec::DABT_LOW, 0b000110)) else {
            panic!("not a data abort")
        };
        assert!(!d.isv);
    }

    #[test]
    fn hvc_and_smc_carry_their_immediate() {
        assert_eq!(decode(esr(ec::HVC64, 0)), Exit::Hvc { imm16: 0 });
        assert_eq!(decode(esr(ec::SMC64, 0x1234)), Exit::Smc { imm16: 0x1234 });
    }

    #[test]
    fn icc_sgi1r_write_is_recognised() {
        // op0=3 op2=5 op1=0 CRn=12 Rt=2 CRm=11 dir=0 (write)
        let iss = (3 << 20) | (5 << 17) | (12 << 10) | (2 << 5) | (11 << 1);
        let Exit::SysReg(s) = decode(esr(ec::SYS64, iss)) else {
            panic!("not a sysreg trap")
        };
        assert_eq!(s.rt, 2);
        assert!(s.is_icc_sgi1r_write());
    }

    #[test]
    fn sysreg_read_is_not_an_sgi_write() {
        let iss = (3 << 20) | (5 << 17) | (12 << 10) | (2 << 5) | (11 << 1) | 1;
        let Exit::SysReg(s) = decode(esr(ec::SYS64, iss)) else {
            panic!("not a sysreg trap")
        };
        assert!(s.read);
        assert!(!s.is_icc_sgi1r_write());
    }

    #[test]
    fn wfe_and_wfi_are_told_apart() {
        assert_eq!(decode(esr(ec::WFX, 1)), Exit::Wfx { wfe: true });
        assert_eq!(decode(esr(ec::WFX, 0)), Exit::Wfx { wfe: false });
    }

    #[test]
    fn unknown_class_is_reported_with_its_iss() {
        assert_eq!(
            decode(esr(0x3f, 0x1ff_ffff)),
            Exit::Other {
                ec: 0x3f,
                iss: 0x1ff_ffff
            }
        );
    }

    #[test]
    fn instruction_abort_decodes_fault_code() {
        let Exit::InstructionAbort(i) = decode(esr(ec::IABT_LOW, (1 << 7) | 0x0d)) else {
            panic!("not an instruction abort")
        };
        assert!(i.s1ptw);
        assert!(fsc::is_permission_fault(i.ifsc));
    }
}

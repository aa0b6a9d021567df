//! The guest's CPU features: one table that decides, for each feature field of
//! the AArch64 ID registers, whether the guest gets the feature (and which EL2
//! controls the hypervisor must set for it to work at EL1 and EL0) or does not
//! (the field reads as "not implemented").
//!
//! The hypervisor traps the ID register group with HCR_EL2.TID3 and answers
//! every read from [`GuestView`]: the hardware's values passed through
//! [`FEATURES`]. A field the table does not name reads as zero, so a feature
//! that a newer core adds stays hidden until it is decided here.
//!
//! Register and field names, positions and values are those of the Arm
//! Architecture Reference Manual for A-profile (DDI 0487 K.a), D23.2
//! ("ID_AA64PFR0_EL1" ... "ID_AA64SMFR0_EL1"), and D19.2.1 ("Feature
//! identification registers"): fields are 4 bits wide; a *signed* field reads
//! 0b1111 (-1) for "not implemented"; for the others 0 means "not
//! implemented", and a lower value always describes a subset (D19.1.3,
//! "Principles of the ID scheme for fields in ID registers").

/// The ID register group HCR_EL2.TID3 traps: op0 = 3, op1 = 0, CRn = 0,
/// CRm = 1..=7, op2 = 0..=7 (Arm ARM D23.2.54, HCR_EL2.TID3). The encodings of
/// the group that name no register are RAZ.
pub const GROUP_CRM: core::ops::RangeInclusive<u8> = 1..=7;

/// Registers in the TID3 group.
pub const GROUP_LEN: usize = 7 * 8;

/// An ID register of the TID3 group, by its (CRm, op2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdReg {
    /// CRm, 1..=7.
    pub crm: u8,
    /// op2, 0..=7.
    pub op2: u8,
}

impl IdReg {
    /// The register at (CRm, op2), if that is in the TID3 group.
    pub const fn new(crm: u8, op2: u8) -> Option<IdReg> {
        if crm >= 1 && crm <= 7 && op2 <= 7 {
            Some(IdReg { crm, op2 })
        } else {
            None
        }
    }

    /// Its index in [`IdRegs`], 0..[`GROUP_LEN`].
    pub const fn index(self) -> usize {
        (self.crm as usize - 1) * 8 + self.op2 as usize
    }

    /// Whether it describes AArch32 state (CRm 1..=3).
    pub const fn is_aarch32(self) -> bool {
        self.crm <= 3
    }
}

/// ID_AA64PFR0_EL1, Processor Feature Register 0.
pub const ID_AA64PFR0_EL1: IdReg = IdReg { crm: 4, op2: 0 };
/// ID_AA64PFR1_EL1, Processor Feature Register 1.
pub const ID_AA64PFR1_EL1: IdReg = IdReg { crm: 4, op2: 1 };
/// ID_AA64PFR2_EL1, Processor Feature Register 2.
pub const ID_AA64PFR2_EL1: IdReg = IdReg { crm: 4, op2: 2 };
/// ID_AA64ZFR0_EL1, SVE Feature ID Register 0.
pub const ID_AA64ZFR0_EL1: IdReg = IdReg { crm: 4, op2: 4 };
/// ID_AA64SMFR0_EL1, SME Feature ID Register 0.
pub const ID_AA64SMFR0_EL1: IdReg = IdReg { crm: 4, op2: 5 };
/// ID_AA64FPFR0_EL1, Floating-point Feature Register 0.
pub const ID_AA64FPFR0_EL1: IdReg = IdReg { crm: 4, op2: 7 };
/// ID_AA64DFR0_EL1, Debug Feature Register 0.
pub const ID_AA64DFR0_EL1: IdReg = IdReg { crm: 5, op2: 0 };
/// ID_AA64DFR1_EL1, Debug Feature Register 1.
pub const ID_AA64DFR1_EL1: IdReg = IdReg { crm: 5, op2: 1 };
/// ID_AA64AFR0_EL1, Auxiliary Feature Register 0 (IMPLEMENTATION DEFINED).
pub const ID_AA64AFR0_EL1: IdReg = IdReg { crm: 5, op2: 4 };
/// ID_AA64AFR1_EL1, Auxiliary Feature Register 1 (IMPLEMENTATION DEFINED).
pub const ID_AA64AFR1_EL1: IdReg = IdReg { crm: 5, op2: 5 };
/// ID_AA64ISAR0_EL1, Instruction Set Attribute Register 0.
pub const ID_AA64ISAR0_EL1: IdReg = IdReg { crm: 6, op2: 0 };
/// ID_AA64ISAR1_EL1, Instruction Set Attribute Register 1.
pub const ID_AA64ISAR1_EL1: IdReg = IdReg { crm: 6, op2: 1 };
/// ID_AA64ISAR2_EL1, Instruction Set Attribute Register 2.
pub const ID_AA64ISAR2_EL1: IdReg = IdReg { crm: 6, op2: 2 };
/// ID_AA64ISAR3_EL1, Instruction Set Attribute Register 3.
pub const ID_AA64ISAR3_EL1: IdReg = IdReg { crm: 6, op2: 3 };
/// ID_AA64MMFR0_EL1, Memory Model Feature Register 0.
pub const ID_AA64MMFR0_EL1: IdReg = IdReg { crm: 7, op2: 0 };
/// ID_AA64MMFR1_EL1, Memory Model Feature Register 1.
pub const ID_AA64MMFR1_EL1: IdReg = IdReg { crm: 7, op2: 1 };
/// ID_AA64MMFR2_EL1, Memory Model Feature Register 2.
pub const ID_AA64MMFR2_EL1: IdReg = IdReg { crm: 7, op2: 2 };
/// ID_AA64MMFR3_EL1, Memory Model Feature Register 3.
pub const ID_AA64MMFR3_EL1: IdReg = IdReg { crm: 7, op2: 3 };
/// ID_AA64MMFR4_EL1, Memory Model Feature Register 4.
pub const ID_AA64MMFR4_EL1: IdReg = IdReg { crm: 7, op2: 4 };

/// An EL2 control the hypervisor sets (or clears) so that a feature the guest
/// is given works at EL1 and EL0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// HCR_EL2.API (bit 41) = 1: pointer authentication instructions not trapped.
    HcrApi,
    /// HCR_EL2.APK (bit 40) = 1: pointer authentication key registers not trapped.
    HcrApk,
    /// HCRX_EL2.MSCEn (bit 11) = 1: the FEAT_MOPS memory copy and set
    /// instructions are enabled at EL1 and EL0 (UNDEFINED otherwise).
    /// HCRX_EL2.MCE2 (bit 10) stays 0: their exceptions are taken to EL1, where
    /// the guest's own handler restarts them.
    HcrxMscen,
    /// HCRX_EL2.TCR2En (bit 14) = 1: TCR2_EL1 accessible (FEAT_TCR2).
    HcrxTcr2En,
    /// HCRX_EL2.SCTLR2En (bit 15) = 1: SCTLR2_EL1 accessible (FEAT_SCTLR2).
    HcrxSctlr2En,
    /// CPTR_EL2.TZ (bit 8) = 0: SVE not trapped.
    CptrNoTz,
    /// CPTR_EL2.TSM (bit 12) = 0: SME not trapped.
    CptrNoTsm,
}

impl Control {
    /// Whether the control is a bit of HCRX_EL2, which exists only with FEAT_HCX.
    pub const fn in_hcrx(self) -> bool {
        matches!(
            self,
            Control::HcrxMscen | Control::HcrxTcr2En | Control::HcrxSctlr2En
        )
    }
}

/// A trap the hypervisor sets for a feature the hardware has and the guest is
/// not given, so that its registers are UNDEFINED to the guest as they would be
/// on a core without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trap {
    /// CPTR_EL2.TAM (bit 30) = 1: activity monitor registers trap (FEAT_AMUv1).
    CptrTam,
    /// HCR_EL2.TERR (bit 36) = 1: error record registers trap (FEAT_RAS).
    HcrTerr,
}

/// What the guest gets of one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The hardware's value: the feature needs no EL2 control, and nothing at
    /// EL2 breaks it.
    Pass,
    /// At most this value (a lower value is a subset of the feature).
    Cap(u8),
    /// Not given: the field reads as "not implemented"; the traps, if the
    /// hardware has the feature, make its registers UNDEFINED.
    Hide(&'static [Trap]),
    /// Given, with these EL2 controls; hidden when one of them needs HCRX_EL2
    /// and the hardware has no FEAT_HCX.
    Enable(&'static [Control]),
    /// The hardware's value if the guest is given the feature of another field
    /// (the register at `reg`, bits `shift + 3 : shift`), else 0.
    Follows(IdReg, u8),
}

/// One row of the table: a field of an ID register and its rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feature {
    /// The field's name in the Arm ARM.
    pub name: &'static str,
    /// The register holding it.
    pub reg: IdReg,
    /// Its least significant bit.
    pub shift: u8,
    /// Its width in bits: 4, or 64 for a whole register decided at once.
    pub width: u8,
    /// Signed: 0b1111 reads as "not implemented", 0 as the first version.
    pub signed: bool,
    /// What the guest gets.
    pub rule: Rule,
}

const fn f(name: &'static str, reg: IdReg, shift: u8, rule: Rule) -> Feature {
    Feature {
        name,
        reg,
        shift,
        width: 4,
        signed: false,
        rule,
    }
}

const fn signed(name: &'static str, reg: IdReg, shift: u8, rule: Rule) -> Feature {
    Feature {
        name,
        reg,
        shift,
        width: 4,
        signed: true,
        rule,
    }
}

const fn whole(name: &'static str, reg: IdReg, rule: Rule) -> Feature {
    Feature {
        name,
        reg,
        shift: 0,
        width: 64,
        signed: false,
        rule,
    }
}

const PASS: Rule = Rule::Pass;
const HIDE: Rule = Rule::Hide(&[]);
const PAUTH: Rule = Rule::Enable(&[Control::HcrApi, Control::HcrApk]);
const SVE: Rule = Rule::Follows(ID_AA64PFR0_EL1, 32);
const SME: Rule = Rule::Follows(ID_AA64PFR1_EL1, 24);

/// The AArch32 ID registers (CRm 1..=3): they describe EL0's AArch32 state,
/// which is the hardware's (HCR_EL2.RW only fixes EL1 as AArch64).
const AARCH32: [(u8, u8, &str); 18] = [
    (1, 0, "ID_PFR0_EL1"),
    (1, 1, "ID_PFR1_EL1"),
    (1, 2, "ID_DFR0_EL1"),
    (1, 3, "ID_AFR0_EL1"),
    (1, 4, "ID_MMFR0_EL1"),
    (1, 5, "ID_MMFR1_EL1"),
    (1, 6, "ID_MMFR2_EL1"),
    (1, 7, "ID_MMFR3_EL1"),
    (2, 0, "ID_ISAR0_EL1"),
    (2, 1, "ID_ISAR1_EL1"),
    (2, 2, "ID_ISAR2_EL1"),
    (2, 3, "ID_ISAR3_EL1"),
    (2, 4, "ID_ISAR4_EL1"),
    (2, 5, "ID_ISAR5_EL1"),
    (2, 6, "ID_MMFR4_EL1"),
    (2, 7, "ID_ISAR6_EL1"),
    (3, 0, "MVFR0_EL1"),
    (3, 1, "MVFR1_EL1"),
];

/// The remaining AArch32 registers of CRm 3.
const AARCH32_CRM3: [(u8, u8, &str); 4] = [
    (3, 2, "MVFR2_EL1"),
    (3, 4, "ID_PFR2_EL1"),
    (3, 5, "ID_DFR1_EL1"),
    (3, 6, "ID_MMFR5_EL1"),
];

/// The table: every AArch64 feature field the guest may see, and what it gets.
/// Fields of the AArch64 registers that are not here read as zero.
pub const FEATURES: &[Feature] = &[
    // ID_AA64PFR0_EL1
    f("EL0", ID_AA64PFR0_EL1, 0, PASS),
    f("EL1", ID_AA64PFR0_EL1, 4, PASS),
    // The guest runs at EL1 with no EL2 or EL3 of its own.
    f("EL2", ID_AA64PFR0_EL1, 8, HIDE),
    f("EL3", ID_AA64PFR0_EL1, 12, HIDE),
    signed("FP", ID_AA64PFR0_EL1, 16, PASS),
    signed("AdvSIMD", ID_AA64PFR0_EL1, 20, PASS),
    // The virtual CPU interface is GICv3's (the vGIC has no GICv4.1 features).
    f("GIC", ID_AA64PFR0_EL1, 24, Rule::Cap(1)),
    // Error records are the host's; no virtual RAS is offered.
    f("RAS", ID_AA64PFR0_EL1, 28, Rule::Hide(&[Trap::HcrTerr])),
    f(
        "SVE",
        ID_AA64PFR0_EL1,
        32,
        Rule::Enable(&[Control::CptrNoTz]),
    ),
    f("SEL2", ID_AA64PFR0_EL1, 36, HIDE),
    // MPAM2_EL2 is never programmed: no partitions for the guest.
    f("MPAM", ID_AA64PFR0_EL1, 40, HIDE),
    // The activity monitors count for the host.
    f("AMU", ID_AA64PFR0_EL1, 44, Rule::Hide(&[Trap::CptrTam])),
    f("DIT", ID_AA64PFR0_EL1, 48, PASS),
    f("RME", ID_AA64PFR0_EL1, 52, HIDE),
    f("CSV2", ID_AA64PFR0_EL1, 56, PASS),
    f("CSV3", ID_AA64PFR0_EL1, 60, PASS),
    // ID_AA64PFR1_EL1
    f("BT", ID_AA64PFR1_EL1, 0, PASS),
    f("SSBS", ID_AA64PFR1_EL1, 4, PASS),
    // Stage 2 maps guest RAM without allocation tags and HCR_EL2.ATA is 0.
    f("MTE", ID_AA64PFR1_EL1, 8, HIDE),
    f("RAS_frac", ID_AA64PFR1_EL1, 12, HIDE),
    f("MPAM_frac", ID_AA64PFR1_EL1, 16, HIDE),
    f(
        "SME",
        ID_AA64PFR1_EL1,
        24,
        Rule::Enable(&[Control::CptrNoTsm]),
    ),
    f("RNDR_trap", ID_AA64PFR1_EL1, 28, HIDE),
    f("CSV2_frac", ID_AA64PFR1_EL1, 32, PASS),
    // Superpriority interrupts need a vGIC with NMI support.
    f("NMI", ID_AA64PFR1_EL1, 36, HIDE),
    f("MTE_frac", ID_AA64PFR1_EL1, 40, HIDE),
    f("GCS", ID_AA64PFR1_EL1, 44, HIDE),
    f("THE", ID_AA64PFR1_EL1, 48, HIDE),
    f("MTEX", ID_AA64PFR1_EL1, 52, HIDE),
    f("DF2", ID_AA64PFR1_EL1, 56, HIDE),
    f("PFAR", ID_AA64PFR1_EL1, 60, HIDE),
    // ID_AA64ZFR0_EL1 and ID_AA64SMFR0_EL1: the SVE and SME subfeatures come
    // with SVE and SME (the traps are per extension, not per instruction).
    whole("ID_AA64ZFR0_EL1", ID_AA64ZFR0_EL1, SVE),
    whole("ID_AA64SMFR0_EL1", ID_AA64SMFR0_EL1, SME),
    // ID_AA64DFR0_EL1
    f("DebugVer", ID_AA64DFR0_EL1, 0, PASS),
    f("TraceVer", ID_AA64DFR0_EL1, 4, HIDE),
    // MDCR_EL2.HPMN gives the guest every counter.
    f("PMUVer", ID_AA64DFR0_EL1, 8, PASS),
    f("BRPs", ID_AA64DFR0_EL1, 12, PASS),
    f("PMSS", ID_AA64DFR0_EL1, 16, HIDE),
    f("WRPs", ID_AA64DFR0_EL1, 20, PASS),
    f("SEBEP", ID_AA64DFR0_EL1, 24, HIDE),
    f("CTX_CMPs", ID_AA64DFR0_EL1, 28, PASS),
    // MDCR_EL2.E2PB = 0 keeps the profiling buffer at EL2.
    f("PMSVer", ID_AA64DFR0_EL1, 32, HIDE),
    signed("DoubleLock", ID_AA64DFR0_EL1, 36, PASS),
    f("TraceFilt", ID_AA64DFR0_EL1, 40, HIDE),
    f("TraceBuffer", ID_AA64DFR0_EL1, 44, HIDE),
    signed("MTPMU", ID_AA64DFR0_EL1, 48, PASS),
    f("BRBE", ID_AA64DFR0_EL1, 52, HIDE),
    f("ExtTrcBuff", ID_AA64DFR0_EL1, 56, HIDE),
    f("HPMN0", ID_AA64DFR0_EL1, 60, HIDE),
    // ID_AA64ISAR0_EL1
    f("AES", ID_AA64ISAR0_EL1, 4, PASS),
    f("SHA1", ID_AA64ISAR0_EL1, 8, PASS),
    f("SHA2", ID_AA64ISAR0_EL1, 12, PASS),
    f("CRC32", ID_AA64ISAR0_EL1, 16, PASS),
    f("Atomic", ID_AA64ISAR0_EL1, 20, PASS),
    // HCR_EL2.TME stays 0: TSTART and friends are UNDEFINED.
    f("TME", ID_AA64ISAR0_EL1, 24, HIDE),
    f("RDM", ID_AA64ISAR0_EL1, 28, PASS),
    f("SHA3", ID_AA64ISAR0_EL1, 32, PASS),
    f("SM3", ID_AA64ISAR0_EL1, 36, PASS),
    f("SM4", ID_AA64ISAR0_EL1, 40, PASS),
    f("DP", ID_AA64ISAR0_EL1, 44, PASS),
    f("FHM", ID_AA64ISAR0_EL1, 48, PASS),
    f("TS", ID_AA64ISAR0_EL1, 52, PASS),
    f("TLB", ID_AA64ISAR0_EL1, 56, PASS),
    f("RNDR", ID_AA64ISAR0_EL1, 60, PASS),
    // ID_AA64ISAR1_EL1
    f("DPB", ID_AA64ISAR1_EL1, 0, PASS),
    f("APA", ID_AA64ISAR1_EL1, 4, PAUTH),
    f("API", ID_AA64ISAR1_EL1, 8, PAUTH),
    f("JSCVT", ID_AA64ISAR1_EL1, 12, PASS),
    f("FCMA", ID_AA64ISAR1_EL1, 16, PASS),
    f("LRCPC", ID_AA64ISAR1_EL1, 20, PASS),
    f("GPA", ID_AA64ISAR1_EL1, 24, PAUTH),
    f("GPI", ID_AA64ISAR1_EL1, 28, PAUTH),
    f("FRINTTS", ID_AA64ISAR1_EL1, 32, PASS),
    f("SB", ID_AA64ISAR1_EL1, 36, PASS),
    f("SPECRES", ID_AA64ISAR1_EL1, 40, PASS),
    f("BF16", ID_AA64ISAR1_EL1, 44, PASS),
    f("DGH", ID_AA64ISAR1_EL1, 48, PASS),
    f("I8MM", ID_AA64ISAR1_EL1, 52, PASS),
    f("XS", ID_AA64ISAR1_EL1, 56, PASS),
    // HCRX_EL2.EnALS/EnAS0/EnASR stay 0: LD64B and ST64B* are UNDEFINED.
    f("LS64", ID_AA64ISAR1_EL1, 60, HIDE),
    // ID_AA64ISAR2_EL1
    f("WFxT", ID_AA64ISAR2_EL1, 0, PASS),
    f("RPRES", ID_AA64ISAR2_EL1, 4, PASS),
    f("GPA3", ID_AA64ISAR2_EL1, 8, PAUTH),
    f("APA3", ID_AA64ISAR2_EL1, 12, PAUTH),
    f(
        "MOPS",
        ID_AA64ISAR2_EL1,
        16,
        Rule::Enable(&[Control::HcrxMscen]),
    ),
    f("BC", ID_AA64ISAR2_EL1, 20, PASS),
    f("PAC_frac", ID_AA64ISAR2_EL1, 24, PAUTH),
    f("CLRBHB", ID_AA64ISAR2_EL1, 28, PASS),
    f("SYSREG_128", ID_AA64ISAR2_EL1, 32, HIDE),
    f("SYSINSTR_128", ID_AA64ISAR2_EL1, 36, HIDE),
    f("PRFMSLC", ID_AA64ISAR2_EL1, 40, PASS),
    f("RPRFM", ID_AA64ISAR2_EL1, 48, PASS),
    f("CSSC", ID_AA64ISAR2_EL1, 52, PASS),
    f("LUT", ID_AA64ISAR2_EL1, 56, PASS),
    f("ATS1A", ID_AA64ISAR2_EL1, 60, HIDE),
    // ID_AA64MMFR0_EL1
    f("PARange", ID_AA64MMFR0_EL1, 0, PASS),
    f("ASIDBits", ID_AA64MMFR0_EL1, 4, PASS),
    f("BigEnd", ID_AA64MMFR0_EL1, 8, PASS),
    f("SNSMem", ID_AA64MMFR0_EL1, 12, PASS),
    f("BigEndEL0", ID_AA64MMFR0_EL1, 16, PASS),
    f("TGran16", ID_AA64MMFR0_EL1, 20, PASS),
    signed("TGran64", ID_AA64MMFR0_EL1, 24, PASS),
    signed("TGran4", ID_AA64MMFR0_EL1, 28, PASS),
    // Stage-2 granules: 0 reads "as the stage-1 field", which is true.
    f("TGran16_2", ID_AA64MMFR0_EL1, 32, PASS),
    f("TGran64_2", ID_AA64MMFR0_EL1, 36, PASS),
    f("TGran4_2", ID_AA64MMFR0_EL1, 40, PASS),
    f("ExS", ID_AA64MMFR0_EL1, 44, PASS),
    f("FGT", ID_AA64MMFR0_EL1, 56, HIDE),
    // 1: the self-synchronized counter reads; 2 adds EL2 controls.
    f("ECV", ID_AA64MMFR0_EL1, 60, Rule::Cap(1)),
    // ID_AA64MMFR1_EL1
    f("HAFDBS", ID_AA64MMFR1_EL1, 0, PASS),
    f("VMIDBits", ID_AA64MMFR1_EL1, 4, HIDE),
    f("VH", ID_AA64MMFR1_EL1, 8, HIDE),
    f("HPDS", ID_AA64MMFR1_EL1, 12, PASS),
    f("LO", ID_AA64MMFR1_EL1, 16, PASS),
    f("PAN", ID_AA64MMFR1_EL1, 20, PASS),
    f("SpecSEI", ID_AA64MMFR1_EL1, 24, PASS),
    f("XNX", ID_AA64MMFR1_EL1, 28, HIDE),
    f("TWED", ID_AA64MMFR1_EL1, 32, HIDE),
    f("ETS", ID_AA64MMFR1_EL1, 36, PASS),
    f("HCX", ID_AA64MMFR1_EL1, 40, HIDE),
    f("AFP", ID_AA64MMFR1_EL1, 44, PASS),
    f("nTLBPA", ID_AA64MMFR1_EL1, 48, PASS),
    f("TIDCP1", ID_AA64MMFR1_EL1, 52, PASS),
    f("CMOW", ID_AA64MMFR1_EL1, 56, PASS),
    f("ECBHB", ID_AA64MMFR1_EL1, 60, PASS),
    // ID_AA64MMFR2_EL1
    f("CnP", ID_AA64MMFR2_EL1, 0, PASS),
    f("UAO", ID_AA64MMFR2_EL1, 4, PASS),
    f("LSM", ID_AA64MMFR2_EL1, 8, PASS),
    f("IESB", ID_AA64MMFR2_EL1, 12, PASS),
    f("VARange", ID_AA64MMFR2_EL1, 16, PASS),
    f("CCIDX", ID_AA64MMFR2_EL1, 20, PASS),
    f("NV", ID_AA64MMFR2_EL1, 24, HIDE),
    f("ST", ID_AA64MMFR2_EL1, 28, PASS),
    f("AT", ID_AA64MMFR2_EL1, 32, PASS),
    f("IDS", ID_AA64MMFR2_EL1, 36, PASS),
    f("FWB", ID_AA64MMFR2_EL1, 40, HIDE),
    f("TTL", ID_AA64MMFR2_EL1, 48, PASS),
    f("BBM", ID_AA64MMFR2_EL1, 52, PASS),
    f("EVT", ID_AA64MMFR2_EL1, 56, HIDE),
    f("E0PD", ID_AA64MMFR2_EL1, 60, PASS),
    // ID_AA64MMFR3_EL1
    f(
        "TCRX",
        ID_AA64MMFR3_EL1,
        0,
        Rule::Enable(&[Control::HcrxTcr2En]),
    ),
    f(
        "SCTLRX",
        ID_AA64MMFR3_EL1,
        4,
        Rule::Enable(&[Control::HcrxSctlr2En]),
    ),
    f("S1PIE", ID_AA64MMFR3_EL1, 8, HIDE),
    f("S2PIE", ID_AA64MMFR3_EL1, 12, HIDE),
    f("S1POE", ID_AA64MMFR3_EL1, 16, HIDE),
    f("S2POE", ID_AA64MMFR3_EL1, 20, HIDE),
    f("AIE", ID_AA64MMFR3_EL1, 24, HIDE),
    f("MEC", ID_AA64MMFR3_EL1, 28, HIDE),
    f("D128", ID_AA64MMFR3_EL1, 32, HIDE),
    f("D128_2", ID_AA64MMFR3_EL1, 36, HIDE),
    f("SNERR", ID_AA64MMFR3_EL1, 40, HIDE),
    f("ANERR", ID_AA64MMFR3_EL1, 44, HIDE),
    f("SDERR", ID_AA64MMFR3_EL1, 52, HIDE),
    f("ADERR", ID_AA64MMFR3_EL1, 56, HIDE),
    f("Spec_FPACC", ID_AA64MMFR3_EL1, 60, PASS),
];

/// The hardware's ID register group, as read at EL2 (unallocated encodings
/// read zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRegs(pub [u64; GROUP_LEN]);

impl Default for IdRegs {
    fn default() -> Self {
        IdRegs([0; GROUP_LEN])
    }
}

impl IdRegs {
    /// The value of `reg`.
    pub fn get(&self, reg: IdReg) -> u64 {
        self.0.get(reg.index()).copied().unwrap_or(0)
    }

    /// Sets the value of `reg`.
    pub fn set(&mut self, reg: IdReg, v: u64) {
        if let Some(r) = self.0.get_mut(reg.index()) {
            *r = v;
        }
    }

    /// Field `shift + 3 : shift` of `reg`.
    pub fn field(&self, reg: IdReg, shift: u8) -> u8 {
        ((self.get(reg) >> (shift & 63)) & 0xf) as u8
    }
}

/// The EL2 controls the hypervisor sets for the features the guest is given,
/// and the traps for those it is not, as register bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct El2Controls {
    /// HCR_EL2 bits to set.
    pub hcr: u64,
    /// HCRX_EL2's value; written only when [`El2Controls::hcx`].
    pub hcrx: u64,
    /// The hardware has FEAT_HCX (ID_AA64MMFR1_EL1.HCX != 0): HCRX_EL2 exists.
    pub hcx: bool,
    /// CPTR_EL2 bits (E2H = 0 layout) to clear from "trap everything".
    pub cptr_clear: u64,
    /// CPTR_EL2 bits (E2H = 0 layout) to set.
    pub cptr_set: u64,
}

/// HCR_EL2 bit positions.
pub mod hcr {
    /// API, bit 41.
    pub const API: u64 = 1 << 41;
    /// APK, bit 40.
    pub const APK: u64 = 1 << 40;
    /// TERR, bit 36.
    pub const TERR: u64 = 1 << 36;
    /// TID3, bit 18: trap the ID register group.
    pub const TID3: u64 = 1 << 18;
}

/// HCRX_EL2 bit positions (FEAT_HCX).
pub mod hcrx {
    /// SCTLR2En, bit 15.
    pub const SCTLR2EN: u64 = 1 << 15;
    /// TCR2En, bit 14.
    pub const TCR2EN: u64 = 1 << 14;
    /// MSCEn, bit 11.
    pub const MSCEN: u64 = 1 << 11;
    /// MCE2, bit 10.
    pub const MCE2: u64 = 1 << 10;
}

/// CPTR_EL2 bit positions (E2H = 0).
pub mod cptr {
    /// TAM, bit 30.
    pub const TAM: u64 = 1 << 30;
    /// TSM, bit 12.
    pub const TSM: u64 = 1 << 12;
    /// TZ, bit 8.
    pub const TZ: u64 = 1 << 8;
}

impl Control {
    fn apply(self, c: &mut El2Controls) {
        match self {
            Control::HcrApi => c.hcr |= hcr::API,
            Control::HcrApk => c.hcr |= hcr::APK,
            Control::HcrxMscen => c.hcrx |= hcrx::MSCEN,
            Control::HcrxTcr2En => c.hcrx |= hcrx::TCR2EN,
            Control::HcrxSctlr2En => c.hcrx |= hcrx::SCTLR2EN,
            Control::CptrNoTz => c.cptr_clear |= cptr::TZ,
            Control::CptrNoTsm => c.cptr_clear |= cptr::TSM,
        }
    }
}

impl Trap {
    fn apply(self, c: &mut El2Controls) {
        match self {
            Trap::CptrTam => c.cptr_set |= cptr::TAM,
            Trap::HcrTerr => c.hcr |= hcr::TERR,
        }
    }
}

/// The "not implemented" value of a field.
fn absent(signed: bool) -> u8 {
    if signed {
        0xf
    } else {
        0
    }
}

/// Whether a field's value says the feature is there.
fn present(v: u8, signed: bool) -> bool {
    v != absent(signed)
}

/// The smaller of two field values, signed fields compared as signed.
fn min_field(a: u8, b: u8, signed: bool) -> u8 {
    if signed {
        let s = |v: u8| ((v << 4) as i8) >> 4;
        if s(a) <= s(b) {
            a
        } else {
            b
        }
    } else {
        a.min(b)
    }
}

/// What the guest reads from the ID register group, and the EL2 controls
/// that go with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestView {
    regs: IdRegs,
    /// The EL2 controls to set.
    pub controls: El2Controls,
}

impl GuestView {
    /// Decides every field of `host` by [`FEATURES`].
    pub fn new(host: &IdRegs) -> GuestView {
        let hcx = host.field(ID_AA64MMFR1_EL1, 40) != 0;
        let mut regs = IdRegs::default();
        let mut controls = El2Controls {
            hcx,
            ..El2Controls::default()
        };
        for &(crm, op2, _) in AARCH32.iter().chain(AARCH32_CRM3.iter()) {
            if let Some(r) = IdReg::new(crm, op2) {
                regs.set(r, host.get(r));
            }
        }
        // Two passes: `Follows` rows read the guest's value of another field.
        for pass in 0..2 {
            for feat in FEATURES {
                let follows = matches!(feat.rule, Rule::Follows(..));
                if follows != (pass == 1) {
                    continue;
                }
                let (value, width_mask) = if feat.width >= 64 {
                    (host.get(feat.reg), u64::MAX)
                } else {
                    (u64::from(host.field(feat.reg, feat.shift)), 0xf)
                };
                let hw = (value & 0xf) as u8;
                let guest: u64 = match feat.rule {
                    Rule::Pass => value,
                    Rule::Cap(max) => u64::from(min_field(hw, max, feat.signed)),
                    Rule::Hide(traps) => {
                        if present(hw, feat.signed) {
                            for t in traps {
                                t.apply(&mut controls);
                            }
                        }
                        u64::from(absent(feat.signed))
                    }
                    Rule::Enable(needs) => {
                        if needs.iter().any(|c| c.in_hcrx()) && !hcx {
                            u64::from(absent(feat.signed))
                        } else {
                            if present(hw, feat.signed) {
                                for c in needs {
                                    c.apply(&mut controls);
                                }
                            }
                            value
                        }
                    }
                    Rule::Follows(reg, shift) => {
                        if regs.field(reg, shift) != 0 {
                            value
                        } else {
                            0
                        }
                    }
                };
                let shift = u32::from(feat.shift & 63);
                let mask = width_mask << shift;
                let old = regs.get(feat.reg);
                regs.set(feat.reg, (old & !mask) | ((guest << shift) & mask));
            }
        }
        GuestView { regs, controls }
    }

    /// The guest's value of the ID register at (CRm, op2) of the TID3 group;
    /// `None` outside the group. Unallocated encodings read zero.
    pub fn read(&self, crm: u8, op2: u8) -> Option<u64> {
        IdReg::new(crm, op2).map(|r| self.regs.get(r))
    }

    /// The guest's value of `reg`.
    pub fn get(&self, reg: IdReg) -> u64 {
        self.regs.get(reg)
    }
}

/// The register a trapped MRS names, if it is in the TID3 group: (op0, op1,
/// CRn, CRm, op2) = (3, 0, 0, 1..=7, 0..=7).
pub fn tid3_register(encoding: (u8, u8, u8, u8, u8)) -> Option<IdReg> {
    match encoding {
        (3, 0, 0, crm, op2) => IdReg::new(crm, op2),
        _ => None,
    }
}

#[cfg(test)]
mod tests;

//! The SGI generation registers of the GICv3 CPU interface (IHI 0069,
//! ICC_SGI0R_EL1, ICC_SGI1R_EL1 and ICC_ASGI1R_EL1, which share one layout):
//! what a written value asks for, and which groups each register may generate.
//!
//! EL1 writes to all three trap to EL2 while HCR_EL2.IMO (SGI1R, ASGI1R) or
//! HCR_EL2.FMO (SGI0R) is set, whatever ICH_HCR_EL2 says (IHI 0069, the
//! registers' "Accessibility" pseudocode); reads are UNDEFINED at EL1 and never
//! reach EL2. The hypervisor sets both, so these are the guest's only ICC_*
//! accesses that trap: ICH_HCR_EL2.TC, TALL0, TALL1 and TDIR stay clear, and
//! ICC_SRE_EL2.Enable is set, so every other ICC_* access reaches the hardware's
//! virtual CPU interface (ICV_*).

/// One of the three SGI generation registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SgiRegister {
    /// ICC_SGI0R_EL1 (S3_0_C12_C11_7): Group 0 SGIs.
    Sgi0r,
    /// ICC_SGI1R_EL1 (S3_0_C12_C11_5): Group 1 SGIs of the current Security state.
    Sgi1r,
    /// ICC_ASGI1R_EL1 (S3_0_C12_C11_6): Group 1 SGIs of the other Security state.
    Asgi1r,
}

impl SgiRegister {
    /// The register with encoding (op0, op1, CRn, CRm, op2), if it is one of the three.
    pub fn from_encoding(enc: (u8, u8, u8, u8, u8)) -> Option<SgiRegister> {
        match enc {
            (3, 0, 12, 11, 7) => Some(SgiRegister::Sgi0r),
            (3, 0, 12, 11, 5) => Some(SgiRegister::Sgi1r),
            (3, 0, 12, 11, 6) => Some(SgiRegister::Asgi1r),
            _ => None,
        }
    }

    /// Whether a write generates the SGI at a target PE where it is configured
    /// in Group 1 (`group1`) or Group 0, with one Security state
    /// (GICD_CTLR.DS = 1), from Non-secure EL1. IHI 0069, table "Forwarding an SGI
    /// to a target PE" and its note: ICC_SGI0R_EL1 generates Group 0 SGIs only;
    /// ICC_SGI1R_EL1 generates the SGI whichever group it is in; ICC_ASGI1R_EL1,
    /// with no other Security state to aim at, generates Group 0 SGIs only.
    pub fn forwards(self, group1: bool) -> bool {
        match self {
            SgiRegister::Sgi1r => true,
            SgiRegister::Sgi0r | SgiRegister::Asgi1r => !group1,
        }
    }
}

/// A written ICC_SGI*R_EL1 value, field by field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SgiRequest {
    /// INTID \[27:24\]: the SGI (0..=15).
    pub intid: u32,
    /// IRM \[40\]: every PE but the sender (the affinity fields are then RES0).
    pub irm: bool,
    /// Aff3 \[55:48\].
    pub aff3: u8,
    /// Aff2 \[39:32\].
    pub aff2: u8,
    /// Aff1 \[23:16\].
    pub aff1: u8,
    /// RS \[47:44\]: TargetList\[n\] names Aff0 = RS * 16 + n.
    pub rs: u8,
    /// TargetList \[15:0\].
    pub target_list: u16,
}

impl SgiRequest {
    /// The fields of `value` (RES0 bits ignored).
    pub fn decode(value: u64) -> SgiRequest {
        SgiRequest {
            intid: ((value >> 24) & 0xf) as u32,
            irm: value & (1 << 40) != 0,
            aff3: (value >> 48) as u8,
            aff2: (value >> 32) as u8,
            aff1: (value >> 16) as u8,
            rs: ((value >> 44) & 0xf) as u8,
            target_list: value as u16,
        }
    }

    /// The MPIDR affinities (Aff3 in \[39:32\], as `Vgic` keeps them) named by the
    /// target list, when IRM is 0.
    pub fn target_affinities(&self) -> impl Iterator<Item = u64> + '_ {
        let base = (u64::from(self.aff3) << 32)
            | (u64::from(self.aff2) << 16)
            | (u64::from(self.aff1) << 8);
        (0..16u64)
            .filter(|b| self.target_list & (1 << b) != 0)
            .map(move |b| base | (u64::from(self.rs) * 16 + b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_name_the_three_registers() {
        assert_eq!(
            SgiRegister::from_encoding((3, 0, 12, 11, 7)),
            Some(SgiRegister::Sgi0r)
        );
        assert_eq!(
            SgiRegister::from_encoding((3, 0, 12, 11, 5)),
            Some(SgiRegister::Sgi1r)
        );
        assert_eq!(
            SgiRegister::from_encoding((3, 0, 12, 11, 6)),
            Some(SgiRegister::Asgi1r)
        );
        // ICC_DIR_EL1 and ICC_RPR_EL1 share CRm 11 but are not SGI registers.
        assert_eq!(SgiRegister::from_encoding((3, 0, 12, 11, 1)), None);
        assert_eq!(SgiRegister::from_encoding((3, 0, 12, 11, 3)), None);
    }

    #[test]
    fn decode_takes_every_field() {
        let v = (0xaau64 << 48) | (0x5 << 44) | (0x33 << 32) | (0x9 << 24) | (0x22 << 16) | 0x8001;
        assert_eq!(
            SgiRequest::decode(v),
            SgiRequest {
                intid: 9,
                irm: false,
                aff3: 0xaa,
                aff2: 0x33,
                aff1: 0x22,
                rs: 5,
                target_list: 0x8001
            }
        );
        assert!(SgiRequest::decode(1 << 40).irm);
    }

    #[test]
    fn decode_ignores_res0_bits() {
        let res0 = (0xffu64 << 56) | (0b111 << 41) | (0xf << 28);
        assert_eq!(SgiRequest::decode(res0 | 1), SgiRequest::decode(1));
    }

    #[test]
    fn target_list_with_range_selector_names_aff0_values() {
        let r = SgiRequest::decode((1 << 44) | (0x2 << 32) | (0x3 << 16) | 0b1000_0000_0000_0101);
        let affs: Vec<u64> = r.target_affinities().collect();
        assert_eq!(affs, [0x0002_0310, 0x0002_0312, 0x0002_031f]);
    }

    #[test]
    fn group_forwarding_follows_the_register() {
        assert!(SgiRegister::Sgi1r.forwards(true));
        assert!(SgiRegister::Sgi1r.forwards(false));
        assert!(SgiRegister::Sgi0r.forwards(false));
        assert!(!SgiRegister::Sgi0r.forwards(true));
        assert!(SgiRegister::Asgi1r.forwards(false));
        assert!(!SgiRegister::Asgi1r.forwards(true));
    }
}

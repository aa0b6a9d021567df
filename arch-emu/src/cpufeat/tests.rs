//! The table against the ID registers of real cores (the reset values their
//! Technical Reference Manuals list) and of QEMU 10's `-cpu max`.

use super::*;

/// ID registers from a list of (register, value); the rest read zero.
fn regs(values: &[(IdReg, u64)]) -> IdRegs {
    let mut r = IdRegs::default();
    for &(reg, v) in values {
        r.set(reg, v);
    }
    r
}

fn field(v: u64, shift: u32) -> u64 {
    (v >> shift) & 0xf
}

/// Cortex-A53 r0p4 TRM, B2 "AArch64 identification registers" (GIC CPU
/// interface disabled, so ID_AA64PFR0_EL1.GIC = 0).
fn cortex_a53() -> IdRegs {
    regs(&[
        (ID_AA64PFR0_EL1, 0x0000_0000_0000_2222),
        (ID_AA64DFR0_EL1, 0x0000_0000_1030_5106),
        (ID_AA64ISAR0_EL1, 0x0000_0000_0001_1120),
        (ID_AA64MMFR0_EL1, 0x0000_0000_0000_1122),
    ])
}

/// Cortex-A72 r0p3 TRM, 4.3 "AArch64 register summary".
fn cortex_a72() -> IdRegs {
    regs(&[
        (ID_AA64PFR0_EL1, 0x0000_0000_0000_2222),
        (ID_AA64DFR0_EL1, 0x0000_0000_1030_5106),
        (ID_AA64ISAR0_EL1, 0x0000_0000_0001_1120),
        (ID_AA64MMFR0_EL1, 0x0000_0000_0000_1124),
    ])
}

/// Cortex-A76 r4p1 TRM, B2.4 "AArch64 registers by functional group" (GIC = 1).
fn cortex_a76() -> IdRegs {
    regs(&[
        (ID_AA64PFR0_EL1, 0x1100_0000_1111_1112),
        (ID_AA64PFR1_EL1, 0x0000_0000_0000_0010),
        (ID_AA64DFR0_EL1, 0x0000_0000_1030_5408),
        (ID_AA64ISAR0_EL1, 0x0000_1000_1021_1120),
        (ID_AA64ISAR1_EL1, 0x0000_0000_0010_0001),
        (ID_AA64MMFR0_EL1, 0x0000_0000_0010_1122),
        (ID_AA64MMFR1_EL1, 0x0000_0000_1021_2122),
        (ID_AA64MMFR2_EL1, 0x0000_0000_0000_1011),
    ])
}

/// Neoverse N1 r4p1 TRM, B2.4 (GIC = 1).
fn neoverse_n1() -> IdRegs {
    regs(&[
        (ID_AA64PFR0_EL1, 0x1100_0000_1111_1112),
        (ID_AA64PFR1_EL1, 0x0000_0000_0000_0020),
        (ID_AA64DFR0_EL1, 0x0000_0001_1030_5408),
        (ID_AA64ISAR0_EL1, 0x0000_1000_1021_1120),
        (ID_AA64ISAR1_EL1, 0x0000_0000_0010_0001),
        (ID_AA64MMFR0_EL1, 0x0000_0000_0010_1125),
        (ID_AA64MMFR1_EL1, 0x0000_0000_1021_2122),
        (ID_AA64MMFR2_EL1, 0x0000_0000_0000_1011),
    ])
}

/// Neoverse N2 r0p3 TRM, B.5 "AArch64 ID registers" (GIC = 1): SVE2, MTE2,
/// BTI, PAuth, RNG, AMU, MPAM, RAS, SPE.
fn neoverse_n2() -> IdRegs {
    regs(&[
        (ID_AA64PFR0_EL1, 0x1201_1111_2111_1112),
        (ID_AA64PFR1_EL1, 0x0000_0000_0000_0221),
        (ID_AA64ZFR0_EL1, 0x0000_1101_0011_0021),
        (ID_AA64DFR0_EL1, 0x0000_11f2_1030_5619),
        (ID_AA64ISAR0_EL1, 0x1221_1111_1021_2120),
        (ID_AA64ISAR1_EL1, 0x0011_1111_0121_1052),
        (ID_AA64MMFR0_EL1, 0x0000_0222_0010_1125),
        (ID_AA64MMFR1_EL1, 0x0000_0000_1021_2122),
        (ID_AA64MMFR2_EL1, 0x1221_0111_1210_1011),
    ])
}

/// QEMU 10.0 `virt -cpu max,pauth-impdef=on`, as its gdbstub reads them at reset
/// (ID_AA64PFR0_EL1, which the gdbstub does not show, as the hypervisor read it
/// at boot).
fn qemu_max() -> IdRegs {
    regs(&[
        (ID_AA64PFR0_EL1, QEMU_MAX_PFR0),
        (ID_AA64PFR1_EL1, 0x0000_0010_0100_0121),
        (ID_AA64ZFR0_EL1, 0x0110_1101_0021_0021),
        (ID_AA64SMFR0_EL1, 0x80f1_00fd_0000_0000),
        (ID_AA64DFR0_EL1, 0x1000_0000_1030_560a),
        (ID_AA64ISAR0_EL1, 0x1221_1111_1021_2120),
        (ID_AA64ISAR1_EL1, 0x0111_2111_1021_1502),
        (ID_AA64ISAR2_EL1, 0x0000_0000_0011_0012),
        (ID_AA64MMFR0_EL1, 0x2100_0323_1020_1126),
        (ID_AA64MMFR1_EL1, 0x0110_1120_1031_2122),
        (ID_AA64MMFR2_EL1, 0x1221_0111_1201_1011),
        (ID_AA64MMFR3_EL1, 0x1000_0000_0000_0000),
    ])
}

const QEMU_MAX_PFR0: u64 = 0x1301_0011_2111_0222;

#[test]
fn every_field_is_decided_once() {
    for (i, a) in FEATURES.iter().enumerate() {
        let mask_a = if a.width >= 64 {
            u64::MAX
        } else {
            0xf << a.shift
        };
        for b in &FEATURES[i + 1..] {
            let mask_b = if b.width >= 64 {
                u64::MAX
            } else {
                0xf << b.shift
            };
            assert!(
                a.reg != b.reg || mask_a & mask_b == 0,
                "{} and {} overlap",
                a.name,
                b.name
            );
        }
    }
}

#[test]
fn mops_is_given_with_mscen_when_hcx_exists() {
    let v = GuestView::new(&qemu_max());
    assert_eq!(field(v.get(ID_AA64ISAR2_EL1), 16), 1);
    assert!(v.controls.hcx);
    assert_eq!(v.controls.hcrx & hcrx::MSCEN, hcrx::MSCEN);
    // Its exceptions stay at EL1, where the guest restarts the copy.
    assert_eq!(v.controls.hcrx & hcrx::MCE2, 0);
}

#[test]
fn mops_is_hidden_without_hcx() {
    let mut host = qemu_max();
    let mmfr1 = host.get(ID_AA64MMFR1_EL1) & !(0xf << 40);
    host.set(ID_AA64MMFR1_EL1, mmfr1);
    let v = GuestView::new(&host);
    assert_eq!(field(v.get(ID_AA64ISAR2_EL1), 16), 0);
    assert!(!v.controls.hcx);
    assert_eq!(v.controls.hcrx, 0);
}

#[test]
fn pauth_is_given_with_api_and_apk() {
    let v = GuestView::new(&qemu_max());
    let isar1 = v.get(ID_AA64ISAR1_EL1);
    // pauth-impdef=on: the IMPLEMENTATION DEFINED algorithm (API, GPI), FPACCOMBINED.
    assert_eq!(field(isar1, 4), 0, "APA");
    assert_eq!(field(isar1, 8), 5, "API");
    assert_eq!(field(isar1, 28), 1, "GPI");
    assert_eq!(v.controls.hcr & (hcr::API | hcr::APK), hcr::API | hcr::APK);
}

#[test]
fn a_core_without_pauth_sets_no_pauth_control() {
    let v = GuestView::new(&cortex_a76());
    assert_eq!(v.controls.hcr & (hcr::API | hcr::APK), 0);
}

#[test]
fn mte_and_nmi_are_hidden_bti_and_sme_given() {
    let v = GuestView::new(&qemu_max());
    let pfr1 = v.get(ID_AA64PFR1_EL1);
    assert_eq!(field(pfr1, 0), 1, "BT");
    assert_eq!(field(pfr1, 4), 2, "SSBS");
    assert_eq!(field(pfr1, 8), 0, "MTE");
    assert_eq!(field(pfr1, 24), 1, "SME");
    assert_eq!(field(pfr1, 36), 0, "NMI");
    assert_eq!(v.get(ID_AA64SMFR0_EL1), 0x80f1_00fd_0000_0000);
    assert_eq!(v.controls.cptr_clear & cptr::TSM, cptr::TSM);
}

#[test]
fn sve_and_its_subfeatures_are_given_together() {
    let v = GuestView::new(&neoverse_n2());
    assert_eq!(field(v.get(ID_AA64PFR0_EL1), 32), 1);
    assert_eq!(v.get(ID_AA64ZFR0_EL1), 0x0000_1101_0011_0021);
    assert_eq!(v.controls.cptr_clear & cptr::TZ, cptr::TZ);
}

#[test]
fn sve_subfeatures_read_zero_without_sve() {
    let mut host = neoverse_n2();
    host.set(ID_AA64PFR0_EL1, host.get(ID_AA64PFR0_EL1) & !(0xf << 32));
    let v = GuestView::new(&host);
    assert_eq!(v.get(ID_AA64ZFR0_EL1), 0);
    assert_eq!(v.controls.cptr_clear & cptr::TZ, 0);
}

#[test]
fn n2_amu_mpam_ras_spe_and_mte_are_hidden_and_trapped() {
    let v = GuestView::new(&neoverse_n2());
    let pfr0 = v.get(ID_AA64PFR0_EL1);
    assert_eq!(field(pfr0, 28), 0, "RAS");
    assert_eq!(field(pfr0, 40), 0, "MPAM");
    assert_eq!(field(pfr0, 44), 0, "AMU");
    assert_eq!(field(v.get(ID_AA64PFR1_EL1), 8), 0, "MTE");
    assert_eq!(field(v.get(ID_AA64DFR0_EL1), 32), 0, "PMSVer");
    assert_eq!(v.controls.cptr_set & cptr::TAM, cptr::TAM);
    assert_eq!(v.controls.hcr & hcr::TERR, hcr::TERR);
    // Given: RNG, BTI, the rest of the instruction set.
    assert_eq!(field(v.get(ID_AA64ISAR0_EL1), 60), 1, "RNDR");
    assert_eq!(field(v.get(ID_AA64PFR1_EL1), 0), 1, "BT");
    assert_eq!(v.get(ID_AA64ISAR0_EL1), 0x1221_1111_1021_2120);
}

#[test]
fn a_core_without_amu_or_ras_sets_no_trap_for_them() {
    let v = GuestView::new(&cortex_a53());
    assert_eq!(v.controls.cptr_set, 0);
    assert_eq!(v.controls.hcr & hcr::TERR, 0);
}

#[test]
fn the_guest_sees_no_el2_or_el3() {
    for host in [
        cortex_a53(),
        cortex_a72(),
        cortex_a76(),
        neoverse_n1(),
        neoverse_n2(),
        qemu_max(),
    ] {
        let pfr0 = GuestView::new(&host).get(ID_AA64PFR0_EL1);
        assert_eq!(pfr0 & 0xff00, 0);
        assert_eq!(pfr0 & 0xff, host.get(ID_AA64PFR0_EL1) & 0xff);
    }
}

#[test]
fn signed_fields_keep_their_meaning() {
    // A53 without FP/AdvSIMD... as configured: FP = AdvSIMD = 0 ("implemented").
    let v = GuestView::new(&cortex_a53());
    assert_eq!(field(v.get(ID_AA64PFR0_EL1), 16), 0);
    assert_eq!(field(v.get(ID_AA64PFR0_EL1), 20), 0);
    // Not implemented (0xf) stays so.
    let mut host = cortex_a53();
    host.set(ID_AA64PFR0_EL1, host.get(ID_AA64PFR0_EL1) | 0xff_0000);
    let v = GuestView::new(&host);
    assert_eq!(field(v.get(ID_AA64PFR0_EL1), 16), 0xf);
    assert_eq!(field(v.get(ID_AA64PFR0_EL1), 20), 0xf);
    // TGran4 / TGran64 = 0 means supported; QEMU's TGran64 = 0 too.
    let mmfr0 = GuestView::new(&qemu_max()).get(ID_AA64MMFR0_EL1);
    assert_eq!(field(mmfr0, 24), 0, "TGran64");
    assert_eq!(field(mmfr0, 28), 1, "TGran4 (52-bit)");
}

#[test]
fn a_signed_hidden_field_reads_not_implemented() {
    assert_eq!(absent(true), 0xf);
    assert_eq!(min_field(0xf, 1, true), 0xf);
    assert_eq!(min_field(1, 0, true), 0);
    assert_eq!(min_field(3, 1, false), 1);
}

#[test]
fn ecv_and_gic_are_capped() {
    let mmfr0 = GuestView::new(&qemu_max()).get(ID_AA64MMFR0_EL1);
    assert_eq!(field(mmfr0, 60), 1, "ECV");
    assert_eq!(field(mmfr0, 56), 0, "FGT");
    let mut host = cortex_a76();
    host.set(ID_AA64PFR0_EL1, host.get(ID_AA64PFR0_EL1) | (3 << 24));
    assert_eq!(field(GuestView::new(&host).get(ID_AA64PFR0_EL1), 24), 1);
}

#[test]
fn older_cores_pass_through_except_el2_el3_and_ras() {
    for host in [cortex_a53(), cortex_a72()] {
        let v = GuestView::new(&host);
        assert_eq!(v.get(ID_AA64ISAR0_EL1), host.get(ID_AA64ISAR0_EL1));
        assert_eq!(v.get(ID_AA64MMFR0_EL1), host.get(ID_AA64MMFR0_EL1));
        assert_eq!(v.get(ID_AA64DFR0_EL1), host.get(ID_AA64DFR0_EL1));
        assert_eq!(v.get(ID_AA64PFR0_EL1), host.get(ID_AA64PFR0_EL1) & !0xff00);
    }
    let v = GuestView::new(&neoverse_n1());
    assert_eq!(v.get(ID_AA64PFR0_EL1), 0x1100_0000_0111_0012);
    assert_eq!(v.get(ID_AA64MMFR1_EL1), 0x0000_0000_0021_2002);
}

#[test]
fn hypervisor_only_memory_features_are_hidden() {
    let v = GuestView::new(&qemu_max());
    let mmfr1 = v.get(ID_AA64MMFR1_EL1);
    assert_eq!(field(mmfr1, 8), 0, "VH");
    assert_eq!(field(mmfr1, 40), 0, "HCX");
    let mmfr2 = v.get(ID_AA64MMFR2_EL1);
    assert_eq!(field(mmfr2, 24), 0, "NV");
    assert_eq!(field(mmfr2, 40), 0, "FWB");
    assert_eq!(field(mmfr2, 56), 0, "EVT");
}

#[test]
fn fields_the_table_does_not_name_read_zero() {
    let host = regs(&[
        (ID_AA64PFR2_EL1, 0x111),
        (ID_AA64ISAR3_EL1, 0x1),
        (ID_AA64MMFR4_EL1, 0x10),
    ]);
    let v = GuestView::new(&host);
    assert_eq!(v.get(ID_AA64PFR2_EL1), 0);
    assert_eq!(v.get(ID_AA64ISAR3_EL1), 0);
    assert_eq!(v.get(ID_AA64MMFR4_EL1), 0);
    // ID_AA64ISAR2_EL1 bits 47:44 are named by no field.
    let v = GuestView::new(&regs(&[(ID_AA64ISAR2_EL1, 0xf << 44)]));
    assert_eq!(v.get(ID_AA64ISAR2_EL1), 0);
}

#[test]
fn aarch32_registers_pass_and_unallocated_encodings_read_zero() {
    let mut host = IdRegs::default();
    for (i, r) in host.0.iter_mut().enumerate() {
        *r = 0x1000 + i as u64;
    }
    let v = GuestView::new(&host);
    assert_eq!(v.read(1, 0), Some(0x1000), "ID_PFR0_EL1");
    assert_eq!(v.read(3, 6), Some(0x1000 + 2 * 8 + 6), "ID_MMFR5_EL1");
    assert_eq!(v.read(3, 3), Some(0), "unallocated");
    assert_eq!(v.read(3, 7), Some(0), "unallocated");
    assert_eq!(v.read(4, 3), Some(0), "unallocated");
    assert_eq!(v.read(5, 3), Some(0), "unallocated");
    assert_eq!(v.read(7, 7), Some(0), "unallocated");
    assert_eq!(v.read(0, 0), None);
    assert_eq!(v.read(8, 0), None);
    assert_eq!(v.read(4, 8), None);
}

#[test]
fn tid3_group_is_recognised_by_encoding() {
    assert_eq!(tid3_register((3, 0, 0, 6, 2)), Some(ID_AA64ISAR2_EL1));
    assert_eq!(tid3_register((3, 0, 0, 1, 0)), IdReg::new(1, 0));
    // MIDR_EL1 (CRm 0) and anything with op1 != 0 are not in the group.
    assert_eq!(tid3_register((3, 0, 0, 0, 0)), None);
    assert_eq!(tid3_register((3, 1, 0, 4, 0)), None);
    assert_eq!(tid3_register((3, 0, 1, 4, 0)), None);
}

#[test]
fn qemu_max_guest_view() {
    let v = GuestView::new(&qemu_max());
    assert_eq!(v.get(ID_AA64ISAR0_EL1), 0x1221_1111_1021_2120);
    assert_eq!(v.get(ID_AA64ISAR2_EL1), 0x0000_0000_0011_0012);
    // EL2, RAS and SEL2 hidden.
    assert_eq!(v.get(ID_AA64PFR0_EL1), 0x1301_0001_0111_0022);
    assert_eq!(v.controls.hcr, hcr::API | hcr::APK | hcr::TERR);
    assert_eq!(v.controls.hcrx, hcrx::MSCEN);
    assert_eq!(v.get(ID_AA64PFR0_EL1) & (0xf << 32), 1 << 32, "SVE");
    assert_eq!(field(v.get(ID_AA64PFR0_EL1), 28), 0, "RAS");
    assert_eq!(field(v.get(ID_AA64PFR0_EL1), 36), 0, "SEL2");
    assert_eq!(v.get(ID_AA64ZFR0_EL1), 0x0110_1101_0021_0021);
    assert_eq!(field(v.get(ID_AA64DFR0_EL1), 60), 0, "HPMN0");
    assert_eq!(field(v.get(ID_AA64DFR0_EL1), 8), 6, "PMUVer");
}

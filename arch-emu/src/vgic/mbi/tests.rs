use super::super::*;
use super::*;

const MPIDRS: [u64; 2] = [0x0, 0x1];
const RANGE: MbiRange = MbiRange {
    first: 64,
    count: 32,
};
const UART: u32 = 33;

/// A distributor with 64 SPIs (INTID 32..96), the MBI range 64..96 and both
/// groups enabled, every SPI group 1 and enabled, as Linux leaves it.
fn vgic() -> Vgic {
    let mut g = Vgic::new(&MPIDRS, 64);
    assert!(g.set_mbi_range(RANGE));
    g.gicd_write(0x0, 4, 0x12);
    for r in 1..3u64 {
        g.gicd_write(0x80 + r * 4, 4, 0xffff_ffff);
        g.gicd_write(0x100 + r * 4, 4, 0xffff_ffff);
    }
    g
}

fn pending(g: &mut Vgic, intid: u32) -> bool {
    g.gicd_read(0x200 + u64::from(intid / 32) * 4, 4) & (1 << (intid % 32)) != 0
}

fn any_spi_pending(g: &mut Vgic) -> bool {
    (32..96).any(|i| pending(g, i))
}

#[test]
fn typer_advertises_mbis_and_no_lpis_only_with_a_range() {
    let mut g = vgic();
    let t = g.gicd_read(0x4, 4);
    assert_ne!(t & TYPER_MBIS, 0);
    assert_eq!(t & TYPER_LPIS, 0);
    let mut plain = Vgic::new(&MPIDRS, 64);
    assert_eq!(plain.gicd_read(0x4, 4) & (TYPER_MBIS | TYPER_LPIS), 0);
}

#[test]
fn a_range_outside_the_implemented_spis_is_refused() {
    let mut g = Vgic::new(&MPIDRS, 64);
    for bad in [
        MbiRange {
            first: 16,
            count: 8,
        },
        MbiRange {
            first: 80,
            count: 32,
        },
        MbiRange {
            first: 64,
            count: 0,
        },
        MbiRange {
            first: u32::MAX,
            count: 2,
        },
    ] {
        assert!(!g.set_mbi_range(bad), "{bad:?}");
    }
    assert_eq!(g.mbi_range(), None);
    assert_eq!(g.gicd_read(0x4, 4) & TYPER_MBIS, 0);
}

#[test]
fn setspi_nsr_inside_the_range_pends_an_edge_and_kicks_its_target() {
    let mut g = vgic();
    let k = g.gicd_write(GICD_SETSPI_NSR, 4, 70);
    assert_eq!(k, Kick(1));
    assert!(pending(&mut g, 70));
    let mut lrs = [0u64; 4];
    assert!(!g.flush(0, &mut lrs));
    assert_eq!(lrs[0] & lr::VINTID_MASK, 70);
    assert_eq!(lrs[0] & lr::EOI, 0, "edge: no maintenance interrupt");
}

#[test]
fn setspi_nsr_uses_only_the_intid_field() {
    let mut g = vgic();
    let _ = g.gicd_write(GICD_SETSPI_NSR, 4, 0xffff_fc00 | 71);
    assert!(pending(&mut g, 71));
}

#[test]
fn clrspi_nsr_removes_the_pending_state() {
    let mut g = vgic();
    let _ = g.gicd_write(GICD_SETSPI_NSR, 4, 70);
    let _ = g.gicd_write(GICD_CLRSPI_NSR, 4, 70);
    assert!(!pending(&mut g, 70));
    assert_eq!(g.stats().mbi_rejected, 0);
}

#[test]
fn setspi_nsr_outside_the_range_is_ignored_and_counted() {
    let mut g = vgic();
    // The UART, an INTx-style SPI, the edges of the range, an SGI, a PPI
    // (the virtual timer), a spurious INTID, an unimplemented SPI.
    for intid in [UART, 35, 63, 96, 1, 27, 1023, 500] {
        assert_eq!(g.gicd_write(GICD_SETSPI_NSR, 4, u64::from(intid)), Kick(0));
    }
    assert!(!any_spi_pending(&mut g));
    let sgi_ppi = g.gicr_read(0x1_0000 + 0x200, 4);
    assert_eq!(sgi_ppi, 0, "no SGI or PPI pended");
    assert_eq!(g.stats().mbi_rejected, 8);
}

#[test]
fn clrspi_nsr_outside_the_range_leaves_other_spis_pending() {
    let mut g = vgic();
    let _ = g.set_line(0, UART, true);
    assert!(g.gicd_write(0x200, 4, 0).0 == 0);
    let _ = g.gicd_write(0x204, 4, 1 << (UART - 32));
    let _ = g.gicd_write(GICD_CLRSPI_NSR, 4, u64::from(UART));
    assert!(pending(&mut g, UART));
    assert_eq!(g.stats().mbi_rejected, 1);
}

#[test]
fn secure_aliases_are_write_ignored_with_one_security_state() {
    let mut g = vgic();
    let _ = g.gicd_write(GICD_SETSPI_SR, 4, 70);
    assert!(!pending(&mut g, 70));
    let _ = g.gicd_write(GICD_SETSPI_NSR, 4, 70);
    let _ = g.gicd_write(GICD_CLRSPI_SR, 4, 70);
    assert!(pending(&mut g, 70));
    assert_eq!(g.stats().mbi_rejected, 0);
}

#[test]
fn without_a_range_the_registers_are_reserved() {
    let mut g = Vgic::new(&MPIDRS, 64);
    g.gicd_write(0x0, 4, 0x12);
    let _ = g.gicd_write(0x108, 4, 0xffff_ffff);
    let _ = g.gicd_write(GICD_SETSPI_NSR, 4, 70);
    assert!(!pending(&mut g, 70));
}

#[test]
fn every_width_and_alignment_other_than_an_aligned_word_does_nothing() {
    for base in [
        GICD_SETSPI_NSR,
        GICD_CLRSPI_NSR,
        GICD_SETSPI_SR,
        GICD_CLRSPI_SR,
    ] {
        for off in base..base + 8 {
            for size in [1u8, 2, 4, 8, 3, 16] {
                let mut g = vgic();
                // 70 pending first, so that a CLRSPI that acted would show.
                let _ = g.gicd_write(GICD_SETSPI_NSR, 4, 70);
                let before = g.stats();
                let k = g.gicd_write(off, size, 71 | (71 << 32) | (70 << 8));
                assert_eq!(
                    g.gicd_read(off, size),
                    0,
                    "write-only: RAZ at {off:#x}/{size}"
                );
                let acts = size == 4 && (off == GICD_SETSPI_NSR || off == GICD_CLRSPI_NSR);
                if acts {
                    continue;
                }
                assert_eq!(k, Kick(0), "{off:#x}/{size}");
                assert!(pending(&mut g, 70), "{off:#x}/{size}");
                assert!(!pending(&mut g, 71), "{off:#x}/{size}");
                let after = g.stats();
                assert_eq!(after.mbi_rejected, before.mbi_rejected);
                let counted =
                    after.bad_size + after.bad_offset > before.bad_size + before.bad_offset;
                let architected_wi = size == 4 && (off == GICD_SETSPI_SR || off == GICD_CLRSPI_SR);
                assert_eq!(counted, !architected_wi, "{off:#x}/{size} counted");
            }
        }
    }
}

#[test]
fn a_device_message_goes_through_the_same_check() {
    let mut g = vgic();
    assert_eq!(g.mbi_set(RANGE.first), Some(Kick(1)));
    assert_eq!(g.mbi_set(RANGE.end()), None);
    assert_eq!(g.mbi_set(UART), None);
    assert!(pending(&mut g, RANGE.first));
    assert!(!pending(&mut g, UART));
    assert_eq!(g.stats().mbi_rejected, 2);
}

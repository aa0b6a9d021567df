use super::*;

const LAYOUT: MsixLayout = MsixLayout {
    vectors: 3,
    table_bar: 0,
    table_offset: 0x4000,
    pba_bar: 0,
    pba_offset: 0x5000,
};
const DOORBELL: u64 = 0x0800_0040;

fn msix() -> (ConfigSpace, Msix) {
    let mut cs = ConfigSpace::new();
    let m = Msix::add_to(&mut cs, LAYOUT).expect("fits");
    (cs, m)
}

fn set_control(cs: &mut ConfigSpace, m: &Msix, bits: u16) {
    cs.write(m.cap_offset() + 2, 2, u32::from(bits));
}

/// Entry `v` programmed with the doorbell and `data`, unmasked.
fn program(cs: &ConfigSpace, m: &mut Msix, v: u64, data: u32) {
    let mut out = Vec::new();
    m.table_write(cs, v * 16, 8, DOORBELL, &mut out);
    m.table_write(cs, v * 16 + 8, 8, u64::from(data), &mut out);
    assert!(out.is_empty());
}

#[test]
fn capability_reads_as_pci_6_8_2_lays_it_out() {
    let (cs, m) = msix();
    let at = m.cap_offset();
    assert_eq!(cs.read(at, 1), 0x11);
    assert_eq!(cs.read(at + 2, 2), 2, "Table Size is N - 1");
    assert_eq!(cs.read(at + 4, 4), 0x4000);
    assert_eq!(cs.read(at + 8, 4), 0x5000);
}

#[test]
fn only_enable_and_function_mask_are_writable() {
    let (mut cs, m) = msix();
    let at = m.cap_offset();
    cs.write(at + 2, 2, 0xffff);
    cs.write(at + 4, 4, 0xffff_ffff);
    cs.write(at + 8, 4, 0xffff_ffff);
    assert_eq!(cs.read(at + 2, 2), 0xc002);
    assert_eq!(cs.read(at + 4, 4), 0x4000);
    assert_eq!(cs.read(at + 8, 4), 0x5000);
}

#[test]
fn a_bad_layout_is_refused() {
    let mut cs = ConfigSpace::new();
    for l in [
        MsixLayout {
            vectors: 0,
            ..LAYOUT
        },
        MsixLayout {
            vectors: 2049,
            ..LAYOUT
        },
        MsixLayout {
            table_offset: 0x4004,
            ..LAYOUT
        },
        MsixLayout {
            pba_bar: 6,
            ..LAYOUT
        },
    ] {
        assert_eq!(Msix::add_to(&mut cs, l), Err(MsixError::BadLayout), "{l:?}");
    }
}

#[test]
fn entries_reset_masked_and_zero() {
    let (_, mut m) = msix();
    for v in 0..3u64 {
        assert_eq!(m.table_read(v * 16, 8), 0);
        assert_eq!(m.table_read(v * 16 + 8, 8), u64::from(VECTOR_MASKED) << 32);
    }
    assert_eq!(m.pba_read(0, 8), 0);
}

#[test]
fn dword_and_qword_accesses_see_the_same_entry() {
    let (cs, mut m) = msix();
    let mut out = Vec::new();
    m.table_write(&cs, 16, 4, 0x1234_5678, &mut out);
    m.table_write(&cs, 20, 4, 0x9, &mut out);
    m.table_write(&cs, 24, 4, 0x45, &mut out);
    assert_eq!(m.table_read(16, 8), 0x9_1234_5678);
    assert_eq!(m.table_read(20, 4), 0x9);
    m.table_write(&cs, 24, 8, 0xffff_ffff_0000_0046, &mut out);
    assert_eq!(m.table_read(24, 4), 0x46);
    assert_eq!(
        m.table_read(28, 4),
        1,
        "only the Mask Bit of Vector Control"
    );
}

#[test]
fn message_address_low_bits_read_zero() {
    let (cs, mut m) = msix();
    m.table_write(&cs, 0, 4, 0x0800_0043, &mut Vec::new());
    assert_eq!(m.table_read(0, 4), 0x0800_0040);
}

#[test]
fn every_other_width_or_alignment_reads_all_ones_writes_nothing_and_is_counted() {
    for off in 0..48u64 {
        for size in [1u8, 2, 3, 4, 8, 16] {
            let (cs, mut m) = msix();
            let aligned = matches!(size, 4 | 8) && off % u64::from(size) == 0;
            let before = m.clone();
            m.table_write(&cs, off, size, 0xffff_fff0_ffff_fff0, &mut Vec::new());
            let r = m.table_read(off, size);
            let p = m.pba_read(off % 8, size);
            if aligned {
                assert_ne!(m.table, before.table, "{off}/{size} wrote");
                continue;
            }
            assert_eq!(m.table, before.table, "{off}/{size}");
            assert_eq!(r, all_ones(size), "{off}/{size}");
            if !(matches!(size, 4 | 8) && (off % 8) % u64::from(size) == 0) {
                assert_eq!(p, all_ones(size), "pba {off}/{size}");
            }
            assert!(m.stats().bad_access >= 2, "{off}/{size}");
        }
    }
}

#[test]
fn an_index_past_the_table_reads_all_ones_and_ignores_writes() {
    let (cs, mut m) = msix();
    m.table_write(&cs, 3 * 16, 8, 0, &mut Vec::new());
    assert_eq!(m.table_read(3 * 16, 8), u64::MAX);
    assert_eq!(m.table_read(255 * 16 + 12, 4), 0xffff_ffff);
    assert_eq!(m.pba_read(8, 8), u64::MAX, "past the PBA's one QWORD");
    assert_eq!(m.stats().bad_access, 4);
}

#[test]
fn an_unmasked_vector_sends_its_message() {
    let (mut cs, mut m) = msix();
    set_control(&mut cs, &m, control::ENABLE);
    program(&cs, &mut m, 1, 70);
    let mut out = Vec::new();
    let f = m.fire(&cs, 1, &mut out);
    let msg = MsiMessage {
        address: DOORBELL,
        data: 70,
    };
    assert_eq!(f, Fired::Sent(msg));
    assert_eq!(out, [msg]);
    assert_eq!(m.stats().sent, 1);
}

#[test]
fn a_masked_vector_sets_its_pending_bit_and_sends_on_unmask() {
    let (mut cs, mut m) = msix();
    set_control(&mut cs, &m, control::ENABLE);
    let mut out = Vec::new();
    m.table_write(&cs, 32, 8, DOORBELL, &mut out);
    m.table_write(&cs, 40, 4, 71, &mut out);
    assert_eq!(m.fire(&cs, 2, &mut out), Fired::Pending);
    assert!(out.is_empty());
    assert_eq!(m.pba_read(0, 4), 0b100);
    assert_eq!(m.stats().masked_pending, 1);
    m.table_write(&cs, 44, 4, 0, &mut out);
    assert_eq!(
        out,
        [MsiMessage {
            address: DOORBELL,
            data: 71
        }]
    );
    assert_eq!(m.pba_read(0, 8), 0);
}

#[test]
fn the_function_mask_holds_every_vector_until_cleared() {
    let (mut cs, mut m) = msix();
    set_control(&mut cs, &m, control::ENABLE | control::FUNCTION_MASK);
    program(&cs, &mut m, 0, 64);
    program(&cs, &mut m, 1, 65);
    let mut out = Vec::new();
    assert_eq!(m.fire(&cs, 0, &mut out), Fired::Pending);
    assert_eq!(m.fire(&cs, 1, &mut out), Fired::Pending);
    assert_eq!(m.pba_read(0, 8), 0b11);
    set_control(&mut cs, &m, control::ENABLE);
    m.deliver_unmasked(&cs, &mut out);
    assert_eq!(out.iter().map(|m| m.data).collect::<Vec<_>>(), [64, 65]);
    assert_eq!(m.pba_read(0, 8), 0);
}

#[test]
fn the_pba_is_read_only() {
    let (mut cs, mut m) = msix();
    set_control(&mut cs, &m, control::ENABLE);
    let _ = m.fire(&cs, 0, &mut Vec::new());
    m.pba_write(0, 8);
    assert_eq!(m.pba_read(0, 8), 1);
    assert_eq!(m.stats().bad_access, 1);
}

#[test]
fn a_vector_past_the_table_fires_nothing() {
    let (mut cs, mut m) = msix();
    set_control(&mut cs, &m, control::ENABLE);
    let mut out = Vec::new();
    assert_eq!(m.fire(&cs, 3, &mut out), Fired::NoVector);
    assert_eq!(m.fire(&cs, u16::MAX, &mut out), Fired::NoVector);
    assert!(out.is_empty());
}

#[test]
fn reset_masks_every_entry_and_clears_the_pba() {
    let (mut cs, mut m) = msix();
    set_control(&mut cs, &m, control::ENABLE | control::FUNCTION_MASK);
    program(&cs, &mut m, 0, 64);
    let _ = m.fire(&cs, 0, &mut Vec::new());
    m.reset();
    assert_eq!(m.table_read(0, 8), 0);
    assert_eq!(m.table_read(12, 4), 1);
    assert_eq!(m.pba_read(0, 8), 0);
}

#[test]
fn a_vector_past_the_table_is_spurious_sends_nothing_and_sets_no_pending_bit() {
    let (mut cs, mut m) = msix();
    set_control(&mut cs, &m, control::ENABLE);
    let mut out = Vec::new();
    let past = m.stats();
    assert_eq!(m.fire(&cs, 4096, &mut out), Fired::NoVector);
    assert!(out.is_empty());
    assert_eq!(m.pba_read(0, 8), 0);
    assert_eq!(m.stats().spurious, past.spurious + 1);
}

use crate::testing::{
    assigned_e1000e, assigned_e1000e_msi, FakeHost, TEST_DOORBELL, TEST_GUEST_DOORBELL,
};
use crate::AssignedFunction;

use alloc::vec::Vec;
use vbus::{MsiMessage, PciFunction};

/// The e1000e's MSI-X capability offset, table BAR and PBA offset (testing.rs).
const CAP: u16 = 0xa0;
const BIR: u8 = 3;
const PBA: u64 = 0x2000;

type F = AssignedFunction<FakeHost>;

fn bar3(f: &F) -> u64 {
    f.layout()
        .bars
        .iter()
        .find(|b| b.index == BIR)
        .unwrap()
        .cpu
        .0
}

fn cfg(f: &mut F, off: u16, size: u8, v: u32) {
    let mut r = Vec::new();
    f.config_write(off, size, v, &mut r);
}

fn rd(f: &mut F, off: u64, size: u8) -> u64 {
    f.bar_read(BIR, off, size, &mut Vec::new())
}

fn wr(f: &mut F, off: u64, size: u8, v: u64) {
    f.bar_write(BIR, off, size, v, &mut Vec::new());
}

/// Entry `v` as the guest programs it: address, data, then unmasked.
fn program(f: &mut F, v: u64, address: u64, data: u32) {
    wr(f, 16 * v, 8, address);
    wr(f, 16 * v + 8, 4, u64::from(data));
    wr(f, 16 * v + 12, 4, 0);
}

/// The guest's Command.Memory Space Enable (mirrored to the device, which
/// drops BAR writes without it).
fn memory_on(f: &mut F) {
    cfg(f, 0x04, 2, 0x2);
}

/// Memory Space and MSI-X Enable, as a driver sets them.
fn enable(f: &mut F) {
    memory_on(f);
    cfg(f, CAP + 2, 2, 0x8000);
}

fn taken(f: &mut F) -> Vec<MsiMessage> {
    let mut out = Vec::new();
    f.take_msi(&mut out);
    out
}

/// The device's vector control word of `v`.
fn device_ctl(f: &F, v: u64) -> u32 {
    f.host().mmio32(bar3(f) + 16 * v + 12)
}

fn caps(f: &mut F) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = f.config_read(0x34, 1) as u16;
    while at != 0 && out.len() < 48 {
        out.push(f.config_read(at, 1) as u8);
        at = f.config_read(at + 1, 1) as u16;
    }
    out
}

#[test]
fn msix_and_msi_are_in_the_chain_only_with_a_route() {
    let mut plain = assigned_e1000e();
    let c = caps(&mut plain);
    assert!(!c.contains(&0x11) && !c.contains(&0x05), "{c:x?}");
    let mut f = assigned_e1000e_msi();
    let c = caps(&mut f);
    assert!(c.contains(&0x11), "{c:x?}");
    assert!(c.contains(&0x05), "{c:x?}");
    // Table Size 5 - 1, table BIR 3 offset 0, PBA BIR 3 offset 2000h, cached.
    assert_eq!(f.config_read(CAP + 2, 2), 4);
    assert_eq!(f.config_read(CAP + 4, 4), 3);
    assert_eq!(f.config_read(CAP + 8, 4), 0x2003);
}

#[test]
fn the_device_table_holds_the_host_doorbell_and_event_ids_all_masked() {
    let f = assigned_e1000e_msi();
    let b = bar3(&f);
    for v in 0..5u64 {
        let e = b + 16 * v;
        assert_eq!(f.host().mmio32(e), TEST_DOORBELL as u32);
        assert_eq!(f.host().mmio32(e + 4), 0);
        assert_eq!(f.host().mmio32(e + 8), v as u32);
        assert_eq!(f.host().mmio32(e + 12), 1);
    }
}

#[test]
fn the_table_and_pba_pages_trap_and_no_other() {
    let f = assigned_e1000e_msi();
    assert_eq!(f.bar_traps(BIR), [(0, 0x1000), (0x2000, 0x1000)]);
    assert!(f.bar_traps(0).is_empty());
}

#[test]
fn table_reads_at_every_width_and_alignment_agree_with_the_bytes_written() {
    let mut f = assigned_e1000e_msi();
    let bytes: Vec<u8> = (0..80u8).map(|i| i.wrapping_mul(37) ^ 0xa5).collect();
    for (i, b) in bytes.iter().enumerate() {
        wr(&mut f, i as u64, 1, u64::from(*b));
    }
    // What the table keeps: address [1:0] = 0, only the Mask Bit of Vector Control.
    let kept: Vec<u8> = bytes
        .iter()
        .enumerate()
        .map(|(i, b)| match i % 16 {
            0 => b & !3,
            12 => b & 1,
            13..=15 => 0,
            _ => *b,
        })
        .collect();
    for size in [1u8, 2, 4, 8] {
        for off in 0..=(80 - u64::from(size)) {
            let want = (0..u64::from(size)).fold(0u64, |v, k| {
                v | u64::from(kept[(off + k) as usize]) << (8 * k)
            });
            assert_eq!(rd(&mut f, off, size), want, "size {size} offset {off}");
        }
    }
}

#[test]
fn table_writes_at_every_width_compose_as_bytes() {
    for size in [1u8, 2, 4, 8] {
        let mut f = assigned_e1000e_msi();
        let value: u64 = 0x1122_3344_5566_7788;
        for off in (16..24).step_by(usize::from(size)) {
            wr(&mut f, off, size, value >> (8 * (off - 16)));
        }
        assert_eq!(rd(&mut f, 16, 8), value & !3, "size {size}");
    }
}

#[test]
fn guest_messages_are_never_written_to_the_device() {
    let mut f = assigned_e1000e_msi();
    enable(&mut f);
    program(&mut f, 1, TEST_GUEST_DOORBELL, 70);
    let b = bar3(&f);
    assert_eq!(f.host().mmio32(b + 16), TEST_DOORBELL as u32);
    assert_eq!(f.host().mmio32(b + 24), 1);
    assert!(f
        .host()
        .mmio_writes()
        .iter()
        .all(|w| w.2 != TEST_GUEST_DOORBELL && w.2 != 70));
}

#[test]
fn unmasking_a_valid_entry_unmasks_the_device_vector_and_masking_mirrors() {
    let mut f = assigned_e1000e_msi();
    enable(&mut f);
    program(&mut f, 2, TEST_GUEST_DOORBELL, 64);
    assert_eq!(device_ctl(&f, 2), 0);
    assert_eq!(device_ctl(&f, 1), 1);
    wr(&mut f, 2 * 16 + 12, 1, 1);
    assert_eq!(device_ctl(&f, 2), 1);
}

#[test]
fn forged_entries_stay_masked_on_the_device_and_are_counted() {
    let mut f = assigned_e1000e_msi();
    enable(&mut f);
    // Outside the doorbell, an SPI below the range (the UART's 33), above it.
    program(&mut f, 0, 0x0900_0000, 64);
    program(&mut f, 1, TEST_GUEST_DOORBELL, 33);
    program(&mut f, 2, TEST_GUEST_DOORBELL, 128);
    for v in 0..3 {
        assert_eq!(device_ctl(&f, v), 1, "vector {v}");
    }
    assert_eq!(f.msix_stats().unwrap().forged_entries, 3);
    // Fixing one unmasks it on the device.
    wr(&mut f, 8, 4, 65);
    wr(&mut f, 0, 4, TEST_GUEST_DOORBELL);
    assert_eq!(device_ctl(&f, 0), 0);
    assert_eq!(f.msix_stats().unwrap().forged_entries, 3);
}

#[test]
fn enable_and_function_mask_are_emulated_and_mirrored_to_the_device() {
    let mut f = assigned_e1000e_msi();
    cfg(&mut f, CAP + 2, 2, 0xc000);
    assert_eq!(f.config_read(CAP + 2, 2), 0xc004);
    let host = f
        .host()
        .function("e1000e")
        .unwrap()
        .config()
        .raw(CAP + 2, 2);
    assert_eq!(host & 0xc000, 0xc000);
    cfg(&mut f, CAP + 3, 1, 0x80);
    let host = f
        .host()
        .function("e1000e")
        .unwrap()
        .config()
        .raw(CAP + 2, 2);
    assert_eq!(host & 0xc000, 0x8000);
}

#[test]
fn a_device_interrupt_sends_the_guests_message() {
    let mut f = assigned_e1000e_msi();
    enable(&mut f);
    program(&mut f, 3, TEST_GUEST_DOORBELL, 99);
    f.host_msi(3);
    assert_eq!(
        taken(&mut f),
        [MsiMessage {
            address: TEST_GUEST_DOORBELL,
            data: 99
        }]
    );
    f.host_msi(7); // no such vector
    assert!(taken(&mut f).is_empty());
}

#[test]
fn an_interrupt_while_masked_is_pending_in_the_pba_and_sent_on_unmask() {
    let mut f = assigned_e1000e_msi();
    enable(&mut f);
    program(&mut f, 4, TEST_GUEST_DOORBELL, 80);
    cfg(&mut f, CAP + 3, 1, 0xc0); // Function Mask
    f.host_msi(4);
    assert!(taken(&mut f).is_empty());
    assert_eq!(rd(&mut f, PBA, 8), 1 << 4);
    assert_eq!(rd(&mut f, PBA, 1), 1 << 4);
    assert_eq!(f.msix_stats().unwrap().masked_pending, 1);
    cfg(&mut f, CAP + 3, 1, 0x80);
    assert_eq!(taken(&mut f).len(), 1);
    assert_eq!(rd(&mut f, PBA, 4), 0);
}

#[test]
fn the_pba_shows_the_devices_own_pending_bits_and_ignores_writes() {
    let mut f = assigned_e1000e_msi();
    let b = bar3(&f);
    f.host_mut().set_mmio32(b + PBA, 0xffff_ff02);
    // Bits past vector 4 are reserved: 0.
    assert_eq!(rd(&mut f, PBA, 4), 0x02);
    wr(&mut f, PBA, 8, u64::MAX);
    assert_eq!(f.msix_stats().unwrap().bad_access, 1);
    assert_eq!(rd(&mut f, PBA, 2), 0x02);
}

#[test]
fn the_rest_of_a_trapped_page_reaches_the_device_when_aligned() {
    let mut f = assigned_e1000e_msi();
    memory_on(&mut f);
    let b = bar3(&f);
    wr(&mut f, 0x800, 4, 0xdead_beef);
    assert_eq!(f.host().mmio32(b + 0x800), 0xdead_beef);
    assert_eq!(rd(&mut f, 0x800, 2), 0xbeef);
    // Unaligned, or straddling the table's end: all ones, counted.
    assert_eq!(rd(&mut f, 0x801, 4), 0xffff_ffff);
    assert_eq!(rd(&mut f, 76, 8), u64::MAX);
    assert_eq!(f.msix_stats().unwrap().bad_access, 2);
}

#[test]
fn a_reset_masks_every_entry_and_programs_the_device_again() {
    let mut f = assigned_e1000e_msi();
    enable(&mut f);
    program(&mut f, 0, TEST_GUEST_DOORBELL, 64);
    f.reset();
    assert_eq!(rd(&mut f, 0, 8), 0);
    assert_eq!(rd(&mut f, 12, 4), 1);
    assert_eq!(f.config_read(CAP + 2, 2), 4);
    assert_eq!(device_ctl(&f, 0), 1);
    assert_eq!(f.host().mmio32(bar3(&f)), TEST_DOORBELL as u32);
}

#[test]
fn no_access_of_any_size_or_offset_panics() {
    let mut f = assigned_e1000e_msi();
    enable(&mut f);
    for size in [0u8, 1, 2, 3, 4, 5, 8, 16] {
        for off in (0..0x4000u64)
            .step_by(61)
            .chain([u64::MAX - 3, 0x1ffc, 0x2ffc])
        {
            let _ = rd(&mut f, off, size);
            wr(&mut f, off, size, 0);
        }
    }
}

#[test]
fn table_writes_ask_the_owner_to_steer_and_the_message_of_each_event_is_the_guests() {
    let mut f = assigned_e1000e_msi();
    let mut r = Vec::new();
    f.bar_write(BIR, 16 + 8, 4, 70, &mut r);
    assert_eq!(r, [vbus::Request::MsiMessageWritten]);
    assert_eq!(f.host_msi_message(1).map(|m| m.data), Some(70));
    // The PBA and the device's part of the page are not the table: no request.
    let mut r = Vec::new();
    f.bar_write(BIR, PBA, 8, 0, &mut r);
    f.bar_write(BIR, 0x1000, 4, 0, &mut r);
    assert!(r.is_empty(), "{r:?}");
    // Event 5 is MSI's (its first EventID follows the table's).
    assert_eq!(f.events().msi_base, 5);
    assert_eq!(
        f.host_msi_message(6),
        None,
        "past the table and MSI's vector"
    );
    assert_eq!(f.host_msi_message(u32::MAX), None);
}

/// The host device's Command register now.
fn host_command(f: &mut F) -> u16 {
    let bdf = f.layout().bdf;
    crate::ConfigAccess::read32(f.host_mut(), bdf, 0x04) as u16
}

#[test]
fn the_device_table_is_programmed_with_memory_space_on_and_the_command_register_restored() {
    // The fake device drops BAR writes while Memory Space is off, as a real
    // one does: assignment and reset leave it off (the guest has not
    // enabled it), so the table must be written with it turned on briefly.
    let mut f = assigned_e1000e();
    assert_eq!(host_command(&mut f) & 0x2, 0, "Memory Space starts off");
    let mut f = f.with_msi(crate::testing::test_msi_route());
    assert_eq!(f.host().dropped_mmio_writes(), 0);
    assert_eq!(host_command(&mut f) & 0x2, 0, "Memory Space off again");
    let b = bar3(&f);
    assert_eq!(f.host().mmio32(b + 16 * 4), TEST_DOORBELL as u32);
    assert_eq!(f.host().mmio32(b + 16 * 4 + 8), 4);
    // After a reset the same.
    f.host_mut().set_mmio32(b + 16 * 2 + 8, 0xdead);
    f.reset();
    assert_eq!(f.host().dropped_mmio_writes(), 0);
    assert_eq!(f.host().mmio32(b + 16 * 2 + 8), 2);
    assert_eq!(host_command(&mut f) & 0x2, 0);
}

#[test]
fn the_fake_device_drops_bar_writes_while_memory_space_is_off() {
    let mut f = assigned_e1000e_msi();
    let b = bar3(&f);
    let before = f.host().dropped_mmio_writes();
    crate::access::BarAccess::bar_write(f.host_mut(), vbus::Pa(b + 0x1000), 4, 7);
    assert_eq!(f.host().mmio32(b + 0x1000), 0);
    assert_eq!(f.host().dropped_mmio_writes(), before + 1);
}

#[test]
fn an_interrupt_while_msix_is_disabled_is_spurious_and_not_sent_when_enabled_later() {
    let mut f = assigned_e1000e_msi();
    enable(&mut f);
    program(&mut f, 4, TEST_GUEST_DOORBELL, 80);
    cfg(&mut f, CAP + 3, 1, 0x00); // MSI-X Enable off
    f.host_msi(4);
    assert!(taken(&mut f).is_empty());
    assert_eq!(rd(&mut f, PBA, 8), 0);
    assert_eq!(f.msix_stats().unwrap().spurious, 1);
    assert_eq!(f.msix_stats().unwrap().masked_pending, 0);
    cfg(&mut f, CAP + 3, 1, 0x80);
    assert!(
        taken(&mut f).is_empty(),
        "a stale vector was sent on enable"
    );
}

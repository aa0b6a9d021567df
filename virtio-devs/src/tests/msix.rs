//! The transport's MSI-X (virtio 1.2, 4.1.4.7, 4.1.5.1.2, 4.1.5.3, 4.1.5.4;
//! PCI Local Bus 3.0, 6.8.2): vectors, masks, pending bits, the INTx
//! fallback, and the segment's check of each message.

use super::pci::{dev_with, Dev, FEATURES, RAM};
use crate::blk::RamDisk;
use crate::pci::*;
use crate::testing::{driver_init, notify, MockQueue};
use alloc::boxed::Box;
use alloc::vec::Vec;
use arch_emu::addr::{Ipa, MemRange};
use arch_emu::vgic::MbiRange;
use vbus::msix::{control, MsiMessage};
use vbus::testing::TestBridge;
use vbus::{Effect, Intx, MsiTarget, PciFunction, Segment};

const DOORBELL: u64 = 0x0800_0040;
const MSIX_CAP_ID: u32 = 0x11;

fn dev() -> (Dev, MockQueue) {
    let (d, _, mock) = dev_with(RamDisk::new(1 << 20));
    (d, mock)
}

fn rd(d: &mut Dev, off: u64, size: u8) -> u64 {
    d.bar_read(0, off, size, &mut Vec::new())
}

fn wr(d: &mut Dev, off: u64, size: u8, v: u64) {
    d.bar_write(0, off, size, v, &mut Vec::new())
}

fn msix_cap(d: &mut Dev) -> u16 {
    let mut at = d.config_read(0x34, 1) as u16;
    while at != 0 {
        if d.config_read(at, 1) == MSIX_CAP_ID {
            return at;
        }
        at = d.config_read(at + 1, 1) as u16;
    }
    panic!("no MSI-X capability");
}

fn set_control(d: &mut Dev, bits: u16) {
    let at = msix_cap(d);
    d.config_write(at + 2, 2, u32::from(bits), &mut Vec::new());
}

/// Table entry `v`: the doorbell, `data`, unmasked or not.
fn program_entry(d: &mut Dev, v: u64, address: u64, data: u32, masked: bool) {
    let e = MSIX_TABLE_OFFSET + 16 * v;
    wr(d, e, 8, address);
    wr(d, e + 8, 4, u64::from(data));
    wr(d, e + 12, 4, u64::from(masked));
}

/// One request on queue 0 (a read of sector 0 into 16 bytes... of header).
fn request(d: &mut Dev, mock: &mut MockQueue) {
    mock.push(&[
        (Ipa(RAM.0 + 0x1000), 16, false),
        (Ipa(RAM.0 + 0x2000), 1, true),
    ]);
    notify(d, 0);
}

fn take(d: &mut Dev) -> Vec<MsiMessage> {
    let mut out = Vec::new();
    d.take_msi(&mut out);
    out
}

/// Driver initialised, MSI-X enabled, config vector 0 and queue vector 1
/// programmed and unmasked (what Linux's virtio-pci does).
fn msix_ready(data_config: u32, data_queue: u32) -> (Dev, MockQueue) {
    let (mut d, mock) = dev();
    set_control(&mut d, control::ENABLE | control::FUNCTION_MASK);
    program_entry(&mut d, 0, DOORBELL, data_config, false);
    program_entry(&mut d, 1, DOORBELL, data_queue, false);
    set_control(&mut d, control::ENABLE);
    driver_init(&mut d, &mock, FEATURES);
    wr(&mut d, common::CONFIG_MSIX_VECTOR, 2, 0);
    wr(&mut d, common::QUEUE_SELECT, 2, 0);
    wr(&mut d, common::QUEUE_MSIX_VECTOR, 2, 1);
    assert!(take(&mut d).is_empty());
    (d, mock)
}

#[test]
fn capability_has_a_vector_per_queue_plus_config_with_table_and_pba_in_bar0() {
    let (mut d, _) = dev();
    let at = msix_cap(&mut d);
    assert_eq!(
        d.config_read(at + 2, 2),
        1,
        "Table Size N - 1: 1 queue + config"
    );
    assert_eq!(d.config_read(at + 4, 4), MSIX_TABLE_OFFSET as u32, "BIR 0");
    assert_eq!(d.config_read(at + 8, 4), MSIX_PBA_OFFSET as u32, "BIR 0");
}

#[test]
fn vectors_read_no_vector_after_reset_and_keep_valid_writes() {
    let (mut d, mock) = dev();
    driver_init(&mut d, &mock, FEATURES);
    assert_eq!(rd(&mut d, common::CONFIG_MSIX_VECTOR, 2), 0xffff);
    assert_eq!(rd(&mut d, common::QUEUE_MSIX_VECTOR, 2), 0xffff);
    wr(&mut d, common::CONFIG_MSIX_VECTOR, 2, 0);
    wr(&mut d, common::QUEUE_MSIX_VECTOR, 2, 1);
    assert_eq!(rd(&mut d, common::CONFIG_MSIX_VECTOR, 2), 0);
    assert_eq!(rd(&mut d, common::QUEUE_MSIX_VECTOR, 2), 1);
    wr(&mut d, common::DEVICE_STATUS, 1, 0);
    assert_eq!(rd(&mut d, common::CONFIG_MSIX_VECTOR, 2), 0xffff);
    assert_eq!(rd(&mut d, common::QUEUE_MSIX_VECTOR, 2), 0xffff);
}

#[test]
fn a_vector_past_the_table_fails_the_mapping_and_reads_no_vector() {
    let (mut d, _) = dev();
    wr(&mut d, common::CONFIG_MSIX_VECTOR, 2, 2);
    wr(&mut d, common::QUEUE_MSIX_VECTOR, 2, 0x7ff);
    assert_eq!(rd(&mut d, common::CONFIG_MSIX_VECTOR, 2), 0xffff);
    assert_eq!(rd(&mut d, common::QUEUE_MSIX_VECTOR, 2), 0xffff);
}

#[test]
fn with_msix_disabled_a_used_buffer_raises_isr_and_intx_and_sends_nothing() {
    let (mut d, mut mock) = dev();
    driver_init(&mut d, &mock, FEATURES);
    program_entry(&mut d, 1, DOORBELL, 70, false);
    wr(&mut d, common::QUEUE_MSIX_VECTOR, 2, 1);
    request(&mut d, &mut mock);
    assert_eq!(d.intx(), Intx::Level(true));
    assert!(take(&mut d).is_empty());
    assert_eq!(rd(&mut d, ISR_OFFSET, 1), 1);
}

#[test]
fn with_msix_enabled_a_used_buffer_sends_the_queue_vector_and_no_intx() {
    let (mut d, mut mock) = msix_ready(64, 65);
    request(&mut d, &mut mock);
    assert_eq!(
        take(&mut d),
        [MsiMessage {
            address: DOORBELL,
            data: 65
        }]
    );
    assert_eq!(d.intx(), Intx::Level(false));
    assert_eq!(d.config_read(0x06, 2) & 0x8, 0, "Status.Interrupt Status");
    assert_eq!(rd(&mut d, ISR_OFFSET, 1), 0);
    assert_eq!(d.msix_stats().unwrap().sent, 1);
}

#[test]
fn with_msix_enabled_no_vector_means_no_interrupt_at_all() {
    let (mut d, mut mock) = msix_ready(64, 65);
    wr(
        &mut d,
        common::QUEUE_MSIX_VECTOR,
        2,
        u64::from(VIRTIO_MSI_NO_VECTOR),
    );
    request(&mut d, &mut mock);
    assert_eq!(mock.used_idx(), 1, "served");
    assert!(take(&mut d).is_empty());
    assert_eq!(d.intx(), Intx::Level(false));
}

#[test]
fn a_masked_vector_holds_the_interrupt_in_the_pba_until_unmasked() {
    let (mut d, mut mock) = msix_ready(64, 65);
    wr(&mut d, MSIX_TABLE_OFFSET + 16 + 12, 4, 1);
    request(&mut d, &mut mock);
    assert!(take(&mut d).is_empty());
    assert_eq!(rd(&mut d, MSIX_PBA_OFFSET, 8), 0b10);
    assert_eq!(d.msix_stats().unwrap().masked_pending, 1);
    wr(&mut d, MSIX_TABLE_OFFSET + 16 + 12, 4, 0);
    assert_eq!(take(&mut d).len(), 1);
    assert_eq!(rd(&mut d, MSIX_PBA_OFFSET, 8), 0);
}

#[test]
fn the_function_mask_holds_the_interrupt_until_cleared_in_config_space() {
    let (mut d, mut mock) = msix_ready(64, 65);
    set_control(&mut d, control::ENABLE | control::FUNCTION_MASK);
    request(&mut d, &mut mock);
    assert!(take(&mut d).is_empty());
    assert_eq!(rd(&mut d, MSIX_PBA_OFFSET, 4), 0b10);
    set_control(&mut d, control::ENABLE);
    assert_eq!(
        take(&mut d),
        [MsiMessage {
            address: DOORBELL,
            data: 65
        }]
    );
}

#[test]
fn a_configuration_change_sends_the_config_vector() {
    let (mut d, _) = msix_ready(64, 65);
    d.config_changed();
    assert_eq!(
        take(&mut d),
        [MsiMessage {
            address: DOORBELL,
            data: 64
        }]
    );
    assert_eq!(d.intx(), Intx::Level(false));
}

#[test]
fn disabling_msix_falls_back_to_intx() {
    let (mut d, mut mock) = msix_ready(64, 65);
    set_control(&mut d, 0);
    request(&mut d, &mut mock);
    assert!(take(&mut d).is_empty());
    assert_eq!(d.intx(), Intx::Level(true));
}

#[test]
fn table_and_pba_answer_through_bar0_at_every_width_and_alignment() {
    let (mut d, _) = dev();
    for (base, len) in [(MSIX_TABLE_OFFSET, 32u64), (MSIX_PBA_OFFSET, 8)] {
        for off in base..base + 40 {
            for size in [1u8, 2, 4, 8] {
                let v = rd(&mut d, off, size);
                let aligned = matches!(size, 4 | 8) && off % u64::from(size) == 0;
                let inside = off + u64::from(size) <= base + len;
                let ones = if size == 8 {
                    u64::MAX
                } else {
                    (1u64 << (8 * size)) - 1
                };
                if !(aligned && inside) {
                    assert_eq!(v, ones, "{off:#x}/{size}");
                }
            }
        }
    }
    // An index past the two entries: all ones, writes ignored.
    wr(&mut d, MSIX_TABLE_OFFSET + 32, 8, 0);
    assert_eq!(rd(&mut d, MSIX_TABLE_OFFSET + 32, 8), u64::MAX);
    assert_eq!(rd(&mut d, MSIX_TABLE_OFFSET + 0xff0, 4), 0xffff_ffff);
}

#[test]
fn a_conventional_reset_masks_every_entry_and_disables_msix() {
    let (mut d, _) = msix_ready(64, 65);
    d.reset();
    let at = msix_cap(&mut d);
    assert_eq!(d.config_read(at + 2, 2), 1);
    assert_eq!(rd(&mut d, MSIX_TABLE_OFFSET + 12, 4), 1);
    assert_eq!(rd(&mut d, MSIX_TABLE_OFFSET, 8), 0);
}

// ---- through the segment -------------------------------------------------

fn ecam(bus: u64, dev: u64, func: u64, reg: u64) -> u64 {
    (bus << 20) | (dev << 15) | (func << 12) | reg
}

const MEM64: MemRange<Ipa> = MemRange::new(Ipa(0x80_0000_0000), 0x40_0000_0000);
const BAR: u64 = 0x80_0000_0000;
const RANGE: MbiRange = MbiRange {
    first: 64,
    count: 64,
};

/// The device below a port, BAR 0 decoded, MSI-X enabled with vector 1 for
/// queue 0 programmed as (`address`, `data`).
fn segment(address: u64, data: u32) -> (Segment, MockQueue, vbus::FunctionId) {
    let (mut d, mock) = msix_ready(64, 65);
    program_entry(&mut d, 1, address, data, false);
    let mut s = Segment::new(0, 4);
    s.set_apertures(&[MEM64]);
    s.set_msi_target(Some(MsiTarget {
        doorbell: Ipa(DOORBELL),
        spis: RANGE,
    }));
    s.add_bus0(1, 0, Box::new(TestBridge::new())).unwrap();
    let id = s.attach_below(1, 0, Box::new(d)).unwrap();
    let _ = s.ecam_write(ecam(0, 1, 0, 0x18), 4, 0x0001_0100);
    let _ = s.ecam_write(ecam(0, 1, 0, 0x24), 4, 0x0001_0001);
    let _ = s.ecam_write(ecam(0, 1, 0, 0x28), 4, 0x80);
    let _ = s.ecam_write(ecam(0, 1, 0, 0x2c), 4, 0x80);
    let _ = s.ecam_write(ecam(0, 1, 0, 0x04), 2, 0x0006);
    let _ = s.ecam_write(ecam(1, 0, 0, 0x10), 4, BAR & 0xffff_ffff);
    let _ = s.ecam_write(ecam(1, 0, 0, 0x14), 4, BAR >> 32);
    let _ = s.ecam_write(ecam(1, 0, 0, 0x04), 2, 0x0006);
    (s, mock, id)
}

fn notify_through(s: &mut Segment, mock: &mut MockQueue) -> vbus::Effects {
    mock.push(&[
        (Ipa(RAM.0 + 0x1000), 16, false),
        (Ipa(RAM.0 + 0x2000), 1, true),
    ]);
    s.mmio_write(Ipa(BAR + NOTIFY_OFFSET), 2, 0).unwrap()
}

fn msi_effects(fx: &vbus::Effects) -> Vec<u32> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Msi { spi, .. } => Some(*spi),
            _ => None,
        })
        .collect()
}

#[test]
fn a_message_to_the_doorbell_inside_the_range_becomes_an_msi_effect() {
    let (mut s, mut mock, id) = segment(DOORBELL, 100);
    let fx = notify_through(&mut s, &mut mock);
    assert_eq!(msi_effects(&fx), [100]);
    assert!(!fx.iter().any(|e| matches!(e, Effect::Intx { .. })));
    let st = s.msi_stats(id).unwrap();
    assert_eq!((st.delivered, st.forged), (1, 0));
}

#[test]
fn forged_messages_are_dropped_and_counted() {
    // Outside the doorbell; the UART's SPI, an INTx SPI, the timer PPI, an
    // SGI, just past the range, a value with bits above the INTID.
    let forged = [
        (0x0800_0000, 70),
        (DOORBELL + 8, 70),
        (0x0900_0000, 70),
        (DOORBELL, 33),
        (DOORBELL, 36),
        (DOORBELL, 27),
        (DOORBELL, 1),
        (DOORBELL, 128),
        (DOORBELL, 0x1_0000 | 70),
    ];
    for (address, data) in forged {
        let (mut s, mut mock, id) = segment(address, data);
        let fx = notify_through(&mut s, &mut mock);
        assert!(msi_effects(&fx).is_empty(), "{address:#x}/{data}");
        let st = s.msi_stats(id).unwrap();
        assert_eq!((st.delivered, st.forged), (0, 1), "{address:#x}/{data}");
    }
}

#[test]
fn without_a_target_every_message_is_forged() {
    let (mut s, mut mock, id) = segment(DOORBELL, 100);
    s.set_msi_target(None);
    assert!(msi_effects(&notify_through(&mut s, &mut mock)).is_empty());
    assert_eq!(s.msi_stats(id).unwrap().forged, 1);
}

#[test]
fn bar_region_tells_the_msix_table_and_pba_from_the_other_registers() {
    let (s, _mock, _id) = segment(DOORBELL, 100);
    let at = |off: u64| s.bar_region(Ipa(BAR + off), 4);
    assert_eq!(at(MSIX_TABLE_OFFSET), Some(vbus::BarRegion::Msix));
    assert_eq!(at(MSIX_PBA_OFFSET), Some(vbus::BarRegion::Msix));
    assert_eq!(at(NOTIFY_OFFSET), Some(vbus::BarRegion::Registers));
    assert_eq!(at(0), Some(vbus::BarRegion::Registers));
    // Past the table's vectors, still in its reserved space: a register.
    assert_eq!(at(MSIX_PBA_OFFSET - 16), Some(vbus::BarRegion::Registers));
    assert_eq!(s.bar_region(Ipa(BAR - 0x1000), 4), None);
}

//! The transport placed below a root port in a `vbus::Segment`, driven
//! through ECAM and `mmio_read`/`mmio_write` as a guest would.

use super::pci::{dev_with, FEATURES, RAM};
use crate::blk::RamDisk;
use crate::pci::{common, ISR_OFFSET, NOTIFY_OFFSET};
use alloc::boxed::Box;
use arch_emu::addr::{Ipa, MemRange};
use vbus::testing::TestBridge;
use vbus::{Effect, Segment};

fn ecam(bus: u64, dev: u64, func: u64, reg: u64) -> u64 {
    (bus << 20) | (dev << 15) | (func << 12) | reg
}

const MEM64: MemRange<Ipa> = MemRange::new(Ipa(0x80_0000_0000), 0x40_0000_0000);
const BAR: u64 = 0x80_0000_0000;

/// Port 00:01.0 → bus 1, prefetchable window at 0x80_0000_0000; virtio-blk at
/// 01:00.0 with BAR 0 there and Memory Space Enable on.
fn programmed() -> (Segment, crate::testing::MockQueue) {
    let (d, _mem, mock) = dev_with(RamDisk::new(1 << 20));
    let mut s = Segment::new(0, 4);
    s.set_apertures(&[MEM64]);
    s.set_intx_spis([35, 36, 37, 38]);
    s.add_bus0(1, 0, Box::new(TestBridge::new())).unwrap();
    s.attach_below(1, 0, Box::new(d)).unwrap();
    let _ = s.ecam_write(ecam(0, 1, 0, 0x18), 4, 0x0001_0100);
    let _ = s.ecam_write(ecam(0, 1, 0, 0x24), 4, 0x0001_0001);
    let _ = s.ecam_write(ecam(0, 1, 0, 0x28), 4, 0x80);
    let _ = s.ecam_write(ecam(0, 1, 0, 0x2c), 4, 0x80);
    let _ = s.ecam_write(ecam(0, 1, 0, 0x04), 2, 0x0006);
    let _ = s.ecam_write(ecam(1, 0, 0, 0x10), 4, BAR & 0xffff_ffff);
    let _ = s.ecam_write(ecam(1, 0, 0, 0x14), 4, BAR >> 32);
    let _ = s.ecam_write(ecam(1, 0, 0, 0x04), 2, 0x0006);
    (s, mock)
}

#[test]
fn enumerates_as_virtio_blk_below_the_port() {
    let (mut s, _) = programmed();
    assert_eq!(s.ecam_read(ecam(1, 0, 0, 0), 4), 0x1042_1af4);
}

#[test]
fn bar0_is_decoded_trapped_in_the_port_window() {
    let (s, _) = programmed();
    assert_eq!(s.decoded().len(), 1);
    assert_eq!(s.decoded()[0].guest, MemRange::new(Ipa(BAR), 0x8000));
}

#[test]
fn request_through_mmio_raises_intx_effect_and_isr_read_lowers_it() {
    let (mut s, mut mock) = programmed();
    let w = |s: &mut Segment, off: u64, size: u8, v: u64| {
        s.mmio_write(Ipa(BAR + off), size, v).unwrap()
    };
    use crate::pci::device_status as st;
    let _ = w(&mut s, common::DEVICE_STATUS, 1, 1);
    let _ = w(&mut s, common::DEVICE_STATUS, 1, 3);
    let _ = w(&mut s, common::DRIVER_FEATURE_SELECT, 4, 1);
    let _ = w(&mut s, common::DRIVER_FEATURE, 4, FEATURES >> 32);
    let _ = w(
        &mut s,
        common::DEVICE_STATUS,
        1,
        u64::from(st::ACKNOWLEDGE | st::DRIVER | st::FEATURES_OK),
    );
    let _ = w(&mut s, common::QUEUE_SIZE, 2, 16);
    let _ = w(&mut s, common::QUEUE_DESC, 8, mock.desc_table().0);
    let _ = w(&mut s, common::QUEUE_DRIVER, 8, mock.avail_ring().0);
    let _ = w(&mut s, common::QUEUE_DEVICE, 8, mock.used_ring().0);
    let _ = w(&mut s, common::QUEUE_ENABLE, 2, 1);
    let _ = w(&mut s, common::DEVICE_STATUS, 1, 0xf);
    assert_eq!(
        s.mmio_read(Ipa(BAR + common::DEVICE_STATUS), 1).unwrap().0,
        0xf
    );
    mock.push(&[
        (Ipa(RAM.0 + 0x1000), 16, false),
        (Ipa(RAM.0 + 0x2000), 1, true),
    ]);
    let fx = w(&mut s, NOTIFY_OFFSET, 2, 0);
    assert!(fx
        .iter()
        .any(|e| matches!(e, Effect::Intx { level: true, .. })));
    assert_eq!(mock.used_idx(), 1);
    let (isr, fx) = s.mmio_read(Ipa(BAR + ISR_OFFSET), 1).unwrap();
    assert_eq!(isr, 1);
    assert!(fx
        .iter()
        .any(|e| matches!(e, Effect::Intx { level: false, .. })));
}

//! The virtio-pci transport's registers (virtio 1.2, 4.1) at every width.

use crate::blk::{RamDisk, VirtioBlk};
use crate::device::feature;
use crate::pci::{common, device_status as s, *};
use crate::testing::{driver_init, notify, MockQueue, VecMemory};
use arch_emu::addr::{Ipa, Pa};
use vbus::{Intx, PciFunction};

pub(super) const RAM: Ipa = Ipa(0x4000_0000);
pub(super) const FEATURES: u64 =
    feature::VERSION_1 | feature::EVENT_IDX | feature::INDIRECT_DESC | feature::RING_RESET;

pub(super) type Dev = VirtioPci<VirtioBlk<RamDisk>, VecMemory>;

pub(super) fn dev_with(disk: RamDisk) -> (Dev, VecMemory, MockQueue) {
    let mem = VecMemory::new(RAM, 0x4_0000, Pa(0x9_0000_0000));
    let mock = MockQueue::new(&mem, RAM, 16);
    (VirtioPci::new(VirtioBlk::new(disk), mem.clone()), mem, mock)
}

fn dev() -> (Dev, VecMemory, MockQueue) {
    dev_with(RamDisk::new(1 << 20))
}

fn rd(d: &mut Dev, off: u64, size: u8) -> u64 {
    d.bar_read(0, off, size, &mut alloc::vec::Vec::new())
}

fn wr(d: &mut Dev, off: u64, size: u8, v: u64) {
    d.bar_write(0, off, size, v, &mut alloc::vec::Vec::new())
}

/// Finds the vendor capability of `cfg_type` by walking the list from 0x34.
fn find_cap(d: &mut Dev, cfg_type: u8) -> Option<u16> {
    let mut at = d.config_read(0x34, 1) as u16;
    while at != 0 {
        if d.config_read(at, 1) == 0x09 && d.config_read(at + 3, 1) == u32::from(cfg_type) {
            return Some(at);
        }
        at = d.config_read(at + 1, 1) as u16;
    }
    None
}

#[test]
fn ids_say_modern_virtio_blk_revision_1() {
    let (mut d, _, _) = dev();
    assert_eq!(d.config_read(0, 4), 0x1042_1af4);
    assert_eq!(d.config_read(8, 1), 1);
    assert_eq!(d.config_read(0x0b, 1), 0x01);
}

#[test]
fn bar0_is_64bit_prefetchable_32k() {
    let (mut d, _, _) = dev();
    let mut rq = alloc::vec::Vec::new();
    d.config_write(0x10, 4, 0xffff_ffff, &mut rq);
    assert_eq!(d.config_read(0x10, 4), 0xffff_800c);
}

#[test]
fn capabilities_name_each_structure_in_bar0() {
    let (mut d, _, _) = dev();
    for (t, off) in [
        (cap::COMMON_CFG, COMMON_OFFSET),
        (cap::NOTIFY_CFG, NOTIFY_OFFSET),
        (cap::ISR_CFG, ISR_OFFSET),
        (cap::DEVICE_CFG, DEVICE_OFFSET),
    ] {
        let at = find_cap(&mut d, t).unwrap();
        assert_eq!(d.config_read(at + 4, 1), 0, "bar");
        assert_eq!(u64::from(d.config_read(at + 8, 4)), off);
    }
    let n = find_cap(&mut d, cap::NOTIFY_CFG).unwrap();
    assert_eq!(d.config_read(n + 16, 4), NOTIFY_OFF_MULTIPLIER);
    assert!(find_cap(&mut d, cap::PCI_CFG).is_some());
}

#[test]
fn device_feature_offers_version_1_in_the_high_word() {
    let (mut d, _, _) = dev();
    wr(&mut d, common::DEVICE_FEATURE_SELECT, 4, 1);
    assert_eq!(rd(&mut d, common::DEVICE_FEATURE, 4) & 1, 1);
}

#[test]
fn full_init_reaches_driver_ok() {
    let (mut d, _, mock) = dev();
    assert_eq!(
        driver_init(&mut d, &mock, FEATURES),
        s::ACKNOWLEDGE | s::DRIVER | s::FEATURES_OK | s::DRIVER_OK
    );
}

#[test]
fn features_without_version_1_are_refused_at_features_ok() {
    let (mut d, _, mock) = dev();
    let st = driver_init(&mut d, &mock, feature::EVENT_IDX);
    assert_eq!(st & s::FEATURES_OK, 0);
    assert_ne!(d.stats().features_refused, 0);
}

#[test]
fn unoffered_feature_is_refused_at_features_ok() {
    let (mut d, _, mock) = dev();
    let st = driver_init(&mut d, &mock, feature::VERSION_1 | 1 << 34);
    assert_eq!(st & s::FEATURES_OK, 0);
}

#[test]
fn driver_ok_before_features_ok_is_ignored() {
    let (mut d, _, _) = dev();
    wr(
        &mut d,
        common::DEVICE_STATUS,
        1,
        u64::from(s::ACKNOWLEDGE | s::DRIVER | s::DRIVER_OK),
    );
    assert_eq!(rd(&mut d, common::DEVICE_STATUS, 1), 0);
    assert_eq!(d.stats().bad_status, 1);
}

#[test]
fn clearing_a_status_bit_is_ignored() {
    let (mut d, _, _) = dev();
    wr(
        &mut d,
        common::DEVICE_STATUS,
        1,
        u64::from(s::ACKNOWLEDGE | s::DRIVER),
    );
    wr(&mut d, common::DEVICE_STATUS, 1, u64::from(s::ACKNOWLEDGE));
    assert_eq!(
        rd(&mut d, common::DEVICE_STATUS, 1),
        u64::from(s::ACKNOWLEDGE | s::DRIVER)
    );
}

#[test]
fn writing_zero_to_status_resets_the_device() {
    let (mut d, _, mock) = dev();
    driver_init(&mut d, &mock, FEATURES);
    wr(&mut d, common::DEVICE_STATUS, 1, 0);
    assert_eq!(rd(&mut d, common::DEVICE_STATUS, 1), 0);
    assert_eq!(rd(&mut d, common::QUEUE_ENABLE, 2), 0);
    assert_eq!(rd(&mut d, common::QUEUE_SIZE, 2), 256);
}

#[test]
fn a_reset_completes_only_when_no_request_still_uses_guest_memory() {
    let (mut d, mem, mut mock) = dev_with(RamDisk::new(1 << 20).deferred());
    driver_init(&mut d, &mock, FEATURES);
    // A 512-byte IN at sector 0 (zeroed header): pending in the backend.
    let status = Ipa(RAM.0 + 0x3000);
    mem.fill(status, 1, 0xee).unwrap();
    mock.push(&[
        (Ipa(RAM.0 + 0x1000), 16, false),
        (Ipa(RAM.0 + 0x2000), 512, true),
        (status, 1, true),
    ]);
    notify(&mut d, 0);
    let before = rd(&mut d, common::DEVICE_STATUS, 1);
    wr(&mut d, common::DEVICE_STATUS, 1, 0);
    assert_eq!(
        rd(&mut d, common::DEVICE_STATUS, 1),
        before,
        "still resetting"
    );
    wr(&mut d, common::DEVICE_STATUS, 1, u64::from(s::ACKNOWLEDGE));
    assert_eq!(d.stats().write_during_reset, 1);
    assert_eq!(rd(&mut d, common::DEVICE_STATUS, 1), before);
    d.poll();
    assert_eq!(rd(&mut d, common::DEVICE_STATUS, 1), 0, "reset complete");
    assert_eq!(
        mock.used_idx(),
        0,
        "a request from before the reset is not returned"
    );
    assert_eq!(mem.bytes_at(status, 1).unwrap(), [0xee], "nor answered");
}

#[test]
fn a_reset_with_nothing_in_flight_completes_at_once() {
    let (mut d, _, mock) = dev_with(RamDisk::new(1 << 20).deferred());
    driver_init(&mut d, &mock, FEATURES);
    wr(&mut d, common::DEVICE_STATUS, 1, 0);
    assert_eq!(rd(&mut d, common::DEVICE_STATUS, 1), 0);
}

#[test]
fn msix_vectors_read_no_vector() {
    let (mut d, _, _) = dev();
    wr(&mut d, common::CONFIG_MSIX_VECTOR, 2, 3);
    assert_eq!(rd(&mut d, common::CONFIG_MSIX_VECTOR, 2), 0xffff);
    assert_eq!(rd(&mut d, common::QUEUE_MSIX_VECTOR, 2), 0xffff);
}

#[test]
fn queue_address_reads_back_as_one_64bit_or_two_32bit_halves() {
    let (mut d, _, _) = dev();
    wr(&mut d, common::QUEUE_DESC, 4, 0x1234_5000);
    wr(&mut d, common::QUEUE_DESC + 4, 4, 0x8);
    assert_eq!(rd(&mut d, common::QUEUE_DESC, 8), 0x8_1234_5000);
    assert_eq!(rd(&mut d, common::QUEUE_DESC + 4, 4), 0x8);
}

#[test]
fn wrong_width_access_reads_zero_and_is_counted() {
    let (mut d, _, _) = dev();
    assert_eq!(rd(&mut d, common::NUM_QUEUES, 4), 0);
    assert_eq!(rd(&mut d, common::DEVICE_FEATURE + 1, 1), 0);
    wr(&mut d, common::QUEUE_SELECT, 1, 5);
    assert_eq!(rd(&mut d, common::QUEUE_SELECT, 2), 0);
    assert_eq!(d.stats().bad_access, 3);
}

#[test]
fn every_width_and_offset_of_the_bar_is_answered_without_panic() {
    let (mut d, _, _) = dev();
    for size in [0u8, 1, 2, 3, 4, 8, 16] {
        for off in (0..BAR_SIZE + 8).step_by(1).filter(|o| o % 0x1000 < 0x48) {
            rd(&mut d, off, size);
            wr(&mut d, off, size, 0xffff_ffff_ffff_ffff);
        }
    }
}

#[test]
fn queue_select_out_of_range_reads_size_zero() {
    let (mut d, _, _) = dev();
    wr(&mut d, common::QUEUE_SELECT, 2, 7);
    assert_eq!(rd(&mut d, common::QUEUE_SIZE, 2), 0);
}

#[test]
fn queue_enable_with_a_bad_size_is_refused() {
    let (mut d, _, mock) = dev();
    wr(&mut d, common::QUEUE_SIZE, 2, 12);
    wr(&mut d, common::QUEUE_DESC, 8, mock.desc_table().0);
    wr(&mut d, common::QUEUE_ENABLE, 2, 1);
    assert_eq!(rd(&mut d, common::QUEUE_ENABLE, 2), 0);
    assert_eq!(d.stats().bad_queue_enable, 1);
}

#[test]
fn queue_config_is_frozen_while_enabled() {
    let (mut d, _, mock) = dev();
    driver_init(&mut d, &mock, FEATURES);
    wr(&mut d, common::QUEUE_SIZE, 2, 4);
    assert_eq!(rd(&mut d, common::QUEUE_SIZE, 2), 16);
    assert_eq!(d.stats().queue_write_while_enabled, 1);
}

#[test]
fn queue_reset_disables_the_queue() {
    let (mut d, _, mock) = dev();
    driver_init(&mut d, &mock, FEATURES);
    wr(&mut d, common::QUEUE_RESET, 2, 1);
    assert_eq!(rd(&mut d, common::QUEUE_ENABLE, 2), 0);
    assert_eq!(rd(&mut d, common::QUEUE_RESET, 2), 0);
}

#[test]
fn queue_reset_without_ring_reset_is_ignored() {
    let (mut d, _, mock) = dev();
    driver_init(&mut d, &mock, feature::VERSION_1);
    wr(&mut d, common::QUEUE_RESET, 2, 1);
    assert_eq!(rd(&mut d, common::QUEUE_ENABLE, 2), 1);
    assert_eq!(d.stats().bad_queue_reset, 1);
}

#[test]
fn device_config_reads_capacity_in_sectors_at_32bit() {
    let (mut d, _, _) = dev();
    assert_eq!(rd(&mut d, DEVICE_OFFSET, 4), 2048);
    assert_eq!(rd(&mut d, DEVICE_OFFSET + 4, 4), 0);
    assert_eq!(rd(&mut d, DEVICE_OFFSET, 1), 0);
    assert_eq!(rd(&mut d, DEVICE_OFFSET + 1, 1), 8);
}

#[test]
fn device_config_past_its_end_reads_zero_and_is_counted() {
    let (mut d, _, _) = dev();
    assert_eq!(rd(&mut d, DEVICE_OFFSET + 60, 4), 0);
    assert_eq!(d.stats().bad_access, 1);
}

#[test]
fn used_buffer_raises_isr_and_intx_until_isr_is_read() {
    let (mut d, _, mut mock) = dev();
    driver_init(&mut d, &mock, FEATURES & !feature::EVENT_IDX);
    mock.push(&[
        (Ipa(RAM.0 + 0x1000), 16, false),
        (Ipa(RAM.0 + 0x2000), 1, true),
    ]);
    notify(&mut d, 0);
    assert_eq!(d.intx(), Intx::Level(true));
    assert_eq!(rd(&mut d, ISR_OFFSET, 1), 1);
    assert_eq!(d.intx(), Intx::Level(false));
    assert_eq!(rd(&mut d, ISR_OFFSET, 1), 0);
}

#[test]
fn interrupt_disable_masks_intx() {
    let (mut d, _, mut mock) = dev();
    driver_init(&mut d, &mock, FEATURES & !feature::EVENT_IDX);
    d.config_write(4, 2, 0x0406, &mut alloc::vec::Vec::new());
    mock.push(&[
        (Ipa(RAM.0 + 0x1000), 16, false),
        (Ipa(RAM.0 + 0x2000), 1, true),
    ]);
    notify(&mut d, 0);
    assert_eq!(d.intx(), Intx::Level(false));
    assert_ne!(
        d.config_read(6, 2) & 0x8,
        0,
        "Status.Interrupt Status still says pending"
    );
}

#[test]
fn malformed_chain_sets_needs_reset_and_a_config_interrupt() {
    let (mut d, _, mut mock) = dev();
    driver_init(&mut d, &mock, FEATURES);
    mock.make_available(99);
    notify(&mut d, 0);
    assert_ne!(
        rd(&mut d, common::DEVICE_STATUS, 1) as u8 & s::NEEDS_RESET,
        0
    );
    assert_eq!(rd(&mut d, ISR_OFFSET, 1), u64::from(isr::CONFIG));
    assert_eq!(d.last_error(), Some(crate::QueueError::HeadOutOfRange(99)));
}

#[test]
fn notify_before_driver_ok_is_counted_and_ignored() {
    let (mut d, _, _) = dev();
    notify(&mut d, 0);
    assert_eq!(d.stats().bad_notify, 1);
}

#[test]
fn function_reset_restores_config_space_and_device() {
    let (mut d, _, mock) = dev();
    driver_init(&mut d, &mock, FEATURES);
    d.config_write(0x10, 4, 0x1000_0000, &mut alloc::vec::Vec::new());
    d.reset();
    assert_eq!(d.config_read(0x10, 4), 0x0c);
    assert_eq!(rd(&mut d, common::DEVICE_STATUS, 1), 0);
}

#[test]
fn pci_cfg_window_reads_and_writes_the_bar() {
    let (mut d, _, _) = dev();
    let at = find_cap(&mut d, cap::PCI_CFG).unwrap();
    let mut rq = alloc::vec::Vec::new();
    d.config_write(at + 4, 1, 0, &mut rq);
    d.config_write(at + 8, 4, common::DEVICE_STATUS as u32, &mut rq);
    d.config_write(at + 12, 4, 1, &mut rq);
    d.config_write(at + 16, 4, u32::from(s::ACKNOWLEDGE), &mut rq);
    assert_eq!(d.device_status(), s::ACKNOWLEDGE);
    d.config_write(at + 8, 4, common::NUM_QUEUES as u32, &mut rq);
    d.config_write(at + 12, 4, 2, &mut rq);
    assert_eq!(d.config_read(at + 16, 4), 1);
}

#[test]
fn pci_cfg_window_longer_than_its_data_gets_nothing() {
    let (mut d, _, _) = dev();
    let at = find_cap(&mut d, cap::PCI_CFG).unwrap();
    let mut rq = alloc::vec::Vec::new();
    d.config_write(at + 8, 4, common::DEVICE_STATUS as u32, &mut rq);
    d.config_write(at + 12, 4, 8, &mut rq);
    d.config_write(at + 16, 4, 1, &mut rq);
    assert_eq!(d.device_status(), 0);
    assert_eq!(d.config_read(at + 16, 4), 0);
    assert_eq!(d.stats().bad_pci_cfg_window, 2);
}

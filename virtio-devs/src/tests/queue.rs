//! Split virtqueue behaviour (virtio 1.2, 2.7) against the driver-side mock.

use crate::memory::{GuestMemory, MemoryError};
use crate::queue::*;
use crate::testing::{MockQueue, VecMemory};
use arch_emu::addr::{Ipa, Pa};

const RAM: Ipa = Ipa(0x4000_0000);
const DATA: Ipa = Ipa(0x4001_0000);

fn setup(size: u16) -> (VecMemory, MockQueue, Queue) {
    let mem = VecMemory::new(RAM, 0x2_0000, Pa(0x8_0000_0000));
    let mock = MockQueue::new(&mem, RAM, size);
    let q = mock.device_queue(false, true);
    (mem, mock, q)
}

fn raw(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
    RawDescriptor {
        addr,
        len,
        flags,
        next,
    }
}

#[test]
fn empty_ring_pops_nothing() {
    let (mem, _mock, mut q) = setup(8);
    assert_eq!(q.pop(&mem), Ok(None));
}

#[test]
fn chain_is_copied_readable_then_writable() {
    let (mem, mut mock, mut q) = setup(8);
    let head = mock.push(&[
        (DATA, 16, false),
        (Ipa(DATA.0 + 0x100), 512, true),
        (Ipa(DATA.0 + 0x300), 1, true),
    ]);
    let c = q.pop(&mem).unwrap().unwrap();
    assert_eq!(c.head_index(), head);
    assert_eq!(c.descriptors().len(), 3);
    assert_eq!((c.readable_len(), c.writable_len()), (16, 513));
}

#[test]
fn indirect_table_is_flattened() {
    let (mem, mut mock, mut q) = setup(8);
    let head = mock.add_indirect(
        Ipa(DATA.0 + 0x1000),
        &[(DATA, 16, false), (Ipa(DATA.0 + 0x100), 1, true)],
    );
    mock.make_available(head);
    let c = q.pop(&mem).unwrap().unwrap();
    assert_eq!(
        c.descriptors(),
        &[
            Descriptor {
                addr: DATA,
                len: 16,
                writable: false
            },
            Descriptor {
                addr: Ipa(DATA.0 + 0x100),
                len: 1,
                writable: true
            },
        ]
    );
}

#[test]
fn indirect_without_the_feature_is_refused() {
    let (mem, mut mock, _) = setup(8);
    let mut q = mock.device_queue(false, false);
    let head = mock.add_indirect(Ipa(DATA.0 + 0x1000), &[(DATA, 16, false)]);
    mock.make_available(head);
    assert_eq!(q.pop(&mem), Err(QueueError::IndirectNotNegotiated));
}

#[test]
fn descriptor_loop_is_refused_as_too_long() {
    let (mem, mut mock, mut q) = setup(4);
    mock.write_desc(0, raw(DATA.0, 1, VIRTQ_DESC_F_NEXT, 1));
    mock.write_desc(1, raw(DATA.0, 1, VIRTQ_DESC_F_NEXT, 0));
    mock.make_available(0);
    assert_eq!(q.pop(&mem), Err(QueueError::ChainTooLong));
}

#[test]
fn chain_longer_than_the_queue_is_refused() {
    let (mem, mut mock, mut q) = setup(4);
    for i in 0..4 {
        mock.write_desc(i, raw(DATA.0, 1, VIRTQ_DESC_F_NEXT, (i + 1) % 4));
    }
    mock.make_available(0);
    assert_eq!(q.pop(&mem), Err(QueueError::ChainTooLong));
}

#[test]
fn indirect_loop_is_refused() {
    let (mem, mut mock, mut q) = setup(4);
    let t = Ipa(DATA.0 + 0x1000);
    mem.write(t, &raw(DATA.0, 1, VIRTQ_DESC_F_NEXT, 1).to_bytes())
        .unwrap();
    mem.write(
        Ipa(t.0 + 16),
        &raw(DATA.0, 1, VIRTQ_DESC_F_NEXT, 0).to_bytes(),
    )
    .unwrap();
    mock.write_desc(0, raw(t.0, 32, VIRTQ_DESC_F_INDIRECT, 0));
    mock.make_available(0);
    assert_eq!(q.pop(&mem), Err(QueueError::ChainTooLong));
}

#[test]
fn indirect_in_indirect_is_refused() {
    let (mem, mut mock, mut q) = setup(4);
    let t = Ipa(DATA.0 + 0x1000);
    mem.write(t, &raw(t.0, 16, VIRTQ_DESC_F_INDIRECT, 0).to_bytes())
        .unwrap();
    mock.write_desc(0, raw(t.0, 16, VIRTQ_DESC_F_INDIRECT, 0));
    mock.make_available(0);
    assert_eq!(q.pop(&mem), Err(QueueError::IndirectInIndirect));
}

#[test]
fn indirect_with_next_is_refused() {
    let (mem, mut mock, mut q) = setup(4);
    mock.write_desc(
        0,
        raw(DATA.0, 16, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, 1),
    );
    mock.make_available(0);
    assert_eq!(q.pop(&mem), Err(QueueError::IndirectWithNext));
}

#[test]
fn indirect_table_of_odd_length_is_refused() {
    let (mem, mut mock, mut q) = setup(4);
    mock.write_desc(0, raw(DATA.0, 17, VIRTQ_DESC_F_INDIRECT, 0));
    mock.make_available(0);
    assert_eq!(q.pop(&mem), Err(QueueError::BadIndirectLength(17)));
}

#[test]
fn readable_after_writable_is_refused() {
    let (mem, mut mock, mut q) = setup(8);
    mock.push(&[(DATA, 1, true), (DATA, 16, false)]);
    assert_eq!(q.pop(&mem), Err(QueueError::ReadableAfterWritable));
}

#[test]
fn overflowing_total_length_is_refused() {
    let (mem, mut mock, mut q) = setup(8);
    mock.push(&[(DATA, u32::MAX, true), (DATA, 2, true)]);
    assert!(matches!(
        q.pop(&mem),
        Err(QueueError::LengthOverflow | QueueError::BufferOutsideMemory(_))
    ));
}

#[test]
fn address_that_wraps_is_refused() {
    let (mem, mut mock, mut q) = setup(8);
    mock.push(&[(Ipa(u64::MAX - 4), 16, false)]);
    assert_eq!(q.pop(&mem), Err(QueueError::LengthOverflow));
}

#[test]
fn buffer_outside_guest_memory_is_refused() {
    let (mem, mut mock, mut q) = setup(8);
    mock.push(&[(Ipa(0x1000), 16, false)]);
    assert!(matches!(
        q.pop(&mem),
        Err(QueueError::BufferOutsideMemory(
            MemoryError::OutOfRange { .. }
        ))
    ));
}

#[test]
fn head_index_past_the_queue_is_refused() {
    let (mem, mut mock, mut q) = setup(8);
    mock.make_available(9);
    assert_eq!(q.pop(&mem), Err(QueueError::HeadOutOfRange(9)));
}

#[test]
fn next_index_past_the_queue_is_refused() {
    let (mem, mut mock, mut q) = setup(8);
    mock.write_desc(0, raw(DATA.0, 1, VIRTQ_DESC_F_NEXT, 8));
    mock.make_available(0);
    assert_eq!(q.pop(&mem), Err(QueueError::NextOutOfRange(8)));
}

#[test]
fn avail_idx_too_far_ahead_is_refused() {
    let (mem, mut mock, mut q) = setup(8);
    mock.set_avail_idx(9);
    assert_eq!(
        q.pop(&mem),
        Err(QueueError::AvailIdxTooFar {
            avail_idx: 9,
            next_avail: 0
        })
    );
}

#[test]
fn ring_outside_memory_fails_validation() {
    let (mem, _mock, mut q) = setup(8);
    q.used_ring = Ipa(0x1000);
    assert!(matches!(
        q.validate(&mem),
        Err(QueueError::RingOutsideMemory(_))
    ));
}

#[test]
fn size_not_a_power_of_two_fails_validation() {
    let (mem, _mock, mut q) = setup(8);
    q.size = 6;
    assert_eq!(q.validate(&mem), Err(QueueError::BadSize(6)));
}

#[test]
fn misaligned_table_fails_validation() {
    let (mem, _mock, mut q) = setup(8);
    q.desc_table = Ipa(RAM.0 + 8);
    assert_eq!(q.validate(&mem), Err(QueueError::Misaligned));
}

#[test]
fn add_used_publishes_element_then_index() {
    let (mem, mut mock, mut q) = setup(8);
    let head = mock.push(&[(DATA, 1, true)]);
    let c = q.pop(&mem).unwrap().unwrap();
    q.add_used(&mem, c.head_index(), 1).unwrap();
    assert_eq!(mock.used_idx(), 1);
    assert_eq!(mock.used_elem(0), (u32::from(head), 1));
}

#[test]
fn no_interrupt_flag_suppresses_notification_without_event_idx() {
    let (mem, mut mock, mut q) = setup(8);
    mock.push(&[(DATA, 1, true)]);
    mock.set_avail_flags(VIRTQ_AVAIL_F_NO_INTERRUPT);
    let c = q.pop(&mem).unwrap().unwrap();
    q.add_used(&mem, c.head_index(), 0).unwrap();
    assert_eq!(q.needs_notification(&mem), Ok(false));
}

#[test]
fn used_event_decides_notification_with_event_idx() {
    let (mem, mut mock, _) = setup(8);
    let mut q = mock.device_queue(true, true);
    for _ in 0..3 {
        mock.push(&[(DATA, 1, true)]);
    }
    mock.set_used_event(1);
    let c = q.pop(&mem).unwrap().unwrap();
    q.add_used(&mem, c.head_index(), 0).unwrap();
    assert_eq!(
        q.needs_notification(&mem),
        Ok(false),
        "used_idx 1 has not passed used_event 1"
    );
    let c = q.pop(&mem).unwrap().unwrap();
    q.add_used(&mem, c.head_index(), 0).unwrap();
    assert_eq!(
        q.needs_notification(&mem),
        Ok(true),
        "used_idx 2 passed used_event 1"
    );
    let c = q.pop(&mem).unwrap().unwrap();
    q.add_used(&mem, c.head_index(), 0).unwrap();
    assert_eq!(
        q.needs_notification(&mem),
        Ok(false),
        "already notified past used_event"
    );
}

#[test]
fn enable_notification_writes_avail_event_and_reports_pending() {
    let (mem, mut mock, _) = setup(8);
    let mut q = mock.device_queue(true, true);
    mock.push(&[(DATA, 1, true)]);
    q.pop(&mem).unwrap().unwrap();
    assert_eq!(q.enable_notification(&mem), Ok(false));
    assert_eq!(mock.avail_event(), 1);
    mock.push(&[(DATA, 1, true)]);
    assert_eq!(q.enable_notification(&mem), Ok(true));
}

#[test]
fn disable_notification_puts_avail_event_behind_the_driver() {
    let (mem, mut mock, _) = setup(8);
    let mut q = mock.device_queue(true, true);
    mock.push(&[(DATA, 1, true)]);
    q.pop(&mem).unwrap().unwrap();
    q.disable_notification(&mem).unwrap();
    assert_eq!(mock.avail_event(), 0, "next_avail 1, less one");
    for n in 1..=20u16 {
        let old = mock.avail_idx();
        mock.push(&[(DATA, 1, true)]);
        assert!(!mock.driver_must_notify(old, true), "buffer {n}");
    }
    assert_eq!(
        q.enable_notification(&mem),
        Ok(true),
        "pending buffers reported"
    );
    assert_eq!(mock.avail_event(), 1);
}

#[test]
fn disable_notification_without_event_idx_sets_no_notify_until_enabled() {
    let (mem, mut mock, _) = setup(8);
    let mut q = mock.device_queue(false, true);
    q.disable_notification(&mem).unwrap();
    let old = mock.avail_idx();
    mock.push(&[(DATA, 1, true)]);
    assert!(!mock.driver_must_notify(old, false));
    assert_eq!(q.enable_notification(&mem), Ok(true));
    assert_eq!(mock.used_flags(), 0);
    assert!(mock.driver_must_notify(old, false));
}

#[test]
fn indices_wrap_past_u16() {
    let (mem, mut mock, mut q) = setup(4);
    for _ in 0..70_000u32 {
        let h = mock.push(&[(DATA, 1, true)]);
        let c = q.pop(&mem).unwrap().unwrap();
        assert_eq!(c.head_index(), h);
        q.add_used(&mem, h, 1).unwrap();
    }
    assert_eq!(mock.used_idx(), (70_000u32 % 65_536) as u16);
}

#[test]
fn queue_max_size_is_rounded_to_a_power_of_two() {
    assert_eq!(Queue::new(300).max_size(), 256);
    assert_eq!(Queue::new(100).max_size(), 64);
    assert_eq!(Queue::new(0).max_size(), 1);
}

#[test]
fn host_ranges_of_fake_memory_split_at_scattered_pages() {
    let mem = VecMemory::new(RAM, 0x4000, Pa(0x10_0000));
    let mut out = alloc::vec::Vec::new();
    mem.host_ranges(
        arch_emu::addr::MemRange::new(Ipa(RAM.0 + 0xff0), 0x20),
        &mut out,
    )
    .unwrap();
    assert_eq!(
        out,
        [
            arch_emu::addr::MemRange::new(Pa(0x10_1ff0), 0x10),
            arch_emu::addr::MemRange::new(Pa(0x10_0000), 0x10),
        ]
    );
}

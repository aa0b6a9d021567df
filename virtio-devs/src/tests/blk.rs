//! The virtio-blk request path (virtio 1.2, 5.2.6): each request type, each
//! bad request, and asynchronous completion.

use super::pci::{dev_with, Dev, FEATURES, RAM};
use crate::blk::{feature, req, status, RamDisk};
use crate::device::feature as vf;
use crate::memory::GuestMemory;
use crate::testing::{driver_init, driver_init_queues, notify, MockQueue, VecMemory};
use arch_emu::addr::Ipa;
use vbus::PciFunction;

const HDR: Ipa = Ipa(RAM.0 + 0x1000);
const DATA: Ipa = Ipa(RAM.0 + 0x2000);
const STATUS: Ipa = Ipa(RAM.0 + 0x3000);
const ALL: u64 =
    FEATURES | feature::FLUSH | feature::DISCARD | feature::WRITE_ZEROES | feature::BLK_SIZE;

fn ready(disk: RamDisk) -> (Dev, VecMemory, MockQueue) {
    let (mut d, mem, mock) = dev_with(disk);
    driver_init(&mut d, &mock, ALL);
    (d, mem, mock)
}

fn header(mem: &VecMemory, t: u32, sector: u64) {
    let mut h = [0u8; 16];
    h[..4].copy_from_slice(&t.to_le_bytes());
    h[8..].copy_from_slice(&sector.to_le_bytes());
    mem.write(HDR, &h).unwrap();
    mem.write(STATUS, &[0xff]).unwrap();
}

fn status_byte(mem: &VecMemory) -> u8 {
    mem.bytes_at(STATUS, 1).unwrap()[0]
}

/// Pushes `bufs`, notifies, and returns (status byte, used len).
fn run(
    d: &mut Dev,
    mem: &VecMemory,
    mock: &mut MockQueue,
    bufs: &[crate::testing::Buf],
) -> (u8, u32) {
    let before = mock.used_idx();
    mock.push(bufs);
    notify(d, 0);
    assert_eq!(mock.used_idx(), before.wrapping_add(1), "request used");
    (status_byte(mem), mock.used_elem(before).1)
}

#[test]
fn write_then_read_round_trips_the_data() {
    let (mut d, mem, mut mock) = ready(RamDisk::new(1 << 20));
    mem.fill(DATA, 1024, 0xab).unwrap();
    header(&mem, req::OUT, 3);
    assert_eq!(
        run(
            &mut d,
            &mem,
            &mut mock,
            &[(HDR, 16, false), (DATA, 1024, false), (STATUS, 1, true)]
        ),
        (status::OK, 1)
    );
    mem.fill(DATA, 1024, 0).unwrap();
    header(&mem, req::IN, 3);
    assert_eq!(
        run(
            &mut d,
            &mem,
            &mut mock,
            &[(HDR, 16, false), (DATA, 1024, true), (STATUS, 1, true)]
        ),
        (status::OK, 1025)
    );
    assert_eq!(mem.bytes_at(DATA, 1024).unwrap(), alloc::vec![0xab; 1024]);
    assert_eq!(
        &d.device().backend().data()[3 * 512..3 * 512 + 4],
        &[0xab; 4]
    );
}

#[test]
fn header_and_data_may_share_a_descriptor() {
    let (mut d, mem, mut mock) = ready(RamDisk::new(1 << 20));
    header(&mem, req::IN, 0);
    d.device_mut().backend_mut().data_mut()[0] = 7;
    assert_eq!(
        run(
            &mut d,
            &mem,
            &mut mock,
            &[(HDR, 16, false), (DATA, 513, true)]
        )
        .1,
        513
    );
    assert_eq!(mem.bytes_at(DATA, 2).unwrap(), [7, 0]);
    assert_eq!(mem.bytes_at(Ipa(DATA.0 + 512), 1).unwrap(), [status::OK]);
}

#[test]
fn flush_is_ok_and_reaches_the_backend() {
    let (mut d, mem, mut mock) = ready(RamDisk::new(1 << 20));
    header(&mem, req::FLUSH, 0);
    assert_eq!(
        run(
            &mut d,
            &mem,
            &mut mock,
            &[(HDR, 16, false), (STATUS, 1, true)]
        ),
        (status::OK, 1)
    );
    assert_eq!(d.device().backend().flushes(), 1);
}

#[test]
fn get_id_writes_the_id_string() {
    let (mut d, mem, mut mock) = ready(RamDisk::new(1 << 20));
    header(&mem, req::GET_ID, 0);
    assert_eq!(
        run(
            &mut d,
            &mem,
            &mut mock,
            &[(HDR, 16, false), (DATA, 20, true), (STATUS, 1, true)]
        ),
        (status::OK, 21)
    );
    assert_eq!(&mem.bytes_at(DATA, 8).unwrap(), b"ramdisk\0");
}

fn range_segment(mem: &VecMemory, sector: u64, num: u32, flags: u32) {
    let mut s = [0u8; 16];
    s[..8].copy_from_slice(&sector.to_le_bytes());
    s[8..12].copy_from_slice(&num.to_le_bytes());
    s[12..].copy_from_slice(&flags.to_le_bytes());
    mem.write(DATA, &s).unwrap();
}

#[test]
fn write_zeroes_clears_the_range() {
    let (mut d, mem, mut mock) = ready(RamDisk::new(1 << 20));
    d.device_mut().backend_mut().data_mut()[1024..2048].fill(9);
    header(&mem, req::WRITE_ZEROES, 0);
    range_segment(&mem, 2, 2, 0);
    assert_eq!(
        run(
            &mut d,
            &mem,
            &mut mock,
            &[(HDR, 16, false), (DATA, 16, false), (STATUS, 1, true)]
        )
        .0,
        status::OK
    );
    assert!(d.device().backend().data()[1024..2048]
        .iter()
        .all(|&b| b == 0));
}

#[test]
fn discard_with_the_unmap_flag_is_unsupported() {
    let (mut d, mem, mut mock) = ready(RamDisk::new(1 << 20));
    header(&mem, req::DISCARD, 0);
    range_segment(&mem, 0, 1, 1);
    assert_eq!(
        run(
            &mut d,
            &mem,
            &mut mock,
            &[(HDR, 16, false), (DATA, 16, false), (STATUS, 1, true)]
        )
        .0,
        status::UNSUPP
    );
}

#[test]
fn discard_without_the_feature_is_unsupported() {
    let (mut d, mem, mock) = dev_with(RamDisk::new(1 << 20));
    let mut mock = mock;
    driver_init(&mut d, &mock, FEATURES);
    header(&mem, req::DISCARD, 0);
    range_segment(&mem, 0, 1, 0);
    assert_eq!(
        run(
            &mut d,
            &mem,
            &mut mock,
            &[(HDR, 16, false), (DATA, 16, false), (STATUS, 1, true)]
        )
        .0,
        status::UNSUPP
    );
}

#[test]
fn discard_beyond_capacity_is_ioerr() {
    let (mut d, mem, mut mock) = ready(RamDisk::new(1 << 20));
    header(&mem, req::DISCARD, 0);
    range_segment(&mem, 2047, 2, 0);
    assert_eq!(
        run(
            &mut d,
            &mem,
            &mut mock,
            &[(HDR, 16, false), (DATA, 16, false), (STATUS, 1, true)]
        )
        .0,
        status::IOERR
    );
}

#[test]
fn unknown_request_type_is_unsupported() {
    let (mut d, mem, mut mock) = ready(RamDisk::new(1 << 20));
    header(&mem, 77, 0);
    assert_eq!(
        run(
            &mut d,
            &mem,
            &mut mock,
            &[(HDR, 16, false), (STATUS, 1, true)]
        ),
        (status::UNSUPP, 1)
    );
}

#[test]
fn short_header_is_ioerr() {
    let (mut d, mem, mut mock) = ready(RamDisk::new(1 << 20));
    header(&mem, req::IN, 0);
    assert_eq!(
        run(
            &mut d,
            &mem,
            &mut mock,
            &[(HDR, 8, false), (STATUS, 1, true)]
        )
        .0,
        status::IOERR
    );
}

#[test]
fn read_past_capacity_is_ioerr() {
    let (mut d, mem, mut mock) = ready(RamDisk::new(1 << 20));
    header(&mem, req::IN, 2047);
    assert_eq!(
        run(
            &mut d,
            &mem,
            &mut mock,
            &[(HDR, 16, false), (DATA, 1024, true), (STATUS, 1, true)]
        ),
        (status::IOERR, 1)
    );
}

#[test]
fn sector_that_overflows_is_ioerr() {
    let (mut d, mem, mut mock) = ready(RamDisk::new(1 << 20));
    header(&mem, req::IN, u64::MAX);
    assert_eq!(
        run(
            &mut d,
            &mem,
            &mut mock,
            &[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)]
        )
        .0,
        status::IOERR
    );
}

#[test]
fn data_not_a_multiple_of_512_is_ioerr() {
    let (mut d, mem, mut mock) = ready(RamDisk::new(1 << 20));
    header(&mem, req::OUT, 0);
    assert_eq!(
        run(
            &mut d,
            &mem,
            &mut mock,
            &[(HDR, 16, false), (DATA, 100, false), (STATUS, 1, true)]
        )
        .0,
        status::IOERR
    );
}

#[test]
fn write_to_a_read_only_disk_is_ioerr() {
    let (mut d, mem, mut mock) = ready(RamDisk::new(1 << 20).with_read_only());
    header(&mem, req::OUT, 0);
    assert_eq!(
        run(
            &mut d,
            &mem,
            &mut mock,
            &[(HDR, 16, false), (DATA, 512, false), (STATUS, 1, true)]
        )
        .0,
        status::IOERR
    );
    assert!(d.device().backend().data().iter().all(|&b| b == 0));
}

#[test]
fn chain_without_a_writable_status_is_used_with_length_zero() {
    let (mut d, mem, mut mock) = ready(RamDisk::new(1 << 20));
    header(&mem, req::IN, 0);
    assert_eq!(
        run(
            &mut d,
            &mem,
            &mut mock,
            &[(HDR, 16, false), (STATUS, 1, false)]
        )
        .1,
        0
    );
    assert_eq!(d.device().stats().no_status, 1);
}

#[test]
fn empty_reads_and_writes_are_answered_ok_without_the_backend() {
    // A deferred backend would leave a submitted request pending: these
    // complete at once, so they never reached it.
    let (mut d, mem, mut mock) = ready(RamDisk::new(1 << 20).deferred());
    for t in [req::IN, req::OUT] {
        header(&mem, t, 0);
        mock.push(&[(HDR, 16, false), (STATUS, 1, true)]);
        notify(&mut d, 0);
        assert_eq!(status_byte(&mem), status::OK, "type {t}");
    }
    assert_eq!(mock.used_idx(), 2);
    // Past the end of the disk it is still an error.
    header(&mem, req::IN, 1 << 20);
    mock.push(&[(HDR, 16, false), (STATUS, 1, true)]);
    notify(&mut d, 0);
    assert_eq!(status_byte(&mem), status::IOERR);
}

#[test]
fn deferred_backend_completes_on_poll() {
    let (mut d, mem, mut mock) = ready(RamDisk::new(1 << 20).deferred());
    header(&mem, req::FLUSH, 0);
    mock.push(&[(HDR, 16, false), (STATUS, 1, true)]);
    notify(&mut d, 0);
    assert_eq!(mock.used_idx(), 0);
    assert!(d.poll());
    assert_eq!((mock.used_idx(), status_byte(&mem)), (1, status::OK));
}

#[test]
fn in_flight_requests_are_bounded_by_the_queue_size() {
    let (mut d, mem, mut mock) = ready(RamDisk::new(1 << 20).deferred());
    header(&mem, req::FLUSH, 0);
    for _ in 0..16 {
        mock.push(&[(HDR, 16, false), (STATUS, 1, true)]);
    }
    notify(&mut d, 0);
    assert_eq!(d.device().in_flight(), 16);
    // Orphaned by a reset, they keep their slots until the backend finishes.
    d.reset();
    assert_eq!(d.device().in_flight(), 16);
}

#[test]
fn completion_after_a_device_reset_is_dropped() {
    let (mut d, mem, mut mock) = ready(RamDisk::new(1 << 20).deferred());
    header(&mem, req::FLUSH, 0);
    mock.push(&[(HDR, 16, false), (STATUS, 1, true)]);
    notify(&mut d, 0);
    d.bar_write(
        0,
        crate::pci::common::DEVICE_STATUS,
        1,
        0,
        &mut alloc::vec::Vec::new(),
    );
    d.device_mut().poll_for_test(&mem);
    assert_eq!(mock.used_idx(), 0);
    assert_eq!(d.device().stats().stale_completions, 1);
}

#[test]
fn config_offers_seg_max_and_blk_size() {
    let (d, _, _) = dev_with(RamDisk::new(1 << 20));
    let f = d.offered_features();
    assert_ne!(f & feature::SEG_MAX, 0);
    assert_ne!(f & feature::BLK_SIZE, 0);
    assert_ne!(f & vf::VERSION_1, 0);
}

/// Pushes a flush request (the deferred RAM disk holds it until polled)
/// and returns the driver's `avail_idx` before it.
fn push_flush(mem: &VecMemory, mock: &mut MockQueue) -> u16 {
    header(mem, req::FLUSH, 0);
    let old = mock.avail_idx();
    mock.push(&[(HDR, 16, false), (STATUS, 1, true)]);
    old
}

#[test]
fn requests_in_flight_ask_the_driver_not_to_notify() {
    let (mut d, mem, mut mock) = ready(RamDisk::new(1 << 20).deferred());
    push_flush(&mem, &mut mock);
    push_flush(&mem, &mut mock);
    notify(&mut d, 0);
    assert_eq!(d.device().in_flight(), 2);
    let old = push_flush(&mem, &mut mock);
    assert!(!mock.driver_must_notify(old, true));
}

#[test]
fn requests_made_available_without_a_notification_are_taken_on_a_completion() {
    let (mut d, mem, mut mock) = ready(RamDisk::new(1 << 20).deferred());
    push_flush(&mem, &mut mock);
    notify(&mut d, 0);
    push_flush(&mem, &mut mock);
    push_flush(&mem, &mut mock);
    assert!(d.poll());
    assert_eq!(mock.used_idx(), 1);
    assert_eq!(d.device().in_flight(), 2, "taken without a notification");
    d.poll();
    assert_eq!(mock.used_idx(), 3);
}

#[test]
fn notifications_are_asked_for_again_once_nothing_is_in_flight() {
    let (mut d, mem, mut mock) = ready(RamDisk::new(1 << 20).deferred());
    push_flush(&mem, &mut mock);
    notify(&mut d, 0);
    d.poll();
    assert_eq!(d.device().in_flight(), 0);
    let old = push_flush(&mem, &mut mock);
    assert!(mock.driver_must_notify(old, true));
}

#[test]
fn without_event_idx_requests_in_flight_set_no_notify_until_none_is() {
    let (mut d, mem, mut mock) = dev_with(RamDisk::new(1 << 20).deferred());
    driver_init(&mut d, &mock, ALL & !vf::EVENT_IDX);
    push_flush(&mem, &mut mock);
    notify(&mut d, 0);
    let old = push_flush(&mem, &mut mock);
    assert!(!mock.driver_must_notify(old, false));
    d.poll();
    d.poll();
    assert_eq!((mock.used_idx(), d.device().in_flight()), (2, 0));
    assert!(mock.driver_must_notify(old, false));
}

#[test]
fn a_backend_that_completes_at_once_leaves_notifications_on() {
    let (mut d, mem, mut mock) = ready(RamDisk::new(1 << 20));
    push_flush(&mem, &mut mock);
    notify(&mut d, 0);
    assert_eq!(mock.used_idx(), 1);
    let old = push_flush(&mem, &mut mock);
    assert!(mock.driver_must_notify(old, true));
}

/// A device with two request queues over a deferred RAM disk, both queues
/// set up by the driver: (device, memory, queue 0, queue 1).
fn two_queues() -> (Dev, VecMemory, MockQueue, MockQueue) {
    let (_, mem, q0) = dev_with(RamDisk::new(1 << 20));
    let q1 = MockQueue::new(&mem, Ipa(RAM.0 + 0x8000), 16);
    let blk = crate::blk::VirtioBlk::with_queues(RamDisk::new(1 << 20).deferred(), 2);
    let mut d = crate::pci::VirtioPci::new(blk, mem.clone());
    driver_init_queues(&mut d, &[&q0, &q1], ALL | feature::MQ);
    (d, mem, q0, q1)
}

#[test]
fn a_device_with_two_queues_offers_mq_and_says_how_many() {
    let (d, _, _, _) = two_queues();
    assert_ne!(d.offered_features() & feature::MQ, 0);
    let mut n = [0u8; 2];
    crate::device::VirtioDevice::read_config(d.device(), crate::blk::cfg::NUM_QUEUES, &mut n);
    assert_eq!(u16::from_le_bytes(n), 2);
}

#[test]
fn a_device_with_one_queue_offers_no_mq() {
    let (d, _, _) = dev_with(RamDisk::new(1 << 20));
    assert_eq!(d.offered_features() & feature::MQ, 0);
}

#[test]
fn each_queue_answers_its_own_requests() {
    let (mut d, mem, mut q0, mut q1) = two_queues();
    push_flush(&mem, &mut q1);
    notify(&mut d, 1);
    push_flush(&mem, &mut q0);
    push_flush(&mem, &mut q0);
    notify(&mut d, 0);
    assert_eq!(d.device().in_flight(), 3);
    d.poll();
    assert_eq!((q0.used_idx(), q1.used_idx()), (2, 1));
}

#[test]
fn a_queue_reset_orphans_only_that_queues_requests() {
    let (mut d, mem, mut q0, mut q1) = two_queues();
    push_flush(&mem, &mut q0);
    notify(&mut d, 0);
    push_flush(&mem, &mut q1);
    notify(&mut d, 1);
    crate::device::VirtioDevice::queue_reset(d.device_mut(), 1);
    d.poll();
    assert_eq!((q0.used_idx(), q1.used_idx()), (1, 0));
    assert_eq!(d.device().stats().stale_completions, 1);
}

#[test]
fn each_queue_asks_for_notifications_by_its_own_requests_in_flight() {
    let (mut d, mem, mut q0, mut q1) = two_queues();
    push_flush(&mem, &mut q1);
    notify(&mut d, 1);
    let old0 = push_flush(&mem, &mut q0);
    assert!(
        q0.driver_must_notify(old0, true),
        "queue 0 has nothing in flight"
    );
    let old1 = push_flush(&mem, &mut q1);
    assert!(!q1.driver_must_notify(old1, true), "queue 1 has");
}

//! virtio-console (virtio 1.2, 5.3): the transmitq to the port's output,
//! input through the receiveq, refused chains and reset.

use super::pci::{FEATURES, RAM};
use crate::console::{ConsolePort, VirtioConsole, RECEIVEQ, TRANSMITQ};
use crate::memory::GuestMemory;
use crate::pci::{common, device_status as s, VirtioPci, VIRTIO_PCI_DEVICE_BASE};
use crate::queue::{RawDescriptor, VIRTQ_DESC_F_NEXT};
use crate::testing::{driver_init_queues, notify, MockQueue, VecMemory};
use arch_emu::addr::{Ipa, Pa};
use vbus::PciFunction;

type Dev = VirtioPci<VirtioConsole, VecMemory>;

const BUF: Ipa = Ipa(RAM.0 + 0x8000);
const BUF2: Ipa = Ipa(RAM.0 + 0x9000);

struct Console {
    d: Dev,
    mem: VecMemory,
    port: ConsolePort,
    rx: MockQueue,
    tx: MockQueue,
}

fn console_with(port: ConsolePort) -> Console {
    let mem = VecMemory::new(RAM, 0x4_0000, Pa(0x9_0000_0000));
    let rx = MockQueue::new(&mem, RAM, 16);
    let tx = MockQueue::new(&mem, Ipa(RAM.0 + 0x1000), 16);
    let mut d = VirtioPci::new(VirtioConsole::new(port.clone()), mem.clone());
    let st = driver_init_queues(&mut d, &[&rx, &tx], FEATURES);
    assert_eq!(
        st & s::DRIVER_OK,
        s::DRIVER_OK,
        "device accepted the driver"
    );
    Console {
        d,
        mem,
        port,
        rx,
        tx,
    }
}

fn console() -> Console {
    console_with(ConsolePort::default())
}

fn output(port: &ConsolePort) -> alloc::vec::Vec<u8> {
    let mut buf = [0u8; 256];
    let n = port.take_output(&mut buf);
    buf[..n].to_vec()
}

fn status(d: &mut Dev) -> u8 {
    d.bar_read(0, common::DEVICE_STATUS, 1, &mut alloc::vec::Vec::new()) as u8
}

#[test]
fn the_device_is_a_virtio_console_with_two_queues() {
    let c = console();
    let mut d = c.d;
    assert_eq!(
        d.config_read(0, 4) >> 16,
        u32::from(VIRTIO_PCI_DEVICE_BASE + 3)
    );
    let queues = d.bar_read(0, common::NUM_QUEUES, 2, &mut alloc::vec::Vec::new());
    assert_eq!(queues, 2);
}

#[test]
fn transmitted_bytes_reach_the_port_in_order_and_the_buffer_is_used_with_length_0() {
    let mut c = console();
    c.mem.write(BUF, b"hello, ").unwrap();
    c.mem.write(BUF2, b"world\n").unwrap();
    c.tx.push(&[(BUF, 7, false), (BUF2, 6, false)]);
    notify(&mut c.d, TRANSMITQ);
    assert_eq!(c.tx.used_idx(), 1);
    assert_eq!(c.tx.used_elem(0).1, 0);
    assert_eq!(output(&c.port), b"hello, world\n");
    assert_eq!(c.port.stats().tx_bytes, 13);
    assert!(!c.port.has_output(), "taken");
}

#[test]
fn a_transmit_chain_with_a_writable_buffer_is_refused_and_counted() {
    let mut c = console();
    c.mem.write(BUF, b"secret").unwrap();
    c.tx.push(&[(BUF, 6, false), (BUF2, 4, true)]);
    notify(&mut c.d, TRANSMITQ);
    assert_eq!(c.tx.used_idx(), 1, "returned");
    assert_eq!(c.tx.used_elem(0).1, 0);
    assert!(output(&c.port).is_empty(), "nothing sent");
    assert_eq!(c.port.stats().bad_chains, 1);
    assert_eq!(status(&mut c.d) & s::NEEDS_RESET, 0, "the queue goes on");
}

#[test]
fn a_receive_chain_with_a_readable_buffer_is_refused_and_counted() {
    let mut c = console();
    c.port.push_input(b"ls\n");
    c.rx.push(&[(BUF, 16, false)]);
    notify(&mut c.d, RECEIVEQ);
    assert_eq!(c.rx.used_idx(), 1, "returned");
    assert_eq!(c.rx.used_elem(0).1, 0);
    assert_eq!(c.port.stats().bad_chains, 1);
    assert_eq!(
        c.port.input_waiting(),
        3,
        "the input waits for a good buffer"
    );
}

#[test]
fn a_chain_whose_next_leaves_the_table_needs_a_reset() {
    let mut c = console();
    c.tx.write_desc(
        0,
        RawDescriptor {
            addr: BUF.0,
            len: 4,
            flags: VIRTQ_DESC_F_NEXT,
            next: 99,
        },
    );
    c.tx.make_available(0);
    notify(&mut c.d, TRANSMITQ);
    assert_eq!(c.tx.used_idx(), 0, "not used");
    assert!(output(&c.port).is_empty());
    assert_eq!(c.d.stats().queue_errors, 1);
    assert_eq!(status(&mut c.d) & s::NEEDS_RESET, s::NEEDS_RESET);
}

#[test]
fn input_fills_an_available_receive_buffer_when_polled_and_interrupts() {
    let mut c = console();
    c.rx.push(&[(BUF, 64, true)]);
    notify(&mut c.d, RECEIVEQ);
    assert_eq!(c.rx.used_idx(), 0, "no input yet: the buffer waits");
    c.port.push_input(b"echo hi\n");
    assert!(c.d.poll(), "a used buffer notification");
    assert_eq!(c.rx.used_idx(), 1);
    assert_eq!(c.rx.used_elem(0).1, 8);
    assert_eq!(c.mem.bytes_at(BUF, 8).unwrap(), b"echo hi\n");
    assert_eq!(c.port.stats().rx_bytes, 8);
}

#[test]
fn input_spreads_over_several_receive_buffers_in_order() {
    let mut c = console();
    c.rx.push(&[(BUF, 4, true)]);
    c.rx.push(&[(BUF2, 4, true)]);
    notify(&mut c.d, RECEIVEQ);
    c.port.push_input(b"abcdef");
    c.d.poll();
    assert_eq!(c.rx.used_idx(), 2);
    assert_eq!(c.mem.bytes_at(BUF, 4).unwrap(), b"abcd");
    assert_eq!(
        (c.rx.used_elem(1).1, c.mem.bytes_at(BUF2, 2).unwrap()),
        (2, b"ef".to_vec())
    );
}

#[test]
fn input_without_a_receive_buffer_waits_and_goes_to_the_next_one_made_available() {
    let mut c = console();
    c.port.push_input(b"typed early");
    c.d.poll();
    assert_eq!(c.port.input_waiting(), 11);
    c.rx.push(&[(BUF, 64, true)]);
    notify(&mut c.d, RECEIVEQ);
    assert_eq!(c.rx.used_idx(), 1);
    assert_eq!(c.mem.bytes_at(BUF, 11).unwrap(), b"typed early");
    assert_eq!(c.port.input_waiting(), 0);
}

#[test]
fn input_beyond_the_bound_is_dropped_and_counted() {
    let c = console_with(ConsolePort::new(8, 64));
    assert_eq!(c.port.push_input(b"0123456789"), 8);
    assert_eq!(c.port.push_input(b"x"), 0);
    assert_eq!(c.port.input_waiting(), 8);
    assert_eq!(c.port.stats().rx_dropped, 3);
}

#[test]
fn output_beyond_the_bound_is_dropped_and_counted() {
    let mut c = console_with(ConsolePort::new(8, 4));
    c.mem.write(BUF, b"abcdef").unwrap();
    c.tx.push(&[(BUF, 6, false)]);
    notify(&mut c.d, TRANSMITQ);
    assert_eq!(c.tx.used_idx(), 1, "the buffer is returned all the same");
    assert_eq!(output(&c.port), b"abcd");
    assert_eq!(c.port.stats().tx_dropped, 2);
}

#[test]
fn after_a_reset_waiting_input_goes_to_the_new_receiveq_only() {
    let mut c = console();
    c.rx.push(&[(BUF, 64, true)]);
    notify(&mut c.d, RECEIVEQ);
    c.d.bar_write(0, common::DEVICE_STATUS, 1, 0, &mut alloc::vec::Vec::new());
    assert_eq!(status(&mut c.d), 0, "reset complete");
    c.port.push_input(b"after");
    c.d.poll();
    assert_eq!(c.rx.used_idx(), 0, "the old ring is left alone");
    let rx = MockQueue::new(&c.mem, Ipa(RAM.0 + 0x2000), 16);
    let tx = MockQueue::new(&c.mem, Ipa(RAM.0 + 0x3000), 16);
    driver_init_queues(&mut c.d, &[&rx, &tx], FEATURES);
    let mut rx = rx;
    rx.push(&[(BUF2, 64, true)]);
    notify(&mut c.d, RECEIVEQ);
    assert_eq!(rx.used_idx(), 1);
    assert_eq!(c.mem.bytes_at(BUF2, 5).unwrap(), b"after");
    assert_eq!(c.rx.used_idx(), 0);
}

#[test]
fn the_driver_is_asked_to_notify_receive_buffers_only_while_input_waits_for_one() {
    let mut c = console();
    c.rx.push(&[(BUF, 4, true)]);
    notify(&mut c.d, RECEIVEQ);
    // VIRTIO_F_EVENT_IDX: avail_event behind next_avail (0) asks for no notification.
    assert_eq!(c.rx.avail_event(), 0xffff, "no input: the device polls");
    c.port.push_input(b"more than four");
    c.d.poll();
    assert_eq!(c.rx.used_idx(), 1, "the one buffer filled");
    assert_eq!(
        c.rx.avail_event(),
        1,
        "input waits: the next buffer is to be notified"
    );
    c.rx.push(&[(BUF2, 64, true)]);
    notify(&mut c.d, RECEIVEQ);
    assert_eq!(c.mem.bytes_at(BUF2, 10).unwrap(), b" than four");
    assert_eq!(
        c.rx.avail_event(),
        1,
        "drained: next_avail 2 less one, polled again"
    );
}

//! virtio-console (virtio 1.2, 5.3): one port (port 0, no
//! `VIRTIO_CONSOLE_F_MULTIPORT`), its receiveq (queue 0) and transmitq
//! (queue 1), and the [`ConsolePort`] through which the owner takes what
//! the driver transmitted and gives it input.
//!
//! Every transmit buffer's bytes go to the port's output (5.3.6.2: the
//! device returns the buffer with used length 0 once it has taken them).
//! Input waits in the port, bounded, until the driver has made receive
//! buffers available (5.3.6.1); input beyond the bound is dropped and
//! counted. A chain the driver must not make (a device-writable buffer on
//! the transmitq, a device-readable one on the receiveq: 5.3.6.1.1) is
//! refused: returned used with length 0, its bytes neither sent nor filled,
//! and counted.
//!
//! The port is shared between the device (behind the transport, under its
//! owner's lock) and the owner's console code: each side locks it only for
//! the time it moves bytes, and the device never takes another lock while
//! it holds the port's.

use crate::device::VirtioDevice;
use crate::memory::GuestMemory;
use crate::queue::{DescriptorChain, Queue, QueueError};
use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;
use spin::Mutex;

/// Virtio device type of a console (5).
pub const VIRTIO_ID_CONSOLE: u16 = 3;

/// receiveq of port 0 (5.3.2).
pub const RECEIVEQ: u16 = 0;
/// transmitq of port 0 (5.3.2).
pub const TRANSMITQ: u16 = 1;

/// Entries of each queue.
pub const QUEUE_SIZE: u16 = 128;

/// virtio-console feature bits (5.3.3); none is offered.
pub mod feature {
    /// `VIRTIO_CONSOLE_F_SIZE`: `cols` and `rows` are valid.
    pub const SIZE: u64 = 1 << 0;
    /// `VIRTIO_CONSOLE_F_MULTIPORT`: several ports, a control queue pair.
    pub const MULTIPORT: u64 = 1 << 1;
    /// `VIRTIO_CONSOLE_F_EMERG_WRITE`: `emerg_wr` is valid.
    pub const EMERG_WRITE: u64 = 1 << 2;
}

/// Configuration structure offsets (`struct virtio_console_config`, 5.3.4).
pub mod cfg {
    #![allow(missing_docs)]
    pub const COLS: usize = 0;
    pub const ROWS: usize = 2;
    pub const MAX_NR_PORTS: usize = 4;
    pub const EMERG_WR: usize = 8;
    /// Bytes exposed.
    pub const LEN: usize = 12;
}

/// Most input bytes a port holds for a driver that has no receive buffer
/// available.
pub const INPUT_CAPACITY: usize = 4096;

/// Most output bytes a port holds until its owner takes them: the owner
/// takes them after every notification, and a driver transmits a page at a
/// time, so only a driver making more than this available at once loses
/// output (the bytes past the bound, counted).
pub const OUTPUT_CAPACITY: usize = 64 * 1024;

/// Counters of a port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsoleStats {
    /// Bytes the driver transmitted (taken into the output).
    pub tx_bytes: u64,
    /// Transmitted bytes dropped: the output was full.
    pub tx_dropped: u64,
    /// Bytes given to the driver in receive buffers.
    pub rx_bytes: u64,
    /// Input bytes dropped: the input was full.
    pub rx_dropped: u64,
    /// Chains refused: a device-writable buffer on the transmitq or a
    /// device-readable one on the receiveq.
    pub bad_chains: u64,
}

#[derive(Debug)]
struct PortIo {
    input: VecDeque<u8>,
    input_capacity: usize,
    output: Vec<u8>,
    output_capacity: usize,
    stats: ConsoleStats,
}

/// Port 0's bytes in both directions, shared by the device and its owner.
#[derive(Debug, Clone)]
pub struct ConsolePort(Arc<Mutex<PortIo>>);

impl Default for ConsolePort {
    fn default() -> Self {
        ConsolePort::new(INPUT_CAPACITY, OUTPUT_CAPACITY)
    }
}

impl ConsolePort {
    /// A port holding at most `input_capacity` input and `output_capacity`
    /// output bytes (at least one each).
    pub fn new(input_capacity: usize, output_capacity: usize) -> Self {
        ConsolePort(Arc::new(Mutex::new(PortIo {
            input: VecDeque::new(),
            input_capacity: input_capacity.max(1),
            output: Vec::new(),
            output_capacity: output_capacity.max(1),
            stats: ConsoleStats::default(),
        })))
    }

    /// Queues `bytes` for the driver, oldest first; what does not fit is
    /// dropped and counted. Returns how many were queued. The owner then
    /// polls the device ([`VirtioDevice::poll`]), which fills the receive
    /// buffers available.
    pub fn push_input(&self, bytes: &[u8]) -> usize {
        let mut io = self.0.lock();
        let room = io.input_capacity.saturating_sub(io.input.len());
        let n = room.min(bytes.len());
        io.input.extend(bytes.iter().take(n));
        io.stats.rx_dropped += (bytes.len() - n) as u64;
        n
    }

    /// Input bytes waiting for a receive buffer.
    pub fn input_waiting(&self) -> usize {
        self.0.lock().input.len()
    }

    /// Whether transmitted bytes wait for [`ConsolePort::take_output`].
    pub fn has_output(&self) -> bool {
        !self.0.lock().output.is_empty()
    }

    /// Moves up to `buf.len()` transmitted bytes, oldest first, into `buf`;
    /// returns how many.
    pub fn take_output(&self, buf: &mut [u8]) -> usize {
        let mut io = self.0.lock();
        let n = buf.len().min(io.output.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), io.output.get(..n)) {
            dst.copy_from_slice(src);
        }
        io.output.drain(..n);
        n
    }

    /// The counters.
    pub fn stats(&self) -> ConsoleStats {
        self.0.lock().stats
    }

    /// The counters, unless the port is locked (for a report at shutdown,
    /// which must not wait on a CPU that stopped holding it).
    pub fn try_stats(&self) -> Option<ConsoleStats> {
        self.0.try_lock().map(|io| io.stats)
    }
}

/// A virtio console with one port.
#[derive(Debug)]
pub struct VirtioConsole {
    port: ConsolePort,
    features: u64,
}

impl VirtioConsole {
    /// A console whose port 0 is `port` (the owner keeps a clone).
    pub fn new(port: ConsolePort) -> Self {
        VirtioConsole { port, features: 0 }
    }

    /// The port.
    pub fn port(&self) -> &ConsolePort {
        &self.port
    }

    /// Takes the chains available on the transmitq (5.3.6.2), a queue's
    /// worth at most: a driver publishing more meanwhile, from another CPU,
    /// cannot hold the caller; it notifies again.
    fn transmit(&mut self, q: &mut Queue, mem: &dyn GuestMemory) -> Result<(), QueueError> {
        for _ in 0..q.size {
            let Some(chain) = q.pop(mem)? else {
                break;
            };
            if chain.writable().next().is_some() {
                self.port.0.lock().stats.bad_chains += 1;
            } else {
                self.port.0.lock().send(&chain, mem)?;
            }
            q.add_used(mem, chain.head_index(), 0)?;
        }
        Ok(())
    }

    /// Fills receive buffers with waiting input while both last (5.3.6.1),
    /// a queue's worth of buffers at most.
    fn receive(&mut self, q: &mut Queue, mem: &dyn GuestMemory) -> Result<(), QueueError> {
        for _ in 0..q.size {
            if self.port.input_waiting() == 0 {
                break;
            }
            let Some(chain) = q.pop(mem)? else {
                break;
            };
            let len = if chain.readable().next().is_some() {
                self.port.0.lock().stats.bad_chains += 1;
                0
            } else {
                self.port.0.lock().fill(&chain, mem)?
            };
            q.add_used(mem, chain.head_index(), len)?;
        }
        Ok(())
    }
}

impl PortIo {
    /// The chain's readable bytes into the output, as far as it has room.
    fn send(&mut self, chain: &DescriptorChain, mem: &dyn GuestMemory) -> Result<(), QueueError> {
        for d in chain.readable() {
            let len = d.len as usize;
            let room = self.output_capacity.saturating_sub(self.output.len());
            let n = len.min(room);
            let start = self.output.len();
            self.output.resize(start + n, 0);
            if let Some(dst) = self.output.get_mut(start..) {
                if let Err(e) = mem.read(d.addr, dst) {
                    self.output.truncate(start);
                    return Err(QueueError::BufferOutsideMemory(e));
                }
            }
            self.stats.tx_bytes += n as u64;
            self.stats.tx_dropped += (len - n) as u64;
        }
        Ok(())
    }

    /// Waiting input into the chain's writable buffers; returns the bytes written.
    fn fill(&mut self, chain: &DescriptorChain, mem: &dyn GuestMemory) -> Result<u32, QueueError> {
        let mut written = 0u32;
        for d in chain.writable() {
            if self.input.is_empty() {
                break;
            }
            let n = (d.len as usize).min(self.input.len());
            let bytes: Vec<u8> = self.input.iter().take(n).copied().collect();
            mem.write(d.addr, &bytes)
                .map_err(QueueError::BufferOutsideMemory)?;
            self.input.drain(..n);
            written += n as u32;
        }
        self.stats.rx_bytes += u64::from(written);
        Ok(written)
    }
}

impl VirtioDevice for VirtioConsole {
    fn device_type(&self) -> u16 {
        VIRTIO_ID_CONSOLE
    }

    fn pci_class(&self) -> u32 {
        // Simple communication controller, other.
        0x07_80_00
    }

    fn device_features(&self) -> u64 {
        0
    }

    fn num_queues(&self) -> u16 {
        2
    }

    fn queue_max_size(&self) -> u16 {
        QUEUE_SIZE
    }

    fn config_len(&self) -> usize {
        cfg::LEN
    }

    /// No field is valid without the features (5.3.4): all read 0.
    fn read_config(&self, _offset: usize, data: &mut [u8]) {
        data.fill(0);
    }

    /// `emerg_wr` is valid only with `VIRTIO_CONSOLE_F_EMERG_WRITE` (not offered).
    fn write_config(&mut self, _offset: usize, _data: &[u8]) {}

    fn activate(&mut self, features: u64) {
        self.features = features;
    }

    /// Input waiting for the driver stays: it was typed for the guest,
    /// whichever driver takes it next.
    fn reset(&mut self) {
        self.features = 0;
    }

    fn queue_reset(&mut self, _index: u16) {}

    fn process_queue(
        &mut self,
        index: u16,
        queues: &mut [Queue],
        mem: &dyn GuestMemory,
    ) -> Result<(), QueueError> {
        let Some(q) = queues.get_mut(usize::from(index)) else {
            return Ok(());
        };
        match index {
            RECEIVEQ => self.receive(q, mem),
            TRANSMITQ => self.transmit(q, mem),
            _ => Ok(()),
        }
    }

    /// Input that arrived since: into the receive buffers available.
    fn poll(&mut self, queues: &mut [Queue], mem: &dyn GuestMemory) -> Result<(), QueueError> {
        match queues.get_mut(usize::from(RECEIVEQ)) {
            Some(q) if q.ready => self.receive(q, mem),
            _ => Ok(()),
        }
    }

    /// The receiveq while no input waits: input arriving is handed over by
    /// [`VirtioDevice::poll`], so the driver need not notify each receive
    /// buffer it adds; while input waits for a buffer, it notifies.
    fn polls(&self, index: u16) -> bool {
        index == RECEIVEQ && self.port.input_waiting() == 0
    }
}

//! Split virtqueues, device side (virtio 1.2, 2.7): the descriptor table,
//! the available and used rings, indirect descriptors (2.7.5.3) and
//! notification suppression with `VIRTIO_F_EVENT_IDX` (2.7.7, 2.7.10).
//!
//! Everything in these structures is written by the guest. A chain is copied
//! into a bounded local list — each descriptor read from guest memory exactly
//! once — and checked as a whole before the device acts on it; a malformed
//! chain is refused with a named [`QueueError`], never a panic.

use crate::memory::{offset_ipa, GuestMemory, GuestMemoryExt, MemoryError};
use alloc::vec::Vec;
use arch_emu::addr::{Ipa, MemRange};

/// The largest queue this implementation offers (a power of two, 2.7).
pub const MAX_QUEUE_SIZE: u16 = 256;

/// Descriptor flag: the buffer continues via the `next` field (2.7.5).
pub const VIRTQ_DESC_F_NEXT: u16 = 1;
/// Descriptor flag: the buffer is device write-only (otherwise read-only).
pub const VIRTQ_DESC_F_WRITE: u16 = 2;
/// Descriptor flag: the buffer holds a table of indirect descriptors (2.7.5.3).
pub const VIRTQ_DESC_F_INDIRECT: u16 = 4;
/// Available ring flag: the driver asks for no used buffer notifications (2.7.6).
pub const VIRTQ_AVAIL_F_NO_INTERRUPT: u16 = 1;
/// Used ring flag: the device asks for no available buffer notifications (2.7.8).
pub const VIRTQ_USED_F_NO_NOTIFY: u16 = 1;

/// Size of one descriptor in the table (`struct virtq_desc`, 2.7.5).
pub const DESC_SIZE: u64 = 16;

/// Bytes of the descriptor table of a queue of `size` entries (2.7, table "Virtqueue Part Alignment").
pub fn desc_table_size(size: u16) -> u64 {
    DESC_SIZE * u64::from(size)
}

/// Bytes of the available ring (`flags`, `idx`, `ring[size]`, `used_event`).
pub fn avail_ring_size(size: u16) -> u64 {
    6 + 2 * u64::from(size)
}

/// Bytes of the used ring (`flags`, `idx`, `ring[size]` of 8 bytes, `avail_event`).
pub fn used_ring_size(size: u16) -> u64 {
    6 + 8 * u64::from(size)
}

/// Why a queue could not be used or a chain was refused. A driver that
/// causes one of these has broken the virtqueue rules; the transport answers
/// with `DEVICE_NEEDS_RESET` (virtio 1.2, 2.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueError {
    /// The queue is not enabled.
    NotReady,
    /// `queue_size` is zero, not a power of two, or above the maximum (2.7).
    BadSize(u16),
    /// A ring or table address is not aligned as 2.7 requires (16, 2, 4).
    Misaligned,
    /// A ring or the descriptor table is not in guest memory.
    RingOutsideMemory(MemoryError),
    /// `avail_idx` is more than `queue_size` entries ahead of the device
    /// (2.7.6: the driver cannot have more buffers available than entries).
    AvailIdxTooFar {
        /// What the driver published.
        avail_idx: u16,
        /// Where the device is.
        next_avail: u16,
    },
    /// A head index in the available ring is `>= queue_size`.
    HeadOutOfRange(u16),
    /// A `next` field is outside the table it chains in.
    NextOutOfRange(u16),
    /// More descriptors than the table holds: a loop, or a chain longer than
    /// the queue size (2.7.5.2: "A driver MUST NOT create a descriptor chain
    /// longer than the Queue Size").
    ChainTooLong,
    /// `VIRTQ_DESC_F_INDIRECT` without `VIRTIO_F_INDIRECT_DESC` negotiated (2.7.5.3.1).
    IndirectNotNegotiated,
    /// `VIRTQ_DESC_F_INDIRECT` together with `VIRTQ_DESC_F_NEXT` (2.7.5.3.1).
    IndirectWithNext,
    /// `VIRTQ_DESC_F_INDIRECT` inside an indirect table (2.7.5.3.1).
    IndirectInIndirect,
    /// An indirect table whose length is zero, not a multiple of 16 or more
    /// than [`MAX_QUEUE_SIZE`] descriptors.
    BadIndirectLength(u32),
    /// A device-readable descriptor after a device-writable one (2.7.4.2:
    /// "The driver MUST place any device-writable descriptor elements after
    /// any device-readable descriptor elements").
    ReadableAfterWritable,
    /// `addr + len` overflows, or the total readable or writable length
    /// overflows 32 bits.
    LengthOverflow,
    /// A buffer is not in guest memory.
    BufferOutsideMemory(MemoryError),
    /// A used element names a head outside the queue (device bug guard).
    UsedIdOutOfRange(u16),
}

/// One buffer of a chain, as copied from guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    /// Guest physical address of the buffer.
    pub addr: Ipa,
    /// Length in bytes.
    pub len: u32,
    /// Device write-only (`VIRTQ_DESC_F_WRITE`).
    pub writable: bool,
}

impl Descriptor {
    /// The guest range of the buffer.
    pub fn range(&self) -> MemRange<Ipa> {
        MemRange::new(self.addr, u64::from(self.len))
    }
}

/// A descriptor chain copied out of guest memory and checked: device-readable
/// buffers first, then device-writable ones, all inside guest memory, indirect
/// tables flattened in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescriptorChain {
    head_index: u16,
    descriptors: Vec<Descriptor>,
    readable_len: u32,
    writable_len: u32,
}

impl DescriptorChain {
    /// The head's index in the descriptor table (the `id` of its used element).
    pub fn head_index(&self) -> u16 {
        self.head_index
    }
    /// Every buffer, in chain order.
    pub fn descriptors(&self) -> &[Descriptor] {
        &self.descriptors
    }
    /// The device-readable buffers.
    pub fn readable(&self) -> impl Iterator<Item = &Descriptor> {
        self.descriptors.iter().filter(|d| !d.writable)
    }
    /// The device-writable buffers.
    pub fn writable(&self) -> impl Iterator<Item = &Descriptor> {
        self.descriptors.iter().filter(|d| d.writable)
    }
    /// Total bytes the device may read.
    pub fn readable_len(&self) -> u32 {
        self.readable_len
    }
    /// Total bytes the device may write.
    pub fn writable_len(&self) -> u32 {
        self.writable_len
    }
}

/// A raw `struct virtq_desc` (2.7.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RawDescriptor {
    /// `addr`.
    pub addr: u64,
    /// `len`.
    pub len: u32,
    /// `flags`.
    pub flags: u16,
    /// `next`.
    pub next: u16,
}

impl RawDescriptor {
    /// Decodes 16 little-endian bytes.
    pub fn from_bytes(b: [u8; 16]) -> Self {
        let [a0, a1, a2, a3, a4, a5, a6, a7, l0, l1, l2, l3, f0, f1, n0, n1] = b;
        RawDescriptor {
            addr: u64::from_le_bytes([a0, a1, a2, a3, a4, a5, a6, a7]),
            len: u32::from_le_bytes([l0, l1, l2, l3]),
            flags: u16::from_le_bytes([f0, f1]),
            next: u16::from_le_bytes([n0, n1]),
        }
    }
    /// Encodes as 16 little-endian bytes.
    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        let (a, rest) = b.split_at_mut(8);
        a.copy_from_slice(&self.addr.to_le_bytes());
        let (l, rest) = rest.split_at_mut(4);
        l.copy_from_slice(&self.len.to_le_bytes());
        let (f, n) = rest.split_at_mut(2);
        f.copy_from_slice(&self.flags.to_le_bytes());
        n.copy_from_slice(&self.next.to_le_bytes());
        b
    }
}

/// Accumulates a chain's buffers while enforcing the ordering and length rules.
struct ChainBuilder {
    descriptors: Vec<Descriptor>,
    readable_len: u32,
    writable_len: u32,
    seen_writable: bool,
}

impl ChainBuilder {
    fn push<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        raw: RawDescriptor,
    ) -> Result<(), QueueError> {
        let writable = raw.flags & VIRTQ_DESC_F_WRITE != 0;
        raw.addr
            .checked_add(u64::from(raw.len))
            .ok_or(QueueError::LengthOverflow)?;
        if writable {
            self.seen_writable = true;
            self.writable_len = self
                .writable_len
                .checked_add(raw.len)
                .ok_or(QueueError::LengthOverflow)?;
        } else {
            if self.seen_writable {
                return Err(QueueError::ReadableAfterWritable);
            }
            self.readable_len = self
                .readable_len
                .checked_add(raw.len)
                .ok_or(QueueError::LengthOverflow)?;
        }
        let d = Descriptor {
            addr: Ipa(raw.addr),
            len: raw.len,
            writable,
        };
        mem.check_range(d.range())
            .map_err(QueueError::BufferOutsideMemory)?;
        self.descriptors.push(d);
        Ok(())
    }
}

/// One split virtqueue's device-side state: what the driver programmed
/// through the transport (`queue_size`, `queue_desc`, `queue_driver`,
/// `queue_device`, `queue_enable`) and the device's ring positions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    max_size: u16,
    /// `queue_size`: entries (a power of two up to the maximum once enabled).
    pub size: u16,
    /// `queue_enable`.
    pub ready: bool,
    /// `queue_desc`: the descriptor table.
    pub desc_table: Ipa,
    /// `queue_driver`: the available ring.
    pub avail_ring: Ipa,
    /// `queue_device`: the used ring.
    pub used_ring: Ipa,
    next_avail: u16,
    next_used: u16,
    /// `used_idx` when the driver was last considered for a notification.
    signalled_used: u16,
    event_idx: bool,
    indirect: bool,
    /// `VIRTQ_USED_F_NO_NOTIFY` is set in `used.flags` (without
    /// `VIRTIO_F_EVENT_IDX`; [`Queue::disable_notification`]).
    no_notify: bool,
}

impl Queue {
    /// A queue in its reset state offering `max_size` entries (clamped to
    /// 1..=[`MAX_QUEUE_SIZE`] and rounded down to a power of two).
    pub fn new(max_size: u16) -> Self {
        let m = max_size.clamp(1, MAX_QUEUE_SIZE);
        let max_size = 1u16 << (15 - m.leading_zeros());
        Queue {
            max_size,
            size: max_size,
            ready: false,
            desc_table: Ipa(0),
            avail_ring: Ipa(0),
            used_ring: Ipa(0),
            next_avail: 0,
            next_used: 0,
            signalled_used: 0,
            event_idx: false,
            indirect: false,
            no_notify: false,
        }
    }

    /// The maximum size the device offers (what `queue_size` reads after reset).
    pub fn max_size(&self) -> u16 {
        self.max_size
    }

    /// Back to the reset state (device reset, or `queue_reset`, 4.1.4.3.2).
    pub fn reset(&mut self) {
        *self = Queue::new(self.max_size);
    }

    /// Applies the negotiated `VIRTIO_F_EVENT_IDX` and `VIRTIO_F_INDIRECT_DESC`.
    pub fn set_features(&mut self, event_idx: bool, indirect: bool) {
        self.event_idx = event_idx;
        self.indirect = indirect;
    }

    /// The next available ring index the device will read.
    pub fn next_avail(&self) -> u16 {
        self.next_avail
    }

    /// The used ring index the device will publish next.
    pub fn next_used(&self) -> u16 {
        self.next_used
    }

    /// Checks the geometry the driver programmed before the queue is enabled:
    /// size, alignment (2.7, "Virtqueue Part Alignment": 16, 2, 4) and that
    /// the three areas lie in guest memory.
    pub fn validate<M: GuestMemory + ?Sized>(&self, mem: &M) -> Result<(), QueueError> {
        if self.size == 0 || !self.size.is_power_of_two() || self.size > self.max_size {
            return Err(QueueError::BadSize(self.size));
        }
        if self.desc_table.0 % 16 != 0 || self.avail_ring.0 % 2 != 0 || self.used_ring.0 % 4 != 0 {
            return Err(QueueError::Misaligned);
        }
        for r in [
            MemRange::new(self.desc_table, desc_table_size(self.size)),
            MemRange::new(self.avail_ring, avail_ring_size(self.size)),
            MemRange::new(self.used_ring, used_ring_size(self.size)),
        ] {
            r.base
                .0
                .checked_add(r.size)
                .ok_or(QueueError::RingOutsideMemory(MemoryError::Overflow))?;
            mem.check_range(r).map_err(QueueError::RingOutsideMemory)?;
        }
        Ok(())
    }

    fn ring_err(e: MemoryError) -> QueueError {
        QueueError::RingOutsideMemory(e)
    }

    /// `avail_idx` as the driver published it.
    pub fn avail_idx<M: GuestMemory + ?Sized>(&self, mem: &M) -> Result<u16, QueueError> {
        mem.read_u16(offset_ipa(self.avail_ring, 2).map_err(Self::ring_err)?)
            .map_err(Self::ring_err)
    }

    /// Takes the next available chain, copied and checked, or `None` if the
    /// driver has published nothing new. On a malformed chain the error is
    /// returned and the chain is consumed (the device then needs a reset).
    pub fn pop<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
    ) -> Result<Option<DescriptorChain>, QueueError> {
        if !self.ready {
            return Err(QueueError::NotReady);
        }
        let avail_idx = self.avail_idx(mem)?;
        let pending = avail_idx.wrapping_sub(self.next_avail);
        if pending == 0 {
            return Ok(None);
        }
        if pending > self.size {
            return Err(QueueError::AvailIdxTooFar {
                avail_idx,
                next_avail: self.next_avail,
            });
        }
        // 2.7.13.4: read the ring entry only after reading the index.
        mem.barrier();
        let slot = u64::from(self.next_avail % self.size);
        let at = offset_ipa(self.avail_ring, 4 + 2 * slot).map_err(Self::ring_err)?;
        let head = mem.read_u16(at).map_err(Self::ring_err)?;
        self.next_avail = self.next_avail.wrapping_add(1);
        self.read_chain(mem, head).map(Some)
    }

    fn read_desc<M: GuestMemory + ?Sized>(
        &self,
        mem: &M,
        index: u16,
    ) -> Result<RawDescriptor, QueueError> {
        let at =
            offset_ipa(self.desc_table, DESC_SIZE * u64::from(index)).map_err(Self::ring_err)?;
        let mut b = [0u8; 16];
        mem.read(at, &mut b).map_err(Self::ring_err)?;
        Ok(RawDescriptor::from_bytes(b))
    }

    /// Copies the chain starting at `head` (2.7.5.2, 2.7.5.3.2).
    pub fn read_chain<M: GuestMemory + ?Sized>(
        &self,
        mem: &M,
        head: u16,
    ) -> Result<DescriptorChain, QueueError> {
        if head >= self.size {
            return Err(QueueError::HeadOutOfRange(head));
        }
        let mut b = ChainBuilder {
            descriptors: Vec::new(),
            readable_len: 0,
            writable_len: 0,
            seen_writable: false,
        };
        let mut index = head;
        let mut budget = self.size;
        loop {
            budget = budget.checked_sub(1).ok_or(QueueError::ChainTooLong)?;
            let raw = self.read_desc(mem, index)?;
            if raw.flags & VIRTQ_DESC_F_INDIRECT != 0 {
                if !self.indirect {
                    return Err(QueueError::IndirectNotNegotiated);
                }
                if raw.flags & VIRTQ_DESC_F_NEXT != 0 {
                    return Err(QueueError::IndirectWithNext);
                }
                Self::read_indirect(mem, raw, &mut b)?;
                break;
            }
            b.push(mem, raw)?;
            if raw.flags & VIRTQ_DESC_F_NEXT == 0 {
                break;
            }
            if raw.next >= self.size {
                return Err(QueueError::NextOutOfRange(raw.next));
            }
            index = raw.next;
        }
        Ok(DescriptorChain {
            head_index: head,
            descriptors: b.descriptors,
            readable_len: b.readable_len,
            writable_len: b.writable_len,
        })
    }

    /// Flattens an indirect table (2.7.5.3): read once, whole, then walked
    /// from entry 0 with `next` bounded by the table.
    fn read_indirect<M: GuestMemory + ?Sized>(
        mem: &M,
        raw: RawDescriptor,
        b: &mut ChainBuilder,
    ) -> Result<(), QueueError> {
        let n = raw.len / 16;
        if raw.len == 0 || raw.len % 16 != 0 || n > u32::from(MAX_QUEUE_SIZE) {
            return Err(QueueError::BadIndirectLength(raw.len));
        }
        raw.addr
            .checked_add(u64::from(raw.len))
            .ok_or(QueueError::LengthOverflow)?;
        let mut table = alloc::vec![0u8; raw.len as usize];
        mem.read(Ipa(raw.addr), &mut table)
            .map_err(QueueError::BufferOutsideMemory)?;
        let entry = |i: u32| -> Result<RawDescriptor, QueueError> {
            let start = (i as usize) * 16;
            let bytes: [u8; 16] = table
                .get(start..start + 16)
                .and_then(|s| s.try_into().ok())
                .ok_or(QueueError::NextOutOfRange(i as u16))?;
            Ok(RawDescriptor::from_bytes(bytes))
        };
        let mut i = 0u32;
        let mut budget = n;
        loop {
            budget = budget.checked_sub(1).ok_or(QueueError::ChainTooLong)?;
            let d = entry(i)?;
            if d.flags & VIRTQ_DESC_F_INDIRECT != 0 {
                return Err(QueueError::IndirectInIndirect);
            }
            b.push(mem, d)?;
            if d.flags & VIRTQ_DESC_F_NEXT == 0 {
                return Ok(());
            }
            if u32::from(d.next) >= n {
                return Err(QueueError::NextOutOfRange(d.next));
            }
            i = u32::from(d.next);
        }
    }

    /// Publishes a used element `(head, len)` and advances `used_idx`
    /// (2.7.8, 2.7.13.3: the element is written before the index).
    pub fn add_used<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        head: u16,
        len: u32,
    ) -> Result<(), QueueError> {
        if !self.ready {
            return Err(QueueError::NotReady);
        }
        if head >= self.size {
            return Err(QueueError::UsedIdOutOfRange(head));
        }
        let slot = u64::from(self.next_used % self.size);
        let at = offset_ipa(self.used_ring, 4 + 8 * slot).map_err(Self::ring_err)?;
        let mut elem = [0u8; 8];
        let (id, l) = elem.split_at_mut(4);
        id.copy_from_slice(&u32::from(head).to_le_bytes());
        l.copy_from_slice(&len.to_le_bytes());
        mem.write(at, &elem).map_err(Self::ring_err)?;
        mem.barrier();
        self.next_used = self.next_used.wrapping_add(1);
        let idx = offset_ipa(self.used_ring, 2).map_err(Self::ring_err)?;
        mem.write_u16(idx, self.next_used).map_err(Self::ring_err)
    }

    /// Whether the driver wants a used buffer notification for what was
    /// published since the last call (2.7.10): with `VIRTIO_F_EVENT_IDX`,
    /// when `used_idx` passed `used_event` (`vring_need_event`); without, unless
    /// `VIRTQ_AVAIL_F_NO_INTERRUPT` is set.
    pub fn needs_notification<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
    ) -> Result<bool, QueueError> {
        let old = self.signalled_used;
        let new = self.next_used;
        if old == new {
            return Ok(false);
        }
        mem.barrier();
        self.signalled_used = new;
        if self.event_idx {
            let at = offset_ipa(self.avail_ring, 4 + 2 * u64::from(self.size))
                .map_err(Self::ring_err)?;
            let used_event = mem.read_u16(at).map_err(Self::ring_err)?;
            Ok(new.wrapping_sub(used_event).wrapping_sub(1) < new.wrapping_sub(old))
        } else {
            let flags = mem.read_u16(self.avail_ring).map_err(Self::ring_err)?;
            Ok(flags & VIRTQ_AVAIL_F_NO_INTERRUPT == 0)
        }
    }

    /// Asks the driver to notify again as soon as it makes anything new
    /// available: with `VIRTIO_F_EVENT_IDX` writes `avail_event` =
    /// `next_avail` (2.7.10); without, clears `VIRTQ_USED_F_NO_NOTIFY` in
    /// `used.flags` if [`Queue::disable_notification`] set it. Returns whether
    /// buffers are already pending (the caller processes again before
    /// sleeping, closing the race with a driver that skipped notifying).
    pub fn enable_notification<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
    ) -> Result<bool, QueueError> {
        if self.event_idx {
            mem.write_u16(self.avail_event_at()?, self.next_avail)
                .map_err(Self::ring_err)?;
        } else if self.no_notify {
            mem.write_u16(self.used_ring, 0).map_err(Self::ring_err)?;
            self.no_notify = false;
        }
        mem.barrier();
        Ok(self.avail_idx(mem)? != self.next_avail)
    }

    /// Asks the driver not to notify for what it makes available next: the
    /// device will look at the queue again by itself (2.7.10). With
    /// `VIRTIO_F_EVENT_IDX` writes `avail_event` = `next_avail` - 1, an index
    /// every later one of the driver lies past, so `vring_need_event` holds
    /// for none of them (until the 16-bit index comes round again, some
    /// 65536 buffers on: the caller disables afresh each time it has
    /// processed the queue); without, sets `VIRTQ_USED_F_NO_NOTIFY` in
    /// `used.flags` (2.7.7: a hint the driver may ignore).
    pub fn disable_notification<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
    ) -> Result<(), QueueError> {
        if self.event_idx {
            mem.write_u16(self.avail_event_at()?, self.next_avail.wrapping_sub(1))
                .map_err(Self::ring_err)
        } else if !self.no_notify {
            mem.write_u16(self.used_ring, VIRTQ_USED_F_NO_NOTIFY)
                .map_err(Self::ring_err)?;
            self.no_notify = true;
            Ok(())
        } else {
            Ok(())
        }
    }

    /// Where `avail_event` lies: after the used ring's entries (2.7.8).
    fn avail_event_at(&self) -> Result<Ipa, QueueError> {
        offset_ipa(self.used_ring, 4 + 8 * u64::from(self.size)).map_err(Self::ring_err)
    }
}

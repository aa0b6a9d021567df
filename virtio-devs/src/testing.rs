//! Test doubles shared by this crate's tests, the fuzz harnesses and later
//! the hypervisor's: guest memory over a `Vec` ([`VecMemory`]) and a
//! driver-side split virtqueue ([`MockQueue`]) that writes descriptors and
//! the available ring and reads the used ring, as a guest driver would
//! (rust-vmm `virtio-queue`'s `mock.rs` plays the same role).

use crate::memory::{GuestMemory, GuestMemoryExt, MemoryError};
use crate::queue::{
    avail_ring_size, desc_table_size, RawDescriptor, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT,
    VIRTQ_DESC_F_WRITE,
};
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use arch_emu::addr::{Ipa, MemRange, Pa};
use spin::Mutex;

/// Guest RAM `[base, base + len)` backed by a shared `Vec`: clones see the
/// same bytes, so a test keeps one handle as the driver while the device
/// holds another.
///
/// Host ranges are fake and deliberately scattered: guest page `n` (4 KiB)
/// sits at host `pa_base + (n ^ 1) * 4 KiB`, so a range crossing a page
/// boundary comes back in pieces.
#[derive(Debug, Clone)]
pub struct VecMemory {
    base: Ipa,
    pa_base: Pa,
    bytes: Arc<Mutex<Vec<u8>>>,
}

/// Page size of the fake host mapping.
pub const FAKE_PAGE: u64 = 4096;

impl VecMemory {
    /// `len` zeroed bytes of guest RAM at `base`; fake host pages from `pa_base`.
    pub fn new(base: Ipa, len: usize, pa_base: Pa) -> Self {
        VecMemory {
            base,
            pa_base,
            bytes: Arc::new(Mutex::new(vec![0; len])),
        }
    }

    /// The guest range this memory covers.
    pub fn range(&self) -> MemRange<Ipa> {
        MemRange::new(self.base, self.bytes.lock().len() as u64)
    }

    fn span(&self, addr: Ipa, len: usize) -> Result<core::ops::Range<usize>, MemoryError> {
        let err = MemoryError::OutOfRange {
            addr,
            len: len as u64,
        };
        let off = addr.0.checked_sub(self.base.0).ok_or(err)?;
        let start = usize::try_from(off).map_err(|_| err)?;
        let end = start.checked_add(len).ok_or(MemoryError::Overflow)?;
        if end > self.bytes.lock().len() {
            return Err(err);
        }
        Ok(start..end)
    }

    /// Fills `[addr, addr + len)` with `byte`.
    pub fn fill(&self, addr: Ipa, len: usize, byte: u8) -> Result<(), MemoryError> {
        let r = self.span(addr, len)?;
        let mut b = self.bytes.lock();
        if let Some(s) = b.get_mut(r) {
            s.fill(byte);
        }
        Ok(())
    }

    /// A copy of `[addr, addr + len)`.
    pub fn bytes_at(&self, addr: Ipa, len: usize) -> Result<Vec<u8>, MemoryError> {
        let mut v = vec![0; len];
        self.read(addr, &mut v)?;
        Ok(v)
    }
}

impl GuestMemory for VecMemory {
    fn read(&self, addr: Ipa, buf: &mut [u8]) -> Result<(), MemoryError> {
        let r = self.span(addr, buf.len())?;
        let b = self.bytes.lock();
        let src = b.get(r).ok_or(MemoryError::Overflow)?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write(&self, addr: Ipa, data: &[u8]) -> Result<(), MemoryError> {
        let r = self.span(addr, data.len())?;
        let mut b = self.bytes.lock();
        let dst = b.get_mut(r).ok_or(MemoryError::Overflow)?;
        dst.copy_from_slice(data);
        Ok(())
    }

    fn check_range(&self, range: MemRange<Ipa>) -> Result<(), MemoryError> {
        let len = usize::try_from(range.size).map_err(|_| MemoryError::OutOfRange {
            addr: range.base,
            len: range.size,
        })?;
        self.span(range.base, len).map(|_| ())
    }

    fn host_ranges(
        &self,
        range: MemRange<Ipa>,
        out: &mut Vec<MemRange<Pa>>,
    ) -> Result<(), MemoryError> {
        self.check_range(range)?;
        let mut off = range.base.0 - self.base.0;
        let end = off + range.size;
        let mut pieces: Vec<MemRange<Pa>> = Vec::new();
        while off < end {
            let page = off / FAKE_PAGE;
            let in_page = off % FAKE_PAGE;
            let n = (FAKE_PAGE - in_page).min(end - off);
            let pa = self.pa_base.0 + (page ^ 1) * FAKE_PAGE + in_page;
            match pieces.last_mut() {
                Some(last) if last.base.0 + last.size == pa => last.size += n,
                _ => pieces.push(MemRange::new(Pa(pa), n)),
            }
            off += n;
        }
        out.extend(pieces);
        Ok(())
    }

    fn barrier(&self) {}
}

/// One buffer a test puts in a chain: `(guest address, length, device-writable)`.
pub type Buf = (Ipa, u32, bool);

/// A split virtqueue driven from the driver's side (virtio 1.2, 2.7.13):
/// descriptor table at `base`, available ring after it, used ring after
/// that (4-aligned), all in one [`VecMemory`].
#[derive(Debug, Clone)]
pub struct MockQueue {
    mem: VecMemory,
    size: u16,
    desc_table: Ipa,
    avail_ring: Ipa,
    used_ring: Ipa,
    next_desc: u16,
    avail_idx: u16,
}

impl MockQueue {
    /// A queue of `size` entries laid out from `base` (16-aligned).
    pub fn new(mem: &VecMemory, base: Ipa, size: u16) -> Self {
        let desc_table = base;
        let avail_ring = Ipa(base.0 + desc_table_size(size));
        let used_ring = Ipa((avail_ring.0 + avail_ring_size(size) + 3) & !3);
        MockQueue {
            mem: mem.clone(),
            size,
            desc_table,
            avail_ring,
            used_ring,
            next_desc: 0,
            avail_idx: 0,
        }
    }

    /// `queue_desc`.
    pub fn desc_table(&self) -> Ipa {
        self.desc_table
    }
    /// `queue_driver`.
    pub fn avail_ring(&self) -> Ipa {
        self.avail_ring
    }
    /// `queue_device`.
    pub fn used_ring(&self) -> Ipa {
        self.used_ring
    }
    /// `queue_size`.
    pub fn size(&self) -> u16 {
        self.size
    }
    /// The memory the queue lives in.
    pub fn memory(&self) -> &VecMemory {
        &self.mem
    }

    /// Writes descriptor `index` of the table as given (any flags, any `next`).
    pub fn write_desc(&self, index: u16, d: RawDescriptor) {
        let at = Ipa(self.desc_table.0 + 16 * u64::from(index));
        self.mem.write(at, &d.to_bytes()).ok();
    }

    /// Writes `bufs` as a chain into consecutive free table entries (wrapping)
    /// and returns the head index; nothing is made available yet.
    pub fn add_chain(&mut self, bufs: &[Buf]) -> u16 {
        let head = self.next_desc;
        for (i, &(addr, len, writable)) in bufs.iter().enumerate() {
            let index = self.next_desc;
            let next = (index + 1) % self.size;
            let last = i + 1 == bufs.len();
            self.write_desc(
                index,
                RawDescriptor {
                    addr: addr.0,
                    len,
                    flags: if last { 0 } else { VIRTQ_DESC_F_NEXT }
                        | if writable { VIRTQ_DESC_F_WRITE } else { 0 },
                    next: if last { 0 } else { next },
                },
            );
            self.next_desc = next;
        }
        head
    }

    /// Writes `bufs` as an indirect table at `table` and one table entry
    /// pointing at it; returns the head index.
    pub fn add_indirect(&mut self, table: Ipa, bufs: &[Buf]) -> u16 {
        for (i, &(addr, len, writable)) in bufs.iter().enumerate() {
            let last = i + 1 == bufs.len();
            let d = RawDescriptor {
                addr: addr.0,
                len,
                flags: if last { 0 } else { VIRTQ_DESC_F_NEXT }
                    | if writable { VIRTQ_DESC_F_WRITE } else { 0 },
                next: if last { 0 } else { i as u16 + 1 },
            };
            self.mem
                .write(Ipa(table.0 + 16 * i as u64), &d.to_bytes())
                .ok();
        }
        let head = self.next_desc;
        self.write_desc(
            head,
            RawDescriptor {
                addr: table.0,
                len: 16 * bufs.len() as u32,
                flags: VIRTQ_DESC_F_INDIRECT,
                next: 0,
            },
        );
        self.next_desc = (head + 1) % self.size;
        head
    }

    /// Puts `head` in the next available ring slot and publishes `avail_idx`.
    pub fn make_available(&mut self, head: u16) {
        let slot = u64::from(self.avail_idx % self.size);
        self.mem
            .write_u16(Ipa(self.avail_ring.0 + 4 + 2 * slot), head)
            .ok();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.set_avail_idx(self.avail_idx);
    }

    /// [`MockQueue::add_chain`] then [`MockQueue::make_available`].
    pub fn push(&mut self, bufs: &[Buf]) -> u16 {
        let head = self.add_chain(bufs);
        self.make_available(head);
        head
    }

    /// Writes `avail_idx` directly (a driver bug, for tests).
    pub fn set_avail_idx(&mut self, idx: u16) {
        self.avail_idx = idx;
        self.mem.write_u16(Ipa(self.avail_ring.0 + 2), idx).ok();
    }

    /// Writes the available ring's `flags`.
    pub fn set_avail_flags(&self, flags: u16) {
        self.mem.write_u16(self.avail_ring, flags).ok();
    }

    /// Writes `used_event` (after the available ring's entries).
    pub fn set_used_event(&self, v: u16) {
        let at = Ipa(self.avail_ring.0 + 4 + 2 * u64::from(self.size));
        self.mem.write_u16(at, v).ok();
    }

    /// The device's `used_idx`.
    pub fn used_idx(&self) -> u16 {
        self.mem.read_u16(Ipa(self.used_ring.0 + 2)).unwrap_or(0)
    }

    /// The used element in ring slot `i % size`: `(id, len)`.
    pub fn used_elem(&self, i: u16) -> (u32, u32) {
        let at = Ipa(self.used_ring.0 + 4 + 8 * u64::from(i % self.size));
        let id = self.mem.read_u32(at).unwrap_or(u32::MAX);
        let len = self.mem.read_u32(Ipa(at.0 + 4)).unwrap_or(u32::MAX);
        (id, len)
    }

    /// The device's `avail_event` (after the used ring's entries).
    pub fn avail_event(&self) -> u16 {
        let at = Ipa(self.used_ring.0 + 4 + 8 * u64::from(self.size));
        self.mem.read_u16(at).unwrap_or(0)
    }

    /// The used ring's `flags` (the device's `VIRTQ_USED_F_NO_NOTIFY`).
    pub fn used_flags(&self) -> u16 {
        self.mem.read_u16(self.used_ring).unwrap_or(0)
    }

    /// Whether a driver that moved `avail_idx` from `old` to the current
    /// index must notify, as Linux decides (2.7.10): with
    /// `VIRTIO_F_EVENT_IDX`, `vring_need_event(avail_event, new, old)`;
    /// without, unless the device set `VIRTQ_USED_F_NO_NOTIFY`.
    pub fn driver_must_notify(&self, old: u16, event_idx: bool) -> bool {
        let new = self.avail_idx;
        if event_idx {
            new.wrapping_sub(self.avail_event()).wrapping_sub(1) < new.wrapping_sub(old)
        } else {
            self.used_flags() & crate::queue::VIRTQ_USED_F_NO_NOTIFY == 0
        }
    }

    /// The driver's `avail_idx` (what it last published).
    pub fn avail_idx(&self) -> u16 {
        self.avail_idx
    }

    /// A device-side [`Queue`](crate::queue::Queue) programmed with this
    /// layout and enabled, as the transport would hold it after `queue_enable`.
    pub fn device_queue(&self, event_idx: bool, indirect: bool) -> crate::queue::Queue {
        let mut q = crate::queue::Queue::new(self.size);
        q.size = self.size;
        q.desc_table = self.desc_table;
        q.avail_ring = self.avail_ring;
        q.used_ring = self.used_ring;
        q.set_features(event_idx, indirect);
        q.ready = true;
        q
    }
}

/// Drives a virtio-pci function through BAR 0 the way a driver initialises
/// it (virtio 1.2, 3.1.1): reset, ACKNOWLEDGE, DRIVER, `features`,
/// FEATURES_OK, queue 0 programmed from `mock` and enabled, DRIVER_OK.
/// Returns the device status read back at the end.
pub fn driver_init<F: vbus::PciFunction + ?Sized>(
    f: &mut F,
    mock: &MockQueue,
    features: u64,
) -> u8 {
    driver_init_queues(f, &[mock], features)
}

/// [`driver_init`] with queue `i` programmed from `mocks[i]`.
pub fn driver_init_queues<F: vbus::PciFunction + ?Sized>(
    f: &mut F,
    mocks: &[&MockQueue],
    features: u64,
) -> u8 {
    use crate::pci::{common, device_status as s};
    let mut rq = Vec::new();
    let mut w = |f: &mut F, off: u64, size: u8, v: u64| f.bar_write(0, off, size, v, &mut rq);
    w(f, common::DEVICE_STATUS, 1, 0);
    w(f, common::DEVICE_STATUS, 1, u64::from(s::ACKNOWLEDGE));
    w(
        f,
        common::DEVICE_STATUS,
        1,
        u64::from(s::ACKNOWLEDGE | s::DRIVER),
    );
    w(f, common::DRIVER_FEATURE_SELECT, 4, 0);
    w(f, common::DRIVER_FEATURE, 4, features & 0xffff_ffff);
    w(f, common::DRIVER_FEATURE_SELECT, 4, 1);
    w(f, common::DRIVER_FEATURE, 4, features >> 32);
    w(
        f,
        common::DEVICE_STATUS,
        1,
        u64::from(s::ACKNOWLEDGE | s::DRIVER | s::FEATURES_OK),
    );
    for (i, mock) in mocks.iter().enumerate() {
        w(f, common::QUEUE_SELECT, 2, i as u64);
        w(f, common::QUEUE_SIZE, 2, u64::from(mock.size()));
        w(f, common::QUEUE_DESC, 8, mock.desc_table().0);
        w(
            f,
            common::QUEUE_DRIVER,
            4,
            mock.avail_ring().0 & 0xffff_ffff,
        );
        w(f, common::QUEUE_DRIVER + 4, 4, mock.avail_ring().0 >> 32);
        w(f, common::QUEUE_DEVICE, 8, mock.used_ring().0);
        w(f, common::QUEUE_ENABLE, 2, 1);
    }
    w(
        f,
        common::DEVICE_STATUS,
        1,
        u64::from(s::ACKNOWLEDGE | s::DRIVER | s::FEATURES_OK | s::DRIVER_OK),
    );
    f.bar_read(0, common::DEVICE_STATUS, 1, &mut rq) as u8
}

/// Notifies queue `index` (a 16-bit write in the notification area, 4.1.4.4).
pub fn notify<F: vbus::PciFunction + ?Sized>(f: &mut F, index: u16) {
    let off =
        crate::pci::NOTIFY_OFFSET + u64::from(index) * u64::from(crate::pci::NOTIFY_OFF_MULTIPLIER);
    f.bar_write(0, off, 2, u64::from(index), &mut Vec::new());
}

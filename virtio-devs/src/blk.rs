//! virtio-blk (virtio 1.2, 5.2): the device, its [`BlockBackend`] and a
//! [`RamDisk`].
//!
//! A request is a header (`type`, `reserved`, `sector`: 16 bytes), data,
//! and a status byte (5.2.6). The device makes no assumption about how the
//! driver splits these across descriptors (2.6.4): the header is the first
//! 16 device-readable bytes and the status is the last device-writable byte.
//! A chain with no writable byte cannot be answered: it is returned used
//! with length 0 and counted. Every other bad request is answered
//! `VIRTIO_BLK_S_IOERR` or `VIRTIO_BLK_S_UNSUPP` as 5.2.6.2 says.
//!
//! Backends may complete later: [`BlockBackend::submit`] returns
//! [`Submission::Pending`] and [`BlockBackend::poll`] hands back the result
//! by [`RequestId`]. In-flight requests are bounded by the queue size, also
//! across resets (requests orphaned by a reset still hold their slot until
//! the backend finishes them), so a guest that never lets requests complete
//! cannot grow memory.

use crate::device::VirtioDevice;
use crate::memory::GuestMemory;
use crate::queue::{Descriptor, DescriptorChain, Queue, QueueError, MAX_QUEUE_SIZE};
use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;
use arch_emu::addr::{Ipa, MemRange};

/// Virtio device type of a block device (5).
pub const VIRTIO_ID_BLOCK: u16 = 2;
/// Sector size of `capacity` and `sector` (5.2.4).
pub const SECTOR_SIZE: u64 = 512;
/// Bytes of the `GET_ID` answer (`VIRTIO_BLK_ID_BYTES`, 5.2.6).
pub const VIRTIO_BLK_ID_BYTES: usize = 20;

/// virtio-blk feature bits (5.2.3).
pub mod feature {
    /// `VIRTIO_BLK_F_SIZE_MAX`: `size_max` is valid.
    pub const SIZE_MAX: u64 = 1 << 1;
    /// `VIRTIO_BLK_F_SEG_MAX`: `seg_max` is valid.
    pub const SEG_MAX: u64 = 1 << 2;
    /// `VIRTIO_BLK_F_RO`: read-only.
    pub const RO: u64 = 1 << 5;
    /// `VIRTIO_BLK_F_BLK_SIZE`: `blk_size` is valid.
    pub const BLK_SIZE: u64 = 1 << 6;
    /// `VIRTIO_BLK_F_FLUSH`: the flush command.
    pub const FLUSH: u64 = 1 << 9;
    /// `VIRTIO_BLK_F_MQ`: `num_queues` is valid (more than one request queue).
    pub const MQ: u64 = 1 << 12;
    /// `VIRTIO_BLK_F_DISCARD`.
    pub const DISCARD: u64 = 1 << 13;
    /// `VIRTIO_BLK_F_WRITE_ZEROES`.
    pub const WRITE_ZEROES: u64 = 1 << 14;
}

/// Request types (5.2.6).
pub mod req {
    /// `VIRTIO_BLK_T_IN`.
    pub const IN: u32 = 0;
    /// `VIRTIO_BLK_T_OUT`.
    pub const OUT: u32 = 1;
    /// `VIRTIO_BLK_T_FLUSH`.
    pub const FLUSH: u32 = 4;
    /// `VIRTIO_BLK_T_GET_ID`.
    pub const GET_ID: u32 = 8;
    /// `VIRTIO_BLK_T_DISCARD`.
    pub const DISCARD: u32 = 11;
    /// `VIRTIO_BLK_T_WRITE_ZEROES`.
    pub const WRITE_ZEROES: u32 = 13;
}

/// Status byte values (5.2.6).
pub mod status {
    /// `VIRTIO_BLK_S_OK`.
    pub const OK: u8 = 0;
    /// `VIRTIO_BLK_S_IOERR`.
    pub const IOERR: u8 = 1;
    /// `VIRTIO_BLK_S_UNSUPP`.
    pub const UNSUPP: u8 = 2;
}

/// Configuration structure offsets (`struct virtio_blk_config`, 5.2.4).
pub mod cfg {
    #![allow(missing_docs)]
    pub const CAPACITY: usize = 0;
    pub const SIZE_MAX: usize = 8;
    pub const SEG_MAX: usize = 12;
    pub const BLK_SIZE: usize = 20;
    pub const NUM_QUEUES: usize = 34;
    pub const MAX_DISCARD_SECTORS: usize = 36;
    pub const MAX_DISCARD_SEG: usize = 40;
    pub const DISCARD_SECTOR_ALIGNMENT: usize = 44;
    pub const MAX_WRITE_ZEROES_SECTORS: usize = 48;
    pub const MAX_WRITE_ZEROES_SEG: usize = 52;
    pub const WRITE_ZEROES_MAY_UNMAP: usize = 56;
    /// Bytes exposed (through `unused1`).
    pub const LEN: usize = 60;
}

/// `size_max` offered: the largest single segment.
pub const SIZE_MAX: u32 = 1 << 20;
/// `seg_max` offered: data segments per request (the queue size less header and status).
pub const SEG_MAX: u32 = MAX_QUEUE_SIZE as u32 - 2;
/// Largest discard / write-zeroes request in sectors.
pub const MAX_RANGE_SECTORS: u32 = 1 << 22;

/// Names an in-flight request between submission and completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// What a backend is asked to do; `offset` and lengths in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockOp {
    /// Disk → guest memory, into the segments in order.
    Read {
        /// Byte offset on the disk.
        offset: u64,
    },
    /// Guest memory → disk, from the segments in order.
    Write {
        /// Byte offset on the disk.
        offset: u64,
    },
    /// Make completed writes durable.
    Flush,
    /// The range's contents may be dropped.
    Discard {
        /// Byte offset.
        offset: u64,
        /// Bytes.
        len: u64,
    },
    /// The range reads zeros afterwards.
    WriteZeroes {
        /// Byte offset.
        offset: u64,
        /// Bytes.
        len: u64,
        /// The backend may deallocate the range.
        may_unmap: bool,
    },
}

/// Why a backend operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockError {
    /// The medium or guest memory failed (answered IOERR).
    Io,
    /// Not supported by this backend (answered UNSUPP).
    Unsupported,
}

/// A backend's answer to a submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submission {
    /// Finished now.
    Done(Result<(), BlockError>),
    /// Will be reported by [`BlockBackend::poll`] under the same id.
    Pending,
}

/// Storage behind a virtio-blk device. The device has checked every range
/// against [`BlockBackend::capacity`] and every guest segment against guest
/// memory before submitting.
pub trait BlockBackend: Send {
    /// Size in bytes (a multiple of 512).
    fn capacity(&self) -> u64;
    /// Logical block size in bytes (a power of two, at least 512).
    fn block_size(&self) -> u32;
    /// Writes are refused (`VIRTIO_BLK_F_RO`).
    fn read_only(&self) -> bool;
    /// Discard is offered (`VIRTIO_BLK_F_DISCARD`).
    fn supports_discard(&self) -> bool;
    /// Write zeroes is offered (`VIRTIO_BLK_F_WRITE_ZEROES`).
    fn supports_write_zeroes(&self) -> bool;
    /// The `GET_ID` string (NUL-padded).
    fn device_id(&self) -> [u8; VIRTIO_BLK_ID_BYTES];
    /// Starts `op` over guest `segments`; a host disk DMAs through
    /// [`GuestMemory::host_ranges`] and answers [`Submission::Pending`].
    fn submit(
        &mut self,
        id: RequestId,
        op: BlockOp,
        segments: &[MemRange<Ipa>],
        mem: &dyn GuestMemory,
    ) -> Submission;
    /// One completed pending request, if any (called until `None`).
    fn poll(&mut self, mem: &dyn GuestMemory) -> Option<(RequestId, Result<(), BlockError>)>;

    /// Most data segments one request may carry (what the backend's own
    /// device takes); the device offers `seg_max` no larger (virtio 1.2, 5.2.4).
    fn max_segments(&self) -> u32;
}

/// Counters of the request path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlkStats {
    /// Requests answered OK.
    pub ok: u64,
    /// Requests answered IOERR.
    pub ioerr: u64,
    /// Requests answered UNSUPP.
    pub unsupp: u64,
    /// Chains with no writable byte for the status (returned with length 0).
    pub no_status: u64,
    /// Completions for ids not in flight, or orphaned by a reset (dropped).
    pub stale_completions: u64,
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    id: RequestId,
    /// The request queue it came from.
    queue: u16,
    queue_epoch: u64,
    head: u16,
    status_addr: Ipa,
    used_len: u32,
}

/// A virtio-blk device over a [`BlockBackend`], with one or more request
/// queues (`VIRTIO_BLK_F_MQ`, 5.2.3, 5.2.5: the driver may give each CPU
/// its own queue, with its own interrupt vector).
pub struct VirtioBlk<B> {
    backend: B,
    features: u64,
    in_flight: Vec<InFlight>,
    /// Per request queue, bumped on every device reset and on the queue's
    /// own reset: completions of older epochs are orphans.
    epochs: Vec<u64>,
    next_id: u64,
    stats: BlkStats,
}

/// Most request queues a device offers.
pub const MAX_QUEUES: u16 = 64;

impl<B: BlockBackend> VirtioBlk<B> {
    /// A device over `backend` with one request queue.
    pub fn new(backend: B) -> Self {
        Self::with_queues(backend, 1)
    }

    /// A device over `backend` with `queues` request queues (1 to
    /// [`MAX_QUEUES`]; `VIRTIO_BLK_F_MQ` offered when more than one).
    pub fn with_queues(backend: B, queues: u16) -> Self {
        VirtioBlk {
            backend,
            features: 0,
            in_flight: Vec::new(),
            epochs: vec![0; usize::from(queues.clamp(1, MAX_QUEUES))],
            next_id: 0,
            stats: BlkStats::default(),
        }
    }

    /// The current epoch of queue `index`.
    fn epoch(&self, index: u16) -> Option<u64> {
        self.epochs.get(usize::from(index)).copied()
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The backend, mutably.
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// Counters.
    pub fn stats(&self) -> BlkStats {
        self.stats
    }

    /// Requests submitted and not yet completed (orphans included).
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Drains backend completions with no queue live (as after a reset),
    /// for tests of orphaned requests.
    #[cfg(test)]
    pub(crate) fn poll_for_test(&mut self, mem: &dyn GuestMemory) {
        let _ = VirtioDevice::poll(self, &mut [], mem);
    }

    fn config_bytes(&self) -> [u8; cfg::LEN] {
        let mut c = [0u8; cfg::LEN];
        let mut put = |at: usize, bytes: &[u8]| {
            if let Some(s) = c.get_mut(at..at + bytes.len()) {
                s.copy_from_slice(bytes);
            }
        };
        put(
            cfg::CAPACITY,
            &(self.backend.capacity() / SECTOR_SIZE).to_le_bytes(),
        );
        put(cfg::SIZE_MAX, &SIZE_MAX.to_le_bytes());
        let seg_max = SEG_MAX.min(self.backend.max_segments()).max(1);
        put(cfg::SEG_MAX, &seg_max.to_le_bytes());
        put(cfg::BLK_SIZE, &self.backend.block_size().to_le_bytes());
        put(cfg::NUM_QUEUES, &self.num_queues().to_le_bytes());
        let align = (self.backend.block_size() / SECTOR_SIZE as u32).max(1);
        if self.backend.supports_discard() {
            put(cfg::MAX_DISCARD_SECTORS, &MAX_RANGE_SECTORS.to_le_bytes());
            put(cfg::MAX_DISCARD_SEG, &1u32.to_le_bytes());
            put(cfg::DISCARD_SECTOR_ALIGNMENT, &align.to_le_bytes());
        }
        if self.backend.supports_write_zeroes() {
            put(
                cfg::MAX_WRITE_ZEROES_SECTORS,
                &MAX_RANGE_SECTORS.to_le_bytes(),
            );
            put(cfg::MAX_WRITE_ZEROES_SEG, &1u32.to_le_bytes());
        }
        c
    }

    /// Byte range `[sector * 512, + len)` if it lies within the disk.
    fn disk_range(&self, sector: u64, len: u64) -> Option<u64> {
        let off = sector.checked_mul(SECTOR_SIZE)?;
        let end = off.checked_add(len)?;
        (end <= self.backend.capacity()).then_some(off)
    }

    fn answer(
        &mut self,
        q: &mut Queue,
        mem: &dyn GuestMemory,
        head: u16,
        status_addr: Ipa,
        st: u8,
        used_len: u32,
    ) -> Result<(), QueueError> {
        match st {
            status::OK => self.stats.ok += 1,
            status::UNSUPP => self.stats.unsupp += 1,
            _ => self.stats.ioerr += 1,
        }
        mem.write(status_addr, &[st])
            .map_err(QueueError::BufferOutsideMemory)?;
        let len = if st == status::OK { used_len } else { 1 };
        q.add_used(mem, head, len)
    }

    fn process_chain(
        &mut self,
        index: u16,
        q: &mut Queue,
        mem: &dyn GuestMemory,
        chain: &DescriptorChain,
    ) -> Result<(), QueueError> {
        let head = chain.head_index();
        let Some(status_addr) = status_byte(chain) else {
            self.stats.no_status += 1;
            return q.add_used(mem, head, 0);
        };
        match self.parse(chain, mem)? {
            Parsed::Answer(st, used_len) => self.answer(q, mem, head, status_addr, st, used_len),
            Parsed::Submit {
                op,
                segments,
                used_len,
            } => {
                let id = RequestId(self.next_id);
                self.next_id = self.next_id.wrapping_add(1);
                match self.backend.submit(id, op, &segments, mem) {
                    Submission::Done(r) => {
                        let st = result_status(r);
                        self.answer(q, mem, head, status_addr, st, used_len)
                    }
                    Submission::Pending => {
                        self.in_flight.push(InFlight {
                            id,
                            queue: index,
                            queue_epoch: self.epoch(index).unwrap_or(0),
                            head,
                            status_addr,
                            used_len,
                        });
                        Ok(())
                    }
                }
            }
        }
    }

    /// Decodes a request (5.2.6) and checks it against the disk and the
    /// negotiated features.
    fn parse(&self, chain: &DescriptorChain, mem: &dyn GuestMemory) -> Result<Parsed, QueueError> {
        use Parsed::Answer;
        let ioerr = Answer(status::IOERR, 1);
        if chain.readable_len() < 16 {
            return Ok(ioerr);
        }
        let mut header = [0u8; 16];
        read_stream(chain.readable(), 0, &mut header, mem)?;
        let [t0, t1, t2, t3, _, _, _, _, s0, s1, s2, s3, s4, s5, s6, s7] = header;
        let req_type = u32::from_le_bytes([t0, t1, t2, t3]);
        let sector = u64::from_le_bytes([s0, s1, s2, s3, s4, s5, s6, s7]);
        let out_len = u64::from(chain.readable_len()) - 16;
        // The status byte is the last writable one (status_byte() checked it exists).
        let in_len = u64::from(chain.writable_len()).saturating_sub(1);
        let has = |f: u64| self.features & f != 0;
        Ok(match req_type {
            req::IN => {
                if out_len != 0 || in_len % SECTOR_SIZE != 0 {
                    return Ok(ioerr);
                }
                let Some(offset) = self.disk_range(sector, in_len) else {
                    return Ok(ioerr);
                };
                if in_len == 0 {
                    // Nothing to read: answered here, the same on every backend.
                    return Ok(Answer(status::OK, 1));
                }
                Parsed::Submit {
                    op: BlockOp::Read { offset },
                    segments: writable_data(chain),
                    used_len: (in_len + 1) as u32,
                }
            }
            req::OUT => {
                if self.backend.read_only() || in_len != 0 || out_len % SECTOR_SIZE != 0 {
                    return Ok(ioerr);
                }
                let Some(offset) = self.disk_range(sector, out_len) else {
                    return Ok(ioerr);
                };
                if out_len == 0 {
                    // Nothing to write: answered here, the same on every backend.
                    return Ok(Answer(status::OK, 1));
                }
                Parsed::Submit {
                    op: BlockOp::Write { offset },
                    segments: readable_after(chain, 16),
                    used_len: 1,
                }
            }
            req::FLUSH if has(feature::FLUSH) => Parsed::Submit {
                op: BlockOp::Flush,
                segments: Vec::new(),
                used_len: 1,
            },
            req::GET_ID => {
                let id = self.backend.device_id();
                let n = (in_len as usize).min(VIRTIO_BLK_ID_BYTES);
                let Some(bytes) = id.get(..n) else {
                    return Ok(ioerr);
                };
                write_stream(chain.writable(), bytes, mem)?;
                Answer(status::OK, n as u32 + 1)
            }
            req::DISCARD | req::WRITE_ZEROES => {
                let discard = req_type == req::DISCARD;
                let negotiated = if discard {
                    has(feature::DISCARD)
                } else {
                    has(feature::WRITE_ZEROES)
                };
                if !negotiated {
                    return Ok(Answer(status::UNSUPP, 1));
                }
                if out_len != 16 || in_len != 0 {
                    return Ok(ioerr);
                }
                let mut seg = [0u8; 16];
                read_stream(chain.readable(), 16, &mut seg, mem)?;
                let [a0, a1, a2, a3, a4, a5, a6, a7, n0, n1, n2, n3, f0, f1, f2, f3] = seg;
                let start = u64::from_le_bytes([a0, a1, a2, a3, a4, a5, a6, a7]);
                let num = u32::from_le_bytes([n0, n1, n2, n3]);
                let flags = u32::from_le_bytes([f0, f1, f2, f3]);
                // 5.2.6.2: unknown flags, or unmap on a discard, are UNSUPP.
                if flags & !VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP != 0 || (discard && flags != 0) {
                    return Ok(Answer(status::UNSUPP, 1));
                }
                let len = u64::from(num) * SECTOR_SIZE;
                if num > MAX_RANGE_SECTORS {
                    return Ok(ioerr);
                }
                let Some(offset) = self.disk_range(start, len) else {
                    return Ok(ioerr);
                };
                let op = if discard {
                    BlockOp::Discard { offset, len }
                } else {
                    BlockOp::WriteZeroes {
                        offset,
                        len,
                        may_unmap: flags != 0,
                    }
                };
                Parsed::Submit {
                    op,
                    segments: Vec::new(),
                    used_len: 1,
                }
            }
            _ => Answer(status::UNSUPP, 1),
        })
    }
}

/// `flags` bit of a write-zeroes segment: the range may be deallocated (5.2.6).
pub const VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP: u32 = 1;

enum Parsed {
    /// Answer now with this status; `used_len` counts bytes written on success.
    Answer(u8, u32),
    Submit {
        op: BlockOp,
        segments: Vec<MemRange<Ipa>>,
        used_len: u32,
    },
}

fn result_status(r: Result<(), BlockError>) -> u8 {
    match r {
        Ok(()) => status::OK,
        Err(BlockError::Io) => status::IOERR,
        Err(BlockError::Unsupported) => status::UNSUPP,
    }
}

/// The address of the chain's last writable byte.
fn status_byte(chain: &DescriptorChain) -> Option<Ipa> {
    let d = chain.writable().filter(|d| d.len > 0).last()?;
    d.addr.0.checked_add(u64::from(d.len) - 1).map(Ipa)
}

/// Copies `buf.len()` bytes starting `skip` bytes into the buffers `descs`.
fn read_stream<'a>(
    descs: impl Iterator<Item = &'a Descriptor>,
    mut skip: u64,
    buf: &mut [u8],
    mem: &dyn GuestMemory,
) -> Result<(), QueueError> {
    let mut done = 0usize;
    for d in descs {
        if done >= buf.len() {
            break;
        }
        let len = u64::from(d.len);
        if skip >= len {
            skip -= len;
            continue;
        }
        let avail = (len - skip) as usize;
        let n = avail.min(buf.len() - done);
        if let Some(dst) = buf.get_mut(done..done + n) {
            mem.read(Ipa(d.addr.0 + skip), dst)
                .map_err(QueueError::BufferOutsideMemory)?;
        }
        done += n;
        skip = 0;
    }
    Ok(())
}

/// Writes `data` at the start of the buffers `descs`.
fn write_stream<'a>(
    descs: impl Iterator<Item = &'a Descriptor>,
    data: &[u8],
    mem: &dyn GuestMemory,
) -> Result<(), QueueError> {
    let mut done = 0usize;
    for d in descs {
        if done >= data.len() {
            break;
        }
        let n = (d.len as usize).min(data.len() - done);
        if let Some(src) = data.get(done..done + n) {
            mem.write(d.addr, src)
                .map_err(QueueError::BufferOutsideMemory)?;
        }
        done += n;
    }
    Ok(())
}

/// The readable buffers with their first `skip` bytes removed.
fn readable_after(chain: &DescriptorChain, mut skip: u64) -> Vec<MemRange<Ipa>> {
    let mut out = Vec::new();
    for d in chain.readable() {
        let len = u64::from(d.len);
        if skip >= len {
            skip -= len;
            continue;
        }
        out.push(MemRange::new(Ipa(d.addr.0 + skip), len - skip));
        skip = 0;
    }
    out
}

/// The writable buffers without the final status byte.
fn writable_data(chain: &DescriptorChain) -> Vec<MemRange<Ipa>> {
    let mut left = u64::from(chain.writable_len()).saturating_sub(1);
    let mut out = Vec::new();
    for d in chain.writable() {
        if left == 0 {
            break;
        }
        let n = u64::from(d.len).min(left);
        if n > 0 {
            out.push(MemRange::new(d.addr, n));
        }
        left -= n;
    }
    out
}

impl<B: BlockBackend> VirtioDevice for VirtioBlk<B> {
    fn device_type(&self) -> u16 {
        VIRTIO_ID_BLOCK
    }

    fn pci_class(&self) -> u32 {
        // Mass storage controller, other.
        0x01_80_00
    }

    fn device_features(&self) -> u64 {
        let mut f = feature::SIZE_MAX | feature::SEG_MAX | feature::BLK_SIZE | feature::FLUSH;
        if self.backend.read_only() {
            f |= feature::RO;
        }
        if self.backend.supports_discard() {
            f |= feature::DISCARD;
        }
        if self.backend.supports_write_zeroes() {
            f |= feature::WRITE_ZEROES;
        }
        if self.num_queues() > 1 {
            f |= feature::MQ;
        }
        f
    }

    fn num_queues(&self) -> u16 {
        self.epochs.len() as u16
    }

    fn queue_max_size(&self) -> u16 {
        MAX_QUEUE_SIZE
    }

    fn config_len(&self) -> usize {
        cfg::LEN
    }

    fn read_config(&self, offset: usize, data: &mut [u8]) {
        let c = self.config_bytes();
        match c.get(offset..offset.saturating_add(data.len())) {
            Some(src) => data.copy_from_slice(src),
            None => data.fill(0),
        }
    }

    fn write_config(&mut self, _offset: usize, _data: &[u8]) {
        // Nothing is writable without VIRTIO_BLK_F_CONFIG_WCE (not offered).
    }

    fn activate(&mut self, features: u64) {
        self.features = features;
    }

    fn reset(&mut self) {
        self.features = 0;
        for e in &mut self.epochs {
            *e = e.wrapping_add(1);
        }
    }

    /// Requests submitted before a reset stay in flight until the backend
    /// completes them (a host disk may still be writing into the guest's
    /// pages); their completions are then dropped.
    fn quiesced(&self) -> bool {
        self.in_flight.is_empty()
    }

    fn queue_reset(&mut self, index: u16) {
        if let Some(e) = self.epochs.get_mut(usize::from(index)) {
            *e = e.wrapping_add(1);
        }
    }

    fn process_queue(
        &mut self,
        index: u16,
        queues: &mut [Queue],
        mem: &dyn GuestMemory,
    ) -> Result<(), QueueError> {
        let Some(q) = queues.get_mut(usize::from(index)) else {
            return Ok(());
        };
        if usize::from(index) >= self.epochs.len() {
            return Ok(());
        }
        // Room for every request is bounded by its queue's size (orphans of
        // a reset included, until the backend finishes them).
        let mut held = self.in_flight.iter().filter(|f| f.queue == index).count();
        while held < usize::from(q.size) {
            let Some(chain) = q.pop(mem)? else {
                break;
            };
            let before = self.in_flight.len();
            self.process_chain(index, q, mem, &chain)?;
            held += self.in_flight.len() - before;
        }
        Ok(())
    }

    /// Requests of queue `index`'s current epoch are in flight: each
    /// completion ends in [`VirtioDevice::poll`], which takes what is
    /// available there.
    fn polls(&self, index: u16) -> bool {
        let Some(epoch) = self.epoch(index) else {
            return false;
        };
        self.in_flight
            .iter()
            .any(|f| f.queue == index && f.queue_epoch == epoch)
    }

    fn poll(&mut self, queues: &mut [Queue], mem: &dyn GuestMemory) -> Result<(), QueueError> {
        // Bit i: queue i got room back (at most 64 queues, MAX_QUEUES).
        let mut freed = 0u64;
        // At most one completion per in-flight slot per call.
        for _ in 0..=self.in_flight.len() {
            let Some((id, r)) = self.backend.poll(mem) else {
                break;
            };
            let Some(i) = self.in_flight.iter().position(|f| f.id == id) else {
                self.stats.stale_completions += 1;
                continue;
            };
            let f = self.in_flight.swap_remove(i);
            freed |= 1u64.checked_shl(u32::from(f.queue)).unwrap_or(0);
            let live = self.epoch(f.queue) == Some(f.queue_epoch);
            match queues.get_mut(usize::from(f.queue)) {
                Some(q) if q.ready && live => {
                    self.answer(q, mem, f.head, f.status_addr, result_status(r), f.used_len)?
                }
                _ => self.stats.stale_completions += 1,
            }
        }
        for index in (0..self.num_queues()).filter(|&i| freed & (1u64 << i) != 0) {
            if queues.get(usize::from(index)).is_some_and(|q| q.ready) {
                self.process_queue(index, queues, mem)?;
            }
        }
        Ok(())
    }
}

/// A request a deferred [`RamDisk`] holds until polled.
type Deferred = (RequestId, BlockOp, Vec<MemRange<Ipa>>);

/// A disk in RAM. With [`RamDisk::deferred`], submissions stay pending until
/// [`BlockBackend::poll`] — the shape of a host disk completing on its interrupt.
///
/// The storage is any byte buffer: a `Vec` by default, or memory the owner
/// set aside (the hypervisor's carve-out of host RAM) through [`RamDisk::over`].
#[derive(Debug, Clone)]
pub struct RamDisk<S = Vec<u8>> {
    data: S,
    read_only: bool,
    discard: bool,
    write_zeroes: bool,
    id: [u8; VIRTIO_BLK_ID_BYTES],
    pending: Option<VecDeque<Deferred>>,
    flushes: u64,
}

impl RamDisk {
    /// A zeroed disk of `capacity` bytes (rounded down to whole sectors),
    /// with discard and write zeroes, completing at once.
    pub fn new(capacity: usize) -> Self {
        let len = capacity - capacity % SECTOR_SIZE as usize;
        RamDisk::over(vec![0; len])
    }
}

impl<S: AsRef<[u8]> + AsMut<[u8]> + Send> RamDisk<S> {
    /// A disk over `storage`, as it is (its last partial sector, if any, is
    /// not used), with discard and write zeroes, completing at once.
    pub fn over(storage: S) -> Self {
        let mut id = [0u8; VIRTIO_BLK_ID_BYTES];
        for (d, s) in id.iter_mut().zip(b"ramdisk") {
            *d = *s;
        }
        RamDisk {
            data: storage,
            read_only: false,
            discard: true,
            write_zeroes: true,
            id,
            pending: None,
            flushes: 0,
        }
    }

    /// Refuses writes (`VIRTIO_BLK_F_RO`).
    pub fn with_read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    /// Offers neither discard nor write zeroes.
    pub fn without_discard(mut self) -> Self {
        self.discard = false;
        self.write_zeroes = false;
        self
    }

    /// Completes only on [`BlockBackend::poll`], one request per call, in order.
    pub fn deferred(mut self) -> Self {
        self.pending = Some(VecDeque::new());
        self
    }

    /// Requests waiting for `poll` (deferred mode).
    pub fn pending(&self) -> usize {
        self.pending.as_ref().map_or(0, VecDeque::len)
    }

    /// The disk's bytes (whole sectors).
    pub fn data(&self) -> &[u8] {
        let d = self.data.as_ref();
        d.get(..d.len() - d.len() % SECTOR_SIZE as usize)
            .unwrap_or(&[])
    }

    /// The disk's bytes (whole sectors), mutably.
    pub fn data_mut(&mut self) -> &mut [u8] {
        let d = self.data.as_mut();
        let len = d.len() - d.len() % SECTOR_SIZE as usize;
        d.get_mut(..len).unwrap_or(&mut [])
    }

    /// How many flushes completed.
    pub fn flushes(&self) -> u64 {
        self.flushes
    }

    fn execute(
        &mut self,
        op: BlockOp,
        segments: &[MemRange<Ipa>],
        mem: &dyn GuestMemory,
    ) -> Result<(), BlockError> {
        let span = |off: u64, len: u64| -> Result<core::ops::Range<usize>, BlockError> {
            let s = usize::try_from(off).map_err(|_| BlockError::Io)?;
            let n = usize::try_from(len).map_err(|_| BlockError::Io)?;
            Ok(s..s.checked_add(n).ok_or(BlockError::Io)?)
        };
        match op {
            BlockOp::Read { mut offset } => {
                for seg in segments {
                    let src = self
                        .data()
                        .get(span(offset, seg.size)?)
                        .ok_or(BlockError::Io)?;
                    mem.write(seg.base, src).map_err(|_| BlockError::Io)?;
                    offset = offset.checked_add(seg.size).ok_or(BlockError::Io)?;
                }
                Ok(())
            }
            BlockOp::Write { mut offset } => {
                if self.read_only {
                    return Err(BlockError::Io);
                }
                for seg in segments {
                    let r = span(offset, seg.size)?;
                    let dst = self.data_mut().get_mut(r).ok_or(BlockError::Io)?;
                    mem.read(seg.base, dst).map_err(|_| BlockError::Io)?;
                    offset = offset.checked_add(seg.size).ok_or(BlockError::Io)?;
                }
                Ok(())
            }
            BlockOp::Flush => {
                self.flushes += 1;
                Ok(())
            }
            BlockOp::Discard { offset, len } | BlockOp::WriteZeroes { offset, len, .. } => {
                let supported = match op {
                    BlockOp::Discard { .. } => self.discard,
                    _ => self.write_zeroes,
                };
                if !supported {
                    return Err(BlockError::Unsupported);
                }
                self.data_mut()
                    .get_mut(span(offset, len)?)
                    .ok_or(BlockError::Io)?
                    .fill(0);
                Ok(())
            }
        }
    }
}

impl<S: AsRef<[u8]> + AsMut<[u8]> + Send> BlockBackend for RamDisk<S> {
    fn max_segments(&self) -> u32 {
        SEG_MAX
    }

    fn capacity(&self) -> u64 {
        self.data().len() as u64
    }
    fn block_size(&self) -> u32 {
        SECTOR_SIZE as u32
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
    fn supports_discard(&self) -> bool {
        self.discard
    }
    fn supports_write_zeroes(&self) -> bool {
        self.write_zeroes
    }
    fn device_id(&self) -> [u8; VIRTIO_BLK_ID_BYTES] {
        self.id
    }
    fn submit(
        &mut self,
        id: RequestId,
        op: BlockOp,
        segments: &[MemRange<Ipa>],
        mem: &dyn GuestMemory,
    ) -> Submission {
        match &mut self.pending {
            Some(p) => {
                p.push_back((id, op, segments.to_vec()));
                Submission::Pending
            }
            None => Submission::Done(self.execute(op, segments, mem)),
        }
    }
    fn poll(&mut self, mem: &dyn GuestMemory) -> Option<(RequestId, Result<(), BlockError>)> {
        let (id, op, segs) = self.pending.as_mut()?.pop_front()?;
        Some((id, self.execute(op, &segs, mem)))
    }
}

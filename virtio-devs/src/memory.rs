//! The device's view of guest RAM: bounds-checked reads and writes at guest
//! physical addresses (IPA) that fail instead of panicking, and the host
//! physical ranges behind a guest range for zero-copy DMA.
//!
//! Every address here comes from the guest (descriptor tables, buffers,
//! rings), so an implementation checks `[ipa, ipa + len)` against the RAM it
//! maps, with checked arithmetic, and answers [`MemoryError`] otherwise.

use alloc::vec::Vec;
use arch_emu::addr::{Ipa, MemRange, Pa};

/// Why a guest memory access failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryError {
    /// `[addr, addr + len)` is not entirely guest RAM.
    OutOfRange {
        /// First byte.
        addr: Ipa,
        /// Length in bytes.
        len: u64,
    },
    /// `addr + len` overflows the address space.
    Overflow,
}

/// Guest RAM as the device sees it. Shared with running vCPUs, so every
/// method takes `&self`; the hypervisor's implementation writes through its
/// own mapping of guest RAM.
///
/// Ordering: the split virtqueue relies on [`GuestMemory::barrier`] between
/// reading `avail_idx` and the ring entries, and between writing used entries
/// and `used_idx` (virtio 1.2, 2.7.13 and 2.7.7): an implementation over real
/// RAM issues a full barrier (`dmb ish`).
pub trait GuestMemory: Send {
    /// Fills `buf` from guest memory at `addr`.
    fn read(&self, addr: Ipa, buf: &mut [u8]) -> Result<(), MemoryError>;

    /// Writes `data` to guest memory at `addr`.
    fn write(&self, addr: Ipa, data: &[u8]) -> Result<(), MemoryError>;

    /// Whether `range` is entirely guest RAM (an empty range at a valid or
    /// one-past-the-end address is).
    fn check_range(&self, range: MemRange<Ipa>) -> Result<(), MemoryError>;

    /// Appends the host physical ranges behind `range`, in guest order, to
    /// `out` (adjacent ones may be merged), for a backend that DMAs straight
    /// into guest pages. Nothing is appended on error.
    fn host_ranges(
        &self,
        range: MemRange<Ipa>,
        out: &mut Vec<MemRange<Pa>>,
    ) -> Result<(), MemoryError>;

    /// A full memory barrier between the device's accesses to guest memory.
    fn barrier(&self);
}

/// Little-endian helpers over [`GuestMemory`] (virtio 1.2, 1.4: structures
/// are little-endian).
pub trait GuestMemoryExt: GuestMemory {
    /// Reads a `u16` at `addr`.
    fn read_u16(&self, addr: Ipa) -> Result<u16, MemoryError> {
        let mut b = [0; 2];
        self.read(addr, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }
    /// Reads a `u32` at `addr`.
    fn read_u32(&self, addr: Ipa) -> Result<u32, MemoryError> {
        let mut b = [0; 4];
        self.read(addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    /// Reads a `u64` at `addr`.
    fn read_u64(&self, addr: Ipa) -> Result<u64, MemoryError> {
        let mut b = [0; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    /// Writes a `u16` at `addr`.
    fn write_u16(&self, addr: Ipa, v: u16) -> Result<(), MemoryError> {
        self.write(addr, &v.to_le_bytes())
    }
    /// Writes a `u32` at `addr`.
    fn write_u32(&self, addr: Ipa, v: u32) -> Result<(), MemoryError> {
        self.write(addr, &v.to_le_bytes())
    }
}

impl<M: GuestMemory + ?Sized> GuestMemoryExt for M {}

/// `base + offset`, or [`MemoryError::Overflow`].
pub fn offset_ipa(base: Ipa, offset: u64) -> Result<Ipa, MemoryError> {
    base.0
        .checked_add(offset)
        .map(Ipa)
        .ok_or(MemoryError::Overflow)
}

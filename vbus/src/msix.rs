//! An emulated MSI-X capability, table and Pending Bit Array (PCI Local Bus
//! 3.0, 6.8.2; PCI Express Base 6.0, 7.7.2), shared by emulated functions
//! (virtio-pci) and, later, the shadow table of a passed-through function.
//!
//! The function owns the capability in its [`ConfigSpace`] (Message Control's
//! MSI-X Enable and Function Mask are the only writable bits) and hands the
//! trapped table and PBA accesses of its BAR to [`Msix`]. An interrupt the
//! function raises on a vector is either sent as an [`MsiMessage`] (address,
//! data: what the guest programmed) or, while the vector or the function is
//! masked, recorded as its pending bit and sent on unmask (6.8.2.8). The
//! message is never a write anywhere: the function's owner turns it into a
//! guest interrupt only if it names the guest's doorbell (see
//! [`Segment::set_msi_target`](crate::Segment::set_msi_target)).
//!
//! Accesses: the table and PBA take aligned 32- and 64-bit accesses
//! (6.8.2: "software must use aligned full DWORD or aligned full QWORD
//! transactions; otherwise the result is undefined"). Here any other width or
//! alignment reads all ones and writes nothing, and is counted in
//! [`MsixStats::bad_access`]; so are accesses past the last entry of the table
//! or past the PBA's last QWORD (the rest of the region reserved for them).

use crate::config::{CapabilityError, ConfigSpace};
use alloc::vec;
use alloc::vec::Vec;

/// The MSI-X Capability ID (PCI Local Bus 3.0, 6.8.2.1).
pub const CAP_ID: u8 = 0x11;
/// The capability's length: header + Message Control, Table Offset/BIR, PBA Offset/BIR.
pub const CAP_LEN: u8 = 12;
/// One table entry: Message Address, Message Upper Address, Message Data, Vector Control.
pub const ENTRY_SIZE: u64 = 16;
/// At most 2048 vectors (Table Size is 11 bits, N - 1).
pub const MAX_VECTORS: u16 = 2048;

/// Message Control bits (6.8.2.3).
pub mod control {
    /// Table Size \[10:0\], encoded as N - 1 (read-only).
    pub const TABLE_SIZE: u16 = 0x07ff;
    /// Function Mask \[14\].
    pub const FUNCTION_MASK: u16 = 1 << 14;
    /// MSI-X Enable \[15\].
    pub const ENABLE: u16 = 1 << 15;
}

/// Vector Control's Mask Bit (6.8.2.9); the other bits are reserved.
pub const VECTOR_MASKED: u32 = 1;

/// A message a function sends: a DWORD write of `data` to `address`
/// (6.8.2.6-6.8.2.8), as the guest programmed its table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsiMessage {
    /// Message Address (upper and lower).
    pub address: u64,
    /// Message Data.
    pub data: u32,
}

/// What became of an interrupt raised on a vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fired {
    /// The message was sent.
    Sent(MsiMessage),
    /// The vector or the function is masked: its pending bit is set.
    Pending,
    /// No such vector (nothing happens).
    NoVector,
}

/// Counters of one function's MSI-X.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MsixStats {
    /// Messages sent (at once, or on unmask).
    pub sent: u64,
    /// Interrupts raised while masked (pending bit set).
    pub masked_pending: u64,
    /// Table or PBA accesses of a width, alignment or offset the spec does
    /// not define, or writes to the read-only PBA (all ones / ignored).
    pub bad_access: u64,
    /// Entries the guest unmasked while they named no doorbell and MBI SPI
    /// of the guest (an assigned function keeps them masked on the device).
    pub forged_entries: u64,
    /// Interrupts raised for a vector the function does not have (past its
    /// table): nothing is sent, nothing pends.
    pub spurious: u64,
}

/// Counters of a function's MSI capability (PCI Local Bus 3.0, 6.8.1) whose
/// messages an owner routes (an assigned function's: `passthrough::msi`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MsiCapabilityStats {
    /// Messages sent (at once, or when the guest unmasked the vector).
    pub sent: u64,
    /// Interrupts raised while the guest masked the vector (its pending bit set).
    pub masked_pending: u64,
    /// Interrupts raised while the guest had MSI disabled (dropped: a
    /// disabled function sends no message).
    pub disabled: u64,
    /// Times the guest enabled MSI, or changed its message while enabled,
    /// naming no doorbell and MBI SPI of its own (the device's MSI stays
    /// disabled until the message is valid again).
    pub forged_messages: u64,
    /// Times the guest had MSI and MSI-X enabled together (the device gets
    /// neither: software must not enable both, PCI Express Base 6.0, 6.1.4).
    pub both_enabled: u64,
    /// Interrupts raised for a vector past those the guest allocated
    /// (Multiple Message Enable): nothing is sent, nothing pends.
    pub spurious: u64,
}

/// Where the table and PBA live: BAR index and offset in it (6.8.2.4, 6.8.2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsixLayout {
    /// Number of vectors, 1..=2048.
    pub vectors: u16,
    /// Table BIR.
    pub table_bar: u8,
    /// Table offset in that BAR (QWORD-aligned).
    pub table_offset: u32,
    /// PBA BIR.
    pub pba_bar: u8,
    /// PBA offset in that BAR (QWORD-aligned).
    pub pba_offset: u32,
}

impl MsixLayout {
    /// Bytes of table.
    pub fn table_len(&self) -> u64 {
        u64::from(self.vectors) * ENTRY_SIZE
    }

    /// Bytes of PBA (whole QWORDs).
    pub fn pba_len(&self) -> u64 {
        u64::from(self.vectors).div_ceil(64) * 8
    }
}

/// Why a capability could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsixError {
    /// Vectors outside 1..=2048, or a misaligned offset or BIR above 5.
    BadLayout,
    /// No room in the capability list.
    Capability(CapabilityError),
}

/// One function's MSI-X table, PBA and capability offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msix {
    cap: u16,
    layout: MsixLayout,
    /// Per entry: address low, address high, data, vector control.
    table: Vec<[u32; 4]>,
    pba: Vec<u64>,
    stats: MsixStats,
}

/// A value of `size` bytes with every bit set.
fn all_ones(size: u8) -> u64 {
    match size {
        1..=7 => (1u64 << (8 * u32::from(size))) - 1,
        _ => u64::MAX,
    }
}

impl Msix {
    /// Appends the MSI-X capability to `cs` (Table Size N - 1, offsets and
    /// BIRs read-only; Enable and Function Mask writable, both 0) and returns
    /// the table in its reset state (every vector masked, 6.8.2.9).
    pub fn add_to(cs: &mut ConfigSpace, layout: MsixLayout) -> Result<Msix, MsixError> {
        let ok = (1..=MAX_VECTORS).contains(&layout.vectors)
            && layout.table_bar <= 5
            && layout.pba_bar <= 5
            && layout.table_offset % 8 == 0
            && layout.pba_offset % 8 == 0;
        if !ok {
            return Err(MsixError::BadLayout);
        }
        let cap = cs
            .add_capability(CAP_ID, CAP_LEN)
            .map_err(MsixError::Capability)?;
        cs.set_u16(cap + 2, layout.vectors - 1);
        cs.set_writable(
            cap + 2,
            2,
            u32::from(control::ENABLE | control::FUNCTION_MASK),
        );
        cs.set_u32(cap + 4, layout.table_offset | u32::from(layout.table_bar));
        cs.set_u32(cap + 8, layout.pba_offset | u32::from(layout.pba_bar));
        Ok(Msix {
            cap,
            layout,
            table: vec![[0, 0, 0, VECTOR_MASKED]; usize::from(layout.vectors)],
            pba: vec![0; usize::from(layout.vectors).div_ceil(64)],
            stats: MsixStats::default(),
        })
    }

    /// The capability's offset in config space.
    pub fn cap_offset(&self) -> u16 {
        self.cap
    }

    /// Where the table and PBA are.
    pub fn layout(&self) -> MsixLayout {
        self.layout
    }

    /// Number of vectors.
    pub fn vectors(&self) -> u16 {
        self.layout.vectors
    }

    /// Counters.
    pub fn stats(&self) -> MsixStats {
        self.stats
    }

    /// Message Control as the guest last wrote it.
    pub fn control(&self, cs: &ConfigSpace) -> u16 {
        cs.raw(self.cap + 2, 2) as u16
    }

    /// MSI-X Enable: the function signals through the table, not INTx.
    pub fn enabled(&self, cs: &ConfigSpace) -> bool {
        self.control(cs) & control::ENABLE != 0
    }

    /// Whether a config write of `size` bytes at `offset` touched Message Control.
    pub fn touches_control(&self, offset: u16, size: u8) -> bool {
        let at = self.cap + 2;
        offset < at + 2 && at < offset.saturating_add(u16::from(size))
    }

    /// Back to the reset state: every entry zero and masked, no pending bit
    /// (the capability's bits are reset with the rest of config space).
    pub fn reset(&mut self) {
        self.table.fill([0, 0, 0, VECTOR_MASKED]);
        self.pba.fill(0);
    }

    /// Whether `vector` is masked now (its Mask Bit, or the Function Mask).
    fn masked(&self, cs: &ConfigSpace, vector: usize) -> bool {
        self.control(cs) & control::FUNCTION_MASK != 0
            || self
                .table
                .get(vector)
                .is_none_or(|e| e[3] & VECTOR_MASKED != 0)
    }

    fn message(&self, vector: usize) -> Option<MsiMessage> {
        let e = self.table.get(vector)?;
        Some(MsiMessage {
            address: u64::from(e[0]) | (u64::from(e[1]) << 32),
            data: e[2],
        })
    }

    fn set_pending(&mut self, vector: usize, on: bool) {
        if let Some(q) = self.pba.get_mut(vector / 64) {
            let bit = 1u64 << (vector % 64);
            if on {
                *q |= bit;
            } else {
                *q &= !bit;
            }
        }
    }

    fn pending(&self, vector: usize) -> bool {
        self.pba
            .get(vector / 64)
            .is_some_and(|q| q & (1 << (vector % 64)) != 0)
    }

    /// The function raises an interrupt on `vector` (MSI-X must be enabled:
    /// the caller falls back to INTx otherwise).
    pub fn fire(&mut self, cs: &ConfigSpace, vector: u16, out: &mut Vec<MsiMessage>) -> Fired {
        let v = usize::from(vector);
        if v >= self.table.len() {
            self.stats.spurious += 1;
            return Fired::NoVector;
        }
        if self.masked(cs, v) {
            self.set_pending(v, true);
            self.stats.masked_pending += 1;
            return Fired::Pending;
        }
        match self.message(v) {
            Some(m) => {
                self.stats.sent += 1;
                out.push(m);
                Fired::Sent(m)
            }
            None => Fired::NoVector,
        }
    }

    /// Sends every pending vector that is no longer masked and clears its
    /// pending bit (6.8.2.9: unmasking a vector with its pending bit set
    /// sends the message). Call after any change of a mask or of Enable.
    pub fn deliver_unmasked(&mut self, cs: &ConfigSpace, out: &mut Vec<MsiMessage>) {
        if !self.enabled(cs) || self.pba.iter().all(|q| *q == 0) {
            return;
        }
        for v in 0..self.table.len() {
            if self.pending(v) && !self.masked(cs, v) {
                self.set_pending(v, false);
                if let Some(m) = self.message(v) {
                    self.stats.sent += 1;
                    out.push(m);
                }
            }
        }
    }

    /// The DWORD indices an aligned 4- or 8-byte access at `offset` covers
    /// in a region of `len` bytes, or `None` (counted) for anything else.
    fn dwords(&mut self, offset: u64, size: u8, len: u64) -> Option<(usize, usize)> {
        let ok = matches!(size, 4 | 8)
            && offset % u64::from(size) == 0
            && offset
                .checked_add(u64::from(size))
                .is_some_and(|e| e <= len);
        if !ok {
            self.stats.bad_access += 1;
            return None;
        }
        let first = (offset / 4) as usize;
        Some((first, first + usize::from(size / 4)))
    }

    /// A table read of `size` bytes at `offset` from the table's start.
    pub fn table_read(&mut self, offset: u64, size: u8) -> u64 {
        let Some((lo, hi)) = self.dwords(offset, size, self.layout.table_len()) else {
            return all_ones(size);
        };
        let mut v = 0u64;
        for (i, dw) in (lo..hi).enumerate() {
            let word = self.table.get(dw / 4).and_then(|e| e.get(dw % 4)).copied();
            v |= u64::from(word.unwrap_or(u32::MAX)) << (32 * i);
        }
        v
    }

    /// A table write; a vector it unmasks that was pending is sent to `out`.
    pub fn table_write(
        &mut self,
        cs: &ConfigSpace,
        offset: u64,
        size: u8,
        value: u64,
        out: &mut Vec<MsiMessage>,
    ) {
        let Some((lo, hi)) = self.dwords(offset, size, self.layout.table_len()) else {
            return;
        };
        for (i, dw) in (lo..hi).enumerate() {
            let word = (value >> (32 * i)) as u32;
            if let Some(slot) = self.table.get_mut(dw / 4).and_then(|e| e.get_mut(dw % 4)) {
                *slot = match dw % 4 {
                    // Message Address \[1:0\] are 0 (DWORD-aligned, 6.8.2.6).
                    0 => word & !3,
                    // Vector Control: only the Mask Bit; the rest is reserved.
                    3 => word & VECTOR_MASKED,
                    _ => word,
                };
            }
        }
        self.deliver_unmasked(cs, out);
    }

    /// A PBA read of `size` bytes at `offset` from the PBA's start.
    pub fn pba_read(&mut self, offset: u64, size: u8) -> u64 {
        let Some((lo, hi)) = self.dwords(offset, size, self.layout.pba_len()) else {
            return all_ones(size);
        };
        let mut v = 0u64;
        for (i, dw) in (lo..hi).enumerate() {
            let q = self.pba.get(dw / 2).copied().unwrap_or(u64::MAX);
            let word = if dw % 2 == 0 {
                q as u32
            } else {
                (q >> 32) as u32
            };
            v |= u64::from(word) << (32 * i);
        }
        v
    }

    /// A PBA write: the PBA is read-only (6.8.2.10); ignored and counted.
    pub fn pba_write(&mut self, _offset: u64, _size: u8) {
        self.stats.bad_access += 1;
    }
}

#[cfg(test)]
mod tests;

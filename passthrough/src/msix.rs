//! MSI-X of an assigned function (PCI Local Bus 3.0, 6.8.2; PCI Express
//! Base 6.0, 7.7.2): the guest's table and PBA are shadows, the device's
//! table holds only what the hypervisor chose.
//!
//! * The guest programs a shadow table. Its address/data pairs are never
//!   written to the device: at assignment every device entry gets the host
//!   ITS doorbell ([`MsiRoute::doorbell`], GITS_TRANSLATER) as its address
//!   and its own vector number as its data (the ITS EventID), and stays
//!   masked.
//! * A vector is unmasked on the device only while the guest has it
//!   unmasked and its entry names the guest's doorbell and an SPI of its
//!   MBI range ([`MsiRoute::guest`]). An entry the guest unmasks naming
//!   anything else stays masked on the device and is counted
//!   ([`MsixStats::forged_entries`]). Message Control's MSI-X Enable and
//!   Function Mask are emulated and mirrored to the device by
//!   `AssignedFunction` (MSI-X Enable only while the guest has MSI off:
//!   never both at the device).
//! * The device's message arrives as an LPI; the hypervisor hands its
//!   EventID to [`AssignedMsix::fire`], which sends the guest's message for
//!   that vector, or sets its pending bit while the guest masks it (sent on
//!   unmask, 6.8.2.9). The segment checks the message against the guest's
//!   doorbell and range again before it pends anything.
//! * The pages of the table and PBA trap (4 KiB, the stage-2 granule); the
//!   rest of the BAR stays mapped. Accesses of any width (1, 2, 4, 8) and
//!   offset inside the table or PBA are emulated byte by byte; the PBA reads
//!   as the shadow's pending bits or the device's own (a vector the guest
//!   masks is masked on the device, which then holds its pending bit).
//!   Accesses to the rest of a trapped page reach the device when naturally
//!   aligned. An access that straddles the table or PBA's edge, an unaligned
//!   access to the device's part, and PBA writes are dropped (reads all
//!   ones) and counted in [`MsixStats::bad_access`].

use crate::access::BarAccess;
use crate::layout::{HostFunction, MsixLayout};
use alloc::vec;
use alloc::vec::Vec;
use arch_emu::addr::Pa;
use vbus::msix::{control, MsiMessage, MsixStats, ENTRY_SIZE, VECTOR_MASKED};
use vbus::{ConfigSpace, MsiTarget};

/// The stage-2 granule the table and PBA are trapped at.
pub const PAGE: u64 = 4096;

/// Where an assigned function's MSIs go: the host doorbell its device
/// writes and the guest's doorbell and SPIs its messages may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsiRoute {
    /// GITS_TRANSLATER's host physical address (IHI 0069 12.19.1): every
    /// device entry's Message Address.
    pub doorbell: Pa,
    /// The guest's GICD_SETSPI_NSR doorbell and MBI SPIs.
    pub guest: MsiTarget,
}

/// One region (table or PBA) as it lies in a host BAR.
#[derive(Debug, Clone, Copy)]
struct Region {
    bar: u8,
    /// Offset in the BAR.
    offset: u64,
    len: u64,
    /// Host physical address of its first byte.
    pa: Pa,
    /// The size of the host BAR that holds it.
    bar_size: u64,
}

impl Region {
    fn holds(&self, bar: u8, off: u64, size: u8) -> bool {
        bar == self.bar
            && off >= self.offset
            && off.saturating_add(u64::from(size)) <= self.offset + self.len
    }

    fn touches(&self, bar: u8, off: u64, size: u8) -> bool {
        bar == self.bar
            && off < self.offset + self.len
            && self.offset < off.saturating_add(u64::from(size))
    }
}

/// An assigned function's MSI-X: the guest's shadow table and PBA, and the
/// device's table as the hypervisor programs it.
#[derive(Debug, Clone)]
pub struct AssignedMsix {
    layout: MsixLayout,
    table: Region,
    pba: Region,
    route: MsiRoute,
    /// The guest's entries: address low, address high, data, vector control.
    entries: Vec<[u32; 4]>,
    /// The shadow pending bits (interrupts taken while the guest masked them).
    pending: Vec<u64>,
    /// Per vector: the Mask Bit last written to the device.
    device_masked: Vec<bool>,
    /// Per vector: counted as forged since the guest last unmasked it.
    forged: Vec<bool>,
    /// Trapped pages per BAR index: (offset, length).
    traps: [Vec<(u64, u64)>; 6],
    out: Vec<MsiMessage>,
    stats: MsixStats,
}

/// A value of `size` bytes with every bit set.
fn all_ones(size: u8) -> u64 {
    match size {
        1..=7 => (1u64 << (8 * u32::from(size))) - 1,
        _ => u64::MAX,
    }
}

/// Adds the pages covering `r` to `traps`, merged with those already there.
fn add_pages(traps: &mut Vec<(u64, u64)>, r: &Region) {
    let start = r.offset & !(PAGE - 1);
    let end = (r.offset + r.len).div_ceil(PAGE) * PAGE;
    for page in (start..end).step_by(PAGE as usize) {
        if !traps.iter().any(|&(o, l)| page >= o && page < o + l) {
            traps.push((page, PAGE));
        }
    }
    traps.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for &(o, l) in traps.iter() {
        match merged.last_mut() {
            Some(m) if m.0 + m.1 == o => m.1 += l,
            _ => merged.push((o, l)),
        }
    }
    *traps = merged;
}

impl AssignedMsix {
    /// The MSI-X of `f`, routed by `route`; `None` if `f` has no MSI-X or
    /// its table or PBA does not lie inside one of its memory BARs.
    pub fn new(f: &HostFunction, route: MsiRoute) -> Option<AssignedMsix> {
        let layout = f.msix?;
        let region = |r: crate::layout::BarRegion| {
            let b = f.bars.iter().find(|b| b.index == r.bar)?;
            let offset = u64::from(r.offset);
            (offset.checked_add(r.size)? <= b.size).then_some(Region {
                bar: r.bar,
                offset,
                len: r.size,
                pa: Pa(b.cpu.0 + offset),
                bar_size: b.size,
            })
        };
        let table = region(layout.table)?;
        let pba = region(layout.pba)?;
        let n = usize::from(layout.vectors);
        let mut traps: [Vec<(u64, u64)>; 6] = Default::default();
        for r in [&table, &pba] {
            add_pages(traps.get_mut(usize::from(r.bar))?, r);
        }
        Some(AssignedMsix {
            layout,
            table,
            pba,
            route,
            entries: vec![[0, 0, 0, VECTOR_MASKED]; n],
            pending: vec![0; n.div_ceil(64)],
            device_masked: vec![true; n],
            forged: vec![false; n],
            traps,
            out: Vec::new(),
            stats: MsixStats::default(),
        })
    }

    /// The capability's offset in config space.
    pub fn cap_offset(&self) -> u16 {
        self.layout.capability
    }

    /// Number of vectors (= EventIDs the device uses: 0..vectors).
    pub fn vectors(&self) -> u16 {
        self.layout.vectors
    }

    /// The pages of BAR `bar` that trap (offset, length).
    pub fn traps(&self, bar: u8) -> &[(u64, u64)] {
        self.traps
            .get(usize::from(bar))
            .map_or(&[], |t| t.as_slice())
    }

    /// Counters.
    pub fn stats(&self) -> MsixStats {
        self.stats
    }

    /// Moves the messages sent since the last call to `out`.
    pub fn take(&mut self, out: &mut Vec<MsiMessage>) {
        out.append(&mut self.out);
    }

    /// The guest's entry `v` as (address, data).
    pub fn message(&self, v: usize) -> Option<MsiMessage> {
        let e = self.entries.get(v)?;
        Some(MsiMessage {
            address: u64::from(e[0]) | u64::from(e[1]) << 32,
            data: e[2],
        })
    }

    /// Programs every device entry with the doorbell and its EventID, all
    /// masked (at assignment and after a reset of the device).
    pub fn program_device<H: BarAccess>(&mut self, host: &mut H) {
        let db = self.route.doorbell.0;
        for v in 0..self.entries.len() {
            let at = self.table.pa.0 + v as u64 * ENTRY_SIZE;
            host.bar_write(Pa(at + 12), 4, u64::from(VECTOR_MASKED));
            host.bar_write(Pa(at), 4, db & 0xffff_fffc);
            host.bar_write(Pa(at + 4), 4, db >> 32);
            host.bar_write(Pa(at + 8), 4, v as u64);
        }
        self.device_masked.fill(true);
    }

    /// Back to the reset state (every guest entry zero and masked, nothing
    /// pending) and the device's table programmed again.
    pub fn reset<H: BarAccess>(&mut self, host: &mut H) {
        self.entries.fill([0, 0, 0, VECTOR_MASKED]);
        self.pending.fill(0);
        self.forged.fill(false);
        self.out.clear();
        self.program_device(host);
    }

    fn control(&self, cs: &ConfigSpace) -> u16 {
        cs.raw(self.layout.capability + 2, 2) as u16
    }

    /// Whether vector `v` is masked for the guest now (disabled, Function
    /// Mask, or its Mask Bit).
    fn masked(&self, cs: &ConfigSpace, v: usize) -> bool {
        let c = self.control(cs);
        c & control::ENABLE == 0
            || c & control::FUNCTION_MASK != 0
            || self
                .entries
                .get(v)
                .is_none_or(|e| e[3] & VECTOR_MASKED != 0)
    }

    /// Whether entry `v` names the guest's doorbell and an MBI SPI.
    fn valid(&self, v: usize) -> bool {
        let t = self.route.guest;
        self.message(v)
            .is_some_and(|m| m.address == t.doorbell.0 && t.spis.contains(m.data))
    }

    /// Mirrors the guest's per-vector masks to the device (a vector naming
    /// no guest doorbell and MBI SPI stays masked there, counted once per
    /// unmask), then sends what became unmasked while pending.
    pub fn sync<H: BarAccess>(&mut self, host: &mut H, cs: &ConfigSpace) {
        for v in 0..self.entries.len() {
            let guest_masked = self
                .entries
                .get(v)
                .is_none_or(|e| e[3] & VECTOR_MASKED != 0);
            let valid = self.valid(v);
            if !guest_masked && !valid && !self.forged.get(v).copied().unwrap_or(true) {
                self.stats.forged_entries += 1;
            }
            if let Some(f) = self.forged.get_mut(v) {
                *f = !guest_masked && !valid;
            }
            let want = guest_masked || !valid;
            if self.device_masked.get(v).copied() != Some(want) {
                let at = self.table.pa.0 + v as u64 * ENTRY_SIZE + 12;
                host.bar_write(Pa(at), 4, u64::from(want));
                if let Some(d) = self.device_masked.get_mut(v) {
                    *d = want;
                }
            }
        }
        self.deliver_unmasked(cs);
    }

    /// Whether the device's vector `v` is unmasked now (for tests and the
    /// counters).
    pub fn device_unmasked(&self, v: usize) -> bool {
        self.device_masked.get(v) == Some(&false)
    }

    fn pending_bit(&self, v: usize) -> bool {
        self.pending
            .get(v / 64)
            .is_some_and(|q| q & (1 << (v % 64)) != 0)
    }

    fn set_pending(&mut self, v: usize, on: bool) {
        if let Some(q) = self.pending.get_mut(v / 64) {
            let bit = 1u64 << (v % 64);
            if on {
                *q |= bit;
            } else {
                *q &= !bit;
            }
        }
    }

    /// The device signalled `event` (its vector): the guest's message is
    /// sent, or its pending bit set while the guest masks the vector (or
    /// the whole function). An event beyond the table or while MSI-X is
    /// disabled is spurious: dropped and counted.
    pub fn fire(&mut self, cs: &ConfigSpace, event: u32) {
        let v = event as usize;
        // No message and no pending bit for a vector past the table, or
        // while MSI-X is disabled (the function signals INTx then, PCI Local
        // Bus 3.0, 6.8.2): an LPI still in flight from before the guest
        // disabled it is dropped and counted.
        if v >= self.entries.len() || self.control(cs) & control::ENABLE == 0 {
            self.stats.spurious += 1;
            return;
        }
        if self.masked(cs, v) {
            self.set_pending(v, true);
            self.stats.masked_pending += 1;
            return;
        }
        if let Some(m) = self.message(v) {
            self.stats.sent += 1;
            self.out.push(m);
        }
    }

    /// Sends every pending vector the guest no longer masks (6.8.2.9).
    pub fn deliver_unmasked(&mut self, cs: &ConfigSpace) {
        if self.pending.iter().all(|q| *q == 0) {
            return;
        }
        for v in 0..self.entries.len() {
            if self.pending_bit(v) && !self.masked(cs, v) {
                self.set_pending(v, false);
                if let Some(m) = self.message(v) {
                    self.stats.sent += 1;
                    self.out.push(m);
                }
            }
        }
    }

    /// Byte `i` of the table (from its start).
    fn table_byte(&self, i: u64) -> u8 {
        let (e, dw, b) = (i / ENTRY_SIZE, (i % ENTRY_SIZE) / 4, i % 4);
        self.entries
            .get(e as usize)
            .and_then(|x| x.get(dw as usize))
            .map_or(0xff, |w| (w >> (8 * b)) as u8)
    }

    /// Byte `i` of the PBA: the shadow's bits, or the device's own.
    fn pba_byte<H: BarAccess>(&self, host: &mut H, i: u64) -> u8 {
        let shadow = self
            .pending
            .get((i / 8) as usize)
            .map_or(0, |q| (q >> (8 * (i % 8))) as u8);
        let dword = host.bar_read(Pa(self.pba.pa.0 + (i & !3)), 4);
        let live = (dword >> (8 * (i % 4))) as u8;
        // Bits past the last vector are reserved: 0.
        let vectors = u64::from(self.layout.vectors);
        let first = 8 * i;
        let valid = if first >= vectors {
            0
        } else if vectors - first >= 8 {
            0xff
        } else {
            (1u8 << (vectors - first)) - 1
        };
        (shadow | live) & valid
    }

    /// A guest read of `size` bytes at `off` in trapped BAR `bar`.
    pub fn read<H: BarAccess>(&mut self, host: &mut H, bar: u8, off: u64, size: u8) -> u64 {
        if !matches!(size, 1 | 2 | 4 | 8) {
            self.stats.bad_access += 1;
            return all_ones(size);
        }
        if self.table.holds(bar, off, size) {
            let base = off - self.table.offset;
            return (0..u64::from(size)).fold(0, |v, i| {
                v | u64::from(self.table_byte(base + i)) << (8 * i)
            });
        }
        if self.pba.holds(bar, off, size) {
            let base = off - self.pba.offset;
            return (0..u64::from(size)).fold(0, |v, i| {
                v | u64::from(self.pba_byte(host, base + i)) << (8 * i)
            });
        }
        match self.device_pa(bar, off, size) {
            Some(pa) => host.bar_read(pa, size),
            None => {
                self.stats.bad_access += 1;
                all_ones(size)
            }
        }
    }

    /// A guest write of `size` bytes at `off` in trapped BAR `bar`; `true`
    /// if it wrote the table (a message or a Mask Bit may have changed).
    pub fn write<H: BarAccess>(
        &mut self,
        host: &mut H,
        cs: &ConfigSpace,
        bar: u8,
        off: u64,
        size: u8,
        value: u64,
    ) -> bool {
        if !matches!(size, 1 | 2 | 4 | 8) {
            self.stats.bad_access += 1;
            return false;
        }
        if self.table.holds(bar, off, size) {
            let base = off - self.table.offset;
            for i in 0..u64::from(size) {
                self.set_table_byte(base + i, (value >> (8 * i)) as u8);
            }
            self.sync(host, cs);
            return true;
        }
        if self.pba.holds(bar, off, size) {
            // The PBA is read-only (6.8.2.10).
            self.stats.bad_access += 1;
            return false;
        }
        match self.device_pa(bar, off, size) {
            Some(pa) => host.bar_write(pa, size, value),
            None => self.stats.bad_access += 1,
        }
        false
    }

    fn set_table_byte(&mut self, i: u64, b: u8) {
        let (e, dw, k) = (i / ENTRY_SIZE, (i % ENTRY_SIZE) / 4, i % 4);
        let Some(w) = self
            .entries
            .get_mut(e as usize)
            .and_then(|x| x.get_mut(dw as usize))
        else {
            return;
        };
        let shift = 8 * k;
        let mut nw = (*w & !(0xff << shift)) | (u32::from(b) << shift);
        nw = match dw {
            // Message Address [1:0] are 0 (DWORD-aligned, 6.8.2.6).
            0 => nw & !3,
            // Vector Control: only the Mask Bit; the rest is reserved (6.8.2.9).
            3 => nw & VECTOR_MASKED,
            _ => nw,
        };
        *w = nw;
    }

    /// The host address of an access to the device's part of a trapped
    /// page: naturally aligned, touching neither the table nor the PBA,
    /// inside a trapped page of `bar`.
    fn device_pa(&self, bar: u8, off: u64, size: u8) -> Option<Pa> {
        let aligned = off % u64::from(size) == 0;
        let clear = !self.table.touches(bar, off, size) && !self.pba.touches(bar, off, size);
        let end = off.checked_add(u64::from(size))?;
        let trapped = self
            .traps(bar)
            .iter()
            .any(|&(o, l)| off >= o && end <= o + l);
        if !(aligned && clear && trapped) {
            return None;
        }
        // The table's BAR or the PBA's: its host base from the region.
        let r = if self.table.bar == bar {
            &self.table
        } else {
            &self.pba
        };
        if end > r.bar_size {
            return None;
        }
        let bar_base = r.pa.0 - r.offset;
        Some(Pa(bar_base + off))
    }
}

#[cfg(test)]
mod tests;

//! Message-based SPIs (GICv3 architecture, IHI 0069, 2.4.3 "Message-based
//! SPIs" and 12.9.8/12.9.30/12.9.9/12.9.31): the distributor's
//! GICD_SETSPI_NSR and GICD_CLRSPI_NSR, through which a device's MSI write
//! (address = the SETSPI_NSR doorbell, data = the INTID) pends an SPI.
//!
//! The guest gets them only for the SPIs its [`MbiRange`] reserves (the
//! `mbi-ranges` of its DT): a write naming any other INTID (the UART, an INTx
//! line, a timer PPI, an SGI) is ignored and counted in
//! [`VgicStats::mbi_rejected`](super::VgicStats), so a forged message never
//! reaches an interrupt outside the range. Kept apart from the rest of the
//! distributor so the vGIC's other changes merge cleanly.

use super::{size_ok, Kick, Vgic};

/// GICD_SETSPI_NSR: write an INTID to set the SPI pending.
pub const GICD_SETSPI_NSR: u64 = 0x40;
/// GICD_CLRSPI_NSR: write an INTID to clear the SPI's pending state.
pub const GICD_CLRSPI_NSR: u64 = 0x48;
/// GICD_SETSPI_SR: the Secure alias; WI with GICD_CTLR.DS = 1.
pub const GICD_SETSPI_SR: u64 = 0x50;
/// GICD_CLRSPI_SR: the Secure alias; WI with GICD_CTLR.DS = 1.
pub const GICD_CLRSPI_SR: u64 = 0x58;

/// GICD_TYPER.MBIS, bit 16: message-based SPIs supported.
pub const TYPER_MBIS: u64 = 1 << 16;
/// GICD_TYPER.LPIS, bit 17 (always 0 here: no LPIs, no ITS).
pub const TYPER_LPIS: u64 = 1 << 17;

/// The INTID field of the SETSPI/CLRSPI registers, bits \[9:0\].
const INTID_MASK: u64 = 0x3ff;

/// A range of SPI INTIDs reserved for message-based interrupts:
/// `first..first + count` (the DT's `mbi-ranges = <first count>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MbiRange {
    /// The first INTID (an SPI, 32 or more).
    pub first: u32,
    /// How many.
    pub count: u32,
}

impl MbiRange {
    /// Whether `intid` is in the range.
    pub fn contains(&self, intid: u32) -> bool {
        intid >= self.first && intid - self.first < self.count
    }

    /// One past the last INTID (saturating).
    pub fn end(&self) -> u32 {
        self.first.saturating_add(self.count)
    }
}

/// Whether `offset` is one of the four message-based SPI registers.
pub(super) fn is_mbi_register(offset: u64) -> bool {
    matches!(
        offset,
        GICD_SETSPI_NSR | GICD_CLRSPI_NSR | GICD_SETSPI_SR | GICD_CLRSPI_SR
    )
}

impl Vgic {
    /// Reserves `range` for message-based SPIs and sets GICD_TYPER.MBIS;
    /// its SPIs start edge-triggered (GICD_ICFGR stays writable: a
    /// level-sensitive one set through SETSPI stays pending until CLRSPI,
    /// IHI 0069 4.1.2). Refused (false, nothing changes) unless the range
    /// is non-empty and lies inside the implemented SPIs.
    pub fn set_mbi_range(&mut self, range: MbiRange) -> bool {
        let ok = range.count > 0 && range.first >= 32 && range.end() <= 32 + self.num_spis;
        if ok {
            self.mbi = Some(range);
            for intid in range.first..range.end() {
                if let Some(q) = self.irq_mut(0, intid) {
                    q.edge = true;
                }
            }
        }
        ok
    }

    /// The reserved range, if any.
    pub fn mbi_range(&self) -> Option<MbiRange> {
        self.mbi
    }

    pub(super) fn typer_mbis(&self) -> u64 {
        if self.mbi.is_some() {
            TYPER_MBIS
        } else {
            0
        }
    }

    /// An MSI message for `intid` arrived at the GICD_SETSPI_NSR doorbell
    /// (a device's write, or the guest's own store): the SPI becomes
    /// pending (edge: one event, consumed when the guest acknowledges it).
    /// `None` if `intid` is outside the MBI range: nothing is pended and it
    /// is counted.
    pub fn mbi_set(&mut self, intid: u32) -> Option<Kick> {
        if !self.mbi.is_some_and(|r| r.contains(intid)) {
            self.stats.mbi_rejected = self.stats.mbi_rejected.saturating_add(1);
            return None;
        }
        let irq = self.irq_mut(0, intid)?;
        irq.latch = true;
        Some(self.kick_if_deliverable(0, intid))
    }

    /// GICD_CLRSPI_NSR for `intid`: its pending state is removed (an edge
    /// already in a list register stays there, as the hardware's would once
    /// acknowledged). `false` if outside the MBI range (counted).
    pub fn mbi_clear(&mut self, intid: u32) -> bool {
        if !self.mbi.is_some_and(|r| r.contains(intid)) {
            self.stats.mbi_rejected = self.stats.mbi_rejected.saturating_add(1);
            return false;
        }
        if let Some(irq) = self.irq_mut(0, intid) {
            irq.latch = false;
        }
        true
    }

    /// A read of one of the four registers: they are write-only (RAZ).
    pub(super) fn mbi_read(&mut self, _offset: u64, size: u8) -> u64 {
        if !size_ok(size) {
            self.stats.bad_size += 1;
        }
        0
    }

    /// A write of one of the four registers: 32-bit only (other sizes are
    /// ignored and counted, as everywhere in the distributor).
    pub(super) fn mbi_write(&mut self, offset: u64, size: u8, value: u64) -> Kick {
        if !size_ok(size) {
            self.stats.bad_size += 1;
            return Kick::default();
        }
        let intid = (value & INTID_MASK) as u32;
        match offset {
            GICD_SETSPI_NSR if self.mbi.is_some() => self.mbi_set(intid).unwrap_or_default(),
            GICD_CLRSPI_NSR if self.mbi.is_some() => {
                self.mbi_clear(intid);
                Kick::default()
            }
            // Without MBIS the NSR registers are reserved (RAZ/WI); the
            // Secure ones are WI with GICD_CTLR.DS = 1 (one security state).
            _ => Kick::default(),
        }
    }
}

#[cfg(test)]
mod tests;

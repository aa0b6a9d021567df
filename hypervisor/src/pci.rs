//! Host PCI config access: the ECAM window of a `pci-host-ecam-generic`
//! host bridge (PCI Express Base 6.0, 7.2.2), behind `passthrough`'s
//! `ConfigAccess`, and the delays resets need.

use passthrough::{BarAccess, ConfigAccess, Delay};
use vbus::Bdf;
use vbus::Pa;

use crate::sysreg::read_sysreg;

/// One host segment's ECAM window.
#[derive(Debug, Clone, Copy)]
pub struct HostEcam {
    base: usize,
    bus_start: u8,
    bus_end: u8,
}

impl HostEcam {
    /// The ECAM window at `base` covering buses `bus_start..=bus_end`.
    ///
    /// # Safety
    /// `base` must be the ECAM window the host DT names for these buses,
    /// mapped as Device memory in the EL2 tables (the whole window: one MiB
    /// per bus), and no one else may drive the host bridge.
    pub unsafe fn new(base: u64, bus_start: u8, bus_end: u8) -> Self {
        HostEcam {
            base: base as usize,
            bus_start,
            bus_end,
        }
    }

    /// The address of `bdf`'s dword at `offset`, if inside the window.
    fn address(&self, bdf: Bdf, offset: u16) -> Option<usize> {
        if bdf.bus() < self.bus_start || bdf.bus() > self.bus_end || offset >= 4096 {
            return None;
        }
        let rel = (usize::from(bdf.bus() - self.bus_start) << 20)
            | (usize::from(bdf.dev()) << 15)
            | (usize::from(bdf.func()) << 12)
            | usize::from(offset & !3);
        Some(self.base + rel)
    }
}

impl ConfigAccess for HostEcam {
    /// A function that is not there reads all ones (the root complex
    /// completes an Unsupported Request so, 2.3.2); outside the window too.
    fn read32(&mut self, bdf: Bdf, offset: u16) -> u32 {
        match self.address(bdf, offset) {
            // SAFETY: inside the ECAM window `new`'s contract makes mapped Device
            // memory; an aligned dword read is a configuration read request.
            Some(a) => unsafe { core::ptr::read_volatile(a as *const u32) },
            None => u32::MAX,
        }
    }

    fn write32(&mut self, bdf: Bdf, offset: u16, value: u32) {
        if let Some(a) = self.address(bdf, offset) {
            // SAFETY: as for `read32`; the write is a configuration write request.
            unsafe { core::ptr::write_volatile(a as *mut u32, value) }
        }
    }
}

impl BarAccess for HostEcam {
    /// A naturally aligned access of 1, 2, 4 or 8 bytes; anything else reads
    /// all ones and writes nothing (never an alignment fault at EL2).
    fn bar_read(&mut self, pa: Pa, size: u8) -> u64 {
        let a = pa.0 as usize;
        if !matches!(size, 1 | 2 | 4 | 8) || pa.0 % u64::from(size) != 0 {
            return u64::MAX;
        }
        // SAFETY: `BarAccess`'s contract: `pa` lies in a memory BAR of the
        // assigned function, which the host assignment placed in the host
        // bridge's window; EL2 maps all that is not RAM as Device memory;
        // the access is naturally aligned (checked above).
        unsafe {
            match size {
                1 => u64::from(core::ptr::read_volatile(a as *const u8)),
                2 => u64::from(core::ptr::read_volatile(a as *const u16)),
                4 => u64::from(core::ptr::read_volatile(a as *const u32)),
                _ => core::ptr::read_volatile(a as *const u64),
            }
        }
    }

    fn bar_write(&mut self, pa: Pa, size: u8, value: u64) {
        let a = pa.0 as usize;
        if !matches!(size, 1 | 2 | 4 | 8) || pa.0 % u64::from(size) != 0 {
            return;
        }
        // SAFETY: as for `bar_read`.
        unsafe {
            match size {
                1 => core::ptr::write_volatile(a as *mut u8, value as u8),
                2 => core::ptr::write_volatile(a as *mut u16, value as u16),
                4 => core::ptr::write_volatile(a as *mut u32, value as u32),
                _ => core::ptr::write_volatile(a as *mut u64, value),
            }
        }
    }
}

impl Delay for HostEcam {
    /// Busy-waits on the physical counter (CNTPCT_EL0 at CNTFRQ_EL0 Hz).
    fn delay_us(&mut self, us: u32) {
        delay_us(us);
    }
}

/// Busy-waits `us` microseconds on the physical counter.
pub fn delay_us(us: u32) {
    let freq = read_sysreg!("cntfrq_el0").max(1);
    let ticks = u64::from(us).saturating_mul(freq) / 1_000_000;
    let start = read_sysreg!("cntpct_el0");
    while read_sysreg!("cntpct_el0").wrapping_sub(start) < ticks {
        core::hint::spin_loop();
    }
}

//! The host PL011, used for the hypervisor's own output.

/// UARTDR.
const DR: usize = 0x000;
/// UARTFR.
const FR: usize = 0x018;
/// UARTFR.TXFF.
const FR_TXFF: u32 = 1 << 5;

/// The PL011 base the host DT names: `/chosen/stdout-path`, else the first `arm,pl011`.
pub fn find_pl011(fdt: &fdt::Fdt) -> Option<usize> {
    let node = fdt
        .chosen()
        .stdout()
        .filter(|n| {
            n.compatible()
                .is_some_and(|c| c.all().any(|s| s == "arm,pl011"))
        })
        .or_else(|| fdt.find_compatible(&["arm,pl011"]))?;
    let reg = node.reg()?.next()?;
    Some(reg.starting_address as usize)
}

/// A polled PL011 transmitter.
pub struct Pl011 {
    base: usize,
}

impl Pl011 {
    /// # Safety
    ///
    /// `base` must be the MMIO base of a PL011 that nothing else drives, accessible
    /// at this address (MMU off or identity-mapped as device memory).
    pub unsafe fn new(base: usize) -> Self {
        Pl011 { base }
    }

    fn put(&mut self, b: u8) {
        // SAFETY: `new`'s contract makes base + FR / DR valid PL011 registers.
        unsafe {
            while core::ptr::read_volatile((self.base + FR) as *const u32) & FR_TXFF != 0 {}
            core::ptr::write_volatile((self.base + DR) as *mut u32, u32::from(b));
        }
    }
}

impl core::fmt::Write for Pl011 {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.put(b'\r');
            }
            self.put(b);
        }
        Ok(())
    }
}

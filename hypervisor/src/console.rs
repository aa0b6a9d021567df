//! The host PL011: the hypervisor's own lines (each starting `[hv] `), the
//! guest console's output passed through verbatim, and input for the guest.

use core::fmt::Write;

use spin::Mutex;

/// UARTDR.
const DR: usize = 0x000;
/// UARTFR.
const FR: usize = 0x018;
/// UARTFR.TXFF.
const FR_TXFF: u32 = 1 << 5;
/// UARTFR.RXFE.
const FR_RXFE: u32 = 1 << 4;
/// UARTCR and its UARTEN, TXE, RXE bits.
const CR: usize = 0x030;
const CR_UARTEN: u32 = 1 << 0;
const CR_TXE: u32 = 1 << 8;
const CR_RXE: u32 = 1 << 9;
/// UARTIMSC.
const IMSC: usize = 0x038;
/// UARTIMSC.RXIM | RTIM.
const RX_INTERRUPTS: u32 = (1 << 4) | (1 << 6);

/// The PL011 base the host DT names: `/chosen/stdout-path`, else the first `arm,pl011`
/// (the console for reporting even a DT the `platform` crate refuses).
pub fn find_pl011(fdt: &fdt::Fdt) -> Option<usize> {
    // Not `Fdt::chosen()`: it panics when /chosen is missing.
    let stdout = fdt
        .find_node("/chosen")
        .and_then(|c| c.property("stdout-path"))
        .and_then(|p| p.as_str())
        .map(|s| s.split(':').next().unwrap_or(s))
        .and_then(|p| fdt.find_node(p))
        .filter(|n| {
            n.compatible()
                .is_some_and(|c| c.all().any(|s| s == "arm,pl011"))
        });
    let node = stdout.or_else(|| fdt.find_compatible(&["arm,pl011"]))?;
    let reg = node.reg()?.next()?;
    Some(reg.starting_address as usize)
}

/// A polled PL011.
pub struct Pl011 {
    base: usize,
    /// Whether the cursor is at the start of a line (for `[hv] ` prefixes).
    at_line_start: bool,
}

impl Pl011 {
    /// # Safety
    ///
    /// `base` must be the MMIO base of a PL011 that nothing else drives, accessible
    /// at this address (MMU off or identity-mapped as device memory).
    pub unsafe fn new(base: usize) -> Self {
        Pl011 {
            base,
            at_line_start: true,
        }
    }

    fn reg(&self, off: usize) -> *mut u32 {
        (self.base + off) as *mut u32
    }

    fn put(&mut self, b: u8) {
        // SAFETY: `new`'s contract makes base + FR / DR valid PL011 registers.
        unsafe {
            while core::ptr::read_volatile(self.reg(FR)) & FR_TXFF != 0 {}
            core::ptr::write_volatile(self.reg(DR), u32::from(b));
        }
    }

    /// Passes one byte of guest output through.
    pub fn guest_byte(&mut self, b: u8) {
        self.put(b);
        self.at_line_start = b == b'\n';
    }

    /// Enables the receiver and its interrupts (the hypervisor forwards input to
    /// the guest); firmware may have left the UART with only the transmitter on.
    pub fn enable_rx_interrupts(&mut self) {
        // SAFETY: as for `put`.
        unsafe {
            let cr = core::ptr::read_volatile(self.reg(CR));
            core::ptr::write_volatile(self.reg(CR), cr | CR_UARTEN | CR_TXE | CR_RXE);
        }
        self.set_rx_interrupts(true);
    }

    /// Unmasks (or masks) the receive and receive-timeout interrupts. Masking
    /// leaves their status pending (PL011 TRM 3.3.10), so input that arrived
    /// meanwhile interrupts as soon as they are unmasked.
    pub fn set_rx_interrupts(&mut self, on: bool) {
        // SAFETY: as for `put`.
        unsafe {
            core::ptr::write_volatile(self.reg(IMSC), if on { RX_INTERRUPTS } else { 0 });
        }
    }

    /// Takes one received byte, if any. Reading the FIFO empty is what clears
    /// the receive interrupts (never UARTICR: see `arch_emu::console_input`).
    pub fn getc(&mut self) -> Option<u8> {
        // SAFETY: as for `put`.
        unsafe {
            if core::ptr::read_volatile(self.reg(FR)) & FR_RXFE != 0 {
                return None;
            }
            Some(core::ptr::read_volatile(self.reg(DR)) as u8)
        }
    }
}

impl arch_emu::console_input::HostRx for Pl011 {
    fn getc(&mut self) -> Option<u8> {
        Pl011::getc(self)
    }
    fn set_rx_interrupts(&mut self, on: bool) {
        Pl011::set_rx_interrupts(self, on);
    }
}

impl Write for Pl011 {
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

/// The host console, once found.
pub static CONSOLE: Mutex<Option<Pl011>> = Mutex::new(None);

/// Prints one hypervisor line, `[hv] ` first; a guest line in progress is ended first.
pub fn hv_line(args: core::fmt::Arguments<'_>) {
    let mut c = CONSOLE.lock();
    if let Some(c) = c.as_mut() {
        if !c.at_line_start {
            let _ = c.write_str("\n");
        }
        let _ = c.write_str("[hv] ");
        let _ = c.write_fmt(args);
        let _ = c.write_str("\n");
        c.at_line_start = true;
    }
}

/// The `log` backend: every hypervisor line is `[hv] message` (`[hv] LEVEL message`
/// for levels other than info) on the host console.
pub struct Logger;

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }
    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            if r.level() == log::Level::Info {
                hv_line(*r.args());
            } else {
                hv_line(format_args!("{} {}", r.level(), r.args()));
            }
        }
    }
    fn flush(&self) {}
}

/// The logger instance.
pub static LOGGER: Logger = Logger;

/// The guest (index in `vm::all`) host console input goes to.
static FOCUS: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// The guest that has the console's input focus.
pub fn focused() -> Option<&'static crate::vm::Vm> {
    crate::vm::all().get(FOCUS.load(core::sync::atomic::Ordering::Relaxed))
}

/// Guest `vm`'s console output of one exit, after every lock of the guest
/// is released.
pub fn guest_output(_vm: &crate::vm::Vm, bytes: &[u8]) {
    if let Some(c) = CONSOLE.lock().as_mut() {
        for &b in bytes {
            c.guest_byte(b);
        }
    }
}

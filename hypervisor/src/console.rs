//! The host PL011: the hypervisor's own lines (each starting `[hv] `), the
//! guest console's output passed through verbatim, and input for the guest.

use core::fmt::Write;

use arch_emu::console_mux::{OutputMux, SwitchDetector, Switching};
use spin::Mutex;

/// UARTDR.
const DR: usize = 0x000;
/// UARTFR.
const FR: usize = 0x018;
/// UARTFR.TXFF.
const FR_TXFF: u32 = 1 << 5;
/// UARTFR.RXFE.
const FR_RXFE: u32 = 1 << 4;
/// UARTFR.TXFE: the transmit FIFO (or, FIFOs off, the holding register) is empty.
const FR_TXFE: u32 = 1 << 7;
/// UARTLCR_H and its FEN bit (FIFOs enabled).
const LCR_H: usize = 0x02c;
const LCR_H_FEN: u32 = 1 << 4;
/// Bytes an empty transmit FIFO takes: 16 up to revision r1p4, 32 from r1p5
/// (PL011 TRM 2.4.3); the smaller for either.
const TX_FIFO_DEPTH: usize = 16;
/// UARTCR and its UARTEN, TXE, RXE bits.
const CR: usize = 0x030;
const CR_UARTEN: u32 = 1 << 0;
const CR_TXE: u32 = 1 << 8;
const CR_RXE: u32 = 1 << 9;
/// UARTIMSC.
const IMSC: usize = 0x038;
/// UARTIMSC.RXIM | RTIM.
const RX_INTERRUPTS: u32 = (1 << 4) | (1 << 6);

/// The host DT's `/chosen`, found by walking every node when the path
/// lookup fails (the `fdt` crate's stops at FDT_NOP tokens between nodes,
/// which firmware and QEMU's `-dtb` leave; `platform::dtb::compact` drops
/// them once the heap is up).
pub fn chosen<'b, 'a>(fdt: &'b fdt::Fdt<'a>) -> Option<fdt::node::FdtNode<'b, 'a>> {
    fdt.find_node("/chosen")
        .or_else(|| fdt.all_nodes().find(|n| n.name == "chosen"))
}

/// The PL011 base the host DT names: `/chosen/stdout-path`, else the first `arm,pl011`
/// (the console for reporting even a DT the `platform` crate refuses).
pub fn find_pl011(fdt: &fdt::Fdt) -> Option<usize> {
    // Not `Fdt::chosen()`: it panics when /chosen is missing.
    let stdout = chosen(fdt)
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

/// The registers of a polled PL011 (its receive side: [`HostRx`]).
///
/// [`HostRx`]: arch_emu::console_input::HostRx
pub struct Regs {
    base: usize,
}

/// A polled PL011, shared by the hypervisor's lines and the guests'
/// console output and input.
pub struct Pl011 {
    regs: Regs,
    /// Whether the cursor is at the start of a line (for `[hv] ` prefixes).
    at_line_start: bool,
    /// With several guests: their lines, prefixed with their names.
    mux: Option<OutputMux>,
    /// With several guests: Ctrl-a three times moves the input focus.
    switch: SwitchDetector,
}

impl Pl011 {
    /// # Safety
    ///
    /// `base` must be the MMIO base of a PL011 that nothing else drives, accessible
    /// at this address (MMU off or identity-mapped as device memory).
    pub unsafe fn new(base: usize) -> Self {
        Pl011 {
            regs: Regs { base },
            at_line_start: true,
            mux: None,
            switch: SwitchDetector::new(),
        }
    }

    fn reg(&self, off: usize) -> *mut u32 {
        self.regs.reg(off)
    }

    fn put(&mut self, b: u8) {
        self.regs.put(b);
    }

    /// Shares the console among `guests` guests: their output lines are
    /// prefixed with their names, Ctrl-a three times switches the input.
    pub fn share(&mut self, guests: usize) {
        self.mux = Some(OutputMux::new(guests));
    }

    /// The receive side through the switch sequence's detector (several
    /// guests), for the focused guest's console input.
    pub fn switching_rx(&mut self) -> Option<Switching<'_>> {
        self.mux.as_ref()?;
        Some(Switching::new(&mut self.regs, &mut self.switch))
    }

    /// Guest `guest` (named `name`) wrote `bytes` on a shared console
    /// (`immediate`: the user types to it); `false` when the console is
    /// not shared.
    fn shared_output(&mut self, guest: usize, name: &str, bytes: &[u8], immediate: bool) -> bool {
        let Some(mux) = self.mux.as_mut() else {
            return false;
        };
        let regs = &mut self.regs;
        let mut last = None;
        mux.guest_bytes(guest, name, bytes, immediate, &mut |b| {
            regs.put_all(b);
            if let Some(&l) = b.last() {
                last = Some(l);
            }
        });
        if let Some(l) = last {
            self.at_line_start = l == b'\n';
        }
        true
    }

    /// A shared console: guest `guest`'s partial line goes out now.
    fn flush_guest(&mut self, guest: usize, name: &str) {
        let Some(mux) = self.mux.as_mut() else {
            return;
        };
        let regs = &mut self.regs;
        let mut wrote = false;
        mux.flush(guest, name, &mut |b| {
            wrote = true;
            regs.put_all(b);
        });
        if wrote {
            self.at_line_start = true;
        }
    }
}

impl Regs {
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
}

impl Regs {
    /// Writes `bytes`, reading UARTFR once per FIFO's worth rather than per
    /// byte: with TXFE set an enabled FIFO takes [`TX_FIFO_DEPTH`] bytes
    /// (the holding register, FIFOs off, one); otherwise one byte once
    /// TXFF is clear.
    fn put_all(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        // SAFETY: `Pl011::new`'s contract makes base + LCR_H / FR / DR valid PL011 registers.
        unsafe {
            let fifo = core::ptr::read_volatile(self.reg(LCR_H)) & LCR_H_FEN != 0;
            let depth = if fifo { TX_FIFO_DEPTH } else { 1 };
            let mut rest = bytes;
            while !rest.is_empty() {
                let fr = core::ptr::read_volatile(self.reg(FR));
                let room = if fr & FR_TXFE != 0 {
                    depth
                } else if fr & FR_TXFF == 0 {
                    1
                } else {
                    continue;
                };
                let (now, later) = rest.split_at(room.min(rest.len()));
                for &b in now {
                    core::ptr::write_volatile(self.reg(DR), u32::from(b));
                }
                rest = later;
            }
        }
    }
}

impl Pl011 {
    /// Passes guest output through.
    pub fn guest_bytes(&mut self, bytes: &[u8]) {
        self.regs.put_all(bytes);
        if let Some(&b) = bytes.last() {
            self.at_line_start = b == b'\n';
        }
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
        self.regs.set_rx_interrupts(on);
    }

    /// Takes one received byte, if any.
    pub fn getc(&mut self) -> Option<u8> {
        self.regs.getc()
    }
}

impl Regs {
    /// Unmasks (or masks) the receive and receive-timeout interrupts (see
    /// [`Pl011::set_rx_interrupts`]).
    pub fn set_rx_interrupts(&mut self, on: bool) {
        // SAFETY: `Pl011::new`'s contract makes base + IMSC a valid PL011 register.
        unsafe {
            core::ptr::write_volatile(self.reg(IMSC), if on { RX_INTERRUPTS } else { 0 });
        }
    }

    /// Takes one received byte, if any. Reading the FIFO empty is what clears
    /// the receive interrupts (never UARTICR: see `arch_emu::console_input`).
    pub fn getc(&mut self) -> Option<u8> {
        // SAFETY: `Pl011::new`'s contract makes base + FR / DR valid PL011 registers.
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

impl arch_emu::console_input::HostRx for Regs {
    fn getc(&mut self) -> Option<u8> {
        Regs::getc(self)
    }
    fn set_rx_interrupts(&mut self, on: bool) {
        Regs::set_rx_interrupts(self, on);
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
        if let Some(m) = c.mux.as_mut() {
            m.other_output(true);
        }
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
    crate::vm::all()
        .get(FOCUS.load(core::sync::atomic::Ordering::Relaxed))
        .filter(|vm| vm.running())
}

/// Guest `vm` stopped: its partial output line goes out, input it held
/// back in the host UART is let go, and the input focus moves on to the
/// next guest that runs.
pub fn guest_stopped(vm: &crate::vm::Vm) {
    use core::sync::atomic::Ordering;
    flush(vm);
    {
        let mut dev = vm.devices.lock();
        if dev.console_input.host_held() {
            if let Some(c) = CONSOLE.lock().as_mut() {
                c.set_rx_interrupts(true);
            }
        }
        dev.console_input = arch_emu::console_input::ConsoleInput::new(crate::vm::CONSOLE_BACKLOG);
    }
    if FOCUS.load(Ordering::Relaxed) == vm.index {
        switch_focus();
    }
}

/// Moves the input focus to the next guest that runs (in table order,
/// wrapping) and says which has it.
pub fn switch_focus() {
    use core::sync::atomic::Ordering;
    let vms = crate::vm::all();
    let now = FOCUS.load(Ordering::Relaxed);
    for step in 1..=vms.len() {
        let i = (now + step) % vms.len();
        if vms.get(i).is_some_and(|vm| vm.running()) {
            FOCUS.store(i, Ordering::Relaxed);
            if let Some(vm) = vms.get(i) {
                hv_line(format_args!(
                    "console input: guest {} (Ctrl-a three times to switch)",
                    vm.name
                ));
            }
            return;
        }
    }
}

/// Guest `vm`'s console output of one exit, after every lock of the guest
/// is released: verbatim with one guest; with several, in whole lines
/// prefixed with its name, except for the focused guest once the user typed
/// to it (see `arch_emu::console_mux`).
pub fn guest_output(vm: &crate::vm::Vm, bytes: &[u8]) {
    use core::sync::atomic::Ordering;
    let immediate = FOCUS.load(Ordering::Relaxed) == vm.index
        && vm.stats.console_input.load(Ordering::Relaxed) > 0;
    if let Some(c) = CONSOLE.lock().as_mut() {
        if !c.shared_output(vm.index, &vm.name, bytes, immediate) {
            c.guest_bytes(bytes);
        }
    }
}

/// Guest `vm`'s virtio console output (`port`), taken in pieces and
/// written as [`guest_output`] writes its PL011's, with no lock of the
/// guest held.
pub fn port_output(vm: &crate::vm::Vm, port: &virtio_devs::console::ConsolePort) {
    let mut buf = [0u8; 256];
    loop {
        let n = port.take_output(&mut buf);
        let Some(bytes) = buf.get(..n).filter(|b| !b.is_empty()) else {
            return;
        };
        guest_output(vm, bytes);
    }
}

/// Host console input for a guest's virtio console: every byte the host
/// UART holds goes to `port` (up to the switch sequence with several
/// guests; a full port drops and counts the rest). Returns the bytes read
/// and whether the switch sequence came.
pub fn input_to_port(port: &virtio_devs::console::ConsolePort) -> (u64, bool) {
    let mut c = CONSOLE.lock();
    let Some(c) = c.as_mut() else {
        return (0, false);
    };
    match c.switching_rx() {
        Some(mut rx) => {
            let n = drain_rx(&mut rx, port);
            (n, rx.switched())
        }
        None => (drain_rx(c, port), false),
    }
}

/// Reads `rx` empty into `port`, a few bytes at a time.
fn drain_rx(
    rx: &mut dyn arch_emu::console_input::HostRx,
    port: &virtio_devs::console::ConsolePort,
) -> u64 {
    let mut buf = [0u8; 64];
    let mut total = 0u64;
    loop {
        let mut n = 0;
        for slot in buf.iter_mut() {
            let Some(b) = rx.getc() else {
                break;
            };
            *slot = b;
            n += 1;
        }
        if let Some(bytes) = buf.get(..n) {
            port.push_input(bytes);
        }
        total += n as u64;
        if n < buf.len() {
            return total;
        }
    }
}

/// Shares the console among the guests when there are several, and says
/// which has the input focus.
pub fn share() {
    let vms = crate::vm::all();
    if vms.len() < 2 {
        return;
    }
    if let Some(c) = CONSOLE.lock().as_mut() {
        c.share(vms.len());
    }
    if let Some(vm) = vms.first() {
        hv_line(format_args!(
            "console input: guest {} (Ctrl-a three times to switch)",
            vm.name
        ));
    }
}

/// Guest `vm`'s partial output line, on a shared console, goes out now.
pub fn flush(vm: &crate::vm::Vm) {
    if let Some(c) = CONSOLE.lock().as_mut() {
        c.flush_guest(vm.index, &vm.name);
    }
}

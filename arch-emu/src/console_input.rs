//! Host console input on its way to the guest's PL011: a bounded backlog
//! between the host UART and the guest's receive FIFO, with backpressure on
//! the host UART once the backlog is full, so that nothing typed is ever
//! dropped and a guest that never reads costs a fixed amount of memory.
//!
//! Order is kept: the backlog feeds the FIFO before any newer byte does,
//! and nothing waits in the backlog while the FIFO has room. When the
//! backlog fills, the host's receive interrupts are masked and its FIFO is
//! read only as the guest makes room; the host FIFO then fills and the host
//! line stops (QEMU's chardev stops reading its input), as a flow-controlled
//! line would. The interrupts are unmasked once the host FIFO has been read
//! empty; masking leaves their status pending (PL011 TRM 3.3.10), so input
//! arriving meanwhile interrupts at once.
//!
//! A console shared by several guests ([`ConsoleInput::pump_shared`]) never
//! holds the host back: the host's input is read whatever the focused guest
//! does, so that the switch sequence that moves the focus away from a guest
//! that stopped reading is always seen; what does not fit in the backlog is
//! dropped and counted ([`ConsoleInput::dropped`]), as a UART drops what
//! arrives at a full FIFO.
//!
//! The host's receive status is never cleared with UARTICR: reading its FIFO
//! empty clears it (TRM 2.8.2, 2.8.4), whereas a UARTICR write after the
//! last empty check would also clear the status of a byte arriving in
//! between. QEMU's PL011 raises RXRIS only when its FIFO goes from empty to
//! one entry, so that byte and all input after it would then wait forever.

use alloc::collections::VecDeque;

use crate::pl011::Pl011;

/// The host UART's receive side, as the hypervisor drives it.
pub trait HostRx {
    /// Takes one received byte, if any (UARTFR.RXFE, then UARTDR).
    fn getc(&mut self) -> Option<u8>;
    /// Unmasks (`true`) or masks the receive and receive-timeout interrupts
    /// in UARTIMSC, leaving their status as it is.
    fn set_rx_interrupts(&mut self, on: bool);
}

/// Console input held for the guest.
#[derive(Debug, Clone)]
pub struct ConsoleInput {
    backlog: VecDeque<u8>,
    capacity: usize,
    host_held: bool,
    /// Bytes read from the host UART.
    pub received: u64,
    /// Times the backlog filled and the host UART was held back.
    pub held: u64,
    /// Bytes read from the host UART for a full backlog and dropped (a
    /// shared console, [`ConsoleInput::pump_shared`]).
    pub dropped: u64,
}

impl ConsoleInput {
    /// An empty backlog of at most `capacity` bytes (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        ConsoleInput {
            backlog: VecDeque::with_capacity(capacity),
            capacity,
            host_held: false,
            received: 0,
            held: 0,
            dropped: 0,
        }
    }

    /// Bytes waiting in the backlog.
    pub fn waiting(&self) -> usize {
        self.backlog.len()
    }

    /// Whether the host UART is held back (its receive interrupts masked).
    pub fn host_held(&self) -> bool {
        self.host_held
    }

    /// Whether [`ConsoleInput::pump`] would read the host UART: after its
    /// interrupt, or while it is held back (the caller can skip locking it).
    pub fn wants_host(&self, host_interrupt: bool) -> bool {
        host_interrupt || self.host_held
    }

    /// Moves input towards `uart` after anything that can change where it
    /// may go: a guest access to its UART (a read that made room, receiver
    /// or FIFOs switched on) or the host UART's interrupt (`host_interrupt`).
    /// `host` is read only when [`ConsoleInput::wants_host`] says so; `None`
    /// (no host console) only feeds the backlog to the guest.
    pub fn pump(&mut self, uart: &mut Pl011, host_interrupt: bool, host: Option<&mut dyn HostRx>) {
        self.pump_inner(uart, host_interrupt, host, false);
    }

    /// [`ConsoleInput::pump`] for a console several guests share: once the
    /// backlog is full the host is read on and the bytes that do not fit
    /// are dropped and counted, rather than the host held back (`host`, the
    /// switch sequence's detector, then still sees every byte).
    pub fn pump_shared(
        &mut self,
        uart: &mut Pl011,
        host_interrupt: bool,
        host: Option<&mut dyn HostRx>,
    ) {
        self.pump_inner(uart, host_interrupt, host, true);
    }

    fn pump_inner(
        &mut self,
        uart: &mut Pl011,
        host_interrupt: bool,
        host: Option<&mut dyn HostRx>,
        shared: bool,
    ) {
        self.feed(uart);
        let Some(host) = host.filter(|_| self.wants_host(host_interrupt)) else {
            return;
        };
        loop {
            if self.backlog.len() >= self.capacity && shared {
                let Some(_) = host.getc() else {
                    break;
                };
                self.received = self.received.saturating_add(1);
                self.dropped = self.dropped.saturating_add(1);
                continue;
            }
            if self.backlog.len() >= self.capacity {
                if !self.host_held {
                    host.set_rx_interrupts(false);
                    self.host_held = true;
                    self.held = self.held.saturating_add(1);
                }
                return;
            }
            let Some(b) = host.getc() else {
                break;
            };
            self.received = self.received.saturating_add(1);
            self.backlog.push_back(b);
            self.feed(uart);
        }
        if self.host_held {
            // Read empty: a byte arriving from now on raises the interrupt anew.
            host.set_rx_interrupts(true);
            self.host_held = false;
        }
    }

    /// Backlog into the guest's FIFO while it has room, oldest first.
    fn feed(&mut self, uart: &mut Pl011) {
        while uart.rx_room() {
            let Some(b) = self.backlog.pop_front() else {
                break;
            };
            uart.push_rx(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pl011::{
        CR, CR_RXE, CR_TXE, CR_UARTEN, DR, FIFO_DEPTH, FR, FR_RXFE, LCR_H, LCR_H_FEN,
    };
    use alloc::vec::Vec;

    /// A host UART with a 32-byte FIFO fed from a line of pending input,
    /// as QEMU's chardev feeds it: the line waits while the FIFO is full.
    struct FakeHost {
        line: VecDeque<u8>,
        fifo: VecDeque<u8>,
        rx_interrupts: bool,
        reads: usize,
    }

    impl FakeHost {
        fn with_input(n: usize) -> Self {
            let mut h = FakeHost {
                line: (0..n).map(|i| i as u8).collect(),
                fifo: VecDeque::new(),
                rx_interrupts: true,
                reads: 0,
            };
            h.arrive();
            h
        }

        /// The line delivers into the FIFO while it has room.
        fn arrive(&mut self) {
            while self.fifo.len() < FIFO_DEPTH {
                let Some(b) = self.line.pop_front() else {
                    break;
                };
                self.fifo.push_back(b);
            }
        }
    }

    impl HostRx for FakeHost {
        fn getc(&mut self) -> Option<u8> {
            let b = self.fifo.pop_front();
            if b.is_some() {
                self.reads += 1;
            }
            self.arrive();
            b
        }
        fn set_rx_interrupts(&mut self, on: bool) {
            self.rx_interrupts = on;
        }
    }

    fn guest_uart() -> Pl011 {
        let mut u = Pl011::new();
        u.write(CR, 4, CR_UARTEN | CR_TXE | CR_RXE);
        u.write(LCR_H, 4, LCR_H_FEN | (3 << 5));
        u
    }

    fn guest_reads_all(u: &mut Pl011, out: &mut Vec<u8>) {
        while u.read(FR, 4) & FR_RXFE == 0 {
            out.push(u.read(DR, 4) as u8);
        }
    }

    #[test]
    fn a_guest_that_never_reads_holds_the_host_back_at_a_bounded_backlog() {
        let mut host = FakeHost::with_input(100_000);
        let mut uart = guest_uart();
        let mut input = ConsoleInput::new(64);
        for _ in 0..1000 {
            input.pump(&mut uart, true, Some(&mut host));
        }
        assert_eq!(input.waiting(), 64);
        assert!(input.host_held());
        assert!(
            !host.rx_interrupts,
            "the host's receive interrupts are masked"
        );
        assert_eq!(
            host.reads,
            FIFO_DEPTH + 64,
            "guest FIFO plus backlog, no more"
        );
        assert_eq!(input.held, 1);
    }

    #[test]
    fn a_shared_console_reads_the_host_on_past_a_full_backlog_dropping_what_does_not_fit() {
        let mut host = FakeHost::with_input(1000);
        let mut uart = guest_uart();
        let mut input = ConsoleInput::new(64);
        for _ in 0..100 {
            input.pump_shared(&mut uart, true, Some(&mut host));
            host.arrive();
        }
        assert_eq!(input.waiting(), 64);
        assert!(!input.host_held(), "never held back");
        assert!(host.rx_interrupts, "the host's receive interrupts stay on");
        assert_eq!(host.reads, 1000, "every byte read");
        assert_eq!(input.received, 1000);
        assert_eq!(input.dropped, 1000 - FIFO_DEPTH as u64 - 64);
        // What the guest gets is the oldest input, whole and in order.
        let mut got = Vec::new();
        loop {
            let before = got.len();
            guest_reads_all(&mut uart, &mut got);
            input.pump_shared(&mut uart, false, Some(&mut host));
            if got.len() == before {
                break;
            }
        }
        let want: Vec<u8> = (0..(FIFO_DEPTH + 64)).map(|i| i as u8).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn held_input_reaches_a_reading_guest_whole_and_in_order() {
        let mut host = FakeHost::with_input(5000);
        let mut uart = guest_uart();
        let mut input = ConsoleInput::new(64);
        let mut got = Vec::new();
        input.pump(&mut uart, true, Some(&mut host));
        // The guest reads; each access pumps, as the hypervisor does.
        while got.len() < 5000 {
            let before = got.len();
            guest_reads_all(&mut uart, &mut got);
            input.pump(&mut uart, false, Some(&mut host));
            assert!(
                got.len() > before || uart.read(FR, 4) & FR_RXFE == 0,
                "stalled at {}",
                got.len()
            );
        }
        let want: Vec<u8> = (0..5000).map(|i| i as u8).collect();
        assert_eq!(got, want);
        assert!(!input.host_held());
        assert!(host.rx_interrupts, "unmasked once the host was read empty");
    }

    #[test]
    fn nothing_waits_in_the_backlog_while_the_guest_fifo_has_room() {
        let mut host = FakeHost::with_input(10);
        let mut uart = guest_uart();
        let mut input = ConsoleInput::new(64);
        input.pump(&mut uart, true, Some(&mut host));
        assert_eq!(input.waiting(), 0);
        let mut got = Vec::new();
        guest_reads_all(&mut uart, &mut got);
        assert_eq!(got.len(), 10);
    }

    #[test]
    fn input_for_a_disabled_receiver_waits_until_it_is_enabled() {
        let mut host = FakeHost::with_input(10);
        let mut uart = guest_uart();
        uart.write(CR, 4, CR_UARTEN | CR_TXE);
        let mut input = ConsoleInput::new(64);
        input.pump(&mut uart, true, Some(&mut host));
        assert_eq!(input.waiting(), 10);
        uart.write(CR, 4, CR_UARTEN | CR_TXE | CR_RXE);
        input.pump(&mut uart, false, Some(&mut host));
        let mut got = Vec::new();
        guest_reads_all(&mut uart, &mut got);
        assert_eq!(got, (0..10).collect::<Vec<u8>>());
        assert_eq!(uart.rx_overruns, 0);
    }

    #[test]
    fn a_guest_access_without_backpressure_does_not_touch_the_host() {
        let mut host = FakeHost::with_input(10);
        let mut uart = guest_uart();
        let mut input = ConsoleInput::new(64);
        input.pump(&mut uart, false, Some(&mut host));
        assert_eq!(host.reads, 0);
        assert!(!input.wants_host(false));
    }
}

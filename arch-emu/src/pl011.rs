//! The emulated PL011 UART a guest uses as its console (Arm PrimeCell UART PL011 r1p5, DDI 0183).
//!
//! Transmission is infinitely fast: a byte written to UARTDR is handed back to
//! the caller at once, so the TX FIFO is always empty and the transmit interrupt
//! fires each time data passes through the trigger level (every write), as
//! Linux's `amba-pl011` driver expects. Received bytes enter a 32-entry FIFO
//! through [`Pl011::push_rx`]. Accesses the PL011 does not define read as zero
//! and ignore writes; they are counted in [`Pl011::bad_accesses`].

use alloc::collections::VecDeque;

/// UARTDR.
pub const DR: u64 = 0x000;
/// UARTRSR / UARTECR.
pub const RSR: u64 = 0x004;
/// UARTFR.
pub const FR: u64 = 0x018;
/// UARTILPR.
pub const ILPR: u64 = 0x020;
/// UARTIBRD.
pub const IBRD: u64 = 0x024;
/// UARTFBRD.
pub const FBRD: u64 = 0x028;
/// UARTLCR_H.
pub const LCR_H: u64 = 0x02c;
/// UARTCR.
pub const CR: u64 = 0x030;
/// UARTIFLS.
pub const IFLS: u64 = 0x034;
/// UARTIMSC.
pub const IMSC: u64 = 0x038;
/// UARTRIS.
pub const RIS: u64 = 0x03c;
/// UARTMIS.
pub const MIS: u64 = 0x040;
/// UARTICR.
pub const ICR: u64 = 0x044;
/// UARTDMACR.
pub const DMACR: u64 = 0x048;
/// The first of the peripheral and PrimeCell identification registers.
pub const PERIPH_ID0: u64 = 0xfe0;

/// UARTFR.BUSY.
pub const FR_BUSY: u32 = 1 << 3;
/// UARTFR.RXFE: receive FIFO empty.
pub const FR_RXFE: u32 = 1 << 4;
/// UARTFR.TXFF: transmit FIFO full.
pub const FR_TXFF: u32 = 1 << 5;
/// UARTFR.RXFF: receive FIFO full.
pub const FR_RXFF: u32 = 1 << 6;
/// UARTFR.TXFE: transmit FIFO empty.
pub const FR_TXFE: u32 = 1 << 7;

/// Receive interrupt (RXRIS/RXIM).
pub const INT_RX: u32 = 1 << 4;
/// Transmit interrupt (TXRIS/TXIM).
pub const INT_TX: u32 = 1 << 5;
/// Receive timeout interrupt (RTRIS/RTIM).
pub const INT_RT: u32 = 1 << 6;
/// All interrupt bits (RIMIM..OEIM).
pub const INT_ALL: u32 = 0x7ff;

/// UARTLCR_H.FEN: FIFOs enabled.
pub const LCR_H_FEN: u32 = 1 << 4;
/// UARTCR.UARTEN.
pub const CR_UARTEN: u32 = 1 << 0;
/// UARTCR.TXE.
pub const CR_TXE: u32 = 1 << 8;
/// UARTCR.RXE.
pub const CR_RXE: u32 = 1 << 9;

/// FIFO depth of the PL011 r1p5.
pub const FIFO_DEPTH: usize = 32;

/// UARTPeriphID0..3 and UARTPCellID0..3 (DDI 0183 section 3.3.14-3.3.15), r1p5.
const ID_REGS: [u32; 8] = [0x11, 0x10, 0x34, 0x00, 0x0d, 0xf0, 0x05, 0xb1];

/// What a write did, for the hypervisor to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriteOutcome {
    /// A byte the guest transmitted: send it to the host console.
    pub tx: Option<u8>,
}

/// The emulated PL011's state.
#[derive(Debug, Clone)]
pub struct Pl011 {
    rx: VecDeque<u8>,
    ibrd: u32,
    fbrd: u32,
    lcr_h: u32,
    cr: u32,
    ifls: u32,
    imsc: u32,
    ris: u32,
    dmacr: u32,
    ilpr: u32,
    /// Bytes dropped because the receive FIFO was full (an overrun).
    pub rx_overruns: u64,
    /// Accesses to undefined offsets or with a size other than 1, 2 or 4 bytes.
    pub bad_accesses: u64,
}

impl Default for Pl011 {
    fn default() -> Self {
        Self::new()
    }
}

impl Pl011 {
    /// A PL011 in its reset state (UARTCR = TXE | RXE, UARTIFLS = 0x12).
    pub fn new() -> Self {
        Pl011 {
            rx: VecDeque::with_capacity(FIFO_DEPTH),
            ibrd: 0,
            fbrd: 0,
            lcr_h: 0,
            cr: CR_TXE | CR_RXE,
            ifls: 0x12,
            imsc: 0,
            ris: 0,
            dmacr: 0,
            ilpr: 0,
            rx_overruns: 0,
            bad_accesses: 0,
        }
    }

    fn fifo_depth(&self) -> usize {
        if self.lcr_h & LCR_H_FEN != 0 {
            FIFO_DEPTH
        } else {
            1
        }
    }

    /// The receive trigger level in bytes, from UARTIFLS.RXIFLSEL.
    fn rx_trigger(&self) -> usize {
        if self.lcr_h & LCR_H_FEN == 0 {
            return 1;
        }
        match (self.ifls >> 3) & 7 {
            0 => 4,
            1 => 8,
            2 => 16,
            3 => 24,
            _ => 28,
        }
    }

    fn update_rx_status(&mut self) {
        if self.rx.len() >= self.rx_trigger() {
            self.ris |= INT_RX;
        } else {
            self.ris &= !INT_RX;
        }
        // No character timing is modelled: the receive timeout fires as soon as
        // data waits in the FIFO, which makes the driver drain it promptly.
        if self.rx.is_empty() {
            self.ris &= !INT_RT;
        } else {
            self.ris |= INT_RT;
        }
    }

    /// Whether [`Pl011::push_rx`] would take a byte now (receiver enabled,
    /// FIFO or holding register not full), so a caller can hold input back
    /// instead of overrunning.
    pub fn rx_room(&self) -> bool {
        self.cr & CR_RXE != 0 && self.cr & CR_UARTEN != 0 && self.rx.len() < self.fifo_depth()
    }

    /// A byte arrives from the host console. Returns false if it was dropped
    /// because the FIFO is full or the receiver is disabled.
    pub fn push_rx(&mut self, byte: u8) -> bool {
        if self.cr & CR_RXE == 0 || self.cr & CR_UARTEN == 0 {
            return false;
        }
        if self.rx.len() >= self.fifo_depth() {
            self.rx_overruns = self.rx_overruns.saturating_add(1);
            return false;
        }
        self.rx.push_back(byte);
        self.update_rx_status();
        true
    }

    /// The level of the interrupt line (UARTINTR): any masked interrupt pending.
    pub fn irq_level(&self) -> bool {
        self.ris & self.imsc != 0
    }

    fn flags(&self) -> u32 {
        let mut fr = FR_TXFE;
        if self.rx.is_empty() {
            fr |= FR_RXFE;
        }
        if self.rx.len() >= self.fifo_depth() {
            fr |= FR_RXFF;
        }
        fr
    }

    /// A guest read of `size` bytes at `offset` within the 4 KiB register page.
    pub fn read(&mut self, offset: u64, size: u8) -> u32 {
        if !matches!(size, 1 | 2 | 4) || offset & 3 != 0 {
            self.bad_accesses = self.bad_accesses.saturating_add(1);
            return 0;
        }
        let value = match offset {
            DR => {
                let v = self.rx.pop_front().map_or(0, u32::from);
                self.update_rx_status();
                v
            }
            RSR => 0,
            FR => self.flags(),
            ILPR => self.ilpr,
            IBRD => self.ibrd,
            FBRD => self.fbrd,
            LCR_H => self.lcr_h,
            CR => self.cr,
            IFLS => self.ifls,
            IMSC => self.imsc,
            RIS => self.ris,
            MIS => self.ris & self.imsc,
            ICR => 0,
            DMACR => self.dmacr,
            0xfe0..=0xffc => ID_REGS[((offset - PERIPH_ID0) / 4) as usize & 7],
            _ => {
                self.bad_accesses = self.bad_accesses.saturating_add(1);
                0
            }
        };
        match size {
            1 => value & 0xff,
            2 => value & 0xffff,
            _ => value,
        }
    }

    /// A guest write of `size` bytes at `offset`.
    pub fn write(&mut self, offset: u64, size: u8, value: u32) -> WriteOutcome {
        let mut out = WriteOutcome::default();
        if !matches!(size, 1 | 2 | 4) || offset & 3 != 0 {
            self.bad_accesses = self.bad_accesses.saturating_add(1);
            return out;
        }
        match offset {
            DR => {
                if self.cr & CR_TXE != 0 && self.cr & CR_UARTEN != 0 {
                    out.tx = Some(value as u8);
                }
                // The byte drains at once: the FIFO passes through the trigger level.
                self.ris |= INT_TX;
            }
            RSR => {} // UARTECR: writing clears the (never set) error flags.
            ILPR => self.ilpr = value & 0xff,
            IBRD => self.ibrd = value & 0xffff,
            FBRD => self.fbrd = value & 0x3f,
            LCR_H => {
                let was_fifo = self.lcr_h & LCR_H_FEN != 0;
                self.lcr_h = value & 0xff;
                if was_fifo && self.lcr_h & LCR_H_FEN == 0 {
                    // Disabling the FIFOs leaves a one-character holding register.
                    self.rx.truncate(1);
                }
                self.update_rx_status();
            }
            CR => {
                let was_tx = self.cr & (CR_TXE | CR_UARTEN) == (CR_TXE | CR_UARTEN);
                self.cr = value & 0xff87;
                let is_tx = self.cr & (CR_TXE | CR_UARTEN) == (CR_TXE | CR_UARTEN);
                if is_tx && !was_tx {
                    // An empty FIFO below its trigger level when transmission starts.
                    self.ris |= INT_TX;
                }
            }
            IFLS => {
                self.ifls = value & 0x3f;
                self.update_rx_status();
            }
            IMSC => self.imsc = value & INT_ALL,
            ICR => {
                self.ris &= !(value & INT_ALL);
            }
            DMACR => self.dmacr = value & 0x7,
            FR | RIS | MIS | 0xfe0..=0xffc => {} // read-only
            _ => self.bad_accesses = self.bad_accesses.saturating_add(1),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enabled() -> Pl011 {
        let mut u = Pl011::new();
        u.write(CR, 4, CR_UARTEN | CR_TXE | CR_RXE);
        u.write(LCR_H, 4, LCR_H_FEN | (3 << 5));
        u.write(ICR, 4, INT_ALL);
        u
    }

    #[test]
    fn identification_registers_read_as_pl011_r1p5() {
        let mut u = Pl011::new();
        let ids: alloc::vec::Vec<u32> = (0..8).map(|i| u.read(PERIPH_ID0 + 4 * i, 4)).collect();
        assert_eq!(ids, [0x11, 0x10, 0x34, 0x00, 0x0d, 0xf0, 0x05, 0xb1]);
    }

    #[test]
    fn written_byte_is_transmitted_when_enabled() {
        let mut u = enabled();
        assert_eq!(u.write(DR, 4, 0x141).tx, Some(0x41));
    }

    #[test]
    fn written_byte_is_dropped_when_uart_disabled() {
        let mut u = Pl011::new();
        assert_eq!(u.write(DR, 4, 0x41).tx, None);
    }

    #[test]
    fn tx_interrupt_raised_after_write_and_cleared_by_icr() {
        let mut u = enabled();
        u.write(IMSC, 4, INT_TX);
        assert!(!u.irq_level());
        u.write(DR, 4, b'x'.into());
        assert!(u.irq_level());
        assert_eq!(u.read(MIS, 4), INT_TX);
        u.write(ICR, 4, INT_TX);
        assert!(!u.irq_level());
    }

    #[test]
    fn received_bytes_come_out_in_order_and_flags_follow() {
        let mut u = enabled();
        assert_ne!(u.read(FR, 4) & FR_RXFE, 0);
        assert!(u.push_rx(b'a'));
        assert!(u.push_rx(b'b'));
        assert_eq!(u.read(FR, 4) & FR_RXFE, 0);
        assert_eq!(u.read(DR, 4), u32::from(b'a'));
        assert_eq!(u.read(DR, 4), u32::from(b'b'));
        assert_ne!(u.read(FR, 4) & FR_RXFE, 0);
    }

    #[test]
    fn receive_timeout_interrupt_asserts_while_data_waits() {
        let mut u = enabled();
        u.write(IMSC, 4, INT_RX | INT_RT);
        u.push_rx(b'a');
        assert_eq!(u.read(MIS, 4), INT_RT);
        u.read(DR, 4);
        assert!(!u.irq_level());
    }

    #[test]
    fn receive_interrupt_follows_trigger_level() {
        let mut u = enabled();
        u.write(IFLS, 4, 0); // RX trigger at 1/8 = 4 bytes
        u.write(IMSC, 4, INT_RX);
        for b in 0..3 {
            u.push_rx(b);
        }
        assert!(!u.irq_level());
        u.push_rx(3);
        assert!(u.irq_level());
    }

    #[test]
    fn full_fifo_drops_and_counts_overrun() {
        let mut u = enabled();
        for b in 0..FIFO_DEPTH as u8 {
            assert!(u.push_rx(b));
        }
        assert_ne!(u.read(FR, 4) & FR_RXFF, 0);
        assert!(!u.push_rx(0xff));
        assert_eq!(u.rx_overruns, 1);
    }

    #[test]
    fn fifo_disabled_holds_one_character() {
        let mut u = enabled();
        u.write(LCR_H, 4, 0);
        assert!(u.push_rx(1));
        assert!(!u.push_rx(2));
    }

    #[test]
    fn undefined_offset_reads_zero_and_is_counted() {
        let mut u = Pl011::new();
        assert_eq!(u.read(0x800, 4), 0);
        u.write(0x800, 4, 1);
        assert_eq!(u.bad_accesses, 2);
    }

    #[test]
    fn misaligned_or_wide_access_is_ignored_and_counted() {
        let mut u = enabled();
        assert_eq!(u.read(DR + 1, 1), 0);
        assert_eq!(u.write(DR, 8, 0x41).tx, None);
        assert_eq!(u.bad_accesses, 2);
    }

    #[test]
    fn read_only_registers_ignore_writes() {
        let mut u = enabled();
        u.write(FR, 4, 0);
        assert_ne!(u.read(FR, 4) & FR_TXFE, 0);
        u.write(PERIPH_ID0, 4, 0);
        assert_eq!(u.read(PERIPH_ID0, 4), 0x11);
    }

    proptest::proptest! {
        #[test]
        fn any_access_sequence_is_defined(ops in proptest::collection::vec((0u64..0x1100, 0u8..9, proptest::prelude::any::<u32>(), proptest::prelude::any::<bool>()), 0..200)) {
            let mut u = Pl011::new();
            for (off, size, val, is_write) in ops {
                if is_write { u.write(off, size, val); } else { u.read(off, size); }
                u.push_rx(val as u8);
                proptest::prop_assert!(u.rx.len() <= FIFO_DEPTH);
                proptest::prop_assert_eq!(u.read(MIS, 4), u.ris & u.imsc);
            }
        }
    }

    #[test]
    fn rx_room_says_whether_push_rx_would_take_a_byte() {
        let mut u = enabled();
        let mut taken = 0;
        while u.rx_room() {
            assert!(u.push_rx(b'x'));
            taken += 1;
        }
        assert_eq!(taken, 32, "the FIFO's depth");
        assert!(!u.push_rx(b'y'));
    }
}

//! The emulated PL011 UART a guest uses as its console (Arm PrimeCell UART
//! PL011 Technical Reference Manual r1p5, ARM DDI 0183G; sections cited as
//! "TRM 2.8.2" and so on).
//!
//! The serial line has no timing: a byte the guest writes to UARTDR leaves
//! the transmit FIFO at once when the transmitter is enabled (the caller
//! takes it with [`Pl011::take_tx`]), and a byte the caller hands to
//! [`Pl011::push_rx`] is received at once. Within that, the FIFOs, their
//! trigger levels and the interrupt conditions follow the TRM:
//!
//! * UARTRXINTR (TRM 2.8.2) rises when the receive FIFO reaches its trigger
//!   level (UARTIFLS.RXIFLSEL; a full holding register with the FIFOs off)
//!   and is cleared when reads take the level below it, or by UARTICR.
//! * UARTRTINTR (TRM 2.8.4) rises when a received character is followed by
//!   32 bit periods without another: with no line timing that period has
//!   passed as soon as the character is in. It is cleared when the FIFO
//!   empties, or by UARTICR; after a UARTICR it rises again with the next
//!   character received (hardware's timer would also fire again 32 bit
//!   periods later while data waits; the model has no clock for that).
//! * UARTTXINTR (TRM 2.8.3) rises when written data leaves the transmit
//!   FIFO and leaves it at or below its trigger level (UARTIFLS.TXIFLSEL; an
//!   empty holding register with the FIFOs off): a transition, so enabling
//!   the UART with an empty FIFO does not assert it. It is cleared by
//!   writes that take the level above the trigger, or by UARTICR.
//! * UARTEINTR's overrun (TRM 2.8.5, 3.3.2): a character arriving at a full
//!   receive FIFO is lost and sets RSR.OE and OERIS; the caller can avoid
//!   that with [`Pl011::rx_room`] (a flow-controlled line).
//!
//! Accesses the PL011 does not define read as zero and ignore writes; they
//! are counted in [`Pl011::bad_accesses`].

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

/// UARTDR.OE (and UARTRSR.OE at bit 3): overrun error.
pub const DR_OE: u32 = 1 << 11;
/// UARTRSR.OE.
pub const RSR_OE: u32 = 1 << 3;

/// UARTFR.BUSY: transmit data waits (TRM 3.3.3).
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
/// Overrun error interrupt (OERIS/OEIM).
pub const INT_OE: u32 = 1 << 10;
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

/// UARTPeriphID0..3 and UARTPCellID0..3 (TRM 3.3.15-3.3.16), r1p5.
const ID_REGS: [u32; 8] = [0x11, 0x10, 0x34, 0x00, 0x0d, 0xf0, 0x05, 0xb1];

/// The FIFO level a UARTIFLS field selects (TRM 3.3.9): 1/8, 1/4, 1/2, 3/4
/// or 7/8 of the depth; the reserved encodings act as 7/8 here.
fn ifls_level(sel: u32) -> usize {
    match sel & 7 {
        0 => FIFO_DEPTH / 8,
        1 => FIFO_DEPTH / 4,
        2 => FIFO_DEPTH / 2,
        3 => FIFO_DEPTH * 3 / 4,
        _ => FIFO_DEPTH * 7 / 8,
    }
}

/// The emulated PL011's state.
#[derive(Debug, Clone)]
pub struct Pl011 {
    /// Receive FIFO: data in bits 7:0, error bits 11:8 as UARTDR shows them.
    rx: VecDeque<u16>,
    /// Transmit FIFO: data written while the transmitter is off waits here.
    tx: VecDeque<u8>,
    /// A character was lost to a full receive FIFO; UARTDR.OE shows until
    /// the next character is written into the FIFO (TRM 3.3.1).
    overrun: bool,
    rsr: u32,
    ibrd: u32,
    fbrd: u32,
    lcr_h: u32,
    cr: u32,
    ifls: u32,
    imsc: u32,
    ris: u32,
    dmacr: u32,
    ilpr: u32,
    /// Characters lost because the receive FIFO was full (overruns).
    pub rx_overruns: u64,
    /// Characters written to UARTDR while the transmit FIFO was full (lost).
    pub tx_overflows: u64,
    /// Accesses to undefined offsets or with a size other than 1, 2 or 4 bytes.
    pub bad_accesses: u64,
}

impl Default for Pl011 {
    fn default() -> Self {
        Self::new()
    }
}

impl Pl011 {
    /// A PL011 in its reset state (UARTCR = TXE | RXE, UARTIFLS = 0x12, FIFOs
    /// off, everything masked).
    pub fn new() -> Self {
        Pl011 {
            rx: VecDeque::with_capacity(FIFO_DEPTH),
            tx: VecDeque::with_capacity(FIFO_DEPTH),
            overrun: false,
            rsr: 0,
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
            tx_overflows: 0,
            bad_accesses: 0,
        }
    }

    fn fifos_enabled(&self) -> bool {
        self.lcr_h & LCR_H_FEN != 0
    }

    /// Entries in each FIFO: 32, or the 1-character holding register when
    /// UARTLCR_H.FEN is clear (TRM 2.4.3).
    fn fifo_depth(&self) -> usize {
        if self.fifos_enabled() {
            FIFO_DEPTH
        } else {
            1
        }
    }

    /// The receive comparator: the FIFO is at or above its trigger level (a
    /// full holding register with the FIFOs off).
    fn rx_at_trigger(&self) -> bool {
        let trigger = if self.fifos_enabled() {
            ifls_level(self.ifls >> 3)
        } else {
            1
        };
        self.rx.len() >= trigger
    }

    /// The transmit comparator: the FIFO is at or below its trigger level
    /// (an empty holding register with the FIFOs off).
    fn tx_at_trigger(&self) -> bool {
        if self.fifos_enabled() {
            self.tx.len() <= ifls_level(self.ifls)
        } else {
            self.tx.is_empty()
        }
    }

    /// After the receive level or its trigger changed: RXRIS rises when the
    /// comparator rises and falls when it falls (TRM 2.8.2).
    fn rx_level_moved(&mut self, was_at_trigger: bool) {
        let now = self.rx_at_trigger();
        if now && !was_at_trigger {
            self.ris |= INT_RX;
        } else if !now {
            self.ris &= !INT_RX;
        }
        if self.rx.is_empty() {
            self.ris &= !INT_RT;
        }
    }

    fn receiver_enabled(&self) -> bool {
        self.cr & (CR_UARTEN | CR_RXE) == CR_UARTEN | CR_RXE
    }

    fn transmitter_enabled(&self) -> bool {
        self.cr & (CR_UARTEN | CR_TXE) == CR_UARTEN | CR_TXE
    }

    /// Whether [`Pl011::push_rx`] would take a byte now (receiver enabled,
    /// FIFO or holding register not full), so a caller can hold input back
    /// instead of overrunning, as a flow-controlled line would.
    pub fn rx_room(&self) -> bool {
        self.receiver_enabled() && self.rx.len() < self.fifo_depth()
    }

    /// A byte arrives on the receive line. Returns whether it entered the
    /// FIFO: with the receiver disabled nothing is received (false), and a
    /// byte arriving at a full FIFO is an overrun: lost, RSR.OE and OERIS
    /// set (TRM 3.3.2), false.
    pub fn push_rx(&mut self, byte: u8) -> bool {
        if !self.receiver_enabled() {
            return false;
        }
        if self.rx.len() >= self.fifo_depth() {
            self.rx_overruns = self.rx_overruns.saturating_add(1);
            self.overrun = true;
            self.rsr |= RSR_OE;
            self.ris |= INT_OE;
            return false;
        }
        let was = self.rx_at_trigger();
        self.rx.push_back(u16::from(byte));
        self.overrun = false;
        self.rx_level_moved(was);
        // No line timing: the 32 idle bit periods after this character have
        // passed (TRM 2.8.4).
        self.ris |= INT_RT;
        true
    }

    /// The next byte the transmitter sends, if it is enabled and data waits.
    /// Its leaving the FIFO at or below the trigger level raises TXRIS (TRM
    /// 2.8.3).
    pub fn take_tx(&mut self) -> Option<u8> {
        if !self.transmitter_enabled() {
            return None;
        }
        let b = self.tx.pop_front()?;
        if self.tx_at_trigger() {
            self.ris |= INT_TX;
        }
        Some(b)
    }

    /// The level of the combined interrupt line UARTINTR (TRM 2.8.6): any
    /// unmasked interrupt pending.
    pub fn irq_level(&self) -> bool {
        self.ris & self.imsc != 0
    }

    /// UARTFR (TRM 3.3.3); the modem inputs (CTS, DSR, DCD, RI) read as 0.
    fn flags(&self) -> u32 {
        let mut fr = 0;
        if !self.tx.is_empty() {
            fr |= FR_BUSY;
        }
        if self.rx.is_empty() {
            fr |= FR_RXFE;
        }
        if self.tx.len() >= self.fifo_depth() {
            fr |= FR_TXFF;
        }
        if self.rx.len() >= self.fifo_depth() {
            fr |= FR_RXFF;
        }
        if self.tx.is_empty() {
            fr |= FR_TXFE;
        }
        fr
    }

    fn read_dr(&mut self) -> u32 {
        let was = self.rx_at_trigger();
        let Some(v) = self.rx.pop_front() else {
            return 0;
        };
        self.rx_level_moved(was);
        u32::from(v) | if self.overrun { DR_OE } else { 0 }
    }

    /// A guest read of `size` bytes at `offset` within the 4 KiB register page.
    pub fn read(&mut self, offset: u64, size: u8) -> u32 {
        if !matches!(size, 1 | 2 | 4) || offset & 3 != 0 {
            self.bad_accesses = self.bad_accesses.saturating_add(1);
            return 0;
        }
        let value = match offset {
            DR => self.read_dr(),
            RSR => self.rsr,
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

    /// A guest write of `size` bytes at `offset`. Transmitted bytes are then
    /// collected with [`Pl011::take_tx`].
    pub fn write(&mut self, offset: u64, size: u8, value: u32) {
        if !matches!(size, 1 | 2 | 4) || offset & 3 != 0 {
            self.bad_accesses = self.bad_accesses.saturating_add(1);
            return;
        }
        match offset {
            DR => {
                if self.tx.len() < self.fifo_depth() {
                    self.tx.push_back(value as u8);
                    if !self.tx_at_trigger() {
                        self.ris &= !INT_TX;
                    }
                } else {
                    self.tx_overflows = self.tx_overflows.saturating_add(1);
                }
            }
            RSR => self.rsr = 0, // UARTECR: any write clears the error flags.
            ILPR => self.ilpr = value & 0xff,
            IBRD => self.ibrd = value & 0xffff,
            FBRD => self.fbrd = value & 0x3f,
            LCR_H => {
                let was = self.rx_at_trigger();
                self.lcr_h = value & 0xff;
                if !self.fifos_enabled() {
                    // Disabling the FIFOs leaves the one-character holding registers.
                    self.rx.truncate(1);
                    self.tx.truncate(1);
                }
                self.rx_level_moved(was);
            }
            CR => self.cr = value & 0xff87,
            IFLS => {
                let was = self.rx_at_trigger();
                self.ifls = value & 0x3f;
                self.rx_level_moved(was);
            }
            IMSC => self.imsc = value & INT_ALL,
            ICR => self.ris &= !(value & INT_ALL),
            DMACR => self.dmacr = value & 0x7,
            FR | RIS | MIS | 0xfe0..=0xffc => {} // read-only
            _ => self.bad_accesses = self.bad_accesses.saturating_add(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As Linux's amba-pl011 leaves it: enabled, 8 bits, FIFOs on, RX
    /// trigger 1/2 (16), TX trigger 1/2 (16), nothing pending.
    fn enabled() -> Pl011 {
        let mut u = Pl011::new();
        u.write(CR, 4, CR_UARTEN | CR_TXE | CR_RXE);
        u.write(LCR_H, 4, LCR_H_FEN | (3 << 5));
        u.write(ICR, 4, INT_ALL);
        u
    }

    fn fill(u: &mut Pl011, n: usize) {
        for i in 0..n {
            assert!(u.push_rx(i as u8), "byte {i} refused");
        }
    }

    fn drain_tx(u: &mut Pl011) -> alloc::vec::Vec<u8> {
        core::iter::from_fn(|| u.take_tx()).collect()
    }

    #[test]
    fn identification_registers_read_as_pl011_r1p5() {
        let mut u = Pl011::new();
        let ids: alloc::vec::Vec<u32> = (0..8).map(|i| u.read(PERIPH_ID0 + 4 * i, 4)).collect();
        assert_eq!(ids, [0x11, 0x10, 0x34, 0x00, 0x0d, 0xf0, 0x05, 0xb1]);
    }

    #[test]
    fn reset_values_follow_the_trm() {
        // TRM 3.3: UARTCR 0x300, UARTIFLS 0x12, UARTFR TXFE|RXFE, all masked.
        let mut u = Pl011::new();
        assert_eq!(u.read(CR, 4), 0x300);
        assert_eq!(u.read(IFLS, 4), 0x12);
        assert_eq!(u.read(FR, 4), FR_TXFE | FR_RXFE);
        assert_eq!(u.read(IMSC, 4), 0);
        assert_eq!(u.read(RIS, 4), 0);
    }

    #[test]
    fn written_byte_is_transmitted_when_enabled() {
        let mut u = enabled();
        u.write(DR, 4, 0x141);
        assert_eq!(drain_tx(&mut u), [0x41]);
        assert_eq!(u.read(FR, 4) & (FR_BUSY | FR_TXFE), FR_TXFE);
    }

    #[test]
    fn data_written_while_transmitter_disabled_waits_until_enabled() {
        // TRM 3.3.8 (UARTEN, TXE) and 3.3.3 (BUSY, TXFE).
        let mut u = enabled();
        u.write(CR, 4, CR_UARTEN | CR_RXE);
        u.write(DR, 4, u32::from(b'a'));
        u.write(DR, 4, u32::from(b'b'));
        assert_eq!(u.take_tx(), None);
        assert_eq!(u.read(FR, 4) & (FR_BUSY | FR_TXFE), FR_BUSY);
        u.write(CR, 4, CR_UARTEN | CR_TXE | CR_RXE);
        assert_eq!(drain_tx(&mut u), b"ab");
        assert_eq!(u.read(FR, 4) & (FR_BUSY | FR_TXFE), FR_TXFE);
    }

    #[test]
    fn full_transmit_fifo_sets_txff_and_loses_further_writes() {
        let mut u = enabled();
        u.write(CR, 4, 0);
        for b in 0..FIFO_DEPTH as u32 {
            u.write(DR, 4, b);
        }
        assert_ne!(u.read(FR, 4) & FR_TXFF, 0);
        u.write(DR, 4, 0xff);
        assert_eq!(u.tx_overflows, 1);
        u.write(CR, 4, CR_UARTEN | CR_TXE);
        assert_eq!(drain_tx(&mut u).len(), FIFO_DEPTH);
    }

    #[test]
    fn enabling_with_an_empty_transmit_fifo_does_not_raise_txris() {
        // TRM 2.8.3: a transition through the level, not the level itself.
        let mut u = Pl011::new();
        u.write(LCR_H, 4, LCR_H_FEN);
        u.write(IMSC, 4, INT_TX);
        u.write(CR, 4, CR_UARTEN | CR_TXE | CR_RXE);
        assert_eq!(u.read(RIS, 4) & INT_TX, 0);
        assert!(!u.irq_level());
    }

    #[test]
    fn txris_rises_when_written_data_leaves_and_icr_clears_it() {
        // TRM 2.8.3 and 3.3.13.
        let mut u = enabled();
        u.write(IMSC, 4, INT_TX);
        u.write(DR, 4, u32::from(b'x'));
        drain_tx(&mut u);
        assert!(u.irq_level());
        assert_eq!(u.read(MIS, 4), INT_TX);
        u.write(ICR, 4, INT_TX);
        assert!(!u.irq_level());
    }

    #[test]
    fn txris_clears_when_writes_take_the_fifo_above_its_trigger() {
        // TRM 2.8.3: TX trigger 1/2 = 16 (UARTIFLS reset value).
        let mut u = enabled();
        u.write(DR, 4, 0);
        drain_tx(&mut u);
        assert_ne!(u.read(RIS, 4) & INT_TX, 0);
        u.write(CR, 4, CR_UARTEN | CR_RXE); // hold data in the FIFO
        for b in 0..16 {
            u.write(DR, 4, b);
        }
        assert_ne!(u.read(RIS, 4) & INT_TX, 0, "16 is still at the trigger");
        u.write(DR, 4, 16);
        assert_eq!(u.read(RIS, 4) & INT_TX, 0, "17 is above it");
        u.write(CR, 4, CR_UARTEN | CR_TXE | CR_RXE);
        assert_eq!(u.take_tx(), Some(0));
        assert_ne!(u.read(RIS, 4) & INT_TX, 0, "back at 16: asserted");
    }

    #[test]
    fn txris_with_fifos_off_rises_when_the_holding_register_empties() {
        // TRM 2.8.3, FIFOs disabled.
        let mut u = enabled();
        u.write(LCR_H, 4, 3 << 5);
        u.write(CR, 4, CR_UARTEN);
        u.write(DR, 4, 1);
        assert_ne!(u.read(FR, 4) & FR_TXFF, 0, "one location, full");
        assert_eq!(u.read(RIS, 4) & INT_TX, 0);
        u.write(CR, 4, CR_UARTEN | CR_TXE);
        assert_eq!(u.take_tx(), Some(1));
        assert_ne!(u.read(RIS, 4) & INT_TX, 0);
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
    fn rxris_rises_when_the_fifo_reaches_the_trigger_level() {
        // TRM 2.8.2 with UARTIFLS.RXIFLSEL = 0b000: 1/8 full, 4 characters.
        let mut u = enabled();
        u.write(IFLS, 4, 0);
        fill(&mut u, 3);
        assert_eq!(u.read(RIS, 4) & INT_RX, 0);
        u.push_rx(3);
        assert_ne!(u.read(RIS, 4) & INT_RX, 0);
    }

    #[test]
    fn rxris_clears_when_reads_take_the_level_below_the_trigger() {
        // TRM 2.8.2: trigger 1/2 = 16 (reset UARTIFLS).
        let mut u = enabled();
        fill(&mut u, 17);
        u.read(DR, 4);
        assert_ne!(u.read(RIS, 4) & INT_RX, 0, "16 left: at the trigger");
        u.read(DR, 4);
        assert_eq!(u.read(RIS, 4) & INT_RX, 0, "15 left: below it");
    }

    #[test]
    fn rxris_cleared_by_icr_stays_clear_until_the_level_crosses_the_trigger_again() {
        // TRM 2.8.2: asserted when the FIFO reaches the level; Linux's
        // pl011_enable_interrupts relies on this edge.
        let mut u = enabled();
        fill(&mut u, 16);
        u.write(ICR, 4, INT_RX);
        u.push_rx(16);
        assert_eq!(u.read(RIS, 4) & INT_RX, 0, "already above: no new edge");
        u.read(DR, 4);
        u.read(DR, 4);
        u.push_rx(17);
        assert_ne!(u.read(RIS, 4) & INT_RX, 0, "15 -> 16 reaches it again");
    }

    #[test]
    fn rxris_with_fifos_off_follows_the_holding_register() {
        // TRM 2.8.2, FIFOs disabled: set when the location fills, cleared by one read.
        let mut u = enabled();
        u.write(LCR_H, 4, 3 << 5);
        assert!(u.push_rx(b'a'));
        assert_ne!(u.read(RIS, 4) & INT_RX, 0);
        assert_ne!(u.read(FR, 4) & FR_RXFF, 0);
        assert!(!u.rx_room());
        assert_eq!(u.read(DR, 4), u32::from(b'a'));
        assert_eq!(u.read(RIS, 4) & INT_RX, 0);
    }

    #[test]
    fn lowering_the_trigger_below_the_level_raises_rxris() {
        // TRM 3.3.9: the comparator sees the new trigger level at once.
        let mut u = enabled();
        fill(&mut u, 8);
        assert_eq!(u.read(RIS, 4) & INT_RX, 0);
        u.write(IFLS, 4, 1 << 3); // 1/4 = 8
        assert_ne!(u.read(RIS, 4) & INT_RX, 0);
        u.write(IFLS, 4, 3 << 3); // 3/4 = 24
        assert_eq!(u.read(RIS, 4) & INT_RX, 0);
    }

    #[test]
    fn rtris_rises_with_a_character_below_the_trigger_and_clears_when_empty() {
        // TRM 2.8.4.
        let mut u = enabled();
        u.write(IMSC, 4, INT_RX | INT_RT);
        u.push_rx(b'a');
        u.push_rx(b'b');
        assert_eq!(u.read(MIS, 4), INT_RT);
        u.read(DR, 4);
        assert_eq!(u.read(MIS, 4), INT_RT, "data still waits");
        u.read(DR, 4);
        assert!(!u.irq_level());
    }

    #[test]
    fn rtris_cleared_by_icr_rises_again_with_the_next_character() {
        // TRM 2.8.4 and 3.3.13.
        let mut u = enabled();
        u.push_rx(b'a');
        u.write(ICR, 4, INT_RT);
        assert_eq!(u.read(RIS, 4) & INT_RT, 0);
        u.push_rx(b'b');
        assert_ne!(u.read(RIS, 4) & INT_RT, 0);
    }

    #[test]
    fn masking_leaves_ris_and_gates_mis_and_the_line() {
        // TRM 3.3.10-3.3.12: UARTMIS = UARTRIS & UARTIMSC, UARTINTR their OR.
        let mut u = enabled();
        u.push_rx(b'a');
        assert_eq!(u.read(RIS, 4), INT_RT);
        assert_eq!(u.read(MIS, 4), 0);
        assert!(!u.irq_level());
        u.write(IMSC, 4, INT_RT);
        assert!(
            u.irq_level(),
            "unmasking a pending interrupt raises the line"
        );
        u.write(IMSC, 4, 0);
        assert!(!u.irq_level());
        assert_eq!(u.read(RIS, 4), INT_RT, "masking does not clear it");
    }

    #[test]
    fn icr_clears_only_the_bits_written() {
        // TRM 3.3.13: writing 0 has no effect.
        let mut u = enabled();
        u.write(DR, 4, 0);
        drain_tx(&mut u);
        u.push_rx(0);
        u.write(ICR, 4, 0);
        assert_eq!(u.read(RIS, 4), INT_TX | INT_RT);
        u.write(ICR, 4, INT_TX);
        assert_eq!(u.read(RIS, 4), INT_RT);
    }

    #[test]
    fn overrun_loses_the_character_and_sets_oe_in_rsr_ris_and_dr() {
        // TRM 3.3.1 (DR.OE), 3.3.2 (RSR.OE, cleared by a UARTECR write), 2.8.5.
        let mut u = enabled();
        fill(&mut u, FIFO_DEPTH);
        assert_ne!(u.read(FR, 4) & FR_RXFF, 0);
        assert!(!u.rx_room());
        assert!(!u.push_rx(0xff));
        assert_eq!(u.rx_overruns, 1);
        assert_eq!(u.read(RSR, 4), RSR_OE);
        assert_ne!(u.read(RIS, 4) & INT_OE, 0);
        assert_eq!(u.read(DR, 4), DR_OE, "character 0, with OE");
        assert!(u.push_rx(b'z'));
        assert_eq!(u.read(DR, 4), 1, "OE cleared once a new character went in");
        u.write(RSR, 4, 0);
        assert_eq!(u.read(RSR, 4), 0);
    }

    #[test]
    fn disabled_receiver_takes_nothing() {
        // TRM 3.3.8: RXE and UARTEN.
        for cr in [CR_UARTEN | CR_TXE, CR_TXE | CR_RXE] {
            let mut u = enabled();
            u.write(CR, 4, cr);
            assert!(!u.rx_room());
            assert!(!u.push_rx(b'a'));
            assert_ne!(u.read(FR, 4) & FR_RXFE, 0);
            assert_eq!(u.rx_overruns, 0, "not an overrun: nothing was received");
        }
    }

    #[test]
    fn disabling_fifos_leaves_one_character() {
        let mut u = enabled();
        fill(&mut u, 5);
        u.write(LCR_H, 4, 3 << 5);
        assert_eq!(u.read(DR, 4), 0);
        assert_ne!(u.read(FR, 4) & FR_RXFE, 0);
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
        u.write(DR, 8, 0x41);
        assert_eq!(u.take_tx(), None);
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

    proptest::proptest! {
        #[test]
        fn any_access_sequence_keeps_the_trm_invariants(ops in proptest::collection::vec((0u64..0x1100, 0u8..9, proptest::prelude::any::<u32>(), proptest::prelude::any::<bool>()), 0..200)) {
            let mut u = Pl011::new();
            for (off, size, val, is_write) in ops {
                if is_write { u.write(off, size, val); } else { u.read(off, size); }
                u.push_rx(val as u8);
                while u.take_tx().is_some() {}
                proptest::prop_assert!(u.rx.len() <= u.fifo_depth());
                proptest::prop_assert!(u.tx.len() <= u.fifo_depth());
                proptest::prop_assert_eq!(u.read(MIS, 4), u.ris & u.imsc);
                // RXRIS never outlives the level; RTRIS never outlives the data.
                proptest::prop_assert!(u.ris & INT_RX == 0 || u.rx_at_trigger());
                proptest::prop_assert!(u.ris & INT_RT == 0 || !u.rx.is_empty());
            }
        }
    }
}

//! The guest's PL011 as the Arm PrimeCell UART (PL011) Technical Reference
//! Manual (DDI 0183) describes it: identification, the transmit interrupt's
//! transition rule, the receive and receive-timeout interrupts against the
//! FIFO trigger level, and how ICR, IMSC, RIS and MIS relate. The receive
//! checks need input: the probe prints `PROBE-INPUT-READY` and the e2e test
//! types [`INPUT`] then.

use crate::dt::Platform;
use crate::println;
use crate::report::eq;

const G: &str = "pl011";
/// What the e2e test types after `PROBE-INPUT-READY`.
pub const INPUT: &[u8] = b"abcdefgh";

const DR: usize = 0x000;
const FR: usize = 0x018;
const LCR_H: usize = 0x02c;
const IFLS: usize = 0x034;
const IMSC: usize = 0x038;
const RIS: usize = 0x03c;
const MIS: usize = 0x040;
const ICR: usize = 0x044;
/// FR bits.
const RXFE: u32 = 1 << 4;
const TXFE: u32 = 1 << 7;
/// Interrupt bits (IMSC, RIS, MIS, ICR).
const RX: u32 = 1 << 4;
const TX: u32 = 1 << 5;
const RT: u32 = 1 << 6;
/// LCR_H.FEN and WLEN = 8 bits.
const FEN: u32 = 1 << 4;
const WLEN8: u32 = 3 << 5;

fn rd(p: &Platform, off: usize) -> u32 {
    crate::io::r32(p.uart + off)
}

fn wr(p: &Platform, off: usize, v: u32) {
    crate::io::w32(p.uart + off, v)
}

/// Waits up to `secs` seconds for `cond`.
fn wait(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let (start, freq) = crate::virtio_blk::now();
    while crate::virtio_blk::now().0.wrapping_sub(start) < secs * freq {
        if cond() {
            return true;
        }
    }
    false
}

/// Runs the group.
pub fn run(p: &Platform) {
    // Identification: UARTPeriphID0..3 and UARTPCellID0..3 (TRM 3.3.14-3.3.17);
    // the revision nibble of PeriphID2 is left out.
    let ids: [u32; 8] = core::array::from_fn(|i| rd(p, 0xfe0 + 4 * i));
    eq(
        G,
        "identification",
        [
            ids[0],
            ids[1],
            ids[2] & 0xf,
            ids[3],
            ids[4],
            ids[5],
            ids[6],
            ids[7],
        ],
        [0x11, 0x10, 0x4, 0x00, 0x0d, 0xf0, 0x05, 0xb1],
        "PL011 TRM 3.3.14-3.3.17",
    );
    // Quiet: every interrupt masked and cleared, FIFOs on, RX trigger 1/2
    // (16 of 32), TX trigger 1/2.
    wait(1, || rd(p, FR) & TXFE != 0);
    wr(p, IMSC, 0);
    wr(p, ICR, 0x7ff);
    wr(p, LCR_H, WLEN8 | FEN);
    wr(p, IFLS, (2 << 3) | 2);
    // Nothing is printed between these reads (a printed line is transmitted
    // data, which sets TXRIS).
    let after_icr = rd(p, RIS) & (RX | TX | RT);
    wr(p, IMSC, TX);
    let before_data = rd(p, RIS) & TX;
    eq(G, "icr-clears-all", after_icr, 0, "PL011 TRM 3.3.13");
    eq(
        G,
        "tx-not-set-without-data",
        before_data,
        0,
        "PL011 TRM 2.8.4 UARTTXINTR",
    );
    println!("PROBE-INFO pl011 transmit interrupt check");
    wait(1, || rd(p, FR) & TXFE != 0);
    eq(
        G,
        "tx-set-after-data-leaves",
        rd(p, RIS) & TX,
        TX,
        "PL011 TRM 2.8.4 UARTTXINTR",
    );
    eq(
        G,
        "mis-is-ris-under-imsc",
        rd(p, MIS),
        rd(p, RIS) & rd(p, IMSC),
        "PL011 TRM 3.3.11, 3.3.12",
    );
    wr(p, IMSC, 0);
    eq(
        G,
        "masking-keeps-ris",
        (rd(p, RIS) & TX, rd(p, MIS) & TX),
        (TX, 0),
        "PL011 TRM 3.3.11, 3.3.12",
    );
    wr(p, ICR, TX);
    eq(G, "icr-clears-tx", rd(p, RIS) & TX, 0, "PL011 TRM 3.3.13");
    // RX and RT: 8 characters typed, trigger at 4 (1/8 of 32).
    wr(p, IFLS, 2);
    while rd(p, FR) & RXFE == 0 {
        let _ = rd(p, DR);
    }
    wr(p, ICR, RX | RT);
    wr(p, IMSC, RX | RT);
    println!("PROBE-INPUT-READY");
    let arrived = wait(20, || rd(p, FR) & RXFE == 0);
    // Let the rest of the burst land (the hypervisor feeds the FIFO as the
    // host UART delivers).
    wait(1, || false);
    eq(G, "input-arrives", arrived, true, "PL011 TRM 2.4.2");
    let ris = rd(p, RIS);
    eq(
        G,
        "rx-at-trigger-level",
        ris & RX,
        RX,
        "PL011 TRM 2.8.3 UARTRXINTR",
    );
    eq(
        G,
        "rt-while-data-waits",
        ris & RT,
        RT,
        "PL011 TRM 2.8.5 UARTRTINTR",
    );
    let mut got = [0u8; 8];
    for b in got.iter_mut().take(5) {
        *b = rd(p, DR) as u8;
    }
    eq(
        G,
        "rx-clears-below-trigger",
        rd(p, RIS) & RX,
        0,
        "PL011 TRM 2.8.3 UARTRXINTR",
    );
    eq(
        G,
        "rt-stays-while-not-empty",
        rd(p, RIS) & RT,
        RT,
        "PL011 TRM 2.8.5 UARTRTINTR",
    );
    for b in got.iter_mut().skip(5) {
        *b = rd(p, DR) as u8;
    }
    eq(
        G,
        "rx-data-in-order",
        &got[..],
        INPUT,
        "PL011 TRM 3.3.1 UARTDR",
    );
    eq(
        G,
        "rt-clears-when-empty",
        (rd(p, RIS) & RT, rd(p, FR) & RXFE),
        (0, RXFE),
        "PL011 TRM 2.8.5 UARTRTINTR",
    );
    wr(p, IMSC, 0);
    wr(p, ICR, 0x7ff);
}

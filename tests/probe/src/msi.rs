//! The guest's MSIs: the vGIC's message-based SPIs (GICv3, IHI 0069, 2.4.3
//! and 12.9.30 GICD_SETSPI_NSR) and the virtio-blk's MSI-X table (PCI Local
//! Bus 3.0, 6.8.2; virtio 1.2 4.1.5), driven by hand.
//!
//! No interrupt is enabled in the distributor, so whatever an MSI pends
//! stays visible in GICD_ISPENDR<n> / GICR_ISPENDR0 and nothing is taken:
//! each check reads the pending bits before and after. A legitimate vector
//! (the doorbell, an INTID of the DT's `mbi-ranges`) must pend exactly its
//! SPI; a forged one (another address, or data naming the UART, an INTx
//! line, the virtual timer's PPI, an SGI or an INTID past the range) must
//! pend nothing, and nothing may fault (an unexpected exception ends the run).

use crate::dt::Platform;
use crate::io::{r32, r8, w16, w32, w64};
use crate::report::{check, eq};
use crate::virtio_blk::{Dev, Outcome, T_IN};

const G: &str = "msi";

const GICD_TYPER: usize = 0x04;
const GICD_SETSPI_NSR: usize = 0x40;
const GICD_CLRSPI_NSR: usize = 0x48;
const GICD_ISPENDR: usize = 0x200;
const GICD_ICPENDR: usize = 0x280;
/// GICR_ISPENDR0 of vCPU 0 (SGI_base + 0x200).
const GICR_ISPENDR0: usize = 0x1_0000 + 0x200;
/// Common configuration: config_msix_vector, queue_select, queue_msix_vector.
const CONFIG_MSIX_VECTOR: usize = 0x10;
const QUEUE_SELECT: usize = 0x16;
const QUEUE_MSIX_VECTOR: usize = 0x1a;
const NO_VECTOR: u32 = 0xffff;
/// MSI-X Message Control bits (6.8.2.3).
const MSIX_ENABLE: u16 = 1 << 15;
const FUNCTION_MASK: u16 = 1 << 14;
/// What the layout's other interrupts are (guest-dt's default layout):
/// the PL011, INTB at the host bridge (the disk's INTx), the virtual timer.
const UART_SPI: u32 = 33;
const INTX_SPI: u32 = 36;
const VTIMER_PPI: u32 = 27;

/// Every pending bit the probe can see: GICR_ISPENDR0 (SGIs, PPIs of vCPU
/// 0) then GICD_ISPENDR1..=31 (SPIs).
fn pending(p: &Platform) -> [u32; 32] {
    let mut v = [0u32; 32];
    v[0] = r32(p.gicr + GICR_ISPENDR0);
    for (i, w) in v.iter_mut().enumerate().skip(1) {
        *w = r32(p.gicd + GICD_ISPENDR + 4 * i);
    }
    v
}

fn is_pending(p: &Platform, intid: u32) -> bool {
    let v = pending(p);
    v.get((intid / 32) as usize)
        .is_some_and(|w| w & (1 << (intid % 32)) != 0)
}

fn clear_spi(p: &Platform, intid: u32) {
    w32(
        p.gicd + GICD_ICPENDR + 4 * (intid / 32) as usize,
        1 << (intid % 32),
    );
}

/// The INTIDs pending in `after` and not in `before`.
fn newly_pending(before: &[u32; 32], after: &[u32; 32]) -> heapless_list::List {
    let mut l = heapless_list::List::default();
    for (i, (b, a)) in before.iter().zip(after).enumerate() {
        for bit in 0..32u32 {
            if a & !b & (1 << bit) != 0 {
                l.push(i as u32 * 32 + bit);
            }
        }
    }
    l
}

/// A short list of INTIDs without an allocator.
mod heapless_list {
    #[derive(Default, PartialEq, Eq)]
    pub struct List {
        items: [u32; 8],
        len: usize,
    }

    impl List {
        pub fn push(&mut self, v: u32) {
            if let Some(s) = self.items.get_mut(self.len) {
                *s = v;
                self.len += 1;
            }
        }
        pub fn as_slice(&self) -> &[u32] {
            &self.items[..self.len]
        }
    }

    impl core::fmt::Debug for List {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            write!(f, "{:?}", self.as_slice())
        }
    }
}

/// The virtio-blk's MSI-X: its capability and its table's address.
struct Msix {
    cap: u16,
    table: usize,
    pba: usize,
    /// Table Size + 1 (Message Control bits 10:0, 6.8.2.3): config + one per queue.
    vectors: usize,
}

impl Msix {
    fn find(d: &Dev) -> Option<Msix> {
        let cap = d.ecam.find_cap(d.f, 0x11, None)?;
        let t = d.ecam.read32(d.f, cap + 4);
        let pba = d.ecam.read32(d.f, cap + 8);
        // Both in BAR 0 (BIR 0) on our device.
        let control = d.ecam.read32(d.f, cap) >> 16;
        (t & 7 == 0 && pba & 7 == 0).then(|| Msix {
            cap,
            table: d.bar0 + (t & !7) as usize,
            pba: d.bar0 + (pba & !7) as usize,
            vectors: (control & 0x7ff) as usize + 1,
        })
    }

    fn control(&self, d: &Dev, v: u16) {
        d.ecam.write16(d.f, self.cap + 2, v);
    }

    fn entry(&self, v: usize, address: u64, data: u32, masked: bool) {
        let e = self.table + 16 * v;
        w32(e + 12, 1);
        w64(e, address);
        w32(e + 8, data);
        w32(e + 12, u32::from(masked));
    }
}

/// Runs the group.
pub fn run(p: &Platform) {
    let Some((first, count)) = p.mbi else {
        check(
            false,
            G,
            "mbi-ranges",
            format_args!("the GIC node has no mbi-ranges"),
            "GICv3 binding, mbi-ranges",
        );
        return;
    };
    vmbi(p, first, count);
    let Some(mut d) = Dev::find(p) else {
        check(
            false,
            G,
            "device",
            format_args!("no virtio-blk"),
            "virtio 1.2 4.1.2",
        );
        return;
    };
    let Some(m) = Msix::find(&d) else {
        check(
            false,
            G,
            "msix-capability",
            format_args!("no MSI-X capability with its table in BAR 0"),
            "virtio 1.2 4.1.4.7",
        );
        return;
    };
    table_accesses(&m);
    vectors(p, &mut d, &m, first, count);
}

/// GICD_TYPER and the SETSPI/CLRSPI registers from the CPU.
fn vmbi(p: &Platform, first: u32, count: u32) {
    let typer = r32(p.gicd + GICD_TYPER);
    eq(
        G,
        "typer-mbis-no-lpis",
        (typer >> 16 & 1, typer >> 17 & 1),
        (1, 0),
        "IHI 0069 12.9.38 GICD_TYPER.MBIS, LPIS",
    );
    let spi = first + 3;
    let before = pending(p);
    w32(p.gicd + GICD_SETSPI_NSR, spi);
    let after = pending(p);
    let new = newly_pending(&before, &after);
    eq(
        G,
        "setspi-nsr-in-range-pends",
        new.as_slice(),
        &[spi][..],
        "IHI 0069 12.9.30 GICD_SETSPI_NSR",
    );
    w32(p.gicd + GICD_CLRSPI_NSR, spi);
    eq(
        G,
        "clrspi-nsr-clears",
        is_pending(p, spi),
        false,
        "IHI 0069 12.9.8 GICD_CLRSPI_NSR",
    );
    let before = pending(p);
    for intid in [
        UART_SPI,
        INTX_SPI,
        VTIMER_PPI,
        1,
        first - 1,
        first + count,
        1023,
    ] {
        w32(p.gicd + GICD_SETSPI_NSR, intid);
    }
    let after = pending(p);
    let new = newly_pending(&before, &after);
    eq(
        G,
        "setspi-nsr-outside-range-ignored",
        new.as_slice(),
        &[][..],
        "mbi-ranges: only the guest's MBI SPIs",
    );
}

/// Widths and indices the table does not define (PCI 6.8.2: aligned DWORD
/// or QWORD only): all ones, and a write there changes nothing.
fn table_accesses(m: &Msix) {
    // SAFETY: 1- and 2-byte reads inside the trapped BAR.
    let b = unsafe { core::ptr::read_volatile(m.table as *const u8) };
    // SAFETY: as above.
    let h = unsafe { core::ptr::read_volatile((m.table + 2) as *const u16) };
    eq(
        G,
        "table-narrow-reads-all-ones",
        (b, h),
        (0xff, 0xffff),
        "PCI Local Bus 3.0 6.8.2 (aligned DWORD/QWORD only)",
    );
    // The entry past the last vector (config + one per queue).
    let past = m.table + 16 * m.vectors;
    w32(past, 0);
    eq(
        G,
        "table-index-past-the-end-reads-all-ones",
        r32(past),
        0xffff_ffff,
        "PCI Local Bus 3.0 6.8.2.3 Table Size",
    );
    eq(
        G,
        "entries-reset-masked",
        (r32(m.table + 12), r32(m.table + 28)),
        (1, 1),
        "PCI Local Bus 3.0 6.8.2.9",
    );
}

/// One request served; returns what became newly pending.
fn one_request(p: &Platform, d: &mut Dev, what: &str) -> heapless_list::List {
    let before = pending(p);
    let (o, st) = d.request(T_IN, 0, 512);
    check(
        o == Outcome::Used(513) && st == 0,
        G,
        what,
        format_args!("read {o:?} status {st}"),
        "virtio 1.2 5.2.6",
    );
    let after = pending(p);
    newly_pending(&before, &after)
}

fn vectors(p: &Platform, d: &mut Dev, m: &Msix, first: u32, count: u32) {
    let doorbell = (p.gicd + GICD_SETSPI_NSR) as u64;
    let spi = first + 5;
    m.control(d, MSIX_ENABLE | FUNCTION_MASK);
    m.entry(0, doorbell, first + 4, false);
    m.entry(1, doorbell, spi, false);
    m.control(d, MSIX_ENABLE);
    if !d.init() {
        check(
            false,
            G,
            "init",
            format_args!("device init failed"),
            "virtio 1.2 3.1.1",
        );
        return;
    }
    w16(d.common_base + CONFIG_MSIX_VECTOR, 0);
    w16(d.common_base + QUEUE_SELECT, 0);
    w16(d.common_base + QUEUE_MSIX_VECTOR, 1);
    let qv = crate::io::r16(d.common_base + QUEUE_MSIX_VECTOR);
    eq(G, "queue-vector-kept", qv, 1, "virtio 1.2 4.1.5.1.2");
    w16(d.common_base + QUEUE_MSIX_VECTOR, 7);
    let bad = crate::io::r16(d.common_base + QUEUE_MSIX_VECTOR);
    eq(
        G,
        "vector-past-table-reads-no-vector",
        u32::from(bad),
        NO_VECTOR,
        "virtio 1.2 4.1.5.1.2.1",
    );
    w16(d.common_base + QUEUE_MSIX_VECTOR, 1);

    let new = one_request(p, d, "legit-request-served");
    eq(
        G,
        "legit-vector-pends-its-spi",
        new.as_slice(),
        &[spi][..],
        "PCI 6.8.2; IHI 0069 12.9.30",
    );
    clear_spi(p, spi);

    // Masked: held in the PBA, sent on unmask.
    w32(m.table + 16 + 12, 1);
    let new = one_request(p, d, "masked-request-served");
    let pba = r32(m.pba);
    check(
        new.as_slice().is_empty() && pba & 2 != 0,
        G,
        "masked-vector-sets-pba",
        format_args!("pended {new:?}, PBA {pba:#x}"),
        "PCI Local Bus 3.0 6.8.2.10",
    );
    let before = pending(p);
    w32(m.table + 16 + 12, 0);
    let new = newly_pending(&before, &pending(p));
    let pba = r32(m.pba);
    check(
        new.as_slice() == [spi] && pba == 0,
        G,
        "unmask-sends-pending",
        format_args!("pended {new:?}, PBA {pba:#x}"),
        "PCI Local Bus 3.0 6.8.2.9",
    );
    clear_spi(p, spi);

    // Forged entries: never anything outside the range, never a fault.
    let forged: [(&str, u64, u32); 7] = [
        (
            "forged-address-ispendr",
            (p.gicd + GICD_ISPENDR + 4) as u64,
            0xffff_ffff,
        ),
        ("forged-address-ram", p.ram.0 + 0x1000, spi),
        ("forged-data-uart", doorbell, UART_SPI),
        ("forged-data-intx", doorbell, INTX_SPI),
        ("forged-data-vtimer", doorbell, VTIMER_PPI),
        ("forged-data-sgi", doorbell, 1),
        ("forged-data-past-range", doorbell, first + count),
    ];
    // The word at the forged RAM address must stay as it is.
    let canary = (p.ram.0 + 0x1000) as usize;
    let canary_before = r32(canary);
    for (name, address, data) in forged {
        m.entry(1, address, data, false);
        let new = one_request(p, d, "forged-request-served");
        eq(G, name, new.as_slice(), &[][..], "issue 10: forged vectors");
    }
    eq(
        G,
        "forged-address-ram-untouched",
        r32(canary),
        canary_before,
        "issue 10: forged vectors",
    );

    // NO_VECTOR with MSI-X enabled: no interrupt at all, no INTx either.
    m.entry(1, doorbell, spi, false);
    w16(d.common_base + QUEUE_MSIX_VECTOR, NO_VECTOR as u16);
    let new = one_request(p, d, "no-vector-request-served");
    eq(
        G,
        "no-vector-no-interrupt",
        new.as_slice(),
        &[][..],
        "virtio 1.2 4.1.5.3",
    );
    let isr = r8(d.bar0 + 0x1000);
    eq(
        G,
        "no-vector-no-isr-queue-bit",
        isr & 1,
        0,
        "virtio 1.2 4.1.4.5.1",
    );

    // And the legitimate vector still works after all that.
    w16(d.common_base + QUEUE_MSIX_VECTOR, 1);
    let new = one_request(p, d, "legit-again-served");
    eq(
        G,
        "legit-vector-still-delivers",
        new.as_slice(),
        &[spi][..],
        "PCI 6.8.2; IHI 0069 12.9.30",
    );
    clear_spi(p, spi);
    m.control(d, 0);
}

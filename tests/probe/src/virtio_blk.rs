//! virtio-blk through the modern virtio-pci transport (virtio 1.2, 4.1 and
//! 5.2), driven by hand: the requests a well-behaved driver never sends get
//! the status, or DEVICE_NEEDS_RESET, that the specification and our device
//! promise, and the device serves normal requests again after each.

use crate::dt::Platform;
use crate::io::{r16, r32, r8, w16, w32, w64, w8};
use crate::pci::{self, Bdf, Ecam};
use crate::report::{check, eq};
use crate::{dma, println};

const G: &str = "virtio-blk";

/// Device status bits (2.1).
const ACKNOWLEDGE: u8 = 1;
const DRIVER: u8 = 2;
const DRIVER_OK: u8 = 4;
const FEATURES_OK: u8 = 8;
const NEEDS_RESET: u8 = 0x40;
/// Feature bits (6).
const VERSION_1: u64 = 1 << 32;
const INDIRECT_DESC: u64 = 1 << 28;
/// Descriptor flags (2.7.5).
const NEXT: u16 = 1;
const WRITE: u16 = 2;
const INDIRECT: u16 = 4;
/// Request types and statuses (5.2.6).
pub(crate) const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_GET_ID: u32 = 8;
const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;
/// Common configuration offsets (4.1.4.3).
mod common {
    pub const DEVICE_FEATURE_SELECT: usize = 0x00;
    pub const DEVICE_FEATURE: usize = 0x04;
    pub const DRIVER_FEATURE_SELECT: usize = 0x08;
    pub const DRIVER_FEATURE: usize = 0x0c;
    pub const NUM_QUEUES: usize = 0x12;
    pub const DEVICE_STATUS: usize = 0x14;
    pub const QUEUE_SELECT: usize = 0x16;
    pub const QUEUE_SIZE: usize = 0x18;
    pub const QUEUE_ENABLE: usize = 0x1c;
    pub const QUEUE_NOTIFY_OFF: usize = 0x1e;
    pub const QUEUE_DESC: usize = 0x20;
    pub const QUEUE_DRIVER: usize = 0x28;
    pub const QUEUE_DEVICE: usize = 0x30;
}
/// Queue entries the probe uses.
const QSIZE: u16 = 16;

fn barrier() {
    // SAFETY: a full-system barrier orders ring writes before the notify.
    unsafe { core::arch::asm!("dsb sy") };
}

/// The generic timer's count and frequency.
pub fn now() -> (u64, u64) {
    let (c, f): (u64, u64);
    // SAFETY: reading the counter registers has no side effect.
    unsafe {
        core::arch::asm!("isb", "mrs {}, cntvct_el0", "mrs {}, cntfrq_el0", out(reg) c, out(reg) f)
    };
    (c, f)
}

/// What became of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Returned in the used ring with this length.
    Used(u32),
    /// The device set DEVICE_NEEDS_RESET.
    NeedsReset,
    /// Nothing within the timeout.
    Timeout,
}

pub(crate) struct Dev {
    pub(crate) ecam: Ecam,
    pub(crate) f: Bdf,
    pub(crate) common_base: usize,
    pub(crate) bar0: usize,
    common: usize,
    notify: usize,
    notify_mult: u32,
    device: usize,
    cfg_cap: u16,
    desc: usize,
    avail: usize,
    used: usize,
    /// Scratch buffers: header, data, status, indirect tables.
    buf: usize,
    avail_idx: u16,
    used_seen: u16,
    notify_addr: usize,
}

impl Dev {
    pub(crate) fn find(p: &Platform) -> Option<Dev> {
        let pci_dt = p.pci.as_ref()?;
        let seg = pci::setup(pci_dt);
        let f = seg.find(0x1af4, 0x1042)?;
        let e = seg.ecam;
        let (mut common, mut notify, mut mult, mut device, mut cfg_cap) = (0, 0, 0, 0, 0);
        let mut at = None;
        while let Some(c) = e.find_cap(f.bdf, 0x09, at) {
            at = Some(c);
            let ty = e.read8(f.bdf, c + 3);
            let bar = usize::from(e.read8(f.bdf, c + 4));
            let off = e.read32(f.bdf, c + 8) as usize;
            let base = f.bars.get(bar).map_or(0, |b| b.0 as usize);
            match ty {
                1 => common = base + off,
                2 => {
                    notify = base + off;
                    mult = e.read32(f.bdf, c + 16);
                }
                4 => device = base + off,
                5 => cfg_cap = c,
                _ => {}
            }
        }
        let desc = dma::alloc(4096, 4096)?;
        let avail = dma::alloc(4096, 4096)?;
        let used = dma::alloc(4096, 4096)?;
        let buf = dma::alloc(64 * 1024, 4096)?;
        (common != 0 && notify != 0 && device != 0).then_some(Dev {
            ecam: e,
            f: f.bdf,
            common_base: common,
            bar0: f.bars[0].0 as usize,
            common,
            notify,
            notify_mult: mult,
            device,
            cfg_cap,
            desc,
            avail,
            used,
            buf,
            avail_idx: 0,
            used_seen: 0,
            notify_addr: 0,
        })
    }

    fn status(&self) -> u8 {
        r8(self.common + common::DEVICE_STATUS)
    }

    /// Device initialization (3.1.1) with queue 0 of [`QSIZE`] entries.
    pub(crate) fn init(&mut self) -> bool {
        let c = self.common;
        w8(c + common::DEVICE_STATUS, 0);
        for _ in 0..1000 {
            if self.status() == 0 {
                break;
            }
        }
        w8(c + common::DEVICE_STATUS, ACKNOWLEDGE);
        w8(c + common::DEVICE_STATUS, ACKNOWLEDGE | DRIVER);
        w32(c + common::DEVICE_FEATURE_SELECT, 0);
        let lo = r32(c + common::DEVICE_FEATURE);
        w32(c + common::DEVICE_FEATURE_SELECT, 1);
        let hi = r32(c + common::DEVICE_FEATURE);
        let offered = u64::from(lo) | (u64::from(hi) << 32);
        let want = offered & (VERSION_1 | INDIRECT_DESC);
        w32(c + common::DRIVER_FEATURE_SELECT, 0);
        w32(c + common::DRIVER_FEATURE, want as u32);
        w32(c + common::DRIVER_FEATURE_SELECT, 1);
        w32(c + common::DRIVER_FEATURE, (want >> 32) as u32);
        w8(
            c + common::DEVICE_STATUS,
            ACKNOWLEDGE | DRIVER | FEATURES_OK,
        );
        if self.status() & FEATURES_OK == 0 {
            return false;
        }
        w16(c + common::QUEUE_SELECT, 0);
        if r16(c + common::QUEUE_SIZE) < QSIZE {
            return false;
        }
        w16(c + common::QUEUE_SIZE, QSIZE);
        for a in [self.desc, self.avail, self.used] {
            // SAFETY: the probe's own DMA pages.
            unsafe { core::ptr::write_bytes(a as *mut u8, 0, 4096) };
        }
        w64(c + common::QUEUE_DESC, self.desc as u64);
        w64(c + common::QUEUE_DRIVER, self.avail as u64);
        w64(c + common::QUEUE_DEVICE, self.used as u64);
        w16(c + common::QUEUE_ENABLE, 1);
        let off = r16(c + common::QUEUE_NOTIFY_OFF);
        self.notify_addr = self.notify + usize::from(off) * self.notify_mult as usize;
        self.avail_idx = 0;
        self.used_seen = 0;
        w8(
            c + common::DEVICE_STATUS,
            ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK,
        );
        self.status() & DRIVER_OK != 0
    }

    /// Writes descriptor `i` of the table at `table`.
    fn desc_at(table: usize, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let d = table + 16 * usize::from(i);
        w64(d, addr);
        w32(d + 8, len);
        w16(d + 12, flags);
        w16(d + 14, next);
    }

    /// Publishes `head` (any value: bad ones included) and notifies.
    fn publish(&mut self, head: u16) {
        w16(
            self.avail + 4 + 2 * usize::from(self.avail_idx % QSIZE),
            head,
        );
        self.avail_idx = self.avail_idx.wrapping_add(1);
        barrier();
        w16(self.avail + 2, self.avail_idx);
        barrier();
        w16(self.notify_addr, 0);
    }

    /// Waits for the next used element (or NEEDS_RESET, or 1 s).
    fn wait(&mut self) -> Outcome {
        let (start, freq) = now();
        loop {
            barrier();
            if r16(self.used + 2) != self.used_seen {
                let e = self.used + 4 + 8 * usize::from(self.used_seen % QSIZE);
                self.used_seen = self.used_seen.wrapping_add(1);
                return Outcome::Used(r32(e + 4));
            }
            if self.status() & NEEDS_RESET != 0 {
                return Outcome::NeedsReset;
            }
            if now().0.wrapping_sub(start) > freq {
                return Outcome::Timeout;
            }
        }
    }

    /// Writes `descs` (address, length, flags, next) into the table from
    /// index 0, publishes head 0 and waits for the outcome.
    fn chain(&mut self, descs: &[(u64, u32, u16, u16)]) -> Outcome {
        for (i, &(addr, len, flags, next)) in (0u16..).zip(descs) {
            Self::desc_at(self.desc, i, addr, len, flags, next);
        }
        self.publish(0);
        self.wait()
    }

    fn hdr(&self) -> usize {
        self.buf
    }
    fn data(&self) -> usize {
        self.buf + 4096
    }
    fn st(&self) -> usize {
        self.buf + 512
    }
    fn indirect(&self) -> usize {
        self.buf + 8192
    }

    fn set_header(&self, ty: u32, sector: u64) {
        w32(self.hdr(), ty);
        w32(self.hdr() + 4, 0);
        w64(self.hdr() + 8, sector);
        w8(self.st(), 0xff);
    }

    /// A three-part request: header, `len` data bytes (device-writable for
    /// reads), status. Returns the outcome and the status byte.
    pub(crate) fn request(&mut self, ty: u32, sector: u64, len: u32) -> (Outcome, u8) {
        self.set_header(ty, sector);
        let dw = if ty == T_OUT { 0 } else { WRITE };
        Self::desc_at(self.desc, 0, self.hdr() as u64, 16, NEXT, 1);
        Self::desc_at(self.desc, 1, self.data() as u64, len, NEXT | dw, 2);
        Self::desc_at(self.desc, 2, self.st() as u64, 1, WRITE, 0);
        self.publish(0);
        (self.wait(), r8(self.st()))
    }

    /// Queue 0's notify address (after [`Dev::init`]).
    pub(crate) fn notify_addr(&self) -> usize {
        self.notify_addr
    }

    fn capacity_sectors(&self) -> u64 {
        u64::from(r32(self.device)) | (u64::from(r32(self.device + 4)) << 32)
    }
}

/// Checks that a chain got NEEDS_RESET, then resets and re-initializes the
/// device and checks a normal read works again.
fn expect_needs_reset(d: &mut Dev, name: &str, got: Outcome, spec: &str) {
    eq(G, name, got, Outcome::NeedsReset, spec);
    let ok = d.init();
    let (o, st) = if ok {
        d.request(T_IN, 0, 512)
    } else {
        (Outcome::Timeout, 0xff)
    };
    check(
        ok && o == Outcome::Used(513) && st == S_OK,
        G,
        "serves-again",
        format_args!("after {name}: init {ok}, read {o:?} status {st}"),
        "virtio 1.2 2.1.2, 2.4",
    );
}

/// Runs the group.
pub fn run(p: &Platform) {
    let Some(mut d) = Dev::find(p) else {
        check(
            false,
            G,
            "found",
            format_args!("no 1af4:1042 on the segment"),
            "virtio 1.2 4.1.2",
        );
        return;
    };
    check(
        true,
        G,
        "found",
        format_args!("at {}", d.f),
        "virtio 1.2 4.1.2",
    );
    let ok = d.init();
    check(
        ok,
        G,
        "init",
        format_args!("status {:#x}", d.status()),
        "virtio 1.2 3.1.1",
    );
    if !ok {
        return;
    }
    let cap = d.capacity_sectors();
    println!("PROBE-INFO virtio-blk capacity {cap} sectors");

    // Well-formed requests.
    let (o, st) = d.request(T_IN, 0, 512);
    eq(
        G,
        "read",
        (o, st),
        (Outcome::Used(513), S_OK),
        "virtio 1.2 5.2.6",
    );
    for i in 0..1024 {
        w8(d.data() + i, (i as u8).wrapping_mul(7) ^ 0x5a);
    }
    let (o, st) = d.request(T_OUT, 8, 1024);
    eq(
        G,
        "write",
        (o, st),
        (Outcome::Used(1), S_OK),
        "virtio 1.2 5.2.6",
    );
    for i in 0..1024 {
        w8(d.data() + i, 0);
    }
    let (o, st) = d.request(T_IN, 8, 1024);
    let same = (0..1024).all(|i| r8(d.data() + i) == (i as u8).wrapping_mul(7) ^ 0x5a);
    check(
        o == Outcome::Used(1025) && st == S_OK && same,
        G,
        "read-back",
        format_args!("{o:?} status {st} data matches {same}"),
        "virtio 1.2 5.2.6",
    );
    let (o, st) = d.request(T_GET_ID, 0, 20);
    eq(
        G,
        "get-id",
        (o, st),
        (Outcome::Used(21), S_OK),
        "virtio 1.2 5.2.6",
    );

    // Bad requests answered with a status.
    let (o, st) = d.request(0x1234, 0, 512);
    eq(
        G,
        "unknown-type-unsupp",
        (o, st),
        (Outcome::Used(1), S_UNSUPP),
        "virtio 1.2 5.2.6.1",
    );
    let (o, st) = d.request(T_IN, cap, 512);
    eq(
        G,
        "read-beyond-capacity-ioerr",
        (o, st),
        (Outcome::Used(1), S_IOERR),
        "virtio 1.2 5.2.6.1",
    );
    let (o, st) = d.request(T_IN, cap - 1, 1024);
    eq(
        G,
        "read-across-capacity-ioerr",
        (o, st),
        (Outcome::Used(1), S_IOERR),
        "virtio 1.2 5.2.6.1",
    );
    let (o, st) = d.request(T_IN, u64::MAX, 512);
    eq(
        G,
        "sector-overflow-ioerr",
        (o, st),
        (Outcome::Used(1), S_IOERR),
        "virtio 1.2 5.2.6.1",
    );
    let (o, st) = d.request(T_IN, 0, 100);
    eq(
        G,
        "partial-sector-ioerr",
        (o, st),
        (Outcome::Used(1), S_IOERR),
        "virtio 1.2 5.2.6",
    );
    let (o, st) = d.request(T_OUT, 0, 0);
    eq(
        G,
        "empty-write-answered",
        (o, st),
        (Outcome::Used(1), S_OK),
        "virtio 1.2 5.2.6",
    );
    // Header shorter than 16 bytes.
    d.set_header(T_IN, 0);
    let o = d.chain(&[
        (d.hdr() as u64, 8, NEXT, 1),
        (d.data() as u64, 512, NEXT | WRITE, 2),
        (d.st() as u64, 1, WRITE, 0),
    ]);
    let st = r8(d.st());
    eq(
        G,
        "short-header-ioerr",
        (o, st),
        (Outcome::Used(1), S_IOERR),
        "virtio 1.2 5.2.6",
    );
    // Header split over two descriptors: legal (2.7.4 no framing).
    d.set_header(T_IN, 0);
    let o = d.chain(&[
        (d.hdr() as u64, 4, NEXT, 1),
        (d.hdr() as u64 + 4, 12, NEXT, 2),
        (d.data() as u64, 512, NEXT | WRITE, 3),
        (d.st() as u64, 1, WRITE, 0),
    ]);
    let st = r8(d.st());
    eq(
        G,
        "split-header-ok",
        (o, st),
        (Outcome::Used(513), S_OK),
        "virtio 1.2 2.7.4",
    );
    // Data and status in one writable buffer: the status is its last byte.
    d.set_header(T_IN, 0);
    w8(d.data() + 512, 0xff);
    let o = d.chain(&[
        (d.hdr() as u64, 16, NEXT, 1),
        (d.data() as u64, 513, WRITE, 0),
    ]);
    let st = r8(d.data() + 512);
    eq(
        G,
        "status-in-data-buffer-ok",
        (o, st),
        (Outcome::Used(513), S_OK),
        "virtio 1.2 2.7.4",
    );
    // No writable byte for the status: returned unanswered.
    d.set_header(T_IN, 0);
    let o = d.chain(&[(d.hdr() as u64, 16, 0, 0)]);
    check(
        o == Outcome::Used(0) && r8(d.st()) == 0xff,
        G,
        "no-status-byte-used-0",
        format_args!("{o:?}"),
        "virtio 1.2 2.7.8",
    );

    // Chains that break the virtqueue rules: DEVICE_NEEDS_RESET.
    let ram_end = p.ram.0 + p.ram.1;
    d.set_header(T_IN, 0);
    let o = d.chain(&[
        (d.hdr() as u64, 16, NEXT, 1),
        (ram_end, 512, NEXT | WRITE, 2),
        (d.st() as u64, 1, WRITE, 0),
    ]);
    expect_needs_reset(&mut d, "buffer-outside-ram", o, "virtio 1.2 2.1.2");
    d.set_header(T_IN, 0);
    let o = d.chain(&[
        (d.hdr() as u64, 16, NEXT, 1),
        (ram_end - 256, 512, NEXT | WRITE, 2),
        (d.st() as u64, 1, WRITE, 0),
    ]);
    expect_needs_reset(&mut d, "buffer-straddles-ram-end", o, "virtio 1.2 2.1.2");
    d.set_header(T_IN, 0);
    let o = d.chain(&[
        (d.hdr() as u64, 16, NEXT, 1),
        (p.gicd as u64, 512, NEXT | WRITE, 2),
        (d.st() as u64, 1, WRITE, 0),
    ]);
    expect_needs_reset(&mut d, "buffer-in-mmio", o, "virtio 1.2 2.1.2");
    let o = d.chain(&[(d.hdr() as u64, 16, NEXT, 1), (d.hdr() as u64, 16, NEXT, 0)]);
    expect_needs_reset(&mut d, "descriptor-loop", o, "virtio 1.2 2.7.5.2");
    let o = d.chain(&[(d.hdr() as u64, 16, NEXT, 200)]);
    expect_needs_reset(&mut d, "next-out-of-range", o, "virtio 1.2 2.7.5");
    d.set_header(T_IN, 0);
    let o = d.chain(&[
        (d.hdr() as u64, 16, NEXT, 1),
        (d.st() as u64, 1, NEXT | WRITE, 2),
        (d.data() as u64, 512, 0, 0),
    ]);
    expect_needs_reset(&mut d, "readable-after-writable", o, "virtio 1.2 2.7.4.2");
    d.publish(QSIZE + 3);
    let o = d.wait();
    expect_needs_reset(&mut d, "head-out-of-range", o, "virtio 1.2 2.7.6");
    // avail_idx more than queue_size ahead of the device.
    d.avail_idx = d.avail_idx.wrapping_add(QSIZE + 1);
    barrier();
    w16(d.avail + 2, d.avail_idx);
    barrier();
    w16(d.notify_addr, 0);
    let o = d.wait();
    expect_needs_reset(&mut d, "avail-idx-too-far", o, "virtio 1.2 2.7.6");
    // Indirect tables: too long, nested, with NEXT.
    let it = d.indirect();
    for i in 0..300u16 {
        Dev::desc_at(it, i, d.hdr() as u64, 16, NEXT, i + 1);
    }
    let o = d.chain(&[(it as u64, 300 * 16, INDIRECT, 0)]);
    expect_needs_reset(&mut d, "indirect-too-long", o, "virtio 1.2 2.7.5.3.1");
    Dev::desc_at(it, 0, it as u64, 32, INDIRECT, 0);
    let o = d.chain(&[(it as u64, 16, INDIRECT, 0)]);
    expect_needs_reset(&mut d, "indirect-in-indirect", o, "virtio 1.2 2.7.5.3.1");
    let o = d.chain(&[(it as u64, 16, INDIRECT | NEXT, 1)]);
    expect_needs_reset(&mut d, "indirect-with-next", o, "virtio 1.2 2.7.5.3.1");
    let o = d.chain(&[(it as u64, 24, INDIRECT, 0)]);
    expect_needs_reset(
        &mut d,
        "indirect-length-not-multiple",
        o,
        "virtio 1.2 2.7.5.3.1",
    );
    let o = d.chain(&[
        (d.hdr() as u64, u32::MAX, NEXT, 1),
        (u64::MAX - 8, 512, WRITE, 0),
    ]);
    expect_needs_reset(&mut d, "address-overflow", o, "virtio 1.2 2.7.5");
    // A well-formed indirect request works.
    d.set_header(T_IN, 0);
    Dev::desc_at(it, 0, d.hdr() as u64, 16, NEXT, 1);
    Dev::desc_at(it, 1, d.data() as u64, 512, NEXT | WRITE, 2);
    Dev::desc_at(it, 2, d.st() as u64, 1, WRITE, 0);
    let o = d.chain(&[(it as u64, 48, INDIRECT, 0)]);
    let st = r8(d.st());
    eq(
        G,
        "indirect-read",
        (o, st),
        (Outcome::Used(513), S_OK),
        "virtio 1.2 2.7.5.3",
    );

    // Transport registers.
    let c = d.common;
    let nq = r16(c + common::NUM_QUEUES);
    w16(c + common::QUEUE_SELECT, nq);
    let size = r16(c + common::QUEUE_SIZE);
    w16(c + common::QUEUE_ENABLE, 1);
    let en = r16(c + common::QUEUE_ENABLE);
    w16(c + common::QUEUE_SELECT, 0);
    check(
        size == 0 && en == 0,
        G,
        "queue-select-out-of-range",
        format_args!("queue {nq} of {nq}: size {size} enable {en}"),
        "virtio 1.2 4.1.4.3.2",
    );
    w16(d.notify + 7 * d.notify_mult as usize, 7);
    let st_after = d.status();
    let (o, st) = d.request(T_IN, 0, 512);
    check(
        st_after & NEEDS_RESET == 0 && o == Outcome::Used(513) && st == S_OK,
        G,
        "notify-out-of-range-ignored",
        format_args!("status {st_after:#x}, then read {o:?} {st}"),
        "virtio 1.2 4.1.4.4",
    );
    if d.cfg_cap != 0 {
        let e = d.ecam;
        let cap = d.cfg_cap;
        // virtio_pci_cfg_cap: cap.bar at +4, cap.offset at +8, cap.length at +12, data at +16.
        e.write8(d.f, cap + 4, 0);
        e.write32(d.f, cap + 8, common::DEVICE_STATUS as u32);
        e.write32(d.f, cap + 12, 1);
        let through = e.read32(d.f, cap + 16) & 0xff;
        check(
            through == u32::from(d.status()),
            G,
            "pci-cfg-window-read",
            format_args!("device_status {through:#x}"),
            "virtio 1.2 4.1.4.9",
        );
        e.write32(d.f, cap + 12, 8);
        let long = e.read32(d.f, cap + 16);
        e.write32(d.f, cap + 16, 0);
        let st_now = d.status();
        check(
            long == 0 && st_now & DRIVER_OK != 0,
            G,
            "pci-cfg-window-longer-than-data",
            format_args!("read {long:#x}, status after a write {st_now:#x}"),
            "virtio 1.2 4.1.4.9.1",
        );
        e.write32(d.f, cap + 12, 4);
        e.write32(d.f, cap + 8, 0x3ffe);
        let edge = e.read32(d.f, cap + 16);
        check(
            edge == 0,
            G,
            "pci-cfg-window-past-bar",
            format_args!("read {edge:#x}"),
            "virtio 1.2 4.1.4.9.1",
        );
    }
    let (o, st) = d.request(T_IN, 0, 512);
    eq(
        G,
        "serves-at-end",
        (o, st),
        (Outcome::Used(513), S_OK),
        "virtio 1.2 5.2.6",
    );
}

/// Requests that stay in flight (the e2e test throttles the host disk): every
/// cycle publishes a full queue of reads, then the same heads again (the
/// device holds at most a queue's worth), notifies many times, and resets the
/// device with the reads still in flight. The reset completes (device_status
/// reads 0) only once the host disk has finished with the guest's pages
/// (virtio 1.2 2.4.1), and the hypervisor's heap must not grow with the
/// number of cycles (`flood=N` on the command line, default 4): the e2e test
/// compares the peak it reports at shutdown for 1 and for N cycles.
pub fn flood(p: &Platform) {
    const F: &str = "virtio-blk-flood";
    let cycles: u32 = p
        .bootargs_value("flood")
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let Some(mut d) = Dev::find(p) else {
        check(
            false,
            F,
            "found",
            format_args!("no 1af4:1042 on the segment"),
            "virtio 1.2 4.1.2",
        );
        return;
    };
    let Some(tables) = dma::alloc(usize::from(QSIZE) * 64, 4096) else {
        check(false, F, "memory", format_args!("no DMA memory left"), "-");
        return;
    };
    let Some(bufs) = dma::alloc(usize::from(QSIZE) * 4096, 4096) else {
        check(false, F, "memory", format_args!("no DMA memory left"), "-");
        return;
    };
    let (mut published, mut inits, mut pending_seen, mut completed, mut needs_reset) =
        (0u32, 0u32, 0u32, 0u32, 0u32);
    for _ in 0..cycles {
        if !d.init() {
            break;
        }
        inits += 1;
        for _round in 0..2 {
            for h in 0..QSIZE {
                // Each head: one indirect descriptor naming the header, 2 KiB
                // of data and the status, all in the head's own page.
                let t = tables + 64 * usize::from(h);
                let hdr = bufs + 4096 * usize::from(h);
                w32(hdr, T_IN);
                w32(hdr + 4, 0);
                w64(hdr + 8, u64::from(h) * 8);
                Dev::desc_at(t, 0, hdr as u64, 16, NEXT, 1);
                Dev::desc_at(t, 1, (hdr + 512) as u64, 2048, NEXT | WRITE, 2);
                Dev::desc_at(t, 2, (hdr + 4000) as u64, 1, WRITE, 0);
                Dev::desc_at(d.desc, h, t as u64, 48, INDIRECT, 0);
                d.publish(h);
                published += 1;
            }
        }
        for _ in 0..200 {
            w16(d.notify_addr, 0);
        }
        // The second round is more than a queue ahead of a device that could
        // not take the first (2.7.6): DEVICE_NEEDS_RESET is a right answer too.
        if d.status() & NEEDS_RESET != 0 {
            needs_reset += 1;
        }
        w8(d.common + common::DEVICE_STATUS, 0);
        if d.status() != 0 {
            pending_seen += 1;
        }
        let (start, freq) = now();
        while now().0.wrapping_sub(start) < 10 * freq {
            if d.status() == 0 {
                completed += 1;
                break;
            }
        }
    }
    check(
        inits == cycles && completed == cycles,
        F,
        "resets-complete",
        format_args!(
            "{cycles} cycles, {published} requests published, {completed} resets completed within 10 s, {needs_reset} cycles ended in DEVICE_NEEDS_RESET"
        ),
        "virtio 1.2 2.4.1",
    );
    check(
        pending_seen == cycles,
        F,
        "reset-waits-for-requests-in-flight",
        format_args!("device_status read non-zero right after the reset in {pending_seen} of {cycles} cycles"),
        "virtio 1.2 2.4.1, 4.1.4.3.2",
    );
}

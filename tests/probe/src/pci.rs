//! ECAM config access and a firmware-style set-up of the synthetic segment:
//! bus numbers depth-first, BARs from the 32-bit aperture, bridge windows
//! around them (PCI Express Base 7.2.2 ECAM; PCI-to-PCI Bridge 3.2.5).

use crate::dt::Pci;

/// Config-space offsets (PCI Local Bus 6.1, PCI-to-PCI Bridge 3.2).
pub mod reg {
    pub const VENDOR_ID: u16 = 0x00;
    pub const COMMAND: u16 = 0x04;
    pub const HEADER_TYPE: u16 = 0x0e;
    pub const BAR0: u16 = 0x10;
    pub const CAP_PTR: u16 = 0x34;
    pub const PRIMARY_BUS: u16 = 0x18;
    pub const MEMORY_BASE: u16 = 0x20;
    pub const PREF_MEMORY_BASE: u16 = 0x24;
    pub const PREF_BASE_UPPER: u16 = 0x28;
    pub const PREF_LIMIT_UPPER: u16 = 0x2c;
}
/// COMMAND: Memory Space Enable, Bus Master Enable.
pub const CMD_MEM: u16 = 1 << 1;
pub const CMD_MASTER: u16 = 1 << 2;

/// A function's address on the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bdf {
    pub bus: u8,
    pub dev: u8,
    pub func: u8,
}

impl core::fmt::Display for Bdf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.dev, self.func)
    }
}

/// Config space through ECAM.
#[derive(Debug, Clone, Copy)]
pub struct Ecam {
    base: usize,
    first_bus: u8,
    last_bus: u8,
}

impl Ecam {
    pub fn new(pci: &Pci) -> Self {
        Ecam {
            base: pci.ecam,
            first_bus: pci.buses.0,
            last_bus: pci.buses.1,
        }
    }

    fn addr(&self, f: Bdf, off: u16) -> Option<usize> {
        if f.bus < self.first_bus
            || f.bus > self.last_bus
            || f.dev > 31
            || f.func > 7
            || off > 0xfff
        {
            return None;
        }
        Some(
            self.base
                + (usize::from(f.bus - self.first_bus) << 20)
                + (usize::from(f.dev) << 15)
                + (usize::from(f.func) << 12)
                + usize::from(off),
        )
    }

    pub fn read32(&self, f: Bdf, off: u16) -> u32 {
        // SAFETY: inside the ECAM window the DT names, mapped as Device memory.
        self.addr(f, off & !3).map_or(u32::MAX, |a| unsafe {
            core::ptr::read_volatile(a as *const u32)
        })
    }
    pub fn read16(&self, f: Bdf, off: u16) -> u16 {
        // SAFETY: as for read32, 2-byte aligned.
        self.addr(f, off & !1).map_or(u16::MAX, |a| unsafe {
            core::ptr::read_volatile(a as *const u16)
        })
    }
    pub fn read8(&self, f: Bdf, off: u16) -> u8 {
        // SAFETY: as for read32.
        self.addr(f, off).map_or(u8::MAX, |a| unsafe {
            core::ptr::read_volatile(a as *const u8)
        })
    }
    pub fn write32(&self, f: Bdf, off: u16, v: u32) {
        if let Some(a) = self.addr(f, off & !3) {
            // SAFETY: as for read32.
            unsafe { core::ptr::write_volatile(a as *mut u32, v) }
        }
    }
    pub fn write16(&self, f: Bdf, off: u16, v: u16) {
        if let Some(a) = self.addr(f, off & !1) {
            // SAFETY: as for read16.
            unsafe { core::ptr::write_volatile(a as *mut u16, v) }
        }
    }
    pub fn write8(&self, f: Bdf, off: u16, v: u8) {
        if let Some(a) = self.addr(f, off) {
            // SAFETY: as for read8.
            unsafe { core::ptr::write_volatile(a as *mut u8, v) }
        }
    }

    /// The offset of the first capability with `id` (PCI Local Bus 6.7).
    pub fn find_cap(&self, f: Bdf, id: u8, start_after: Option<u16>) -> Option<u16> {
        let mut at = match start_after {
            Some(p) => u16::from(self.read8(f, p + 1)),
            None => u16::from(self.read8(f, reg::CAP_PTR)),
        } & !3;
        for _ in 0..48 {
            if at < 0x40 {
                return None;
            }
            if self.read8(f, at) == id {
                return Some(at);
            }
            at = u16::from(self.read8(f, at + 1)) & !3;
        }
        None
    }
}

/// An endpoint found and set up.
#[derive(Debug, Clone, Copy)]
pub struct Function {
    pub bdf: Bdf,
    pub vendor: u16,
    pub device: u16,
    /// BAR address and size, by BAR index (a 64-bit BAR at its low index).
    pub bars: [(u64, u64); 6],
}

/// Endpoints the set-up found.
pub struct Segment {
    pub ecam: Ecam,
    pub functions: [Option<Function>; 16],
}

impl Segment {
    /// The first endpoint with this vendor and device ID.
    pub fn find(&self, vendor: u16, device: u16) -> Option<Function> {
        self.functions
            .iter()
            .flatten()
            .find(|f| f.vendor == vendor && f.device == device)
            .copied()
    }
}

struct Alloc {
    next: u64,
    end: u64,
    next_bus: u8,
}

const MIB: u64 = 1 << 20;

/// Numbers the buses, assigns every BAR from the 32-bit aperture and opens
/// the bridges' memory windows (prefetchable windows closed: prefetchable
/// BARs go in the memory window, which PCI-to-PCI Bridge 4.4 allows).
pub fn setup(pci: &Pci) -> Segment {
    let ecam = Ecam::new(pci);
    let mut seg = Segment {
        ecam,
        functions: [None; 16],
    };
    let mut a = Alloc {
        next: pci.mem32.0,
        end: pci.mem32.0 + pci.mem32.1,
        next_bus: pci.buses.0 + 1,
    };
    scan_bus(&mut seg, &mut a, pci.buses.0);
    seg
}

fn scan_bus(seg: &mut Segment, a: &mut Alloc, bus: u8) {
    let e = seg.ecam;
    for dev in 0..32u8 {
        let f0 = Bdf { bus, dev, func: 0 };
        if e.read16(f0, reg::VENDOR_ID) == 0xffff {
            continue;
        }
        let multi = e.read8(f0, reg::HEADER_TYPE) & 0x80 != 0;
        for func in 0..if multi { 8 } else { 1 } {
            let f = Bdf { bus, dev, func };
            let id = e.read32(f, reg::VENDOR_ID);
            if id & 0xffff == 0xffff {
                continue;
            }
            if e.read8(f, reg::HEADER_TYPE) & 0x7f == 1 {
                bridge(seg, a, f);
            } else {
                endpoint(seg, a, f, id);
            }
        }
    }
}

fn bridge(seg: &mut Segment, a: &mut Alloc, f: Bdf) {
    let e = seg.ecam;
    let secondary = a.next_bus;
    a.next_bus = a.next_bus.saturating_add(1);
    // Primary, secondary, subordinate (open until the subtree is numbered).
    e.write32(
        f,
        reg::PRIMARY_BUS,
        u32::from(f.bus) | (u32::from(secondary) << 8) | (0xff << 16),
    );
    a.next = a.next.div_ceil(MIB) * MIB;
    let start = a.next;
    scan_bus(seg, a, secondary);
    let sub = a.next_bus - 1;
    e.write32(
        f,
        reg::PRIMARY_BUS,
        u32::from(f.bus) | (u32::from(secondary) << 8) | (u32::from(sub) << 16),
    );
    a.next = a.next.div_ceil(MIB) * MIB;
    if a.next > start {
        let limit = a.next - 1;
        e.write32(
            f,
            reg::MEMORY_BASE,
            ((start >> 16) as u32 & 0xfff0) | (((limit >> 16) as u32 & 0xfff0) << 16),
        );
    } else {
        e.write32(f, reg::MEMORY_BASE, 0x0000_fff0);
    }
    // Prefetchable window closed (base above limit).
    e.write32(f, reg::PREF_MEMORY_BASE, 0x0000_fff0);
    e.write32(f, reg::PREF_BASE_UPPER, 0);
    e.write32(f, reg::PREF_LIMIT_UPPER, 0);
    e.write16(f, reg::COMMAND, CMD_MEM | CMD_MASTER);
}

fn endpoint(seg: &mut Segment, a: &mut Alloc, f: Bdf, id: u32) {
    let e = seg.ecam;
    let mut bars = [(0u64, 0u64); 6];
    let mut i = 0u16;
    while i < 6 {
        let off = reg::BAR0 + 4 * i;
        let orig = e.read32(f, off);
        let is64 = orig & 1 == 0 && (orig >> 1) & 3 == 2;
        e.write32(f, off, u32::MAX);
        let lo = e.read32(f, off);
        let mut mask = u64::from(lo & !0xf) | if is64 { 0 } else { 0xffff_ffff_0000_0000 };
        if is64 {
            e.write32(f, off + 4, u32::MAX);
            mask |= u64::from(e.read32(f, off + 4)) << 32;
        }
        let size = (!mask).wrapping_add(1);
        if lo & 1 == 0 && lo != 0 && size != 0 {
            let at = a.next.div_ceil(size.max(4096)) * size.max(4096);
            if at + size <= a.end {
                a.next = at + size;
                e.write32(f, off, at as u32);
                if is64 {
                    e.write32(f, off + 4, (at >> 32) as u32);
                }
                if let Some(b) = bars.get_mut(usize::from(i)) {
                    *b = (at, size);
                }
            }
        } else {
            e.write32(f, off, orig);
        }
        i += if is64 { 2 } else { 1 };
    }
    e.write16(f, reg::COMMAND, CMD_MEM | CMD_MASTER);
    if let Some(slot) = seg.functions.iter_mut().find(|s| s.is_none()) {
        *slot = Some(Function {
            bdf: f,
            vendor: id as u16,
            device: (id >> 16) as u16,
            bars,
        });
    }
}

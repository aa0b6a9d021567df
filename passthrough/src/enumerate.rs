//! Host enumeration: walk one host segment from its root bus, depth first
//! through Root Ports and Switches, numbering buses where firmware left them
//! unassigned, and record every function once (IDs, class, header, path of
//! parent bridges, sized BARs, capabilities).
//!
//! Bus numbers are kept when firmware programmed them consistently (as
//! U-Boot's `pci enum` leaves them): a bridge whose Primary Bus is the bus it
//! sits on, whose Secondary Bus is above every bus numbered so far and whose
//! Subordinate Bus is at least its Secondary and within the segment's
//! `bus-range`. Any other bridge is numbered as firmware would: the next free
//! bus as Secondary, the end of the range as Subordinate while the walk goes
//! below, then the highest bus found below (PCI-to-PCI Bridge Architecture
//! 1.2, 3.2.5.3-5).

use crate::access::{read16, read8, ConfigAccess};
use crate::regs::{bar, cap_id, pcie, type0, type1};
use alloc::vec::Vec;
use core::fmt;
use core::ops::RangeInclusive;
use vbus::config::{command, reg, status};
use vbus::Bdf;

/// What a BAR decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarKind {
    /// Memory space (PCI Express Base 6.0, 7.5.1.2.1).
    Memory {
        /// Type 10b: the BAR and the next one hold a 64-bit address.
        is_64bit: bool,
        /// Prefetchable.
        prefetchable: bool,
    },
    /// I/O space: recorded, never assigned or shown to a guest.
    Io,
}

/// A BAR as found: kind, size from the sizing probe, and the address it held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostBar {
    /// BAR index (0..=5; a 64-bit BAR takes `index` and `index + 1`).
    pub index: u8,
    /// What it decodes.
    pub kind: BarKind,
    /// Size in bytes (a power of two).
    pub size: u64,
    /// The PCI bus address it held when enumerated (0 if unassigned).
    pub address: u64,
}

impl HostBar {
    /// Whether this is a memory BAR.
    pub fn is_memory(&self) -> bool {
        matches!(self.kind, BarKind::Memory { .. })
    }

    /// Whether this is a 64-bit memory BAR.
    pub fn is_64bit(&self) -> bool {
        matches!(self.kind, BarKind::Memory { is_64bit: true, .. })
    }

    /// Whether this is a prefetchable memory BAR.
    pub fn is_prefetchable(&self) -> bool {
        matches!(
            self.kind,
            BarKind::Memory {
                prefetchable: true,
                ..
            }
        )
    }

    /// Config-space offset of the BAR's (low) dword.
    pub fn offset(&self) -> u16 {
        reg::BAR0 + 4 * u16::from(self.index)
    }
}

/// A standard capability found in the chain from the Capabilities Pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capability {
    /// Capability ID.
    pub id: u8,
    /// Offset of its header.
    pub offset: u16,
}

/// An extended capability found in the chain from 100h (PCI Express Base 6.0, 7.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtCapability {
    /// Extended capability ID.
    pub id: u16,
    /// Capability Version.
    pub version: u8,
    /// Offset of its header.
    pub offset: u16,
}

/// One host function as enumeration found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundFunction {
    /// Its address.
    pub bdf: Bdf,
    /// Vendor ID.
    pub vendor_id: u16,
    /// Device ID.
    pub device_id: u16,
    /// Revision ID.
    pub revision: u8,
    /// Class code: base class << 16 | sub-class << 8 | programming interface.
    pub class: u32,
    /// Header Type without the Multi-Function bit (0 endpoint, 1 bridge).
    pub header_type: u8,
    /// The Multi-Function bit of function 0 of its device.
    pub multifunction: bool,
    /// Interrupt Pin (0 none, 1 INTA .. 4 INTD).
    pub interrupt_pin: u8,
    /// The bridges between the root bus and this function, root-bus side first.
    pub path: Vec<Bdf>,
    /// Implemented BARs (memory and I/O), in index order.
    pub bars: Vec<HostBar>,
    /// Expansion ROM size in bytes, if implemented.
    pub rom_size: Option<u32>,
    /// Standard capabilities in chain order.
    pub capabilities: Vec<Capability>,
    /// Extended capabilities in chain order.
    pub ext_capabilities: Vec<ExtCapability>,
    /// Device/Port Type of its PCI Express capability (`regs::pcie::TYPE_*`).
    pub pcie_type: Option<u16>,
    /// For a bridge: (secondary, subordinate) as left programmed.
    pub buses: Option<(u8, u8)>,
}

impl FoundFunction {
    /// The offset of the first capability with `id`.
    pub fn capability(&self, id: u8) -> Option<u16> {
        self.capabilities
            .iter()
            .find(|c| c.id == id)
            .map(|c| c.offset)
    }

    /// The offset of the first extended capability with `id`.
    pub fn ext_capability(&self, id: u16) -> Option<u16> {
        self.ext_capabilities
            .iter()
            .find(|c| c.id == id)
            .map(|c| c.offset)
    }

    /// Whether it is a bridge (type-1 header).
    pub fn is_bridge(&self) -> bool {
        self.header_type == 1
    }

    /// The bridge directly above it, `None` on the root bus.
    pub fn parent(&self) -> Option<Bdf> {
        self.path.last().copied()
    }

    /// The memory BAR with this index.
    pub fn bar(&self, index: u8) -> Option<&HostBar> {
        self.bars.iter().find(|b| b.index == index)
    }
}

/// A host segment as enumerated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostTopology {
    /// The root bus (the start of the `bus-range`).
    pub root_bus: u8,
    /// The highest bus number in use.
    pub last_bus: u8,
    /// Every function, depth first (a bridge before what is below it).
    pub functions: Vec<FoundFunction>,
}

impl HostTopology {
    /// The function at `bdf`.
    pub fn get(&self, bdf: Bdf) -> Option<&FoundFunction> {
        self.functions.iter().find(|f| f.bdf == bdf)
    }

    /// The functions directly below bridge `bdf` (`None`: on the root bus).
    pub fn children(&self, bdf: Option<Bdf>) -> impl Iterator<Item = &FoundFunction> {
        self.functions.iter().filter(move |f| f.parent() == bdf)
    }
}

/// Why enumeration stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnumError {
    /// No bus number was left in the `bus-range` for this bridge's secondary bus.
    BusNumbersExhausted {
        /// The bridge.
        bridge: Bdf,
    },
    /// Firmware's numbers for this bridge are too few for what is below it.
    SubordinateTooLow {
        /// The bridge.
        bridge: Bdf,
    },
}

impl fmt::Display for EnumError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnumError::BusNumbersExhausted { bridge } => {
                write!(f, "host {bridge}: no bus number left for its secondary bus")
            }
            EnumError::SubordinateTooLow { bridge } => {
                write!(
                    f,
                    "host {bridge}: firmware's subordinate bus is below a bus found behind it"
                )
            }
        }
    }
}

/// At most this many standard capabilities are followed (48 fit in 40h..FFh).
const MAX_CAPS: usize = 48;
/// At most this many extended capabilities are followed.
const MAX_EXT_CAPS: usize = (4096 - 256) / 4;

/// The standard capability chain of `bdf` (PCI Express Base 6.0, 7.5.1.1.11).
pub fn walk_capabilities<A: ConfigAccess + ?Sized>(a: &mut A, bdf: Bdf) -> Vec<Capability> {
    let mut out = Vec::new();
    if read16(a, bdf, reg::STATUS) & status::CAPABILITIES_LIST == 0 {
        return out;
    }
    let mut at = u16::from(read8(a, bdf, reg::CAPABILITIES_POINTER) & !3);
    while at >= 0x40 && out.len() < MAX_CAPS {
        let header = read16(a, bdf, at);
        out.push(Capability {
            id: header as u8,
            offset: at,
        });
        at = (header >> 8) & 0xfc;
    }
    out
}

/// The extended capability chain of `bdf` from 100h (PCI Express Base 6.0,
/// 7.6.3); null capabilities (ID 0) are followed but not listed.
pub fn walk_ext_capabilities<A: ConfigAccess + ?Sized>(a: &mut A, bdf: Bdf) -> Vec<ExtCapability> {
    let mut out = Vec::new();
    let mut at: u16 = 0x100;
    for _ in 0..MAX_EXT_CAPS {
        let h = a.read32(bdf, at);
        if h == 0 || h == !0 {
            break;
        }
        let id = h as u16;
        if id != 0 {
            out.push(ExtCapability {
                id,
                version: (h >> 16) as u8 & 0xf,
                offset: at,
            });
        }
        let next = (h >> 20) as u16 & 0xffc;
        if next < 0x100 {
            break;
        }
        at = next;
    }
    out
}

/// Sizes the BARs of `bdf` (`count` of them) and its Expansion ROM at
/// `rom_offset`, with memory and I/O decoding off during the probe, and puts
/// every register back as it was.
fn size_bars<A: ConfigAccess + ?Sized>(
    a: &mut A,
    bdf: Bdf,
    count: u8,
    rom_offset: u16,
) -> (Vec<HostBar>, Option<u32>) {
    let cmd = read16(a, bdf, reg::COMMAND);
    let rw1c = u32::from(status::RW1C_ERRORS) << 16;
    let decoding = cmd & (command::IO_SPACE | command::MEMORY_SPACE);
    if decoding != 0 {
        crate::access::write16(a, bdf, reg::COMMAND, cmd & !decoding, rw1c);
    }
    let mut bars = Vec::new();
    let mut i = 0u8;
    while i < count {
        let off = reg::BAR0 + 4 * u16::from(i);
        let orig = a.read32(bdf, off);
        a.write32(bdf, off, !0);
        let probe = a.read32(bdf, off);
        a.write32(bdf, off, orig);
        if probe == 0 || probe == !0 {
            i += 1;
            continue;
        }
        if probe & bar::IO_SPACE != 0 {
            let mut mask = probe & bar::IO_ADDRESS;
            if mask >> 16 == 0 {
                mask |= 0xffff_0000; // a 16-bit I/O decoder
            }
            bars.push(HostBar {
                index: i,
                kind: BarKind::Io,
                size: u64::from((!mask).wrapping_add(1)),
                address: u64::from(orig & bar::IO_ADDRESS),
            });
            i += 1;
            continue;
        }
        let is_64bit = probe & bar::TYPE_MASK == bar::TYPE_64 && i + 1 < count;
        let prefetchable = probe & bar::PREFETCHABLE != 0;
        let (mask, address) = if is_64bit {
            let orig_hi = a.read32(bdf, off + 4);
            a.write32(bdf, off + 4, !0);
            let hi = a.read32(bdf, off + 4);
            a.write32(bdf, off + 4, orig_hi);
            (
                u64::from(hi) << 32 | u64::from(probe & bar::MEM_ADDRESS),
                u64::from(orig_hi) << 32 | u64::from(orig & bar::MEM_ADDRESS),
            )
        } else {
            (
                0xffff_ffff_0000_0000 | u64::from(probe & bar::MEM_ADDRESS),
                u64::from(orig & bar::MEM_ADDRESS),
            )
        };
        let size = (!mask).wrapping_add(1);
        if size != 0 && mask != 0 {
            bars.push(HostBar {
                index: i,
                kind: BarKind::Memory {
                    is_64bit,
                    prefetchable,
                },
                size,
                address,
            });
        }
        i += if is_64bit { 2 } else { 1 };
    }
    let orig = a.read32(bdf, rom_offset);
    a.write32(bdf, rom_offset, bar::ROM_ADDRESS);
    let probe = a.read32(bdf, rom_offset) & bar::ROM_ADDRESS;
    a.write32(bdf, rom_offset, orig);
    let rom = (probe != 0).then(|| (!probe).wrapping_add(1));
    if decoding != 0 {
        crate::access::write16(a, bdf, reg::COMMAND, cmd, rw1c);
    }
    (bars, rom.filter(|s| *s != 0))
}

struct Walker<'a, A: ?Sized> {
    a: &'a mut A,
    last: u8,
    /// The next bus number nothing claims yet.
    next: u16,
    out: Vec<FoundFunction>,
}

impl<A: ConfigAccess + ?Sized> Walker<'_, A> {
    fn function(&mut self, bdf: Bdf, path: &[Bdf]) -> FoundFunction {
        let a = &mut *self.a;
        let id = a.read32(bdf, reg::VENDOR_ID);
        let class_rev = a.read32(bdf, reg::REVISION_ID);
        let header = read8(a, bdf, reg::HEADER_TYPE);
        let header_type = header & 0x7f;
        let (count, rom) = if header_type == 1 {
            (type1::BAR_COUNT, type1::EXPANSION_ROM)
        } else {
            (type0::BAR_COUNT, type0::EXPANSION_ROM)
        };
        let (bars, rom_size) = size_bars(a, bdf, count, rom);
        let capabilities = walk_capabilities(a, bdf);
        let pcie_at = capabilities
            .iter()
            .find(|c| c.id == cap_id::PCIE)
            .map(|c| c.offset);
        let pcie_type =
            pcie_at.map(|p| (read16(a, bdf, p + pcie::CAPABILITIES) >> pcie::TYPE_SHIFT) & 0xf);
        let ext_capabilities = if pcie_at.is_some() {
            walk_ext_capabilities(a, bdf)
        } else {
            Vec::new()
        };
        FoundFunction {
            bdf,
            vendor_id: id as u16,
            device_id: (id >> 16) as u16,
            revision: class_rev as u8,
            class: class_rev >> 8,
            header_type,
            multifunction: header & 0x80 != 0,
            interrupt_pin: read8(a, bdf, reg::INTERRUPT_PIN),
            path: path.to_vec(),
            bars,
            rom_size,
            capabilities,
            ext_capabilities,
            pcie_type,
            buses: None,
        }
    }

    /// Scans `bus`; returns the highest bus number at or below it.
    fn bus(&mut self, bus: u8, path: &mut Vec<Bdf>, only_device_0: bool) -> Result<u8, EnumError> {
        let mut max = bus;
        let devices = if only_device_0 { 1 } else { 32 };
        for dev in 0..devices {
            for func in 0..8u8 {
                let Ok(bdf) = Bdf::new(bus, dev, func) else {
                    break;
                };
                if !crate::access::present(self.a, bdf) {
                    if func == 0 {
                        break;
                    }
                    continue;
                }
                let f = self.function(bdf, path);
                let single = func == 0 && !f.multifunction;
                let downstream = matches!(
                    f.pcie_type,
                    Some(pcie::TYPE_ROOT_PORT | pcie::TYPE_DOWNSTREAM)
                );
                let is_bridge = f.is_bridge();
                let index = self.out.len();
                self.out.push(f);
                if is_bridge {
                    let (sec, sub) = self.bridge(bdf, bus, path, downstream)?;
                    max = max.max(sub);
                    if let Some(f) = self.out.get_mut(index) {
                        f.buses = Some((sec, sub));
                    }
                }
                if single {
                    break;
                }
            }
        }
        Ok(max)
    }

    fn bridge(
        &mut self,
        bdf: Bdf,
        bus: u8,
        path: &mut Vec<Bdf>,
        downstream: bool,
    ) -> Result<(u8, u8), EnumError> {
        let cur = self.a.read32(bdf, type1::PRIMARY_BUS);
        let (pri, sec, sub) = (cur as u8, (cur >> 8) as u8, (cur >> 16) as u8);
        let keep = pri == bus && u16::from(sec) >= self.next && sec <= sub && sub <= self.last;
        if keep {
            self.next = u16::from(sec) + 1;
            path.push(bdf);
            let below = self.bus(sec, path, downstream);
            path.pop();
            if below? > sub {
                return Err(EnumError::SubordinateTooLow { bridge: bdf });
            }
            self.next = self.next.max(u16::from(sub) + 1);
            return Ok((sec, sub));
        }
        let sec = u8::try_from(self.next)
            .ok()
            .filter(|s| *s <= self.last)
            .ok_or(EnumError::BusNumbersExhausted { bridge: bdf })?;
        self.next += 1;
        let keep_latency = cur & 0xff00_0000;
        let numbers =
            |sub: u8| keep_latency | u32::from(bus) | u32::from(sec) << 8 | u32::from(sub) << 16;
        self.a.write32(bdf, type1::PRIMARY_BUS, numbers(self.last));
        path.push(bdf);
        let below = self.bus(sec, path, downstream);
        path.pop();
        let sub = below?;
        self.a.write32(bdf, type1::PRIMARY_BUS, numbers(sub));
        self.next = self.next.max(u16::from(sub) + 1);
        Ok((sec, sub))
    }
}

/// Enumerates the host segment whose `bus-range` is `buses`, numbering
/// bridges' buses where needed (see the module documentation). Writes only
/// bus-number registers of bridges and, transiently, BARs and Command during
/// sizing (restored).
pub fn enumerate<A: ConfigAccess + ?Sized>(
    a: &mut A,
    buses: RangeInclusive<u8>,
) -> Result<HostTopology, EnumError> {
    let root = *buses.start();
    let mut w = Walker {
        a,
        last: *buses.end(),
        next: u16::from(root) + 1,
        out: Vec::new(),
    };
    let last_bus = w.bus(root, &mut Vec::new(), false)?;
    Ok(HostTopology {
        root_bus: root,
        last_bus,
        functions: w.out,
    })
}

#[cfg(test)]
mod tests;

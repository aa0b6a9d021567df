//! The cached layout of a host function to assign ([`HostFunction`]): read
//! once at assignment, before a guest drives the device, and never re-read
//! from it afterwards (a guest-driven device could lie).

use crate::access::{read16, ConfigAccess};
use crate::assign::Assignment;
use crate::enumerate::{Capability, ExtCapability, HostTopology};
use crate::regs::{cap_id, msi, msix, pcie};
use alloc::vec::Vec;
use arch_emu::addr::Pa;
use core::fmt;
use vbus::config::reg;
use vbus::Bdf;

/// A memory BAR of the assigned function, as the host decodes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayoutBar {
    /// BAR index.
    pub index: u8,
    /// Its PCI bus address (what the host BAR register holds).
    pub pci: u64,
    /// Its host physical address (what stage 2 maps).
    pub cpu: Pa,
    /// Size in bytes as the BAR decodes it.
    pub size: u64,
    /// 64-bit BAR.
    pub is_64bit: bool,
    /// Prefetchable.
    pub prefetchable: bool,
}

/// A region inside a BAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarRegion {
    /// BAR index (BIR).
    pub bar: u8,
    /// Offset in the BAR.
    pub offset: u32,
    /// Size in bytes.
    pub size: u64,
}

/// Where MSI-X lives (PCI Express Base 6.0, 7.7.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsixLayout {
    /// Capability offset.
    pub capability: u16,
    /// Number of table entries.
    pub vectors: u16,
    /// The table (16 bytes per entry).
    pub table: BarRegion,
    /// The Pending Bit Array (one bit per entry, in qwords).
    pub pba: BarRegion,
}

/// Where MSI lives and what it can do (PCI Local Bus 3.0, 6.8.1; PCI
/// Express Base 6.0, 7.7.1): the capability's offset and its Message
/// Control as the device reports it at assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsiLayout {
    /// Capability offset.
    pub capability: u16,
    /// Message Control as read at assignment (its capability bits).
    pub control: u16,
}

impl MsiLayout {
    /// 64 Bit Address Capable: a Message Upper Address register.
    pub fn is_64bit(&self) -> bool {
        self.control & msi::control::ADDRESS_64 != 0
    }

    /// Per-Vector Masking Capable: Mask Bits and Pending Bits registers.
    pub fn per_vector_masking(&self) -> bool {
        self.control & msi::control::PER_VECTOR_MASKING != 0
    }

    /// Multiple Message Capable: log2 of the vectors the function asks
    /// for (0..=5; the reserved encodings 110b and 111b read as 5).
    pub fn multiple_message_capable(&self) -> u8 {
        (((self.control & msi::control::MULTIPLE_MESSAGE_CAPABLE) >> 1) as u8).min(5)
    }

    /// Message Data's offset in config space.
    pub fn data(&self) -> u16 {
        self.capability
            + if self.is_64bit() {
                msi::MESSAGE_DATA_64
            } else {
                msi::MESSAGE_DATA_32
            }
    }

    /// Mask Bits' offset (with Per-Vector Masking).
    pub fn mask_bits(&self) -> Option<u16> {
        self.per_vector_masking().then(|| {
            self.capability
                + if self.is_64bit() {
                    msi::MASK_BITS_64
                } else {
                    msi::MASK_BITS_32
                }
        })
    }

    /// Pending Bits' offset (with Per-Vector Masking).
    pub fn pending_bits(&self) -> Option<u16> {
        self.mask_bits().map(|m| m + 4)
    }

    /// The capability's length in bytes: 10, 14, 20 or 24 (6.8.1).
    pub fn capability_len(&self) -> u16 {
        match self.pending_bits() {
            Some(p) => p + 4 - self.capability,
            None => self.data() + 2 - self.capability,
        }
    }
}

/// The INTx pin as it reaches the root bus: look `(root, pin)` up in the
/// host bridge's `interrupt-map` (which swizzles by `root`'s device number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntxRoute {
    /// The function's ancestor on the root bus (itself when it is on it).
    pub root: Bdf,
    /// The pin at `root` (1 = INTA .. 4 = INTD).
    pub pin: u8,
}

/// Swizzles `pin` of the function at `bdf` up through the bridges of `path`
/// (root-bus side first): pin' = ((pin - 1 + device) mod 4) + 1 per hop, with
/// the device number of the function below the bridge (PCI Express Base 6.0,
/// 2.2.8.1; PCI-to-PCI Bridge Architecture 1.2, 9.1). `None` without a pin.
pub fn swizzle(bdf: Bdf, pin: u8, path: &[Bdf]) -> Option<IntxRoute> {
    if !(1..=4).contains(&pin) {
        return None;
    }
    let (mut at, mut pin) = (bdf, pin);
    for bridge in path.iter().rev() {
        pin = ((pin - 1 + at.dev() % 4) % 4) + 1;
        at = *bridge;
    }
    Some(IntxRoute { root: at, pin })
}

/// The cached layout of a host function to assign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFunction {
    /// Its host address.
    pub bdf: Bdf,
    /// Vendor ID.
    pub vendor_id: u16,
    /// Device ID.
    pub device_id: u16,
    /// Revision ID.
    pub revision: u8,
    /// Class code (24 bits).
    pub class: u32,
    /// Memory BARs with their host addresses.
    pub bars: Vec<LayoutBar>,
    /// Indexes of I/O BARs (never shown to a guest).
    pub io_bars: Vec<u8>,
    /// Expansion ROM size (never shown to a guest).
    pub rom_size: Option<u32>,
    /// Standard capabilities, chain order.
    pub capabilities: Vec<Capability>,
    /// Extended capabilities, chain order.
    pub ext_capabilities: Vec<ExtCapability>,
    /// MSI-X table and PBA, if it has MSI-X.
    pub msix: Option<MsixLayout>,
    /// Its MSI capability, if it has one.
    pub msi: Option<MsiLayout>,
    /// Interrupt Pin.
    pub interrupt_pin: u8,
    /// INTx routed to the root bus.
    pub intx: Option<IntxRoute>,
    /// Offset of its PCI Express capability.
    pub pcie_capability: Option<u16>,
    /// Function Level Reset Capability (PCI Express Base 6.0, 7.5.3.3).
    pub flr: bool,
    /// The bridge whose Secondary Bus Reset resets it (`None` on the root bus).
    pub parent_bridge: Option<Bdf>,
    /// Device Control as the host left it (restored after a reset).
    pub device_control: u16,
    /// Link Control as the host left it (restored after a reset).
    pub link_control: u16,
}

/// Why a function cannot be assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutError {
    /// Enumeration did not find it.
    NotFound(Bdf),
    /// It is a bridge.
    Bridge(Bdf),
    /// Its memory BAR `bar` has no address in the assignment.
    Unassigned {
        /// The function.
        bdf: Bdf,
        /// The BAR.
        bar: u8,
    },
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutError::NotFound(b) => write!(f, "host {b}: no such function"),
            LayoutError::Bridge(b) => write!(f, "host {b}: a bridge cannot be assigned"),
            LayoutError::Unassigned { bdf, bar } => write!(f, "host {bdf} BAR{bar}: not assigned"),
        }
    }
}

impl HostFunction {
    /// Reads the layout of `bdf` from the host, after [`crate::assign`].
    pub fn capture<A: ConfigAccess + ?Sized>(
        a: &mut A,
        t: &HostTopology,
        assignment: &Assignment,
        bdf: Bdf,
    ) -> Result<HostFunction, LayoutError> {
        let f = t.get(bdf).ok_or(LayoutError::NotFound(bdf))?;
        if f.is_bridge() {
            return Err(LayoutError::Bridge(bdf));
        }
        let mut bars = Vec::new();
        for b in f.bars.iter().filter(|b| b.is_memory()) {
            let x = assignment
                .bar(bdf, b.index)
                .ok_or(LayoutError::Unassigned { bdf, bar: b.index })?;
            bars.push(LayoutBar {
                index: b.index,
                pci: x.pci,
                cpu: x.cpu,
                size: b.size,
                is_64bit: b.is_64bit(),
                prefetchable: b.is_prefetchable(),
            });
        }
        let pcie_capability = f.capability(cap_id::PCIE);
        let (flr, device_control, link_control) = match pcie_capability {
            Some(p) => (
                a.read32(bdf, p + pcie::DEVICE_CAPABILITIES) & pcie::DEVCAP_FLR != 0,
                read16(a, bdf, p + pcie::DEVICE_CONTROL) & !pcie::DEVCTL_INITIATE_FLR,
                read16(a, bdf, p + pcie::LINK_CONTROL),
            ),
            None => (false, 0, 0),
        };
        let msix = f.capability(cap_id::MSIX).map(|at| {
            let vectors = (read16(a, bdf, at + msix::MESSAGE_CONTROL) & 0x7ff) + 1;
            let table = a.read32(bdf, at + msix::TABLE);
            let pba = a.read32(bdf, at + msix::PBA);
            MsixLayout {
                capability: at,
                vectors,
                table: BarRegion {
                    bar: (table & 7) as u8,
                    offset: table & !7,
                    size: u64::from(vectors) * msix::ENTRY_SIZE,
                },
                pba: BarRegion {
                    bar: (pba & 7) as u8,
                    offset: pba & !7,
                    size: u64::from(vectors).div_ceil(64) * 8,
                },
            }
        });
        let msi = f.capability(cap_id::MSI).map(|at| MsiLayout {
            capability: at,
            control: read16(a, bdf, at + msi::MESSAGE_CONTROL),
        });
        Ok(HostFunction {
            bdf,
            vendor_id: f.vendor_id,
            device_id: f.device_id,
            revision: f.revision,
            class: f.class,
            bars,
            io_bars: f
                .bars
                .iter()
                .filter(|b| !b.is_memory())
                .map(|b| b.index)
                .collect(),
            rom_size: f.rom_size,
            capabilities: f.capabilities.clone(),
            ext_capabilities: f.ext_capabilities.clone(),
            msix,
            msi,
            interrupt_pin: f.interrupt_pin,
            intx: swizzle(bdf, f.interrupt_pin, &f.path),
            pcie_capability,
            flr,
            parent_bridge: f.parent(),
            device_control,
            link_control,
        })
    }

    /// The memory BAR covering config offset `offset` (its low or, for a
    /// 64-bit BAR, its high dword): the BAR and whether `offset` is the high dword.
    pub fn bar_at(&self, offset: u16) -> Option<(&LayoutBar, bool)> {
        let index = offset.checked_sub(reg::BAR0)? / 4;
        self.bars.iter().find_map(|b| {
            let i = u16::from(b.index);
            if i == index {
                Some((b, false))
            } else if b.is_64bit && i + 1 == index {
                Some((b, true))
            } else {
                None
            }
        })
    }
}

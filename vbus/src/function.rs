//! The `PciFunction` trait, the BAR descriptions functions give the segment,
//! and the `Effect`s the segment hands its owner.
//!
//! A guest access reads top-down: trap → route → function → effect → applied.
//! A function never applies a side effect itself and never decides what is
//! decoded: it holds its registers (the Command register and BARs as the guest
//! last programmed them, in its [`ConfigSpace`]) and describes its BARs
//! ([`BarInfo`]); the [`Segment`](crate::Segment) computes what is decoded, as
//! hardware would, and turns every change into [`Effect`]s tagged with the
//! function's stable [`FunctionId`]. The owner (the hypervisor) applies them to
//! stage 2, the vGIC and the host device (crosvm's `mmio_add`/`mmio_remove`).

use crate::config::ConfigSpace;
use crate::msix::{MsiCapabilityStats, MsiMessage, MsixLayout, MsixStats};
use alloc::vec::Vec;
use arch_emu::addr::{Ipa, MemRange, Pa};
use core::fmt;

/// A function's identity on its segment, handed out when it is placed and
/// stable for its life: effects name it, never the bus number the guest
/// happened to program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FunctionId(pub u16);

impl fmt::Display for FunctionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fn{}", self.0)
    }
}

/// Where a BAR's accesses go once it is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarBacking {
    /// Accesses trap to the hypervisor and reach [`PciFunction::bar_read`] /
    /// [`PciFunction::bar_write`] (an emulated device, or an MSI-X table page).
    Trapped,
    /// Stage 2 maps the BAR straight onto this host physical range, of the
    /// BAR's size: accesses never trap.
    Host(Pa),
}

/// A memory BAR as the function implements it (PCI Local Bus 3.0, 6.2.5.1).
///
/// `size` is a power of two of at least 16 bytes; a host-backed BAR is at
/// least 4 KiB so that it never shares a stage-2 page with anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarInfo {
    /// BAR index 0..=5 (a 64-bit BAR takes `index` and `index + 1`).
    pub index: u8,
    /// Size in bytes.
    pub size: u64,
    /// A 64-bit BAR (type 10b).
    pub is_64bit: bool,
    /// Prefetchable.
    pub prefetchable: bool,
    /// Where decoded accesses go.
    pub backing: BarBacking,
}

/// What a function asks of its owner from a config or BAR access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// The guest asked for a Function Level Reset (PCI Express Base 6.0,
    /// 6.6.2): the owner resets the function (and the host device behind it).
    FunctionLevelReset,
    /// The guest wrote an assigned function's MSI-X table (a message or a
    /// Mask Bit) or its MSI capability (Message Control, Address or Data):
    /// the owner re-reads which guest SPI each host vector feeds
    /// ([`PciFunction::host_msi_message`]) and steers its host interrupt.
    MsiMessageWritten,
}

/// A function's legacy interrupt output (PCI Express Base 6.0, 6.1.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intx {
    /// No INTx (Interrupt Pin 0, or the function signals otherwise).
    None,
    /// Emulated: the function drives the level itself.
    Level(bool),
    /// A host device's physical line, delivered hardware-linked: the
    /// physical SPI's INTID.
    Host(u32),
}

/// Something the owner must do. Every kind has an owner that applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// `guest` is now decoded by BAR `bar` of `function`: map it onto the
    /// backing (stage 2 for a host range; routing only for a trapped BAR).
    Map {
        /// The function.
        function: FunctionId,
        /// Its BAR index.
        bar: u8,
        /// The guest range the BAR decodes.
        guest: MemRange<Ipa>,
        /// Where accesses go.
        backing: BarBacking,
        /// A prefetchable BAR (mapped Normal non-cacheable rather than Device).
        prefetchable: bool,
    },
    /// `guest` is no longer decoded by BAR `bar` of `function`: unmap it
    /// (break-before-make and TLB invalidation for a host range).
    Unmap {
        /// The function.
        function: FunctionId,
        /// Its BAR index.
        bar: u8,
        /// The guest range it decoded.
        guest: MemRange<Ipa>,
        /// Where accesses went.
        backing: BarBacking,
    },
    /// Reset `function`: a Secondary Bus Reset of the port above it, or its
    /// own Function Level Reset. The owner calls
    /// [`Segment::reset_function`](crate::Segment::reset_function), which also
    /// resets the host device of an assigned function.
    Reset {
        /// The function.
        function: FunctionId,
    },
    /// `function`'s emulated INTx output changed: `spi` is the guest SPI
    /// (after the swizzle through its root port), `level` its new level.
    Intx {
        /// The function.
        function: FunctionId,
        /// The guest's SPI INTID.
        spi: u32,
        /// The new level.
        level: bool,
    },
    /// `function` sent an MSI that names the guest's doorbell and an SPI of
    /// its MBI range (checked by the segment): the owner makes `spi` pending
    /// (edge), as a write of it to GICD_SETSPI_NSR would.
    Msi {
        /// The function.
        function: FunctionId,
        /// The guest's SPI INTID.
        spi: u32,
    },
    /// The guest wrote `function`'s MSI-X table or MSI capability where its
    /// host device's interrupts arrive elsewhere (an assigned function: through the host
    /// ITS): the owner steers each host vector to the CPU of the vCPU its
    /// SPI is routed to ([`Segment::host_msi_spi`](crate::Segment::host_msi_spi)).
    MsiMessageWritten {
        /// The function.
        function: FunctionId,
    },
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let backing = |b: &BarBacking| match b {
            BarBacking::Trapped => alloc::string::String::from("trapped"),
            BarBacking::Host(pa) => alloc::format!("{pa}"),
        };
        match self {
            Effect::Map {
                function,
                bar,
                guest,
                backing: b,
                prefetchable,
            } => write!(
                f,
                "map {function} bar{bar} {guest} -> {}{}",
                backing(b),
                if *prefetchable { " prefetchable" } else { "" }
            ),
            Effect::Unmap {
                function,
                bar,
                guest,
                backing: b,
            } => write!(f, "unmap {function} bar{bar} {guest} -> {}", backing(b)),
            Effect::Reset { function } => write!(f, "reset {function}"),
            Effect::Intx {
                function,
                spi,
                level,
            } => write!(f, "intx {function} spi {spi} level {}", u8::from(*level)),
            Effect::Msi { function, spi } => write!(f, "msi {function} spi {spi}"),
            Effect::MsiMessageWritten { function } => {
                write!(f, "msi message of {function} written")
            }
        }
    }
}

/// What the segment hands its owner, in the order to apply them (every
/// unmap of a change before its maps).
#[must_use = "every effect has an owner that must apply it"]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    items: Vec<Effect>,
}

impl Effects {
    /// No effects.
    pub const fn new() -> Self {
        Effects { items: Vec::new() }
    }

    /// Records an effect.
    pub fn push(&mut self, effect: Effect) {
        self.items.push(effect);
    }

    /// Appends all of `other`.
    pub fn extend(&mut self, other: Effects) {
        self.items.extend(other.items);
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// How many effects.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// The effects in order.
    pub fn iter(&self) -> impl Iterator<Item = &Effect> {
        self.items.iter()
    }
}

impl IntoIterator for Effects {
    type Item = Effect;
    type IntoIter = alloc::vec::IntoIter<Effect>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.into_iter()
    }
}

/// A whole PCI function as the segment sees it: root port, assigned host
/// function or emulated (virtio) function.
///
/// Contract: [`PciFunction::config_space`] holds, at their standard offsets,
/// the Command register and the BARs (type 0) or bus numbers, windows and
/// Bridge Control (type 1) exactly as the guest last programmed them; the
/// segment computes decoding and routing from them, and looks again only
/// after a write of those bytes (or a reset).
pub trait PciFunction: Send {
    /// A guest read of `size` (1, 2 or 4) bytes at `offset` (0..4096), within one dword.
    fn config_read(&mut self, offset: u16, size: u8) -> u32;

    /// A guest write of `size` (1, 2 or 4) bytes at `offset`, within one dword;
    /// what the function needs its owner to do is appended to `requests`.
    fn config_write(&mut self, offset: u16, size: u8, value: u32, requests: &mut Vec<Request>);

    /// The config space as it stands (see the trait's contract).
    fn config_space(&self) -> &ConfigSpace;

    /// For a bridge: its (secondary, subordinate) bus numbers as programmed
    /// (Secondary and Subordinate Bus Number, 0x19 and 0x1a: only a write of
    /// those bytes changes them). `None` for endpoints.
    fn bridge_bus_range(&self) -> Option<(u8, u8)>;

    /// The memory BARs the function implements (empty for root ports).
    fn bars(&self) -> &[BarInfo];

    /// A guest read of `size` (1, 2, 4 or 8) bytes at `offset` in trapped BAR `bar`.
    fn bar_read(&mut self, bar: u8, offset: u64, size: u8, requests: &mut Vec<Request>) -> u64;

    /// A guest write of `size` (1, 2, 4 or 8) bytes at `offset` in trapped BAR `bar`.
    fn bar_write(
        &mut self,
        bar: u8,
        offset: u64,
        size: u8,
        value: u64,
        requests: &mut Vec<Request>,
    );

    /// Back to the state after a conventional reset (PCI Express Base 6.0,
    /// 6.6.1): registers to their defaults; an assigned function also resets
    /// its host device.
    fn reset(&mut self);

    /// The INTx output now.
    fn intx(&self) -> Intx;

    /// Moves the MSI messages the function sent since the last call to
    /// `out` (PCI Local Bus 3.0, 6.8.2); the segment checks each against the
    /// guest's doorbell and MBI range. Functions without MSI or MSI-X send
    /// none: the default does nothing.
    fn take_msi(&mut self, out: &mut Vec<MsiMessage>) {
        let _ = out;
    }

    /// Pages of host-backed BAR `bar` that trap even so (an assigned
    /// function's MSI-X table and PBA): `(offset, length)` in the BAR, 4 KiB
    /// aligned. Stage 2 leaves them unmapped and the segment routes their
    /// accesses to [`PciFunction::bar_read`] / [`PciFunction::bar_write`].
    /// Functions without any: the default, none.
    fn bar_traps(&self, bar: u8) -> &[(u64, u64)] {
        let _ = bar;
        &[]
    }

    /// An interrupt the host device signalled on `event` (its MSI, through
    /// the host ITS, as the hypervisor programmed the device's vector
    /// `event`): the function sends the guest's message for it, or records
    /// it pending while masked ([`PciFunction::take_msi`] hands it over).
    /// Functions without host MSIs: the default ignores it.
    fn host_msi(&mut self, event: u32) {
        let _ = event;
    }

    /// The guest's message for host event `event` (what
    /// [`PciFunction::host_msi`] would send for it now, masked or not).
    /// Functions without host MSIs: the default, none.
    fn host_msi_message(&self, event: u32) -> Option<MsiMessage> {
        let _ = event;
        None
    }

    /// Counters of the function's MSI-X table, if it emulates one.
    fn msix_stats(&self) -> Option<MsixStats> {
        None
    }

    /// Counters of the function's MSI capability, if it shows one whose
    /// messages it routes (an assigned function's).
    fn msi_capability_stats(&self) -> Option<MsiCapabilityStats> {
        None
    }

    /// Where the function's emulated MSI-X table and PBA lie, if it
    /// emulates them (for exit statistics: an access there is an MSI-X
    /// exit, not a device register's).
    fn msix_layout(&self) -> Option<MsixLayout> {
        None
    }

    /// Finishes work that completed outside a guest access (a host disk's
    /// request done on its interrupt); the segment re-reads [`PciFunction::intx`]
    /// afterwards. Functions with nothing asynchronous do nothing.
    fn poll(&mut self);
}

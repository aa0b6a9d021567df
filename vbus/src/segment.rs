//! The `Segment`: a guest's synthetic PCI segment, its bus tree and ECAM routing.
//!
//! Bus 0 holds the functions placed on it (root ports). Each bridge on bus 0 may
//! have one function below it. Routing follows the bus numbers the guest
//! programmed into the bridges, as on hardware (PCI Express Base 7.2.2 and the
//! PCI-to-PCI Bridge Architecture 3.2.5.3): a configuration request for bus N
//! goes to the bridge whose secondary..=subordinate range holds N; when N is the
//! secondary bus it becomes a type-0 request to the device below, and a PCI
//! Express downstream port passes only device 0 (7.3.1: "Device Number 0 only").
//! Until the guest programs the bus numbers, nothing below a bridge is reachable.

use crate::addr::{Bdf, EcamAddress};
use crate::config::{command, reg, type1};
use crate::decode::{self, Decoded};
use crate::function::{BarBacking, Effect, Effects, FunctionId, Intx, PciFunction, Request};
use crate::msix::MsiMessage;
use alloc::boxed::Box;
use alloc::vec::Vec;
use arch_emu::addr::{Ipa, MemRange};
use arch_emu::vgic::MbiRange;

/// Where the guest's MSIs may go: its GICv3 GICD_SETSPI_NSR doorbell (as
/// the guest sees it) and the SPIs its MBI range reserves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsiTarget {
    /// The doorbell's guest-physical address.
    pub doorbell: Ipa,
    /// The SPI INTIDs a message's data may name.
    pub spis: MbiRange,
}

/// Counters of one function's MSI messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MsiStats {
    /// Messages turned into an [`Effect::Msi`].
    pub delivered: u64,
    /// Messages dropped: an address other than the doorbell, data naming an
    /// INTID outside the MBI range, or no MSI target at all.
    pub forged: u64,
}

/// Counters of accesses that hardware would also have answered with all ones or dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegmentStats {
    /// Config accesses to an address with no function.
    pub absent: u64,
    /// Accesses outside the ECAM window's bus range.
    pub outside_window: u64,
    /// Accesses with a size other than 1, 2, 4 or 8 bytes.
    pub bad_size: u64,
    /// Memory accesses inside an aperture that no BAR decodes (read all ones, write dropped).
    pub unclaimed_mmio: u64,
    /// Memory accesses to a host-backed BAR that trapped anyway (the mapping
    /// was being changed): answered all ones / dropped.
    pub host_bar_traps: u64,
    /// BARs left undecoded because they overlap a BAR decoded before them.
    pub overlapping_bars: u64,
}

/// What a trapped BAR access reaches ([`Segment::bar_region`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarRegion {
    /// The MSI-X table or PBA.
    Msix,
    /// Any other register of the BAR.
    Registers,
}

/// A placed function and what the segment remembers of it.
struct Placed {
    id: FunctionId,
    function: Box<dyn PciFunction>,
    /// The INTx level last reported through an effect (emulated INTx only).
    intx_level: bool,
    /// Its MSI messages' fate.
    msi: MsiStats,
}

struct Slot {
    dev: u8,
    func: u8,
    port: Placed,
    child: Option<Placed>,
    /// The port's secondary bus number when the routing table was last
    /// built (0 for an endpoint).
    secondary: u8,
}

/// Why a function could not be placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopologyError {
    /// Something is already at that device/function on bus 0.
    Occupied(Bdf),
    /// The function to attach below is not a bridge.
    NotABridge(Bdf),
    /// Nothing is at that address on bus 0.
    NoSuchFunction(Bdf),
    /// More functions than a `FunctionId` can name.
    TooManyFunctions,
}

/// A synthetic PCI segment: its bus tree, ECAM routing, memory decoding and
/// memory routing.
///
/// Memory decoding is computed here, once, from the registers the guest
/// programmed, as hardware would: a BAR of a function below a root port is
/// decoded only when the function's Memory Space Enable is set, the port's
/// Memory Space Enable is set, the BAR lies inside one of the port's memory
/// windows (PCI-to-PCI Bridge Architecture 1.2, 4.3) and inside one of the
/// host bridge's apertures. Every change of the decoded set becomes
/// [`Effect::Unmap`]/[`Effect::Map`] pairs for the owner.
pub struct Segment {
    segment: u16,
    /// The root bus number: ECAM offset 0 is this bus (the guest DT's `bus-range` start).
    bus_start: u8,
    bus_count: u16,
    slots: Vec<Slot>,
    next_id: u16,
    apertures: Vec<MemRange<Ipa>>,
    intx_spis: [u32; 4],
    msi_target: Option<MsiTarget>,
    decoded: Vec<Decoded>,
    stats: SegmentStats,
    /// Routing on the root bus: `dev << 3 | func` to slot index + 1 (0: nothing there).
    root_slot: [u16; 256],
    /// Routing below the root bus: bus number to the index + 1 of the first
    /// bridge (in placement order) whose programmed secondary..=subordinate
    /// range holds it (0: no bridge claims it). Rebuilt whenever a bridge's
    /// bus numbers may have changed.
    bus_owner: [u16; 256],
    /// Something decoding depends on changed outside a config write (the
    /// apertures): the next config write re-decodes whatever it writes.
    decode_stale: bool,
}

/// Where a decoded ECAM address lands.
#[derive(Clone, Copy)]
enum Target {
    Bus0(usize),
    Below(usize),
    None,
}

fn all_ones(size: u8) -> u64 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    }
}

impl Segment {
    /// An empty segment whose ECAM window covers `bus_count` buses (1..=256)
    /// starting at bus 0, with no memory apertures (nothing decodes until
    /// [`Segment::set_apertures`]).
    pub fn new(segment: u16, bus_count: u16) -> Self {
        Segment {
            segment,
            bus_start: 0,
            bus_count: bus_count.clamp(1, 256),
            slots: Vec::new(),
            next_id: 0,
            apertures: Vec::new(),
            intx_spis: [0; 4],
            msi_target: None,
            decoded: Vec::new(),
            stats: SegmentStats::default(),
            root_slot: [0; 256],
            bus_owner: [0; 256],
            decode_stale: false,
        }
    }

    /// An empty segment whose root bus is `bus_start` and whose ECAM window
    /// covers buses `bus_start..=bus_end` (the guest DT's `bus-range`): ECAM
    /// offset `(bus - bus_start) << 20` is bus `bus`, as for Linux's
    /// `pci-host-ecam-generic` (PCI Firmware 3.3, 4.1.2: the MCFG base
    /// corresponds to the start bus). An empty range (`bus_end < bus_start`)
    /// is taken as the root bus alone.
    pub fn with_bus_range(segment: u16, bus_start: u8, bus_end: u8) -> Self {
        let count = u16::from(bus_end).saturating_sub(u16::from(bus_start)) + 1;
        Segment {
            bus_start,
            ..Segment::new(segment, count)
        }
    }

    /// The root bus number (where the root ports sit).
    pub fn bus_start(&self) -> u8 {
        self.bus_start
    }

    /// The bus number an ECAM bus offset addresses, if it is a bus number.
    fn bus_at(&self, bus_offset: u8) -> u16 {
        u16::from(self.bus_start) + u16::from(bus_offset)
    }

    /// The host bridge's memory apertures (guest physical): the only ranges
    /// the segment claims, and the only ones a BAR may be decoded in.
    pub fn set_apertures(&mut self, apertures: &[MemRange<Ipa>]) {
        self.apertures = apertures.to_vec();
        self.decode_stale = true;
    }

    /// The guest SPI INTIDs of INTA..INTD at the host bridge, before the swizzle.
    pub fn set_intx_spis(&mut self, spis: [u32; 4]) {
        self.intx_spis = spis;
    }

    /// Where MSI messages may go; without a target every message is dropped
    /// (and counted as forged).
    pub fn set_msi_target(&mut self, target: Option<MsiTarget>) {
        self.msi_target = target;
    }

    /// Function `id`'s MSI counters.
    pub fn msi_stats(&self, id: FunctionId) -> Option<MsiStats> {
        self.slots.iter().find_map(|s| {
            if s.port.id == id {
                Some(s.port.msi)
            } else {
                s.child.as_ref().filter(|c| c.id == id).map(|c| c.msi)
            }
        })
    }

    /// The segment (domain) number.
    pub fn number(&self) -> u16 {
        self.segment
    }

    /// The ECAM window size in bytes.
    pub fn ecam_size(&self) -> u64 {
        u64::from(self.bus_count) << 20
    }

    /// Counters of bad or unanswered accesses.
    pub fn stats(&self) -> SegmentStats {
        self.stats
    }

    fn new_placed(&mut self, function: Box<dyn PciFunction>) -> Result<Placed, TopologyError> {
        let id = FunctionId(self.next_id);
        self.next_id = self
            .next_id
            .checked_add(1)
            .ok_or(TopologyError::TooManyFunctions)?;
        Ok(Placed {
            id,
            function,
            intx_level: false,
            msi: MsiStats::default(),
        })
    }

    /// Places `function` on bus 0 at `dev`.`func`; returns its stable id.
    pub fn add_bus0(
        &mut self,
        dev: u8,
        func: u8,
        function: Box<dyn PciFunction>,
    ) -> Result<FunctionId, TopologyError> {
        let bdf = Bdf::new(0, dev, func).map_err(|_| {
            TopologyError::NoSuchFunction(Bdf::from_routing_id(u16::from(dev & 31) << 3))
        })?;
        if self.slots.iter().any(|s| s.dev == dev && s.func == func) {
            return Err(TopologyError::Occupied(bdf));
        }
        let port = self.new_placed(function)?;
        let id = port.id;
        self.slots.push(Slot {
            dev,
            func,
            port,
            child: None,
            secondary: 0,
        });
        self.rebuild_routing();
        Ok(id)
    }

    /// Attaches `function` as device 0 below the bridge at bus 0 `dev`.`func`;
    /// returns its stable id.
    pub fn attach_below(
        &mut self,
        dev: u8,
        func: u8,
        function: Box<dyn PciFunction>,
    ) -> Result<FunctionId, TopologyError> {
        let bdf = Bdf::new(0, dev, func).map_err(|_| {
            TopologyError::NoSuchFunction(Bdf::from_routing_id(u16::from(dev & 31) << 3))
        })?;
        let i = self
            .slots
            .iter()
            .position(|s| s.dev == dev && s.func == func)
            .ok_or(TopologyError::NoSuchFunction(bdf))?;
        let slot = &self.slots[i];
        if slot.port.function.bridge_bus_range().is_none() {
            return Err(TopologyError::NotABridge(bdf));
        }
        if slot.child.is_some() {
            return Err(TopologyError::Occupied(bdf));
        }
        let placed = self.new_placed(function)?;
        let id = placed.id;
        if let Some(s) = self.slots.get_mut(i) {
            s.child = Some(placed);
        }
        self.rebuild_routing();
        Ok(id)
    }

    /// Rebuilds the routing tables from the slots and the bus numbers their
    /// bridges hold now.
    fn rebuild_routing(&mut self) {
        self.root_slot = [0; 256];
        self.bus_owner = [0; 256];
        let root = u16::from(self.bus_start);
        // Backwards, so that the first bridge in placement order claiming a
        // bus number is the one left in the table.
        for (i, s) in self.slots.iter_mut().enumerate().rev() {
            let n = u16::try_from(i + 1).unwrap_or(u16::MAX);
            if let Some(e) = self
                .root_slot
                .get_mut(usize::from(s.dev) << 3 | usize::from(s.func))
            {
                *e = n;
            }
            let range = s.port.function.bridge_bus_range();
            s.secondary = range.map_or(0, |(secondary, _)| secondary);
            let Some((secondary, subordinate)) = range else {
                continue;
            };
            // A secondary bus at or below the root bus (0 after reset) is
            // unprogrammed or invalid: it never claims a request.
            if u16::from(secondary) <= root {
                continue;
            }
            for bus in secondary..=subordinate {
                if let Some(e) = self.bus_owner.get_mut(usize::from(bus)) {
                    *e = n;
                }
            }
        }
    }

    /// Where a configuration request goes: one table look-up on the root
    /// bus, one below it (the tables follow the bridges' bus numbers).
    fn route(&self, a: &EcamAddress) -> Target {
        let slot = |n: Option<&u16>| n.and_then(|&n| usize::from(n).checked_sub(1));
        if a.bus_offset == 0 {
            let at = usize::from(a.dev) << 3 | usize::from(a.func);
            return slot(self.root_slot.get(at)).map_or(Target::None, Target::Bus0);
        }
        let bus = self.bus_at(a.bus_offset);
        let Some(i) = slot(self.bus_owner.get(usize::from(bus))) else {
            return Target::None;
        };
        match self.slots.get(i) {
            Some(s)
                if bus == u16::from(s.secondary)
                    && a.dev == 0
                    && a.func == 0
                    && s.child.is_some() =>
            {
                Target::Below(i)
            }
            _ => Target::None,
        }
    }

    fn placed_mut(&mut self, t: Target) -> Option<&mut Placed> {
        match t {
            Target::Bus0(i) => self.slots.get_mut(i).map(|s| &mut s.port),
            Target::Below(i) => self.slots.get_mut(i).and_then(|s| s.child.as_mut()),
            Target::None => None,
        }
    }

    fn placed_by_id(&mut self, id: FunctionId) -> Option<&mut Placed> {
        self.slots.iter_mut().find_map(|s| {
            if s.port.id == id {
                Some(&mut s.port)
            } else {
                s.child.as_mut().filter(|c| c.id == id)
            }
        })
    }

    /// The function placed as `id`.
    pub fn function(&self, id: FunctionId) -> Option<&dyn PciFunction> {
        self.slots.iter().find_map(|s| {
            if s.port.id == id {
                Some(s.port.function.as_ref())
            } else {
                s.child
                    .as_ref()
                    .filter(|c| c.id == id)
                    .map(|c| c.function.as_ref())
            }
        })
    }

    fn decode_ecam(&mut self, offset: u64) -> Option<EcamAddress> {
        if offset >= self.ecam_size() {
            self.stats.outside_window += 1;
            return None;
        }
        EcamAddress::decode(offset)
    }

    /// One access of 1, 2 or 4 bytes that stays within a dword.
    fn read_within_dword(&mut self, offset: u64, size: u8) -> u32 {
        let Some(a) = self.decode_ecam(offset) else {
            return all_ones(size) as u32;
        };
        let t = self.route(&a);
        match self.placed_mut(t) {
            Some(p) => p.function.config_read(a.register, size),
            None => {
                self.stats.absent += 1;
                all_ones(size) as u32
            }
        }
    }

    fn write_within_dword(&mut self, offset: u64, size: u8, value: u32, out: &mut Effects) {
        let Some(a) = self.decode_ecam(offset) else {
            return;
        };
        let t = self.route(&a);
        // A Secondary Bus Reset resets the function below a port on bus 0
        // (a bridge: `attach_below` placed it there).
        let below = match t {
            Target::Bus0(i) => self.slots.get(i).and_then(|s| s.child.as_ref()),
            _ => None,
        }
        .map(|c| c.id);
        let mut requests = Vec::new();
        let Some(p) = self.placed_mut(t) else {
            self.stats.absent += 1;
            return;
        };
        let id = p.id;
        // Only a write of their bytes changes a bridge's bus numbers and its
        // Secondary Bus Reset bit (the contract of `PciFunction`).
        let bus_numbers = touches(a.register, size, type1::SECONDARY_BUS, 2);
        let sbr_watched = below.is_some() && touches(a.register, size, type1::BRIDGE_CONTROL, 2);
        let sbr_before = sbr_watched && secondary_bus_reset(p.function.config_space());
        let buses_before = bus_numbers.then(|| p.function.bridge_bus_range());
        p.function
            .config_write(a.register, size, value, &mut requests);
        let sbr_rose = sbr_watched && !sbr_before && secondary_bus_reset(p.function.config_space());
        let buses_changed =
            buses_before.is_some_and(|before| p.function.bridge_bus_range() != before);
        for r in requests {
            match r {
                Request::FunctionLevelReset => out.push(Effect::Reset { function: id }),
                Request::MsiMessageWritten => out.push(Effect::MsiMessageWritten { function: id }),
            }
        }
        if let (true, Some(c)) = (sbr_rose, below) {
            out.push(Effect::Reset { function: c });
        }
        if buses_changed {
            self.rebuild_routing();
        }
        // Decoding is a function of the functions' decode inputs alone (see
        // `decode`): a write to no such register of this function leaves it
        // as it is.
        if self.decode_stale || writes_decode_input(a.register, size) {
            self.redecode(out);
        }
        self.interrupts_changed_at(t, out);
    }

    /// A guest read of `size` bytes at `offset` in the ECAM window.
    ///
    /// 1-, 2- and 4-byte accesses inside one dword go to the function as they are;
    /// an aligned 8-byte access is two dword accesses (low first); anything that
    /// straddles a dword is split into byte accesses. Other sizes read all ones.
    #[inline]
    pub fn ecam_read(&mut self, offset: u64, size: u8) -> u64 {
        // The common case (what every config access of Linux is) first, the
        // splitting out of line.
        if matches!(size, 1 | 2 | 4) && (offset & 3) + u64::from(size) <= 4 {
            return u64::from(self.read_within_dword(offset, size));
        }
        self.ecam_read_split(offset, size)
    }

    /// [`Segment::ecam_read`] of an access that is not within a dword.
    #[inline(never)]
    fn ecam_read_split(&mut self, offset: u64, size: u8) -> u64 {
        match size {
            1 | 2 | 4 if (offset & 3) + u64::from(size) <= 4 => {
                u64::from(self.read_within_dword(offset, size))
            }
            8 if offset & 3 == 0 => {
                let lo = self.read_within_dword(offset, 4);
                let hi = self.read_within_dword(offset.saturating_add(4), 4);
                u64::from(lo) | (u64::from(hi) << 32)
            }
            2 | 4 | 8 => (0..u64::from(size)).fold(0, |v, i| {
                v | u64::from(self.read_within_dword(offset.saturating_add(i), 1)) << (8 * i)
            }),
            _ => {
                self.stats.bad_size += 1;
                u64::MAX
            }
        }
    }

    /// A guest write of `size` bytes at `offset` in the ECAM window; split as
    /// [`Segment::ecam_read`]. Returns what the owner must apply.
    #[inline]
    pub fn ecam_write(&mut self, offset: u64, size: u8, value: u64) -> Effects {
        let mut out = Effects::new();
        if matches!(size, 1 | 2 | 4) && (offset & 3) + u64::from(size) <= 4 {
            self.write_within_dword(offset, size, value as u32, &mut out);
            return out;
        }
        self.ecam_write_split(offset, size, value, &mut out);
        out
    }

    /// [`Segment::ecam_write`] of an access that is not within a dword.
    #[inline(never)]
    fn ecam_write_split(&mut self, offset: u64, size: u8, value: u64, out: &mut Effects) {
        match size {
            1 | 2 | 4 if (offset & 3) + u64::from(size) <= 4 => {
                self.write_within_dword(offset, size, value as u32, out)
            }
            8 if offset & 3 == 0 => {
                self.write_within_dword(offset, 4, value as u32, out);
                self.write_within_dword(offset.saturating_add(4), 4, (value >> 32) as u32, out);
            }
            2 | 4 | 8 => {
                for i in 0..u64::from(size) {
                    let byte = (value >> (8 * i)) as u32 & 0xff;
                    self.write_within_dword(offset.saturating_add(i), 1, byte, out);
                }
            }
            _ => self.stats.bad_size += 1,
        }
    }

    /// Whether `ipa` lies in one of the segment's memory apertures.
    pub fn claims(&self, ipa: Ipa) -> bool {
        self.apertures.iter().any(|a| a.contains(ipa))
    }

    /// The decoded BAR that holds `[ipa, ipa + size)` entirely.
    fn decoded_at(&self, ipa: Ipa, size: u8) -> Option<Decoded> {
        let access = MemRange::new(ipa, u64::from(size));
        self.decoded
            .iter()
            .find(|d| d.guest.covers(&access))
            .copied()
    }

    /// What a trapped access of `size` bytes at `ipa` reaches, for exit
    /// statistics: the MSI-X table or PBA of the function whose BAR decodes
    /// it (PCI Express Base 6.0, 7.7.2), another register of a trapped BAR,
    /// or nothing (`None`: outside the apertures or not decoded).
    pub fn bar_region(&self, ipa: Ipa, size: u8) -> Option<BarRegion> {
        let d = self.decoded_at(ipa, size)?;
        Some(if d.in_msix(ipa.0 - d.guest.base.0) {
            BarRegion::Msix
        } else {
            BarRegion::Registers
        })
    }

    /// A guest read of `size` bytes at `ipa` in the segment's memory
    /// apertures, routed to the function whose BAR decodes it. `None` if `ipa`
    /// is outside the apertures (not ours). Nothing decoding, or a host-backed
    /// BAR trapping while it is being remapped, reads all ones (an Unsupported
    /// Request completes with all ones, PCI Express Base 6.0, 2.3.1).
    pub fn mmio_read(&mut self, ipa: Ipa, size: u8) -> Option<(u64, Effects)> {
        if !self.claims(ipa) {
            return None;
        }
        let mut out = Effects::new();
        let Some(d) = self.decoded_at(ipa, size) else {
            self.stats.unclaimed_mmio += 1;
            return Some((all_ones(size), out));
        };
        let off = ipa.0 - d.guest.base.0;
        if d.backing != BarBacking::Trapped && !self.in_trap(&d, off, size) {
            self.stats.host_bar_traps += 1;
            return Some((all_ones(size), out));
        }
        let mut requests = Vec::new();
        let t = self.target_of(d.function);
        let v = match self.placed_mut(t) {
            Some(p) => p.function.bar_read(d.bar, off, size, &mut requests),
            None => all_ones(size),
        };
        self.apply_requests(d.function, requests, &mut out);
        self.interrupts_changed_at(t, &mut out);
        Some((v, out))
    }

    /// A guest write at `ipa`, routed as [`Segment::mmio_read`]; `None` if
    /// outside the apertures. Writes nothing decodes are dropped.
    pub fn mmio_write(&mut self, ipa: Ipa, size: u8, value: u64) -> Option<Effects> {
        if !self.claims(ipa) {
            return None;
        }
        let mut out = Effects::new();
        let Some(d) = self.decoded_at(ipa, size) else {
            self.stats.unclaimed_mmio += 1;
            return Some(out);
        };
        let off = ipa.0 - d.guest.base.0;
        if d.backing != BarBacking::Trapped && !self.in_trap(&d, off, size) {
            self.stats.host_bar_traps += 1;
            return Some(out);
        }
        let mut requests = Vec::new();
        let t = self.target_of(d.function);
        if let Some(p) = self.placed_mut(t) {
            p.function.bar_write(d.bar, off, size, value, &mut requests);
        }
        self.apply_requests(d.function, requests, &mut out);
        self.interrupts_changed_at(t, &mut out);
        Some(out)
    }

    /// Whether `[off, off + size)` of decoded BAR `d` lies in one of the
    /// pages its function traps although the BAR is host-backed.
    fn in_trap(&self, d: &Decoded, off: u64, size: u8) -> bool {
        let end = off.saturating_add(u64::from(size));
        self.function(d.function).is_some_and(|f| {
            f.bar_traps(d.bar)
                .iter()
                .any(|&(o, l)| off >= o && end <= o.saturating_add(l))
        })
    }

    /// The host device behind function `id` signalled `event` (an MSI the
    /// hypervisor took through the host ITS): the function's message for it
    /// becomes an [`Effect::Msi`] if it names the guest's doorbell and an
    /// SPI of its MBI range, and is dropped and counted as forged otherwise.
    pub fn host_msi(&mut self, id: FunctionId, event: u32) -> Effects {
        let mut out = Effects::new();
        if let Some(p) = self.placed_by_id(id) {
            p.function.host_msi(event);
        }
        self.msi_sent(id, &mut out);
        out
    }

    /// The guest SPI host event `event` of function `id` feeds now: its
    /// message ([`PciFunction::host_msi_message`]) if it names the guest's
    /// doorbell and an SPI of its MBI range, else `None`.
    pub fn host_msi_spi(&self, id: FunctionId, event: u32) -> Option<u32> {
        let t = self.msi_target?;
        let m = self.function(id)?.host_msi_message(event)?;
        (m.address == t.doorbell.0 && t.spis.contains(m.data)).then_some(m.data)
    }

    fn apply_requests(&mut self, id: FunctionId, requests: Vec<Request>, out: &mut Effects) {
        for r in requests {
            match r {
                Request::FunctionLevelReset => out.push(Effect::Reset { function: id }),
                Request::MsiMessageWritten => out.push(Effect::MsiMessageWritten { function: id }),
            }
        }
    }

    /// Resets function `id` (applying an [`Effect::Reset`]): its registers go
    /// back to their defaults (an assigned function also resets its host
    /// device), and decoding follows.
    pub fn reset_function(&mut self, id: FunctionId) -> Effects {
        let mut out = Effects::new();
        if let Some(p) = self.placed_by_id(id) {
            p.function.reset();
        }
        self.rebuild_routing();
        self.redecode(&mut out);
        self.interrupts_changed(id, &mut out);
        out
    }

    /// Resets every function of the segment, root ports included, as the
    /// platform's reset does (PCI Express Base 6.0, 6.6.1, Conventional
    /// Reset): registers back to their defaults (an assigned function also
    /// resets its host device), bus numbers cleared, so nothing decodes any
    /// more; the effects unmap every BAR that was decoded and lower every
    /// INTx line that was raised.
    pub fn reset_all(&mut self) -> Effects {
        let mut out = Effects::new();
        for s in &mut self.slots {
            s.port.function.reset();
            if let Some(c) = s.child.as_mut() {
                c.function.reset();
            }
        }
        self.rebuild_routing();
        self.redecode(&mut out);
        for id in self.placed_ids() {
            self.interrupts_changed(id, &mut out);
        }
        out
    }

    /// Lets every function finish asynchronous work ([`PciFunction::poll`]),
    /// then returns the INTx changes that follow.
    pub fn poll(&mut self) -> Effects {
        for s in &mut self.slots {
            s.port.function.poll();
            if let Some(c) = s.child.as_mut() {
                c.function.poll();
            }
        }
        self.refresh_intx()
    }

    /// Re-reads every function's emulated INTx output (after a device
    /// changed it outside a guest access, e.g. a completed host request).
    pub fn refresh_intx(&mut self) -> Effects {
        let mut out = Effects::new();
        let ids: Vec<FunctionId> = self.placed_ids();
        for id in ids {
            self.interrupts_changed(id, &mut out);
        }
        out
    }

    fn placed_ids(&self) -> Vec<FunctionId> {
        let mut v = Vec::new();
        for s in &self.slots {
            v.push(s.port.id);
            if let Some(c) = &s.child {
                v.push(c.id);
            }
        }
        v
    }

    /// The guest SPI of function `id`'s INTx pin: its Interrupt Pin swizzled
    /// through its root port to the host bridge (PCI Express Base 6.0, 2.2.8.1;
    /// the device number of a function below a port is 0), then the host
    /// bridge's `interrupt-map`, which swizzles by the bus-0 device number.
    /// `None` without a pin.
    pub fn intx_spi(&self, id: FunctionId) -> Option<u32> {
        self.slots.iter().find_map(|s| {
            let f = if s.port.id == id {
                &s.port
            } else {
                s.child.as_ref().filter(|c| c.id == id)?
            };
            swizzled_spi(f.function.as_ref(), s.dev, &self.intx_spis)
        })
    }

    /// Function `id`'s INTx level changes and the MSI messages it sent.
    fn interrupts_changed(&mut self, id: FunctionId, out: &mut Effects) {
        let t = self.target_of(id);
        self.interrupts_changed_at(t, out);
    }

    /// Where function `id` is placed (one search for what would take two).
    fn target_of(&self, id: FunctionId) -> Target {
        for (i, s) in self.slots.iter().enumerate() {
            if s.port.id == id {
                return Target::Bus0(i);
            }
            if s.child.as_ref().is_some_and(|c| c.id == id) {
                return Target::Below(i);
            }
        }
        Target::None
    }

    /// As [`Segment::interrupts_changed`] for the function at `t`, found
    /// without a search.
    #[inline(always)]
    fn interrupts_changed_at(&mut self, t: Target, out: &mut Effects) {
        let (spis, target) = (self.intx_spis, self.msi_target);
        let (dev, p) = match t {
            Target::Bus0(i) => match self.slots.get_mut(i) {
                Some(s) => (s.dev, &mut s.port),
                None => return,
            },
            Target::Below(i) => match self.slots.get_mut(i) {
                Some(Slot {
                    dev,
                    child: Some(c),
                    ..
                }) => (*dev, c),
                _ => return,
            },
            Target::None => return,
        };
        intx_changed_placed(p, dev, &spis, out);
        msi_sent_placed(p, target, out);
    }

    /// Turns each message function `id` sent into an [`Effect::Msi`] if it is
    /// a write of an INTID inside the MBI range to the doorbell; anything
    /// else is dropped and counted, so a forged table entry never reaches an
    /// interrupt outside the guest's range (the timer, the UART, INTx).
    fn msi_sent(&mut self, id: FunctionId, out: &mut Effects) {
        let target = self.msi_target;
        if let Some(p) = self.placed_by_id(id) {
            msi_sent_placed(p, target, out);
        }
    }

    /// Recomputes what is decoded and appends the differences: every unmap
    /// before any map, so that a moved BAR never has two mappings at once.
    fn redecode(&mut self, out: &mut Effects) {
        let (now, overlapping) = decode::compute(
            self.slots.iter().map(|s| {
                (
                    (s.port.id, s.port.function.as_ref()),
                    s.child.as_ref().map(|c| (c.id, c.function.as_ref())),
                )
            }),
            &self.apertures,
        );
        self.stats.overlapping_bars += overlapping;
        self.decode_stale = false;
        for old in &self.decoded {
            if !now.contains(old) {
                out.push(Effect::Unmap {
                    function: old.function,
                    bar: old.bar,
                    guest: old.guest,
                    backing: old.backing,
                });
            }
        }
        for new in &now {
            if !self.decoded.contains(new) {
                out.push(Effect::Map {
                    function: new.function,
                    bar: new.bar,
                    guest: new.guest,
                    backing: new.backing,
                    prefetchable: new.prefetchable,
                });
            }
        }
        self.decoded = now;
    }

    /// What is decoded now, in placement order.
    pub fn decoded(&self) -> &[Decoded] {
        &self.decoded
    }

    /// Every function the guest can reach now, with its address, in bus order:
    /// exactly the functions a configuration read would reach (a device below a
    /// bridge whose bus numbers are unprogrammed, inconsistent, outside the ECAM
    /// window or shadowed by another bridge is not listed).
    pub fn enumerate(&self) -> Vec<(Bdf, &dyn PciFunction)> {
        self.enumerate_ids()
            .into_iter()
            .filter_map(|(bdf, id)| self.function(id).map(|f| (bdf, f)))
            .collect()
    }

    /// As [`Segment::enumerate`], with stable ids instead of the functions.
    pub fn enumerate_ids(&self) -> Vec<(Bdf, FunctionId)> {
        let mut v: Vec<(Bdf, FunctionId)> = Vec::new();
        for (i, s) in self.slots.iter().enumerate() {
            if let Ok(bdf) = Bdf::new(self.bus_start, s.dev, s.func) {
                v.push((bdf, s.port.id));
            }
            let (Some((secondary, _)), Some(child)) =
                (s.port.function.bridge_bus_range(), &s.child)
            else {
                continue;
            };
            let Some(offset) = secondary.checked_sub(self.bus_start) else {
                continue;
            };
            let probe = EcamAddress {
                bus_offset: offset,
                dev: 0,
                func: 0,
                register: 0,
            };
            let in_window = u16::from(offset) < self.bus_count;
            if in_window && matches!(self.route(&probe), Target::Below(j) if j == i) {
                if let Ok(bdf) = Bdf::new(secondary, 0, 0) {
                    v.push((bdf, child.id));
                }
            }
        }
        v.sort_by_key(|(b, _)| *b);
        v
    }
}

/// The guest SPI of `f`'s INTx pin when its bus-0 device (or the port it
/// is below) is `dev` (see [`Segment::intx_spi`]).
fn swizzled_spi(f: &dyn PciFunction, dev: u8, spis: &[u32; 4]) -> Option<u32> {
    let pin = f.config_space().raw(reg::INTERRUPT_PIN, 1) as u8;
    if !(1..=4).contains(&pin) {
        return None;
    }
    let index = (usize::from(pin - 1) + usize::from(dev)) % 4;
    spis.get(index).copied()
}

/// Reports `p`'s INTx level if it changed since the last report.
fn intx_changed_placed(p: &mut Placed, dev: u8, spis: &[u32; 4], out: &mut Effects) {
    let Intx::Level(level) = p.function.intx() else {
        return;
    };
    if level == p.intx_level {
        return;
    }
    p.intx_level = level;
    if let Some(spi) = swizzled_spi(p.function.as_ref(), dev, spis) {
        out.push(Effect::Intx {
            function: p.id,
            spi,
            level,
        });
    }
}

/// Turns each message `p` sent into an [`Effect::Msi`] if it is a write of
/// an INTID inside the MBI range to the doorbell; anything else is dropped
/// and counted.
#[inline]
fn msi_sent_placed(p: &mut Placed, target: Option<MsiTarget>, out: &mut Effects) {
    let mut sent: Vec<MsiMessage> = Vec::new();
    p.function.take_msi(&mut sent);
    // Every config and BAR access asks; a message is rare.
    if !sent.is_empty() {
        deliver_msis(p, target, sent, out);
    }
}

#[cold]
#[inline(never)]
fn deliver_msis(
    p: &mut Placed,
    target: Option<MsiTarget>,
    sent: Vec<MsiMessage>,
    out: &mut Effects,
) {
    for m in sent {
        let ok = target.is_some_and(|t| m.address == t.doorbell.0 && t.spis.contains(m.data));
        if ok {
            p.msi.delivered += 1;
            out.push(Effect::Msi {
                function: p.id,
                spi: m.data,
            });
        } else {
            p.msi.forged += 1;
        }
    }
}

/// Whether a config write of `size` bytes at `offset` reaches a register
/// memory decoding reads (`decode::compute`): the Command register, the
/// BARs of a type-0 header (0x10..0x28) and of a type-1 header
/// (0x10..0x18) and a type-1 header's memory and prefetchable memory
/// windows (0x20..0x30). The expansion ROM BAR and Bridge Control are not
/// decoded here, and the bus numbers only route configuration requests
/// (their changes rebuild the routing tables instead).
fn writes_decode_input(offset: u16, size: u8) -> bool {
    touches(offset, size, reg::COMMAND, 2) || touches(offset, size, reg::BAR0, 0x30 - reg::BAR0)
}

/// Whether an access of `size` bytes at `offset` touches any of the `len`
/// bytes at `start`.
fn touches(offset: u16, size: u8, start: u16, len: u16) -> bool {
    offset < start.saturating_add(len) && offset.saturating_add(u16::from(size)) > start
}

/// Whether a bridge's config space holds its Secondary Bus Reset bit
/// (Bridge Control bit 6).
fn secondary_bus_reset(cs: &crate::config::ConfigSpace) -> bool {
    cs.raw(type1::BRIDGE_CONTROL, 2) & u32::from(crate::config::bridge_control::SECONDARY_BUS_RESET)
        != 0
}

/// Whether a function's Memory Space Enable is set.
pub(crate) fn memory_enabled(f: &dyn PciFunction) -> bool {
    f.config_space().raw(reg::COMMAND, 2) as u16 & command::MEMORY_SPACE != 0
}

#[cfg(test)]
mod tests;

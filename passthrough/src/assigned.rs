//! The assigned function: a host function shown to a guest through the
//! filter of [`crate::filter`], with shadow BARs, re-chained capabilities,
//! INTx on the host line, MSI-X and MSI through shadows ([`crate::msix`],
//! [`crate::msi`]) once the hypervisor routes its messages
//! ([`AssignedFunction::with_msi`]), and reset through the host.
//!
//! MSI and MSI-X are never enabled together at the device: its MSI-X
//! Enable follows the guest's only while the guest has MSI disabled, its
//! MSI Enable only while the guest has MSI-X disabled (system software must
//! not enable both, PCI Express Base 6.0, 6.1.4). While the guest has MSI
//! enabled the device's Command.Interrupt Disable is set whatever the guest
//! wrote there (a function with MSI enabled uses no INTx, 7.7.1.2), so a
//! message kept from the device delivers nothing at all.

use crate::access::{read16, write16, BarAccess, ConfigAccess, Delay};
use crate::filter::{self, Rule};
use crate::layout::HostFunction;
use crate::msi::{AssignedMsi, EventIds};
use crate::msix::{AssignedMsix, MsiRoute};
use crate::regs::{bar, pcie, type1};
use alloc::vec;
use alloc::vec::Vec;
use vbus::config::{command, reg, status};
use vbus::{BarBacking, BarInfo, ConfigSpace, Intx, PciFunction, Request, CONFIG_SPACE_SIZE};

/// Smallest BAR presented to a guest (a stage-2 page).
pub const MIN_BAR: u64 = 4096;
/// Wait after Initiate FLR before the function is accessed (PCI Express Base 6.0, 6.6.2).
pub const FLR_WAIT_US: u32 = 100_000;
/// Secondary Bus Reset hold time (PCI-to-PCI Bridge Architecture 1.2, 3.2.5.17: Trst at least 1 ms).
pub const SBR_HOLD_US: u32 = 2_000;
/// Wait after a Conventional Reset before configuration requests (PCI Express Base 6.0, 6.6.1).
pub const RESET_RECOVERY_US: u32 = 100_000;
/// Polls of Transactions Pending before an FLR, 10 ms apart (6.6.2, implementation note).
const PENDING_POLLS: u32 = 10;

/// Counters of guest accesses that hardware would also drop or answer blindly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AssignedStats {
    /// Accesses with a bad size, crossing a dword or past 4 KiB.
    pub bad_accesses: u64,
    /// Writes that touched a byte no rule covers (dropped).
    pub hidden_writes: u64,
    /// Initiate FLR writes turned into requests.
    pub flr_requests: u64,
    /// Resets with neither FLR nor a parent bridge (registers restored only).
    pub resets_without_method: u64,
}

/// Per byte: which bits come from / go to the host.
#[derive(Debug, Clone, Copy, Default)]
struct ByteRule {
    host_read: u8,
    host_write: u8,
    host_w1c: u8,
    covered: bool,
}

/// A host function assigned to a guest.
pub struct AssignedFunction<A: ConfigAccess + Delay> {
    host: A,
    layout: HostFunction,
    cs: ConfigSpace,
    initial: ConfigSpace,
    rules: Vec<ByteRule>,
    bars: Vec<BarInfo>,
    intid: Option<u32>,
    msix: Option<AssignedMsix>,
    msi: Option<AssignedMsi>,
    events: EventIds,
    stats: AssignedStats,
}

/// Runs `f` with the host function's Memory Space Enable set (a device
/// drops memory writes without it, PCI Express Base 6.0, 7.5.1.1.3), then
/// puts the Command register back.
fn with_memory_space<A: ConfigAccess + BarAccess>(
    host: &mut A,
    bdf: vbus::Bdf,
    f: impl FnOnce(&mut A),
) {
    let cmd = read16(host, bdf, reg::COMMAND);
    let status_rw1c = u32::from(status::RW1C_ERRORS) << 16;
    let mse = vbus::config::command::MEMORY_SPACE;
    if cmd & mse == 0 {
        write16(host, bdf, reg::COMMAND, cmd | mse, status_rw1c);
    }
    f(host);
    if cmd & mse == 0 {
        write16(host, bdf, reg::COMMAND, cmd, status_rw1c);
    }
}

/// The low `size` bytes set.
fn mask_of(size: u8) -> u32 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        _ => !0,
    }
}

/// Whether an access of `size` bytes at `offset` touches the `len` bytes at `at`.
fn overlaps(offset: u16, size: u8, at: u16, len: u16) -> bool {
    offset < at + len && at < offset + u16::from(size)
}

fn bytes(v: u32, size: u8) -> impl Iterator<Item = (u16, u8)> {
    (0..u16::from(size)).map(move |i| (i, (v >> (8 * i)) as u8))
}

impl<A: ConfigAccess + Delay + BarAccess> AssignedFunction<A> {
    /// Shows `layout` (captured with [`HostFunction::capture`]) to a guest
    /// through `host`. `intid` is the physical INTID of its INTx line, from
    /// the host `interrupt-map` at `layout.intx`. Reads the host's current
    /// values of the cached registers once, here. MSI and MSI-X are hidden.
    pub fn new(host: A, layout: HostFunction, intid: Option<u32>) -> Self {
        Self::build(host, layout, intid, None)
    }

    /// The same function with its MSI-X and MSI shown to the guest, routed
    /// by `route` (the device's table and MSI capability programmed with the
    /// host doorbell and the EventIDs of [`EventIds::of`] its layout, every
    /// vector masked, MSI disabled). What the function lacks, or cannot be
    /// routed (an MSI-X table or PBA outside its BARs; MSI with 32-bit
    /// addresses and a doorbell above 4 GiB), stays hidden.
    pub fn with_msi(self, route: MsiRoute) -> Self {
        Self::build(self.host, self.layout, self.intid, Some(route))
    }

    /// Whether the guest sees MSI-X, and its vector count.
    pub fn msix_vectors(&self) -> Option<u16> {
        self.msix.as_ref().map(AssignedMsix::vectors)
    }

    /// Whether the guest sees MSI, and its vector count (Multiple Message
    /// Capable as shown).
    pub fn msi_vectors(&self) -> Option<u32> {
        self.msi.as_ref().map(AssignedMsi::vectors)
    }

    /// The EventIDs the device sends (MSI-X vectors, then MSI's).
    pub fn events(&self) -> EventIds {
        self.events
    }

    /// The MSI-X model (for tests).
    pub fn msix(&self) -> Option<&AssignedMsix> {
        self.msix.as_ref()
    }

    /// The MSI model (for tests).
    pub fn msi(&self) -> Option<&AssignedMsi> {
        self.msi.as_ref()
    }

    fn build(
        mut host: A,
        layout: HostFunction,
        intid: Option<u32>,
        route: Option<MsiRoute>,
    ) -> Self {
        let events = EventIds::of(&layout);
        let mut msix = route.and_then(|r| AssignedMsix::new(&layout, r));
        let mut msi = route.and_then(|r| AssignedMsi::new(&layout, r, events));
        let mut cs = ConfigSpace::new();
        let mut rules = vec![ByteRule::default(); CONFIG_SPACE_SIZE];
        let bdf = layout.bdf;
        let mut apply = |cs: &mut ConfigSpace, host: &mut A, base: u16, table: &[Rule]| {
            for r in table {
                let Some(at) = base.checked_add(r.offset) else {
                    continue;
                };
                if r.bar || usize::from(at) + usize::from(r.size) > CONFIG_SPACE_SIZE {
                    continue;
                }
                let dword = host.read32(bdf, at & !3);
                let v = (dword >> (8 * (at & 3))) & !r.clear;
                for (i, b) in bytes(v, r.size) {
                    cs.set_u8(at + i, b);
                }
                cs.set_writable(at, r.size, r.shadow_write);
                for (i, hr) in bytes(r.host_read, r.size) {
                    let byte = |m: u32| (m >> (8 * i)) as u8;
                    if let Some(x) = rules.get_mut(usize::from(at + i)) {
                        *x = ByteRule {
                            host_read: hr,
                            host_write: byte(r.host_write),
                            host_w1c: byte(r.host_w1c),
                            covered: true,
                        };
                    }
                }
            }
        };
        apply(&mut cs, &mut host, 0, filter::HEADER);
        // Capabilities: kept ones at their host offsets, re-chained.
        let kept: Vec<(u16, &[Rule])> = layout
            .capabilities
            .iter()
            .filter_map(|c| {
                filter::capability(c.id, msix.is_some(), msi.as_ref().map(AssignedMsi::rules))
                    .map(|t| (c.offset, t))
            })
            .collect();
        for (at, table) in &kept {
            apply(&mut cs, &mut host, *at, table);
        }
        if let Some(m) = &msi {
            m.shape(&mut cs);
        }
        let first = kept.first().map_or(0, |k| k.0);
        cs.set_u8(reg::CAPABILITIES_POINTER, first as u8);
        for (i, (at, _)) in kept.iter().enumerate() {
            let next = kept.get(i + 1).map_or(0, |k| k.0);
            cs.set_u8(at + 1, next as u8);
        }
        if kept.is_empty() {
            let st = cs.raw(reg::STATUS, 2) as u16 & !status::CAPABILITIES_LIST;
            cs.set_u16(reg::STATUS, st);
        }
        let kept_ext: Vec<(u16, u16, u8, &[Rule])> = layout
            .ext_capabilities
            .iter()
            .filter_map(|c| filter::ext_capability(c.id).map(|t| (c.offset, c.id, c.version, t)))
            .collect();
        for (at, _, _, table) in &kept_ext {
            apply(&mut cs, &mut host, *at, table);
        }
        for (i, (at, id, version, _)) in kept_ext.iter().enumerate() {
            let next = kept_ext.get(i + 1).map_or(0, |k| k.0);
            cs.set_u32(
                *at,
                u32::from(*id) | u32::from(*version) << 16 | u32::from(next) << 20,
            );
        }
        // The chain must start at 100h: a null capability leads to the first kept one (7.6.3).
        if let Some((first, ..)) = kept_ext.first().filter(|k| k.0 != 0x100) {
            cs.set_u32(0x100, u32::from(*first) << 20);
            for i in 0..4 {
                if let Some(x) = rules.get_mut(0x100 + i) {
                    x.covered = true;
                }
            }
        }
        // BARs: shadowed, presented at least MIN_BAR large.
        let mut bars = Vec::new();
        for b in &layout.bars {
            let size = b.size.max(MIN_BAR);
            let off = reg::BAR0 + 4 * u16::from(b.index);
            let flags = if b.is_64bit { bar::TYPE_64 } else { 0 }
                | if b.prefetchable { bar::PREFETCHABLE } else { 0 };
            let mask = !(size - 1);
            cs.set_u32(off, flags);
            cs.set_writable(off, 4, mask as u32 & bar::MEM_ADDRESS);
            let words = if b.is_64bit { 8 } else { 4 };
            if b.is_64bit {
                cs.set_writable(off + 4, 4, (mask >> 32) as u32);
            }
            for i in 0..words {
                if let Some(x) = rules.get_mut(usize::from(off + i)) {
                    x.covered = true;
                }
            }
            bars.push(BarInfo {
                index: b.index,
                size,
                is_64bit: b.is_64bit,
                prefetchable: b.prefetchable,
                backing: BarBacking::Host(b.cpu),
            });
        }
        if let Some(m) = msix.as_mut() {
            with_memory_space(&mut host, layout.bdf, |h| m.program_device(h));
        }
        if let Some(m) = msi.as_mut() {
            m.program_device(&mut host, layout.bdf);
        }
        AssignedFunction {
            host,
            layout,
            initial: cs.clone(),
            cs,
            rules,
            bars,
            intid,
            msix,
            msi,
            events,
            stats: AssignedStats::default(),
        }
    }

    /// The cached layout.
    pub fn layout(&self) -> &HostFunction {
        &self.layout
    }

    /// Counters of dropped or blindly answered accesses.
    pub fn stats(&self) -> AssignedStats {
        self.stats
    }

    /// The host access (for tests: the fake host's log).
    pub fn host(&self) -> &A {
        &self.host
    }

    /// The host access, mutable (for tests: the fake device's registers).
    pub fn host_mut(&mut self) -> &mut A {
        &mut self.host
    }

    fn rule(&self, at: u16) -> ByteRule {
        self.rules.get(usize::from(at)).copied().unwrap_or_default()
    }

    fn valid(offset: u16, size: u8) -> bool {
        matches!(size, 1 | 2 | 4)
            && (offset & 3) + u16::from(size) <= 4
            && usize::from(offset) + usize::from(size) <= CONFIG_SPACE_SIZE
    }

    /// Puts the host registers a reset clears back from the cached layout
    /// (host addresses, never the guest's).
    fn restore_host(&mut self) {
        let bdf = self.layout.bdf;
        let status_rw1c = u32::from(status::RW1C_ERRORS) << 16;
        write16(&mut self.host, bdf, reg::COMMAND, 0, status_rw1c);
        for b in &self.layout.bars {
            let off = reg::BAR0 + 4 * u16::from(b.index);
            let flags = if b.is_64bit { bar::TYPE_64 } else { 0 }
                | if b.prefetchable { bar::PREFETCHABLE } else { 0 };
            self.host
                .write32(bdf, off, b.pci as u32 & bar::MEM_ADDRESS | flags);
            if b.is_64bit {
                self.host.write32(bdf, off + 4, (b.pci >> 32) as u32);
            }
        }
        if let Some(p) = self.layout.pcie_capability {
            let devsta_rw1c = u32::from(pcie::DEVSTA_RW1C) << 16;
            write16(
                &mut self.host,
                bdf,
                p + pcie::DEVICE_CONTROL,
                self.layout.device_control,
                devsta_rw1c,
            );
            write16(
                &mut self.host,
                bdf,
                p + pcie::LINK_CONTROL,
                self.layout.link_control,
                0xc000 << 16,
            );
        }
    }

    /// The guest's write reaching the device: the bits of the rules'
    /// `host_write` and `host_w1c`, with Command.Interrupt Disable set
    /// while the guest has MSI enabled.
    fn write_through(&mut self, offset: u16, size: u8, value: u32) {
        let aligned = offset & !3;
        let shift = 8 * u32::from(offset & 3);
        let v = value.checked_shl(shift).unwrap_or(0);
        let (mut write, mut w1c_all, mut clear) = (0u32, 0u32, 0u32);
        for i in 0..4u16 {
            let r = self.rule(aligned + i);
            let in_access = aligned + i >= offset && aligned + i < offset + u16::from(size);
            w1c_all |= u32::from(r.host_w1c) << (8 * i);
            if in_access {
                write |= u32::from(r.host_write) << (8 * i);
                clear |= u32::from(r.host_w1c) << (8 * i);
            }
        }
        if write == 0 && clear & v == 0 {
            return;
        }
        let bdf = self.layout.bdf;
        let cur = self.host.read32(bdf, aligned);
        let mut new = (cur & !w1c_all & !write) | (v & write) | (v & clear);
        if aligned == reg::COMMAND && self.msi_on() {
            new |= u32::from(command::INTERRUPT_DISABLE);
        }
        self.host.write32(bdf, aligned, new);
    }

    /// Whether the guest has MSI enabled (the device then signals no INTx).
    fn msi_on(&self) -> bool {
        self.msi.as_ref().is_some_and(|m| m.guest_enabled(&self.cs))
    }

    /// Whether the guest has MSI-X enabled.
    fn msix_on(&self) -> bool {
        self.msix.as_ref().is_some_and(|m| {
            self.cs.raw(m.cap_offset() + 2, 2) as u16 & vbus::msix::control::ENABLE != 0
        })
    }

    /// Brings the device's interrupt enables in line with the guest's,
    /// after a write to Command, MSI-X's Message Control or the MSI
    /// capability, never with MSI and MSI-X enabled together at the device:
    /// Interrupt Disable set first when MSI comes on; MSI-X turned off where
    /// it must be; MSI synced ([`AssignedMsi::sync`]); MSI-X on where it may
    /// be (Function Mask mirrored); Interrupt Disable cleared last when MSI
    /// went off and the guest has it clear.
    fn sync_interrupts(&mut self) {
        let bdf = self.layout.bdf;
        let (msi_on, msix_on) = (self.msi_on(), self.msix_on());
        let intx_off = self.cs.raw(reg::COMMAND, 2) as u16 & command::INTERRUPT_DISABLE != 0;
        let status_rw1c = u32::from(status::RW1C_ERRORS) << 16;
        let set_intx_disable = |host: &mut A, on: bool| {
            let cmd = read16(host, bdf, reg::COMMAND);
            let want = if on {
                cmd | command::INTERRUPT_DISABLE
            } else {
                cmd & !command::INTERRUPT_DISABLE
            };
            if want != cmd {
                write16(host, bdf, reg::COMMAND, want, status_rw1c);
            }
        };
        if msi_on {
            set_intx_disable(&mut self.host, true);
        }
        let msix_device = self.msix.as_ref().map(|m| {
            let at = m.cap_offset() + 2;
            let guest = self.cs.raw(at, 2) as u16;
            let mut want = guest & filter::MSIX_CONTROL_RW as u16;
            if msi_on {
                want &= !vbus::msix::control::ENABLE;
            }
            (at, want)
        });
        let set_msix = |host: &mut A, at: u16, v: u16, only_off: bool| {
            let cur = read16(host, bdf, at);
            let rw = filter::MSIX_CONTROL_RW as u16;
            let want = (cur & !rw) | v;
            let turning_on = want & !cur & vbus::msix::control::ENABLE != 0;
            if want != cur && !(only_off && turning_on) {
                write16(host, bdf, at, want, 0);
            }
        };
        if let Some((at, want)) = msix_device {
            set_msix(&mut self.host, at, want, true);
        }
        if let Some(m) = self.msi.as_mut() {
            m.sync(&mut self.host, bdf, &mut self.cs, msix_on);
        }
        if let Some((at, want)) = msix_device {
            set_msix(&mut self.host, at, want, false);
        }
        if !msi_on {
            set_intx_disable(&mut self.host, intx_off);
        }
    }

    /// Function Level Reset through the host (PCI Express Base 6.0, 6.6.2).
    fn flr(&mut self, p: u16) {
        let bdf = self.layout.bdf;
        for _ in 0..PENDING_POLLS {
            if read16(&mut self.host, bdf, p + pcie::DEVICE_STATUS)
                & pcie::DEVSTA_TRANSACTIONS_PENDING
                == 0
            {
                break;
            }
            self.host.delay_us(10_000);
        }
        let dc = read16(&mut self.host, bdf, p + pcie::DEVICE_CONTROL);
        let devsta_rw1c = u32::from(pcie::DEVSTA_RW1C) << 16;
        write16(
            &mut self.host,
            bdf,
            p + pcie::DEVICE_CONTROL,
            dc | pcie::DEVCTL_INITIATE_FLR,
            devsta_rw1c,
        );
        self.host.delay_us(FLR_WAIT_US);
    }

    /// Secondary Bus Reset on the host parent bridge: assert, hold, deassert, recover.
    fn secondary_bus_reset(&mut self, bridge: vbus::Bdf) {
        let bc = read16(&mut self.host, bridge, type1::BRIDGE_CONTROL);
        write16(
            &mut self.host,
            bridge,
            type1::BRIDGE_CONTROL,
            bc | type1::SECONDARY_BUS_RESET,
            0,
        );
        self.host.delay_us(SBR_HOLD_US);
        write16(
            &mut self.host,
            bridge,
            type1::BRIDGE_CONTROL,
            bc & !type1::SECONDARY_BUS_RESET,
            0,
        );
        self.host.delay_us(RESET_RECOVERY_US);
    }
}

impl<A: ConfigAccess + Delay + BarAccess + Send> PciFunction for AssignedFunction<A> {
    fn config_read(&mut self, offset: u16, size: u8) -> u32 {
        if !Self::valid(offset, size) {
            self.stats.bad_accesses += 1;
            return match size {
                1 => 0xff,
                2 => 0xffff,
                _ => !0,
            };
        }
        if let Some(p) = self.msi.as_ref().and_then(AssignedMsi::pending_offset) {
            if offset & !3 == p {
                let bdf = self.layout.bdf;
                let bits = self
                    .msi
                    .as_ref()
                    .and_then(|m| m.pending_bits(&mut self.host, bdf))
                    .unwrap_or(0);
                return (bits >> (8 * (offset & 3))) & mask_of(size);
            }
        }
        let shadow = self.cs.read(offset, size);
        let mut host_mask = 0u32;
        for (i, _) in bytes(0, size) {
            host_mask |= u32::from(self.rule(offset + i).host_read) << (8 * i);
        }
        if host_mask == 0 {
            return shadow;
        }
        let live = self.host.read32(self.layout.bdf, offset & !3) >> (8 * (offset & 3));
        (live & host_mask) | (shadow & !host_mask)
    }

    fn config_write(&mut self, offset: u16, size: u8, value: u32, requests: &mut Vec<Request>) {
        if !Self::valid(offset, size) {
            self.stats.bad_accesses += 1;
            return;
        }
        if bytes(0, size).any(|(i, _)| !self.rule(offset + i).covered) {
            self.stats.hidden_writes += 1;
        }
        if let Some(p) = self.layout.pcie_capability {
            // Initiate FLR is bit 7 of Device Control's upper byte.
            let at = p + pcie::DEVICE_CONTROL + 1;
            if let Some(k) = at.checked_sub(offset).filter(|k| *k < u16::from(size)) {
                if (value >> (8 * k)) & 0x80 != 0 && self.layout.flr {
                    self.stats.flr_requests += 1;
                    requests.push(Request::FunctionLevelReset);
                }
            }
        }
        self.cs.write(offset, size, value);
        let msix_control = self
            .msix
            .as_ref()
            .is_some_and(|m| overlaps(offset, size, m.cap_offset() + 2, 2));
        let msi_cap = self.msi.as_ref().is_some_and(|m| m.touches(offset, size));
        if msix_control {
            if let Some(m) = self.msix.as_mut() {
                // Enable or Function Mask may have unmasked a pending vector.
                m.deliver_unmasked(&self.cs);
            }
        }
        if msi_cap {
            // A message, Enable or Multiple Message Enable may feed another SPI now.
            requests.push(Request::MsiMessageWritten);
        }
        self.write_through(offset, size, value);
        if msix_control || msi_cap || overlaps(offset, size, reg::COMMAND, 2) {
            self.sync_interrupts();
        }
    }

    fn config_space(&self) -> &ConfigSpace {
        &self.cs
    }

    fn bridge_bus_range(&self) -> Option<(u8, u8)> {
        None
    }

    fn bars(&self) -> &[BarInfo] {
        &self.bars
    }

    /// Every BAR is host-backed; only the MSI-X table and PBA pages trap
    /// (emulated, the rest of those pages from the device).
    fn bar_read(&mut self, bar: u8, offset: u64, size: u8, _: &mut Vec<Request>) -> u64 {
        match self.msix.as_mut() {
            Some(m) => m.read(&mut self.host, bar, offset, size),
            None => u64::MAX,
        }
    }

    /// A write to the MSI-X table asks the owner to steer the host
    /// vectors again ([`Request::MsiMessageWritten`]).
    fn bar_write(
        &mut self,
        bar: u8,
        offset: u64,
        size: u8,
        value: u64,
        requests: &mut Vec<Request>,
    ) {
        if let Some(m) = self.msix.as_mut() {
            if m.write(&mut self.host, &self.cs, bar, offset, size, value) {
                requests.push(Request::MsiMessageWritten);
            }
        }
    }

    fn bar_traps(&self, bar: u8) -> &[(u64, u64)] {
        self.msix.as_ref().map_or(&[], |m| m.traps(bar))
    }

    /// EventIDs below [`EventIds::msix`] are MSI-X vectors, those from
    /// [`EventIds::msi_base`] MSI vectors ([`AssignedFunction::events`]).
    fn host_msi(&mut self, event: u32) {
        if event < self.events.msix {
            if let Some(m) = self.msix.as_mut() {
                m.fire(&self.cs, event);
            }
        } else if let Some(v) = event.checked_sub(self.events.msi_base) {
            if let Some(m) = self.msi.as_mut() {
                m.fire(&self.cs, v);
            }
        }
    }

    fn host_msi_message(&self, event: u32) -> Option<vbus::MsiMessage> {
        if event < self.events.msix {
            self.msix.as_ref()?.message(usize::try_from(event).ok()?)
        } else {
            let v = event.checked_sub(self.events.msi_base)?;
            self.msi.as_ref()?.message(&self.cs, v)
        }
    }

    fn take_msi(&mut self, out: &mut Vec<vbus::MsiMessage>) {
        if let Some(m) = self.msix.as_mut() {
            m.take(out);
        }
        if let Some(m) = self.msi.as_mut() {
            m.take(out);
        }
    }

    fn msix_stats(&self) -> Option<vbus::MsixStats> {
        self.msix.as_ref().map(AssignedMsix::stats)
    }

    fn msi_capability_stats(&self) -> Option<vbus::MsiCapabilityStats> {
        self.msi.as_ref().map(AssignedMsi::stats)
    }

    /// FLR through the host when the function has it (then 100 ms), else
    /// Secondary Bus Reset on its host parent bridge; then the host BARs,
    /// Device Control and Link Control from the cached layout, and the
    /// emulated registers to their reset values.
    fn reset(&mut self) {
        match (
            self.layout.flr,
            self.layout.pcie_capability,
            self.layout.parent_bridge,
        ) {
            (true, Some(p), _) => self.flr(p),
            (_, _, Some(bridge)) => self.secondary_bus_reset(bridge),
            _ => self.stats.resets_without_method += 1,
        }
        self.restore_host();
        self.cs = self.initial.clone();
        if let Some(m) = self.msix.as_mut() {
            // The reset cleared the device's table: the doorbell and
            // EventIDs again, every vector masked.
            with_memory_space(&mut self.host, self.layout.bdf, |h| m.reset(h));
        }
        if let Some(m) = self.msi.as_mut() {
            // And its MSI capability: disabled, doorbell and first EventID.
            m.reset(&mut self.host, self.layout.bdf);
        }
    }

    fn intx(&self) -> Intx {
        match (self.layout.interrupt_pin, self.intid) {
            (1..=4, Some(id)) => Intx::Host(id),
            _ => Intx::None,
        }
    }

    /// The host device's own work needs nothing from us: its INTx reaches the
    /// guest hardware-linked.
    fn poll(&mut self) {}
}

#[cfg(test)]
mod tests;

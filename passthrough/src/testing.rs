//! A fake host PCI Express hierarchy for tests: [`FakeHost`] implements
//! [`ConfigAccess`] and [`Delay`] over a tree of [`FakeFunction`]s that behave
//! as the hardware they stand for does, closely enough for enumeration,
//! assignment and passthrough:
//!
//! * registers are values plus writable and RW1C masks (a [`ConfigSpace`]),
//!   so BAR sizing (write all ones, read back the size mask) and read-only
//!   bits behave as on hardware;
//! * configuration requests are routed by the bus numbers programmed into the
//!   bridges (PCI Express Base 6.0, 7.3.3); a Downstream Port passes device 0
//!   only; an absent function reads all ones;
//! * Initiate Function Level Reset (Device Control bit 15) of a function whose
//!   Device Capabilities say FLR returns it to its reset values (BARs and
//!   Command cleared) and leaves it unable to answer for 100 ms (6.6.2);
//!   Secondary Bus Reset on a bridge resets everything below it, which
//!   answers nothing while the bit is held and for 100 ms after (6.6.1);
//!   accesses that come too early read all ones, are dropped and are counted;
//! * every write and every delay is logged ([`HostEvent`]), so tests can
//!   assert exactly what reached the host.
//!
//! Canned functions model QEMU's `e1000e` (82574L, 8086:10d3), `igb` (82576,
//! 8086:10c9), `pcie-root-port` (1b36:000c), `x3130-upstream` (104c:8232)
//! and `xio3130-downstream` (104c:8233), and the `gpex` host bridge (1b36:0008).

use crate::access::{BarAccess, ConfigAccess, Delay};
use crate::regs::{bar, cap_id, ext_cap_id, pcie, pm, type0, type1};
use alloc::vec::Vec;
use arch_emu::addr::Pa;
use vbus::config::{command, reg, status};
use vbus::{Bdf, ConfigSpace};

/// Microseconds a function needs after a reset before it answers (PCI Express Base 6.0, 6.6.1 and 6.6.2).
pub const RESET_RECOVERY_US: u64 = 100_000;

/// Something that reached the fake host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostEvent {
    /// A config write that reached a function (`name` is the function's).
    Write {
        /// The function's name.
        name: &'static str,
        /// The address the request carried.
        bdf: Bdf,
        /// Dword offset.
        offset: u16,
        /// The dword written.
        value: u32,
    },
    /// A wait of this many microseconds.
    Delay(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Endpoint,
    /// A bridge; `downstream` for a Root Port or Switch Downstream Port, which
    /// pass device 0 only.
    Bridge {
        downstream: bool,
    },
}

/// One fake host function and, for a bridge, what is below it.
#[derive(Debug, Clone)]
pub struct FakeFunction {
    name: &'static str,
    kind: Kind,
    cs: ConfigSpace,
    initial: ConfigSpace,
    pcie_cap: Option<u16>,
    last_cap: Option<u16>,
    last_ext_cap: Option<u16>,
    below: Vec<(u8, u8, FakeFunction)>,
    /// The host clock (µs) from which the function answers again.
    ready_at: u64,
}

impl FakeFunction {
    fn new(name: &'static str, vendor: u16, device: u16, class: u32, kind: Kind) -> Self {
        let mut f = FakeFunction {
            name,
            kind,
            cs: ConfigSpace::new(),
            initial: ConfigSpace::new(),
            pcie_cap: None,
            last_cap: None,
            last_ext_cap: None,
            below: Vec::new(),
            ready_at: 0,
        };
        f.both(|cs| {
            cs.set_u16(reg::VENDOR_ID, vendor);
            cs.set_u16(reg::DEVICE_ID, device);
            cs.set_u32(0x08, class << 8);
            cs.set_writable(
                reg::COMMAND,
                2,
                u32::from(
                    command::IO_SPACE
                        | command::MEMORY_SPACE
                        | command::BUS_MASTER
                        | command::PARITY_ERROR_RESPONSE
                        | command::SERR_ENABLE
                        | command::INTERRUPT_DISABLE,
                ),
            );
            cs.set_w1c(reg::STATUS, 2, u32::from(status::RW1C_ERRORS));
            cs.set_writable(reg::CACHE_LINE_SIZE, 1, 0xff);
            cs.set_writable(reg::INTERRUPT_LINE, 1, 0xff);
        });
        if let Kind::Bridge { .. } = kind {
            f.both(|cs| {
                cs.set_u8(reg::HEADER_TYPE, 0x01);
                cs.set_writable(type1::PRIMARY_BUS, 4, 0x00ff_ffff);
                cs.set_writable(type1::IO_BASE, 2, 0xf0f0);
                cs.set_w1c(type1::SECONDARY_STATUS, 2, u32::from(status::RW1C_ERRORS));
                cs.set_writable(type1::MEMORY_BASE, 4, 0xfff0_fff0);
                cs.set_u32(type1::PREFETCHABLE_BASE, 0x0001_0001);
                cs.set_writable(type1::PREFETCHABLE_BASE, 4, 0xfff0_fff0);
                cs.set_writable(type1::PREFETCHABLE_BASE_UPPER, 4, !0);
                cs.set_writable(type1::PREFETCHABLE_LIMIT_UPPER, 4, !0);
                cs.set_writable(
                    type1::BRIDGE_CONTROL,
                    2,
                    u32::from(0x0003 | type1::SECONDARY_BUS_RESET),
                );
            });
        }
        f
    }

    /// Applies a construction step to both the current and the reset state.
    fn both(&mut self, mut step: impl FnMut(&mut ConfigSpace)) {
        step(&mut self.cs);
        step(&mut self.initial);
    }

    /// A type-0 function with these IDs and class code (base, sub, prog-if as 24 bits), no BARs or capabilities.
    pub fn endpoint(name: &'static str, vendor: u16, device: u16, class: u32) -> Self {
        Self::new(name, vendor, device, class, Kind::Endpoint)
    }

    /// A type-1 function (PCI-to-PCI bridge, class 060400h) with no capabilities.
    pub fn bridge(name: &'static str, vendor: u16, device: u16, downstream: bool) -> Self {
        Self::new(
            name,
            vendor,
            device,
            0x06_04_00,
            Kind::Bridge { downstream },
        )
    }

    /// Subsystem Vendor ID and Subsystem ID.
    pub fn subsystem(mut self, vendor: u16, id: u16) -> Self {
        self.both(|cs| {
            cs.set_u32(
                type0::SUBSYSTEM_VENDOR_ID,
                u32::from(vendor) | u32::from(id) << 16,
            )
        });
        self
    }

    /// Revision ID.
    pub fn revision(mut self, rev: u8) -> Self {
        self.both(|cs| cs.set_u8(reg::REVISION_ID, rev));
        self
    }

    /// Interrupt Pin (1 = INTA .. 4 = INTD).
    pub fn interrupt_pin(mut self, pin: u8) -> Self {
        self.both(|cs| cs.set_u8(reg::INTERRUPT_PIN, pin));
        self
    }

    /// A 32-bit memory BAR `index` of `size` bytes (a power of two, at least 16).
    pub fn mem32_bar(mut self, index: u8, size: u32, prefetchable: bool) -> Self {
        let off = reg::BAR0 + 4 * u16::from(index);
        let flags = if prefetchable { bar::PREFETCHABLE } else { 0 };
        self.both(|cs| {
            cs.set_u32(off, flags);
            cs.set_writable(off, 4, !(size.wrapping_sub(1)) & bar::MEM_ADDRESS);
        });
        self
    }

    /// A 64-bit memory BAR at `index` and `index + 1` of `size` bytes.
    pub fn mem64_bar(mut self, index: u8, size: u64, prefetchable: bool) -> Self {
        let off = reg::BAR0 + 4 * u16::from(index);
        let flags = bar::TYPE_64 | if prefetchable { bar::PREFETCHABLE } else { 0 };
        let mask = !(size.wrapping_sub(1));
        self.both(|cs| {
            cs.set_u32(off, flags);
            cs.set_writable(off, 4, mask as u32 & bar::MEM_ADDRESS);
            cs.set_writable(off + 4, 4, (mask >> 32) as u32);
        });
        self
    }

    /// An I/O BAR `index` of `size` bytes.
    pub fn io_bar(mut self, index: u8, size: u32) -> Self {
        let off = reg::BAR0 + 4 * u16::from(index);
        self.both(|cs| {
            cs.set_u32(off, bar::IO_SPACE);
            cs.set_writable(off, 4, !(size.wrapping_sub(1)) & bar::IO_ADDRESS & 0xffff);
        });
        self
    }

    /// An Expansion ROM BAR of `size` bytes.
    pub fn rom(mut self, size: u32) -> Self {
        let off = self.rom_offset();
        self.both(|cs| {
            cs.set_writable(
                off,
                4,
                (!(size.wrapping_sub(1)) & bar::ROM_ADDRESS) | bar::ROM_ENABLE,
            )
        });
        self
    }

    fn rom_offset(&self) -> u16 {
        match self.kind {
            Kind::Endpoint => type0::EXPANSION_ROM,
            Kind::Bridge { .. } => type1::EXPANSION_ROM,
        }
    }

    /// Appends a standard capability at `at` (at least 0x40, dword aligned) to the chain.
    pub fn capability(mut self, at: u16, id: u8) -> Self {
        let prev = self.last_cap;
        self.both(|cs| {
            cs.set_u8(at, id);
            match prev {
                None => cs.set_u8(reg::CAPABILITIES_POINTER, at as u8),
                Some(p) => cs.set_u8(p + 1, at as u8),
            }
            let st = cs.raw(reg::STATUS, 2) as u16 | status::CAPABILITIES_LIST;
            cs.set_u16(reg::STATUS, st);
        });
        self.last_cap = Some(at);
        self
    }

    /// Appends an extended capability (version 1, or 2 for AER) at `at` (0x100 first).
    pub fn ext_capability(mut self, at: u16, id: u16) -> Self {
        let prev = self.last_ext_cap;
        let version: u32 = if id == ext_cap_id::AER { 2 } else { 1 };
        self.both(|cs| {
            cs.set_u32(at, u32::from(id) | version << 16);
            if let Some(p) = prev {
                let h = cs.raw(p, 4) & 0x000f_ffff;
                cs.set_u32(p, h | u32::from(at) << 20);
            }
        });
        self.last_ext_cap = Some(at);
        self
    }

    /// Sets a register's reset value and masks (after the capability that holds it).
    pub fn register(mut self, offset: u16, size: u8, value: u32, writable: u32, w1c: u32) -> Self {
        self.both(|cs| {
            cs.set_writable(offset, size, writable);
            cs.set_w1c(offset, size, w1c);
            match size {
                1 => cs.set_u8(offset, value as u8),
                2 => cs.set_u16(offset, value as u16),
                _ => cs.set_u32(offset, value),
            }
        });
        self
    }

    /// A Power Management capability at `at`: version 3, D0/D3hot, No_Soft_Reset.
    pub fn pm_capability(self, at: u16) -> Self {
        self.capability(at, cap_id::PM)
            .register(at + pm::PMC, 2, 0x0003, 0, 0)
            .register(at + pm::PMCSR, 2, 0x0008, 0x8103, 0x8000)
    }

    /// An MSI capability at `at` (64-bit, one vector, no per-vector masking).
    pub fn msi_capability(self, at: u16) -> Self {
        self.msi_capability_with(at, 0, true, false)
    }

    /// An MSI capability at `at` as QEMU's `msi_init` builds it: `2^log2`
    /// vectors (Multiple Message Capable), 64-bit addresses when `is_64bit`,
    /// Mask Bits and Pending Bits when `masking` (PCI Express Base 6.0,
    /// 7.7.1). MSI Enable, Multiple Message Enable, the address, the 16-bit
    /// data and one Mask Bit per vector are writable.
    pub fn msi_capability_with(self, at: u16, log2: u8, is_64bit: bool, masking: bool) -> Self {
        let control = u32::from(log2) << 1
            | if is_64bit { 0x80 } else { 0 }
            | if masking { 0x100 } else { 0 };
        let data = if is_64bit { at + 12 } else { at + 8 };
        let f = self
            .capability(at, cap_id::MSI)
            .register(at + 2, 2, control, 0x0071, 0)
            .register(at + 4, 4, 0, !3, 0)
            .register(data, 2, 0, 0xffff, 0);
        let f = if is_64bit {
            f.register(at + 8, 4, 0, !0, 0)
        } else {
            f
        };
        if masking {
            let vectors = u32::MAX >> (32 - (1u32 << log2));
            f.register(data + 4, 4, 0, vectors, 0)
                .register(data + 8, 4, 0, 0, 0)
        } else {
            f
        }
    }

    /// An MSI-X capability at `at`: `vectors` entries, table in BAR `bir` at
    /// `table`, PBA in the same BAR at `pba`.
    pub fn msix_capability(self, at: u16, vectors: u16, bir: u8, table: u32, pba: u32) -> Self {
        self.capability(at, cap_id::MSIX)
            .register(at + 2, 2, u32::from(vectors.saturating_sub(1)), 0xc000, 0)
            .register(at + 4, 4, table | u32::from(bir), 0, 0)
            .register(at + 8, 4, pba | u32::from(bir), 0, 0)
    }

    /// A version-2 PCI Express capability at `at` of Device/Port Type
    /// `port_type`, with Function Level Reset when `flr`.
    pub fn pcie_capability(mut self, at: u16, port_type: u16, flr: bool) -> Self {
        self.pcie_cap = Some(at);
        let slot = if matches!(port_type, pcie::TYPE_ROOT_PORT | pcie::TYPE_DOWNSTREAM) {
            1 << 8
        } else {
            0
        };
        self.capability(at, cap_id::PCIE)
            .register(
                at + pcie::CAPABILITIES,
                2,
                u32::from(0x2 | port_type << pcie::TYPE_SHIFT | slot),
                0,
                0,
            )
            // Max_Payload_Size Supported 256 bytes; Extended Tag; Role-Based Error Reporting.
            .register(
                at + pcie::DEVICE_CAPABILITIES,
                4,
                0x0000_8021 | if flr { pcie::DEVCAP_FLR } else { 0 },
                0,
                0,
            )
            // Relaxed Ordering, No Snoop, Max_Read_Request_Size 512 bytes (reset values).
            .register(
                at + pcie::DEVICE_CONTROL,
                2,
                0x2810,
                0x7fff | u32::from(pcie::DEVCTL_INITIATE_FLR),
                0,
            )
            .register(
                at + pcie::DEVICE_STATUS,
                2,
                0,
                0,
                u32::from(pcie::DEVSTA_RW1C),
            )
            // 2.5 GT/s x1, Port Number 0.
            .register(at + pcie::LINK_CAPABILITIES, 4, 0x0000_0011, 0, 0)
            .register(at + pcie::LINK_CONTROL, 2, 0, 0x0fcb, 0)
            .register(at + pcie::LINK_STATUS, 2, 0x1011, 0, 0xc000)
            .register(at + pcie::DEVICE_CONTROL2, 2, 0, 0x041f, 0)
    }

    /// The name given at construction.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Its registers now (bypassing routing and reset state).
    pub fn config(&self) -> &ConfigSpace {
        &self.cs
    }

    /// Puts `f` at `dev`.`func` on this bridge's secondary bus.
    pub fn with_below(mut self, dev: u8, func: u8, f: FakeFunction) -> Self {
        self.below.push((dev, func, f));
        self
    }

    /// Firmware-programmed bus numbers (not reset values).
    pub fn firmware_buses(mut self, primary: u8, secondary: u8, subordinate: u8) -> Self {
        let v = u32::from(primary) | u32::from(secondary) << 8 | u32::from(subordinate) << 16;
        self.cs.write(type1::PRIMARY_BUS, 4, v);
        self
    }

    /// A firmware-programmed register (written through the masks, not a reset value).
    pub fn firmware(mut self, offset: u16, size: u8, value: u32) -> Self {
        self.cs.write(offset, size, value);
        self
    }

    fn reset_all(&mut self, ready_at: u64) {
        self.cs = self.initial.clone();
        self.ready_at = ready_at;
        for (_, _, f) in &mut self.below {
            f.reset_all(ready_at);
        }
    }

    fn secondary_bus_reset(&self) -> bool {
        matches!(self.kind, Kind::Bridge { .. })
            && self.cs.raw(type1::BRIDGE_CONTROL, 2) as u16 & type1::SECONDARY_BUS_RESET != 0
    }

    fn write(&mut self, offset: u16, value: u32, now: u64) {
        let sbr_before = self.secondary_bus_reset();
        let flr = self.pcie_cap.is_some_and(|p| {
            offset == p + pcie::DEVICE_CONTROL
                && value & u32::from(pcie::DEVCTL_INITIATE_FLR) != 0
                && self.cs.raw(p + pcie::DEVICE_CAPABILITIES, 4) & pcie::DEVCAP_FLR != 0
        });
        if flr {
            self.cs = self.initial.clone();
            self.ready_at = now + RESET_RECOVERY_US;
            return;
        }
        self.cs.write(offset, 4, value);
        // Initiate FLR always reads 0 (PCI Express Base 6.0, 7.5.3.4).
        if let Some(p) = self.pcie_cap {
            let dc = self.cs.raw(p + pcie::DEVICE_CONTROL, 2) as u16 & !pcie::DEVCTL_INITIATE_FLR;
            self.cs.set_u16(p + pcie::DEVICE_CONTROL, dc);
        }
        match (sbr_before, self.secondary_bus_reset()) {
            (false, true) => self
                .below
                .iter_mut()
                .for_each(|(_, _, f)| f.reset_all(u64::MAX)),
            (true, false) => self
                .below
                .iter_mut()
                .for_each(|(_, _, f)| f.reset_all(now + RESET_RECOVERY_US)),
            _ => {}
        }
    }
}

/// The canned functions.
impl FakeFunction {
    /// QEMU's `e1000e` (Intel 82574L, 8086:10d3, subsystem 8086:0000): BAR0
    /// 128 KiB memory, BAR1 128 KiB flash, BAR2 32-byte I/O, BAR3 16 KiB
    /// MSI-X, a 256 KiB Expansion ROM, INTA; capabilities PM (C8h), MSI (D0h),
    /// PCI Express (E0h, FLR), MSI-X (A0h, 5 vectors, table at BAR3+0,
    /// PBA at BAR3+2000h); extended AER (100h) and Device Serial Number (140h).
    pub fn e1000e() -> Self {
        Self::e1000e_with_msi(0xd0, 0, true, false)
    }

    /// [`FakeFunction::e1000e`] with another MSI capability, at `at`
    /// (D0h, or in the free space 40h..A0h when it is longer than 10h: it
    /// must end before the PCI Express capability at E0h): `2^log2`
    /// vectors, 64-bit addresses when `is_64bit`, per-vector masking when
    /// `masking` (see [`FakeFunction::msi_capability_with`]).
    pub fn e1000e_with_msi(at: u16, log2: u8, is_64bit: bool, masking: bool) -> Self {
        Self::endpoint("e1000e", 0x8086, 0x10d3, 0x02_00_00)
            .subsystem(0x8086, 0x0000)
            .interrupt_pin(1)
            .mem32_bar(0, 128 << 10, false)
            .mem32_bar(1, 128 << 10, false)
            .io_bar(2, 32)
            .mem32_bar(3, 16 << 10, false)
            .rom(256 << 10)
            .pm_capability(0xc8)
            .msi_capability_with(at, log2, is_64bit, masking)
            .pcie_capability(0xe0, pcie::TYPE_ENDPOINT, true)
            .msix_capability(0xa0, 5, 3, 0, 0x2000)
            .ext_capability(0x100, ext_cap_id::AER)
            .register(0x104, 4, 0, 0, 0x003f_f01f) // Uncorrectable Error Status
            .ext_capability(0x140, ext_cap_id::DSN)
            .register(0x144, 4, 0x5254_0012, 0, 0)
            .register(0x148, 4, 0x3456_0000, 0, 0)
    }

    /// QEMU's `igb` (Intel 82576, 8086:10c9, subsystem 8086:0000): BAR0
    /// 128 KiB 64-bit memory, BAR2 32-byte I/O, BAR3 16 KiB 64-bit
    /// prefetchable MSI-X, INTA; capabilities PM (40h), MSI (50h, 64-bit,
    /// one vector, per-vector masking), MSI-X (70h, 10 vectors, table at
    /// BAR3+0, PBA at BAR3+2000h), PCI Express (A0h, FLR); extended AER
    /// (100h), ARI (150h), SR-IOV (160h).
    pub fn igb() -> Self {
        Self::endpoint("igb", 0x8086, 0x10c9, 0x02_00_00)
            .subsystem(0x8086, 0x0000)
            .revision(1)
            .interrupt_pin(1)
            .mem64_bar(0, 128 << 10, false)
            .io_bar(2, 32)
            .mem64_bar(3, 16 << 10, true)
            .pm_capability(0x40)
            .msi_capability_with(0x50, 0, true, true)
            .msix_capability(0x70, 10, 3, 0, 0x2000)
            .pcie_capability(0xa0, pcie::TYPE_ENDPOINT, true)
            .ext_capability(0x100, ext_cap_id::AER)
            .ext_capability(0x150, ext_cap_id::ARI)
            .ext_capability(0x160, ext_cap_id::SRIOV)
            .register(0x160 + 0x0e, 2, 8, 0, 0) // InitialVFs
    }

    /// QEMU's `pcie-root-port` (1b36:000c): PCI Express (Root Port, 54h),
    /// PM (48h), ACS (100h). Root Ports have no FLR.
    pub fn root_port() -> Self {
        Self::bridge("pcie-root-port", 0x1b36, 0x000c, true)
            .interrupt_pin(1)
            .pcie_capability(0x54, pcie::TYPE_ROOT_PORT, false)
            .pm_capability(0x48)
            .ext_capability(0x100, ext_cap_id::ACS)
    }

    /// QEMU's `x3130-upstream` (104c:8232): PCI Express (Upstream Port, 90h), PM (80h).
    pub fn switch_upstream() -> Self {
        Self::bridge("x3130-upstream", 0x104c, 0x8232, false)
            .pm_capability(0x80)
            .pcie_capability(0x90, pcie::TYPE_UPSTREAM, false)
            .ext_capability(0x100, ext_cap_id::AER)
    }

    /// QEMU's `xio3130-downstream` (104c:8233): PCI Express (Downstream
    /// Port, 90h), PM (80h), ACS (100h), ARI Forwarding in Device Capabilities 2.
    pub fn switch_downstream() -> Self {
        Self::bridge("xio3130-downstream", 0x104c, 0x8233, true)
            .pm_capability(0x80)
            .pcie_capability(0x90, pcie::TYPE_DOWNSTREAM, false)
            .register(0x90 + pcie::DEVICE_CAPABILITIES2, 4, 1 << 5, 0, 0)
            .ext_capability(0x100, ext_cap_id::ACS)
    }

    /// QEMU's `gpex` host bridge function at 00:00.0 (1b36:0008, class 060000h).
    pub fn host_bridge() -> Self {
        Self::endpoint("gpex-host-bridge", 0x1b36, 0x0008, 0x06_00_00)
    }
}

/// A fake host segment: functions on its root bus and what is below them.
#[derive(Debug, Clone)]
pub struct FakeHost {
    root_bus: u8,
    root: Vec<(u8, u8, FakeFunction)>,
    log: Vec<HostEvent>,
    now: u64,
    early_accesses: u64,
    /// Host BAR memory by byte address (unwritten bytes read 0).
    mmio: alloc::collections::BTreeMap<u64, u8>,
    /// BAR writes: (PA, size, value).
    mmio_writes: Vec<(u64, u8, u64)>,
    /// BAR writes no function took: no memory BAR decodes the address, or
    /// the function's Memory Space Enable is off (PCI Local Bus 3.0, 6.2.2:
    /// with it clear the device does not respond to memory accesses).
    dropped_mmio_writes: u64,
}

fn mark_multifunction(list: &mut [(u8, u8, FakeFunction)]) {
    let multi: Vec<u8> = list
        .iter()
        .filter(|(_, f, _)| *f != 0)
        .map(|(d, _, _)| *d)
        .collect();
    for (dev, func, f) in list.iter_mut() {
        if *func == 0 && multi.contains(dev) {
            f.both(|cs| {
                let h = cs.raw(reg::HEADER_TYPE, 1) as u8 | 0x80;
                cs.set_u8(reg::HEADER_TYPE, h);
            });
        }
        mark_multifunction(&mut f.below);
    }
}

/// Whether `bus` lies behind bridge `f` as programmed (an unprogrammed secondary of 0 claims nothing).
fn claims(f: &FakeFunction, bus: u8) -> bool {
    if !matches!(f.kind, Kind::Bridge { .. }) {
        return false;
    }
    let sec = f.cs.raw(type1::SECONDARY_BUS, 1) as u8;
    let sub = f.cs.raw(type1::SUBORDINATE_BUS, 1) as u8;
    sec != 0 && sec <= bus && bus <= sub
}

/// The function a request for `bdf` reaches on a bus whose functions are
/// `list`, `Err(())` when it is blocked by a reset in progress.
fn route(
    list: &mut [(u8, u8, FakeFunction)],
    on_bus: u8,
    downstream: bool,
    bdf: Bdf,
    now: u64,
) -> Result<Option<&mut FakeFunction>, ()> {
    if bdf.bus() == on_bus {
        if downstream && bdf.dev() != 0 {
            return Ok(None);
        }
        let f = list
            .iter_mut()
            .find(|(d, f, _)| *d == bdf.dev() && *f == bdf.func());
        return match f {
            Some((_, _, f)) if f.ready_at > now => Err(()),
            Some((_, _, f)) => Ok(Some(f)),
            None => Ok(None),
        };
    }
    for (_, _, f) in list.iter_mut() {
        if claims(f, bdf.bus()) {
            if f.ready_at > now {
                return Err(());
            }
            let sec = f.cs.raw(type1::SECONDARY_BUS, 1) as u8;
            let downstream = matches!(f.kind, Kind::Bridge { downstream: true });
            return route(&mut f.below, sec, downstream, bdf, now);
        }
    }
    Ok(None)
}

impl FakeFunction {
    /// `Some(Memory Space Enable)` if one of its memory BARs, as programmed,
    /// holds `pa`; `None` if none does.
    fn decodes(&self, pa: u64) -> Option<bool> {
        // A Type 0 header has six BARs, a Type 1 (bridge) header two.
        let bars = if self.cs.raw(reg::HEADER_TYPE, 1) & 0x7f == 0 {
            6
        } else {
            2
        };
        let mut i = 0u16;
        while i < bars {
            let off = reg::BAR0 + 4 * i;
            let lo = self.cs.raw(off, 4);
            let wlo = self.cs.writable(off, 4);
            if lo & bar::IO_SPACE != 0 || wlo == 0 {
                i += 1;
                continue;
            }
            let (base, mask) = if lo & bar::TYPE_64 != 0 {
                let hi = u64::from(self.cs.raw(off + 4, 4));
                let whi = u64::from(self.cs.writable(off + 4, 4));
                i += 2;
                (
                    u64::from(lo & bar::MEM_ADDRESS) | hi << 32,
                    u64::from(wlo) | whi << 32,
                )
            } else {
                i += 1;
                (
                    u64::from(lo & bar::MEM_ADDRESS),
                    u64::from(wlo) | 0xffff_ffff_0000_0000,
                )
            };
            let size = (!(mask | 0xf)).wrapping_add(1);
            if pa >= base && pa - base < size {
                let cmd = self.cs.raw(reg::COMMAND, 2) as u16;
                return Some(cmd & vbus::config::command::MEMORY_SPACE != 0);
            }
        }
        None
    }
}

/// `Some(Memory Space Enable)` of the endpoint whose memory BAR holds `pa`.
fn decoder(list: &[(u8, u8, FakeFunction)], pa: u64) -> Option<bool> {
    list.iter()
        .find_map(|(_, _, f)| f.decodes(pa).or_else(|| decoder(&f.below, pa)))
}

fn find_by_name_mut<'a>(
    list: &'a mut [(u8, u8, FakeFunction)],
    name: &str,
) -> Option<&'a mut FakeFunction> {
    for (_, _, f) in list.iter_mut() {
        if f.name == name {
            return Some(f);
        }
        if let Some(x) = find_by_name_mut(&mut f.below, name) {
            return Some(x);
        }
    }
    None
}

fn find_by_name<'a>(list: &'a [(u8, u8, FakeFunction)], name: &str) -> Option<&'a FakeFunction> {
    list.iter().find_map(|(_, _, f)| {
        if f.name == name {
            Some(f)
        } else {
            find_by_name(&f.below, name)
        }
    })
}

impl FakeHost {
    /// A host segment whose root bus is `root_bus`, holding `root` (`(dev, func, function)`).
    /// Functions sharing a device number get the Multi-Function bit on function 0.
    pub fn new(root_bus: u8, mut root: Vec<(u8, u8, FakeFunction)>) -> Self {
        mark_multifunction(&mut root);
        FakeHost {
            root_bus,
            root,
            log: Vec::new(),
            now: 0,
            early_accesses: 0,
            mmio: alloc::collections::BTreeMap::new(),
            mmio_writes: Vec::new(),
            dropped_mmio_writes: 0,
        }
    }

    /// QEMU virt: the host bridge at 00:00.0 and an e1000e directly on bus 0 at 00:01.0.
    pub fn endpoint_on_root_bus() -> Self {
        Self::new(
            0,
            alloc::vec![
                (0, 0, FakeFunction::host_bridge()),
                (1, 0, FakeFunction::e1000e())
            ],
        )
    }

    /// QEMU virt: the host bridge and an e1000e behind a root port at 00:01.0.
    pub fn behind_root_port() -> Self {
        Self::new(
            0,
            alloc::vec![
                (0, 0, FakeFunction::host_bridge()),
                (
                    1,
                    0,
                    FakeFunction::root_port().with_below(0, 0, FakeFunction::e1000e())
                ),
            ],
        )
    }

    /// QEMU virt: the host bridge and `f` behind a root port at 00:01.0.
    pub fn one_behind_root_port(f: FakeFunction) -> Self {
        Self::new(
            0,
            alloc::vec![
                (0, 0, FakeFunction::host_bridge()),
                (1, 0, FakeFunction::root_port().with_below(0, 0, f)),
            ],
        )
    }

    /// QEMU virt: the host bridge, a root port at 00:01.0 with an e1000e, and
    /// a root port at 00:02.0 with a switch whose two downstream ports (00.0, 01.0)
    /// hold an igb and nothing.
    pub fn behind_switch() -> Self {
        let switch = FakeFunction::switch_upstream()
            .with_below(
                0,
                0,
                FakeFunction::switch_downstream().with_below(0, 0, FakeFunction::igb()),
            )
            .with_below(1, 0, FakeFunction::switch_downstream());
        Self::new(
            0,
            alloc::vec![
                (0, 0, FakeFunction::host_bridge()),
                (
                    1,
                    0,
                    FakeFunction::root_port().with_below(0, 0, FakeFunction::e1000e())
                ),
                (2, 0, FakeFunction::root_port().with_below(0, 0, switch)),
            ],
        )
    }

    /// Everything logged so far.
    pub fn log(&self) -> &[HostEvent] {
        &self.log
    }

    /// The writes logged so far: (function name, dword offset, value).
    pub fn writes(&self) -> Vec<(&'static str, u16, u32)> {
        self.log
            .iter()
            .filter_map(|e| match *e {
                HostEvent::Write {
                    name,
                    offset,
                    value,
                    ..
                } => Some((name, offset, value)),
                HostEvent::Delay(_) => None,
            })
            .collect()
    }

    /// Forgets the log.
    pub fn clear_log(&mut self) {
        self.log.clear();
    }

    /// The host clock: microseconds waited so far.
    pub fn now_us(&self) -> u64 {
        self.now
    }

    /// Accesses that reached a function still in reset (answered all ones or dropped).
    pub fn early_accesses(&self) -> u64 {
        self.early_accesses
    }

    /// The function named `name` (first in depth-first order).
    pub fn function(&self, name: &str) -> Option<&FakeFunction> {
        find_by_name(&self.root, name)
    }

    /// Sets a register of the function named `name` as its hardware would
    /// (a status or pending bit), bypassing the write masks; false if
    /// there is no such function.
    pub fn set_register(&mut self, name: &str, offset: u16, size: u8, value: u32) -> bool {
        match find_by_name_mut(&mut self.root, name) {
            Some(f) => {
                match size {
                    1 => f.cs.set_u8(offset, value as u8),
                    2 => f.cs.set_u16(offset, value as u16),
                    _ => f.cs.set_u32(offset, value),
                }
                true
            }
            None => false,
        }
    }
}

impl ConfigAccess for FakeHost {
    fn read32(&mut self, bdf: Bdf, offset: u16) -> u32 {
        let now = self.now;
        match route(&mut self.root, self.root_bus, false, bdf, now) {
            Ok(Some(f)) => f.cs.read(offset & !3, 4),
            Ok(None) => !0,
            Err(()) => {
                self.early_accesses += 1;
                !0
            }
        }
    }

    fn write32(&mut self, bdf: Bdf, offset: u16, value: u32) {
        let now = self.now;
        match route(&mut self.root, self.root_bus, false, bdf, now) {
            Ok(Some(f)) => {
                let offset = offset & !3;
                f.write(offset, value, now);
                let name = f.name;
                self.log.push(HostEvent::Write {
                    name,
                    bdf,
                    offset,
                    value,
                });
            }
            Ok(None) => {}
            Err(()) => self.early_accesses += 1,
        }
    }
}

impl FakeHost {
    /// The BAR writes so far: (PA, size, value).
    pub fn mmio_writes(&self) -> &[(u64, u8, u64)] {
        &self.mmio_writes
    }

    /// The 32-bit BAR word at `pa` now (as the device holds it).
    pub fn mmio32(&self, pa: u64) -> u32 {
        (0..4).fold(0, |v, i| {
            v | u32::from(self.mmio.get(&(pa + i)).copied().unwrap_or(0)) << (8 * i)
        })
    }

    /// Sets BAR bytes as the device would (its own registers, its PBA).
    pub fn set_mmio32(&mut self, pa: u64, value: u32) {
        for i in 0..4 {
            self.mmio.insert(pa + i, (value >> (8 * i)) as u8);
        }
    }

    /// BAR writes dropped because no BAR decoded them or Memory Space was off.
    pub fn dropped_mmio_writes(&self) -> u64 {
        self.dropped_mmio_writes
    }

    /// Forgets the BAR writes logged.
    pub fn clear_mmio_writes(&mut self) {
        self.mmio_writes.clear();
    }
}

impl BarAccess for FakeHost {
    fn bar_read(&mut self, pa: Pa, size: u8) -> u64 {
        assert!(
            matches!(size, 1 | 2 | 4 | 8) && pa.0 % u64::from(size) == 0,
            "unaligned host BAR read {pa} size {size}"
        );
        (0..u64::from(size)).fold(0, |v, i| {
            v | u64::from(self.mmio.get(&(pa.0 + i)).copied().unwrap_or(0)) << (8 * i)
        })
    }

    fn bar_write(&mut self, pa: Pa, size: u8, value: u64) {
        assert!(
            matches!(size, 1 | 2 | 4 | 8) && pa.0 % u64::from(size) == 0,
            "unaligned host BAR write {pa} size {size}"
        );
        // A device answers memory writes only to its BARs, and only with
        // Memory Space Enable set.
        if decoder(&self.root, pa.0) != Some(true) {
            self.dropped_mmio_writes += 1;
            return;
        }
        for i in 0..u64::from(size) {
            self.mmio.insert(pa.0 + i, (value >> (8 * i)) as u8);
        }
        self.mmio_writes.push((pa.0, size, value));
    }
}

impl Delay for FakeHost {
    fn delay_us(&mut self, us: u32) {
        self.now = self.now.saturating_add(u64::from(us));
        self.log.push(HostEvent::Delay(us));
    }
}

/// QEMU virt's host bridge ranges (`hw/arm/virt.c`): 32-bit memory at
/// 1000_0000h (2EFF_0000h bytes) and 64-bit prefetchable memory at
/// 80_0000_0000h (512 GiB), CPU address equal to PCI address.
pub fn qemu_windows() -> crate::assign::HostWindows {
    use crate::assign::{HostRange, HostWindows};
    use arch_emu::addr::Pa;
    HostWindows {
        mem32: HostRange {
            cpu: Pa(0x1000_0000),
            pci: 0x1000_0000,
            size: 0x2eff_0000,
        },
        mem64_prefetchable: Some(HostRange {
            cpu: Pa(0x80_0000_0000),
            pci: 0x80_0000_0000,
            size: 0x80_0000_0000,
        }),
    }
}

/// The physical INTID [`assigned`] gives its function.
pub const TEST_INTID: u32 = 42;

/// Enumerates and assigns `host` (QEMU's ranges), clears its log, and
/// assigns the function at `bdf` with INTID [`TEST_INTID`].
pub fn assigned(mut host: FakeHost, bdf: Bdf) -> crate::AssignedFunction<FakeHost> {
    let t = crate::enumerate(&mut host, 0..=255).expect("fake host enumerates");
    let a = crate::assign(&t, &mut host, qemu_windows()).expect("fake host assigns");
    let layout = crate::HostFunction::capture(&mut host, &t, &a, bdf).expect("function exists");
    host.clear_log();
    crate::AssignedFunction::new(host, layout, Some(TEST_INTID))
}

/// The e1000e behind a root port (host 01:00.0), assigned.
pub fn assigned_e1000e() -> crate::AssignedFunction<FakeHost> {
    assigned(FakeHost::behind_root_port(), Bdf::from_routing_id(0x0100))
}

/// The host ITS doorbell (GITS_TRANSLATER) [`assigned_e1000e_msi`] routes to.
pub const TEST_DOORBELL: u64 = 0x0809_0040;
/// The guest's GICD_SETSPI_NSR doorbell in [`test_msi_route`].
pub const TEST_GUEST_DOORBELL: u64 = 0x0800_0040;
/// The guest's MBI SPIs in [`test_msi_route`]: 64..128.
pub const TEST_MBI: arch_emu::vgic::MbiRange = arch_emu::vgic::MbiRange {
    first: 64,
    count: 64,
};

/// The MSI route of the test functions.
pub fn test_msi_route() -> crate::MsiRoute {
    crate::MsiRoute {
        doorbell: Pa(TEST_DOORBELL),
        guest: vbus::MsiTarget {
            doorbell: arch_emu::addr::Ipa(TEST_GUEST_DOORBELL),
            spis: TEST_MBI,
        },
    }
}

/// The e1000e behind a root port, assigned with its MSI-X shown (5
/// vectors, table at BAR3 + 0, PBA at BAR3 + 2000h) and its MSI (D0h,
/// 64-bit, one vector, EventID 5), BAR log cleared.
pub fn assigned_e1000e_msi() -> crate::AssignedFunction<FakeHost> {
    let mut f = assigned_e1000e().with_msi(test_msi_route());
    f.host_mut().clear_mmio_writes();
    f
}

/// `f` (named as its canned function, e.g. "e1000e") behind a root port
/// (host 01:00.0), assigned with its MSIs routed ([`test_msi_route`]),
/// host log and BAR log cleared.
pub fn assigned_msi_of(f: FakeFunction) -> crate::AssignedFunction<FakeHost> {
    let mut a = assigned(
        FakeHost::one_behind_root_port(f),
        Bdf::from_routing_id(0x0100),
    )
    .with_msi(test_msi_route());
    a.host_mut().clear_mmio_writes();
    a.host_mut().clear_log();
    a
}

/// Host config writes that could move or resize something: to a BAR, the
/// Expansion ROM, or any register of a bridge other than Command and
/// Bridge Control. Every such write is reported.
pub fn forbidden_writes(host: &FakeHost) -> Vec<(&'static str, u16, u32)> {
    host.writes()
        .into_iter()
        .filter(|(name, off, _)| {
            let bridge = matches!(
                *name,
                "pcie-root-port" | "x3130-upstream" | "xio3130-downstream"
            );
            if bridge {
                !matches!(*off, 0x04 | 0x3c)
            } else {
                (0x10..0x28).contains(off) || *off == 0x30
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{read16, read8};

    fn bdf(bus: u8, dev: u8, func: u8) -> Bdf {
        Bdf::new(bus, dev, func).unwrap()
    }

    #[test]
    fn bar_sizing_reads_back_the_size_mask() {
        let mut h = FakeHost::endpoint_on_root_bus();
        h.write32(bdf(0, 1, 0), 0x10, !0);
        assert_eq!(h.read32(bdf(0, 1, 0), 0x10), 0xfffe_0000); // 128 KiB, 32-bit, non-prefetchable
    }

    #[test]
    fn io_bar_reads_back_its_size_mask_with_the_io_bit() {
        let mut h = FakeHost::endpoint_on_root_bus();
        h.write32(bdf(0, 1, 0), 0x18, !0);
        assert_eq!(h.read32(bdf(0, 1, 0), 0x18), 0x0000_ffe1); // 32 bytes of I/O
    }

    #[test]
    fn nothing_below_an_unprogrammed_bridge_answers() {
        let mut h = FakeHost::behind_root_port();
        assert_eq!(h.read32(bdf(1, 0, 0), 0), !0);
    }

    #[test]
    fn programmed_bus_numbers_route_to_the_device_below() {
        let mut h = FakeHost::behind_root_port();
        h.write32(bdf(0, 1, 0), 0x18, 0x0001_0100);
        assert_eq!(h.read32(bdf(1, 0, 0), 0), 0x10d3_8086);
    }

    #[test]
    fn downstream_port_passes_device_0_only() {
        let mut h = FakeHost::behind_root_port();
        h.write32(bdf(0, 1, 0), 0x18, 0x0001_0100);
        assert_eq!(h.read32(bdf(1, 1, 0), 0), !0);
    }

    #[test]
    fn flr_clears_bars_and_command_and_blocks_for_100_ms() {
        let mut h = FakeHost::endpoint_on_root_bus();
        let ep = bdf(0, 1, 0);
        h.write32(ep, 0x10, 0x1000_0000);
        h.write32(ep, 0x04, 0x6);
        h.write32(ep, 0xe8, u32::from(pcie::DEVCTL_INITIATE_FLR));
        assert_eq!(h.read32(ep, 0), !0);
        h.delay_us(100_000);
        assert_eq!((h.read32(ep, 0x10), read16(&mut h, ep, 4)), (0, 0));
        assert_eq!(h.early_accesses(), 1);
    }

    #[test]
    fn secondary_bus_reset_resets_the_device_below() {
        let mut h = FakeHost::behind_root_port();
        let (rp, ep) = (bdf(0, 1, 0), bdf(1, 0, 0));
        h.write32(rp, 0x18, 0x0001_0100);
        h.write32(ep, 0x10, 0x1000_0000);
        h.write32(rp, 0x3c, u32::from(type1::SECONDARY_BUS_RESET) << 16);
        h.delay_us(2_000);
        h.write32(rp, 0x3c, 0);
        h.delay_us(100_000);
        assert_eq!(h.read32(ep, 0x10), 0);
        assert_eq!(read8(&mut h, rp, type1::SECONDARY_BUS), 1); // the bridge keeps its numbers
    }

    #[test]
    fn writes_and_delays_are_logged() {
        let mut h = FakeHost::endpoint_on_root_bus();
        h.write32(bdf(0, 1, 0), 0x3c, 0x0000_0105);
        h.delay_us(7);
        assert_eq!(
            h.log(),
            [
                HostEvent::Write {
                    name: "e1000e",
                    bdf: bdf(0, 1, 0),
                    offset: 0x3c,
                    value: 0x105
                },
                HostEvent::Delay(7)
            ]
        );
    }
}

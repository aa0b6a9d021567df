//! Emulated PCI Express Root Ports: type-1 header, PCI Express, Power Management and ACS capabilities, window registers and their side effects.
//!
//! Register semantics follow the PCI Express Base Specification (section
//! numbers below refer to revision 5.0) and the PCI-to-PCI Bridge Architecture.
//! The port has no I/O window: I/O Base/Limit read 0 and ignore writes, which
//! a bridge may do when it does not implement I/O decode (7.5.1.3.6).
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;

use alloc::vec::Vec;
use vbus::config::{command, reg, status};
use vbus::{BarInfo, ConfigSpace, Intx, Ipa, MemRange, PciFunction, Request};

/// Type-1 header registers (PCI Express Base 7.5.1.3).
pub mod type1 {
    /// Primary Bus Number.
    pub const PRIMARY_BUS: u16 = 0x18;
    /// Secondary Bus Number.
    pub const SECONDARY_BUS: u16 = 0x19;
    /// Subordinate Bus Number.
    pub const SUBORDINATE_BUS: u16 = 0x1a;
    /// Secondary Latency Timer.
    pub const SECONDARY_LATENCY_TIMER: u16 = 0x1b;
    /// I/O Base.
    pub const IO_BASE: u16 = 0x1c;
    /// I/O Limit.
    pub const IO_LIMIT: u16 = 0x1d;
    /// Secondary Status.
    pub const SECONDARY_STATUS: u16 = 0x1e;
    /// Memory Base.
    pub const MEMORY_BASE: u16 = 0x20;
    /// Memory Limit.
    pub const MEMORY_LIMIT: u16 = 0x22;
    /// Prefetchable Memory Base.
    pub const PREFETCHABLE_BASE: u16 = 0x24;
    /// Prefetchable Memory Limit.
    pub const PREFETCHABLE_LIMIT: u16 = 0x26;
    /// Prefetchable Base Upper 32 Bits.
    pub const PREFETCHABLE_BASE_UPPER: u16 = 0x28;
    /// Prefetchable Limit Upper 32 Bits.
    pub const PREFETCHABLE_LIMIT_UPPER: u16 = 0x2c;
    /// I/O Base Upper 16 Bits.
    pub const IO_BASE_UPPER: u16 = 0x30;
    /// I/O Limit Upper 16 Bits.
    pub const IO_LIMIT_UPPER: u16 = 0x32;
    /// Expansion ROM Base Address (type 1).
    pub const EXPANSION_ROM: u16 = 0x38;
    /// Bridge Control.
    pub const BRIDGE_CONTROL: u16 = 0x3e;
}

/// Bridge Control bits (7.5.1.3.13).
pub mod bridge_control {
    /// Parity Error Response Enable.
    pub const PARITY_ERROR_RESPONSE: u16 = 1 << 0;
    /// SERR# Enable.
    pub const SERR_ENABLE: u16 = 1 << 1;
    /// Secondary Bus Reset.
    pub const SECONDARY_BUS_RESET: u16 = 1 << 6;
}

/// Offsets of the capabilities this port builds (fixed, so tests and dumps can name them).
pub mod caps {
    /// Power Management capability.
    pub const PM: u16 = 0x40;
    /// PCI Express capability.
    pub const PCIE: u16 = 0x48;
    /// ACS extended capability.
    pub const ACS: u16 = 0x100;
    /// Capability ID of Power Management.
    pub const PM_ID: u8 = 0x01;
    /// Capability ID of PCI Express.
    pub const PCIE_ID: u8 = 0x10;
    /// Extended capability ID of ACS.
    pub const ACS_ID: u16 = 0x000d;
}

/// PCI Express Capability register offsets, relative to the capability (7.5.3).
pub mod pcie {
    /// PCI Express Capabilities Register.
    pub const CAPABILITIES: u16 = 0x02;
    /// Device Capabilities.
    pub const DEVICE_CAPABILITIES: u16 = 0x04;
    /// Device Control.
    pub const DEVICE_CONTROL: u16 = 0x08;
    /// Device Status.
    pub const DEVICE_STATUS: u16 = 0x0a;
    /// Link Capabilities.
    pub const LINK_CAPABILITIES: u16 = 0x0c;
    /// Link Control.
    pub const LINK_CONTROL: u16 = 0x10;
    /// Link Status.
    pub const LINK_STATUS: u16 = 0x12;
    /// Slot Capabilities.
    pub const SLOT_CAPABILITIES: u16 = 0x14;
    /// Slot Control.
    pub const SLOT_CONTROL: u16 = 0x18;
    /// Slot Status.
    pub const SLOT_STATUS: u16 = 0x1a;
    /// Root Control.
    pub const ROOT_CONTROL: u16 = 0x1c;
    /// Root Capabilities.
    pub const ROOT_CAPABILITIES: u16 = 0x1e;
    /// Root Status.
    pub const ROOT_STATUS: u16 = 0x20;
    /// Device Capabilities 2.
    pub const DEVICE_CAPABILITIES2: u16 = 0x24;
    /// Device Control 2.
    pub const DEVICE_CONTROL2: u16 = 0x28;
    /// Device Status 2.
    pub const DEVICE_STATUS2: u16 = 0x2a;
    /// Link Capabilities 2.
    pub const LINK_CAPABILITIES2: u16 = 0x2c;
    /// Link Control 2.
    pub const LINK_CONTROL2: u16 = 0x30;
    /// Link Status 2.
    pub const LINK_STATUS2: u16 = 0x32;
    /// Slot Capabilities 2.
    pub const SLOT_CAPABILITIES2: u16 = 0x34;
    /// Slot Control 2.
    pub const SLOT_CONTROL2: u16 = 0x38;
    /// Slot Status 2.
    pub const SLOT_STATUS2: u16 = 0x3a;
    /// Length of a version-2 PCI Express capability.
    pub const LEN: u8 = 0x3c;
    /// Link Status: Data Link Layer Link Active.
    pub const LINK_STATUS_DLLLA: u16 = 1 << 13;
    /// Slot Status: Presence Detect State.
    pub const SLOT_STATUS_PDS: u16 = 1 << 6;
    /// Device/Port Type value of a Root Port of a PCI Express Root Complex.
    pub const TYPE_ROOT_PORT: u16 = 0x4;
}

/// How to build a root port. `Default` mimics QEMU's `pcie-root-port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootPortConfig {
    /// Vendor ID.
    pub vendor_id: u16,
    /// Device ID.
    pub device_id: u16,
    /// Revision ID.
    pub revision: u8,
    /// Set the Multi-Function bit of the Header Type.
    pub multifunction: bool,
    /// Interrupt Pin (1 = INTA .. 4 = INTD; 0 = none).
    pub interrupt_pin: u8,
    /// Port Number in Link Capabilities.
    pub port_number: u8,
    /// Physical Slot Number in Slot Capabilities (13 bits).
    pub slot_number: u16,
    /// Maximum and current link speed (1 = 2.5, 2 = 5, 3 = 8, 4 = 16 GT/s).
    pub link_speed: u8,
    /// Maximum and negotiated link width (lanes: 1, 2, 4, 8, 16, 32).
    pub link_width: u8,
}

impl Default for RootPortConfig {
    fn default() -> Self {
        RootPortConfig {
            vendor_id: 0x1b36,
            device_id: 0x000c,
            revision: 0,
            multifunction: false,
            interrupt_pin: 1,
            port_number: 0,
            slot_number: 0,
            link_speed: 3,
            link_width: 1,
        }
    }
}

/// A PCI Express Root Port.
#[derive(Debug, Clone)]
pub struct RootPort {
    cs: ConfigSpace,
    config: RootPortConfig,
}

const P: u16 = caps::PCIE;

impl RootPort {
    /// A port in its reset state, with no device behind it.
    pub fn new(config: RootPortConfig) -> Self {
        let mut cs = ConfigSpace::new();
        cs.set_u16(reg::VENDOR_ID, config.vendor_id);
        cs.set_u16(reg::DEVICE_ID, config.device_id);
        cs.set_writable(
            reg::COMMAND,
            2,
            u32::from(
                command::MEMORY_SPACE
                    | command::BUS_MASTER
                    | command::PARITY_ERROR_RESPONSE
                    | command::SERR_ENABLE
                    | command::INTERRUPT_DISABLE,
            ),
        );
        cs.set_w1c(reg::STATUS, 2, u32::from(status::RW1C_ERRORS));
        cs.set_u8(reg::REVISION_ID, config.revision);
        cs.set_u8(0x0a, 0x04); // sub-class: PCI-to-PCI bridge
        cs.set_u8(0x0b, 0x06); // base class: bridge
        cs.set_writable(reg::CACHE_LINE_SIZE, 1, 0xff);
        cs.set_u8(
            reg::HEADER_TYPE,
            if config.multifunction { 0x81 } else { 0x01 },
        );
        cs.set_writable(type1::PRIMARY_BUS, 4, 0x00ff_ffff);
        cs.set_w1c(type1::SECONDARY_STATUS, 2, u32::from(status::RW1C_ERRORS));
        cs.set_writable(type1::MEMORY_BASE, 2, 0xfff0);
        cs.set_writable(type1::MEMORY_LIMIT, 2, 0xfff0);
        // Low nibble 1: 64-bit prefetchable decode (7.5.1.3.9).
        cs.set_u16(type1::PREFETCHABLE_BASE, 0x0001);
        cs.set_u16(type1::PREFETCHABLE_LIMIT, 0x0001);
        cs.set_writable(type1::PREFETCHABLE_BASE, 2, 0xfff0);
        cs.set_writable(type1::PREFETCHABLE_LIMIT, 2, 0xfff0);
        cs.set_writable(type1::PREFETCHABLE_BASE_UPPER, 4, 0xffff_ffff);
        cs.set_writable(type1::PREFETCHABLE_LIMIT_UPPER, 4, 0xffff_ffff);
        cs.set_writable(reg::INTERRUPT_LINE, 1, 0xff);
        cs.set_u8(reg::INTERRUPT_PIN, config.interrupt_pin.min(4));
        cs.set_writable(
            type1::BRIDGE_CONTROL,
            2,
            u32::from(
                bridge_control::PARITY_ERROR_RESPONSE
                    | bridge_control::SERR_ENABLE
                    | bridge_control::SECONDARY_BUS_RESET,
            ),
        );

        // The builder places these at the fixed offsets of `caps`.
        let pm = cs.add_capability(caps::PM_ID, 8).unwrap_or(caps::PM);
        cs.set_u16(pm + 2, 0x0003); // PMC: version 3, no PME, no D1/D2
        cs.set_u16(pm + 4, 1 << 3); // PMCSR: No_Soft_Reset, D0
        cs.set_writable(pm + 4, 2, 0x0003);
        let p = cs
            .add_capability(caps::PCIE_ID, pcie::LEN)
            .unwrap_or(caps::PCIE);
        debug_assert_eq!((pm, p), (caps::PM, caps::PCIE));
        // Version 2, Root Port, Slot Implemented (7.5.3.2).
        cs.set_u16(
            p + pcie::CAPABILITIES,
            0x2 | (pcie::TYPE_ROOT_PORT << 4) | (1 << 8),
        );
        // Role-Based Error Reporting; 128-byte Max_Payload_Size supported.
        cs.set_u32(p + pcie::DEVICE_CAPABILITIES, 1 << 15);
        cs.set_u16(p + pcie::DEVICE_CONTROL, 0x2810);
        cs.set_writable(p + pcie::DEVICE_CONTROL, 2, 0x79ff);
        cs.set_w1c(p + pcie::DEVICE_STATUS, 2, 0x000f);
        let speed = u32::from(config.link_speed.clamp(1, 4));
        let width = u32::from(config.link_width.clamp(1, 32));
        // Max speed/width, Data Link Layer Link Active Reporting Capable, Port Number.
        cs.set_u32(
            p + pcie::LINK_CAPABILITIES,
            speed | (width << 4) | (1 << 20) | (u32::from(config.port_number) << 24),
        );
        cs.set_writable(p + pcie::LINK_CONTROL, 2, 0x0fd3);
        cs.set_w1c(p + pcie::LINK_STATUS, 2, 0xc000);
        // No Command Completed Support (we complete at once), Physical Slot Number.
        cs.set_u32(
            p + pcie::SLOT_CAPABILITIES,
            (1 << 18) | (u32::from(config.slot_number & 0x1fff) << 19),
        );
        cs.set_writable(p + pcie::SLOT_CONTROL, 2, 0x1fff);
        cs.set_w1c(p + pcie::SLOT_STATUS, 2, 0x011f);
        cs.set_writable(p + pcie::ROOT_CONTROL, 2, 0x000f);
        cs.set_w1c(p + pcie::ROOT_STATUS, 4, 1 << 16);
        // ARI Forwarding Supported.
        cs.set_u32(p + pcie::DEVICE_CAPABILITIES2, 1 << 5);
        cs.set_writable(p + pcie::DEVICE_CONTROL2, 2, 0x003f);
        // Supported Link Speeds Vector: every speed up to the maximum.
        cs.set_u32(p + pcie::LINK_CAPABILITIES2, ((1 << speed) - 1) << 1);
        cs.set_u16(p + pcie::LINK_CONTROL2, speed as u16);
        cs.set_writable(p + pcie::LINK_CONTROL2, 2, 0x007f);

        let acs = cs
            .add_ext_capability(caps::ACS_ID, 1, 8)
            .unwrap_or(caps::ACS);
        // Source Validation, Translation Blocking, P2P Request/Completion Redirect, Upstream Forwarding.
        cs.set_u16(acs + 4, 0x001f);
        cs.set_writable(acs + 6, 2, 0x001f);

        let mut port = RootPort { cs, config };
        port.set_device_present(false);
        port
    }

    /// The configuration the port was built from.
    pub fn config(&self) -> &RootPortConfig {
        &self.config
    }

    /// Whether a device sits below the port: drives Link Status (current speed and
    /// width, Data Link Layer Link Active) and Slot Status (Presence Detect State).
    pub fn set_device_present(&mut self, present: bool) {
        let ls = if present {
            u16::from(self.config.link_speed.clamp(1, 4))
                | (u16::from(self.config.link_width.clamp(1, 32)) << 4)
                | (1 << 12) // Slot Clock Configuration
                | pcie::LINK_STATUS_DLLLA
        } else {
            1 << 12
        };
        let keep = self.cs.raw(P + pcie::LINK_STATUS, 2) as u16 & 0xc000;
        self.cs.set_u16(P + pcie::LINK_STATUS, ls | keep);
        let ss = self.cs.raw(P + pcie::SLOT_STATUS, 2) as u16 & !pcie::SLOT_STATUS_PDS;
        self.cs.set_u16(
            P + pcie::SLOT_STATUS,
            ss | if present { pcie::SLOT_STATUS_PDS } else { 0 },
        );
    }

    fn u16_at(&self, offset: u16) -> u16 {
        self.cs.raw(offset, 2) as u16
    }

    /// The non-prefetchable memory window as programmed (7.5.1.3.8), `None` when limit < base.
    pub fn memory_window(&self) -> Option<MemRange<Ipa>> {
        vbus::decode::memory_window(&self.cs)
    }

    /// The prefetchable memory window as programmed (7.5.1.3.9), `None` when limit < base.
    pub fn prefetchable_window(&self) -> Option<MemRange<Ipa>> {
        vbus::decode::prefetchable_window(&self.cs)
    }

    /// Whether Secondary Bus Reset is held.
    pub fn in_secondary_bus_reset(&self) -> bool {
        self.u16_at(type1::BRIDGE_CONTROL) & bridge_control::SECONDARY_BUS_RESET != 0
    }

    fn power_state(&self) -> u16 {
        self.u16_at(caps::PM + 4) & 3
    }

    /// PowerState takes D0 (0) or D3hot (3); D1/D2 are not supported, and a write
    /// of either leaves the state unchanged (PCI PM 1.2, 3.2.4).
    fn keep_supported_power_state(&mut self, before: u16) {
        let now = self.power_state();
        if now == 1 || now == 2 {
            let v = (self.u16_at(caps::PM + 4) & !3) | before;
            self.cs.set_u16(caps::PM + 4, v);
        }
    }
}

impl PciFunction for RootPort {
    fn config_read(&mut self, offset: u16, size: u8) -> u32 {
        self.cs.read(offset, size)
    }

    /// Bus numbers, windows, Memory Space Enable and Secondary Bus Reset take
    /// effect through the segment, which reads them from the registers.
    fn config_write(&mut self, offset: u16, size: u8, value: u32, _: &mut Vec<Request>) {
        let power = self.power_state();
        self.cs.write(offset, size, value);
        self.keep_supported_power_state(power);
    }

    fn bridge_bus_range(&self) -> Option<(u8, u8)> {
        Some((
            self.cs.raw(type1::SECONDARY_BUS, 1) as u8,
            self.cs.raw(type1::SUBORDINATE_BUS, 1) as u8,
        ))
    }

    fn config_space(&self) -> &ConfigSpace {
        &self.cs
    }

    fn bars(&self) -> &[BarInfo] {
        &[]
    }

    /// The port implements no BAR: nothing is ever routed here.
    fn bar_read(&mut self, _: u8, _: u64, _: u8, _: &mut Vec<Request>) -> u64 {
        u64::MAX
    }

    fn bar_write(&mut self, _: u8, _: u64, _: u8, _: u64, _: &mut Vec<Request>) {}

    /// Back to the port's reset state; whether a device is below it is kept.
    fn reset(&mut self) {
        let present = self.cs.raw(P + pcie::SLOT_STATUS, 2) as u16 & pcie::SLOT_STATUS_PDS != 0;
        *self = RootPort::new(self.config);
        self.set_device_present(present);
    }

    /// The port signals neither hot-plug nor PME events yet.
    fn intx(&self) -> Intx {
        Intx::None
    }
}

#[cfg(test)]
mod tests;

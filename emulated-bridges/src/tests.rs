//! Root port tests: the register table below is written from the specification,
//! independently of the implementation, and checked at every width and alignment.

use super::*;
use alloc::boxed::Box;

/// (offset, size, reset value, writable bits, write-1-to-clear bits) with
/// `RootPortConfig { port_number: 2, slot_number: 5, ..Default::default() }`, no device.
const TABLE: &[(u16, u8, u32, u32, u32)] = &[
    (0x00, 2, 0x1b36, 0, 0),                  // Vendor ID
    (0x02, 2, 0x000c, 0, 0),                  // Device ID
    (0x04, 2, 0, 0x0546, 0),                  // Command: MSE, BME, PERR, SERR, INTx Disable
    (0x06, 2, 0x0010, 0, 0xf900),             // Status: Capabilities List; RW1C errors
    (0x08, 4, 0x0604_0000, 0, 0),             // Revision, Class 060400
    (0x0c, 1, 0, 0xff, 0),                    // Cache Line Size
    (0x0d, 1, 0, 0, 0),                       // Primary Latency Timer
    (0x0e, 1, 0x01, 0, 0),                    // Header Type 1
    (0x0f, 1, 0, 0, 0),                       // BIST
    (0x10, 4, 0, 0, 0),                       // BAR0 not implemented
    (0x14, 4, 0, 0, 0),                       // BAR1 not implemented
    (0x18, 1, 0, 0xff, 0),                    // Primary Bus
    (0x19, 1, 0, 0xff, 0),                    // Secondary Bus
    (0x1a, 1, 0, 0xff, 0),                    // Subordinate Bus
    (0x1b, 1, 0, 0, 0),                       // Secondary Latency Timer
    (0x1c, 2, 0, 0, 0),                       // I/O Base/Limit: no I/O window
    (0x1e, 2, 0, 0, 0xf900),                  // Secondary Status
    (0x20, 2, 0, 0xfff0, 0),                  // Memory Base
    (0x22, 2, 0, 0xfff0, 0),                  // Memory Limit
    (0x24, 2, 0x0001, 0xfff0, 0),             // Prefetchable Base, 64-bit
    (0x26, 2, 0x0001, 0xfff0, 0),             // Prefetchable Limit, 64-bit
    (0x28, 4, 0, 0xffff_ffff, 0),             // Prefetchable Base Upper 32
    (0x2c, 4, 0, 0xffff_ffff, 0),             // Prefetchable Limit Upper 32
    (0x30, 4, 0, 0, 0),                       // I/O Base/Limit Upper 16
    (0x34, 1, 0x40, 0, 0),                    // Capabilities Pointer
    (0x38, 4, 0, 0, 0),                       // Expansion ROM: none
    (0x3c, 1, 0, 0xff, 0),                    // Interrupt Line
    (0x3d, 1, 0x01, 0, 0),                    // Interrupt Pin: INTA
    (0x3e, 2, 0, 0x0043, 0),                  // Bridge Control: PERR, SERR, SBR
    (0x40, 2, 0x4801, 0, 0),                  // PM: ID 01, next 0x48
    (0x42, 2, 0x0003, 0, 0),                  // PMC: version 3
    (0x44, 2, 0x0008, 0x0003, 0),             // PMCSR: No_Soft_Reset, PowerState D0/D3hot
    (0x46, 2, 0, 0, 0),                       // PMCSR_BSE, Data
    (0x48, 2, 0x0010, 0, 0),                  // PCIe: ID 10, last standard capability
    (0x4a, 2, 0x0142, 0, 0),                  // PCIe Capabilities: v2, Root Port, Slot Implemented
    (0x4c, 4, 0x8000, 0, 0),                  // Device Capabilities: Role-Based Error Reporting
    (0x50, 2, 0x2810, 0x79ff, 0),             // Device Control
    (0x52, 2, 0, 0, 0x000f),                  // Device Status
    (0x54, 4, 0x0210_0013, 0, 0), // Link Capabilities: 8 GT/s x1, DLLLA reporting, port 2
    (0x58, 2, 0, 0x0fd3, 0),      // Link Control
    (0x5a, 2, 0x1000, 0, 0xc000), // Link Status: Slot Clock, link down (no device)
    (0x5c, 4, 0x0028_0000 | (1 << 18), 0, 0), // Slot Capabilities: slot 5, No Command Completed
    (0x60, 2, 0, 0x1fff, 0),      // Slot Control
    (0x62, 2, 0, 0, 0x011f),      // Slot Status: empty
    (0x64, 2, 0, 0x000f, 0),      // Root Control
    (0x66, 2, 0, 0, 0),           // Root Capabilities
    (0x68, 4, 0, 0, 0x0001_0000), // Root Status: PME Status RW1C
    (0x6c, 4, 0x20, 0, 0),        // Device Capabilities 2: ARI Forwarding
    (0x70, 2, 0, 0x003f, 0),      // Device Control 2
    (0x72, 2, 0, 0, 0),           // Device Status 2
    (0x74, 4, 0x0e, 0, 0),        // Link Capabilities 2: 2.5, 5, 8 GT/s
    (0x78, 2, 0x0003, 0x007f, 0), // Link Control 2: target 8 GT/s
    (0x7a, 2, 0, 0, 0),           // Link Status 2
    (0x7c, 4, 0, 0, 0),           // Slot Capabilities 2
    (0x80, 2, 0, 0, 0),           // Slot Control 2
    (0x82, 2, 0, 0, 0),           // Slot Status 2
    (0x100, 4, 0x0001_000d, 0, 0), // ACS header, last extended capability
    (0x104, 2, 0x001f, 0, 0),     // ACS Capability: SV TB RR CR UF
    (0x106, 2, 0, 0x001f, 0),     // ACS Control
];

const END: usize = 0x140;

fn port() -> RootPort {
    RootPort::new(RootPortConfig {
        port_number: 2,
        slot_number: 5,
        ..Default::default()
    })
}

/// Expected per-byte value, writable mask and W1C mask from the table.
fn expected() -> ([u8; END], [u8; END], [u8; END]) {
    let (mut v, mut w, mut c) = ([0u8; END], [0u8; END], [0u8; END]);
    for &(off, size, val, wm, cm) in TABLE {
        for i in 0..usize::from(size) {
            let at = usize::from(off) + i;
            v[at] = (val >> (8 * i)) as u8;
            w[at] = (wm >> (8 * i)) as u8;
            c[at] = (cm >> (8 * i)) as u8;
        }
    }
    (v, w, c)
}

/// Every (offset, size) access that stays inside one dword.
fn accesses() -> impl Iterator<Item = (u16, u8)> {
    (0..END as u16).flat_map(|off| {
        [1u8, 2, 4]
            .into_iter()
            .filter(move |&s| usize::from(off % 4) + usize::from(s) <= 4)
            .map(move |s| (off, s))
    })
}

fn compose(bytes: &[u8], off: u16, size: u8) -> u32 {
    (0..usize::from(size)).fold(0, |v, i| {
        v | u32::from(bytes[usize::from(off) + i]) << (8 * i)
    })
}

#[test]
fn reset_values_match_the_table_at_every_width_and_alignment() {
    let (v, _, _) = expected();
    let mut p = port();
    for (off, size) in accesses() {
        assert_eq!(
            p.config_read(off, size),
            compose(&v, off, size),
            "read {off:#x}/{size}"
        );
    }
}

#[test]
fn all_ones_write_sets_exactly_the_writable_bits_at_every_width_and_alignment() {
    let (v, w, c) = expected();
    for (off, size) in accesses() {
        let mut p = port();
        let mut fx = Vec::new();
        p.config_write(off, size, 0xffff_ffff, &mut fx);
        let dword = off & !3;
        let mut want = [0u8; 4];
        for (i, b) in want.iter_mut().enumerate() {
            let at = usize::from(dword) + i;
            let touched = at >= usize::from(off) && at < usize::from(off) + usize::from(size);
            *b = if touched {
                ((v[at] & !w[at]) | w[at]) & !c[at]
            } else {
                v[at]
            };
        }
        assert_eq!(
            p.config_read(dword, 4),
            u32::from_le_bytes(want),
            "write ones {off:#x}/{size}"
        );
    }
}

#[test]
fn zero_write_after_ones_restores_read_only_bits() {
    let (v, w, _) = expected();
    for (off, size) in accesses() {
        let mut p = port();
        let mut fx = Vec::new();
        p.config_write(off, size, 0xffff_ffff, &mut fx);
        p.config_write(off, size, 0, &mut fx);
        let want = (0..usize::from(size)).fold(0u32, |acc, i| {
            let at = usize::from(off) + i;
            acc | u32::from(v[at] & !w[at]) << (8 * i)
        });
        // PMCSR keeps D0 only after writing 0; other writable bits return to 0.
        assert_eq!(p.config_read(off, size), want, "{off:#x}/{size}");
    }
}

#[test]
fn declared_w1c_bits_match_the_table() {
    let p = port();
    let (_, _, c) = expected();
    for &(off, size, ..) in TABLE {
        assert_eq!(
            p.config_space().w1c(off, size),
            compose(&c, off, size),
            "{off:#x}"
        );
    }
}

#[test]
fn unimplemented_space_reads_zero() {
    let mut p = port();
    for off in (0x84..0x100).chain((0x108..0x1000).step_by(4)) {
        assert_eq!(p.config_read(off, 1), 0, "{off:#x}");
    }
}

#[test]
fn bus_number_write_sets_the_bus_range() {
    let mut p = port();
    let mut fx = Vec::new();
    p.config_write(type1::PRIMARY_BUS, 4, 0x0003_0200, &mut fx);
    assert!(fx.is_empty());
    assert_eq!(p.bridge_bus_range(), Some((2, 3)));
}

#[test]
fn secondary_latency_timer_write_does_not_disturb_bus_numbers() {
    let mut p = port();
    let mut fx = Vec::new();
    p.config_write(type1::PRIMARY_BUS, 4, 0xff03_0200, &mut fx);
    assert_eq!(p.config_read(type1::PRIMARY_BUS, 4), 0x0003_0200);
}

#[test]
fn memory_window_has_megabyte_granularity() {
    let mut p = port();
    let mut fx = Vec::new();
    p.config_write(type1::MEMORY_BASE, 4, 0x1010_1000, &mut fx);
    assert_eq!(
        p.memory_window(),
        Some(MemRange::new(Ipa(0x1000_0000), 0x20_0000))
    );
}

#[test]
fn limit_below_base_disables_the_window() {
    let mut p = port();
    let mut fx = Vec::new();
    p.config_write(type1::MEMORY_BASE, 4, 0x0000_fff0, &mut fx);
    assert_eq!(p.memory_window(), None);
}

#[test]
fn prefetchable_window_uses_the_upper_registers() {
    let mut p = port();
    let mut fx = Vec::new();
    p.config_write(type1::PREFETCHABLE_BASE_UPPER, 4, 0x80, &mut fx);
    p.config_write(type1::PREFETCHABLE_LIMIT_UPPER, 4, 0x80, &mut fx);
    p.config_write(type1::PREFETCHABLE_BASE, 4, 0x0ff1_0001, &mut fx);
    assert_eq!(
        p.prefetchable_window(),
        Some(MemRange::new(Ipa(0x80_0000_0000), 0x1000_0000))
    );
}

#[test]
fn secondary_bus_reset_is_held_while_the_bit_is_set() {
    let mut p = port();
    let mut fx = Vec::new();
    p.config_write(type1::BRIDGE_CONTROL, 2, 0x40, &mut fx);
    assert!(p.in_secondary_bus_reset());
    p.config_write(type1::BRIDGE_CONTROL, 2, 0, &mut fx);
    assert!(!p.in_secondary_bus_reset());
}

#[test]
fn reset_returns_every_register_to_its_reset_value_and_keeps_presence() {
    let mut p = port();
    p.set_device_present(true);
    let fresh = p.config_space().bytes().to_vec();
    let mut fx = Vec::new();
    p.config_write(reg::COMMAND, 2, 0x0006, &mut fx);
    p.config_write(type1::PRIMARY_BUS, 4, 0x0003_0200, &mut fx);
    p.reset();
    assert_eq!(p.config_space().bytes().to_vec(), fresh);
}

#[test]
fn io_space_enable_is_hard_wired_to_zero() {
    let mut p = port();
    let mut fx = Vec::new();
    p.config_write(reg::COMMAND, 2, 0x0001, &mut fx);
    assert_eq!(p.config_read(reg::COMMAND, 2), 0);
}

#[test]
fn unsupported_power_state_write_is_ignored() {
    let mut p = port();
    let mut fx = Vec::new();
    p.config_write(caps::PM + 4, 2, 0x0003, &mut fx);
    p.config_write(caps::PM + 4, 2, 0x0001, &mut fx);
    assert_eq!(p.config_read(caps::PM + 4, 2) & 3, 3);
    p.config_write(caps::PM + 4, 1, 0x0000, &mut fx);
    assert_eq!(p.config_read(caps::PM + 4, 2) & 3, 0);
}

#[test]
fn device_presence_shows_link_active_and_presence_detect() {
    let mut p = port();
    p.set_device_present(true);
    let ls = p.config_read(caps::PCIE + pcie::LINK_STATUS, 2) as u16;
    assert_eq!(ls & 0xf, 3);
    assert_eq!((ls >> 4) & 0x3f, 1);
    assert_ne!(ls & pcie::LINK_STATUS_DLLLA, 0);
    let ss = p.config_read(caps::PCIE + pcie::SLOT_STATUS, 2) as u16;
    assert_ne!(ss & pcie::SLOT_STATUS_PDS, 0);
}

#[test]
fn multifunction_sets_header_type_bit_7() {
    let mut p = RootPort::new(RootPortConfig {
        multifunction: true,
        ..Default::default()
    });
    assert_eq!(p.config_read(reg::HEADER_TYPE, 1), 0x81);
}

#[test]
fn device_behind_a_port_in_a_segment_is_reached_after_bus_programming() {
    let mut seg = vbus::Segment::new(0, 16);
    seg.add_bus0(1, 0, Box::new(port())).unwrap();
    seg.add_bus0(2, 0, Box::new(port())).unwrap();
    let mut below = port();
    below.set_device_present(false);
    seg.attach_below(2, 0, Box::new(below)).unwrap();
    let ecam = |bus: u64, dev: u64, reg: u64| (bus << 20) | (dev << 15) | reg;
    assert_eq!(seg.ecam_read(ecam(0, 1, 0), 4), 0x000c_1b36);
    assert_eq!(seg.ecam_read(ecam(1, 0, 0), 4), 0xffff_ffff);
    let fx = seg.ecam_write(ecam(0, 2, 0x18), 4, 0x0001_0100);
    assert!(
        fx.is_empty(),
        "bus numbers route at once; nothing for the owner"
    );
    assert_eq!(seg.ecam_read(ecam(1, 0, 0), 2), 0x1b36);
}

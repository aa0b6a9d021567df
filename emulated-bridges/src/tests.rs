//! Root port tests: the register table below is written from the specification,
//! independently of the implementation, and checked at every width and alignment.

use super::*;
use alloc::boxed::Box;

/// (offset, size, reset value, writable bits, write-1-to-clear bits).
type Row = (u16, u8, u32, u32, u32);

/// (register offset, field bits, encodings that may be stored: bit n = encoding
/// n): a write of any other encoding leaves the field as it was.
type Field = (u16, u16, u16);

/// With `RootPortConfig { port_number: 2, slot_number: 5, ..Default::default() }`,
/// no device. Section numbers: PCI Express Base 5.0.
const TABLE: &[Row] = &[
    (0x00, 2, 0x1b36, 0, 0),      // Vendor ID
    (0x02, 2, 0x000c, 0, 0),      // Device ID
    (0x04, 2, 0, 0x0546, 0),      // Command: MSE, BME, PERR, SERR, INTx Disable
    (0x06, 2, 0x0010, 0, 0xf900), // Status: Capabilities List; RW1C errors
    (0x08, 4, 0x0604_0000, 0, 0), // Revision, Class 060400
    (0x0c, 1, 0, 0xff, 0),        // Cache Line Size
    (0x0d, 1, 0, 0, 0),           // Primary Latency Timer
    (0x0e, 1, 0x01, 0, 0),        // Header Type 1
    (0x0f, 1, 0, 0, 0),           // BIST
    (0x10, 4, 0, 0, 0),           // BAR0 not implemented
    (0x14, 4, 0, 0, 0),           // BAR1 not implemented
    (0x18, 1, 0, 0xff, 0),        // Primary Bus
    (0x19, 1, 0, 0xff, 0),        // Secondary Bus
    (0x1a, 1, 0, 0xff, 0),        // Subordinate Bus
    (0x1b, 1, 0, 0, 0),           // Secondary Latency Timer
    (0x1c, 2, 0, 0, 0),           // I/O Base/Limit: no I/O window
    (0x1e, 2, 0, 0, 0xf900),      // Secondary Status
    (0x20, 2, 0, 0xfff0, 0),      // Memory Base
    (0x22, 2, 0, 0xfff0, 0),      // Memory Limit
    (0x24, 2, 0x0001, 0xfff0, 0), // Prefetchable Base, 64-bit
    (0x26, 2, 0x0001, 0xfff0, 0), // Prefetchable Limit, 64-bit
    (0x28, 4, 0, 0xffff_ffff, 0), // Prefetchable Base Upper 32
    (0x2c, 4, 0, 0xffff_ffff, 0), // Prefetchable Limit Upper 32
    (0x30, 4, 0, 0, 0),           // I/O Base/Limit Upper 16
    (0x34, 1, 0x40, 0, 0),        // Capabilities Pointer
    (0x38, 4, 0, 0, 0),           // Expansion ROM: none
    (0x3c, 1, 0, 0xff, 0),        // Interrupt Line
    (0x3d, 1, 0x01, 0, 0),        // Interrupt Pin: INTA
    (0x3e, 2, 0, 0x0043, 0),      // Bridge Control: PERR, SERR, SBR
    (0x40, 2, 0x4801, 0, 0),      // PM: ID 01, next 0x48
    (0x42, 2, 0x0003, 0, 0),      // PMC: version 3
    (0x44, 2, 0x0008, 0x0003, 0), // PMCSR: No_Soft_Reset, PowerState D0/D3hot
    (0x46, 2, 0, 0, 0),           // PMCSR_BSE, Data
    (0x48, 2, 0x0010, 0, 0),      // PCIe: ID 10, last standard capability
    (0x4a, 2, 0x0142, 0, 0),      // 7.5.3.2: v2, Root Port, Slot Implemented
    (0x4c, 4, 0x8000, 0, 0), // 7.5.3.3: Role-Based Error Reporting, MPSS 128 B, no Extended Tag/Phantom
    // 7.5.3.4: error enables, Relaxed Ordering, No Snoop, MRRS; MPS hardwired
    // (MPSS 128 B); Extended Tag, Phantom Functions, Aux Power PM not supported;
    // bit 15 RsvdP in a Root Port.
    (0x50, 2, 0x2810, 0x781f, 0),
    (0x52, 2, 0, 0, 0x000f), // 7.5.3.5: the four error Detected bits RW1C
    (0x54, 4, 0x0210_0013, 0, 0), // 7.5.3.6: 8 GT/s x1, no ASPM/Clock PM/LBN, DLLLA reporting, port 2
    // 7.5.3.7: Link Disable, Common Clock, Extended Synch, HW Autonomous Width
    // Disable; no ASPM Control (ASPM Support 00b), Clock PM, LBN enables; RCB
    // hardwired; Retrain Link reads 0.
    (0x58, 2, 0, 0x02d0, 0),
    (0x5a, 2, 0x1000, 0, 0), // 7.5.3.8: Slot Clock, link down; bandwidth status RsvdZ (no LBN)
    (0x5c, 4, 0x0028_0000 | (1 << 18), 0, 0), // 7.5.3.9: slot 5, No Command Completed, not Hot-Plug Capable
    (0x60, 2, 0, 0x1000, 0),                  // 7.5.3.10: only Data Link Layer State Changed Enable
    (0x62, 2, 0, 0, 0x0108), // 7.5.3.11: Presence Detect Changed, DLL State Changed; empty
    (0x64, 2, 0, 0x000f, 0), // 7.5.3.12: SERR enables, PME Interrupt Enable; no CRS SV
    (0x66, 2, 0, 0, 0),      // 7.5.3.13: Root Capabilities
    (0x68, 4, 0, 0, 0x0001_0000), // 7.5.3.14: PME Status RW1C
    (0x6c, 4, 0x20, 0, 0),   // 7.5.3.15: ARI Forwarding; no completion timeout ranges
    (0x70, 2, 0, 0x0020, 0), // 7.5.3.16: ARI Forwarding Enable only
    (0x72, 2, 0, 0, 0),      // 7.5.3.17: Device Status 2
    (0x74, 4, 0x0e, 0, 0),   // 7.5.3.18: 2.5, 5, 8 GT/s
    // 7.5.3.19: Target Link Speed (supported speeds only), Enter Compliance,
    // HW Autonomous Speed Disable, Selectable De-emphasis; target 8 GT/s.
    (0x78, 2, 0x0003, 0x007f, 0),
    (0x7a, 2, 0, 0, 0),            // Link Status 2
    (0x7c, 4, 0, 0, 0),            // Slot Capabilities 2
    (0x80, 2, 0, 0, 0),            // Slot Control 2
    (0x82, 2, 0, 0, 0),            // Slot Status 2
    (0x100, 4, 0x0001_000d, 0, 0), // ACS header, last extended capability
    (0x104, 2, 0x001f, 0, 0),      // ACS Capability: SV TB RR CR UF
    (0x106, 2, 0, 0x001f, 0),      // ACS Control
];

/// The default port's fields with reserved or unsupported encodings.
const FIELDS: &[Field] = &[
    (0x44, 0x0003, 0b1001),    // PCI PM 1.2, 3.2.4: PowerState D0, D3hot
    (0x50, 0x00e0, 0b1),       // 7.5.3.4: Max_Payload_Size up to MPSS (128 B)
    (0x50, 0x7000, 0b11_1111), // 7.5.3.4: Max_Read_Request_Size 110b, 111b reserved
    (0x60, 0x00c0, 0b1110),    // 7.5.3.10: Attention Indicator Control 00b reserved
    (0x60, 0x0300, 0b1110),    // 7.5.3.10: Power Indicator Control 00b reserved
    (0x70, 0x000f, 0b1),       // 7.5.3.16: Completion Timeout Value: no ranges
    (0x78, 0x000f, 0b1110),    // 7.5.3.19: Target Link Speed 2.5, 5, 8 GT/s
];

/// A port configuration and how its registers differ from [`TABLE`] and [`FIELDS`].
struct Case {
    name: &'static str,
    config: RootPortConfig,
    rows: &'static [Row],
    fields: &'static [Field],
}

const BASE: RootPortConfig = RootPortConfig {
    vendor_id: 0x1b36,
    device_id: 0x000c,
    revision: 0,
    multifunction: false,
    interrupt_pin: 1,
    port_number: 2,
    slot_number: 5,
    link_speed: 3,
    link_width: 1,
    max_payload_size_supported: 0,
    aspm: AspmSupport::None,
    clock_power_management: false,
    link_bandwidth_notification: false,
    hot_plug: None,
    completion_timeout_ranges: 0,
    completion_timeout_disable: false,
};

const ALL_HOT_PLUG: HotPlug = HotPlug {
    attention_button: true,
    power_controller: true,
    mrl_sensor: true,
    attention_indicator: true,
    power_indicator: true,
    surprise: true,
};

const CASES: &[Case] = &[
    Case {
        name: "default",
        config: BASE,
        rows: &[],
        fields: &[],
    },
    Case {
        name: "hot-plug, every element",
        config: RootPortConfig {
            hot_plug: Some(ALL_HOT_PLUG),
            ..BASE
        },
        rows: &[
            // 7.5.3.9: ABP, PCP, MRLSP, AIP, PIP, HPS, HPC; NCCS; slot 5.
            (0x5c, 4, 0x002c_007f, 0, 0),
            // 7.5.3.10: every enable of an element, indicators (reset Off),
            // Power Controller Control; never CCIE (NCCS) nor EIC (reads 0).
            (0x60, 2, 0x03c0, 0x17ef, 0),
            // 7.5.3.11: ABP, PFD, MRLSC, PDC, DLLSC; Command Completed never Set.
            (0x62, 2, 0, 0, 0x010f),
        ],
        fields: &[],
    },
    Case {
        name: "hot-plug capable, no elements",
        config: RootPortConfig {
            hot_plug: Some(HotPlug {
                surprise: true,
                ..HotPlug {
                    attention_button: false,
                    power_controller: false,
                    mrl_sensor: false,
                    attention_indicator: false,
                    power_indicator: false,
                    surprise: false,
                }
            }),
            ..BASE
        },
        rows: &[
            (0x5c, 4, 0x002c_0060, 0, 0), // 7.5.3.9: HPS, HPC, NCCS, slot 5
            (0x60, 2, 0, 0x1028, 0),      // 7.5.3.10: PDCE, HPIE, DLLSCE
            (0x62, 2, 0, 0, 0x0108),      // 7.5.3.11: PDC, DLLSC
        ],
        fields: &[],
    },
    Case {
        name: "link bandwidth notification",
        config: RootPortConfig {
            link_bandwidth_notification: true,
            ..BASE
        },
        rows: &[
            (0x54, 4, 0x0230_0013, 0, 0), // 7.5.3.6: + Link Bandwidth Notification Capability
            (0x58, 2, 0, 0x0ed0, 0),      // 7.5.3.7: + LBMIE, LABIE
            (0x5a, 2, 0x1000, 0, 0xc000), // 7.5.3.8: LBMS, LABS RW1C
        ],
        fields: &[],
    },
    Case {
        name: "Clock PM, ASPM L0s and L1",
        config: RootPortConfig {
            clock_power_management: true,
            aspm: AspmSupport::L0sAndL1,
            ..BASE
        },
        rows: &[
            (0x54, 4, 0x0214_0c13, 0, 0), // 7.5.3.6: ASPM Support 11b, Clock Power Management
            (0x58, 2, 0, 0x03d3, 0),      // 7.5.3.7: + ASPM Control 11b, Enable Clock PM
        ],
        fields: &[],
    },
    Case {
        name: "ASPM L1 only",
        config: RootPortConfig {
            aspm: AspmSupport::L1,
            ..BASE
        },
        rows: &[
            (0x54, 4, 0x0210_0813, 0, 0), // 7.5.3.6: ASPM Support 10b
            (0x58, 2, 0, 0x02d2, 0),      // 7.5.3.7: ASPM Control L1 only
        ],
        fields: &[],
    },
    Case {
        name: "2.5 GT/s, 512-byte payloads, completion timeout ranges A and C",
        config: RootPortConfig {
            link_speed: 1,
            max_payload_size_supported: 2,
            completion_timeout_ranges: 0b0101,
            completion_timeout_disable: true,
            ..BASE
        },
        rows: &[
            (0x4c, 4, 0x8002, 0, 0),      // 7.5.3.3: MPSS 010b
            (0x50, 2, 0x2810, 0x78ff, 0), // 7.5.3.4: + Max_Payload_Size
            (0x54, 4, 0x0210_0011, 0, 0), // 7.5.3.6: 2.5 GT/s x1
            (0x6c, 4, 0x35, 0, 0),        // 7.5.3.15: ranges A, C; CTD Supported; ARI
            (0x70, 2, 0, 0x003f, 0),      // 7.5.3.16: + CTV, CTD
            (0x74, 4, 0x02, 0, 0),        // 7.5.3.18: 2.5 GT/s
            (0x78, 2, 0x0001, 0x003f, 0), // 7.5.3.19: no Selectable De-emphasis at 2.5 GT/s
        ],
        fields: &[
            (0x50, 0x00e0, 0b111),  // 7.5.3.4: 128, 256, 512 bytes
            (0x70, 0x000f, 0x0607), // 7.5.3.16: 0000b; A 0001b 0010b; C 1001b 1010b
            (0x78, 0x000f, 0b10),   // 7.5.3.19: 2.5 GT/s only
        ],
    },
];

const END: usize = 0x140;

fn port() -> RootPort {
    RootPort::new(BASE)
}

/// The registers as the tables say, and the same write rules, for comparison.
struct Model {
    v: [u8; END],
    w: [u8; END],
    c: [u8; END],
    fields: Vec<Field>,
}

impl Model {
    fn of(case: &Case) -> Model {
        let (mut v, mut w, mut c) = ([0u8; END], [0u8; END], [0u8; END]);
        for &(off, size, val, wm, cm) in TABLE.iter().chain(case.rows) {
            for i in 0..usize::from(size) {
                let at = usize::from(off) + i;
                v[at] = (val >> (8 * i)) as u8;
                w[at] = (wm >> (8 * i)) as u8;
                c[at] = (cm >> (8 * i)) as u8;
            }
        }
        let mut fields = FIELDS.to_vec();
        for &f in case.fields {
            match fields.iter_mut().find(|g| (g.0, g.1) == (f.0, f.1)) {
                Some(g) => *g = f,
                None => fields.push(f),
            }
        }
        Model { v, w, c, fields }
    }

    fn read(&self, off: u16, size: u8) -> u32 {
        compose(&self.v, off, size)
    }

    fn write(&mut self, off: u16, size: u8, value: u32) {
        let before: Vec<u16> = self
            .fields
            .iter()
            .map(|f| self.read(f.0, 2) as u16)
            .collect();
        for i in 0..usize::from(size) {
            let at = usize::from(off) + i;
            let x = (value >> (8 * i)) as u8;
            self.v[at] = ((self.v[at] & !self.w[at]) | (x & self.w[at])) & !(x & self.c[at]);
        }
        for (&(reg, mask, allowed), old) in self.fields.iter().zip(before) {
            let now = self.read(reg, 2) as u16;
            let encoding = (now & mask) >> mask.trailing_zeros();
            if (now ^ old) & mask != 0 && allowed & (1 << encoding) == 0 {
                let kept = (now & !mask) | (old & mask);
                self.v[usize::from(reg)] = kept as u8;
                self.v[usize::from(reg) + 1] = (kept >> 8) as u8;
            }
        }
    }
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
    for case in CASES {
        let m = Model::of(case);
        let mut p = RootPort::new(case.config);
        for (off, size) in accesses() {
            assert_eq!(
                p.config_read(off, size),
                m.read(off, size),
                "{}: read {off:#x}/{size}",
                case.name
            );
        }
    }
}

#[test]
fn all_ones_write_sets_exactly_the_writable_bits_at_every_width_and_alignment() {
    for case in CASES {
        for (off, size) in accesses() {
            let mut m = Model::of(case);
            let mut p = RootPort::new(case.config);
            let mut fx = Vec::new();
            p.config_write(off, size, 0xffff_ffff, &mut fx);
            m.write(off, size, 0xffff_ffff);
            let dword = off & !3;
            assert_eq!(
                p.config_read(dword, 4),
                m.read(dword, 4),
                "{}: write ones {off:#x}/{size}",
                case.name
            );
        }
    }
}

#[test]
fn zero_write_after_ones_restores_read_only_bits() {
    for case in CASES {
        for (off, size) in accesses() {
            let mut m = Model::of(case);
            let mut p = RootPort::new(case.config);
            let mut fx = Vec::new();
            p.config_write(off, size, 0xffff_ffff, &mut fx);
            p.config_write(off, size, 0, &mut fx);
            m.write(off, size, 0xffff_ffff);
            m.write(off, size, 0);
            // Writable bits return to 0 unless 0 is a reserved encoding (Target
            // Link Speed, indicators), which keeps the field.
            assert_eq!(
                p.config_read(off, size),
                m.read(off, size),
                "{}: {off:#x}/{size}",
                case.name
            );
        }
    }
}

#[test]
fn declared_masks_match_the_table() {
    for case in CASES {
        let p = RootPort::new(case.config);
        let m = Model::of(case);
        for &(off, size, ..) in TABLE.iter().chain(case.rows) {
            assert_eq!(
                p.config_space().w1c(off, size),
                compose(&m.c, off, size),
                "{}: w1c {off:#x}",
                case.name
            );
            assert_eq!(
                p.config_space().writable(off, size),
                compose(&m.w, off, size),
                "{}: writable {off:#x}",
                case.name
            );
        }
    }
}

#[test]
fn random_writes_to_the_capabilities_match_the_table_model() {
    for case in CASES {
        let mut m = Model::of(case);
        let mut p = RootPort::new(case.config);
        let mut fx = Vec::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..4000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let size = [1u8, 2, 4][(x % 3) as usize];
            let off = (0x40 + ((x >> 8) % 0x44) as u16) & !(u16::from(size) - 1);
            let value = (x >> 32) as u32;
            p.config_write(off, size, value, &mut fx);
            m.write(off, size, value);
            for d in (0x40..0x84).step_by(4) {
                assert_eq!(
                    p.config_read(d, 4),
                    m.read(d, 4),
                    "{}: {d:#x} after writing {value:#x} to {off:#x}/{size}",
                    case.name
                );
            }
        }
    }
}

/// (register, value read back after writing 0xffff to it on the default port,
/// why, with PCI Express Base 5.0 sections; QEMU 10's `pcie-root-port` for
/// comparison).
const ALL_ONES_READBACK: &[(u16, u16, &str)] = &[
    // QEMU 000f: it also hardwires Relaxed Ordering, No Snoop and MRRS, which
    // 7.5.3.4 permits only of a Function that never sets those attributes or
    // never issues reads larger than 128 bytes; the port keeps their defaults.
    (
        0x50,
        0x281f,
        "7.5.3.4: MPS stays 128 B (MPSS 000b), MRRS 111b reserved keeps 512 B, bits 8-10 and 15 0",
    ),
    // QEMU 0000: it hardwires Link Disable, Common Clock Configuration and
    // Extended Synch too, which 7.5.3.7 defines RW for a Downstream Port.
    (
        0x58,
        0x02d0,
        "7.5.3.7: no ASPM, Clock PM or bandwidth interrupt enables, Retrain Link reads 0",
    ),
    (
        0x60,
        0x1000,
        "7.5.3.10: no hot-plug element, only Data Link Layer State Changed Enable",
    ),
    // QEMU 8020: End-End TLP Prefix Blocking (bit 15) too, which 7.5.3.16 ties
    // to End-End TLP Prefix Supported, not advertised.
    (
        0x70,
        0x0020,
        "7.5.3.16: no Completion Timeout Value without ranges, ARI Forwarding Enable",
    ),
    // QEMU 0004: its Target Link Speed is read-only; 7.5.3.19 makes it RWS.
    (
        0x78,
        0x0073,
        "7.5.3.19: Target Link Speed 1111b is reserved, 8 GT/s kept",
    ),
];

#[test]
fn all_ones_write_reads_back_what_the_capabilities_allow() {
    for &(off, want, why) in ALL_ONES_READBACK {
        let mut p = port();
        let mut fx = Vec::new();
        p.config_write(off, 2, 0xffff, &mut fx);
        assert_eq!(p.config_read(off, 2) as u16, want, "{off:#x}: {why}");
    }
}

#[test]
fn reserved_max_read_request_size_keeps_the_old_value_and_the_rest_of_the_write() {
    let mut p = port();
    let mut fx = Vec::new();
    p.config_write(0x50, 2, 0x700f, &mut fx);
    assert_eq!(p.config_read(0x50, 2), 0x200f);
}

#[test]
fn max_payload_size_above_the_supported_size_keeps_the_old_value() {
    let mut p = RootPort::new(CASES[6].config);
    let mut fx = Vec::new();
    p.config_write(0x50, 1, 0x40, &mut fx); // 512 bytes
    p.config_write(0x50, 1, 0x60, &mut fx); // 1024 bytes: above MPSS
    assert_eq!(p.config_read(0x50, 1) & 0xe0, 0x40);
}

#[test]
fn target_link_speed_to_an_unsupported_speed_keeps_the_old_value() {
    let mut p = port();
    let mut fx = Vec::new();
    p.config_write(0x78, 2, 0x0004, &mut fx); // 16 GT/s on an 8 GT/s port
    assert_eq!(p.config_read(0x78, 2), 0x0003);
    p.config_write(0x78, 2, 0x0001, &mut fx);
    assert_eq!(p.config_read(0x78, 2), 0x0001);
}

#[test]
fn completion_timeout_value_of_an_unsupported_range_keeps_the_old_value() {
    let mut p = RootPort::new(CASES[6].config);
    let mut fx = Vec::new();
    p.config_write(0x70, 2, 0x0009, &mut fx); // Range C
    p.config_write(0x70, 2, 0x0005, &mut fx); // Range B: not supported
    assert_eq!(p.config_read(0x70, 2), 0x0009);
}

#[test]
fn reserved_indicator_control_keeps_the_old_value() {
    let mut p = RootPort::new(CASES[1].config);
    let mut fx = Vec::new();
    p.config_write(0x60, 2, 0x0140, &mut fx); // Attention On, Power On
    p.config_write(0x60, 2, 0x0000, &mut fx); // both 00b: reserved
    assert_eq!(p.config_read(0x60, 2), 0x0140);
}

#[test]
fn port_without_hot_plug_bandwidth_notification_or_clock_pm_keeps_their_controls_zero() {
    let mut p = port();
    let mut fx = Vec::new();
    p.config_write(0x58, 2, 0x0d03, &mut fx); // ASPM, Clock PM, LBMIE, LABIE
    p.config_write(0x60, 2, 0x07ff, &mut fx); // every hot-plug control
    assert_eq!(p.config_read(0x58, 2), 0);
    assert_eq!(p.config_read(0x60, 2), 0);
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

/// The write as it was before the port skipped the reserved-encoding check
/// for bytes that hold no such field: every field read before and checked
/// after.
fn write_checking_every_field(port: &mut RootPort, offset: u16, size: u8, value: u32) {
    let fields = reserved_encodings(&port.config);
    let before = fields.map(|f| port.u16_at(f.offset));
    port.cs.write(offset, size, value);
    for (f, &old) in fields.iter().zip(&before) {
        let now = port.u16_at(f.offset);
        if (now ^ old) & f.mask != 0 && !f.accepts(now) {
            port.cs.set_u16(f.offset, (now & !f.mask) | (old & f.mask));
        }
    }
}

proptest::proptest! {
    /// Writes of any width and alignment (within a dword, as the segment
    /// gives them), in the capabilities or anywhere, leave the same config
    /// space as the write that checks every field of [`reserved_encodings`].
    #[test]
    fn writes_keep_reserved_encodings_as_the_check_of_every_field_does(
        ops in proptest::collection::vec(
            (
                proptest::prop_oneof![0x40u16..0x80, 0u16..0x1000],
                proptest::prop_oneof![proptest::strategy::Just(1u8), proptest::strategy::Just(2), proptest::strategy::Just(4)],
                proptest::prelude::any::<u32>(),
            ),
            1..48,
        ),
        ranges in 0u8..16,
        speed in 1u8..5,
        mpss in 0u8..6,
    ) {
        let config = RootPortConfig {
            completion_timeout_ranges: ranges,
            link_speed: speed,
            max_payload_size_supported: mpss,
            hot_plug: Some(HotPlug::default()),
            ..RootPortConfig::default()
        };
        let (mut port, mut reference) = (RootPort::new(config), RootPort::new(config));
        for (offset, size, value) in ops {
            let offset = offset & !(u16::from(size) - 1);
            port.config_write(offset, size, value, &mut Vec::new());
            write_checking_every_field(&mut reference, offset, size, value);
            proptest::prop_assert!(
                port.cs.bytes()[..] == reference.cs.bytes()[..],
                "after the write of {:#x}/{} = {:#x}", offset, size, value
            );
        }
    }
}

use super::*;
use crate::layout::{swizzle, IntxRoute};
use crate::testing::{
    assigned, assigned_e1000e, forbidden_writes, FakeFunction, FakeHost, HostEvent, TEST_INTID,
};
use alloc::vec;
use arch_emu::addr::Pa;
use proptest::prelude::*;
use vbus::Bdf;

fn bdf(bus: u8, dev: u8, func: u8) -> Bdf {
    Bdf::new(bus, dev, func).unwrap()
}

fn wr(f: &mut AssignedFunction<FakeHost>, off: u16, size: u8, v: u32) -> Vec<Request> {
    let mut r = Vec::new();
    f.config_write(off, size, v, &mut r);
    r
}

fn host_dword(f: &AssignedFunction<FakeHost>, off: u16) -> u32 {
    f.host().function("e1000e").unwrap().config().raw(off, 4)
}

#[test]
fn ids_class_and_subsystem_come_from_the_host() {
    let mut f = assigned_e1000e();
    assert_eq!(f.config_read(0x00, 4), 0x10d3_8086);
    assert_eq!(f.config_read(0x08, 4), 0x0200_0000); // class 020000h, revision 0
    assert_eq!(f.config_read(0x2c, 4), 0x0000_8086); // subsystem 8086:0000
}

#[test]
fn reads_at_every_width_and_alignment_agree_with_the_dword() {
    let mut f = assigned_e1000e();
    for dw in (0..0x200u16).step_by(4) {
        let whole = f.config_read(dw, 4);
        for (size, mask) in [(1u8, 0xffu32), (2, 0xffff)] {
            for k in (0..4u16).step_by(usize::from(size)) {
                let part = f.config_read(dw + k, size);
                assert_eq!(part, whole >> (8 * k) & mask, "{:#x}/{size}", dw + k);
            }
        }
    }
}

#[test]
fn header_type_hides_the_multi_function_bit() {
    let mut h = FakeHost::new(
        0,
        vec![(1, 0, FakeFunction::e1000e()), (1, 1, FakeFunction::igb())],
    );
    h.write32(bdf(0, 1, 0), 0, 0); // nothing: IDs are read-only
    let mut f = assigned(h, bdf(0, 1, 0));
    assert_eq!(f.config_read(0x0e, 1), 0x00);
}

#[test]
fn command_passes_only_memory_bus_master_and_interrupt_disable_to_the_device() {
    let mut f = assigned_e1000e();
    wr(&mut f, 0x04, 2, 0xffff);
    assert_eq!(host_dword(&f, 0x04) & 0xffff, 0x0406);
    assert_eq!(f.config_read(0x04, 2), 0x0546); // + Parity Error Response, SERR# Enable emulated
}

#[test]
fn status_error_bits_are_write_1_to_clear_on_the_device() {
    let mut f = assigned_e1000e();
    f.host.write32(bdf(1, 0, 0), 0x04, 0); // nothing set: clearing must not set
    wr(&mut f, 0x06, 2, 0xffff);
    assert_eq!(f.config_read(0x06, 2) & 0xf900, 0);
    assert_eq!(f.config_read(0x06, 2) & 0x0010, 0x0010); // Capabilities List
}

#[test]
fn bar_sizing_reads_back_the_size_mask_and_never_reaches_the_host() {
    let mut f = assigned_e1000e();
    let host_bar0 = host_dword(&f, 0x10);
    wr(&mut f, 0x10, 4, !0);
    assert_eq!(f.config_read(0x10, 4), 0xfffe_0000); // 128 KiB, 32-bit, non-prefetchable
    wr(&mut f, 0x1c, 4, !0);
    assert_eq!(f.config_read(0x1c, 4), 0xffff_c000); // 16 KiB
    assert_eq!(host_dword(&f, 0x10), host_bar0);
}

#[test]
fn guest_programmed_bar_address_is_shadowed() {
    let mut f = assigned_e1000e();
    wr(&mut f, 0x10, 4, 0x4002_0000);
    assert_eq!(f.config_read(0x10, 4), 0x4002_0000);
    assert_eq!(f.config_space().raw(0x10, 4), 0x4002_0000);
}

#[test]
fn io_bar_and_expansion_rom_read_as_unimplemented() {
    let mut f = assigned_e1000e();
    wr(&mut f, 0x18, 4, !0);
    wr(&mut f, 0x30, 4, !0);
    assert_eq!((f.config_read(0x18, 4), f.config_read(0x30, 4)), (0, 0));
}

#[test]
fn memory_bars_are_host_backed_at_the_host_address() {
    let f = assigned_e1000e();
    let got: Vec<(u8, u64, BarBacking)> = f
        .bars()
        .iter()
        .map(|b| (b.index, b.size, b.backing))
        .collect();
    assert_eq!(
        got,
        [
            (0, 128 << 10, BarBacking::Host(Pa(0x1000_0000))),
            (1, 128 << 10, BarBacking::Host(Pa(0x1002_0000))),
            (3, 16 << 10, BarBacking::Host(Pa(0x1004_0000))),
        ]
    );
}

#[test]
fn small_bar_is_presented_as_4_kib() {
    let tiny = FakeFunction::endpoint("tiny", 0x1af4, 0x1000, 0x02_00_00).mem32_bar(0, 256, false);
    let mut f = assigned(FakeHost::new(0, vec![(1, 0, tiny)]), bdf(0, 1, 0));
    assert_eq!(f.bars()[0].size, 4096);
    wr(&mut f, 0x10, 4, !0);
    assert_eq!(f.config_read(0x10, 4), 0xffff_f000);
}

/// Walks the standard chain as Linux's `__pci_find_next_cap_ttl` does (at most 48 hops).
fn linux_caps(f: &mut AssignedFunction<FakeHost>) -> Vec<(u8, u16)> {
    let mut out = Vec::new();
    if f.config_read(0x06, 2) & 0x10 == 0 {
        return out;
    }
    let mut pos = f.config_read(0x34, 1) as u16;
    for _ in 0..48 {
        if pos < 0x40 {
            break;
        }
        pos &= !3;
        let ent = f.config_read(pos, 2);
        if ent & 0xff == 0xff {
            break;
        }
        out.push((ent as u8, pos));
        pos = (ent >> 8) as u16;
    }
    out
}

/// Walks the extended chain as Linux's `pci_find_next_ext_capability` does.
fn linux_ext_caps(f: &mut AssignedFunction<FakeHost>) -> Vec<(u16, u16)> {
    let mut out = Vec::new();
    let mut pos = 0x100u16;
    for _ in 0..(4096 - 256) / 8 {
        let h = f.config_read(pos, 4);
        if h == 0 {
            break;
        }
        out.push((h as u16, pos));
        pos = (h >> 20) as u16;
        if pos < 0x100 {
            break;
        }
    }
    out
}

#[test]
fn standard_chain_keeps_pm_and_pcie_and_hides_msi_and_msix() {
    let mut f = assigned_e1000e();
    assert_eq!(linux_caps(&mut f), [(0x01, 0xc8), (0x10, 0xe0)]);
    assert_eq!(f.config_read(0xd0, 4), 0); // MSI hidden
    assert_eq!(f.config_read(0xa0, 4), 0); // MSI-X hidden
}

#[test]
fn extended_chain_starts_with_a_null_capability_when_aer_is_hidden() {
    let mut f = assigned_e1000e();
    assert_eq!(linux_ext_caps(&mut f), [(0x0000, 0x100), (0x0003, 0x140)]); // null, DSN
}

#[test]
fn igb_sriov_ari_and_aer_are_hidden() {
    let mut f = assigned(
        FakeHost::new(0, vec![(1, 0, FakeFunction::igb())]),
        bdf(0, 1, 0),
    );
    assert_eq!(linux_ext_caps(&mut f), []);
    assert_eq!(linux_caps(&mut f), [(0x01, 0x40), (0x10, 0xa0)]);
}

#[test]
fn initiate_flr_becomes_a_request_and_never_reaches_the_device() {
    let mut f = assigned_e1000e();
    let r = wr(&mut f, 0xe8, 2, 0x8000);
    assert_eq!(r, [Request::FunctionLevelReset]);
    assert!(f
        .host()
        .writes()
        .iter()
        .all(|(_, off, v)| *off != 0xe8 || v & 0x8000 == 0));
    assert_eq!(f.host().now_us(), 0);
}

#[test]
fn max_payload_size_is_emulated_and_max_read_request_reaches_the_device() {
    let mut f = assigned_e1000e();
    wr(&mut f, 0xe8, 2, 0x50e0); // MRRS 4096 (101b), MPS 4096 (111b)
    assert_eq!(host_dword(&f, 0xe8) & 0x70e0, 0x5000);
    assert_eq!(f.config_read(0xe8, 2) & 0x70e0, 0x50e0);
}

#[test]
fn reset_with_flr_waits_100_ms_and_restores_the_host_bars() {
    let mut f = assigned_e1000e();
    wr(&mut f, 0x10, 4, 0x4000_0000);
    f.reset();
    let log = f.host().log().to_vec();
    let flr = log.iter().position(
        |e| matches!(e, HostEvent::Write { offset: 0xe8, value, .. } if value & 0x8000 != 0),
    );
    let wait = log.iter().position(|e| *e == HostEvent::Delay(FLR_WAIT_US));
    assert!(flr.is_some() && wait > flr);
    assert_eq!(host_dword(&f, 0x10), 0x1000_0000);
    assert_eq!(host_dword(&f, 0x1c), 0x1004_0000);
    assert_eq!(f.host().early_accesses(), 0);
}

#[test]
fn reset_returns_the_shadow_to_its_reset_values() {
    let mut f = assigned_e1000e();
    wr(&mut f, 0x10, 4, 0x4000_0000);
    wr(&mut f, 0x3c, 1, 0x2a);
    f.reset();
    assert_eq!((f.config_read(0x10, 4), f.config_read(0x3c, 1)), (0, 0));
}

#[test]
fn reset_without_flr_uses_secondary_bus_reset_on_the_parent() {
    let dev = FakeFunction::endpoint("noflr", 0x1af4, 0x1041, 0x02_00_00)
        .mem32_bar(0, 16 << 10, false)
        .pcie_capability(0x40, 0, false);
    let mut f = assigned(
        FakeHost::new(
            0,
            vec![(1, 0, FakeFunction::root_port().with_below(0, 0, dev))],
        ),
        bdf(1, 0, 0),
    );
    f.reset();
    let w = f.host().writes();
    assert_eq!(
        w[0],
        ("pcie-root-port", 0x3c, 0x0040_0000 | (w[0].2 & 0xffff))
    ); // SBR asserted
    assert_eq!(f.host().log()[1], HostEvent::Delay(SBR_HOLD_US));
    assert_eq!(
        f.host().function("noflr").unwrap().config().raw(0x10, 4),
        0x1000_0000
    );
    assert_eq!(f.host().early_accesses(), 0);
}

#[test]
fn intx_is_the_host_line() {
    assert_eq!(assigned_e1000e().intx(), Intx::Host(TEST_INTID));
}

#[test]
fn swizzle_adds_the_device_number_below_each_bridge() {
    // INTB of 03:01.0 behind 02:03.0 behind 00:02.0: B+1 = C, then C+3 = B.
    let r = swizzle(bdf(3, 1, 0), 2, &[bdf(0, 2, 0), bdf(2, 3, 0)]);
    assert_eq!(
        r,
        Some(IntxRoute {
            root: bdf(0, 2, 0),
            pin: 2
        })
    );
}

#[test]
fn igb_behind_the_switch_routes_inta_at_its_root_port() {
    let f = assigned(FakeHost::behind_switch(), bdf(4, 0, 0));
    assert_eq!(
        f.layout().intx,
        Some(IntxRoute {
            root: bdf(0, 2, 0),
            pin: 1
        })
    );
    assert_eq!(f.layout().parent_bridge, Some(bdf(3, 0, 0)));
}

#[test]
fn msix_layout_is_recorded() {
    let f = assigned_e1000e();
    let m = f.layout().msix.unwrap();
    assert_eq!(
        (m.vectors, m.table.bar, m.table.offset, m.table.size),
        (5, 3, 0, 80)
    );
    assert_eq!((m.pba.bar, m.pba.offset, m.pba.size), (3, 0x2000, 8));
}

#[test]
fn bad_sizes_read_all_ones_and_are_counted() {
    let mut f = assigned_e1000e();
    assert_eq!(f.config_read(0x02, 4), !0);
    assert_eq!(f.config_read(4095, 2), 0xffff);
    assert_eq!(f.stats().bad_accesses, 2);
}

#[test]
fn all_ones_zeros_and_patterns_to_every_register_move_nothing_on_the_host() {
    for (pattern, host) in [
        (!0u32, FakeHost::behind_root_port()),
        (0, FakeHost::behind_switch()),
        (0x5a5a_a5a5, FakeHost::behind_root_port()),
    ] {
        let target = if pattern == 0 {
            bdf(4, 0, 0)
        } else {
            bdf(1, 0, 0)
        };
        let mut f = assigned(host, target);
        for size in [1u8, 2, 4] {
            for off in (0..4096u16).step_by(usize::from(size)) {
                wr(&mut f, off, size, pattern);
            }
        }
        assert_eq!(forbidden_writes(f.host()), [], "pattern {pattern:#x}");
    }
}

proptest! {
    #[test]
    fn no_guest_write_changes_a_host_bar_bus_number_or_window(
        writes in proptest::collection::vec((0u16..4096, prop_oneof![Just(1u8), Just(2), Just(4)], any::<u32>()), 1..64)
    ) {
        let mut f = assigned_e1000e();
        for (off, size, v) in writes {
            let off = off & !(u16::from(size) - 1);
            wr(&mut f, off, size, v);
            let _ = f.config_read(off, size);
        }
        prop_assert_eq!(forbidden_writes(f.host()), vec![]);
        prop_assert_eq!(host_dword(&f, 0x10), 0x1000_0000);
    }
}

/// The guest's view of the assigned e1000e's type-0 header, written from
/// the specification (PCI Express Base 6.0, 7.5.1.1 and 7.5.1.2) and the
/// filter's rules, independently of the implementation: (offset, size,
/// value after reset, bits a write of all ones sets, write-1-to-clear bits).
const E1000E_HEADER: &[(u16, u8, u32, u32, u32)] = &[
    (0x00, 4, 0x10d3_8086, 0, 0),           // Vendor/Device ID from the host
    (0x04, 2, 0x0000, 0x0546, 0), // Command: MSE, BME, Parity Error Response, SERR#, INTx Disable; no I/O Space
    (0x06, 2, 0x0010, 0, 0xf900), // Status: Capabilities List; error bits RW1C
    (0x08, 4, 0x0200_0000, 0, 0), // Revision 0, class 020000h
    (0x0c, 1, 0x00, 0xff, 0),     // Cache Line Size (emulated)
    (0x0d, 1, 0x00, 0, 0),        // Latency Timer: RO 0 on PCI Express
    (0x0e, 1, 0x00, 0, 0),        // Header Type 0, no multi-function bit
    (0x0f, 1, 0x00, 0, 0),        // BIST: none
    (0x10, 4, 0x0000_0000, 0xfffe_0000, 0), // BAR0: 128 KiB, 32-bit, non-prefetchable
    (0x14, 4, 0x0000_0000, 0xfffe_0000, 0), // BAR1: 128 KiB flash
    (0x18, 4, 0x0000_0000, 0, 0), // BAR2: the I/O BAR, hidden
    (0x1c, 4, 0x0000_0000, 0xffff_c000, 0), // BAR3: 16 KiB MSI-X BAR
    (0x20, 4, 0x0000_0000, 0, 0), // BAR4: none
    (0x24, 4, 0x0000_0000, 0, 0), // BAR5: none
    (0x28, 4, 0x0000_0000, 0, 0), // CardBus CIS Pointer: none
    (0x2c, 4, 0x0000_8086, 0, 0), // Subsystem 8086:0000 from the host
    (0x30, 4, 0x0000_0000, 0, 0), // Expansion ROM: hidden
    (0x34, 1, 0xc8, 0, 0),        // Capabilities Pointer: PM (MSI-X at A0h hidden)
    (0x3c, 1, 0x00, 0xff, 0),     // Interrupt Line (emulated)
    (0x3d, 1, 0x01, 0, 0),        // Interrupt Pin: INTA from the host
    (0x3e, 2, 0x0000, 0, 0),      // Min_Gnt/Max_Lat: 0 on PCI Express
];

#[test]
fn header_reads_its_reset_values_at_every_width_and_alignment() {
    for &(off, size, value, _, _) in E1000E_HEADER {
        let mut f = assigned_e1000e();
        for b in 0..u16::from(size) {
            let want = (value >> (8 * b)) & 0xff;
            assert_eq!(f.config_read(off + b, 1), want, "byte {:#x}", off + b);
        }
        if size >= 2 {
            for h in (0..u16::from(size)).step_by(2) {
                let want = (value >> (8 * h)) & 0xffff;
                assert_eq!(f.config_read(off + h, 2), want, "word {:#x}", off + h);
            }
        }
        let dword = f.config_read(off & !3, 4);
        let shift = 8 * u32::from(off & 3);
        let mask = if size == 4 {
            u32::MAX
        } else {
            (1u32 << (8 * u32::from(size))) - 1
        };
        assert_eq!((dword >> shift) & mask, value, "dword at {:#x}", off & !3);
    }
}

#[test]
fn header_writes_of_all_ones_set_exactly_the_writable_bits_at_every_width() {
    for &(off, size, value, writable, w1c) in E1000E_HEADER {
        for width in [1u8, 2, 4] {
            if width > size && !(width == 4 && off % 4 == 0) {
                continue;
            }
            let mut f = assigned_e1000e();
            let host_before: Vec<u32> =
                (0x10..0x34).step_by(4).map(|o| host_dword(&f, o)).collect();
            let span = u16::from(size.max(width));
            let base = off & !(u16::from(width) - 1);
            for o in (base..base + span).step_by(usize::from(width)) {
                let ones = if width == 4 {
                    u32::MAX
                } else {
                    (1u32 << (8 * u32::from(width))) - 1
                };
                let rq = wr(&mut f, o, width, ones);
                assert!(rq.is_empty(), "{o:#x}");
            }
            let mask = if size == 4 {
                u32::MAX
            } else {
                (1u32 << (8 * u32::from(size))) - 1
            };
            let got = (f.config_read(off & !3, 4) >> (8 * u32::from(off & 3))) & mask;
            let want = ((value & !writable) | writable) & !w1c;
            assert_eq!(got, want, "{off:#x} after all ones at width {width}");
            let host_after: Vec<u32> = (0x10..0x34).step_by(4).map(|o| host_dword(&f, o)).collect();
            assert_eq!(host_before, host_after, "host BARs after writing {off:#x}");
        }
    }
}

//! Segment tests: ECAM routing by programmed bus numbers, memory decoding
//! computed from the registers (checked against a reference model by
//! proptest), routing of aperture accesses, resets and INTx.

use super::*;
use crate::config::ConfigSpace;
use crate::endpoint::{BarProfile, Endpoint};
use crate::function::BarInfo;
use crate::testing::TestBridge;
use alloc::vec;
use arch_emu::addr::Pa;
use proptest::prelude::*;

/// An endpoint whose BARs are host-backed, that asks for an FLR when bit 15
/// of Device Control at 0x48 is written, and drives INTx from BAR 0 offset 0.
struct HostFn {
    ep: Endpoint,
    bars: Vec<BarInfo>,
    level: bool,
    resets: u32,
}
impl HostFn {
    fn new() -> Self {
        let ep = Endpoint::new(
            0x8086,
            0x10d3,
            0x02_00_00,
            &[
                BarProfile {
                    index: 0,
                    size: 0x2_0000,
                    is_64bit: false,
                    prefetchable: false,
                },
                BarProfile {
                    index: 2,
                    size: 0x4000,
                    is_64bit: true,
                    prefetchable: true,
                },
            ],
        );
        let bars = vec![
            BarInfo {
                index: 0,
                size: 0x2_0000,
                is_64bit: false,
                prefetchable: false,
                backing: BarBacking::Host(Pa(0x1000_0000)),
            },
            BarInfo {
                index: 2,
                size: 0x4000,
                is_64bit: true,
                prefetchable: true,
                backing: BarBacking::Trapped,
            },
        ];
        HostFn {
            ep,
            bars,
            level: false,
            resets: 0,
        }
    }
}
impl PciFunction for HostFn {
    fn config_read(&mut self, offset: u16, size: u8) -> u32 {
        self.ep.config_read(offset, size)
    }
    fn config_write(&mut self, offset: u16, size: u8, value: u32, rq: &mut Vec<Request>) {
        if offset == 0x48 && size == 2 && value & 0x8000 != 0 {
            rq.push(Request::FunctionLevelReset);
            return;
        }
        self.ep.config_write(offset, size, value, rq);
    }
    fn config_space(&self) -> &ConfigSpace {
        self.ep.config_space()
    }
    fn bridge_bus_range(&self) -> Option<(u8, u8)> {
        None
    }
    fn bars(&self) -> &[BarInfo] {
        &self.bars
    }
    fn bar_read(&mut self, bar: u8, offset: u64, size: u8, rq: &mut Vec<Request>) -> u64 {
        if bar == 2 && offset == 0 {
            // Read-to-clear, like a virtio ISR.
            let v = u64::from(self.level);
            self.level = false;
            return v;
        }
        self.ep.bar_read(bar, offset, size, rq)
    }
    fn bar_write(&mut self, bar: u8, offset: u64, size: u8, value: u64, rq: &mut Vec<Request>) {
        if bar == 2 && offset == 0 {
            self.level = value != 0;
        }
        self.ep.bar_write(bar, offset, size, value, rq);
    }
    fn reset(&mut self) {
        self.ep.reset();
        self.level = false;
        self.resets += 1;
    }
    fn intx(&self) -> Intx {
        Intx::Level(self.level)
    }

    fn poll(&mut self) {}
}

fn endpoint() -> Box<Endpoint> {
    Box::new(Endpoint::new(
        0x8086,
        0x10d3,
        0x02_00_00,
        &[
            BarProfile {
                index: 0,
                size: 0x2_0000,
                is_64bit: false,
                prefetchable: false,
            },
            BarProfile {
                index: 2,
                size: 0x4000,
                is_64bit: true,
                prefetchable: true,
            },
        ],
    ))
}

fn ecam(bus: u64, dev: u64, func: u64, reg: u64) -> u64 {
    (bus << 20) | (dev << 15) | (func << 12) | reg
}

const MEM32: MemRange<Ipa> = MemRange::new(Ipa(0x1000_0000), 0x2000_0000);
const MEM64: MemRange<Ipa> = MemRange::new(Ipa(0x80_0000_0000), 0x40_0000_0000);

fn segment() -> Segment {
    let mut s = Segment::new(1, 16);
    s.set_apertures(&[MEM32, MEM64]);
    s.set_intx_spis([35, 36, 37, 38]);
    s.add_bus0(1, 0, Box::new(TestBridge::new())).unwrap();
    s.attach_below(1, 0, endpoint()).unwrap();
    s
}

/// Port 00:01.0 with bus 1, memory window 0x1000_0000..0x100f_ffff and MSE on;
/// device 01:00.0 with BAR0 at `bar0` and BAR2 at 0x80_0000_0000.
fn programmed(s: &mut Segment, bar0: u32) -> Effects {
    let mut fx = Effects::new();
    fx.extend(s.ecam_write(ecam(0, 1, 0, 0x18), 4, 0x0001_0100));
    fx.extend(s.ecam_write(ecam(0, 1, 0, 0x20), 4, 0x1000_1000));
    fx.extend(s.ecam_write(ecam(0, 1, 0, 0x24), 4, 0x0001_0001));
    fx.extend(s.ecam_write(ecam(0, 1, 0, 0x28), 4, 0x80));
    fx.extend(s.ecam_write(ecam(0, 1, 0, 0x2c), 4, 0x80));
    fx.extend(s.ecam_write(ecam(0, 1, 0, 0x04), 2, 0x0006));
    fx.extend(s.ecam_write(ecam(1, 0, 0, 0x10), 4, u64::from(bar0)));
    fx.extend(s.ecam_write(ecam(1, 0, 0, 0x18), 4, 0));
    fx.extend(s.ecam_write(ecam(1, 0, 0, 0x1c), 4, 0x80));
    fx
}

fn strings(fx: &Effects) -> Vec<alloc::string::String> {
    fx.iter().map(|e| alloc::format!("{e}")).collect()
}

#[test]
fn absent_function_reads_all_ones_and_is_counted() {
    let mut s = segment();
    assert_eq!(s.ecam_read(ecam(0, 5, 0, 0), 2), 0xffff);
    assert_eq!(s.ecam_read(ecam(0, 5, 0, 0), 4), 0xffff_ffff);
    assert_eq!(s.stats().absent, 2);
}

#[test]
fn device_below_port_is_unreachable_until_bus_numbers_are_programmed() {
    let mut s = segment();
    assert_eq!(s.ecam_read(ecam(1, 0, 0, 0), 4), 0xffff_ffff);
    let fx = s.ecam_write(ecam(0, 1, 0, 0x18), 4, 0x0001_0100);
    assert!(fx.is_empty());
    assert_eq!(s.ecam_read(ecam(1, 0, 0, 0), 4), 0x10d3_8086);
}

/// A segment whose root bus is 0x10 (`bus-range = <0x10 0x1f>`): ECAM offset
/// 0 is bus 0x10, and the port's secondary bus 0x11 is at ECAM bus offset 1.
#[test]
fn bus_start_is_the_root_bus_and_ecam_offsets_count_from_it() {
    let mut s = Segment::with_bus_range(1, 0x10, 0x1f);
    s.add_bus0(1, 0, Box::new(TestBridge::new())).unwrap();
    s.attach_below(1, 0, endpoint()).unwrap();
    assert_eq!(s.ecam_size(), 16 << 20);
    // Primary 0x10, secondary 0x11, subordinate 0x11.
    let _ = s.ecam_write(ecam(0, 1, 0, 0x18), 4, 0x0011_1110);
    assert_eq!(s.ecam_read(ecam(1, 0, 0, 0), 4), 0x10d3_8086);
    let ids: Vec<Bdf> = s.enumerate_ids().into_iter().map(|(b, _)| b).collect();
    assert_eq!(
        ids,
        [Bdf::new(0x10, 1, 0).unwrap(), Bdf::new(0x11, 0, 0).unwrap()]
    );
}

#[test]
fn secondary_bus_at_or_below_bus_start_claims_nothing() {
    let mut s = Segment::with_bus_range(1, 0x10, 0x1f);
    s.add_bus0(1, 0, Box::new(TestBridge::new())).unwrap();
    s.attach_below(1, 0, endpoint()).unwrap();
    // Secondary bus 1 as if the root bus were 0: below the root bus, invalid.
    let _ = s.ecam_write(ecam(0, 1, 0, 0x18), 4, 0x0001_0100);
    assert_eq!(s.ecam_read(ecam(1, 0, 0, 0), 4), 0xffff_ffff);
    assert_eq!(s.enumerate_ids().len(), 1);
}

#[test]
fn only_device_0_is_decoded_below_a_downstream_port() {
    let mut s = segment();
    let _ = s.ecam_write(ecam(0, 1, 0, 0x18), 4, 0x0002_0100);
    assert_eq!(s.ecam_read(ecam(1, 1, 0, 0), 4), 0xffff_ffff);
    assert_eq!(s.ecam_read(ecam(2, 0, 0, 0), 4), 0xffff_ffff);
}

#[test]
fn reprogrammed_secondary_bus_moves_the_device() {
    let mut s = segment();
    let _ = s.ecam_write(ecam(0, 1, 0, 0x18), 4, 0x0001_0100);
    let _ = s.ecam_write(ecam(0, 1, 0, 0x19), 2, 0x0505);
    assert_eq!(s.ecam_read(ecam(1, 0, 0, 0), 4), 0xffff_ffff);
    assert_eq!(s.ecam_read(ecam(5, 0, 0, 0), 2), 0x8086);
}

#[test]
fn functions_get_stable_ids_in_placement_order() {
    let mut s = Segment::new(0, 4);
    assert_eq!(
        s.add_bus0(1, 0, Box::new(TestBridge::new())),
        Ok(FunctionId(0))
    );
    assert_eq!(
        s.add_bus0(2, 0, Box::new(TestBridge::new())),
        Ok(FunctionId(1))
    );
    assert_eq!(s.attach_below(1, 0, endpoint()), Ok(FunctionId(2)));
}

#[test]
fn bar_is_decoded_once_port_and_function_enable_memory_inside_the_window() {
    let mut s = segment();
    let fx = programmed(&mut s, 0x1000_0000);
    assert!(
        fx.is_empty(),
        "the function's Memory Space Enable is still clear"
    );
    let fx = s.ecam_write(ecam(1, 0, 0, 0x04), 2, 0x0002);
    assert_eq!(
        strings(&fx),
        [
            "map fn1 bar0 IPA 0x10000000+0x20000 -> trapped",
            "map fn1 bar2 IPA 0x8000000000+0x4000 -> trapped prefetchable"
        ]
    );
}

#[test]
fn bar_outside_the_port_window_is_not_decoded() {
    let mut s = segment();
    let _ = programmed(&mut s, 0x1010_0000);
    let fx = s.ecam_write(ecam(1, 0, 0, 0x04), 2, 0x0002);
    assert_eq!(
        strings(&fx),
        ["map fn1 bar2 IPA 0x8000000000+0x4000 -> trapped prefetchable"]
    );
}

#[test]
fn port_memory_disable_unmaps_everything_below_it() {
    let mut s = segment();
    let _ = programmed(&mut s, 0x1000_0000);
    let _ = s.ecam_write(ecam(1, 0, 0, 0x04), 2, 0x0002);
    let fx = s.ecam_write(ecam(0, 1, 0, 0x04), 2, 0);
    assert_eq!(fx.len(), 2);
    assert!(fx.iter().all(|e| matches!(e, Effect::Unmap { .. })));
    assert!(s.decoded().is_empty());
}

#[test]
fn moving_a_decoded_bar_unmaps_the_old_range_before_mapping_the_new() {
    let mut s = segment();
    let _ = programmed(&mut s, 0x1000_0000);
    let _ = s.ecam_write(ecam(1, 0, 0, 0x04), 2, 0x0002);
    let fx = s.ecam_write(ecam(1, 0, 0, 0x10), 4, 0x1004_0000);
    assert_eq!(
        strings(&fx),
        [
            "unmap fn1 bar0 IPA 0x10000000+0x20000 -> trapped",
            "map fn1 bar0 IPA 0x10040000+0x20000 -> trapped"
        ]
    );
}

#[test]
fn bar_outside_every_aperture_is_never_decoded() {
    let mut s = segment();
    // Window and BAR at 0x0800_0000: where the guest's GIC lives, not an aperture.
    let _ = s.ecam_write(ecam(0, 1, 0, 0x18), 4, 0x0001_0100);
    let _ = s.ecam_write(ecam(0, 1, 0, 0x20), 4, 0x0800_0800);
    let _ = s.ecam_write(ecam(0, 1, 0, 0x04), 2, 0x0002);
    let _ = s.ecam_write(ecam(1, 0, 0, 0x10), 4, 0x0800_0000);
    let fx = s.ecam_write(ecam(1, 0, 0, 0x04), 2, 0x0002);
    assert!(fx.is_empty());
    assert_eq!(s.mmio_read(Ipa(0x0800_0000), 4), None);
}

#[test]
fn trapped_bar_access_reaches_the_function_that_decodes_it() {
    let mut s = segment();
    let _ = programmed(&mut s, 0x1000_0000);
    let _ = s.ecam_write(ecam(1, 0, 0, 0x04), 2, 0x0002);
    let fx = s.mmio_write(Ipa(0x1000_0040), 4, 0x1234).unwrap();
    assert!(fx.is_empty());
    assert_eq!(s.mmio_read(Ipa(0x1000_0040), 4).unwrap().0, 0x1234);
    assert_eq!(s.mmio_read(Ipa(0x80_0000_0040), 4).unwrap().0, 0);
}

#[test]
fn aperture_access_nothing_decodes_reads_all_ones_and_drops_writes() {
    let mut s = segment();
    let _ = programmed(&mut s, 0x1000_0000);
    let _ = s.ecam_write(ecam(1, 0, 0, 0x04), 2, 0x0002);
    let _ = s.ecam_write(ecam(1, 0, 0, 0x04), 2, 0);
    assert_eq!(s.mmio_read(Ipa(0x1000_0040), 4).unwrap().0, 0xffff_ffff);
    assert_eq!(s.mmio_read(Ipa(0x1000_0040), 1).unwrap().0, 0xff);
    assert!(s.mmio_write(Ipa(0x1000_0040), 4, 5).unwrap().is_empty());
    assert_eq!(s.stats().unclaimed_mmio, 3);
}

#[test]
fn access_straddling_the_end_of_a_bar_is_not_routed() {
    let mut s = segment();
    let _ = programmed(&mut s, 0x1000_0000);
    let _ = s.ecam_write(ecam(1, 0, 0, 0x04), 2, 0x0002);
    assert_eq!(s.mmio_read(Ipa(0x1001_fffc), 8).unwrap().0, u64::MAX);
}

#[test]
fn host_backed_bar_maps_onto_its_host_range() {
    let mut s = Segment::new(1, 16);
    s.set_apertures(&[MEM32, MEM64]);
    s.add_bus0(1, 0, Box::new(TestBridge::new())).unwrap();
    s.attach_below(1, 0, Box::new(HostFn::new())).unwrap();
    let _ = programmed(&mut s, 0x1002_0000);
    let fx = s.ecam_write(ecam(1, 0, 0, 0x04), 2, 0x0002);
    assert_eq!(
        strings(&fx),
        [
            "map fn1 bar0 IPA 0x10020000+0x20000 -> PA 0x10000000",
            "map fn1 bar2 IPA 0x8000000000+0x4000 -> trapped prefetchable"
        ]
    );
    // A trap on a host-backed BAR (mid-remap) reads all ones.
    assert_eq!(s.mmio_read(Ipa(0x1002_0000), 4).unwrap().0, 0xffff_ffff);
    assert_eq!(s.stats().host_bar_traps, 1);
}

#[test]
fn overlapping_bars_decode_only_the_first() {
    let mut s = segment();
    let _ = s.add_bus0(2, 0, Box::new(TestBridge::new()));
    let _ = s.attach_below(2, 0, endpoint());
    let _ = programmed(&mut s, 0x1000_0000);
    let _ = s.ecam_write(ecam(1, 0, 0, 0x04), 2, 0x0002);
    // Port 2: bus 2, the same memory window, device BAR0 at the same address.
    let _ = s.ecam_write(ecam(0, 2, 0, 0x18), 4, 0x0002_0200);
    let _ = s.ecam_write(ecam(0, 2, 0, 0x20), 4, 0x1000_1000);
    let _ = s.ecam_write(ecam(0, 2, 0, 0x04), 2, 0x0006);
    let _ = s.ecam_write(ecam(2, 0, 0, 0x10), 4, 0x1000_0000);
    let fx = s.ecam_write(ecam(2, 0, 0, 0x04), 2, 0x0002);
    assert!(fx.is_empty());
    // Counted once: the one redecode that found device 2's BAR0 on device 1's.
    assert_eq!(s.stats().overlapping_bars, 1);
}

#[test]
fn secondary_bus_reset_asks_to_reset_the_function_below() {
    let mut s = segment();
    let fx = s.ecam_write(ecam(0, 1, 0, 0x3e), 2, 0x40);
    assert_eq!(strings(&fx), ["reset fn1"]);
    let fx = s.ecam_write(ecam(0, 1, 0, 0x3e), 2, 0x40);
    assert!(fx.is_empty(), "only the rising edge resets");
}

#[test]
fn applying_a_reset_clears_the_function_and_unmaps_its_bars() {
    let mut s = segment();
    let _ = programmed(&mut s, 0x1000_0000);
    let _ = s.ecam_write(ecam(1, 0, 0, 0x04), 2, 0x0002);
    let fx = s.reset_function(FunctionId(1));
    assert_eq!(fx.len(), 2);
    assert!(fx.iter().all(|e| matches!(e, Effect::Unmap { .. })));
    assert_eq!(s.ecam_read(ecam(1, 0, 0, 0x10), 4), 0);
}

#[test]
fn resetting_the_whole_segment_unmaps_every_bar_and_clears_the_ports_bus_numbers() {
    let mut s = segment();
    let _ = programmed(&mut s, 0x1000_0000);
    let _ = s.ecam_write(ecam(1, 0, 0, 0x04), 2, 0x0002);
    let fx = s.reset_all();
    assert_eq!(fx.len(), 2);
    assert!(fx.iter().all(|e| matches!(e, Effect::Unmap { .. })));
    assert_eq!(
        s.ecam_read(ecam(0, 1, 0, 0x18), 4),
        0,
        "the port's bus numbers are back to zero"
    );
    assert_eq!(
        s.ecam_read(ecam(1, 0, 0, 0x00), 4),
        0xffff_ffff,
        "bus 1 is no longer routed"
    );
}

#[test]
fn function_level_reset_request_becomes_a_reset_effect() {
    let mut s = Segment::new(1, 16);
    s.add_bus0(1, 0, Box::new(TestBridge::new())).unwrap();
    s.attach_below(1, 0, Box::new(HostFn::new())).unwrap();
    let _ = s.ecam_write(ecam(0, 1, 0, 0x18), 4, 0x0001_0100);
    let fx = s.ecam_write(ecam(1, 0, 0, 0x48), 2, 0x8000);
    assert_eq!(strings(&fx), ["reset fn1"]);
}

#[test]
fn emulated_intx_changes_become_effects_with_the_swizzled_spi() {
    let mut s = Segment::new(1, 16);
    s.set_apertures(&[MEM32, MEM64]);
    s.set_intx_spis([35, 36, 37, 38]);
    s.add_bus0(1, 0, Box::new(TestBridge::new())).unwrap();
    s.attach_below(1, 0, Box::new(HostFn::new())).unwrap();
    let _ = programmed(&mut s, 0x1002_0000);
    let _ = s.ecam_write(ecam(1, 0, 0, 0x04), 2, 0x0002);
    // INTA of a device below the port at 00:01.0 swizzles to INTB: SPI 36.
    let fx = s.mmio_write(Ipa(0x80_0000_0000), 4, 1).unwrap();
    assert_eq!(strings(&fx), ["intx fn1 spi 36 level 1"]);
    let (v, fx) = s.mmio_read(Ipa(0x80_0000_0000), 4).unwrap();
    assert_eq!(v, 1);
    assert_eq!(strings(&fx), ["intx fn1 spi 36 level 0"]);
}

#[test]
fn attaching_below_an_endpoint_is_refused() {
    let mut s = Segment::new(0, 4);
    s.add_bus0(2, 0, endpoint()).unwrap();
    assert_eq!(
        s.attach_below(2, 0, endpoint()),
        Err(TopologyError::NotABridge(Bdf::new(0, 2, 0).unwrap()))
    );
}

#[test]
fn eight_byte_read_is_two_dwords_low_first() {
    let mut s = segment();
    let _ = s.ecam_write(ecam(0, 1, 0, 0x18), 4, 0x0001_0100);
    let v = s.ecam_read(ecam(0, 1, 0, 0x18), 8);
    assert_eq!(v & 0xffff_ffff, 0x0001_0100);
    assert_eq!(s.ecam_read(ecam(0, 1, 0, 0), 8) & 0xffff_ffff, 0x000c_1b36);
}

#[test]
fn straddling_access_is_split_into_bytes() {
    let mut s = segment();
    assert_eq!(s.ecam_read(ecam(0, 1, 0, 1), 2), 0x0c1b);
    let _ = s.ecam_write(ecam(0, 1, 0, 0x17), 4, 0x0003_0200);
    assert_eq!(s.ecam_read(ecam(0, 1, 0, 0x18), 4) & 0xff_ffff, 0x0000_0302);
}

#[test]
fn bad_size_reads_all_ones_and_is_counted() {
    let mut s = segment();
    assert_eq!(s.ecam_read(0, 3), u64::MAX);
    assert!(s.ecam_write(0, 16, 0).is_empty());
    assert_eq!(s.stats().bad_size, 2);
}

#[test]
fn access_past_the_window_is_all_ones() {
    let mut s = segment();
    assert_eq!(s.ecam_read(16 << 20, 4), 0xffff_ffff);
    assert_eq!(s.ecam_read(u64::MAX - 2, 8), u64::MAX);
    // One for the dword; the unaligned 8-byte read is split into 8 byte reads.
    assert_eq!(s.stats().outside_window, 9);
}

#[test]
fn enumerate_leaves_out_a_device_behind_inconsistent_bus_numbers() {
    let mut s = segment();
    let _ = s.ecam_write(ecam(0, 1, 0, 0x18), 4, 0x0000_0200);
    assert_eq!(s.ecam_read(ecam(2, 0, 0, 0), 4), 0xffff_ffff);
    assert_eq!(s.enumerate().len(), 1);
}

#[test]
fn enumerate_lists_reachable_functions_in_bus_order() {
    let mut s = segment();
    assert_eq!(s.enumerate().len(), 1);
    let _ = s.ecam_write(ecam(0, 1, 0, 0x18), 4, 0x0001_0100);
    let list: Vec<Bdf> = s.enumerate().into_iter().map(|(b, _)| b).collect();
    assert_eq!(
        list,
        [Bdf::new(0, 1, 0).unwrap(), Bdf::new(1, 0, 0).unwrap()]
    );
}

// ---- decode rules against a reference model ----

/// The reference model: what hardware decodes, written from the rules
/// directly, per BAR, with no diffing and no shared code.
fn model(regs: &ModelRegs) -> Vec<(u16, u8, u64, u64)> {
    let mut out: Vec<(u16, u8, u64, u64)> = Vec::new();
    for (p, port) in regs.ports.iter().enumerate() {
        if !port.mse {
            continue;
        }
        let mem = (port.mem_limit >= port.mem_base).then(|| {
            (
                u64::from(port.mem_base) << 20,
                (u64::from(port.mem_limit) << 20) | 0xf_ffff,
            )
        });
        let pref = (port.pref_limit >= port.pref_base)
            .then_some((port.pref_base << 20, (port.pref_limit << 20) | 0xf_ffff));
        let dev = &regs.devs[p];
        if !dev.mse {
            continue;
        }
        for (bar, size, addr) in [
            (0u8, 0x2_0000u64, u64::from(dev.bar0)),
            (2, 0x4000, dev.bar2),
        ] {
            let last = addr + size - 1;
            let inside = |w: Option<(u64, u64)>| w.is_some_and(|(b, l)| addr >= b && last <= l);
            let ap = [
                (0x1000_0000u64, 0x2fff_ffffu64),
                (0x80_0000_0000, 0xbf_ffff_ffff),
            ];
            let in_ap = ap.iter().any(|&(b, l)| addr >= b && last <= l);
            let overlaps = out
                .iter()
                .any(|&(_, _, a, s)| addr < a + s && a < addr + size);
            if (inside(mem) || inside(pref)) && in_ap && !overlaps {
                out.push((p as u16 * 2 + 1, bar, addr, size));
            }
        }
    }
    out
}

#[derive(Debug, Clone)]
struct PortRegs {
    mse: bool,
    mem_base: u16,
    mem_limit: u16,
    pref_base: u64,
    pref_limit: u64,
}

#[derive(Debug, Clone)]
struct DevRegs {
    mse: bool,
    bar0: u32,
    bar2: u64,
}

#[derive(Debug, Clone)]
struct ModelRegs {
    ports: Vec<PortRegs>,
    devs: Vec<DevRegs>,
}

/// Window and BAR values concentrated where they interact: near the
/// apertures' edges and each other.
fn window_value() -> impl Strategy<Value = u16> {
    prop_oneof![
        0x0ffu16..0x103u16,
        0x2feu16..0x301u16,
        Just(0u16),
        Just(0xfffu16)
    ]
}

fn port_regs() -> impl Strategy<Value = PortRegs> {
    (
        any::<bool>(),
        window_value(),
        window_value(),
        prop_oneof![
            Just(0x80_000u64),
            0x7f_fffu64..0x80_003,
            Just(0xbf_fff),
            Just(0xc0_000)
        ],
        prop_oneof![
            Just(0x80_000u64),
            0x7f_fffu64..0x80_003,
            Just(0xbf_fff),
            Just(0xc0_000)
        ],
    )
        .prop_map(
            |(mse, mem_base, mem_limit, pref_base, pref_limit)| PortRegs {
                mse,
                mem_base,
                mem_limit,
                pref_base,
                pref_limit,
            },
        )
}

fn dev_regs() -> impl Strategy<Value = DevRegs> {
    (
        any::<bool>(),
        prop_oneof![
            (0x7ffu32..0x803).prop_map(|x| x << 17),
            (0x17fu32..0x181).prop_map(|x| x << 17),
            Just(0)
        ],
        prop_oneof![
            (0x1ff_fffeu64..0x200_0004).prop_map(|x| x << 14),
            (0x2ff_fffeu64..0x300_0001).prop_map(|x| x << 14),
            Just(0)
        ],
    )
        .prop_map(|(mse, bar0, bar2)| DevRegs { mse, bar0, bar2 })
}

/// Programs `regs` into a two-port segment through ECAM, in a random order
/// of whole-register writes, and returns what it decodes.
fn program(regs: &ModelRegs, order: &[usize]) -> (Segment, Vec<(u16, u8, u64, u64)>) {
    let mut s = Segment::new(1, 16);
    s.set_apertures(&[MEM32, MEM64]);
    for p in 0..2u8 {
        s.add_bus0(p + 1, 0, Box::new(TestBridge::new())).unwrap();
        s.attach_below(p + 1, 0, endpoint()).unwrap();
    }
    let mut writes: Vec<(u64, u8, u64)> = Vec::new();
    for (p, port) in regs.ports.iter().enumerate() {
        let d = p as u64 + 1;
        writes.push((ecam(0, d, 0, 0x18), 4, (d << 16) | (d << 8)));
        writes.push((ecam(0, d, 0, 0x20), 2, u64::from(port.mem_base) << 4));
        writes.push((ecam(0, d, 0, 0x22), 2, u64::from(port.mem_limit) << 4));
        writes.push((ecam(0, d, 0, 0x24), 2, ((port.pref_base & 0xfff) << 4) | 1));
        writes.push((ecam(0, d, 0, 0x26), 2, ((port.pref_limit & 0xfff) << 4) | 1));
        writes.push((ecam(0, d, 0, 0x28), 4, port.pref_base >> 12));
        writes.push((ecam(0, d, 0, 0x2c), 4, port.pref_limit >> 12));
        writes.push((ecam(0, d, 0, 0x04), 2, if port.mse { 2 } else { 0 }));
        let dev = &regs.devs[p];
        writes.push((ecam(d, 0, 0, 0x10), 4, u64::from(dev.bar0)));
        writes.push((ecam(d, 0, 0, 0x18), 4, dev.bar2 & 0xffff_ffff));
        writes.push((ecam(d, 0, 0, 0x1c), 4, dev.bar2 >> 32));
        writes.push((ecam(d, 0, 0, 0x04), 2, if dev.mse { 2 } else { 0 }));
    }
    // Bus numbers first (later writes need them), the rest in the given order.
    let (buses, rest): (Vec<_>, Vec<_>) = writes
        .into_iter()
        .partition(|w| w.0 & 0xfff == 0x18 && w.0 >> 20 == 0);
    let mut mapped: Vec<(u16, u8, u64, u64)> = Vec::new();
    let mut apply = |s: &mut Segment, fx: Effects| {
        for e in fx {
            match e {
                Effect::Map {
                    function,
                    bar,
                    guest,
                    ..
                } => {
                    assert!(
                        !mapped
                            .iter()
                            .any(|m| m.2 < guest.base.0 + guest.size && guest.base.0 < m.2 + m.3),
                        "map over a live mapping: {e}"
                    );
                    mapped.push((function.0, bar, guest.base.0, guest.size));
                }
                Effect::Unmap {
                    function,
                    bar,
                    guest,
                    ..
                } => {
                    let before = mapped.len();
                    mapped.retain(|m| *m != (function.0, bar, guest.base.0, guest.size));
                    assert_eq!(
                        mapped.len() + 1,
                        before,
                        "unmap of something not mapped: {e}"
                    );
                }
                _ => {}
            }
        }
        let _ = s;
    };
    for (a, sz, v) in buses {
        let fx = s.ecam_write(a, sz, v);
        apply(&mut s, fx);
    }
    let mut idx: Vec<usize> = (0..rest.len()).collect();
    for (i, &o) in order.iter().enumerate().take(idx.len()) {
        let j = o % idx.len();
        idx.swap(i, j);
    }
    for i in idx {
        let (a, sz, v) = rest[i];
        let fx = s.ecam_write(a, sz, v);
        apply(&mut s, fx);
    }
    (s, mapped)
}

proptest! {
    #[test]
    fn decoding_matches_the_reference_model_whatever_the_write_order(
        ports in proptest::collection::vec(port_regs(), 2),
        devs in proptest::collection::vec(dev_regs(), 2),
        order in proptest::collection::vec(any::<usize>(), 24),
    ) {
        let regs = ModelRegs { ports, devs };
        let (s, mut mapped) = program(&regs, &order);
        let mut decoded: Vec<(u16, u8, u64, u64)> = s
            .decoded()
            .iter()
            .map(|d| (d.function.0, d.bar, d.guest.base.0, d.guest.size))
            .collect();
        let mut want = model(&regs);
        // Overlap resolution depends only on placement order, as in the model;
        // compare as sets.
        decoded.sort();
        want.sort();
        mapped.sort();
        prop_assert_eq!(&decoded, &want);
        prop_assert_eq!(&mapped, &want, "the effects applied in order leave exactly what is decoded");
    }

    #[test]
    fn random_accesses_never_panic(ops in proptest::collection::vec((any::<u64>(), 0u8..10, any::<u64>(), 0u8..4), 0..300)) {
        let mut s = segment();
        for (off, size, val, kind) in ops {
            match kind {
                0 => { let _ = s.ecam_write(off % (20 << 20), size, val); }
                1 => { s.ecam_read(off % (20 << 20), size); }
                2 => { let _ = s.mmio_write(Ipa(0x1000_0000 + off % 0x40_0000), size, val); }
                _ => { let _ = s.mmio_read(Ipa(off), size); }
            }
        }
    }
}

#[test]
fn write_to_a_register_decoding_does_not_read_emits_no_effects() {
    let mut s = segment();
    let _ = programmed(&mut s, 0x1002_0000);
    // A decode input re-decodes: the device's Memory Space Enable maps both BARs.
    let fx = s.ecam_write(ecam(1, 0, 0, 0x04), 2, 0x0002);
    assert_eq!(
        strings(&fx),
        [
            "map fn1 bar0 IPA 0x10020000+0x20000 -> trapped",
            "map fn1 bar2 IPA 0x8000000000+0x4000 -> trapped prefetchable"
        ]
    );
    // Interrupt Line of the device and the port's dword holding Bridge
    // Control (rewritten with what it holds): nothing to do.
    let fx = s.ecam_write(ecam(1, 0, 0, 0x3c), 1, 0x2a);
    assert!(fx.is_empty(), "{:?}", strings(&fx));
    let v = s.ecam_read(ecam(0, 1, 0, 0x3c), 4);
    let fx = s.ecam_write(ecam(0, 1, 0, 0x3c), 4, v);
    assert!(fx.is_empty(), "{:?}", strings(&fx));
    assert_eq!(s.decoded().len(), 2);
    // The port's Memory Space Enable off unmaps both.
    let fx = s.ecam_write(ecam(0, 1, 0, 0x04), 2, 0);
    assert_eq!(
        strings(&fx),
        [
            "unmap fn1 bar0 IPA 0x10020000+0x20000 -> trapped",
            "unmap fn1 bar2 IPA 0x8000000000+0x4000 -> trapped"
        ]
    );
}

/// The routing the tables replaced: the first bridge in placement order
/// whose programmed range holds the bus.
fn reference_route(s: &Segment, a: &EcamAddress) -> Option<(usize, bool)> {
    if a.bus_offset == 0 {
        return s
            .slots
            .iter()
            .position(|x| x.dev == a.dev && x.func == a.func)
            .map(|i| (i, false));
    }
    let bus = s.bus_at(a.bus_offset);
    for (i, x) in s.slots.iter().enumerate() {
        let Some((sec, sub)) = x.port.function.bridge_bus_range() else {
            continue;
        };
        let (sec, sub) = (u16::from(sec), u16::from(sub));
        if sec <= u16::from(s.bus_start) || bus < sec || bus > sub {
            continue;
        }
        return (bus == sec && a.dev == 0 && a.func == 0 && x.child.is_some()).then_some((i, true));
    }
    None
}

fn header_write() -> impl Strategy<Value = (u64, u16, u8, u32)> {
    let any_reg = (0u16..0x40, 0u8..3, any::<u32>()).prop_map(|(reg, sz, value)| {
        let size = [1u8, 2, 4][usize::from(sz)];
        (reg & !(u16::from(size) - 1), size, value)
    });
    let buses = (1u32..=4, 0u32..=3)
        .prop_map(|(sec, more)| (0x18, 4, sec << 8 | (sec + more).min(4) << 16));
    // One bus number alone, by a byte write (the segment watches exactly
    // the bytes that hold them).
    let bus_byte = (0x19u16..=0x1a, 0u32..=4).prop_map(|(reg, bus)| (reg, 1, bus));
    let write = prop_oneof![
        bus_byte,
        Just((0x04, 2, 0x0006)),
        Just((0x04, 4, 0x0000_0002)),
        Just((0x04, 2, 0)),
        buses,
        Just((0x20, 4, 0x1010_1000)),
        Just((0x20, 4, 0x1000_1000)),
        Just((0x24, 4, 0x0001_0001)),
        Just((0x28, 4, 0x80)),
        Just((0x2c, 4, 0x80)),
        Just((0x10, 4, 0x1002_0000)),
        Just((0x10, 4, 0x1012_0000)),
        Just((0x18, 4, 0x80)),
        Just((0x1c, 4, 0x80)),
        Just((0x3c, 4, 0x0001_0000)),
        Just((0x3c, 4, 0x0040_0000)),
        any_reg,
    ];
    // Bus 0 devices 1..=3 or device 0 of buses 1..=4.
    (0u64..7, write).prop_map(|(who, (reg, size, value))| {
        let off = if who < 3 {
            ecam(0, who + 1, 0, 0)
        } else {
            ecam(who - 2, 0, 0, 0)
        };
        (off, reg, size, value)
    })
}

proptest! {
    #[test]
    fn skipping_redecode_and_table_routing_change_nothing(
        writes in proptest::collection::vec(header_write(), 1..80),
    ) {
        let mut s = Segment::new(1, 8);
        s.set_apertures(&[MEM32, MEM64]);
        for dev in 1..=3u8 {
            s.add_bus0(dev, 0, Box::new(TestBridge::new())).unwrap();
            s.attach_below(dev, 0, endpoint()).unwrap();
        }
        let mut mapped = decode::MappedSet::default();
        for (off, reg, size, value) in writes {
            let fx = s.ecam_write(off + u64::from(reg), size, u64::from(value));
            prop_assert!(mapped.apply(&fx).is_ok());
            let (full, _) = decode::compute(
                s.slots.iter().map(|x| {
                    (
                        (x.port.id, x.port.function.as_ref()),
                        x.child.as_ref().map(|c| (c.id, c.function.as_ref())),
                    )
                }),
                &s.apertures,
            );
            prop_assert_eq!(s.decoded(), full.as_slice());
            prop_assert!(mapped.matches(s.decoded()));
            for bus_offset in 0..8u8 {
                for (dev, func) in [(0u8, 0u8), (1, 0), (2, 0), (3, 0), (0, 1), (4, 0)] {
                    let a = EcamAddress { bus_offset, dev, func, register: 0 };
                    let got = match s.route(&a) {
                        Target::Bus0(i) => Some((i, false)),
                        Target::Below(i) => Some((i, true)),
                        Target::None => None,
                    };
                    prop_assert_eq!(got, reference_route(&s, &a));
                }
            }
        }
    }
}

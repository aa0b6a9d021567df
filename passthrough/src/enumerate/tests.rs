use super::*;
use crate::testing::{FakeFunction, FakeHost};
use alloc::vec;

fn bdf(bus: u8, dev: u8, func: u8) -> Bdf {
    Bdf::new(bus, dev, func).unwrap()
}

fn names(t: &HostTopology) -> Vec<(Bdf, u16)> {
    t.functions.iter().map(|f| (f.bdf, f.device_id)).collect()
}

#[test]
fn endpoint_on_the_root_bus_is_found_with_the_host_bridge() {
    let t = enumerate(&mut FakeHost::endpoint_on_root_bus(), 0..=255).unwrap();
    assert_eq!(names(&t), [(bdf(0, 0, 0), 0x0008), (bdf(0, 1, 0), 0x10d3)]);
    assert_eq!(t.last_bus, 0);
}

#[test]
fn e1000e_bars_are_sized_with_their_flags() {
    let t = enumerate(&mut FakeHost::endpoint_on_root_bus(), 0..=255).unwrap();
    let e = t.get(bdf(0, 1, 0)).unwrap();
    let m32 = BarKind::Memory {
        is_64bit: false,
        prefetchable: false,
    };
    let got: Vec<(u8, BarKind, u64)> = e.bars.iter().map(|b| (b.index, b.kind, b.size)).collect();
    assert_eq!(
        got,
        [
            (0, m32, 128 << 10),  // registers
            (1, m32, 128 << 10),  // flash
            (2, BarKind::Io, 32), // I/O
            (3, m32, 16 << 10),   // MSI-X
        ]
    );
    assert_eq!(e.rom_size, Some(256 << 10));
}

#[test]
fn igb_64_bit_bars_take_two_slots() {
    let mut h = FakeHost::new(0, vec![(3, 0, FakeFunction::igb())]);
    let t = enumerate(&mut h, 0..=255).unwrap();
    let got: Vec<(u8, bool, bool, u64)> = t.functions[0]
        .bars
        .iter()
        .filter(|b| b.is_memory())
        .map(|b| (b.index, b.is_64bit(), b.is_prefetchable(), b.size))
        .collect();
    assert_eq!(
        got,
        [(0, true, false, 128 << 10), (3, true, true, 16 << 10)]
    );
}

#[test]
fn sizing_restores_every_bar() {
    let mut h = FakeHost::new(
        0,
        vec![(1, 0, FakeFunction::e1000e().firmware(0x10, 4, 0x1004_0000))],
    );
    enumerate(&mut h, 0..=255).unwrap();
    assert_eq!(h.read32(bdf(0, 1, 0), 0x10), 0x1004_0000);
}

#[test]
fn capabilities_of_both_chains_are_recorded_in_chain_order() {
    let t = enumerate(&mut FakeHost::endpoint_on_root_bus(), 0..=255).unwrap();
    let e = t.get(bdf(0, 1, 0)).unwrap();
    let std: Vec<(u8, u16)> = e.capabilities.iter().map(|c| (c.id, c.offset)).collect();
    assert_eq!(
        std,
        [(0x01, 0xc8), (0x05, 0xd0), (0x10, 0xe0), (0x11, 0xa0)]
    ); // PM, MSI, PCIe, MSI-X
    let ext: Vec<(u16, u16)> = e
        .ext_capabilities
        .iter()
        .map(|c| (c.id, c.offset))
        .collect();
    assert_eq!(ext, [(0x0001, 0x100), (0x0003, 0x140)]); // AER, DSN
}

#[test]
fn unnumbered_root_port_gets_the_next_bus() {
    let mut h = FakeHost::behind_root_port();
    let t = enumerate(&mut h, 0..=255).unwrap();
    assert_eq!(t.get(bdf(0, 1, 0)).unwrap().buses, Some((1, 1)));
    assert_eq!(t.get(bdf(1, 0, 0)).unwrap().path, [bdf(0, 1, 0)]);
    assert_eq!(h.read32(bdf(0, 1, 0), 0x18) & 0x00ff_ffff, 0x01_01_00); // sub 1, sec 1, pri 0
}

#[test]
fn switch_is_numbered_depth_first() {
    let mut h = FakeHost::behind_switch();
    let t = enumerate(&mut h, 0..=255).unwrap();
    let buses: Vec<(Bdf, Option<(u8, u8)>)> = t
        .functions
        .iter()
        .filter(|f| f.is_bridge())
        .map(|f| (f.bdf, f.buses))
        .collect();
    assert_eq!(
        buses,
        [
            (bdf(0, 1, 0), Some((1, 1))), // root port, e1000e below
            (bdf(0, 2, 0), Some((2, 5))), // root port, switch below
            (bdf(2, 0, 0), Some((3, 5))), // upstream port
            (bdf(3, 0, 0), Some((4, 4))), // downstream port, igb below
            (bdf(3, 1, 0), Some((5, 5))), // downstream port, empty
        ]
    );
    let igb = t.functions.iter().find(|f| f.device_id == 0x10c9).unwrap();
    assert_eq!(
        (igb.bdf, igb.path.clone()),
        (bdf(4, 0, 0), vec![bdf(0, 2, 0), bdf(2, 0, 0), bdf(3, 0, 0)])
    );
    assert_eq!(t.last_bus, 5);
}

#[test]
fn consistent_firmware_bus_numbers_are_kept() {
    let mut h = FakeHost::new(
        0,
        vec![(
            4,
            0,
            FakeFunction::root_port()
                .firmware_buses(0, 8, 9)
                .with_below(0, 0, FakeFunction::e1000e()),
        )],
    );
    let t = enumerate(&mut h, 0..=255).unwrap();
    assert_eq!(t.get(bdf(0, 4, 0)).unwrap().buses, Some((8, 9)));
    assert!(t.get(bdf(8, 0, 0)).is_some());
    assert!(h
        .writes()
        .iter()
        .all(|(name, off, _)| (*name, *off) != ("pcie-root-port", 0x18)));
}

#[test]
fn inconsistent_firmware_bus_numbers_are_replaced() {
    let mut h = FakeHost::new(
        0,
        vec![(
            4,
            0,
            FakeFunction::root_port()
                .firmware_buses(3, 8, 7)
                .with_below(0, 0, FakeFunction::e1000e()),
        )],
    );
    let t = enumerate(&mut h, 0..=255).unwrap();
    assert_eq!(t.get(bdf(0, 4, 0)).unwrap().buses, Some((1, 1)));
}

#[test]
fn bus_range_end_stops_numbering_with_the_bridge_named() {
    let mut h = FakeHost::behind_switch();
    assert_eq!(
        enumerate(&mut h, 0..=3),
        Err(EnumError::BusNumbersExhausted {
            bridge: bdf(3, 0, 0)
        })
    );
}

#[test]
fn root_bus_other_than_0_is_walked_from_its_number() {
    let mut h = FakeHost::new(
        0x10,
        vec![(
            1,
            0,
            FakeFunction::root_port().with_below(0, 0, FakeFunction::igb()),
        )],
    );
    let t = enumerate(&mut h, 0x10..=0x1f).unwrap();
    assert_eq!(
        names(&t),
        [(bdf(0x10, 1, 0), 0x000c), (bdf(0x11, 0, 0), 0x10c9)]
    );
}

#[test]
fn multifunction_device_lists_every_function() {
    let mut h = FakeHost::new(
        0,
        vec![(1, 0, FakeFunction::e1000e()), (1, 1, FakeFunction::igb())],
    );
    let t = enumerate(&mut h, 0..=255).unwrap();
    assert_eq!(names(&t), [(bdf(0, 1, 0), 0x10d3), (bdf(0, 1, 1), 0x10c9)]);
    assert_eq!(t.functions[0].header_type, 0);
}

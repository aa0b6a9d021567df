use super::*;
use crate::enumerate::enumerate;
use crate::testing::{qemu_windows, FakeFunction, FakeHost};
use alloc::vec;

fn bdf(bus: u8, dev: u8, func: u8) -> Bdf {
    Bdf::new(bus, dev, func).unwrap()
}

fn run(h: &mut FakeHost) -> Assignment {
    let t = enumerate(h, 0..=255).unwrap();
    assign(&t, h, qemu_windows()).unwrap()
}

fn pci(a: &Assignment, b: Bdf, i: u8) -> u64 {
    a.bar(b, i).unwrap().pci
}

#[test]
fn endpoint_on_root_bus_gets_aligned_bars_in_the_32_bit_range() {
    let mut h = FakeHost::endpoint_on_root_bus();
    let a = run(&mut h);
    let e = bdf(0, 1, 0);
    // Largest alignment first from 1000_0000h: BAR0, BAR1 (128 KiB), BAR3 (16 KiB).
    assert_eq!(
        (pci(&a, e, 0), pci(&a, e, 1), pci(&a, e, 3)),
        (0x1000_0000, 0x1002_0000, 0x1004_0000)
    );
    assert_eq!(h.read32(e, 0x10), 0x1000_0000);
    assert!(a.bar(e, 2).is_none()); // I/O: never assigned
    assert!(!a.kept_firmware);
}

#[test]
fn bar_cpu_address_follows_the_range_offset() {
    let mut h = FakeHost::endpoint_on_root_bus();
    let t = enumerate(&mut h, 0..=255).unwrap();
    let mut w = qemu_windows();
    w.mem32.cpu = Pa(0x8_1000_0000);
    let a = assign(&t, &mut h, w).unwrap();
    assert_eq!(a.bar(bdf(0, 1, 0), 0).unwrap().cpu, Pa(0x8_1000_0000));
}

#[test]
fn root_port_window_covers_the_endpoint_with_1_mib_granularity() {
    let mut h = FakeHost::behind_root_port();
    let a = run(&mut h);
    assert_eq!(
        a.bridge(bdf(0, 1, 0)).unwrap().memory,
        Some((0x1000_0000, 0x10_0000))
    );
    assert_eq!(h.read32(bdf(0, 1, 0), 0x20), 0x1000_1000); // limit 100F_FFFFh, base 1000_0000h
    assert_eq!(pci(&a, bdf(1, 0, 0), 3), 0x1004_0000);
}

#[test]
fn bridges_get_memory_space_and_bus_master() {
    let mut h = FakeHost::behind_root_port();
    run(&mut h);
    assert_eq!(h.read32(bdf(0, 1, 0), 4) & 0x6, 0x6);
}

#[test]
fn switch_ports_nest_and_the_64_bit_prefetchable_bar_goes_high() {
    let mut h = FakeHost::behind_switch();
    let a = run(&mut h);
    let igb = bdf(4, 0, 0);
    assert_eq!(pci(&a, igb, 3), 0x80_0000_0000); // 64-bit prefetchable range
    assert_eq!(h.read32(igb, 0x20), 0x80); // BAR4: BAR3's upper dword
    for b in [bdf(0, 2, 0), bdf(2, 0, 0), bdf(3, 0, 0)] {
        assert_eq!(
            a.bridge(b).unwrap().prefetchable,
            Some((0x80_0000_0000, 0x10_0000)),
            "{b}"
        );
    }
    let dsp = a.bridge(bdf(3, 0, 0)).unwrap().memory.unwrap();
    let bar0 = pci(&a, igb, 0);
    assert!(bar0 >= dsp.0 && bar0 + (128 << 10) <= dsp.0 + dsp.1);
    assert_eq!(a.bridge(bdf(3, 1, 0)).unwrap().memory, None); // the empty port's window is closed
}

#[test]
fn valid_firmware_assignment_is_kept_and_not_rewritten() {
    let e1000e = FakeFunction::e1000e()
        .firmware(0x10, 4, 0x1010_0000)
        .firmware(0x14, 4, 0x1012_0000)
        .firmware(0x1c, 4, 0x1014_0000);
    // Memory window 1010_0000h..101F_FFFFh; prefetchable window closed (base above limit).
    let rp = FakeFunction::root_port()
        .firmware_buses(0, 1, 1)
        .firmware(0x20, 4, 0x1010_1010)
        .firmware(0x24, 4, 0x0000_fff0)
        .with_below(0, 0, e1000e);
    let mut h = FakeHost::new(0, vec![(1, 0, rp)]);
    let a = run(&mut h);
    assert!(a.kept_firmware);
    assert_eq!(pci(&a, bdf(1, 0, 0), 0), 0x1010_0000);
    let writes: Vec<u16> = h
        .writes()
        .iter()
        .filter(|w| w.1 != 4 && ![0x10, 0x14, 0x18, 0x1c, 0x20, 0x24, 0x30, 0x38].contains(&w.1))
        .map(|w| w.1)
        .collect();
    assert_eq!(writes, [] as [u16; 0]); // only sizing probes (restored) and Command
    assert_eq!(h.read32(bdf(1, 0, 0), 0x10), 0x1010_0000);
}

#[test]
fn firmware_bar_outside_its_bridge_window_is_reassigned() {
    let e1000e = FakeFunction::e1000e().firmware(0x10, 4, 0x2000_0000);
    let rp = FakeFunction::root_port()
        .firmware_buses(0, 1, 1)
        .firmware(0x20, 4, 0x1010_1010)
        .with_below(0, 0, e1000e);
    let mut h = FakeHost::new(0, vec![(1, 0, rp)]);
    let a = run(&mut h);
    assert!(!a.kept_firmware);
    assert_eq!(pci(&a, bdf(1, 0, 0), 0), 0x1000_0000);
}

#[test]
fn small_bar_gets_a_page_of_its_own() {
    let tiny = FakeFunction::endpoint("tiny", 0x1af4, 0x1000, 0x02_00_00)
        .mem32_bar(0, 256, false)
        .mem32_bar(1, 256, false);
    let mut h = FakeHost::new(0, vec![(1, 0, tiny)]);
    let a = run(&mut h);
    assert_eq!(
        (pci(&a, bdf(0, 1, 0), 0), pci(&a, bdf(0, 1, 0), 1)),
        (0x1000_0000, 0x1000_1000)
    );
}

#[test]
fn bar_larger_than_the_range_is_named_in_the_error() {
    let big =
        FakeFunction::endpoint("big", 0x1af4, 0x1000, 0x02_00_00).mem32_bar(2, 1 << 31, false);
    let mut h = FakeHost::new(0, vec![(1, 0, big)]);
    let t = enumerate(&mut h, 0..=255).unwrap();
    assert_eq!(
        assign(&t, &mut h, qemu_windows()),
        Err(AssignError::NoSpace {
            bdf: bdf(0, 1, 0),
            bar: Some(2),
            size: 1 << 31,
            prefetchable: false
        })
    );
}

#[test]
fn without_a_prefetchable_range_64_bit_prefetchable_bars_go_low() {
    let mut h = FakeHost::new(0, vec![(1, 0, FakeFunction::igb())]);
    let t = enumerate(&mut h, 0..=255).unwrap();
    let w = HostWindows {
        mem64_prefetchable: None,
        ..qemu_windows()
    };
    let a = assign(&t, &mut h, w).unwrap();
    assert!(pci(&a, bdf(0, 1, 0), 3) < 1 << 32);
}

#[test]
fn verify_finds_nothing_after_assignment_behind_a_switch() {
    let mut h = FakeHost::behind_switch();
    let t = enumerate(&mut h, 0..=255).unwrap();
    let a = assign(&t, &mut h, qemu_windows()).unwrap();
    assert_eq!(verify(&mut h, &t, &a), Vec::<alloc::string::String>::new());
}

#[test]
fn verify_names_a_moved_bar_and_a_changed_window() {
    let mut h = FakeHost::behind_root_port();
    let t = enumerate(&mut h, 0..=255).unwrap();
    let a = assign(&t, &mut h, qemu_windows()).unwrap();
    h.write32(bdf(1, 0, 0), 0x10, 0x2000_0000);
    // Memory Limit one MiB lower: the window shrinks.
    let w = h.read32(bdf(0, 1, 0), 0x20);
    h.write32(bdf(0, 1, 0), 0x20, w.wrapping_sub(0x10_0000));
    let got = verify(&mut h, &t, &a);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got[0].starts_with("01:00.0 BAR0: 0x20000000, assigned 0x10000000"),
        "{got:?}"
    );
    assert!(got[1].starts_with("00:01.0 windows"), "{got:?}");
}

#[test]
fn verify_names_changed_bus_numbers() {
    let mut h = FakeHost::behind_root_port();
    let t = enumerate(&mut h, 0..=255).unwrap();
    let a = assign(&t, &mut h, qemu_windows()).unwrap();
    h.write32(bdf(0, 1, 0), 0x18, 0x0002_0200);
    let got = verify(&mut h, &t, &a);
    assert!(
        got.iter()
            .any(|l| l == "00:01.0 bus numbers: secondary 0x2 subordinate 0x2, assigned 0x1 0x1"),
        "{got:?}"
    );
}

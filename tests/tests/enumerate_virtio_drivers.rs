//! A third-party enumerator against our segment: rcore `virtio-drivers`' `PciRoot`
//! walks the programmed reference topology through a `ConfigurationAccess`
//! adapter over `Segment::ecam_read/ecam_write`, sizes every BAR its own way,
//! and the invariants are checked on what it found.
use std::cell::RefCell;
use std::rc::Rc;
use vbus::Segment;
use virtio_drivers::transport::pci::bus::{
    BarInfo, ConfigurationAccess, DeviceFunction, HeaderType, MemoryBarType, PciRoot,
};

struct SegmentCam(Rc<RefCell<Segment>>);

fn offset(df: DeviceFunction, reg: u8) -> u64 {
    (u64::from(df.bus) << 20)
        | (u64::from(df.device) << 15)
        | (u64::from(df.function) << 12)
        | u64::from(reg)
}

impl ConfigurationAccess for SegmentCam {
    fn read_word(&self, df: DeviceFunction, reg: u8) -> u32 {
        self.0.borrow_mut().ecam_read(offset(df, reg), 4) as u32
    }

    /// Effects are not applied: the enumerator never resets and there is no stage 2.
    fn write_word(&mut self, df: DeviceFunction, reg: u8, data: u32) {
        let _ = self
            .0
            .borrow_mut()
            .ecam_write(offset(df, reg), 4, data.into());
    }

    /// # Safety
    ///
    /// The clone shares the segment through `Rc<RefCell<_>>`, so no aliasing
    /// `&mut` can exist: the contract holds trivially.
    unsafe fn unsafe_clone(&self) -> Self {
        SegmentCam(Rc::clone(&self.0))
    }
}

struct Found {
    bridge: DeviceFunction,
    window32: (u64, u64),
    window64: (u64, u64),
    device: (u16, u16),
    bars: Vec<(u8, BarInfo)>,
}

fn walk() -> Vec<Found> {
    let seg = tests::reference::programmed_reference().expect("plans");
    let seg = Rc::new(RefCell::new(seg));
    let mut root = PciRoot::new(SegmentCam(Rc::clone(&seg)));
    let cam = SegmentCam(Rc::clone(&seg));
    let bridges: Vec<_> = root.enumerate_bus(0).collect();
    let mut found = Vec::new();
    for (df, info) in bridges {
        assert_eq!(info.header_type, HeaderType::PciPciBridge, "{df}");
        let buses = cam.read_word(df, 0x18);
        let secondary = (buses >> 8) as u8;
        let (window32, window64) =
            tests::linux_enum::bridge_windows(|reg| cam.read_word(df, reg as u8));
        let below: Vec<_> = root.enumerate_bus(secondary).collect();
        assert_eq!(below.len(), 1, "one device below {df}");
        let (edf, einfo) = below[0].clone();
        let bars = root.bars(edf).expect("bars readable");
        found.push(Found {
            bridge: df,
            window32,
            window64,
            device: (einfo.vendor_id, einfo.device_id),
            bars: bars
                .into_iter()
                .enumerate()
                .filter_map(|(i, b)| b.map(|b| (i as u8, b)))
                .collect(),
        });
    }
    found
}

#[test]
fn pciroot_finds_four_bridges_each_with_its_device() {
    let found = walk();
    let devices: Vec<(u16, u16)> = found.iter().map(|f| f.device).collect();
    assert_eq!(
        devices,
        [
            (0x8086, 0x10d3),
            (0x1af4, 0x1042),
            (0x8086, 0x10c9),
            (0x1234, 0x0001)
        ]
    );
}

#[test]
fn every_bar_pciroot_sizes_is_a_power_of_two_inside_its_bridge_window() {
    for f in walk() {
        assert!(!f.bars.is_empty(), "{}: no BARs", f.bridge);
        for (i, bar) in &f.bars {
            let BarInfo::Memory {
                address_type,
                prefetchable,
                address,
                size,
            } = *bar
            else {
                panic!("{}: BAR{i} is I/O", f.bridge)
            };
            assert!(size.is_power_of_two(), "BAR{i} size {size:#x}");
            assert_eq!(address % size, 0, "BAR{i} not naturally aligned");
            let (lo, hi) = if prefetchable && address_type == MemoryBarType::Width64 {
                f.window64
            } else {
                f.window32
            };
            assert!(
                address >= lo && address + size - 1 <= hi,
                "{}: BAR{i} {address:#x}+{size:#x} outside window {lo:#x}..={hi:#x}",
                f.bridge
            );
        }
    }
}

#[test]
fn windows_of_different_bridges_are_disjoint() {
    let found = walk();
    let mut ws: Vec<(u64, u64)> = found
        .iter()
        .flat_map(|f| [f.window32, f.window64])
        .filter(|(lo, hi)| hi >= lo)
        .collect();
    ws.sort();
    for pair in ws.windows(2) {
        assert!(pair[0].1 < pair[1].0, "{pair:x?}");
    }
}

#[test]
fn sixty_four_bit_bars_are_reported_as_such() {
    let found = walk();
    let virtio = &found[1];
    assert!(matches!(
        virtio.bars[..],
        [(
            4,
            BarInfo::Memory {
                address_type: MemoryBarType::Width64,
                prefetchable: true,
                size: 0x4000,
                ..
            }
        )]
    ));
}

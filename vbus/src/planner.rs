//! The BAR and bridge-window planner.
//!
//! Given the root ports of a segment and the BAR profile of the device behind
//! each, the planner places every BAR (naturally aligned) and computes each
//! port's two windows, as a PCI Express Root Port decodes them:
//!
//! * the non-prefetchable memory window (Memory Base/Limit, 32-bit only, PCI-to-PCI
//!   Bridge Architecture 3.2.5.8), which holds non-prefetchable BARs of any width and
//!   32-bit prefetchable BARs (those cannot reach the 64-bit window above 4 GiB);
//! * the prefetchable memory window (Prefetchable Base/Limit + Upper 32 Bits), which
//!   holds 64-bit prefetchable BARs.
//!
//! Both windows have 1 MiB granularity. A passthrough BAR is padded to 4 KiB so that
//! stage-2 can map it without exposing any other device's registers in the same page.
//! Each port may ask for headroom (extra space in each window, e.g. for hotplug).
//! Windows are packed into the segment's 32-bit and 64-bit apertures; a plan that does
//! not fit fails with an error naming the device and the window.

use alloc::string::String;
use alloc::vec::Vec;

/// Bridge window granularity (PCI-to-PCI Bridge Architecture 3.2.5.8/3.2.5.9).
pub const WINDOW_GRANULE: u64 = 1 << 20;
/// The page size stage-2 maps passthrough BARs with.
pub const PAGE_SIZE: u64 = 4096;

/// A range of guest physical addresses available to the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aperture {
    /// First address.
    pub base: u64,
    /// Size in bytes.
    pub size: u64,
}

/// One memory BAR a device asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarRequest {
    /// BAR index (0..=5) in the device's header.
    pub index: u8,
    /// Size in bytes: a power of two of at least 16 (PCI Local Bus 6.2.5.1).
    pub size: u64,
    /// A 64-bit BAR (occupies two BAR slots).
    pub is_64bit: bool,
    /// The Prefetchable bit.
    pub prefetchable: bool,
}

/// The device behind a root port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRequest {
    /// How errors name the device, e.g. `"01:00.0 e1000e"`.
    pub name: String,
    /// A passthrough device: its BARs are padded to whole 4 KiB pages.
    pub passthrough: bool,
    /// Its memory BARs.
    pub bars: Vec<BarRequest>,
}

/// One root port and what lies behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRequest {
    /// How errors name the port, e.g. `"00:01.0"`.
    pub name: String,
    /// The device behind the port, if any.
    pub device: Option<DeviceRequest>,
    /// Extra bytes in the non-prefetchable window (rounded up to 1 MiB).
    pub headroom_mem32: u64,
    /// Extra bytes in the prefetchable window (rounded up to 1 MiB).
    pub headroom_pref64: u64,
}

/// Which window of a root port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// The 32-bit non-prefetchable memory window.
    Mem32,
    /// The 64-bit prefetchable memory window.
    Pref64,
}

/// A computed window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// First address (1 MiB aligned).
    pub base: u64,
    /// Size in bytes (a multiple of 1 MiB).
    pub size: u64,
}

impl Window {
    /// The last address in the window (what the Limit registers encode).
    pub fn limit(&self) -> u64 {
        self.base + (self.size - 1)
    }
}

/// A placed BAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlacedBar {
    /// BAR index in the device's header.
    pub index: u8,
    /// Guest address of the BAR.
    pub address: u64,
    /// The BAR's size as the device decodes it.
    pub size: u64,
    /// The span reserved for it (the size, or 4 KiB for a small passthrough BAR).
    pub reserved: u64,
    /// The window it lives in.
    pub window: WindowKind,
}

/// The plan for one port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortPlan {
    /// The non-prefetchable window, if anything needs one.
    pub mem32: Option<Window>,
    /// The prefetchable window, if anything needs one.
    pub pref64: Option<Window>,
    /// The device's BARs, in request order.
    pub bars: Vec<PlacedBar>,
}

/// Why a plan failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanError {
    /// A BAR's size is not a power of two of at least 16 bytes.
    InvalidBarSize {
        /// The device.
        device: String,
        /// The BAR index.
        index: u8,
        /// The size asked for.
        size: u64,
    },
    /// A device's BARs, with the headroom of its port, do not fit in the segment's aperture.
    DoesNotFit {
        /// The device (or the port, for headroom alone).
        device: String,
        /// The window that could not be placed.
        window: WindowKind,
        /// Bytes the window needs.
        needed: u64,
        /// Bytes the aperture has left (after alignment) when it was tried.
        available: u64,
    },
    /// An aperture is not 1 MiB aligned or overflows the address space.
    InvalidAperture {
        /// Which aperture.
        window: WindowKind,
    },
}

impl core::fmt::Display for PlanError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PlanError::InvalidBarSize {
                device,
                index,
                size,
            } => write!(
                f,
                "{device}: BAR{index} size {size:#x} is not a power of two >= 16"
            ),
            PlanError::DoesNotFit {
                device,
                window,
                needed,
                available,
            } => write!(
                f,
                "{device}: the {window:?} window needs {needed:#x} bytes but the aperture has {available:#x} left"
            ),
            PlanError::InvalidAperture { window } => {
                write!(f, "the {window:?} aperture is not 1 MiB aligned or overflows")
            }
        }
    }
}

fn round_up(v: u64, align: u64) -> Option<u64> {
    v.checked_add(align - 1).map(|x| x & !(align - 1))
}

/// A window's contents before placement: BAR offsets relative to the window base.
struct Layout {
    size: u64,
    align: u64,
    offsets: Vec<(usize, u64)>, // (index into device bars, offset)
}

fn layout(bars: &[(usize, u64)], headroom: u64) -> Option<Layout> {
    // Descending reserved size: with power-of-two sizes, each BAR lands naturally
    // aligned right after the previous one, so the packing has no holes.
    let mut sorted: Vec<(usize, u64)> = bars.to_vec();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut offset = 0u64;
    let mut offsets = Vec::with_capacity(sorted.len());
    for &(i, reserved) in &sorted {
        offsets.push((i, offset));
        offset = offset.checked_add(reserved)?;
    }
    let headroom = round_up(headroom, WINDOW_GRANULE)?;
    let size = round_up(offset, WINDOW_GRANULE)?.checked_add(headroom)?;
    let align = sorted
        .first()
        .map_or(WINDOW_GRANULE, |b| b.1.max(WINDOW_GRANULE));
    Some(Layout {
        size,
        align,
        offsets,
    })
}

/// Places every BAR and computes every port's windows; see the module docs.
pub fn plan(
    mem32: Aperture,
    pref64: Aperture,
    ports: &[PortRequest],
) -> Result<Vec<PortPlan>, PlanError> {
    for (ap, kind) in [(mem32, WindowKind::Mem32), (pref64, WindowKind::Pref64)] {
        if ap.base % WINDOW_GRANULE != 0 || ap.base.checked_add(ap.size).is_none() {
            return Err(PlanError::InvalidAperture { window: kind });
        }
    }
    if mem32.base.saturating_add(mem32.size) > 1 << 32 {
        return Err(PlanError::InvalidAperture {
            window: WindowKind::Mem32,
        });
    }

    // Per port and window kind: the layout of its BARs.
    let mut layouts: Vec<[Option<Layout>; 2]> = Vec::with_capacity(ports.len());
    for port in ports {
        let mut per_kind: [Vec<(usize, u64)>; 2] = [Vec::new(), Vec::new()];
        if let Some(dev) = &port.device {
            for (i, bar) in dev.bars.iter().enumerate() {
                if bar.size < 16 || !bar.size.is_power_of_two() {
                    return Err(PlanError::InvalidBarSize {
                        device: dev.name.clone(),
                        index: bar.index,
                        size: bar.size,
                    });
                }
                let reserved = if dev.passthrough {
                    bar.size.max(PAGE_SIZE)
                } else {
                    bar.size
                };
                let kind = if bar.prefetchable && bar.is_64bit {
                    1
                } else {
                    0
                };
                per_kind[kind].push((i, reserved));
            }
        }
        let name = || {
            port.device
                .as_ref()
                .map_or_else(|| port.name.clone(), |d| d.name.clone())
        };
        let mut out: [Option<Layout>; 2] = [None, None];
        for (k, headroom) in [(0, port.headroom_mem32), (1, port.headroom_pref64)] {
            if per_kind[k].is_empty() && headroom == 0 {
                continue;
            }
            let kind = if k == 0 {
                WindowKind::Mem32
            } else {
                WindowKind::Pref64
            };
            out[k] = Some(layout(&per_kind[k], headroom).ok_or(PlanError::DoesNotFit {
                device: name(),
                window: kind,
                needed: u64::MAX,
                available: 0,
            })?);
        }
        layouts.push(out);
    }

    let mut plans: Vec<PortPlan> = ports
        .iter()
        .map(|_| PortPlan {
            mem32: None,
            pref64: None,
            bars: Vec::new(),
        })
        .collect();

    for (k, ap, kind) in [
        (0usize, mem32, WindowKind::Mem32),
        (1, pref64, WindowKind::Pref64),
    ] {
        // Largest alignment first keeps the aperture free of alignment holes.
        let mut order: Vec<usize> = (0..ports.len())
            .filter(|&p| layouts[p][k].is_some())
            .collect();
        order.sort_by(|&a, &b| {
            let (la, lb) = (&layouts[a][k], &layouts[b][k]);
            let key = |l: &Option<Layout>| l.as_ref().map_or((0, 0), |l| (l.align, l.size));
            key(lb).cmp(&key(la)).then(a.cmp(&b))
        });
        let end = ap.base + ap.size;
        let mut cursor = ap.base;
        for p in order {
            let Some(l) = &layouts[p][k] else { continue };
            let name = ports[p]
                .device
                .as_ref()
                .map_or_else(|| ports[p].name.clone(), |d| d.name.clone());
            let base = round_up(cursor, l.align).filter(|b| *b <= end);
            let available = base.map_or(0, |b| end - b);
            let Some(base) = base.filter(|_| l.size <= available) else {
                return Err(PlanError::DoesNotFit {
                    device: name,
                    window: kind,
                    needed: l.size,
                    available,
                });
            };
            cursor = base + l.size;
            let w = Window { base, size: l.size };
            if k == 0 {
                plans[p].mem32 = Some(w);
            } else {
                plans[p].pref64 = Some(w);
            }
            if let Some(dev) = &ports[p].device {
                for &(i, off) in &l.offsets {
                    let bar = dev.bars[i];
                    plans[p].bars.push(PlacedBar {
                        index: bar.index,
                        address: base + off,
                        size: bar.size,
                        reserved: if dev.passthrough {
                            bar.size.max(PAGE_SIZE)
                        } else {
                            bar.size
                        },
                        window: kind,
                    });
                }
            }
        }
    }
    for plan in &mut plans {
        plan.bars.sort_by_key(|b| b.index);
    }
    Ok(plans)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;

    fn bar(index: u8, size: u64, is_64bit: bool, prefetchable: bool) -> BarRequest {
        BarRequest {
            index,
            size,
            is_64bit,
            prefetchable,
        }
    }

    fn port(name: &str, dev: Option<DeviceRequest>) -> PortRequest {
        PortRequest {
            name: name.to_string(),
            device: dev,
            headroom_mem32: 0,
            headroom_pref64: 0,
        }
    }

    fn dev(name: &str, passthrough: bool, bars: Vec<BarRequest>) -> Option<DeviceRequest> {
        Some(DeviceRequest {
            name: name.to_string(),
            passthrough,
            bars,
        })
    }

    fn reference() -> Vec<PortRequest> {
        vec![
            port(
                "00:01.0",
                dev(
                    "01:00.0 e1000e",
                    true,
                    vec![
                        bar(0, 128 * KIB, false, false),
                        bar(1, 128 * KIB, false, false),
                        bar(3, 16 * KIB, false, false),
                    ],
                ),
            ),
            port(
                "00:02.0",
                dev(
                    "02:00.0 virtio-blk",
                    false,
                    vec![bar(4, 16 * KIB, true, true)],
                ),
            ),
            port(
                "00:03.0",
                dev(
                    "03:00.0 igb",
                    true,
                    vec![
                        bar(0, 128 * KIB, false, false),
                        bar(3, 16 * KIB, false, false),
                    ],
                ),
            ),
            port(
                "00:04.0",
                dev("04:00.0 big", true, vec![bar(0, 256 * MIB, true, true)]),
            ),
        ]
    }

    const MEM32: Aperture = Aperture {
        base: 0x1000_0000,
        size: 0x2000_0000,
    };
    const PREF64: Aperture = Aperture {
        base: 0x80_0000_0000,
        size: 0x80_0000_0000,
    };

    #[test]
    fn reference_topology_is_placed_exactly() {
        let plans = plan(MEM32, PREF64, &reference()).unwrap();
        let w = |base, size| Some(Window { base, size });
        assert_eq!(plans[0].mem32, w(0x1000_0000, MIB));
        assert_eq!(plans[0].pref64, None);
        let addrs: Vec<u64> = plans[0].bars.iter().map(|b| b.address).collect();
        assert_eq!(addrs, vec![0x1000_0000, 0x1002_0000, 0x1004_0000]);
        assert_eq!(plans[1].mem32, None);
        assert_eq!(plans[1].pref64, w(0x80_1000_0000, MIB));
        assert_eq!(plans[1].bars[0].address, 0x80_1000_0000);
        assert_eq!(plans[2].mem32, w(0x1010_0000, MIB));
        assert_eq!(plans[3].pref64, w(0x80_0000_0000, 256 * MIB));
        assert_eq!(plans[3].bars[0].address, 0x80_0000_0000);
    }

    #[test]
    fn every_bar_is_naturally_aligned_and_inside_its_window() {
        let plans = plan(MEM32, PREF64, &reference()).unwrap();
        for p in &plans {
            for b in &p.bars {
                assert_eq!(b.address % b.size, 0, "{b:?}");
                let w = match b.window {
                    WindowKind::Mem32 => p.mem32.unwrap(),
                    WindowKind::Pref64 => p.pref64.unwrap(),
                };
                assert!(b.address >= w.base && b.address + b.reserved - 1 <= w.limit());
            }
        }
    }

    #[test]
    fn windows_are_disjoint_and_megabyte_granular() {
        let plans = plan(MEM32, PREF64, &reference()).unwrap();
        let mut ws: Vec<Window> = plans
            .iter()
            .flat_map(|p| [p.mem32, p.pref64])
            .flatten()
            .collect();
        ws.sort_by_key(|w| w.base);
        for w in &ws {
            assert_eq!(w.base % MIB, 0);
            assert_eq!(w.size % MIB, 0);
        }
        for pair in ws.windows(2) {
            assert!(pair[0].limit() < pair[1].base);
        }
    }

    #[test]
    fn small_passthrough_bar_gets_a_whole_page() {
        let ports = vec![port(
            "00:01.0",
            dev(
                "01:00.0 nic",
                true,
                vec![bar(0, 256, false, false), bar(1, 256, false, false)],
            ),
        )];
        let plans = plan(MEM32, PREF64, &ports).unwrap();
        assert_eq!(plans[0].bars[0].reserved, PAGE_SIZE);
        assert_eq!(
            plans[0].bars[1].address - plans[0].bars[0].address,
            PAGE_SIZE
        );
    }

    #[test]
    fn small_emulated_bars_are_packed_without_padding() {
        let ports = vec![port(
            "00:01.0",
            dev(
                "01:00.0 virtio",
                false,
                vec![bar(0, 256, false, false), bar(1, 256, false, false)],
            ),
        )];
        let plans = plan(MEM32, PREF64, &ports).unwrap();
        assert_eq!(plans[0].bars[1].address - plans[0].bars[0].address, 256);
    }

    #[test]
    fn headroom_enlarges_the_window_and_empty_port_gets_one() {
        let mut ports = reference();
        ports.push(PortRequest {
            headroom_mem32: 2 * MIB + 1,
            ..port("00:05.0", None)
        });
        let plans = plan(MEM32, PREF64, &ports).unwrap();
        assert_eq!(plans[4].mem32.unwrap().size, 3 * MIB);
        assert_eq!(plans[4].pref64, None);
    }

    #[test]
    fn non_prefetchable_64bit_bar_goes_in_the_32bit_window() {
        let ports = vec![port(
            "00:01.0",
            dev("01:00.0 x", false, vec![bar(0, 64 * KIB, true, false)]),
        )];
        let plans = plan(MEM32, PREF64, &ports).unwrap();
        assert_eq!(plans[0].bars[0].window, WindowKind::Mem32);
        assert!(plans[0].bars[0].address < 1 << 32);
    }

    #[test]
    fn topology_that_does_not_fit_names_the_device_and_window() {
        let small = Aperture {
            base: 0x80_0000_0000,
            size: 128 * MIB,
        };
        let err = plan(MEM32, small, &reference()).unwrap_err();
        assert_eq!(
            err,
            PlanError::DoesNotFit {
                device: "04:00.0 big".to_string(),
                window: WindowKind::Pref64,
                needed: 256 * MIB,
                available: 128 * MIB,
            }
        );
        assert!(err.to_string().contains("04:00.0 big"));
    }

    #[test]
    fn bar_size_that_is_not_a_power_of_two_is_refused() {
        let ports = vec![port(
            "00:01.0",
            dev("01:00.0 odd", false, vec![bar(2, 3000, false, false)]),
        )];
        assert_eq!(
            plan(MEM32, PREF64, &ports),
            Err(PlanError::InvalidBarSize {
                device: "01:00.0 odd".to_string(),
                index: 2,
                size: 3000
            })
        );
    }

    #[test]
    fn aperture_above_4gib_for_mem32_is_refused() {
        let bad = Aperture {
            base: 0xF000_0000,
            size: 0x2000_0000,
        };
        assert_eq!(
            plan(bad, PREF64, &reference()),
            Err(PlanError::InvalidAperture {
                window: WindowKind::Mem32
            })
        );
    }

    #[test]
    fn huge_request_does_not_overflow() {
        let ports = vec![port(
            "00:01.0",
            dev(
                "01:00.0 huge",
                false,
                vec![bar(0, 1 << 63, true, true), bar(2, 1 << 63, true, true)],
            ),
        )];
        assert!(matches!(
            plan(MEM32, PREF64, &ports),
            Err(PlanError::DoesNotFit { .. })
        ));
    }

    proptest::proptest! {
        #[test]
        fn random_plans_keep_alignment_and_disjointness(
            sizes in proptest::collection::vec(proptest::collection::vec((4u32..30, proptest::prelude::any::<bool>(), proptest::prelude::any::<bool>()), 0..4), 0..6),
            passthrough in proptest::prelude::any::<bool>(),
        ) {
            let ports: Vec<PortRequest> = sizes.iter().enumerate().map(|(i, bars)| port(
                "p",
                dev(&alloc::format!("dev{i}"), passthrough, bars.iter().enumerate().map(|(j, &(s, is64, pf))| bar(j as u8, 1 << s, is64, pf)).collect()),
            )).collect();
            if let Ok(plans) = plan(MEM32, PREF64, &ports) {
                let mut spans: Vec<(u64, u64)> = Vec::new();
                for p in &plans {
                    for b in &p.bars {
                        proptest::prop_assert_eq!(b.address % b.size, 0);
                        spans.push((b.address, b.address + b.reserved));
                    }
                }
                spans.sort();
                for s in spans.windows(2) {
                    proptest::prop_assert!(s[0].1 <= s[1].0);
                }
            }
        }
    }
}

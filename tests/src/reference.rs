//! The reference topology of the regression suite, placed by the planner and
//! programmed the way firmware would, and `lspci -n -xxxx` dumps of it.

use crate::endpoint::{BarProfile, Endpoint};
use crate::scenario::ecam_offset;
use emulated_bridges::{type1, RootPort, RootPortConfig};
use std::fmt::Write as _;
use vbus::planner::{self, Aperture, BarRequest, DeviceRequest, PortRequest};
use vbus::{Bdf, Segment};

/// One device of the reference topology.
pub struct RefDevice {
    /// What the planner calls it.
    pub name: &'static str,
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
    /// Passthrough (BARs padded to 4 KiB pages).
    pub passthrough: bool,
    /// Its BARs.
    pub bars: Vec<BarProfile>,
}

fn bar(index: u8, size: u64, is_64bit: bool, prefetchable: bool) -> BarProfile {
    BarProfile {
        index,
        size,
        is_64bit,
        prefetchable,
    }
}

/// The four devices, one behind each of root ports 00:01.0 ..= 00:04.0.
pub fn reference_devices() -> Vec<RefDevice> {
    vec![
        RefDevice {
            name: "01:00.0 e1000e",
            vendor: 0x8086,
            device: 0x10d3,
            passthrough: true,
            bars: vec![
                bar(0, 128 << 10, false, false),
                bar(1, 128 << 10, false, false),
                bar(3, 16 << 10, false, false),
            ],
        },
        RefDevice {
            name: "02:00.0 virtio-blk",
            vendor: 0x1af4,
            device: 0x1042,
            passthrough: false,
            bars: vec![bar(4, 16 << 10, true, true)],
        },
        RefDevice {
            name: "03:00.0 igb",
            vendor: 0x8086,
            device: 0x10c9,
            passthrough: true,
            bars: vec![
                bar(0, 128 << 10, false, false),
                bar(3, 16 << 10, false, false),
            ],
        },
        RefDevice {
            name: "04:00.0 big-prefetchable",
            vendor: 0x1234,
            device: 0x0001,
            passthrough: true,
            bars: vec![bar(0, 256 << 20, true, true)],
        },
    ]
}

/// The segment's 32-bit aperture (the default guest layout's).
pub const MEM32: Aperture = Aperture {
    base: 0x1000_0000,
    size: 0x2000_0000,
};
/// The segment's 64-bit prefetchable aperture (the default guest layout's).
pub const PREF64: Aperture = Aperture {
    base: 0x80_0000_0000,
    size: 0x40_0000_0000,
};

/// A write whose effects no one applies: programming the plan maps BARs,
/// which [`Segment::decoded`] then shows.
fn write(seg: &mut Segment, bdf: Bdf, reg: u16, size: u8, value: u64) {
    let _ = seg.ecam_write(ecam_offset(bdf, reg), size, value);
}

/// Builds the reference segment (segment 1), plans it, and programs bus
/// numbers, windows, BARs and Memory Space/Bus Master through ECAM writes.
pub fn programmed_reference() -> Result<Segment, planner::PlanError> {
    let devices = reference_devices();
    let requests: Vec<PortRequest> = devices
        .iter()
        .enumerate()
        .map(|(i, d)| PortRequest {
            name: format!("00:{:02x}.0", i + 1),
            device: Some(DeviceRequest {
                name: d.name.to_string(),
                passthrough: d.passthrough,
                bars: d
                    .bars
                    .iter()
                    .map(|b| BarRequest {
                        index: b.index,
                        size: b.size,
                        is_64bit: b.is_64bit,
                        prefetchable: b.prefetchable,
                    })
                    .collect(),
            }),
            headroom_mem32: 0,
            headroom_pref64: 0,
        })
        .collect();
    let plans = planner::plan(MEM32, PREF64, &requests)?;
    let mut seg = reference_segment();
    program(&mut seg, &devices, &plans);
    Ok(seg)
}

/// The reference topology as built, before any bus number, window or BAR is programmed.
pub fn reference_segment() -> Segment {
    let devices = reference_devices();
    let mut seg = Segment::new(1, 16);
    seg.set_apertures(&crate::scenario::APERTURES);
    seg.set_intx_spis([35, 36, 37, 38]);
    for (i, d) in devices.iter().enumerate() {
        let dev = i as u8 + 1;
        let mut port = RootPort::new(RootPortConfig {
            port_number: dev,
            slot_number: dev.into(),
            ..Default::default()
        });
        port.set_device_present(true);
        // Placement cannot fail: the devices are distinct and the ports are bridges.
        let _ = seg.add_bus0(dev, 0, Box::new(port));
        let _ = seg.attach_below(dev, 0, Box::new(Endpoint::new(d.vendor, d.device, &d.bars)));
    }
    seg
}

fn program(seg: &mut Segment, devices: &[RefDevice], plans: &[planner::PortPlan]) {
    for (i, plan) in plans.iter().enumerate() {
        let dev = i as u8 + 1;
        let Ok(port) = Bdf::new(0, dev, 0) else {
            continue;
        };
        write(
            seg,
            port,
            type1::PRIMARY_BUS,
            4,
            u64::from(u32::from(dev) << 16 | u32::from(dev) << 8),
        );
        let (mb, ml) = plan.mem32.map_or((0xfff0, 0), |w| {
            ((w.base >> 16) & 0xfff0, (w.limit() >> 16) & 0xfff0)
        });
        write(seg, port, type1::MEMORY_BASE, 4, mb | ml << 16);
        let (pb, pl) = plan.pref64.map_or((0xfff0, 0), |w| {
            ((w.base >> 16) & 0xfff0, (w.limit() >> 16) & 0xfff0)
        });
        write(seg, port, type1::PREFETCHABLE_BASE, 4, pb | pl << 16);
        let (pbu, plu) = plan
            .pref64
            .map_or((0, 0), |w| (w.base >> 32, w.limit() >> 32));
        write(seg, port, type1::PREFETCHABLE_BASE_UPPER, 4, pbu);
        write(seg, port, type1::PREFETCHABLE_LIMIT_UPPER, 4, plu);
        write(seg, port, vbus::config::reg::COMMAND, 2, 0x0006);
        let Ok(ep) = Bdf::new(dev, 0, 0) else {
            continue;
        };
        for b in &plan.bars {
            let reg = vbus::config::reg::BAR0 + 4 * u16::from(b.index);
            write(seg, ep, reg, 4, b.address & 0xffff_ffff);
            if devices[i]
                .bars
                .iter()
                .any(|p| p.index == b.index && p.is_64bit)
            {
                write(seg, ep, reg + 4, 4, b.address >> 32);
            }
        }
        write(seg, ep, vbus::config::reg::COMMAND, 2, 0x0006);
    }
}

/// `lspci -n -xxxx` text of every reachable function of `seg`.
pub fn lspci_dump(seg: &Segment) -> String {
    let mut out = String::new();
    for (bdf, f) in seg.enumerate() {
        let cs = f.config_space();
        let class = cs.raw(0x0a, 2);
        let _ = write!(
            out,
            "{:04x}:{bdf} {class:04x}: {:04x}:{:04x}",
            seg.number(),
            cs.raw(0, 2),
            cs.raw(2, 2)
        );
        let rev = cs.raw(8, 1);
        if rev != 0 {
            let _ = write!(out, " (rev {rev:02x})");
        }
        out.push('\n');
        for (i, chunk) in cs.bytes().chunks(16).enumerate() {
            let _ = write!(out, "{:02x}:", i * 16);
            for b in chunk {
                let _ = write!(out, " {b:02x}");
            }
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

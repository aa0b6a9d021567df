//! Our own Linux-style enumerator, written from the behaviour of Linux's
//! `drivers/pci/probe.c` (depth-first bus numbering) and `setup-bus.c`
//! (`pbus_size_mem`: BAR sizing, bridge windows rounded to 1 MiB, assignment by
//! decreasing alignment), working only through ECAM reads and writes. It is
//! independent of the planner, so the two cross-check each other.

use crate::scenario::ecam_offset;
use vbus::{Bdf, Segment};

/// A memory BAR as sizing found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizedBar {
    /// Register offset (0x10 + 4 * index).
    pub reg: u16,
    /// Size in bytes.
    pub size: u64,
    /// A 64-bit BAR.
    pub is_64bit: bool,
    /// Prefetchable.
    pub prefetchable: bool,
}

/// A bridge and the device below it, as enumeration found them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundBridge {
    /// The bridge.
    pub bridge: Bdf,
    /// Its secondary bus.
    pub secondary: u8,
    /// Its subordinate bus.
    pub subordinate: u8,
    /// The endpoint at device 0 of the secondary bus, with its BARs.
    pub device: Option<(Bdf, Vec<SizedBar>)>,
}

fn rd(seg: &mut Segment, bdf: Bdf, reg: u16, size: u8) -> u32 {
    seg.ecam_read(ecam_offset(bdf, reg), size) as u32
}

/// A write whose effects no one applies: enumeration never resets and has no stage 2.
fn wr(seg: &mut Segment, bdf: Bdf, reg: u16, size: u8, v: u32) {
    let _ = seg.ecam_write(ecam_offset(bdf, reg), size, v.into());
}

/// Sizes the memory BARs of a type-0 function as `__pci_read_base` does.
pub fn size_bars(seg: &mut Segment, bdf: Bdf) -> Vec<SizedBar> {
    let cmd = rd(seg, bdf, 4, 2);
    wr(seg, bdf, 4, 2, cmd & !0x3); // decode off while sizing
    let mut bars = Vec::new();
    let mut reg = 0x10;
    while reg <= 0x24 {
        let orig = rd(seg, bdf, reg, 4);
        wr(seg, bdf, reg, 4, 0xffff_ffff);
        let lo = rd(seg, bdf, reg, 4);
        wr(seg, bdf, reg, 4, orig);
        if orig & 1 != 0 || lo == 0 {
            reg += 4;
            continue;
        }
        let is_64bit = (lo >> 1) & 3 == 2;
        let mut mask = u64::from(lo & !0xf);
        if is_64bit && reg < 0x24 {
            let orig_hi = rd(seg, bdf, reg + 4, 4);
            wr(seg, bdf, reg + 4, 4, 0xffff_ffff);
            let hi = rd(seg, bdf, reg + 4, 4);
            wr(seg, bdf, reg + 4, 4, orig_hi);
            mask |= u64::from(hi) << 32;
        } else {
            mask |= 0xffff_ffff_0000_0000;
        }
        let size = (!mask).wrapping_add(1);
        if size != 0 {
            bars.push(SizedBar {
                reg,
                size,
                is_64bit,
                prefetchable: lo & 8 != 0,
            });
        }
        reg += if is_64bit { 8 } else { 4 };
    }
    wr(seg, bdf, 4, 2, cmd);
    bars
}

/// Depth-first bus numbering from bus 0 (one level of bridges, as our segments have).
pub fn scan(seg: &mut Segment) -> Vec<FoundBridge> {
    let mut next_bus = 0u8;
    let mut found = Vec::new();
    for dev in 0..32u8 {
        let Ok(bdf) = Bdf::new(0, dev, 0) else {
            continue;
        };
        if rd(seg, bdf, 0, 2) == 0xffff || rd(seg, bdf, 0x0e, 1) & 0x7f != 1 {
            continue;
        }
        next_bus = next_bus.saturating_add(1);
        let secondary = next_bus;
        // Like Linux: open the subordinate wide while scanning below, then close it.
        wr(seg, bdf, 0x18, 4, 0x00ff_0000 | u32::from(secondary) << 8);
        let mut device = None;
        for cdev in 0..32u8 {
            let Ok(child) = Bdf::new(secondary, cdev, 0) else {
                continue;
            };
            if rd(seg, child, 0, 2) != 0xffff && rd(seg, child, 0x0e, 1) & 0x7f == 0 {
                device = Some((child, size_bars(seg, child)));
            }
        }
        wr(seg, bdf, 0x1a, 1, secondary.into());
        found.push(FoundBridge {
            bridge: bdf,
            secondary,
            subordinate: secondary,
            device,
        });
    }
    found
}

const MIB: u64 = 1 << 20;

fn align_up(v: u64, a: u64) -> Option<u64> {
    v.checked_add(a - 1).map(|x| x & !(a - 1))
}

/// Sizes and assigns windows and BARs as `pbus_size_mem` + `pci_assign_unassigned_bus_resources`
/// would, inside the two apertures, and programs them. `Err` names the bridge that did not fit.
pub fn assign(
    seg: &mut Segment,
    found: &[FoundBridge],
    mem32: (u64, u64),
    pref64: (u64, u64),
) -> Result<(), String> {
    // (bridge index, is_pref, window size, window alignment)
    let mut windows = Vec::new();
    for (i, f) in found.iter().enumerate() {
        let bars = f.device.as_ref().map_or(&[][..], |(_, b)| &b[..]);
        for pref in [false, true] {
            let sel: Vec<&SizedBar> = bars
                .iter()
                .filter(|b| (b.prefetchable && b.is_64bit) == pref)
                .collect();
            if sel.is_empty() {
                continue;
            }
            let sum: u64 = sel.iter().map(|b| b.size).sum();
            let align = sel.iter().map(|b| b.size).max().unwrap_or(MIB).max(MIB);
            windows.push((i, pref, align_up(sum, MIB).ok_or("overflow")?, align));
        }
    }
    windows.sort_by(|a, b| b.3.cmp(&a.3).then(a.0.cmp(&b.0)));
    let mut cursor = [mem32.0, pref64.0];
    let ends = [mem32.0 + mem32.1, pref64.0 + pref64.1];
    let mut placed: Vec<(usize, bool, u64, u64)> = Vec::new();
    for &(i, pref, size, align) in &windows {
        let k = usize::from(pref);
        let base = align_up(cursor[k], align).ok_or("overflow")?;
        if base.checked_add(size).is_none_or(|e| e > ends[k]) {
            return Err(format!("{}: window does not fit", found[i].bridge));
        }
        cursor[k] = base + size;
        placed.push((i, pref, base, size));
    }
    for (i, f) in found.iter().enumerate() {
        let w = |pref: bool| {
            placed
                .iter()
                .find(|p| p.0 == i && p.1 == pref)
                .map(|p| (p.2, p.3))
        };
        let (mb, ml) = w(false).map_or((0xfff0, 0), |(b, s)| {
            (
                (b >> 16) as u32 & 0xfff0,
                ((b + s - 1) >> 16) as u32 & 0xfff0,
            )
        });
        wr(seg, f.bridge, 0x20, 4, mb | ml << 16);
        let (pb, pl, pbu, plu) = w(true).map_or((0xfff0, 0, 0, 0), |(b, s)| {
            let l = b + s - 1;
            (
                (b >> 16) as u32 & 0xfff0,
                (l >> 16) as u32 & 0xfff0,
                (b >> 32) as u32,
                (l >> 32) as u32,
            )
        });
        wr(seg, f.bridge, 0x24, 4, pb | pl << 16);
        wr(seg, f.bridge, 0x28, 4, pbu);
        wr(seg, f.bridge, 0x2c, 4, plu);
        wr(seg, f.bridge, 4, 2, 0x6);
        let Some((dev, bars)) = &f.device else {
            continue;
        };
        let mut sorted: Vec<&SizedBar> = bars.iter().collect();
        sorted.sort_by(|a, b| b.size.cmp(&a.size).then(a.reg.cmp(&b.reg)));
        let mut cur = [w(false).map_or(0, |x| x.0), w(true).map_or(0, |x| x.0)];
        for b in sorted {
            let k = usize::from(b.prefetchable && b.is_64bit);
            let addr = cur[k];
            cur[k] += b.size;
            wr(seg, *dev, b.reg, 4, addr as u32);
            if b.is_64bit {
                wr(seg, *dev, b.reg + 4, 4, (addr >> 32) as u32);
            }
        }
        wr(seg, *dev, 4, 2, 0x6);
    }
    Ok(())
}

/// A bridge's (non-prefetchable, prefetchable) windows as inclusive
/// (base, limit) pairs, from dword reads of its type-1 header (PCI-to-PCI Bridge
/// Architecture 3.2.5.8-3.2.5.9); a disabled window has limit < base.
pub fn bridge_windows(mut read_dword: impl FnMut(u16) -> u32) -> ((u64, u64), (u64, u64)) {
    let mem = read_dword(0x20);
    let pref = read_dword(0x24);
    let (bu, lu) = (read_dword(0x28), read_dword(0x2c));
    let w32 = (
        u64::from(mem & 0xfff0) << 16,
        (u64::from(mem >> 16 & 0xfff0) << 16) | 0xf_ffff,
    );
    let w64 = (
        (u64::from(pref & 0xfff0) << 16) | u64::from(bu) << 32,
        (u64::from(pref >> 16 & 0xfff0) << 16) | u64::from(lu) << 32 | 0xf_ffff,
    );
    (w32, w64)
}

/// Reads back what is programmed and checks the invariants every enumerator
/// must see: bus ranges consistent; BARs powers of two, naturally aligned and
/// inside their bridge's window; 64-bit BAR pairs consistent; windows disjoint
/// and inside the apertures.
pub fn check_invariants(
    seg: &mut Segment,
    found: &[FoundBridge],
    mem32: (u64, u64),
    pref64: (u64, u64),
) -> Result<(), String> {
    let mut windows = Vec::new();
    for f in found {
        let buses = rd(seg, f.bridge, 0x18, 4);
        let (pri, sec, sub) = (buses as u8, (buses >> 8) as u8, (buses >> 16) as u8);
        if pri != 0 || sec == 0 || sub < sec {
            return Err(format!("{}: bus numbers {pri}/{sec}/{sub}", f.bridge));
        }
        let (w32, w64) = bridge_windows(|reg| rd(seg, f.bridge, reg, 4));
        for (w, ap) in [(w32, mem32), (w64, pref64)] {
            if w.1 >= w.0 {
                if w.0 < ap.0 || w.1 > ap.0 + ap.1 - 1 {
                    return Err(format!("{}: window {w:x?} outside aperture", f.bridge));
                }
                windows.push(w);
            }
        }
        let Some((dev, bars)) = &f.device else {
            continue;
        };
        for b in bars {
            let lo = rd(seg, *dev, b.reg, 4);
            let hi = if b.is_64bit {
                rd(seg, *dev, b.reg + 4, 4)
            } else {
                0
            };
            if ((lo >> 1) & 3 == 2) != b.is_64bit {
                return Err(format!("{dev}: BAR at {:#x} changed width", b.reg));
            }
            let addr = u64::from(lo & !0xf) | u64::from(hi) << 32;
            if !b.size.is_power_of_two() || addr % b.size != 0 {
                return Err(format!(
                    "{dev}: BAR {:#x} at {addr:#x} size {:#x}",
                    b.reg, b.size
                ));
            }
            let w = if b.prefetchable && b.is_64bit {
                w64
            } else {
                w32
            };
            if addr < w.0 || addr + b.size - 1 > w.1 {
                return Err(format!(
                    "{dev}: BAR {:#x} at {addr:#x} outside {w:x?}",
                    b.reg
                ));
            }
        }
    }
    windows.sort();
    for p in windows.windows(2) {
        if p[0].1 >= p[1].0 {
            return Err(format!("windows overlap: {p:x?}"));
        }
    }
    Ok(())
}

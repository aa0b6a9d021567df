//! Memory decoding as hardware computes it, from the registers alone.
//!
//! A BAR of a function below a root port is decoded when (PCI Local Bus 3.0,
//! 6.2.2 and 6.2.5.1; PCI-to-PCI Bridge Architecture 1.2, 4.3):
//! * the function's Memory Space Enable is set;
//! * the port's Memory Space Enable is set (a bridge forwards no memory
//!   transaction downstream without it);
//! * the BAR lies entirely inside the port's memory window or its
//!   prefetchable memory window;
//! * it lies entirely inside one of the host bridge's apertures.
//!
//! A function on bus 0 needs only its own enable and an aperture. Two decoded
//! BARs never overlap: a BAR overlapping one decoded before it (in placement
//! order) is left undecoded and counted, since a guest must not get two
//! backings for one address.

use crate::config::ConfigSpace;
use crate::function::{BarBacking, FunctionId, PciFunction};
use crate::segment::memory_enabled;
use alloc::vec::Vec;
use arch_emu::addr::{Ipa, MemRange};

use crate::config::type1;

/// One decoded BAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// The function.
    pub function: FunctionId,
    /// The BAR index.
    pub bar: u8,
    /// The guest range it decodes.
    pub guest: MemRange<Ipa>,
    /// Where its accesses go.
    pub backing: BarBacking,
    /// A prefetchable BAR.
    pub prefetchable: bool,
    /// The parts of the BAR that hold the function's MSI-X table and PBA,
    /// as (offset in the BAR, length); length 0 where one is in another
    /// BAR or the function has no MSI-X. Taken from its MSI-X capability
    /// when decoded: Table BIR/Offset and PBA BIR/Offset are read-only
    /// (PCI Express Base 6.0, 7.7.2.3, 7.7.2.4).
    pub msix: [(u64, u64); 2],
}

impl Decoded {
    /// Whether `off` (an offset in the BAR) lies in its MSI-X table or PBA.
    #[inline]
    pub fn in_msix(&self, off: u64) -> bool {
        self.msix
            .iter()
            .any(|&(at, len)| off >= at && off - at < len)
    }
}

/// The address BAR `index` holds (64 bits for a 64-bit BAR), from the
/// function's config space.
pub fn bar_address(cs: &ConfigSpace, index: u8, is_64bit: bool) -> u64 {
    let off = 0x10 + 4 * u16::from(index);
    let lo = u64::from(cs.raw(off, 4) & !0xf);
    let hi = if is_64bit {
        u64::from(cs.raw(off + 4, 4))
    } else {
        0
    };
    lo | hi << 32
}

/// A type-1 function's memory window (PCI-to-PCI Bridge Architecture 1.2,
/// 3.2.5.8), `None` when its limit is below its base.
pub fn memory_window(cs: &ConfigSpace) -> Option<MemRange<Ipa>> {
    let base = u64::from(cs.raw(type1::MEMORY_BASE, 2) & 0xfff0) << 16;
    let limit = (u64::from(cs.raw(type1::MEMORY_LIMIT, 2) & 0xfff0) << 16) | 0xf_ffff;
    (limit >= base).then(|| MemRange::new(Ipa(base), limit - base + 1))
}

/// A type-1 function's prefetchable memory window (3.2.5.9; the upper 32
/// bits count only when the low nibble says 64-bit decode), `None` when its
/// limit is below its base.
pub fn prefetchable_window(cs: &ConfigSpace) -> Option<MemRange<Ipa>> {
    let base_lo = cs.raw(type1::PREFETCHABLE_BASE, 2);
    let limit_lo = cs.raw(type1::PREFETCHABLE_LIMIT, 2);
    let wide = base_lo & 0xf == 1;
    let (base_hi, limit_hi) = if wide {
        (
            u64::from(cs.raw(type1::PREFETCHABLE_BASE_UPPER, 4)),
            u64::from(cs.raw(type1::PREFETCHABLE_LIMIT_UPPER, 4)),
        )
    } else {
        (0, 0)
    };
    let base = (u64::from(base_lo & 0xfff0) << 16) | base_hi << 32;
    let limit = (u64::from(limit_lo & 0xfff0) << 16) | limit_hi << 32 | 0xf_ffff;
    // The window may reach the top of the 64-bit space; its size then does not fit.
    (limit >= base).then(|| MemRange::new(Ipa(base), (limit - base).saturating_add(1)))
}

type Entry<'a> = (FunctionId, &'a dyn PciFunction);

/// The decoded BARs of a segment's slots (each a bus-0 function and the
/// function below it, if any), and how many BARs overlap an earlier one.
pub fn compute<'a>(
    slots: impl Iterator<Item = (Entry<'a>, Option<Entry<'a>>)>,
    apertures: &[MemRange<Ipa>],
) -> (Vec<Decoded>, u64) {
    let mut out: Vec<Decoded> = Vec::new();
    let mut overlapping = 0;
    let mut consider =
        |(id, f): Entry<'_>, windows: &[Option<MemRange<Ipa>>], out: &mut Vec<Decoded>| {
            if !memory_enabled(f) {
                return;
            }
            let cs = f.config_space();
            for bar in f.bars() {
                let guest = MemRange::new(Ipa(bar_address(cs, bar.index, bar.is_64bit)), bar.size);
                if guest.size == 0 || guest.end().is_none() {
                    continue;
                }
                let in_window =
                    windows.is_empty() || windows.iter().flatten().any(|w| w.covers(&guest));
                if !in_window || !apertures.iter().any(|a| a.covers(&guest)) {
                    continue;
                }
                if out.iter().any(|d| d.guest.overlaps(&guest)) {
                    overlapping += 1;
                    continue;
                }
                let part = |b: u8, at: u32, len: u64| {
                    if b == bar.index {
                        (u64::from(at), len)
                    } else {
                        (0, 0)
                    }
                };
                let msix = f.msix_layout().map_or([(0, 0); 2], |m| {
                    [
                        part(m.table_bar, m.table_offset, m.table_len()),
                        part(m.pba_bar, m.pba_offset, m.pba_len()),
                    ]
                });
                out.push(Decoded {
                    function: id,
                    bar: bar.index,
                    guest,
                    backing: bar.backing,
                    prefetchable: bar.prefetchable,
                    msix,
                });
            }
        };
    for (port, child) in slots {
        consider(port, &[], &mut out);
        let (_, p) = port;
        let Some(child) = child else {
            continue;
        };
        if p.bridge_bus_range().is_none() || !memory_enabled(p) {
            continue;
        }
        let cs = p.config_space();
        let windows = [memory_window(cs), prefetchable_window(cs)];
        if windows.iter().all(Option::is_none) {
            continue;
        }
        consider(child, &windows, &mut out);
    }
    (out, overlapping)
}

/// What an owner has mapped after applying effects in order, checking the
/// rules every owner relies on: a map never lands on a live mapping, an
/// unmap removes exactly one live mapping. For tests and fuzzing.
#[derive(Debug, Default, Clone)]
pub struct MappedSet {
    live: Vec<(FunctionId, u8, MemRange<Ipa>)>,
}

impl MappedSet {
    /// Applies `effects` in order; the error names the first broken rule.
    pub fn apply(&mut self, effects: &crate::Effects) -> Result<(), alloc::string::String> {
        for e in effects.iter() {
            match *e {
                crate::Effect::Map {
                    function,
                    bar,
                    guest,
                    ..
                } => {
                    if self.live.iter().any(|l| l.2.overlaps(&guest)) {
                        return Err(alloc::format!("{e}: over a live mapping"));
                    }
                    self.live.push((function, bar, guest));
                }
                crate::Effect::Unmap {
                    function,
                    bar,
                    guest,
                    ..
                } => {
                    let before = self.live.len();
                    self.live.retain(|l| *l != (function, bar, guest));
                    if self.live.len() + 1 != before {
                        return Err(alloc::format!("{e}: not mapped"));
                    }
                }
                crate::Effect::Reset { .. }
                | crate::Effect::Intx { .. }
                | crate::Effect::Msi { .. }
                | crate::Effect::MsiMessageWritten { .. } => {}
            }
        }
        Ok(())
    }

    /// Whether what is mapped is exactly what `decoded` says.
    pub fn matches(&self, decoded: &[Decoded]) -> bool {
        self.live.len() == decoded.len()
            && decoded
                .iter()
                .all(|d| self.live.contains(&(d.function, d.bar, d.guest)))
    }
}

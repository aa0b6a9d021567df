//! Host resource assignment: every memory BAR gets a bus address and every
//! bridge its memory windows, as firmware would, inside the host bridge's
//! ranges from the device tree.
//!
//! Rules:
//! * every memory BAR is aligned to its size and gets at least a 4 KiB page
//!   of its own, so that stage 2 can map it to a guest without exposing
//!   anything else;
//! * a 64-bit prefetchable BAR goes in the 64-bit prefetchable range (and the
//!   prefetchable windows of the bridges above it) when the host has one;
//!   every other memory BAR goes in the 32-bit non-prefetchable range;
//! * bridge windows have 1 MiB granularity (PCI-to-PCI Bridge Architecture
//!   1.2, 3.2.5.8-9), are aligned to the largest alignment below them and
//!   sized to what is below; an unused window is closed (base above limit);
//! * I/O is never assigned (the guests get no I/O space);
//! * Memory Space and Bus Master are enabled on every bridge, so that the
//!   path from the root bus to each function forwards;
//! * when firmware already assigned everything validly (each BAR aligned,
//!   on pages of its own, inside its bridges' windows and the host ranges,
//!   overlapping nothing) its values are kept and nothing but the bridges'
//!   Command registers is written; otherwise everything is assigned afresh.

use crate::access::{read16, write16, ConfigAccess};
use crate::enumerate::{FoundFunction, HostTopology};
use crate::regs::type1;
use alloc::vec::Vec;
use arch_emu::addr::Pa;
use core::fmt;
use vbus::config::{command, reg, status};
use vbus::Bdf;

/// Smallest span a BAR is given (a stage-2 page).
pub const PAGE: u64 = 4096;
/// Bridge memory window granularity.
pub const WINDOW_GRANULE: u64 = 1 << 20;

/// One host bridge range from the DT `ranges`: CPU and PCI addresses may differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostRange {
    /// CPU (host physical) address of the first byte.
    pub cpu: Pa,
    /// PCI bus address of the first byte.
    pub pci: u64,
    /// Size in bytes.
    pub size: u64,
}

impl HostRange {
    fn covers(&self, pci: u64, size: u64) -> bool {
        pci >= self.pci
            && pci
                .checked_add(size)
                .is_some_and(|e| e <= self.pci.saturating_add(self.size))
    }

    /// The CPU address of a PCI address inside the range.
    pub fn to_cpu(&self, pci: u64) -> Pa {
        Pa(self.cpu.0.wrapping_add(pci.wrapping_sub(self.pci)))
    }
}

/// The host bridge's memory ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostWindows {
    /// 32-bit non-prefetchable memory (below 4 GiB in PCI space).
    pub mem32: HostRange,
    /// 64-bit prefetchable memory, if the host bridge has it.
    pub mem64_prefetchable: Option<HostRange>,
}

/// A memory BAR's assigned address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssignedBar {
    /// The function.
    pub bdf: Bdf,
    /// BAR index.
    pub index: u8,
    /// PCI bus address (what the BAR holds).
    pub pci: u64,
    /// Host physical address (what stage 2 maps).
    pub cpu: Pa,
    /// Size in bytes as the BAR decodes it.
    pub size: u64,
    /// 64-bit BAR.
    pub is_64bit: bool,
    /// Prefetchable BAR.
    pub prefetchable: bool,
}

/// A bridge's windows as assigned: `(pci base, size)`, `None` when closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssignedBridge {
    /// The bridge.
    pub bdf: Bdf,
    /// Memory window.
    pub memory: Option<(u64, u64)>,
    /// Prefetchable memory window.
    pub prefetchable: Option<(u64, u64)>,
}

/// What [`assign`] left programmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// Every memory BAR, in enumeration order.
    pub bars: Vec<AssignedBar>,
    /// Every bridge.
    pub bridges: Vec<AssignedBridge>,
    /// Whether firmware's assignment was valid and kept.
    pub kept_firmware: bool,
}

impl Assignment {
    /// The assigned BAR `index` of `bdf`.
    pub fn bar(&self, bdf: Bdf, index: u8) -> Option<&AssignedBar> {
        self.bars.iter().find(|b| b.bdf == bdf && b.index == index)
    }

    /// The windows of bridge `bdf`.
    pub fn bridge(&self, bdf: Bdf) -> Option<&AssignedBridge> {
        self.bridges.iter().find(|b| b.bdf == bdf)
    }
}

/// Why assignment failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssignError {
    /// BAR `bar` of `bdf` (or, with `bar: None`, the window of bridge `bdf`)
    /// does not fit in the host range it belongs to.
    NoSpace {
        /// The function.
        bdf: Bdf,
        /// The BAR, `None` for a bridge window.
        bar: Option<u8>,
        /// Bytes needed.
        size: u64,
        /// In the prefetchable range.
        prefetchable: bool,
    },
}

impl fmt::Display for AssignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let AssignError::NoSpace {
            bdf,
            bar,
            size,
            prefetchable,
        } = *self;
        let range = if prefetchable {
            "64-bit prefetchable"
        } else {
            "32-bit"
        };
        match bar {
            Some(i) => write!(
                f,
                "host {bdf} BAR{i}: {size:#x} bytes do not fit in the {range} range"
            ),
            None => write!(
                f,
                "host {bdf} window: {size:#x} bytes do not fit in the {range} range"
            ),
        }
    }
}

fn align_up(v: u64, a: u64) -> Option<u64> {
    let m = a.checked_sub(1)?;
    v.checked_add(m).map(|x| x & !m)
}

/// One thing to place in a window: a BAR or a child bridge's window.
#[derive(Debug, Clone, Copy)]
struct Item {
    bdf: Bdf,
    bar: Option<u8>,
    size: u64,
    align: u64,
}

/// Which window a BAR belongs in.
fn goes_prefetchable(b: &crate::enumerate::HostBar, w: &HostWindows) -> bool {
    b.is_64bit() && b.is_prefetchable() && w.mem64_prefetchable.is_some()
}

/// Lays `items` out from offset 0, largest alignment first; returns offsets and the end.
fn layout(items: &mut [Item]) -> Option<(Vec<u64>, u64)> {
    items.sort_by(|a, b| b.align.cmp(&a.align).then(a.bdf.cmp(&b.bdf)));
    let mut at = 0u64;
    let mut offs = Vec::new();
    for it in items.iter() {
        let o = align_up(at, it.align)?;
        offs.push(o);
        at = o.checked_add(it.size)?;
    }
    Some((offs, at))
}

struct Planner<'a> {
    t: &'a HostTopology,
    w: HostWindows,
    bars: Vec<AssignedBar>,
    bridges: Vec<AssignedBridge>,
}

impl Planner<'_> {
    /// What goes in the (non-prefetchable, prefetchable) window below `parent`.
    fn items(&self, parent: Option<Bdf>) -> (Vec<Item>, Vec<Item>) {
        let (mut np, mut p) = (Vec::new(), Vec::new());
        for f in self.t.children(parent) {
            for b in f.bars.iter().filter(|b| b.is_memory()) {
                let size = b.size.max(PAGE);
                let it = Item {
                    bdf: f.bdf,
                    bar: Some(b.index),
                    size,
                    align: size,
                };
                if goes_prefetchable(b, &self.w) {
                    p.push(it)
                } else {
                    np.push(it)
                }
            }
            if f.is_bridge() {
                let (cnp, cp) = self.items(Some(f.bdf));
                for (mut c, out) in [(cnp, &mut np), (cp, &mut p)] {
                    if c.is_empty() {
                        continue;
                    }
                    let align = c
                        .iter()
                        .map(|i| i.align)
                        .max()
                        .unwrap_or(0)
                        .max(WINDOW_GRANULE);
                    let end = layout(&mut c).map_or(u64::MAX, |(_, e)| e);
                    let size = align_up(end, WINDOW_GRANULE).unwrap_or(u64::MAX);
                    out.push(Item {
                        bdf: f.bdf,
                        bar: None,
                        size,
                        align,
                    });
                }
            }
        }
        (np, p)
    }

    /// Places what is below `parent` from `base` in each kind of window.
    fn place(
        &mut self,
        parent: Option<Bdf>,
        bases: [Option<u64>; 2],
        ranges: [Option<HostRange>; 2],
    ) -> Result<(), AssignError> {
        let (np, p) = self.items(parent);
        for (kind, mut items) in [np, p].into_iter().enumerate() {
            let (Some(base), Some(range)) = (bases[kind], ranges[kind]) else {
                continue;
            };
            let prefetchable = kind == 1;
            let Some((offs, _)) = layout(&mut items) else {
                let it = items.first().copied();
                return Err(AssignError::NoSpace {
                    bdf: it.map_or(Bdf::from_routing_id(0), |i| i.bdf),
                    bar: it.and_then(|i| i.bar),
                    size: u64::MAX,
                    prefetchable,
                });
            };
            for (it, off) in items.iter().zip(offs) {
                let err = AssignError::NoSpace {
                    bdf: it.bdf,
                    bar: it.bar,
                    size: it.size,
                    prefetchable,
                };
                let at = base.checked_add(off).ok_or(err)?;
                if !range.covers(at, it.size) {
                    return Err(err);
                }
                match it.bar {
                    Some(index) => {
                        let f = self
                            .t
                            .get(it.bdf)
                            .and_then(|f| f.bar(index).map(|b| (f, *b)));
                        if let Some((_, b)) = f {
                            self.bars.push(AssignedBar {
                                bdf: it.bdf,
                                index,
                                pci: at,
                                cpu: range.to_cpu(at),
                                size: b.size,
                                is_64bit: b.is_64bit(),
                                prefetchable: b.is_prefetchable(),
                            });
                        }
                    }
                    None => {
                        let mut b = self.bridge(it.bdf);
                        let win = Some((at, it.size));
                        if prefetchable {
                            b.prefetchable = win
                        } else {
                            b.memory = win
                        }
                        self.set_bridge(b);
                    }
                }
            }
        }
        Ok(())
    }

    fn bridge(&self, bdf: Bdf) -> AssignedBridge {
        self.bridges
            .iter()
            .find(|b| b.bdf == bdf)
            .copied()
            .unwrap_or(AssignedBridge {
                bdf,
                memory: None,
                prefetchable: None,
            })
    }

    fn set_bridge(&mut self, b: AssignedBridge) {
        match self.bridges.iter_mut().find(|x| x.bdf == b.bdf) {
            Some(x) => *x = b,
            None => self.bridges.push(b),
        }
    }

    fn run(&mut self) -> Result<(), AssignError> {
        let ranges = [Some(self.w.mem32), self.w.mem64_prefetchable];
        self.place(
            None,
            [
                Some(self.w.mem32.pci),
                self.w.mem64_prefetchable.map(|r| r.pci),
            ],
            ranges,
        )?;
        let bridges: Vec<Bdf> = self
            .t
            .functions
            .iter()
            .filter(|f| f.is_bridge())
            .map(|f| f.bdf)
            .collect();
        for bdf in bridges {
            let b = self.bridge(bdf);
            self.set_bridge(b);
            self.place(
                Some(bdf),
                [b.memory.map(|w| w.0), b.prefetchable.map(|w| w.0)],
                ranges,
            )?;
        }
        Ok(())
    }
}

/// A window as `(pci base, size)`, `None` when closed.
type Window = Option<(u64, u64)>;

/// The windows bridge `bdf` decodes now: (memory, prefetchable), `None` when closed.
fn read_windows<A: ConfigAccess + ?Sized>(a: &mut A, bdf: Bdf) -> (Window, Window) {
    let mem = a.read32(bdf, type1::MEMORY_BASE);
    let base = u64::from(mem & 0xfff0) << 16;
    let limit = u64::from(mem >> 16 & 0xfff0) << 16 | 0xf_ffff;
    let pref = a.read32(bdf, type1::PREFETCHABLE_BASE);
    let wide = pref & 0xf == 1;
    let (bu, lu) = if wide {
        (
            u64::from(a.read32(bdf, type1::PREFETCHABLE_BASE_UPPER)),
            u64::from(a.read32(bdf, type1::PREFETCHABLE_LIMIT_UPPER)),
        )
    } else {
        (0, 0)
    };
    let pbase = u64::from(pref & 0xfff0) << 16 | bu << 32;
    let plimit = u64::from(pref >> 16 & 0xfff0) << 16 | lu << 32 | 0xf_ffff;
    let w = |b: u64, l: u64| (l > b).then(|| (b, l - b + 1));
    (w(base, limit), w(pbase, plimit))
}

/// Firmware's assignment, if it is valid by the rules of the module documentation.
fn firmware<A: ConfigAccess + ?Sized>(
    t: &HostTopology,
    a: &mut A,
    w: &HostWindows,
) -> Option<Assignment> {
    let mut bridges = Vec::new();
    for f in t.functions.iter().filter(|f| f.is_bridge()) {
        let (memory, prefetchable) = read_windows(a, f.bdf);
        bridges.push(AssignedBridge {
            bdf: f.bdf,
            memory,
            prefetchable,
        });
    }
    let inside = |f: &FoundFunction, pci: u64, size: u64, pref_ok: bool| -> Option<HostRange> {
        let range = [Some(w.mem32), w.mem64_prefetchable]
            .into_iter()
            .flatten()
            .find(|r| r.covers(pci, size))?;
        for p in &f.path {
            let b = bridges.iter().find(|b| b.bdf == *p)?;
            let fits = |win: Option<(u64, u64)>| {
                win.is_some_and(|(wb, ws)| {
                    pci >= wb
                        && pci
                            .checked_add(size)
                            .is_some_and(|e| e <= wb.saturating_add(ws))
                })
            };
            if !(fits(b.memory) || pref_ok && fits(b.prefetchable)) {
                return None;
            }
        }
        Some(range)
    };
    let mut bars: Vec<AssignedBar> = Vec::new();
    for f in &t.functions {
        for b in f.bars.iter().filter(|b| b.is_memory()) {
            let span = b.size.max(PAGE);
            if b.address == 0 || b.address % span != 0 {
                return None;
            }
            let range = inside(f, b.address, span, b.is_prefetchable())?;
            let overlaps = bars.iter().any(|o| {
                o.pci < b.address.saturating_add(span)
                    && b.address < o.pci.saturating_add(o.size.max(PAGE))
            });
            if overlaps {
                return None;
            }
            bars.push(AssignedBar {
                bdf: f.bdf,
                index: b.index,
                pci: b.address,
                cpu: range.to_cpu(b.address),
                size: b.size,
                is_64bit: b.is_64bit(),
                prefetchable: b.is_prefetchable(),
            });
        }
    }
    for b in &bridges {
        let f = t.get(b.bdf)?;
        for win in [b.memory, b.prefetchable].into_iter().flatten() {
            inside(f, win.0, win.1, true)?;
        }
    }
    Some(Assignment {
        bars,
        bridges,
        kept_firmware: true,
    })
}

const STATUS_RW1C: u32 = (status::RW1C_ERRORS as u32) << 16;

fn program<A: ConfigAccess + ?Sized>(a: &mut A, t: &HostTopology, plan: &Assignment) {
    for f in t.functions.iter().filter(|f| !f.bars.is_empty()) {
        let cmd = read16(a, f.bdf, reg::COMMAND);
        write16(
            a,
            f.bdf,
            reg::COMMAND,
            cmd & !command::MEMORY_SPACE,
            STATUS_RW1C,
        );
        for b in plan.bars.iter().filter(|b| b.bdf == f.bdf) {
            let off = reg::BAR0 + 4 * u16::from(b.index);
            let flags = a.read32(f.bdf, off) & 0xf;
            a.write32(
                f.bdf,
                off,
                b.pci as u32 & crate::regs::bar::MEM_ADDRESS | flags,
            );
            if b.is_64bit {
                a.write32(f.bdf, off + 4, (b.pci >> 32) as u32);
            }
        }
        write16(a, f.bdf, reg::COMMAND, cmd, STATUS_RW1C);
    }
    for b in &plan.bridges {
        let (mb, ml) = match b.memory {
            Some((base, size)) => (base, base + size - 1),
            None => (0xfff0_0000, 0),
        };
        a.write32(
            b.bdf,
            type1::MEMORY_BASE,
            (mb >> 16) as u32 & 0xfff0 | ((ml >> 16) as u32 & 0xfff0) << 16,
        );
        let (pb, pl) = match b.prefetchable {
            Some((base, size)) => (base, base + size - 1),
            None => (0xfff0_0000, 0),
        };
        a.write32(
            b.bdf,
            type1::PREFETCHABLE_BASE,
            (pb >> 16) as u32 & 0xfff0 | ((pl >> 16) as u32 & 0xfff0) << 16,
        );
        a.write32(b.bdf, type1::PREFETCHABLE_BASE_UPPER, (pb >> 32) as u32);
        a.write32(b.bdf, type1::PREFETCHABLE_LIMIT_UPPER, (pl >> 32) as u32);
    }
}

fn enable_bridges<A: ConfigAccess + ?Sized>(a: &mut A, t: &HostTopology) {
    for f in t.functions.iter().filter(|f| f.is_bridge()) {
        let cmd = read16(a, f.bdf, reg::COMMAND);
        write16(
            a,
            f.bdf,
            reg::COMMAND,
            cmd | command::MEMORY_SPACE | command::BUS_MASTER,
            STATUS_RW1C,
        );
    }
}

/// Assigns the memory resources of the enumerated host segment `t` inside
/// `windows` (see the module documentation), programs them, and enables
/// Memory Space and Bus Master on every bridge. Endpoints' Command registers
/// are left as they were (Memory Space is off while their BARs are written).
pub fn assign<A: ConfigAccess + ?Sized>(
    t: &HostTopology,
    a: &mut A,
    windows: HostWindows,
) -> Result<Assignment, AssignError> {
    let plan = match firmware(t, a, &windows) {
        Some(kept) => kept,
        None => {
            let mut p = Planner {
                t,
                w: windows,
                bars: Vec::new(),
                bridges: Vec::new(),
            };
            p.run()?;
            let mut bars = Vec::new();
            for f in &t.functions {
                for b in f.bars.iter().filter(|b| b.is_memory()) {
                    if let Some(x) = p.bars.iter().find(|x| x.bdf == f.bdf && x.index == b.index) {
                        bars.push(*x);
                    }
                }
            }
            let plan = Assignment {
                bars,
                bridges: p.bridges,
                kept_firmware: false,
            };
            program(a, t, &plan);
            plan
        }
    };
    enable_bridges(a, t);
    Ok(plan)
}

/// Reads back what [`assign`] programmed: every memory BAR of `t`'s
/// functions, every bridge's bus numbers and windows. Returns one line per
/// difference, naming the function and register (empty when nothing moved).
/// Nothing a guest does may ever make this non-empty.
pub fn verify<A: ConfigAccess + ?Sized>(
    a: &mut A,
    t: &HostTopology,
    plan: &Assignment,
) -> Vec<alloc::string::String> {
    let mut out = Vec::new();
    for b in &plan.bars {
        let off = reg::BAR0 + 4 * u16::from(b.index);
        let lo = u64::from(a.read32(b.bdf, off) & crate::regs::bar::MEM_ADDRESS);
        let hi = if b.is_64bit {
            u64::from(a.read32(b.bdf, off + 4)) << 32
        } else {
            0
        };
        if lo | hi != b.pci {
            out.push(alloc::format!(
                "{} BAR{}: {:#x}, assigned {:#x}",
                b.bdf,
                b.index,
                lo | hi,
                b.pci
            ));
        }
    }
    for f in t.functions.iter().filter(|f| f.is_bridge()) {
        if let Some((sec, sub)) = f.buses {
            let v = a.read32(f.bdf, type1::PRIMARY_BUS);
            let now = ((v >> 8) as u8, (v >> 16) as u8);
            if now != (sec, sub) {
                out.push(alloc::format!(
                    "{} bus numbers: secondary {:#x} subordinate {:#x}, assigned {sec:#x} {sub:#x}",
                    f.bdf,
                    now.0,
                    now.1
                ));
            }
        }
    }
    for b in &plan.bridges {
        let now = read_windows(a, b.bdf);
        if now != (b.memory, b.prefetchable) {
            out.push(alloc::format!(
                "{} windows: {:x?}, assigned {:x?}",
                b.bdf,
                now,
                (b.memory, b.prefetchable)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests;

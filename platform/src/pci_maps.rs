//! A PCIe host bridge's routing maps: `interrupt-map` (INTx to GIC SPIs) and
//! `iommu-map`/`msi-map` (Requester ID to StreamID / ITS DeviceID).
//!
//! Bindings: Devicetree Specification v0.4, 2.4.3 "Interrupt Nexus
//! Properties" (`interrupt-map`, `interrupt-map-mask`); Linux
//! `Documentation/devicetree/bindings/pci/pci-iommu.txt` and `pci-msi.txt`
//! (`iommu-map`, `iommu-map-mask`, `msi-map`, `msi-map-mask`).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::{cells, PlatformError};

/// How a GIC interrupt is triggered (the third cell of a GICv3 specifier,
/// bits 3:0: 1 = rising edge, 4 = level high).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Edge-triggered.
    Edge,
    /// Level-sensitive.
    Level,
}

impl Trigger {
    /// From the flags cell of a GICv3 interrupt specifier.
    pub(crate) fn from_flags(flags: u32) -> Trigger {
        if flags & 0b0011 != 0 {
            Trigger::Edge
        } else {
            Trigger::Level
        }
    }
}

/// A GIC interrupt: its INTID and trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GicIrq {
    /// INTID (SPI n is 32 + n, PPI n is 16 + n).
    pub intid: u32,
    /// Edge or level.
    pub trigger: Trigger,
}

/// One row of a PCI host bridge's `interrupt-map`: a child unit address
/// (3 cells: phys.hi, phys.mid, phys.lo) and INTx pin (1 cell, 1..=4 for
/// INTA..INTD) mapped to a GIC interrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntxMapEntry {
    /// Child unit address as written (phys.hi holds the BDF in bits 23:8).
    pub child_addr: [u32; 3],
    /// Child interrupt specifier: the pin, 1..=4.
    pub child_pin: u32,
    /// The parent's interrupt.
    pub irq: GicIrq,
}

/// `interrupt-map-mask` of a PCI host bridge: 3 address cells and the pin cell.
/// When the property is absent every bit takes part in the match.
pub const NO_MASK: [u32; 4] = [u32::MAX; 4];

/// One `iommu-map` or `msi-map` row: `length` Requester IDs from `rid_base`
/// map to `length` IDs from `out_base` of the node `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdMapEntry {
    /// First Requester ID (bus << 8 | device << 3 | function).
    pub rid_base: u32,
    /// The target's phandle.
    pub target_phandle: u32,
    /// The target's node path (an SMMU for `iommu-map`, an ITS for `msi-map`).
    pub target: String,
    /// First output ID (StreamID or DeviceID).
    pub out_base: u32,
    /// Number of IDs.
    pub length: u32,
}

/// Looks `rid` up in an id map after masking, as pci-iommu.txt says: the
/// first row with `rid_base <= (rid & mask) < rid_base + length` gives
/// `out_base + (rid & mask) - rid_base`.
pub(crate) fn map_id(map: &[IdMapEntry], mask: Option<u32>, rid: u16) -> Option<(&str, u32)> {
    let r = u32::from(rid) & mask.unwrap_or(u32::MAX);
    map.iter().find_map(|e| {
        let off = r.checked_sub(e.rid_base)?;
        (off < e.length).then(|| (e.target.as_str(), e.out_base.wrapping_add(off)))
    })
}

/// What `parse_interrupt_map` needs of the interrupt parent (the GIC).
pub(crate) struct GicParent {
    pub phandle: Option<u32>,
    /// Its `#address-cells` (0 when absent, as Linux's `of_irq_parse_raw` reads it).
    pub address_cells: u32,
    /// Its `#interrupt-cells` (3 for a GICv3).
    pub interrupt_cells: u32,
}

/// Parses a PCI host bridge's `interrupt-map` (child address 3 cells, child
/// specifier `child_irq_cells`, parent phandle, parent address and specifier
/// sized by the GIC's cells). Every row's parent must be the GIC.
pub(crate) fn parse_interrupt_map(
    path: &str,
    value: &[u8],
    child_irq_cells: u32,
    gic: &GicParent,
) -> Result<Vec<IntxMapEntry>, PlatformError> {
    let bad = |what: &str| crate::err(path, format!("property `interrupt-map`: {what}"));
    if child_irq_cells != 1 {
        return Err(crate::err(path, "property `#interrupt-cells` is not 1"));
    }
    if gic.interrupt_cells != 3 {
        return Err(bad("the GIC's `#interrupt-cells` is not 3"));
    }
    let c: Vec<u32> = cells(value).collect();
    if value.len() % 4 != 0 {
        return Err(bad("not a whole number of cells"));
    }
    let row = 3 + 1 + 1 + gic.address_cells as usize + 3;
    let mut out = Vec::new();
    let mut i = 0usize;
    while i < c.len() {
        let Some(r) = c.get(i..i + row) else {
            return Err(bad(&format!("row {} is truncated", out.len())));
        };
        let parent = r[4];
        if Some(parent) != gic.phandle {
            return Err(bad(&format!(
                "row {} names interrupt parent {parent:#x}, not the GIC",
                out.len()
            )));
        }
        let spec = &r[5 + gic.address_cells as usize..];
        let intid = match (spec[0], spec[1]) {
            (0, n) if n < 988 => 32 + n,
            (1, n) if n < 16 => 16 + n,
            (t, n) => {
                return Err(bad(&format!(
                    "row {}: unsupported specifier type {t} number {n}",
                    out.len()
                )))
            }
        };
        out.push(IntxMapEntry {
            child_addr: [r[0], r[1], r[2]],
            child_pin: r[3],
            irq: GicIrq {
                intid,
                trigger: Trigger::from_flags(spec[2]),
            },
        });
        i += row;
    }
    Ok(out)
}

/// Parses `interrupt-map-mask` (3 address cells and 1 pin cell).
pub(crate) fn parse_interrupt_map_mask(
    path: &str,
    value: &[u8],
) -> Result<[u32; 4], PlatformError> {
    let c: Vec<u32> = cells(value).collect();
    match c.as_slice() {
        [a, b, d, p] if value.len() == 16 => Ok([*a, *b, *d, *p]),
        _ => Err(crate::err(
            path,
            "property `interrupt-map-mask` is not 4 cells (3 address + 1 pin)",
        )),
    }
}

/// Parses an `iommu-map` or `msi-map` (`prop` names it): rows of
/// (rid-base, phandle, out-base, length), with the target's specifier of one
/// cell. `resolve` turns a phandle into the target node's path and its
/// specifier cell count.
pub(crate) fn parse_id_map(
    path: &str,
    prop: &str,
    value: &[u8],
    resolve: impl Fn(u32) -> Option<(String, u32)>,
) -> Result<Vec<IdMapEntry>, PlatformError> {
    let bad = |what: String| crate::err(path, format!("property `{prop}`: {what}"));
    if value.is_empty() || value.len() % 16 != 0 {
        return Err(bad("not a list of (rid-base, phandle, base, length)".into()));
    }
    let c: Vec<u32> = cells(value).collect();
    let mut out = Vec::new();
    for (n, r) in c.chunks_exact(4).enumerate() {
        let Some((target, spec_cells)) = resolve(r[1]) else {
            return Err(bad(format!("row {n}: no node with phandle {:#x}", r[1])));
        };
        if spec_cells != 1 {
            return Err(bad(format!(
                "row {n}: {target} takes {spec_cells}-cell specifiers, not 1"
            )));
        }
        if r[3] == 0 || u64::from(r[0]) + u64::from(r[3]) > 1 << 32 {
            return Err(bad(format!("row {n}: empty or wrapping range")));
        }
        out.push(IdMapEntry {
            rid_base: r[0],
            target_phandle: r[1],
            target,
            out_base: r[2],
            length: r[3],
        });
    }
    Ok(out)
}

/// The GIC interrupt `interrupt-map` gives `(addr, pin)` after `mask`.
pub(crate) fn lookup_intx(
    map: &[IntxMapEntry],
    mask: &[u32; 4],
    addr: [u32; 3],
    pin: u32,
) -> Option<GicIrq> {
    map.iter()
        .find(|e| {
            (0..3).all(|k| addr[k] & mask[k] == e.child_addr[k] & mask[k])
                && pin & mask[3] == e.child_pin & mask[3]
        })
        .map(|e| e.irq)
}

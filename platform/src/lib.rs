//! The host platform, read from the device tree firmware hands the hypervisor.
//!
//! [`parse`] turns a flattened device tree into a [`Platform`]: memory, CPUs,
//! the GICv3, the generic timer's PPIs, the console PL011, the PSCI conduit,
//! PCIe host bridges, SMMUv3s and GICv3 ITSs (recorded for later use), and the boot modules
//! in the Xen dom0less `multiboot,module` convention that QEMU's
//! `-device guest-loader` writes under `/chosen`. Anything missing or
//! contradictory is a [`PlatformError`] naming the node and property.
//!
//! [`guests`] reads the guests `/chosen` describes (guest nodes, or the
//! single guest of those boot modules) and checks them against the host.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use arch_emu::addr::{MemRange, Pa};
use fdt::node::FdtNode;
use fdt::Fdt;

pub mod dtb;
pub mod guests;
mod pci_maps;
#[cfg(test)]
mod tests;

pub use pci_maps::{GicIrq, IdMapEntry, IntxMapEntry, Trigger, NO_MASK};

/// A physical address range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// First byte.
    pub base: u64,
    /// Length in bytes.
    pub size: u64,
}

impl Region {
    /// One past the last byte, `None` on overflow.
    pub fn end(&self) -> Option<u64> {
        self.base.checked_add(self.size)
    }

    /// The same range as a typed host-physical [`MemRange`].
    pub fn range(&self) -> MemRange<Pa> {
        MemRange::new(Pa(self.base), self.size)
    }

    fn overlaps(&self, o: &Region) -> bool {
        let (Some(a), Some(b)) = (self.end(), o.end()) else {
            return true;
        };
        self.base < b && o.base < a
    }

    fn within(&self, o: &Region) -> bool {
        match (self.end(), o.end()) {
            (Some(a), Some(b)) => self.base >= o.base && a <= b,
            _ => false,
        }
    }
}

/// How PSCI calls reach the firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PsciConduit {
    /// SMC.
    Smc,
    /// HVC.
    Hvc,
}

/// The GICv3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gicv3 {
    /// The distributor frame.
    pub gicd: Region,
    /// Redistributor regions.
    pub gicr: Vec<Region>,
    /// INTID of the virtual CPU interface maintenance interrupt, if given.
    pub maintenance_intid: Option<u32>,
}

/// The generic timer's interrupts, as INTIDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timer {
    /// Secure physical timer.
    pub secure_phys: u32,
    /// Non-secure physical timer.
    pub phys: u32,
    /// Virtual timer.
    pub virt: u32,
    /// EL2 (hypervisor) physical timer.
    pub hyp: u32,
}

/// The console UART.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uart {
    /// Its node's path.
    pub node: String,
    /// Register frame.
    pub regs: Region,
    /// Its interrupt's INTID.
    pub intid: u32,
}

/// A PCI address space in a host bridge's `ranges`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PciSpace {
    /// Configuration space.
    Config,
    /// I/O space.
    Io,
    /// 32-bit memory.
    Mem32,
    /// 64-bit memory.
    Mem64,
}

/// One `ranges` entry of a PCIe host bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciRange {
    /// The space.
    pub space: PciSpace,
    /// Prefetchable.
    pub prefetchable: bool,
    /// PCI bus address.
    pub pci_addr: u64,
    /// CPU physical address.
    pub cpu_addr: u64,
    /// Size in bytes.
    pub size: u64,
}

/// A PCIe host bridge (recorded for passthrough).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcieHost {
    /// Its node's path.
    pub node: String,
    /// First `compatible` string.
    pub compatible: String,
    /// The configuration window (`reg`'s first entry).
    pub config: Option<Region>,
    /// First and last bus.
    pub bus_range: (u8, u8),
    /// `linux,pci-domain`.
    pub segment: Option<u16>,
    /// Address translations.
    pub ranges: Vec<PciRange>,
    /// `interrupt-map` rows (parent: the GIC), empty when absent.
    pub interrupt_map: Vec<IntxMapEntry>,
    /// `interrupt-map-mask`: 3 address cells and the pin cell ([`NO_MASK`] when absent).
    pub interrupt_map_mask: [u32; 4],
    /// `iommu-map` rows (targets: SMMU nodes), empty when absent.
    pub iommu_map: Vec<IdMapEntry>,
    /// `iommu-map-mask`, applied to a Requester ID before the lookup.
    pub iommu_map_mask: Option<u32>,
    /// `msi-map` rows (targets: ITS nodes), recorded; empty when absent.
    pub msi_map: Vec<IdMapEntry>,
    /// `msi-map-mask`.
    pub msi_map_mask: Option<u32>,
    /// `msi-parent` (its node's path) when there is no `msi-map`: the
    /// DeviceID is then the Requester ID itself (pci-msi.txt).
    pub msi_parent: Option<String>,
    /// `dma-coherent`: its devices' DMA snoops the CPU caches.
    pub dma_coherent: bool,
}

impl PcieHost {
    /// The GIC interrupt INTx `pin` (1..=4 for INTA..INTD) of the function
    /// whose routing ID (bus << 8 | device << 3 | function) is
    /// `bdf_routing_id` raises, through `interrupt-map` after
    /// `interrupt-map-mask` (Devicetree Specification v0.4, 2.4.3). The child
    /// unit address is phys.hi = routing ID << 8, phys.mid = phys.lo = 0.
    /// No swizzle is applied: for a function behind bridges, pass the routing
    /// ID and pin as seen at the host bridge. `None` for a pin outside 1..=4
    /// or no matching row.
    pub fn intx_intid(&self, bdf_routing_id: u16, pin: u8) -> Option<u32> {
        self.intx_irq(bdf_routing_id, pin).map(|i| i.intid)
    }

    /// As [`PcieHost::intx_intid`], with the trigger.
    pub fn intx_irq(&self, bdf_routing_id: u16, pin: u8) -> Option<GicIrq> {
        if !(1..=4).contains(&pin) {
            return None;
        }
        pci_maps::lookup_intx(
            &self.interrupt_map,
            &self.interrupt_map_mask,
            [u32::from(bdf_routing_id) << 8, 0, 0],
            u32::from(pin),
        )
    }

    /// The SMMU (node path) and StreamID that Requester ID `rid` reaches
    /// through `iommu-map` after `iommu-map-mask` (pci-iommu.txt). `None`
    /// when no row covers it (or there is no `iommu-map`).
    pub fn stream_id(&self, rid: u16) -> Option<(&str, u32)> {
        pci_maps::map_id(&self.iommu_map, self.iommu_map_mask, rid)
    }

    /// The MSI controller (node path) and DeviceID of Requester ID `rid`:
    /// through `msi-map` after `msi-map-mask` when the bridge has one, else
    /// `msi-parent` with the Requester ID as the DeviceID (pci-msi.txt).
    /// `None` when neither covers `rid`.
    pub fn msi_device_id(&self, rid: u16) -> Option<(&str, u32)> {
        if self.msi_map.is_empty() {
            return self.msi_parent.as_deref().map(|p| (p, u32::from(rid)));
        }
        pci_maps::map_id(&self.msi_map, self.msi_map_mask, rid)
    }
}

/// An SMMUv3's wired interrupts, by `interrupt-names` (binding
/// `iommu/arm,smmu-v3.yaml`: `eventq`, `gerror`, `priq`, `cmdq-sync`, or one
/// `combined`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SmmuIrqs {
    /// Event queue non-empty.
    pub eventq: Option<GicIrq>,
    /// Global error.
    pub gerror: Option<GicIrq>,
    /// PRI queue non-empty.
    pub priq: Option<GicIrq>,
    /// CMD_SYNC completion.
    pub cmdq_sync: Option<GicIrq>,
    /// One interrupt for all of them.
    pub combined: Option<GicIrq>,
}

/// An SMMUv3 (recorded for DMA isolation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Smmuv3 {
    /// Its node's path.
    pub node: String,
    /// Register frame (pages 0 and 1: 128 KiB).
    pub regs: Region,
    /// Its `phandle` (what `iommu-map` names), if it has one.
    pub phandle: Option<u32>,
    /// `dma-coherent`: its table and queue accesses snoop the CPU caches.
    pub dma_coherent: bool,
    /// Its interrupts (none when the node has no `interrupts`).
    pub irqs: SmmuIrqs,
}

/// A GICv3 ITS (`arm,gic-v3-its`, a child of the GIC node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Its {
    /// Its node's path (what `msi-map` and `msi-parent` resolve to).
    pub node: String,
    /// Its register frames (ITS_base and the translation frame: 128 KiB).
    pub regs: Region,
    /// Its `phandle`, if it has one.
    pub phandle: Option<u32>,
}

/// What a boot module holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleKind {
    /// `multiboot,kernel`.
    Kernel,
    /// `multiboot,ramdisk`.
    Ramdisk,
    /// `multiboot,device-tree`.
    DeviceTree,
    /// Another `multiboot,module`.
    Other,
}

/// A boot module under `/chosen`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Its node's path.
    pub node: String,
    /// What it holds.
    pub kind: ModuleKind,
    /// Where it is.
    pub region: Region,
    /// Its `bootargs` (a kernel's command line).
    pub bootargs: Option<String>,
}

/// A CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cpu {
    /// MPIDR affinity (Aff3 in bits 39:32), from `reg`.
    pub mpidr: u64,
}

/// Everything the hypervisor reads from the host DT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// RAM.
    pub memory: Vec<Region>,
    /// CPUs, in DT order.
    pub cpus: Vec<Cpu>,
    /// The interrupt controller.
    pub gic: Gicv3,
    /// The generic timer.
    pub timer: Timer,
    /// The console: `/chosen/stdout-path`, else the first `arm,pl011`.
    pub uart: Uart,
    /// The PSCI conduit.
    pub psci: PsciConduit,
    /// PCIe host bridges.
    pub pcie: Vec<PcieHost>,
    /// SMMUv3s.
    pub smmus: Vec<Smmuv3>,
    /// GICv3 ITSs.
    pub its: Vec<Its>,
    /// Boot modules.
    pub modules: Vec<Module>,
    /// `/chosen/bootargs` (the hypervisor's own).
    pub bootargs: Option<String>,
}

impl Platform {
    /// The index in [`Platform::smmus`] and StreamID that Requester ID `rid`
    /// of host bridge `host` reaches (see [`PcieHost::stream_id`]).
    pub fn smmu_stream(&self, host: &PcieHost, rid: u16) -> Option<(usize, u32)> {
        let (node, sid) = host.stream_id(rid)?;
        let i = self.smmus.iter().position(|s| s.node == node)?;
        Some((i, sid))
    }

    /// The index in [`Platform::its`] and DeviceID of Requester ID `rid`
    /// of host bridge `host` (see [`PcieHost::msi_device_id`]); `None`
    /// when its MSIs do not go to an ITS.
    pub fn its_device(&self, host: &PcieHost, rid: u16) -> Option<(usize, u32)> {
        let (node, dev) = host.msi_device_id(rid)?;
        let i = self.its.iter().position(|s| s.node == node)?;
        Some((i, dev))
    }

    /// The guest kernel module.
    pub fn kernel(&self) -> Option<&Module> {
        self.modules.iter().find(|m| m.kind == ModuleKind::Kernel)
    }

    /// The guest initrd module.
    pub fn ramdisk(&self) -> Option<&Module> {
        self.modules.iter().find(|m| m.kind == ModuleKind::Ramdisk)
    }
}

/// A host DT problem: the node (path) and what is wrong, property named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformError {
    /// The node's path (or the DT itself: `/`).
    pub node: String,
    /// What is wrong.
    pub problem: String,
}

impl core::fmt::Display for PlatformError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}: {}", self.node, self.problem)
    }
}

fn err(node: &str, problem: impl Into<String>) -> PlatformError {
    PlatformError {
        node: node.to_string(),
        problem: problem.into(),
    }
}

fn missing(node: &str, prop: &str) -> PlatformError {
    err(node, format!("property `{prop}` missing"))
}

/// Big-endian cells from a property value.
fn cells(v: &[u8]) -> impl Iterator<Item = u32> + '_ {
    v.chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
}

/// Reads `n` cells (1 or 2, or 3 with the top one dropped) as a number.
fn read_num(it: &mut impl Iterator<Item = u32>, n: u32) -> Option<u64> {
    let mut v = 0u64;
    for _ in 0..n {
        v = (v << 32) | u64::from(it.next()?);
    }
    Some(v)
}

fn u32_prop(node: &FdtNode<'_, '_>, name: &str) -> Option<u32> {
    node.property(name).and_then(|p| cells(p.value).next())
}

/// A node's `#address-cells`/`#size-cells` for its children (spec defaults 2 and 1).
fn child_cells(node: &FdtNode<'_, '_>) -> (u32, u32) {
    (
        u32_prop(node, "#address-cells").unwrap_or(2),
        u32_prop(node, "#size-cells").unwrap_or(1),
    )
}

/// `reg` of a node whose parent gives `(ac, sc)`.
fn regs(
    path: &str,
    node: &FdtNode<'_, '_>,
    (ac, sc): (u32, u32),
) -> Result<Vec<Region>, PlatformError> {
    let p = node.property("reg").ok_or_else(|| missing(path, "reg"))?;
    if ac > 2 || sc > 2 || ac == 0 {
        return Err(err(
            path,
            format!("unsupported cell sizes {ac}+{sc} for `reg`"),
        ));
    }
    let stride = ((ac + sc) * 4) as usize;
    if p.value.is_empty() || p.value.len() % stride != 0 {
        return Err(err(
            path,
            format!(
                "property `reg` is {} bytes, not a multiple of {stride}",
                p.value.len()
            ),
        ));
    }
    let mut it = cells(p.value);
    let mut out = Vec::new();
    while let Some(base) = read_num(&mut it, ac) {
        let size = read_num(&mut it, sc).unwrap_or(0);
        let r = Region { base, size };
        if r.end().is_none() {
            return Err(err(path, "property `reg`: region wraps around"));
        }
        out.push(r);
    }
    Ok(out)
}

/// Interrupt specifiers (3 cells: type, number, flags) as INTIDs.
fn interrupts(path: &str, node: &FdtNode<'_, '_>) -> Result<Vec<u32>, PlatformError> {
    Ok(gic_irqs(path, node)?.iter().map(|i| i.intid).collect())
}

/// Interrupt specifiers (3 cells: type, number, flags) as INTIDs with their trigger.
fn gic_irqs(path: &str, node: &FdtNode<'_, '_>) -> Result<Vec<GicIrq>, PlatformError> {
    let p = node
        .property("interrupts")
        .ok_or_else(|| missing(path, "interrupts"))?;
    if p.value.is_empty() || p.value.len() % 12 != 0 {
        return Err(err(
            path,
            "property `interrupts` is not a list of 3-cell GIC specifiers",
        ));
    }
    let c: Vec<u32> = cells(p.value).collect();
    c.chunks_exact(3)
        .map(|s| match (s[0], s[1]) {
            (0, n) if n < 988 => Ok(GicIrq {
                intid: 32 + n,
                trigger: Trigger::from_flags(s[2]),
            }),
            (1, n) if n < 16 => Ok(GicIrq {
                intid: 16 + n,
                trigger: Trigger::from_flags(s[2]),
            }),
            (t, n) => Err(err(
                path,
                format!("property `interrupts`: unsupported specifier type {t} number {n}"),
            )),
        })
        .collect()
}

/// A node's `phandle` (or the older `linux,phandle`).
fn phandle(node: &FdtNode<'_, '_>) -> Option<u32> {
    u32_prop(node, "phandle").or_else(|| u32_prop(node, "linux,phandle"))
}

fn has_compat(node: &FdtNode<'_, '_>, c: &str) -> bool {
    node.compatible().is_some_and(|cs| cs.all().any(|s| s == c))
}

/// Every node with its full path, depth-first.
fn walk<'b, 'a>(fdt: &'b Fdt<'a>) -> Vec<(String, FdtNode<'b, 'a>)> {
    fn rec<'b, 'a>(
        path: String,
        n: FdtNode<'b, 'a>,
        out: &mut Vec<(String, FdtNode<'b, 'a>)>,
        depth: usize,
    ) {
        if depth > 32 {
            return;
        }
        for c in n.children() {
            let p = if path == "/" {
                format!("/{}", c.name)
            } else {
                format!("{path}/{}", c.name)
            };
            out.push((p.clone(), c));
            rec(p, c, out, depth + 1);
        }
    }
    let mut out = Vec::new();
    if let Some(root) = fdt.find_node("/") {
        rec("/".to_string(), root, &mut out, 0);
    }
    out
}

/// Parses the host DT.
pub fn parse(dtb: &[u8]) -> Result<Platform, PlatformError> {
    let fdt =
        Fdt::new(dtb).map_err(|e| err("/", format!("not a valid flattened device tree: {e:?}")))?;
    let root = fdt.find_node("/").ok_or_else(|| err("/", "no root node"))?;
    let root_cells = child_cells(&root);
    let nodes = walk(&fdt);
    let parent_cells = |path: &str| -> (u32, u32) {
        let parent = match path.rfind('/') {
            Some(0) | None => "/",
            Some(i) => &path[..i],
        };
        nodes
            .iter()
            .find(|(p, _)| p == parent)
            .map_or(root_cells, |(_, n)| child_cells(n))
    };

    // Memory.
    let mut memory = Vec::new();
    for (path, n) in nodes.iter().filter(|(p, n)| {
        p.matches('/').count() == 1
            && n.property("device_type").and_then(|d| d.as_str()) == Some("memory")
    }) {
        for r in regs(path, n, root_cells)? {
            if r.size > 0 {
                memory.push(r);
            }
        }
    }
    if memory.is_empty() {
        return Err(err("/memory", "no memory node with a non-empty `reg`"));
    }

    // CPUs.
    let cpus_node = fdt
        .find_node("/cpus")
        .ok_or_else(|| err("/cpus", "node missing"))?;
    let cpu_cells = child_cells(&cpus_node);
    let mut cpus = Vec::new();
    for c in cpus_node.children() {
        if c.property("device_type").and_then(|d| d.as_str()) != Some("cpu") {
            continue;
        }
        let path = format!("/cpus/{}", c.name);
        let p = c.property("reg").ok_or_else(|| missing(&path, "reg"))?;
        let mpidr = read_num(&mut cells(p.value), cpu_cells.0.clamp(1, 2))
            .ok_or_else(|| err(&path, "property `reg` too short"))?;
        let mpidr = mpidr & 0xff_00ff_ffff;
        if cpus.iter().any(|x: &Cpu| x.mpidr == mpidr) {
            return Err(err(
                &path,
                format!("property `reg`: MPIDR {mpidr:#x} given twice"),
            ));
        }
        cpus.push(Cpu { mpidr });
    }
    if cpus.is_empty() {
        return Err(err("/cpus", "no CPU node"));
    }

    // GICv3.
    let (gic_path, gic_node) = nodes
        .iter()
        .find(|(_, n)| has_compat(n, "arm,gic-v3"))
        .ok_or_else(|| err("/", "no `arm,gic-v3` interrupt controller"))?;
    if u32_prop(gic_node, "#interrupt-cells") != Some(3) {
        return Err(err(gic_path, "property `#interrupt-cells` is not 3"));
    }
    let gic_regs = regs(gic_path, gic_node, parent_cells(gic_path))?;
    let nredist = u32_prop(gic_node, "#redistributor-regions").unwrap_or(1) as usize;
    if gic_regs.len() < 1 + nredist.max(1) {
        return Err(err(
            gic_path,
            format!(
                "property `reg` has {} regions, needs GICD + {} GICR",
                gic_regs.len(),
                nredist.max(1)
            ),
        ));
    }
    let gic = Gicv3 {
        gicd: gic_regs[0],
        gicr: gic_regs[1..1 + nredist.max(1)].to_vec(),
        maintenance_intid: if gic_node.property("interrupts").is_some() {
            interrupts(gic_path, gic_node)?.first().copied()
        } else {
            None
        },
    };

    // Timer.
    let (tpath, tnode) = nodes
        .iter()
        .find(|(_, n)| has_compat(n, "arm,armv8-timer"))
        .ok_or_else(|| err("/timer", "no `arm,armv8-timer` node"))?;
    let t = interrupts(tpath, tnode)?;
    if t.len() < 4 {
        return Err(err(
            tpath,
            "property `interrupts`: fewer than 4 timer interrupts",
        ));
    }
    let timer = Timer {
        secure_phys: t[0],
        phys: t[1],
        virt: t[2],
        hyp: t[3],
    };

    // Console.
    let chosen = fdt.find_node("/chosen");
    let stdout = chosen
        .as_ref()
        .and_then(|c| c.property("stdout-path"))
        .and_then(|p| p.as_str())
        .map(|s| s.split(':').next().unwrap_or(s).to_string());
    let stdout_path = stdout.and_then(|s| {
        let s = fdt
            .find_node("/aliases")
            .and_then(|a| {
                a.property(&s)
                    .and_then(|p| p.as_str())
                    .map(ToString::to_string)
            })
            .unwrap_or(s);
        nodes
            .iter()
            .find(|(p, n)| *p == s && has_compat(n, "arm,pl011"))
            .map(|(p, _)| p.clone())
    });
    let (upath, unode) = match stdout_path {
        Some(p) => nodes.iter().find(|(q, _)| *q == p),
        None => nodes.iter().find(|(_, n)| has_compat(n, "arm,pl011")),
    }
    .ok_or_else(|| err("/", "no `arm,pl011` console"))?;
    let uregs = regs(upath, unode, parent_cells(upath))?;
    let uintid = *interrupts(upath, unode)?
        .first()
        .ok_or_else(|| missing(upath, "interrupts"))?;
    let uart = Uart {
        node: upath.clone(),
        regs: uregs[0],
        intid: uintid,
    };

    // PSCI.
    let (ppath, pnode) = nodes
        .iter()
        .find(|(_, n)| {
            has_compat(n, "arm,psci-0.2")
                || has_compat(n, "arm,psci-1.0")
                || has_compat(n, "arm,psci")
        })
        .ok_or_else(|| err("/psci", "no PSCI node"))?;
    let psci = match pnode.property("method").and_then(|p| p.as_str()) {
        Some("smc") => PsciConduit::Smc,
        Some("hvc") => PsciConduit::Hvc,
        Some(m) => {
            return Err(err(
                ppath,
                format!("property `method` is \"{m}\", not smc or hvc"),
            ))
        }
        None => return Err(missing(ppath, "method")),
    };

    // PCIe host bridges and SMMUs (recorded).
    let by_phandle = |ph: u32| {
        nodes
            .iter()
            .find(|(_, n)| phandle(n) == Some(ph))
            .map(|(p, n)| (p, n))
    };
    let gic_parent = pci_maps::GicParent {
        phandle: phandle(gic_node),
        address_cells: u32_prop(gic_node, "#address-cells").unwrap_or(0),
        interrupt_cells: 3,
    };
    let mut pcie = Vec::new();
    for (path, n) in nodes
        .iter()
        .filter(|(_, n)| n.property("device_type").and_then(|d| d.as_str()) == Some("pci"))
    {
        let compatible = n
            .compatible()
            .map(|c| c.first().to_string())
            .ok_or_else(|| missing(path, "compatible"))?;
        let config = regs(path, n, parent_cells(path))
            .ok()
            .and_then(|r| r.first().copied());
        let bus_range = match n.property("bus-range") {
            Some(p) => {
                let b: Vec<u32> = cells(p.value).collect();
                match b.as_slice() {
                    [s, e] if s <= e && *e < 256 => (*s as u8, *e as u8),
                    _ => {
                        return Err(err(
                            path,
                            "property `bus-range` is not <first last> within 0..=255",
                        ))
                    }
                }
            }
            None => (0, 255),
        };
        let segment = u32_prop(n, "linux,pci-domain").map(|d| d as u16);
        let mut ranges = Vec::new();
        if let Some(p) = n.property("ranges") {
            let pac = parent_cells(path).0;
            let (_, sc) = child_cells(n);
            let stride = (3 + pac + sc) as usize * 4;
            if pac > 2 || sc > 2 || p.value.len() % stride != 0 {
                return Err(err(path, "property `ranges` has an unexpected layout"));
            }
            let mut it = cells(p.value);
            while let Some(hi) = it.next() {
                let pci_addr = read_num(&mut it, 2).unwrap_or(0);
                let cpu_addr = read_num(&mut it, pac).unwrap_or(0);
                let size = read_num(&mut it, sc).unwrap_or(0);
                let space = match (hi >> 24) & 3 {
                    0 => PciSpace::Config,
                    1 => PciSpace::Io,
                    2 => PciSpace::Mem32,
                    _ => PciSpace::Mem64,
                };
                ranges.push(PciRange {
                    space,
                    prefetchable: hi & (1 << 30) != 0,
                    pci_addr,
                    cpu_addr,
                    size,
                });
            }
        }
        let interrupt_map = match n.property("interrupt-map") {
            Some(p) => pci_maps::parse_interrupt_map(
                path,
                p.value,
                u32_prop(n, "#interrupt-cells").unwrap_or(0),
                &gic_parent,
            )?,
            None => Vec::new(),
        };
        let interrupt_map_mask = match n.property("interrupt-map-mask") {
            Some(p) => pci_maps::parse_interrupt_map_mask(path, p.value)?,
            None => NO_MASK,
        };
        let id_map = |prop: &str, cells_prop: &str| match n.property(prop) {
            Some(p) => pci_maps::parse_id_map(path, prop, p.value, |ph| {
                let (tp, tn) = by_phandle(ph)?;
                Some((tp.clone(), u32_prop(tn, cells_prop).unwrap_or(1)))
            }),
            None => Ok(Vec::new()),
        };
        let iommu_map = id_map("iommu-map", "#iommu-cells")?;
        let msi_map = id_map("msi-map", "#msi-cells")?;
        let msi_parent = match n.property("msi-parent") {
            None => None,
            Some(p) => {
                let ph = cells(p.value)
                    .next()
                    .ok_or_else(|| err(path, "property `msi-parent` is empty"))?;
                let (tp, _) = by_phandle(ph).ok_or_else(|| {
                    err(
                        path,
                        format!("property `msi-parent`: no node with phandle {ph:#x}"),
                    )
                })?;
                Some(tp.clone())
            }
        };
        pcie.push(PcieHost {
            node: path.clone(),
            compatible,
            config,
            bus_range,
            segment,
            ranges,
            interrupt_map,
            interrupt_map_mask,
            iommu_map,
            iommu_map_mask: u32_prop(n, "iommu-map-mask"),
            msi_map,
            msi_map_mask: u32_prop(n, "msi-map-mask"),
            msi_parent,
            dma_coherent: n.property("dma-coherent").is_some(),
        });
    }
    let mut smmus = Vec::new();
    for (path, n) in nodes.iter().filter(|(_, n)| has_compat(n, "arm,smmu-v3")) {
        let r = regs(path, n, parent_cells(path))?;
        let irqs = if n.property("interrupts").is_some() {
            let list = gic_irqs(path, n)?;
            let names: Vec<&str> = n
                .property("interrupt-names")
                .ok_or_else(|| missing(path, "interrupt-names"))?
                .value
                .split(|&b| b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| core::str::from_utf8(s).unwrap_or("?"))
                .collect();
            if names.len() != list.len() {
                return Err(err(
                    path,
                    format!(
                        "property `interrupt-names` has {} names for {} interrupts",
                        names.len(),
                        list.len()
                    ),
                ));
            }
            let mut irqs = SmmuIrqs::default();
            for (name, irq) in names.iter().zip(list) {
                let slot = match *name {
                    "eventq" => &mut irqs.eventq,
                    "gerror" => &mut irqs.gerror,
                    "priq" => &mut irqs.priq,
                    "cmdq-sync" => &mut irqs.cmdq_sync,
                    "combined" => &mut irqs.combined,
                    other => {
                        return Err(err(
                            path,
                            format!("property `interrupt-names`: unknown name \"{other}\""),
                        ))
                    }
                };
                *slot = Some(irq);
            }
            irqs
        } else {
            SmmuIrqs::default()
        };
        smmus.push(Smmuv3 {
            node: path.clone(),
            regs: *r.first().ok_or_else(|| missing(path, "reg"))?,
            phandle: phandle(n),
            dma_coherent: n.property("dma-coherent").is_some(),
            irqs,
        });
    }

    let mut its = Vec::new();
    for (path, n) in nodes
        .iter()
        .filter(|(_, n)| has_compat(n, "arm,gic-v3-its"))
    {
        if n.property("msi-controller").is_none() {
            return Err(missing(path, "msi-controller"));
        }
        let r = regs(path, n, parent_cells(path))?;
        its.push(Its {
            node: path.clone(),
            regs: *r.first().ok_or_else(|| missing(path, "reg"))?,
            phandle: phandle(n),
        });
    }

    // Boot modules. QEMU's guest-loader writes 2 address + 2 size cells without
    // #address-cells/#size-cells in /chosen (whose defaults would be 2 + 1): like
    // Xen, read them with the root's cells unless /chosen says otherwise.
    let mut modules: Vec<Module> = Vec::new();
    let mut bootargs = None;
    if let Some(ch) = chosen {
        bootargs = ch
            .property("bootargs")
            .and_then(|p| p.as_str())
            .map(ToString::to_string);
        let mcells = if ch.property("#address-cells").is_some() {
            child_cells(&ch)
        } else {
            root_cells
        };
        for m in ch.children() {
            if !has_compat(&m, "multiboot,module") {
                continue;
            }
            let path = format!("/chosen/{}", m.name);
            let r = regs(&path, &m, mcells)?;
            let region = r[0];
            let kind = if has_compat(&m, "multiboot,kernel") {
                ModuleKind::Kernel
            } else if has_compat(&m, "multiboot,ramdisk") {
                ModuleKind::Ramdisk
            } else if has_compat(&m, "multiboot,device-tree") {
                ModuleKind::DeviceTree
            } else {
                ModuleKind::Other
            };
            if region.size == 0 {
                return Err(err(&path, "property `reg`: empty module"));
            }
            if !memory.iter().any(|mem| region.within(mem)) {
                return Err(err(
                    &path,
                    format!(
                        "property `reg`: module {:#x}+{:#x} is not in RAM",
                        region.base, region.size
                    ),
                ));
            }
            if let Some(o) = modules.iter().find(|o| o.region.overlaps(&region)) {
                return Err(err(&path, format!("property `reg`: overlaps {}", o.node)));
            }
            if kind != ModuleKind::Other && modules.iter().any(|o| o.kind == kind) {
                return Err(err(&path, format!("a second {kind:?} module")));
            }
            modules.push(Module {
                node: path,
                kind,
                region,
                bootargs: m
                    .property("bootargs")
                    .and_then(|p| p.as_str())
                    .map(ToString::to_string),
            });
        }
    }
    Ok(Platform {
        memory,
        cpus,
        gic,
        timer,
        uart,
        psci,
        pcie,
        smmus,
        its,
        modules,
        bootargs,
    })
}

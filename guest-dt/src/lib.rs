//! `GuestLayout`, the one description of a guest's address map and interrupts, and its rendering to a device tree blob.
//!
//! The hypervisor maps stage-2 from a `GuestLayout` and [`GuestLayout::render`]
//! writes the guest's DTB from the same value, so no address or interrupt number
//! is written twice. Addresses are guest physical (IPA). Interrupt numbers are
//! GIC INTIDs (SPIs from 32, PPIs 16..=31); the DT cells are derived from them.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;

use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use arch_emu::addr::{Ipa, MemRange};
pub use arch_emu::vgic::MbiRange;
use vm_fdt::FdtWriter;

/// A range of guest physical addresses: the one range type, over IPAs.
pub type Region = MemRange<Ipa>;

/// The guest's synthetic PCI segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciLayout {
    /// Segment (domain) number, `linux,pci-domain`.
    pub segment: u16,
    /// ECAM window base; its size is `(bus_end - bus_start + 1) << 20`.
    pub ecam_base: u64,
    /// First bus number.
    pub bus_start: u8,
    /// Last bus number.
    pub bus_end: u8,
    /// The 32-bit non-prefetchable memory aperture.
    pub mem32: Region,
    /// The 64-bit prefetchable memory aperture.
    pub mem64: Region,
    /// SPI INTIDs of INTA..INTD at the host bridge, before the swizzle.
    pub intx_spis: [u32; 4],
}

impl PciLayout {
    /// The ECAM window.
    pub fn ecam(&self) -> Region {
        Region {
            base: Ipa(self.ecam_base),
            size: (u64::from(self.bus_end.saturating_sub(self.bus_start)) + 1) << 20,
        }
    }
}

/// A guest's address map and interrupts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestLayout {
    /// Guest RAM.
    pub ram: Region,
    /// MPIDR affinity of each vCPU, in vCPU order.
    pub mpidrs: Vec<u64>,
    /// GICv3 distributor base (64 KiB).
    pub gicd_base: u64,
    /// GICv3 redistributor base (128 KiB per vCPU).
    pub gicr_base: u64,
    /// Number of SPIs the distributor implements (a multiple of 32, up to 988).
    pub num_spis: u32,
    /// The vGIC maintenance interrupt (a PPI INTID).
    pub maintenance_ppi: u32,
    /// Timer PPI INTIDs: secure physical, non-secure physical, virtual, hypervisor.
    pub timer_ppis: [u32; 4],
    /// PL011 console base (4 KiB).
    pub uart_base: u64,
    /// PL011 console SPI INTID.
    pub uart_spi: u32,
    /// SPIs reserved for message-based interrupts (GICv3 MBIs): the
    /// distributor's GICD_SETSPI_NSR is the MSI doorbell, the data the INTID.
    /// Rendered as `msi-controller` + `mbi-ranges` on the GIC node and
    /// `msi-parent` on the PCI node; no other SPI may lie inside it.
    pub mbi: Option<MbiRange>,
    /// How the guest calls PSCI (the hypervisor traps both).
    pub psci_method: PsciMethod,
    /// The synthetic PCI segment, if the guest has one.
    pub pci: Option<PciLayout>,
}

/// The PSCI conduit the guest DT names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PsciMethod {
    /// `hvc` (the default: the hypervisor is the guest's firmware).
    #[default]
    Hvc,
    /// `smc` (trapped by HCR_EL2.TSC), as on hardware with EL3 firmware.
    Smc,
}

/// The per-boot part of the DT: command line and initrd.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chosen {
    /// Kernel command line.
    pub bootargs: String,
    /// Initrd location in guest memory.
    pub initrd: Option<Region>,
}

/// Size of the GICv3 distributor frame.
pub const GICD_SIZE: u64 = 0x1_0000;
/// Size of one redistributor (RD_base + SGI_base).
pub const GICR_STRIDE: u64 = 0x2_0000;
/// Size of the PL011 register page.
pub const UART_SIZE: u64 = 0x1000;
/// Smallest guest RAM we boot Linux in.
pub const MIN_RAM: u64 = 64 << 20;

/// What is wrong with a layout; each names the offending item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayoutError {
    /// No vCPUs.
    NoCpus,
    /// RAM smaller than [`MIN_RAM`].
    RamTooSmall(u64),
    /// A region is not aligned as it must be.
    Misaligned {
        /// Which region.
        item: &'static str,
        /// Its base.
        base: u64,
    },
    /// Two regions overlap.
    Overlap {
        /// The first region.
        a: &'static str,
        /// The second region.
        b: &'static str,
    },
    /// A region goes past the 40-bit IPA space or wraps.
    OutOfRange(&'static str),
    /// An interrupt number is not of the kind or range it must be.
    BadInterrupt {
        /// Which interrupt.
        item: &'static str,
        /// The INTID given.
        intid: u32,
    },
    /// The SPI count is not a multiple of 32 in 32..=988.
    BadSpiCount(u32),
    /// The PCI bus range is empty (end below start).
    BadBusRange,
    /// The 32-bit PCI aperture does not lie below 4 GiB.
    Mem32Above4G,
}

/// Rendering failed inside the DT writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderError {
    /// The layout is invalid.
    Layout(LayoutError),
    /// The FDT writer refused something.
    Fdt(String),
}

impl From<vm_fdt::Error> for RenderError {
    fn from(e: vm_fdt::Error) -> Self {
        RenderError::Fdt(alloc::format!("{e:?}"))
    }
}

/// The IPA space the default layout fits in.
pub const IPA_BITS: u32 = 40;

const GIC_PHANDLE: u32 = 1;
const CLOCK_PHANDLE: u32 = 2;
const IRQ_TYPE_LEVEL_HIGH: u32 = 4;
const GIC_SPI: u32 = 0;
const GIC_PPI: u32 = 1;

impl GuestLayout {
    /// A default layout in the style of QEMU's virt machine, with guest RAM at
    /// 2 GiB (deliberately not the host's RAM address) and a synthetic segment.
    pub fn qemu_virt_default(num_vcpus: usize, ram_size: u64) -> Self {
        GuestLayout {
            ram: Region {
                base: Ipa(0x8000_0000),
                size: ram_size,
            },
            mpidrs: (0..num_vcpus as u64)
                .map(|i| ((i / 16) << 8) | (i % 16))
                .collect(),
            gicd_base: 0x0800_0000,
            gicr_base: 0x080a_0000,
            num_spis: 256,
            maintenance_ppi: 25,
            timer_ppis: [29, 30, 27, 26],
            uart_base: 0x0900_0000,
            uart_spi: 33,
            // 64 SPIs well above the UART (33) and INTx (35..=38).
            mbi: Some(MbiRange {
                first: 64,
                count: 64,
            }),
            psci_method: PsciMethod::Hvc,
            pci: Some(PciLayout {
                segment: 1,
                ecam_base: 0x3000_0000,
                bus_start: 0,
                bus_end: 0x0f,
                mem32: Region {
                    base: Ipa(0x1000_0000),
                    size: 0x2000_0000,
                },
                mem64: Region {
                    base: Ipa(0x80_0000_0000),
                    size: 0x40_0000_0000,
                },
                intx_spis: [35, 36, 37, 38],
            }),
        }
    }

    /// Makes the layout fit an IPA space of `ipa_bits` (what the CPU's physical
    /// address size allows stage 2): the 64-bit PCI aperture, the only item the
    /// default layout puts above 4 GiB, moves to the upper half of the space
    /// (a quarter of it in size). Anything else beyond it is an error naming it.
    pub fn fit_ipa(&mut self, ipa_bits: u32) -> Result<(), LayoutError> {
        let limit = 1u64.checked_shl(ipa_bits).unwrap_or(u64::MAX);
        let beyond = |r: &Region| r.end().is_none_or(|e| e > limit);
        if let Some(p) = self.pci.as_mut() {
            if beyond(&p.mem64) {
                if ipa_bits < 34 {
                    return Err(LayoutError::OutOfRange("pci mem64"));
                }
                p.mem64 = Region {
                    base: Ipa(1 << (ipa_bits - 1)),
                    size: 1 << (ipa_bits - 2),
                };
            }
            if beyond(&p.ecam()) || beyond(&p.mem32) {
                return Err(LayoutError::OutOfRange("pci ecam/mem32"));
            }
        }
        if beyond(&self.ram) {
            return Err(LayoutError::OutOfRange("ram"));
        }
        self.validate()
    }

    /// The guest-physical address of the MSI doorbell, GICD_SETSPI_NSR
    /// (IHI 0069 12.9.30), when the guest has an MBI range.
    pub fn msi_doorbell(&self) -> Option<u64> {
        self.mbi
            .map(|_| self.gicd_base + arch_emu::vgic::GICD_SETSPI_NSR)
    }

    /// The redistributor region (one frame pair per vCPU).
    pub fn gicr(&self) -> Region {
        Region {
            base: Ipa(self.gicr_base),
            size: GICR_STRIDE * self.mpidrs.len() as u64,
        }
    }

    /// Checks the layout; the error names the offending item.
    pub fn validate(&self) -> Result<(), LayoutError> {
        if self.mpidrs.is_empty() {
            return Err(LayoutError::NoCpus);
        }
        if self.ram.size < MIN_RAM {
            return Err(LayoutError::RamTooSmall(self.ram.size));
        }
        if self.num_spis == 0 || self.num_spis % 32 != 0 || self.num_spis > 988 {
            return Err(LayoutError::BadSpiCount(self.num_spis));
        }
        let mut regions: Vec<(&'static str, Region, u64)> = vec![
            ("ram", self.ram, 1 << 21),
            (
                "gicd",
                Region {
                    base: Ipa(self.gicd_base),
                    size: GICD_SIZE,
                },
                GICD_SIZE,
            ),
            ("gicr", self.gicr(), GICR_STRIDE),
            (
                "uart",
                Region {
                    base: Ipa(self.uart_base),
                    size: UART_SIZE,
                },
                UART_SIZE,
            ),
        ];
        if let Some(p) = &self.pci {
            if p.bus_end < p.bus_start {
                return Err(LayoutError::BadBusRange);
            }
            if p.mem32.end().is_none_or(|e| e > 1 << 32) {
                return Err(LayoutError::Mem32Above4G);
            }
            regions.push(("pci-ecam", p.ecam(), 1 << 20));
            regions.push(("pci-mem32", p.mem32, 1 << 20));
            regions.push(("pci-mem64", p.mem64, 1 << 20));
        }
        for &(name, r, align) in &regions {
            if r.base.0 % align != 0 || r.size % 4096 != 0 {
                return Err(LayoutError::Misaligned {
                    item: name,
                    base: r.base.0,
                });
            }
            if r.end().is_none_or(|e| e > 1 << IPA_BITS) {
                return Err(LayoutError::OutOfRange(name));
            }
        }
        for (i, (a, ra, _)) in regions.iter().enumerate() {
            for (b, rb, _) in &regions[i + 1..] {
                if ra.overlaps(rb) {
                    return Err(LayoutError::Overlap { a, b });
                }
            }
        }
        let spi_max = 32 + self.num_spis;
        let mut spis = vec![("uart", self.uart_spi)];
        if let Some(p) = &self.pci {
            for (n, s) in ["pci-inta", "pci-intb", "pci-intc", "pci-intd"]
                .into_iter()
                .zip(p.intx_spis)
            {
                spis.push((n, s));
            }
        }
        for (i, &(item, intid)) in spis.iter().enumerate() {
            if !(32..spi_max).contains(&intid) || spis[..i].iter().any(|&(_, o)| o == intid) {
                return Err(LayoutError::BadInterrupt { item, intid });
            }
        }
        if let Some(m) = self.mbi {
            if m.count == 0
                || m.first < 32
                || m.first.checked_add(m.count).is_none_or(|e| e > spi_max)
            {
                return Err(LayoutError::BadInterrupt {
                    item: "mbi-ranges",
                    intid: m.first,
                });
            }
            if let Some(&(item, intid)) = spis.iter().find(|&&(_, s)| m.contains(s)) {
                return Err(LayoutError::BadInterrupt { item, intid });
            }
        }
        let ppis = [
            ("maintenance", self.maintenance_ppi),
            ("timer-secure", self.timer_ppis[0]),
            ("timer-phys", self.timer_ppis[1]),
            ("timer-virt", self.timer_ppis[2]),
            ("timer-hyp", self.timer_ppis[3]),
        ];
        for (i, &(item, intid)) in ppis.iter().enumerate() {
            if !(16..32).contains(&intid) || ppis[..i].iter().any(|&(_, o)| o == intid) {
                return Err(LayoutError::BadInterrupt { item, intid });
            }
        }
        Ok(())
    }

    /// Renders the guest DTB.
    pub fn render(&self, chosen: &Chosen) -> Result<Vec<u8>, RenderError> {
        self.validate().map_err(RenderError::Layout)?;
        let mut w = FdtWriter::new()?;
        let root = w.begin_node("")?;
        w.property_string("compatible", "linux,dummy-virt")?;
        w.property_u32("#address-cells", 2)?;
        w.property_u32("#size-cells", 2)?;
        w.property_u32("interrupt-parent", GIC_PHANDLE)?;

        let c = w.begin_node("chosen")?;
        w.property_string("bootargs", &chosen.bootargs)?;
        w.property_string(
            "stdout-path",
            &alloc::format!("/pl011@{:x}", self.uart_base),
        )?;
        if let Some(i) = chosen.initrd {
            w.property_u64("linux,initrd-start", i.base.0)?;
            w.property_u64("linux,initrd-end", i.base.0 + i.size)?;
        }
        w.end_node(c)?;

        let m = w.begin_node(&alloc::format!("memory@{:x}", self.ram.base))?;
        w.property_string("device_type", "memory")?;
        w.property_array_u64("reg", &[self.ram.base.0, self.ram.size])?;
        w.end_node(m)?;

        let cpus = w.begin_node("cpus")?;
        w.property_u32("#address-cells", 1)?;
        w.property_u32("#size-cells", 0)?;
        for &mpidr in &self.mpidrs {
            let aff = (mpidr & 0xff_ffff) as u32;
            let cpu = w.begin_node(&alloc::format!("cpu@{aff:x}"))?;
            w.property_string("device_type", "cpu")?;
            w.property_string("compatible", "arm,armv8")?;
            w.property_string("enable-method", "psci")?;
            w.property_u32("reg", aff)?;
            w.end_node(cpu)?;
        }
        w.end_node(cpus)?;

        let psci = w.begin_node("psci")?;
        w.property_string_list(
            "compatible",
            vec!["arm,psci-1.0".to_string(), "arm,psci-0.2".to_string()],
        )?;
        w.property_string(
            "method",
            match self.psci_method {
                PsciMethod::Hvc => "hvc",
                PsciMethod::Smc => "smc",
            },
        )?;
        w.end_node(psci)?;

        let gicr = self.gicr();
        let intc = w.begin_node(&alloc::format!("intc@{:x}", self.gicd_base))?;
        w.property_string("compatible", "arm,gic-v3")?;
        w.property_u32("#interrupt-cells", 3)?;
        w.property_null("interrupt-controller")?;
        w.property_u32("#redistributor-regions", 1)?;
        // Two address cells: the interrupt-map entries of the PCI node carry a
        // two-cell parent unit address, as with QEMU's virt GIC node.
        w.property_u32("#address-cells", 2)?;
        w.property_u32("#size-cells", 2)?;
        w.property_null("ranges")?;
        w.property_array_u64("reg", &[self.gicd_base, GICD_SIZE, gicr.base.0, gicr.size])?;
        w.property_array_u32(
            "interrupts",
            &[GIC_PPI, self.maintenance_ppi - 16, IRQ_TYPE_LEVEL_HIGH],
        )?;
        if let Some(m) = self.mbi {
            // Linux's irq-gic-v3-mbi: INTIDs, not SPI numbers.
            w.property_null("msi-controller")?;
            w.property_array_u32("mbi-ranges", &[m.first, m.count])?;
        }
        w.property_u32("phandle", GIC_PHANDLE)?;
        w.end_node(intc)?;

        let timer = w.begin_node("timer")?;
        w.property_string("compatible", "arm,armv8-timer")?;
        let cells: Vec<u32> = self
            .timer_ppis
            .iter()
            .flat_map(|&p| [GIC_PPI, p - 16, IRQ_TYPE_LEVEL_HIGH])
            .collect();
        w.property_array_u32("interrupts", &cells)?;
        w.property_null("always-on")?;
        w.end_node(timer)?;

        let clk = w.begin_node("apb-pclk")?;
        w.property_string("compatible", "fixed-clock")?;
        w.property_u32("#clock-cells", 0)?;
        w.property_u32("clock-frequency", 24_000_000)?;
        w.property_string("clock-output-names", "clk24mhz")?;
        w.property_u32("phandle", CLOCK_PHANDLE)?;
        w.end_node(clk)?;

        let uart = w.begin_node(&alloc::format!("pl011@{:x}", self.uart_base))?;
        w.property_string_list(
            "compatible",
            vec!["arm,pl011".to_string(), "arm,primecell".to_string()],
        )?;
        w.property_array_u64("reg", &[self.uart_base, UART_SIZE])?;
        w.property_array_u32(
            "interrupts",
            &[GIC_SPI, self.uart_spi - 32, IRQ_TYPE_LEVEL_HIGH],
        )?;
        w.property_array_u32("clocks", &[CLOCK_PHANDLE, CLOCK_PHANDLE])?;
        w.property_string_list(
            "clock-names",
            vec!["uartclk".to_string(), "apb_pclk".to_string()],
        )?;
        w.end_node(uart)?;

        if let Some(p) = &self.pci {
            self.render_pci(&mut w, p)?;
        }

        w.end_node(root)?;
        Ok(w.finish()?)
    }

    fn render_pci(&self, w: &mut FdtWriter, p: &PciLayout) -> Result<(), RenderError> {
        let ecam = p.ecam();
        let n = w.begin_node(&alloc::format!("pcie@{:x}", ecam.base))?;
        w.property_string("compatible", "pci-host-ecam-generic")?;
        w.property_string("device_type", "pci")?;
        w.property_u32("#address-cells", 3)?;
        w.property_u32("#size-cells", 2)?;
        w.property_u32("#interrupt-cells", 1)?;
        w.property_array_u64("reg", &[ecam.base.0, ecam.size])?;
        w.property_array_u32("bus-range", &[p.bus_start.into(), p.bus_end.into()])?;
        w.property_u32("linux,pci-domain", p.segment.into())?;
        w.property_null("dma-coherent")?;
        // ranges: no I/O range, we give no I/O window. Space codes (IEEE 1275 PCI binding):
        // 0x02000000 = 32-bit memory, 0x43000000 = prefetchable 64-bit memory.
        let hi = |v: u64| (v >> 32) as u32;
        let lo = |v: u64| v as u32;
        w.property_array_u32(
            "ranges",
            &[
                0x0200_0000,
                hi(p.mem32.base.0),
                lo(p.mem32.base.0),
                hi(p.mem32.base.0),
                lo(p.mem32.base.0),
                hi(p.mem32.size),
                lo(p.mem32.size),
                0x4300_0000,
                hi(p.mem64.base.0),
                lo(p.mem64.base.0),
                hi(p.mem64.base.0),
                lo(p.mem64.base.0),
                hi(p.mem64.size),
                lo(p.mem64.size),
            ],
        )?;
        // INTx swizzle for devices 0..3 of bus 0: pin' = (pin - 1 + dev) % 4, as QEMU virt writes it.
        let mut map = Vec::with_capacity(16 * 10);
        for dev in 0..4u32 {
            for pin in 1..=4u32 {
                let spi = p.intx_spis[((pin - 1 + dev) % 4) as usize];
                map.extend_from_slice(&[
                    dev << 11,
                    0,
                    0,
                    pin,
                    GIC_PHANDLE,
                    0,
                    0,
                    GIC_SPI,
                    spi - 32,
                    IRQ_TYPE_LEVEL_HIGH,
                ]);
            }
        }
        w.property_array_u32("interrupt-map", &map)?;
        w.property_array_u32("interrupt-map-mask", &[0x1800, 0, 0, 7])?;
        if self.mbi.is_some() {
            w.property_u32("msi-parent", GIC_PHANDLE)?;
        }
        w.end_node(n)?;
        Ok(())
    }
}

pub mod boot;

#[cfg(test)]
mod tests;

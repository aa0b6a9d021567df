//! What the probe needs of its DT (the one the hypervisor renders, or QEMU's).

use fdt::Fdt;

/// Most CPUs recorded.
pub const MAX_CPUS: usize = crate::entry::MAX_CPUS;

/// The PCI host bridge (`pci-host-ecam-generic`).
#[derive(Debug, Clone, Copy)]
pub struct Pci {
    /// ECAM base (the first bus of `bus-range`).
    pub ecam: usize,
    /// `bus-range`.
    pub buses: (u8, u8),
    /// The 32-bit memory aperture (base, size), CPU address = PCI address.
    pub mem32: (u64, u64),
    /// The 64-bit memory aperture, if any.
    pub mem64: Option<(u64, u64)>,
    /// `linux,pci-domain`.
    pub segment: u32,
}

/// The platform.
pub struct Platform {
    #[allow(dead_code, reason = "for check groups that read the DT again")]
    pub dtb: usize,
    pub uart: usize,
    pub gicd: usize,
    pub gicr: usize,
    /// RAM (base, size): the first `memory` node's first range.
    pub ram: (u64, u64),
    /// MPIDRs of the CPUs, in DT order.
    pub cpus: [u64; MAX_CPUS],
    pub ncpus: usize,
    /// PSCI through HVC (else SMC).
    pub psci_hvc: bool,
    pub pci: Option<Pci>,
    bootargs: &'static str,
}

fn be(b: &[u8], at: usize, cells: usize) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..cells {
        let w = b.get(at + 4 * i..at + 4 * i + 4)?;
        v = (v << 32) | u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    Some(v)
}

impl Platform {
    /// The CPUs' MPIDRs.
    pub fn cpus(&self) -> &[u64] {
        &self.cpus[..self.ncpus]
    }

    /// Reads the DTB at `dtb`; `None` when it is not one or lacks a UART.
    pub fn parse(dtb: usize) -> Option<Self> {
        // SAFETY: the boot protocol passes the DTB's address in x0; its header
        // says how long it is, and nothing writes it.
        let fdt = unsafe { Fdt::from_ptr(dtb as *const u8) }.ok()?;
        let bytes: &'static [u8] =
            // SAFETY: as above, `total_size` bytes from `dtb`.
            unsafe { core::slice::from_raw_parts(dtb as *const u8, fdt.total_size()) };
        let fdt = Fdt::new(bytes).ok()?;
        let uart = fdt
            .find_compatible(&["arm,pl011"])?
            .reg()?
            .next()?
            .starting_address as usize;
        let gic = fdt.find_compatible(&["arm,gic-v3"])?;
        let mut gregs = gic.reg()?;
        let gicd = gregs.next()?.starting_address as usize;
        let gicr = gregs.next()?.starting_address as usize;
        let mem = fdt.memory().regions().next()?;
        let ram = (mem.starting_address as u64, mem.size.unwrap_or(0) as u64);
        let mut cpus = [0u64; MAX_CPUS];
        let mut ncpus = 0;
        for c in fdt.cpus() {
            if let Some(slot) = cpus.get_mut(ncpus) {
                *slot = c.ids().first() as u64;
                ncpus += 1;
            }
        }
        let psci_hvc = fdt
            .find_compatible(&["arm,psci-1.0", "arm,psci-0.2", "arm,psci"])
            .and_then(|n| n.property("method"))
            .and_then(|p| p.as_str())
            .is_some_and(|m| m == "hvc");
        let pci = fdt
            .find_compatible(&["pci-host-ecam-generic"])
            .and_then(|n| {
                let ecam = n.reg()?.next()?.starting_address as usize;
                let br = n.property("bus-range")?.value;
                let buses = (be(br, 0, 1)? as u8, be(br, 4, 1)? as u8);
                let segment = n
                    .property("linux,pci-domain")
                    .and_then(|p| be(p.value, 0, 1))
                    .unwrap_or(0) as u32;
                // ranges: <flags(1) pci-addr(2)> <cpu-addr(2)> <size(2)>.
                let r = n.property("ranges")?.value;
                let (mut mem32, mut mem64) = (None, None);
                for e in r.chunks_exact(28) {
                    let space = (be(e, 0, 1)? >> 24) & 3;
                    let cpu = be(e, 12, 2)?;
                    let size = be(e, 20, 2)?;
                    match space {
                        2 => mem32 = Some((cpu, size)),
                        3 => mem64 = Some((cpu, size)),
                        _ => {}
                    }
                }
                Some(Pci {
                    ecam,
                    buses,
                    mem32: mem32?,
                    mem64,
                    segment,
                })
            });
        let bootargs = fdt
            .find_node("/chosen")
            .and_then(|c| c.property("bootargs"))
            .and_then(|p| p.as_str())
            .unwrap_or("");
        Some(Platform {
            dtb,
            uart,
            gicd,
            gicr,
            ram,
            cpus,
            ncpus,
            psci_hvc,
            pci,
            bootargs,
        })
    }

    /// The value of `key=value` on the command line.
    pub fn bootargs_value(&self, key: &str) -> Option<&'static str> {
        self.bootargs.split_whitespace().find_map(|a| {
            let (k, v) = a.split_once('=')?;
            (k == key).then_some(v)
        })
    }
}

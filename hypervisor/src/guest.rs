//! Building the guest from the host platform: RAM, kernel, initrd and DTB
//! placement, stage-2 and the emulated devices.

use alloc::boxed::Box;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use arch_emu::pl011::Pl011;
use arch_emu::vgic::Vgic;
use guest_dt::{Chosen, GuestLayout, Region};

use crate::entry::MAX_CPUS;
use crate::mmu::{Ipa, Pa, S2Attr, Stage2};
use crate::sysreg::clean_dcache_range;
use crate::vm::{Power, Vm};

const MIB2: u64 = 2 << 20;

/// What the hypervisor needs of the host platform.
pub struct HostPlatform {
    /// RAM regions (base, size).
    pub memory: Vec<(u64, u64)>,
    /// CPU MPIDR affinities, the boot CPU first.
    pub cpus: Vec<u64>,
    /// GICD base.
    pub gicd: u64,
    /// First GICR region (base, size).
    pub gicr: Vec<(u64, u64)>,
    /// Console PL011 base.
    pub uart: u64,
    /// Its interrupt's INTID.
    pub uart_intid: u32,
    /// The physical virtual-timer PPI.
    pub vtimer_intid: u32,
    /// The physical EL1 physical-timer PPI.
    pub ptimer_intid: u32,
    /// The GIC maintenance interrupt.
    pub maintenance_intid: u32,
    /// The guest kernel module (base, size) and its bootargs.
    pub kernel: (u64, u64, String),
    /// The initrd module (base, size).
    pub ramdisk: Option<(u64, u64)>,
    /// Where the host DTB is (base, size).
    pub dtb: (u64, u64),
}

impl HostPlatform {
    /// The boot view of the parsed host platform: the boot CPU first, the guest
    /// kernel required. The error names the node at fault.
    pub fn new(p: &platform::Platform, dtb: usize, dtb_size: usize) -> Result<Self, String> {
        let me = crate::sysreg::mpidr_affinity();
        let mut cpus: Vec<u64> = p.cpus.iter().map(|c| c.mpidr).collect();
        if !cpus.contains(&me) {
            return Err(alloc::format!(
                "/cpus: no CPU with this CPU's MPIDR {me:#x}"
            ));
        }
        cpus.retain(|&c| c != me);
        cpus.insert(0, me);
        let k = p
            .kernel()
            .ok_or("/chosen: no `multiboot,kernel` module (the guest kernel)")?;
        if p.gic.gicr.is_empty() {
            return Err("GICv3: no redistributor region".into());
        }
        Ok(HostPlatform {
            memory: p.memory.iter().map(|r| (r.base, r.size)).collect(),
            cpus,
            gicd: p.gic.gicd.base,
            gicr: p.gic.gicr.iter().map(|r| (r.base, r.size)).collect(),
            uart: p.uart.regs.base,
            uart_intid: p.uart.intid,
            vtimer_intid: p.timer.virt,
            ptimer_intid: p.timer.phys,
            maintenance_intid: p
                .gic
                .maintenance_intid
                .unwrap_or(crate::exits::DEFAULT_MAINTENANCE_INTID),
            kernel: (
                k.region.base,
                k.region.size,
                k.bootargs.clone().unwrap_or_default(),
            ),
            ramdisk: p.ramdisk().map(|r| (r.region.base, r.region.size)),
            dtb: (dtb as u64, dtb_size as u64),
        })
    }

    /// Prints the host platform on `[hv]` lines.
    pub fn report(&self) {
        for (b, s) in &self.memory {
            log::info!("memory {b:#x} size {s:#x}");
        }
        log::info!("cpus {}", self.cpus.len());
        for (b, _) in &self.gicr {
            log::info!("gicv3 gicd {:#x} gicr {b:#x}", self.gicd);
        }
        log::info!("pl011 {:#x} intid {}", self.uart, self.uart_intid);
        log::info!(
            "psci method {}",
            if crate::PSCI_HVC.load(core::sync::atomic::Ordering::Relaxed) {
                "hvc"
            } else {
                "smc"
            }
        );
        log::info!(
            "module multiboot,kernel at {:#x} size {:#x}",
            self.kernel.0,
            self.kernel.1
        );
        if let Some((a, s)) = self.ramdisk {
            log::info!("module multiboot,ramdisk at {a:#x} size {s:#x}");
        }
    }
}

extern "C" {
    static __image_start: u8;
    static __image_end: u8;
}

fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

/// Host memory in use at boot: the hypervisor, the host DTB, the modules.
fn used_ranges(host: &HostPlatform) -> Vec<(u64, u64)> {
    let (img_s, img_e) = (
        core::ptr::addr_of!(__image_start) as u64,
        core::ptr::addr_of!(__image_end) as u64,
    );
    let mut used: Vec<(u64, u64)> = vec![(img_s, img_e), (host.dtb.0, host.dtb.0 + host.dtb.1)];
    used.push((host.kernel.0, host.kernel.0 + host.kernel.1));
    if let Some((a, s)) = host.ramdisk {
        used.push((a, a + s));
    }
    used.sort_unstable();
    used
}

/// Whether the pages spanning `[base, base + len)` hold nothing but that range
/// (so they can be given to the guest without exposing anything else).
fn pages_are_private(host: &HostPlatform, base: u64, len: u64) -> bool {
    let (ps, pe) = (base & !0xfff, (base + len).div_ceil(4096) * 4096);
    used_ranges(host)
        .iter()
        .filter(|&&(s, e)| (s, e) != (base, base + len))
        .all(|&(s, e)| e <= ps || s >= pe)
}

/// The largest 2 MiB-aligned stretch of host RAM nobody uses.
fn free_ram(host: &HostPlatform) -> Option<(u64, u64)> {
    let used = used_ranges(host);
    let mut best: Option<(u64, u64)> = None;
    let mut consider = |gs: u64, ge: u64| {
        let (a, b) = (align_up(gs, MIB2), ge & !(MIB2 - 1));
        if b > a && best.is_none_or(|(_, s)| b - a > s) {
            best = Some((a, b - a));
        }
    };
    for &(mb, ms) in &host.memory {
        let me = mb.saturating_add(ms);
        let mut cur = mb;
        for &(us, ue) in &used {
            if ue <= cur || us >= me {
                continue;
            }
            consider(cur, us);
            cur = cur.max(ue);
        }
        consider(cur, me);
    }
    best
}

/// Builds the guest; returns it with its entry point and DTB IPA.
pub fn build(
    host: &HostPlatform,
    opts: &GuestOptions,
    assigned: Vec<crate::assign::Assigned>,
) -> Result<(Vm, u64, u64), String> {
    let GuestOptions {
        semihosting,
        psci,
        guest_mem,
        disk,
        root_ports,
    } = *opts;
    let n = host.cpus.len().min(MAX_CPUS);
    if host.cpus.len() > MAX_CPUS {
        log::warn!(
            "{} CPUs: only the first {MAX_CPUS} run vCPUs",
            host.cpus.len()
        );
    }
    // Guest RAM: the largest free stretch of host RAM (less a RAM disk's
    // share), plus a page-aligned initrd module mapped where the guest expects
    // it (its pages become guest RAM, no copy). The rest of host RAM is the
    // hypervisor's: its image (heap, stacks), the host DTB, the kernel module.
    let (ram_pa, free) = free_ram(host).ok_or("no free RAM for the guest")?;
    let disk_share = match disk {
        Some(DiskBackend::Ram(size)) => align_up(size, MIB2),
        _ => 0,
    };
    let carve_max = free.checked_sub(disk_share).ok_or_else(|| {
        alloc::format!("virtio-blk=ram:{disk_share:#x}: only {free:#x} bytes of host RAM are free")
    })?;
    let initrd_pages = match host.ramdisk {
        Some((ia, is)) if ia % 4096 == 0 && pages_are_private(host, ia, is) => {
            is.div_ceil(4096) * 4096
        }
        _ => 0,
    };
    let ram_size = match guest_mem {
        None => (carve_max + initrd_pages - initrd_pages % MIB2) & !(MIB2 - 1),
        Some(m) if (m & !(MIB2 - 1)).saturating_sub(initrd_pages) > carve_max => {
            return Err(alloc::format!(
                "guest-mem={m:#x} but only {carve_max:#x} bytes of host RAM are free{}",
                if initrd_pages > 0 {
                    alloc::format!(" (and the initrd's {initrd_pages:#x} are mapped in place)")
                } else {
                    String::new()
                }
            ))
        }
        Some(m) => m & !(MIB2 - 1),
    };
    let mut layout = GuestLayout::qemu_virt_default(n, ram_size);
    layout.psci_method = psci;
    if let Some(p) = layout.pci.as_mut() {
        // Every root port needs a secondary bus of its own (and firmware
        // numbers them one after the other): widen the bus range, and with it
        // the ECAM window (1 MiB a bus), when `root-ports=` asks for more
        // ports than the default range has buses for.
        let buses = u16::from(p.bus_end - p.bus_start) + 1;
        if root_ports as u16 + 1 > buses {
            p.bus_end = p.bus_start.saturating_add(ROOT_PORTS_BUS_SPAN - 1);
        }
    }
    layout
        .validate()
        .map_err(|e| alloc::format!("guest layout: {e:?}"))?;
    let mut stage2 = Stage2::new().map_err(|e| e.to_string())?;
    let before = layout.pci.as_ref().map(|p| p.mem64);
    layout.fit_ipa(stage2.ipa_bits()).map_err(|e| {
        alloc::format!(
            "guest layout does not fit the {}-bit IPA space this CPU offers: {e:?}",
            stage2.ipa_bits()
        )
    })?;
    if let (Some(b), Some(p)) = (before, layout.pci.as_ref()) {
        if b != p.mem64 {
            log::info!(
                "64-bit PCI aperture moved to {:#x}+{:#x} to fit the IPA space",
                p.mem64.base,
                p.mem64.size
            );
        }
    }

    // The kernel: where its Image header says, else RAM + 0x80000 (QEMU -kernel's rule).
    let (kaddr, klen, ref bootargs) = host.kernel;
    // SAFETY: the module lies in host RAM (identity-mapped) as the loader placed it.
    let kimg = unsafe { core::slice::from_raw_parts(kaddr as *const u8, klen as usize) };
    let mut initrd_region = None;
    // The DTB's size depends on the initrd's placement only through two 64-bit
    // values: render once with a placeholder to size it.
    let probe = layout
        .render(&Chosen {
            bootargs: bootargs.clone(),
            initrd: host.ramdisk.map(|(_, s)| Region::new(Ipa(0), s)),
        })
        .map_err(|e| alloc::format!("guest DT: {e:?}"))?;
    let place = guest_dt::boot::place(
        ram_size,
        kimg.get(..64).unwrap_or(kimg),
        klen,
        host.ramdisk.map(|(_, s)| s),
        probe.len() as u64,
    )
    .map_err(|e| e.to_string())?;
    // Guest RAM: the carve-out, except that a page-aligned initrd module is mapped
    // where the guest expects it instead of being copied (it becomes guest RAM
    // and the carve-out shrinks by as much).
    let s2 = |e: crate::mmu::MmuError| e.to_string();
    let in_place = match (host.ramdisk, place.initrd) {
        (Some((ia, _)), Some(off)) if initrd_pages > 0 && initrd_pages < ram_size - off => {
            Some((ia, off, initrd_pages))
        }
        _ => None,
    };
    // RAM after an in-place initrd starts `pad` bytes further into the
    // carve-out, so that IPA and PA stay congruent modulo 2 MiB there and
    // stage 2 (the CPU's and the SMMU's) maps it with 2 MiB blocks, not
    // 4 KiB pages (whose tables would grow with guest RAM: 4 MiB per GiB).
    let pad = in_place.map_or(0, |(_, _, len)| len % MIB2);
    // Bytes of the carve-out in use, and where a guest RAM offset lies in host PA.
    let carve_len = ram_size - in_place.map_or(0, |(_, _, len)| len) + pad;
    if carve_len > carve_max {
        return Err(alloc::format!(
            "guest RAM of {ram_size:#x} bytes needs {carve_len:#x} of host RAM, only {carve_max:#x} are free"
        ));
    }
    let pa_of = |off: u64| match in_place {
        Some((ia, ioff, len)) if off >= ioff && off < ioff + len => ia + (off - ioff),
        Some((_, ioff, len)) if off >= ioff + len => ram_pa + off - len + pad,
        _ => ram_pa + off,
    };
    // The runs of guest RAM as stage 2 maps them, for the emulated devices.
    let base = layout.ram.base;
    let run = |off: u64, size: u64, pa: u64| (Region::new(Ipa(base.0 + off), size), Pa(pa));
    let guest_ram = crate::guestmem::GuestRam::new(match in_place {
        Some((ia, off, len)) => vec![
            run(0, off, ram_pa),
            run(off, len, ia),
            run(off + len, ram_size - off - len, ram_pa + off + pad),
        ],
        None => vec![run(0, ram_size, ram_pa)],
    });
    match in_place {
        Some((ia, off, len)) => {
            let ram = |off: u64, size: u64| Region::new(Ipa(layout.ram.base.0 + off), size);
            stage2
                .map(ram(0, off), Pa(ram_pa), S2Attr::Normal)
                .map_err(s2)?;
            stage2
                .map(ram(off, len), Pa(ia), S2Attr::Normal)
                .map_err(s2)?;
            let rest = off + len;
            stage2
                .map(
                    ram(rest, ram_size - rest),
                    Pa(ram_pa + off + pad),
                    S2Attr::Normal,
                )
                .map_err(s2)?;
        }
        None => stage2
            .map(
                Region::new(layout.ram.base, ram_size),
                Pa(ram_pa),
                S2Attr::Normal,
            )
            .map_err(s2)?,
    }
    log::info!(
        "guest RAM IPA {:#x} size {:#x} at PA {ram_pa:#x}; IPA {} bits",
        layout.ram.base,
        ram_size,
        stage2.ipa_bits()
    );
    copy_in(pa_of(place.kernel), kimg);
    let entry = layout.ram.base.0 + place.kernel;
    if let (Some((ia, is)), Some(off)) = (host.ramdisk, place.initrd) {
        if in_place.is_some() {
            log::info!(
                "initrd mapped in place: PA {ia:#x} at IPA {:#x}",
                layout.ram.base.0 + off
            );
        } else {
            // SAFETY: as for the kernel.
            let img = unsafe { core::slice::from_raw_parts(ia as *const u8, is as usize) };
            copy_in(pa_of(off), img);
        }
        initrd_region = Some(Region::new(Ipa(layout.ram.base.0 + off), is));
    }
    let initrd = initrd_region;
    let dtb_off = place.dtb;
    let dtb = layout
        .render(&Chosen {
            bootargs: bootargs.clone(),
            initrd,
        })
        .map_err(|e| alloc::format!("guest DT: {e:?}"))?;
    if dtb.len() as u64 > guest_dt::boot::MAX_DTB {
        return Err(alloc::format!(
            "guest DTB is {:#x} bytes, more than 2 MiB",
            dtb.len()
        ));
    }
    copy_in(pa_of(dtb_off), &dtb);
    let dtb_ipa = layout.ram.base.0 + dtb_off;
    log::info!("guest kernel at IPA {entry:#x}, bootargs \"{bootargs}\"");

    let mut vgic = Vgic::new(&layout.mpidrs, layout.num_spis);
    if let Some(m) = layout.mbi {
        // Validated with the layout: inside the SPIs, clear of every other one.
        if !vgic.set_mbi_range(m) {
            return Err(alloc::format!("guest MBI range {m:?} refused by the vGIC"));
        }
        log::info!(
            "guest MSIs: SPIs {}..{} through GICD_SETSPI_NSR",
            m.first,
            m.end()
        );
    }
    for v in 0..n {
        // The guest owns both EL1 timers (CNTHCTL_EL2.EL1PCEN): their physical
        // PPIs reach it hardware-linked.
        vgic.set_hw_linked(v, layout.timer_ppis[2], host.vtimer_intid);
        vgic.set_hw_linked(v, layout.timer_ppis[1], host.ptimer_intid);
    }
    // Each assigned device's MSI-X through the host ITS to the guest's MBI.
    let guest_msi = layout
        .msi_doorbell()
        .zip(layout.mbi)
        .map(|(d, spis)| vbus::MsiTarget {
            doorbell: Ipa(d),
            spis,
        });
    let mut routed = Vec::new();
    for (i, a) in assigned.into_iter().enumerate() {
        routed.push(crate::assign::route_msi(
            a,
            u16::try_from(i).unwrap_or(u16::MAX),
            guest_msi,
            layout.ram,
        ));
    }
    // Each assigned device's DMA goes through SMMU stage-2 tables of its own
    // that map guest RAM only (the CPU's stage 2 also maps device BARs), and
    // its ITS doorbell page when its MSIs are routed (never the CPU's stage 2).
    let mut assigned = Vec::new();
    for (a, doorbell) in routed {
        if let Some((i, sid)) = a.stream {
            crate::smmu::confine(i, sid, 1, &stage2, layout.ram, doorbell)
                .map_err(|e| alloc::format!("pci-passthrough={}: SMMU: {e}", a.sbdf))?;
        }
        assigned.push(a);
    }
    let lines: Vec<(vbus::Sbdf, Option<u32>)> =
        assigned.iter().map(|a| (a.sbdf, a.intid)).collect();
    let functions: Vec<Box<dyn vbus::PciFunction>> = assigned
        .into_iter()
        .map(|a| Box::new(a.function) as Box<dyn vbus::PciFunction>)
        .collect();
    let mut functions = functions;
    // A request queue per vCPU (VIRTIO_BLK_F_MQ), as QEMU's own virtio-blk
    // has by default: Linux then gives each CPU its own queue, lock and
    // interrupt vector (routed to that CPU), instead of every CPU sharing
    // one queue whose interrupt lands on CPU 0.
    let blk_queues = u16::try_from(n).unwrap_or(u16::MAX);
    match disk {
        None => {}
        Some(DiskBackend::Ram(size)) => {
            let disk = ram_disk_storage(ram_pa + carve_len, free - carve_len, size)?;
            log::info!(
                "virtio-blk: RAM disk of {:#x} bytes at PA {:#x}",
                disk.len(),
                disk.as_ptr() as usize
            );
            let blk = virtio_devs::blk::VirtioBlk::with_queues(
                virtio_devs::blk::RamDisk::over(disk),
                blk_queues,
            );
            functions.push(Box::new(virtio_devs::pci::VirtioPci::new(
                blk,
                guest_ram.clone(),
            )));
        }
        Some(DiskBackend::Host) => {
            let backend = crate::hostdisk::HostDiskBackend::new()
                .ok_or("virtio-blk=host: no host disk (give host-disk=SSSS:BB:DD.F)")?;
            if let Some(d) = crate::hostdisk::HOST_DISK.get() {
                // The disk may move data to and from guest RAM (every run, the
                // in-place initrd's pages included) and nothing else.
                for r in guest_ram.host_runs() {
                    d.lock().allow_dma(r.base, r.size);
                }
            }
            log::info!("virtio-blk: backed by the host disk, zero-copy");
            let blk = virtio_devs::blk::VirtioBlk::with_queues(backend, blk_queues);
            functions.push(Box::new(virtio_devs::pci::VirtioPci::new(
                blk,
                guest_ram.clone(),
            )));
        }
    }
    if layout.pci.is_none() && !functions.is_empty() {
        return Err("host devices to assign but the guest has no PCI segment".into());
    }
    let (segment, ids) = match crate::vm::synthetic_segment(&layout, functions, root_ports)? {
        Some((s, ids)) => (Some(s), ids),
        None => (None, Vec::new()),
    };
    let mut irq_routes = Vec::new();
    if let Some(seg) = segment.as_ref() {
        for (id, (sbdf, intid)) in ids.iter().zip(&lines) {
            let (Some(pintid), Some(spi)) = (*intid, seg.intx_spi(*id)) else {
                continue;
            };
            // Level, hardware-linked: the guest's deactivation deactivates the host line.
            vgic.set_hw_linked(0, spi, pintid);
            irq_routes.push((pintid, crate::vm::IrqOwner::GuestSpi(spi)));
            log::info!("{sbdf}: host INTID {pintid} -> guest SPI {spi}");
        }
    }
    // Every vCPU starts off; the boot CPU switches vCPU 0 on when it enters it.
    let power = vec![Power::Off; n];
    // The console UART as firmware leaves it: enabled, 8 bits, FIFOs on, no
    // interrupt raised yet (earlycon writes to it without programming it).
    let mut uart = Pl011::new();
    uart.write(0x30, 4, 0x301);
    uart.write(0x2c, 4, (1 << 4) | (3 << 5));
    uart.write(0x44, 4, 0x7ff);
    let vm = Vm {
        pcpu_mpidr: host.cpus.iter().copied().take(n).collect(),
        layout,
        stage2: spin::Mutex::new(stage2),
        irq_routes,
        vgic: spin::Mutex::new(vgic),
        devices: spin::Mutex::new(crate::vm::Devices {
            uart,
            uart_line: false,
            console_input: arch_emu::console_input::ConsoleInput::new(crate::vm::CONSOLE_BACKLOG),
            segment,
            assigned: ids.get(..lines.len()).unwrap_or(&[]).to_vec(),
        }),
        power: spin::Mutex::new(power),
        stats: Default::default(),
        times: Default::default(),
        lr_count: crate::gic::num_lrs(),
        semihosting,
    };
    Ok((vm, entry, dtb_ipa))
}

/// Buses the segment spans when `root-ports=` asks for more ports than the
/// default range (16 buses) numbers: 64, an ECAM window of 64 MiB that still
/// ends below guest RAM.
const ROOT_PORTS_BUS_SPAN: u8 = 64;

/// How the guest is built, from the hypervisor's options.
#[derive(Debug, Clone, Copy)]
pub struct GuestOptions {
    /// Leave QEMU through semihosting at shutdown (`semihosting`).
    pub semihosting: bool,
    /// The PSCI conduit the guest DT names (`guest-psci=`).
    pub psci: guest_dt::PsciMethod,
    /// Guest RAM in bytes (`guest-mem=`); `None`: all that is free.
    pub guest_mem: Option<u64>,
    /// The emulated virtio-blk's backend (`virtio-blk=`).
    pub disk: Option<DiskBackend>,
    /// Root ports on the synthetic segment's bus 0 at least (`root-ports=N`,
    /// 2..=31; 0: as many as the devices need, two at least). Extra ones are
    /// empty slots: they measure what routing costs as the bus fills.
    pub root_ports: usize,
}

/// What backs the guest's emulated virtio-blk (`virtio-blk=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskBackend {
    /// A RAM disk of this many bytes carved from host RAM (`ram:SIZE`).
    Ram(u64),
    /// The host disk the hypervisor drives (`host`, with `host-disk=`).
    Host,
}

/// The RAM disk's storage: `size` bytes at the top of the free host RAM
/// `[free_pa, free_pa + free_len)` left after guest RAM, zeroed.
fn ram_disk_storage(free_pa: u64, free_len: u64, size: u64) -> Result<&'static mut [u8], String> {
    let size = size & !0x1ff;
    if size == 0 || size > free_len {
        return Err(alloc::format!(
            "virtio-blk=ram:{size:#x}: only {free_len:#x} bytes of host RAM are left after guest RAM"
        ));
    }
    let base = (free_pa + free_len - size) & !(MIB2 - 1);
    if base < free_pa {
        return Err(alloc::format!(
            "virtio-blk=ram:{size:#x}: does not fit 2 MiB-aligned in the {free_len:#x} bytes left"
        ));
    }
    // SAFETY: `[base, base + size)` is host RAM that `free_ram` found unused
    // (no module, DT, hypervisor image or heap) and that guest RAM does not
    // take; identity-mapped Normal memory at EL2. Only this slice refers to it,
    // for the life of the hypervisor.
    let disk = unsafe { core::slice::from_raw_parts_mut(base as *mut u8, size as usize) };
    disk.fill(0);
    Ok(disk)
}

/// Copies `src` to host PA `dst` and cleans it to the point of coherency (the guest
/// starts with its MMU and caches off).
fn copy_in(dst: u64, src: &[u8]) {
    // The kernel image is tens of MiB: under QEMU TCG a copy loop takes a
    // third of a second of the boot, the copy instructions a few ms.
    if crate::sysreg::has_mops() {
        // SAFETY: FEAT_MOPS is implemented (checked); `dst` is inside the
        // guest's RAM carve-out (checked by the caller against its size),
        // identity-mapped, and does not overlap `src` (a module outside it).
        unsafe { crate::sysreg::copy_mops(dst as *mut u8, src.as_ptr(), src.len()) };
    } else {
        // SAFETY: as above, without FEAT_MOPS.
        unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), dst as *mut u8, src.len()) };
    }
    clean_dcache_range(dst as usize, src.len());
}

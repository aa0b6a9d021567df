//! Building a guest from its spec and the host platform: RAM (from the free
//! host RAM, [`FreeRam`]), kernel, initrd and DTB placement ([`Boot`], kept
//! to boot it again), stage 2 and the emulated devices.

use alloc::boxed::Box;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use arch_emu::pl011::Pl011;
use arch_emu::vgic::Vgic;
use guest_dt::{Chosen, GuestLayout, Region};

use crate::mmu::{Ipa, MemRange, Pa, S2Attr, Stage2};
use crate::spec::{DiskBackend, GuestMemory, GuestSpec, ResetAction};
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
    /// The boot modules of every guest (base, size): never given to a guest.
    pub modules: Vec<(u64, u64)>,
    /// Where the host DTB is (base, size).
    pub dtb: (u64, u64),
}

impl HostPlatform {
    /// The boot view of the parsed host platform: the boot CPU first, a
    /// kernel module directly under `/chosen` required unless
    /// `guest_nodes` (then each guest node has its own); the modules
    /// directly under `/chosen`. The error names the node at fault.
    pub fn new(
        p: &platform::Platform,
        dtb: usize,
        dtb_size: usize,
        guest_nodes: bool,
    ) -> Result<Self, String> {
        let me = crate::sysreg::mpidr_affinity();
        let mut cpus: Vec<u64> = p.cpus.iter().map(|c| c.mpidr).collect();
        if !cpus.contains(&me) {
            return Err(alloc::format!(
                "/cpus: no CPU with this CPU's MPIDR {me:#x}"
            ));
        }
        cpus.retain(|&c| c != me);
        cpus.insert(0, me);
        if !guest_nodes && p.kernel().is_none() {
            return Err("/chosen: no `multiboot,kernel` module (the guest kernel)".into());
        }
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
            modules: p
                .modules
                .iter()
                .map(|m| (m.region.base, m.region.size))
                .collect(),
            dtb: (dtb as u64, dtb_size as u64),
        })
    }

    /// Prints the host platform on `[hv]` lines, with the boot modules
    /// directly under `/chosen` of `p`.
    pub fn report(&self, p: &platform::Platform) {
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
        if let Some(k) = p.kernel() {
            log::info!(
                "module multiboot,kernel at {:#x} size {:#x}",
                k.region.base,
                k.region.size
            );
        }
        if let Some(r) = p.ramdisk() {
            log::info!(
                "module multiboot,ramdisk at {:#x} size {:#x}",
                r.region.base,
                r.region.size
            );
        }
    }

    /// What the hypervisor keeps for itself: its image (code, data, heap,
    /// stacks) and the host DT. No guest memory or module may overlap it.
    pub fn reservation(&self) -> Vec<MemRange<Pa>> {
        let (img_s, img_e) = (
            core::ptr::addr_of!(__image_start) as u64,
            core::ptr::addr_of!(__image_end) as u64,
        );
        vec![
            MemRange::new(Pa(img_s), img_e - img_s),
            MemRange::new(Pa(self.dtb.0), self.dtb.1),
        ]
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
    used.extend(host.modules.iter().map(|&(a, s)| (a, a + s)));
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

/// Host RAM nobody has taken yet: the free stretches between what the
/// hypervisor, the host DTB and the boot modules use, in whole 4 KiB pages.
/// Guests and RAM disks are carved from it at boot.
pub struct FreeRam {
    /// (base, size), page-aligned, in address order.
    ranges: Vec<(u64, u64)>,
}

const PAGE: u64 = 4096;

impl FreeRam {
    /// What `host` leaves free.
    pub fn new(host: &HostPlatform) -> Self {
        let used = used_ranges(host);
        let mut ranges = Vec::new();
        for &(mb, ms) in &host.memory {
            let me = mb.saturating_add(ms);
            let mut cur = mb;
            let mut push = |gs: u64, ge: u64| {
                let (a, b) = (align_up(gs, PAGE), ge & !(PAGE - 1));
                if b > a {
                    ranges.push((a, b - a));
                }
            };
            for &(us, ue) in &used {
                if ue <= cur || us >= me {
                    continue;
                }
                push(cur, us);
                cur = cur.max(ue);
            }
            push(cur, me);
        }
        ranges.sort_unstable();
        FreeRam { ranges }
    }

    /// The largest 2 MiB-aligned free stretch (the first of equals), if any.
    pub fn largest(&self) -> Option<(u64, u64)> {
        let mut best: Option<(u64, u64)> = None;
        for &(b, s) in &self.ranges {
            let (a, e) = (align_up(b, MIB2), (b + s) & !(MIB2 - 1));
            if e > a && best.is_none_or(|(_, bs)| e - a > bs) {
                best = Some((a, e - a));
            }
        }
        best
    }

    /// Removes `[base, base + size)` (whole pages) from the free ranges; an
    /// error unless all of it was free.
    pub fn take(&mut self, base: u64, size: u64) -> Result<(), String> {
        let (a, b) = (base & !(PAGE - 1), align_up(base + size, PAGE));
        let Some(i) = self
            .ranges
            .iter()
            .position(|&(rb, rs)| rb <= a && b <= rb + rs)
        else {
            return Err(alloc::format!(
                "PA {base:#x}+{size:#x} is not free host RAM (the hypervisor, the host DT, a boot module or another guest has it)"
            ));
        };
        let (rb, rs) = self.ranges.remove(i);
        if b < rb + rs {
            self.ranges.insert(i, (b, rb + rs - b));
        }
        if a > rb {
            self.ranges.insert(i, (rb, a - rb));
        }
        Ok(())
    }

    /// Takes `size` bytes (rounded up to 2 MiB) from the top of the largest
    /// 2 MiB-aligned free stretch; returns its base.
    pub fn alloc_high(&mut self, size: u64) -> Result<u64, String> {
        let size = align_up(size, MIB2);
        match self.largest() {
            Some((b, s)) if s >= size => {
                self.take(b + s - size, size)?;
                Ok(b + s - size)
            }
            l => Err(alloc::format!(
                "{size:#x} bytes of host RAM wanted, the largest free stretch has {:#x}",
                l.map_or(0, |l| l.1)
            )),
        }
    }
}

/// What a guest is booted from, kept to boot it again (`on-reset`
/// restart): its modules stay where the loader put them, outside every
/// guest's RAM, and are copied in anew.
pub struct Boot {
    /// Guest RAM as stage 2 maps it.
    pub ram: crate::guestmem::GuestRam,
    /// The kernel module and where in guest RAM (offset) it goes.
    pub kernel: (MemRange<Pa>, u64),
    /// The initrd module and its offset in guest RAM; `None` without one.
    /// Mapped in place (never copied) when its pages are guest RAM.
    pub initrd: Option<(MemRange<Pa>, u64)>,
    /// Whether the initrd module's pages are guest RAM (then the guest
    /// cannot be booted again from it).
    pub initrd_in_place: bool,
    /// Whether the kernel module's pages are guest RAM where the kernel
    /// runs (not copied; the guest cannot be booted again from it).
    pub kernel_in_place: bool,
    /// The guest DTB and its offset in guest RAM.
    pub dtb: (Vec<u8>, u64),
    /// Where vCPU 0 starts (IPA).
    pub entry: u64,
    /// The DTB's IPA (vCPU 0's x0).
    pub dtb_ipa: u64,
    /// Its RAM disks' host memory.
    pub ram_disks: Vec<MemRange<Pa>>,
    /// What SYSTEM_RESET does.
    pub on_reset: crate::spec::ResetAction,
    /// Hardware-linked interrupts of the vGIC: (vCPU, virtual INTID,
    /// physical INTID), vCPU ignored for an SPI.
    pub hw_links: Vec<(usize, u32, u32)>,
}

impl Boot {
    /// Copies the kernel and the initrd (each unless it is mapped in place)
    /// and the DTB into guest RAM, cleaned to the point of coherency (the guest
    /// starts with its MMU and caches off).
    pub fn load(&self) -> Result<(), String> {
        let (k, koff) = self.kernel;
        // In place, the kernel is already where the guest runs it, and clean
        // to the point of coherency as the in-place initrd is: the loader
        // entered the hypervisor (an arm64 Image) with the data cache off and
        // cleaned (Documentation/arch/arm64/booting.rst; U-Boot's booti cleans
        // it all first, QEMU has none), and the hypervisor has only read the
        // module since. (Under QEMU TCG cleaning 33 MB line by line took more
        // of the boot than the copy.)
        if !self.kernel_in_place {
            // SAFETY: the module lies in host RAM (identity-mapped) as the loader
            // placed it; nothing writes it (it is outside every guest's RAM).
            let kimg =
                unsafe { core::slice::from_raw_parts(k.base.0 as *const u8, k.size as usize) };
            load_into(&self.ram, koff, kimg)?;
        }
        if let (Some((i, ioff)), false) = (self.initrd, self.initrd_in_place) {
            // SAFETY: as for the kernel.
            let img =
                unsafe { core::slice::from_raw_parts(i.base.0 as *const u8, i.size as usize) };
            load_into(&self.ram, ioff, img)?;
        }
        load_into(&self.ram, self.dtb.1, &self.dtb.0)
    }
}

/// Copies `src` to guest RAM offset `off` and cleans what it wrote to the
/// point of coherency.
fn load_into(ram: &crate::guestmem::GuestRam, off: u64, src: &[u8]) -> Result<(), String> {
    use virtio_devs::GuestMemory;
    let at = Ipa(ram.base().0 + off);
    let mut host = Vec::new();
    ram.host_ranges(MemRange::new(at, src.len() as u64), &mut host)
        .map_err(|e| alloc::format!("loading {:#x} bytes at IPA {at}: {e:?}", src.len()))?;
    let mut done = 0usize;
    for r in host {
        let n = (r.size as usize).min(src.len() - done);
        copy_in(r.base.0, &src[done..done + n]);
        done += n;
    }
    Ok(())
}

/// Copies `src` to host PA `dst` (a run of a guest's RAM) and cleans it to
/// the point of coherency (the guest starts with its MMU and caches off).
fn copy_in(dst: u64, src: &[u8]) {
    // The kernel image is tens of MiB: under QEMU TCG a copy loop takes a
    // third of a second of the boot, the copy instructions a few ms.
    if crate::sysreg::has_mops() {
        // SAFETY: FEAT_MOPS is implemented (checked); `dst..dst + src.len()`
        // is a host run of the guest's RAM (`host_ranges`), identity-mapped
        // Normal memory at EL2, and does not overlap `src` (a boot module or
        // its pristine copy outside every guest's RAM, or the heap's DTB).
        unsafe { crate::sysreg::copy_mops(dst as *mut u8, src.as_ptr(), src.len()) };
    } else {
        // SAFETY: as above, without FEAT_MOPS.
        unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), dst as *mut u8, src.len()) };
    }
    clean_dcache_range(dst as usize, src.len());
}

/// How every guest is built (the hypervisor's options).
#[derive(Debug, Clone, Copy)]
pub struct GuestOptions {
    /// The PSCI conduit the guest DT names (`guest-psci=`).
    pub psci: guest_dt::PsciMethod,
}

/// Builds guest `index` of `spec` (its RAM taken from `free`, or from the
/// largest free stretch for [`GuestMemory::Auto`]) with the host devices
/// `assigned` (`spec.devices`, prepared). Nothing is loaded yet
/// ([`Boot::load`]).
pub fn build(
    host: &HostPlatform,
    index: usize,
    spec: &GuestSpec,
    free: &mut FreeRam,
    opts: &GuestOptions,
    assigned: Vec<crate::assign::Assigned>,
) -> Result<Vm, String> {
    let n = spec.cpus.len();
    let vmid = u16::try_from(index + 1).map_err(|_| "too many guests")?;
    let (kaddr, klen) = (spec.kernel.base.0, spec.kernel.size);
    // SAFETY: the module lies in host RAM (identity-mapped) as the loader placed it.
    let kimg = unsafe { core::slice::from_raw_parts(kaddr as *const u8, klen as usize) };
    // Guest RAM as host runs (host PA, size), in IPA order from the RAM base,
    // plus the in-place initrd's run (its index in `runs`) and the RAM disks.
    let mut runs: Vec<(u64, u64)> = Vec::new();
    let mut in_place_run = None;
    let mut kernel_in_place = false;
    let mut ram_disks: Vec<MemRange<Pa>> = Vec::new();
    let ram_disk_sizes: Vec<u64> = spec
        .disks
        .iter()
        .filter_map(|d| match d {
            DiskBackend::Ram(n) => Some(n & !0x1ff),
            DiskBackend::Host(_) => None,
        })
        .collect();
    let initrd_len = spec.ramdisk.map(|r| r.size);
    let head = kimg.get(..64).unwrap_or(kimg);
    let mut layout;
    let place;
    match &spec.memory {
        GuestMemory::Auto { size: guest_mem } => {
            // Guest RAM: the largest free stretch of host RAM (less a RAM
            // disk's share), plus a page-aligned initrd module mapped where
            // the guest expects it (its pages become guest RAM, no copy)
            // unless the guest restarts from it. The rest of host RAM is the
            // hypervisor's: its image (heap, stacks), the host DTB, the
            // kernel module.
            let (ram_pa, stretch) = free.largest().ok_or("no free RAM for the guest")?;
            let disk_share = ram_disk_sizes.first().map_or(0, |&n| align_up(n, MIB2));
            let carve_max = stretch.checked_sub(disk_share).ok_or_else(|| {
                alloc::format!(
                    "virtio-blk=ram:{disk_share:#x}: only {stretch:#x} bytes of host RAM are free"
                )
            })?;
            let initrd_pages = match spec.ramdisk {
                Some(r)
                    if spec.on_reset == ResetAction::Stop
                        && r.base.0 % 4096 == 0
                        && pages_are_private(host, r.base.0, r.size) =>
                {
                    r.size.div_ceil(4096) * 4096
                }
                _ => 0,
            };
            // The kernel module likewise, when it starts on a 2 MiB boundary
            // and the kernel runs at offset 0 of guest RAM (text_offset 0):
            // its pages become the first of guest RAM, no copy (under QEMU
            // TCG the copy of a 33 MB kernel and the first touch of its
            // destination took tens of ms of the boot).
            let kernel_pages = match guest_dt::boot::place(u64::MAX / 4, head, klen, None, 0) {
                Ok(p)
                    if spec.on_reset == ResetAction::Stop
                        && p.kernel == 0
                        && kaddr % MIB2 == 0
                        && klen > 0
                        && pages_are_private(host, kaddr, klen) =>
                {
                    klen.div_ceil(4096) * 4096
                }
                _ => 0,
            };
            // In-place pieces' pages less the padding that keeps the RAM after
            // each congruent with its IPA modulo 2 MiB (see below).
            let in_place_ram = |len: u64| len - len % MIB2;
            let ram_size = match *guest_mem {
                None => {
                    (carve_max + in_place_ram(initrd_pages) + in_place_ram(kernel_pages))
                        & !(MIB2 - 1)
                }
                Some(m)
                    if (m & !(MIB2 - 1)).saturating_sub(initrd_pages + kernel_pages)
                        > carve_max =>
                {
                    return Err(alloc::format!(
                        "guest-mem={m:#x} but only {carve_max:#x} bytes of host RAM are free{}",
                        if initrd_pages + kernel_pages > 0 {
                            alloc::format!(
                                " (and the modules' {:#x} are mapped in place)",
                                initrd_pages + kernel_pages
                            )
                        } else {
                            String::new()
                        }
                    ))
                }
                Some(m) => m & !(MIB2 - 1),
            };
            layout = guest_layout(spec, n, ram_size, opts)?;
            place = placement(&layout, spec, head, klen, initrd_len)?;
            // Pieces of guest RAM that are a module's own pages: (IPA offset,
            // PA, length), in IPA order.
            let mut pieces: Vec<(u64, u64, u64)> = Vec::new();
            if kernel_pages > 0 && place.kernel == 0 && kernel_pages < ram_size {
                pieces.push((0, kaddr, kernel_pages));
                kernel_in_place = true;
            }
            let initrd_piece = match (spec.ramdisk, place.initrd) {
                (Some(r), Some(off))
                    if initrd_pages > 0 && initrd_pages < ram_size - off && off >= kernel_pages =>
                {
                    Some((off, r.base.0, initrd_pages))
                }
                _ => None,
            };
            pieces.extend(initrd_piece);
            // RAM after an in-place piece starts its length modulo 2 MiB further
            // into the carve-out, so that IPA and PA stay congruent modulo 2 MiB there and
            // stage 2 (the CPU's and the SMMU's) maps it with 2 MiB blocks, not
            // 4 KiB pages (whose tables would grow with guest RAM: 4 MiB per GiB).
            let (mut ipa, mut pa) = (0u64, ram_pa);
            for &(off, at, len) in &pieces {
                if off > ipa {
                    runs.push((pa, off - ipa));
                    pa += off - ipa;
                }
                if initrd_piece.is_some_and(|p| p.0 == off) {
                    in_place_run = Some(runs.len());
                }
                runs.push((at, len));
                ipa = off + len;
                pa += len % MIB2;
            }
            if ram_size > ipa {
                runs.push((pa, ram_size - ipa));
                pa += ram_size - ipa;
            }
            // Bytes of the carve-out in use.
            let carve_len = pa - ram_pa;
            if carve_len > carve_max {
                return Err(alloc::format!(
                    "guest RAM of {ram_size:#x} bytes needs {carve_len:#x} of host RAM, only {carve_max:#x} are free"
                ));
            }
            free.take(ram_pa, carve_len)?;
            if let Some(&size) = ram_disk_sizes.first() {
                // At the top of what the stretch has left after guest RAM.
                let r = ram_disk_storage(ram_pa + carve_len, stretch - carve_len, size)?;
                free.take(r.base.0, r.size)?;
                ram_disks.push(r);
            }
        }
        GuestMemory::Static(ranges) => {
            let ram_size: u64 = ranges.iter().map(|r| r.size).sum();
            if ranges
                .iter()
                .any(|r| r.base.0 % 4096 != 0 || r.size % 4096 != 0)
            {
                return Err("guest memory must be whole 4 KiB pages".into());
            }
            layout = guest_layout(spec, n, ram_size, opts)?;
            place = placement(&layout, spec, head, klen, initrd_len)?;
            runs.extend(ranges.iter().map(|r| (r.base.0, r.size)));
        }
    }
    // The other RAM disks (all of them with static memory): from the top of
    // the largest free stretch.
    for &size in ram_disk_sizes.get(ram_disks.len()..).unwrap_or(&[]) {
        if size == 0 {
            return Err(alloc::format!("virtio-blk=ram:{size:#x}: empty"));
        }
        let base = free
            .alloc_high(size)
            .map_err(|e| alloc::format!("virtio-blk=ram:{size:#x}: {e}"))?;
        ram_disks.push(MemRange::new(Pa(base), size));
    }
    let ram_size = layout.ram.size;
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
    // Stage 2 maps the runs one after the other from the RAM base.
    let s2 = |e: crate::mmu::MmuError| e.to_string();
    let base = layout.ram.base;
    let mut ipa_runs = Vec::new();
    let mut off = 0u64;
    for &(pa, size) in &runs {
        let r = Region::new(Ipa(base.0 + off), size);
        stage2.map(r, Pa(pa), S2Attr::Normal).map_err(s2)?;
        ipa_runs.push((r, Pa(pa)));
        off += size;
    }
    let guest_ram = crate::guestmem::GuestRam::new(ipa_runs);
    log::info!(
        "{}RAM IPA {:#x} size {:#x} at PA {:#x}; IPA {} bits",
        who(spec),
        layout.ram.base,
        ram_size,
        runs.first().map_or(0, |r| r.0),
        stage2.ipa_bits()
    );
    let entry = layout.ram.base.0 + place.kernel;
    if kernel_in_place {
        log::info!(
            "{}kernel mapped in place: PA {kaddr:#x} at IPA {entry:#x}",
            prefix(spec)
        );
    }
    let mut initrd_region = None;
    if let (Some(r), Some(off)) = (spec.ramdisk, place.initrd) {
        if let Some(i) = in_place_run {
            log::info!(
                "initrd mapped in place: PA {:#x} at IPA {:#x}",
                runs.get(i).map_or(0, |r| r.0),
                layout.ram.base.0 + off
            );
        }
        initrd_region = Some(Region::new(Ipa(layout.ram.base.0 + off), r.size));
    }
    let bootargs = &spec.bootargs;
    let dtb = layout
        .render(&Chosen {
            bootargs: bootargs.clone(),
            initrd: initrd_region,
        })
        .map_err(|e| alloc::format!("guest DT: {e:?}"))?;
    if dtb.len() as u64 > guest_dt::boot::MAX_DTB {
        return Err(alloc::format!(
            "guest DTB is {:#x} bytes, more than 2 MiB",
            dtb.len()
        ));
    }
    let dtb_ipa = layout.ram.base.0 + place.dtb;
    log::info!(
        "{}kernel at IPA {entry:#x}, bootargs \"{bootargs}\"",
        who(spec)
    );

    let mut hw_links = Vec::new();
    for v in 0..n {
        // The guest owns both EL1 timers (CNTHCTL_EL2.EL1PCEN): their physical
        // PPIs reach it hardware-linked.
        hw_links.push((v, layout.timer_ppis[2], host.vtimer_intid));
        hw_links.push((v, layout.timer_ppis[1], host.ptimer_intid));
    }
    if let Some(m) = layout.mbi {
        log::info!(
            "{}MSIs: SPIs {}..{} through GICD_SETSPI_NSR",
            who(spec),
            m.first,
            m.end()
        );
    }
    // Each assigned device's MSI-X through the host ITS to the guest's MBI,
    // its LPIs first on the guest's first CPU.
    let guest_msi = layout
        .msi_doorbell()
        .zip(layout.mbi)
        .map(|(d, spis)| vbus::MsiTarget {
            doorbell: Ipa(d),
            spis,
        });
    let first_cpu = spec.cpus.first().copied().unwrap_or(0);
    let mut routed = Vec::new();
    for (i, a) in assigned.into_iter().enumerate() {
        routed.push(crate::assign::route_msi(
            a,
            u16::try_from(index).unwrap_or(u16::MAX),
            u16::try_from(i).unwrap_or(u16::MAX),
            first_cpu,
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
            crate::smmu::confine(i, sid, vmid, &stage2, layout.ram, doorbell)
                .map_err(|e| alloc::format!("pci-passthrough={}: SMMU: {e}", a.sbdf))?;
        }
        assigned.push(a);
    }
    let lines: Vec<(vbus::Sbdf, Option<u32>)> =
        assigned.iter().map(|a| (a.sbdf, a.intid)).collect();
    let mut functions: Vec<Box<dyn vbus::PciFunction>> = assigned
        .into_iter()
        .map(|a| Box::new(a.function) as Box<dyn vbus::PciFunction>)
        .collect();
    // A request queue per vCPU (VIRTIO_BLK_F_MQ), as QEMU's own virtio-blk
    // has by default: Linux then gives each CPU its own queue, lock and
    // interrupt vector (routed to that CPU), instead of every CPU sharing
    // one queue whose interrupt lands on CPU 0.
    let blk_queues = u16::try_from(n).unwrap_or(u16::MAX);
    let mut ram_disk_at = ram_disks.iter();
    for d in &spec.disks {
        let blk: Box<dyn vbus::PciFunction> = match *d {
            DiskBackend::Ram(_) => {
                let r = ram_disk_at.next().ok_or("virtio-blk=ram: no storage")?;
                // SAFETY: `r` is host RAM taken from the free ranges (no module,
                // DT, hypervisor image, heap, guest RAM or other RAM disk),
                // identity-mapped Normal memory at EL2. Only this slice refers
                // to it, for the life of the hypervisor.
                let disk = unsafe {
                    core::slice::from_raw_parts_mut(r.base.0 as *mut u8, r.size as usize)
                };
                disk.fill(0);
                log::info!(
                    "{}virtio-blk: RAM disk of {:#x} bytes at PA {:#x}",
                    prefix(spec),
                    disk.len(),
                    disk.as_ptr() as usize
                );
                let blk = virtio_devs::blk::VirtioBlk::with_queues(
                    virtio_devs::blk::RamDisk::over(disk),
                    blk_queues,
                );
                Box::new(virtio_devs::pci::VirtioPci::new(blk, guest_ram.clone()))
            }
            DiskBackend::Host(sbdf) => {
                let driven = crate::hostdisk::HOST_DISK.get().map(|d| d.lock().sbdf());
                if driven != Some(sbdf) {
                    return Err(alloc::format!(
                        "virtio-blk=host:{sbdf}: the hypervisor drives no host disk there"
                    ));
                }
                let backend = crate::hostdisk::HostDiskBackend::new()
                    .ok_or("virtio-blk=host: no host disk (give host-disk=SSSS:BB:DD.F)")?;
                if let Some(d) = crate::hostdisk::HOST_DISK.get() {
                    // The disk may move data to and from guest RAM (every run, the
                    // in-place initrd's pages included) and nothing else.
                    for r in guest_ram.host_runs() {
                        d.lock().allow_dma(r.base, r.size);
                    }
                }
                log::info!(
                    "{}virtio-blk: backed by the host disk, zero-copy",
                    prefix(spec)
                );
                let blk = virtio_devs::blk::VirtioBlk::with_queues(backend, blk_queues);
                Box::new(virtio_devs::pci::VirtioPci::new(blk, guest_ram.clone()))
            }
        };
        functions.push(blk);
    }
    // The virtio console after the disks: its port's output goes to the
    // host console (`exits::handle_exit`), the host console's input to it
    // while the guest has the input focus (`exits::console_input`).
    let console_port = spec
        .console
        .then(virtio_devs::console::ConsolePort::default);
    if let Some(port) = &console_port {
        log::info!("{}virtio-console: port 0", prefix(spec));
        let c = virtio_devs::console::VirtioConsole::new(port.clone());
        functions.push(Box::new(virtio_devs::pci::VirtioPci::new(
            c,
            guest_ram.clone(),
        )));
    }
    if layout.pci.is_none() && !functions.is_empty() {
        return Err("host devices to assign but the guest has no PCI segment".into());
    }
    let (segment, ids) = match crate::vm::synthetic_segment(&layout, functions, spec.root_ports)? {
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
            hw_links.push((0, spi, pintid));
            irq_routes.push((pintid, crate::vm::IrqOwner::GuestSpi(spi)));
            log::info!(
                "{}{sbdf}: host INTID {pintid} -> guest SPI {spi}",
                prefix(spec)
            );
        }
    }
    let vgic = new_vgic(&layout, &hw_links)?;
    // Every vCPU starts off; vCPU 0 is switched on when the guest starts.
    let power = vec![Power::Off; n];
    let boot = Boot {
        ram: guest_ram,
        kernel: (spec.kernel, place.kernel),
        initrd: spec.ramdisk.zip(place.initrd),
        initrd_in_place: in_place_run.is_some(),
        kernel_in_place,
        dtb: (dtb, place.dtb),
        entry,
        dtb_ipa,
        ram_disks,
        on_reset: spec.on_reset,
        hw_links,
    };
    Ok(Vm {
        index,
        name: spec.name.clone(),
        vmid,
        pcpus: spec.cpus.clone(),
        pcpu_mpidr: spec
            .cpus
            .iter()
            .map(|&c| host.cpus.get(c).copied().unwrap_or(0))
            .collect(),
        layout,
        stage2: spin::Mutex::new(stage2),
        irq_routes,
        vgic: spin::Mutex::new(vgic),
        devices: spin::Mutex::new(crate::vm::Devices {
            uart: firmware_uart(),
            uart_line: false,
            console_input: arch_emu::console_input::ConsoleInput::new(crate::vm::CONSOLE_BACKLOG),
            segment,
            assigned: ids.get(..lines.len()).unwrap_or(&[]).to_vec(),
        }),
        console_port,
        power: spin::Mutex::new(power),
        stats: Default::default(),
        times: Default::default(),
        lr_count: crate::gic::num_lrs(),
        boot,
        state: core::sync::atomic::AtomicU8::new(crate::life::RUNNING),
        end: core::sync::atomic::AtomicU8::new(crate::life::End::None as u8),
        restarts: core::sync::atomic::AtomicU64::new(0),
    })
}

/// A vGIC as the guest finds it at boot: `layout`'s CPUs, SPIs and MBI
/// range, with `hw_links` (vCPU, virtual INTID, physical INTID)
/// hardware-linked.
pub fn new_vgic(layout: &GuestLayout, hw_links: &[(usize, u32, u32)]) -> Result<Vgic, String> {
    let mut vgic = Vgic::new(&layout.mpidrs, layout.num_spis);
    if let Some(m) = layout.mbi {
        // Validated with the layout: inside the SPIs, clear of every other one.
        if !vgic.set_mbi_range(m) {
            return Err(alloc::format!("guest MBI range {m:?} refused by the vGIC"));
        }
    }
    for &(v, intid, pintid) in hw_links {
        vgic.set_hw_linked(v, intid, pintid);
    }
    Ok(vgic)
}

/// The console UART as firmware leaves it: enabled, 8 bits, FIFOs on, no
/// interrupt raised yet (earlycon writes to it without programming it).
pub fn firmware_uart() -> Pl011 {
    let mut uart = Pl011::new();
    uart.write(0x30, 4, 0x301);
    uart.write(0x2c, 4, (1 << 4) | (3 << 5));
    uart.write(0x44, 4, 0x7ff);
    uart
}

/// `"guest "` for the single guest (its lines as they always were),
/// `"guest NAME "` for one of several: what starts its lines about itself.
fn who(spec: &GuestSpec) -> String {
    if spec.is_single() {
        String::from("guest ")
    } else {
        alloc::format!("guest {} ", spec.name)
    }
}

/// Empty for the single guest, `"guest NAME: "` for one of several: what
/// starts its lines about its devices.
fn prefix(spec: &GuestSpec) -> String {
    if spec.is_single() {
        String::new()
    } else {
        alloc::format!("guest {}: ", spec.name)
    }
}

/// The guest's layout: `n` vCPUs, `ram_size` bytes of RAM, its segment
/// number and enough buses for its root ports; validated.
fn guest_layout(
    spec: &GuestSpec,
    n: usize,
    ram_size: u64,
    opts: &GuestOptions,
) -> Result<GuestLayout, String> {
    let mut layout = GuestLayout::qemu_virt_default(n, ram_size);
    layout.psci_method = opts.psci;
    if let Some(p) = layout.pci.as_mut() {
        p.segment = spec.segment;
        // Every root port needs a secondary bus of its own (and firmware
        // numbers them one after the other): widen the bus range, and with it
        // the ECAM window (1 MiB a bus), when `root-ports=` asks for more
        // ports than the default range has buses for.
        let buses = u16::from(p.bus_end - p.bus_start) + 1;
        if spec.root_ports as u16 + 1 > buses {
            p.bus_end = p.bus_start.saturating_add(ROOT_PORTS_BUS_SPAN - 1);
        }
    }
    layout
        .validate()
        .map_err(|e| alloc::format!("guest layout: {e:?}"))?;
    Ok(layout)
}

/// Where the kernel, the initrd and the DTB go in the guest's RAM. The
/// DTB's size depends on the initrd's placement only through two 64-bit
/// values: it is rendered once with a placeholder to size it.
fn placement(
    layout: &GuestLayout,
    spec: &GuestSpec,
    head: &[u8],
    klen: u64,
    initrd_len: Option<u64>,
) -> Result<guest_dt::boot::BootPlacement, String> {
    let probe = layout
        .render(&Chosen {
            bootargs: spec.bootargs.clone(),
            initrd: initrd_len.map(|s| Region::new(Ipa(0), s)),
        })
        .map_err(|e| alloc::format!("guest DT: {e:?}"))?;
    guest_dt::boot::place(layout.ram.size, head, klen, initrd_len, probe.len() as u64)
        .map_err(|e| e.to_string())
}

/// Buses the segment spans when `root-ports=` asks for more ports than the
/// default range (16 buses) numbers: 64, an ECAM window of 64 MiB that still
/// ends below guest RAM.
const ROOT_PORTS_BUS_SPAN: u8 = 64;

/// The RAM disk's storage: `size` bytes at the top of the free host RAM
/// `[free_pa, free_pa + free_len)` left after guest RAM, zeroed.
fn ram_disk_storage(free_pa: u64, free_len: u64, size: u64) -> Result<MemRange<Pa>, String> {
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
    Ok(MemRange::new(Pa(base), size))
}

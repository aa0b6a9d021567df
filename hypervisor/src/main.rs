//! The EL2 hypervisor (aarch64-unknown-none-softfloat: it never touches the
//! guest's FP/SIMD/SVE registers). See `hypervisor/README.md`.
//!
//! Boot: a Linux arm64 Image header makes QEMU `-kernel` and U-Boot `booti`
//! start it at EL2 with x0 = the host DTB. It turns on its own MMU, reads the
//! host platform, takes the physical GIC, builds each guest the host DT
//! describes (stage-2 RAM at its `GuestLayout` IPA, kernel/initrd/DTB loaded
//! as QEMU's `-kernel` would), brings the guests' CPUs up through PSCI and
//! enters each guest at EL1 on every CPU it switches on. Its own console
//! lines start with `[hv] `.
//!
//! It is position-independent: linked at 0x4020_0000 (where QEMU `-kernel`
//! places an Image with text_offset 0), it applies its own relative
//! relocations at entry when a loader put it elsewhere.
#![no_std]
#![no_main]

extern crate alloc;

mod assign;
mod boottime;
mod console;
mod cpufeat;
mod entry;
mod exits;
mod exitstats;
mod firmware;
mod gic;
mod guest;
mod guestmem;
mod heap;
mod hostdisk;
mod its;
mod life;
mod mmu;
mod pci;
mod semihosting;
mod smmu;
mod spec;
mod sysreg;
mod vm;

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use aarch64_cpu::registers::{
    CurrentEL, Readable, Writeable, CNTHCTL_EL2, CNTVOFF_EL2, CPTR_EL2, HCR_EL2, ICH_VMCR_EL2,
    MDCR_EL2, MIDR_EL1, VMPIDR_EL2,
};
use sysreg::{cptr_el2, pmcr_el0, read_sysreg, smcr_el2, write_sysreg, zcr_el2};

#[global_allocator]
pub static HEAP: heap::CountingHeap = heap::CountingHeap::new();

/// Whether to leave QEMU through semihosting (bootargs `semihosting`).
pub static SEMIHOSTING: AtomicBool = AtomicBool::new(false);

/// The EL2 tables every CPU uses.
static EL2_TABLES: spin::Once<mmu::El2Tables> = spin::Once::new();

/// Physical CPUs that finished their set-up.
static CPUS_READY: AtomicUsize = AtomicUsize::new(0);

/// The host firmware's PSCI conduit is HVC (we run nested), not SMC.
pub static PSCI_HVC: AtomicBool = AtomicBool::new(false);

/// A PSCI call to the firmware over its conduit (SMCCC through the `smccc`
/// crate), returning x0.
pub fn smc(x0: u64, x1: u64, x2: u64, x3: u64) -> u64 {
    let mut args = [0u64; 17];
    args[..3].copy_from_slice(&[x1, x2, x3]);
    let r = if PSCI_HVC.load(Ordering::Relaxed) {
        smccc::hvc64(x0 as u32, args)
    } else {
        smccc::smc64(x0 as u32, args)
    };
    r[0]
}

/// The hypervisor's options (its bootargs), by name (README, "The hypervisor's own options").
const KNOWN_OPTIONS: &[&str] = &[
    "semihosting",
    "guest-mem",
    "guest-psci",
    "loglevel",
    "pci-passthrough",
    "pci-passthrough-unconfined",
    "smmu-selftest",
    "host-disk",
    "host-disk-selftest",
    "its-selftest",
    "virtio-blk",
    "virtio-console",
    "root-ports",
];

/// The Rust entry point, on the boot CPU at EL2, with the host DTB address.
#[no_mangle]
extern "C" fn rust_main(dtb: usize) -> ! {
    boottime::mark("before-entry");
    // SAFETY: firmware (QEMU, U-Boot) passes a flattened device tree in x0, 8-byte
    // aligned and mapped (the MMU is off); its header's totalsize bounds it.
    let dtb_size = unsafe {
        if core::ptr::read_volatile(dtb as *const u32) != 0xedfe_0dd0 {
            semihosting::exit(2)
        }
        u32::from_be(core::ptr::read_volatile((dtb + 4) as *const u32)) as usize
    };
    if !(40..=(16 << 20)).contains(&dtb_size) {
        semihosting::exit(2)
    }
    // SAFETY: as above; nothing writes the DT while the hypervisor reads it.
    let dtb_bytes = unsafe { core::slice::from_raw_parts(dtb as *const u8, dtb_size) };
    let Ok(fdt) = fdt::Fdt::new(dtb_bytes) else {
        // No DT means no console to say so on; stop as a fault.
        semihosting::exit(2)
    };
    let Some(uart) = console::find_pl011(&fdt) else {
        semihosting::exit(2)
    };
    // SAFETY: the base comes from the host DT's PL011 node; nothing else drives it.
    *console::CONSOLE.lock() = Some(unsafe { console::Pl011::new(uart) });
    let bootargs = console::chosen(&fdt)
        .and_then(|c| c.property("bootargs"))
        .and_then(|p| p.as_str())
        .unwrap_or("");
    let semihosting = bootargs.split_whitespace().any(|a| a == "semihosting");
    SEMIHOSTING.store(semihosting, Ordering::Relaxed);
    let level_arg = bootargs
        .split_whitespace()
        .find_map(|a| a.strip_prefix("loglevel="));
    let level = level_arg
        .and_then(|l| l.parse::<log::LevelFilter>().ok())
        .unwrap_or(log::LevelFilter::Info);
    let _ = log::set_logger(&console::LOGGER);
    log::set_max_level(level);
    if let Some(l) = level_arg.filter(|l| l.parse::<log::LevelFilter>().is_err()) {
        log::warn!("bootargs: loglevel={l} is not error, warn, info, debug or trace: info used");
    }
    for arg in bootargs.split_whitespace() {
        let name = arg.split_once('=').map_or(arg, |(n, _)| n);
        if !KNOWN_OPTIONS.contains(&name) {
            log::warn!("bootargs: unknown option {arg} ignored");
        }
    }
    log::info!("synthetic-pci hypervisor, EL{}", current_el());
    log::info!(
        "loaded at {:#x} (linked at {:#x})",
        entry::image_start(),
        entry::LINK_ADDRESS
    );
    log::info!("host DT at {dtb:#x}, bootargs \"{bootargs}\"");

    HEAP.init();

    if !entry::stacks_fit() {
        exits::fatal("linker.ld reserves fewer stacks than MAX_CPUS");
    }
    // Without the FDT_NOP tokens firmware (or QEMU's -dtb) may have left,
    // which the DT parser's path lookups stop at.
    let compacted = platform::dtb::compact(dtb_bytes);
    let dtb_bytes: &[u8] = compacted.as_deref().unwrap_or(dtb_bytes);
    let plat = match platform::parse(dtb_bytes) {
        Ok(p) => p,
        Err(e) => exits::fatal(&alloc::format!("host device tree: {e}")),
    };
    PSCI_HVC.store(plat.psci == platform::PsciConduit::Hvc, Ordering::Relaxed);
    boottime::mark("host-dt");
    let fw = firmware::probe_this_cpu(0);
    log::info!(
        "firmware: PSCI {}, SMCCC {}, SMCCC_ARCH_FEATURES(ARCH_WORKAROUND_1/2/3) {}/{}/{}",
        firmware::Version(fw.psci_version),
        firmware::Version(fw.smccc_version),
        fw.workarounds.workaround_1,
        fw.workarounds.workaround_2,
        fw.workarounds.workaround_3
    );
    // Guest nodes under /chosen (a DT that does not read is reported below).
    let guest_nodes = platform::guests::parse_nodes(dtb_bytes).map_or(true, |g| !g.is_empty());
    let mut host = match guest::HostPlatform::new(&plat, dtb, dtb_size, guest_nodes) {
        Ok(h) => h,
        Err(e) => exits::fatal(&alloc::format!("host device tree: {e}")),
    };
    host.report(&plat);
    for h in &plat.pcie {
        log::info!(
            "host PCIe {} ({}) buses {:#x}-{:#x}: recorded, not shown to the guest",
            h.node,
            h.compatible,
            h.bus_range.0,
            h.bus_range.1
        );
    }

    let tables = match mmu::El2Tables::new(&host.memory) {
        Ok(t) => t,
        Err(e) => exits::fatal(&alloc::format!("EL2 tables: {e}")),
    };
    let tables = EL2_TABLES.call_once(|| tables);
    tables.enable();
    log::info!("EL2 MMU on, PA {} bits", mmu::pa_bits());
    boottime::mark("el2-mmu");

    let pgic = gic::Gic {
        gicd: host.gicd as usize,
        gicr: {
            let mut r = [(0usize, 0usize); gic::MAX_GICR_REGIONS];
            for (slot, &(b, s)) in r.iter_mut().zip(host.gicr.iter()) {
                *slot = (b as usize, s as usize);
            }
            r
        },
    };
    pgic.init_distributor();
    let host_ppis = [host.vtimer_intid, host.ptimer_intid, host.maintenance_intid];
    if let Err(e) = pgic.init_cpu(&host_ppis) {
        exits::fatal(e);
    }
    pgic.enable_spi(host.uart_intid, sysreg::mpidr_affinity());
    // The host SMMUv3s: every stream aborts until passthrough configures it.
    smmu::init(&plat, &pgic);
    // The host ITSs: LPIs on in every CPU's redistributor (ICID = CPU index,
    // as vCPU i runs on physical CPU i), host MSIs become LPIs at EL2.
    its::init(
        &plat,
        &pgic,
        &host.cpus[..host.cpus.len().min(entry::MAX_CPUS)],
    );
    exits::HOST_IRQS.call_once(|| exits::HostIrqs {
        uart_intid: host.uart_intid,
        vtimer: host.vtimer_intid,
        ptimer: host.ptimer_intid,
        maintenance: host.maintenance_intid,
    });
    if let Some(c) = console::CONSOLE.lock().as_mut() {
        c.enable_rx_interrupts();
    }
    boottime::mark("gic-smmu-its");

    // `guest-psci=smc` in the hypervisor's bootargs: the guest DT names the smc
    // conduit (as on a board with EL3 firmware); hvc otherwise.
    let psci = if bootargs.split_whitespace().any(|a| a == "guest-psci=smc") {
        guest_dt::PsciMethod::Smc
    } else {
        guest_dt::PsciMethod::Hvc
    };
    // The guests: the host DT's (guest nodes, or the single guest of the
    // boot modules and options).
    let configs = guest_configs(&plat, dtb_bytes, bootargs);
    for c in &configs {
        host.modules.push((c.kernel.base.0, c.kernel.size));
        if let Some(r) = c.ramdisk {
            host.modules.push((r.base.0, r.size));
        }
        if guest_nodes {
            log::info!(
                "guest {}: kernel module at {:#x} size {:#x}{}",
                c.name,
                c.kernel.base.0,
                c.kernel.size,
                c.ramdisk
                    .map_or(alloc::string::String::new(), |r| alloc::format!(
                        ", ramdisk at {:#x} size {:#x}",
                        r.base.0,
                        r.size
                    ))
            );
        }
    }
    // Host devices the guests name (passthrough, and the host disk of a
    // `virtio-blk` `host:` backend): their host segments enumerated and
    // assigned as firmware would, each device reset and its layout cached.
    let mut opts = match assign::Options::parse(bootargs) {
        Ok(o) => o,
        Err(e) => exits::fatal(&e),
    };
    opts.devices = configs.iter().flat_map(|c| c.devices.clone()).collect();
    for c in &configs {
        for d in c.disks.iter().filter_map(|d| d.host_device()) {
            match opts.host_disk {
                Some(h) if h != d => exits::fatal(&alloc::format!(
                    "guest {}: virtio-blk host:{d}: the hypervisor drives one host disk, {h}",
                    c.name
                )),
                _ => opts.host_disk = Some(d),
            }
        }
    }
    let mut wanted = opts.devices.clone();
    wanted.extend(opts.host_disk);
    let functions = match assign::host_functions(&plat, &wanted) {
        Ok(f) => f,
        Err(e) => exits::fatal(&e),
    };
    let mut free = guest::FreeRam::new(&host);
    let resources = platform::guests::HostResources::new(&plat, host.reservation(), functions);
    if let Err(e) = platform::guests::validate(&configs, &resources) {
        exits::fatal(&alloc::format!("{e}"));
    }
    if let Some(c) = configs.iter().find(|c| c.name == "hv") {
        exits::fatal(&alloc::format!(
            "guest {}: the name is the hypervisor's on the console",
            c.name
        ));
    }
    // Guest nodes' memory leaves the free RAM.
    for c in configs.iter().filter(|_| guest_nodes) {
        if let spec::GuestMemory::Static(ranges) = &c.memory {
            for r in ranges {
                if let Err(e) = free.take(r.base.0, r.size) {
                    exits::fatal(&alloc::format!("guest {}: memory: {e}", c.name));
                }
            }
        }
    }
    let specs: alloc::vec::Vec<spec::GuestSpec> = configs
        .iter()
        .map(|c| spec::GuestSpec::from_config(c, &host.cpus, entry::MAX_CPUS))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| exits::fatal(&e));
    if host.cpus.len() > entry::MAX_CPUS && specs.iter().any(spec::GuestSpec::is_single) {
        log::warn!(
            "{} CPUs: only the first {} run vCPUs",
            host.cpus.len(),
            entry::MAX_CPUS
        );
    }
    assign::arm_canary();
    let prepared = match assign::prepare(&plat, &opts) {
        Ok(p) => p,
        Err(e) => exits::fatal(&e),
    };
    *assign::HOST_SEGMENTS.lock() = prepared.segments;
    boottime::mark("host-pci");
    // `host-disk=`: the host virtio-blk the hypervisor drives (never shown
    // to a guest); `host-disk-selftest` reads (and, on a scratch image,
    // writes) it once at boot.
    let mut disk_intid = None;
    let mut disk_irq_selftest = false;
    if let Some(site) = prepared.host_disk.as_ref() {
        let mut disk = match hostdisk::HostDisk::probe(site) {
            Ok(d) => d,
            Err(e) => exits::fatal(&e),
        };
        if let hostdisk::Signal::Intx(i) = disk.signal() {
            disk_intid = Some(i);
        }
        let interrupts = disk.signal() != hostdisk::Signal::None;
        if bootargs
            .split_whitespace()
            .any(|a| a == "host-disk-selftest")
        {
            if let Err(e) = disk.selftest() {
                exits::fatal(&alloc::format!("host-disk={} selftest: {e}", site.sbdf));
            }
        }
        hostdisk::HOST_DISK.call_once(|| spin::Mutex::new(disk));
        disk_irq_selftest = interrupts;
        boottime::mark("host-disk");
    }
    // The physical CPUs the guests run on (index in `host.cpus`).
    let mut used_cpus: alloc::vec::Vec<usize> = specs.iter().flat_map(|s| s.cpus.clone()).collect();
    used_cpus.sort_unstable();
    used_cpus.dedup();
    // `its-selftest`: an ITS-made LPI (MAPD, MAPTI, MOVI, INT) must reach
    // the last CPU; reported at shutdown. After the host disk, so that
    // its LPIs are the first ones either way.
    if bootargs.split_whitespace().any(|a| a == "its-selftest") {
        match its::selftest(used_cpus.last().map_or(1, |&c| c + 1)) {
            Ok((dev, intid, cpu)) => log::info!(
                "ITS selftest: DeviceID {dev:#x} EventID 0 mapped to LPI {intid}, moved to CPU {cpu}"
            ),
            Err(e) => exits::fatal(&alloc::format!("ITS selftest: {e}")),
        }
    }
    // The guests: each gets its assigned devices (in the order they were
    // prepared), its RAM and its emulated devices.
    let gopts = guest::GuestOptions { psci };
    let mut assigned = prepared.assigned;
    let mut vms = alloc::vec::Vec::new();
    for (index, spec) in specs.iter().enumerate() {
        let (mine, rest): (alloc::vec::Vec<_>, alloc::vec::Vec<_>) = assigned
            .into_iter()
            .partition(|a| spec.devices.contains(&a.sbdf));
        assigned = rest;
        let mut vm = match guest::build(&host, index, spec, &mut free, &gopts, mine) {
            Ok(vm) => vm,
            Err(e) if specs.len() == 1 => exits::fatal(&alloc::format!("guest: {e}")),
            Err(e) => exits::fatal(&alloc::format!("guest {}: {e}", spec.name)),
        };
        boottime::mark("guest-build");
        if spec.disks.iter().any(|d| d.host_device().is_some()) {
            vm::HOST_DISK_GUEST.store(index, Ordering::Relaxed);
            if let (Some(_), Some(intid)) = (hostdisk::HOST_DISK.get(), disk_intid) {
                vm.irq_routes.push((intid, vm::IrqOwner::HostDisk));
            }
        }
        if let Err(e) = vm.boot.load() {
            exits::fatal(&alloc::format!("guest {}: {e}", spec.name));
        }
        boottime::mark("guest-load");
        vms.push(vm);
    }
    // The assigned devices' INTx lines: level, to the guest's first CPU,
    // enabled; they reach the guest hardware-linked. The host disk's too
    // (handled at EL2).
    for vm in &vms {
        let to = vm.pcpu_mpidr.first().copied().unwrap_or(0);
        for &(intid, _) in &vm.irq_routes {
            pgic.set_spi_edge(intid, false);
            pgic.enable_spi(intid, to);
        }
    }
    if let Some(d) = hostdisk::HOST_DISK.get() {
        if disk_irq_selftest {
            if let Err(e) = d.lock().start_irq_selftest() {
                exits::fatal(&alloc::format!("host-disk selftest: {e}"));
            }
        }
    }
    let vms = vm::install(vms);
    GIC.call_once(|| pgic);

    // The guests' CPU features, from the boot CPU's ID registers, before any
    // secondary configures its EL2 state from them.
    cpufeat::init();
    CPUS_READY.store(1, Ordering::SeqCst);
    entry::set_secondary_mmu(tables.registers());
    for &i in used_cpus.iter().filter(|&&i| i != 0) {
        let mpidr = host.cpus.get(i).copied().unwrap_or(0);
        let r = smc(
            u64::from(arch_emu::psci::CPU_ON_64),
            mpidr,
            entry::secondary_entry_address(),
            i as u64,
        );
        if r != 0 {
            exits::fatal(&alloc::format!(
                "PSCI CPU_ON of CPU {mpidr:#x} failed: {}",
                r as i64
            ));
        }
    }
    let ncpus = 1 + used_cpus.iter().filter(|&&i| i != 0).count();
    let mut spins = 0u64;
    while CPUS_READY.load(Ordering::SeqCst) < ncpus {
        spins += 1;
        if spins > 2_000_000_000 {
            exits::fatal("secondary CPUs did not come up");
        }
        core::hint::spin_loop();
    }
    boottime::mark("cpus-up");
    match vms {
        [vm] => log::info!(
            "{ncpus} CPUs up; entering the guest at {:#x}, DTB at {:#x}",
            vm.boot.entry,
            vm.boot.dtb_ipa
        ),
        _ => log::info!("{ncpus} CPUs up; starting {} guests", vms.len()),
    }
    boottime::report();
    // `its-selftest`: raised now that every redistributor is awake.
    if let Err(e) = its::selftest_raise() {
        exits::fatal(&alloc::format!("ITS selftest: INT: {e}"));
    }
    if vm::on_cpu(0).is_some() {
        configure_el2_for_guest(0);
    }
    console::share();
    // Each guest's vCPU 0 starts at its kernel with x0 = its DTB: the CPU
    // that runs it (this one included) takes it in `park`.
    for vm in vms {
        exits::start_vcpu(vm, 0, vm.boot.entry, vm.boot.dtb_ipa);
    }
    exits::park(0)
}

/// The guests, not yet validated: the host DT's
/// (`platform::guests::configure`: guest nodes, or the single guest of the
/// boot modules and the single-guest options). A bad configuration stops
/// the boot naming it.
fn guest_configs(
    plat: &platform::Platform,
    dtb: &[u8],
    bootargs: &str,
) -> alloc::vec::Vec<platform::guests::GuestConfig> {
    match platform::guests::configure(dtb, plat, bootargs) {
        Ok(g) => g,
        Err(e) => exits::fatal(&alloc::format!("{e}")),
    }
}

/// The physical GIC, once set up.
pub static GIC: spin::Once<gic::Gic> = spin::Once::new();

/// A secondary CPU, started by PSCI CPU_ON with its index.
#[no_mangle]
extern "C" fn secondary_main(idx: usize) -> ! {
    if let Some(g) = GIC.get() {
        let ppis = exits::HOST_IRQS.get().map_or(
            [
                exits::DEFAULT_VTIMER_INTID,
                exits::DEFAULT_PTIMER_INTID,
                exits::DEFAULT_MAINTENANCE_INTID,
            ],
            |h| [h.vtimer, h.ptimer, h.maintenance],
        );
        if let Err(e) = g.init_cpu(&ppis) {
            exits::fatal(e);
        }
    }
    firmware::probe_this_cpu(idx);
    configure_el2_for_guest(idx);
    CPUS_READY.fetch_add(1, Ordering::SeqCst);
    exits::park(idx)
}

/// Per-CPU EL2 state for running this CPU's vCPU (physical CPU `cpu`).
fn configure_el2_for_guest(cpu: usize) {
    let Some(vm::CpuSlot { vm, vcpu }) = vm::on_cpu(cpu) else {
        exits::fatal("no guest to configure this CPU for")
    };
    let view = cpufeat::init();
    let c = view.controls;
    // HCR_EL2 (E2H = 0): stage 2 on, set/way invalidation as clean+invalidate,
    // physical FIQ/IRQ/SError to EL2 (virtual ones to the guest), TLB and cache
    // maintenance broadcast inner shareable, SMC trapped (PSCI), EL1 in AArch64,
    // the ID register group trapped (TID3: the guest reads the table's view);
    // the enables and traps the feature table asks for (pointer authentication
    // untrapped, error records trapped, ...); every other trap off.
    let hcr = HCR_EL2::VM::Enable
        + HCR_EL2::SWIO::SET
        + HCR_EL2::FMO::EnableVirtualFIQ
        + HCR_EL2::IMO::EnableVirtualIRQ
        + HCR_EL2::AMO::SET
        + HCR_EL2::FB::SET
        + HCR_EL2::BSU::InnerShareable
        + HCR_EL2::TSC::EnableTrapEl1SmcToEl2
        + HCR_EL2::RW::EL1IsAarch64;
    HCR_EL2.set(hcr.value | arch_emu::cpufeat::hcr::TID3 | c.hcr);
    if c.hcx {
        // SAFETY: HCRX_EL2 exists (FEAT_HCX, ID_AA64MMFR1_EL1.HCX != 0); its bits
        // only enable EL1/EL0 instructions and registers (MSCEn: the memory copy
        // and set instructions) for the guest, never EL2 state.
        unsafe { write_sysreg!("S3_4_C1_C2_2", c.hcrx) };
    }
    // CPTR_EL2 (E2H = 0): no trap of CPACR_EL1, trace or FP/SIMD; SVE and SME
    // untrapped when the guest is given them (TZ and TSM are RES1 when SVE /
    // SME is not implemented); activity monitors trapped when the hardware has
    // them and the guest does not.
    let sve = c.cptr_clear & arch_emu::cpufeat::cptr::TZ != 0;
    let sme = c.cptr_clear & arch_emu::cpufeat::cptr::TSM != 0;
    let tam = c.cptr_set & arch_emu::cpufeat::cptr::TAM != 0;
    CPTR_EL2.write(
        cptr_el2::TCPAC.val(0)
            + CPTR_EL2::TAM.val(u64::from(tam))
            + cptr_el2::TTA.val(0)
            + cptr_el2::TSM.val(u64::from(!sme))
            + cptr_el2::TFP.val(0)
            + cptr_el2::TZ.val(u64::from(!sve))
            + cptr_el2::RES1,
    );
    if sve {
        // SAFETY: ZCR_EL2 exists (FEAT_SVE) and is not trapped (CPTR_EL2.TZ = 0);
        // the vector length affects SVE state only, which the hypervisor (softfloat)
        // never uses.
        unsafe { write_sysreg!("S3_4_C1_C2_0", zcr_el2::LEN) };
    }
    if sme {
        let smcr = smcr_el2::FA64 | smcr_el2::EZT0 | smcr_el2::LEN;
        // SAFETY: SMCR_EL2 exists (FEAT_SME) and is not trapped (CPTR_EL2.TSM = 0);
        // it controls SME state only, which the hypervisor never uses.
        unsafe { write_sysreg!("S3_4_C1_C2_6", smcr) };
    }
    // MDCR_EL2: the guest gets every PMU counter (HPMN = PMCR_EL0.N) and no debug
    // or PMU access traps (the reset value is UNKNOWN on hardware).
    let counters = (read_sysreg!("pmcr_el0") >> pmcr_el0::N_SHIFT) & pmcr_el0::N_MASK;
    MDCR_EL2.write(MDCR_EL2::HPMN.val(counters));
    // CNTHCTL_EL2: EL1 may read the physical counter and use the physical timer.
    CNTHCTL_EL2.write(CNTHCTL_EL2::EL1PCEN::SET + CNTHCTL_EL2::EL1PCTEN::SET);
    CNTVOFF_EL2.set(0);
    // SAFETY: VPIDR_EL2 is an EL2 register of every Armv8-A PE; the value only
    // changes what the guest reads from MIDR_EL1.
    unsafe { write_sysreg!("vpidr_el2", MIDR_EL1.get()) };
    let mpidr = vm.layout.mpidrs.get(vcpu).copied().unwrap_or(0);
    VMPIDR_EL2.set(VMPIDR_EL2::RES1::SET.modify(mpidr));
    // ICH_VMCR_EL2: the guest programs its virtual CPU interface itself.
    ICH_VMCR_EL2.set(0);
    gic::write_ich_hcr(gic::ich_hcr::EN);
    for i in 0..vm.lr_count {
        gic::write_lr(i, 0);
    }
    if let Some(s) = gic::lr_shadow(cpu) {
        s.lock().reset();
    }
    vm.stage2.lock().install(vm.vmid);
}

fn current_el() -> u64 {
    CurrentEL.read(CurrentEL::EL)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the console lock may be held by the panicking path; force it.
    unsafe { console::CONSOLE.force_unlock() };
    console::hv_line(format_args!("panic: {info}"));
    exits::power_off(2, SEMIHOSTING.load(Ordering::Relaxed))
}

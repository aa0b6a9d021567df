//! A guest's life: it runs until its PSCI SYSTEM_OFF or SYSTEM_RESET (PSCI
//! 1.1, DEN0022D 5.10, 5.11) or a fault the hypervisor cannot hand back to
//! it, then it stops alone: its CPUs parked, its devices reset, its RAM
//! scrubbed. A SYSTEM_RESET boots it again from its modules when its spec
//! says `on-reset` restart. The machine powers off when the last guest has
//! stopped, with a status that says how they ended: 0 when every guest
//! powered off, 2 when one faulted, else 3 (one reset: Linux's `panic=-1`
//! ends this way).

use core::sync::atomic::{AtomicUsize, Ordering};

use crate::spec::ResetAction;
use crate::vm::Vm;

/// Running its vCPUs.
pub const RUNNING: u8 = 0;
/// One of its CPUs is stopping it: the others park.
pub const STOPPING: u8 = 1;
/// Stopped for good.
pub const STOPPED: u8 = 2;

/// How a guest's life ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum End {
    /// Not ended.
    None = 0,
    /// PSCI SYSTEM_OFF.
    PoweredOff = 1,
    /// PSCI SYSTEM_RESET (or SYSTEM_RESET2) and its `on-reset` says stop.
    Reset = 2,
    /// An exception the hypervisor could not hand back to it.
    Faulted = 3,
}

impl End {
    fn from_u8(v: u8) -> End {
        match v {
            1 => End::PoweredOff,
            2 => End::Reset,
            3 => End::Faulted,
            _ => End::None,
        }
    }

    /// How it reads on the console.
    pub fn name(self) -> &'static str {
        match self {
            End::None => "running",
            End::PoweredOff => "powered off",
            End::Reset => "reset",
            End::Faulted => "faulted",
        }
    }
}

/// How `vm` ended (`End::None` while it runs).
pub fn end_of(vm: &Vm) -> End {
    End::from_u8(vm.end.load(Ordering::Acquire))
}

/// Guests stopped for good.
static STOPPED_GUESTS: AtomicUsize = AtomicUsize::new(0);

/// The machine's exit status from how the guests ended: 2 if one faulted,
/// else 3 if one reset, else 0.
pub fn exit_status(vms: &[Vm]) -> i32 {
    let ends = || vms.iter().map(end_of);
    if ends().any(|e| e == End::Faulted) {
        2
    } else if ends().any(|e| e == End::Reset) {
        3
    } else {
        0
    }
}

/// Most generic-counter ticks a stopping CPU waits for the guest's other
/// CPUs to park (or for the host disk to finish what was in flight): one
/// second at the counter's frequency.
fn one_second() -> u64 {
    crate::sysreg::read_sysreg!("cntfrq_el0").max(1)
}

/// Stops `vm` on behalf of its vCPU `vcpu`, running on physical CPU `cpu`,
/// for `why`; never returns (this CPU parks, or the machine powers off).
/// A second stop of the same guest (another of its vCPUs calling
/// SYSTEM_OFF meanwhile) just parks.
pub fn stop(vm: &Vm, vcpu: usize, cpu: usize, why: End) -> ! {
    crate::exits::retire_lrs(vm, vcpu);
    crate::exits::quiesce_timers();
    if vm
        .state
        .compare_exchange(RUNNING, STOPPING, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        crate::exits::park(cpu)
    }
    let vms = crate::vm::all();
    let restart = why == End::Reset
        && vm.boot.on_reset == ResetAction::Restart
        && !vm.boot.initrd_in_place
        && !vm.boot.kernel_in_place;
    // Its other CPUs leave the guest: a kick makes each exit, see the guest
    // stopping and park (`exits::handle_exit`, `wait_for_wakeup`).
    crate::exits::park_others(vm, vcpu, one_second());
    let last = !restart && STOPPED_GUESTS.load(Ordering::Acquire) + 1 == vms.len();
    if last {
        // The machine powers off now: its devices are reset and read back
        // there, and no one will use its RAM again.
        stopped(vm, why, cpu, false)
    }
    reset_devices(vm);
    if !restart {
        stopped(vm, why, cpu, true)
    }
    scrub(vm, false);
    vm.restarts.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = vm.boot.load() {
        log::error!("guest {}: restart: {e}: stopped", vm.name);
        stopped(vm, End::Faulted, cpu, true)
    }
    log::info!(
        "guest {}: SYSTEM_RESET: booting it again (restart {})",
        vm.name,
        vm.restarts.load(Ordering::Relaxed)
    );
    // The hardware-linked SPIs it may have left active are free again.
    clear_active_spis(vm);
    vm.state.store(RUNNING, Ordering::Release);
    crate::exits::start_vcpu(vm, 0, vm.boot.entry, vm.boot.dtb_ipa);
    crate::exits::park(cpu)
}

/// Marks `vm` stopped for `why`, says so, moves the console's input focus
/// away from it, and powers the machine off if it was the last guest
/// running; else scrubs its RAM (`scrub`) and parks this CPU.
fn stopped(vm: &Vm, why: End, cpu: usize, scrub_it: bool) -> ! {
    let vms = crate::vm::all();
    vm.end.store(why as u8, Ordering::Release);
    vm.state.store(STOPPED, Ordering::Release);
    let n = STOPPED_GUESTS.fetch_add(1, Ordering::AcqRel) + 1;
    if vms.len() > 1 {
        log::info!(
            "guest {}: {}: stopped; {} of {} guests still run",
            vm.name,
            why.name(),
            vms.len() - n,
            vms.len()
        );
    }
    crate::console::guest_stopped(vm);
    if n == vms.len() {
        crate::exits::shutdown(exit_status(vms))
    }
    if scrub_it {
        scrub(vm, true);
    }
    crate::exits::park(cpu)
}

/// Clears the active state of `vm`'s hardware-linked SPIs at the
/// distributor: those it had not deactivated when it stopped, and those
/// that arrived while it was stopped (left active so that a line still
/// asserted cannot fire again and again).
fn clear_active_spis(vm: &Vm) {
    if let Some(g) = crate::GIC.get() {
        for &(intid, owner) in &vm.irq_routes {
            if matches!(owner, crate::vm::IrqOwner::GuestSpi(_)) {
                g.clear_active(intid);
            }
        }
    }
}

/// Resets `vm`'s devices as a platform reset would: every function of its
/// segment (assigned host devices through FLR or a bus reset, the
/// virtio-blk once the host disk has finished what was in flight), its
/// BARs unmapped from stage 2, its UART back to what firmware leaves, its
/// vGIC fresh, its vCPUs off.
fn reset_devices(vm: &Vm) {
    {
        let mut dev = vm.devices.lock();
        if let Some(seg) = dev.segment.as_mut() {
            let fx = seg.reset_all();
            let _ = vm.apply(seg, fx);
            // The host disk may still write into guest RAM: wait (bounded)
            // until nothing is in flight, completions popped as they come.
            if crate::vm::host_disk_guest().is_some_and(|g| core::ptr::eq(g, vm)) {
                let start = crate::exitstats::now();
                while crate::hostdisk::in_flight() > 0
                    && crate::exitstats::now().wrapping_sub(start) < one_second()
                {
                    crate::hostdisk::handle_irq();
                    let _ = seg.poll();
                }
                if crate::hostdisk::in_flight() > 0 {
                    log::error!(
                        "guest {}: the host disk still has requests in flight after its reset",
                        vm.name
                    );
                }
            }
        }
        dev.uart = crate::guest::firmware_uart();
        dev.uart_line = false;
    }
    match crate::guest::new_vgic(&vm.layout, &vm.boot.hw_links) {
        Ok(g) => *vm.vgic.lock() = g,
        Err(e) => log::error!("guest {}: vGIC: {e}", vm.name),
    }
    clear_active_spis(vm);
    for p in vm.power.lock().iter_mut() {
        *p = crate::vm::Power::Off;
    }
}

/// Zeroes `vm`'s RAM (and its RAM disks when `disk_too`), cleaned to the
/// point of coherency: nothing it held reaches whoever runs there next.
fn scrub(vm: &Vm, disk_too: bool) {
    let disks: &[vbus::MemRange<vbus::Pa>] = if disk_too { &vm.boot.ram_disks } else { &[] };
    let runs = vm.boot.ram.host_runs().chain(disks.iter().copied());
    for r in runs {
        zero(r.base.0 as usize, r.size as usize);
        crate::sysreg::clean_dcache_range(r.base.0 as usize, r.size as usize);
    }
}

/// Zeroes `[base, base + len)` of host RAM this guest alone had: with DC ZVA
/// (a block of DCZID_EL0.BS words each) where it is permitted and the range
/// is aligned to the block, else with stores.
fn zero(base: usize, len: usize) {
    let dczid = crate::sysreg::read_sysreg!("dczid_el0");
    let block = 4usize << (dczid & 0xf);
    // DCZID_EL0.DZP (bit 4): DC ZVA prohibited.
    if dczid & (1 << 4) == 0 && base % block == 0 && len % block == 0 {
        let mut a = base;
        while a < base + len {
            // SAFETY: `a` is a block of the guest's RAM or RAM disk (host RAM
            // identity-mapped Normal memory at EL2), which nothing else uses
            // now: its CPUs are parked and its devices reset.
            unsafe { core::arch::asm!("dc zva, {}", in(reg) a, options(nostack)) };
            a += block;
        }
        // SAFETY: a barrier; no memory is touched.
        unsafe { core::arch::asm!("dsb ish", options(nostack)) };
        return;
    }
    // SAFETY: as above, the range is the guest's own RAM or RAM disk.
    unsafe { core::ptr::write_bytes(base as *mut u8, 0, len) };
}

//! The probe guest: a bare-metal program the end-to-end tests boot as the guest
//! kernel (under the hypervisor or directly on QEMU) to check what Linux never
//! exercises: odd PSCI arguments, malformed virtio requests, and the like.
//!
//! It prints one line per check,
//!
//! ```text
//! PROBE ok virtio-blk/header-too-short status=IOERR [virtio 1.2 5.2.6.1]
//! PROBE FAIL psci/cpu-on-reserved-mpidr got 0 want -2 [PSCI 1.1 5.1.4]
//! ```
//!
//! then `PROBE-DONE checks=N failed=M`, and powers the machine off through
//! PSCI SYSTEM_OFF. `tests/tests/e2e/probe.rs` boots it and asserts the lines.
//!
//! The command line picks the groups to run: `probe=virtio-blk,psci`; without
//! it, every group runs.
#![no_std]
#![no_main]

mod aarch32;
mod aborts;
mod boot;
mod console;
mod cost;
mod cpufeat;
mod dma;
mod dt;
mod ecam;
mod entry;
mod exc;
mod fault;
mod gic;
mod gic_regs;
mod icc;
mod io;
mod mmio;
mod mmu;
mod msi;
mod pci;
mod pl011;
mod psci;
mod psci_checks;
mod report;
mod smccc;
mod timers;
mod virtio_blk;

use core::sync::atomic::{AtomicBool, Ordering};

/// A check group: its name (what `probe=` selects it by) and its code.
type Group = (&'static str, fn(&dt::Platform));

/// The check groups, in the order they run.
const GROUPS: &[Group] = &[
    ("boot", boot::run),
    ("cpufeat", cpufeat::run),
    ("timers", timers::run),
    ("virtio-blk", virtio_blk::run),
    ("virtio-blk-flood", virtio_blk::flood),
    ("psci", psci_checks::run),
    ("smccc", smccc::run),
    ("icc", icc::run),
    ("mmio", mmio::run),
    ("ecam", ecam::run),
    ("gic-regs", gic_regs::run),
    ("pl011", pl011::run),
    ("msi", msi::run),
    ("aborts", aborts::run),
    ("aarch32", aarch32::run),
    // Ends the guest: only when asked for (`probe=fault`).
    ("fault", fault::run),
    // Timing, not conformance: only when asked for (`probe=cost`).
    ("cost", cost::run),
];

/// Groups that run only when `probe=` names them: timing (`cost`), and the
/// groups that need their harness: `pl011` waits for typed input after
/// `PROBE-INPUT-READY`, `virtio-blk-flood` for a host disk slow enough to
/// hold requests in flight (the e2e tests provide both); and `fault`, after
/// which the guest is stopped.
const OPT_IN: &[&str] = &["cost", "pl011", "virtio-blk-flood", "fault"];

/// Set once the boot CPU has the platform; secondaries wait for it.
static READY: AtomicBool = AtomicBool::new(false);

/// The boot CPU's Rust entry, MMU on, with the DTB's address.
#[no_mangle]
extern "C" fn probe_main(dtb: usize) -> ! {
    let Some(p) = dt::Platform::parse(dtb) else {
        // No console to say so on: stop.
        psci::system_off_fallback()
    };
    console::init(p.uart);
    psci::set_conduit(&p);
    READY.store(true, Ordering::Release);
    println!(
        "PROBE-START cpus={} ram={:#x}+{:#x} gicd={:#x} gicr={:#x}",
        p.cpus().len(),
        p.ram.0,
        p.ram.1,
        p.gicd,
        p.gicr
    );
    if let Some(pci) = &p.pci {
        println!(
            "PROBE-INFO pci segment {} ecam {:#x} buses {}-{} mem32 {:#x}+{:#x} mem64 {:?}",
            pci.segment, pci.ecam, pci.buses.0, pci.buses.1, pci.mem32.0, pci.mem32.1, pci.mem64
        );
    }
    let wanted = p.bootargs_value("probe");
    for (name, run) in GROUPS {
        let selected = match wanted {
            Some(w) => w.split(',').any(|g| g == *name),
            None => !OPT_IN.contains(name),
        };
        if selected {
            run(&p);
        }
    }
    report::done();
    psci::system_off(&p)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    println!("PROBE-PANIC {info}");
    report::done();
    psci::system_off_fallback()
}

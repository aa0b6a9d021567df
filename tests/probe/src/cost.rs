//! The `cost` group: what one trapped operation costs, guest and EL2
//! together, timed by the virtual counter (CNTVCT_EL0) around a loop of
//! operations.
//!
//! Under QEMU's `-icount shift=0` every instruction (at any exception level)
//! advances the virtual clock by 2^0 ns, and the generic counter ticks at
//! CNTFRQ_EL0 from that clock, so `ticks * 10^9 / CNTFRQ` over a loop is
//! the number of instructions it ran, exactly and on any host. (QEMU 10's
//! `max` CPU on `virt` runs the counter at 1 GHz; other CPUs at 62.5 MHz, so
//! the frequency is read, not assumed.) Without icount the same lines are
//! nanoseconds of host time, which are noise.
//!
//! Each figure is the loop's instructions per iteration minus those of the
//! same loop with its body removed (the loop's own cost, `loop=`): what the
//! operation adds, its own instruction(s) included. One line per figure,
//!
//! ```text
//! PROBE-COST ecam-read=376
//! ```
//!
//! and PROBE checks that each operation did what it should (a measured path
//! that fails is not the path to measure). With `cost=icount` on the command
//! line (the bench and the e2e test run QEMU with `-icount shift=0`) a check
//! also calibrates: a body of 100 NOPs must measure 100.

use core::arch::asm;

use crate::dt::Platform;
use crate::pci::{self, reg, Bdf, Ecam};
use crate::report::{check, eq};
use crate::virtio_blk::{self, Dev};

const G: &str = "cost";

/// Iterations of the trapped-access loops (about 2 M instructions each).
const N: u64 = 4000;
/// Requests timed end to end.
const REQUESTS: u64 = 500;

/// GICD_IIDR (GICv3 12.9.18): a read-only identification register.
const GICD_IIDR: usize = 0x08;
/// UARTFR, the PL011's flag register (PL011 TRM 3.3.3).
const UARTFR: usize = 0x18;
/// PSCI_VERSION (DEN0022 5.1.1).
const PSCI_VERSION: u64 = 0x8400_0000;

/// The virtual counter, after earlier instructions completed.
fn ticks() -> u64 {
    let c: u64;
    // SAFETY: reading the virtual counter has no side effect.
    unsafe { asm!("isb", "mrs {}, cntvct_el0", out(reg) c, options(nomem, nostack)) };
    c
}

fn cntfrq() -> u64 {
    let f: u64;
    // SAFETY: reading the counter frequency has no side effect.
    unsafe { asm!("mrs {}, cntfrq_el0", out(reg) f, options(nomem, nostack)) };
    f
}

/// `ticks` of the counter over `n` iterations, in tenths of a nanosecond
/// (under `-icount shift=0`, tenths of an instruction) per iteration.
fn per_iteration_x10(ticks: u64, n: u64) -> u64 {
    let f = u128::from(cntfrq().max(1));
    (u128::from(ticks) * 10_000_000_000 / f / u128::from(n.max(1))) as u64
}

/// Runs an asm body `n` times (x11 holds `addr`, x10 `value`, x12 `fid`;
/// x0-x3 and x9 may be clobbered, x9 is returned) and gives the counter
/// ticks it took.
macro_rules! timed {
    ($n:expr, $addr:expr, $value:expr, $fid:expr, $($body:literal),*) => {{
        let n: u64 = $n;
        let addr: usize = $addr;
        let value: u64 = $value;
        let fid: u64 = $fid;
        let last: u64;
        // The hypervisor's exit statistics from here on (report_el2).
        crate::psci::call(EXIT_STATS_RESET, 0, 0, 0);
        let t0 = ticks();
        // SAFETY: the body is one of this module's: a load or store of an
        // emulated register the DT names (Device memory, no effect on the
        // probe's memory) or an SMCCC call that clobbers at most x0-x3 (PSCI
        // 1.1 5.2: x4-x17 preserved by PSCI_VERSION), all declared.
        unsafe {
            asm!(
                "2:",
                $($body,)*
                "subs {n}, {n}, #1",
                "b.ne 2b",
                n = inout(reg) n => _,
                in("x11") addr,
                in("x10") value,
                in("x12") fid,
                out("x9") last,
                out("x0") _, out("x1") _, out("x2") _, out("x3") _,
                options(nostack)
            )
        };
        let t = ticks().wrapping_sub(t0);
        (t, last)
    }};
}

/// Tenths of an instruction per iteration of the empty loop.
fn loop_cost_x10() -> u64 {
    let (t, _) = timed!(N, 0, 0, 0, "");
    per_iteration_x10(t, N)
}

/// The hypervisor's exit statistics calls (SMCCC Vendor Specific Hypervisor
/// Service, hypervisor/src/exitstats.rs).
const EXIT_STATS_QUERY: u32 = 0xc600_0001;
const EXIT_STATS_RESET: u32 = 0xc600_0003;
/// Causes in the hypervisor's table, by index.
const CAUSES: [&str; 14] = [
    "ecam",
    "pci-bar",
    "msi-x",
    "gicd",
    "gicr",
    "pl011",
    "psci/smccc",
    "sgi",
    "id-regs",
    "sysreg",
    "wfi/wfe",
    "irq",
    "abort",
    "other",
];

/// One cause's (exits, EL2 ticks), `None` if the hypervisor does not answer.
fn exit_stats(index: u64) -> Option<(u64, u64)> {
    let (x0, x1): (u64, u64);
    // SAFETY: an SMCCC fast call: x0-x3 results, x4-x17 preserved (SMCCC 1.1 2.6).
    unsafe {
        asm!("hvc #0", inout("x0") u64::from(EXIT_STATS_QUERY) => x0,
            inout("x1") index => x1, out("x2") _, out("x3") _, options(nostack))
    };
    (x0 as i64 >= 0).then_some((x0, x1))
}

/// Prints `PROBE-COST-EL2 name=ticks cause=C exits=N`: the EL2 handler's
/// time per exit of the cause that exited most since the last reset (its
/// counter ticks, instructions under icount; the vector's register save and
/// restore are outside).
fn report_el2(p: &Platform, name: &str) {
    if !p.psci_hvc {
        return;
    }
    let Some((i, (exits, ticks))) = (0..CAUSES.len())
        .filter_map(|i| Some((i, exit_stats(i as u64)?)))
        .max_by_key(|(_, (e, _))| *e)
    else {
        return;
    };
    if let Some(per) = ticks.checked_div(exits) {
        crate::println!(
            "PROBE-COST-EL2 {name}={per} cause={} exits={exits}",
            CAUSES.get(i).unwrap_or(&"?")
        );
    }
}

/// Prints `PROBE-COST name=value` (the operation's instructions, rounded)
/// from a loop's ticks over `n` iterations less the empty loop's cost, and
/// the EL2 part ([`report_el2`]).
fn report(p: &Platform, name: &str, ticks: u64, n: u64, loop_x10: u64) -> u64 {
    let v = per_iteration_x10(ticks, n)
        .saturating_sub(loop_x10)
        .div_ceil(10);
    crate::println!("PROBE-COST {name}={v}");
    report_el2(p, name);
    v
}

/// Runs the group.
pub fn run(p: &Platform) {
    let freq = cntfrq();
    let icount = p.bootargs_value("cost") == Some("icount");
    let loop_x10 = loop_cost_x10();
    crate::println!(
        "PROBE-COST-INFO cntfrq={freq} iterations={N} loop={}.{} icount={}",
        loop_x10 / 10,
        loop_x10 % 10,
        if icount { "on" } else { "off" }
    );

    // Calibration: 100 NOPs per iteration are 100 instructions.
    let (t, _) = timed!(N, 0, 0, 0, ".rept 100", "nop", ".endr");
    let nops = per_iteration_x10(t, N)
        .saturating_sub(loop_x10)
        .div_ceil(10);
    crate::println!("PROBE-COST nop100={nops}");
    if icount {
        check(
            nops == 100,
            G,
            "icount-calibration",
            format_args!("100 NOPs measured {nops} instructions at CNTFRQ {freq}"),
            "QEMU -icount shift=0: 1 instruction = 1 ns of virtual time; Arm ARM D12.1 CNTFRQ_EL0",
        );
    }

    // hvc round trip: PSCI_VERSION, the cheapest call that goes through the
    // PSCI dispatcher.
    if p.psci_hvc {
        let (t, v) = timed!(N, 0, 0, PSCI_VERSION, "mov x0, x12", "hvc #0", "mov x9, x0");
        report(p, "hvc", t, N, loop_x10);
        eq(
            G,
            "hvc-psci-version",
            v,
            0x1_0001,
            "PSCI 1.1 5.1.1 PSCI_VERSION",
        );
    }

    // A GICD register read.
    let (t, v) = timed!(N, p.gicd + GICD_IIDR, 0, 0, "ldr w9, [x11]");
    report(p, "gicd-read", t, N, loop_x10);
    check(
        v & 0xfff != 0,
        G,
        "gicd-iidr",
        format_args!("GICD_IIDR {v:#x}"),
        "GICv3 12.9.18 GICD_IIDR.Implementer",
    );

    // A PL011 register read.
    let (t, v) = timed!(N, p.uart + UARTFR, 0, 0, "ldr w9, [x11]");
    report(p, "pl011-read", t, N, loop_x10);
    check(
        v >> 9 == 0 && v & (1 << 7) != 0,
        G,
        "pl011-fr",
        format_args!("UARTFR {v:#x} (9 bits, TXFE: nothing being sent)"),
        "PL011 TRM 3.3.3 UARTFR",
    );

    ecam_costs(p, loop_x10);
    virtio_costs(p, loop_x10);
    exit_stats_checks(p);
}

/// The exit statistics hypercall counts what it should: N ECAM reads are N
/// ECAM exits; an index past the last cause is NOT_SUPPORTED.
fn exit_stats_checks(p: &Platform) {
    let Some(pci) = p.pci.filter(|_| p.psci_hvc) else {
        return;
    };
    let first = Bdf {
        bus: pci.buses.0,
        dev: 1,
        func: 0,
    };
    let (_, _) = timed!(N, ecam_addr(&pci, first, 0), 0, 0, "ldr w9, [x11]");
    eq(
        G,
        "exit-stats-ecam",
        exit_stats(0).map(|s| s.0),
        Some(N),
        "hypervisor/src/exitstats.rs EXIT_STATS_QUERY(0): ECAM exits",
    );
    eq(
        G,
        "exit-stats-past-last-cause",
        exit_stats(CAUSES.len() as u64),
        None,
        "SMCCC 1.1 NOT_SUPPORTED",
    );
}

fn ecam_addr(pci: &crate::dt::Pci, f: Bdf, off: u16) -> usize {
    pci.ecam
        + (usize::from(f.bus - pci.buses.0) << 20)
        + (usize::from(f.dev) << 15)
        + (usize::from(f.func) << 12)
        + usize::from(off)
}

/// Config reads and writes through the ECAM window: the first root port, the
/// last root port on bus 0, and the empty slot below the last port (routed
/// by bus number past every port), the figures that grow with the ports.
fn ecam_costs(p: &Platform, loop_x10: u64) {
    let Some(pci) = p.pci else {
        return;
    };
    // Firmware-style numbering: every port gets its secondary bus.
    let seg = pci::setup(&pci);
    let e: Ecam = seg.ecam;
    let bus0 = pci.buses.0;
    let ports: heapless_ports::Ports = (0..32u8)
        .map(|dev| Bdf {
            bus: bus0,
            dev,
            func: 0,
        })
        .filter(|&f| e.read16(f, reg::VENDOR_ID) != 0xffff)
        .collect();
    let (Some(first), Some(last)) = (ports.first(), ports.last()) else {
        check(
            false,
            G,
            "root-ports",
            format_args!("no function on bus {bus0}"),
            "PCI Express Base 7.2.2",
        );
        return;
    };
    crate::println!("PROBE-COST-INFO root-ports={}", ports.len());
    let id = e.read32(first, reg::VENDOR_ID);

    let (t, v) = timed!(N, ecam_addr(&pci, first, 0), 0, 0, "ldr w9, [x11]");
    report(p, "ecam-read", t, N, loop_x10);
    eq(
        G,
        "ecam-read-value",
        v as u32,
        id,
        "PCI Express Base 7.5.1.1.1",
    );

    let (t, v) = timed!(N, ecam_addr(&pci, last, 0), 0, 0, "ldr w9, [x11]");
    report(p, "ecam-read-last-port", t, N, loop_x10);
    eq(
        G,
        "ecam-read-last-port-value",
        v as u32,
        e.read32(last, reg::VENDOR_ID),
        "PCI Express Base 7.5.1.1.1",
    );

    // Below the last port: its secondary bus, device 0, which is empty.
    let secondary = e.read8(last, reg::PRIMARY_BUS + 1);
    let below = Bdf {
        bus: secondary,
        dev: 0,
        func: 0,
    };
    if secondary > bus0 && secondary <= pci.buses.1 && e.read32(below, 0) == u32::MAX {
        let (t, v) = timed!(N, ecam_addr(&pci, below, 0), 0, 0, "ldr w9, [x11]");
        report(p, "ecam-read-below-last-port", t, N, loop_x10);
        eq(
            G,
            "ecam-read-below-last-port-value",
            v as u32,
            u32::MAX,
            "PCI Express Base 2.3.2: no function, all ones",
        );
    }

    // A write: the first port's Interrupt Line dword (line, pin, Bridge
    // Control) with the value it holds, as a read-modify-write leaves it.
    const INTERRUPT_LINE: u16 = 0x3c;
    let old = e.read32(first, INTERRUPT_LINE);
    let (t, _) = timed!(
        N,
        ecam_addr(&pci, first, INTERRUPT_LINE),
        u64::from(old),
        0,
        "str w10, [x11]"
    );
    report(p, "ecam-write", t, N, loop_x10);
    eq(
        G,
        "ecam-write-kept",
        e.read32(first, INTERRUPT_LINE),
        old,
        "PCI Express Base 7.5.1.1.13, 7.5.1.3.13",
    );
}

/// A virtio notify with nothing new in the ring, and a RAM disk read of one
/// sector end to end (descriptors written, notify, completion polled).
fn virtio_costs(p: &Platform, loop_x10: u64) {
    let Some(mut d) = Dev::find(p) else {
        return;
    };
    if !d.init() {
        check(
            false,
            G,
            "virtio-blk-init",
            format_args!("device initialization failed"),
            "virtio 1.2 3.1.1",
        );
        return;
    }
    // One request first: the queue's first use is not the steady state.
    let (o, s) = d.request(virtio_blk::T_IN, 0, 512);
    eq(
        G,
        "virtio-blk-read",
        (o, s),
        (virtio_blk::Outcome::Used(513), 0),
        "virtio 1.2 5.2.6",
    );
    let (t, _) = timed!(N, d.notify_addr(), 0, 0, "strh w10, [x11]");
    report(p, "virtio-notify", t, N, loop_x10);
    let t0 = ticks();
    let mut bad = 0u64;
    for i in 0..REQUESTS {
        if d.request(virtio_blk::T_IN, i % 64, 512).1 != 0 {
            bad += 1;
        }
    }
    let t = ticks().wrapping_sub(t0);
    report(p, "virtio-blk-read-512", t, REQUESTS, 0);
    eq(G, "virtio-blk-requests-ok", bad, 0, "virtio 1.2 5.2.6");
}

/// The root ports found on bus 0, without an allocator.
mod heapless_ports {
    use crate::pci::Bdf;

    /// Up to 32 functions.
    pub struct Ports {
        f: [Option<Bdf>; 32],
        n: usize,
    }

    impl Ports {
        pub fn len(&self) -> usize {
            self.n
        }
        pub fn first(&self) -> Option<Bdf> {
            self.f.first().copied().flatten()
        }
        pub fn last(&self) -> Option<Bdf> {
            self.n
                .checked_sub(1)
                .and_then(|i| self.f.get(i).copied().flatten())
        }
    }

    impl FromIterator<Bdf> for Ports {
        fn from_iter<I: IntoIterator<Item = Bdf>>(it: I) -> Self {
            let mut p = Ports {
                f: [None; 32],
                n: 0,
            };
            for b in it {
                if let Some(s) = p.f.get_mut(p.n) {
                    *s = Some(b);
                    p.n += 1;
                }
            }
            p
        }
    }
}

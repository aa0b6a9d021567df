//! The `psci` group: every PSCI 1.1 function (Arm DEN 0022D.b) with valid,
//! reserved and out-of-range arguments, from the boot CPU and from a
//! secondary, and CPU_SUSPEND's standby and powerdown states woken by the
//! virtual timer.

use core::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};

use crate::dt::Platform;
use crate::report::{check, eq};
use crate::{gic, psci};

const G: &str = "psci";

pub const PSCI_VERSION: u32 = 0x8400_0000;
pub const CPU_SUSPEND_32: u32 = 0x8400_0001;
pub const CPU_SUSPEND_64: u32 = 0xc400_0001;
pub const CPU_ON_32: u32 = 0x8400_0003;
pub const AFFINITY_INFO_64: u32 = 0xc400_0004;
pub const MIGRATE_64: u32 = 0xc400_0005;
pub const MIGRATE_INFO_TYPE: u32 = 0x8400_0006;
pub const PSCI_FEATURES: u32 = 0x8400_000a;
pub const SYSTEM_SUSPEND_64: u32 = 0xc400_000e;
pub const SYSTEM_RESET2_64: u32 = 0xc400_0012;
pub const MEM_PROTECT: u32 = 0x8400_0013;
pub const MEM_PROTECT_CHECK_RANGE_64: u32 = 0xc400_0014;

const SUCCESS: i64 = 0;
const NOT_SUPPORTED: i64 = -1;
const INVALID_PARAMETERS: i64 = -2;
const ALREADY_ON: i64 = -4;
const INVALID_ADDRESS: i64 = -9;
const AFF_ON: i64 = 0;
const AFF_OFF: i64 = 1;

/// The extended power_state format: StateType bit 30 (powerdown), StateID 0.
const POWERDOWN: u64 = 1 << 30;

fn c(fid: u32, a1: u64, a2: u64, a3: u64) -> i64 {
    psci::call(fid, a1, a2, a3) as i64
}

/// The platform, for jobs on other CPUs (set before any runs; `probe_main`'s
/// `Platform` lives as long as the program).
static PLAT: AtomicUsize = AtomicUsize::new(0);

fn plat() -> Option<&'static Platform> {
    let a = PLAT.load(Ordering::Acquire);
    // SAFETY: 0 or the address of `probe_main`'s `Platform`, which never goes
    // out of scope (`probe_main` does not return) and is not written again.
    (a != 0).then(|| unsafe { &*(a as *const Platform) })
}

/// Results a secondary's job leaves for the boot CPU to report.
static R: [AtomicI64; 8] = [const { AtomicI64::new(i64::MIN) }; 8];
static RESUMED: AtomicBool = AtomicBool::new(false);

fn store(i: usize, v: i64) {
    if let Some(r) = R.get(i) {
        r.store(v, Ordering::Release);
    }
}

fn load(i: usize) -> i64 {
    R.get(i).map_or(i64::MIN, |r| r.load(Ordering::Acquire))
}

/// On a secondary: the argument checks again, from there.
fn checks_from_secondary(_idx: usize) {
    let Some(p) = plat() else { return };
    let boot = p.cpus().first().copied().unwrap_or(0);
    store(0, c(PSCI_VERSION, 0, 0, 0));
    store(1, c(psci::CPU_ON_64, (1 << 24) | boot, 0, 0));
    store(2, c(psci::CPU_ON_64, boot, psci_entry(), 0));
    store(3, c(AFFINITY_INFO_64, boot, 0, 0));
    store(4, c(AFFINITY_INFO_64, gic::my_mpidr(), 0, 0));
    store(5, c(CPU_SUSPEND_64, 1 << 31, 0, 0));
}

fn psci_entry() -> u64 {
    crate::entry::secondary_entry_address()
}

/// On a secondary: CPU_SUSPEND to powerdown, woken by the virtual timer; it
/// should come back at the secondary entry point, X0 = context_id = its index,
/// and run [`resumed`].
fn powerdown(idx: usize) {
    let Some(p) = plat() else { return };
    if gic::vtimer_wakeup_ready(p).is_none() {
        store(6, i64::MIN + 1);
        return;
    }
    psci::set_next_job(idx, resumed);
    gic::vtimer_arm(5);
    // Returns only on failure.
    store(6, c(CPU_SUSPEND_64, POWERDOWN, psci_entry(), idx as u64));
}

fn resumed(idx: usize) {
    let fired = gic::vtimer_fired();
    gic::vtimer_stop();
    let intid = gic::ack_group1();
    store(7, i64::from(intid));
    RESUMED.store(fired && crate::entry::cpu_index() == idx, Ordering::Release);
}

/// AFFINITY_INFO of `mpidr` until it reads OFF (a CPU that called CPU_OFF gets
/// there soon after), bounded.
fn wait_off(mpidr: u64) -> i64 {
    let mut r = c(AFFINITY_INFO_64, mpidr, 0, 0);
    for _ in 0..1_000_000 {
        if r == AFF_OFF {
            break;
        }
        core::hint::spin_loop();
        r = c(AFFINITY_INFO_64, mpidr, 0, 0);
    }
    r
}

/// Runs the group.
pub fn run(p: &Platform) {
    PLAT.store(p as *const Platform as usize, Ordering::Release);
    let cpus = p.cpus();
    let boot = cpus.first().copied().unwrap_or(0);
    eq(
        G,
        "version",
        c(PSCI_VERSION, 0, 0, 0),
        0x1_0001,
        "PSCI 1.1 5.3 PSCI_VERSION",
    );

    // PSCI_FEATURES: what is implemented, and what is not.
    for (name, fid) in [
        ("features-cpu-off", psci::CPU_OFF),
        ("features-cpu-on", psci::CPU_ON_64),
        ("features-affinity-info", AFFINITY_INFO_64),
        ("features-system-off", psci::SYSTEM_OFF),
        ("features-system-reset2", SYSTEM_RESET2_64),
        ("features-smccc-version", 0x8000_0000),
    ] {
        eq(
            G,
            name,
            c(PSCI_FEATURES, u64::from(fid), 0, 0),
            SUCCESS,
            "PSCI 1.1 PSCI_FEATURES",
        );
    }
    // Fault 2 of issue 9: CPU_SUSPEND reported, extended StateID format (bit 1).
    eq(
        G,
        "features-cpu-suspend-64",
        c(PSCI_FEATURES, u64::from(CPU_SUSPEND_64), 0, 0),
        2,
        "PSCI 1.1 PSCI_FEATURES: CPU_SUSPEND flags, bit 1 extended power_state",
    );
    eq(
        G,
        "features-cpu-suspend-32",
        c(PSCI_FEATURES, u64::from(CPU_SUSPEND_32), 0, 0),
        2,
        "PSCI 1.1 PSCI_FEATURES: CPU_SUSPEND flags, bit 1 extended power_state",
    );
    for (name, fid) in [
        ("features-migrate", MIGRATE_64),
        ("features-system-suspend", SYSTEM_SUSPEND_64),
        ("features-mem-protect", MEM_PROTECT),
        (
            "features-mem-protect-check-range",
            MEM_PROTECT_CHECK_RANGE_64,
        ),
        ("features-unknown", 0x8400_001f),
    ] {
        eq(
            G,
            name,
            c(PSCI_FEATURES, u64::from(fid), 0, 0),
            NOT_SUPPORTED,
            "PSCI 1.1 PSCI_FEATURES: NOT_SUPPORTED for what is not implemented",
        );
    }
    for (name, fid) in [
        ("migrate-not-supported", MIGRATE_64),
        ("system-suspend-not-supported", SYSTEM_SUSPEND_64),
        ("mem-protect-not-supported", MEM_PROTECT),
        (
            "mem-protect-check-range-not-supported",
            MEM_PROTECT_CHECK_RANGE_64,
        ),
        ("unknown-function-not-supported", 0xc400_00ff),
    ] {
        eq(
            G,
            name,
            c(fid, 0, 0, 0),
            NOT_SUPPORTED,
            "SMCCC 1.1: unknown or unimplemented function",
        );
    }
    eq(
        G,
        "migrate-info-type",
        c(MIGRATE_INFO_TYPE, 0, 0, 0),
        2,
        "PSCI 1.1 5.9 MIGRATE_INFO_TYPE: 2, no migration needed",
    );
    eq(
        G,
        "system-reset2-reserved-type",
        c(SYSTEM_RESET2_64, 1, 0, 0),
        INVALID_PARAMETERS,
        "PSCI 1.1 SYSTEM_RESET2: reserved architectural reset_type",
    );
    eq(
        G,
        "system-reset2-vendor-type",
        c(SYSTEM_RESET2_64, 1 << 31, 0, 0),
        INVALID_PARAMETERS,
        "PSCI 1.1 SYSTEM_RESET2: no vendor-specific reset_type implemented",
    );

    // CPU_ON and AFFINITY_INFO arguments.
    let second = cpus.get(1).copied();
    // Fault 1 of issue 9.
    eq(
        G,
        "cpu-on-reserved-bits-24-31",
        c(
            psci::CPU_ON_64,
            (1 << 24) | second.unwrap_or(1),
            psci_entry(),
            1,
        ),
        INVALID_PARAMETERS,
        "PSCI 1.1 5.6 CPU_ON: target_cpu bits [31:24] must be zero",
    );
    eq(
        G,
        "cpu-on-reserved-bits-40-63",
        c(
            psci::CPU_ON_64,
            (1 << 40) | second.unwrap_or(1),
            psci_entry(),
            1,
        ),
        INVALID_PARAMETERS,
        "PSCI 1.1 5.6 CPU_ON: target_cpu bits [63:40] must be zero",
    );
    if let Some(m) = second {
        eq(
            G,
            "cpu-on-reserved-left-cpu-off",
            c(AFFINITY_INFO_64, m, 0, 0),
            AFF_OFF,
            "PSCI 1.1 5.7 AFFINITY_INFO: the rejected CPU_ON started nothing",
        );
        eq(
            G,
            "cpu-on-entry-outside-ram",
            c(psci::CPU_ON_64, m, 0x10, 1),
            INVALID_ADDRESS,
            "PSCI 1.1 5.6 CPU_ON: INVALID_ADDRESS",
        );
    }
    eq(
        G,
        "cpu-on-absent-cpu",
        c(psci::CPU_ON_64, 0xff, psci_entry(), 1),
        INVALID_PARAMETERS,
        "PSCI 1.1 5.6 CPU_ON: target_cpu names no core",
    );
    eq(
        G,
        "cpu-on-self-already-on",
        c(psci::CPU_ON_64, boot, psci_entry(), 0),
        ALREADY_ON,
        "PSCI 1.1 5.6 CPU_ON: ALREADY_ON",
    );
    eq(
        G,
        "affinity-info-self-on",
        c(AFFINITY_INFO_64, boot, 0, 0),
        AFF_ON,
        "PSCI 1.1 5.7 AFFINITY_INFO",
    );
    eq(
        G,
        "affinity-info-level1-on",
        c(AFFINITY_INFO_64, boot | 0xff, 1, 0),
        AFF_ON,
        "PSCI 1.1 5.7 AFFINITY_INFO: Aff0 ignored at level 1",
    );
    eq(
        G,
        "affinity-info-level-4",
        c(AFFINITY_INFO_64, boot, 4, 0),
        INVALID_PARAMETERS,
        "PSCI 1.1 5.7 AFFINITY_INFO: lowest_affinity_level above 3",
    );
    eq(
        G,
        "affinity-info-reserved-bits",
        c(AFFINITY_INFO_64, boot | 1 << 24, 0, 0),
        INVALID_PARAMETERS,
        "PSCI 1.1 5.7 AFFINITY_INFO: target_affinity bits [31:24] must be zero",
    );
    eq(
        G,
        "affinity-info-absent",
        c(AFFINITY_INFO_64, 0xff, 0, 0),
        INVALID_PARAMETERS,
        "PSCI 1.1 5.7 AFFINITY_INFO: no such affinity instance",
    );

    // CPU_SUSPEND arguments that fail at once.
    eq(
        G,
        "cpu-suspend-reserved-bit-31",
        c(CPU_SUSPEND_64, 1 << 31, 0, 0),
        INVALID_PARAMETERS,
        "PSCI 1.1 5.4 CPU_SUSPEND: extended power_state bit 31 reserved",
    );
    eq(
        G,
        "cpu-suspend-unknown-state-id",
        c(CPU_SUSPEND_64, 5, 0, 0),
        INVALID_PARAMETERS,
        "PSCI 1.1 5.4 CPU_SUSPEND: StateID not implemented",
    );
    eq(
        G,
        "cpu-suspend-powerdown-entry-outside-ram",
        c(CPU_SUSPEND_64, POWERDOWN, 0x10, 0),
        INVALID_ADDRESS,
        "PSCI 1.1 5.4 CPU_SUSPEND: powerdown entry point INVALID_ADDRESS",
    );

    // Fault 2 of issue 9: standby, woken by the virtual timer.
    match gic::vtimer_wakeup_ready(p) {
        Some(_) => {
            gic::vtimer_arm(5);
            let r = c(CPU_SUSPEND_64, 0, 0, 0);
            let fired = gic::vtimer_fired();
            gic::vtimer_stop();
            let intid = gic::ack_group1();
            check(
                r == SUCCESS && fired && intid == gic::VTIMER_PPI,
                G,
                "cpu-suspend-standby-wakes",
                format_args!(
                    "CPU_SUSPEND(standby) {r}, timer fired {fired}, pending INTID {intid}"
                ),
                "PSCI 1.1 5.4 CPU_SUSPEND: standby returns SUCCESS on a wake-up event",
            );
        }
        None => check(
            false,
            G,
            "cpu-suspend-standby-wakes",
            format_args!("no redistributor"),
            "IHI 0069 12.10",
        ),
    }

    let Some(m1) = second else { return };
    // From a secondary CPU.
    let r = psci::run_on(1, m1, checks_from_secondary, 1);
    let done = r == SUCCESS && psci::wait_done(1, 1 << 26);
    check(
        done,
        G,
        "secondary-started",
        format_args!("CPU_ON {r}, job done {done}"),
        "PSCI 1.1 5.6 CPU_ON",
    );
    eq(
        G,
        "secondary-version",
        load(0),
        0x1_0001,
        "PSCI 1.1 5.3 PSCI_VERSION",
    );
    eq(
        G,
        "secondary-cpu-on-reserved-bits",
        load(1),
        INVALID_PARAMETERS,
        "PSCI 1.1 5.6 CPU_ON",
    );
    eq(
        G,
        "secondary-cpu-on-boot-already-on",
        load(2),
        ALREADY_ON,
        "PSCI 1.1 5.6 CPU_ON",
    );
    eq(
        G,
        "secondary-affinity-info-boot-on",
        load(3),
        AFF_ON,
        "PSCI 1.1 5.7 AFFINITY_INFO",
    );
    eq(
        G,
        "secondary-affinity-info-self-on",
        load(4),
        AFF_ON,
        "PSCI 1.1 5.7 AFFINITY_INFO",
    );
    eq(
        G,
        "secondary-cpu-suspend-reserved",
        load(5),
        INVALID_PARAMETERS,
        "PSCI 1.1 5.4 CPU_SUSPEND",
    );
    eq(
        G,
        "cpu-off-then-affinity-info-off",
        wait_off(m1),
        AFF_OFF,
        "PSCI 1.1 5.5 CPU_OFF, 5.7 AFFINITY_INFO",
    );

    // CPU_ON_32: the upper half of target_cpu is not part of the argument.
    let r = psci::run_on_with(CPU_ON_32, 1, (1 << 40) | m1, checks_from_secondary, 1);
    let done = r == SUCCESS && psci::wait_done(1, 1 << 26);
    check(
        done,
        G,
        "cpu-on-32-ignores-upper-half",
        format_args!("CPU_ON_32 {r}, job done {done}"),
        "SMCCC 1.1: SMC32 arguments are 32 bits; PSCI 1.1 5.6 CPU_ON",
    );
    wait_off(m1);

    // Powerdown on the secondary: it resumes at the entry point.
    let r = psci::run_on(1, m1, powerdown, 1);
    let done = r == SUCCESS && psci::wait_done(1, 1 << 27);
    let resumed = RESUMED.load(Ordering::Acquire);
    check(done && resumed && load(6) == i64::MIN, G, "cpu-suspend-powerdown-resumes-at-entry",
        format_args!("CPU_ON {r}, done {done}, resumed with x0 = context_id {resumed}, suspend returned {}, INTID {}", load(6), load(7)),
        "PSCI 1.1 5.4 CPU_SUSPEND: powerdown resumes at entry_point with context_id in X0");
    wait_off(m1);
}

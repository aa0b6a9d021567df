//! PSCI calls (Arm DEN0022 PSCI 1.1) through the conduit the DT names, and
//! running work on other CPUs.

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::dt::Platform;
use crate::entry::MAX_CPUS;

/// Function IDs (DEN0022 5.1, SMC64 where both exist).
pub const CPU_OFF: u32 = 0x8400_0002;
pub const CPU_ON_64: u32 = 0xc400_0003;
pub const SYSTEM_OFF: u32 = 0x8400_0008;

/// Whether calls go through HVC (else SMC); set from the DT.
static HVC: AtomicBool = AtomicBool::new(true);

/// Selects the conduit.
pub fn set_conduit(p: &Platform) {
    HVC.store(p.psci_hvc, Ordering::Relaxed);
}

/// A PSCI (SMCCC) call with up to three arguments; returns x0.
pub fn call(fid: u32, a1: u64, a2: u64, a3: u64) -> u64 {
    let mut x0 = u64::from(fid);
    // SAFETY: an SMCCC call: the callee may clobber x0-x17 (SMCCC 1.1 2.6), all
    // declared; it does not touch our memory except as the function defines.
    unsafe {
        if HVC.load(Ordering::Relaxed) {
            core::arch::asm!("hvc #0", inout("x0") x0, inout("x1") a1 => _, inout("x2") a2 => _,
                inout("x3") a3 => _, out("x4") _, out("x5") _, out("x6") _, out("x7") _,
                out("x8") _, out("x9") _, out("x10") _, out("x11") _, out("x12") _,
                out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _);
        } else {
            core::arch::asm!("smc #0", inout("x0") x0, inout("x1") a1 => _, inout("x2") a2 => _,
                inout("x3") a3 => _, out("x4") _, out("x5") _, out("x6") _, out("x7") _,
                out("x8") _, out("x9") _, out("x10") _, out("x11") _, out("x12") _,
                out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _);
        }
    }
    x0
}

/// Powers the machine off.
pub fn system_off(p: &Platform) -> ! {
    set_conduit(p);
    system_off_fallback()
}

/// Powers the machine off through the conduit last selected (HVC by default).
pub fn system_off_fallback() -> ! {
    call(SYSTEM_OFF, 0, 0, 0);
    loop {
        // SAFETY: waiting forever has no effect on memory.
        unsafe { core::arch::asm!("wfi") };
    }
}

/// Work for another CPU: a function and its argument.
static JOB: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];
static ARG: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];
/// Set by a secondary when its job has returned (just before CPU_OFF).
pub static DONE: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// Starts CPU `idx` (MPIDR `mpidr`) running `job(arg)`; it switches itself
/// off when the job returns. Returns CPU_ON's status.
pub fn run_on(idx: usize, mpidr: u64, job: fn(usize), arg: usize) -> i64 {
    let Some(slot) = JOB.get(idx) else {
        return -2;
    };
    slot.store(job as usize, Ordering::Release);
    ARG[idx].store(arg, Ordering::Release);
    DONE[idx].store(false, Ordering::Release);
    call(
        CPU_ON_64,
        mpidr,
        crate::entry::secondary_entry_address(),
        idx as u64,
    ) as i64
}

/// Waits (bounded) until CPU `idx`'s job has returned.
pub fn wait_done(idx: usize, max_spins: u64) -> bool {
    for _ in 0..max_spins {
        if DONE.get(idx).is_some_and(|d| d.load(Ordering::Acquire)) {
            return true;
        }
        core::hint::spin_loop();
    }
    false
}

/// A secondary's Rust entry: its job, then CPU_OFF.
pub fn secondary_main(idx: usize) -> ! {
    if let (Some(j), Some(a)) = (JOB.get(idx), ARG.get(idx)) {
        let f = j.load(Ordering::Acquire);
        if f != 0 {
            // SAFETY: only `run_on` stores here, and it stores a `fn(usize)`.
            let job: fn(usize) = unsafe { core::mem::transmute::<usize, fn(usize)>(f) };
            job(a.load(Ordering::Acquire));
        }
        if let Some(d) = DONE.get(idx) {
            d.store(true, Ordering::Release);
        }
    }
    call(CPU_OFF, 0, 0, 0);
    loop {
        // SAFETY: CPU_OFF does not return on success; wait if it failed.
        unsafe { core::arch::asm!("wfi") };
    }
}

//! Where the hypervisor's own boot spends its time, before the guests' first
//! instruction: the generic counter (CNTPCT_EL0) read at the end of each
//! phase, printed as one `[hv] boot:` line (info) when the guests start.
//!
//! The first reading is the time before `rust_main`: under QEMU the counter
//! starts at 0 when the machine starts running, so it is the firmware's (or
//! QEMU's boot stub's) part; on a board, whatever ran since the counter's
//! reset. Under QEMU TCG the counter follows host time, so the figures
//! include any time the host took the CPU's thread away.

use crate::exitstats::now;
use crate::sysreg::read_sysreg;

/// Phases recorded at most (later ones are dropped).
const MAX_PHASES: usize = 16;

struct Timeline {
    /// (phase name, counter at its end).
    marks: [(&'static str, u64); MAX_PHASES],
    len: usize,
}

static TIMELINE: spin::Mutex<Timeline> = spin::Mutex::new(Timeline {
    marks: [("", 0); MAX_PHASES],
    len: 0,
});

/// Records that phase `name` ends now.
pub fn mark(name: &'static str) {
    let t = now();
    let mut tl = TIMELINE.lock();
    let len = tl.len;
    if let Some(m) = tl.marks.get_mut(len) {
        *m = (name, t);
        tl.len += 1;
    }
}

/// The `[hv] boot:` line: the total from the counter's zero to now, and
/// each phase's share, in milliseconds.
pub fn report() {
    use core::fmt::Write;
    let end = now();
    let freq = read_sysreg!("cntfrq_el0").max(1);
    let ms = |ticks: u64| {
        let us = u128::from(ticks) * 1_000_000 / u128::from(freq);
        (us / 1000, (us % 1000) / 100)
    };
    let tl = TIMELINE.lock();
    let mut line = alloc::string::String::new();
    let (tot, tot_d) = ms(end);
    let _ = write!(
        line,
        "boot: {tot}.{tot_d} ms from counter zero to the guests' start:"
    );
    let mut prev = 0u64;
    for &(name, t) in &tl.marks[..tl.len] {
        let (a, b) = ms(t.wrapping_sub(prev));
        let _ = write!(line, " {name} {a}.{b}");
        prev = t;
    }
    let (a, b) = ms(end.wrapping_sub(prev));
    let _ = write!(line, " rest {a}.{b}");
    drop(tl);
    log::info!("{line}");
}

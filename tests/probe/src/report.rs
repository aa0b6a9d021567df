//! One machine-readable line per check: `PROBE ok|FAIL group/name detail [spec]`.

use core::fmt::{self, Debug};
use core::sync::atomic::{AtomicU32, Ordering};

static CHECKS: AtomicU32 = AtomicU32::new(0);
static FAILED: AtomicU32 = AtomicU32::new(0);

/// Records a check: `ok` or not, what was seen, and the specification
/// section that says what is right.
pub fn check(ok: bool, group: &str, name: &str, detail: fmt::Arguments, spec: &str) {
    CHECKS.fetch_add(1, Ordering::Relaxed);
    if !ok {
        FAILED.fetch_add(1, Ordering::Relaxed);
    }
    crate::println!(
        "PROBE {} {group}/{name} {detail} [{spec}]",
        if ok { "ok" } else { "FAIL" }
    );
}

/// Checks `got == want`.
pub fn eq<T: PartialEq + Debug>(group: &str, name: &str, got: T, want: T, spec: &str) {
    let ok = got == want;
    if ok {
        check(true, group, name, format_args!("got {got:?}"), spec);
    } else {
        check(
            false,
            group,
            name,
            format_args!("got {got:?} want {want:?}"),
            spec,
        );
    }
}

/// The closing line the e2e test waits for.
pub fn done() {
    crate::println!(
        "PROBE-DONE checks={} failed={}",
        CHECKS.load(Ordering::Relaxed),
        FAILED.load(Ordering::Relaxed)
    );
}

//! Instructions per trapped operation (issue 11, `--icount`): the probe's
//! `cost` group under QEMU's `-icount shift=0`, on the default segment and
//! with 31 root ports, against `bench/icount-thresholds.toml`. The counts are
//! deterministic: a change that makes a trap path slower fails here.

use xtask::icount::{self, Thresholds, MANY_PORTS};

use super::hypervisor_bin;
use crate::probe::probe_bin;

#[test]
#[ignore = "end-to-end: run with `cargo xtask test`"]
fn trap_paths_cost_no_more_instructions_than_their_thresholds() {
    let t = Thresholds::load().unwrap_or_else(|e| panic!("{e}"));
    let (hv, probe) = (hypervisor_bin(), probe_bin());
    let two = icount::measure(&hv, &probe, None).unwrap_or_else(|e| panic!("{e}"));
    let many = icount::measure(&hv, &probe, Some(MANY_PORTS)).unwrap_or_else(|e| panic!("{e}"));
    let rows = icount::rows(&two, &many, &t);
    let bad: Vec<String> = rows.iter().flat_map(|r| r.violations()).collect();
    assert!(
        bad.is_empty(),
        "over the limits of {}:\n{}\n{}",
        icount::THRESHOLDS,
        bad.join("\n"),
        icount::markdown(&rows)
    );
}

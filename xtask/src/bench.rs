//! `cargo xtask bench`: the same guest (kernel, initramfs, CPUs, RAM) booted
//! directly on QEMU and under the hypervisor in one run, the same workloads
//! timed in both, reported as ratios (absolute times under TCG are noise; the
//! ratio hypervisor / direct is what a change moves).

use std::time::Duration;

use crate::progress::Progress;
use crate::qemu::{self, Mode, RunConfig, Verdict};
use crate::{Error, Result};

/// One timed guest workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    /// What it exercises.
    pub name: &'static str,
    /// The shell command.
    pub script: &'static str,
}

/// The workloads, each sized to take about a second under TCG.
pub const WORKLOADS: &[Workload] = &[
    Workload {
        name: "syscalls (dd 256 MiB, 4 KiB blocks)",
        script: "dd if=/dev/zero of=/dev/null bs=4k count=65536 2>/dev/null",
    },
    Workload {
        name: "user CPU (shell loop)",
        script: "i=0; while [ $i -lt 30000 ]; do i=$((i+1)); done",
    },
    Workload {
        name: "IPIs (task migrations)",
        script: "for i in $(seq 60); do taskset -c 1 true; taskset -c 0 true; done",
    },
    Workload {
        name: "timer (100 x 10 ms sleeps)",
        script: "for i in $(seq 100); do usleep 10000; done",
    },
    Workload {
        name: "console (32 KiB to ttyAMA0)",
        script: "dd if=/dev/zero bs=1k count=32 2>/dev/null | tr '\\\\0' x >/dev/console",
    },
];

/// The guest script: each workload between two `/proc/uptime` reads, reported
/// as `BENCH:<index>:<start>:<end>`.
pub fn script() -> String {
    let mut s = String::new();
    for (i, w) in WORKLOADS.iter().enumerate() {
        s.push_str(&format!(
            "read a x </proc/uptime; {}; read b x </proc/uptime; echo BENCH:{i}:$a:$b\n",
            w.script
        ));
    }
    s
}

/// Seconds per workload from the console's `BENCH:` lines (`None` where missing).
pub fn parse(console: &[String]) -> Vec<Option<f64>> {
    let mut out = vec![None; WORKLOADS.len()];
    for l in console {
        let Some(rest) = l.find("BENCH:").map(|i| &l[i + 6..]) else {
            continue;
        };
        let mut f = rest.trim().split(':');
        let (Some(i), Some(a), Some(b)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let (Ok(i), Ok(a), Ok(b)) = (i.parse::<usize>(), a.parse::<f64>(), b.parse::<f64>()) else {
            continue;
        };
        if let Some(slot) = out.get_mut(i) {
            *slot = Some((b - a).max(0.0));
        }
    }
    out
}

/// The median of `v` (`None` if empty).
pub fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// One report row: `name`, direct and hypervisor seconds, their ratio.
pub fn row(name: &str, direct: Option<f64>, hv: Option<f64>) -> String {
    let s = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    let ratio = match (direct, hv) {
        (Some(d), Some(h)) if d > 0.0 => format!("{:.2}", h / d),
        _ => "-".to_string(),
    };
    format!("{name:<38} {:>8} {:>8} {:>7}", s(direct), s(hv), ratio)
}

/// Boots `base` in both modes `runs` times and prints the report.
pub fn bench(base: &RunConfig, hypervisor: std::path::PathBuf, runs: usize) -> Result<()> {
    let n = WORKLOADS.len();
    // [mode][workload or boot] -> samples
    let mut samples = vec![vec![Vec::new(); n + 1]; 2];
    let mut progress = Progress::new(
        format!(
            "bench: {} boots ({runs} direct, {runs} hypervisor)",
            2 * runs
        ),
        2 * runs as u64,
    );
    for run in 0..runs {
        for (m, mode) in [Mode::Direct, Mode::Hypervisor(hypervisor.clone())]
            .into_iter()
            .enumerate()
        {
            let what = format!(
                "run {} {}",
                run + 1,
                if m == 0 { "direct" } else { "hypervisor" }
            );
            progress.set_message(&what);
            let mut cfg = base.clone();
            cfg.mode = mode;
            cfg.exec = Some(script());
            cfg.echo = false;
            cfg.interactive = false;
            cfg.timeout = Some(Duration::from_secs(300));
            let out = qemu::run(&cfg)?;
            if out.verdict != Verdict::PoweredOff {
                return Err(Error(format!(
                    "bench run {run} ({}) ended {}:\n{}",
                    if m == 0 { "direct" } else { "hypervisor" },
                    out.summary(),
                    out.tail(30)
                )));
            }
            for (i, t) in parse(&out.console).into_iter().enumerate() {
                if let Some(t) = t {
                    samples[m][i].push(t);
                }
            }
            if let Some(t) = out.init_start {
                samples[m][n].push(t.as_secs_f64());
            }
            progress.inc(&format!("{what} done"));
        }
    }
    progress.finish();
    println!(
        "{:<38} {:>8} {:>8} {:>7}",
        "median seconds", "direct", "hyp", "ratio"
    );
    let names = WORKLOADS
        .iter()
        .map(|w| w.name)
        .chain(std::iter::once("boot: QEMU start to init"));
    for (i, name) in names.enumerate() {
        let d = median(&mut samples[0][i]);
        let h = median(&mut samples[1][i]);
        println!("{}", row(name, d, h));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_lines_give_durations_by_workload() {
        let c: Vec<String> = [
            "noise",
            "BENCH:1:10.50:11.75",
            "[  3.1] x BENCH:0:1.00:1.25",
            "BENCH:9:1:2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let p = parse(&c);
        assert_eq!(p[0], Some(0.25));
        assert_eq!(p[1], Some(1.25));
        assert_eq!(p[2], None);
    }

    #[test]
    fn garbled_bench_lines_are_skipped() {
        let c = vec!["BENCH:x:1:2".to_string(), "BENCH:0:1".to_string()];
        assert!(parse(&c).iter().all(Option::is_none));
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }

    #[test]
    fn ratio_is_hypervisor_over_direct() {
        assert!(row("w", Some(2.0), Some(3.0)).ends_with("1.50"));
        assert!(row("w", None, Some(3.0)).ends_with('-'));
    }

    #[test]
    fn script_times_every_workload() {
        let s = script();
        for i in 0..WORKLOADS.len() {
            assert!(s.contains(&format!("echo BENCH:{i}:$a:$b")));
        }
    }
}

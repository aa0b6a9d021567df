//! `cargo xtask bench --icount`: instructions per trapped operation, guest
//! and EL2 together, counted by the probe guest's `cost` group
//! (`tests/probe/src/cost.rs`) under QEMU's `-icount shift=0`, where one
//! instruction is one nanosecond of virtual time. The counts are
//! deterministic (the same binaries give the same numbers on any host, with
//! any load), so they are checked against [`THRESHOLDS`]: a change that makes
//! a trap path slower fails `cargo xtask bench --icount` and the e2e test
//! `trap_paths_cost_no_more_instructions_than_their_thresholds`.
//!
//! Two boots: the default segment (2 root ports) and one with 31 root ports
//! (`root-ports=31`, every device number of bus 0 but 0), for what routing
//! costs as bus 0 fills.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::qemu::{self, Disk, Mode, RunConfig, Verdict};
use crate::{paths, Error, Result};

/// The checked-in thresholds, relative to the workspace root.
pub const THRESHOLDS: &str = "bench/icount-thresholds.toml";

/// Root ports of the second boot: devices 1 to 31 of bus 0.
pub const MANY_PORTS: u32 = 31;

/// Instructions per operation, by the probe's names (`ecam-read`, `hvc`, ...).
pub type Costs = BTreeMap<String, u64>;

/// The `PROBE-COST name=value` lines of a console.
pub fn parse(console: &[String]) -> Costs {
    console
        .iter()
        .filter_map(|l| {
            let rest = &l[l.find("PROBE-COST ")? + 11..];
            let (k, v) = rest.trim().split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The `PROBE-COST-EL2 name=ticks cause=C exits=N` lines: the hypervisor's
/// handler alone per exit (from its exit statistics hypercall), by operation.
pub fn parse_el2(console: &[String]) -> Costs {
    console
        .iter()
        .filter_map(|l| {
            let rest = &l[l.find("PROBE-COST-EL2 ")? + 15..];
            let (k, v) = rest.split_whitespace().next()?.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// [`THRESHOLDS`]: limits in instructions per operation (`max` for the
/// default segment, `max_31_ports` with 31 root ports), limits on the
/// 31-port / 2-port ratio, and issue 11's targets (reported, not enforced).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Most instructions per operation on the default segment.
    pub max: BTreeMap<String, u64>,
    /// Most instructions per operation with 31 root ports.
    #[serde(default)]
    pub max_31_ports: BTreeMap<String, u64>,
    /// Targets (instructions per operation), reported beside the figures.
    #[serde(default)]
    pub target: BTreeMap<String, u64>,
    /// Targets for the 31-port / 2-port ratio, reported.
    #[serde(default)]
    pub target_ratio_31_vs_2: BTreeMap<String, f64>,
}

impl Thresholds {
    /// Parses the file's text.
    pub fn parse(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| Error(format!("{THRESHOLDS}: {e}")))
    }

    /// Reads [`THRESHOLDS`] from the workspace.
    pub fn load() -> Result<Self> {
        let path = paths::workspace_root().join(THRESHOLDS);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error(format!("{}: {e}", path.display())))?;
        Self::parse(&text)
    }
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The operation.
    pub name: String,
    /// Instructions on the default segment.
    pub two: Option<u64>,
    /// Instructions with 31 root ports.
    pub many: Option<u64>,
    /// Limit on the default segment, 31 ports.
    pub max: (Option<u64>, Option<u64>),
    /// Issue 11's target (instructions), if any.
    pub target: Option<u64>,
    /// Issue 11's target for the 31 / 2 ratio, if any.
    pub target_ratio: Option<f64>,
    /// Of the 2-port figure, the hypervisor's exit handler (from
    /// `handle_exit`'s start to its end; the rest is the exception entry,
    /// the vector's register save and restore, and the guest's instruction).
    pub el2: Option<u64>,
}

impl Row {
    /// The 31-port / 2-port ratio.
    pub fn ratio(&self) -> Option<f64> {
        match (self.two, self.many) {
            (Some(a), Some(b)) if a > 0 => Some(b as f64 / a as f64),
            _ => None,
        }
    }

    /// What is over a limit, or missing where a limit is set.
    pub fn violations(&self) -> Vec<String> {
        let mut v = Vec::new();
        for (what, got, max) in [
            ("2 root ports", self.two, self.max.0),
            ("31 root ports", self.many, self.max.1),
        ] {
            match (got, max) {
                (None, Some(m)) => {
                    v.push(format!("{} ({what}): not measured (limit {m})", self.name))
                }
                (Some(g), Some(m)) if g > m => v.push(format!(
                    "{} ({what}): {g} instructions, limit {m}",
                    self.name
                )),
                _ => {}
            }
        }
        v
    }
}

/// The rows: every operation measured or limited, in name order.
pub fn rows(two: &Measured, many: &Measured, t: &Thresholds) -> Vec<Row> {
    let (el2, two, many) = (&two.el2, &two.costs, &many.costs);
    let mut names: Vec<&String> = two
        .keys()
        .chain(many.keys())
        .chain(t.max.keys())
        .chain(t.max_31_ports.keys())
        .collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|n| n.as_str() != "nop100")
        .map(|n| Row {
            name: n.clone(),
            two: two.get(n).copied(),
            many: many.get(n).copied(),
            max: (t.max.get(n).copied(), t.max_31_ports.get(n).copied()),
            target: t.target.get(n).copied(),
            target_ratio: t.target_ratio_31_vs_2.get(n).copied(),
            el2: el2.get(n).copied(),
        })
        .collect()
}

/// The report as a Markdown table.
pub fn markdown(rows: &[Row]) -> String {
    let o = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    let mut s = String::from(
        "| operation | instructions (2 ports) | of which EL2 handler | limit | target | 31 ports | limit | ratio 31/2 | target |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.name,
            o(r.two),
            o(r.el2),
            o(r.max.0),
            r.target.map_or("-".to_string(), |t| format!("≤ {t}")),
            o(r.many),
            o(r.max.1),
            r.ratio().map_or("-".to_string(), |x| format!("{x:.2}")),
            r.target_ratio
                .map_or("-".to_string(), |t| format!("≤ {t:.2}")),
        ));
    }
    s
}

/// The report as JSON (no dependency: names are the probe's, plain ASCII).
pub fn json(rows: &[Row]) -> String {
    let o = |v: Option<u64>| v.map_or("null".to_string(), |v| v.to_string());
    let items: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "  {{\"name\": \"{}\", \"instructions_2_ports\": {}, \"el2_handler_2_ports\": {}, \"limit_2_ports\": {}, \"instructions_31_ports\": {}, \"limit_31_ports\": {}, \"target\": {}, \"ratio_31_vs_2\": {}}}",
                r.name.escape_default(),
                o(r.two),
                o(r.el2),
                o(r.max.0),
                o(r.many),
                o(r.max.1),
                o(r.target),
                r.ratio().map_or("null".to_string(), |x| format!("{x:.3}"))
            )
        })
        .collect();
    format!("[\n{}\n]\n", items.join(",\n"))
}

/// The probe run: the `cost` group with the icount calibration, one CPU
/// (under icount QEMU runs CPUs in turn, and the counter counts them all),
/// a RAM disk for the virtio figures, `root-ports=` when `ports` is given.
pub fn probe_config(hypervisor: PathBuf, probe: PathBuf, ports: Option<u32>) -> RunConfig {
    let mut cfg = RunConfig::new(Mode::Hypervisor(hypervisor), probe, PathBuf::new());
    cfg.initrd = None;
    cfg.append = "probe=cost cost=icount".into();
    cfg.smp = 1;
    cfg.disk = Disk::Ram(8 << 20);
    cfg.qemu_args = vec!["-icount".into(), "shift=0".into()];
    if let Some(n) = ports {
        cfg.hypervisor_args = format!("root-ports={n}");
    }
    cfg.timeout = Some(Duration::from_secs(120));
    cfg.echo = false;
    cfg
}

/// Boots the probe as [`probe_config`] says and returns its costs; an error
/// unless it finished, powered off, and every check of the group passed.
pub fn measure(hypervisor: &Path, probe: &Path, ports: Option<u32>) -> Result<Measured> {
    let cfg = probe_config(hypervisor.to_path_buf(), probe.to_path_buf(), ports);
    let out = qemu::run(&cfg)?;
    let done = out
        .console
        .iter()
        .any(|l| l.contains("PROBE-DONE") && l.contains("failed=0"));
    // Without the calibration the figures are not instructions.
    let calibrated = out
        .console
        .iter()
        .any(|l| l.contains("PROBE ok cost/icount-calibration"));
    if out.verdict != Verdict::PoweredOff || !done || !calibrated {
        return Err(Error(format!(
            "the cost probe ({}) did not finish with every check passed ({}):\n{}",
            ports.map_or("default segment".to_string(), |n| format!("root-ports={n}")),
            out.summary(),
            out.tail(40)
        )));
    }
    Ok(Measured {
        costs: parse(&out.console),
        el2: parse_el2(&out.console),
    })
}

/// One probe run's figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Measured {
    /// Instructions per operation.
    pub costs: Costs,
    /// Of those, the EL2 handler's (ticks per exit; instructions under icount).
    pub el2: Costs,
}

/// `cargo xtask bench --icount`: both boots, the table, `target/bench/icount.{md,json}`;
/// `Ok(false)` when a figure is over its limit (or missing).
pub fn bench(hypervisor: &Path, probe: &Path) -> Result<bool> {
    let t = Thresholds::load()?;
    let two = measure(hypervisor, probe, None)?;
    let many = measure(hypervisor, probe, Some(MANY_PORTS))?;
    let rows = rows(&two, &many, &t);
    let md = markdown(&rows);
    print!("{md}");
    let dir = paths::workspace_root().join("target").join("bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("icount.md"), &md)?;
    std::fs::write(dir.join("icount.json"), json(&rows))?;
    eprintln!(
        "xtask: instructions per operation under -icount shift=0, guest and EL2 together; written to {}",
        dir.display()
    );
    let bad: Vec<String> = rows.iter().flat_map(Row::violations).collect();
    for b in &bad {
        eprintln!("xtask: over its limit in {THRESHOLDS}: {b}");
    }
    Ok(bad.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn costs(v: &[(&str, u64)]) -> Measured {
        Measured {
            costs: v.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            el2: Costs::new(),
        }
    }

    #[test]
    fn cost_lines_are_parsed_by_name() {
        let c: Vec<String> = [
            "PROBE-COST-INFO cntfrq=1000000000",
            "PROBE-COST hvc=212",
            "[hv] x PROBE-COST ecam-read=372",
            "PROBE-COST bad=x",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(parse(&c), costs(&[("ecam-read", 372), ("hvc", 212)]).costs);
    }

    #[test]
    fn a_figure_over_its_limit_is_a_violation() {
        let t = Thresholds::parse("[max]\nhvc = 200\n").expect("valid");
        let r = rows(&costs(&[("hvc", 201)]), &Measured::default(), &t);
        assert_eq!(r[0].violations().len(), 1);
        let r = rows(&costs(&[("hvc", 200)]), &Measured::default(), &t);
        assert!(r[0].violations().is_empty());
    }

    #[test]
    fn a_limited_figure_not_measured_is_a_violation() {
        let t = Thresholds::parse("[max]\n[max_31_ports]\necam-read = 400\n").expect("valid");
        let r = rows(&costs(&[("ecam-read", 300)]), &Measured::default(), &t);
        assert_eq!(r[0].violations().len(), 1, "{r:?}");
    }

    #[test]
    fn el2_lines_give_the_handler_part() {
        let c = vec!["PROBE-COST-EL2 hvc=165 cause=psci/smccc exits=4007".to_string()];
        assert_eq!(parse_el2(&c).get("hvc"), Some(&165));
        assert!(parse(&c).is_empty());
    }

    #[test]
    fn unknown_sections_are_refused() {
        assert!(Thresholds::parse("[max]\n[maxx]\n").is_err());
    }

    #[test]
    fn the_checked_in_thresholds_parse_and_limit_every_issue_target() {
        let t = Thresholds::load().expect("bench/icount-thresholds.toml");
        for k in t.target.keys() {
            assert!(t.max.contains_key(k), "{k} has a target but no limit");
        }
    }

    #[test]
    fn ratio_is_many_ports_over_two() {
        let t = Thresholds::default();
        let r = rows(
            &costs(&[("ecam-read", 200)]),
            &costs(&[("ecam-read", 220)]),
            &t,
        );
        assert_eq!(r[0].ratio(), Some(1.1));
        assert!(markdown(&r).contains("| ecam-read | 200 | - |"));
        assert!(json(&r).contains("\"ratio_31_vs_2\": 1.100"));
    }
}

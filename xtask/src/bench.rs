//! `cargo xtask bench`: the same Linux guest (kernel, initramfs, CPUs, RAM,
//! NIC, disk image) booted directly on QEMU and under the hypervisor,
//! alternately, `--runs N` times, the same workloads measured in both,
//! reported as median, minimum and maximum per arrangement and the ratio
//! hypervisor / direct (absolute figures under TCG are noise; the ratio
//! taken in one run is what a change moves).
//!
//! The arrangements ([`Arrangement`]):
//!
//! * direct: Linux drives QEMU's e1000e and QEMU's own virtio-blk-pci on the
//!   disk image;
//! * hypervisor: the e1000e passed through, the guest's virtio-blk emulated
//!   by the hypervisor on a host virtio-blk over the same image.
//!
//! Each run boots each arrangement twice: Linux, which runs every workload
//! of [`guest`] in one boot (the host's iperf3 client, [`host`], joins when
//! the guest says its servers listen), and the probe guest's `cost` group,
//! which times single trapped operations with the virtual counter.
//! `--scaling` boots instead with 1, 2, 4 and 8 CPUs ([`scaling`]).

pub mod guest;
pub mod host;
pub mod parse;
pub mod report;
pub mod stats;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::net::{NetBackend, PortForward};
use crate::progress::Progress;
use crate::qemu::{self, Disk, Mode, RunConfig, Verdict};
use crate::{paths, Error, Result};
use stats::{Better, RatioThresholds, Row};

/// One measured quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    /// Stable identifier: the key of [`stats::RATIO_THRESHOLDS`] and of the JSON.
    pub id: &'static str,
    /// What it is, for people.
    pub name: &'static str,
    /// Unit.
    pub unit: &'static str,
    /// Which way is better.
    pub better: Better,
}

const fn m(id: &'static str, name: &'static str, unit: &'static str, better: Better) -> Metric {
    Metric {
        id,
        name,
        unit,
        better,
    }
}

/// Every metric, in report order.
pub const METRICS: &[Metric] = &[
    m("boot", "boot: QEMU start to init", "s", Better::Lower),
    m(
        "tcp-to-guest",
        "TCP host → guest (iperf3)",
        "Mbit/s",
        Better::Higher,
    ),
    m(
        "tcp-from-guest",
        "TCP guest → host (iperf3 -R)",
        "Mbit/s",
        Better::Higher,
    ),
    m(
        "ping-avg",
        "ping 10.0.2.2: RTT average",
        "ms",
        Better::Lower,
    ),
    m("ping-max", "ping 10.0.2.2: RTT max", "ms", Better::Lower),
    m(
        "blk-rand-read",
        "fio 4k randread, iodepth 16",
        "IOPS",
        Better::Higher,
    ),
    m(
        "blk-rand-write",
        "fio 4k randwrite, iodepth 16",
        "IOPS",
        Better::Higher,
    ),
    m(
        "blk-seq-read",
        "fio 1M sequential read",
        "MiB/s",
        Better::Higher,
    ),
    m(
        "blk-seq-write",
        "fio 1M sequential write",
        "MiB/s",
        Better::Higher,
    ),
    m(
        "syscalls",
        "syscalls (dd 256 MiB, 4 KiB blocks)",
        "s",
        Better::Lower,
    ),
    m("user-loop", "user CPU (shell loop)", "s", Better::Lower),
    m("ipis", "IPIs (task migrations)", "s", Better::Lower),
    m("timer", "timer (100 x 10 ms sleeps)", "s", Better::Lower),
    m(
        "console",
        "console (32 KiB to /dev/console)",
        "s",
        Better::Lower,
    ),
    m(
        "ecam-read",
        "config read via ECAM (probe)",
        "ns",
        Better::Lower,
    ),
    m(
        "virtio-notify",
        "virtio-blk notify (probe)",
        "ns",
        Better::Lower,
    ),
    m("gicd-read", "GICD_IIDR read (probe)", "ns", Better::Lower),
    m(
        "hvc",
        "hvc round trip, PSCI_VERSION (probe)",
        "ns",
        Better::Lower,
    ),
];

/// The probe guest's `PROBE-COST` names that are [`METRICS`] (same ids).
const PROBE_METRICS: &[&str] = &["ecam-read", "virtio-notify", "gicd-read", "hvc"];

/// What the rows mean, printed under the table, in the README and the JSON.
pub const NOTES: &[&str] = &[
    "Absolute figures under QEMU TCG on a shared machine are noise; the ratio hypervisor / direct of the medians, both measured in one run, is the meaningful figure.",
    "Direct: Linux drives QEMU's e1000e and QEMU's virtio-blk-pci on the disk image, its console QEMU's PL011 (ttyAMA0). Hypervisor: the same e1000e passed through, the guest's virtio-blk emulated by the hypervisor on a host virtio-blk over the same image, its console the hypervisor's virtio console (hvc0). Each is the console a user of that arrangement gets.",
    "Linux boots with `quiet` in both arrangements: the boot row leaves out the boot log's console output, which the console row measures.",
    "TCP: iperf3 server in the guest, the host's client (-t 3) through QEMU user networking's port forward on 127.0.0.1. fio: /dev/vda, direct=1, libaio, 3 s a job. ping: 20 requests 0.1 s apart.",
    "Probe rows: the bare-metal probe guest (tests/probe, group cost) times 4000 operations with CNTVCT, in ns of host time. Directly on QEMU the config read goes to QEMU's own host bridge (00:00.0), the GICD and virtio-blk accesses to QEMU's models and the hvc to QEMU's PSCI emulation; under the hypervisor each is a trap to EL2. These have no ratio target; instruction counts per trapped operation, and their targets, are `cargo xtask bench --icount`'s.",
];

/// How a guest is booted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrangement {
    /// Directly on QEMU.
    Direct,
    /// Under the hypervisor.
    Hypervisor,
}

/// The arrangements in the order each run boots them.
pub const ARRANGEMENTS: [Arrangement; 2] = [Arrangement::Direct, Arrangement::Hypervisor];

impl Arrangement {
    /// For messages.
    pub fn name(self) -> &'static str {
        match self {
            Arrangement::Direct => "direct",
            Arrangement::Hypervisor => "hypervisor",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    fn mode(self, hypervisor: &Path) -> Mode {
        match self {
            Arrangement::Direct => Mode::Direct,
            Arrangement::Hypervisor => Mode::Hypervisor(hypervisor.to_path_buf()),
        }
    }
}

/// What the bench boots.
#[derive(Debug, Clone)]
pub struct Bench {
    /// The Linux guest (kernel, initrd, CPUs, RAM, NIC, disk, extra QEMU
    /// arguments); its mode, command and timeout are the bench's.
    pub linux: RunConfig,
    /// The flat hypervisor binary.
    pub hypervisor: PathBuf,
    /// The flat probe guest binary; `None` leaves out the probe rows.
    pub probe: Option<PathBuf>,
    /// Boots per arrangement (at least 1).
    pub runs: usize,
}

/// Size of [`disk_image`].
pub const DISK_BYTES: u64 = 256 << 20;

/// The bench's disk image, `bench-disk.img` in the cache directory: fio
/// writes to it, so it is not the `run` command's `disk.img`. Created once
/// filled with written zeros (not sparse), so that the first run reads what
/// the later ones do.
pub fn disk_image() -> Result<PathBuf> {
    let p = paths::cache_dir().join("bench-disk.img");
    if p.metadata().is_ok_and(|m| m.len() == DISK_BYTES) {
        return Ok(p);
    }
    std::fs::create_dir_all(paths::cache_dir())?;
    let tmp = p.with_extension("tmp");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..DISK_BYTES / chunk.len() as u64 {
            f.write_all(&chunk)?;
        }
        f.flush()?;
    }
    std::fs::rename(&tmp, &p)?;
    eprintln!("xtask: created the bench's disk image {}", p.display());
    Ok(p)
}

/// Figures of one boot, by metric id.
type Figures = Vec<(&'static str, f64)>;

fn check_powered_off(what: &str, out: &qemu::RunOutcome) -> Result<()> {
    if out.verdict == Verdict::PoweredOff {
        return Ok(());
    }
    Err(Error(format!(
        "bench: {what} ended {}:\n{}",
        out.summary(),
        out.tail(30)
    )))
}

/// `base` in `arr`, running the guest script, with forwards from
/// `host_ports` to the guest's iperf3 servers.
pub fn linux_config(b: &Bench, arr: Arrangement, host_ports: [u16; 2]) -> RunConfig {
    let mut cfg = b.linux.clone();
    cfg.mode = arr.mode(&b.hypervisor);
    // The console a user of each arrangement gets: under the hypervisor its
    // virtio console (hvc0), directly on QEMU QEMU's PL011.
    cfg.virtio_console = arr == Arrangement::Hypervisor;
    // Both arrangements boot Linux with `quiet` (kernel messages below
    // warnings kept off the console), on the same command line but for the
    // console: the boot row then times the boot, not the ~20 KB boot log
    // through the console, whose cost the console row measures.
    if !cfg.append.split_whitespace().any(|a| a == "quiet") {
        cfg.append = format!("{} quiet", cfg.append).trim().to_string();
    }
    cfg.exec = Some(guest::script());
    cfg.echo = false;
    cfg.interactive = false;
    cfg.timeout = Some(Duration::from_secs(300));
    if let NetBackend::User { forwards } = &mut cfg.net {
        for (host, guest) in host_ports.into_iter().zip(guest::IPERF_PORTS) {
            forwards.push(PortForward { host, guest });
        }
    }
    cfg
}

/// One Linux boot running every workload: boot time, the guest's figures,
/// the host's iperf3 figures.
fn run_linux(b: &Bench, arr: Arrangement) -> Result<Figures> {
    let ports = host::free_ports::<2>()?;
    let cfg = linux_config(b, arr, ports);
    let (tx, rx) = std::sync::mpsc::channel();
    let net = host::spawn(rx, ports);
    let out = qemu::run_tapped(&cfg, tx);
    let net = net.join().unwrap_or_default();
    let out = out?;
    check_powered_off(&format!("Linux {}", arr.name()), &out)?;
    let mut f = guest::parse(&out.console);
    f.extend(net);
    if let Some(t) = out.init_start {
        f.push(("boot", t.as_secs_f64()));
    }
    Ok(f)
}

/// The probe guest's `cost` group in `arr`, on one CPU, with the disk image
/// as its virtio-blk (QEMU's, or the hypervisor's on the host one), no NIC.
/// Only the loops' checks matter here: directly on QEMU the check of the
/// hypervisor's exit statistics fails, as it should without a hypervisor.
pub fn probe_config(b: &Bench, arr: Arrangement, probe: &Path) -> RunConfig {
    let mut cfg = RunConfig::new(arr.mode(&b.hypervisor), probe.to_path_buf(), PathBuf::new());
    cfg.initrd = None;
    cfg.append = "probe=cost".into();
    cfg.smp = 1;
    cfg.disk = Disk::Host;
    cfg.host_disk = b.linux.host_disk.clone();
    if arr == Arrangement::Direct {
        // The probe drives a modern (non-transitional) virtio-blk only
        // (virtio 1.2 4.1.2.1: device ID 0x1042); QEMU's is transitional by default.
        cfg.qemu_args = vec!["-global".into(), "virtio-blk-pci.disable-legacy=on".into()];
    }
    cfg.timeout = Some(Duration::from_secs(120));
    cfg.echo = false;
    cfg
}

fn run_probe(b: &Bench, arr: Arrangement, probe: &Path) -> Result<Figures> {
    let out = qemu::run(&probe_config(b, arr, probe))?;
    check_powered_off(&format!("probe {}", arr.name()), &out)?;
    let failed = probe_failures(&out.console, arr);
    if !failed.is_empty() {
        return Err(Error(format!(
            "bench: the probe's checks of the timed operations failed ({}):\n{}",
            arr.name(),
            failed.join("\n")
        )));
    }
    let costs = crate::icount::parse(&out.console);
    Ok(PROBE_METRICS
        .iter()
        .filter_map(|id| Some((*id, *costs.get(*id)? as f64)))
        .collect())
}

/// The probe's failed checks that invalidate its figures: all of them,
/// but directly on QEMU those of the hypervisor's exit statistics.
fn probe_failures(console: &[String], arr: Arrangement) -> Vec<String> {
    console
        .iter()
        .filter(|l| l.contains("PROBE FAIL"))
        .filter(|l| arr == Arrangement::Hypervisor || !l.contains("cost/exit-stats"))
        .cloned()
        .collect()
}

/// Samples by metric id, per arrangement.
type Samples = BTreeMap<&'static str, [Vec<f64>; 2]>;

fn add(samples: &mut Samples, arr: Arrangement, figures: Figures) {
    for (id, v) in figures {
        samples.entry(id).or_default()[arr.index()].push(v);
    }
}

/// The rows of `metrics` from `samples`.
pub fn rows(metrics: &[Metric], samples: &Samples, t: &RatioThresholds) -> Vec<Row> {
    let none: [Vec<f64>; 2] = Default::default();
    metrics
        .iter()
        .map(|m| {
            let [d, h] = samples.get(m.id).unwrap_or(&none);
            Row::new((m.id, m.name, m.unit, m.better), d, h, t)
        })
        .collect()
}

fn bench_dir() -> Result<PathBuf> {
    let dir = paths::workspace_root().join("target").join("bench");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The README section: the machine, the caveat, the table, the chart.
fn readme_section(machine: &report::Machine, runs: usize, took: Duration, table: &str) -> String {
    format!(
        "<!-- generated by `cargo xtask bench`: edits here are overwritten -->\n\
         `cargo xtask bench --runs {runs}` ({:.1} minutes), {}, on {}. {}\n\n{table}\n\
         ![ratio hypervisor / direct per metric](docs/bench.svg)\n\n{}\n",
        took.as_secs_f64() / 60.0,
        machine.date,
        machine.describe(),
        NOTES[0],
        NOTES[1..].join("\n\n"),
    )
}

/// `cargo xtask bench`: every run boots both arrangements, Linux then the
/// probe; prints the table; writes `target/bench/bench.{json,md,svg}`,
/// [`report::CHART`] and the README section. `Ok(false)` when a ratio is
/// outside its target in [`stats::RATIO_THRESHOLDS`] (or not measured).
pub fn bench(b: &Bench) -> Result<bool> {
    let thresholds = RatioThresholds::load()?;
    let runs = b.runs.max(1);
    let started = std::time::Instant::now();
    let mut samples = Samples::new();
    let per_run = if b.probe.is_some() { 4 } else { 2 };
    let mut progress = Progress::new(
        format!(
            "bench: {} boots ({runs} run(s), direct and hypervisor alternately)",
            per_run * runs
        ),
        (per_run * runs) as u64,
    );
    for run in 1..=runs {
        for arr in ARRANGEMENTS {
            let what = format!("run {run}/{runs} Linux {}", arr.name());
            progress.set_message(&what);
            let f = run_linux(b, arr)?;
            progress.inc(&format!("{what}: {} figures", f.len()));
            add(&mut samples, arr, f);
            if let Some(p) = &b.probe {
                let what = format!("run {run}/{runs} probe {}", arr.name());
                progress.set_message(&what);
                let f = run_probe(b, arr, p)?;
                progress.inc(&format!("{what}: {} figures", f.len()));
                add(&mut samples, arr, f);
            }
        }
    }
    progress.finish();
    let metrics: Vec<Metric> = METRICS
        .iter()
        .filter(|m| b.probe.is_some() || !PROBE_METRICS.contains(&m.id))
        .copied()
        .collect();
    let rows = rows(&metrics, &samples, &thresholds);
    let machine = report::Machine::this();
    let table = report::markdown(&rows);
    println!("{table}");
    for n in NOTES {
        println!("{n}\n");
    }
    let notes: Vec<String> = NOTES.iter().map(|s| s.to_string()).collect();
    let dir = bench_dir()?;
    let json = report::json(&report::Report {
        machine: &machine,
        runs,
        notes: &notes,
        metrics: &rows,
    })?;
    std::fs::write(dir.join("bench.json"), json)?;
    std::fs::write(dir.join("bench.md"), &table)?;
    let svg = report::chart(
        &rows,
        &format!(
            "hypervisor / direct, medians of {runs} run(s), {}",
            machine.date
        ),
    )?;
    std::fs::write(dir.join("bench.svg"), &svg)?;
    let root = paths::workspace_root();
    std::fs::write(root.join(report::CHART), &svg)?;
    report::update_file_section(
        &root.join("README.md"),
        report::README_BEGIN,
        report::README_END,
        &readme_section(&machine, runs, started.elapsed(), &table),
    )?;
    eprintln!(
        "xtask: {runs} run(s) in {:.0} s; written {}/bench.{{json,md,svg}}, {} and README.md's results",
        started.elapsed().as_secs_f64(),
        dir.display(),
        report::CHART
    );
    let bad: Vec<String> = rows.iter().filter_map(Row::violation).collect();
    for v in &bad {
        eprintln!(
            "xtask: outside its target in {}: {v}",
            stats::RATIO_THRESHOLDS
        );
    }
    Ok(bad.is_empty())
}

/// CPU counts `--scaling` boots.
pub const SCALING_CPUS: &[u32] = &[1, 2, 4, 8];

/// `cargo xtask bench --scaling`: boot to init with each of
/// [`SCALING_CPUS`] in both arrangements, interleaved, `runs` times; the
/// table goes to `target/bench/scaling.{md,json}` and the README's scaling
/// section. Rows carry no target.
pub fn scaling(b: &Bench) -> Result<()> {
    let runs = b.runs.max(1);
    let names: Vec<(String, String)> = SCALING_CPUS
        .iter()
        .map(|n| {
            (
                format!("boot-smp-{n}"),
                format!(
                    "boot: QEMU start to init, {n} CPU{}",
                    if *n == 1 { "" } else { "s" }
                ),
            )
        })
        .collect();
    let mut samples: BTreeMap<String, [Vec<f64>; 2]> = BTreeMap::new();
    let boots = runs * SCALING_CPUS.len() * ARRANGEMENTS.len();
    let mut progress = Progress::new(format!("bench --scaling: {boots} boots"), boots as u64);
    for run in 1..=runs {
        for (n, (id, _)) in SCALING_CPUS.iter().zip(&names) {
            for arr in ARRANGEMENTS {
                let what = format!("run {run}/{runs}, {n} CPUs, {}", arr.name());
                progress.set_message(&what);
                let mut cfg = b.linux.clone();
                cfg.mode = arr.mode(&b.hypervisor);
                cfg.smp = *n;
                cfg.exec = Some("true".into());
                cfg.echo = false;
                cfg.interactive = false;
                cfg.timeout = Some(Duration::from_secs(300));
                let out = qemu::run(&cfg)?;
                check_powered_off(&format!("Linux {} with {n} CPUs", arr.name()), &out)?;
                let t = out
                    .init_start
                    .ok_or_else(|| Error(format!("{}: no {}", arr.name(), qemu::INIT_MARKER)))?;
                progress.inc(&format!("{what}: {:.2} s", t.as_secs_f64()));
                samples.entry(id.clone()).or_default()[arr.index()].push(t.as_secs_f64());
            }
        }
    }
    progress.finish();
    let none = RatioThresholds::default();
    let empty: [Vec<f64>; 2] = Default::default();
    let rows: Vec<Row> = names
        .iter()
        .map(|(id, name)| {
            let [d, h] = samples.get(id).unwrap_or(&empty);
            Row::new((id, name, "s", Better::Lower), d, h, &none)
        })
        .collect();
    let table = report::markdown(&rows);
    println!("{table}");
    let machine = report::Machine::this();
    let dir = bench_dir()?;
    std::fs::write(dir.join("scaling.md"), &table)?;
    let notes = vec!["Boot to init by CPU count; no targets.".to_string()];
    std::fs::write(
        dir.join("scaling.json"),
        report::json(&report::Report {
            machine: &machine,
            runs,
            notes: &notes,
            metrics: &rows,
        })?,
    )?;
    report::update_file_section(
        &paths::workspace_root().join("README.md"),
        report::SCALING_BEGIN,
        report::SCALING_END,
        &format!(
            "<!-- generated by `cargo xtask bench --scaling`: edits here are overwritten -->\n\
             `cargo xtask bench --scaling --runs {runs}`, {}, on {}:\n\n{table}",
            machine.date,
            machine.describe()
        ),
    )?;
    eprintln!(
        "xtask: written {}/scaling.{{json,md}} and README.md's scaling table",
        dir.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bench_setup() -> Bench {
        let mut linux = RunConfig::new(Mode::Direct, "Image".into(), "initrd".into());
        linux.nic = crate::net::Nic::E1000e;
        linux.disk = Disk::Host;
        linux.host_disk = Some("bench-disk.img".into());
        Bench {
            linux,
            hypervisor: "hv.bin".into(),
            probe: Some("probe.bin".into()),
            runs: 1,
        }
    }

    #[test]
    fn direct_probe_runs_fail_on_any_check_but_the_exit_statistics() {
        let c: Vec<String> = [
            "PROBE FAIL cost/exit-stats-ecam got None want Some(4000)",
            "PROBE ok cost/gicd-iidr",
        ]
        .map(String::from)
        .to_vec();
        assert!(probe_failures(&c, Arrangement::Direct).is_empty());
        assert_eq!(probe_failures(&c, Arrangement::Hypervisor).len(), 1);
        let bad = vec!["PROBE FAIL cost/gicd-iidr GICD_IIDR 0x0".to_string()];
        assert_eq!(probe_failures(&bad, Arrangement::Direct).len(), 1);
    }

    #[test]
    fn metric_ids_are_unique() {
        let mut ids: Vec<&str> = METRICS.iter().map(|m| m.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), METRICS.len());
    }

    #[test]
    fn every_guest_and_probe_figure_is_a_metric() {
        let known = |id: &str| METRICS.iter().any(|m| m.id == id);
        for id in guest::TIMED
            .iter()
            .map(|w| w.id)
            .chain(guest::FIO_JOBS.iter().map(|j| j.id))
            .chain(PROBE_METRICS.iter().copied())
            .chain([
                "ping-avg",
                "ping-max",
                "tcp-to-guest",
                "tcp-from-guest",
                "boot",
            ])
        {
            assert!(known(id), "{id}");
        }
    }

    #[test]
    fn the_checked_in_thresholds_name_known_metrics_only() {
        let t = RatioThresholds::load().expect("bench/ratio-thresholds.toml");
        for id in t.ids() {
            assert!(METRICS.iter().any(|m| m.id == id), "{id} is no metric");
        }
    }

    #[test]
    fn the_checked_in_thresholds_point_the_way_each_metric_improves() {
        let t = RatioThresholds::load().expect("bench/ratio-thresholds.toml");
        for m in METRICS {
            match (m.better, t.target(m.id)) {
                (Better::Lower, Some(stats::Target::AtLeast(_)))
                | (Better::Higher, Some(stats::Target::AtMost(_))) => {
                    panic!("{}: the target points the wrong way", m.id)
                }
                _ => {}
            }
        }
    }

    #[test]
    fn the_hypervisor_arrangement_passes_the_nic_through_and_emulates_the_disk() {
        let b = bench_setup();
        let cfg = linux_config(&b, Arrangement::Hypervisor, [40001, 40002]);
        assert_eq!(cfg.mode, Mode::Hypervisor("hv.bin".into()));
        let hv = cfg.hypervisor_extra_args();
        assert!(
            hv.contains("virtio-blk=host") && hv.contains("pci-passthrough="),
            "{hv}"
        );
        let direct = linux_config(&b, Arrangement::Direct, [40001, 40002]);
        assert_eq!(direct.mode, Mode::Direct);
        assert_eq!(direct.host_disk, cfg.host_disk);
    }

    #[test]
    fn the_hypervisor_arrangement_has_the_virtio_console_and_the_direct_one_the_pl011() {
        let b = bench_setup();
        let cfg = linux_config(&b, Arrangement::Hypervisor, [40001, 40002]);
        assert!(cfg.hypervisor_extra_args().contains("virtio-console"));
        assert!(cfg
            .guest_cmdline()
            .expect("fits")
            .starts_with("console=hvc0 "));
        let direct = linux_config(&b, Arrangement::Direct, [40001, 40002]);
        assert!(direct
            .guest_cmdline()
            .expect("fits")
            .starts_with("console=ttyAMA0 "));
    }

    #[test]
    fn both_arrangements_boot_linux_quietly_on_the_same_command_line_but_the_console() {
        let b = bench_setup();
        let line = |arr| {
            linux_config(&b, arr, [40001, 40002])
                .guest_cmdline()
                .expect("fits")
                .split_whitespace()
                .filter(|a| !a.starts_with("console="))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let direct = line(Arrangement::Direct);
        assert_eq!(direct, line(Arrangement::Hypervisor));
        assert!(direct.split_whitespace().any(|a| a == "quiet"), "{direct}");
    }

    #[test]
    fn the_iperf3_servers_are_forwarded_from_the_host_ports() {
        let cfg = linux_config(&bench_setup(), Arrangement::Direct, [40001, 40002]);
        let NetBackend::User { forwards } = cfg.net else {
            panic!("user networking");
        };
        assert_eq!(
            forwards,
            [
                PortForward {
                    host: 40001,
                    guest: guest::IPERF_PORTS[0]
                },
                PortForward {
                    host: 40002,
                    guest: guest::IPERF_PORTS[1]
                }
            ]
        );
    }

    #[test]
    fn samples_land_in_their_arrangement_and_rows_follow_metric_order() {
        let mut s = Samples::new();
        add(
            &mut s,
            Arrangement::Direct,
            vec![("boot", 2.0), ("boot", 4.0)],
        );
        add(&mut s, Arrangement::Hypervisor, vec![("boot", 3.3)]);
        let r = rows(&METRICS[..2], &s, &RatioThresholds::default());
        assert_eq!(r[0].id, "boot");
        assert_eq!(r[0].direct.as_ref().map(|d| d.median), Some(3.0));
        assert_eq!(r[0].ratio.map(|x| (x * 100.0).round()), Some(110.0));
        assert_eq!((r[1].direct.as_ref(), r[1].ratio), (None, None));
    }
}

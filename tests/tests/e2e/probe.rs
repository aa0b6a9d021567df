//! The probe guest (`tests/probe`): a bare-metal program booted as the guest
//! kernel, under the hypervisor, that exercises what Linux never does and
//! prints one `PROBE ok|FAIL group/check ... [spec]` line per check. Each test
//! boots it with some groups selected (`probe=` on its command line) and
//! asserts that the named checks ran and passed.

use std::path::PathBuf;

use xtask::qemu::{self, Disk, RunConfig, RunOutcome, Verdict};

use super::{boot_timeout, hypervisor_bin};

/// The probe's flat binary, from `cargo xtask test`.
pub(crate) fn probe_bin() -> PathBuf {
    std::env::var_os(qemu::env::PROBE_BIN)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "{} is not set: run the end-to-end tests through `cargo xtask test`",
                qemu::env::PROBE_BIN
            )
        })
}

/// One `PROBE` line.
#[derive(Debug)]
pub(crate) struct Check {
    pub ok: bool,
    /// `group/name`.
    pub name: String,
    pub line: String,
}

/// A finished probe run.
pub(crate) struct ProbeRun {
    pub out: RunOutcome,
    pub checks: Vec<Check>,
}

impl ProbeRun {
    /// Panics unless every check named `group/name` in `names` ran (at least
    /// once) and every run of it passed, and unless no check at all failed.
    pub fn assert_passed(&self, names: &[&str]) {
        let failed: Vec<&str> = self
            .checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.line.as_str())
            .collect();
        let missing: Vec<&&str> = names
            .iter()
            .filter(|n| !self.checks.iter().any(|c| c.name == **n))
            .collect();
        assert!(
            failed.is_empty() && missing.is_empty(),
            "probe checks failed: {failed:#?}\nmissing: {missing:?}\nlast 40 console lines:\n{}",
            self.out.tail(40)
        );
    }

    /// The checks named `name`.
    pub fn named(&self, name: &str) -> Vec<&Check> {
        self.checks.iter().filter(|c| c.name == name).collect()
    }
}

/// Boots the probe under the hypervisor running `groups` (comma-separated),
/// after `configure` adjusts the run; panics with the console tail unless it
/// printed `PROBE-DONE` and powered off.
pub(crate) fn run_probe(groups: &str, configure: impl FnOnce(&mut RunConfig)) -> ProbeRun {
    let mut cfg = qemu::config_from_env().unwrap_or_else(|e| panic!("{e}"));
    cfg.mode = qemu::Mode::Hypervisor(hypervisor_bin());
    cfg.kernel = probe_bin();
    cfg.append = format!("probe={groups}");
    cfg.timeout = Some(boot_timeout());
    cfg.echo = false;
    configure(&mut cfg);
    let out = qemu::run(&cfg).unwrap_or_else(|e| panic!("QEMU did not run: {e}"));
    let done = out.console.iter().any(|l| l.contains("PROBE-DONE"));
    if out.verdict != Verdict::PoweredOff || !done {
        panic!(
            "the probe did not finish cleanly ({}); last 60 console lines:\n{}{}",
            out.summary(),
            out.tail(60),
            out.qemu_stderr
        );
    }
    let checks = out
        .console
        .iter()
        .filter_map(|l| {
            let rest = &l[l.find("PROBE ")? + 6..];
            let (verdict, rest) = rest.split_once(' ')?;
            let name = rest.split_whitespace().next()?.to_string();
            Some(Check {
                ok: verdict == "ok",
                name,
                line: l.clone(),
            })
        })
        .collect();
    ProbeRun { out, checks }
}

#[test]
#[ignore = "end-to-end: run with `cargo xtask test`"]
fn probe_runs_on_every_cpu_and_catches_the_exceptions_it_expects() {
    let run = run_probe("boot", |c| c.smp = 4);
    run.assert_passed(&["boot/secondary-runs", "boot/udf-is-undefined"]);
    assert_eq!(
        run.named("boot/secondary-runs").len(),
        3,
        "one check per secondary CPU"
    );
}

/// Fault 6 of issue 9: the EL1 physical timer's interrupt (PPI 30, which the
/// guest DT advertises) reaches the guest, pending at the GIC while the timer
/// asserts it and clear once the timer is off.
#[test]
#[ignore = "end-to-end: run with `cargo xtask test`"]
fn el1_physical_timer_interrupt_reaches_the_guest() {
    let run = run_probe("timers", |_| {});
    run.assert_passed(&[
        "timers/ptimer-condition-met",
        "timers/ptimer-pending",
        "timers/ptimer-delivered",
        "timers/ptimer-active-while-handled",
        "timers/ptimer-cleared",
    ]);
}

/// The virtual timer's interrupt follows the timer's output, not a latch:
/// disabled before the guest took it, it is neither pending nor delivered;
/// armed again, it is delivered and reads active while handled.
#[test]
#[ignore = "end-to-end: run with `cargo xtask test`"]
fn virtual_timer_interrupt_follows_the_timer_output() {
    let run = run_probe("timers", |_| {});
    run.assert_passed(&[
        "timers/vtimer-condition-met",
        "timers/vtimer-withdrawn-not-pending",
        "timers/vtimer-withdrawn-not-delivered",
        "timers/vtimer-delivered",
        "timers/vtimer-active-while-handled",
        "timers/vtimer-cleared",
    ]);
}

/// The ID register group under TID3: no EL2 or EL3 for the guest, the
/// unallocated encodings read zero, and MOPS, advertised, runs at EL1
/// (fault 5's instruction, without Linux).
#[test]
#[ignore = "end-to-end: run with `cargo xtask test`"]
fn advertised_mops_runs_and_the_id_group_reads_as_specified() {
    let run = run_probe("cpufeat", |_| {});
    run.assert_passed(&[
        "cpufeat/no-el2-or-el3",
        "cpufeat/unallocated-id-raz",
        "cpufeat/mops-runs",
    ]);
    let mops = run.named("cpufeat/mops-runs");
    assert!(
        mops.iter().all(|c| !c.line.contains("not advertised")),
        "QEMU -cpu max has FEAT_MOPS: {mops:?}"
    );
}

/// The checks of the virtio-blk group, each a request or register access a
/// well-behaved driver never makes (or a normal one, to show the device
/// still serves).
const VIRTIO_BLK_CHECKS: &[&str] = &[
    "virtio-blk/found",
    "virtio-blk/init",
    "virtio-blk/read",
    "virtio-blk/write",
    "virtio-blk/read-back",
    "virtio-blk/get-id",
    "virtio-blk/unknown-type-unsupp",
    "virtio-blk/read-beyond-capacity-ioerr",
    "virtio-blk/read-across-capacity-ioerr",
    "virtio-blk/sector-overflow-ioerr",
    "virtio-blk/partial-sector-ioerr",
    "virtio-blk/short-header-ioerr",
    "virtio-blk/split-header-ok",
    "virtio-blk/status-in-data-buffer-ok",
    "virtio-blk/no-status-byte-used-0",
    "virtio-blk/buffer-outside-ram",
    "virtio-blk/buffer-straddles-ram-end",
    "virtio-blk/buffer-in-mmio",
    "virtio-blk/descriptor-loop",
    "virtio-blk/next-out-of-range",
    "virtio-blk/readable-after-writable",
    "virtio-blk/head-out-of-range",
    "virtio-blk/avail-idx-too-far",
    "virtio-blk/indirect-too-long",
    "virtio-blk/indirect-in-indirect",
    "virtio-blk/indirect-with-next",
    "virtio-blk/indirect-length-not-multiple",
    "virtio-blk/address-overflow",
    "virtio-blk/serves-again",
    "virtio-blk/indirect-read",
    "virtio-blk/queue-select-out-of-range",
    "virtio-blk/notify-out-of-range-ignored",
    "virtio-blk/pci-cfg-window-read",
    "virtio-blk/pci-cfg-window-longer-than-data",
    "virtio-blk/pci-cfg-window-past-bar",
    "virtio-blk/serves-at-end",
];

#[test]
#[ignore = "end-to-end: run with `cargo xtask test`"]
fn malformed_virtio_blk_requests_get_their_status_on_the_ram_disk_and_it_serves_on() {
    let run = run_probe("virtio-blk", |c| c.disk = Disk::Ram(8 << 20));
    run.assert_passed(VIRTIO_BLK_CHECKS);
}

#[test]
#[ignore = "end-to-end: run with `cargo xtask test`"]
fn malformed_virtio_blk_requests_get_their_status_on_the_host_disk_and_it_serves_on() {
    let dir = std::env::temp_dir().join(format!("synthetic-pci-e2e-{}-probe", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let img = dir.join("disk.img");
    std::fs::File::create(&img)
        .and_then(|f| f.set_len(16 << 20))
        .unwrap_or_else(|e| panic!("{}: {e}", img.display()));
    let run = run_probe("virtio-blk", |c| {
        c.host_disk = Some(img.clone());
        c.disk = Disk::Host;
    });
    run.assert_passed(VIRTIO_BLK_CHECKS);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The hypervisor's heap high-water mark from its shutdown line
/// `heap: N bytes in use, peak P bytes, of S`.
fn heap_peak(run: &ProbeRun) -> u64 {
    run.out
        .console
        .iter()
        .find_map(|l| {
            let rest = &l[l.find("heap: ")?..];
            let peak = rest.split("peak ").nth(1)?;
            peak.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no heap line; last 20 lines:\n{}", run.out.tail(20)))
}

#[test]
#[ignore = "end-to-end: run with `cargo xtask test`"]
fn requests_held_in_flight_and_resets_under_them_do_not_grow_the_hypervisors_memory() {
    // The host disk takes 50 requests a second: every cycle's reads stay in
    // flight while the guest publishes twice a queue's worth, notifies 200
    // times and resets the device under them (the reset completes once the
    // host disk is done with the guest's pages).
    let dir = std::env::temp_dir().join(format!("synthetic-pci-e2e-{}-flood", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let img = dir.join("disk.img");
    std::fs::File::create(&img)
        .and_then(|f| f.set_len(16 << 20))
        .unwrap_or_else(|e| panic!("{}: {e}", img.display()));
    let flood = |cycles: u32| {
        let run = run_probe("virtio-blk-flood", |c| {
            c.host_disk = Some(img.clone());
            c.disk = Disk::Host;
            c.host_disk_iops = Some(50);
            c.append.push_str(&format!(" flood={cycles}"));
        });
        run.assert_passed(&[
            "virtio-blk-flood/resets-complete",
            "virtio-blk-flood/reset-waits-for-requests-in-flight",
        ]);
        heap_peak(&run)
    };
    let one = flood(1);
    let many = flood(10);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        many <= one + 4096,
        "the heap's peak grew from {one} bytes (1 cycle) to {many} bytes (10 cycles)"
    );
}

#[test]
#[ignore = "end-to-end: run with `cargo xtask test`"]
fn every_load_and_store_form_to_an_emulated_device_does_what_the_instruction_says() {
    let run = run_probe("mmio", |c| c.disk = Disk::None);
    run.assert_passed(&[
        "mmio/strb-ldrb",
        "mmio/ldr-w",
        "mmio/ldr-w-imm-offset",
        "mmio/ldr-post-index",
        "mmio/ldr-pre-index",
        "mmio/ldr-register-offset",
        "mmio/ldr-register-offset-lsl",
        "mmio/ldr-register-offset-sxtw",
        "mmio/ldur-negative-offset",
        "mmio/str-w-ldrb",
        "mmio/ldrsb-x",
        "mmio/ldrsb-w",
        "mmio/ldrsw",
        "mmio/ldp-w",
        "mmio/stp-w",
        "mmio/ldp-post-index",
        "mmio/str-wzr",
        "mmio/str-x-ldr-x",
        "mmio/stp-ldp-x",
        "mmio/ldxr-external-abort",
        "mmio/ldadd-external-abort",
    ]);
}

#[test]
#[ignore = "end-to-end: run with `cargo xtask test`"]
fn ecam_edge_cases_answer_as_pcie_says() {
    let run = run_probe("ecam", |c| c.disk = Disk::None);
    run.assert_passed(&[
        "ecam/widths-agree-with-dwords",
        "ecam/id-is-read-only",
        "ecam/absent-function-reads-all-ones",
        "ecam/absent-function-ignores-writes",
        "ecam/absent-bus-reads-all-ones",
        "ecam/qword-is-two-dwords",
        "ecam/extended-capability-header",
    ]);
}

#[test]
#[ignore = "end-to-end: run with `cargo xtask test`"]
fn gic_identification_and_raz_wi_ranges_read_as_the_architecture_says() {
    let run = run_probe("gic-regs", |c| c.smp = 3);
    run.assert_passed(&[
        "gic-regs/gicd-pidr2-archrev",
        "gic-regs/gicd-ctlr-ds-are",
        "gic-regs/gicd-ctlr-are-rao-wi",
        "gic-regs/gicd-typer",
        "gic-regs/gicd-igroupr0-raz-wi",
        "gic-regs/gicd-isenabler0-raz-wi",
        "gic-regs/gicd-ispendr0-raz-wi",
        "gic-regs/gicd-ipriorityr0-raz-wi",
        "gic-regs/gicd-itargetsr8-raz-wi",
        "gic-regs/gicd-irouter0-raz-wi",
        "gic-regs/gicd-reserved-raz",
        "gic-regs/gicr-typer",
        "gic-regs/gicr-waker-awake",
    ]);
    assert_eq!(
        run.named("gic-regs/gicr-typer").len(),
        3,
        "one per redistributor"
    );
}

#[test]
#[ignore = "end-to-end: run with `cargo xtask test`"]
fn the_guests_pl011_interrupts_follow_the_trm() {
    let run = run_probe("pl011", |c| {
        c.disk = Disk::None;
        c.input = Some(("PROBE-INPUT-READY".to_string(), b"abcdefgh".to_vec()));
    });
    run.assert_passed(&[
        "pl011/identification",
        "pl011/icr-clears-all",
        "pl011/tx-not-set-without-data",
        "pl011/tx-set-after-data-leaves",
        "pl011/mis-is-ris-under-imsc",
        "pl011/masking-keeps-ris",
        "pl011/icr-clears-tx",
        "pl011/input-arrives",
        "pl011/rx-at-trigger-level",
        "pl011/rt-while-data-waits",
        "pl011/rx-clears-below-trigger",
        "pl011/rt-stays-while-not-empty",
        "pl011/rx-data-in-order",
        "pl011/rt-clears-when-empty",
    ]);
}

/// The msi group's checks: the vMBI registers from the CPU, the MSI-X
/// table's undefined accesses, a legitimate vector pending its SPI (also
/// after masking, through the PBA), and every forged entry pending nothing.
const MSI_CHECKS: &[&str] = &[
    "msi/typer-mbis-no-lpis",
    "msi/setspi-nsr-in-range-pends",
    "msi/clrspi-nsr-clears",
    "msi/setspi-nsr-outside-range-ignored",
    "msi/table-narrow-reads-all-ones",
    "msi/table-index-past-the-end-reads-all-ones",
    "msi/entries-reset-masked",
    "msi/queue-vector-kept",
    "msi/vector-past-table-reads-no-vector",
    "msi/legit-vector-pends-its-spi",
    "msi/masked-vector-sets-pba",
    "msi/unmask-sends-pending",
    "msi/forged-address-ispendr",
    "msi/forged-address-ram",
    "msi/forged-data-uart",
    "msi/forged-data-intx",
    "msi/forged-data-vtimer",
    "msi/forged-data-sgi",
    "msi/forged-data-past-range",
    "msi/forged-address-ram-untouched",
    "msi/no-vector-no-interrupt",
    "msi/no-vector-no-isr-queue-bit",
    "msi/legit-vector-still-delivers",
];

#[test]
#[ignore = "end-to-end: run with `cargo xtask test`"]
fn forged_msix_entries_reach_nothing_and_a_legitimate_vector_pends_its_mbi_spi() {
    let run = run_probe("msi", |c| c.disk = Disk::Ram(8 << 20));
    run.assert_passed(MSI_CHECKS);
    // The hypervisor counted every forged message (7 entries, one request
    // each) and delivered the legitimate ones (3, one of them after unmask).
    let line = run
        .out
        .console
        .iter()
        .find(|l| l.contains("[hv] msi ") && l.contains("delivered"))
        .unwrap_or_else(|| panic!("no MSI counters at shutdown:\n{}", run.out.tail(20)));
    assert!(
        line.contains("delivered 3 forged 7;") && line.contains("masked-pending 1"),
        "{line}"
    );
    // The seven GICD_SETSPI_NSR writes outside the range, refused by the vGIC.
    let vgic = run
        .out
        .console
        .iter()
        .find(|l| l.contains("[hv] vgic: "))
        .unwrap_or_else(|| panic!("no vGIC counters:\n{}", run.out.tail(20)));
    assert!(vgic.contains("mbi_rejected: 7"), "{vgic}");
}

#[test]
#[ignore = "end-to-end: run with `cargo xtask test`"]
fn a_stage_1_walk_into_an_unmapped_ipa_gets_an_external_abort_not_mmio_emulation() {
    let run = run_probe("aborts", |c| c.disk = Disk::None);
    run.assert_passed(&["aborts/s1ptw-is-an-external-abort-on-walk"]);
    let hv = run
        .out
        .console
        .iter()
        .find(|l| l.contains("[hv] guest powered off"))
        .unwrap_or_else(|| panic!("no exit counters:\n{}", run.out.tail(20)));
    assert!(hv.contains(" s1ptw 1 "), "{hv}");
}

/// A guest's AArch32 EL0 code (Linux's compat processes): a trapped MMIO
/// load from A32 and T32 code is emulated, the instruction skipped by its
/// own length (a 16-bit T32 load used to be skipped by 4 bytes, eating the
/// next instruction) and, in an IT block, the block advanced; an interrupt
/// taken while it runs reaches the guest and returns to it.
#[test]
#[ignore = "end-to-end: run with `cargo xtask test`"]
fn aarch32_el0_code_takes_interrupts_and_trapped_loads_like_aarch64() {
    let run = run_probe("aarch32", |c| c.disk = Disk::None);
    run.assert_passed(&[
        "aarch32/a32-trapped-load-reads-the-register-and-skips-4-bytes",
        "aarch32/t32-trapped-load-skips-2-bytes",
        "aarch32/t32-trapped-load-in-an-it-block-advances-it",
        "aarch32/an-interrupt-taken-from-a32-el0-returns-to-it",
    ]);
}

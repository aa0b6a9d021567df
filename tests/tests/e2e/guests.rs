//! Several guests side by side (issue 12), described by TOML files as
//! `cargo xtask run --config FILE` reads them (docs/guests.md, "The TOML
//! file") and booted as it boots them, as guest nodes under `/chosen`: each
//! on its own CPU, RAM and synthetic segment, its console lines prefixed
//! with its name, stopped alone by its SYSTEM_OFF, a fault or a
//! SYSTEM_RESET (or booted again, as its `on-reset` says), the machine off
//! when the last one has stopped.

use std::path::{Path, PathBuf};

use platform::guests::GuestMemory;
use sha2::Digest;
use xtask::config::{Config, DiskSpec, Overrides};
use xtask::guests;
use xtask::qemu::{self, RunConfig, RunOutcome, Verdict};

use super::{boot_timeout, hypervisor_bin};
use crate::probe::probe_bin;

/// A directory of this test process's own for the test `name`'s files.
fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("guests-e2e-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

/// Guests placed for a boot, and how the run reads their commands' status.
struct Placed {
    plan: guests::Plan,
    /// [`RunConfig::exec_guests`].
    exec_guests: Vec<String>,
    /// Whether a guest runs a command.
    has_command: bool,
}

/// The guests the TOML text `toml` describes, written to `dir` and placed
/// as `cargo xtask run --config` places them, with `exec` as the command
/// of every guest without one of its own (what `--exec` before any
/// `--guest` does); and the guests that run a command. Guests without a
/// `kernel` boot the project's kernel and initramfs.
fn plan_of(dir: &Path, toml: &str, exec: Option<&str>) -> Placed {
    let env = qemu::config_from_env().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.join("guests.toml");
    std::fs::write(&path, toml).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let every = Overrides {
        exec: exec.map(String::from),
        ..Overrides::default()
    };
    config
        .apply_all(&every, &[])
        .unwrap_or_else(|e| panic!("{e}"));
    config.check_commands().unwrap_or_else(|e| panic!("{e}"));
    let files = config
        .files(|| {
            let initrd = env
                .initrd
                .clone()
                .expect("the guest image has an initramfs");
            Ok((env.kernel.clone(), initrd))
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let mode = qemu::Mode::Hypervisor(hypervisor_bin());
    let plan = guests::plan(&config, &files, &dir.join("disk.img"), &mode)
        .unwrap_or_else(|e| panic!("{e}"));
    plan.validate().unwrap_or_else(|e| panic!("{e}"));
    Placed {
        plan,
        exec_guests: config.command_guests(),
        has_command: config.guests.iter().any(|g| g.exec.is_some()),
    }
}

/// Boots `placed` as `cargo xtask run --config` does (its DTB written in
/// `dir`, removed after), typing `input` once its marker shows.
fn launch_plan(placed: &Placed, dir: &Path, input: Option<(String, Vec<u8>)>) -> RunOutcome {
    let plan = &placed.plan;
    let mut cfg = RunConfig::new(plan.mode.clone(), PathBuf::new(), PathBuf::new());
    cfg.timeout = Some(boot_timeout());
    cfg.echo = false;
    cfg.exec_guests.clone_from(&placed.exec_guests);
    cfg.exec = placed.has_command.then(|| "(per guest)".to_string());
    // As `cargo xtask run` builds them: under U-Boot, the script typed.
    let (args, typed) =
        guests::launch_args(plan, &dir.join("guests.dtb"), true).unwrap_or_else(|e| panic!("{e}"));
    let out = qemu::launch(&cfg, &args, input.or(typed), None).unwrap_or_else(|e| panic!("{e}"));
    let _ = std::fs::remove_dir_all(dir);
    if out.verdict == Verdict::TimedOut {
        fail(&out, "the guests did not end in time");
    }
    out
}

/// The guests of the TOML text `toml` ([`plan_of`]), each running `exec`
/// unless it has a command of its own, booted; `name` names the test's
/// scratch directory.
fn boot_toml(name: &str, toml: &str, exec: Option<&str>) -> RunOutcome {
    let dir = scratch_dir(name);
    launch_plan(&plan_of(&dir, toml, exec), &dir, None)
}

/// A `[[guest]]` table of the probe guest (its kernel, no initrd) named
/// `name` with 64 MiB on one CPU, segment `segment`, running the probe
/// groups `groups`.
fn probe_guest(name: &str, segment: u16, groups: &str) -> String {
    format!(
        "[[guest]]\nname = \"{name}\"\nmemory = \"64M\"\nkernel = {:?}\ninitrd = \"none\"\nappend = \"probe={groups}\"\nsegment = {segment}\n\n",
        probe_bin().display().to_string()
    )
}

/// The console lines guest `name` wrote, without its `[name] ` prefix.
fn lines_of<'a>(out: &'a RunOutcome, name: &str) -> Vec<&'a str> {
    let prefix = format!("[{name}] ");
    out.console
        .iter()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .collect()
}

/// The index of the first console line containing `text`.
fn line_with(out: &RunOutcome, text: &str) -> Option<usize> {
    out.console.iter().position(|l| l.contains(text))
}

fn fail(out: &RunOutcome, what: &str) -> ! {
    panic!(
        "{what} ({}); last 80 console lines:\n{}{}",
        out.summary(),
        out.tail(80),
        out.qemu_stderr
    )
}

/// What each guest prints of its PCI view and CPUs.
const VIEW_SCRIPT: &str = r#"echo NPROC=$(nproc)
lspci -tv | sed 's/^/LSPCI:/'
ls /sys/bus/pci/devices | sed 's/^/PCIDEV:/'
exit 0"#;

#[test]
#[ignore = "boots Linux under QEMU: run through cargo xtask test"]
fn two_guests_on_virtio_consoles_each_print_through_hvc0_under_their_names() {
    let out = boot_toml(
        "vconsole",
        r#"
[[guest]]
name = "a"
cpus = 1
memory = "768M"
virtio-console = true

[[guest]]
name = "b"
cpus = 1
memory = "768M"
virtio-console = true
segment = 2
"#,
        Some("echo HVC-ACTIVE=$(cat /sys/class/tty/console/active)"),
    );
    if out.verdict != Verdict::PoweredOff {
        fail(&out, "expected both guests to power off");
    }
    for name in ["a", "b"] {
        let active: Vec<&str> = lines_of(&out, name)
            .iter()
            .filter_map(|l| l.strip_prefix("HVC-ACTIVE="))
            .collect();
        assert_eq!(
            active,
            ["hvc0"],
            "guest {name}'s console:\n{}",
            out.tail(80)
        );
    }
}

#[test]
#[ignore = "boots Linux under QEMU: run through cargo xtask test"]
fn two_linux_guests_boot_on_one_cpu_each_and_each_sees_only_its_own_segment() {
    let out = boot_toml(
        "view",
        r#"
[[guest]]
name = "net"
cpus = 1
memory = "768M"
nic = "e1000e"

[[guest]]
name = "blk"
cpus = 1
memory = "768M"
disks = ["ram:8M"]
segment = 2
"#,
        Some(VIEW_SCRIPT),
    );
    if out.verdict != Verdict::PoweredOff {
        fail(&out, "expected both guests to power off");
    }
    for (name, domain, device, other) in [
        ("net", "0001", "82574L", "Virtio"),
        ("blk", "0002", "Virtio", "82574L"),
    ] {
        let lines = lines_of(&out, name);
        let nproc: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("NPROC="))
            .collect();
        assert_eq!(nproc, ["1"], "guest {name}'s nproc:\n{}", out.tail(80));
        let lspci: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("LSPCI:"))
            .collect();
        assert!(
            lspci.iter().any(|l| l.contains(&format!("[{domain}:00]")))
                && lspci.iter().any(|l| l.contains(device))
                && !lspci.iter().any(|l| l.contains(other)),
            "guest {name} should see segment {domain} with its {device} and no {other}: {lspci:#?}"
        );
        let devs: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("PCIDEV:"))
            .collect();
        assert!(
            !devs.is_empty() && devs.iter().all(|d| d.starts_with(&format!("{domain}:"))),
            "guest {name}'s PCI functions are all on segment {domain}: {devs:?}"
        );
    }
}

#[test]
#[ignore = "boots Linux under QEMU: run through cargo xtask test"]
fn a_guests_system_off_stops_it_alone_and_the_other_runs_on() {
    // Guest a powers off at once; guest b outlives it by a few seconds.
    let script = r#"case "$(cat /proc/cmdline)" in *xtask.guest=a*) exit 0;; esac
sleep 4
echo B-STILL-RUNS
exit 0"#;
    let out = boot_toml(
        "system-off",
        r#"
[[guest]]
name = "a"
memory = "768M"
append = "xtask.guest=a"

[[guest]]
name = "b"
memory = "768M"
append = "xtask.guest=b"
segment = 2
"#,
        Some(script),
    );
    if out.verdict != Verdict::PoweredOff {
        fail(&out, "expected a clean power-off of both guests");
    }
    let Some(a_off) = line_with(
        &out,
        "[hv] guest a: powered off: stopped; 1 of 2 guests still run",
    ) else {
        fail(&out, "no line saying guest a stopped alone")
    };
    let Some(b_runs) = line_with(&out, "[b] B-STILL-RUNS") else {
        fail(&out, "guest b did not go on")
    };
    assert!(a_off < b_runs, "guest b printed after guest a stopped");
    assert!(
        line_with(&out, "[hv] guests: a powered off, b powered off").is_some(),
        "{}",
        out.tail(30)
    );
}

#[test]
#[ignore = "boots Linux under QEMU: run through cargo xtask test"]
fn a_guest_set_to_restart_on_reset_boots_again_after_reboot() {
    // The first boot leaves a mark on the RAM disk (kept across the
    // guest's reset, as a disk is) and reboots; the second finds it.
    let script = r#"if [ "$(dd if=/dev/vda bs=5 count=1 2>/dev/null)" = BOOT1 ]; then echo SECOND-BOOT; exit 0; fi
printf BOOT1 | dd of=/dev/vda conv=fsync 2>/dev/null
echo FIRST-BOOT
reboot -f"#;
    let out = boot_toml(
        "restart",
        r#"
[[guest]]
name = "a"
cpus = 2
memory = "768M"
disks = ["ram:1M"]
on-reset = "restart"
"#,
        Some(script),
    );
    if out.verdict != Verdict::PoweredOff {
        fail(&out, "expected the guest to come back and power off");
    }
    let first = line_with(&out, "FIRST-BOOT");
    let again = line_with(
        &out,
        "[hv] guest a: SYSTEM_RESET: booting it again (restart 1)",
    );
    let second = line_with(&out, "SECOND-BOOT");
    match (first, again, second) {
        (Some(f), Some(a), Some(s)) if f < a && a < s => {}
        _ => fail(
            &out,
            &format!(
                "want FIRST-BOOT, the restart, then SECOND-BOOT: {first:?} {again:?} {second:?}"
            ),
        ),
    }
}

/// 4 MiB the restart test writes into the guest's host disk image before
/// booting: a xorshift sequence (no two sectors alike, never all zeros).
fn disk_pattern() -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..(4 << 20) / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect()
}

/// What each boot of the restart test's guest reports: which boot, the
/// SHA-256 of the pattern read back, ping's status, the NIC's interrupts.
const RESTART_DEVICES_SCRIPT: &str = r#"if [ "$(dd if=/dev/vda bs=5 count=1 2>/dev/null)" = BOOT1 ]; then boot=2; else boot=1; fi
sum=$(dd if=/dev/vda bs=1M skip=1 count=4 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
ping -c 3 -W 2 10.0.2.2 >/dev/null 2>&1; p=$?
echo BOOT=$boot SUM=$sum PING=$p IRQ=$(awk '/eth0/ {s += $2} END {print s + 0}' /proc/interrupts)
grep eth0 /proc/interrupts | sed 's/^/IRQ:/'
if [ $boot = 1 ]; then printf BOOT1 | dd of=/dev/vda conv=fsync 2>/dev/null; reboot -f; fi
exit 0"#;

#[test]
#[ignore = "boots Linux under QEMU: run through cargo xtask test"]
fn a_guest_restarted_on_reset_finds_its_passed_through_nic_and_host_disk_working_again() {
    // Guest a owns the e1000e and a virtio-blk over a host image holding a
    // known pattern. Its first boot checks both, marks the disk and
    // reboots; the hypervisor resets its devices and boots it again; the
    // second boot (it finds the mark: guest RAM was scrubbed in between)
    // must find the NIC passing traffic on its interrupts and the disk
    // reading the pattern as the first boot did.
    let dir = scratch_dir("restart-devices");
    let image = dir.join("a.img");
    let pattern = disk_pattern();
    let mut bytes = vec![0u8; 16 << 20];
    bytes[1 << 20..(1 << 20) + pattern.len()].copy_from_slice(&pattern);
    std::fs::write(&image, &bytes).unwrap_or_else(|e| panic!("{}: {e}", image.display()));
    let want: String = sha2::Sha256::digest(&pattern)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let toml = format!(
        "[[guest]]\nname = \"a\"\nmemory = \"768M\"\nnic = \"e1000e\"\ndisks = [{:?}]\non-reset = \"restart\"\n",
        image.display().to_string()
    );
    let placed = plan_of(&dir, &toml, Some(RESTART_DEVICES_SCRIPT));
    let out = launch_plan(&placed, &dir, None);
    if out.verdict != Verdict::PoweredOff || out.exit_code() != 0 {
        fail(
            &out,
            "expected the guest to come back, run its checks and power off",
        );
    }
    let report = |boot: &str| {
        let key = format!("BOOT={boot} ");
        out.console
            .iter()
            .enumerate()
            .find_map(|(i, l)| Some((i, l[l.find(key.as_str())? + key.len()..].to_string())))
            .unwrap_or_else(|| fail(&out, &format!("boot {boot} reported nothing")))
    };
    let ((first_at, first), (second_at, second)) = (report("1"), report("2"));
    let Some(restart_at) = line_with(
        &out,
        "[hv] guest a: SYSTEM_RESET: booting it again (restart 1)",
    ) else {
        fail(&out, "no line saying guest a was booted again")
    };
    assert!(
        first_at < restart_at && restart_at < second_at,
        "want boot 1, the restart, then boot 2: {first_at} {restart_at} {second_at}"
    );
    let field = |report: &str, key: &str| -> String {
        report
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .unwrap_or_default()
            .to_string()
    };
    for (boot, r) in [("first", &first), ("second", &second)] {
        assert_eq!(
            field(r, "SUM="),
            want,
            "the {boot} boot read the pattern back wrong: {r}\n{}",
            out.tail(60)
        );
        assert_eq!(
            field(r, "PING="),
            "0",
            "the {boot} boot's ping of 10.0.2.2 failed: {r}\n{}",
            out.tail(60)
        );
        let irqs: u64 = field(r, "IRQ=").parse().unwrap_or(0);
        assert!(
            irqs > 0,
            "the {boot} boot's NIC took no interrupt: {r}\n{}",
            out.tail(60)
        );
    }
}

#[test]
#[ignore = "end-to-end: run with `cargo xtask test`"]
fn two_probe_guests_each_see_their_own_segment_number() {
    let out = boot_toml(
        "probe-segments",
        &(probe_guest("a", 3, "boot") + &probe_guest("b", 7, "boot")),
        None,
    );
    if out.verdict != Verdict::PoweredOff {
        fail(&out, "expected both probes to finish and power off");
    }
    for (name, segment) in [("a", "3"), ("b", "7")] {
        let lines = lines_of(&out, name);
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("PROBE-INFO pci segment {segment} "))),
            "guest {name} should see segment {segment}:\n{}",
            out.tail(60)
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("PROBE-DONE") && l.ends_with("failed=0")),
            "guest {name} finished its checks:\n{}",
            out.tail(60)
        );
    }
}

#[test]
#[ignore = "end-to-end: run with `cargo xtask test`"]
fn a_guest_that_faults_is_stopped_alone_and_named_in_the_exit_status() {
    // Guest b's checks take longer than guest a takes to fault.
    let out = boot_toml(
        "probe-fault",
        &(probe_guest("a", 1, "fault") + &probe_guest("b", 2, "boot,timers,psci,ecam,gic-regs")),
        None,
    );
    // Status 2: a guest faulted (the console names it).
    if out.verdict != Verdict::HypervisorFault {
        fail(&out, "expected the run's status to say a guest faulted");
    }
    let Some(faulted) = line_with(
        &out,
        "[hv] guest a: faulted: stopped; 1 of 2 guests still run",
    ) else {
        fail(&out, "no line saying guest a faulted and stopped alone")
    };
    assert!(
        line_with(
            &out,
            "[hv] guest a: instruction abort at its exception vector 0x40000200"
        )
        .is_some_and(|l| l < faulted),
        "{}",
        out.tail(40)
    );
    assert!(
        line_with(&out, "[b] PROBE-DONE").is_some_and(|l| l > faulted)
            && lines_of(&out, "b")
                .iter()
                .any(|l| l.starts_with("PROBE-DONE") && l.ends_with("failed=0")),
        "guest b finished its checks after guest a stopped:\n{}",
        out.tail(40)
    );
    assert!(
        line_with(&out, "[hv] guests: a faulted, b powered off").is_some(),
        "{}",
        out.tail(30)
    );
}

#[test]
#[ignore = "end-to-end: run with `cargo xtask test`"]
fn ctrl_a_three_times_moves_console_input_to_the_next_guest() {
    // Guest b's probe waits for `abcdefgh` (its pl011 group); guest a, which
    // has the input focus first, runs checks that take longer and reads
    // nothing. Ctrl-a three times (each doubled: QEMU's -nographic console
    // takes one Ctrl-a as its own escape) moves the focus to guest b, which
    // gets the rest; guest a gets nothing.
    let dir = scratch_dir("console-focus");
    let placed = plan_of(
        &dir,
        &(probe_guest("a", 1, "boot,timers,psci,ecam,gic-regs") + &probe_guest("b", 2, "pl011")),
        None,
    );
    let mut typed = vec![0x01; 6];
    typed.extend_from_slice(b"abcdefgh");
    let out = launch_plan(&placed, &dir, Some(("[b] PROBE-INPUT-READY".into(), typed)));
    if out.verdict != Verdict::PoweredOff {
        fail(&out, "expected both probes to finish and power off");
    }
    let Some(switched) = line_with(&out, "[hv] console input: guest b") else {
        fail(&out, "no line saying guest b has the input")
    };
    let Some(a_off) = line_with(&out, "[hv] guest a: powered off") else {
        fail(&out, "guest a did not power off")
    };
    assert!(
        switched < a_off,
        "the focus moved while guest a still ran (not because it stopped):\n{}",
        out.tail(60)
    );
    let arrived: Vec<&str> = lines_of(&out, "b")
        .into_iter()
        .filter(|l| l.contains("pl011/input-arrives") || l.contains("pl011/rx-data-in-order"))
        .collect();
    assert!(
        arrived.len() == 2 && arrived.iter().all(|l| l.starts_with("PROBE ok")),
        "guest b got its eight bytes in order: {arrived:#?}\n{}",
        out.tail(60)
    );
    assert!(
        out.console
            .iter()
            .any(|l| l.starts_with("[hv] guest a powered off: exits")
                && l.ends_with("console input 0 bytes (held back 0 times, dropped 0 bytes)")),
        "guest a got none of the input:\n{}",
        out.tail(40)
    );
}

/// Guest a has the focus and reads nothing while more input arrives than
/// its backlog holds (the hypervisor's 1 KiB plus its PL011's FIFO): the
/// shared console reads the host on, dropping and counting what does not
/// fit, so the switch sequence behind that input is seen and the focus moves
/// to guest b while a still runs (a single guest's input would hold the host
/// UART back instead, and the sequence would wait behind it).
#[test]
#[ignore = "end-to-end: run with `cargo xtask test`"]
fn ctrl_a_moves_the_focus_away_from_a_guest_that_reads_nothing_past_its_backlog() {
    let dir = scratch_dir("console-focus-flood");
    let placed = plan_of(
        &dir,
        &(probe_guest("a", 1, "boot,timers,psci,ecam,gic-regs") + &probe_guest("b", 2, "pl011")),
        None,
    );
    let mut typed = vec![b'z'; 4096];
    typed.extend_from_slice(&[0x01; 6]);
    typed.extend_from_slice(b"abcdefgh");
    let out = launch_plan(&placed, &dir, Some(("[b] PROBE-INPUT-READY".into(), typed)));
    if out.verdict != Verdict::PoweredOff {
        fail(&out, "expected both probes to finish and power off");
    }
    let (Some(switched), Some(a_off)) = (
        line_with(&out, "[hv] console input: guest b"),
        line_with(&out, "[hv] guest a: powered off"),
    ) else {
        fail(
            &out,
            "no focus line for guest b, or guest a did not power off",
        )
    };
    assert!(
        switched < a_off,
        "the focus moved only once guest a stopped:\n{}",
        out.tail(60)
    );
    let arrived = lines_of(&out, "b")
        .into_iter()
        .filter(|l| l.contains("pl011/rx-data-in-order") && l.starts_with("PROBE ok"))
        .count();
    assert_eq!(
        arrived,
        1,
        "guest b got its eight bytes in order:\n{}",
        out.tail(60)
    );
    let a_line = out
        .console
        .iter()
        .find(|l| l.starts_with("[hv] guest a powered off: exits"))
        .unwrap_or_else(|| fail(&out, "no exit line for guest a"));
    let dropped: u64 = a_line
        .rsplit_once("dropped ")
        .and_then(|(_, r)| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        dropped > 0 && a_line.contains("console input 4096 bytes"),
        "guest a took the 4096 bytes, dropping what did not fit: {a_line}"
    );
}

/// QEMU's `virt` machine as the hypervisor runs on it (two CPUs, 2 GiB, a
/// GICv3, no NIC unless `extra` adds one), with `extra` arguments: its
/// status (`None` when it did not end within `timeout`) and its console.
fn qemu_virt(extra: &[String], timeout: std::time::Duration) -> (Option<i32>, Vec<String>) {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let mut child = Command::new("qemu-system-aarch64")
        .args([
            "-M",
            "virt,gic-version=3,virtualization=on",
            "-cpu",
            "max,pauth-impdef=on",
            "-smp",
            "2",
            "-m",
            "2048M",
            "-nographic",
            "-no-reboot",
            "-semihosting-config",
            "enable=on,target=native",
            "-nic",
            "none",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("qemu-system-aarch64: {e}"));
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let reader = std::thread::spawn(move || {
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .map(|l| l.trim_end_matches('\r').to_string())
            .collect::<Vec<String>>()
    });
    let start = std::time::Instant::now();
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break s.code();
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    (status, reader.join().unwrap_or_default())
}

/// Where the probe is loaded for guest-node boots: 2 MiB above the DT QEMU
/// puts at 0x4800_0000, outside every guest's memory.
const NODE_MODULE_AT: u64 = 0x4a00_0000;

/// A probe guest node: `name` on the CPU of MPIDR `mpidr`, 64 MiB of host
/// RAM at `ram`, segment `segment`, running the probe's `boot` group.
fn probe_node(name: &str, mpidr: u64, ram: u64, segment: u16) -> platform::guests::GuestConfig {
    use platform::guests::{GuestConfig, GuestMemory, ResetAction};
    use vbus::{MemRange, Pa};
    let len = std::fs::metadata(probe_bin())
        .unwrap_or_else(|e| panic!("{e}"))
        .len();
    GuestConfig {
        name: name.into(),
        cpus: vec![platform::Cpu { mpidr }],
        memory: GuestMemory::Static(vec![MemRange::new(Pa(ram), 64 << 20)]),
        kernel: MemRange::new(Pa(NODE_MODULE_AT), len),
        ramdisk: None,
        bootargs: Some("console=ttyAMA0 probe=boot".into()),
        devices: vec![],
        disks: vec![],
        console: false,
        segment,
        root_ports: None,
        on_reset: ResetAction::Stop,
    }
}

/// Boots the hypervisor with `guests` as guest nodes under `/chosen` of
/// QEMU's own DT (dumped, nodes added by `platform::guests::with_guests`,
/// given back with `-dtb`) and the probe loaded at [`NODE_MODULE_AT`],
/// QEMU given `extra` too (host devices): QEMU's exit status (`None` after
/// `timeout`) and the console.
fn boot_guest_nodes_with(
    guests: &[platform::guests::GuestConfig],
    extra: &[String],
    timeout: std::time::Duration,
) -> (Option<i32>, Vec<String>) {
    static BOOTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "vms-guest-nodes-{}-{}",
        std::process::id(),
        BOOTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let base = dir.join("base.dtb");
    let mut dump = extra.to_vec();
    dump.extend(["-machine".into(), format!("dumpdtb={}", base.display())]);
    let (status, _) = qemu_virt(&dump, timeout);
    assert_eq!(status, Some(0), "QEMU's dumpdtb");
    let base = std::fs::read(&base).unwrap_or_else(|e| panic!("{e}"));
    let dtb = platform::guests::with_guests(&base, guests).unwrap_or_else(|e| panic!("{e}"));
    let dtb_path = dir.join("guests.dtb");
    std::fs::write(&dtb_path, dtb).unwrap_or_else(|e| panic!("{e}"));
    let mut args = extra.to_vec();
    args.extend([
        "-kernel".into(),
        hypervisor_bin().display().to_string(),
        "-append".into(),
        "semihosting".into(),
        "-dtb".into(),
        dtb_path.display().to_string(),
        "-device".into(),
        format!(
            "loader,file={},addr={NODE_MODULE_AT:#x},force-raw=on",
            probe_bin().display()
        ),
    ]);
    let out = qemu_virt(&args, timeout);
    let _ = std::fs::remove_dir_all(&dir);
    out
}

/// [`boot_guest_nodes_with`] with no extra QEMU arguments, bounded by
/// [`boot_timeout`].
fn boot_guest_nodes(guests: &[platform::guests::GuestConfig]) -> (Option<i32>, Vec<String>) {
    boot_guest_nodes_with(guests, &[], boot_timeout())
}

#[test]
#[ignore = "end-to-end: run with `cargo xtask test`"]
fn guests_from_guest_nodes_under_chosen_boot_on_their_own_cpus_ram_and_segments() {
    let (status, console) = boot_guest_nodes(&[
        probe_node("alpha", 0, 0x5000_0000, 3),
        probe_node("beta", 1, 0x5800_0000, 7),
    ]);
    let tail = console[console.len().saturating_sub(60)..].join("\n");
    assert_eq!(status, Some(0), "both guests power off:\n{tail}");
    for (name, segment, ram) in [("alpha", 3, "0x50000000"), ("beta", 7, "0x58000000")] {
        let prefix = format!("[{name}] ");
        let lines: Vec<&str> = console
            .iter()
            .filter_map(|l| l.strip_prefix(prefix.as_str()))
            .collect();
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("PROBE-INFO pci segment {segment} "))),
            "guest {name} sees segment {segment}:\n{tail}"
        );
        assert!(
            lines.iter().any(|l| l.starts_with("PROBE-START cpus=1 ")),
            "guest {name} has one CPU:\n{tail}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("PROBE-DONE") && l.ends_with("failed=0")),
            "guest {name} passed its checks:\n{tail}"
        );
        assert!(
            console.iter().any(|l| l.starts_with(&format!(
                "[hv] guest {name} RAM IPA 0x80000000 size 0x4000000 at PA {ram}"
            ))),
            "guest {name}'s RAM is its host-memory:\n{tail}"
        );
    }
}

// Bad configurations (docs/guests.md, "What stops the boot"): guest nodes
// the hypervisor refuses at boot, each test one kind. The machine is
// `qemu_virt`'s: CPUs 0x0 and 0x1, RAM from 0x4000_0000.

/// How long a refused boot may take: the refusal comes before any guest is
/// built, a few seconds in; so that each test stays under a minute.
fn refusal_timeout() -> std::time::Duration {
    boot_timeout().min(std::time::Duration::from_secs(45))
}

/// The host NIC the device tests give QEMU: an e1000e straight on
/// `pcie.0`, as xtask places a NIC with `nic-slot = "bus"`; its QEMU
/// arguments and its host address.
fn host_e1000e() -> (Vec<String>, vbus::Sbdf) {
    use xtask::net::{self, NetBackend, Nic, NicSlot};
    let args = net::qemu_args(
        Nic::E1000e,
        NicSlot::Bus,
        &NetBackend::User {
            forwards: Vec::new(),
        },
    );
    let sbdf = net::host_addresses(&[NicSlot::Bus])[0]
        .parse()
        .unwrap_or_else(|e| panic!("{e:?}"));
    (args, sbdf)
}

/// Boots `guests` as guest nodes (QEMU given `extra` too), expecting the
/// hypervisor to refuse them: QEMU's status 2 (a fatal error), not a line
/// from any guest, and one fatal line. Returns that line without its
/// `[hv] ERROR fatal: ` prefix, and the console.
fn refused_boot(
    guests: &[platform::guests::GuestConfig],
    extra: &[String],
) -> (String, Vec<String>) {
    let (status, console) = boot_guest_nodes_with(guests, extra, refusal_timeout());
    let tail = console[console.len().saturating_sub(40)..].join("\n");
    assert_eq!(
        status,
        Some(2),
        "a refused configuration stops the boot as a fault (None: not within {} s):\n{tail}",
        refusal_timeout().as_secs()
    );
    for g in guests {
        let prefix = format!("[{}] ", g.name);
        assert!(
            !console.iter().any(|l| l.starts_with(&prefix)),
            "guest {} started:\n{tail}",
            g.name
        );
    }
    let fatal: Vec<&str> = console
        .iter()
        .filter_map(|l| l.strip_prefix("[hv] ERROR fatal: "))
        .collect();
    match fatal[..] {
        [line] => (line.to_string(), console.clone()),
        _ => panic!("want one fatal line, got {fatal:?}:\n{tail}"),
    }
}

/// Asserts that the hypervisor refuses `guests` (QEMU given `extra` too)
/// with exactly the fatal message `want`.
fn assert_boot_refused_with(
    guests: &[platform::guests::GuestConfig],
    extra: &[String],
    want: &str,
) {
    let (line, console) = refused_boot(guests, extra);
    assert_eq!(
        line,
        want,
        "the refusal's message; console:\n{}",
        console[console.len().saturating_sub(40)..].join("\n")
    );
}

#[test]
#[ignore = "end-to-end: run with `cargo xtask test`"]
fn guest_nodes_claiming_one_cpu_stop_the_boot_naming_both_guests() {
    assert_boot_refused_with(
        &[
            probe_node("alpha", 0, 0x5000_0000, 3),
            probe_node("beta", 0, 0x5800_0000, 7),
        ],
        &[],
        "guests alpha and beta both claim CPU 0x0",
    );
}

#[test]
#[ignore = "end-to-end: run with `cargo xtask test`"]
fn guest_nodes_with_overlapping_memory_stop_the_boot_naming_both_guests_and_ranges() {
    assert_boot_refused_with(
        &[
            probe_node("alpha", 0, 0x5000_0000, 3),
            probe_node("beta", 1, 0x5200_0000, 7),
        ],
        &[],
        "guests alpha and beta both claim host memory: \
         alpha's PA 0x50000000+0x4000000 overlaps beta's PA 0x52000000+0x4000000",
    );
}

#[test]
#[ignore = "end-to-end: run with `cargo xtask test`"]
fn guest_nodes_passing_one_device_through_stop_the_boot_naming_both_guests_and_the_device() {
    let (nic, sbdf) = host_e1000e();
    let mut alpha = probe_node("alpha", 0, 0x5000_0000, 3);
    let mut beta = probe_node("beta", 1, 0x5800_0000, 7);
    alpha.devices = vec![sbdf];
    beta.devices = vec![sbdf];
    assert_boot_refused_with(
        &[alpha, beta],
        &nic,
        &format!("guests alpha and beta both claim host device {sbdf}"),
    );
}

#[test]
#[ignore = "end-to-end: run with `cargo xtask test`"]
fn a_guest_node_passing_through_a_device_the_host_lacks_stops_the_boot_naming_it() {
    // The host has the e1000e at 00:02.0 (so segment 0 is enumerated) and
    // nothing at 00:03.0.
    let (nic, _) = host_e1000e();
    let mut beta = probe_node("beta", 1, 0x5800_0000, 7);
    beta.devices = vec!["0000:00:03.0".parse().unwrap_or_else(|e| panic!("{e:?}"))];
    assert_boot_refused_with(
        &[probe_node("alpha", 0, 0x5000_0000, 3), beta],
        &nic,
        "guest beta: host device 0000:00:03.0 does not exist (not found on the host's PCI segments)",
    );
}

#[test]
#[ignore = "end-to-end: run with `cargo xtask test`"]
fn guest_nodes_on_one_segment_number_stop_the_boot_naming_both_guests_and_the_segment() {
    assert_boot_refused_with(
        &[
            probe_node("alpha", 0, 0x5000_0000, 3),
            probe_node("beta", 1, 0x5800_0000, 3),
        ],
        &[],
        "guests alpha and beta both use PCI segment 0003",
    );
}

#[test]
#[ignore = "end-to-end: run with `cargo xtask test`"]
fn a_guest_node_on_a_cpu_the_host_lacks_stops_the_boot_naming_the_guest_and_mpidr() {
    assert_boot_refused_with(
        &[
            probe_node("alpha", 0, 0x5000_0000, 3),
            probe_node("beta", 0x7, 0x5800_0000, 7),
        ],
        &[],
        "guest beta: CPU 0x7 is not a host CPU (no /cpus node has that MPIDR)",
    );
}

#[test]
#[ignore = "end-to-end: run with `cargo xtask test`"]
fn a_guest_node_with_memory_over_the_hypervisor_stops_the_boot_naming_both_ranges() {
    // 0x4000_0000: the start of RAM, where QEMU's boot stub is and, 2 MiB
    // up, the hypervisor's image (its reservation's first range).
    let (line, console) = refused_boot(
        &[
            probe_node("alpha", 0, 0x4000_0000, 3),
            probe_node("beta", 1, 0x5800_0000, 7),
        ],
        &[],
    );
    let loaded = console
        .iter()
        .find_map(|l| l.strip_prefix("[hv] loaded at "))
        .and_then(|l| l.split(' ').next())
        .unwrap_or_else(|| panic!("no `loaded at` line:\n{}", console.join("\n")));
    let want = format!(
        "guest alpha: memory PA 0x40000000+0x4000000 overlaps the hypervisor's reservation PA {loaded}+0x"
    );
    assert!(line.starts_with(&want), "want {want}..., got {line}");
}

#[test]
#[ignore = "end-to-end: run with `cargo xtask test`"]
fn a_guest_node_with_a_virtio_blk_value_that_does_not_parse_stops_the_boot_naming_it() {
    // `ram:0` is written as it is; the hypervisor's parse refuses a RAM disk
    // of no size.
    let mut alpha = probe_node("alpha", 0, 0x5000_0000, 3);
    alpha.disks = vec![platform::guests::DiskBackend::Ram(0)];
    assert_boot_refused_with(
        &[alpha, probe_node("beta", 1, 0x5800_0000, 7)],
        &[],
        "guest alpha: property `virtio-blk`: \"ram:0\": want ram:SIZE with SIZE like 64M, not zero",
    );
}

// Guests from the checked-in two-guest file, booted the way `cargo xtask run
// --config configs/two-guests.toml` boots them: the file read and placed by
// xtask (`config`, `guests::plan`), the guest nodes in the DTB QEMU loads.

/// `configs/two-guests.toml` as `cargo xtask run --config` places it,
/// guest `net` running `net_exec` (its command line with `net_append`) and
/// guest `blk` running `blk_exec` over the image `disk` (the file's
/// `"default"` disk is the cache's image, kept between runs).
fn two_guests_plan(net_exec: &str, net_append: &str, blk_exec: &str, disk: &Path) -> guests::Plan {
    let mode = qemu::Mode::Hypervisor(hypervisor_bin());
    two_guests_plan_in(mode, net_exec, net_append, blk_exec, disk)
}

/// [`two_guests_plan`] booted in `mode` (from QEMU's `-kernel` or from U-Boot).
fn two_guests_plan_in(
    mode: qemu::Mode,
    net_exec: &str,
    net_append: &str,
    blk_exec: &str,
    disk: &Path,
) -> guests::Plan {
    let env = qemu::config_from_env().unwrap_or_else(|e| panic!("{e}"));
    let path = xtask::paths::workspace_root().join("configs/two-guests.toml");
    let mut config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let net = Overrides {
        guest: Some("net".into()),
        exec: Some(net_exec.into()),
        append: [net_append]
            .into_iter()
            .filter(|a| !a.is_empty())
            .map(String::from)
            .collect(),
        ..Overrides::default()
    };
    let blk = Overrides {
        guest: Some("blk".into()),
        exec: Some(blk_exec.into()),
        disk: Some(Some(DiskSpec::Image(disk.to_path_buf()))),
        ..Overrides::default()
    };
    for o in [net, blk] {
        config.apply(&o).unwrap_or_else(|e| panic!("{e}"));
    }
    let initrd = env
        .initrd
        .clone()
        .expect("the guest image has an initramfs");
    let files = config
        .files(|| Ok((env.kernel.clone(), initrd)))
        .unwrap_or_else(|e| panic!("{e}"));
    let plan = guests::plan(&config, &files, disk, &mode).unwrap_or_else(|e| panic!("{e}"));
    plan.validate().unwrap_or_else(|e| panic!("{e}"));
    plan
}

/// A fresh 64 MiB disk image for guest `blk` in a directory of this test
/// process's own.
fn scratch_disk() -> PathBuf {
    let disk = scratch_dir("two-guests").join("blk.img");
    std::fs::File::create(&disk)
        .and_then(|f| f.set_len(64 << 20))
        .unwrap_or_else(|e| panic!("{}: {e}", disk.display()));
    disk
}

/// Boots `plan` as `cargo xtask run --config` does (under U-Boot, typing
/// the script), both guests running a command (so the run's status combines
/// both).
fn launch_two_guests(plan: &guests::Plan, disk: &Path) -> RunOutcome {
    let placed = Placed {
        plan: plan.clone(),
        exec_guests: plan.guests.iter().map(|g| g.name.clone()).collect(),
        has_command: true,
    };
    let dir = disk
        .parent()
        .unwrap_or_else(|| panic!("{}", disk.display()));
    launch_plan(&placed, dir, None)
}

/// [`two_guests_plan`] over a [`scratch_disk`], booted.
fn two_guests_from_config(net_exec: &str, net_append: &str, blk_exec: &str) -> RunOutcome {
    let disk = scratch_disk();
    let plan = two_guests_plan(net_exec, net_append, blk_exec, &disk);
    launch_two_guests(&plan, &disk)
}

/// The host RAM xtask gave guest `name` (one range: sizes are placed whole).
fn host_ram_of(plan: &guests::Plan, name: &str) -> (u64, u64) {
    let g = plan
        .guests
        .iter()
        .find(|g| g.name == name)
        .unwrap_or_else(|| panic!("no guest {name} in the plan"));
    match &g.memory {
        GuestMemory::Static(r) if r.len() == 1 => (r[0].base.0, r[0].size),
        m => panic!("guest {name}: want one host range, got {m:?}"),
    }
}

/// What guest `name` of the two-guest file prints of its PCI view.
fn own_view_script(name: &str) -> String {
    format!(
        "echo WHO={name}\nlspci -tv | sed 's/^/LSPCI:/'\nls /sys/bus/pci/devices | sed 's/^/PCIDEV:/'\nexit 0"
    )
}

#[test]
#[ignore = "boots Linux under QEMU: run through cargo xtask test"]
fn two_guests_from_the_config_file_each_run_their_command_see_their_own_segment_and_exit_0() {
    let out = two_guests_from_config(&own_view_script("net"), "", &own_view_script("blk"));
    if out.verdict != Verdict::PoweredOff || out.exit_code() != 0 {
        fail(
            &out,
            "expected both guests to power off and the run to exit 0",
        );
    }
    assert_each_guest_saw_its_own_segment(&out);
}

#[test]
#[ignore = "boots Linux under QEMU: run through cargo xtask test"]
fn the_uboot_script_of_the_two_guest_file_typed_on_uboot_boots_both_guests_on_their_own_segments() {
    // As `cargo xtask run --uboot --config configs/two-guests.toml`: QEMU's
    // firmware is U-Boot, its loader puts each file where the script's
    // comments say, and xtask types the script's commands.
    let var =
        |n: &str| PathBuf::from(std::env::var_os(n).unwrap_or_else(|| panic!("{n} is not set")));
    let mode = qemu::Mode::UBoot {
        bios: var(qemu::env::UBOOT),
        hypervisor: hypervisor_bin(),
    };
    let disk = scratch_disk();
    let plan = two_guests_plan_in(
        mode,
        &own_view_script("net"),
        "",
        &own_view_script("blk"),
        &disk,
    );
    // What `cargo xtask uboot-script` prints for this file and these commands.
    let listing = plan.uboot_listing().unwrap_or_else(|e| panic!("{e}"));
    let out = launch_two_guests(&plan, &disk);
    if out.verdict != Verdict::PoweredOff || out.exit_code() != 0 {
        fail(
            &out,
            "expected both guests to power off and the run to exit 0",
        );
    }
    // U-Boot echoes each command after its prompt: it ran the script's
    // commands, all of them, in order, and nothing else.
    let ran: Vec<&str> = out
        .console
        .iter()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix("=> "))
        .filter(|c| !c.is_empty())
        .collect();
    let printed: Vec<&str> = listing.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        ran, printed,
        "U-Boot's commands are not the script's:\n{listing}"
    );
    assert!(
        line_with(&out, "[hv] host DT at 0x48000000, bootargs \"semihosting\"").is_some(),
        "the hypervisor should boot with the DT U-Boot edited:\n{}",
        out.tail(80)
    );
    assert_each_guest_saw_its_own_segment(&out);
}

/// Each guest of the two-guest file ran [`own_view_script`], reported
/// status 0, and saw only its own segment: `net` its e1000e (82574L) on
/// 0001, `blk` its virtio-blk on 0002.
fn assert_each_guest_saw_its_own_segment(out: &RunOutcome) {
    for (name, domain, device, other) in [
        ("net", "0001", "82574L", "Virtio"),
        ("blk", "0002", "Virtio", "82574L"),
    ] {
        let lines = lines_of(out, name);
        assert!(
            lines.contains(&format!("WHO={name}").as_str()),
            "guest {name} ran its own command:\n{}",
            out.tail(80)
        );
        assert_eq!(
            qemu::parse_guest_exit_status(&out.console, name),
            Some(0),
            "guest {name}'s status line:\n{}",
            out.tail(80)
        );
        let lspci: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("LSPCI:"))
            .collect();
        assert!(
            lspci.iter().any(|l| l.contains(&format!("[{domain}:00]")))
                && lspci.iter().any(|l| l.contains(device))
                && !lspci.iter().any(|l| l.contains(other)),
            "guest {name} should see segment {domain} with its {device} and no {other}: {lspci:#?}"
        );
        let devs: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("PCIDEV:"))
            .collect();
        assert!(
            !devs.is_empty() && devs.iter().all(|d| d.starts_with(&format!("{domain}:"))),
            "guest {name}'s PCI functions are all on segment {domain}: {devs:?}"
        );
    }
}

#[test]
#[ignore = "boots Linux under QEMU: run through cargo xtask test"]
fn a_guest_reading_the_other_guests_ram_through_dev_mem_gets_an_abort_and_its_pattern_stays() {
    // Where xtask puts blk does not depend on the commands: a plan with
    // placeholders gives the range net's command reads.
    let disk = scratch_disk();
    let (base, size) = host_ram_of(&two_guests_plan("true", "", "true", &disk), "blk");
    // Guest net reads the first and the middle word of blk's host RAM,
    // each in its own process, after blk has written its pattern.
    let net = format!(
        "grep 'System RAM' /proc/iomem | sed 's/^/IOMEM:/'
sleep 2
for a in {base:#x} {mid:#x}; do devmem $a 32; echo DEVMEM-STATUS=$?; done
exit 0",
        mid = base + size / 2
    );
    let blk = "dd if=/dev/urandom of=/dev/shm/pattern bs=1M count=16 2>/dev/null
echo PATTERN-BEFORE=$(md5sum </dev/shm/pattern)
sleep 10
echo PATTERN-AFTER=$(md5sum </dev/shm/pattern)
exit 0";
    let plan = two_guests_plan(&net, "iomem=relaxed", blk, &disk);
    assert_eq!(host_ram_of(&plan, "blk"), (base, size), "blk moved");
    let out = launch_two_guests(&plan, &disk);
    if out.verdict != Verdict::PoweredOff {
        fail(&out, "expected both guests to power off");
    }
    let net_lines = lines_of(&out, "net");
    // The reads must be of memory that is not net's own: its System RAM.
    let reads = [base, base + size / 2];
    for l in net_lines.iter().filter_map(|l| l.strip_prefix("IOMEM:")) {
        let range = l.trim().split(' ').next().unwrap_or_default();
        let (lo, hi) = range
            .split_once('-')
            .unwrap_or_else(|| panic!("iomem line {l:?}"));
        let lo = u64::from_str_radix(lo, 16).unwrap_or_else(|e| panic!("{l:?}: {e}"));
        let hi = u64::from_str_radix(hi, 16).unwrap_or_else(|e| panic!("{l:?}: {e}"));
        assert!(
            reads.iter().all(|a| !(lo..=hi).contains(a)),
            "a read of blk's host RAM {reads:x?} is inside net's own RAM {l}: it proves nothing"
        );
    }
    let status: Vec<&str> = net_lines
        .iter()
        .filter_map(|l| l.strip_prefix("DEVMEM-STATUS="))
        .collect();
    // 128 + SIGBUS (7) or SIGSEGV (11): each read's process died of the
    // abort (devmem prints the value it read and exits 0 otherwise).
    assert!(
        status.len() == reads.len() && status.iter().all(|s| matches!(*s, "135" | "139")),
        "want each devmem killed by SIGBUS/SIGSEGV, got statuses {status:?}:\n{}",
        out.tail(80)
    );
    let blk_lines = lines_of(&out, "blk");
    let sum = |key: &str| {
        blk_lines
            .iter()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| fail(&out, &format!("blk printed no {key}")))
    };
    let (before, after) = (sum("PATTERN-BEFORE="), sum("PATTERN-AFTER="));
    assert_eq!(before, after, "blk's pattern changed");
    // The reads fell between blk's two checksums.
    let written = line_with(&out, "[blk] PATTERN-BEFORE=");
    let read = line_with(&out, "[net] DEVMEM-STATUS=");
    let checked = line_with(&out, "[blk] PATTERN-AFTER=");
    assert!(
        written < read && read < checked,
        "want blk's pattern written, net's read, blk's check in that order: {written:?} {read:?} {checked:?}\n{}",
        out.tail(80)
    );
}

#[test]
#[ignore = "boots Linux under QEMU: run through cargo xtask test"]
fn a_guest_panic_leaves_the_other_guests_fio_clean_and_is_named_in_output_and_exit_status() {
    let net = "sleep 4\necho PANICKING\necho c > /proc/sysrq-trigger\nexit 0";
    let blk = "echo FIO-START
fio --name=t --filename=/dev/vda --rw=randwrite --bs=4k --size=16M --iodepth=8 --ioengine=libaio --direct=1 --verify=crc32c >/tmp/fio 2>&1; echo FIO-STATUS=$?
grep -E 'err=|verify' /tmp/fio | sed 's/^/FIO:/'
exit 0";
    let out = two_guests_from_config(net, "", blk);
    if out.verdict != Verdict::GuestPanic {
        fail(&out, "expected the run's verdict to be a guest panic");
    }
    assert_eq!(
        out.exit_code(),
        3,
        "a guest panic's exit status: {}",
        out.summary()
    );
    assert_eq!(
        qemu::panicked_guests(&out.console),
        ["net"],
        "{}",
        out.tail(80)
    );
    let blk_lines = lines_of(&out, "blk");
    assert!(
        blk_lines.contains(&"FIO-STATUS=0")
            && blk_lines
                .iter()
                .any(|l| l.starts_with("FIO:") && l.contains("err= 0")),
        "blk's fio with verify should complete clean:\n{}",
        out.tail(80)
    );
    let panic = out
        .console
        .iter()
        .position(|l| l.starts_with("[net] ") && l.contains(qemu::PANIC_MARKER));
    let fio_start = line_with(&out, "[blk] FIO-START");
    let fio_end = line_with(&out, "[blk] FIO-STATUS=");
    assert!(
        fio_start < panic && panic < fio_end,
        "net should panic while blk's fio runs: {fio_start:?} {panic:?} {fio_end:?}\n{}",
        out.tail(80)
    );
    assert!(
        line_with(&out, "[hv] guests: net reset, blk powered off").is_some(),
        "the hypervisor's summary names net's reset:\n{}",
        out.tail(30)
    );
}

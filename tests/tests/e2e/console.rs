//! Console input: what the user types reaches the guest whole, however much
//! arrives at once. The guest's PL011 holds 32 characters; the rest waits in
//! the hypervisor's backlog and, past that, in the host UART and QEMU's
//! chardev (a flow-controlled line), never dropped.

use std::sync::OnceLock;

use sha2::Digest;
use xtask::qemu::{self, RunOutcome};

use super::{boot_timeout, exit_stats, expect_powered_off, fail, hv_config, run, tagged};

/// Lines typed at once, each [`LINE_BYTES`] long with its carriage return:
/// 4 KiB in all. Lines stay far below n_tty's 4095-character canonical
/// limit, which would drop characters of a single longer line on any UART.
const LINES: usize = 64;
const LINE_BYTES: usize = 64;

/// Line `i`: its number, then letters and digits that shift with `i`, so a
/// lost, repeated or reordered character changes the checksum.
fn typed_line(i: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut s = format!("{i:02}");
    s.extend((0..LINE_BYTES - 3).map(|j| char::from(ALPHABET[(i * 7 + j) % ALPHABET.len()])));
    s
}

#[test]
#[ignore = "boots Linux under QEMU: run through cargo xtask test"]
fn four_kib_typed_at_once_reach_the_guest_whole() {
    let lines: Vec<String> = (0..LINES).map(typed_line).collect();
    let mut typed = Vec::new();
    for l in &lines {
        typed.extend_from_slice(l.as_bytes());
        typed.push(b'\r'); // Enter; the tty's ICRNL makes it '\n'
    }
    assert_eq!(typed.len(), 4096);
    let received: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let want: String = sha2::Sha256::digest(received.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();

    let mut cfg = qemu::config_from_env().unwrap_or_else(|e| panic!("{e}"));
    cfg.exec = Some(format!(
        "echo READY-FOR-INPUT; head -n {LINES} </dev/console >paste
echo GOT-BYTES=$(wc -c <paste)
echo GOT-SUM=$(sha256sum <paste | cut -d' ' -f1)"
    ));
    cfg.input = Some(("READY-FOR-INPUT".to_string(), typed));
    cfg.timeout = Some(boot_timeout());
    cfg.echo = false;
    let out = run(&cfg);
    let stats = out
        .console
        .iter()
        .find(|l| l.contains("exits gicd"))
        .map_or("(no hypervisor statistics)", String::as_str);
    eprintln!("{stats}");
    assert_eq!(
        tagged(&out, "GOT-BYTES"),
        ["4096"],
        "{}; last 20 console lines:\n{}\n{stats}\n{}",
        out.summary(),
        out.tail(20),
        out.qemu_stderr
    );
    assert_eq!(tagged(&out, "GOT-SUM"), [want.as_str()], "{stats}");
    expect_powered_off(&out);
}

/// Lines typed to the virtio console's guest, and what it prints of them.
const HVC_LINES: usize = 16;

/// One boot with the hypervisor's virtio console as the guest's console
/// (`console=hvc0`): it says which console it has, then reads
/// [`HVC_LINES`] lines typed on the host from it.
fn hvc_boot() -> &'static (RunOutcome, String) {
    static BOOT: OnceLock<(RunOutcome, String)> = OnceLock::new();
    BOOT.get_or_init(|| {
        let lines: Vec<String> = (0..HVC_LINES).map(typed_line).collect();
        let mut typed = Vec::new();
        for l in &lines {
            typed.extend_from_slice(l.as_bytes());
            typed.push(b'\r');
        }
        let received: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let want: String = sha2::Sha256::digest(received.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut cfg = hv_config(&format!(
            "echo HVC-ACTIVE=$(cat /sys/class/tty/console/active)
echo READY-FOR-INPUT; head -n {HVC_LINES} </dev/console >paste
echo GOT-SUM=$(sha256sum <paste | cut -d' ' -f1)"
        ));
        cfg.virtio_console = true;
        cfg.input = Some(("READY-FOR-INPUT".to_string(), typed));
        (run(&cfg), want)
    })
}

/// The number after `name ` in the hypervisor's exit statistics.
fn exit_count(out: &RunOutcome, name: &str) -> u64 {
    let line = exit_stats(out);
    let key = format!(" {name} ");
    line.find(&key)
        .and_then(|i| line[i + key.len()..].split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `{name}` count in {line}"))
}

#[test]
#[ignore = "boots Linux under QEMU: run through cargo xtask test"]
fn a_virtio_console_guest_prints_its_boot_and_its_command_through_hvc0() {
    let (out, _) = hvc_boot();
    expect_powered_off(out);
    assert_eq!(tagged(out, "HVC-ACTIVE"), ["hvc0"], "{}", out.tail(30));
    assert!(
        out.console
            .iter()
            .any(|l| l.contains("Booting Linux on physical CPU")),
        "the kernel's boot messages (replayed once hvc0 is up) reached the host:\n{}",
        out.tail(30)
    );
    assert!(
        out.console.iter().any(|l| l.contains("XTASK-INIT-START")),
        "{}",
        out.tail(30)
    );
    let sent = out
        .console
        .iter()
        .find_map(|l| l.split("virtio-console: sent ").nth(1))
        .and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or_else(|| fail(out, "no virtio-console statistics"));
    assert!(
        sent > 4096,
        "the output went through the transmit queue: {sent} bytes"
    );
}

#[test]
#[ignore = "boots Linux under QEMU: run through cargo xtask test"]
fn input_typed_on_the_host_reaches_the_shell_through_the_receive_queue() {
    let (out, want) = hvc_boot();
    assert_eq!(
        tagged(out, "GOT-SUM"),
        [want.as_str()],
        "{}; last 20 console lines:\n{}",
        out.summary(),
        out.tail(20)
    );
    let received = out
        .console
        .iter()
        .find_map(|l| l.split("received ").nth(1))
        .and_then(|r| r.split_whitespace().next()?.parse::<usize>().ok())
        .unwrap_or_else(|| fail(out, "no virtio-console statistics"));
    assert_eq!(
        received,
        HVC_LINES * LINE_BYTES,
        "every typed byte, through the receiveq"
    );
}

#[test]
#[ignore = "boots Linux under QEMU: run through cargo xtask test"]
fn the_pl011_is_left_alone_once_hvc0_is_the_console() {
    let (out, _) = hvc_boot();
    expect_powered_off(out);
    // Linux's PL011 driver probes the UART (a dozen accesses) and nothing
    // writes to it: its console alone would take tens of thousands.
    let uart = exit_count(out, "uart");
    assert!(uart < 100, "{uart} PL011 exits: {}", exit_stats(out));
}

#[test]
#[ignore = "boots Linux under QEMU: run through cargo xtask test"]
fn the_bench_reports_parse_from_the_virtio_console() {
    use xtask::bench::guest;
    // The bench's guest script without its iperf3 servers (they wait for
    // the host's client, which only the bench runs).
    let script: String = guest::script()
        .lines()
        .filter(|l| !l.contains(guest::NET_READY))
        .map(|l| format!("{l}\n"))
        .collect();
    let mut cfg = hv_config(&script);
    cfg.virtio_console = true;
    // ping's gateway and fio's /dev/vda.
    cfg.nic = xtask::net::Nic::E1000e;
    cfg.disk = qemu::Disk::Ram(64 << 20);
    let out = run(&cfg);
    expect_powered_off(&out);
    let figures = guest::parse(&out.console);
    let ids: Vec<&str> = guest::TIMED
        .iter()
        .map(|w| w.id)
        .chain(["ping-avg", "ping-max"])
        .chain(guest::FIO_JOBS.iter().map(|j| j.id))
        .collect();
    for id in ids {
        assert!(
            figures.iter().any(|(f, _)| *f == id),
            "{id} missing from {figures:?}; last 30 console lines:\n{}",
            out.tail(30)
        );
    }
}

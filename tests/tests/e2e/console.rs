//! Console input: what the user types reaches the guest whole, however much
//! arrives at once. The guest's PL011 holds 32 characters; the rest waits in
//! the hypervisor's backlog and, past that, in the host UART and QEMU's
//! chardev (a flow-controlled line), never dropped.

use sha2::Digest;
use xtask::qemu;

use super::{boot_timeout, expect_powered_off, run, tagged};

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

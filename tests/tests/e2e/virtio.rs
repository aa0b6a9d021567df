//! End-to-end virtio-blk tests: the hypervisor's emulated virtio-blk (a RAM
//! disk) beside the passed-through e1000e on one synthetic segment, each
//! behind its own root port; the raw data path, and fio with verification
//! while TCP traffic goes through the NIC to [`tests::netpeer`].

use std::sync::OnceLock;
use std::time::Duration;

use tests::netpeer::{self, NetPeer, PeerConfig, SinkReport};
use xtask::net::{NetBackend, Nic, NicSlot};
use xtask::qemu::{self, Disk, RunOutcome, Verdict};

use super::{all_warnings, boot_timeout, hypervisor_bin, prefixed, tagged};

/// Bytes the guest sends to the peer while fio runs.
const TRAFFIC_BYTES: u64 = 16 << 20;

const SCRIPT: &str = r#"lspci -nD 2>/dev/null | sed 's/^/LSPCI:/'
for p in 0001:00:01.0 0001:00:02.0; do lspci -vvv -s $p 2>/dev/null | sed "s/^/PORT-$p:/"; done
for d in 0001:01:00.0 0001:02:00.0; do lspci -vvv -s $d 2>/dev/null | sed "s/^/DEV-$d:/"; done
echo BLK-DRIVER=$(basename "$(readlink /sys/bus/pci/devices/0001:02:00.0/driver)")
echo VDA-SECTORS=$(cat /sys/block/vda/size)
head -c 33554432 /dev/urandom >/tmp/p; echo WROTE-SHA256=$(sha256sum </tmp/p | cut -d' ' -f1)
dd if=/tmp/p of=/dev/vda bs=1M seek=8 oflag=direct 2>/dev/null; echo DD-STATUS=$?
rm /tmp/p
echo READ-SHA256=$(dd if=/dev/vda bs=1M skip=8 count=32 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
head -c TRAFFIC /dev/urandom >/tmp/t; echo SENT-SHA256=$(sha256sum </tmp/t | cut -d' ' -f1)
nc 10.0.2.2 SINK </tmp/t & n=$!
fio --name=t --filename=/dev/vda --rw=randrw --bs=4k --size=8M --offset_increment=16M --numjobs=4 --iodepth=16 --ioengine=libaio --direct=1 --verify=crc32c --group_reporting >/tmp/fio 2>&1; echo FIO-STATUS=$?
wait $n; echo NC-STATUS=$?
grep -E 'err=|verify|READ:|WRITE:' /tmp/fio | sed 's/^/FIO:/'
dmesg -r | sed 's/^/DMESG:/'
"#;

struct Boot {
    out: RunOutcome,
    sink: Vec<SinkReport>,
}

fn boot() -> &'static Boot {
    static BOOT: OnceLock<Result<Boot, String>> = OnceLock::new();
    BOOT.get_or_init(|| {
        let peer = NetPeer::start(PeerConfig {
            source_bytes: 0,
            deadline: boot_timeout() + Duration::from_secs(10),
        })
        .map_err(|e| format!("peer did not start: {e}"))?;
        let mut cfg = qemu::config_from_env().map_err(|e| e.to_string())?;
        cfg.mode = qemu::Mode::Hypervisor(hypervisor_bin());
        cfg.nic = Nic::E1000e;
        cfg.nic_slot = NicSlot::RootPort;
        cfg.net = NetBackend::Stream { port: peer.port() };
        cfg.disk = Disk::Ram(64 << 20);
        cfg.exec = Some(
            SCRIPT
                .replace("TRAFFIC", &TRAFFIC_BYTES.to_string())
                .replace("SINK", &netpeer::SINK_PORT.to_string()),
        );
        cfg.timeout = Some(boot_timeout());
        cfg.echo = false;
        let out = qemu::run(&cfg).map_err(|e| format!("QEMU did not run: {e}"))?;
        let sink = peer.sink_reports();
        let _ = peer.stop();
        if out.verdict != Verdict::PoweredOff {
            return Err(format!(
                "expected a clean power-off, got {}; last 60 console lines:\n{}{}",
                out.summary(),
                out.tail(60),
                out.qemu_stderr
            ));
        }
        Ok(Boot { out, sink })
    })
    .as_ref()
    .unwrap_or_else(|e| panic!("{e}"))
}

fn hex(s: &str) -> u64 {
    u64::from_str_radix(s, 16).unwrap_or(u64::MAX)
}

#[test]
#[ignore = "boots Linux under QEMU: run through cargo xtask test"]
fn virtio_blk_and_nic_sit_behind_two_of_our_root_ports_on_one_segment() {
    let out = &boot().out;
    let mut got: Vec<(String, String)> = prefixed(out, "LSPCI")
        .iter()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.len() >= 3)
        .map(|w| (w[0].to_string(), w[2].to_string()))
        .collect();
    got.sort();
    let want: Vec<(String, String)> = [
        ("0001:00:01.0", "1b36:000c"),
        ("0001:00:02.0", "1b36:000c"),
        ("0001:00:03.0", "1b36:000c"),
        ("0001:01:00.0", "8086:10d3"),
        ("0001:02:00.0", "1af4:1042"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(got, want, "{}", out.tail(40));
    assert_eq!(tagged(out, "BLK-DRIVER"), ["virtio-pci"]);
    assert_eq!(
        tagged(out, "VDA-SECTORS"),
        ["131072"],
        "64 MiB in 512-byte sectors"
    );
}

/// Each port's memory or prefetchable window holds every BAR of the device below it.
#[test]
#[ignore = "boots Linux under QEMU: run through cargo xtask test"]
fn each_root_port_window_holds_its_devices_bars() {
    let out = &boot().out;
    for (port, dev) in [
        ("0001:00:01.0", "0001:01:00.0"),
        ("0001:00:02.0", "0001:02:00.0"),
    ] {
        let windows: Vec<(u64, u64)> = prefixed(out, &format!("PORT-{port}"))
            .iter()
            .filter_map(|l| {
                let l = l.trim();
                l.strip_prefix("Memory behind bridge: ")
                    .or_else(|| l.strip_prefix("Prefetchable memory behind bridge: "))
            })
            .filter_map(|w| w.split_whitespace().next())
            .filter_map(|w| w.split_once('-'))
            .map(|(a, b)| (hex(a), hex(b)))
            .collect();
        let bars: Vec<(u64, u64)> = prefixed(out, &format!("DEV-{dev}"))
            .iter()
            .filter_map(|l| l.trim().strip_prefix("Region "))
            .filter_map(|l| l.split("Memory at ").nth(1))
            .map(|l| {
                let addr = hex(l.split_whitespace().next().unwrap_or(""));
                let size = l
                    .split("[size=")
                    .nth(1)
                    .and_then(|s| s.strip_suffix(']'))
                    .map(|s| match s.strip_suffix('K') {
                        Some(k) => k.parse::<u64>().unwrap_or(0) << 10,
                        None => {
                            s.strip_suffix('M')
                                .and_then(|m| m.parse::<u64>().ok())
                                .unwrap_or(0)
                                << 20
                        }
                    })
                    .unwrap_or(0);
                (addr, size)
            })
            .collect();
        assert!(
            !bars.is_empty() && !windows.is_empty(),
            "{dev} behind {port}: {}",
            out.tail(40)
        );
        for (addr, size) in bars {
            assert!(
                windows
                    .iter()
                    .any(|&(b, l)| addr >= b && addr + size - 1 <= l),
                "{dev} BAR {addr:#x}+{size:#x} outside {port}'s windows {windows:x?}"
            );
        }
    }
}

#[test]
#[ignore = "boots Linux under QEMU: run through cargo xtask test"]
fn a_32_mib_pattern_written_with_o_direct_reads_back_the_same() {
    let out = &boot().out;
    assert_eq!(tagged(out, "DD-STATUS"), ["0"], "{}", out.tail(30));
    let wrote = tagged(out, "WROTE-SHA256");
    assert_eq!(wrote.len(), 1);
    assert_eq!(wrote, tagged(out, "READ-SHA256"));
}

#[test]
#[ignore = "boots Linux under QEMU: run through cargo xtask test"]
fn fio_randrw_with_crc32c_verification_passes_while_tcp_flows_through_the_nic() {
    let b = boot();
    let fio = prefixed(&b.out, "FIO").join("\n");
    assert_eq!(tagged(&b.out, "FIO-STATUS"), ["0"], "{fio}");
    assert!(fio.contains("err= 0"), "{fio}");
    assert!(!fio.contains("verify:"), "{fio}");
    assert_eq!(tagged(&b.out, "NC-STATUS"), ["0"]);
    let sent = tagged(&b.out, "SENT-SHA256");
    let want = SinkReport {
        bytes: TRAFFIC_BYTES,
        sha256: sent.first().copied().unwrap_or_default().to_string(),
        finished: true,
    };
    assert_eq!(b.sink, [want], "the transfer during fio");
}

#[test]
#[ignore = "boots Linux under QEMU: run through cargo xtask test"]
fn dmesg_with_both_devices_has_no_warning_but_the_nics_intx_fallback() {
    let out = &boot().out;
    let dmesg = prefixed(out, "DMESG");
    assert!(dmesg.len() > 100, "dmesg not captured");
    let bad: Vec<&str> = all_warnings(&dmesg)
        .into_iter()
        .filter(|l| {
            !super::passthrough::MSI_HIDDEN
                .iter()
                .any(|m| l.ends_with(m))
        })
        .collect();
    assert!(bad.is_empty(), "warnings:\n{}", bad.join("\n"));
}

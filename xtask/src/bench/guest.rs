//! The guest's side of the bench: one shell script, given with `--exec`, that
//! runs every Linux workload in sequence in one boot and reports each on the
//! console, and the parsing of those reports.
//!
//! * Timed workloads: `BENCH:<id>:<start>:<end>` from `/proc/uptime`.
//! * ping: its output between `BENCH-PING-BEGIN` and `BENCH-PING-END`.
//! * TCP: two one-shot iperf3 servers (one per direction), then
//!   [`NET_READY`]; the host's client (`super::host`) runs when it sees that
//!   line, and the script goes on when both servers have served their test.
//! * fio: one run of four stonewalled jobs, its JSON report between
//!   `BENCH-FIO-BEGIN` and `BENCH-FIO-END`.
//!
//! The script travels base64-encoded on the kernel command line, which
//! holds 2048 bytes: it is kept terse.

use super::parse::{self, FioJob};

/// A workload timed by the guest's uptime clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timed {
    /// The metric it gives (seconds).
    pub id: &'static str,
    /// The shell command.
    pub script: &'static str,
}

/// The timed workloads, each about a second under TCG.
pub const TIMED: &[Timed] = &[
    Timed {
        id: "syscalls",
        script: "dd if=/dev/zero of=/dev/null bs=4k count=65536 2>/dev/null",
    },
    Timed {
        id: "user-loop",
        script: "i=0;while [ $i -lt 30000 ];do i=$((i+1));done",
    },
    Timed {
        id: "ipis",
        script: "for i in $(seq 60);do taskset -c 1 true;taskset -c 0 true;done",
    },
    Timed {
        id: "timer",
        script: "for i in $(seq 100);do usleep 10000;done",
    },
    Timed {
        id: "console",
        script: "dd if=/dev/zero bs=1k count=32 2>/dev/null|tr \"\\0\" x >/dev/console;echo",
    },
];

/// Spreads the NIC's interrupt vectors over the CPUs, one after the other in
/// the order `/proc/interrupts` lists them (rx, tx, other: CPUs 0, 1, 0 on
/// two), as irqbalance would, before the network workloads: the same
/// placement in both arrangements. Linux spreads an ITS's LPIs over the CPUs
/// when it allocates them (what it gets directly on QEMU: this is that very
/// placement), but routes an SPI, an MBI one included (what it gets under
/// the hypervisor), to the first CPU of its mask: left alone, the guest under
/// the hypervisor takes every NIC interrupt on CPU 0, and the TCP rows would
/// measure that placement (guest to host about 5 times slower on 2 CPUs,
/// directly on QEMU too) rather than the hypervisor.
pub const SPREAD_NIC_IRQS: &str = "n=0;c=$(nproc);for i in $(grep eth0 /proc/interrupts|cut -d: -f1);do echo $((n%c))>/proc/irq/$i/smp_affinity_list;n=$((n+1));done";

/// Guest TCP ports of the two iperf3 servers: host to guest, guest to host.
pub const IPERF_PORTS: [u16; 2] = [5201, 5202];
/// Seconds of each iperf3 test (the host's `-t`).
pub const IPERF_SECONDS: u32 = 3;
/// The guest prints this once both iperf3 servers listen.
pub const NET_READY: &str = "BENCH-NET-READY";
/// Seconds of each fio job.
pub const FIO_SECONDS: u32 = 3;
/// Echo requests sent to 10.0.2.2, one each [`PING_INTERVAL`] seconds.
pub const PING_COUNT: u32 = 20;
/// Seconds between echo requests.
pub const PING_INTERVAL: &str = "0.1";

/// A fio job of the run and the metric it gives.
#[derive(Debug, Clone, Copy)]
pub struct FioSpec {
    /// Job name (`--name`), as the report names it.
    pub job: &'static str,
    /// `--rw`.
    pub rw: &'static str,
    /// `--bs`.
    pub bs: &'static str,
    /// `--iodepth`.
    pub iodepth: u32,
    /// The metric.
    pub id: &'static str,
    /// The figure of the job's report that the metric is.
    pub figure: fn(&FioJob) -> f64,
}

/// The fio jobs, in the order they run (`--stonewall`: one at a time), on
/// `/dev/vda` with `direct=1`, libaio.
pub const FIO_JOBS: &[FioSpec] = &[
    FioSpec {
        job: "rr",
        rw: "randread",
        bs: "4k",
        iodepth: 16,
        id: "blk-rand-read",
        figure: |j| j.read_iops,
    },
    FioSpec {
        job: "rw",
        rw: "randwrite",
        bs: "4k",
        iodepth: 16,
        id: "blk-rand-write",
        figure: |j| j.write_iops,
    },
    FioSpec {
        job: "sr",
        rw: "read",
        bs: "1M",
        iodepth: 4,
        id: "blk-seq-read",
        figure: |j| j.read_mib_s,
    },
    FioSpec {
        job: "sw",
        rw: "write",
        bs: "1M",
        iodepth: 4,
        id: "blk-seq-write",
        figure: |j| j.write_mib_s,
    },
];

const PING_BEGIN: &str = "BENCH-PING-BEGIN";
const PING_END: &str = "BENCH-PING-END";
const FIO_BEGIN: &str = "BENCH-FIO-BEGIN";
const FIO_END: &str = "BENCH-FIO-END";

/// The guest script.
pub fn script() -> String {
    let mut s = String::from(
        "t(){ read a x </proc/uptime;eval \"$2\";read b x </proc/uptime;echo BENCH:$1:$a:$b;}\n",
    );
    for w in TIMED {
        s.push_str(&format!("t {} '{}'\n", w.id, w.script));
    }
    s.push_str(SPREAD_NIC_IRQS);
    s.push('\n');
    s.push_str(&format!(
        "echo {PING_BEGIN};ping -c {PING_COUNT} -i {PING_INTERVAL} 10.0.2.2;echo {PING_END}\n"
    ));
    // The servers give up after a while if the host's client never comes.
    s.push_str(&format!(
        "for p in {};do timeout 60 iperf3 -s -1 -p $p >/dev/null 2>&1 & done;sleep 1;echo {NET_READY};wait\n",
        IPERF_PORTS.map(|p| p.to_string()).join(" ")
    ));
    s.push_str(&format!(
        "echo {FIO_BEGIN};fio --filename=/dev/vda --direct=1 --ioengine=libaio --runtime={FIO_SECONDS} --time_based --output-format=json"
    ));
    for j in FIO_JOBS {
        s.push_str(&format!(
            " --name={} --stonewall --rw={} --bs={} --iodepth={}",
            j.job, j.rw, j.bs, j.iodepth
        ));
    }
    s.push_str(&format!(" 2>/tmp/e;echo {FIO_END};cat /tmp/e\n"));
    s
}

/// The figures the guest reported, by metric id (missing ones left out).
pub fn parse(console: &[String]) -> Vec<(&'static str, f64)> {
    let mut out = Vec::new();
    for w in TIMED {
        let tag = format!("BENCH:{}:", w.id);
        let t = console.iter().find_map(|l| {
            let rest = &l[l.find(&tag)? + tag.len()..];
            let (a, b) = rest.trim().split_once(':')?;
            Some((b.parse::<f64>().ok()? - a.parse::<f64>().ok()?).max(0.0))
        });
        if let Some(t) = t {
            out.push((w.id, t));
        }
    }
    if let Some(rtt) = parse::section(console, PING_BEGIN, PING_END).and_then(parse::ping_rtt) {
        out.push(("ping-avg", rtt.avg));
        out.push(("ping-max", rtt.max));
    }
    if let Some(report) = parse::section(console, FIO_BEGIN, FIO_END).and_then(parse::json_in) {
        for j in FIO_JOBS {
            if let Some(job) = parse::fio_job(&report, j.job) {
                out.push((j.id, (j.figure)(&job)));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &str) -> Vec<String> {
        s.lines().map(String::from).collect()
    }

    #[test]
    fn the_script_fits_the_kernel_command_line() {
        crate::qemu::guest_cmdline("", Some(&script())).expect("fits in 2048 bytes");
    }

    #[test]
    fn the_script_times_every_workload_and_brackets_every_report() {
        let s = script();
        for w in TIMED {
            assert!(s.contains(&format!("t {} '", w.id)), "{s}");
        }
        for m in [PING_BEGIN, PING_END, NET_READY, FIO_BEGIN, FIO_END] {
            assert!(s.contains(&format!("echo {m}")), "{m}: {s}");
        }
        for j in FIO_JOBS {
            assert!(s.contains(&format!("--name={} ", j.job)), "{s}");
        }
    }

    #[test]
    fn the_nic_interrupts_are_spread_before_the_network_workloads() {
        let s = script();
        let spread = s.find(SPREAD_NIC_IRQS).expect("spread");
        assert!(spread < s.find(PING_BEGIN).expect("ping"), "{s}");
        assert!(spread < s.find(NET_READY).expect("iperf3"), "{s}");
    }

    #[test]
    fn timed_lines_give_seconds_by_workload() {
        let c = lines("noise\nBENCH:user-loop:10.50:11.75\n[  3.1] x BENCH:syscalls:1.00:1.25\nBENCH:nope:1:2");
        let p = parse(&c);
        assert!(p.contains(&("syscalls", 0.25)), "{p:?}");
        assert!(p.contains(&("user-loop", 1.25)), "{p:?}");
        assert_eq!(p.len(), 2, "{p:?}");
    }

    #[test]
    fn garbled_timed_lines_are_skipped() {
        assert!(parse(&lines("BENCH:syscalls:x:2\nBENCH:ipis:1")).is_empty());
    }

    #[test]
    fn ping_and_fio_sections_give_their_metrics() {
        let c = lines(
            "BENCH-PING-BEGIN\nround-trip min/avg/max = 0.2/0.5/0.9 ms\nBENCH-PING-END\n\
             BENCH-FIO-BEGIN\n{\"jobs\": [{\"jobname\": \"rr\", \"read\": {\"iops\": 1000.0, \"bw_bytes\": 4096000},\
             \"write\": {\"iops\": 0.0, \"bw_bytes\": 0}}]}\nBENCH-FIO-END",
        );
        let p = parse(&c);
        assert_eq!(
            p,
            [
                ("ping-avg", 0.5),
                ("ping-max", 0.9),
                ("blk-rand-read", 1000.0)
            ]
        );
    }
}

//! The workload tools' reports: `iperf3 -J` (the host's client), `fio
//! --output-format=json` and busybox or iputils `ping` (its summary line; it
//! has no machine-readable mode), and the console sections the guest script
//! brackets them with.

use serde_json::Value;

/// The console lines strictly between the line containing `begin` and the
/// next line containing `end` (`None` when either is missing).
pub fn section<'a>(console: &'a [String], begin: &str, end: &str) -> Option<&'a [String]> {
    let start = console.iter().position(|l| l.contains(begin))? + 1;
    let len = console[start..].iter().position(|l| l.contains(end))?;
    Some(&console[start..start + len])
}

/// The JSON document in `lines`: from the first line starting with `{` to
/// the last line ending with `}` (tools print warnings around it).
pub fn json_in(lines: &[String]) -> Option<Value> {
    let first = lines.iter().position(|l| l.trim_start().starts_with('{'))?;
    let last = lines.iter().rposition(|l| l.trim_end().ends_with('}'))?;
    if last < first {
        return None;
    }
    serde_json::from_str(&lines[first..=last].join("\n")).ok()
}

/// TCP throughput in Mbit/s from `iperf3 -J` client output: what the
/// receiving side got (`end.sum_received.bits_per_second`), whichever way
/// the data went (`-R` makes the client the receiver). An error naming
/// iperf3's `error` message otherwise.
pub fn iperf3_mbits(json: &str) -> std::result::Result<f64, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        return Err(e.to_string());
    }
    let bps = v
        .pointer("/end/sum_received/bits_per_second")
        .and_then(Value::as_f64)
        .ok_or_else(|| "no end.sum_received.bits_per_second".to_string())?;
    Ok(bps / 1e6)
}

/// One fio job's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FioJob {
    /// Reads per second.
    pub read_iops: f64,
    /// Writes per second.
    pub write_iops: f64,
    /// Read bandwidth in MiB/s.
    pub read_mib_s: f64,
    /// Write bandwidth in MiB/s.
    pub write_mib_s: f64,
}

/// The job named `name` in fio's JSON report (`jobs[].jobname`), `None`
/// when missing or when fio reports an error for it.
pub fn fio_job(report: &Value, name: &str) -> Option<FioJob> {
    let job = report
        .get("jobs")?
        .as_array()?
        .iter()
        .find(|j| j.get("jobname").and_then(Value::as_str) == Some(name))?;
    if job.get("error").and_then(Value::as_i64).unwrap_or(0) != 0 {
        return None;
    }
    let f = |dir: &str, key: &str| job.get(dir)?.get(key)?.as_f64();
    let mib = |dir: &str| f(dir, "bw_bytes").map(|b| b / f64::from(1u32 << 20));
    Some(FioJob {
        read_iops: f("read", "iops")?,
        write_iops: f("write", "iops")?,
        read_mib_s: mib("read")?,
        write_mib_s: mib("write")?,
    })
}

/// Round-trip times in milliseconds from ping's summary line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PingRtt {
    /// The average.
    pub avg: f64,
    /// The largest.
    pub max: f64,
}

/// The summary line of busybox (`round-trip min/avg/max = 0.2/0.3/0.6 ms`)
/// or iputils ping (`rtt min/avg/max/mdev = 0.2/0.3/0.6/0.1 ms`); `None`
/// without one (no reply came back).
pub fn ping_rtt(lines: &[String]) -> Option<PingRtt> {
    lines.iter().find_map(|l| {
        let rest = &l[l.find("min/avg/max")?..];
        let (_, values) = rest.split_once('=')?;
        let mut v = values
            .trim()
            .split(|c: char| c == '/' || c.is_whitespace())
            .map(str::parse::<f64>);
        let (_min, avg, max) = (v.next()?.ok()?, v.next()?.ok()?, v.next()?.ok()?);
        Some(PingRtt { avg, max })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &str) -> Vec<String> {
        s.lines().map(String::from).collect()
    }

    #[test]
    fn section_is_the_lines_between_the_markers() {
        let c = lines("a\n[  1.0] X-BEGIN\nb\nc\nX-END\nd");
        assert_eq!(section(&c, "X-BEGIN", "X-END"), Some(&c[2..4]));
        assert_eq!(section(&c[..4], "X-BEGIN", "X-END"), None);
    }

    #[test]
    fn json_is_found_between_tool_warnings() {
        let c = lines("fio: warning\n{\n  \"a\": 1\n}\nmore");
        assert_eq!(json_in(&c).and_then(|v| v["a"].as_i64()), Some(1));
        assert_eq!(json_in(&lines("no json here")), None);
    }

    /// `iperf3 -c 127.0.0.1 -t 3 -J`, trimmed to what is read.
    const IPERF3_OK: &str = r#"{
        "start": {"test_start": {"protocol": "TCP", "num_streams": 1, "duration": 3}},
        "intervals": [],
        "end": {
            "streams": [],
            "sum_sent": {"seconds": 3.0, "bytes": 300000000, "bits_per_second": 800000000.0, "retransmits": 0, "sender": true},
            "sum_received": {"seconds": 3.0, "bytes": 281250000, "bits_per_second": 750000000.0, "sender": true}
        }
    }"#;

    #[test]
    fn iperf3_throughput_is_the_receivers_in_mbit_per_s() {
        assert_eq!(iperf3_mbits(IPERF3_OK), Ok(750.0));
    }

    #[test]
    fn iperf3_error_is_reported() {
        let e = iperf3_mbits(
            r#"{"start": {}, "intervals": [], "end": {}, "error": "unable to connect to server: Connection refused"}"#,
        );
        assert_eq!(
            e,
            Err("unable to connect to server: Connection refused".into())
        );
        assert!(iperf3_mbits("iperf3: error").is_err());
        assert!(iperf3_mbits(r#"{"end": {}}"#).is_err());
    }

    /// `fio --output-format=json` (fio 3.33), trimmed.
    const FIO: &str = r#"{
      "fio version" : "fio-3.33",
      "jobs" : [
        {"jobname" : "randread", "error" : 0,
         "read" : {"io_bytes" : 61440000, "bw_bytes" : 20480000, "bw" : 20000, "iops" : 5000.25},
         "write" : {"io_bytes" : 0, "bw_bytes" : 0, "bw" : 0, "iops" : 0.000000}},
        {"jobname" : "write", "error" : 0,
         "read" : {"bw_bytes" : 0, "iops" : 0.0},
         "write" : {"bw_bytes" : 209715200, "iops" : 200.0}},
        {"jobname" : "randwrite", "error" : 5,
         "read" : {"bw_bytes" : 0, "iops" : 0.0},
         "write" : {"bw_bytes" : 0, "iops" : 0.0}}
      ]
    }"#;

    #[test]
    fn fio_jobs_give_iops_and_mib_per_s() {
        let v: Value = serde_json::from_str(FIO).expect("json");
        let r = fio_job(&v, "randread").expect("job");
        assert_eq!((r.read_iops, r.write_iops), (5000.25, 0.0));
        let w = fio_job(&v, "write").expect("job");
        assert_eq!(w.write_mib_s, 200.0);
    }

    #[test]
    fn a_fio_job_with_an_error_or_missing_has_no_figures() {
        let v: Value = serde_json::from_str(FIO).expect("json");
        assert_eq!(fio_job(&v, "randwrite"), None);
        assert_eq!(fio_job(&v, "read"), None);
    }

    #[test]
    fn busybox_ping_summary_gives_avg_and_max() {
        let c = lines(
            "PING 10.0.2.2 (10.0.2.2): 56 data bytes\n64 bytes from 10.0.2.2: seq=0 ttl=255 time=0.393 ms\n\n--- 10.0.2.2 ping statistics ---\n20 packets transmitted, 20 packets received, 0% packet loss\nround-trip min/avg/max = 0.213/0.373/0.671 ms",
        );
        assert_eq!(
            ping_rtt(&c),
            Some(PingRtt {
                avg: 0.373,
                max: 0.671
            })
        );
    }

    #[test]
    fn iputils_ping_summary_gives_avg_and_max() {
        let c = lines("rtt min/avg/max/mdev = 0.045/0.061/0.080/0.011 ms");
        assert_eq!(
            ping_rtt(&c),
            Some(PingRtt {
                avg: 0.061,
                max: 0.080
            })
        );
    }

    #[test]
    fn ping_without_replies_has_no_rtt() {
        let c = lines("3 packets transmitted, 0 packets received, 100% packet loss");
        assert_eq!(ping_rtt(&c), None);
    }
}

//! The host's side of the bench: the iperf3 client, run against the guest's
//! servers through QEMU user networking's port forwards on 127.0.0.1 when
//! the guest says they listen.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::guest::{IPERF_SECONDS, NET_READY};
use super::parse;
use crate::net::LOOPBACK;

/// `n` TCP ports free on 127.0.0.1 now (bound at once, so distinct, then
/// released for QEMU to bind).
pub fn free_ports<const N: usize>() -> std::io::Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind((LOOPBACK, 0)))
        .collect::<std::io::Result<Vec<_>>>()?;
    let mut ports = [0u16; N];
    for (p, l) in ports.iter_mut().zip(&listeners) {
        *p = l.local_addr()?.port();
    }
    Ok(ports)
}

/// How long one iperf3 client may take before it is killed.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long attempts to reach a server go on (the guest's server may not
/// accept yet: QEMU's forward accepts on the host at once and drops the
/// connection if nothing listens in the guest).
const CONNECT_PATIENCE: Duration = Duration::from_secs(15);

/// One `iperf3 -c 127.0.0.1 -p PORT -t IPERF_SECONDS -J [-R]`, killed after
/// [`CLIENT_TIMEOUT`]: its JSON report.
fn iperf3_once(port: u16, reverse: bool) -> Result<String, String> {
    let mut cmd = Command::new("iperf3");
    cmd.args(["-c", LOOPBACK, "-p", &port.to_string()])
        .args(["-t", &IPERF_SECONDS.to_string(), "-J"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if reverse {
        cmd.arg("-R");
    }
    let mut child = cmd.spawn().map_err(|e| format!("iperf3: {e}"))?;
    let mut stdout = child.stdout.take().ok_or("no iperf3 stdout")?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() > CLIENT_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("iperf3 killed after {CLIENT_TIMEOUT:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("iperf3: {e}")),
        }
    }
    reader.join().map_err(|_| "iperf3 reader".to_string())
}

/// Mbit/s of a test against the guest's server behind host port `port`
/// (`reverse`: the guest sends), trying again while the server may not be
/// up yet.
pub fn iperf3(port: u16, reverse: bool) -> Result<f64, String> {
    let started = Instant::now();
    loop {
        let r = iperf3_once(port, reverse).and_then(|json| parse::iperf3_mbits(&json));
        match r {
            Ok(v) => return Ok(v),
            Err(e) if started.elapsed() > CONNECT_PATIENCE => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// Starts the host's side of a run: waits on `console` for [`NET_READY`],
/// then runs the client to `ports[0]` (host to guest) and, with `-R`, to
/// `ports[1]` (guest to host). The thread ends when the console does and
/// gives the figures by metric id (a failed test is reported and left out).
pub fn spawn(console: Receiver<String>, ports: [u16; 2]) -> JoinHandle<Vec<(&'static str, f64)>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut done = false;
        for line in console {
            if done || !line.contains(NET_READY) {
                continue;
            }
            done = true;
            for (id, port, reverse) in [
                ("tcp-to-guest", ports[0], false),
                ("tcp-from-guest", ports[1], true),
            ] {
                match iperf3(port, reverse) {
                    Ok(v) => out.push((id, v)),
                    Err(e) => eprintln!("xtask: bench: iperf3 {id}: {e}"),
                }
            }
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_and_bindable() {
        let [a, b] = free_ports::<2>().expect("ports");
        assert_ne!(a, b);
        TcpListener::bind((LOOPBACK, a)).expect("free");
    }
}

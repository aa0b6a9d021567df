//! A network peer for the end-to-end tests: the far end of the guest NIC's
//! cable, at [`PEER_IP`] (the address QEMU user-mode networking gives its
//! host, and the guest's gateway), in a thread of the test.
//!
//! QEMU connects to it with `-netdev stream` (as a client of an ephemeral
//! port on 127.0.0.1, see [`NetPeer::port`]); every Ethernet frame on that
//! TCP connection is preceded by its length, a 4-byte big-endian integer
//! ([`StreamDevice`]). The TCP/IP stack is smoltcp's: it answers ARP and ICMP
//! echo, and the peer serves two TCP ports:
//!
//! * [`SINK_PORT`]: SHA-256 of everything received on a connection, reported
//!   as a [`SinkReport`] when the guest closes it.
//! * [`SOURCE_PORT`]: sends [`PeerConfig::source_bytes`] bytes of the
//!   [`fill_pattern`] stream, then closes; [`pattern_sha256`] is their hash.
//!
//! The peer stops when dropped, when [`NetPeer::stop`] is called, when QEMU
//! closes the connection, or at [`PeerConfig::deadline`].

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr};

/// The peer's IPv4 address (the guest's gateway).
pub const PEER_IP: [u8; 4] = [10, 0, 2, 2];
/// The peer's MAC address (the one QEMU user networking uses for 10.0.2.2).
pub const PEER_MAC: [u8; 6] = [0x52, 0x55, 0x0a, 0x00, 0x02, 0x02];
/// TCP port that hashes what it receives.
pub const SINK_PORT: u16 = 5001;
/// TCP port that sends the pattern.
pub const SOURCE_PORT: u16 = 5002;
/// Largest frame accepted from QEMU: a 64 KiB packet plus headers (QEMU's
/// `NET_BUFSIZE` is 4 KiB + 64 KiB). A larger length means a broken stream.
pub const MAX_FRAME: usize = 69_632;
/// The MTU offered to smoltcp: a standard Ethernet frame without FCS.
pub const ETHERNET_FRAME: usize = 1514;

/// The longest idle wait for data between two polls of the stack.
const IDLE_TICK: Duration = Duration::from_millis(5);
/// A write that cannot complete in this long means QEMU stopped reading.
const WRITE_LIMIT: Duration = Duration::from_secs(10);
/// TCP buffer of each socket (smoltcp scales its window to it).
const TCP_BUFFER: usize = 1 << 20;

/// A byte stream that carries frames (a socket: the device switches it
/// between non-blocking reads, and blocking waits and writes with timeouts).
pub trait Link: Read + Write {
    /// As [`TcpStream::set_nonblocking`].
    fn set_nonblocking(&self, on: bool) -> io::Result<()>;
    /// As [`TcpStream::set_read_timeout`].
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()>;
    /// As [`TcpStream::set_write_timeout`].
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()>;
}

impl Link for TcpStream {
    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        TcpStream::set_nonblocking(self, on)
    }
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, t)
    }
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        TcpStream::set_write_timeout(self, t)
    }
}

impl Link for UnixStream {
    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        UnixStream::set_nonblocking(self, on)
    }
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        UnixStream::set_read_timeout(self, t)
    }
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        UnixStream::set_write_timeout(self, t)
    }
}

/// Why the link stopped carrying frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkDown {
    /// The other end closed the stream.
    Closed,
    /// A frame length of zero or above [`MAX_FRAME`]: the stream is not
    /// QEMU's framing (or lost sync).
    BadLength(u32),
    /// A read or write failed (the error's text).
    Io(String),
}

/// A smoltcp [`phy::Device`] over QEMU's `-netdev stream` framing: each
/// Ethernet frame preceded by its length (4 bytes, big-endian).
///
/// `receive` never blocks (smoltcp calls it until it returns `None`);
/// [`StreamDevice::wait`] is the idle wait. Frames to send are queued by the
/// tokens and written by [`StreamDevice::flush`].
pub struct StreamDevice<S: Link> {
    link: S,
    /// Bytes read and not yet framed.
    rx: Vec<u8>,
    /// Complete frames read and not yet handed to smoltcp.
    frames: VecDeque<Vec<u8>>,
    /// Framed bytes to write.
    tx: Vec<u8>,
    down: Option<LinkDown>,
    /// Frames received and sent.
    pub frames_in: u64,
    /// Frames queued to send.
    pub frames_out: u64,
}

impl<S: Link> StreamDevice<S> {
    /// Wraps `link`, making it non-blocking, with a write timeout of
    /// [`WRITE_LIMIT`].
    pub fn new(link: S) -> io::Result<Self> {
        link.set_write_timeout(Some(WRITE_LIMIT))?;
        link.set_nonblocking(true)?;
        Ok(Self {
            link,
            rx: Vec::new(),
            frames: VecDeque::new(),
            tx: Vec::new(),
            down: None,
            frames_in: 0,
            frames_out: 0,
        })
    }

    /// Why the link is down, once it is.
    pub fn down(&self) -> Option<&LinkDown> {
        self.down.as_ref()
    }

    /// The next received frame: a buffered one, or one read now (without
    /// waiting). `None` when none is complete.
    pub fn recv_frame(&mut self) -> Option<Vec<u8>> {
        if self.frames.is_empty() && self.down.is_none() {
            self.read_some();
        }
        let f = self.frames.pop_front()?;
        self.frames_in += 1;
        Some(f)
    }

    /// Queues `frame` (framed) for [`StreamDevice::flush`].
    pub fn queue_frame(&mut self, frame: &[u8]) {
        self.begin_frame(frame.len()).copy_from_slice(frame);
    }

    /// Appends a length prefix and `len` zero bytes to the output; returns them.
    fn begin_frame(&mut self, len: usize) -> &mut [u8] {
        self.frames_out += 1;
        let len32 = u32::try_from(len).unwrap_or(u32::MAX);
        self.tx.extend_from_slice(&len32.to_be_bytes());
        let at = self.tx.len();
        self.tx.resize(at + len, 0);
        &mut self.tx[at..]
    }

    /// Writes every queued frame (blocking, at most [`WRITE_LIMIT`]); on
    /// failure the link is down.
    pub fn flush(&mut self) {
        if self.tx.is_empty() || self.down.is_some() {
            return;
        }
        let r = self
            .link
            .set_nonblocking(false)
            .and_then(|()| self.link.write_all(&self.tx))
            .and_then(|()| self.link.flush())
            .and_then(|()| self.link.set_nonblocking(true));
        if let Err(e) = r {
            self.down = Some(LinkDown::Io(e.to_string()));
        }
        self.tx.clear();
    }

    /// Waits at most `timeout` (at least 100 µs) for bytes unless a frame is
    /// already buffered.
    pub fn wait(&mut self, timeout: Duration) {
        if !self.frames.is_empty() || self.down.is_some() {
            return;
        }
        let blocking = self
            .link
            .set_read_timeout(Some(timeout.max(Duration::from_micros(100))))
            .and_then(|()| self.link.set_nonblocking(false));
        if let Err(e) = blocking {
            self.down = Some(LinkDown::Io(e.to_string()));
            return;
        }
        self.read_some();
        if let Err(e) = self.link.set_nonblocking(true) {
            self.down = Some(LinkDown::Io(e.to_string()));
        }
    }

    fn read_some(&mut self) {
        let mut buf = [0u8; 65536];
        match self.link.read(&mut buf) {
            Ok(0) => self.down = Some(LinkDown::Closed),
            Ok(n) => {
                self.rx.extend_from_slice(&buf[..n]);
                self.split_frames();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => self.down = Some(LinkDown::Io(e.to_string())),
        }
    }

    /// Moves every complete frame of `rx` to `frames`.
    fn split_frames(&mut self) {
        let mut at = 0;
        while let Some(head) = self.rx.get(at..at + 4) {
            let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
            if len == 0 || len as usize > MAX_FRAME {
                self.down = Some(LinkDown::BadLength(len));
                break;
            }
            let Some(frame) = self.rx.get(at + 4..at + 4 + len as usize) else {
                break;
            };
            self.frames.push_back(frame.to_vec());
            at += 4 + len as usize;
        }
        self.rx.drain(..at);
    }
}

/// A received frame.
pub struct FrameRx(Vec<u8>);

impl phy::RxToken for FrameRx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

/// A frame to send, queued on its device.
pub struct FrameTx<'a, S: Link>(&'a mut StreamDevice<S>);

impl<S: Link> phy::TxToken for FrameTx<'_, S> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        f(self.0.begin_frame(len))
    }
}

impl<S: Link> phy::Device for StreamDevice<S> {
    type RxToken<'a>
        = FrameRx
    where
        Self: 'a;
    type TxToken<'a>
        = FrameTx<'a, S>
    where
        Self: 'a;

    fn receive(
        &mut self,
        _: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let frame = self.recv_frame()?;
        Some((FrameRx(frame), FrameTx(self)))
    }

    fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        self.down.is_none().then_some(FrameTx(self))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = ETHERNET_FRAME;
        caps
    }
}

/// splitmix64: the pattern's generator (Steele, Lea, Flood, "Fast splittable
/// pseudorandom number generators", OOPSLA 2014).
fn splitmix64(i: u64) -> u64 {
    let mut z = i.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Fills `buf` with the pattern bytes at `offset..offset + buf.len()`: byte
/// `i` is byte `i % 8` (little-endian) of `splitmix64(i / 8)`.
pub fn fill_pattern(offset: u64, buf: &mut [u8]) {
    for (k, b) in buf.iter_mut().enumerate() {
        let i = offset + k as u64;
        *b = splitmix64(i / 8).to_le_bytes()[(i % 8) as usize];
    }
}

/// SHA-256 of the first `len` pattern bytes, lower-case hex (as `sha256sum`).
pub fn pattern_sha256(len: u64) -> String {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut at = 0;
    while at < len {
        let n = (len - at).min(buf.len() as u64) as usize;
        fill_pattern(at, &mut buf[..n]);
        h.update(&buf[..n]);
        at += n as u64;
    }
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the sink received on one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkReport {
    /// Bytes received.
    pub bytes: u64,
    /// Their SHA-256, lower-case hex.
    pub sha256: String,
    /// The guest closed the connection (FIN); `false`: it was reset.
    pub finished: bool,
}

/// What the peer is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerConfig {
    /// Bytes the source sends on each connection.
    pub source_bytes: u64,
    /// The peer stops after this long, whatever happens.
    pub deadline: Duration,
}

/// How the peer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSummary {
    /// Frames received from QEMU.
    pub frames_in: u64,
    /// Frames sent to QEMU.
    pub frames_out: u64,
    /// Connections the source sent all its bytes on (and closed).
    pub source_done: u64,
    /// Why the link went down, if it did (else the peer was stopped or
    /// reached its deadline).
    pub link: Option<LinkDown>,
    /// QEMU never connected.
    pub never_connected: bool,
}

/// A running peer (see the module documentation).
pub struct NetPeer {
    port: u16,
    stop: Arc<AtomicBool>,
    sink: Receiver<SinkReport>,
    thread: Option<JoinHandle<io::Result<PeerSummary>>>,
}

impl NetPeer {
    /// Listens on an ephemeral port of 127.0.0.1 and serves the first
    /// connection (QEMU's) in a thread.
    pub fn start(cfg: PeerConfig) -> io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, sink) = mpsc::channel();
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("netpeer".into())
            .spawn(move || serve(listener, cfg, &flag, &tx))?;
        Ok(Self {
            port,
            stop,
            sink,
            thread: Some(thread),
        })
    }

    /// The 127.0.0.1 port QEMU's `-netdev stream` connects to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The next sink report, waiting at most `timeout`.
    pub fn sink_report(&self, timeout: Duration) -> Option<SinkReport> {
        self.sink.recv_timeout(timeout).ok()
    }

    /// Every sink report so far, without waiting.
    pub fn sink_reports(&self) -> Vec<SinkReport> {
        self.sink.try_iter().collect()
    }

    /// Stops the peer and says how it went.
    pub fn stop(mut self) -> io::Result<PeerSummary> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(io::Error::other("the peer thread panicked")),
            None => Err(io::Error::other("the peer was already stopped")),
        }
    }
}

impl Drop for NetPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Accepts QEMU's connection (until the deadline) and runs the stack on it.
fn serve(
    listener: TcpListener,
    cfg: PeerConfig,
    stop: &AtomicBool,
    sink: &Sender<SinkReport>,
) -> io::Result<PeerSummary> {
    let deadline = Instant::now() + cfg.deadline;
    listener.set_nonblocking(true)?;
    let stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                    return Ok(PeerSummary {
                        frames_in: 0,
                        frames_out: 0,
                        source_done: 0,
                        link: None,
                        never_connected: true,
                    });
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e),
        }
    };
    drop(listener);
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    let mut dev = StreamDevice::new(stream)?;
    run_stack(&mut dev, cfg, deadline, stop, sink)
}

/// Per-connection state of the sink.
#[derive(Default)]
struct Sink {
    open: bool,
    bytes: u64,
    hash: Sha256,
}

/// Per-connection state of the source.
#[derive(Default)]
struct Source {
    sent: u64,
    closing: bool,
    done: u64,
}

fn tcp_socket() -> tcp::Socket<'static> {
    let mut s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
        tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
    );
    // Acknowledge at once: a delayed ACK stalls a sender whose window is full.
    s.set_ack_delay(None);
    s.set_nagle_enabled(false);
    s
}

fn run_stack<S: Link>(
    dev: &mut StreamDevice<S>,
    cfg: PeerConfig,
    deadline: Instant,
    stop: &AtomicBool,
    reports: &Sender<SinkReport>,
) -> io::Result<PeerSummary> {
    let started = Instant::now();
    let now = || smoltcp::time::Instant::from_micros(started.elapsed().as_micros() as i64);
    let mac = HardwareAddress::Ethernet(EthernetAddress(PEER_MAC));
    let mut iface = Interface::new(Config::new(mac), dev, now());
    let [a, b, c, d] = PEER_IP;
    iface.update_ip_addrs(|addrs| {
        let _ = addrs.push(IpCidr::new(IpAddress::v4(a, b, c, d), 24));
    });
    let mut sockets = SocketSet::new(Vec::new());
    let sink_h: SocketHandle = sockets.add(tcp_socket());
    let source_h: SocketHandle = sockets.add(tcp_socket());
    let mut sink = Sink::default();
    let mut source = Source::default();
    let mut chunk = vec![0u8; 1 << 16];
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && dev.down().is_none() {
        iface.poll(now(), dev, &mut sockets);
        serve_sink(sockets.get_mut::<tcp::Socket>(sink_h), &mut sink, reports);
        serve_source(
            sockets.get_mut::<tcp::Socket>(source_h),
            &mut source,
            cfg.source_bytes,
            &mut chunk,
        );
        iface.poll(now(), dev, &mut sockets);
        dev.flush();
        // smoltcp sends one segment per socket and poll: poll again at once
        // while it has more, else wait for the guest.
        match iface.poll_delay(now(), &sockets) {
            Some(d) if d == smoltcp::time::Duration::ZERO => {}
            d => dev.wait(d.map_or(IDLE_TICK, |d| IDLE_TICK.min(d.into()))),
        }
    }
    Ok(PeerSummary {
        frames_in: dev.frames_in,
        frames_out: dev.frames_out,
        source_done: source.done,
        link: dev.down().cloned(),
        never_connected: false,
    })
}

fn serve_sink(s: &mut tcp::Socket, st: &mut Sink, reports: &Sender<SinkReport>) {
    if !s.is_open() {
        let _ = s.listen(SINK_PORT);
        return;
    }
    // Open once established (not in SYN-RECEIVED, where nothing can be
    // received yet either); ended once nothing more can be received.
    if s.may_recv() {
        st.open = true;
    }
    while s.can_recv() {
        let hash = &mut st.hash;
        let got = s.recv(|b| {
            hash.update(&*b);
            (b.len(), b.len())
        });
        match got {
            Ok(n) => st.bytes += n as u64,
            Err(_) => break,
        }
    }
    if st.open && !s.may_recv() {
        let done = std::mem::take(st);
        let _ = reports.send(SinkReport {
            bytes: done.bytes,
            sha256: hex(&done.hash.finalize()),
            finished: s.state() == tcp::State::CloseWait,
        });
        s.close();
    }
}

fn serve_source(s: &mut tcp::Socket, st: &mut Source, total: u64, chunk: &mut [u8]) {
    if !s.is_open() {
        if s.listen(SOURCE_PORT).is_ok() {
            st.sent = 0;
            st.closing = false;
        }
        return;
    }
    while s.may_send() && st.sent < total {
        let want = (total - st.sent).min(chunk.len() as u64) as usize;
        fill_pattern(st.sent, &mut chunk[..want]);
        match s.send_slice(&chunk[..want]) {
            Ok(0) | Err(_) => break,
            Ok(n) => st.sent += n as u64,
        }
    }
    if s.may_send() && st.sent == total && !st.closing {
        // FIN goes after the queued bytes.
        s.close();
        st.closing = true;
        st.done += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (StreamDevice<UnixStream>, UnixStream) {
        let (a, b) = UnixStream::pair().expect("socketpair");
        b.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        (StreamDevice::new(a).expect("device"), b)
    }

    fn framed(frame: &[u8]) -> Vec<u8> {
        let mut v = (frame.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(frame);
        v
    }

    #[test]
    fn frame_preceded_by_big_endian_length_is_received_whole() {
        let (mut dev, mut qemu) = pair();
        qemu.write_all(&framed(&[0xaa; 60])).expect("write");
        assert_eq!(dev.recv_frame(), Some(vec![0xaa; 60]));
    }

    #[test]
    fn frames_split_across_reads_are_reassembled_in_order() {
        let (mut dev, mut qemu) = pair();
        let mut bytes = framed(&[1; 100]);
        bytes.extend(framed(&[2; 1514]));
        let (a, b) = bytes.split_at(50);
        qemu.write_all(a).expect("write");
        assert_eq!(dev.recv_frame(), None, "half a frame is not a frame");
        qemu.write_all(b).expect("write");
        assert_eq!(dev.recv_frame(), Some(vec![1; 100]));
        assert_eq!(dev.recv_frame(), Some(vec![2; 1514]));
    }

    #[test]
    fn queued_frame_is_written_with_its_length_on_flush() {
        let (mut dev, mut qemu) = pair();
        dev.queue_frame(&[7, 8, 9]);
        dev.flush();
        let mut got = [0u8; 7];
        qemu.read_exact(&mut got).expect("read");
        assert_eq!(got, [0, 0, 0, 3, 7, 8, 9]);
    }

    #[test]
    fn smoltcp_transmit_token_frames_what_it_fills() {
        use smoltcp::phy::{Device, TxToken};
        let (mut dev, mut qemu) = pair();
        let tok = dev
            .transmit(smoltcp::time::Instant::ZERO)
            .expect("token while up");
        tok.consume(2, |b| b.copy_from_slice(&[0x5a, 0xa5]));
        dev.flush();
        let mut got = [0u8; 6];
        qemu.read_exact(&mut got).expect("read");
        assert_eq!(got, [0, 0, 0, 2, 0x5a, 0xa5]);
    }

    #[test]
    fn oversized_length_takes_the_link_down() {
        let (mut dev, mut qemu) = pair();
        qemu.write_all(&(MAX_FRAME as u32 + 1).to_be_bytes())
            .expect("write");
        assert_eq!(dev.recv_frame(), None);
        assert_eq!(dev.down(), Some(&LinkDown::BadLength(MAX_FRAME as u32 + 1)));
    }

    #[test]
    fn closed_stream_takes_the_link_down() {
        let (mut dev, qemu) = pair();
        drop(qemu);
        assert_eq!(dev.recv_frame(), None);
        assert_eq!(dev.down(), Some(&LinkDown::Closed));
    }

    #[test]
    fn pattern_is_deterministic_and_offset_consistent() {
        let mut whole = [0u8; 32];
        fill_pattern(0, &mut whole);
        let mut tail = [0u8; 19];
        fill_pattern(13, &mut tail);
        assert_eq!(&whole[13..], &tail);
        assert_ne!(whole[..8], whole[8..16], "not a repeating word");
    }

    #[test]
    fn pattern_hash_of_nothing_is_sha256_of_the_empty_string() {
        assert_eq!(
            pattern_sha256(0),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    /// A guest stand-in: a smoltcp interface at 10.0.2.15 framed over TCP
    /// to the peer, as QEMU would be.
    struct Guest {
        dev: StreamDevice<TcpStream>,
        iface: Interface,
        sockets: SocketSet<'static>,
        tcp: SocketHandle,
        started: Instant,
    }

    impl Guest {
        fn connect(peer: &NetPeer, port: u16) -> Self {
            let link = TcpStream::connect((Ipv4Addr::LOCALHOST, peer.port())).expect("connect");
            let mut dev = StreamDevice::new(link).expect("device");
            let mac = HardwareAddress::Ethernet(EthernetAddress([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
            let mut iface =
                Interface::new(Config::new(mac), &mut dev, smoltcp::time::Instant::ZERO);
            iface.update_ip_addrs(|a| {
                let _ = a.push(IpCidr::new(IpAddress::v4(10, 0, 2, 15), 24));
            });
            let mut sockets = SocketSet::new(Vec::new());
            let tcp = sockets.add(tcp_socket());
            let [a, b, c, d] = PEER_IP;
            sockets
                .get_mut::<tcp::Socket>(tcp)
                .connect(iface.context(), (IpAddress::v4(a, b, c, d), port), 49152)
                .expect("tcp connect");
            Self {
                dev,
                iface,
                sockets,
                tcp,
                started: Instant::now(),
            }
        }

        fn poll(&mut self) -> &mut tcp::Socket<'static> {
            let now =
                smoltcp::time::Instant::from_micros(self.started.elapsed().as_micros() as i64);
            self.iface.poll(now, &mut self.dev, &mut self.sockets);
            self.dev.flush();
            if self.iface.poll_delay(now, &self.sockets) != Some(smoltcp::time::Duration::ZERO) {
                self.dev.wait(Duration::from_millis(1));
            }
            let st = self.sockets.get_mut::<tcp::Socket>(self.tcp).state();
            assert!(
                self.started.elapsed() < Duration::from_secs(10),
                "guest stand-in timed out: {st} in {} out {}",
                self.dev.frames_in,
                self.dev.frames_out
            );
            self.sockets.get_mut::<tcp::Socket>(self.tcp)
        }
    }

    const LOOP_BYTES: u64 = 4 << 20;

    fn loop_peer() -> NetPeer {
        NetPeer::start(PeerConfig {
            source_bytes: LOOP_BYTES,
            deadline: Duration::from_secs(30),
        })
        .expect("peer")
    }

    #[test]
    fn sink_reports_count_and_sha256_of_a_closed_connection() {
        let peer = loop_peer();
        let mut g = Guest::connect(&peer, SINK_PORT);
        let mut sent = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let s = g.poll();
            if s.may_send() && sent < LOOP_BYTES {
                let n = (LOOP_BYTES - sent).min(buf.len() as u64) as usize;
                fill_pattern(sent, &mut buf[..n]);
                sent += s.send_slice(&buf[..n]).expect("send") as u64;
                if sent == LOOP_BYTES {
                    s.close();
                }
            }
            if !s.is_open() {
                break;
            }
        }
        let report = peer.sink_report(Duration::from_secs(5)).expect("a report");
        assert_eq!(
            report,
            SinkReport {
                bytes: LOOP_BYTES,
                sha256: pattern_sha256(LOOP_BYTES),
                finished: true
            }
        );
    }

    #[test]
    fn source_sends_the_pattern_then_closes() {
        let peer = loop_peer();
        let mut g = Guest::connect(&peer, SOURCE_PORT);
        let mut h = Sha256::new();
        let mut got = 0u64;
        loop {
            let s = g.poll();
            while s.can_recv() {
                got += s
                    .recv(|b| {
                        h.update(&*b);
                        (b.len(), b.len() as u64)
                    })
                    .expect("recv");
            }
            if s.state() == tcp::State::CloseWait {
                s.close();
            }
            if !s.is_open() || (got == LOOP_BYTES && !s.may_recv()) {
                break;
            }
        }
        assert_eq!(
            (got, hex(&h.finalize())),
            (LOOP_BYTES, pattern_sha256(LOOP_BYTES))
        );
    }

    #[test]
    fn peer_without_a_connection_stops_at_its_deadline() {
        let peer = NetPeer::start(PeerConfig {
            source_bytes: 0,
            deadline: Duration::from_millis(50),
        })
        .expect("peer");
        std::thread::sleep(Duration::from_millis(100));
        let summary = peer.stop().expect("summary");
        assert!(summary.never_connected);
    }
}

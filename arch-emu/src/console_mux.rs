//! One host console shared by several guests, the way Xen shares its
//! serial console among domains (Xen, `docs/misc/console.txt` and
//! `xen/drivers/char/console.c`, "switch_code"):
//!
//! * Output: each guest's lines reach the host console whole, prefixed with
//!   the guest's name in brackets (`[net] `), so that lines of guests
//!   running at once do not mix ([`OutputMux`]). A guest's partial line waits
//!   for its newline (or until [`LINE_MAX`] bytes have gathered), except
//!   for the guest the user is typing to, whose bytes go out at once (the
//!   echo of what is typed, a prompt without a newline); when another
//!   guest's line comes in between, its line on screen is ended first and
//!   goes on after the other under its prefix again. The hypervisor's own
//!   lines keep their `[hv] ` prefix.
//! * Input: Ctrl-a pressed three times in a row moves the input focus to
//!   the next guest ([`SwitchDetector`]); the three Ctrl-a are consumed. One
//!   or two Ctrl-a followed by anything else reach the guest as typed.

use alloc::vec::Vec;

use crate::console_input::HostRx;

/// Longest partial line a guest's output is held back for; a longer line
/// goes out in pieces of this size, each under the guest's prefix.
pub const LINE_MAX: usize = 256;

/// Ctrl-a (ASCII SOH), the key of the switch sequence.
pub const CTRL_A: u8 = 0x01;

/// Times [`CTRL_A`] is pressed in a row to switch the input focus.
pub const SWITCH_PRESSES: u8 = 3;

/// Where the host console's cursor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cursor {
    /// At the start of a line.
    LineStart,
    /// In a line a guest's immediate output started (its index).
    Guest(usize),
    /// In a line someone else started (the hypervisor's, unprefixed output).
    Other,
}

/// Guests' output lines on one host console.
#[derive(Debug, Clone)]
pub struct OutputMux {
    held: Vec<Vec<u8>>,
    cursor: Cursor,
}

impl OutputMux {
    /// For `guests` guests (index 0..guests), the console at a line start.
    pub fn new(guests: usize) -> Self {
        OutputMux {
            held: (0..guests).map(|_| Vec::new()).collect(),
            cursor: Cursor::LineStart,
        }
    }

    /// Something other than a guest's output (a hypervisor line) was
    /// written: `at_line_start` says where it left the cursor.
    pub fn other_output(&mut self, at_line_start: bool) {
        self.cursor = if at_line_start {
            Cursor::LineStart
        } else {
            Cursor::Other
        };
    }

    /// Guest `guest` (named `name`) wrote `bytes`; `immediate`: the user is
    /// typing to it, its bytes go out at once. What the host console gets
    /// goes to `out`, in order. Bytes of a guest index out of range are
    /// dropped.
    pub fn guest_bytes(
        &mut self,
        guest: usize,
        name: &str,
        bytes: &[u8],
        immediate: bool,
        out: &mut dyn FnMut(&[u8]),
    ) {
        if guest >= self.held.len() {
            return;
        }
        if immediate {
            // What it held back goes first, then everything at once.
            let mut held = core::mem::take(&mut self.held[guest]);
            held.extend_from_slice(bytes);
            self.write_through(guest, name, &held, out);
            return;
        }
        for &b in bytes {
            let line = &mut self.held[guest];
            line.push(b);
            if b == b'\n' || line.len() >= LINE_MAX {
                let line = core::mem::take(line);
                self.emit_line(guest, name, &line, out);
            }
        }
    }

    /// Guest `guest`'s partial line, if it has one, goes out now (it
    /// stopped, or the run ends), ended by a newline.
    pub fn flush(&mut self, guest: usize, name: &str, out: &mut dyn FnMut(&[u8])) {
        let Some(held) = self.held.get_mut(guest) else {
            return;
        };
        if held.is_empty() {
            return;
        }
        let mut line = core::mem::take(held);
        line.push(b'\n');
        self.emit_line(guest, name, &line, out);
    }

    /// Ends whatever line is on screen, so that the next output starts one.
    fn break_line(&mut self, out: &mut dyn FnMut(&[u8])) {
        if self.cursor != Cursor::LineStart {
            out(b"\r\n");
            self.cursor = Cursor::LineStart;
        }
    }

    fn prefix(name: &str, out: &mut dyn FnMut(&[u8])) {
        out(b"[");
        out(name.as_bytes());
        out(b"] ");
    }

    /// One whole line (or a [`LINE_MAX`] piece) of a held-back guest.
    fn emit_line(&mut self, guest: usize, name: &str, line: &[u8], out: &mut dyn FnMut(&[u8])) {
        if self.cursor != Cursor::Guest(guest) {
            self.break_line(out);
            Self::prefix(name, out);
        }
        out(line);
        self.cursor = if line.last() == Some(&b'\n') {
            Cursor::LineStart
        } else {
            // A LINE_MAX piece: the rest follows on a line of its own.
            out(b"\r\n");
            Cursor::LineStart
        };
    }

    /// Bytes of the guest the user types to, as they come.
    fn write_through(
        &mut self,
        guest: usize,
        name: &str,
        bytes: &[u8],
        out: &mut dyn FnMut(&[u8]),
    ) {
        let mut rest = bytes;
        while !rest.is_empty() {
            if self.cursor != Cursor::Guest(guest) {
                self.break_line(out);
                Self::prefix(name, out);
                self.cursor = Cursor::Guest(guest);
            }
            let (piece, after) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => rest.split_at(i + 1),
                None => (rest, &[][..]),
            };
            out(piece);
            if piece.last() == Some(&b'\n') {
                self.cursor = Cursor::LineStart;
            }
            rest = after;
        }
    }
}

/// What a byte of host input does once [`SwitchDetector::feed`] has seen it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fed {
    /// Held back (a Ctrl-a that may start the switch sequence).
    Held,
    /// These bytes (`len` of `bytes`) go to the focused guest: the
    /// Ctrl-a held back, if any, then the byte itself.
    Pass {
        /// The bytes, in order.
        bytes: [u8; SWITCH_PRESSES as usize],
        /// How many.
        len: usize,
    },
    /// The switch sequence is complete: the focus moves on.
    Switch,
}

/// Finds the switch sequence (Ctrl-a three times) in host input.
#[derive(Debug, Clone, Default)]
pub struct SwitchDetector {
    presses: u8,
}

impl SwitchDetector {
    /// A detector that has seen nothing.
    pub fn new() -> Self {
        SwitchDetector::default()
    }

    /// Ctrl-a presses held back now.
    pub fn held(&self) -> u8 {
        self.presses
    }

    /// Sees host input byte `b`.
    pub fn feed(&mut self, b: u8) -> Fed {
        if b == CTRL_A {
            self.presses += 1;
            if self.presses == SWITCH_PRESSES {
                self.presses = 0;
                return Fed::Switch;
            }
            return Fed::Held;
        }
        let mut bytes = [CTRL_A; SWITCH_PRESSES as usize];
        let held = usize::from(self.presses);
        self.presses = 0;
        bytes[held] = b;
        Fed::Pass {
            bytes,
            len: held + 1,
        }
    }
}

/// The host's receive side seen through a [`SwitchDetector`]: what the
/// focused guest's console input reads. It ends (reads nothing more) at a
/// complete switch sequence, which [`Switching::switched`] then reports;
/// the input after it belongs to the next guest.
pub struct Switching<'a> {
    host: &'a mut dyn HostRx,
    detector: &'a mut SwitchDetector,
    pending: ([u8; SWITCH_PRESSES as usize], usize, usize),
    switched: bool,
}

impl<'a> Switching<'a> {
    /// `host` through `detector`.
    pub fn new(host: &'a mut dyn HostRx, detector: &'a mut SwitchDetector) -> Self {
        Switching {
            host,
            detector,
            pending: ([0; SWITCH_PRESSES as usize], 0, 0),
            switched: false,
        }
    }

    /// Whether the switch sequence came.
    pub fn switched(&self) -> bool {
        self.switched
    }
}

impl HostRx for Switching<'_> {
    fn getc(&mut self) -> Option<u8> {
        let (bytes, at, len) = &mut self.pending;
        if *at < *len {
            let b = bytes.get(*at).copied();
            *at += 1;
            return b;
        }
        if self.switched {
            return None;
        }
        loop {
            let b = self.host.getc()?;
            match self.detector.feed(b) {
                Fed::Held => continue,
                Fed::Switch => {
                    self.switched = true;
                    return None;
                }
                Fed::Pass { bytes, len } => {
                    self.pending = (bytes, 1, len);
                    return bytes.first().copied();
                }
            }
        }
    }

    fn set_rx_interrupts(&mut self, on: bool) {
        self.host.set_rx_interrupts(on);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;
    use alloc::vec;

    fn run(mux: &mut OutputMux, steps: &[(usize, &str, bool)]) -> String {
        let mut out = Vec::new();
        for &(g, text, immediate) in steps {
            let name = ["a", "b"][g];
            mux.guest_bytes(g, name, text.as_bytes(), immediate, &mut |b| {
                out.extend_from_slice(b)
            });
        }
        String::from_utf8(out).unwrap_or_default()
    }

    #[test]
    fn lines_of_two_guests_written_at_once_come_out_whole_and_prefixed() {
        let mut mux = OutputMux::new(2);
        let text = run(
            &mut mux,
            &[
                (0, "hel", false),
                (1, "wor", false),
                (0, "lo\r\n", false),
                (1, "ld\r\n", false),
            ],
        );
        assert_eq!(text, "[a] hello\r\n[b] world\r\n");
    }

    #[test]
    fn a_partial_line_waits_for_its_newline() {
        let mut mux = OutputMux::new(2);
        assert_eq!(run(&mut mux, &[(0, "no newline", false)]), "");
        let mut out = Vec::new();
        mux.flush(0, "a", &mut |b| out.extend_from_slice(b));
        assert_eq!(out, b"[a] no newline\n");
    }

    #[test]
    fn a_long_line_goes_out_in_prefixed_pieces() {
        let mut mux = OutputMux::new(1);
        let long: String = core::iter::repeat_n('x', LINE_MAX + 10).collect();
        let mut out = Vec::new();
        mux.guest_bytes(0, "a", long.as_bytes(), false, &mut |b| {
            out.extend_from_slice(b)
        });
        mux.guest_bytes(0, "a", b"\n", false, &mut |b| out.extend_from_slice(b));
        let text = String::from_utf8(out).unwrap_or_default();
        let lines: Vec<&str> = text.split("\r\n").collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), 4 + LINE_MAX);
        assert_eq!(lines[1], "[a] xxxxxxxxxx\n");
    }

    #[test]
    fn the_guest_typed_to_writes_through_and_another_guests_line_breaks_in_cleanly() {
        let mut mux = OutputMux::new(2);
        let text = run(
            &mut mux,
            &[(0, "~ # ", true), (1, "tick\n", false), (0, "ls\n", true)],
        );
        assert_eq!(text, "[a] ~ # \r\n[b] tick\n[a] ls\n");
    }

    #[test]
    fn a_hypervisor_line_in_between_makes_the_guest_prefix_its_continuation() {
        let mut mux = OutputMux::new(1);
        let mut out = Vec::new();
        mux.guest_bytes(0, "a", b"abc", true, &mut |b| out.extend_from_slice(b));
        // The hypervisor ended the line and wrote its own.
        mux.other_output(true);
        mux.guest_bytes(0, "a", b"def\n", true, &mut |b| out.extend_from_slice(b));
        assert_eq!(out, b"[a] abc[a] def\n");
    }

    #[test]
    fn three_ctrl_a_in_a_row_switch_and_are_consumed() {
        let mut d = SwitchDetector::new();
        assert_eq!(d.feed(CTRL_A), Fed::Held);
        assert_eq!(d.feed(CTRL_A), Fed::Held);
        assert_eq!(d.feed(CTRL_A), Fed::Switch);
        assert_eq!(d.held(), 0);
    }

    #[test]
    fn two_ctrl_a_then_a_key_reach_the_guest_as_typed() {
        let mut d = SwitchDetector::new();
        assert_eq!(d.feed(CTRL_A), Fed::Held);
        assert_eq!(d.feed(CTRL_A), Fed::Held);
        assert_eq!(
            d.feed(b'x'),
            Fed::Pass {
                bytes: [CTRL_A, CTRL_A, b'x'],
                len: 3
            }
        );
    }

    struct Host(Vec<u8>, bool);
    impl HostRx for Host {
        fn getc(&mut self) -> Option<u8> {
            if self.0.is_empty() {
                None
            } else {
                Some(self.0.remove(0))
            }
        }
        fn set_rx_interrupts(&mut self, on: bool) {
            self.1 = on;
        }
    }

    #[test]
    fn input_after_the_switch_sequence_is_left_for_the_next_guest() {
        let mut host = Host(vec![b'a', CTRL_A, b'b', CTRL_A, CTRL_A, CTRL_A, b'c'], true);
        let mut d = SwitchDetector::new();
        let mut sw = Switching::new(&mut host, &mut d);
        let mut got = Vec::new();
        while let Some(b) = sw.getc() {
            got.push(b);
        }
        assert!(sw.switched());
        assert_eq!(got, [b'a', CTRL_A, b'b']);
        assert_eq!(host.0, [b'c']);
    }
}

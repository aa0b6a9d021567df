//! What the hypervisor last wrote to one CPU's list registers and ICH_HCR_EL2,
//! so that a refresh touches only the registers that need it.
//!
//! Every access to an ICH_LR<n>_EL2 is a system register access: tens of
//! cycles on hardware, and under an emulator a call into the interrupt
//! controller model (under QEMU TCG, one that takes its global lock). A
//! refresh used to read and write every implemented list register and
//! ICH_HCR_EL2 on each interrupt exit; with the shadow it reads ICH_ELRSR_EL2
//! once, then only the entries that may hold state the hardware changed, and
//! writes only the entries and the control value that change.
//!
//! The hardware changes only the State field of a list register (the guest
//! acknowledging, completing or deactivating the virtual interrupt; GICv3,
//! IHI 0069H, 4.4.4 and 12.4.10: ICH_LR<n>_EL2), and ICH_ELRSR_EL2 bit `n`
//! (12.4.8) is set when entry `n` holds no interrupt: State 0b00, and no EOI
//! maintenance interrupt pending for it (HW set or EOI clear). So:
//!
//! * an entry last written 0 still holds nothing: it reads 0;
//! * an entry ELRSR reports empty reads as written with State cleared;
//! * any other entry may be pending, active or both: it is read.

use super::lr;

/// Most list registers (ICH_VTR_EL2.ListRegs is 4 bits).
pub const MAX_LRS: usize = 16;

/// One CPU's shadow of its list registers and ICH_HCR_EL2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LrShadow {
    /// What each list register holds as far as writes go (0: nothing).
    written: [u64; MAX_LRS],
    /// ICH_HCR_EL2 as last written; `None` until the first write.
    hcr: Option<u64>,
}

impl Default for LrShadow {
    fn default() -> Self {
        Self::new()
    }
}

impl LrShadow {
    /// A shadow of list registers that hold nothing and an ICH_HCR_EL2 not yet written.
    pub const fn new() -> Self {
        LrShadow {
            written: [0; MAX_LRS],
            hcr: None,
        }
    }

    /// Forgets everything: the owner wrote every list register 0 itself
    /// (a vCPU switched off or configured afresh) and ICH_HCR_EL2 outside
    /// [`LrShadow::set_hcr`].
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    /// The current values of the first `out.len()` list registers, given
    /// ICH_ELRSR_EL2 (`elrsr`); `read(n)` reads ICH_LR<n>_EL2 and is called
    /// only for entries that may hold a pending or active interrupt.
    pub fn current(&self, elrsr: u64, mut read: impl FnMut(usize) -> u64, out: &mut [u64]) {
        for (n, v) in out.iter_mut().enumerate().take(MAX_LRS) {
            let w = self.written[n];
            *v = if w == 0 {
                0
            } else if elrsr & (1 << n) != 0 {
                w & !(3 << lr::STATE_SHIFT)
            } else {
                read(n)
            };
        }
    }

    /// Makes the list registers hold `new`, given what they hold now
    /// (`current`, from [`LrShadow::current`]): `write(n, v)` is called for
    /// each entry whose value changes, except that an empty entry (State
    /// 0b00, and HW set or EOI clear: no EOI maintenance interrupt pending
    /// for it, ICH_EISR_EL2) is not rewritten to 0: it is empty either way,
    /// and is remembered as holding nothing. A completed entry with EOI set
    /// and HW clear is cleared: only that ends its maintenance interrupt.
    pub fn update(&mut self, current: &[u64], new: &[u64], mut write: impl FnMut(usize, u64)) {
        for (n, (&c, &v)) in current.iter().zip(new).enumerate().take(MAX_LRS) {
            let empty_anyway =
                v == 0 && lr::state(c) == lr::INVALID && (c & lr::HW != 0 || c & lr::EOI == 0);
            if c != v && !empty_anyway {
                write(n, v);
            }
            self.written[n] = v;
        }
    }

    /// Makes ICH_HCR_EL2 hold `v`: `write` is called unless it already does.
    pub fn set_hcr(&mut self, v: u64, write: impl FnOnce(u64)) {
        if self.hcr != Some(v) {
            write(v);
            self.hcr = Some(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PENDING: u64 = lr::PENDING << lr::STATE_SHIFT;
    const ACTIVE: u64 = lr::ACTIVE << lr::STATE_SHIFT;
    const STATE: u64 = 3 << lr::STATE_SHIFT;

    /// A list register file as the hardware keeps it, counting accesses.
    struct Hw {
        lrs: [u64; 4],
        reads: usize,
        writes: usize,
    }

    impl Hw {
        fn new() -> Self {
            Hw {
                lrs: [0; 4],
                reads: 0,
                writes: 0,
            }
        }

        /// ICH_ELRSR_EL2: State 0b00 and (HW set or EOI clear).
        fn elrsr(&self) -> u64 {
            self.lrs
                .iter()
                .enumerate()
                .filter(|(_, &v)| lr::state(v) == 0 && (v & lr::HW != 0 || v & lr::EOI == 0))
                .fold(0, |a, (i, _)| a | 1 << i)
        }

        fn refresh(&mut self, s: &mut LrShadow, new: [u64; 4]) -> [u64; 4] {
            self.refresh_with(s, |_| new)
        }

        /// A refresh whose new values are computed from the current ones.
        fn refresh_with(
            &mut self,
            s: &mut LrShadow,
            next: impl FnOnce(&[u64; 4]) -> [u64; 4],
        ) -> [u64; 4] {
            let mut cur = [0u64; 4];
            let elrsr = self.elrsr();
            s.current(
                elrsr,
                |n| {
                    self.reads += 1;
                    self.lrs[n]
                },
                &mut cur,
            );
            let new = next(&cur);
            s.update(&cur, &new, |n, v| {
                self.writes += 1;
                self.lrs[n] = v;
            });
            cur
        }
    }

    fn entry(intid: u64) -> u64 {
        PENDING | lr::GROUP1 | (0xa0 << lr::PRIORITY_SHIFT) | intid
    }

    #[test]
    fn empty_list_registers_are_neither_read_nor_written() {
        let (mut hw, mut s) = (Hw::new(), LrShadow::new());
        let cur = hw.refresh(&mut s, [0; 4]);
        assert_eq!((cur, hw.reads, hw.writes), ([0; 4], 0, 0));
    }

    #[test]
    fn a_new_entry_is_written_once_and_others_are_left_alone() {
        let (mut hw, mut s) = (Hw::new(), LrShadow::new());
        hw.refresh(&mut s, [entry(40), 0, 0, 0]);
        assert_eq!((hw.reads, hw.writes), (0, 1));
        assert_eq!(hw.lrs, [entry(40), 0, 0, 0]);
    }

    #[test]
    fn an_entry_still_pending_is_read_and_not_rewritten() {
        let (mut hw, mut s) = (Hw::new(), LrShadow::new());
        hw.refresh(&mut s, [entry(40), 0, 0, 0]);
        let cur = hw.refresh(&mut s, [entry(40), 0, 0, 0]);
        assert_eq!(cur[0], entry(40));
        assert_eq!((hw.reads, hw.writes), (1, 1));
    }

    #[test]
    fn an_entry_the_guest_acknowledged_reads_active() {
        let (mut hw, mut s) = (Hw::new(), LrShadow::new());
        hw.refresh(&mut s, [entry(40), 0, 0, 0]);
        hw.lrs[0] = (hw.lrs[0] & !STATE) | ACTIVE;
        let cur = hw.refresh(&mut s, [hw.lrs[0], 0, 0, 0]);
        assert_eq!(lr::state(cur[0]), lr::ACTIVE);
        assert_eq!(hw.writes, 1);
    }

    #[test]
    fn an_entry_the_guest_completed_reads_without_an_access_and_is_not_cleared() {
        let (mut hw, mut s) = (Hw::new(), LrShadow::new());
        hw.refresh(&mut s, [entry(40), 0, 0, 0]);
        hw.lrs[0] &= !STATE;
        let cur = hw.refresh(&mut s, [0; 4]);
        assert_eq!(cur[0], entry(40) & !STATE);
        assert_eq!((hw.reads, hw.writes), (0, 1));
        // Remembered as empty: the next refresh neither reads nor writes it.
        let cur = hw.refresh(&mut s, [0; 4]);
        assert_eq!((cur[0], hw.reads, hw.writes), (0, 0, 1));
    }

    #[test]
    fn a_pending_entry_withdrawn_is_written_empty() {
        // A timer whose output dropped, or a level line that fell, before the
        // guest took it: the model clears a pending entry.
        let (mut hw, mut s) = (Hw::new(), LrShadow::new());
        hw.refresh(&mut s, [entry(27) | lr::HW, 0, 0, 0]);
        hw.refresh(&mut s, [0; 4]);
        assert_eq!(hw.lrs[0], 0);
        assert_eq!(hw.writes, 2);
    }

    #[test]
    fn a_completed_entry_with_an_eoi_maintenance_request_is_read() {
        let (mut hw, mut s) = (Hw::new(), LrShadow::new());
        hw.refresh(&mut s, [entry(33) | lr::EOI, 0, 0, 0]);
        hw.lrs[0] &= !STATE;
        let cur = hw.refresh(&mut s, [0; 4]);
        assert_eq!(cur[0], (entry(33) | lr::EOI) & !STATE);
        assert_eq!(hw.reads, 1);
    }

    #[test]
    fn a_completed_entry_with_an_eoi_maintenance_request_is_cleared() {
        // Left as it is, the entry would keep its EOI maintenance interrupt
        // (ICH_EISR_EL2, ICH_MISR_EL2.EOI) asserted for ever.
        let (mut hw, mut s) = (Hw::new(), LrShadow::new());
        hw.refresh(&mut s, [entry(33) | lr::EOI, 0, 0, 0]);
        hw.lrs[0] &= !STATE;
        hw.refresh(&mut s, [0; 4]);
        assert_eq!(hw.lrs[0], 0);
        assert_eq!(hw.elrsr() & 1, 1);
    }

    #[test]
    fn the_shadow_reads_what_reading_and_writing_every_entry_would() {
        // Pseudo-random refreshes and guest state changes, applied alike to
        // the shadowed list registers and to a reference refreshed the old
        // way (every entry read, every entry written): both refreshes see
        // the same values, and the shadowed file holds every non-empty
        // entry the reference does.
        let (mut hw, mut s) = (Hw::new(), LrShadow::new());
        let mut reference = [0u64; 4];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..5000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let n = (x % 4) as usize;
            for f in [&mut hw.lrs[n], &mut reference[n]] {
                match (x >> 8) % 4 {
                    0 => *f &= !STATE,
                    1 if lr::state(*f) == lr::PENDING => *f = (*f & !STATE) | ACTIVE,
                    _ => {}
                }
            }
            let cur = hw.refresh_with(&mut s, |cur| {
                let mut new = *cur;
                for v in new.iter_mut().filter(|v| lr::state(**v) == 0) {
                    *v = 0;
                }
                if (x >> 16) % 3 == 0 && new[n] == 0 {
                    let eoi = if x & 1 << 40 != 0 { lr::EOI } else { 0 };
                    new[n] = entry(32 + (x >> 24) % 64) | eoi;
                }
                new
            });
            assert_eq!(cur, reference, "refresh sees what a full read would");
            let mut new = reference;
            for v in new.iter_mut().filter(|v| lr::state(**v) == 0) {
                *v = 0;
            }
            if (x >> 16) % 3 == 0 && new[n] == 0 {
                let eoi = if x & 1 << 40 != 0 { lr::EOI } else { 0 };
                new[n] = entry(32 + (x >> 24) % 64) | eoi;
            }
            reference = new;
            for (i, (&h, &r)) in hw.lrs.iter().zip(&reference).enumerate() {
                if r != 0 {
                    assert_eq!(h, r, "entry {i}");
                } else {
                    assert_eq!(lr::state(h), 0, "entry {i}");
                    assert_ne!(hw.elrsr() & 1 << i, 0, "entry {i} empty, no EOI pending");
                }
            }
        }
        assert!(
            hw.reads + hw.writes < 5000 * 8,
            "fewer accesses than the old way"
        );
    }

    #[test]
    fn ich_hcr_is_written_only_when_it_changes() {
        let mut s = LrShadow::new();
        let mut writes = Vec::new();
        for v in [1, 1, 3, 3, 1] {
            s.set_hcr(v, |v| writes.push(v));
        }
        assert_eq!(writes, [1, 3, 1]);
        s.reset();
        s.set_hcr(1, |v| writes.push(v));
        assert_eq!(writes, [1, 3, 1, 1]);
    }
}

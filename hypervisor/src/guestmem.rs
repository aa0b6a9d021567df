//! The guest's RAM as emulated devices reach it (`virtio_devs::GuestMemory`):
//! the IPA runs stage 2 maps to host RAM, fixed at boot, reached through the
//! EL2 identity map. Every access is bounds-checked against the runs; an
//! address outside guest RAM is an error, never a host access.

use alloc::vec::Vec;

use arch_emu::addr::{Ipa, MemRange, Pa};
use virtio_devs::{GuestMemory, MemoryError};

/// Guest RAM: IPA runs and the host physical address each starts at.
#[derive(Debug, Clone)]
pub struct GuestRam {
    runs: Vec<(MemRange<Ipa>, Pa)>,
}

impl GuestRam {
    /// Guest RAM made of `runs`, each an IPA range and the host physical
    /// address it maps to (what stage 2 maps; host RAM, identity-mapped at EL2).
    pub fn new(runs: Vec<(MemRange<Ipa>, Pa)>) -> Self {
        GuestRam { runs }
    }

    /// The IPA guest RAM starts at (its first run's).
    pub fn base(&self) -> Ipa {
        self.runs.first().map_or(Ipa(0), |(r, _)| r.base)
    }

    /// The host physical ranges guest RAM occupies.
    pub fn host_runs(&self) -> impl Iterator<Item = MemRange<Pa>> + '_ {
        self.runs.iter().map(|(r, pa)| MemRange::new(*pa, r.size))
    }

    /// Calls `f(host address, offset in the access, length)` for each piece of
    /// `[addr, addr + len)`, in order; an error if any byte is outside guest RAM.
    fn pieces(
        &self,
        addr: Ipa,
        len: usize,
        mut f: impl FnMut(usize, usize, usize),
    ) -> Result<(), MemoryError> {
        let mut done = 0usize;
        while done < len {
            let at = addr
                .0
                .checked_add(done as u64)
                .ok_or(MemoryError::Overflow)?;
            let (run, pa) = self.runs.iter().find(|(r, _)| r.contains(Ipa(at))).ok_or(
                MemoryError::OutOfRange {
                    addr,
                    len: len as u64,
                },
            )?;
            let off = at - run.base.0;
            let n = (run.size - off).min((len - done) as u64) as usize;
            f((pa.0 + off) as usize, done, n);
            done += n;
        }
        Ok(())
    }
}

impl GuestMemory for GuestRam {
    fn read(&self, addr: Ipa, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.check_range(MemRange::new(addr, buf.len() as u64))?;
        let dst = buf.as_mut_ptr();
        self.pieces(addr, buf.len(), |host, off, n| {
            // SAFETY: `host..host + n` lies in guest RAM (a run checked above), host
            // memory identity-mapped at EL2 that the hypervisor never frees; `dst + off`
            // is inside `buf`. The guest may write the same bytes concurrently: a raw
            // copy, no reference to guest memory is ever formed, and the device model
            // reads each descriptor once into its own copy.
            unsafe { core::ptr::copy_nonoverlapping(host as *const u8, dst.add(off), n) }
        })
    }

    fn write(&self, addr: Ipa, data: &[u8]) -> Result<(), MemoryError> {
        self.check_range(MemRange::new(addr, data.len() as u64))?;
        let src = data.as_ptr();
        self.pieces(addr, data.len(), |host, off, n| {
            // SAFETY: as in `read`, with the copy the other way.
            unsafe { core::ptr::copy_nonoverlapping(src.add(off), host as *mut u8, n) }
        })
    }

    fn check_range(&self, range: MemRange<Ipa>) -> Result<(), MemoryError> {
        self.pieces(range.base, range.size as usize, |_, _, _| {})
    }

    fn host_ranges(
        &self,
        range: MemRange<Ipa>,
        out: &mut Vec<MemRange<Pa>>,
    ) -> Result<(), MemoryError> {
        let mut pieces = Vec::new();
        self.pieces(range.base, range.size as usize, |host, _, n| {
            pieces.push(MemRange::new(Pa(host as u64), n as u64));
        })?;
        out.extend(pieces);
        Ok(())
    }

    fn barrier(&self) {
        // SAFETY: a barrier orders this CPU's accesses; no memory is touched.
        unsafe { core::arch::asm!("dmb ish", options(nostack)) };
    }
}

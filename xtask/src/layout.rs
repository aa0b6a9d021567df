//! Where the boot modules (guest kernel, initrd) go in the host's RAM, and
//! how much RAM the guest then gets.
//!
//! At boot the hypervisor takes the largest 2 MiB-aligned stretch of host RAM
//! that nothing occupies as the guest's RAM (`hypervisor/src/guest.rs`,
//! `free_ram`), and maps a page-aligned initrd module into the guest where it
//! stands (it becomes guest RAM, no copy). Everything else in host RAM is the
//! hypervisor's share: its image (code, data, 8 MiB heap holding its page
//! tables, SMMU tables, vGIC and segment, and its stacks), the host DTB and
//! the guest kernel module (copied into guest RAM, then unused). So the
//! modules are packed low, next to the hypervisor and around the DTB, keeping
//! the rest of RAM in one piece: [`plan`] tries both orders and keeps the one
//! that leaves the largest piece.

use crate::{Error, Result};

/// 2 MiB: the alignment of modules and of the hypervisor's guest RAM carve-out.
pub const MIB2: u64 = 2 << 20;
/// What a guest needs beyond its kernel and DTB to run without an initramfs
/// (a bare-metal program such as the probe guest).
pub const MIN_WORKING_RAM: u64 = 32 << 20;

/// What a Linux guest with an initramfs needs beyond its kernel, the
/// initramfs, its unpacked copy and the DTB to get to `/init` and run a few
/// commands (its reserved areas, page tables, slab, the memory map, user
/// space). Measured with the project's image (Debian's 6.1 kernel, a 91 MiB
/// initramfs): the guest unpacks its initramfs with 392 MiB of RAM and fails
/// with 360 MiB, where the other terms add up to about 220 MiB; the e2e test
/// `the_smallest_mem_xtask_accepts_boots` keeps this honest.
pub const WORKING_RAM_WITH_INITRAMFS: u64 = 176 << 20;

/// The working RAM [`guest_ram_needed`] adds: with or without an initramfs.
pub fn working_ram(initrd_len: Option<u64>) -> u64 {
    if initrd_len.is_some() {
        WORKING_RAM_WITH_INITRAMFS
    } else {
        MIN_WORKING_RAM
    }
}

/// A half-open range of host physical addresses `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

impl Range {
    /// `[start, start + len)`.
    pub fn at(start: u64, len: u64) -> Range {
        Range {
            start,
            end: start.saturating_add(len),
        }
    }

    /// Bytes in the range.
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// Whether it holds no byte.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn overlaps(&self, o: &Range) -> bool {
        self.start < o.end && o.start < self.end
    }
}

/// Host RAM before the modules are placed: RAM, and what the hypervisor and
/// the firmware put in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRam {
    /// All of RAM.
    pub ram: Range,
    /// Occupied: the hypervisor image (with its BSS, heap and stacks), the host DTB.
    pub used: Vec<Range>,
}

/// Where the modules go, and what is left for the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The kernel module's address (2 MiB-aligned).
    pub kernel: u64,
    /// The initrd module's address (2 MiB-aligned), if there is one.
    pub initrd: Option<u64>,
    /// The largest free 2 MiB-aligned range: the guest RAM the hypervisor carves.
    pub free: Range,
    /// RAM the guest gets by default: `free` plus the initrd's pages, mapped in place.
    pub guest_ram: u64,
}

fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a).saturating_mul(a)
}

/// The largest 2 MiB-aligned range of `ram` that no range of `used` touches
/// (the rule of the hypervisor's `free_ram`).
pub fn largest_free(ram: Range, used: &[Range]) -> Option<Range> {
    let mut used = used.to_vec();
    used.sort_unstable_by_key(|r| r.start);
    let mut best: Option<Range> = None;
    let mut consider = |s: u64, e: u64| {
        let r = Range {
            start: align_up(s, MIB2),
            end: e & !(MIB2 - 1),
        };
        if r.end > r.start && best.is_none_or(|b| r.len() > b.len()) {
            best = Some(r);
        }
    };
    let mut cur = ram.start;
    for u in used
        .iter()
        .filter(|u| u.end > ram.start && u.start < ram.end)
    {
        if u.start > cur {
            consider(cur, u.start);
        }
        cur = cur.max(u.end);
    }
    consider(cur, ram.end);
    best
}

/// The lowest 2 MiB-aligned address where `len` bytes fit in `ram` beside `used`.
pub fn first_fit(ram: Range, used: &[Range], len: u64) -> Option<u64> {
    let mut at = align_up(ram.start, MIB2);
    loop {
        let want = Range::at(at, len.max(1));
        if want.end > ram.end {
            return None;
        }
        match used
            .iter()
            .filter(|u| u.overlaps(&want))
            .map(|u| u.end)
            .max()
        {
            None => return Some(at),
            Some(e) => at = align_up(e, MIB2),
        }
    }
}

/// The highest 2 MiB-aligned address where `len` bytes fit in `ram` beside
/// `used`: where the hypervisor carves a RAM disk from free host RAM (the top
/// of the highest free stretch that holds it).
pub fn last_fit(ram: Range, used: &[Range], len: u64) -> Option<u64> {
    let mut used = used.to_vec();
    used.sort_unstable_by_key(|r| r.start);
    let mut gaps = Vec::new();
    let mut cur = ram.start;
    for u in used
        .iter()
        .filter(|u| u.end > ram.start && u.start < ram.end)
    {
        if u.start > cur {
            gaps.push(Range {
                start: cur,
                end: u.start,
            });
        }
        cur = cur.max(u.end);
    }
    if ram.end > cur {
        gaps.push(Range {
            start: cur,
            end: ram.end,
        });
    }
    gaps.iter().rev().find_map(|g| {
        let at = g.end.checked_sub(len.max(1))? & !(MIB2 - 1);
        (at >= g.start).then_some(at)
    })
}

/// Places a kernel module of `kernel_len` bytes and an initrd of
/// `initrd_len` bytes (if any) in `host` so that the free RAM left is as large
/// and as contiguous as possible. Fails when they do not fit at all.
pub fn plan(host: &HostRam, kernel_len: u64, initrd_len: Option<u64>) -> Result<Plan> {
    let mut best: Option<Plan> = None;
    for kernel_first in [true, false] {
        let mut used = host.used.clone();
        let mut put = |len: u64| {
            let at = first_fit(host.ram, &used, len)?;
            used.push(Range::at(at, align_up(len, MIB2)));
            Some(at)
        };
        let (kernel, initrd) = match (kernel_first, initrd_len) {
            (true, None) | (false, None) => (put(kernel_len), None),
            (true, Some(i)) => {
                let k = put(kernel_len);
                (k, Some(put(i)))
            }
            (false, Some(i)) => {
                let ii = put(i);
                (put(kernel_len), Some(ii))
            }
        };
        let (Some(kernel), Some(initrd)) = (kernel, initrd.map_or(Some(None), |i| i.map(Some)))
        else {
            continue;
        };
        let Some(free) = largest_free(host.ram, &used) else {
            continue;
        };
        let in_place = initrd_len.map_or(0, |i| align_up(i, 4096));
        let p = Plan {
            kernel,
            initrd,
            free,
            guest_ram: free.len() + in_place,
        };
        if best.is_none_or(|b| p.free.len() > b.free.len()) {
            best = Some(p);
        }
    }
    best.ok_or_else(|| {
        Error(format!(
            "the guest kernel ({kernel_len:#x} bytes){} does not fit in RAM {:#x}-{:#x} beside the hypervisor and the DTB: raise --mem",
            initrd_len.map_or(String::new(), |i| format!(" and initrd ({i:#x} bytes)")),
            host.ram.start,
            host.ram.end
        ))
    })
}

/// The guest RAM a kernel (`head` = its first 64 bytes, `kernel_len` its file
/// size) and an initrd need: what `guest_dt::boot::place` lays out (the
/// kernel at its `text_offset`, or at 0x80000 without an arm64 `Image`
/// header; the initrd after it; the DTB in the last 2 MiB), plus room for the
/// initrd to be unpacked and [`working_ram`].
pub fn guest_ram_needed(head: &[u8], kernel_len: u64, initrd_len: Option<u64>) -> u64 {
    // Place in a RAM large enough for anything, then measure.
    let p = guest_dt::boot::place(u64::MAX / 4, head, kernel_len, initrd_len, 0);
    let Ok(p) = p else { return u64::MAX };
    let end = match (p.initrd, initrd_len) {
        (Some(at), Some(len)) => at + len,
        _ => p.kernel + p.kernel_footprint,
    };
    align_up(end, MIB2)
        + guest_dt::boot::MAX_DTB
        + initrd_len.unwrap_or(0)
        + working_ram(initrd_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: u64 = 1 << 20;

    /// QEMU `virt` with `-m 512M`: the hypervisor at RAM + 2 MiB (12.4 MiB with
    /// BSS, heap and stacks), the host DTB at RAM + 128 MiB.
    fn virt_512m() -> HostRam {
        HostRam {
            ram: Range::at(0x4000_0000, 512 * M),
            used: vec![
                Range::at(0x4000_0000, MIB2),
                Range::at(0x4020_0000, 0xc5_a000),
                Range::at(0x4800_0000, MIB2),
            ],
        }
    }

    #[test]
    fn modules_of_the_default_image_leave_ram_above_them_in_one_piece() {
        // Fault 8: a 31 MiB kernel and an 88 MiB initrd at 0x4a000000 and after
        // it split RAM into three pieces, and the guest got about 200 MB.
        let p = plan(&virt_512m(), 32_956_352, Some(92_513_332)).expect("fits");
        // The initrd fits between the hypervisor and the DTB, the kernel after the DTB.
        assert_eq!(p.initrd, Some(0x4100_0000));
        assert_eq!(p.kernel, 0x4820_0000);
        assert_eq!(p.free, Range::at(0x4a20_0000, 0x6000_0000 - 0x4a20_0000));
        assert_eq!(p.guest_ram, p.free.len() + 92_516_352);
        assert!(p.guest_ram > 430 * M, "{:#x}", p.guest_ram);
    }

    #[test]
    fn small_modules_pack_right_after_the_hypervisor() {
        let p = plan(&virt_512m(), 0x1_0000, Some(0x1000)).expect("fits");
        assert_eq!((p.kernel, p.initrd), (0x4100_0000, Some(0x4120_0000)));
        assert_eq!(p.free, Range::at(0x4820_0000, 0x6000_0000 - 0x4820_0000));
    }

    #[test]
    fn no_initrd_places_the_kernel_alone() {
        let p = plan(&virt_512m(), 0x1_0000, None).expect("fits");
        assert_eq!((p.kernel, p.initrd), (0x4100_0000, None));
        assert_eq!(p.guest_ram, p.free.len());
    }

    #[test]
    fn modules_larger_than_ram_are_refused() {
        let e = plan(&virt_512m(), 0x100_0000, Some(600 * M)).expect_err("too large");
        assert!(e.0.contains("raise --mem"), "{e}");
    }

    #[test]
    fn last_fit_takes_the_top_of_the_highest_stretch_that_holds_it() {
        let ram = Range::at(0x4000_0000, 64 * M);
        let used = [Range::at(0x4300_0000, 0x1000)];
        // 8 MiB: the top of the stretch above the used page.
        assert_eq!(last_fit(ram, &used, 8 * M), Some(0x4380_0000));
        // 40 MiB: only the stretch below it holds that.
        assert_eq!(last_fit(ram, &used, 40 * M), Some(0x4000_0000 + 8 * M));
        assert_eq!(last_fit(ram, &used, 64 * M), None);
    }

    #[test]
    fn largest_free_aligns_each_piece_to_2_mib() {
        let ram = Range::at(0x4000_0000, 64 * M);
        let used = [Range::at(0x4010_0000, 0x1000)];
        assert_eq!(
            largest_free(ram, &used),
            Some(Range::at(0x4020_0000, 62 * M))
        );
    }

    #[test]
    fn guest_ram_needed_counts_the_unpacked_initrd() {
        let mut head = vec![0u8; 64];
        head[16..24].copy_from_slice(&(0x200_0000u64).to_le_bytes());
        head[56..60].copy_from_slice(b"ARM\x64");
        // Kernel 32 MiB at 0, initrd 16 MiB at 32 MiB, DTB 2 MiB, unpacked 16 MiB, 176 MiB.
        assert_eq!(
            guest_ram_needed(&head, 0x100_0000, Some(16 * M)),
            (48 + 2 + 16 + 176) * M
        );
    }

    #[test]
    fn guest_ram_needed_puts_a_raw_kernel_at_0x80000() {
        // A raw image's bytes 16..24 are code, not a size: not read as one.
        let head = [0xffu8; 64];
        assert_eq!(
            guest_ram_needed(&head, 0x1000, None),
            MIB2 + guest_dt::boot::MAX_DTB + MIN_WORKING_RAM
        );
    }
}

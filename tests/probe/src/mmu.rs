//! Stage 1 at EL1: an identity map of the low 512 GiB in 1 GiB blocks, RAM as
//! Normal write-back, everything else Device-nGnRnE (Arm ARM D8.3 VMSAv8-64
//! translation table format, 4 KiB granule, lookup from level 1).

/// Level-1 table.
#[repr(C, align(4096))]
struct Table([u64; 512]);

static mut L1: Table = Table([0; 512]);

/// MAIR_EL1: attr 0 Device-nGnRnE, attr 1 Normal WB RA WA.
const MAIR: u64 = 0xff << 8;
/// TCR_EL1: T0SZ 25 (39-bit VA, start at level 1), IRGN0/ORGN0 WB WA, SH0
/// inner shareable, TG0 4 KiB, EPD1 (no TTBR1 walks), IPS 40 bits.
const TCR: u64 = 25 | (1 << 8) | (1 << 10) | (3 << 12) | (1 << 23) | (2 << 32);
/// SCTLR_EL1: RES1 bits, M, C, I (no alignment checking).
const SCTLR: u64 = (1 << 0) | (1 << 2) | (1 << 12) | (3 << 28) | (3 << 22) | (1 << 20) | (1 << 11);

/// Block descriptor bits.
const VALID_BLOCK: u64 = 0b01;
const AF: u64 = 1 << 10;
const SH_INNER: u64 = 3 << 8;
const ATTR_NORMAL: u64 = 1 << 2;
const XN: u64 = 3 << 53;

/// A level-1 block descriptor for the 1 GiB at `pa`: Normal write-back,
/// inner shareable, executable (as RAM is mapped).
pub fn normal_block(pa: u64) -> u64 {
    pa | VALID_BLOCK | AF | ATTR_NORMAL | SH_INNER
}

/// Replaces level-1 entry `index` (the 1 GiB at `index << 30`) with `desc`
/// and invalidates the TLBs; returns the old entry.
pub fn set_l1(index: usize, desc: u64) -> u64 {
    let t = core::ptr::addr_of_mut!(L1);
    // SAFETY: the probe's own table; the caller puts back what it changes, and
    // the TLB maintenance below makes the walk see the new entry.
    unsafe {
        let old = (*t).0.get(index).copied().unwrap_or(0);
        if let Some(e) = (*t).0.get_mut(index) {
            core::ptr::write_volatile(e, desc);
        }
        core::arch::asm!("dsb ish", "tlbi vmalle1", "dsb ish", "isb");
        old
    }
}

/// Cleans `[addr, addr + len)` to the point of coherency.
pub fn clean_to_poc(addr: usize, len: usize) {
    let mut a = addr & !63;
    while a < addr + len {
        // SAFETY: DC CVAC on a mapped address only writes back its line.
        unsafe { core::arch::asm!("dc cvac, {}", in(reg) a) };
        a += 64;
    }
    // SAFETY: a barrier.
    unsafe { core::arch::asm!("dsb sy") };
}

/// Builds the map and turns the MMU on (boot CPU, MMU and caches off).
#[no_mangle]
extern "C" fn mmu_on_boot(dtb: usize) {
    // RAM: the DT's first memory node, read before the MMU is on (aligned
    // 32-bit loads only: with the MMU off every access is Device memory).
    let (ram_base, ram_size) = ram_from_dtb(dtb).unwrap_or((0x4000_0000, 0x4000_0000));
    let t = core::ptr::addr_of_mut!(L1);
    for i in 0..512u64 {
        let va = i << 30;
        let ram = va < ram_base.saturating_add(ram_size) && va + (1 << 30) > ram_base;
        let d = va | VALID_BLOCK | AF | if ram { ATTR_NORMAL | SH_INNER } else { XN };
        // SAFETY: only the boot CPU writes the table, before the MMU uses it.
        unsafe { (*t).0[i as usize] = d };
    }
    let ttbr = t as u64;
    // SAFETY: the table identity-maps the code, stack and data that run next
    // (RAM as Normal memory), so turning translation on changes no address.
    unsafe {
        core::arch::asm!(
            "msr mair_el1, {mair}",
            "msr tcr_el1, {tcr}",
            "msr ttbr0_el1, {ttbr}",
            "dsb ish",
            "tlbi vmalle1",
            "dsb ish",
            "isb",
            "msr sctlr_el1, {sctlr}",
            "isb",
            mair = in(reg) MAIR,
            tcr = in(reg) TCR,
            ttbr = in(reg) ttbr,
            sctlr = in(reg) SCTLR,
        );
    }
    crate::entry::set_secondary_mmu([MAIR, TCR, ttbr, SCTLR]);
}

/// Reads a big-endian u32 at `p` (4-byte aligned).
fn be32(p: usize) -> u32 {
    // SAFETY: the caller stays inside the DTB, whose blocks are 4-byte aligned.
    u32::from_be(unsafe { core::ptr::read_volatile(p as *const u32) })
}

/// The first `reg` of the node named `memory@...` with the root's 2+2 cells,
/// walked by hand (the `fdt` crate's readers may do unaligned loads).
fn ram_from_dtb(dtb: usize) -> Option<(u64, u64)> {
    if be32(dtb) != 0xd00d_feed {
        return None;
    }
    let total = be32(dtb + 4) as usize;
    let st = dtb + be32(dtb + 8) as usize;
    let strings = dtb + be32(dtb + 12) as usize;
    let mut p = st;
    let mut in_memory = false;
    while p < dtb + total {
        let tok = be32(p);
        p += 4;
        match tok {
            1 => {
                // FDT_BEGIN_NODE: name, NUL-terminated, padded to 4.
                let name = p;
                let mut len = 0;
                // SAFETY: inside the structure block.
                while unsafe { core::ptr::read_volatile((name + len) as *const u8) } != 0 {
                    len += 1;
                }
                // SAFETY: `len` bytes just read.
                let n = unsafe { core::slice::from_raw_parts(name as *const u8, len) };
                in_memory = n.starts_with(b"memory");
                p += (len + 4) & !3;
            }
            3 => {
                // FDT_PROP: len, nameoff, value.
                let len = be32(p) as usize;
                let nameoff = be32(p + 4) as usize;
                let v = p + 8;
                let is_reg = b"reg\0".iter().enumerate().all(|(i, &c)| {
                    // SAFETY: property names are NUL-terminated in the strings
                    // block; the comparison stops at the first mismatch.
                    unsafe { core::ptr::read_volatile((strings + nameoff + i) as *const u8) == c }
                });
                if in_memory && is_reg && len >= 16 {
                    let base = (u64::from(be32(v)) << 32) | u64::from(be32(v + 4));
                    let size = (u64::from(be32(v + 8)) << 32) | u64::from(be32(v + 12));
                    return Some((base, size));
                }
                p = v + ((len + 3) & !3);
            }
            2 | 4 => {}
            _ => return None,
        }
    }
    None
}

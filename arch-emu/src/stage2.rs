//! Stage-2 translation tables (VMSAv8-64, 4 KiB granule) as pure code over an
//! abstract table memory: built, changed and walked the same way by the
//! hypervisor (identity-mapped heap pages) and by host tests (a map of pages).
//!
//! The walk starts at level 1 with up to two concatenated tables (IPA of 32 to
//! 40 bits, Arm ARM D8.2 "Translation table walk"); 1 GiB blocks are not used,
//! 2 MiB blocks where IPA and PA are both aligned, 4 KiB pages elsewhere.

use crate::addr::{Ipa, Pa};

/// Where the tables live. Addresses are physical (what descriptors hold).
pub trait TableMemory {
    /// `pages` zeroed 4 KiB pages, naturally aligned to their total size.
    fn alloc(&mut self, pages: usize) -> Option<u64>;
    /// The 8-byte entry at `pa`.
    fn read(&self, pa: u64) -> u64;
    /// Writes the 8-byte entry at `pa`.
    fn write(&mut self, pa: u64, value: u64);
    /// Invalidates TLB entries for `ipa` (needed between breaking a valid entry
    /// and making a new one, and after removing one).
    fn invalidate(&mut self, ipa: u64);
}

/// Memory attributes of a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S2Attr {
    /// Normal memory, inner and outer write-back, inner shareable.
    Normal,
    /// Device-nGnRE, execute-never (passed-through device registers).
    Device,
    /// Normal memory, inner and outer non-cacheable, execute-never (prefetchable
    /// BARs of passed-through devices: write-combining, never cached).
    NormalNonCacheable,
}

/// Why a change was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S2Error {
    /// No memory for a table.
    OutOfMemory,
    /// An address or size is not 4 KiB aligned.
    Misaligned(u64),
    /// Beyond the IPA size (or an unsupported IPA size).
    OutOfRange(u64),
    /// The IPA is mapped already.
    AlreadyMapped(u64),
}

impl core::fmt::Display for S2Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            S2Error::OutOfMemory => write!(f, "out of memory for stage-2 tables"),
            S2Error::Misaligned(a) => write!(f, "{a:#x} is not 4 KiB aligned"),
            S2Error::OutOfRange(a) => write!(f, "IPA {a:#x} is beyond the IPA space"),
            S2Error::AlreadyMapped(a) => write!(f, "IPA {a:#x} is already mapped"),
        }
    }
}

const PAGE: u64 = 4096;
const MIB2: u64 = 2 << 20;
const VALID: u64 = 1;
const TABLE_OR_PAGE: u64 = 0b11;
const BLOCK: u64 = 0b01;
const OA_MASK: u64 = 0x0000_ffff_ffff_f000;
const AF: u64 = 1 << 10;
const SH_INNER: u64 = 3 << 8;
const S2AP_RW: u64 = 3 << 6;
const XN: u64 = 1 << 54;
const ATTR_MASK: u64 = !OA_MASK & !3;

fn attr_bits(a: S2Attr) -> u64 {
    match a {
        S2Attr::Normal => (0b1111 << 2) | SH_INNER | S2AP_RW | AF,
        S2Attr::Device => (0b0001 << 2) | S2AP_RW | AF | XN,
        // MemAttr[3:2] = 0b01 outer non-cacheable, [1:0] = 0b01 inner non-cacheable
        // (Arm ARM D8.6.5, stage 2 MemAttr); outer shareable as the architecture
        // treats non-cacheable memory anyway.
        S2Attr::NormalNonCacheable => (0b0101 << 2) | (2 << 8) | S2AP_RW | AF | XN,
    }
}

fn attr_of(desc: u64) -> S2Attr {
    match (desc >> 2) & 0xf {
        0b1111 => S2Attr::Normal,
        0b0101 => S2Attr::NormalNonCacheable,
        _ => S2Attr::Device,
    }
}

/// A guest's stage-2 tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage2 {
    root: u64,
    ipa_bits: u32,
}

impl Stage2 {
    /// Empty tables for an IPA of `ipa_bits` (32..=40).
    pub fn new(mem: &mut impl TableMemory, ipa_bits: u32) -> Result<Stage2, S2Error> {
        if !(32..=40).contains(&ipa_bits) {
            return Err(S2Error::OutOfRange(
                1u64.checked_shl(ipa_bits).unwrap_or(u64::MAX),
            ));
        }
        let pages = if ipa_bits == 40 { 2 } else { 1 };
        let root = mem.alloc(pages).ok_or(S2Error::OutOfMemory)?;
        Ok(Stage2 { root, ipa_bits })
    }

    /// The root table's address (VTTBR_EL2.BADDR).
    pub fn root(&self) -> u64 {
        self.root
    }

    /// The IPA size in bits.
    pub fn ipa_bits(&self) -> u32 {
        self.ipa_bits
    }

    /// VTCR_EL2 for these tables: T0SZ, SL0 = 1 (level 1), write-back inner
    /// shareable walks, 4 KiB granule, PS = `pa_range` (ID_AA64MMFR0_EL1.PARange,
    /// at most 5), RES1 bit 31.
    pub fn vtcr(&self, pa_range: u64) -> u64 {
        u64::from(64 - self.ipa_bits)
            | (1 << 6)
            | (1 << 8)
            | (1 << 10)
            | (3 << 12)
            | (pa_range.min(5) << 16)
            | (1 << 31)
    }

    fn l1_entry(&self, ipa: u64) -> Result<u64, S2Error> {
        if ipa >> self.ipa_bits != 0 {
            return Err(S2Error::OutOfRange(ipa));
        }
        Ok(self.root + (ipa >> 30) * 8)
    }

    /// The next-level table behind entry `at`, created if `create`.
    fn table_at(
        mem: &mut impl TableMemory,
        at: u64,
        ipa: u64,
        create: bool,
    ) -> Result<Option<u64>, S2Error> {
        let e = mem.read(at);
        if e & 3 == TABLE_OR_PAGE {
            return Ok(Some(e & OA_MASK));
        }
        if e & VALID != 0 {
            return Err(S2Error::AlreadyMapped(ipa));
        }
        if !create {
            return Ok(None);
        }
        let t = mem.alloc(1).ok_or(S2Error::OutOfMemory)?;
        mem.write(at, t | TABLE_OR_PAGE);
        Ok(Some(t))
    }

    /// Maps `[ipa, ipa + size)` to `[pa, pa + size)`. Nothing in the range may be
    /// mapped already.
    pub fn map(
        &mut self,
        mem: &mut impl TableMemory,
        ipa: Ipa,
        pa: Pa,
        size: u64,
        attr: S2Attr,
    ) -> Result<(), S2Error> {
        let (ipa, pa) = (ipa.0, pa.0);
        for v in [ipa, pa, size] {
            if v % PAGE != 0 {
                return Err(S2Error::Misaligned(v));
            }
        }
        let end = ipa.checked_add(size).ok_or(S2Error::OutOfRange(ipa))?;
        if size > 0 && (end - 1) >> self.ipa_bits != 0 {
            return Err(S2Error::OutOfRange(end - 1));
        }
        pa.checked_add(size)
            .filter(|e| *e <= OA_MASK + PAGE)
            .ok_or(S2Error::OutOfRange(pa))?;
        let a = attr_bits(attr);
        let mut off = 0;
        while off < size {
            let (i, p) = (ipa + off, pa + off);
            let l1 = self.l1_entry(i)?;
            let Some(l2) = Self::table_at(mem, l1, i, true)? else {
                return Err(S2Error::OutOfMemory);
            };
            let l2e = l2 + ((i >> 21) & 511) * 8;
            if i % MIB2 == 0 && p % MIB2 == 0 && size - off >= MIB2 && mem.read(l2e) & VALID == 0 {
                mem.write(l2e, p | a | BLOCK);
                off += MIB2;
                continue;
            }
            let Some(l3) = Self::table_at(mem, l2e, i, true)? else {
                return Err(S2Error::OutOfMemory);
            };
            let l3e = l3 + ((i >> 12) & 511) * 8;
            if mem.read(l3e) & VALID != 0 {
                return Err(S2Error::AlreadyMapped(i));
            }
            mem.write(l3e, p | a | TABLE_OR_PAGE);
            off += PAGE;
        }
        Ok(())
    }

    /// Removes every mapping in `[ipa, ipa + size)` (unmapped parts are skipped),
    /// splitting 2 MiB blocks the range cuts; TLB entries are invalidated.
    pub fn unmap(
        &mut self,
        mem: &mut impl TableMemory,
        ipa: Ipa,
        size: u64,
    ) -> Result<(), S2Error> {
        let ipa = ipa.0;
        if ipa % PAGE != 0 || size % PAGE != 0 {
            return Err(S2Error::Misaligned(ipa | size));
        }
        let end = ipa.checked_add(size).ok_or(S2Error::OutOfRange(ipa))?;
        let mut i = ipa;
        while i < end {
            let Ok(l1) = self.l1_entry(i) else {
                return Err(S2Error::OutOfRange(i));
            };
            let e1 = mem.read(l1);
            if e1 & 3 != TABLE_OR_PAGE {
                i = ((i >> 30) + 1) << 30;
                continue;
            }
            let l2e = (e1 & OA_MASK) + ((i >> 21) & 511) * 8;
            let e2 = mem.read(l2e);
            let block_start = i & !(MIB2 - 1);
            if e2 & VALID == 0 {
                i = block_start + MIB2;
                continue;
            }
            if e2 & 3 == BLOCK {
                if i == block_start && end - i >= MIB2 {
                    mem.write(l2e, 0);
                    mem.invalidate(block_start);
                    i += MIB2;
                    continue;
                }
                // Split: break (invalidate), then make a table of the same pages.
                let t = mem.alloc(1).ok_or(S2Error::OutOfMemory)?;
                let base = e2 & OA_MASK & !(MIB2 - 1);
                for k in 0..512u64 {
                    mem.write(
                        t + k * 8,
                        (base + k * PAGE) | (e2 & ATTR_MASK) | TABLE_OR_PAGE,
                    );
                }
                mem.write(l2e, 0);
                mem.invalidate(block_start);
                mem.write(l2e, t | TABLE_OR_PAGE);
            }
            let l3 = mem.read(l2e) & OA_MASK;
            let stop = end.min(block_start + MIB2);
            while i < stop {
                let l3e = l3 + ((i >> 12) & 511) * 8;
                if mem.read(l3e) & VALID != 0 {
                    mem.write(l3e, 0);
                    mem.invalidate(i);
                }
                i += PAGE;
            }
        }
        Ok(())
    }

    /// The PA and attributes `ipa` translates to, or `None`.
    pub fn translate(&self, mem: &impl TableMemory, ipa: Ipa) -> Option<(Pa, S2Attr)> {
        self.translate_raw(mem, ipa.0).map(|(pa, a)| (Pa(pa), a))
    }

    fn translate_raw(&self, mem: &impl TableMemory, ipa: u64) -> Option<(u64, S2Attr)> {
        let e1 = mem.read(self.l1_entry(ipa).ok()?);
        if e1 & 3 != TABLE_OR_PAGE {
            return None;
        }
        let e2 = mem.read((e1 & OA_MASK) + ((ipa >> 21) & 511) * 8);
        match e2 & 3 {
            BLOCK => Some((
                (e2 & OA_MASK & !(MIB2 - 1)) | (ipa & (MIB2 - 1)),
                attr_of(e2),
            )),
            TABLE_OR_PAGE => {
                let e3 = mem.read((e2 & OA_MASK) + ((ipa >> 12) & 511) * 8);
                (e3 & 3 == TABLE_OR_PAGE).then(|| ((e3 & OA_MASK) | (ipa & 0xfff), attr_of(e3)))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    /// Pages in a map; allocation hands out naturally aligned addresses.
    #[derive(Default)]
    struct Mem {
        words: BTreeMap<u64, u64>,
        next: u64,
        invalidated: Vec<u64>,
        limit: Option<usize>,
        allocated: usize,
    }

    impl TableMemory for Mem {
        fn alloc(&mut self, pages: usize) -> Option<u64> {
            if self.limit.is_some_and(|l| self.allocated + pages > l) {
                return None;
            }
            self.allocated += pages;
            let size = pages as u64 * PAGE;
            let at = (self.next + 0x1000_0000).div_ceil(size) * size;
            self.next = at + size - 0x1000_0000;
            Some(at)
        }
        fn read(&self, pa: u64) -> u64 {
            self.words.get(&pa).copied().unwrap_or(0)
        }
        fn write(&mut self, pa: u64, v: u64) {
            self.words.insert(pa, v);
        }
        fn invalidate(&mut self, ipa: u64) {
            self.invalidated.push(ipa);
        }
    }

    fn s2(mem: &mut Mem) -> Stage2 {
        Stage2::new(mem, 40).expect("tables")
    }

    #[test]
    fn aligned_ranges_use_2mib_blocks() {
        let mut m = Mem::default();
        let mut t = s2(&mut m);
        t.map(
            &mut m,
            Ipa(0x8000_0000),
            Pa(0x5000_0000),
            4 << 20,
            S2Attr::Normal,
        )
        .unwrap();
        // root (2 pages) + one level-2 table: no level-3 table.
        assert_eq!(m.allocated, 3);
        assert_eq!(
            t.translate_raw(&m, 0x8020_1234),
            Some((0x5020_1234, S2Attr::Normal))
        );
    }

    #[test]
    fn unaligned_ranges_use_pages() {
        let mut m = Mem::default();
        let mut t = s2(&mut m);
        t.map(
            &mut m,
            Ipa(0x8000_0000),
            Pa(0x5000_1000),
            3 * PAGE,
            S2Attr::Device,
        )
        .unwrap();
        assert_eq!(
            t.translate_raw(&m, 0x8000_2008),
            Some((0x5000_3008, S2Attr::Device))
        );
        assert_eq!(t.translate_raw(&m, 0x8000_3000), None);
    }

    #[test]
    fn mapping_twice_is_refused() {
        let mut m = Mem::default();
        let mut t = s2(&mut m);
        t.map(
            &mut m,
            Ipa(0x8000_0000),
            Pa(0x5000_0000),
            MIB2,
            S2Attr::Normal,
        )
        .unwrap();
        assert_eq!(
            t.map(
                &mut m,
                Ipa(0x8000_1000),
                Pa(0x6000_0000),
                PAGE,
                S2Attr::Normal
            ),
            Err(S2Error::AlreadyMapped(0x8000_1000))
        );
    }

    #[test]
    fn beyond_the_ipa_size_is_refused() {
        let mut m = Mem::default();
        let mut t = Stage2::new(&mut m, 36).unwrap();
        assert_eq!(
            t.map(&mut m, Ipa(0xf_ffff_f000), Pa(0), 2 * PAGE, S2Attr::Normal),
            Err(S2Error::OutOfRange(0x10_0000_0fff))
        );
    }

    #[test]
    fn misaligned_is_refused() {
        let mut m = Mem::default();
        let mut t = s2(&mut m);
        assert_eq!(
            t.map(&mut m, Ipa(0x8000_0800), Pa(0), PAGE, S2Attr::Normal),
            Err(S2Error::Misaligned(0x8000_0800))
        );
    }

    #[test]
    fn unmapping_part_of_a_block_splits_it_and_keeps_the_rest() {
        let mut m = Mem::default();
        let mut t = s2(&mut m);
        t.map(
            &mut m,
            Ipa(0x8000_0000),
            Pa(0x5000_0000),
            MIB2,
            S2Attr::Normal,
        )
        .unwrap();
        t.unmap(&mut m, Ipa(0x8000_4000), 2 * PAGE).unwrap();
        assert_eq!(t.translate_raw(&m, 0x8000_4000), None);
        assert_eq!(t.translate_raw(&m, 0x8000_5fff), None);
        assert_eq!(
            t.translate_raw(&m, 0x8000_3000),
            Some((0x5000_3000, S2Attr::Normal))
        );
        assert_eq!(
            t.translate_raw(&m, 0x8000_6000),
            Some((0x5000_6000, S2Attr::Normal))
        );
        assert!(
            m.invalidated.contains(&0x8000_0000),
            "block broken before the table"
        );
        assert!(m.invalidated.contains(&0x8000_4000));
    }

    #[test]
    fn unmapped_pages_can_be_mapped_again_elsewhere() {
        let mut m = Mem::default();
        let mut t = s2(&mut m);
        t.map(
            &mut m,
            Ipa(0x1000_0000),
            Pa(0x7000_0000),
            16 * PAGE,
            S2Attr::Device,
        )
        .unwrap();
        t.unmap(&mut m, Ipa(0x1000_0000), 16 * PAGE).unwrap();
        t.map(
            &mut m,
            Ipa(0x1000_0000),
            Pa(0x7100_0000),
            16 * PAGE,
            S2Attr::Device,
        )
        .unwrap();
        assert_eq!(
            t.translate_raw(&m, 0x1000_0010),
            Some((0x7100_0010, S2Attr::Device))
        );
    }

    #[test]
    fn running_out_of_table_memory_is_an_error() {
        let mut m = Mem {
            limit: Some(2),
            ..Mem::default()
        };
        let mut t = s2(&mut m);
        assert_eq!(
            t.map(&mut m, Ipa(0), Pa(0), PAGE, S2Attr::Normal),
            Err(S2Error::OutOfMemory)
        );
    }

    #[test]
    fn vtcr_fits_the_ipa_and_pa_sizes() {
        let mut m = Mem::default();
        let t = s2(&mut m);
        let v = t.vtcr(6);
        assert_eq!(v & 0x3f, 24, "T0SZ for 40 bits");
        assert_eq!((v >> 6) & 3, 1, "SL0: level 1");
        assert_eq!((v >> 16) & 7, 5, "PS capped at 48 bits");
        assert_eq!((v >> 14) & 3, 0, "4 KiB granule");
    }

    proptest! {
        /// Random maps and unmaps of 4 KiB-aligned ranges agree with a page-by-page
        /// reference model.
        #[test]
        fn tables_agree_with_a_reference_model(
            ops in proptest::collection::vec((any::<bool>(), 0u64..64, 1u64..1100, 0u64..2048), 1..30)
        ) {
            let mut m = Mem::default();
            let mut t = s2(&mut m);
            let mut model: BTreeMap<u64, u64> = BTreeMap::new();
            for (map, start, pages, pa_page) in ops {
                let ipa = 0x8000_0000 + start * 0x8_0000; // 512 KiB steps
                let size = pages * PAGE;
                if map {
                    let pa = pa_page * 0x10_0000;
                    let free = (0..pages).all(|k| !model.contains_key(&(ipa + k * PAGE)));
                    let r = t.map(&mut m, Ipa(ipa), Pa(pa), size, S2Attr::Normal);
                    if free {
                        prop_assert_eq!(r, Ok(()));
                        for k in 0..pages {
                            model.insert(ipa + k * PAGE, pa + k * PAGE);
                        }
                    } else {
                        // Refused part-way: resynchronize the model from the tables.
                        prop_assert!(r.is_err());
                        for k in 0..pages {
                            let a = ipa + k * PAGE;
                            match t.translate_raw(&m, a) {
                                Some((p, _)) => { model.insert(a, p); }
                                None => { model.remove(&a); }
                            }
                        }
                    }
                } else {
                    prop_assert_eq!(t.unmap(&mut m, Ipa(ipa), size), Ok(()));
                    for k in 0..pages {
                        model.remove(&(ipa + k * PAGE));
                    }
                }
            }
            for k in 0..(64 * 128 + 1100) {
                let a = 0x8000_0000 + k * PAGE;
                prop_assert_eq!(t.translate_raw(&m, a).map(|x| x.0), model.get(&a).copied());
            }
        }
    }
}

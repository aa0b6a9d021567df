//! Translation tables: the hypervisor's own EL2 stage-1 identity map and the
//! guest's stage-2 (4 KiB granule both).
//!
//! Both are built in heap pages; the hypervisor runs identity-mapped, so a
//! table's address is its physical address.

use alloc::alloc::{alloc_zeroed, Layout};

use aarch64_cpu::registers::{
    Readable, Writeable, ID_AA64MMFR0_EL1, MAIR_EL2, SCTLR_EL2, TCR_EL2, TTBR0_EL2, VTCR_EL2,
    VTTBR_EL2,
};
use tock_registers::fields::FieldValue;

use crate::sysreg::{dsb_ish, isb, sctlr_el2, tcr_el2};

const PAGE: usize = 4096;
const GIB: u64 = 1 << 30;
const MIB2: u64 = 2 << 20;

/// MAIR_EL2 attribute indexes (see [`mair`]).
const ATTR_DEVICE_NGNRNE: u64 = 0;
const ATTR_NORMAL_WB: u64 = 2;

/// MAIR_EL2: Attr0 Device-nGnRnE, Attr1 Device-nGnRE, Attr2 Normal, inner and
/// outer write-back non-transient, read- and write-allocate.
fn mair() -> FieldValue<u64, MAIR_EL2::Register> {
    MAIR_EL2::Attr0_Device::nonGathering_nonReordering_noEarlyWriteAck
        + MAIR_EL2::Attr1_Device::nonGathering_nonReordering_EarlyWriteAck
        + MAIR_EL2::Attr2_Normal_Outer::WriteBack_NonTransient_ReadWriteAlloc
        + MAIR_EL2::Attr2_Normal_Inner::WriteBack_NonTransient_ReadWriteAlloc
}

/// Descriptor bits (stage 1, EL2 regime).
const DESC_BLOCK: u64 = 0b01;
const DESC_TABLE: u64 = 0b11;
const AF: u64 = 1 << 10;
const SH_INNER: u64 = 3 << 8;
const XN_EL2: u64 = 1 << 54;

/// Errors while building tables (the stage-2 module's, shared by both).
pub use arch_emu::stage2::S2Error as MmuError;

fn new_table(pages: usize) -> Result<*mut u64, MmuError> {
    let layout =
        Layout::from_size_align(PAGE * pages, PAGE * pages).map_err(|_| MmuError::OutOfMemory)?;
    // SAFETY: the layout has a non-zero size.
    let p = unsafe { alloc_zeroed(layout) };
    if p.is_null() {
        return Err(MmuError::OutOfMemory);
    }
    Ok(p.cast())
}

fn set_entry(t: *mut u64, i: usize, v: u64) {
    // SAFETY: as for `entry`; tables are identity-mapped heap pages we own.
    unsafe { t.add(i).write_volatile(v) }
}

/// The physical address size, in bits, from ID_AA64MMFR0_EL1.PARange.
pub fn pa_bits() -> u32 {
    match ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange) {
        0 => 32,
        1 => 36,
        2 => 40,
        3 => 42,
        4 => 44,
        5 => 48,
        _ => 52,
    }
}

/// ID_AA64MMFR0_EL1.PARange, at most 0b101 (48 bits): the PS encoding the
/// stage-2 tables use.
pub fn pa_range() -> u64 {
    pa_range_field()
}

fn pa_range_field() -> u64 {
    ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange).min(5)
}

/// Where the EL2 identity map ends (two level-0 entries: 1 TiB); device
/// memory the hypervisor drives itself (host disk BARs) must lie below.
pub const EL2_MAP_END: u64 = 2 * 512 * GIB;

/// The hypervisor's EL2 stage-1 tables: an identity map of the first 1 TiB,
/// Normal write-back where `ram` says, Device-nGnRnE (execute-never) elsewhere.
pub struct El2Tables {
    root: *mut u64,
}

// SAFETY: the tables are written once at boot and then only read by the MMU.
unsafe impl Send for El2Tables {}
// SAFETY: as above.
unsafe impl Sync for El2Tables {}

impl El2Tables {
    /// Builds the identity map; `ram` lists (base, size) of normal memory.
    pub fn new(ram: &[(u64, u64)]) -> Result<Self, MmuError> {
        let is_ram = |base: u64, size: u64| -> (bool, bool) {
            // (entirely RAM, partially RAM)
            let end = base + size;
            let mut covered = 0u64;
            for &(rb, rs) in ram {
                let re = rb.saturating_add(rs);
                let lo = rb.max(base);
                let hi = re.min(end);
                if hi > lo {
                    covered += hi - lo;
                }
            }
            (covered == size, covered > 0)
        };
        let normal = ATTR_NORMAL_WB << 2 | AF | SH_INNER;
        let device = ATTR_DEVICE_NGNRNE << 2 | AF | XN_EL2;
        let root = new_table(1)?;
        for l0 in 0..(EL2_MAP_END / (512 * GIB)) as usize {
            let l1 = new_table(1)?;
            set_entry(root, l0, l1 as u64 | DESC_TABLE);
            for i in 0..512usize {
                let base = ((l0 * 512 + i) as u64) * GIB;
                match is_ram(base, GIB) {
                    (true, _) => set_entry(l1, i, base | normal | DESC_BLOCK),
                    (false, false) => set_entry(l1, i, base | device | DESC_BLOCK),
                    (false, true) => {
                        let l2 = new_table(1)?;
                        for j in 0..512usize {
                            let b = base + j as u64 * MIB2;
                            let attrs = if is_ram(b, MIB2).0 { normal } else { device };
                            set_entry(l2, j, b | attrs | DESC_BLOCK);
                        }
                        set_entry(l1, i, l2 as u64 | DESC_TABLE);
                    }
                }
            }
        }
        Ok(El2Tables { root })
    }

    /// The register values that turn translation on with these tables:
    /// MAIR_EL2, TCR_EL2, TTBR0_EL2, SCTLR_EL2.
    pub fn registers(&self) -> [u64; 4] {
        // TCR_EL2 (E2H = 0): 48-bit VA (walks start at level 0), table walks
        // inner shareable and write-back cacheable, 4 KiB granule, PS = PARange.
        let tcr = TCR_EL2::T0SZ.val(16)
            + TCR_EL2::IRGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL2::ORGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL2::SH0::Inner
            + TCR_EL2::TG0::KiB_4
            + TCR_EL2::PS.val(pa_range_field())
            + tcr_el2::RES1;
        // SCTLR_EL2 (E2H = 0): MMU, data and instruction caches and SP alignment
        // checks on; exception entry and return context-synchronizing (EIS, EOS:
        // RES1 without FEAT_ExS); everything else (WXN, EE, A, IESB) off.
        let sctlr = SCTLR_EL2::M::Enable
            + SCTLR_EL2::C::Cacheable
            + SCTLR_EL2::SA::Enable
            + SCTLR_EL2::I::Cacheable
            + SCTLR_EL2::EOS::IsSynch
            + SCTLR_EL2::EIS::IsSynch
            + sctlr_el2::RES1;
        [mair().value, tcr.value, self.root as u64, sctlr.value]
    }

    /// Turns the MMU and caches on at EL2 on this CPU with these tables.
    /// (Secondaries do the same in `entry.rs` before running any Rust code.)
    pub fn enable(&self) {
        let [mair, tcr, ttbr, sctlr] = self.registers();
        MAIR_EL2.set(mair);
        TCR_EL2.set(tcr);
        TTBR0_EL2.set(ttbr);
        dsb_ish();
        // SAFETY: invalidating all EL2 TLB entries before enabling translation.
        unsafe { core::arch::asm!("tlbi alle2", "dsb ish", options(nostack)) };
        isb();
        // The tables identity-map everything the hypervisor uses, with the
        // attributes it had with the MMU off or stronger (Normal RAM cacheable).
        SCTLR_EL2.set(sctlr);
        isb();
    }
}

pub use arch_emu::addr::{Ipa, MemRange, Pa};
pub use arch_emu::stage2::S2Attr;
use arch_emu::stage2::TableMemory;

/// Stage-2 table pages from the heap, reached through the identity map (the
/// CPU's stage 2 and the SMMU's, `smmu.rs`).
pub(crate) struct HeapTables;

impl TableMemory for HeapTables {
    fn alloc(&mut self, pages: usize) -> Option<u64> {
        new_table(pages).ok().map(|p| p as u64)
    }

    fn read(&self, pa: u64) -> u64 {
        // SAFETY: `pa` is an entry of a table page `alloc` handed out (heap memory,
        // identity-mapped, 8-byte aligned).
        unsafe { (pa as *const u64).read_volatile() }
    }

    fn write(&mut self, pa: u64, value: u64) {
        // SAFETY: as for `read`.
        unsafe { (pa as *mut u64).write_volatile(value) }
    }

    fn invalidate(&mut self, ipa: u64) {
        // SAFETY: TLB maintenance by IPA for the current VMID; no memory effects.
        unsafe {
            core::arch::asm!(
                "dsb ishst",
                "tlbi ipas2e1is, {}",
                "dsb ish",
                "tlbi vmalle1is",
                "dsb ish",
                "isb",
                in(reg) ipa >> 12,
                options(nostack)
            )
        };
    }
}

/// The guest's stage-2 tables (`arch_emu::stage2` over heap pages): IPA of
/// min(PA size, 40) bits.
pub struct Stage2 {
    tables: arch_emu::stage2::Stage2,
}

impl Stage2 {
    /// Empty tables.
    pub fn new() -> Result<Self, MmuError> {
        let tables = arch_emu::stage2::Stage2::new(&mut HeapTables, pa_bits().clamp(32, 40))?;
        Ok(Stage2 { tables })
    }

    /// The IPA size in bits.
    pub fn ipa_bits(&self) -> u32 {
        self.tables.ipa_bits()
    }

    /// Maps `guest` onto the host range of the same size at `pa`.
    pub fn map(&mut self, guest: MemRange<Ipa>, pa: Pa, attr: S2Attr) -> Result<(), MmuError> {
        self.tables
            .map(&mut HeapTables, guest.base, pa, guest.size, attr)?;
        dsb_ish();
        Ok(())
    }

    /// Unmaps `guest` (break-before-make, TLB invalidation by IPA).
    pub fn unmap(&mut self, guest: MemRange<Ipa>) -> Result<(), MmuError> {
        self.tables.unmap(&mut HeapTables, guest.base, guest.size)
    }

    /// Translates an IPA to a PA through these tables, or `None` if unmapped.
    pub fn translate(&self, ipa: Ipa) -> Option<Pa> {
        self.tables.translate(&HeapTables, ipa).map(|(pa, _)| pa)
    }

    /// Installs these tables for this CPU (VTCR_EL2, VTTBR_EL2 with `vmid`).
    pub fn install(&self, vmid: u16) {
        // VTCR_EL2 (see `arch_emu::stage2::Stage2::vtcr`): level-1 start, 4 KiB
        // granule, PS = PARange.
        VTCR_EL2.set(self.tables.vtcr(pa_range_field()));
        // BADDR's field starts at bit 1: the table address goes in shifted right
        // by one, the way `VTTBR_EL2::set_baddr` does it.
        VTTBR_EL2.write(
            VTTBR_EL2::VMID.val(u64::from(vmid)) + VTTBR_EL2::BADDR.val(self.tables.root() >> 1),
        );
        isb();
        // SAFETY: invalidating the stage-1+2 TLB entries of the current VMID.
        unsafe { core::arch::asm!("tlbi vmalls12e1is", "dsb ish", options(nostack)) };
        isb();
    }
}

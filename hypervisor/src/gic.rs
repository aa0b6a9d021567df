//! The physical GICv3, owned by the hypervisor: distributor and redistributor
//! set-up, the EL2 CPU interface, and the virtual CPU interface control
//! registers (ICH_*) the vGIC uses.

use aarch64_cpu::registers::{
    Readable, Writeable, ICC_SRE_EL2, ICH_AP0R0_EL2, ICH_AP1R0_EL2, ICH_HCR_EL2, ICH_LR0_EL2,
    ICH_LR10_EL2, ICH_LR11_EL2, ICH_LR12_EL2, ICH_LR13_EL2, ICH_LR14_EL2, ICH_LR15_EL2,
    ICH_LR1_EL2, ICH_LR2_EL2, ICH_LR3_EL2, ICH_LR4_EL2, ICH_LR5_EL2, ICH_LR6_EL2, ICH_LR7_EL2,
    ICH_LR8_EL2, ICH_LR9_EL2, ICH_VTR_EL2,
};

use arch_emu::vgic::shadow::LrShadow;

use crate::entry::MAX_CPUS;
use crate::sysreg::{dsb_sy, isb, read_sysreg, write_sysreg};

const GICD_CTLR: usize = 0x0000;
const GICD_TYPER: usize = 0x0004;
const GICD_IGROUPR: usize = 0x0080;
const GICD_ISENABLER: usize = 0x0100;
const GICD_ICENABLER: usize = 0x0180;
const GICD_ICACTIVER: usize = 0x0380;
const GICD_IPRIORITYR: usize = 0x0400;
const GICD_ICFGR: usize = 0x0c00;
const GICD_IROUTER: usize = 0x6000;
const CTLR_RWP: u32 = 1 << 31;
/// GICD_CTLR (single security state): EnableGrp1 (bit 1), ARE (bit 4).
const CTLR_ENABLE_G1_ARE: u32 = (1 << 1) | (1 << 4);

const GICR_TYPER: usize = 0x0008;
const GICR_WAKER: usize = 0x0014;
const GICR_FRAME: usize = 0x2_0000;
const SGI_BASE: usize = 0x1_0000;
const WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
const WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;

/// The physical SGI the hypervisor uses to make another CPU re-evaluate its vCPU.
pub const SGI_KICK: u32 = 8;
/// Priority the hypervisor gives every interrupt it enables.
const PRIORITY: u8 = 0xa0;

fn rd32(a: usize) -> u32 {
    // SAFETY: `a` is inside the GIC frames the host DT names, identity-mapped as device memory.
    unsafe { core::ptr::read_volatile(a as *const u32) }
}
fn wr32(a: usize, v: u32) {
    // SAFETY: as for `rd32`.
    unsafe { core::ptr::write_volatile(a as *mut u32, v) }
}
fn rd64(a: usize) -> u64 {
    // SAFETY: as for `rd32`.
    unsafe { core::ptr::read_volatile(a as *const u64) }
}
fn wr64(a: usize, v: u64) {
    // SAFETY: as for `rd32`.
    unsafe { core::ptr::write_volatile(a as *mut u64, v) }
}

/// A redistributor with LPIs on ([`Gic::enable_lpis`]).
#[derive(Debug, Clone, Copy)]
pub struct LpiRedistributor {
    /// Its RD_base frame's physical address (what MAPC names when GITS_TYPER.PTA = 1).
    pub frame: u64,
    /// GICR_TYPER.Processor_Number (what MAPC names when PTA = 0).
    pub processor: u16,
    /// GICR_PROPBASER.Shareability read back non-zero: it snoops CPU caches.
    pub shareable: bool,
}

/// Most redistributor regions the host DT may list.
pub const MAX_GICR_REGIONS: usize = 8;

/// The physical GIC's frames.
#[derive(Debug, Clone, Copy)]
pub struct Gic {
    /// GICD base.
    pub gicd: usize,
    /// Redistributor regions (base, size); unused entries have size 0.
    pub gicr: [(usize, usize); MAX_GICR_REGIONS],
}

impl Gic {
    fn wait_rwp(&self) {
        let mut n = 0u32;
        while rd32(self.gicd + GICD_CTLR) & CTLR_RWP != 0 && n < 1_000_000 {
            n += 1;
            core::hint::spin_loop();
        }
    }

    /// Number of SPIs the distributor implements (beyond INTID 31).
    pub fn num_spis(&self) -> u32 {
        let lines = (rd32(self.gicd + GICD_TYPER) & 0x1f) + 1;
        (lines * 32).saturating_sub(32).min(988)
    }

    /// Distributor set-up (boot CPU, once): affinity routing, group 1, all SPIs off.
    pub fn init_distributor(&self) {
        wr32(self.gicd + GICD_CTLR, 0);
        self.wait_rwp();
        let spis = self.num_spis();
        let mut intid = 32;
        while intid < 32 + spis {
            let reg = (intid / 32) as usize * 4;
            wr32(self.gicd + GICD_ICENABLER + reg, !0);
            wr32(self.gicd + GICD_IGROUPR + reg, !0);
            intid += 32;
        }
        self.wait_rwp();
        wr32(self.gicd + GICD_CTLR, 1 << 4);
        self.wait_rwp();
        wr32(self.gicd + GICD_CTLR, CTLR_ENABLE_G1_ARE);
        self.wait_rwp();
    }

    /// Enables SPI `intid`, routed to the CPU with affinity `mpidr`.
    pub fn enable_spi(&self, intid: u32, mpidr: u64) {
        if !(32..1020).contains(&intid) {
            return;
        }
        let i = intid as usize;
        wr64(self.gicd + GICD_IROUTER + i * 8, mpidr & 0xff_00ff_ffff);
        // SAFETY: byte access to IPRIORITYR is architecturally allowed.
        unsafe {
            core::ptr::write_volatile((self.gicd + GICD_IPRIORITYR + i) as *mut u8, PRIORITY)
        };
        wr32(self.gicd + GICD_ISENABLER + (i / 32) * 4, 1 << (i % 32));
        self.wait_rwp();
    }

    /// Clears SPI `intid`'s active state at the distributor (GICD_ICACTIVER,
    /// GICv3 12.9.6), whichever CPU acknowledged it: a guest that stopped
    /// will never deactivate the hardware-linked SPIs it had.
    pub fn clear_active(&self, intid: u32) {
        if !(32..1020).contains(&intid) {
            return;
        }
        let i = intid as usize;
        wr32(self.gicd + GICD_ICACTIVER + (i / 32) * 4, 1 << (i % 32));
        self.wait_rwp();
    }

    /// Makes SPI `intid` edge-triggered (`edge`) or level-sensitive: GICD_ICFGR
    /// Int_config bit 1 of its 2-bit field (GICv3 12.9.10). Call while the SPI
    /// is disabled (before `enable_spi`).
    pub fn set_spi_edge(&self, intid: u32, edge: bool) {
        if !(32..1020).contains(&intid) {
            return;
        }
        let i = intid as usize;
        let reg = self.gicd + GICD_ICFGR + (i / 16) * 4;
        let bit = 1u32 << ((i % 16) * 2 + 1);
        let v = rd32(reg);
        wr32(reg, if edge { v | bit } else { v & !bit });
    }

    /// GICD_TYPER.
    pub fn typer(&self) -> u32 {
        rd32(self.gicd + GICD_TYPER)
    }

    /// This CPU's redistributor frame, found by matching GICR_TYPER's affinity.
    fn my_redistributor(&self) -> Option<usize> {
        self.redistributor_of(crate::sysreg::mpidr_affinity())
    }

    /// The RD_base frame of the CPU with affinity `aff` (MPIDR Aff3..Aff0),
    /// found by matching GICR_TYPER's affinity.
    pub fn redistributor_of(&self, aff: u64) -> Option<usize> {
        let want = (aff & 0xff_ffff) | ((aff >> 32) << 24);
        for &(base, size) in self.gicr.iter().filter(|r| r.1 != 0) {
            let mut f = base;
            while f + GICR_FRAME <= base + size {
                let typer = rd64(f + GICR_TYPER);
                if typer >> 32 == want {
                    return Some(f);
                }
                if typer & (1 << 4) != 0 {
                    break;
                }
                // GICv4 redistributors have two more 64 KiB frames (VLPI_base, reserved).
                f += if typer & (1 << 1) != 0 {
                    2 * GICR_FRAME
                } else {
                    GICR_FRAME
                };
            }
        }
        None
    }

    /// Turns on physical LPIs in the redistributor of the CPU with affinity
    /// `aff`: GICR_PROPBASER = `propbaser` (the configuration table every
    /// redistributor shares), GICR_PENDBASER at `pending` (its own, zeroed,
    /// 64 KiB aligned), then GICR_CTLR.EnableLPIs (IHI 0069 5.1, 12.11).
    /// Returns what GICR_TYPER says (for Processor_Number) and the
    /// frame's address, and whether the tables' accesses are shareable
    /// (GICR_PROPBASER.Shareability read back non-zero).
    pub fn enable_lpis(
        &self,
        aff: u64,
        propbaser: u64,
        pending: u64,
    ) -> Result<LpiRedistributor, &'static str> {
        use arch_emu::its::{gicr, lpi};
        let rd = self
            .redistributor_of(aff)
            .ok_or("no redistributor matches the CPU's MPIDR")?;
        let typer = rd64(rd + gicr::GICR_TYPER);
        if typer & gicr::TYPER_PLPIS == 0 {
            return Err("GICR_TYPER.PLPIS = 0: the redistributor has no physical LPIs");
        }
        if rd32(rd + gicr::GICR_CTLR) & gicr::CTLR_ENABLE_LPIS != 0 {
            // Its tables are fixed until reset (12.11.2): someone else's.
            return Err("GICR_CTLR.EnableLPIs is already set (by firmware?)");
        }
        wr64(rd + gicr::GICR_PROPBASER, propbaser);
        let shareable = lpi::shareability(rd64(rd + gicr::GICR_PROPBASER)) != 0;
        wr64(rd + gicr::GICR_PENDBASER, lpi::pendbaser(pending));
        dsb_sy();
        wr32(
            rd + gicr::GICR_CTLR,
            rd32(rd + gicr::GICR_CTLR) | gicr::CTLR_ENABLE_LPIS,
        );
        dsb_sy();
        if rd32(rd + gicr::GICR_CTLR) & gicr::CTLR_ENABLE_LPIS == 0 {
            return Err("GICR_CTLR.EnableLPIs does not stick");
        }
        Ok(LpiRedistributor {
            frame: rd as u64,
            processor: gicr::processor_number(typer),
            shareable,
        })
    }

    /// Clears the active state of this CPU's PPIs `ppis` (GICR_ICACTIVER0 in
    /// its redistributor's SGI_base frame, GICv3 12.11.8): a guest that
    /// stopped will never deactivate the hardware-linked timer interrupts
    /// it had.
    pub fn clear_active_ppis(&self, ppis: &[u32]) {
        let Some(rd) = self.my_redistributor() else {
            return;
        };
        let bits = ppis
            .iter()
            .filter(|&&i| (16..32).contains(&i))
            .fold(0u32, |b, &i| b | 1 << i);
        wr32(rd + SGI_BASE + GICD_ICACTIVER, bits);
        dsb_sy();
    }

    /// Per-CPU set-up: wake the redistributor, enable the PPIs/SGIs the hypervisor
    /// takes (its kick SGI, the maintenance interrupt, the virtual timer), and turn
    /// on the EL2 CPU interface with split priority drop / deactivation.
    pub fn init_cpu(&self, ppis: &[u32]) -> Result<(), &'static str> {
        let rd = self
            .my_redistributor()
            .ok_or("no redistributor matches this CPU's MPIDR")?;
        let w = rd32(rd + GICR_WAKER);
        wr32(rd + GICR_WAKER, w & !WAKER_PROCESSOR_SLEEP);
        let mut n = 0u32;
        while rd32(rd + GICR_WAKER) & WAKER_CHILDREN_ASLEEP != 0 {
            n += 1;
            if n > 1_000_000 {
                return Err("redistributor does not wake up");
            }
        }
        let sgi = rd + SGI_BASE;
        wr32(sgi + GICD_ICENABLER, !0);
        wr32(sgi + GICD_IGROUPR, !0);
        for &i in ppis.iter().chain(core::iter::once(&SGI_KICK)) {
            if i < 32 {
                // SAFETY: byte access to GICR_IPRIORITYR is architecturally allowed.
                unsafe {
                    core::ptr::write_volatile(
                        (sgi + GICD_IPRIORITYR + i as usize) as *mut u8,
                        PRIORITY,
                    )
                };
                wr32(sgi + GICD_ISENABLER, 1 << i);
            }
        }
        dsb_sy();
        // ICC_SRE_EL2: the system register interface at EL2, FIQ and IRQ bypass
        // disabled, and EL1 may use the system register interface too.
        ICC_SRE_EL2.write(
            ICC_SRE_EL2::SRE::SET
                + ICC_SRE_EL2::DFB::SET
                + ICC_SRE_EL2::DIB::SET
                + ICC_SRE_EL2::ENABLE::SET,
        );
        isb();
        // SAFETY: the four GICv3 CPU interface registers below exist (the host DT
        // names a GICv3) and ICC_SRE_EL2.SRE is set above; they only decide which
        // interrupts this CPU takes, never memory or translation.
        unsafe {
            // Let every priority through.
            write_sysreg!("icc_pmr_el1", icc_pmr_el1::PRIORITY);
            // Group priority from every priority bit (binary point 0).
            write_sysreg!("icc_bpr1_el1", 0);
            // EOIR only drops priority; DIR deactivates.
            write_sysreg!("icc_ctlr_el1", icc_ctlr_el1::EOIMODE);
            write_sysreg!("icc_igrpen1_el1", icc_igrpen1_el1::ENABLE);
        }
        isb();
        Ok(())
    }
}

// The ICC_* registers `aarch64-cpu` lacks, fields as the GIC architecture
// specification (IHI 0069) describes them.

/// ICC_PMR_EL1, the priority mask.
mod icc_pmr_el1 {
    /// Priority, bits 7:0: interrupts of higher priority (lower value) than
    /// this are signalled; 0xff lets every priority through.
    pub const PRIORITY: u64 = 0xff;
}

/// ICC_CTLR_EL1: the field the hypervisor sets (`aarch64-cpu` has the
/// register read-only).
mod icc_ctlr_el1 {
    /// EOImode, bit 1: ICC_EOIR1_EL1 only drops priority, ICC_DIR_EL1 deactivates.
    pub const EOIMODE: u64 = 1 << 1;
}

/// ICC_IGRPEN1_EL1.
mod icc_igrpen1_el1 {
    /// Enable, bit 0: group 1 interrupts are signalled.
    pub const ENABLE: u64 = 1 << 0;
}

/// ICC_IAR1_EL1.
mod icc_iar1_el1 {
    /// INTID, bits 23:0: the acknowledged interrupt (1020..=1023: none).
    pub const INTID: u64 = 0xff_ffff;
}

/// ICC_SGI1R_EL1: field shifts.
mod icc_sgi1r_el1 {
    /// TargetList, bits 15:0: one bit per Aff0 value within the range RS selects.
    pub const TARGET_LIST_SHIFT: u32 = 0;
    /// Aff1, bits 23:16.
    pub const AFF1_SHIFT: u32 = 16;
    /// INTID, bits 27:24: the SGI.
    pub const INTID_SHIFT: u32 = 24;
    /// Aff2, bits 39:32.
    pub const AFF2_SHIFT: u32 = 32;
    /// RS, bits 47:44: the range of 16 Aff0 values TargetList covers.
    pub const RS_SHIFT: u32 = 44;
    /// Aff3, bits 55:48.
    pub const AFF3_SHIFT: u32 = 48;
}

/// Acknowledges the highest-priority pending group-1 interrupt (ICC_IAR1_EL1).
pub fn ack() -> u32 {
    (read_sysreg!("icc_iar1_el1") & icc_iar1_el1::INTID) as u32
}

/// Whether a physical IRQ is pending for this PE (ISR_EL1.I, bit 7; Arm ARM
/// D24.2.85: at EL2 it shows the physical interrupt). A plain PE register,
/// not the CPU interface: under emulation it is much cheaper than an
/// acknowledge that finds nothing (ICC_IAR1_EL1 reading 1023).
pub fn irq_pending() -> bool {
    read_sysreg!("isr_el1") & (1 << 7) != 0
}

/// Priority drop (ICC_EOIR1_EL1); with EOImode = 1 the interrupt stays active.
pub fn eoi(intid: u32) {
    // SAFETY: ICC_EOIR1_EL1 exists (GICv3, SRE set in `init_cpu`); writing an INTID
    // this CPU acknowledged drops its running priority, nothing else.
    unsafe { write_sysreg!("icc_eoir1_el1", u64::from(intid)) };
    isb();
}

/// Deactivation (ICC_DIR_EL1).
pub fn deactivate(intid: u32) {
    // SAFETY: ICC_DIR_EL1 exists (GICv3, SRE set in `init_cpu`); it only changes
    // the interrupt's state in the GIC.
    unsafe { write_sysreg!("icc_dir_el1", u64::from(intid)) };
    isb();
}

/// Sends physical SGI `intid` to the CPU with affinity `mpidr` (ICC_SGI1R_EL1).
pub fn send_sgi(intid: u32, mpidr: u64) {
    use icc_sgi1r_el1::*;
    let aff0 = mpidr & 0xff;
    let v = ((1u64 << (aff0 % 16)) << TARGET_LIST_SHIFT)
        | (((mpidr >> 8) & 0xff) << AFF1_SHIFT)
        | (u64::from(intid & 0xf) << INTID_SHIFT)
        | (((mpidr >> 16) & 0xff) << AFF2_SHIFT)
        | ((aff0 / 16) << RS_SHIFT)
        | (((mpidr >> 32) & 0xff) << AFF3_SHIFT);
    dsb_sy();
    // SAFETY: ICC_SGI1R_EL1 exists (GICv3, SRE set in `init_cpu`); it only raises
    // an SGI on the target CPU.
    unsafe { write_sysreg!("icc_sgi1r_el1", v) };
    isb();
}

/// Number of implemented list registers (ICH_VTR_EL2.ListRegs + 1).
pub fn num_lrs() -> usize {
    (ICH_VTR_EL2.read(ICH_VTR_EL2::ListRegs) + 1) as usize
}

/// Reads ICH_LR<n>_EL2.
pub fn read_lr(n: usize) -> u64 {
    match n {
        0 => ICH_LR0_EL2.get(),
        1 => ICH_LR1_EL2.get(),
        2 => ICH_LR2_EL2.get(),
        3 => ICH_LR3_EL2.get(),
        4 => ICH_LR4_EL2.get(),
        5 => ICH_LR5_EL2.get(),
        6 => ICH_LR6_EL2.get(),
        7 => ICH_LR7_EL2.get(),
        8 => ICH_LR8_EL2.get(),
        9 => ICH_LR9_EL2.get(),
        10 => ICH_LR10_EL2.get(),
        11 => ICH_LR11_EL2.get(),
        12 => ICH_LR12_EL2.get(),
        13 => ICH_LR13_EL2.get(),
        14 => ICH_LR14_EL2.get(),
        15 => ICH_LR15_EL2.get(),
        _ => 0,
    }
}

/// Writes ICH_LR<n>_EL2.
pub fn write_lr(n: usize, v: u64) {
    match n {
        0 => ICH_LR0_EL2.set(v),
        1 => ICH_LR1_EL2.set(v),
        2 => ICH_LR2_EL2.set(v),
        3 => ICH_LR3_EL2.set(v),
        4 => ICH_LR4_EL2.set(v),
        5 => ICH_LR5_EL2.set(v),
        6 => ICH_LR6_EL2.set(v),
        7 => ICH_LR7_EL2.set(v),
        8 => ICH_LR8_EL2.set(v),
        9 => ICH_LR9_EL2.set(v),
        10 => ICH_LR10_EL2.set(v),
        11 => ICH_LR11_EL2.set(v),
        12 => ICH_LR12_EL2.set(v),
        13 => ICH_LR13_EL2.set(v),
        14 => ICH_LR14_EL2.set(v),
        15 => ICH_LR15_EL2.set(v),
        _ => {}
    }
}

/// Reads ICH_ELRSR_EL2 (GICv3, 12.4.8): bit `n` set when ICH_LR<n>_EL2 holds
/// no interrupt (State 0b00 and no EOI maintenance interrupt pending for it).
pub fn read_elrsr() -> u64 {
    // ICH_ELRSR_EL2 is S3_4_C12_C11_5 (not in `aarch64-cpu`).
    read_sysreg!("S3_4_C12_C11_5")
}

/// Per physical CPU, what it last wrote to its list registers and
/// ICH_HCR_EL2 (`arch_emu::vgic::shadow`); each CPU locks only its own.
static LR_SHADOWS: [spin::Mutex<LrShadow>; MAX_CPUS] =
    [const { spin::Mutex::new(LrShadow::new()) }; MAX_CPUS];

/// The list-register shadow of physical CPU `cpu`.
pub fn lr_shadow(cpu: usize) -> Option<&'static spin::Mutex<LrShadow>> {
    LR_SHADOWS.get(cpu)
}

/// ICH_HCR_EL2 bits (`aarch64-cpu`'s fields, as `u64` for [`write_ich_hcr`]).
pub mod ich_hcr {
    use aarch64_cpu::registers::ICH_HCR_EL2;

    /// En, bit 0: the virtual CPU interface is enabled.
    pub const EN: u64 = ICH_HCR_EL2::En::SET.value;
    /// UIE, bit 1: maintenance interrupt when at most one LR is valid.
    pub const UIE: u64 = ICH_HCR_EL2::UIE::SET.value;
}

/// Writes ICH_HCR_EL2 (bits from [`ich_hcr`]).
pub fn write_ich_hcr(v: u64) {
    ICH_HCR_EL2.set(v);
}

/// Clears the virtual active priorities (ICH_AP0R0_EL2, ICH_AP1R0_EL2): a vCPU
/// starting afresh has no interrupt active.
pub fn clear_active_priorities() {
    ICH_AP0R0_EL2.set(0);
    ICH_AP1R0_EL2.set(0);
    isb();
}

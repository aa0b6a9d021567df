//! The physical GICv3, owned by the hypervisor: distributor and redistributor
//! set-up, the EL2 CPU interface, and the virtual CPU interface control
//! registers (ICH_*) the vGIC uses.

use crate::sysreg::{dsb_sy, isb, read_sysreg, write_sysreg};

const GICD_CTLR: usize = 0x0000;
const GICD_TYPER: usize = 0x0004;
const GICD_IGROUPR: usize = 0x0080;
const GICD_ISENABLER: usize = 0x0100;
const GICD_ICENABLER: usize = 0x0180;
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

    /// This CPU's redistributor frame, found by matching GICR_TYPER's affinity.
    fn my_redistributor(&self) -> Option<usize> {
        let aff = crate::sysreg::mpidr_affinity();
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
        // ICC_SRE_EL2: SRE, DFB, DIB, Enable (EL1 may use the system registers).
        write_sysreg!("S3_4_C12_C9_5", 0xf);
        isb();
        // ICC_PMR_EL1: let every priority through.
        write_sysreg!("S3_0_C4_C6_0", 0xff);
        // ICC_BPR1_EL1 = 0.
        write_sysreg!("S3_0_C12_C12_3", 0);
        // ICC_CTLR_EL1.EOImode = 1: EOIR only drops priority; DIR deactivates.
        write_sysreg!("S3_0_C12_C12_4", 1 << 1);
        // ICC_IGRPEN1_EL1 = 1.
        write_sysreg!("S3_0_C12_C12_7", 1);
        isb();
        Ok(())
    }
}

/// Acknowledges the highest-priority pending group-1 interrupt (ICC_IAR1_EL1).
pub fn ack() -> u32 {
    (read_sysreg!("S3_0_C12_C12_0") & 0xff_ffff) as u32
}

/// Priority drop (ICC_EOIR1_EL1); with EOImode = 1 the interrupt stays active.
pub fn eoi(intid: u32) {
    write_sysreg!("S3_0_C12_C12_1", u64::from(intid));
    isb();
}

/// Deactivation (ICC_DIR_EL1).
pub fn deactivate(intid: u32) {
    write_sysreg!("S3_0_C12_C11_1", u64::from(intid));
    isb();
}

/// Sends physical SGI `intid` to the CPU with affinity `mpidr` (ICC_SGI1R_EL1).
pub fn send_sgi(intid: u32, mpidr: u64) {
    let aff0 = mpidr & 0xff;
    let v = (1u64 << (aff0 % 16))
        | (((mpidr >> 8) & 0xff) << 16)
        | (u64::from(intid & 0xf) << 24)
        | (((mpidr >> 16) & 0xff) << 32)
        | ((aff0 / 16) << 44)
        | (((mpidr >> 32) & 0xff) << 48);
    dsb_sy();
    write_sysreg!("S3_0_C12_C11_5", v);
    isb();
}

/// Number of implemented list registers (ICH_VTR_EL2.ListRegs + 1).
pub fn num_lrs() -> usize {
    ((read_sysreg!("S3_4_C12_C11_1") & 0x1f) + 1) as usize
}

/// Reads ICH_LR<n>_EL2.
pub fn read_lr(n: usize) -> u64 {
    match n {
        0 => read_sysreg!("S3_4_C12_C12_0"),
        1 => read_sysreg!("S3_4_C12_C12_1"),
        2 => read_sysreg!("S3_4_C12_C12_2"),
        3 => read_sysreg!("S3_4_C12_C12_3"),
        4 => read_sysreg!("S3_4_C12_C12_4"),
        5 => read_sysreg!("S3_4_C12_C12_5"),
        6 => read_sysreg!("S3_4_C12_C12_6"),
        7 => read_sysreg!("S3_4_C12_C12_7"),
        8 => read_sysreg!("S3_4_C12_C13_0"),
        9 => read_sysreg!("S3_4_C12_C13_1"),
        10 => read_sysreg!("S3_4_C12_C13_2"),
        11 => read_sysreg!("S3_4_C12_C13_3"),
        12 => read_sysreg!("S3_4_C12_C13_4"),
        13 => read_sysreg!("S3_4_C12_C13_5"),
        14 => read_sysreg!("S3_4_C12_C13_6"),
        15 => read_sysreg!("S3_4_C12_C13_7"),
        _ => 0,
    }
}

/// Writes ICH_LR<n>_EL2.
pub fn write_lr(n: usize, v: u64) {
    match n {
        0 => write_sysreg!("S3_4_C12_C12_0", v),
        1 => write_sysreg!("S3_4_C12_C12_1", v),
        2 => write_sysreg!("S3_4_C12_C12_2", v),
        3 => write_sysreg!("S3_4_C12_C12_3", v),
        4 => write_sysreg!("S3_4_C12_C12_4", v),
        5 => write_sysreg!("S3_4_C12_C12_5", v),
        6 => write_sysreg!("S3_4_C12_C12_6", v),
        7 => write_sysreg!("S3_4_C12_C12_7", v),
        8 => write_sysreg!("S3_4_C12_C13_0", v),
        9 => write_sysreg!("S3_4_C12_C13_1", v),
        10 => write_sysreg!("S3_4_C12_C13_2", v),
        11 => write_sysreg!("S3_4_C12_C13_3", v),
        12 => write_sysreg!("S3_4_C12_C13_4", v),
        13 => write_sysreg!("S3_4_C12_C13_5", v),
        14 => write_sysreg!("S3_4_C12_C13_6", v),
        15 => write_sysreg!("S3_4_C12_C13_7", v),
        _ => {}
    }
}

/// ICH_HCR_EL2 bits.
pub mod ich_hcr {
    /// En: the virtual CPU interface is enabled.
    pub const EN: u64 = 1 << 0;
    /// UIE: maintenance interrupt when at most one LR is valid.
    pub const UIE: u64 = 1 << 1;
}

/// Writes ICH_HCR_EL2.
pub fn write_ich_hcr(v: u64) {
    write_sysreg!("S3_4_C12_C11_0", v);
}

/// Clears the virtual active priorities (ICH_AP0R0_EL2, ICH_AP1R0_EL2): a vCPU
/// starting afresh has no interrupt active.
pub fn clear_active_priorities() {
    write_sysreg!("S3_4_C12_C8_0", 0);
    write_sysreg!("S3_4_C12_C9_0", 0);
    isb();
}

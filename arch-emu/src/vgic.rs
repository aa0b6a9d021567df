//! The virtual GICv3: an emulated distributor and redistributors (the guest's
//! MMIO accesses to them trap), and the bookkeeping that moves interrupts in
//! and out of the hardware list registers (ICH_LR<n>_EL2).
//!
//! Register names and layouts follow the GICv3/v4 architecture specification
//! (IHI 0069): chapter 12 (distributor `GICD_*`, redistributor `GICR_*`) and
//! 12.5 (`ICH_LR<n>_EL2`). The guest sees one security state (GICD_CTLR.DS = 1),
//! affinity routing always on (ARE = 1), no LPIs, no ITS, no 1-of-N SPI routing.
//! The CPU interface is the hardware's virtual one (ICV_*): only writes to the
//! SGI generation registers (ICC_SGI0R_EL1, ICC_SGI1R_EL1, ICC_ASGI1R_EL1) trap,
//! and come through [`Vgic::write_sgi`] ([`sgi`] says why no other ICC_* access traps).
//!
//! An interrupt is either in the model (pending latch, line level, active) or in
//! exactly one list register of the vCPU it targets; while in a list register,
//! the register owns its pending/active state and [`Vgic::fold`] copies it back.

pub mod sgi;
pub mod shadow;

pub use sgi::{SgiRegister, SgiRequest};

use alloc::vec;
use alloc::vec::Vec;

/// Size of the distributor frame.
pub const GICD_SIZE: u64 = 0x1_0000;
/// Size of one vCPU's redistributor (RD_base + SGI_base).
pub const GICR_FRAME_SIZE: u64 = 0x2_0000;
/// Most list registers an implementation has (ICH_VTR_EL2.ListRegs is 4 bits).
pub const MAX_LRS: usize = 16;
/// Offset of SGI_base inside a redistributor.
const SGI_BASE: u64 = 0x1_0000;

/// Which vCPUs need their list registers refreshed (bit n = vCPU n).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Kick(pub u64);

impl Kick {
    fn vcpu(v: usize) -> Kick {
        if v < 64 {
            Kick(1 << v)
        } else {
            Kick(0)
        }
    }
}

/// Counters of malformed guest accesses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VgicStats {
    /// Accesses of a size the register does not allow (read as zero, write ignored).
    pub bad_size: u64,
    /// Accesses to offsets with no register (RAZ/WI).
    pub bad_offset: u64,
    /// Writes to read-only registers.
    pub ro_writes: u64,
    /// SGIs or SPIs aimed at an affinity no vCPU has.
    pub no_target: u64,
    /// GICD_SETSPI_NSR / GICD_CLRSPI_NSR writes, and MSI messages, naming an
    /// INTID outside the guest's MBI range (ignored).
    pub mbi_rejected: u64,
}

/// ICH_LR<n>_EL2 fields.
pub mod lr {
    /// vINTID \[31:0\].
    pub const VINTID_MASK: u64 = 0xffff_ffff;
    /// pINTID \[44:32\].
    pub const PINTID_SHIFT: u32 = 32;
    /// EOI \[41\]: maintenance interrupt on deactivation (software interrupts only).
    pub const EOI: u64 = 1 << 41;
    /// Priority \[55:48\].
    pub const PRIORITY_SHIFT: u32 = 48;
    /// Group \[60\].
    pub const GROUP1: u64 = 1 << 60;
    /// HW \[61\]: hardware-linked.
    pub const HW: u64 = 1 << 61;
    /// State \[63:62\].
    pub const STATE_SHIFT: u32 = 62;
    /// State: invalid.
    pub const INVALID: u64 = 0;
    /// State: pending.
    pub const PENDING: u64 = 1;
    /// State: active.
    pub const ACTIVE: u64 = 2;
    /// State: pending and active.
    pub const PENDING_ACTIVE: u64 = 3;

    /// The state field of `v`.
    pub fn state(v: u64) -> u64 {
        v >> STATE_SHIFT
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Irq {
    enabled: bool,
    /// Pending latch: edge events, GICD_ISPENDR writes.
    latch: bool,
    /// Input line level (level-sensitive interrupts).
    level: bool,
    active: bool,
    priority: u8,
    group1: bool,
    /// ICFGR: edge-triggered.
    edge: bool,
    /// Hardware-linked to this physical INTID.
    hw: Option<u32>,
    /// The output of a hardware-linked source as last sampled (a generic
    /// timer's: ENABLE, ISTATUS and not IMASK), see [`Vgic::sample_hw_output`].
    hw_output: bool,
    /// Sitting in a list register of its target vCPU.
    in_lr: bool,
    /// The list register holds it pending (valid while `in_lr`).
    lr_pending: bool,
    /// IROUTER (SPIs): Aff3.Aff2.Aff1.Aff0 in MPIDR layout.
    route: u64,
}

impl Irq {
    fn new(edge: bool) -> Irq {
        Irq {
            enabled: false,
            latch: false,
            level: false,
            active: false,
            priority: 0,
            group1: false,
            edge,
            hw: None,
            hw_output: false,
            in_lr: false,
            lr_pending: false,
            route: 0,
        }
    }

    /// Pending in the model (not counting a list register).
    fn pending(&self) -> bool {
        self.latch || (!self.edge && self.hw.is_none() && self.level)
    }

    /// Pending as the guest reads it through ISPENDR: a sampled hardware
    /// source whose output is asserted is pending at the GIC (level-sensitive),
    /// even before EL2 has taken the physical interrupt.
    fn pending_visible(&self) -> bool {
        self.pending() || (self.in_lr && self.lr_pending) || (self.hw.is_some() && self.hw_output)
    }
}

/// A predicate over an interrupt's state (one bitmap register).
type IrqTest = fn(&Irq) -> bool;

struct Redist {
    private: Vec<Irq>,
    processor_sleep: bool,
}

/// The vGICv3.
pub struct Vgic {
    mpidrs: Vec<u64>,
    num_spis: u32,
    enable_grp0: bool,
    enable_grp1: bool,
    spis: Vec<Irq>,
    redists: Vec<Redist>,
    stats: VgicStats,
    /// The SPIs reserved for message-based interrupts (see `mbi.rs`).
    mbi: Option<mbi::MbiRange>,
}

/// Register-access helpers.
fn size_ok(size: u8) -> bool {
    size == 4
}

/// Implementer ARM (JEP106 0x43B), as QEMU's GIC reports.
const IIDR: u64 = 0x0000_043b;
/// PIDR4, PIDR5..7, PIDR0..3, CIDR0..3 at 0xFFD0..0xFFFC.
const ID_REGS: [(u64, u64); 12] = [
    (0xffd0, 0x44),
    (0xffd4, 0),
    (0xffd8, 0),
    (0xffdc, 0),
    (0xffe0, 0x92),
    (0xffe4, 0xb4),
    (0xffe8, 0x3b),
    (0xffec, 0),
    (0xfff0, 0x0d),
    (0xfff4, 0xf0),
    (0xfff8, 0x05),
    (0xfffc, 0xb1),
];

fn id_reg(offset: u64) -> Option<u64> {
    ID_REGS.iter().find(|(o, _)| *o == offset).map(|(_, v)| *v)
}

/// MPIDR affinity (Aff3 in \[39:32\]) to the GICR_TYPER / IROUTER layout.
fn affinity_of(mpidr: u64) -> u64 {
    mpidr & 0xff_00ff_ffff
}

impl Vgic {
    /// `mpidrs[i]` is vCPU i's MPIDR affinity; `num_spis` SPIs (INTID 32 up), rounded
    /// up to a multiple of 32, at most 988.
    pub fn new(mpidrs: &[u64], num_spis: u32) -> Vgic {
        let num_spis = num_spis.div_ceil(32).saturating_mul(32).min(988);
        let redists = mpidrs
            .iter()
            .map(|_| Redist {
                // SGIs are edge-triggered; PPIs reset level-sensitive.
                private: (0..32).map(|i| Irq::new(i < 16)).collect(),
                processor_sleep: true,
            })
            .collect();
        Vgic {
            mpidrs: mpidrs.iter().map(|&m| affinity_of(m)).collect(),
            num_spis,
            enable_grp0: false,
            enable_grp1: false,
            spis: vec![Irq::new(false); num_spis as usize],
            redists,
            stats: VgicStats::default(),
            mbi: None,
        }
    }

    /// Counters of bad guest accesses.
    pub fn stats(&self) -> VgicStats {
        self.stats
    }

    fn vcpu_of(&self, affinity: u64) -> Option<usize> {
        self.mpidrs.iter().position(|&m| m == affinity_of(affinity))
    }

    /// The interrupt `intid` as seen from `vcpu` (private ones are banked).
    fn irq(&self, vcpu: usize, intid: u32) -> Option<&Irq> {
        if intid < 32 {
            self.redists.get(vcpu)?.private.get(intid as usize)
        } else {
            self.spis.get(intid as usize - 32)
        }
    }

    fn irq_mut(&mut self, vcpu: usize, intid: u32) -> Option<&mut Irq> {
        if intid < 32 {
            self.redists.get_mut(vcpu)?.private.get_mut(intid as usize)
        } else {
            self.spis.get_mut(intid as usize - 32)
        }
    }

    /// The vCPU SPI `intid` is routed to now (its GICD_IROUTER<n>, IHI 0069
    /// 12.9.22), `None` for a non-SPI or an affinity no vCPU has.
    pub fn spi_target(&self, intid: u32) -> Option<usize> {
        if intid < 32 {
            return None;
        }
        self.target(0, intid)
    }

    /// The vCPU an interrupt is delivered to (`vcpu` for private ones).
    fn target(&self, vcpu: usize, intid: u32) -> Option<usize> {
        if intid < 32 {
            (vcpu < self.redists.len()).then_some(vcpu)
        } else {
            self.vcpu_of(self.spis.get(intid as usize - 32)?.route)
        }
    }

    fn group_enabled(&self, irq: &Irq) -> bool {
        if irq.group1 {
            self.enable_grp1
        } else {
            self.enable_grp0
        }
    }

    fn deliverable(&self, irq: &Irq) -> bool {
        irq.enabled && irq.pending() && self.group_enabled(irq)
    }

    /// The Kick for `intid` if it can now be delivered.
    fn kick_if_deliverable(&self, vcpu: usize, intid: u32) -> Kick {
        match (self.irq(vcpu, intid), self.target(vcpu, intid)) {
            (Some(irq), Some(t)) if self.deliverable(irq) => Kick::vcpu(t),
            _ => Kick::default(),
        }
    }

    // ---- interrupt sources -------------------------------------------------

    /// Drives the input line of a PPI (of `vcpu`) or SPI (`vcpu` ignored): level
    /// sources call it on each change; edge and hardware-linked sources call it with
    /// `true` per event.
    pub fn set_line(&mut self, vcpu: usize, intid: u32, level: bool) -> Kick {
        if (16..32).contains(&intid) || (32..32 + self.num_spis).contains(&intid) {
            if let Some(irq) = self.irq_mut(vcpu, intid) {
                if irq.edge || irq.hw.is_some() {
                    if level {
                        irq.latch = true;
                    }
                } else {
                    irq.level = level;
                    if !level && irq.in_lr && irq.lr_pending {
                        // Pending in a list register: its vCPU retracts it.
                        return self.target(vcpu, intid).map_or(Kick::default(), Kick::vcpu);
                    }
                }
            }
            return self.kick_if_deliverable(vcpu, intid);
        }
        Kick::default()
    }

    /// Marks PPI `intid` of `vcpu`, or SPI `intid` (`vcpu` ignored), as
    /// hardware-linked to physical INTID `pintid` (a PPI, or an SPI such as a
    /// passed-through device's INTx): its list register carries HW and the
    /// pINTID, so the guest's deactivation deactivates the physical interrupt
    /// (GICv3 architecture 4.2.4, ICH_LR<n>_EL2.HW).
    pub fn set_hw_linked(&mut self, vcpu: usize, intid: u32, pintid: u32) {
        if (16..32).contains(&intid) || (32..32 + self.num_spis).contains(&intid) {
            if let Some(irq) = self.irq_mut(vcpu, intid) {
                irq.hw = Some(pintid & 0x1fff);
            }
        }
    }

    /// Records the output of the source of hardware-linked interrupt `intid`
    /// of `vcpu` as the hypervisor sampled it (for a generic timer:
    /// CNTx_CTL_EL0.ENABLE and ISTATUS set, IMASK clear). The physical
    /// interrupt is level-sensitive and EL2 leaves it active when it takes it
    /// (the guest's deactivation of the hardware-linked entry deactivates it),
    /// so a delivery the guest has not yet acknowledged must follow the output:
    /// when it is low, the model's latch and a list register holding the
    /// interrupt pending only (in `lrs`, `vcpu`'s entries after
    /// [`Vgic::fold`]; the entry is zeroed) are withdrawn, and the physical
    /// INTID is returned for the caller to deactivate. An entry the guest has
    /// acknowledged (active) is left for the guest to complete. GICv3
    /// architecture 4.2.4 (hardware interrupt forwarding) and Arm ARM D12.9
    /// (the timer's interrupt is level-sensitive, asserted while the condition
    /// holds).
    pub fn sample_hw_output(
        &mut self,
        vcpu: usize,
        intid: u32,
        output: bool,
        lrs: &mut [u64],
    ) -> Option<u32> {
        if !(16..32).contains(&intid) && !(32..32 + self.num_spis).contains(&intid) {
            return None;
        }
        let irq = self.irq_mut(vcpu, intid)?;
        let pintid = irq.hw?;
        irq.hw_output = output;
        if output {
            return None;
        }
        let mut withdrawn = core::mem::take(&mut irq.latch);
        if irq.in_lr {
            for l in lrs.iter_mut() {
                if (*l & lr::VINTID_MASK) as u32 == intid && lr::state(*l) == lr::PENDING {
                    *l = 0;
                    irq.in_lr = false;
                    irq.lr_pending = false;
                    withdrawn = true;
                }
            }
        }
        withdrawn.then_some(pintid)
    }

    /// A trapped ICC_SGI1R_EL1 write from vCPU `src`.
    pub fn write_sgi1r(&mut self, src: usize, value: u64) -> Kick {
        self.write_sgi(src, SgiRegister::Sgi1r, value)
    }

    /// A trapped write of `value` to one of the SGI generation registers from
    /// vCPU `src`: the SGI becomes pending at each target where `reg` may
    /// generate it in the group it is configured in ([`SgiRegister::forwards`]).
    /// Target-list entries naming no vCPU are counted in `no_target`.
    pub fn write_sgi(&mut self, src: usize, reg: SgiRegister, value: u64) -> Kick {
        let req = SgiRequest::decode(value);
        let mut targets = 0u64;
        if req.irm {
            for v in (0..self.redists.len().min(64)).filter(|&v| v != src) {
                targets |= 1 << v;
            }
        } else {
            for aff in req.target_affinities() {
                match self.vcpu_of(aff) {
                    Some(v) if v < 64 => targets |= 1 << v,
                    _ => self.stats.no_target = self.stats.no_target.saturating_add(1),
                }
            }
        }
        let mut kick = Kick::default();
        for t in (0..64usize).filter(|t| targets & (1 << t) != 0) {
            if let Some(irq) = self.irq_mut(t, req.intid) {
                if reg.forwards(irq.group1) {
                    irq.latch = true;
                }
            }
            kick.0 |= self.kick_if_deliverable(t, req.intid).0;
        }
        kick
    }

    // ---- list registers ----------------------------------------------------

    /// Fills the free (Invalid) entries of `lrs` with the highest-priority pending,
    /// enabled interrupts routed to `vcpu`; returns true if some did not fit.
    pub fn flush(&mut self, vcpu: usize, lrs: &mut [u64]) -> bool {
        if vcpu >= self.redists.len() {
            return false;
        }
        // New edges for interrupts already in a list register merge into it; a
        // level interrupt whose line dropped before the guest acknowledged it is
        // retracted, as the hardware's pending state would follow the line.
        for l in lrs.iter_mut() {
            let state = lr::state(*l);
            if state == lr::INVALID {
                continue;
            }
            let intid = (*l & lr::VINTID_MASK) as u32;
            let Some(irq) = self.irq_mut(vcpu, intid) else {
                continue;
            };
            let level_sw = irq.hw.is_none() && !irq.edge;
            if level_sw && !irq.level && !irq.latch && state & lr::PENDING != 0 {
                irq.lr_pending = false;
                if state == lr::PENDING {
                    irq.in_lr = false;
                    *l = 0;
                } else {
                    *l = (*l & !(3 << lr::STATE_SHIFT)) | (lr::ACTIVE << lr::STATE_SHIFT);
                }
                continue;
            }
            if irq.hw.is_none() && irq.latch && state == lr::ACTIVE {
                irq.latch = level_sw;
                irq.lr_pending = true;
                *l = (*l & !(3 << lr::STATE_SHIFT)) | (lr::PENDING_ACTIVE << lr::STATE_SHIFT);
            } else if irq.latch && state & lr::PENDING != 0 && !level_sw {
                irq.latch = false;
            }
        }
        // The best eligible interrupts, as many as there are free entries, kept
        // sorted by (priority, INTID) without allocating: this runs on every exit.
        let free = lrs
            .iter()
            .filter(|l| lr::state(**l) == lr::INVALID)
            .count()
            .min(MAX_LRS);
        let mut best = [(0u8, 0u32); MAX_LRS];
        let mut n = 0usize;
        let mut overflow = false;
        let mut offer = |prio: u8, intid: u32| {
            let key = (prio, intid);
            let pos = best[..n].iter().position(|b| key < *b).unwrap_or(n);
            if pos >= free {
                overflow = true;
                return;
            }
            if n == free {
                overflow = true;
            } else {
                n += 1;
            }
            best.copy_within(pos..n - 1, pos + 1);
            best[pos] = key;
        };
        for intid in 0..32u32 {
            if let Some(irq) = self.irq(vcpu, intid) {
                if !irq.in_lr && self.deliverable(irq) {
                    offer(irq.priority, intid);
                }
            }
        }
        for (i, irq) in self.spis.iter().enumerate() {
            if !irq.in_lr && self.deliverable(irq) && self.vcpu_of(irq.route) == Some(vcpu) {
                offer(irq.priority, 32 + i as u32);
            }
        }
        let mut next = best[..n].iter();
        for l in lrs.iter_mut() {
            if lr::state(*l) != lr::INVALID {
                continue;
            }
            let Some(&(_, intid)) = next.next() else {
                break;
            };
            let Some(irq) = self.irq_mut(vcpu, intid) else {
                continue;
            };
            let mut v = u64::from(intid)
                | (u64::from(irq.priority) << lr::PRIORITY_SHIFT)
                | (lr::PENDING << lr::STATE_SHIFT);
            if irq.group1 {
                v |= lr::GROUP1;
            }
            match irq.hw {
                Some(p) => v |= lr::HW | (u64::from(p) << lr::PINTID_SHIFT),
                None if !irq.edge => v |= lr::EOI,
                None => {}
            }
            // An edge's pending state moves into the list register; a level
            // interrupt's software latch (ISPENDR) lasts until it is acknowledged.
            if irq.edge || irq.hw.is_some() {
                irq.latch = false;
            }
            irq.in_lr = true;
            irq.lr_pending = true;
            *l = v;
        }
        overflow
    }

    /// Reads back `vcpu`'s list registers after it ran: completed (Invalid) entries
    /// leave the list registers (and are zeroed), the others update the model.
    pub fn fold(&mut self, vcpu: usize, lrs: &mut [u64]) {
        for l in lrs.iter_mut() {
            if *l == 0 {
                continue;
            }
            let intid = (*l & lr::VINTID_MASK) as u32;
            let state = lr::state(*l);
            let Some(irq) = self.irq_mut(vcpu, intid) else {
                *l = 0;
                continue;
            };
            if !irq.in_lr {
                // Not ours (stale): drop it.
                *l = 0;
                continue;
            }
            let level_sw = irq.hw.is_none() && !irq.edge;
            if level_sw && state & lr::PENDING == 0 {
                // Acknowledged: a level interrupt's software latch is consumed.
                irq.latch = false;
            }
            if state == lr::INVALID {
                irq.in_lr = false;
                irq.lr_pending = false;
                irq.active = false;
                *l = 0;
            } else {
                irq.lr_pending = state & lr::PENDING != 0;
                irq.active = state & lr::ACTIVE != 0;
            }
        }
    }

    /// Whether `vcpu` has an interrupt it could take now (in the model).
    pub fn has_pending(&self, vcpu: usize) -> bool {
        (0..32).any(|i| {
            self.irq(vcpu, i)
                .is_some_and(|q| !q.in_lr && self.deliverable(q))
        }) || self
            .spis
            .iter()
            .any(|q| !q.in_lr && self.deliverable(q) && self.vcpu_of(q.route) == Some(vcpu))
    }

    // ---- register banks shared by GICD (SPIs) and GICR SGI_base (private) ----

    /// One 32-bit bitmap register (ISENABLER etc.) covering INTIDs `first..first+32`.
    fn read_bitmap(&self, vcpu: usize, first: u32, f: impl Fn(&Irq) -> bool) -> u64 {
        let mut v = 0u64;
        for b in 0..32u32 {
            if self.irq(vcpu, first + b).is_some_and(&f) {
                v |= 1 << b;
            }
        }
        v
    }

    fn write_bitmap(&mut self, vcpu: usize, first: u32, value: u64, f: impl Fn(&mut Irq)) -> Kick {
        let mut kick = Kick::default();
        for b in 0..32u32 {
            if value & (1 << b) == 0 {
                continue;
            }
            if let Some(irq) = self.irq_mut(vcpu, first + b) {
                f(irq);
            }
            kick.0 |= self.kick_if_deliverable(vcpu, first + b).0;
        }
        kick
    }

    /// The interrupt-configuration registers at `off` relative to the bank base
    /// (0x080 IGROUPR ... 0xC00 ICFGR), `first_reg_intid` being the INTID the bank
    /// starts at; returns None for offsets outside the banks.
    fn bank_read(&mut self, vcpu: usize, off: u64, size: u8, lo: u32, hi: u32) -> Option<u64> {
        let in_range = |intid: u32| intid >= lo && intid < hi;
        let bitmap = |base: u64| -> Option<u32> {
            (off >= base && off < base + 0x80).then(|| ((off - base) / 4 * 32) as u32)
        };
        if (0x400..0x800).contains(&off) {
            // IPRIORITYR: byte-accessible.
            if !matches!(size, 1 | 4) {
                self.stats.bad_size += 1;
                return Some(0);
            }
            let first = (off - 0x400) as u32;
            let mut v = 0u64;
            for i in 0..u32::from(size) {
                if in_range(first + i) {
                    if let Some(q) = self.irq(vcpu, first + i) {
                        v |= u64::from(q.priority) << (8 * i);
                    }
                }
            }
            return Some(v);
        }
        if (0xc00..0xd00).contains(&off) {
            if !size_ok(size) {
                self.stats.bad_size += 1;
                return Some(0);
            }
            let first = ((off - 0xc00) / 4 * 16) as u32;
            let mut v = 0u64;
            for i in 0..16u32 {
                if in_range(first + i) && self.irq(vcpu, first + i).is_some_and(|q| q.edge) {
                    v |= 2 << (2 * i);
                }
            }
            return Some(v);
        }
        let checks: [(u64, IrqTest); 7] = [
            (0x080, |q| q.group1),
            (0x100, |q| q.enabled),
            (0x180, |q| q.enabled),
            (0x200, |q| q.pending_visible()),
            (0x280, |q| q.pending_visible()),
            (0x300, |q| q.active),
            (0x380, |q| q.active),
        ];
        for (base, f) in checks {
            if let Some(first) = bitmap(base) {
                if !size_ok(size) {
                    self.stats.bad_size += 1;
                    return Some(0);
                }
                if !in_range(first) {
                    return Some(0);
                }
                return Some(self.read_bitmap(vcpu, first, f));
            }
        }
        if (0xd00..0xd80).contains(&off) || (0xe00..0xf00).contains(&off) {
            // IGRPMODR, NSACR: RAZ/WI with one security state.
            return Some(0);
        }
        None
    }

    fn bank_write(
        &mut self,
        vcpu: usize,
        off: u64,
        size: u8,
        value: u64,
        lo: u32,
        hi: u32,
    ) -> Option<Kick> {
        let in_range = |intid: u32| intid >= lo && intid < hi;
        if (0x400..0x800).contains(&off) {
            if !matches!(size, 1 | 4) {
                self.stats.bad_size += 1;
                return Some(Kick::default());
            }
            let first = (off - 0x400) as u32;
            for i in 0..u32::from(size) {
                if in_range(first + i) {
                    if let Some(q) = self.irq_mut(vcpu, first + i) {
                        q.priority = (value >> (8 * i)) as u8;
                    }
                }
            }
            return Some(Kick::default());
        }
        if (0xc00..0xd00).contains(&off) {
            if !size_ok(size) {
                self.stats.bad_size += 1;
                return Some(Kick::default());
            }
            let first = ((off - 0xc00) / 4 * 16) as u32;
            for i in 0..16u32 {
                // SGIs are always edge-triggered (read-only).
                if in_range(first + i) && first + i >= 16 {
                    if let Some(q) = self.irq_mut(vcpu, first + i) {
                        q.edge = value & (2 << (2 * i)) != 0;
                    }
                }
            }
            return Some(Kick::default());
        }
        if (0xd00..0xd80).contains(&off) || (0xe00..0xf00).contains(&off) {
            return Some(Kick::default());
        }
        let base = off & !0x7f;
        if !(0x080..0x400).contains(&base) {
            return None;
        }
        if !size_ok(size) {
            self.stats.bad_size += 1;
            return Some(Kick::default());
        }
        let first = ((off - base) / 4 * 32) as u32;
        if !in_range(first) {
            return Some(Kick::default());
        }
        let value = value & 0xffff_ffff;
        Some(match base {
            0x080 => {
                for b in 0..32u32 {
                    if let Some(q) = self.irq_mut(vcpu, first + b) {
                        q.group1 = value & (1 << b) != 0;
                    }
                }
                let mut k = Kick::default();
                for b in 0..32u32 {
                    k.0 |= self.kick_if_deliverable(vcpu, first + b).0;
                }
                k
            }
            0x100 => self.write_bitmap(vcpu, first, value, |q| q.enabled = true),
            0x180 => self.write_bitmap(vcpu, first, value, |q| q.enabled = false),
            0x200 => self.write_bitmap(vcpu, first, value, |q| q.latch = true),
            0x280 => self.write_bitmap(vcpu, first, value, |q| q.latch = false),
            0x300 => self.write_bitmap(vcpu, first, value, |q| q.active = true),
            _ => self.write_bitmap(vcpu, first, value, |q| q.active = false),
        })
    }

    // ---- distributor -------------------------------------------------------

    fn gicd_ctlr(&self) -> u64 {
        u64::from(self.enable_grp0) | u64::from(self.enable_grp1) << 1 | (1 << 4) | (1 << 6)
    }

    fn gicd_typer(&self) -> u64 {
        let it_lines = u64::from((self.num_spis + 32) / 32 - 1);
        // IDbits = 9 (10 bits of INTID), No1N (bit 25): no 1-of-N routing;
        // MBIS (bit 16) with an MBI range; LPIS (bit 17) 0.
        it_lines | (9 << 19) | (1 << 25) | self.typer_mbis()
    }

    /// A distributor read of `size` bytes at `offset` in its 64 KiB frame.
    pub fn gicd_read(&mut self, offset: u64, size: u8) -> u64 {
        // The header block first (GICD_CTLR, GICD_TYPER, GICD_IIDR, the
        // message-based SPI registers): the ranges below do not overlap it.
        if offset < 0x80 {
            if mbi::is_mbi_register(offset) {
                return self.mbi_read(offset, size);
            }
            if !size_ok(size) || offset % 4 != 0 {
                self.stats.bad_size += 1;
                return 0;
            }
            return match offset {
                0x00 => self.gicd_ctlr(),
                0x04 => self.gicd_typer(),
                0x08 => IIDR,
                0x0c | 0x10 => 0,
                _ => {
                    self.stats.bad_offset += 1;
                    0
                }
            };
        }
        let spi_hi = 32 + self.num_spis;
        if (0x6100..0x8000).contains(&offset) {
            // IROUTER<n>, n >= 32: 64-bit, or 32-bit halves.
            let n = ((offset - 0x6000) / 8) as u32;
            let hi_half = offset % 8 == 4;
            let route = if n < spi_hi {
                self.spis.get(n as usize - 32).map_or(0, |q| q.route)
            } else {
                0
            };
            return match (size, hi_half, offset % 4 == 0) {
                (8, false, _) => route,
                (4, false, true) => route & 0xffff_ffff,
                (4, true, _) => route >> 32,
                _ => {
                    self.stats.bad_size += 1;
                    0
                }
            };
        }
        if let Some(v) = id_reg(offset) {
            if !size_ok(size) {
                self.stats.bad_size += 1;
                return 0;
            }
            return v;
        }
        if (0x800..0xc00).contains(&offset) || (0xf00..0xf30).contains(&offset) {
            // ITARGETSR, SGIR, CPENDSGIR, SPENDSGIR: RAZ/WI with ARE = 1.
            return 0;
        }
        match self.bank_read(0, offset, size, 32, spi_hi) {
            Some(v) => v,
            None => {
                self.stats.bad_offset += 1;
                0
            }
        }
    }

    /// A distributor write.
    pub fn gicd_write(&mut self, offset: u64, size: u8, value: u64) -> Kick {
        let spi_hi = 32 + self.num_spis;
        if (0x6100..0x8000).contains(&offset) {
            let n = ((offset - 0x6000) / 8) as u32;
            if n >= spi_hi {
                return Kick::default();
            }
            let Some(q) = self.spis.get_mut(n as usize - 32) else {
                return Kick::default();
            };
            // Interrupt_Routing_Mode (bit 31) is RES0: 1-of-N is not offered.
            let mask = 0xff_00ff_ffffu64;
            match (size, offset % 8) {
                (8, 0) => q.route = value & mask,
                (4, 0) => q.route = (q.route & !0xffff_ffff) | (value & 0x00ff_ffff),
                (4, 4) => q.route = (q.route & 0xffff_ffff) | ((value & 0xff) << 32),
                _ => {
                    self.stats.bad_size += 1;
                    return Kick::default();
                }
            }
            return self.kick_if_deliverable(0, n);
        }
        if offset == 0 {
            if !size_ok(size) {
                self.stats.bad_size += 1;
                return Kick::default();
            }
            self.enable_grp0 = value & 1 != 0;
            self.enable_grp1 = value & 2 != 0;
            let mut k = Kick::default();
            for v in 0..self.redists.len() {
                if self.has_pending(v) {
                    k.0 |= Kick::vcpu(v).0;
                }
            }
            return k;
        }
        if mbi::is_mbi_register(offset) {
            return self.mbi_write(offset, size, value);
        }
        if offset < 0x80 || id_reg(offset).is_some() {
            self.stats.ro_writes += 1;
            return Kick::default();
        }
        if (0x800..0xc00).contains(&offset) || (0xf00..0xf30).contains(&offset) {
            return Kick::default();
        }
        match self.bank_write(0, offset, size, value, 32, spi_hi) {
            Some(k) => k,
            None => {
                self.stats.bad_offset += 1;
                Kick::default()
            }
        }
    }

    // ---- redistributors ----------------------------------------------------

    fn gicr_typer(&self, vcpu: usize) -> u64 {
        let m = self.mpidrs.get(vcpu).copied().unwrap_or(0);
        let aff = (m & 0xff_ffff) | ((m >> 32) & 0xff) << 24;
        let last = if vcpu + 1 == self.redists.len() {
            1 << 4
        } else {
            0
        };
        (aff << 32) | ((vcpu as u64 & 0xffff) << 8) | last
    }

    /// A redistributor read; `offset` from the start of the GICR region.
    pub fn gicr_read(&mut self, offset: u64, size: u8) -> u64 {
        let vcpu = (offset / GICR_FRAME_SIZE) as usize;
        let off = offset % GICR_FRAME_SIZE;
        if vcpu >= self.redists.len() {
            self.stats.bad_offset += 1;
            return 0;
        }
        if off < SGI_BASE {
            if off == 0x08 || off == 0x0c {
                let t = self.gicr_typer(vcpu);
                return match (size, off) {
                    (8, 0x08) => t,
                    (4, 0x08) => t & 0xffff_ffff,
                    (4, 0x0c) => t >> 32,
                    _ => {
                        self.stats.bad_size += 1;
                        0
                    }
                };
            }
            if off == 0x70 || off == 0x78 {
                // PROPBASER, PENDBASER: no LPIs.
                return 0;
            }
            if !size_ok(size) {
                self.stats.bad_size += 1;
                return 0;
            }
            if let Some(v) = id_reg(off) {
                return v;
            }
            return match off {
                0x00 | 0x10 => 0,
                0x04 => IIDR,
                0x14 => {
                    let s = self.redists.get(vcpu).is_some_and(|r| r.processor_sleep);
                    if s {
                        0b110
                    } else {
                        0
                    }
                }
                _ => {
                    self.stats.bad_offset += 1;
                    0
                }
            };
        }
        match self.bank_read(vcpu, off - SGI_BASE, size, 0, 32) {
            Some(v) => v,
            None => {
                self.stats.bad_offset += 1;
                0
            }
        }
    }

    /// A redistributor write.
    pub fn gicr_write(&mut self, offset: u64, size: u8, value: u64) -> Kick {
        let vcpu = (offset / GICR_FRAME_SIZE) as usize;
        let off = offset % GICR_FRAME_SIZE;
        if vcpu >= self.redists.len() {
            self.stats.bad_offset += 1;
            return Kick::default();
        }
        if off < SGI_BASE {
            match off {
                0x14 if size_ok(size) => {
                    if let Some(r) = self.redists.get_mut(vcpu) {
                        r.processor_sleep = value & 2 != 0;
                    }
                }
                0x00 | 0x70 | 0x78 | 0x7c | 0x74 => {}
                _ => self.stats.ro_writes += 1,
            }
            return Kick::default();
        }
        // ICFGR0 (SGIs) is read-only.
        if off - SGI_BASE == 0xc00 {
            self.stats.ro_writes += 1;
            return Kick::default();
        }
        match self.bank_write(vcpu, off - SGI_BASE, size, value, 0, 32) {
            Some(k) => k,
            None => {
                self.stats.bad_offset += 1;
                Kick::default()
            }
        }
    }
}

mod mbi;
pub use mbi::{
    MbiRange, GICD_CLRSPI_NSR, GICD_CLRSPI_SR, GICD_SETSPI_NSR, GICD_SETSPI_SR, TYPER_LPIS,
    TYPER_MBIS,
};

#[cfg(test)]
mod tests;

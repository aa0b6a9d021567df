//! The host SMMUv3s, owned by the hypervisor: every stream aborts unless the
//! hypervisor gave it a stage-2 (an assigned device's DMA confined to its
//! guest's RAM) or a bypass (the hypervisor's own devices).
//!
//! Encodings come from `arch_emu::smmu` (IHI 0070); this module does the MMIO,
//! the memory (heap, identity-mapped: a virtual address is the physical one)
//! and the ordering. Boot: [`init`] after the EL2 MMU and the physical GIC are
//! up. Use: [`with`] an SMMU index ([`platform::Platform::smmu_stream`] gives
//! it with the StreamID), then [`Smmu::new_stage2`] + [`SmmuStage2::mirror`] +
//! [`Smmu::set_stage2`]; [`handle_irq`] from the interrupt path.
// The configuration API is called by passthrough and `handle_irq` by the
// interrupt path (exits.rs), both wired by their owners.
#![allow(dead_code)]

use alloc::alloc::{alloc_zeroed, Layout};
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use arch_emu::addr::{Ipa, MemRange, Pa};
use arch_emu::smmu::{
    self as enc, cr0, cr1, cr2, gbpa, gerror, idr0, idr1, idr5, irq_ctrl, queue, reg, S2Params,
    StreamTable,
};
use arch_emu::stage2::{S2Attr, S2Error};

use crate::mmu::HeapTables;
use crate::sysreg::{clean_dcache_range, dsb_sy};

/// Faults a stream may raise before the driver turns it to abort.
pub const FAULT_LIMIT: u32 = 16;
/// Bounded register polls (CR0ACK, GBPA.UPDATE, IRQ_CTRLACK, CMD_SYNC).
const POLL_LIMIT: u32 = 1_000_000;
/// Largest linear stream table: 2^10 STEs (64 KiB), when two-level is not offered.
const MAX_LINEAR_LOG2: u32 = 10;
/// Command queue: 2^8 entries of 16 bytes (4 KiB), or less if IDR1.CMDQS says.
const CMDQ_LOG2: u32 = 8;
/// Event queue: 2^7 entries of 32 bytes (4 KiB), or less if IDR1.EVENTQS says.
const EVTQ_LOG2: u32 = 7;
/// The widest IPA the SMMU stage-2 uses (as `arch_emu::stage2`: 32..=40 bits).
const MAX_IPA_BITS: u32 = 40;

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmmuError {
    /// A register never acknowledged a write (its name).
    NoAck(&'static str),
    /// No heap memory for a table or queue.
    OutOfMemory,
    /// The SMMU cannot do what was asked (why).
    Unsupported(&'static str),
    /// The StreamID is beyond the stream table.
    StreamOutOfRange(u32),
    /// A stage-2 STE was refused (see `arch_emu::smmu::SteError`).
    BadSte(enc::SteError),
    /// Building the SMMU's stage-2 tables failed.
    Stage2(S2Error),
    /// A command was refused: CMDQ_CONS.ERR.
    Command(u32),
}

impl core::fmt::Display for SmmuError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SmmuError::NoAck(r) => write!(f, "{r} never acknowledged the write"),
            SmmuError::OutOfMemory => write!(f, "out of heap memory for SMMU tables or queues"),
            SmmuError::Unsupported(w) => write!(f, "unsupported: {w}"),
            SmmuError::StreamOutOfRange(s) => write!(f, "StreamID {s:#x} beyond the stream table"),
            SmmuError::BadSte(e) => write!(f, "stage-2 STE refused: {e:?}"),
            SmmuError::Stage2(e) => write!(f, "SMMU stage-2 tables: {e}"),
            SmmuError::Command(e) => write!(f, "command refused, CMDQ_CONS.ERR {e:#x}"),
        }
    }
}

fn rd32(a: usize) -> u32 {
    // SAFETY: `a` is inside the SMMU's 128 KiB register frame named by the host DT,
    // identity-mapped as Device memory by `mmu::El2Tables`.
    unsafe { core::ptr::read_volatile(a as *const u32) }
}
fn wr32(a: usize, v: u32) {
    // SAFETY: as for `rd32`.
    unsafe { core::ptr::write_volatile(a as *mut u32, v) }
}
fn wr64(a: usize, v: u64) {
    // SAFETY: as for `rd32`; the 64-bit registers written (STRTAB_BASE, CMDQ_BASE,
    // EVENTQ_BASE) accept 64-bit single-copy-atomic accesses (IHI 0070 6.2).
    unsafe { core::ptr::write_volatile(a as *mut u64, v) }
}

/// Zeroed heap memory of `bytes` (rounded up to 64), aligned to its size; its
/// address is its physical address. Never freed (owned by the SMMU for good).
fn alloc_table(bytes: u64) -> Result<usize, SmmuError> {
    let size = usize::try_from(bytes.max(64))
        .ok()
        .and_then(|s| s.checked_next_power_of_two())
        .ok_or(SmmuError::OutOfMemory)?;
    let layout = Layout::from_size_align(size, size).map_err(|_| SmmuError::OutOfMemory)?;
    // SAFETY: the layout has a non-zero size.
    let p = unsafe { alloc_zeroed(layout) };
    if p.is_null() {
        return Err(SmmuError::OutOfMemory);
    }
    Ok(p as usize)
}

/// Writes the 64-bit word `i` of the table at `base`.
fn put(base: usize, i: usize, v: u64) {
    // SAFETY: `base` is a table or queue from `alloc_table`, `i` within its size
    // (the callers index it by the layout they allocated it for).
    unsafe { (base as *mut u64).add(i).write_volatile(v) }
}

/// Reads the 64-bit word `i` of the table at `base`.
fn get(base: usize, i: usize) -> u64 {
    // SAFETY: as for `put`.
    unsafe { (base as *const u64).add(i).read_volatile() }
}

/// Invalidates (cleaning first) the data cache over a range the SMMU wrote,
/// for an SMMU that is not coherent.
fn invalidate_dcache_range(start: usize, len: usize) {
    let mut a = start & !63;
    while a < start.saturating_add(len) {
        // SAFETY: DC CIVAC on a mapped heap address only cleans and invalidates a line.
        unsafe { core::arch::asm!("dc civac, {}", in(reg) a, options(nostack)) };
        a += 64;
    }
    dsb_sy();
}

/// One host SMMUv3.
pub struct Smmu {
    /// Its DT node's path.
    pub node: String,
    base: usize,
    coherent: bool,
    irqs: platform::SmmuIrqs,
    table: StreamTable,
    /// The stream table (linear STEs, or level-1 descriptors).
    strtab: usize,
    /// Level-2 tables by level-1 index (0: none yet; the descriptor is invalid).
    l2: Vec<usize>,
    cmdq: usize,
    cmdq_log2: u32,
    cmdq_prod: u32,
    evtq: usize,
    evtq_log2: u32,
    /// IDR0.S2P.
    s2p: bool,
    /// IDR0.VMID16.
    vmid16: bool,
    /// IDR5.OAS (the PS encoding).
    oas: u32,
    /// Faults counted per StreamID by `drain_events`.
    faults: BTreeMap<u32, u32>,
    /// Global errors seen (GERROR ^ GERRORN, acknowledged).
    pub gerrors: u32,
}

impl Smmu {
    fn cr0_set(&self, v: u32) -> Result<(), SmmuError> {
        wr32(self.base + reg::SMMU_CR0, v);
        for _ in 0..POLL_LIMIT {
            if rd32(self.base + reg::SMMU_CR0ACK) == v {
                return Ok(());
            }
            core::hint::spin_loop();
        }
        Err(SmmuError::NoAck("SMMU_CR0ACK"))
    }

    /// Resets and enables the SMMU at `s` (IHI 0070 3.21 "Initialization"):
    /// abort while disabled (GBPA), everything off, tables and queues, then
    /// CMDQEN, invalidation of all cached configuration and TLBs, EVENTQEN,
    /// interrupts, SMMUEN. Every StreamID aborts afterwards.
    fn init(s: &platform::Smmuv3) -> Result<Smmu, SmmuError> {
        let base = s.regs.base as usize;
        if s.regs.size < 0x2_0000 {
            return Err(SmmuError::Unsupported(
                "register frame smaller than 128 KiB",
            ));
        }
        let i0 = rd32(base + reg::SMMU_IDR0);
        let i1 = rd32(base + reg::SMMU_IDR1);
        let i5 = rd32(base + reg::SMMU_IDR5);
        if idr0::ttendian(i0) == 0b11 {
            return Err(SmmuError::Unsupported("big-endian tables only"));
        }
        if i1 & (idr1::TABLES_PRESET | idr1::QUEUES_PRESET) != 0 {
            return Err(SmmuError::Unsupported("preset table or queue bases"));
        }
        let coherent = s.dma_coherent && i0 & idr0::COHACC != 0;
        let table = StreamTable::choose(i0, i1, MAX_LINEAR_LOG2);
        let strtab = alloc_table(table.base_bytes().ok_or(SmmuError::OutOfMemory)?)?;
        let l1_count = match table {
            StreamTable::Linear { .. } => 0,
            StreamTable::TwoLevel { log2size, split } => 1usize << (log2size - split),
        };
        let cmdq_log2 = CMDQ_LOG2.min(idr1::cmdqs(i1));
        let evtq_log2 = EVTQ_LOG2.min(idr1::eventqs(i1));
        let cmdq = alloc_table((enc::CMD_BYTES as u64) << cmdq_log2)?;
        let evtq = alloc_table((enc::EVENT_BYTES as u64) << evtq_log2)?;
        let mut smmu = Smmu {
            node: s.node.clone(),
            base,
            coherent,
            irqs: s.irqs,
            table,
            strtab,
            l2: alloc::vec![0; l1_count],
            cmdq,
            cmdq_log2,
            cmdq_prod: 0,
            evtq,
            evtq_log2,
            s2p: i0 & idr0::S2P != 0,
            vmid16: i0 & idr0::VMID16 != 0,
            oas: idr5::oas(i5),
            faults: BTreeMap::new(),
            gerrors: 0,
        };
        if !coherent {
            clean_dcache_range(strtab, table.base_bytes().unwrap_or(0) as usize);
        }

        // Abort while disabled, then disable.
        wr32(base + reg::SMMU_GBPA, gbpa::UPDATE | gbpa::ABORT);
        if !(0..POLL_LIMIT).any(|_| rd32(base + reg::SMMU_GBPA) & gbpa::UPDATE == 0) {
            return Err(SmmuError::NoAck("SMMU_GBPA.UPDATE"));
        }
        smmu.cr0_set(0)?;
        wr32(base + reg::SMMU_IRQ_CTRL, 0);
        if !(0..POLL_LIMIT).any(|_| rd32(base + reg::SMMU_IRQ_CTRLACK) == 0) {
            return Err(SmmuError::NoAck("SMMU_IRQ_CTRLACK"));
        }
        // Acknowledge stale global errors.
        wr32(base + reg::SMMU_GERRORN, rd32(base + reg::SMMU_GERROR));

        let (c, sh) = if coherent {
            (cr1::WB, cr1::ISH)
        } else {
            (cr1::NC, cr1::OSH)
        };
        wr32(base + reg::SMMU_CR1, cr1::value(c, sh));
        // Record C_BAD_STREAMID; private TLB maintenance (the CPU's broadcast TLBIs
        // for its own VMIDs do not reach the SMMU's TLBs).
        wr32(base + reg::SMMU_CR2, cr2::RECINVSID | cr2::PTM);
        wr64(
            base + reg::SMMU_STRTAB_BASE,
            enc::strtab_base(strtab as u64),
        );
        wr32(base + reg::SMMU_STRTAB_BASE_CFG, table.base_cfg());
        wr64(
            base + reg::SMMU_CMDQ_BASE,
            enc::queue_base(cmdq as u64, cmdq_log2),
        );
        wr32(base + reg::SMMU_CMDQ_PROD, 0);
        wr32(base + reg::SMMU_CMDQ_CONS, 0);
        wr64(
            base + reg::SMMU_EVENTQ_BASE,
            enc::queue_base(evtq as u64, evtq_log2),
        );
        wr32(base + reg::SMMU_EVENTQ_PROD, 0);
        wr32(base + reg::SMMU_EVENTQ_CONS, 0);
        dsb_sy();

        smmu.cr0_set(cr0::CMDQEN)?;
        smmu.command(enc::cmd_cfgi_all())?;
        smmu.command(enc::cmd_tlbi_nsnh_all())?;
        smmu.sync()?;
        smmu.cr0_set(cr0::CMDQEN | cr0::EVENTQEN)?;
        let irqen = irq_ctrl::GERROR_IRQEN | irq_ctrl::EVENTQ_IRQEN;
        wr32(base + reg::SMMU_IRQ_CTRL, irqen);
        if !(0..POLL_LIMIT).any(|_| rd32(base + reg::SMMU_IRQ_CTRLACK) == irqen) {
            return Err(SmmuError::NoAck("SMMU_IRQ_CTRLACK"));
        }
        smmu.cr0_set(cr0::CMDQEN | cr0::EVENTQEN | cr0::SMMUEN)?;
        smmu.check_gerror();
        Ok(smmu)
    }

    /// Queues one command, waiting (bounded) while the queue is full.
    fn command(&mut self, cmd: [u64; 2]) -> Result<(), SmmuError> {
        let log2 = self.cmdq_log2;
        let mut n = 0;
        while queue::is_full(self.cmdq_prod, rd32(self.base + reg::SMMU_CMDQ_CONS), log2) {
            n += 1;
            if n > POLL_LIMIT {
                return Err(SmmuError::NoAck("SMMU_CMDQ_CONS"));
            }
            core::hint::spin_loop();
        }
        let i = queue::index(self.cmdq_prod, log2) as usize * 2;
        put(self.cmdq, i, cmd[0]);
        put(self.cmdq, i + 1, cmd[1]);
        if !self.coherent {
            clean_dcache_range(self.cmdq + i * 8, enc::CMD_BYTES);
        }
        dsb_sy();
        self.cmdq_prod = queue::next(self.cmdq_prod, log2);
        wr32(self.base + reg::SMMU_CMDQ_PROD, self.cmdq_prod);
        Ok(())
    }

    /// Queues CMD_SYNC and waits (bounded) until the SMMU consumed it: every
    /// earlier command has completed. A refused command (GERROR.CMDQ_ERR) is
    /// replaced by a CMD_SYNC so the queue moves on, and reported.
    fn sync(&mut self) -> Result<(), SmmuError> {
        let at = self.cmdq_prod;
        self.command(enc::cmd_sync())?;
        let log2 = self.cmdq_log2;
        for _ in 0..POLL_LIMIT {
            let cons = rd32(self.base + reg::SMMU_CMDQ_CONS);
            if queue::consumed(at, cons, log2) {
                return Ok(());
            }
            let active = rd32(self.base + reg::SMMU_GERROR) ^ rd32(self.base + reg::SMMU_GERRORN);
            if active & gerror::CMDQ_ERR != 0 {
                let err = enc::cmdq_cons_err(cons);
                let i = queue::index(cons, log2) as usize * 2;
                let [a, b] = enc::cmd_sync();
                put(self.cmdq, i, a);
                put(self.cmdq, i + 1, b);
                if !self.coherent {
                    clean_dcache_range(self.cmdq + i * 8, enc::CMD_BYTES);
                }
                dsb_sy();
                wr32(
                    self.base + reg::SMMU_GERRORN,
                    rd32(self.base + reg::SMMU_GERRORN) ^ gerror::CMDQ_ERR,
                );
                log::error!(
                    "SMMUv3 {}: command refused, CMDQ_CONS.ERR {err:#x}",
                    self.node
                );
                return Err(SmmuError::Command(err));
            }
            core::hint::spin_loop();
        }
        Err(SmmuError::NoAck("CMD_SYNC"))
    }

    /// The address of `sid`'s STE, creating its level-2 table if needed.
    fn ste_addr(&mut self, sid: u32) -> Result<usize, SmmuError> {
        let (l1, i) = self
            .table
            .index(sid)
            .ok_or(SmmuError::StreamOutOfRange(sid))?;
        match self.table {
            StreamTable::Linear { .. } => Ok(self.strtab + i * enc::STE_BYTES),
            StreamTable::TwoLevel { .. } => {
                let cur = *self.l2.get(l1).ok_or(SmmuError::StreamOutOfRange(sid))?;
                if cur != 0 {
                    return Ok(cur + i * enc::STE_BYTES);
                }
                let bytes = self.table.l2_bytes().ok_or(SmmuError::OutOfMemory)?;
                let l2 = alloc_table(bytes)?;
                // A zeroed STE is invalid: the other streams of this level-2 table
                // are still stopped (C_BAD_STE instead of C_BAD_STREAMID).
                if !self.coherent {
                    clean_dcache_range(l2, bytes as usize);
                }
                if let Some(slot) = self.l2.get_mut(l1) {
                    *slot = l2;
                }
                put(self.strtab, l1, self.table.l1_descriptor(l2 as u64));
                if !self.coherent {
                    clean_dcache_range(self.strtab + l1 * 8, 8);
                }
                dsb_sy();
                // Level-1 descriptors may be cached too: invalidate them all.
                self.command(enc::cmd_cfgi_all())?;
                self.sync()?;
                Ok(l2 + i * enc::STE_BYTES)
            }
        }
    }

    /// Writes `sid`'s STE (IHI 0070 3.21.3 "Configuration structure update
    /// procedure"): abort first (word 0 only, a configuration that reads no
    /// other word), invalidate, then words 1..7, then word 0, invalidate.
    fn write_ste(&mut self, sid: u32, ste: [u64; 8]) -> Result<(), SmmuError> {
        let at = self.ste_addr(sid)?;
        let publish = |smmu: &mut Smmu, from: usize, to: usize| -> Result<(), SmmuError> {
            if !smmu.coherent {
                clean_dcache_range(at + from * 8, (to - from) * 8);
            }
            dsb_sy();
            smmu.command(enc::cmd_cfgi_ste(sid))?;
            smmu.sync()
        };
        put(at, 0, enc::ste_abort()[0]);
        publish(self, 0, 1)?;
        for (k, w) in ste.iter().enumerate().skip(1) {
            put(at, k, *w);
        }
        dsb_sy();
        put(at, 0, ste[0]);
        publish(self, 0, 8)
    }

    /// Confines stream `sid` to the stage-2 tables at `ttb` (their VTCR_EL2-style
    /// parameters `vtcr`, as `SmmuStage2::vtcr` gives) under `vmid`: a
    /// stage-2-only STE (Config 0b110), then CFGI_STE + SYNC and a TLB
    /// invalidation of `vmid`. Errors: no stage 2 on this SMMU, a VMID wider than
    /// it has, a StreamID beyond the table, parameters the STE refuses, or a
    /// non-coherent SMMU (its walks would miss the CPU-cached tables).
    pub fn set_stage2(
        &mut self,
        sid: u32,
        vmid: u16,
        ttb: u64,
        vtcr: u64,
    ) -> Result<(), SmmuError> {
        if !self.s2p {
            return Err(SmmuError::Unsupported(
                "no stage-2 translation (IDR0.S2P = 0)",
            ));
        }
        if !self.coherent {
            return Err(SmmuError::Unsupported("stage 2 on a non-coherent SMMU"));
        }
        if !self.vmid16 && vmid > 0xff {
            return Err(SmmuError::Unsupported("16-bit VMIDs (IDR0.VMID16 = 0)"));
        }
        if (vtcr >> 16) & 7 > u64::from(self.oas) {
            return Err(SmmuError::Unsupported("S2PS beyond IDR5.OAS"));
        }
        let ste = enc::ste_stage2(&S2Params { vmid, vtcr, ttb }).map_err(SmmuError::BadSte)?;
        self.write_ste(sid, ste)?;
        self.invalidate_vmid(vmid)?;
        self.faults.remove(&sid);
        log::debug!(
            "SMMUv3 {}: stream {sid:#x} stage 2 at {ttb:#x}, VMID {vmid}",
            self.node
        );
        Ok(())
    }

    /// Lets stream `sid` through untranslated (the hypervisor's own devices),
    /// then CFGI_STE + SYNC.
    pub fn set_bypass(&mut self, sid: u32) -> Result<(), SmmuError> {
        self.write_ste(sid, enc::ste_bypass())?;
        self.faults.remove(&sid);
        Ok(())
    }

    /// Aborts every transaction of stream `sid`, then CFGI_STE + SYNC.
    pub fn set_abort(&mut self, sid: u32) -> Result<(), SmmuError> {
        self.write_ste(sid, enc::ste_abort())
    }

    /// Invalidates the SMMU's TLB entries of `vmid` (after unmapping from its
    /// stage-2 tables): CMD_TLBI_S12_VMALL + SYNC.
    pub fn invalidate_vmid(&mut self, vmid: u16) -> Result<(), SmmuError> {
        self.command(enc::cmd_tlbi_s12_vmall(vmid))?;
        self.sync()
    }

    /// Empty stage-2 tables this SMMU can walk: IPA of min(CPU stage-2 IPA,
    /// IDR5.OAS, 40) bits, PS = min(PARange, OAS).
    pub fn new_stage2(&self) -> Result<SmmuStage2, SmmuError> {
        let ipa_bits = crate::mmu::pa_bits()
            .min(idr5::oas_bits(self.oas))
            .clamp(32, MAX_IPA_BITS);
        let tables =
            arch_emu::stage2::Stage2::new(&mut HeapTables, ipa_bits).map_err(SmmuError::Stage2)?;
        let ps = u64::from(self.oas).min(crate::mmu::pa_range());
        Ok(SmmuStage2 { tables, ps })
    }

    /// Reads every pending event record: logs it with its StreamID and
    /// address, counts it against its stream, and turns a stream that reached
    /// [`FAULT_LIMIT`] faults to abort (saying so). Returns the records read.
    pub fn drain_events(&mut self) -> usize {
        let log2 = self.evtq_log2;
        let mut cons = rd32(self.base + reg::SMMU_EVENTQ_CONS);
        let mut read = 0;
        let mut to_abort = Vec::new();
        // Bounded: at most a queue's worth per call.
        for _ in 0..(1u32 << log2) {
            let prod = rd32(self.base + reg::SMMU_EVENTQ_PROD);
            if queue::is_empty(prod, cons, log2) {
                break;
            }
            let i = queue::index(cons, log2) as usize * 4;
            if !self.coherent {
                invalidate_dcache_range(self.evtq + i * 8, enc::EVENT_BYTES);
            }
            let w = [
                get(self.evtq, i),
                get(self.evtq, i + 1),
                get(self.evtq, i + 2),
                get(self.evtq, i + 3),
            ];
            let e = enc::decode_event(&w);
            let n = self.faults.entry(e.sid).or_insert(0);
            *n = n.saturating_add(1);
            if *n <= FAULT_LIMIT {
                log::warn!(
                    "SMMUv3 {}: {} stream {:#x}{}{}{}",
                    self.node,
                    e.kind.name(),
                    e.sid,
                    match e.input_addr {
                        Some(a) =>
                            alloc::format!(" {} {a:#x}", if e.read { "read" } else { "write" }),
                        None => String::new(),
                    },
                    e.ipa
                        .map_or(String::new(), |a| alloc::format!(" IPA {a:#x}")),
                    e.fetch_addr
                        .map_or(String::new(), |a| alloc::format!(" fetch {a:#x}")),
                );
            }
            if *n == FAULT_LIMIT {
                to_abort.push(e.sid);
            }
            // OVACKFLG follows OVFLG: acknowledges an overflow (records were lost).
            cons = queue::next(cons, log2) | (prod & (1 << 31));
            wr32(self.base + reg::SMMU_EVENTQ_CONS, cons);
            read += 1;
        }
        for sid in to_abort {
            match self.set_abort(sid) {
                Ok(()) => log::warn!(
                    "SMMUv3 {}: stream {sid:#x} faulted {FAULT_LIMIT} times: it aborts from now on",
                    self.node
                ),
                Err(e) => log::error!("SMMUv3 {}: stream {sid:#x}: {e}", self.node),
            }
        }
        read
    }

    /// Faults counted for stream `sid` since it was last configured.
    pub fn faults(&self, sid: u32) -> u32 {
        self.faults.get(&sid).copied().unwrap_or(0)
    }

    /// Logs and acknowledges active global errors (GERROR ^ GERRORN); returns them.
    pub fn check_gerror(&mut self) -> u32 {
        let g = rd32(self.base + reg::SMMU_GERROR);
        let n = rd32(self.base + reg::SMMU_GERRORN);
        let active = (g ^ n) & gerror::ALL;
        if active != 0 {
            for name in gerror::names(active) {
                log::error!("SMMUv3 {}: GERROR {name}", self.node);
            }
            self.gerrors |= active;
            wr32(self.base + reg::SMMU_GERRORN, n ^ active);
        }
        active
    }

    fn owns(&self, intid: u32) -> bool {
        let i = &self.irqs;
        [i.eventq, i.gerror, i.combined]
            .iter()
            .flatten()
            .any(|irq| irq.intid == intid)
    }
}

/// Stage-2 tables for an SMMU (guest RAM only), built by `arch_emu::stage2`
/// over heap pages like the CPU's (`mmu::Stage2`): 4 KiB granule, start at
/// level 1, every descriptor with AF set (the SMMU does not set it).
pub struct SmmuStage2 {
    tables: arch_emu::stage2::Stage2,
    ps: u64,
}

impl SmmuStage2 {
    /// Maps `[ipa, ipa + size)` to `[pa, pa + size)` as Normal memory (bytes,
    /// 4 KiB aligned). Errors as `arch_emu::stage2::Stage2::map`.
    pub fn map(&mut self, guest: MemRange<Ipa>, pa: Pa) -> Result<(), SmmuError> {
        self.tables
            .map(&mut HeapTables, guest.base, pa, guest.size, S2Attr::Normal)
            .map_err(SmmuError::Stage2)?;
        dsb_sy();
        Ok(())
    }

    /// Maps what the CPU's stage 2 maps in `[ipa, ipa + size)` (a guest's RAM),
    /// the same IPA to the same PA, in runs of contiguous pages. Unmapped pages
    /// stay unmapped.
    pub fn mirror(
        &mut self,
        cpu: &crate::mmu::Stage2,
        guest: MemRange<Ipa>,
    ) -> Result<(), SmmuError> {
        const PAGE: u64 = 4096;
        let (ipa, size) = (guest.base.0, guest.size);
        let end = ipa
            .checked_add(size)
            .ok_or(SmmuError::Stage2(S2Error::OutOfRange(ipa)))?;
        let mut run: Option<(u64, u64, u64)> = None; // (ipa, pa, len)
        let mut a = ipa & !(PAGE - 1);
        while a < end {
            let pa = cpu.translate(Ipa(a)).map(|p| p.0);
            run = match (run, pa) {
                (Some((ri, rp, rl)), Some(p)) if rp + rl == p => Some((ri, rp, rl + PAGE)),
                (r, p) => {
                    if let Some((ri, rp, rl)) = r {
                        self.map(MemRange::new(Ipa(ri), rl), Pa(rp))?;
                    }
                    p.map(|p| (a, p, PAGE))
                }
            };
            a += PAGE;
        }
        if let Some((ri, rp, rl)) = run {
            self.map(MemRange::new(Ipa(ri), rl), Pa(rp))?;
        }
        Ok(())
    }

    /// Maps `[ipa, ipa + size)` to `[pa, pa + size)` as Device memory (an
    /// MSI doorbell).
    pub fn map_device(&mut self, guest: MemRange<Ipa>, pa: Pa) -> Result<(), SmmuError> {
        self.tables
            .map(&mut HeapTables, guest.base, pa, guest.size, S2Attr::Device)
            .map_err(SmmuError::Stage2)?;
        dsb_sy();
        Ok(())
    }

    /// The PA `ipa` translates to, or `None`.
    pub fn translate(&self, ipa: Ipa) -> Option<Pa> {
        self.tables.translate(&HeapTables, ipa).map(|(pa, _)| pa)
    }

    /// The root table's physical address (STE.S2TTB).
    pub fn root(&self) -> u64 {
        self.tables.root()
    }

    /// VTCR_EL2-style parameters of these tables for [`Smmu::set_stage2`]: T0SZ,
    /// SL0 = level 1, write-back inner-shareable walks, 4 KiB granule, PS.
    pub fn vtcr(&self) -> u64 {
        self.tables.vtcr(self.ps)
    }
}

/// The host's SMMUs, in `Platform::smmus` order (those that failed to come
/// up are absent: the boot stopped).
static SMMUS: spin::Once<Vec<spin::Mutex<Smmu>>> = spin::Once::new();

/// The SMMU stage-2 tables streams point at: kept for as long as the STEs
/// do (the life of the hypervisor).
static CONFINED: spin::Mutex<Vec<SmmuStage2>> = spin::Mutex::new(Vec::new());

/// Confines stream `sid` of SMMU `index` to guest RAM: SMMU stage-2 tables
/// of its own mapping `ram` as the CPU's stage 2 `cpu` maps it, plus, with
/// `doorbell`, that 4 KiB page (the host ITS's GITS_TRANSLATER page) at
/// IPA = PA as Device memory for this stream only (and nothing else), under
/// `vmid`. Errors name what the SMMU refused.
pub fn confine(
    index: usize,
    sid: u32,
    vmid: u16,
    cpu: &crate::mmu::Stage2,
    ram: MemRange<Ipa>,
    doorbell: Option<Pa>,
) -> Result<(), String> {
    let r = with(index, |s| -> Result<SmmuStage2, SmmuError> {
        let mut t = s.new_stage2()?;
        t.mirror(cpu, ram)?;
        if let Some(d) = doorbell {
            let page = d.0 & !0xfff;
            t.map_device(MemRange::new(Ipa(page), 0x1000), Pa(page))?;
        }
        s.set_stage2(sid, vmid, t.root(), t.vtcr())?;
        Ok(t)
    })
    .ok_or_else(|| alloc::format!("no SMMU #{index}"))?;
    let t = r.map_err(|e| alloc::format!("{e}"))?;
    CONFINED.lock().push(t);
    Ok(())
}

/// Runs `f` on SMMU `index` (an index into `Platform::smmus`), `None` if there
/// is no such SMMU.
pub fn with<R>(index: usize, f: impl FnOnce(&mut Smmu) -> R) -> Option<R> {
    SMMUS.get()?.get(index).map(|m| f(&mut m.lock()))
}

/// Number of SMMUs the hypervisor owns.
pub fn count() -> usize {
    SMMUS.get().map_or(0, Vec::len)
}

/// Takes every SMMUv3 of the host (boot CPU, once, after the EL2 MMU is on
/// and the distributor is set up): all streams abort; their event and global
/// error interrupts are enabled on this CPU. A failure stops the boot with a
/// fatal error naming the SMMU. Logs one line per SMMU; nothing without one.
///
/// With `smmu-selftest` in the hypervisor's bootargs, each SMMU then takes
/// its highest StreamID through a stage-2 STE (one 2 MiB block), a bypass
/// STE and back to abort, and the boot stops if a command or GERROR says no.
pub fn init(plat: &platform::Platform, gic: &crate::gic::Gic) {
    let selftest = plat
        .bootargs
        .as_deref()
        .is_some_and(|b| b.split_whitespace().any(|a| a == "smmu-selftest"));
    let mut all = Vec::new();
    for s in &plat.smmus {
        let smmu = match Smmu::init(s) {
            Ok(m) => m,
            Err(e) => crate::exits::fatal(&alloc::format!("SMMUv3 {}: {e}", s.node)),
        };
        let kind = match smmu.table {
            StreamTable::Linear { .. } => "linear",
            StreamTable::TwoLevel { .. } => "2-level",
        };
        log::info!(
            "SMMUv3 {}: {kind} stream table, SIDSIZE {}, enabled",
            s.node,
            smmu.table.log2size()
        );
        if !smmu.s2p {
            log::warn!(
                "SMMUv3 {}: no stage-2 translation (IDR0.S2P = 0): DMA of assigned devices cannot be confined",
                s.node
            );
        }
        if !smmu.coherent {
            log::warn!("SMMUv3 {}: not DMA-coherent: stage 2 refused", s.node);
        }
        let me = crate::sysreg::mpidr_affinity();
        for irq in [s.irqs.eventq, s.irqs.gerror, s.irqs.combined]
            .into_iter()
            .flatten()
        {
            gic.set_spi_edge(irq.intid, irq.trigger == platform::Trigger::Edge);
            gic.enable_spi(irq.intid, me);
        }
        let mut smmu = smmu;
        if selftest {
            match self_test(&mut smmu) {
                Ok(sid) => log::info!(
                    "SMMUv3 {}: self-test: stage-2, bypass and abort STEs of stream {sid:#x} accepted",
                    s.node
                ),
                Err(e) => crate::exits::fatal(&alloc::format!("SMMUv3 {}: self-test: {e}", s.node)),
            }
        }
        all.push(spin::Mutex::new(smmu));
    }
    if !all.is_empty() {
        SMMUS.call_once(|| all);
    }
}

/// The boot self-test (`smmu-selftest`): returns the StreamID it used.
fn self_test(smmu: &mut Smmu) -> Result<u32, SmmuError> {
    let sid = (1u64 << smmu.table.log2size()).saturating_sub(1) as u32;
    if smmu.s2p && smmu.coherent {
        let mut s2 = smmu.new_stage2()?;
        // Never used for DMA: the stream has no device and ends as abort.
        s2.map(MemRange::new(Ipa(0x8000_0000), 2 << 20), Pa(0x4000_0000))?;
        if s2.translate(Ipa(0x8012_3000)) != Some(Pa(0x4012_3000)) {
            return Err(SmmuError::Unsupported("stage-2 tables do not translate"));
        }
        smmu.set_stage2(sid, 1, s2.root(), s2.vtcr())?;
    }
    smmu.set_bypass(sid)?;
    smmu.set_abort(sid)?;
    if smmu.check_gerror() != 0 {
        return Err(SmmuError::Unsupported("GERROR during the self-test"));
    }
    Ok(sid)
}

/// For the interrupt path: if `intid` is an SMMU's event queue, global error
/// or combined interrupt, drains its events and checks GERROR, and returns
/// `true`; `false` for any other INTID. Call it between `gic::eoi(intid)`
/// and `gic::deactivate(intid)` (the interrupts are edge-triggered: nothing
/// stays asserted).
pub fn handle_irq(intid: u32) -> bool {
    let Some(all) = SMMUS.get() else {
        return false;
    };
    let mut mine = false;
    for m in all {
        let mut s = m.lock();
        if s.owns(intid) {
            mine = true;
            s.check_gerror();
            s.drain_events();
        }
    }
    mine
}

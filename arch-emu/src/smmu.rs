//! SMMUv3 encodings as pure code: register offsets and fields, stream table
//! entries and layout, commands, event records and queue index arithmetic.
//!
//! Names and layouts are those of the Arm System Memory Management Unit
//! Architecture Specification, SMMU architecture version 3 (IHI 0070, G.b):
//! chapter 6 (registers), 5.2 (STE), 4 (commands), 7.3 (event records),
//! 3.5 (queues). The hypervisor's driver (`hypervisor/src/smmu.rs`) does the
//! MMIO and memory; everything here is tested on the host.

/// Register offsets from the SMMU base (IHI 0070 6.2). Page 1 starts 64 KiB in.
pub mod reg {
    /// Feature identification 0 (32-bit).
    pub const SMMU_IDR0: usize = 0x0000;
    /// Feature identification 1.
    pub const SMMU_IDR1: usize = 0x0004;
    /// Feature identification 5.
    pub const SMMU_IDR5: usize = 0x0014;
    /// Global control 0.
    pub const SMMU_CR0: usize = 0x0020;
    /// Acknowledges CR0 changes.
    pub const SMMU_CR0ACK: usize = 0x0024;
    /// Global control 1 (table and queue memory attributes).
    pub const SMMU_CR1: usize = 0x0028;
    /// Global control 2.
    pub const SMMU_CR2: usize = 0x002c;
    /// Global bypass attributes.
    pub const SMMU_GBPA: usize = 0x0044;
    /// Interrupt enables.
    pub const SMMU_IRQ_CTRL: usize = 0x0050;
    /// Acknowledges IRQ_CTRL changes.
    pub const SMMU_IRQ_CTRLACK: usize = 0x0054;
    /// Global errors (active where it differs from GERRORN).
    pub const SMMU_GERROR: usize = 0x0060;
    /// Global errors acknowledged (written by software to toggle).
    pub const SMMU_GERRORN: usize = 0x0064;
    /// Stream table base (64-bit).
    pub const SMMU_STRTAB_BASE: usize = 0x0080;
    /// Stream table format and size.
    pub const SMMU_STRTAB_BASE_CFG: usize = 0x0088;
    /// Command queue base (64-bit).
    pub const SMMU_CMDQ_BASE: usize = 0x0090;
    /// Command queue producer index.
    pub const SMMU_CMDQ_PROD: usize = 0x0098;
    /// Command queue consumer index (and error).
    pub const SMMU_CMDQ_CONS: usize = 0x009c;
    /// Event queue base (64-bit).
    pub const SMMU_EVENTQ_BASE: usize = 0x00a0;
    /// Page 1 offset from the base.
    pub const PAGE1: usize = 0x1_0000;
    /// Event queue producer index (page 1).
    pub const SMMU_EVENTQ_PROD: usize = PAGE1 + 0x00a8;
    /// Event queue consumer index (page 1).
    pub const SMMU_EVENTQ_CONS: usize = PAGE1 + 0x00ac;
}

/// SMMU_IDR0 fields (6.3.1).
pub mod idr0 {
    /// Stage-2 translation supported.
    pub const S2P: u32 = 1 << 0;
    /// Stage-1 translation supported.
    pub const S1P: u32 = 1 << 1;
    /// Coherent access to tables and queues supported.
    pub const COHACC: u32 = 1 << 4;
    /// 16-bit VMIDs supported.
    pub const VMID16: u32 = 1 << 18;
    /// ST_LEVEL, bits 28:27: 0b00 linear only, 0b01 two-level supported.
    pub fn st_level(idr0: u32) -> u32 {
        (idr0 >> 27) & 3
    }
    /// TTENDIAN, bits 22:21: 0b00 mixed, 0b10 little-endian only, 0b11 big only.
    pub fn ttendian(idr0: u32) -> u32 {
        (idr0 >> 21) & 3
    }
}

/// SMMU_IDR1 fields (6.3.2).
pub mod idr1 {
    /// SIDSIZE, bits 5:0: StreamID width in bits.
    pub fn sidsize(idr1: u32) -> u32 {
        idr1 & 0x3f
    }
    /// EVENTQS, bits 20:16: log2 of the largest event queue, in entries.
    pub fn eventqs(idr1: u32) -> u32 {
        (idr1 >> 16) & 0x1f
    }
    /// CMDQS, bits 25:21: log2 of the largest command queue, in entries.
    pub fn cmdqs(idr1: u32) -> u32 {
        (idr1 >> 21) & 0x1f
    }
    /// TABLES_PRESET: the stream table base is fixed.
    pub const TABLES_PRESET: u32 = 1 << 30;
    /// QUEUES_PRESET: the queue bases are fixed.
    pub const QUEUES_PRESET: u32 = 1 << 29;
}

/// SMMU_IDR5 fields (6.3.6).
pub mod idr5 {
    /// GRAN4K: 4 KiB translation granule supported.
    pub const GRAN4K: u32 = 1 << 4;
    /// OAS, bits 2:0 (0b000 32 bits .. 0b101 48, 0b110 52), the same
    /// encoding as ID_AA64MMFR0_EL1.PARange and STE.S2PS.
    pub fn oas(idr5: u32) -> u32 {
        idr5 & 7
    }
    /// The output address size in bits for an OAS (or PS) encoding.
    pub fn oas_bits(oas: u32) -> u32 {
        match oas {
            0 => 32,
            1 => 36,
            2 => 40,
            3 => 42,
            4 => 44,
            5 => 48,
            _ => 52,
        }
    }
}

/// SMMU_CR0 / SMMU_CR0ACK fields (6.3.9).
pub mod cr0 {
    /// SMMU enable (translation of incoming transactions).
    pub const SMMUEN: u32 = 1 << 0;
    /// PRI queue enable.
    pub const PRIQEN: u32 = 1 << 1;
    /// Event queue enable.
    pub const EVENTQEN: u32 = 1 << 2;
    /// Command queue enable.
    pub const CMDQEN: u32 = 1 << 3;
}

/// SMMU_CR1 fields (6.3.11): cacheability and shareability of the SMMU's own
/// accesses to tables (STEs, CDs) and queues.
pub mod cr1 {
    /// Non-cacheable (IC/OC fields).
    pub const NC: u32 = 0b00;
    /// Write-back cacheable (IC/OC fields).
    pub const WB: u32 = 0b01;
    /// Inner shareable (SH fields).
    pub const ISH: u32 = 0b11;
    /// Outer shareable (SH fields).
    pub const OSH: u32 = 0b10;
    /// CR1 for cacheability `c` (inner and outer) and shareability `sh`, the
    /// same for tables and queues: QUEUE_IC 1:0, QUEUE_OC 3:2, QUEUE_SH 5:4,
    /// TABLE_IC 7:6, TABLE_OC 9:8, TABLE_SH 11:10.
    pub fn value(c: u32, sh: u32) -> u32 {
        let one = (c & 3) | ((c & 3) << 2) | ((sh & 3) << 4);
        one | (one << 6)
    }
}

/// SMMU_CR2 fields (6.3.12).
pub mod cr2 {
    /// E2H: 0, EL2 (not EL2&0) translation regime for stage 1 (unused here).
    pub const E2H: u32 = 1 << 0;
    /// RECINVSID: record C_BAD_STREAMID events.
    pub const RECINVSID: u32 = 1 << 1;
    /// PTM: private TLB maintenance (broadcast TLBI ignored).
    pub const PTM: u32 = 1 << 2;
}

/// SMMU_GBPA fields (6.3.14): what happens to transactions while SMMUEN is 0.
pub mod gbpa {
    /// UPDATE: set with a new value; cleared by the SMMU when it took effect.
    pub const UPDATE: u32 = 1 << 31;
    /// ABORT: abort (rather than bypass) every transaction.
    pub const ABORT: u32 = 1 << 20;
}

/// SMMU_IRQ_CTRL fields (6.3.15).
pub mod irq_ctrl {
    /// Global error interrupt enable.
    pub const GERROR_IRQEN: u32 = 1 << 0;
    /// PRI queue interrupt enable.
    pub const PRIQ_IRQEN: u32 = 1 << 1;
    /// Event queue interrupt enable.
    pub const EVENTQ_IRQEN: u32 = 1 << 2;
}

/// SMMU_GERROR / GERRORN bits (6.3.17): an error is active while its bit
/// differs between the two registers.
pub mod gerror {
    /// A command could not be consumed (CMDQ_CONS.ERR says why).
    pub const CMDQ_ERR: u32 = 1 << 0;
    /// An event queue write aborted.
    pub const EVENTQ_ABT_ERR: u32 = 1 << 2;
    /// A PRI queue write aborted.
    pub const PRIQ_ABT_ERR: u32 = 1 << 3;
    /// A CMD_SYNC MSI write aborted.
    pub const MSI_CMDQ_ABT_ERR: u32 = 1 << 4;
    /// An event queue MSI write aborted.
    pub const MSI_EVENTQ_ABT_ERR: u32 = 1 << 5;
    /// A PRI queue MSI write aborted.
    pub const MSI_PRIQ_ABT_ERR: u32 = 1 << 6;
    /// A GERROR MSI write aborted.
    pub const MSI_GERROR_ABT_ERR: u32 = 1 << 7;
    /// The SMMU entered Service Failure Mode.
    pub const SFM_ERR: u32 = 1 << 8;
    /// Bits that name an error (the others are RES0).
    pub const ALL: u32 = 0x1fd;

    /// Names of the active bits of `active` (GERROR ^ GERRORN), for logs.
    pub fn names(active: u32) -> impl Iterator<Item = &'static str> {
        const N: [(u32, &str); 8] = [
            (CMDQ_ERR, "CMDQ_ERR"),
            (EVENTQ_ABT_ERR, "EVENTQ_ABT_ERR"),
            (PRIQ_ABT_ERR, "PRIQ_ABT_ERR"),
            (MSI_CMDQ_ABT_ERR, "MSI_CMDQ_ABT_ERR"),
            (MSI_EVENTQ_ABT_ERR, "MSI_EVENTQ_ABT_ERR"),
            (MSI_PRIQ_ABT_ERR, "MSI_PRIQ_ABT_ERR"),
            (MSI_GERROR_ABT_ERR, "MSI_GERROR_ABT_ERR"),
            (SFM_ERR, "SFM_ERR"),
        ];
        N.into_iter()
            .filter(move |(b, _)| active & b != 0)
            .map(|(_, n)| n)
    }
}

/// Physical addresses in tables and base registers: bits 51:0.
const PA_MASK: u64 = (1 << 52) - 1;

/// SMMU_STRTAB_BASE (6.3.23): ADDR 51:6 (64-byte aligned at least, and to the
/// table's size), RA (read-allocate hint) bit 62.
pub fn strtab_base(pa: u64) -> u64 {
    (pa & PA_MASK & !0x3f) | (1 << 62)
}

/// SMMU_CMDQ_BASE (6.3.25) / SMMU_EVENTQ_BASE (6.3.28): ADDR 51:5,
/// LOG2SIZE 4:0 (entries), RA/WA hint bit 62. The queue is aligned to its
/// size in bytes (at least 32).
pub fn queue_base(pa: u64, log2size: u32) -> u64 {
    (pa & PA_MASK & !0x1f) | u64::from(log2size & 0x1f) | (1 << 62)
}

/// Bytes of a stream table entry.
pub const STE_BYTES: usize = 64;
/// Bytes of a command.
pub const CMD_BYTES: usize = 16;
/// Bytes of an event record.
pub const EVENT_BYTES: usize = 32;
/// The SPLIT the hypervisor uses for two-level stream tables: 2^8 STEs
/// (16 KiB) per level-2 table.
pub const SPLIT: u32 = 8;

/// How the stream table is laid out (5.2, 6.3.24 SMMU_STRTAB_BASE_CFG).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamTable {
    /// One array of 2^`log2size` STEs.
    Linear {
        /// log2 of the number of STEs (StreamIDs covered).
        log2size: u32,
    },
    /// 2^(`log2size` - `split`) level-1 descriptors, each pointing to an array
    /// of 2^`split` STEs.
    TwoLevel {
        /// log2 of the number of StreamIDs covered.
        log2size: u32,
        /// StreamID bits indexing a level-2 table.
        split: u32,
    },
}

impl StreamTable {
    /// The layout for an SMMU's SMMU_IDR0/IDR1: two-level with [`SPLIT`]
    /// when IDR0.ST_LEVEL says it is supported and IDR1.SIDSIZE exceeds
    /// SPLIT, else linear. A linear table covers at most 2^`max_linear_log2`
    /// StreamIDs (a larger SIDSIZE on an SMMU without two-level support
    /// leaves the upper StreamIDs out of range: C_BAD_STREAMID, aborted).
    pub fn choose(idr0: u32, idr1: u32, max_linear_log2: u32) -> StreamTable {
        let sidsize = idr1::sidsize(idr1).min(32);
        if idr0::st_level(idr0) == 1 && sidsize > SPLIT {
            StreamTable::TwoLevel {
                log2size: sidsize,
                split: SPLIT,
            }
        } else {
            StreamTable::Linear {
                log2size: sidsize.min(max_linear_log2),
            }
        }
    }

    /// log2 of the number of StreamIDs the table covers.
    pub fn log2size(&self) -> u32 {
        match *self {
            StreamTable::Linear { log2size } | StreamTable::TwoLevel { log2size, .. } => log2size,
        }
    }

    /// SMMU_STRTAB_BASE_CFG: LOG2SIZE 5:0, SPLIT 10:6, FMT 17:16 (0b00 linear,
    /// 0b01 two-level).
    pub fn base_cfg(&self) -> u32 {
        match *self {
            StreamTable::Linear { log2size } => log2size & 0x3f,
            StreamTable::TwoLevel { log2size, split } => {
                (log2size & 0x3f) | ((split & 0x1f) << 6) | (1 << 16)
            }
        }
    }

    /// Bytes of the table STRTAB_BASE points at (the linear STE array, or the
    /// level-1 descriptors), `None` on overflow. Allocate it aligned to its size.
    pub fn base_bytes(&self) -> Option<u64> {
        match *self {
            StreamTable::Linear { log2size } => {
                1u64.checked_shl(log2size)?.checked_mul(STE_BYTES as u64)
            }
            StreamTable::TwoLevel { log2size, split } => 1u64
                .checked_shl(log2size.checked_sub(split)?)?
                .checked_mul(8),
        }
    }

    /// Bytes of one level-2 table (two-level only), aligned to its size.
    pub fn l2_bytes(&self) -> Option<u64> {
        match *self {
            StreamTable::Linear { .. } => None,
            StreamTable::TwoLevel { split, .. } => {
                1u64.checked_shl(split)?.checked_mul(STE_BYTES as u64)
            }
        }
    }

    /// Whether `sid` is inside the table.
    pub fn covers(&self, sid: u32) -> bool {
        u64::from(sid) >> self.log2size() == 0
    }

    /// Where `sid`'s STE is: `(level-1 index, index in the level-2 table)` for
    /// a two-level table, `(0, index)` for a linear one; `None` outside.
    pub fn index(&self, sid: u32) -> Option<(usize, usize)> {
        if !self.covers(sid) {
            return None;
        }
        Some(match *self {
            StreamTable::Linear { .. } => (0, sid as usize),
            StreamTable::TwoLevel { split, .. } => {
                ((sid >> split) as usize, (sid & ((1 << split) - 1)) as usize)
            }
        })
    }

    /// A level-1 descriptor (5.1.2): SPAN 4:0 (= SPLIT + 1: the level-2 table
    /// holds 2^SPLIT STEs), L2Ptr 51:6. SPAN 0 (the zero descriptor) means
    /// invalid: every StreamID under it is C_BAD_STREAMID.
    pub fn l1_descriptor(&self, l2_pa: u64) -> u64 {
        match *self {
            StreamTable::Linear { .. } => 0,
            StreamTable::TwoLevel { split, .. } => {
                (l2_pa & PA_MASK & !0x3f) | u64::from((split + 1) & 0x1f)
            }
        }
    }
}

/// STE.Config values (5.2, word 0 bits 3:1).
pub mod ste_config {
    /// Abort all transactions (no event recorded).
    pub const ABORT: u64 = 0b000;
    /// Bypass both stages.
    pub const BYPASS: u64 = 0b100;
    /// Stage 1 bypass, stage 2 translates.
    pub const S2_TRANS: u64 = 0b110;
}

/// STE.V (word 0 bit 0).
const STE_V: u64 = 1;
/// STE word 1 SHCFG (bits 45:44) = 0b01: use the incoming shareability.
const STE_SHCFG_INCOMING: u64 = 0b01 << 44;

/// A valid STE that aborts every transaction of the stream (Config 0b000).
/// An all-zero STE (V = 0) also stops the stream but records C_BAD_STE.
pub fn ste_abort() -> [u64; 8] {
    [STE_V | (ste_config::ABORT << 1), 0, 0, 0, 0, 0, 0, 0]
}

/// A valid STE that passes the stream through untranslated (Config 0b100),
/// with its incoming shareability (SHCFG = 0b01).
pub fn ste_bypass() -> [u64; 8] {
    [
        STE_V | (ste_config::BYPASS << 1),
        STE_SHCFG_INCOMING,
        0,
        0,
        0,
        0,
        0,
        0,
    ]
}

/// Stage-2 parameters of an STE, taken from a VTCR_EL2 value so that the
/// SMMU walks tables built for the CPU's stage 2 the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct S2Params {
    /// S2VMID (tags the SMMU's TLB entries; CMD_TLBI_S12_VMALL names it).
    pub vmid: u16,
    /// VTCR_EL2 layout: T0SZ 5:0, SL0 7:6, IRGN0 9:8, ORGN0 11:10, SH0 13:12,
    /// TG0 15:14, PS 18:16.
    pub vtcr: u64,
    /// The root table's physical address (S2TTB), aligned to the root's size.
    pub ttb: u64,
}

/// Why a stage-2 STE was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SteError {
    /// VTCR TG0 is not 4 KiB (the only granule supported here).
    Granule,
    /// T0SZ outside 16..=32 for a level-1 or level-2 start with 4 KiB pages,
    /// or SL0 not level 1 or 2.
    Geometry,
    /// S2TTB is not 4 KiB aligned or beyond 52 bits.
    Ttb(u64),
}

/// A valid stage-2-only STE (Config 0b110) for `p` (5.2): word 2 S2VMID
/// 15:0, S2T0SZ 37:32, S2SL0 39:38, S2IR0 41:40, S2OR0 43:42, S2SH0 45:44,
/// S2TG 47:46 (0b00: 4 KiB), S2PS 50:48, S2AA64 51 (= 1: VMSAv8-64 tables),
/// S2PTW 54, S2R 58 (record faults); word 3 S2TTB 51:4. S2AFFD (53) = 0:
/// the descriptors must have AF set (the SMMU does not update it, and S2HA
/// is off). Word 1 SHCFG = incoming.
pub fn ste_stage2(p: &S2Params) -> Result<[u64; 8], SteError> {
    let v = p.vtcr;
    let t0sz = v & 0x3f;
    let sl0 = (v >> 6) & 3;
    let irgn0 = (v >> 8) & 3;
    let orgn0 = (v >> 10) & 3;
    let sh0 = (v >> 12) & 3;
    let tg0 = (v >> 14) & 3;
    let ps = (v >> 16) & 7;
    if tg0 != 0 {
        return Err(SteError::Granule);
    }
    // 4 KiB granule (Arm ARM D8.2.6): SL0 = 1 starts at level 1 (T0SZ 16..=33,
    // with concatenation), SL0 = 0 at level 2 (T0SZ 25..=33).
    let geometry_ok = match sl0 {
        1 => (16..=33).contains(&t0sz),
        0 => (25..=33).contains(&t0sz),
        _ => false,
    };
    if !geometry_ok {
        return Err(SteError::Geometry);
    }
    if p.ttb & 0xfff != 0 || p.ttb & !PA_MASK != 0 {
        return Err(SteError::Ttb(p.ttb));
    }
    let w2 = u64::from(p.vmid)
        | (t0sz << 32)
        | (sl0 << 38)
        | (irgn0 << 40)
        | (orgn0 << 42)
        | (sh0 << 44)
        | (ps << 48)
        | (1 << 51) // S2AA64
        | (1 << 54) // S2PTW
        | (1 << 58); // S2R
    Ok([
        STE_V | (ste_config::S2_TRANS << 1),
        STE_SHCFG_INCOMING,
        w2,
        p.ttb & PA_MASK & !0xf,
        0,
        0,
        0,
        0,
    ])
}

/// Command opcodes (4.1, word 0 bits 7:0).
pub mod opcode {
    /// Invalidate cached configuration of one StreamID.
    pub const CMD_CFGI_STE: u64 = 0x03;
    /// Invalidate cached configuration of every StreamID.
    pub const CMD_CFGI_ALL: u64 = 0x04;
    /// Invalidate stage-1 and stage-2 TLB entries of one VMID.
    pub const CMD_TLBI_S12_VMALL: u64 = 0x28;
    /// Invalidate every non-secure, non-hypervisor TLB entry.
    pub const CMD_TLBI_NSNH_ALL: u64 = 0x30;
    /// Completes when every earlier command has.
    pub const CMD_SYNC: u64 = 0x46;
}

/// CMD_CFGI_STE (4.3.2): StreamID 63:32 of word 0; Leaf (word 1 bit 0) = 1:
/// only the STE itself (not level-1 descriptors) changed.
pub fn cmd_cfgi_ste(sid: u32) -> [u64; 2] {
    [opcode::CMD_CFGI_STE | (u64::from(sid) << 32), 1]
}

/// CMD_CFGI_ALL (4.3.3): CMD_CFGI_STE_RANGE with Range (word 1 bits 4:0) = 31.
pub fn cmd_cfgi_all() -> [u64; 2] {
    [opcode::CMD_CFGI_ALL, 31]
}

/// CMD_TLBI_S12_VMALL (4.4.6): VMID 47:32 of word 0.
pub fn cmd_tlbi_s12_vmall(vmid: u16) -> [u64; 2] {
    [opcode::CMD_TLBI_S12_VMALL | (u64::from(vmid) << 32), 0]
}

/// CMD_TLBI_NSNH_ALL (4.4.2).
pub fn cmd_tlbi_nsnh_all() -> [u64; 2] {
    [opcode::CMD_TLBI_NSNH_ALL, 0]
}

/// CMD_SYNC (4.7.3) with CS (word 0 bits 13:12) = SIG_NONE: software polls
/// CMDQ_CONS until it passes the command.
pub fn cmd_sync() -> [u64; 2] {
    [opcode::CMD_SYNC, 0]
}

/// SMMU_CMDQ_CONS.ERR (bits 30:24, 6.3.27): why the command at CONS was refused.
pub fn cmdq_cons_err(cons: u32) -> u32 {
    (cons >> 24) & 0x7f
}

/// Event record types (7.3, word 0 bits 7:0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// 0x01: unsupported upstream transaction.
    FUut,
    /// 0x02: StreamID out of range of the stream table.
    CBadStreamid,
    /// 0x03: an external abort fetching an STE.
    FSteFetch,
    /// 0x04: an invalid or ill-formed STE.
    CBadSte,
    /// 0x05: a bad ATS translation request.
    FBadAtsTreq,
    /// 0x06: a non-substream transaction to a stream with S1DSS = 0b00.
    FStreamDisabled,
    /// 0x07: a translation request on a bypassed stream.
    FTranslForbidden,
    /// 0x08: SubstreamID out of range.
    CBadSubstreamid,
    /// 0x09: an external abort fetching a CD.
    FCdFetch,
    /// 0x0a: an invalid or ill-formed CD.
    CBadCd,
    /// 0x0b: an external abort on a table walk.
    FWalkEabt,
    /// 0x10: translation fault (no valid descriptor).
    FTranslation,
    /// 0x11: address size fault (input or output beyond the sizes configured).
    FAddrSize,
    /// 0x12: access flag fault.
    FAccess,
    /// 0x13: permission fault.
    FPermission,
    /// 0x20: TLB conflict.
    FTlbConflict,
    /// 0x21: configuration cache conflict.
    FCfgConflict,
    /// 0x24: a page request (PRI) event.
    EPageRequest,
    /// 0x25: an external abort fetching a VMS.
    FVmsFetch,
    /// Any other value (IMPLEMENTATION DEFINED 0xe0..=0xef, or reserved).
    Other(u8),
}

impl EventType {
    /// From word 0 bits 7:0.
    pub fn from_code(c: u8) -> EventType {
        match c {
            0x01 => EventType::FUut,
            0x02 => EventType::CBadStreamid,
            0x03 => EventType::FSteFetch,
            0x04 => EventType::CBadSte,
            0x05 => EventType::FBadAtsTreq,
            0x06 => EventType::FStreamDisabled,
            0x07 => EventType::FTranslForbidden,
            0x08 => EventType::CBadSubstreamid,
            0x09 => EventType::FCdFetch,
            0x0a => EventType::CBadCd,
            0x0b => EventType::FWalkEabt,
            0x10 => EventType::FTranslation,
            0x11 => EventType::FAddrSize,
            0x12 => EventType::FAccess,
            0x13 => EventType::FPermission,
            0x20 => EventType::FTlbConflict,
            0x21 => EventType::FCfgConflict,
            0x24 => EventType::EPageRequest,
            0x25 => EventType::FVmsFetch,
            c => EventType::Other(c),
        }
    }

    /// The spec's name (`F_TRANSLATION`), for logs.
    pub fn name(&self) -> &'static str {
        match self {
            EventType::FUut => "F_UUT",
            EventType::CBadStreamid => "C_BAD_STREAMID",
            EventType::FSteFetch => "F_STE_FETCH",
            EventType::CBadSte => "C_BAD_STE",
            EventType::FBadAtsTreq => "F_BAD_ATS_TREQ",
            EventType::FStreamDisabled => "F_STREAM_DISABLED",
            EventType::FTranslForbidden => "F_TRANSL_FORBIDDEN",
            EventType::CBadSubstreamid => "C_BAD_SUBSTREAMID",
            EventType::FCdFetch => "F_CD_FETCH",
            EventType::CBadCd => "C_BAD_CD",
            EventType::FWalkEabt => "F_WALK_EABT",
            EventType::FTranslation => "F_TRANSLATION",
            EventType::FAddrSize => "F_ADDR_SIZE",
            EventType::FAccess => "F_ACCESS",
            EventType::FPermission => "F_PERMISSION",
            EventType::FTlbConflict => "F_TLB_CONFLICT",
            EventType::FCfgConflict => "F_CFG_CONFLICT",
            EventType::EPageRequest => "E_PAGE_REQUEST",
            EventType::FVmsFetch => "F_VMS_FETCH",
            EventType::Other(_) => "IMPDEF/reserved",
        }
    }

    /// Whether the record carries a faulting transaction (input address,
    /// RnW, and the IPA when stage 2 faulted): F_TRANSLATION, F_ADDR_SIZE,
    /// F_ACCESS, F_PERMISSION, F_WALK_EABT, F_UUT.
    pub fn is_translation_fault(&self) -> bool {
        matches!(
            self,
            EventType::FTranslation
                | EventType::FAddrSize
                | EventType::FAccess
                | EventType::FPermission
                | EventType::FWalkEabt
                | EventType::FUut
        )
    }
}

/// A decoded event record (7.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// The event type.
    pub kind: EventType,
    /// StreamID (word 0 bits 63:32).
    pub sid: u32,
    /// SubstreamID (word 0 bits 31:12) when SSV (bit 11) is set.
    pub ssid: Option<u32>,
    /// For faults on a transaction: its input address (word 2), else `None`.
    pub input_addr: Option<u64>,
    /// For faults on a transaction: the write (`false`) or read (`true`)
    /// (word 1 bit 35 RnW).
    pub read: bool,
    /// The fault arose at stage 2 (word 1 bit 39 S2).
    pub stage2: bool,
    /// For stage-2 faults: the IPA (word 3 bits 51:12, page-aligned).
    pub ipa: Option<u64>,
    /// For F_STE_FETCH, F_CD_FETCH, F_VMS_FETCH: the fetch address
    /// (word 3 bits 51:3).
    pub fetch_addr: Option<u64>,
}

/// Decodes an event record (four little-endian 64-bit words as read from the
/// queue).
pub fn decode_event(w: &[u64; 4]) -> Event {
    let kind = EventType::from_code((w[0] & 0xff) as u8);
    let fault = kind.is_translation_fault();
    let stage2 = fault && (w[1] >> 39) & 1 != 0;
    let fetch = matches!(
        kind,
        EventType::FSteFetch | EventType::FCdFetch | EventType::FVmsFetch
    );
    Event {
        kind,
        sid: (w[0] >> 32) as u32,
        ssid: ((w[0] >> 11) & 1 != 0).then_some(((w[0] >> 12) & 0xf_ffff) as u32),
        input_addr: fault.then_some(w[2]),
        read: fault && (w[1] >> 35) & 1 != 0,
        stage2,
        ipa: stage2.then_some(w[3] & PA_MASK & !0xfff),
        fetch_addr: fetch.then_some(w[3] & PA_MASK & !0x7),
    }
}

/// Queue indexes (3.5): a PROD or CONS value holds the index in bits
/// `log2size - 1 .. 0` and the wrap bit at `log2size`; bit 31 is a flag
/// (EVENTQ_PROD.OVFLG, EVENTQ_CONS.OVACKFLG, CMDQ_CONS has ERR in 30:24)
/// that these functions ignore.
pub mod queue {
    fn mask(log2size: u32) -> u32 {
        // Index and wrap bit; log2size is at most 19 (IDR1.CMDQS/EVENTQS).
        (2u32 << log2size.min(30)) - 1
    }

    /// The entry number `v` points at.
    pub fn index(v: u32, log2size: u32) -> u32 {
        v & mask(log2size) & !(1 << log2size.min(30))
    }

    /// The value after `v`: index + 1, the wrap bit toggled at the end.
    pub fn next(v: u32, log2size: u32) -> u32 {
        (v & mask(log2size)).wrapping_add(1) & mask(log2size)
    }

    /// No entry between `cons` and `prod`.
    pub fn is_empty(prod: u32, cons: u32, log2size: u32) -> bool {
        prod & mask(log2size) == cons & mask(log2size)
    }

    /// Every entry is in use: same index, different wrap bits.
    pub fn is_full(prod: u32, cons: u32, log2size: u32) -> bool {
        (prod ^ cons) & mask(log2size) == 1 << log2size.min(30)
    }

    /// Whether the consumer has gone past the entry at `at` (produced at
    /// `at`, so `prod` was `next(at)` then): used to wait for a CMD_SYNC.
    /// Valid while fewer than a full queue of entries follow it.
    pub fn consumed(at: u32, cons: u32, log2size: u32) -> bool {
        let m = mask(log2size);
        // Distance from `at` to `cons` in the 2^(log2size+1) wrap space.
        let d = (cons & m).wrapping_sub(at & m) & m;
        d >= 1 && d <= 1 << log2size.min(30)
    }
}

#[cfg(test)]
mod tests;

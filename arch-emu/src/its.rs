//! GICv3 ITS and LPI encodings as pure code: the ITS register fields
//! (GITS_TYPER, GITS_BASER<n>, GITS_CBASER, GITS_CWRITER, GITS_CREADR), the
//! redistributor's LPI registers (GICR_PROPBASER, GICR_PENDBASER), the LPI
//! configuration and pending table sizes, the ITS commands, the DeviceID and
//! EventID range checks, and the command queue's ring arithmetic with its
//! bounded wait.
//!
//! Names, layouts and numbers are those of the Arm Generic Interrupt
//! Controller Architecture Specification, GIC architecture version 3 and
//! version 4 (IHI 0069 H.b): 5.1 (LPIs, their configuration and pending
//! tables), 5.2 (the ITS and its tables), 5.3 (ITS commands), 12.9
//! (GICD_TYPER), 12.11 (GICR_* registers), 12.19 (GITS_* registers). The
//! hypervisor's driver (`hypervisor/src/its.rs`) does the MMIO and memory;
//! everything here is tested on the host.

/// ITS register offsets from the ITS base (IHI 0069 12.19; the
/// translation register is in the second 64 KiB frame).
pub mod reg {
    /// GITS_CTLR (32-bit): Enabled, Quiescent.
    pub const GITS_CTLR: usize = 0x0000;
    /// GITS_IIDR (32-bit).
    pub const GITS_IIDR: usize = 0x0004;
    /// GITS_TYPER (64-bit).
    pub const GITS_TYPER: usize = 0x0008;
    /// GITS_CBASER (64-bit): the command queue.
    pub const GITS_CBASER: usize = 0x0080;
    /// GITS_CWRITER (64-bit): where software writes the next command.
    pub const GITS_CWRITER: usize = 0x0088;
    /// GITS_CREADR (64-bit): where the ITS reads the next command.
    pub const GITS_CREADR: usize = 0x0090;
    /// GITS_BASER<0> (64-bit); GITS_BASER<n> is 8 bytes further per n.
    pub const GITS_BASER0: usize = 0x0100;
    /// Number of GITS_BASER<n> registers.
    pub const GITS_BASER_COUNT: usize = 8;
    /// GITS_TRANSLATER (32-bit, write-only): the doorbell a device's MSI
    /// write reaches, EventID as data, DeviceID from the interconnect.
    pub const GITS_TRANSLATER: u64 = 0x1_0040;
    /// Size of the ITS's register frames (ITS_base and translation frame).
    pub const FRAMES_SIZE: u64 = 0x2_0000;
}

/// GITS_CTLR fields (IHI 0069 12.19.3).
pub mod ctlr {
    /// Enabled, bit 0.
    pub const ENABLED: u32 = 1 << 0;
    /// Quiescent, bit 31: the ITS is idle (no command, no translation in flight).
    pub const QUIESCENT: u32 = 1 << 31;
}

/// Redistributor register offsets for LPIs (RD_base frame, IHI 0069 12.10).
pub mod gicr {
    /// GICR_CTLR (32-bit).
    pub const GICR_CTLR: usize = 0x0000;
    /// GICR_TYPER (64-bit).
    pub const GICR_TYPER: usize = 0x0008;
    /// GICR_PROPBASER (64-bit): the LPI configuration table.
    pub const GICR_PROPBASER: usize = 0x0070;
    /// GICR_PENDBASER (64-bit): this redistributor's LPI pending table.
    pub const GICR_PENDBASER: usize = 0x0078;
    /// GICR_CTLR.EnableLPIs, bit 0.
    pub const CTLR_ENABLE_LPIS: u32 = 1 << 0;
    /// GICR_CTLR.RWP, bit 3: a write of EnableLPIs from 1 to 0 is in progress.
    pub const CTLR_RWP: u32 = 1 << 3;
    /// GICR_TYPER.PLPIS, bit 0: physical LPIs are supported.
    pub const TYPER_PLPIS: u64 = 1 << 0;

    /// GICR_TYPER.Processor_Number, bits 23:8: what MAPC and SYNC name
    /// when GITS_TYPER.PTA = 0.
    pub fn processor_number(typer: u64) -> u16 {
        ((typer >> 8) & 0xffff) as u16
    }
}

/// GICD_TYPER fields about LPIs (IHI 0069 12.9.38).
pub mod gicd_typer {
    /// MBIS, bit 16: message-based SPIs (GICD_SETSPI_NSR) are supported.
    pub const MBIS: u32 = 1 << 16;
    /// LPIS, bit 17: LPIs are supported.
    pub const LPIS: u32 = 1 << 17;

    /// IDbits, bits 23:19, plus one: how many INTID bits the GIC supports.
    pub fn id_bits(typer: u32) -> u32 {
        ((typer >> 19) & 0x1f) + 1
    }
}

/// The first LPI INTID (IHI 0069 2.2.1: LPIs are 8192 and up).
pub const FIRST_LPI: u32 = 8192;
/// INTID bits needed for the first LPI to exist (8192 = 1 << 13).
pub const MIN_LPI_ID_BITS: u32 = 14;

/// Memory attributes of ITS and redistributor tables: the Shareability and
/// InnerCache encodings shared by GITS_BASER<n>, GITS_CBASER,
/// GICR_PROPBASER and GICR_PENDBASER (IHI 0069 12.19.1 and 12.11).
pub mod attr {
    /// Shareability: Non-shareable (the ITS does not snoop CPU caches).
    pub const NON_SHAREABLE: u64 = 0b00;
    /// Shareability: Inner Shareable.
    pub const INNER_SHAREABLE: u64 = 0b01;
    /// InnerCache: Normal Inner Non-cacheable.
    pub const NON_CACHEABLE: u64 = 0b001;
    /// InnerCache: Normal Inner Read-allocate, Write-allocate, Write-back.
    pub const RAWAWB: u64 = 0b111;
}

fn field(v: u64, lo: u32, bits: u32) -> u64 {
    (v >> lo) & ((1u64 << bits) - 1)
}

/// GITS_TYPER, decoded (IHI 0069 12.19.20).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Typer(pub u64);

impl Typer {
    /// Physical, bit 0: physical LPIs are supported.
    pub fn physical(&self) -> bool {
        self.0 & 1 != 0
    }
    /// ITT_entry_size, bits 7:4, plus one: bytes per ITT entry.
    pub fn itt_entry_size(&self) -> u32 {
        field(self.0, 4, 4) as u32 + 1
    }
    /// ID_bits, bits 12:8, plus one: EventID bits the ITS supports.
    pub fn event_id_bits(&self) -> u32 {
        field(self.0, 8, 5) as u32 + 1
    }
    /// Devbits, bits 17:13, plus one: DeviceID bits the ITS supports.
    pub fn device_id_bits(&self) -> u32 {
        field(self.0, 13, 5) as u32 + 1
    }
    /// PTA, bit 19: MAPC and SYNC name a redistributor by physical address
    /// (1) or by GICR_TYPER.Processor_Number (0).
    pub fn pta(&self) -> bool {
        self.0 & (1 << 19) != 0
    }
    /// HCC, bits 31:24: collections held in the ITS without memory.
    pub fn hcc(&self) -> u32 {
        field(self.0, 24, 8) as u32
    }
    /// Collection ID bits: CIDbits (35:32) + 1 when CIL (36) is set, else 16.
    pub fn collection_id_bits(&self) -> u32 {
        if self.0 & (1 << 36) != 0 {
            field(self.0, 32, 4) as u32 + 1
        } else {
            16
        }
    }
}

/// An ITS range check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeError {
    /// The DeviceID needs more bits than GITS_TYPER.Devbits allows.
    DeviceId(u32),
    /// The EventID needs more bits than the device's ITT was sized for.
    EventId(u32),
    /// The ITT would need more EventID bits than GITS_TYPER.ID_bits.
    EventIdBits(u32),
    /// The collection needs more bits than GITS_TYPER.CIDbits.
    CollectionId(u32),
}

impl core::fmt::Display for RangeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RangeError::DeviceId(d) => write!(f, "DeviceID {d:#x} beyond GITS_TYPER.Devbits"),
            RangeError::EventId(e) => write!(f, "EventID {e} beyond the device's ITT"),
            RangeError::EventIdBits(b) => write!(f, "{b} EventID bits beyond GITS_TYPER.ID_bits"),
            RangeError::CollectionId(c) => write!(f, "ICID {c} beyond GITS_TYPER.CIDbits"),
        }
    }
}

/// `value` fits in `bits` bits.
fn fits(value: u32, bits: u32) -> bool {
    bits >= 32 || value < (1u32 << bits)
}

impl Typer {
    /// Checks a DeviceID against Devbits.
    pub fn check_device_id(&self, device_id: u32) -> Result<(), RangeError> {
        if fits(device_id, self.device_id_bits()) {
            Ok(())
        } else {
            Err(RangeError::DeviceId(device_id))
        }
    }

    /// Checks an ICID against the collection ID bits.
    pub fn check_collection(&self, icid: u32) -> Result<(), RangeError> {
        if fits(icid, self.collection_id_bits()) {
            Ok(())
        } else {
            Err(RangeError::CollectionId(icid))
        }
    }

    /// The EventID bits an ITT needs for `events` events (at least 1, as
    /// MAPD's Size field cannot say 0), checked against ID_bits.
    pub fn itt_event_bits(&self, events: u32) -> Result<u32, RangeError> {
        let bits = (32 - events.saturating_sub(1).leading_zeros()).max(1);
        if bits > self.event_id_bits() {
            Err(RangeError::EventIdBits(bits))
        } else {
            Ok(bits)
        }
    }

    /// Bytes of an ITT for `event_bits` EventID bits (5.2.2: one entry per
    /// EventID), at least the 256 bytes its alignment needs.
    pub fn itt_bytes(&self, event_bits: u32) -> u64 {
        ((1u64 << event_bits.min(32)) * u64::from(self.itt_entry_size())).max(ITT_ALIGN)
    }
}

/// Checks `event_id` against an ITT sized for `event_bits` bits.
pub fn check_event_id(event_id: u32, event_bits: u32) -> Result<(), RangeError> {
    if fits(event_id, event_bits) {
        Ok(())
    } else {
        Err(RangeError::EventId(event_id))
    }
}

/// ITTs are 256-byte aligned (MAPD's ITT_addr holds address bits 51:8).
pub const ITT_ALIGN: u64 = 256;

/// What a GITS_BASER<n> holds (its Type field, bits 58:56).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableType {
    /// 0: not implemented.
    Unimplemented,
    /// 1: the Device table.
    Devices,
    /// 2: the vPE table (GICv4).
    Vpes,
    /// 4: the Collection table.
    Collections,
    /// Any other (reserved) value.
    Reserved(u8),
}

/// An ITS table's page size (GITS_BASER<n>.Page_Size, bits 9:8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageSize {
    /// 0b00: 4 KiB.
    K4,
    /// 0b01: 16 KiB.
    K16,
    /// 0b10 (and the reserved 0b11): 64 KiB.
    K64,
}

impl PageSize {
    /// Bytes.
    pub fn bytes(self) -> u64 {
        match self {
            PageSize::K4 => 4 << 10,
            PageSize::K16 => 16 << 10,
            PageSize::K64 => 64 << 10,
        }
    }
    fn code(self) -> u64 {
        match self {
            PageSize::K4 => 0,
            PageSize::K16 => 1,
            PageSize::K64 => 2,
        }
    }
}

/// GITS_BASER<n> (IHI 0069 12.19.1).
pub mod baser {
    use super::{field, PageSize, TableType};

    /// Valid, bit 63.
    pub const VALID: u64 = 1 << 63;
    /// Indirect, bit 62: a two-level table (RAZ/WI where unsupported).
    pub const INDIRECT: u64 = 1 << 62;
    /// Most pages a table may have (Size, bits 7:0, is pages minus one).
    pub const MAX_PAGES: u64 = 256;
    /// A level-1 entry of an indirect table: bit 63 Valid, the level-2
    /// page's address in bits 51:N (5.2.1).
    pub const L1_ENTRY_BYTES: u64 = 8;

    /// Type, bits 58:56.
    pub fn table_type(v: u64) -> TableType {
        match field(v, 56, 3) {
            0 => TableType::Unimplemented,
            1 => TableType::Devices,
            2 => TableType::Vpes,
            4 => TableType::Collections,
            t => TableType::Reserved(t as u8),
        }
    }
    /// Entry_Size, bits 52:48, plus one: bytes per table entry.
    pub fn entry_size(v: u64) -> u64 {
        field(v, 48, 5) + 1
    }
    /// Page_Size, bits 9:8.
    pub fn page_size(v: u64) -> PageSize {
        match field(v, 8, 2) {
            0 => PageSize::K4,
            1 => PageSize::K16,
            _ => PageSize::K64,
        }
    }
    /// Shareability, bits 11:10.
    pub fn shareability(v: u64) -> u64 {
        field(v, 10, 2)
    }

    /// A valid GITS_BASER<n> value: `pa` (page-aligned, below 2^48),
    /// `pages` of `page` size (1..=256), `indirect`, Inner Shareable
    /// write-back memory, with `prev`'s read-only fields (Type, Entry_Size)
    /// kept. Physical_Address is bits 47:12 (with 64 KiB pages, bits 15:12
    /// hold address bits 51:48, zero here).
    pub fn encode(prev: u64, pa: u64, page: PageSize, pages: u64, indirect: bool) -> u64 {
        let keep = prev & ((0x7 << 56) | (0x1f << 48));
        VALID
            | if indirect { INDIRECT } else { 0 }
            | (super::attr::RAWAWB << 59)
            | keep
            | (pa & 0x0000_ffff_ffff_f000)
            | (super::attr::INNER_SHAREABLE << 10)
            | (page.code() << 8)
            | (pages.clamp(1, MAX_PAGES) - 1)
    }
}

/// How a table is laid out once GITS_BASER<n> accepted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TablePlan {
    /// Page size.
    pub page: PageSize,
    /// Pages of the (level-1, when indirect) table.
    pub pages: u64,
    /// Two-level.
    pub indirect: bool,
    /// Entries one level-2 page holds (indirect), or the table (flat).
    pub entries_per_page: u64,
}

/// Sizes a table for IDs of `id_bits` bits with `entry` bytes each: flat
/// if it fits in [`baser::MAX_PAGES`] pages or `indirect` is not offered,
/// else two-level (level 1: 8 bytes per level-2 page). `None` when even
/// that does not fit (the caller then limits the IDs it maps).
pub fn plan_table(id_bits: u32, entry: u64, page: PageSize, indirect: bool) -> Option<TablePlan> {
    let ids = 1u64 << id_bits.min(32);
    let per_page = page.bytes() / entry.max(1);
    let flat_pages = ids.saturating_mul(entry).div_ceil(page.bytes());
    if !indirect || flat_pages <= 1 {
        return Some(TablePlan {
            page,
            pages: flat_pages.clamp(1, baser::MAX_PAGES),
            indirect: false,
            entries_per_page: per_page,
        });
    }
    let l2_pages = ids.div_ceil(per_page);
    let l1_pages = (l2_pages * baser::L1_ENTRY_BYTES).div_ceil(page.bytes());
    (l1_pages <= baser::MAX_PAGES).then_some(TablePlan {
        page,
        pages: l1_pages,
        indirect: true,
        entries_per_page: per_page,
    })
}

impl TablePlan {
    /// How many IDs the table covers.
    pub fn ids(&self) -> u64 {
        let bytes = self.pages * self.page.bytes();
        if self.indirect {
            bytes / baser::L1_ENTRY_BYTES * self.entries_per_page
        } else {
            bytes / (self.page.bytes() / self.entries_per_page)
        }
    }
}

/// GITS_CBASER (IHI 0069 12.19.2): the command queue at `pa` (4 KiB
/// aligned), `pages` 4 KiB pages (1..=256), Inner Shareable write-back.
pub fn cbaser(pa: u64, pages: u64) -> u64 {
    (1 << 63)
        | (attr::RAWAWB << 59)
        | (pa & 0x000f_ffff_ffff_f000)
        | (attr::INNER_SHAREABLE << 10)
        | (pages.clamp(1, 256) - 1)
}

/// GITS_CBASER.Shareability, bits 11:10 (what the ITS accepted).
pub fn cbaser_shareability(v: u64) -> u64 {
    field(v, 10, 2)
}

/// GITS_CREADR (12.19.6): Offset, bits 19:5, in bytes; Stalled, bit 0.
pub mod creadr {
    /// Stalled, bit 0: the command at Offset failed and the ITS stopped.
    pub const STALLED: u64 = 1 << 0;
    /// Offset in bytes (bits 19:5 as a byte offset).
    pub fn offset(v: u64) -> u64 {
        v & 0xf_ffe0
    }
}

/// GITS_CWRITER (12.19.7): the byte offset of the next free slot (bits
/// 19:5); Retry, bit 0, restarts a stalled queue at GITS_CREADR.
pub mod cwriter {
    /// Retry, bit 0.
    pub const RETRY: u64 = 1 << 0;
    /// The register value for byte offset `offset`.
    pub fn encode(offset: u64) -> u64 {
        offset & 0xf_ffe0
    }
}

/// LPI tables (IHI 0069 5.1).
pub mod lpi {
    use super::{attr, FIRST_LPI, MIN_LPI_ID_BITS};

    /// LPI configuration byte: Priority in bits 7:2, bit 1 RES1, Enable bit 0 (5.1.1).
    pub fn config_byte(priority: u8, enable: bool) -> u8 {
        (priority & 0xfc) | 0b10 | u8::from(enable)
    }

    /// The INTID bits the LPI tables are built for: what the hypervisor
    /// wants, no more than GICD_TYPER.IDbits allows, at least 14 (the
    /// first LPI). `None` when the GIC has fewer than 14 bits.
    pub fn id_bits(gicd_id_bits: u32, wanted: u32) -> Option<u32> {
        (gicd_id_bits >= MIN_LPI_ID_BITS).then(|| wanted.clamp(MIN_LPI_ID_BITS, gicd_id_bits))
    }

    /// LPIs the tables cover: INTIDs 8192 .. 2^id_bits.
    pub fn count(id_bits: u32) -> u32 {
        ((1u64 << id_bits.min(32)) - u64::from(FIRST_LPI)) as u32
    }

    /// Bytes of the LPI configuration table: one per LPI (5.1.1, indexed
    /// by INTID - 8192).
    pub fn config_table_bytes(id_bits: u32) -> u64 {
        u64::from(count(id_bits))
    }

    /// Bytes of a pending table: one bit per INTID from 0 (5.1.2; the first
    /// 1 KiB, INTIDs below 8192, is IMPLEMENTATION DEFINED).
    pub fn pending_table_bytes(id_bits: u32) -> u64 {
        (1u64 << id_bits.min(32)) / 8
    }

    /// Pending tables are 64 KiB aligned (GICR_PENDBASER holds bits 51:16).
    pub const PENDING_ALIGN: u64 = 64 << 10;
    /// The configuration table is 4 KiB aligned (GICR_PROPBASER bits 51:12).
    pub const CONFIG_ALIGN: u64 = 4 << 10;

    /// GICR_PROPBASER (12.11.28): the table at `pa`, IDbits = `id_bits` - 1.
    pub fn propbaser(pa: u64, id_bits: u32) -> u64 {
        (pa & 0x000f_ffff_ffff_f000)
            | (attr::INNER_SHAREABLE << 10)
            | (attr::RAWAWB << 7)
            | u64::from(id_bits.saturating_sub(1) & 0x1f)
    }

    /// GICR_PENDBASER (12.11.27): the table at `pa`, PTZ set (the table is
    /// zeroed: nothing pending).
    pub fn pendbaser(pa: u64) -> u64 {
        (1 << 62)
            | (pa & 0x000f_ffff_ffff_0000)
            | (attr::INNER_SHAREABLE << 10)
            | (attr::RAWAWB << 7)
    }

    /// Shareability of a PROPBASER/PENDBASER value, bits 11:10.
    pub fn shareability(v: u64) -> u64 {
        (v >> 10) & 3
    }
}

/// How a command names a redistributor (MAPC's and SYNC's RDbase, bits
/// 51:16 of the third doubleword), per GITS_TYPER.PTA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RdBase {
    /// PTA = 1: the redistributor's physical address (64 KiB aligned).
    Address(u64),
    /// PTA = 0: its GICR_TYPER.Processor_Number.
    Processor(u16),
}

impl RdBase {
    fn field(self) -> u64 {
        match self {
            RdBase::Address(a) => a & 0x000f_ffff_ffff_0000,
            RdBase::Processor(n) => u64::from(n) << 16,
        }
    }
}

/// An ITS command (IHI 0069 5.3): four doublewords, the command number in
/// bits 7:0 of the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// MOVI (0x01): the event's LPI goes to collection `icid`.
    Movi {
        /// DeviceID.
        device_id: u32,
        /// EventID.
        event_id: u32,
        /// The new collection.
        icid: u16,
    },
    /// INT (0x03): makes the event's LPI pending (a software-made MSI).
    Int {
        /// DeviceID.
        device_id: u32,
        /// EventID.
        event_id: u32,
    },
    /// CLEAR (0x04): clears the event's LPI's pending state.
    Clear {
        /// DeviceID.
        device_id: u32,
        /// EventID.
        event_id: u32,
    },
    /// SYNC (0x05): earlier commands' effects are visible at `rd`.
    Sync {
        /// The redistributor.
        rd: RdBase,
    },
    /// MAPD (0x08): the device's ITT (`valid`), or unmapped.
    Mapd {
        /// DeviceID.
        device_id: u32,
        /// ITT address (256-byte aligned).
        itt: u64,
        /// EventID bits the ITT covers (1..=32; the field holds it minus one).
        event_bits: u32,
        /// V: map (true) or unmap.
        valid: bool,
    },
    /// MAPC (0x09): collection `icid` targets `rd` (`valid`), or is unmapped.
    Mapc {
        /// The collection.
        icid: u16,
        /// Its redistributor.
        rd: RdBase,
        /// V.
        valid: bool,
    },
    /// MAPTI (0x0A): the event translates to physical LPI `intid` in
    /// collection `icid`.
    Mapti {
        /// DeviceID.
        device_id: u32,
        /// EventID.
        event_id: u32,
        /// The LPI's INTID (8192 or more).
        intid: u32,
        /// The collection.
        icid: u16,
    },
    /// MAPI (0x0B): as MAPTI with INTID = EventID.
    Mapi {
        /// DeviceID.
        device_id: u32,
        /// EventID (and INTID).
        event_id: u32,
        /// The collection.
        icid: u16,
    },
    /// INV (0x0C): the redistributor re-reads the event's LPI configuration.
    Inv {
        /// DeviceID.
        device_id: u32,
        /// EventID.
        event_id: u32,
    },
    /// INVALL (0x0D): every LPI of collection `icid` is re-read.
    Invall {
        /// The collection.
        icid: u16,
    },
    /// DISCARD (0x0F): the event's mapping is removed and its pending state cleared.
    Discard {
        /// DeviceID.
        device_id: u32,
        /// EventID.
        event_id: u32,
    },
}

/// Bytes per command.
pub const COMMAND_BYTES: u64 = 32;

/// The command numbers (IHI 0069 5.3, table "ITS command numbers").
pub mod number {
    /// MOVI.
    pub const MOVI: u8 = 0x01;
    /// INT.
    pub const INT: u8 = 0x03;
    /// CLEAR.
    pub const CLEAR: u8 = 0x04;
    /// SYNC.
    pub const SYNC: u8 = 0x05;
    /// MAPD.
    pub const MAPD: u8 = 0x08;
    /// MAPC.
    pub const MAPC: u8 = 0x09;
    /// MAPTI.
    pub const MAPTI: u8 = 0x0a;
    /// MAPI.
    pub const MAPI: u8 = 0x0b;
    /// INV.
    pub const INV: u8 = 0x0c;
    /// INVALL.
    pub const INVALL: u8 = 0x0d;
    /// MOVALL.
    pub const MOVALL: u8 = 0x0e;
    /// DISCARD.
    pub const DISCARD: u8 = 0x0f;
}

/// The name of the command whose first doubleword is `dw0` (for errors).
pub fn command_name(dw0: u64) -> &'static str {
    match (dw0 & 0xff) as u8 {
        number::MOVI => "MOVI",
        number::INT => "INT",
        number::CLEAR => "CLEAR",
        number::SYNC => "SYNC",
        number::MAPD => "MAPD",
        number::MAPC => "MAPC",
        number::MAPTI => "MAPTI",
        number::MAPI => "MAPI",
        number::INV => "INV",
        number::INVALL => "INVALL",
        number::MOVALL => "MOVALL",
        number::DISCARD => "DISCARD",
        _ => "an unknown command",
    }
}

/// DW0: command number in bits 7:0, DeviceID in bits 63:32.
fn dw0(cmd: u8, device_id: u32) -> u64 {
    u64::from(cmd) | (u64::from(device_id) << 32)
}

const V: u64 = 1 << 63;

impl Command {
    /// The four doublewords, as the ITS reads them from the queue.
    pub fn encode(&self) -> [u64; 4] {
        use number::*;
        match *self {
            Command::Movi {
                device_id,
                event_id,
                icid,
            } => [
                dw0(MOVI, device_id),
                u64::from(event_id),
                u64::from(icid),
                0,
            ],
            Command::Int {
                device_id,
                event_id,
            } => [dw0(INT, device_id), u64::from(event_id), 0, 0],
            Command::Clear {
                device_id,
                event_id,
            } => [dw0(CLEAR, device_id), u64::from(event_id), 0, 0],
            Command::Sync { rd } => [u64::from(SYNC), 0, rd.field(), 0],
            Command::Mapd {
                device_id,
                itt,
                event_bits,
                valid,
            } => [
                dw0(MAPD, device_id),
                u64::from(event_bits.clamp(1, 32) - 1),
                (itt & 0x000f_ffff_ffff_ff00) | if valid { V } else { 0 },
                0,
            ],
            Command::Mapc { icid, rd, valid } => [
                u64::from(MAPC),
                0,
                u64::from(icid) | rd.field() | if valid { V } else { 0 },
                0,
            ],
            Command::Mapti {
                device_id,
                event_id,
                intid,
                icid,
            } => [
                dw0(MAPTI, device_id),
                u64::from(event_id) | (u64::from(intid) << 32),
                u64::from(icid),
                0,
            ],
            Command::Mapi {
                device_id,
                event_id,
                icid,
            } => [
                dw0(MAPI, device_id),
                u64::from(event_id),
                u64::from(icid),
                0,
            ],
            Command::Inv {
                device_id,
                event_id,
            } => [dw0(INV, device_id), u64::from(event_id), 0, 0],
            Command::Invall { icid } => [u64::from(INVALL), 0, u64::from(icid), 0],
            Command::Discard {
                device_id,
                event_id,
            } => [dw0(DISCARD, device_id), u64::from(event_id), 0, 0],
        }
    }

    /// Its name (IHI 0069 5.3).
    pub fn name(&self) -> &'static str {
        command_name(self.encode()[0])
    }
}

/// Why the command queue did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueError {
    /// GITS_CREADR.Stalled: the ITS refused the command at `offset`.
    Stalled {
        /// Its name.
        command: &'static str,
        /// Its byte offset in the queue.
        offset: u64,
    },
    /// GITS_CREADR did not move for the whole bound.
    NoProgress {
        /// Where it stayed.
        creadr: u64,
        /// Where the commands end.
        cwriter: u64,
    },
    /// GITS_CREADR reads an offset outside the queue or not 32-byte aligned.
    BadReadOffset(u64),
}

impl core::fmt::Display for QueueError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            QueueError::Stalled { command, offset } => write!(
                f,
                "GITS_CREADR.Stalled: the ITS refused {command} at queue offset {offset:#x}"
            ),
            QueueError::NoProgress { creadr, cwriter } => write!(
                f,
                "GITS_CREADR stayed at {creadr:#x} (GITS_CWRITER {cwriter:#x})"
            ),
            QueueError::BadReadOffset(o) => {
                write!(f, "GITS_CREADR offset {o:#x} is outside the queue")
            }
        }
    }
}

/// The command queue's ring: its size and software's write offset
/// (GITS_CWRITER). One slot stays empty so that full and empty differ
/// (12.19.7: the queue is empty when CREADR equals CWRITER).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandRing {
    size: u64,
    write: u64,
}

impl CommandRing {
    /// A ring of `bytes` (a multiple of 4 KiB, 4 KiB..=1 MiB), empty at offset 0.
    pub fn new(bytes: u64) -> CommandRing {
        CommandRing {
            size: bytes.clamp(4096, 1 << 20) & !4095,
            write: 0,
        }
    }

    /// Its size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Where the next command goes.
    pub fn write_offset(&self) -> u64 {
        self.write
    }

    /// Bytes from `from` forward to `to` around the ring.
    fn distance(&self, from: u64, to: u64) -> u64 {
        (to + self.size - from) % self.size
    }

    /// Whether one more command fits while the ITS reads at `read`.
    pub fn has_room(&self, read: u64) -> bool {
        self.distance(self.write, read) != COMMAND_BYTES
    }

    /// Claims the slot at the write offset: returns its offset and moves
    /// the write offset on (the new GITS_CWRITER).
    pub fn push(&mut self) -> u64 {
        let at = self.write;
        self.write = (self.write + COMMAND_BYTES) % self.size;
        at
    }

    /// Whether a read offset is a slot of this ring.
    pub fn valid_offset(&self, read: u64) -> bool {
        read < self.size && read % COMMAND_BYTES == 0
    }

    /// Whether the ITS, having read from `start` to `read`, has consumed
    /// everything up to `target` (the write offset after the commands
    /// waited for). `start` is CREADR when the wait began.
    pub fn consumed(&self, start: u64, read: u64, target: u64) -> bool {
        self.distance(start, read) >= self.distance(start, target)
    }
}

/// Waits, bounded, until the ITS has consumed the queue up to `target`.
///
/// `read_creadr` reads GITS_CREADR; `command_at` names the command at a
/// queue offset (for the error). The bound counts polls without progress:
/// each time CREADR moves the count starts again, so a long queue a slow
/// ITS works through is not an error, while one that stops is, after
/// `max_idle_polls`. A stall (GITS_CREADR.Stalled) is reported at once.
pub fn wait_consumed(
    ring: &CommandRing,
    target: u64,
    mut read_creadr: impl FnMut() -> u64,
    command_at: impl Fn(u64) -> &'static str,
    max_idle_polls: u32,
) -> Result<(), QueueError> {
    let first = read_creadr();
    let start = creadr::offset(first);
    if !ring.valid_offset(start) {
        return Err(QueueError::BadReadOffset(start));
    }
    let mut last = start;
    let mut idle = 0u32;
    let mut v = first;
    loop {
        let read = creadr::offset(v);
        if !ring.valid_offset(read) {
            return Err(QueueError::BadReadOffset(read));
        }
        if v & creadr::STALLED != 0 {
            return Err(QueueError::Stalled {
                command: command_at(read),
                offset: read,
            });
        }
        if ring.consumed(start, read, target) {
            return Ok(());
        }
        if read != last {
            last = read;
            idle = 0;
        } else if idle >= max_idle_polls {
            return Err(QueueError::NoProgress {
                creadr: read,
                cwriter: target,
            });
        }
        idle += 1;
        v = read_creadr();
    }
}

#[cfg(test)]
mod tests;

//! The config-space register model: values, a writable mask and a
//! write-1-to-clear mask, one per byte, plus the capability-chain builder.
//!
//! Every access width and alignment behaves as on hardware because the masks are
//! per byte: a 1-byte write to the upper half of a 16-bit register touches only
//! that byte. Bytes with neither mask bit set are read-only. An access takes
//! its bytes and their masks as one little-endian word (the rule is bitwise,
//! so a word gives what byte after byte would: the tests check it against a
//! byte-wise model); this is the trap path of every config access. Space that no
//! register or capability occupies reads 0: PCI Local Bus 6.1 requires reserved
//! registers to read 0, and PCI Express Base 7.6.1 makes an extended-capability
//! header of 0 at 0x100 mean "no extended capabilities".

use alloc::boxed::Box;

/// Size of one function's config space (PCI Express extended config space).
pub const CONFIG_SPACE_SIZE: usize = 4096;

/// Standard register offsets shared by type-0 and type-1 headers.
pub mod reg {
    /// Vendor ID (16 bits).
    pub const VENDOR_ID: u16 = 0x00;
    /// Device ID (16 bits).
    pub const DEVICE_ID: u16 = 0x02;
    /// Command (16 bits).
    pub const COMMAND: u16 = 0x04;
    /// Status (16 bits).
    pub const STATUS: u16 = 0x06;
    /// Revision ID (8 bits).
    pub const REVISION_ID: u16 = 0x08;
    /// Class code: programming interface (8 bits), sub-class, base class.
    pub const CLASS_PROG_IF: u16 = 0x09;
    /// Cache line size (8 bits).
    pub const CACHE_LINE_SIZE: u16 = 0x0c;
    /// Header type (8 bits).
    pub const HEADER_TYPE: u16 = 0x0e;
    /// Base address register 0.
    pub const BAR0: u16 = 0x10;
    /// Capabilities pointer (8 bits).
    pub const CAPABILITIES_POINTER: u16 = 0x34;
    /// Interrupt line (8 bits).
    pub const INTERRUPT_LINE: u16 = 0x3c;
    /// Interrupt pin (8 bits).
    pub const INTERRUPT_PIN: u16 = 0x3d;
    /// First byte of the extended config space.
    pub const EXTENDED_START: u16 = 0x100;
}

/// Command register bits (PCI Express Base 7.5.1.1.3).
pub mod command {
    /// I/O Space Enable.
    pub const IO_SPACE: u16 = 1 << 0;
    /// Memory Space Enable.
    pub const MEMORY_SPACE: u16 = 1 << 1;
    /// Bus Master Enable.
    pub const BUS_MASTER: u16 = 1 << 2;
    /// Parity Error Response.
    pub const PARITY_ERROR_RESPONSE: u16 = 1 << 6;
    /// SERR# Enable.
    pub const SERR_ENABLE: u16 = 1 << 8;
    /// Interrupt Disable.
    pub const INTERRUPT_DISABLE: u16 = 1 << 10;
}

/// Status register bits (PCI Express Base 7.5.1.1.4).
pub mod status {
    /// Interrupt Status.
    pub const INTERRUPT_STATUS: u16 = 1 << 3;
    /// Capabilities List.
    pub const CAPABILITIES_LIST: u16 = 1 << 4;
    /// Master Data Parity Error (RW1C).
    pub const MASTER_DATA_PARITY_ERROR: u16 = 1 << 8;
    /// Signaled Target Abort (RW1C).
    pub const SIGNALED_TARGET_ABORT: u16 = 1 << 11;
    /// Received Target Abort (RW1C).
    pub const RECEIVED_TARGET_ABORT: u16 = 1 << 12;
    /// Received Master Abort (RW1C).
    pub const RECEIVED_MASTER_ABORT: u16 = 1 << 13;
    /// Signaled System Error (RW1C).
    pub const SIGNALED_SYSTEM_ERROR: u16 = 1 << 14;
    /// Detected Parity Error (RW1C).
    pub const DETECTED_PARITY_ERROR: u16 = 1 << 15;
    /// All RW1C error bits of the Status and Secondary Status registers.
    pub const RW1C_ERRORS: u16 = MASTER_DATA_PARITY_ERROR
        | SIGNALED_TARGET_ABORT
        | RECEIVED_TARGET_ABORT
        | RECEIVED_MASTER_ABORT
        | SIGNALED_SYSTEM_ERROR
        | DETECTED_PARITY_ERROR;
}

/// Type-0 header registers (PCI Express Base 6.0, 7.5.1.2).
pub mod type0 {
    /// Number of BARs of a type-0 header.
    pub const BAR_COUNT: u8 = 6;
    /// CardBus CIS Pointer.
    pub const CARDBUS_CIS: u16 = 0x28;
    /// Subsystem Vendor ID (16 bits).
    pub const SUBSYSTEM_VENDOR_ID: u16 = 0x2c;
    /// Subsystem ID (16 bits).
    pub const SUBSYSTEM_ID: u16 = 0x2e;
    /// Expansion ROM Base Address.
    pub const EXPANSION_ROM: u16 = 0x30;
    /// Min_Gnt (8 bits).
    pub const MIN_GNT: u16 = 0x3e;
    /// Max_Lat (8 bits).
    pub const MAX_LAT: u16 = 0x3f;
}

/// Type-1 header registers (PCI Express Base 6.0, 7.5.1.3).
pub mod type1 {
    /// Number of BARs of a type-1 header.
    pub const BAR_COUNT: u8 = 2;
    /// Primary Bus Number (8 bits; the dword holds Secondary, Subordinate, Secondary Latency Timer).
    pub const PRIMARY_BUS: u16 = 0x18;
    /// Secondary Bus Number.
    pub const SECONDARY_BUS: u16 = 0x19;
    /// Subordinate Bus Number.
    pub const SUBORDINATE_BUS: u16 = 0x1a;
    /// Secondary Latency Timer (8 bits).
    pub const SECONDARY_LATENCY_TIMER: u16 = 0x1b;
    /// I/O Base (8 bits).
    pub const IO_BASE: u16 = 0x1c;
    /// I/O Limit (8 bits).
    pub const IO_LIMIT: u16 = 0x1d;
    /// Secondary Status (16 bits, RW1C error bits).
    pub const SECONDARY_STATUS: u16 = 0x1e;
    /// Memory Base (16 bits).
    pub const MEMORY_BASE: u16 = 0x20;
    /// Memory Limit (16 bits).
    pub const MEMORY_LIMIT: u16 = 0x22;
    /// Prefetchable Memory Base (16 bits).
    pub const PREFETCHABLE_BASE: u16 = 0x24;
    /// Prefetchable Memory Limit (16 bits).
    pub const PREFETCHABLE_LIMIT: u16 = 0x26;
    /// Prefetchable Base Upper 32 Bits.
    pub const PREFETCHABLE_BASE_UPPER: u16 = 0x28;
    /// Prefetchable Limit Upper 32 Bits.
    pub const PREFETCHABLE_LIMIT_UPPER: u16 = 0x2c;
    /// I/O Base Upper 16 Bits.
    pub const IO_BASE_UPPER: u16 = 0x30;
    /// I/O Limit Upper 16 Bits.
    pub const IO_LIMIT_UPPER: u16 = 0x32;
    /// Expansion ROM Base Address (type 1).
    pub const EXPANSION_ROM: u16 = 0x38;
    /// Bridge Control (16 bits).
    pub const BRIDGE_CONTROL: u16 = 0x3e;
    /// Bridge Control: Secondary Bus Reset (7.5.1.3.13).
    pub const SECONDARY_BUS_RESET: u16 = 1 << 6;
}

/// Bridge Control bits (PCI Express Base 6.0, 7.5.1.3.13).
pub mod bridge_control {
    /// Parity Error Response Enable.
    pub const PARITY_ERROR_RESPONSE: u16 = 1 << 0;
    /// SERR# Enable.
    pub const SERR_ENABLE: u16 = 1 << 1;
    /// Secondary Bus Reset.
    pub const SECONDARY_BUS_RESET: u16 = 1 << 6;
}

/// BAR encoding (PCI Express Base 6.0, 7.5.1.2.1).
pub mod bar {
    /// Bit 0: I/O Space indicator.
    pub const IO_SPACE: u32 = 1;
    /// Bits 2:1 of a memory BAR: type (00b 32-bit, 10b 64-bit).
    pub const TYPE_MASK: u32 = 0b110;
    /// Type 10b: 64-bit.
    pub const TYPE_64: u32 = 0b100;
    /// Bit 3 of a memory BAR: Prefetchable.
    pub const PREFETCHABLE: u32 = 1 << 3;
    /// Address bits of a memory BAR.
    pub const MEM_ADDRESS: u32 = !0xf;
    /// Address bits of an I/O BAR.
    pub const IO_ADDRESS: u32 = !0x3;
    /// Address bits of an Expansion ROM BAR (7.5.1.2.4).
    pub const ROM_ADDRESS: u32 = !0x7ff;
    /// Expansion ROM Enable.
    pub const ROM_ENABLE: u32 = 1;
}

/// Capability IDs (PCI Code and ID Assignment 1.11, 2).
pub mod cap_id {
    /// Power Management.
    pub const PM: u8 = 0x01;
    /// MSI.
    pub const MSI: u8 = 0x05;
    /// Vendor specific.
    pub const VENDOR: u8 = 0x09;
    /// PCI Express.
    pub const PCIE: u8 = 0x10;
    /// MSI-X.
    pub const MSIX: u8 = 0x11;
}

/// Extended capability IDs (PCI Code and ID Assignment 1.11, 3).
pub mod ext_cap_id {
    /// The null capability (ID 0000h), a placeholder in a chain.
    pub const NULL: u16 = 0x0000;
    /// Advanced Error Reporting.
    pub const AER: u16 = 0x0001;
    /// Device Serial Number.
    pub const DSN: u16 = 0x0003;
    /// Vendor-Specific Extended Capability.
    pub const VENDOR: u16 = 0x000b;
    /// Access Control Services.
    pub const ACS: u16 = 0x000d;
    /// Alternative Routing-ID Interpretation.
    pub const ARI: u16 = 0x000e;
    /// Single Root I/O Virtualization.
    pub const SRIOV: u16 = 0x0010;
    /// Resizable BAR.
    pub const REBAR: u16 = 0x0015;
}

/// PCI Express Capability registers, relative to the capability (PCI Express Base 6.0, 7.5.3).
pub mod pcie {
    /// PCI Express Capabilities Register (16 bits).
    pub const CAPABILITIES: u16 = 0x02;
    /// Device Capabilities (32 bits).
    pub const DEVICE_CAPABILITIES: u16 = 0x04;
    /// Device Control (16 bits).
    pub const DEVICE_CONTROL: u16 = 0x08;
    /// Device Status (16 bits).
    pub const DEVICE_STATUS: u16 = 0x0a;
    /// Link Capabilities (32 bits).
    pub const LINK_CAPABILITIES: u16 = 0x0c;
    /// Link Control (16 bits).
    pub const LINK_CONTROL: u16 = 0x10;
    /// Link Status (16 bits).
    pub const LINK_STATUS: u16 = 0x12;
    /// Slot Capabilities (32 bits).
    pub const SLOT_CAPABILITIES: u16 = 0x14;
    /// Slot Control (16 bits).
    pub const SLOT_CONTROL: u16 = 0x18;
    /// Slot Status (16 bits).
    pub const SLOT_STATUS: u16 = 0x1a;
    /// Root Control (16 bits).
    pub const ROOT_CONTROL: u16 = 0x1c;
    /// Root Capabilities (16 bits).
    pub const ROOT_CAPABILITIES: u16 = 0x1e;
    /// Root Status (32 bits).
    pub const ROOT_STATUS: u16 = 0x20;
    /// Device Capabilities 2 (32 bits).
    pub const DEVICE_CAPABILITIES2: u16 = 0x24;
    /// Device Control 2 (16 bits).
    pub const DEVICE_CONTROL2: u16 = 0x28;
    /// Device Status 2 (16 bits).
    pub const DEVICE_STATUS2: u16 = 0x2a;
    /// Link Capabilities 2.
    pub const LINK_CAPABILITIES2: u16 = 0x2c;
    /// Link Control 2 (16 bits).
    pub const LINK_CONTROL2: u16 = 0x30;
    /// Link Status 2 (16 bits).
    pub const LINK_STATUS2: u16 = 0x32;
    /// Slot Capabilities 2 (32 bits).
    pub const SLOT_CAPABILITIES2: u16 = 0x34;
    /// Slot Control 2 (16 bits).
    pub const SLOT_CONTROL2: u16 = 0x38;
    /// Slot Status 2 (16 bits).
    pub const SLOT_STATUS2: u16 = 0x3a;
    /// Length of an endpoint's version-2 capability.
    pub const LEN: u16 = 0x3c;
    /// Device Capabilities: Function Level Reset Capability (7.5.3.3).
    pub const DEVCAP_FLR: u32 = 1 << 28;
    /// Device Control: Initiate Function Level Reset (7.5.3.4).
    pub const DEVCTL_INITIATE_FLR: u16 = 1 << 15;
    /// Device Status: the RW1C error-detected bits (7.5.3.5).
    pub const DEVSTA_RW1C: u16 = 0x000f;
    /// Device Status: Transactions Pending (7.5.3.5).
    pub const DEVSTA_TRANSACTIONS_PENDING: u16 = 1 << 5;
    /// Device/Port Type field of the PCI Express Capabilities Register.
    pub const TYPE_SHIFT: u16 = 4;
    /// PCI Express Endpoint.
    pub const TYPE_ENDPOINT: u16 = 0x0;
    /// Root Port of a Root Complex.
    pub const TYPE_ROOT_PORT: u16 = 0x4;
    /// Upstream Port of a Switch.
    pub const TYPE_UPSTREAM: u16 = 0x5;
    /// Downstream Port of a Switch.
    pub const TYPE_DOWNSTREAM: u16 = 0x6;
    /// Root Complex Integrated Endpoint.
    pub const TYPE_RCIEP: u16 = 0x9;
}

/// Power Management Capability registers, relative to the capability (PCI Bus Power Management 1.2, 3.2).
pub mod pm {
    /// Power Management Capabilities (PMC, 16 bits).
    pub const PMC: u16 = 0x02;
    /// Power Management Control/Status (PMCSR, 16 bits).
    pub const PMCSR: u16 = 0x04;
    /// Length of the capability.
    pub const LEN: u16 = 0x08;
}

/// MSI-X Capability registers, relative to the capability (PCI Express Base 6.0, 7.7.2).
pub mod msix {
    /// Message Control (16 bits): Table Size in bits 10:0 (N - 1).
    pub const MESSAGE_CONTROL: u16 = 0x02;
    /// Table Offset/Table BIR.
    pub const TABLE: u16 = 0x04;
    /// PBA Offset/PBA BIR.
    pub const PBA: u16 = 0x08;
    /// Bytes per table entry.
    pub const ENTRY_SIZE: u64 = 16;
}

/// MSI Capability registers, relative to the capability (PCI Local Bus 3.0,
/// 6.8.1; PCI Express Base 6.0, 7.7.1). Where Message Data and the Mask and
/// Pending Bits lie depends on 64 Bit Address Capable (the Message Upper
/// Address register sits between).
pub mod msi {
    /// Message Control (16 bits).
    pub const MESSAGE_CONTROL: u16 = 0x02;
    /// Message Address (32 bits; bits 1:0 are 0, 6.8.1.4).
    pub const MESSAGE_ADDRESS: u16 = 0x04;
    /// Message Upper Address (32 bits), with 64 Bit Address Capable only.
    pub const MESSAGE_UPPER_ADDRESS: u16 = 0x08;
    /// Message Data of a capability with 32-bit addresses (16 bits; the
    /// upper 16 are Extended Message Data).
    pub const MESSAGE_DATA_32: u16 = 0x08;
    /// Message Data of a capability with 64-bit addresses.
    pub const MESSAGE_DATA_64: u16 = 0x0c;
    /// Mask Bits with 32-bit addresses (Per-Vector Masking Capable only).
    pub const MASK_BITS_32: u16 = 0x0c;
    /// Mask Bits with 64-bit addresses.
    pub const MASK_BITS_64: u16 = 0x10;
    /// Pending Bits with 32-bit addresses (Per-Vector Masking Capable only).
    pub const PENDING_BITS_32: u16 = 0x10;
    /// Pending Bits with 64-bit addresses.
    pub const PENDING_BITS_64: u16 = 0x14;
    /// Most vectors a function can have (Multiple Message Capable 101b).
    pub const MAX_VECTORS: u32 = 32;

    /// Message Control bits (PCI Express Base 6.0, 7.7.1.2).
    pub mod control {
        /// MSI Enable \[0\].
        pub const ENABLE: u16 = 1 << 0;
        /// Multiple Message Capable \[3:1\]: log2 of the vectors requested.
        pub const MULTIPLE_MESSAGE_CAPABLE: u16 = 0b111 << 1;
        /// Multiple Message Enable \[6:4\]: log2 of the vectors allocated.
        pub const MULTIPLE_MESSAGE_ENABLE: u16 = 0b111 << 4;
        /// 64 Bit Address Capable \[7\].
        pub const ADDRESS_64: u16 = 1 << 7;
        /// Per-Vector Masking Capable \[8\].
        pub const PER_VECTOR_MASKING: u16 = 1 << 8;
        /// Extended Message Data Capable \[9\].
        pub const EXTENDED_DATA_CAPABLE: u16 = 1 << 9;
        /// Extended Message Data Enable \[10\].
        pub const EXTENDED_DATA_ENABLE: u16 = 1 << 10;
    }
}

/// Why a capability could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapabilityError {
    /// The capability does not fit in the space left.
    NoSpace,
    /// A standard capability body must be at least its 2-byte header.
    TooShort,
}

/// One function's 4 KiB config space.
#[derive(Clone)]
pub struct ConfigSpace {
    value: Box<Block>,
    writable: Box<Block>,
    w1c: Box<Block>,
    last_cap: Option<u16>,
    next_cap: u16,
    last_ext_cap: Option<u16>,
    next_ext_cap: u16,
}

impl core::fmt::Debug for ConfigSpace {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ConfigSpace")
            .field("vendor", &self.raw(reg::VENDOR_ID, 2))
            .field("device", &self.raw(reg::DEVICE_ID, 2))
            .finish_non_exhaustive()
    }
}

impl Default for ConfigSpace {
    fn default() -> Self {
        Self::new()
    }
}

fn in_range(offset: u16, size: u8) -> bool {
    matches!(size, 1 | 2 | 4) && usize::from(offset) + usize::from(size) <= CONFIG_SPACE_SIZE
}

/// Where an access of `size` (1, 2 or 4) bytes at `offset` lies when it
/// stays within one dword of config space: (dword index, bit shift, the
/// bits of the dword it covers). `None` for another size, an access across
/// a dword boundary or past the end.
#[inline]
fn lane(offset: u16, size: u8) -> Option<(usize, u32, u32)> {
    let shift = 8 * u32::from(offset % 4);
    let mask = match size {
        4 if shift == 0 => u32::MAX,
        2 if shift <= 16 => 0xffff << shift,
        1 => 0xff << shift,
        _ => return None,
    };
    let i = usize::from(offset / 4);
    (i < CONFIG_SPACE_SIZE / 4).then_some((i, shift, mask))
}

/// One of a config space's three 4 KiB arrays (values, writable mask,
/// write-1-to-clear mask) as 1024 little-endian dwords, so that an access
/// within a dword is one word load (and store).
#[derive(Clone)]
struct Block([u32; CONFIG_SPACE_SIZE / 4]);

impl Block {
    fn new() -> Box<Self> {
        Box::new(Block([0; CONFIG_SPACE_SIZE / 4]))
    }

    /// Dword `i` (0 past the end).
    #[inline]
    fn dword(&self, i: usize) -> u32 {
        self.0.get(i).copied().unwrap_or(0)
    }

    /// The `size` (1, 2 or 4) bytes at `offset` as a little-endian value;
    /// `None` for another size or a range past the end.
    #[inline]
    fn load(&self, offset: u16, size: u8) -> Option<u32> {
        if let Some((i, shift, mask)) = lane(offset, size) {
            return Some((self.dword(i) & mask) >> shift);
        }
        // Across a dword boundary, a byte at a time.
        in_range(offset, size).then(|| {
            (0..u16::from(size)).fold(0, |v, i| {
                v | self.load(offset + i, 1).unwrap_or(0) << (8 * i)
            })
        })
    }

    /// Stores the low `size` (1, 2 or 4) bytes of `value` at `offset`,
    /// little-endian; nothing for another size or a range past the end.
    #[inline]
    fn store(&mut self, offset: u16, size: u8, value: u32) {
        if let Some((i, shift, mask)) = lane(offset, size) {
            if let Some(d) = self.0.get_mut(i) {
                *d = (*d & !mask) | ((value << shift) & mask);
            }
        } else if in_range(offset, size) {
            for i in 0..u16::from(size) {
                self.store(offset + i, 1, value >> (8 * i));
            }
        }
    }

    /// The 4096 bytes, little-endian.
    fn bytes(&self) -> [u8; CONFIG_SPACE_SIZE] {
        let mut b = [0; CONFIG_SPACE_SIZE];
        for (chunk, d) in b.chunks_exact_mut(4).zip(self.0.iter()) {
            chunk.copy_from_slice(&d.to_le_bytes());
        }
        b
    }
}

fn ones(size: u8) -> u32 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        _ => 0xffff_ffff,
    }
}

impl ConfigSpace {
    /// All zeros, nothing writable; standard capabilities are placed from 0x40.
    pub fn new() -> Self {
        ConfigSpace {
            value: Block::new(),
            writable: Block::new(),
            w1c: Block::new(),
            last_cap: None,
            next_cap: 0x40,
            last_ext_cap: None,
            next_ext_cap: reg::EXTENDED_START,
        }
    }

    /// A guest read. Sizes other than 1, 2, 4 or a range past 4 KiB read all ones.
    #[inline]
    pub fn read(&self, offset: u16, size: u8) -> u32 {
        self.value.load(offset, size).unwrap_or(ones(size))
    }

    /// A guest write, applied through the masks: of each bit, the writable
    /// ones take the written value, the write-1-to-clear ones written as 1
    /// clear, the rest keep their value. Out-of-range or badly sized writes
    /// are ignored.
    #[inline]
    pub fn write(&mut self, offset: u16, size: u8, value: u32) {
        match lane(offset, size) {
            Some((i, shift, mask)) => self.write_lane(i, mask, value << shift),
            None => self.write_bytes(offset, size, value),
        }
    }

    /// Applies the write of `v` (shifted to its place) to the bits `mask`
    /// of dword `i`.
    #[inline]
    fn write_lane(&mut self, i: usize, mask: u32, v: u32) {
        let (w, c) = (self.writable.dword(i) & mask, self.w1c.dword(i) & mask);
        if let Some(d) = self.value.0.get_mut(i) {
            *d = ((*d & !w) | (v & w)) & !(v & c);
        }
    }

    /// A write across a dword boundary, a byte at a time (nothing for a
    /// bad size or a range past the end).
    #[inline(never)]
    fn write_bytes(&mut self, offset: u16, size: u8, value: u32) {
        if !in_range(offset, size) {
            return;
        }
        for k in 0..u16::from(size) {
            if let Some((i, shift, mask)) = lane(offset + k, 1) {
                self.write_lane(i, mask, ((value >> (8 * k)) & 0xff) << shift);
            }
        }
    }

    /// The current value, bypassing nothing (for device models and dumps).
    /// Out of range reads 0.
    #[inline]
    pub fn raw(&self, offset: u16, size: u8) -> u32 {
        self.value.load(offset, size).unwrap_or(0)
    }

    fn set(&mut self, offset: u16, size: u8, value: u32) {
        self.value.store(offset, size, value);
    }

    /// Sets a byte's value directly (device-side, masks bypassed).
    pub fn set_u8(&mut self, offset: u16, value: u8) {
        self.set(offset, 1, value.into());
    }

    /// Sets a 16-bit value directly (device-side, masks bypassed).
    pub fn set_u16(&mut self, offset: u16, value: u16) {
        self.set(offset, 2, value.into());
    }

    /// Sets a 32-bit value directly (device-side, masks bypassed).
    pub fn set_u32(&mut self, offset: u16, value: u32) {
        self.set(offset, 4, value);
    }

    fn set_mask(mask: &mut Block, offset: u16, size: u8, bits: u32) {
        // Device models declare masks at construction, never from guest input: a
        // size other than 1/2/4 or an offset past the end is a model bug, caught
        // by every debug build (tests) and ignored in release.
        debug_assert!(
            in_range(offset, size),
            "mask for {offset:#x}/{size} is not a 1-, 2- or 4-byte register in config space"
        );
        mask.store(offset, size, bits);
    }

    /// Declares which bits of a register the guest may write.
    pub fn set_writable(&mut self, offset: u16, size: u8, bits: u32) {
        Self::set_mask(&mut self.writable, offset, size, bits);
    }

    /// Declares which bits of a register are write-1-to-clear.
    pub fn set_w1c(&mut self, offset: u16, size: u8, bits: u32) {
        Self::set_mask(&mut self.w1c, offset, size, bits);
    }

    /// The writable mask of a register.
    pub fn writable(&self, offset: u16, size: u8) -> u32 {
        self.mask_of(&self.writable, offset, size)
    }

    /// The write-1-to-clear mask of a register.
    pub fn w1c(&self, offset: u16, size: u8) -> u32 {
        self.mask_of(&self.w1c, offset, size)
    }

    fn mask_of(&self, mask: &Block, offset: u16, size: u8) -> u32 {
        mask.load(offset, size).unwrap_or(0)
    }

    /// Sets RW1C bits directly (device-side: an event happened).
    pub fn raise(&mut self, offset: u16, size: u8, bits: u32) {
        let v = self.raw(offset, size) | bits;
        self.set(offset, size, v);
    }

    /// All 4096 bytes (a copy), for dumps.
    pub fn bytes(&self) -> [u8; CONFIG_SPACE_SIZE] {
        self.value.bytes()
    }

    /// Appends a standard capability with `body_len` bytes (header included) to the
    /// chain that starts at the Capabilities Pointer (0x34), sets Status.Capabilities
    /// List, and returns its dword-aligned offset.
    pub fn add_capability(&mut self, id: u8, body_len: u8) -> Result<u16, CapabilityError> {
        if body_len < 2 {
            return Err(CapabilityError::TooShort);
        }
        let at = self.next_cap;
        let end = at + u16::from(body_len);
        if end > reg::EXTENDED_START {
            return Err(CapabilityError::NoSpace);
        }
        self.set_u8(at, id);
        self.set_u8(at + 1, 0);
        match self.last_cap {
            None => self.set_u8(reg::CAPABILITIES_POINTER, at as u8),
            Some(prev) => self.set_u8(prev + 1, at as u8),
        }
        self.last_cap = Some(at);
        self.next_cap = (end + 3) & !3;
        let st = self.raw(reg::STATUS, 2) as u16 | status::CAPABILITIES_LIST;
        self.set_u16(reg::STATUS, st);
        Ok(at)
    }

    /// Appends an extended capability (PCI Express Base 7.6.3: ID in bits 15:0,
    /// version in 19:16, next offset in 31:20) from 0x100 on, returning its offset.
    pub fn add_ext_capability(
        &mut self,
        id: u16,
        version: u8,
        body_len: u16,
    ) -> Result<u16, CapabilityError> {
        if body_len < 4 {
            return Err(CapabilityError::TooShort);
        }
        let at = self.next_ext_cap;
        let end = usize::from(at) + usize::from(body_len);
        if end > CONFIG_SPACE_SIZE {
            return Err(CapabilityError::NoSpace);
        }
        self.set_u32(at, u32::from(id) | (u32::from(version & 0xf) << 16));
        if let Some(prev) = self.last_ext_cap {
            let h = self.raw(prev, 4) & 0x000f_ffff;
            self.set_u32(prev, h | (u32::from(at) << 20));
        }
        self.last_ext_cap = Some(at);
        self.next_ext_cap = ((end + 3) & !3) as u16;
        Ok(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The register model byte by byte, as it was before accesses went
    /// word-wise: the reference the word-wise [`ConfigSpace`] must match.
    struct ByteWise {
        value: [u8; CONFIG_SPACE_SIZE],
        writable: [u8; CONFIG_SPACE_SIZE],
        w1c: [u8; CONFIG_SPACE_SIZE],
    }

    impl ByteWise {
        fn read(&self, offset: u16, size: u8) -> u32 {
            if !in_range(offset, size) {
                return ones(size);
            }
            self.raw(offset, size)
        }

        fn raw(&self, offset: u16, size: u8) -> u32 {
            if !in_range(offset, size) {
                return 0;
            }
            let mut v = 0u32;
            for i in 0..usize::from(size) {
                v |= u32::from(self.value[usize::from(offset) + i]) << (8 * i);
            }
            v
        }

        fn write(&mut self, offset: u16, size: u8, value: u32) {
            if !in_range(offset, size) {
                return;
            }
            for i in 0..usize::from(size) {
                let at = usize::from(offset) + i;
                let v = (value >> (8 * i)) as u8;
                let w = self.writable[at];
                let c = self.w1c[at];
                self.value[at] = ((self.value[at] & !w) | (v & w)) & !(v & c);
            }
        }
    }

    /// Offsets near the start and the end of config space (where the range
    /// checks bite), any size 0..=8, any value.
    fn access() -> impl Strategy<Value = (u16, u8, u32)> {
        (
            prop_oneof![0u16..64, 4080u16..4100, any::<u16>()],
            0u8..=8,
            any::<u32>(),
        )
    }

    proptest! {
        /// Word-wise reads and writes give, at every offset, size and
        /// alignment, exactly what the byte-wise model gives, and leave the
        /// same bytes behind.
        #[test]
        fn word_wise_accesses_match_the_byte_wise_model(
            value in proptest::collection::vec(any::<u8>(), 64),
            writable in proptest::collection::vec(any::<u8>(), 64),
            w1c in proptest::collection::vec(any::<u8>(), 64),
            ops in proptest::collection::vec((any::<bool>(), access()), 1..64),
        ) {
            let mut c = ConfigSpace::new();
            let mut m = ByteWise {
                value: [0; CONFIG_SPACE_SIZE],
                writable: [0; CONFIG_SPACE_SIZE],
                w1c: [0; CONFIG_SPACE_SIZE],
            };
            // The same registers at the start and at the end of the space.
            for (i, ((&v, &w), &x)) in value.iter().zip(&writable).zip(&w1c).enumerate() {
                for at in [i, CONFIG_SPACE_SIZE - 64 + i] {
                    let o = at as u16;
                    c.set_u8(o, v);
                    c.set_writable(o, 1, w.into());
                    c.set_w1c(o, 1, x.into());
                    (m.value[at], m.writable[at], m.w1c[at]) = (v, w, x);
                }
            }
            for (is_write, (offset, size, v)) in ops {
                if is_write {
                    c.write(offset, size, v);
                    m.write(offset, size, v);
                } else {
                    prop_assert_eq!(c.read(offset, size), m.read(offset, size), "read {:#x}/{}", offset, size);
                }
                prop_assert_eq!(c.raw(offset, size), m.raw(offset, size), "raw {:#x}/{}", offset, size);
            }
            prop_assert!(c.bytes()[..] == m.value[..], "the bytes left behind differ");
        }
    }

    #[test]
    fn read_only_bytes_ignore_writes() {
        let mut c = ConfigSpace::new();
        c.set_u16(0, 0x1b36);
        c.write(0, 4, 0xffff_ffff);
        assert_eq!(c.read(0, 2), 0x1b36);
    }

    #[test]
    fn writable_mask_is_applied_per_bit() {
        let mut c = ConfigSpace::new();
        c.set_writable(4, 2, 0x0546);
        c.write(4, 2, 0xffff);
        assert_eq!(c.read(4, 2), 0x0546);
    }

    #[test]
    fn byte_write_touches_only_its_byte() {
        let mut c = ConfigSpace::new();
        c.set_writable(0x18, 4, 0x00ff_ffff);
        c.write(0x18, 4, 0x0003_0201);
        c.write(0x19, 1, 0x55);
        assert_eq!(c.read(0x18, 4), 0x0003_5501);
    }

    #[test]
    fn w1c_bits_clear_on_one_and_survive_zero() {
        let mut c = ConfigSpace::new();
        c.set_w1c(6, 2, 0xf900);
        c.raise(6, 2, 0x3000);
        c.write(6, 2, 0x1000);
        assert_eq!(c.read(6, 2), 0x2000);
        c.write(6, 2, 0);
        assert_eq!(c.read(6, 2), 0x2000);
    }

    #[test]
    fn unaligned_word_read_spans_bytes() {
        let mut c = ConfigSpace::new();
        c.set_u32(0, 0x4433_2211);
        assert_eq!(c.read(1, 2), 0x3322);
        assert_eq!(c.read(3, 1), 0x44);
    }

    #[test]
    fn out_of_range_read_is_all_ones_and_write_ignored() {
        let mut c = ConfigSpace::new();
        assert_eq!(c.read(4094, 4), 0xffff_ffff);
        assert_eq!(c.read(0, 3), 0xffff_ffff);
        // The last dword and the first one are writable: only the bounds stop the writes.
        c.set_writable(4092, 4, 0xffff_ffff);
        c.set_u32(4092, 0x4433_2211);
        c.set_writable(0x40, 4, 0xffff_ffff);
        c.set_u32(0x40, 0x8877_6655);
        c.write(4095, 2, 0);
        c.write(4094, 4, 0);
        c.write(0x40, 3, 0);
        assert_eq!(c.raw(4092, 4), 0x4433_2211);
        assert_eq!(c.raw(0x40, 4), 0x8877_6655);
        // In range, the same bytes take the write.
        c.write(4094, 2, 0);
        assert_eq!(c.raw(4092, 4), 0x0000_2211);
    }

    #[test]
    fn capabilities_are_chained_from_0x34_and_status_says_so() {
        let mut c = ConfigSpace::new();
        let a = c.add_capability(0x01, 8).unwrap();
        let b = c.add_capability(0x10, 0x3c).unwrap();
        assert_eq!(c.read(0x34, 1), u32::from(a));
        assert_eq!(c.read(u16::from(a as u8) + 1, 1), u32::from(b));
        assert_eq!(c.read(b + 1, 1), 0);
        assert_eq!(c.read(b, 1), 0x10);
        assert_ne!(c.read(6, 2) & u32::from(status::CAPABILITIES_LIST), 0);
        assert_eq!(b % 4, 0);
    }

    #[test]
    fn standard_capability_past_0x100_is_refused() {
        let mut c = ConfigSpace::new();
        c.add_capability(0x10, 0xb0).unwrap();
        assert_eq!(c.add_capability(0x01, 0x20), Err(CapabilityError::NoSpace));
    }

    #[test]
    fn extended_capabilities_start_at_0x100_with_12_bit_next() {
        let mut c = ConfigSpace::new();
        assert_eq!(c.read(0x100, 4), 0);
        let a = c.add_ext_capability(0x000d, 1, 8).unwrap();
        let b = c.add_ext_capability(0x0001, 2, 0x48).unwrap();
        assert_eq!(a, 0x100);
        assert_eq!(c.read(a, 4), 0x000d | (1 << 16) | (u32::from(b) << 20));
        assert_eq!(c.read(b, 4), 0x0001 | (2 << 16));
    }
}

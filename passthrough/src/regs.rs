//! Register offsets, capability IDs and bits this crate uses, named as in the
//! PCI Express Base Specification 6.0 (section 7.5) and the PCI-to-PCI Bridge
//! Architecture 1.2. Header registers shared by both header types are in
//! [`vbus::config::reg`].

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
    /// I/O Base (8 bits).
    pub const IO_BASE: u16 = 0x1c;
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
    /// I/O Base Upper 16 Bits / I/O Limit Upper 16 Bits.
    pub const IO_BASE_UPPER: u16 = 0x30;
    /// Expansion ROM Base Address (type 1).
    pub const EXPANSION_ROM: u16 = 0x38;
    /// Bridge Control (16 bits).
    pub const BRIDGE_CONTROL: u16 = 0x3e;
    /// Bridge Control: Secondary Bus Reset (7.5.1.3.13).
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
    /// Device Capabilities 2 (32 bits).
    pub const DEVICE_CAPABILITIES2: u16 = 0x24;
    /// Device Control 2 (16 bits).
    pub const DEVICE_CONTROL2: u16 = 0x28;
    /// Link Capabilities 2.
    pub const LINK_CAPABILITIES2: u16 = 0x2c;
    /// Link Control 2 (16 bits).
    pub const LINK_CONTROL2: u16 = 0x30;
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

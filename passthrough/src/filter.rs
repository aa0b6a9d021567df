//! The config-space filter of an assigned function, as data: every register
//! a guest can see, and where each of its bits comes from and goes.
//!
//! A [`Rule`] covers one register. Its bits are, in this order:
//! * `host_read`: read live from the device;
//! * `host_write`: a guest write of them reaches the device;
//! * `host_w1c`: the device's RW1C bits; a guest 1 clears them on the device
//!   (they are always written 0 otherwise, so a read-modify-write never clears
//!   a status bit by accident);
//! * `shadow_write`: the guest may change them in the function's own shadow
//!   (emulated);
//! * every other bit is read-only, from the shadow: the value read from the
//!   host once at assignment (cached), with `clear` bits forced to 0.
//!
//! Bytes no rule covers are hidden: they read 0 and writes to them are dropped
//! (and counted). That hides every capability not listed here, the Expansion
//! ROM, I/O BARs, BIST and the CardBus CIS pointer.
//!
//! Fixed by code, not by these masks (see `assigned.rs`): BARs (shadowed:
//! guest-programmed address, sizing reads back the size mask of the
//! presented size, at least 4 KiB), capability next pointers (re-chained
//! over the kept capabilities), Device Control's Initiate Function Level
//! Reset, which becomes `Request::FunctionLevelReset` and is never written,
//! and what reaches the device of MSI and MSI-X (`crate::msi`,
//! `crate::msix`): their enables, MSI's Multiple Message Capable, Mask Bits
//! and Pending Bits, and Command's Interrupt Disable, which the device gets
//! set while the guest has MSI enabled.

use crate::regs::{ext_cap_id, pcie, pm};
use vbus::config::{command, reg, status};

/// One register of the filter (offsets relative to the capability in the
/// capability tables).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Offset (absolute in [`HEADER`], relative to the capability otherwise).
    pub offset: u16,
    /// Size in bytes (1, 2 or 4).
    pub size: u8,
    /// The register's name in the specification.
    pub name: &'static str,
    /// Bits read live from the device.
    pub host_read: u32,
    /// Bits a guest write sets on the device.
    pub host_write: u32,
    /// The device's RW1C bits among `host_read`.
    pub host_w1c: u32,
    /// Bits the guest may write in the shadow.
    pub shadow_write: u32,
    /// Bits of the cached value forced to 0.
    pub clear: u32,
    /// A BAR (shadowed; masks from the layout).
    pub bar: bool,
}

impl Rule {
    const fn new(offset: u16, size: u8, name: &'static str) -> Rule {
        Rule {
            offset,
            size,
            name,
            host_read: 0,
            host_write: 0,
            host_w1c: 0,
            shadow_write: 0,
            clear: 0,
            bar: false,
        }
    }

    /// Read-only, the value cached from the host at assignment.
    pub const fn cached(offset: u16, size: u8, name: &'static str) -> Rule {
        Rule::new(offset, size, name)
    }

    /// Emulated: `writable` bits in the shadow, the rest cached.
    pub const fn emulated(offset: u16, size: u8, name: &'static str, writable: u32) -> Rule {
        Rule {
            shadow_write: writable,
            ..Rule::new(offset, size, name)
        }
    }

    /// Passed through: `read` bits from the device, `write` bits to it,
    /// `w1c` RW1C bits clearable on it; `shadow` bits emulated; the rest cached.
    pub const fn pass(
        offset: u16,
        size: u8,
        name: &'static str,
        read: u32,
        write: u32,
        w1c: u32,
        shadow: u32,
    ) -> Rule {
        Rule {
            host_read: read,
            host_write: write,
            host_w1c: w1c,
            shadow_write: shadow,
            ..Rule::new(offset, size, name)
        }
    }

    const fn clearing(self, clear: u32) -> Rule {
        Rule { clear, ..self }
    }

    const fn bar(offset: u16) -> Rule {
        Rule {
            bar: true,
            ..Rule::new(offset, 4, "Base Address Register")
        }
    }
}

const CMD_TO_DEVICE: u32 =
    (command::MEMORY_SPACE | command::BUS_MASTER | command::INTERRUPT_DISABLE) as u32;
const CMD_EMULATED: u32 = (command::PARITY_ERROR_RESPONSE | command::SERR_ENABLE) as u32;
const STATUS_RW1C: u32 = status::RW1C_ERRORS as u32;

/// The type-0 header (PCI Express Base 6.0, 7.5.1.1 and 7.5.1.2).
pub const HEADER: &[Rule] = &[
    Rule::cached(reg::VENDOR_ID, 2, "Vendor ID"),
    Rule::cached(reg::DEVICE_ID, 2, "Device ID"),
    // Memory Space, Bus Master and Interrupt Disable reach the device; the
    // segment also reads Memory Space from the shadow to decode the BARs.
    // I/O Space stays 0: no I/O BAR is shown.
    Rule::pass(
        reg::COMMAND,
        2,
        "Command",
        0,
        CMD_TO_DEVICE,
        0,
        CMD_TO_DEVICE | CMD_EMULATED,
    ),
    // Interrupt Status and the error bits live; Capabilities List cached.
    Rule::pass(
        reg::STATUS,
        2,
        "Status",
        status::INTERRUPT_STATUS as u32 | STATUS_RW1C,
        0,
        STATUS_RW1C,
        0,
    ),
    Rule::cached(reg::REVISION_ID, 1, "Revision ID"),
    Rule::cached(reg::CLASS_PROG_IF, 1, "Programming Interface"),
    Rule::cached(0x0a, 2, "Sub-Class Code, Base Class Code"),
    Rule::emulated(reg::CACHE_LINE_SIZE, 1, "Cache Line Size", 0xff),
    // Hardwired to 0 on PCI Express (7.5.1.1.8).
    Rule::emulated(0x0d, 1, "Latency Timer", 0).clearing(0xff),
    Rule::cached(reg::HEADER_TYPE, 1, "Header Type").clearing(0x80),
    Rule::bar(0x10),
    Rule::bar(0x14),
    Rule::bar(0x18),
    Rule::bar(0x1c),
    Rule::bar(0x20),
    Rule::bar(0x24),
    Rule::cached(0x2c, 2, "Subsystem Vendor ID"),
    Rule::cached(0x2e, 2, "Subsystem ID"),
    Rule::cached(
        reg::CAPABILITIES_POINTER,
        1,
        "Capabilities Pointer (re-chained)",
    ),
    Rule::emulated(reg::INTERRUPT_LINE, 1, "Interrupt Line", 0xff),
    Rule::cached(reg::INTERRUPT_PIN, 1, "Interrupt Pin"),
    Rule::cached(0x3e, 1, "Min_Gnt"),
    Rule::cached(0x3f, 1, "Max_Lat"),
];

/// Device Control bits that only change how the function itself issues
/// requests, and so reach it: Enable Relaxed Ordering, Extended Tag Field
/// Enable, Enable No Snoop, Max_Read_Request_Size (7.5.3.4).
const DEVCTL_TO_DEVICE: u32 = (1 << 4) | (1 << 8) | (1 << 11) | (0b111 << 12);
/// Emulated: the error reporting enables (the host owns error handling),
/// Max_Payload_Size (must match the host's link partner), Phantom Functions,
/// Aux Power PM.
const DEVCTL_EMULATED: u32 = 0b1111 | (0b111 << 5) | (1 << 9) | (1 << 10);

/// The PCI Express capability of an endpoint (PCI Express Base 6.0, 7.5.3).
pub const PCIE: &[Rule] = &[
    Rule::cached(
        0x00,
        2,
        "Capability ID, Next Capability Pointer (re-chained)",
    ),
    Rule::cached(pcie::CAPABILITIES, 2, "PCI Express Capabilities"),
    Rule::cached(pcie::DEVICE_CAPABILITIES, 4, "Device Capabilities"),
    // Initiate Function Level Reset (bit 15) is intercepted and reads 0.
    Rule::pass(
        pcie::DEVICE_CONTROL,
        2,
        "Device Control",
        DEVCTL_TO_DEVICE,
        DEVCTL_TO_DEVICE,
        0,
        DEVCTL_EMULATED,
    ),
    Rule::pass(
        pcie::DEVICE_STATUS,
        2,
        "Device Status",
        0x003f,
        0,
        pcie::DEVSTA_RW1C as u32,
        0,
    ),
    Rule::cached(pcie::LINK_CAPABILITIES, 4, "Link Capabilities"),
    // ASPM Control, RCB, Common Clock, Extended Synch, Clock PM, HW
    // Autonomous Width Disable: emulated, the host keeps the link as it set it.
    Rule::emulated(pcie::LINK_CONTROL, 2, "Link Control", 0x03cb),
    Rule::pass(pcie::LINK_STATUS, 2, "Link Status", 0xffff, 0, 0, 0),
    Rule::cached(0x14, 4, "Slot Capabilities"),
    Rule::cached(0x18, 4, "Slot Control, Slot Status"),
    Rule::cached(0x1c, 4, "Root Control, Root Capabilities"),
    Rule::cached(0x20, 4, "Root Status"),
    Rule::cached(pcie::DEVICE_CAPABILITIES2, 4, "Device Capabilities 2"),
    // Completion Timeout Value/Disable are the function's own; emulated.
    Rule::emulated(pcie::DEVICE_CONTROL2, 2, "Device Control 2", 0x001f),
    Rule::cached(0x2a, 2, "Device Status 2"),
    Rule::cached(pcie::LINK_CAPABILITIES2, 4, "Link Capabilities 2"),
    Rule::emulated(pcie::LINK_CONTROL2, 2, "Link Control 2", 0),
    Rule::cached(0x32, 2, "Link Status 2"),
];

/// The Power Management capability (PCI Bus Power Management 1.2, 3.2). The
/// power state is emulated: the device stays in D0, so that a D3hot to D0
/// transition can never reset its BARs behind the host's back.
pub const PM: &[Rule] = &[
    Rule::cached(0x00, 2, "Capability ID, Next Item Pointer (re-chained)"),
    // PME_Support cleared: no PME is ever delivered.
    Rule::cached(pm::PMC, 2, "Power Management Capabilities").clearing(0xf800),
    Rule::emulated(pm::PMCSR, 2, "Power Management Control/Status", 0x0003).clearing(0xff00),
    Rule::cached(0x06, 2, "PMCSR_BSE, Data").clearing(0xffff),
];

/// The Device Serial Number extended capability (7.9.3): read-only.
pub const DSN: &[Rule] = &[
    Rule::cached(0x00, 4, "Extended Capability Header (re-chained)"),
    Rule::cached(0x04, 4, "Serial Number Register (Lower DW)"),
    Rule::cached(0x08, 4, "Serial Number Register (Upper DW)"),
];

/// The MSI-X capability (PCI Express Base 6.0, 7.7.2), shown when the
/// hypervisor routes the function's MSIs (`crate::msix`): MSI-X Enable and
/// Function Mask are emulated and mirrored to the device by code
/// (`AssignedFunction`: MSI-X Enable only while the guest has MSI
/// disabled); Table Size and the table's and PBA's offsets and BIRs are
/// cached. The table and PBA themselves are shadows
/// (`crate::msix::AssignedMsix`).
pub const MSIX: &[Rule] = &[
    Rule::cached(
        0x00,
        2,
        "Capability ID, Next Capability Pointer (re-chained)",
    ),
    Rule::emulated(0x02, 2, "Message Control", MSIX_CONTROL_RW),
    Rule::cached(0x04, 4, "Table Offset/Table BIR"),
    Rule::cached(0x08, 4, "PBA Offset/PBA BIR"),
];

/// Message Control's MSI-X Enable (15) and Function Mask (14).
pub const MSIX_CONTROL_RW: u32 = 0xc000;

/// MSI's Message Control bits the guest writes: MSI Enable (0) and
/// Multiple Message Enable (6:4) (PCI Express Base 6.0, 7.7.1.2).
const MSI_CONTROL_RW: u32 = 0x0071;
/// Message Control bits cleared in the shadow: all but 64 Bit Address
/// Capable (7) and Per-Vector Masking Capable (8). Enable and Multiple
/// Message Enable reset to 0; Multiple Message Capable is set by code
/// (`crate::msi::AssignedMsi::shape`); Extended Message Data Capable and
/// Enable (9, 10) are not offered.
const MSI_CONTROL_CLEAR: u32 = 0xfe7f;

const MSI_HEADER: Rule = Rule::cached(
    0x00,
    2,
    "Capability ID, Next Capability Pointer (re-chained)",
);
const MSI_CONTROL: Rule =
    Rule::emulated(0x02, 2, "Message Control", MSI_CONTROL_RW).clearing(MSI_CONTROL_CLEAR);
// Message Address [1:0] are 0: DWORD-aligned (7.7.1.3).
const MSI_ADDRESS: Rule = Rule::emulated(0x04, 4, "Message Address", !3).clearing(!0);
const MSI_UPPER: Rule = Rule::emulated(0x08, 4, "Message Upper Address", !0).clearing(!0);
const fn msi_data(at: u16) -> Rule {
    Rule::emulated(at, 2, "Message Data", 0xffff).clearing(!0)
}
/// Extended Message Data: not offered (reads 0, writes dropped).
const fn msi_ext_data(at: u16) -> Rule {
    Rule::cached(at, 2, "Extended Message Data (not offered)").clearing(!0)
}
/// Mask Bits: one writable bit per vector shown, set by code.
const fn msi_mask(at: u16) -> Rule {
    Rule::emulated(at, 4, "Mask Bits", 0).clearing(!0)
}
/// Pending Bits: read by code (the device's and the shadow's), never written.
const fn msi_pending(at: u16) -> Rule {
    Rule::cached(at, 4, "Pending Bits").clearing(!0)
}

/// The MSI capability with 32-bit addresses (PCI Express Base 6.0, 7.7.1),
/// shown when the hypervisor routes the function's MSIs (`crate::msi`):
/// every register emulated in the shadow, none written to the device.
pub const MSI_32: &[Rule] = &[
    MSI_HEADER,
    MSI_CONTROL,
    MSI_ADDRESS,
    msi_data(0x08),
    msi_ext_data(0x0a),
];
/// [`MSI_32`] with 64-bit addresses.
pub const MSI_64: &[Rule] = &[
    MSI_HEADER,
    MSI_CONTROL,
    MSI_ADDRESS,
    MSI_UPPER,
    msi_data(0x0c),
    msi_ext_data(0x0e),
];
/// [`MSI_32`] with per-vector masking.
pub const MSI_32_MASKED: &[Rule] = &[
    MSI_HEADER,
    MSI_CONTROL,
    MSI_ADDRESS,
    msi_data(0x08),
    msi_ext_data(0x0a),
    msi_mask(0x0c),
    msi_pending(0x10),
];
/// [`MSI_32`] with 64-bit addresses and per-vector masking.
pub const MSI_64_MASKED: &[Rule] = &[
    MSI_HEADER,
    MSI_CONTROL,
    MSI_ADDRESS,
    MSI_UPPER,
    msi_data(0x0c),
    msi_ext_data(0x0e),
    msi_mask(0x10),
    msi_pending(0x14),
];

/// The MSI rules for a capability with 64-bit addresses or not, and
/// per-vector masking or not.
pub fn msi(is_64bit: bool, per_vector_masking: bool) -> &'static [Rule] {
    match (is_64bit, per_vector_masking) {
        (false, false) => MSI_32,
        (true, false) => MSI_64,
        (false, true) => MSI_32_MASKED,
        (true, true) => MSI_64_MASKED,
    }
}

/// The rules of a standard capability shown to the guest; `None`: hidden.
/// MSI-X is shown only when `msix` and MSI only with its rules in `msi`
/// (the hypervisor routes the function's messages); vendor-specific and
/// unknown capabilities are hidden.
pub fn capability(id: u8, msix: bool, msi: Option<&'static [Rule]>) -> Option<&'static [Rule]> {
    match id {
        crate::regs::cap_id::PCIE => Some(PCIE),
        crate::regs::cap_id::PM => Some(PM),
        crate::regs::cap_id::MSIX if msix => Some(MSIX),
        crate::regs::cap_id::MSI => msi,
        _ => None,
    }
}

/// The rules of an extended capability shown to the guest; `None`: hidden
/// (AER, SR-IOV, ACS, ARI, Resizable BAR, vendor-specific, unknown).
pub fn ext_capability(id: u16) -> Option<&'static [Rule]> {
    match id {
        ext_cap_id::DSN => Some(DSN),
        _ => None,
    }
}

//! Emulated PCI Express Root Ports: type-1 header, PCI Express, Power Management and ACS capabilities, window registers and their side effects.
//!
//! Register semantics follow the PCI Express Base Specification (section
//! numbers below refer to revision 5.0) and the PCI-to-PCI Bridge Architecture.
//!
//! The PCI Express Capability registers are derived from [`RootPortConfig`] in
//! one place ([`pcie_registers`] and [`reserved_encodings`]): a control bit is
//! writable, and a status bit RW1C, only when the capability the port
//! advertises says the port implements it, so the two can never disagree.
//! The port has no I/O window: I/O Base/Limit read 0 and ignore writes, which
//! a bridge may do when it does not implement I/O decode (7.5.1.3.6).
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;

use alloc::vec::Vec;
use vbus::config::{command, reg, status};
use vbus::{BarInfo, ConfigSpace, Intx, Ipa, MemRange, PciFunction, Request};

/// Type-1 header registers and Bridge Control bits (from [`vbus::config`]).
pub use vbus::config::{bridge_control, type1};

/// Offsets of the capabilities this port builds (fixed, so tests and dumps can name them).
pub mod caps {
    /// Power Management capability.
    pub const PM: u16 = 0x40;
    /// PCI Express capability.
    pub const PCIE: u16 = 0x48;
    /// ACS extended capability.
    pub const ACS: u16 = 0x100;
    /// Capability ID of Power Management.
    pub const PM_ID: u8 = 0x01;
    /// Capability ID of PCI Express.
    pub const PCIE_ID: u8 = 0x10;
    /// Extended capability ID of ACS.
    pub const ACS_ID: u16 = 0x000d;
}

/// PCI Express Capability register offsets, relative to the capability (7.5.3).
pub mod pcie {
    pub use vbus::config::pcie::*;
    /// Length of a version-2 PCI Express capability.
    pub const LEN: u8 = 0x3c;
    /// Link Status: Data Link Layer Link Active.
    pub const LINK_STATUS_DLLLA: u16 = 1 << 13;
    /// Slot Status: Presence Detect State.
    pub const SLOT_STATUS_PDS: u16 = 1 << 6;

    /// Device Capabilities bits (7.5.3.3).
    pub mod device_capabilities {
        /// Max_Payload_Size Supported (2:0): 128 bytes << encoding.
        pub const MAX_PAYLOAD_SIZE_SUPPORTED: u32 = 0x7;
        /// Role-Based Error Reporting.
        pub const ROLE_BASED_ERROR_REPORTING: u32 = 1 << 15;
    }

    /// Device Control bits (7.5.3.4).
    pub mod device_control {
        /// Correctable, Non-Fatal, Fatal and Unsupported Request Reporting Enable.
        pub const ERROR_REPORTING_ENABLES: u16 = 0x000f;
        /// Enable Relaxed Ordering.
        pub const ENABLE_RELAXED_ORDERING: u16 = 1 << 4;
        /// Max_Payload_Size (7:5).
        pub const MAX_PAYLOAD_SIZE: u16 = 0x7 << 5;
        /// Extended Tag Field Enable.
        pub const EXTENDED_TAG_FIELD_ENABLE: u16 = 1 << 8;
        /// Phantom Functions Enable.
        pub const PHANTOM_FUNCTIONS_ENABLE: u16 = 1 << 9;
        /// Aux Power PM Enable.
        pub const AUX_POWER_PM_ENABLE: u16 = 1 << 10;
        /// Enable No Snoop.
        pub const ENABLE_NO_SNOOP: u16 = 1 << 11;
        /// Max_Read_Request_Size (14:12).
        pub const MAX_READ_REQUEST_SIZE: u16 = 0x7 << 12;
        /// Initiate Function Level Reset (Endpoints with FLR; Bridge
        /// Configuration Retry Enable in PCI Express to PCI/PCI-X Bridges):
        /// RsvdP in a Root Port.
        pub const INITIATE_FUNCTION_LEVEL_RESET: u16 = 1 << 15;
    }

    /// Device Status bits (7.5.3.5).
    pub mod device_status {
        /// Correctable, Non-Fatal, Fatal Error and Unsupported Request Detected (RW1C).
        pub const ERRORS_DETECTED: u16 = 0x000f;
    }

    /// Link Capabilities bits (7.5.3.6).
    pub mod link_capabilities {
        /// ASPM Support (11:10).
        pub const ASPM_SUPPORT_SHIFT: u32 = 10;
        /// Clock Power Management.
        pub const CLOCK_POWER_MANAGEMENT: u32 = 1 << 18;
        /// Data Link Layer Link Active Reporting Capable.
        pub const DLL_LINK_ACTIVE_REPORTING_CAPABLE: u32 = 1 << 20;
        /// Link Bandwidth Notification Capability.
        pub const LINK_BANDWIDTH_NOTIFICATION: u32 = 1 << 21;
    }

    /// Link Control bits (7.5.3.7).
    pub mod link_control {
        /// ASPM Control: L0s Entry Enabled.
        pub const ASPM_L0S: u16 = 1 << 0;
        /// ASPM Control: L1 Entry Enabled.
        pub const ASPM_L1: u16 = 1 << 1;
        /// Read Completion Boundary: hardwired in a Root Port (0 = 64 bytes).
        pub const RCB: u16 = 1 << 3;
        /// Link Disable.
        pub const LINK_DISABLE: u16 = 1 << 4;
        /// Retrain Link: a command, always reads 0.
        pub const RETRAIN_LINK: u16 = 1 << 5;
        /// Common Clock Configuration.
        pub const COMMON_CLOCK_CONFIGURATION: u16 = 1 << 6;
        /// Extended Synch.
        pub const EXTENDED_SYNCH: u16 = 1 << 7;
        /// Enable Clock Power Management.
        pub const ENABLE_CLOCK_PM: u16 = 1 << 8;
        /// Hardware Autonomous Width Disable.
        pub const HARDWARE_AUTONOMOUS_WIDTH_DISABLE: u16 = 1 << 9;
        /// Link Bandwidth Management Interrupt Enable.
        pub const LINK_BANDWIDTH_MANAGEMENT_INTERRUPT_ENABLE: u16 = 1 << 10;
        /// Link Autonomous Bandwidth Interrupt Enable.
        pub const LINK_AUTONOMOUS_BANDWIDTH_INTERRUPT_ENABLE: u16 = 1 << 11;
    }

    /// Link Status bits (7.5.3.8).
    pub mod link_status {
        /// Link Bandwidth Management Status (RW1C with Link Bandwidth Notification, else RsvdZ).
        pub const LINK_BANDWIDTH_MANAGEMENT_STATUS: u16 = 1 << 14;
        /// Link Autonomous Bandwidth Status (RW1C with Link Bandwidth Notification, else RsvdZ).
        pub const LINK_AUTONOMOUS_BANDWIDTH_STATUS: u16 = 1 << 15;
    }

    /// Slot Capabilities bits (7.5.3.9).
    pub mod slot_capabilities {
        /// Attention Button Present.
        pub const ATTENTION_BUTTON_PRESENT: u32 = 1 << 0;
        /// Power Controller Present.
        pub const POWER_CONTROLLER_PRESENT: u32 = 1 << 1;
        /// MRL Sensor Present.
        pub const MRL_SENSOR_PRESENT: u32 = 1 << 2;
        /// Attention Indicator Present.
        pub const ATTENTION_INDICATOR_PRESENT: u32 = 1 << 3;
        /// Power Indicator Present.
        pub const POWER_INDICATOR_PRESENT: u32 = 1 << 4;
        /// Hot-Plug Surprise.
        pub const HOT_PLUG_SURPRISE: u32 = 1 << 5;
        /// Hot-Plug Capable.
        pub const HOT_PLUG_CAPABLE: u32 = 1 << 6;
        /// No Command Completed Support.
        pub const NO_COMMAND_COMPLETED_SUPPORT: u32 = 1 << 18;
        /// Physical Slot Number (31:19).
        pub const PHYSICAL_SLOT_NUMBER_SHIFT: u32 = 19;
    }

    /// Slot Control bits (7.5.3.10).
    pub mod slot_control {
        /// Attention Button Pressed Enable.
        pub const ATTENTION_BUTTON_PRESSED_ENABLE: u16 = 1 << 0;
        /// Power Fault Detected Enable.
        pub const POWER_FAULT_DETECTED_ENABLE: u16 = 1 << 1;
        /// MRL Sensor Changed Enable.
        pub const MRL_SENSOR_CHANGED_ENABLE: u16 = 1 << 2;
        /// Presence Detect Changed Enable.
        pub const PRESENCE_DETECT_CHANGED_ENABLE: u16 = 1 << 3;
        /// Command Completed Interrupt Enable.
        pub const COMMAND_COMPLETED_INTERRUPT_ENABLE: u16 = 1 << 4;
        /// Hot-Plug Interrupt Enable.
        pub const HOT_PLUG_INTERRUPT_ENABLE: u16 = 1 << 5;
        /// Attention Indicator Control (7:6): 01b On, 10b Blink, 11b Off, 00b reserved.
        pub const ATTENTION_INDICATOR_CONTROL: u16 = 0x3 << 6;
        /// Power Indicator Control (9:8): 01b On, 10b Blink, 11b Off, 00b reserved.
        pub const POWER_INDICATOR_CONTROL: u16 = 0x3 << 8;
        /// Power Controller Control.
        pub const POWER_CONTROLLER_CONTROL: u16 = 1 << 10;
        /// Electromechanical Interlock Control: a command, always reads 0.
        pub const ELECTROMECHANICAL_INTERLOCK_CONTROL: u16 = 1 << 11;
        /// Data Link Layer State Changed Enable.
        pub const DLL_STATE_CHANGED_ENABLE: u16 = 1 << 12;
    }

    /// Slot Status bits (7.5.3.11).
    pub mod slot_status {
        /// Attention Button Pressed (RW1C).
        pub const ATTENTION_BUTTON_PRESSED: u16 = 1 << 0;
        /// Power Fault Detected (RW1C).
        pub const POWER_FAULT_DETECTED: u16 = 1 << 1;
        /// MRL Sensor Changed (RW1C).
        pub const MRL_SENSOR_CHANGED: u16 = 1 << 2;
        /// Presence Detect Changed (RW1C).
        pub const PRESENCE_DETECT_CHANGED: u16 = 1 << 3;
        /// Command Completed (RW1C).
        pub const COMMAND_COMPLETED: u16 = 1 << 4;
        /// Data Link Layer State Changed (RW1C).
        pub const DLL_STATE_CHANGED: u16 = 1 << 8;
    }

    /// Root Control bits (7.5.3.12).
    pub mod root_control {
        /// System Error on Correctable, Non-Fatal and Fatal Error Enable.
        pub const SYSTEM_ERROR_ENABLES: u16 = 0x7;
        /// PME Interrupt Enable.
        pub const PME_INTERRUPT_ENABLE: u16 = 1 << 3;
        /// CRS Software Visibility Enable (only with CRS Software Visibility in Root Capabilities).
        pub const CRS_SOFTWARE_VISIBILITY_ENABLE: u16 = 1 << 4;
    }

    /// Root Status bits (7.5.3.14).
    pub mod root_status {
        /// PME Status (RW1C).
        pub const PME_STATUS: u32 = 1 << 16;
    }

    /// Device Capabilities 2 bits (7.5.3.15).
    pub mod device_capabilities2 {
        /// Completion Timeout Ranges Supported (3:0): Range A, B, C, D.
        pub const COMPLETION_TIMEOUT_RANGES: u32 = 0xf;
        /// Completion Timeout Disable Supported.
        pub const COMPLETION_TIMEOUT_DISABLE_SUPPORTED: u32 = 1 << 4;
        /// ARI Forwarding Supported.
        pub const ARI_FORWARDING_SUPPORTED: u32 = 1 << 5;
    }

    /// Device Control 2 bits (7.5.3.16).
    pub mod device_control2 {
        /// Completion Timeout Value (3:0).
        pub const COMPLETION_TIMEOUT_VALUE: u16 = 0xf;
        /// Completion Timeout Disable.
        pub const COMPLETION_TIMEOUT_DISABLE: u16 = 1 << 4;
        /// ARI Forwarding Enable.
        pub const ARI_FORWARDING_ENABLE: u16 = 1 << 5;
    }

    /// Link Control 2 bits (7.5.3.19).
    pub mod link_control2 {
        /// Target Link Speed (3:0): a bit position of the Supported Link Speeds Vector.
        pub const TARGET_LINK_SPEED: u16 = 0xf;
        /// Enter Compliance.
        pub const ENTER_COMPLIANCE: u16 = 1 << 4;
        /// Hardware Autonomous Speed Disable.
        pub const HARDWARE_AUTONOMOUS_SPEED_DISABLE: u16 = 1 << 5;
        /// Selectable De-emphasis (5.0 GT/s and above).
        pub const SELECTABLE_DE_EMPHASIS: u16 = 1 << 6;
    }
}

/// ASPM Support advertised in Link Capabilities (7.5.3.6, bits 11:10); ASPM
/// Control in Link Control is writable for exactly these states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AspmSupport {
    /// 00b: No ASPM Support.
    #[default]
    None,
    /// 01b: L0s Supported.
    L0s,
    /// 10b: L1 Supported.
    L1,
    /// 11b: L0s and L1 Supported.
    L0sAndL1,
}

impl AspmSupport {
    /// The ASPM Support encoding, which is also the set of ASPM Control bits
    /// (bit 0 L0s, bit 1 L1) that may be enabled.
    pub fn bits(self) -> u16 {
        match self {
            AspmSupport::None => 0b00,
            AspmSupport::L0s => 0b01,
            AspmSupport::L1 => 0b10,
            AspmSupport::L0sAndL1 => 0b11,
        }
    }
}

/// The hot-plug elements of a Hot-Plug Capable slot (Slot Capabilities,
/// 7.5.3.9). Command Completed notification is never offered (No Command
/// Completed Support is always Set: Slot Control writes take effect at once),
/// nor an Electromechanical Interlock (its control is a toggle command).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HotPlug {
    /// Attention Button Present.
    pub attention_button: bool,
    /// Power Controller Present (with power fault detection).
    pub power_controller: bool,
    /// MRL Sensor Present.
    pub mrl_sensor: bool,
    /// Attention Indicator Present.
    pub attention_indicator: bool,
    /// Power Indicator Present.
    pub power_indicator: bool,
    /// Hot-Plug Surprise: the card may be removed without prior notification.
    pub surprise: bool,
}

/// How to build a root port. `Default` mimics QEMU's `pcie-root-port` without
/// hot-plug: no ASPM, Clock Power Management, Link Bandwidth Notification,
/// hot-plug or programmable completion timeout, 128-byte payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootPortConfig {
    /// Vendor ID.
    pub vendor_id: u16,
    /// Device ID.
    pub device_id: u16,
    /// Revision ID.
    pub revision: u8,
    /// Set the Multi-Function bit of the Header Type.
    pub multifunction: bool,
    /// Interrupt Pin (1 = INTA .. 4 = INTD; 0 = none).
    pub interrupt_pin: u8,
    /// Port Number in Link Capabilities.
    pub port_number: u8,
    /// Physical Slot Number in Slot Capabilities (13 bits).
    pub slot_number: u16,
    /// Maximum and current link speed (1 = 2.5, 2 = 5, 3 = 8, 4 = 16 GT/s).
    pub link_speed: u8,
    /// Maximum and negotiated link width (lanes: 1, 2, 4, 8, 16, 32).
    pub link_width: u8,
    /// Max_Payload_Size Supported (Device Capabilities 2:0): 0 = 128 bytes ..
    /// 5 = 4096 bytes; larger values are taken as 5.
    pub max_payload_size_supported: u8,
    /// ASPM Support (Link Capabilities 11:10).
    pub aspm: AspmSupport,
    /// Clock Power Management (Link Capabilities bit 18).
    pub clock_power_management: bool,
    /// Link Bandwidth Notification Capability (Link Capabilities bit 21).
    pub link_bandwidth_notification: bool,
    /// A Hot-Plug Capable slot and its elements; `None`: not Hot-Plug Capable.
    pub hot_plug: Option<HotPlug>,
    /// Completion Timeout Ranges Supported (Device Capabilities 2 bits 3:0:
    /// bit 0 Range A .. bit 3 Range D; 0 = not programmable).
    pub completion_timeout_ranges: u8,
    /// Completion Timeout Disable Supported (Device Capabilities 2 bit 4).
    pub completion_timeout_disable: bool,
}

impl Default for RootPortConfig {
    fn default() -> Self {
        RootPortConfig {
            vendor_id: 0x1b36,
            device_id: 0x000c,
            revision: 0,
            multifunction: false,
            interrupt_pin: 1,
            port_number: 0,
            slot_number: 0,
            link_speed: 3,
            link_width: 1,
            max_payload_size_supported: 0,
            aspm: AspmSupport::None,
            clock_power_management: false,
            link_bandwidth_notification: false,
            hot_plug: None,
            completion_timeout_ranges: 0,
            completion_timeout_disable: false,
        }
    }
}

impl RootPortConfig {
    fn speed(&self) -> u8 {
        self.link_speed.clamp(1, 4)
    }

    fn width(&self) -> u8 {
        self.link_width.clamp(1, 32)
    }

    fn mpss(&self) -> u8 {
        self.max_payload_size_supported.min(5)
    }
}

/// One register of the PCI Express Capability as the port builds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcieRegister {
    /// Offset in the capability (the `pcie` constants).
    pub offset: u16,
    /// Width in bytes (2 or 4).
    pub size: u8,
    /// Reset value.
    pub value: u32,
    /// Bits the guest may write (RW, RWS).
    pub writable: u32,
    /// Bits the guest clears by writing 1 (RW1C, RW1CS).
    pub w1c: u32,
}

const fn register(offset: u16, size: u8, value: u32, writable: u32, w1c: u32) -> PcieRegister {
    PcieRegister {
        offset,
        size,
        value,
        writable,
        w1c,
    }
}

fn bit<T: Default>(on: bool, bits: T) -> T {
    if on {
        bits
    } else {
        T::default()
    }
}

/// Every implemented register of the port's PCI Express Capability (PCI
/// Express Base 5.0, 7.5.3), its capability registers built from `config` and
/// each control and status register's RW and RW1C bits derived from them:
/// an optional feature the capabilities do not advertise has its control bits
/// hardwired to 0 and its status bits RsvdZ. Registers not listed (Device
/// Status 2, Link Status 2, the Slot registers 2) read 0 and are read-only.
pub fn pcie_registers(config: &RootPortConfig) -> [PcieRegister; 19] {
    use pcie::*;
    let speed = u32::from(config.speed());
    let width = u32::from(config.width());
    let hp = config.hot_plug;
    let hp_on = hp.is_some();
    let hp = hp.unwrap_or_default();
    let lbn = config.link_bandwidth_notification;
    let ranges = u32::from(config.completion_timeout_ranges & 0xf);
    let mpss = config.mpss();

    // 7.5.3.4: Max_Payload_Size is writable only up to Max_Payload_Size
    // Supported (hardwired at 128 bytes when that is all), Extended Tag
    // Field Enable only with Extended Tag Field Supported, Phantom Functions
    // Enable only with Phantom Functions Supported, Aux Power PM Enable only
    // with Aux power (none of which the port advertises); bit 15 is RsvdP in
    // a Root Port. Relaxed Ordering and No Snoop stay RW (default Set).
    let device_control_bits = device_control::ERROR_REPORTING_ENABLES
        | device_control::ENABLE_RELAXED_ORDERING
        | bit(mpss > 0, device_control::MAX_PAYLOAD_SIZE)
        | device_control::ENABLE_NO_SNOOP
        | device_control::MAX_READ_REQUEST_SIZE;

    // 7.5.3.7: ASPM Control per ASPM Support; RCB hardwired in a Root Port;
    // Retrain Link reads 0; Enable Clock PM only with Clock Power Management;
    // the bandwidth interrupt enables only with Link Bandwidth Notification.
    let link_control_bits = config.aspm.bits()
        | link_control::LINK_DISABLE
        | link_control::COMMON_CLOCK_CONFIGURATION
        | link_control::EXTENDED_SYNCH
        | bit(config.clock_power_management, link_control::ENABLE_CLOCK_PM)
        | link_control::HARDWARE_AUTONOMOUS_WIDTH_DISABLE
        | bit(
            lbn,
            link_control::LINK_BANDWIDTH_MANAGEMENT_INTERRUPT_ENABLE
                | link_control::LINK_AUTONOMOUS_BANDWIDTH_INTERRUPT_ENABLE,
        );
    // 7.5.3.8: both bandwidth status bits are RsvdZ without the capability.
    let link_status_bits = bit(
        lbn,
        link_status::LINK_BANDWIDTH_MANAGEMENT_STATUS
            | link_status::LINK_AUTONOMOUS_BANDWIDTH_STATUS,
    );

    let slot_capabilities_bits = bit(
        hp.attention_button,
        slot_capabilities::ATTENTION_BUTTON_PRESENT,
    ) | bit(
        hp.power_controller,
        slot_capabilities::POWER_CONTROLLER_PRESENT,
    ) | bit(hp.mrl_sensor, slot_capabilities::MRL_SENSOR_PRESENT)
        | bit(
            hp.attention_indicator,
            slot_capabilities::ATTENTION_INDICATOR_PRESENT,
        )
        | bit(
            hp.power_indicator,
            slot_capabilities::POWER_INDICATOR_PRESENT,
        )
        | bit(hp.surprise, slot_capabilities::HOT_PLUG_SURPRISE)
        | bit(hp_on, slot_capabilities::HOT_PLUG_CAPABLE)
        | slot_capabilities::NO_COMMAND_COMPLETED_SUPPORT
        | (u32::from(config.slot_number & 0x1fff) << slot_capabilities::PHYSICAL_SLOT_NUMBER_SHIFT);
    // 7.5.3.10: each enable and control only with its element; Command
    // Completed Interrupt Enable hardwired (No Command Completed Support);
    // Electromechanical Interlock Control reads 0; Data Link Layer State
    // Changed Enable with Data Link Layer Link Active Reporting Capable.
    let slot_control_bits = bit(
        hp.attention_button,
        slot_control::ATTENTION_BUTTON_PRESSED_ENABLE,
    ) | bit(
        hp.power_controller,
        slot_control::POWER_FAULT_DETECTED_ENABLE,
    ) | bit(hp.mrl_sensor, slot_control::MRL_SENSOR_CHANGED_ENABLE)
        | bit(
            hp_on,
            slot_control::PRESENCE_DETECT_CHANGED_ENABLE | slot_control::HOT_PLUG_INTERRUPT_ENABLE,
        )
        | bit(
            hp.attention_indicator,
            slot_control::ATTENTION_INDICATOR_CONTROL,
        )
        | bit(hp.power_indicator, slot_control::POWER_INDICATOR_CONTROL)
        | bit(hp.power_controller, slot_control::POWER_CONTROLLER_CONTROL)
        | slot_control::DLL_STATE_CHANGED_ENABLE;
    // Indicators start Off (11b); 00b is a reserved encoding.
    let slot_control_reset = bit(
        hp.attention_indicator,
        slot_control::ATTENTION_INDICATOR_CONTROL,
    ) | bit(hp.power_indicator, slot_control::POWER_INDICATOR_CONTROL);
    // 7.5.3.11: a changed/pressed/fault bit is RW1C only with its element;
    // Command Completed is never Set (No Command Completed Support);
    // Presence Detect Changed belongs to every slot, Data Link Layer State
    // Changed to Data Link Layer Link Active Reporting Capable.
    let slot_status_bits = bit(hp.attention_button, slot_status::ATTENTION_BUTTON_PRESSED)
        | bit(hp.power_controller, slot_status::POWER_FAULT_DETECTED)
        | bit(hp.mrl_sensor, slot_status::MRL_SENSOR_CHANGED)
        | slot_status::PRESENCE_DETECT_CHANGED
        | slot_status::DLL_STATE_CHANGED;

    // 7.5.3.16: Completion Timeout Value only with ranges to choose from,
    // Completion Timeout Disable only when supported, ARI Forwarding Enable
    // with ARI Forwarding Supported; AtomicOp, IDO, LTR, OBFF, 10-Bit Tag and
    // End-End TLP Prefix Blocking are not advertised and stay 0.
    let device_capabilities2_bits = ranges
        | bit(
            config.completion_timeout_disable,
            device_capabilities2::COMPLETION_TIMEOUT_DISABLE_SUPPORTED,
        )
        | device_capabilities2::ARI_FORWARDING_SUPPORTED;
    let device_control2_bits = bit(ranges != 0, device_control2::COMPLETION_TIMEOUT_VALUE)
        | bit(
            config.completion_timeout_disable,
            device_control2::COMPLETION_TIMEOUT_DISABLE,
        )
        | device_control2::ARI_FORWARDING_ENABLE;

    // 7.5.3.19: Target Link Speed over the Supported Link Speeds Vector (the
    // encodings are kept by `reserved_encodings`); Selectable De-emphasis
    // applies from 5.0 GT/s.
    let link_control2_bits = link_control2::TARGET_LINK_SPEED
        | link_control2::ENTER_COMPLIANCE
        | link_control2::HARDWARE_AUTONOMOUS_SPEED_DISABLE
        | bit(speed >= 2, link_control2::SELECTABLE_DE_EMPHASIS);

    [
        // Version 2, Root Port, Slot Implemented (7.5.3.2).
        register(
            CAPABILITIES,
            2,
            0x2 | (u32::from(TYPE_ROOT_PORT) << 4) | (1 << 8),
            0,
            0,
        ),
        register(
            DEVICE_CAPABILITIES,
            4,
            device_capabilities::ROLE_BASED_ERROR_REPORTING | u32::from(mpss),
            0,
            0,
        ),
        // Relaxed Ordering and No Snoop enabled, 512-byte reads (the defaults of 7.5.3.4).
        register(
            DEVICE_CONTROL,
            2,
            (device_control::ENABLE_RELAXED_ORDERING
                | device_control::ENABLE_NO_SNOOP
                | (0b010 << 12))
                .into(),
            device_control_bits.into(),
            0,
        ),
        register(
            DEVICE_STATUS,
            2,
            0,
            0,
            device_status::ERRORS_DETECTED.into(),
        ),
        register(
            LINK_CAPABILITIES,
            4,
            speed
                | (width << 4)
                | (u32::from(config.aspm.bits()) << link_capabilities::ASPM_SUPPORT_SHIFT)
                | bit(
                    config.clock_power_management,
                    link_capabilities::CLOCK_POWER_MANAGEMENT,
                )
                | link_capabilities::DLL_LINK_ACTIVE_REPORTING_CAPABLE
                | bit(lbn, link_capabilities::LINK_BANDWIDTH_NOTIFICATION)
                | (u32::from(config.port_number) << 24),
            0,
            0,
        ),
        register(LINK_CONTROL, 2, 0, link_control_bits.into(), 0),
        // The value follows the device below (`set_device_present`).
        register(LINK_STATUS, 2, 0, 0, link_status_bits.into()),
        register(SLOT_CAPABILITIES, 4, slot_capabilities_bits, 0, 0),
        register(
            SLOT_CONTROL,
            2,
            slot_control_reset.into(),
            slot_control_bits.into(),
            0,
        ),
        register(SLOT_STATUS, 2, 0, 0, slot_status_bits.into()),
        // 7.5.3.12: CRS Software Visibility Enable is hardwired, Root
        // Capabilities not advertising CRS Software Visibility.
        register(
            ROOT_CONTROL,
            2,
            0,
            (root_control::SYSTEM_ERROR_ENABLES | root_control::PME_INTERRUPT_ENABLE).into(),
            0,
        ),
        register(ROOT_CAPABILITIES, 2, 0, 0, 0),
        register(ROOT_STATUS, 4, 0, 0, root_status::PME_STATUS),
        register(DEVICE_CAPABILITIES2, 4, device_capabilities2_bits, 0, 0),
        register(DEVICE_CONTROL2, 2, 0, device_control2_bits.into(), 0),
        // Supported Link Speeds Vector: every speed up to the maximum (7.5.3.18).
        register(LINK_CAPABILITIES2, 4, ((1 << speed) - 1) << 1, 0, 0),
        register(LINK_CONTROL2, 2, speed, link_control2_bits.into(), 0),
        register(SLOT_CAPABILITIES2, 4, 0, 0, 0),
        register(SLOT_CONTROL2, 2, 0, 0, 0),
    ]
}

/// A register field some of whose encodings are reserved or unsupported: a
/// write that would store one of those leaves the field as it was, the other
/// bits of the write taking effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodedField {
    /// Config-space offset of the 16-bit register holding the field.
    pub offset: u16,
    /// The field's bits in that register (at most 4 contiguous bits).
    pub mask: u16,
    /// Bit `n` set: encoding `n` may be stored.
    pub allowed: u16,
}

impl EncodedField {
    fn encoding(&self, register: u16) -> u32 {
        u32::from(register & self.mask)
            .checked_shr(self.mask.trailing_zeros())
            .unwrap_or(0)
    }

    /// Whether the field of `register` holds an encoding that may be stored.
    pub fn accepts(&self, register: u16) -> bool {
        1u16.checked_shl(self.encoding(register))
            .is_some_and(|b| self.allowed & b != 0)
    }
}

/// The fields whose reserved or unsupported encodings a write does not
/// store, derived from `config` with the registers of [`pcie_registers`].
pub fn reserved_encodings(config: &RootPortConfig) -> [EncodedField; 7] {
    use pcie::*;
    let field = |offset: u16, mask: u16, allowed: u16| EncodedField {
        offset: P + offset,
        mask,
        allowed,
    };
    let ranges = config.completion_timeout_ranges;
    // 7.5.3.16, Completion Timeout Value: 0000b (50 us to 50 ms) always; Range
    // A 0001b, 0010b; B 0101b, 0110b; C 1001b, 1010b; D 1101b, 1110b.
    let timeouts = (0..4)
        .filter(|r| ranges & (1 << r) != 0)
        .fold(1u16, |a, r| a | (0b110 << (4 * r)));
    [
        // PCI PM 1.2, 3.2.4: PowerState D0 and D3hot only (no D1/D2 support).
        EncodedField {
            offset: caps::PM + 4,
            mask: 0x3,
            allowed: 0b1001,
        },
        // 7.5.3.4: Max_Payload_Size up to Max_Payload_Size Supported.
        field(
            DEVICE_CONTROL,
            device_control::MAX_PAYLOAD_SIZE,
            (1 << (config.mpss() + 1)) - 1,
        ),
        // 7.5.3.4: Max_Read_Request_Size 110b and 111b are reserved.
        field(
            DEVICE_CONTROL,
            device_control::MAX_READ_REQUEST_SIZE,
            0b11_1111,
        ),
        // 7.5.3.10: indicator controls 00b is reserved.
        field(
            SLOT_CONTROL,
            slot_control::ATTENTION_INDICATOR_CONTROL,
            0b1110,
        ),
        field(SLOT_CONTROL, slot_control::POWER_INDICATOR_CONTROL, 0b1110),
        field(
            DEVICE_CONTROL2,
            device_control2::COMPLETION_TIMEOUT_VALUE,
            timeouts,
        ),
        // 7.5.3.19: Target Link Speed only to a speed of the Supported Link
        // Speeds Vector (other values are undefined; keeping the old one is
        // what a port that cannot train to them does).
        field(
            LINK_CONTROL2,
            link_control2::TARGET_LINK_SPEED,
            ((1 << config.speed()) - 1) << 1,
        ),
    ]
}

/// A PCI Express Root Port.
#[derive(Debug, Clone)]
pub struct RootPort {
    cs: ConfigSpace,
    config: RootPortConfig,
    /// [`reserved_encodings`] of `config`, derived once.
    reserved: [EncodedField; 7],
    /// The config-space bytes `[start, end)` that hold them: a write
    /// outside cannot store a reserved encoding.
    reserved_span: (u16, u16),
}

const P: u16 = caps::PCIE;

impl RootPort {
    /// A port in its reset state, with no device behind it.
    pub fn new(config: RootPortConfig) -> Self {
        let mut cs = ConfigSpace::new();
        cs.set_u16(reg::VENDOR_ID, config.vendor_id);
        cs.set_u16(reg::DEVICE_ID, config.device_id);
        cs.set_writable(
            reg::COMMAND,
            2,
            u32::from(
                command::MEMORY_SPACE
                    | command::BUS_MASTER
                    | command::PARITY_ERROR_RESPONSE
                    | command::SERR_ENABLE
                    | command::INTERRUPT_DISABLE,
            ),
        );
        cs.set_w1c(reg::STATUS, 2, u32::from(status::RW1C_ERRORS));
        cs.set_u8(reg::REVISION_ID, config.revision);
        cs.set_u8(0x0a, 0x04); // sub-class: PCI-to-PCI bridge
        cs.set_u8(0x0b, 0x06); // base class: bridge
        cs.set_writable(reg::CACHE_LINE_SIZE, 1, 0xff);
        cs.set_u8(
            reg::HEADER_TYPE,
            if config.multifunction { 0x81 } else { 0x01 },
        );
        cs.set_writable(type1::PRIMARY_BUS, 4, 0x00ff_ffff);
        cs.set_w1c(type1::SECONDARY_STATUS, 2, u32::from(status::RW1C_ERRORS));
        cs.set_writable(type1::MEMORY_BASE, 2, 0xfff0);
        cs.set_writable(type1::MEMORY_LIMIT, 2, 0xfff0);
        // Low nibble 1: 64-bit prefetchable decode (7.5.1.3.9).
        cs.set_u16(type1::PREFETCHABLE_BASE, 0x0001);
        cs.set_u16(type1::PREFETCHABLE_LIMIT, 0x0001);
        cs.set_writable(type1::PREFETCHABLE_BASE, 2, 0xfff0);
        cs.set_writable(type1::PREFETCHABLE_LIMIT, 2, 0xfff0);
        cs.set_writable(type1::PREFETCHABLE_BASE_UPPER, 4, 0xffff_ffff);
        cs.set_writable(type1::PREFETCHABLE_LIMIT_UPPER, 4, 0xffff_ffff);
        cs.set_writable(reg::INTERRUPT_LINE, 1, 0xff);
        cs.set_u8(reg::INTERRUPT_PIN, config.interrupt_pin.min(4));
        cs.set_writable(
            type1::BRIDGE_CONTROL,
            2,
            u32::from(
                bridge_control::PARITY_ERROR_RESPONSE
                    | bridge_control::SERR_ENABLE
                    | bridge_control::SECONDARY_BUS_RESET,
            ),
        );

        // The builder places these at the fixed offsets of `caps`.
        let pm = cs.add_capability(caps::PM_ID, 8).unwrap_or(caps::PM);
        cs.set_u16(pm + 2, 0x0003); // PMC: version 3, no PME, no D1/D2
        cs.set_u16(pm + 4, 1 << 3); // PMCSR: No_Soft_Reset, D0
        cs.set_writable(pm + 4, 2, 0x0003);
        let p = cs
            .add_capability(caps::PCIE_ID, pcie::LEN)
            .unwrap_or(caps::PCIE);
        debug_assert_eq!((pm, p), (caps::PM, caps::PCIE));
        for r in pcie_registers(&config) {
            let at = p + r.offset;
            match r.size {
                4 => cs.set_u32(at, r.value),
                _ => cs.set_u16(at, r.value as u16),
            }
            cs.set_writable(at, r.size, r.writable);
            cs.set_w1c(at, r.size, r.w1c);
        }

        let acs = cs
            .add_ext_capability(caps::ACS_ID, 1, 8)
            .unwrap_or(caps::ACS);
        // Source Validation, Translation Blocking, P2P Request/Completion Redirect, Upstream Forwarding.
        cs.set_u16(acs + 4, 0x001f);
        cs.set_writable(acs + 6, 2, 0x001f);

        let reserved = reserved_encodings(&config);
        let reserved_span = reserved.iter().fold((u16::MAX, 0), |(lo, hi), f| {
            (lo.min(f.offset), hi.max(f.offset.saturating_add(2)))
        });
        let mut port = RootPort {
            cs,
            config,
            reserved,
            reserved_span,
        };
        port.set_device_present(false);
        port
    }

    /// The configuration the port was built from.
    pub fn config(&self) -> &RootPortConfig {
        &self.config
    }

    /// Whether a device sits below the port: drives Link Status (current speed and
    /// width, Data Link Layer Link Active) and Slot Status (Presence Detect State).
    pub fn set_device_present(&mut self, present: bool) {
        let ls = if present {
            u16::from(self.config.speed())
                | (u16::from(self.config.width()) << 4)
                | (1 << 12) // Slot Clock Configuration
                | pcie::LINK_STATUS_DLLLA
        } else {
            1 << 12
        };
        let keep = self.cs.raw(P + pcie::LINK_STATUS, 2) as u16
            & (pcie::link_status::LINK_BANDWIDTH_MANAGEMENT_STATUS
                | pcie::link_status::LINK_AUTONOMOUS_BANDWIDTH_STATUS);
        self.cs.set_u16(P + pcie::LINK_STATUS, ls | keep);
        let ss = self.cs.raw(P + pcie::SLOT_STATUS, 2) as u16 & !pcie::SLOT_STATUS_PDS;
        self.cs.set_u16(
            P + pcie::SLOT_STATUS,
            ss | if present { pcie::SLOT_STATUS_PDS } else { 0 },
        );
    }

    fn u16_at(&self, offset: u16) -> u16 {
        self.cs.raw(offset, 2) as u16
    }

    /// The non-prefetchable memory window as programmed (7.5.1.3.8), `None` when limit < base.
    pub fn memory_window(&self) -> Option<MemRange<Ipa>> {
        vbus::decode::memory_window(&self.cs)
    }

    /// The prefetchable memory window as programmed (7.5.1.3.9), `None` when limit < base.
    pub fn prefetchable_window(&self) -> Option<MemRange<Ipa>> {
        vbus::decode::prefetchable_window(&self.cs)
    }

    /// Whether Secondary Bus Reset is held.
    pub fn in_secondary_bus_reset(&self) -> bool {
        self.u16_at(type1::BRIDGE_CONTROL) & bridge_control::SECONDARY_BUS_RESET != 0
    }

    /// After a guest write, a field of [`reserved_encodings`] that changed to an
    /// encoding it may not hold gets its previous value back.
    fn keep_reserved_encodings(&mut self, before: &[u16]) {
        let fields = self.reserved;
        for (f, &old) in fields.iter().zip(before) {
            let now = self.u16_at(f.offset);
            if (now ^ old) & f.mask != 0 && !f.accepts(now) {
                self.cs.set_u16(f.offset, (now & !f.mask) | (old & f.mask));
            }
        }
    }
}

impl PciFunction for RootPort {
    fn config_read(&mut self, offset: u16, size: u8) -> u32 {
        self.cs.read(offset, size)
    }

    /// Bus numbers, windows, Memory Space Enable and Secondary Bus Reset take
    /// effect through the segment, which reads them from the registers.
    fn config_write(&mut self, offset: u16, size: u8, value: u32, _: &mut Vec<Request>) {
        let end = offset.saturating_add(u16::from(size));
        let (lo, hi) = self.reserved_span;
        if end <= lo || offset >= hi {
            // No field with reserved encodings in the bytes written.
            self.cs.write(offset, size, value);
            return;
        }
        let before = self.reserved.map(|f| self.u16_at(f.offset));
        self.cs.write(offset, size, value);
        self.keep_reserved_encodings(&before);
    }

    fn bridge_bus_range(&self) -> Option<(u8, u8)> {
        Some((
            self.cs.raw(type1::SECONDARY_BUS, 1) as u8,
            self.cs.raw(type1::SUBORDINATE_BUS, 1) as u8,
        ))
    }

    fn config_space(&self) -> &ConfigSpace {
        &self.cs
    }

    fn bars(&self) -> &[BarInfo] {
        &[]
    }

    /// The port implements no BAR: nothing is ever routed here.
    fn bar_read(&mut self, _: u8, _: u64, _: u8, _: &mut Vec<Request>) -> u64 {
        u64::MAX
    }

    fn bar_write(&mut self, _: u8, _: u64, _: u8, _: u64, _: &mut Vec<Request>) {}

    /// Back to the port's reset state; whether a device is below it is kept.
    fn reset(&mut self) {
        let present = self.cs.raw(P + pcie::SLOT_STATUS, 2) as u16 & pcie::SLOT_STATUS_PDS != 0;
        *self = RootPort::new(self.config);
        self.set_device_present(present);
    }

    /// The port signals neither hot-plug nor PME events yet.
    fn intx(&self) -> Intx {
        Intx::None
    }

    /// Nothing completes asynchronously in a root port.
    fn poll(&mut self) {}
}

#[cfg(test)]
mod tests;

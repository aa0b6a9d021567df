//! Register offsets, capability IDs and bits, named as in the PCI Express
//! Base Specification 6.0 (section 7.5): they live once, in
//! [`vbus::config`]; re-exported here for this crate's users.

pub use vbus::config::{
    bar, bridge_control, cap_id, ext_cap_id, msi, msix, pcie, pm, type0, type1,
};

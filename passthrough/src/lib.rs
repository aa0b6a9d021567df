//! Host-side PCI config access, host enumeration and resource assignment, and the assigned function seen by a guest.
//!
//! * [`access`]: the [`ConfigAccess`] trait one host segment implements, and [`Delay`].
//! * [`enumerate`]: walk a host segment, number its buses, size its BARs.
//! * [`assign`]: give BARs and bridge windows their addresses.
//! * [`layout`]: the cached layout of a function to assign ([`HostFunction`]), INTx swizzle.
//! * [`filter`]: the config filter, as a table.
//! * [`msix`]: an assigned function's MSI-X: shadow table and PBA, the device's table.
//! * [`msi`]: an assigned function's MSI: shadow capability, the device's capability.
//! * [`assigned`]: [`AssignedFunction`], the `vbus::PciFunction` a guest sees.
//! * [`regs`]: register offsets, capability IDs and bits.
//! * `testing` (feature `testing`): a fake host hierarchy, `FakeHost`.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;

pub mod access;
pub mod regs;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use access::{BarAccess, ConfigAccess, Delay};
pub mod assign;
pub mod assigned;
pub mod enumerate;
pub mod filter;
pub mod layout;
pub mod msi;
pub mod msix;

pub use assign::{assign, verify, AssignError, Assignment, HostRange, HostWindows};
pub use assigned::{AssignedFunction, AssignedStats};
pub use enumerate::{enumerate, EnumError, HostTopology};
pub use layout::{HostFunction, IntxRoute, LayoutError, MsiLayout};
pub use msi::{AssignedMsi, EventIds};
pub use msix::{AssignedMsix, MsiRoute};

//! Host-side PCI config access, host enumeration and resource assignment, and the assigned function seen by a guest.
//!
//! * [`access`]: the [`ConfigAccess`] trait one host segment implements, and [`Delay`].
//! * [`enumerate`]: walk a host segment, number its buses, size its BARs.
//! * [`assign`]: give BARs and bridge windows their addresses.
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

pub use access::{ConfigAccess, Delay};
pub mod assign;
pub mod enumerate;

pub use assign::{assign, AssignError, Assignment, HostRange, HostWindows};
pub use enumerate::{enumerate, EnumError, HostTopology};

//! Host-side PCI config access, host enumeration and resource assignment, and the assigned function seen by a guest.
//!
//! * [`access`]: the [`ConfigAccess`] trait one host segment implements, and [`Delay`].
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;

pub mod access;

pub use access::{ConfigAccess, Delay};

//! PCI addresses, ECAM decode, the config-space register model, capability chains, the `PciFunction` trait, the `Segment`, the BAR/window planner and the `Effect`s of config writes.
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]

extern crate alloc;

pub mod planner;

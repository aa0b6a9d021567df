//! PCI addresses, ECAM decode, the config-space register model, capability chains, the `PciFunction` trait, the `Segment`, the BAR/window planner and the `Effect`s of config writes.
//!
//! Guests get no I/O space: the segment offers memory windows only, so I/O BARs
//! are never presented and bridges decode no I/O window.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;

pub mod addr;
pub mod config;
pub mod decode;
pub mod endpoint;
pub mod function;
pub mod msix;
pub mod planner;
pub mod segment;
pub mod testing;

pub use addr::{Bdf, BdfError, EcamAddress, ParseSbdfError, Sbdf};
pub use arch_emu::addr::{Ipa, MemRange, Pa};
pub use config::{CapabilityError, ConfigSpace, CONFIG_SPACE_SIZE};
pub use decode::Decoded;
pub use endpoint::{BarProfile, Endpoint};
pub use function::{BarBacking, BarInfo, Effect, Effects, FunctionId, Intx, PciFunction, Request};
pub use msix::{MsiCapabilityStats, MsiMessage, Msix, MsixLayout, MsixStats};
pub use segment::{BarRegion, MsiStats, MsiTarget, Segment, SegmentStats, TopologyError};

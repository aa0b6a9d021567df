//! Library behind `cargo xtask`: building the hypervisor image, assembling the
//! guest image, installing QEMU and running guests under it.
//!
//! `cargo xtask` and the end-to-end tests (`tests/tests/e2e.rs`) both use this
//! crate, so a test boots exactly what `cargo xtask run` boots.
#![deny(missing_docs)]

pub mod bench;
pub mod config;
pub mod cpio;
pub mod error;
pub mod flat;
pub mod guests;
pub mod icount;
pub mod image;
pub mod install;
pub mod layout;
pub mod net;
pub mod paths;
pub mod progress;
pub mod qemu;
#[cfg(test)]
mod testutil;

pub use error::{Error, Result};

//! Host tests of the whole crate, one file per part.
#![allow(clippy::unwrap_used, reason = "tests")]

mod blk;
mod console;
mod msix;
mod oracle;
mod pci;
mod props;
mod queue;
mod segment;

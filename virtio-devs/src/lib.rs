//! VirtIO devices emulated at EL2: the modern virtio-pci transport, split virtqueues and virtio-blk.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;

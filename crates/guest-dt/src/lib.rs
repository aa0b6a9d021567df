//! `GuestLayout`, the one description of a guest's address map and interrupts, and its rendering to a device tree blob.
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]

extern crate alloc;

//! Emulated PCI Express Root Ports: type-1 header, PCI Express, Power Management and ACS capabilities, window registers and their side effects.
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]

extern crate alloc;

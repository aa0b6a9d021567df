//! The host platform read from the host device tree (`Platform`) and the guest configuration read from `/chosen`.
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]

extern crate alloc;

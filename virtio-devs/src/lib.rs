//! VirtIO devices emulated at EL2: the modern virtio-pci transport, split
//! virtqueues over a bounds-checked guest-memory trait, virtio-blk and
//! virtio-console (virtio 1.2).
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;

pub mod blk;
pub mod console;
pub mod device;
pub mod memory;
pub mod pci;
pub mod queue;
pub mod testing;

pub use memory::{GuestMemory, GuestMemoryExt, MemoryError};
pub use queue::{Descriptor, DescriptorChain, Queue, QueueError, MAX_QUEUE_SIZE};

#[cfg(test)]
mod tests;
